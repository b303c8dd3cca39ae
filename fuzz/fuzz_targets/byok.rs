//! The BYOK transfer blob: the JSON parser (`parse_byok`) on arbitrary bytes,
//! and the RSA-AES unwrap on arbitrary payloads. The first byte picks:
//! - even: the bytes are a blob file. Parsing fails cleanly or gives a kid and a
//!   non-empty ciphertext.
//! - odd: the bytes are the key material inside a well-formed wrapping
//!   (RSA-OAEP of a fixed AES-256 key under a fixed KEK ‖ AES-KWP of the
//!   bytes): the unwrap must give the bytes back exactly, and telling the key
//!   type from them (`pkcs8_kind`, as `key import --byok-file` does) must not
//!   panic. A flipped byte of the wrapping (the second input byte picks which)
//!   must be refused, never accepted as other material. (The RSA half is
//!   constant and slow: it runs whole for the first 16 payloads of a process.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmhsm::crypto::{self, Hash, PublicKey, RsaPrivateKey};
use softmhsm::pool::byok::{parse_byok, unwrap_rsa_aes};
use softmhsm::engine::rules;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

struct Kek {
    private: Arc<dyn RsaPrivateKey>,
    aes_key: [u8; 32],
    head: Vec<u8>,
}

fn kek() -> &'static Kek {
    static KEK: OnceLock<Kek> = OnceLock::new();
    KEK.get_or_init(|| {
        let p = crypto::provider();
        let der = p.generate_rsa(2048).expect("KEK");
        let private = p.rsa_private(&der).expect("KEK key");
        let PublicKey::Rsa { n, e } = private.public() else {
            panic!("an RSA key")
        };
        let public = p.rsa_public(&n, &e).expect("KEK public");
        let aes_key = [0x5au8; 32];
        let head = public.encrypt_oaep(Hash::Sha1, &aes_key).expect("OAEP");
        Kek { private, aes_key, head }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(blob) = parse_byok(rest) {
            assert!(!blob.kid.is_empty(), "a parsed blob names its KEK");
            assert!(!blob.ciphertext.is_empty(), "a parsed blob carries a ciphertext");
        }
        return;
    }
    let Some((&flip, material)) = rest.split_first() else {
        return;
    };
    if material.is_empty() || material.len() > 8192 {
        return;
    }
    let k = kek();
    let aes = crypto::provider().aes(&k.aes_key).expect("AES key");
    let mut kwp = aes.kwp_wrap(material).expect("KWP wrap");
    // The RSA half is the same for every input and costs ~40 ms under ASan:
    // the whole unwrap (RSA and KWP) runs for the first 16 payloads of each
    // process, the KWP half (all the variable work) for every one.
    static WHOLE: AtomicUsize = AtomicUsize::new(0);
    let whole = WHOLE.fetch_add(1, Ordering::Relaxed) < 16;
    let plain = if whole {
        let wrapped = [k.head.as_slice(), &kwp].concat();
        unwrap_rsa_aes(k.private.as_ref(), Hash::Sha1, 32, &wrapped).expect("unwrap")
    } else {
        aes.kwp_unwrap(&kwp).expect("KWP unwrap")
    };
    assert_eq!(&plain[..], material, "the unwrap gives the material back");
    let _ = rules::pkcs8_kind(&plain);
    // One flipped byte in the KWP part must be refused.
    let i = flip as usize % kwp.len();
    kwp[i] ^= 0x01;
    let damaged = if whole {
        let wrapped = [k.head.as_slice(), &kwp].concat();
        unwrap_rsa_aes(k.private.as_ref(), Hash::Sha1, 32, &wrapped).map(|_| ())
    } else {
        aes.kwp_unwrap(&kwp).map(|_| ())
    };
    assert!(damaged.is_err(), "a damaged wrapping was accepted");
});
