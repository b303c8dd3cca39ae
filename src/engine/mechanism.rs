//! A caller's `CK_MECHANISM` as a safe Rust value, and the mechanism
//! registry: one [`MechanismDef`] row per mechanism.
//!
//! # What a new mechanism touches
//!
//! - **A mechanism of an existing family** (another local hash with PSS or
//!   ECDSA, another curve): one row in [`REGISTRY`] — its `CK_MECHANISM_INFO`,
//!   [`ParamKind`], [`Keys`], flags (the key operations it serves), local
//!   hash, family and [`Jwa`] name. `C_GetMechanismList`/`Info`, the ABI's
//!   parameter reader (`ffi::mechanism`), `rules::sign_plan`/`cipher_plan`,
//!   `CKA_ALLOWED_MECHANISMS` (`rules::usable_mechanisms`), the audit log's
//!   algorithm ([`MechanismDef::jwa`]) and the fuzz `mechanism` target all
//!   read the row. (A hash the token has never had is also a `crypto::Hash`
//!   variant.)
//! - **A new signature family** (ML-DSA, issue 17): its row, a
//!   [`SignFamily`] variant, the provider method on each key half (a method
//!   of the key traits in `crypto/mod.rs`, written in `crypto/aws_lc.rs` and
//!   `crypto/rustcrypto.rs`; the router routes whole keys, so it does not
//!   change), and its arm in `SignCtx::sign` and `VerifyCtx::verify`
//!   (`token/operation.rs`; both match the family exhaustively, so the
//!   compiler names the missing arms). A parameter of a new shape is a
//!   [`ParamKind`] variant and its reader in `ffi::mechanism`; a new key type
//!   (AKP) is key-type work besides: `KeyKind`, `ParsedKey`/`ParsedPublic`
//!   and the provider's parse and generate methods.
//! - **A new cipher family**: its row, a `rules::CipherScheme` variant, the
//!   provider method(s) on the key (`crypto/mod.rs`, both providers), and
//!   its arm in `CipherCtx::run` (`token/operation.rs`, exhaustive), plus one
//!   in `CipherCtx::known_len` when its output length is known before
//!   computing it. Its parameter is read by its row's [`ParamKind`]; a new
//!   shape is a `ParamKind` variant, its reader in `ffi::mechanism` and its
//!   checked form (`rules::CipherParam`) in `rules::cipher_plan`.
//! - **A new operation** (ML-KEM's `C_EncapsulateKey`): a new entry point in
//!   `ffi/`; its mechanisms are still rows, serving a new `CKF_*` flag.
//!
//! Drift is caught by `rules::tests::every_registry_row_is_consistent` (a
//! row's flags against what it does), `token::operation::tests::
//! every_signing_row_signs_and_verifies_through_its_family` and
//! `every_cipher_row_runs_through_its_family` (every row is decided from
//! the row alone and reaches its provider on every key kind it claims) and
//! `tests/mechanism_registry.rs` (every listed mechanism through the C ABI,
//! checked by independent implementations, and nothing else).

use crate::crypto::{Hash, PreHash};
use crate::error::{Error, Result};
use cryptoki_sys::*;

/// A mechanism and its parsed parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mechanism {
    /// `CKM_*`.
    pub ty: CK_MECHANISM_TYPE,
    /// The parameter, parsed for the mechanisms that define one.
    pub param: Param,
}

/// Mechanism parameters the token understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// No parameter given.
    None,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss {
        /// `hashAlg` (a `CKM_SHA*`).
        hash: CK_MECHANISM_TYPE,
        /// `mgf` (a `CKG_MGF1_*`).
        mgf: CK_RSA_PKCS_MGF_TYPE,
        /// `sLen`.
        salt_len: CK_ULONG,
    },
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep {
        /// `hashAlg` (a `CKM_SHA*`).
        hash: CK_MECHANISM_TYPE,
        /// `mgf` (a `CKG_MGF1_*`).
        mgf: CK_RSA_PKCS_MGF_TYPE,
        /// `source` (`CKZ_DATA_SPECIFIED` or 0).
        source: CK_RSA_PKCS_OAEP_SOURCE_TYPE,
        /// The label (`pSourceData`).
        label: Vec<u8>,
    },
    /// `CK_GCM_PARAMS`.
    Gcm {
        /// `pIv`.
        iv: Vec<u8>,
        /// `pAAD`.
        aad: Vec<u8>,
        /// `ulTagBits`.
        tag_bits: CK_ULONG,
    },
    /// `CK_RSA_AES_KEY_WRAP_PARAMS` (PKCS#11 3.0 §2.1.21) with its
    /// `CK_RSA_PKCS_OAEP_PARAMS` (read as [`Param::Oaep`]).
    RsaAesKeyWrap {
        /// `ulAESKeyBits`: the ephemeral AES key's size.
        aes_bits: CK_ULONG,
        /// `pOAEPParams`.
        oaep: Box<Param>,
    },
    /// `CK_SIGN_ADDITIONAL_CONTEXT` (PKCS#11 3.2, ML-DSA).
    SignContext {
        /// `hedgeVariant` (a `CKH_*`).
        hedge: CK_ULONG,
        /// `pContext` (at most 255 bytes).
        context: Vec<u8>,
    },
    /// `CK_HASH_SIGN_ADDITIONAL_CONTEXT` (PKCS#11 3.2, `CKM_HASH_ML_DSA`).
    HashSignContext {
        /// `hedgeVariant` (a `CKH_*`).
        hedge: CK_ULONG,
        /// `pContext` (at most 255 bytes).
        context: Vec<u8>,
        /// `hash`: the `CKM_SHA*` digest mechanism the caller's PH(M) is of.
        hash: CK_MECHANISM_TYPE,
    },
    /// Any other parameter, as raw bytes.
    Bytes(Vec<u8>),
}

impl Mechanism {
    /// A mechanism without parameter.
    pub fn new(ty: CK_MECHANISM_TYPE) -> Mechanism {
        Mechanism {
            ty,
            param: Param::None,
        }
    }

    /// True when the caller gave no parameter (or an empty one).
    pub fn has_no_param(&self) -> bool {
        match &self.param {
            Param::None => true,
            Param::Bytes(b) => b.is_empty(),
            _ => false,
        }
    }
}

/// The hash a `CKM_SHA*` digest mechanism names, if it is one the token supports.
pub fn hash_of_digest_mechanism(m: CK_MECHANISM_TYPE) -> Option<Hash> {
    match m {
        CKM_SHA_1 => Some(Hash::Sha1),
        CKM_SHA256 => Some(Hash::Sha256),
        CKM_SHA384 => Some(Hash::Sha384),
        CKM_SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// The hash a `CKG_MGF1_*` names.
pub fn hash_of_mgf(mgf: CK_RSA_PKCS_MGF_TYPE) -> Option<Hash> {
    match mgf {
        CKG_MGF1_SHA1 => Some(Hash::Sha1),
        CKG_MGF1_SHA256 => Some(Hash::Sha256),
        CKG_MGF1_SHA384 => Some(Hash::Sha384),
        CKG_MGF1_SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// `CKR_MECHANISM_PARAM_INVALID`, the answer to any malformed parameter.
pub fn param_invalid() -> Error {
    Error(CKR_MECHANISM_PARAM_INVALID)
}

/// Check that `m` has no parameter (mechanisms that define none).
pub fn expect_no_param(m: &Mechanism) -> Result<()> {
    if m.has_no_param() {
        Ok(())
    } else {
        Err(param_invalid())
    }
}

// --- the mechanism registry -------------------------------------------------

use super::key::{KeyKind, KeyOps};
use super::rules::CipherScheme;
use crate::crypto::Curve;

/// The provider operation a signature mechanism ends in. Everything else about
/// a signature mechanism (its local hash, parameter, keys, JWA name) is data
/// in its row; the family alone is code: one provider method per key half and
/// one arm in `token::operation`'s `SignCtx::sign` and `VerifyCtx::verify`
/// (both `match` on it exhaustively, so the compiler finds a missing arm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignFamily {
    /// RSASSA-PKCS1-v1_5: RS256/384/512 over a digest (`sign_pkcs1`); for
    /// `CKM_RSA_PKCS` a DigestInfo input is RS*, other input RSNULL (`sign_pkcs1_raw`).
    RsaPkcs1,
    /// RSASSA-PSS with salt = hash length: PS256/384/512 (`sign_pss`).
    RsaPss,
    /// ECDSA over a digest of the curve's hash, raw `r || s` (`sign_prehash`).
    Ecdsa,
    /// Pure ML-DSA (FIPS 204) over the whole message (`MlDsaPrivateKey::sign`).
    MlDsa,
    /// HashML-DSA (FIPS 204 §5.4): the token hashes the message with this
    /// pre-hash (`CKM_HASH_ML_DSA_<hash>`), or, for `None`
    /// (`CKM_HASH_ML_DSA`), the caller gives PH(M) and the parameter names
    /// PH; then μ is computed here and signed (`MlDsaPrivateKey::sign_mu`).
    HashMlDsa(Option<PreHash>),
    /// ML-DSA over a caller's μ (FIPS 204 Algorithm 7 from step 7): the
    /// Managed HSM's external μ, which no PKCS#11 3.2 mechanism is (PKCS#11
    /// 3.3's draft `CKM_ML_DSA_EXTERNAL_MU` has no number yet), so no row
    /// has this family; `rules::external_mu_plan` decides it.
    MlDsaMu,
}

/// A signature mechanism's row data: its family, what the token hashes
/// locally first, and the Managed HSM algorithm it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signing {
    /// The provider operation.
    pub family: SignFamily,
    /// `CKM_SHA*_…` mechanisms hash the caller's data here first; `None`: the
    /// caller gives the digest (or, for `CKM_RSA_PKCS`, the DigestInfo or raw data).
    pub prehash: Option<Hash>,
    /// The JWA name.
    pub jwa: Jwa,
}

/// How the ABI reads a mechanism's `pParameter` (PKCS#11 3.0 §2, per mechanism).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// No parameter (a non-empty one is kept as bytes and refused by the plan).
    None,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss,
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep,
    /// `CK_GCM_PARAMS`.
    Gcm,
    /// An IV as raw bytes (AES-CBC).
    Iv,
    /// `CK_RSA_AES_KEY_WRAP_PARAMS`.
    RsaAesKeyWrap,
    /// `CK_SIGN_ADDITIONAL_CONTEXT`, optional.
    SignContext,
    /// `CK_HASH_SIGN_ADDITIONAL_CONTEXT`, required.
    HashSignContext,
}

/// The keys a mechanism takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// None (digests, generation).
    None,
    /// RSA of the Managed HSM sizes.
    Rsa,
    /// EC on these curves.
    Ec(&'static [Curve]),
    /// AES of the Managed HSM sizes.
    Aes,
    /// ML-DSA of every parameter set.
    MlDsa,
    /// ML-KEM of every parameter set.
    MlKem,
}

impl Keys {
    /// Whether a key of `kind` is one this mechanism takes.
    pub fn fits(self, kind: KeyKind) -> bool {
        match (self, kind) {
            (Keys::Rsa, KeyKind::Rsa(_))
            | (Keys::Aes, KeyKind::Aes(_))
            | (Keys::MlDsa, KeyKind::MlDsa(_))
            | (Keys::MlKem, KeyKind::MlKem(_)) => true,
            (Keys::Ec(curves), KeyKind::Ec(c)) => curves.contains(&c),
            _ => false,
        }
    }
}

/// The Managed HSM (JWA) algorithm a mechanism is, where the row alone does
/// not fix it; it names the operation in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jwa {
    /// Always this name.
    Name(&'static str),
    /// `CKM_RSA_PKCS` signing: RS256/384/512 for a DigestInfo, else RSNULL (the input decides).
    RsByInput,
    /// `CKM_RSA_PKCS_PSS`: PS256/384/512 by the parameter's hash.
    PsByParam,
    /// ECDSA: ES256, ES256K, ES384 or ES512 by the key's curve.
    EsByCurve,
    /// `CKM_RSA_PKCS_OAEP`: RSA-OAEP (SHA-1) or RSA-OAEP-256 by the parameter's hash.
    OaepByParam,
    /// AES: `A<bits><suffix>` by the key's size (A256KW, A128GCM, …).
    AesBySize(&'static str),
    /// ML-DSA: ML-DSA-44, ML-DSA-65 or ML-DSA-87 by the key's parameter set.
    MlDsaBySet,
}

/// One mechanism: everything the token knows about it, in one row. Its
/// `CK_MECHANISM_INFO`, how the ABI parses its parameter, the keys it takes,
/// what it does (sign scheme, cipher scheme, digest, key generation) and the
/// Managed HSM algorithm it is. The key operations it serves are its flags.
#[derive(Clone, Copy, Debug)]
pub struct MechanismDef {
    /// `CKM_*`.
    pub ty: CK_MECHANISM_TYPE,
    /// Its name in the specification.
    pub name: &'static str,
    /// `ulMinKeySize` (bits; bytes for AES, as PKCS#11 3.1 §6.7 says).
    pub min: CK_ULONG,
    /// `ulMaxKeySize`.
    pub max: CK_ULONG,
    /// `CKF_*`.
    pub flags: CK_FLAGS,
    /// How the ABI reads the parameter.
    pub param: ParamKind,
    /// The keys it takes.
    pub keys: Keys,
    /// As a signature mechanism.
    pub sign: Option<Signing>,
    /// As an encrypt/decrypt/wrap/unwrap mechanism.
    pub cipher: Option<(CipherScheme, Jwa)>,
    /// As a digest.
    pub digest: Option<Hash>,
}

const SV: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
const ED: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT;
const WU: CK_FLAGS = CKF_WRAP | CKF_UNWRAP;
const EC: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
const ALL_CURVES: &[Curve] = &Curve::ALL;

/// A row with the parts every row has; the constructors below fill the rest.
const fn row(
    ty: CK_MECHANISM_TYPE,
    name: &'static str,
    (min, max): (CK_ULONG, CK_ULONG),
    flags: CK_FLAGS,
    param: ParamKind,
    keys: Keys,
) -> MechanismDef {
    MechanismDef {
        ty,
        name,
        min,
        max,
        flags,
        param,
        keys,
        sign: None,
        cipher: None,
        digest: None,
    }
}

const RSA_BITS: (CK_ULONG, CK_ULONG) = (2048, 4096);
/// ML-DSA "sizes" are its parameter sets, `CKP_ML_DSA_44` to `CKP_ML_DSA_87`.
#[cfg(feature = "aws-lc")]
const ML_KEM_SETS: (CK_ULONG, CK_ULONG) = (CKP_ML_KEM_512, CKP_ML_KEM_1024);
#[cfg(feature = "aws-lc")]
const ML_DSA_SETS: (CK_ULONG, CK_ULONG) = (CKP_ML_DSA_44, CKP_ML_DSA_87);
const AES_BYTES: (CK_ULONG, CK_ULONG) = (16, 32);

/// A sign/verify mechanism.
const fn signing(
    ty: CK_MECHANISM_TYPE,
    name: &'static str,
    size: (CK_ULONG, CK_ULONG),
    param: ParamKind,
    keys: Keys,
    (family, prehash): (SignFamily, Option<Hash>),
    jwa: Jwa,
) -> MechanismDef {
    let flags = match keys {
        Keys::Ec(_) => SV | EC,
        _ => SV,
    };
    let mut d = row(ty, name, size, flags, param, keys);
    d.sign = Some(Signing {
        family,
        prehash,
        jwa,
    });
    d
}

/// A HashML-DSA mechanism whose token hashes with `ph`
/// (`CKM_HASH_ML_DSA_<hash>`, optional `CK_SIGN_ADDITIONAL_CONTEXT`).
#[cfg(feature = "aws-lc")]
const fn hash_ml_dsa(ty: CK_MECHANISM_TYPE, name: &'static str, ph: PreHash) -> MechanismDef {
    signing(
        ty,
        name,
        ML_DSA_SETS,
        ParamKind::SignContext,
        Keys::MlDsa,
        (SignFamily::HashMlDsa(Some(ph)), None),
        Jwa::Name(name),
    )
}

/// A cipher mechanism serving `flags`.
const fn cipher(
    ty: CK_MECHANISM_TYPE,
    name: &'static str,
    flags: CK_FLAGS,
    param: ParamKind,
    keys: Keys,
    scheme: CipherScheme,
    jwa: Jwa,
) -> MechanismDef {
    let size = match keys {
        Keys::Aes => AES_BYTES,
        _ => RSA_BITS,
    };
    let mut d = row(ty, name, size, flags, param, keys);
    d.cipher = Some((scheme, jwa));
    d
}

/// A digest.
const fn digest(ty: CK_MECHANISM_TYPE, name: &'static str, hash: Hash) -> MechanismDef {
    let mut d = row(ty, name, (0, 0), CKF_DIGEST, ParamKind::None, Keys::None);
    d.digest = Some(hash);
    d
}

/// Every mechanism the token offers (DESIGN §3), in `C_GetMechanismList` order.
/// `C_GetMechanismInfo`, the ABI's parameter parser, `*Init` (the rules),
/// `CKA_ALLOWED_MECHANISMS` and the audit log all read this table.
#[rustfmt::skip]
pub const REGISTRY: &[MechanismDef] = &[
    row(CKM_RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN", RSA_BITS, CKF_GENERATE_KEY_PAIR, ParamKind::None, Keys::None),
    row(CKM_EC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN", (256, 521), CKF_GENERATE_KEY_PAIR | EC, ParamKind::None, Keys::None),
    row(CKM_AES_KEY_GEN, "CKM_AES_KEY_GEN", AES_BYTES, CKF_GENERATE, ParamKind::None, Keys::None),
    {
        // Both a signature and a cipher mechanism.
        let mut d = signing(CKM_RSA_PKCS, "CKM_RSA_PKCS", RSA_BITS, ParamKind::None, Keys::Rsa, (SignFamily::RsaPkcs1, None), Jwa::RsByInput);
        d.flags |= ED | WU;
        d.cipher = Some((CipherScheme::RsaPkcs1, Jwa::Name("RSA1_5")));
        d
    },
    cipher(CKM_RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP", ED | WU, ParamKind::Oaep, Keys::Rsa, CipherScheme::RsaOaep, Jwa::OaepByParam),
    cipher(CKM_AES_GCM, "CKM_AES_GCM", ED | WU, ParamKind::Gcm, Keys::Aes, CipherScheme::AesGcm, Jwa::AesBySize("GCM")),
    // CBC without padding cannot carry a key of arbitrary length: it does not wrap.
    cipher(CKM_AES_CBC, "CKM_AES_CBC", ED, ParamKind::Iv, Keys::Aes, CipherScheme::AesCbc { pad: false }, Jwa::AesBySize("CBC")),
    cipher(CKM_AES_CBC_PAD, "CKM_AES_CBC_PAD", ED | WU, ParamKind::Iv, Keys::Aes, CipherScheme::AesCbc { pad: true }, Jwa::AesBySize("CBCPAD")),
    // AES-KW/KWP en/decryption is the Managed HSM's wrapKey/unwrapKey of the caller's bytes.
    cipher(CKM_AES_KEY_WRAP, "CKM_AES_KEY_WRAP", ED | WU, ParamKind::None, Keys::Aes, CipherScheme::AesKw, Jwa::AesBySize("KW")),
    cipher(CKM_AES_KEY_WRAP_KWP, "CKM_AES_KEY_WRAP_KWP", ED | WU, ParamKind::None, Keys::Aes, CipherScheme::AesKwp, Jwa::Name("CKM_AES_KEY_WRAP_PAD")),
    // BYOK import: unwrap only, and only by a key whose sole op is import.
    cipher(CKM_RSA_AES_KEY_WRAP, "CKM_RSA_AES_KEY_WRAP", CKF_UNWRAP, ParamKind::RsaAesKeyWrap, Keys::Rsa, CipherScheme::RsaAesKw, Jwa::Name("CKM_RSA_AES_KEY_WRAP")),
    signing(CKM_SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS", RSA_BITS, ParamKind::None, Keys::Rsa, (SignFamily::RsaPkcs1, Some(Hash::Sha256)), Jwa::Name("RS256")),
    signing(CKM_SHA384_RSA_PKCS, "CKM_SHA384_RSA_PKCS", RSA_BITS, ParamKind::None, Keys::Rsa, (SignFamily::RsaPkcs1, Some(Hash::Sha384)), Jwa::Name("RS384")),
    signing(CKM_SHA512_RSA_PKCS, "CKM_SHA512_RSA_PKCS", RSA_BITS, ParamKind::None, Keys::Rsa, (SignFamily::RsaPkcs1, Some(Hash::Sha512)), Jwa::Name("RS512")),
    signing(CKM_RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS", RSA_BITS, ParamKind::Pss, Keys::Rsa, (SignFamily::RsaPss, None), Jwa::PsByParam),
    signing(CKM_SHA256_RSA_PKCS_PSS, "CKM_SHA256_RSA_PKCS_PSS", RSA_BITS, ParamKind::Pss, Keys::Rsa, (SignFamily::RsaPss, Some(Hash::Sha256)), Jwa::Name("PS256")),
    signing(CKM_SHA384_RSA_PKCS_PSS, "CKM_SHA384_RSA_PKCS_PSS", RSA_BITS, ParamKind::Pss, Keys::Rsa, (SignFamily::RsaPss, Some(Hash::Sha384)), Jwa::Name("PS384")),
    signing(CKM_SHA512_RSA_PKCS_PSS, "CKM_SHA512_RSA_PKCS_PSS", RSA_BITS, ParamKind::Pss, Keys::Rsa, (SignFamily::RsaPss, Some(Hash::Sha512)), Jwa::Name("PS512")),
    signing(CKM_ECDSA, "CKM_ECDSA", (256, 521), ParamKind::None, Keys::Ec(ALL_CURVES), (SignFamily::Ecdsa, None), Jwa::EsByCurve),
    // ES256/ES256K/ES384/ES512 each pair one curve with one hash.
    signing(CKM_ECDSA_SHA256, "CKM_ECDSA_SHA256", (256, 256), ParamKind::None, Keys::Ec(&[Curve::P256, Curve::P256K]), (SignFamily::Ecdsa, Some(Hash::Sha256)), Jwa::EsByCurve),
    signing(CKM_ECDSA_SHA384, "CKM_ECDSA_SHA384", (384, 384), ParamKind::None, Keys::Ec(&[Curve::P384]), (SignFamily::Ecdsa, Some(Hash::Sha384)), Jwa::Name("ES384")),
    signing(CKM_ECDSA_SHA512, "CKM_ECDSA_SHA512", (521, 521), ParamKind::None, Keys::Ec(&[Curve::P521]), (SignFamily::Ecdsa, Some(Hash::Sha512)), Jwa::Name("ES512")),
    // ML-DSA (PKCS#11 3.2 §6.67): aws-lc-rs only; the pure-Rust build has none (README).
    #[cfg(feature = "aws-lc")]
    row(CKM_ML_DSA_KEY_PAIR_GEN, "CKM_ML_DSA_KEY_PAIR_GEN", ML_DSA_SETS, CKF_GENERATE_KEY_PAIR, ParamKind::None, Keys::None),
    #[cfg(feature = "aws-lc")]
    signing(CKM_ML_DSA, "CKM_ML_DSA", ML_DSA_SETS, ParamKind::SignContext, Keys::MlDsa, (SignFamily::MlDsa, None), Jwa::MlDsaBySet),
    // HashML-DSA (PKCS#11 3.2 §6.67.6–7); the Managed HSM has no name for it:
    // the audit log names the mechanism.
    #[cfg(feature = "aws-lc")]
    signing(CKM_HASH_ML_DSA, "CKM_HASH_ML_DSA", ML_DSA_SETS, ParamKind::HashSignContext, Keys::MlDsa, (SignFamily::HashMlDsa(None), None), Jwa::Name("CKM_HASH_ML_DSA")),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA224, "CKM_HASH_ML_DSA_SHA224", PreHash::Sha224),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA256, "CKM_HASH_ML_DSA_SHA256", PreHash::Sha256),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA384, "CKM_HASH_ML_DSA_SHA384", PreHash::Sha384),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA512, "CKM_HASH_ML_DSA_SHA512", PreHash::Sha512),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_224, "CKM_HASH_ML_DSA_SHA3_224", PreHash::Sha3_224),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_256, "CKM_HASH_ML_DSA_SHA3_256", PreHash::Sha3_256),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_384, "CKM_HASH_ML_DSA_SHA3_384", PreHash::Sha3_384),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_512, "CKM_HASH_ML_DSA_SHA3_512", PreHash::Sha3_512),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHAKE128, "CKM_HASH_ML_DSA_SHAKE128", PreHash::Shake128),
    #[cfg(feature = "aws-lc")]
    hash_ml_dsa(CKM_HASH_ML_DSA_SHAKE256, "CKM_HASH_ML_DSA_SHAKE256", PreHash::Shake256),
    // ML-KEM (PKCS#11 3.2 §6.66), a softmhsm extension: C_EncapsulateKey/C_DecapsulateKey.
    #[cfg(feature = "aws-lc")]
    row(CKM_ML_KEM_KEY_PAIR_GEN, "CKM_ML_KEM_KEY_PAIR_GEN", ML_KEM_SETS, CKF_GENERATE_KEY_PAIR, ParamKind::None, Keys::None),
    #[cfg(feature = "aws-lc")]
    row(CKM_ML_KEM, "CKM_ML_KEM", ML_KEM_SETS, CKF_ENCAPSULATE | CKF_DECAPSULATE, ParamKind::None, Keys::MlKem),
    digest(CKM_SHA256, "CKM_SHA256", Hash::Sha256),
    digest(CKM_SHA384, "CKM_SHA384", Hash::Sha384),
    digest(CKM_SHA512, "CKM_SHA512", Hash::Sha512),
];

/// The registry row of `ty`; None: `CKR_MECHANISM_INVALID`.
pub fn lookup(ty: CK_MECHANISM_TYPE) -> Option<&'static MechanismDef> {
    REGISTRY.iter().find(|d| d.ty == ty)
}

/// Whether `ty` generates a key of its own with `C_GenerateKey` (`pair`
/// false) or a key pair with `C_GenerateKeyPair` (`pair` true), by its
/// registry row; anything else is `CKR_MECHANISM_INVALID` there.
pub fn generates(ty: CK_MECHANISM_TYPE, pair: bool) -> bool {
    let flag = if pair {
        CKF_GENERATE_KEY_PAIR
    } else {
        CKF_GENERATE
    };
    lookup(ty).is_some_and(|d| d.flags & flag != 0)
}

/// The `CKF_*` flag of each key operation a mechanism can serve;
/// encapsulation is key transport, the wrapKey op (decapsulation unwrapKey's).
const OP_FLAGS: [(KeyOps, CK_FLAGS); 8] = [
    (KeyOps::WRAP, CKF_ENCAPSULATE),
    (KeyOps::UNWRAP, CKF_DECAPSULATE),
    (KeyOps::SIGN, CKF_SIGN),
    (KeyOps::VERIFY, CKF_VERIFY),
    (KeyOps::ENCRYPT, CKF_ENCRYPT),
    (KeyOps::DECRYPT, CKF_DECRYPT),
    (KeyOps::WRAP, CKF_WRAP),
    (KeyOps::UNWRAP, CKF_UNWRAP),
];

impl MechanismDef {
    /// Its `CK_MECHANISM_INFO`.
    pub fn info(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: self.min,
            ulMaxKeySize: self.max,
            flags: self.flags,
        }
    }

    /// Whether it serves the PKCS#11 operation `op` (one of sign, verify,
    /// encrypt, decrypt, wrap, unwrap), by its flags.
    pub fn serves(&self, op: KeyOps) -> bool {
        OP_FLAGS
            .iter()
            .any(|(o, f)| *o == op && self.flags & f != 0)
    }

    /// The Managed HSM algorithm of operation `op` with this mechanism on a
    /// key of `kind` with parameter `param` (the JWA name the audit log uses);
    /// None when the input decides (`CKM_RSA_PKCS` signing) or nothing fits.
    pub fn jwa(&self, op: KeyOps, kind: KeyKind, param: &Param) -> Option<String> {
        let signing = op == KeyOps::SIGN || op == KeyOps::VERIFY;
        let jwa = if signing {
            self.sign.map(|s| s.jwa)
        } else {
            self.cipher.map(|(_, j)| j)
        }?;
        let param_hash = || match param {
            Param::Pss { hash, .. } | Param::Oaep { hash, .. } => hash_of_digest_mechanism(*hash),
            _ => None,
        };
        match (jwa, kind) {
            (Jwa::Name(n), _) => Some(n.to_string()),
            (Jwa::RsByInput, _) => None,
            (Jwa::PsByParam, _) => match param_hash()? {
                Hash::Sha1 => None,
                h => Some(format!("PS{}", h.len() * 8)),
            },
            (Jwa::OaepByParam, _) => match param_hash()? {
                Hash::Sha1 => Some("RSA-OAEP".into()),
                Hash::Sha256 => Some("RSA-OAEP-256".into()),
                _ => None,
            },
            (Jwa::EsByCurve, KeyKind::Ec(c)) => Some(
                match c {
                    Curve::P256 => "ES256",
                    Curve::P256K => "ES256K",
                    Curve::P384 => "ES384",
                    Curve::P521 => "ES512",
                }
                .to_string(),
            ),
            (Jwa::AesBySize(suffix), KeyKind::Aes(bits)) => Some(format!("A{bits}{suffix}")),
            (Jwa::MlDsaBySet, KeyKind::MlDsa(set)) => Some(set.name().to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwa(ty: CK_MECHANISM_TYPE, op: KeyOps, kind: KeyKind, param: Param) -> Option<String> {
        lookup(ty).and_then(|d| d.jwa(op, kind, &param))
    }

    /// The Managed HSM algorithm names (DESIGN §3), as the audit log writes them.
    #[test]
    fn rows_name_their_managed_hsm_algorithm() {
        let rsa = KeyKind::Rsa(2048);
        let oaep = |hash| Param::Oaep {
            hash,
            mgf: 0,
            source: CKZ_DATA_SPECIFIED,
            label: Vec::new(),
        };
        let pss = |hash| Param::Pss {
            hash,
            mgf: 0,
            salt_len: 0,
        };
        assert_eq!(
            jwa(CKM_RSA_PKCS, KeyOps::SIGN, rsa, Param::None),
            None,
            "the input decides"
        );
        assert_eq!(
            jwa(CKM_RSA_PKCS, KeyOps::ENCRYPT, rsa, Param::None).as_deref(),
            Some("RSA1_5")
        );
        assert_eq!(
            jwa(CKM_RSA_PKCS_OAEP, KeyOps::WRAP, rsa, oaep(CKM_SHA_1)).as_deref(),
            Some("RSA-OAEP")
        );
        assert_eq!(
            jwa(CKM_RSA_PKCS_OAEP, KeyOps::DECRYPT, rsa, oaep(CKM_SHA256)).as_deref(),
            Some("RSA-OAEP-256")
        );
        assert_eq!(
            jwa(CKM_RSA_PKCS_PSS, KeyOps::SIGN, rsa, pss(CKM_SHA384)).as_deref(),
            Some("PS384")
        );
        assert_eq!(
            jwa(CKM_SHA512_RSA_PKCS, KeyOps::VERIFY, rsa, Param::None).as_deref(),
            Some("RS512")
        );
        assert_eq!(
            jwa(
                CKM_ECDSA,
                KeyOps::SIGN,
                KeyKind::Ec(Curve::P256K),
                Param::None
            )
            .as_deref(),
            Some("ES256K")
        );
        assert_eq!(
            jwa(
                CKM_ECDSA_SHA256,
                KeyOps::SIGN,
                KeyKind::Ec(Curve::P256),
                Param::None
            )
            .as_deref(),
            Some("ES256")
        );
        assert_eq!(
            jwa(
                CKM_AES_KEY_WRAP,
                KeyOps::WRAP,
                KeyKind::Aes(256),
                Param::None
            )
            .as_deref(),
            Some("A256KW")
        );
        assert_eq!(
            jwa(CKM_AES_GCM, KeyOps::ENCRYPT, KeyKind::Aes(128), Param::None).as_deref(),
            Some("A128GCM")
        );
        assert_eq!(
            jwa(
                CKM_AES_CBC_PAD,
                KeyOps::DECRYPT,
                KeyKind::Aes(192),
                Param::None
            )
            .as_deref(),
            Some("A192CBCPAD")
        );
        assert_eq!(
            jwa(CKM_SHA256, KeyOps::SIGN, rsa, Param::None),
            None,
            "a digest signs nothing"
        );
    }
}
