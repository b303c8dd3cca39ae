//! A pool's persistent store (DESIGN §4): the [`Store`] trait, the seam between
//! the pool service and a database, and its SQLite implementation (one file per
//! token, WAL, versioned schema), every secret sealed under the pool's master key.
//!
//! The store knows rows, not PKCS#11: object attributes are an opaque JSON text
//! that the engine owns; secret material arrives already sealed (see [`seal`]).
//! The PostgreSQL implementation ([`postgres`]) serves pools shared by several
//! machines, with the same schema ideas, transactions and change log.
//!
//! A `Store` is one connection; the pool keeps one per process behind a mutex.
//! Every committed change of an object row is numbered in a change log (the
//! *change sequence*), so a process catches up with other processes' writes in
//! O(changes): [`Store::changes_since`], with [`ChangeSignal`] as the cheap probe
//! that says whether there is anything to catch up with.

#[cfg(test)]
mod pg_cluster;
mod pin;
pub mod postgres;
mod postgres_conn;
mod postgres_schema;
mod postgres_signal;
pub mod schema;
pub mod sqlite;
#[cfg(test)]
mod suite;

pub use crate::crypto::seal::{self, MasterKey};
pub use pin::{check_pin, check_principal_pin};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::error::Result;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

thread_local! {
    /// The store the calling thread is working on, named in its failures.
    static WHERE: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    /// This thread's last store failure, for a caller's one-line message.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Run `f` with `location` (a path, or a URL without its password) named in
/// every store failure it reports.
pub fn at<T>(location: &Arc<str>, f: impl FnOnce() -> T) -> T {
    let _named = naming(location);
    f()
}

/// Name `location` in the store failures this thread reports until the
/// returned guard drops (the scoped form of [`at`]).
pub fn naming(location: &Arc<str>) -> Naming {
    // At process exit (an atexit C_Finalize or C_CloseSession) the
    // thread-locals may be gone: naming then simply does nothing.
    Naming(
        WHERE
            .try_with(|w| w.replace(Some(location.clone())))
            .ok()
            .flatten(),
    )
}

/// The guard of [`naming`]: restores the name it replaced.
pub struct Naming(Option<Arc<str>>);

impl Drop for Naming {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _ = WHERE.try_with(|w| w.replace(previous));
    }
}

/// A store failure: logged at ERROR level naming the store and the cause (an
/// OS or database message; never a key or a PIN), and kept as this thread's
/// last failure.
pub fn failed(cause: &dyn std::fmt::Display) {
    let location = WHERE.try_with(|w| w.borrow().clone()).ok().flatten();
    let msg = match location {
        Some(w) => format!("token store {w}: {cause}"),
        None => format!("token store: {cause}"),
    };
    log::error!("{msg}");
    remember(msg);
}

/// Keep `msg` (already logged, naming its store) as this thread's last failure.
pub fn remember(msg: String) {
    let _ = LAST.try_with(|last| last.replace(Some(msg)));
}

/// This thread's last store failure since the last call, if any.
pub fn last_failure() -> Option<String> {
    LAST.try_with(|last| last.take()).ok().flatten()
}

/// Seconds in a day of soft-delete retention.
const DAY: i64 = 86_400;

/// Change-log entries kept behind the newest; a process that fell further
/// behind reloads every row once (see [`Changes::Reload`]).
const CHANGE_LOG_KEEP: i64 = 100_000;

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The sealed private key and the public SPKI DER of a token's attestation key.
pub struct AttestationRow {
    /// PKCS#8 DER sealed under the master key.
    pub sealed: Vec<u8>,
    /// `SubjectPublicKeyInfo` DER.
    pub public: Vec<u8>,
}

/// Consecutive wrong user PINs after which the user PIN locks (`CKR_PIN_LOCKED`).
pub const MAX_PIN_FAILURES: u32 = 10;

/// Whose PIN a call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinUser {
    /// The Security Officer (`CKU_SO`).
    So,
    /// The normal user (`CKU_USER`).
    User,
}

/// The token-wide record (one row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// `CK_TOKEN_INFO.label` as given to `C_InitToken` (trailing blanks trimmed).
    pub label: String,
    /// Seconds since the Unix epoch when the token was initialised.
    pub created: i64,
    /// PBKDF2-HMAC-SHA-256 iteration count used for both PINs.
    pub kdf_iterations: u32,
    /// Whether a user PIN has been set (`CKF_USER_PIN_INITIALIZED`).
    pub user_pin_initialized: bool,
    /// Consecutive failed user logins (reset by a success or a new PIN).
    pub user_failures: u32,
    /// Consecutive failed SO logins (reset by a success or a new PIN); the SO PIN never locks.
    pub so_failures: u32,
    /// Soft-delete retention in days (7–90), fixed at initialisation.
    pub retention_days: u32,
    /// Purge protection: a deleted key cannot be purged before its scheduled purge date.
    pub purge_protection: bool,
    /// The Managed HSM's "provisioned" state: key operations are refused until
    /// the security domain is downloaded (`init --require-security-domain`).
    pub provisioned: bool,
}

/// A stored object row: one key version (both halves of a key pair), a
/// certificate or a data object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRow {
    /// Stable row id; object handles are derived from it.
    pub id: i64,
    /// The versioned name (keys only): unique case-insensitively among current keys.
    pub name: Option<String>,
    /// 32-hex version id (keys only).
    pub version: Option<String>,
    /// Whether this row is the current version of its name (always true when `name` is None).
    pub current: bool,
    /// The engine's attribute record, JSON.
    pub attrs: String,
    /// Secret material sealed under the master key, if the object has any.
    pub sealed: Option<Vec<u8>>,
}

/// A soft-deleted key version: its row and its deletion dates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedRow {
    /// The row as it was when deleted.
    pub row: ObjectRow,
    /// Seconds since the epoch when it was deleted (`deletedDate`).
    pub deleted_at: i64,
    /// Seconds since the epoch when it is purged (`scheduledPurgeDate`).
    pub purge_at: i64,
}

/// A row's lookup keys, kept in columns beside its attribute JSON (which only
/// the engine reads): a find by label, `CKA_ID` or version is an index lookup
/// in the database, so a process loads only the rows it uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowKeys {
    /// `CKA_LABEL` of the row's first object.
    pub label: Vec<u8>,
    /// `CKA_LABEL` of a key pair's public half, where it differs.
    pub public_label: Option<Vec<u8>>,
    /// `CKA_ID`.
    pub ckaid: Vec<u8>,
}

/// What [`Store::lookup`] finds live rows by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Rows either of whose labels is this one.
    Label(&'a [u8]),
    /// Rows with this `CKA_ID`.
    CkaId(&'a [u8]),
    /// The row of this version id.
    Version(&'a str),
    /// Every live row.
    All,
}

/// A row to insert; see [`Store::insert_object`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewObject {
    /// Versioned name (keys), or None for certificates and data objects.
    pub name: Option<String>,
    /// Version id (keys).
    pub version: Option<String>,
    /// The engine's attribute record, JSON.
    pub attrs: String,
    /// The record's lookup keys.
    pub keys: RowKeys,
    /// Sealed secret material.
    pub sealed: Option<Vec<u8>>,
    /// Refuse (`CKR_ACTION_PROHIBITED`) when the name already has this many
    /// live versions: checked inside the write transaction, so processes
    /// racing at the cap cannot both pass it.
    pub max_versions: Option<usize>,
    /// Insert only while this version is the name's current one (a rotation
    /// decided on what it read): `CKR_FUNCTION_REJECTED` if another writer
    /// made a newer version meanwhile.
    pub replaces: Option<String>,
}

impl NewObject {
    /// The row this becomes once stored under `id`.
    pub fn stored(&self, id: i64, current: bool) -> ObjectRow {
        ObjectRow {
            id,
            name: self.name.clone(),
            version: self.version.clone(),
            current,
            attrs: self.attrs.clone(),
            sealed: self.sealed.clone(),
        }
    }
}

/// One PIN's stored state, read to check a PIN outside any lock.
#[derive(Clone)]
pub struct PinSlot {
    /// PBKDF2 salt (None: no PIN set).
    pub salt: Option<Vec<u8>>,
    /// The master key wrapped under the PIN-derived key.
    pub wrapped: Option<Vec<u8>>,
    /// Consecutive failed logins.
    pub failures: u32,
    /// PBKDF2 iterations.
    pub kdf_iterations: u32,
}

/// A principal as stored (its credential stays in the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its name (`[A-Za-z0-9-_.@]`, 1–64), unique case-insensitively.
    pub name: String,
    /// Its object id (a UUID).
    pub object_id: String,
    /// Seconds since the epoch when it was made.
    pub created: i64,
}

/// A role assignment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The assignment's id (a UUID).
    pub id: String,
    /// The principal's name (as the principal spells it).
    pub principal: String,
    /// The role definition's id.
    pub role_id: String,
    /// Where it applies: `/`, `/keys` or `/keys/<name>`.
    pub scope: String,
    /// Seconds since the epoch when it was made.
    pub created: i64,
}

/// A principal with its credential as stored (salt, wrapped master key, KDF
/// cost): what a whole-pool backup carries, sealed, to a pool with the same
/// security domain (so the same master key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// The principal.
    pub principal: Principal,
    /// Its PBKDF2 salt.
    pub salt: Vec<u8>,
    /// The master key wrapped under its PIN.
    pub wrapped: Vec<u8>,
    /// The PBKDF2 iterations of its wrap.
    pub kdf_iterations: u32,
}

/// A custom role definition as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRow {
    /// Its id (a UUID).
    pub id: String,
    /// `roleName`, unique case-insensitively.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its data actions: a JSON array of published names.
    pub actions: String,
    /// Seconds since the epoch when it was made.
    pub created: i64,
}

/// What changed since a change sequence number.
#[derive(Debug, PartialEq, Eq)]
pub enum Changes {
    /// The rows touched since then: `touched` names every row id written,
    /// `rows` the live ones among them as they are now (a touched id without a
    /// live row was deleted or soft-deleted).
    Since {
        /// The sequence number the caller is now up to date with.
        seq: i64,
        /// Every row id written since.
        touched: Vec<i64>,
        /// The live rows among them.
        rows: Vec<ObjectRow>,
    },
    /// The log no longer reaches back that far, or the token was
    /// re-initialised (or `seq` was -1): anything may have changed; the caller
    /// reads again what it needs.
    Reload {
        /// The sequence number the caller is now up to date with.
        seq: i64,
    },
}

/// The cheap probe of a store's change sequence, read without the store's
/// connection on the hot path (before every `*Init`).
pub trait ChangeSignal: Send + Sync {
    /// The highest change sequence number any process has announced.
    fn latest(&self) -> i64;
}

/// The store interface: one connection to a pool's database. Every write is
/// one transaction; rule checks that depend on stored state run inside it.
pub trait Store: Send {
    /// The token record, or None if the token was never initialised.
    fn token(&self) -> Result<Option<TokenRecord>>;
    /// Initialise (or re-initialise) the token in one transaction; returns the
    /// new master key. A purge-protected token that holds any object is
    /// refused (`CKR_TOKEN_WRITE_PROTECTED`), and purge protection stays on.
    fn init_token(
        &mut self,
        label: &str,
        so_pin: &[u8],
        kdf_iterations: u32,
        retention_days: u32,
    ) -> Result<MasterKey>;
    /// `who`'s stored PIN state (`CKR_TOKEN_NOT_RECOGNIZED` before init).
    fn pin_slot(&self, who: PinUser) -> Result<PinSlot>;
    /// Count one failed login of `who`.
    fn count_pin_failure(&mut self, who: PinUser) -> Result<()>;
    /// Check `pin` and unwrap the master key, counting the result, as one
    /// serialised transaction (used once a failure is on record).
    fn unlock(&mut self, who: PinUser, pin: &[u8]) -> Result<MasterKey>;
    /// Wrap `master` under a new PIN for `who` and reset its counter.
    fn set_pin(&mut self, who: PinUser, master: &MasterKey, pin: &[u8]) -> Result<()>;
    /// A second, independent connection to the same database.
    fn reopen(&self) -> Result<Box<dyn Store>>;
    /// The probe of this store's change sequence.
    fn signal(&self) -> Arc<dyn ChangeSignal>;
    /// The current change sequence number, read from the database itself.
    fn change_seq(&self) -> Result<i64>;
    /// What changed after change sequence number `seq` (-1: everything).
    fn changes_since(&self, seq: i64) -> Result<Changes>;
    /// Every live object row.
    fn objects(&self) -> Result<Vec<ObjectRow>>;
    /// Every object row, live or soft-deleted (`softmhsm check`).
    fn all_objects(&self) -> Result<Vec<ObjectRow>>;
    /// One live object row by id.
    fn object(&self, id: i64) -> Result<Option<ObjectRow>>;
    /// The live rows among `ids`, in no particular order.
    fn objects_by_ids(&self, ids: &[i64]) -> Result<Vec<ObjectRow>>;
    /// The ids of the live rows found by `by` (index lookups, no row read).
    fn lookup(&self, by: Lookup<'_>) -> Result<Vec<i64>>;
    /// Every row, live or soft-deleted, whose lookup keys are not stored
    /// (written before the store kept them): (id, attribute JSON).
    fn unkeyed(&self) -> Result<Vec<(i64, String)>>;
    /// Store the lookup keys of rows, in one transaction.
    fn set_keys(&mut self, keys: &[(i64, RowKeys)]) -> Result<()>;
    /// Insert a row; with a name it becomes the current version.
    fn insert_object(&mut self, new: &NewObject) -> Result<ObjectRow>;
    /// Replace a row's attribute JSON and its lookup keys.
    fn update_attrs(&mut self, id: i64, attrs: &str, keys: &RowKeys) -> Result<()>;
    /// Replace a row's attribute JSON and drop its sealed material.
    fn forget_secret(&mut self, id: i64, attrs: &str) -> Result<()>;
    /// Delete a row; returns the id of a version promoted to current.
    fn delete_object(&mut self, id: i64) -> Result<Option<i64>>;
    /// The live versions of `name`, oldest first.
    fn versions_of(&self, name: &str) -> Result<Vec<ObjectRow>>;
    /// Soft-delete every version of `name`; returns the ids deleted.
    fn soft_delete_name(&mut self, name: &str, now: i64) -> Result<Vec<i64>>;
    /// Recover a soft-deleted `name`, rewriting each version's attributes
    /// where `rewrite(attrs, has_sealed)` says so; returns the versions recovered.
    fn recover_name_rewriting(
        &mut self,
        name: &str,
        rewrite: &dyn Fn(&str, bool) -> Result<Option<String>>,
    ) -> Result<usize>;
    /// Purge a soft-deleted `name`; returns the versions purged.
    fn purge_name(&mut self, name: &str, now: i64) -> Result<usize>;
    /// Purge every deleted key past its purge date.
    fn purge_expired(&mut self, now: i64) -> Result<usize>;
    /// The rotation policy of `name`.
    fn rotation_policy(&self, name: &str) -> Result<Option<String>>;
    /// Set or remove the rotation policy of a live key.
    fn set_rotation_policy(&mut self, name: &str, policy: Option<&str>) -> Result<()>;
    /// Every rotation policy of a live key: (lower-case name, JSON).
    fn rotation_policies(&self) -> Result<Vec<(String, String)>>;
    /// The current version of a soft-deleted `name`, with its dates.
    fn deleted_name(&self, name: &str) -> Result<Option<DeletedRow>>;
    /// Every soft-deleted key's current version.
    fn deleted_names(&self) -> Result<Vec<DeletedRow>>;
    /// Restore every version of one name (and its policy) in one transaction.
    fn restore_versions(
        &mut self,
        rows: &[NewObject],
        policy: Option<&str>,
    ) -> Result<Vec<ObjectRow>>;
    /// Turn purge protection on (never off).
    fn set_purge_protection(&mut self, on: bool) -> Result<()>;
    /// Set the token's provisioned state ([`TokenRecord::provisioned`]);
    /// `CKR_TOKEN_NOT_RECOGNIZED` before init. A re-initialised token is active.
    fn set_provisioned(&mut self, on: bool) -> Result<()>;
    /// The token's attestation key, if it has one.
    fn attestation_key(&self) -> Result<Option<AttestationRow>>;
    /// Store an attestation key unless the token has one; true if stored.
    fn set_attestation_key(&mut self, key: &AttestationRow) -> Result<bool>;
    /// Every principal, by name.
    fn principals(&self) -> Result<Vec<Principal>>;
    /// A principal (case-insensitive name) and its PIN state (the token's
    /// KDF cost), or None if there is no such principal.
    fn principal_pin(&self, name: &str) -> Result<Option<(Principal, PinSlot)>>;
    /// Store a new principal with `master` wrapped under its `pin`; false
    /// if the name is taken (`CKR_TOKEN_NOT_RECOGNIZED` before init).
    fn add_principal(&mut self, p: &Principal, master: &MasterKey, pin: &[u8]) -> Result<bool>;
    /// Wrap `master` under a new PIN for principal `name` and reset its
    /// counter; false if there is no such principal.
    fn set_principal_pin(&mut self, name: &str, master: &MasterKey, pin: &[u8]) -> Result<bool>;
    /// Count a principal's login: a failure adds one, a success resets.
    fn count_principal_login(&mut self, name: &str, success: bool) -> Result<()>;
    /// Delete a principal and its assignments; false if there is none.
    fn delete_principal(&mut self, name: &str) -> Result<bool>;
    /// Every role assignment, oldest first.
    fn assignments(&self) -> Result<Vec<Assignment>>;
    /// Store an assignment; false if its principal does not exist or the
    /// same (principal, role, scope) is already assigned.
    fn add_assignment(&mut self, a: &Assignment) -> Result<bool>;
    /// Delete the assignment of `role_id` to `principal` at `scope`; false
    /// if there is none.
    fn delete_assignment(&mut self, principal: &str, role_id: &str, scope: &str) -> Result<bool>;
    /// Every custom role definition, by name.
    fn role_definitions(&self) -> Result<Vec<RoleRow>>;
    /// Store a custom role definition; false if its name or id is taken.
    fn add_role_definition(&mut self, r: &RoleRow) -> Result<bool>;
    /// Delete custom role `id` unless an assignment uses it: Ok(None) when
    /// there is no such role, Ok(Some(n)) with the assignments that use it
    /// (deleted only when n is 0).
    fn delete_role_definition(&mut self, id: &str) -> Result<Option<usize>>;
    /// Restore principals (with their credentials), custom roles and
    /// assignments in one transaction, keeping what exists here (a principal
    /// or role of the same name, an assignment of the same principal, role
    /// and scope); returns how many of each were added.
    fn restore_access(
        &mut self,
        principals: &[PrincipalRecord],
        roles: &[RoleRow],
        assignments: &[Assignment],
    ) -> Result<(usize, usize, usize)>;
}

/// The one name (lower-cased) every row given to
/// [`Store::restore_versions`] must carry (`CKR_ARGUMENTS_BAD` otherwise).
pub(crate) fn restored_name(rows: &[NewObject]) -> Result<String> {
    let bad = crate::error::Error(cryptoki_sys::CKR_ARGUMENTS_BAD);
    let name_lc = match rows.first().and_then(|r| r.name.as_deref()) {
        Some(n) => n.to_lowercase(),
        None => return Err(bad),
    };
    if rows
        .iter()
        .any(|r| r.name.as_deref().map(str::to_lowercase).as_deref() != Some(&name_lc))
    {
        return Err(bad);
    }
    Ok(name_lc)
}

/// Where a token's store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (created 0700/0600 if missing).
    Path(PathBuf),
    /// A PostgreSQL database: a libpq connection URL (`postgresql://…`,
    /// multi-host allowed) or keyword/value string.
    Url(String),
}

impl std::fmt::Display for Location {
    /// The location for messages: a path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Path(p) => write!(f, "{}", p.display()),
            Location::Url(u) => write!(f, "{}", self::postgres::redacted(u)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Open the store at `location`: an SQLite file (created if missing) or a
/// PostgreSQL database (its schema created or migrated forward if needed).
pub fn open(location: &Location) -> Result<Box<dyn Store>> {
    match location {
        Location::Path(path) => Ok(Box::new(SqliteStore::open(path)?)),
        Location::Url(url) => Ok(Box::new(PgStore::open(url)?)),
    }
}

/// The store at `location` for a process that may never use it (the
/// library's `C_Initialize`): an SQLite file is opened now (a local file,
/// no server's resource), a PostgreSQL database at the first call that needs
/// it ([`PgStore::on_first_use`]: a connection is a server process).
pub fn open_on_first_use(location: &Location) -> Result<Box<dyn Store>> {
    match location {
        Location::Path(path) => Ok(Box::new(SqliteStore::open(path)?)),
        Location::Url(url) => Ok(Box::new(PgStore::on_first_use(url)?)),
    }
}
