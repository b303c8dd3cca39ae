//! BYOK through the C ABI: key-exchange keys (`CKA_SOFTMHSM_IMPORT`) and
//! `C_UnwrapKey` with `CKM_RSA_AES_KEY_WRAP`. Wrapped data is made by the
//! RustCrypto `rsa` + `aes-kw` crates or by the `openssl` command; what the
//! imported keys produce is checked by OpenSSL or RustCrypto, never by the token.

#[macro_use]
mod common;
mod byok_support;

use byok_support::*;
use common::*;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki_sys::*;
use std::ptr;

const CKA_SOFTMHSM_IMPORT: CK_ATTRIBUTE_TYPE = CKA_SOFTMHSM_BASE + 0x09;
const MSG: &[u8] = b"signed by a key brought in with BYOK";

/// A token KEK (RSA, key_ops = import only) through C_GenerateKeyPair.
fn kek(t: &Token, bits: u64) -> Pair {
    let import = Attribute::VendorDefined((
        AttributeType::VendorDefined(CKA_SOFTMHSM_IMPORT),
        vec![CK_TRUE],
    ));
    let public = [
        Attribute::Token(true),
        Attribute::ModulusBits(bits.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Label(b"KEK".to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Label(b"KEK".to_vec()),
        import,
    ];
    ok(
        t.try_keypair_tpl(Kp::Rsa(bits), &public, &private),
        "C_GenerateKeyPair(KEK)",
    )
}

/// The KEK's public key as RustCrypto sees it.
fn kek_public(t: &Token, k: Pair) -> rsa::RsaPublicKey {
    t.rsa_public(k.public)
}

/// `CKM_RSA_AES_KEY_WRAP` wrapping by RustCrypto: OAEP (`sha256` picks
/// SHA-256, else SHA-1) of a random AES key of `aes_bits`, then RFC 5649.
fn rustcrypto_wrap(
    kek: &rsa::RsaPublicKey,
    aes_bits: usize,
    sha256: bool,
    target: &[u8],
) -> Vec<u8> {
    use rand_core::RngCore;
    let mut aes = vec![0u8; aes_bits / 8];
    rand_core::OsRng.fill_bytes(&mut aes);
    let mut rng = rand_core::OsRng;
    let mut out = if sha256 {
        kek.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), &aes)
    } else {
        kek.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), &aes)
    }
    .expect("RSA-OAEP");
    use aes::cipher::generic_array::GenericArray;
    let kwp = match aes_bits {
        128 => aes_kw::KekAes128::new(GenericArray::from_slice(&aes)).wrap_with_padding_vec(target),
        192 => aes_kw::KekAes192::new(GenericArray::from_slice(&aes)).wrap_with_padding_vec(target),
        _ => aes_kw::KekAes256::new(GenericArray::from_slice(&aes)).wrap_with_padding_vec(target),
    };
    out.extend(kwp.expect("AES-KWP"));
    out
}

/// C_UnwrapKey with CKM_RSA_AES_KEY_WRAP; `params` None passes no parameter.
fn unwrap_with(
    t: &Token,
    kek: ObjectHandle,
    params: Option<(CK_ULONG, CK_MECHANISM_TYPE, CK_RSA_PKCS_MGF_TYPE)>,
    wrapped: &[u8],
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
    label: &str,
) -> CK_RV {
    let (bits, hash, mgf) = params.unwrap_or((256, CKM_SHA_1, CKG_MGF1_SHA1));
    let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: hash,
        mgf,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: ptr::null_mut(),
        ulSourceDataLen: 0,
    };
    let mut p = CK_RSA_AES_KEY_WRAP_PARAMS {
        ulAESKeyBits: bits,
        pOAEPParams: &mut oaep,
    };
    let mut mech = CK_MECHANISM {
        mechanism: CKM_RSA_AES_KEY_WRAP,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    if params.is_some() {
        mech.pParameter = &mut p as *mut _ as *mut _;
        mech.ulParameterLen = std::mem::size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>() as CK_ULONG;
    }
    raw_unwrap(t, &mut mech, kek, wrapped, class, key_type, label)
}

fn raw_unwrap(
    t: &Token,
    mech: &mut CK_MECHANISM,
    kek: ObjectHandle,
    wrapped: &[u8],
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
    label: &str,
) -> CK_RV {
    let mut wrapped = wrapped.to_vec();
    let (mut class, mut key_type, mut yes) = (class, key_type, CK_TRUE);
    let mut label = label.as_bytes().to_vec();
    let attr = |ty, p: *mut u8, len: usize| CK_ATTRIBUTE {
        type_: ty,
        pValue: p as *mut _,
        ulValueLen: len as CK_ULONG,
    };
    let mut tmpl = [
        attr(CKA_CLASS, &mut class as *mut _ as *mut u8, 8),
        attr(CKA_KEY_TYPE, &mut key_type as *mut _ as *mut u8, 8),
        attr(CKA_TOKEN, &mut yes, 1),
        attr(CKA_LABEL, label.as_mut_ptr(), label.len()),
    ];
    let mut out: CK_OBJECT_HANDLE = 0;
    unsafe {
        p11!(
            t.raw,
            C_UnwrapKey,
            t.h(),
            mech,
            kek.handle(),
            wrapped.as_mut_ptr(),
            wrapped.len() as CK_ULONG,
            tmpl.as_mut_ptr(),
            tmpl.len() as CK_ULONG,
            &mut out
        )
    }
}

const SHA1: Option<(CK_ULONG, CK_MECHANISM_TYPE, CK_RSA_PKCS_MGF_TYPE)> =
    Some((256, CKM_SHA_1, CKG_MGF1_SHA1));

/// The only private or secret key labelled `label`.
fn one_key(t: &Token, label: &str) -> ObjectHandle {
    let found = t.find(&[Attribute::Label(label.as_bytes().to_vec())]);
    let keys: Vec<_> = found
        .into_iter()
        .filter(|h| {
            let class = t.attr_ulong(*h, CKA_CLASS, "CKA_CLASS");
            class == CKO_PRIVATE_KEY || class == CKO_SECRET_KEY
        })
        .collect();
    assert_eq!(keys.len(), 1, "one key labelled {label}");
    keys[0]
}

/// Imported keys are not local, yet sensitive and never extractable.
fn assert_imported(t: &Token, k: ObjectHandle) {
    assert!(!t.attr_bool(k, CKA_LOCAL, "CKA_LOCAL"));
    assert!(!t.attr_bool(k, CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE"));
    assert!(!t.attr_bool(k, CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"));
    assert!(t.attr_bool(k, CKA_SENSITIVE, "CKA_SENSITIVE"));
    assert!(!t.attr_bool(k, CKA_EXTRACTABLE, "CKA_EXTRACTABLE"));
}

fn key_count(t: &Token) -> usize {
    t.find(&[]).len()
}

p11_test! {
    fn kek_with_another_op_is_template_inconsistent() {
        softmhsm_only!("CKA_SOFTMHSM_IMPORT is a softmhsm attribute");
        let t = Token::fresh();
        let import = Attribute::VendorDefined((AttributeType::VendorDefined(CKA_SOFTMHSM_IMPORT), vec![CK_TRUE]));
        let public = Token::pub_template(Kp::Rsa(2048), "mixed", true);
        let private = [Attribute::Token(true), Attribute::Sign(true), import.clone()];
        assert_rv(t.try_keypair_tpl(Kp::Rsa(2048), &public, &private), CKR_TEMPLATE_INCONSISTENT, "KEK that also signs");
        let public = Token::pub_template(Kp::Ec(OID_P256), "ec-kek", true);
        assert_rv(t.try_keypair_tpl(Kp::Ec(OID_P256), &public, &[Attribute::Token(true), import]), CKR_TEMPLATE_INCONSISTENT, "EC KEK");
    }
}

p11_test! {
    fn kek_refuses_sign_decrypt_and_ordinary_unwrap() {
        softmhsm_only!("key-exchange keys are a Managed HSM rule");
        let t = Token::fresh();
        let k = kek(&t, 2048);
        assert!(t.attr_bool(k.private, CKA_SOFTMHSM_IMPORT, "CKA_SOFTMHSM_IMPORT"));
        assert!(!t.attr_bool(k.private, CKA_SIGN, "CKA_SIGN"));
        assert_rv(t.session.sign(&Mechanism::Sha256RsaPkcs, k.private, MSG), CKR_KEY_FUNCTION_NOT_PERMITTED, "KEK sign");
        let oaep = cryptoki::mechanism::rsa::PkcsOaepParams::new(
            MechanismType::SHA1,
            cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA1,
            cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
        );
        let ct = kek_public(&t, k)
            .encrypt(&mut rand_core::OsRng, rsa::Oaep::new::<sha1::Sha1>(), &[7u8; 32])
            .unwrap();
        assert_rv(t.session.decrypt(&Mechanism::RsaPkcsOaep(oaep), k.private, &ct), CKR_KEY_FUNCTION_NOT_PERMITTED, "KEK decrypt");
        let tmpl = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(cryptoki::object::KeyType::AES)];
        assert_rv(t.session.unwrap_key(&Mechanism::RsaPkcsOaep(oaep), k.private, &ct, &tmpl), CKR_KEY_FUNCTION_NOT_PERMITTED, "KEK OAEP unwrap");
        // And it cannot be given another op afterwards.
        assert_rv(t.session.update_attributes(k.private, &[Attribute::Sign(true)]), CKR_ATTRIBUTE_READ_ONLY, "KEK gains sign");
    }
}

p11_test! {
    fn rsa_aes_key_wrap_imports_aes_and_ec_keys_built_with_rustcrypto() {
        softmhsm_only!("key-exchange keys are a Managed HSM rule");
        let t = Token::fresh();
        let k = kek(&t, 2048);
        let kp = kek_public(&t, k);
        // AES-256 under every ephemeral AES size and both OAEP hashes.
        let aes_key = [0x3cu8; 32];
        let cases = [(128, false), (192, false), (256, false), (256, true)];
        for (i, (bits, sha256)) in cases.into_iter().enumerate() {
            let wrapped = rustcrypto_wrap(&kp, bits, sha256, &aes_key);
            let params = if sha256 { Some((bits as CK_ULONG, CKM_SHA256, CKG_MGF1_SHA256)) } else { Some((bits as CK_ULONG, CKM_SHA_1, CKG_MGF1_SHA1)) };
            let label = format!("aes-{i}");
            check(unwrap_with(&t, k.private, params, &wrapped, CKO_SECRET_KEY, CKK_AES, &label), CKR_OK, &format!("unwrap AES ({bits}, sha256 {sha256})"));
            let key = one_key(&t, &label);
            assert_imported(&t, key);
            // The token encrypts; RustCrypto decrypts with the original bytes.
            let iv = [9u8; 12];
            let mut iv_buf = iv;
            let gcm = cryptoki::mechanism::aead::GcmParams::new(&mut iv_buf, &[], 128.into()).unwrap();
            let ct = ok(t.session.encrypt(&Mechanism::AesGcm(gcm), key, MSG), "C_Encrypt(AES-GCM)");
            use aes_gcm::aead::{Aead, KeyInit};
            let plain = aes_gcm::Aes256Gcm::new_from_slice(&aes_key).unwrap()
                .decrypt(aes_gcm::Nonce::from_slice(&iv), ct.as_slice())
                .expect("RustCrypto AES-GCM opens the token's ciphertext");
            assert_eq!(plain, MSG);
        }
        // P-256 as PKCS#8; the token signs, RustCrypto verifies with the original key.
        use p256::pkcs8::EncodePrivateKey;
        let sk = p256::SecretKey::random(&mut rand_core::OsRng);
        let der = sk.to_pkcs8_der().unwrap();
        let wrapped = rustcrypto_wrap(&kp, 256, false, der.as_bytes());
        check(unwrap_with(&t, k.private, SHA1, &wrapped, CKO_PRIVATE_KEY, CKK_EC, "ec"), CKR_OK, "unwrap P-256");
        let key = one_key(&t, "ec");
        assert_imported(&t, key);
        let sig = ok(t.session.sign(&Mechanism::EcdsaSha256, key, MSG), "C_Sign(ECDSA-SHA256)");
        use p256::ecdsa::signature::Verifier;
        p256::ecdsa::VerifyingKey::from(sk.public_key())
            .verify(MSG, &p256::ecdsa::Signature::from_slice(&sig).unwrap())
            .expect("RustCrypto verifies with the original public key");
    }
}

p11_test! {
    fn rsa_aes_key_wrap_imports_openssl_made_keys_that_openssl_verifies() {
        softmhsm_only!("key-exchange keys are a Managed HSM rule");
        if !tool("openssl") {
            return;
        }
        let t = Token::fresh();
        let dir = tempfile::tempdir().unwrap();
        let k = kek(&t, 3072);
        let kek_der = dir.path().join("kek.der");
        std::fs::write(&kek_der, t.attr(k.public, CKA_PUBLIC_KEY_INFO, "CKA_PUBLIC_KEY_INFO")).unwrap();
        let cases = [
            (Kind::Rsa(2048), CKK_RSA, "sha256"),
            (Kind::Rsa(4096), CKK_RSA, "sha256"),
            (Kind::Ec("prime256v1"), CKK_EC, "sha256"),
            (Kind::Ec("secp256k1"), CKK_EC, "sha256"),
            (Kind::Ec("secp384r1"), CKK_EC, "sha384"),
            (Kind::Ec("secp521r1"), CKK_EC, "sha512"),
        ];
        for (i, (kind, key_type, md)) in cases.into_iter().enumerate() {
            let target = target_key(dir.path(), &format!("t{i}"), kind);
            let wrapped = openssl_rsa_aes_wrap(dir.path(), &kek_der, &target.material);
            check(unwrap_with(&t, k.private, SHA1, &wrapped, CKO_PRIVATE_KEY, key_type, &target.name), CKR_OK, &format!("unwrap {kind:?}"));
            let key = one_key(&t, &target.name);
            assert_imported(&t, key);
            let sig = match (kind, md) {
                (Kind::Rsa(_), _) => ok(t.session.sign(&Mechanism::Sha256RsaPkcs, key, MSG), "C_Sign(RSA)"),
                (_, "sha384") => ecdsa_raw_to_der(&ok(t.session.sign(&Mechanism::EcdsaSha384, key, MSG), "C_Sign")),
                (_, "sha512") => ecdsa_raw_to_der(&ok(t.session.sign(&Mechanism::EcdsaSha512, key, MSG), "C_Sign")),
                _ => ecdsa_raw_to_der(&ok(t.session.sign(&Mechanism::EcdsaSha256, key, MSG), "C_Sign")),
            };
            assert!(openssl_verifies(dir.path(), &target.public, md, MSG, &sig), "OpenSSL verifies the {kind:?} signature with the original public key");
        }
        // An AES-256 key from openssl rand: the token encrypts (CBC), RustCrypto decrypts.
        let target = target_key(dir.path(), "aes", Kind::Aes(256));
        let wrapped = openssl_rsa_aes_wrap(dir.path(), &kek_der, &target.material);
        check(unwrap_with(&t, k.private, SHA1, &wrapped, CKO_SECRET_KEY, CKK_AES, "aes"), CKR_OK, "unwrap AES");
        let key = one_key(&t, "aes");
        let iv = [4u8; 16];
        let ct = ok(t.session.encrypt(&Mechanism::AesCbcPad(iv), key, MSG), "C_Encrypt(AES-CBC-PAD)");
        use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
        let bytes = std::fs::read(&target.material).unwrap();
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&bytes, &iv).unwrap()
            .decrypt_padded_vec_mut::<Pkcs7>(&ct)
            .expect("RustCrypto decrypts with the original key bytes");
        assert_eq!(plain, MSG);
    }
}

p11_test! {
    fn only_a_kek_may_unwrap_with_rsa_aes_key_wrap() {
        softmhsm_only!("key-exchange keys are a Managed HSM rule");
        let t = Token::fresh();
        let ordinary = t.keypair(Kp::Rsa(2048), "ordinary");
        let wrapped = rustcrypto_wrap(&t.rsa_public(ordinary.public), 256, false, &[1u8; 32]);
        check(unwrap_with(&t, ordinary.private, SHA1, &wrapped, CKO_SECRET_KEY, CKK_AES, "x"), CKR_KEY_FUNCTION_NOT_PERMITTED, "RSA key with every op but import");
        let aes = t.aes(32, "aes-kek");
        check(unwrap_with(&t, aes, SHA1, &wrapped, CKO_SECRET_KEY, CKK_AES, "x"), CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, "AES key");
        let k = kek(&t, 2048);
        check(unwrap_with(&t, k.public, SHA1, &wrapped, CKO_SECRET_KEY, CKK_AES, "x"), CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, "the KEK's public half");
    }
}

p11_test! {
    fn rsa_aes_key_wrap_parameters_are_checked() {
        softmhsm_only!("key-exchange keys are a Managed HSM rule");
        let t = Token::fresh();
        let k = kek(&t, 2048);
        let wrapped = rustcrypto_wrap(&kek_public(&t, k), 256, false, &[1u8; 32]);
        let unwrap = |p| unwrap_with(&t, k.private, p, &wrapped, CKO_SECRET_KEY, CKK_AES, "p");
        check(unwrap(None), CKR_MECHANISM_PARAM_INVALID, "no parameter");
        check(unwrap(Some((512, CKM_SHA_1, CKG_MGF1_SHA1))), CKR_MECHANISM_PARAM_INVALID, "ulAESKeyBits 512");
        check(unwrap(Some((256, CKM_SHA384, CKG_MGF1_SHA384))), CKR_MECHANISM_PARAM_INVALID, "OAEP SHA-384");
        check(unwrap(Some((256, CKM_SHA256, CKG_MGF1_SHA1))), CKR_MECHANISM_PARAM_INVALID, "OAEP hash != MGF1 hash");
        // A NULL pOAEPParams, and a parameter of the wrong length.
        let mut p = CK_RSA_AES_KEY_WRAP_PARAMS { ulAESKeyBits: 256, pOAEPParams: ptr::null_mut() };
        let size = std::mem::size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>() as CK_ULONG;
        for len in [size, size - 8] {
            let mut mech = CK_MECHANISM { mechanism: CKM_RSA_AES_KEY_WRAP, pParameter: &mut p as *mut _ as *mut _, ulParameterLen: len };
            check(raw_unwrap(&t, &mut mech, k.private, &wrapped, CKO_SECRET_KEY, CKK_AES, "p"), CKR_MECHANISM_PARAM_INVALID, "NULL pOAEPParams / short parameter");
        }
        assert!(t.find(&[Attribute::Label(b"p".to_vec())]).is_empty(), "nothing was made");
    }
}

p11_test! {
    fn tampered_wrapped_data_is_wrapped_key_invalid_and_makes_nothing() {
        softmhsm_only!("key-exchange keys are a Managed HSM rule");
        let t = Token::fresh();
        let k = kek(&t, 2048);
        let wrapped = rustcrypto_wrap(&kek_public(&t, k), 256, false, &[1u8; 32]);
        let before = key_count(&t);
        for i in [0, 128, 255, 256, 270, wrapped.len() - 1] {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x01;
            check(unwrap_with(&t, k.private, SHA1, &bad, CKO_SECRET_KEY, CKK_AES, "bad"), CKR_WRAPPED_KEY_INVALID, &format!("byte {i} flipped"));
        }
        // Under the wrong OAEP hash it does not open either.
        check(unwrap_with(&t, k.private, Some((256, CKM_SHA256, CKG_MGF1_SHA256)), &wrapped, CKO_SECRET_KEY, CKK_AES, "bad"), CKR_WRAPPED_KEY_INVALID, "wrong OAEP hash");
        check(unwrap_with(&t, k.private, SHA1, &wrapped[..256 + 8], CKO_SECRET_KEY, CKK_AES, "bad"), CKR_WRAPPED_KEY_LEN_RANGE, "too short");
        assert_eq!(key_count(&t), before, "no object was made");
        check(unwrap_with(&t, k.private, SHA1, &wrapped, CKO_SECRET_KEY, CKK_AES, "good"), CKR_OK, "the untouched data still unwraps");
    }
}

p11_test! {
    fn rsa_aes_key_wrap_is_listed_for_unwrap_only() {
        softmhsm_only!("softmhsm's mechanism list");
        let t = Token::fresh();
        let mut info = CK_MECHANISM_INFO { ulMinKeySize: 0, ulMaxKeySize: 0, flags: 0 };
        let rv = unsafe { p11!(t.raw, C_GetMechanismInfo, t.slot.id(), CKM_RSA_AES_KEY_WRAP, &mut info) };
        check(rv, CKR_OK, "C_GetMechanismInfo(CKM_RSA_AES_KEY_WRAP)");
        assert_eq!((info.ulMinKeySize, info.ulMaxKeySize, info.flags), (2048, 4096, CKF_UNWRAP));
        let mut n: CK_ULONG = 0;
        check(unsafe { p11!(t.raw, C_GetMechanismList, t.slot.id(), ptr::null_mut(), &mut n) }, CKR_OK, "C_GetMechanismList");
        let mut list = vec![0; n as usize];
        check(unsafe { p11!(t.raw, C_GetMechanismList, t.slot.id(), list.as_mut_ptr(), &mut n) }, CKR_OK, "C_GetMechanismList");
        assert!(list.contains(&CKM_RSA_AES_KEY_WRAP), "CKM_RSA_AES_KEY_WRAP is listed");
    }
}
