//! The whole-pool backup parser (`restore start`): the fuzzer's bytes are a
//! whole blob or, more often, the JSON inside one, which the harness seals
//! under the process's master key so the fuzzer explores what comes after the
//! seal opens (keys, deleted keys, objects). Decoding must refuse cleanly or
//! give keys whose rows name them, and objects that are not keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use softmhsm::engine::key::Record;
use softmhsm::pool::full_backup::{decode, seal};
use softmhsm::store::MasterKey;
use std::sync::OnceLock;

/// The pool label the blobs are bound to.
const LABEL: &str = "fuzz";

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
        1 => [b"SOFTMHSM-POOL-BACKUP-1\n".as_slice(), rest].concat(),
        _ => seal(master(), LABEL, rest).expect("a short blob seals"),
    };
    let only = (mode & 0x80 != 0).then_some("k");
    let Ok(d) = decode(master(), LABEL, &blob, only) else {
        return;
    };
    for b in d.keys.iter().chain(d.deleted.iter().map(|(b, _)| b)) {
        assert!(!b.rows.is_empty(), "a decoded key has a version");
        if let Some(o) = only {
            assert!(b.name.eq_ignore_ascii_case(o), "only the key asked for");
        }
        for row in &b.rows {
            assert_eq!(row.name.as_deref(), Some(b.name.as_str()));
            let rec = Record::from_json(&row.attrs).expect("a restored row decodes");
            assert_eq!(rec.key().expect("a key").name, b.name);
        }
    }
    if only.is_some() {
        assert!(d.objects.is_empty(), "one key restores no object");
    }
    for o in &d.objects {
        assert!(o.name.is_none());
        let rec = Record::from_json(&o.attrs).expect("a restored object decodes");
        assert!(rec.key().is_none(), "objects are not keys");
    }
});
