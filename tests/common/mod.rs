//! Shared harness for the C-ABI integration tests.
//!
//! A PKCS#11 module is process-global state, so every test body runs in a
//! child process of its own (see [`isolated`] and `p11_test!`), with a fresh
//! token directory. The module under test is `$SOFTMHSM_TEST_MODULE` when set
//! (e.g. SoftHSMv2, to validate the generic tests), else the `libsoftmhsm.so`
//! built next to the test binary.
#![allow(dead_code)] // each test binary uses a different subset of the harness

pub mod cli;
pub mod pg;
pub mod python;

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;

/// SO PIN every fixture token is initialised with.
pub const SO_PIN: &str = "12345678";
/// User PIN every fixture token gets from `C_InitPIN`.
pub const USER_PIN: &str = "1234";
/// Label every fixture token is initialised with.
pub const TOKEN_LABEL: &str = "test";

const CHILD_ENV: &str = "SOFTMHSM_TEST_CHILD";
const DONE_ENV: &str = "SOFTMHSM_TEST_DONE";
const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// DER of the named-curve OIDs used as `CKA_EC_PARAMS`.
pub const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
pub const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
pub const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
pub const OID_P224: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21];
pub const OID_BRAINPOOL_P256R1: &[u8] = &[
    0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07,
];

/// DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2 note 1); the digest follows.
pub const SHA256_DIGEST_INFO_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// softmhsm vendor attributes (include/softmhsm.h).
pub const CKA_SOFTMHSM_BASE: CK_ATTRIBUTE_TYPE = 0x8000_0000 | 0x534D_0000;
pub const CKA_SOFTMHSM_NAME: CK_ATTRIBUTE_TYPE = CKA_SOFTMHSM_BASE + 0x01;
pub const CKA_SOFTMHSM_VERSION: CK_ATTRIBUTE_TYPE = CKA_SOFTMHSM_BASE + 0x02;
pub const CKA_SOFTMHSM_KID: CK_ATTRIBUTE_TYPE = CKA_SOFTMHSM_BASE + 0x03;
pub const CKA_SOFTMHSM_CURRENT: CK_ATTRIBUTE_TYPE = CKA_SOFTMHSM_BASE + 0x0B;
pub const CKA_SOFTMHSM_RECOVERY_LEVEL: CK_ATTRIBUTE_TYPE = CKA_SOFTMHSM_BASE + 0x0C;

// ---------------------------------------------------------------------------
// Process isolation
// ---------------------------------------------------------------------------

/// Defines a `#[test]` whose body runs in a fresh child process with its own
/// token directory. Extra attributes (`#[ignore = "…"]`) pass through.
#[macro_export]
macro_rules! p11_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            $crate::common::isolated(
                concat!(module_path!(), "::", stringify!($name)),
                || $body,
            )
        }
    };
}

/// Returns early from a test body (with a printed reason) unless the module
/// under test is softmhsm: for rules where softmhsm deliberately differs from
/// SoftHSMv2.
#[macro_export]
macro_rules! softmhsm_only {
    ($reason:expr) => {
        if $crate::common::is_softhsm() {
            println!("SKIPPED on SoftHSMv2 (softmhsm-only): {}", $reason);
            return;
        }
    };
}

/// Set (to anything but `0` or empty) in CI: a missing external tool fails
/// the test instead of skipping it.
pub const REQUIRE_TOOLS_ENV: &str = "SOFTMHSM_REQUIRE_TOOLS";

/// The Debian package that provides each external command a test may run.
const TOOL_PACKAGES: &[(&str, &str)] = &[("openssl", "openssl")];

/// Whether the external command `name` is on `$PATH`. When it is not, prints a
/// `SKIPPED` line and returns false, so the test can return early; but under
/// `SOFTMHSM_REQUIRE_TOOLS=1` (which `.ci/run` sets) panics instead, naming the
/// tool and its package, so CI never passes a check it did not make.
pub fn tool(name: &str) -> bool {
    let on_path = env::var_os("PATH").is_some_and(|path| {
        env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if on_path {
        return true;
    }
    let package = TOOL_PACKAGES
        .iter()
        .find(|(t, _)| *t == name)
        .map_or(name, |(_, p)| p);
    let required = env::var(REQUIRE_TOOLS_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "the `{name}` command is not installed, and {REQUIRE_TOOLS_ENV} is set: install it \
         (apt-get install {package}) or unset {REQUIRE_TOOLS_ENV} to skip the checks that need it"
    );
    println!("SKIPPED: the {name} command is not installed (apt-get install {package})");
    false
}

/// True when running as the child process that executes a test body.
pub fn is_child() -> bool {
    env::var_os(CHILD_ENV).is_some()
}

/// Runs `body` in a child process (re-executing this test binary on exactly
/// this test) with a fresh token directory; in the child, runs `body`.
pub fn isolated(module_and_name: &str, body: impl FnOnce()) {
    if is_child() {
        body();
        if let Some(done) = env::var_os(DONE_ENV) {
            fs::write(done, b"ok").expect("write child completion marker");
        }
        return;
    }
    // module_path!() starts with the test crate's name, which libtest omits.
    let test_path = module_and_name
        .split_once("::")
        .map(|(_, rest)| rest)
        .unwrap_or(module_and_name);
    let tmp = tempfile::tempdir().expect("create per-test temp dir");
    let mut cmd = Command::new(env::current_exe().expect("current_exe"));
    cmd.args([test_path, "--exact", "--nocapture", "--include-ignored"])
        .args(["--test-threads", "1"]);
    token_env(&mut cmd, tmp.path());
    run_child(cmd, tmp.path(), test_path);
}

/// Re-runs the current test in another child process that shares this
/// child's token directory (for cross-process persistence), with
/// `SOFTMHSM_TEST_PHASE=<phase>`; asserts it succeeded.
pub fn respawn_phase(test_path_in_crate: &str, phase: &str) {
    assert!(is_child(), "respawn_phase only makes sense in a test child");
    let test_path = test_path_in_crate
        .split_once("::")
        .map(|(_, rest)| rest)
        .unwrap_or(test_path_in_crate);
    let tmp = tempfile::tempdir().expect("create temp dir for phase output");
    let mut cmd = Command::new(env::current_exe().expect("current_exe"));
    cmd.args([test_path, "--exact", "--nocapture", "--include-ignored"])
        .args(["--test-threads", "1"])
        .env("SOFTMHSM_TEST_PHASE", phase);
    run_child(cmd, tmp.path(), test_path);
}

/// The phase set by [`respawn_phase`], if any.
pub fn phase() -> Option<String> {
    env::var("SOFTMHSM_TEST_PHASE").ok()
}

fn run_child(mut cmd: Command, tmp: &Path, test_path: &str) {
    let out_path = tmp.join("child.stdout");
    let err_path = tmp.join("child.stderr");
    let done = tmp.join("child.done");
    cmd.env(CHILD_ENV, "1")
        .env(DONE_ENV, &done)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create child stdout file"))
        .stderr(fs::File::create(&err_path).expect("create child stderr file"));
    let mut child = cmd.spawn().expect("spawn test child process");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for test child") {
            break Some(status);
        }
        if start.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let ok = matches!(status, Some(s) if s.success()) && done.exists();
    if !ok {
        panic!(
            "test child for `{test_path}` failed ({}):\n--- child stdout ---\n{stdout}\n--- child stderr ---\n{stderr}",
            match status {
                None => "timed out".to_string(),
                Some(s) if s.success() => "exited 0 but did not run the body".to_string(),
                Some(s) => format!("{s}"),
            }
        );
    }
    // Surface skip notices and other prints of the child in the parent's output.
    for line in stdout.lines().filter(|l| l.contains("SKIPPED")) {
        println!("{line}");
    }
}

/// Sets the per-test token environment on a child command.
fn token_env(cmd: &mut Command, tmp: &Path) {
    let store = tmp.join("store");
    fs::create_dir_all(&store).expect("create token dir");
    cmd.env("SOFTMHSM_DIR", &store)
        .env("SOFTMHSM_KDF_ITERATIONS", "1000");
    // A developer's own SOFTMHSM_STORE_URL must not move the tests' tokens.
    cmd.env_remove("SOFTMHSM_STORE_URL");
    if pg::selected() && !is_softhsm() {
        match pg::fresh_pool() {
            Some(url) => {
                cmd.env("SOFTMHSM_STORE_URL", url);
            }
            None => println!("SKIPPED PostgreSQL: this test ran on SQLite"),
        }
    }
    if is_softhsm() {
        let tokens = store.join("tokens");
        fs::create_dir_all(&tokens).expect("create SoftHSMv2 token dir");
        let conf = tmp.join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        cmd.env("SOFTHSM2_CONF", conf);
    }
}

/// The token directory of this test (`$SOFTMHSM_DIR`).
pub fn store_dir() -> PathBuf {
    PathBuf::from(env::var_os("SOFTMHSM_DIR").expect("SOFTMHSM_DIR set by the harness"))
}

/// Path of the PKCS#11 module under test.
pub fn module_path() -> PathBuf {
    if let Some(p) = env::var_os("SOFTMHSM_TEST_MODULE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // The test binary is target/<profile>/deps/<test>. `cargo test` builds the
    // cdylib as deps/libsoftmhsm.so but only `cargo build` copies it up to
    // target/<profile>/; the deps copy is never older, so prefer it.
    let exe = env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test binary lives in target/<profile>/deps");
    let fresh = deps.join("libsoftmhsm.so");
    if fresh.exists() {
        return fresh;
    }
    deps.parent()
        .expect("test binary lives in target/<profile>/deps")
        .join("libsoftmhsm.so")
}

/// True when the module under test is SoftHSMv2 (validation runs).
pub fn is_softhsm() -> bool {
    module_path()
        .file_name()
        .map(|n| n.to_string_lossy().contains("softhsm2"))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Return codes
// ---------------------------------------------------------------------------

macro_rules! rv_table {
    ($($c:ident),* $(,)?) => {
        const RV_NAMES: &[(CK_RV, &str)] = &[$(($c, stringify!($c))),*];
    };
}
rv_table!(
    CKR_OK,
    CKR_CANCEL,
    CKR_HOST_MEMORY,
    CKR_SLOT_ID_INVALID,
    CKR_GENERAL_ERROR,
    CKR_FUNCTION_FAILED,
    CKR_ARGUMENTS_BAD,
    CKR_NO_EVENT,
    CKR_CANT_LOCK,
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_ACTION_PROHIBITED,
    CKR_DATA_INVALID,
    CKR_DATA_LEN_RANGE,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_MEMORY,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_CURVE_NOT_SUPPORTED,
    CKR_KEY_HANDLE_INVALID,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_UNEXTRACTABLE,
    CKR_MECHANISM_INVALID,
    CKR_MECHANISM_PARAM_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_OPERATION_ACTIVE,
    CKR_OPERATION_NOT_INITIALIZED,
    CKR_PIN_INCORRECT,
    CKR_PIN_INVALID,
    CKR_PIN_LEN_RANGE,
    CKR_PIN_EXPIRED,
    CKR_PIN_LOCKED,
    CKR_SESSION_CLOSED,
    CKR_SESSION_COUNT,
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    CKR_SESSION_READ_ONLY,
    CKR_SESSION_EXISTS,
    CKR_SESSION_READ_ONLY_EXISTS,
    CKR_SESSION_READ_WRITE_SO_EXISTS,
    CKR_SIGNATURE_INVALID,
    CKR_SIGNATURE_LEN_RANGE,
    CKR_TEMPLATE_INCOMPLETE,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_TOKEN_NOT_PRESENT,
    CKR_TOKEN_NOT_RECOGNIZED,
    CKR_TOKEN_WRITE_PROTECTED,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    CKR_USER_PIN_NOT_INITIALIZED,
    CKR_USER_TYPE_INVALID,
    CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    CKR_USER_TOO_MANY_TYPES,
    CKR_DOMAIN_PARAMS_INVALID,
    CKR_RANDOM_SEED_NOT_SUPPORTED,
    CKR_RANDOM_NO_RNG,
    CKR_BUFFER_TOO_SMALL,
    CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
    CKR_FUNCTION_REJECTED,
);

/// Spec name of a return code, for failure messages.
pub fn rv_name(rv: CK_RV) -> String {
    RV_NAMES
        .iter()
        .find(|(c, _)| *c == rv)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("CKR_{rv:#x}"))
}

/// The `CK_RV` of a `cryptoki` result (`CKR_OK` on success).
pub fn rv_of<T>(r: &cryptoki::error::Result<T>) -> CK_RV {
    match r {
        Ok(_) => CKR_OK,
        Err(Error::Pkcs11(e, _)) => RV_NAMES
            .iter()
            .map(|(c, _)| *c)
            .find(|c| Rv::from(*c) == Rv::Error(*e))
            .unwrap_or_else(|| panic!("rv {e:?} missing from the harness table")),
        Err(other) => panic!("not a PKCS#11 return code: {other}"),
    }
}

/// Asserts that a `cryptoki` call returned `expected`.
#[track_caller]
pub fn assert_rv<T>(r: cryptoki::error::Result<T>, expected: CK_RV, what: &str) {
    let got = rv_of(&r);
    assert_eq!(
        rv_name(got),
        rv_name(expected),
        "{what}: expected {}, got {}",
        rv_name(expected),
        rv_name(got)
    );
}

/// Asserts that a raw call returned `expected`.
#[track_caller]
pub fn check(got: CK_RV, expected: CK_RV, what: &str) {
    assert_eq!(
        rv_name(got),
        rv_name(expected),
        "{what}: expected {}, got {}",
        rv_name(expected),
        rv_name(got)
    );
}

/// Unwraps a `cryptoki` result with a message naming the call and the rv.
#[track_caller]
pub fn ok<T>(r: cryptoki::error::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(Error::Pkcs11(..)) => panic!("{what}: expected CKR_OK, got {}", rv_name(rv_of(&r))),
        Err(e) => panic!("{what}: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Raw function list
// ---------------------------------------------------------------------------

/// Calls a function of a [`Raw`] function list: `p11!(raw, C_Foo, args…)`.
/// Must be used inside `unsafe`.
#[macro_export]
macro_rules! p11 {
    ($raw:expr, $f:ident $(, $a:expr)* $(,)?) => {
        ($raw.f().$f.expect(concat!(stringify!($f), " missing from the function list")))($($a),*)
    };
}

/// The module's 2.40 function list, for calls the `cryptoki` crate cannot
/// make (NULL pointers, exact lengths, multi-attribute templates). Loading
/// the same path again shares the module (and its state) with `cryptoki`.
pub struct Raw {
    lib: cryptoki_sys::Pkcs11,
    fl: *const CK_FUNCTION_LIST,
}

impl Raw {
    /// dlopen the module and fetch `C_GetFunctionList`.
    pub fn load() -> Raw {
        let path = module_path();
        // SAFETY: loading a PKCS#11 module is what this test suite is for.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(&path) }
            .unwrap_or_else(|e| panic!("load PKCS#11 module {}: {e}", path.display()));
        let mut fl: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let rv = unsafe { lib.C_GetFunctionList(&mut fl) };
        check(rv, CKR_OK, "C_GetFunctionList");
        assert!(!fl.is_null(), "C_GetFunctionList returned a NULL list");
        Raw { lib, fl }
    }

    /// The function list.
    pub fn f(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: the list is static in the module, which `lib` keeps loaded.
        unsafe { &*self.fl }
    }

    /// The module's PKCS#11 3.2 function list (`C_GetInterface("PKCS 11",
    /// 3.2)`): `cryptoki` 0.12 takes the default table, softmhsm's 3.0 one,
    /// so the 3.2 functions are called through this one.
    pub fn f32(&self) -> &CK_FUNCTION_LIST_3_2 {
        let mut iface: *mut CK_INTERFACE = ptr::null_mut();
        let mut version = CK_VERSION { major: 3, minor: 2 };
        let name = b"PKCS 11\0";
        // SAFETY: the name is NUL-terminated, the version and out-pointer are valid.
        let rv = unsafe {
            self.lib
                .C_GetInterface(name.as_ptr() as *mut _, &mut version, &mut iface, 0)
        };
        check(rv, CKR_OK, "C_GetInterface(PKCS 11, 3.2)");
        // SAFETY: C_GetInterface succeeded: `iface` points to a static
        // CK_INTERFACE whose pFunctionList is the module's static 3.2 table,
        // kept loaded by `lib`.
        unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_2) }
    }

    /// The loaded library's exported symbols (C_GetInterface etc.).
    pub fn lib(&self) -> &cryptoki_sys::Pkcs11 {
        &self.lib
    }

    /// `C_GetAttributeValue` for one attribute: length query, then value.
    pub fn attr(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        t: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, CK_RV> {
        let mut a = CK_ATTRIBUTE {
            type_: t,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        };
        let rv = unsafe { p11!(self, C_GetAttributeValue, s, o, &mut a, 1) };
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut buf = vec![0u8; a.ulValueLen as usize];
        a.pValue = buf.as_mut_ptr().cast();
        let rv = unsafe { p11!(self, C_GetAttributeValue, s, o, &mut a, 1) };
        if rv != CKR_OK {
            return Err(rv);
        }
        buf.truncate(a.ulValueLen as usize);
        Ok(buf)
    }
}

/// Loads the module with `cryptoki` (which calls `C_GetInterface` first).
pub fn load() -> Pkcs11 {
    let path = module_path();
    Pkcs11::new(&path).unwrap_or_else(|e| panic!("load PKCS#11 module {}: {e}", path.display()))
}

/// Loads and `C_Initialize`s the module (OS locking).
pub fn load_initialized() -> Pkcs11 {
    let p = load();
    ok(
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)),
        "C_Initialize",
    );
    p
}

/// A PIN as `cryptoki` wants it.
pub fn pin(s: &str) -> AuthPin {
    AuthPin::from(s)
}

/// The first slot whose token is present and not initialised.
pub fn uninitialized_slot(p: &Pkcs11) -> Slot {
    let slots = ok(p.get_slots_with_token(), "C_GetSlotList(tokenPresent)");
    slots
        .into_iter()
        .find(|s| {
            p.get_token_info(*s)
                .map(|i| !i.token_initialized())
                .unwrap_or(false)
        })
        .expect("a slot with a present, uninitialised token")
}

/// The slot holding the token labelled `label` (SoftHSMv2 renumbers slots on init).
pub fn slot_by_label(p: &Pkcs11, label: &str) -> Slot {
    let slots = ok(p.get_slots_with_token(), "C_GetSlotList(tokenPresent)");
    slots
        .into_iter()
        .find(|s| {
            p.get_token_info(*s)
                .map(|i| i.token_initialized() && i.label().trim_end() == label)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no initialised token labelled {label:?}"))
}

/// `C_InitToken` on the first uninitialised slot; returns the token's slot
/// as re-read after init.
pub fn init_token(p: &Pkcs11) -> Slot {
    let slot = uninitialized_slot(p);
    ok(p.init_token(slot, &pin(SO_PIN), TOKEN_LABEL), "C_InitToken");
    slot_by_label(p, TOKEN_LABEL)
}

/// Initialised token without a user PIN (SO PIN only); no session open.
pub fn token_without_user_pin() -> (Pkcs11, Slot) {
    let p = load_initialized();
    let slot = init_token(&p);
    (p, slot)
}

// ---------------------------------------------------------------------------
// The fixture token
// ---------------------------------------------------------------------------

/// A fresh token with user PIN set and an RW session logged in as the user.
pub struct Token {
    pub session: Session,
    pub slot: Slot,
    pub pkcs11: Pkcs11,
    pub raw: Raw,
}

/// What kind of key pair to generate.
#[derive(Clone, Copy, Debug)]
pub enum Kp {
    Rsa(u64),
    Ec(&'static [u8]),
}

/// A generated key pair.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    pub public: ObjectHandle,
    pub private: ObjectHandle,
}

impl Token {
    /// Loads, initialises the token, sets the user PIN, logs the user in.
    pub fn fresh() -> Token {
        let (pkcs11, slot) = token_without_user_pin();
        {
            let so = ok(pkcs11.open_rw_session(slot), "C_OpenSession(RW)");
            ok(so.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO)");
            ok(so.init_pin(&pin(USER_PIN)), "C_InitPIN");
            ok(so.logout(), "C_Logout(SO)");
        }
        Token::open(pkcs11, slot)
    }

    /// Loads and initialises the module and logs in to the already
    /// initialised token (persistence tests).
    pub fn reopen_existing() -> Token {
        let pkcs11 = load_initialized();
        let slot = slot_by_label(&pkcs11, TOKEN_LABEL);
        Token::open(pkcs11, slot)
    }

    fn open(pkcs11: Pkcs11, slot: Slot) -> Token {
        let session = ok(pkcs11.open_rw_session(slot), "C_OpenSession(RW)");
        ok(
            session.login(UserType::User, Some(&pin(USER_PIN))),
            "C_Login(USER)",
        );
        Token {
            session,
            slot,
            pkcs11,
            raw: Raw::load(),
        }
    }

    /// Raw session handle.
    pub fn h(&self) -> CK_SESSION_HANDLE {
        self.session.handle()
    }

    /// Public-key template: verify, public, given label, e = 65537 for RSA.
    pub fn pub_template(kind: Kp, label: &str, token: bool) -> Vec<Attribute> {
        let mut t = vec![
            Attribute::Token(token),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        match kind {
            Kp::Rsa(bits) => {
                t.push(Attribute::ModulusBits(bits.into()));
                t.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            }
            Kp::Ec(oid) => t.push(Attribute::EcParams(oid.to_vec())),
        }
        t
    }

    /// Private-key template: sign, private, sensitive, not extractable.
    pub fn priv_template(label: &str, token: bool) -> Vec<Attribute> {
        vec![
            Attribute::Token(token),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ]
    }

    /// The key-pair generation mechanism for `kind`.
    pub fn kp_mechanism(kind: Kp) -> Mechanism<'static> {
        match kind {
            Kp::Rsa(_) => Mechanism::RsaPkcsKeyPairGen,
            Kp::Ec(_) => Mechanism::EccKeyPairGen,
        }
    }

    /// `C_GenerateKeyPair` with the default templates.
    pub fn try_keypair(&self, kind: Kp, label: &str, token: bool) -> cryptoki::error::Result<Pair> {
        self.try_keypair_tpl(
            kind,
            &Self::pub_template(kind, label, token),
            &Self::priv_template(label, token),
        )
    }

    /// `C_GenerateKeyPair` with explicit templates.
    pub fn try_keypair_tpl(
        &self,
        kind: Kp,
        public: &[Attribute],
        private: &[Attribute],
    ) -> cryptoki::error::Result<Pair> {
        self.session
            .generate_key_pair(&Self::kp_mechanism(kind), public, private)
            .map(|(public, private)| Pair { public, private })
    }

    /// Token key pair, asserting success.
    #[track_caller]
    pub fn keypair(&self, kind: Kp, label: &str) -> Pair {
        ok(
            self.try_keypair(kind, label, true),
            &format!("C_GenerateKeyPair({kind:?}, label {label:?})"),
        )
    }

    /// AES key template (secret, sensitive, not extractable).
    pub fn aes_template(len: u64, label: &str, token: bool) -> Vec<Attribute> {
        vec![
            Attribute::Token(token),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen(len.into()),
            Attribute::Label(label.as_bytes().to_vec()),
        ]
    }

    /// `C_GenerateKey(CKM_AES_KEY_GEN)`.
    pub fn try_aes(
        &self,
        len: u64,
        label: &str,
        token: bool,
    ) -> cryptoki::error::Result<ObjectHandle> {
        self.session.generate_key(
            &Mechanism::AesKeyGen,
            &Self::aes_template(len, label, token),
        )
    }

    /// Token AES key, asserting success.
    #[track_caller]
    pub fn aes(&self, len: u64, label: &str) -> ObjectHandle {
        ok(
            self.try_aes(len, label, true),
            &format!("C_GenerateKey(CKM_AES_KEY_GEN, {len} bytes)"),
        )
    }

    /// One attribute's value via raw `C_GetAttributeValue`.
    pub fn try_attr(&self, o: ObjectHandle, t: CK_ATTRIBUTE_TYPE) -> Result<Vec<u8>, CK_RV> {
        self.raw.attr(self.h(), o.handle(), t)
    }

    /// One attribute's value; panics naming the attribute and rv.
    #[track_caller]
    pub fn attr(&self, o: ObjectHandle, t: CK_ATTRIBUTE_TYPE, name: &str) -> Vec<u8> {
        self.try_attr(o, t)
            .unwrap_or_else(|rv| panic!("C_GetAttributeValue({name}) -> {}", rv_name(rv)))
    }

    /// A CK_BBOOL attribute.
    #[track_caller]
    pub fn attr_bool(&self, o: ObjectHandle, t: CK_ATTRIBUTE_TYPE, name: &str) -> bool {
        let v = self.attr(o, t, name);
        assert_eq!(v.len(), 1, "{name} must be a one-byte CK_BBOOL, got {v:?}");
        v[0] != 0
    }

    /// A CK_ULONG attribute.
    #[track_caller]
    pub fn attr_ulong(&self, o: ObjectHandle, t: CK_ATTRIBUTE_TYPE, name: &str) -> CK_ULONG {
        let v = self.attr(o, t, name);
        let arr: [u8; std::mem::size_of::<CK_ULONG>()] = v
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| panic!("{name} must be a CK_ULONG, got {} bytes", v.len()));
        CK_ULONG::from_ne_bytes(arr)
    }

    /// `C_FindObjects` with a template, all results.
    #[track_caller]
    pub fn find(&self, template: &[Attribute]) -> Vec<ObjectHandle> {
        ok(self.session.find_objects(template), "C_FindObjects")
    }

    /// Private keys labelled `label`.
    pub fn find_private_by_label(&self, label: &str) -> Vec<ObjectHandle> {
        self.find(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
    }

    /// The RSA public key of an object, from `CKA_MODULUS`/`CKA_PUBLIC_EXPONENT`.
    pub fn rsa_public(&self, o: ObjectHandle) -> rsa::RsaPublicKey {
        let n = self.attr(o, CKA_MODULUS, "CKA_MODULUS");
        let e = self.attr(o, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT");
        rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from_bytes_be(&e),
        )
        .expect("CKA_MODULUS/CKA_PUBLIC_EXPONENT form a valid RSA public key")
    }

    /// The uncompressed SEC1 point of an EC public key (from the DER OCTET
    /// STRING in `CKA_EC_POINT`).
    pub fn ec_point(&self, o: ObjectHandle) -> Vec<u8> {
        let der = self.attr(o, CKA_EC_POINT, "CKA_EC_POINT");
        der_octet_string(&der)
            .unwrap_or_else(|| panic!("CKA_EC_POINT is not a DER OCTET STRING: {der:02x?}"))
            .to_vec()
    }
}

/// Contents of a DER OCTET STRING spanning all of `der`.
pub fn der_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, body) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    (body.len() == len).then_some(body)
}

/// Verifies an ECDSA raw r‖s signature over a prehashed `digest` with an
/// independent implementation (RustCrypto), for the curve named by `oid`.
pub fn verify_ecdsa_prehash(
    oid: &[u8],
    point: &[u8],
    digest: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    if oid == OID_P256 {
        let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|x| e(&x))?;
        let s = p256::ecdsa::Signature::from_slice(sig).map_err(|x| e(&x))?;
        k.verify_prehash(digest, &s).map_err(|x| e(&x))
    } else if oid == OID_SECP256K1 {
        let k = k256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|x| e(&x))?;
        let s = k256::ecdsa::Signature::from_slice(sig).map_err(|x| e(&x))?;
        // k256 only accepts low-S; a high-S signature is equally valid ECDSA.
        let s = s.normalize_s().unwrap_or(s);
        k.verify_prehash(digest, &s).map_err(|x| e(&x))
    } else if oid == OID_P384 {
        let k = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|x| e(&x))?;
        let s = p384::ecdsa::Signature::from_slice(sig).map_err(|x| e(&x))?;
        k.verify_prehash(digest, &s).map_err(|x| e(&x))
    } else if oid == OID_P521 {
        let k = p521::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|x| e(&x))?;
        let s = p521::ecdsa::Signature::from_slice(sig).map_err(|x| e(&x))?;
        k.verify_prehash(digest, &s).map_err(|x| e(&x))
    } else {
        Err(format!("no verifier for curve OID {oid:02x?}"))
    }
}

/// Verifies an RSASSA-PKCS1-v1_5 SHA-256 signature with the `rsa` crate.
pub fn verify_rs256(key: &rsa::RsaPublicKey, msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(msg);
    key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, sig)
        .map_err(|e| e.to_string())
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs a command, asserting it succeeded; returns stdout.
pub fn run_cmd(program: &str, args: &[OsString]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Object class / key type attributes for find templates.
pub fn class(c: ObjectClass) -> Attribute {
    Attribute::Class(c)
}

/// Key type attribute for find templates.
pub fn key_type(k: KeyType) -> Attribute {
    Attribute::KeyType(k)
}

/// Label attribute.
pub fn label(s: &str) -> Attribute {
    Attribute::Label(s.as_bytes().to_vec())
}

/// A vendor-defined attribute with a byte value (for find templates).
pub fn vendor(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Attribute {
    Attribute::VendorDefined((AttributeType::VendorDefined(t), v.to_vec()))
}

impl Token {
    /// Raw `C_GetAttributeValue` with a caller-built template.
    pub fn get_raw(&self, o: ObjectHandle, template: &mut [CK_ATTRIBUTE]) -> CK_RV {
        // SAFETY: every pValue in `template` points to a live buffer of ulValueLen bytes (or is NULL).
        unsafe {
            p11!(
                self.raw,
                C_GetAttributeValue,
                self.h(),
                o.handle(),
                template.as_mut_ptr(),
                template.len() as CK_ULONG
            )
        }
    }

    /// Number of objects an empty find template returns.
    pub fn count_all(&self) -> usize {
        self.find(&[]).len()
    }
}

/// A template entry pointing at `buf` (or NULL with length 0 when `buf` is empty).
pub fn raw_attr(t: CK_ATTRIBUTE_TYPE, buf: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: if buf.is_empty() {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        },
        ulValueLen: buf.len() as CK_ULONG,
    }
}

/// A curve softmhsm supports.
#[derive(Clone, Copy, Debug)]
pub struct Curve {
    pub name: &'static str,
    pub oid: &'static [u8],
    /// Bytes of the digest this curve signs (DESIGN §3: ES256/ES256K/ES384/ES512).
    pub digest_len: usize,
    /// Bytes of a field element (r, s and each coordinate).
    pub field_len: usize,
}

/// P-256, secp256k1, P-384, P-521.
pub const CURVES: &[Curve] = &[
    Curve {
        name: "P-256",
        oid: OID_P256,
        digest_len: 32,
        field_len: 32,
    },
    Curve {
        name: "secp256k1",
        oid: OID_SECP256K1,
        digest_len: 32,
        field_len: 32,
    },
    Curve {
        name: "P-384",
        oid: OID_P384,
        digest_len: 48,
        field_len: 48,
    },
    Curve {
        name: "P-521",
        oid: OID_P521,
        digest_len: 64,
        field_len: 66,
    },
];

/// The SHA-2 digest of `msg` matching a curve's digest length.
pub fn sha2_for(digest_len: usize, msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    match digest_len {
        32 => sha2::Sha256::digest(msg).to_vec(),
        48 => sha2::Sha384::digest(msg).to_vec(),
        64 => sha2::Sha512::digest(msg).to_vec(),
        n => panic!("no SHA-2 digest of {n} bytes"),
    }
}

/// Prints a figure line and, when `SOFTMHSM_RELIABILITY_OUT` names a file,
/// appends it there (the harness shows a test child's stdout only on failure).
pub fn report(line: &str) {
    println!("{line}");
    if let Some(path) = std::env::var_os("SOFTMHSM_RELIABILITY_OUT") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open SOFTMHSM_RELIABILITY_OUT");
        writeln!(f, "{line}").expect("append figure line");
    }
}
