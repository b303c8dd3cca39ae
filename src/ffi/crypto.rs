//! Cryptographic functions: encryption (§5.8–5.9), digests (§5.10), signatures
//! (§5.11–5.12, and PKCS#11 3.2's C_VerifySignature*) and the dual-function
//! calls (§5.13).

use super::{entry, input, mechanism, produce};
use crate::engine::key::KeyOps;
use crate::error::Result;
use crate::token::operation::Stage;
use crate::token::session::{Family, Session};
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
    entry("C_SignInit", || {
        let s = session(h)?;
        if mech.is_null() {
            return s.cancel(Family::Sign);
        }
        // SAFETY: `mechanism` checks NULL and the parameter length; by PKCS#11 a non-NULL `pMechanism` is a CK_MECHANISM.
        let m = unsafe { mechanism(mech) };
        audit::crypto(&s, "KeySign", key, m.as_ref().ok(), KeyOps::SIGN, || {
            s.sign_init(m.as_ref().map_err(|e| *e)?, key)
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
    entry("C_Sign", || {
        let s = session(h)?;
        s.operation_call(Family::Sign, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            let data = unsafe { input(data, len) }?;
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(sig, sig_len, |out| s.sign(data, out)) }
        })
    })
}

/// C_SignUpdate, PKCS#11 3.1 §5.11.3.
#[no_mangle]
pub unsafe extern "C" fn C_SignUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry("C_SignUpdate", || {
        let s = session(h)?;
        // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
        s.operation_call(Family::Sign, || s.sign_update(unsafe { input(part, len) }?))
    })
}

/// C_SignFinal, PKCS#11 3.1 §5.11.4.
#[no_mangle]
pub unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    entry("C_SignFinal", || {
        let s = session(h)?;
        s.operation_call(Family::Sign, || {
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(sig, sig_len, |out| s.sign_final(out)) }
        })
    })
}

/// C_VerifyInit, PKCS#11 3.1 §5.12.1.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_VerifyInit", || {
        let s = session(h)?;
        if mech.is_null() {
            return s.cancel(Family::Verify);
        }
        // SAFETY: `mechanism` checks NULL and the parameter length; by PKCS#11 a non-NULL `pMechanism` is a CK_MECHANISM.
        let m = unsafe { mechanism(mech) };
        audit::crypto(
            &s,
            "KeyVerify",
            key,
            m.as_ref().ok(),
            KeyOps::VERIFY,
            || s.verify_init(m.as_ref().map_err(|e| *e)?, key),
        )
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
    entry("C_Verify", || {
        let s = session(h)?;
        s.operation_call(Family::Verify, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            s.verify(unsafe { input(data, len) }?, unsafe {
                input(sig, sig_len)
            }?)
        })
    })
}

/// C_VerifyUpdate, PKCS#11 3.1 §5.12.3.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry("C_VerifyUpdate", || {
        let s = session(h)?;
        s.operation_call(Family::Verify, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            s.verify_update(unsafe { input(part, len) }?)
        })
    })
}

/// C_VerifyFinal, PKCS#11 3.1 §5.12.4.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    entry("C_VerifyFinal", || {
        let s = session(h)?;
        s.operation_call(Family::Verify, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            s.verify_final(unsafe { input(sig, sig_len) }?)
        })
    })
}

/// C_VerifySignatureInit, PKCS#11 3.2: a verification whose signature comes
/// now; a NULL `pMechanism` ends the active one. Audited as C_VerifyInit.
#[no_mangle]
pub unsafe extern "C" fn C_VerifySignatureInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    entry("C_VerifySignatureInit", || {
        let s = session(h)?;
        if mech.is_null() {
            return s.cancel(Family::VerifySignature);
        }
        // SAFETY: `mechanism` checks NULL and the parameter length; by PKCS#11 a non-NULL `pMechanism` is a CK_MECHANISM.
        let m = unsafe { mechanism(mech) };
        audit::crypto(
            &s,
            "KeyVerify",
            key,
            m.as_ref().ok(),
            KeyOps::VERIFY,
            || {
                // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
                let sig = unsafe { input(sig, sig_len) }?;
                s.verify_signature_init(m.as_ref().map_err(|e| *e)?, key, sig)
            },
        )
    })
}

/// C_VerifySignature, PKCS#11 3.2.
#[no_mangle]
pub unsafe extern "C" fn C_VerifySignature(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry("C_VerifySignature", || {
        let s = session(h)?;
        s.operation_call(Family::VerifySignature, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            s.verify_signature(unsafe { input(data, len) }?)
        })
    })
}

/// C_VerifySignatureUpdate, PKCS#11 3.2.
#[no_mangle]
pub unsafe extern "C" fn C_VerifySignatureUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry("C_VerifySignatureUpdate", || {
        let s = session(h)?;
        s.operation_call(Family::VerifySignature, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            s.verify_signature_update(unsafe { input(part, len) }?)
        })
    })
}

/// C_VerifySignatureFinal, PKCS#11 3.2.
#[no_mangle]
pub unsafe extern "C" fn C_VerifySignatureFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_VerifySignatureFinal", || {
        let s = session(h)?;
        s.operation_call(Family::VerifySignature, || s.verify_signature_final())
    })
}

/// C_DigestInit, PKCS#11 3.1 §5.10.1.
#[no_mangle]
pub unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM) -> CK_RV {
    entry("C_DigestInit", || {
        let s = session(h)?;
        if mech.is_null() {
            return s.cancel(Family::Digest);
        }
        // SAFETY: `mechanism` checks NULL and the parameter length; by PKCS#11 a non-NULL `pMechanism` is a CK_MECHANISM.
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
    entry("C_Digest", || {
        let s = session(h)?;
        s.operation_call(Family::Digest, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            let data = unsafe { input(data, len) }?;
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.digest(data, o)) }
        })
    })
}

/// C_DigestUpdate, PKCS#11 3.1 §5.10.3.
#[no_mangle]
pub unsafe extern "C" fn C_DigestUpdate(
    h: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    entry("C_DigestUpdate", || {
        let s = session(h)?;
        s.operation_call(Family::Digest, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            s.digest_update(unsafe { input(part, len) }?)
        })
    })
}

/// C_DigestFinal, PKCS#11 3.1 §5.10.5.
#[no_mangle]
pub unsafe extern "C" fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry("C_DigestFinal", || {
        let s = session(h)?;
        s.operation_call(Family::Digest, || {
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.digest_final(o)) }
        })
    })
}

/// The audit operation of a C_EncryptInit/C_DecryptInit: encryption
/// or the Managed HSM's wrapKey, decryption or its unwrapKey, as the session
/// decides from the mechanism and the key.
///
/// # Safety
/// `mech` points to a readable `CK_MECHANISM` (never NULL: a NULL one cancels first).
unsafe fn cipher_audit_name(
    s: &Session,
    mech: *const CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
    encrypt: bool,
) -> &'static str {
    let op = if encrypt {
        KeyOps::ENCRYPT
    } else {
        KeyOps::DECRYPT
    };
    // SAFETY: the caller passes a non-NULL `pMechanism` (a NULL one cancels
    // before any audit); read_unaligned, as `mechanism` reads it.
    let ty = unsafe { std::ptr::read_unaligned(mech) }.mechanism;
    s.cipher_audit_name(ty, key, op)
}

/// C_EncryptInit, PKCS#11 3.1 §5.8.1.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_EncryptInit", || {
        let s = session(h)?;
        if mech.is_null() {
            return s.cancel(Family::Encrypt);
        }
        // SAFETY: `mechanism` checks NULL and the parameter length; by PKCS#11 a non-NULL `pMechanism` is a CK_MECHANISM.
        let m = unsafe { mechanism(mech) };
        // SAFETY: `cipher_audit_name` reads the mechanism only through `mechanism`, which checks NULL and lengths.
        audit::crypto(
            &s,
            unsafe { cipher_audit_name(&s, mech, key, true) },
            key,
            m.as_ref().ok(),
            KeyOps::ENCRYPT,
            || s.encrypt_init(m.as_ref().map_err(|e| *e)?, key),
        )
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
    entry("C_Encrypt", || {
        let s = session(h)?;
        s.operation_call(Family::Encrypt, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            let data = unsafe { input(data, len) }?;
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.encrypt(data, o, Stage::Single)) }
        })
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
    entry("C_EncryptUpdate", || {
        let s = session(h)?;
        s.operation_call(Family::Encrypt, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            let part = unsafe { input(part, len) }?;
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.encrypt(part, o, Stage::Update)) }
        })
    })
}

/// C_EncryptFinal, PKCS#11 3.1 §5.8.4.
#[no_mangle]
pub unsafe extern "C" fn C_EncryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry("C_EncryptFinal", || {
        let s = session(h)?;
        s.operation_call(Family::Encrypt, || {
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.encrypt(&[], o, Stage::Final)) }
        })
    })
}

/// C_DecryptInit, PKCS#11 3.1 §5.9.1.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_DecryptInit", || {
        let s = session(h)?;
        if mech.is_null() {
            return s.cancel(Family::Decrypt);
        }
        // SAFETY: `mechanism` checks NULL and the parameter length; by PKCS#11 a non-NULL `pMechanism` is a CK_MECHANISM.
        let m = unsafe { mechanism(mech) };
        audit::crypto(
            &s,
            // SAFETY: `cipher_audit_name` reads the mechanism only through `mechanism`, which checks NULL and lengths.
            unsafe { cipher_audit_name(&s, mech, key, false) },
            key,
            m.as_ref().ok(),
            KeyOps::DECRYPT,
            || s.decrypt_init(m.as_ref().map_err(|e| *e)?, key),
        )
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
    entry("C_Decrypt", || {
        let s = session(h)?;
        s.operation_call(Family::Decrypt, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            let data = unsafe { input(data, len) }?;
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.decrypt(data, o, Stage::Single)) }
        })
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
    entry("C_DecryptUpdate", || {
        let s = session(h)?;
        s.operation_call(Family::Decrypt, || {
            // SAFETY: `input` checks NULL and the length; by PKCS#11 a non-NULL pointer holds the length given beside it.
            let part = unsafe { input(part, len) }?;
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.decrypt(part, o, Stage::Update)) }
        })
    })
}

/// C_DecryptFinal, PKCS#11 3.1 §5.9.4.
#[no_mangle]
pub unsafe extern "C" fn C_DecryptFinal(
    h: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry("C_DecryptFinal", || {
        let s = session(h)?;
        s.operation_call(Family::Decrypt, || {
            // SAFETY: `produce` checks the NULLs and the room; by PKCS#11 a non-NULL output buffer holds `*len` bytes.
            unsafe { produce(out, out_len, |o| s.decrypt(&[], o, Stage::Final)) }
        })
    })
}
