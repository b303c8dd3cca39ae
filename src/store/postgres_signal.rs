//! The change signal of a PostgreSQL store: LISTEN/NOTIFY into an atomic.
//!
//! Every write transaction sends `NOTIFY softmhsm_changes, '<schema> <seq>'`
//! just before its commit (PostgreSQL delivers it at commit, never for a
//! rolled-back transaction). One listener thread per opened pool holds a
//! second connection that LISTENs and raises an `AtomicI64`, so
//! [`ChangeSignal::latest`] — run before every `C_*Init` — is one atomic load.
//! The thread reconnects by itself; after each (re)connection it reads the
//! log's newest sequence number, so notifications lost while it was away are
//! made up for. Anything it still misses (a partition that drops packets
//! silently until keepalives notice) is caught by the pool's periodic check of
//! the database itself ([`crate::pool::STALENESS_BOUND`]).
//!
//! Fork: threads do not survive `fork()`. A child inherits this struct but
//! not the thread, and must not touch the listener's socket: it never joins
//! (there is nothing to join) and leaks the handle; it re-runs `C_Initialize`,
//! which opens its own store and starts its own listener. A child forked while
//! the listener thread held a process-wide lock (the logger's, say) inherits
//! that lock held, as with any threaded library; the listener logs only on
//! connection changes, so the window is small.

use super::postgres_conn::{cause, Db, Fail, Target};
use super::ChangeSignal;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The notification channel (per database; the payload names the schema).
pub(super) const CHANNEL: &str = "softmhsm_changes";

/// How often the listener looks up from its socket to see whether it should
/// stop: the longest a `C_Finalize` waits for it.
const TICK: Duration = Duration::from_millis(200);

/// The longest a dropped signal waits for its listener to stop before leaving
/// it to finish on its own.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// What the listener thread and the signal share.
struct Shared {
    seq: AtomicI64,
    stop: AtomicBool,
}

/// The change signal: an atomic fed by a listener thread.
pub(super) struct PgSignal {
    shared: Arc<Shared>,
    listener: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
    pid: u32,
}

impl PgSignal {
    /// A signal starting at `seq`, with its listener thread on a connection of
    /// its own to `target` in `schema`. Without a thread (the system refused
    /// one) the signal only moves with this process's own writes, and the
    /// periodic check finds the others'.
    pub fn start(target: Arc<Target>, schema: String, seq: i64) -> PgSignal {
        let shared = Arc::new(Shared {
            seq: AtomicI64::new(seq),
            stop: AtomicBool::new(false),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("softmhsm-listen".into())
            .spawn(move || {
                listen(&target, &schema, &thread_shared);
                let _ = done_tx.send(());
            });
        let listener = match spawned {
            Ok(handle) => Some((handle, done_rx)),
            Err(e) => {
                log::warn!("store: no change listener ({e}): other processes' writes are seen by the periodic check");
                None
            }
        };
        PgSignal {
            shared,
            listener: Mutex::new(listener),
            pid: std::process::id(),
        }
    }

    /// Raise the announced sequence number to `seq` (never lower it).
    pub fn announce(&self, seq: i64) {
        self.shared.seq.fetch_max(seq, Ordering::AcqRel);
    }
}

impl ChangeSignal for PgSignal {
    fn latest(&self) -> i64 {
        self.shared.seq.load(Ordering::Acquire)
    }
}

impl Drop for PgSignal {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let listener = self
            .listener
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some((handle, done)) = listener else {
            return;
        };
        if self.pid != std::process::id() {
            // A forked child: the thread is not here (see the module doc).
            std::mem::forget(handle);
            std::mem::forget(done);
            return;
        }
        // Join only a thread known to be finishing: one stuck connecting to
        // an unreachable server finishes on its own after its timeout.
        if done.recv_timeout(STOP_WAIT).is_ok() {
            let _ = handle.join();
        }
    }
}

/// The listener thread: connect, LISTEN, raise the atomic on each
/// notification for `schema`; reconnect (backing off to 5 s) when the
/// connection fails; stop when told.
fn listen(target: &Target, schema: &str, shared: &Shared) {
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    while !shared.stop.load(Ordering::Acquire) {
        match listen_once(target, schema, shared, &mut failing) {
            Ok(()) => return,
            Err(Fail::Db(e)) if !failing => {
                log::warn!(
                    "store {}: change listener: {}; reconnecting",
                    target.shown,
                    cause(&e)
                );
                failing = true;
            }
            Err(_) => {}
        }
        let mut slept = Duration::ZERO;
        while slept < backoff && !shared.stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK);
            slept += TICK;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: Ok when told to stop.
fn listen_once(
    target: &Target,
    schema: &str,
    shared: &Shared,
    failing: &mut bool,
) -> Result<(), Fail> {
    let mut db = Db::open(target)?;
    db.batch(&format!("LISTEN {CHANNEL}"))?;
    // Listening from here on: whatever was committed before is in the log.
    let newest: i64 = db
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[])?
        .try_get(0)?;
    shared.seq.fetch_max(newest, Ordering::AcqRel);
    if *failing {
        log::info!("store {}: change listener reconnected", target.shown);
        *failing = false;
    }
    let prefix = format!("{schema} ");
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let started = Instant::now();
        {
            let mut notes = db.client().notifications();
            let mut iter = notes.timeout_iter(TICK);
            while let Some(note) = iter.next()? {
                if let Some(seq) = note
                    .payload()
                    .strip_prefix(&prefix)
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    shared.seq.fetch_max(seq, Ordering::AcqRel);
                }
            }
        }
        if started.elapsed() < TICK / 2 {
            // The iterator also ends at once when the server hung up: ask,
            // so a dead connection is an error (and a reconnection).
            db.batch("SELECT 1")?;
        }
    }
}
