//! Keys survive C_Finalize/C_Initialize and process boundaries; nothing secret
//! reaches the disk in the clear.

mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki_sys::*;
use sha2::Digest;

const MSG: &[u8] = b"persistent";

/// Close the session and C_Finalize, as an application does at exit.
fn finalize(t: Token) {
    let Token {
        session, pkcs11, ..
    } = t;
    drop(session);
    ok(pkcs11.finalize(), "C_Finalize");
}

p11_test! {
    fn key_survives_finalize_and_initialize() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "durable");
        let point = t.ec_point(k.public);
        finalize(t);
        let t = Token::reopen_existing();
        let found = t.find_private_by_label("durable");
        assert_eq!(found.len(), 1, "the key is found again after C_Finalize/C_Initialize");
        let pubs = t.find(&[class(ObjectClass::PUBLIC_KEY), label("durable")]);
        assert_eq!(pubs.len(), 1, "and its public key");
        assert_eq!(t.ec_point(pubs[0]), point, "with the same public point");
        let digest = sha2::Sha256::digest(MSG);
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, found[0], &digest), "C_Sign after re-initialisation");
        verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("signature by p256 with the original public key");
    }
}

p11_test! {
    fn key_made_in_one_process_signs_in_another() {
        match phase().as_deref() {
            None => {
                let t = Token::fresh();
                let k = t.keypair(Kp::Rsa(2048), "shared");
                let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
                std::fs::write(store_dir().join("modulus.bin"), n).expect("hand the modulus to the second process");
                finalize(t);
                respawn_phase(concat!(module_path!(), "::key_made_in_one_process_signs_in_another"), "second");
            }
            Some(_) => {
                let t = Token::reopen_existing();
                let keys = t.find(&[class(ObjectClass::PRIVATE_KEY), key_type(KeyType::RSA), label("shared")]);
                assert_eq!(keys.len(), 1, "the second process finds the first process's key");
                let pubs = t.find(&[class(ObjectClass::PUBLIC_KEY), label("shared")]);
                let n = std::fs::read(store_dir().join("modulus.bin")).expect("modulus from the first process");
                assert_eq!(t.attr(pubs[0], CKA_MODULUS, "CKA_MODULUS"), n, "same key");
                let sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcs, keys[0], MSG), "C_Sign in the second process");
                verify_rs256(&t.rsa_public(pubs[0]), MSG, &sig).expect("RS256 by the rsa crate");
            }
        }
    }
}

p11_test! {
    fn store_holds_no_key_byte_or_pin_in_the_clear() {
        softmhsm_only!("scans softmhsm's store files");
        let t = Token::fresh();
        // A known AES key, imported: the one way to know secret bytes the token holds.
        let secret: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        ok(
            t.session.create_object(&[
                class(ObjectClass::SECRET_KEY),
                key_type(KeyType::AES),
                Attribute::Token(true),
                Attribute::Value(secret.clone()),
                label("known"),
            ]),
            "C_CreateObject(AES, known value)",
        );
        t.keypair(Kp::Ec(OID_P256), "generated");
        finalize(t);
        let mut scanned = 0;
        for entry in std::fs::read_dir(store_dir()).expect("read store dir") {
            let path = entry.expect("dir entry").path();
            if !path.is_file() || path.extension().is_some_and(|e| e == "bin") {
                continue;
            }
            // SQLite may remove its -wal/-shm files between the listing and the read.
            let bytes = match std::fs::read(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r.expect("read store file"),
            };
            scanned += bytes.len();
            for (what, needle) in [("AES key", &secret[..]), ("AES key half", &secret[..16]), ("user PIN", USER_PIN.as_bytes()), ("SO PIN", SO_PIN.as_bytes())] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{what} found in the clear in {}", path.display());
            }
        }
        assert!(scanned > 0, "the scan read the store");
    }
}
