//! The Managed HSM data plane (issue 15 item 8): sign, verify, encrypt,
//! decrypt, wrapKey and unwrapKey of one key version, named by its REST
//! algorithm (JWA) name, for the admin CLI's `key sign` and friends.
//!
//! Each algorithm name becomes the PKCS#11 mechanism the registry says it is,
//! and the operation is decided by the same plans (`sign_plan`, `cipher_plan`:
//! key_ops, enabled, nbf/exp, key type) and run by the same contexts as a
//! `C_Sign`/`C_Encrypt`, so both doors apply one set of rules.

use super::lifecycle::{find_row, token_label, Outcome, Refusal};
use super::objects::{Entry, ParsedKey, ParsedPublic};
use crate::crypto::{self, Hash, ML_DSA_MU_LEN};
use crate::engine::key::{Body, KeyKind, KeyOps, KeyRecord};
use crate::engine::mechanism::{lookup, Mechanism, Param};
use crate::engine::policy;
use crate::engine::rules::{
    cipher_plan, external_mu_plan, sign_plan, CipherScheme, SignPlan, ML_DSA_CONTEXT_MAX,
};
use crate::error::Error;
use crate::store::{MasterKey, Store};
use crate::token::operation::{CipherCtx, CipherKey, SignCtx, Stage, VerifyCtx};
use cryptoki_sys::*;

/// The most bytes `key random` returns in one call (the REST API's `count`, 1-128).
pub const MAX_RANDOM: usize = 128;

/// AES-GCM IV length the service generates (NIST SP 800-38D's 96 bits).
const GCM_IV_LEN: usize = 12;
/// AES-GCM tag length the service produces and expects.
const GCM_TAG_LEN: usize = 16;

/// The signature algorithms: REST name, the hash whose digest the caller gives.
const SIGN_ALGS: &[(&str, Hash)] = &[
    ("RS256", Hash::Sha256),
    ("RS384", Hash::Sha384),
    ("RS512", Hash::Sha512),
    ("PS256", Hash::Sha256),
    ("PS384", Hash::Sha384),
    ("PS512", Hash::Sha512),
    ("ES256", Hash::Sha256),
    ("ES256K", Hash::Sha256),
    ("ES384", Hash::Sha384),
    ("ES512", Hash::Sha512),
];

/// An encrypt/decrypt/wrapKey/unwrapKey operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherOp {
    /// `encrypt`.
    Encrypt,
    /// `decrypt`.
    Decrypt,
    /// `wrapKey`.
    Wrap,
    /// `unwrapKey`.
    Unwrap,
}

impl CipherOp {
    /// The key operation it needs (as `cipher_plan` reads it).
    fn op(self) -> KeyOps {
        match self {
            CipherOp::Encrypt => KeyOps::ENCRYPT,
            CipherOp::Decrypt => KeyOps::DECRYPT,
            CipherOp::Wrap => KeyOps::WRAP,
            CipherOp::Unwrap => KeyOps::UNWRAP,
        }
    }

    /// Whether it runs in the encrypting direction (public key for RSA).
    fn forward(self) -> bool {
        matches!(self, CipherOp::Encrypt | CipherOp::Wrap)
    }
}

/// A cipher request's optional symmetric parameters, as the REST API takes them.
#[derive(Clone, Debug, Default)]
pub struct CipherInput {
    /// The value to operate on.
    pub value: Vec<u8>,
    /// `iv`: AES-CBC's (required); AES-GCM decryption's (encryption makes its own).
    pub iv: Option<Vec<u8>>,
    /// `aad`: AES-GCM's additional authenticated data.
    pub aad: Option<Vec<u8>>,
    /// `tag`: AES-GCM decryption's tag.
    pub tag: Option<Vec<u8>>,
}

/// A cipher result (the REST `KeyOperationResult`).
#[derive(Clone, Debug, Default)]
pub struct CipherOutput {
    /// The result.
    pub value: Vec<u8>,
    /// AES-GCM encryption: the IV the service chose.
    pub iv: Option<Vec<u8>>,
    /// AES-GCM encryption: the tag.
    pub tag: Option<Vec<u8>>,
    /// AES-GCM encryption: the AAD, echoed.
    pub aad: Option<Vec<u8>>,
}

/// One key version, found for use: its kid, record and entry (whose
/// material opens on first use).
struct Opened {
    kid: String,
    key: KeyRecord,
    entry: Entry,
}

/// Version `version` of `name` (the current one when None).
fn open(store: &dyn Store, name: &str, version: Option<&str>) -> Outcome<Opened> {
    let row = find_row(store, name, version)?;
    let entry = Entry::from_row(&row)?;
    let Body::Key(key) = &entry.rec.body else {
        return Err(Refusal::UnknownKey(name.into()));
    };
    let key = key.clone();
    let kid = policy::kid(&token_label(store)?, &key);
    Ok(Opened { kid, key, entry })
}

fn invalid(msg: String) -> Refusal {
    Refusal::Invalid(msg)
}

/// A refusal of the rules, in words (the `CK_RV` a `C_*Init` would return).
fn refused(alg: &str, what: &str, e: Error) -> Refusal {
    match e.0 {
        CKR_KEY_FUNCTION_NOT_PERMITTED => invalid(format!(
            "the key may not {what} now (disabled, outside its not-before/expires window, or {what} not in its key_ops)"
        )),
        CKR_KEY_TYPE_INCONSISTENT | CKR_MECHANISM_INVALID => {
            invalid(format!("{alg} does not fit this key"))
        }
        _ => Refusal::Token(e),
    }
}

fn sha_mechanisms(h: Hash) -> (CK_MECHANISM_TYPE, CK_RSA_PKCS_MGF_TYPE) {
    match h {
        Hash::Sha1 => (CKM_SHA_1, CKG_MGF1_SHA1),
        Hash::Sha256 => (CKM_SHA256, CKG_MGF1_SHA256),
        Hash::Sha384 => (CKM_SHA384, CKG_MGF1_SHA384),
        Hash::Sha512 => (CKM_SHA512, CKG_MGF1_SHA512),
    }
}

/// The PKCS#11 mechanism a signature algorithm is, taking the digest as
/// given, and the digest's hash.
fn sign_mechanism(alg: &str) -> Outcome<(Mechanism, Hash)> {
    let &(_, h) = SIGN_ALGS
        .iter()
        .find(|(n, _)| *n == alg)
        .ok_or_else(|| invalid(format!("unknown signature algorithm '{alg}'")))?;
    let (hash, mgf) = sha_mechanisms(h);
    let mech = match &alg[..2] {
        // CKM_RSA_PKCS over a DigestInfo is RS256/384/512.
        "RS" => Mechanism::new(CKM_RSA_PKCS),
        "PS" => Mechanism {
            ty: CKM_RSA_PKCS_PSS,
            param: Param::Pss {
                hash,
                mgf,
                salt_len: h.len() as CK_ULONG,
            },
        },
        _ => Mechanism::new(CKM_ECDSA),
    };
    Ok((mech, h))
}

/// The algorithm must be the one the registry says this mechanism is on
/// this key (ES256 on a P-384 key, A128GCM on a 256-bit key are refused).
fn check_jwa(mech: &Mechanism, op: KeyOps, key: &KeyRecord, alg: &str) -> Outcome<()> {
    let jwa = lookup(mech.ty).and_then(|d| d.jwa(op, key.kind, &mech.param));
    if jwa.is_some_and(|j| j != alg) {
        return Err(invalid(format!("{alg} does not fit this key")));
    }
    Ok(())
}

/// The input a sign mechanism takes for `digest`: the digest itself, or for
/// RS256/384/512 (`CKM_RSA_PKCS`) its DigestInfo.
fn sign_input(alg: &str, h: Hash, digest: &[u8]) -> Outcome<Vec<u8>> {
    if digest.len() != h.len() {
        return Err(invalid(format!(
            "the digest for {alg} is {} bytes, not {}",
            h.len(),
            digest.len()
        )));
    }
    Ok(match &alg[..2] {
        "RS" => [h.digest_info_prefix(), digest].concat(),
        _ => digest.to_vec(),
    })
}

/// What `key sign`/`verify` sign: the REST API's `alg` and `value` (a
/// digest for RS/PS/ES, the message itself for ML-DSA, or ML-DSA's μ) and,
/// for ML-DSA, the optional `context` (empty: none).
pub struct SignRequest<'a> {
    /// The JWA algorithm (`ES256`, `ML-DSA-65`, …).
    pub alg: &'a str,
    /// The digest, or for ML-DSA the message (or μ).
    pub data: &'a [u8],
    /// ML-DSA's context string (FIPS 204 §5.2), at most 255 bytes.
    pub context: &'a [u8],
    /// ML-DSA with an external μ: `data` is the 64-byte μ (FIPS 204
    /// Algorithm 7 step 6) the caller computed, which carries the context.
    pub external_mu: bool,
}

/// The mechanism and its input for a request: a digest for the RS/PS/ES
/// algorithms, the message itself for ML-DSA (pure ML-DSA signs the message;
/// the Managed HSM's `value` is the message for AKP keys), with its context
/// as PKCS#11's `CK_SIGN_ADDITIONAL_CONTEXT` (hedged, as the service signs).
fn sign_request(r: &SignRequest) -> Outcome<(Mechanism, Vec<u8>)> {
    let alg = r.alg;
    let ml_dsa = crypto::MlDsa::from_name(alg).is_some();
    if r.external_mu {
        if !ml_dsa {
            return Err(invalid(format!("{alg} takes no external mu")));
        }
        if !r.context.is_empty() {
            return Err(invalid(
                "an external mu carries its context: none is given beside it".into(),
            ));
        }
        if r.data.len() != ML_DSA_MU_LEN {
            return Err(invalid(format!(
                "the mu is {} bytes; ML-DSA's mu is {ML_DSA_MU_LEN}",
                r.data.len()
            )));
        }
        return Ok((Mechanism::new(CKM_ML_DSA), r.data.to_vec()));
    }
    if ml_dsa {
        if r.context.len() > ML_DSA_CONTEXT_MAX {
            return Err(invalid(format!(
                "the context is {} bytes; ML-DSA takes at most {ML_DSA_CONTEXT_MAX}",
                r.context.len()
            )));
        }
        let mut mech = Mechanism::new(CKM_ML_DSA);
        if !r.context.is_empty() {
            mech.param = Param::SignContext {
                hedge: CKH_HEDGE_PREFERRED,
                context: r.context.to_vec(),
            };
        }
        return Ok((mech, r.data.to_vec()));
    }
    if !r.context.is_empty() {
        return Err(invalid(format!("{alg} takes no context")));
    }
    let (mech, h) = sign_mechanism(alg)?;
    Ok((mech, sign_input(alg, h, r.data)?))
}

/// The plan of a request: its mechanism's, or for an external μ the
/// external-μ plan (the same key rules as `CKM_ML_DSA`).
fn request_plan(
    req: &SignRequest,
    mech: &Mechanism,
    key: &KeyRecord,
    op: KeyOps,
    now: i64,
) -> Result<SignPlan, Error> {
    match req.external_mu {
        true => external_mu_plan(key, op, now),
        false => sign_plan(mech, key, op, now),
    }
}

/// `sign`: sign the request's digest (for ML-DSA: the message, or μ);
/// returns the kid and the signature.
pub fn sign(
    store: &dyn Store,
    master: &MasterKey,
    name: &str,
    version: Option<&str>,
    req: &SignRequest,
    now: i64,
) -> Outcome<(String, Vec<u8>)> {
    let alg = req.alg;
    let (mech, input) = sign_request(req)?;
    let o = open(store, name, version)?;
    let plan =
        request_plan(req, &mech, &o.key, KeyOps::SIGN, now).map_err(|e| refused(alg, "sign", e))?;
    check_jwa(&mech, KeyOps::SIGN, &o.key, alg)?;
    let label = token_label(store)?;
    let key = o.entry.private_key(Some(master), &label)?;
    let sig = SignCtx::new(key, plan)?.sign(Some(&input))?;
    Ok((o.kid, sig))
}

/// `verify`: whether `signature` is the request's signature; returns the kid
/// and the answer (a wrong signature is `false`, not an error).
pub fn verify(
    store: &dyn Store,
    name: &str,
    version: Option<&str>,
    req: &SignRequest,
    signature: &[u8],
    now: i64,
) -> Outcome<(String, bool)> {
    let alg = req.alg;
    let (mech, input) = sign_request(req)?;
    let o = open(store, name, version)?;
    let plan = request_plan(req, &mech, &o.key, KeyOps::VERIFY, now)
        .map_err(|e| refused(alg, "verify", e))?;
    check_jwa(&mech, KeyOps::VERIFY, &o.key, alg)?;
    let key: ParsedPublic = o.entry.public_key()?;
    match VerifyCtx::new(key, plan)?.verify(Some(&input), signature) {
        Ok(()) => Ok((o.kid, true)),
        Err(Error(CKR_SIGNATURE_INVALID | CKR_SIGNATURE_LEN_RANGE)) => Ok((o.kid, false)),
        Err(e) => Err(e.into()),
    }
}

/// The cipher algorithm families and the optional parameters each takes
/// (`iv`, `aad`, `tag`), as the REST `KeyOperationsParameters` use them.
const CIPHER_FAMILIES: &[(&str, [bool; 3])] = &[
    ("RSA", [false, false, false]),
    ("GCM", [true, true, true]),
    ("CBC", [true, false, false]),
    ("CBCPAD", [true, false, false]),
    ("KW", [false, false, false]),
];

/// The PKCS#11 mechanism a cipher algorithm is, with its parameter from `input`.
fn cipher_mechanism(alg: &str, op: CipherOp, input: &CipherInput) -> Outcome<Mechanism> {
    let unknown = || invalid(format!("unknown algorithm '{alg}'"));
    let family = match alg {
        "RSA1_5" | "RSA-OAEP" | "RSA-OAEP-256" => "RSA",
        _ => ["A128", "A192", "A256"]
            .iter()
            .find_map(|size| alg.strip_prefix(size))
            .ok_or_else(unknown)?,
    };
    let &(_, takes) = CIPHER_FAMILIES
        .iter()
        .find(|(f, _)| *f == family)
        .ok_or_else(unknown)?;
    let given = [&input.iv, &input.aad, &input.tag];
    for ((name, takes), given) in ["--iv", "--aad", "--tag"].iter().zip(takes).zip(given) {
        if given.is_some() && !takes {
            return Err(invalid(format!("{alg} takes no {name}")));
        }
    }
    let oaep = |h: Hash| {
        let (hash, mgf) = sha_mechanisms(h);
        Mechanism {
            ty: CKM_RSA_PKCS_OAEP,
            param: Param::Oaep {
                hash,
                mgf,
                source: CKZ_DATA_SPECIFIED,
                label: Vec::new(),
            },
        }
    };
    let needs = |what: &str, v: &Option<Vec<u8>>| {
        v.clone()
            .ok_or_else(|| invalid(format!("{alg} needs {what}")))
    };
    Ok(match (alg, family) {
        ("RSA1_5", _) => Mechanism::new(CKM_RSA_PKCS),
        ("RSA-OAEP", _) => oaep(Hash::Sha1),
        ("RSA-OAEP-256", _) => oaep(Hash::Sha256),
        (_, "GCM") => {
            let iv = if op.forward() {
                // The service chooses the IV, so that no caller can reuse one.
                if input.iv.is_some() {
                    return Err(invalid(format!(
                        "{alg} encryption chooses its own IV: give no --iv"
                    )));
                }
                let mut iv = vec![0; GCM_IV_LEN];
                crypto::provider().random(&mut iv)?;
                iv
            } else {
                needs("--tag to decrypt", &input.tag)?;
                needs("--iv to decrypt", &input.iv)?
            };
            Mechanism {
                ty: CKM_AES_GCM,
                param: Param::Gcm {
                    iv,
                    aad: input.aad.clone().unwrap_or_default(),
                    tag_bits: (GCM_TAG_LEN * 8) as CK_ULONG,
                },
            }
        }
        (_, "CBC") => Mechanism {
            ty: CKM_AES_CBC,
            param: Param::Bytes(needs("--iv (16 bytes)", &input.iv)?),
        },
        (_, "CBCPAD") => Mechanism {
            ty: CKM_AES_CBC_PAD,
            param: Param::Bytes(needs("--iv (16 bytes)", &input.iv)?),
        },
        _ => Mechanism::new(CKM_AES_KEY_WRAP),
    })
}

/// `encrypt`, `decrypt`, `wrapKey` or `unwrapKey` of `input` with `alg`;
/// returns the kid and the result (with AES-GCM encryption's IV, tag and AAD).
#[allow(clippy::too_many_arguments)]
pub fn cipher(
    store: &dyn Store,
    master: &MasterKey,
    name: &str,
    version: Option<&str>,
    op: CipherOp,
    alg: &str,
    input: &CipherInput,
    now: i64,
) -> Outcome<(String, CipherOutput)> {
    let mech = cipher_mechanism(alg, op, input)?;
    let o = open(store, name, version)?;
    let what = match op {
        CipherOp::Encrypt => "encrypt",
        CipherOp::Decrypt => "decrypt",
        CipherOp::Wrap => "wrapKey",
        CipherOp::Unwrap => "unwrapKey",
    };
    // wrapKey/unwrapKey are the PKCS#11 encrypting/decrypting direction with
    // the wrap/unwrap key op (as C_Encrypt with AES-KW is, see cipher_plan).
    let plan = cipher_plan(&mech, &o.key, op.op(), now).map_err(|e| refused(alg, what, e))?;
    check_jwa(&mech, op.op(), &o.key, alg)?;
    if plan.scheme == CipherScheme::RsaAesKw {
        return Err(invalid(format!("{alg} does not fit this key")));
    }
    let misfit = || invalid(format!("{alg} does not fit this key"));
    // RSA encryption needs only the public key: the sealed material stays closed.
    let key = match (o.key.kind, op.forward()) {
        (KeyKind::Rsa(_), true) => match o.entry.public_key()? {
            ParsedPublic::Rsa(k) => CipherKey::RsaPublic(k),
            ParsedPublic::Ec(..) | ParsedPublic::MlDsa(..) | ParsedPublic::MlKem(_) => {
                return Err(misfit())
            }
        },
        _ => match o.entry.private_key(Some(master), &token_label(store)?)? {
            ParsedKey::Aes(k) => CipherKey::Aes(k),
            ParsedKey::Rsa(k) => CipherKey::RsaPrivate(k),
            ParsedKey::Ec(..) | ParsedKey::MlDsa(..) | ParsedKey::MlKem(_) => return Err(misfit()),
        },
    };
    let gcm_iv = match &mech.param {
        Param::Gcm { iv, .. } => Some(iv.clone()),
        _ => None,
    };
    let data = match (&gcm_iv, op.forward(), &input.tag) {
        (Some(_), false, Some(tag)) => [input.value.as_slice(), tag].concat(),
        _ => input.value.clone(),
    };
    let step = CipherCtx::new(key, plan, op.forward()).run(&data, Stage::Single)?;
    let mut out = CipherOutput {
        value: step.out.to_vec(),
        ..CipherOutput::default()
    };
    if let (Some(iv), true) = (gcm_iv, op.forward()) {
        let tag = out.value.split_off(out.value.len() - GCM_TAG_LEN);
        out.iv = Some(iv);
        out.tag = Some(tag);
        out.aad = input.aad.clone();
    }
    Ok((o.kid, out))
}

/// `random`: `count` bytes (1-[`MAX_RANDOM`]) from the CSPRNG.
pub fn random(count: usize) -> Outcome<Vec<u8>> {
    if !(1..=MAX_RANDOM).contains(&count) {
        return Err(invalid(format!(
            "count must be 1-{MAX_RANDOM}, not {count}"
        )));
    }
    let mut out = vec![0; count];
    crypto::provider().random(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Curve;

    /// The key a REST algorithm name is for.
    fn kind_for(alg: &str) -> KeyKind {
        match alg {
            "ES256" => KeyKind::Ec(Curve::P256),
            "ES256K" => KeyKind::Ec(Curve::P256K),
            "ES384" => KeyKind::Ec(Curve::P384),
            "ES512" => KeyKind::Ec(Curve::P521),
            a if a.starts_with("A128") => KeyKind::Aes(128),
            a if a.starts_with("A192") => KeyKind::Aes(192),
            a if a.starts_with("A256") => KeyKind::Aes(256),
            _ => KeyKind::Rsa(2048),
        }
    }

    #[test]
    fn every_signature_algorithm_is_the_registry_mechanism_of_that_name() {
        for (alg, _) in SIGN_ALGS {
            let (mech, _) = sign_mechanism(alg).unwrap();
            let jwa = lookup(mech.ty).and_then(|d| d.jwa(KeyOps::SIGN, kind_for(alg), &mech.param));
            // CKM_RSA_PKCS: the DigestInfo decides, which sign_input builds.
            let expected = (!alg.starts_with("RS")).then(|| alg.to_string());
            assert_eq!(jwa, expected, "{alg}");
        }
    }

    #[test]
    fn every_cipher_algorithm_is_the_registry_mechanism_of_that_name() {
        let input = CipherInput {
            iv: Some(vec![0; 16]),
            tag: Some(vec![0; 16]),
            ..CipherInput::default()
        };
        for alg in [
            "RSA1_5",
            "RSA-OAEP",
            "RSA-OAEP-256",
            "A128GCM",
            "A192GCM",
            "A256GCM",
            "A128CBC",
            "A192CBC",
            "A256CBC",
            "A128CBCPAD",
            "A192CBCPAD",
            "A256CBCPAD",
            "A128KW",
            "A192KW",
            "A256KW",
        ] {
            let gcm = alg.ends_with("GCM");
            let input = CipherInput {
                tag: input.tag.clone().filter(|_| gcm),
                ..input.clone()
            };
            let input = CipherInput {
                iv: input
                    .iv
                    .clone()
                    .filter(|_| !alg.ends_with("KW") && !alg.starts_with("RSA")),
                ..input
            };
            let mech = cipher_mechanism(alg, CipherOp::Decrypt, &input).unwrap();
            let jwa =
                lookup(mech.ty).and_then(|d| d.jwa(KeyOps::DECRYPT, kind_for(alg), &mech.param));
            assert_eq!(jwa.as_deref(), Some(alg), "{alg}");
        }
        assert!(cipher_mechanism("A256XTS", CipherOp::Encrypt, &CipherInput::default()).is_err());
    }
}
