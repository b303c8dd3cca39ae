//! The Managed HSM key lifecycle that PKCS#11 has no call for (DESIGN §6):
//! create, rotate, update, soft-delete, recover and purge, working directly on
//! a token's store. The admin CLI and `C_DestroyObject` both come through here,
//! so the rules hold the same way from both doors.
//!
//! Keys made here are the library's keys: the same record, sealed under the
//! same master key with the same AAD (the kid, [`policy::kid`]).

use crate::crypto::{self, SecretBytes};
use crate::engine::key::{random_hex_id, unhex, Body, KeyKind, KeyOps, KeyRecord, Record};
use crate::engine::policy::{self, MAX_TAGS, MAX_TAG_LEN};
use crate::engine::rules::{self, possible_ops, AES_BYTES, RSA_BITS};
use crate::error::Error;
use crate::store::{DeletedRow, MasterKey, NewObject, ObjectRow, Store};
use cryptoki_sys::*;
use std::collections::BTreeMap;
use std::fmt;

/// Most versions a name may have (the Managed HSM's limit for rotation).
pub const MAX_VERSIONS: usize = 100;

/// Why a lifecycle operation was refused; `Display` is a one-line message that
/// names the problem.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No live key has this name (or this version).
    UnknownKey(String),
    /// No soft-deleted key has this name.
    NotDeleted(String),
    /// The name is held by a soft-deleted key until it is purged or recovered.
    NameDeleted(String),
    /// The name breaks the naming rule.
    BadName(String),
    /// A request that breaks a Managed HSM rule (size, ops, tags, dates).
    Invalid(String),
    /// The name already has [`MAX_VERSIONS`] versions.
    TooManyVersions(String),
    /// Purge protection forbids purging before this date.
    PurgeProtected(String, i64),
    /// The token or store refused, with its `CK_RV`.
    Token(Error),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownKey(n) => write!(f, "unknown key '{n}'"),
            Refusal::NotDeleted(n) => write!(f, "no deleted key named '{n}'"),
            Refusal::NameDeleted(n) => write!(
                f,
                "the name '{n}' belongs to a deleted key: recover or purge it first"
            ),
            Refusal::BadName(n) => write!(
                f,
                "bad key name '{n}': use 1-127 characters of 0-9 a-z A-Z -"
            ),
            Refusal::Invalid(why) => f.write_str(why),
            Refusal::TooManyVersions(n) => {
                write!(f, "key '{n}' already has {MAX_VERSIONS} versions")
            }
            Refusal::PurgeProtected(n, at) => write!(
                f,
                "purge protection: key '{n}' cannot be purged before {}",
                rfc3339(*at)
            ),
            Refusal::Token(e) => write!(f, "token error {e:?}"),
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Token(e)
    }
}

/// Result of a lifecycle operation.
pub type Outcome<T> = std::result::Result<T, Refusal>;

/// A key as `key create` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Type and size.
    pub kind: KeyKind,
    /// `key_ops`; None = every op the key type can do.
    pub ops: Option<KeyOps>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf`.
    pub nbf: Option<i64>,
    /// `attributes.exp`.
    pub exp: Option<i64>,
}

/// What `key update` changes; None leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUpdate {
    /// New `enabled`.
    pub enabled: Option<bool>,
    /// New `nbf` (inner None clears it).
    pub nbf: Option<Option<i64>>,
    /// New `exp` (inner None clears it).
    pub exp: Option<Option<i64>>,
    /// New `key_ops`.
    pub ops: Option<KeyOps>,
    /// New tags (replace all, as the Managed HSM does).
    pub tags: Option<BTreeMap<String, String>>,
}

/// One key version as the lifecycle sees it.
#[derive(Clone, Debug)]
pub struct KeyVersion {
    /// The record.
    pub key: KeyRecord,
    /// Whether it is the current version of its name.
    pub current: bool,
}

/// A soft-deleted key (its current version).
#[derive(Clone, Debug)]
pub struct DeletedKey {
    /// The record of its current version.
    pub key: KeyRecord,
    /// `deletedDate`.
    pub deleted_at: i64,
    /// `scheduledPurgeDate`.
    pub purge_at: i64,
}

/// The token label (the kid's authority); `CKR_TOKEN_NOT_RECOGNIZED` before init.
pub fn token_label(store: &Store) -> Outcome<String> {
    Ok(store.token()?.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))?.label)
}

/// Check tags against the Managed HSM limits.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Outcome<()> {
    if tags.len() > MAX_TAGS {
        return Err(Refusal::Invalid(format!(
            "too many tags: {} (at most {MAX_TAGS})",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_LEN || v.chars().count() > MAX_TAG_LEN {
            return Err(Refusal::Invalid(format!(
                "bad tag '{k}': names are 1-{MAX_TAG_LEN} characters, values at most {MAX_TAG_LEN}"
            )));
        }
    }
    Ok(())
}

/// Check a key type and size against the Managed HSM tables.
fn check_kind(kind: KeyKind) -> Outcome<()> {
    let ok = match kind {
        KeyKind::Rsa(bits) => RSA_BITS.contains(&bits),
        KeyKind::Aes(bits) => bits % 8 == 0 && AES_BYTES.contains(&(bits / 8)),
        KeyKind::Ec(_) => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::Invalid(match kind {
            KeyKind::Rsa(b) => format!("bad RSA size {b}: use 2048, 3072 or 4096"),
            _ => "bad oct size: use 128, 192 or 256".to_string(),
        }))
    }
}

/// Check requested ops against what a key of `kind` can do. `import` makes
/// a BYOK key-exchange key (KEK): RSA only, and no other op beside it.
fn check_ops(kind: KeyKind, ops: KeyOps) -> Outcome<()> {
    if ops.contains(KeyOps::IMPORT) {
        if ops != KeyOps::IMPORT {
            return Err(Refusal::Invalid(
                "'import' excludes every other operation: a key-exchange key (KEK) only imports"
                    .to_string(),
            ));
        }
        if !matches!(kind, KeyKind::Rsa(_)) {
            return Err(Refusal::Invalid(
                "only RSA keys can have the 'import' operation (a BYOK key-exchange key)"
                    .to_string(),
            ));
        }
        return Ok(());
    }
    let possible = possible_ops(kind);
    if !possible.contains(ops) {
        let extra = ops.without(possible).names().join(" ");
        return Err(Refusal::Invalid(format!(
            "operations not possible for this key type: {extra}"
        )));
    }
    Ok(())
}

/// Check that `nbf` comes before `exp`.
fn check_window(nbf: Option<i64>, exp: Option<i64>) -> Outcome<()> {
    match (nbf, exp) {
        (Some(n), Some(e)) if n >= e => Err(Refusal::Invalid(
            "not-before must come before expires".to_string(),
        )),
        _ => Ok(()),
    }
}

/// The records of every live version of `name`, oldest first.
pub fn versions(store: &Store, name: &str) -> Outcome<Vec<KeyVersion>> {
    let rows = store.versions_of(name)?;
    rows.iter().map(key_version).collect()
}

/// The current version of every live key, in name order.
pub fn list(store: &Store) -> Outcome<Vec<KeyVersion>> {
    let mut keys = Vec::new();
    for row in store.objects()? {
        if row.current && row.name.is_some() {
            keys.push(key_version(&row)?);
        }
    }
    keys.sort_by_key(|k| k.key.name.to_lowercase());
    Ok(keys)
}

/// One version of `name` (the current one when `version` is None).
pub fn show(store: &Store, name: &str, version: Option<&str>) -> Outcome<KeyVersion> {
    let row = find_row(store, name, version)?;
    key_version(&row)
}

/// Create a key named `name` (a new current version if the name exists), as
/// `C_GenerateKey*` does: generate, seal under `master` with AAD = kid, store.
pub fn create(
    store: &mut Store,
    master: &MasterKey,
    name: &str,
    spec: &KeySpec,
    now: i64,
) -> Outcome<KeyRecord> {
    check_spec(store, name, spec)?;
    let (material, public) = generate(spec.kind)?;
    let gen = match spec.kind {
        KeyKind::Rsa(_) => CKM_RSA_PKCS_KEY_PAIR_GEN,
        KeyKind::Ec(_) => CKM_EC_KEY_PAIR_GEN,
        KeyKind::Aes(_) => CKM_AES_KEY_GEN,
    };
    store_version(store, master, name, spec, &material, public, Some(gen), now)
}

/// The attributes `key import` gives an imported key (its type and size come
/// from the material).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSpec {
    /// `key_ops`; None = every op the key type can do.
    pub ops: Option<KeyOps>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `attributes.enabled` (None = true).
    pub enabled: Option<bool>,
    /// `attributes.nbf`.
    pub nbf: Option<i64>,
    /// `attributes.exp`.
    pub exp: Option<i64>,
}

/// Key material to import.
pub enum Material {
    /// An RSA or EC private key, PKCS#8 `PrivateKeyInfo` DER.
    Pkcs8(SecretBytes),
    /// AES key bytes (JWK `oct`).
    Aes(SecretBytes),
}

/// The type, size and public key of key material, by the Managed HSM rules
/// (the same rules C_CreateObject and C_UnwrapKey apply: [`rules::pkcs8_kind`]).
pub fn inspect(material: &Material) -> Outcome<(KeyKind, Option<crypto::PublicKey>)> {
    let p = crypto::provider();
    match material {
        Material::Aes(k) => {
            let len = u32::try_from(k.len()).unwrap_or(u32::MAX);
            if !AES_BYTES.contains(&len) {
                return Err(Refusal::Invalid(format!(
                    "bad oct key length {} bytes: use 16, 24 or 32",
                    k.len()
                )));
            }
            Ok((KeyKind::Aes(len * 8), None))
        }
        Material::Pkcs8(der) => {
            let kind = rules::pkcs8_kind(der).map_err(|e| {
                Refusal::Invalid(match e {
                    Error(CKR_KEY_SIZE_RANGE) => {
                        "unsupported RSA key size: use 2048, 3072 or 4096".to_string()
                    }
                    Error(CKR_CURVE_NOT_SUPPORTED) => {
                        "unsupported curve: use P-256, P-256K, P-384 or P-521".to_string()
                    }
                    _ => "not an RSA or EC private key (PKCS#8)".to_string(),
                })
            })?;
            let bad = |_| Refusal::Invalid("the private key does not parse".to_string());
            let public = match kind {
                KeyKind::Ec(c) => p.ec_private(c, der).map_err(bad)?.public(),
                _ => p.rsa_private(der).map_err(bad)?.public(),
            };
            Ok((kind, Some(public)))
        }
    }
}

/// Import key material as `name` (a new current version if the name exists):
/// not generated here, so like a `C_CreateObject` import it is not local
/// (`CKA_LOCAL`, `CKA_ALWAYS_SENSITIVE`, `CKA_NEVER_EXTRACTABLE` FALSE), and
/// still sensitive and never extractable.
pub fn import(
    store: &mut Store,
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
    };
    check_spec(store, name, &spec)?;
    let (Material::Pkcs8(bytes) | Material::Aes(bytes)) = material;
    store_version(store, master, name, &spec, bytes, public, None, now)
}

/// The checks every new version passes: name, ops, tags, dates, version count.
fn check_spec(store: &Store, name: &str, spec: &KeySpec) -> Outcome<()> {
    if !crate::engine::key::is_valid_name(name.as_bytes()) {
        return Err(Refusal::BadName(name.to_string()));
    }
    check_kind(spec.kind)?;
    check_ops(
        spec.kind,
        spec.ops.unwrap_or_else(|| possible_ops(spec.kind)),
    )?;
    check_tags(&spec.tags)?;
    check_window(spec.nbf, spec.exp)?;
    if store.versions_of(name)?.len() >= MAX_VERSIONS {
        return Err(Refusal::TooManyVersions(name.to_string()));
    }
    Ok(())
}

/// Seal `material` under `master` with AAD = kid and store it as a new current
/// version of `name`. `gen` is the generation mechanism of a key made here
/// (`CKA_LOCAL`); None for imported material.
#[allow(clippy::too_many_arguments)]
fn store_version(
    store: &mut Store,
    master: &MasterKey,
    name: &str,
    spec: &KeySpec,
    material: &[u8],
    public: Option<crypto::PublicKey>,
    gen: Option<CK_MECHANISM_TYPE>,
    now: i64,
) -> Outcome<KeyRecord> {
    // Names are unique case-insensitively; a new version keeps the first spelling.
    let name = store
        .versions_of(name)?
        .first()
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| name.to_string());
    let label = token_label(store)?;
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
    let sealed = master.seal(policy::kid(&label, &key).as_bytes(), material);
    let rec = Record {
        body: Body::Key(key.clone()),
        label: name.clone().into_bytes(),
        // Java and libp11 pair keys and certificates by CKA_ID (as key_request does).
        id: unhex(&version).unwrap_or_default(),
        uid: random_hex_id()?,
        modifiable: true,
        destroyable: true,
    };
    let new = NewObject {
        name: Some(name.clone()),
        version: Some(version),
        attrs: rec.to_json()?,
        sealed: Some(sealed),
    };
    match store.insert_object(&new) {
        Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)) => Err(Refusal::NameDeleted(name)),
        other => other.map(|_| key).map_err(Refusal::from),
    }
}

/// Generate key material and its public key.
fn generate(kind: KeyKind) -> Outcome<(SecretBytes, Option<crypto::PublicKey>)> {
    let p = crypto::provider();
    Ok(match kind {
        KeyKind::Rsa(bits) => {
            let m = p.generate_rsa(bits as usize)?;
            let public = p.rsa_private(&m)?.public();
            (m, Some(public))
        }
        KeyKind::Ec(curve) => {
            let m = p.generate_ec(curve)?;
            let public = p.ec_private(curve, &m)?.public();
            (m, Some(public))
        }
        KeyKind::Aes(bits) => {
            let mut k = SecretBytes::new(vec![0u8; bits as usize / 8]);
            p.random(&mut k)?;
            (k, None)
        }
    })
}

/// Rotate `name`: a new current version with the same type, size, ops and
/// tags, expiring after its rotation policy's `expiryTime` if it has one.
pub fn rotate(store: &mut Store, master: &MasterKey, name: &str, now: i64) -> Outcome<KeyRecord> {
    let current = show(store, name, None)?.key;
    let spec = KeySpec {
        kind: current.kind,
        ops: Some(current.ops),
        tags: current.tags.clone(),
        enabled: true,
        nbf: None,
        exp: crate::engine::rotation::new_version_expiry(store, name, now)?,
    };
    create(store, master, &current.name, &spec, now)
}

/// Change the attributes of one version of `name` (the current one by default).
pub fn update(
    store: &mut Store,
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
    store.update_attrs(row.id, &rec.to_json()?)?;
    Ok(key)
}

/// Soft-delete every version of `name` (`C_DestroyObject` of a token key and
/// `key delete`): hidden from PKCS#11, unusable, its name taken, until it is
/// recovered or purged (by hand, or at its scheduled purge date).
pub fn delete(store: &mut Store, name: &str, now: i64) -> Outcome<DeletedKey> {
    delete_versions(store, name, now)?;
    deleted_key(store, name)?.ok_or_else(|| Refusal::UnknownKey(name.to_string()))
}

/// [`delete`], returning the row ids of the versions it soft-deleted.
pub fn delete_versions(store: &mut Store, name: &str, now: i64) -> Outcome<Vec<i64>> {
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
fn deleted_key(store: &Store, name: &str) -> Outcome<Option<DeletedKey>> {
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
pub fn deleted(store: &Store) -> Outcome<Vec<DeletedKey>> {
    store.deleted_names()?.iter().map(deleted_of).collect()
}

/// Bring a soft-deleted key back with every version.
/// A key deleted through PKCS#11 had its halves destroyed one by one (hidden,
/// material kept): it comes back whole.
pub fn recover(store: &mut Store, name: &str) -> Outcome<KeyVersion> {
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
    if store.recover_name_rewriting(name, unhide)? == 0 {
        return Err(Refusal::NotDeleted(name.to_string()));
    }
    show(store, name, None)
}

/// Erase a soft-deleted key for good; refused under purge protection before
/// its scheduled purge date.
pub fn purge(store: &mut Store, name: &str, now: i64) -> Outcome<()> {
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

/// The backup's content, sealed whole under the master key.
#[derive(serde::Serialize, serde::Deserialize)]
struct Backup {
    name: String,
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
pub fn backup(store: &Store, master: &MasterKey, name: &str) -> Outcome<Vec<u8>> {
    let rows = store.versions_of(name)?;
    if rows.is_empty() {
        return Err(Refusal::UnknownKey(name.to_string()));
    }
    let label = token_label(store)?;
    let backup = Backup {
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
    };
    let json = serde_json::to_vec(&backup).map_err(|_| Error(CKR_GENERAL_ERROR))?;
    Ok(seal_backup(master, &label, &json))
}

/// The blob of a backup's JSON for the pool labelled `label`: the magic, then
/// the JSON sealed under the master key. Public for the fuzz targets.
#[doc(hidden)]
pub fn seal_backup(master: &MasterKey, label: &str, json: &[u8]) -> Vec<u8> {
    let mut blob = BACKUP_MAGIC.to_vec();
    blob.extend(master.seal(&backup_aad(label), json));
    blob
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
            sealed,
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
        name: backup.name,
        rows,
        last,
        rotation_policy,
    })
}

/// `key restore`: bring back every version of a backed-up key. Refused if the
/// blob is damaged or from another pool, or if the name is taken (live or deleted).
pub fn restore(store: &mut Store, master: &MasterKey, blob: &[u8]) -> Outcome<KeyRecord> {
    let label = token_label(store)?;
    let b = decode_backup(master, &label, blob)?;
    match store.restore_versions(&b.rows, b.rotation_policy.as_deref()) {
        Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)) => Err(Refusal::Invalid(format!(
            "a key named '{}' already exists (deleted keys too): delete and purge it first",
            b.name
        ))),
        other => other.map(|_| b.last).map_err(Refusal::from),
    }
}

/// The row of one live version of `name`.
fn find_row(store: &Store, name: &str, version: Option<&str>) -> Outcome<ObjectRow> {
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
        }),
        Body::Stored { .. } => Err(Refusal::UnknownKey(row.name.clone().unwrap_or_default())),
    }
}

/// RFC 3339 UTC form of seconds since the epoch (`2026-11-23T10:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::engine::attributes::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parse RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if &tz[..1] == "-" {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = crate::engine::attributes::days_from_civil(y, mo, d);
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2030-01-01T00:00:00Z").map(rfc3339).unwrap(),
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(
            parse_rfc3339("2030-01-01T01:30:00+01:30"),
            parse_rfc3339("2030-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_rfc3339("2030-01-01T00:00:00.250Z"),
            parse_rfc3339("2030-01-01T00:00:00Z")
        );
    }

    #[test]
    fn malformed_dates_are_refused() {
        for s in [
            "",
            "2030-01-01",
            "2030-13-01T00:00:00Z",
            "2030-01-01T00:00:00",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn sixteen_tags_are_too_many() {
        let tags: BTreeMap<String, String> = (0..16)
            .map(|i| (format!("t{i}"), "v".to_string()))
            .collect();
        assert!(matches!(check_tags(&tags), Err(Refusal::Invalid(_))));
        let tags: BTreeMap<String, String> = tags.into_iter().take(15).collect();
        assert_eq!(check_tags(&tags), Ok(()));
    }

    #[test]
    fn import_is_exclusive_and_rsa_only() {
        let rsa = KeyKind::Rsa(2048);
        assert_eq!(check_ops(rsa, KeyOps::IMPORT), Ok(()));
        assert!(check_ops(rsa, KeyOps::IMPORT.with(KeyOps::SIGN)).is_err());
        assert!(check_ops(KeyKind::Ec(crypto::Curve::P256), KeyOps::IMPORT).is_err());
        assert!(check_ops(KeyKind::Aes(256), KeyOps::IMPORT).is_err());
    }

    #[test]
    fn ec_keys_cannot_encrypt() {
        let kind = KeyKind::Ec(crypto::Curve::P256);
        assert!(check_ops(kind, KeyOps::ENCRYPT).is_err());
        assert!(check_ops(kind, KeyOps::SIGN).is_ok());
    }
}
