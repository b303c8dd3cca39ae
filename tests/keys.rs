//! Key generation and key attribute rules through the C ABI.

#[macro_use]
mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki_sys::*;

const UNAVAILABLE: CK_ULONG = CK_UNAVAILABLE_INFORMATION;

/// Asserts the protection attributes every generated private/secret key has.
fn assert_protected(t: &Token, o: ObjectHandle, gen_mech: CK_MECHANISM_TYPE) {
    assert!(
        t.attr_bool(o, CKA_SENSITIVE, "CKA_SENSITIVE"),
        "CKA_SENSITIVE must be TRUE"
    );
    assert!(
        !t.attr_bool(o, CKA_EXTRACTABLE, "CKA_EXTRACTABLE"),
        "CKA_EXTRACTABLE must be FALSE"
    );
    assert!(
        t.attr_bool(o, CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE"),
        "CKA_ALWAYS_SENSITIVE must be TRUE"
    );
    assert!(
        t.attr_bool(o, CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"),
        "CKA_NEVER_EXTRACTABLE must be TRUE"
    );
    assert!(
        t.attr_bool(o, CKA_LOCAL, "CKA_LOCAL"),
        "CKA_LOCAL must be TRUE for a generated key"
    );
    assert_eq!(
        t.attr_ulong(o, CKA_KEY_GEN_MECHANISM, "CKA_KEY_GEN_MECHANISM"),
        gen_mech,
        "CKA_KEY_GEN_MECHANISM"
    );
}

p11_test! {
    fn rsa_key_pairs_of_2048_3072_4096_bits_are_generated() {
        let t = Token::fresh();
        for bits in [2048u64, 3072, 4096] {
            let k = t.keypair(Kp::Rsa(bits), &format!("rsa{bits}"));
            assert_eq!(t.attr_ulong(k.public, CKA_MODULUS_BITS, "CKA_MODULUS_BITS"), bits as CK_ULONG);
            let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
            assert_eq!(n.len() * 8, bits as usize, "CKA_MODULUS length for RSA-{bits}");
            assert_eq!(t.attr(k.private, CKA_MODULUS, "CKA_MODULUS (private)"), n, "private and public CKA_MODULUS differ");
            let e = t.attr(k.public, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT");
            assert_eq!(rsa::BigUint::from_bytes_be(&e), rsa::BigUint::from(65537u32), "CKA_PUBLIC_EXPONENT must be 65537");
            assert_eq!(t.attr_ulong(k.private, CKA_KEY_TYPE, "CKA_KEY_TYPE"), CKK_RSA);
        }
    }
}

p11_test! {
    fn rsa_sizes_outside_2048_3072_4096_are_refused() {
        softmhsm_only!("SoftHSMv2 generates any RSA size in its range");
        let t = Token::fresh();
        let before = t.count_all();
        for bits in [1024u64, 2047, 5000] {
            assert_rv(t.try_keypair(Kp::Rsa(bits), "bad", true), CKR_KEY_SIZE_RANGE, &format!("C_GenerateKeyPair(RSA-{bits})"));
        }
        assert_eq!(t.count_all(), before, "a refused C_GenerateKeyPair must not create objects");
    }
}

p11_test! {
    fn ec_key_pairs_on_supported_curves_are_generated() {
        let t = Token::fresh();
        for c in CURVES {
            let k = t.keypair(Kp::Ec(c.oid), c.name);
            assert_eq!(t.attr(k.public, CKA_EC_PARAMS, "CKA_EC_PARAMS"), c.oid, "CKA_EC_PARAMS of {} must be its named-curve OID", c.name);
            assert_eq!(t.attr(k.private, CKA_EC_PARAMS, "CKA_EC_PARAMS (private)"), c.oid, "private CKA_EC_PARAMS of {}", c.name);
            let point = t.ec_point(k.public);
            assert_eq!(point.len(), 1 + 2 * c.field_len, "{} CKA_EC_POINT length", c.name);
            assert_eq!(point[0], 0x04, "{} CKA_EC_POINT must be uncompressed", c.name);
            assert_eq!(t.attr_ulong(k.private, CKA_KEY_TYPE, "CKA_KEY_TYPE"), CKK_EC);
        }
    }
}

p11_test! {
    fn ec_point_is_a_point_on_the_curve() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "p256");
        let point = t.ec_point(k.public);
        p256::PublicKey::from_sec1_bytes(&point).expect("CKA_EC_POINT must decode as a P-256 public key");
        let k = t.keypair(Kp::Ec(OID_SECP256K1), "k1");
        let point = t.ec_point(k.public);
        k256::PublicKey::from_sec1_bytes(&point).expect("CKA_EC_POINT must decode as a secp256k1 public key");
        let k = t.keypair(Kp::Ec(OID_P384), "p384");
        p384::PublicKey::from_sec1_bytes(&t.ec_point(k.public)).expect("CKA_EC_POINT must decode as a P-384 public key");
        let k = t.keypair(Kp::Ec(OID_P521), "p521");
        p521::PublicKey::from_sec1_bytes(&t.ec_point(k.public)).expect("CKA_EC_POINT must decode as a P-521 public key");
    }
}

p11_test! {
    fn unsupported_curves_are_refused() {
        softmhsm_only!("SoftHSMv2 supports P-224 and brainpool");
        let t = Token::fresh();
        let before = t.count_all();
        assert_rv(t.try_keypair(Kp::Ec(OID_P224), "p224", true), CKR_CURVE_NOT_SUPPORTED, "C_GenerateKeyPair(P-224)");
        assert_rv(t.try_keypair(Kp::Ec(OID_BRAINPOOL_P256R1), "bp", true), CKR_CURVE_NOT_SUPPORTED, "C_GenerateKeyPair(brainpoolP256r1)");
        assert_eq!(t.count_all(), before, "a refused C_GenerateKeyPair must not create objects");
    }
}

p11_test! {
    fn aes_keys_of_16_24_32_bytes_are_generated() {
        let t = Token::fresh();
        for len in [16u64, 24, 32] {
            let k = t.aes(len, &format!("aes{len}"));
            assert_eq!(t.attr_ulong(k, CKA_VALUE_LEN, "CKA_VALUE_LEN"), len as CK_ULONG, "CKA_VALUE_LEN");
            assert_eq!(t.attr_ulong(k, CKA_KEY_TYPE, "CKA_KEY_TYPE"), CKK_AES);
            assert_eq!(t.attr_ulong(k, CKA_CLASS, "CKA_CLASS"), CKO_SECRET_KEY);
        }
    }
}

p11_test! {
    fn aes_sizes_outside_16_24_32_are_refused() {
        softmhsm_only!("SoftHSMv2 accepts other AES key lengths");
        let t = Token::fresh();
        let before = t.count_all();
        assert_rv(t.try_aes(20, "aes20", true), CKR_KEY_SIZE_RANGE, "C_GenerateKey(AES, CKA_VALUE_LEN 20)");
        assert_eq!(t.count_all(), before, "a refused C_GenerateKey must not create objects");
    }
}

p11_test! {
    fn generating_without_login_is_refused() {
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        assert_rv(t.try_keypair(Kp::Ec(OID_P256), "nologin", true), CKR_USER_NOT_LOGGED_IN, "C_GenerateKeyPair without login");
        assert_rv(t.try_aes(32, "nologin", true), CKR_USER_NOT_LOGGED_IN, "C_GenerateKey without login");
    }
}

p11_test! {
    fn generated_private_keys_are_protected() {
        let t = Token::fresh();
        let rsa = t.keypair(Kp::Rsa(2048), "rsa");
        assert_protected(&t, rsa.private, CKM_RSA_PKCS_KEY_PAIR_GEN);
        let ec = t.keypair(Kp::Ec(OID_P256), "ec");
        assert_protected(&t, ec.private, CKM_EC_KEY_PAIR_GEN);
        let aes = t.aes(32, "aes");
        assert_protected(&t, aes, CKM_AES_KEY_GEN);
    }
}

p11_test! {
    fn keys_are_protected_without_asking() {
        softmhsm_only!("SoftHSMv2's defaults for CKA_SENSITIVE/CKA_EXTRACTABLE differ");
        let t = Token::fresh();
        let minimal = |label: &str| vec![Attribute::Token(true), Attribute::Sign(true), Attribute::Label(label.as_bytes().to_vec())];
        let ec = ok(t.try_keypair_tpl(Kp::Ec(OID_P256), &Token::pub_template(Kp::Ec(OID_P256), "ec", true), &minimal("ec")), "C_GenerateKeyPair with a minimal private template");
        assert_protected(&t, ec.private, CKM_EC_KEY_PAIR_GEN);
        assert!(t.attr_bool(ec.private, CKA_PRIVATE, "CKA_PRIVATE"), "private keys must default to CKA_PRIVATE=TRUE");
        let aes = ok(
            t.session.generate_key(&Mechanism::AesKeyGen, &[Attribute::Token(true), Attribute::ValueLen(32u64.into()), Attribute::Label(b"aes".to_vec())]),
            "C_GenerateKey with a minimal template",
        );
        assert_protected(&t, aes, CKM_AES_KEY_GEN);
    }
}

p11_test! {
    fn sensitive_value_is_unavailable() {
        let t = Token::fresh();
        let rsa = t.keypair(Kp::Rsa(2048), "rsa");
        for (attr, name) in [(CKA_PRIVATE_EXPONENT, "CKA_PRIVATE_EXPONENT"), (CKA_PRIME_1, "CKA_PRIME_1")] {
            let mut label = [0u8; 3];
            let mut secret = [0u8; 512];
            let mut key_type = [0u8; std::mem::size_of::<CK_ULONG>()];
            let mut tpl = [raw_attr(CKA_LABEL, &mut label), raw_attr(attr, &mut secret), raw_attr(CKA_KEY_TYPE, &mut key_type)];
            check(t.get_raw(rsa.private, &mut tpl), CKR_ATTRIBUTE_SENSITIVE, &format!("C_GetAttributeValue({name})"));
            assert_eq!(tpl[1].ulValueLen, UNAVAILABLE, "{name} length must be CK_UNAVAILABLE_INFORMATION");
            assert_eq!(tpl[0].ulValueLen, 3, "CKA_LABEL must still be filled next to {name}");
            assert_eq!(&label, b"rsa", "CKA_LABEL value next to {name}");
            assert_eq!(CK_ULONG::from_ne_bytes(key_type), CKK_RSA, "CKA_KEY_TYPE must still be filled next to {name}");
            assert!(secret.iter().all(|b| *b == 0), "nothing may be written for {name}");
        }
        let ec = t.keypair(Kp::Ec(OID_P256), "ec");
        let aes = t.aes(32, "aes");
        for (o, what) in [(ec.private, "EC private key"), (aes, "AES key")] {
            let mut value = [0u8; 64];
            let mut class = [0u8; std::mem::size_of::<CK_ULONG>()];
            let mut tpl = [raw_attr(CKA_VALUE, &mut value), raw_attr(CKA_CLASS, &mut class)];
            check(t.get_raw(o, &mut tpl), CKR_ATTRIBUTE_SENSITIVE, &format!("C_GetAttributeValue(CKA_VALUE) of an {what}"));
            assert_eq!(tpl[0].ulValueLen, UNAVAILABLE, "CKA_VALUE length of an {what} must be CK_UNAVAILABLE_INFORMATION");
            assert_ne!(tpl[1].ulValueLen, UNAVAILABLE, "CKA_CLASS must still be filled");
            assert!(value.iter().all(|b| *b == 0), "nothing may be written for CKA_VALUE of an {what}");
        }
        // A length query (NULL pValue) is refused the same way.
        let mut tpl = [raw_attr(CKA_VALUE, &mut [])];
        check(t.get_raw(aes, &mut tpl), CKR_ATTRIBUTE_SENSITIVE, "C_GetAttributeValue(CKA_VALUE, NULL)");
        assert_eq!(tpl[0].ulValueLen, UNAVAILABLE, "CKA_VALUE length query must give CK_UNAVAILABLE_INFORMATION");
    }
}

p11_test! {
    fn unknown_attribute_type_is_invalid() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let mut label = [0u8; 2];
        let mut unknown = [0u8; 16];
        let mut class = [0u8; std::mem::size_of::<CK_ULONG>()];
        // Below CKA_VENDOR_DEFINED and assigned to nothing.
        let mut tpl = [raw_attr(CKA_LABEL, &mut label), raw_attr(0x0FFF_FFF0, &mut unknown), raw_attr(CKA_CLASS, &mut class)];
        check(t.get_raw(k.public, &mut tpl), CKR_ATTRIBUTE_TYPE_INVALID, "C_GetAttributeValue(unknown type)");
        assert_eq!(tpl[1].ulValueLen, UNAVAILABLE, "unknown attribute length must be CK_UNAVAILABLE_INFORMATION");
        assert_eq!(&label, b"ec", "CKA_LABEL must still be filled");
        assert_eq!(CK_ULONG::from_ne_bytes(class), CKO_PUBLIC_KEY, "CKA_CLASS must still be filled");
    }
}

p11_test! {
    fn short_buffer_is_too_small() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        let mut modulus = [0u8; 10];
        let mut label = [0u8; 3];
        let mut tpl = [raw_attr(CKA_MODULUS, &mut modulus), raw_attr(CKA_LABEL, &mut label)];
        check(t.get_raw(k.public, &mut tpl), CKR_BUFFER_TOO_SMALL, "C_GetAttributeValue(CKA_MODULUS, 10-byte buffer)");
        assert_eq!(tpl[0].ulValueLen, UNAVAILABLE, "CKA_MODULUS length must be CK_UNAVAILABLE_INFORMATION on a short buffer");
        assert_eq!(&label, b"rsa", "CKA_LABEL must still be filled");
        assert_eq!(tpl[1].ulValueLen, 3, "CKA_LABEL length");
    }
}

p11_test! {
    fn null_value_pointer_returns_the_length() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        let mut tpl = [raw_attr(CKA_MODULUS, &mut []), raw_attr(CKA_LABEL, &mut [])];
        check(t.get_raw(k.public, &mut tpl), CKR_OK, "C_GetAttributeValue with NULL pValue");
        assert_eq!(tpl[0].ulValueLen, 256, "CKA_MODULUS length of RSA-2048");
        assert_eq!(tpl[1].ulValueLen, 3, "CKA_LABEL length");
    }
}

p11_test! {
    fn public_key_info_is_the_spki_of_the_key() {
        let t = Token::fresh();
        let rsa_k = t.keypair(Kp::Rsa(2048), "rsa");
        let ec_k = t.keypair(Kp::Ec(OID_P256), "ec");
        let spki = t.try_attr(rsa_k.public, CKA_PUBLIC_KEY_INFO);
        if is_softhsm() && matches!(spki.as_deref(), Ok([]) | Err(_)) {
            println!("SKIPPED on SoftHSMv2: it does not fill CKA_PUBLIC_KEY_INFO");
            return;
        }
        let spki = spki.unwrap_or_else(|rv| panic!("C_GetAttributeValue(CKA_PUBLIC_KEY_INFO) -> {}", rv_name(rv)));
        use rsa::pkcs8::DecodePublicKey;
        let from_spki = rsa::RsaPublicKey::from_public_key_der(&spki).expect("RSA CKA_PUBLIC_KEY_INFO must be an SPKI");
        assert_eq!(from_spki, t.rsa_public(rsa_k.public), "RSA SPKI must hold CKA_MODULUS/CKA_PUBLIC_EXPONENT");
        assert_eq!(t.attr(rsa_k.private, CKA_PUBLIC_KEY_INFO, "CKA_PUBLIC_KEY_INFO (private)"), spki, "private key's CKA_PUBLIC_KEY_INFO");
        let spki = t.attr(ec_k.public, CKA_PUBLIC_KEY_INFO, "CKA_PUBLIC_KEY_INFO");
        let from_spki = p256::PublicKey::from_public_key_der(&spki).expect("EC CKA_PUBLIC_KEY_INFO must be a P-256 SPKI");
        assert_eq!(from_spki, p256::PublicKey::from_sec1_bytes(&t.ec_point(ec_k.public)).expect("CKA_EC_POINT"), "EC SPKI must hold CKA_EC_POINT");
    }
}

p11_test! {
    fn application_id_is_kept() {
        let t = Token::fresh();
        let id = b"my-key-id".to_vec();
        let mut public = Token::pub_template(Kp::Ec(OID_P256), "ec", true);
        public.push(Attribute::Id(id.clone()));
        let mut private = Token::priv_template("ec", true);
        private.push(Attribute::Id(id.clone()));
        let k = ok(t.try_keypair_tpl(Kp::Ec(OID_P256), &public, &private), "C_GenerateKeyPair with CKA_ID");
        assert_eq!(t.attr(k.private, CKA_ID, "CKA_ID"), id, "private CKA_ID");
        assert_eq!(t.attr(k.public, CKA_ID, "CKA_ID"), id, "public CKA_ID");
    }
}

p11_test! {
    fn default_id_is_the_version_id() {
        softmhsm_only!("CKA_ID from the Managed HSM version id is softmhsm's rule");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let version = t.attr(k.private, CKA_SOFTMHSM_VERSION, "CKA_SOFTMHSM_VERSION");
        let version = String::from_utf8(version).expect("CKA_SOFTMHSM_VERSION is UTF-8");
        assert_eq!(version.len(), 32, "CKA_SOFTMHSM_VERSION must be 32 hex chars, got {version:?}");
        let id = t.attr(k.private, CKA_ID, "CKA_ID");
        assert_eq!(hex(&id), version, "CKA_ID must be the 16 bytes of the version id");
        assert_eq!(t.attr(k.public, CKA_ID, "CKA_ID (public)"), id, "public and private CKA_ID must pair");
    }
}

p11_test! {
    fn unique_ids_are_distinct() {
        softmhsm_only!("SoftHSMv2 2.6 has no CKA_UNIQUE_ID");
        let t = Token::fresh();
        let a = t.keypair(Kp::Ec(OID_P256), "a");
        let b = t.aes(32, "b");
        let ids: Vec<Vec<u8>> = [a.public, a.private, b].iter().map(|o| t.attr(*o, CKA_UNIQUE_ID, "CKA_UNIQUE_ID")).collect();
        for id in &ids {
            assert!(!id.is_empty(), "CKA_UNIQUE_ID must not be empty");
        }
        assert_ne!(ids[0], ids[1], "public and private key need distinct CKA_UNIQUE_ID");
        assert_ne!(ids[1], ids[2], "distinct keys need distinct CKA_UNIQUE_ID");
    }
}

p11_test! {
    fn extractable_key_templates_are_refused() {
        softmhsm_only!("SoftHSMv2 allows extractable keys");
        let t = Token::fresh();
        let before = t.count_all();
        let kind = Kp::Ec(OID_P256);
        let private: Vec<Attribute> = Token::priv_template("bad", true)
            .into_iter()
            .filter(|a| !matches!(a, Attribute::Extractable(_)))
            .chain([Attribute::Extractable(true)])
            .collect();
        assert_rv(t.try_keypair_tpl(kind, &Token::pub_template(kind, "bad", true), &private), CKR_ATTRIBUTE_VALUE_INVALID, "C_GenerateKeyPair with CKA_EXTRACTABLE=TRUE");
        let secret: Vec<Attribute> = Token::aes_template(32, "bad", true)
            .into_iter()
            .filter(|a| !matches!(a, Attribute::Extractable(_)))
            .chain([Attribute::Extractable(true)])
            .collect();
        assert_rv(t.session.generate_key(&Mechanism::AesKeyGen, &secret), CKR_ATTRIBUTE_VALUE_INVALID, "C_GenerateKey with CKA_EXTRACTABLE=TRUE");
        assert_eq!(t.count_all(), before, "refused templates must not create objects");
    }
}

p11_test! {
    fn non_sensitive_request_still_gets_a_sensitive_key() {
        // pkcs11-tool --keygen asks CKA_SENSITIVE=FALSE and CKA_PRIVATE=FALSE by default:
        // the token answers with a key more protected than asked, and says so.
        softmhsm_only!("SoftHSMv2 makes non-sensitive keys on request");
        let t = Token::fresh();
        let secret: Vec<Attribute> = Token::aes_template(32, "asked-open", true)
            .into_iter()
            .filter(|a| !matches!(a, Attribute::Sensitive(_) | Attribute::Private(_)))
            .chain([Attribute::Sensitive(false), Attribute::Private(false)])
            .collect();
        let k = ok(t.session.generate_key(&Mechanism::AesKeyGen, &secret), "C_GenerateKey with CKA_SENSITIVE=FALSE");
        assert!(t.attr_bool(k, CKA_SENSITIVE, "CKA_SENSITIVE"), "CKA_SENSITIVE must read TRUE");
        assert!(t.attr_bool(k, CKA_PRIVATE, "CKA_PRIVATE"), "CKA_PRIVATE must read TRUE");
        assert!(!t.attr_bool(k, CKA_EXTRACTABLE, "CKA_EXTRACTABLE"), "CKA_EXTRACTABLE must read FALSE");
        assert_eq!(t.try_attr(k, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE), "CKA_VALUE must stay sensitive");
    }
}

p11_test! {
    fn always_sensitive_in_template_is_read_only() {
        softmhsm_only!("SoftHSMv2 ignores CKA_ALWAYS_SENSITIVE in templates");
        let t = Token::fresh();
        let before = t.count_all();
        let mut secret = Token::aes_template(32, "bad", true);
        secret.push(Attribute::AlwaysSensitive(true));
        assert_rv(t.session.generate_key(&Mechanism::AesKeyGen, &secret), CKR_ATTRIBUTE_READ_ONLY, "C_GenerateKey with CKA_ALWAYS_SENSITIVE");
        assert_eq!(t.count_all(), before, "refused templates must not create objects");
    }
}

p11_test! {
    fn label_and_id_can_be_changed() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "before");
        ok(t.session.update_attributes(k.private, &[Attribute::Label(b"after".to_vec()), Attribute::Id(b"new-id".to_vec())]), "C_SetAttributeValue(CKA_LABEL, CKA_ID)");
        assert_eq!(t.attr(k.private, CKA_LABEL, "CKA_LABEL"), b"after", "CKA_LABEL after C_SetAttributeValue");
        assert_eq!(t.attr(k.private, CKA_ID, "CKA_ID"), b"new-id", "CKA_ID after C_SetAttributeValue");
    }
}

p11_test! {
    fn fixed_attributes_are_read_only() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        let n = t.attr(k.public, CKA_MODULUS, "CKA_MODULUS");
        let changes = [
            (k.public, Attribute::Modulus(vec![0xff; 256]), "CKA_MODULUS"),
            (k.private, Attribute::KeyType(cryptoki::object::KeyType::EC), "CKA_KEY_TYPE"),
            (k.private, Attribute::Class(ObjectClass::SECRET_KEY), "CKA_CLASS"),
        ];
        for (o, a, name) in changes {
            assert_rv(t.session.update_attributes(o, &[a]), CKR_ATTRIBUTE_READ_ONLY, &format!("C_SetAttributeValue({name})"));
        }
        assert_eq!(t.attr(k.public, CKA_MODULUS, "CKA_MODULUS"), n, "CKA_MODULUS must be unchanged");
        assert_eq!(t.attr_ulong(k.private, CKA_KEY_TYPE, "CKA_KEY_TYPE"), CKK_RSA, "CKA_KEY_TYPE must be unchanged");
        assert_eq!(t.attr_ulong(k.private, CKA_CLASS, "CKA_CLASS"), CKO_PRIVATE_KEY, "CKA_CLASS must be unchanged");
    }
}

p11_test! {
    fn protection_cannot_be_weakened() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let aes = t.aes(32, "aes");
        for o in [k.private, aes] {
            assert_rv(t.session.update_attributes(o, &[Attribute::Sensitive(false)]), CKR_ATTRIBUTE_READ_ONLY, "C_SetAttributeValue(CKA_SENSITIVE=FALSE)");
            assert_rv(t.session.update_attributes(o, &[Attribute::Extractable(true)]), CKR_ATTRIBUTE_READ_ONLY, "C_SetAttributeValue(CKA_EXTRACTABLE=TRUE)");
            assert!(t.attr_bool(o, CKA_SENSITIVE, "CKA_SENSITIVE"), "CKA_SENSITIVE must stay TRUE");
            assert!(!t.attr_bool(o, CKA_EXTRACTABLE, "CKA_EXTRACTABLE"), "CKA_EXTRACTABLE must stay FALSE");
        }
    }
}

p11_test! {
    fn session_keys_are_not_token_objects() {
        let t = Token::fresh();
        let k = ok(t.try_keypair(Kp::Ec(OID_P256), "s", false), "C_GenerateKeyPair(CKA_TOKEN=FALSE)");
        assert!(!t.attr_bool(k.private, CKA_TOKEN, "CKA_TOKEN"), "CKA_TOKEN of a session key");
        let a = ok(t.try_aes(16, "s", false), "C_GenerateKey(CKA_TOKEN=FALSE)");
        assert!(!t.attr_bool(a, CKA_TOKEN, "CKA_TOKEN"), "CKA_TOKEN of a session AES key");
        assert_protected(&t, a, CKM_AES_KEY_GEN);
    }
}

p11_test! {
    fn halves_of_a_session_key_pair_are_destroyed_independently() {
        let t = Token::fresh();
        let session_pair = |label: &str| ok(t.try_keypair(Kp::Ec(OID_P256), label, false), "C_GenerateKeyPair(session)");
        let k = session_pair("halves");
        ok(t.session.destroy_object(k.private), "C_DestroyObject(private)");
        let point = t.attr(k.public, CKA_EC_POINT, "CKA_EC_POINT of the surviving public key");
        assert!(!point.is_empty(), "the public key must survive its private key");
        assert_rv(t.session.get_attributes(k.private, &[AttributeType::Label]), CKR_OBJECT_HANDLE_INVALID, "destroyed private key");
        let k2 = session_pair("halves2");
        ok(t.session.destroy_object(k2.public), "C_DestroyObject(public)");
        let digest = [7u8; 32];
        ok(t.session.sign(&Mechanism::Ecdsa, k2.private, &digest), "C_Sign with the surviving private key");
        ok(t.session.destroy_object(k2.private), "C_DestroyObject(private after public)");
        assert_rv(t.session.destroy_object(k.public), CKR_OK, "C_DestroyObject(last public)");
        assert!(t.find_private_by_label("halves").is_empty() && t.find_private_by_label("halves2").is_empty(), "nothing left");
    }
}

p11_test! {
    fn impossible_operations_in_a_template_are_dropped() {
        // python-pkcs11's default AES template asks CKA_SIGN/CKA_VERIFY (for CMAC);
        // a Managed HSM oct key cannot sign, so the key is made without them.
        softmhsm_only!("SoftHSMv2 lets AES keys sign (CMAC)");
        let t = Token::fresh();
        let mut tpl = Token::aes_template(32, "aes-sign", true);
        tpl.retain(|a| !matches!(a, Attribute::Sign(_) | Attribute::Verify(_)));
        tpl.extend([Attribute::Sign(true), Attribute::Verify(true), Attribute::Encrypt(true)]);
        let k = ok(t.session.generate_key(&Mechanism::AesKeyGen, &tpl), "C_GenerateKey(AES, CKA_SIGN=TRUE)");
        assert!(!t.attr_bool(k, CKA_SIGN, "CKA_SIGN"), "an AES key reports CKA_SIGN FALSE");
        assert!(!t.attr_bool(k, CKA_VERIFY, "CKA_VERIFY"), "an AES key reports CKA_VERIFY FALSE");
        assert!(t.attr_bool(k, CKA_ENCRYPT, "CKA_ENCRYPT"), "what it can do stays");
        assert_rv(t.session.update_attributes(k, &[Attribute::Sign(true)]), CKR_ATTRIBUTE_VALUE_INVALID, "asking CKA_SIGN explicitly afterwards");
    }
}

p11_test! {
    fn destroying_both_halves_of_a_token_key_soft_deletes_every_version() {
        softmhsm_only!("SoftHSMv2 has no soft-delete");
        let t = Token::fresh();
        let v1 = t.keypair(Kp::Ec(OID_P256), "gone");
        let v2 = t.keypair(Kp::Ec(OID_P256), "gone");
        let digest = [7u8; 32];
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, v2.private, &digest), "C_Sign before");
        ok(t.session.destroy_object(v2.private), "C_DestroyObject(private, current version)");
        // PKCS#11 objects are independent: the public half stays, and verifies.
        assert!(t.find_private_by_label("gone").is_empty(), "the destroyed private key is not found");
        assert_eq!(t.find(&[class(ObjectClass::PUBLIC_KEY), label("gone")]), vec![v2.public], "its public key stays");
        ok(t.session.verify(&Mechanism::Ecdsa, v2.public, &digest, &sig), "C_Verify with the remaining public key");
        assert_rv(t.session.sign(&Mechanism::Ecdsa, v2.private, &digest), CKR_KEY_HANDLE_INVALID, "C_SignInit with the destroyed half");
        // The older version is untouched until the key goes whole.
        ok(t.session.sign(&Mechanism::Ecdsa, v1.private, &digest), "C_Sign with the older version");
        ok(t.session.destroy_object(v2.public), "C_DestroyObject(public, the last half)");
        assert!(t.find(&[label("gone")]).is_empty(), "a deleted key is not found");
        for (h, what) in [(v1.private, "older version"), (v1.public, "older public half")] {
            assert_rv(t.session.get_attributes(h, &[AttributeType::Label]), CKR_OBJECT_HANDLE_INVALID, what);
        }
        assert_rv(t.session.sign(&Mechanism::Ecdsa, v1.private, &digest), CKR_KEY_HANDLE_INVALID, "C_SignInit with a deleted key");
        assert_rv(t.try_keypair(Kp::Ec(OID_P256), "gone", true), CKR_ATTRIBUTE_VALUE_INVALID, "the name is held until purge");
    }
}

p11_test! {
    fn a_deleted_name_cannot_be_reused_until_purged() {
        softmhsm_only!("SoftHSMv2 has no soft-delete");
        let t = Token::fresh();
        let k = t.aes(32, "taken");
        ok(t.session.destroy_object(k), "C_DestroyObject(AES token key)");
        assert_rv(t.try_aes(32, "TAKEN", true), CKR_ATTRIBUTE_VALUE_INVALID, "C_GenerateKey under a deleted name");
        ok(t.try_aes(32, "taken", false), "a session key may use the label");
    }
}

p11_test! {
    fn destroying_a_token_public_key_leaves_the_private_key() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "half");
        ok(t.session.destroy_object(k.public), "C_DestroyObject(public)");
        ok(t.session.sign(&Mechanism::Ecdsa, k.private, &[7u8; 32]), "C_Sign with the private key");
    }
}
