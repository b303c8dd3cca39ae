//! Key management (PKCS#11 3.1 §5.14).

use super::{entry, input, mechanism, output, produce, put, template};
use crate::engine::key::KeyOps;
use crate::engine::mechanism::expect_no_param;
use crate::engine::policy::Part;
use crate::error::{Error, Result};
use crate::token::{self, audit, objects::handle};
use cryptoki_sys::*;

/// C_GenerateKey, PKCS#11 3.1 §5.14.1: AES keys.
#[no_mangle]
pub unsafe extern "C" fn C_GenerateKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_GenerateKey", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pMechanism` points to a `CK_MECHANISM` with its
        // parameter (§5.14); `mechanism` checks NULL and the parameter length.
        let m = unsafe { mechanism(mech) }?;
        // SAFETY: a non-NULL `pTemplate` holds `ulCount` attributes (§5.14);
        // `template` checks NULL and every value's length.
        let t = unsafe { template(tmpl, count) }?;
        if key.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        if !crate::engine::mechanism::generates(m.ty, false) {
            return Err(Error(CKR_MECHANISM_INVALID));
        }
        expect_no_param(&m)?;
        let e = audit::key_made(&s.slot, "KeyCreate", || s.slot.generate(&s, m.ty, None, &t))?;
        // SAFETY: `phKey` is not NULL (checked above) and, by §5.14.1, writable.
        unsafe { put(key, handle(e.id, Part::Main)) }
    })
}

/// C_GenerateKeyPair, PKCS#11 3.1 §5.14.2: RSA and EC key pairs.
#[no_mangle]
pub unsafe extern "C" fn C_GenerateKeyPair(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    pub_tmpl: *mut CK_ATTRIBUTE,
    pub_count: CK_ULONG,
    priv_tmpl: *mut CK_ATTRIBUTE,
    priv_count: CK_ULONG,
    pub_key: *mut CK_OBJECT_HANDLE,
    priv_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_GenerateKeyPair", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pMechanism` points to a `CK_MECHANISM` with its
        // parameter (§5.14); `mechanism` checks NULL and the parameter length.
        let m = unsafe { mechanism(mech) }?;
        // SAFETY: a non-NULL `pPublicKeyTemplate` holds `ulPublicKeyAttributeCount`
        // attributes (§5.14.2); `template` checks NULL and every value's length.
        let public = unsafe { template(pub_tmpl, pub_count) }?;
        // SAFETY: likewise for the private key template.
        let private = unsafe { template(priv_tmpl, priv_count) }?;
        if pub_key.is_null() || priv_key.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        if !crate::engine::mechanism::generates(m.ty, true) {
            return Err(Error(CKR_MECHANISM_INVALID));
        }
        expect_no_param(&m)?;
        let e = audit::key_made(&s.slot, "KeyCreate", || {
            s.slot.generate(&s, m.ty, Some(&public), &private)
        })?;
        // SAFETY: `phPublicKey` is not NULL (checked above) and, by §5.14.2, writable.
        unsafe { put(pub_key, handle(e.id, Part::Public)) }?;
        // SAFETY: `phPrivateKey` is not NULL (checked above) and, by §5.14.2, writable.
        unsafe { put(priv_key, handle(e.id, Part::Main)) }
    })
}

/// C_WrapKey, PKCS#11 3.1 §5.14.3: every check in order, then
/// `CKR_KEY_UNEXTRACTABLE` (no softmhsm key leaves the token).
#[no_mangle]
pub unsafe extern "C" fn C_WrapKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut CK_BYTE,
    len: *mut CK_ULONG,
) -> CK_RV {
    entry("C_WrapKey", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pMechanism` points to a `CK_MECHANISM` with its
        // parameter (§5.14); `mechanism` checks NULL and the parameter length.
        let m = unsafe { mechanism(mech) }?;
        // SAFETY: a non-NULL `pulWrappedKeyLen` is a readable `CK_ULONG` and a
        // non-NULL `pWrappedKey` holds that many bytes (§5.14.3); `output`
        // checks NULL.
        unsafe { output(out, len) }?;
        audit::crypto(&s, "KeyWrap", wrapping, Some(&m), KeyOps::WRAP, || {
            s.wrap_key(&m, wrapping, key)
        })
        .map(|_| ())
    })
}

/// C_UnwrapKey, PKCS#11 3.1 §5.14.4: AES secret keys and PKCS#8 RSA/EC private keys.
#[no_mangle]
pub unsafe extern "C" fn C_UnwrapKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    len: CK_ULONG,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_UnwrapKey", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pMechanism` points to a `CK_MECHANISM` with its
        // parameter (§5.14); `mechanism` checks NULL and the parameter length.
        let m = unsafe { mechanism(mech) }?;
        // SAFETY: a non-NULL `pWrappedKey` holds `ulWrappedKeyLen` bytes
        // (§5.14.4); `input` checks NULL and the length.
        let wrapped = unsafe { input(wrapped, len) }?;
        // SAFETY: a non-NULL `pTemplate` holds `ulCount` attributes (§5.14);
        // `template` checks NULL and every value's length.
        let t = unsafe { template(tmpl, count) }?;
        if key.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        let e = audit::key_made(&s.slot, "KeyImport", || {
            s.unwrap_key(&m, unwrapping, wrapped, &t)
        })?;
        // SAFETY: `phKey` is not NULL (checked above) and, by §5.14.4, writable.
        unsafe { put(key, handle(e.id, Part::Main)) }
    })
}

/// C_DeriveKey, PKCS#11 3.1 §5.14.5: a Managed HSM derives no keys.
#[no_mangle]
pub unsafe extern "C" fn C_DeriveKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    _base: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_DeriveKey", || {
        token::library()?.session(session)?;
        // SAFETY: a non-NULL `pMechanism` points to a `CK_MECHANISM` with its
        // parameter (§5.14); `mechanism` checks NULL and the parameter length.
        unsafe { mechanism(mech) }?;
        // SAFETY: a non-NULL `pTemplate` holds `ulCount` attributes (§5.14);
        // `template` checks NULL and every value's length.
        unsafe { template(tmpl, count) }?;
        if key.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        no_mechanism()
    })
}

fn no_mechanism() -> Result<()> {
    Err(Error(CKR_MECHANISM_INVALID))
}

/// C_EncapsulateKey, PKCS#11 3.2 §5.18.1: ML-KEM encapsulation to a public
/// key; the shared secret becomes a new AES key from `pTemplate`. A length
/// query (`pCiphertext` NULL) or a short buffer makes no key.
#[no_mangle]
pub unsafe extern "C" fn C_EncapsulateKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    public: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    ciphertext: *mut CK_BYTE,
    len: *mut CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_EncapsulateKey", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pMechanism` points to a `CK_MECHANISM` with its
        // parameter (§5.18); `mechanism` checks NULL and the parameter length.
        let m = unsafe { mechanism(mech) }?;
        // SAFETY: a non-NULL `pTemplate` holds `ulAttributeCount` attributes;
        // `template` checks NULL and every value's length.
        let t = unsafe { template(tmpl, count) }?;
        if key.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        let mut made = None;
        // SAFETY: a non-NULL `pulCiphertextLen` is a readable and writable
        // `CK_ULONG` and a non-NULL `pCiphertext` holds that many bytes
        // (§5.18.1); `produce` checks NULL.
        unsafe {
            produce(ciphertext, len, |out| {
                if out.is_none() {
                    return s.encapsulate_key(&m, public, &t, None).map(|(n, _)| n);
                }
                let mut n = 0;
                let e = audit::key_made(&s.slot, "KeyEncapsulate", || {
                    let (written, e) = s.encapsulate_key(&m, public, &t, out)?;
                    n = written;
                    e.ok_or(Error(CKR_GENERAL_ERROR))
                })?;
                made = Some(e);
                Ok(n)
            })
        }?;
        match made {
            // SAFETY: `phKey` is not NULL (checked above) and, by §5.18.1, writable.
            Some(e) => unsafe { put(key, handle(e.id, Part::Main)) },
            None => Ok(()),
        }
    })
}

/// C_DecapsulateKey, PKCS#11 3.2 §5.18.2: ML-KEM decapsulation with a
/// private key into a new AES key from `pTemplate`.
#[no_mangle]
pub unsafe extern "C" fn C_DecapsulateKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    private: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    ciphertext: *mut CK_BYTE,
    len: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_DecapsulateKey", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pMechanism` points to a `CK_MECHANISM` with its
        // parameter (§5.18); `mechanism` checks NULL and the parameter length.
        let m = unsafe { mechanism(mech) }?;
        // SAFETY: a non-NULL `pTemplate` holds `ulAttributeCount` attributes;
        // `template` checks NULL and every value's length.
        let t = unsafe { template(tmpl, count) }?;
        // SAFETY: a non-NULL `pCiphertext` holds `ulCiphertextLen` bytes
        // (§5.18.2); `input` checks NULL and the length.
        let ct = unsafe { input(ciphertext, len) }?;
        if key.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        let e = audit::key_made(&s.slot, "KeyDecapsulate", || {
            s.decapsulate_key(&m, private, &t, ct)
        })?;
        // SAFETY: `phKey` is not NULL (checked above) and, by §5.18.2, writable.
        unsafe { put(key, handle(e.id, Part::Main)) }
    })
}
