//! Whole-pool backup and restore (`backup start`, `restore start`, as the
//! Managed HSM's full backup and selective key restore): every key with all
//! its versions, attributes, tags and rotation policy, every soft-deleted key
//! with its deletion date, and the certificates and data objects, in one blob
//! sealed under the master key with an AAD naming the pool label — that is,
//! under the security domain: it restores into the pool that made it and
//! into any pool that adopted its security domain, and nowhere else. Key
//! material stays sealed as stored (AAD = each version's kid) inside it.
//!
//! A soft-deleted key is backed up with every version (read through
//! [`Store::all_objects`], the one listing that includes deleted rows) and
//! restored deleted, keeping its deletion date; its purge date after a
//! restore is its deletion date plus the restoring pool's retention.
//! Local RBAC comes along: principals with their PIN wraps of the master key
//! (the same master key in every pool of this security domain), custom roles
//! and assignments; a restore keeps a principal or role of the same name that
//! the pool already has.
//! The restore writes one transaction per key: names are checked free before
//! the first write, so only a failure of the store itself leaves a partial
//! restore, and running it again refuses the names already restored.

use super::lifecycle::{
    decode_key, key_backup, restore_decoded, token_label, Backup, DecodedBackup,
};
use super::objects::row_keys;
use super::security_domain::is_exchange;
use crate::engine::key::{hex, unhex, Record};
use crate::engine::lifecycle::{Outcome, Refusal};
use crate::error::Error;
use crate::store::{Assignment, MasterKey, NewObject, Principal, PrincipalRecord, RoleRow, Store};
use cryptoki_sys::CKR_GENERAL_ERROR;
use serde::{Deserialize, Serialize};

/// First bytes of a whole-pool backup file.
const MAGIC: &[u8] = b"SOFTMHSM-POOL-BACKUP-1\n";

/// The AAD of a whole-pool backup of the pool labelled `label`.
fn aad(label: &str) -> Vec<u8> {
    format!("softmhsm pool backup v1 {label}").into_bytes()
}

/// The sealed content.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoolBackup {
    pool_id: String,
    created: i64,
    keys: Vec<Backup>,
    deleted: Vec<DeletedBackup>,
    objects: Vec<StoredObject>,
    /// Principals (with their wraps of the master key), custom roles and
    /// role assignments; absent from backups made before local RBAC.
    #[serde(default)]
    access: AccessBackup,
}

/// The pool's local RBAC state.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AccessBackup {
    principals: Vec<PrincipalBackup>,
    roles: Vec<RoleBackup>,
    assignments: Vec<AssignmentBackup>,
}

/// A principal and its credential: the master key wrapped under its PIN
/// (meaningful only to a pool holding the same security domain).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrincipalBackup {
    name: String,
    object_id: String,
    created: i64,
    salt: String,
    wrapped: String,
    kdf_iterations: u32,
}

/// A custom role definition.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RoleBackup {
    id: String,
    name: String,
    description: String,
    actions: String,
    created: i64,
}

/// A role assignment.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AssignmentBackup {
    id: String,
    principal: String,
    role_id: String,
    scope: String,
    created: i64,
}

/// A soft-deleted key and its dates.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeletedBackup {
    key: Backup,
    deleted_at: i64,
    purge_at: i64,
}

/// A certificate or data object: its record, and its sealed part if any.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredObject {
    attrs: String,
    sealed: Option<String>,
}

/// What a backup holds or a restore brought back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Live keys.
    pub keys: usize,
    /// Key versions, live keys and deleted ones.
    pub versions: usize,
    /// Soft-deleted keys.
    pub deleted: usize,
    /// Certificates and data objects.
    pub objects: usize,
    /// Principals (a restore keeps a principal of the same name here).
    pub principals: usize,
    /// Custom role definitions.
    pub roles: usize,
    /// Role assignments.
    pub assignments: usize,
}

/// `backup start`: the whole pool as one sealed blob.
pub fn backup(store: &dyn Store, master: &MasterKey, now: i64) -> Outcome<(Vec<u8>, Summary)> {
    let label = token_label(store)?;
    let mut content = PoolBackup {
        pool_id: label.clone(),
        created: now,
        keys: Vec::new(),
        deleted: Vec::new(),
        objects: Vec::new(),
        access: access_backup(store)?,
    };
    let mut summary = Summary {
        principals: content.access.principals.len(),
        roles: content.access.roles.len(),
        assignments: content.access.assignments.len(),
        ..Summary::default()
    };
    let mut names: Vec<String> = Vec::new();
    for row in store.objects()? {
        match &row.name {
            Some(name) => {
                if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    names.push(name.clone());
                }
            }
            None => {
                if Record::from_json(&row.attrs).is_ok_and(|r| is_exchange(&r)) {
                    continue;
                }
                content.objects.push(StoredObject {
                    attrs: row.attrs.clone(),
                    sealed: row.sealed.as_deref().map(hex),
                });
            }
        }
    }
    names.sort_by_key(|n| n.to_lowercase());
    for name in &names {
        let rows = store.versions_of(name)?;
        summary.versions += rows.len();
        content.keys.push(key_backup(store, name, &rows)?);
    }
    let deleted = store.deleted_names()?;
    let mut every = if deleted.is_empty() {
        Vec::new()
    } else {
        store.all_objects()?
    };
    for d in deleted {
        let name = d.row.name.clone().unwrap_or_default();
        // A deleted name has no live row (a deleted name is taken until
        // purged or recovered), so every row of that name is one of its
        // versions, oldest first (by id) as `versions_of` lists them.
        let (rows, rest): (Vec<_>, Vec<_>) = every.into_iter().partition(|r| {
            r.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&name))
        });
        every = rest;
        // Purged between the two reads: the row deleted_names gave stands.
        let rows = if rows.is_empty() { vec![d.row] } else { rows };
        summary.versions += rows.len();
        content.deleted.push(DeletedBackup {
            key: key_backup(store, &name, &rows)?,
            deleted_at: d.deleted_at,
            purge_at: d.purge_at,
        });
    }
    summary.keys = content.keys.len();
    summary.deleted = content.deleted.len();
    summary.objects = content.objects.len();
    let json = serde_json::to_vec(&content).map_err(|_| Error(CKR_GENERAL_ERROR))?;
    Ok((seal(master, &label, &json)?, summary))
}

/// The pool's principals, custom roles and assignments, for a backup.
fn access_backup(store: &dyn Store) -> Outcome<AccessBackup> {
    let mut principals = Vec::new();
    for p in store.principals()? {
        // Deleted between the two reads: not backed up.
        let Some((p, slot)) = store.principal_pin(&p.name)? else {
            continue;
        };
        let (Some(salt), Some(wrapped)) = (slot.salt, slot.wrapped) else {
            continue;
        };
        principals.push(PrincipalBackup {
            name: p.name,
            object_id: p.object_id,
            created: p.created,
            salt: hex(&salt),
            wrapped: hex(&wrapped),
            kdf_iterations: slot.kdf_iterations,
        });
    }
    let roles = store
        .role_definitions()?
        .into_iter()
        .map(|r| RoleBackup {
            id: r.id,
            name: r.name,
            description: r.description,
            actions: r.actions,
            created: r.created,
        })
        .collect();
    let assignments = store
        .assignments()?
        .into_iter()
        .map(|a| AssignmentBackup {
            id: a.id,
            principal: a.principal,
            role_id: a.role_id,
            scope: a.scope,
            created: a.created,
        })
        .collect();
    Ok(AccessBackup {
        principals,
        roles,
        assignments,
    })
}

/// The blob of a whole-pool backup's JSON for the pool labelled `label`: the
/// magic, then the JSON sealed under the master key. Public for the fuzz targets.
#[doc(hidden)]
pub fn seal(master: &MasterKey, label: &str, json: &[u8]) -> Result<Vec<u8>, Error> {
    let mut blob = MAGIC.to_vec();
    blob.extend(master.seal(&aad(label), json)?);
    Ok(blob)
}

/// A whole-pool backup opened and checked, ready to go into a store.
#[derive(Debug)]
pub struct Decoded {
    /// Live keys, each checked as a key backup is.
    pub keys: Vec<DecodedBackup>,
    /// Soft-deleted keys and their deletion dates.
    pub deleted: Vec<(DecodedBackup, i64)>,
    /// Certificates and data objects (none when one key was asked for).
    pub objects: Vec<NewObject>,
    /// Principals, custom roles, assignments (none when one key was asked for).
    pub access: (Vec<PrincipalRecord>, Vec<RoleRow>, Vec<Assignment>),
}

/// Open and check a blob made by [`backup`] in a pool with this security
/// domain (`master`, `label`), keeping the keys `only` names (all by
/// default), without touching a store.
pub fn decode(
    master: &MasterKey,
    label: &str,
    blob: &[u8],
    only: Option<&str>,
) -> Outcome<Decoded> {
    let damaged = || {
        Refusal::Invalid(
            "the backup is damaged, not a whole-pool backup, or from a pool with another security domain"
                .to_string(),
        )
    };
    let sealed = blob.strip_prefix(MAGIC).ok_or_else(damaged)?;
    let json = master.open(&aad(label), sealed).map_err(|_| damaged())?;
    let content: PoolBackup = serde_json::from_slice(&json).map_err(|_| damaged())?;
    if content.pool_id != label {
        return Err(damaged());
    }
    let mut names: Vec<String> = content
        .keys
        .iter()
        .map(|k| &k.name)
        .chain(content.deleted.iter().map(|d| &d.key.name))
        .map(|n| n.to_lowercase())
        .collect();
    let count = names.len();
    names.sort();
    names.dedup();
    if names.len() != count {
        return Err(damaged());
    }
    let wanted = |name: &str| only.is_none_or(|o| o.eq_ignore_ascii_case(name));
    let mut keys = Vec::new();
    for k in content.keys.iter().filter(|k| wanted(&k.name)) {
        keys.push(decode_key(master, label, k)?);
    }
    let mut deleted = Vec::new();
    for d in content.deleted.iter().filter(|d| wanted(&d.key.name)) {
        deleted.push((decode_key(master, label, &d.key)?, d.deleted_at));
    }
    let mut objects = Vec::new();
    if only.is_none() {
        for o in &content.objects {
            let rec = Record::from_json(&o.attrs).map_err(|_| damaged())?;
            if rec.key().is_some() {
                return Err(damaged());
            }
            let sealed = match &o.sealed {
                Some(h) => Some(unhex(h).ok_or_else(damaged)?),
                None => None,
            };
            objects.push(NewObject {
                attrs: o.attrs.clone(),
                keys: row_keys(&rec),
                sealed,
                ..Default::default()
            });
        }
    }
    let mut access = (Vec::new(), Vec::new(), Vec::new());
    if only.is_none() {
        let a = &content.access;
        for p in &a.principals {
            access.0.push(PrincipalRecord {
                principal: Principal {
                    name: p.name.clone(),
                    object_id: p.object_id.clone(),
                    created: p.created,
                },
                salt: unhex(&p.salt).ok_or_else(damaged)?,
                wrapped: unhex(&p.wrapped).ok_or_else(damaged)?,
                kdf_iterations: p.kdf_iterations,
            });
        }
        access.1 = a
            .roles
            .iter()
            .map(|r| RoleRow {
                id: r.id.clone(),
                name: r.name.clone(),
                description: r.description.clone(),
                actions: r.actions.clone(),
                created: r.created,
            })
            .collect();
        access.2 = a
            .assignments
            .iter()
            .map(|x| Assignment {
                id: x.id.clone(),
                principal: x.principal.clone(),
                role_id: x.role_id.clone(),
                scope: x.scope.clone(),
                created: x.created,
            })
            .collect();
    }
    Ok(Decoded {
        keys,
        deleted,
        objects,
        access,
    })
}

/// `restore start`: bring back every key (or only `only`) of a whole-pool
/// backup made in a pool with this security domain; the certificates and
/// data objects too when restoring everything. Refused, before any write,
/// if any of its key names is taken here (live or deleted).
pub fn restore(
    store: &mut dyn Store,
    master: &MasterKey,
    blob: &[u8],
    only: Option<&str>,
) -> Outcome<Summary> {
    let label = token_label(store)?;
    let Decoded {
        keys: live,
        deleted,
        objects,
        access,
    } = decode(master, &label, blob, only)?;
    if let Some(name) = only {
        if live.is_empty() && deleted.is_empty() {
            return Err(Refusal::UnknownKey(format!("{name} (not in the backup)")));
        }
    }
    let mut taken = Vec::new();
    for name in live
        .iter()
        .map(|b| &b.name)
        .chain(deleted.iter().map(|d| &d.0.name))
    {
        if !store.versions_of(name)?.is_empty() || store.deleted_name(name)?.is_some() {
            taken.push(name.clone());
        }
    }
    if !taken.is_empty() {
        return Err(Refusal::Invalid(format!(
            "keys with these names already exist (deleted keys too): {}; delete and purge them first",
            taken.join(", ")
        )));
    }
    let mut summary = Summary::default();
    for b in live {
        summary.versions += b.rows.len();
        summary.keys += 1;
        restore_decoded(store, b)?;
    }
    for (b, deleted_at) in deleted {
        let name = b.name.clone();
        summary.versions += b.rows.len();
        summary.deleted += 1;
        restore_decoded(store, b)?;
        store.soft_delete_name(&name, deleted_at)?;
    }
    for o in &objects {
        store.insert_object(o)?;
        summary.objects += 1;
    }
    // Principals and roles of the same name here are kept (and an
    // assignment of a principal kept here then gives it the backup's role).
    let (principals, roles, assignments) = access;
    (summary.principals, summary.roles, summary.assignments) =
        store.restore_access(&principals, &roles, &assignments)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::key::KeyKind;
    use crate::pool::lifecycle::{self, KeySpec};

    fn pool() -> (tempfile::TempDir, crate::store::SqliteStore, MasterKey) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let master = store.init_token("pool", b"12345678", 1000, 90).unwrap();
        (dir, store, master)
    }

    fn aes(store: &mut dyn Store, master: &MasterKey, name: &str) {
        let spec = KeySpec {
            kind: KeyKind::Aes(256),
            ops: None,
            tags: Default::default(),
            enabled: true,
            nbf: None,
            exp: None,
            id: None,
        };
        lifecycle::create(store, master, name, &spec, 1).unwrap();
    }

    #[test]
    fn a_backup_decodes_only_under_its_own_security_domain() {
        let (_d, mut store, master) = pool();
        aes(&mut store, &master, "a");
        aes(&mut store, &master, "b");
        lifecycle::delete(&mut store, "b", 5).unwrap();
        let (blob, summary) = backup(&store, &master, 10).unwrap();
        assert_eq!((summary.keys, summary.deleted, summary.versions), (1, 1, 2));
        let d = decode(&master, "pool", &blob, None).unwrap();
        assert_eq!((d.keys.len(), d.deleted.len()), (1, 1));
        assert_eq!(d.deleted[0].1, 5, "the deletion date");
        let other = MasterKey::generate().unwrap();
        assert!(
            decode(&other, "pool", &blob, None).is_err(),
            "another master key"
        );
        assert!(
            decode(&master, "other", &blob, None).is_err(),
            "another label"
        );
        let only = decode(&master, "pool", &blob, Some("B")).unwrap();
        assert_eq!((only.keys.len(), only.deleted.len()), (0, 1));
    }

    #[test]
    fn a_deleted_key_round_trips_with_every_version_and_its_date() {
        let (_d, mut store, master) = pool();
        aes(&mut store, &master, "old");
        lifecycle::rotate(&mut store, &master, "old", 2).unwrap();
        lifecycle::delete(&mut store, "old", 7).unwrap();
        let (blob, summary) = backup(&store, &master, 10).unwrap();
        assert_eq!((summary.deleted, summary.versions), (1, 2));

        let dir = tempfile::tempdir().unwrap();
        let mut other = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        other.init_token("pool", b"12345678", 1000, 90).unwrap();
        let restored = restore(&mut other, &master, &blob, None).unwrap();
        assert_eq!((restored.deleted, restored.versions), (1, 2));
        let gone = other.deleted_name("old").unwrap().unwrap();
        assert_eq!(gone.deleted_at, 7, "the deletion date is kept");
        assert!(
            other.versions_of("old").unwrap().is_empty(),
            "still deleted"
        );
        lifecycle::recover(&mut other, "old").unwrap();
        assert_eq!(lifecycle::versions(&other, "old").unwrap().len(), 2);
    }

    #[test]
    fn principals_roles_and_assignments_come_along_and_the_pin_still_opens() {
        let (_d, mut store, master) = pool();
        aes(&mut store, &master, "a");
        let p = Principal {
            name: "app1".into(),
            object_id: "3f0c-id".into(),
            created: 1,
        };
        assert!(store.add_principal(&p, &master, b"app1-pin").unwrap());
        let role = RoleRow {
            id: "role-1".into(),
            name: "Signer".into(),
            description: String::new(),
            actions: r#"["Microsoft.KeyVault/managedHsm/keys/sign/action"]"#.into(),
            created: 1,
        };
        assert!(store.add_role_definition(&role).unwrap());
        let a = Assignment {
            id: "as-1".into(),
            principal: "app1".into(),
            role_id: "role-1".into(),
            scope: "/keys/a".into(),
            created: 1,
        };
        assert!(store.add_assignment(&a).unwrap());
        let (blob, summary) = backup(&store, &master, 10).unwrap();
        assert_eq!(
            (summary.principals, summary.roles, summary.assignments),
            (1, 1, 1)
        );
        // Another pool of the same security domain (the same master key),
        // its own KDF cost.
        let dir = tempfile::tempdir().unwrap();
        let mut other = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        other.init_token("pool", b"12345678", 5000, 90).unwrap();
        let restored = restore(&mut other, &master, &blob, None).unwrap();
        assert_eq!(
            (restored.principals, restored.roles, restored.assignments),
            (1, 1, 1)
        );
        let (q, slot) = other.principal_pin("APP1").unwrap().unwrap();
        assert_eq!(q, p);
        let opened = crate::store::check_principal_pin(&q.object_id, &slot, b"app1-pin").unwrap();
        assert_eq!(
            opened
                .open(b"x", &master.seal(b"x", b"same key").unwrap())
                .unwrap()[..],
            b"same key"[..],
            "app1's PIN opens the same master key in the other pool"
        );
        assert_eq!(other.role_definitions().unwrap(), vec![role]);
        assert_eq!(other.assignments().unwrap(), vec![a]);
        // A second restore of the same blob: the names are taken.
        assert!(restore(&mut other, &master, &blob, None).is_err());
    }

    #[test]
    fn a_backup_naming_a_key_twice_is_refused() {
        let (_d, mut store, master) = pool();
        aes(&mut store, &master, "a");
        let rows = store.versions_of("a").unwrap();
        let one = key_backup(&store, "a", &rows).unwrap();
        let twice = PoolBackup {
            pool_id: "pool".into(),
            created: 0,
            keys: vec![one, key_backup(&store, "a", &rows).unwrap()],
            deleted: Vec::new(),
            objects: Vec::new(),
            access: AccessBackup::default(),
        };
        let blob = seal(&master, "pool", &serde_json::to_vec(&twice).unwrap()).unwrap();
        assert!(decode(&master, "pool", &blob, None).is_err());
    }
}
