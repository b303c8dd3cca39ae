//! Post-quantum keys through the C ABI (PKCS#11 3.2, issue 17): ML-DSA
//! key pairs of every parameter set, their signatures verified by Python
//! `cryptography` (≥ 47, OpenSSL 3.5's ML-DSA), and the Managed HSM rules on
//! them. Python is `$SOFTMHSM_PYTHON` if set (CI points it at a venv with a
//! recent `cryptography`), else `python3`. The pure-Rust build has none of
//! these mechanisms (README): the file is empty there.
#![cfg(feature = "aws-lc")]

mod common;

use common::python::*;
use common::*;
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, MlDsaParameterSetType};
use cryptoki_sys::*;
use std::env;

const MSG: &[u8] = b"softmhsm signs what the Managed HSM would sign, after quantum computers";

/// The three ML-DSA parameter sets: `CKP_*`, the Python class suffix, the
/// public key and signature lengths (FIPS 204 Table 2).
const SETS: [(MlDsaParameterSetType, &str, usize, usize); 3] = [
    (MlDsaParameterSetType::ML_DSA_44, "44", 1312, 2420),
    (MlDsaParameterSetType::ML_DSA_65, "65", 1952, 3309),
    (MlDsaParameterSetType::ML_DSA_87, "87", 2592, 4627),
];

/// Python's verdict on an ML-DSA signature: "ok" or "invalid".
fn python_verify(
    set: &str,
    public: &[u8],
    msg: &[u8],
    sig: &[u8],
    context: Option<&[u8]>,
) -> String {
    let script = "import sys\n\
        from cryptography.hazmat.primitives.asymmetric import mldsa\n\
        from cryptography.exceptions import InvalidSignature\n\
        cls = getattr(mldsa, 'MLDSA' + sys.argv[1] + 'PublicKey')\n\
        k = cls.from_public_bytes(bytes.fromhex(sys.argv[2]))\n\
        ctx = bytes.fromhex(sys.argv[5]) if len(sys.argv) > 5 else None\n\
        try:\n    k.verify(bytes.fromhex(sys.argv[4]), bytes.fromhex(sys.argv[3]), ctx); print('ok')\n\
        except InvalidSignature:\n    print('invalid')\n";
    let mut args = vec![
        "-c".to_string(),
        script.into(),
        set.into(),
        hex(public),
        hex(msg),
        hex(sig),
    ];
    if let Some(c) = context {
        args.push(hex(c));
    }
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    run_cmd(&python(), &args).trim().to_string()
}

fn ml_dsa_pair(t: &Token, set: MlDsaParameterSetType, label: &str, sign: bool) -> Pair {
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::ParameterSet(set.into()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(sign),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let (public, private) = ok(
        t.session
            .generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private),
        &format!("C_GenerateKeyPair(CKM_ML_DSA_KEY_PAIR_GEN, {set})"),
    );
    Pair { public, private }
}

/// `CKM_ML_DSA` without parameter: pure, hedged, empty context.
fn pure() -> Mechanism<'static> {
    Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Preferred, None))
}

p11_test! {
    fn ml_dsa_key_pairs_of_every_set_sign_what_python_verifies() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        for (set, name, pk_len, sig_len) in SETS {
            let k = ml_dsa_pair(&t, set, &format!("mldsa{name}"), true);
            let public = t.attr(k.public, CKA_VALUE, "CKA_VALUE of the public key");
            assert_eq!(public.len(), pk_len, "ML-DSA-{name} public key length");
            for (half, what) in [(k.public, "public"), (k.private, "private")] {
                assert_eq!(t.attr_ulong(half, CKA_PARAMETER_SET, what), *set.as_ref(), "ML-DSA-{name} {what} CKA_PARAMETER_SET");
                assert_eq!(t.attr_ulong(half, CKA_KEY_TYPE, what), CKK_ML_DSA, "ML-DSA-{name} {what} CKA_KEY_TYPE");
                assert_eq!(t.attr_ulong(half, CKA_KEY_GEN_MECHANISM, what), CKM_ML_DSA_KEY_PAIR_GEN);
            }
            let sig = ok(t.session.sign(&pure(), k.private, MSG), "C_Sign(CKM_ML_DSA)");
            assert_eq!(sig.len(), sig_len, "ML-DSA-{name} signature length");
            assert_eq!(python_verify(name, &public, MSG, &sig, None), "ok", "ML-DSA-{name} by Python cryptography");
            assert_eq!(python_verify(name, &public, b"another message", &sig, None), "invalid", "Python refuses another message");
            ok(t.session.verify(&pure(), k.public, MSG, &sig), "C_Verify(CKM_ML_DSA)");
        }
    }
}

p11_test! {
    fn ml_dsa_private_key_is_never_revealed() {
        softmhsm_only!("Managed HSM keys never leave the HSM");
        let t = Token::fresh();
        let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65, "secret", true);
        assert_eq!(t.try_attr(k.private, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE), "private CKA_VALUE");
        assert_eq!(t.try_attr(k.private, CKA_SEED), Err(CKR_ATTRIBUTE_SENSITIVE), "private CKA_SEED");
        assert!(!t.attr_bool(k.private, CKA_EXTRACTABLE, "CKA_EXTRACTABLE"));
        assert!(t.attr_bool(k.private, CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"));
        // CKA_PUBLIC_KEY_INFO: the SPKI of RFC 9881 (OID 2.16.840.1.101.3.4.3.18, no parameters).
        let spki = t.attr(k.public, CKA_PUBLIC_KEY_INFO, "CKA_PUBLIC_KEY_INFO");
        let value = t.attr(k.public, CKA_VALUE, "CKA_VALUE");
        let oid = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12];
        assert_eq!(&spki[4..6], &[0x30, 0x0b], "AlgorithmIdentifier without parameters");
        assert_eq!(&spki[6..17], &oid, "id-ml-dsa-65");
        assert!(spki.ends_with(&value), "the SPKI's BIT STRING holds CKA_VALUE");
    }
}

p11_test! {
    fn hedged_signatures_differ_and_both_verify() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_44, "hedged", true);
        let required = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Required, None));
        let a = ok(t.session.sign(&pure(), k.private, MSG), "C_Sign(hedge preferred)");
        let b = ok(t.session.sign(&required, k.private, MSG), "C_Sign(hedge required)");
        assert_ne!(a, b, "hedged ML-DSA draws fresh randomness per signature");
        ok(t.session.verify(&pure(), k.public, MSG, &a), "C_Verify(a)");
        ok(t.session.verify(&required, k.public, MSG, &b), "C_Verify(b)");
    }
}

p11_test! {
    fn tampered_or_short_signature_is_refused() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65, "tamper", true);
        let sig = ok(t.session.sign(&pure(), k.private, MSG), "C_Sign");
        let mut bad = sig.clone();
        bad[100] ^= 1;
        assert_rv(t.session.verify(&pure(), k.public, MSG, &bad), CKR_SIGNATURE_INVALID, "one flipped bit");
        assert_rv(t.session.verify(&pure(), k.public, b"other", &sig), CKR_SIGNATURE_INVALID, "another message");
        assert_rv(t.session.verify(&pure(), k.public, MSG, &sig[1..]), CKR_SIGNATURE_LEN_RANGE, "one byte short");
    }
}

p11_test! {
    fn multi_part_signature_is_the_single_part_one() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_87, "parts", true);
        ok(t.session.sign_init(&pure(), k.private), "C_SignInit");
        ok(t.session.sign_update(&MSG[..10]), "C_SignUpdate");
        ok(t.session.sign_update(&MSG[10..]), "C_SignUpdate");
        let sig = ok(t.session.sign_final(), "C_SignFinal");
        ok(t.session.verify(&pure(), k.public, MSG, &sig), "C_Verify of the parts' signature");
    }
}

/// `CKM_ML_DSA` with `CK_SIGN_ADDITIONAL_CONTEXT`: hedged, this context.
fn with_context(context: &[u8]) -> Mechanism<'_> {
    Mechanism::MlDsa(SignAdditionalContext::new(
        HedgeType::Preferred,
        Some(context),
    ))
}

p11_test! {
    fn context_signature_verifies_under_that_context_only() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        for (set, name, _, sig_len) in SETS {
            let k = ml_dsa_pair(&t, set, &format!("ctx{name}"), true);
            let public = t.attr(k.public, CKA_VALUE, "CKA_VALUE of the public key");
            let ctx = b"softmhsm-context";
            let sig = ok(t.session.sign(&with_context(ctx), k.private, MSG), "C_Sign(CKM_ML_DSA, context)");
            assert_eq!(sig.len(), sig_len, "ML-DSA-{name} signature length");
            assert_eq!(python_verify(name, &public, MSG, &sig, Some(ctx)), "ok", "ML-DSA-{name} with its context, by Python");
            assert_eq!(python_verify(name, &public, MSG, &sig, None), "invalid", "Python without the context");
            assert_eq!(python_verify(name, &public, MSG, &sig, Some(b"softmhsm-contexT")), "invalid", "Python with another context");
            ok(t.session.verify(&with_context(ctx), k.public, MSG, &sig), "C_Verify with the context");
            assert_rv(t.session.verify(&pure(), k.public, MSG, &sig), CKR_SIGNATURE_INVALID, "C_Verify without the context");
            assert_rv(t.session.verify(&with_context(b"other"), k.public, MSG, &sig), CKR_SIGNATURE_INVALID, "C_Verify with another context");
            let plain = ok(t.session.sign(&pure(), k.private, MSG), "C_Sign without context");
            assert_rv(t.session.verify(&with_context(ctx), k.public, MSG, &plain), CKR_SIGNATURE_INVALID, "a context-free signature under a context");
        }
    }
}

p11_test! {
    fn context_of_255_bytes_signs_and_256_is_refused() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65, "ctx", true);
        let public = t.attr(k.public, CKA_VALUE, "CKA_VALUE");
        let longest: Vec<u8> = (0..=254u8).collect();
        let required = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Required, Some(&longest)));
        let sig = ok(t.session.sign(&required, k.private, MSG), "a 255-byte context");
        assert_eq!(python_verify("65", &public, MSG, &sig, Some(&longest)), "ok", "Python, 255-byte context");
        let long = [7u8; 256];
        assert_rv(t.session.sign(&with_context(&long), k.private, MSG), CKR_MECHANISM_PARAM_INVALID, "a 256-byte context");
        assert_rv(t.session.verify(&with_context(&long), k.public, MSG, &sig), CKR_MECHANISM_PARAM_INVALID, "verify, a 256-byte context");
        let empty = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Required, Some(&[])));
        let sig = ok(t.session.sign(&empty, k.private, MSG), "an empty context is pure ML-DSA");
        assert_eq!(python_verify("65", &public, MSG, &sig, None), "ok", "Python, empty context");
    }
}

p11_test! {
    fn multi_part_signature_with_a_context_is_the_single_part_one() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_44, "ctx-parts", true);
        let ctx = [0xa5u8; 32];
        ok(t.session.sign_init(&with_context(&ctx), k.private), "C_SignInit");
        ok(t.session.sign_update(&MSG[..7]), "C_SignUpdate");
        ok(t.session.sign_update(&MSG[7..]), "C_SignUpdate");
        let sig = ok(t.session.sign_final(), "C_SignFinal");
        ok(t.session.verify(&with_context(&ctx), k.public, MSG, &sig), "C_Verify of the parts' signature");
        ok(t.session.verify_init(&with_context(&ctx), k.public), "C_VerifyInit");
        ok(t.session.verify_update(MSG), "C_VerifyUpdate");
        ok(t.session.verify_final(&sig), "C_VerifyFinal");
    }
}

p11_test! {
    fn deterministic_signatures_repeat_and_verify() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        for (set, name, _, sig_len) in SETS {
            let k = ml_dsa_pair(&t, set, &format!("det{name}"), true);
            let public = t.attr(k.public, CKA_VALUE, "CKA_VALUE");
            for ctx in [None, Some(&b"deterministic"[..])] {
                let det = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::DeterministicRequired, ctx));
                let a = ok(t.session.sign(&det, k.private, MSG), "C_Sign(deterministic)");
                let b = ok(t.session.sign(&det, k.private, MSG), "C_Sign(deterministic) again");
                assert_eq!(a.len(), sig_len, "ML-DSA-{name} signature length");
                assert_eq!(a, b, "ML-DSA-{name} deterministic signatures repeat (context {ctx:?})");
                assert_eq!(python_verify(name, &public, MSG, &a, ctx), "ok", "ML-DSA-{name} deterministic, by Python (context {ctx:?})");
                ok(t.session.verify(&det, k.public, MSG, &a), "C_Verify of a deterministic signature");
                let hedged = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Required, ctx));
                ok(t.session.verify(&hedged, k.public, MSG, &a), "verification does not care how it was signed");
                assert_ne!(ok(t.session.sign(&hedged, k.private, MSG), "C_Sign(hedged)"), a, "hedged is not deterministic");
            }
            let det = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::DeterministicRequired, None));
            ok(t.session.sign_init(&det, k.private), "C_SignInit(deterministic)");
            ok(t.session.sign_update(&MSG[..9]), "C_SignUpdate");
            ok(t.session.sign_update(&MSG[9..]), "C_SignUpdate");
            let parts = ok(t.session.sign_final(), "C_SignFinal");
            assert_eq!(parts, ok(t.session.sign(&det, k.private, MSG), "C_Sign"), "multi-part deterministic is single-part deterministic");
        }
    }
}

p11_test! {
    fn key_ops_decide_what_an_ml_dsa_key_does() {
        softmhsm_only!("the Managed HSM key_ops rule");
        let t = Token::fresh();
        let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_44, "verify-only", false);
        assert!(!t.attr_bool(k.private, CKA_SIGN, "CKA_SIGN"));
        assert_rv(t.session.sign(&pure(), k.private, MSG), CKR_KEY_FUNCTION_NOT_PERMITTED, "sign without the sign op");
        // An AKP key signs and verifies only: no other mechanism takes it.
        assert_rv(t.session.encrypt(&Mechanism::RsaPkcs, k.public, MSG), CKR_KEY_TYPE_INCONSISTENT, "RSA encryption with an ML-DSA key");
        assert_rv(t.session.sign(&Mechanism::Ecdsa, k.private, &[0; 32]), CKR_KEY_TYPE_INCONSISTENT, "ECDSA with an ML-DSA key");
        let ec = t.keypair(Kp::Ec(CURVES[0].oid), "ec");
        assert_rv(t.session.sign(&pure(), ec.private, MSG), CKR_KEY_TYPE_INCONSISTENT, "ML-DSA with an EC key");
    }
}

p11_test! {
    fn parameter_set_is_required_and_checked() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let private = [Attribute::Token(true), Attribute::Sign(true)];
        let none = [Attribute::Token(true), Attribute::Verify(true)];
        assert_rv(t.session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &none, &private), CKR_TEMPLATE_INCOMPLETE, "no CKA_PARAMETER_SET");
        let bad = [Attribute::Token(true), Attribute::ParameterSet(cryptoki::object::MlKemParameterSetType::ML_KEM_512.into()), Attribute::KeyType(KeyType::EC)];
        assert_rv(t.session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &bad, &private), CKR_TEMPLATE_INCONSISTENT, "CKK_EC on an ML-DSA template");
    }
}

p11_test! {
    fn mechanism_info_lists_ml_dsa() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        let t = Token::fresh();
        let list = ok(t.pkcs11.get_mechanism_list(t.slot), "C_GetMechanismList");
        let types: Vec<CK_MECHANISM_TYPE> = list.iter().map(|m| CK_MECHANISM_TYPE::from(*m)).collect();
        assert!(types.contains(&CKM_ML_DSA_KEY_PAIR_GEN) && types.contains(&CKM_ML_DSA), "{types:?}");
        let info = ok(t.pkcs11.get_mechanism_info(t.slot, cryptoki::mechanism::MechanismType::ML_DSA), "C_GetMechanismInfo");
        assert!(info.sign() && info.verify() && !info.encrypt(), "{info:?}");
    }
}

// ------------------------------------------------------------------ the CLI

p11_test! {
    fn cli_akp_key_lives_as_every_managed_hsm_key_does() {
        softmhsm_only!("the CLI works on softmhsm's store");
        if !python_has_mldsa() {
            return;
        }
        use common::cli::*;
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        let created = json(&["key", "create", "--name", "pq", "--kty", "AKP", "--alg", "ML-DSA-65"]);
        let shown = json(&["key", "show", "--name", "pq"]);
        assert_eq!(shown["key"]["kty"], "AKP-HSM", "{shown}");
        assert_eq!(shown["key"]["alg"], "ML-DSA-65", "{shown}");
        assert_eq!(shown["key"]["key_ops"], serde_json::json!(["sign", "verify"]), "{shown}");
        assert_eq!(created["key"]["pub"], shown["key"]["pub"]);
        let public = b64url_decode(&shown["key"]["pub"]);
        assert_eq!(public.len(), 1952, "ML-DSA-65 public key");

        // sign: the message itself (--value); Python verifies; verify agrees.
        let sig = json(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", &b64url(MSG)]);
        let sig_bytes = b64url_decode(&sig["value"]);
        assert_eq!(python_verify("65", &public, MSG, &sig_bytes, None), "ok", "the CLI's signature by Python");
        let sig_b64 = sig["value"].as_str().unwrap().to_string();
        let verified = json(&["key", "verify", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", &b64url(MSG), "--signature", &sig_b64]);
        assert_eq!(verified["value"], true);
        let other = json(&["key", "verify", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", &b64url(b"other"), "--signature", &sig_b64]);
        assert_eq!(other["value"], false);

        // --context: FIPS 204's context string, which Python must be given too.
        let ctx = b"pq-context";
        let sig = json(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", &b64url(MSG), "--context", &b64url(ctx)]);
        let ctx_sig = b64url_decode(&sig["value"]);
        assert_eq!(python_verify("65", &public, MSG, &ctx_sig, Some(ctx)), "ok", "the CLI's context signature by Python");
        assert_eq!(python_verify("65", &public, MSG, &ctx_sig, None), "invalid", "Python without the context");
        let ctx_b64 = sig["value"].as_str().unwrap().to_string();
        let with = json(&["key", "verify", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", &b64url(MSG), "--context", &b64url(ctx), "--signature", &ctx_b64]);
        assert_eq!(with["value"], true, "verify with the context");
        let without = json(&["key", "verify", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", &b64url(MSG), "--signature", &ctx_b64]);
        assert_eq!(without["value"], false, "verify without the context");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", "AA", "--context", &b64url(&[1; 256])], 1, "the context is 256 bytes; ML-DSA takes at most 255");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ES256", "--digest", &b64url(&[0; 32]), "--context", "AA"], 2, "ES256 takes --digest, not --value or --context");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-44", "--value", "AA"], 1, "ML-DSA-44 does not fit this key");
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ES256", "--digest", &b64url(&[0; 32])], 1, "ES256 does not fit this key");
        refused(&["key", "encrypt", "--name", "pq", "--algorithm", "RSA-OAEP-256", "--value", "AA"], 1, "RSA-OAEP-256 does not fit this key");
        refused(&["key", "create", "--name", "x", "--kty", "AKP", "--alg", "ML-DSA-66"], 2, "unknown --alg 'ML-DSA-66'");
        refused(&["key", "create", "--name", "x", "--kty", "AKP", "--ops", "encrypt"], 1, "operations not possible for this key type: encrypt");

        // download: an SPKI PEM Python (OpenSSL 3.5) reads as this key.
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("pq.pem");
        json(&["key", "download", "--name", "pq", "--file", pem.to_str().unwrap()]);
        let script = "import sys\nfrom cryptography.hazmat.primitives.serialization import load_pem_public_key\n\
            k = load_pem_public_key(open(sys.argv[1], 'rb').read())\nprint(type(k).__name__, k.public_bytes_raw().hex())\n";
        let out = run_cmd(&python(), &["-c".into(), script.into(), pem.clone().into_os_string()]);
        assert_eq!(out.trim(), format!("MLDSA65PublicKey {}", hex(&public)), "key download's PEM");

        // rotation, soft-delete, recovery, backup and restore keep the key usable.
        let rotated = json(&["key", "rotate", "--name", "pq"]);
        assert_eq!(rotated["key"]["alg"], "ML-DSA-65");
        assert_ne!(rotated["key"]["pub"], shown["key"]["pub"], "a new version is a new key");
        let backup = dir.path().join("pq.bak");
        json(&["key", "backup", "--name", "pq", "--file", backup.to_str().unwrap()]);
        json(&["key", "delete", "--name", "pq"]);
        refused(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", "AA"], 1, "unknown key 'pq'");
        json(&["key", "recover", "--name", "pq"]);
        json(&["key", "delete", "--name", "pq"]);
        json(&["key", "purge", "--name", "pq"]);
        json(&["key", "restore", "--file", backup.to_str().unwrap()]);
        let restored = json(&["key", "show", "--name", "pq"]);
        assert_eq!(restored["key"]["pub"], rotated["key"]["pub"], "the restored current version");
        let sig = json(&["key", "sign", "--name", "pq", "--algorithm", "ML-DSA-65", "--value", &b64url(MSG)]);
        let public = b64url_decode(&restored["key"]["pub"]);
        assert_eq!(python_verify("65", &public, MSG, &b64url_decode(&sig["value"]), None), "ok", "the restored key signs");

        // audit: the service's operation names with the algorithm.
        let audit = cli(&["audit"]).stdout;
        assert!(audit.lines().any(|l| l.contains("\"operationName\":\"KeySign\"") && l.contains("\"algorithm\":\"ML-DSA-65\"") && l.contains("Success")), "{audit}");
    }
}

p11_test! {
    fn cli_imports_a_seed_form_pkcs8_ml_dsa_key_python_wrote() {
        softmhsm_only!("the CLI works on softmhsm's store");
        if !python_has_mldsa() {
            return;
        }
        use common::cli::*;
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("mldsa.pem");
        // Python (OpenSSL 3.5) writes PKCS#8 in the seed form and prints the public key.
        let script = "import sys\nfrom cryptography.hazmat.primitives.asymmetric import mldsa\n\
            from cryptography.hazmat.primitives import serialization as s\n\
            k = mldsa.MLDSA65PrivateKey.from_seed_bytes(bytes(range(100, 132)))\n\
            open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
            print(k.public_key().public_bytes_raw().hex())\n";
        let public = run_cmd(&python(), &["-c".into(), script.into(), pem.clone().into_os_string()]);
        let imported = json(&["key", "import", "--name", "imported", "--file", pem.to_str().unwrap()]);
        assert_eq!(imported["key"]["kty"], "AKP-HSM", "{imported}");
        assert_eq!(imported["key"]["alg"], "ML-DSA-65", "{imported}");
        assert_eq!(hex(&b64url_decode(&imported["key"]["pub"])), public.trim(), "the public key of the imported seed");
        let public = b64url_decode(&imported["key"]["pub"]);
        let ctx = b"imported";
        let sig = json(&["key", "sign", "--name", "imported", "--algorithm", "ML-DSA-65", "--value", &b64url(MSG), "--context", &b64url(ctx)]);
        assert_eq!(python_verify("65", &public, MSG, &b64url_decode(&sig["value"]), Some(ctx)), "ok", "the imported key's signature, by Python");

        // The same key through PKCS#11: found by name, signs what Python verifies.
        let t = Token::reopen_existing();
        let private = t.find_private_by_label("imported");
        assert_eq!(private.len(), 1, "one private key labelled imported");
        assert!(!t.attr_bool(private[0], CKA_LOCAL, "CKA_LOCAL"), "an imported key is not local");
        let sig = ok(t.session.sign(&pure(), private[0], MSG), "C_Sign with the imported key");
        assert_eq!(python_verify("65", &public, MSG, &sig, None), "ok", "C_Sign of the imported key, by Python");

        // Another form than the seed is refused, with the way to write the seed form.
        let der = {
            use base64ct::{Base64, Encoding};
            let text = std::fs::read_to_string(&pem).unwrap();
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            Base64::decode_vec(&body).unwrap()
        };
        let mut expanded = der.clone();
        let at = expanded.len() - 34;
        assert_eq!(&expanded[at..at + 2], &[0x80, 0x20], "the seed form's [0] IMPLICIT OCTET STRING");
        expanded[at] = 0x04;
        let file = dir.path().join("expanded.der");
        std::fs::write(&file, &expanded).unwrap();
        refused(&["key", "import", "--name", "other", "--file", file.to_str().unwrap()], 1, "only the seed form of an ML-DSA private key is read");
    }
}

p11_test! {
    fn create_object_imports_an_ml_dsa_private_key_from_its_seed() {
        softmhsm_only!("ML-DSA is a PKCS#11 3.2 mechanism");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        let seed: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(7)).collect();
        let script = "import sys\nfrom cryptography.hazmat.primitives.asymmetric import mldsa\n\
            k = mldsa.MLDSA87PrivateKey.from_seed_bytes(bytes.fromhex(sys.argv[1]))\n\
            print(k.public_key().public_bytes_raw().hex())\n";
        let public = run_cmd(&python(), &["-c".into(), script.into(), hex(&seed).into()]);
        let public: Vec<u8> = (0..public.trim().len()).step_by(2).map(|i| u8::from_str_radix(&public.trim()[i..i + 2], 16).unwrap()).collect();
        let template = |seed: Option<&[u8]>| {
            let mut v = vec![
                Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::ML_DSA),
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_87.into()),
                Attribute::Label(b"created".to_vec()),
            ];
            v.extend(seed.map(|s| Attribute::Seed(s.to_vec())));
            v
        };
        let k = ok(t.session.create_object(&template(Some(&seed))), "C_CreateObject(CKK_ML_DSA, CKA_SEED)");
        assert_eq!(t.try_attr(k, CKA_SEED), Err(CKR_ATTRIBUTE_SENSITIVE), "the seed is sensitive");
        assert!(!t.attr_bool(k, CKA_LOCAL, "CKA_LOCAL"), "an imported key is not local");
        assert_eq!(t.attr_ulong(k, CKA_PARAMETER_SET, "CKA_PARAMETER_SET"), CKP_ML_DSA_87);
        let sig = ok(t.session.sign(&pure(), k, MSG), "C_Sign with the created key");
        assert_eq!(python_verify("87", &public, MSG, &sig, None), "ok", "Python verifies under the seed's public key");

        assert_rv(t.session.create_object(&template(None)), CKR_TEMPLATE_INCOMPLETE, "no CKA_SEED");
        assert_rv(t.session.create_object(&template(Some(&seed[1..]))), CKR_ATTRIBUTE_VALUE_INVALID, "a 31-byte seed");
        let mut with_value = template(Some(&seed));
        with_value.push(Attribute::Value(vec![0; 4896]));
        assert_rv(t.session.create_object(&with_value), CKR_TEMPLATE_INCONSISTENT, "an expanded key beside the seed");
    }
}

// ------------------------------------------------------------ keygen from seed

/// FIPS 204 `ML-DSA.KeyGen_internal(ξ)` is deterministic: the provider's key
/// from a seed is the one OpenSSL 3.5 (through Python `cryptography`) derives
/// from the same seed, and each verifies the other's signatures.
#[test]
fn ml_dsa_key_from_a_seed_is_openssls_key_from_that_seed() {
    if !python_has_mldsa() {
        return;
    }
    #[cfg(feature = "aws-lc")]
    {
        use softmhsm::crypto::{provider, MlDsa, PublicKey};
        let script = "import sys\nfrom cryptography.hazmat.primitives.asymmetric import mldsa\n\
            k = getattr(mldsa, 'MLDSA' + sys.argv[1] + 'PrivateKey').from_seed_bytes(bytes.fromhex(sys.argv[2]))\n\
            m = bytes.fromhex(sys.argv[3])\n\
            print(k.public_key().public_bytes_raw().hex(), k.sign(m).hex(), k.sign(m, b'ctx').hex())\n";
        for (set, name) in [(MlDsa::P44, "44"), (MlDsa::P65, "65"), (MlDsa::P87, "87")] {
            let seed: Vec<u8> = (0..32u8)
                .map(|i| i.wrapping_mul(37).wrapping_add(set.public_len() as u8))
                .collect();
            let out = run_cmd(
                &python(),
                &[
                    "-c".into(),
                    script.into(),
                    name.into(),
                    hex(&seed).into(),
                    hex(MSG).into(),
                ],
            );
            let [py_public, py_sig, py_ctx_sig] = out.split_whitespace().collect::<Vec<_>>()[..]
            else {
                panic!("three hex strings: {out}")
            };
            let key = provider()
                .ml_dsa_private(set, &seed)
                .expect("key from seed");
            let PublicKey::MlDsa { key: public, .. } = key.public() else {
                unreachable!()
            };
            assert_eq!(
                hex(&public),
                py_public,
                "ML-DSA-{name} public key from the same seed"
            );
            let verifier = provider().ml_dsa_public(set, &public).expect("public key");
            let unhex = |h: &str| -> Vec<u8> {
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect()
            };
            verifier
                .verify(MSG, &[], &unhex(py_sig))
                .expect("OpenSSL's signature verifies");
            verifier
                .verify(MSG, b"ctx", &unhex(py_ctx_sig))
                .expect("OpenSSL's signature with a context verifies under it");
            assert!(
                verifier.verify(MSG, &[], &unhex(py_ctx_sig)).is_err(),
                "and not without it"
            );
            let sig = key.sign(MSG, &[]).expect("sign");
            assert_eq!(
                python_verify(name, &public, MSG, &sig, None),
                "ok",
                "ML-DSA-{name} by Python"
            );
            let sig = key.sign(MSG, b"ctx").expect("sign with a context");
            assert_eq!(
                python_verify(name, &public, MSG, &sig, Some(b"ctx")),
                "ok",
                "ML-DSA-{name} with a context by Python"
            );
        }
    }
}

// ------------------------------------------- deterministic signing vectors

/// FIPS 204's deterministic variant against a published vector: Wycheproof's
/// ML-DSA-44 signing test 1 (tests/fixtures/wycheproof/README.md).
#[test]
fn deterministic_signature_is_wycheproofs() {
    #[cfg(feature = "aws-lc")]
    {
        use softmhsm::crypto::{provider, MlDsa};
        let expected = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/wycheproof/mldsa_44_sign_seed_tc1.sig.hex"
        ))
        .expect("the vector");
        let key = provider()
            .ml_dsa_private(MlDsa::P44, &[0x2a; 32])
            .expect("key from seed");
        let sig = key.sign_deterministic(b"Hello world", &[]).expect("sign");
        assert_eq!(
            hex(&sig),
            expected.trim(),
            "Wycheproof mldsa_44_sign_seed tcId 1"
        );
    }
}

/// aws-lc's own FIPS 204 `ML-DSA.Sign_internal`, for this check only: the
/// library aws-lc-sys builds exports it (for ACVP testing) though no header
/// it binds declares it. With rnd = {0}³² and M′ = 0 ‖ |ctx| ‖ ctx ‖ M it is
/// the deterministic variant, made by aws-lc's (mldsa-native) code.
#[cfg(feature = "aws-lc")]
mod aws_lc_internal {
    use std::ffi::c_int;
    type Keypair = unsafe extern "C" fn(*mut u8, *mut u8, *const u8) -> c_int;
    type Sign = unsafe extern "C" fn(
        *const u8,
        *mut u8,
        *mut usize,
        *const u8,
        usize,
        *const u8,
        usize,
        *const u8,
    ) -> c_int;
    extern "C" {
        #[link_name = "aws_lc_0_47_0_ml_dsa_44_keypair_internal"]
        fn keypair_44(pk: *mut u8, sk: *mut u8, seed: *const u8) -> c_int;
        #[link_name = "aws_lc_0_47_0_ml_dsa_65_keypair_internal"]
        fn keypair_65(pk: *mut u8, sk: *mut u8, seed: *const u8) -> c_int;
        #[link_name = "aws_lc_0_47_0_ml_dsa_87_keypair_internal"]
        fn keypair_87(pk: *mut u8, sk: *mut u8, seed: *const u8) -> c_int;
        #[link_name = "aws_lc_0_47_0_ml_dsa_44_sign_internal"]
        fn sign_44(
            sk: *const u8,
            sig: *mut u8,
            sig_len: *mut usize,
            m: *const u8,
            m_len: usize,
            pre: *const u8,
            pre_len: usize,
            rnd: *const u8,
        ) -> c_int;
        #[link_name = "aws_lc_0_47_0_ml_dsa_65_sign_internal"]
        fn sign_65(
            sk: *const u8,
            sig: *mut u8,
            sig_len: *mut usize,
            m: *const u8,
            m_len: usize,
            pre: *const u8,
            pre_len: usize,
            rnd: *const u8,
        ) -> c_int;
        #[link_name = "aws_lc_0_47_0_ml_dsa_87_sign_internal"]
        fn sign_87(
            sk: *const u8,
            sig: *mut u8,
            sig_len: *mut usize,
            m: *const u8,
            m_len: usize,
            pre: *const u8,
            pre_len: usize,
            rnd: *const u8,
        ) -> c_int;
    }

    /// The deterministic signature by aws-lc: set (44/65/87), seed, message, context.
    pub fn sign_deterministic(set: u32, seed: &[u8; 32], m: &[u8], ctx: &[u8]) -> Vec<u8> {
        // FIPS 204 Table 2: private key and signature lengths; 2592 bytes hold any public key.
        let (keypair, sign, sk_len, sig_len): (Keypair, Sign, usize, usize) = match set {
            44 => (keypair_44, sign_44, 2560, 2420),
            65 => (keypair_65, sign_65, 4032, 3309),
            _ => (keypair_87, sign_87, 4896, 4627),
        };
        let (mut pk, mut sk, mut sig) = (vec![0u8; 2592], vec![0u8; sk_len], vec![0u8; sig_len]);
        // SAFETY: the buffers are as long as FIPS 204 says for `set`; the seed is 32 bytes.
        assert_eq!(
            unsafe { keypair(pk.as_mut_ptr(), sk.as_mut_ptr(), seed.as_ptr()) },
            1,
            "aws-lc keypair_internal"
        );
        let pre = [&[0u8, ctx.len() as u8][..], ctx].concat();
        let mut len = sig.len();
        // SAFETY: as above; `m`, `pre` and the 32-byte rnd are valid for their lengths.
        let rv = unsafe {
            sign(
                sk.as_ptr(),
                sig.as_mut_ptr(),
                &mut len,
                m.as_ptr(),
                m.len(),
                pre.as_ptr(),
                pre.len(),
                [0u8; 32].as_ptr(),
            )
        };
        assert_eq!((rv, len), (1, sig_len), "aws-lc sign_internal");
        sig
    }
}

/// The token's deterministic signatures (RustCrypto's `ml-dsa`) are
/// aws-lc's, byte for byte, for every parameter set, with and without a
/// context.
#[test]
fn deterministic_signature_is_aws_lcs() {
    #[cfg(feature = "aws-lc")]
    {
        use softmhsm::crypto::{provider, MlDsa};
        let longest: Vec<u8> = (0..255u8).collect();
        for (set, n) in [(MlDsa::P44, 44), (MlDsa::P65, 65), (MlDsa::P87, 87)] {
            let seed: [u8; 32] = std::array::from_fn(|i| (i as u8) ^ n as u8);
            let key = provider()
                .ml_dsa_private(set, &seed)
                .expect("key from seed");
            for ctx in [&b""[..], b"ctx", &longest] {
                for msg in [&b""[..], MSG] {
                    let ours = key.sign_deterministic(msg, ctx).expect("sign");
                    let theirs = aws_lc_internal::sign_deterministic(n, &seed, msg, ctx);
                    assert!(
                        ours == theirs,
                        "ML-DSA-{n}, context of {} bytes, message of {} bytes",
                        ctx.len(),
                        msg.len()
                    );
                }
            }
        }
    }
}

// ------------------------------------------------------------------- ML-KEM

fn ml_kem_pair(t: &Token, set: cryptoki::object::MlKemParameterSetType) -> Pair {
    let public = [
        Attribute::Token(false),
        Attribute::Encapsulate(true),
        Attribute::ParameterSet(set.into()),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Decapsulate(true),
    ];
    let (public, private) = ok(
        t.session
            .generate_key_pair(&Mechanism::MlKemKeyPairGen, &public, &private),
        &format!("C_GenerateKeyPair(CKM_ML_KEM_KEY_PAIR_GEN, {set})"),
    );
    Pair { public, private }
}

/// The template of the AES key a KEM call makes (AES-256 unless `len` says).
fn aes_template(len: Option<CK_ULONG>) -> Vec<CK_ATTRIBUTE> {
    static CLASS: CK_OBJECT_CLASS = CKO_SECRET_KEY;
    static KEY_TYPE: CK_KEY_TYPE = CKK_AES;
    static TRUE: CK_BBOOL = CK_TRUE;
    let attr = |type_, p: *const std::ffi::c_void, n: usize| CK_ATTRIBUTE {
        type_,
        pValue: p as *mut _,
        ulValueLen: n as CK_ULONG,
    };
    let mut t = vec![
        attr(
            CKA_CLASS,
            &CLASS as *const _ as *const _,
            std::mem::size_of::<CK_OBJECT_CLASS>(),
        ),
        attr(
            CKA_KEY_TYPE,
            &KEY_TYPE as *const _ as *const _,
            std::mem::size_of::<CK_KEY_TYPE>(),
        ),
        attr(CKA_ENCRYPT, &TRUE as *const _ as *const _, 1),
        attr(CKA_DECRYPT, &TRUE as *const _ as *const _, 1),
    ];
    if let Some(n) = len {
        let n: &'static CK_ULONG = Box::leak(Box::new(n));
        t.push(attr(
            CKA_VALUE_LEN,
            n as *const _ as *const _,
            std::mem::size_of::<CK_ULONG>(),
        ));
    }
    t
}

/// Python encapsulates to an ML-KEM encapsulation key and AES-256-GCM-encrypts
/// `MSG` with the shared secret: (ciphertext, IV, sealed message).
fn python_encapsulate(set: &str, ek: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let script = "import sys, os\n\
        from cryptography.hazmat.primitives.asymmetric import mlkem\n\
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n\
        pk = getattr(mlkem, 'MLKEM' + sys.argv[1] + 'PublicKey').from_public_bytes(bytes.fromhex(sys.argv[2]))\n\
        ss, ct = pk.encapsulate()\n\
        iv = os.urandom(12)\n\
        print(ct.hex(), iv.hex(), AESGCM(ss).encrypt(iv, bytes.fromhex(sys.argv[3]), None).hex())\n";
    let out = run_cmd(
        &python(),
        &[
            "-c".into(),
            script.into(),
            set.into(),
            hex(ek).into(),
            hex(MSG).into(),
        ],
    );
    let mut parts = out.split_whitespace().map(|h| {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("Python printed hex"))
            .collect::<Vec<u8>>()
    });
    let mut next = || {
        parts
            .next()
            .unwrap_or_else(|| panic!("Python's encapsulation printed {out:?}"))
    };
    (next(), next(), next())
}

fn kem_mechanism() -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: CKM_ML_KEM,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    }
}

/// C_DecapsulateKey through the 3.2 table.
fn decapsulate(
    t: &Token,
    private: cryptoki::object::ObjectHandle,
    ct: &[u8],
    len: Option<CK_ULONG>,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let f = t
        .raw
        .f32()
        .C_DecapsulateKey
        .expect("C_DecapsulateKey in the 3.2 table");
    let mut m = kem_mechanism();
    let mut tmpl = aes_template(len);
    let mut h = 0;
    // SAFETY: every pointer is valid for the lengths given.
    let rv = unsafe {
        f(
            t.h(),
            &mut m,
            private.handle(),
            tmpl.as_mut_ptr(),
            tmpl.len() as CK_ULONG,
            ct.as_ptr() as *mut _,
            ct.len() as CK_ULONG,
            &mut h,
        )
    };
    if rv == CKR_OK {
        Ok(h)
    } else {
        Err(rv)
    }
}

/// C_EncapsulateKey through the 3.2 table (length query first, as the spec's convention).
fn encapsulate(
    t: &Token,
    public: cryptoki::object::ObjectHandle,
) -> Result<(Vec<u8>, CK_OBJECT_HANDLE), CK_RV> {
    let f = t
        .raw
        .f32()
        .C_EncapsulateKey
        .expect("C_EncapsulateKey in the 3.2 table");
    let mut m = kem_mechanism();
    let mut tmpl = aes_template(None);
    let (mut n, mut h) = (0, 0);
    // SAFETY: every pointer is valid; NULL pCiphertext asks the length.
    let rv = unsafe {
        f(
            t.h(),
            &mut m,
            public.handle(),
            tmpl.as_mut_ptr(),
            tmpl.len() as CK_ULONG,
            std::ptr::null_mut(),
            &mut n,
            &mut h,
        )
    };
    if rv != CKR_OK {
        return Err(rv);
    }
    assert_eq!(h, 0, "a length query makes no key");
    let mut ct = vec![0u8; n as usize];
    // SAFETY: `ct` holds `n` writable bytes.
    let rv = unsafe {
        f(
            t.h(),
            &mut m,
            public.handle(),
            tmpl.as_mut_ptr(),
            tmpl.len() as CK_ULONG,
            ct.as_mut_ptr(),
            &mut n,
            &mut h,
        )
    };
    if rv != CKR_OK {
        return Err(rv);
    }
    ct.truncate(n as usize);
    Ok((ct, h))
}

/// AES-256-GCM (128-bit tag, no AAD) with a raw key handle, through the raw
/// function list (`cryptoki` makes no `ObjectHandle` from a raw handle).
fn gcm(
    t: &Token,
    encrypt: bool,
    key: CK_OBJECT_HANDLE,
    iv: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    let mut params = CK_GCM_PARAMS {
        pIv: iv.as_ptr() as *mut _,
        ulIvLen: iv.len() as CK_ULONG,
        ulIvBits: 96,
        pAAD: std::ptr::null_mut(),
        ulAADLen: 0,
        ulTagBits: 128,
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: &mut params as *mut _ as *mut _,
        ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    };
    let f = t.raw.f32();
    let mut out = vec![0u8; data.len() + 16];
    let mut n = out.len() as CK_ULONG;
    // SAFETY: every pointer is valid for the lengths given.
    let rv = unsafe {
        if encrypt {
            let rv = f.C_EncryptInit.unwrap()(t.h(), &mut m, key);
            if rv != CKR_OK {
                return Err(rv);
            }
            f.C_Encrypt.unwrap()(
                t.h(),
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut n,
            )
        } else {
            let rv = f.C_DecryptInit.unwrap()(t.h(), &mut m, key);
            if rv != CKR_OK {
                return Err(rv);
            }
            f.C_Decrypt.unwrap()(
                t.h(),
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut n,
            )
        }
    };
    if rv != CKR_OK {
        return Err(rv);
    }
    out.truncate(n as usize);
    Ok(out)
}

/// A CK_ULONG attribute of a raw handle.
fn raw_ulong(t: &Token, o: CK_OBJECT_HANDLE, ty: CK_ATTRIBUTE_TYPE) -> Result<CK_ULONG, CK_RV> {
    t.raw
        .attr(t.h(), o, ty)
        .map(|v| CK_ULONG::from_ne_bytes(v.try_into().expect("a CK_ULONG")))
}

p11_test! {
    fn python_encapsulates_and_the_token_decapsulates_the_same_aes_key() {
        softmhsm_only!("ML-KEM is a softmhsm extension");
        if !python_has_mldsa() {
            return;
        }
        let t = Token::fresh();
        for (set, name, ct_len) in [(cryptoki::object::MlKemParameterSetType::ML_KEM_768, "768", 1088), (cryptoki::object::MlKemParameterSetType::ML_KEM_1024, "1024", 1568)] {
            let k = ml_kem_pair(&t, set);
            let ek = t.attr(k.public, CKA_VALUE, "the encapsulation key");
            let (ct, iv, sealed) = python_encapsulate(name, &ek);
            let (ct, iv, sealed) = (&ct, &iv, &sealed);
            assert_eq!(ct.len(), ct_len, "ML-KEM-{name} ciphertext");
            let aes = decapsulate(&t, k.private, ct, None).unwrap_or_else(|rv| panic!("C_DecapsulateKey: {}", rv_name(rv)));
            assert_eq!(raw_ulong(&t, aes, CKA_VALUE_LEN), Ok(32), "AES-256 by default");
            let plain = gcm(&t, false, aes, iv, sealed).unwrap_or_else(|rv| panic!("C_Decrypt of Python's AES-GCM: {}", rv_name(rv)));
            assert_eq!(plain, MSG, "ML-KEM-{name}: the same shared secret");
            // A tampered ciphertext decapsulates (implicit rejection) to another key.
            let mut bad = ct.clone();
            bad[5] ^= 1;
            let other = decapsulate(&t, k.private, &bad, None).expect("implicit rejection");
            assert_eq!(gcm(&t, false, other, iv, sealed), Err(CKR_ENCRYPTED_DATA_INVALID), "the key of a tampered ciphertext");
            assert_eq!(decapsulate(&t, k.private, &ct[1..], None), Err(CKR_ENCRYPTED_DATA_LEN_RANGE), "a short ciphertext");
        }
    }
}

p11_test! {
    fn the_token_encapsulates_to_its_own_key_and_decapsulates_the_same_secret() {
        softmhsm_only!("ML-KEM is a softmhsm extension");
        let t = Token::fresh();
        for (set, ek_len) in [(cryptoki::object::MlKemParameterSetType::ML_KEM_512, 800), (cryptoki::object::MlKemParameterSetType::ML_KEM_768, 1184), (cryptoki::object::MlKemParameterSetType::ML_KEM_1024, 1568)] {
            let k = ml_kem_pair(&t, set);
            assert_eq!(t.attr(k.public, CKA_VALUE, "CKA_VALUE").len(), ek_len, "{set} encapsulation key");
            assert_eq!(t.attr_ulong(k.private, CKA_KEY_TYPE, "key type"), CKK_ML_KEM);
            assert!(t.attr_bool(k.public, CKA_ENCAPSULATE, "CKA_ENCAPSULATE") && t.attr_bool(k.private, CKA_DECAPSULATE, "CKA_DECAPSULATE"));
            let before = t.count_all();
            let (ct, sender) = encapsulate(&t, k.public).unwrap_or_else(|rv| panic!("C_EncapsulateKey: {}", rv_name(rv)));
            assert_eq!(t.count_all(), before + 1, "one key made, none by the length query");
            let receiver = decapsulate(&t, k.private, &ct, Some(16)).expect("C_DecapsulateKey");
            assert_eq!(raw_ulong(&t, receiver, CKA_VALUE_LEN), Ok(16), "the template's length");
            let full = decapsulate(&t, k.private, &ct, None).expect("C_DecapsulateKey");
            let iv = [3u8; 12];
            let sealed = gcm(&t, true, sender, &iv, MSG).expect("C_Encrypt with the encapsulated key");
            assert_eq!(gcm(&t, false, full, &iv, &sealed), Ok(MSG.to_vec()), "{set}: decrypted with the decapsulated key");
            assert_eq!(gcm(&t, false, receiver, &iv, &sealed), Err(CKR_ENCRYPTED_DATA_INVALID), "AES-128 from the secret's first 16 bytes is another key");
            assert_eq!(t.raw.attr(t.h(), receiver, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE), "the secret stays inside");
        }
    }
}

p11_test! {
    fn kem_calls_refuse_the_wrong_key_and_template() {
        softmhsm_only!("ML-KEM is a softmhsm extension");
        let t = Token::fresh();
        let k = ml_kem_pair(&t, cryptoki::object::MlKemParameterSetType::ML_KEM_768);
        let (ct, _) = encapsulate(&t, k.public).expect("C_EncapsulateKey");
        assert_eq!(decapsulate(&t, k.public, &ct, None), Err(CKR_KEY_TYPE_INCONSISTENT), "decapsulate with the public key");
        assert_eq!(encapsulate(&t, k.private).map(|_| ()), Err(CKR_KEY_TYPE_INCONSISTENT), "encapsulate with the private key");
        let dsa = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_44, "dsa", true);
        assert_eq!(encapsulate(&t, dsa.public).map(|_| ()), Err(CKR_KEY_TYPE_INCONSISTENT), "an ML-DSA key");
        assert_eq!(decapsulate(&t, k.private, &ct, Some(20)), Err(CKR_ATTRIBUTE_VALUE_INVALID), "a 20-byte AES key");
        assert_rv(t.session.sign(&pure(), k.private, MSG), CKR_KEY_TYPE_INCONSISTENT, "ML-DSA with an ML-KEM key");
        // CKA_DECAPSULATE=FALSE takes the unwrapKey op away: decapsulation is refused.
        let (_, no_decaps) = ok(
            t.session.generate_key_pair(
                &Mechanism::MlKemKeyPairGen,
                &[Attribute::Token(false), Attribute::ParameterSet(cryptoki::object::MlKemParameterSetType::ML_KEM_768.into())],
                &[Attribute::Token(false), Attribute::Decapsulate(false)],
            ),
            "an ML-KEM key without decapsulate",
        );
        assert!(!t.attr_bool(no_decaps, CKA_DECAPSULATE, "CKA_DECAPSULATE"));
        assert_eq!(decapsulate(&t, no_decaps, &ct, None), Err(CKR_KEY_FUNCTION_NOT_PERMITTED), "decapsulate without the op");
        // On other keys the KEM attributes read FALSE and grant nothing.
        assert!(!t.attr_bool(dsa.public, CKA_ENCAPSULATE, "CKA_ENCAPSULATE of an ML-DSA key"));
    }
}

p11_test! {
    fn kem_entry_points_check_their_pointers_and_lengths() {
        softmhsm_only!("ML-KEM is a softmhsm extension");
        let t = Token::fresh();
        let k = ml_kem_pair(&t, cryptoki::object::MlKemParameterSetType::ML_KEM_512);
        let f = t.raw.f32();
        let (enc, dec) = (f.C_EncapsulateKey.unwrap(), f.C_DecapsulateKey.unwrap());
        let mut m = kem_mechanism();
        let mut tmpl = aes_template(None);
        let n_tmpl = tmpl.len() as CK_ULONG;
        let (mut n, mut h) = (0 as CK_ULONG, 0);
        let mut ct = vec![0u8; 768];
        let before = t.count_all();
        // SAFETY (every call): the pointers are valid or deliberately NULL.
        unsafe {
            check(enc(t.h(), &mut m, k.public.handle(), tmpl.as_mut_ptr(), n_tmpl, ct.as_mut_ptr(), std::ptr::null_mut(), &mut h), CKR_ARGUMENTS_BAD, "NULL pulCiphertextLen");
            check(enc(t.h(), &mut m, k.public.handle(), tmpl.as_mut_ptr(), n_tmpl, std::ptr::null_mut(), &mut n, std::ptr::null_mut()), CKR_ARGUMENTS_BAD, "NULL phKey");
            check(enc(t.h(), std::ptr::null_mut(), k.public.handle(), tmpl.as_mut_ptr(), n_tmpl, std::ptr::null_mut(), &mut n, &mut h), CKR_ARGUMENTS_BAD, "NULL pMechanism");
            n = 100;
            check(enc(t.h(), &mut m, k.public.handle(), tmpl.as_mut_ptr(), n_tmpl, ct.as_mut_ptr(), &mut n, &mut h), CKR_BUFFER_TOO_SMALL, "a 100-byte buffer");
            assert_eq!(n, 768, "the length needed");
            assert_eq!(t.count_all(), before, "no key made by a refused call");
            check(dec(t.h(), &mut m, k.private.handle(), tmpl.as_mut_ptr(), n_tmpl, std::ptr::null_mut(), 768, &mut h), CKR_ARGUMENTS_BAD, "NULL pCiphertext");
            check(dec(t.h(), &mut m, k.private.handle(), tmpl.as_mut_ptr(), n_tmpl, ct.as_mut_ptr(), 768, std::ptr::null_mut()), CKR_ARGUMENTS_BAD, "NULL phKey");
            check(dec(t.h(), &mut m, k.private.handle(), std::ptr::null_mut(), 1, ct.as_mut_ptr(), 768, &mut h), CKR_ARGUMENTS_BAD, "NULL template of one attribute");
            check(dec(0xdead, &mut m, k.private.handle(), tmpl.as_mut_ptr(), n_tmpl, ct.as_mut_ptr(), 768, &mut h), CKR_SESSION_HANDLE_INVALID, "no such session");
            let mut ecdsa = CK_MECHANISM { mechanism: CKM_ECDSA, pParameter: std::ptr::null_mut(), ulParameterLen: 0 };
            check(dec(t.h(), &mut ecdsa, k.private.handle(), tmpl.as_mut_ptr(), n_tmpl, ct.as_mut_ptr(), 768, &mut h), CKR_MECHANISM_INVALID, "CKM_ECDSA");
        }
        assert_eq!(t.count_all(), before, "no key made by any refused call");
    }
}

/// The issue's own check, written as a `cryptoki` client that uses nothing but
/// the crate's API: `Pkcs11::new` takes the module's default interface, which
/// must therefore be the 3.2 one (the functions `C_EncapsulateKey`,
/// `C_DecapsulateKey` and `C_VerifySignature*` exist only there).
mod a_cryptoki_client_on_the_default_interface {
    use super::*;
    use cryptoki::context::Function;
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::aead::GcmParams;
    use cryptoki::object::{MlKemParameterSetType, ObjectClass};

    fn aes(len: u64) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(len.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ]
    }

    fn gcm_open(
        t: &Token,
        key: cryptoki::object::ObjectHandle,
        iv: &[u8],
        sealed: &[u8],
    ) -> cryptoki::error::Result<Vec<u8>> {
        let mut iv = iv.to_vec();
        let m =
            Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).expect("GCM parameters"));
        t.session.decrypt(&m, key, sealed)
    }

    p11_test! {
        fn makes_ml_dsa_65_and_ml_kem_768_pairs_and_python_agrees() {
            softmhsm_only!("ML-DSA and ML-KEM are PKCS#11 3.2 mechanisms");
            if !python_has_mldsa() {
                return;
            }
            let t = Token::fresh();
            for f in [Function::EncapsulateKey, Function::DecapsulateKey, Function::VerifySignatureInit, Function::VerifySignature] {
                assert!(t.pkcs11.is_fn_supported(f), "{f:?} in the default interface's table");
            }

            // ML-DSA-65: pure, with a context, deterministic; Python verifies all three.
            let k = ml_dsa_pair(&t, MlDsaParameterSetType::ML_DSA_65, "client-mldsa65", true);
            let public = t.attr(k.public, CKA_VALUE, "CKA_VALUE of the ML-DSA-65 public key");
            let context = b"softmhsm client check";
            let with_ctx = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Required, Some(context)));
            let det = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::DeterministicRequired, None));
            let sig = ok(t.session.sign(&pure(), k.private, MSG), "C_Sign(CKM_ML_DSA)");
            let sig_ctx = ok(t.session.sign(&with_ctx, k.private, MSG), "C_Sign(CKM_ML_DSA, context)");
            let det1 = ok(t.session.sign(&det, k.private, MSG), "C_Sign(CKM_ML_DSA, deterministic)");
            let det2 = ok(t.session.sign(&det, k.private, MSG), "C_Sign(CKM_ML_DSA, deterministic, again)");
            assert_eq!(det1, det2, "deterministic signatures repeat");
            assert_eq!(python_verify("65", &public, MSG, &sig, None), "ok", "pure signature by Python");
            assert_eq!(python_verify("65", &public, MSG, &sig_ctx, Some(context)), "ok", "context signature by Python");
            assert_eq!(python_verify("65", &public, MSG, &sig_ctx, None), "invalid", "Python: not without its context");
            assert_eq!(python_verify("65", &public, MSG, &det1, None), "ok", "deterministic signature by Python");
            // C_VerifySignature*: the signature first, then the data.
            ok(t.session.verify_signature_init(&pure(), k.public, &sig), "C_VerifySignatureInit");
            ok(t.session.verify_signature(MSG), "C_VerifySignature");
            ok(t.session.verify_signature_init(&pure(), k.public, &sig), "C_VerifySignatureInit");
            match t.session.verify_signature(b"another message") {
                Err(Error::Pkcs11(RvError::SignatureInvalid, _)) => {}
                other => panic!("C_VerifySignature of another message: {other:?}"),
            }

            // ML-KEM-768: Python encapsulates, the token decapsulates the same AES key.
            let set = MlKemParameterSetType::ML_KEM_768;
            let (public, private) = ok(
                t.session.generate_key_pair(
                    &Mechanism::MlKemKeyPairGen,
                    &[Attribute::Token(true), Attribute::Encapsulate(true), Attribute::ParameterSet(set.into())],
                    &[Attribute::Token(true), Attribute::Private(true), Attribute::Sensitive(true), Attribute::Decapsulate(true)],
                ),
                "C_GenerateKeyPair(CKM_ML_KEM_KEY_PAIR_GEN, ML-KEM-768)",
            );
            let ek = t.attr(public, CKA_VALUE, "the ML-KEM-768 encapsulation key");
            let (ct, iv, sealed) = python_encapsulate("768", &ek);
            let key = ok(t.session.decapsulate_key(&Mechanism::MlKem, private, &aes(32), &ct), "C_DecapsulateKey");
            assert_eq!(ok(gcm_open(&t, key, &iv, &sealed), "C_Decrypt of Python's AES-GCM"), MSG, "the shared secret is Python's");

            // The token to itself: encapsulate, decapsulate, the two AES keys are one.
            let (ct, sender) = ok(t.session.encapsulate_key(&Mechanism::MlKem, public, &aes(16)), "C_EncapsulateKey");
            assert_eq!(ct.len(), 1088, "an ML-KEM-768 ciphertext");
            let receiver = ok(t.session.decapsulate_key(&Mechanism::MlKem, private, &aes(16), &ct), "C_DecapsulateKey");
            let mut iv = [7u8; 12];
            let m = Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).expect("GCM parameters"));
            let sealed = ok(t.session.encrypt(&m, sender, MSG), "C_Encrypt with the encapsulated key");
            assert_eq!(ok(gcm_open(&t, receiver, &[7u8; 12], &sealed), "C_Decrypt with the decapsulated key"), MSG);
        }
    }
}
