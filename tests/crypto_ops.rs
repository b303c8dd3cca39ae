//! Encrypt/decrypt, wrap/unwrap and key import through the C ABI, every
//! cryptographic output checked by an independent implementation (RustCrypto).
//!
//! Each test runs in its own process on a fresh token: the test re-runs its own
//! binary filtered to itself, with `SOFTMHSM_DIR` pointing at a new temp dir.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::process::Command;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const USER_PIN: &str = "user-pin";
const SO_PIN: &str = "so-pin-1";
/// `CKA_SOFTMHSM_EXP`: the key's `exp`, seconds since the epoch.
const CKA_SOFTMHSM_EXP: u64 = softmhsm::engine::attributes::vendor::CKA_SOFTMHSM_EXP;

/// Run `body` in a child process of this test binary with a fresh token.
fn isolated(name: &str, body: fn() -> Res) {
    if std::env::var_os("SOFTMHSM_TEST_CHILD").is_some() {
        body().unwrap();
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("SOFTMHSM_TEST_CHILD", "1")
        .env("SOFTMHSM_DIR", dir.path())
        .env("SOFTMHSM_KDF_ITERATIONS", "1000")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

macro_rules! isolated_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                isolated(stringify!($name), body::$name);
            }
        )*
    };
}

/// The module built with this test binary: cargo leaves it in `deps/` next to
/// the test (built with the same features); `target/<profile>/libsoftmhsm.so`
/// is only refreshed by `cargo build` and may come from another feature set.
fn module_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let fresh = deps.join("libsoftmhsm.so");
    if fresh.exists() {
        return fresh;
    }
    deps.parent().unwrap().join("libsoftmhsm.so")
}

/// A fresh token with the user logged in on a read-write session.
fn user_session() -> Res<Session> {
    let p11 = Pkcs11::new(module_path())?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = *p11.get_all_slots()?.first().ok_or("no slot")?;
    p11.init_token(slot, &AuthPin::new(SO_PIN.into()), "crypto-ops")?;
    let s = p11.open_rw_session(slot)?;
    s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))?;
    s.init_pin(&AuthPin::new(USER_PIN.into()))?;
    s.logout()?;
    s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))?;
    Ok(s)
}

/// The `CK_RV` of a failed call.
fn rv<T: std::fmt::Debug>(r: Result<T, CkError>) -> RvError {
    match r {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// Import a known AES key (so RustCrypto can use the same bytes).
fn aes_key(s: &Session, value: &[u8]) -> Res<ObjectHandle> {
    Ok(s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(value.to_vec()),
        Attribute::Token(true),
        Attribute::Label(b"aes".to_vec()),
    ])?)
}

/// Generate an RSA-2048 key pair on the token.
fn rsa_pair(s: &Session) -> Res<(ObjectHandle, ObjectHandle)> {
    Ok(s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Token(true),
        ],
        &[Attribute::Token(true), Attribute::Label(b"rsa".to_vec())],
    )?)
}

/// The token's RSA public key as an independent `rsa` crate key.
fn rsa_public(s: &Session, key: ObjectHandle) -> Res<rsa::RsaPublicKey> {
    let attrs = s.get_attributes(
        key,
        &[AttributeType::Modulus, AttributeType::PublicExponent],
    )?;
    let (mut n, mut e) = (None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = Some(rsa::BigUint::from_bytes_be(&v)),
            Attribute::PublicExponent(v) => e = Some(rsa::BigUint::from_bytes_be(&v)),
            _ => {}
        }
    }
    Ok(rsa::RsaPublicKey::new(
        n.ok_or("no modulus")?,
        e.ok_or("no exponent")?,
    )?)
}

fn oaep(hash: MechanismType, mgf: PkcsMgfType) -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
}

/// Feed `data` to a multi-part call in chunks of the given sizes (cycled).
fn chunked(
    data: &[u8],
    sizes: &[usize],
    mut update: impl FnMut(&[u8]) -> Result<Vec<u8>, CkError>,
) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    for n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*n).min(rest.len()));
        out.extend(update(now)?);
        rest = later;
    }
    Ok(out)
}

/// Import an RSA private key made by the `rsa` crate; returns (public, private).
fn import_rsa(
    s: &Session,
    k: &rsa::RsaPrivateKey,
    label: &str,
) -> Res<(ObjectHandle, ObjectHandle)> {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let private = s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(k.n().to_bytes_be()),
        Attribute::PublicExponent(k.e().to_bytes_be()),
        Attribute::PrivateExponent(k.d().to_bytes_be()),
        Attribute::Prime1(k.primes()[0].to_bytes_be()),
        Attribute::Prime2(k.primes()[1].to_bytes_be()),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    let public = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?
        .first()
        .copied()
        .ok_or("no public key object")?;
    Ok((public, private))
}

/// An RSA-2048 key from the `rsa` crate.
fn rustcrypto_rsa() -> Res<rsa::RsaPrivateKey> {
    Ok(rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)?)
}

/// Encrypt one block with a token AES key (CBC, zero IV = the raw block cipher).
fn token_block(s: &Session, key: ObjectHandle, block: &[u8; 16]) -> Res<Vec<u8>> {
    Ok(s.encrypt(&Mechanism::AesCbc([0; 16]), key, block)?)
}

/// The same with RustCrypto's AES.
fn rustcrypto_block(key: &[u8], block: &[u8; 16]) -> Vec<u8> {
    use aes::cipher::{BlockEncrypt, KeyInit};
    let mut b = aes::Block::clone_from_slice(block);
    match key.len() {
        16 => aes::Aes128::new_from_slice(key)
            .unwrap()
            .encrypt_block(&mut b),
        24 => aes::Aes192::new_from_slice(key)
            .unwrap()
            .encrypt_block(&mut b),
        _ => aes::Aes256::new_from_slice(key)
            .unwrap()
            .encrypt_block(&mut b),
    }
    b.to_vec()
}

fn secret_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn bool_attr(s: &Session, key: ObjectHandle, ty: AttributeType) -> Res<bool> {
    match s.get_attributes(key, &[ty])?.first() {
        Some(
            Attribute::Local(b)
            | Attribute::AlwaysSensitive(b)
            | Attribute::NeverExtractable(b)
            | Attribute::Sensitive(b)
            | Attribute::Extractable(b),
        ) => Ok(*b),
        other => Err(format!("unexpected {other:?}").into()),
    }
}

const AES_KEY: [u8; 32] = [
    0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae, 0xf0, 0x85, 0x7d, 0x77, 0x81,
    0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61, 0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4,
];

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

isolated_tests!(
    rsa_oaep_round_trips_with_rustcrypto,
    rsa_pkcs1_round_trips_with_rustcrypto,
    aes_gcm_round_trips_with_rustcrypto,
    aes_cbc_round_trips_with_rustcrypto,
    multipart_cbc_pad_with_odd_chunks_matches_rustcrypto,
    multipart_gcm_with_odd_chunks_matches_rustcrypto,
    expired_key_decrypts_but_does_not_encrypt,
    oaep_sha384_or_label_is_param_invalid,
    gcm_16_byte_iv_is_param_invalid,
    gcm_tampered_tag_is_encrypted_data_invalid,
    ecdsa_key_with_oaep_is_key_type_inconsistent,
    short_output_buffer_keeps_the_operation,
    mechanism_info_reports_cipher_flags,
    imported_rsa_key_encrypts_for_rustcrypto,
    imported_rsa_key_signs_verifiably,
    imported_p256_key_signs_verifiably,
    imported_key_is_not_local,
    rsa_1024_import_is_key_size_range,
    other_curve_import_is_curve_not_supported,
    wrap_of_token_key_is_unextractable,
    rfc3394_vector_unwraps_into_working_aes_key,
    unwrap_pkcs8_ec_key_with_aes_gcm_then_sign_verifies,
    unwrap_aes_key_with_rsa_oaep,
    unwrap_needs_unwrap_permission,
    rfc5649_vector_unwraps_with_kwp,
    aes_kw_encrypt_is_wrap_key_of_caller_bytes,
    aes_kwp_encrypt_matches_rfc5649_vectors,
    aes_kw_encrypt_needs_wrap_and_decrypt_needs_unwrap,
);

mod body {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use cbc::cipher::{block_padding::NoPadding, block_padding::Pkcs7};
    use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
    use rsa::{Oaep, Pkcs1v15Encrypt};

    type CbcEnc = cbc::Encryptor<aes::Aes256>;
    type CbcDec = cbc::Decryptor<aes::Aes256>;

    pub fn rsa_oaep_round_trips_with_rustcrypto() -> Res {
        let s = user_session()?;
        let (public, private) = rsa_pair(&s)?;
        let rc = rsa_public(&s, public)?;
        let msg = b"the Managed HSM never exports";
        // SHA-1 (RSA-OAEP).
        let m = oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1);
        let ct = s.encrypt(&m, public, msg)?;
        assert_eq!(ct.len(), 256);
        let mut rng = rand_core::OsRng;
        let ct2 = rc.encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), msg)?;
        assert_eq!(s.decrypt(&m, private, &ct2)?, msg);
        assert_eq!(s.decrypt(&m, private, &ct)?, msg);
        // SHA-256 (RSA-OAEP-256).
        let m = oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256);
        let ct = s.encrypt(&m, public, msg)?;
        let ct2 = rc.encrypt(&mut rng, Oaep::new::<sha2::Sha256>(), msg)?;
        assert_eq!(s.decrypt(&m, private, &ct2)?, msg);
        assert_eq!(ct.len(), 256);
        assert_ne!(ct, s.encrypt(&m, public, msg)?);
        assert_eq!(s.decrypt(&m, private, &ct)?, msg);
        Ok(())
    }

    pub fn rsa_pkcs1_round_trips_with_rustcrypto() -> Res {
        let s = user_session()?;
        let (public, private) = rsa_pair(&s)?;
        let rc = rsa_public(&s, public)?;
        let msg = b"RSA1_5";
        let ct = s.encrypt(&Mechanism::RsaPkcs, public, msg)?;
        assert_eq!(ct.len(), 256);
        let mut rng = rand_core::OsRng;
        let ct2 = rc.encrypt(&mut rng, Pkcs1v15Encrypt, msg)?;
        assert_eq!(s.decrypt(&Mechanism::RsaPkcs, private, &ct2)?, msg);
        assert_eq!(s.decrypt(&Mechanism::RsaPkcs, private, &ct)?, msg);
        // A ciphertext that is not PKCS#1 v1.5 padding: one code, whatever the cause.
        let mut bad = ct2.clone();
        bad[0] ^= 0x80;
        bad[255] ^= 1;
        assert_eq!(
            rv(s.decrypt(&Mechanism::RsaPkcs, private, &bad)),
            RvError::EncryptedDataInvalid
        );
        Ok(())
    }

    pub fn aes_gcm_round_trips_with_rustcrypto() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let rc = aes_gcm::Aes256Gcm::new_from_slice(&AES_KEY)?;
        let mut iv = [7u8; 12];
        let aad = b"header";
        let msg = message(100);
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into())?);
        let ct = s.encrypt(&m, key, &msg)?;
        let nonce = aes_gcm::Nonce::from_slice(&[7u8; 12]);
        let expect = rc
            .encrypt(nonce, Payload { msg: &msg, aad })
            .map_err(|_| "gcm")?;
        assert_eq!(ct, expect);
        let msg2 = message(33);
        let ct2 = rc
            .encrypt(nonce, Payload { msg: &msg2, aad })
            .map_err(|_| "gcm")?;
        let mut iv = [7u8; 12];
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into())?);
        assert_eq!(s.decrypt(&m, key, &ct2)?, msg2);
        Ok(())
    }

    pub fn aes_cbc_round_trips_with_rustcrypto() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let iv = [9u8; 16];
        let msg = message(64);
        let ct = s.encrypt(&Mechanism::AesCbc(iv), key, &msg)?;
        let rc = CbcEnc::new_from_slices(&AES_KEY, &iv)?.encrypt_padded_vec_mut::<NoPadding>(&msg);
        assert_eq!(ct, rc);
        let msg = message(45);
        let ct = s.encrypt(&Mechanism::AesCbcPad(iv), key, &msg)?;
        let rc = CbcEnc::new_from_slices(&AES_KEY, &iv)?.encrypt_padded_vec_mut::<Pkcs7>(&msg);
        assert_eq!(ct, rc);
        let msg2 = message(31);
        let ct2 = CbcEnc::new_from_slices(&AES_KEY, &iv)?.encrypt_padded_vec_mut::<Pkcs7>(&msg2);
        assert_eq!(s.decrypt(&Mechanism::AesCbcPad(iv), key, &ct2)?, msg2);
        Ok(())
    }

    pub fn multipart_cbc_pad_with_odd_chunks_matches_rustcrypto() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let iv = [3u8; 16];
        let msg = message(203);
        let m = Mechanism::AesCbcPad(iv);
        s.encrypt_init(&m, key)?;
        let mut ct = chunked(&msg, &[7, 13, 1, 29, 16], |p| s.encrypt_update(p))?;
        ct.extend(s.encrypt_final()?);
        let rc = CbcEnc::new_from_slices(&AES_KEY, &iv)?.encrypt_padded_vec_mut::<Pkcs7>(&msg);
        assert_eq!(ct, rc);
        for sizes in [&[5usize, 11, 17][..], &[16], &[32, 3]] {
            s.decrypt_init(&m, key)?;
            let mut pt = chunked(&rc, sizes, |p| s.decrypt_update(p))?;
            pt.extend(s.decrypt_final()?);
            assert_eq!(pt, msg);
        }
        // The RustCrypto decryptor agrees with the token's multi-part ciphertext.
        let back = CbcDec::new_from_slices(&AES_KEY, &iv)?
            .decrypt_padded_vec_mut::<Pkcs7>(&ct)
            .map_err(|_| "unpad")?;
        assert_eq!(back, msg);
        Ok(())
    }

    pub fn multipart_gcm_with_odd_chunks_matches_rustcrypto() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let rc = aes_gcm::Aes256Gcm::new_from_slice(&AES_KEY)?;
        let aad = b"aad";
        let msg = message(77);
        let mut iv = [1u8; 12];
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into())?);
        s.encrypt_init(&m, key)?;
        let mut ct = chunked(&msg, &[3, 10, 25], |p| s.encrypt_update(p))?;
        ct.extend(s.encrypt_final()?);
        let expect = rc
            .encrypt(
                aes_gcm::Nonce::from_slice(&[1u8; 12]),
                Payload { msg: &msg, aad },
            )
            .map_err(|_| "gcm")?;
        assert_eq!(ct, expect);
        s.decrypt_init(&m, key)?;
        // Nothing is released before the tag is checked at Final.
        let early = chunked(&expect, &[9, 2, 31], |p| s.decrypt_update(p))?;
        assert!(early.is_empty());
        assert_eq!(s.decrypt_final()?, msg);
        Ok(())
    }

    pub fn expired_key_decrypts_but_does_not_encrypt() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let iv = [5u8; 16];
        let msg = message(20);
        let ct = s.encrypt(&Mechanism::AesCbcPad(iv), key, &msg)?;
        s.update_attributes(
            key,
            &[Attribute::VendorDefined((
                AttributeType::VendorDefined(CKA_SOFTMHSM_EXP),
                1_000_000u64.to_ne_bytes().to_vec(),
            ))],
        )?;
        assert_eq!(s.decrypt(&Mechanism::AesCbcPad(iv), key, &ct)?, msg);
        assert_eq!(
            rv(s.encrypt(&Mechanism::AesCbcPad(iv), key, &msg)),
            RvError::KeyFunctionNotPermitted
        );
        Ok(())
    }

    pub fn oaep_sha384_or_label_is_param_invalid() -> Res {
        let s = user_session()?;
        let (public, _) = rsa_pair(&s)?;
        let m = oaep(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384);
        assert_eq!(
            rv(s.encrypt_init(&m, public)),
            RvError::MechanismParamInvalid
        );
        let m = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::data_specified(b"label"),
        ));
        assert_eq!(
            rv(s.encrypt_init(&m, public)),
            RvError::MechanismParamInvalid
        );
        Ok(())
    }

    pub fn gcm_16_byte_iv_is_param_invalid() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let mut iv = [0u8; 16];
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into())?);
        assert_eq!(rv(s.encrypt_init(&m, key)), RvError::MechanismParamInvalid);
        Ok(())
    }

    pub fn gcm_tampered_tag_is_encrypted_data_invalid() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let mut iv = [2u8; 12];
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, b"a", 96.into())?);
        let mut ct = s.encrypt(&m, key, b"secret")?;
        assert_eq!(ct.len(), 6 + 12);
        *ct.last_mut().unwrap() ^= 1;
        assert_eq!(rv(s.decrypt(&m, key, &ct)), RvError::EncryptedDataInvalid);
        Ok(())
    }

    pub fn ecdsa_key_with_oaep_is_key_type_inconsistent() -> Res {
        let s = user_session()?;
        let (_, private) = s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(OID_P256.to_vec())],
            &[Attribute::Token(true)],
        )?;
        let m = oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1);
        assert_eq!(
            rv(s.decrypt_init(&m, private)),
            RvError::KeyTypeInconsistent
        );
        Ok(())
    }

    pub fn short_output_buffer_keeps_the_operation() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        let iv = [4u8; 16];
        s.encrypt_init(&Mechanism::AesCbcPad(iv), key)?;
        let c_encrypt = raw::function::<raw::CipherFn>("C_Encrypt");
        let h = s.handle();
        let msg = message(40);
        let mut out = [0u8; 47];
        let mut len = out.len() as u64;
        let r = unsafe { c_encrypt(h, msg.as_ptr() as *mut u8, 40, out.as_mut_ptr(), &mut len) };
        assert_eq!(r, cryptoki_sys::CKR_BUFFER_TOO_SMALL);
        assert_eq!(len, 48);
        let mut out = [0u8; 48];
        let mut len = out.len() as u64;
        let r = unsafe { c_encrypt(h, msg.as_ptr() as *mut u8, 40, out.as_mut_ptr(), &mut len) };
        assert_eq!(r, cryptoki_sys::CKR_OK);
        let rc = CbcEnc::new_from_slices(&AES_KEY, &iv)?.encrypt_padded_vec_mut::<Pkcs7>(&msg);
        assert_eq!(&out[..], &rc[..]);
        Ok(())
    }

    pub fn mechanism_info_reports_cipher_flags() -> Res {
        let s = user_session()?;
        let p11 = Pkcs11::new(module_path())?;
        let _ = &s;
        let slot = *p11.get_all_slots()?.first().ok_or("no slot")?;
        let list = p11.get_mechanism_list(slot)?;
        for m in [
            MechanismType::RSA_PKCS_OAEP,
            MechanismType::AES_GCM,
            MechanismType::AES_CBC,
            MechanismType::AES_CBC_PAD,
            MechanismType::AES_KEY_WRAP,
        ] {
            assert!(list.contains(&m), "{m} missing");
        }
        let gcm = p11.get_mechanism_info(slot, MechanismType::AES_GCM)?;
        assert!(gcm.encrypt() && gcm.decrypt() && gcm.wrap() && gcm.unwrap());
        assert_eq!((gcm.min_key_size(), gcm.max_key_size()), (16, 32));
        let kw = p11.get_mechanism_info(slot, MechanismType::AES_KEY_WRAP)?;
        // C_Encrypt/C_Decrypt with AES-KW: the Managed HSM's wrapKey/unwrapKey.
        assert!(kw.encrypt() && kw.decrypt() && kw.wrap() && kw.unwrap());
        Ok(())
    }

    pub fn imported_rsa_key_encrypts_for_rustcrypto() -> Res {
        let s = user_session()?;
        let k = rustcrypto_rsa()?;
        let (public, private) = import_rsa(&s, &k, "imported-rsa")?;
        let msg = b"for RustCrypto's eyes";
        let ct = s.encrypt(
            &oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            public,
            msg,
        )?;
        assert_eq!(k.decrypt(Oaep::new::<sha1::Sha1>(), &ct)?, msg);
        let m256 = oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256);
        let ct = s.encrypt(&m256, public, msg)?;
        assert_eq!(k.decrypt(Oaep::new::<sha2::Sha256>(), &ct)?, msg);
        let ct = s.encrypt(&Mechanism::RsaPkcs, public, msg)?;
        assert_eq!(k.decrypt(Pkcs1v15Encrypt, &ct)?, msg);
        // And the token decrypts what RustCrypto made with the same key.
        let ct =
            k.to_public_key()
                .encrypt(&mut rand_core::OsRng, Oaep::new::<sha2::Sha256>(), msg)?;
        assert_eq!(s.decrypt(&m256, private, &ct)?, msg);
        Ok(())
    }

    pub fn imported_rsa_key_signs_verifiably() -> Res {
        let s = user_session()?;
        let k = rustcrypto_rsa()?;
        let (_, private) = import_rsa(&s, &k, "signer")?;
        let msg = b"signed by an imported key";
        let sig = s.sign(&Mechanism::Sha256RsaPkcs, private, msg)?;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(msg);
        k.to_public_key()
            .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig)?;
        Ok(())
    }

    pub fn imported_p256_key_signs_verifiably() -> Res {
        use p256::ecdsa::signature::Verifier;
        let s = user_session()?;
        let sk = p256::SecretKey::random(&mut rand_core::OsRng);
        let private = s.create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(OID_P256.to_vec()),
            Attribute::Value(sk.to_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Label(b"ec".to_vec()),
        ])?;
        let msg = b"ES256 by an imported key";
        let sig = s.sign(&Mechanism::EcdsaSha256, private, msg)?;
        let sig = p256::ecdsa::Signature::from_slice(&sig)?;
        p256::ecdsa::VerifyingKey::from(sk.public_key()).verify(msg, &sig)?;
        Ok(())
    }

    pub fn imported_key_is_not_local() -> Res {
        let s = user_session()?;
        let key = aes_key(&s, &AES_KEY)?;
        assert!(!bool_attr(&s, key, AttributeType::Local)?);
        assert!(!bool_attr(&s, key, AttributeType::AlwaysSensitive)?);
        assert!(!bool_attr(&s, key, AttributeType::NeverExtractable)?);
        assert!(bool_attr(&s, key, AttributeType::Sensitive)?);
        assert!(!bool_attr(&s, key, AttributeType::Extractable)?);
        Ok(())
    }

    pub fn rsa_1024_import_is_key_size_range() -> Res {
        let s = user_session()?;
        let mut n = vec![0xc5u8; 128];
        n[127] |= 1;
        let r = s.create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(n),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::PrivateExponent(vec![0x33; 128]),
            Attribute::Token(true),
        ]);
        assert_eq!(rv(r), RvError::KeySizeRange);
        Ok(())
    }

    pub fn other_curve_import_is_curve_not_supported() -> Res {
        let s = user_session()?;
        // secp224r1: 1.3.132.0.33
        let r = s.create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21]),
            Attribute::Value(vec![1; 28]),
            Attribute::Token(true),
        ]);
        assert_eq!(rv(r), RvError::CurveNotSupported);
        Ok(())
    }

    pub fn wrap_of_token_key_is_unextractable() -> Res {
        let s = user_session()?;
        let kek = aes_key(&s, &AES_KEY)?;
        let key = s.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Token(true)],
        )?;
        assert_eq!(
            rv(s.wrap_key(&Mechanism::AesKeyWrap, kek, key)),
            RvError::KeyUnextractable
        );
        // The checks come in the spec's order: the wrapping key before the key.
        // Its own name: destroying a token key soft-deletes every version of its
        // name, and `aes_key` names them all "aes" (the kek too).
        let gone = s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![1; 16]),
            Attribute::Token(true),
            Attribute::Label(b"gone".to_vec()),
        ])?;
        s.destroy_object(gone)?;
        assert_eq!(
            rv(s.wrap_key(&Mechanism::AesKeyWrap, gone, key)),
            RvError::WrappingKeyHandleInvalid
        );
        assert_eq!(
            rv(s.wrap_key(&Mechanism::AesKeyWrap, kek, gone)),
            RvError::KeyHandleInvalid
        );
        assert_eq!(
            rv(s.wrap_key(&Mechanism::Sha256, kek, key)),
            RvError::MechanismInvalid
        );
        Ok(())
    }

    pub fn rfc3394_vector_unwraps_into_working_aes_key() -> Res {
        let s = user_session()?;
        // RFC 3394 §4.1: 128-bit key data with a 128-bit KEK.
        let kek: Vec<u8> = (0u8..16).collect();
        let key_data = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let wrapped = [
            0x1f, 0xa6, 0x8b, 0x0a, 0x81, 0x12, 0xb4, 0x47, 0xae, 0xf3, 0x4b, 0xd8, 0xfb, 0x5a,
            0x7b, 0x82, 0x9d, 0x3e, 0x86, 0x23, 0x71, 0xd2, 0xcf, 0xe5,
        ];
        let kek = aes_key(&s, &kek)?;
        let key = s.unwrap_key(
            &Mechanism::AesKeyWrap,
            kek,
            &wrapped,
            &secret_template("rfc3394"),
        )?;
        let block = *b"prove my identity";
        let block: [u8; 16] = block[..16].try_into()?;
        assert_eq!(
            token_block(&s, key, &block)?,
            rustcrypto_block(&key_data, &block)
        );
        assert!(!bool_attr(&s, key, AttributeType::Local)?);
        assert!(!bool_attr(&s, key, AttributeType::NeverExtractable)?);
        // A corrupted wrapping fails the RFC 3394 integrity check.
        let mut bad = wrapped;
        bad[5] ^= 1;
        assert_eq!(
            rv(s.unwrap_key(&Mechanism::AesKeyWrap, kek, &bad, &secret_template("bad"))),
            RvError::WrappedKeyInvalid
        );
        Ok(())
    }

    pub fn unwrap_pkcs8_ec_key_with_aes_gcm_then_sign_verifies() -> Res {
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::EncodePrivateKey;
        let s = user_session()?;
        let kek = aes_key(&s, &AES_KEY)?;
        let sk = p256::SecretKey::random(&mut rand_core::OsRng);
        let pkcs8 = sk.to_pkcs8_der()?;
        let rc = aes_gcm::Aes256Gcm::new_from_slice(&AES_KEY)?;
        let wrapped = rc
            .encrypt(aes_gcm::Nonce::from_slice(&[8u8; 12]), pkcs8.as_bytes())
            .map_err(|_| "gcm")?;
        let mut iv = [8u8; 12];
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into())?);
        let private = s.unwrap_key(
            &m,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(true),
                Attribute::Label(b"unwrapped-ec".to_vec()),
            ],
        )?;
        let msg = b"signed by an unwrapped key";
        let sig = s.sign(&Mechanism::EcdsaSha256, private, msg)?;
        let sig = p256::ecdsa::Signature::from_slice(&sig)?;
        p256::ecdsa::VerifyingKey::from(sk.public_key()).verify(msg, &sig)?;
        Ok(())
    }

    pub fn unwrap_aes_key_with_rsa_oaep() -> Res {
        let s = user_session()?;
        let (public, private) = rsa_pair(&s)?;
        let rc = rsa_public(&s, public)?;
        let key_data = [0x42u8; 24];
        let wrapped = rc.encrypt(
            &mut rand_core::OsRng,
            Oaep::new::<sha2::Sha256>(),
            &key_data,
        )?;
        let m = oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256);
        let key = s.unwrap_key(&m, private, &wrapped, &secret_template("oaep"))?;
        let block = [0x5au8; 16];
        assert_eq!(
            token_block(&s, key, &block)?,
            rustcrypto_block(&key_data, &block)
        );
        Ok(())
    }

    pub fn rfc5649_vector_unwraps_with_kwp() -> Res {
        use cryptoki_sys::*;
        let s = user_session()?;
        // RFC 5649 §6: 20 octets of key data under a 192-bit KEK. The key data is
        // no AES key size, so the unwrap must end in CKR_KEY_SIZE_RANGE, after
        // the KWP integrity check passed (a tampered wrapping is WRAPPED_KEY_INVALID).
        let kek = aes_key(&s, &hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"))?;
        let wrapped = hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a");
        let c_unwrap = raw::function::<raw::UnwrapFn>("C_UnwrapKey");
        let unwrap = |wrapped: &[u8]| {
            let mut mech = CK_MECHANISM {
                mechanism: CKM_AES_KEY_WRAP_KWP,
                pParameter: std::ptr::null_mut(),
                ulParameterLen: 0,
            };
            let class: CK_ULONG = CKO_SECRET_KEY;
            let key_type: CK_ULONG = CKK_AES;
            let mut tmpl = [
                CK_ATTRIBUTE {
                    type_: CKA_CLASS,
                    pValue: &class as *const _ as *mut _,
                    ulValueLen: 8,
                },
                CK_ATTRIBUTE {
                    type_: CKA_KEY_TYPE,
                    pValue: &key_type as *const _ as *mut _,
                    ulValueLen: 8,
                },
            ];
            let mut out: CK_OBJECT_HANDLE = 0;
            unsafe {
                c_unwrap(
                    s.handle(),
                    &mut mech,
                    kek.handle(),
                    wrapped.as_ptr() as *mut u8,
                    wrapped.len() as CK_ULONG,
                    tmpl.as_mut_ptr(),
                    2,
                    &mut out,
                )
            }
        };
        assert_eq!(unwrap(&wrapped), CKR_KEY_SIZE_RANGE);
        let mut bad = wrapped.clone();
        bad[3] ^= 1;
        assert_eq!(unwrap(&bad), CKR_WRAPPED_KEY_INVALID);
        // And a 256-bit key wrapped by RustCrypto's KWP unwraps to a working key.
        let kek_bytes = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let kw = aes_kw::KekAes192::new(aes::cipher::generic_array::GenericArray::from_slice(
            &kek_bytes,
        ));
        let wrapped = kw.wrap_with_padding_vec(&AES_KEY).map_err(|_| "kwp")?;
        assert_eq!(unwrap(&wrapped), CKR_OK);
        Ok(())
    }

    /// RFC 3394 §4.1 (128-bit KEK, 128-bit key data) through C_Encrypt and
    /// C_Decrypt: the Managed HSM's wrapKey/unwrapKey of bytes the caller holds.
    pub fn aes_kw_encrypt_is_wrap_key_of_caller_bytes() -> Res {
        let s = user_session()?;
        let kek = aes_key(&s, &hex("000102030405060708090a0b0c0d0e0f"))?;
        let data = hex("00112233445566778899aabbccddeeff");
        let wrapped = hex("1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5");
        assert_eq!(s.encrypt(&Mechanism::AesKeyWrap, kek, &data)?, wrapped);
        assert_eq!(s.decrypt(&Mechanism::AesKeyWrap, kek, &wrapped)?, data);
        // RFC 3394 §4.6: 256-bit key data under a 256-bit KEK.
        let kek256 = aes_key(
            &s,
            &hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        )?;
        let data256 = hex("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f");
        let wrapped256 =
            hex("28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21");
        assert_eq!(
            s.encrypt(&Mechanism::AesKeyWrap, kek256, &data256)?,
            wrapped256
        );
        assert_eq!(
            s.decrypt(&Mechanism::AesKeyWrap, kek256, &wrapped256)?,
            data256
        );
        // Bad input: not a multiple of 8 / shorter than two blocks, a tampered
        // wrapping (the integrity check fails), a ciphertext of the wrong length.
        for bad in [&data[..15], &data[..8]] {
            assert_eq!(
                rv(s.encrypt(&Mechanism::AesKeyWrap, kek, bad)),
                RvError::DataLenRange
            );
        }
        let mut tampered = wrapped.clone();
        tampered[9] ^= 0x80;
        assert_eq!(
            rv(s.decrypt(&Mechanism::AesKeyWrap, kek, &tampered)),
            RvError::EncryptedDataInvalid
        );
        assert_eq!(
            rv(s.decrypt(&Mechanism::AesKeyWrap, kek, &wrapped[..20])),
            RvError::EncryptedDataLenRange
        );
        // An IV parameter is not a Managed HSM option.
        let c_init = raw::function::<raw::InitFn>("C_EncryptInit");
        let mut iv = [0xa6u8; 8];
        let mut mech = cryptoki_sys::CK_MECHANISM {
            mechanism: cryptoki_sys::CKM_AES_KEY_WRAP,
            pParameter: iv.as_mut_ptr() as *mut _,
            ulParameterLen: 8,
        };
        let r = unsafe { c_init(s.handle(), &mut mech, kek.handle()) };
        assert_eq!(r, cryptoki_sys::CKR_MECHANISM_PARAM_INVALID);
        Ok(())
    }

    /// C_Encrypt/C_Decrypt with CKM_AES_KEY_WRAP_KWP against both RFC 5649 §6
    /// vectors (20 and 7 octets under a 192-bit KEK).
    pub fn aes_kwp_encrypt_matches_rfc5649_vectors() -> Res {
        let s = user_session()?;
        let kek = aes_key(&s, &hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"))?;
        for (data, wrapped) in [
            (
                "c37b7e6492584340bed12207808941155068f738",
                "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
            ),
            ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
        ] {
            let (data, wrapped) = (hex(data), hex(wrapped));
            assert_eq!(raw::kwp(&s, kek, true, &data), Ok(wrapped.clone()));
            assert_eq!(raw::kwp(&s, kek, false, &wrapped), Ok(data));
            let mut tampered = wrapped;
            tampered[0] ^= 1;
            assert_eq!(
                raw::kwp(&s, kek, false, &tampered),
                Err(cryptoki_sys::CKR_ENCRYPTED_DATA_INVALID)
            );
        }
        assert_eq!(
            raw::kwp(&s, kek, true, &[]),
            Err(cryptoki_sys::CKR_DATA_LEN_RANGE)
        );
        Ok(())
    }

    /// C_Encrypt with AES-KW is wrapKey: it needs CKA_WRAP, not CKA_ENCRYPT;
    /// C_Decrypt is unwrapKey: it needs CKA_UNWRAP.
    pub fn aes_kw_encrypt_needs_wrap_and_decrypt_needs_unwrap() -> Res {
        let s = user_session()?;
        let key = |wrap: bool, unwrap: bool| {
            s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(AES_KEY.to_vec()),
                Attribute::Token(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(wrap),
                Attribute::Unwrap(unwrap),
            ])
        };
        let data = message(32);
        let wrap_only = key(true, false)?;
        let wrapped = s.encrypt(&Mechanism::AesKeyWrap, wrap_only, &data)?;
        let kek = aes_kw::KekAes256::new(aes::cipher::generic_array::GenericArray::from_slice(
            &AES_KEY,
        ));
        assert_eq!(
            kek.unwrap_vec(&wrapped).map_err(|_| "RustCrypto unwrap")?,
            data
        );
        assert_eq!(
            rv(s.decrypt_init(&Mechanism::AesKeyWrap, wrap_only)),
            RvError::KeyFunctionNotPermitted
        );
        let unwrap_only = key(false, true)?;
        assert_eq!(
            rv(s.encrypt_init(&Mechanism::AesKeyWrap, unwrap_only)),
            RvError::KeyFunctionNotPermitted
        );
        let from_rustcrypto = kek.wrap_vec(&data).map_err(|_| "RustCrypto wrap")?;
        assert_eq!(
            s.decrypt(&Mechanism::AesKeyWrap, unwrap_only, &from_rustcrypto)?,
            data
        );
        Ok(())
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    pub fn unwrap_needs_unwrap_permission() -> Res {
        let s = user_session()?;
        let kek = s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(AES_KEY.to_vec()),
            Attribute::Token(true),
            Attribute::Unwrap(false),
        ])?;
        let r = s.unwrap_key(
            &Mechanism::AesKeyWrap,
            kek,
            &[0u8; 24],
            &secret_template("x"),
        );
        assert_eq!(rv(r), RvError::KeyFunctionNotPermitted);
        Ok(())
    }
}

const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Direct calls into the already-loaded module, for what `cryptoki` does not
/// expose (a caller-chosen output buffer size).
mod raw {
    use cryptoki_sys::*;

    pub type CipherFn = unsafe extern "C" fn(
        CK_SESSION_HANDLE,
        *mut CK_BYTE,
        CK_ULONG,
        *mut CK_BYTE,
        *mut CK_ULONG,
    ) -> CK_RV;

    pub type InitFn =
        unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV;

    /// C_EncryptInit + C_Encrypt (or the Decrypt pair) with
    /// CKM_AES_KEY_WRAP_KWP, which `cryptoki` has no variant for.
    pub fn kwp(
        s: &cryptoki::session::Session,
        key: cryptoki::object::ObjectHandle,
        encrypt: bool,
        data: &[u8],
    ) -> Result<Vec<u8>, CK_RV> {
        let (init, run) = if encrypt {
            ("C_EncryptInit", "C_Encrypt")
        } else {
            ("C_DecryptInit", "C_Decrypt")
        };
        let (init, run) = (function::<InitFn>(init), function::<CipherFn>(run));
        let mut mech = CK_MECHANISM {
            mechanism: CKM_AES_KEY_WRAP_KWP,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        let check = |rv: CK_RV| if rv == CKR_OK { Ok(()) } else { Err(rv) };
        let mut out = vec![0u8; data.len() + 16];
        let mut len = out.len() as CK_ULONG;
        unsafe {
            check(init(s.handle(), &mut mech, key.handle()))?;
            check(run(
                s.handle(),
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len,
            ))?;
        }
        out.truncate(len as usize);
        Ok(out)
    }

    pub type UnwrapFn = unsafe extern "C" fn(
        CK_SESSION_HANDLE,
        *mut CK_MECHANISM,
        CK_OBJECT_HANDLE,
        *mut CK_BYTE,
        CK_ULONG,
        *mut CK_ATTRIBUTE,
        CK_ULONG,
        *mut CK_OBJECT_HANDLE,
    ) -> CK_RV;

    /// The entry point `name` of the module (`dlopen` of a loaded library
    /// returns the same instance, so the token state is shared).
    pub fn function<F: Copy>(name: &str) -> F {
        let path = std::ffi::CString::new(super::module_path().to_str().unwrap()).unwrap();
        let name = std::ffi::CString::new(name).unwrap();
        unsafe {
            let lib = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            assert!(!lib.is_null(), "module not loaded");
            let sym = libc::dlsym(lib, name.as_ptr());
            assert!(!sym.is_null());
            std::mem::transmute_copy::<*mut libc::c_void, F>(&sym)
        }
    }
}
