//! Bad arguments through the raw function list: NULL pointers, invalid
//! handles, calls out of order. Every refused call must leave state as it was.

#[macro_use]
mod common;

use std::ffi::CStr;
use std::ptr;

use common::*;
use cryptoki::session::SessionState;
use cryptoki_sys::*;

const BAD_SLOT: CK_SLOT_ID = 0x7fff_0000;

fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    }
}

/// Asserts the fixture's state survived a refused call.
#[track_caller]
fn assert_unchanged(t: &Token, objects_before: usize) {
    assert_eq!(
        t.count_all(),
        objects_before,
        "a refused call changed the object count"
    );
    let info = ok(t.session.get_session_info(), "C_GetSessionInfo");
    assert_eq!(
        info.session_state(),
        SessionState::RwUser,
        "a refused call changed the login state"
    );
}

p11_test! {
    fn calls_before_initialize_are_not_initialized() {
        let raw = Raw::load();
        let mut n: CK_ULONG = 0;
        check(unsafe { p11!(raw, C_GetSlotList, CK_FALSE, ptr::null_mut(), &mut n) }, CKR_CRYPTOKI_NOT_INITIALIZED, "C_GetSlotList before C_Initialize");
        let mut info = CK_INFO::default();
        check(unsafe { p11!(raw, C_GetInfo, &mut info) }, CKR_CRYPTOKI_NOT_INITIALIZED, "C_GetInfo before C_Initialize");
        let mut h: CK_SESSION_HANDLE = 0;
        check(unsafe { p11!(raw, C_OpenSession, 0, CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut h) }, CKR_CRYPTOKI_NOT_INITIALIZED, "C_OpenSession before C_Initialize");
        check(unsafe { p11!(raw, C_Finalize, ptr::null_mut()) }, CKR_CRYPTOKI_NOT_INITIALIZED, "C_Finalize before C_Initialize");
    }
}

p11_test! {
    fn double_initialize_is_already_initialized() {
        let raw = Raw::load();
        check(unsafe { p11!(raw, C_Initialize, ptr::null_mut()) }, CKR_OK, "C_Initialize");
        check(unsafe { p11!(raw, C_Initialize, ptr::null_mut()) }, CKR_CRYPTOKI_ALREADY_INITIALIZED, "second C_Initialize");
        check(unsafe { p11!(raw, C_Finalize, ptr::null_mut()) }, CKR_OK, "C_Finalize");
        check(unsafe { p11!(raw, C_Initialize, ptr::null_mut()) }, CKR_OK, "C_Initialize after C_Finalize");
        check(unsafe { p11!(raw, C_Finalize, ptr::null_mut()) }, CKR_OK, "C_Finalize");
    }
}

p11_test! {
    fn finalize_with_reserved_pointer_is_bad() {
        let raw = Raw::load();
        check(unsafe { p11!(raw, C_Initialize, ptr::null_mut()) }, CKR_OK, "C_Initialize");
        let mut junk = 0u8;
        check(unsafe { p11!(raw, C_Finalize, (&mut junk as *mut u8).cast()) }, CKR_ARGUMENTS_BAD, "C_Finalize with non-NULL pReserved");
        let mut info = CK_INFO::default();
        check(unsafe { p11!(raw, C_GetInfo, &mut info) }, CKR_OK, "C_GetInfo after a refused C_Finalize");
    }
}

p11_test! {
    fn get_slot_list_without_count_is_bad() {
        let _p = load_initialized();
        let raw = Raw::load();
        check(unsafe { p11!(raw, C_GetSlotList, CK_FALSE, ptr::null_mut(), ptr::null_mut()) }, CKR_ARGUMENTS_BAD, "C_GetSlotList with NULL pulCount");
        let mut info = CK_INFO::default();
        check(unsafe { p11!(raw, C_GetInfo, ptr::null_mut()) }, CKR_ARGUMENTS_BAD, "C_GetInfo with NULL pInfo");
        check(unsafe { p11!(raw, C_GetInfo, &mut info) }, CKR_OK, "C_GetInfo");
    }
}

p11_test! {
    fn get_slot_list_short_buffer_is_too_small() {
        let _p = load_initialized();
        let raw = Raw::load();
        let mut n: CK_ULONG = 0;
        check(unsafe { p11!(raw, C_GetSlotList, CK_FALSE, ptr::null_mut(), &mut n) }, CKR_OK, "C_GetSlotList length query");
        assert!(n >= 1, "at least one slot");
        let mut slots = vec![0 as CK_SLOT_ID; n as usize];
        let mut short: CK_ULONG = 0;
        check(unsafe { p11!(raw, C_GetSlotList, CK_FALSE, slots.as_mut_ptr(), &mut short) }, CKR_BUFFER_TOO_SMALL, "C_GetSlotList into a 0-entry buffer");
        assert_eq!(short, n, "C_GetSlotList must report the needed count");
    }
}

p11_test! {
    fn invalid_slot_is_refused() {
        let _p = load_initialized();
        let raw = Raw::load();
        let mut slot_info = CK_SLOT_INFO::default();
        check(unsafe { p11!(raw, C_GetSlotInfo, BAD_SLOT, &mut slot_info) }, CKR_SLOT_ID_INVALID, "C_GetSlotInfo(invalid slot)");
        let mut token_info = CK_TOKEN_INFO::default();
        check(unsafe { p11!(raw, C_GetTokenInfo, BAD_SLOT, &mut token_info) }, CKR_SLOT_ID_INVALID, "C_GetTokenInfo(invalid slot)");
        let mut h: CK_SESSION_HANDLE = 0;
        check(unsafe { p11!(raw, C_OpenSession, BAD_SLOT, CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut h) }, CKR_SLOT_ID_INVALID, "C_OpenSession(invalid slot)");
        let mut n: CK_ULONG = 0;
        check(unsafe { p11!(raw, C_GetMechanismList, BAD_SLOT, ptr::null_mut(), &mut n) }, CKR_SLOT_ID_INVALID, "C_GetMechanismList(invalid slot)");
    }
}

p11_test! {
    fn open_session_without_handle_pointer_is_bad() {
        let t = Token::fresh();
        let rv = unsafe { p11!(t.raw, C_OpenSession, t.slot.id() as CK_SLOT_ID, CKF_SERIAL_SESSION, ptr::null_mut(), None, ptr::null_mut()) };
        check(rv, CKR_ARGUMENTS_BAD, "C_OpenSession with NULL phSession");
        let mut info = CK_TOKEN_INFO::default();
        check(unsafe { p11!(t.raw, C_GetTokenInfo, t.slot.id() as CK_SLOT_ID, &mut info) }, CKR_OK, "C_GetTokenInfo");
        // ulSessionCount may be CK_UNAVAILABLE_INFORMATION (SoftHSMv2 does not count).
        if !is_softhsm() && info.ulSessionCount != CK_UNAVAILABLE_INFORMATION {
            assert_eq!(info.ulSessionCount, 1, "a refused C_OpenSession must not open a session");
        }
    }
}

p11_test! {
    fn get_attribute_value_without_template_is_bad() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let before = t.count_all();
        let rv = unsafe { p11!(t.raw, C_GetAttributeValue, t.h(), k.public.handle(), ptr::null_mut(), 2) };
        check(rv, CKR_ARGUMENTS_BAD, "C_GetAttributeValue with NULL pTemplate and ulCount 2");
        let rv = unsafe { p11!(t.raw, C_SetAttributeValue, t.h(), k.public.handle(), ptr::null_mut(), 1) };
        check(rv, CKR_ARGUMENTS_BAD, "C_SetAttributeValue with NULL pTemplate and ulCount 1");
        assert_unchanged(&t, before);
        assert_eq!(t.attr(k.public, CKA_LABEL, "CKA_LABEL"), b"ec", "CKA_LABEL unchanged");
    }
}

p11_test! {
    fn create_and_find_without_template_are_bad() {
        let t = Token::fresh();
        let before = t.count_all();
        let mut h: CK_OBJECT_HANDLE = 0;
        let rv = unsafe { p11!(t.raw, C_CreateObject, t.h(), ptr::null_mut(), 3, &mut h) };
        check(rv, CKR_ARGUMENTS_BAD, "C_CreateObject with NULL pTemplate");
        let rv = unsafe { p11!(t.raw, C_FindObjectsInit, t.h(), ptr::null_mut(), 1) };
        check(rv, CKR_ARGUMENTS_BAD, "C_FindObjectsInit with NULL pTemplate and ulCount 1");
        // The refused init must not leave a find operation active.
        check(unsafe { p11!(t.raw, C_FindObjectsInit, t.h(), ptr::null_mut(), 0) }, CKR_OK, "C_FindObjectsInit after a refused one");
        check(unsafe { p11!(t.raw, C_FindObjectsFinal, t.h()) }, CKR_OK, "C_FindObjectsFinal");
        assert_unchanged(&t, before);
    }
}

p11_test! {
    fn generate_without_mechanism_or_handle_pointer_is_bad() {
        let t = Token::fresh();
        let before = t.count_all();
        let mut key: CK_OBJECT_HANDLE = 0;
        let mut len = (32 as CK_ULONG).to_ne_bytes();
        let mut tpl = [raw_attr(CKA_VALUE_LEN, &mut len)];
        let rv = unsafe { p11!(t.raw, C_GenerateKey, t.h(), ptr::null_mut(), tpl.as_mut_ptr(), 1, &mut key) };
        check(rv, CKR_ARGUMENTS_BAD, "C_GenerateKey with NULL pMechanism");
        let mut m = mech(CKM_AES_KEY_GEN);
        let rv = unsafe { p11!(t.raw, C_GenerateKey, t.h(), &mut m, tpl.as_mut_ptr(), 1, ptr::null_mut()) };
        check(rv, CKR_ARGUMENTS_BAD, "C_GenerateKey with NULL phKey");
        let (mut pubk, mut privk) = (0, 0);
        let mut m = mech(CKM_EC_KEY_PAIR_GEN);
        let rv = unsafe { p11!(t.raw, C_GenerateKeyPair, t.h(), &mut m, ptr::null_mut(), 1, ptr::null_mut(), 1, &mut pubk, &mut privk) };
        check(rv, CKR_ARGUMENTS_BAD, "C_GenerateKeyPair with NULL templates");
        assert_unchanged(&t, before);
    }
}

p11_test! {
    fn sign_init_without_mechanism_ends_the_active_signature() {
        // PKCS#11 3.0 §5.11.1: "C_SignInit can be called with pMechanism set
        // to NULL_PTR to terminate an active signature operation."
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let mut m = mech(CKM_ECDSA);
        check(unsafe { p11!(t.raw, C_SignInit, t.h(), &mut m, k.private.handle()) }, CKR_OK, "C_SignInit");
        let rv = unsafe { p11!(t.raw, C_SignInit, t.h(), ptr::null_mut(), k.private.handle()) };
        check(rv, CKR_OK, "C_SignInit with NULL pMechanism ends the operation");
        let mut d = [7u8; 32];
        let mut sig = [0u8; 64];
        let mut len: CK_ULONG = 64;
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), d.as_mut_ptr(), 32, sig.as_mut_ptr(), &mut len) };
        check(rv, CKR_OPERATION_NOT_INITIALIZED, "C_Sign after the cancel");
        // With none active it ends nothing, and a new one starts as usual.
        let rv = unsafe { p11!(t.raw, C_SignInit, t.h(), ptr::null_mut(), k.private.handle()) };
        check(rv, CKR_OK, "C_SignInit with NULL pMechanism and no operation");
        check(unsafe { p11!(t.raw, C_SignInit, t.h(), &mut m, k.private.handle()) }, CKR_OK, "C_SignInit after the cancel");
    }
}

p11_test! {
    fn sign_without_length_pointer_is_bad() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let mut m = mech(CKM_ECDSA);
        check(unsafe { p11!(t.raw, C_SignInit, t.h(), &mut m, k.private.handle()) }, CKR_OK, "C_SignInit");
        let mut digest = [7u8; 32];
        let rv = unsafe { p11!(t.raw, C_Sign, t.h(), digest.as_mut_ptr(), 32, ptr::null_mut(), ptr::null_mut()) };
        check(rv, CKR_ARGUMENTS_BAD, "C_Sign with NULL pulSignatureLen");
    }
}

p11_test! {
    fn login_and_random_without_buffers_are_bad() {
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        let rv = unsafe { p11!(t.raw, C_Login, t.h(), CKU_USER, ptr::null_mut(), 4) };
        check(rv, CKR_ARGUMENTS_BAD, "C_Login with NULL pPin and ulPinLen 4");
        let info = ok(t.session.get_session_info(), "C_GetSessionInfo");
        assert_eq!(info.session_state(), SessionState::RwPublic, "a refused C_Login must not log in");
        let rv = unsafe { p11!(t.raw, C_GenerateRandom, t.h(), ptr::null_mut(), 16) };
        check(rv, CKR_ARGUMENTS_BAD, "C_GenerateRandom with NULL pRandomData");
    }
}

p11_test! {
    fn invalid_object_handle_is_refused() {
        let t = Token::fresh();
        let k = t.keypair(Kp::Ec(OID_P256), "ec");
        let before = t.count_all();
        let bad: CK_OBJECT_HANDLE = k.private.handle().max(k.public.handle()) + 1000;
        let mut label = [0u8; 8];
        let mut tpl = [raw_attr(CKA_LABEL, &mut label)];
        check(unsafe { p11!(t.raw, C_GetAttributeValue, t.h(), bad, tpl.as_mut_ptr(), 1) }, CKR_OBJECT_HANDLE_INVALID, "C_GetAttributeValue(invalid object)");
        check(unsafe { p11!(t.raw, C_DestroyObject, t.h(), bad) }, CKR_OBJECT_HANDLE_INVALID, "C_DestroyObject(invalid object)");
        let mut m = mech(CKM_ECDSA);
        // The spec names CKR_KEY_HANDLE_INVALID for *Init; SoftHSMv2 answers CKR_OBJECT_HANDLE_INVALID.
        let key_invalid = if is_softhsm() { CKR_OBJECT_HANDLE_INVALID } else { CKR_KEY_HANDLE_INVALID };
        check(unsafe { p11!(t.raw, C_SignInit, t.h(), &mut m, bad) }, key_invalid, "C_SignInit(invalid key)");
        check(unsafe { p11!(t.raw, C_VerifyInit, t.h(), &mut m, bad) }, key_invalid, "C_VerifyInit(invalid key)");
        check(unsafe { p11!(t.raw, C_DestroyObject, t.h(), 0) }, CKR_OBJECT_HANDLE_INVALID, "C_DestroyObject(CK_INVALID_HANDLE)");
        assert_unchanged(&t, before);
    }
}

p11_test! {
    fn default_interface_is_pkcs_11() {
        let raw = Raw::load();
        if raw.lib().C_GetInterface.is_err() {
            assert!(is_softhsm(), "softmhsm must export C_GetInterface");
            println!("SKIPPED on SoftHSMv2 2.6: no C_GetInterface");
            return;
        }
        let mut iface: *mut CK_INTERFACE = ptr::null_mut();
        check(unsafe { raw.lib().C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut iface, 0) }, CKR_OK, "C_GetInterface(NULL, NULL)");
        assert!(!iface.is_null(), "C_GetInterface returned no interface");
        let iface = unsafe { &*iface };
        let name = unsafe { CStr::from_ptr(iface.pInterfaceName as *const std::ffi::c_char) };
        assert_eq!(name.to_bytes(), b"PKCS 11", "default interface name");
        assert!(!iface.pFunctionList.is_null(), "default interface has no function list");
        let version = unsafe { (*(iface.pFunctionList as *const CK_FUNCTION_LIST)).version };
        assert!(version.major >= 3, "the default interface should be the newest (3.x), got {}.{}", version.major, version.minor);
        if !is_softhsm() {
            // softmhsm's default is its newest table, 3.2 (src/ffi/interface.rs).
            assert_eq!((version.major, version.minor), (3, 2), "softmhsm's default interface");
        }
    }
}

p11_test! {
    fn interface_list_offers_3_2_3_0_and_2_40() {
        let raw = Raw::load();
        if raw.lib().C_GetInterfaceList.is_err() {
            assert!(is_softhsm(), "softmhsm must export C_GetInterfaceList");
            println!("SKIPPED on SoftHSMv2 2.6: no C_GetInterfaceList");
            return;
        }
        let mut n: CK_ULONG = 0;
        check(unsafe { raw.lib().C_GetInterfaceList(ptr::null_mut(), &mut n) }, CKR_OK, "C_GetInterfaceList length query");
        check(unsafe { raw.lib().C_GetInterfaceList(ptr::null_mut(), ptr::null_mut()) }, CKR_ARGUMENTS_BAD, "C_GetInterfaceList with NULL pulCount");
        let mut list = vec![CK_INTERFACE { pInterfaceName: ptr::null_mut(), pFunctionList: ptr::null_mut(), flags: 0 }; n as usize];
        check(unsafe { raw.lib().C_GetInterfaceList(list.as_mut_ptr(), &mut n) }, CKR_OK, "C_GetInterfaceList");
        let versions: Vec<(u8, u8)> = list[..n as usize]
            .iter()
            .filter(|i| unsafe { CStr::from_ptr(i.pInterfaceName as *const std::ffi::c_char) }.to_bytes() == b"PKCS 11")
            .map(|i| {
                let v = unsafe { (*(i.pFunctionList as *const CK_FUNCTION_LIST)).version };
                (v.major, v.minor)
            })
            .collect();
        assert!(versions.contains(&(3, 0)), "interface list must offer PKCS 11 3.0, got {versions:?}");
        assert!(versions.contains(&(2, 40)), "interface list must offer PKCS 11 2.40, got {versions:?}");
        if is_softhsm() {
            return;
        }
        assert_eq!(versions.first(), Some(&(3, 2)), "softmhsm lists its default, 3.2, first");
    }
}
