//! The JWK-style key record (DESIGN §2) and the records of the other object
//! classes, as stored (JSON) in the store's `attrs` column.

use crate::crypto::{Curve, MlDsa, MlKem, PublicKey};
use crate::error::{Error, Result};
use cryptoki_sys::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// JWK `kty`, with the key's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    /// RSA with a modulus of this many bits.
    Rsa(u32),
    /// EC on a curve.
    Ec(#[serde(with = "curve_name")] Curve),
    /// AES (JWK `oct`) of this many bits.
    Aes(u32),
    /// ML-DSA (JWK `AKP`) of a parameter set; the private key is stored as its seed.
    MlDsa(MlDsa),
    /// ML-KEM of a parameter set (a softmhsm extension: no Managed HSM key
    /// type); its `key_ops` are wrapKey (encapsulate) and unwrapKey (decapsulate).
    MlKem(MlKem),
}

impl KeyKind {
    /// `CKA_KEY_TYPE`.
    pub fn key_type(self) -> CK_KEY_TYPE {
        match self {
            KeyKind::Rsa(_) => CKK_RSA,
            KeyKind::Ec(_) => CKK_EC,
            KeyKind::Aes(_) => CKK_AES,
            KeyKind::MlDsa(_) => CKK_ML_DSA,
            KeyKind::MlKem(_) => CKK_ML_KEM,
        }
    }

    /// The `kty` the Managed HSM reports for it (`RSA-HSM`, `AKP-HSM`, …;
    /// ML-KEM, which it does not have, as `ML-KEM`).
    pub fn kty(self) -> &'static str {
        match self {
            KeyKind::Rsa(_) => "RSA-HSM",
            KeyKind::Ec(_) => "EC-HSM",
            KeyKind::Aes(_) => "oct-HSM",
            KeyKind::MlDsa(_) => "AKP-HSM",
            KeyKind::MlKem(_) => "ML-KEM",
        }
    }

    /// True for RSA, EC, ML-DSA and ML-KEM (an object pair: private + public).
    pub fn is_pair(self) -> bool {
        !matches!(self, KeyKind::Aes(_))
    }
}

mod curve_name {
    use crate::crypto::Curve;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Curve, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.jwk_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Curve, D::Error> {
        let name = String::deserialize(d)?;
        Curve::ALL
            .into_iter()
            .find(|c| c.jwk_name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown curve {name}")))
    }
}

/// JWK `key_ops` as bit flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyOps(pub u8);

impl KeyOps {
    /// `sign`.
    pub const SIGN: KeyOps = KeyOps(1);
    /// `verify`.
    pub const VERIFY: KeyOps = KeyOps(2);
    /// `encrypt`.
    pub const ENCRYPT: KeyOps = KeyOps(4);
    /// `decrypt`.
    pub const DECRYPT: KeyOps = KeyOps(8);
    /// `wrapKey`.
    pub const WRAP: KeyOps = KeyOps(16);
    /// `unwrapKey`.
    pub const UNWRAP: KeyOps = KeyOps(32);
    /// `import` (BYOK key-exchange key; excludes every other op).
    pub const IMPORT: KeyOps = KeyOps(64);

    /// The ops and their JWK names, in JWK order.
    pub const NAMES: [(KeyOps, &'static str); 7] = [
        (KeyOps::SIGN, "sign"),
        (KeyOps::VERIFY, "verify"),
        (KeyOps::ENCRYPT, "encrypt"),
        (KeyOps::DECRYPT, "decrypt"),
        (KeyOps::WRAP, "wrapKey"),
        (KeyOps::UNWRAP, "unwrapKey"),
        (KeyOps::IMPORT, "import"),
    ];

    /// Whether every op of `other` is in `self`.
    pub fn contains(self, other: KeyOps) -> bool {
        self.0 & other.0 == other.0
    }

    /// Union.
    pub fn with(self, other: KeyOps) -> KeyOps {
        KeyOps(self.0 | other.0)
    }

    /// Difference.
    pub fn without(self, other: KeyOps) -> KeyOps {
        KeyOps(self.0 & !other.0)
    }

    /// The JWK names of the ops present.
    pub fn names(self) -> Vec<&'static str> {
        KeyOps::NAMES
            .iter()
            .filter(|(op, _)| self.contains(*op))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// The stored record of one object row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What the row is.
    pub body: Body,
    /// `CKA_LABEL` exactly as the application gave it.
    #[serde(default)]
    pub label: Vec<u8>,
    /// `CKA_ID`.
    #[serde(default)]
    pub id: Vec<u8>,
    /// `CKA_UNIQUE_ID` of the row's first object (the public half appends `.pub`).
    pub uid: String,
    /// `CKA_MODIFIABLE`.
    #[serde(default = "yes")]
    pub modifiable: bool,
    /// `CKA_DESTROYABLE`.
    #[serde(default = "yes")]
    pub destroyable: bool,
}

fn yes() -> bool {
    true
}

/// The class-specific part of a record.
// Most rows are keys, so boxing the key variant would cost an allocation per
// record to save space on the rare stored objects.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A key version: RSA/EC pairs and AES secret keys.
    Key(KeyRecord),
    /// An object the token only stores: certificates, data objects. Holds the
    /// application's attributes (type → value) after validation.
    Stored {
        /// `CKA_CLASS`.
        class: CK_OBJECT_CLASS,
        /// `CKA_PRIVATE`.
        private: bool,
        /// Every other attribute given at creation (and updated since).
        attrs: BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>,
    },
}

/// The JWK-style key record (DESIGN §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Type and size.
    pub kind: KeyKind,
    /// The Managed HSM name (immutable).
    pub name: String,
    /// 32-hex version id.
    pub version: String,
    /// The public key (RSA/EC).
    pub public: Option<StoredPublic>,
    /// `key_ops`.
    pub ops: KeyOps,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf`.
    pub nbf: Option<i64>,
    /// `attributes.exp`.
    pub exp: Option<i64>,
    /// `attributes.created`.
    pub created: i64,
    /// `attributes.updated`.
    pub updated: i64,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `CKA_LOCAL`: generated inside the token.
    pub local: bool,
    /// `CKA_KEY_GEN_MECHANISM` (generated keys).
    pub gen_mechanism: Option<CK_MECHANISM_TYPE>,
    /// `CKA_PRIVATE` of the public half (the private half is always private).
    #[serde(default)]
    pub public_private: bool,
    /// `CKA_LABEL` of the public half when it differs from the private half's.
    #[serde(default)]
    pub public_label: Option<Vec<u8>>,
    /// The public half was destroyed (the private half lives on).
    #[serde(default)]
    pub public_hidden: bool,
    /// The private half was destroyed and its material erased (the public half lives on).
    #[serde(default)]
    pub private_hidden: bool,
    /// `CKA_ALLOWED_MECHANISMS` as a creation template narrowed it; `None`
    /// (and every record written before the attribute existed) allows every
    /// mechanism the key's type and `key_ops` allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_mechanisms: Option<Vec<CK_MECHANISM_TYPE>>,
}

/// The public key as stored (hex keeps the JSON readable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredPublic {
    /// RSA modulus and exponent, hex.
    Rsa {
        /// Modulus.
        n: String,
        /// Exponent.
        e: String,
    },
    /// EC uncompressed point, hex.
    Ec {
        /// `04 || x || y`.
        point: String,
    },
    /// ML-DSA public key (pkEncode), hex.
    MlDsa {
        /// The key bytes.
        key: String,
    },
    /// ML-KEM encapsulation key, hex.
    MlKem {
        /// The key bytes.
        key: String,
    },
}

impl StoredPublic {
    /// Store form of a public key.
    pub fn from_public(key: &PublicKey) -> StoredPublic {
        match key {
            PublicKey::Rsa { n, e } => StoredPublic::Rsa {
                n: hex(n),
                e: hex(e),
            },
            PublicKey::Ec { point, .. } => StoredPublic::Ec { point: hex(point) },
            PublicKey::MlDsa { key, .. } => StoredPublic::MlDsa { key: hex(key) },
            PublicKey::MlKem { key, .. } => StoredPublic::MlKem { key: hex(key) },
        }
    }

    /// The public key back, for a key of `kind`.
    pub fn to_public(&self, kind: KeyKind) -> Result<PublicKey> {
        let bad = || Error(CKR_DEVICE_ERROR);
        match (self, kind) {
            (StoredPublic::Rsa { n, e }, KeyKind::Rsa(_)) => Ok(PublicKey::Rsa {
                n: unhex(n).ok_or_else(bad)?,
                e: unhex(e).ok_or_else(bad)?,
            }),
            (StoredPublic::Ec { point }, KeyKind::Ec(curve)) => Ok(PublicKey::Ec {
                curve,
                point: unhex(point).ok_or_else(bad)?,
            }),
            (StoredPublic::MlDsa { key }, KeyKind::MlDsa(set)) => Ok(PublicKey::MlDsa {
                set,
                key: unhex(key).ok_or_else(bad)?,
            }),
            (StoredPublic::MlKem { key }, KeyKind::MlKem(set)) => Ok(PublicKey::MlKem {
                set,
                key: unhex(key).ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = bytes
        .iter()
        .flat_map(|b| [DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]])
        .collect();
    // Every byte is an ASCII digit, so this never fails.
    String::from_utf8(digits).unwrap_or_default()
}

/// Parse hex (either case); None if malformed.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `label` is a valid Managed HSM key name: 1–127 of `0-9 a-z A-Z -`.
pub fn is_valid_name(label: &[u8]) -> bool {
    (1..=127).contains(&label.len())
        && label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// A fresh 32-hex id (version ids, generated names, unique ids): 16 bytes
/// from the system's generator, drawn 4 KiB at a time per thread. Ids are
/// public and only have to be unique, not secret; a system call per id was a
/// tenth of a session key's cost (a KEM's new AES key makes three ids). A
/// forked child has a copy of its parent's bytes, so the draw is tied to
/// the process id and a child draws its own.
pub fn random_hex_id() -> Result<String> {
    Ok(hex(&random_id()?))
}

/// The 16 bytes of a [`random_hex_id`].
pub fn random_id() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    let drawn = IDS.try_with(|ids| ids.borrow_mut().take(&mut b));
    match drawn {
        Ok(r) => r?,
        // The thread is exiting and its pool is gone: one draw of its own.
        Err(_) => getrandom::getrandom(&mut b).map_err(|_| Error(CKR_FUNCTION_FAILED))?,
    }
    Ok(b)
}

/// A thread's random bytes for ids (see [`random_hex_id`]).
struct IdBytes {
    pid: u32,
    buf: [u8; 4096],
    used: usize,
}

impl IdBytes {
    fn take(&mut self, out: &mut [u8; 16]) -> Result<()> {
        let pid = crate::ffi::fork::pid();
        if self.pid != pid || self.used + out.len() > self.buf.len() {
            getrandom::getrandom(&mut self.buf).map_err(|_| Error(CKR_FUNCTION_FAILED))?;
            (self.pid, self.used) = (pid, 0);
        }
        let from = self.used;
        self.used += out.len();
        out.copy_from_slice(&self.buf[from..self.used]);
        Ok(())
    }
}

thread_local! {
    static IDS: std::cell::RefCell<IdBytes> = const {
        std::cell::RefCell::new(IdBytes { pid: 0, buf: [0; 4096], used: 4096 })
    };
}

impl Record {
    /// JSON for the store.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|_| Error(CKR_GENERAL_ERROR))
    }

    /// Parse the store's JSON; a record that does not parse means a damaged store.
    pub fn from_json(s: &str) -> Result<Record> {
        serde_json::from_str(s).map_err(|e| {
            log::error!("unreadable object record: {e}");
            Error(CKR_DEVICE_ERROR)
        })
    }

    /// The key record, if this is a key.
    pub fn key(&self) -> Option<&KeyRecord> {
        match &self.body {
            Body::Key(k) => Some(k),
            Body::Stored { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_managed_hsm_rule() {
        assert!(is_valid_name(b"my-Key-1"));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b"has space"));
        assert!(!is_valid_name(b"under_score"));
        assert!(!is_valid_name(&[b'a'; 128]));
        assert!(is_valid_name(&[b'a'; 127]));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn record_survives_json() {
        let rec = Record {
            body: Body::Key(KeyRecord {
                kind: KeyKind::Ec(Curve::P256K),
                name: "k".into(),
                version: "0".repeat(32),
                public: Some(StoredPublic::Ec { point: "04".into() }),
                ops: KeyOps::SIGN.with(KeyOps::VERIFY),
                enabled: true,
                nbf: None,
                exp: Some(5),
                created: 1,
                updated: 2,
                tags: BTreeMap::new(),
                local: true,
                gen_mechanism: Some(CKM_EC_KEY_PAIR_GEN),
                public_private: false,
                public_label: None,
                public_hidden: false,
                private_hidden: false,
                allowed_mechanisms: None,
            }),
            label: b"k".to_vec(),
            id: vec![1, 2],
            uid: "u".into(),
            modifiable: true,
            destroyable: true,
        };
        assert_eq!(Record::from_json(&rec.to_json().unwrap()).unwrap(), rec);
        let mut narrowed = rec.clone();
        if let Body::Key(k) = &mut narrowed.body {
            k.allowed_mechanisms = Some(vec![CKM_ECDSA]);
        }
        assert_eq!(
            Record::from_json(&narrowed.to_json().unwrap()).unwrap(),
            narrowed
        );
    }

    #[test]
    fn record_without_allowed_mechanisms_allows_all() {
        // A record written before CKA_ALLOWED_MECHANISMS existed.
        let old = r#"{"body":{"Key":{"kind":{"Aes":256},"name":"k","version":"v","public":null,
            "ops":15,"enabled":true,"nbf":null,"exp":null,"created":1,"updated":1,"local":true,
            "gen_mechanism":null}},"uid":"u"}"#;
        let rec = Record::from_json(old).unwrap();
        assert_eq!(rec.key().unwrap().allowed_mechanisms, None);
        assert!(!rec.to_json().unwrap().contains("allowed_mechanisms"));
    }
}
