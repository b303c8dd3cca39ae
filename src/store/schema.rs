//! The SQLite schema and its forward migrations (`PRAGMA user_version`).
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`; a new schema
//! version is one more entry at the end. Entries are never edited once shipped:
//! stores in the field have already run them.

use crate::error::{Error, Result};
use cryptoki_sys::CKR_DEVICE_ERROR;
use rusqlite::{Connection, TransactionBehavior};

/// The forward migrations, in order; the schema version is their count.
const MIGRATIONS: &[&str] = &[
    // 1: the token row and the objects table.
    "CREATE TABLE token (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        label          TEXT    NOT NULL,
        created        INTEGER NOT NULL,
        kdf_iterations INTEGER NOT NULL,
        retention_days INTEGER NOT NULL,
        so_salt        BLOB    NOT NULL,
        so_wrapped     BLOB    NOT NULL,
        user_salt      BLOB,
        user_wrapped   BLOB,
        so_failures    INTEGER NOT NULL DEFAULT 0,
        user_failures  INTEGER NOT NULL DEFAULT 0
    );
    -- AUTOINCREMENT so a deleted row's id (an object handle) is never handed out again.
    CREATE TABLE objects (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        name    TEXT,
        name_lc TEXT,
        version TEXT,
        current INTEGER NOT NULL DEFAULT 1,
        attrs   TEXT    NOT NULL,
        sealed  BLOB
    );
    CREATE INDEX objects_name_lc_current ON objects (name_lc, current);",
    // 2: soft-delete. A deleted key keeps its rows, stamped with when it was
    // deleted and when it is purged; purge protection is a token-wide flag.
    "ALTER TABLE objects ADD COLUMN deleted_at INTEGER;
    ALTER TABLE objects ADD COLUMN purge_at INTEGER;
    ALTER TABLE token ADD COLUMN purge_protection INTEGER NOT NULL DEFAULT 0;",
    // 3: rotation policies (one per key name, JSON after Managed HSM's
    // KeyRotationPolicy) and the token's attestation key pair (the private key
    // sealed under the master key like every secret; the public key in clear).
    "CREATE TABLE policies (
        name_lc TEXT PRIMARY KEY,
        policy  TEXT NOT NULL
    );
    ALTER TABLE token ADD COLUMN attest_sealed BLOB;
    ALTER TABLE token ADD COLUMN attest_public BLOB;",
    // 4: the change log. Every committed write of an object row is numbered
    // (by triggers, so no write path can forget it), and object id 0 stands
    // for the token row being made anew or its settings changed (a reload):
    // a process catches up with other processes' writes in O(changes).
    "CREATE TABLE changes (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        object_id INTEGER NOT NULL
    );
    CREATE TRIGGER objects_insert_logged AFTER INSERT ON objects
        BEGIN INSERT INTO changes (object_id) VALUES (NEW.id); END;
    CREATE TRIGGER objects_update_logged AFTER UPDATE ON objects
        BEGIN INSERT INTO changes (object_id) VALUES (NEW.id); END;
    CREATE TRIGGER objects_delete_logged AFTER DELETE ON objects
        BEGIN INSERT INTO changes (object_id) VALUES (OLD.id); END;
    CREATE TRIGGER token_insert_logged AFTER INSERT ON token
        BEGIN INSERT INTO changes (object_id) VALUES (0); END;
    CREATE TRIGGER token_settings_logged
        AFTER UPDATE OF label, purge_protection, retention_days ON token
        BEGIN INSERT INTO changes (object_id) VALUES (0); END;",
    // 5: lookup keys beside the attribute JSON, so a find by label, CKA_ID or
    // version is an index lookup and a process loads only the rows it uses.
    // Rows written before have NULL keys until the pool fills them in.
    // Opening a pool asks whether a deleted key is due for purging: indexed.
    "ALTER TABLE objects ADD COLUMN label BLOB;
    ALTER TABLE objects ADD COLUMN public_label BLOB;
    ALTER TABLE objects ADD COLUMN ckaid BLOB;
    CREATE INDEX objects_label ON objects (label);
    CREATE INDEX objects_public_label ON objects (public_label)
        WHERE public_label IS NOT NULL;
    CREATE INDEX objects_ckaid ON objects (ckaid);
    CREATE INDEX objects_version ON objects (version);
    -- Opening a pool asks whether any deleted key is due for purging.
    CREATE INDEX objects_purge_at ON objects (purge_at) WHERE purge_at IS NOT NULL;",
    // 6: activation. A pool made with `init --require-security-domain` stays
    // provisioned (key operations refused) until its security domain is
    // downloaded; every process sees the change (a token reload).
    "ALTER TABLE token ADD COLUMN provisioned INTEGER NOT NULL DEFAULT 0;
    CREATE TRIGGER token_state_logged AFTER UPDATE OF provisioned ON token
        BEGIN INSERT INTO changes (object_id) VALUES (0); END;",
    // 7: local RBAC (issue 13). Principals, each with its own wrap of the
    // master key (salt, wrapped, failure counter), role assignments and custom
    // role definitions.
    // Object id -1 in the change log stands for "access changed": every
    // process re-reads the assignments at its next call.
    "CREATE TABLE principals (
        name_lc   TEXT    PRIMARY KEY,
        name      TEXT    NOT NULL,
        object_id TEXT    NOT NULL UNIQUE,
        created   INTEGER NOT NULL,
        salt      BLOB    NOT NULL,
        wrapped   BLOB    NOT NULL,
        kdf_iterations INTEGER NOT NULL,
        failures  INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE assignments (
        id           TEXT    PRIMARY KEY,
        principal_lc TEXT    NOT NULL,
        role_id      TEXT    NOT NULL,
        scope        TEXT    NOT NULL,
        scope_lc     TEXT    NOT NULL,
        created      INTEGER NOT NULL,
        UNIQUE (principal_lc, role_id, scope_lc)
    );
    -- Custom role definitions (the built-in ones are code): data actions as
    -- a JSON array of their published names.
    CREATE TABLE role_definitions (
        id          TEXT    PRIMARY KEY,
        name        TEXT    NOT NULL,
        name_lc     TEXT    NOT NULL UNIQUE,
        description TEXT    NOT NULL,
        actions     TEXT    NOT NULL,
        created     INTEGER NOT NULL
    );
    CREATE TRIGGER roles_insert_logged AFTER INSERT ON role_definitions
        BEGIN INSERT INTO changes (object_id) VALUES (-1); END;
    CREATE TRIGGER roles_delete_logged AFTER DELETE ON role_definitions
        BEGIN INSERT INTO changes (object_id) VALUES (-1); END;
    CREATE TRIGGER principals_delete_logged AFTER DELETE ON principals
        BEGIN INSERT INTO changes (object_id) VALUES (-1); END;
    CREATE TRIGGER assignments_insert_logged AFTER INSERT ON assignments
        BEGIN INSERT INTO changes (object_id) VALUES (-1); END;
    CREATE TRIGGER assignments_delete_logged AFTER DELETE ON assignments
        BEGIN INSERT INTO changes (object_id) VALUES (-1); END;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Bring the schema up to [`SCHEMA_VERSION`], in one transaction. A store written
/// by a newer build (higher `user_version`) is refused with `CKR_DEVICE_ERROR`
/// rather than misread.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    // IMMEDIATE: two processes opening a fresh file must not both run migration 1.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        log::error!("store schema version {current} is newer than this build's {SCHEMA_VERSION}");
        return Err(Error(CKR_DEVICE_ERROR));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        log::debug!("migrating store schema from version {from}");
        tx.execute_batch(sql)?;
    }
    if current < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_sets_user_version_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn version_1_store_migrates_with_rows_kept_live() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute("INSERT INTO objects (attrs) VALUES ('{}')", [])
            .unwrap();
        migrate(&mut conn).unwrap();
        let deleted: Option<i64> = conn
            .query_row("SELECT deleted_at FROM objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(deleted, None);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert_eq!(migrate(&mut conn).unwrap_err(), Error(CKR_DEVICE_ERROR));
    }
}
