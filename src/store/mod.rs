//! The token's persistent store (DESIGN §4): one SQLite file per token, WAL,
//! versioned schema, every secret sealed under the pool's master key.
//!
//! The store knows rows, not PKCS#11: object attributes are an opaque JSON text
//! that the engine owns; secret material arrives already sealed (see [`seal`]).
//! A `Store` is one connection; the token keeps one per process behind a mutex and
//! reads other processes' writes by asking [`Store::changed`].

pub mod schema;
pub mod sqlite;

pub use crate::crypto::seal::{self, MasterKey};
pub use sqlite::{AttestationRow, Store};

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

/// A row to insert; see [`Store::insert_object`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewObject {
    /// Versioned name (keys), or None for certificates and data objects.
    pub name: Option<String>,
    /// Version id (keys).
    pub version: Option<String>,
    /// The engine's attribute record, JSON.
    pub attrs: String,
    /// Sealed secret material.
    pub sealed: Option<Vec<u8>>,
}
