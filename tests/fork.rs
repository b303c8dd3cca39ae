//! `fork()` (DESIGN §5): a forked child must `C_Initialize` again and then
//! works on its own; the parent keeps working, its SQLite connection untouched.
//!
//! The fork happens inside a `p11_test!` child process. libtest runs the test
//! body on a thread of its own while its main thread waits on a channel, so
//! the forked child holds exactly one thread, the forking one; no softmhsm
//! lock is held at the fork (the only other thread of ours, the audit log's
//! flusher, waits with its lock released; a child that still finds the audit
//! lock taken gives up auditing after 200 ms rather than hang), and glibc resets
//! its malloc locks in the child. The child therefore allocates freely, but
//! it must never return into libtest (whose main thread it no longer has):
//! it runs under `catch_unwind` and leaves with `_exit`, its verdict in the
//! exit status. The child calls the module only through the raw function
//! list, never through the `cryptoki` context inherited from the parent.

#[macro_use]
mod common;

use std::ffi::c_void;
use std::ptr;
use std::time::{Duration, Instant};

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki_sys::*;
use sha2::Digest;

/// Exit status of a child whose checks all passed.
const CHILD_OK: i32 = 0;
/// Exit status of a child whose checks failed (the reason is on stderr).
const CHILD_FAILED: i32 = 3;

/// One raw `C_FindObjects` pass: handles matching class + label.
fn raw_find(
    raw: &Raw,
    h: CK_SESSION_HANDLE,
    cls: CK_OBJECT_CLASS,
    lbl: &str,
) -> Vec<CK_OBJECT_HANDLE> {
    let mut cls = cls;
    let mut lbl = lbl.as_bytes().to_vec();
    let mut tpl = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: (&mut cls as *mut CK_OBJECT_CLASS).cast(),
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: lbl.as_mut_ptr().cast(),
            ulValueLen: lbl.len() as CK_ULONG,
        },
    ];
    let mut out = [0 as CK_OBJECT_HANDLE; 8];
    let mut n: CK_ULONG = 0;
    // SAFETY: template and output buffers are live locals of the stated sizes.
    unsafe {
        check(
            p11!(raw, C_FindObjectsInit, h, tpl.as_mut_ptr(), 2),
            CKR_OK,
            "C_FindObjectsInit",
        );
        check(
            p11!(raw, C_FindObjects, h, out.as_mut_ptr(), 8, &mut n),
            CKR_OK,
            "C_FindObjects",
        );
        check(
            p11!(raw, C_FindObjectsFinal, h),
            CKR_OK,
            "C_FindObjectsFinal",
        );
    }
    out[..n as usize].to_vec()
}

/// What the forked child checks; panics on the first failure.
fn in_child(raw: &Raw, slot: CK_SLOT_ID, parent_session: CK_SESSION_HANDLE, point: &[u8]) {
    let mut info = std::mem::MaybeUninit::<CK_INFO>::uninit();
    let mut h: CK_SESSION_HANDLE = 0;
    let mut mech = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    // SAFETY: out-pointers to locals; the parent's handles are just numbers here.
    unsafe {
        check(
            p11!(raw, C_GetInfo, info.as_mut_ptr()),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "child: C_GetInfo before C_Initialize",
        );
        let rv = p11!(
            raw,
            C_OpenSession,
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            ptr::null_mut(),
            None,
            &mut h
        );
        check(
            rv,
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "child: C_OpenSession before C_Initialize",
        );
        check(
            p11!(raw, C_SignInit, parent_session, &mut mech, 1),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "child: C_SignInit on the parent's session",
        );
        check(
            p11!(raw, C_Finalize, ptr::null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "child: C_Finalize before C_Initialize",
        );
    }
    let h = raw_login(raw, slot);
    let key = raw_find(raw, h, CKO_PRIVATE_KEY, "forked");
    assert_eq!(key.len(), 1, "child: the parent's key is found once");
    let mut digest = sha2::Sha256::digest(b"signed in the child").to_vec();
    let sig = raw_sign(raw, h, key[0], &mut digest);
    verify_ecdsa_prehash(OID_P256, point, &digest, &sig).expect("child's signature verifies");

    // A token key made by the child, for the parent to find.
    let mut yes: CK_BBOOL = CK_TRUE;
    let mut len32: CK_ULONG = 32;
    let mut lbl = b"from-child".to_vec();
    let mut tpl = [
        CK_ATTRIBUTE {
            type_: CKA_TOKEN,
            pValue: (&mut yes as *mut CK_BBOOL).cast(),
            ulValueLen: 1,
        },
        CK_ATTRIBUTE {
            type_: CKA_ENCRYPT,
            pValue: (&mut yes as *mut CK_BBOOL).cast(),
            ulValueLen: 1,
        },
        CK_ATTRIBUTE {
            type_: CKA_VALUE_LEN,
            pValue: (&mut len32 as *mut CK_ULONG).cast(),
            ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: lbl.as_mut_ptr().cast(),
            ulValueLen: lbl.len() as CK_ULONG,
        },
    ];
    let mut gen = CK_MECHANISM {
        mechanism: CKM_AES_KEY_GEN,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut k: CK_OBJECT_HANDLE = 0;
    // SAFETY: template buffers are live locals.
    unsafe {
        check(
            p11!(
                raw,
                C_GenerateKey,
                h,
                &mut gen,
                tpl.as_mut_ptr(),
                tpl.len() as CK_ULONG,
                &mut k
            ),
            CKR_OK,
            "child: C_GenerateKey",
        );
        check(
            p11!(raw, C_Finalize, ptr::null_mut()),
            CKR_OK,
            "child: C_Finalize",
        );
    }
}

/// Forks; runs `child` in the child (exit status = verdict); returns the
/// child's wait status in the parent, failing after `limit`.
fn fork_and_wait(child: impl FnOnce(), limit: Duration) -> i32 {
    let pid = fork_child(child);
    wait_child(pid, limit)
}

/// Forks; runs `child` in the child, whose exit status is its verdict;
/// returns the child's pid in the parent.
fn fork_child(child: impl FnOnce()) -> libc::pid_t {
    // SAFETY: see the module comment: the child is single-threaded and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
        // SAFETY: leave without running anything inherited from the parent.
        unsafe {
            libc::_exit(if verdict.is_ok() {
                CHILD_OK
            } else {
                CHILD_FAILED
            })
        };
    }
    pid
}

/// The wait status of child `pid`, failing after `limit`.
fn wait_child(pid: libc::pid_t, limit: Duration) -> i32 {
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: our own child's pid, out-pointer to a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        assert!(r == 0, "waitpid failed");
        if start.elapsed() > limit {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("forked child did not finish within {limit:?} (deadlocked on a lock inherited from the parent?)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sign_and_verify(t: &Token, private: cryptoki::object::ObjectHandle, point: &[u8], what: &str) {
    let digest = sha2::Sha256::digest(what.as_bytes());
    let sig = ok(t.session.sign(&Mechanism::Ecdsa, private, &digest), what);
    verify_ecdsa_prehash(OID_P256, point, &digest, &sig).unwrap_or_else(|e| panic!("{what}: {e}"));
}

p11_test! {
    fn forked_child_must_initialize_and_then_signs_while_the_parent_goes_on() {
        softmhsm_only!("SoftHSMv2's fork handling differs (it keeps the parent's state)");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "forked");
        let point = t.ec_point(k.public);
        sign_and_verify(&t, k.private, &point, "parent before the fork");
        let slot = t.slot.id();
        let parent_session = t.h();
        let status = fork_and_wait(|| in_child(&t.raw, slot, parent_session, &point), Duration::from_secs(60));
        assert!(libc::WIFEXITED(status), "child killed by a signal (status {status:#x})");
        assert_eq!(libc::WEXITSTATUS(status), CHILD_OK, "child's checks failed (see its stderr above)");
        // The parent: same session, same key, and its store connection still works.
        sign_and_verify(&t, k.private, &point, "parent after the fork");
        let from_child = t.find(&[class(ObjectClass::SECRET_KEY), label("from-child")]);
        assert_eq!(from_child.len(), 1, "the parent sees the key the child generated");
        t.aes(32, "parent-after-fork");
        assert_eq!(t.find(&[label("parent-after-fork")]).len(), 1, "the parent writes after the fork");
    }
}

p11_test! {
    fn a_child_that_exits_without_initializing_leaves_the_parent_intact() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "forked");
        let point = t.ec_point(k.public);
        let raw = &t.raw;
        let status = fork_and_wait(
            || {
                let mut info = std::mem::MaybeUninit::<CK_INFO>::uninit();
                // SAFETY: out-pointer to a local.
                let rv = unsafe { p11!(raw, C_GetInfo, info.as_mut_ptr()) };
                assert_ne!(rv, CKR_GENERAL_ERROR, "C_GetInfo in a forked child");
            },
            Duration::from_secs(30),
        );
        assert_eq!(libc::WEXITSTATUS(status), CHILD_OK, "child failed");
        sign_and_verify(&t, k.private, &point, "parent after its child exited");
        t.aes(32, "after-child-exit");
        assert_eq!(t.find(&[label("after-child-exit")]).len(), 1, "the parent writes after the child exited");
    }
}

/// `C_Initialize`, `C_OpenSession` (RW) and user `C_Login` through the raw list.
fn raw_login(raw: &Raw, slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let mut h: CK_SESSION_HANDLE = 0;
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: ptr::null_mut(),
    };
    let mut user_pin = USER_PIN.as_bytes().to_vec();
    // SAFETY: out-pointers and buffers are live locals of the stated sizes.
    unsafe {
        check(
            p11!(
                raw,
                C_Initialize,
                (&mut args as *mut CK_C_INITIALIZE_ARGS).cast::<c_void>()
            ),
            CKR_OK,
            "C_Initialize",
        );
        let rv = p11!(
            raw,
            C_OpenSession,
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            ptr::null_mut(),
            None,
            &mut h
        );
        check(rv, CKR_OK, "C_OpenSession");
        let rv = p11!(
            raw,
            C_Login,
            h,
            CKU_USER,
            user_pin.as_mut_ptr(),
            user_pin.len() as CK_ULONG
        );
        check(rv, CKR_OK, "C_Login");
    }
    h
}

/// A raw ECDSA signature of `digest` with `key`.
fn raw_sign(raw: &Raw, h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE, digest: &mut [u8]) -> Vec<u8> {
    let mut mech = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut sig = [0u8; 64];
    let mut len = sig.len() as CK_ULONG;
    // SAFETY: buffers are live locals of the stated sizes.
    unsafe {
        check(
            p11!(raw, C_SignInit, h, &mut mech, key),
            CKR_OK,
            "C_SignInit",
        );
        let rv = p11!(
            raw,
            C_Sign,
            h,
            digest.as_mut_ptr(),
            digest.len() as CK_ULONG,
            sig.as_mut_ptr(),
            &mut len
        );
        check(rv, CKR_OK, "C_Sign");
    }
    sig[..len as usize].to_vec()
}

p11_test! {
    fn a_forked_child_keeps_its_store_after_the_parent_closes_and_others_write() {
        // nginx with `daemon on`: every worker is a fork of a process that had
        // the store open and then went away. SQLite keeps its lock bookkeeping
        // per process and per file: a child that reused the inherited (forgotten)
        // bookkeeping took no real lock, so the last other process to close
        // deleted the WAL under it ("database disk image is malformed").
        softmhsm_only!("SQLite's locks across fork are softmhsm's concern");
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "forked");
        let point = t.ec_point(k.public);
        let slot = t.slot.id();
        let marker = store_dir().parent().unwrap().join("parent-closed");
        let raw = &t.raw;
        let pid = fork_child(|| {
            let h = raw_login(raw, slot);
            let key = raw_find(raw, h, CKO_PRIVATE_KEY, "forked");
            assert_eq!(key.len(), 1, "child: the parent's key");
            let start = Instant::now();
            while !marker.exists() {
                assert!(start.elapsed() < Duration::from_secs(30), "parent never closed its store");
                std::thread::sleep(Duration::from_millis(10));
            }
            // Other processes open, write and close the store while the child keeps it open.
            for i in 0..3 {
                let name = format!("from-cli-{i}");
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_softmhsm"))
                    .args(["key", "create", "--name", &name, "--kty", "oct"])
                    .env("SOFTMHSM_PIN", USER_PIN)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("run softmhsm");
                assert!(out.status.success(), "softmhsm key create: {}", String::from_utf8_lossy(&out.stderr));
            }
            let mut digest = sha2::Sha256::digest(b"after the others wrote").to_vec();
            let sig = raw_sign(raw, h, key[0], &mut digest);
            verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("child's signature verifies");
            assert_eq!(raw_find(raw, h, CKO_SECRET_KEY, "from-cli-2").len(), 1, "child: the CLI's key");
            // SAFETY: no pointer argument.
            unsafe { check(p11!(raw, C_Finalize, ptr::null_mut()), CKR_OK, "child: C_Finalize") };
        });
        // The parent closes its store (as nginx's first process exits).
        // SAFETY: no pointer argument.
        unsafe { check(p11!(raw, C_Finalize, ptr::null_mut()), CKR_OK, "parent: C_Finalize") };
        std::fs::write(&marker, b"closed").unwrap();
        let status = wait_child(pid, Duration::from_secs(60));
        assert!(libc::WIFEXITED(status), "child killed by a signal (status {status:#x})");
        assert_eq!(libc::WEXITSTATUS(status), CHILD_OK, "child's checks failed (see its stderr above)");
        std::mem::forget(t);
    }
}

p11_test! {
    fn a_forked_child_neither_uses_nor_closes_the_parents_postgresql_sessions() {
        // Closing an inherited connection sends Terminate on the parent's
        // socket and ends the parent's session; using it interleaves two
        // processes' messages on one session. The child must leave both alone.
        let Ok(url) = std::env::var("SOFTMHSM_STORE_URL") else {
            println!("SKIPPED: a PostgreSQL test (SOFTMHSM_TEST_STORE=postgres runs it)");
            return;
        };
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "forked");
        let point = t.ec_point(k.public);
        let me = std::process::id();
        let before = pg::sessions_of(&url, me);
        assert!(!before.is_empty(), "the parent holds sessions");
        let slot = t.slot.id();
        let raw = &t.raw;
        let status = fork_and_wait(
            || {
                let h = raw_login(raw, slot);
                let key = raw_find(raw, h, CKO_PRIVATE_KEY, "forked");
                assert_eq!(key.len(), 1, "child: the parent's key");
                let mut digest = sha2::Sha256::digest(b"child on its own sessions").to_vec();
                let sig = raw_sign(raw, h, key[0], &mut digest);
                verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("child's signature");
                // SAFETY: no pointer argument.
                unsafe { check(p11!(raw, C_Finalize, ptr::null_mut()), CKR_OK, "child: C_Finalize") };
            },
            Duration::from_secs(60),
        );
        assert_eq!(libc::WEXITSTATUS(status), CHILD_OK, "child's checks failed (see its stderr above)");
        assert_eq!(pg::sessions_of(&url, me), before, "the parent's sessions are the same ones, alive");
        sign_and_verify(&t, k.private, &point, "parent after the fork");
        t.aes(32, "parent-after-fork");
        assert_eq!(t.find(&[label("parent-after-fork")]).len(), 1, "the parent writes");
        assert_eq!(
            pg::sessions_of(&url, me),
            before,
            "and did not have to reconnect to do so"
        );
    }
}

p11_test! {
    fn a_forked_child_does_not_hold_the_parents_postgresql_session_open() {
        // nginx's first process loads its keys (connecting), forks the master
        // and exits: the master's copy of the socket, which it never uses,
        // must not keep that session open. The child closes its copy as it
        // starts (src/ffi/fork.rs); the session ends with the parent's.
        let Ok(url) = std::env::var("SOFTMHSM_STORE_URL") else {
            println!("SKIPPED: a PostgreSQL test (SOFTMHSM_TEST_STORE=postgres runs it)");
            return;
        };
        let me = std::process::id();
        let Token { session, pkcs11, raw: _raw, slot: _ } = Token::fresh();
        assert!(!pg::sessions_of(&url, me).is_empty(), "the parent holds a session");
        let marker = store_dir().parent().unwrap().join("parent-checked");
        let waiting = marker.clone();
        let child = fork_child(move || {
            // Nothing of the library: as an nginx master, idle.
            let start = Instant::now();
            while !waiting.exists() {
                assert!(start.elapsed() < Duration::from_secs(30), "the parent never checked");
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        drop(session);
        ok(pkcs11.finalize(), "parent: C_Finalize");
        let closed = Instant::now();
        let mut left = pg::sessions_of(&url, me);
        while !left.is_empty() && closed.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            left = pg::sessions_of(&url, me);
        }
        std::fs::write(&marker, b"checked").unwrap();
        let status = wait_child(child, Duration::from_secs(60));
        assert!(left.is_empty(), "the parent's sessions end while its idle child lives; still open: {left:?}");
        assert!(libc::WIFEXITED(status), "child killed by a signal (status {status:#x})");
        assert_eq!(libc::WEXITSTATUS(status), CHILD_OK, "child's checks failed (see its stderr above)");
    }
}

p11_test! {
    fn a_parent_that_never_used_the_pool_holds_no_connection_and_its_child_opens_its_own() {
        // A process that initialises the library and forks before it uses the
        // token (an nginx master whose keys are in files, a p11-kit host):
        // the connection is opened by whoever first needs the pool.
        let Ok(url) = std::env::var("SOFTMHSM_STORE_URL") else {
            println!("SKIPPED: a PostgreSQL test (SOFTMHSM_TEST_STORE=postgres runs it)");
            return;
        };
        let me = std::process::id();
        let Token { session, pkcs11, raw, slot } = Token::fresh();
        let slot = slot.id();
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize of the fixture");
        let closed = Instant::now();
        while !pg::sessions_of(&url, me).is_empty() {
            assert!(closed.elapsed() < Duration::from_secs(10), "C_Finalize closes the connection");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: NULL arguments are allowed (no locking callbacks).
        unsafe { check(p11!(raw, C_Initialize, ptr::null_mut()), CKR_OK, "parent: C_Initialize") };
        let mut count: CK_ULONG = 0;
        // SAFETY: a NULL list asks for the count; out-pointer to a local.
        unsafe { check(p11!(raw, C_GetSlotList, CK_FALSE, ptr::null_mut(), &mut count), CKR_OK, "parent: C_GetSlotList") };
        assert!(pg::sessions_of(&url, me).is_empty(), "the initialised parent holds no connection");
        let marker = store_dir().parent().unwrap().join("parent-checked");
        let raw = &raw;
        let child = fork_child(|| {
            // C_Initialize, C_OpenSession, C_Login: on a connection of its own.
            raw_login(raw, slot);
            let start = Instant::now();
            while !marker.exists() {
                assert!(start.elapsed() < Duration::from_secs(30), "the parent never checked");
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: no pointer argument.
            unsafe { check(p11!(raw, C_Finalize, ptr::null_mut()), CKR_OK, "child: C_Finalize") };
        });
        let child_pid = u32::try_from(child).unwrap();
        let start = Instant::now();
        while pg::sessions_of(&url, child_pid).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "the child never connected");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pg::sessions_of(&url, child_pid).len(), 1, "the child's one connection");
        assert!(pg::sessions_of(&url, me).is_empty(), "the parent still holds none");
        std::fs::write(&marker, b"checked").unwrap();
        let status = wait_child(child, Duration::from_secs(60));
        assert!(libc::WIFEXITED(status), "child killed by a signal (status {status:#x})");
        assert_eq!(libc::WEXITSTATUS(status), CHILD_OK, "child's checks failed (see its stderr above)");
        let mut h: CK_SESSION_HANDLE = 0;
        // SAFETY: out-pointer to a local; no callback.
        unsafe {
            check(
                p11!(raw, C_OpenSession, slot, CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut h),
                CKR_OK,
                "parent: C_OpenSession after the fork",
            )
        };
        assert_eq!(pg::sessions_of(&url, me).len(), 1, "the parent's first call that needs the pool connects");
        // SAFETY: no pointer argument.
        unsafe { check(p11!(raw, C_Finalize, ptr::null_mut()), CKR_OK, "parent: C_Finalize") };
    }
}
