//! Key attestation (issue 4, item 6): each token has its own attestation key
//! (ECDSA P-256), made at initialisation, with which it signs statements about
//! its keys — public key, `key_ops`, whether it was generated in the token,
//! that it cannot be exported, its attributes — so that a relying party holding
//! the token's attestation public key can check them offline.
//!
//! The signature (ES256, raw `r || s`, base64url as in JWS) covers the exact
//! UTF-8 bytes of the *canonical* serialization of the `statement` object:
//! compact JSON (no whitespace) with every object's keys sorted by their UTF-8
//! bytes, as `serde_json` writes a `Value` — see [`canonical`]. The document
//! itself may be pretty-printed or reordered; verifiers re-serialize.

use crate::crypto::{self, Curve, Hash, PublicKey, SecretBytes};
use crate::engine::key::{KeyKind, KeyRecord};
use crate::engine::policy;
use crate::error::{Error, Result};
use crate::store::{AttestationRow, MasterKey, Store};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use cryptoki_sys::CKR_DEVICE_ERROR;
use serde_json::{json, Map, Value};
use std::fmt;

/// AAD of the sealed attestation private key: it opens for nothing else.
pub const AAD: &[u8] = b"softmhsm-attestation";
/// The JWA name of the signature algorithm.
pub const ALG: &str = "ES256";
/// The statement format, inside the signed statement.
pub const FORMAT: &str = "softmhsm-key-attestation/1";

/// The DER prefix of a P-256 `SubjectPublicKeyInfo`; the 65-byte point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Make a new attestation key and store it (`C_InitToken`, `softmhsm init`).
/// Never fails the initialisation: a failure is logged and the key is made
/// later, on the first `key attest`.
pub fn provision(store: &mut dyn Store, master: &MasterKey) {
    if let Err(e) = generate(master).and_then(|(row, _)| store.set_attestation_key(&row)) {
        log::warn!("attestation: no key made at initialisation ({e}); made on first use");
    }
}

/// A new attestation key: the stored row and the PKCS#8 private key.
fn generate(master: &MasterKey) -> Result<(AttestationRow, SecretBytes)> {
    let p = crypto::provider();
    let pkcs8 = p.generate_ec(Curve::P256)?;
    let public = p.ec_private(Curve::P256, &pkcs8)?.public();
    let row = AttestationRow {
        sealed: master.seal(AAD, &pkcs8)?,
        public: crypto::spki::spki_der(&public),
    };
    Ok((row, pkcs8))
}

/// The attestation private key (PKCS#8) and public SPKI DER; made and stored now
/// if the token has none (tokens initialised before attestation existed).
fn signing_key(store: &mut dyn Store, master: &MasterKey) -> Result<(SecretBytes, Vec<u8>)> {
    if let Some(row) = store.attestation_key()? {
        return Ok((master.open(AAD, &row.sealed)?, row.public));
    }
    let (row, pkcs8) = generate(master)?;
    if store.set_attestation_key(&row)? {
        return Ok((pkcs8, row.public));
    }
    // Another process stored one first: use that one.
    let row = store.attestation_key()?.ok_or(Error(CKR_DEVICE_ERROR))?;
    Ok((master.open(AAD, &row.sealed)?, row.public))
}

/// Whether a stored attestation key opens under `master` (`softmhsm check`).
pub fn opens(row: &crate::store::AttestationRow, master: &MasterKey) -> bool {
    master.open(AAD, &row.sealed).is_ok()
}

/// The token's attestation public key (SPKI DER), if it has one.
pub fn public_key(store: &dyn Store) -> Result<Option<Vec<u8>>> {
    Ok(store.attestation_key()?.map(|r| r.public))
}

/// The statement about key version `k` of the token labelled `token`, issued at `issued`.
pub fn statement(token: &str, k: &KeyRecord, issued: i64) -> Value {
    let mut s = Map::new();
    s.insert("format".into(), json!(FORMAT));
    s.insert("token".into(), json!(token));
    s.insert("issued".into(), json!(issued));
    s.insert("kid".into(), json!(policy::kid(token, k)));
    s.insert("kty".into(), json!(k.kind.kty()));
    match k.kind {
        KeyKind::Rsa(bits) | KeyKind::Aes(bits) => {
            s.insert("key_size".into(), json!(bits));
        }
        KeyKind::Ec(_) | KeyKind::MlDsa(_) | KeyKind::MlKem(_) => {}
    }
    match k.public.as_ref().and_then(|p| p.to_public(k.kind).ok()) {
        Some(PublicKey::Rsa { n, e }) => {
            s.insert("n".into(), json!(b64url(strip_zeros(&n))));
            s.insert("e".into(), json!(b64url(strip_zeros(&e))));
        }
        Some(PublicKey::Ec { curve, point }) => {
            let len = curve.field_len();
            s.insert("crv".into(), json!(curve.jwk_name()));
            if point.len() == 1 + 2 * len {
                s.insert("x".into(), json!(b64url(&point[1..1 + len])));
                s.insert("y".into(), json!(b64url(&point[1 + len..])));
            }
        }
        Some(PublicKey::MlDsa { set, key }) => {
            s.insert("alg".into(), json!(set.name()));
            s.insert("pub".into(), json!(b64url(&key)));
        }
        Some(PublicKey::MlKem { set, key }) => {
            s.insert("alg".into(), json!(set.name()));
            s.insert("pub".into(), json!(b64url(&key)));
        }
        None => {}
    }
    s.insert("key_ops".into(), json!(k.ops.names()));
    s.insert("local".into(), json!(k.local));
    // Every softmhsm key is CKA_EXTRACTABLE = FALSE: no key leaves the token.
    s.insert("extractable".into(), json!(false));
    s.insert("enabled".into(), json!(k.enabled));
    s.insert("created".into(), json!(k.created));
    s.insert("updated".into(), json!(k.updated));
    s.insert("nbf".into(), json!(k.nbf));
    s.insert("exp".into(), json!(k.exp));
    s.insert("tags".into(), json!(k.tags));
    Value::Object(s)
}

/// Attest key version `k`: the signed document
/// `{"statement", "alg", "signature", "attestation_key"}`.
pub fn attest(store: &mut dyn Store, master: &MasterKey, k: &KeyRecord, now: i64) -> Result<Value> {
    let token = crate::pool::lifecycle::token_label(store).map_err(super::refusal_rv)?;
    let (pkcs8, spki) = signing_key(store, master)?;
    let statement = statement(&token, k, now);
    let p = crypto::provider();
    let digest = crypto::digest(p, Hash::Sha256, canonical(&statement).as_bytes());
    let signature = p.ec_private(Curve::P256, &pkcs8)?.sign_prehash(&digest)?;
    Ok(json!({
        "statement": statement,
        "alg": ALG,
        "signature": b64url(&signature),
        "attestation_key": Base64::encode_string(&spki),
    }))
}

/// Why a document does not verify; `Display` is a one-line message.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not an attestation document (what is missing or malformed).
    Malformed(String),
    /// An `alg` other than ES256.
    Alg(String),
    /// The verifying key is not a P-256 public key.
    Key,
    /// The signature does not verify, and the document names another
    /// attestation key than the verifying one.
    OtherKey,
    /// The signature does not verify over the statement.
    Mismatch,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Malformed(why) => write!(f, "not an attestation document: {why}"),
            Invalid::Alg(a) => write!(f, "unsupported alg '{a}': only {ALG}"),
            Invalid::Key => f.write_str("the verifying key is not an EC P-256 public key"),
            Invalid::OtherKey => f.write_str(
                "bad signature: the statement was signed by another attestation key (another token?)",
            ),
            Invalid::Mismatch => f.write_str(
                "bad signature: the statement was modified or the signature is not this key's",
            ),
        }
    }
}

/// Verify an attestation document with the attestation public key `spki` (DER).
pub fn verify(doc: &Value, spki: &[u8]) -> std::result::Result<(), Invalid> {
    let missing = |what: &str| Invalid::Malformed(format!("no {what}"));
    let statement = doc
        .get("statement")
        .filter(|s| s.is_object())
        .ok_or_else(|| missing("statement object"))?;
    let alg = doc
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("alg"))?;
    if alg != ALG {
        return Err(Invalid::Alg(alg.to_string()));
    }
    let signature = doc
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("signature"))?;
    let signature = Base64UrlUnpadded::decode_vec(signature)
        .ok()
        .filter(|s| s.len() == 2 * Curve::P256.field_len())
        .ok_or_else(|| Invalid::Malformed("the signature is not 64 bytes of base64url".into()))?;
    let point = p256_point(spki).ok_or(Invalid::Key)?;
    let p = crypto::provider();
    let key = p.ec_public(Curve::P256, point).map_err(|_| Invalid::Key)?;
    let digest = crypto::digest(p, Hash::Sha256, canonical(statement).as_bytes());
    if key.verify_prehash(&digest, &signature).is_ok() {
        return Ok(());
    }
    let named = doc
        .get("attestation_key")
        .and_then(Value::as_str)
        .and_then(|k| Base64::decode_vec(k).ok());
    match named {
        Some(named) if named != spki => Err(Invalid::OtherKey),
        _ => Err(Invalid::Mismatch),
    }
}

/// The canonical serialization that is signed: compact JSON, every object's
/// keys sorted (bytewise), strings and numbers as `serde_json` writes them.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            // Sorted here rather than trusting Map's order: serde_json's
            // `preserve_order` feature, if some crate turned it on, would keep
            // insertion order instead.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The uncompressed point of a P-256 `SubjectPublicKeyInfo`, or None.
pub fn p256_point(spki: &[u8]) -> Option<&[u8]> {
    spki.strip_prefix(P256_SPKI_PREFIX)
        .filter(|p| p.len() == 65 && p[0] == 0x04)
}

/// PEM (`PUBLIC KEY`) of an SPKI DER.
pub fn pem(spki: &[u8]) -> String {
    let b64 = Base64::encode_string(spki);
    let mut s = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str("-----END PUBLIC KEY-----\n");
    s
}

/// The DER inside a `PUBLIC KEY` PEM, or None.
pub fn from_pem(text: &str) -> Option<Vec<u8>> {
    let body = text
        .split("-----BEGIN PUBLIC KEY-----")
        .nth(1)?
        .split("-----END PUBLIC KEY-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    Base64::decode_vec(&b64).ok()
}

/// Base64url without padding (RFC 7515 §2).
fn b64url(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

/// JWK integers are unsigned big-endian without leading zero bytes (RFC 7518 §6.3.1).
fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[first..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::key::KeyOps;
    use std::collections::BTreeMap;

    fn aes_key() -> KeyRecord {
        KeyRecord {
            kind: KeyKind::Aes(256),
            name: "data".into(),
            version: "00112233445566778899aabbccddeeff".into(),
            public: None,
            ops: KeyOps::ENCRYPT.with(KeyOps::DECRYPT),
            enabled: true,
            nbf: None,
            exp: Some(2_000_000_000),
            created: 1_700_000_000,
            updated: 1_700_000_000,
            tags: BTreeMap::from([("env".to_string(), "prod".to_string())]),
            local: true,
            gen_mechanism: None,
            public_private: false,
            public_label: None,
            public_hidden: false,
            private_hidden: false,
            allowed_mechanisms: None,
        }
    }

    fn store() -> (tempfile::TempDir, crate::store::SqliteStore, MasterKey) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let master = s.init_token("demo", b"12345678", 1, 7).unwrap();
        (dir, s, master)
    }

    #[test]
    fn canonical_form_sorts_keys_and_has_no_whitespace() {
        let v = json!({"b": [1, {"z": null, "a": "é\""}], "a": true});
        assert_eq!(canonical(&v), r#"{"a":true,"b":[1,{"a":"é\"","z":null}]}"#);
    }

    #[test]
    fn aes_statement_has_size_but_no_public_parts() {
        let s = statement("demo", &aes_key(), 5);
        assert_eq!(s["kty"], "oct-HSM");
        assert_eq!(s["key_size"], 256);
        assert_eq!(s["extractable"], false);
        assert!(s.get("n").is_none() && s.get("x").is_none());
        assert_eq!(
            s["kid"],
            "softmhsm://demo/keys/data/00112233445566778899aabbccddeeff"
        );
    }

    #[test]
    fn attestation_verifies_and_a_changed_field_does_not() {
        let (_d, mut s, master) = store();
        provision(&mut s, &master);
        let spki = public_key(&s).unwrap().expect("made at provision");
        let mut doc = attest(&mut s, &master, &aes_key(), 7).unwrap();
        assert_eq!(verify(&doc, &spki), Ok(()));
        doc["statement"]["local"] = json!(false);
        assert_eq!(verify(&doc, &spki), Err(Invalid::Mismatch));
    }

    #[test]
    fn a_token_without_a_key_gets_one_on_first_use_and_keeps_it() {
        let (_d, mut s, master) = store();
        assert_eq!(public_key(&s).unwrap(), None);
        let doc = attest(&mut s, &master, &aes_key(), 7).unwrap();
        let spki = public_key(&s).unwrap().expect("made lazily");
        assert_eq!(verify(&doc, &spki), Ok(()));
        attest(&mut s, &master, &aes_key(), 8).unwrap();
        assert_eq!(public_key(&s).unwrap(), Some(spki));
    }

    #[test]
    fn another_tokens_key_is_named_as_such() {
        let (_d, mut s, master) = store();
        let (_d2, mut other, other_master) = store();
        let doc = attest(&mut s, &master, &aes_key(), 7).unwrap();
        attest(&mut other, &other_master, &aes_key(), 7).unwrap();
        let other_spki = public_key(&other).unwrap().unwrap();
        assert_eq!(verify(&doc, &other_spki), Err(Invalid::OtherKey));
    }

    #[test]
    fn pem_round_trips() {
        let (_d, mut s, master) = store();
        provision(&mut s, &master);
        let spki = public_key(&s).unwrap().unwrap();
        assert!(p256_point(&spki).is_some());
        assert_eq!(from_pem(&pem(&spki)), Some(spki));
    }
}
