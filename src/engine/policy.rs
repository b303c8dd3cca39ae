//! The attribute policy as data: which attributes each kind of object has, who
//! may set them and when, which are sensitive; and the readers/writers that
//! follow the table (C_GetAttributeValue, C_SetAttributeValue, key templates).

use super::attributes::{
    bool_bytes, date_bytes, decode_date, decode_ulong, now, ulong_bytes, vendor::*, Template,
};
use super::key::{
    hex, is_valid_name, random_hex_id, random_id, Body, KeyKind, KeyOps, KeyRecord, Record,
    StoredPublic,
};
use super::rules::{self, possible_ops};
use crate::crypto::spki;
use crate::error::{Error, Result};
use cryptoki_sys::*;
use std::collections::BTreeMap;

/// Which PKCS#11 object of a row an attribute belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The private key of a pair, a secret key, or a stored object.
    Main,
    /// The public key of a pair.
    Public,
}

/// Object kinds for the table.
const PRIV: u8 = 1;
const PUB: u8 = 2;
const SECRET: u8 = 4;
const KEYS: u8 = PRIV | PUB | SECRET;

/// Who may write an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Only the token sets it (`CKR_ATTRIBUTE_READ_ONLY` from a template).
    ReadOnly,
    /// Settable in a creation template, fixed afterwards.
    AtCreate,
    /// Settable at creation and by `C_SetAttributeValue`.
    Modifiable,
    /// Never revealed (`CKR_ATTRIBUTE_SENSITIVE`); given only on import.
    Sensitive,
}
use Access::*;

/// The key attribute table: type, the kinds of key that have it, access.
const KEY_ATTRS: &[(CK_ATTRIBUTE_TYPE, u8, Access)] = &[
    (CKA_CLASS, KEYS, AtCreate),
    (CKA_TOKEN, KEYS, AtCreate),
    (CKA_PRIVATE, KEYS, AtCreate),
    (CKA_LABEL, KEYS, Modifiable),
    (CKA_MODIFIABLE, KEYS, AtCreate),
    (CKA_COPYABLE, KEYS, AtCreate),
    (CKA_DESTROYABLE, KEYS, AtCreate),
    (CKA_UNIQUE_ID, KEYS, ReadOnly),
    (CKA_KEY_TYPE, KEYS, AtCreate),
    (CKA_ID, KEYS, Modifiable),
    (CKA_START_DATE, KEYS, Modifiable),
    (CKA_END_DATE, KEYS, Modifiable),
    (CKA_DERIVE, KEYS, AtCreate),
    (CKA_LOCAL, KEYS, ReadOnly),
    (CKA_KEY_GEN_MECHANISM, KEYS, ReadOnly),
    (CKA_ALLOWED_MECHANISMS, KEYS, AtCreate),
    (CKA_SUBJECT, PRIV | PUB, AtCreate),
    (CKA_PUBLIC_KEY_INFO, PRIV | PUB, ReadOnly),
    (CKA_SENSITIVE, PRIV | SECRET, Modifiable),
    (CKA_EXTRACTABLE, PRIV | SECRET, Modifiable),
    (CKA_ALWAYS_SENSITIVE, PRIV | SECRET, ReadOnly),
    (CKA_NEVER_EXTRACTABLE, PRIV | SECRET, ReadOnly),
    (CKA_WRAP_WITH_TRUSTED, PRIV | SECRET, AtCreate),
    (CKA_ALWAYS_AUTHENTICATE, PRIV, AtCreate),
    (CKA_SIGN, PRIV | SECRET, Modifiable),
    (CKA_SIGN_RECOVER, PRIV, AtCreate),
    (CKA_DECRYPT, PRIV | SECRET, Modifiable),
    (CKA_UNWRAP, PRIV | SECRET, Modifiable),
    (CKA_VERIFY, PUB | SECRET, Modifiable),
    (CKA_VERIFY_RECOVER, PUB, AtCreate),
    (CKA_ENCRYPT, PUB | SECRET, Modifiable),
    (CKA_WRAP, PUB | SECRET, Modifiable),
    (CKA_TRUSTED, PUB | SECRET, AtCreate),
    (CKA_MODULUS, PRIV | PUB, AtCreate),
    (CKA_MODULUS_BITS, PRIV | PUB, AtCreate),
    (CKA_PUBLIC_EXPONENT, PRIV | PUB, AtCreate),
    (CKA_PRIVATE_EXPONENT, PRIV, Sensitive),
    (CKA_PRIME_1, PRIV, Sensitive),
    (CKA_PRIME_2, PRIV, Sensitive),
    (CKA_EXPONENT_1, PRIV, Sensitive),
    (CKA_EXPONENT_2, PRIV, Sensitive),
    (CKA_COEFFICIENT, PRIV, Sensitive),
    (CKA_EC_PARAMS, PRIV | PUB, AtCreate),
    (CKA_EC_POINT, PRIV | PUB, AtCreate),
    (CKA_VALUE, PRIV | SECRET, Sensitive),
    // PKCS#11 3.2 §6.67.2: an ML-DSA public key's value is its encoded key.
    (CKA_VALUE, PUB, ReadOnly),
    (CKA_PARAMETER_SET, PRIV | PUB, AtCreate),
    // PKCS#11 3.2 ML-KEM: the key transport ops, read from wrapKey/unwrapKey.
    (CKA_ENCAPSULATE, PUB, Modifiable),
    (CKA_DECAPSULATE, PRIV, Modifiable),
    // The ML-DSA private key's seed: as sensitive as CKA_VALUE.
    (CKA_SEED, PRIV, Sensitive),
    (CKA_VALUE_LEN, SECRET, AtCreate),
    (CKA_SOFTMHSM_NAME, KEYS, ReadOnly),
    (CKA_SOFTMHSM_VERSION, KEYS, ReadOnly),
    (CKA_SOFTMHSM_KID, KEYS, ReadOnly),
    (CKA_SOFTMHSM_ENABLED, KEYS, Modifiable),
    (CKA_SOFTMHSM_NBF, KEYS, Modifiable),
    (CKA_SOFTMHSM_EXP, KEYS, Modifiable),
    (CKA_SOFTMHSM_CREATED, KEYS, ReadOnly),
    (CKA_SOFTMHSM_UPDATED, KEYS, ReadOnly),
    (CKA_SOFTMHSM_IMPORT, PRIV | PUB, AtCreate),
    (CKA_SOFTMHSM_TAGS, KEYS, Modifiable),
    (CKA_SOFTMHSM_CURRENT, KEYS, ReadOnly),
    (CKA_SOFTMHSM_RECOVERY_LEVEL, KEYS, ReadOnly),
];

/// The attributes of certificates (X.509) and data objects besides the common ones.
const CERT_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CERTIFICATE_TYPE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_CHECK_VALUE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_PUBLIC_KEY_INFO,
    CKA_SUBJECT,
    CKA_ID,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_VALUE,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_NAME_HASH_ALGORITHM,
];
const DATA_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE];
/// Attributes of every object (the storage class).
const COMMON_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_UNIQUE_ID,
];

/// Tag limits of the Managed HSM.
pub const MAX_TAGS: usize = 15;
/// Longest tag name or value, in characters.
pub const MAX_TAG_LEN: usize = 256;

/// The kind bit of a key part, for the table.
fn kind_bit(kind: KeyKind, part: Part) -> u8 {
    match (kind.is_pair(), part) {
        (false, _) => SECRET,
        (true, Part::Main) => PRIV,
        (true, Part::Public) => PUB,
    }
}

fn key_access(ty: CK_ATTRIBUTE_TYPE, bit: u8) -> Option<Access> {
    KEY_ATTRS
        .iter()
        .find(|(t, kinds, _)| *t == ty && kinds & bit != 0)
        .map(|(_, _, a)| *a)
}

/// The outcome for one attribute of a `C_GetAttributeValue` call.
#[derive(Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// The value.
    Value(Vec<u8>),
    /// The object has it but will not reveal it (`CKR_ATTRIBUTE_SENSITIVE`).
    Sensitive,
    /// The object has no such attribute (`CKR_ATTRIBUTE_TYPE_INVALID`).
    Invalid,
}

/// What the getter needs besides the record.
pub struct View<'a> {
    /// The stored record.
    pub rec: &'a Record,
    /// Which object of the row.
    pub part: Part,
    /// Token object or session object.
    pub token: bool,
    /// Whether the row is the current version of its name.
    pub current: bool,
    /// The token label (for the kid).
    pub token_label: &'a str,
    /// The token's deletion settings (for the recovery level).
    pub recovery: Recovery,
}

/// C_GetAttributeValue for one attribute (PKCS#11 3.1 §5.7.5 rules are applied by the caller).
pub fn get_attribute(v: &View<'_>, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
    use AttrValue::*;
    let rec = v.rec;
    match &rec.body {
        Body::Key(k) => key_attribute(v, k, ty),
        Body::Stored {
            class,
            private,
            attrs,
        } => {
            let allowed = match *class {
                CKO_CERTIFICATE => CERT_ATTRS,
                _ => DATA_ATTRS,
            };
            match ty {
                CKA_CLASS => Value(ulong_bytes(*class)),
                CKA_TOKEN => Value(bool_bytes(v.token)),
                CKA_PRIVATE => Value(bool_bytes(*private)),
                CKA_LABEL => Value(rec.label.clone()),
                CKA_MODIFIABLE => Value(bool_bytes(rec.modifiable)),
                CKA_COPYABLE => Value(bool_bytes(false)),
                CKA_DESTROYABLE => Value(bool_bytes(rec.destroyable)),
                CKA_UNIQUE_ID => Value(rec.uid.clone().into_bytes()),
                CKA_ID if *class == CKO_CERTIFICATE => Value(rec.id.clone()),
                t if allowed.contains(&t) => match attrs.get(&t) {
                    Some(val) => Value(val.clone()),
                    None => match t {
                        CKA_TRUSTED => Value(bool_bytes(false)),
                        CKA_CERTIFICATE_CATEGORY | CKA_JAVA_MIDP_SECURITY_DOMAIN => {
                            Value(ulong_bytes(0))
                        }
                        CKA_NAME_HASH_ALGORITHM => Value(ulong_bytes(CKM_SHA_1)),
                        _ => Value(Vec::new()),
                    },
                },
                _ => Invalid,
            }
        }
    }
}

fn key_attribute(v: &View<'_>, k: &KeyRecord, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
    use AttrValue::*;
    let rec = v.rec;
    let bit = kind_bit(k.kind, v.part);
    let Some(access) = key_access(ty, bit) else {
        return Invalid;
    };
    if access == Access::Sensitive {
        return AttrValue::Sensitive;
    }
    let public = || k.public.as_ref().and_then(|p| p.to_public(k.kind).ok());
    let op = |op: KeyOps| Value(bool_bytes(k.ops.contains(op)));
    let date = |t: Option<i64>| Value(t.map(date_bytes).unwrap_or_default());
    let secs = |t: Option<i64>| Value(ulong_bytes(t.unwrap_or(0).max(0) as CK_ULONG));
    match ty {
        CKA_CLASS => Value(ulong_bytes(match bit {
            PRIV => CKO_PRIVATE_KEY,
            PUB => CKO_PUBLIC_KEY,
            _ => CKO_SECRET_KEY,
        })),
        CKA_TOKEN => Value(bool_bytes(v.token)),
        CKA_PRIVATE => Value(bool_bytes(bit != PUB || k.public_private)),
        CKA_ALLOWED_MECHANISMS => {
            // Each object lists what its own half does: the public half
            // verifies, encrypts and wraps; the private half the rest.
            let ops = match bit {
                PUB => KeyOps(k.ops.0 & PUBLIC_OPS.0),
                PRIV => k.ops.without(PUBLIC_OPS),
                _ => k.ops,
            };
            Value(mechanism_bytes(&allowed_mechanisms(k, ops)))
        }
        CKA_LABEL => Value(match (&k.public_label, bit) {
            (Some(l), PUB) => l.clone(),
            _ => rec.label.clone(),
        }),
        CKA_MODIFIABLE => Value(bool_bytes(rec.modifiable)),
        CKA_COPYABLE => Value(bool_bytes(false)),
        CKA_DESTROYABLE => Value(bool_bytes(rec.destroyable)),
        CKA_UNIQUE_ID => Value(match bit {
            PUB => format!("{}.pub", rec.uid).into_bytes(),
            _ => rec.uid.clone().into_bytes(),
        }),
        CKA_KEY_TYPE => Value(ulong_bytes(k.kind.key_type())),
        CKA_ID => Value(rec.id.clone()),
        CKA_START_DATE => date(k.nbf),
        // exp is exclusive; CKA_END_DATE names the last day the key is valid.
        CKA_END_DATE => date(k.exp.map(|e| e - 1)),
        CKA_DERIVE
        | CKA_SIGN_RECOVER
        | CKA_VERIFY_RECOVER
        | CKA_TRUSTED
        | CKA_WRAP_WITH_TRUSTED
        | CKA_ALWAYS_AUTHENTICATE
        | CKA_EXTRACTABLE => Value(bool_bytes(false)),
        CKA_LOCAL => Value(bool_bytes(k.local)),
        CKA_KEY_GEN_MECHANISM => Value(ulong_bytes(
            k.gen_mechanism.unwrap_or(CK_UNAVAILABLE_INFORMATION),
        )),
        CKA_SUBJECT => Value(Vec::new()),
        CKA_PUBLIC_KEY_INFO => Value(public().map(|p| spki::spki_der(&p)).unwrap_or_default()),
        CKA_SENSITIVE => Value(bool_bytes(true)),
        CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE => Value(bool_bytes(k.local)),
        CKA_SIGN => op(KeyOps::SIGN),
        CKA_VERIFY => op(KeyOps::VERIFY),
        CKA_ENCRYPT => op(KeyOps::ENCRYPT),
        CKA_DECRYPT => op(KeyOps::DECRYPT),
        CKA_WRAP => op(KeyOps::WRAP),
        CKA_UNWRAP => op(KeyOps::UNWRAP),
        CKA_SOFTMHSM_IMPORT => op(KeyOps::IMPORT),
        CKA_MODULUS | CKA_PUBLIC_EXPONENT | CKA_MODULUS_BITS => match public() {
            Some(crate::crypto::PublicKey::Rsa { n, e }) => Value(match ty {
                CKA_MODULUS => n,
                CKA_PUBLIC_EXPONENT => e,
                _ => ulong_bytes(crate::crypto::PublicKey::Rsa { n, e }.bits() as CK_ULONG),
            }),
            _ => Invalid,
        },
        CKA_EC_PARAMS => match k.kind {
            KeyKind::Ec(c) => Value(c.oid_der().to_vec()),
            _ => Invalid,
        },
        CKA_EC_POINT => match public() {
            Some(crate::crypto::PublicKey::Ec { point, .. }) => Value(spki::ec_point_der(&point)),
            _ => Invalid,
        },
        CKA_VALUE => match public() {
            Some(
                crate::crypto::PublicKey::MlDsa { key, .. }
                | crate::crypto::PublicKey::MlKem { key, .. },
            ) => Value(key),
            _ => Invalid,
        },
        CKA_PARAMETER_SET => match k.kind {
            KeyKind::MlDsa(set) => Value(ulong_bytes(set.parameter_set())),
            KeyKind::MlKem(set) => Value(ulong_bytes(set.parameter_set())),
            _ => Invalid,
        },
        CKA_ENCAPSULATE | CKA_DECAPSULATE if !matches!(k.kind, KeyKind::MlKem(_)) => {
            Value(bool_bytes(false))
        }
        CKA_ENCAPSULATE => op(KeyOps::WRAP),
        CKA_DECAPSULATE => op(KeyOps::UNWRAP),
        CKA_VALUE_LEN => match k.kind {
            KeyKind::Aes(bits) => Value(ulong_bytes((bits / 8) as CK_ULONG)),
            _ => Invalid,
        },
        CKA_SOFTMHSM_NAME => Value(k.name.clone().into_bytes()),
        CKA_SOFTMHSM_VERSION => Value(k.version.clone().into_bytes()),
        CKA_SOFTMHSM_KID => Value(kid(v.token_label, k).into_bytes()),
        CKA_SOFTMHSM_ENABLED => Value(bool_bytes(k.enabled)),
        CKA_SOFTMHSM_NBF => secs(k.nbf),
        CKA_SOFTMHSM_EXP => secs(k.exp),
        CKA_SOFTMHSM_CREATED => secs(Some(k.created)),
        CKA_SOFTMHSM_UPDATED => secs(Some(k.updated)),
        CKA_SOFTMHSM_TAGS => Value(serde_json::to_vec(&k.tags).unwrap_or_default()),
        CKA_SOFTMHSM_CURRENT => Value(bool_bytes(v.current)),
        CKA_SOFTMHSM_RECOVERY_LEVEL => {
            Value(recovery_level(v.token, v.recovery).as_bytes().to_vec())
        }
        _ => Invalid,
    }
}

/// A pool's deletion settings: together they decide its keys' `recoveryLevel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Purge protection (once on, never off).
    pub purge_protection: bool,
    /// Soft-delete retention in days (7–90).
    pub retention_days: u32,
}

impl Default for Recovery {
    /// The Managed HSM's defaults: 90 days, no purge protection.
    fn default() -> Recovery {
        Recovery {
            purge_protection: false,
            retention_days: 90,
        }
    }
}

/// The Managed HSM `recoveryLevel` of a key (its `DeletionRecoveryLevel`),
/// the one answer for `CKA_SOFTMHSM_RECOVERY_LEVEL` and the CLI's JSON.
/// Token keys are always soft-deleted: `Recoverable` when purge protection
/// forbids a purge, `+Purgeable` when it does not; `Customized` when the
/// retention is shorter than the default 90 days. Session keys are gone when
/// destroyed: `Purgeable`.
pub fn recovery_level(token: bool, r: Recovery) -> &'static str {
    match (token, r.purge_protection, r.retention_days < 90) {
        (false, _, _) => "Purgeable",
        (true, true, false) => "Recoverable",
        (true, true, true) => "CustomizedRecoverable",
        (true, false, false) => "Recoverable+Purgeable",
        (true, false, true) => "CustomizedRecoverable+Purgeable",
    }
}

/// `softmhsm://<token-label>/keys/<name>/<version>`.
pub fn kid(token_label: &str, k: &KeyRecord) -> String {
    format!("softmhsm://{token_label}/keys/{}/{}", k.name, k.version)
}

/// A key as the templates of `C_GenerateKey`/`C_GenerateKeyPair` describe it.
#[derive(Debug)]
pub struct KeyRequest {
    /// Type and size (decided from the templates).
    pub kind: KeyKind,
    /// `CKA_TOKEN`.
    pub token: bool,
    /// The record to store (public key filled in after generation).
    pub record: Record,
}

/// Read the key templates of a generation request (PKCS#11 3.1 §5.14): every
/// attribute must be one the key has (`CKR_ATTRIBUTE_TYPE_INVALID`) and
/// settable (`CKR_ATTRIBUTE_READ_ONLY`); Managed HSM keys are always sensitive
/// and never extractable (`CKR_ATTRIBUTE_VALUE_INVALID` otherwise).
/// `public` is None for secret keys.
pub fn key_request(
    mechanism: CK_MECHANISM_TYPE,
    public: Option<&Template>,
    private: &Template,
) -> Result<KeyRequest> {
    let kind = requested_kind(mechanism, public, private)?;
    let parts: Vec<(&Template, Part)> = match public {
        Some(p) => vec![(p, Part::Public), (private, Part::Main)],
        None => vec![(private, Part::Main)],
    };
    let mut ops = KeyOps::default();
    let mut denied = KeyOps::default();
    let mut import = false;
    for (t, part) in &parts {
        let bit = kind_bit(kind, *part);
        check_template(t, bit, true)?;
        let want_class = match bit {
            PRIV => CKO_PRIVATE_KEY,
            PUB => CKO_PUBLIC_KEY,
            _ => CKO_SECRET_KEY,
        };
        if t.get_ulong(CKA_CLASS)?.is_some_and(|c| c != want_class)
            || t.get_ulong(CKA_KEY_TYPE)?
                .is_some_and(|c| c != kind.key_type())
        {
            return Err(Error(CKR_TEMPLATE_INCONSISTENT));
        }
        // Exporting is a capability no Managed HSM key has: refused outright.
        // CKA_SENSITIVE=FALSE, CKA_PRIVATE=FALSE (on private parts) and
        // CKA_DERIVE=TRUE are what `pkcs11-tool --keygen/--keypairgen` sends by
        // default; the token answers with a key that is more protected than asked
        // (always sensitive and private, no derivation) instead of refusing, and
        // reports the true values afterwards. Nothing is revealed either way.
        if t.get_bool(CKA_EXTRACTABLE)? == Some(true) {
            return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        for ty in [
            CKA_SIGN_RECOVER,
            CKA_VERIFY_RECOVER,
            CKA_TRUSTED,
            CKA_WRAP_WITH_TRUSTED,
            CKA_ALWAYS_AUTHENTICATE,
            CKA_COPYABLE,
        ] {
            if t.get_bool(ty)? == Some(true) {
                return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
            }
        }
        for (ty, op) in op_attrs(kind) {
            match t.get_bool(ty)? {
                Some(true) => ops = ops.with(op),
                Some(false) => denied = denied.with(op),
                None => {}
            }
        }
        import |= t.get_bool(CKA_SOFTMHSM_IMPORT)? == Some(true);
    }
    // Client libraries ask for operations a key type cannot do by default
    // (python-pkcs11 gives AES keys CKA_SIGN/CKA_VERIFY, for CMAC): as with
    // CKA_DERIVE, the key is made without them and reports them FALSE.
    // C_SetAttributeValue, an explicit request, still refuses them.
    let possible = possible_ops(kind);
    let ops = KeyOps(ops.0 & possible.0);
    let ops = if import {
        // A key-exchange key does nothing but import (BYOK).
        if !matches!(kind, KeyKind::Rsa(_)) || ops != KeyOps::default() {
            return Err(Error(CKR_TEMPLATE_INCONSISTENT));
        }
        KeyOps::IMPORT
    } else {
        // An op the templates do not mention defaults to allowed, as PKCS#11
        // tokens default CKA_SIGN and friends to TRUE.
        possible.without(denied)
    };

    let templates: Vec<&Template> = parts.iter().map(|(t, _)| *t).collect();
    let allowed_mechanisms = narrowed_mechanisms(&templates, kind, ops)?;

    let main = private;
    let token = main.get_bool(CKA_TOKEN)?.unwrap_or(false);
    let label = main
        .get(CKA_LABEL)
        .or_else(|| public.and_then(|p| p.get(CKA_LABEL)))
        .unwrap_or_default()
        .to_vec();
    let public_label = public
        .and_then(|p| p.get(CKA_LABEL))
        .filter(|l| *l != label.as_slice())
        .map(<[u8]>::to_vec);
    let version = random_id()?;
    let id = main
        .get(CKA_ID)
        .or_else(|| public.and_then(|p| p.get(CKA_ID)))
        .map(<[u8]>::to_vec)
        // Java and libp11 pair keys and certificates by CKA_ID.
        .unwrap_or_else(|| version.to_vec());
    let version = hex(&version);
    let name = if is_valid_name(&label) {
        String::from_utf8_lossy(&label).into_owned()
    } else {
        // As Microsoft's own PKCS#11 library does for labels outside the rule.
        format!("p11-{}", random_hex_id()?)
    };
    let created = now();
    let mut key = KeyRecord {
        kind,
        name,
        version,
        public: None,
        ops,
        enabled: true,
        nbf: None,
        exp: None,
        created,
        updated: created,
        tags: BTreeMap::new(),
        local: true,
        gen_mechanism: Some(mechanism),
        public_private: public
            .map(|p| p.get_bool(CKA_PRIVATE))
            .transpose()?
            .flatten()
            .unwrap_or(false),
        public_label,
        public_hidden: false,
        private_hidden: false,
        allowed_mechanisms,
    };
    for (t, _) in &parts {
        apply_lifecycle(&mut key, t)?;
    }
    Ok(KeyRequest {
        kind,
        token,
        record: Record {
            body: Body::Key(key),
            label,
            id,
            uid: random_hex_id()?,
            modifiable: main.get_bool(CKA_MODIFIABLE)?.unwrap_or(true),
            destroyable: main.get_bool(CKA_DESTROYABLE)?.unwrap_or(true),
        },
    })
}

/// Key material attributes of an import template, consumed by the import
/// itself (the record keeps only the public part, read from the key).
const MATERIAL_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_VALUE,
    CKA_VALUE_LEN,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_SEED,
];

/// A key record for imported material (C_CreateObject, C_UnwrapKey): `kind`
/// and `public` are what the material is; the template must agree with them
/// (`CKR_TEMPLATE_INCONSISTENT`) and passes the same rules as a generation
/// template. Imported keys are not local and have no key generation
/// mechanism, so `CKA_ALWAYS_SENSITIVE`/`CKA_NEVER_EXTRACTABLE` read FALSE;
/// they are still sensitive and never extractable.
pub fn import_request(
    t: &Template,
    kind: KeyKind,
    public: Option<&crate::crypto::PublicKey>,
) -> Result<KeyRequest> {
    let class = if kind.is_pair() {
        CKO_PRIVATE_KEY
    } else {
        CKO_SECRET_KEY
    };
    let inconsistent = || Error(CKR_TEMPLATE_INCONSISTENT);
    if t.get_ulong(CKA_CLASS)?.is_some_and(|c| c != class)
        || t.get_ulong(CKA_KEY_TYPE)?
            .is_some_and(|k| k != kind.key_type())
    {
        return Err(inconsistent());
    }
    let (mechanism, size) = match (kind, public) {
        (KeyKind::Aes(bits), _) => (
            CKM_AES_KEY_GEN,
            vec![(CKA_VALUE_LEN, ulong_bytes((bits / 8) as CK_ULONG))],
        ),
        (KeyKind::Rsa(bits), Some(crate::crypto::PublicKey::Rsa { n, e })) => {
            if t.get(CKA_MODULUS)
                .is_some_and(|m| strip_zeros(m) != strip_zeros(n))
            {
                return Err(inconsistent());
            }
            (
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                vec![
                    (CKA_MODULUS_BITS, ulong_bytes(bits as CK_ULONG)),
                    (CKA_PUBLIC_EXPONENT, e.clone()),
                ],
            )
        }
        (KeyKind::Ec(curve), Some(crate::crypto::PublicKey::Ec { .. })) => {
            if t.get(CKA_EC_PARAMS)
                .is_some_and(|p| rules::curve_from_params(p).ok() != Some(curve))
            {
                return Err(inconsistent());
            }
            (
                CKM_EC_KEY_PAIR_GEN,
                vec![(CKA_EC_PARAMS, curve.oid_der().to_vec())],
            )
        }
        // The template's CKA_PARAMETER_SET named the set (it stays in the record's template).
        (KeyKind::MlDsa(_), Some(crate::crypto::PublicKey::MlDsa { .. })) => {
            (CKM_ML_DSA_KEY_PAIR_GEN, Vec::new())
        }
        _ => return Err(Error(CKR_GENERAL_ERROR)),
    };
    let mut gen = t.clone();
    for (ty, value) in &size {
        let differs = |v: &[u8]| match *ty {
            CKA_VALUE_LEN | CKA_MODULUS_BITS => decode_ulong(v).ok() != decode_ulong(value).ok(),
            CKA_EC_PARAMS => false,
            _ => strip_zeros(v) != strip_zeros(value),
        };
        if t.get(*ty).is_some_and(differs) {
            return Err(inconsistent());
        }
    }
    gen.0.retain(|a| !MATERIAL_ATTRS.contains(&a.ty));
    gen.0
        .extend(size.into_iter().map(|(ty, value)| super::attributes::Attr {
            ty,
            value: value.into(),
        }));
    let mut req = key_request(mechanism, None, &gen)?;
    if let Body::Key(k) = &mut req.record.body {
        k.local = false;
        k.gen_mechanism = None;
    }
    if let Some(pk) = public {
        set_public(&mut req.record, pk);
    }
    Ok(req)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    &b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..]
}

/// The mechanisms `k` may be used with for any of `ops`: what its type and
/// `key_ops` allow, narrowed by its creation template's `CKA_ALLOWED_MECHANISMS`.
pub fn allowed_mechanisms(k: &KeyRecord, ops: KeyOps) -> Vec<CK_MECHANISM_TYPE> {
    let mut list = rules::usable_mechanisms(k.kind, ops);
    if let Some(narrowed) = &k.allowed_mechanisms {
        list.retain(|m| narrowed.contains(m));
    }
    list
}

/// A `CK_MECHANISM_TYPE_ARRAY` attribute value (native-endian `CK_ULONG`s).
fn mechanism_bytes(list: &[CK_MECHANISM_TYPE]) -> Vec<u8> {
    list.iter().flat_map(|m| m.to_ne_bytes()).collect()
}

/// Read a `CK_MECHANISM_TYPE_ARRAY` attribute value.
fn decode_mechanisms(v: &[u8]) -> Result<Vec<CK_MECHANISM_TYPE>> {
    const N: usize = std::mem::size_of::<CK_MECHANISM_TYPE>();
    if !v.len().is_multiple_of(N) {
        return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
    }
    Ok(v.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            CK_MECHANISM_TYPE::from_ne_bytes(b)
        })
        .collect())
}

/// The `CKA_ALLOWED_MECHANISMS` of a key's creation templates: a subset of
/// what a key of `kind` with `ops` can use (anything else is
/// `CKR_ATTRIBUTE_VALUE_INVALID`); both halves of a pair must agree
/// (`CKR_TEMPLATE_INCONSISTENT`). None, or an empty list, narrows nothing.
fn narrowed_mechanisms(
    templates: &[&Template],
    kind: KeyKind,
    ops: KeyOps,
) -> Result<Option<Vec<CK_MECHANISM_TYPE>>> {
    let mut given: Option<Vec<CK_MECHANISM_TYPE>> = None;
    for t in templates {
        let Some(v) = t.get(CKA_ALLOWED_MECHANISMS) else {
            continue;
        };
        let list = decode_mechanisms(v)?;
        if given.as_ref().is_some_and(|g| *g != list) {
            return Err(Error(CKR_TEMPLATE_INCONSISTENT));
        }
        given = Some(list);
    }
    let Some(list) = given.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let usable = rules::usable_mechanisms(kind, ops);
    if list.iter().any(|m| !usable.contains(m)) {
        return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
    }
    Ok(Some(list))
}

/// The operations a public key alone can do (its half of `key_ops`).
pub const PUBLIC_OPS: KeyOps = KeyOps(KeyOps::VERIFY.0 | KeyOps::ENCRYPT.0 | KeyOps::WRAP.0);

/// Read the `C_CreateObject` template of a public key (`CKO_PUBLIC_KEY`):
/// RSA from `CKA_MODULUS` + `CKA_PUBLIC_EXPONENT`, EC from `CKA_EC_PARAMS` +
/// `CKA_EC_POINT` (raw or DER OCTET STRING). Sizes, curves and the exponent
/// follow the Managed HSM rules, as for generated and imported keys. The
/// record is a key whose private half does not exist; it can verify, encrypt
/// and wrap (the ops the template does not deny).
///
/// Only session keys (`CKA_TOKEN=FALSE`): a Managed HSM key always has its
/// private part — the service has no public-only keys — so a token public key
/// is `CKR_ATTRIBUTE_VALUE_INVALID`, the code PKCS#11 3.0 §5.7 gives for "an
/// invalid value was specified for a particular attribute" (here `CKA_TOKEN`),
/// as for `CKA_EXTRACTABLE=TRUE`, another capability no Managed HSM key has.
pub fn public_key_request(t: &Template) -> Result<KeyRequest> {
    if t.get_ulong(CKA_CLASS)? != Some(CKO_PUBLIC_KEY) {
        return Err(Error(CKR_TEMPLATE_INCONSISTENT));
    }
    if t.get_bool(CKA_TOKEN)? == Some(true) {
        return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
    }
    let get = |ty| t.get(ty).ok_or(Error(CKR_TEMPLATE_INCOMPLETE));
    let (mechanism, size, public) = match t.get_ulong(CKA_KEY_TYPE)? {
        Some(CKK_RSA) => {
            let n = strip_zeros(get(CKA_MODULUS)?).to_vec();
            let e = get(CKA_PUBLIC_EXPONENT)?.to_vec();
            let public = crate::crypto::PublicKey::Rsa { n, e: e.clone() };
            let bits = public.bits() as CK_ULONG;
            (
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                vec![
                    (CKA_MODULUS_BITS, ulong_bytes(bits)),
                    (CKA_PUBLIC_EXPONENT, e),
                ],
                public,
            )
        }
        Some(CKK_EC) => {
            let params = get(CKA_EC_PARAMS)?;
            let curve = rules::curve_from_params(params)?;
            let point = spki::ec_point_from_attr(get(CKA_EC_POINT)?, curve)
                .ok_or(Error(CKR_ATTRIBUTE_VALUE_INVALID))?;
            (
                CKM_EC_KEY_PAIR_GEN,
                vec![(CKA_EC_PARAMS, params.to_vec())],
                crate::crypto::PublicKey::Ec { curve, point },
            )
        }
        Some(_) => return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)),
        None => return Err(Error(CKR_TEMPLATE_INCOMPLETE)),
    };
    // The generation rules check the size, curve and exponent; the template
    // of the missing private half carries only what the record reads from it.
    let mut public_t = t.clone();
    public_t.0.retain(|a| !MATERIAL_ATTRS.contains(&a.ty));
    public_t
        .0
        .extend(size.into_iter().map(|(ty, value)| super::attributes::Attr {
            ty,
            value: value.into(),
        }));
    let mut main = Template::default();
    main.0.extend(
        t.0.iter()
            .filter(|a| matches!(a.ty, CKA_TOKEN | CKA_MODIFIABLE | CKA_DESTROYABLE))
            .cloned(),
    );
    let mut req = key_request(mechanism, Some(&public_t), &main)?;
    if let Body::Key(k) = &mut req.record.body {
        if k.ops.contains(KeyOps::IMPORT) {
            // A key-exchange key is the private half of a pair.
            return Err(Error(CKR_TEMPLATE_INCONSISTENT));
        }
        k.ops = KeyOps(k.ops.0 & PUBLIC_OPS.0);
        k.local = false;
        k.gen_mechanism = None;
        k.private_hidden = true;
    }
    set_public(&mut req.record, &public);
    Ok(req)
}

/// The template attributes that map to key_ops.
const OP_ATTRS: &[(CK_ATTRIBUTE_TYPE, KeyOps)] = &[
    (CKA_SIGN, KeyOps::SIGN),
    (CKA_VERIFY, KeyOps::VERIFY),
    (CKA_ENCRYPT, KeyOps::ENCRYPT),
    (CKA_DECRYPT, KeyOps::DECRYPT),
    (CKA_WRAP, KeyOps::WRAP),
    (CKA_UNWRAP, KeyOps::UNWRAP),
    (CKA_ENCAPSULATE, KeyOps::WRAP),
    (CKA_DECAPSULATE, KeyOps::UNWRAP),
];

/// [`OP_ATTRS`] for a key of `kind`: `CKA_ENCAPSULATE`/`CKA_DECAPSULATE`
/// are an ML-KEM key's wrapKey/unwrapKey and no op of any other key (they
/// read FALSE there, and setting them changes nothing).
fn op_attrs(kind: KeyKind) -> impl Iterator<Item = (CK_ATTRIBUTE_TYPE, KeyOps)> {
    OP_ATTRS.iter().map(move |&(ty, op)| {
        let kem_only = matches!(ty, CKA_ENCAPSULATE | CKA_DECAPSULATE);
        if kem_only && !matches!(kind, KeyKind::MlKem(_)) {
            (ty, KeyOps::default())
        } else {
            (ty, op)
        }
    })
}

/// Check every attribute of a key template against the table. At creation
/// `AtCreate` and `Modifiable` attributes may appear; afterwards only `Modifiable`.
fn check_template(t: &Template, bit: u8, creating: bool) -> Result<()> {
    for ty in t.types() {
        match key_access(ty, bit) {
            None => return Err(Error(CKR_ATTRIBUTE_TYPE_INVALID)),
            Some(ReadOnly) => return Err(Error(CKR_ATTRIBUTE_READ_ONLY)),
            Some(AtCreate) if !creating => return Err(Error(CKR_ATTRIBUTE_READ_ONLY)),
            // Private parts are never supplied to generation; import (C_CreateObject) checks them.
            Some(Sensitive) if creating => return Err(Error(CKR_ATTRIBUTE_TYPE_INVALID)),
            Some(Sensitive) => return Err(Error(CKR_ATTRIBUTE_READ_ONLY)),
            _ => {}
        }
    }
    Ok(())
}

/// The key type and size a generation request asks for.
fn requested_kind(
    mechanism: CK_MECHANISM_TYPE,
    public: Option<&Template>,
    private: &Template,
) -> Result<KeyKind> {
    let either = |ty| -> Option<&[u8]> { public.and_then(|p| p.get(ty)).or(private.get(ty)) };
    match mechanism {
        CKM_RSA_PKCS_KEY_PAIR_GEN => {
            let bits = either(CKA_MODULUS_BITS).ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
            let bits = decode_ulong(bits)?;
            let bits = u32::try_from(bits).map_err(|_| Error(CKR_KEY_SIZE_RANGE))?;
            if !rules::RSA_BITS.contains(&bits) {
                return Err(Error(CKR_KEY_SIZE_RANGE));
            }
            if let Some(e) = either(CKA_PUBLIC_EXPONENT) {
                let lead = e.iter().position(|b| *b != 0).unwrap_or(e.len());
                // The Managed HSM generates e = 65537 only.
                if e[lead..] != [0x01, 0x00, 0x01] {
                    return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
                }
            }
            Ok(KeyKind::Rsa(bits))
        }
        CKM_EC_KEY_PAIR_GEN => {
            let params = either(CKA_EC_PARAMS).ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
            Ok(KeyKind::Ec(rules::curve_from_params(params)?))
        }
        CKM_ML_DSA_KEY_PAIR_GEN => {
            // PKCS#11 3.2 §6.67.3: the parameter set is on the public template.
            let set = either(CKA_PARAMETER_SET).ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
            crate::crypto::MlDsa::from_parameter_set(decode_ulong(set)?)
                .map(KeyKind::MlDsa)
                .ok_or(Error(CKR_ATTRIBUTE_VALUE_INVALID))
        }
        CKM_ML_KEM_KEY_PAIR_GEN => {
            let set = either(CKA_PARAMETER_SET).ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
            crate::crypto::MlKem::from_parameter_set(decode_ulong(set)?)
                .map(KeyKind::MlKem)
                .ok_or(Error(CKR_ATTRIBUTE_VALUE_INVALID))
        }
        CKM_AES_KEY_GEN => {
            let len = private
                .get_ulong(CKA_VALUE_LEN)?
                .ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
            let len = u32::try_from(len).map_err(|_| Error(CKR_KEY_SIZE_RANGE))?;
            if !rules::AES_BYTES.contains(&len) {
                return Err(Error(CKR_KEY_SIZE_RANGE));
            }
            Ok(KeyKind::Aes(len * 8))
        }
        _ => Err(Error(CKR_MECHANISM_INVALID)),
    }
}

/// Apply the lifecycle attributes of a template (dates, enabled, tags) to a key.
fn apply_lifecycle(key: &mut KeyRecord, t: &Template) -> Result<()> {
    if let Some(v) = t.get(CKA_START_DATE) {
        key.nbf = decode_date(v)?;
    }
    if let Some(v) = t.get(CKA_END_DATE) {
        // The key stays valid through the whole end date.
        key.exp = decode_date(v)?.map(|d| d + 86_400);
    }
    if let Some(v) = t.get(CKA_SOFTMHSM_NBF) {
        key.nbf = Some(decode_ulong(v)? as i64).filter(|s| *s != 0);
    }
    if let Some(v) = t.get(CKA_SOFTMHSM_EXP) {
        key.exp = Some(decode_ulong(v)? as i64).filter(|s| *s != 0);
    }
    if let Some(v) = t.get_bool(CKA_SOFTMHSM_ENABLED)? {
        key.enabled = v;
    }
    if let Some(v) = t.get(CKA_SOFTMHSM_TAGS) {
        key.tags = parse_tags(v)?;
    }
    Ok(())
}

/// Tags from their JSON form, within the Managed HSM limits.
pub fn parse_tags(json: &[u8]) -> Result<BTreeMap<String, String>> {
    let tags: BTreeMap<String, String> =
        serde_json::from_slice(json).map_err(|_| Error(CKR_ATTRIBUTE_VALUE_INVALID))?;
    let too_long = |s: &String| s.chars().count() > MAX_TAG_LEN;
    if tags.len() > MAX_TAGS
        || tags
            .iter()
            .any(|(k, v)| k.is_empty() || too_long(k) || too_long(v))
    {
        return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
    }
    Ok(tags)
}

/// C_SetAttributeValue (PKCS#11 3.1 §5.7.6) on a record: all or nothing.
/// Returns the updated record; the caller stores it.
pub fn set_attributes(rec: &Record, part: Part, t: &Template) -> Result<Record> {
    if !rec.modifiable {
        return Err(Error(CKR_ACTION_PROHIBITED));
    }
    let mut new = rec.clone();
    match &mut new.body {
        Body::Key(k) => {
            let bit = kind_bit(k.kind, part);
            check_template(t, bit, false)?;
            // Sensitivity may only ever tighten (TRUE stays TRUE, FALSE stays FALSE).
            if t.get_bool(CKA_SENSITIVE)? == Some(false)
                || t.get_bool(CKA_EXTRACTABLE)? == Some(true)
            {
                return Err(Error(CKR_ATTRIBUTE_READ_ONLY));
            }
            if k.ops == KeyOps::IMPORT && OP_ATTRS.iter().any(|(ty, _)| t.get(*ty).is_some()) {
                return Err(Error(CKR_ATTRIBUTE_READ_ONLY));
            }
            for (ty, op) in op_attrs(k.kind) {
                match t.get_bool(ty)? {
                    Some(true) if !possible_ops(k.kind).contains(op) => {
                        return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID))
                    }
                    Some(true) => k.ops = k.ops.with(op),
                    Some(false) => k.ops = k.ops.without(op),
                    None => {}
                }
            }
            apply_lifecycle(k, t)?;
            if let Some(l) = t.get(CKA_LABEL) {
                if part == Part::Public && k.kind.is_pair() {
                    k.public_label = Some(l.to_vec());
                } else {
                    new.label = l.to_vec();
                }
            }
            if let Some(id) = t.get(CKA_ID) {
                new.id = id.to_vec();
            }
            k.updated = now();
        }
        Body::Stored { class, attrs, .. } => {
            let allowed = if *class == CKO_CERTIFICATE {
                &[
                    CKA_LABEL,
                    CKA_ID,
                    CKA_SUBJECT,
                    CKA_ISSUER,
                    CKA_SERIAL_NUMBER,
                ][..]
            } else {
                &[CKA_LABEL, CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE][..]
            };
            for a in &t.0 {
                if !allowed.contains(&a.ty) {
                    let known = COMMON_ATTRS.contains(&a.ty)
                        || CERT_ATTRS.contains(&a.ty)
                        || DATA_ATTRS.contains(&a.ty);
                    return Err(Error(if known {
                        CKR_ATTRIBUTE_READ_ONLY
                    } else {
                        CKR_ATTRIBUTE_TYPE_INVALID
                    }));
                }
                match a.ty {
                    CKA_LABEL => new.label = a.value.to_vec(),
                    CKA_ID => new.id = a.value.to_vec(),
                    ty => {
                        attrs.insert(ty, a.value.to_vec());
                    }
                }
            }
        }
    }
    Ok(new)
}

/// A certificate or data object from a `C_CreateObject` template.
pub fn stored_object(t: &Template) -> Result<(bool, Record)> {
    let class = t
        .get_ulong(CKA_CLASS)?
        .ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
    let allowed = match class {
        CKO_CERTIFICATE => CERT_ATTRS,
        CKO_DATA => DATA_ATTRS,
        _ => return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)),
    };
    let mut attrs = BTreeMap::new();
    for a in &t.0 {
        if COMMON_ATTRS.contains(&a.ty) {
            continue;
        }
        if !allowed.contains(&a.ty) {
            return Err(Error(CKR_ATTRIBUTE_TYPE_INVALID));
        }
        attrs.insert(a.ty, a.value.to_vec());
    }
    if t.get(CKA_UNIQUE_ID).is_some() {
        return Err(Error(CKR_ATTRIBUTE_READ_ONLY));
    }
    if t.get_bool(CKA_COPYABLE)? == Some(true) {
        return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
    }
    if class == CKO_CERTIFICATE {
        match t.get_ulong(CKA_CERTIFICATE_TYPE)? {
            Some(CKC_X_509) => {}
            Some(_) => return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)),
            None => return Err(Error(CKR_TEMPLATE_INCOMPLETE)),
        }
        if t.get(CKA_VALUE).is_none() {
            return Err(Error(CKR_TEMPLATE_INCOMPLETE));
        }
        // Only the SO may mark a certificate trusted (PKCS#11 §4.6.2).
        if t.get_bool(CKA_TRUSTED)? == Some(true) {
            return Err(Error(CKR_ATTRIBUTE_READ_ONLY));
        }
        attrs.remove(&CKA_ID);
    }
    let token = t.get_bool(CKA_TOKEN)?.unwrap_or(false);
    let private = t.get_bool(CKA_PRIVATE)?.unwrap_or(false);
    Ok((
        token,
        Record {
            body: Body::Stored {
                class,
                private,
                attrs,
            },
            label: t.get(CKA_LABEL).unwrap_or_default().to_vec(),
            id: if class == CKO_CERTIFICATE {
                t.get(CKA_ID).unwrap_or_default().to_vec()
            } else {
                Vec::new()
            },
            uid: random_hex_id()?,
            modifiable: t.get_bool(CKA_MODIFIABLE)?.unwrap_or(true),
            destroyable: t.get_bool(CKA_DESTROYABLE)?.unwrap_or(true),
        },
    ))
}

/// Whether the object of `rec`/`part` is private (needs a logged-in user to see).
pub fn is_private(rec: &Record, part: Part) -> bool {
    match &rec.body {
        Body::Key(k) => part == Part::Main || k.public_private,
        Body::Stored { private, .. } => *private,
    }
}

/// Fill the public key into a generated record.
pub fn set_public(rec: &mut Record, public: &crate::crypto::PublicKey) {
    if let Body::Key(k) = &mut rec.body {
        k.public = Some(StoredPublic::from_public(public));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Azure's DeletionRecoveryLevel values, written from its documentation.
    #[test]
    fn recovery_level_follows_purge_protection_and_retention() {
        let r = |purge_protection, retention_days| Recovery {
            purge_protection,
            retention_days,
        };
        assert_eq!(recovery_level(true, r(false, 90)), "Recoverable+Purgeable");
        assert_eq!(
            recovery_level(true, r(false, 7)),
            "CustomizedRecoverable+Purgeable"
        );
        assert_eq!(recovery_level(true, r(true, 90)), "Recoverable");
        assert_eq!(recovery_level(true, r(true, 89)), "CustomizedRecoverable");
        assert_eq!(recovery_level(false, r(true, 90)), "Purgeable");
        assert_eq!(recovery_level(false, r(false, 7)), "Purgeable");
    }
}
