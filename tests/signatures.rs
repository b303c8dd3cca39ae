//! Signatures through the C ABI, each checked by an independent implementation
//! (the RustCrypto crates, and OpenSSL in one test), and the operation-state
//! rules of PKCS#11 §5.2 / §5.11.

mod common;

use common::*;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki_sys::*;
use sha2::Digest;
use std::ptr;

const MSG: &[u8] = b"softmhsm signs what the Managed HSM would sign";

p11_test! {
    fn rs256_signature_verifies_with_the_rsa_crate() {
        let t = Token::fresh();
        for bits in [2048u64, 3072, 4096] {
            let k = t.keypair(Kp::Rsa(bits), &format!("rsa{bits}"));
            let sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcs, k.private, MSG), "C_Sign(CKM_SHA256_RSA_PKCS)");
            assert_eq!(sig.len() as u64, bits / 8, "signature length for RSA-{bits}");
            verify_rs256(&t.rsa_public(k.public), MSG, &sig).unwrap_or_else(|e| panic!("RSA-{bits} RS256 by the rsa crate: {e}"));
            ok(t.session.verify(&Mechanism::Sha256RsaPkcs, k.public, MSG, &sig), "C_Verify(CKM_SHA256_RSA_PKCS)");
        }
    }
}

p11_test! {
    fn rsa_pkcs_over_a_digest_info_is_rs256() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "digestinfo");
        let mut input = SHA256_DIGEST_INFO_PREFIX.to_vec();
        input.extend_from_slice(&sha2::Sha256::digest(MSG));
        let sig = ok(t.session.sign(&Mechanism::RsaPkcs, k.private, &input), "C_Sign(CKM_RSA_PKCS, DigestInfo)");
        verify_rs256(&t.rsa_public(k.public), MSG, &sig).expect("RS256 signature by the rsa crate");
    }
}

p11_test! {
    fn rsa_pkcs_over_other_data_is_rsnull() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsnull");
        let data = b"raw data with no DigestInfo";
        let sig = ok(t.session.sign(&Mechanism::RsaPkcs, k.private, data), "C_Sign(CKM_RSA_PKCS, raw)");
        t.rsa_public(k.public)
            .verify(rsa::Pkcs1v15Sign::new_unprefixed(), data, &sig)
            .expect("RSNULL signature by the rsa crate");
        let too_long = vec![1u8; 256 - 10];
        assert_rv(t.session.sign(&Mechanism::RsaPkcs, k.private, &too_long), CKR_DATA_LEN_RANGE, "RSNULL input longer than k-11");
    }
}

p11_test! {
    fn ps256_signature_verifies_with_the_rsa_crate() {
        softmhsm_only!("checks the Managed HSM PSS rule as well");
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "pss");
        let params = PkcsPssParams { hash_alg: MechanismType::SHA256, mgf: PkcsMgfType::MGF1_SHA256, s_len: 32.into() };
        let sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcsPss(params), k.private, MSG), "C_Sign(CKM_SHA256_RSA_PKCS_PSS)");
        let digest = sha2::Sha256::digest(MSG);
        t.rsa_public(k.public)
            .verify(rsa::Pss::new_with_salt::<sha2::Sha256>(32), &digest, &sig)
            .expect("PS256 signature by the rsa crate");
        let bad = PkcsPssParams { hash_alg: MechanismType::SHA256, mgf: PkcsMgfType::MGF1_SHA256, s_len: 20.into() };
        assert_rv(t.session.sign(&Mechanism::Sha256RsaPkcsPss(bad), k.private, MSG), CKR_MECHANISM_PARAM_INVALID, "PSS salt 20 with SHA-256");
    }
}

p11_test! {
    fn ecdsa_on_every_curve_verifies_with_rustcrypto() {
        let t = Token::fresh();
        for c in CURVES {
            let k = t.keypair(Kp::Ec(c.oid), c.name);
            let digest = sha2_for(c.digest_len, MSG);
            let sig = ok(t.session.sign(&Mechanism::Ecdsa, k.private, &digest), "C_Sign(CKM_ECDSA)");
            assert_eq!(sig.len(), 2 * c.field_len, "{}: raw r||s length", c.name);
            verify_ecdsa_prehash(c.oid, &t.ec_point(k.public), &digest, &sig).unwrap_or_else(|e| panic!("{} by RustCrypto: {e}", c.name));
            ok(t.session.verify(&Mechanism::Ecdsa, k.public, &digest, &sig), "C_Verify(CKM_ECDSA)");
        }
    }
}

p11_test! {
    fn ecdsa_digest_must_match_the_curve() {
        softmhsm_only!("Managed HSM pairs each curve with one hash");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P384), "p384");
        assert_rv(t.session.sign(&Mechanism::Ecdsa, k.private, &[1u8; 32]), CKR_DATA_LEN_RANGE, "P-384 with a 32-byte digest");
        assert_rv(t.session.sign(&Mechanism::EcdsaSha256, k.private, MSG), CKR_KEY_TYPE_INCONSISTENT, "ECDSA-SHA256 on P-384");
    }
}

p11_test! {
    fn multi_part_ecdsa_sha256_equals_the_digest_of_the_parts() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "multi");
        ok(t.session.sign_init(&Mechanism::EcdsaSha256, k.private), "C_SignInit");
        for part in MSG.chunks(7) {
            ok(t.session.sign_update(part), "C_SignUpdate");
        }
        let sig = ok(t.session.sign_final(), "C_SignFinal");
        let digest = sha2::Sha256::digest(MSG);
        verify_ecdsa_prehash(OID_P256, &t.ec_point(k.public), &digest, &sig).expect("multi-part ES256 by p256");
        ok(t.session.verify_init(&Mechanism::EcdsaSha256, k.public), "C_VerifyInit");
        for part in MSG.chunks(5) {
            ok(t.session.verify_update(part), "C_VerifyUpdate");
        }
        ok(t.session.verify_final(&sig), "C_VerifyFinal");
    }
}

p11_test! {
    fn verify_rejects_a_flipped_bit_and_a_wrong_length() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "verify");
        let mut sig = ok(t.session.sign(&Mechanism::Sha256RsaPkcs, k.private, MSG), "C_Sign");
        sig[17] ^= 0x01;
        assert_rv(t.session.verify(&Mechanism::Sha256RsaPkcs, k.public, MSG, &sig), CKR_SIGNATURE_INVALID, "flipped bit");
        assert_rv(t.session.verify(&Mechanism::Sha256RsaPkcs, k.public, MSG, &sig[1..]), CKR_SIGNATURE_LEN_RANGE, "short signature");
        let e = t.keypair(Kp::Ec(OID_P256), "verify-ec");
        let digest = sha2::Sha256::digest(MSG);
        let mut sig = ok(t.session.sign(&Mechanism::Ecdsa, e.private, &digest), "C_Sign(ECDSA)");
        sig[40] ^= 0x80;
        assert_rv(t.session.verify(&Mechanism::Ecdsa, e.public, &digest, &sig), CKR_SIGNATURE_INVALID, "flipped ECDSA bit");
    }
}

p11_test! {
    fn openssl_verifies_signatures_from_the_public_key_info() {
        if !tool("openssl") {
            return;
        }
        let t = Token::fresh();
        let dir = tempfile::tempdir().expect("temp dir");
        let msg_path = dir.path().join("msg");
        std::fs::write(&msg_path, MSG).expect("write message");
        let cases = [(Kp::Rsa(2048), "rsa", "sha256"), (Kp::Ec(OID_P256), "p256", "sha256"), (Kp::Ec(OID_P384), "p384", "sha384")];
        for (kind, name, md) in cases {
            let k = t.keypair(kind, name);
            let spki = t.attr(k.public, CKA_PUBLIC_KEY_INFO, "CKA_PUBLIC_KEY_INFO");
            let pub_path = dir.path().join(format!("{name}.der"));
            std::fs::write(&pub_path, &spki).expect("write SPKI");
            let sig = match kind {
                Kp::Rsa(_) => ok(t.session.sign(&Mechanism::Sha256RsaPkcs, k.private, MSG), "C_Sign"),
                Kp::Ec(oid) => {
                    let m = if oid == OID_P384 { Mechanism::EcdsaSha384 } else { Mechanism::EcdsaSha256 };
                    ecdsa_raw_to_der(&ok(t.session.sign(&m, k.private, MSG), "C_Sign"))
                }
            };
            let sig_path = dir.path().join(format!("{name}.sig"));
            std::fs::write(&sig_path, &sig).expect("write signature");
            let out = std::process::Command::new("openssl")
                .args(["dgst", &format!("-{md}"), "-keyform", "DER", "-verify"])
                .arg(&pub_path)
                .arg("-signature")
                .arg(&sig_path)
                .arg(&msg_path)
                .output();
            let o = out.unwrap_or_else(|e| panic!("running openssl: {e}"));
            assert!(o.status.success(), "openssl rejected the {name} signature: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

/// DER `ECDSA-Sig-Value` of a raw r‖s signature, for OpenSSL.
fn ecdsa_raw_to_der(raw: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().position(|x| *x != 0).unwrap_or(b.len() - 1)..];
        let mut v = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        v.push((b.len() + pad as usize) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut der = vec![0x30];
    if body.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(body.len() as u8);
    der.extend_from_slice(&body);
    der
}

p11_test! {
    fn sign_without_init_is_not_initialized() {
        let t = Token::fresh();
        let mut out = [0u8; 512];
        let mut len = out.len() as CK_ULONG;
        let mut data = *b"data";
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut len) };
        check(rv, CKR_OPERATION_NOT_INITIALIZED, "C_Sign without C_SignInit");
    }
}

p11_test! {
    fn output_length_convention_keeps_the_operation() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "lengths");
        let mut mech = CK_MECHANISM { mechanism: CKM_SHA256_RSA_PKCS, pParameter: ptr::null_mut(), ulParameterLen: 0 };
        let rv = unsafe { p11!(t.raw, C_SignInit, t.h(), &mut mech, k.private.handle()) };
        check(rv, CKR_OK, "C_SignInit");
        let rv = unsafe { p11!(t.raw, C_SignInit, t.h(), &mut mech, k.private.handle()) };
        check(rv, CKR_OPERATION_ACTIVE, "second C_SignInit");
        let mut data = MSG.to_vec();
        let mut len: CK_ULONG = 0;
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), data.as_mut_ptr(), data.len() as CK_ULONG, ptr::null_mut(), &mut len) };
        check(rv, CKR_OK, "C_Sign length query");
        assert_eq!(len, 256, "length query answers the signature length");
        let mut small = [0u8; 100];
        let mut small_len = small.len() as CK_ULONG;
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), data.as_mut_ptr(), data.len() as CK_ULONG, small.as_mut_ptr(), &mut small_len) };
        check(rv, CKR_BUFFER_TOO_SMALL, "C_Sign into 100 bytes");
        assert_eq!(small_len, 256, "a short buffer reports the length needed");
        let mut out = [0u8; 256];
        let mut out_len = out.len() as CK_ULONG;
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), data.as_mut_ptr(), data.len() as CK_ULONG, out.as_mut_ptr(), &mut out_len) };
        check(rv, CKR_OK, "C_Sign after the length query and the short buffer");
        verify_rs256(&t.rsa_public(k.public), MSG, &out).expect("signature by the rsa crate");
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), data.as_mut_ptr(), data.len() as CK_ULONG, out.as_mut_ptr(), &mut out_len) };
        check(rv, CKR_OPERATION_NOT_INITIALIZED, "C_Sign after the operation finished");
    }
}

p11_test! {
    fn single_part_sign_after_update_is_refused() {
        softmhsm_only!("DESIGN §5 rule");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "mixed");
        ok(t.session.sign_init(&Mechanism::EcdsaSha256, k.private), "C_SignInit");
        ok(t.session.sign_update(b"part"), "C_SignUpdate");
        let mut out = [0u8; 64];
        let mut len = out.len() as CK_ULONG;
        let mut data = *b"rest";
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut len) };
        check(rv, CKR_OPERATION_ACTIVE, "C_Sign after C_SignUpdate");
    }
}

p11_test! {
    fn digests_match_the_sha2_crate() {
        let t = Token::fresh();
        for (mech, want) in [
            (Mechanism::Sha256, sha2::Sha256::digest(MSG).to_vec()),
            (Mechanism::Sha384, sha2::Sha384::digest(MSG).to_vec()),
            (Mechanism::Sha512, sha2::Sha512::digest(MSG).to_vec()),
        ] {
            assert_eq!(ok(t.session.digest(&mech, MSG), "C_Digest"), want, "single-part {mech:?}");
            ok(t.session.digest_init(&mech), "C_DigestInit");
            for part in MSG.chunks(3) {
                ok(t.session.digest_update(part), "C_DigestUpdate");
            }
            assert_eq!(ok(t.session.digest_final(), "C_DigestFinal"), want, "multi-part {mech:?}");
        }
    }
}

p11_test! {
    fn ecdsa_with_an_rsa_key_is_key_type_inconsistent() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Rsa(2048), "rsa");
        assert_rv(t.session.sign(&Mechanism::Ecdsa, k.private, &[0u8; 32]), CKR_KEY_TYPE_INCONSISTENT, "CKM_ECDSA with an RSA key");
    }
}
