//! Token, login and session rules through the C ABI.

#[macro_use]
mod common;

use common::*;
use cryptoki::session::{SessionState, UserType};
use cryptoki_sys::*;

p11_test! {
    fn initialized_token_reports_its_flags() {
        let t = Token::fresh();
        let info = ok(t.pkcs11.get_token_info(t.slot), "C_GetTokenInfo");
        assert!(info.token_initialized(), "CKF_TOKEN_INITIALIZED must be set after C_InitToken");
        assert!(info.login_required(), "CKF_LOGIN_REQUIRED must be set");
        assert!(info.rng(), "CKF_RNG must be set");
        assert!(info.user_pin_initialized(), "CKF_USER_PIN_INITIALIZED must be set after C_InitPIN");
    }
}

p11_test! {
    fn user_pin_flag_is_clear_before_init_pin() {
        let (p, slot) = token_without_user_pin();
        let info = ok(p.get_token_info(slot), "C_GetTokenInfo");
        assert!(info.token_initialized(), "CKF_TOKEN_INITIALIZED");
        assert!(
            !info.user_pin_initialized(),
            "CKF_USER_PIN_INITIALIZED must be clear before C_InitPIN"
        );
    }
}

p11_test! {
    fn token_label_is_blank_padded() {
        let t = Token::fresh();
        let mut info = CK_TOKEN_INFO::default();
        let rv = unsafe { p11!(t.raw, C_GetTokenInfo, t.slot.id() as CK_SLOT_ID, &mut info) };
        check(rv, CKR_OK, "C_GetTokenInfo");
        let mut expected = [b' '; 32];
        expected[..TOKEN_LABEL.len()].copy_from_slice(TOKEN_LABEL.as_bytes());
        assert_eq!(
            info.label,
            expected,
            "label must be {TOKEN_LABEL:?} blank-padded to 32 bytes, got {:?}",
            String::from_utf8_lossy(&info.label)
        );
    }
}

p11_test! {
    fn zero_config_token_is_slot_zero() {
        softmhsm_only!("SoftHSMv2 numbers its free slot differently");
        let p = load_initialized();
        let slot = uninitialized_slot(&p);
        assert_eq!(slot.id(), 0, "the zero-config token must be in slot 0");
    }
}

p11_test! {
    fn init_pin_length_out_of_range_is_refused() {
        let (p, slot) = token_without_user_pin();
        let s = ok(p.open_rw_session(slot), "C_OpenSession");
        ok(s.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO)");
        assert_rv(s.init_pin(&pin("123")), CKR_PIN_LEN_RANGE, "C_InitPIN with a 3-char PIN");
        let long = "1".repeat(256);
        assert_rv(s.init_pin(&pin(&long)), CKR_PIN_LEN_RANGE, "C_InitPIN with a 256-char PIN");
        let info = ok(p.get_token_info(slot), "C_GetTokenInfo");
        assert!(!info.user_pin_initialized(), "a refused C_InitPIN must not set the user PIN");
        ok(s.init_pin(&pin("1234")), "C_InitPIN with a 4-char PIN");
        ok(s.init_pin(&pin(&"1".repeat(255))), "C_InitPIN with a 255-char PIN");
    }
}

p11_test! {
    fn init_token_pin_length_out_of_range_is_refused() {
        softmhsm_only!("SoftHSMv2 answers CKR_PIN_INCORRECT for a short SO PIN in C_InitToken");
        let p = load_initialized();
        let slot = uninitialized_slot(&p);
        assert_rv(p.init_token(slot, &pin("123"), TOKEN_LABEL), CKR_PIN_LEN_RANGE, "C_InitToken with a 3-char SO PIN");
    }
}

p11_test! {
    fn token_pin_limits_are_4_to_255() {
        softmhsm_only!("SoftHSMv2 reports its own PIN length limits");
        let t = Token::fresh();
        let info = ok(t.pkcs11.get_token_info(t.slot), "C_GetTokenInfo");
        assert_eq!(info.min_pin_length(), 4, "ulMinPinLen");
        assert_eq!(info.max_pin_length(), 255, "ulMaxPinLen");
    }
}

p11_test! {
    fn wrong_pin_is_refused() {
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        assert_rv(t.session.login(UserType::User, Some(&pin("9999"))), CKR_PIN_INCORRECT, "C_Login(USER) with a wrong PIN");
        assert_rv(t.session.login(UserType::So, Some(&pin("87654321"))), CKR_PIN_INCORRECT, "C_Login(SO) with a wrong PIN");
        let info = ok(t.session.get_session_info(), "C_GetSessionInfo");
        assert_eq!(info.session_state(), SessionState::RwPublic, "a failed login must leave the session public");
    }
}

p11_test! {
    fn user_login_before_init_pin_is_refused() {
        let (p, slot) = token_without_user_pin();
        let s = ok(p.open_rw_session(slot), "C_OpenSession");
        assert_rv(s.login(UserType::User, Some(&pin(USER_PIN))), CKR_USER_PIN_NOT_INITIALIZED, "C_Login(USER) before C_InitPIN");
    }
}

p11_test! {
    fn second_user_login_is_refused() {
        let t = Token::fresh();
        assert_rv(t.session.login(UserType::User, Some(&pin(USER_PIN))), CKR_USER_ALREADY_LOGGED_IN, "second C_Login(USER)");
    }
}

p11_test! {
    fn so_login_while_user_logged_in_is_refused() {
        let t = Token::fresh();
        assert_rv(t.session.login(UserType::So, Some(&pin(SO_PIN))), CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "C_Login(SO) while the user is logged in");
    }
}

p11_test! {
    fn so_login_with_read_only_session_is_refused() {
        let (p, slot) = token_without_user_pin();
        let _ro = ok(p.open_ro_session(slot), "C_OpenSession(RO)");
        let rw = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
        assert_rv(rw.login(UserType::So, Some(&pin(SO_PIN))), CKR_SESSION_READ_ONLY_EXISTS, "C_Login(SO) with an RO session open");
    }
}

p11_test! {
    fn init_token_with_open_session_is_refused() {
        let t = Token::fresh();
        assert_rv(t.pkcs11.init_token(t.slot, &pin(SO_PIN), TOKEN_LABEL), CKR_SESSION_EXISTS, "C_InitToken with a session open");
    }
}

p11_test! {
    fn logout_when_not_logged_in_is_refused() {
        softmhsm_only!("SoftHSMv2 answers CKR_OK to C_Logout without a login");
        let (p, slot) = token_without_user_pin();
        let s = ok(p.open_rw_session(slot), "C_OpenSession");
        assert_rv(s.logout(), CKR_USER_NOT_LOGGED_IN, "C_Logout without a login");
    }
}

p11_test! {
    fn set_pin_changes_the_user_pin() {
        let t = Token::fresh();
        ok(t.session.set_pin(&pin(USER_PIN), &pin("5678")), "C_SetPIN(old, new)");
        ok(t.session.logout(), "C_Logout");
        assert_rv(t.session.login(UserType::User, Some(&pin(USER_PIN))), CKR_PIN_INCORRECT, "C_Login with the old PIN after C_SetPIN");
        ok(t.session.login(UserType::User, Some(&pin("5678"))), "C_Login with the new PIN");
    }
}

p11_test! {
    fn set_pin_with_wrong_old_pin_is_refused() {
        let t = Token::fresh();
        assert_rv(t.session.set_pin(&pin("9999"), &pin("5678")), CKR_PIN_INCORRECT, "C_SetPIN with a wrong old PIN");
        ok(t.session.logout(), "C_Logout");
        ok(t.session.login(UserType::User, Some(&pin(USER_PIN))), "C_Login with the unchanged PIN");
    }
}

p11_test! {
    fn failed_login_sets_count_low() {
        softmhsm_only!("SoftHSMv2 does not report CKF_USER_PIN_COUNT_LOW");
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        assert_rv(t.session.login(UserType::User, Some(&pin("9999"))), CKR_PIN_INCORRECT, "C_Login(USER) with a wrong PIN");
        let info = ok(t.pkcs11.get_token_info(t.slot), "C_GetTokenInfo");
        assert!(info.user_pin_count_low(), "CKF_USER_PIN_COUNT_LOW must be set after a failed login");
    }
}

p11_test! {
    fn ten_wrong_pins_lock_the_user_pin() {
        softmhsm_only!("SoftHSMv2 does not lock the user PIN");
        let t = Token::fresh();
        ok(t.session.logout(), "C_Logout");
        for i in 1..=10 {
            assert_rv(t.session.login(UserType::User, Some(&pin("9999"))), CKR_PIN_INCORRECT, &format!("wrong PIN attempt {i}"));
        }
        assert_rv(t.session.login(UserType::User, Some(&pin(USER_PIN))), CKR_PIN_LOCKED, "C_Login with the right PIN after 10 failures");
        let info = ok(t.pkcs11.get_token_info(t.slot), "C_GetTokenInfo");
        assert!(info.user_pin_locked(), "CKF_USER_PIN_LOCKED must be set");
        // The SO unlocks by setting a new user PIN.
        ok(t.session.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO)");
        ok(t.session.init_pin(&pin("4321")), "C_InitPIN by the SO");
        ok(t.session.logout(), "C_Logout(SO)");
        let info = ok(t.pkcs11.get_token_info(t.slot), "C_GetTokenInfo");
        assert!(!info.user_pin_locked(), "CKF_USER_PIN_LOCKED must clear after C_InitPIN");
        ok(t.session.login(UserType::User, Some(&pin("4321"))), "C_Login with the PIN set by the SO");
    }
}

p11_test! {
    fn parallel_session_is_not_supported() {
        let (_p, slot) = token_without_user_pin();
        let raw = Raw::load();
        let mut h: CK_SESSION_HANDLE = 0;
        let rv = unsafe {
            p11!(raw, C_OpenSession, slot.id() as CK_SLOT_ID, CKF_RW_SESSION, std::ptr::null_mut(), None, &mut h)
        };
        check(rv, CKR_SESSION_PARALLEL_NOT_SUPPORTED, "C_OpenSession without CKF_SERIAL_SESSION");
    }
}

p11_test! {
    fn invalid_session_handle_is_refused() {
        let t = Token::fresh();
        let mut info = CK_SESSION_INFO::default();
        let rv = unsafe { p11!(t.raw, C_GetSessionInfo, t.h() + 1000, &mut info) };
        check(rv, CKR_SESSION_HANDLE_INVALID, "C_GetSessionInfo on an unknown handle");
        let rv = unsafe { p11!(t.raw, C_CloseSession, t.h() + 1000) };
        check(rv, CKR_SESSION_HANDLE_INVALID, "C_CloseSession on an unknown handle");
    }
}

p11_test! {
    fn read_only_session_cannot_create_token_objects() {
        let t = Token::fresh();
        let ro = ok(t.pkcs11.open_ro_session(t.slot), "C_OpenSession(RO)");
        let r = ro.create_object(&[
            cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::DATA),
            cryptoki::object::Attribute::Token(true),
            cryptoki::object::Attribute::Label(b"ro".to_vec()),
            cryptoki::object::Attribute::Value(b"data".to_vec()),
        ]);
        assert_rv(r, CKR_SESSION_READ_ONLY, "C_CreateObject(CKA_TOKEN=TRUE) in an RO session");
        let r = ro.generate_key(
            &cryptoki::mechanism::Mechanism::AesKeyGen,
            &Token::aes_template(32, "ro", true),
        );
        assert_rv(r, CKR_SESSION_READ_ONLY, "C_GenerateKey(CKA_TOKEN=TRUE) in an RO session");
    }
}

p11_test! {
    fn close_all_sessions_closes_them_and_logs_out() {
        let t = Token::fresh();
        let other = ok(t.pkcs11.open_ro_session(t.slot), "C_OpenSession(RO)");
        let (h1, h2) = (t.h(), other.handle());
        let rv = unsafe { p11!(t.raw, C_CloseAllSessions, t.slot.id() as CK_SLOT_ID) };
        check(rv, CKR_OK, "C_CloseAllSessions");
        for h in [h1, h2] {
            let mut info = CK_SESSION_INFO::default();
            let rv = unsafe { p11!(t.raw, C_GetSessionInfo, h, &mut info) };
            check(rv, CKR_SESSION_HANDLE_INVALID, "C_GetSessionInfo after C_CloseAllSessions");
        }
        let s = ok(t.pkcs11.open_ro_session(t.slot), "C_OpenSession after C_CloseAllSessions");
        let info = ok(s.get_session_info(), "C_GetSessionInfo");
        assert_eq!(info.session_state(), SessionState::RoPublic, "closing all sessions must log out");
        // The handles are already closed: their Drop gets CKR_SESSION_HANDLE_INVALID,
        // which cryptoki only logs. (Forgetting them would leak the context under valgrind.)
        drop(other);
        drop(t.session);
    }
}

p11_test! {
    fn session_states_follow_login() {
        let (p, slot) = token_without_user_pin();
        {
            let so = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
            assert_eq!(ok(so.get_session_info(), "C_GetSessionInfo").session_state(), SessionState::RwPublic);
            ok(so.login(UserType::So, Some(&pin(SO_PIN))), "C_Login(SO)");
            assert_eq!(ok(so.get_session_info(), "C_GetSessionInfo").session_state(), SessionState::RwSecurityOfficer);
            ok(so.init_pin(&pin(USER_PIN)), "C_InitPIN");
            ok(so.logout(), "C_Logout");
        }
        let ro = ok(p.open_ro_session(slot), "C_OpenSession(RO)");
        let rw = ok(p.open_rw_session(slot), "C_OpenSession(RW)");
        let ro_info = ok(ro.get_session_info(), "C_GetSessionInfo(RO)");
        assert_eq!(ro_info.session_state(), SessionState::RoPublic);
        assert!(!ro_info.read_write(), "RO session must not have CKF_RW_SESSION");
        ok(rw.login(UserType::User, Some(&pin(USER_PIN))), "C_Login(USER)");
        let rw_info = ok(rw.get_session_info(), "C_GetSessionInfo(RW)");
        assert_eq!(rw_info.session_state(), SessionState::RwUser);
        assert!(rw_info.read_write(), "RW session must have CKF_RW_SESSION");
        // Login state is per application: the RO session is logged in too.
        assert_eq!(ok(ro.get_session_info(), "C_GetSessionInfo(RO)").session_state(), SessionState::RoUser);
        assert_eq!(ro_info.slot_id(), slot, "C_GetSessionInfo slotID");
    }
}

p11_test! {
    fn session_handles_are_never_reused() {
        let t = Token::fresh();
        let mut seen = std::collections::HashSet::new();
        seen.insert(t.h());
        for _ in 0..20 {
            let s = ok(t.pkcs11.open_ro_session(t.slot), "C_OpenSession");
            assert!(seen.insert(s.handle()), "session handle {} was reused", s.handle());
            ok(s.close(), "C_CloseSession");
        }
    }
}
