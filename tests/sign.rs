//! Sign/verify, digest, random and mechanism rules. Every signature is
//! checked by an independent implementation (RustCrypto, and OpenSSL once).

#[macro_use]
mod common;

use std::ptr;

use common::*;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki_sys::*;
use sha2::Digest;

const MSG: &[u8] = b"softmhsm signs what the Managed HSM would sign";

fn raw_mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    }
}

fn sign_init(t: &Token, m: CK_MECHANISM_TYPE, key: ObjectHandle) -> CK_RV {
    let mut mech = raw_mech(m);
    unsafe { p11!(t.raw, C_SignInit, t.h(), &mut mech, key.handle()) }
}

/// Raw C_Sign; `out` None = NULL buffer. Returns rv and the reported length.
fn sign_raw(t: &Token, data: &[u8], out: Option<&mut [u8]>) -> (CK_RV, CK_ULONG) {
    let (p, mut len) = match out {
        Some(b) => (b.as_mut_ptr(), b.len() as CK_ULONG),
        None => (ptr::null_mut(), 0),
    };
    let rv = unsafe {
        p11!(
            t.raw,
            C_Sign,
            t.h(),
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            p,
            &mut len
        )
    };
    (rv, len)
}

fn rsa_pkcs_sha256_input(msg: &[u8]) -> Vec<u8> {
    let mut v = SHA256_DIGEST_INFO_PREFIX.to_vec();
    v.extend_from_slice(&sha2::Sha256::digest(msg));
    v
}

p11_test! {
    fn sha256_rsa_pkcs_signature_verifies_independently() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        let sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcs, k.private, MSG), "C_Sign(CKM_SHA256_RSA_PKCS)");
        assert_eq!(sig.len(), 256, "RSA-2048 signature length");
        verify_rs256(&t.rsa_public(k.public), MSG, &sig).expect("rsa crate must verify the CKM_SHA256_RSA_PKCS signature");
        ok(t.session.verify(&Mechanism::Sha256RsaPkcs, k.public, MSG, &sig), "C_Verify(CKM_SHA256_RSA_PKCS)");
    }
}

p11_test! {
    fn multi_part_sha256_rsa_pkcs_signature_verifies_independently() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(3072), "rsa");
        ok(t.session.sign_init(&Mechanism::Sha256RsaPkcs, k.private), "C_SignInit");
        for chunk in MSG.chunks(7) {
            ok(t.session.sign_update(chunk), "C_SignUpdate");
        }
        let sig = ok(t.session.sign_final(), "C_SignFinal");
        verify_rs256(&t.rsa_public(k.public), MSG, &sig).expect("rsa crate must verify the multi-part signature");
        ok(t.session.verify_init(&Mechanism::Sha256RsaPkcs, k.public), "C_VerifyInit");
        for chunk in MSG.chunks(5) {
            ok(t.session.verify_update(chunk), "C_VerifyUpdate");
        }
        ok(t.session.verify_final(&sig), "C_VerifyFinal");
    }
}

p11_test! {
    fn rsa_pkcs_over_digest_info_verifies_independently() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        let sig = ok(t.session.sign(&Mechanism::RsaPkcs, k.private, &rsa_pkcs_sha256_input(MSG)), "C_Sign(CKM_RSA_PKCS, DigestInfo)");
        verify_rs256(&t.rsa_public(k.public), MSG, &sig).expect("rsa crate must verify CKM_RSA_PKCS over a SHA-256 DigestInfo as RS256");
    }
}

p11_test! {
    fn ecdsa_signatures_verify_independently_on_every_curve() {
        let t = Token::fresh();
        for c in CURVES {
            let k = t.keypair(Kp::Ec(c.oid), c.name);
            let digest = sha2_for(c.digest_len, MSG);
            let sig = ok(t.session.sign(&Mechanism::Ecdsa, k.private, &digest), &format!("C_Sign(CKM_ECDSA) on {}", c.name));
            assert_eq!(sig.len(), 2 * c.field_len, "{} signature must be raw r||s", c.name);
            verify_ecdsa_prehash(c.oid, &t.ec_point(k.public), &digest, &sig)
                .unwrap_or_else(|e| panic!("RustCrypto must verify the {} CKM_ECDSA signature: {e}", c.name));
            ok(t.session.verify(&Mechanism::Ecdsa, k.public, &digest, &sig), &format!("C_Verify(CKM_ECDSA) on {}", c.name));
        }
    }
}

p11_test! {
    fn ecdsa_sha256_signatures_verify_independently() {
        let t = Token::fresh();
        let list = ok(t.pkcs11.get_mechanism_list(t.slot), "C_GetMechanismList");
        if is_softhsm() && !list.contains(&MechanismType::ECDSA_SHA256) {
            println!("SKIPPED on SoftHSMv2: this build has no CKM_ECDSA_SHA256");
            return;
        }
        let k = t.keypair(Kp::Ec(OID_P256), "p256");
        let point = t.ec_point(k.public);
        let digest = sha2::Sha256::digest(MSG);
        let sig = ok(t.session.sign(&Mechanism::EcdsaSha256, k.private, MSG), "C_Sign(CKM_ECDSA_SHA256)");
        verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("p256 must verify the CKM_ECDSA_SHA256 signature");
        ok(t.session.sign_init(&Mechanism::EcdsaSha256, k.private), "C_SignInit");
        for chunk in MSG.chunks(9) {
            ok(t.session.sign_update(chunk), "C_SignUpdate");
        }
        let sig = ok(t.session.sign_final(), "C_SignFinal");
        verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("p256 must verify the multi-part CKM_ECDSA_SHA256 signature");
    }
}

p11_test! {
    fn openssl_verifies_signatures() {
        let t = Token::fresh();
        let dir = tempfile::tempdir().expect("temp dir");
        let rsa_k = t.keypair(Kp::Rsa(2048), "rsa");
        let ec_k = t.keypair(Kp::Ec(OID_P384), "ec");
        let spki = |o: ObjectHandle, fallback: &dyn Fn() -> Vec<u8>| match t.try_attr(o, CKA_PUBLIC_KEY_INFO) {
            Ok(v) if !v.is_empty() => v,
            // SoftHSMv2 2.6 leaves CKA_PUBLIC_KEY_INFO empty; softmhsm must fill it.
            _ if is_softhsm() => fallback(),
            Err(rv) => panic!("C_GetAttributeValue(CKA_PUBLIC_KEY_INFO) -> {}", rv_name(rv)),
            Ok(_) => panic!("CKA_PUBLIC_KEY_INFO is empty"),
        };
        use p384::pkcs8::EncodePublicKey;
        let rsa_spki = spki(rsa_k.public, &|| t.rsa_public(rsa_k.public).to_public_key_der().expect("SPKI").into_vec());
        let ec_spki = spki(ec_k.public, &|| {
            p384::PublicKey::from_sec1_bytes(&t.ec_point(ec_k.public)).expect("P-384 point").to_public_key_der().expect("SPKI").into_vec()
        });
        let rsa_sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcs, rsa_k.private, MSG), "C_Sign(CKM_SHA256_RSA_PKCS)");
        let digest = sha2::Sha384::digest(MSG);
        let ec_sig = ok(t.session.sign(&Mechanism::Ecdsa, ec_k.private, &digest), "C_Sign(CKM_ECDSA)");
        // OpenSSL wants ECDSA signatures as DER.
        let ec_sig_der = p384::ecdsa::Signature::from_slice(&ec_sig).expect("r||s").to_der().as_bytes().to_vec();
        let d = dir.path();
        let w = |name: &str, bytes: &[u8]| {
            let p = d.join(name);
            std::fs::write(&p, bytes).expect("write openssl input");
            p.into_os_string()
        };
        let (rsa_pub, rsa_sig_f, msg_f) = (w("rsa.der", &rsa_spki), w("rsa.sig", &rsa_sig), w("msg", MSG));
        let out = run_cmd("openssl", &[
            "dgst".into(), "-sha256".into(), "-keyform".into(), "DER".into(), "-verify".into(), rsa_pub, "-signature".into(), rsa_sig_f, msg_f,
        ]);
        assert!(out.contains("Verified OK"), "openssl must verify the RSA signature: {out}");
        let (ec_pub, ec_sig_f, dig_f) = (w("ec.der", &ec_spki), w("ec.sig", &ec_sig_der), w("digest", &digest));
        let out = run_cmd("openssl", &[
            "pkeyutl".into(), "-verify".into(), "-pubin".into(), "-keyform".into(), "DER".into(), "-inkey".into(), ec_pub,
            "-in".into(), dig_f, "-sigfile".into(), ec_sig_f,
        ]);
        assert!(out.contains("Signature Verified Successfully"), "openssl must verify the P-384 signature: {out}");
    }
}

p11_test! {
    fn verify_rejects_a_flipped_bit() {
        let t = Token::fresh();
        let rsa_k = t.keypair(Kp::Rsa(2048), "rsa");
        let ec_k = t.keypair(Kp::Ec(OID_P256), "ec");
        let digest = sha2::Sha256::digest(MSG);
        for (m, k, data) in [(Mechanism::Sha256RsaPkcs, rsa_k, MSG), (Mechanism::Ecdsa, ec_k, &digest[..])] {
            let mut sig = ok(t.session.sign(&m, k.private, data), "C_Sign");
            ok(t.session.verify(&m, k.public, data, &sig), "C_Verify of a good signature");
            sig[10] ^= 0x01;
            assert_rv(t.session.verify(&m, k.public, data, &sig), CKR_SIGNATURE_INVALID, &format!("C_Verify({m:?}) of a flipped-bit signature"));
        }
    }
}

p11_test! {
    fn verify_rejects_a_wrong_length() {
        let t = Token::fresh();
        let rsa_k = t.keypair(Kp::Rsa(2048), "rsa");
        let ec_k = t.keypair(Kp::Ec(OID_P256), "ec");
        let digest = sha2::Sha256::digest(MSG);
        for (m, k, data) in [(Mechanism::Sha256RsaPkcs, rsa_k, MSG), (Mechanism::Ecdsa, ec_k, &digest[..])] {
            let mut sig = ok(t.session.sign(&m, k.private, data), "C_Sign");
            sig.pop();
            assert_rv(t.session.verify(&m, k.public, data, &sig), CKR_SIGNATURE_LEN_RANGE, &format!("C_Verify({m:?}) of a short signature"));
        }
    }
}

p11_test! {
    fn sign_without_init_is_not_initialized() {
        let t = Token::fresh();
        let mut out = [0u8; 512];
        let (rv, _) = sign_raw(&t, MSG, Some(&mut out));
        check(rv, CKR_OPERATION_NOT_INITIALIZED, "C_Sign without C_SignInit");
    }
}

p11_test! {
    fn second_sign_init_is_refused_while_active() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let digest = sha2::Sha256::digest(MSG);
        check(sign_init(&t, CKM_ECDSA, k.private), CKR_OK, "C_SignInit");
        check(sign_init(&t, CKM_ECDSA, k.private), CKR_OPERATION_ACTIVE, "second C_SignInit");
        // The first operation is still usable.
        let mut out = [0u8; 64];
        let (rv, len) = sign_raw(&t, &digest, Some(&mut out));
        check(rv, CKR_OK, "C_Sign after a refused second C_SignInit");
        verify_ecdsa_prehash(OID_P256, &t.ec_point(k.public), &digest, &out[..len as usize]).expect("signature verifies");
    }
}

p11_test! {
    fn null_buffer_returns_length_and_keeps_the_operation() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        check(sign_init(&t, CKM_SHA256_RSA_PKCS, k.private), CKR_OK, "C_SignInit");
        let (rv, len) = sign_raw(&t, MSG, None);
        check(rv, CKR_OK, "C_Sign with a NULL buffer");
        assert_eq!(len, 256, "C_Sign length query for RSA-2048");
        let mut out = vec![0u8; len as usize];
        let (rv, len) = sign_raw(&t, MSG, Some(&mut out));
        check(rv, CKR_OK, "C_Sign after the length query");
        verify_rs256(&t.rsa_public(k.public), MSG, &out[..len as usize]).expect("signature verifies");
    }
}

p11_test! {
    fn short_buffer_is_too_small_and_keeps_the_operation() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let digest = sha2::Sha256::digest(MSG);
        check(sign_init(&t, CKM_ECDSA, k.private), CKR_OK, "C_SignInit");
        let mut small = [0u8; 10];
        let (rv, len) = sign_raw(&t, &digest, Some(&mut small));
        check(rv, CKR_BUFFER_TOO_SMALL, "C_Sign into a 10-byte buffer");
        assert_eq!(len, 64, "C_Sign must report the needed length on CKR_BUFFER_TOO_SMALL");
        let mut out = [0u8; 64];
        let (rv, len) = sign_raw(&t, &digest, Some(&mut out));
        check(rv, CKR_OK, "C_Sign after CKR_BUFFER_TOO_SMALL");
        verify_ecdsa_prehash(OID_P256, &t.ec_point(k.public), &digest, &out[..len as usize]).expect("signature verifies");
    }
}

p11_test! {
    fn successful_sign_ends_the_operation() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let digest = sha2::Sha256::digest(MSG);
        check(sign_init(&t, CKM_ECDSA, k.private), CKR_OK, "C_SignInit");
        let mut out = [0u8; 64];
        check(sign_raw(&t, &digest, Some(&mut out)).0, CKR_OK, "C_Sign");
        check(sign_raw(&t, &digest, Some(&mut out)).0, CKR_OPERATION_NOT_INITIALIZED, "second C_Sign after a finished operation");
    }
}

p11_test! {
    fn single_part_sign_after_update_is_refused() {
        softmhsm_only!("SoftHSMv2 does not refuse C_Sign after C_SignUpdate");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let digest = sha2::Sha256::digest(MSG);
        check(sign_init(&t, CKM_ECDSA, k.private), CKR_OK, "C_SignInit");
        let rv = unsafe { p11!(t.raw, C_SignUpdate, t.h(), digest.as_ptr() as *mut u8, digest.len() as CK_ULONG) };
        check(rv, CKR_OK, "C_SignUpdate");
        let mut out = [0u8; 64];
        check(sign_raw(&t, &digest, Some(&mut out)).0, CKR_OPERATION_ACTIVE, "C_Sign after C_SignUpdate");
    }
}

p11_test! {
    fn ecdsa_with_an_rsa_key_is_inconsistent() {
        softmhsm_only!("SoftHSMv2 accepts C_SignInit(CKM_ECDSA) with an RSA key");
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        check(sign_init(&t, CKM_ECDSA, k.private), CKR_KEY_TYPE_INCONSISTENT, "C_SignInit(CKM_ECDSA, RSA key)");
        let ec = t.keypair(Kp::Ec(OID_P256), "ec");
        check(sign_init(&t, CKM_SHA256_RSA_PKCS, ec.private), CKR_KEY_TYPE_INCONSISTENT, "C_SignInit(CKM_SHA256_RSA_PKCS, EC key)");
    }
}

p11_test! {
    fn digests_match_sha2() {
        let t = Token::fresh();
        let cases: [(Mechanism, Vec<u8>); 3] = [
            (Mechanism::Sha256, sha2::Sha256::digest(MSG).to_vec()),
            (Mechanism::Sha384, sha2::Sha384::digest(MSG).to_vec()),
            (Mechanism::Sha512, sha2::Sha512::digest(MSG).to_vec()),
        ];
        for (m, expected) in cases {
            assert_eq!(ok(t.session.digest(&m, MSG), "C_Digest"), expected, "single-part {m:?}");
            ok(t.session.digest_init(&m), "C_DigestInit");
            for chunk in MSG.chunks(11) {
                ok(t.session.digest_update(chunk), "C_DigestUpdate");
            }
            assert_eq!(ok(t.session.digest_final(), "C_DigestFinal"), expected, "multi-part {m:?}");
        }
    }
}

p11_test! {
    fn generate_random_fills_the_buffer() {
        let t = Token::fresh();
        let a = ok(t.session.generate_random_vec(64), "C_GenerateRandom");
        let b = ok(t.session.generate_random_vec(64), "C_GenerateRandom");
        assert_eq!(a.len(), 64);
        assert_ne!(a, vec![0u8; 64], "C_GenerateRandom must fill the buffer");
        assert_ne!(a, b, "two C_GenerateRandom calls returned the same 64 bytes");
    }
}

p11_test! {
    fn seed_random_is_accepted_or_not_supported() {
        let t = Token::fresh();
        let rv = rv_of(&t.session.seed_random(b"some seed bytes"));
        assert!(rv == CKR_OK || rv == CKR_RANDOM_SEED_NOT_SUPPORTED, "C_SeedRandom -> {}", rv_name(rv));
    }
}

p11_test! {
    fn mechanism_list_has_the_managed_hsm_mechanisms() {
        let t = Token::fresh();
        let list = ok(t.pkcs11.get_mechanism_list(t.slot), "C_GetMechanismList");
        let wanted = [
            (MechanismType::RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN"),
            (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
            (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
            (MechanismType::RSA_PKCS, "CKM_RSA_PKCS"),
            (MechanismType::SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS"),
            (MechanismType::ECDSA, "CKM_ECDSA"),
            (MechanismType::ECDSA_SHA256, "CKM_ECDSA_SHA256"),
            (MechanismType::SHA256, "CKM_SHA256"),
            (MechanismType::SHA384, "CKM_SHA384"),
            (MechanismType::SHA512, "CKM_SHA512"),
        ];
        for (m, name) in wanted {
            if is_softhsm() && m == MechanismType::ECDSA_SHA256 {
                println!("SKIPPED CKM_ECDSA_SHA256 on SoftHSMv2: this build lacks it");
                continue;
            }
            assert!(list.contains(&m), "C_GetMechanismList must include {name}");
            ok(t.pkcs11.get_mechanism_info(t.slot, m), &format!("C_GetMechanismInfo({name})"));
        }
    }
}

p11_test! {
    fn unlisted_mechanism_info_is_invalid() {
        let t = Token::fresh();
        let mut info = CK_MECHANISM_INFO::default();
        let unlisted = CKM_VENDOR_DEFINED | 0x00ab_cdef;
        let rv = unsafe { p11!(t.raw, C_GetMechanismInfo, t.slot.id() as CK_SLOT_ID, unlisted, &mut info) };
        check(rv, CKR_MECHANISM_INVALID, "C_GetMechanismInfo of an unlisted mechanism");
    }
}

p11_test! {
    fn sign_final_length_query_keeps_the_operation() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        check(sign_init(&t, CKM_SHA256_RSA_PKCS, k.private), CKR_OK, "C_SignInit");
        let rv = unsafe { p11!(t.raw, C_SignUpdate, t.h(), MSG.as_ptr() as *mut u8, MSG.len() as CK_ULONG) };
        check(rv, CKR_OK, "C_SignUpdate");
        let mut len: CK_ULONG = 0;
        let rv = unsafe { p11!(t.raw, C_SignFinal, t.h(), ptr::null_mut(), &mut len) };
        check(rv, CKR_OK, "C_SignFinal with a NULL buffer");
        assert_eq!(len, 256, "C_SignFinal length query for RSA-2048");
        let mut small = [0u8; 8];
        let mut small_len = small.len() as CK_ULONG;
        let rv = unsafe { p11!(t.raw, C_SignFinal, t.h(), small.as_mut_ptr(), &mut small_len) };
        check(rv, CKR_BUFFER_TOO_SMALL, "C_SignFinal into an 8-byte buffer");
        let mut out = vec![0u8; len as usize];
        let rv = unsafe { p11!(t.raw, C_SignFinal, t.h(), out.as_mut_ptr(), &mut len) };
        check(rv, CKR_OK, "C_SignFinal after the length query");
        verify_rs256(&t.rsa_public(k.public), MSG, &out[..len as usize]).expect("multi-part signature verifies");
        let rv = unsafe { p11!(t.raw, C_SignFinal, t.h(), out.as_mut_ptr(), &mut len) };
        check(rv, CKR_OPERATION_NOT_INITIALIZED, "C_SignFinal after a finished operation");
    }
}
