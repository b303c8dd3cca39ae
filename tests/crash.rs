//! Crash consistency (DESIGN §4): a process SIGKILLed at any instant leaves a
//! store that opens, with every acknowledged key intact and usable, and a
//! PIN change is all or nothing.
//!
//! A writer process (this test binary in a phase) acknowledges each key in an
//! fsynced file right after `C_GenerateKey` returns `CKR_OK`; the parent kills
//! it after a random delay, many times, then checks the token.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;
use rand_core::{OsRng, RngCore};
use sha2::Digest;

const ROUNDS: usize = 24;
const PIN_A: &str = "pin-alpha-1";
const PIN_B: &str = "pin-bravo-2";

fn test_path(module_and_name: &str) -> String {
    module_and_name
        .split_once("::")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| module_and_name.to_string())
}

/// Starts this test again as phase `phase` on the same token directory.
fn spawn_phase(test: &str, phase: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            test,
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env("SOFTMHSM_TEST_CHILD", "1")
        .env("SOFTMHSM_TEST_PHASE", phase)
        .env_remove("SOFTMHSM_TEST_DONE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join(format!("{phase}.err"))).expect("phase stderr"))
        .spawn()
        .expect("spawn phase process")
}

/// SIGKILLs `child` after `delay` (unless it has already exited, which
/// counts as a failure: the writers loop until killed).
fn kill_after(mut child: Child, delay: Duration, phase: &str, dir: &Path) {
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().expect("try_wait") {
        let err = fs::read_to_string(dir.join(format!("{phase}.err"))).unwrap_or_default();
        panic!("phase {phase} exited by itself ({status}) before the kill:\n{err}");
    }
    // SAFETY: plain syscall on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill(SIGKILL)");
    child.wait().expect("reap killed child");
}

/// A random delay in `[lo, hi)` milliseconds.
fn random_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo + OsRng.next_u64() % (hi - lo))
}

fn work_dir(name: &str) -> std::path::PathBuf {
    let d = store_dir().with_file_name(name);
    fs::create_dir_all(&d).expect("create work dir");
    d
}

fn session_logged_in(p: &Pkcs11, user_pin: &str) -> Session {
    let s = ok(
        p.open_rw_session(slot_by_label(p, TOKEN_LABEL)),
        "C_OpenSession(RW)",
    );
    ok(
        s.login(UserType::User, Some(&pin(user_pin))),
        "C_Login(USER)",
    );
    s
}

fn gcm_round_trip(s: &Session, k: ObjectHandle, what: &str) {
    let mut iv = [9u8; 12];
    let m = Mechanism::AesGcm(GcmParams::new(&mut iv, b"crash", 128.into()).unwrap());
    let ct = ok(s.encrypt(&m, k, b"survived"), &format!("{what}: C_Encrypt"));
    let pt = ok(s.decrypt(&m, k, &ct), &format!("{what}: C_Decrypt"));
    assert_eq!(pt, b"survived", "{what}: AES-GCM round trip");
}

/// A writer process's logged-in token and its acknowledgment file (appended to).
fn writer(dir: &Path) -> (Token, fs::File) {
    let p = load_initialized();
    let s = session_logged_in(&p, USER_PIN);
    let t = Token {
        session: s,
        slot: slot_by_label(&p, TOKEN_LABEL),
        raw: Raw::load(),
        pkcs11: p,
    };
    let acks = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acks"))
        .expect("ack file");
    (t, acks)
}

/// The writer: token keys in a loop (AES, and every fourth an EC pair), each
/// label acknowledged, fsynced, right after `CKR_OK`.
fn generator(round: usize, dir: &Path) {
    let (t, mut acks) = writer(dir);
    for i in 0.. {
        let l = format!("c{round}-{i}");
        let line = if i % 4 == 3 {
            ok(
                t.try_keypair(Kp::Ec(OID_P256), &l, true),
                "C_GenerateKeyPair",
            );
            format!("ec {l}\n")
        } else {
            ok(t.try_aes(32, &l, true), "C_GenerateKey");
            format!("aes {l}\n")
        };
        acks.write_all(line.as_bytes()).expect("write ack");
        acks.sync_all().expect("fsync ack");
    }
}

/// Every object's basic and vendor attributes are readable (nothing half-written).
fn check_readable(t: &Token, o: ObjectHandle) -> String {
    let l = String::from_utf8(t.attr(o, CKA_LABEL, "CKA_LABEL")).expect("label UTF-8");
    t.attr_ulong(o, CKA_CLASS, "CKA_CLASS");
    t.attr_ulong(o, CKA_KEY_TYPE, "CKA_KEY_TYPE");
    t.attr(o, CKA_ID, "CKA_ID");
    t.attr(o, CKA_SOFTMHSM_VERSION, "CKA_SOFTMHSM_VERSION");
    t.attr(o, CKA_SOFTMHSM_KID, "CKA_SOFTMHSM_KID");
    l
}

p11_test! {
    fn killed_key_generators_lose_no_acknowledged_key() {
        let dir = work_dir("crash");
        if let Some(ph) = phase() {
            let round: usize = ph.strip_prefix("gen-").and_then(|r| r.parse().ok()).expect("gen-N");
            generator(round, &dir);
            return;
        }
        let test = test_path(concat!(module_path!(), "::killed_key_generators_lose_no_acknowledged_key"));
        {
            let t = Token::fresh();
            t.aes(32, "before-the-kills");
            let Token { session, pkcs11, .. } = t;
            drop(session);
            ok(pkcs11.finalize(), "C_Finalize");
        }
        let start = Instant::now();
        for round in 0..ROUNDS {
            let ph = format!("gen-{round}");
            kill_after(spawn_phase(&test, &ph, &dir), random_ms(60, 400), &ph, &dir);
        }
        let killing = start.elapsed();

        // The token opens and the PINs work.
        let p = load_initialized();
        {
            let so = ok(p.open_rw_session(slot_by_label(&p, TOKEN_LABEL)), "C_OpenSession");
            ok(so.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO) after the kills");
        }
        let s = session_logged_in(&p, USER_PIN);
        let t = Token { session: s, slot: slot_by_label(&p, TOKEN_LABEL), raw: Raw::load(), pkcs11: p };
        let acked: Vec<(String, String)> = fs::read_to_string(dir.join("acks"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (k, l) = l.split_once(' ').expect("ack line");
                (k.to_string(), l.to_string())
            })
            .collect();
        assert!(!acked.is_empty(), "the writers acknowledged no key: the kills came too early");
        let mut labels = BTreeSet::new();
        for (kind, l) in &acked {
            let cls = if kind == "ec" { ObjectClass::PRIVATE_KEY } else { ObjectClass::SECRET_KEY };
            let found = t.find(&[class(cls), label(l)]);
            assert_eq!(found.len(), 1, "acknowledged {kind} key {l} must be found once, found {found:?}");
            labels.insert(l.clone());
        }
        // Every object there (acknowledged or committed just before a kill)
        // is whole and usable.
        let (mut aes, mut ec) = (0, 0);
        for o in t.find(&[]) {
            let l = check_readable(&t, o);
            match t.attr_ulong(o, CKA_CLASS, "CKA_CLASS") {
                CKO_SECRET_KEY => {
                    gcm_round_trip(&t.session, o, &l);
                    aes += 1;
                }
                CKO_PRIVATE_KEY => {
                    let public = t.find(&[class(ObjectClass::PUBLIC_KEY), label(&l)]);
                    assert_eq!(public.len(), 1, "{l}: its public key");
                    let digest = sha2::Sha256::digest(l.as_bytes());
                    let sig = ok(t.session.sign(&Mechanism::Ecdsa, o, &digest), &format!("{l}: C_Sign"));
                    verify_ecdsa_prehash(OID_P256, &t.ec_point(public[0]), &digest, &sig)
                        .unwrap_or_else(|e| panic!("{l}: signature after the kills: {e}"));
                    ec += 1;
                }
                _ => {}
            }
        }
        let unacked = aes + ec - labels.len() - 1;
        report(&format!(
            "CRASH {ROUNDS} SIGKILLs survived in {:.1}s: {} keys acknowledged, 0 lost; {aes} AES + {ec} EC \
             keys on the token all usable ({unacked} committed but killed before the acknowledgment)",
            killing.as_secs_f64(),
            labels.len()
        ));
    }
}

/// The PIN-change writer: flips the user PIN between A and B until killed.
fn pin_flipper() {
    let p = load_initialized();
    let s = ok(
        p.open_rw_session(slot_by_label(&p, TOKEN_LABEL)),
        "C_OpenSession",
    );
    let mut cur = if s.login(UserType::User, Some(&pin(PIN_A))).is_ok() {
        PIN_A
    } else {
        ok(
            s.login(UserType::User, Some(&pin(PIN_B))),
            "C_Login with PIN B",
        );
        PIN_B
    };
    ok(s.logout(), "C_Logout");
    loop {
        let next = if cur == PIN_A { PIN_B } else { PIN_A };
        ok(s.set_pin(&pin(cur), &pin(next)), "C_SetPIN");
        cur = next;
    }
}

/// Which of A and B logs the user in now (exactly one must).
fn working_pin(p: &Pkcs11) -> &'static str {
    let s = ok(
        p.open_rw_session(slot_by_label(p, TOKEN_LABEL)),
        "C_OpenSession",
    );
    let a = s.login(UserType::User, Some(&pin(PIN_A)));
    if a.is_ok() {
        ok(s.logout(), "C_Logout");
        return PIN_A;
    }
    assert_rv(a, CKR_PIN_INCORRECT, "C_Login with PIN A");
    ok(
        s.login(UserType::User, Some(&pin(PIN_B))),
        "neither PIN A nor PIN B logs in after a kill during C_SetPIN",
    );
    ok(s.logout(), "C_Logout");
    PIN_B
}

p11_test! {
    fn killed_pin_changes_leave_the_old_or_the_new_pin() {
        let dir = work_dir("pin-crash");
        if phase().is_some() {
            pin_flipper();
            return;
        }
        let test = test_path(concat!(module_path!(), "::killed_pin_changes_leave_the_old_or_the_new_pin"));
        let t = Token::fresh();
        ok(t.session.set_pin(&pin(USER_PIN), &pin(PIN_A)), "C_SetPIN to PIN A");
        let k = t.aes(32, "under-the-master-key");
        let Token { session, pkcs11: p, .. } = t;
        drop(session);
        let mut seen = BTreeSet::new();
        for round in 0..ROUNDS {
            let ph = format!("flip-{round}");
            kill_after(spawn_phase(&test, &ph, &dir), random_ms(40, 250), &ph, &dir);
            seen.insert(working_pin(&p));
        }
        let s = session_logged_in(&p, working_pin(&p));
        gcm_round_trip(&s, k, "key made before the PIN changes");
        ok(s.logout(), "C_Logout");
        ok(s.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO) after the kills");
        report(&format!("PIN-CRASH {ROUNDS} SIGKILLs during C_SetPIN loops survived; PINs seen working: {seen:?}"));
    }
}

/// Names the rotator gives new versions to.
const ROTATED: usize = 6;

/// The rotate/delete writer: new versions of a few names (rotation through
/// PKCS#11: `C_GenerateKey` under an existing label), and keys made then
/// destroyed (a Managed HSM soft-delete), each step acknowledged after `CKR_OK`.
fn rotator(round: usize, dir: &Path) {
    let (t, mut acks) = writer(dir);
    let mut ack = |line: String| {
        acks.write_all(line.as_bytes()).expect("write ack");
        acks.sync_all().expect("fsync ack");
    };
    for i in 0.. {
        if i % 3 == 2 {
            let l = format!("d{round}-{i}");
            let k = ok(t.try_aes(32, &l, true), "C_GenerateKey (to delete)");
            ack(format!("created {l}\n"));
            ok(t.session.destroy_object(k), "C_DestroyObject");
            ack(format!("deleted {l}\n"));
        } else {
            // Names shared by every sixth round: rotated across kills. A round
            // gives a name at most 20 versions before moving on to the next
            // generation of names, so 4 rounds stay under the 100-version cap
            // however fast the token is.
            let l = format!("r{}-{}-g{}", round % 6, i % ROTATED, i / (ROTATED * 20));
            let k = ok(t.try_aes(32, &l, true), "C_GenerateKey (new version)");
            let v = String::from_utf8(t.attr(k, CKA_SOFTMHSM_VERSION, "version")).expect("hex");
            ack(format!("version {l} {v}\n"));
        }
    }
}

p11_test! {
    fn killed_rotations_and_deletions_keep_every_acknowledged_step() {
        let dir = work_dir("crash-rotate");
        if let Some(ph) = phase() {
            let round: usize = ph.strip_prefix("rot-").and_then(|r| r.parse().ok()).expect("rot-N");
            rotator(round, &dir);
            return;
        }
        let test = test_path(concat!(module_path!(), "::killed_rotations_and_deletions_keep_every_acknowledged_step"));
        {
            let t = Token::fresh();
            let Token { session, pkcs11, .. } = t;
            drop(session);
            ok(pkcs11.finalize(), "C_Finalize");
        }
        let start = Instant::now();
        for round in 0..ROUNDS {
            let ph = format!("rot-{round}");
            kill_after(spawn_phase(&test, &ph, &dir), random_ms(60, 400), &ph, &dir);
        }
        let killing = start.elapsed();

        let p = load_initialized();
        let s = session_logged_in(&p, USER_PIN);
        let t = Token { session: s, slot: slot_by_label(&p, TOKEN_LABEL), raw: Raw::load(), pkcs11: p };
        let text = fs::read_to_string(dir.join("acks")).unwrap_or_default();
        let mut versions: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let (mut created, mut deleted) = (BTreeSet::new(), BTreeSet::new());
        for line in text.lines() {
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["version", l, v] => versions.entry(l.to_string()).or_default().push(v.to_string()),
                ["created", l] => { created.insert(l.to_string()); }
                ["deleted", l] => { deleted.insert(l.to_string()); }
                _ => panic!("bad ack line {line:?}"),
            }
        }
        assert!(!versions.is_empty(), "the writers acknowledged nothing: the kills came too early");
        let mut acked_versions = 0;
        for (l, vs) in &versions {
            // Every acknowledged version is there, once, and works.
            for v in vs {
                let found = t.find(&[label(l), vendor(CKA_SOFTMHSM_VERSION, v.as_bytes())]);
                assert_eq!(found.len(), 1, "acknowledged version {v} of {l} must be found once");
                gcm_round_trip(&t.session, found[0], &format!("{l}/{v}"));
                acked_versions += 1;
            }
            // Exactly one current version: the last acknowledged one, or one
            // committed just before a kill.
            let current = t.find(&[class(ObjectClass::SECRET_KEY), label(l)]);
            assert_eq!(current.len(), 1, "{l}: exactly one current version, found {current:?}");
            let cv = String::from_utf8(t.attr(current[0], CKA_SOFTMHSM_VERSION, "version")).unwrap();
            let last = vs.last().unwrap();
            if &cv != last {
                assert!(!vs.contains(&cv), "{l}: current version {cv} is an older acknowledged one, not {last}");
            }
        }
        for l in &created {
            let found = t.find(&[class(ObjectClass::SECRET_KEY), label(l)]);
            if deleted.contains(l) {
                assert!(found.is_empty(), "{l}: deleted with CKR_OK, still found");
            } else {
                // Killed between create and delete (or after the delete, before its ack).
                assert!(found.len() <= 1, "{l}: found {} times", found.len());
                if let Some(k) = found.first() {
                    gcm_round_trip(&t.session, *k, l);
                }
            }
        }
        report(&format!(
            "CRASH {ROUNDS} SIGKILLs during rotation/deletion survived in {:.1}s: {acked_versions} acknowledged \
             versions of {} names all found once and usable, one current version each; {} deletions \
             acknowledged, none found again",
            killing.as_secs_f64(),
            versions.len(),
            deleted.len()
        ));
    }
}
