//! Template parsing: the fuzzer's bytes become a `CK_ATTRIBUTE` array (random
//! types, lengths and NULLs; values pointing into the input or into typed
//! buffers the harness owns) that goes through the ABI's template copy, then
//! through every template rule the library has: `C_CreateObject` (data
//! objects, certificates, key import), `C_GenerateKey(Pair)` templates,
//! `C_SetAttributeValue`, `C_FindObjects` matching and `C_GetAttributeValue`.
//! Every pointer the library is given covers at least its length.
#![no_main]

use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;
use softmhsm::crypto;
use softmhsm::engine::attributes::{date_bytes, ulong_bytes, Template};
use softmhsm::engine::key::KeyKind;
use softmhsm::engine::policy::{self, Part, Recovery, View};
use softmhsm::engine::rules;
use softmhsm::ffi::fuzzing;
use softmhsm::pool::objects::Entry;
use softmhsm_fuzz::{fixtures, stored_records, Input, ATTRIBUTE_TYPES, EC_PARAMS, ULONGS};

/// Most attributes in one template (the ABI accepts up to 4096).
const MAX_ATTRS: usize = 24;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let n = inp.u8() as usize % (MAX_ATTRS + 1);
    let array_mode = inp.u8();
    // Typed values live here: allocated before the array points at them.
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut raw: Vec<(CK_ATTRIBUTE_TYPE, Option<usize>, Option<&[u8]>, CK_ULONG)> = Vec::new();
    for _ in 0..n {
        let ty = inp.ulong(ATTRIBUTE_TYPES);
        match inp.u8() % 8 {
            // NULL value with any length: only 0 is acceptable.
            0 => {
                let len = if inp.u8() & 1 == 0 {
                    inp.u8() as CK_ULONG
                } else {
                    inp.u64() as CK_ULONG
                };
                raw.push((ty, None, None, len));
            }
            // Bytes of the input itself.
            1 | 2 => {
                let len = inp.u16() as usize;
                let v = inp.take(len);
                raw.push((ty, None, Some(v), v.len() as CK_ULONG));
            }
            3 => owned_value(&mut owned, &mut raw, ty, vec![inp.u8() % 3]),
            4 => {
                let v = inp.ulong(ULONGS);
                owned_value(&mut owned, &mut raw, ty, ulong_bytes(v))
            }
            5 => {
                let v = inp.pick(EC_PARAMS).to_vec();
                owned_value(&mut owned, &mut raw, ty, v)
            }
            6 => {
                let v = date_bytes(inp.u64() as i64 % (400 * 365 * 86_400));
                owned_value(&mut owned, &mut raw, ty, v)
            }
            _ => {
                let v = inp.pick(TEXTS).to_vec();
                owned_value(&mut owned, &mut raw, ty, v)
            }
        }
    }
    let mut attrs: Vec<CK_ATTRIBUTE> = raw
        .iter()
        .map(|(ty, own, borrowed, len)| {
            let p = match (own, borrowed) {
                (Some(i), _) => owned[*i].as_ptr(),
                (None, Some(v)) if !v.is_empty() => v.as_ptr(),
                // An empty input slice: a dangling but non-NULL pointer is fine for length 0.
                (None, Some(_)) => std::ptr::NonNull::<u8>::dangling().as_ptr(),
                (None, None) => std::ptr::null(),
            };
            CK_ATTRIBUTE {
                type_: *ty,
                pValue: p as *mut _,
                ulValueLen: *len,
            }
        })
        .collect();
    // Mostly the array as built; sometimes a NULL array with a count.
    let (ptr, count) = match array_mode {
        0xfe => (std::ptr::null(), n as CK_ULONG),
        0xff => (std::ptr::null(), CK_ULONG::MAX),
        _ => (attrs.as_mut_ptr() as *const CK_ATTRIBUTE, n as CK_ULONG),
    };
    let parsed = unsafe { fuzzing::template(ptr, count) };
    let t = match parsed {
        Ok(t) => t,
        Err(e) => {
            assert_eq!(e.rv(), CKR_ARGUMENTS_BAD);
            return;
        }
    };
    assert!(t.0.len() <= n);
    let split = inp.u8() as usize % (t.0.len() + 1);
    check_template(&t, split);
});

/// Put a harness-owned value in the array (its length is exact).
fn owned_value<'a>(
    owned: &mut Vec<Vec<u8>>,
    raw: &mut Vec<(CK_ATTRIBUTE_TYPE, Option<usize>, Option<&'a [u8]>, CK_ULONG)>,
    ty: CK_ATTRIBUTE_TYPE,
    v: Vec<u8>,
) {
    raw.push((ty, Some(owned.len()), None, v.len() as CK_ULONG));
    owned.push(v);
}

/// Texts worth trying as labels, names, tags, dates and ids.
const TEXTS: &[&[u8]] = &[
    b"fuzz-aes",
    b"fuzz-ec",
    b"a",
    b"",
    b"has space",
    b"{\"env\":\"prod\"}",
    b"{}",
    b"{\"\":\"x\"}",
    b"[1,2]",
    b"20260101",
    b"99991231",
    b"00000000",
    b"0123456789abcdef0123456789abcdef",
    b"\x01\x00\x01",
];

/// Run `t` through every template rule; none may panic.
fn check_template(t: &Template, split: usize) {
    // Typed getters on every attribute present.
    for ty in t.types() {
        let _ = t.get_bool(ty);
        let _ = t.get_ulong(ty);
    }
    // C_CreateObject: a stored object, or key import (material, then the template).
    let _ = policy::stored_object(t);
    if let Ok(material) = fuzzing::import_material(t) {
        import(t, &material);
    }
    // C_CreateObject of a session public key: an accepted one is public-only.
    if let Ok(req) = policy::public_key_request(t) {
        assert!(!req.token, "a public-only key is a session key");
        let e = Entry::session(1, 1, req.record, None);
        assert!(!e.has_part(Part::Main) && e.has_part(Part::Public));
        let _ = e.public_key();
    }
    // C_GenerateKey / C_GenerateKeyPair: the first `split` attributes are the public template.
    let public = Template(t.0[..split].to_vec());
    let private = Template(t.0[split..].to_vec());
    let _ = policy::key_request(CKM_AES_KEY_GEN, None, t);
    for m in [CKM_EC_KEY_PAIR_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN] {
        let _ = policy::key_request(m, Some(&public), &private);
        let _ = policy::key_request(m, Some(t), t);
    }
    // C_SetAttributeValue, C_FindObjects matching and C_GetAttributeValue on every fixture.
    let recs = fixtures()
        .iter()
        .map(|f| f.rec.clone())
        .chain(stored_records().iter().cloned());
    for (i, rec) in recs.enumerate() {
        let e = Entry::session(1 + i as i64, 1, rec, None);
        for part in [Part::Main, Part::Public] {
            if !e.has_part(part) {
                continue;
            }
            if let Ok(new) = policy::set_attributes(&e.rec, part, t) {
                // What was accepted must read back.
                let v = View {
                    rec: &new,
                    part,
                    token: false,
                    current: true,
                    token_label: "fuzz",
                    recovery: Recovery::default(),
                };
                for ty in t.types() {
                    let _ = policy::get_attribute(&v, ty);
                }
                let _ = new.to_json().expect("an accepted record serialises");
            }
            let _ = e.matches(part, t, "fuzz", Recovery::default());
            let v = e.view(part, "fuzz", Recovery::default());
            for ty in t.types() {
                let _ = policy::get_attribute(&v, ty);
            }
        }
    }
}

/// The rest of `C_CreateObject` for a key: what `Session::import_key` checks.
fn import(t: &Template, material: &[u8]) {
    let p = crypto::provider();
    let kind_public = match t.get_ulong(CKA_CLASS) {
        Ok(Some(CKO_SECRET_KEY)) => {
            let Ok(len) = u32::try_from(material.len()) else {
                return;
            };
            if !rules::AES_BYTES.contains(&len) {
                return;
            }
            (KeyKind::Aes(len * 8), None)
        }
        Ok(Some(CKO_PRIVATE_KEY)) => {
            let Ok(kind) = rules::pkcs8_kind(material) else {
                return;
            };
            let public = match kind {
                KeyKind::Ec(c) => p.ec_private(c, material).map(|k| k.public()),
                _ => p.rsa_private(material).map(|k| k.public()),
            };
            let Ok(public) = public else {
                return;
            };
            (kind, Some(public))
        }
        _ => return,
    };
    if let Ok(req) = policy::import_request(t, kind_public.0, kind_public.1.as_ref()) {
        let _ = req.record.to_json().expect("an imported record serialises");
    }
}
