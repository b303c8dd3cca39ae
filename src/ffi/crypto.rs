//! Cryptographic functions: encryption (§5.8–5.9), digests (§5.10), signatures
//! (§5.11–5.12) and the dual-function calls (§5.13).

use super::{entry, input, mechanism, produce};
use crate::error::Result;
use crate::token::operation::Stage;
use crate::token::session::Session;
use crate::token::{self, audit};
use cryptoki_sys::*;
use std::sync::Arc;

fn session(h: CK_SESSION_HANDLE) -> Result<Arc<Session>> {
    token::library()?.session(h)
}

/// C_SignInit, PKCS#11 3.1 §5.11.1.
#[no_mangle]
pub unsafe extern "C" fn C_SignInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        audit::refused(&s, "KeySign", key, || {
            // SAFETY: by PKCS#11, `mech` is a CK_MECHANISM; `mechanism` checks NULL and lengths.
            s.sign_init(&unsafe { mechanism(mech) }?, key)
        })
    })
}

/// C_Sign, PKCS#11 3.1 §5.11.2.
#[no_mangle]
pub unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `data` holds `len` bytes; `input` checks NULL and the length.
        let data = unsafe { input(data, len) }?;
        // SAFETY: by PKCS#11, `sig` holds `*sig_len` bytes; `produce` checks the NULLs.
        unsafe { produce(sig, sig_len, |out| s.sign(data, out)) }
    })
}

/// C_SignUpdate, PKCS#11 3.1 §5.11.3.
#[no_mangle]
pub unsafe extern "C" fn C_SignUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `part` holds `len` bytes; `input` checks NULL and the length.
        s.sign_update(unsafe { input(part, len) }?)
    })
}

/// C_SignFinal, PKCS#11 3.1 §5.11.4.
#[no_mangle]
pub unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `sig` holds `*sig_len` bytes; `produce` checks the NULLs.
        unsafe { produce(sig, sig_len, |out| s.sign_final(out)) }
    })
}

/// C_VerifyInit, PKCS#11 3.1 §5.12.1.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        audit::refused(&s, "KeyVerify", key, || {
            // SAFETY: by PKCS#11, `mech` is a CK_MECHANISM; `mechanism` checks NULL and lengths.
            s.verify_init(&unsafe { mechanism(mech) }?, key)
        })
    })
}

/// C_Verify, PKCS#11 3.1 §5.12.2.
#[no_mangle]
pub unsafe extern "C" fn C_Verify(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `data` holds `len` bytes; `input` checks NULL and the length.
        let data = unsafe { input(data, len) }?;
        // SAFETY: by PKCS#11, `sig` holds `sig_len` bytes; `input` checks NULL and the length.
        s.verify(data, unsafe { input(sig, sig_len) }?)
    })
}

/// C_VerifyUpdate, PKCS#11 3.1 §5.12.3.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `part` holds `len` bytes; `input` checks NULL and the length.
        s.verify_update(unsafe { input(part, len) }?)
    })
}

/// C_VerifyFinal, PKCS#11 3.1 §5.12.4.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `sig` holds `sig_len` bytes; `input` checks NULL and the length.
        s.verify_final(unsafe { input(sig, sig_len) }?)
    })
}

/// C_DigestInit, PKCS#11 3.1 §5.10.1.
#[no_mangle]
pub unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `mech` is a CK_MECHANISM; `mechanism` checks NULL and lengths.
        s.digest_init(&unsafe { mechanism(mech) }?)
    })
}

/// C_Digest, PKCS#11 3.1 §5.10.2.
#[no_mangle]
pub unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `data` holds `len` bytes; `input` checks NULL and the length.
        let data = unsafe { input(data, len) }?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.digest(data, o)) }
    })
}

/// C_DigestUpdate, PKCS#11 3.1 §5.10.3.
#[no_mangle]
pub unsafe extern "C" fn C_DigestUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `part` holds `len` bytes; `input` checks NULL and the length.
        s.digest_update(unsafe { input(part, len) }?)
    })
}

/// C_DigestFinal, PKCS#11 3.1 §5.10.5.
#[no_mangle]
pub unsafe extern "C" fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.digest_final(o)) }
    })
}

/// The audit operation of a refused C_EncryptInit/C_DecryptInit: AES-KW/KWP
/// encryption is the Managed HSM's wrapKey, decryption its unwrapKey.
///
/// # Safety
/// `mech` is null or points to a readable `CK_MECHANISM`.
unsafe fn cipher_audit_name(mech: *const CK_MECHANISM, encrypt: bool) -> &'static str {
    // SAFETY: `mech` is not NULL (checked first); the caller guarantees it readable.
    let key_wrap = !mech.is_null()
        && matches!(
            unsafe { std::ptr::read_unaligned(mech) }.mechanism,
            CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_KWP
        );
    match (key_wrap, encrypt) {
        (true, true) => "KeyWrap",
        (true, false) => "KeyUnwrap",
        (false, true) => "KeyEncrypt",
        (false, false) => "KeyDecrypt",
    }
}

/// C_EncryptInit, PKCS#11 3.1 §5.8.1.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `mech` is NULL or a CK_MECHANISM; the name checks NULL.
        audit::refused(&s, unsafe { cipher_audit_name(mech, true) }, key, || {
            // SAFETY: by PKCS#11, `mech` is a CK_MECHANISM; `mechanism` checks NULL and lengths.
            s.encrypt_init(&unsafe { mechanism(mech) }?, key)
        })
    })
}

/// C_Encrypt, PKCS#11 3.1 §5.8.2.
#[no_mangle]
pub unsafe extern "C" fn C_Encrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `data` holds `len` bytes; `input` checks NULL and the length.
        let data = unsafe { input(data, len) }?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.encrypt(data, o, Stage::Single)) }
    })
}

/// C_EncryptUpdate, PKCS#11 3.1 §5.8.3.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `part` holds `len` bytes; `input` checks NULL and the length.
        let part = unsafe { input(part, len) }?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.encrypt(part, o, Stage::Update)) }
    })
}

/// C_EncryptFinal, PKCS#11 3.1 §5.8.4.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.encrypt(&[], o, Stage::Final)) }
    })
}

/// C_DecryptInit, PKCS#11 3.1 §5.9.1.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `mech` is NULL or a CK_MECHANISM; the name checks NULL.
        audit::refused(&s, unsafe { cipher_audit_name(mech, false) }, key, || {
            // SAFETY: by PKCS#11, `mech` is a CK_MECHANISM; `mechanism` checks NULL and lengths.
            s.decrypt_init(&unsafe { mechanism(mech) }?, key)
        })
    })
}

/// C_Decrypt, PKCS#11 3.1 §5.9.2.
#[no_mangle]
pub unsafe extern "C" fn C_Decrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `data` holds `len` bytes; `input` checks NULL and the length.
        let data = unsafe { input(data, len) }?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.decrypt(data, o, Stage::Single)) }
    })
}

/// C_DecryptUpdate, PKCS#11 3.1 §5.9.3.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `part` holds `len` bytes; `input` checks NULL and the length.
        let part = unsafe { input(part, len) }?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.decrypt(part, o, Stage::Update)) }
    })
}

/// C_DecryptFinal, PKCS#11 3.1 §5.9.4.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry(|| {
        let s = session(h)?;
        // SAFETY: by PKCS#11, `out` holds `*out_len` bytes; `produce` checks the NULLs.
        unsafe { produce(out, out_len, |o| s.decrypt(&[], o, Stage::Final)) }
    })
}
