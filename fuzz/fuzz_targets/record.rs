//! The store's record decoding: the fuzzer's bytes are an object row's
//! `attrs` column (a damaged or hostile store). The first byte picks the row's
//! other columns. Decoding must fail cleanly or give a record that survives a
//! JSON round trip and that every reader of a cached object handles:
//! `C_GetAttributeValue` on every attribute of both halves, `C_FindObjects`
//! matching, `C_SetAttributeValue`, public and private key parsing, and the
//! cache's reload.
#![no_main]

use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;
use softmhsm::engine::attributes::{bool_bytes, ulong_bytes};
use softmhsm::engine::key::Record;
use softmhsm::engine::policy::{self, Part, Recovery};
use softmhsm::store::ObjectRow;
use softmhsm::pool::objects::{Entry, Objects};
use softmhsm_fuzz::{template, Input, ATTRIBUTE_TYPES};

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let json = String::from_utf8_lossy(inp.rest()).into_owned();
    let row = ObjectRow {
        id: 1 + (flags & 7) as i64,
        name: (flags & 8 != 0).then(|| "fuzz".to_string()),
        version: (flags & 16 != 0).then(|| "0".repeat(32)),
        current: flags & 32 != 0,
        attrs: json,
        sealed: (flags & 64 != 0).then(|| vec![0u8; 44]),
    };
    let rec = Record::from_json(&row.attrs);
    let entry = Entry::from_row(&row);
    assert_eq!(rec.is_ok(), entry.is_ok());
    let (Ok(rec), Ok(entry)) = (rec, entry) else {
        return;
    };
    let again = Record::from_json(&rec.to_json().expect("a decoded record serialises"))
        .expect("a serialised record decodes");
    assert_eq!(again, rec, "JSON round trip changed the record");
    let probe = template(&[
        (CKA_LABEL, b"fuzz".to_vec()),
        (CKA_TOKEN, bool_bytes(true)),
        (CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY)),
    ]);
    let update = template(&[(CKA_LABEL, b"new".to_vec()), (CKA_SIGN, bool_bytes(true))]);
    for part in [Part::Main, Part::Public] {
        if !entry.has_part(part) {
            continue;
        }
        let v = entry.view(part, "fuzz", Recovery::default());
        for ty in ATTRIBUTE_TYPES {
            let _ = policy::get_attribute(&v, *ty);
        }
        let _ = policy::is_private(&entry.rec, part);
        let _ = entry.matches(part, &probe, "fuzz", Recovery::default());
        let _ = policy::set_attributes(&entry.rec, part, &update);
    }
    if let Some(k) = rec.key() {
        let _ = policy::kid("fuzz", k);
    }
    let _ = entry.public_key();
    let _ = entry.private_key(None, "fuzz");
    let mut cache = Objects::default();
    cache.reload(std::slice::from_ref(&row));
    assert!(cache.get(row.id).is_some(), "a decodable row is cached");
});
