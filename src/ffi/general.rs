//! General-purpose functions (PKCS#11 3.1 §5.4) and random numbers (§5.15).

use super::{entry, input, pad, put};
use crate::crypto;
use crate::error::{Error, Result};
use crate::token;
use cryptoki_sys::*;
use std::ffi::c_void;

/// C_Initialize, PKCS#11 3.1 §5.4.1.
#[no_mangle]
pub unsafe extern "C" fn C_Initialize(init_args: *mut c_void) -> CK_RV {
    entry("C_Initialize", || {
        if !init_args.is_null() {
            // SAFETY: not NULL (checked above); a non-NULL `pInitArgs` points to a
            // `CK_C_INITIALIZE_ARGS` (§5.4.1).
            check_init_args(unsafe { &*(init_args as *const CK_C_INITIALIZE_ARGS) })?;
        }
        token::initialize()
    })
}

/// The locking rules of `CK_C_INITIALIZE_ARGS`: the four mutex callbacks come all
/// or none; softmhsm locks with the OS primitives, so callbacks without
/// `CKF_OS_LOCKING_OK` cannot be honoured (`CKR_CANT_LOCK`).
fn check_init_args(a: &CK_C_INITIALIZE_ARGS) -> Result<()> {
    if !a.pReserved.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    let given = [
        a.CreateMutex.is_some(),
        a.DestroyMutex.is_some(),
        a.LockMutex.is_some(),
        a.UnlockMutex.is_some(),
    ];
    if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
        return Err(Error(CKR_CANT_LOCK));
    }
    Ok(())
}

/// C_Finalize, PKCS#11 3.1 §5.4.2.
#[no_mangle]
pub unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    entry("C_Finalize", || {
        if !reserved.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        token::finalize()
    })
}

/// C_GetInfo, PKCS#11 3.1 §5.4.3.
#[no_mangle]
pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    entry("C_GetInfo", || {
        token::library()?;
        let mut i = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
            libraryVersion: library_version(),
            ..Default::default()
        };
        pad(&mut i.manufacturerID, "softmhsm");
        pad(&mut i.libraryDescription, "softmhsm Managed HSM token");
        // SAFETY: a non-NULL `pInfo` points to a writable `CK_INFO` (§5.4.3);
        // `put` checks NULL.
        unsafe { put(info, i) }
    })
}

/// The crate version as a `CK_VERSION`.
pub fn library_version() -> CK_VERSION {
    let num = |s: &str| s.parse::<u8>().unwrap_or(0);
    CK_VERSION {
        major: num(env!("CARGO_PKG_VERSION_MAJOR")),
        minor: num(env!("CARGO_PKG_VERSION_MINOR")) * 10
            + num(env!("CARGO_PKG_VERSION_PATCH")).min(9),
    }
}

/// C_GetFunctionList, PKCS#11 2.40 §5.4.4.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    // SAFETY: a non-NULL `ppFunctionList` points to a writable pointer (§5.4.4);
    // `put` checks NULL.
    entry("C_GetFunctionList", || unsafe {
        put(list, super::interface::function_list_2_40())
    })
}

/// C_GetFunctionStatus: a legacy function that "should simply return"
/// `CKR_FUNCTION_NOT_PARALLEL` (§5.20), whatever the session.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionStatus(_session: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_GetFunctionStatus", || {
        token::library()?;
        Err(Error(CKR_FUNCTION_NOT_PARALLEL))
    })
}

/// C_CancelFunction: a legacy function that "should simply return"
/// `CKR_FUNCTION_NOT_PARALLEL` (§5.20), whatever the session.
#[no_mangle]
pub unsafe extern "C" fn C_CancelFunction(_session: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_CancelFunction", || {
        token::library()?;
        Err(Error(CKR_FUNCTION_NOT_PARALLEL))
    })
}

/// C_GenerateRandom, PKCS#11 3.1 §5.15.2.
#[no_mangle]
pub unsafe extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry("C_GenerateRandom", || {
        token::library()?.session(session)?;
        let n = usize::try_from(len).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
        if n == 0 {
            return Ok(());
        }
        if out.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: `out` is not NULL (checked above); the caller guarantees `len`
        // writable bytes behind it (§5.15.2).
        crypto::provider().random(unsafe { std::slice::from_raw_parts_mut(out, n) })
    })
}

/// C_SeedRandom, PKCS#11 3.1 §5.15.1: the token's generator is the operating
/// system's CSPRNG, which takes no seed.
#[no_mangle]
pub unsafe extern "C" fn C_SeedRandom(
    session: CK_SESSION_HANDLE,
    seed: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry("C_SeedRandom", || {
        token::library()?.session(session)?;
        // SAFETY: the caller guarantees `pSeed` holds `ulSeedLen` bytes (§5.15.1);
        // `input` refuses NULL with a non-zero length.
        unsafe { input(seed, len) }?;
        Err(Error(CKR_RANDOM_SEED_NOT_SUPPORTED))
    })
}
