//! Provider tests: cross-provider agreement, known-answer vectors, an OpenSSL
//! cross-check and the error codes each failure must carry.

use super::rustcrypto::RustCrypto;
use super::spki::spki_der;
use super::*;
use crate::error::Error;
use cryptoki_sys::*;
use std::sync::OnceLock;

/// Every provider this build has; the routed one last.
fn providers() -> Vec<&'static dyn Provider> {
    vec![
        &RustCrypto,
        #[cfg(feature = "aws-lc")]
        &aws_lc::AwsLc,
        router::routed(),
    ]
}

/// Every ordered (producer, consumer) pair, including a provider with itself.
fn pairs() -> Vec<(&'static dyn Provider, &'static dyn Provider)> {
    let all = providers();
    all.iter()
        .flat_map(|a| all.iter().map(move |b| (*a, *b)))
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

fn rv<T>(r: Result<T>) -> CK_RV {
    match r {
        Ok(_) => CKR_OK,
        Err(Error(rv)) => rv,
    }
}

/// One RSA-2048 key for the whole test run: keygen in an unoptimised build costs seconds.
fn rsa_pkcs8() -> &'static [u8] {
    static KEY: OnceLock<SecretBytes> = OnceLock::new();
    KEY.get_or_init(|| provider().generate_rsa(2048).expect("rsa keygen"))
}

fn ec_pkcs8(curve: Curve) -> SecretBytes {
    provider().generate_ec(curve).expect("ec keygen")
}

fn rsa_public_of(p: &dyn Provider, private: &dyn RsaPrivateKey) -> Arc<dyn RsaPublicKey> {
    match private.public() {
        PublicKey::Rsa { n, e } => p.rsa_public(&n, &e).expect("rsa public"),
        _ => panic!("not an RSA key"),
    }
}

fn ec_public_of(p: &dyn Provider, private: &dyn EcPrivateKey) -> Arc<dyn EcPublicKey> {
    match private.public() {
        PublicKey::Ec { curve, point } => p.ec_public(curve, &point).expect("ec public"),
        _ => panic!("not an EC key"),
    }
}

const SIGNING_HASHES: [Hash; 3] = [Hash::Sha256, Hash::Sha384, Hash::Sha512];

// ------------------------------------------------------------ cross-provider

#[test]
fn rs256_384_512_signed_by_one_verify_in_the_other() {
    for (a, b) in pairs() {
        let signer = a.rsa_private(rsa_pkcs8()).unwrap();
        let verifier = rsa_public_of(b, signer.as_ref());
        for hash in SIGNING_HASHES {
            let digest = digest(a, hash, b"RS message");
            let sig = signer.sign_pkcs1(hash, &digest).unwrap();
            assert_eq!(sig.len(), signer.size());
            verifier
                .verify_pkcs1(hash, &digest, &sig)
                .unwrap_or_else(|e| panic!("{} -> {} {hash:?}: {e}", a.name(), b.name()));
        }
    }
}

#[test]
fn ps256_384_512_signed_by_one_verify_in_the_other() {
    for (a, b) in pairs() {
        let signer = a.rsa_private(rsa_pkcs8()).unwrap();
        let verifier = rsa_public_of(b, signer.as_ref());
        for hash in SIGNING_HASHES {
            let digest = digest(a, hash, b"PS message");
            let sig = signer.sign_pss(hash, &digest).unwrap();
            verifier
                .verify_pss(hash, &digest, &sig)
                .unwrap_or_else(|e| panic!("{} -> {} {hash:?}: {e}", a.name(), b.name()));
        }
    }
}

#[test]
fn rsnull_signed_by_one_verifies_in_the_other() {
    for (a, b) in pairs() {
        let signer = a.rsa_private(rsa_pkcs8()).unwrap();
        let verifier = rsa_public_of(b, signer.as_ref());
        // A TLS 1.0 style MD5||SHA-1 blob: 36 bytes, no DigestInfo.
        let data = [0x5au8; 36];
        let sig = signer.sign_pkcs1_raw(&data).unwrap();
        verifier.verify_pkcs1_raw(&data, &sig).unwrap();
        // Longest allowed input, k - 11 bytes.
        let data = vec![0x33u8; signer.size() - 11];
        let sig = signer.sign_pkcs1_raw(&data).unwrap();
        verifier.verify_pkcs1_raw(&data, &sig).unwrap();
    }
}

#[test]
fn rsnull_of_a_digest_info_equals_rs256() {
    let p = provider();
    let key = p.rsa_private(rsa_pkcs8()).unwrap();
    let digest = digest(p, Hash::Sha256, b"same bytes");
    let mut info = Hash::Sha256.digest_info_prefix().to_vec();
    info.extend_from_slice(&digest);
    // PKCS#1 v1.5 signing is deterministic, so the two paths must agree exactly.
    assert_eq!(
        key.sign_pkcs1_raw(&info).unwrap(),
        key.sign_pkcs1(Hash::Sha256, &digest).unwrap()
    );
}

#[test]
fn rsa_encrypted_by_one_decrypts_in_the_other() {
    let message = b"a 32-byte AES key goes here....!";
    for (a, b) in pairs() {
        let private = b.rsa_private(rsa_pkcs8()).unwrap();
        let public = rsa_public_of(a, private.as_ref());
        let ct = public.encrypt_pkcs1(message).unwrap();
        assert_eq!(ct.len(), private.size());
        assert_eq!(&private.decrypt_pkcs1(&ct).unwrap()[..], message);
        for hash in [Hash::Sha1, Hash::Sha256] {
            let ct = public.encrypt_oaep(hash, message).unwrap();
            let pt = private
                .decrypt_oaep(hash, &ct)
                .unwrap_or_else(|e| panic!("{} -> {} {hash:?}: {e}", a.name(), b.name()));
            assert_eq!(&pt[..], message);
        }
    }
}

#[test]
fn ecdsa_signed_by_one_verifies_in_the_other() {
    for curve in Curve::ALL {
        let pkcs8 = ec_pkcs8(curve);
        for (a, b) in pairs() {
            let signer = a.ec_private(curve, &pkcs8).unwrap();
            let verifier = ec_public_of(b, signer.as_ref());
            // Several signatures so that high-S and low-S both occur (k256 insists
            // on low-S unless normalised; aws-lc produces either).
            for i in 0..8u8 {
                let digest = digest(a, curve.hash(), &[i; 5]);
                let sig = signer.sign_prehash(&digest).unwrap();
                assert_eq!(sig.len(), 2 * curve.field_len());
                verifier
                    .verify_prehash(&digest, &sig)
                    .unwrap_or_else(|e| panic!("{curve:?} {} -> {}: {e}", a.name(), b.name()));
            }
        }
    }
}

#[test]
fn aes_gcm_sealed_by_one_opens_in_the_other() {
    for key_len in [16, 24, 32] {
        let key = vec![0x42u8; key_len];
        for (a, b) in pairs() {
            let (ka, kb) = (a.aes(&key).unwrap(), b.aes(&key).unwrap());
            for tag_len in [16, 12] {
                for pt in [&b""[..], b"short", &[7u8; 100]] {
                    let iv = [9u8; 12];
                    let sealed = ka.gcm_seal(&iv, b"aad", pt, tag_len).unwrap();
                    assert_eq!(sealed.len(), pt.len() + tag_len);
                    let opened = kb
                        .gcm_open(&iv, b"aad", &sealed, tag_len)
                        .unwrap_or_else(|e| {
                            panic!("{key_len} {tag_len} {} -> {}: {e}", a.name(), b.name())
                        });
                    assert_eq!(&opened[..], pt);
                }
            }
        }
    }
}

#[test]
fn aes_cbc_and_cbc_pad_encrypted_by_one_decrypt_in_the_other() {
    let iv = [3u8; 16];
    for key_len in [16, 24, 32] {
        let key = vec![0x24u8; key_len];
        for (a, b) in pairs() {
            let (ka, kb) = (a.aes(&key).unwrap(), b.aes(&key).unwrap());
            let block_aligned = [5u8; 48];
            let ct = ka.cbc_encrypt(&iv, &block_aligned, false).unwrap();
            assert_eq!(ct.len(), 48);
            assert_eq!(
                &kb.cbc_decrypt(&iv, &ct, false).unwrap()[..],
                &block_aligned
            );
            for len in [0, 1, 15, 16, 17, 32] {
                let pt = vec![0xa5u8; len];
                let ct = ka.cbc_encrypt(&iv, &pt, true).unwrap();
                assert_eq!(ct.len(), (len / 16 + 1) * 16);
                assert_eq!(&kb.cbc_decrypt(&iv, &ct, true).unwrap()[..], &pt[..]);
            }
        }
    }
}

#[test]
fn aes_kw_and_kwp_wrapped_by_one_unwrap_in_the_other() {
    for key_len in [16, 24, 32] {
        let key = vec![0x11u8; key_len];
        for (a, b) in pairs() {
            let (ka, kb) = (a.aes(&key).unwrap(), b.aes(&key).unwrap());
            for len in [16, 24, 32, 40] {
                let pt = vec![0x77u8; len];
                let wrapped = ka.kw_wrap(&pt).unwrap();
                assert_eq!(wrapped.len(), len + 8);
                assert_eq!(&kb.kw_unwrap(&wrapped).unwrap()[..], &pt[..]);
            }
            for len in [1, 7, 8, 9, 20, 32, 33] {
                let pt = vec![0x66u8; len];
                let wrapped = ka.kwp_wrap(&pt).unwrap();
                assert_eq!(wrapped.len(), len.div_ceil(8) * 8 + 8);
                assert_eq!(&kb.kwp_unwrap(&wrapped).unwrap()[..], &pt[..]);
            }
        }
    }
}

#[test]
fn pkcs8_generated_by_one_parses_in_the_other() {
    for gen in providers() {
        let rsa = if gen.name() == RustCrypto.name() {
            // The shared key already comes from the default provider; generate one
            // here only where keygen is not the default's.
            gen.generate_rsa(2048).unwrap()
        } else {
            Zeroizing::new(rsa_pkcs8().to_vec())
        };
        let ecs: Vec<_> = Curve::ALL
            .iter()
            .map(|c| (*c, gen.generate_ec(*c).unwrap()))
            .collect();
        for user in providers() {
            let key = user.rsa_private(&rsa).unwrap();
            assert_eq!(key.public().bits(), 2048);
            assert_eq!(key.public(), gen.rsa_private(&rsa).unwrap().public());
            for (curve, pkcs8) in &ecs {
                let key = user
                    .ec_private(*curve, pkcs8)
                    .unwrap_or_else(|e| panic!("{curve:?} {} -> {}: {e}", gen.name(), user.name()));
                assert_eq!(
                    key.public(),
                    gen.ec_private(*curve, pkcs8).unwrap().public()
                );
            }
        }
    }
}

#[test]
fn rsa_keygen_honours_size_and_exponent() {
    let p = provider();
    let key = p.rsa_private(rsa_pkcs8()).unwrap();
    assert_eq!(key.size(), 256);
    match key.public() {
        PublicKey::Rsa { n, e } => {
            assert_eq!(e, [1, 0, 1]);
            assert_eq!(n.len(), 256);
        }
        _ => unreachable!(),
    }
    for p in providers() {
        assert_eq!(rv(p.generate_rsa(1024)), CKR_KEY_SIZE_RANGE);
    }
}

/// The components of the shared RSA key, as a PKCS#11 import would supply them.
fn rsa_parts(with_primes: bool) -> RsaParts {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let key = rsa::RsaPrivateKey::from_pkcs8_der(rsa_pkcs8()).unwrap();
    let primes = key.primes();
    RsaParts {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
        d: Zeroizing::new(key.d().to_bytes_be()),
        p: with_primes.then(|| Zeroizing::new(primes[0].to_bytes_be())),
        q: with_primes.then(|| Zeroizing::new(primes[1].to_bytes_be())),
    }
}

#[test]
fn import_rsa_round_trips() {
    let original = provider().rsa_private(rsa_pkcs8()).unwrap().public();
    for p in providers() {
        for with_primes in [true, false] {
            let pkcs8 = p.import_rsa(&rsa_parts(with_primes)).unwrap();
            for user in providers() {
                let key = user.rsa_private(&pkcs8).unwrap();
                assert_eq!(key.public(), original);
                let digest = digest(user, Hash::Sha256, b"imported");
                let sig = key.sign_pkcs1(Hash::Sha256, &digest).unwrap();
                rsa_public_of(p, key.as_ref())
                    .verify_pkcs1(Hash::Sha256, &digest, &sig)
                    .unwrap();
            }
        }
    }
}

#[test]
fn import_rsa_rejects_inconsistent_components() {
    let mut parts = rsa_parts(true);
    parts.d[10] ^= 1;
    for p in providers() {
        assert_eq!(rv(p.import_rsa(&parts)), CKR_ATTRIBUTE_VALUE_INVALID);
    }
}

/// The private scalar inside EC PKCS#8, big-endian and field-sized.
fn ec_scalar(curve: Curve, pkcs8: &[u8]) -> Vec<u8> {
    use p256::pkcs8::DecodePrivateKey;
    match curve {
        Curve::P256 => p256::SecretKey::from_pkcs8_der(pkcs8)
            .unwrap()
            .to_bytes()
            .to_vec(),
        Curve::P256K => k256::SecretKey::from_pkcs8_der(pkcs8)
            .unwrap()
            .to_bytes()
            .to_vec(),
        Curve::P384 => p384::SecretKey::from_pkcs8_der(pkcs8)
            .unwrap()
            .to_bytes()
            .to_vec(),
        Curve::P521 => p521::SecretKey::from_pkcs8_der(pkcs8)
            .unwrap()
            .to_bytes()
            .to_vec(),
    }
}

#[test]
fn import_ec_round_trips() {
    for curve in Curve::ALL {
        let pkcs8 = ec_pkcs8(curve);
        let original = provider().ec_private(curve, &pkcs8).unwrap().public();
        let scalar = ec_scalar(curve, &pkcs8);
        assert_eq!(scalar.len(), curve.field_len());
        for p in providers() {
            let imported = p.import_ec(curve, &scalar).unwrap();
            for user in providers() {
                assert_eq!(
                    user.ec_private(curve, &imported).unwrap().public(),
                    original
                );
            }
        }
    }
}

#[test]
fn import_ec_accepts_a_scalar_without_leading_zeros() {
    let mut scalar = vec![0u8; 32];
    scalar[31] = 7;
    for p in providers() {
        let full = p.import_ec(Curve::P256, &scalar).unwrap();
        let short = p.import_ec(Curve::P256, &[7]).unwrap();
        assert_eq!(
            p.ec_private(Curve::P256, &full).unwrap().public(),
            p.ec_private(Curve::P256, &short).unwrap().public()
        );
        assert_eq!(
            rv(p.import_ec(Curve::P256, &[0; 32])),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            rv(p.import_ec(Curve::P256, &[1; 33])),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
    }
}

#[test]
fn spki_of_rsa_and_ec_keys_parse_back() {
    use p256::pkcs8::DecodePublicKey;
    let key = provider().rsa_private(rsa_pkcs8()).unwrap().public();
    let parsed = rsa::RsaPublicKey::from_public_key_der(&spki_der(&key)).unwrap();
    use rsa::traits::PublicKeyParts;
    match &key {
        PublicKey::Rsa { n, e } => {
            assert_eq!(&parsed.n().to_bytes_be(), n);
            assert_eq!(&parsed.e().to_bytes_be(), e);
        }
        _ => unreachable!(),
    }
    let ec = provider()
        .ec_private(Curve::P384, &ec_pkcs8(Curve::P384))
        .unwrap()
        .public();
    p384::PublicKey::from_public_key_der(&spki_der(&ec)).unwrap();
}

#[test]
fn digests_match_fips_180_abc() {
    // FIPS 180-2 appendix examples, message "abc".
    let want = [
        (Hash::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (
            Hash::Sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            Hash::Sha384,
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7",
        ),
        (
            Hash::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
    ];
    for p in providers() {
        for (hash, hex_digest) in want {
            let mut h = p.hasher(hash);
            h.update(b"a");
            h.update(b"bc");
            assert_eq!(h.finish(), hex(hex_digest), "{} {hash:?}", p.name());
        }
    }
}

#[test]
fn random_fills_the_buffer() {
    for p in providers() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        p.random(&mut a).unwrap();
        p.random(&mut b).unwrap();
        assert_ne!(a, b);
    }
}

// ------------------------------------------------------------ known answers

/// RFC 3394 §4.1–4.6: (KEK, key data, wrapped).
const RFC3394: [(&str, &str, &str); 6] = [
    (
        "000102030405060708090A0B0C0D0E0F",
        "00112233445566778899AABBCCDDEEFF",
        "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5",
    ),
    (
        "000102030405060708090A0B0C0D0E0F1011121314151617",
        "00112233445566778899AABBCCDDEEFF",
        "96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D",
    ),
    (
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF",
        "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7",
    ),
    (
        "000102030405060708090A0B0C0D0E0F1011121314151617",
        "00112233445566778899AABBCCDDEEFF0001020304050607",
        "031D33264E15D332 68F24EC260743EDC E1C6C7DDEE725A93 6BA814915C6762D2",
    ),
    (
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF0001020304050607",
        "A8F9BC1612C68B3F F6E6F4FBE30E71E4 769C8B80A32CB895 8CD5D17D6B254DA1",
    ),
    (
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
        "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21",
    ),
];

#[test]
fn kw_matches_rfc3394_section_4() {
    for p in providers() {
        for (kek, data, wrapped) in RFC3394 {
            let key = p.aes(&hex(kek)).unwrap();
            assert_eq!(
                key.kw_wrap(&hex(data)).unwrap(),
                hex(wrapped),
                "{}",
                p.name()
            );
            assert_eq!(&key.kw_unwrap(&hex(wrapped)).unwrap()[..], &hex(data)[..]);
        }
    }
}

/// RFC 5649 §6: both examples use this 192-bit KEK.
const RFC5649_KEK: &str = "5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8";
const RFC5649: [(&str, &str); 2] = [
    (
        "c37b7e6492584340 bed1220780894115 5068f738",
        "138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a",
    ),
    ("466f7250617369", "afbeb0f07dfbf541 9200f2ccb50bb24f"),
];

#[test]
fn kwp_matches_rfc5649_section_6() {
    for p in providers() {
        let key = p.aes(&hex(RFC5649_KEK)).unwrap();
        for (data, wrapped) in RFC5649 {
            assert_eq!(
                key.kwp_wrap(&hex(data)).unwrap(),
                hex(wrapped),
                "{}",
                p.name()
            );
            assert_eq!(&key.kwp_unwrap(&hex(wrapped)).unwrap()[..], &hex(data)[..]);
        }
    }
}

const GCM_P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                     1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
/// The 60-byte plaintext of test cases 4 and 16 (GCM_P without its last 4 bytes).
const GCM_P60: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                       1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
const GCM_A: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";

/// McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", appendix B:
/// test cases 2–4 (AES-128) and 13–16 (AES-256), 96-bit IVs.
/// (name, K, P, A, IV, C, T)
const GCM: [(&str, &str, &str, &str, &str, &str, &str); 7] = [
    (
        "TC2",
        "00000000000000000000000000000000",
        "00000000000000000000000000000000",
        "",
        "000000000000000000000000",
        "0388dace60b6a392f328c2b971b2fe78",
        "ab6e47d42cec13bdf53a67b21257bddf",
    ),
    (
        "TC3",
        "feffe9928665731c6d6a8f9467308308",
        GCM_P,
        "",
        "cafebabefacedbaddecaf888",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
         21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (
        "TC4",
        "feffe9928665731c6d6a8f9467308308",
        GCM_P60,
        GCM_A,
        "cafebabefacedbaddecaf888",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
         21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (
        "TC13",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "",
        "",
        "000000000000000000000000",
        "",
        "530f8afbc74536b9a963b4f1c4cb738b",
    ),
    (
        "TC14",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000",
        "",
        "000000000000000000000000",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    ),
    (
        "TC15",
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        GCM_P,
        "",
        "cafebabefacedbaddecaf888",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    (
        "TC16",
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        GCM_P60,
        GCM_A,
        "cafebabefacedbaddecaf888",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
];

#[test]
fn gcm_matches_the_gcm_spec_test_cases() {
    for p in providers() {
        for (name, k, pt, aad, iv, ct, tag) in GCM {
            let key = p.aes(&hex(k)).unwrap();
            let (pt, aad, iv) = (hex(pt), hex(aad), hex(iv));
            let mut sealed = hex(ct);
            sealed.extend_from_slice(&hex(tag));
            assert_eq!(
                key.gcm_seal(&iv, &aad, &pt, 16).unwrap(),
                sealed,
                "{name} {}",
                p.name()
            );
            assert_eq!(&key.gcm_open(&iv, &aad, &sealed, 16).unwrap()[..], &pt[..]);
            // The 12-byte tag is the full tag's prefix.
            let short = &sealed[..sealed.len() - 4];
            assert_eq!(key.gcm_seal(&iv, &aad, &pt, 12).unwrap(), short, "{name}");
            assert_eq!(&key.gcm_open(&iv, &aad, short, 12).unwrap()[..], &pt[..]);
        }
    }
}

/// NIST SP 800-38A appendix F.2.1/F.2.3/F.2.5 (CBC-AES128/192/256), one IV and plaintext.
const CBC_IV: &str = "000102030405060708090a0b0c0d0e0f";
const CBC_P: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51\
                     30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
const CBC: [(&str, &str); 3] = [
    (
        "2b7e151628aed2a6abf7158809cf4f3c",
        "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2\
         73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7",
    ),
    (
        "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
        "4f021db243bc633d7178183a9fa071e8 b4d9ada9ad7dedf4e5e738763f69145a\
         571b242012fb7ae07fa9baac3df102e0 08b0e27988598881d920a9e64f5615cd",
    ),
    (
        "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d\
         39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b",
    ),
];

#[test]
fn cbc_matches_sp800_38a_f2() {
    let iv: [u8; 16] = hex(CBC_IV).try_into().unwrap();
    for p in providers() {
        for (k, ct) in CBC {
            let key = p.aes(&hex(k)).unwrap();
            assert_eq!(
                key.cbc_encrypt(&iv, &hex(CBC_P), false).unwrap(),
                hex(ct),
                "{}",
                p.name()
            );
            assert_eq!(
                &key.cbc_decrypt(&iv, &hex(ct), false).unwrap()[..],
                &hex(CBC_P)[..]
            );
            // CBC-PAD adds one full block of 0x10 bytes after a block-aligned input.
            let padded = key.cbc_encrypt(&iv, &hex(CBC_P), true).unwrap();
            assert_eq!(&padded[..64], &hex(ct)[..]);
            assert_eq!(padded.len(), 80);
        }
    }
}

// ------------------------------------------------------------ negative cases

#[test]
fn tampered_signature_is_signature_invalid() {
    for (a, b) in pairs() {
        let signer = a.rsa_private(rsa_pkcs8()).unwrap();
        let verifier = rsa_public_of(b, signer.as_ref());
        let digest = digest(a, Hash::Sha256, b"m");
        let mut sig = signer.sign_pkcs1(Hash::Sha256, &digest).unwrap();
        sig[100] ^= 1;
        assert_eq!(
            rv(verifier.verify_pkcs1(Hash::Sha256, &digest, &sig)),
            CKR_SIGNATURE_INVALID
        );
        assert_eq!(
            rv(verifier.verify_pss(Hash::Sha256, &digest, &sig)),
            CKR_SIGNATURE_INVALID
        );
        assert_eq!(
            rv(verifier.verify_pkcs1_raw(&digest, &sig)),
            CKR_SIGNATURE_INVALID
        );
    }
    for curve in Curve::ALL {
        let pkcs8 = ec_pkcs8(curve);
        for (a, b) in pairs() {
            let signer = a.ec_private(curve, &pkcs8).unwrap();
            let verifier = ec_public_of(b, signer.as_ref());
            let digest = digest(a, curve.hash(), b"m");
            let mut sig = signer.sign_prehash(&digest).unwrap();
            sig[3] ^= 0x40;
            assert_eq!(
                rv(verifier.verify_prehash(&digest, &sig)),
                CKR_SIGNATURE_INVALID
            );
            // r = s = 0 is never a valid signature.
            let zero = vec![0u8; sig.len()];
            assert_eq!(
                rv(verifier.verify_prehash(&digest, &zero)),
                CKR_SIGNATURE_INVALID
            );
        }
    }
}

#[test]
fn signature_of_wrong_length_is_signature_len_range() {
    for p in providers() {
        let signer = p.rsa_private(rsa_pkcs8()).unwrap();
        let verifier = rsa_public_of(p, signer.as_ref());
        let digest = digest(p, Hash::Sha256, b"m");
        let sig = signer.sign_pkcs1(Hash::Sha256, &digest).unwrap();
        let short = &sig[..sig.len() - 1];
        assert_eq!(
            rv(verifier.verify_pkcs1(Hash::Sha256, &digest, short)),
            CKR_SIGNATURE_LEN_RANGE
        );
        assert_eq!(
            rv(verifier.verify_pss(Hash::Sha256, &digest, short)),
            CKR_SIGNATURE_LEN_RANGE
        );
        assert_eq!(
            rv(verifier.verify_pkcs1_raw(&digest, short)),
            CKR_SIGNATURE_LEN_RANGE
        );
        for curve in Curve::ALL {
            let signer = p.ec_private(curve, &ec_pkcs8(curve)).unwrap();
            let verifier = ec_public_of(p, signer.as_ref());
            let digest = crate::crypto::digest(p, curve.hash(), b"m");
            let mut sig = signer.sign_prehash(&digest).unwrap();
            sig.push(0);
            assert_eq!(
                rv(verifier.verify_prehash(&digest, &sig)),
                CKR_SIGNATURE_LEN_RANGE
            );
        }
    }
}

#[test]
fn rsa1_5_decrypt_of_garbage_is_encrypted_data_invalid() {
    for p in providers() {
        let key = p.rsa_private(rsa_pkcs8()).unwrap();
        // Below the modulus (top byte 0) so only the padding check can fail.
        let mut garbage = vec![0x5cu8; key.size()];
        garbage[0] = 0;
        assert_eq!(
            rv(key.decrypt_pkcs1(&garbage)),
            CKR_ENCRYPTED_DATA_INVALID,
            "{}",
            p.name()
        );
        assert_eq!(
            rv(key.decrypt_oaep(Hash::Sha1, &garbage)),
            CKR_ENCRYPTED_DATA_INVALID
        );
        assert_eq!(
            rv(key.decrypt_pkcs1(&garbage[1..])),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
    }
}

#[test]
fn gcm_with_a_bad_tag_is_encrypted_data_invalid() {
    for p in providers() {
        let key = p.aes(&[1u8; 32]).unwrap();
        let iv = [2u8; 12];
        for tag_len in [16, 12] {
            let mut sealed = key.gcm_seal(&iv, b"aad", b"secret", tag_len).unwrap();
            let last = sealed.len() - 1;
            sealed[last] ^= 1;
            assert_eq!(
                rv(key.gcm_open(&iv, b"aad", &sealed, tag_len)),
                CKR_ENCRYPTED_DATA_INVALID
            );
            sealed[last] ^= 1;
            assert_eq!(
                rv(key.gcm_open(&iv, b"AAD", &sealed, tag_len)),
                CKR_ENCRYPTED_DATA_INVALID
            );
        }
        assert_eq!(
            rv(key.gcm_open(&iv, b"", &[0; 5], 16)),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(key.gcm_seal(&[0; 8], b"", b"x", 16)),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(
            rv(key.gcm_seal(&iv, b"", b"x", 8)),
            CKR_MECHANISM_PARAM_INVALID
        );
    }
}

#[test]
fn kw_with_bad_integrity_is_wrapped_key_invalid() {
    for p in providers() {
        for key_len in [16, 24, 32] {
            let key = p.aes(&vec![4u8; key_len]).unwrap();
            let mut wrapped = key.kw_wrap(&[8u8; 32]).unwrap();
            wrapped[5] ^= 1;
            assert_eq!(
                rv(key.kw_unwrap(&wrapped)),
                CKR_WRAPPED_KEY_INVALID,
                "{}",
                p.name()
            );
            let mut wrapped = key.kwp_wrap(&[8u8; 20]).unwrap();
            wrapped[5] ^= 1;
            assert_eq!(
                rv(key.kwp_unwrap(&wrapped)),
                CKR_WRAPPED_KEY_INVALID,
                "{}",
                p.name()
            );
            assert_eq!(rv(key.kw_unwrap(&[0; 20])), CKR_WRAPPED_KEY_LEN_RANGE);
            assert_eq!(rv(key.kw_wrap(&[0; 12])), CKR_DATA_LEN_RANGE);
        }
    }
}

#[test]
fn rsnull_input_longer_than_k_minus_11_is_data_len_range() {
    for p in providers() {
        let key = p.rsa_private(rsa_pkcs8()).unwrap();
        let data = vec![1u8; key.size() - 10];
        assert_eq!(
            rv(key.sign_pkcs1_raw(&data)),
            CKR_DATA_LEN_RANGE,
            "{}",
            p.name()
        );
        let public = rsa_public_of(p, key.as_ref());
        assert_eq!(rv(public.encrypt_pkcs1(&data)), CKR_DATA_LEN_RANGE);
    }
}

#[test]
fn digest_of_wrong_length_is_data_len_range() {
    for p in providers() {
        let key = p.rsa_private(rsa_pkcs8()).unwrap();
        assert_eq!(
            rv(key.sign_pkcs1(Hash::Sha256, &[0; 31])),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(rv(key.sign_pss(Hash::Sha384, &[0; 32])), CKR_DATA_LEN_RANGE);
        let ec = p.ec_private(Curve::P384, &ec_pkcs8(Curve::P384)).unwrap();
        assert_eq!(rv(ec.sign_prehash(&[0; 32])), CKR_DATA_LEN_RANGE);
    }
}

#[test]
fn cbc_errors_carry_the_spec_codes() {
    let iv = [0u8; 16];
    for p in providers() {
        let key = p.aes(&[9u8; 16]).unwrap();
        assert_eq!(
            rv(key.cbc_encrypt(&iv, &[0; 15], false)),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(key.cbc_decrypt(&iv, &[0; 15], true)),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(key.cbc_decrypt(&iv, &[], true)),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        // Decrypting a block that was not padded: the padding check must fail.
        let ct = key.cbc_encrypt(&iv, &[0u8; 16], false).unwrap();
        assert_eq!(
            rv(key.cbc_decrypt(&iv, &ct, true)),
            CKR_ENCRYPTED_DATA_INVALID,
            "{}",
            p.name()
        );
    }
}

#[test]
fn malformed_keys_are_attribute_value_invalid() {
    for p in providers() {
        assert_eq!(rv(p.rsa_private(b"not der")), CKR_ATTRIBUTE_VALUE_INVALID);
        assert_eq!(
            rv(p.ec_private(Curve::P256, b"not der")),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        // A P-256 key presented as P-384.
        assert_eq!(
            rv(p.ec_private(Curve::P384, &ec_pkcs8(Curve::P256))),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let mut off_curve = vec![0x04];
        off_curve.extend_from_slice(&[1u8; 64]);
        assert_eq!(
            rv(p.ec_public(Curve::P256, &off_curve)),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            rv(p.ec_public(Curve::P256, &off_curve[..33])),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(rv(p.aes(&[0; 20])), CKR_KEY_SIZE_RANGE);
    }
}

// ------------------------------------------------------------ OpenSSL

mod openssl {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn available() -> bool {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run(args: &[&str]) -> std::process::Output {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn path(dir: &Path, name: &str) -> String {
        dir.join(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_string()
    }

    /// Writes `key`'s SubjectPublicKeyInfo and converts it to PEM with OpenSSL.
    fn public_pem(dir: &Path, key: &PublicKey, name: &str) -> String {
        let der = path(dir, &format!("{name}.der"));
        std::fs::write(&der, spki_der(key)).unwrap();
        let pem = path(dir, &format!("{name}.pem"));
        run(&[
            "pkey", "-pubin", "-inform", "DER", "-in", &der, "-out", &pem,
        ]);
        pem
    }

    /// Raw `r || s` to DER `ECDSA-Sig-Value` (RFC 3279 §2.2.3).
    fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
        let int = |m: &[u8]| {
            let m = &m[m.iter().position(|b| *b != 0).unwrap_or(m.len() - 1)..];
            let mut v = vec![0x02];
            let pad = m[0] & 0x80 != 0;
            v.push((m.len() + pad as usize) as u8);
            if pad {
                v.push(0);
            }
            v.extend_from_slice(m);
            v
        };
        let (r, s) = raw.split_at(raw.len() / 2);
        let body = [int(r), int(s)].concat();
        let mut out = vec![0x30];
        if body.len() >= 0x80 {
            out.push(0x81);
        }
        out.push(body.len() as u8);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn openssl_verifies_our_signatures_and_encrypts_to_our_keys() {
        if !available() {
            println!("skipped: the `openssl` command is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for p in providers() {
            let rsa = p.rsa_private(rsa_pkcs8()).unwrap();
            let pem = public_pem(d, &rsa.public(), "rsa");
            let digest = digest(p, Hash::Sha256, b"checked by openssl");
            let digest_file = path(d, "digest.bin");
            std::fs::write(&digest_file, &digest).unwrap();
            let sig_file = path(d, "sig.bin");

            std::fs::write(&sig_file, rsa.sign_pkcs1(Hash::Sha256, &digest).unwrap()).unwrap();
            run(&[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &pem,
                "-in",
                &digest_file,
                "-sigfile",
                &sig_file,
                "-pkeyopt",
                "digest:sha256",
            ]);

            // A tampered signature must fail, so a passing run above means something.
            let mut bad = rsa.sign_pkcs1(Hash::Sha256, &digest).unwrap();
            bad[7] ^= 1;
            std::fs::write(&sig_file, bad).unwrap();
            assert!(!Command::new("openssl")
                .args([
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-inkey",
                    &pem,
                    "-in",
                    &digest_file,
                    "-sigfile",
                    &sig_file,
                    "-pkeyopt",
                    "digest:sha256",
                ])
                .output()
                .expect("run openssl")
                .status
                .success());

            std::fs::write(&sig_file, rsa.sign_pss(Hash::Sha256, &digest).unwrap()).unwrap();
            run(&[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &pem,
                "-in",
                &digest_file,
                "-sigfile",
                &sig_file,
                "-pkeyopt",
                "rsa_padding_mode:pss",
                "-pkeyopt",
                "rsa_pss_saltlen:32",
                "-pkeyopt",
                "digest:sha256",
            ]);

            let msg_file = path(d, "msg.bin");
            let ct_file = path(d, "ct.bin");
            std::fs::write(&msg_file, b"wrapped by openssl").unwrap();
            for (hash, extra) in [
                (Hash::Sha1, vec![]),
                (
                    Hash::Sha256,
                    vec![
                        "-pkeyopt",
                        "rsa_oaep_md:sha256",
                        "-pkeyopt",
                        "rsa_mgf1_md:sha256",
                    ],
                ),
            ] {
                let mut args = vec![
                    "pkeyutl",
                    "-encrypt",
                    "-pubin",
                    "-inkey",
                    &pem,
                    "-in",
                    &msg_file,
                    "-out",
                    &ct_file,
                    "-pkeyopt",
                    "rsa_padding_mode:oaep",
                ];
                args.extend(extra);
                run(&args);
                let ct = std::fs::read(&ct_file).unwrap();
                assert_eq!(
                    &rsa.decrypt_oaep(hash, &ct).unwrap()[..],
                    b"wrapped by openssl"
                );
            }

            for curve in [Curve::P256, Curve::P384] {
                let ec = p.ec_private(curve, &ec_pkcs8(curve)).unwrap();
                let pem = public_pem(d, &ec.public(), "ec");
                let digest = super::digest(p, curve.hash(), b"checked by openssl");
                std::fs::write(&digest_file, &digest).unwrap();
                let raw = ec.sign_prehash(&digest).unwrap();
                std::fs::write(&sig_file, ecdsa_der(&raw)).unwrap();
                run(&[
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-inkey",
                    &pem,
                    "-in",
                    &digest_file,
                    "-sigfile",
                    &sig_file,
                ]);
            }
        }
    }
}

#[test]
fn es256k_high_s_signatures_verify() {
    // Plain ECDSA (JWS ES256K, aws-lc) may produce either s; k256 alone would
    // accept only low-S, the Bitcoin rule.
    let pkcs8 = ec_pkcs8(Curve::P256K);
    for p in providers() {
        let signer = p.ec_private(Curve::P256K, &pkcs8).unwrap();
        let digest = digest(p, Hash::Sha256, b"high s");
        let sig =
            k256::ecdsa::Signature::from_slice(&signer.sign_prehash(&digest).unwrap()).unwrap();
        let (r, s) = sig.split_scalars();
        let flipped = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let (low, high) = match sig.normalize_s() {
            None => (sig, flipped),
            Some(_) => (flipped, sig),
        };
        for verifier in providers() {
            let v = ec_public_of(verifier, signer.as_ref());
            v.verify_prehash(&digest, &low.to_bytes()).unwrap();
            v.verify_prehash(&digest, &high.to_bytes())
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", p.name(), verifier.name()));
        }
    }
}

#[test]
fn routed_provider_is_the_builds_default() {
    #[cfg(feature = "aws-lc")]
    assert_eq!(router::routed().name(), "routed");
    #[cfg(not(feature = "aws-lc"))]
    assert_eq!(router::routed().name(), "rustcrypto");
    assert_eq!(provider().name(), router::routed().name());
}

#[cfg(feature = "aws-lc")]
#[test]
fn ml_kem_round_trips_and_its_decapsulation_key_carries_the_encapsulation_key() {
    use super::MlKem;
    let p = provider();
    for set in MlKem::ALL {
        let dk = p.generate_ml_kem(set).unwrap();
        let private = p.ml_kem_private(set, &dk).unwrap();
        let PublicKey::MlKem { key, .. } = private.public() else {
            unreachable!()
        };
        assert_eq!(key.len(), set.public_len(), "{set:?}");
        let (ct, secret) = p.ml_kem_public(set, &key).unwrap().encapsulate().unwrap();
        assert_eq!(ct.len(), set.ciphertext_len(), "{set:?}");
        assert_eq!(private.decapsulate(&ct).unwrap(), secret, "{set:?}");
        // FIPS 203 §7.3: a dk whose H(ek) does not match is refused.
        let mut bad = dk.clone();
        bad[set.public_len() - 32 + 5] ^= 1;
        assert!(p.ml_kem_private(set, &bad).is_err(), "{set:?}");
    }
}

/// HashML-DSA's pre-hashes on "abc": FIPS 180-4 / FIPS 202 known answers,
/// the SHAKEs read to FIPS 204's lengths (SHAKE128 32 bytes, SHAKE256 64).
#[cfg(feature = "aws-lc")]
#[test]
fn pre_hashes_give_the_fips_known_answers() {
    let cases = [
        (PreHash::Sha224, "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"),
        (PreHash::Sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (PreHash::Sha384, "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"),
        (PreHash::Sha512, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
        (PreHash::Sha3_224, "e642824c3f8cf24ad09234ee7d3c766fc9a3a5168d0c94ad73b46fdf"),
        (PreHash::Sha3_256, "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"),
        (PreHash::Sha3_384, "ec01498288516fc926459f58e2c6ad8df9b473cb0fc08c2596da7cf0e49be4b298d88cea927ac7f539f1edf228376d25"),
        (PreHash::Sha3_512, "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0"),
        (PreHash::Shake128, "5881092dd818bf5cf8a3ddb793fbcba74097d5c526a6d35f97b83351940f2cc8"),
        (PreHash::Shake256, "483366601360a8771c6863080cc4114d8db44530f8f1e1ee4f94ea37e78b5739d5a15bef186a5386c75744c0527e1faa9f8726e462a12a4feb06bd8801e751e4"),
    ];
    for (ph, want) in cases {
        let mut h = provider().pre_hasher(ph).unwrap();
        h.update(b"a");
        h.update(b"bc");
        let got = h.finish();
        assert_eq!(got, hex(want), "{ph:?}");
        assert_eq!(got.len(), ph.len(), "{ph:?}");
    }
    assert_eq!(
        rv(RustCrypto.pre_hasher(PreHash::Sha256)),
        CKR_MECHANISM_INVALID
    );
}

/// μ of pure ML-DSA (M' = 0 ‖ |ctx| ‖ ctx ‖ M), computed here.
#[cfg(feature = "aws-lc")]
fn pure_mu(public: &[u8], context: &[u8], message: &[u8]) -> Vec<u8> {
    let p = provider();
    let mut tr = p.pre_hasher(PreHash::Shake256).unwrap();
    tr.update(public);
    let tr = tr.finish();
    let mut mu = p.pre_hasher(PreHash::Shake256).unwrap();
    for part in [&tr[..], &[0, context.len() as u8], context, message] {
        mu.update(part);
    }
    mu.finish()
}

/// A signature over μ is the signature over the message μ stands for: the
/// hedged one verifies as pure ML-DSA, the deterministic one is byte for
/// byte the deterministic pure signature, and verify_mu accepts what pure
/// signing made. Wrong lengths are `CKR_DATA_LEN_RANGE`.
#[cfg(feature = "aws-lc")]
#[test]
fn signing_mu_is_signing_the_message_mu_stands_for() {
    let p = provider();
    for set in MlDsa::ALL {
        let seed = p.generate_ml_dsa(set).unwrap();
        let private = p.ml_dsa_private(set, &seed).unwrap();
        let PublicKey::MlDsa { key, .. } = private.public() else {
            unreachable!()
        };
        let public = p.ml_dsa_public(set, &key).unwrap();
        for context in [&b""[..], b"ctx"] {
            let mu = pure_mu(&key, context, b"message");
            let sig = private.sign_mu(&mu).unwrap();
            public.verify(b"message", context, &sig).unwrap();
            public.verify_mu(&mu, &sig).unwrap();
            assert_eq!(
                private.sign_mu_deterministic(&mu).unwrap(),
                private.sign_deterministic(b"message", context).unwrap(),
                "{set:?}"
            );
            let pure = private.sign(b"message", context).unwrap();
            public.verify_mu(&mu, &pure).unwrap();
            let mut other = mu.clone();
            other[0] ^= 1;
            assert_eq!(rv(public.verify_mu(&other, &sig)), CKR_SIGNATURE_INVALID);
        }
        let sig = private.sign_mu(&[7; ML_DSA_MU_LEN]).unwrap();
        assert_eq!(rv(private.sign_mu(&[7; 63])), CKR_DATA_LEN_RANGE);
        assert_eq!(
            rv(private.sign_mu_deterministic(&[7; 65])),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(rv(public.verify_mu(&[7; 63], &sig)), CKR_DATA_LEN_RANGE);
        assert_eq!(
            rv(public.verify_mu(&[7; 64], &sig[1..])),
            CKR_SIGNATURE_LEN_RANGE
        );
    }
}
