//! HashML-DSA (PKCS#11 3.2 §6.67.6–7, FIPS 204 §5.4) through the C ABI:
//! `CKM_HASH_ML_DSA` over a caller's PH(M) and the ten `CKM_HASH_ML_DSA_<hash>`
//! that hash on the token, every signature checked by Python `cryptography`
//! (≥ 47: `verify_mu`) over a μ the test script computes itself from the
//! FIPS 204 formula with `hashlib` — cryptography has no HashML-DSA API. The
//! Managed HSM surface's external μ (`key sign|verify --mu`) is at the end.
//! Python is `$SOFTMHSM_PYTHON` if set, else `python3`. The pure-Rust build
//! has no ML-DSA (README): the file is empty there.
#![cfg(feature = "aws-lc")]

mod common;

use common::python::*;
use common::*;
use cryptoki::mechanism::dsa::{HashSignAdditionalContext, HedgeType, SignAdditionalContext};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, MlDsaParameterSetType, ObjectHandle};
use cryptoki_sys::*;
use sha2::Digest as _;

const MSG: &[u8] = b"HashML-DSA signs a hash of this message, with the hash's OID";

/// The checker: one case per line of a JSON file, "ok" or "invalid" per
/// case. μ is computed here from FIPS 204 §5.4 with hashlib: tr =
/// SHAKE256(pk, 64), M' = 0x01 ‖ |ctx| ‖ ctx ‖ OID(PH) ‖ PH(M), μ =
/// SHAKE256(tr ‖ M', 64); modes: "hash" (PH of msg computed here),
/// "prehashed" (msg is PH(M)), "pure" (plain ML-DSA verify), "mu" (msg is μ).
const CHECKER: &str = r#"
import sys, json, hashlib
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.exceptions import InvalidSignature
ARC = {'sha256': 1, 'sha384': 2, 'sha512': 3, 'sha224': 4, 'sha3_224': 7, 'sha3_256': 8,
       'sha3_384': 9, 'sha3_512': 10, 'shake128': 11, 'shake256': 12}
def ph(name, m):
    if name == 'shake128': return hashlib.shake_128(m).digest(32)
    if name == 'shake256': return hashlib.shake_256(m).digest(64)
    return hashlib.new(name, m).digest()
for line in open(sys.argv[1]):
    c = json.loads(line)
    pk = bytes.fromhex(c['pub']); msg = bytes.fromhex(c['msg']); ctx = bytes.fromhex(c['ctx'])
    sig = bytes.fromhex(c['sig'])
    k = getattr(mldsa, 'MLDSA' + c['set'] + 'PublicKey').from_public_bytes(pk)
    try:
        if c['mode'] == 'pure':
            k.verify(sig, msg, ctx or None)
        elif c['mode'] == 'mu':
            k.verify_mu(sig, msg)
        else:
            d = ph(c['hash'], msg) if c['mode'] == 'hash' else msg
            oid = bytes([6, 9, 0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, ARC[c['hash']]])
            tr = hashlib.shake_256(pk).digest(64)
            mu = hashlib.shake_256(tr + bytes([1, len(ctx)]) + ctx + oid + d).digest(64)
            k.verify_mu(sig, mu)
        print('ok')
    except InvalidSignature:
        print('invalid')
"#;

/// One signature for the checker.
struct Case {
    set: &'static str,
    public: Vec<u8>,
    mode: &'static str,
    hash: &'static str,
    msg: Vec<u8>,
    ctx: Vec<u8>,
    sig: Vec<u8>,
}

/// Python's verdict on each case, in order.
fn python_check(cases: &[Case]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.jsonl");
    let lines: Vec<String> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "set": c.set, "pub": hex(&c.public), "mode": c.mode, "hash": c.hash,
                "msg": hex(&c.msg), "ctx": hex(&c.ctx), "sig": hex(&c.sig),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = run_cmd(
        &python(),
        &["-c".into(), CHECKER.into(), file.into_os_string()],
    );
    out.lines().map(str::to_string).collect()
}

/// The ten hashing mechanisms and the hashlib name of each one's PH.
const HASHING: [(MechanismType, &str); 10] = [
    (MechanismType::HASH_ML_DSA_SHA224, "sha224"),
    (MechanismType::HASH_ML_DSA_SHA256, "sha256"),
    (MechanismType::HASH_ML_DSA_SHA384, "sha384"),
    (MechanismType::HASH_ML_DSA_SHA512, "sha512"),
    (MechanismType::HASH_ML_DSA_SHA3_224, "sha3_224"),
    (MechanismType::HASH_ML_DSA_SHA3_256, "sha3_256"),
    (MechanismType::HASH_ML_DSA_SHA3_384, "sha3_384"),
    (MechanismType::HASH_ML_DSA_SHA3_512, "sha3_512"),
    (MechanismType::HASH_ML_DSA_SHAKE128, "shake128"),
    (MechanismType::HASH_ML_DSA_SHAKE256, "shake256"),
];

/// `CKM_HASH_ML_DSA_<hash>` of `ty` with this parameter.
fn hashing(ty: MechanismType, p: SignAdditionalContext<'_>) -> Mechanism<'_> {
    match ty {
        MechanismType::HASH_ML_DSA_SHA224 => Mechanism::HashMlDsaSha224(p),
        MechanismType::HASH_ML_DSA_SHA256 => Mechanism::HashMlDsaSha256(p),
        MechanismType::HASH_ML_DSA_SHA384 => Mechanism::HashMlDsaSha384(p),
        MechanismType::HASH_ML_DSA_SHA512 => Mechanism::HashMlDsaSha512(p),
        MechanismType::HASH_ML_DSA_SHA3_224 => Mechanism::HashMlDsaSha3_224(p),
        MechanismType::HASH_ML_DSA_SHA3_256 => Mechanism::HashMlDsaSha3_256(p),
        MechanismType::HASH_ML_DSA_SHA3_384 => Mechanism::HashMlDsaSha3_384(p),
        MechanismType::HASH_ML_DSA_SHA3_512 => Mechanism::HashMlDsaSha3_512(p),
        MechanismType::HASH_ML_DSA_SHAKE128 => Mechanism::HashMlDsaShake128(p),
        _ => Mechanism::HashMlDsaShake256(p),
    }
}

/// `CKM_HASH_ML_DSA` over a caller's PH of `hash` (a `CKM_SHA*`), through
/// the raw function list: the `cryptoki` crate 0.12 cannot name the SHA-3
/// digests in `CK_HASH_SIGN_ADDITIONAL_CONTEXT`.
struct Prehashed {
    ctx: Vec<u8>,
    param: CK_HASH_SIGN_ADDITIONAL_CONTEXT,
}

impl Prehashed {
    fn new(hedge: CK_ULONG, ctx: &[u8], hash: CK_MECHANISM_TYPE) -> Box<Prehashed> {
        let mut p = Box::new(Prehashed {
            ctx: ctx.to_vec(),
            param: CK_HASH_SIGN_ADDITIONAL_CONTEXT {
                hedgeVariant: hedge,
                pContext: std::ptr::null_mut(),
                ulContextLen: ctx.len() as CK_ULONG,
                hash,
            },
        });
        if !ctx.is_empty() {
            p.param.pContext = p.ctx.as_mut_ptr();
        }
        p
    }

    fn mech(&mut self) -> CK_MECHANISM {
        CK_MECHANISM {
            mechanism: CKM_HASH_ML_DSA,
            pParameter: &mut self.param as *mut _ as *mut _,
            ulParameterLen: std::mem::size_of::<CK_HASH_SIGN_ADDITIONAL_CONTEXT>() as CK_ULONG,
        }
    }

    fn sign_init(&mut self, t: &Token, key: ObjectHandle) -> CK_RV {
        let mut m = self.mech();
        unsafe { p11!(t.raw, C_SignInit, t.h(), &mut m, key.handle()) }
    }

    fn verify_init(&mut self, t: &Token, key: ObjectHandle) -> CK_RV {
        let mut m = self.mech();
        unsafe { p11!(t.raw, C_VerifyInit, t.h(), &mut m, key.handle()) }
    }

    /// C_SignInit and C_Sign (a length query, then the signature).
    fn sign(&mut self, t: &Token, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>, CK_RV> {
        match self.sign_init(t, key) {
            CKR_OK => {}
            rv => return Err(rv),
        }
        let mut d = data.to_vec();
        let mut len: CK_ULONG = 0;
        let rv = unsafe {
            p11!(
                t.raw,
                C_Sign,
                t.h(),
                d.as_mut_ptr(),
                d.len() as CK_ULONG,
                std::ptr::null_mut(),
                &mut len
            )
        };
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut out = vec![0u8; len as usize];
        let rv = unsafe {
            p11!(
                t.raw,
                C_Sign,
                t.h(),
                d.as_mut_ptr(),
                d.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len
            )
        };
        if rv != CKR_OK {
            return Err(rv);
        }
        out.truncate(len as usize);
        Ok(out)
    }

    /// C_VerifyInit and C_Verify.
    fn verify(&mut self, t: &Token, key: ObjectHandle, data: &[u8], sig: &[u8]) -> CK_RV {
        match self.verify_init(t, key) {
            CKR_OK => {}
            rv => return rv,
        }
        let (mut d, mut s) = (data.to_vec(), sig.to_vec());
        unsafe {
            p11!(
                t.raw,
                C_Verify,
                t.h(),
                d.as_mut_ptr(),
                d.len() as CK_ULONG,
                s.as_mut_ptr(),
                s.len() as CK_ULONG
            )
        }
    }
}

fn signed(r: Result<Vec<u8>, CK_RV>, what: &str) -> Vec<u8> {
    r.unwrap_or_else(|rv| panic!("{what}: {}", rv_name(rv)))
}

fn preferred(ctx: Option<&[u8]>) -> SignAdditionalContext<'_> {
    SignAdditionalContext::new(HedgeType::Preferred, ctx)
}

fn ml_dsa_pair(t: &Token, set: MlDsaParameterSetType) -> (Pair, Vec<u8>) {
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::ParameterSet(set.into()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
    ];
    let (public, private) = ok(
        t.session
            .generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private),
        "C_GenerateKeyPair(CKM_ML_DSA_KEY_PAIR_GEN)",
    );
    let value = t.attr(public, CKA_VALUE, "CKA_VALUE");
    (Pair { public, private }, value)
}

const SETS: [(MlDsaParameterSetType, &str); 3] = [
    (MlDsaParameterSetType::ML_DSA_44, "44"),
    (MlDsaParameterSetType::ML_DSA_65, "65"),
    (MlDsaParameterSetType::ML_DSA_87, "87"),
];

p11_test! {
    fn every_hashing_mechanism_signs_what_python_verifies_over_its_own_mu() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        let mut cases = Vec::new();
        let mut want = Vec::new();
        for (set, name) in SETS {
            let (k, public) = ml_dsa_pair(&t, set);
            for (i, (ty, hash)) in HASHING.iter().enumerate() {
                // Every other one with a context: a signature binds it.
                let ctx: &[u8] = if i % 2 == 0 { b"" } else { b"hash-ml-dsa context" };
                let mech = hashing(*ty, preferred((!ctx.is_empty()).then_some(ctx)));
                let sig = ok(t.session.sign(&mech, k.private, MSG), &format!("C_Sign({ty}) ML-DSA-{name}"));
                ok(t.session.verify(&mech, k.public, MSG, &sig), &format!("C_Verify({ty}) ML-DSA-{name}"));
                let case = |msg: &[u8], sig: &[u8], mode| Case { set: name, public: public.clone(), mode, hash, msg: msg.to_vec(), ctx: ctx.to_vec(), sig: sig.to_vec() };
                cases.push(case(MSG, &sig, "hash"));
                want.push("ok");
                cases.push(case(b"another message", &sig, "hash"));
                want.push("invalid");
                // Not a pure ML-DSA signature of the message: FIPS 204's domain separation.
                cases.push(case(MSG, &sig, "pure"));
                want.push("invalid");
            }
        }
        assert_eq!(python_check(&cases), want, "Python's verdicts, in order");
    }
}

p11_test! {
    fn ckm_hash_ml_dsa_signs_the_callers_hash_as_the_hashing_mechanism_would() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        let (k, public) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65);
        let digest = sha2::Sha256::digest(MSG).to_vec();
        let ctx = b"prehashed";
        // The cryptoki crate's own CK_HASH_SIGN_ADDITIONAL_CONTEXT for SHA-256.
        let mech = Mechanism::HashMlDsa(HashSignAdditionalContext::new(HedgeType::Preferred, Some(ctx), MechanismType::SHA256));
        let sig = ok(t.session.sign(&mech, k.private, &digest), "C_Sign(CKM_HASH_ML_DSA, SHA-256)");
        // The token's own hashing mechanism verifies it over the message …
        let hashing256 = Mechanism::HashMlDsaSha256(preferred(Some(ctx)));
        ok(t.session.verify(&hashing256, k.public, MSG, &sig), "C_Verify(CKM_HASH_ML_DSA_SHA256) of CKM_HASH_ML_DSA's signature");
        ok(t.session.verify(&mech, k.public, &digest, &sig), "C_Verify(CKM_HASH_ML_DSA)");
        // … and the other way round.
        let sig2 = ok(t.session.sign(&hashing256, k.private, MSG), "C_Sign(CKM_HASH_ML_DSA_SHA256)");
        ok(t.session.verify(&mech, k.public, &digest, &sig2), "C_Verify(CKM_HASH_ML_DSA) of the hashing mechanism's signature");
        // Every hash the parameter may name; Python hashes nothing (the PH is given).
        let mut cases = vec![Case { set: "65", public: public.clone(), mode: "hash", hash: "sha256", msg: MSG.to_vec(), ctx: ctx.to_vec(), sig: sig.clone() }];
        let hashes = [(CKM_SHA224, "sha224", 28), (CKM_SHA384, "sha384", 48), (CKM_SHA512, "sha512", 64), (CKM_SHA3_224, "sha3_224", 28), (CKM_SHA3_256, "sha3_256", 32), (CKM_SHA3_384, "sha3_384", 48), (CKM_SHA3_512, "sha3_512", 64)];
        for (h, name, len) in hashes {
            let ph: Vec<u8> = (0..len as u8).collect();
            let sig = signed(Prehashed::new(CKH_HEDGE_REQUIRED, b"", h).sign(&t, k.private, &ph), &format!("C_Sign(CKM_HASH_ML_DSA, {name})"));
            cases.push(Case { set: "65", public: public.clone(), mode: "prehashed", hash: name, msg: ph, ctx: Vec::new(), sig });
        }
        assert_eq!(python_check(&cases), vec!["ok"; cases.len()], "Python's verdicts");
    }
}

p11_test! {
    fn a_hash_of_the_wrong_length_is_data_len_range() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let (k, _) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_44);
        let mut m = Prehashed::new(CKH_HEDGE_PREFERRED, b"", CKM_SHA3_384);
        assert_eq!(m.sign(&t, k.private, &[7; 32]).map(|_| ()), Err(CKR_DATA_LEN_RANGE), "C_Sign with a 32-byte 'SHA3-384'");
        assert_eq!(m.sign(&t, k.private, &[7; 49]).map(|_| ()), Err(CKR_DATA_LEN_RANGE), "C_Sign with 49 bytes");
        assert_eq!(m.sign(&t, k.private, &[]).map(|_| ()), Err(CKR_DATA_LEN_RANGE), "C_Sign with nothing");
        let sig = signed(m.sign(&t, k.private, &[7; 48]), "C_Sign with 48 bytes");
        check(m.verify(&t, k.public, &[7; 47], &sig), CKR_DATA_LEN_RANGE, "C_Verify with 47 bytes");
        check(m.verify(&t, k.public, &[7; 48], &sig), CKR_OK, "C_Verify with 48 bytes");
        // The error ended the operation: a new one starts.
        check(m.sign_init(&t, k.private), CKR_OK, "C_SignInit after the refusal");
        assert_rv(t.session.sign_final(), CKR_DATA_LEN_RANGE, "C_SignFinal with no input");
        assert_rv(t.session.sign_update(&[1]), CKR_OPERATION_NOT_INITIALIZED, "the refusal ended it");
    }
}

p11_test! {
    fn malformed_parameters_are_mechanism_param_invalid() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let (k, _) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65);
        let long = [1u8; 256];
        for (hedge, ctx, hash, what) in [
            (CKH_HEDGE_PREFERRED, &b""[..], CKM_SHA_1, "SHA-1 is no pre-hash here"),
            (CKH_HEDGE_PREFERRED, b"", CKM_MD5, "MD5"),
            (CKH_HEDGE_PREFERRED, b"", CKM_SHA256_HMAC, "not a digest"),
            (CKH_HEDGE_PREFERRED, b"", CKM_SHA512_256, "SHA-512/256: no combined mechanism, not taken"),
            (CKH_HEDGE_PREFERRED, &long, CKM_SHA256, "a 256-byte context"),
            (7, b"", CKM_SHA256, "hedgeVariant 7"),
        ] {
            let mut m = Prehashed::new(hedge, ctx, hash);
            check(m.sign_init(&t, k.private), CKR_MECHANISM_PARAM_INVALID, what);
            check(m.verify_init(&t, k.public), CKR_MECHANISM_PARAM_INVALID, what);
        }
        let mech = Mechanism::HashMlDsaSha256(preferred(Some(&long)));
        assert_rv(t.session.sign_init(&mech, k.private), CKR_MECHANISM_PARAM_INVALID, "a 256-byte context (SHA-256)");
        // CKM_HASH_ML_DSA's parameter is required, and is the hash variant.
        let raw = |param: *mut std::ffi::c_void, len: CK_ULONG| CK_MECHANISM { mechanism: CKM_HASH_ML_DSA, pParameter: param, ulParameterLen: len };
        let mut none = raw(std::ptr::null_mut(), 0);
        check(unsafe { p11!(t.raw, C_SignInit, t.h(), &mut none, k.private.handle()) }, CKR_MECHANISM_PARAM_INVALID, "CKM_HASH_ML_DSA without parameter");
        let mut p = CK_HASH_SIGN_ADDITIONAL_CONTEXT { hedgeVariant: CKH_HEDGE_PREFERRED, pContext: std::ptr::null_mut(), ulContextLen: 0, hash: CKM_SHA256 };
        let mut short = raw(&mut p as *mut _ as *mut _, std::mem::size_of::<CK_SIGN_ADDITIONAL_CONTEXT>() as CK_ULONG);
        check(unsafe { p11!(t.raw, C_SignInit, t.h(), &mut short, k.private.handle()) }, CKR_MECHANISM_PARAM_INVALID, "a CK_SIGN_ADDITIONAL_CONTEXT for CKM_HASH_ML_DSA");
        // No operation was started by any refusal.
        assert_rv(t.session.sign_update(&[1]), CKR_OPERATION_NOT_INITIALIZED, "nothing active");
    }
}

p11_test! {
    fn deterministic_required_gives_one_signature_and_python_verifies_it() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        let (k, public) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_87);
        let det = Mechanism::HashMlDsaSha3_512(SignAdditionalContext::new(HedgeType::DeterministicRequired, Some(b"d")));
        let a = ok(t.session.sign(&det, k.private, MSG), "C_Sign deterministic");
        let b = ok(t.session.sign(&det, k.private, MSG), "C_Sign deterministic again");
        assert_eq!(a, b, "CKH_DETERMINISTIC_REQUIRED: one key, message and context, one signature");
        let hedged = Mechanism::HashMlDsaSha3_512(SignAdditionalContext::new(HedgeType::Required, Some(b"d")));
        let c = ok(t.session.sign(&hedged, k.private, MSG), "C_Sign hedged");
        let d = ok(t.session.sign(&hedged, k.private, MSG), "C_Sign hedged again");
        assert_ne!(c, d, "hedged signatures differ");
        let mut pre = Prehashed::new(CKH_DETERMINISTIC_REQUIRED, b"d", CKM_SHA3_512);
        let e = signed(pre.sign(&t, k.private, &[9; 64]), "C_Sign(CKM_HASH_ML_DSA) deterministic");
        assert_eq!(e, signed(pre.sign(&t, k.private, &[9; 64]), "again"), "CKM_HASH_ML_DSA deterministic");
        let case = |mode, msg: &[u8], sig: &[u8]| Case { set: "87", public: public.clone(), mode, hash: "sha3_512", msg: msg.to_vec(), ctx: b"d".to_vec(), sig: sig.to_vec() };
        let cases = [case("hash", MSG, &a), case("hash", MSG, &c), case("prehashed", &[9; 64], &e)];
        assert_eq!(python_check(&cases), vec!["ok"; 3], "Python's verdicts");
    }
}

p11_test! {
    fn multi_part_hashing_is_the_single_part_signature() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let (k, _) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65);
        let det = Mechanism::HashMlDsaShake256(SignAdditionalContext::new(HedgeType::DeterministicRequired, None));
        let whole = ok(t.session.sign(&det, k.private, MSG), "C_Sign");
        ok(t.session.sign_init(&det, k.private), "C_SignInit");
        for part in MSG.chunks(7) {
            ok(t.session.sign_update(part), "C_SignUpdate");
        }
        assert_eq!(ok(t.session.sign_final(), "C_SignFinal"), whole, "the parts hash to the whole");
        ok(t.session.verify_init(&det, k.public), "C_VerifyInit");
        for part in MSG.chunks(11) {
            ok(t.session.verify_update(part), "C_VerifyUpdate");
        }
        ok(t.session.verify_final(&whole), "C_VerifyFinal");
    }
}

p11_test! {
    fn tampered_signature_other_context_and_pure_mechanism_are_refused() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let (k, _) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_44);
        let mech = Mechanism::HashMlDsaSha512(preferred(Some(b"ctx")));
        let sig = ok(t.session.sign(&mech, k.private, MSG), "C_Sign");
        let mut bad = sig.clone();
        bad[1000] ^= 0x40;
        assert_rv(t.session.verify(&mech, k.public, MSG, &bad), CKR_SIGNATURE_INVALID, "a flipped bit");
        assert_rv(t.session.verify(&mech, k.public, b"other", &sig), CKR_SIGNATURE_INVALID, "another message");
        assert_rv(t.session.verify(&mech, k.public, MSG, &sig[..sig.len() - 1]), CKR_SIGNATURE_LEN_RANGE, "one byte short");
        let other_ctx = Mechanism::HashMlDsaSha512(preferred(None));
        assert_rv(t.session.verify(&other_ctx, k.public, MSG, &sig), CKR_SIGNATURE_INVALID, "without the context");
        let other_hash = Mechanism::HashMlDsaSha3_512(preferred(Some(b"ctx")));
        assert_rv(t.session.verify(&other_hash, k.public, MSG, &sig), CKR_SIGNATURE_INVALID, "another hash (its OID is signed)");
        let pure = Mechanism::MlDsa(preferred(Some(b"ctx")));
        assert_rv(t.session.verify(&pure, k.public, MSG, &sig), CKR_SIGNATURE_INVALID, "as pure ML-DSA");
        // Another key type is the wrong type of key.
        let ec = t.keypair(Kp::Ec(OID_P256), "ec");
        assert_rv(t.session.sign_init(&mech, ec.private), CKR_KEY_TYPE_INCONSISTENT, "an EC key");
    }
}

p11_test! {
    fn mechanism_info_and_allowed_mechanisms_list_hash_ml_dsa() {
        softmhsm_only!("HashML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        // The raw list: the cryptoki crate 0.12 drops CKM_HASH_ML_DSA_SHAKE256 from its own.
        let slot = t.slot.id() as CK_SLOT_ID;
        let mut n: CK_ULONG = 0;
        check(unsafe { p11!(t.raw, C_GetMechanismList, slot, std::ptr::null_mut(), &mut n) }, CKR_OK, "C_GetMechanismList count");
        let mut list = vec![0 as CK_MECHANISM_TYPE; n as usize];
        check(unsafe { p11!(t.raw, C_GetMechanismList, slot, list.as_mut_ptr(), &mut n) }, CKR_OK, "C_GetMechanismList");
        let all = std::iter::once(MechanismType::HASH_ML_DSA).chain(HASHING.iter().map(|(m, _)| *m));
        let (k, _) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65);
        let allowed = t.attr(k.private, CKA_ALLOWED_MECHANISMS, "CKA_ALLOWED_MECHANISMS");
        let allowed: Vec<CK_ULONG> = allowed.chunks(8).map(|c| CK_ULONG::from_ne_bytes(c.try_into().unwrap())).collect();
        for m in all {
            let ty = CK_MECHANISM_TYPE::from(m);
            assert!(list.contains(&ty), "{m} listed");
            let info = ok(t.pkcs11.get_mechanism_info(t.slot, m), "C_GetMechanismInfo");
            assert!(info.sign() && info.verify() && !info.encrypt() && !info.digest(), "{m}: {info:?}");
            assert_eq!((info.min_key_size(), info.max_key_size()), (CKP_ML_DSA_44 as usize, CKP_ML_DSA_87 as usize), "{m}: as CKM_ML_DSA's");
            assert!(allowed.contains(&ty), "{m} in the key's CKA_ALLOWED_MECHANISMS");
        }
    }
}

p11_test! {
    fn a_key_allowed_only_pure_ml_dsa_refuses_hash_ml_dsa() {
        softmhsm_only!("CKA_ALLOWED_MECHANISMS narrows what a key does");
        let t = Token::fresh();
        let public = [Attribute::Token(true), Attribute::Verify(true), Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_65.into())];
        let private = [Attribute::Token(true), Attribute::Sign(true), Attribute::AllowedMechanisms(vec![MechanismType::ML_DSA])];
        let (_, private): (ObjectHandle, ObjectHandle) = ok(t.session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private), "C_GenerateKeyPair");
        assert_rv(t.session.sign_init(&Mechanism::HashMlDsaSha256(preferred(None)), private), CKR_MECHANISM_INVALID, "HashML-DSA not allowed");
        ok(t.session.sign(&Mechanism::MlDsa(preferred(None)), private, MSG), "pure ML-DSA allowed");
    }
}

p11_test! {
    fn verify_signature_takes_hash_ml_dsa_in_parts() {
        softmhsm_only!("C_VerifySignature is in softmhsm's 3.2 interface");
        let t = Token::fresh();
        let (k, _) = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65);
        let mech = Mechanism::HashMlDsaSha3_256(preferred(Some(b"vs")));
        let sig = ok(t.session.sign(&mech, k.private, MSG), "C_Sign");
        let f = t.raw.f32();
        let init = |sig: &[u8]| {
            let mut m = CK_MECHANISM::from(&mech);
            // SAFETY: a live session; the mechanism and its parameter outlive
            // the call; `sig` holds `sig.len()` bytes.
            unsafe { f.C_VerifySignatureInit.unwrap()(t.h(), &mut m, k.public.handle(), sig.as_ptr() as *mut _, sig.len() as CK_ULONG) }
        };
        // SAFETY (both): a live session; `d` holds `d.len()` bytes.
        let update = |d: &[u8]| unsafe { f.C_VerifySignatureUpdate.unwrap()(t.h(), d.as_ptr() as *mut _, d.len() as CK_ULONG) };
        let single = |d: &[u8]| unsafe { f.C_VerifySignature.unwrap()(t.h(), d.as_ptr() as *mut _, d.len() as CK_ULONG) };
        // SAFETY: a live session.
        let finish = || unsafe { f.C_VerifySignatureFinal.unwrap()(t.h()) };
        check(init(&sig), CKR_OK, "C_VerifySignatureInit");
        for part in MSG.chunks(9) {
            check(update(part), CKR_OK, "C_VerifySignatureUpdate");
        }
        check(finish(), CKR_OK, "C_VerifySignatureFinal");
        check(init(&sig), CKR_OK, "C_VerifySignatureInit");
        check(single(b"another message"), CKR_SIGNATURE_INVALID, "C_VerifySignature of another message");
        check(init(&sig[1..]), CKR_SIGNATURE_LEN_RANGE, "a short signature at *Init");
    }
}

// ------------------------------------------- the Managed HSM's external μ (CLI)

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Python's μ of `msg` under `ctx` for ML-DSA-65 key `public`, computed twice
/// (cryptography's `MLDSAMuHasher` and FIPS 204's formula with hashlib),
/// which must agree.
fn python_mu(public: &[u8], ctx: &[u8], msg: &[u8]) -> Vec<u8> {
    let script = "import sys, hashlib\n\
        from cryptography.hazmat.primitives.asymmetric import mldsa\n\
        pk, ctx, msg = (bytes.fromhex(a) for a in sys.argv[1:4])\n\
        h = mldsa.MLDSAMuHasher(mldsa.MLDSA65PublicKey.from_public_bytes(pk), ctx or None)\n\
        h.update(msg)\n\
        mu = h.finalize()\n\
        tr = hashlib.shake_256(pk).digest(64)\n\
        assert mu == hashlib.shake_256(tr + bytes([0, len(ctx)]) + ctx + msg).digest(64)\n\
        print(mu.hex())\n";
    let out = run_cmd(
        &python(),
        &[
            "-c".into(),
            script.into(),
            hex(public).into(),
            hex(ctx).into(),
            hex(msg).into(),
        ],
    );
    unhex(out.trim())
}

/// Python's verdict on a pure ML-DSA-65 signature of `msg` under `ctx`.
fn python_verify_pure(public: &[u8], ctx: &[u8], msg: &[u8], sig: &[u8]) -> String {
    let case = Case {
        set: "65",
        public: public.to_vec(),
        mode: "pure",
        hash: "",
        msg: msg.to_vec(),
        ctx: ctx.to_vec(),
        sig: sig.to_vec(),
    };
    python_check(&[case]).join("")
}

p11_test! {
    fn cli_signs_an_external_mu_that_python_verifies_over_the_message() {
        softmhsm_only!("the CLI works on softmhsm's store");
        if !python_has_mldsa() {
            return;
        }
        use common::cli::*;
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        json(&["key", "create", "--name", "pq", "--kty", "AKP", "--alg", "ML-DSA-65"]);
        let shown = json(&["key", "show", "--name", "pq"]);
        let public = b64url_decode(&shown["key"]["pub"]);
        let ctx = b"external-mu context";
        let mu = python_mu(&public, ctx, MSG);
        assert_eq!(mu.len(), 64);

        // The signature over μ is the signature over the message: Python's plain verify.
        let sig = json(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu)]);
        let sig_bytes = b64url_decode(&sig["value"]);
        assert_eq!(sig_bytes.len(), 3309);
        assert_eq!(python_verify_pure(&public, ctx, MSG, &sig_bytes), "ok", "Python verifies the message");
        assert_eq!(python_verify_pure(&public, b"", MSG, &sig_bytes), "invalid", "Python, without the context μ carries");
        let s = sig["value"].as_str().unwrap();
        let verify = |args: &[&str]| json(&[&["key", "verify", "--name", "pq", "--algorithm", "ML-DSA-65", "--signature", s][..], args].concat())["value"].clone();
        assert_eq!(verify(&["--mu", &b64url(&mu)]), true, "verify --mu");
        assert_eq!(verify(&["--value", &b64url(MSG), "--context", &b64url(ctx)]), true, "verify --value of the μ signature");
        let mut other = mu.clone();
        other[63] ^= 1;
        assert_eq!(verify(&["--mu", &b64url(&other)]), false, "another μ");

        // μ is exactly 64 bytes, alone, for ML-DSA, of the key's set.
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu[..63])], 1, "the mu is 63 bytes; ML-DSA's mu is 64");
        refused(&["key", "verify", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&[0; 65]), "--signature", s], 1, "the mu is 65 bytes");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu), "--context", "AA"], 2, "with --mu takes no --value, --digest or --context");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu), "--value", "AA"], 2, "with --mu takes no");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ES256", "--mu", &b64url(&mu)], 2, "ES256 takes --digest, not --mu");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-44", "--mu", &b64url(&mu)], 1, "ML-DSA-44 does not fit this key");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", "not base64!"], 2, "--mu is not base64url");

        // The rules of every sign: key_ops, enabled; an expired key still verifies.
        json(&["key", "update", "--name", "pq", "--ops", "verify"]);
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu)], 1, "the key may not sign now");
        json(&["key", "update", "--name", "pq", "--ops", "sign", "verify", "--enabled", "false"]);
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu)], 1, "the key may not sign now");
        json(&["key", "update", "--name", "pq", "--enabled", "true", "--expires", "2001-01-01T00:00:00Z"]);
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu)], 1, "the key may not sign now");
        assert_eq!(verify(&["--mu", &b64url(&mu)]), true, "an expired key still verifies");

        // The audit log: KeySign with the key's algorithm.
        let audit = cli(&["audit"]).stdout;
        assert!(audit.lines().any(|l| l.contains("\"operationName\":\"KeySign\"") && l.contains("\"algorithm\":\"ML-DSA-65\"") && l.contains("Success")), "{audit}");
    }
}

p11_test! {
    fn cli_verifies_what_python_signed_over_mu() {
        softmhsm_only!("the CLI works on softmhsm's store");
        if !python_has_mldsa() {
            return;
        }
        use common::cli::*;
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("mldsa.pem");
        let ctx = b"python's context";
        // Python's key (PKCS#8 seed form, imported below), its μ of MSG and sign_mu.
        let script = "import sys\nfrom cryptography.hazmat.primitives.asymmetric import mldsa\n\
            from cryptography.hazmat.primitives import serialization as s\n\
            k = mldsa.MLDSA65PrivateKey.from_seed_bytes(bytes(range(7, 39)))\n\
            open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
            h = mldsa.MLDSAMuHasher(k.public_key(), bytes.fromhex(sys.argv[2]))\n\
            h.update(bytes.fromhex(sys.argv[3]))\n\
            mu = h.finalize()\n\
            print(mu.hex(), k.sign_mu(mu).hex())\n";
        let out = run_cmd(&python(), &["-c".into(), script.into(), pem.clone().into_os_string(), hex(ctx).into(), hex(MSG).into()]);
        let mut words = out.split_whitespace();
        let (mu, sig) = (unhex(words.next().unwrap()), unhex(words.next().unwrap()));
        json(&["key", "import", "--name", "py", "--file", pem.to_str().unwrap()]);
        let verify = |sig: &[u8], args: &[&str]| json(&[&["key", "verify", "--name", "py", "--algorithm", "ML-DSA-65", "--signature", &b64url(sig)][..], args].concat())["value"].clone();
        assert_eq!(verify(&sig, &["--mu", &b64url(&mu)]), true, "Python's sign_mu, verified over μ");
        assert_eq!(verify(&sig, &["--value", &b64url(MSG), "--context", &b64url(ctx)]), true, "and over the message");
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert_eq!(verify(&bad, &["--mu", &b64url(&mu)]), false, "a tampered signature");
        assert_eq!(verify(&sig[1..], &["--mu", &b64url(&mu)]), false, "a short signature");
        // And the imported key signs a μ Python verifies over the message.
        let signed = json(&["key", "sign", "--name", "py", "--algorithm", "ML-DSA-65", "--mu", &b64url(&mu)]);
        let public = b64url_decode(&json(&["key", "show", "--name", "py"])["key"]["pub"]);
        assert_eq!(python_verify_pure(&public, ctx, MSG, &b64url_decode(&signed["value"])), "ok", "Python verifies the imported key's μ signature");
    }
}
