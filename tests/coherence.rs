//! One pool, many processes: a running PKCS#11 session (this test's process)
//! sees every write the admin CLI (another process) committed before each call
//! — a disabled key is refused at the next `C_SignInit`, a deleted key's
//! handles are invalid at the next call, an expiry set in the past takes
//! effect, and a rotation never breaks a handle the session holds.

#[macro_use]
mod common;

use common::cli::*;
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki_sys::*;

/// `softmhsm init` with the fixture label and PINs, then one P-256 key `k`.
fn init_with_key() {
    json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
    json(&[
        "key", "create", "--name", "k", "--kty", "EC", "--curve", "P-256",
    ]);
}

/// The private and public handles of the current version of `name`.
fn pair(t: &Token, name: &str) -> (ObjectHandle, ObjectHandle) {
    let private = t.find_private_by_label(name);
    let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label(name)]);
    assert_eq!(
        (private.len(), public.len()),
        (1, 1),
        "one current version of {name}"
    );
    (private[0], public[0])
}

/// Waits until `seen` says this process sees another process's committed
/// write, and fails if it does not within the staleness bound. On SQLite the
/// shared change counter makes it the very next call. On PostgreSQL the
/// commit's `NOTIFY` reaches this process's socket a moment after the writer
/// returns, so a call made at once can still miss it; the design's bound is
/// `max_staleness_ms` (1 s), after which a call asks the database itself
/// (2 s more are allowed for a loaded machine).
#[track_caller]
fn seen_within_the_bound(what: &str, mut seen: impl FnMut() -> bool) {
    if !common::pg::selected() {
        assert!(seen(), "{what}: not seen at the next call");
        return;
    }
    let start = std::time::Instant::now();
    while !seen() {
        assert!(
            start.elapsed() < std::time::Duration::from_millis(3000),
            "{what}: not seen within max_staleness_ms (1 s) + 2 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Sign a fixed digest with `key` and check the signature under `public`'s point.
#[track_caller]
fn signs(t: &Token, key: ObjectHandle, public: ObjectHandle) {
    let digest = [7u8; 32];
    let sig = ok(t.session.sign(&Mechanism::Ecdsa, key, &digest), "C_Sign");
    verify_ecdsa_prehash(OID_P256, &t.ec_point(public), &digest, &sig)
        .expect("the signature verifies under the version's own public key");
}

p11_test! {
    fn a_key_disabled_elsewhere_is_refused_at_the_next_sign_init() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_with_key();
        let t = Token::reopen_existing();
        let (key, public) = pair(&t, "k");
        signs(&t, key, public);
        json(&["key", "update", "--name", "k", "--enabled", "false"]);
        seen_within_the_bound("a disable", || t.session.sign(&Mechanism::Ecdsa, key, &[7u8; 32]).is_err());
        assert_rv(
            t.session.sign(&Mechanism::Ecdsa, key, &[7u8; 32]),
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            "C_SignInit after another process disabled the key",
        );
        json(&["key", "update", "--name", "k", "--enabled", "true"]);
        seen_within_the_bound("an enable", || t.session.sign(&Mechanism::Ecdsa, key, &[7u8; 32]).is_ok());
        signs(&t, key, public);
    }
}

p11_test! {
    fn a_key_deleted_elsewhere_has_invalid_handles_at_the_next_call() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_with_key();
        let t = Token::reopen_existing();
        let (key, public) = pair(&t, "k");
        signs(&t, key, public);
        json(&["key", "delete", "--name", "k"]);
        seen_within_the_bound("a delete", || t.session.sign(&Mechanism::Ecdsa, key, &[7u8; 32]).is_err());
        assert_rv(
            t.session.sign(&Mechanism::Ecdsa, key, &[7u8; 32]),
            CKR_KEY_HANDLE_INVALID,
            "C_SignInit with a key another process deleted",
        );
        assert_eq!(
            t.try_attr(public, CKA_EC_POINT),
            Err(CKR_OBJECT_HANDLE_INVALID),
            "C_GetAttributeValue of a deleted key's public half"
        );
        assert!(t.find_private_by_label("k").is_empty(), "a deleted key is not found");
    }
}

p11_test! {
    fn an_expiry_set_in_the_past_elsewhere_takes_effect() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_with_key();
        let t = Token::reopen_existing();
        let (key, public) = pair(&t, "k");
        let digest = [7u8; 32];
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, key, &digest), "C_Sign before expiry");
        json(&["key", "update", "--name", "k", "--expires", "2020-01-01T00:00:00Z"]);
        seen_within_the_bound("an expiry", || t.session.sign(&Mechanism::Ecdsa, key, &digest).is_err());
        assert_rv(
            t.session.sign(&Mechanism::Ecdsa, key, &digest),
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            "C_SignInit after another process set exp in the past",
        );
        // Outside [nbf, exp) a key still verifies.
        ok(t.session.verify(&Mechanism::Ecdsa, public, &digest, &sig), "C_Verify of an expired key");
    }
}

p11_test! {
    fn a_rotation_elsewhere_never_breaks_a_held_handle() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_with_key();
        let t = Token::reopen_existing();
        let (old_key, old_public) = pair(&t, "k");
        let old_id = t.attr(old_key, CKA_ID, "CKA_ID");
        json(&["key", "rotate", "--name", "k"]);
        seen_within_the_bound("a rotation", || t.find_private_by_label("k") != vec![old_key]);
        // The held handle names its version, which still exists.
        signs(&t, old_key, old_public);
        // By label: the new current version, with its own CKA_ID.
        let (new_key, new_public) = pair(&t, "k");
        assert_ne!(new_key, old_key);
        let new_id = t.attr(new_key, CKA_ID, "CKA_ID");
        assert_ne!(new_id, old_id, "a rotated version gets its own CKA_ID");
        signs(&t, new_key, new_public);
        // By CKA_ID: the version that carries it, current or not.
        let by_old_id = t.find(&[class(ObjectClass::PRIVATE_KEY), Attribute::Id(old_id.clone())]);
        assert_eq!(by_old_id, vec![old_key], "CKA_ID finds the old version");
        let by_new_id = t.find(&[class(ObjectClass::PRIVATE_KEY), Attribute::Id(new_id)]);
        assert_eq!(by_new_id, vec![new_key], "CKA_ID finds the new version");
        let both = t.find(&[Attribute::Id(old_id), label("k")]);
        assert_eq!(both.len(), 2, "label + CKA_ID finds both halves of the old version");
    }
}

p11_test! {
    fn a_key_made_elsewhere_is_found_at_the_next_find() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_with_key();
        let t = Token::reopen_existing();
        assert!(t.find_private_by_label("later").is_empty());
        json(&["key", "create", "--name", "later", "--kty", "EC"]);
        seen_within_the_bound("a new key", || !t.find_private_by_label("later").is_empty());
        let (key, public) = pair(&t, "later");
        signs(&t, key, public);
    }
}

p11_test! {
    fn racing_rotations_stop_at_exactly_the_version_cap() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_with_key();
        // 4 processes at a time, 120 rotation attempts of one name: the cap
        // (100 versions) is checked inside each write transaction.
        let acked: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut kids = Vec::new();
                        for _ in 0..30 {
                            let r = cli(&["key", "rotate", "--name", "k"]);
                            if r.code == 0 {
                                let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                                kids.push(v["key"]["kid"].as_str().unwrap().to_string());
                            } else {
                                assert_refused(&r, 1, "100 versions");
                            }
                        }
                        kids
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(acked.len(), 99, "the first version plus 99 acknowledged rotations");
        let versions = json(&["key", "list-versions", "--name", "k"]);
        let stored: Vec<&str> = versions
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["kid"].as_str().or_else(|| v["key"]["kid"].as_str()).unwrap())
            .collect();
        assert_eq!(stored.len(), 100, "exactly the cap");
        for kid in &acked {
            assert!(stored.contains(&kid.as_str()), "acknowledged rotation {kid} is stored");
        }
    }
}

p11_test! {
    fn a_due_rotation_happens_once_however_many_processes_apply_it() {
        softmhsm_only!("rotation policies are softmhsm's");
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let soon = softmhsm::engine::lifecycle::rfc3339(now + 86_400);
        json(&["key", "create", "--name", "due", "--kty", "EC", "--expires", &soon]);
        let policy = r#"{"lifetimeActions":[{"trigger":{"timeBeforeExpiry":"P7D"},"action":{"type":"Rotate"}}],
                         "attributes":{"expiryTime":"P90D"}}"#;
        json(&["key", "rotation-policy", "update", "--name", "due", "--value", policy]);
        // Four processes find the rotation due at once; the store decides it
        // inside each write transaction.
        let rotated: usize = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4).map(|_| s.spawn(|| json(&["key", "rotate-due"]))).collect();
            runs.into_iter()
                .map(|r| {
                    let due = r.join().unwrap();
                    due.as_array().unwrap().iter().filter(|d| d["action"] == "rotated").count()
                })
                .sum()
        });
        assert_eq!(rotated, 1, "exactly one process reports the rotation");
        assert_eq!(json(&["key", "list-versions", "--name", "due"]).as_array().unwrap().len(), 2);
        // A library login afterwards finds nothing due.
        let t = Token::reopen_existing();
        assert_eq!(t.find_private_by_label("due").len(), 1);
        assert_eq!(json(&["key", "list-versions", "--name", "due"]).as_array().unwrap().len(), 2);
    }
}
