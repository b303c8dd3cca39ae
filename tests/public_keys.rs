//! Session public keys through `C_CreateObject` (`CKO_PUBLIC_KEY`,
//! `CKA_TOKEN=FALSE`): RSA from modulus and exponent, EC from parameters and
//! point (raw or DER), usable for verification and encryption; a token
//! public-only key is refused (a Managed HSM has no public-only keys).
//! Signatures checked by RustCrypto, ciphertexts decrypted by the openssl CLI.

#[macro_use]
mod common;

use common::*;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki_sys::*;
use sha2::Digest;
use std::process::Command;

const MSG: &[u8] = b"verified by a key brought in from outside";

/// The template of a session RSA public key.
fn rsa_template(n: &[u8], e: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Modulus(n.to_vec()),
        Attribute::PublicExponent(e.to_vec()),
    ]
}

/// The template of a session EC public key.
fn ec_template(params: &[u8], point: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(false),
        Attribute::EcParams(params.to_vec()),
        Attribute::EcPoint(point.to_vec()),
    ]
}

/// `C_CreateObject`, asserting success.
#[track_caller]
fn create(t: &Token, tpl: &[Attribute], what: &str) -> ObjectHandle {
    ok(
        t.session.create_object(tpl),
        &format!("C_CreateObject({what})"),
    )
}

/// DER OCTET STRING of `v` (short or one-byte long form).
fn octet_string(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    if v.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(v.len() as u8);
    out.extend_from_slice(v);
    out
}

p11_test! {
    fn session_rsa_public_key_from_modulus_verifies_a_token_signature() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "signer");
        let sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcs, k.private, MSG), "C_Sign");
        let token_public = t.rsa_public(k.public);
        verify_rs256(&token_public, MSG, &sig).expect("the token's signature, checked by the rsa crate");
        let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
        let e = t.attr(k.public, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT");
        let imported = create(&t, &rsa_template(&n, &e), "RSA public key");
        ok(t.session.verify(&Mechanism::Sha256RsaPkcs, imported, MSG, &sig), "C_Verify with the session public key");
        let mut bad = sig.clone();
        bad[0] ^= 0x80;
        assert_rv(t.session.verify(&Mechanism::Sha256RsaPkcs, imported, MSG, &bad), CKR_SIGNATURE_INVALID, "C_Verify of a damaged signature");
        assert_eq!(t.attr_ulong(imported, CKA_CLASS, "CKA_CLASS"), CKO_PUBLIC_KEY);
        assert!(!t.attr_bool(imported, CKA_TOKEN, "CKA_TOKEN"), "a session object");
        assert!(!t.attr_bool(imported, CKA_LOCAL, "CKA_LOCAL"), "brought in, not generated");
        assert_eq!(t.rsa_public(imported), token_public, "the session key reads back the modulus and exponent given");
    }
}

p11_test! {
    fn session_ec_public_key_from_raw_or_der_point_verifies_a_token_signature() {
        let t = Token::fresh();
        for c in CURVES {
            let k = t.keypair(Kp::Ec(c.oid), c.name);
            let digest = sha2_for(c.digest_len, MSG);
            let sig = ok(t.session.sign(&Mechanism::Ecdsa, k.private, &digest), "C_Sign(CKM_ECDSA)");
            let point = t.ec_point(k.public);
            verify_ecdsa_prehash(c.oid, &point, &digest, &sig).expect("the token's signature, checked by RustCrypto");
            for (form, value) in [("raw", point.clone()), ("DER", octet_string(&point))] {
                let imported = create(&t, &ec_template(c.oid, &value), &format!("{} public key, {form} point", c.name));
                ok(t.session.verify(&Mechanism::Ecdsa, imported, &digest, &sig), &format!("C_Verify with the {} session key ({form} point)", c.name));
                let mut bad = sig.clone();
                bad[3] ^= 1;
                assert_rv(t.session.verify(&Mechanism::Ecdsa, imported, &digest, &bad), CKR_SIGNATURE_INVALID, "C_Verify of a damaged signature");
                assert_eq!(t.ec_point(imported), point, "CKA_EC_POINT reads back as DER of the point given");
            }
        }
    }
}

p11_test! {
    fn session_rsa_public_key_encrypts_for_its_private_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pem = dir.path().join("k.pem");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("run openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem.to_str().unwrap()]);
        let modulus = String::from_utf8(run(&["rsa", "-in", "k.pem", "-noout", "-modulus"])).expect("utf-8");
        let n = modulus.trim().strip_prefix("Modulus=").map(|h| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex")).collect::<Vec<u8>>()).expect("Modulus=…");
        let t = Token::fresh();
        let imported = create(&t, &rsa_template(&n, &[1, 0, 1]), "RSA public key of an openssl key");
        let oaep = PkcsOaepParams::new(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, PkcsOaepSource::empty());
        let ct = ok(t.session.encrypt(&Mechanism::RsaPkcsOaep(oaep), imported, MSG), "C_Encrypt(CKM_RSA_PKCS_OAEP SHA-256)");
        std::fs::write(dir.path().join("ct.bin"), &ct).expect("write ciphertext");
        let pt = run(&["pkeyutl", "-decrypt", "-inkey", "k.pem", "-in", "ct.bin", "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"]);
        assert_eq!(pt, MSG, "openssl decrypts what the session public key encrypted");
    }
}

p11_test! {
    fn token_public_key_is_attribute_value_invalid() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "pair");
        let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
        let mut tpl = rsa_template(&n, &[1, 0, 1]);
        tpl.retain(|a| !matches!(a, Attribute::Token(_)));
        tpl.push(Attribute::Token(true));
        let before = t.count_all();
        assert_rv(t.session.create_object(&tpl), CKR_ATTRIBUTE_VALUE_INVALID, "C_CreateObject of a token public key");
        assert_eq!(t.count_all(), before, "the refused call created nothing");
    }
}

p11_test! {
    fn session_public_key_cannot_sign_or_decrypt() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "pair");
        let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
        let imported = create(&t, &rsa_template(&n, &[1, 0, 1]), "RSA public key");
        assert_rv(t.session.sign(&Mechanism::Sha256RsaPkcs, imported, MSG), CKR_KEY_TYPE_INCONSISTENT, "C_SignInit with a public key");
        // Its key_ops hold only the public operations (verify, encrypt, wrapKey).
        assert_rv(t.session.decrypt(&Mechanism::RsaPkcs, imported, &[0u8; 256]), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_DecryptInit with a public-only key");
        assert!(t.attr_bool(imported, CKA_VERIFY, "CKA_VERIFY"), "a public key verifies by default");
        assert!(t.attr_bool(imported, CKA_ENCRYPT, "CKA_ENCRYPT"), "an RSA public key encrypts by default");
    }
}

p11_test! {
    fn ec_point_off_the_curve_is_attribute_value_invalid() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "pair");
        let mut point = t.ec_point(k.public);
        point[64] ^= 1;
        assert_rv(t.session.create_object(&ec_template(OID_P256, &point)), CKR_ATTRIBUTE_VALUE_INVALID, "C_CreateObject with a point off P-256");
        assert_rv(t.session.create_object(&ec_template(OID_P256, &point[..33])), CKR_ATTRIBUTE_VALUE_INVALID, "C_CreateObject with a truncated point");
        assert_rv(t.session.create_object(&ec_template(OID_P224, &point)), CKR_CURVE_NOT_SUPPORTED, "C_CreateObject on P-224");
    }
}

p11_test! {
    fn rsa_public_key_outside_the_managed_hsm_rules_is_refused() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "pair");
        let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
        assert_rv(t.session.create_object(&rsa_template(&n[..128], &[1, 0, 1])), CKR_KEY_SIZE_RANGE, "C_CreateObject of a 1024-bit RSA public key");
        assert_rv(t.session.create_object(&rsa_template(&n, &[3])), CKR_ATTRIBUTE_VALUE_INVALID, "C_CreateObject with e = 3");
        let mut tpl = rsa_template(&n, &[1, 0, 1]);
        tpl.retain(|a| !matches!(a, Attribute::Modulus(_)));
        assert_rv(t.session.create_object(&tpl), CKR_TEMPLATE_INCOMPLETE, "C_CreateObject without CKA_MODULUS");
    }
}

p11_test! {
    fn session_public_key_needs_no_login() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "pair");
        let digest = sha2::Sha256::digest(MSG).to_vec();
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, k.private, &digest), "C_Sign");
        let point = t.ec_point(k.public);
        ok(t.session.logout(), "C_Logout");
        let imported = create(&t, &ec_template(OID_P256, &point), "EC public key without login");
        ok(t.session.verify(&Mechanism::Ecdsa, imported, &digest, &sig), "C_Verify without login");
    }
}

p11_test! {
    fn wrap_only_session_public_key_wraps_caller_bytes_and_nothing_else_encrypts() {
        // The Managed HSM's wrapKey of caller bytes (a DEK) through C_Encrypt on
        // a session public key whose only public ops are verify and wrapKey;
        // openssl unwraps it with the private key. Without wrapKey it refuses.
        let dir = tempfile::tempdir().expect("temp dir");
        let pem = dir.path().join("k.pem");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("run openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem.to_str().unwrap()]);
        let modulus = String::from_utf8(run(&["rsa", "-in", "k.pem", "-noout", "-modulus"])).expect("utf-8");
        let n = modulus.trim().strip_prefix("Modulus=").map(|h| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex")).collect::<Vec<u8>>()).expect("Modulus=…");
        let t = Token::fresh();
        let mut tpl = rsa_template(&n, &[1, 0, 1]);
        tpl.extend([Attribute::Encrypt(false), Attribute::Wrap(true)]);
        let wrap_only = create(&t, &tpl, "wrap-only RSA public key");
        let dek = [0x5au8; 32];
        let ct = ok(t.session.encrypt(&Mechanism::RsaPkcs, wrap_only, &dek), "C_Encrypt(CKM_RSA_PKCS) as wrapKey");
        std::fs::write(dir.path().join("ct.bin"), &ct).expect("write ciphertext");
        let pt = run(&["pkeyutl", "-decrypt", "-inkey", "k.pem", "-in", "ct.bin", "-pkeyopt", "rsa_padding_mode:pkcs1"]);
        assert_eq!(pt, dek, "openssl unwraps what the wrap-only session public key wrapped");
        let mut tpl = rsa_template(&n, &[1, 0, 1]);
        tpl.extend([Attribute::Encrypt(false), Attribute::Wrap(false)]);
        let verify_only = create(&t, &tpl, "verify-only RSA public key");
        assert_rv(t.session.encrypt(&Mechanism::RsaPkcs, verify_only, &dek), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_EncryptInit without encrypt or wrapKey");
    }
}
