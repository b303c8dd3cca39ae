//! Functions of the 2.40, 3.0 and 3.2 tables that a Managed HSM has no use for.
//! PKCS#11 §5.1: the stub of an unsupported function "should simply return"
//! `CKR_FUNCTION_NOT_SUPPORTED` — so after the library check nothing else is
//! examined, not even the session handle.

use crate::token;
use cryptoki_sys::*;
use std::ffi::c_void;

macro_rules! not_supported {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[doc = concat!(stringify!($name), ": not supported by softmhsm.")]
        #[no_mangle]
        pub unsafe extern "C" fn $name($(_: $ty),*) -> CK_RV {
            $(let _ = stringify!($arg);)*
            super::entry(stringify!($name), || {
                token::library()?;
                Err(crate::error::Error(CKR_FUNCTION_NOT_SUPPORTED))
            })
        }
    )*};
}

not_supported! {
    // Operation state holds references to parsed keys: it is not exportable.
    C_GetOperationState(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: *mut CK_ULONG);
    C_SetOperationState(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: CK_ULONG, c: CK_OBJECT_HANDLE, d: CK_OBJECT_HANDLE);
    C_SessionCancel(s: CK_SESSION_HANDLE, f: CK_FLAGS);
    // Key values are never digested: no export, even as a hash.
    C_DigestKey(s: CK_SESSION_HANDLE, k: CK_OBJECT_HANDLE);
    // A Managed HSM has no signature with message recovery.
    C_SignRecoverInit(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    C_SignRecover(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_VerifyRecoverInit(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    C_VerifyRecover(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DigestEncryptUpdate(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DecryptDigestUpdate(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_SignEncryptUpdate(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_DecryptVerifyUpdate(s: CK_SESSION_HANDLE, a: *mut CK_BYTE, b: CK_ULONG, c: *mut CK_BYTE, d: *mut CK_ULONG);
    C_MessageEncryptInit(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    C_EncryptMessage(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    C_EncryptMessageBegin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG);
    C_EncryptMessageNext(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG, f: CK_FLAGS);
    C_MessageEncryptFinal(s: CK_SESSION_HANDLE);
    C_MessageDecryptInit(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    C_DecryptMessage(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    C_DecryptMessageBegin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG);
    C_DecryptMessageNext(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG, f: CK_FLAGS);
    C_MessageDecryptFinal(s: CK_SESSION_HANDLE);
    C_MessageSignInit(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    C_SignMessage(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    C_SignMessageBegin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG);
    C_SignMessageNext(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    C_MessageSignFinal(s: CK_SESSION_HANDLE);
    C_MessageVerifyInit(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    C_VerifyMessage(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: CK_ULONG);
    C_VerifyMessageBegin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG);
    C_VerifyMessageNext(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG, o: *mut CK_BYTE, ol: CK_ULONG);
    C_MessageVerifyFinal(s: CK_SESSION_HANDLE);
    C_GetSessionValidationFlags(s: CK_SESSION_HANDLE, t: CK_SESSION_VALIDATION_FLAGS_TYPE, f: *mut CK_FLAGS);
    C_AsyncComplete(s: CK_SESSION_HANDLE, n: *mut CK_UTF8CHAR, d: *mut CK_ASYNC_DATA);
    C_AsyncGetID(s: CK_SESSION_HANDLE, n: *mut CK_UTF8CHAR, i: *mut CK_ULONG);
    C_AsyncJoin(s: CK_SESSION_HANDLE, n: *mut CK_UTF8CHAR, i: CK_ULONG, d: *mut CK_BYTE, dl: CK_ULONG);
    C_WrapKeyAuthenticated(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, w: CK_OBJECT_HANDLE, k: CK_OBJECT_HANDLE, a: *mut CK_BYTE, al: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    C_UnwrapKeyAuthenticated(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, u: CK_OBJECT_HANDLE, w: *mut CK_BYTE, wl: CK_ULONG, t: *mut CK_ATTRIBUTE, tl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG, h: *mut CK_OBJECT_HANDLE);
}
