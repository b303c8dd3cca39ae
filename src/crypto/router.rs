//! Routes each operation to the provider that does it best (DESIGN §1).
//!
//! Measured here, raw sign/s: RSA-2048 aws-lc 4,067 vs `rsa` 586; P-256 66,358 vs
//! `p256` 11,353; P-384 12,278 vs 3,774; secp256k1 aws-lc 3,810 vs `k256` 25,206.

use super::Provider;

/// The provider the library uses: routed across both implementations in the
/// default build, pure RustCrypto without the `aws-lc` feature.
pub fn routed() -> &'static dyn Provider {
    #[cfg(feature = "aws-lc")]
    {
        &routed_impl::Routed
    }
    #[cfg(not(feature = "aws-lc"))]
    {
        &super::rustcrypto::RustCrypto
    }
}

#[cfg(feature = "aws-lc")]
mod routed_impl {
    use crate::crypto::aws_lc::AwsLc;
    use crate::crypto::rustcrypto::RustCrypto;
    use crate::crypto::{
        AesKey, Curve, EcPrivateKey, EcPublicKey, Hash, Hasher, MlDsa, MlDsaPrivateKey,
        MlDsaPublicKey, MlKem, MlKemPrivateKey, MlKemPublicKey, PreHash, Provider, RsaParts,
        RsaPrivateKey, RsaPublicKey, SecretBytes,
    };
    use crate::error::Result;
    use std::sync::Arc;

    /// Both providers behind one face; each method says why it goes where it goes.
    pub(super) struct Routed;

    /// secp256k1 goes to `k256` (25,206 sign/s vs aws-lc's generic-curve 3,810);
    /// the NIST curves to aws-lc (P-256 66,358 vs 11,353; P-384 12,278 vs 3,774).
    fn ec_provider(curve: Curve) -> &'static dyn Provider {
        match curve {
            Curve::P256K => &RustCrypto,
            Curve::P256 | Curve::P384 | Curve::P521 => &AwsLc,
        }
    }

    impl Provider for Routed {
        fn name(&self) -> &'static str {
            "routed"
        }

        fn random(&self, out: &mut [u8]) -> Result<()> {
            // aws-lc's DRBG: no syscall per call, unlike getrandom.
            AwsLc.random(out)
        }

        fn hasher(&self, hash: Hash) -> Box<dyn Hasher> {
            // aws-lc's SHA uses SHA-NI/AVX2 assembly.
            AwsLc.hasher(hash)
        }

        fn pre_hasher(&self, hash: PreHash) -> Result<Box<dyn Hasher>> {
            // HashML-DSA exists with aws-lc's ML-DSA only.
            AwsLc.pre_hasher(hash)
        }

        fn generate_rsa(&self, bits: usize) -> Result<SecretBytes> {
            // aws-lc keygen is constant-time and several times faster than `rsa`'s.
            AwsLc.generate_rsa(bits)
        }

        fn generate_ec(&self, curve: Curve) -> Result<SecretBytes> {
            // Keys are born where they will be used (PKCS#8 is the same either way).
            ec_provider(curve).generate_ec(curve)
        }

        fn import_rsa(&self, parts: &RsaParts) -> Result<SecretBytes> {
            // Only the `rsa` crate can complete a key from n, e, d alone.
            RustCrypto.import_rsa(parts)
        }

        fn import_ec(&self, curve: Curve, scalar: &[u8]) -> Result<SecretBytes> {
            // RustCrypto derives the public point; aws-lc-rs needs it supplied.
            RustCrypto.import_ec(curve, scalar)
        }

        fn rsa_private(&self, pkcs8: &[u8]) -> Result<Arc<dyn RsaPrivateKey>> {
            // RSA private operations on aws-lc: constant-time, 7× faster, and the
            // `rsa` crate is open to the Marvin attack (RUSTSEC-2023-0071). The
            // aws-lc key hands RSNULL (which aws-lc-rs cannot do) to the `rsa`
            // crate, parsing that form lazily on first RSNULL use.
            AwsLc.rsa_private(pkcs8)
        }

        fn rsa_public(&self, n: &[u8], e: &[u8]) -> Result<Arc<dyn RsaPublicKey>> {
            // aws-lc verifies and encrypts faster; RSNULL verification falls back
            // to the `rsa` crate inside the aws-lc key.
            AwsLc.rsa_public(n, e)
        }

        fn ec_private(&self, curve: Curve, pkcs8: &[u8]) -> Result<Arc<dyn EcPrivateKey>> {
            ec_provider(curve).ec_private(curve, pkcs8)
        }

        fn ec_public(&self, curve: Curve, point: &[u8]) -> Result<Arc<dyn EcPublicKey>> {
            ec_provider(curve).ec_public(curve, point)
        }

        fn aes(&self, key: &[u8]) -> Result<Arc<dyn AesKey>> {
            // AES-NI + constant-time GHASH in aws-lc; the aws-lc key hands short-tag
            // GCM decryption and AES-192 key wrap to RustCrypto itself.
            AwsLc.aes(key)
        }

        fn generate_ml_dsa(&self, set: MlDsa) -> Result<SecretBytes> {
            // ML-DSA exists only in aws-lc here (the pure-Rust build has none).
            AwsLc.generate_ml_dsa(set)
        }

        fn ml_dsa_private(&self, set: MlDsa, seed: &[u8]) -> Result<Arc<dyn MlDsaPrivateKey>> {
            AwsLc.ml_dsa_private(set, seed)
        }

        fn ml_dsa_public(&self, set: MlDsa, key: &[u8]) -> Result<Arc<dyn MlDsaPublicKey>> {
            AwsLc.ml_dsa_public(set, key)
        }

        fn generate_ml_kem(&self, set: MlKem) -> Result<SecretBytes> {
            // ML-KEM, too, exists only in aws-lc here.
            AwsLc.generate_ml_kem(set)
        }

        fn ml_kem_private(&self, set: MlKem, dk: &[u8]) -> Result<Arc<dyn MlKemPrivateKey>> {
            AwsLc.ml_kem_private(set, dk)
        }

        fn ml_kem_public(&self, set: MlKem, ek: &[u8]) -> Result<Arc<dyn MlKemPublicKey>> {
            AwsLc.ml_kem_public(set, ek)
        }
    }
}
