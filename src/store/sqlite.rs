//! The SQLite-backed store: one file per token, WAL, transactions for every write.

use super::pin::{check_pin_usable, new_salt, new_token, unwrap_slot, NewToken};
use super::{now, CHANGE_LOG_KEEP, DAY};
use super::{
    schema, ChangeSignal, Changes, DeletedRow, Lookup, MasterKey, NewObject, ObjectRow, PinSlot,
    PinUser, RowKeys, Store, TokenRecord,
};
use crate::error::{Error, Result};
use crate::ffi::shm::SharedCounter;
use cryptoki_sys::{
    CKR_ACTION_PROHIBITED, CKR_ATTRIBUTE_VALUE_INVALID, CKR_FUNCTION_REJECTED,
    CKR_OBJECT_HANDLE_INVALID, CKR_PIN_INCORRECT, CKR_TOKEN_NOT_RECOGNIZED,
    CKR_TOKEN_WRITE_PROTECTED,
};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a connection waits for another process's write lock before giving up
/// (`CKR_DEVICE_ERROR`). Generous: a login under contention runs PBKDF2 while
/// holding the lock (see [`Store::unlock`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The columns of `objects` that make an [`ObjectRow`], in [`object_row`]'s order.
const OBJECT_COLUMNS: &str = "id, name, version, current, attrs, sealed";

impl From<rusqlite::Error> for Error {
    /// The store's errors surface as `CKR_DEVICE_ERROR` (the token's storage failed);
    /// the reason is logged here, the one place this mapping happens.
    fn from(e: rusqlite::Error) -> Self {
        super::failed(&e);
        match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                Error(cryptoki_sys::CKR_DEVICE_MEMORY)
            }
            _ => Error(cryptoki_sys::CKR_DEVICE_ERROR),
        }
    }
}

/// One connection to a token's store file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    signal: Arc<FileSignal>,
}

/// The change signal of an SQLite store: a small file beside it (`<db>-seq`)
/// mapped shared by every process, holding the highest change sequence number
/// any process has committed. Readers load it (one atomic load, no system
/// call: it runs before every `C_*Init`); writers raise it after each commit.
/// A writer killed between its commit and its signal delays the news until
/// the next writer's signal or the pool's periodic check of the database
/// itself ([`crate::pool::STALENESS_BOUND`]).
struct FileSignal {
    counter: Option<SharedCounter>,
}

impl FileSignal {
    /// Open (creating, mode 0600 or 0660 as [`crate::file_modes::file_mode`]) and map the signal file of the store at
    /// `db`. Without one (a read-only directory), every probe says "maybe":
    /// always check the database.
    fn open(db: &Path) -> FileSignal {
        let path = sidecar(db, "-seq");
        let mapped = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(db.parent().map_or(0o600, crate::file_modes::file_mode))
            .open(&path)
            .and_then(|f| SharedCounter::map(&f, true))
            .or_else(|_| {
                let f = OpenOptions::new().read(true).open(&path)?;
                SharedCounter::map(&f, false)
            });
        match mapped {
            Ok(counter) => FileSignal {
                counter: Some(counter),
            },
            Err(e) => {
                log::warn!(
                    "store: no change signal at {} ({e}): every call checks the database",
                    path.display()
                );
                FileSignal { counter: None }
            }
        }
    }

    /// Raise the announced sequence number to `seq` (never lower it).
    fn announce(&self, seq: i64) {
        if let Some(c) = &self.counter {
            c.raise(seq);
        }
    }
}

impl ChangeSignal for FileSignal {
    fn latest(&self) -> i64 {
        self.counter.as_ref().map_or(i64::MAX, SharedCounter::load)
    }
}

/// `path` with `suffix` appended (`softmhsm.db` → `softmhsm.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut side = PathBuf::from(path.as_os_str());
    side.as_mut_os_string().push(suffix);
    side
}

impl SqliteStore {
    /// Open (creating if missing: directory mode 0700, file mode 0600) the store at
    /// `path`, enable WAL and a busy timeout, and migrate the schema forward.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        create_private_file(path)?;
        let mut conn = Self::connect(path)?;
        schema::migrate(&mut conn)?;
        let signal = Arc::new(FileSignal::open(path));
        match_sidecar_modes(path);
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            signal,
        };
        // As the Managed HSM does on its own schedule: deleted keys past their
        // scheduled purge date are gone, whoever opens the pool first.
        store.purge_expired(now())?;
        store.trim_change_log()?;
        Ok(store)
    }

    /// A connection to an existing store file with this store's settings.
    fn connect(path: &Path) -> Result<Connection> {
        let conn = Connection::open(path)?;
        // Every hot statement is prepared once per connection: re-parsing SQL
        // was a third of a key generation's time.
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // e.g. a file system without shared memory: still correct, only slower.
            log::warn!("store: journal_mode is {mode}, not WAL");
        }
        // FULL: a key is reported created only once its commit is on disk.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A checkpoint truncates the WAL back to 4 MiB: after a burst of
        // writes (a migration, a bulk import) the next process to open the
        // store would otherwise re-read the whole grown file.
        conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Old wrapped master keys (before a PIN change or re-init) must not
        // linger in free pages, where the old PIN would still open them.
        conn.pragma_update(None, "secure_delete", true)?;
        Ok(conn)
    }

    /// Drop change-log entries far behind the newest, so the log stays bounded.
    fn trim_change_log(&mut self) -> Result<()> {
        // Two queries: SQLite answers MIN or MAX alone from the key, both
        // together only by scanning the log.
        let (oldest, newest): (Option<i64>, Option<i64>) = (
            self.conn
                .prepare_cached("SELECT MIN(seq) FROM changes")?
                .query_row([], |r| r.get(0))?,
            self.conn
                .prepare_cached("SELECT MAX(seq) FROM changes")?
                .query_row([], |r| r.get(0))?,
        );
        if let (Some(oldest), Some(newest)) = (oldest, newest) {
            if newest - oldest > 2 * CHANGE_LOG_KEEP {
                let tx = write_tx(&mut self.conn, &self.signal)?;
                tx.prepare_cached("DELETE FROM changes WHERE seq <= ?1")?
                    .execute([newest - CHANGE_LOG_KEEP])?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// Run one row-rewriting statement (`?1` = attrs, `?2` = id) in a transaction.
    fn rewrite(&mut self, id: i64, attrs: &str, sql: &str) -> Result<()> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        if tx.execute(sql, params![attrs, id])? == 0 {
            return Err(Error(CKR_OBJECT_HANDLE_INVALID));
        }
        tx.commit()?;
        Ok(())
    }

    /// Fold the WAL back into the database and truncate it, so superseded
    /// wrapped master keys do not stay in the `-wal` file. Best effort: a
    /// checkpoint blocked by readers only delays the scrub to a later checkpoint.
    fn scrub_wal(&self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            log::debug!("store: WAL checkpoint after a key change failed: {e}");
        }
    }
}

impl Store for SqliteStore {
    fn pin_slot(&self, who: PinUser) -> Result<PinSlot> {
        read_pin_slot(&self.conn, who)
    }

    fn count_pin_failure(&mut self, who: PinUser) -> Result<()> {
        let (_, _, failures) = who.columns();
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let sql = format!("UPDATE token SET {failures} = {failures} + 1 WHERE id = 1");
        tx.execute(&sql, [])?;
        tx.commit()?;
        Ok(())
    }

    fn reopen(&self) -> Result<Box<dyn Store>> {
        Ok(Box::new(SqliteStore {
            conn: Self::connect(&self.path)?,
            path: self.path.clone(),
            signal: self.signal.clone(),
        }))
    }

    fn signal(&self) -> Arc<dyn ChangeSignal> {
        self.signal.clone()
    }

    fn change_seq(&self) -> Result<i64> {
        change_seq(&self.conn)
    }

    fn changes_since(&self, seq: i64) -> Result<Changes> {
        // One read transaction: the rows and the sequence number agree.
        let tx = self.conn.unchecked_transaction()?;
        let now = self.change_seq()?;
        if seq < 0 {
            return Ok(Changes::Reload { seq: now });
        }
        let oldest: Option<i64> = tx
            .prepare_cached("SELECT MIN(seq) FROM changes")?
            .query_row([], |r| r.get(0))?;
        // Object id 0 is the token row: a re-initialisation.
        let remade: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM changes WHERE seq > ?1 AND object_id = 0)",
            )?
            .query_row([seq], |r| r.get(0))?;
        let gap = now > seq && oldest.is_none_or(|o| o > seq + 1);
        if remade || gap {
            return Ok(Changes::Reload { seq: now });
        }
        let touched = {
            let mut stmt = tx.prepare_cached(
                "SELECT DISTINCT object_id FROM changes WHERE seq > ?1 AND object_id <> 0",
            )?;
            let ids = stmt.query_map([seq], |r| r.get(0))?;
            ids.collect::<rusqlite::Result<Vec<i64>>>()?
        };
        let rows = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE deleted_at IS NULL AND id IN
                   (SELECT object_id FROM changes WHERE seq > ?1)"
            ))?;
            let rows = stmt.query_map([seq], object_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        Ok(Changes::Since {
            seq: now,
            touched,
            rows,
        })
    }

    fn attestation_key(&self) -> Result<Option<super::AttestationRow>> {
        attest::attestation_key(&self.conn)
    }

    fn set_attestation_key(&mut self, key: &super::AttestationRow) -> Result<bool> {
        attest::set_attestation_key(write_tx(&mut self.conn, &self.signal)?, key)
    }

    fn principals(&self) -> Result<Vec<super::Principal>> {
        access::principals(&self.conn)
    }

    fn principal_pin(&self, name: &str) -> Result<Option<(super::Principal, PinSlot)>> {
        access::principal_pin(&self.conn, name)
    }

    fn add_principal(
        &mut self,
        p: &super::Principal,
        master: &MasterKey,
        pin: &[u8],
    ) -> Result<bool> {
        access::add_principal(&mut self.conn, &self.signal, p, master, pin)
    }

    fn set_principal_pin(&mut self, name: &str, master: &MasterKey, pin: &[u8]) -> Result<bool> {
        let set = access::set_principal_pin(&mut self.conn, &self.signal, name, master, pin)?;
        // The wrap under the old PIN leaves the WAL.
        self.scrub_wal();
        Ok(set)
    }

    fn count_principal_login(&mut self, name: &str, success: bool) -> Result<()> {
        access::count_principal_login(&mut self.conn, &self.signal, name, success)
    }

    fn delete_principal(&mut self, name: &str) -> Result<bool> {
        let gone = access::delete_principal(&mut self.conn, &self.signal, name)?;
        self.scrub_wal();
        Ok(gone)
    }

    fn assignments(&self) -> Result<Vec<super::Assignment>> {
        access::assignments(&self.conn)
    }

    fn add_assignment(&mut self, a: &super::Assignment) -> Result<bool> {
        access::add_assignment(&mut self.conn, &self.signal, a)
    }

    fn delete_assignment(&mut self, principal: &str, role_id: &str, scope: &str) -> Result<bool> {
        access::delete_assignment(&mut self.conn, &self.signal, principal, role_id, scope)
    }

    fn role_definitions(&self) -> Result<Vec<super::RoleRow>> {
        access::role_definitions(&self.conn)
    }

    fn add_role_definition(&mut self, r: &super::RoleRow) -> Result<bool> {
        access::add_role_definition(&mut self.conn, &self.signal, r)
    }

    fn delete_role_definition(&mut self, id: &str) -> Result<Option<usize>> {
        access::delete_role_definition(&mut self.conn, &self.signal, id)
    }

    fn restore_access(
        &mut self,
        principals: &[super::PrincipalRecord],
        roles: &[super::RoleRow],
        assignments: &[super::Assignment],
    ) -> Result<(usize, usize, usize)> {
        access::restore_access(&mut self.conn, &self.signal, principals, roles, assignments)
    }

    /// The token record, or None if the token was never initialised.
    fn token(&self) -> Result<Option<TokenRecord>> {
        let record = self
            .conn
            .prepare_cached(
                "SELECT label, created, kdf_iterations, user_wrapped IS NOT NULL,
                        user_failures, so_failures, retention_days, purge_protection,
                        provisioned
                 FROM token WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok(TokenRecord {
                    label: r.get(0)?,
                    created: r.get(1)?,
                    kdf_iterations: r.get(2)?,
                    user_pin_initialized: r.get(3)?,
                    user_failures: r.get(4)?,
                    so_failures: r.get(5)?,
                    retention_days: r.get(6)?,
                    purge_protection: r.get(7)?,
                    provisioned: r.get(8)?,
                })
            })
            .optional()?;
        Ok(record)
    }

    /// Initialise (or re-initialise) the token in one transaction: delete every
    /// object, forget the user PIN, create a new master key wrapped under `so_pin`
    /// with `kdf_iterations`, reset counters. Returns the new master key.
    /// The caller has already checked the old SO PIN on a re-initialisation.
    /// `kdf_iterations` must be at least 1 and `retention_days` within 7–90,
    /// else `CKR_ARGUMENTS_BAD`.
    fn init_token(
        &mut self,
        label: &str,
        so_pin: &[u8],
        kdf_iterations: u32,
        retention_days: u32,
    ) -> Result<MasterKey> {
        let NewToken {
            master,
            salt,
            wrapped,
        } = new_token(so_pin, kdf_iterations, retention_days)?;
        let created = now();
        let tx = write_tx(&mut self.conn, &self.signal)?;
        // Purge protection can never be turned off, not by re-initialising
        // either: a protected token's objects (live keys, and deleted ones
        // inside their retention: later ones are purged at open) stay.
        let (objects, protected): (i64, bool) = tx
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM objects),
                        COALESCE((SELECT purge_protection FROM token WHERE id = 1), 0)",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if protected && objects > 0 {
            log::warn!(
                "store: purge protection: {objects} objects, the token is not re-initialised"
            );
            return Err(Error(CKR_TOKEN_WRITE_PROTECTED));
        }
        // Object ids keep counting (sqlite_sequence survives the DELETE), so a
        // handle from before the re-init never names a new object.
        tx.prepare_cached("DELETE FROM objects")?.execute([])?;
        // A wiped key's rotation policy goes with it, or a new key of the
        // same name would inherit it.
        tx.prepare_cached("DELETE FROM policies")?.execute([])?;
        // A new pool has no principals: their wraps are of the old master key.
        tx.prepare_cached("DELETE FROM assignments")?.execute([])?;
        tx.prepare_cached("DELETE FROM principals")?.execute([])?;
        tx.prepare_cached("DELETE FROM role_definitions")?
            .execute([])?;
        tx.prepare_cached("DELETE FROM token")?.execute([])?;
        tx.prepare_cached(
            "INSERT INTO token (id, label, created, kdf_iterations, retention_days,
                                so_salt, so_wrapped, user_salt, user_wrapped,
                                so_failures, user_failures, purge_protection)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, 0, 0, ?7)",
        )?
        .execute(params![
            label.trim_end_matches(' '),
            created,
            kdf_iterations,
            retention_days,
            &salt[..],
            wrapped,
            protected
        ])?;
        tx.commit()?;
        self.scrub_wal();
        Ok(master)
    }

    /// Check `pin` for `who` and unwrap the master key. Failures are counted in the
    /// store (shared by processes, kept across restarts): wrong PIN →
    /// `CKR_PIN_INCORRECT`; user PIN at `MAX_PIN_FAILURES` → `CKR_PIN_LOCKED`
    /// (checked before the PIN); no user PIN set → `CKR_USER_PIN_NOT_INITIALIZED`;
    /// token not initialised → `CKR_TOKEN_NOT_RECOGNIZED`. Success resets the counter.
    ///
    /// While the counter is zero the PIN is checked without holding the write
    /// lock, so many processes logging in at once (nginx workers) do not queue
    /// behind each other's PBKDF2; a failure is then counted atomically. Once a
    /// failure is on record, checks run under `BEGIN IMMEDIATE` (read, verify,
    /// count in one transaction), so a guesser gains at most one extra guess per
    /// process racing from a zero counter.
    fn unlock(&mut self, who: PinUser, pin: &[u8]) -> Result<MasterKey> {
        let slot = read_pin_slot(&self.conn, who)?;
        check_pin_usable(who, &slot)?;
        if slot.failures == 0 {
            return match unwrap_slot(who, &slot, pin) {
                Err(Error(CKR_PIN_INCORRECT)) => {
                    let (_, _, failures) = who.columns();
                    let tx = write_tx(&mut self.conn, &self.signal)?;
                    let sql = format!("UPDATE token SET {failures} = {failures} + 1 WHERE id = 1");
                    tx.execute(&sql, [])?;
                    tx.commit()?;
                    Err(Error(CKR_PIN_INCORRECT))
                }
                other => other,
            };
        }
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let slot = read_pin_slot(&tx, who)?;
        check_pin_usable(who, &slot)?;
        let result = unwrap_slot(who, &slot, pin);
        let (_, _, failures) = who.columns();
        let sql = match result {
            Ok(_) => format!("UPDATE token SET {failures} = 0 WHERE id = 1"),
            Err(Error(CKR_PIN_INCORRECT)) => {
                format!("UPDATE token SET {failures} = {failures} + 1 WHERE id = 1")
            }
            Err(e) => return Err(e),
        };
        tx.execute(&sql, [])?;
        tx.commit()?;
        result
    }

    /// Wrap `master` under a new PIN for `who` (C_InitPIN, C_SetPIN) and reset its counter.
    fn set_pin(&mut self, who: PinUser, master: &MasterKey, pin: &[u8]) -> Result<()> {
        let salt = new_salt()?;
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let iterations: Option<u32> = tx
            .prepare_cached("SELECT kdf_iterations FROM token WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let iterations = iterations.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))?;
        let wrapped = master.wrap_under_pin(pin, &salt, iterations, who.wrap_aad())?;
        let (salt_col, wrapped_col, failures_col) = who.columns();
        let sql = format!(
            "UPDATE token SET {salt_col} = ?1, {wrapped_col} = ?2, {failures_col} = 0 WHERE id = 1"
        );
        tx.execute(&sql, params![&salt[..], wrapped])?;
        tx.commit()?;
        self.scrub_wal();
        Ok(())
    }

    /// Every live object row (soft-deleted keys are not objects any more).
    fn objects(&self) -> Result<Vec<ObjectRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE deleted_at IS NULL ORDER BY id"
        ))?;
        let rows = stmt.query_map([], object_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn all_objects(&self) -> Result<Vec<ObjectRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY id"))?;
        let rows = stmt.query_map([], object_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// One live object row by id, or None.
    fn object(&self, id: i64) -> Result<Option<ObjectRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE id = ?1 AND deleted_at IS NULL"
        ))?;
        Ok(stmt.query_row([id], object_row).optional()?)
    }

    /// Insert a row in one transaction. With a `name`, every other row of that name
    /// (compared case-insensitively) stops being current and the new row becomes
    /// current. Returns the stored row (with its id). A name whose key is
    /// soft-deleted is taken until it is purged or recovered:
    /// `CKR_ATTRIBUTE_VALUE_INVALID` (the Managed HSM answers 409 Conflict).
    fn insert_object(&mut self, new: &NewObject) -> Result<ObjectRow> {
        let name_lc = new.name.as_deref().map(str::to_lowercase);
        let tx = write_tx(&mut self.conn, &self.signal)?;
        if let Some(name_lc) = &name_lc {
            if name_is_deleted(&tx, name_lc)? {
                log::debug!("store: name {name_lc} belongs to a deleted key");
                return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
            }
            if let Some(cap) = new.max_versions {
                let n: i64 = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM objects WHERE name_lc = ?1 AND deleted_at IS NULL",
                    )?
                    .query_row([name_lc], |r| r.get(0))?;
                if usize::try_from(n).unwrap_or(usize::MAX) >= cap {
                    log::warn!("key {name_lc} already has {n} versions: no new version");
                    return Err(Error(CKR_ACTION_PROHIBITED));
                }
            }
            if let Some(expected) = &new.replaces {
                let current: Option<String> = tx
                    .prepare_cached(
                        "SELECT version FROM objects
                         WHERE name_lc = ?1 AND current = 1 AND deleted_at IS NULL",
                    )?
                    .query_row([name_lc], |r| r.get(0))
                    .optional()?
                    .flatten();
                if current.as_deref() != Some(expected.as_str()) {
                    return Err(Error(CKR_FUNCTION_REJECTED));
                }
            }
            tx.prepare_cached("UPDATE objects SET current = 0 WHERE name_lc = ?1 AND current = 1")?
                .execute([name_lc])?;
        }
        tx.prepare_cached(
            "INSERT INTO objects
                (name, name_lc, version, current, attrs, sealed, label, public_label, ckaid)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            new.name,
            name_lc,
            new.version,
            new.attrs,
            new.sealed,
            new.keys.label,
            new.keys.public_label,
            new.keys.ckaid
        ])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(new.stored(id, true))
    }

    /// Replace a row's attribute JSON and lookup keys.
    /// `CKR_OBJECT_HANDLE_INVALID` if it is gone.
    fn update_attrs(&mut self, id: i64, attrs: &str, keys: &RowKeys) -> Result<()> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let n = tx
            .prepare_cached(
                "UPDATE objects SET attrs = ?1, label = ?2, public_label = ?3, ckaid = ?4
                 WHERE id = ?5 AND deleted_at IS NULL",
            )?
            .execute(params![
                attrs,
                keys.label,
                keys.public_label,
                keys.ckaid,
                id
            ])?;
        if n == 0 {
            return Err(Error(CKR_OBJECT_HANDLE_INVALID));
        }
        tx.commit()?;
        Ok(())
    }

    fn objects_by_ids(&self, ids: &[i64]) -> Result<Vec<ObjectRow>> {
        // Many ids (an enumeration): one scan beats as many point reads.
        if ids.len() > 256 {
            let wanted: std::collections::HashSet<i64> = ids.iter().copied().collect();
            let mut all = self.objects()?;
            all.retain(|r| wanted.contains(&r.id));
            return Ok(all);
        }
        // One read transaction: the rows agree with each other.
        let _tx = self.conn.unchecked_transaction()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.object(*id)?);
        }
        Ok(out)
    }

    fn lookup(&self, by: Lookup<'_>) -> Result<Vec<i64>> {
        const LIVE: &str = "SELECT id FROM objects WHERE deleted_at IS NULL";
        let ids = match by {
            Lookup::Label(l) => {
                let mut stmt = self.conn.prepare_cached(&format!(
                    "{LIVE} AND label = ?1 UNION {LIVE} AND public_label = ?1"
                ))?;
                let ids = stmt.query_map([l], |r| r.get(0))?;
                ids.collect::<rusqlite::Result<Vec<i64>>>()?
            }
            Lookup::CkaId(id) => {
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!("{LIVE} AND ckaid = ?1"))?;
                let ids = stmt.query_map([id], |r| r.get(0))?;
                ids.collect::<rusqlite::Result<Vec<i64>>>()?
            }
            Lookup::Version(v) => {
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!("{LIVE} AND version = ?1"))?;
                let ids = stmt.query_map([v], |r| r.get(0))?;
                ids.collect::<rusqlite::Result<Vec<i64>>>()?
            }
            Lookup::All => {
                let mut stmt = self.conn.prepare_cached(LIVE)?;
                let ids = stmt.query_map([], |r| r.get(0))?;
                ids.collect::<rusqlite::Result<Vec<i64>>>()?
            }
        };
        Ok(ids)
    }

    fn unkeyed(&self) -> Result<Vec<(i64, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, attrs FROM objects WHERE label IS NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn set_keys(&mut self, keys: &[(i64, RowKeys)]) -> Result<()> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE objects SET label = ?1, public_label = ?2, ckaid = ?3 WHERE id = ?4",
            )?;
            for (id, k) in keys {
                stmt.execute(params![k.label, k.public_label, k.ckaid, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replace a row's attribute JSON and drop its sealed material in one
    /// transaction (the private half of a key pair was destroyed; its public
    /// half lives on). `CKR_OBJECT_HANDLE_INVALID` if it is gone.
    fn forget_secret(&mut self, id: i64, attrs: &str) -> Result<()> {
        self.rewrite(
            id,
            attrs,
            "UPDATE objects SET attrs = ?1, sealed = NULL WHERE id = ?2 AND deleted_at IS NULL",
        )
    }

    /// Delete a row. If it was the current version of its name, the newest
    /// remaining version (highest id) of that name becomes current, and its id
    /// is returned. `CKR_OBJECT_HANDLE_INVALID` if it is gone.
    fn delete_object(&mut self, id: i64) -> Result<Option<i64>> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let found: Option<(Option<String>, bool)> = tx
            .prepare_cached("SELECT name_lc, current FROM objects WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (name_lc, current) = found.ok_or(Error(CKR_OBJECT_HANDLE_INVALID))?;
        tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?
            .execute([id])?;
        let mut promoted = None;
        if let (Some(name_lc), true) = (name_lc, current) {
            promoted = tx
                .prepare_cached(
                    "UPDATE objects SET current = 1
                     WHERE id = (SELECT MAX(id) FROM objects WHERE name_lc = ?1)
                     RETURNING id",
                )?
                .query_row([name_lc], |r| r.get(0))
                .optional()?;
        }
        tx.commit()?;
        Ok(promoted)
    }

    /// The live versions of `name` (case-insensitive), oldest first.
    fn versions_of(&self, name: &str) -> Result<Vec<ObjectRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects
             WHERE name_lc = ?1 AND deleted_at IS NULL ORDER BY id"
        ))?;
        let rows = stmt.query_map([name.to_lowercase()], object_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Soft-delete every version of `name` in one transaction: `deleted_at` =
    /// `now`, `purge_at` = `now` + the token's retention days. Returns the row
    /// ids of the versions deleted (empty: no live key has that name).
    fn soft_delete_name(&mut self, name: &str, now: i64) -> Result<Vec<i64>> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let days: Option<i64> = tx
            .prepare_cached("SELECT retention_days FROM token WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let days = days.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))?;
        let ids = {
            let mut stmt = tx.prepare(
                "UPDATE objects SET deleted_at = ?2, purge_at = ?3
                 WHERE name_lc = ?1 AND deleted_at IS NULL RETURNING id",
            )?;
            let ids = stmt.query_map(
                params![name.to_lowercase(), now, now.saturating_add(days * DAY)],
                |r| r.get(0),
            )?;
            ids.collect::<rusqlite::Result<Vec<i64>>>()?
        };
        tx.commit()?;
        Ok(ids)
    }

    /// Bring every version of a soft-deleted `name` back, in one transaction,
    /// rewriting the attribute JSON of each recovered version for which
    /// `rewrite(attrs, has_sealed_material)` returns a new one. Returns the
    /// number of versions recovered (0: no deleted key has that name).
    fn recover_name_rewriting(
        &mut self,
        name: &str,
        rewrite: &dyn Fn(&str, bool) -> Result<Option<String>>,
    ) -> Result<usize> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let name_lc = name.to_lowercase();
        let rows: Vec<(i64, String, bool)> = {
            let mut stmt = tx.prepare(
                "SELECT id, attrs, sealed IS NOT NULL FROM objects
                 WHERE name_lc = ?1 AND deleted_at IS NOT NULL",
            )?;
            let rows = stmt.query_map([&name_lc], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for (id, attrs, sealed) in &rows {
            if let Some(new) = rewrite(attrs, *sealed)? {
                tx.prepare_cached("UPDATE objects SET attrs = ?1 WHERE id = ?2")?
                    .execute(params![new, id])?;
            }
        }
        let n = tx
            .prepare_cached(
                "UPDATE objects SET deleted_at = NULL, purge_at = NULL
             WHERE name_lc = ?1 AND deleted_at IS NOT NULL",
            )?
            .execute([&name_lc])?;
        tx.commit()?;
        Ok(n)
    }

    /// Erase every version of a soft-deleted `name` for good, in one transaction.
    /// Under purge protection a key cannot be purged before its scheduled purge
    /// date (`CKR_ACTION_PROHIBITED`). Returns the number of versions purged
    /// (0: no deleted key has that name).
    fn purge_name(&mut self, name: &str, now: i64) -> Result<usize> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let name_lc = name.to_lowercase();
        let protected: bool = tx
            .prepare_cached("SELECT purge_protection FROM token WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?
            .unwrap_or(false);
        let early: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM objects
                            WHERE name_lc = ?1 AND deleted_at IS NOT NULL AND purge_at > ?2)",
            )?
            .query_row(params![name_lc, now], |r| r.get(0))?;
        if protected && early {
            return Err(Error(CKR_ACTION_PROHIBITED));
        }
        let n = tx
            .prepare_cached("DELETE FROM objects WHERE name_lc = ?1 AND deleted_at IS NOT NULL")?
            .execute([&name_lc])?;
        forget_orphan_policies(&tx)?;
        tx.commit()?;
        Ok(n)
    }

    /// Purge every deleted key whose scheduled purge date is at or before `now`
    /// (purge protection only forbids purging *before* that date). Returns the
    /// number of rows purged.
    fn purge_expired(&mut self, now: i64) -> Result<usize> {
        let due: bool = self.conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM objects WHERE purge_at IS NOT NULL AND purge_at <= ?1)")?.query_row(
            [now],
            |r| r.get(0),
        )?;
        if !due {
            // Opening a pool must not take the write lock when there is nothing to do.
            return Ok(0);
        }
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let n = tx
            .prepare_cached("DELETE FROM objects WHERE purge_at IS NOT NULL AND purge_at <= ?1")?
            .execute([now])?;
        forget_orphan_policies(&tx)?;
        tx.commit()?;
        Ok(n)
    }

    /// The rotation policy (JSON) of `name`, if it has one.
    fn rotation_policy(&self, name: &str) -> Result<Option<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT policy FROM policies WHERE name_lc = ?1")?;
        Ok(stmt
            .query_row([name.to_lowercase()], |r| r.get(0))
            .optional()?)
    }

    /// Set (Some) or remove (None) the rotation policy of a live key `name`;
    /// `CKR_OBJECT_HANDLE_INVALID` if no live key has that name.
    fn set_rotation_policy(&mut self, name: &str, policy: Option<&str>) -> Result<()> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let name_lc = name.to_lowercase();
        let live: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE name_lc = ?1 AND deleted_at IS NULL)",
            )?
            .query_row([&name_lc], |r| r.get(0))?;
        if !live {
            return Err(Error(CKR_OBJECT_HANDLE_INVALID));
        }
        match policy {
            Some(p) => put_policy(&tx, &name_lc, p)?,
            None => {
                tx.prepare_cached("DELETE FROM policies WHERE name_lc = ?1")?
                    .execute([&name_lc])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every rotation policy of a live key: (lower-case name, policy JSON).
    fn rotation_policies(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name_lc, policy FROM policies p WHERE EXISTS
               (SELECT 1 FROM objects o WHERE o.name_lc = p.name_lc AND o.deleted_at IS NULL)
             ORDER BY name_lc",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The current version of the soft-deleted `name` (case-insensitive), with
    /// its deletion dates; None if no deleted key has that name.
    fn deleted_name(&self, name: &str) -> Result<Option<DeletedRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS}, deleted_at, purge_at FROM objects
             WHERE name_lc = ?1 AND deleted_at IS NOT NULL AND current = 1"
        ))?;
        let row = stmt
            .query_row([name.to_lowercase()], |r| {
                Ok(DeletedRow {
                    row: object_row(r)?,
                    deleted_at: r.get(6)?,
                    purge_at: r.get(7)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    /// The current version of every soft-deleted name, with its deletion dates,
    /// in name order.
    fn deleted_names(&self) -> Result<Vec<DeletedRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS}, deleted_at, purge_at FROM objects
             WHERE deleted_at IS NOT NULL AND current = 1 ORDER BY name_lc"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(DeletedRow {
                row: object_row(r)?,
                deleted_at: r.get(6)?,
                purge_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Restore every version of one name, and its rotation policy if it had
    /// one, in one transaction, oldest first; the last becomes current. Refused
    /// (`CKR_ATTRIBUTE_VALUE_INVALID`) if any key, live or soft-deleted, already
    /// has that name, as the Managed HSM's restore is (409 Conflict). Every row
    /// must carry the same name.
    fn restore_versions(
        &mut self,
        rows: &[NewObject],
        policy: Option<&str>,
    ) -> Result<Vec<ObjectRow>> {
        let name_lc = super::restored_name(rows)?;
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let taken: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM objects WHERE name_lc = ?1)")?
            .query_row([&name_lc], |r| r.get(0))?;
        if taken {
            return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (i, new) in rows.iter().enumerate() {
            let current = i + 1 == rows.len();
            tx.prepare_cached(
                "INSERT INTO objects
                    (name, name_lc, version, current, attrs, sealed, label, public_label, ckaid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                new.name,
                name_lc,
                new.version,
                current,
                new.attrs,
                new.sealed,
                new.keys.label,
                new.keys.public_label,
                new.keys.ckaid
            ])?;
            out.push(new.stored(tx.last_insert_rowid(), current));
        }
        if let Some(p) = policy {
            // A purged key's policy went with it, so the name has none left.
            put_policy(&tx, &name_lc, p)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Turn purge protection on or off. Like the Managed HSM's, it can be turned
    /// on but never off again (`CKR_ACTION_PROHIBITED`).
    fn set_purge_protection(&mut self, on: bool) -> Result<()> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let was: Option<bool> = tx
            .prepare_cached("SELECT purge_protection FROM token WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        match was {
            None => return Err(Error(CKR_TOKEN_NOT_RECOGNIZED)),
            Some(true) if !on => return Err(Error(CKR_ACTION_PROHIBITED)),
            _ => {}
        }
        tx.prepare_cached("UPDATE token SET purge_protection = ?1 WHERE id = 1")?
            .execute([on])?;
        tx.commit()?;
        Ok(())
    }

    fn set_provisioned(&mut self, on: bool) -> Result<()> {
        let tx = write_tx(&mut self.conn, &self.signal)?;
        let n = tx
            .prepare_cached("UPDATE token SET provisioned = ?1 WHERE id = 1")?
            .execute([on])?;
        if n == 0 {
            return Err(Error(CKR_TOKEN_NOT_RECOGNIZED));
        }
        tx.commit()?;
        Ok(())
    }
}

/// Whether a soft-deleted key holds `name_lc`.
fn name_is_deleted(conn: &Connection, name_lc: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM objects WHERE name_lc = ?1 AND deleted_at IS NOT NULL)",
        )?
        .query_row([name_lc], |r| r.get(0))?)
}

/// A purged name's rotation policy goes with it (a soft-deleted key keeps its
/// policy, to have it again when recovered).
fn forget_orphan_policies(tx: &Transaction<'_>) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM policies WHERE NOT EXISTS
           (SELECT 1 FROM objects o WHERE o.name_lc = policies.name_lc)",
    )?
    .execute([])?;
    Ok(())
}

/// Set the rotation policy of the (lower-case) name, replacing any it had.
fn put_policy(tx: &Transaction<'_>, name_lc: &str, policy: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO policies (name_lc, policy) VALUES (?1, ?2)
         ON CONFLICT (name_lc) DO UPDATE SET policy = excluded.policy",
    )?
    .execute(params![name_lc, policy])?;
    Ok(())
}

/// A write transaction whose commit tells other processes (see [`FileSignal`]):
/// every write path commits through here, so none can forget the signal.
struct WriteTx<'a> {
    tx: Transaction<'a>,
    signal: &'a FileSignal,
}

impl<'a> std::ops::Deref for WriteTx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl WriteTx<'_> {
    /// Commit, then announce the change sequence this transaction reached.
    fn commit(self) -> Result<()> {
        let seq = change_seq(&self.tx)?;
        self.tx.commit()?;
        self.signal.announce(seq);
        Ok(())
    }
}

/// Begin a write transaction. IMMEDIATE takes the write lock up front, so a
/// read-modify-write never fails half-way with SQLITE_BUSY on lock upgrade and
/// concurrent processes serialise (e.g. count PIN failures correctly).
fn write_tx<'a>(conn: &'a mut Connection, signal: &'a FileSignal) -> Result<WriteTx<'a>> {
    Ok(WriteTx {
        tx: conn.transaction_with_behavior(TransactionBehavior::Immediate)?,
        signal,
    })
}

/// The highest change sequence number the log has handed out (0: none yet).
fn change_seq(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Create `path`'s directory (0700) and the file itself (0600, or 0660 in a
/// directory shared with its group: [`crate::file_modes`]) if missing, before
/// SQLite writes a byte, so no secret-bearing file is ever world-readable.
/// Existing directories and files keep their modes.
fn create_private_file(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            // Missing parents are ordinary directories (mode 0777 less the
            // umask), as `mkdir -p` makes them: a service user given the
            // token directory's group must be able to reach it.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                DirBuilder::new()
                    .recursive(true)
                    .create(parent)
                    .map_err(io_error)?;
            }
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(io_error)?;
            // The umask may have narrowed the mode; make it exactly 0700.
            std::fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io_error)?;
        }
    }
    // 0660 in a directory shared with its group (`softmhsm init --group`).
    let mode = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or(0o600, crate::file_modes::file_mode);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(_) => std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_error),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error(e)),
    }
}

/// Give the `-wal` and `-shm` files the database file's permission bits. SQLite
/// already does so when it creates them; this repairs files left by an older
/// build or another tool. Best effort: a file owned by another user is left alone.
fn match_sidecar_modes(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    for suffix in ["-wal", "-shm", "-seq"] {
        let side = sidecar(path, suffix);
        if let Ok(m) = std::fs::metadata(&side) {
            if m.permissions().mode() & 0o777 != mode {
                if let Err(e) = std::fs::set_permissions(&side, Permissions::from_mode(mode)) {
                    log::debug!("store: cannot set mode of {}: {e}", side.display());
                }
            }
        }
    }
}

/// The file system refused: `CKR_DEVICE_ERROR`, reason logged.
fn io_error(e: std::io::Error) -> Error {
    super::failed(&e);
    Error(cryptoki_sys::CKR_DEVICE_ERROR)
}

/// Read `who`'s PIN columns; `CKR_TOKEN_NOT_RECOGNIZED` if the token was never initialised.
fn read_pin_slot(conn: &Connection, who: PinUser) -> Result<PinSlot> {
    let (salt, wrapped, failures) = who.columns();
    let sql =
        format!("SELECT {salt}, {wrapped}, {failures}, kdf_iterations FROM token WHERE id = 1");
    let slot = conn
        .query_row(&sql, [], |r| {
            Ok(PinSlot {
                salt: r.get(0)?,
                wrapped: r.get(1)?,
                failures: r.get(2)?,
                kdf_iterations: r.get(3)?,
            })
        })
        .optional()?;
    slot.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))
}

/// Map an `objects` row (selected as [`OBJECT_COLUMNS`]) to an [`ObjectRow`].
fn object_row(r: &Row<'_>) -> rusqlite::Result<ObjectRow> {
    Ok(ObjectRow {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        current: r.get(3)?,
        attrs: r.get(4)?,
        sealed: r.get(5)?,
    })
}

#[path = "sqlite_attest.rs"]
mod attest;

#[path = "sqlite_access.rs"]
mod access;

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
