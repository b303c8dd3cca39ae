//! The Managed HSM rules (DESIGN §3): key types and sizes, the plans that
//! decide an operation from a mechanism (read from the registry in
//! [`super::mechanism`]) and a key, and the operation rules (key_ops, enabled,
//! nbf/exp with the date-time exception).

use super::key::{KeyKind, KeyOps, KeyRecord};
use super::mechanism::{
    expect_no_param, hash_of_digest_mechanism, hash_of_mgf, lookup, param_invalid, Mechanism,
    Param, ParamKind, SignFamily, REGISTRY,
};
use crate::crypto::{Curve, Hash, MlDsa, PreHash};
use crate::error::{Error, Result};
use cryptoki_sys::*;

/// RSA modulus sizes a Managed HSM accepts.
pub const RSA_BITS: [u32; 3] = [2048, 3072, 4096];
/// AES key sizes in bytes.
pub const AES_BYTES: [u32; 3] = [16, 24, 32];

/// A decided sign/verify operation, fixed at `*Init` so that `C_Sign` only
/// hashes and calls the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignPlan {
    /// The provider operation.
    pub family: SignFamily,
    /// What the token hashes locally first (the row's `prehash`).
    pub prehash: Option<Hash>,
    /// The hash of the digest the provider signs, where one is fixed: the
    /// parameter's (PSS), else the row's local hash, else the curve's
    /// (ECDSA). The input must then be exactly that long
    /// (`CKR_DATA_LEN_RANGE`). `None`: `CKM_RSA_PKCS`, whose input decides.
    pub digest: Option<Hash>,
    /// ML-DSA's context string (FIPS 204 §5.2; empty for every other family).
    pub context: Vec<u8>,
    /// ML-DSA's deterministic variant (`CKH_DETERMINISTIC_REQUIRED`).
    pub deterministic: bool,
    /// HashML-DSA's pre-hash PH: the row's (`CKM_HASH_ML_DSA_<hash>`) or the
    /// parameter's (`CKM_HASH_ML_DSA`, whose input must then be exactly
    /// PH's length, `CKR_DATA_LEN_RANGE`).
    pub pre_hash: Option<PreHash>,
}

/// Decide a sign or verify operation (`op` is SIGN or VERIFY) for `key`: the
/// mechanism must be a registry row that signs (`CKR_MECHANISM_INVALID`), be in the
/// key's narrowed `CKA_ALLOWED_MECHANISMS` (the same code), fit the key type
/// (`CKR_KEY_TYPE_INCONSISTENT`), carry valid parameters
/// (`CKR_MECHANISM_PARAM_INVALID`), and the key must allow `op` now. Nothing
/// here names a family: the row says it all.
pub fn sign_plan(mech: &Mechanism, key: &KeyRecord, op: KeyOps, now: i64) -> Result<SignPlan> {
    let def = lookup(mech.ty)
        .filter(|d| d.serves(op))
        .ok_or(Error(CKR_MECHANISM_INVALID))?;
    let signing = def.sign.ok_or(Error(CKR_MECHANISM_INVALID))?;
    check_allowed(key, mech.ty)?;
    if !def.keys.fits(key.kind) {
        return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
    }
    let (mut context, mut deterministic) = (Vec::new(), false);
    let mut pre_hash = match signing.family {
        SignFamily::HashMlDsa(ph) => ph,
        _ => None,
    };
    let param_hash = match def.param {
        ParamKind::Pss => Some(pss_param(mech, signing.prehash)?),
        ParamKind::SignContext => {
            (context, deterministic) = sign_context_param(mech)?;
            None
        }
        ParamKind::HashSignContext => {
            let ph;
            (context, deterministic, ph) = hash_sign_context_param(mech)?;
            pre_hash = Some(ph);
            None
        }
        _ => {
            expect_no_param(mech)?;
            None
        }
    };
    let curve_hash = match key.kind {
        KeyKind::Ec(c) => Some(c.hash()),
        _ => None,
    };
    check_usable(key, op, now)?;
    Ok(SignPlan {
        family: signing.family,
        prehash: signing.prehash,
        digest: param_hash.or(signing.prehash).or(curve_hash),
        context,
        deterministic,
        pre_hash,
    })
}

/// The Managed HSM's ML-DSA sign/verify over an external μ (`op` SIGN or
/// VERIFY): decided as `CKM_ML_DSA` without parameter is (key type,
/// `CKA_ALLOWED_MECHANISMS`, key_ops, enabled, nbf/exp), then signs or
/// verifies the 64-byte μ the caller computed (hedged). PKCS#11 3.2 has no
/// such mechanism, so only the data plane reaches this.
pub fn external_mu_plan(key: &KeyRecord, op: KeyOps, now: i64) -> Result<SignPlan> {
    let mut plan = sign_plan(&Mechanism::new(CKM_ML_DSA), key, op, now)?;
    plan.family = SignFamily::MlDsaMu;
    Ok(plan)
}

/// C_EncapsulateKey (`op` wrapKey) and C_DecapsulateKey (`op` unwrapKey),
/// PKCS#11 3.2 §5.18: the mechanism must be a KEM row serving the call
/// (`CKR_MECHANISM_INVALID`), the key of its type
/// (`CKR_KEY_TYPE_INCONSISTENT`), no parameter, and the key usable for `op` now.
pub fn kem_plan(mech: &Mechanism, key: &KeyRecord, op: KeyOps, now: i64) -> Result<()> {
    let flag = if op == KeyOps::WRAP {
        CKF_ENCAPSULATE
    } else {
        CKF_DECAPSULATE
    };
    let def = lookup(mech.ty)
        .filter(|d| d.flags & flag != 0)
        .ok_or(Error(CKR_MECHANISM_INVALID))?;
    check_allowed(key, mech.ty)?;
    if !def.keys.fits(key.kind) {
        return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
    }
    expect_no_param(mech)?;
    check_usable(key, op, now)
}

/// The longest ML-DSA context string (FIPS 204 §5.2).
pub const ML_DSA_CONTEXT_MAX: usize = 255;

/// ML-DSA's `CK_SIGN_ADDITIONAL_CONTEXT` (PKCS#11 3.2 §6.67.4): its context
/// (none is the empty one) and whether signing is deterministic
/// (`CKH_DETERMINISTIC_REQUIRED`; `CKH_HEDGE_PREFERRED` and
/// `CKH_HEDGE_REQUIRED` are hedged). An unknown `hedgeVariant` or a context
/// over 255 bytes is `CKR_MECHANISM_PARAM_INVALID`.
fn sign_context_param(mech: &Mechanism) -> Result<(Vec<u8>, bool)> {
    match &mech.param {
        Param::None => Ok((Vec::new(), false)),
        Param::SignContext { hedge, context } => hedged_context(*hedge, context),
        _ => Err(param_invalid()),
    }
}

/// A `hedgeVariant` and context of ML-DSA's parameters: the context and
/// whether signing is deterministic.
fn hedged_context(hedge: CK_ULONG, context: &[u8]) -> Result<(Vec<u8>, bool)> {
    if context.len() > ML_DSA_CONTEXT_MAX {
        return Err(param_invalid());
    }
    match hedge {
        CKH_HEDGE_PREFERRED | CKH_HEDGE_REQUIRED => Ok((context.to_vec(), false)),
        CKH_DETERMINISTIC_REQUIRED => Ok((context.to_vec(), true)),
        _ => Err(param_invalid()),
    }
}

/// `CKM_HASH_ML_DSA`'s `CK_HASH_SIGN_ADDITIONAL_CONTEXT` (PKCS#11 3.2
/// §6.67.6): required; its hedge variant and context as for `CKM_ML_DSA`,
/// and its `hash` one of `CKM_SHA224`,
/// `CKM_SHA256`, `CKM_SHA384`, `CKM_SHA512`, `CKM_SHA3_224` … `CKM_SHA3_512`
/// (anything else is `CKR_MECHANISM_PARAM_INVALID`).
fn hash_sign_context_param(mech: &Mechanism) -> Result<(Vec<u8>, bool, PreHash)> {
    let Param::HashSignContext {
        hedge,
        context,
        hash,
    } = &mech.param
    else {
        return Err(param_invalid());
    };
    let ph = PreHash::from_digest_mechanism(*hash).ok_or_else(param_invalid)?;
    let (context, deterministic) = hedged_context(*hedge, context)?;
    Ok((context, deterministic, ph))
}

/// PS256/384/512 only: hash = MGF1 hash = SHA-256/384/512, salt = hash length;
/// for `CKM_SHA*_RSA_PKCS_PSS` the parameter's hash must be the mechanism's.
fn pss_param(mech: &Mechanism, fixed: Option<Hash>) -> Result<Hash> {
    let Param::Pss {
        hash,
        mgf,
        salt_len,
    } = mech.param
    else {
        return Err(Error(CKR_MECHANISM_PARAM_INVALID));
    };
    let h = hash_of_digest_mechanism(hash).ok_or(Error(CKR_MECHANISM_PARAM_INVALID))?;
    let ok = h != Hash::Sha1
        && hash_of_mgf(mgf) == Some(h)
        && salt_len as usize == h.len()
        && fixed.is_none_or(|f| f == h);
    if ok {
        Ok(h)
    } else {
        Err(Error(CKR_MECHANISM_PARAM_INVALID))
    }
}

/// The provider operation an encrypt/decrypt/wrap/unwrap mechanism ends in:
/// its family. Its parameter is read by its row's [`ParamKind`] (one reader
/// per kind, shared by every family that takes it); the family alone is code,
/// one arm in `token::operation`'s `CipherCtx::run` (and `known_len` where the
/// output length is known before computing it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherScheme {
    /// `CKM_RSA_PKCS`: RSA1_5.
    RsaPkcs1,
    /// `CKM_RSA_PKCS_OAEP`: RSA-OAEP (SHA-1) or RSA-OAEP-256, by parameter.
    RsaOaep,
    /// `CKM_AES_GCM`.
    AesGcm,
    /// `CKM_AES_CBC` (`pad` false) and `CKM_AES_CBC_PAD` (PKCS#7 padding).
    AesCbc {
        /// PKCS#7 padding.
        pad: bool,
    },
    /// `CKM_AES_KEY_WRAP` (RFC 3394).
    AesKw,
    /// `CKM_AES_KEY_WRAP_KWP` (RFC 5649).
    AesKwp,
    /// `CKM_RSA_AES_KEY_WRAP`: BYOK import under a key-exchange key.
    RsaAesKw,
}

/// A cipher mechanism's parameter, read by its row's [`ParamKind`] and checked
/// against the Managed HSM rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CipherParam {
    /// None ([`ParamKind::None`]).
    None,
    /// RSA-OAEP's hash, SHA-1 or SHA-256 (MGF1 the same, empty label).
    Oaep(Hash),
    /// AES-GCM with a 12-byte IV.
    Gcm {
        /// The IV.
        iv: Vec<u8>,
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// Tag length in bytes (12–16).
        tag_len: usize,
    },
    /// A 16-byte IV (AES-CBC); multi-part operations move it along.
    Iv([u8; 16]),
    /// RSA-OAEP of an ephemeral AES key, then RFC 5649 under it (BYOK).
    RsaAesKw {
        /// The OAEP hash (MGF1 the same, empty label).
        oaep: Hash,
        /// The ephemeral AES key's length in bytes.
        aes_bytes: usize,
    },
}

/// A decided encrypt/decrypt/wrap/unwrap operation: the family and its
/// checked parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cipher {
    /// The provider operation.
    pub scheme: CipherScheme,
    /// The parameter.
    pub param: CipherParam,
}

/// The cipher scheme of `ty` if its registry row serves `op`, else
/// `CKR_MECHANISM_INVALID`: also the first check of C_WrapKey/C_UnwrapKey,
/// before any handle is looked at.
pub fn cipher_serves(ty: CK_MECHANISM_TYPE, op: KeyOps) -> Result<CipherScheme> {
    lookup(ty)
        .filter(|d| d.serves(op))
        .and_then(|d| d.cipher)
        .map(|(scheme, _)| scheme)
        .ok_or(Error(CKR_MECHANISM_INVALID))
}

/// Decide an encrypt, decrypt, wrap or unwrap operation (`op`) for `key`: the
/// mechanism must be a registry row serving `op` (`CKR_MECHANISM_INVALID`), be in the
/// key's narrowed `CKA_ALLOWED_MECHANISMS` (the same code), fit the key type
/// (`CKR_KEY_TYPE_INCONSISTENT`), carry valid parameters
/// (`CKR_MECHANISM_PARAM_INVALID`), and the key must allow `op` now.
pub fn cipher_plan(mech: &Mechanism, key: &KeyRecord, op: KeyOps, now: i64) -> Result<Cipher> {
    let def = lookup(mech.ty)
        .filter(|d| d.serves(op))
        .ok_or(Error(CKR_MECHANISM_INVALID))?;
    let (scheme, _) = def.cipher.ok_or(Error(CKR_MECHANISM_INVALID))?;
    check_allowed(key, mech.ty)?;
    if !def.keys.fits(key.kind) {
        return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
    }
    // One reader per parameter kind; no family is named here.
    let param = match def.param {
        ParamKind::None => {
            // AES-KW: RFC 3394's default IV only, a caller's IV is not a Managed HSM option.
            expect_no_param(mech)?;
            CipherParam::None
        }
        ParamKind::Oaep => CipherParam::Oaep(oaep_param(mech)?),
        ParamKind::Gcm => gcm_param(mech)?,
        ParamKind::Iv => {
            let Param::Bytes(iv) = &mech.param else {
                return Err(param_invalid());
            };
            CipherParam::Iv(<[u8; 16]>::try_from(iv.as_slice()).map_err(|_| param_invalid())?)
        }
        ParamKind::RsaAesKeyWrap => rsa_aes_param(mech)?,
        ParamKind::Pss | ParamKind::SignContext | ParamKind::HashSignContext => {
            return Err(param_invalid())
        }
    };
    check_usable(key, needed_op(scheme, op, key.ops), now)?;
    Ok(Cipher { scheme, param })
}

/// The key op a cipher operation needs. BYOK: the key-exchange key unwraps
/// through its `import` op, the only op it has; no other key can import, and
/// a KEK does nothing else. AES-KW/KWP are the Managed HSM's wrapKey/unwrapKey
/// algorithms: `C_Encrypt` with them is wrapKey of the caller's bytes and needs
/// `CKA_WRAP`, `C_Decrypt` is unwrapKey and needs `CKA_UNWRAP` (so an expired
/// key still unwraps and no longer wraps, as the date-time rule says).
///
/// RSA1_5, RSA-OAEP and RSA-OAEP-256 are both the Managed HSM's encrypt and
/// its wrapKey (of bytes the caller supplies, such as a DEK): `C_Encrypt` on a
/// key with the encrypt op is encrypt; on a key with wrapKey but not encrypt it
/// is wrapKey, and `C_Decrypt` likewise decrypt or unwrapKey.
fn needed_op(scheme: CipherScheme, op: KeyOps, key_ops: KeyOps) -> KeyOps {
    let rsa_wrap = |plain: KeyOps, wrap: KeyOps| {
        if !key_ops.contains(plain) && key_ops.contains(wrap) {
            wrap
        } else {
            plain
        }
    };
    match scheme {
        CipherScheme::RsaAesKw => KeyOps::IMPORT,
        CipherScheme::AesKw | CipherScheme::AesKwp if op == KeyOps::ENCRYPT => KeyOps::WRAP,
        CipherScheme::AesKw | CipherScheme::AesKwp if op == KeyOps::DECRYPT => KeyOps::UNWRAP,
        CipherScheme::RsaPkcs1 | CipherScheme::RsaOaep if op == KeyOps::ENCRYPT => {
            rsa_wrap(KeyOps::ENCRYPT, KeyOps::WRAP)
        }
        CipherScheme::RsaPkcs1 | CipherScheme::RsaOaep if op == KeyOps::DECRYPT => {
            rsa_wrap(KeyOps::DECRYPT, KeyOps::UNWRAP)
        }
        _ => op,
    }
}

/// The Managed HSM operation a `C_EncryptInit`/`C_DecryptInit` (`op` ENCRYPT
/// or DECRYPT) with mechanism `ty` on a key with `key_ops` is: encrypt/decrypt,
/// or wrapKey/unwrapKey (see [`needed_op`]); it names the operation in the audit log.
pub fn cipher_operation(ty: CK_MECHANISM_TYPE, key_ops: KeyOps, op: KeyOps) -> KeyOps {
    cipher_serves(ty, op).map_or(op, |scheme| needed_op(scheme, op, key_ops))
}

/// RSA-OAEP: SHA-1/MGF1-SHA-1 or SHA-256/MGF1-SHA-256, empty label only.
fn oaep_param(mech: &Mechanism) -> Result<Hash> {
    let Param::Oaep {
        hash,
        mgf,
        source,
        label,
    } = &mech.param
    else {
        return Err(param_invalid());
    };
    let h = hash_of_digest_mechanism(*hash).ok_or(param_invalid())?;
    // source 0 with no data is what some clients send for "no label".
    let ok = matches!(h, Hash::Sha1 | Hash::Sha256)
        && hash_of_mgf(*mgf) == Some(h)
        && (*source == CKZ_DATA_SPECIFIED || *source == 0)
        && label.is_empty();
    if ok {
        Ok(h)
    } else {
        Err(param_invalid())
    }
}

/// RSA-AES key wrap: an AES-128, -192 or -256 ephemeral key; OAEP as for
/// `CKM_RSA_PKCS_OAEP` (SHA-1 or SHA-256, the same MGF1, empty label).
fn rsa_aes_param(mech: &Mechanism) -> Result<CipherParam> {
    let Param::RsaAesKeyWrap { aes_bits, oaep } = &mech.param else {
        return Err(param_invalid());
    };
    if !matches!(*aes_bits, 128 | 192 | 256) {
        return Err(param_invalid());
    }
    let inner = Mechanism {
        ty: CKM_RSA_PKCS_OAEP,
        param: (**oaep).clone(),
    };
    Ok(CipherParam::RsaAesKw {
        oaep: oaep_param(&inner)?,
        aes_bytes: (*aes_bits / 8) as usize,
    })
}

/// AES-GCM: a 12-byte IV, any AAD, a tag of 96–128 bits in steps of 8.
fn gcm_param(mech: &Mechanism) -> Result<CipherParam> {
    let Param::Gcm { iv, aad, tag_bits } = &mech.param else {
        return Err(param_invalid());
    };
    if iv.len() != 12 || !(96..=128).contains(tag_bits) || tag_bits % 8 != 0 {
        return Err(param_invalid());
    }
    Ok(CipherParam::Gcm {
        iv: iv.clone(),
        aad: aad.clone(),
        tag_len: (*tag_bits / 8) as usize,
    })
}

/// The key type, size or curve of PKCS#8 `PrivateKeyInfo` DER (key import and
/// unwrap), by the Managed HSM rules: an RSA modulus outside [`RSA_BITS`] is
/// `CKR_KEY_SIZE_RANGE`, another curve `CKR_CURVE_NOT_SUPPORTED`, anything
/// that is not a PKCS#8 RSA or EC key `CKR_WRAPPED_KEY_INVALID`.
pub fn pkcs8_kind(der: &[u8]) -> Result<KeyKind> {
    const RSA_OID: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const EC_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let bad = || Error(CKR_WRAPPED_KEY_INVALID);
    let (info, _) = der_take(der, 0x30).ok_or_else(bad)?;
    let (_version, rest) = der_take(info, 0x02).ok_or_else(bad)?;
    let (alg, rest) = der_take(rest, 0x30).ok_or_else(bad)?;
    let (key, _) = der_take(rest, 0x04).ok_or_else(bad)?;
    if let Some(params) = alg.strip_prefix(RSA_OID) {
        if !params.is_empty() && params != [0x05, 0x00] {
            return Err(bad());
        }
        // RSAPrivateKey ::= SEQUENCE { version INTEGER, modulus INTEGER, ... }
        let (rsa, _) = der_take(key, 0x30).ok_or_else(bad)?;
        let (_v, rest) = der_take(rsa, 0x02).ok_or_else(bad)?;
        let (n, _) = der_take(rest, 0x02).ok_or_else(bad)?;
        let n = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
        let bits = n
            .first()
            .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        let bits = u32::try_from(bits).map_err(|_| bad())?;
        if !RSA_BITS.contains(&bits) {
            return Err(Error(CKR_KEY_SIZE_RANGE));
        }
        return Ok(KeyKind::Rsa(bits));
    }
    if let Some(params) = alg.strip_prefix(EC_OID) {
        // RFC 5915 §2 / RFC 5480: the namedCurve OID sits in the AlgorithmIdentifier.
        return match curve_from_params(params) {
            Ok(c) => Ok(KeyKind::Ec(c)),
            Err(Error(CKR_CURVE_NOT_SUPPORTED)) => Err(Error(CKR_CURVE_NOT_SUPPORTED)),
            Err(_) => Err(bad()),
        };
    }
    Err(bad())
}

/// An ML-DSA private key in PKCS#8 (RFC 9881): None when `der` is not one (no
/// id-ml-dsa-44/65/87 algorithm without parameters); else its parameter set
/// and 32-byte seed, the form keys are stored in. Only the seed form
/// (`privateKey` = `[0] IMPLICIT OCTET STRING (SIZE (32))`, as Python
/// `cryptography` and `openssl pkey -provparam ml-dsa.output_formats=seed-only`
/// write it) is taken: the expanded-key forms carry no seed, or a second copy
/// of the key that would have to be checked against it.
pub fn ml_dsa_pkcs8(der: &[u8]) -> Option<std::result::Result<(MlDsa, &[u8]), &'static str>> {
    let (info, _) = der_take(der, 0x30)?;
    let (_version, rest) = der_take(info, 0x02)?;
    let (alg, rest) = der_take(rest, 0x30)?;
    let set = MlDsa::ALL.into_iter().find(|s| alg == s.oid_der())?;
    let Some((key, _)) = der_take(rest, 0x04) else {
        return Some(Err("the ML-DSA private key has no privateKey"));
    };
    Some(match key {
        [0x80, 0x20, seed @ ..] if seed.len() == 32 => Ok((set, seed)),
        _ => Err("only the seed form of an ML-DSA private key is read (openssl pkey -provparam ml-dsa.output_formats=seed-only writes it)"),
    })
}

/// Split one DER element with tag `tag` off the front of `der`: (content, rest).
fn der_take(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The operations allowed outside `[nbf, exp)`: decrypt, unwrap and verify
/// (a Managed HSM lets expired keys unwrap old data and check old signatures).
const ALLOWED_OUTSIDE_WINDOW: KeyOps =
    KeyOps(KeyOps::DECRYPT.0 | KeyOps::UNWRAP.0 | KeyOps::VERIFY.0);

/// Whether `key` may perform `op` at time `now` (seconds since the epoch):
/// `enabled`, `key_ops`, and the date-time rule. Every refusal is
/// `CKR_KEY_FUNCTION_NOT_PERMITTED`.
pub fn check_usable(key: &KeyRecord, op: KeyOps, now: i64) -> Result<()> {
    let in_window = key.nbf.is_none_or(|nbf| now >= nbf) && key.exp.is_none_or(|exp| now < exp);
    if !key.enabled || !key.ops.contains(op) || (!in_window && !ALLOWED_OUTSIDE_WINDOW.contains(op))
    {
        return Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED));
    }
    Ok(())
}

/// The mechanisms a key of `kind` can use for any of `ops`, in table order:
/// the value of `CKA_ALLOWED_MECHANISMS` before a template narrows it. Key
/// generation mechanisms are not in it (they make a key, they do not use one).
pub fn usable_mechanisms(kind: KeyKind, ops: KeyOps) -> Vec<CK_MECHANISM_TYPE> {
    const USES: [KeyOps; 6] = [
        KeyOps::SIGN,
        KeyOps::VERIFY,
        KeyOps::ENCRYPT,
        KeyOps::DECRYPT,
        KeyOps::WRAP,
        KeyOps::UNWRAP,
    ];
    REGISTRY
        .iter()
        .filter(|d| d.keys.fits(kind))
        .filter(|d| {
            USES.iter().filter(|op| d.serves(**op)).any(|op| {
                let signing = *op == KeyOps::SIGN || *op == KeyOps::VERIFY;
                let needed = match d.cipher {
                    Some((scheme, _)) if !signing => needed_op(scheme, *op, ops),
                    _ => *op,
                };
                ops.contains(needed)
            })
        })
        .map(|d| d.ty)
        .collect()
}

/// A key whose creation template narrowed `CKA_ALLOWED_MECHANISMS` refuses
/// the other mechanisms with `CKR_MECHANISM_INVALID` (PKCS#11 3.0 §4.9: the
/// list of mechanisms allowed to be used with the key; SoftHSMv2 and kryoptic
/// answer the same code at `*Init`).
fn check_allowed(key: &KeyRecord, ty: CK_MECHANISM_TYPE) -> Result<()> {
    match &key.allowed_mechanisms {
        Some(list) if !list.contains(&ty) => Err(Error(CKR_MECHANISM_INVALID)),
        _ => Ok(()),
    }
}

/// The ops a key of `kind` can have at all.
pub fn possible_ops(kind: KeyKind) -> KeyOps {
    match kind {
        KeyKind::Rsa(_) => KeyOps(0b0011_1111),
        KeyKind::Ec(_) | KeyKind::MlDsa(_) => KeyOps::SIGN.with(KeyOps::VERIFY),
        // Encapsulation is key transport: wrapKey's op; decapsulation unwrapKey's.
        KeyKind::MlKem(_) => KeyOps::WRAP.with(KeyOps::UNWRAP),
        KeyKind::Aes(_) => KeyOps::ENCRYPT
            .with(KeyOps::DECRYPT)
            .with(KeyOps::WRAP)
            .with(KeyOps::UNWRAP),
    }
}

/// The digest mechanisms `C_DigestInit` accepts.
pub fn digest_hash(mech: &Mechanism) -> Result<Hash> {
    let hash = lookup(mech.ty)
        .and_then(|d| d.digest)
        .ok_or(Error(CKR_MECHANISM_INVALID))?;
    expect_no_param(mech)?;
    Ok(hash)
}

/// The curve named by `CKA_EC_PARAMS`; any other curve is `CKR_CURVE_NOT_SUPPORTED`.
pub fn curve_from_params(params: &[u8]) -> Result<Curve> {
    Curve::from_ec_params(params).ok_or_else(|| {
        // A well-formed OID or name of another curve, versus garbage.
        if params.first() == Some(&0x06) || params.first() == Some(&0x13) {
            Error(CKR_CURVE_NOT_SUPPORTED)
        } else {
            Error(CKR_ATTRIBUTE_VALUE_INVALID)
        }
    })
}

/// Shortest and longest PIN accepted.
pub const PIN_LEN: std::ops::RangeInclusive<usize> = 4..=255;

/// PIN length rule (`CKR_PIN_LEN_RANGE`).
pub fn check_pin_len(pin: &[u8]) -> crate::error::Result<()> {
    if PIN_LEN.contains(&pin.len()) {
        Ok(())
    } else {
        Err(crate::error::Error(CKR_PIN_LEN_RANGE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::key::KeyKind;
    use crate::engine::mechanism::Keys;
    use std::collections::BTreeMap;

    fn key(kind: KeyKind, ops: KeyOps) -> KeyRecord {
        KeyRecord {
            kind,
            name: "k".into(),
            version: "v".into(),
            public: None,
            ops,
            enabled: true,
            nbf: None,
            exp: None,
            created: 0,
            updated: 0,
            tags: BTreeMap::new(),
            local: true,
            gen_mechanism: None,
            public_private: false,
            public_label: None,
            public_hidden: false,
            private_hidden: false,
            allowed_mechanisms: None,
        }
    }

    fn pss(hash: CK_MECHANISM_TYPE, mgf: CK_RSA_PKCS_MGF_TYPE, salt_len: CK_ULONG) -> Mechanism {
        Mechanism {
            ty: CKM_RSA_PKCS_PSS,
            param: Param::Pss {
                hash,
                mgf,
                salt_len,
            },
        }
    }

    #[test]
    fn pss_salt_must_equal_hash_len() {
        let k = key(KeyKind::Rsa(2048), possible_ops(KeyKind::Rsa(2048)));
        assert!(sign_plan(&pss(CKM_SHA256, CKG_MGF1_SHA256, 32), &k, KeyOps::SIGN, 0).is_ok());
        for m in [
            pss(CKM_SHA256, CKG_MGF1_SHA256, 20),
            pss(CKM_SHA256, CKG_MGF1_SHA1, 32),
            pss(CKM_SHA_1, CKG_MGF1_SHA1, 20),
            Mechanism::new(CKM_RSA_PKCS_PSS),
        ] {
            assert_eq!(
                sign_plan(&m, &k, KeyOps::SIGN, 0),
                Err(Error(CKR_MECHANISM_PARAM_INVALID))
            );
        }
    }

    #[test]
    fn ecdsa_hash_must_match_curve() {
        let k = key(KeyKind::Ec(Curve::P256), KeyOps::SIGN);
        assert!(sign_plan(&Mechanism::new(CKM_ECDSA_SHA256), &k, KeyOps::SIGN, 0).is_ok());
        assert_eq!(
            sign_plan(&Mechanism::new(CKM_ECDSA_SHA384), &k, KeyOps::SIGN, 0),
            Err(Error(CKR_KEY_TYPE_INCONSISTENT))
        );
    }

    #[test]
    fn mechanism_must_fit_key_type() {
        let k = key(KeyKind::Rsa(2048), KeyOps::SIGN);
        assert_eq!(
            sign_plan(&Mechanism::new(CKM_ECDSA), &k, KeyOps::SIGN, 0),
            Err(Error(CKR_KEY_TYPE_INCONSISTENT))
        );
        assert_eq!(
            sign_plan(&Mechanism::new(CKM_MD5_RSA_PKCS), &k, KeyOps::SIGN, 0),
            Err(Error(CKR_MECHANISM_INVALID))
        );
    }

    #[test]
    fn expired_key_still_verifies_but_does_not_sign() {
        let mut k = key(KeyKind::Ec(Curve::P384), KeyOps::SIGN.with(KeyOps::VERIFY));
        k.exp = Some(100);
        assert_eq!(
            check_usable(&k, KeyOps::SIGN, 100),
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
        );
        assert_eq!(check_usable(&k, KeyOps::VERIFY, 100), Ok(()));
        assert_eq!(check_usable(&k, KeyOps::SIGN, 99), Ok(()));
        k.nbf = Some(50);
        assert_eq!(
            check_usable(&k, KeyOps::SIGN, 49),
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
        );
    }

    #[test]
    fn disabled_key_does_nothing() {
        let mut k = key(KeyKind::Rsa(2048), possible_ops(KeyKind::Rsa(2048)));
        k.enabled = false;
        for (op, _) in KeyOps::NAMES {
            assert_eq!(
                check_usable(&k, op, 0),
                Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
            );
        }
    }

    #[test]
    fn op_outside_key_ops_is_refused() {
        let k = key(KeyKind::Rsa(2048), KeyOps::VERIFY);
        assert_eq!(
            sign_plan(&Mechanism::new(CKM_SHA256_RSA_PKCS), &k, KeyOps::SIGN, 0),
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
        );
    }

    fn oaep(hash: CK_MECHANISM_TYPE, mgf: CK_RSA_PKCS_MGF_TYPE, label: &[u8]) -> Mechanism {
        Mechanism {
            ty: CKM_RSA_PKCS_OAEP,
            param: Param::Oaep {
                hash,
                mgf,
                source: CKZ_DATA_SPECIFIED,
                label: label.to_vec(),
            },
        }
    }

    #[test]
    fn oaep_is_sha1_or_sha256_without_label() {
        let k = key(KeyKind::Rsa(2048), possible_ops(KeyKind::Rsa(2048)));
        let plan = |m: &Mechanism| cipher_plan(m, &k, KeyOps::DECRYPT, 0);
        assert_eq!(
            plan(&oaep(CKM_SHA_1, CKG_MGF1_SHA1, b"")),
            Ok(Cipher {
                scheme: CipherScheme::RsaOaep,
                param: CipherParam::Oaep(Hash::Sha1)
            })
        );
        assert_eq!(
            plan(&oaep(CKM_SHA256, CKG_MGF1_SHA256, b"")),
            Ok(Cipher {
                scheme: CipherScheme::RsaOaep,
                param: CipherParam::Oaep(Hash::Sha256)
            })
        );
        for m in [
            oaep(CKM_SHA384, CKG_MGF1_SHA384, b""),
            oaep(CKM_SHA256, CKG_MGF1_SHA1, b""),
            oaep(CKM_SHA256, CKG_MGF1_SHA256, b"label"),
            Mechanism::new(CKM_RSA_PKCS_OAEP),
        ] {
            assert_eq!(plan(&m), Err(Error(CKR_MECHANISM_PARAM_INVALID)));
        }
    }

    #[test]
    fn gcm_needs_12_byte_iv_and_96_to_128_bit_tag() {
        let k = key(KeyKind::Aes(256), possible_ops(KeyKind::Aes(256)));
        let gcm = |iv: usize, tag_bits| Mechanism {
            ty: CKM_AES_GCM,
            param: Param::Gcm {
                iv: vec![0; iv],
                aad: vec![],
                tag_bits,
            },
        };
        assert!(cipher_plan(&gcm(12, 128), &k, KeyOps::ENCRYPT, 0).is_ok());
        assert!(cipher_plan(&gcm(12, 96), &k, KeyOps::ENCRYPT, 0).is_ok());
        for m in [gcm(16, 128), gcm(12, 64), gcm(12, 100), gcm(12, 136)] {
            assert_eq!(
                cipher_plan(&m, &k, KeyOps::ENCRYPT, 0),
                Err(Error(CKR_MECHANISM_PARAM_INVALID))
            );
        }
    }

    #[test]
    fn key_wrap_encrypts_under_wrap_key_and_decrypts_under_unwrap_key() {
        for (mech, cipher) in [
            (CKM_AES_KEY_WRAP, CipherScheme::AesKw),
            (CKM_AES_KEY_WRAP_KWP, CipherScheme::AesKwp),
        ] {
            let cipher = Cipher {
                scheme: cipher,
                param: CipherParam::None,
            };
            let kw = Mechanism::new(mech);
            let all = key(KeyKind::Aes(128), possible_ops(KeyKind::Aes(128)));
            for op in [
                KeyOps::ENCRYPT,
                KeyOps::DECRYPT,
                KeyOps::WRAP,
                KeyOps::UNWRAP,
            ] {
                assert_eq!(cipher_plan(&kw, &all, op, 0), Ok(cipher.clone()));
            }
            // encrypt/decrypt alone do not allow the Managed HSM's wrapKey/unwrapKey.
            let ed = key(KeyKind::Aes(128), KeyOps::ENCRYPT.with(KeyOps::DECRYPT));
            for op in [KeyOps::ENCRYPT, KeyOps::DECRYPT] {
                assert_eq!(
                    cipher_plan(&kw, &ed, op, 0),
                    Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
                );
            }
            let wrap_only = key(KeyKind::Aes(128), KeyOps::WRAP);
            assert!(cipher_plan(&kw, &wrap_only, KeyOps::ENCRYPT, 0).is_ok());
            assert_eq!(
                cipher_plan(&kw, &wrap_only, KeyOps::DECRYPT, 0),
                Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
            );
            let unwrap_only = key(KeyKind::Aes(128), KeyOps::UNWRAP);
            assert!(cipher_plan(&kw, &unwrap_only, KeyOps::DECRYPT, 0).is_ok());
            assert_eq!(
                cipher_plan(&kw, &unwrap_only, KeyOps::ENCRYPT, 0),
                Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
            );
            // After exp: unwrapKey (decrypt) still, wrapKey (encrypt) no more.
            let mut expired = all.clone();
            expired.exp = Some(10);
            assert!(cipher_plan(&kw, &expired, KeyOps::DECRYPT, 10).is_ok());
            assert_eq!(
                cipher_plan(&kw, &expired, KeyOps::ENCRYPT, 10),
                Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
            );
            let rsa = key(KeyKind::Rsa(2048), possible_ops(KeyKind::Rsa(2048)));
            assert_eq!(
                cipher_plan(&kw, &rsa, KeyOps::ENCRYPT, 0),
                Err(Error(CKR_KEY_TYPE_INCONSISTENT))
            );
        }
    }

    #[test]
    fn cipher_mechanism_must_fit_key_type() {
        let ec = key(KeyKind::Ec(Curve::P256), KeyOps::SIGN);
        assert_eq!(
            cipher_plan(
                &oaep(CKM_SHA_1, CKG_MGF1_SHA1, b""),
                &ec,
                KeyOps::DECRYPT,
                0
            ),
            Err(Error(CKR_KEY_TYPE_INCONSISTENT))
        );
        let aes = key(KeyKind::Aes(128), possible_ops(KeyKind::Aes(128)));
        assert_eq!(
            cipher_plan(&Mechanism::new(CKM_RSA_PKCS), &aes, KeyOps::ENCRYPT, 0),
            Err(Error(CKR_KEY_TYPE_INCONSISTENT))
        );
    }

    #[test]
    fn expired_key_still_decrypts_but_does_not_encrypt() {
        let mut k = key(KeyKind::Rsa(2048), possible_ops(KeyKind::Rsa(2048)));
        k.exp = Some(10);
        let m = Mechanism::new(CKM_RSA_PKCS);
        assert_eq!(
            cipher_plan(&m, &k, KeyOps::ENCRYPT, 10),
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
        );
        assert!(cipher_plan(&m, &k, KeyOps::DECRYPT, 10).is_ok());
        assert!(cipher_plan(&m, &k, KeyOps::UNWRAP, 10).is_ok());
    }

    #[test]
    fn every_registry_row_is_consistent() {
        for (i, d) in REGISTRY.iter().enumerate() {
            assert!(
                REGISTRY[..i].iter().all(|o| o.ty != d.ty),
                "{} listed twice",
                d.name
            );
            let ops = CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP;
            let generates = d.flags & (CKF_GENERATE | CKF_GENERATE_KEY_PAIR) != 0;
            assert_eq!(
                d.sign.is_some(),
                d.flags & (CKF_SIGN | CKF_VERIFY) != 0,
                "{}",
                d.name
            );
            assert_eq!(d.digest.is_some(), d.flags & CKF_DIGEST != 0, "{}", d.name);
            let cipher_flags = d.flags & ops & !(CKF_SIGN | CKF_VERIFY) != 0;
            assert_eq!(d.cipher.is_some(), cipher_flags, "{}", d.name);
            assert_eq!(
                d.keys == Keys::None,
                d.digest.is_some() || generates,
                "{}",
                d.name
            );
            assert!(d.min <= d.max, "{}", d.name);
        }
    }

    #[test]
    fn ml_dsa_pkcs8_takes_the_seed_form_only() {
        // RFC 9881's seed form for id-ml-dsa-65, as Python cryptography writes it.
        let seed: Vec<u8> = (0..32).collect();
        let mut der = vec![0x30, 0x34, 0x02, 0x01, 0x00, 0x30, 0x0b];
        der.extend_from_slice(MlDsa::P65.oid_der());
        der.extend_from_slice(&[0x04, 0x22, 0x80, 0x20]);
        der.extend_from_slice(&seed);
        assert_eq!(ml_dsa_pkcs8(&der), Some(Ok((MlDsa::P65, &seed[..]))));
        let mut expanded = der.clone();
        expanded[20] = 0x04;
        assert!(
            matches!(ml_dsa_pkcs8(&expanded), Some(Err(_))),
            "an OCTET STRING is the expanded form"
        );
        let p = crate::crypto::provider();
        assert_eq!(
            ml_dsa_pkcs8(&p.generate_ec(Curve::P256).unwrap()),
            None,
            "an EC key is not ML-DSA"
        );
    }

    #[test]
    fn pkcs8_kind_reads_size_and_curve() {
        let p = crate::crypto::provider();
        let ec = p.generate_ec(Curve::P384).unwrap();
        assert_eq!(pkcs8_kind(&ec), Ok(KeyKind::Ec(Curve::P384)));
        let rsa = p.generate_rsa(2048).unwrap();
        assert_eq!(pkcs8_kind(&rsa), Ok(KeyKind::Rsa(2048)));
        assert_eq!(
            pkcs8_kind(&[0x30, 0x00]),
            Err(Error(CKR_WRAPPED_KEY_INVALID))
        );
    }

    #[test]
    fn only_managed_hsm_curves_are_accepted() {
        assert_eq!(curve_from_params(Curve::P521.oid_der()), Ok(Curve::P521));
        // secp224r1: 1.3.132.0.33
        assert_eq!(
            curve_from_params(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21]),
            Err(Error(CKR_CURVE_NOT_SUPPORTED))
        );
        assert_eq!(
            curve_from_params(&[0xff]),
            Err(Error(CKR_ATTRIBUTE_VALUE_INVALID))
        );
    }
}
