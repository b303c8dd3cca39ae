//! Certificates, data objects, visibility, C_FindObjects and softmhsm's
//! key versioning.

#[macro_use]
mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, CertificateType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki_sys::*;
use sha2::Digest;

/// A fresh self-signed X.509 certificate (DER) made by `openssl req -x509`.
fn make_certificate() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("cert.der");
    let key = dir.path().join("key.pem");
    run_cmd(
        "openssl",
        &[
            "req".into(),
            "-x509".into(),
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-256".into(),
            "-nodes".into(),
            "-subj".into(),
            "/CN=softmhsm test".into(),
            "-days".into(),
            "1".into(),
            "-outform".into(),
            "DER".into(),
            "-keyout".into(),
            key.into_os_string(),
            "-out".into(),
            cert.clone().into_os_string(),
        ],
    );
    std::fs::read(cert).expect("read generated certificate")
}

/// Splits one DER TLV off `der`: (whole TLV, contents, rest).
fn tlv(der: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let l0 = der[1];
    let (len, hdr) = if l0 < 0x80 {
        (l0 as usize, 2)
    } else {
        let n = (l0 & 0x7f) as usize;
        (
            der[2..2 + n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize),
            2 + n,
        )
    };
    (&der[..hdr + len], &der[hdr..hdr + len], &der[hdr + len..])
}

/// The DER subject Name of a certificate.
fn subject_of(cert: &[u8]) -> Vec<u8> {
    let (_, cert_body, _) = tlv(cert);
    let (_, tbs, _) = tlv(cert_body);
    let mut rest = tbs;
    if rest[0] == 0xa0 {
        rest = tlv(rest).2; // [0] version
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest).2;
    }
    tlv(rest).0.to_vec()
}

fn cert_template(cert: &[u8], token: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(token),
        Attribute::Label(b"cert".to_vec()),
        Attribute::Id(b"cert-id".to_vec()),
        Attribute::Subject(subject_of(cert)),
        Attribute::Value(cert.to_vec()),
    ]
}

fn data_template(token: bool, label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Private(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Application(b"softmhsm tests".to_vec()),
        Attribute::Value(b"some data".to_vec()),
    ]
}

p11_test! {
    fn certificate_round_trips_as_token_and_session_object() {
        let t = Token::fresh();
        let cert = make_certificate();
        for token in [true, false] {
            let o = ok(t.session.create_object(&cert_template(&cert, token)), &format!("C_CreateObject(CKO_CERTIFICATE, CKA_TOKEN={token})"));
            assert_eq!(t.attr(o, CKA_VALUE, "CKA_VALUE"), cert, "certificate CKA_VALUE read back");
            assert_eq!(t.attr_ulong(o, CKA_CLASS, "CKA_CLASS"), CKO_CERTIFICATE);
            assert_eq!(t.attr_ulong(o, CKA_CERTIFICATE_TYPE, "CKA_CERTIFICATE_TYPE"), CKC_X_509);
            assert_eq!(t.attr_bool(o, CKA_TOKEN, "CKA_TOKEN"), token, "CKA_TOKEN");
            assert!(!t.attr_bool(o, CKA_PRIVATE, "CKA_PRIVATE"), "certificates are public objects");
            let found = t.find(&[Attribute::Class(ObjectClass::CERTIFICATE), Attribute::Token(token)]);
            assert_eq!(found, vec![o], "find by class must return the certificate");
            ok(t.session.destroy_object(o), "C_DestroyObject(certificate)");
            assert!(t.find(&[Attribute::Class(ObjectClass::CERTIFICATE)]).is_empty(), "destroyed certificate still found");
            assert_rv(t.session.get_attributes(o, &[cryptoki::object::AttributeType::Value]), CKR_OBJECT_HANDLE_INVALID, "C_GetAttributeValue on a destroyed object");
        }
    }
}

p11_test! {
    fn data_object_round_trips_as_token_and_session_object() {
        let t = Token::fresh();
        for token in [true, false] {
            let o = ok(t.session.create_object(&data_template(token, "data")), &format!("C_CreateObject(CKO_DATA, CKA_TOKEN={token})"));
            assert_eq!(t.attr(o, CKA_VALUE, "CKA_VALUE"), b"some data", "CKO_DATA CKA_VALUE");
            assert_eq!(t.attr(o, CKA_APPLICATION, "CKA_APPLICATION"), b"softmhsm tests", "CKA_APPLICATION");
            assert_eq!(t.attr_bool(o, CKA_TOKEN, "CKA_TOKEN"), token, "CKA_TOKEN");
            ok(t.session.destroy_object(o), "C_DestroyObject(data)");
            assert!(t.find(&[Attribute::Class(ObjectClass::DATA)]).is_empty(), "destroyed data object still found");
        }
    }
}

p11_test! {
    fn session_objects_vanish_with_their_session() {
        let t = Token::fresh();
        let other = ok(t.pkcs11.open_rw_session(t.slot), "C_OpenSession");
        let session_obj = ok(other.create_object(&data_template(false, "mine")), "C_CreateObject(session object)");
        let key = ok(other.generate_key(&Mechanism::AesKeyGen, &Token::aes_template(32, "mine", false)), "C_GenerateKey(session key)");
        let token_obj = ok(other.create_object(&data_template(true, "kept")), "C_CreateObject(token object)");
        assert_eq!(t.find(&[label("mine")]).len(), 2, "session objects are visible to other sessions of the application");
        ok(other.close(), "C_CloseSession");
        assert!(t.find(&[label("mine")]).is_empty(), "session objects must vanish after C_CloseSession");
        for o in [session_obj, key] {
            assert!(t.try_attr(o, CKA_CLASS).is_err(), "handle of a vanished session object still answers");
        }
        assert_eq!(t.find(&[label("kept")]), vec![token_obj], "token objects must survive C_CloseSession");
    }
}

p11_test! {
    fn public_keys_are_readable_without_login() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
        ok(t.session.logout(), "C_Logout");
        let found = t.find(&[Attribute::Class(ObjectClass::PUBLIC_KEY), label("rsa")]);
        assert_eq!(found.len(), 1, "public key must be found without login");
        assert!(!t.attr_bool(found[0], CKA_PRIVATE, "CKA_PRIVATE"), "public keys must have CKA_PRIVATE=FALSE");
        assert_eq!(t.attr(found[0], CKA_MODULUS, "CKA_MODULUS"), n, "CKA_MODULUS readable without login");
    }
}

p11_test! {
    fn private_keys_are_invisible_without_login() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        t.aes(32, "aes");
        ok(t.session.logout(), "C_Logout");
        assert!(t.find(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]).is_empty(), "private keys must not be found without login");
        assert!(t.find(&[Attribute::Class(ObjectClass::SECRET_KEY)]).is_empty(), "secret keys must not be found without login");
        assert_eq!(t.find(&[]), t.find(&[Attribute::Class(ObjectClass::PUBLIC_KEY)]), "only the public key is visible without login");
        assert!(t.try_attr(k.private, CKA_LABEL).is_err(), "a private key's attributes must not be readable without login");
    }
}

p11_test! {
    fn find_matches_label_id_class_and_key_type() {
        let t = Token::fresh();
        let mut public = Token::pub_template(Kp::Ec(OID_P256), "ec", true);
        public.push(Attribute::Id(b"ec-id".to_vec()));
        let mut private = Token::priv_template("ec", true);
        private.push(Attribute::Id(b"ec-id".to_vec()));
        let ec = ok(t.try_keypair_tpl(Kp::Ec(OID_P256), &public, &private), "C_GenerateKeyPair");
        let rsa = t.keypair(Kp::Rsa(2048), "rsa");
        let aes = t.aes(32, "aes");
        let data = ok(t.session.create_object(&data_template(true, "data")), "C_CreateObject(CKO_DATA)");
        let sorted = |mut v: Vec<cryptoki::object::ObjectHandle>| {
            v.sort_by_key(|h| h.handle());
            v
        };
        assert_eq!(sorted(t.find(&[label("ec")])), sorted(vec![ec.public, ec.private]), "find by CKA_LABEL");
        assert_eq!(sorted(t.find(&[Attribute::Id(b"ec-id".to_vec())])), sorted(vec![ec.public, ec.private]), "find by CKA_ID");
        assert_eq!(sorted(t.find(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])), sorted(vec![ec.private, rsa.private]), "find by CKA_CLASS");
        assert_eq!(sorted(t.find(&[Attribute::KeyType(KeyType::RSA)])), sorted(vec![rsa.public, rsa.private]), "find by CKA_KEY_TYPE");
        assert_eq!(t.find(&[Attribute::KeyType(KeyType::AES)]), vec![aes], "find by CKA_KEY_TYPE AES");
        assert_eq!(
            sorted(t.find(&[])),
            sorted(vec![ec.public, ec.private, rsa.public, rsa.private, aes, data]),
            "an empty template finds every visible object"
        );
        assert!(t.find(&[label("nothing")]).is_empty(), "an unmatched label finds nothing");
    }
}

p11_test! {
    fn find_objects_without_init_is_not_initialized() {
        let t = Token::fresh();
        let mut handles = [0 as CK_OBJECT_HANDLE; 4];
        let mut n: CK_ULONG = 0;
        let rv = unsafe { p11!(t.raw, C_FindObjects, t.h(), handles.as_mut_ptr(), 4, &mut n) };
        check(rv, CKR_OPERATION_NOT_INITIALIZED, "C_FindObjects without C_FindObjectsInit");
        let rv = unsafe { p11!(t.raw, C_FindObjectsFinal, t.h()) };
        check(rv, CKR_OPERATION_NOT_INITIALIZED, "C_FindObjectsFinal without C_FindObjectsInit");
    }
}

p11_test! {
    fn second_find_objects_init_is_refused_while_active() {
        let t = Token::fresh();
        let rv = unsafe { p11!(t.raw, C_FindObjectsInit, t.h(), std::ptr::null_mut(), 0) };
        check(rv, CKR_OK, "C_FindObjectsInit");
        let rv = unsafe { p11!(t.raw, C_FindObjectsInit, t.h(), std::ptr::null_mut(), 0) };
        check(rv, CKR_OPERATION_ACTIVE, "second C_FindObjectsInit");
        let rv = unsafe { p11!(t.raw, C_FindObjectsFinal, t.h()) };
        check(rv, CKR_OK, "C_FindObjectsFinal");
    }
}

// ---------------------------------------------------------------------------
// softmhsm versioning (DESIGN §2)
// ---------------------------------------------------------------------------

fn version_of(t: &Token, o: cryptoki::object::ObjectHandle) -> Vec<u8> {
    t.attr(o, CKA_SOFTMHSM_VERSION, "CKA_SOFTMHSM_VERSION")
}

p11_test! {
    fn same_label_makes_a_new_current_version() {
        softmhsm_only!("key versioning is softmhsm's Managed HSM rule");
        let t = Token::fresh();
        let first = t.keypair(Kp::Ec(OID_P256), "rotating");
        let second = t.keypair(Kp::Ec(OID_P256), "rotating");
        let found = t.find_private_by_label("rotating");
        assert_eq!(found, vec![second.private], "find by label must return exactly the new version's private key");
        assert_eq!(t.find(&[Attribute::Class(ObjectClass::PUBLIC_KEY), label("rotating")]), vec![second.public], "find by label must return the new public key only");
        let (v1, v2) = (version_of(&t, first.private), version_of(&t, second.private));
        assert_ne!(v1, v2, "a second key under one name must get a new CKA_SOFTMHSM_VERSION");
        for v in [&v1, &v2] {
            assert!(v.len() == 32 && v.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)), "version must be 32 lowercase hex, got {:?}", String::from_utf8_lossy(v));
        }
        assert_eq!(t.attr(second.private, CKA_SOFTMHSM_NAME, "CKA_SOFTMHSM_NAME"), b"rotating", "CKA_SOFTMHSM_NAME must equal a valid label");
        assert_eq!(version_of(&t, second.public), v2, "public and private key of a version share the version id");
        assert!(t.attr_bool(second.private, CKA_SOFTMHSM_CURRENT, "CKA_SOFTMHSM_CURRENT"), "new version is current");
        assert!(!t.attr_bool(first.private, CKA_SOFTMHSM_CURRENT, "CKA_SOFTMHSM_CURRENT"), "old version is not current");
    }
}

p11_test! {
    fn old_version_is_found_by_version_and_still_signs() {
        softmhsm_only!("key versioning is softmhsm's Managed HSM rule");
        let t = Token::fresh();
        let first = t.keypair(Kp::Ec(OID_P256), "rotating");
        let point = t.ec_point(first.public);
        let v1 = version_of(&t, first.private);
        t.keypair(Kp::Ec(OID_P256), "rotating");
        let found = t.find(&[Attribute::Class(ObjectClass::PRIVATE_KEY), vendor(CKA_SOFTMHSM_VERSION, &v1)]);
        assert_eq!(found, vec![first.private], "a template with the old CKA_SOFTMHSM_VERSION must find the old version");
        let digest = sha2::Sha256::digest(b"signed by the old version");
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, found[0], &digest), "C_Sign with the old version");
        verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("old version's signature must verify under its own public key");
    }
}

p11_test! {
    fn an_enumeration_lists_older_pair_versions_before_the_current_ones() {
        softmhsm_only!("key versioning is softmhsm's Managed HSM rule (D3: libp11 enumerates by class)");
        let t = Token::fresh();
        let v1 = t.keypair(Kp::Ec(OID_P256), "web");
        let other = t.keypair(Kp::Ec(OID_P256), "api");
        let v2 = t.keypair(Kp::Ec(OID_P256), "web");
        let v3 = t.keypair(Kp::Ec(OID_P256), "web");
        let all = t.find(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]);
        assert_eq!(all.len(), 4, "an enumeration by class lists every version of a key pair: {all:?}");
        assert_eq!(all[..2].to_vec(), vec![v1.private, v2.private], "older versions come first, oldest first");
        let mut current: Vec<_> = all[2..].to_vec();
        current.sort_by_key(|h| h.handle());
        let mut expected = vec![other.private, v3.private];
        expected.sort_by_key(|h| h.handle());
        assert_eq!(current, expected, "the current versions come last (libp11 keeps the last label match: the current one)");
        let publics = t.find(&[Attribute::Class(ObjectClass::PUBLIC_KEY)]);
        assert_eq!(publics.len(), 4, "public halves are enumerated the same way: {publics:?}");
        assert_eq!(t.find_private_by_label("web"), vec![v3.private], "a template naming the key still finds the current version only");
        assert_eq!(t.find(&[Attribute::Class(ObjectClass::PRIVATE_KEY), vendor(CKA_SOFTMHSM_NAME, b"web")]), vec![v3.private], "so does one naming it by CKA_SOFTMHSM_NAME");
    }
}

p11_test! {
    fn an_enumeration_lists_only_the_current_version_of_a_secret_key() {
        softmhsm_only!("key versioning is softmhsm's Managed HSM rule (Java's KeyStore refuses two secret keys sharing a label)");
        let t = Token::fresh();
        let first = t.aes(32, "wrapping");
        let second = t.aes(32, "wrapping");
        assert_ne!(first, second, "a second AES key under one label is a new version");
        assert_eq!(t.find(&[Attribute::Class(ObjectClass::SECRET_KEY)]), vec![second], "an enumeration of secret keys lists the current version only");
        let v1 = version_of(&t, first);
        assert_eq!(t.find(&[Attribute::Class(ObjectClass::SECRET_KEY), vendor(CKA_SOFTMHSM_VERSION, &v1)]), vec![first], "the older version is still found by its version");
    }
}

p11_test! {
    fn label_outside_the_naming_rule_gets_a_generated_name() {
        softmhsm_only!("Managed HSM naming is softmhsm's rule");
        let t = Token::fresh();
        for given in ["my key", "my_key", &"k".repeat(128)] {
            let k = t.keypair(Kp::Ec(OID_P256), given);
            assert_eq!(t.attr(k.private, CKA_LABEL, "CKA_LABEL"), given.as_bytes(), "CKA_LABEL must stay exactly as given");
            let name = String::from_utf8(t.attr(k.private, CKA_SOFTMHSM_NAME, "CKA_SOFTMHSM_NAME")).expect("name is UTF-8");
            let hex_part = name.strip_prefix("p11-").unwrap_or_else(|| panic!("label {given:?} must get a p11-<hex> name, got {name:?}"));
            assert!(hex_part.len() == 32 && hex_part.bytes().all(|c| c.is_ascii_hexdigit()), "generated name must be p11-<32 hex>, got {name:?}");
            assert_eq!(t.find_private_by_label(given), vec![k.private], "find by the given label");
        }
    }
}

p11_test! {
    fn session_keys_with_one_label_are_independent() {
        let t = Token::fresh();
        let a = ok(t.try_keypair(Kp::Ec(OID_P256), "dup", false), "C_GenerateKeyPair(session key)");
        let b = ok(t.try_keypair(Kp::Ec(OID_P256), "dup", false), "C_GenerateKeyPair(second session key)");
        let mut found = t.find_private_by_label("dup");
        found.sort_by_key(|h| h.handle());
        let mut expected = vec![a.private, b.private];
        expected.sort_by_key(|h| h.handle());
        assert_eq!(found, expected, "session keys with the same label must be distinct objects");
        assert_ne!(t.ec_point(a.public), t.ec_point(b.public), "distinct key material");
    }
}

p11_test! {
    fn versioning_needs_a_login_to_see_private_versions() {
        softmhsm_only!("key versioning is softmhsm's Managed HSM rule");
        let t = Token::fresh();
        t.keypair(Kp::Ec(OID_P256), "rotating");
        t.keypair(Kp::Ec(OID_P256), "rotating");
        ok(t.session.logout(), "C_Logout");
        assert!(t.find_private_by_label("rotating").is_empty(), "private versions are invisible without login");
        ok(t.session.login(UserType::User, Some(&pin(USER_PIN))), "C_Login");
        assert_eq!(t.find_private_by_label("rotating").len(), 1, "exactly the current version after login");
    }
}
