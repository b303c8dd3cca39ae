//! Several processes on one token: concurrent key creation, rotation and
//! deletion; failed-login counters shared through the store; and secrets
//! hygiene of the store and the log.
//!
//! Worker processes are this test binary re-run on the same test with
//! `SOFTMHSM_TEST_PHASE=<phase>` and the parent's `SOFTMHSM_DIR`, started
//! together (unlike `respawn_phase`, which runs one child to completion).

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;

const WORKERS: usize = 4;
/// Keys each worker creates; every third is rotated, every fifth deleted.
const KEYS_PER_WORKER: usize = 100;
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);

/// Test path within this binary (libtest's name, without the crate).
fn test_path(module_and_name: &str) -> String {
    module_and_name
        .split_once("::")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| module_and_name.to_string())
}

/// Starts this test again as phase `phase` on the same token directory;
/// stdout and stderr go to `<dir>/<phase>.out` / `.err`.
fn spawn_phase(test: &str, phase: &str, dir: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([
        test,
        "--exact",
        "--nocapture",
        "--include-ignored",
        "--test-threads",
        "1",
    ])
    .env("SOFTMHSM_TEST_CHILD", "1")
    .env("SOFTMHSM_TEST_PHASE", phase)
    // The completion marker belongs to the parent test child alone.
    .env_remove("SOFTMHSM_TEST_DONE")
    .stdin(Stdio::null())
    .stdout(fs::File::create(dir.join(format!("{phase}.out"))).expect("phase stdout"))
    .stderr(fs::File::create(dir.join(format!("{phase}.err"))).expect("phase stderr"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn phase process")
}

/// Waits for a phase process and asserts it succeeded (showing its output if not).
fn wait_phase(mut child: Child, phase: &str, dir: &Path) {
    let status = child.wait().expect("wait for phase process");
    if !status.success() {
        let out = fs::read_to_string(dir.join(format!("{phase}.out"))).unwrap_or_default();
        let err = fs::read_to_string(dir.join(format!("{phase}.err"))).unwrap_or_default();
        panic!("phase {phase} failed ({status}):\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    }
}

/// A directory next to the token directory, shared by all phases of a test.
fn work_dir(name: &str) -> PathBuf {
    let d = store_dir().with_file_name(name);
    fs::create_dir_all(&d).expect("create work dir");
    d
}

/// A worker's session, logged in as the user (the token is already initialised).
fn user_session() -> (cryptoki::context::Pkcs11, Session, Raw) {
    let p = load_initialized();
    let slot = slot_by_label(&p, TOKEN_LABEL);
    let s = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
    ok(
        s.login(UserType::User, Some(&pin(USER_PIN))),
        "C_Login(USER)",
    );
    (p, s, Raw::load())
}

fn aes_gen(s: &Session, l: &str) -> cryptoki::error::Result<ObjectHandle> {
    s.generate_key(&Mechanism::AesKeyGen, &Token::aes_template(32, l, true))
}

fn version_of(raw: &Raw, s: &Session, o: ObjectHandle) -> String {
    let v = raw
        .attr(s.handle(), o.handle(), CKA_SOFTMHSM_VERSION)
        .unwrap_or_else(|rv| panic!("CKA_SOFTMHSM_VERSION -> {}", rv_name(rv)));
    String::from_utf8(v).expect("version is UTF-8")
}

/// Appends one acknowledged line, flushed and fsynced before going on.
fn ack(f: &mut fs::File, line: &str) {
    writeln!(f, "{line}").expect("write ack");
    f.sync_all().expect("fsync ack");
}

/// What the acknowledgment files say: label → (versions in order, deleted).
fn read_acks(path: &Path) -> BTreeMap<String, (Vec<String>, bool)> {
    let mut m: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for line in fs::read_to_string(path).expect("read ack file").lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["version", l, v] => m.entry(l.to_string()).or_default().0.push(v.to_string()),
            ["deleted", l] => m.entry(l.to_string()).or_default().1 = true,
            _ => panic!("bad ack line {line:?}"),
        }
    }
    m
}

/// One worker process: create, rotate, delete; then, once every worker is
/// done, find the others' keys.
fn worker(n: usize, dir: &Path) {
    let (_p, s, raw) = user_session();
    let mut acks = fs::File::create(dir.join(format!("acks-{n}"))).expect("ack file");
    for i in 0..KEYS_PER_WORKER {
        let l = format!("w{n}-k{i}");
        let mut handles = Vec::new();
        let rounds = if i % 3 == 0 { 3 } else { 1 };
        for _ in 0..rounds {
            let k = ok(aes_gen(&s, &l), &format!("worker {n}: C_GenerateKey({l})"));
            ack(
                &mut acks,
                &format!("version {l} {}", version_of(&raw, &s, k)),
            );
            handles.push(k);
        }
        if i % 5 == 1 {
            // A Managed HSM key is deleted whole: destroying its current version
            // soft-deletes every version, whose handles are then invalid.
            let (current, older) = handles.split_last().expect("one version at least");
            ok(
                s.destroy_object(*current),
                &format!("worker {n}: C_DestroyObject({l})"),
            );
            ack(&mut acks, &format!("deleted {l}"));
            for k in older {
                assert_rv(
                    s.destroy_object(*k),
                    CKR_OBJECT_HANDLE_INVALID,
                    &format!("worker {n}: C_DestroyObject(older version of deleted {l})"),
                );
            }
        }
    }
    fs::write(dir.join(format!("ready-{n}")), b"").expect("ready marker");
    let start = Instant::now();
    while (0..WORKERS).any(|m| !dir.join(format!("ready-{m}")).exists()) {
        assert!(
            start.elapsed() < BARRIER_TIMEOUT,
            "worker {n}: the others never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = 0;
    for m in (0..WORKERS).filter(|m| *m != n) {
        for (l, (versions, deleted)) in read_acks(&dir.join(format!("acks-{m}"))) {
            let found = ok(
                s.find_objects(&[class(ObjectClass::SECRET_KEY), label(&l)]),
                "C_FindObjects",
            );
            if deleted {
                assert!(
                    found.is_empty(),
                    "worker {n}: worker {m}'s deleted key {l} is still found"
                );
            } else {
                assert_eq!(
                    found.len(),
                    1,
                    "worker {n}: worker {m}'s key {l} must be found once"
                );
                assert_eq!(
                    &version_of(&raw, &s, found[0]),
                    versions.last().unwrap(),
                    "worker {n}: {l} current version"
                );
                seen += 1;
            }
        }
    }
    fs::write(dir.join(format!("seen-{n}")), seen.to_string()).expect("seen marker");
}

p11_test! {
    fn four_processes_create_rotate_and_delete_on_one_token() {
        let dir = work_dir("mp");
        if let Some(ph) = phase() {
            let n: usize = ph.strip_prefix("worker-").and_then(|x| x.parse().ok()).expect("worker-N phase");
            worker(n, &dir);
            return;
        }
        // The parent keeps its own session open throughout: its cache must
        // catch up with the workers' writes.
        let t = Token::fresh();
        let test = test_path(concat!(module_path!(), "::four_processes_create_rotate_and_delete_on_one_token"));
        let start = Instant::now();
        let children: Vec<Child> = (0..WORKERS)
            .map(|n| spawn_phase(&test, &format!("worker-{n}"), &dir, &[]))
            .collect();
        for (n, c) in children.into_iter().enumerate() {
            wait_phase(c, &format!("worker-{n}"), &dir);
        }
        let elapsed = start.elapsed();
        let (mut live, mut versions_total, mut deleted_total) = (0, 0, 0);
        for n in 0..WORKERS {
            let acks = read_acks(&dir.join(format!("acks-{n}")));
            assert_eq!(acks.len(), KEYS_PER_WORKER, "worker {n} acknowledged every key");
            for (l, (versions, deleted)) in &acks {
                versions_total += versions.len();
                let current = t.find(&[class(ObjectClass::SECRET_KEY), label(l)]);
                let by_name = t.find(&[class(ObjectClass::SECRET_KEY), vendor(CKA_SOFTMHSM_NAME, l.as_bytes())]);
                assert_eq!(current, by_name, "{l}: the same current object by CKA_LABEL and by CKA_SOFTMHSM_NAME");
                let all_versions: usize = versions
                    .iter()
                    .map(|v| t.find(&[class(ObjectClass::SECRET_KEY), vendor(CKA_SOFTMHSM_VERSION, v.as_bytes())]).len())
                    .sum();
                if *deleted {
                    deleted_total += 1;
                    assert!(current.is_empty(), "{l}: deleted, yet found: {current:?}");
                    assert_eq!(all_versions, 0, "{l}: a deleted version is still found");
                    continue;
                }
                live += 1;
                assert_eq!(current.len(), 1, "{l}: exactly one current version");
                let v = String::from_utf8(t.attr(current[0], CKA_SOFTMHSM_VERSION, "CKA_SOFTMHSM_VERSION")).unwrap();
                assert_eq!(&v, versions.last().unwrap(), "{l}: the last acknowledged version is current");
                assert_eq!(all_versions, versions.len(), "{l}: every acknowledged version is found once by its id");
                assert!(t.attr_bool(current[0], CKA_SOFTMHSM_CURRENT, "CKA_SOFTMHSM_CURRENT"), "{l}: current flag");
            }
            let seen: usize = fs::read_to_string(dir.join(format!("seen-{n}"))).unwrap().parse().unwrap();
            assert!(seen > 0, "worker {n} saw keys of the others");
        }
        assert_eq!(t.find(&[class(ObjectClass::SECRET_KEY)]).len(), live, "no key beyond the acknowledged ones");
        report(&format!(
            "MULTIPROCESS {WORKERS} processes x {KEYS_PER_WORKER} keys: {versions_total} versions acknowledged, \
             {deleted_total} keys deleted, {live} live, all checked, in {:.1}s",
            elapsed.as_secs_f64()
        ));
    }
}

// ---------------------------------------------------------------------------
// Failed-login counters (DESIGN §4: in the store, shared, kept across restarts)
// ---------------------------------------------------------------------------

/// The user-PIN flags of `C_GetTokenInfo`: (COUNT_LOW, FINAL_TRY, LOCKED).
fn user_pin_flags(p: &cryptoki::context::Pkcs11) -> (bool, bool, bool) {
    let slot = slot_by_label(p, TOKEN_LABEL);
    let i = ok(p.get_token_info(slot), "C_GetTokenInfo");
    (
        i.user_pin_count_low(),
        i.user_pin_final_try(),
        i.user_pin_locked(),
    )
}

fn wrong_login(s: &Session, what: &str) {
    assert_rv(
        s.login(UserType::User, Some(&pin("9999"))),
        CKR_PIN_INCORRECT,
        what,
    );
}

p11_test! {
    fn user_pin_flags_are_truthful_at_1_9_and_10_failures() {
        softmhsm_only!("SoftHSMv2 does not count failed logins");
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        assert_eq!(user_pin_flags(&t.pkcs11), (false, false, false), "no failure yet");
        for i in 1..=10 {
            wrong_login(&t.session, &format!("wrong PIN {i}"));
            let expect = match i {
                1..=8 => (true, false, false),
                9 => (true, true, false),
                _ => (false, false, true),
            };
            let got = user_pin_flags(&t.pkcs11);
            // At 10 COUNT_LOW may stay set alongside LOCKED; LOCKED is what matters.
            if i == 10 {
                assert_eq!((got.1, got.2), (false, true), "after 10 failures: LOCKED, not FINAL_TRY (got {got:?})");
            } else {
                assert_eq!(got, expect, "(COUNT_LOW, FINAL_TRY, LOCKED) after {i} failures");
            }
        }
        assert_rv(t.session.login(UserType::User, Some(&pin(USER_PIN))), CKR_PIN_LOCKED, "right PIN while locked");
    }
}

p11_test! {
    fn a_successful_login_resets_the_failure_count() {
        softmhsm_only!("SoftHSMv2 does not count failed logins");
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        for i in 1..=9 {
            wrong_login(&t.session, &format!("wrong PIN {i}"));
        }
        ok(t.session.login(UserType::User, Some(&pin(USER_PIN))), "C_Login on the final try");
        assert_eq!(user_pin_flags(&t.pkcs11), (false, false, false), "a success clears the count");
    }
}

p11_test! {
    fn failure_count_survives_finalize_and_is_shared_with_other_processes() {
        softmhsm_only!("SoftHSMv2 does not count failed logins");
        let test = test_path(concat!(module_path!(), "::failure_count_survives_finalize_and_is_shared_with_other_processes"));
        match phase().as_deref() {
            Some("eight-more") => {
                let p = load_initialized();
                assert_eq!(user_pin_flags(&p), (true, false, false), "second process sees the parent's failure");
                let s = ok(p.open_rw_session(slot_by_label(&p, TOKEN_LABEL)), "C_OpenSession");
                for i in 2..=9 {
                    wrong_login(&s, &format!("wrong PIN {i} (second process)"));
                }
                assert_eq!(user_pin_flags(&p), (true, true, false), "final try after 9");
                return;
            }
            Some("so-unlocks") => {
                let p = load_initialized();
                assert!(user_pin_flags(&p).2, "third process sees the lock");
                let s = ok(p.open_rw_session(slot_by_label(&p, TOKEN_LABEL)), "C_OpenSession");
                ok(s.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO)");
                ok(s.init_pin(&pin("4321")), "C_InitPIN unlocks");
                ok(s.logout(), "C_Logout(SO)");
                assert_eq!(user_pin_flags(&p), (false, false, false), "unlocked, count cleared");
                return;
            }
            Some(other) => panic!("unknown phase {other}"),
            None => {}
        }
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        wrong_login(&t.session, "wrong PIN 1");
        let Token { session, pkcs11, raw, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        drop(raw);
        let p = load_initialized();
        assert_eq!(user_pin_flags(&p), (true, false, false), "the failure survives C_Finalize/C_Initialize");
        let dir = work_dir("pins");
        wait_phase(spawn_phase(&test, "eight-more", &dir, &[]), "eight-more", &dir);
        assert_eq!(user_pin_flags(&p), (true, true, false), "this process sees the other's failures: final try");
        let s = ok(p.open_rw_session(slot_by_label(&p, TOKEN_LABEL)), "C_OpenSession");
        wrong_login(&s, "wrong PIN 10");
        assert!(user_pin_flags(&p).2, "locked after 10 failures across two processes");
        assert_rv(s.login(UserType::User, Some(&pin(USER_PIN))), CKR_PIN_LOCKED, "right PIN while locked");
        wait_phase(spawn_phase(&test, "so-unlocks", &dir, &[]), "so-unlocks", &dir);
        assert_eq!(user_pin_flags(&p), (false, false, false), "this process sees the SO's unlock");
        ok(s.login(UserType::User, Some(&pin("4321"))), "C_Login with the PIN the SO set in another process");
    }
}

// ---------------------------------------------------------------------------
// Secrets hygiene
// ---------------------------------------------------------------------------

p11_test! {
    fn store_directory_is_0700_and_files_0600() {
        if pg::in_use() {
            println!("SKIPPED on PostgreSQL: the store is no file");
            return;
        }
        softmhsm_only!("SoftHSMv2 has its own store layout");
        // A directory the library creates itself (the harness's own dir
        // already exists, and existing directories keep their modes).
        let fresh = store_dir().join("created-by-softmhsm");
        // SAFETY: still single-threaded, before the module is loaded.
        std::env::set_var("SOFTMHSM_DIR", &fresh);
        let t = Token::fresh();
        t.aes(32, "on-disk");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700, "store directory mode");
        let files: Vec<PathBuf> = fs::read_dir(&fresh).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(files.iter().any(|f| f.ends_with("softmhsm.db")), "the store file exists: {files:?}");
        for f in &files {
            assert_eq!(mode(f), 0o600, "mode of {}", f.display());
        }
    }
}

/// A distinctive user PIN and key, easy to find in a log.
const LOG_PIN: &str = "pin-Qx7vJ2wK";
const LOG_NEW_PIN: &str = "pin-Hb4nR8zT";
const LOG_WRONG_PIN: &str = "pin-Wm3cY6pL";
const LOG_KEY: [u8; 32] = [
    0xc3, 0x9e, 0x41, 0x7a, 0xd2, 0x05, 0xb8, 0x6f, 0x13, 0xe4, 0x9a, 0x27, 0x5c, 0xf1, 0x88, 0x3d,
    0x60, 0xab, 0x1e, 0xd7, 0x42, 0x95, 0xc0, 0x3b, 0x7e, 0x09, 0xf6, 0x54, 0xa1, 0x2d, 0xbf, 0x68,
];

p11_test! {
    fn trace_log_holds_neither_pin_nor_key() {
        softmhsm_only!("SOFTMHSM_LOG is softmhsm's");
        let test = test_path(concat!(module_path!(), "::trace_log_holds_neither_pin_nor_key"));
        if phase().as_deref() == Some("logger") {
            let p = load_initialized();
            let slot = slot_by_label(&p, TOKEN_LABEL);
            let s = ok(p.open_rw_session(slot), "C_OpenSession");
            // Failures are what gets logged: a wrong PIN, a key value of a bad length.
            assert!(s.login(UserType::User, Some(&pin(LOG_WRONG_PIN))).is_err(), "C_Login with a wrong PIN");
            ok(s.login(UserType::User, Some(&pin(LOG_PIN))), "C_Login(USER)");
            assert!(s.set_pin(&pin(LOG_WRONG_PIN), &pin(LOG_NEW_PIN)).is_err(), "C_SetPIN with a wrong old PIN");
            assert!(s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(LOG_KEY[..31].to_vec()),
                Attribute::Token(true),
            ]).is_err(), "C_CreateObject(AES) with a 31-byte value");
            ok(s.set_pin(&pin(LOG_PIN), &pin(LOG_NEW_PIN)), "C_SetPIN");
            let k = ok(s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(LOG_KEY.to_vec()),
                Attribute::Token(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"logged".to_vec()),
            ]), "C_CreateObject(AES)");
            let mut iv = [1u8; 12];
            let ct = ok(s.encrypt(&Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()), k, b"hello"), "C_Encrypt");
            let mut iv = [1u8; 12];
            let pt = ok(s.decrypt(&Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()), k, &ct), "C_Decrypt");
            assert_eq!(pt, b"hello");
            ok(s.logout(), "C_Logout");
            ok(s.login(UserType::User, Some(&pin(LOG_NEW_PIN))), "C_Login with the new PIN");
            return;
        }
        let (p, slot) = token_without_user_pin();
        {
            let so = ok(p.open_rw_session(slot), "C_OpenSession");
            ok(so.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO)");
            ok(so.init_pin(&pin(LOG_PIN)), "C_InitPIN");
        }
        let dir = work_dir("log");
        wait_phase(spawn_phase(&test, "logger", &dir, &[("SOFTMHSM_LOG", "trace")]), "logger", &dir);
        let log = fs::read(dir.join("logger.err")).unwrap();
        assert!(!log.is_empty(), "SOFTMHSM_LOG=trace must log something (else this test proves nothing)");
        let text = String::from_utf8_lossy(&log).to_string();
        let lower = text.to_ascii_lowercase();
        let contains = |needle: &[u8]| log.windows(needle.len()).any(|w| w == needle);
        for secret in [LOG_PIN, LOG_NEW_PIN, LOG_WRONG_PIN] {
            assert!(!contains(secret.as_bytes()), "the log holds the PIN {secret:?}");
            assert!(!lower.contains(&hex(secret.as_bytes())), "the log holds the PIN {secret:?} in hex");
        }
        assert!(!contains(&LOG_KEY), "the log holds the raw key bytes");
        assert!(!lower.contains(&hex(&LOG_KEY)), "the log holds the key in hex");
        assert!(!lower.contains(&hex(&LOG_KEY[..8])), "the log holds part of the key in hex");
        let dec: Vec<String> = LOG_KEY[..8].iter().map(|b| b.to_string()).collect();
        assert!(!text.contains(&dec.join(", ")) && !text.contains(&dec.join(",")), "the log holds the key as a byte list");
        report(&format!("LOG checked: {} bytes of trace output", log.len()));
    }
}

p11_test! {
    fn device_error_names_the_function_and_the_cause_in_the_debug_log() {
        softmhsm_only!("SOFTMHSM_LOG is softmhsm's");
        let test = test_path(concat!(module_path!(), "::device_error_names_the_function_and_the_cause_in_the_debug_log"));
        if phase().as_deref() == Some("broken") {
            let p = load_initialized();
            let slot = p.get_all_slots().expect("C_GetSlotList")[0];
            assert_rv(p.open_rw_session(slot), CKR_DEVICE_ERROR, "C_OpenSession on a store that cannot be opened");
            return;
        }
        let dir = work_dir("broken");
        // the token's directory is a file: the store cannot be opened
        let file = dir.join("not-a-directory");
        fs::write(&file, b"x").unwrap();
        let conf = dir.join("broken.toml");
        fs::write(&conf, format!("[[token]]\npath = {:?}\n", file.display().to_string())).unwrap();
        let env = [("SOFTMHSM_LOG", "debug"), ("SOFTMHSM_CONF", conf.to_str().unwrap())];
        wait_phase(spawn_phase(&test, "broken", &dir, &env), "broken", &dir);
        let log = fs::read_to_string(dir.join("broken.err")).unwrap();
        let want = format!(
            "C_OpenSession: returning CKR_DEVICE_ERROR: token store {}/softmhsm.db: Not a directory",
            file.display()
        );
        assert!(log.contains(&want), "no line with {want:?} in:\n{log}");
    }
}

p11_test! {
    fn an_unreachable_postgresql_server_fails_the_first_call_that_needs_it() {
        softmhsm_only!("a PostgreSQL pool, and SOFTMHSM_LOG is softmhsm's");
        let test = test_path(concat!(
            module_path!(),
            "::an_unreachable_postgresql_server_fails_the_first_call_that_needs_it"
        ));
        if phase().as_deref() == Some("unreachable") {
            // The connection is opened at the first call that needs the
            // store: C_Initialize and the slot calls do not.
            let p = load_initialized();
            let slots = ok(p.get_all_slots(), "C_GetSlotList");
            assert_eq!(slots.len(), 1, "the configured token's slot");
            let info = ok(p.get_slot_info(slots[0]), "C_GetSlotInfo");
            assert!(info.token_present(), "the token is present (its store is not reached)");
            assert_rv(p.get_token_info(slots[0]), CKR_DEVICE_ERROR, "C_GetTokenInfo reads the token's label and flags");
            assert_rv(p.open_rw_session(slots[0]), CKR_DEVICE_ERROR, "C_OpenSession");
            assert_rv(p.open_ro_session(slots[0]), CKR_DEVICE_ERROR, "C_OpenSession, tried again");
            return;
        }
        let dir = work_dir("unreachable");
        // Nothing listens on port 1: the connection is refused at once.
        let url = "postgresql://softmhsm@127.0.0.1:1/pool?connect_timeout=2";
        let env = [("SOFTMHSM_LOG", "debug"), ("SOFTMHSM_STORE_URL", url)];
        wait_phase(spawn_phase(&test, "unreachable", &dir, &env), "unreachable", &dir);
        let log = fs::read_to_string(dir.join("unreachable.err")).unwrap();
        for call in ["C_GetTokenInfo", "C_OpenSession"] {
            let want = format!("{call}: returning CKR_DEVICE_ERROR: token store {url}: ");
            assert!(log.contains(&want), "no line with {want:?} in:\n{log}");
        }
        assert!(log.contains("Connection refused"), "the cause is named:\n{log}");
    }
}

p11_test! {
    fn a_process_that_never_uses_the_token_opens_no_postgresql_connection() {
        softmhsm_only!("a PostgreSQL pool");
        let test = test_path(concat!(
            module_path!(),
            "::a_process_that_never_uses_the_token_opens_no_postgresql_connection"
        ));
        let url = match std::env::var("SOFTMHSM_STORE_URL") {
            Ok(url) => url,
            Err(_) => {
                // Not a SOFTMHSM_TEST_STORE=postgres run: a pool of its own.
                let Some(url) = pg::fresh_pool() else { return };
                std::env::set_var("SOFTMHSM_STORE_URL", &url);
                url
            }
        };
        if phase().as_deref() == Some("idle") {
            let me = std::process::id();
            // The server's own list of sessions, read on another connection.
            let sessions = || pg::sessions_of(&url, me).len();
            let p = load_initialized();
            let slots = ok(p.get_all_slots(), "C_GetSlotList");
            ok(p.get_slot_info(slots[0]), "C_GetSlotInfo");
            ok(p.get_mechanism_list(slots[0]), "C_GetMechanismList");
            assert_eq!(sessions(), 0, "C_Initialize and the slot calls open no connection");
            ok(p.finalize(), "C_Finalize");
            assert_eq!(sessions(), 0, "nor does C_Finalize");
            let p = load_initialized();
            let slot = ok(p.get_all_slots(), "C_GetSlotList")[0];
            assert_eq!(sessions(), 0, "a second C_Initialize");
            let s = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
            assert_eq!(sessions(), 1, "the first call that needs the store opens one connection");
            ok(s.login(UserType::User, Some(&pin(USER_PIN))), "C_Login(USER)");
            let key = ok(aes_gen(&s, "lazy"), "C_GenerateKey");
            ok(s.destroy_object(key), "C_DestroyObject");
            assert_eq!(sessions(), 1, "and the later calls use it");
            drop(s);
            ok(p.finalize(), "C_Finalize");
            return;
        }
        // The token is initialised by this process; the phase is a new one.
        drop(Token::fresh());
        let dir = work_dir("idle");
        wait_phase(spawn_phase(&test, "idle", &dir, &[]), "idle", &dir);
    }
}
