//! Session management (PKCS#11 3.1 §5.6).

use super::slot::pin_arg;
use super::{entry, input, put};
use crate::error::{Error, Result};
use crate::token::{self, audit};
use cryptoki_sys::*;
use std::ffi::c_void;

/// C_OpenSession, PKCS#11 3.1 §5.6.1 (notification callbacks are never called).
#[no_mangle]
pub unsafe extern "C" fn C_OpenSession(
    slot_id: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    entry("C_OpenSession", || {
        let lib = token::library()?;
        if session.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        let h = lib.open_session(slot_id, flags)?;
        // SAFETY: `phSession` is not NULL (checked above) and, by §5.6.1, writable.
        unsafe { put(session, h) }
    })
}

/// C_CloseSession, PKCS#11 3.1 §5.6.2.
#[no_mangle]
pub unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_CloseSession", || {
        token::library()?.close_session(session)
    })
}

/// C_CloseAllSessions, PKCS#11 3.1 §5.6.3.
#[no_mangle]
pub unsafe extern "C" fn C_CloseAllSessions(slot_id: CK_SLOT_ID) -> CK_RV {
    entry("C_CloseAllSessions", || {
        token::library()?.close_all_sessions(slot_id)
    })
}

/// C_GetSessionInfo, PKCS#11 3.1 §5.6.4.
#[no_mangle]
pub unsafe extern "C" fn C_GetSessionInfo(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    entry("C_GetSessionInfo", || {
        let s = token::library()?.session(session)?;
        let flags = CKF_SERIAL_SESSION | if s.rw { CKF_RW_SESSION } else { 0 };
        let i = CK_SESSION_INFO {
            slotID: s.slot.id,
            state: s.state(),
            flags,
            ulDeviceError: 0,
        };
        // SAFETY: a non-NULL `pInfo` points to a writable `CK_SESSION_INFO`
        // (§5.6.4); `put` checks NULL.
        unsafe { put(info, i) }
    })
}

/// C_Login, PKCS#11 3.1 §5.6.8. A user PIN of the form "name:PIN", where a
/// principal of that name exists, logs in as that principal (local RBAC).
#[no_mangle]
pub unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    // SAFETY: a non-NULL `pPin` holds `ulPinLen` bytes (§5.6.8), as `login` needs.
    entry("C_Login", || unsafe {
        login(session, user, pin, pin_len, None)
    })
}

/// C_Login and C_LoginUser.
///
/// # Safety
/// `pin` is NULL or points to `pin_len` readable bytes.
unsafe fn login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *const CK_UTF8CHAR,
    pin_len: CK_ULONG,
    principal: Option<&str>,
) -> Result<()> {
    let lib = token::library()?;
    let s = lib.session(session)?;
    // SAFETY: this function's contract is `pin_arg`'s.
    let pin = unsafe { pin_arg(pin, pin_len) }?;
    audit::token_call(&s.slot, "Login", || lib.login(&s, user, pin, principal))
}

/// C_LoginUser, PKCS#11 3.0 §5.6.9: `CKU_USER` with a user name logs in as
/// that principal (an unknown name is `CKR_PIN_INCORRECT`, as a wrong PIN);
/// an empty name is C_Login; the SO has no name (`CKR_USER_TYPE_INVALID`).
#[no_mangle]
pub unsafe extern "C" fn C_LoginUser(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    name: *mut CK_UTF8CHAR,
    name_len: CK_ULONG,
) -> CK_RV {
    entry("C_LoginUser", || {
        // SAFETY: a non-NULL `pUsername` holds `ulUsernameLen` bytes (§5.6.9).
        let name = unsafe { input(name, name_len) }?;
        let name = std::str::from_utf8(name).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
        let principal = Some(name).filter(|n| !n.is_empty());
        // SAFETY: a non-NULL `pPin` holds `ulPinLen` bytes (§5.6.9), as `login` needs.
        unsafe { login(session, user, pin, pin_len, principal) }
    })
}

/// C_Logout, PKCS#11 3.1 §5.6.10.
#[no_mangle]
pub unsafe extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_Logout", || {
        let s = token::library()?.session(session)?;
        audit::token_call(&s.slot, "Logout", || s.slot.logout())
    })
}
