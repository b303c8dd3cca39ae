//! `CKA_ALLOWED_MECHANISMS` (PKCS#11 3.0 §4.9): every key reports the
//! mechanisms its type and key_ops allow, a creation template may narrow the
//! list to a subset, and `*Init` with a mechanism outside it is
//! `CKR_MECHANISM_INVALID`. The expected lists are written from DESIGN §3
//! (mechanism → algorithm), not read from the library's tables.

#[macro_use]
mod common;

use common::*;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki_sys::*;

/// `CKA_ALLOWED_MECHANISMS` of an object, decoded.
fn allowed(t: &Token, o: ObjectHandle) -> Vec<CK_MECHANISM_TYPE> {
    let v = t.attr(o, CKA_ALLOWED_MECHANISMS, "CKA_ALLOWED_MECHANISMS");
    assert_eq!(
        v.len() % std::mem::size_of::<CK_ULONG>(),
        0,
        "a CK_MECHANISM_TYPE array"
    );
    v.chunks_exact(std::mem::size_of::<CK_ULONG>())
        .map(|c| CK_ULONG::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// The list, sorted (the attribute's order is not part of the rule).
fn sorted(mut v: Vec<CK_MECHANISM_TYPE>) -> Vec<CK_MECHANISM_TYPE> {
    v.sort_unstable();
    v
}

const RSA_SIGN: &[CK_MECHANISM_TYPE] = &[
    CKM_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
];

fn mechanisms(list: &[MechanismType]) -> Attribute {
    Attribute::AllowedMechanisms(list.to_vec())
}

p11_test! {
    fn ec_key_lists_ecdsa_with_its_curve_hash() {
        let t = Token::fresh();
        for (oid, hashed) in [(OID_P256, CKM_ECDSA_SHA256), (OID_SECP256K1, CKM_ECDSA_SHA256), (OID_P384, CKM_ECDSA_SHA384), (OID_P521, CKM_ECDSA_SHA512)] {
            let k = t.keypair(Kp::Ec(oid), "ec");
            let want = sorted(vec![CKM_ECDSA, hashed]);
            assert_eq!(sorted(allowed(&t, k.private)), want, "private key on {oid:02x?}");
            assert_eq!(sorted(allowed(&t, k.public)), want, "public key on {oid:02x?}");
        }
    }
}

p11_test! {
    fn rsa_key_lists_what_its_key_ops_allow() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "all-ops");
        let mut all = RSA_SIGN.to_vec();
        all.push(CKM_RSA_PKCS_OAEP);
        assert_eq!(sorted(allowed(&t, k.private)), sorted(all.clone()), "sign, decrypt, unwrap");
        assert_eq!(sorted(allowed(&t, k.public)), sorted(all), "verify, encrypt, wrap");

        let mut public = Token::pub_template(Kp::Rsa(2048), "sign-only", true);
        public.extend([Attribute::Encrypt(false), Attribute::Wrap(false)]);
        let mut private = Token::priv_template("sign-only", true);
        private.extend([Attribute::Decrypt(false), Attribute::Unwrap(false)]);
        let k = ok(t.try_keypair_tpl(Kp::Rsa(2048), &public, &private), "C_GenerateKeyPair(sign only)");
        assert_eq!(sorted(allowed(&t, k.private)), sorted(RSA_SIGN.to_vec()), "a sign-only key has no OAEP");
    }
}

p11_test! {
    fn aes_key_lists_what_its_key_ops_allow() {
        let t = Token::fresh();
        let k = t.aes(32, "all-ops");
        assert_eq!(sorted(allowed(&t, k)), sorted(vec![CKM_AES_GCM, CKM_AES_CBC, CKM_AES_CBC_PAD, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_KWP]));
        let mut tpl = Token::aes_template(32, "no-wrap", true);
        tpl.extend([Attribute::Wrap(false), Attribute::Unwrap(false)]);
        let k = ok(t.session.generate_key(&Mechanism::AesKeyGen, &tpl), "C_GenerateKey(no wrap)");
        // AES-KW/KWP are the Managed HSM's wrapKey/unwrapKey: without those ops they are not usable.
        assert_eq!(sorted(allowed(&t, k)), sorted(vec![CKM_AES_GCM, CKM_AES_CBC, CKM_AES_CBC_PAD]));
    }
}

p11_test! {
    fn template_narrows_allowed_mechanisms_and_init_enforces_them() {
        let t = Token::fresh();
        let mut private = Token::priv_template("pss-only", true);
        private.push(mechanisms(&[MechanismType::SHA256_RSA_PKCS_PSS]));
        let k = ok(t.try_keypair_tpl(Kp::Rsa(2048), &Token::pub_template(Kp::Rsa(2048), "pss-only", true), &private), "C_GenerateKeyPair(CKA_ALLOWED_MECHANISMS)");
        assert_eq!(allowed(&t, k.private), vec![CKM_SHA256_RSA_PKCS_PSS], "the narrowed list reads back");
        assert_rv(t.session.sign(&Mechanism::Sha256RsaPkcs, k.private, b"m"), CKR_MECHANISM_INVALID, "C_SignInit with a mechanism outside the list");
        assert_rv(t.session.decrypt(&Mechanism::RsaPkcs, k.private, &[0u8; 256]), CKR_MECHANISM_INVALID, "C_DecryptInit with a mechanism outside the list");
        let pss = PkcsPssParams { hash_alg: MechanismType::SHA256, mgf: PkcsMgfType::MGF1_SHA256, s_len: 32.into() };
        let sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcsPss(pss), k.private, b"m"), "C_Sign with the allowed mechanism");
        use rsa::signature::Verifier;
        let vk = rsa::pss::VerifyingKey::<sha2::Sha256>::new(t.rsa_public(k.public));
        vk.verify(b"m", &rsa::pss::Signature::try_from(sig.as_slice()).expect("signature bytes")).expect("PS256 signature checked by the rsa crate");
    }
}

p11_test! {
    fn allowed_mechanism_the_key_cannot_use_is_attribute_value_invalid() {
        let t = Token::fresh();
        let cases: Vec<(Kp, MechanismType, &str)> = vec![
            (Kp::Ec(OID_P256), MechanismType::RSA_PKCS, "RSA mechanism on an EC key"),
            (Kp::Ec(OID_P256), MechanismType::ECDSA_SHA384, "ECDSA-SHA384 on P-256 (ES256 pairs P-256 with SHA-256)"),
            (Kp::Rsa(2048), MechanismType::AES_GCM, "AES mechanism on an RSA key"),
            (Kp::Rsa(2048), MechanismType::SHA256, "a digest mechanism"),
        ];
        for (kind, m, what) in cases {
            let mut private = Token::priv_template("bad", true);
            private.push(mechanisms(&[m]));
            let before = t.count_all();
            assert_rv(t.try_keypair_tpl(kind, &Token::pub_template(kind, "bad", true), &private), CKR_ATTRIBUTE_VALUE_INVALID, what);
            assert_eq!(t.count_all(), before, "{what}: nothing created");
        }
        let mut tpl = Token::aes_template(32, "bad", true);
        tpl.push(mechanisms(&[MechanismType::ECDSA]));
        assert_rv(t.session.generate_key(&Mechanism::AesKeyGen, &tpl), CKR_ATTRIBUTE_VALUE_INVALID, "ECDSA on an AES key");
        // AES-KW is the key's wrapKey op: a key without wrap/unwrap cannot list it.
        let mut tpl = Token::aes_template(32, "bad", true);
        tpl.extend([Attribute::Wrap(false), Attribute::Unwrap(false), mechanisms(&[MechanismType::AES_KEY_WRAP])]);
        assert_rv(t.session.generate_key(&Mechanism::AesKeyGen, &tpl), CKR_ATTRIBUTE_VALUE_INVALID, "AES-KW without wrapKey/unwrapKey");
    }
}

p11_test! {
    fn halves_of_a_pair_must_agree_on_allowed_mechanisms() {
        let t = Token::fresh();
        let mut public = Token::pub_template(Kp::Ec(OID_P256), "pair", true);
        public.push(mechanisms(&[MechanismType::ECDSA]));
        let mut private = Token::priv_template("pair", true);
        private.push(mechanisms(&[MechanismType::ECDSA_SHA256]));
        assert_rv(t.try_keypair_tpl(Kp::Ec(OID_P256), &public, &private), CKR_TEMPLATE_INCONSISTENT, "different lists on the two halves");
    }
}

p11_test! {
    fn allowed_mechanisms_is_read_only_after_creation() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "fixed");
        assert_rv(t.session.update_attributes(k.private, &[mechanisms(&[MechanismType::ECDSA])]), CKR_ATTRIBUTE_READ_ONLY, "C_SetAttributeValue(CKA_ALLOWED_MECHANISMS)");
        assert_eq!(sorted(allowed(&t, k.private)), sorted(vec![CKM_ECDSA, CKM_ECDSA_SHA256]), "unchanged");
    }
}

p11_test! {
    fn narrowed_list_persists_with_the_key() {
        let t = Token::fresh();
        let mut tpl = Token::aes_template(32, "gcm-only", true);
        tpl.push(mechanisms(&[MechanismType::AES_GCM]));
        ok(t.session.generate_key(&Mechanism::AesKeyGen, &tpl), "C_GenerateKey(CKA_ALLOWED_MECHANISMS)");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        let t = Token::reopen_existing();
        let k = t.find(&[label("gcm-only")]);
        assert_eq!(k.len(), 1, "the key after reopening");
        assert_eq!(allowed(&t, k[0]), vec![CKM_AES_GCM], "the narrowed list read back from the store");
        let iv = [7u8; 16];
        assert_rv(t.session.encrypt(&Mechanism::AesCbcPad(iv), k[0], b"m"), CKR_MECHANISM_INVALID, "C_EncryptInit(CBC_PAD) after reopening");
    }
}

p11_test! {
    fn session_public_key_reports_its_public_mechanisms() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P384), "pair");
        let point = t.ec_point(k.public);
        let imported = ok(t.session.create_object(&[
            Attribute::Class(cryptoki::object::ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::EC),
            Attribute::Token(false),
            Attribute::EcParams(OID_P384.to_vec()),
            Attribute::EcPoint(point),
            mechanisms(&[MechanismType::ECDSA]),
        ]), "C_CreateObject(EC public key, CKA_ALLOWED_MECHANISMS)");
        assert_eq!(allowed(&t, imported), vec![CKM_ECDSA]);
        assert_rv(t.session.verify(&Mechanism::EcdsaSha384, imported, b"m", &[0u8; 96]), CKR_MECHANISM_INVALID, "C_VerifyInit(CKM_ECDSA_SHA384) outside the list");
    }
}
