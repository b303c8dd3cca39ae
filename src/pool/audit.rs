//! The audit log (issue 4, item 7): one JSON line per event, after the Managed
//! HSM's `AuditEvent`, appended to `audit-<store stem>.jsonl` next to the
//! token's store file (mode 0600).
//!
//! What is recorded depends on the token's [`Level`]: every management
//! operation (from the CLI and from PKCS#11), every login and every *refused*
//! crypto operation unless it is `off`; with `all` (the default) also every
//! successful crypto operation (`KeySign` … `KeyUnwrap`, one per `*Init`),
//! which costs a P-256 signature ~2–3 % of its CPU time (BENCHMARKS.md).
//!
//! Writes are batched: events collect in a per-process buffer behind a mutex
//! and go to the file when it holds [`FLUSH_BYTES`], when an event comes more
//! than [`FLUSH_INTERVAL`] after the oldest buffered one, once a second from a
//! background thread (PKCS#11 only; started on the first event, stopped at
//! `C_Finalize`), at `C_Finalize`, and at the end of a CLI command. A
//! successful crypto operation is buffered raw ([`Crypto`]: an operation name,
//! two clock readings, `Arc`s of the key and the token) and formatted by the
//! flusher, outside the buffer's lock: an nginx worker signs tens of
//! thousands of times a second, and formatting a line there would cost more
//! than the budget (5 % of a P-256 signature) allows. Each flush appends
//! whole lines with `O_APPEND`, at most [`FLUSH_BYTES`] per `write`, so lines
//! of several processes never interleave mid-line (on a local file system:
//! `O_APPEND` is not atomic over NFS). A forked child drops the buffer it
//! inherited (the parent writes it) and starts its own; an application that
//! exits without `C_Finalize` may lose its last second of lines.
//!
//! Nothing secret is recorded: no PIN, no key material. Logging never fails an
//! operation: an unwritable file is a `log` warning and the batch is dropped.
//! `SOFTMHSM_AUDIT=off|management|all` overrides every token's `audit`.

use super::objects::Entry;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Buffered bytes that trigger a flush; also the most one `write` carries.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// The longest an event waits in the buffer (give or take the next event).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Buffered crypto operations that wake the flusher before its second is up
/// (about 100 bytes each in memory, ~300 in the file).
const WAKE_AT: usize = 16 * 1024;
/// Buffered crypto operations past which the recording thread writes them
/// itself: a flusher starved of CPU must not let the buffer grow without end.
const MAX_PENDING: usize = 64 * WAKE_AT;

/// How much a token records: its `audit` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// Everything, including every successful crypto operation.
    #[default]
    All,
    /// Management operations, logins and refused crypto operations.
    Management,
    /// Nothing.
    Off,
}

impl Level {
    /// `all`, `management` or `off` (and the old spellings of on and off).
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" | "on" | "1" | "true" | "yes" => Some(Level::All),
            "management" => Some(Level::Management),
            "off" | "0" | "false" | "no" => Some(Level::Off),
            _ => None,
        }
    }

    /// `SOFTMHSM_AUDIT`, which overrides every token's setting; a value
    /// that is none of the above is a warning and overrides nothing.
    pub fn from_env() -> Option<Level> {
        let v = std::env::var("SOFTMHSM_AUDIT").ok()?;
        let level = Level::parse(&v);
        if level.is_none() {
            log::warn!("SOFTMHSM_AUDIT={v:?} is not all, management or off: ignored");
        }
        level
    }

    /// Whether management operations, logins and refusals are recorded.
    pub fn management(self) -> bool {
        self != Level::Off
    }

    /// Whether successful crypto operations are recorded.
    pub fn crypto(self) -> bool {
        self == Level::All
    }
}

/// Which door an operation came through (`caller`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The PKCS#11 library.
    Pkcs11,
    /// The `softmhsm` admin CLI.
    Cli,
}

impl Caller {
    /// The `caller` field's value.
    pub fn name(self) -> &'static str {
        match self {
            Caller::Pkcs11 => "pkcs11",
            Caller::Cli => "cli",
        }
    }
}

/// One event to record.
pub struct Event<'a> {
    /// `operationName` (`KeyCreate`, `Login`, …).
    pub operation: &'a str,
    /// `resultType`: Success or Failure.
    pub success: bool,
    /// `resultDescription`: the `CKR_` name, or the CLI's error text.
    pub description: &'a str,
    /// The key involved, if any.
    pub kid: Option<&'a str>,
    /// Who acted (`user`, `so`), when someone had logged in.
    pub identity: Option<&'a str>,
    /// How long the operation took.
    pub duration: Duration,
    /// The door it came through.
    pub caller: Caller,
}

/// The token a buffered [`Crypto`] operation belongs to, as the flusher asks
/// it: its audit file and the label its kids name.
pub trait TokenLog: Send + Sync {
    /// The token's audit file ([`path_for`] its store).
    fn file(&self) -> PathBuf;
    /// The token's label.
    fn label(&self) -> String;
}

/// A successful crypto operation, buffered raw and formatted by the flusher.
pub struct Crypto {
    /// `KeySign`, `KeyVerify`, `KeyEncrypt`, `KeyDecrypt`, `KeyWrap` or `KeyUnwrap`.
    pub operation: &'static str,
    /// When its `*Init` began.
    pub started: Instant,
    /// When it succeeded (made a wall-clock time by the flusher, so the
    /// hot path reads one clock once).
    pub ended: Instant,
    /// The token key (its kid is formatted later).
    pub key: Arc<Entry>,
    /// The Managed HSM algorithm (JWA name), when the mechanism names one.
    pub algorithm: Option<Cow<'static, str>>,
    /// Who acted.
    pub identity: Option<Arc<str>>,
    /// The token.
    pub token: Arc<dyn TokenLog>,
}

/// One line of the audit file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// What was done.
    pub operation_name: String,
    /// `Success` or `Failure`.
    pub result_type: String,
    /// The `CKR_` name or the CLI's error text.
    pub result_description: String,
    /// The key involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The Managed HSM algorithm (JWA name) of a crypto operation or a CLI data-plane verb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Who acted (`user`, `so`), when someone had logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Milliseconds the operation took.
    pub duration_ms: u64,
    /// The process.
    pub pid: u32,
    /// `pkcs11` or `cli`.
    pub caller: String,
}

/// A [`Line`] as written: borrowed fields, so formatting allocates nothing
/// but the text (the flusher formats one per successful crypto operation).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineOut<'a> {
    time: &'a str,
    operation_name: &'a str,
    result_type: &'a str,
    result_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    algorithm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    duration_ms: u64,
    pid: u32,
    caller: &'a str,
}

impl LineOut<'_> {
    /// Append this line and its newline to `out`.
    fn write_to(&self, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        }
    }
}

/// The audit file of the token whose store is `store_path`.
pub fn path_for(store_path: &Path) -> PathBuf {
    let stem = store_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "softmhsm".into());
    store_path.with_file_name(format!("audit-{stem}.jsonl"))
}

/// Record an event about the token whose store is `store_path` (the caller
/// has checked that its [`Level`] records it).
pub fn record(store_path: &Path, ev: &Event<'_>) {
    record_algorithm(store_path, ev, None);
}

/// [`record`] a crypto operation with its Managed HSM algorithm (the JWA
/// name the mechanism registry gives it), when known.
pub fn record_algorithm(store_path: &Path, ev: &Event<'_>, algorithm: Option<&str>) {
    let mut text = Vec::new();
    LineOut {
        time: &rfc3339_ms(SystemTime::now()),
        operation_name: ev.operation,
        result_type: if ev.success { "Success" } else { "Failure" },
        result_description: ev.description,
        kid: ev.kid,
        algorithm,
        identity: ev.identity,
        duration_ms: millis(ev.duration),
        pid: std::process::id(),
        caller: ev.caller.name(),
    }
    .write_to(&mut text);
    let Some(mut st) = state() else {
        return;
    };
    st.push(Pending::Line(path_for(store_path), text));
    if st.due() {
        drop(st);
        flush();
    } else if ev.caller == Caller::Pkcs11 {
        start_flusher(&mut st);
    }
}

/// `C_Initialize`: take the buffer as this process's own (a forked child
/// drops what its parent had buffered), so [`record_crypto`] need not ask
/// for the pid (a system call) on every operation.
pub fn begin() {
    STUCK.store(state().is_none(), Ordering::Release);
}

/// Buffer a successful crypto operation (the hot path: no formatting, no
/// system call, no allocation but the buffer's growth). Only a library
/// session calls this, so [`begin`] ran in this process first.
pub fn record_crypto(op: Crypto) {
    if STUCK.load(Ordering::Acquire) {
        return;
    }
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    st.push(Pending::Crypto(op));
    if st.crypto >= MAX_PENDING {
        drop(st);
        flush();
        return;
    }
    if st.crypto.is_multiple_of(WAKE_AT) {
        WAKE.notify_all();
    }
    start_flusher(&mut st);
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Write every buffered line now.
pub fn flush() {
    // Taken before the buffer, so batches reach the files in the order they
    // were taken; the buffer's own lock is held only to take the batch.
    let Some((mut spare, _)) = acquire(&WRITER, &WRITER_OWNER) else {
        return;
    };
    let mut batch = match state() {
        Some(mut st) => st.take_into(std::mem::take(&mut spare.events)),
        None => return,
    };
    write(&mut batch, &mut spare.text);
    if batch.capacity() <= 4 * WAKE_AT {
        spare.events = batch;
    }
}

/// `C_Finalize`: stop the background flusher and write everything buffered.
pub fn shutdown() {
    let thread = state().and_then(|mut st| {
        st.stop = true;
        st.thread.take()
    });
    WAKE.notify_all();
    if let Some(t) = thread {
        let _ = t.join();
    }
    flush();
}

/// A buffered event.
enum Pending {
    /// A formatted line for a file.
    Line(PathBuf, Vec<u8>),
    /// A successful crypto operation, to format.
    Crypto(Crypto),
}

/// The per-process audit state: events waiting to be written, and the
/// background flusher.
struct State {
    events: Vec<Pending>,
    /// Bytes of the formatted lines waiting.
    bytes: usize,
    /// Crypto operations waiting.
    crypto: usize,
    /// When the oldest buffered line was added.
    oldest: Option<Instant>,
    /// Asks the flusher to stop.
    stop: bool,
    /// The flusher thread.
    thread: Option<JoinHandle<()>>,
}

impl State {
    /// Start afresh in a forked child: its parent's lines are the parent's to
    /// write (so nothing is written twice), and its parent's thread does not
    /// exist here (its handle is forgotten, never joined).
    fn adopt(&mut self) {
        self.take();
        if let Some(t) = self.thread.take() {
            std::mem::forget(t);
        }
        self.stop = false;
    }

    fn push(&mut self, event: Pending) {
        match &event {
            Pending::Line(_, text) => self.bytes += text.len(),
            Pending::Crypto(_) => self.crypto += 1,
        }
        if self.events.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.events.push(event);
    }

    /// Whether the buffer should be written now (checked on management
    /// events only: the flusher serves the crypto ones).
    fn due(&self) -> bool {
        self.bytes >= FLUSH_BYTES || self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL)
    }

    fn take(&mut self) -> Vec<Pending> {
        self.take_into(Vec::new())
    }

    /// Take the events, leaving `empty` (a spare with room) in their place.
    fn take_into(&mut self, empty: Vec<Pending>) -> Vec<Pending> {
        self.bytes = 0;
        self.crypto = 0;
        self.oldest = None;
        std::mem::replace(&mut self.events, empty)
    }
}

/// The state.
static STATE: Mutex<State> = Mutex::new(State {
    events: Vec::new(),
    bytes: 0,
    crypto: 0,
    oldest: None,
    stop: false,
    thread: None,
});
/// Wakes the flusher early (at `C_Finalize`, and when many crypto operations wait).
static WAKE: Condvar = Condvar::new();
/// The process that has taken [`STATE`] as its own (see [`state`]).
static OWNER: AtomicU32 = AtomicU32::new(0);
/// Set when [`begin`] found the state locked since before `fork()`.
static STUCK: AtomicBool = AtomicBool::new(false);
/// Held while a batch is taken and written (lock order: WRITER, then
/// STATE), with the buffers the last batch left: at tens of thousands of
/// lines a second, fresh buffers each time cost as much in page faults as
/// the formatting.
static WRITER: Mutex<Spare> = Mutex::new(Spare {
    events: Vec::new(),
    text: Vec::new(),
});
/// The buffers one flush leaves the next.
struct Spare {
    events: Vec<Pending>,
    text: Vec<Vec<u8>>,
}
/// Spare buffers larger than this are let go.
const SPARE_MAX: usize = 16 << 20;
/// The process that has taken [`WRITER`] as its own.
static WRITER_OWNER: AtomicU32 = AtomicU32::new(0);

/// Lock the state (see [`acquire`]); a forked child's first use drops what
/// its parent had buffered.
fn state() -> Option<MutexGuard<'static, State>> {
    let (mut st, first) = acquire(&STATE, &OWNER)?;
    if first {
        st.adopt();
    }
    Some(st)
}

/// Lock `m`, and say whether this is its first use in this process. That
/// first use — above all in a forked child — only *tries* the lock for a
/// while: `fork()` copies a mutex as it was, and one held by a parent thread
/// (the flusher, mid-write) would never be released in the child. Such a
/// child records nothing (and says so) rather than hang.
fn acquire<T>(m: &'static Mutex<T>, owner: &AtomicU32) -> Option<(MutexGuard<'static, T>, bool)> {
    let pid = std::process::id();
    if owner.load(Ordering::Acquire) == pid {
        return Some((m.lock().unwrap_or_else(|p| p.into_inner()), false));
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    let g = loop {
        match m.try_lock() {
            Ok(g) => break g,
            Err(TryLockError::Poisoned(p)) => break p.into_inner(),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TryLockError::WouldBlock) => {
                log::warn!("audit: state locked since before fork(); this process records nothing");
                return None;
            }
        }
    };
    let first = owner.swap(pid, Ordering::AcqRel) != pid;
    Some((g, first))
}

/// Start the once-a-second flusher if this process has none running.
fn start_flusher(st: &mut State) {
    if st.thread.is_some() {
        return;
    }
    st.stop = false;
    match std::thread::Builder::new()
        .name("softmhsm-audit".into())
        .spawn(flusher)
    {
        Ok(t) => st.thread = Some(t),
        Err(e) => log::warn!("audit: no flusher thread ({e}); lines wait for the next event"),
    }
}

/// The flusher: write the buffer once a second (sooner when many crypto
/// operations wait) until [`shutdown`].
fn flusher() {
    loop {
        {
            let Some(st) = state() else {
                return;
            };
            if st.stop {
                return;
            }
            let st = WAKE
                .wait_timeout(st, FLUSH_INTERVAL)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            if st.stop {
                return;
            }
        }
        flush();
    }
}

/// Format a batch and write it to its files, in order; a failure is a
/// warning, never an error.
/// Drains `batch`; takes its text buffers from `spare` and gives them back.
fn write(batch: &mut Vec<Pending>, spare: &mut Vec<Vec<u8>>) {
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut format = Formatter {
        pid: std::process::id(),
        anchor: Some((Instant::now(), SystemTime::now())),
        ..Formatter::default()
    };
    let mut buffer = |files: &mut Vec<(PathBuf, Vec<u8>)>, path: PathBuf| -> usize {
        match files.iter().position(|(p, _)| *p == path) {
            Some(i) => i,
            None => {
                files.push((path, spare.pop().unwrap_or_default()));
                files.len() - 1
            }
        }
    };
    // The file buffer of the last crypto operation's token.
    let mut last: Option<(*const (), usize)> = None;
    for event in batch.drain(..) {
        match event {
            Pending::Line(path, text) => {
                let i = buffer(&mut files, path);
                files[i].1.extend_from_slice(&text);
            }
            Pending::Crypto(op) => {
                let token = Arc::as_ptr(&op.token) as *const ();
                let i = match last {
                    Some((t, i)) if t == token => i,
                    _ => {
                        let i = buffer(&mut files, format.token(&op));
                        last = Some((token, i));
                        i
                    }
                };
                format.line(&op, &mut files[i].1);
            }
        }
    }
    for (path, mut data) in files {
        if let Err(e) = append(&path, &data) {
            log::warn!("audit: cannot write {}: {e}", path.display());
        }
        if data.capacity() <= SPARE_MAX {
            data.clear();
            spare.push(data);
        }
    }
}

/// Formats buffered crypto operations by hand, keeping what consecutive ones
/// share (the token's label, the key's kid already escaped, the second of the
/// time): serde's general path cost twice the whole budget per line. The
/// result is what [`LineOut`] writes, field for field (`tests/audit.rs`
/// reads every field of these lines back).
#[derive(Default)]
struct Formatter {
    /// The current token's label.
    label: String,
    /// The current key and its kid as a JSON string (None: no kid).
    kid: Option<(Arc<Entry>, Option<Vec<u8>>)>,
    /// The current second and its `YYYY-MM-DDTHH:MM:SS.` text.
    second: Option<(u64, String)>,
    pid: u32,
    /// One reading of both clocks, to make `Instant`s wall-clock times.
    anchor: Option<(Instant, SystemTime)>,
}

impl Formatter {
    /// Start on `op`'s token: its label, and its file.
    fn token(&mut self, op: &Crypto) -> PathBuf {
        self.label = op.token.label();
        self.kid = None;
        op.token.file()
    }

    /// Append `op`'s line to `out` (after [`Formatter::token`] of its token).
    fn line(&mut self, op: &Crypto, out: &mut Vec<u8>) {
        use std::io::Write as _;
        if !self
            .kid
            .as_ref()
            .is_some_and(|(k, _)| Arc::ptr_eq(k, &op.key))
        {
            let kid = op.key.rec.key().and_then(|k| {
                let kid = format!("softmhsm://{}/keys/{}/{}", self.label, k.name, k.version);
                serde_json::to_vec(&kid).ok()
            });
            self.kid = Some((op.key.clone(), kid));
        }
        let time = match self.anchor {
            Some((i, t)) => t - i.saturating_duration_since(op.ended),
            None => SystemTime::now(),
        };
        let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.second.as_ref().is_none_or(|(s, _)| *s != d.as_secs()) {
            let text = rfc3339_ms(UNIX_EPOCH + Duration::from_secs(d.as_secs()));
            // Without its "000Z": the milliseconds go there.
            let prefix = text[..text.len() - 4].to_string();
            self.second = Some((d.as_secs(), prefix));
        }
        let second = self.second.as_ref().map_or("", |(_, t)| t.as_str());
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(second.as_bytes());
        let _ = write!(out, "{:03}Z\",\"operationName\":", d.subsec_millis());
        // Operation names are this crate's constants, algorithms the
        // registry's and identities principals' names: escaped all the same.
        let _ = serde_json::to_writer(&mut *out, op.operation);
        out.extend_from_slice(b",\"resultType\":\"Success\",\"resultDescription\":\"CKR_OK\"");
        if let Some((_, Some(kid))) = &self.kid {
            out.extend_from_slice(b",\"kid\":");
            out.extend_from_slice(kid);
        }
        if let Some(alg) = &op.algorithm {
            out.extend_from_slice(b",\"algorithm\":");
            let _ = serde_json::to_writer(&mut *out, alg.as_ref());
        }
        if let Some(who) = &op.identity {
            out.extend_from_slice(b",\"identity\":");
            let _ = serde_json::to_writer(&mut *out, who.as_ref());
        }
        let _ = writeln!(
            out,
            ",\"durationMs\":{},\"pid\":{},\"caller\":\"{}\"}}",
            millis(op.ended.saturating_duration_since(op.started)),
            self.pid,
            Caller::Pkcs11.name()
        );
    }
}

/// Append `data` (whole lines) to `path`, created with mode 0600 (0660 in a
/// directory shared with its group: [`crate::file_modes`]); at most
/// [`FLUSH_BYTES`] of whole lines per `write`, each an atomic `O_APPEND` write.
fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let open = || {
        let mode = path.parent().map_or(0o600, crate::file_modes::file_mode);
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(mode)
            .open(path)?;
        if mode != 0o600 {
            // The umask may have taken the group's write bit; only the
            // file's owner can give it back (best effort).
            let _ = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
        }
        Ok::<_, std::io::Error>(f)
    };
    let mut f = match open() {
        // A token whose store is a PostgreSQL database keeps only files like
        // this one in its directory, which nothing else has created.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            open()?
        }
        other => other?,
    };
    let mut rest = data;
    while !rest.is_empty() {
        let cut = chunk_end(rest);
        f.write_all(&rest[..cut])?;
        rest = &rest[cut..];
    }
    Ok(())
}

/// The length of the first chunk of whole lines of at most [`FLUSH_BYTES`]
/// (a longer single line is a chunk by itself).
fn chunk_end(data: &[u8]) -> usize {
    if data.len() <= FLUSH_BYTES {
        return data.len();
    }
    match data[..FLUSH_BYTES].iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => data
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| i + 1),
    }
}

/// RFC 3339 UTC with milliseconds (`2026-11-23T10:00:00.123Z`).
pub fn rfc3339_ms(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let base = crate::engine::lifecycle::rfc3339(secs);
    let base = base.strip_suffix('Z').unwrap_or(&base);
    format!("{base}.{:03}Z", d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(op: &str) -> Event<'_> {
        Event {
            operation: op,
            success: false,
            description: "CKR_PIN_INCORRECT",
            kid: None,
            identity: Some("so"),
            duration: Duration::from_millis(3),
            caller: Caller::Cli,
        }
    }

    #[test]
    fn audit_file_sits_next_to_the_store() {
        assert_eq!(
            path_for(Path::new("/t/softmhsm.db")),
            PathBuf::from("/t/audit-softmhsm.jsonl")
        );
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_431_574_042);
        assert_eq!(rfc3339_ms(t), "2026-11-23T10:59:34.042Z");
    }

    #[test]
    fn a_recorded_event_is_one_json_line_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("softmhsm.db");
        record(&store, &event("Login"));
        flush();
        let text = std::fs::read_to_string(path_for(&store)).unwrap();
        assert_eq!(text.lines().count(), 1);
        let line: Line = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line.operation_name, "Login");
        assert_eq!(line.result_type, "Failure");
        assert_eq!(line.caller, "cli");
        assert_eq!(line.duration_ms, 3);
        assert_eq!(line.pid, std::process::id());
        assert!(!text.contains("\"kid\""), "no kid field without a key");
        assert_eq!(line.identity.as_deref(), Some("so"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path_for(&store))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_log_in_a_directory_shared_with_its_group_is_group_writable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o2770)).unwrap();
        let file = path_for(&dir.path().join("softmhsm.db"));
        append(&file, b"{}\n").unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
    }

    #[test]
    fn a_missing_token_directory_is_created_private() {
        // A token on PostgreSQL: nothing else creates its local directory.
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("not-yet");
        let file = path_for(&local.join("softmhsm.db"));
        append(&file, b"{}\n").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"{}\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&local).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    fn empty() -> State {
        State {
            events: Vec::new(),
            bytes: 0,
            crypto: 0,
            oldest: None,
            stop: false,
            thread: None,
        }
    }

    fn line(text: &str) -> Pending {
        Pending::Line(PathBuf::from("/a"), text.as_bytes().to_vec())
    }

    fn text_of(events: Vec<Pending>) -> Vec<Vec<u8>> {
        events
            .into_iter()
            .map(|e| match e {
                Pending::Line(_, t) => t,
                Pending::Crypto(_) => b"crypto".to_vec(),
            })
            .collect()
    }

    #[test]
    fn a_forked_child_drops_its_parents_lines() {
        let mut st = empty();
        st.push(line("parent\n"));
        st.adopt();
        st.push(line("child\n"));
        assert_eq!(text_of(st.take()), vec![b"child\n".to_vec()]);
    }

    #[test]
    fn a_full_buffer_is_due() {
        let mut st = empty();
        st.push(line("x\n"));
        assert!(!st.due());
        st.push(line(&"y".repeat(FLUSH_BYTES)));
        assert!(st.due());
    }

    #[test]
    fn levels_parse_with_the_old_spellings_of_on_and_off() {
        assert_eq!(Level::parse("all"), Some(Level::All));
        assert_eq!(Level::parse(" Management "), Some(Level::Management));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("0"), Some(Level::Off));
        assert_eq!(Level::parse("on"), Some(Level::All));
        assert_eq!(Level::parse("some"), None);
        assert!(Level::Management.management() && !Level::Management.crypto());
        assert!(!Level::Off.management() && Level::All.crypto());
    }

    #[test]
    fn a_written_line_reads_back_as_a_line() {
        let mut out = Vec::new();
        LineOut {
            time: "2026-11-23T10:59:34.042Z",
            operation_name: "KeySign",
            result_type: "Success",
            result_description: "CKR_OK",
            kid: Some("softmhsm://t/keys/k/00"),
            algorithm: Some("ES256"),
            identity: Some("user"),
            duration_ms: 0,
            pid: 7,
            caller: "pkcs11",
        }
        .write_to(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let line: Line = serde_json::from_slice(&out).unwrap();
        assert_eq!(serde_json::to_vec(&line).unwrap(), out[..out.len() - 1]);
    }

    #[test]
    fn chunks_end_on_line_boundaries() {
        let line = format!("{}\n", "z".repeat(1000));
        let data = line.repeat(100);
        let cut = chunk_end(data.as_bytes());
        assert!(cut <= FLUSH_BYTES && cut.is_multiple_of(line.len()));
        assert_eq!(chunk_end(b"short\n"), 6);
    }
}
