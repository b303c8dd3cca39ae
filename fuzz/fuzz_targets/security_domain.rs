//! The security-domain file and restore-blob parsers (`restore-blob`,
//! `upload`): the fuzzer's bytes are a whole file, or are spliced into a
//! genuine file or blob made once per process, so the fuzzer also explores
//! what comes after the JSON parses (shares, AADs, the MAC). Recovery must
//! refuse cleanly, or give back exactly the domain the genuine file holds:
//! the integrity checks never let an altered file recover to another secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmhsm::crypto::{self, PublicKey, SecretBytes};
use softmhsm::pool::security_domain::{download, open_restore_blob, recover, restore_blob, SecurityDomain};
use softmhsm::store::MasterKey;
use std::sync::OnceLock;

/// The pool label of the genuine file.
const LABEL: &str = "fuzz";

struct Fixture {
    /// Private keys (PKCS#8) of the three wrapping keys; the quorum is 2.
    wrapping: Vec<SecretBytes>,
    /// The exchange private key.
    exchange: SecretBytes,
    /// A genuine file and blob.
    file: Vec<u8>,
    blob: Vec<u8>,
    /// Sealed under the genuine master key: opens only under it.
    probe: Vec<u8>,
}

fn rsa() -> (SecretBytes, PublicKey) {
    let p = crypto::provider();
    let pkcs8 = p.generate_rsa(2048).expect("RSA key");
    let public = p.rsa_private(&pkcs8).expect("parse").public();
    (pkcs8, public)
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys: Vec<_> = (0..3).map(|_| rsa()).collect();
        let (exchange, exchange_pub) = rsa();
        let master = MasterKey::generate().expect("master key");
        let probe = master.seal(b"probe", b"genuine").expect("seal");
        let sd = SecurityDomain { master, label: LABEL.into() };
        let publics: Vec<PublicKey> = keys.iter().map(|k| k.1.clone()).collect();
        let file = download(&sd, &publics, 2, 0).expect("download");
        let wrapping: Vec<SecretBytes> = keys.into_iter().map(|k| k.0).collect();
        let blob = restore_blob(&file, &wrapping[..2], &exchange_pub).expect("restore blob");
        Fixture { wrapping, exchange, file, blob, probe }
    })
}

/// `base` with `patch` written over it from `at` (wrapping), or inserted.
fn splice(base: &[u8], at: u16, insert: bool, patch: &[u8]) -> Vec<u8> {
    let at = at as usize % (base.len() + 1);
    let mut out = base[..at].to_vec();
    out.extend_from_slice(patch);
    let skip = if insert { 0 } else { patch.len() };
    out.extend_from_slice(base.get(at + skip..).unwrap_or_default());
    out
}

/// A recovered domain must be the genuine one.
fn genuine(sd: &SecurityDomain, f: &Fixture) {
    assert_eq!(sd.label, LABEL);
    assert!(sd.master.open(b"probe", &f.probe).is_ok(), "recovered another master key");
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let [mode, a, b, rest @ ..] = data else {
        return;
    };
    let at = u16::from_le_bytes([*a, *b]);
    match mode % 6 {
        0 => {
            if let Ok(sd) = recover(rest, &f.wrapping[..2]) {
                genuine(&sd, f);
            }
        }
        1 | 2 => {
            let file = splice(&f.file, at, mode % 6 == 2, rest);
            if let Ok(sd) = recover(&file, &f.wrapping[1..]) {
                genuine(&sd, f);
            }
        }
        3 => {
            let _ = open_restore_blob(rest, &f.exchange);
        }
        _ => {
            let blob = splice(&f.blob, at, mode % 6 == 5, rest);
            if let Ok(sd) = open_restore_blob(&blob, &f.exchange) {
                genuine(&sd, f);
            }
        }
    }
});
