//! Object management (PKCS#11 3.1 §5.7).

use super::{entry, put, template};
use crate::engine::policy::{self, AttrValue};
use crate::error::{Error, Result};
use crate::pool::access::DataAction;
use crate::token::{self, audit, objects::handle, slot::LoggedIn};
use cryptoki_sys::*;

/// C_CreateObject, PKCS#11 3.1 §5.7.1: certificates, data objects, AES, RSA
/// and EC private key import, RSA and EC session public keys.
#[no_mangle]
pub unsafe extern "C" fn C_CreateObject(
    session: CK_SESSION_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_CreateObject", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pTemplate` holds `ulCount` attributes (§5.7);
        // `template` checks NULL and every value's length.
        let t = unsafe { template(tmpl, count) }?;
        if object.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        let class = t
            .get_ulong(CKA_CLASS)?
            .ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
        let (token, rec, secret) = match class {
            CKO_CERTIFICATE | CKO_DATA => {
                let (token, rec) = policy::stored_object(&t)?;
                (token, rec, None)
            }
            CKO_SECRET_KEY | CKO_PRIVATE_KEY => {
                let e = audit::key_made(&s.slot, "KeyImport", || s.create_key(&t))?;
                // SAFETY: `phObject` is not NULL (checked above) and, by
                // §5.7.1, writable.
                return unsafe { put(object, handle(e.id, policy::Part::Main)) };
            }
            // Session public keys only: a Managed HSM has no public-only keys
            // (policy::public_key_request says which code a token one gets).
            CKO_PUBLIC_KEY => {
                let e = audit::key_made(&s.slot, "KeyImport", || s.import_public(&t))?;
                // SAFETY: `put` checks NULL; by PKCS#11 a non-NULL handle pointer is writable.
                return unsafe { put(object, handle(e.id, policy::Part::Public)) };
            }
            _ => return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)),
        };
        if token && !s.rw {
            return Err(Error(CKR_SESSION_READ_ONLY));
        }
        let private = policy::is_private(&rec, policy::Part::Main);
        if private && s.slot.state().login != LoggedIn::User {
            return Err(Error(CKR_USER_NOT_LOGGED_IN));
        }
        let e = s.slot.add(&s, token, rec, secret, DataAction::KeysImport)?;
        // SAFETY: `phObject` is not NULL (checked above) and, by §5.7.1, writable.
        unsafe { put(object, handle(e.id, policy::Part::Main)) }
    })
}

/// C_CopyObject, PKCS#11 3.1 §5.7.2: no softmhsm object is copyable (`CKA_COPYABLE` = FALSE).
#[no_mangle]
pub unsafe extern "C" fn C_CopyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    new: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_CopyObject", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pTemplate` holds `ulCount` attributes (§5.7);
        // `template` checks NULL and every value's length.
        unsafe { template(tmpl, count) }?;
        if new.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        s.object(object)?;
        Err(Error(CKR_ACTION_PROHIBITED))
    })
}

/// C_DestroyObject, PKCS#11 3.1 §5.7.3.
#[no_mangle]
pub unsafe extern "C" fn C_DestroyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_DestroyObject", || {
        let s = token::library()?.session(session)?;
        let (e, part) = s.object(object)?;
        s.check_writable(&e, part)?;
        audit::key_changed(&s.slot, "KeyDelete", &e, || s.slot.destroy(&e, part))
    })
}

/// C_GetObjectSize, PKCS#11 3.1 §5.7.4: the bytes the object takes in the store.
#[no_mangle]
pub unsafe extern "C" fn C_GetObjectSize(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> CK_RV {
    entry("C_GetObjectSize", || {
        let s = token::library()?.session(session)?;
        let (e, _) = s.object(object)?;
        let n = e.rec.to_json()?.len() + e.sealed.as_ref().map_or(0, Vec::len);
        // SAFETY: a non-NULL `pulSize` points to a writable `CK_ULONG` (§5.7.4);
        // `put` checks NULL.
        unsafe { put(size, n as CK_ULONG) }
    })
}

/// C_GetAttributeValue, PKCS#11 3.1 §5.7.5: every attribute is processed; the
/// return code reports the last problem met (sensitive, invalid type, short buffer).
#[no_mangle]
pub unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    entry("C_GetAttributeValue", || {
        let s = token::library()?.session(session)?;
        let (e, part) = s.object(object)?;
        let n = usize::try_from(count).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
        if n == 0 {
            return Ok(());
        }
        if tmpl.is_null() {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: `pTemplate` is not NULL and `n` is not 0 (checked above); by
        // §5.7.5 it holds `ulCount` attributes whose lengths the call updates.
        let attrs = unsafe { std::slice::from_raw_parts_mut(tmpl, n) };
        let mut result: Result<()> = Ok(());
        for a in attrs {
            match s.slot.attribute(&e, part, a.type_) {
                AttrValue::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(Error(CKR_ATTRIBUTE_SENSITIVE));
                }
                AttrValue::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(Error(CKR_ATTRIBUTE_TYPE_INVALID));
                }
                AttrValue::Value(v) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else if (a.ulValueLen as usize) >= v.len() {
                        // SAFETY: `pValue` is not NULL and the caller declared
                        // `ulValueLen` >= `v.len()` writable bytes behind it
                        // (both checked above); `v` is our own memory.
                        unsafe {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len())
                        };
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        result = Err(Error(CKR_BUFFER_TOO_SMALL));
                    }
                }
            }
        }
        result
    })
}

/// C_SetAttributeValue, PKCS#11 3.1 §5.7.6: all attributes or none.
#[no_mangle]
pub unsafe extern "C" fn C_SetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    entry("C_SetAttributeValue", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pTemplate` holds `ulCount` attributes (§5.7);
        // `template` checks NULL and every value's length.
        let t = unsafe { template(tmpl, count) }?;
        let (e, part) = s.object(object)?;
        s.check_writable(&e, part)?;
        audit::key_changed(&s.slot, "KeyUpdate", &e, || {
            s.slot.update(&e, policy::set_attributes(&e.rec, part, &t)?)
        })
    })
}

/// C_FindObjectsInit, PKCS#11 3.1 §5.7.7.
#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    tmpl: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    entry("C_FindObjectsInit", || {
        let s = token::library()?.session(session)?;
        // SAFETY: a non-NULL `pTemplate` holds `ulCount` attributes (§5.7);
        // `template` checks NULL and every value's length.
        let t = unsafe { template(tmpl, count) }?;
        s.find_init(&t)
    })
}

/// C_FindObjects, PKCS#11 3.1 §5.7.8.
#[no_mangle]
pub unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    out: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    entry("C_FindObjects", || {
        let s = token::library()?.session(session)?;
        if count.is_null() || (out.is_null() && max > 0) {
            return Err(Error(CKR_ARGUMENTS_BAD));
        }
        let max = usize::try_from(max).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
        let found = s.find_next(max)?;
        if !found.is_empty() {
            // SAFETY: `found` is not empty, so `max` > 0 and `phObject` is not
            // NULL (checked above); by §5.7.8 it has room for `ulMaxObjectCount`
            // handles, and `find_next` gives at most `max`.
            unsafe { std::ptr::copy_nonoverlapping(found.as_ptr(), out, found.len()) };
        }
        // SAFETY: `pulObjectCount` is not NULL (checked above) and, by §5.7.8,
        // writable.
        unsafe { put(count, found.len() as CK_ULONG) }
    })
}

/// C_FindObjectsFinal, PKCS#11 3.1 §5.7.9.
#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_FindObjectsFinal", || {
        token::library()?.session(session)?.find_final()
    })
}
