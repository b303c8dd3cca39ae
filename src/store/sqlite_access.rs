//! Principals and role assignments (schema v7, issue 13): each principal's
//! PIN wraps the master key under its own salt, with its own failure counter.

use super::{write_tx, FileSignal};
use crate::crypto::seal::MasterKey;
use crate::error::{Error, Result};
use crate::store::pin::principal_wrap;
use crate::store::{Assignment, PinSlot, Principal, PrincipalRecord, RoleRow};
use cryptoki_sys::CKR_TOKEN_NOT_RECOGNIZED;
use rusqlite::{params, Connection, OptionalExtension, Row};

fn principal(r: &Row<'_>) -> rusqlite::Result<Principal> {
    Ok(Principal {
        name: r.get(0)?,
        object_id: r.get(1)?,
        created: r.get(2)?,
    })
}

pub(super) fn principals(conn: &Connection) -> Result<Vec<Principal>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, object_id, created FROM principals ORDER BY name_lc")?;
    let rows = stmt.query_map([], principal)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn principal_pin(conn: &Connection, name: &str) -> Result<Option<(Principal, PinSlot)>> {
    let row = conn
        .prepare_cached(
            "SELECT p.name, p.object_id, p.created, p.salt, p.wrapped, p.failures, p.kdf_iterations
             FROM principals p, token t WHERE t.id = 1 AND p.name_lc = ?1",
        )?
        .query_row([name.to_lowercase()], |r| {
            Ok((
                principal(r)?,
                PinSlot {
                    salt: r.get(3)?,
                    wrapped: r.get(4)?,
                    failures: r.get(5)?,
                    kdf_iterations: r.get(6)?,
                },
            ))
        })
        .optional()?;
    Ok(row)
}

fn kdf_iterations(conn: &Connection) -> Result<u32> {
    conn.prepare_cached("SELECT kdf_iterations FROM token WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))
}

pub(super) fn add_principal(
    conn: &mut Connection,
    signal: &FileSignal,
    p: &Principal,
    master: &MasterKey,
    pin: &[u8],
) -> Result<bool> {
    let iterations = kdf_iterations(conn)?;
    let (salt, wrapped) = principal_wrap(master, &p.object_id, pin, iterations)?;
    let tx = write_tx(conn, signal)?;
    let added = insert_principal(
        &tx,
        &PrincipalRecord {
            principal: p.clone(),
            salt: salt.to_vec(),
            wrapped,
            kdf_iterations: iterations,
        },
    )?;
    tx.commit()?;
    Ok(added)
}

fn insert_principal(conn: &Connection, r: &PrincipalRecord) -> Result<bool> {
    let p = &r.principal;
    let n = conn
        .prepare_cached(
            "INSERT INTO principals (name_lc, name, object_id, created, salt, wrapped, kdf_iterations)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            p.name.to_lowercase(),
            p.name,
            p.object_id,
            p.created,
            r.salt,
            r.wrapped,
            r.kdf_iterations
        ])?;
    Ok(n == 1)
}

pub(super) fn set_principal_pin(
    conn: &mut Connection,
    signal: &FileSignal,
    name: &str,
    master: &MasterKey,
    pin: &[u8],
) -> Result<bool> {
    let Some((p, slot)) = principal_pin(conn, name)? else {
        return Ok(false);
    };
    let (salt, wrapped) = principal_wrap(master, &p.object_id, pin, slot.kdf_iterations)?;
    let tx = write_tx(conn, signal)?;
    let n = tx
        .prepare_cached(
            "UPDATE principals SET salt = ?1, wrapped = ?2, failures = 0
             WHERE name_lc = ?3 AND object_id = ?4",
        )?
        .execute(params![
            &salt[..],
            wrapped,
            name.to_lowercase(),
            p.object_id
        ])?;
    tx.commit()?;
    Ok(n == 1)
}

pub(super) fn count_principal_login(
    conn: &mut Connection,
    signal: &FileSignal,
    name: &str,
    success: bool,
) -> Result<()> {
    let tx = write_tx(conn, signal)?;
    let sql = if success {
        "UPDATE principals SET failures = 0 WHERE name_lc = ?1 AND failures <> 0"
    } else {
        "UPDATE principals SET failures = failures + 1 WHERE name_lc = ?1"
    };
    tx.prepare_cached(sql)?.execute([name.to_lowercase()])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn delete_principal(
    conn: &mut Connection,
    signal: &FileSignal,
    name: &str,
) -> Result<bool> {
    let tx = write_tx(conn, signal)?;
    let name_lc = name.to_lowercase();
    tx.prepare_cached("DELETE FROM assignments WHERE principal_lc = ?1")?
        .execute([&name_lc])?;
    let n = tx
        .prepare_cached("DELETE FROM principals WHERE name_lc = ?1")?
        .execute([&name_lc])?;
    tx.commit()?;
    Ok(n == 1)
}

pub(super) fn assignments(conn: &Connection) -> Result<Vec<Assignment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, COALESCE(p.name, a.principal_lc), a.role_id, a.scope, a.created
         FROM assignments a LEFT JOIN principals p ON p.name_lc = a.principal_lc
         ORDER BY a.created, a.rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Assignment {
            id: r.get(0)?,
            principal: r.get(1)?,
            role_id: r.get(2)?,
            scope: r.get(3)?,
            created: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn add_assignment(
    conn: &mut Connection,
    signal: &FileSignal,
    a: &Assignment,
) -> Result<bool> {
    let tx = write_tx(conn, signal)?;
    let added = insert_assignment(&tx, a)?;
    tx.commit()?;
    Ok(added)
}

fn insert_assignment(conn: &Connection, a: &Assignment) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO assignments (id, principal_lc, role_id, scope, scope_lc, created)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE EXISTS (SELECT 1 FROM principals WHERE name_lc = ?2)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            a.id,
            a.principal.to_lowercase(),
            a.role_id,
            a.scope,
            a.scope.to_lowercase(),
            a.created
        ])?;
    Ok(n == 1)
}

pub(super) fn delete_assignment(
    conn: &mut Connection,
    signal: &FileSignal,
    principal: &str,
    role_id: &str,
    scope: &str,
) -> Result<bool> {
    let tx = write_tx(conn, signal)?;
    let n = tx
        .prepare_cached(
            "DELETE FROM assignments WHERE principal_lc = ?1 AND role_id = ?2 AND scope_lc = ?3",
        )?
        .execute(params![
            principal.to_lowercase(),
            role_id,
            scope.to_lowercase()
        ])?;
    tx.commit()?;
    Ok(n == 1)
}

pub(super) fn role_definitions(conn: &Connection) -> Result<Vec<RoleRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, description, actions, created FROM role_definitions ORDER BY name_lc",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RoleRow {
            id: r.get(0)?,
            name: r.get(1)?,
            description: r.get(2)?,
            actions: r.get(3)?,
            created: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn add_role_definition(
    conn: &mut Connection,
    signal: &FileSignal,
    r: &RoleRow,
) -> Result<bool> {
    let tx = write_tx(conn, signal)?;
    let added = insert_role(&tx, r)?;
    tx.commit()?;
    Ok(added)
}

fn insert_role(conn: &Connection, r: &RoleRow) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO role_definitions (id, name, name_lc, description, actions, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            r.id,
            r.name,
            r.name.to_lowercase(),
            r.description,
            r.actions,
            r.created
        ])?;
    Ok(n == 1)
}

pub(super) fn restore_access(
    conn: &mut Connection,
    signal: &FileSignal,
    principals: &[PrincipalRecord],
    roles: &[RoleRow],
    assignments: &[Assignment],
) -> Result<(usize, usize, usize)> {
    let tx = write_tx(conn, signal)?;
    let mut added = (0, 0, 0);
    for p in principals {
        added.0 += usize::from(insert_principal(&tx, p)?);
    }
    for r in roles {
        added.1 += usize::from(insert_role(&tx, r)?);
    }
    for a in assignments {
        added.2 += usize::from(insert_assignment(&tx, a)?);
    }
    tx.commit()?;
    Ok(added)
}

pub(super) fn delete_role_definition(
    conn: &mut Connection,
    signal: &FileSignal,
    id: &str,
) -> Result<Option<usize>> {
    let tx = write_tx(conn, signal)?;
    let exists: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM role_definitions WHERE id = ?1)")?
        .query_row([id], |r| r.get(0))?;
    if !exists {
        return Ok(None);
    }
    let used: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM assignments WHERE role_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    if used == 0 {
        tx.prepare_cached("DELETE FROM role_definitions WHERE id = ?1")?
            .execute([id])?;
    }
    tx.commit()?;
    Ok(Some(usize::try_from(used).unwrap_or(usize::MAX)))
}
