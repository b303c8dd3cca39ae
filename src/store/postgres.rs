//! The PostgreSQL-backed store: a pool shared by several processes on several
//! machines, selected by a `url` instead of a `path` (DESIGN §4).
//!
//! Same rows, same rules, same change log as the SQLite store ([`super::sqlite`]);
//! the master key is sealed and wrapped in Rust ([`super::pin`]), so the
//! database only ever holds salts and sealed bytes.
//!
//! # Transactions: one pool-wide write lock, not SERIALIZABLE
//!
//! Every write is one transaction (`READ COMMITTED`) that first locks the one
//! row of `pool_lock` (`SELECT … FOR UPDATE`): writers to a pool run one after
//! the other, exactly as SQLite's `BEGIN IMMEDIATE` makes them, and every rule
//! that depends on stored state (the version cap, `replaces`, a free name,
//! purge protection, a PIN failure count) is read and acted on under it. Why
//! not `SERIALIZABLE`:
//!
//! - **The change log must be numbered in commit order.** A reader that has
//!   seen sequence number *n* asks for what came after *n*. Under SERIALIZABLE
//!   two writers may draw numbers 5 and 6 and commit 6 first; a reader then
//!   skips 5 for ever. Under the lock, numbers are drawn and committed by one
//!   writer at a time, so every snapshot sees a prefix of the log.
//! - SERIALIZABLE fails transactions (40001) that must be retried; a retry
//!   would re-run PBKDF2 and the caller's `recover` rewriting, and a refused
//!   rule check would surface as an error the caller must tell apart.
//! - Writes are rare next to signs (key generation, rotation, PIN failures);
//!   serialising them costs nothing measurable, and reads never wait for it.
//!
//! The lock is a row, not the token row (which does not exist before the first
//! `init_token`, and which init deletes) and not an advisory lock (which would
//! name a number shared by every schema of the database). `lock_timeout`
//! (30 s) bounds the wait, like the SQLite store's busy timeout.
//!
//! Reads are single statements, except [`Store::changes_since`], which reads
//! the log and the rows in one `REPEATABLE READ` snapshot so they agree.
//! Round trips are what a loaded machine pays for (each one a context switch
//! to the server): a write costs two beyond its own statements (a new key
//! version's are two: the name's state, then the insert), a catch-up one
//! (a single statement, so one snapshot).
//!
//! # Connections and fork
//!
//! One connection per process: the pool's store, which also LISTENs for the
//! change signal ([`super::postgres_signal`]); a login after a failed one
//! opens a second for its duration ([`Store::reopen`]). The library opens it
//! at the first call that needs the database, not at `C_Initialize`
//! ([`PgStore::on_first_use`]): a host that loads the module and never uses
//! the token (p11-kit's every-module hosts, nginx's master) costs the server
//! nothing, and one that cannot reach it yet still initialises. A connection
//! that breaks (server restart, failover) is reopened on the next call; a
//! read, or a write whose `BEGIN` found the connection dead, is retried once
//! on the new connection, so nothing acknowledged is lost and nothing is
//! applied twice. A forked child never uses nor closes its parent's
//! connections ([`super::postgres_conn::Owned`]).
//!
//! # Not scrubbed
//!
//! SQLite's `secure_delete` has no PostgreSQL counterpart: a replaced wrapped
//! master key (after a PIN change) stays in dead tuples until `VACUUM` reuses
//! the page, and in the WAL and its archives. It is wrapped under the old PIN's
//! PBKDF2 key; protect the database files and backups accordingly.

use super::postgres_conn::{cause, Db, Fail, Owned, Target};
use super::postgres_signal::{Feed, PgSignal, CHANNEL};
use super::{
    now, pin, postgres_schema, AttestationRow, ChangeSignal, Changes, DeletedRow, Lookup,
    MasterKey, NewObject, ObjectRow, PinSlot, PinUser, RowKeys, Store, TokenRecord,
    CHANGE_LOG_KEEP, DAY,
};
use crate::error::{Error, Result};
use cryptoki_sys::{
    CKR_ACTION_PROHIBITED, CKR_ATTRIBUTE_VALUE_INVALID, CKR_DEVICE_ERROR, CKR_FUNCTION_REJECTED,
    CKR_OBJECT_HANDLE_INVALID, CKR_PIN_INCORRECT, CKR_TOKEN_NOT_RECOGNIZED,
    CKR_TOKEN_WRITE_PROTECTED,
};
use postgres::Row;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use super::postgres_conn::redacted;

/// The columns of `objects` that make an [`ObjectRow`], in [`object_row`]'s order.
const OBJECT_COLUMNS: &str = "id, name, version, current, attrs, sealed";

/// One connection to a pool's PostgreSQL database, opened at the first call
/// that needs it.
pub struct PgStore {
    target: Arc<Target>,
    /// The client needs `&mut` even to read. A `Store` is used by one thread
    /// at a time (the pool keeps it behind a mutex); the change signal reads
    /// notifications from the same connection when no one else uses it.
    conn: Arc<Mutex<Owned>>,
    signal: Arc<PgSignal>,
    /// Whether this store's first use (the purge and the log trim) has run,
    /// or is running.
    tidied: AtomicBool,
}

impl PgStore {
    /// Connect to the database at `url` (libpq URL syntax) now, as
    /// [`PgStore::on_first_use`]'s store does at its first call:
    /// `CKR_DEVICE_ERROR` (logged with the server and the cause) if it cannot
    /// be reached. The admin CLI's way in, which needs the database at once.
    pub fn open(url: &str) -> Result<PgStore> {
        let store = PgStore::on_first_use(url)?;
        store.first_use()?;
        Ok(store)
    }

    /// The store of the pool at `url`, connecting at the first call that
    /// needs the database, so that a process that loads the module and never
    /// uses the token (a host that loads every p11-kit module, nginx's
    /// master) holds no connection. Only a malformed URL fails here. The first
    /// connection creates or migrates the schema, and every connection
    /// LISTENs for the change signal; the first call also purges deleted
    /// keys past their purge date and trims the change log. A server that
    /// cannot be reached fails that call with `CKR_DEVICE_ERROR` (logged with
    /// the server and the cause), and the next call tries again.
    pub fn on_first_use(url: &str) -> Result<PgStore> {
        let target = Arc::new(Target::parse(url)?);
        let feed = Arc::new(Feed::new());
        let listener = feed.clone();
        let mut migrated = false;
        let setup = move |db: &mut Db| {
            if !migrated {
                postgres_schema::migrate(db)?;
                let schema: String = db.query_one("SELECT current_schema()", &[])?.try_get(0)?;
                listener.name_schema(&schema);
                migrated = true;
            }
            listener.subscribe(db)
        };
        let conn = Arc::new(Mutex::new(Owned::new(None, Some(Box::new(setup)))));
        let signal = Arc::new(PgSignal::new(feed, conn.clone()));
        Ok(PgStore {
            target,
            conn,
            signal,
            tidied: AtomicBool::new(false),
        })
    }

    /// The store's first call, before it runs: as the Managed HSM does on its
    /// own schedule, deleted keys past their scheduled purge date are gone
    /// (whoever uses the pool first), and the change log is trimmed. Their
    /// own reads and writes come back here and pass; a failure leaves it to
    /// the next call.
    fn first_use(&self) -> Result<()> {
        if self.tidied.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let tidied = self.purge_due(now()).and_then(|_| self.trim_change_log());
        if tidied.is_err() {
            self.tidied.store(false, Ordering::Release);
        }
        tidied
    }

    /// The connection (the change signal only ever tries it, so this waits at
    /// most for one of its looks at the socket).
    fn conn(&self) -> MutexGuard<'_, Owned> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a read on the connection; a connection found broken is reopened
    /// and the read tried once more (a server that cannot be reached is not
    /// tried twice: each try can take the whole `connect_timeout`).
    fn read<T>(&self, f: impl Fn(&mut Db) -> std::result::Result<T, Fail>) -> Result<T> {
        self.first_use()?;
        let mut conn = self.conn();
        let mut retried = false;
        loop {
            let reused = conn.current().is_some();
            match conn.get(&self.target).and_then(&f) {
                Ok(v) => return Ok(v),
                Err(Fail::Db(e)) if broken(&e) => {
                    conn.discard();
                    if retried || !reused {
                        return Err(self.target.report(Fail::Db(e)));
                    }
                    log::debug!(
                        "store {}: reconnecting after: {}",
                        self.target.shown,
                        cause(&e)
                    );
                    retried = true;
                }
                Err(e) => return Err(self.target.report(e)),
            }
        }
    }

    /// Run a write `f` as one transaction holding the pool's write lock, then
    /// announce the change sequence it reached (NOTIFY to other processes,
    /// delivered at commit; the atomic for this one). Beginning (with the
    /// lock and the sequence number before) is one round trip, and so is
    /// ending (the number after, the NOTIFY if it moved, and COMMIT): on a
    /// loaded machine each round trip is a context switch to the server.
    fn write<T>(&self, f: impl FnOnce(&mut Db) -> std::result::Result<T, Fail>) -> Result<T> {
        self.first_use()?;
        let mut guard = self.conn();
        let conn = &mut *guard;
        let target = &self.target;
        let begin =
            format!("BEGIN; SELECT id FROM pool_lock WHERE id = 1 FOR UPDATE; SELECT {CHANGE_SEQ}");
        let out = (|| {
            let began = match conn.get(target)?.last_row(&begin) {
                Err(Fail::Db(e)) if broken(&e) => {
                    // The connection was dead before anything ran: safe to try again.
                    log::debug!("store {}: reconnecting after: {}", target.shown, cause(&e));
                    conn.discard();
                    conn.get(target)?.last_row(&begin)
                }
                other => other,
            };
            let db = conn.get(target)?;
            let body = (|| {
                let before = number(&began?, 0)?;
                let v = f(db)?;
                let end = db.last_row(&format!(
                    "SELECT m, CASE WHEN m > {before}
                                    THEN pg_notify('{CHANNEL}', current_schema() || ' ' || m) END
                     FROM (SELECT {CHANGE_SEQ} AS m) s;
                     COMMIT"
                ))?;
                Ok((v, number(&end, 0)?))
            })();
            if body.is_err() {
                // On a broken connection the server rolls back by itself.
                let _ = db.batch("ROLLBACK");
            }
            body
        })();
        match out {
            Ok((v, seq)) => {
                self.signal.announce(seq);
                Ok(v)
            }
            Err(e) => {
                if matches!(&e, Fail::Db(e) if broken(e)) {
                    conn.discard();
                }
                Err(self.target.report(e))
            }
        }
    }

    /// Purge the deleted keys whose purge date is past (`now`).
    fn purge_due(&self, now: i64) -> Result<usize> {
        const DUE: &str = "SELECT EXISTS (SELECT 1 FROM objects
                                          WHERE purge_at IS NOT NULL AND purge_at <= $1)";
        let due: bool = self.read(|db| Ok(db.query_one(DUE, &[&now])?.try_get(0)?))?;
        if !due {
            // A first call must not take the write lock when there is nothing to do.
            return Ok(0);
        }
        self.write(|db| {
            let n = db.execute(
                "DELETE FROM objects WHERE purge_at IS NOT NULL AND purge_at <= $1",
                &[&now],
            )?;
            forget_orphan_policies(db)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Drop change-log entries far behind the newest, so the log stays
    /// bounded; `change_floor` remembers how far, so a reader behind it reloads.
    fn trim_change_log(&self) -> Result<()> {
        let (oldest, newest) = self.read(|db| {
            let r = db.query_one("SELECT MIN(seq), MAX(seq) FROM changes", &[])?;
            Ok((
                r.try_get::<_, Option<i64>>(0)?,
                r.try_get::<_, Option<i64>>(1)?,
            ))
        })?;
        if let (Some(oldest), Some(newest)) = (oldest, newest) {
            if newest - oldest > 2 * CHANGE_LOG_KEEP {
                let cut = newest - CHANGE_LOG_KEEP;
                self.write(|db| {
                    db.execute("DELETE FROM changes WHERE seq <= $1", &[&cut])?;
                    db.execute(
                        "UPDATE change_floor SET floor = GREATEST(floor, $1) WHERE id = 1",
                        &[&cut],
                    )?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Run one row-rewriting statement (`$1` = attrs, `$2` = id) in a transaction.
    fn rewrite(&mut self, id: i64, attrs: &str, sql: &'static str) -> Result<()> {
        self.write(|db| {
            if db.execute(sql, &[&attrs, &id])? == 0 {
                return Err(Fail::Rv(Error(CKR_OBJECT_HANDLE_INVALID)));
            }
            Ok(())
        })
    }
}

/// Whether an error means the connection is gone (so the next call opens a
/// new one), not a refusal after which the session goes on: the client's own
/// failures (socket closed or reset), and the server's FATAL ones, such as
/// "terminating connection due to administrator command" (57P01), which a
/// restarting server sends every session before it closes them.
fn broken(e: &postgres::Error) -> bool {
    e.as_db_error().is_none_or(|d| {
        matches!(d.severity(), "FATAL" | "PANIC")
            || d.code().code().starts_with("08")
            || d.code().code().starts_with("57P")
    })
}

/// The highest change sequence number committed (0: none yet), as an SQL
/// expression.
const CHANGE_SEQ: &str = "GREATEST(COALESCE((SELECT MAX(seq) FROM changes), 0),
                                  (SELECT floor FROM change_floor WHERE id = 1))";

/// The highest change sequence number committed (0: none yet).
fn change_seq(db: &mut Db) -> std::result::Result<i64, Fail> {
    Ok(db
        .query_one(&format!("SELECT {CHANGE_SEQ}"), &[])?
        .try_get(0)?)
}

/// Column `i` of a text row as a number (a damaged answer is a device error).
fn number(row: &[Option<String>], i: usize) -> std::result::Result<i64, Fail> {
    row.get(i)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or(Fail::Rv(Error(CKR_DEVICE_ERROR)))
}

/// A stored count as the `u32` the record carries (a value out of range is a
/// damaged store).
fn count(r: &Row, i: usize) -> std::result::Result<u32, Fail> {
    let v: i64 = r.try_get(i)?;
    u32::try_from(v).map_err(|_| Fail::Rv(Error(CKR_DEVICE_ERROR)))
}

/// Map an `objects` row (selected as [`OBJECT_COLUMNS`]) to an [`ObjectRow`].
fn object_row(r: &Row) -> std::result::Result<ObjectRow, Fail> {
    Ok(ObjectRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        version: r.try_get(2)?,
        current: r.try_get(3)?,
        attrs: r.try_get(4)?,
        sealed: r.try_get(5)?,
    })
}

/// Map a soft-deleted row (selected as [`OBJECT_COLUMNS`], `deleted_at`, `purge_at`).
fn deleted_row(r: &Row) -> std::result::Result<DeletedRow, Fail> {
    Ok(DeletedRow {
        row: object_row(r)?,
        deleted_at: r.try_get(6)?,
        purge_at: r.try_get(7)?,
    })
}

/// Every live object row, in id order.
fn live_objects(db: &mut Db) -> std::result::Result<Vec<ObjectRow>, Fail> {
    db.query(
        &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE deleted_at IS NULL ORDER BY id"),
        &[],
    )?
    .iter()
    .map(object_row)
    .collect()
}

/// Read `who`'s PIN columns; `CKR_TOKEN_NOT_RECOGNIZED` if the token was never initialised.
fn read_pin_slot(db: &mut Db, who: PinUser) -> std::result::Result<PinSlot, Fail> {
    let (salt, wrapped, failures) = who.columns();
    let sql =
        format!("SELECT {salt}, {wrapped}, {failures}, kdf_iterations FROM token WHERE id = 1");
    let row = db
        .query_opt(&sql, &[])?
        .ok_or(Fail::Rv(Error(CKR_TOKEN_NOT_RECOGNIZED)))?;
    Ok(PinSlot {
        salt: row.try_get(0)?,
        wrapped: row.try_get(1)?,
        failures: count(&row, 2)?,
        kdf_iterations: count(&row, 3)?,
    })
}

/// Count one failed login of `who` (inside a write).
fn add_failure(db: &mut Db, who: PinUser) -> std::result::Result<(), Fail> {
    let (_, _, failures) = who.columns();
    db.execute(
        &format!("UPDATE token SET {failures} = {failures} + 1 WHERE id = 1"),
        &[],
    )?;
    Ok(())
}

/// A purged name's rotation policy goes with it (a soft-deleted key keeps its
/// policy, to have it again when recovered).
fn forget_orphan_policies(db: &mut Db) -> std::result::Result<(), Fail> {
    db.execute(
        "DELETE FROM policies WHERE NOT EXISTS
           (SELECT 1 FROM objects o WHERE o.name_lc = policies.name_lc)",
        &[],
    )?;
    Ok(())
}

/// Set the rotation policy of the (lower-case) name, replacing any it had.
fn put_policy(db: &mut Db, name_lc: &str, policy: &str) -> std::result::Result<(), Fail> {
    db.execute(
        "INSERT INTO policies (name_lc, policy) VALUES ($1, $2)
         ON CONFLICT (name_lc) DO UPDATE SET policy = excluded.policy",
        &[&name_lc, &policy],
    )?;
    Ok(())
}

impl Store for PgStore {
    fn token(&self) -> Result<Option<TokenRecord>> {
        self.read(|db| {
            let Some(r) = db.query_opt(
                "SELECT label, created, kdf_iterations, user_wrapped IS NOT NULL,
                        user_failures, so_failures, retention_days, purge_protection,
                        provisioned
                 FROM token WHERE id = 1",
                &[],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(TokenRecord {
                label: r.try_get(0)?,
                created: r.try_get(1)?,
                kdf_iterations: count(&r, 2)?,
                user_pin_initialized: r.try_get(3)?,
                user_failures: count(&r, 4)?,
                so_failures: count(&r, 5)?,
                retention_days: count(&r, 6)?,
                purge_protection: r.try_get(7)?,
                provisioned: r.try_get(8)?,
            }))
        })
    }

    /// As the SQLite store's: one transaction deletes every object (and every
    /// rotation policy) and makes the token row anew; a purge-protected token
    /// that holds any object is refused. The PIN key derivation runs before
    /// the write lock is taken.
    fn init_token(
        &mut self,
        label: &str,
        so_pin: &[u8],
        kdf_iterations: u32,
        retention_days: u32,
    ) -> Result<MasterKey> {
        let new = pin::new_token(so_pin, kdf_iterations, retention_days)?;
        let created = now();
        self.write(|db| {
            let r = db.query_one(
                "SELECT (SELECT COUNT(*) FROM objects),
                        COALESCE((SELECT purge_protection FROM token WHERE id = 1), false)",
                &[],
            )?;
            let (objects, protected): (i64, bool) = (r.try_get(0)?, r.try_get(1)?);
            if protected && objects > 0 {
                log::warn!(
                    "store: purge protection: {objects} objects, the token is not re-initialised"
                );
                return Err(Fail::Rv(Error(CKR_TOKEN_WRITE_PROTECTED)));
            }
            db.execute("DELETE FROM objects", &[])?;
            db.execute("DELETE FROM policies", &[])?;
            // A new pool has no principals: their wraps are of the old master key.
            db.execute("DELETE FROM assignments", &[])?;
            db.execute("DELETE FROM principals", &[])?;
            db.execute("DELETE FROM role_definitions", &[])?;
            db.execute("DELETE FROM token", &[])?;
            db.execute(
                "INSERT INTO token (id, label, created, kdf_iterations, retention_days,
                                    so_salt, so_wrapped, user_salt, user_wrapped,
                                    so_failures, user_failures, purge_protection)
                 VALUES (1, $1, $2, $3, $4, $5, $6, NULL, NULL, 0, 0, $7)",
                &[
                    &label.trim_end_matches(' '),
                    &created,
                    &i64::from(kdf_iterations),
                    &i64::from(retention_days),
                    &&new.salt[..],
                    &new.wrapped,
                    &protected,
                ],
            )?;
            Ok(())
        })?;
        Ok(new.master)
    }

    fn pin_slot(&self, who: PinUser) -> Result<PinSlot> {
        self.read(|db| read_pin_slot(db, who))
    }

    fn count_pin_failure(&mut self, who: PinUser) -> Result<()> {
        self.write(|db| add_failure(db, who))
    }

    /// As the SQLite store's: while the counter is zero the PIN is checked
    /// without the write lock and a failure counted afterwards; once a failure
    /// is on record, read, verify and count run under the lock.
    fn unlock(&mut self, who: PinUser, pin: &[u8]) -> Result<MasterKey> {
        let slot = self.pin_slot(who)?;
        pin::check_pin_usable(who, &slot)?;
        if slot.failures == 0 {
            return match pin::unwrap_slot(who, &slot, pin) {
                Err(Error(CKR_PIN_INCORRECT)) => {
                    self.count_pin_failure(who)?;
                    Err(Error(CKR_PIN_INCORRECT))
                }
                other => other,
            };
        }
        let mut result = None;
        self.write(|db| {
            let slot = read_pin_slot(db, who)?;
            pin::check_pin_usable(who, &slot)?;
            let (_, _, failures) = who.columns();
            let out = pin::unwrap_slot(who, &slot, pin);
            match &out {
                Ok(_) => {
                    db.execute(
                        &format!("UPDATE token SET {failures} = 0 WHERE id = 1"),
                        &[],
                    )?;
                }
                Err(Error(CKR_PIN_INCORRECT)) => add_failure(db, who)?,
                Err(e) => return Err(Fail::Rv(*e)),
            }
            result = Some(out);
            Ok(())
        })?;
        result.unwrap_or(Err(Error(CKR_DEVICE_ERROR)))
    }

    fn set_pin(&mut self, who: PinUser, master: &MasterKey, pin: &[u8]) -> Result<()> {
        let salt = pin::new_salt()?;
        self.write(|db| {
            let iterations = db
                .query_opt("SELECT kdf_iterations FROM token WHERE id = 1", &[])?
                .ok_or(Fail::Rv(Error(CKR_TOKEN_NOT_RECOGNIZED)))?;
            let iterations = count(&iterations, 0)?;
            let wrapped = master.wrap_under_pin(pin, &salt, iterations, who.wrap_aad())?;
            let (salt_col, wrapped_col, failures_col) = who.columns();
            db.execute(
                &format!(
                    "UPDATE token SET {salt_col} = $1, {wrapped_col} = $2, {failures_col} = 0
                     WHERE id = 1"
                ),
                &[&&salt[..], &wrapped],
            )?;
            Ok(())
        })
    }

    fn reopen(&self) -> Result<Box<dyn Store>> {
        self.first_use()?;
        let db = Db::open(&self.target).map_err(|e| self.target.report(e))?;
        Ok(Box::new(PgStore {
            target: self.target.clone(),
            conn: Arc::new(Mutex::new(Owned::new(Some(db), None))),
            signal: self.signal.clone(),
            // The schema is checked and the first use done (above).
            tidied: AtomicBool::new(true),
        }))
    }

    fn signal(&self) -> Arc<dyn ChangeSignal> {
        self.signal.clone()
    }

    fn change_seq(&self) -> Result<i64> {
        self.read(change_seq)
    }

    /// As the SQLite store's, plus: a caller *ahead* of the database (which
    /// was restored, or failed over to a standby that had not received the
    /// newest commits) reloads too.
    fn changes_since(&self, seq: i64) -> Result<Changes> {
        // One statement, so one snapshot for the log and the rows, and one
        // round trip (it was three: a REPEATABLE READ transaction's start
        // with the log's state, the rows, the end). The rows come first,
        // then the log's state (repeated on each row; on the one row, its
        // object columns NULL, when no row changed). `touched` is only read
        // when the caller can catch up (else it reloads).
        let sql = format!(
            "WITH head AS (
                SELECT {CHANGE_SEQ} AS now,
                       (SELECT floor FROM change_floor WHERE id = 1) AS floor,
                       EXISTS (SELECT 1 FROM changes WHERE seq > $1 AND object_id = 0) AS remade
             ), log AS (
                SELECT ARRAY(SELECT DISTINCT c.object_id FROM changes c, head h
                             WHERE c.seq > $1 AND c.object_id <> 0
                               AND $1 >= h.floor AND $1 <= h.now AND NOT h.remade) AS touched
             )
             SELECT o.id, o.name, o.version, o.current, o.attrs, o.sealed,
                    head.now, head.floor, head.remade, log.touched
             FROM head CROSS JOIN log
             LEFT JOIN objects o ON o.id = ANY (log.touched) AND o.deleted_at IS NULL
             ORDER BY o.id"
        );
        self.read(|db| {
            let rows = db.query(&sql, &[&seq])?;
            let head = rows.first().ok_or(Fail::Rv(Error(CKR_DEVICE_ERROR)))?;
            let (now, floor): (i64, i64) = (head.try_get(6)?, head.try_get(7)?);
            let remade: bool = head.try_get(8)?;
            if seq < 0 || remade || seq < floor || seq > now {
                return Ok(Changes::Reload { seq: now });
            }
            let mut touched: Vec<i64> = head.try_get(9)?;
            touched.sort_unstable();
            let mut changed = Vec::with_capacity(rows.len());
            for r in &rows {
                if r.try_get::<_, Option<i64>>(0)?.is_some() {
                    changed.push(object_row(r)?);
                }
            }
            Ok(Changes::Since {
                seq: now,
                touched,
                rows: changed,
            })
        })
    }

    fn objects(&self) -> Result<Vec<ObjectRow>> {
        self.read(live_objects)
    }

    fn all_objects(&self) -> Result<Vec<ObjectRow>> {
        self.read(|db| {
            db.query(
                &format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY id"),
                &[],
            )?
            .iter()
            .map(object_row)
            .collect()
        })
    }

    fn object(&self, id: i64) -> Result<Option<ObjectRow>> {
        self.read(|db| {
            db.query_opt(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects WHERE id = $1 AND deleted_at IS NULL"
                ),
                &[&id],
            )?
            .as_ref()
            .map(object_row)
            .transpose()
        })
    }

    /// As the SQLite store's: a deleted key's name is taken
    /// (`CKR_ATTRIBUTE_VALUE_INVALID`), the version cap and `replaces` are
    /// checked under the write lock.
    fn insert_object(&mut self, new: &NewObject) -> Result<ObjectRow> {
        let name_lc = new.name.as_deref().map(str::to_lowercase);
        let id = self.write(|db| {
            if let Some(name_lc) = &name_lc {
                // The name's state in one round trip: deleted, live versions,
                // the current version.
                let r = db.query_one(
                    "SELECT EXISTS (SELECT 1 FROM objects
                                    WHERE name_lc = $1 AND deleted_at IS NOT NULL),
                            (SELECT COUNT(*) FROM objects WHERE name_lc = $1 AND deleted_at IS NULL),
                            (SELECT version FROM objects
                             WHERE name_lc = $1 AND current AND deleted_at IS NULL)",
                    &[name_lc],
                )?;
                let (deleted, n, current): (bool, i64, Option<String>) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                if deleted {
                    log::debug!("store: name {name_lc} belongs to a deleted key");
                    return Err(Fail::Rv(Error(CKR_ATTRIBUTE_VALUE_INVALID)));
                }
                if let Some(cap) = new.max_versions {
                    if usize::try_from(n).unwrap_or(usize::MAX) >= cap {
                        log::warn!("key {name_lc} already has {n} versions: no new version");
                        return Err(Fail::Rv(Error(CKR_ACTION_PROHIBITED)));
                    }
                }
                if let Some(expected) = &new.replaces {
                    if current.as_deref() != Some(expected.as_str()) {
                        return Err(Fail::Rv(Error(CKR_FUNCTION_REJECTED)));
                    }
                }
            }
            // The name's current version stops being current, and the new
            // row is inserted, in one statement (no name: no row to update).
            Ok(db
                .query_one(
                    "WITH previous AS (
                        UPDATE objects SET current = false WHERE name_lc = $2 AND current
                     )
                     INSERT INTO objects (name, name_lc, version, current, attrs, sealed,
                                          label, public_label, ckaid)
                     VALUES ($1, $2, $3, true, $4, $5, $6, $7, $8) RETURNING id",
                    &[
                        &new.name,
                        &name_lc,
                        &new.version,
                        &new.attrs,
                        &new.sealed,
                        &new.keys.label,
                        &new.keys.public_label,
                        &new.keys.ckaid,
                    ],
                )?
                .try_get::<_, i64>(0)?)
        })?;
        Ok(new.stored(id, true))
    }

    fn update_attrs(&mut self, id: i64, attrs: &str, keys: &RowKeys) -> Result<()> {
        self.write(|db| {
            let n = db.execute(
                "UPDATE objects SET attrs = $1, label = $2, public_label = $3, ckaid = $4
                 WHERE id = $5 AND deleted_at IS NULL",
                &[&attrs, &keys.label, &keys.public_label, &keys.ckaid, &id],
            )?;
            if n == 0 {
                return Err(Fail::Rv(Error(CKR_OBJECT_HANDLE_INVALID)));
            }
            Ok(())
        })
    }

    fn objects_by_ids(&self, ids: &[i64]) -> Result<Vec<ObjectRow>> {
        // One statement, one snapshot: the rows agree with each other.
        self.read(|db| {
            db.query(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects
                     WHERE id = ANY($1) AND deleted_at IS NULL"
                ),
                &[&ids],
            )?
            .iter()
            .map(object_row)
            .collect()
        })
    }

    fn lookup(&self, by: Lookup<'_>) -> Result<Vec<i64>> {
        const LIVE: &str = "SELECT id FROM objects WHERE deleted_at IS NULL";
        self.read(|db| {
            let rows = match by {
                Lookup::Label(l) => db.query(
                    &format!("{LIVE} AND label = $1 UNION {LIVE} AND public_label = $1"),
                    &[&l],
                )?,
                Lookup::CkaId(id) => db.query(&format!("{LIVE} AND ckaid = $1"), &[&id])?,
                Lookup::Version(v) => db.query(&format!("{LIVE} AND version = $1"), &[&v])?,
                Lookup::All => db.query(LIVE, &[])?,
            };
            rows.iter()
                .map(|r| r.try_get(0).map_err(Fail::Db))
                .collect()
        })
    }

    fn unkeyed(&self) -> Result<Vec<(i64, String)>> {
        self.read(|db| {
            db.query("SELECT id, attrs FROM objects WHERE label IS NULL", &[])?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    fn set_keys(&mut self, keys: &[(i64, RowKeys)]) -> Result<()> {
        self.write(|db| {
            for (id, k) in keys {
                db.execute(
                    "UPDATE objects SET label = $1, public_label = $2, ckaid = $3 WHERE id = $4",
                    &[&k.label, &k.public_label, &k.ckaid, id],
                )?;
            }
            Ok(())
        })
    }

    fn forget_secret(&mut self, id: i64, attrs: &str) -> Result<()> {
        self.rewrite(
            id,
            attrs,
            "UPDATE objects SET attrs = $1, sealed = NULL WHERE id = $2 AND deleted_at IS NULL",
        )
    }

    fn delete_object(&mut self, id: i64) -> Result<Option<i64>> {
        self.write(|db| {
            let found = db
                .query_opt("SELECT name_lc, current FROM objects WHERE id = $1", &[&id])?
                .ok_or(Fail::Rv(Error(CKR_OBJECT_HANDLE_INVALID)))?;
            let (name_lc, current): (Option<String>, bool) = (found.try_get(0)?, found.try_get(1)?);
            db.execute("DELETE FROM objects WHERE id = $1", &[&id])?;
            let (Some(name_lc), true) = (name_lc, current) else {
                return Ok(None);
            };
            Ok(db
                .query_opt(
                    "UPDATE objects SET current = true
                     WHERE id = (SELECT MAX(id) FROM objects WHERE name_lc = $1)
                     RETURNING id",
                    &[&name_lc],
                )?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    fn versions_of(&self, name: &str) -> Result<Vec<ObjectRow>> {
        let name_lc = name.to_lowercase();
        self.read(|db| {
            db.query(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM objects
                     WHERE name_lc = $1 AND deleted_at IS NULL ORDER BY id"
                ),
                &[&name_lc],
            )?
            .iter()
            .map(object_row)
            .collect()
        })
    }

    fn soft_delete_name(&mut self, name: &str, now: i64) -> Result<Vec<i64>> {
        let name_lc = name.to_lowercase();
        self.write(|db| {
            let days: i64 = db
                .query_opt("SELECT retention_days FROM token WHERE id = 1", &[])?
                .ok_or(Fail::Rv(Error(CKR_TOKEN_NOT_RECOGNIZED)))?
                .try_get(0)?;
            let mut ids = db
                .query(
                    "UPDATE objects SET deleted_at = $2, purge_at = $3
                     WHERE name_lc = $1 AND deleted_at IS NULL RETURNING id",
                    &[&name_lc, &now, &now.saturating_add(days * DAY)],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<Vec<i64>, _>>()?;
            ids.sort_unstable();
            Ok(ids)
        })
    }

    fn recover_name_rewriting(
        &mut self,
        name: &str,
        rewrite: &dyn Fn(&str, bool) -> Result<Option<String>>,
    ) -> Result<usize> {
        let name_lc = name.to_lowercase();
        self.write(|db| {
            let rows = db.query(
                "SELECT id, attrs, sealed IS NOT NULL FROM objects
                 WHERE name_lc = $1 AND deleted_at IS NOT NULL ORDER BY id",
                &[&name_lc],
            )?;
            for r in &rows {
                let (id, attrs, sealed): (i64, String, bool) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                if let Some(new) = rewrite(&attrs, sealed)? {
                    db.execute("UPDATE objects SET attrs = $1 WHERE id = $2", &[&new, &id])?;
                }
            }
            let n = db.execute(
                "UPDATE objects SET deleted_at = NULL, purge_at = NULL
                 WHERE name_lc = $1 AND deleted_at IS NOT NULL",
                &[&name_lc],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn purge_name(&mut self, name: &str, now: i64) -> Result<usize> {
        let name_lc = name.to_lowercase();
        self.write(|db| {
            let r = db.query_one(
                "SELECT COALESCE((SELECT purge_protection FROM token WHERE id = 1), false),
                        EXISTS (SELECT 1 FROM objects
                                WHERE name_lc = $1 AND deleted_at IS NOT NULL AND purge_at > $2)",
                &[&name_lc, &now],
            )?;
            let (protected, early): (bool, bool) = (r.try_get(0)?, r.try_get(1)?);
            if protected && early {
                return Err(Fail::Rv(Error(CKR_ACTION_PROHIBITED)));
            }
            let n = db.execute(
                "DELETE FROM objects WHERE name_lc = $1 AND deleted_at IS NOT NULL",
                &[&name_lc],
            )?;
            forget_orphan_policies(db)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn purge_expired(&mut self, now: i64) -> Result<usize> {
        self.purge_due(now)
    }

    fn rotation_policy(&self, name: &str) -> Result<Option<String>> {
        let name_lc = name.to_lowercase();
        self.read(|db| {
            db.query_opt(
                "SELECT policy FROM policies WHERE name_lc = $1",
                &[&name_lc],
            )?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Fail::Db)
        })
    }

    fn set_rotation_policy(&mut self, name: &str, policy: Option<&str>) -> Result<()> {
        let name_lc = name.to_lowercase();
        self.write(|db| {
            let live: bool = db
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM objects WHERE name_lc = $1 AND deleted_at IS NULL)",
                    &[&name_lc],
                )?
                .try_get(0)?;
            if !live {
                return Err(Fail::Rv(Error(CKR_OBJECT_HANDLE_INVALID)));
            }
            match policy {
                Some(p) => put_policy(db, &name_lc, p)?,
                None => {
                    db.execute("DELETE FROM policies WHERE name_lc = $1", &[&name_lc])?;
                }
            }
            Ok(())
        })
    }

    fn rotation_policies(&self) -> Result<Vec<(String, String)>> {
        self.read(|db| {
            db.query(
                "SELECT name_lc, policy FROM policies p WHERE EXISTS
                   (SELECT 1 FROM objects o WHERE o.name_lc = p.name_lc AND o.deleted_at IS NULL)
                 ORDER BY name_lc",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    fn deleted_name(&self, name: &str) -> Result<Option<DeletedRow>> {
        let name_lc = name.to_lowercase();
        self.read(|db| {
            db.query_opt(
                &format!(
                    "SELECT {OBJECT_COLUMNS}, deleted_at, purge_at FROM objects
                     WHERE name_lc = $1 AND deleted_at IS NOT NULL AND current"
                ),
                &[&name_lc],
            )?
            .as_ref()
            .map(deleted_row)
            .transpose()
        })
    }

    fn deleted_names(&self) -> Result<Vec<DeletedRow>> {
        self.read(|db| {
            db.query(
                &format!(
                    "SELECT {OBJECT_COLUMNS}, deleted_at, purge_at FROM objects
                     WHERE deleted_at IS NOT NULL AND current ORDER BY name_lc"
                ),
                &[],
            )?
            .iter()
            .map(deleted_row)
            .collect()
        })
    }

    fn restore_versions(
        &mut self,
        rows: &[NewObject],
        policy: Option<&str>,
    ) -> Result<Vec<ObjectRow>> {
        let name_lc = super::restored_name(rows)?;
        self.write(|db| {
            let taken: bool = db
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM objects WHERE name_lc = $1)",
                    &[&name_lc],
                )?
                .try_get(0)?;
            if taken {
                return Err(Fail::Rv(Error(CKR_ATTRIBUTE_VALUE_INVALID)));
            }
            let mut out = Vec::with_capacity(rows.len());
            for (i, new) in rows.iter().enumerate() {
                let current = i + 1 == rows.len();
                let id: i64 = db
                    .query_one(
                        "INSERT INTO objects (name, name_lc, version, current, attrs, sealed,
                                              label, public_label, ckaid)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                        &[
                            &new.name,
                            &name_lc,
                            &new.version,
                            &current,
                            &new.attrs,
                            &new.sealed,
                            &new.keys.label,
                            &new.keys.public_label,
                            &new.keys.ckaid,
                        ],
                    )?
                    .try_get(0)?;
                out.push(new.stored(id, current));
            }
            if let Some(p) = policy {
                put_policy(db, &name_lc, p)?;
            }
            Ok(out)
        })
    }

    fn set_purge_protection(&mut self, on: bool) -> Result<()> {
        self.write(|db| {
            let was: Option<bool> = db
                .query_opt("SELECT purge_protection FROM token WHERE id = 1", &[])?
                .map(|r| r.try_get(0))
                .transpose()?;
            match was {
                None => return Err(Fail::Rv(Error(CKR_TOKEN_NOT_RECOGNIZED))),
                Some(true) if !on => return Err(Fail::Rv(Error(CKR_ACTION_PROHIBITED))),
                _ => {}
            }
            db.execute(
                "UPDATE token SET purge_protection = $1 WHERE id = 1",
                &[&on],
            )?;
            Ok(())
        })
    }

    fn set_provisioned(&mut self, on: bool) -> Result<()> {
        self.write(|db| {
            let n = db.execute("UPDATE token SET provisioned = $1 WHERE id = 1", &[&on])?;
            if n == 0 {
                return Err(Fail::Rv(Error(CKR_TOKEN_NOT_RECOGNIZED)));
            }
            Ok(())
        })
    }

    fn attestation_key(&self) -> Result<Option<AttestationRow>> {
        self.read(|db| {
            let r = db
                .query_opt(
                    "SELECT attest_sealed, attest_public FROM token WHERE id = 1",
                    &[],
                )?
                .ok_or(Fail::Rv(Error(CKR_TOKEN_NOT_RECOGNIZED)))?;
            let (sealed, public): (Option<Vec<u8>>, Option<Vec<u8>>) =
                (r.try_get(0)?, r.try_get(1)?);
            Ok(match (sealed, public) {
                (Some(sealed), Some(public)) => Some(AttestationRow { sealed, public }),
                _ => None,
            })
        })
    }

    fn set_attestation_key(&mut self, key: &AttestationRow) -> Result<bool> {
        self.write(|db| {
            let n = db.execute(
                "UPDATE token SET attest_sealed = $1, attest_public = $2
                 WHERE id = 1 AND (attest_sealed IS NULL OR attest_public IS NULL)",
                &[&key.sealed, &key.public],
            )?;
            Ok(n == 1)
        })
    }

    fn principals(&self) -> Result<Vec<super::Principal>> {
        self.read(|db| {
            db.query(
                "SELECT name, object_id, created FROM principals ORDER BY name_lc",
                &[],
            )?
            .iter()
            .map(principal_row)
            .collect()
        })
    }

    fn principal_pin(&self, name: &str) -> Result<Option<(super::Principal, PinSlot)>> {
        let name_lc = name.to_lowercase();
        self.read(|db| {
            let Some(r) = db.query_opt(
                "SELECT p.name, p.object_id, p.created, p.salt, p.wrapped, p.failures,
                        p.kdf_iterations
                 FROM principals p, token t WHERE t.id = 1 AND p.name_lc = $1",
                &[&name_lc],
            )?
            else {
                return Ok(None);
            };
            Ok(Some((
                principal_row(&r)?,
                PinSlot {
                    salt: r.try_get(3)?,
                    wrapped: r.try_get(4)?,
                    failures: count(&r, 5)?,
                    kdf_iterations: count(&r, 6)?,
                },
            )))
        })
    }

    fn add_principal(
        &mut self,
        p: &super::Principal,
        master: &MasterKey,
        pin: &[u8],
    ) -> Result<bool> {
        let iterations = self
            .token()?
            .ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))?
            .kdf_iterations;
        let (salt, wrapped) = pin::principal_wrap(master, &p.object_id, pin, iterations)?;
        let record = super::PrincipalRecord {
            principal: p.clone(),
            salt: salt.to_vec(),
            wrapped,
            kdf_iterations: iterations,
        };
        self.write(|db| insert_principal(db, &record))
    }

    fn set_principal_pin(&mut self, name: &str, master: &MasterKey, pin: &[u8]) -> Result<bool> {
        let Some((p, slot)) = self.principal_pin(name)? else {
            return Ok(false);
        };
        let (salt, wrapped) = pin::principal_wrap(master, &p.object_id, pin, slot.kdf_iterations)?;
        self.write(|db| {
            let n = db.execute(
                "UPDATE principals SET salt = $1, wrapped = $2, failures = 0
                 WHERE name_lc = $3 AND object_id = $4",
                &[&&salt[..], &wrapped, &name.to_lowercase(), &p.object_id],
            )?;
            Ok(n == 1)
        })
    }

    fn count_principal_login(&mut self, name: &str, success: bool) -> Result<()> {
        let sql = if success {
            "UPDATE principals SET failures = 0 WHERE name_lc = $1 AND failures <> 0"
        } else {
            "UPDATE principals SET failures = failures + 1 WHERE name_lc = $1"
        };
        self.write(|db| {
            db.execute(sql, &[&name.to_lowercase()])?;
            Ok(())
        })
    }

    fn delete_principal(&mut self, name: &str) -> Result<bool> {
        let name_lc = name.to_lowercase();
        self.write(|db| {
            db.execute(
                "DELETE FROM assignments WHERE principal_lc = $1",
                &[&name_lc],
            )?;
            Ok(db.execute("DELETE FROM principals WHERE name_lc = $1", &[&name_lc])? == 1)
        })
    }

    fn assignments(&self) -> Result<Vec<super::Assignment>> {
        self.read(|db| {
            db.query(
                "SELECT a.id, COALESCE(p.name, a.principal_lc), a.role_id, a.scope, a.created
                 FROM assignments a LEFT JOIN principals p ON p.name_lc = a.principal_lc
                 ORDER BY a.created, a.id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(super::Assignment {
                    id: r.try_get(0)?,
                    principal: r.try_get(1)?,
                    role_id: r.try_get(2)?,
                    scope: r.try_get(3)?,
                    created: r.try_get(4)?,
                })
            })
            .collect()
        })
    }

    fn add_assignment(&mut self, a: &super::Assignment) -> Result<bool> {
        self.write(|db| insert_assignment(db, a))
    }

    fn delete_assignment(&mut self, principal: &str, role_id: &str, scope: &str) -> Result<bool> {
        self.write(|db| {
            let n = db.execute(
                "DELETE FROM assignments WHERE principal_lc = $1 AND role_id = $2 AND scope_lc = $3",
                &[&principal.to_lowercase(), &role_id, &scope.to_lowercase()],
            )?;
            Ok(n == 1)
        })
    }

    fn role_definitions(&self) -> Result<Vec<super::RoleRow>> {
        self.read(|db| {
            db.query(
                "SELECT id, name, description, actions, created FROM role_definitions
                 ORDER BY name_lc",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(super::RoleRow {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    description: r.try_get(2)?,
                    actions: r.try_get(3)?,
                    created: r.try_get(4)?,
                })
            })
            .collect()
        })
    }

    fn add_role_definition(&mut self, r: &super::RoleRow) -> Result<bool> {
        self.write(|db| insert_role(db, r))
    }

    fn restore_access(
        &mut self,
        principals: &[super::PrincipalRecord],
        roles: &[super::RoleRow],
        assignments: &[super::Assignment],
    ) -> Result<(usize, usize, usize)> {
        self.write(|db| {
            let mut added = (0, 0, 0);
            for p in principals {
                added.0 += usize::from(insert_principal(db, p)?);
            }
            for r in roles {
                added.1 += usize::from(insert_role(db, r)?);
            }
            for a in assignments {
                added.2 += usize::from(insert_assignment(db, a)?);
            }
            Ok(added)
        })
    }

    fn delete_role_definition(&mut self, id: &str) -> Result<Option<usize>> {
        self.write(|db| {
            let r = db.query_one(
                "SELECT EXISTS (SELECT 1 FROM role_definitions WHERE id = $1),
                        (SELECT COUNT(*) FROM assignments WHERE role_id = $1)",
                &[&id],
            )?;
            let (exists, used): (bool, i64) = (r.try_get(0)?, r.try_get(1)?);
            if !exists {
                return Ok(None);
            }
            if used == 0 {
                db.execute("DELETE FROM role_definitions WHERE id = $1", &[&id])?;
            }
            Ok(Some(usize::try_from(used).unwrap_or(usize::MAX)))
        })
    }
}

/// Insert a principal with its credential unless its name is taken.
fn insert_principal(db: &mut Db, r: &super::PrincipalRecord) -> std::result::Result<bool, Fail> {
    let p = &r.principal;
    let n = db.execute(
        "INSERT INTO principals (name_lc, name, object_id, created, salt, wrapped, kdf_iterations)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        &[
            &p.name.to_lowercase(),
            &p.name,
            &p.object_id,
            &p.created,
            &r.salt,
            &r.wrapped,
            &i64::from(r.kdf_iterations),
        ],
    )?;
    Ok(n == 1)
}

/// Insert an assignment if its principal exists and it is not there yet.
fn insert_assignment(db: &mut Db, a: &super::Assignment) -> std::result::Result<bool, Fail> {
    let n = db.execute(
        "INSERT INTO assignments (id, principal_lc, role_id, scope, scope_lc, created)
         SELECT $1, $2, $3, $4, $5, $6
         WHERE EXISTS (SELECT 1 FROM principals WHERE name_lc = $2)
         ON CONFLICT DO NOTHING",
        &[
            &a.id,
            &a.principal.to_lowercase(),
            &a.role_id,
            &a.scope,
            &a.scope.to_lowercase(),
            &a.created,
        ],
    )?;
    Ok(n == 1)
}

/// Insert a custom role unless its id or name is taken.
fn insert_role(db: &mut Db, r: &super::RoleRow) -> std::result::Result<bool, Fail> {
    let n = db.execute(
        "INSERT INTO role_definitions (id, name, name_lc, description, actions, created)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[
            &r.id,
            &r.name,
            &r.name.to_lowercase(),
            &r.description,
            &r.actions,
            &r.created,
        ],
    )?;
    Ok(n == 1)
}

/// Map a `principals` row (name, object_id, created).
fn principal_row(r: &Row) -> std::result::Result<super::Principal, Fail> {
    Ok(super::Principal {
        name: r.try_get(0)?,
        object_id: r.try_get(1)?,
        created: r.try_get(2)?,
    })
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
