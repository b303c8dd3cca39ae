//! The pool service (DESIGN §4): the one owner of a pool's state and of every
//! write. PKCS#11 (through `token/`) and the admin CLI both come here, so every
//! rule holds the same way from both doors.
//!
//! A [`Pool`] holds one store connection, an in-memory snapshot of the
//! objects this process uses (loaded from the store when a handle or a find
//! first names them, with their parsed keys; which objects exist is the
//! store's indexes' to say, so nothing here grows with the pool), and the
//! change sequence the snapshot reflects.
//! [`Pool::fresh`] — called before every `*Init`, `C_FindObjectsInit` and
//! `C_GetAttributeValue` — compares that sequence with the store's
//! [`ChangeSignal`] (one `pread`) and applies only the rows changed since:
//! a key disabled, deleted or rotated by any process is seen at the next call.
//!
//! Lock order: the store, then the snapshot. No lock is held across a PIN key
//! derivation.

pub mod access;
pub mod attest;
pub mod audit;
pub mod byok;
pub mod check;
pub mod dataplane;
pub mod full_backup;
pub mod import;
pub mod jwk;
pub mod lifecycle;
pub mod objects;
pub mod rotation;
pub mod security_domain;

/// The store handle the pool lends for the steps of one logical operation
/// ([`Pool::read`], [`Pool::write`]).
pub use crate::store::Store;
pub use crate::store::{MasterKey, PinUser, TokenRecord, MAX_PIN_FAILURES};

use crate::config::TokenConfig;
use crate::crypto::SecretBytes;
use crate::engine::key::{Body, Record};
use crate::engine::lifecycle::Refusal;
use crate::engine::policy::{Part, Recovery};
use crate::error::{Error, Result};
pub use crate::store::last_failure as last_store_failure;
pub use crate::store::Lookup;
use crate::store::{ChangeSignal, Changes};
use cryptoki_sys::*;
use objects::{Entry, Objects};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The default longest a change committed by another process can stay unseen
/// when its writer was killed between its commit and its signal: the pool then
/// asks the database itself at least this often (on the next call after the
/// interval). A token's `max_staleness_ms` sets its own.
pub const STALENESS_BOUND: Duration =
    Duration::from_millis(crate::config::DEFAULT_MAX_STALENESS_MS);

/// What the pool knows of its objects: the token label and every live object.
#[derive(Default)]
pub struct Snapshot {
    /// The token label exactly as the store row has it (empty before init).
    pub label: String,
    /// The token objects this process has used, and its session objects.
    pub objects: Objects,
    /// The token's deletion settings (its keys' recovery level), read with the label.
    pub recovery: Recovery,
    /// Whether the pool is provisioned (key operations refused), read with the label.
    pub provisioned: bool,
}

/// Store the lookup keys of rows written before the store kept them (a
/// store made by an older build, once): every later lookup needs them.
fn key_rows(store: &mut dyn Store) -> Result<()> {
    let rows = store.unkeyed()?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(rows.len());
    for (id, attrs) in &rows {
        match Record::from_json(attrs) {
            Ok(rec) => keys.push((*id, objects::row_keys(&rec))),
            // Logged by from_json; such a row was never usable, and with
            // empty keys it is not read again at every start.
            Err(_) => keys.push((*id, crate::store::RowKeys::default())),
        }
    }
    log::info!("store: lookup keys stored for {} rows", keys.len());
    store.set_keys(&keys)
}

/// The deletion settings of a token record (its keys' recovery level).
pub fn recovery(rec: &TokenRecord) -> Recovery {
    Recovery {
        purge_protection: rec.purge_protection,
        retention_days: rec.retention_days,
    }
}

/// One pool: a store, its snapshot and every write.
pub struct Pool {
    path: PathBuf,
    /// The store's location for messages (a path, or a URL without password).
    location: Arc<str>,
    /// The token's `max_staleness_ms`.
    staleness_ms: u64,
    versioning: bool,
    kdf_iterations: u32,
    retention_days: u32,
    /// None when the store could not be opened: every call that needs it
    /// fails with `CKR_DEVICE_ERROR` and [`Pool::unopened`]'s cause.
    store: Mutex<Option<Box<dyn Store>>>,
    /// Why the store could not be opened (the failure as logged then).
    open_failure: Option<String>,
    signal: Option<Arc<dyn ChangeSignal>>,
    snap: RwLock<Snapshot>,
    /// The change sequence the snapshot reflects; -1 before it was loaded.
    seen: AtomicI64,
    /// Milliseconds after `epoch` of the last catch-up against the database.
    checked: AtomicU64,
    epoch: Instant,
    /// Principals' grants, read on first use (None: read again).
    access: RwLock<Option<Arc<access::AccessTable>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was already caught at the ABI; the
    // connection stays consistent because every write is transactional.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lifecycle refusal as the `CK_RV` PKCS#11 answers with.
pub fn refusal_rv(r: Refusal) -> Error {
    match r {
        Refusal::Token(e) => e,
        Refusal::TooManyVersions(_) => Error(CKR_ACTION_PROHIBITED),
        // Another version has CKA_DESTROYABLE=FALSE, and the like.
        Refusal::Invalid(_) => Error(CKR_ACTION_PROHIBITED),
        Refusal::NameDeleted(_) => Error(CKR_ATTRIBUTE_VALUE_INVALID),
        // Deleted meanwhile by another thread or process.
        Refusal::UnknownKey(_) | Refusal::NotDeleted(_) => Error(CKR_OBJECT_HANDLE_INVALID),
        Refusal::BadName(_) => Error(CKR_ATTRIBUTE_VALUE_INVALID),
        Refusal::PurgeProtected(..) => Error(CKR_ACTION_PROHIBITED),
        // CKR_ACTION_PROHIBITED is the spec's for C_CopyObject,
        // C_SetAttributeValue and C_DestroyObject only; a function the token
        // rejects in its present state is CKR_FUNCTION_REJECTED.
        Refusal::Provisioned => Error(CKR_FUNCTION_REJECTED),
        // Callers with a more precise code (a crypto *Init's
        // CKR_KEY_FUNCTION_NOT_PERMITTED) map it themselves.
        Refusal::Denied(_) => Error(CKR_ACTION_PROHIBITED),
    }
}

impl Pool {
    /// The pool of a configured token (the library's way in). An SQLite
    /// store is opened now, a PostgreSQL one connects at the first call that
    /// needs it ([`crate::store::open_on_first_use`]); a store that cannot be
    /// opened leaves the pool unusable with `CKR_DEVICE_ERROR`, and is
    /// logged, as is a server that cannot be reached at each call that needs it.
    pub fn open(config: &TokenConfig) -> Pool {
        let path = config.store_path();
        let location: Arc<str> = config.location().to_string().into();
        let opened = || crate::store::open_on_first_use(&config.location());
        let store = match crate::store::at(&location, opened) {
            Ok(s) => Ok(s),
            Err(e) => {
                log::debug!("cannot open token store {location}: {e}");
                Err(crate::store::last_failure()
                    .unwrap_or_else(|| format!("token store {location} cannot be opened")))
            }
        };
        Pool::with(config, path, location, store)
    }

    /// The pool of a configured token, or the store's error (the CLI's way in).
    pub fn open_or_fail(config: &TokenConfig) -> Result<Pool> {
        let path = config.store_path();
        let location: Arc<str> = config.location().to_string().into();
        let store = crate::store::at(&location, || crate::store::open(&config.location()))?;
        Ok(Pool::with(config, path, location, Ok(store)))
    }

    fn with(
        config: &TokenConfig,
        path: PathBuf,
        location: Arc<str>,
        store: std::result::Result<Box<dyn Store>, String>,
    ) -> Pool {
        let (store, open_failure) = match store {
            Ok(s) => (Some(s), None),
            Err(why) => (None, Some(why)),
        };
        Pool {
            location,
            staleness_ms: config.max_staleness_ms,
            signal: store.as_ref().map(|s| s.signal()),
            open_failure,
            path,
            versioning: config.versioning,
            kdf_iterations: config.kdf_iterations,
            retention_days: config.retention_days,
            store: Mutex::new(store),
            snap: RwLock::new(Snapshot::default()),
            seen: AtomicI64::new(-1),
            checked: AtomicU64::new(0),
            epoch: Instant::now(),
            access: RwLock::new(None),
        }
    }

    /// The error of a call that needs the store when it could not be opened:
    /// `CKR_DEVICE_ERROR`, with the open failure kept as this thread's last
    /// store failure (the debug log and the CLI name it).
    fn unopened(&self) -> Error {
        if let Some(why) = &self.open_failure {
            crate::store::remember(why.clone());
        }
        Error(CKR_DEVICE_ERROR)
    }

    /// Where the store lives (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether token keys are Managed HSM keys with versions (the default).
    pub fn versioning(&self) -> bool {
        self.versioning
    }

    /// Run `f` on the store (a read, or a write of something the snapshot does
    /// not mirror, e.g. a PIN).
    pub fn read<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut g = lock(&self.store);
        let store = g.as_mut().ok_or_else(|| self.unopened())?;
        crate::store::at(&self.location, || f(store.as_mut()))
    }

    /// Run a write `f` on the store, then bring the snapshot (if this process
    /// has one) up to date with it, still holding the store: a snapshot read
    /// by one thread can never be applied after another thread's later write.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut g = lock(&self.store);
        let store = g.as_mut().ok_or_else(|| self.unopened())?;
        let _named = crate::store::naming(&self.location);
        let out = f(store.as_mut());
        if self.seen.load(Ordering::Acquire) >= 0 {
            // Even a failed write may have committed part of what it did
            // (a rotation policy applied to several keys). A catch-up that
            // fails here does not turn a committed write into an error: the
            // next `fresh` catches up.
            if let Err(e) = self.apply_changes(store.as_ref()) {
                log::warn!(
                    "pool {}: snapshot not brought up to date: {e:?}",
                    self.path.display()
                );
            }
        }
        out
    }

    /// Apply what changed in the store since the snapshot's sequence (the
    /// caller holds the store).
    fn apply_changes(&self, store: &dyn Store) -> Result<()> {
        let seen = self.seen.load(Ordering::Acquire);
        let changes = store.changes_since(seen)?;
        let seq = match changes {
            Changes::Reload { seq } => {
                let rec = store.token()?;
                let loaded = self.snapshot().objects.loaded_token_ids();
                let rows = store.objects_by_ids(&loaded)?;
                let mut snap = self.snap_mut();
                snap.recovery = rec.as_ref().map(recovery).unwrap_or_default();
                snap.provisioned = rec.as_ref().is_some_and(|r| r.provisioned);
                snap.label = rec.map(|r| r.label).unwrap_or_default();
                snap.objects.reload(&rows);
                drop(snap);
                self.access_changed();
                seq
            }
            Changes::Since { seq, touched, rows } => {
                // Id -1: an assignment or a principal changed.
                if touched.contains(&-1) {
                    self.access_changed();
                }
                self.snap_mut().objects.apply(&touched, &rows);
                seq
            }
        };
        self.seen.store(seq, Ordering::Release);
        self.checked.store(self.millis(), Ordering::Relaxed);
        Ok(())
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bring the snapshot up to date with every write committed before this
    /// call, by any process: cheap when nothing changed (one atomic load of
    /// the store's shared change counter), O(changes) otherwise.
    pub fn fresh(&self) -> Result<()> {
        let seen = self.seen.load(Ordering::Acquire);
        if seen >= 0 {
            let announced = self.signal.as_ref().map_or(i64::MAX, |s| s.latest());
            let last = self.checked.load(Ordering::Relaxed);
            let bound = self.staleness_ms;
            if announced <= seen && self.millis().saturating_sub(last) < bound {
                return Ok(());
            }
        }
        let mut g = lock(&self.store);
        let store = g.as_mut().ok_or_else(|| self.unopened())?;
        let _named = crate::store::naming(&self.location);
        if seen < 0 {
            key_rows(store.as_mut())?;
            return self.apply_changes(store.as_ref());
        }
        // A store that cannot be reached (a PostgreSQL server restarting)
        // does not stop the objects already loaded from being used: the
        // failure is logged, the next check comes after the staleness bound,
        // and writes fail on their own.
        if let Err(e) = self.apply_changes(store.as_ref()) {
            log::warn!(
                "pool {}: cannot catch up with the store ({e:?}); serving the objects loaded",
                self.location
            );
            self.checked.store(self.millis(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The entry of token row `id` (loaded from the store on first use) or of
    /// a session object; None if there is no such live object.
    pub fn entry(&self, id: i64) -> Result<Option<Arc<Entry>>> {
        if let Some(e) = self.snapshot().objects.get(id) {
            return Ok(Some(e.clone()));
        }
        if id >= objects::SESSION_ID_BASE {
            return Ok(None);
        }
        let g = lock(&self.store);
        let store = g.as_ref().ok_or_else(|| self.unopened())?;
        let _named = crate::store::naming(&self.location);
        // Loaded by another thread meanwhile?
        if let Some(e) = self.snapshot().objects.get(id) {
            return Ok(Some(e.clone()));
        }
        let rows = store.objects_by_ids(&[id])?;
        let mut snap = self.snap_mut();
        Ok(rows.first().and_then(|r| snap.objects.load(r)))
    }

    /// The live token objects `by` finds in the store (loaded on first use)
    /// and every session object: the candidates a find template is matched
    /// against.
    pub fn candidates(&self, by: Lookup<'_>) -> Result<Vec<Arc<Entry>>> {
        let g = lock(&self.store);
        let store = g.as_ref().ok_or_else(|| self.unopened())?;
        let _named = crate::store::naming(&self.location);
        let ids = store.lookup(by)?;
        let missing: Vec<i64> = {
            let snap = self.snapshot();
            ids.iter()
                .copied()
                .filter(|id| snap.objects.get(*id).is_none())
                .collect()
        };
        let rows = if missing.is_empty() {
            Vec::new()
        } else {
            store.objects_by_ids(&missing)?
        };
        let mut snap = self.snap_mut();
        for row in &rows {
            snap.objects.load(row);
        }
        let mut out: Vec<Arc<Entry>> = ids
            .iter()
            .filter_map(|id| snap.objects.get(*id).cloned())
            .collect();
        out.extend(snap.objects.sessions().cloned());
        Ok(out)
    }

    /// The snapshot as it is (call [`Pool::fresh`] first where coherence matters).
    pub fn snapshot(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snap.read().unwrap_or_else(|p| p.into_inner())
    }

    fn snap_mut(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.snap.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The token label, one spelling: the store row's.
    pub fn label(&self) -> String {
        self.snapshot().label.clone()
    }

    /// The token record, or None if the token is not initialised.
    pub fn record(&self) -> Result<Option<TokenRecord>> {
        self.read(|s| s.token())
    }

    /// The token record of an initialised token (`CKR_TOKEN_NOT_RECOGNIZED` otherwise).
    pub fn initialized(&self) -> Result<TokenRecord> {
        self.record()?.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))
    }

    /// Initialise (or re-initialise, with the current SO PIN) the token: a new
    /// master key, no objects, a new attestation key.
    pub fn init_token(&self, so_pin: &[u8], label: &str) -> Result<MasterKey> {
        let initialised = self.record()?.is_some();
        if initialised {
            // Re-initialisation needs the current SO PIN.
            self.unlock(PinUser::So, so_pin)?;
        }
        self.write(|s| {
            let master = s.init_token(label, so_pin, self.kdf_iterations, self.retention_days)?;
            attest::provision(s, &master);
            Ok::<_, Error>(master)
        })
    }

    /// The one activation check (issue 14): a provisioned pool refuses every
    /// key operation — creating, importing, unwrapping or using a key, from
    /// PKCS#11 and from the CLI — until its security domain is downloaded.
    /// Cheap on the hot path: the state is read with the token row, and a
    /// change by any process is a token reload seen by [`Pool::fresh`].
    pub fn check_active(&self) -> std::result::Result<(), Refusal> {
        self.fresh()?;
        if self.snapshot().provisioned {
            return Err(Refusal::Provisioned);
        }
        Ok(())
    }

    /// `security-domain download` succeeded: the pool is active for good
    /// (a no-op when it already is).
    pub fn activate(&self) -> Result<()> {
        if self.initialized()?.provisioned {
            self.write(|s| s.set_provisioned(false))?;
        }
        Ok(())
    }

    /// Check `pin` for `who` and unwrap the master key. The PIN key derivation
    /// (600,000 PBKDF2 rounds by default) runs without any lock while no
    /// failure is on record, so logins never stall the process's other
    /// threads nor other processes; once a failure is on record, the check
    /// runs serialised on a connection of its own (see [`Store::unlock`]).
    pub fn unlock(&self, who: PinUser, pin: &[u8]) -> Result<MasterKey> {
        let slot = self.read(|s| s.pin_slot(who))?;
        if slot.failures > 0 {
            let mut own = self.read(|s| s.reopen())?;
            return own.unlock(who, pin);
        }
        match crate::store::check_pin(who, &slot, pin) {
            Err(Error(CKR_PIN_INCORRECT)) => {
                self.read(|s| s.count_pin_failure(who))?;
                Err(Error(CKR_PIN_INCORRECT))
            }
            other => other,
        }
    }

    /// Wrap `master` under a new PIN for `who`.
    pub fn set_pin(&self, who: PinUser, master: &MasterKey, pin: &[u8]) -> Result<()> {
        self.read(|s| s.set_pin(who, master, pin))
    }

    /// Store a new token object (a key version becomes its name's current
    /// version when the token is versioned) and return its snapshot entry.
    pub fn add_token_object(
        &self,
        master: Option<&MasterKey>,
        rec: Record,
        secret: Option<SecretBytes>,
    ) -> Result<Arc<Entry>> {
        let mut rec = rec;
        let versioned = self.versioning;
        let id = self.write(|s| {
            if let (Body::Key(k), true) = (&mut rec.body, versioned) {
                k.name = lifecycle::spelled_name(s, &k.name).map_err(refusal_rv)?;
            }
            lifecycle::insert_version(
                s,
                master,
                &rec,
                secret.as_ref().map(|m| &m[..]),
                versioned,
                None,
            )
            .map(|row| row.id)
            .map_err(refusal_rv)
        })?;
        self.fresh()?;
        self.entry(id)?.ok_or(Error(CKR_GENERAL_ERROR))
    }

    /// Add a session object owned by session `owner`.
    pub fn add_session_object(
        &self,
        owner: CK_SESSION_HANDLE,
        rec: Record,
        secret: Option<SecretBytes>,
    ) -> Arc<Entry> {
        let mut snap = self.snap_mut();
        let id = snap.objects.next_session_id();
        let e = Arc::new(Entry::session(id, owner, rec, secret));
        snap.objects.put(e.clone());
        e
    }

    /// Replace an object's record (C_SetAttributeValue).
    pub fn update(&self, e: &Entry, rec: Record) -> Result<()> {
        if e.is_token() {
            let json = rec.to_json()?;
            self.write(|s| s.update_attrs(e.id, &json, &objects::row_keys(&rec)))
        } else {
            self.snap_mut().objects.put(Arc::new(e.with_record(rec)));
            Ok(())
        }
    }

    /// C_DestroyObject of one object. The two halves of a key pair are separate
    /// PKCS#11 objects: destroying one leaves the other. A versioned token key is
    /// a Managed HSM key: when its last visible half goes (an AES key has one),
    /// the whole key, every version, is soft-deleted; until then a destroyed
    /// half is only hidden, its material kept sealed, so `key recover` brings
    /// the key back whole. Elsewhere (session objects, tokens with versioning
    /// off) a destroyed private half's material is erased at once and the row
    /// goes with the last half.
    pub fn destroy(&self, e: &Entry, part: Part) -> Result<()> {
        if !e.rec.destroyable {
            return Err(Error(CKR_ACTION_PROHIBITED));
        }
        let other = match part {
            Part::Main => Part::Public,
            Part::Public => Part::Main,
        };
        let hidden = |rec: &Record| {
            let mut rec = rec.clone();
            if let Body::Key(k) = &mut rec.body {
                match part {
                    Part::Main => k.private_hidden = true,
                    Part::Public => k.public_hidden = true,
                }
            }
            rec
        };
        if let (Body::Key(k), true) = (&e.rec.body, e.is_token() && self.versioning) {
            if e.has_part(other) {
                return self.update(e, hidden(&e.rec));
            }
            let now = crate::engine::attributes::now();
            return self.write(|s| {
                lifecycle::delete_versions(s, &k.name, now)
                    .map(|_| ())
                    .map_err(refusal_rv)
            });
        }
        if matches!(e.rec.body, Body::Key(_)) && e.has_part(other) {
            let rec = hidden(&e.rec);
            if part == Part::Public {
                return self.update(e, rec);
            }
            if e.is_token() {
                let json = rec.to_json()?;
                return self.write(|s| s.forget_secret(e.id, &json));
            }
            let mut rest = e.with_record(rec);
            rest.forget_material();
            self.snap_mut().objects.put(Arc::new(rest));
            return Ok(());
        }
        if e.is_token() {
            self.write(|s| s.delete_object(e.id).map(|_| ()))
        } else {
            self.snap_mut().objects.remove(e.id);
            Ok(())
        }
    }

    /// Remove the session objects of `session` (C_CloseSession).
    pub fn drop_session_objects(&self, session: CK_SESSION_HANDLE) {
        self.snap_mut().objects.drop_session_objects(session);
    }

    /// Forget every parsed private key (logout).
    pub fn forget_secrets(&self) {
        self.snap_mut().objects.forget_secrets();
    }

    /// Rotate the keys whose rotation policy says so (the library's half of
    /// `softmhsm key rotate-due`: it needs the master key, so it runs at user
    /// login). Each due rotation happens once however many processes log in at
    /// the same time: the store decides it inside the write transaction.
    pub fn rotate_due(&self, master: &MasterKey) -> Result<Vec<rotation::Due>> {
        let now = crate::engine::attributes::now();
        self.write(|s| rotation::rotate_due(s, master, now).map_err(refusal_rv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::key::KeyKind;
    use crate::engine::lifecycle::KeySpec;

    fn pool_with_keys(dir: &Path, n: usize) -> Pool {
        let config = TokenConfig {
            dir: dir.to_path_buf(),
            url: None,
            versioning: true,
            kdf_iterations: 1,
            retention_days: 90,
            max_staleness_ms: 1000,
            audit: Default::default(),
        };
        let writer = Pool::open_or_fail(&config).unwrap();
        let master = writer.init_token(b"so-pin-1", "lazy").unwrap();
        let spec = KeySpec {
            kind: KeyKind::Aes(256),
            ops: None,
            tags: Default::default(),
            enabled: true,
            nbf: None,
            exp: None,
            id: None,
        };
        writer
            .write(|s| {
                (0..n).try_for_each(|i| {
                    lifecycle::create(s, &master, &format!("k{i}"), &spec, 1).map(|_| ())
                })
            })
            .map_err(|_| ())
            .unwrap();
        Pool::open_or_fail(&config).unwrap()
    }

    #[test]
    fn a_pool_loads_only_the_rows_it_uses() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_with_keys(dir.path(), 50);
        pool.fresh().unwrap();
        assert!(
            pool.snapshot().objects.loaded_token_ids().is_empty(),
            "opening loads no row"
        );
        let found = pool.candidates(Lookup::Label(b"k7")).unwrap();
        assert_eq!(found.len(), 1, "the label names one row");
        assert_eq!(
            pool.snapshot().objects.loaded_token_ids(),
            vec![found[0].id],
            "only that row is loaded"
        );
        let e = pool.entry(found[0].id).unwrap().unwrap();
        assert!(Arc::ptr_eq(&e, &found[0]), "a loaded row is not read again");
        assert_eq!(
            pool.candidates(Lookup::All).unwrap().len(),
            50,
            "an enumeration loads every row"
        );
        assert!(pool.entry(1 << 30).unwrap().is_none(), "no such row");
    }
}
