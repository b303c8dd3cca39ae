//! The Managed HSM key lifecycle's rules and types (DESIGN §2): what a key
//! spec, an update and an import may be, the refusals with their one-line
//! messages, and the RFC 3339 dates of the REST API. Pure: the pool service
//! (`crate::pool::lifecycle`) applies them to a store.

use crate::crypto::{self, SecretBytes};
use crate::engine::key::{KeyKind, KeyOps, KeyRecord};
use crate::engine::policy::{MAX_TAGS, MAX_TAG_LEN};
use crate::engine::rules::{self, possible_ops, AES_BYTES, RSA_BITS};
use crate::error::Error;
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
    /// The pool is provisioned: no key operation until its security domain
    /// has been downloaded (`init --require-security-domain`).
    Provisioned,
    /// The acting identity holds no role that grants the action here (local RBAC).
    Denied(String),
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
            Refusal::Provisioned => f.write_str(
                "the pool is waiting for its security domain to be downloaded (softmhsm security-domain download)",
            ),
            Refusal::Denied(why) => write!(f, "not permitted: {why}"),
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
    /// `CKA_ID` (None: the 16 bytes of the version id, so every version has its own).
    pub id: Option<Vec<u8>>,
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
    /// Its PKCS#11 `CKA_LABEL` (of the private/secret half).
    pub label: Vec<u8>,
    /// Its PKCS#11 `CKA_ID`.
    pub id: Vec<u8>,
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
pub fn check_kind(kind: KeyKind) -> Outcome<()> {
    let ok = match kind {
        KeyKind::Rsa(bits) => RSA_BITS.contains(&bits),
        KeyKind::Aes(bits) => bits % 8 == 0 && AES_BYTES.contains(&(bits / 8)),
        KeyKind::Ec(_) | KeyKind::MlDsa(_) | KeyKind::MlKem(_) => true,
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
pub fn check_ops(kind: KeyKind, ops: KeyOps) -> Outcome<()> {
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
pub fn check_window(nbf: Option<i64>, exp: Option<i64>) -> Outcome<()> {
    match (nbf, exp) {
        (Some(n), Some(e)) if n >= e => Err(Refusal::Invalid(
            "not-before must come before expires".to_string(),
        )),
        _ => Ok(()),
    }
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
    /// An RSA, EC or ML-DSA (seed form) private key, PKCS#8 `PrivateKeyInfo` DER.
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
            if let Some(ml_dsa) = rules::ml_dsa_pkcs8(der) {
                let (set, seed) = ml_dsa.map_err(|why| Refusal::Invalid(why.to_string()))?;
                let public = p.ml_dsa_private(set, seed)?.public();
                return Ok((KeyKind::MlDsa(set), Some(public)));
            }
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

/// The checks every new version passes: name, ops, tags, dates. (The version
/// cap depends on stored state: the store checks it inside the write transaction.)
pub fn check_spec(name: &str, spec: &KeySpec) -> Outcome<()> {
    if !crate::engine::key::is_valid_name(name.as_bytes()) {
        return Err(Refusal::BadName(name.to_string()));
    }
    check_kind(spec.kind)?;
    check_ops(
        spec.kind,
        spec.ops.unwrap_or_else(|| possible_ops(spec.kind)),
    )?;
    check_tags(&spec.tags)?;
    check_window(spec.nbf, spec.exp)
}

/// Generate key material and its public key.
pub fn generate(kind: KeyKind) -> Outcome<(SecretBytes, Option<crypto::PublicKey>)> {
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
        KeyKind::MlDsa(set) => {
            let seed = p.generate_ml_dsa(set)?;
            let public = p.ml_dsa_private(set, &seed)?.public();
            (seed, Some(public))
        }
        KeyKind::MlKem(set) => {
            let dk = p.generate_ml_kem(set)?;
            let public = p.ml_kem_private(set, &dk)?.public();
            (dk, Some(public))
        }
    })
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
