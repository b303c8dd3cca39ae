//! The backup blob parser (`key restore`): the fuzzer's bytes are either a
//! whole blob (the magic, the seal) or, more often, the JSON inside one, which
//! the harness seals under the process's master key so the fuzzer explores
//! what comes after the seal opens (versions, records, names, sealed
//! material). Decoding must refuse cleanly or give rows that name the blob's
//! key and hold records that decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmhsm::engine::key::Record;
use softmhsm::pool::lifecycle::{decode_backup, seal_backup};
use softmhsm::store::MasterKey;
use std::sync::OnceLock;

/// The pool label the blobs are bound to.
const LABEL: &str = "fuzz";

/// One master key per process: the harness seals the input itself, so its
/// value never matters to reproduce a run.
fn master() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::generate().expect("master key"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let blob = match mode % 4 {
        0 => rest.to_vec(),
        1 => [b"SOFTMHSM-KEY-BACKUP-1\n".as_slice(), rest].concat(),
        _ => seal_backup(master(), LABEL, rest).expect("a short blob seals"),
    };
    let Ok(b) = decode_backup(master(), LABEL, &blob) else {
        return;
    };
    assert!(!b.rows.is_empty(), "a decoded backup has a version");
    for row in &b.rows {
        assert_eq!(row.name.as_deref(), Some(b.name.as_str()));
        let rec = Record::from_json(&row.attrs).expect("a restored row decodes");
        let key = rec.key().expect("a restored row is a key");
        assert_eq!(key.name, b.name);
        assert_eq!(Some(&key.version), row.version.as_ref());
    }
    assert_eq!(b.last.name, b.name);
});
