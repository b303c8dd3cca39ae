//! The audit log: one JSON line per management operation, login and refused
//! crypto operation, from the CLI (run as a subprocess) and from the library
//! (through the C ABI), in `audit-softmhsm.jsonl` next to each test's store.

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
        assert_eq!(ops.iter().filter(|(op, _)| op == "KeySign").count(), 1, "successful signatures are not recorded");
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
