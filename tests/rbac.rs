//! Local RBAC (issue 13): principals log in through PKCS#11 (`C_LoginUser`,
//! and `C_Login` with "name:PIN") and act as the CLI's `--user`, and every
//! data action is allowed exactly where one of their role assignments grants
//! it. The expectations are transcribed from the published table
//! (`shared/managed-hsm-builtin-roles.md`), not derived from the library's
//! own role table.

#[macro_use]
mod common;

use common::cli::*;
use common::*;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki_sys::*;
use std::ptr;

/// Roles as the table abbreviates them, with their published names.
const ROLES: &[(&str, &str)] = &[
    ("Adm", "Managed HSM Administrator"),
    ("CO", "Managed HSM Crypto Officer"),
    ("CU", "Managed HSM Crypto User"),
    ("PA", "Managed HSM Policy Administrator"),
    ("Aud", "Managed HSM Crypto Auditor"),
    ("CSEU", "Managed HSM Crypto Service Encryption User"),
    ("CSRU", "Managed HSM Crypto Service Release User"),
    ("Bak", "Managed HSM Backup"),
    ("Res", "Managed HSM Restore"),
];

/// The published key and role-management actions and the roles that hold
/// them. One decision differs from the published cell: purge is not the
/// Crypto Auditor's (its description is "read (but not use) key
/// attributes"; README, "Roles and principals").
const TABLE: &[(&str, &[&str])] = &[
    ("keys/read/action", &["CU", "CSEU", "Aud"]),
    ("keys/write/action", &["CU"]),
    ("keys/rotate/action", &["CU"]),
    ("keys/create", &["CU"]),
    ("keys/delete", &["CU"]),
    ("keys/deletedKeys/read/action", &["CO"]),
    ("keys/deletedKeys/recover/action", &["CO"]),
    ("keys/deletedKeys/delete", &["CO"]),
    ("keys/backup/action", &["CU", "Bak"]),
    ("keys/restore/action", &["CU", "Res"]),
    ("keys/release/action", &["CU", "CSRU"]),
    ("keys/import/action", &["CU"]),
    ("keys/encrypt/action", &["CU"]),
    ("keys/decrypt/action", &["CU"]),
    ("keys/wrap/action", &["CU", "CSEU"]),
    ("keys/unwrap/action", &["CU", "CSEU"]),
    ("keys/sign/action", &["CU"]),
    ("keys/verify/action", &["CU"]),
    (
        "roleAssignments/read/action",
        &["Adm", "CO", "CU", "PA", "Aud"],
    ),
    ("roleAssignments/write/action", &["Adm", "CO", "PA"]),
    ("roleAssignments/delete/action", &["Adm", "CO", "PA"]),
];

/// Whether role `abbr` holds `action` by the table.
fn has(abbr: &str, action: &str) -> bool {
    TABLE
        .iter()
        .find(|(a, _)| *a == action)
        .unwrap_or_else(|| panic!("{action} is in the table"))
        .1
        .contains(&abbr)
}

const PRINCIPAL_PIN: &str = "p-pin-1";

/// A token with keys `ec1` (P-256, sign/verify) and `aes1` (AES-256,
/// encrypt/decrypt/wrapKey/unwrapKey), made with the CLI as the user.
fn pool_with_keys() {
    json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
    json(&["key", "create", "--name", "ec1", "--kty", "EC"]);
    json(&[
        "key",
        "create",
        "--name",
        "aes1",
        "--kty",
        "oct",
        "--ops",
        "encrypt",
        "decrypt",
        "wrapKey",
        "unwrapKey",
    ]);
}

/// Make principal `name` and give it `role` at each of `scopes`.
fn principal(name: &str, role: &str, scopes: &[&str]) {
    json(&[
        "principal",
        "create",
        "--name",
        name,
        "--principal-pin",
        PRINCIPAL_PIN,
        "--so-pin",
        SO_PIN,
    ]);
    for scope in scopes {
        json(&[
            "role",
            "assignment",
            "create",
            "--role",
            role,
            "--assignee",
            name,
            "--scope",
            scope,
            "--so-pin",
            SO_PIN,
        ]);
    }
}

/// Where a principal's assignment puts the keys under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    /// At `/`.
    Pool,
    /// At `/keys/<each key under test>`.
    OnTheKeys,
    /// At `/keys/unrelated`: the keys under test are outside.
    Outside,
}

/// The handles the default user sees (object handles are stable ids).
struct Handles {
    ec_private: CK_OBJECT_HANDLE,
    ec_public: CK_OBJECT_HANDLE,
    aes: CK_OBJECT_HANDLE,
}

fn one(t: &Token, class: ObjectClass, name: &str) -> CK_OBJECT_HANDLE {
    let found = t.find(&[Attribute::Class(class), Attribute::Label(name.into())]);
    assert_eq!(found.len(), 1, "one {class:?} labelled {name}");
    found[0].handle()
}

/// `*Init` through the raw function list in a fresh session; its rv.
fn init_rv(
    t: &Token,
    f: unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV,
    mech: CK_MECHANISM_TYPE,
    param: &mut [u8],
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let s = ok(t.pkcs11.open_rw_session(t.slot), "C_OpenSession");
    let mut m = CK_MECHANISM {
        mechanism: mech,
        pParameter: if param.is_empty() {
            ptr::null_mut()
        } else {
            param.as_mut_ptr().cast()
        },
        ulParameterLen: param.len() as CK_ULONG,
    };
    // SAFETY: a live session, a mechanism with its parameter bytes.
    unsafe { f(s.handle(), &mut m, key) }
}

/// `C_VerifySignatureInit` (PKCS#11 3.2) with `CKM_ECDSA` and a P-256-sized
/// signature in a fresh session: the verify action, as `C_VerifyInit`.
fn verify_signature_init_rv(t: &Token, key: CK_OBJECT_HANDLE) -> CK_RV {
    let s = ok(t.pkcs11.open_rw_session(t.slot), "C_OpenSession");
    let mut m = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut sig = [1u8; 64];
    // SAFETY: a live session, a mechanism without parameter, 64 signature bytes.
    unsafe {
        t.raw.f32().C_VerifySignatureInit.unwrap()(s.handle(), &mut m, key, sig.as_mut_ptr(), 64)
    }
}

/// The rv a crypto `*Init` should give: OK where the role has `action`; a
/// key the principal cannot read is as absent (`CKR_KEY_HANDLE_INVALID`);
/// else `CKR_KEY_FUNCTION_NOT_PERMITTED`.
fn expected_init(abbr: &str, place: Place, action: &str) -> CK_RV {
    let inside = place != Place::Outside;
    if inside && has(abbr, action) {
        CKR_OK
    } else if inside && has(abbr, "keys/read/action") {
        CKR_KEY_FUNCTION_NOT_PERMITTED
    } else {
        CKR_KEY_HANDLE_INVALID
    }
}

/// Every PKCS#11 data action of principal `name` (role `abbr`, at `place`).
fn check_pkcs11(t: &Token, h: &Handles, abbr: &str, place: Place, name: &str, n: usize) {
    let what = |a: &str| format!("{a} by {abbr} at {place:?}");
    let inside = place != Place::Outside;
    // Logged in with "name:PIN" (C_Login of a 2.40 application).
    ok(
        t.session.login(
            UserType::User,
            Some(&pin(&format!("{name}:{PRINCIPAL_PIN}"))),
        ),
        "C_Login(name:PIN)",
    );
    let readable = inside && has(abbr, "keys/read/action");
    let found = t.find(&[Attribute::Label(b"ec1".to_vec())]).len();
    assert_eq!(
        found,
        if readable { 2 } else { 0 },
        "{}",
        what("find (keys/read)")
    );
    let f = t.raw.f();
    let mut none: [u8; 0] = [];
    let mut iv = [7u8; 16];
    let checks: [(&str, CK_RV); 7] = [
        (
            "keys/sign/action",
            init_rv(t, f.C_SignInit.unwrap(), CKM_ECDSA, &mut none, h.ec_private),
        ),
        (
            "keys/verify/action",
            init_rv(
                t,
                f.C_VerifyInit.unwrap(),
                CKM_ECDSA,
                &mut none,
                h.ec_public,
            ),
        ),
        (
            "keys/verify/action",
            verify_signature_init_rv(t, h.ec_public),
        ),
        (
            "keys/encrypt/action",
            init_rv(t, f.C_EncryptInit.unwrap(), CKM_AES_CBC_PAD, &mut iv, h.aes),
        ),
        (
            "keys/decrypt/action",
            init_rv(t, f.C_DecryptInit.unwrap(), CKM_AES_CBC_PAD, &mut iv, h.aes),
        ),
        (
            "keys/wrap/action",
            init_rv(
                t,
                f.C_EncryptInit.unwrap(),
                CKM_AES_KEY_WRAP,
                &mut none,
                h.aes,
            ),
        ),
        (
            "keys/unwrap/action",
            init_rv(
                t,
                f.C_DecryptInit.unwrap(),
                CKM_AES_KEY_WRAP,
                &mut none,
                h.aes,
            ),
        ),
    ];
    for (action, rv) in checks {
        check(rv, expected_init(abbr, place, action), &what(action));
    }
    // keys/create: C_GenerateKey of a token key named into the scope.
    let made = format!("made{n}");
    let create = t.session.generate_key(
        &cryptoki::mechanism::Mechanism::AesKeyGen,
        &Token::aes_template(32, &made, true),
    );
    let can_create = place == Place::Pool && has(abbr, "keys/create");
    assert_rv(
        create,
        if can_create {
            CKR_OK
        } else {
            CKR_FUNCTION_REJECTED
        },
        &what("keys/create"),
    );
    // keys/import: C_CreateObject of AES key material.
    let import = t.session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(cryptoki::object::KeyType::AES),
        Attribute::Token(true),
        Attribute::Value(vec![9u8; 32]),
        Attribute::Label(format!("imported{n}").into_bytes()),
    ]);
    let can_import = place == Place::Pool && has(abbr, "keys/import/action");
    assert_rv(
        import,
        if can_import {
            CKR_OK
        } else {
            CKR_FUNCTION_REJECTED
        },
        &what("keys/import/action"),
    );
    // keys/write: C_SetAttributeValue; keys/delete: C_DestroyObject.
    let handle_rv = |allowed: bool| {
        if !readable {
            CKR_OBJECT_HANDLE_INVALID
        } else if allowed {
            CKR_OK
        } else {
            CKR_ACTION_PROHIBITED
        }
    };
    let set = t
        .session
        .update_attributes(obj(h.aes), &[Attribute::Label(b"aes1".to_vec())]);
    assert_rv(
        set,
        handle_rv(has(abbr, "keys/write/action")),
        &what("keys/write/action"),
    );
    ok(t.session.logout(), "C_Logout");
}

p11_test! {
    fn every_builtin_role_at_every_scope_through_pkcs11() {
        softmhsm_only!("local RBAC is softmhsm's");
        pool_with_keys();
        let t = Token::reopen_existing();
        let h = Handles {
            ec_private: one(&t, ObjectClass::PRIVATE_KEY, "ec1"),
            ec_public: one(&t, ObjectClass::PUBLIC_KEY, "ec1"),
            aes: one(&t, ObjectClass::SECRET_KEY, "aes1"),
        };
        ok(t.session.logout(), "C_Logout(user)");
        let mut n = 0;
        for (abbr, role) in ROLES {
            for place in [Place::Pool, Place::OnTheKeys, Place::Outside] {
                n += 1;
                let name = format!("p{n}");
                let scopes: &[&str] = match place {
                    Place::Pool => &["/"],
                    Place::OnTheKeys => &["/keys/ec1", "/keys/aes1"],
                    Place::Outside => &["/keys/unrelated"],
                };
                principal(&name, role, scopes);
                check_pkcs11(&t, &h, abbr, place, &name, n);
            }
        }
    }
}

/// Run a CLI verb as principal `name`; its exit code.
fn as_principal(name: &str, args: &[&str]) -> Run {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--user", name]);
    cli_with(&full, Some(PRINCIPAL_PIN))
}

#[track_caller]
fn expect(r: &Run, allowed: bool, what: &str) {
    if allowed {
        assert_eq!(r.code, 0, "{what} should be allowed: {}", r.stderr);
    } else {
        assert_eq!(r.code, 1, "{what} should be refused: {}", r.stderr);
        assert!(
            r.stderr.contains("not permitted")
                && r.stderr.contains("Microsoft.KeyVault/managedHsm/"),
            "{what}: the refusal names the data action: {}",
            r.stderr
        );
    }
}

p11_test! {
    fn every_builtin_role_through_the_cli() {
        softmhsm_only!("the CLI works on softmhsm's store");
        pool_with_keys();
        let digest = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"; // SHA-256 of ""
        for (i, (abbr, role)) in ROLES.iter().enumerate() {
            for inside in [true, false] {
                let name = format!("c{i}{}", if inside { "in" } else { "out" });
                // Each principal works on a key of its own, so deletes and
                // purges do not disturb the others.
                let key = format!("k{i}{}", if inside { "in" } else { "out" });
                json(&["key", "create", "--name", &key, "--kty", "EC"]);
                let scope = if inside { format!("/keys/{key}") } else { "/keys/unrelated".into() };
                principal(&name, role, &[&scope]);
                let may = |action: &str| inside && has(abbr, action);
                let what = |a: &str| format!("{a} by {abbr} (inside: {inside})");
                expect(&as_principal(&name, &["key", "show", "--name", &key]), may("keys/read/action"), &what("key show"));
                expect(&as_principal(&name, &["key", "sign", "--name", &key, "--algorithm", "ES256", "--digest", digest]), may("keys/sign/action"), &what("key sign"));
                expect(&as_principal(&name, &["key", "update", "--name", &key, "--tags", "a=b"]), may("keys/write/action"), &what("key update"));
                expect(&as_principal(&name, &["key", "rotate", "--name", &key]), may("keys/rotate/action"), &what("key rotate"));
                let file = store_dir().join(format!("{key}.bak"));
                let file = file.to_str().unwrap();
                expect(&as_principal(&name, &["key", "backup", "--name", &key, "--file", file]), may("keys/backup/action"), &what("key backup"));
                expect(&as_principal(&name, &["key", "delete", "--name", &key]), may("keys/delete"), &what("key delete"));
                // The user (Crypto User + Crypto Officer at /) deletes it if
                // the principal could not, so recover and purge have a
                // deleted key to work on.
                if !may("keys/delete") {
                    json(&["key", "delete", "--name", &key]);
                }
                expect(&as_principal(&name, &["key", "recover", "--name", &key]), may("keys/deletedKeys/recover/action"), &what("key recover"));
                if may("keys/deletedKeys/recover/action") {
                    json(&["key", "delete", "--name", &key]);
                }
                expect(&as_principal(&name, &["key", "purge", "--name", &key]), may("keys/deletedKeys/delete"), &what("key purge"));
                // Role-management actions are granted at `/` only.
                expect(
                    &as_principal(&name, &["role", "assignment", "list"]),
                    false,
                    &what("role assignment list with a role at a key scope"),
                );
            }
        }
    }
}

p11_test! {
    fn role_management_needs_a_role_at_the_pool() {
        softmhsm_only!("the CLI works on softmhsm's store");
        pool_with_keys();
        for (i, (abbr, role)) in ROLES.iter().enumerate() {
            let name = format!("r{i}");
            principal(&name, role, &["/"]);
            let other = format!("o{i}");
            json(&["principal", "create", "--name", &other, "--principal-pin", PRINCIPAL_PIN, "--so-pin", SO_PIN]);
            let what = |a: &str| format!("{a} by {abbr}");
            expect(&as_principal(&name, &["role", "assignment", "list"]), has(abbr, "roleAssignments/read/action"), &what("role assignment list"));
            let create = as_principal(&name, &["role", "assignment", "create", "--role", "Crypto Auditor", "--assignee", &other, "--scope", "/"]);
            expect(&create, has(abbr, "roleAssignments/write/action"), &what("role assignment create"));
            if create.code != 0 {
                json(&["role", "assignment", "create", "--role", "Crypto Auditor", "--assignee", &other, "--scope", "/", "--so-pin", SO_PIN]);
            }
            expect(&as_principal(&name, &["role", "assignment", "delete", "--role", "Crypto Auditor", "--assignee", &other, "--scope", "/"]), has(abbr, "roleAssignments/delete/action"), &what("role assignment delete"));
        }
    }
}

p11_test! {
    fn app1_signs_with_web_only_and_the_plain_pin_still_does_everything() {
        softmhsm_only!("local RBAC is softmhsm's");
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        json(&["key", "create", "--name", "web", "--kty", "EC"]);
        json(&["key", "create", "--name", "db", "--kty", "EC"]);
        principal("app1", "Managed HSM Crypto User", &["/keys/web"]);
        let t = Token::reopen_existing();
        let db = one(&t, ObjectClass::PRIVATE_KEY, "db");
        let web_public = one(&t, ObjectClass::PUBLIC_KEY, "web");
        let point = t.ec_point(obj(web_public));
        ok(t.session.logout(), "C_Logout(user)");
        // C_LoginUser (PKCS#11 3.0) with the principal's name.
        let f3 = interface_3_0(&t.raw);
        let user = b"app1";
        let rv = unsafe {
            (f3.C_LoginUser.unwrap())(
                t.session.handle(),
                CKU_USER,
                PRINCIPAL_PIN.as_ptr() as *mut _,
                PRINCIPAL_PIN.len() as CK_ULONG,
                user.as_ptr() as *mut _,
                user.len() as CK_ULONG,
            )
        };
        check(rv, CKR_OK, "C_LoginUser(app1)");
        let web = t.find_private_by_label("web");
        assert_eq!(web.len(), 1, "app1 finds web");
        assert!(t.find_private_by_label("db").is_empty(), "app1 does not find db");
        let digest = [5u8; 32];
        let sig = ok(t.session.sign(&cryptoki::mechanism::Mechanism::Ecdsa, web[0], &digest), "C_Sign with web");
        verify_ecdsa_prehash(OID_P256, &point, &digest, &sig).expect("app1's signature verifies under web's public key");
        assert_rv(
            t.session.sign(&cryptoki::mechanism::Mechanism::Ecdsa, obj(db), &digest),
            CKR_KEY_HANDLE_INVALID,
            "app1 signing with db's handle",
        );
        assert_rv(t.session.destroy_object(obj(db)), CKR_OBJECT_HANDLE_INVALID, "app1 destroying db");
        ok(t.session.logout(), "C_Logout(app1)");
        // An auditor lists keys and reads attributes, and cannot sign or delete.
        principal("aud", "Crypto Auditor", &["/"]);
        ok(t.session.login(UserType::User, Some(&pin(&format!("aud:{PRINCIPAL_PIN}")))), "C_Login(aud:PIN)");
        assert_eq!(t.find_private_by_label("db").len(), 1, "the auditor finds db");
        assert_eq!(t.ec_point(obj(web_public)), point, "the auditor reads web's public point");
        assert_rv(
            t.session.sign(&cryptoki::mechanism::Mechanism::Ecdsa, obj(db), &digest),
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            "the auditor signing with db",
        );
        assert_rv(t.session.destroy_object(obj(db)), CKR_ACTION_PROHIBITED, "the auditor destroying db");
        ok(t.session.logout(), "C_Logout(aud)");
        // The plain user PIN: everything, as before.
        ok(t.session.login(UserType::User, Some(&pin(USER_PIN))), "C_Login(user)");
        ok(t.session.sign(&cryptoki::mechanism::Mechanism::Ecdsa, obj(db), &digest), "the user signs with db");
        ok(t.session.destroy_object(obj(db)), "the user destroys db");
        // An unknown principal is a wrong PIN; the SO has no name.
        ok(t.session.logout(), "C_Logout(user)");
        let nobody = b"nobody";
        let rv = unsafe {
            (f3.C_LoginUser.unwrap())(t.session.handle(), CKU_USER, PRINCIPAL_PIN.as_ptr() as *mut _, PRINCIPAL_PIN.len() as CK_ULONG, nobody.as_ptr() as *mut _, nobody.len() as CK_ULONG)
        };
        check(rv, CKR_PIN_INCORRECT, "C_LoginUser(nobody)");
        let rv = unsafe {
            (f3.C_LoginUser.unwrap())(t.session.handle(), CKU_SO, SO_PIN.as_ptr() as *mut _, SO_PIN.len() as CK_ULONG, user.as_ptr() as *mut _, user.len() as CK_ULONG)
        };
        check(rv, CKR_USER_TYPE_INVALID, "C_LoginUser(CKU_SO, app1)");
        // The audit log names app1 on its KeySign events (C_Finalize writes them).
        let Token { session, pkcs11, .. } = t;
        drop(session);
        ok(pkcs11.finalize(), "C_Finalize");
        let r = cli(&["audit", "--operation", "KeySign"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let lines: Vec<serde_json::Value> = r
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        let by = |who: &str, key: &str, ok: &str| {
            lines.iter().any(|l| {
                l["identity"] == who
                    && l["resultType"] == ok
                    && l["kid"].as_str().is_some_and(|k| k.contains(&format!("/keys/{key}/")))
            })
        };
        assert!(by("app1", "web", "Success"), "app1's KeySign on web: {lines:?}");
        assert!(by("aud", "db", "Failure"), "the auditor's refused KeySign on db: {lines:?}");
        assert!(by("user", "db", "Success"), "the user's KeySign on db: {lines:?}");
    }
}

p11_test! {
    fn a_locked_principal_leaves_the_others_working() {
        softmhsm_only!("local RBAC is softmhsm's");
        pool_with_keys();
        principal("a", "Crypto User", &["/"]);
        principal("b", "Crypto User", &["/"]);
        for _ in 0..10 {
            let r = cli_with(&["key", "list", "--user", "a"], Some("wrong-pin"));
            assert_eq!(r.code, 1, "a wrong PIN is refused");
        }
        assert_refused(&cli_with(&["key", "list", "--user", "a"], Some(PRINCIPAL_PIN)), 1, "locked");
        assert_eq!(as_principal("b", &["key", "list"]).code, 0, "b still works");
        assert_eq!(cli(&["key", "list"]).code, 0, "the user PIN still works");
        let t = Token::reopen_existing();
        ok(t.session.logout(), "C_Logout(user)");
        assert_rv(
            t.session.login(UserType::User, Some(&pin(&format!("a:{PRINCIPAL_PIN}")))),
            CKR_PIN_LOCKED,
            "C_Login(a:PIN) of a locked principal",
        );
        json(&["principal", "set-pin", "--name", "a", "--principal-pin", "new-pin-2", "--so-pin", SO_PIN]);
        ok(t.session.login(UserType::User, Some(&pin("a:new-pin-2"))), "C_Login(a) after set-pin");
        // C_SetPIN by a principal changes its own PIN, not the user's.
        ok(t.session.set_pin(&pin("new-pin-2"), &pin("new-pin-3")), "C_SetPIN as a");
        ok(t.session.logout(), "C_Logout(a)");
        ok(t.session.login(UserType::User, Some(&pin("a:new-pin-3"))), "C_Login(a) with its new PIN");
        ok(t.session.logout(), "C_Logout(a)");
        ok(t.session.login(UserType::User, Some(&pin(USER_PIN))), "the user PIN is unchanged");
    }
}

p11_test! {
    fn a_removed_assignment_takes_effect_at_the_other_process_next_call() {
        softmhsm_only!("local RBAC is softmhsm's");
        pool_with_keys();
        principal("app1", "Crypto User", &["/keys/ec1"]);
        let t = Token::reopen_existing();
        let key = one(&t, ObjectClass::PRIVATE_KEY, "ec1");
        ok(t.session.logout(), "C_Logout(user)");
        ok(t.session.login(UserType::User, Some(&pin(&format!("app1:{PRINCIPAL_PIN}")))), "C_Login(app1)");
        let mech = cryptoki::mechanism::Mechanism::Ecdsa;
        ok(t.session.sign(&mech, obj(key), &[1u8; 32]), "app1 signs");
        // Another process (the CLI) removes the assignment and gives app1
        // the Auditor's instead: it still reads ec1, and may not sign.
        json(&["role", "assignment", "create", "--role", "Crypto Auditor", "--assignee", "app1", "--scope", "/keys/ec1", "--so-pin", SO_PIN]);
        json(&["role", "assignment", "delete", "--role", "Crypto User", "--assignee", "app1", "--scope", "/keys/ec1", "--so-pin", SO_PIN]);
        assert_rv(
            t.session.sign(&mech, obj(key), &[1u8; 32]),
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            "app1 signing after its Crypto User assignment was removed",
        );
        assert_eq!(t.find_private_by_label("ec1").len(), 1, "the auditor still finds ec1");
        json(&["principal", "delete", "--name", "app1", "--so-pin", SO_PIN]);
        assert!(t.find_private_by_label("ec1").is_empty(), "a deleted principal sees nothing");
    }
}

/// A `cryptoki` handle for a raw one (object handles are stable ids here).
fn obj(h: CK_OBJECT_HANDLE) -> ObjectHandle {
    // SAFETY: the handle names an object of this module; a stale one is
    // only an error code from the module.
    unsafe { ObjectHandle::new_from_raw(h) }
}

/// The module's PKCS#11 3.0 function list (for `C_LoginUser`).
fn interface_3_0(raw: &Raw) -> &CK_FUNCTION_LIST_3_0 {
    let name = b"PKCS 11\0";
    let mut version = CK_VERSION { major: 3, minor: 0 };
    let mut iface: *mut CK_INTERFACE = ptr::null_mut();
    // SAFETY: NUL-terminated name, a version, an out-pointer to a local.
    let rv = unsafe {
        raw.lib()
            .C_GetInterface(name.as_ptr() as *mut _, &mut version, &mut iface, 0)
    };
    check(rv, CKR_OK, "C_GetInterface(PKCS 11, 3.0)");
    // SAFETY: the interface and its function list are static in the module.
    unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_0) }
}

p11_test! {
    fn two_principals_in_two_processes_at_once() {
        softmhsm_only!("local RBAC is softmhsm's");
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        for k in ["ka", "kb"] {
            json(&["key", "create", "--name", k, "--kty", "EC"]);
        }
        principal("a", "Crypto User", &["/keys/ka"]);
        principal("b", "Crypto User", &["/keys/kb"]);
        let t = Token::reopen_existing();
        let kb = one(&t, ObjectClass::PRIVATE_KEY, "kb");
        ok(t.session.logout(), "C_Logout(user)");
        ok(t.session.login(UserType::User, Some(&pin(&format!("a:{PRINCIPAL_PIN}")))), "C_Login(a)");
        let ka = t.find_private_by_label("ka");
        assert_eq!(ka.len(), 1, "a finds ka");
        // b works from other processes (the CLI) while a signs here.
        let other = std::thread::spawn(|| {
            let digest = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
            for _ in 0..5 {
                let r = as_principal("b", &["key", "sign", "--name", "kb", "--algorithm", "ES256", "--digest", digest]);
                assert_eq!(r.code, 0, "b signs with kb: {}", r.stderr);
                let r = as_principal("b", &["key", "sign", "--name", "ka", "--algorithm", "ES256", "--digest", digest]);
                assert_eq!(r.code, 1, "b may not sign with ka");
            }
        });
        let mech = cryptoki::mechanism::Mechanism::Ecdsa;
        for _ in 0..50 {
            ok(t.session.sign(&mech, ka[0], &[3u8; 32]), "a signs with ka");
            assert_rv(t.session.sign(&mech, obj(kb), &[3u8; 32]), CKR_KEY_HANDLE_INVALID, "a with kb's handle");
        }
        other.join().expect("b's processes");
    }
}

p11_test! {
    fn a_custom_role_grants_exactly_its_data_actions() {
        softmhsm_only!("local RBAC is softmhsm's");
        pool_with_keys();
        let spec = r#"{"roleName": "Signer", "description": "signs, reads",
            "permissions": [{"dataActions": ["Microsoft.KeyVault/managedHsm/keys/sign/action",
                                             "Microsoft.KeyVault/managedHsm/keys/read/action"]}]}"#;
        let made = json(&["role", "definition", "create", "--role-definition", spec, "--so-pin", SO_PIN]);
        assert_eq!(made["roleType"], "CustomRole");
        assert_eq!(made["permissions"][0]["dataActions"].as_array().unwrap().len(), 2);
        refused(
            &["role", "definition", "create", "--role-definition", &spec.replace("sign/action", "fly/action"), "--so-pin", SO_PIN],
            1,
            "unknown data action",
        );
        refused(&["role", "definition", "create", "--role-definition", spec, "--so-pin", SO_PIN], 1, "exists");
        let list = json(&["role", "definition", "list"]);
        assert_eq!(list.as_array().unwrap().len(), 10, "nine built-in roles and Signer");
        principal("app1", "Signer", &["/keys/ec1"]);
        let t = Token::reopen_existing();
        ok(t.session.logout(), "C_Logout(user)");
        ok(t.session.login(UserType::User, Some(&pin(&format!("app1:{PRINCIPAL_PIN}")))), "C_Login(app1)");
        let key = t.find_private_by_label("ec1");
        assert_eq!(key.len(), 1, "Signer reads ec1");
        ok(t.session.sign(&cryptoki::mechanism::Mechanism::Ecdsa, key[0], &[2u8; 32]), "Signer signs");
        assert_rv(
            t.session.update_attributes(key[0], &[Attribute::Label(b"ec1".to_vec())]),
            CKR_ACTION_PROHIBITED,
            "Signer writing ec1",
        );
        assert!(t.find_private_by_label("aes1").is_empty(), "aes1 is outside the scope");
        refused(&["role", "definition", "delete", "--name", "Signer", "--so-pin", SO_PIN], 1, "assigned 1 time");
        refused(&["role", "definition", "delete", "--name", "Crypto User", "--so-pin", SO_PIN], 1, "built in");
        json(&["role", "assignment", "delete", "--role", "signer", "--assignee", "app1", "--scope", "/keys/ec1", "--so-pin", SO_PIN]);
        json(&["role", "definition", "delete", "--name", "Signer", "--so-pin", SO_PIN]);
        assert_eq!(json(&["role", "definition", "list"]).as_array().unwrap().len(), 9);
    }
}
