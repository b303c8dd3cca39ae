//! The admin CLI (`softmhsm`), run as a subprocess on each test's own token
//! directory (the harness sets `SOFTMHSM_DIR` and `SOFTMHSM_KDF_ITERATIONS`),
//! and checked against the library through the C ABI where both doors meet.

#[macro_use]
mod common;

use common::cli::*;
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{KeyType, ObjectClass};
use cryptoki_sys::*;
use serde_json::Value;
use std::process::{Command, Stdio};

/// `softmhsm init` with the fixture label and PINs (so the C-ABI harness can log in).
fn init(extra: &[&str]) {
    let mut args = vec!["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN];
    args.extend(extra);
    json(&args);
}

/// The names `key list` shows.
fn listed() -> Vec<String> {
    names(&json(&["key", "list"]), "kid")
}

/// The names in a JSON array of items, read from each item's kid.
fn names(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|i| {
            let id = i[field]
                .as_str()
                .or_else(|| i["key"]["kid"].as_str())
                .unwrap();
            id.split('/').nth(4).unwrap().to_string()
        })
        .collect()
}

/// Base64url (no padding) decoding.
fn b64url(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {s}"),
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | u32::from(val(*c)) << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

p11_test! {
    fn init_then_create_every_key_type_and_list_them() {
        init(&[]);
        let rsa = json(&["key", "create", "--name", "web", "--kty", "RSA", "--size", "3072"]);
        assert_eq!(rsa["key"]["kty"], "RSA-HSM");
        assert_eq!(b64url(rsa["key"]["n"].as_str().unwrap()).len(), 384);
        let ec = json(&["key", "create", "--name", "chain", "--kty", "EC-HSM", "--curve", "P-256K"]);
        assert_eq!(ec["key"]["crv"], "P-256K");
        assert_eq!(ec["key"]["key_ops"], serde_json::json!(["sign", "verify"]));
        let oct = json(&["key", "create", "--name", "data", "--kty", "oct", "--size", "128", "--ops", "encrypt", "decrypt"]);
        assert_eq!(oct["key"]["kty"], "oct-HSM");
        assert!(oct["key"].get("n").is_none() && oct["key"].get("x").is_none(), "no material for oct");
        assert_eq!(listed(), vec!["chain", "data", "web"]);
        let table = cli(&["key", "list", "--output", "table"]);
        assert_eq!(table.code, 0);
        assert_eq!(table.stdout.lines().count(), 2 + 3, "header, rule, three keys");
    }
}

p11_test! {
    fn show_gives_the_kid_and_the_public_key_pkcs11_reports() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init(&[]);
        json(&["key", "create", "--name", "ec", "--kty", "EC", "--curve", "P-384"]);
        json(&["key", "create", "--name", "rsa", "--kty", "RSA"]);
        let ec = json(&["key", "show", "--name", "ec"]);
        let kid = ec["key"]["kid"].as_str().unwrap();
        let version = kid.strip_prefix("softmhsm://test/keys/ec/").expect("kid format");
        assert!(version.len() == 32 && version.bytes().all(|b| b.is_ascii_hexdigit()), "version {version}");
        let rsa = json(&["key", "show", "--name", "rsa"]);

        let t = Token::reopen_existing();
        let find_pub = |label: &str| t.find(&[class(ObjectClass::PUBLIC_KEY), common::label(label)])[0];
        let ec_pub = find_pub("ec");
        let mut point = vec![4u8];
        point.extend(b64url(ec["key"]["x"].as_str().unwrap()));
        point.extend(b64url(ec["key"]["y"].as_str().unwrap()));
        assert_eq!(point, t.ec_point(ec_pub), "x, y are CKA_EC_POINT");
        assert_eq!(t.attr(ec_pub, CKA_SOFTMHSM_KID, "kid"), kid.as_bytes());
        let n = t.attr(find_pub("rsa"), CKA_MODULUS, "CKA_MODULUS");
        assert_eq!(b64url(rsa["key"]["n"].as_str().unwrap()), n, "n is CKA_MODULUS");
        assert_eq!(rsa["key"]["e"], "AQAB");
    }
}

p11_test! {
    fn keys_cross_between_the_cli_and_pkcs11() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init(&[]);
        json(&["key", "create", "--name", "from-cli", "--kty", "EC"]);
        let t = Token::reopen_existing();
        let k = t.find_private_by_label("from-cli");
        assert_eq!(k.len(), 1, "the CLI's key is found through PKCS#11");
        let digest = [9u8; 32];
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, k[0], &digest), "C_Sign with a CLI-made key");
        let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label("from-cli")])[0];
        verify_ecdsa_prehash(OID_P256, &t.ec_point(public), &digest, &sig).expect("signature verifies");

        let made = t.aes(32, "from-p11");
        let shown = json(&["key", "show", "--name", "from-p11"]);
        assert_eq!(shown["key"]["kid"].as_str().unwrap().as_bytes(), t.attr(made, CKA_SOFTMHSM_KID, "kid"));
    }
}

p11_test! {
    fn rotate_makes_a_second_current_version() {
        init(&[]);
        let first = json(&["key", "create", "--name", "k", "--kty", "EC", "--ops", "sign", "--tags", "team=a"]);
        let second = json(&["key", "rotate", "--name", "k"]);
        assert_ne!(first["key"]["kid"], second["key"]["kid"]);
        assert_eq!(second["key"]["key_ops"], serde_json::json!(["sign"]), "ops carried over");
        assert_eq!(second["tags"]["team"], "a", "tags carried over");
        let versions = json(&["key", "list-versions", "--name", "k"]);
        let versions = versions.as_array().unwrap();
        assert_eq!(versions.len(), 2);
        let current: Vec<&Value> = versions.iter().filter(|v| v["current"] == true).collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["kid"], second["key"]["kid"]);
        let old = first["key"]["kid"].as_str().unwrap().rsplit('/').next().unwrap();
        let shown = json(&["key", "show", "--name", "k", "--version", old]);
        assert_eq!(shown["key"]["kid"], first["key"]["kid"]);
    }
}

p11_test! {
    fn sixteen_tags_fail_and_write_nothing() {
        init(&[]);
        let tags: Vec<String> = (0..16).map(|i| format!("t{i}=v")).collect();
        let mut args = vec!["key", "create", "--name", "tagged", "--kty", "oct", "--tags"];
        args.extend(tags.iter().map(String::as_str));
        refused(&args, 1, "too many tags");
        assert!(listed().is_empty(), "nothing written");
        args.truncate(7 + 15);
        json(&args);
        assert_eq!(listed(), vec!["tagged"]);
    }
}

p11_test! {
    fn update_changes_attributes_of_the_current_version() {
        init(&[]);
        json(&["key", "create", "--name", "k", "--kty", "RSA", "--tags", "a=1"]);
        let k = json(&["key", "update", "--name", "k", "--enabled", "false", "--expires", "2030-01-01T00:00:00Z", "--ops", "verify", "--tags"]);
        assert_eq!(k["attributes"]["enabled"], false);
        assert_eq!(k["attributes"]["exp"], 1_893_456_000);
        assert_eq!(k["key"]["key_ops"], serde_json::json!(["verify"]));
        assert_eq!(k["tags"], serde_json::json!({}));
        refused(&["key", "update", "--name", "k", "--ops", "bogus"], 2, "bogus");
    }
}

p11_test! {
    fn delete_hides_and_recover_brings_back() {
        init(&[]);
        json(&["key", "create", "--name", "k", "--kty", "EC"]);
        json(&["key", "rotate", "--name", "k"]);
        let deleted = json(&["key", "delete", "--name", "k"]);
        let (at, purge) = (deleted["deletedDate"].as_i64().unwrap(), deleted["scheduledPurgeDate"].as_i64().unwrap());
        assert_eq!(purge - at, 90 * 86_400, "purge after the retention days");
        assert!(listed().is_empty(), "a deleted key is not listed");
        refused(&["key", "show", "--name", "k"], 1, "unknown key");
        assert_eq!(names(&json(&["key", "list-deleted"]), "recoveryId"), vec!["k"]);
        json(&["key", "recover", "--name", "k"]);
        assert_eq!(listed(), vec!["k"]);
        assert_eq!(json(&["key", "list-versions", "--name", "k"]).as_array().unwrap().len(), 2, "every version back");
        assert!(json(&["key", "list-deleted"]).as_array().unwrap().is_empty());
        refused(&["key", "recover", "--name", "k"], 1, "no deleted key");
    }
}

p11_test! {
    fn purge_erases_and_frees_the_name() {
        init(&[]);
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        json(&["key", "delete", "--name", "k"]);
        refused(&["key", "create", "--name", "k", "--kty", "oct"], 1, "deleted key");
        json(&["key", "purge", "--name", "k"]);
        assert!(json(&["key", "list-deleted"]).as_array().unwrap().is_empty());
        refused(&["key", "recover", "--name", "k"], 1, "no deleted key");
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        assert_eq!(json(&["key", "list-versions", "--name", "k"]).as_array().unwrap().len(), 1);
    }
}

p11_test! {
    fn purge_protection_refuses_purge() {
        init(&["--purge-protection", "--retention-days", "7"]);
        let k = json(&["key", "create", "--name", "k", "--kty", "oct"]);
        assert_eq!(k["attributes"]["recoveryLevel"], "CustomizedRecoverable");
        assert_eq!(k["attributes"]["recoverableDays"], 7);
        json(&["key", "delete", "--name", "k"]);
        refused(&["key", "purge", "--name", "k"], 1, "purge protection");
        assert_eq!(names(&json(&["key", "list-deleted"]), "recoveryId"), vec!["k"]);
    }
}

p11_test! {
    fn pkcs11_destroy_and_cli_recover_meet() {
        softmhsm_only!("soft-delete is softmhsm's");
        init(&[]);
        let t = Token::reopen_existing();
        let k = t.aes(16, "both");
        ok(t.session.destroy_object(k), "C_DestroyObject");
        assert_eq!(names(&json(&["key", "list-deleted"]), "recoveryId"), vec!["both"]);
        json(&["key", "recover", "--name", "both"]);
        let found = t.find(&[class(ObjectClass::SECRET_KEY), key_type(KeyType::AES), label("both")]);
        assert_eq!(found.len(), 1, "recovered key is back in C_FindObjects");
    }
}

p11_test! {
    fn a_pair_destroyed_half_by_half_is_recovered_whole() {
        softmhsm_only!("soft-delete is softmhsm's");
        init(&[]);
        let t = Token::reopen_existing();
        let k = t.keypair(Kp::Ec(OID_P256), "pair");
        ok(t.session.destroy_object(k.private), "C_DestroyObject(private)");
        assert!(names(&json(&["key", "list-deleted"]), "recoveryId").is_empty(), "one half left: not deleted yet");
        ok(t.session.destroy_object(k.public), "C_DestroyObject(public)");
        assert_eq!(names(&json(&["key", "list-deleted"]), "recoveryId"), vec!["pair"]);
        json(&["key", "recover", "--name", "pair"]);
        let private = t.find_private_by_label("pair");
        let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label("pair")]);
        assert_eq!((private.len(), public.len()), (1, 1), "both halves are back");
        let digest = [5u8; 32];
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, private[0], &digest), "C_Sign with the recovered key");
        verify_ecdsa_prehash(OID_P256, &t.ec_point(public[0]), &digest, &sig).expect("signature verifies");
    }
}

p11_test! {
    fn wrong_pin_fails_with_one_line() {
        init(&[]);
        let r = cli_with(&["key", "list"], Some("9999"));
        assert_eq!(r.code, 1);
        assert_eq!(r.stderr.trim_end(), "softmhsm: wrong PIN: 9 tries left before the user PIN locks");
        let r = cli_with(&["key", "list", "--pin", USER_PIN], None);
        assert_eq!(r.code, 0, "--pin works: {}", r.stderr);
    }
}

p11_test! {
    fn no_pin_and_no_terminal_is_bad_usage() {
        init(&[]);
        let r = cli_with(&["key", "list"], None);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("no PIN"), "{}", r.stderr);
    }
}

p11_test! {
    fn bad_names_and_unknown_keys_fail() {
        init(&[]);
        refused(&["key", "create", "--name", "bad_name", "--kty", "oct"], 1, "bad key name");
        refused(&["key", "create", "--name", "k", "--kty", "RSA", "--size", "1024"], 1, "bad RSA size");
        refused(&["key", "create", "--name", "k", "--kty", "EC", "--ops", "encrypt"], 1, "not possible");
        refused(&["key", "delete", "--name", "nobody"], 1, "unknown key 'nobody'");
        refused(&["key", "list-versions", "--name", "nobody"], 1, "unknown key");
    }
}

p11_test! {
    fn usage_errors_exit_2_and_help_exits_0() {
        refused(&["key", "frobnicate"], 2, "unknown command");
        refused(&["frobnicate"], 2, "unknown command");
        refused(&["key", "show"], 2, "needs --name or --id");
        refused(&["key", "list", "--bogus"], 2, "--bogus");
        refused(&["key", "create", "--name", "k", "--kty", "DSA"], 2, "DSA");
        for verb in ["init", "key create", "key list", "key list-versions", "key show", "key update", "key backup", "key restore",
                     "key rotate", "key delete", "key list-deleted", "key recover", "key purge",
                     "key rotation-policy show", "key rotation-policy update", "key rotate-due"] {
            let mut args: Vec<&str> = verb.split(' ').collect();
            args.push("--help");
            let r = cli(&args);
            assert_eq!(r.code, 0, "{verb} --help");
            assert!(r.stdout.contains("--output"), "{verb} --help lists the options");
        }
    }
}

p11_test! {
    fn commands_before_init_say_so_and_create_nothing() {
        softmhsm_only!("the CLI works on softmhsm's store");
        let dir = tempfile::tempdir().unwrap();
        let typo = dir.path().join("typo").join("dir");
        let typo_s = typo.to_str().unwrap();
        for verb in [&["key", "list"][..], &["token", "show"], &["key", "show", "--name", "k"], &["pin", "change", "--new-pin", "5678"]] {
            let r = cli_env(verb, Some(USER_PIN), &[("SOFTMHSM_DIR", typo_s)]);
            assert_refused(&r, 1, &format!("no token at {typo_s}/softmhsm.db"));
        }
        assert!(!dir.path().join("typo").exists(), "read and write verbs alike create nothing where no token is");
    }
}

p11_test! {
    fn a_store_that_cannot_be_opened_is_named_with_its_cause() {
        softmhsm_only!("the CLI works on softmhsm's store");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let r = cli_env(&["init", "--label", "x", "--so-pin", SO_PIN], Some(USER_PIN), &[("SOFTMHSM_DIR", file.to_str().unwrap())]);
        assert_refused(&r, 1, &format!("token store {}/softmhsm.db: Not a directory", file.display()));
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    }
}

/// A file path in this test's own directory.
fn scratch(name: &str) -> String {
    store_dir().join(name).display().to_string()
}

p11_test! {
    fn backup_then_restore_brings_every_version_back() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init(&[]);
        json(&["key", "create", "--name", "k", "--kty", "EC", "--tags", "a=1"]);
        let current = json(&["key", "rotate", "--name", "k"]);
        // A signature made before the backup, and the public key it verifies under.
        let digest = [6u8; 32];
        let (before, point) = {
            let t = Token::reopen_existing();
            let k = t.find_private_by_label("k");
            let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label("k")])[0];
            let out = (ok(t.session.sign(&Mechanism::Ecdsa, k[0], &digest), "C_Sign before the backup"), t.ec_point(public));
            let Token { session, pkcs11, .. } = t;
            drop(session);
            ok(pkcs11.finalize(), "C_Finalize");
            out
        };
        let file = scratch("k.backup");
        let b = json(&["key", "backup", "--name", "k", "--file", &file]);
        assert_eq!(b["versions"], 2);
        refused(&["key", "backup", "--name", "k", "--file", &file], 1, "cannot create");
        refused(&["key", "restore", "--file", &file], 1, "already exists");
        json(&["key", "delete", "--name", "k"]);
        refused(&["key", "restore", "--file", &file], 1, "already exists");
        json(&["key", "purge", "--name", "k"]);
        let restored = json(&["key", "restore", "--file", &file]);
        assert_eq!(restored["key"]["kid"], current["key"]["kid"], "the current version comes back current");
        assert_eq!(restored["tags"]["a"], "1");
        assert_eq!(json(&["key", "list-versions", "--name", "k"]).as_array().unwrap().len(), 2);
        let t = Token::reopen_existing();
        let k = t.find_private_by_label("k");
        let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label("k")])[0];
        assert_eq!(t.ec_point(public), point, "the restored key is the same key");
        ok(t.session.verify(&Mechanism::Ecdsa, public, &digest, &before), "C_Verify of the pre-backup signature");
        let after = ok(t.session.sign(&Mechanism::Ecdsa, k[0], &digest), "C_Sign with a restored key");
        for sig in [&before, &after] {
            verify_ecdsa_prehash(OID_P256, &point, &digest, sig).expect("verifies under the original public key (p256 crate)");
        }
    }
}

p11_test! {
    fn a_tampered_backup_is_refused() {
        init(&[]);
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        let file = scratch("k.backup");
        json(&["key", "backup", "--name", "k", "--file", &file]);
        json(&["key", "delete", "--name", "k"]);
        json(&["key", "purge", "--name", "k"]);
        let mut blob = std::fs::read(&file).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let bad = scratch("bad.backup");
        std::fs::write(&bad, &blob).unwrap();
        refused(&["key", "restore", "--file", &bad], 1, "damaged");
        assert!(listed().is_empty(), "nothing restored");
        json(&["key", "restore", "--file", &file]);
        assert_eq!(listed(), vec!["k"]);
    }
}

p11_test! {
    fn pkcs11_protections_hold_in_the_cli() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init(&[]);
        let t = Token::reopen_existing();
        let mut tpl = Token::aes_template(32, "fixed", true);
        tpl.extend([cryptoki::object::Attribute::Destroyable(false), cryptoki::object::Attribute::Modifiable(false)]);
        ok(t.session.generate_key(&Mechanism::AesKeyGen, &tpl), "C_GenerateKey(not destroyable, not modifiable)");
        refused(&["key", "delete", "--name", "fixed"], 1, "not destroyable");
        refused(&["key", "update", "--name", "fixed", "--enabled", "false"], 1, "not modifiable");
        assert_eq!(listed(), vec!["fixed"]);
    }
}

p11_test! {
    fn a_locked_user_pin_is_named() {
        init(&[]);
        for _ in 0..10 {
            assert_eq!(cli_with(&["key", "list"], Some("9999")).code, 1);
        }
        let r = cli(&["key", "list"]);
        assert_eq!(r.code, 1, "even the right PIN is refused once locked");
        assert_eq!(r.stderr.lines().count(), 1);
        assert!(r.stderr.contains("locked"), "{}", r.stderr);
    }
}

p11_test! {
    fn bare_invocations_print_help() {
        for args in [&[][..], &["--help"], &["key"]] {
            let r = cli(args);
            assert_eq!(r.code, 0, "{args:?}");
            assert!(r.stdout.contains("key list-deleted"), "{args:?} lists the verbs");
        }
        assert!(cli(&["--version"]).stdout.starts_with("softmhsm "));
    }
}

/// Seconds since the epoch now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Rotate 7 days before expiry; versions made by rotation expire after 90 days.
const POLICY: &str = r#"{"lifetimeActions":[{"trigger":{"timeBeforeExpiry":"P7D"},"action":{"type":"Rotate"}}],
                         "attributes":{"expiryTime":"P90D"}}"#;

p11_test! {
    fn rotate_due_applies_rotation_policies() {
        softmhsm_only!("rotation policies are softmhsm's");
        init(&[]);
        let now = unix_now();
        let soon = softmhsm::engine::lifecycle::rfc3339(now + 86_400);
        let later = softmhsm::engine::lifecycle::rfc3339(now + 30 * 86_400);
        let web = json(&["key", "create", "--name", "web", "--kty", "EC", "--expires", &soon, "--tags", "t=1"]);
        json(&["key", "create", "--name", "calm", "--kty", "oct", "--expires", &later]);
        json(&["key", "create", "--name", "bare", "--kty", "oct", "--expires", &soon]);
        for name in ["web", "calm"] {
            json(&["key", "rotation-policy", "update", "--name", name, "--value", POLICY]);
        }
        let shown = json(&["key", "rotation-policy", "show", "--name", "web"]);
        assert_eq!(shown["lifetimeActions"][0]["trigger"]["timeBeforeExpiry"], "P7D");
        assert_eq!(shown["attributes"]["expiryTime"], "P90D");
        let none = json(&["key", "rotation-policy", "show", "--name", "bare"]);
        assert_eq!(none["lifetimeActions"], serde_json::json!([]));
        let table = cli(&["key", "rotation-policy", "show", "--name", "web", "--output", "table"]);
        let rows: Vec<Vec<&str>> = table.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["Action", "Trigger", "Duration"], "a table, not JSON: {}", table.stdout);
        assert_eq!(rows[2], ["Rotate", "timeBeforeExpiry", "P7D"]);
        assert!(table.stdout.trim_end().ends_with("Rotated versions expire after P90D"), "{}", table.stdout);

        // Only web is due (expires in 1 day < 7); calm expires in 30 days; bare has no policy.
        let due = json(&["key", "rotate-due"]);
        let due = due.as_array().unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0]["name"], "web");
        assert_eq!(due[0]["action"], "rotated");
        let current = json(&["key", "show", "--name", "web"]);
        assert_ne!(current["key"]["kid"], web["key"]["kid"]);
        assert_eq!(current["tags"]["t"], "1", "tags carried over");
        let exp = current["attributes"]["exp"].as_i64().expect("the new version expires");
        assert!((exp - (now + 90 * 86_400)).abs() < 600, "expiryTime P90D applied: {exp}");
        assert_eq!(json(&["key", "list-versions", "--name", "web"]).as_array().unwrap().len(), 2);
        assert_eq!(json(&["key", "list-versions", "--name", "bare"]).as_array().unwrap().len(), 1);
        // Nothing due any more.
        assert_eq!(json(&["key", "rotate-due"]), serde_json::json!([]));
    }
}

p11_test! {
    fn a_policy_that_breaks_the_rules_is_refused_and_writes_nothing() {
        softmhsm_only!("rotation policies are softmhsm's");
        init(&[]);
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        json(&["key", "rotation-policy", "update", "--name", "k", "--value", POLICY]);
        refused(&["key", "rotation-policy", "update", "--name", "k", "--value", r#"{"attributes":{"expiryTime":"P27D"}}"#], 1, "28 days");
        refused(&["key", "rotation-policy", "update", "--name", "k", "--value",
                  r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P1D"},"action":{"type":"Rotate"}}]}"#], 1, "7 days");
        refused(&["key", "rotation-policy", "update", "--name", "k", "--value", "{not json"], 1, "bad JSON");
        refused(&["key", "rotation-policy", "update", "--name", "nope", "--value", POLICY], 1, "unknown key 'nope'");
        let shown = json(&["key", "rotation-policy", "show", "--name", "k"]);
        assert_eq!(shown["attributes"]["expiryTime"], "P90D", "the refused updates wrote nothing");
    }
}

p11_test! {
    fn the_library_applies_rotation_policies_at_user_login() {
        softmhsm_only!("rotation policies are softmhsm's");
        init(&[]);
        let soon = softmhsm::engine::lifecycle::rfc3339(unix_now() + 86_400);
        let first = json(&["key", "create", "--name", "lib", "--kty", "EC", "--expires", &soon]);
        json(&["key", "rotation-policy", "update", "--name", "lib", "--value", POLICY]);
        // C_Login (in reopen_existing) rotates: the current version found by label is a new one.
        let t = Token::reopen_existing();
        let k = t.find_private_by_label("lib");
        assert_eq!(k.len(), 1);
        let kid = t.attr(k[0], CKA_SOFTMHSM_KID, "kid");
        assert_ne!(kid, first["key"]["kid"].as_str().unwrap().as_bytes(), "rotated at login");
        assert_eq!(String::from_utf8(kid).unwrap(), json(&["key", "show", "--name", "lib"])["key"]["kid"]);
        // The new version works, and its signature verifies with its own public key.
        let digest = [3u8; 32];
        let sig = ok(t.session.sign(&Mechanism::Ecdsa, k[0], &digest), "C_Sign with the rotated version");
        let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label("lib")])[0];
        verify_ecdsa_prehash(OID_P256, &t.ec_point(public), &digest, &sig).expect("signature verifies");
        assert_eq!(json(&["key", "list-versions", "--name", "lib"]).as_array().unwrap().len(), 2);
        // The audit log names the rotation, made by the library (flushed at C_Finalize).
        let kid = String::from_utf8(t.attr(k[0], CKA_SOFTMHSM_KID, "kid")).unwrap();
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        let log = std::fs::read_to_string(store_dir().join("audit-softmhsm.jsonl")).expect("audit log");
        let rotated = log.lines().map(|l| serde_json::from_str::<Value>(l).expect("audit JSON line")).any(|l| {
            l["operationName"] == "KeyRotate" && l["caller"] == "pkcs11" && l["resultType"] == "Success" && l["kid"] == kid.as_str()
        });
        assert!(rotated, "no KeyRotate by pkcs11 for {kid} in the audit log:\n{log}");
    }
}

p11_test! {
    fn the_101st_version_is_refused_through_pkcs11() {
        softmhsm_only!("the 100-version cap is the Managed HSM's");
        init(&[]);
        let t = Token::reopen_existing();
        for i in 0..100 {
            ok(t.try_aes(32, "capped", true), &format!("version {}", i + 1));
        }
        assert_rv(t.try_aes(32, "capped", true), CKR_ACTION_PROHIBITED, "the 101st version");
        assert_eq!(json(&["key", "list-versions", "--name", "capped"]).as_array().unwrap().len(), 100);
        refused(&["key", "rotate", "--name", "capped"], 1, "100 versions");
    }
}

p11_test! {
    fn a_closed_pipe_ends_the_cli_quietly() {
        use std::os::unix::process::ExitStatusExt;
        init(&[]);
        json(&["key", "create", "--name", "piped", "--kty", "oct"]);
        // The reader is gone before the CLI writes (it first opens the store and
        // derives the PIN key): it must not panic ("failed printing to stdout").
        let mut child = Command::new(env!("CARGO_BIN_EXE_softmhsm"))
            .args(["key", "list"])
            .env("SOFTMHSM_PIN", USER_PIN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn softmhsm");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "the CLI panicked on a closed pipe: {stderr}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "ends with success or SIGPIPE, not {:?}",
            out.status
        );
    }
}

p11_test! {
    fn recovery_level_is_the_same_through_pkcs11_and_the_cli() {
        softmhsm_only!("the CLI works on softmhsm's store");
        // Azure's DeletionRecoveryLevel: "Customized" below the default 90
        // days, "+Purgeable" without purge protection. Purge protection can
        // never be turned off, nor a protected token holding keys be
        // re-initialised: each setting gets a token of its own.
        let settings = [
            (90, false, "Recoverable+Purgeable"),
            (30, false, "CustomizedRecoverable+Purgeable"),
            (7, false, "CustomizedRecoverable+Purgeable"),
            (7, true, "CustomizedRecoverable"),
            (89, true, "CustomizedRecoverable"),
            (90, true, "Recoverable"),
        ];
        let base = store_dir();
        for (i, (days, protection, want)) in settings.into_iter().enumerate() {
            // The CLI children and the next C_Initialize read it.
            std::env::set_var("SOFTMHSM_DIR", base.join(format!("token-{i}")));
            let days_arg = days.to_string();
            let mut args = vec!["--retention-days", days_arg.as_str()];
            if protection {
                args.push("--purge-protection");
            }
            init(&args);
            let created = json(&["key", "create", "--name", "k", "--kty", "oct"]);
            let shown = json(&["key", "show", "--name", "k"]);
            let what = format!("{days} days, purge protection {protection}");
            assert_eq!(created["attributes"]["recoveryLevel"], want, "key create JSON, {what}");
            assert_eq!(shown["attributes"]["recoveryLevel"], want, "key show JSON, {what}");
            let t = Token::reopen_existing();
            let k = t.find(&[label("k")]);
            assert_eq!(k.len(), 1, "the CLI's key through PKCS#11");
            let attr = t.attr(k[0], CKA_SOFTMHSM_RECOVERY_LEVEL, "CKA_SOFTMHSM_RECOVERY_LEVEL");
            assert_eq!(attr, want.as_bytes(), "CKA_SOFTMHSM_RECOVERY_LEVEL, {what}");
            let session_key = ok(t.try_aes(32, "session", false), "session AES key");
            assert_eq!(t.attr(session_key, CKA_SOFTMHSM_RECOVERY_LEVEL, "CKA_SOFTMHSM_RECOVERY_LEVEL"), b"Purgeable", "a session key is gone when destroyed, {what}");
            let Token { session, pkcs11, .. } = t;
            drop(session);
            ok(pkcs11.finalize(), "C_Finalize");
        }
    }
}

p11_test! {
    fn reinitialising_a_token_with_keys_needs_force() {
        init(&[]);
        json(&["key", "create", "--name", "kept", "--kty", "oct"]);
        json(&["key", "create", "--name", "gone", "--kty", "oct"]);
        json(&["key", "delete", "--name", "gone"]);
        refused(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN], 1, "add --force");
        assert_eq!(listed(), vec!["kept"], "a refused init erases nothing");
        assert_eq!(json(&["key", "list-deleted"]).as_array().unwrap().len(), 1);
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--force"]);
        assert!(listed().is_empty(), "--force erases the keys");
        assert!(json(&["key", "list-deleted"]).as_array().unwrap().is_empty());
    }
}

p11_test! {
    fn purge_protection_is_never_undone_by_reinitialising() {
        softmhsm_only!("purge protection is the Managed HSM's");
        let first = json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--purge-protection"]);
        assert_eq!(first["purgeProtection"], true);
        // An empty protected token may be re-initialised, and stays protected.
        let again = json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--force"]);
        assert_eq!(again["purgeProtection"], true, "purge protection survives re-initialisation");
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        json(&["key", "delete", "--name", "k"]);
        // A deleted key inside its retention: refused even with --force, and through PKCS#11.
        refused(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--force"], 1, "purge protection");
        let p = load_initialized();
        let slot = slot_by_label(&p, TOKEN_LABEL);
        assert_rv(p.init_token(slot, &pin(SO_PIN), TOKEN_LABEL), CKR_TOKEN_WRITE_PROTECTED, "C_InitToken of a purge-protected token with a deleted key");
        assert_eq!(names(&json(&["key", "list-deleted"]), "recoveryId"), vec!["k"], "the deleted key is still there");
    }
}

p11_test! {
    fn key_show_and_list_carry_the_pkcs11_label_and_id_of_each_version() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init(&[]);
        let made = json(&["key", "create", "--name", "web", "--kty", "EC", "--id", "0A1b"]);
        assert_eq!(made["pkcs11"], serde_json::json!({"label": "web", "id": "0a1b"}), "--id is the version's CKA_ID");
        let rotated = json(&["key", "rotate", "--name", "web"]);
        let version = rotated["key"]["kid"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        assert_eq!(rotated["pkcs11"]["id"], version.as_str(), "a rotated version's CKA_ID is its version id");
        let versions = json(&["key", "list-versions", "--name", "web"]);
        let ids: Vec<&str> = versions.as_array().unwrap().iter().map(|v| v["pkcs11"]["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec!["0a1b", version.as_str()], "each version keeps its own id");
        let list = json(&["key", "list"]);
        assert_eq!(list[0]["pkcs11"]["id"], version.as_str(), "key list shows the current version's id");

        // --id finds the version that has it, current or not, as a PKCS#11 find by CKA_ID does.
        let old = json(&["key", "show", "--id", "0a1b"]);
        assert_eq!(old["key"]["kid"], made["key"]["kid"], "key show --id finds the old version");
        let t = Token::reopen_existing();
        let found = t.find(&[class(ObjectClass::PRIVATE_KEY), cryptoki::object::Attribute::Id(vec![0x0a, 0x1b])]);
        assert_eq!(found.len(), 1);
        assert_eq!(t.attr(found[0], CKA_SOFTMHSM_KID, "kid"), made["key"]["kid"].as_str().unwrap().as_bytes(), "the same version through PKCS#11");
        assert_eq!(json(&["key", "show", "--name", "web", "--id", &version])["key"]["kid"], rotated["key"]["kid"]);
        refused(&["key", "show", "--name", "other", "--id", "0a1b"], 1, "with id 0a1b");
        refused(&["key", "create", "--name", "bad", "--kty", "EC", "--id", "0g"], 2, "--id '0g'");
        refused(&["key", "show"], 2, "needs --name or --id");

        // A label outside the naming rule shows as given, beside its generated name.
        let pair = t.keypair(Kp::Ec(OID_P256), "My Key.v1");
        let name = String::from_utf8(t.attr(pair.private, CKA_SOFTMHSM_NAME, "name")).unwrap();
        let shown = json(&["key", "show", "--name", &name]);
        assert_eq!(shown["pkcs11"]["label"], "My Key.v1");
        let table = cli(&["key", "list", "--output", "table"]).stdout;
        assert!(table.contains("My Key.v1") && table.contains("Label") && table.contains(&version), "{table}");
    }
}

p11_test! {
    fn pin_change_and_unlock_set_the_user_pin_and_a_wrong_pin_says_the_tries_left() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init(&[]);
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        let wrong = cli_with(&["key", "list"], Some("0000"));
        assert_refused(&wrong, 1, "9 tries left");
        let dir = tempfile::tempdir().unwrap();
        let new_file = dir.path().join("new-pin");
        std::fs::write(&new_file, "new-user-pin\nignored second line\n").unwrap();
        let changed = cli(&["pin", "change", "--new-pin-file", new_file.to_str().unwrap()]);
        assert_eq!(changed.code, 0, "pin change: {}", changed.stderr);
        assert_refused(&cli(&["key", "list"]), 1, "wrong PIN");
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "new-user-pin\n").unwrap();
        let listed = cli_with(&["key", "list", "--pin-file", pin_file.to_str().unwrap()], None);
        assert_eq!(listed.code, 0, "--pin-file with the new PIN: {}", listed.stderr);
        // The library agrees: C_Login with the new PIN.
        {
            let pkcs11 = load_initialized();
            let slot = slot_by_label(&pkcs11, TOKEN_LABEL);
            let session = ok(pkcs11.open_ro_session(slot), "C_OpenSession");
            ok(session.login(cryptoki::session::UserType::User, Some(&pin("new-user-pin"))), "C_Login with the PIN the CLI set");
        }

        // Lock the user PIN, then the SO sets a new one.
        for _ in 0..10 {
            cli_with(&["key", "list"], Some("0000"));
        }
        assert_refused(&cli_with(&["key", "list"], Some("new-user-pin")), 1, "locked");
        assert_refused(&cli_with(&["pin", "unlock", "--so-pin", "wrong-so-pin", "--new-pin", "x-1234"], None), 1, "wrong SO PIN");
        let unlocked = cli_with(&["pin", "unlock", "--new-pin", USER_PIN], None);
        assert_refused(&unlocked, 2, "--so-pin");
        let unlocked = cli_env(&["pin", "unlock", "--new-pin", USER_PIN], None, &[("SOFTMHSM_SO_PIN", SO_PIN)]);
        assert_eq!(unlocked.code, 0, "pin unlock: {}", unlocked.stderr);
        assert_eq!(names(&json(&["key", "list"]), "kid"), vec!["k"], "the unlocked PIN works and the keys are intact");
        assert_refused(&cli(&["pin", "change", "--new-pin", "123"]), 1, "4-255");
    }
}

p11_test! {
    fn token_list_and_slot_pick_tokens_and_labels_must_differ() {
        softmhsm_only!("the CLI works on softmhsm's store");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let conf = dir.path().join("softmhsm.toml");
        std::fs::write(&conf, format!("[[token]]\npath = {:?}\n[[token]]\npath = {:?}\nversioning = \"off\"\n", a, b)).unwrap();
        let conf = conf.to_str().unwrap();
        let run = |args: &[&str]| cli_env(args, Some(USER_PIN), &[("SOFTMHSM_CONF", conf)]);
        let listed = run(&["token", "list"]);
        assert_eq!(listed.code, 0, "token list: {}", listed.stderr);
        let v: Value = serde_json::from_str(&listed.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["initialized"], false);
        assert!(!a.exists() && !b.exists(), "listing uninitialised tokens creates nothing");

        // --slot reaches the second token, which has no label to name it by yet.
        let made = run(&["init", "--slot", "1", "--label", "legacy", "--so-pin", SO_PIN]);
        assert_eq!(made.code, 0, "init --slot 1: {}", made.stderr);
        assert!(b.join("softmhsm.db").exists() && !a.exists(), "only slot 1 was initialised");
        assert_refused(&run(&["init", "--slot", "0", "--label", "legacy", "--so-pin", SO_PIN]), 1, "already labelled 'legacy'");
        assert!(!a.exists() || run(&["token", "list"]).stdout.contains("\"initialized\": false"), "the refused init left slot 0 uninitialised");
        let made = run(&["init", "--slot", "0", "--label", "tls", "--so-pin", SO_PIN]);
        assert_eq!(made.code, 0, "init --slot 0: {}", made.stderr);
        let v: Value = serde_json::from_str(&run(&["token", "list"]).stdout).unwrap();
        assert_eq!((v[0]["label"].as_str(), v[1]["label"].as_str()), (Some("tls"), Some("legacy")));
        assert_eq!(v[0]["store"].as_str().unwrap(), a.join("softmhsm.db").to_str().unwrap());
        let shown: Value = serde_json::from_str(&run(&["token", "show", "--slot", "1"]).stdout).unwrap();
        assert_eq!(shown["label"], "legacy");
        let shown: Value = serde_json::from_str(&run(&["token", "show", "--token", "tls"]).stdout).unwrap();
        assert_eq!(shown["label"], "tls");
        assert_refused(&run(&["token", "show", "--slot", "2"]), 1, "no slot 2");
        assert_refused(&run(&["token", "show", "--slot", "x"]), 2, "bad --slot");
        assert_refused(&run(&["token", "show", "--slot", "0", "--token", "tls"]), 2, "not both");
    }
}

p11_test! {
    fn check_opens_every_record_and_sealed_key_and_names_the_damaged_one() {
        softmhsm_only!("the CLI works on softmhsm's store");
        if !tool("python3") {
            return;
        }
        init(&[]);
        json(&["key", "create", "--name", "good", "--kty", "EC"]);
        json(&["key", "create", "--name", "bad", "--kty", "RSA"]);
        json(&["key", "create", "--name", "gone", "--kty", "oct"]);
        json(&["key", "delete", "--name", "gone"]);
        let ok_report = json(&["check"]);
        assert_eq!(ok_report["rows"], 3, "live and deleted rows: {ok_report}");
        assert_eq!(ok_report["sealed"], 4, "three keys and the attestation key");
        assert_eq!(ok_report["damaged"], serde_json::json!([]));
        // Flip one byte of `bad`'s sealed material, as a damaged disk would.
        let db = store_dir().join("softmhsm.db");
        let script = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nb=bytearray(c.execute(\"select sealed from objects where name='bad'\").fetchone()[0])\nb[-1]^=1\nc.execute(\"update objects set sealed=? where name='bad'\",(bytes(b),))\nc.commit()\n";
        let st = Command::new("python3").args(["-c", script, db.to_str().unwrap()]).status().unwrap();
        assert!(st.success());
        let r = cli(&["check"]);
        assert_eq!(r.code, 1, "check exits 1 on damage: {}", r.stderr);
        let report: Value = serde_json::from_str(&r.stdout).unwrap();
        let damaged = report["damaged"].as_array().unwrap();
        assert_eq!(damaged.len(), 1, "{report}");
        assert!(damaged[0]["what"].as_str().unwrap().starts_with("key bad version "), "{report}");
        assert!(damaged[0]["problem"].as_str().unwrap().contains("does not open"), "{report}");
        assert_eq!(json(&["key", "list"]).as_array().unwrap().len(), 2, "check changed nothing");
    }
}

p11_test! {
    fn refused_values_exit_1_before_any_pin_is_asked() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init(&[]);
        // No PIN anywhere and no terminal: a check after the PIN would be a usage error (2).
        for (args, what) in [
            (&["key", "create", "--name", "k", "--kty", "RSA", "--size", "1024"][..], "size"),
            (&["key", "create", "--name", "k", "--kty", "EC", "--curve", "P-224"], "P-224"),
            (&["key", "create", "--name", "bad_name", "--kty", "oct"], "bad_name"),
        ] {
            assert_refused(&cli_with(args, None), 1, what);
        }
        assert_refused(&cli_with(&["key", "create", "--name", "k", "--kty", "DSA"], None), 2, "DSA");
    }
}

p11_test! {
    fn init_group_shares_the_token_directory_with_that_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = store_dir();
        // the caller's own group: chgrp to it needs no privilege
        let gid = std::fs::metadata(&dir).unwrap().gid().to_string();
        let bad = cli(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--group", "no-such-group-x"]);
        assert_eq!(bad.code, 2, "an unknown group is bad usage: {}", bad.stderr);
        init(&["--group", &gid]);
        json(&["key", "create", "--name", "shared", "--kty", "EC"]);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o2770);
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(mode(&f), 0o660, "{}", f.display());
            assert_eq!(std::fs::metadata(&f).unwrap().gid().to_string(), gid);
        }
        assert!(dir.join("softmhsm.db").exists());
    }
}

p11_test! {
    fn read_only_key_verbs_show_an_unversioned_tokens_keys() {
        softmhsm_only!("the CLI works on softmhsm's store");
        // One token with versioning = "off", for the library in this process
        // (p11_test runs each test in a process of its own) and the CLI.
        let conf = store_dir().with_file_name("off.toml");
        std::fs::write(&conf, format!("[[token]]\npath = {:?}\nversioning = \"off\"\n", store_dir())).unwrap();
        std::env::set_var("SOFTMHSM_CONF", &conf);
        init(&[]);
        let p = load_initialized();
        let s = ok(p.open_rw_session(slot_by_label(&p, TOKEN_LABEL)), "C_OpenSession");
        ok(s.login(cryptoki::session::UserType::User, Some(&pin(USER_PIN))), "C_Login");
        let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let mut points = Vec::new();
        for (label, id) in [("dup", 1u8), ("dup", 2), ("solo", 3)] {
            let public = [
                cryptoki::object::Attribute::Token(true),
                cryptoki::object::Attribute::Verify(true),
                cryptoki::object::Attribute::EcParams(p256.clone()),
                cryptoki::object::Attribute::Label(label.into()),
                cryptoki::object::Attribute::Id(vec![id]),
            ];
            let private = [
                cryptoki::object::Attribute::Token(true),
                cryptoki::object::Attribute::Private(true),
                cryptoki::object::Attribute::Sensitive(true),
                cryptoki::object::Attribute::Sign(true),
                cryptoki::object::Attribute::Label(label.into()),
                cryptoki::object::Attribute::Id(vec![id]),
            ];
            let (pubkey, _) = ok(s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private), "C_GenerateKeyPair");
            let attrs = ok(s.get_attributes(pubkey, &[cryptoki::object::AttributeType::EcPoint]), "C_GetAttributeValue");
            let Some(cryptoki::object::Attribute::EcPoint(point)) = attrs.into_iter().next() else { panic!("no CKA_EC_POINT") };
            points.push(point);
        }
        let listed = json(&["key", "list"]);
        let shown: Vec<(String, String)> = listed.as_array().unwrap().iter()
            .map(|k| (k["pkcs11"]["label"].as_str().unwrap().to_string(), k["pkcs11"]["id"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(shown, [("dup".into(), "01".into()), ("dup".into(), "02".into()), ("solo".into(), "03".into())]);
        let table = cli(&["key", "list", "--output", "table"]);
        assert_eq!(table.stdout.lines().count(), 2 + 3, "header, rule, three keys: {}", table.stdout);
        assert_eq!(json(&["key", "list-versions", "--name", "dup"]).as_array().unwrap().len(), 2);
        assert_refused(&cli(&["key", "show", "--name", "dup"]), 1, "2 keys are labelled so");
        let second = json(&["key", "show", "--id", "02"]);
        assert_eq!((second["pkcs11"]["label"].as_str(), second["pkcs11"]["id"].as_str()), (Some("dup"), Some("02")));
        // key download's public key is the library's CKA_EC_POINT (DER OCTET STRING 04||x||y)
        let file = store_dir().with_file_name("solo.pem");
        json(&["key", "download", "--name", "solo", "--file", file.to_str().unwrap()]);
        let pem = std::fs::read_to_string(&file).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64_std(&b64);
        let point = der_octet_string(&points[2]).unwrap();
        assert!(der.ends_with(point), "SPKI ends with the key's EC point");
        let token = json(&["token", "show"]);
        assert_eq!(token["keys"], 3, "{token}");
        assert_refused(&cli(&["key", "rotate", "--name", "solo"]), 1, "versioning = \"off\"");
    }
}

/// Standard base64 decoding (PEM bodies).
fn base64_std(s: &str) -> Vec<u8> {
    b64url(&s.trim_end_matches('=').replace('+', "-").replace('/', "_"))
}
