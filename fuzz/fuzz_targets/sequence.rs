//! Random `C_*` call sequences on one token, through the library's C ABI
//! function list (`C_GetFunctionList`), as an application would make them.
//!
//! The token lives in a directory of its own (`SOFTMHSM_DIR`, under
//! `/dev/shm` when there is one) with `SOFTMHSM_KDF_ITERATIONS=1000`; it is
//! initialised once per process and re-initialised (empty, same PINs) before
//! every input, so an input replays the same way on its own. Each input is up
//! to [`MAX_CALLS`] calls among OpenSession, Login, Logout, GenerateKey (AES),
//! GenerateKeyPair (EC P-256), FindObjects, SignInit/Sign, EncryptInit/Encrypt,
//! DestroyObject, GetAttributeValue, SetAttributeValue and CloseSession, with
//! handles, lengths and NULLs chosen by the fuzzer (handles mostly ones the
//! library gave out). Output buffers are allocated at exactly the length
//! declared, so a write past it is an AddressSanitizer report.
//!
//! A panic anywhere aborts (libFuzzer's panic hook runs before the ABI's
//! `catch_unwind`), and every return must be a defined `CKR_*`, never
//! `CKR_GENERAL_ERROR` (the code a caught panic becomes) nor
//! `CKR_DEVICE_ERROR` (a damaged store).
#![no_main]

use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;
use softmhsm_fuzz::Input;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

// The library under test is linked in; its exported entry point is called as
// an application would, by symbol.
extern crate softmhsm;
extern "C" {
    fn C_GetFunctionList(list: *mut CK_FUNCTION_LIST_PTR) -> CK_RV;
}

/// Most calls in one input.
const MAX_CALLS: usize = 48;
const SO_PIN: &[u8] = b"12345678";
const USER_PIN: &[u8] = b"1234";
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The function list and the token's slot, set up once per process.
struct Module {
    f: &'static CK_FUNCTION_LIST,
    slot: CK_SLOT_ID,
}

fn module() -> &'static Module {
    static M: OnceLock<Module> = OnceLock::new();
    M.get_or_init(|| unsafe {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("softmhsm-fuzz-sequence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::env::set_var("SOFTMHSM_DIR", &dir);
        std::env::set_var("SOFTMHSM_KDF_ITERATIONS", "1000");
        std::env::remove_var("SOFTMHSM_CONF");
        std::env::remove_var("SOFTMHSM_LOG");
        DIR.set(dir).expect("set once");
        libc_atexit(remove_dir);
        let mut list: CK_FUNCTION_LIST_PTR = null_mut();
        assert_eq!(C_GetFunctionList(&mut list), CKR_OK);
        let f: &'static CK_FUNCTION_LIST = &*list;
        assert_eq!(f.C_Initialize.unwrap()(null_mut()), CKR_OK);
        let mut slots = [0 as CK_SLOT_ID; 4];
        let mut n: CK_ULONG = slots.len() as CK_ULONG;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_FALSE, slots.as_mut_ptr(), &mut n),
            CKR_OK
        );
        assert!(n >= 1, "one token");
        Module { f, slot: slots[0] }
    })
}

static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(d) = DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

extern "C" {
    /// The C runtime's `atexit`: libFuzzer leaves through `exit`, which runs no Rust destructors.
    fn atexit(f: extern "C" fn()) -> i32;
}

fn libc_atexit(f: extern "C" fn()) {
    // SAFETY: registering a plain function with the C runtime.
    unsafe { atexit(f) };
}

/// Every `CKR_*` PKCS#11 3.1 defines; a library must return nothing else.
const DEFINED: &[CK_RV] = &[
    CKR_OK,
    CKR_CANCEL,
    CKR_HOST_MEMORY,
    CKR_SLOT_ID_INVALID,
    CKR_FUNCTION_FAILED,
    CKR_ARGUMENTS_BAD,
    CKR_NO_EVENT,
    CKR_NEED_TO_CREATE_THREADS,
    CKR_CANT_LOCK,
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_ACTION_PROHIBITED,
    CKR_DATA_INVALID,
    CKR_DATA_LEN_RANGE,
    CKR_DEVICE_MEMORY,
    CKR_DEVICE_REMOVED,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_AEAD_DECRYPT_FAILED,
    CKR_FUNCTION_CANCELED,
    CKR_FUNCTION_NOT_PARALLEL,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_KEY_HANDLE_INVALID,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_KEY_NOT_NEEDED,
    CKR_KEY_CHANGED,
    CKR_KEY_NEEDED,
    CKR_KEY_INDIGESTIBLE,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_NOT_WRAPPABLE,
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
    CKR_RANDOM_SEED_NOT_SUPPORTED,
    CKR_RANDOM_NO_RNG,
    CKR_DOMAIN_PARAMS_INVALID,
    CKR_CURVE_NOT_SUPPORTED,
    CKR_BUFFER_TOO_SMALL,
    CKR_INFORMATION_SENSITIVE,
    CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
    CKR_PIN_TOO_WEAK,
    CKR_PUBLIC_KEY_INVALID,
    CKR_FUNCTION_REJECTED,
    CKR_TOKEN_RESOURCE_EXCEEDED,
    CKR_OPERATION_NOT_VALIDATED,
];

/// Check a return code; the name of the call goes into the failure message.
fn ok(call: &str, rv: CK_RV) -> CK_RV {
    assert!(
        DEFINED.contains(&rv),
        "{call} returned {rv:#x}: not a defined CKR (GENERAL_ERROR and DEVICE_ERROR count as undefined here)"
    );
    rv
}

/// Handles the library gave out during this input, and the value it wrote.
#[derive(Default)]
struct Seen {
    sessions: Vec<CK_SESSION_HANDLE>,
    objects: Vec<CK_OBJECT_HANDLE>,
}

impl Seen {
    fn session(&self, inp: &mut Input<'_>) -> CK_SESSION_HANDLE {
        pick_handle(inp, &self.sessions)
    }
    fn object(&self, inp: &mut Input<'_>) -> CK_OBJECT_HANDLE {
        pick_handle(inp, &self.objects)
    }
}

/// Mostly a handle from `known`; sometimes 0, a near miss or any value.
fn pick_handle(inp: &mut Input<'_>, known: &[CK_ULONG]) -> CK_ULONG {
    let sel = inp.u8();
    match sel {
        0xfd => 0,
        0xfe => known.last().map_or(1, |h| h.wrapping_add(1)),
        0xff => inp.u64() as CK_ULONG,
        _ if known.is_empty() => sel as CK_ULONG,
        _ => known[sel as usize % known.len()],
    }
}

/// A data buffer from the input: a slice of it, or NULL with a length.
fn data<'a>(inp: &mut Input<'a>) -> (*const u8, CK_ULONG, Option<&'a [u8]>) {
    let sel = inp.u8();
    if sel == 0xff {
        (null(), inp.u8() as CK_ULONG, None)
    } else {
        let b = inp.take(sel as usize);
        (b.as_ptr(), b.len() as CK_ULONG, Some(b))
    }
}

/// An output buffer of exactly the length declared, or NULL (a length query).
struct Out {
    buf: Option<Vec<u8>>,
    len: CK_ULONG,
    null_len: bool,
}

impl Out {
    fn new(inp: &mut Input<'_>) -> Out {
        let sel = inp.u8();
        let (buf, len) = match sel % 4 {
            0 => (None, inp.u16() as CK_ULONG),
            1 => {
                let n = inp.u8() as usize;
                (Some(vec![0u8; n]), n as CK_ULONG)
            }
            _ => (Some(vec![0u8; 512]), 512),
        };
        Out {
            buf,
            len,
            null_len: sel == 0xff,
        }
    }
    fn ptr(&mut self) -> *mut u8 {
        self.buf.as_mut().map_or(null_mut(), |b| b.as_mut_ptr())
    }
    fn len_ptr(&mut self) -> *mut CK_ULONG {
        if self.null_len {
            null_mut()
        } else {
            &mut self.len
        }
    }
    /// After a successful call with a buffer: the length written fits it.
    fn check(&self, call: &str, rv: CK_RV) {
        if rv == CKR_OK {
            if let Some(b) = &self.buf {
                assert!(
                    self.len as usize <= b.len(),
                    "{call} reported more than it had room for"
                );
            }
        }
    }
}

/// Attribute values the sequence uses in its templates.
struct Values {
    t: CK_BBOOL,
    f: CK_BBOOL,
    lens: [CK_ULONG; 4],
    labels: [&'static [u8]; 4],
    classes: [CK_ULONG; 3],
}

static V: Values = Values {
    t: CK_TRUE,
    f: CK_FALSE,
    lens: [16, 24, 32, 7],
    labels: [b"alpha", b"beta", b"", b"not a name"],
    classes: [CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY],
};

fn attr<T>(ty: CK_ATTRIBUTE_TYPE, v: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: ty,
        pValue: v as *const T as *mut _,
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

fn bytes_attr(ty: CK_ATTRIBUTE_TYPE, v: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: ty,
        pValue: v.as_ptr() as *mut _,
        ulValueLen: v.len() as CK_ULONG,
    }
}

fn boolean(inp: &mut Input<'_>) -> &'static CK_BBOOL {
    if inp.u8() & 1 == 0 {
        &V.t
    } else {
        &V.f
    }
}

fuzz_target!(|bytes: &[u8]| {
    let m = module();
    let f = m.f;
    reset(m);
    let mut inp = Input::new(bytes);
    let mut seen = Seen::default();
    let mut calls = 0;
    while !inp.is_empty() && calls < MAX_CALLS {
        calls += 1;
        unsafe { step(m, f, &mut inp, &mut seen) };
    }
    unsafe { ok("C_CloseAllSessions", f.C_CloseAllSessions.unwrap()(m.slot)) };
});

/// An empty token with the fixture PINs and no session.
fn reset(m: &Module) {
    let f = m.f;
    unsafe {
        assert_eq!(f.C_CloseAllSessions.unwrap()(m.slot), CKR_OK);
        let mut label = [b' '; 32];
        label[..4].copy_from_slice(b"fuzz");
        assert_eq!(
            f.C_InitToken.unwrap()(
                m.slot,
                SO_PIN.as_ptr() as *mut _,
                SO_PIN.len() as CK_ULONG,
                label.as_mut_ptr()
            ),
            CKR_OK
        );
        let mut s: CK_SESSION_HANDLE = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(
                m.slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut s
            ),
            CKR_OK
        );
        assert_eq!(
            f.C_Login.unwrap()(
                s,
                CKU_SO,
                SO_PIN.as_ptr() as *mut _,
                SO_PIN.len() as CK_ULONG
            ),
            CKR_OK
        );
        assert_eq!(
            f.C_InitPIN.unwrap()(s, USER_PIN.as_ptr() as *mut _, USER_PIN.len() as CK_ULONG),
            CKR_OK
        );
        assert_eq!(f.C_CloseSession.unwrap()(s), CKR_OK);
    }
}

/// One fuzzer-chosen call.
unsafe fn step(m: &Module, f: &CK_FUNCTION_LIST, inp: &mut Input<'_>, seen: &mut Seen) {
    match inp.u8() % 20 {
        0 | 1 => {
            let slot = if inp.u8() == 0xff { m.slot + 1 } else { m.slot };
            let flags = inp.pick(&[
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                CKF_SERIAL_SESSION,
                CKF_RW_SESSION,
                0,
            ]);
            let mut h: CK_SESSION_HANDLE = 0;
            let out = if inp.u8() == 0xff {
                null_mut()
            } else {
                &mut h as *mut _
            };
            let rv = ok(
                "C_OpenSession",
                f.C_OpenSession.unwrap()(slot, flags, null_mut(), None, out),
            );
            if rv == CKR_OK {
                seen.sessions.push(h);
            }
        }
        2 | 3 => {
            let s = seen.session(inp);
            let who = inp.pick(&[CKU_USER, CKU_USER, CKU_SO, CKU_CONTEXT_SPECIFIC, 7]);
            let (pin, len) = match inp.u8() % 6 {
                0 => (b"0000".as_ptr(), 4),
                1 => (null(), inp.u8() as CK_ULONG),
                2 => (SO_PIN.as_ptr(), SO_PIN.len() as CK_ULONG),
                _ => (USER_PIN.as_ptr(), USER_PIN.len() as CK_ULONG),
            };
            ok("C_Login", f.C_Login.unwrap()(s, who, pin as *mut _, len));
        }
        4 => {
            let s = seen.session(inp);
            ok("C_Logout", f.C_Logout.unwrap()(s));
        }
        5 => {
            let s = seen.session(inp);
            let len = inp.pick(&V.lens);
            let label = inp.pick(&V.labels);
            let len = V
                .lens
                .iter()
                .find(|l| **l == len)
                .expect("picked from V.lens");
            let mut t = vec![
                attr(CKA_VALUE_LEN, len),
                attr(CKA_TOKEN, boolean(inp)),
                bytes_attr(CKA_LABEL, label),
                attr(CKA_ENCRYPT, boolean(inp)),
                attr(CKA_DECRYPT, boolean(inp)),
            ];
            let keep = inp.u8() as usize % (t.len() + 1);
            t.truncate(keep.max(1));
            let mech = CK_MECHANISM {
                mechanism: inp.pick(&[CKM_AES_KEY_GEN, CKM_AES_KEY_GEN, CKM_EC_KEY_PAIR_GEN]),
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            let mut h: CK_OBJECT_HANDLE = 0;
            let out = if inp.u8() == 0xff {
                null_mut()
            } else {
                &mut h as *mut _
            };
            let rv = ok(
                "C_GenerateKey",
                f.C_GenerateKey.unwrap()(
                    s,
                    &mech as *const _ as *mut _,
                    t.as_mut_ptr(),
                    t.len() as CK_ULONG,
                    out,
                ),
            );
            if rv == CKR_OK {
                seen.objects.push(h);
            }
        }
        6 => {
            let s = seen.session(inp);
            let label = inp.pick(&V.labels);
            let mut public = vec![
                bytes_attr(CKA_EC_PARAMS, P256),
                attr(CKA_VERIFY, boolean(inp)),
            ];
            let mut private = vec![
                attr(CKA_TOKEN, boolean(inp)),
                attr(CKA_SIGN, boolean(inp)),
                bytes_attr(CKA_LABEL, label),
            ];
            if inp.u8() == 0xff {
                public.remove(0);
            }
            let mech = CK_MECHANISM {
                mechanism: inp.pick(&[CKM_EC_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN, CKM_AES_KEY_GEN]),
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            let (mut hp, mut hq): (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) = (0, 0);
            let rv = ok(
                "C_GenerateKeyPair",
                f.C_GenerateKeyPair.unwrap()(
                    s,
                    &mech as *const _ as *mut _,
                    public.as_mut_ptr(),
                    public.len() as CK_ULONG,
                    private.as_mut_ptr(),
                    private.len() as CK_ULONG,
                    &mut hp,
                    &mut hq,
                ),
            );
            if rv == CKR_OK {
                seen.objects.push(hp);
                seen.objects.push(hq);
            }
        }
        7 | 8 => {
            let s = seen.session(inp);
            let label = inp.pick(&V.labels);
            let class = inp.pick(&V.classes);
            let class = V
                .classes
                .iter()
                .find(|c| **c == class)
                .expect("picked from V.classes");
            let mut t = vec![bytes_attr(CKA_LABEL, label), attr(CKA_CLASS, class)];
            let keep = inp.u8() as usize % (t.len() + 1);
            t.truncate(keep);
            let tp = if t.is_empty() {
                null_mut()
            } else {
                t.as_mut_ptr()
            };
            ok(
                "C_FindObjectsInit",
                f.C_FindObjectsInit.unwrap()(s, tp, t.len() as CK_ULONG),
            );
            let max = inp.u8() as usize % 8;
            let mut found = vec![0 as CK_OBJECT_HANDLE; max];
            let mut n: CK_ULONG = 0;
            let np = if inp.u8() == 0xff {
                null_mut()
            } else {
                &mut n as *mut _
            };
            let fp = if max == 0 {
                null_mut()
            } else {
                found.as_mut_ptr()
            };
            let rv = ok(
                "C_FindObjects",
                f.C_FindObjects.unwrap()(s, fp, max as CK_ULONG, np),
            );
            if rv == CKR_OK {
                assert!(n as usize <= max, "C_FindObjects returned more than asked");
                seen.objects.extend_from_slice(&found[..n as usize]);
            }
            if inp.u8() & 1 == 0 {
                ok("C_FindObjectsFinal", f.C_FindObjectsFinal.unwrap()(s));
            }
        }
        9 => {
            let s = seen.session(inp);
            let k = seen.object(inp);
            let mech = CK_MECHANISM {
                mechanism: inp.pick(&[
                    CKM_ECDSA,
                    CKM_ECDSA_SHA256,
                    CKM_ECDSA_SHA384,
                    CKM_SHA256_RSA_PKCS,
                    CKM_AES_GCM,
                ]),
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            let mp = if inp.u8() == 0xff {
                null_mut()
            } else {
                &mech as *const _ as *mut _
            };
            ok("C_SignInit", f.C_SignInit.unwrap()(s, mp, k));
        }
        10 | 11 => {
            let s = seen.session(inp);
            let (d, dl, _) = data(inp);
            let mut out = Out::new(inp);
            let rv = ok(
                "C_Sign",
                f.C_Sign.unwrap()(s, d as *mut _, dl, out.ptr(), out.len_ptr()),
            );
            out.check("C_Sign", rv);
        }
        12 => {
            let s = seen.session(inp);
            let (d, dl, _) = data(inp);
            if inp.u8() & 1 == 0 {
                ok("C_SignUpdate", f.C_SignUpdate.unwrap()(s, d as *mut _, dl));
            } else {
                let mut out = Out::new(inp);
                let rv = ok(
                    "C_SignFinal",
                    f.C_SignFinal.unwrap()(s, out.ptr(), out.len_ptr()),
                );
                out.check("C_SignFinal", rv);
            }
        }
        13 => {
            let s = seen.session(inp);
            let k = seen.object(inp);
            let iv = inp.take(16);
            let aad_len = inp_len(inp);
            let aad = inp.take(aad_len);
            let gcm = CK_GCM_PARAMS {
                pIv: iv.as_ptr() as *mut _,
                ulIvLen: inp
                    .pick(&[12, iv.len() as CK_ULONG, 0])
                    .min(iv.len() as CK_ULONG),
                ulIvBits: 96,
                pAAD: aad.as_ptr() as *mut _,
                ulAADLen: aad.len() as CK_ULONG,
                ulTagBits: inp.pick(&[128, 96, 64, 0]),
            };
            let (ty, p, l): (CK_MECHANISM_TYPE, *const u8, CK_ULONG) = match inp.u8() % 4 {
                0 | 1 => (
                    CKM_AES_GCM,
                    &gcm as *const _ as *const u8,
                    std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
                ),
                2 => (CKM_AES_CBC_PAD, iv.as_ptr(), iv.len() as CK_ULONG),
                _ => (CKM_AES_CBC, iv.as_ptr(), iv.len() as CK_ULONG),
            };
            let mech = CK_MECHANISM {
                mechanism: ty,
                pParameter: p as *mut _,
                ulParameterLen: if p.is_null() { 0 } else { l },
            };
            ok(
                "C_EncryptInit",
                f.C_EncryptInit.unwrap()(s, &mech as *const _ as *mut _, k),
            );
        }
        14 => {
            let s = seen.session(inp);
            let (d, dl, _) = data(inp);
            let mut out = Out::new(inp);
            let rv = ok(
                "C_Encrypt",
                f.C_Encrypt.unwrap()(s, d as *mut _, dl, out.ptr(), out.len_ptr()),
            );
            out.check("C_Encrypt", rv);
        }
        15 => {
            let s = seen.session(inp);
            let mut out = Out::new(inp);
            if inp.u8() & 1 == 0 {
                let (d, dl, _) = data(inp);
                let rv = ok(
                    "C_EncryptUpdate",
                    f.C_EncryptUpdate.unwrap()(s, d as *mut _, dl, out.ptr(), out.len_ptr()),
                );
                out.check("C_EncryptUpdate", rv);
            } else {
                let rv = ok(
                    "C_EncryptFinal",
                    f.C_EncryptFinal.unwrap()(s, out.ptr(), out.len_ptr()),
                );
                out.check("C_EncryptFinal", rv);
            }
        }
        16 => {
            let s = seen.session(inp);
            let k = seen.object(inp);
            ok("C_DestroyObject", f.C_DestroyObject.unwrap()(s, k));
        }
        17 => {
            let s = seen.session(inp);
            let k = seen.object(inp);
            let n = inp.u8() as usize % 6;
            let mut bufs: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
            let mut t: Vec<CK_ATTRIBUTE> = Vec::with_capacity(n);
            for _ in 0..n {
                let ty = inp.ulong(softmhsm_fuzz::ATTRIBUTE_TYPES);
                let sel = inp.u8();
                bufs.push(match sel % 3 {
                    0 => None,
                    1 => Some(vec![0u8; sel as usize % 8]),
                    _ => Some(vec![0u8; 256]),
                });
                let b = bufs.last_mut().unwrap();
                t.push(CK_ATTRIBUTE {
                    type_: ty,
                    pValue: b.as_mut().map_or(null_mut(), |b| b.as_mut_ptr() as *mut _),
                    ulValueLen: b.as_ref().map_or(0, |b| b.len() as CK_ULONG),
                });
            }
            let tp = if inp.u8() == 0xff || t.is_empty() {
                null_mut()
            } else {
                t.as_mut_ptr()
            };
            let rv = ok(
                "C_GetAttributeValue",
                f.C_GetAttributeValue.unwrap()(s, k, tp, t.len() as CK_ULONG),
            );
            if rv == CKR_OK {
                for (a, b) in t.iter().zip(&bufs) {
                    if let Some(b) = b {
                        assert!(
                            a.ulValueLen as usize <= b.len(),
                            "value longer than its buffer"
                        );
                    }
                }
            }
        }
        18 => {
            let s = seen.session(inp);
            let k = seen.object(inp);
            let label = inp.pick(&V.labels);
            let mut t = vec![
                bytes_attr(CKA_LABEL, label),
                attr(CKA_SIGN, boolean(inp)),
                attr(CKA_ENCRYPT, boolean(inp)),
                attr(CKA_EXTRACTABLE, boolean(inp)),
                bytes_attr(CKA_ID, inp.take(4)),
            ];
            let from = inp.u8() as usize % t.len();
            let t = &mut t[from..];
            ok(
                "C_SetAttributeValue",
                f.C_SetAttributeValue.unwrap()(s, k, t.as_mut_ptr(), t.len() as CK_ULONG),
            );
        }
        _ => {
            let s = seen.session(inp);
            ok("C_CloseSession", f.C_CloseSession.unwrap()(s));
        }
    }
}

/// A short length from the input.
fn inp_len(inp: &mut Input<'_>) -> usize {
    inp.u8() as usize % 24
}
