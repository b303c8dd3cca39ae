//! `C_VerifySignatureInit` / `C_VerifySignature` / `…Update` / `…Final`
//! (PKCS#11 3.2): a verification whose signature is given at `*Init`, for
//! every signature family the token has, through the module's 3.2 function
//! list (the `cryptoki` crate 0.12 takes the 3.0 default table).

mod common;

use common::*;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::Attribute;
use cryptoki_sys::*;
use std::ptr;

const MSG: &[u8] = b"the signature came first, the data after";

/// `C_VerifySignatureInit` with `mech` on `key` and `sig`.
fn init(t: &Token, mech: &Mechanism, key: CK_OBJECT_HANDLE, sig: &[u8]) -> CK_RV {
    let mut m = CK_MECHANISM::from(mech);
    // SAFETY: a live session; the mechanism and its parameter outlive the
    // call; `sig` holds `sig.len()` bytes.
    unsafe {
        t.raw.f32().C_VerifySignatureInit.unwrap()(
            t.h(),
            &mut m,
            key,
            sig.as_ptr() as *mut _,
            sig.len() as CK_ULONG,
        )
    }
}

/// `C_VerifySignature` over `data`.
fn verify(t: &Token, data: &[u8]) -> CK_RV {
    // SAFETY: a live session; `data` holds `data.len()` bytes.
    unsafe {
        t.raw.f32().C_VerifySignature.unwrap()(
            t.h(),
            data.as_ptr() as *mut _,
            data.len() as CK_ULONG,
        )
    }
}

/// `C_VerifySignatureUpdate` with `part`.
fn update(t: &Token, part: &[u8]) -> CK_RV {
    // SAFETY: a live session; `part` holds `part.len()` bytes.
    unsafe {
        t.raw.f32().C_VerifySignatureUpdate.unwrap()(
            t.h(),
            part.as_ptr() as *mut _,
            part.len() as CK_ULONG,
        )
    }
}

/// `C_VerifySignatureFinal`.
fn finish(t: &Token) -> CK_RV {
    // SAFETY: a live session.
    unsafe { t.raw.f32().C_VerifySignatureFinal.unwrap()(t.h()) }
}

fn pss() -> Mechanism<'static> {
    Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    })
}

/// A signature family: its name, mechanism, a key pair and the data it signs.
type Family = (&'static str, Mechanism<'static>, Pair, Vec<u8>);

/// Every signature family of the build.
fn families(t: &Token) -> Vec<Family> {
    let rsa = t.keypair(Kp::Rsa(2048), "rsa");
    let ec = t.keypair(Kp::Ec(OID_P256), "ec");
    let p384 = t.keypair(Kp::Ec(OID_P384), "p384");
    let mut v = vec![
        (
            "CKM_SHA256_RSA_PKCS",
            Mechanism::Sha256RsaPkcs,
            rsa,
            MSG.to_vec(),
        ),
        ("CKM_SHA256_RSA_PKCS_PSS", pss(), rsa, MSG.to_vec()),
        ("CKM_ECDSA_SHA256", Mechanism::EcdsaSha256, ec, MSG.to_vec()),
        (
            "CKM_ECDSA (P-384 digest)",
            Mechanism::Ecdsa,
            p384,
            vec![0x5a; 48],
        ),
    ];
    v.extend(ml_dsa(t));
    v
}

/// ML-DSA-65 with a context (the default build only).
#[cfg(feature = "aws-lc")]
fn ml_dsa(t: &Token) -> Option<Family> {
    use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
    use cryptoki::object::MlDsaParameterSetType;
    let (public, private) = ok(
        t.session.generate_key_pair(
            &Mechanism::MlDsaKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::Verify(true),
                Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_65.into()),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        ),
        "C_GenerateKeyPair(ML-DSA-65)",
    );
    let ctx: &'static [u8] = b"with a context";
    let mech = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Preferred, Some(ctx)));
    Some((
        "CKM_ML_DSA (context)",
        mech,
        Pair { public, private },
        MSG.to_vec(),
    ))
}

/// The pure-Rust build has no ML-DSA.
#[cfg(not(feature = "aws-lc"))]
fn ml_dsa(_: &Token) -> Option<Family> {
    None
}

p11_test! {
    fn every_signature_family_verifies_single_and_multi_part() {
        softmhsm_only!("C_VerifySignature* is PKCS#11 3.2");
        let t = Token::fresh();
        for (name, mech, k, data) in families(&t) {
            let sig = ok(t.session.sign(&mech, k.private, &data), &format!("C_Sign({name})"));
            check(init(&t, &mech, k.public.handle(), &sig), CKR_OK, &format!("C_VerifySignatureInit({name})"));
            check(verify(&t, &data), CKR_OK, &format!("C_VerifySignature({name})"));

            check(init(&t, &mech, k.public.handle(), &sig), CKR_OK, &format!("C_VerifySignatureInit({name}), parts"));
            let (a, b) = data.split_at(data.len() / 3);
            check(update(&t, a), CKR_OK, &format!("C_VerifySignatureUpdate({name})"));
            check(update(&t, b), CKR_OK, &format!("C_VerifySignatureUpdate({name})"));
            check(finish(&t), CKR_OK, &format!("C_VerifySignatureFinal({name})"));

            let mut other = data.clone();
            other[0] ^= 1;
            check(init(&t, &mech, k.public.handle(), &sig), CKR_OK, &format!("C_VerifySignatureInit({name}), other data"));
            check(verify(&t, &other), CKR_SIGNATURE_INVALID, &format!("C_VerifySignature({name}) of other data"));
            let mut bad = sig.clone();
            bad[sig.len() / 2] ^= 0x10;
            check(init(&t, &mech, k.public.handle(), &bad), CKR_OK, &format!("C_VerifySignatureInit({name}), tampered"));
            check(update(&t, &data), CKR_OK, &format!("C_VerifySignatureUpdate({name}), tampered"));
            check(finish(&t), CKR_SIGNATURE_INVALID, &format!("C_VerifySignatureFinal({name}) of a tampered signature"));
            // Every outcome ended the operation.
            check(finish(&t), CKR_OPERATION_NOT_INITIALIZED, &format!("{name}: ended"));
        }
    }
}

p11_test! {
    fn signature_of_the_wrong_length_starts_no_operation() {
        softmhsm_only!("C_VerifySignature* is PKCS#11 3.2");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &[1; 63]), CKR_SIGNATURE_LEN_RANGE, "a 63-byte P-256 signature");
        check(verify(&t, MSG), CKR_OPERATION_NOT_INITIALIZED, "no operation after CKR_SIGNATURE_LEN_RANGE");
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &[]), CKR_SIGNATURE_LEN_RANGE, "an empty signature");
    }
}

p11_test! {
    fn the_operation_lives_and_ends_as_the_spec_says() {
        softmhsm_only!("C_VerifySignature* is PKCS#11 3.2");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let sig = ok(t.session.sign(&Mechanism::EcdsaSha256, k.private, MSG), "C_Sign");
        check(verify(&t, MSG), CKR_OPERATION_NOT_INITIALIZED, "C_VerifySignature before any init");
        check(update(&t, MSG), CKR_OPERATION_NOT_INITIALIZED, "C_VerifySignatureUpdate before any init");
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &sig), CKR_OK, "C_VerifySignatureInit");
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &sig), CKR_OPERATION_ACTIVE, "a second C_VerifySignatureInit");
        check(verify(&t, MSG), CKR_OK, "the first operation still runs");
        check(verify(&t, MSG), CKR_OPERATION_NOT_INITIALIZED, "C_VerifySignature ended it");

        // A single-part call after an update is refused, and that ends the operation.
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &sig), CKR_OK, "C_VerifySignatureInit");
        check(update(&t, MSG), CKR_OK, "C_VerifySignatureUpdate");
        check(verify(&t, MSG), CKR_OPERATION_ACTIVE, "C_VerifySignature after an update");
        check(finish(&t), CKR_OPERATION_NOT_INITIALIZED, "the refusal ended it");

        // A NULL mechanism ends the active operation.
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &sig), CKR_OK, "C_VerifySignatureInit");
        // SAFETY: a live session; a NULL mechanism is the documented cancel.
        let rv = unsafe { t.raw.f32().C_VerifySignatureInit.unwrap()(t.h(), ptr::null_mut(), 0, ptr::null_mut(), 0) };
        check(rv, CKR_OK, "C_VerifySignatureInit(NULL mechanism)");
        check(verify(&t, MSG), CKR_OPERATION_NOT_INITIALIZED, "cancelled");

        // It is not the C_Verify operation: the two run side by side.
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &sig), CKR_OK, "C_VerifySignatureInit");
        ok(t.session.verify(&Mechanism::EcdsaSha256, k.public, MSG, &sig), "C_VerifyInit + C_Verify meanwhile");
        check(verify(&t, MSG), CKR_OK, "C_VerifySignature after C_Verify");
    }
}

p11_test! {
    fn init_refuses_what_c_verify_init_refuses() {
        softmhsm_only!("C_VerifySignature* is PKCS#11 3.2");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let sig = [1u8; 64];
        check(init(&t, &Mechanism::AesCbcPad([0; 16]), k.public.handle(), &sig), CKR_MECHANISM_INVALID, "an encryption mechanism");
        check(init(&t, &Mechanism::Sha256RsaPkcs, k.public.handle(), &sig), CKR_KEY_TYPE_INCONSISTENT, "an RSA mechanism on an EC key");
        check(init(&t, &Mechanism::EcdsaSha256, 0x7777_7777, &sig), CKR_KEY_HANDLE_INVALID, "no such key");
        let (public, _) = ok(
            t.session.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[Attribute::Token(true), Attribute::Verify(false), Attribute::EcParams(OID_P256.to_vec()), Attribute::Label(b"noverify".to_vec())],
                &[Attribute::Token(true), Attribute::Sign(true), Attribute::Label(b"noverify".to_vec())],
            ),
            "C_GenerateKeyPair without verify",
        );
        check(init(&t, &Mechanism::EcdsaSha256, public.handle(), &sig), CKR_KEY_FUNCTION_NOT_PERMITTED, "a key without verify");
        let mut m = CK_MECHANISM::from(&Mechanism::EcdsaSha256);
        // SAFETY: a live session; a NULL signature with a non-zero length is the bad argument under test.
        let rv = unsafe { t.raw.f32().C_VerifySignatureInit.unwrap()(t.h(), &mut m, k.public.handle(), ptr::null_mut(), 64) };
        check(rv, CKR_ARGUMENTS_BAD, "a NULL signature of 64 bytes");
        check(verify(&t, MSG), CKR_OPERATION_NOT_INITIALIZED, "no refused init left an operation");
    }
}

p11_test! {
    fn init_is_audited_as_c_verify_init() {
        softmhsm_only!("the audit log is softmhsm's");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "audited");
        let sig = ok(t.session.sign(&Mechanism::EcdsaSha256, k.private, MSG), "C_Sign");
        check(init(&t, &Mechanism::EcdsaSha256, k.public.handle(), &sig), CKR_OK, "C_VerifySignatureInit");
        check(verify(&t, MSG), CKR_OK, "C_VerifySignature");
        check(init(&t, &Mechanism::Sha256RsaPkcs, k.public.handle(), &sig), CKR_KEY_TYPE_INCONSISTENT, "an RSA mechanism");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        let text = std::fs::read_to_string(store_dir().join("audit-softmhsm.jsonl")).expect("the audit log");
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        let verify = |result: &str| {
            lines
                .iter()
                .find(|l| l["operationName"] == "KeyVerify" && l["resultType"] == result)
                .unwrap_or_else(|| panic!("no KeyVerify {result} in {text}"))
        };
        let done = verify("Success");
        assert_eq!(done["algorithm"], "ES256", "{done}");
        assert!(done["kid"].as_str().unwrap().contains("/keys/audited/"), "{done}");
        assert_eq!(verify("Failure")["resultDescription"], "CKR_KEY_TYPE_INCONSISTENT");
    }
}
