//! The store test suite, run against every backend: each case takes a
//! [`Fixture`] (a fresh, empty store location: an SQLite file in a temp dir, or
//! a schema of its own in the test PostgreSQL cluster) and [`suite!`] makes one
//! test per case and backend (`store::suite::sqlite::…`, `store::suite::postgres::…`).

use crate::error::Error;
use crate::store::*;
use cryptoki_sys::*;
use tempfile::TempDir;

const SO_PIN: &[u8] = b"so-pin-3141";
const USER_PIN: &[u8] = b"user-pin-2718";
/// Low on purpose: tests run PBKDF2 many times in debug builds.
const ITERATIONS: u32 = 1000;

/// A fresh, empty store location for one test.
pub(super) struct Fixture {
    /// Where the store is.
    pub location: Location,
    _dir: Option<TempDir>,
}

impl Fixture {
    /// An SQLite file in a not-yet-existing subdirectory of a temp dir.
    pub fn sqlite() -> Option<Fixture> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool").join("token.db");
        Some(Fixture {
            location: Location::Path(path),
            _dir: Some(dir),
        })
    }

    /// A new schema in the shared test cluster (None: no PostgreSQL, and
    /// not required; see [`super::pg_cluster`]).
    pub fn postgres() -> Option<Fixture> {
        let cluster = super::pg_cluster::shared()?;
        Some(Fixture {
            location: Location::Url(cluster.schema()),
            _dir: None,
        })
    }

    /// A new connection to the store (created on first open).
    pub fn open(&self) -> Box<dyn Store> {
        crate::store::open(&self.location).unwrap()
    }
}

/// A store initialised with `SO_PIN` and with `USER_PIN` set.
fn initialised(f: &Fixture) -> (Box<dyn Store>, MasterKey) {
    let mut store = f.open();
    let master = store
        .init_token("test token", SO_PIN, ITERATIONS, 90)
        .unwrap();
    store.set_pin(PinUser::User, &master, USER_PIN).unwrap();
    (store, master)
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

/// Now, in seconds since the epoch, as the store counts it.
fn now() -> i64 {
    crate::store::now()
}

/// One `#[test]` per case and backend.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $case() {
                if let Some(f) = super::Fixture::sqlite() {
                    super::$case(&f);
                }
            })*
        }
        mod postgres {
            $(#[test]
            fn $case() {
                if let Some(f) = super::Fixture::postgres() {
                    super::$case(&f);
                }
            })*
        }
    };
}

suite!(
    so_and_user_unlock_the_same_master_key,
    token_record_reflects_init,
    init_rejects_zero_iterations_and_retention_out_of_range,
    unlock_before_init_is_token_not_recognized,
    set_pin_before_init_is_token_not_recognized,
    user_unlock_without_user_pin_is_user_pin_not_initialized,
    wrong_pin_is_pin_incorrect_and_counted,
    so_pin_is_not_the_user_pin,
    right_pin_resets_the_counter,
    ten_failures_lock_the_user_pin_even_against_the_right_pin,
    set_pin_resets_the_counter_and_unlocks,
    set_so_pin_changes_only_the_so_pin,
    so_pin_never_locks_but_failures_are_counted,
    failures_persist_across_reopen,
    failures_are_shared_by_two_stores_on_one_file,
    concurrent_wrong_pins_are_all_counted,
    reinit_wipes_objects_and_the_user_pin,
    reinit_forgets_rotation_policies,
    lookups_find_live_rows_by_either_label_ckaid_and_version,
    insert_then_read_back,
    unnamed_objects_are_all_current,
    missing_object_is_none,
    update_attrs_replaces_the_json,
    update_or_delete_of_missing_object_is_handle_invalid,
    names_differing_in_case_are_versions_and_only_the_last_is_current,
    deleting_the_current_version_makes_the_previous_current,
    deleting_an_old_version_keeps_the_current_one,
    ids_are_never_reused_after_delete_or_reinit,
    objects_survive_reopen,
    changes_since_names_every_row_a_write_touched,
    soft_deleted_row_is_touched_without_a_live_row,
    another_connections_commit_is_signalled_and_logged,
    reinitialisation_is_a_reload,
    version_cap_is_checked_inside_the_write_transaction,
    insert_replacing_a_version_that_is_no_longer_current_is_rejected,
    sealed_blob_from_the_store_opens_only_under_its_kid,
    forget_secret_erases_the_sealed_material_and_keeps_the_row,
    soft_delete_hides_every_version_of_a_name,
    soft_delete_of_an_unknown_name_deletes_nothing,
    deleted_names_list_the_current_version_with_dates,
    recover_brings_every_version_back,
    a_deleted_name_is_taken_until_purged,
    purge_only_touches_deleted_keys,
    purge_protection_refuses_purge_before_the_date,
    purge_protection_cannot_be_turned_off,
    provisioned_state_is_a_reload_and_reinit_clears_it,
    keys_past_their_purge_date_are_purged_at_open,
    attributes_of_a_deleted_row_cannot_be_rewritten,
    restore_versions_makes_the_last_current_and_refuses_a_taken_name,
    a_principal_pin_unwraps_the_master_key_and_no_other_principals_blob,
    principal_failures_are_counted_and_reset_by_a_new_pin,
    assignments_need_a_principal_are_unique_and_logged_as_access_changes,
    deleting_a_principal_deletes_its_assignments_and_reinit_wipes_both,
    custom_roles_are_unique_by_name_and_kept_while_assigned,
);

fn so_and_user_unlock_the_same_master_key(f: &Fixture) {
    let (mut store, master) = initialised(f);
    let so = store.unlock(PinUser::So, SO_PIN).unwrap();
    let user = store.unlock(PinUser::User, USER_PIN).unwrap();
    assert!(same_key(&master, &so));
    assert!(same_key(&so, &user));
    assert!(same_key(&user, &master));
}

fn token_record_reflects_init(f: &Fixture) {
    let mut store = f.open();
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

fn init_rejects_zero_iterations_and_retention_out_of_range(f: &Fixture) {
    let mut store = f.open();
    for (iterations, days) in [(0, 90), (ITERATIONS, 6), (ITERATIONS, 91)] {
        let err = store.init_token("t", SO_PIN, iterations, days).unwrap_err();
        assert_eq!(err, Error(CKR_ARGUMENTS_BAD));
    }
    assert_eq!(store.token().unwrap(), None);
}

fn unlock_before_init_is_token_not_recognized(f: &Fixture) {
    let mut store = f.open();
    let err = store.unlock(PinUser::So, SO_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_TOKEN_NOT_RECOGNIZED));
    let err = store.unlock(PinUser::User, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_TOKEN_NOT_RECOGNIZED));
}

fn set_pin_before_init_is_token_not_recognized(f: &Fixture) {
    let mut store = f.open();
    let master = MasterKey::generate().unwrap();
    let err = store.set_pin(PinUser::User, &master, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_TOKEN_NOT_RECOGNIZED));
}

fn user_unlock_without_user_pin_is_user_pin_not_initialized(f: &Fixture) {
    let mut store = f.open();
    store.init_token("t", SO_PIN, ITERATIONS, 90).unwrap();
    let err = store.unlock(PinUser::User, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_USER_PIN_NOT_INITIALIZED));
    assert_eq!(user_failures(&*store), 0);
}

fn wrong_pin_is_pin_incorrect_and_counted(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    for expected in 1..=3 {
        let err = store.unlock(PinUser::User, b"wrong").unwrap_err();
        assert_eq!(err, Error(CKR_PIN_INCORRECT));
        assert_eq!(user_failures(&*store), expected);
    }
}

fn so_pin_is_not_the_user_pin(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let err = store.unlock(PinUser::User, SO_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_PIN_INCORRECT));
    let err = store.unlock(PinUser::So, USER_PIN).unwrap_err();
    assert_eq!(err, Error(CKR_PIN_INCORRECT));
}

fn right_pin_resets_the_counter(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    store.unlock(PinUser::User, USER_PIN).unwrap();
    assert_eq!(user_failures(&*store), 0);
}

fn ten_failures_lock_the_user_pin_even_against_the_right_pin(f: &Fixture) {
    let (mut store, _master) = initialised(f);
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

fn set_pin_resets_the_counter_and_unlocks(f: &Fixture) {
    let (mut store, master) = initialised(f);
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

fn set_so_pin_changes_only_the_so_pin(f: &Fixture) {
    let (mut store, master) = initialised(f);
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

fn so_pin_never_locks_but_failures_are_counted(f: &Fixture) {
    let (mut store, master) = initialised(f);
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

fn failures_persist_across_reopen(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    drop(store);
    let mut store = f.open();
    assert_eq!(user_failures(&*store), 2);
    store.unlock(PinUser::User, b"wrong").unwrap_err();
    assert_eq!(user_failures(&*store), 3);
}

fn failures_are_shared_by_two_stores_on_one_file(f: &Fixture) {
    let (mut a, _master) = initialised(f);
    let mut b = f.open();
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

fn concurrent_wrong_pins_are_all_counted(f: &Fixture) {
    let (store, _master) = initialised(f);
    drop(store);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let location = f.location.clone();
            std::thread::spawn(move || {
                let mut store = crate::store::open(&location).unwrap();
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
    assert_eq!(user_failures(&*f.open()), 8);
}

fn reinit_wipes_objects_and_the_user_pin(f: &Fixture) {
    let (mut store, old) = initialised(f);
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

fn insert_then_read_back(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let new = key("Key1", "0123456789abcdef0123456789abcdef");
    let row = store.insert_object(&new).unwrap();
    assert!(row.current);
    assert_eq!(row.name.as_deref(), Some("Key1"));
    assert_eq!(row.attrs, new.attrs);
    assert_eq!(row.sealed, new.sealed);
    assert_eq!(store.object(row.id).unwrap(), Some(row.clone()));
    assert_eq!(store.objects().unwrap(), vec![row]);
}

fn unnamed_objects_are_all_current(f: &Fixture) {
    let (mut store, _master) = initialised(f);
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

fn missing_object_is_none(f: &Fixture) {
    let (store, _master) = initialised(f);
    assert_eq!(store.object(42).unwrap(), None);
}

fn update_attrs_replaces_the_json(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let row = store.insert_object(&key("k", "v1")).unwrap();
    store
        .update_attrs(row.id, r#"{"enabled":false}"#, &RowKeys::default())
        .unwrap();
    let back = store.object(row.id).unwrap().unwrap();
    assert_eq!(back.attrs, r#"{"enabled":false}"#);
    assert_eq!(back.sealed, row.sealed);
}

fn update_or_delete_of_missing_object_is_handle_invalid(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let err = store
        .update_attrs(7, "{}", &RowKeys::default())
        .unwrap_err();
    assert_eq!(err, Error(CKR_OBJECT_HANDLE_INVALID));
    let err = store.delete_object(7).unwrap_err();
    assert_eq!(err, Error(CKR_OBJECT_HANDLE_INVALID));
}

fn names_differing_in_case_are_versions_and_only_the_last_is_current(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    store.insert_object(&key("Key1", "v1")).unwrap();
    store.insert_object(&key("key1", "v2")).unwrap();
    let last = store.insert_object(&key("KEY1", "v3")).unwrap();
    store.insert_object(&key("other", "v1")).unwrap();
    assert_eq!(current_of(&*store, "key1"), vec![last.id]);
    assert_eq!(current_of(&*store, "other").len(), 1);
    assert_eq!(store.objects().unwrap().len(), 4);
}

fn deleting_the_current_version_makes_the_previous_current(f: &Fixture) {
    let (mut store, _master) = initialised(f);
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

fn deleting_an_old_version_keeps_the_current_one(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let v1 = store.insert_object(&key("Key1", "v1")).unwrap();
    let v2 = store.insert_object(&key("Key1", "v2")).unwrap();
    assert_eq!(
        store.delete_object(v1.id).unwrap(),
        None,
        "no version was promoted"
    );
    assert_eq!(current_of(&*store, "key1"), vec![v2.id]);
}

fn ids_are_never_reused_after_delete_or_reinit(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let first = store.insert_object(&key("a", "v1")).unwrap();
    store.delete_object(first.id).unwrap();
    let second = store.insert_object(&key("a", "v2")).unwrap();
    assert!(second.id > first.id);
    store.init_token("t", SO_PIN, ITERATIONS, 90).unwrap();
    let third = store.insert_object(&key("a", "v3")).unwrap();
    assert!(third.id > second.id);
}

fn objects_survive_reopen(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let row = store.insert_object(&key("Key1", "v1")).unwrap();
    drop(store);
    let store = f.open();
    assert_eq!(store.object(row.id).unwrap(), Some(row));
}

fn changes_since_names_every_row_a_write_touched(f: &Fixture) {
    let (mut store, _master) = initialised(f);
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

fn soft_deleted_row_is_touched_without_a_live_row(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let v1 = store.insert_object(&key("k", "v1")).unwrap();
    let before = store.change_seq().unwrap();
    store.soft_delete_name("k", 1).unwrap();
    let Changes::Since { touched, rows, .. } = store.changes_since(before).unwrap() else {
        panic!("expected changes");
    };
    assert_eq!(touched, vec![v1.id]);
    assert!(rows.is_empty());
}

fn another_connections_commit_is_signalled_and_logged(f: &Fixture) {
    let (a, _master) = initialised(f);
    let mut b = f.open();
    let signal = a.signal();
    let before = a.change_seq().unwrap();
    assert_eq!(signal.latest(), before);
    let row = b.insert_object(&key("k", "v1")).unwrap();
    // Another process's commit reaches the signal asynchronously (a
    // notification, for PostgreSQL): within the staleness bound at most.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while signal.latest() <= before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(signal.latest() > before, "the commit is announced");
    let Changes::Since { rows, .. } = a.changes_since(before).unwrap() else {
        panic!("expected changes");
    };
    assert_eq!(rows, vec![row]);
}

fn reinitialisation_is_a_reload(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    store.insert_object(&key("k", "v1")).unwrap();
    let before = store.change_seq().unwrap();
    store.init_token("again", SO_PIN, ITERATIONS, 90).unwrap();
    assert!(matches!(
        store.changes_since(before).unwrap(),
        Changes::Reload { .. }
    ));
    assert!(store.objects().unwrap().is_empty());
}

fn version_cap_is_checked_inside_the_write_transaction(f: &Fixture) {
    let (mut store, _master) = initialised(f);
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

fn insert_replacing_a_version_that_is_no_longer_current_is_rejected(f: &Fixture) {
    let (mut store, _master) = initialised(f);
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

fn sealed_blob_from_the_store_opens_only_under_its_kid(f: &Fixture) {
    let (mut store, master) = initialised(f);
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

fn forget_secret_erases_the_sealed_material_and_keeps_the_row(f: &Fixture) {
    let (mut store, _master) = initialised(f);
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

fn soft_delete_hides_every_version_of_a_name(f: &Fixture) {
    let (mut store, _) = initialised(f);
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

fn soft_delete_of_an_unknown_name_deletes_nothing(f: &Fixture) {
    let (mut store, _) = initialised(f);
    assert_eq!(store.soft_delete_name("nobody", now()).unwrap().len(), 0);
}

fn deleted_names_list_the_current_version_with_dates(f: &Fixture) {
    let (mut store, _) = initialised(f);
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

fn recover_brings_every_version_back(f: &Fixture) {
    let (mut store, _) = initialised(f);
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

fn a_deleted_name_is_taken_until_purged(f: &Fixture) {
    let (mut store, _) = initialised(f);
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

fn purge_only_touches_deleted_keys(f: &Fixture) {
    let (mut store, _) = initialised(f);
    store.insert_object(&key("live", "v1")).unwrap();
    assert_eq!(store.purge_name("live", now()).unwrap(), 0);
    assert_eq!(store.versions_of("live").unwrap().len(), 1);
}

fn purge_protection_refuses_purge_before_the_date(f: &Fixture) {
    let (mut store, _) = initialised(f);
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

fn purge_protection_cannot_be_turned_off(f: &Fixture) {
    let (mut store, _) = initialised(f);
    store.set_purge_protection(true).unwrap();
    assert_eq!(
        store.set_purge_protection(false).unwrap_err(),
        Error(CKR_ACTION_PROHIBITED)
    );
}

fn provisioned_state_is_a_reload_and_reinit_clears_it(f: &Fixture) {
    let mut store = f.open();
    assert_eq!(
        store.set_provisioned(true).unwrap_err(),
        Error(CKR_TOKEN_NOT_RECOGNIZED)
    );
    store.init_token("t", SO_PIN, ITERATIONS, 90).unwrap();
    assert!(
        !store.token().unwrap().unwrap().provisioned,
        "active at init"
    );
    let before = store.change_seq().unwrap();
    store.set_provisioned(true).unwrap();
    assert!(store.token().unwrap().unwrap().provisioned);
    assert!(
        matches!(store.changes_since(before).unwrap(), Changes::Reload { .. }),
        "other processes reload the token row"
    );
    assert!(f.open().token().unwrap().unwrap().provisioned, "persisted");
    store.set_provisioned(false).unwrap();
    assert!(!store.token().unwrap().unwrap().provisioned);
    store.set_provisioned(true).unwrap();
    store.init_token("t", SO_PIN, ITERATIONS, 90).unwrap();
    assert!(
        !store.token().unwrap().unwrap().provisioned,
        "a re-initialised token is active"
    );
}

fn keys_past_their_purge_date_are_purged_at_open(f: &Fixture) {
    let (mut store, _) = initialised(f);
    store.insert_object(&key("old", "v1")).unwrap();
    store.insert_object(&key("new", "v1")).unwrap();
    // Deleted long enough ago that its 90 days are over.
    store.soft_delete_name("old", now() - 91 * 86_400).unwrap();
    store.soft_delete_name("new", now()).unwrap();
    drop(store);
    let store = f.open();
    let names: Vec<String> = store
        .deleted_names()
        .unwrap()
        .into_iter()
        .filter_map(|d| d.row.name)
        .collect();
    assert_eq!(names, vec!["new".to_string()]);
}

fn attributes_of_a_deleted_row_cannot_be_rewritten(f: &Fixture) {
    let (mut store, _) = initialised(f);
    let row = store.insert_object(&key("k", "v1")).unwrap();
    store.soft_delete_name("k", now()).unwrap();
    assert_eq!(
        store
            .update_attrs(row.id, "{}", &RowKeys::default())
            .unwrap_err(),
        Error(CKR_OBJECT_HANDLE_INVALID)
    );
}

fn restore_versions_makes_the_last_current_and_refuses_a_taken_name(f: &Fixture) {
    let (mut store, _) = initialised(f);
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

fn reinit_forgets_rotation_policies(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    store.insert_object(&key("k", "v1")).unwrap();
    store.set_rotation_policy("k", Some("{}")).unwrap();
    store.init_token("again", SO_PIN, ITERATIONS, 90).unwrap();
    store.insert_object(&key("k", "v1")).unwrap();
    assert_eq!(store.rotation_policy("k").unwrap(), None);
    assert!(store.rotation_policies().unwrap().is_empty());
}

fn keyed(
    name: &str,
    version: &str,
    label: &[u8],
    public_label: Option<&[u8]>,
    ckaid: &[u8],
) -> NewObject {
    NewObject {
        keys: RowKeys {
            label: label.to_vec(),
            public_label: public_label.map(<[u8]>::to_vec),
            ckaid: ckaid.to_vec(),
        },
        ..key(name, version)
    }
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

fn lookups_find_live_rows_by_either_label_ckaid_and_version(f: &Fixture) {
    let (mut store, _master) = initialised(f);
    let a = store
        .insert_object(&keyed("a", "va", b"web", None, b"\x01"))
        .unwrap()
        .id;
    let b = store
        .insert_object(&keyed("b", "vb", b"priv", Some(b"web"), b"\x02"))
        .unwrap()
        .id;
    let c = store
        .insert_object(&keyed("c", "vc", b"other", None, b"\x01"))
        .unwrap()
        .id;
    assert_eq!(
        sorted(store.lookup(Lookup::Label(b"web")).unwrap()),
        vec![a, b],
        "label or public label"
    );
    assert_eq!(store.lookup(Lookup::Label(b"priv")).unwrap(), vec![b]);
    assert_eq!(
        sorted(store.lookup(Lookup::CkaId(b"\x01")).unwrap()),
        vec![a, c]
    );
    assert_eq!(store.lookup(Lookup::Version("vc")).unwrap(), vec![c]);
    assert!(store.lookup(Lookup::Label(b"none")).unwrap().is_empty());
    assert_eq!(sorted(store.lookup(Lookup::All).unwrap()), vec![a, b, c]);
    // Soft-deleted rows are not found; an update moves the keys.
    store.soft_delete_name("a", 1_000).unwrap();
    assert_eq!(store.lookup(Lookup::Label(b"web")).unwrap(), vec![b]);
    let keys = RowKeys {
        label: b"renamed".to_vec(),
        public_label: None,
        ckaid: b"\x02".to_vec(),
    };
    store.update_attrs(c, "{}", &keys).unwrap();
    assert_eq!(store.lookup(Lookup::Label(b"renamed")).unwrap(), vec![c]);
    assert!(store.lookup(Lookup::Label(b"other")).unwrap().is_empty());
    assert_eq!(
        sorted(
            store
                .objects_by_ids(&[a, b, c, 999])
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect()
        ),
        vec![b, c],
        "live rows among the ids"
    );
}

fn principal(name: &str, object_id: &str) -> Principal {
    Principal {
        name: name.into(),
        object_id: object_id.into(),
        created: now(),
    }
}

fn assignment(id: &str, principal: &str, scope: &str) -> Assignment {
    Assignment {
        id: id.into(),
        principal: principal.into(),
        role_id: "21dbd100-6940-42c2-9190-5d6cb909625b".into(),
        scope: scope.into(),
        created: now(),
    }
}

fn a_principal_pin_unwraps_the_master_key_and_no_other_principals_blob(f: &Fixture) {
    let (mut store, master) = initialised(f);
    assert!(store
        .add_principal(&principal("App1", "id-1"), &master, b"pin-one")
        .unwrap());
    assert!(store
        .add_principal(&principal("app2", "id-2"), &master, b"pin-two")
        .unwrap());
    assert!(
        !store
            .add_principal(&principal("APP1", "id-3"), &master, b"x")
            .unwrap(),
        "names are unique case-insensitively"
    );
    let (p, slot) = store.principal_pin("app1").unwrap().unwrap();
    assert_eq!((p.name.as_str(), p.object_id.as_str()), ("App1", "id-1"));
    let opened = check_principal_pin(&p.object_id, &slot, b"pin-one").unwrap();
    assert!(same_key(&opened, &master));
    assert_eq!(
        check_principal_pin(&p.object_id, &slot, b"pin-two").unwrap_err(),
        Error(CKR_PIN_INCORRECT)
    );
    // app2's blob copied onto app1 does not open: the AAD names the object id.
    let (_, other) = store.principal_pin("app2").unwrap().unwrap();
    assert_eq!(
        check_principal_pin("id-1", &other, b"pin-two").unwrap_err(),
        Error(CKR_PIN_INCORRECT)
    );
    assert!(store.principal_pin("nobody").unwrap().is_none());
    let names: Vec<String> = store
        .principals()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["App1", "app2"]);
}

fn principal_failures_are_counted_and_reset_by_a_new_pin(f: &Fixture) {
    let (mut store, master) = initialised(f);
    store
        .add_principal(&principal("a", "id-a"), &master, b"pin-a")
        .unwrap();
    for _ in 0..MAX_PIN_FAILURES {
        store.count_principal_login("a", false).unwrap();
    }
    let (p, slot) = store.principal_pin("a").unwrap().unwrap();
    assert_eq!(slot.failures, MAX_PIN_FAILURES);
    assert_eq!(
        check_principal_pin(&p.object_id, &slot, b"pin-a").unwrap_err(),
        Error(CKR_PIN_LOCKED),
        "locked even against the right PIN"
    );
    assert_eq!(
        user_failures(store.as_ref()),
        0,
        "the user PIN is untouched"
    );
    assert!(store.set_principal_pin("A", &master, b"pin-b").unwrap());
    let (p, slot) = store.principal_pin("a").unwrap().unwrap();
    assert_eq!(slot.failures, 0);
    assert!(check_principal_pin(&p.object_id, &slot, b"pin-b").is_ok());
    assert!(!store.set_principal_pin("zz", &master, b"pin-b").unwrap());
}

fn assignments_need_a_principal_are_unique_and_logged_as_access_changes(f: &Fixture) {
    let (mut store, master) = initialised(f);
    store
        .add_principal(&principal("app1", "id-1"), &master, b"pin-one")
        .unwrap();
    let seq = store.change_seq().unwrap();
    assert!(!store
        .add_assignment(&assignment("a0", "ghost", "/"))
        .unwrap());
    assert!(store
        .add_assignment(&assignment("a1", "APP1", "/keys/Web"))
        .unwrap());
    assert!(
        !store
            .add_assignment(&assignment("a2", "app1", "/keys/web"))
            .unwrap(),
        "the same role at the same scope (case-insensitive) once"
    );
    let list = store.assignments().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].principal.as_str(), list[0].scope.as_str()),
        ("app1", "/keys/Web")
    );
    match store.changes_since(seq).unwrap() {
        Changes::Since { touched, .. } => assert!(touched.contains(&-1), "{touched:?}"),
        other => panic!("{other:?}"),
    }
    let seq = store.change_seq().unwrap();
    assert!(store
        .delete_assignment("app1", "21dbd100-6940-42c2-9190-5d6cb909625b", "/KEYS/web")
        .unwrap());
    assert!(store.assignments().unwrap().is_empty());
    match store.changes_since(seq).unwrap() {
        Changes::Since { touched, .. } => assert_eq!(touched, [-1]),
        other => panic!("{other:?}"),
    }
}

fn deleting_a_principal_deletes_its_assignments_and_reinit_wipes_both(f: &Fixture) {
    let (mut store, master) = initialised(f);
    for (n, id) in [("a", "id-a"), ("b", "id-b")] {
        store
            .add_principal(&principal(n, id), &master, b"pin-x")
            .unwrap();
        assert!(store.add_assignment(&assignment(id, n, "/")).unwrap());
    }
    assert!(store.delete_principal("A").unwrap());
    assert!(!store.delete_principal("a").unwrap());
    let left: Vec<String> = store
        .assignments()
        .unwrap()
        .into_iter()
        .map(|a| a.principal)
        .collect();
    assert_eq!(left, ["b"]);
    store.init_token("again", SO_PIN, ITERATIONS, 90).unwrap();
    assert!(store.principals().unwrap().is_empty());
    assert!(store.assignments().unwrap().is_empty());
}

fn custom_roles_are_unique_by_name_and_kept_while_assigned(f: &Fixture) {
    let (mut store, master) = initialised(f);
    let role = |id: &str, name: &str| RoleRow {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        actions: r#"["Microsoft.KeyVault/managedHsm/keys/sign/action"]"#.into(),
        created: now(),
    };
    let seq = store.change_seq().unwrap();
    assert!(store.add_role_definition(&role("r1", "Signer")).unwrap());
    assert!(!store.add_role_definition(&role("r2", "SIGNER")).unwrap());
    match store.changes_since(seq).unwrap() {
        Changes::Since { touched, .. } => assert_eq!(touched, [-1]),
        other => panic!("{other:?}"),
    }
    store
        .add_principal(&principal("p", "id-p"), &master, b"pin-p")
        .unwrap();
    let mut a = assignment("a1", "p", "/");
    a.role_id = "r1".into();
    assert!(store.add_assignment(&a).unwrap());
    assert_eq!(store.delete_role_definition("r1").unwrap(), Some(1));
    assert_eq!(
        store.role_definitions().unwrap().len(),
        1,
        "kept while assigned"
    );
    assert!(store.delete_assignment("p", "r1", "/").unwrap());
    assert_eq!(store.delete_role_definition("r1").unwrap(), Some(0));
    assert_eq!(store.delete_role_definition("r1").unwrap(), None);
    assert!(store.role_definitions().unwrap().is_empty());
}
