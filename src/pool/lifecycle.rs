//! The Managed HSM key lifecycle that PKCS#11 has no call for (DESIGN §8):
//! create, rotate, update, soft-delete, recover, purge, backup and restore,
//! applied to a pool's store. The admin CLI and `C_DestroyObject` both come
//! through the pool to here, so the rules hold the same way from both doors.
//!
//! Keys made here are the library's keys: the same record, sealed under the
//! same master key with the same AAD (the kid, [`policy::kid`]).

pub use crate::engine::lifecycle::*;

use super::objects::row_keys;
use crate::crypto;
use crate::engine::key::{random_hex_id, unhex, Body, KeyKind, KeyOps, KeyRecord, Record};
use crate::engine::policy;
use crate::engine::rules::{ml_dsa_pkcs8, possible_ops};
use crate::error::Error;
use crate::store::{DeletedRow, MasterKey, NewObject, ObjectRow, Store};
use cryptoki_sys::*;

/// The token label (the kid's authority); `CKR_TOKEN_NOT_RECOGNIZED` before init.
pub fn token_label(store: &dyn Store) -> Outcome<String> {
    Ok(store.token()?.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))?.label)
}

/// The records of every live version of `name`, oldest first.
pub fn versions(store: &dyn Store, name: &str) -> Outcome<Vec<KeyVersion>> {
    let rows = store.versions_of(name)?;
    rows.iter().map(key_version).collect()
}

/// The current version of every live key, in name order.
pub fn list(store: &dyn Store) -> Outcome<Vec<KeyVersion>> {
    let mut keys = Vec::new();
    for row in store.objects()? {
        if row.current && row.name.is_some() {
            keys.push(key_version(&row)?);
        }
    }
    keys.sort_by_key(|k| k.key.name.to_lowercase());
    Ok(keys)
}

/// The keys of a `versioning = "off"` token, which have no Managed HSM name
/// (each PKCS#11 key is a key of its own), in row order; other objects
/// (certificates, data) are left out.
pub fn unversioned_keys(store: &dyn Store) -> Outcome<Vec<KeyVersion>> {
    let mut keys = Vec::new();
    for row in store.objects()? {
        if row.name.is_none() && matches!(Record::from_json(&row.attrs)?.body, Body::Key(_)) {
            keys.push(key_version(&row)?);
        }
    }
    Ok(keys)
}

/// The key version whose `CKA_ID` is `id` (of `name` when given): of several,
/// the current one, else the newest — as a PKCS#11 find by `CKA_ID` answers.
pub fn show_by_id(store: &dyn Store, name: Option<&str>, id: &[u8]) -> Outcome<KeyVersion> {
    let ids = store.lookup(crate::store::Lookup::CkaId(id))?;
    let mut best: Option<(bool, i64, KeyVersion)> = None;
    for row in store.objects_by_ids(&ids)? {
        let Some(row_name) = &row.name else { continue };
        if name.is_some_and(|n| !n.eq_ignore_ascii_case(row_name)) {
            continue;
        }
        let rank = (row.current, row.id);
        if best.as_ref().is_none_or(|(c, i, _)| rank > (*c, *i)) {
            best = Some((rank.0, rank.1, key_version(&row)?));
        }
    }
    best.map(|(_, _, v)| v)
        .ok_or_else(|| Refusal::UnknownKey(format!("with id {}", hex(id))))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One version of `name` (the current one when `version` is None).
pub fn show(store: &dyn Store, name: &str, version: Option<&str>) -> Outcome<KeyVersion> {
    let row = find_row(store, name, version)?;
    key_version(&row)
}

/// Create a key named `name` (a new current version if the name exists), as
/// `C_GenerateKey*` does: generate, seal under `master` with AAD = kid, store.
pub fn create(
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
    spec: &KeySpec,
    now: i64,
) -> Outcome<KeyRecord> {
    create_replacing(store, master, name, spec, now, None)
}

/// [`create`], only while version `replaces` is current when given.
fn create_replacing(
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
    spec: &KeySpec,
    now: i64,
    replaces: Option<String>,
) -> Outcome<KeyRecord> {
    check_spec(name, spec)?;
    let (material, public) = generate(spec.kind)?;
    let gen = match spec.kind {
        KeyKind::Rsa(_) => CKM_RSA_PKCS_KEY_PAIR_GEN,
        KeyKind::Ec(_) => CKM_EC_KEY_PAIR_GEN,
        KeyKind::Aes(_) => CKM_AES_KEY_GEN,
        KeyKind::MlDsa(_) => CKM_ML_DSA_KEY_PAIR_GEN,
        KeyKind::MlKem(_) => CKM_ML_KEM_KEY_PAIR_GEN,
    };
    store_version(
        store,
        master,
        name,
        spec,
        &material,
        public,
        Some(gen),
        now,
        replaces,
    )
}

/// Import key material as `name` (a new current version if the name exists):
/// not generated here, so like a `C_CreateObject` import it is not local
/// (`CKA_LOCAL`, `CKA_ALWAYS_SENSITIVE`, `CKA_NEVER_EXTRACTABLE` FALSE), and
/// still sensitive and never extractable.
pub fn import(
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
    material: &Material,
    spec: &ImportSpec,
    now: i64,
) -> Outcome<KeyRecord> {
    let (kind, public) = inspect(material)?;
    let spec = KeySpec {
        kind,
        ops: spec.ops,
        tags: spec.tags.clone(),
        enabled: spec.enabled.unwrap_or(true),
        nbf: spec.nbf,
        exp: spec.exp,
        id: None,
    };
    check_spec(name, &spec)?;
    let (Material::Pkcs8(bytes) | Material::Aes(bytes)) = material;
    // An ML-DSA key is stored as its seed, as a generated one is.
    let bytes = match ml_dsa_pkcs8(bytes) {
        Some(Ok((_, seed))) => seed,
        _ => bytes,
    };
    store_version(store, master, name, &spec, bytes, public, None, now, None)
}

/// Seal `material` under `master` with AAD = kid and store it as a new current
/// version of `name`. `gen` is the generation mechanism of a key made here
/// (`CKA_LOCAL`); None for imported material.
#[allow(clippy::too_many_arguments)]
fn store_version(
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
    spec: &KeySpec,
    material: &[u8],
    public: Option<crypto::PublicKey>,
    gen: Option<CK_MECHANISM_TYPE>,
    now: i64,
    replaces: Option<String>,
) -> Outcome<KeyRecord> {
    let name = spelled_name(store, name)?;
    let version = random_hex_id()?;
    let key = KeyRecord {
        kind: spec.kind,
        name: name.clone(),
        version: version.clone(),
        public: public
            .as_ref()
            .map(crate::engine::key::StoredPublic::from_public),
        ops: spec.ops.unwrap_or_else(|| possible_ops(spec.kind)),
        enabled: spec.enabled,
        nbf: spec.nbf,
        exp: spec.exp,
        created: now,
        updated: now,
        tags: spec.tags.clone(),
        local: gen.is_some(),
        gen_mechanism: gen,
        public_private: false,
        public_label: None,
        public_hidden: false,
        private_hidden: false,
        allowed_mechanisms: None,
    };
    let rec = Record {
        body: Body::Key(key.clone()),
        label: name.clone().into_bytes(),
        // Java and libp11 pair keys and certificates by CKA_ID (as key_request does).
        id: match &spec.id {
            Some(id) => id.clone(),
            None => unhex(&version).unwrap_or_default(),
        },
        uid: random_hex_id()?,
        modifiable: true,
        destroyable: true,
    };
    insert_version(store, Some(master), &rec, Some(material), true, replaces)?;
    Ok(key)
}

/// The first spelling of a versioned name: names are unique
/// case-insensitively, and a new version keeps the spelling of the first.
pub fn spelled_name(store: &dyn Store, name: &str) -> Outcome<String> {
    Ok(store
        .versions_of(name)?
        .first()
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| name.to_string()))
}

/// The one path by which a token object enters the store: a key version made
/// by `C_GenerateKey*`, `C_CreateObject`, `C_UnwrapKey`, `key create`,
/// `key import`, a BYOK import or a rotation, or a certificate or data object.
/// A key's secret `material` is sealed under `master` with AAD = its kid; with
/// `versioned` the key becomes the current version of its name, under the
/// version cap, which the store checks inside the write transaction (so
/// racing processes cannot both pass it). `replaces`: insert only while that
/// version is still current (a rotation decided on what it read).
pub fn insert_version(
    store: &mut dyn Store,
    master: Option<&MasterKey>,
    rec: &Record,
    material: Option<&[u8]>,
    versioned: bool,
    replaces: Option<String>,
) -> Outcome<ObjectRow> {
    let (name, version, sealed) = match &rec.body {
        Body::Key(k) => {
            let sealed = match material {
                Some(m) => {
                    let master = master.ok_or(Error(CKR_USER_NOT_LOGGED_IN))?;
                    let label = token_label(store)?;
                    Some(master.seal(policy::kid(&label, k).as_bytes(), m)?)
                }
                None => None,
            };
            (
                versioned.then(|| k.name.clone()),
                Some(k.version.clone()),
                sealed,
            )
        }
        Body::Stored { .. } => (None, None, None),
    };
    let new = NewObject {
        name: name.clone(),
        version,
        attrs: rec.to_json()?,
        keys: row_keys(rec),
        sealed,
        max_versions: name.is_some().then_some(MAX_VERSIONS),
        replaces,
    };
    match store.insert_object(&new) {
        Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)) => {
            Err(Refusal::NameDeleted(name.unwrap_or_default()))
        }
        Err(Error(CKR_ACTION_PROHIBITED)) => {
            Err(Refusal::TooManyVersions(name.unwrap_or_default()))
        }
        other => other.map_err(Refusal::from),
    }
}

/// Rotate `name`: a new current version with the same type, size, ops and
/// tags, expiring after its rotation policy's `expiryTime` if it has one.
pub fn rotate(
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
    now: i64,
) -> Outcome<KeyRecord> {
    rotate_from(store, master, name, None, now)
}

/// [`rotate`]; with `from`, only while that version is still the current one
/// (`Refusal::Token(CKR_FUNCTION_REJECTED)` when another writer rotated first).
pub fn rotate_from(
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
    from: Option<&str>,
    now: i64,
) -> Outcome<KeyRecord> {
    let current = show(store, name, None)?.key;
    let spec = KeySpec {
        kind: current.kind,
        ops: Some(current.ops),
        tags: current.tags.clone(),
        enabled: true,
        nbf: None,
        exp: super::rotation::new_version_expiry(store, name, now)?,
        // A new version gets its own id.
        id: None,
    };
    let replaces = from.map(str::to_string);
    create_replacing(store, master, &current.name, &spec, now, replaces)
}

/// Change the attributes of one version of `name` (the current one by default).
pub fn update(
    store: &mut dyn Store,
    name: &str,
    version: Option<&str>,
    change: &KeyUpdate,
    now: i64,
) -> Outcome<KeyRecord> {
    let row = find_row(store, name, version)?;
    let mut rec = Record::from_json(&row.attrs)?;
    if !rec.modifiable {
        // A PKCS#11 application made it with CKA_MODIFIABLE=FALSE.
        return Err(Refusal::Invalid(format!("key '{name}' is not modifiable")));
    }
    let Body::Key(k) = &mut rec.body else {
        return Err(Refusal::UnknownKey(name.to_string()));
    };
    if let Some(ops) = change.ops {
        check_ops(k.kind, ops)?;
        // A KEK stays a KEK and no other key becomes one (as C_SetAttributeValue
        // refuses key_ops changes on a KEK).
        if (ops == KeyOps::IMPORT) != (k.ops == KeyOps::IMPORT) {
            return Err(Refusal::Invalid(
                "the 'import' operation cannot be added to or removed from an existing key"
                    .to_string(),
            ));
        }
        k.ops = ops;
    }
    if let Some(tags) = &change.tags {
        check_tags(tags)?;
        k.tags = tags.clone();
    }
    if let Some(enabled) = change.enabled {
        k.enabled = enabled;
    }
    if let Some(nbf) = change.nbf {
        k.nbf = nbf;
    }
    if let Some(exp) = change.exp {
        k.exp = exp;
    }
    check_window(k.nbf, k.exp)?;
    k.updated = now;
    let key = k.clone();
    store.update_attrs(row.id, &rec.to_json()?, &row_keys(&rec))?;
    Ok(key)
}

/// Soft-delete every version of `name` (`C_DestroyObject` of a token key and
/// `key delete`): hidden from PKCS#11, unusable, its name taken, until it is
/// recovered or purged (by hand, or at its scheduled purge date).
pub fn delete(store: &mut dyn Store, name: &str, now: i64) -> Outcome<DeletedKey> {
    delete_versions(store, name, now)?;
    deleted_key(store, name)?.ok_or_else(|| Refusal::UnknownKey(name.to_string()))
}

/// [`delete`], returning the row ids of the versions it soft-deleted.
pub fn delete_versions(store: &mut dyn Store, name: &str, now: i64) -> Outcome<Vec<i64>> {
    // A PKCS#11 application may have made a version with CKA_DESTROYABLE=FALSE.
    for row in store.versions_of(name)? {
        if !Record::from_json(&row.attrs)?.destroyable {
            return Err(Refusal::Invalid(format!(
                "key '{name}' has a version that is not destroyable"
            )));
        }
    }
    let ids = store.soft_delete_name(name, now)?;
    if ids.is_empty() {
        return Err(Refusal::UnknownKey(name.to_string()));
    }
    Ok(ids)
}

/// The soft-deleted key `name`, if there is one.
fn deleted_key(store: &dyn Store, name: &str) -> Outcome<Option<DeletedKey>> {
    store
        .deleted_name(name)?
        .as_ref()
        .map(deleted_of)
        .transpose()
}

/// A soft-deleted store row as the deleted key it stands for.
fn deleted_of(d: &DeletedRow) -> Outcome<DeletedKey> {
    Ok(DeletedKey {
        key: key_version(&d.row)?.key,
        deleted_at: d.deleted_at,
        purge_at: d.purge_at,
    })
}

/// Every soft-deleted key, in name order.
pub fn deleted(store: &dyn Store) -> Outcome<Vec<DeletedKey>> {
    store.deleted_names()?.iter().map(deleted_of).collect()
}

/// Bring a soft-deleted key back with every version.
/// A key deleted through PKCS#11 had its halves destroyed one by one (hidden,
/// material kept): it comes back whole.
pub fn recover(store: &mut dyn Store, name: &str) -> Outcome<KeyVersion> {
    // A half whose material was erased (an older build's private-half destroy)
    // stays hidden: there is nothing to bring back.
    let unhide = |attrs: &str, sealed: bool| {
        let mut rec = Record::from_json(attrs)?;
        match &mut rec.body {
            Body::Key(k) if sealed && (k.private_hidden || k.public_hidden) => {
                k.private_hidden = false;
                k.public_hidden = false;
                Ok(Some(rec.to_json()?))
            }
            _ => Ok(None),
        }
    };
    if store.recover_name_rewriting(name, &unhide)? == 0 {
        return Err(Refusal::NotDeleted(name.to_string()));
    }
    show(store, name, None)
}

/// Erase a soft-deleted key for good; refused under purge protection before
/// its scheduled purge date.
pub fn purge(store: &mut dyn Store, name: &str, now: i64) -> Outcome<()> {
    let purge_at = deleted_key(store, name)?
        .map(|d| d.purge_at)
        .ok_or_else(|| Refusal::NotDeleted(name.to_string()))?;
    match store.purge_name(name, now) {
        Ok(0) => Err(Refusal::NotDeleted(name.to_string())),
        Ok(_) => Ok(()),
        Err(Error(CKR_ACTION_PROHIBITED)) => {
            Err(Refusal::PurgeProtected(name.to_string(), purge_at))
        }
        Err(e) => Err(e.into()),
    }
}

/// First bytes of a key backup file.
const BACKUP_MAGIC: &[u8] = b"SOFTMHSM-KEY-BACKUP-1\n";

/// The backup's content, sealed whole under the master key (a key backup
/// holds one; a whole-pool backup one per key).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Backup {
    pub(crate) name: String,
    versions: Vec<BackupVersion>,
    /// The key's rotation policy (REST JSON); absent in backups made before
    /// policies were backed up, and for keys without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation_policy: Option<String>,
}

/// One version in a backup: its record and its material exactly as stored
/// (sealed under the master key, AAD = kid), so no key is ever in the clear.
#[derive(serde::Serialize, serde::Deserialize)]
struct BackupVersion {
    version: String,
    attrs: String,
    sealed: Option<String>,
}

/// The AAD of a backup of this pool: a blob from another pool or purpose does not open.
fn backup_aad(label: &str) -> Vec<u8> {
    format!("softmhsm key backup v1 {label}").into_bytes()
}

/// `key backup`: every version of `name` with its attributes, as one blob
/// sealed under the pool's master key. Like the Managed HSM's, it restores only
/// into the same pool (security domain).
pub fn backup(store: &dyn Store, master: &MasterKey, name: &str) -> Outcome<Vec<u8>> {
    let rows = store.versions_of(name)?;
    if rows.is_empty() {
        return Err(Refusal::UnknownKey(name.to_string()));
    }
    let label = token_label(store)?;
    let backup = key_backup(store, name, &rows)?;
    let json = serde_json::to_vec(&backup).map_err(|_| Error(CKR_GENERAL_ERROR))?;
    Ok(seal_backup(master, &label, &json)?)
}

/// The backup of one key from its rows (oldest first), material as stored.
pub(crate) fn key_backup(store: &dyn Store, name: &str, rows: &[ObjectRow]) -> Outcome<Backup> {
    Ok(Backup {
        name: rows[0].name.clone().unwrap_or_else(|| name.to_string()),
        versions: rows
            .iter()
            .map(|r| BackupVersion {
                version: r.version.clone().unwrap_or_default(),
                attrs: r.attrs.clone(),
                sealed: r.sealed.as_deref().map(crate::engine::key::hex),
            })
            .collect(),
        rotation_policy: store.rotation_policy(name)?,
    })
}

/// The blob of a backup's JSON for the pool labelled `label`: the magic, then
/// the JSON sealed under the master key. Public for the fuzz targets.
#[doc(hidden)]
pub fn seal_backup(master: &MasterKey, label: &str, json: &[u8]) -> Result<Vec<u8>, Error> {
    let mut blob = BACKUP_MAGIC.to_vec();
    blob.extend(master.seal(&backup_aad(label), json)?);
    Ok(blob)
}

/// A backup blob opened and checked, ready to go into the store.
#[derive(Debug)]
pub struct DecodedBackup {
    /// The key's name.
    pub name: String,
    /// One row per version, material still sealed as stored.
    pub rows: Vec<NewObject>,
    /// The record of the last version in the blob.
    pub last: KeyRecord,
    /// The key's rotation policy (REST JSON), checked by the policy rules.
    pub rotation_policy: Option<String>,
}

/// Open and check a backup blob made by [`backup`] in the pool labelled
/// `label`, without touching a store: every version must be a key of the
/// blob's name and its material must open under `master` with its own kid.
pub fn decode_backup(master: &MasterKey, label: &str, blob: &[u8]) -> Outcome<DecodedBackup> {
    let damaged = || Refusal::Invalid("the backup is damaged or not from this pool".to_string());
    let sealed = blob.strip_prefix(BACKUP_MAGIC).ok_or_else(damaged)?;
    let json = master
        .open(&backup_aad(label), sealed)
        .map_err(|_| damaged())?;
    let backup: Backup = serde_json::from_slice(&json).map_err(|_| damaged())?;
    decode_key(master, label, &backup)
}

/// Check one key of a backup: every version must be a key of the backup's
/// name and its material must open under `master` with its own kid.
pub(crate) fn decode_key(
    master: &MasterKey,
    label: &str,
    backup: &Backup,
) -> Outcome<DecodedBackup> {
    let damaged = || Refusal::Invalid("the backup is damaged or not from this pool".to_string());
    let mut rows = Vec::with_capacity(backup.versions.len());
    let mut last = None;
    for v in &backup.versions {
        let rec = Record::from_json(&v.attrs).map_err(|_| damaged())?;
        let key = rec.key().ok_or_else(damaged)?.clone();
        if key.name != backup.name || key.version != v.version {
            return Err(damaged());
        }
        let sealed = match &v.sealed {
            Some(h) => {
                let s = unhex(h).ok_or_else(damaged)?;
                // The material must open under this pool's key with its own kid.
                master
                    .open(policy::kid(label, &key).as_bytes(), &s)
                    .map_err(|_| damaged())?;
                Some(s)
            }
            None => None,
        };
        rows.push(NewObject {
            name: Some(backup.name.clone()),
            version: Some(v.version.clone()),
            attrs: v.attrs.clone(),
            keys: row_keys(&rec),
            sealed,
            ..Default::default()
        });
        last = Some(key);
    }
    let last = last.ok_or_else(damaged)?;
    let rotation_policy = match &backup.rotation_policy {
        Some(p) => Some(
            crate::engine::rotation::Policy::parse(p)
                .map_err(|_| damaged())?
                .to_json()
                .to_string(),
        ),
        None => None,
    };
    Ok(DecodedBackup {
        name: backup.name.clone(),
        rows,
        last,
        rotation_policy,
    })
}

/// `key restore`: bring back every version of a backed-up key. Refused if the
/// blob is damaged or from another pool, or if the name is taken (live or deleted).
pub fn restore(store: &mut dyn Store, master: &MasterKey, blob: &[u8]) -> Outcome<KeyRecord> {
    let label = token_label(store)?;
    let b = decode_backup(master, &label, blob)?;
    restore_decoded(store, b)
}

/// Put a checked key backup into the store; refused if the name is taken.
pub(crate) fn restore_decoded(store: &mut dyn Store, b: DecodedBackup) -> Outcome<KeyRecord> {
    match store.restore_versions(&b.rows, b.rotation_policy.as_deref()) {
        Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)) => Err(Refusal::Invalid(format!(
            "a key named '{}' already exists (deleted keys too): delete and purge it first",
            b.name
        ))),
        other => other.map(|_| b.last).map_err(Refusal::from),
    }
}

/// The row of one live version of `name`.
pub(crate) fn find_row(store: &dyn Store, name: &str, version: Option<&str>) -> Outcome<ObjectRow> {
    let rows = store.versions_of(name)?;
    let found = match version {
        Some(v) => rows.into_iter().find(|r| {
            r.version
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(v))
        }),
        None => rows.into_iter().find(|r| r.current),
    };
    found.ok_or_else(|| match version {
        Some(v) => Refusal::UnknownKey(format!("{name}/{v}")),
        None => Refusal::UnknownKey(name.to_string()),
    })
}

/// A store row as a key version.
fn key_version(row: &ObjectRow) -> Outcome<KeyVersion> {
    let rec = Record::from_json(&row.attrs)?;
    match rec.body {
        Body::Key(key) => Ok(KeyVersion {
            key,
            current: row.current,
            label: rec.label,
            id: rec.id,
        }),
        Body::Stored { .. } => Err(Refusal::UnknownKey(row.name.clone().unwrap_or_default())),
    }
}
