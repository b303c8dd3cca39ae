//! The SQLite-backed store: one file per token, WAL, transactions for every write.

use super::{MasterKey, NewObject, ObjectRow, PinUser, TokenRecord};
use crate::error::Result;
use std::path::Path;

/// One connection to a token's store file.
pub struct Store {/* rusqlite::Connection, … */}

impl Store {
    /// Open (creating if missing: directory mode 0700, file mode 0600) the store at
    /// `path`, enable WAL and a busy timeout, and migrate the schema forward.
    pub fn open(path: &Path) -> Result<Store> {
        let _ = path;
        todo!()
    }

    /// The token record, or None if the token was never initialised.
    pub fn token(&self) -> Result<Option<TokenRecord>> {
        todo!()
    }

    /// Initialise (or re-initialise) the token in one transaction: delete every
    /// object, forget the user PIN, create a new master key wrapped under `so_pin`
    /// with `kdf_iterations`, reset counters. Returns the new master key.
    /// The caller has already checked the old SO PIN on a re-initialisation.
    pub fn init_token(
        &mut self,
        label: &str,
        so_pin: &[u8],
        kdf_iterations: u32,
        retention_days: u32,
    ) -> Result<MasterKey> {
        let _ = (label, so_pin, kdf_iterations, retention_days);
        todo!()
    }

    /// Check `pin` for `who` and unwrap the master key. Failures are counted in the
    /// store (shared by processes, kept across restarts): wrong PIN →
    /// `CKR_PIN_INCORRECT`; user PIN at `MAX_PIN_FAILURES` → `CKR_PIN_LOCKED`
    /// (checked before the PIN); no user PIN set → `CKR_USER_PIN_NOT_INITIALIZED`;
    /// token not initialised → `CKR_TOKEN_NOT_RECOGNIZED`. Success resets the counter.
    pub fn unlock(&mut self, who: PinUser, pin: &[u8]) -> Result<MasterKey> {
        let _ = (who, pin);
        todo!()
    }

    /// Wrap `master` under a new PIN for `who` (C_InitPIN, C_SetPIN) and reset its counter.
    pub fn set_pin(&mut self, who: PinUser, master: &MasterKey, pin: &[u8]) -> Result<()> {
        let _ = (who, master, pin);
        todo!()
    }

    /// True if any process has written to the store since this connection last
    /// asked (first call: true). Cheap: `PRAGMA data_version` plus own writes.
    pub fn changed(&mut self) -> Result<bool> {
        todo!()
    }

    /// Every object row.
    pub fn objects(&self) -> Result<Vec<ObjectRow>> {
        todo!()
    }

    /// One object row by id, or None.
    pub fn object(&self, id: i64) -> Result<Option<ObjectRow>> {
        let _ = id;
        todo!()
    }

    /// Insert a row in one transaction. With a `name`, every other row of that name
    /// (compared case-insensitively) stops being current and the new row becomes
    /// current. Returns the stored row (with its id).
    pub fn insert_object(&mut self, new: &NewObject) -> Result<ObjectRow> {
        let _ = new;
        todo!()
    }

    /// Replace a row's attribute JSON. `CKR_OBJECT_HANDLE_INVALID` if it is gone.
    pub fn update_attrs(&mut self, id: i64, attrs: &str) -> Result<()> {
        let _ = (id, attrs);
        todo!()
    }

    /// Delete a row. If it was the current version of its name, the newest
    /// remaining version (highest id) of that name becomes current.
    /// `CKR_OBJECT_HANDLE_INVALID` if it is gone.
    pub fn delete_object(&mut self, id: i64) -> Result<()> {
        let _ = id;
        todo!()
    }
}
