//! Pure-Rust (RustCrypto) provider: complete on its own, for builds without C code.
//!
//! The default build also uses it where it is the better choice: secp256k1
//! (`k256` is ~6× faster than aws-lc's generic curve code), RSNULL and key import
//! from components (aws-lc-rs has no API for them). See `router.rs`.

use super::{
    AesKey, Curve, EcPrivateKey, EcPublicKey, Hash, Hasher, PublicKey, RsaParts, RsaPrivateKey,
    RsaPublicKey, SecretBytes,
};
use crate::error::{Error, Result};
use aes::cipher::{
    block_padding::{NoPadding, Pkcs7},
    consts::{U12, U13, U14, U15, U16},
    generic_array::GenericArray,
    BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, BlockSizeUser,
    InnerIvInit, KeyInit,
};
use aes_gcm::{aead::AeadInPlace, AesGcm};
use cryptoki_sys::*;
use rand_core::OsRng;
use rsa::{
    pkcs8::{DecodePrivateKey, EncodePrivateKey},
    traits::PublicKeyParts,
    BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss,
};
use sha2::Digest as _;
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

/// The RustCrypto implementation of [`super::Provider`].
pub struct RustCrypto;

fn fail(rv: CK_RV) -> Error {
    Error(rv)
}

/// Maps a crypto library's error to `rv`, the one place its reason is logged
/// (at debug level: the libraries' reasons are uninformative, never secret).
pub(crate) fn because<E: std::fmt::Debug>(rv: CK_RV) -> impl FnOnce(E) -> Error {
    move |e| {
        log::debug!("{}: {e:?}", crate::error::rv_name(rv));
        Error(rv)
    }
}

/// Copies a DER document into wiped-on-drop memory.
fn secret(bytes: &[u8]) -> SecretBytes {
    Zeroizing::new(bytes.to_vec())
}

/// Digest length must match the hash: a short "digest" would silently be signed as is.
fn check_digest(hash: Hash, digest: &[u8]) -> Result<()> {
    if digest.len() == hash.len() {
        Ok(())
    } else {
        Err(fail(CKR_DATA_LEN_RANGE))
    }
}

impl super::Provider for RustCrypto {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        getrandom::getrandom(out).map_err(|e| {
            log::error!("getrandom failed: {e}");
            fail(CKR_FUNCTION_FAILED)
        })
    }

    fn hasher(&self, hash: Hash) -> Box<dyn Hasher> {
        match hash {
            Hash::Sha1 => Box::new(RcHasher(sha1::Sha1::new())),
            Hash::Sha256 => Box::new(RcHasher(sha2::Sha256::new())),
            Hash::Sha384 => Box::new(RcHasher(sha2::Sha384::new())),
            Hash::Sha512 => Box::new(RcHasher(sha2::Sha512::new())),
        }
    }

    fn generate_rsa(&self, bits: usize) -> Result<SecretBytes> {
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(fail(CKR_KEY_SIZE_RANGE));
        }
        let key = rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(|e| {
            log::error!("rsa keygen failed: {e}");
            fail(CKR_FUNCTION_FAILED)
        })?;
        rsa_pkcs8(&key)
    }

    fn generate_ec(&self, curve: Curve) -> Result<SecretBytes> {
        let doc = match curve {
            Curve::P256 => p256::SecretKey::random(&mut OsRng).to_pkcs8_der(),
            Curve::P256K => k256::SecretKey::random(&mut OsRng).to_pkcs8_der(),
            Curve::P384 => p384::SecretKey::random(&mut OsRng).to_pkcs8_der(),
            Curve::P521 => p521::SecretKey::random(&mut OsRng).to_pkcs8_der(),
        }
        .map_err(because(CKR_FUNCTION_FAILED))?;
        Ok(secret(doc.as_bytes()))
    }

    fn import_rsa(&self, parts: &RsaParts) -> Result<SecretBytes> {
        let primes = match (&parts.p, &parts.q) {
            (Some(p), Some(q)) => vec![BigUint::from_bytes_be(p), BigUint::from_bytes_be(q)],
            // Without both primes the crate recovers them from n, e, d (SP 800-56B C.2).
            _ => Vec::new(),
        };
        let n = BigUint::from_bytes_be(&parts.n);
        let key = rsa::RsaPrivateKey::from_components(
            n.clone(),
            BigUint::from_bytes_be(&parts.e),
            BigUint::from_bytes_be(&parts.d),
            primes,
        )
        .map_err(|e| {
            log::debug!("rsa components rejected: {e}");
            fail(CKR_ATTRIBUTE_VALUE_INVALID)
        })?;
        // from_components validates d against p, q; n must also be their product.
        if key.n() != &n {
            return Err(fail(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        rsa_pkcs8(&key)
    }

    fn import_ec(&self, curve: Curve, scalar: &[u8]) -> Result<SecretBytes> {
        let fixed = fixed_scalar(curve, scalar)?;
        let doc = match curve {
            Curve::P256 => {
                p256::SecretKey::from_slice(&fixed).and_then(|k| pkcs8_ec(k.to_pkcs8_der()))
            }
            Curve::P256K => {
                k256::SecretKey::from_slice(&fixed).and_then(|k| pkcs8_ec(k.to_pkcs8_der()))
            }
            Curve::P384 => {
                p384::SecretKey::from_slice(&fixed).and_then(|k| pkcs8_ec(k.to_pkcs8_der()))
            }
            Curve::P521 => {
                p521::SecretKey::from_slice(&fixed).and_then(|k| pkcs8_ec(k.to_pkcs8_der()))
            }
        }
        .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(doc)
    }

    fn rsa_private(&self, pkcs8: &[u8]) -> Result<Arc<dyn RsaPrivateKey>> {
        Ok(Arc::new(RcRsaPrivate::from_pkcs8(pkcs8)?))
    }

    fn rsa_public(&self, n: &[u8], e: &[u8]) -> Result<Arc<dyn RsaPublicKey>> {
        Ok(Arc::new(RcRsaPublic::new(n, e)?))
    }

    fn ec_private(&self, curve: Curve, pkcs8: &[u8]) -> Result<Arc<dyn EcPrivateKey>> {
        Ok(match curve {
            Curve::P256 => Arc::new(P256Private::from_pkcs8(pkcs8)?),
            Curve::P256K => Arc::new(K256Private::from_pkcs8(pkcs8)?),
            Curve::P384 => Arc::new(P384Private::from_pkcs8(pkcs8)?),
            Curve::P521 => Arc::new(P521Private::from_pkcs8(pkcs8)?),
        })
    }

    fn ec_public(&self, curve: Curve, point: &[u8]) -> Result<Arc<dyn EcPublicKey>> {
        // Only the uncompressed form crosses the seam (see mod.rs).
        if point.len() != 1 + 2 * curve.field_len() || point[0] != 0x04 {
            return Err(fail(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        Ok(match curve {
            Curve::P256 => Arc::new(P256Public::from_point(point)?),
            Curve::P256K => Arc::new(K256Public::from_point(point)?),
            Curve::P384 => Arc::new(P384Public::from_point(point)?),
            Curve::P521 => Arc::new(P521Public::from_point(point)?),
        })
    }

    fn aes(&self, key: &[u8]) -> Result<Arc<dyn AesKey>> {
        Ok(match key.len() {
            16 => Arc::new(RcAes::<aes::Aes128>::new(key)?),
            24 => Arc::new(RcAes::<aes::Aes192>::new(key)?),
            32 => Arc::new(RcAes::<aes::Aes256>::new(key)?),
            _ => return Err(fail(CKR_KEY_SIZE_RANGE)),
        })
    }

    // RustCrypto's `ml-dsa` is a release candidate without an audit (README,
    // "Post-quantum keys"): the pure-Rust build lists no ML-DSA mechanism,
    // HashML-DSA included.
    fn pre_hasher(&self, _hash: super::PreHash) -> Result<Box<dyn Hasher>> {
        Err(fail(CKR_MECHANISM_INVALID))
    }

    fn generate_ml_dsa(&self, _set: super::MlDsa) -> Result<SecretBytes> {
        Err(fail(CKR_MECHANISM_INVALID))
    }

    fn ml_dsa_private(
        &self,
        _set: super::MlDsa,
        _seed: &[u8],
    ) -> Result<Arc<dyn super::MlDsaPrivateKey>> {
        Err(fail(CKR_MECHANISM_INVALID))
    }

    fn ml_dsa_public(
        &self,
        _set: super::MlDsa,
        _key: &[u8],
    ) -> Result<Arc<dyn super::MlDsaPublicKey>> {
        Err(fail(CKR_MECHANISM_INVALID))
    }

    // Likewise `ml-kem` (README): no ML-KEM in the pure-Rust build.
    fn generate_ml_kem(&self, _set: super::MlKem) -> Result<SecretBytes> {
        Err(fail(CKR_MECHANISM_INVALID))
    }

    fn ml_kem_private(
        &self,
        _set: super::MlKem,
        _dk: &[u8],
    ) -> Result<Arc<dyn super::MlKemPrivateKey>> {
        Err(fail(CKR_MECHANISM_INVALID))
    }

    fn ml_kem_public(
        &self,
        _set: super::MlKem,
        _ek: &[u8],
    ) -> Result<Arc<dyn super::MlKemPublicKey>> {
        Err(fail(CKR_MECHANISM_INVALID))
    }
}

fn rsa_pkcs8(key: &rsa::RsaPrivateKey) -> Result<SecretBytes> {
    let doc = key.to_pkcs8_der().map_err(because(CKR_FUNCTION_FAILED))?;
    Ok(secret(doc.as_bytes()))
}

fn pkcs8_ec(
    doc: std::result::Result<rsa::pkcs8::SecretDocument, rsa::pkcs8::Error>,
) -> std::result::Result<SecretBytes, p256::elliptic_curve::Error> {
    doc.map(|d| secret(d.as_bytes()))
        .map_err(|_| p256::elliptic_curve::Error)
}

/// Left-pads a big-endian scalar to the curve's field size (PKCS#11 clients may
/// strip leading zeros from `CKA_VALUE`).
fn fixed_scalar(curve: Curve, scalar: &[u8]) -> Result<SecretBytes> {
    let lead = scalar.iter().position(|b| *b != 0).unwrap_or(scalar.len());
    let s = &scalar[lead..];
    let len = curve.field_len();
    if s.is_empty() || s.len() > len {
        return Err(fail(CKR_ATTRIBUTE_VALUE_INVALID));
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    out[len - s.len()..].copy_from_slice(s);
    Ok(out)
}

struct RcHasher<D>(D);

impl<D: sha2::Digest + Send + 'static> Hasher for RcHasher<D> {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finish(self: Box<Self>) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

// ---------------------------------------------------------------- RSA

/// An `rsa` crate private key. Its private operations are not constant-time
/// (RUSTSEC-2023-0071, the Marvin attack); blinding is always used, and the
/// default build routes RSA signing and decryption to aws-lc-rs instead.
pub(crate) struct RcRsaPrivate {
    key: rsa::RsaPrivateKey,
    size: usize,
}

impl RcRsaPrivate {
    /// Parses PKCS#8 DER.
    pub(crate) fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
            .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(RcRsaPrivate {
            size: key.size(),
            key,
        })
    }
}

/// PKCS#1 v1.5 signature scheme for a DigestInfo prefix taken from [`Hash`].
fn pkcs1_scheme(hash: Hash) -> Pkcs1v15Sign {
    Pkcs1v15Sign {
        hash_len: Some(hash.len()),
        prefix: hash.digest_info_prefix().into(),
    }
}

/// PSS with MGF1 of the same hash and salt = hash length (PS256/384/512).
fn pss_scheme(hash: Hash) -> Pss {
    match hash {
        Hash::Sha1 => Pss::new_with_salt::<sha1::Sha1>(hash.len()),
        Hash::Sha256 => Pss::new_with_salt::<sha2::Sha256>(hash.len()),
        Hash::Sha384 => Pss::new_with_salt::<sha2::Sha384>(hash.len()),
        Hash::Sha512 => Pss::new_with_salt::<sha2::Sha512>(hash.len()),
    }
}

fn oaep_scheme(hash: Hash) -> Oaep {
    match hash {
        Hash::Sha1 => Oaep::new::<sha1::Sha1>(),
        Hash::Sha256 => Oaep::new::<sha2::Sha256>(),
        Hash::Sha384 => Oaep::new::<sha2::Sha384>(),
        Hash::Sha512 => Oaep::new::<sha2::Sha512>(),
    }
}

fn rsa_public_of(key: &impl PublicKeyParts) -> PublicKey {
    PublicKey::Rsa {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    }
}

impl RsaPrivateKey for RcRsaPrivate {
    fn public(&self) -> PublicKey {
        rsa_public_of(&self.key)
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sign_pkcs1(&self, hash: Hash, digest: &[u8]) -> Result<Vec<u8>> {
        check_digest(hash, digest)?;
        self.key
            .sign_with_rng(&mut OsRng, pkcs1_scheme(hash), digest)
            .map_err(because(CKR_FUNCTION_FAILED))
    }

    fn sign_pkcs1_raw(&self, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() + 11 > self.size {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        self.key
            .sign_with_rng(&mut OsRng, Pkcs1v15Sign::new_unprefixed(), data)
            .map_err(because(CKR_FUNCTION_FAILED))
    }

    fn sign_pss(&self, hash: Hash, digest: &[u8]) -> Result<Vec<u8>> {
        check_digest(hash, digest)?;
        self.key
            .sign_with_rng(&mut OsRng, pss_scheme(hash), digest)
            .map_err(because(CKR_FUNCTION_FAILED))
    }

    fn decrypt_pkcs1(&self, ciphertext: &[u8]) -> Result<SecretBytes> {
        if ciphertext.len() != self.size {
            return Err(fail(CKR_ENCRYPTED_DATA_LEN_RANGE));
        }
        self.key
            .decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, ciphertext)
            .map(Zeroizing::new)
            .map_err(because(CKR_ENCRYPTED_DATA_INVALID))
    }

    fn decrypt_oaep(&self, hash: Hash, ciphertext: &[u8]) -> Result<SecretBytes> {
        if ciphertext.len() != self.size {
            return Err(fail(CKR_ENCRYPTED_DATA_LEN_RANGE));
        }
        self.key
            .decrypt_blinded(&mut OsRng, oaep_scheme(hash), ciphertext)
            .map(Zeroizing::new)
            .map_err(because(CKR_ENCRYPTED_DATA_INVALID))
    }
}

/// An `rsa` crate public key.
pub(crate) struct RcRsaPublic {
    key: rsa::RsaPublicKey,
    size: usize,
}

impl RcRsaPublic {
    /// Builds the key from big-endian modulus and exponent.
    pub(crate) fn new(n: &[u8], e: &[u8]) -> Result<Self> {
        let key = rsa::RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
            .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(RcRsaPublic {
            size: key.size(),
            key,
        })
    }

    fn check_sig_len(&self, signature: &[u8]) -> Result<()> {
        if signature.len() == self.size {
            Ok(())
        } else {
            Err(fail(CKR_SIGNATURE_LEN_RANGE))
        }
    }
}

impl RsaPublicKey for RcRsaPublic {
    fn size(&self) -> usize {
        self.size
    }

    fn verify_pkcs1(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> Result<()> {
        self.check_sig_len(signature)?;
        check_digest(hash, digest).map_err(because(CKR_SIGNATURE_INVALID))?;
        self.key
            .verify(pkcs1_scheme(hash), digest, signature)
            .map_err(because(CKR_SIGNATURE_INVALID))
    }

    fn verify_pkcs1_raw(&self, data: &[u8], signature: &[u8]) -> Result<()> {
        self.check_sig_len(signature)?;
        if data.len() + 11 > self.size {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        self.key
            .verify(Pkcs1v15Sign::new_unprefixed(), data, signature)
            .map_err(because(CKR_SIGNATURE_INVALID))
    }

    fn verify_pss(&self, hash: Hash, digest: &[u8], signature: &[u8]) -> Result<()> {
        self.check_sig_len(signature)?;
        check_digest(hash, digest).map_err(because(CKR_SIGNATURE_INVALID))?;
        self.key
            .verify(pss_scheme(hash), digest, signature)
            .map_err(because(CKR_SIGNATURE_INVALID))
    }

    fn encrypt_pkcs1(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() + 11 > self.size {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        self.key
            .encrypt(&mut OsRng, Pkcs1v15Encrypt, plaintext)
            .map_err(because(CKR_FUNCTION_FAILED))
    }

    fn encrypt_oaep(&self, hash: Hash, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() + 2 * hash.len() + 2 > self.size {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        self.key
            .encrypt(&mut OsRng, oaep_scheme(hash), plaintext)
            .map_err(because(CKR_FUNCTION_FAILED))
    }
}

// ---------------------------------------------------------------- EC

/// One private/public key pair of types per curve; the crates share an API shape
/// but not a trait that covers all of it (p521 wraps its `SigningKey`).
macro_rules! ec_curve {
    ($private:ident, $public:ident, $krate:ident, $curve:expr, $normalize_s:expr) => {
        struct $private {
            key: $krate::ecdsa::SigningKey,
            point: Vec<u8>,
        }

        impl $private {
            fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
                let secret = $krate::SecretKey::from_pkcs8_der(pkcs8)
                    .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
                use $krate::elliptic_curve::sec1::ToEncodedPoint;
                let mut bytes = secret.to_bytes();
                let key = $krate::ecdsa::SigningKey::from_bytes(&bytes);
                bytes.as_mut_slice().zeroize();
                let key = key.map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
                // From the secret key: p521 0.13 gates `SigningKey::verifying_key`
                // behind a feature it does not define.
                let point = secret
                    .public_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec();
                Ok($private { key, point })
            }
        }

        impl EcPrivateKey for $private {
            fn public(&self) -> PublicKey {
                PublicKey::Ec {
                    curve: $curve,
                    point: self.point.clone(),
                }
            }

            fn sign_prehash(&self, digest: &[u8]) -> Result<Vec<u8>> {
                use $krate::ecdsa::signature::hazmat::PrehashSigner;
                check_digest($curve.hash(), digest)?;
                let sig: $krate::ecdsa::Signature = self
                    .key
                    .sign_prehash(digest)
                    .map_err(because(CKR_FUNCTION_FAILED))?;
                Ok(sig.to_bytes().to_vec())
            }
        }

        struct $public {
            key: $krate::ecdsa::VerifyingKey,
        }

        impl $public {
            fn from_point(point: &[u8]) -> Result<Self> {
                let key = $krate::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(because(CKR_ATTRIBUTE_VALUE_INVALID))?;
                Ok($public { key })
            }
        }

        impl EcPublicKey for $public {
            fn verify_prehash(&self, digest: &[u8], signature: &[u8]) -> Result<()> {
                use $krate::ecdsa::signature::hazmat::PrehashVerifier;
                if signature.len() != 2 * $curve.field_len() {
                    return Err(fail(CKR_SIGNATURE_LEN_RANGE));
                }
                check_digest($curve.hash(), digest).map_err(because(CKR_SIGNATURE_INVALID))?;
                let mut sig = $krate::ecdsa::Signature::from_slice(signature)
                    .map_err(because(CKR_SIGNATURE_INVALID))?;
                if $normalize_s {
                    sig = sig.normalize_s().unwrap_or(sig);
                }
                self.key
                    .verify_prehash(digest, &sig)
                    .map_err(because(CKR_SIGNATURE_INVALID))
            }
        }
    };
}

ec_curve!(P256Private, P256Public, p256, Curve::P256, false);
// k256 verification insists on low-S (a Bitcoin rule); plain ECDSA, as JWS ES256K
// and aws-lc-rs produce it, may carry either s, so normalise before verifying.
ec_curve!(K256Private, K256Public, k256, Curve::P256K, true);
ec_curve!(P384Private, P384Public, p384, Curve::P384, false);
ec_curve!(P521Private, P521Public, p521, Curve::P521, false);

// ---------------------------------------------------------------- AES

/// Bounds every AES width satisfies for GCM, CBC and KW.
trait AesCipher:
    BlockCipher
    + BlockSizeUser<BlockSize = U16>
    + BlockEncrypt
    + BlockDecrypt
    + KeyInit
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<C> AesCipher for C where
    C: BlockCipher
        + BlockSizeUser<BlockSize = U16>
        + BlockEncrypt
        + BlockDecrypt
        + KeyInit
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// An expanded AES key (the `aes` crate wipes its round keys on drop).
struct RcAes<C: AesCipher> {
    cipher: C,
    kek: aes_kw::Kek<C>,
}

impl<C: AesCipher> RcAes<C> {
    fn new(key: &[u8]) -> Result<Self> {
        let cipher = C::new_from_slice(key).map_err(because(CKR_KEY_SIZE_RANGE))?;
        let kek = aes_kw::Kek::<C>::try_from(key).map_err(because(CKR_KEY_SIZE_RANGE))?;
        Ok(RcAes { cipher, kek })
    }

    fn gcm<T: aes_gcm::TagSize>(&self) -> AesGcm<C, U12, T> {
        AesGcm::from(self.cipher.clone())
    }

    fn gcm_seal_t<T: aes_gcm::TagSize>(
        &self,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut out = plaintext.to_vec();
        let tag = self
            .gcm::<T>()
            .encrypt_in_place_detached(GenericArray::from_slice(iv), aad, &mut out)
            .map_err(because(CKR_DATA_LEN_RANGE))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn gcm_open_t<T: aes_gcm::TagSize>(
        &self,
        iv: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes> {
        let split = sealed
            .len()
            .checked_sub(T::USIZE)
            .ok_or(fail(CKR_ENCRYPTED_DATA_LEN_RANGE))?;
        let (ct, tag) = sealed.split_at(split);
        let mut out = Zeroizing::new(ct.to_vec());
        self.gcm::<T>()
            .decrypt_in_place_detached(
                GenericArray::from_slice(iv),
                aad,
                &mut out,
                GenericArray::from_slice(tag),
            )
            .map_err(because(CKR_ENCRYPTED_DATA_INVALID))?;
        Ok(out)
    }
}

/// GCM IVs are 96 bits here: the Managed HSM generates 12-byte IVs and the
/// 96-bit form avoids the GHASH-derived counter block.
pub(crate) fn check_gcm_params(iv: &[u8], tag_len: usize) -> Result<()> {
    if iv.len() != 12 || !(12..=16).contains(&tag_len) {
        return Err(fail(CKR_MECHANISM_PARAM_INVALID));
    }
    Ok(())
}

impl<C: AesCipher> AesKey for RcAes<C> {
    fn gcm_seal(&self, iv: &[u8], aad: &[u8], plaintext: &[u8], tag_len: usize) -> Result<Vec<u8>> {
        check_gcm_params(iv, tag_len)?;
        match tag_len {
            12 => self.gcm_seal_t::<U12>(iv, aad, plaintext),
            13 => self.gcm_seal_t::<U13>(iv, aad, plaintext),
            14 => self.gcm_seal_t::<U14>(iv, aad, plaintext),
            15 => self.gcm_seal_t::<U15>(iv, aad, plaintext),
            _ => self.gcm_seal_t::<U16>(iv, aad, plaintext),
        }
    }

    fn gcm_open(
        &self,
        iv: &[u8],
        aad: &[u8],
        sealed: &[u8],
        tag_len: usize,
    ) -> Result<SecretBytes> {
        check_gcm_params(iv, tag_len)?;
        match tag_len {
            12 => self.gcm_open_t::<U12>(iv, aad, sealed),
            13 => self.gcm_open_t::<U13>(iv, aad, sealed),
            14 => self.gcm_open_t::<U14>(iv, aad, sealed),
            15 => self.gcm_open_t::<U15>(iv, aad, sealed),
            _ => self.gcm_open_t::<U16>(iv, aad, sealed),
        }
    }

    fn cbc_encrypt(&self, iv: &[u8; 16], plaintext: &[u8], pad: bool) -> Result<Vec<u8>> {
        let enc = cbc::Encryptor::<C>::inner_iv_init(self.cipher.clone(), iv.into());
        if pad {
            Ok(enc.encrypt_padded_vec_mut::<Pkcs7>(plaintext))
        } else {
            if !plaintext.len().is_multiple_of(16) {
                return Err(fail(CKR_DATA_LEN_RANGE));
            }
            Ok(enc.encrypt_padded_vec_mut::<NoPadding>(plaintext))
        }
    }

    fn cbc_decrypt(&self, iv: &[u8; 16], ciphertext: &[u8], pad: bool) -> Result<SecretBytes> {
        if !ciphertext.len().is_multiple_of(16) || (pad && ciphertext.is_empty()) {
            return Err(fail(CKR_ENCRYPTED_DATA_LEN_RANGE));
        }
        let dec = cbc::Decryptor::<C>::inner_iv_init(self.cipher.clone(), iv.into());
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = if pad {
            dec.decrypt_padded_mut::<Pkcs7>(&mut buf)
                .map_err(because(CKR_ENCRYPTED_DATA_INVALID))?
                .len()
        } else {
            dec.decrypt_padded_mut::<NoPadding>(&mut buf)
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
        self.kek
            .wrap_vec(plaintext)
            .map_err(because(CKR_DATA_LEN_RANGE))
    }

    fn kw_unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes> {
        if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
            return Err(fail(CKR_WRAPPED_KEY_LEN_RANGE));
        }
        let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
        self.kek
            .unwrap(wrapped, &mut out)
            .map_err(because(CKR_WRAPPED_KEY_INVALID))?;
        Ok(out)
    }

    fn kwp_wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.is_empty() {
            return Err(fail(CKR_DATA_LEN_RANGE));
        }
        self.kek
            .wrap_with_padding_vec(plaintext)
            .map_err(because(CKR_DATA_LEN_RANGE))
    }

    fn kwp_unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes> {
        if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
            return Err(fail(CKR_WRAPPED_KEY_LEN_RANGE));
        }
        let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
        let len = self
            .kek
            .unwrap_with_padding(wrapped, &mut out)
            .map_err(because(CKR_WRAPPED_KEY_INVALID))?
            .len();
        out.truncate(len);
        Ok(out)
    }
}
