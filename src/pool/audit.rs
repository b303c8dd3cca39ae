//! The audit log (issue 4, item 7): one JSON line per event, after the Managed
//! HSM's `AuditEvent`, appended to `audit-<store stem>.jsonl` next to the
//! token's store file (mode 0600).
//!
//! What is recorded: every management operation (from the CLI and from
//! PKCS#11), every login, and every *refused* crypto operation. Successful
//! crypto operations are not: an nginx worker signs thousands of times a
//! second, and a line each would cost more than the signature.
//!
//! Writes are batched: lines collect in a per-process buffer behind a mutex and
//! go to the file when it holds [`FLUSH_BYTES`], when an event comes more than
//! [`FLUSH_INTERVAL`] after the oldest buffered one, once a second from a
//! background thread (PKCS#11 only; started on the first event, stopped at
//! `C_Finalize`), at `C_Finalize`, and at the end of a CLI command. Each flush
//! appends whole lines with `O_APPEND`, at most [`FLUSH_BYTES`] per `write`,
//! so lines of several processes never interleave mid-line (on a local file
//! system: `O_APPEND` is not atomic over NFS). A forked child drops the buffer
//! it inherited (the parent writes it) and starts its own; an application that
//! exits without `C_Finalize` may lose its last second of lines.
//!
//! Nothing secret is recorded: no PIN, no key material. Logging never fails an
//! operation: an unwritable file is a `log` warning and the batch is dropped.
//! `SOFTMHSM_AUDIT=off` turns it off.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Buffered bytes that trigger a flush; also the most one `write` carries.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// The longest an event waits in the buffer (give or take the next event).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

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
    /// How long the operation took.
    pub duration: Duration,
    /// The door it came through.
    pub caller: Caller,
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
    /// The Managed HSM algorithm (JWA name) of a refused crypto operation or a CLI data-plane verb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Milliseconds the operation took.
    pub duration_ms: u64,
    /// The process.
    pub pid: u32,
    /// `pkcs11` or `cli`.
    pub caller: String,
}

/// The audit file of the token whose store is `store_path`.
pub fn path_for(store_path: &Path) -> PathBuf {
    let stem = store_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "softmhsm".into());
    store_path.with_file_name(format!("audit-{stem}.jsonl"))
}

/// False when `SOFTMHSM_AUDIT` is `off` (or `0`, `false`, `no`); read once per process.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let off = std::env::var("SOFTMHSM_AUDIT").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            )
        });
        if off {
            log::info!("audit log off (SOFTMHSM_AUDIT)");
        }
        !off
    })
}

/// Record an event about the token whose store is `store_path`.
pub fn record(store_path: &Path, ev: &Event<'_>) {
    record_algorithm(store_path, ev, None);
}

/// [`record`] a crypto operation with its Managed HSM algorithm (the JWA
/// name the mechanism registry gives it), when known.
pub fn record_algorithm(store_path: &Path, ev: &Event<'_>, algorithm: Option<&str>) {
    if !enabled() {
        return;
    }
    let line = Line {
        time: rfc3339_ms(SystemTime::now()),
        operation_name: ev.operation.to_string(),
        result_type: if ev.success { "Success" } else { "Failure" }.to_string(),
        result_description: ev.description.to_string(),
        kid: ev.kid.map(str::to_string),
        algorithm: algorithm.map(str::to_string),
        duration_ms: u64::try_from(ev.duration.as_millis()).unwrap_or(u64::MAX),
        pid: std::process::id(),
        caller: ev.caller.name().to_string(),
    };
    let Ok(mut text) = serde_json::to_string(&line) else {
        return;
    };
    text.push('\n');
    let Some(mut st) = state() else {
        return;
    };
    st.push(path_for(store_path), text);
    if st.due() {
        write(st.take());
    } else if ev.caller == Caller::Pkcs11 {
        start_flusher(&mut st);
    }
}

/// Write every buffered line now.
pub fn flush() {
    if let Some(mut st) = state() {
        write(st.take());
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

/// The per-process audit state: lines waiting to be written, per file, and
/// the background flusher.
struct State {
    files: Vec<(PathBuf, Vec<u8>)>,
    bytes: usize,
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

    fn push(&mut self, path: PathBuf, line: String) {
        self.bytes += line.len();
        self.oldest.get_or_insert_with(Instant::now);
        match self.files.iter_mut().find(|(p, _)| *p == path) {
            Some((_, data)) => data.extend_from_slice(line.as_bytes()),
            None => self.files.push((path, line.into_bytes())),
        }
    }

    /// Whether the buffer should be written now.
    fn due(&self) -> bool {
        self.bytes >= FLUSH_BYTES || self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL)
    }

    fn take(&mut self) -> Vec<(PathBuf, Vec<u8>)> {
        self.bytes = 0;
        self.oldest = None;
        std::mem::take(&mut self.files)
    }
}

/// The state. Lines are written while it is held, so batches reach the file in
/// the order they were taken.
static STATE: Mutex<State> = Mutex::new(State {
    files: Vec::new(),
    bytes: 0,
    oldest: None,
    stop: false,
    thread: None,
});
/// Wakes the flusher early (at `C_Finalize`).
static WAKE: Condvar = Condvar::new();
/// The process that has taken [`STATE`] as its own (see [`state`]).
static OWNER: AtomicU32 = AtomicU32::new(0);

/// Lock the state. The first use in a process — above all in a forked child —
/// only *tries* the lock for a while: `fork()` copies a mutex as it was, and one
/// held by a parent thread (the flusher, mid-write) would never be released in
/// the child. Such a child records nothing (and says so) rather than hang.
fn state() -> Option<MutexGuard<'static, State>> {
    let pid = std::process::id();
    if OWNER.load(Ordering::Acquire) == pid {
        return Some(STATE.lock().unwrap_or_else(|p| p.into_inner()));
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut st = loop {
        match STATE.try_lock() {
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
    if OWNER.swap(pid, Ordering::AcqRel) != pid {
        st.adopt();
    }
    Some(st)
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

/// The flusher: write the buffer once a second until [`shutdown`].
fn flusher() {
    let Some(mut st) = state() else {
        return;
    };
    while !st.stop {
        st = WAKE
            .wait_timeout(st, FLUSH_INTERVAL)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        let batch = st.take();
        write(batch);
    }
}

/// Write batches to their files; a failure is a warning, never an error.
fn write(batch: Vec<(PathBuf, Vec<u8>)>) {
    for (path, data) in batch {
        if let Err(e) = append(&path, &data) {
            log::warn!("audit: cannot write {}: {e}", path.display());
        }
    }
}

/// Append `data` (whole lines) to `path`, created with mode 0600 (0660 in a
/// directory shared with its group: [`crate::access`]); at most
/// [`FLUSH_BYTES`] of whole lines per `write`, each an atomic `O_APPEND` write.
fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let open = || {
        let mode = path.parent().map_or(0o600, crate::access::file_mode);
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
            files: Vec::new(),
            bytes: 0,
            oldest: None,
            stop: false,
            thread: None,
        }
    }

    #[test]
    fn a_forked_child_drops_its_parents_lines() {
        let mut st = empty();
        st.push(PathBuf::from("/a"), "parent\n".into());
        st.adopt();
        st.push(PathBuf::from("/a"), "child\n".into());
        assert_eq!(st.take(), vec![(PathBuf::from("/a"), b"child\n".to_vec())]);
    }

    #[test]
    fn a_full_buffer_is_due() {
        let mut st = empty();
        st.push(PathBuf::from("/a"), "x\n".into());
        assert!(!st.due());
        st.push(PathBuf::from("/a"), "y".repeat(FLUSH_BYTES));
        assert!(st.due());
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
