//! Tests of the SQLite store; each builds a fresh store in its own temp dir.

use super::*;
use crate::crypto::seal::fill_random;
use crate::store::MAX_PIN_FAILURES;
use cryptoki_sys::{CKR_PIN_LOCKED, CKR_USER_PIN_NOT_INITIALIZED};
use cryptoki_sys::CKR_DEVICE_ERROR;
use std::os::unix::fs::PermissionsExt;
use tempfile::TempDir;

const SO_PIN: &[u8] = b"so-pin-3141";
const USER_PIN: &[u8] = b"user-pin-2718";
/// Low on purpose: tests run PBKDF2 many times in debug builds.
const ITERATIONS: u32 = 1000;

/// A fresh, uninitialised store in a not-yet-existing subdirectory of a temp dir.
fn fresh() -> (TempDir, PathBuf, Box<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool").join("token.db");
    let store = crate::store::open(&path).unwrap();
    (dir, path, store)
}

/// A store initialised with `SO_PIN` and with `USER_PIN` set.
fn initialised() -> (TempDir, PathBuf, Box<dyn Store>, MasterKey) {
    let (dir, path, mut store) = fresh();
    let master = store
        .init_token("test token", SO_PIN, ITERATIONS, 90)
        .unwrap();
    store.set_pin(PinUser::User, &master, USER_PIN).unwrap();
    (dir, path, store, master)
}

/// Whether two master keys are the same key: one opens what the other sealed.
fn same_key(a: &MasterKey, b: &MasterKey) -> bool {
    b.open(b"kid", &a.seal(b"kid", b"probe").unwrap()).is_ok()
}

fn user_failures(store: &dyn Store) -> u32 {
    store.token().unwrap().unwrap().user_failures
}

fn key(name: &str, version: &str) -> NewObject {
    NewObject {
        name: Some(name.to_string()),
        version: Some(version.to_string()),
        attrs: format!(r#"{{"v":"{version}"}}"#),
        sealed: Some(vec![1, 2, 3]),
        ..Default::default()
    }
}

fn current_of(store: &dyn Store, name_lc: &str) -> Vec<i64> {
    store
        .objects()
        .unwrap()
        .into_iter()
        .filter(|o| {
            o.current && o.name.as_deref().map(str::to_lowercase).as_deref() == Some(name_lc)
        })
        .map(|o| o.id)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

// ---- token and PINs ----

#[test]
fn so_and_user_unlock_the_same_master_key() {
    let (_dir, _path, mut store, master) = initialised();
    let so = store.unlock(PinUser::So, SO_PIN).unwrap();
    let user = store.unlock(PinUser::User, USER_PIN).unwrap();
    assert!(same_key(&master, &so));
    assert!(same_key(&so, &user));
    assert!(same_key(&user, &master));
}

#[test]
fn token_record_reflects_init() {
    let (_dir, _path, mut store) = fresh();
    assert_eq!(store.token().unwrap(), None);
    store
        .init_token("my token   ", SO_PIN, ITERATIONS, 30)
        .unwrap();
    let t = store.token().unwrap().unwrap();
    assert_eq!(t.label, "my token");
    assert_eq!(t.kdf_iterations, ITERATIONS);
    assert_eq!(t.retention_days, 30);
    assert!(!t.user_pin_initialized);
    assert_eq!((t.so_failures, t.user_failures), (0, 0));
    assert!(t.created > 1_600_000_000);
}

#[test]
fn init_rejects_zero_iterations_and_retention_out_of_range() {
    let (_dir, _path, mut store) = fresh();
    for (iterations, days) in [(0, 90), (ITERATIONS, 6), (ITERATIONS, 91)] {
        let err = store.init_token("t", SO_PIN, iterations, days).unwrap_err();
        assert_eq!(err, Error(CKR_ARGUMENTS_BAD));
    }
    assert_eq!(store.token().unwrap(), None);
}

#[test]
fn unlock_before_init_is_token_not_recognized() {
    let (_dir, _path, mut store) = fresh();
    let err = store.unlock(PinUser::So, SO_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_TOKEN_NOT_RECOGNIZED));
    let err = store.unlock(PinUser::User, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_TOKEN_NOT_RECOGNIZED));
}

#[test]
fn set_pin_before_init_is_token_not_recognized() {
    let (_dir, _path, mut store) = fresh();
    let master = MasterKey::generate().unwrap();
    let err = store.set_pin(PinUser::User, &master, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_TOKEN_NOT_RECOGNIZED));
}

#[test]
fn user_unlock_without_user_pin_is_user_pin_not_initialized() {
    let (_dir, _path, mut store) = fresh();
    store.init_token("t", SO_PIN, ITERATIONS, 90).unwrap();
    let err = store.unlock(PinUser::User, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_USER_PIN_NOT_INITIALIZED));
    assert_eq!(user_failures(&*store), 0);
}

#[test]
fn wrong_pin_is_pin_incorrect_and_counted() {
    let (_dir, _path, mut store, _master) = initialised();
    for expected in 1..=3 {
        let err = store.unlock(PinUser::User, b"wrong").unwrap_err();
        assert_eq!(err, Error(CKR_PIN_INCORRECT));
        assert_eq!(user_failures(&*store), expected);
    }
}

#[test]
fn so_pin_is_not_the_user_pin() {
    let (_dir, _path, mut store, _master) = initialised();
    let err = store.unlock(PinUser::User, SO_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_PIN_INCORRECT));
    let err = store.unlock(PinUser::So, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_PIN_INCORRECT));
}

#[test]
fn right_pin_resets_the_counter() {
    let (_dir, _path, mut store, _master) = initialised();
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    store.unlock(PinUser::User, USER_PIN).unwrap();
    assert_eq!(user_failures(&*store), 0);
}

#[test]
fn ten_failures_lock_the_user_pin_even_against_the_right_pin() {
    let (_dir, _path, mut store, _master) = initialised();
    for _ in 0..MAX_PIN_FAILURES {
        let err = store.unlock(PinUser::User, b"wrong").unwrap_err();
        assert_eq!(err, Error(CKR_PIN_INCORRECT));
    }
    let err = store.unlock(PinUser::User, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_PIN_LOCKED));
    let err = store.unlock(PinUser::User, b"wrong").unwrap_err();
    assert_eq!(err, Error(CKR_PIN_LOCKED));
    // A locked PIN is not evaluated, so not counted further.
    assert_eq!(user_failures(&*store), MAX_PIN_FAILURES);
}

#[test]
fn set_pin_resets_the_counter_and_unlocks() {
    let (_dir, _path, mut store, master) = initialised();
    for _ in 0..MAX_PIN_FAILURES {
        store.unlock(PinUser::User, b"wrong").unwrap_err();
    }
    store
        .set_pin(PinUser::User, &master, b"new-user-pin")
        .unwrap();
    assert_eq!(user_failures(&*store), 0);
    let err = store.unlock(PinUser::User, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_PIN_INCORRECT));
    let user = store.unlock(PinUser::User, b"new-user-pin").unwrap();
    assert!(same_key(&master, &user));
}

#[test]
fn set_so_pin_changes_only_the_so_pin() {
    let (_dir, _path, mut store, master) = initialised();
    store.unlock(PinUser::So, b"wrong").unwrap_err();
    store.set_pin(PinUser::So, &master, b"new-so-pin").unwrap();
    assert_eq!(store.token().unwrap().unwrap().so_failures, 0);
    let err = store.unlock(PinUser::So, SO_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_PIN_INCORRECT));
    assert!(same_key(
        &master,
        &store.unlock(PinUser::So, b"new-so-pin").unwrap()
    ));
    assert!(same_key(
        &master,
        &store.unlock(PinUser::User, USER_PIN).unwrap()
    ));
}

#[test]
fn so_pin_never_locks_but_failures_are_counted() {
    let (_dir, _path, mut store, master) = initialised();
    for _ in 0..MAX_PIN_FAILURES + 2 {
        let err = store.unlock(PinUser::So, b"wrong").unwrap_err();
        assert_eq!(err, Error(CKR_PIN_INCORRECT));
    }
    assert_eq!(
        store.token().unwrap().unwrap().so_failures,
        MAX_PIN_FAILURES + 2
    );
    assert_eq!(user_failures(&*store), 0);
    let so = store.unlock(PinUser::So, SO_PIN).unwrap();
    assert!(same_key(&master, &so));
    assert_eq!(store.token().unwrap().unwrap().so_failures, 0);
}

#[test]
fn failures_persist_across_reopen() {
    let (_dir, path, mut store, _master) = initialised();
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    drop(store);
    let mut store = crate::store::open(&path).unwrap();
    assert_eq!(user_failures(&*store), 2);
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    assert_eq!(user_failures(&*store), 3);
}

#[test]
fn failures_are_shared_by_two_stores_on_one_file() {
    let (_dir, path, mut a, _master) = initialised();
    let mut b = crate::store::open(&path).unwrap();
    for _ in 0..5 {
        a.unlock(PinUser::User, b"wrong").unwrap_err();
        b.unlock(PinUser::User, b"wrong").unwrap_err();
    }
    assert_eq!(user_failures(&*a), MAX_PIN_FAILURES);
    assert_eq!(
        a.unlock(PinUser::User, USER_PIN).unwrap_err(),
        Error(CKR_PIN_LOCKED)
    );
    assert_eq!(
        b.unlock(PinUser::User, USER_PIN).unwrap_err(),
        Error(CKR_PIN_LOCKED)
    );
}

#[test]
fn concurrent_wrong_pins_are_all_counted() {
    let (_dir, path, store, _master) = initialised();
    drop(store);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = crate::store::open(&path).unwrap();
                for _ in 0..2 {
                    let err = store.unlock(PinUser::User, b"wrong").unwrap_err();
                    assert_eq!(err, Error(CKR_PIN_INCORRECT));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(user_failures(&*crate::store::open(&path).unwrap()), 8);
}

#[test]
fn reinit_wipes_objects_and_the_user_pin() {
    let (_dir, _path, mut store, old) = initialised();
    store.insert_object(&key("Key1", "v1")).unwrap();
    store.unlock(PinUser::So, b"wrong").unwrap_err();
    let new = store
        .init_token("again", b"new-so-pin", ITERATIONS, 7)
        .unwrap();
    assert!(!same_key(&old, &new));
    assert!(store.objects().unwrap().is_empty());
    let t = store.token().unwrap().unwrap();
    assert_eq!(t.label, "again");
    assert!(!t.user_pin_initialized);
    assert_eq!((t.so_failures, t.user_failures), (0, 0));
    let err = store.unlock(PinUser::User, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_USER_PIN_NOT_INITIALIZED));
    assert_eq!(
        store.unlock(PinUser::So, SO_PIN).unwrap_err(),
        Error(CKR_PIN_INCORRECT)
    );
    assert!(same_key(
        &new,
        &store.unlock(PinUser::So, b"new-so-pin").unwrap()
    ));
}

// ---- objects ----

#[test]
fn insert_then_read_back() {
    let (_dir, _path, mut store, _master) = initialised();
    let new = key("Key1", "0123456789abcdef0123456789abcdef");
    let row = store.insert_object(&new).unwrap();
    assert!(row.current);
    assert_eq!(row.name.as_deref(), Some("Key1"));
    assert_eq!(row.attrs, new.attrs);
    assert_eq!(row.sealed, new.sealed);
    assert_eq!(store.object(row.id).unwrap(), Some(row.clone()));
    assert_eq!(store.objects().unwrap(), vec![row]);
}

#[test]
fn unnamed_objects_are_all_current() {
    let (_dir, _path, mut store, _master) = initialised();
    let cert = NewObject {
        name: None,
        version: None,
        attrs: "{}".into(),
        sealed: None,
        ..Default::default()
    };
    store.insert_object(&cert).unwrap();
    store.insert_object(&cert).unwrap();
    let rows = store.objects().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.current && r.sealed.is_none()));
}

#[test]
fn missing_object_is_none() {
    let (_dir, _path, store, _master) = initialised();
    assert_eq!(store.object(42).unwrap(), None);
}

#[test]
fn update_attrs_replaces_the_json() {
    let (_dir, _path, mut store, _master) = initialised();
    let row = store.insert_object(&key("k", "v1")).unwrap();
    store.update_attrs(row.id, r#"{"enabled":false}"#).unwrap();
    let back = store.object(row.id).unwrap().unwrap();
    assert_eq!(back.attrs, r#"{"enabled":false}"#);
    assert_eq!(back.sealed, row.sealed);
}

#[test]
fn update_or_delete_of_missing_object_is_handle_invalid() {
    let (_dir, _path, mut store, _master) = initialised();
    let err = store.update_attrs(7, "{}").unwrap_err();
    assert_eq!(err, Error(CKR_OBJECT_HANDLE_INVALID));
    let err = store.delete_object(7).unwrap_err();
    assert_eq!(err, Error(CKR_OBJECT_HANDLE_INVALID));
}

#[test]
fn names_differing_in_case_are_versions_and_only_the_last_is_current() {
    let (_dir, _path, mut store, _master) = initialised();
    store.insert_object(&key("Key1", "v1")).unwrap();
    store.insert_object(&key("key1", "v2")).unwrap();
    let last = store.insert_object(&key("KEY1", "v3")).unwrap();
    store.insert_object(&key("other", "v1")).unwrap();
    assert_eq!(current_of(&*store, "key1"), vec![last.id]);
    assert_eq!(current_of(&*store, "other").len(), 1);
    assert_eq!(store.objects().unwrap().len(), 4);
}

#[test]
fn deleting_the_current_version_makes_the_previous_current() {
    let (_dir, _path, mut store, _master) = initialised();
    let v1 = store.insert_object(&key("Key1", "v1")).unwrap();
    let v2 = store.insert_object(&key("key1", "v2")).unwrap();
    let v3 = store.insert_object(&key("KEY1", "v3")).unwrap();
    assert_eq!(store.delete_object(v3.id).unwrap(), Some(v2.id));
    assert_eq!(current_of(&*store, "key1"), vec![v2.id]);
    assert_eq!(store.delete_object(v2.id).unwrap(), Some(v1.id));
    assert_eq!(current_of(&*store, "key1"), vec![v1.id]);
    assert_eq!(store.delete_object(v1.id).unwrap(), None);
    assert!(store.objects().unwrap().is_empty());
}

#[test]
fn deleting_an_old_version_keeps_the_current_one() {
    let (_dir, _path, mut store, _master) = initialised();
    let v1 = store.insert_object(&key("Key1", "v1")).unwrap();
    let v2 = store.insert_object(&key("Key1", "v2")).unwrap();
    assert_eq!(
        store.delete_object(v1.id).unwrap(),
        None,
        "no version was promoted"
    );
    assert_eq!(current_of(&*store, "key1"), vec![v2.id]);
}

#[test]
fn ids_are_never_reused_after_delete_or_reinit() {
    let (_dir, _path, mut store, _master) = initialised();
    let first = store.insert_object(&key("a", "v1")).unwrap();
    store.delete_object(first.id).unwrap();
    let second = store.insert_object(&key("a", "v2")).unwrap();
    assert!(second.id > first.id);
    store.init_token("t", SO_PIN, ITERATIONS, 90).unwrap();
    let third = store.insert_object(&key("a", "v3")).unwrap();
    assert!(third.id > second.id);
}

#[test]
fn objects_survive_reopen() {
    let (_dir, path, mut store, _master) = initialised();
    let row = store.insert_object(&key("Key1", "v1")).unwrap();
    drop(store);
    let store = crate::store::open(&path).unwrap();
    assert_eq!(store.object(row.id).unwrap(), Some(row));
}

// ---- the change log ----

#[test]
fn changes_since_names_every_row_a_write_touched() {
    let (_dir, _path, mut store, _master) = initialised();
    let before = store.change_seq().unwrap();
    let v1 = store.insert_object(&key("k", "v1")).unwrap();
    let v2 = store.insert_object(&key("k", "v2")).unwrap();
    let Changes::Since { seq, touched, rows } = store.changes_since(before).unwrap() else {
        panic!("a short log is read as changes, not a reload");
    };
    assert_eq!(seq, store.change_seq().unwrap());
    assert!(touched.contains(&v1.id) && touched.contains(&v2.id));
    // v1 stopped being current: its row is among the changes, as it is now.
    let old = rows.iter().find(|r| r.id == v1.id).unwrap();
    assert!(!old.current);
    assert_eq!(
        store.changes_since(seq).unwrap(),
        Changes::Since {
            seq,
            touched: vec![],
            rows: vec![]
        }
    );
}

#[test]
fn soft_deleted_row_is_touched_without_a_live_row() {
    let (_dir, _path, mut store, _master) = initialised();
    let v1 = store.insert_object(&key("k", "v1")).unwrap();
    let before = store.change_seq().unwrap();
    store.soft_delete_name("k", 1).unwrap();
    let Changes::Since { touched, rows, .. } = store.changes_since(before).unwrap() else {
        panic!("expected changes");
    };
    assert_eq!(touched, vec![v1.id]);
    assert!(rows.is_empty());
}

#[test]
fn another_connections_commit_is_signalled_and_logged() {
    let (_dir, path, a, _master) = initialised();
    let mut b = crate::store::open(&path).unwrap();
    let signal = a.signal();
    let before = a.change_seq().unwrap();
    assert_eq!(signal.latest(), before);
    let row = b.insert_object(&key("k", "v1")).unwrap();
    assert!(signal.latest() > before, "the commit is announced");
    let Changes::Since { rows, .. } = a.changes_since(before).unwrap() else {
        panic!("expected changes");
    };
    assert_eq!(rows, vec![row]);
}

#[test]
fn reinitialisation_is_a_reload() {
    let (_dir, _path, mut store, _master) = initialised();
    store.insert_object(&key("k", "v1")).unwrap();
    let before = store.change_seq().unwrap();
    store.init_token("again", SO_PIN, ITERATIONS, 90).unwrap();
    assert!(matches!(
        store.changes_since(before).unwrap(),
        Changes::Reload { rows, .. } if rows.is_empty()
    ));
}

#[test]
fn version_cap_is_checked_inside_the_write_transaction() {
    let (_dir, _path, mut store, _master) = initialised();
    let capped = |v: &str| NewObject {
        max_versions: Some(2),
        ..key("k", v)
    };
    store.insert_object(&capped("v1")).unwrap();
    store.insert_object(&capped("v2")).unwrap();
    assert_eq!(
        store.insert_object(&capped("v3")).unwrap_err(),
        Error(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(store.versions_of("k").unwrap().len(), 2);
}

#[test]
fn insert_replacing_a_version_that_is_no_longer_current_is_rejected() {
    let (_dir, _path, mut store, _master) = initialised();
    store.insert_object(&key("k", "v1")).unwrap();
    store.insert_object(&key("k", "v2")).unwrap();
    let late = NewObject {
        replaces: Some("v1".into()),
        ..key("k", "v3")
    };
    assert_eq!(
        store.insert_object(&late).unwrap_err(),
        Error(CKR_FUNCTION_REJECTED)
    );
    let ok = NewObject {
        replaces: Some("v2".into()),
        ..key("k", "v3")
    };
    store.insert_object(&ok).unwrap();
}

// ---- on disk ----

#[test]
fn fresh_store_is_private_on_disk() {
    let (_dir, path, mut store, _master) = initialised();
    store.insert_object(&key("k", "v1")).unwrap();
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    for suffix in ["-wal", "-shm"] {
        // Both exist while a WAL connection is open.
        assert_eq!(mode(&sidecar(&path, suffix)), 0o600, "{suffix}");
    }
}

#[test]
fn existing_directory_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o750)).unwrap();
    crate::store::open(&dir.path().join("token.db")).unwrap();
    assert_eq!(mode(dir.path()), 0o750);
    assert_eq!(mode(&dir.path().join("token.db")), 0o600);
}

#[test]
fn schema_version_is_recorded() {
    let (_dir, path, _store) = fresh();
    let conn = Connection::open(&path).unwrap();
    let v: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn sealed_blob_from_the_store_opens_only_under_its_kid() {
    let (_dir, _path, mut store, master) = initialised();
    let kid = b"softmhsm://t/keys/k/v1";
    let mut new = key("k", "v1");
    new.sealed = Some(master.seal(kid, b"secret").unwrap());
    let row = store.insert_object(&new).unwrap();
    let sealed = store.object(row.id).unwrap().unwrap().sealed.unwrap();
    let user = store.unlock(PinUser::User, USER_PIN).unwrap();
    assert_eq!(&user.open(kid, &sealed).unwrap()[..], b"secret");
    let err = user.open(b"softmhsm://t/keys/k/v2", &sealed).unwrap_err();
    assert_eq!(err, Error(CKR_DEVICE_ERROR));
}

#[test]
fn no_secret_pin_or_master_key_on_disk() {
    let (_dir, path, mut store, master) = initialised();
    let mut secret = [0u8; 32];
    fill_random(&mut secret).unwrap();
    let kid = b"softmhsm://t/keys/k/v1";
    let mut new = key("k", "v1");
    let sealed = master.seal(kid, &secret).unwrap();
    new.sealed = Some(sealed.clone());
    store.insert_object(&new).unwrap();
    // Also change a PIN and fail a login, so every write path has run.
    store.set_pin(PinUser::User, &master, USER_PIN).unwrap();
    store.unlock(PinUser::User, b"wrong").unwrap_err();

    let scan = |when: &str| {
        let mut files = 0;
        let mut sealed_seen = false;
        for suffix in ["", "-wal", "-shm"] {
            let file = sidecar(&path, suffix);
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            files += 1;
            // Control: the scan does see the stored (sealed) record.
            sealed_seen |= contains(&bytes, &sealed);
            assert!(!contains(&bytes, &secret), "secret in {suffix} {when}");
            assert!(
                !contains(&bytes, master.bytes()),
                "master key in {suffix} {when}"
            );
            assert!(!contains(&bytes, USER_PIN), "user PIN in {suffix} {when}");
            assert!(!contains(&bytes, SO_PIN), "SO PIN in {suffix} {when}");
        }
        assert!(files >= 1);
        assert!(sealed_seen, "sealed blob not found {when}");
    };
    scan("while open");
    drop(store);
    scan("after close");
}

#[test]
fn forget_secret_erases_the_sealed_material_and_keeps_the_row() {
    let (_dir, _path, mut store, _master) = initialised();
    let row = store.insert_object(&key("k", "v1")).unwrap();
    store
        .forget_secret(row.id, r#"{"v":"public only"}"#)
        .unwrap();
    let after = store.object(row.id).unwrap().unwrap();
    assert_eq!(after.sealed, None);
    assert_eq!(after.attrs, r#"{"v":"public only"}"#);
    assert!(after.current);
    assert_eq!(
        store.forget_secret(9999, "{}"),
        Err(Error(CKR_OBJECT_HANDLE_INVALID))
    );
}

/// Now, in seconds since the epoch, as the store counts it.
fn now() -> i64 {
    super::now()
}

#[test]
fn soft_delete_hides_every_version_of_a_name() {
    let (_dir, _path, mut store, _) = initialised();
    store.insert_object(&key("Gone", "v1")).unwrap();
    store.insert_object(&key("gone", "v2")).unwrap();
    let kept = store.insert_object(&key("kept", "v1")).unwrap();
    let gone: Vec<i64> = store
        .versions_of("gone")
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(store.soft_delete_name("GONE", now()).unwrap(), gone);
    assert_eq!(store.objects().unwrap(), vec![kept.clone()]);
    assert!(store.versions_of("gone").unwrap().is_empty());
    assert_eq!(store.object(kept.id).unwrap(), Some(kept));
}

#[test]
fn soft_delete_of_an_unknown_name_deletes_nothing() {
    let (_dir, _path, mut store, _) = initialised();
    assert_eq!(store.soft_delete_name("nobody", now()).unwrap().len(), 0);
}

#[test]
fn deleted_names_list_the_current_version_with_dates() {
    let (_dir, _path, mut store, _) = initialised();
    store.insert_object(&key("k", "v1")).unwrap();
    let v2 = store.insert_object(&key("k", "v2")).unwrap();
    let t = now();
    store.soft_delete_name("k", t).unwrap();
    let deleted = store.deleted_names().unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].row, v2);
    assert_eq!(deleted[0].deleted_at, t);
    assert_eq!(deleted[0].purge_at, t + 90 * 86_400);
    let one = store
        .deleted_name("K")
        .unwrap()
        .expect("deleted_name is case-insensitive");
    assert_eq!(
        (one.row, one.deleted_at, one.purge_at),
        (v2, t, t + 90 * 86_400)
    );
    assert!(store.deleted_name("other").unwrap().is_none());
}

#[test]
fn recover_brings_every_version_back() {
    let (_dir, _path, mut store, _) = initialised();
    let v1 = store.insert_object(&key("k", "v1")).unwrap();
    let v2 = store.insert_object(&key("k", "v2")).unwrap();
    store.soft_delete_name("k", now()).unwrap();
    assert_eq!(
        store.recover_name_rewriting("K", &|_, _| Ok(None)).unwrap(),
        2
    );
    let v1 = ObjectRow {
        current: false,
        ..v1
    };
    assert_eq!(store.versions_of("k").unwrap(), vec![v1, v2]);
    assert!(store.deleted_names().unwrap().is_empty());
    assert_eq!(
        store.recover_name_rewriting("k", &|_, _| Ok(None)).unwrap(),
        0
    );
}

#[test]
fn a_deleted_name_is_taken_until_purged() {
    let (_dir, _path, mut store, _) = initialised();
    store.insert_object(&key("k", "v1")).unwrap();
    store.soft_delete_name("k", now()).unwrap();
    assert_eq!(
        store.insert_object(&key("K", "v2")).unwrap_err(),
        Error(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(store.purge_name("k", now()).unwrap(), 1);
    store.insert_object(&key("K", "v2")).unwrap();
    assert_eq!(store.versions_of("k").unwrap().len(), 1);
}

#[test]
fn purge_only_touches_deleted_keys() {
    let (_dir, _path, mut store, _) = initialised();
    store.insert_object(&key("live", "v1")).unwrap();
    assert_eq!(store.purge_name("live", now()).unwrap(), 0);
    assert_eq!(store.versions_of("live").unwrap().len(), 1);
}

#[test]
fn purge_protection_refuses_purge_before_the_date() {
    let (_dir, _path, mut store, _) = initialised();
    store.set_purge_protection(true).unwrap();
    assert!(store.token().unwrap().unwrap().purge_protection);
    store.insert_object(&key("k", "v1")).unwrap();
    let t = now();
    store.soft_delete_name("k", t).unwrap();
    assert_eq!(
        store.purge_name("k", t).unwrap_err(),
        Error(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(store.purge_name("k", t + 90 * 86_400).unwrap(), 1);
}

#[test]
fn purge_protection_cannot_be_turned_off() {
    let (_dir, _path, mut store, _) = initialised();
    store.set_purge_protection(true).unwrap();
    assert_eq!(
        store.set_purge_protection(false).unwrap_err(),
        Error(CKR_ACTION_PROHIBITED)
    );
}

#[test]
fn keys_past_their_purge_date_are_purged_at_open() {
    let (_dir, path, mut store, _) = initialised();
    store.insert_object(&key("old", "v1")).unwrap();
    store.insert_object(&key("new", "v1")).unwrap();
    // Deleted long enough ago that its 90 days are over.
    store.soft_delete_name("old", now() - 91 * 86_400).unwrap();
    store.soft_delete_name("new", now()).unwrap();
    drop(store);
    let store = crate::store::open(&path).unwrap();
    let names: Vec<String> = store
        .deleted_names()
        .unwrap()
        .into_iter()
        .filter_map(|d| d.row.name)
        .collect();
    assert_eq!(names, vec!["new".to_string()]);
}

#[test]
fn attributes_of_a_deleted_row_cannot_be_rewritten() {
    let (_dir, _path, mut store, _) = initialised();
    let row = store.insert_object(&key("k", "v1")).unwrap();
    store.soft_delete_name("k", now()).unwrap();
    assert_eq!(
        store.update_attrs(row.id, "{}").unwrap_err(),
        Error(CKR_OBJECT_HANDLE_INVALID)
    );
}

#[test]
fn restore_versions_makes_the_last_current_and_refuses_a_taken_name() {
    let (_dir, _path, mut store, _) = initialised();
    let rows = store
        .restore_versions(&[key("k", "v1"), key("k", "v2")], None)
        .unwrap();
    assert_eq!(store.versions_of("k").unwrap(), rows);
    assert_eq!(current_of(&*store, "k"), vec![rows[1].id]);
    assert_eq!(
        store.restore_versions(&[key("K", "v3")], None).unwrap_err(),
        Error(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    store.soft_delete_name("k", now()).unwrap();
    assert_eq!(
        store
            .restore_versions(&[key("k", "v3")], Some("{}"))
            .unwrap_err(),
        Error(CKR_ATTRIBUTE_VALUE_INVALID),
        "a deleted key's name is taken too"
    );
}
