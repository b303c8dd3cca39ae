//! Slot and token management (PKCS#11 3.1 §5.5).

use super::general::library_version;
use super::{entry, input, pad, put, put_list};
use crate::engine::key::hex;
use crate::engine::mechanism::{lookup, REGISTRY};
use crate::error::{Error, Result};
use crate::token::{self, audit};
use cryptoki_sys::*;
use std::ffi::c_void;

/// C_GetSlotList, PKCS#11 3.1 §5.5.1: every configured slot has its token present.
#[no_mangle]
pub unsafe extern "C" fn C_GetSlotList(
    _token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    entry("C_GetSlotList", || {
        let lib = token::library()?;
        let ids: Vec<CK_SLOT_ID> = lib.slots.iter().map(|s| s.id).collect();
        // SAFETY: a non-NULL `pulCount` is a readable, writable `CK_ULONG` and a
        // non-NULL `pSlotList` holds `*pulCount` slot ids (§5.5.1); `put_list`
        // checks NULL and the room.
        unsafe { put_list(list, count, &ids) }
    })
}

/// C_GetSlotInfo, PKCS#11 3.1 §5.5.2.
#[no_mangle]
pub unsafe extern "C" fn C_GetSlotInfo(slot_id: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    entry("C_GetSlotInfo", || {
        let slot = token::library()?.slot(slot_id)?;
        let mut i = CK_SLOT_INFO {
            slotDescription: [0; 64],
            manufacturerID: [0; 32],
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: CK_VERSION { major: 0, minor: 0 },
            firmwareVersion: library_version(),
        };
        pad(
            &mut i.slotDescription,
            &format!("softmhsm slot {} ({})", slot.id, slot.config.dir.display()),
        );
        pad(&mut i.manufacturerID, "softmhsm");
        // SAFETY: a non-NULL `pInfo` points to a writable `CK_SLOT_INFO` (§5.5.2);
        // `put` checks NULL.
        unsafe { put(info, i) }
    })
}

/// C_GetTokenInfo, PKCS#11 3.1 §5.5.3: flags reflect the token's state now.
/// The label, the flags and the PIN counters are the store's, so this is a
/// call that needs it: on a PostgreSQL pool it opens the process's connection
/// if none is open, and a server that cannot be reached is
/// `CKR_DEVICE_ERROR` (logged, naming the server); `C_GetSlotList` and
/// `C_GetSlotInfo` never touch the store.
#[no_mangle]
pub unsafe extern "C" fn C_GetTokenInfo(slot_id: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    entry("C_GetTokenInfo", || {
        let lib = token::library()?;
        let slot = lib.slot(slot_id)?;
        if info.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        let rec = slot.record()?;
        let mut i = CK_TOKEN_INFO::default();
        pad(
            &mut i.label,
            rec.as_ref().map(|r| r.label.as_str()).unwrap_or(""),
        );
        pad(&mut i.manufacturerID, "softmhsm");
        pad(&mut i.model, "Managed HSM");
        pad(
            &mut i.serialNumber,
            &serial(&slot.config.store_path().to_string_lossy()),
        );
        i.flags = slot.token_flags()?;
        let sessions = lib.sessions_of(slot_id);
        i.ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
        i.ulSessionCount = sessions.len() as CK_ULONG;
        i.ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
        i.ulRwSessionCount = sessions.iter().filter(|s| s.rw).count() as CK_ULONG;
        i.ulMaxPinLen = *crate::engine::rules::PIN_LEN.end() as CK_ULONG;
        i.ulMinPinLen = *crate::engine::rules::PIN_LEN.start() as CK_ULONG;
        i.ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
        i.ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
        i.ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
        i.ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
        i.hardwareVersion = CK_VERSION { major: 0, minor: 0 };
        i.firmwareVersion = library_version();
        // The token has a clock: utcTime is meaningful (CKF_CLOCK_ON_TOKEN not claimed).
        pad(&mut i.utcTime, "");
        // SAFETY: `pInfo` is not NULL (checked above) and, by §5.5.3, points to a
        // writable `CK_TOKEN_INFO`.
        unsafe { put(info, i) }
    })
}

/// A stable 16-character serial number for a token, from its store path.
fn serial(path: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(path.as_bytes())[..8])
}

/// C_GetMechanismList, PKCS#11 3.1 §5.5.4.
#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismList(
    slot_id: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    entry("C_GetMechanismList", || {
        token::library()?.slot(slot_id)?;
        let mechs: Vec<CK_MECHANISM_TYPE> = REGISTRY.iter().map(|m| m.ty).collect();
        // SAFETY: a non-NULL `pulCount` is a readable, writable `CK_ULONG` and a
        // non-NULL `pMechanismList` holds `*pulCount` entries (§5.5.4);
        // `put_list` checks NULL and the room.
        unsafe { put_list(list, count, &mechs) }
    })
}

/// C_GetMechanismInfo, PKCS#11 3.1 §5.5.5.
#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slot_id: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    entry("C_GetMechanismInfo", || {
        token::library()?.slot(slot_id)?;
        let i = lookup(mech).ok_or(Error(CKR_MECHANISM_INVALID))?.info();
        // SAFETY: a non-NULL `pInfo` points to a writable `CK_MECHANISM_INFO`
        // (§5.5.5); `put` checks NULL.
        unsafe { put(info, i) }
    })
}

/// C_InitToken, PKCS#11 3.1 §5.5.6.
#[no_mangle]
pub unsafe extern "C" fn C_InitToken(
    slot_id: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    entry("C_InitToken", || {
        let lib = token::library()?;
        let slot = lib.slot(slot_id)?;
        if pin.is_null() || label.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: `pPin` is not NULL (checked above) and holds `ulPinLen` bytes
        // (§5.5.6); `input` checks the length.
        let pin = unsafe { input(pin, pin_len) }?;
        // SAFETY: `pLabel` is not NULL (checked above) and, by §5.5.6, points to
        // the 32-byte blank-padded label.
        let label = unsafe { std::slice::from_raw_parts(label, 32) };
        let label = std::str::from_utf8(label).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
        if !lib.sessions_of(slot_id).is_empty() {
            return Err(Error(CKR_SESSION_EXISTS));
        }
        audit::token_call(&slot, "TokenInit", || slot.init_token(pin, label))
    })
}

/// C_InitPIN, PKCS#11 3.1 §5.5.7.
#[no_mangle]
pub unsafe extern "C" fn C_InitPIN(
    session: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    entry("C_InitPIN", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pPin` holds `ulPinLen` bytes (§5.5.7); `pin_arg`
        // checks NULL and the length.
        let pin = unsafe { pin_arg(pin, pin_len) }?;
        if !s.rw {
            return Err(Error(CKR_SESSION_READ_ONLY));
        }
        audit::token_call(&s.slot, "PinInit", || s.slot.init_pin(pin))
    })
}

/// C_SetPIN, PKCS#11 3.1 §5.5.8.
#[no_mangle]
pub unsafe extern "C" fn C_SetPIN(
    session: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    entry("C_SetPIN", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pOldPin` holds `ulOldLen` bytes (§5.5.8); `pin_arg`
        // checks NULL and the length.
        let old = unsafe { pin_arg(old, old_len) }?;
        // SAFETY: likewise `pNewPin` holds `ulNewLen` bytes.
        let new = unsafe { pin_arg(new, new_len) }?;
        if !s.rw {
            return Err(Error(CKR_SESSION_READ_ONLY));
        }
        audit::token_call(&s.slot, "PinChange", || s.slot.set_pin(old, new))
    })
}

/// A PIN argument: softmhsm has no protected authentication path, so NULL is bad.
///
/// # Safety
/// As for [`input`]: `p` is NULL or points to `len` bytes readable for `'a`.
pub(crate) unsafe fn pin_arg<'a>(p: *const CK_UTF8CHAR, len: CK_ULONG) -> Result<&'a [u8]> {
    if p.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: this function's contract is `input`'s.
    unsafe { input(p, len) }
}

/// C_WaitForSlotEvent, PKCS#11 3.1 §5.5.9: slots never change while initialised.
#[no_mangle]
pub unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    slot: *mut CK_SLOT_ID,
    reserved: *mut c_void,
) -> CK_RV {
    entry("C_WaitForSlotEvent", || {
        token::library()?;
        if slot.is_null() || !reserved.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        if flags & CKF_DONT_BLOCK != 0 {
            return Err(Error(CKR_NO_EVENT));
        }
        Err(Error(CKR_FUNCTION_NOT_SUPPORTED))
    })
}
