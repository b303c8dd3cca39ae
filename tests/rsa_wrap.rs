//! The Managed HSM's RSA wrapKey/unwrapKey of bytes the caller holds (a DEK):
//! `C_Encrypt`/`C_Decrypt` with `CKM_RSA_PKCS` (RSA1_5) and `CKM_RSA_PKCS_OAEP`
//! (RSA-OAEP with SHA-1, RSA-OAEP-256) on a key that has `CKA_WRAP`/`CKA_UNWRAP`
//! but not `CKA_ENCRYPT`/`CKA_DECRYPT`, interoperating with `openssl pkeyutl`
//! both ways, and audited as KeyWrap/KeyUnwrap.

#[macro_use]
mod common;
mod byok_support;

use byok_support::openssl;
use common::*;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki_sys::*;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::Value;
use std::path::Path;

const DEK: &[u8; 32] = b"a data-encryption key, 32 bytes!";

/// One RSA wrapping algorithm: the PKCS#11 mechanism and `openssl pkeyutl` options.
struct Alg {
    name: &'static str,
    mech: Mechanism<'static>,
    openssl: &'static [&'static str],
}

fn algs() -> Vec<Alg> {
    let oaep =
        |h, mgf| Mechanism::RsaPkcsOaep(PkcsOaepParams::new(h, mgf, PkcsOaepSource::empty()));
    vec![
        Alg {
            name: "RSA1_5",
            mech: Mechanism::RsaPkcs,
            openssl: &["-pkeyopt", "rsa_padding_mode:pkcs1"],
        },
        Alg {
            name: "RSA-OAEP",
            mech: oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            openssl: &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha1",
                "-pkeyopt",
                "rsa_mgf1_md:sha1",
            ],
        },
        Alg {
            name: "RSA-OAEP-256",
            mech: oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            openssl: &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ],
        },
    ]
}

/// An RSA-2048 key made by openssl (`k.pem`, `pub.pem` in `dir`), imported as
/// a token key whose private half unwraps but does not decrypt and whose
/// public half wraps but does not encrypt. Returns (public, private).
fn wrap_only_key(t: &Token, dir: &Path, name: &str) -> (ObjectHandle, ObjectHandle) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "k.pem",
        ],
    );
    openssl(dir, &["pkey", "-in", "k.pem", "-pubout", "-out", "pub.pem"]);
    let pem = std::fs::read_to_string(dir.join("k.pem")).expect("k.pem");
    let k = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).expect("openssl's key parses");
    let private = ok(
        t.session.create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Label(name.as_bytes().to_vec()),
            Attribute::Modulus(k.n().to_bytes_be()),
            Attribute::PublicExponent(k.e().to_bytes_be()),
            Attribute::PrivateExponent(k.d().to_bytes_be()),
            Attribute::Prime1(k.primes()[0].to_bytes_be()),
            Attribute::Prime2(k.primes()[1].to_bytes_be()),
            Attribute::Decrypt(false),
            Attribute::Unwrap(true),
            Attribute::Sign(false),
        ]),
        "C_CreateObject(RSA private key, unwrap only)",
    );
    let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label(name)]);
    assert_eq!(public.len(), 1, "the imported key's public half");
    ok(
        t.session
            .update_attributes(public[0], &[Attribute::Encrypt(false)]),
        "C_SetAttributeValue(CKA_ENCRYPT=FALSE)",
    );
    assert!(
        t.attr_bool(public[0], CKA_WRAP, "CKA_WRAP")
            && !t.attr_bool(public[0], CKA_ENCRYPT, "CKA_ENCRYPT")
    );
    assert!(
        t.attr_bool(private, CKA_UNWRAP, "CKA_UNWRAP")
            && !t.attr_bool(private, CKA_DECRYPT, "CKA_DECRYPT")
    );
    (public[0], private)
}

p11_test! {
    fn wrap_only_rsa_key_wraps_caller_bytes_for_openssl() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Token::fresh();
        let (public, _) = wrap_only_key(&t, dir.path(), "kek");
        for a in algs() {
            let wrapped = ok(t.session.encrypt(&a.mech, public, DEK), &format!("C_Encrypt({}) on a wrap-only key", a.name));
            assert_eq!(wrapped.len(), 256, "{}: one modulus-sized block", a.name);
            std::fs::write(dir.path().join("wrapped.bin"), &wrapped).expect("write");
            let mut args = vec!["pkeyutl", "-decrypt", "-inkey", "k.pem", "-in", "wrapped.bin"];
            args.extend_from_slice(a.openssl);
            assert_eq!(openssl(dir.path(), &args), DEK, "{}: openssl unwraps what the token wrapped", a.name);
        }
    }
}

p11_test! {
    fn unwrap_only_rsa_key_unwraps_what_openssl_wrapped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Token::fresh();
        let (_, private) = wrap_only_key(&t, dir.path(), "kek");
        std::fs::write(dir.path().join("dek.bin"), DEK).expect("write");
        for a in algs() {
            let mut args = vec!["pkeyutl", "-encrypt", "-pubin", "-inkey", "pub.pem", "-in", "dek.bin"];
            args.extend_from_slice(a.openssl);
            let wrapped = openssl(dir.path(), &args);
            let dek = ok(t.session.decrypt(&a.mech, private, &wrapped), &format!("C_Decrypt({}) on an unwrap-only key", a.name));
            assert_eq!(dek, DEK, "{}: the token unwraps what openssl wrapped", a.name);
        }
    }
}

p11_test! {
    fn rsa_key_without_encrypt_or_wrap_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Token::fresh();
        let (public, private) = wrap_only_key(&t, dir.path(), "kek");
        ok(t.session.update_attributes(public, &[Attribute::Wrap(false)]), "C_SetAttributeValue(CKA_WRAP=FALSE)");
        ok(t.session.update_attributes(private, &[Attribute::Unwrap(false)]), "C_SetAttributeValue(CKA_UNWRAP=FALSE)");
        for a in algs() {
            assert_rv(t.session.encrypt(&a.mech, public, DEK), CKR_KEY_FUNCTION_NOT_PERMITTED, &format!("C_EncryptInit({}) without encrypt or wrapKey", a.name));
            assert_rv(t.session.decrypt(&a.mech, private, &[0u8; 256]), CKR_KEY_FUNCTION_NOT_PERMITTED, &format!("C_DecryptInit({}) without decrypt or unwrapKey", a.name));
        }
    }
}

p11_test! {
    fn refused_rsa_wrap_and_unwrap_are_audited_as_keywrap_and_keyunwrap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Token::fresh();
        let (public, private) = wrap_only_key(&t, dir.path(), "kek");
        // A disabled key refuses everything: the refusals name the operation.
        ok(t.session.update_attributes(private, &[vendor(CKA_SOFTMHSM_BASE + 0x04, &[CK_FALSE])]), "C_SetAttributeValue(CKA_SOFTMHSM_ENABLED=FALSE)");
        let oaep = &algs()[2].mech;
        assert_rv(t.session.encrypt(oaep, public, DEK), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_EncryptInit on a disabled wrap-only key");
        assert_rv(t.session.decrypt(oaep, private, &[0u8; 256]), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_DecryptInit on a disabled unwrap-only key");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        let text = std::fs::read_to_string(store_dir().join("audit-softmhsm.jsonl")).expect("the audit log");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        let refused = |op: &str| lines.iter().filter(|l| l["operationName"] == op && l["resultType"] == "Failure").count();
        assert_eq!(refused("KeyWrap"), 1, "C_EncryptInit on a wrap-only key is wrapKey: {text}");
        assert_eq!(refused("KeyUnwrap"), 1, "C_DecryptInit on an unwrap-only key is unwrapKey: {text}");
        assert_eq!(refused("KeyEncrypt") + refused("KeyDecrypt"), 0, "no KeyEncrypt/KeyDecrypt: {text}");
        // The mechanism registry names the Managed HSM algorithm in the log.
        for l in lines.iter().filter(|l| l["operationName"] == "KeyWrap" || l["operationName"] == "KeyUnwrap") {
            assert_eq!(l["algorithm"], "RSA-OAEP-256", "{l}");
        }
    }
}

p11_test! {
    fn expired_unwrap_only_key_still_unwraps_and_no_longer_wraps() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Token::fresh();
        let (public, private) = wrap_only_key(&t, dir.path(), "kek");
        // exp = 1 s after the epoch: long past.
        ok(t.session.update_attributes(private, &[vendor(CKA_SOFTMHSM_BASE + 0x06, &(1 as CK_ULONG).to_ne_bytes())]), "C_SetAttributeValue(CKA_SOFTMHSM_EXP)");
        std::fs::write(dir.path().join("dek.bin"), DEK).expect("write");
        let a = &algs()[1];
        let mut args = vec!["pkeyutl", "-encrypt", "-pubin", "-inkey", "pub.pem", "-in", "dek.bin"];
        args.extend_from_slice(a.openssl);
        let wrapped = openssl(dir.path(), &args);
        assert_eq!(ok(t.session.decrypt(&a.mech, private, &wrapped), "C_Decrypt(RSA-OAEP) on an expired unwrap-only key"), DEK);
        assert_rv(t.session.encrypt(&a.mech, public, DEK), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_EncryptInit(RSA-OAEP) on an expired wrap-only key");
    }
}
