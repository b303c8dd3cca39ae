//! BYOK ("bring your own key") import, as the Managed HSM does it: the key to
//! import travels in a JSON transfer blob, encrypted for a key-exchange key
//! (KEK: an RSA key whose only op is `import`) with `CKM_RSA_AES_KEY_WRAP`
//! (PKCS#11 3.0 §2.1.21): RSA-OAEP of an ephemeral AES key, followed by the
//! RFC 5649 (AES-KWP) wrap of the target key under it — PKCS#8 DER for RSA and
//! EC, the raw bytes for AES.
//!
//! Three steps, kept apart: [`parse_byok`] reads the blob (pure, no key
//! involved: it is what a fuzzer drives), [`unwrap_rsa_aes`] opens the
//! ciphertext with the KEK (shared with `C_UnwrapKey`), and [`import_byok`]
//! finds the KEK by the blob's kid and stores the result as an imported key.

use crate::crypto::{self, Hash, RsaPrivateKey, SecretBytes};
use crate::engine::key::{KeyKind, KeyOps, Record};
use crate::engine::{policy, rules};
use crate::error::{Error, Result};
use crate::pool::lifecycle::{self, token_label, ImportSpec, Material, Outcome, Refusal};
use crate::store::{MasterKey, Store};
use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
use cryptoki_sys::*;
use std::fmt;

/// The only `schema_version` the Managed HSM defines.
pub const SCHEMA_VERSION: &str = "1.0.0";
/// `header.enc` of a Managed HSM BYOK blob.
pub const ENC: &str = "CKM_RSA_AES_KEY_WRAP";
/// `header.alg`: the ciphertext is the wrapped key itself.
pub const ALG: &str = "dir";
/// The ephemeral AES key of a BYOK blob is AES-256.
pub const BYOK_AES_BYTES: usize = 32;
/// Largest blob read: a wrapped RSA-4096 key is about 4 KiB of base64.
const MAX_BLOB: usize = 64 * 1024;

/// A parsed BYOK transfer blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByokBlob {
    /// `header.kid`: the KEK the blob was made for.
    pub kid: String,
    /// `ciphertext`, decoded: RSA-OAEP(AES key) ‖ AES-KWP(target key).
    pub ciphertext: Vec<u8>,
    /// `generator`: the tool that made the blob (informational).
    pub generator: Option<String>,
}

/// Why a blob was refused; `Display` is a one-line message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByokError(pub String);

impl fmt::Display for ByokError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(serde::Deserialize)]
struct RawBlob {
    schema_version: String,
    header: RawHeader,
    ciphertext: String,
    #[serde(default)]
    generator: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawHeader {
    kid: String,
    alg: String,
    enc: String,
}

/// Read a Managed HSM BYOK transfer blob: `{"schema_version":"1.0.0",
/// "header":{"kid":…,"alg":"dir","enc":"CKM_RSA_AES_KEY_WRAP"},
/// "ciphertext":<base64url>,"generator":…}`. Checks the form only; whether the
/// ciphertext opens is [`unwrap_rsa_aes`]'s business.
pub fn parse_byok(json: &[u8]) -> std::result::Result<ByokBlob, ByokError> {
    let err = |m: String| Err(ByokError(m));
    if json.len() > MAX_BLOB {
        return err(format!(
            "not a BYOK blob: larger than {} KiB",
            MAX_BLOB / 1024
        ));
    }
    let raw: RawBlob = match serde_json::from_slice(json) {
        Ok(r) => r,
        Err(e) => return err(format!("not a BYOK blob: {e}")),
    };
    if raw.schema_version != SCHEMA_VERSION {
        return err(format!(
            "unsupported BYOK schema_version '{}' (expected {SCHEMA_VERSION})",
            raw.schema_version
        ));
    }
    if raw.header.enc != ENC {
        return err(format!(
            "unsupported BYOK header.enc '{}' (expected {ENC})",
            raw.header.enc
        ));
    }
    if raw.header.alg != ALG {
        return err(format!(
            "unsupported BYOK header.alg '{}' (expected {ALG})",
            raw.header.alg
        ));
    }
    if raw.header.kid.is_empty() {
        return err("the BYOK blob names no key-exchange key (empty header.kid)".into());
    }
    let ciphertext = decode_base64(raw.ciphertext.trim())
        .ok_or_else(|| ByokError("the BYOK ciphertext is not base64url".into()))?;
    if ciphertext.is_empty() {
        return err("the BYOK ciphertext is empty".into());
    }
    Ok(ByokBlob {
        kid: raw.header.kid,
        ciphertext,
        generator: raw.generator,
    })
}

/// Base64url, padded or not (the Managed HSM's form); standard base64 is
/// accepted too, since tools differ. Strict otherwise (canonical, no spaces).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let url = !s.contains(['+', '/']);
    let padded = s.ends_with('=');
    match (url, padded) {
        (true, false) => Base64UrlUnpadded::decode_vec(s).ok(),
        (true, true) => Base64Url::decode_vec(s).ok(),
        (false, false) => Base64Unpadded::decode_vec(s).ok(),
        (false, true) => Base64::decode_vec(s).ok(),
    }
}

/// `CKM_RSA_AES_KEY_WRAP` unwrap (PKCS#11 3.0 §2.1.21): the first k bytes
/// (k = the KEK's modulus length) are RSA-OAEP (`oaep` hash, MGF1 the same,
/// empty label) of an AES key of `aes_bytes`; the rest is the RFC 5649 wrap of
/// the key material under it. Too short is `CKR_WRAPPED_KEY_LEN_RANGE`; any
/// other failure `CKR_WRAPPED_KEY_INVALID`, through one path (no oracle on
/// which half failed). The ephemeral AES key is wiped when dropped.
pub fn unwrap_rsa_aes(
    kek: &dyn RsaPrivateKey,
    oaep: Hash,
    aes_bytes: usize,
    wrapped: &[u8],
) -> Result<SecretBytes> {
    let k = kek.size();
    // RFC 5649: at least 16 bytes, a multiple of 8.
    let tail = wrapped.len().saturating_sub(k);
    if wrapped.len() < k + 16 || !tail.is_multiple_of(8) {
        return Err(Error(CKR_WRAPPED_KEY_LEN_RANGE));
    }
    let (head, tail) = wrapped.split_at(k);
    let invalid = |_| Error(CKR_WRAPPED_KEY_INVALID);
    let aes = kek.decrypt_oaep(oaep, head).map_err(invalid)?;
    if aes.len() != aes_bytes {
        return Err(Error(CKR_WRAPPED_KEY_INVALID));
    }
    let aes = crypto::provider().aes(&aes).map_err(invalid)?;
    aes.kwp_unwrap(tail).map_err(invalid)
}

/// What the blob holds, as `key import --kty` says (None: tell by the content).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// RSA private key, PKCS#8.
    Rsa,
    /// EC private key, PKCS#8.
    Ec,
    /// AES key bytes.
    Oct,
}

/// `key import --byok-file`: open a BYOK blob with the KEK its kid names and
/// store the key inside as `name` (a new current version if the name exists),
/// not local, as any import. Nothing is written unless every step succeeds.
pub fn import_byok(
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
    json: &[u8],
    target: Option<Target>,
    spec: &ImportSpec,
    now: i64,
) -> Outcome<crate::engine::key::KeyRecord> {
    let blob = parse_byok(json).map_err(|e| Refusal::Invalid(e.0))?;
    let (kek, material) = kek_material(store, master, &blob.kid)?;
    if kek.ops != KeyOps::IMPORT {
        return Err(Refusal::Invalid(format!(
            "key '{}' is not a key-exchange key: its key_ops lack 'import' (only) \
             (create one with: key create --kty RSA-HSM --ops import)",
            kek.name
        )));
    }
    rules::check_usable(&kek, KeyOps::IMPORT, now).map_err(|_| {
        Refusal::Invalid(format!(
            "key-exchange key '{}' is disabled or outside its validity dates",
            kek.name
        ))
    })?;
    let rsa = crypto::provider().rsa_private(&material)?;
    let plain = unwrap_rsa_aes(rsa.as_ref(), Hash::Sha1, BYOK_AES_BYTES, &blob.ciphertext)
        .map_err(|_| {
            Refusal::Invalid(format!(
                "the BYOK blob does not open with key-exchange key '{}' \
                 (made for another key, or damaged)",
                kek.name
            ))
        })?;
    let target = target.unwrap_or_else(|| guess_target(&plain));
    let material = match target {
        Target::Oct => Material::Aes(plain),
        Target::Rsa | Target::Ec => Material::Pkcs8(plain),
    };
    let (kind, _) = lifecycle::inspect(&material)?;
    let matches = matches!(
        (target, kind),
        (Target::Rsa, KeyKind::Rsa(_)) | (Target::Ec, KeyKind::Ec(_)) | (Target::Oct, _)
    );
    if !matches {
        return Err(Refusal::Invalid(format!(
            "the BYOK blob holds {} key, not the --kty asked for",
            match kind {
                KeyKind::Rsa(_) => "an RSA",
                KeyKind::Ec(_) => "an EC",
                KeyKind::Aes(_) => "an oct",
                KeyKind::MlDsa(_) => "an AKP",
                KeyKind::MlKem(_) => "an ML-KEM",
            }
        )));
    }
    lifecycle::import(store, master, name, &material, spec, now)
}

/// RSA/EC keys travel as PKCS#8, AES keys as 16, 24 or 32 bytes: anything of
/// an AES length that is not PKCS#8 is AES, the rest is read as PKCS#8 (so a
/// wrong format is named as such).
fn guess_target(plain: &[u8]) -> Target {
    match rules::pkcs8_kind(plain) {
        Ok(KeyKind::Ec(_)) => Target::Ec,
        Err(Error(CKR_WRAPPED_KEY_INVALID)) if [16, 24, 32].contains(&plain.len()) => Target::Oct,
        _ => Target::Rsa,
    }
}

/// The KEK a kid names (`softmhsm://<token>/keys/<name>[/<version>]`, in this
/// pool) and its private key.
fn kek_material(
    store: &dyn Store,
    master: &MasterKey,
    kid: &str,
) -> Outcome<(crate::engine::key::KeyRecord, SecretBytes)> {
    let label = token_label(store)?;
    let unknown = || {
        Refusal::Invalid(format!(
            "unknown key-exchange key '{kid}' (kids here read softmhsm://{label}/keys/<name>/<version>)"
        ))
    };
    let path = kid
        .strip_prefix("softmhsm://")
        .and_then(|r| r.strip_prefix(label.as_str()))
        .and_then(|r| r.strip_prefix("/keys/"))
        .ok_or_else(unknown)?;
    let (name, version) = match path.split_once('/') {
        Some((n, v)) => (n, Some(v)),
        None => (path, None),
    };
    let row = store
        .versions_of(name)?
        .into_iter()
        .find(|r| match version {
            Some(v) => r
                .version
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(v)),
            None => r.current,
        })
        .ok_or_else(unknown)?;
    let rec = Record::from_json(&row.attrs)?;
    let key = rec.key().ok_or_else(unknown)?.clone();
    let sealed = row.sealed.as_deref().ok_or_else(unknown)?;
    let material = master.open(policy::kid(&label, &key).as_bytes(), sealed)?;
    if !matches!(key.kind, KeyKind::Rsa(_)) {
        return Err(Refusal::Invalid(format!(
            "key '{}' is not a key-exchange key: not RSA",
            key.name
        )));
    }
    Ok((key, material))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(ct: &str) -> String {
        format!(
            r#"{{"schema_version":"1.0.0","header":{{"kid":"softmhsm://t/keys/KEK/ab","alg":"dir","enc":"CKM_RSA_AES_KEY_WRAP"}},"ciphertext":"{ct}","generator":"test"}}"#
        )
    }

    #[test]
    fn a_well_formed_blob_parses() {
        let b = parse_byok(blob("AAEC_w").as_bytes()).unwrap();
        assert_eq!(b.kid, "softmhsm://t/keys/KEK/ab");
        assert_eq!(b.ciphertext, vec![0, 1, 2, 0xff]);
        assert_eq!(b.generator.as_deref(), Some("test"));
        // Padded base64url and standard base64 too.
        assert_eq!(
            parse_byok(blob("AAEC_w==").as_bytes()).unwrap().ciphertext,
            vec![0, 1, 2, 0xff]
        );
        assert_eq!(
            parse_byok(blob("AAEC/w==").as_bytes()).unwrap().ciphertext,
            vec![0, 1, 2, 0xff]
        );
    }

    #[test]
    fn malformed_blobs_are_refused_with_a_reason() {
        let cases = [
            ("", "not a BYOK blob"),
            ("{}", "not a BYOK blob"),
            ("[1,2]", "not a BYOK blob"),
            (&blob("not base64!"), "not base64url"),
            (&blob(""), "empty"),
            (
                &blob("AA").replace("1.0.0", "2.0.0"),
                "schema_version '2.0.0'",
            ),
            (&blob("AA").replace("\"dir\"", "\"RSA-OAEP\""), "header.alg"),
            (
                &blob("AA").replace("CKM_RSA_AES_KEY_WRAP", "A256KW"),
                "header.enc",
            ),
            (
                &blob("AA").replace("softmhsm://t/keys/KEK/ab", ""),
                "empty header.kid",
            ),
        ];
        for (json, why) in cases {
            let e = parse_byok(json.as_bytes()).unwrap_err();
            assert!(e.0.contains(why), "{json}: {e} should say {why}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn oversized_blob_is_refused_before_parsing() {
        let big = blob(&"A".repeat(MAX_BLOB));
        assert!(parse_byok(big.as_bytes()).unwrap_err().0.contains("larger"));
    }

    /// RSA-OAEP(SHA-1) + AES-KWP made with the RustCrypto crates, independent
    /// of the provider that unwraps.
    fn rustcrypto_wrap(kek_pkcs8: &[u8], aes: &[u8; 32], target: &[u8]) -> Vec<u8> {
        use rsa::pkcs8::DecodePrivateKey;
        let sk = rsa::RsaPrivateKey::from_pkcs8_der(kek_pkcs8).unwrap();
        let pk = rsa::RsaPublicKey::from(&sk);
        let mut out = pk
            .encrypt(
                &mut rand_core::OsRng,
                rsa::Oaep::new::<sha1::Sha1>(),
                aes.as_slice(),
            )
            .unwrap();
        let kw = aes_kw::KekAes256::new(aes::cipher::generic_array::GenericArray::from_slice(aes));
        out.extend(kw.wrap_with_padding_vec(target).unwrap());
        out
    }

    #[test]
    fn rsa_aes_key_wrap_opens_and_refuses_tampering() {
        let p = crypto::provider();
        let kek = p.generate_rsa(2048).unwrap();
        let rsa = p.rsa_private(&kek).unwrap();
        let target = [7u8; 32];
        let wrapped = rustcrypto_wrap(&kek, &[9u8; 32], &target);
        let plain = unwrap_rsa_aes(rsa.as_ref(), Hash::Sha1, 32, &wrapped).unwrap();
        assert_eq!(plain.as_slice(), &target);
        for i in [0, 255, 256, wrapped.len() - 1] {
            let mut bad = wrapped.clone();
            bad[i] ^= 1;
            assert_eq!(
                unwrap_rsa_aes(rsa.as_ref(), Hash::Sha1, 32, &bad),
                Err(Error(CKR_WRAPPED_KEY_INVALID)),
                "byte {i} flipped"
            );
        }
        // The wrong OAEP hash or AES size does not open either.
        assert!(unwrap_rsa_aes(rsa.as_ref(), Hash::Sha256, 32, &wrapped).is_err());
        assert!(unwrap_rsa_aes(rsa.as_ref(), Hash::Sha1, 16, &wrapped).is_err());
        assert_eq!(
            unwrap_rsa_aes(rsa.as_ref(), Hash::Sha1, 32, &wrapped[..256 + 8]),
            Err(Error(CKR_WRAPPED_KEY_LEN_RANGE))
        );
        assert_eq!(
            unwrap_rsa_aes(rsa.as_ref(), Hash::Sha1, 32, &wrapped[..wrapped.len() - 1]),
            Err(Error(CKR_WRAPPED_KEY_LEN_RANGE))
        );
    }
}
