//! Concurrency: many threads drive one token through the C ABI at once.
//!
//! Every result is checked: signatures by RustCrypto (`p256`, `rsa`),
//! AES-GCM ciphertexts against `aes-gcm` and by a decryption round trip,
//! finds against what the thread itself made. A watchdog fails the test when
//! the threads do not finish in time (a deadlock shows up as a timeout, not a
//! hung `cargo test`). `SOFTMHSM_STRESS_OPS` overrides the operations per
//! thread (default 1,000).

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::KeyInit;
use common::*;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::*;
use rand_core::{OsRng, RngCore};
use sha2::Digest;

const THREADS: usize = 8;
/// Threads that share one session.
const SHARED_THREADS: usize = 2;
/// Signatures each shared-session thread must get.
const SHARED_OPS: usize = 300;
/// The whole run must finish within this bound, else it counts as a deadlock.
const WATCHDOG: Duration = Duration::from_secs(120);
/// The imported AES-256 key every thread encrypts with (RustCrypto checks it).
const AES_VALUE: [u8; 32] = [0x5a; 32];
/// Label rotated by every thread at once.
const SHARED_ROTATION: &str = "rot-all";
/// Versions a test gives one name before it moves to the next (the Managed HSM
/// caps a key at 100 versions).
const VERSIONS_PER_NAME: usize = 90;

fn ops_per_thread() -> usize {
    std::env::var("SOFTMHSM_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Keys made before the threads start, shared by all of them.
struct Fixture {
    slot: Slot,
    ec: Pair,
    ec_point: Vec<u8>,
    rsa: Pair,
    rsa_public: rsa::RsaPublicKey,
    aes: ObjectHandle,
}

/// What the threads did, for the final checks.
#[derive(Default)]
struct Tally {
    ops: AtomicUsize,
    ec_signs: AtomicUsize,
    rsa_signs: AtomicUsize,
    gcm: AtomicUsize,
    finds: AtomicUsize,
    objects: AtomicUsize,
    rotations: AtomicUsize,
    shared_ok: AtomicUsize,
    shared_active: AtomicUsize,
    /// Versions acknowledged under the `SHARED_ROTATION` names.
    shared_versions: Mutex<Vec<Vec<u8>>>,
    /// Rotations of the shared names so far (names change every
    /// `VERSIONS_PER_NAME`, under the 100-version cap).
    shared_rotations: AtomicUsize,
}

fn gcm_mech<'a>(iv: &'a mut [u8; 12], aad: &'a [u8]) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, 128.into()).expect("GCM parameters"))
}

/// AES-GCM with `key` through the token; checks the ciphertext against
/// RustCrypto when `known` holds the key bytes, and always decrypts it back.
fn gcm_round_trip(s: &Session, key: ObjectHandle, known: Option<&[u8]>, what: &str) {
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let mut msg = vec![0u8; 1 + (OsRng.next_u32() % 200) as usize];
    OsRng.fill_bytes(&mut msg);
    let aad = b"stress";
    let ct = ok(
        s.encrypt(&gcm_mech(&mut iv.clone(), aad), key, &msg),
        &format!("{what}: C_Encrypt(AES-GCM)"),
    );
    if let Some(k) = known {
        let rc = aes_gcm::Aes256Gcm::new_from_slice(k).expect("AES-256 key");
        let expect = rc
            .encrypt(aes_gcm::Nonce::from_slice(&iv), Payload { msg: &msg, aad })
            .expect("RustCrypto AES-GCM");
        assert_eq!(
            ct, expect,
            "{what}: AES-GCM ciphertext differs from RustCrypto's"
        );
    }
    let pt = ok(
        s.decrypt(&gcm_mech(&mut iv.clone(), aad), key, &ct),
        &format!("{what}: C_Decrypt(AES-GCM)"),
    );
    assert_eq!(pt, msg, "{what}: AES-GCM round trip changed the message");
}

fn aes_session_import(value: &[u8], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(value.to_vec()),
        Attribute::Token(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// One worker: `n` mixed operations on its own session.
/// `token_destroys` adds generate-then-destroy of token keys to the mix.
fn worker(p: &Pkcs11, fx: &Fixture, tally: &Tally, id: usize, n: usize, token_destroys: bool) {
    let s = ok(p.open_rw_session(fx.slot), "C_OpenSession(RW) in a worker");
    let raw = Raw::load();
    let mut own_rotations = 0;
    let mut own_label = format!("rot-{id}-0");
    let mut own_current =
        Token::try_aes_on(&s, &own_label, true).expect("first version of the thread's own key");
    for i in 0..n {
        let what = format!("thread {id} op {i}");
        let mut pick = OsRng.next_u32() % 100;
        if !token_destroys && (82..=89).contains(&pick) {
            pick = 74; // a session object instead
        }
        match pick {
            0..=29 => {
                let mut msg = [0u8; 48];
                OsRng.fill_bytes(&mut msg);
                let digest = sha2::Sha256::digest(msg);
                let sig = ok(
                    s.sign(&Mechanism::Ecdsa, fx.ec.private, &digest),
                    &format!("{what}: C_Sign(ECDSA)"),
                );
                verify_ecdsa_prehash(OID_P256, &fx.ec_point, &digest, &sig)
                    .unwrap_or_else(|e| panic!("{what}: ECDSA signature rejected by p256: {e}"));
                ok(
                    s.verify(&Mechanism::Ecdsa, fx.ec.public, &digest, &sig),
                    &format!("{what}: C_Verify(ECDSA)"),
                );
                tally.ec_signs.fetch_add(1, Ordering::Relaxed);
            }
            30..=33 => {
                let msg = format!("rsa message {id}/{i}");
                let sig = ok(
                    s.sign(&Mechanism::Sha256RsaPkcs, fx.rsa.private, msg.as_bytes()),
                    &format!("{what}: C_Sign(SHA256-RSA-PKCS)"),
                );
                verify_rs256(&fx.rsa_public, msg.as_bytes(), &sig)
                    .unwrap_or_else(|e| panic!("{what}: RS256 signature rejected by rsa: {e}"));
                ok(
                    s.verify(
                        &Mechanism::Sha256RsaPkcs,
                        fx.rsa.public,
                        msg.as_bytes(),
                        &sig,
                    ),
                    &format!("{what}: C_Verify(RS256)"),
                );
                tally.rsa_signs.fetch_add(1, Ordering::Relaxed);
            }
            34..=58 => {
                gcm_round_trip(&s, fx.aes, Some(&AES_VALUE), &what);
                tally.gcm.fetch_add(1, Ordering::Relaxed);
            }
            59..=73 => {
                let found = ok(
                    s.find_objects(&[class(ObjectClass::PRIVATE_KEY), label("ec-shared")]),
                    &format!("{what}: C_FindObjects"),
                );
                assert_eq!(
                    found,
                    vec![fx.ec.private],
                    "{what}: find of the shared EC key"
                );
                let found = ok(
                    s.find_objects(&[class(ObjectClass::SECRET_KEY), label(&own_label)]),
                    &format!("{what}: C_FindObjects"),
                );
                assert_eq!(
                    found,
                    vec![own_current],
                    "{what}: find of the thread's own key must give its current version"
                );
                tally.finds.fetch_add(1, Ordering::Relaxed);
            }
            74..=81 => {
                // A session object: import, use, destroy.
                let mut value = [0u8; 32];
                OsRng.fill_bytes(&mut value);
                let l = format!("s-{id}-{i}");
                let k = ok(
                    s.create_object(&aes_session_import(&value, &l)),
                    &format!("{what}: C_CreateObject(session AES)"),
                );
                gcm_round_trip(&s, k, Some(&value), &what);
                ok(
                    s.destroy_object(k),
                    &format!("{what}: C_DestroyObject(session AES)"),
                );
                tally.objects.fetch_add(1, Ordering::Relaxed);
            }
            82..=89 => {
                // A token object: generate, use, destroy, gone.
                let l = format!("t-{id}-{i}");
                let k = ok(
                    Token::try_aes_on(&s, &l, true),
                    &format!("{what}: C_GenerateKey(token AES)"),
                );
                gcm_round_trip(&s, k, None, &what);
                ok(
                    s.destroy_object(k),
                    &format!("{what}: C_DestroyObject(token AES)"),
                );
                let found = ok(
                    s.find_objects(&[label(&l)]),
                    &format!("{what}: C_FindObjects"),
                );
                assert!(
                    found.is_empty(),
                    "{what}: a destroyed token key is still found: {found:?}"
                );
                tally.objects.fetch_add(1, Ordering::Relaxed);
            }
            r => {
                // A new version under an existing name.
                if r % 2 == 0 {
                    own_rotations += 1;
                    own_label = format!("rot-{id}-{}", own_rotations / VERSIONS_PER_NAME);
                    let k = ok(
                        Token::try_aes_on(&s, &own_label, true),
                        &format!("{what}: rotate own key"),
                    );
                    own_current = k;
                    gcm_round_trip(&s, k, None, &what);
                } else {
                    let n = tally.shared_rotations.fetch_add(1, Ordering::Relaxed);
                    let name = format!("{SHARED_ROTATION}-{}", n / VERSIONS_PER_NAME);
                    let k = ok(
                        Token::try_aes_on(&s, &name, true),
                        &format!("{what}: rotate shared key"),
                    );
                    let v = raw
                        .attr(s.handle(), k.handle(), CKA_SOFTMHSM_VERSION)
                        .unwrap_or_else(|rv| {
                            panic!("{what}: CKA_SOFTMHSM_VERSION -> {}", rv_name(rv))
                        });
                    tally.shared_versions.lock().unwrap().push(v);
                    gcm_round_trip(&s, k, None, &what);
                }
                tally.rotations.fetch_add(1, Ordering::Relaxed);
            }
        }
        tally.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// One of the threads that share a session: `C_SignInit` + `C_Sign` on the
/// same handle. `CKR_OPERATION_ACTIVE` from `C_SignInit` is the spec's answer
/// when the other thread's operation is active; any signature returned must
/// be over this thread's own data.
fn shared_signer(h: CK_SESSION_HANDLE, fx: &Fixture, tally: &Tally, id: usize, go: &Barrier) {
    let raw = Raw::load();
    go.wait();
    let mut i = 0;
    while i < SHARED_OPS {
        let msg = format!("shared {id}/{i}");
        let digest = sha2::Sha256::digest(msg.as_bytes());
        let mut mech = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: the mechanism is a local; the session handle may be stale, which is the point.
        let rv = unsafe { p11!(raw, C_SignInit, h, &mut mech, fx.ec.private.handle()) };
        if rv == CKR_OPERATION_ACTIVE {
            tally.shared_active.fetch_add(1, Ordering::Relaxed);
            std::thread::yield_now();
            continue;
        }
        check(rv, CKR_OK, &format!("shared thread {id}: C_SignInit"));
        let mut sig = [0u8; 64];
        let mut len: CK_ULONG = 0;
        let mut data = digest.to_vec();
        // A length query keeps the operation active (and widens the window in
        // which the other thread meets it).
        // SAFETY: NULL output buffer with a length out-pointer: the spec's size query.
        let rv = unsafe {
            p11!(
                raw,
                C_Sign,
                h,
                data.as_mut_ptr(),
                data.len() as CK_ULONG,
                std::ptr::null_mut(),
                &mut len
            )
        };
        check(
            rv,
            CKR_OK,
            &format!("shared thread {id}: C_Sign length query"),
        );
        assert_eq!(len, 64, "P-256 signature length");
        std::thread::yield_now();
        // SAFETY: data and sig are live locals with the lengths given.
        let rv = unsafe {
            p11!(
                raw,
                C_Sign,
                h,
                data.as_mut_ptr(),
                data.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len
            )
        };
        check(
            rv,
            CKR_OK,
            &format!("shared thread {id}: C_Sign after its own C_SignInit"),
        );
        verify_ecdsa_prehash(OID_P256, &fx.ec_point, &digest, &sig[..len as usize]).unwrap_or_else(
            |e| panic!("shared thread {id} op {i}: signature not over this thread's data: {e}"),
        );
        tally.shared_ok.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

impl Token {
    /// `C_GenerateKey(CKM_AES_KEY_GEN)` of an AES-256 key on any session.
    fn try_aes_on(s: &Session, label: &str, token: bool) -> cryptoki::error::Result<ObjectHandle> {
        s.generate_key(
            &Mechanism::AesKeyGen,
            &Token::aes_template(32, label, token),
        )
    }
}

/// The stress run: fixture keys, 8 workers, 2 threads on one shared session,
/// watchdog, final checks.
fn stress(token_destroys: bool) {
    let t = Token::fresh();
    let ec = t.keypair(Kp::Ec(OID_P256), "ec-shared");
    let rsa = t.keypair(Kp::Rsa(2048), "rsa-shared");
    let mut aes_tpl = aes_session_import(&AES_VALUE, "aes-shared");
    aes_tpl[3] = Attribute::Token(true);
    let aes = ok(
        t.session.create_object(&aes_tpl),
        "C_CreateObject(token AES)",
    );
    let fx = Fixture {
        slot: t.slot,
        ec,
        ec_point: t.ec_point(ec.public),
        rsa,
        rsa_public: t.rsa_public(rsa.public),
        aes,
    };
    let shared = ok(
        t.pkcs11.open_rw_session(t.slot),
        "C_OpenSession(RW) shared by two threads",
    );
    let shared_h = shared.handle();
    let tally = Tally::default();
    let n = ops_per_thread();
    let start = Instant::now();

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(WATCHDOG) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("DEADLOCK? the stress threads did not finish within {WATCHDOG:?}");
            std::process::exit(101);
        }
    });
    let go = Barrier::new(SHARED_THREADS);
    std::thread::scope(|sc| {
        for id in 0..THREADS {
            let (p, fx, tally) = (&t.pkcs11, &fx, &tally);
            sc.spawn(move || worker(p, fx, tally, id, n, token_destroys));
        }
        for id in 0..SHARED_THREADS {
            let (fx, tally, go) = (&fx, &tally, &go);
            sc.spawn(move || shared_signer(shared_h, fx, tally, id, go));
        }
    });
    done_tx.send(()).expect("stop the watchdog");
    watchdog.join().expect("watchdog thread");
    let elapsed = start.elapsed();

    assert_eq!(
        tally.ops.load(Ordering::Relaxed),
        THREADS * n,
        "every worker operation ran"
    );
    assert_eq!(
        tally.shared_ok.load(Ordering::Relaxed),
        SHARED_THREADS * SHARED_OPS,
        "both threads on the shared session got all their signatures"
    );

    // Versioning under contention: one current version, every acknowledged
    // version still there under its own id.
    let versions = tally.shared_versions.lock().unwrap().clone();
    let distinct: BTreeSet<_> = versions.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        versions.len(),
        "every rotation got a distinct version"
    );
    if !versions.is_empty() {
        let names = tally
            .shared_rotations
            .load(Ordering::Relaxed)
            .div_ceil(VERSIONS_PER_NAME);
        for n in 0..names {
            let name = format!("{SHARED_ROTATION}-{n}");
            let current = t.find(&[class(ObjectClass::SECRET_KEY), label(&name)]);
            assert_eq!(current.len(), 1, "exactly one current version of {name}");
        }
        for v in &versions {
            let found = t.find(&[
                class(ObjectClass::SECRET_KEY),
                vendor(CKA_SOFTMHSM_VERSION, v),
            ]);
            assert_eq!(
                found.len(),
                1,
                "version {} of {SHARED_ROTATION} must be found once",
                String::from_utf8_lossy(v)
            );
        }
    }
    for id in 0..THREADS {
        let own = t.find(&[
            class(ObjectClass::SECRET_KEY),
            label(&format!("rot-{id}-0")),
        ]);
        assert_eq!(own.len(), 1, "one current version of rot-{id}-0");
    }
    // Nothing left behind by the create/destroy operations.
    for o in t.find(&[]) {
        let l = String::from_utf8_lossy(&t.attr(o, CKA_LABEL, "CKA_LABEL")).into_owned();
        assert!(
            !l.starts_with("t-") && !l.starts_with("s-"),
            "destroyed object {l:?} still found"
        );
    }
    report(&format!(
        "STRESS (token destroys: {token_destroys}) {THREADS} threads x {n} ops + {SHARED_THREADS} x {SHARED_OPS} on one session in {:.1}s: \
         ecdsa {} rsa {} gcm {} find {} create/destroy {} rotate {} ({} shared versions); \
         shared session: {} signed, {} CKR_OPERATION_ACTIVE",
        elapsed.as_secs_f64(),
        tally.ec_signs.load(Ordering::Relaxed),
        tally.rsa_signs.load(Ordering::Relaxed),
        tally.gcm.load(Ordering::Relaxed),
        tally.finds.load(Ordering::Relaxed),
        tally.objects.load(Ordering::Relaxed),
        tally.rotations.load(Ordering::Relaxed),
        versions.len(),
        tally.shared_ok.load(Ordering::Relaxed),
        tally.shared_active.load(Ordering::Relaxed),
    ));
    drop(shared);
}

p11_test! {
    fn eight_threads_of_mixed_operations_agree_with_rustcrypto() {
        stress(false);
    }
}

p11_test! {
    fn concurrent_token_destroys_do_not_resurrect_or_hide_keys() {
        stress(true);
    }
}

p11_test! {
    fn destroyed_token_key_is_not_found_while_other_threads_destroy() {
        let t = Token::fresh();
        let (p, slot) = (&t.pkcs11, t.slot);
        std::thread::scope(|sc| {
            for id in 0..4 {
                sc.spawn(move || {
                    let s = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
                    for i in 0..300 {
                        let own = format!("own-{id}-{}", i / VERSIONS_PER_NAME);
                        let l = format!("gone-{id}-{i}");
                        let k = ok(Token::try_aes_on(&s, &l, true), "C_GenerateKey(token AES)");
                        ok(s.destroy_object(k), "C_DestroyObject(token AES)");
                        let found = ok(s.find_objects(&[label(&l)]), "C_FindObjects");
                        assert!(found.is_empty(), "thread {id} iteration {i}: key {l:?} found after C_DestroyObject returned CKR_OK: {found:?}");
                        let current = ok(Token::try_aes_on(&s, &own, true), "C_GenerateKey(new version)");
                        let found = ok(s.find_objects(&[label(&own)]), "C_FindObjects");
                        assert_eq!(found, vec![current], "thread {id} iteration {i}: find must give the version just generated");
                    }
                });
            }
        });
    }
}
