//! The change signal of a PostgreSQL store: LISTEN/NOTIFY into an atomic, on
//! the store's own connection (one connection per process, not two).
//!
//! Every write transaction sends `NOTIFY softmhsm_changes, '<schema> <seq>'`
//! just before its commit (PostgreSQL delivers it at commit, never for a
//! rolled-back transaction). The store's connection LISTENs, so the server
//! pushes each notification into its socket as soon as the connection is
//! idle. [`ChangeSignal::latest`] — run before every `C_*Init` — is an atomic
//! load, plus, at most once every 10 ms, a look at what the server pushed
//! ([`Db::notifications`]: no round trip, no wait). So a call after a pause
//! reads every notification delivered before it, and under a steady stream
//! of calls a change is seen within 10 ms of its arrival. The store's
//! own queries also take notifications off the socket, kept for that look.
//!
//! The look is skipped when another thread is using the connection (a write
//! in progress: the next call looks), and never reconnects: a connection the
//! server cut is reopened by the next store call — at the latest the pool's
//! periodic check of the database ([`crate::pool::STALENESS_BOUND`]) — which
//! LISTENs again and raises the atomic to the log's newest sequence number,
//! making up for notifications lost while away.
//!
//! No thread: a thread in a host process that forks (an nginx master) is
//! lost in the child and can leave a lock held there. A process that makes no
//! call for a long time lets notifications wait in its socket, and reads them
//! all at its next call; meanwhile its server process stops taking more from
//! the pool-wide queue when the socket is full (PostgreSQL keeps up to 8 GB of
//! notifications, about 40 bytes each, before refusing `NOTIFY`).
//!
//! Before the store's first connection (opened at the first call that needs
//! the database) there is nothing to look at, and nothing to miss: the
//! connection LISTENs before its first query.
//!
//! Fork: a child inherits the connection but never reads it (the pid check in
//! [`super::postgres_conn::Owned`]); it re-runs `C_Initialize`, and opens its
//! own at its first call that needs the database.

use super::postgres_conn::{cause, Db, Fail, Owned};
use super::ChangeSignal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::time::Instant;

/// The notification channel (per database; the payload names the schema).
pub(super) const CHANNEL: &str = "softmhsm_changes";

/// The least time, in microseconds, between two looks at the socket from the
/// sign path. A look is a turn of the runtime's I/O driver (an `epoll_wait`
/// that returns at once, a `recv` if anything came); once a millisecond the
/// sign rate measured 0.85× SQLite's on a loaded machine (BENCHMARKS.md), so
/// once every 10 ms: a process that calls steadily sees a change at most 10 ms
/// later, one that paused looks at its next call.
const LOOK_EVERY_US: u64 = 10_000;

/// What a listening connection feeds: the newest sequence number announced
/// for one schema.
pub(super) struct Feed {
    seq: AtomicI64,
    /// `"<schema> "`: the payload prefix of this pool's notifications, known
    /// once the first connection has asked the server for its schema.
    prefix: OnceLock<String>,
}

impl Feed {
    /// A feed that has heard nothing yet (sequence number 0).
    pub fn new() -> Feed {
        Feed {
            seq: AtomicI64::new(0),
            prefix: OnceLock::new(),
        }
    }

    /// Take the notifications of `schema` (the pool's: its connections' `current_schema()`).
    pub fn name_schema(&self, schema: &str) {
        let _ = self.prefix.set(format!("{schema} "));
    }

    /// Make `db` listen, then raise the feed to the log's newest sequence
    /// number: whatever was committed before the LISTEN is in the log, and
    /// whatever after it arrives as a notification. One round trip.
    pub fn subscribe(&self, db: &mut Db) -> Result<(), Fail> {
        let row = db.last_row(&format!(
            "LISTEN {CHANNEL}; SELECT COALESCE(MAX(seq), 0) FROM changes"
        ))?;
        if let Some(Ok(newest)) = row
            .first()
            .and_then(|v| v.as_deref())
            .map(str::parse::<i64>)
        {
            self.raise(newest);
        }
        Ok(())
    }

    /// Raise the announced sequence number to `seq` (never lower it).
    pub fn raise(&self, seq: i64) {
        self.seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Take the notifications `db` has received, without waiting for more.
    fn read(&self, db: &mut Db) -> Result<(), postgres::Error> {
        let notes = db.notifications()?;
        let Some(prefix) = self.prefix.get() else {
            return Ok(());
        };
        for note in notes {
            if let Some(seq) = note
                .payload()
                .strip_prefix(prefix.as_str())
                .and_then(|s| s.parse::<i64>().ok())
            {
                self.raise(seq);
            }
        }
        Ok(())
    }
}

/// The change signal: the feed of the store's connection.
pub(super) struct PgSignal {
    feed: Arc<Feed>,
    conn: Arc<Mutex<Owned>>,
    epoch: Instant,
    /// Microseconds after `epoch` of the last look at the socket.
    looked: AtomicU64,
}

impl PgSignal {
    /// The signal of the store connection `conn`, which `feed` listens on.
    pub fn new(feed: Arc<Feed>, conn: Arc<Mutex<Owned>>) -> PgSignal {
        PgSignal {
            feed,
            conn,
            epoch: Instant::now(),
            looked: AtomicU64::new(0),
        }
    }

    /// Raise the announced sequence number to `seq` (this process's writes).
    pub fn announce(&self, seq: i64) {
        self.feed.raise(seq);
    }

    /// Read the connection's notifications unless another thread is using it.
    fn look(&self) {
        let mut conn = match self.conn.try_lock() {
            Ok(c) => c,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if let Some(db) = conn.current() {
            if let Err(e) = self.feed.read(db) {
                // The connection is gone; the next store call reopens it.
                log::debug!("store: change notifications: {}", cause(&e));
            }
        }
    }
}

impl ChangeSignal for PgSignal {
    fn latest(&self) -> i64 {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let last = self.looked.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= LOOK_EVERY_US
            && self
                .looked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.look();
        }
        self.feed.seq.load(Ordering::Acquire)
    }
}
