//! The crypto provider seam (DESIGN §1): one narrow interface between the token
//! logic and the code that does the mathematics.
//!
//! Two implementations exist: `aws_lc` (aws-lc-rs, the default) and `rustcrypto`
//! (pure-Rust crates). [`provider()`] returns the routed provider the library uses:
//! every operation goes to whichever implementation does it best (see `router.rs`).
//!
//! Encodings used across the seam:
//! - RSA and EC private keys: PKCS#8 DER (`PrivateKeyInfo`), wrapped in [`SecretBytes`].
//! - AES keys: the raw key bytes, wrapped in [`SecretBytes`].
//! - EC public points: uncompressed SEC1 (`04 || x || y`).
//! - RSA public keys: big-endian unsigned modulus and exponent, no leading zeros.
//! - ECDSA signatures: raw `r || s`, each left-padded to the curve's field size
//!   (PKCS#11's format).
//!
//! Errors are returned as the `CK_RV` PKCS#11 names for them (`crate::error::Error`):
//! a wrong signature is `CKR_SIGNATURE_INVALID`, a signature of the wrong length
//! `CKR_SIGNATURE_LEN_RANGE`, input of the wrong size `CKR_DATA_LEN_RANGE`, bad
//! ciphertext `CKR_ENCRYPTED_DATA_INVALID`/`CKR_ENCRYPTED_DATA_LEN_RANGE`, a bad
//! wrapped key `CKR_WRAPPED_KEY_INVALID`/`CKR_WRAPPED_KEY_LEN_RANGE`, key material
//! that does not parse `CKR_ATTRIBUTE_VALUE_INVALID`.

use crate::error::Result;
use std::sync::Arc;
use zeroize::Zeroizing;

#[cfg(feature = "aws-lc")]
pub mod aws_lc;
#[cfg(feature = "aws-lc")]
pub mod ml_dsa_deterministic;
pub mod router;
pub mod rustcrypto;
pub mod seal;
pub mod shamir;
pub mod spki;

/// Bytes of key material or plaintext; wiped from memory on drop.
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// The Managed HSM elliptic curves (JWK `crv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1), JWK `P-256`.
    P256,
    /// secp256k1, JWK `P-256K`.
    P256K,
    /// NIST P-384 (secp384r1), JWK `P-384`.
    P384,
    /// NIST P-521 (secp521r1), JWK `P-521`.
    P521,
}

impl Curve {
    /// Every supported curve.
    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P256K, Curve::P384, Curve::P521];

    /// Size of one field element / scalar in bytes (r and s each have this length).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The curve's size in bits as PKCS#11 reports it in `CK_MECHANISM_INFO`.
    pub fn bits(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// The hash the Managed HSM pairs with this curve (ES256, ES256K, ES384, ES512).
    pub fn hash(self) -> Hash {
        match self {
            Curve::P256 | Curve::P256K => Hash::Sha256,
            Curve::P384 => Hash::Sha384,
            Curve::P521 => Hash::Sha512,
        }
    }

    /// The JWK `crv` name.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P256K => "P-256K",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// DER of the named-curve OBJECT IDENTIFIER (the value of `CKA_EC_PARAMS`).
    pub fn oid_der(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7
            Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            // 1.3.132.0.10
            Curve::P256K => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
            // 1.3.132.0.34
            Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            // 1.3.132.0.35
            Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }

    /// The curve named by a `CKA_EC_PARAMS` value (a DER OID; also accepts the
    /// PrintableString curve names some clients send).
    pub fn from_ec_params(der: &[u8]) -> Option<Curve> {
        if let Some(c) = Curve::ALL.iter().copied().find(|c| c.oid_der() == der) {
            return Some(c);
        }
        // PrintableString (tag 0x13) named curves, as OpenSC accepts them.
        if der.len() > 2 && der[0] == 0x13 && der[1] as usize == der.len() - 2 {
            return match &der[2..] {
                b"prime256v1" | b"secp256r1" | b"P-256" => Some(Curve::P256),
                b"secp256k1" | b"P-256K" => Some(Curve::P256K),
                b"secp384r1" | b"P-384" => Some(Curve::P384),
                b"secp521r1" | b"P-521" => Some(Curve::P521),
                _ => None,
            };
        }
        None
    }
}

/// The ML-DSA parameter sets (FIPS 204): the `alg` of a Managed HSM `AKP` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MlDsa {
    /// ML-DSA-44 (`CKP_ML_DSA_44`).
    #[serde(rename = "ML-DSA-44")]
    P44,
    /// ML-DSA-65 (`CKP_ML_DSA_65`).
    #[serde(rename = "ML-DSA-65")]
    P65,
    /// ML-DSA-87 (`CKP_ML_DSA_87`).
    #[serde(rename = "ML-DSA-87")]
    P87,
}

/// Length of the seed ξ an ML-DSA private key is stored as (FIPS 204 Algorithm 6).
pub const ML_DSA_SEED_LEN: usize = 32;

impl MlDsa {
    /// Every parameter set.
    pub const ALL: [MlDsa; 3] = [MlDsa::P44, MlDsa::P65, MlDsa::P87];

    /// The JWA / Managed HSM name (`ML-DSA-65`).
    pub fn name(self) -> &'static str {
        match self {
            MlDsa::P44 => "ML-DSA-44",
            MlDsa::P65 => "ML-DSA-65",
            MlDsa::P87 => "ML-DSA-87",
        }
    }

    /// The set a JWA name names.
    pub fn from_name(name: &str) -> Option<MlDsa> {
        MlDsa::ALL.into_iter().find(|s| s.name() == name)
    }

    /// `CKA_PARAMETER_SET` (`CKP_ML_DSA_*`, PKCS#11 3.2).
    pub fn parameter_set(self) -> cryptoki_sys::CK_ULONG {
        match self {
            MlDsa::P44 => cryptoki_sys::CKP_ML_DSA_44,
            MlDsa::P65 => cryptoki_sys::CKP_ML_DSA_65,
            MlDsa::P87 => cryptoki_sys::CKP_ML_DSA_87,
        }
    }

    /// The set a `CKA_PARAMETER_SET` value names.
    pub fn from_parameter_set(p: cryptoki_sys::CK_ULONG) -> Option<MlDsa> {
        MlDsa::ALL.into_iter().find(|s| s.parameter_set() == p)
    }

    /// Public key length in bytes (FIPS 204 Table 2).
    pub fn public_len(self) -> usize {
        match self {
            MlDsa::P44 => 1312,
            MlDsa::P65 => 1952,
            MlDsa::P87 => 2592,
        }
    }

    /// Signature length in bytes (FIPS 204 Table 2).
    pub fn signature_len(self) -> usize {
        match self {
            MlDsa::P44 => 2420,
            MlDsa::P65 => 3309,
            MlDsa::P87 => 4627,
        }
    }

    /// DER of its OBJECT IDENTIFIER (id-ml-dsa-44/65/87, 2.16.840.1.101.3.4.3.17–19).
    pub fn oid_der(self) -> &'static [u8] {
        match self {
            MlDsa::P44 => &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x11,
            ],
            MlDsa::P65 => &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12,
            ],
            MlDsa::P87 => &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x13,
            ],
        }
    }
}

/// Length of ML-DSA's message representative μ and of the public key's hash
/// tr (FIPS 204 Algorithms 6 and 7: both SHAKE256 outputs of 64 bytes).
pub const ML_DSA_MU_LEN: usize = 64;

/// The pre-hash PH of HashML-DSA (FIPS 204 §5.4.1): the hash functions of
/// PKCS#11 3.2's `CKM_HASH_ML_DSA_<hash>` mechanisms. The SHAKEs are XOFs read
/// to FIPS 204's lengths: SHAKE128 256 bits, SHAKE256 512 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreHash {
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
    /// SHA3-224.
    Sha3_224,
    /// SHA3-256.
    Sha3_256,
    /// SHA3-384.
    Sha3_384,
    /// SHA3-512.
    Sha3_512,
    /// SHAKE128, 32 bytes of output.
    Shake128,
    /// SHAKE256, 64 bytes of output.
    Shake256,
}

impl PreHash {
    /// Output length in bytes: the length of the PH(M) a caller gives
    /// `CKM_HASH_ML_DSA`.
    // A digest length is never zero, so an `is_empty` would be meaningless.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            PreHash::Sha224 | PreHash::Sha3_224 => 28,
            PreHash::Sha256 | PreHash::Sha3_256 | PreHash::Shake128 => 32,
            PreHash::Sha384 | PreHash::Sha3_384 => 48,
            PreHash::Sha512 | PreHash::Sha3_512 | PreHash::Shake256 => 64,
        }
    }

    /// DER of its OBJECT IDENTIFIER (NIST hashAlgs, 2.16.840.1.101.3.4.2.x),
    /// which HashML-DSA's M' carries (FIPS 204 Algorithm 4 steps 10–22).
    pub fn oid_der(self) -> [u8; 11] {
        let arc = match self {
            PreHash::Sha256 => 1,
            PreHash::Sha384 => 2,
            PreHash::Sha512 => 3,
            PreHash::Sha224 => 4,
            PreHash::Sha3_224 => 7,
            PreHash::Sha3_256 => 8,
            PreHash::Sha3_384 => 9,
            PreHash::Sha3_512 => 10,
            PreHash::Shake128 => 11,
            PreHash::Shake256 => 12,
        };
        [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, arc,
        ]
    }

    /// The hash `CK_HASH_SIGN_ADDITIONAL_CONTEXT.hash` names (a `CKM_SHA*`
    /// digest mechanism). PKCS#11 3.2 defines no digest mechanism for the
    /// SHAKEs, so those are served by `CKM_HASH_ML_DSA_SHAKE128/256` only.
    pub fn from_digest_mechanism(m: cryptoki_sys::CK_MECHANISM_TYPE) -> Option<PreHash> {
        use cryptoki_sys::*;
        Some(match m {
            CKM_SHA224 => PreHash::Sha224,
            CKM_SHA256 => PreHash::Sha256,
            CKM_SHA384 => PreHash::Sha384,
            CKM_SHA512 => PreHash::Sha512,
            CKM_SHA3_224 => PreHash::Sha3_224,
            CKM_SHA3_256 => PreHash::Sha3_256,
            CKM_SHA3_384 => PreHash::Sha3_384,
            CKM_SHA3_512 => PreHash::Sha3_512,
            _ => return None,
        })
    }
}

/// HashML-DSA's μ (FIPS 204 Algorithm 4 steps 23–24 and Algorithm 7 step 6,
/// as Algorithm 5 for verification): SHAKE256(tr ‖ M', 64) with M' = 0x01 ‖
/// |ctx| ‖ ctx ‖ OID(PH) ‖ PH(M). `tr` is the key's SHAKE256(pk, 64),
/// `digest` PH(M), `context` at most 255 bytes (`CKR_MECHANISM_PARAM_INVALID`).
pub fn hash_ml_dsa_mu(
    p: &dyn Provider,
    tr: &[u8],
    ph: PreHash,
    context: &[u8],
    digest: &[u8],
) -> Result<Vec<u8>> {
    let ctx_len = u8::try_from(context.len())
        .map_err(|_| crate::error::Error(cryptoki_sys::CKR_MECHANISM_PARAM_INVALID))?;
    let mut mu = p.pre_hasher(PreHash::Shake256)?;
    for part in [tr, &[1, ctx_len], context, &ph.oid_der(), digest] {
        mu.update(part);
    }
    Ok(mu.finish())
}

/// The ML-KEM parameter sets (FIPS 203), a softmhsm extension beyond the Managed HSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MlKem {
    /// ML-KEM-512 (`CKP_ML_KEM_512`).
    #[serde(rename = "ML-KEM-512")]
    P512,
    /// ML-KEM-768 (`CKP_ML_KEM_768`).
    #[serde(rename = "ML-KEM-768")]
    P768,
    /// ML-KEM-1024 (`CKP_ML_KEM_1024`).
    #[serde(rename = "ML-KEM-1024")]
    P1024,
}

/// Length of an ML-KEM shared secret (FIPS 203 §7: always 32 bytes).
pub const ML_KEM_SECRET_LEN: usize = 32;

impl MlKem {
    /// Every parameter set.
    pub const ALL: [MlKem; 3] = [MlKem::P512, MlKem::P768, MlKem::P1024];

    /// The algorithm's name (`ML-KEM-768`).
    pub fn name(self) -> &'static str {
        match self {
            MlKem::P512 => "ML-KEM-512",
            MlKem::P768 => "ML-KEM-768",
            MlKem::P1024 => "ML-KEM-1024",
        }
    }

    /// `CKA_PARAMETER_SET` (`CKP_ML_KEM_*`, PKCS#11 3.2).
    pub fn parameter_set(self) -> cryptoki_sys::CK_ULONG {
        match self {
            MlKem::P512 => cryptoki_sys::CKP_ML_KEM_512,
            MlKem::P768 => cryptoki_sys::CKP_ML_KEM_768,
            MlKem::P1024 => cryptoki_sys::CKP_ML_KEM_1024,
        }
    }

    /// The set a `CKA_PARAMETER_SET` value names.
    pub fn from_parameter_set(p: cryptoki_sys::CK_ULONG) -> Option<MlKem> {
        MlKem::ALL.into_iter().find(|s| s.parameter_set() == p)
    }

    /// Encapsulation (public) key length in bytes (FIPS 203 Table 3).
    pub fn public_len(self) -> usize {
        match self {
            MlKem::P512 => 800,
            MlKem::P768 => 1184,
            MlKem::P1024 => 1568,
        }
    }

    /// Ciphertext length in bytes (FIPS 203 Table 3).
    pub fn ciphertext_len(self) -> usize {
        match self {
            MlKem::P512 => 768,
            MlKem::P768 => 1088,
            MlKem::P1024 => 1568,
        }
    }

    /// DER of its OBJECT IDENTIFIER (id-alg-ml-kem-*, 2.16.840.1.101.3.4.4.1–3).
    pub fn oid_der(self) -> &'static [u8] {
        match self {
            MlKem::P512 => &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x01,
            ],
            MlKem::P768 => &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x02,
            ],
            MlKem::P1024 => &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x03,
            ],
        }
    }
}

/// The hash functions the Managed HSM algorithms use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hash {
    /// SHA-1: only for RSA-OAEP (the JWA `RSA-OAEP` algorithm) and `CKM_SHA_1` digests.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// Output length in bytes.
    // A digest length is never zero, so an `is_empty` would be meaningless.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The DER prefix of a PKCS#1 v1.5 `DigestInfo` for this hash (digest follows).
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// A public key as the token exposes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: big-endian modulus `n` and public exponent `e`.
    Rsa {
        /// Modulus, big-endian, no leading zero bytes.
        n: Vec<u8>,
        /// Public exponent, big-endian, no leading zero bytes.
        e: Vec<u8>,
    },
    /// EC: the curve and the uncompressed SEC1 point.
    Ec {
        /// The curve.
        curve: Curve,
        /// `04 || x || y`.
        point: Vec<u8>,
    },
    /// ML-DSA: the parameter set and the encoded public key (FIPS 204 pkEncode).
    MlDsa {
        /// The parameter set.
        set: MlDsa,
        /// The public key bytes (`CKA_VALUE`, JWK `pub`).
        key: Vec<u8>,
    },
    /// ML-KEM: the parameter set and the encapsulation key (FIPS 203 `ek`).
    MlKem {
        /// The parameter set.
        set: MlKem,
        /// The encapsulation key bytes (`CKA_VALUE`).
        key: Vec<u8>,
    },
}

impl PublicKey {
    /// RSA modulus size in bits, or the curve size for EC.
    pub fn bits(&self) -> usize {
        match self {
            PublicKey::Rsa { n, .. } => {
                let lead = n.iter().position(|b| *b != 0).unwrap_or(n.len());
                let n = &n[lead..];
                match n.first() {
                    Some(b) => (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
                    None => 0,
                }
            }
            PublicKey::Ec { curve, .. } => curve.bits(),
            PublicKey::MlDsa { key, .. } | PublicKey::MlKem { key, .. } => key.len() * 8,
        }
    }
}

/// A streaming hash (`C_DigestUpdate`, the hash-then-sign mechanisms).
pub trait Hasher: Send {
    /// Absorb more input.
    fn update(&mut self, data: &[u8]);
    /// Produce the digest; the hasher is consumed.
    fn finish(self: Box<Self>) -> Vec<u8>;
}

/// A parsed RSA private key: parse once, cache, use from many threads.
pub trait RsaPrivateKey: Send + Sync {
    /// The matching public key.
    fn public(&self) -> PublicKey;
    /// Modulus size in bytes (the signature and ciphertext length).
    fn size(&self) -> usize;
    /// RS256/384/512: PKCS#1 v1.5 signature of a precomputed `digest` of `hash`.
    fn sign_pkcs1(&self, hash: Hash, digest: &[u8]) -> Result<Vec<u8>>;
    /// RSNULL: PKCS#1 v1.5 type-1 padding of `data` as given (no DigestInfo added);
    /// `data` must be at most k − 11 bytes, else `CKR_DATA_LEN_RANGE`.
    fn sign_pkcs1_raw(&self, data: &[u8]) -> Result<Vec<u8>>;
    /// PS256/384/512: RSASSA-PSS of a precomputed `digest`, MGF1 with the same hash,
    /// salt length = hash length.
    fn sign_pss(&self, hash: Hash, digest: &[u8]) -> Result<Vec<u8>>;
    /// RSA1_5 decryption. Must not be a padding oracle: every failure is
    /// `CKR_ENCRYPTED_DATA_INVALID` through one code path.
    fn decrypt_pkcs1(&self, ciphertext: &[u8]) -> Result<SecretBytes>;
    /// RSA-OAEP (SHA-1) / RSA-OAEP-256 (SHA-256): MGF1 hash = `hash`, empty label.
    fn decrypt_oaep(&self, hash: Hash, ciphertext: &[u8]) -> Result<SecretBytes>;
}

/// A parsed RSA public key.
pub trait RsaPublicKey: Send + Sync {
    /// Modulus size in bytes.
    fn size(&self) -> usize;
    /// Verify an RS256/384/512 signature over a precomputed digest.
    fn verify_pkcs1(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> Result<()>;
    /// Verify an RSNULL signature over `data` as given.
    fn verify_pkcs1_raw(&self, data: &[u8], signature: &[u8]) -> Result<()>;
    /// Verify a PS256/384/512 signature (salt = hash length) over a precomputed digest.
    fn verify_pss(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> Result<()>;
    /// RSA1_5 encryption; `plaintext` at most k − 11 bytes else `CKR_DATA_LEN_RANGE`.
    fn encrypt_pkcs1(&self, plaintext: &[u8]) -> Result<Vec<u8>>;
    /// RSA-OAEP / RSA-OAEP-256 encryption, empty label.
    fn encrypt_oaep(&self, hash: Hash, plaintext: &[u8]) -> Result<Vec<u8>>;
}

/// A parsed EC private key.
pub trait EcPrivateKey: Send + Sync {
    /// The matching public key.
    fn public(&self) -> PublicKey;
    /// ECDSA over a precomputed digest; returns raw `r || s`.
    fn sign_prehash(&self, digest: &[u8]) -> Result<Vec<u8>>;
}

/// A parsed EC public key.
pub trait EcPublicKey: Send + Sync {
    /// Verify a raw `r || s` ECDSA signature over a precomputed digest.
    fn verify_prehash(&self, digest: &[u8], signature: &[u8]) -> Result<()>;
}

/// A parsed ML-DSA private key (expanded from its seed once).
pub trait MlDsaPrivateKey: Send + Sync {
    /// The matching public key.
    fn public(&self) -> PublicKey;
    /// Pure ML-DSA (FIPS 204 Algorithm 2), hedged, under `context` (at most
    /// 255 bytes, the caller's check; the empty one is plain pure ML-DSA).
    fn sign(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>>;
    /// The same, deterministic (FIPS 204's optional variant, rnd = {0}³²):
    /// one message, context and key give one signature.
    fn sign_deterministic(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>>;
    /// `ML-DSA.Sign_internal` from step 7 on (FIPS 204 Algorithm 7), hedged,
    /// over a μ computed elsewhere ([`ML_DSA_MU_LEN`] bytes, else
    /// `CKR_DATA_LEN_RANGE`): HashML-DSA and the external-μ signature.
    fn sign_mu(&self, mu: &[u8]) -> Result<Vec<u8>>;
    /// The same, deterministic (rnd = {0}³²).
    fn sign_mu_deterministic(&self, mu: &[u8]) -> Result<Vec<u8>>;
    /// tr = SHAKE256(pk, 64), which μ starts with (FIPS 204 Algorithm 7
    /// step 6), computed once.
    fn tr(&self) -> Result<[u8; ML_DSA_MU_LEN]>;
}

/// A parsed ML-DSA public key.
pub trait MlDsaPublicKey: Send + Sync {
    /// tr = SHAKE256(pk, 64), which μ starts with (FIPS 204 Algorithm 8
    /// step 6), computed once.
    fn tr(&self) -> Result<[u8; ML_DSA_MU_LEN]>;
    /// Verify a pure ML-DSA signature under `context` (FIPS 204 Algorithm 3).
    fn verify(&self, message: &[u8], context: &[u8], signature: &[u8]) -> Result<()>;
    /// Verify a signature over a μ computed elsewhere (`ML-DSA.Verify_internal`
    /// from step 7, FIPS 204 Algorithm 8); a μ that is not
    /// [`ML_DSA_MU_LEN`] bytes is `CKR_DATA_LEN_RANGE`.
    fn verify_mu(&self, mu: &[u8], signature: &[u8]) -> Result<()>;
}

/// A parsed ML-KEM decapsulation key.
pub trait MlKemPrivateKey: Send + Sync {
    /// The matching encapsulation key.
    fn public(&self) -> PublicKey;
    /// FIPS 203 `ML-KEM.Decaps`: the shared secret. A ciphertext of the right
    /// length never fails (implicit rejection gives an unrelated secret); a
    /// wrong length is `CKR_ENCRYPTED_DATA_LEN_RANGE`.
    fn decapsulate(&self, ciphertext: &[u8]) -> Result<SecretBytes>;
}

/// A parsed ML-KEM encapsulation key.
pub trait MlKemPublicKey: Send + Sync {
    /// FIPS 203 `ML-KEM.Encaps`: (ciphertext, shared secret).
    fn encapsulate(&self) -> Result<(Vec<u8>, SecretBytes)>;
}

/// An AES key (128, 192 or 256 bits) ready for use.
pub trait AesKey: Send + Sync {
    /// AES-GCM encryption; returns `ciphertext || tag` with a tag of `tag_len` bytes (12–16).
    fn gcm_seal(&self, iv: &[u8], aad: &[u8], plaintext: &[u8], tag_len: usize) -> Result<Vec<u8>>;
    /// AES-GCM decryption of `ciphertext || tag`; a wrong tag is `CKR_ENCRYPTED_DATA_INVALID`.
    fn gcm_open(&self, iv: &[u8], aad: &[u8], sealed: &[u8], tag_len: usize)
        -> Result<SecretBytes>;
    /// AES-CBC encryption; with `pad` PKCS#7 padding is added, without it the input
    /// must be a multiple of 16 bytes (`CKR_DATA_LEN_RANGE`).
    fn cbc_encrypt(&self, iv: &[u8; 16], plaintext: &[u8], pad: bool) -> Result<Vec<u8>>;
    /// AES-CBC decryption; with `pad` the PKCS#7 padding is checked and removed
    /// (`CKR_ENCRYPTED_DATA_INVALID`); the input must be a multiple of 16 bytes
    /// (`CKR_ENCRYPTED_DATA_LEN_RANGE`).
    fn cbc_decrypt(&self, iv: &[u8; 16], ciphertext: &[u8], pad: bool) -> Result<SecretBytes>;
    /// RFC 3394 key wrap (default IV); input a multiple of 8 bytes, at least 16.
    fn kw_wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>>;
    /// RFC 3394 key unwrap; an integrity failure is `CKR_WRAPPED_KEY_INVALID`.
    fn kw_unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes>;
    /// RFC 5649 key wrap with padding; any non-empty input.
    fn kwp_wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>>;
    /// RFC 5649 key unwrap with padding.
    fn kwp_unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes>;
}

/// The components of an RSA private key as PKCS#11 `C_CreateObject` supplies them
/// (big-endian). `d` is required; the CRT values are optional.
#[derive(Default)]
pub struct RsaParts {
    /// Modulus.
    pub n: Vec<u8>,
    /// Public exponent.
    pub e: Vec<u8>,
    /// Private exponent.
    pub d: SecretBytes,
    /// First prime, if given.
    pub p: Option<SecretBytes>,
    /// Second prime, if given.
    pub q: Option<SecretBytes>,
}

/// One implementation of the cryptography the token needs.
pub trait Provider: Send + Sync {
    /// Short name for logs and benchmarks ("aws-lc", "rustcrypto", "routed").
    fn name(&self) -> &'static str;
    /// Fill `out` from the CSPRNG.
    fn random(&self, out: &mut [u8]) -> Result<()>;
    /// A new streaming hasher.
    fn hasher(&self, hash: Hash) -> Box<dyn Hasher>;
    /// A new streaming hasher of a HashML-DSA pre-hash (SHA-2, SHA-3, SHAKE);
    /// `CKR_MECHANISM_INVALID` where the provider has no ML-DSA.
    fn pre_hasher(&self, hash: PreHash) -> Result<Box<dyn Hasher>>;
    /// Generate an RSA key of `bits` (2048, 3072 or 4096) with e = 65537; PKCS#8 DER.
    fn generate_rsa(&self, bits: usize) -> Result<SecretBytes>;
    /// Generate an EC key on `curve`; PKCS#8 DER.
    fn generate_ec(&self, curve: Curve) -> Result<SecretBytes>;
    /// Build PKCS#8 DER from RSA components (key import); checks that they are consistent.
    fn import_rsa(&self, parts: &RsaParts) -> Result<SecretBytes>;
    /// Build PKCS#8 DER from an EC private scalar (big-endian, key import).
    fn import_ec(&self, curve: Curve, scalar: &[u8]) -> Result<SecretBytes>;
    /// Parse an RSA private key from PKCS#8 DER.
    fn rsa_private(&self, pkcs8: &[u8]) -> Result<Arc<dyn RsaPrivateKey>>;
    /// Parse an RSA public key from its components.
    fn rsa_public(&self, n: &[u8], e: &[u8]) -> Result<Arc<dyn RsaPublicKey>>;
    /// Parse an EC private key on `curve` from PKCS#8 DER.
    fn ec_private(&self, curve: Curve, pkcs8: &[u8]) -> Result<Arc<dyn EcPrivateKey>>;
    /// Parse an EC public key from an uncompressed SEC1 point.
    fn ec_public(&self, curve: Curve, point: &[u8]) -> Result<Arc<dyn EcPublicKey>>;
    /// Prepare an AES key (16, 24 or 32 bytes).
    fn aes(&self, key: &[u8]) -> Result<Arc<dyn AesKey>>;
    /// Generate an ML-DSA key: its seed ξ ([`ML_DSA_SEED_LEN`] bytes), the form it is stored in.
    fn generate_ml_dsa(&self, set: MlDsa) -> Result<SecretBytes>;
    /// Expand an ML-DSA private key from its seed (FIPS 204 `ML-DSA.KeyGen_internal`).
    fn ml_dsa_private(&self, set: MlDsa, seed: &[u8]) -> Result<Arc<dyn MlDsaPrivateKey>>;
    /// Parse an ML-DSA public key (pkEncode bytes).
    fn ml_dsa_public(&self, set: MlDsa, key: &[u8]) -> Result<Arc<dyn MlDsaPublicKey>>;
    /// Generate an ML-KEM key: its decapsulation key bytes (FIPS 203 `dk`).
    fn generate_ml_kem(&self, set: MlKem) -> Result<SecretBytes>;
    /// Parse an ML-KEM decapsulation key.
    fn ml_kem_private(&self, set: MlKem, dk: &[u8]) -> Result<Arc<dyn MlKemPrivateKey>>;
    /// Parse an ML-KEM encapsulation key.
    fn ml_kem_public(&self, set: MlKem, ek: &[u8]) -> Result<Arc<dyn MlKemPublicKey>>;
}

/// One-shot digest through `provider`.
pub fn digest(provider: &dyn Provider, hash: Hash, data: &[u8]) -> Vec<u8> {
    let mut h = provider.hasher(hash);
    h.update(data);
    h.finish()
}

/// The provider the library uses: the routed default build, or pure RustCrypto.
pub fn provider() -> &'static dyn Provider {
    router::routed()
}

#[cfg(test)]
mod tests;
