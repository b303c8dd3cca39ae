//! The audit log: one JSON line per management operation, login, refused
//! crypto operation and (with `audit = "all"`, the default) successful one,
//! from the CLI (run as a subprocess) and from the library (through the C
//! ABI), in `audit-softmhsm.jsonl` next to each test's store.

#[macro_use]
mod common;

use common::cli::cli_env;
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki_sys::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

/// PINs distinctive enough to search the log for.
const CLI_PIN: &str = "Zebra-pin-77";
const WRONG_PIN: &str = "Quokka-pin-99";

/// The audit file of the test's token.
fn audit_file() -> PathBuf {
    store_dir().join("audit-softmhsm.jsonl")
}

/// Every line of the audit file, parsed (a line that is not JSON fails the test).
fn lines() -> Vec<Value> {
    let text = std::fs::read_to_string(audit_file()).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

/// `(operationName, resultType)` of each line.
fn events(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["operationName"].as_str().unwrap().to_string(),
                l["resultType"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[track_caller]
fn assert_has(lines: &[Value], op: &str, result: &str) -> Value {
    lines
        .iter()
        .find(|l| l["operationName"] == op && l["resultType"] == result)
        .unwrap_or_else(|| panic!("no {op} {result} in {:?}", events(lines)))
        .clone()
}

/// Run the CLI with `pin` in `$SOFTMHSM_PIN`; returns (exit code, stdout, stderr).
fn cli_pin(pin: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let r = cli_env(args, Some(pin), env);
    (r.code, r.stdout, r.stderr)
}

#[track_caller]
fn cli(args: &[&str]) -> String {
    let (code, out, err) = cli_pin(CLI_PIN, args, &[]);
    assert_eq!(code, 0, "softmhsm {args:?} failed: {err}");
    out
}

fn scratch(name: &str) -> String {
    store_dir()
        .parent()
        .unwrap()
        .join(name)
        .display()
        .to_string()
}

p11_test! {
    fn cli_management_operations_and_logins_are_recorded() {
        softmhsm_only!("the CLI works on softmhsm's store");
        cli(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        cli(&["key", "create", "--name", "k", "--kty", "EC"]);
        cli(&["key", "rotate", "--name", "k"]);
        cli(&["key", "backup", "--name", "k", "--file", &scratch("k.bak")]);
        cli(&["key", "delete", "--name", "k"]);
        cli(&["key", "recover", "--name", "k"]);
        cli(&["key", "delete", "--name", "k"]);
        cli(&["key", "purge", "--name", "k"]);
        cli(&["key", "restore", "--file", &scratch("k.bak")]);
        cli(&["key", "attest", "--name", "k"]);
        let (code, _, _) = cli_pin(WRONG_PIN, &["key", "list"], &[]);
        assert_eq!(code, 1);
        let (code, _, _) = cli_pin(CLI_PIN, &["key", "purge", "--name", "nosuch"], &[]);
        assert_eq!(code, 1);

        let all = lines();
        for op in ["TokenInit", "Login", "KeyCreate", "KeyRotate", "KeyBackup", "KeyDelete",
                   "KeyRecover", "KeyPurge", "KeyRestore", "KeyAttest"] {
            assert_has(&all, op, "Success");
        }
        let bad_login = assert_has(&all, "Login", "Failure");
        assert_eq!(bad_login["resultDescription"], "CKR_PIN_INCORRECT");
        assert_has(&all, "KeyList", "Failure");
        let purge = assert_has(&all, "KeyPurge", "Failure");
        assert!(purge["resultDescription"].as_str().unwrap().contains("nosuch"));
        let created = assert_has(&all, "KeyCreate", "Success");
        assert!(created["kid"].as_str().unwrap().starts_with("softmhsm://test/keys/k/"), "{created}");
        assert_eq!(created["identity"], "user", "the CLI names whose PIN it checked: {created}");
        assert_eq!(assert_has(&all, "Login", "Success")["identity"], "user");
        assert!(bad_login.get("identity").is_none(), "a failed login names no one: {bad_login}");
        for l in &all {
            assert_eq!(l["caller"], "cli");
            let time = l["time"].as_str().unwrap();
            assert!(time.len() == 24 && time.ends_with('Z') && &time[19..20] == ".", "RFC 3339 UTC with ms: {time}");
            assert!(l["pid"].as_u64().unwrap() > 0);
            assert!(l["durationMs"].is_u64());
        }
        let text = std::fs::read_to_string(audit_file()).unwrap();
        for secret in [CLI_PIN, WRONG_PIN, SO_PIN] {
            assert!(!text.contains(secret), "the log must not hold a PIN");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(audit_file()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // softmhsm audit reads it back, filtered.
        let rotate = cli(&["audit", "--operation", "KeyRotate"]);
        assert_eq!(rotate.lines().count(), 1, "{rotate}");
        assert_eq!(cli(&["audit", "--since", "1h"]).lines().count(), all.len());
        assert_eq!(cli(&["audit", "--since", "2099-01-01T00:00:00Z"]), "");
        let table = cli(&["audit", "--output", "table", "--operation", "login"]);
        assert_eq!(table.lines().count(), 2 + all.iter().filter(|l| l["operationName"] == "Login").count());
        let (code, _, err) = cli_pin(CLI_PIN, &["audit", "--since", "yesterday"], &[]);
        assert_eq!(code, 2, "{err}");
    }
}

/// A key-pair template whose private half cannot sign.
fn no_sign_template() -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(false),
        Attribute::Label(b"nosign".to_vec()),
    ]
}

p11_test! {
    fn pkcs11_operations_are_recorded_and_none_lost_at_finalize() {
        softmhsm_only!("the audit log is softmhsm's");
        configure_audit("all");
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        assert_rv(t.session.login(UserType::User, Some(&pin("9999"))), CKR_PIN_INCORRECT, "C_Login(wrong PIN)");
        ok(t.session.login(UserType::User, Some(&pin(USER_PIN))), "C_Login");
        let good = t.keypair(Kp::Ec(OID_P256), "signer");
        let digest = [7u8; 32];
        for _ in 0..20 {
            ok(t.session.sign(&Mechanism::Ecdsa, good.private, &digest), "C_Sign");
        }
        let nosign = ok(
            t.try_keypair_tpl(Kp::Ec(OID_P256), &Token::pub_template(Kp::Ec(OID_P256), "nosign", true), &no_sign_template()),
            "C_GenerateKeyPair(no sign)",
        );
        assert_rv(t.session.sign(&Mechanism::Ecdsa, nosign.private, &digest), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_SignInit");
        ok(t.session.update_attributes(good.private, &[Attribute::Label(b"renamed".to_vec())]), "C_SetAttributeValue");
        let import = vec![
            class(ObjectClass::SECRET_KEY),
            key_type(KeyType::AES),
            Attribute::Token(true),
            Attribute::Encrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(b"imported".to_vec()),
            Attribute::Value(vec![7u8; 32]),
        ];
        let imported = ok(t.session.create_object(&import), "C_CreateObject(AES)");
        // AES-KW en/decryption is the Managed HSM's wrapKey/unwrapKey, audited so.
        assert_rv(t.session.encrypt_init(&Mechanism::AesKeyWrap, imported), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_EncryptInit(AES-KW)");
        assert_rv(t.session.decrypt_init(&Mechanism::AesKeyWrap, imported), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_DecryptInit(AES-KW)");
        ok(t.try_aes(32, "scratch", false), "C_GenerateKey(session key)");
        ok(t.session.destroy_object(nosign.private), "C_DestroyObject");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");

        // Read at once: C_Finalize wrote everything buffered.
        let all = lines();
        let ops = events(&all);
        for want in [("TokenInit", "Success"), ("Login", "Success"), ("PinInit", "Success"),
                     ("Logout", "Success"), ("Login", "Failure"), ("KeyCreate", "Success"),
                     ("KeySign", "Failure"), ("KeyUpdate", "Success"), ("KeyImport", "Success"),
                     ("KeyDelete", "Success"), ("KeyWrap", "Failure"), ("KeyUnwrap", "Failure")] {
            assert!(ops.contains(&(want.0.into(), want.1.into())), "{want:?} missing from {ops:?}");
        }
        let refused = assert_has(&all, "KeySign", "Failure");
        assert_eq!(refused["resultDescription"], "CKR_KEY_FUNCTION_NOT_PERMITTED");
        assert!(refused["kid"].as_str().unwrap().contains("/keys/nosign/"), "{refused}");
        assert_eq!(assert_has(&all, "Login", "Failure")["resultDescription"], "CKR_PIN_INCORRECT");
        assert!(assert_has(&all, "KeyUnwrap", "Failure")["kid"].as_str().unwrap().contains("/keys/imported/"));
        assert!(!ops.iter().any(|(op, _)| op == "KeyEncrypt" || op == "KeyDecrypt"), "AES-KW is not KeyEncrypt: {ops:?}");
        assert_eq!(ops.iter().filter(|(op, r)| op == "KeySign" && r == "Failure").count(), 1, "one refused signature");
        let signed: Vec<&Value> = all.iter().filter(|l| l["operationName"] == "KeySign" && l["resultType"] == "Success").collect();
        assert_eq!(signed.len(), 20, "every successful signature, none lost at C_Finalize");
        assert!(signed.iter().all(|l| l["identity"] == "user" && l["algorithm"] == "ES256"), "{signed:?}");
        assert_eq!(ops.iter().filter(|(op, _)| op == "KeyCreate").count(), 2, "two token pairs; a session key is no pool key");
        for l in &all {
            assert_eq!(l["caller"], "pkcs11");
            assert_eq!(l["pid"], std::process::id());
        }
        let text = std::fs::read_to_string(audit_file()).unwrap();
        assert!(!text.contains(SO_PIN), "the log must not hold a PIN");
    }
}

/// Refused `C_SignInit`s (invalid key handle) a writer process makes.
const WRITES: usize = 2000;

p11_test! {
    fn lines_of_two_processes_never_interleave() {
        softmhsm_only!("the audit log is softmhsm's");
        if phase().as_deref() == Some("writer") {
            let t = Token::reopen_existing();
            let mut mech = CK_MECHANISM { mechanism: CKM_ECDSA, pParameter: ptr::null_mut(), ulParameterLen: 0 };
            for _ in 0..WRITES {
                // SAFETY: a live session and a local mechanism.
                let rv = unsafe { p11!(t.raw, C_SignInit, t.h(), &mut mech, 0xdead_beef) };
                check(rv, CKR_KEY_HANDLE_INVALID, "C_SignInit(bad handle)");
            }
            let Token { session, pkcs11, .. } = t;
            drop(session);
            ok(pkcs11.finalize(), "C_Finalize");
            return;
        }
        drop(Token::fresh());
        let spawn = || {
            Command::new(std::env::current_exe().unwrap())
                .args(["lines_of_two_processes_never_interleave", "--exact", "--nocapture", "--test-threads", "1"])
                .env("SOFTMHSM_TEST_PHASE", "writer")
                .env_remove("SOFTMHSM_TEST_DONE")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn a writer")
        };
        let (mut a, mut b) = (spawn(), spawn());
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success(), "writers failed");
        let all = lines();
        let mut per_pid = std::collections::HashMap::new();
        for l in all.iter().filter(|l| l["operationName"] == "KeySign") {
            assert_eq!(l["resultDescription"], "CKR_KEY_HANDLE_INVALID");
            *per_pid.entry(l["pid"].as_u64().unwrap()).or_insert(0usize) += 1;
        }
        assert_eq!(per_pid.len(), 2, "two writers");
        assert!(per_pid.values().all(|n| *n == WRITES), "every line of each writer, whole: {per_pid:?}");
    }
}

p11_test! {
    fn a_forked_child_does_not_write_its_parents_lines_again() {
        softmhsm_only!("the audit log is softmhsm's");
        let t = Token::fresh();
        let slot = t.slot.id();
        let raw = &t.raw;
        // SAFETY: as in tests/fork.rs: the forked child is single-threaded and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                check(p11!(raw, C_Initialize, ptr::null_mut()), CKR_OK, "child: C_Initialize");
                let mut h: CK_SESSION_HANDLE = 0;
                let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
                check(p11!(raw, C_OpenSession, slot, flags, ptr::null_mut(), None, &mut h), CKR_OK, "child: C_OpenSession");
                let mut wrong = *b"0000";
                check(p11!(raw, C_Login, h, CKU_USER, wrong.as_mut_ptr(), 4), CKR_PIN_INCORRECT, "child: C_Login");
                check(p11!(raw, C_Finalize, ptr::null_mut()), CKR_OK, "child: C_Finalize");
            }));
            // SAFETY: leave without running anything inherited from the parent.
            unsafe { libc::_exit(if verdict.is_ok() { 0 } else { 3 }) };
        }
        let start = Instant::now();
        let mut status = 0;
        // SAFETY: our own child, out-pointer to a local.
        while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
            assert!(start.elapsed() < Duration::from_secs(60), "forked child hangs");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(libc::WEXITSTATUS(status), 0, "child's checks failed");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        let all = lines();
        let ops = events(&all);
        for once in ["TokenInit", "PinInit"] {
            assert_eq!(ops.iter().filter(|(op, _)| op == once).count(), 1, "{once} once: {ops:?}");
        }
        let child: Vec<&Value> = all.iter().filter(|l| l["pid"] == pid as u64).collect();
        assert_eq!(child.len(), 1, "the child's own event only: {child:?}");
        assert_eq!(child[0]["operationName"], "Login");
        assert_eq!(child[0]["resultType"], "Failure");
    }
}

p11_test! {
    fn softmhsm_audit_off_records_nothing() {
        softmhsm_only!("the audit log is softmhsm's");
        let off = [("SOFTMHSM_AUDIT", "off")];
        let (code, _, err) = cli_pin(CLI_PIN, &["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN], &off);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = cli_pin(CLI_PIN, &["key", "create", "--name", "k", "--kty", "EC"], &off);
        assert_eq!(code, 0, "{err}");
        assert!(!audit_file().exists());
    }
}

p11_test! {
    fn an_unwritable_audit_file_does_not_fail_the_operation() {
        softmhsm_only!("the audit log is softmhsm's");
        // A directory where the file should be: every append fails.
        std::fs::create_dir_all(audit_file()).unwrap();
        for args in [&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN][..], &["key", "create", "--name", "k", "--kty", "EC"]] {
            let (code, _, err) = cli_pin(USER_PIN, args, &[]);
            assert_eq!(code, 0, "softmhsm {args:?}: {err}");
        }
        let t = Token::reopen_existing();
        let k = t.keypair(Kp::Ec(OID_P256), "p11");
        assert!(t.session.sign(&Mechanism::RsaPkcs, k.private, &[1u8; 32]).is_err(), "refused, and recorded nowhere");
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS.mmmZ`,
/// by the civil-from-days algorithm (independent of the library's own).
fn lifecycle_secs(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// An AES-256 token key for AES-KW (the Managed HSM's wrapKey/unwrapKey).
fn kw_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::ValueLen(32.into()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// One successful sign, verify, encrypt, decrypt, wrap and unwrap through
/// PKCS#11 (each one `*Init`), on keys `ec`, `aes` and `kw`; then `C_Finalize`.
fn one_of_each_crypto_operation(t: Token) {
    let ec = t.keypair(Kp::Ec(OID_P256), "ec");
    let aes = t.aes(32, "aes");
    let kw = ok(
        t.session
            .generate_key(&Mechanism::AesKeyGen, &kw_template("kw")),
        "C_GenerateKey(AES-KW key)",
    );
    let digest = [9u8; 32];
    let sig = ok(
        t.session.sign(&Mechanism::Ecdsa, ec.private, &digest),
        "C_Sign",
    );
    ok(
        t.session
            .verify(&Mechanism::Ecdsa, ec.public, &digest, &sig),
        "C_Verify",
    );
    let iv = [3u8; 16];
    let ct = ok(
        t.session
            .encrypt(&Mechanism::AesCbcPad(iv), aes, b"message"),
        "C_Encrypt",
    );
    let pt = ok(
        t.session.decrypt(&Mechanism::AesCbcPad(iv), aes, &ct),
        "C_Decrypt",
    );
    assert_eq!(pt, b"message");
    let dek = [5u8; 32];
    let wrapped = ok(
        t.session.encrypt(&Mechanism::AesKeyWrap, kw, &dek),
        "C_Encrypt(AES-KW)",
    );
    let unwrapped = ok(
        t.session.decrypt(&Mechanism::AesKeyWrap, kw, &wrapped),
        "C_Decrypt(AES-KW)",
    );
    assert_eq!(unwrapped, dek);
    let Token {
        session, pkcs11, ..
    } = t;
    drop(session);
    ok(pkcs11.finalize(), "C_Finalize");
}

/// The six crypto operation names, with the key and algorithm each used above.
const CRYPTO_OPS: [(&str, &str, &str); 6] = [
    ("KeySign", "ec", "ES256"),
    ("KeyVerify", "ec", "ES256"),
    ("KeyEncrypt", "aes", "A256CBCPAD"),
    ("KeyDecrypt", "aes", "A256CBCPAD"),
    ("KeyWrap", "kw", "A256KW"),
    ("KeyUnwrap", "kw", "A256KW"),
];

p11_test! {
    fn each_successful_crypto_operation_is_one_line_with_kid_algorithm_and_identity() {
        softmhsm_only!("the audit log is softmhsm's");
        configure_audit("all");
        one_of_each_crypto_operation(Token::fresh());
        let all = lines();
        for (op, key, alg) in CRYPTO_OPS {
            let done: Vec<&Value> = all.iter().filter(|l| l["operationName"] == op).collect();
            assert_eq!(done.len(), 1, "one {op} line: {done:?}");
            let l = done[0];
            assert_eq!(l["resultType"], "Success", "{l}");
            assert_eq!(l["resultDescription"], "CKR_OK", "{l}");
            let kid = l["kid"].as_str().unwrap_or_else(|| panic!("no kid: {l}"));
            assert!(kid.starts_with(&format!("softmhsm://{TOKEN_LABEL}/keys/{key}/")), "{l}");
            assert_eq!(kid.rsplit('/').next().unwrap().len(), 32, "a version id: {l}");
            assert_eq!(l["algorithm"], alg, "{l}");
            assert_eq!(l["identity"], "user", "{l}");
            assert_eq!(l["caller"], "pkcs11");
            assert_eq!(l["pid"], std::process::id());
            let time = l["time"].as_str().unwrap();
            assert!(time.len() == 24 && time.ends_with('Z') && &time[19..20] == ".", "RFC 3339 UTC with ms: {time}");
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            assert!((now - lifecycle_secs(time)).abs() < 120, "the time of the call: {time}");
        }
        // The management events name who acted too: the SO set the user PIN.
        assert_eq!(assert_has(&all, "PinInit", "Success")["identity"], "so");
        assert_eq!(assert_has(&all, "KeyCreate", "Success")["identity"], "user");
        assert!(assert_has(&all, "TokenInit", "Success").get("identity").is_none(), "no one logged in to C_InitToken");

        // softmhsm audit shows them.
        let signs = cli(&["audit", "--operation", "KeySign"]);
        assert_eq!(signs.lines().count(), 1, "{signs}");
        let shown: Value = serde_json::from_str(signs.trim_end()).unwrap();
        assert_eq!(shown["identity"], "user");
        assert_eq!(shown["algorithm"], "ES256");
        let table = cli(&["audit", "--output", "table", "--operation", "KeyUnwrap"]);
        assert_eq!(table.lines().count(), 3, "header, rule, one row: {table}");
        assert!(table.lines().next().unwrap().contains("Identity"), "{table}");
        assert!(table.lines().nth(2).unwrap().contains(" user "), "{table}");
    }
}

/// Points the library at a configuration file naming this test's token with
/// `audit = "<level>"` (before the library is loaded).
fn configure_audit(level: &str) {
    let conf = store_dir().parent().unwrap().join("softmhsm.toml");
    let text = format!(
        "[[token]]\npath = {:?}\naudit = {level:?}\n",
        store_dir().display().to_string()
    );
    std::fs::write(&conf, text).unwrap();
    std::env::set_var("SOFTMHSM_CONF", conf);
}

p11_test! {
    fn audit_management_records_no_successful_crypto_operation() {
        softmhsm_only!("the audit log is softmhsm's");
        configure_audit("management");
        let t = Token::fresh();
        let nosign = ok(
            t.try_keypair_tpl(Kp::Ec(OID_P256), &Token::pub_template(Kp::Ec(OID_P256), "nosign", true), &no_sign_template()),
            "C_GenerateKeyPair(no sign)",
        );
        assert_rv(t.session.sign(&Mechanism::Ecdsa, nosign.private, &[1u8; 32]), CKR_KEY_FUNCTION_NOT_PERMITTED, "C_SignInit");
        one_of_each_crypto_operation(t);
        let all = lines();
        let ops = events(&all);
        for (op, _, _) in CRYPTO_OPS {
            assert!(!ops.contains(&(op.to_string(), "Success".to_string())), "{op} Success recorded at management: {ops:?}");
        }
        let refused = assert_has(&all, "KeySign", "Failure");
        assert_eq!(refused["identity"], "user");
        assert_eq!(refused["algorithm"], "ES256");
        for op in ["TokenInit", "PinInit", "Login", "KeyCreate"] {
            assert_has(&all, op, "Success");
        }
        assert_eq!(ops.iter().filter(|(op, _)| op == "KeyCreate").count(), 4, "nosign, ec, aes, kw");
    }
}

p11_test! {
    fn audit_off_records_nothing_from_the_library() {
        softmhsm_only!("the audit log is softmhsm's");
        configure_audit("off");
        one_of_each_crypto_operation(Token::fresh());
        assert!(!audit_file().exists(), "{:?}", lines());
    }
}

p11_test! {
    fn softmhsm_audit_overrides_the_token_setting() {
        softmhsm_only!("the audit log is softmhsm's");
        configure_audit("all");
        std::env::set_var("SOFTMHSM_AUDIT", "management");
        one_of_each_crypto_operation(Token::fresh());
        let ops = events(&lines());
        assert!(ops.contains(&("KeyCreate".into(), "Success".into())), "{ops:?}");
        assert!(!ops.iter().any(|(op, _)| op == "KeySign"), "{ops:?}");
    }
}

p11_test! {
    fn cli_data_plane_successes_follow_the_level() {
        softmhsm_only!("the CLI works on softmhsm's store");
        cli(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        cli(&["key", "create", "--name", "k", "--kty", "EC"]);
        let digest = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        let sign = ["key", "sign", "--name", "k", "--algorithm", "ES256", "--digest", digest];
        let (code, _, err) = cli_pin(CLI_PIN, &sign, &[("SOFTMHSM_AUDIT", "management")]);
        assert_eq!(code, 0, "{err}");
        assert!(!events(&lines()).iter().any(|(op, _)| op == "KeySign"), "not at management");
        cli(&sign);
        let signed = assert_has(&lines(), "KeySign", "Success");
        assert_eq!(signed["identity"], "user");
        assert_eq!(signed["algorithm"], "ES256");
    }
}

p11_test! {
    fn successful_crypto_operations_are_recorded_by_default() {
        softmhsm_only!("the audit log is softmhsm's");
        one_of_each_crypto_operation(Token::fresh());
        let ops = events(&lines());
        for (op, _, _) in CRYPTO_OPS {
            let n = ops.iter().filter(|(o, r)| o == op && r == "Success").count();
            assert_eq!(n, 1, "{op} by default: {ops:?}");
        }
    }
}
