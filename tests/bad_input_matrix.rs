//! The bad-input matrix through the raw function list: every entry point
//! before C_Initialize, every session function with an invalid and with a
//! closed session handle, every pointer argument NULL, and object handles that
//! do not exist; each with the return code the spec names, and the token's
//! objects unchanged afterwards.

mod common;

use common::*;
use cryptoki_sys::*;
use std::ptr::null_mut;

/// A call made inside an active operation, returning the code under test.
type InOp<'a> = Box<dyn Fn() -> CK_RV + 'a>;

/// One call of the matrix: a name and the raw call.
type Call = (&'static str, Box<dyn Fn(&Raw, CK_SESSION_HANDLE) -> CK_RV>);

macro_rules! call {
    ($name:literal, |$f:ident, $s:ident| $body:expr) => {
        (
            $name,
            Box::new(move |raw: &Raw, $s: CK_SESSION_HANDLE| {
                let $f = raw.f();
                #[allow(unused_unsafe)]
                unsafe {
                    $body
                }
            }) as Box<dyn Fn(&Raw, CK_SESSION_HANDLE) -> CK_RV>,
        )
    };
}

/// Scratch buffers every call may point into (valid memory, so that only the
/// argument under test is wrong).
struct Bufs {
    out: Vec<u8>,
    len: CK_ULONG,
    data: Vec<u8>,
}

fn bufs() -> Bufs {
    Bufs {
        out: vec![0; 1024],
        len: 1024,
        data: vec![7; 32],
    }
}

fn sha256() -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: CKM_SHA256,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

fn ecdsa() -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// Buffers handed to the library stay alive to the end of the process (an
/// operation may keep a pointer until it is finished), and stay reachable from
/// here, so valgrind (tests/valgrind.sh) does not count them as leaks.
static KEPT: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

fn keep(b: Box<Bufs>) -> &'static mut Bufs {
    let p = Box::into_raw(b);
    KEPT.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(p as usize);
    // SAFETY: just leaked; never freed, so valid for 'static.
    unsafe { &mut *p }
}

/// Every function that takes a session handle, called with valid pointers.
fn session_calls(key: CK_OBJECT_HANDLE) -> Vec<Call> {
    macro_rules! b {
        () => {
            keep(Box::new(bufs()))
        };
    }
    vec![
        call!("C_CloseSession", |f, s| f.C_CloseSession.unwrap()(s)),
        call!("C_GetSessionInfo", |f, s| {
            let mut i: CK_SESSION_INFO = std::mem::zeroed();
            f.C_GetSessionInfo.unwrap()(s, &mut i)
        }),
        call!("C_GetOperationState", |f, s| {
            let b = b!();
            f.C_GetOperationState.unwrap()(s, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_Login", |f, s| f.C_Login.unwrap()(
            s,
            CKU_USER,
            b"1234".as_ptr() as *mut _,
            4
        )),
        call!("C_Logout", |f, s| f.C_Logout.unwrap()(s)),
        call!("C_InitPIN", |f, s| f.C_InitPIN.unwrap()(
            s,
            b"1234".as_ptr() as *mut _,
            4
        )),
        call!("C_SetPIN", |f, s| f.C_SetPIN.unwrap()(
            s,
            b"1234".as_ptr() as *mut _,
            4,
            b"5678".as_ptr() as *mut _,
            4
        )),
        call!("C_CreateObject", |f, s| {
            let mut h = 0;
            let mut class = CKO_DATA.to_ne_bytes();
            let mut t = [CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: class.as_mut_ptr().cast(),
                ulValueLen: 8,
            }];
            f.C_CreateObject.unwrap()(s, t.as_mut_ptr(), 1, &mut h)
        }),
        call!("C_CopyObject", |f, s| {
            let mut h = 0;
            f.C_CopyObject.unwrap()(s, key, null_mut(), 0, &mut h)
        }),
        call!("C_DestroyObject", |f, s| f.C_DestroyObject.unwrap()(s, key)),
        call!("C_GetObjectSize", |f, s| {
            let mut n = 0;
            f.C_GetObjectSize.unwrap()(s, key, &mut n)
        }),
        call!("C_GetAttributeValue", |f, s| {
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: null_mut(),
                ulValueLen: 0,
            }];
            f.C_GetAttributeValue.unwrap()(s, key, a.as_mut_ptr(), 1)
        }),
        call!("C_SetAttributeValue", |f, s| {
            let mut l = *b"x";
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: l.as_mut_ptr().cast(),
                ulValueLen: 1,
            }];
            f.C_SetAttributeValue.unwrap()(s, key, a.as_mut_ptr(), 1)
        }),
        call!("C_FindObjectsInit", |f, s| f.C_FindObjectsInit.unwrap()(
            s,
            null_mut(),
            0
        )),
        call!("C_FindObjects", |f, s| {
            let mut h = [0; 4];
            let mut n = 0;
            f.C_FindObjects.unwrap()(s, h.as_mut_ptr(), 4, &mut n)
        }),
        call!("C_FindObjectsFinal", |f, s| f.C_FindObjectsFinal.unwrap()(
            s
        )),
        call!("C_EncryptInit", |f, s| f.C_EncryptInit.unwrap()(
            s,
            &mut sha256(),
            key
        )),
        call!("C_Encrypt", |f, s| {
            let b = b!();
            f.C_Encrypt.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_EncryptUpdate", |f, s| {
            let b = b!();
            f.C_EncryptUpdate.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_EncryptFinal", |f, s| {
            let b = b!();
            f.C_EncryptFinal.unwrap()(s, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_DecryptInit", |f, s| f.C_DecryptInit.unwrap()(
            s,
            &mut sha256(),
            key
        )),
        call!("C_Decrypt", |f, s| {
            let b = b!();
            f.C_Decrypt.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_DecryptUpdate", |f, s| {
            let b = b!();
            f.C_DecryptUpdate.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_DecryptFinal", |f, s| {
            let b = b!();
            f.C_DecryptFinal.unwrap()(s, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_DigestInit", |f, s| f.C_DigestInit.unwrap()(
            s,
            &mut sha256()
        )),
        call!("C_Digest", |f, s| {
            let b = b!();
            f.C_Digest.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_DigestUpdate", |f, s| {
            let b = b!();
            f.C_DigestUpdate.unwrap()(s, b.data.as_mut_ptr(), 32)
        }),
        call!("C_DigestKey", |f, s| f.C_DigestKey.unwrap()(s, key)),
        call!("C_DigestFinal", |f, s| {
            let b = b!();
            f.C_DigestFinal.unwrap()(s, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_SignInit", |f, s| f.C_SignInit.unwrap()(
            s,
            &mut ecdsa(),
            key
        )),
        call!("C_Sign", |f, s| {
            let b = b!();
            f.C_Sign.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_SignUpdate", |f, s| {
            let b = b!();
            f.C_SignUpdate.unwrap()(s, b.data.as_mut_ptr(), 32)
        }),
        call!("C_SignFinal", |f, s| {
            let b = b!();
            f.C_SignFinal.unwrap()(s, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_SignRecoverInit", |f, s| f.C_SignRecoverInit.unwrap()(
            s,
            &mut ecdsa(),
            key
        )),
        call!("C_SignRecover", |f, s| {
            let b = b!();
            f.C_SignRecover.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_VerifyInit", |f, s| f.C_VerifyInit.unwrap()(
            s,
            &mut ecdsa(),
            key
        )),
        call!("C_Verify", |f, s| {
            let b = b!();
            f.C_Verify.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), 64)
        }),
        call!("C_VerifyUpdate", |f, s| {
            let b = b!();
            f.C_VerifyUpdate.unwrap()(s, b.data.as_mut_ptr(), 32)
        }),
        call!("C_VerifyFinal", |f, s| {
            let b = b!();
            f.C_VerifyFinal.unwrap()(s, b.out.as_mut_ptr(), 64)
        }),
        call!(
            "C_VerifyRecoverInit",
            |f, s| f.C_VerifyRecoverInit.unwrap()(s, &mut ecdsa(), key)
        ),
        call!("C_VerifyRecover", |f, s| {
            let b = b!();
            f.C_VerifyRecover.unwrap()(s, b.data.as_mut_ptr(), 32, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_DigestEncryptUpdate", |f, s| {
            let b = b!();
            f.C_DigestEncryptUpdate.unwrap()(
                s,
                b.data.as_mut_ptr(),
                32,
                b.out.as_mut_ptr(),
                &mut b.len,
            )
        }),
        call!("C_DecryptDigestUpdate", |f, s| {
            let b = b!();
            f.C_DecryptDigestUpdate.unwrap()(
                s,
                b.data.as_mut_ptr(),
                32,
                b.out.as_mut_ptr(),
                &mut b.len,
            )
        }),
        call!("C_SignEncryptUpdate", |f, s| {
            let b = b!();
            f.C_SignEncryptUpdate.unwrap()(
                s,
                b.data.as_mut_ptr(),
                32,
                b.out.as_mut_ptr(),
                &mut b.len,
            )
        }),
        call!("C_DecryptVerifyUpdate", |f, s| {
            let b = b!();
            f.C_DecryptVerifyUpdate.unwrap()(
                s,
                b.data.as_mut_ptr(),
                32,
                b.out.as_mut_ptr(),
                &mut b.len,
            )
        }),
        call!("C_GenerateKey", |f, s| {
            let mut h = 0;
            let mut m = CK_MECHANISM {
                mechanism: CKM_AES_KEY_GEN,
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            let mut len = (32 as CK_ULONG).to_ne_bytes();
            let mut t = [CK_ATTRIBUTE {
                type_: CKA_VALUE_LEN,
                pValue: len.as_mut_ptr().cast(),
                ulValueLen: 8,
            }];
            f.C_GenerateKey.unwrap()(s, &mut m, t.as_mut_ptr(), 1, &mut h)
        }),
        call!("C_GenerateKeyPair", |f, s| {
            let (mut a, mut b) = (0, 0);
            let mut m = CK_MECHANISM {
                mechanism: CKM_EC_KEY_PAIR_GEN,
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            let mut oid = OID_P256.to_vec();
            let mut t = [CK_ATTRIBUTE {
                type_: CKA_EC_PARAMS,
                pValue: oid.as_mut_ptr().cast(),
                ulValueLen: oid.len() as CK_ULONG,
            }];
            f.C_GenerateKeyPair.unwrap()(
                s,
                &mut m,
                t.as_mut_ptr(),
                1,
                null_mut(),
                0,
                &mut a,
                &mut b,
            )
        }),
        call!("C_WrapKey", |f, s| {
            let b = b!();
            let mut m = CK_MECHANISM {
                mechanism: CKM_AES_KEY_WRAP,
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            f.C_WrapKey.unwrap()(s, &mut m, key, key, b.out.as_mut_ptr(), &mut b.len)
        }),
        call!("C_UnwrapKey", |f, s| {
            let b = b!();
            let mut h = 0;
            let mut m = CK_MECHANISM {
                mechanism: CKM_AES_KEY_WRAP,
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            f.C_UnwrapKey.unwrap()(
                s,
                &mut m,
                key,
                b.data.as_mut_ptr(),
                32,
                null_mut(),
                0,
                &mut h,
            )
        }),
        call!("C_DeriveKey", |f, s| {
            let mut h = 0;
            f.C_DeriveKey.unwrap()(s, &mut ecdsa(), key, null_mut(), 0, &mut h)
        }),
        call!("C_SeedRandom", |f, s| {
            let b = b!();
            f.C_SeedRandom.unwrap()(s, b.data.as_mut_ptr(), 32)
        }),
        call!("C_GenerateRandom", |f, s| {
            let b = b!();
            f.C_GenerateRandom.unwrap()(s, b.out.as_mut_ptr(), 16)
        }),
        call!(
            "C_GetFunctionStatus",
            |f, s| f.C_GetFunctionStatus.unwrap()(s)
        ),
        call!("C_CancelFunction", |f, s| f.C_CancelFunction.unwrap()(s)),
    ]
}

/// The functions without a session handle, with valid pointers.
fn library_calls() -> Vec<Call> {
    vec![
        call!("C_Finalize", |f, _s| f.C_Finalize.unwrap()(null_mut())),
        call!("C_GetInfo", |f, _s| {
            let mut i: CK_INFO = std::mem::zeroed();
            f.C_GetInfo.unwrap()(&mut i)
        }),
        call!("C_GetSlotList", |f, _s| {
            let mut n = 0;
            f.C_GetSlotList.unwrap()(CK_TRUE, null_mut(), &mut n)
        }),
        call!("C_GetSlotInfo", |f, _s| {
            let mut i: CK_SLOT_INFO = std::mem::zeroed();
            f.C_GetSlotInfo.unwrap()(0, &mut i)
        }),
        call!("C_GetTokenInfo", |f, _s| {
            let mut i: CK_TOKEN_INFO = std::mem::zeroed();
            f.C_GetTokenInfo.unwrap()(0, &mut i)
        }),
        call!("C_GetMechanismList", |f, _s| {
            let mut n = 0;
            f.C_GetMechanismList.unwrap()(0, null_mut(), &mut n)
        }),
        call!("C_GetMechanismInfo", |f, _s| {
            let mut i: CK_MECHANISM_INFO = std::mem::zeroed();
            f.C_GetMechanismInfo.unwrap()(0, CKM_SHA256, &mut i)
        }),
        call!("C_InitToken", |f, _s| {
            let label = [b' '; 32];
            f.C_InitToken.unwrap()(
                0,
                b"12345678".as_ptr() as *mut _,
                8,
                label.as_ptr() as *mut _,
            )
        }),
        call!("C_OpenSession", |f, _s| {
            let mut h = 0;
            f.C_OpenSession.unwrap()(0, CKF_SERIAL_SESSION, null_mut(), None, &mut h)
        }),
        call!("C_CloseAllSessions", |f, _s| f.C_CloseAllSessions.unwrap()(
            0
        )),
        call!("C_WaitForSlotEvent", |f, _s| {
            let mut slot = 0;
            f.C_WaitForSlotEvent.unwrap()(CKF_DONT_BLOCK, &mut slot, null_mut())
        }),
    ]
}

p11_test! {
    fn every_function_before_initialize_is_not_initialized() {
        softmhsm_only!("SoftHSMv2 answers some of these differently before C_Initialize");
        let raw = Raw::load();
        let mut checked = 0;
        for (name, call) in library_calls().into_iter().chain(session_calls(2)) {
            check(call(&raw, 1), CKR_CRYPTOKI_NOT_INITIALIZED, &format!("{name} before C_Initialize"));
            checked += 1;
        }
        assert!(checked >= 65, "matrix covers every 2.40 function but the two that need no library: {checked}");
        report(&format!("BAD-INPUT before C_Initialize: {checked} cases"));
    }
}

p11_test! {
    fn every_session_function_refuses_invalid_and_closed_handles() {
        let t = Token::fresh();
        let key = t.keypair(Kp::Ec(OID_P256), "target").private.handle();
        let before = t.count_all();
        let mut closed: CK_SESSION_HANDLE = 0;
        let rv = unsafe { p11!(t.raw, C_OpenSession, t.slot.id(), CKF_SERIAL_SESSION, null_mut(), None, &mut closed) };
        check(rv, CKR_OK, "C_OpenSession");
        let rv = unsafe { p11!(t.raw, C_CloseSession, closed) };
        check(rv, CKR_OK, "C_CloseSession");
        let mut checked = 0;
        // Stubs of unsupported and legacy functions "should simply return" their
        // code (PKCS#11 §5.1, §5.20): they examine no argument.
        let simply = |name: &str| match name {
            "C_GetOperationState" | "C_DigestKey" | "C_SignRecoverInit" | "C_SignRecover"
            | "C_VerifyRecoverInit" | "C_VerifyRecover" | "C_DigestEncryptUpdate"
            | "C_DecryptDigestUpdate" | "C_SignEncryptUpdate" | "C_DecryptVerifyUpdate" => {
                CKR_FUNCTION_NOT_SUPPORTED
            }
            "C_GetFunctionStatus" | "C_CancelFunction" => CKR_FUNCTION_NOT_PARALLEL,
            _ => CKR_SESSION_HANDLE_INVALID,
        };
        for handle in [0xdead_beef, closed, 0] {
            for (name, call) in session_calls(key) {
                check(call(&t.raw, handle), simply(name), &format!("{name} with session handle {handle:#x}"));
                checked += 1;
            }
        }
        assert_eq!(t.count_all(), before, "refused calls must not change the token's objects");
        assert!(checked >= 150, "{checked} cases");
        report(&format!("BAD-INPUT invalid/closed/zero session handles: {checked} cases, objects unchanged"));
    }
}

p11_test! {
    fn every_null_pointer_argument_is_arguments_bad() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "target");
        let (key, s) = (k.private.handle(), t.h());
        let before = t.count_all();
        let f = t.raw.f();
        let mut d = [7u8; 32];
        let mut out = [0u8; 256];
        let mut len: CK_ULONG = 256;
        let mut h: CK_OBJECT_HANDLE = 0;
        let mut n: CK_ULONG = 0;
        let mut class = CKO_DATA.to_ne_bytes();
        let mut tmpl = [CK_ATTRIBUTE { type_: CKA_CLASS, pValue: class.as_mut_ptr().cast(), ulValueLen: 8 }];
        let label = [b' '; 32];
        let pin = b"1234".as_ptr() as *mut CK_UTF8CHAR;
        let cases: Vec<(&str, CK_RV)> = unsafe {
            vec![
                ("C_GetInfo(NULL)", f.C_GetInfo.unwrap()(null_mut())),
                ("C_GetSlotList(count NULL)", f.C_GetSlotList.unwrap()(CK_TRUE, null_mut(), null_mut())),
                ("C_GetSlotInfo(NULL)", f.C_GetSlotInfo.unwrap()(t.slot.id(), null_mut())),
                ("C_GetTokenInfo(NULL)", f.C_GetTokenInfo.unwrap()(t.slot.id(), null_mut())),
                ("C_GetMechanismList(count NULL)", f.C_GetMechanismList.unwrap()(t.slot.id(), null_mut(), null_mut())),
                ("C_GetMechanismInfo(NULL)", f.C_GetMechanismInfo.unwrap()(t.slot.id(), CKM_SHA256, null_mut())),
                ("C_InitToken(pin NULL)", f.C_InitToken.unwrap()(t.slot.id(), null_mut(), 8, label.as_ptr() as *mut _)),
                ("C_InitToken(label NULL)", f.C_InitToken.unwrap()(t.slot.id(), pin, 4, null_mut())),
                ("C_OpenSession(handle NULL)", f.C_OpenSession.unwrap()(t.slot.id(), CKF_SERIAL_SESSION, null_mut(), None, null_mut())),
                ("C_GetSessionInfo(NULL)", f.C_GetSessionInfo.unwrap()(s, null_mut())),
                ("C_InitPIN(pin NULL, len 4)", f.C_InitPIN.unwrap()(s, null_mut(), 4)),
                ("C_SetPIN(old NULL)", f.C_SetPIN.unwrap()(s, null_mut(), 4, pin, 4)),
                ("C_SetPIN(new NULL)", f.C_SetPIN.unwrap()(s, pin, 4, null_mut(), 4)),
                ("C_CreateObject(template NULL, count 1)", f.C_CreateObject.unwrap()(s, null_mut(), 1, &mut h)),
                ("C_CreateObject(handle NULL)", f.C_CreateObject.unwrap()(s, tmpl.as_mut_ptr(), 1, null_mut())),
                ("C_CopyObject(handle NULL)", f.C_CopyObject.unwrap()(s, key, null_mut(), 0, null_mut())),
                ("C_GetObjectSize(NULL)", f.C_GetObjectSize.unwrap()(s, key, null_mut())),
                ("C_GetAttributeValue(template NULL, count 1)", f.C_GetAttributeValue.unwrap()(s, key, null_mut(), 1)),
                ("C_SetAttributeValue(template NULL, count 1)", f.C_SetAttributeValue.unwrap()(s, key, null_mut(), 1)),
                ("C_FindObjectsInit(template NULL, count 1)", f.C_FindObjectsInit.unwrap()(s, null_mut(), 1)),
                ("C_GenerateKey(mechanism NULL)", f.C_GenerateKey.unwrap()(s, null_mut(), null_mut(), 0, &mut h)),
                ("C_GenerateKey(handle NULL)", f.C_GenerateKey.unwrap()(s, &mut CK_MECHANISM { mechanism: CKM_AES_KEY_GEN, pParameter: null_mut(), ulParameterLen: 0 }, null_mut(), 0, null_mut())),
                ("C_GenerateKeyPair(mechanism NULL)", f.C_GenerateKeyPair.unwrap()(s, null_mut(), null_mut(), 0, null_mut(), 0, &mut h, &mut n)),
                ("C_GenerateKeyPair(handles NULL)", f.C_GenerateKeyPair.unwrap()(s, &mut ecdsa(), null_mut(), 0, null_mut(), 0, null_mut(), null_mut())),
                ("C_WrapKey(mechanism NULL)", f.C_WrapKey.unwrap()(s, null_mut(), key, key, out.as_mut_ptr(), &mut len)),
                ("C_UnwrapKey(handle NULL)", f.C_UnwrapKey.unwrap()(s, &mut ecdsa(), key, d.as_mut_ptr(), 32, null_mut(), 0, null_mut())),
                ("C_DeriveKey(handle NULL)", f.C_DeriveKey.unwrap()(s, &mut ecdsa(), key, null_mut(), 0, null_mut())),
                ("C_GenerateRandom(NULL, 16)", f.C_GenerateRandom.unwrap()(s, null_mut(), 16)),
                ("C_SeedRandom(NULL, 4)", f.C_SeedRandom.unwrap()(s, null_mut(), 4)),
                ("C_Login(pin NULL)", f.C_Login.unwrap()(s, CKU_SO, null_mut(), 8)),
            ]
        };
        for (name, rv) in &cases {
            check(*rv, CKR_ARGUMENTS_BAD, name);
        }
        // Calls inside an active operation: NULL data or NULL length pointer.
        let in_op: Vec<(&str, InOp<'_>)> = vec![
            ("C_Sign(length NULL)", Box::new(move || unsafe {
                check(f.C_SignInit.unwrap()(s, &mut ecdsa(), key), CKR_OK, "C_SignInit");
                let mut d = [7u8; 32];
                let mut o = [0u8; 64];
                let rv = f.C_Sign.unwrap()(s, d.as_mut_ptr(), 32, o.as_mut_ptr(), null_mut());
                let mut l: CK_ULONG = 64;
                f.C_Sign.unwrap()(s, d.as_mut_ptr(), 32, o.as_mut_ptr(), &mut l);
                rv
            })),
            ("C_Sign(data NULL, length 32)", Box::new(move || unsafe {
                check(f.C_SignInit.unwrap()(s, &mut ecdsa(), key), CKR_OK, "C_SignInit");
                let mut o = [0u8; 64];
                let mut l: CK_ULONG = 64;
                let rv = f.C_Sign.unwrap()(s, null_mut(), 32, o.as_mut_ptr(), &mut l);
                let mut d = [7u8; 32];
                f.C_Sign.unwrap()(s, d.as_mut_ptr(), 32, o.as_mut_ptr(), &mut l);
                rv
            })),
            ("C_Digest(length NULL)", Box::new(move || unsafe {
                check(f.C_DigestInit.unwrap()(s, &mut sha256()), CKR_OK, "C_DigestInit");
                let mut d = [7u8; 32];
                let mut o = [0u8; 64];
                let rv = f.C_Digest.unwrap()(s, d.as_mut_ptr(), 32, o.as_mut_ptr(), null_mut());
                let mut l: CK_ULONG = 64;
                f.C_Digest.unwrap()(s, d.as_mut_ptr(), 32, o.as_mut_ptr(), &mut l);
                rv
            })),
            ("C_FindObjects(count NULL)", Box::new(move || unsafe {
                check(f.C_FindObjectsInit.unwrap()(s, null_mut(), 0), CKR_OK, "C_FindObjectsInit");
                let mut hs = [0; 4];
                let rv = f.C_FindObjects.unwrap()(s, hs.as_mut_ptr(), 4, null_mut());
                f.C_FindObjectsFinal.unwrap()(s);
                rv
            })),
            ("C_FindObjects(handles NULL, max 4)", Box::new(move || unsafe {
                check(f.C_FindObjectsInit.unwrap()(s, null_mut(), 0), CKR_OK, "C_FindObjectsInit");
                let mut c: CK_ULONG = 0;
                let rv = f.C_FindObjects.unwrap()(s, null_mut(), 4, &mut c);
                f.C_FindObjectsFinal.unwrap()(s);
                rv
            })),
        ];
        for (name, run) in &in_op {
            check(run(), CKR_ARGUMENTS_BAD, name);
        }
        assert_eq!(t.count_all(), before, "refused calls must not change the token's objects");
        // 35: the five *Init(NULL pMechanism) cases left this list for
        // a_null_mechanism_ends_only_its_own_familys_operation (a cancel, not
        // CKR_ARGUMENTS_BAD, since PKCS#11 3.0).
        assert!(cases.len() + in_op.len() >= 35, "{} cases", cases.len() + in_op.len());
        report(&format!("BAD-INPUT null pointer arguments: {} cases, objects unchanged", cases.len() + in_op.len()));
    }
}

p11_test! {
    fn a_null_mechanism_ends_only_its_own_familys_operation() {
        // PKCS#11 3.0 §5.8.1 and its siblings: "C_EncryptInit can be called
        // with pMechanism set to NULL_PTR to terminate an active encryption
        // operation" (and so C_DecryptInit, C_DigestInit, C_SignInit,
        // C_VerifyInit). All five operations run at once in one session; each
        // cancel ends its own and leaves the others running.
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let aes = t.aes(32, "aes").handle();
        let (key, public, s) = (k.private.handle(), k.public.handle(), t.h());
        let f = t.raw.f();
        let cbc = |iv: &mut [u8; 16]| CK_MECHANISM {
            mechanism: CKM_AES_CBC_PAD,
            pParameter: iv.as_mut_ptr().cast(),
            ulParameterLen: 16,
        };
        let (mut iv_e, mut iv_d) = ([0u8; 16], [0u8; 16]);
        // SAFETY: a live session and valid mechanisms throughout.
        unsafe {
            let mut start = || {
                check(f.C_EncryptInit.unwrap()(s, &mut cbc(&mut iv_e), aes), CKR_OK, "C_EncryptInit");
                check(f.C_DecryptInit.unwrap()(s, &mut cbc(&mut iv_d), aes), CKR_OK, "C_DecryptInit");
                check(f.C_DigestInit.unwrap()(s, &mut sha256()), CKR_OK, "C_DigestInit");
                check(f.C_SignInit.unwrap()(s, &mut ecdsa(), key), CKR_OK, "C_SignInit");
                check(f.C_VerifyInit.unwrap()(s, &mut ecdsa(), public), CKR_OK, "C_VerifyInit");
            };
            // An Update of each family: CKR_OK while active, else NOT_INITIALIZED.
            let mut part = [7u8; 16];
            let mut out = [0u8; 64];
            let mut update = |family: usize| -> CK_RV {
                let mut l: CK_ULONG = 64;
                match family {
                    0 => f.C_EncryptUpdate.unwrap()(s, part.as_mut_ptr(), 16, out.as_mut_ptr(), &mut l),
                    1 => f.C_DecryptUpdate.unwrap()(s, part.as_mut_ptr(), 16, out.as_mut_ptr(), &mut l),
                    2 => f.C_DigestUpdate.unwrap()(s, part.as_mut_ptr(), 16),
                    3 => f.C_SignUpdate.unwrap()(s, part.as_mut_ptr(), 16),
                    _ => f.C_VerifyUpdate.unwrap()(s, part.as_mut_ptr(), 16),
                }
            };
            let cancel = |family: usize| -> CK_RV {
                match family {
                    0 => f.C_EncryptInit.unwrap()(s, null_mut(), aes),
                    1 => f.C_DecryptInit.unwrap()(s, null_mut(), aes),
                    2 => f.C_DigestInit.unwrap()(s, null_mut()),
                    3 => f.C_SignInit.unwrap()(s, null_mut(), key),
                    _ => f.C_VerifyInit.unwrap()(s, null_mut(), public),
                }
            };
            let names = ["C_EncryptInit", "C_DecryptInit", "C_DigestInit", "C_SignInit", "C_VerifyInit"];
            for (i, name) in names.iter().enumerate() {
                start();
                check(cancel(i), CKR_OK, &format!("{name}(NULL) ends its operation"));
                // A second cancel finds nothing to end: still CKR_OK.
                check(cancel(i), CKR_OK, &format!("{name}(NULL) with nothing active"));
                for (j, other) in names.iter().enumerate() {
                    let want = if i == j { CKR_OPERATION_NOT_INITIALIZED } else { CKR_OK };
                    check(update(j), want, &format!("{other}'s operation after {name}(NULL)"));
                }
                // End the others, so the next round starts clean.
                for j in 0..names.len() {
                    check(cancel(j), CKR_OK, "cleanup cancel");
                }
            }
        }
        report("BAD-INPUT NULL pMechanism cancels: 5 families, each ends only its own operation");
    }
}

p11_test! {
    fn object_handles_that_do_not_exist_are_refused() {
        let t = Token::fresh();
        let s = t.h();
        let f = t.raw.f();
        let before = t.count_all();
        for bogus in [0 as CK_OBJECT_HANDLE, 1, 0xdead_beef, CK_OBJECT_HANDLE::MAX] {
            let mut a = [CK_ATTRIBUTE { type_: CKA_LABEL, pValue: null_mut(), ulValueLen: 0 }];
            let mut n: CK_ULONG = 0;
            let rv = unsafe {
                [
                    ("C_GetAttributeValue", f.C_GetAttributeValue.unwrap()(s, bogus, a.as_mut_ptr(), 1), CKR_OBJECT_HANDLE_INVALID),
                    ("C_SetAttributeValue", f.C_SetAttributeValue.unwrap()(s, bogus, a.as_mut_ptr(), 1), CKR_OBJECT_HANDLE_INVALID),
                    ("C_GetObjectSize", f.C_GetObjectSize.unwrap()(s, bogus, &mut n), CKR_OBJECT_HANDLE_INVALID),
                    ("C_DestroyObject", f.C_DestroyObject.unwrap()(s, bogus), CKR_OBJECT_HANDLE_INVALID),
                    ("C_SignInit", f.C_SignInit.unwrap()(s, &mut ecdsa(), bogus), CKR_KEY_HANDLE_INVALID),
                    ("C_VerifyInit", f.C_VerifyInit.unwrap()(s, &mut ecdsa(), bogus), CKR_KEY_HANDLE_INVALID),
                ]
            };
            for (name, got, want) in rv {
                check(got, want, &format!("{name}(object {bogus:#x})"));
            }
        }
        assert_eq!(t.count_all(), before, "nothing changed");
        report("BAD-INPUT object handles that do not exist: 24 cases, objects unchanged");
    }
}
