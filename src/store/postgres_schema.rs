//! The PostgreSQL schema and its forward migrations (table `schema_version`).
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`; a new schema
//! version is one more entry at the end. Entries are never edited once shipped:
//! databases in the field have already run them. The schema follows the SQLite
//! one (same tables, columns and change-log triggers) with PostgreSQL types,
//! plus the one-row `pool_lock` table that serialises writers (see
//! [`super::postgres`]) and the change log's `change_floor`.

use super::postgres_conn::{Db, Fail};
use crate::error::Error;
use cryptoki_sys::CKR_DEVICE_ERROR;

/// The forward migrations, in order; the schema version is their count.
const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite schema reached at its version 5, in one step.
    "CREATE TABLE pool_lock (id integer PRIMARY KEY CHECK (id = 1));
    INSERT INTO pool_lock (id) VALUES (1);
    CREATE TABLE token (
        id               integer PRIMARY KEY CHECK (id = 1),
        label            text    NOT NULL,
        created          bigint  NOT NULL,
        kdf_iterations   bigint  NOT NULL,
        retention_days   bigint  NOT NULL,
        so_salt          bytea   NOT NULL,
        so_wrapped       bytea   NOT NULL,
        user_salt        bytea,
        user_wrapped     bytea,
        so_failures      bigint  NOT NULL DEFAULT 0,
        user_failures    bigint  NOT NULL DEFAULT 0,
        purge_protection boolean NOT NULL DEFAULT false,
        attest_sealed    bytea,
        attest_public    bytea
    );
    -- An identity never hands a deleted row's id (an object handle) out again,
    -- not even after a re-initialisation.
    CREATE TABLE objects (
        id           bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name         text,
        name_lc      text,
        version      text,
        current      boolean NOT NULL DEFAULT true,
        attrs        text    NOT NULL,
        sealed       bytea,
        deleted_at   bigint,
        purge_at     bigint,
        label        bytea,
        public_label bytea,
        ckaid        bytea
    );
    CREATE INDEX objects_name_lc_current ON objects (name_lc, current);
    -- Lookup keys (NULL label: a row whose keys the pool has not filled in).
    CREATE INDEX objects_label ON objects (label);
    CREATE INDEX objects_public_label ON objects (public_label)
        WHERE public_label IS NOT NULL;
    CREATE INDEX objects_ckaid ON objects (ckaid);
    CREATE INDEX objects_version ON objects (version);
    -- Opening a pool asks whether any deleted key is due for purging.
    CREATE INDEX objects_purge_at ON objects (purge_at) WHERE purge_at IS NOT NULL;
    CREATE TABLE policies (
        name_lc text PRIMARY KEY,
        policy  text NOT NULL
    );
    -- The change log: every committed write of an object row is numbered by
    -- triggers (no write path can forget it); object id 0 stands for the token
    -- row made anew or its settings changed (a reload). `change_floor` holds
    -- the highest sequence number trimmed away: a reader behind it reloads.
    CREATE TABLE changes (
        seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        object_id bigint NOT NULL
    );
    CREATE TABLE change_floor (
        id    integer PRIMARY KEY CHECK (id = 1),
        floor bigint  NOT NULL
    );
    INSERT INTO change_floor (id, floor) VALUES (1, 0);
    CREATE FUNCTION softmhsm_object_logged() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO changes (object_id) VALUES (OLD.id);
        ELSE
            INSERT INTO changes (object_id) VALUES (NEW.id);
        END IF;
        RETURN NULL;
    END $$;
    CREATE FUNCTION softmhsm_token_logged() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO changes (object_id) VALUES (0);
        RETURN NULL;
    END $$;
    CREATE TRIGGER objects_logged AFTER INSERT OR UPDATE OR DELETE ON objects
        FOR EACH ROW EXECUTE FUNCTION softmhsm_object_logged();
    CREATE TRIGGER token_insert_logged AFTER INSERT ON token
        FOR EACH ROW EXECUTE FUNCTION softmhsm_token_logged();
    CREATE TRIGGER token_settings_logged
        AFTER UPDATE OF label, purge_protection, retention_days ON token
        FOR EACH ROW EXECUTE FUNCTION softmhsm_token_logged();",
    // 2: activation, as SQLite's version 6: a pool made with
    // `init --require-security-domain` stays provisioned until its security
    // domain is downloaded; every process sees the change (a token reload).
    "ALTER TABLE token ADD COLUMN provisioned boolean NOT NULL DEFAULT false;
    CREATE TRIGGER token_state_logged AFTER UPDATE OF provisioned ON token
        FOR EACH ROW EXECUTE FUNCTION softmhsm_token_logged();",
    // 3: local RBAC, as SQLite's version 7: principals with their own wrap of
    // the master key, role assignments, and change-log id -1 for "access
    // changed".
    "CREATE TABLE principals (
        name_lc   text   PRIMARY KEY,
        name      text   NOT NULL,
        object_id text   NOT NULL UNIQUE,
        created   bigint NOT NULL,
        salt      bytea  NOT NULL,
        wrapped   bytea  NOT NULL,
        kdf_iterations bigint NOT NULL,
        failures  bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE assignments (
        id           text   PRIMARY KEY,
        principal_lc text   NOT NULL,
        role_id      text   NOT NULL,
        scope        text   NOT NULL,
        scope_lc     text   NOT NULL,
        created      bigint NOT NULL,
        UNIQUE (principal_lc, role_id, scope_lc)
    );
    CREATE TABLE role_definitions (
        id          text   PRIMARY KEY,
        name        text   NOT NULL,
        name_lc     text   NOT NULL UNIQUE,
        description text   NOT NULL,
        actions     text   NOT NULL,
        created     bigint NOT NULL
    );
    CREATE FUNCTION softmhsm_access_logged() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO changes (object_id) VALUES (-1);
        RETURN NULL;
    END $$;
    CREATE TRIGGER principals_delete_logged AFTER DELETE ON principals
        FOR EACH ROW EXECUTE FUNCTION softmhsm_access_logged();
    CREATE TRIGGER assignments_logged AFTER INSERT OR DELETE ON assignments
        FOR EACH ROW EXECUTE FUNCTION softmhsm_access_logged();
    CREATE TRIGGER roles_logged AFTER INSERT OR DELETE ON role_definitions
        FOR EACH ROW EXECUTE FUNCTION softmhsm_access_logged();",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Bring the schema up to [`SCHEMA_VERSION`] in one transaction, under a
/// transaction-scoped advisory lock named after the schema: ten processes
/// opening a fresh database at once run each migration once (the others wait,
/// then find the work done). A database written by a newer build is refused
/// with `CKR_DEVICE_ERROR` rather than misread. A schema already up to date
/// runs no DDL, so a role without `CREATE` on the schema can use it.
pub(super) fn migrate(db: &mut Db) -> Result<(), Fail> {
    db.batch("BEGIN")?;
    let out = migrate_locked(db);
    let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
    match (out, db.batch(end)) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
    }
}

fn migrate_locked(db: &mut Db) -> Result<(), Fail> {
    db.query_one(
        "SELECT pg_advisory_xact_lock(hashtextextended('softmhsm schema ' || current_schema(), 0))",
        &[],
    )?;
    let exists: bool = db
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .try_get(0)?;
    let current: i32 = if exists {
        db.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
            .try_get(0)?
    } else {
        0
    };
    if current > SCHEMA_VERSION {
        log::error!("store schema version {current} is newer than this build's {SCHEMA_VERSION}");
        return Err(Fail::Rv(Error(CKR_DEVICE_ERROR)));
    }
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    if !exists {
        db.batch("CREATE TABLE schema_version (version integer NOT NULL)")?;
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        log::debug!("migrating store schema from version {from}");
        db.batch(sql)?;
    }
    db.execute("DELETE FROM schema_version", &[])?;
    db.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )?;
    Ok(())
}
