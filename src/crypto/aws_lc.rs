//! aws-lc-rs provider: constant-time RSA, fast NIST curves, AES-NI.
//!
//! Where aws-lc-rs has no API for an operation this provider hands it to the
//! RustCrypto implementation, parsed lazily on first use: RSNULL (raw PKCS#1
//! type-1 padding), RS*/PS* with SHA-1, GCM tags shorter than 16 bytes on
//! decryption, AES-192 key wrap, and key import from components.

use super::ml_dsa_deterministic::DeterministicSigner;
use super::rustcrypto::{because, check_gcm_params, RcRsaPrivate, RcRsaPublic, RustCrypto};
use super::{
    spki, AesKey, Curve, EcPrivateKey, EcPublicKey, Hash, Hasher, MlDsa, MlDsaPrivateKey,
    MlDsaPublicKey, MlKem, MlKemPrivateKey, MlKemPublicKey, PreHash, Provider, PublicKey, RsaParts,
    RsaPrivateKey, RsaPublicKey, SecretBytes, ML_DSA_MU_LEN, ML_DSA_SEED_LEN,
};
use crate::error::{Error, Result};
use crate::ffi::pqdsa::{self, EvpDigest, PqdsaKey};
use aws_lc_rs::{
    aead::{self, Aad, LessSafeKey, Nonce, UnboundKey},
    cipher::{
        DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
        PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
    },
    digest::{self, Digest},
    encoding::AsDer,
    iv::FixedLength,
    kem::{self, Ciphertext, DecapsulationKey, EncapsulationKey},
    key_wrap::{self, KeyEncryptionKey, KeyWrap, KeyWrapPadded},
    rsa::{
        KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
        Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1,
        OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
    },
    signature::{
        self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, KeyPair as _,
        ParsedPublicKey, PqdsaKeyPair, PqdsaSigningAlgorithm, PqdsaVerificationAlgorithm,
        RsaKeyPair, RsaParameters, RsaSignatureEncoding,
    },
};
use cryptoki_sys::*;
use std::sync::{Arc, OnceLock};
use zeroize::Zeroizing;

/// The aws-lc-rs implementation of [`Provider`].
pub struct AwsLc;

fn fail(rv: CK_RV) -> Error {
    Error(rv)
}

/// Returns the cell's value, initialising it with `init` if empty. `OnceLock`
/// has no stable fallible initialiser; a lost race parses twice and drops one.
fn get_or_try_init<T>(cell: &OnceLock<T>, init: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    Ok(cell.get_or_init(|| v))
}

fn digest_alg(hash: Hash) -> &'static digest::Algorithm {
    match hash {
        Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        Hash::Sha256 => &digest::SHA256,
        Hash::Sha384 => &digest::SHA384,
        Hash::Sha512 => &digest::SHA512,
    }
}

/// Wraps a caller's digest; the wrong length is `CKR_DATA_LEN_RANGE`.
fn import_digest(hash: Hash, digest: &[u8]) -> Result<Digest> {
    Digest::import_less_safe(digest, digest_alg(hash)).map_err(because(CKR_DATA_LEN_RANGE))
}

impl Provider for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc"
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        aws_lc_rs::rand::fill(out).map_err(because(CKR_FUNCTION_FAILED))
    }

    fn hasher(&self, hash: Hash) -> Box<dyn Hasher> {
        Box::new(LcHasher(digest::Context::new(digest_alg(hash))))
    }

    fn pre_hasher(&self, hash: PreHash) -> Result<Box<dyn Hasher>> {
        let d = EvpDigest::new(hash).ok_or(fail(CKR_FUNCTION_FAILED))?;
        Ok(Box::new(LcPreHasher(d)))
    }

    fn generate_rsa(&self, bits: usize) -> Result<SecretBytes> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(fail(CKR_KEY_SIZE_RANGE)),
        };
        let key = RsaKeyPair::generate(size).map_err(because(CKR_FUNCTION_FAILED))?;
        let der = key.as_der().map_err(because(CKR_FUNCTION_FAILED))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    fn generate_ec(&self, curve: Curve) -> Result<SecretBytes> {
        let key =
            EcdsaKeyPair::generate(ec_signing(curve)).map_err(because(CKR_FUNCTION_FAILED))?;
        let doc = key.to_pkcs8v1().map_err(because(CKR_FUNCTION_FAILED))?;
        Ok(Zeroizing::new(doc.as_ref().to_vec()))
    }

    fn import_rsa(&self, parts: &RsaParts) -> Result<SecretBytes> {
        // aws-lc-rs builds keys from components only with all CRT values present;
        // PKCS#11 imports often carry n, e, d alone, which the `rsa` crate completes.
        RustCrypto.import_rsa(parts)
    }

    fn import_ec(&self, curve: Curve, scalar: &[u8]) -> Result<SecretBytes> {
        // aws-lc-rs wants the public point alongside the scalar; RustCrypto derives it.
        RustCrypto.import_ec(curve, scalar)
    }

    fn rsa_private(&self, pkcs8: &[u8]) -> Result<Arc<dyn RsaPrivateKey>> {
        Ok(Arc::new(LcRsaPrivate::from_pkcs8(pkcs8)?))
    }

    fn rsa_public(&self, n: &[u8], e: &[u8]) -> Result<Arc<dyn RsaPublicKey>> {
        Ok(Arc::new(LcRsaPublic::new(n, e)?))
    }

    fn ec_private(&self, curve: Curve, pkcs8: &[u8]) -> Result<Arc<dyn EcPrivateKey>> {
        let key = EcdsaKeyPair::from_pkcs8(ec_signing(curve), pkcs8)
            .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(Arc::new(LcEcPrivate { key, curve }))
    }

    fn ec_public(&self, curve: Curve, point: &[u8]) -> Result<Arc<dyn EcPublicKey>> {
        // Only the uncompressed form crosses the seam (see mod.rs).
        if point.len() != 1 + 2 * curve.field_len() || point[0] != 0x04 {
            return Err(fail(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        let key = ParsedPublicKey::new(ec_verification(curve), point)
            .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(Arc::new(LcEcPublic { key, curve }))
    }

    fn aes(&self, key: &[u8]) -> Result<Arc<dyn AesKey>> {
        Ok(Arc::new(LcAes::new(key)?))
    }

    fn generate_ml_dsa(&self, _set: MlDsa) -> Result<SecretBytes> {
        // FIPS 204 Algorithm 1: ξ from the approved DRBG, expanded on use.
        let mut seed = Zeroizing::new(vec![0u8; ML_DSA_SEED_LEN]);
        self.random(&mut seed)?;
        Ok(seed)
    }

    fn ml_dsa_private(&self, set: MlDsa, seed: &[u8]) -> Result<Arc<dyn MlDsaPrivateKey>> {
        let key = PqdsaKeyPair::from_seed(ml_dsa_signing(set), seed)
            .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(Arc::new(LcMlDsaPrivate {
            key,
            set,
            seed: Zeroizing::new(seed.to_vec()),
            evp: OnceLock::new(),
            deterministic: OnceLock::new(),
            tr: OnceLock::new(),
        }))
    }

    fn ml_dsa_public(&self, set: MlDsa, key: &[u8]) -> Result<Arc<dyn MlDsaPublicKey>> {
        // ParsedPublicKey also takes an SPKI; only the raw pkEncode crosses the seam.
        if key.len() != set.public_len() {
            return Err(fail(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        let raw = key.to_vec();
        let key = ParsedPublicKey::new(ml_dsa_verification(set), key)
            .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(Arc::new(LcMlDsaPublic {
            key,
            set,
            raw,
            evp: OnceLock::new(),
            tr: OnceLock::new(),
        }))
    }

    fn generate_ml_kem(&self, set: MlKem) -> Result<SecretBytes> {
        let key = DecapsulationKey::generate(ml_kem(set)).map_err(because(CKR_FUNCTION_FAILED))?;
        let bytes = key.key_bytes().map_err(because(CKR_FUNCTION_FAILED))?;
        Ok(Zeroizing::new(bytes.as_ref().to_vec()))
    }

    fn ml_kem_private(&self, set: MlKem, dk: &[u8]) -> Result<Arc<dyn MlKemPrivateKey>> {
        let key =
            DecapsulationKey::new(ml_kem(set), dk).map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        // aws-lc-rs derives no ek from a dk given as bytes, but FIPS 203's dk
        // carries it: dk = dk_PKE (384k) || ek || H(ek) || z. The hash check
        // is FIPS 203 §7.3's decapsulation key check.
        let at = set.public_len() - 32;
        let public = dk
            .get(at..at + set.public_len())
            .ok_or(fail(CKR_ATTRIBUTE_VALUE_INVALID))?
            .to_vec();
        let hash = &dk[at + public.len()..at + public.len() + 32];
        if digest::digest(&digest::SHA3_256, &public).as_ref() != hash {
            return Err(fail(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        Ok(Arc::new(LcMlKemPrivate { key, set, public }))
    }

    fn ml_kem_public(&self, set: MlKem, ek: &[u8]) -> Result<Arc<dyn MlKemPublicKey>> {
        let key =
            EncapsulationKey::new(ml_kem(set), ek).map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(Arc::new(LcMlKemPublic { key }))
    }
}

struct LcHasher(digest::Context);

impl Hasher for LcHasher {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finish(self: Box<Self>) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}

/// An aws-lc EVP digest as a [`Hasher`]; a failed aws-lc call finishes with
/// no bytes, which every caller's length check refuses.
struct LcPreHasher(EvpDigest);

impl Hasher for LcPreHasher {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finish(self: Box<Self>) -> Vec<u8> {
        self.0.finish().unwrap_or_default()
    }
}

// ---------------------------------------------------------------- RSA

/// aws-lc-rs RSA private key. Signing is parsed eagerly (the hot path); the
/// decryption form and the `rsa` crate's form are parsed on first use, since most
/// keys only ever sign or only ever decrypt.
pub(crate) struct LcRsaPrivate {
    sign: RsaKeyPair,
    size: usize,
    pkcs8: SecretBytes,
    decrypt: OnceLock<(Pkcs1PrivateDecryptingKey, OaepPrivateDecryptingKey)>,
    fallback: OnceLock<RcRsaPrivate>,
}

impl LcRsaPrivate {
    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        let sign = RsaKeyPair::from_pkcs8(pkcs8).map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(LcRsaPrivate {
            size: sign.public_modulus_len(),
            sign,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            decrypt: OnceLock::new(),
            fallback: OnceLock::new(),
        })
    }

    fn fallback(&self) -> Result<&RcRsaPrivate> {
        get_or_try_init(&self.fallback, || RcRsaPrivate::from_pkcs8(&self.pkcs8))
    }

    fn decrypting(&self) -> Result<&(Pkcs1PrivateDecryptingKey, OaepPrivateDecryptingKey)> {
        get_or_try_init(&self.decrypt, || {
            // The key already parsed for signing, so a rejection here can only be
            // aws-lc's 2048–8192-bit range for decryption keys.
            let key = PrivateDecryptingKey::from_pkcs8(&self.pkcs8)
                .map_err(because(CKR_KEY_SIZE_RANGE))?;
            let pkcs1 = Pkcs1PrivateDecryptingKey::new(key.clone())
                .map_err(because(CKR_FUNCTION_FAILED))?;
            let oaep = OaepPrivateDecryptingKey::new(key).map_err(because(CKR_FUNCTION_FAILED))?;
            Ok((pkcs1, oaep))
        })
    }

    fn sign_with(
        &self,
        encoding: &'static RsaSignatureEncoding,
        digest: &Digest,
    ) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.size];
        self.sign
            .sign_digest(encoding, digest, &mut out)
            .map_err(because(CKR_FUNCTION_FAILED))?;
        Ok(out)
    }

    fn check_ciphertext(&self, ciphertext: &[u8]) -> Result<()> {
        if ciphertext.len() == self.size {
            Ok(())
        } else {
            Err(fail(CKR_ENCRYPTED_DATA_LEN_RANGE))
        }
    }
}

fn pkcs1_encoding(hash: Hash) -> Option<&'static RsaSignatureEncoding> {
    match hash {
        Hash::Sha1 => None,
        Hash::Sha256 => Some(&sig::RSA_PKCS1_SHA256),
        Hash::Sha384 => Some(&sig::RSA_PKCS1_SHA384),
        Hash::Sha512 => Some(&sig::RSA_PKCS1_SHA512),
    }
}

fn pss_encoding(hash: Hash) -> Option<&'static RsaSignatureEncoding> {
    match hash {
        Hash::Sha1 => None,
        Hash::Sha256 => Some(&sig::RSA_PSS_SHA256),
        Hash::Sha384 => Some(&sig::RSA_PSS_SHA384),
        Hash::Sha512 => Some(&sig::RSA_PSS_SHA512),
    }
}

fn oaep_alg(hash: Hash) -> &'static aws_lc_rs::rsa::OaepAlgorithm {
    match hash {
        Hash::Sha1 => &OAEP_SHA1_MGF1SHA1,
        Hash::Sha256 => &OAEP_SHA256_MGF1SHA256,
        Hash::Sha384 => &OAEP_SHA384_MGF1SHA384,
        Hash::Sha512 => &OAEP_SHA512_MGF1SHA512,
    }
}

impl RsaPrivateKey for LcRsaPrivate {
    fn public(&self) -> PublicKey {
        let public = self.sign.public_key();
        PublicKey::Rsa {
            n: public.modulus().big_endian_without_leading_zero().to_vec(),
            e: public.exponent().big_endian_without_leading_zero().to_vec(),
        }
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sign_pkcs1(&self, hash: Hash, digest: &[u8]) -> Result<Vec<u8>> {
        let d = import_digest(hash, digest)?;
        match pkcs1_encoding(hash) {
            Some(enc) => self.sign_with(enc, &d),
            // aws-lc-rs has no SHA-1 signing encoding (not a Managed HSM algorithm).
            None => self.fallback()?.sign_pkcs1(hash, digest),
        }
    }

    fn sign_pkcs1_raw(&self, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() + 11 > self.size {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        // aws-lc-rs only pads DigestInfos it builds itself; the `rsa` crate signs
        // raw data. Its private operation is not constant-time (RUSTSEC-2023-0071)
        // but is blinded; RSNULL is a legacy mechanism kept for TLS 1.0-era clients.
        self.fallback()?.sign_pkcs1_raw(data)
    }

    fn sign_pss(&self, hash: Hash, digest: &[u8]) -> Result<Vec<u8>> {
        let d = import_digest(hash, digest)?;
        match pss_encoding(hash) {
            Some(enc) => self.sign_with(enc, &d),
            None => self.fallback()?.sign_pss(hash, digest),
        }
    }

    fn decrypt_pkcs1(&self, ciphertext: &[u8]) -> Result<SecretBytes> {
        self.check_ciphertext(ciphertext)?;
        let (pkcs1, _) = self.decrypting()?;
        let mut out = Zeroizing::new(vec![0u8; self.size]);
        // One error for every failure: no padding oracle (Bleichenbacher).
        let len = pkcs1
            .decrypt(ciphertext, &mut out)
            .map_err(because(CKR_ENCRYPTED_DATA_INVALID))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn decrypt_oaep(&self, hash: Hash, ciphertext: &[u8]) -> Result<SecretBytes> {
        self.check_ciphertext(ciphertext)?;
        let (_, oaep) = self.decrypting()?;
        let mut out = Zeroizing::new(vec![0u8; self.size]);
        let len = oaep
            .decrypt(oaep_alg(hash), ciphertext, &mut out, None)
            .map_err(because(CKR_ENCRYPTED_DATA_INVALID))?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

/// aws-lc-rs RSA public key. aws-lc-rs ties a parsed verification key to one
/// algorithm, so each of the six (RS*/PS* × SHA-2) is parsed on first use.
pub(crate) struct LcRsaPublic {
    n: Vec<u8>,
    e: Vec<u8>,
    der: Vec<u8>,
    size: usize,
    pkcs1: Pkcs1PublicEncryptingKey,
    oaep: OaepPublicEncryptingKey,
    verifiers: [OnceLock<ParsedPublicKey>; 6],
    fallback: OnceLock<RcRsaPublic>,
}

impl LcRsaPublic {
    fn new(n: &[u8], e: &[u8]) -> Result<Self> {
        let strip = |v: &[u8]| v[v.iter().position(|b| *b != 0).unwrap_or(v.len())..].to_vec();
        let (n, e) = (strip(n), strip(e));
        let spki = spki::spki_der(&PublicKey::Rsa {
            n: n.clone(),
            e: e.clone(),
        });
        let key =
            PublicEncryptingKey::from_der(&spki).map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(LcRsaPublic {
            size: key.key_size_bytes(),
            pkcs1: Pkcs1PublicEncryptingKey::new(key.clone())
                .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?,
            oaep: OaepPublicEncryptingKey::new(key)
                .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?,
            der: spki::rsa_public_key_der(&n, &e),
            n,
            e,
            verifiers: Default::default(),
            fallback: OnceLock::new(),
        })
    }

    fn fallback(&self) -> Result<&RcRsaPublic> {
        get_or_try_init(&self.fallback, || RcRsaPublic::new(&self.n, &self.e))
    }

    fn check_sig_len(&self, signature: &[u8]) -> Result<()> {
        if signature.len() == self.size {
            Ok(())
        } else {
            Err(fail(CKR_SIGNATURE_LEN_RANGE))
        }
    }

    /// Verifies with the parsed key for `params`, parsing it on first use.
    fn verify_with(
        &self,
        slot: usize,
        params: &'static RsaParameters,
        hash: Hash,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        let key = get_or_try_init(&self.verifiers[slot], || {
            ParsedPublicKey::new(params, &self.der).map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))
        })?;
        let d = import_digest(hash, digest).map_err(because(CKR_SIGNATURE_INVALID))?;
        key.verify_digest_sig(&d, signature)
            .map_err(because(CKR_SIGNATURE_INVALID))
    }
}

impl RsaPublicKey for LcRsaPublic {
    fn size(&self) -> usize {
        self.size
    }

    fn verify_pkcs1(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> Result<()> {
        self.check_sig_len(signature)?;
        match hash {
            Hash::Sha256 => {
                self.verify_with(0, &sig::RSA_PKCS1_2048_8192_SHA256, hash, digest, signature)
            }
            Hash::Sha384 => {
                self.verify_with(1, &sig::RSA_PKCS1_2048_8192_SHA384, hash, digest, signature)
            }
            Hash::Sha512 => {
                self.verify_with(2, &sig::RSA_PKCS1_2048_8192_SHA512, hash, digest, signature)
            }
            Hash::Sha1 => self.fallback()?.verify_pkcs1(hash, digest, signature),
        }
    }

    fn verify_pkcs1_raw(&self, data: &[u8], signature: &[u8]) -> Result<()> {
        self.check_sig_len(signature)?;
        // No raw PKCS#1 verification in aws-lc-rs; a public operation, so no
        // timing concern in handing it to the `rsa` crate.
        self.fallback()?.verify_pkcs1_raw(data, signature)
    }

    fn verify_pss(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> Result<()> {
        self.check_sig_len(signature)?;
        match hash {
            Hash::Sha256 => {
                self.verify_with(3, &sig::RSA_PSS_2048_8192_SHA256, hash, digest, signature)
            }
            Hash::Sha384 => {
                self.verify_with(4, &sig::RSA_PSS_2048_8192_SHA384, hash, digest, signature)
            }
            Hash::Sha512 => {
                self.verify_with(5, &sig::RSA_PSS_2048_8192_SHA512, hash, digest, signature)
            }
            Hash::Sha1 => self.fallback()?.verify_pss(hash, digest, signature),
        }
    }

    fn encrypt_pkcs1(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() + 11 > self.size {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        let mut out = vec![0u8; self.size];
        let len = self
            .pkcs1
            .encrypt(plaintext, &mut out)
            .map_err(because(CKR_FUNCTION_FAILED))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn encrypt_oaep(&self, hash: Hash, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() + 2 * hash.len() + 2 > self.size {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        let mut out = vec![0u8; self.size];
        let len = self
            .oaep
            .encrypt(oaep_alg(hash), plaintext, &mut out, None)
            .map_err(because(CKR_FUNCTION_FAILED))?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

// ---------------------------------------------------------------- EC

fn ec_signing(curve: Curve) -> &'static EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P256K => &sig::ECDSA_P256K1_SHA256_FIXED_SIGNING,
        Curve::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &sig::ECDSA_P521_SHA512_FIXED_SIGNING,
    }
}

fn ec_verification(curve: Curve) -> &'static EcdsaVerificationAlgorithm {
    match curve {
        Curve::P256 => &sig::ECDSA_P256_SHA256_FIXED,
        Curve::P256K => &sig::ECDSA_P256K1_SHA256_FIXED,
        Curve::P384 => &sig::ECDSA_P384_SHA384_FIXED,
        Curve::P521 => &sig::ECDSA_P521_SHA512_FIXED,
    }
}

struct LcEcPrivate {
    key: EcdsaKeyPair,
    curve: Curve,
}

impl EcPrivateKey for LcEcPrivate {
    fn public(&self) -> PublicKey {
        PublicKey::Ec {
            curve: self.curve,
            point: self.key.public_key().as_ref().to_vec(),
        }
    }

    fn sign_prehash(&self, digest: &[u8]) -> Result<Vec<u8>> {
        let d = import_digest(self.curve.hash(), digest)?;
        let signature = self
            .key
            .sign_digest(&d)
            .map_err(because(CKR_FUNCTION_FAILED))?;
        Ok(signature.as_ref().to_vec())
    }
}

struct LcEcPublic {
    key: ParsedPublicKey,
    curve: Curve,
}

impl EcPublicKey for LcEcPublic {
    fn verify_prehash(&self, digest: &[u8], signature: &[u8]) -> Result<()> {
        if signature.len() != 2 * self.curve.field_len() {
            return Err(fail(CKR_SIGNATURE_LEN_RANGE));
        }
        let d = import_digest(self.curve.hash(), digest).map_err(because(CKR_SIGNATURE_INVALID))?;
        self.key
            .verify_digest_sig(&d, signature)
            .map_err(because(CKR_SIGNATURE_INVALID))
    }
}

// ---------------------------------------------------------------- ML-DSA

fn ml_dsa_signing(set: MlDsa) -> &'static PqdsaSigningAlgorithm {
    match set {
        MlDsa::P44 => &sig::ML_DSA_44_SIGNING,
        MlDsa::P65 => &sig::ML_DSA_65_SIGNING,
        MlDsa::P87 => &sig::ML_DSA_87_SIGNING,
    }
}

fn ml_dsa_verification(set: MlDsa) -> &'static PqdsaVerificationAlgorithm {
    match set {
        MlDsa::P44 => &sig::ML_DSA_44,
        MlDsa::P65 => &sig::ML_DSA_65,
        MlDsa::P87 => &sig::ML_DSA_87,
    }
}

/// aws-lc's NID for `set`.
fn ml_dsa_nid(set: MlDsa) -> std::ffi::c_int {
    match set {
        MlDsa::P44 => pqdsa::NID_MLDSA44,
        MlDsa::P65 => pqdsa::NID_MLDSA65,
        MlDsa::P87 => pqdsa::NID_MLDSA87,
    }
}

/// An ML-DSA private key: aws-lc-rs's key pair signs with the empty context
/// (the common case, at aws-lc-rs's speed); a context or a μ goes through
/// aws-lc's EVP interface ([`pqdsa`]) and the deterministic variant through
/// RustCrypto's `ml-dsa` ([`DeterministicSigner`]), each key expanded from
/// the seed on its first use.
struct LcMlDsaPrivate {
    key: PqdsaKeyPair,
    set: MlDsa,
    seed: SecretBytes,
    evp: OnceLock<PqdsaKey>,
    deterministic: OnceLock<DeterministicSigner>,
    tr: OnceLock<[u8; ML_DSA_MU_LEN]>,
}

impl LcMlDsaPrivate {
    fn evp(&self) -> Result<&PqdsaKey> {
        get_or_try_init(&self.evp, || {
            PqdsaKey::from_seed(ml_dsa_nid(self.set), &self.seed).ok_or(fail(CKR_FUNCTION_FAILED))
        })
    }

    fn deterministic(&self) -> Result<&DeterministicSigner> {
        get_or_try_init(&self.deterministic, || {
            DeterministicSigner::from_seed(self.set, &self.seed)
        })
    }
}

impl MlDsaPrivateKey for LcMlDsaPrivate {
    fn public(&self) -> PublicKey {
        PublicKey::MlDsa {
            set: self.set,
            key: self.key.public_key().as_ref().to_vec(),
        }
    }

    fn sign(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        if !context.is_empty() {
            return self
                .evp()?
                .sign(message, context, self.set.signature_len())
                .ok_or(fail(CKR_FUNCTION_FAILED));
        }
        let mut out = vec![0u8; self.set.signature_len()];
        let len = self
            .key
            .sign(message, &mut out)
            .map_err(because(CKR_FUNCTION_FAILED))?;
        out.truncate(len);
        Ok(out)
    }

    fn sign_deterministic(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        self.deterministic()?.sign(message, context)
    }

    fn sign_mu(&self, mu: &[u8]) -> Result<Vec<u8>> {
        if mu.len() != ML_DSA_MU_LEN {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        self.evp()?
            .sign_mu(mu, self.set.signature_len())
            .ok_or(fail(CKR_FUNCTION_FAILED))
    }

    fn sign_mu_deterministic(&self, mu: &[u8]) -> Result<Vec<u8>> {
        self.deterministic()?.sign_mu(mu)
    }

    fn tr(&self) -> Result<[u8; ML_DSA_MU_LEN]> {
        get_or_try_init(&self.tr, || tr_of(self.key.public_key().as_ref())).copied()
    }
}

/// tr = SHAKE256(pk, 64) of an ML-DSA public key (FIPS 204 Algorithm 6 step 27).
fn tr_of(public: &[u8]) -> Result<[u8; ML_DSA_MU_LEN]> {
    let mut d = EvpDigest::new(PreHash::Shake256).ok_or(fail(CKR_FUNCTION_FAILED))?;
    d.update(public);
    d.finish()
        .and_then(|t| t.try_into().ok())
        .ok_or(fail(CKR_FUNCTION_FAILED))
}

/// An ML-DSA public key, as [`LcMlDsaPrivate`]: a context verifies through
/// aws-lc's EVP interface.
struct LcMlDsaPublic {
    key: ParsedPublicKey,
    set: MlDsa,
    raw: Vec<u8>,
    evp: OnceLock<PqdsaKey>,
    tr: OnceLock<[u8; ML_DSA_MU_LEN]>,
}

impl LcMlDsaPublic {
    fn evp(&self) -> Result<&PqdsaKey> {
        get_or_try_init(&self.evp, || {
            PqdsaKey::from_public(ml_dsa_nid(self.set), &self.raw).ok_or(fail(CKR_FUNCTION_FAILED))
        })
    }
}

impl MlDsaPublicKey for LcMlDsaPublic {
    fn tr(&self) -> Result<[u8; ML_DSA_MU_LEN]> {
        get_or_try_init(&self.tr, || tr_of(&self.raw)).copied()
    }

    fn verify(&self, message: &[u8], context: &[u8], signature: &[u8]) -> Result<()> {
        if signature.len() != self.set.signature_len() {
            return Err(fail(CKR_SIGNATURE_LEN_RANGE));
        }
        if !context.is_empty() {
            return match self.evp()?.verify(message, context, signature) {
                true => Ok(()),
                false => Err(fail(CKR_SIGNATURE_INVALID)),
            };
        }
        self.key
            .verify_sig(message, signature)
            .map_err(because(CKR_SIGNATURE_INVALID))
    }

    fn verify_mu(&self, mu: &[u8], signature: &[u8]) -> Result<()> {
        if mu.len() != ML_DSA_MU_LEN {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        if signature.len() != self.set.signature_len() {
            return Err(fail(CKR_SIGNATURE_LEN_RANGE));
        }
        match self.evp()?.verify_mu(mu, signature) {
            true => Ok(()),
            false => Err(fail(CKR_SIGNATURE_INVALID)),
        }
    }
}

// ---------------------------------------------------------------- ML-KEM

fn ml_kem(set: MlKem) -> &'static kem::Algorithm {
    match set {
        MlKem::P512 => &kem::ML_KEM_512,
        MlKem::P768 => &kem::ML_KEM_768,
        MlKem::P1024 => &kem::ML_KEM_1024,
    }
}

struct LcMlKemPrivate {
    key: DecapsulationKey,
    set: MlKem,
    public: Vec<u8>,
}

impl MlKemPrivateKey for LcMlKemPrivate {
    fn public(&self) -> PublicKey {
        PublicKey::MlKem {
            set: self.set,
            key: self.public.clone(),
        }
    }

    fn decapsulate(&self, ciphertext: &[u8]) -> Result<SecretBytes> {
        if ciphertext.len() != self.set.ciphertext_len() {
            return Err(fail(CKR_ENCRYPTED_DATA_LEN_RANGE));
        }
        let secret = self
            .key
            .decapsulate(Ciphertext::from(ciphertext))
            .map_err(because(CKR_FUNCTION_FAILED))?;
        Ok(Zeroizing::new(secret.as_ref().to_vec()))
    }
}

struct LcMlKemPublic {
    key: EncapsulationKey,
}

impl MlKemPublicKey for LcMlKemPublic {
    fn encapsulate(&self) -> Result<(Vec<u8>, SecretBytes)> {
        let (ct, secret) = self
            .key
            .encapsulate()
            .map_err(because(CKR_FUNCTION_FAILED))?;
        Ok((
            ct.as_ref().to_vec(),
            Zeroizing::new(secret.as_ref().to_vec()),
        ))
    }
}

// ---------------------------------------------------------------- AES

/// aws-lc-rs AES key with its GCM and CBC contexts set up once.
struct LcAes {
    gcm: LessSafeKey,
    cbc_enc: EncryptingKey,
    cbc_dec: DecryptingKey,
    pad_enc: PaddedBlockEncryptingKey,
    pad_dec: PaddedBlockDecryptingKey,
    /// aws-lc-rs's key-wrap KEK is consumed by each use, so the key is kept.
    key: SecretBytes,
    /// RustCrypto's key, for what aws-lc-rs lacks (short GCM tags on open, AES-192 KW).
    fallback: OnceLock<Arc<dyn AesKey>>,
}

impl LcAes {
    fn new(key: &[u8]) -> Result<Self> {
        let (aead_alg, cipher_alg) = match key.len() {
            16 => (&aead::AES_128_GCM, &aws_lc_rs::cipher::AES_128),
            24 => (&aead::AES_192_GCM, &aws_lc_rs::cipher::AES_192),
            32 => (&aead::AES_256_GCM, &aws_lc_rs::cipher::AES_256),
            _ => return Err(fail(CKR_KEY_SIZE_RANGE)),
        };
        let bad = |e| because(CKR_KEY_SIZE_RANGE)(e);
        let unbound = || UnboundCipherKey::new(cipher_alg, key).map_err(bad);
        Ok(LcAes {
            gcm: LessSafeKey::new(UnboundKey::new(aead_alg, key).map_err(bad)?),
            cbc_enc: EncryptingKey::cbc(unbound()?).map_err(bad)?,
            cbc_dec: DecryptingKey::cbc(unbound()?).map_err(bad)?,
            pad_enc: PaddedBlockEncryptingKey::cbc_pkcs7(unbound()?).map_err(bad)?,
            pad_dec: PaddedBlockDecryptingKey::cbc_pkcs7(unbound()?).map_err(bad)?,
            key: Zeroizing::new(key.to_vec()),
            fallback: OnceLock::new(),
        })
    }

    fn fallback(&self) -> Result<&Arc<dyn AesKey>> {
        get_or_try_init(&self.fallback, || RustCrypto.aes(&self.key))
    }

    /// The key-wrap KEK, or `None` for AES-192 (aws-lc-rs offers 128 and 256 only).
    fn kek(&self) -> Result<Option<KeyEncryptionKey<key_wrap::AesBlockCipher>>> {
        let cipher = match self.key.len() {
            16 => &key_wrap::AES_128,
            32 => &key_wrap::AES_256,
            _ => return Ok(None),
        };
        KeyEncryptionKey::new(cipher, &self.key)
            .map(Some)
            .map_err(because(CKR_KEY_SIZE_RANGE))
    }
}

impl AesKey for LcAes {
    fn gcm_seal(&self, iv: &[u8], aad: &[u8], plaintext: &[u8], tag_len: usize) -> Result<Vec<u8>> {
        check_gcm_params(iv, tag_len)?;
        let nonce =
            Nonce::try_assume_unique_for_key(iv).map_err(because(CKR_MECHANISM_PARAM_INVALID))?;
        let mut out = Vec::with_capacity(plaintext.len() + 16);
        out.extend_from_slice(plaintext);
        let tag = self
            .gcm
            .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut out)
            .map_err(because(CKR_DATA_LEN_RANGE))?;
        // A truncated GCM tag is the prefix of the full one (SP 800-38D §5.2.1.2).
        out.extend_from_slice(&tag.as_ref()[..tag_len]);
        Ok(out)
    }

    fn gcm_open(
        &self,
        iv: &[u8],
        aad: &[u8],
        sealed: &[u8],
        tag_len: usize,
    ) -> Result<SecretBytes> {
        check_gcm_params(iv, tag_len)?;
        if tag_len != 16 {
            return self.fallback()?.gcm_open(iv, aad, sealed, tag_len);
        }
        let split = sealed
            .len()
            .checked_sub(16)
            .ok_or(fail(CKR_ENCRYPTED_DATA_LEN_RANGE))?;
        let (ct, tag) = sealed.split_at(split);
        let nonce =
            Nonce::try_assume_unique_for_key(iv).map_err(because(CKR_MECHANISM_PARAM_INVALID))?;
        let mut out = Zeroizing::new(ct.to_vec());
        self.gcm
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, &mut out)
            .map_err(because(CKR_ENCRYPTED_DATA_INVALID))?;
        Ok(out)
    }

    fn cbc_encrypt(&self, iv: &[u8; 16], plaintext: &[u8], pad: bool) -> Result<Vec<u8>> {
        let context = EncryptionContext::Iv128(FixedLength::from(iv));
        let mut out = plaintext.to_vec();
        if pad {
            self.pad_enc
                .less_safe_encrypt(&mut out, context)
                .map_err(because(CKR_DATA_LEN_RANGE))?;
        } else {
            if !plaintext.len().is_multiple_of(16) {
                return Err(fail(CKR_DATA_LEN_RANGE));
            }
            self.cbc_enc
                .less_safe_encrypt(&mut out, context)
                .map_err(because(CKR_DATA_LEN_RANGE))?;
        }
        Ok(out)
    }

    fn cbc_decrypt(&self, iv: &[u8; 16], ciphertext: &[u8], pad: bool) -> Result<SecretBytes> {
        if !ciphertext.len().is_multiple_of(16) || (pad && ciphertext.is_empty()) {
            return Err(fail(CKR_ENCRYPTED_DATA_LEN_RANGE));
        }
        let context = DecryptionContext::Iv128(FixedLength::from(iv));
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = if pad {
            self.pad_dec
                .decrypt(&mut buf, context)
                .map_err(because(CKR_ENCRYPTED_DATA_INVALID))?
                .len()
        } else {
            self.cbc_dec
                .decrypt(&mut buf, context)
                .map_err(because(CKR_ENCRYPTED_DATA_LEN_RANGE))?
                .len()
        };
        buf.truncate(len);
        Ok(buf)
    }

    fn kw_wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() < 16 || !plaintext.len().is_multiple_of(8) {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        let Some(kek) = self.kek()? else {
            return self.fallback()?.kw_wrap(plaintext);
        };
        let mut out = vec![0u8; plaintext.len() + 8];
        let len = kek
            .wrap(plaintext, &mut out)
            .map_err(because(CKR_DATA_LEN_RANGE))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn kw_unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes> {
        if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
            return Err(fail(CKR_WRAPPED_KEY_LEN_RANGE));
        }
        let Some(kek) = self.kek()? else {
            return self.fallback()?.kw_unwrap(wrapped);
        };
        let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
        let len = kek
            .unwrap(wrapped, &mut out)
            .map_err(because(CKR_WRAPPED_KEY_INVALID))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn kwp_wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.is_empty() {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        let Some(kek) = self.kek()? else {
            return self.fallback()?.kwp_wrap(plaintext);
        };
        let mut out = vec![0u8; plaintext.len() + 16];
        let len = kek
            .wrap_with_padding(plaintext, &mut out)
            .map_err(because(CKR_DATA_LEN_RANGE))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn kwp_unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes> {
        if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
            return Err(fail(CKR_WRAPPED_KEY_LEN_RANGE));
        }
        let Some(kek) = self.kek()? else {
            return self.fallback()?.kwp_unwrap(wrapped);
        };
        let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
        let len = kek
            .unwrap_with_padding(wrapped, &mut out)
            .map_err(because(CKR_WRAPPED_KEY_INVALID))?
            .len();
        out.truncate(len);
        Ok(out)
    }
}
