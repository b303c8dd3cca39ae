//! Keys persist across C_Finalize/C_Initialize and across processes; the
//! store never holds key material or PINs in the clear.

#[macro_use]
mod common;

use std::path::Path;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki_sys::*;
use rand_core::RngCore;
use sha2::Digest;

fn sign_and_check(t: &Token, private: cryptoki::object::ObjectHandle, point: &[u8]) {
    let digest = sha2::Sha256::digest(b"still here");
    let sig = ok(
        t.session.sign(&Mechanism::Ecdsa, private, &digest),
        "C_Sign with the persisted key",
    );
    verify_ecdsa_prehash(OID_P256, point, &digest, &sig)
        .expect("persisted key must sign under the same public key");
}

p11_test! {
    fn key_survives_finalize_and_initialize() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "durable");
        let point = t.ec_point(k.public);
        let Token { session, pkcs11, raw, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        drop(raw);
        let t = Token::reopen_existing();
        let found = t.find_private_by_label("durable");
        assert_eq!(found.len(), 1, "the key must be found after C_Finalize/C_Initialize");
        let public = t.find(&[Attribute::Class(ObjectClass::PUBLIC_KEY), label("durable")]);
        assert_eq!(public.len(), 1, "the public key must be found after C_Finalize/C_Initialize");
        assert_eq!(t.ec_point(public[0]), point, "CKA_EC_POINT must be unchanged");
        sign_and_check(&t, found[0], &point);
    }
}

p11_test! {
    fn key_survives_a_new_process() {
        let handoff = store_dir().parent().expect("store dir has a parent").join("point.bin");
        if phase().as_deref() == Some("reader") {
            let point = std::fs::read(&handoff).expect("point written by the first process");
            let t = Token::reopen_existing();
            let found = t.find_private_by_label("durable");
            assert_eq!(found.len(), 1, "a key made by another process must be found");
            sign_and_check(&t, found[0], &point);
            return;
        }
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "durable");
        std::fs::write(&handoff, t.ec_point(k.public)).expect("hand the public point over");
        respawn_phase(concat!(module_path!(), "::key_survives_a_new_process"), "reader");
    }
}

p11_test! {
    fn other_process_sees_a_key_made_while_open() {
        // DESIGN §4: readers see other processes' writes without reopening.
        let handoff = store_dir().parent().expect("store dir has a parent").join("point.bin");
        if phase().as_deref() == Some("writer") {
            let t = Token::reopen_existing();
            let k = t.keypair(Kp::Ec(OID_P256), "late");
            std::fs::write(&handoff, t.ec_point(k.public)).expect("hand the public point over");
            return;
        }
        let t = Token::fresh();
        assert!(t.find_private_by_label("late").is_empty(), "no key yet");
        respawn_phase(concat!(module_path!(), "::other_process_sees_a_key_made_while_open"), "writer");
        let point = std::fs::read(&handoff).expect("point written by the writer process");
        let found = t.find_private_by_label("late");
        assert_eq!(found.len(), 1, "a key made by another process must be visible to an open session");
        sign_and_check(&t, found[0], &point);
    }
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read store dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Asserts no file under the store contains `needle` (raw or hex).
#[track_caller]
fn assert_store_lacks(needle: &[u8], what: &str) {
    let mut files = Vec::new();
    all_files(&store_dir(), &mut files);
    assert!(!files.is_empty(), "the store directory is empty");
    let hex_needle = hex(needle).into_bytes();
    for f in files {
        let bytes = std::fs::read(&f).expect("read store file");
        for (n, form) in [(needle, "raw"), (&hex_needle[..], "hex")] {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "{what} appears in the clear ({form}) in {}",
                f.display()
            );
        }
    }
}

p11_test! {
    fn store_never_holds_pins_in_the_clear() {
        softmhsm_only!("SoftHSMv2's store layout is not softmhsm's");
        let t = Token::fresh();
        let user_pin = format!("hygiene-{:016x}", rand_core::OsRng.next_u64());
        ok(t.session.set_pin(&pin(USER_PIN), &pin(&user_pin)), "C_SetPIN");
        t.keypair(Kp::Ec(OID_P256), "ec");
        t.aes(32, "aes");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        // The audit log (login, PIN change, key creation events) is among the files searched.
        let audit = std::fs::read_to_string(store_dir().join("audit-softmhsm.jsonl")).expect("the audit log exists");
        assert!(audit.contains(r#""operationName":"PinChange""#), "the PIN change was audited: {audit}");
        assert_store_lacks(user_pin.as_bytes(), "the user PIN");
        assert_store_lacks(SO_PIN.as_bytes(), "the SO PIN");
    }
}

p11_test! {
    fn store_never_holds_key_material_in_the_clear() {
        softmhsm_only!("SoftHSMv2's store layout is not softmhsm's");
        // The library never exports private material, so import a known AES key.
        let t = Token::fresh();
        let mut known = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut known);
        t.keypair(Kp::Ec(OID_P256), "ec");
        t.aes(32, "aes");
        let imported = ok(
            t.session.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"known".to_vec()),
                Attribute::Value(known.to_vec()),
            ]),
            "C_CreateObject(CKO_SECRET_KEY, AES, known CKA_VALUE)",
        );
        assert!(!t.attr_bool(imported, CKA_LOCAL, "CKA_LOCAL"), "an imported key is not CKA_LOCAL");
        assert!(t.attr_bool(imported, CKA_SENSITIVE, "CKA_SENSITIVE"), "an imported key is CKA_SENSITIVE");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        assert_store_lacks(&known, "the imported AES key");
    }
}

p11_test! {
    fn a_label_ending_in_a_tab_keeps_every_key_usable_after_restart() {
        // The token label is the kid's authority, the AAD of every sealed key:
        // it has one spelling (the store row's), whatever blanks end it.
        softmhsm_only!("the kid and its AAD are softmhsm's");
        let p = load_initialized();
        let slot = uninitialized_slot(&p);
        ok(p.init_token(slot, &pin(SO_PIN), "tabbed\t"), "C_InitToken(label ending in a tab)");
        {
            let so = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
            ok(so.login(cryptoki::session::UserType::So, Some(&pin(SO_PIN))), "C_Login(SO)");
            ok(so.init_pin(&pin(USER_PIN)), "C_InitPIN");
        }
        let point = {
            let s = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
            ok(s.login(cryptoki::session::UserType::User, Some(&pin(USER_PIN))), "C_Login(USER)");
            let (public, _) = ok(
                s.generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &Token::pub_template(Kp::Ec(OID_P256), "k", true),
                    &Token::priv_template("k", true),
                ),
                "C_GenerateKeyPair",
            );
            let point = ok(s.get_attributes(public, &[cryptoki::object::AttributeType::EcPoint]), "CKA_EC_POINT");
            let Attribute::EcPoint(point) = &point[0] else { panic!("CKA_EC_POINT") };
            der_octet_string(point).unwrap().to_vec()
        };
        ok(p.finalize(), "C_Finalize");
        let p = load_initialized();
        let s = ok(p.open_rw_session(slot), "C_OpenSession(RW) after restart");
        ok(s.login(cryptoki::session::UserType::User, Some(&pin(USER_PIN))), "C_Login(USER)");
        let found = ok(
            s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), label("k")]),
            "C_FindObjects",
        );
        assert_eq!(found.len(), 1);
        let digest = sha2::Sha256::digest(b"tabbed");
        let sig = ok(s.sign(&Mechanism::Ecdsa, found[0], &digest), "C_Sign after restart (was CKR_DEVICE_ERROR)");
        verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("the same key signs");
    }
}
