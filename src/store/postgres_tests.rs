//! What only the PostgreSQL store has: migrations run once by racing
//! processes, the change log's edges, notifications, reconnection. The
//! behaviour every store shares is in [`crate::store::suite`].

use super::*;
use crate::store::pg_cluster::{self, Cluster};
use crate::store::{open, Location};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const SO_PIN: &[u8] = b"so-pin-3141";

/// A fresh schema in the shared cluster, or None (no PostgreSQL, not required).
fn fresh() -> Option<Location> {
    Some(Location::Url(pg_cluster::shared()?.schema()))
}

fn key(name: &str, version: &str) -> NewObject {
    NewObject {
        name: Some(name.into()),
        version: Some(version.into()),
        attrs: "{}".into(),
        sealed: Some(vec![1, 2, 3]),
        ..Default::default()
    }
}

/// A superuser connection to the database of `url`, for looking behind the store.
fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// Wait until `cond` holds, for at most 10 s.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn ten_connections_opening_a_fresh_database_migrate_it_once() {
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let url = cluster.database();
    let start = Arc::new(Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                open(&Location::Url(url)).map(|_| ())
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Ok(()), "every opener succeeds");
    }
    let versions: Vec<i32> = admin(&url)
        .query("SELECT version FROM schema_version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![postgres_schema::SCHEMA_VERSION]);
    let locks: i64 = admin(&url)
        .query_one("SELECT COUNT(*) FROM pool_lock", &[])
        .unwrap()
        .get(0);
    assert_eq!(locks, 1, "migration 1 ran once");
}

#[test]
fn a_database_written_by_a_newer_build_is_refused() {
    let Some(Location::Url(url)) = fresh() else {
        return;
    };
    drop(open(&Location::Url(url.clone())).unwrap());
    admin(&url)
        .batch_execute(&format!(
            "SET search_path = {}; UPDATE schema_version SET version = version + 1",
            url.rsplit("%3D").next().unwrap()
        ))
        .unwrap();
    assert_eq!(
        open(&Location::Url(url)).err(),
        Some(Error(CKR_DEVICE_ERROR))
    );
}

#[test]
fn an_unreachable_server_is_a_device_error() {
    let started = Instant::now();
    let url = "postgresql://nobody@127.0.0.1:1/pool?connect_timeout=2";
    assert_eq!(PgStore::open(url).err(), Some(Error(CKR_DEVICE_ERROR)));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_unreachable_server_fails_the_first_call_not_the_opening() {
    let url = "postgresql://nobody@127.0.0.1:1/pool?connect_timeout=2";
    let store = PgStore::on_first_use(url).expect("nothing is reached yet");
    assert_eq!(store.signal().latest(), 0, "the signal does not connect");
    let _ = crate::store::last_failure();
    assert_eq!(store.token().err(), Some(Error(CKR_DEVICE_ERROR)));
    let why = crate::store::last_failure().expect("the failure is kept");
    assert!(
        why.starts_with(&format!("token store {url}: error connecting to server: "))
            && why.contains("Connection refused"),
        "names the server and the cause: {why}"
    );
    assert_eq!(
        store.token().err(),
        Some(Error(CKR_DEVICE_ERROR)),
        "and the next call tries again"
    );
}

#[test]
fn a_store_connects_at_its_first_call_and_then_migrates_and_listens() {
    let Some(Location::Url(url)) = fresh() else {
        return;
    };
    let sessions = || pg_cluster::sessions_of(&url, std::process::id()).len();
    let mut writer = PgStore::open(&url).unwrap();
    writer.init_token("t", SO_PIN, 1000, 90).unwrap();
    let store = PgStore::on_first_use(&url).unwrap();
    let signal = store.signal();
    assert_eq!(signal.latest(), 0);
    assert_eq!(sessions(), 1, "the writer's connection alone");
    assert_eq!(store.token().unwrap().unwrap().label, "t");
    assert_eq!(sessions(), 2, "the first call connected");
    let before = signal.latest();
    assert_eq!(
        before,
        store.change_seq().unwrap(),
        "and caught the feed up"
    );
    writer.insert_object(&key("k", "v1")).unwrap();
    assert!(
        eventually(|| signal.latest() > before),
        "the new connection listens for the change signal"
    );
}

#[test]
fn a_refused_write_draws_no_change_number() {
    let Some(loc) = fresh() else { return };
    let mut store = open(&loc).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    store.insert_object(&key("k", "v1")).unwrap();
    let before = store.change_seq().unwrap();
    let capped = NewObject {
        max_versions: Some(1),
        ..key("k", "v2")
    };
    assert_eq!(
        store.insert_object(&capped).unwrap_err(),
        Error(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(store.change_seq().unwrap(), before);
    assert_eq!(store.signal().latest(), before);
}

#[test]
fn a_caller_ahead_of_the_database_reloads() {
    // A database restored from a backup, or a standby promoted before it had
    // the newest commits: the caller's snapshot may hold rows that are gone.
    let Some(loc) = fresh() else { return };
    let mut store = open(&loc).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    store.insert_object(&key("k", "v1")).unwrap();
    let now = store.change_seq().unwrap();
    assert_eq!(
        store.changes_since(now + 10).unwrap(),
        Changes::Reload { seq: now }
    );
}

#[test]
fn a_caller_behind_the_trimmed_log_reloads() {
    let Some(Location::Url(url)) = fresh() else {
        return;
    };
    let mut store = open(&Location::Url(url.clone())).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    let before = store.change_seq().unwrap();
    store.insert_object(&key("a", "v1")).unwrap();
    store.insert_object(&key("b", "v1")).unwrap();
    let now = store.change_seq().unwrap();
    // What trimming does (it starts at 200,000 entries): the oldest entries
    // go, and the floor says how far.
    let schema = url.rsplit("%3D").next().unwrap().to_string();
    admin(&url)
        .batch_execute(&format!(
            "SET search_path = {schema};
             DELETE FROM changes WHERE seq <= {};
             UPDATE change_floor SET floor = {}",
            before + 1,
            before + 1
        ))
        .unwrap();
    assert!(matches!(
        store.changes_since(before).unwrap(),
        Changes::Reload { seq } if seq == now
    ));
    assert!(matches!(
        store.changes_since(before + 1).unwrap(),
        Changes::Since { seq, .. } if seq == now
    ));
}

#[test]
fn a_settings_change_is_a_reload_and_a_pin_failure_is_no_change() {
    let Some(loc) = fresh() else { return };
    let mut store = open(&loc).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    let before = store.change_seq().unwrap();
    store.count_pin_failure(PinUser::User).unwrap();
    assert_eq!(
        store.change_seq().unwrap(),
        before,
        "counters are not objects"
    );
    store.set_purge_protection(true).unwrap();
    assert!(matches!(
        store.changes_since(before).unwrap(),
        Changes::Reload { .. }
    ));
}

#[test]
fn writes_and_notifications_come_back_after_a_server_restart() {
    crate::logging::init(None);
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let loc = Location::Url(cluster.database());
    let mut store = open(&loc).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    let watcher = open(&loc).unwrap();
    let signal = watcher.signal();
    cluster.restart();
    // The first write after the restart finds its connection dead at BEGIN
    // and reconnects: nothing was sent, so nothing is lost or doubled.
    let row = store.insert_object(&key("k", "v1")).unwrap();
    assert_eq!(watcher.object(row.id).unwrap(), Some(row.clone()));
    // The other store reconnected at its read above (the pool's periodic
    // check makes one): it listens again and hears of writes again.
    let seq = store.change_seq().unwrap();
    assert!(
        eventually(|| signal.latest() >= seq),
        "the signal caught up after the restart"
    );
    store.insert_object(&key("k", "v2")).unwrap();
    let seq = store.change_seq().unwrap();
    assert!(
        eventually(|| signal.latest() >= seq),
        "and hears new writes"
    );
}

#[test]
fn while_the_server_is_down_writes_fail_cleanly_and_reads_too_then_both_work_again() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let loc = Location::Url(cluster.database());
    let mut store = open(&loc).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    let kept = store.insert_object(&key("kept", "v1")).unwrap();
    cluster.while_down(|| {
        let started = Instant::now();
        assert_eq!(
            store.insert_object(&key("k", "v1")).unwrap_err(),
            Error(CKR_DEVICE_ERROR)
        );
        assert_eq!(store.objects().unwrap_err(), Error(CKR_DEVICE_ERROR));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused at once, no hang"
        );
    });
    // Back: the same store reconnects by itself, and nothing was half-written.
    let row = store.insert_object(&key("k", "v1")).unwrap();
    assert_eq!(store.objects().unwrap(), vec![kept, row]);
}

#[test]
fn a_store_listens_on_its_one_connection_and_closes_it_when_dropped() {
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let url = cluster.database();
    let sessions = || pg_cluster::sessions_of(&url, std::process::id()).len();
    let mut store = PgStore::open(&url).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    let mut writer = PgStore::open(&url).unwrap();
    let signal = store.signal();
    let before = signal.latest();
    writer.insert_object(&key("k", "v1")).unwrap();
    assert!(
        eventually(|| signal.latest() > before),
        "the signal hears another connection's write"
    );
    drop(writer);
    assert_eq!(sessions(), 1, "one connection, which also listens");
    drop(signal);
    drop(store);
    assert!(eventually(|| sessions() == 0));
}

#[test]
fn rows_without_keys_are_listed_until_their_keys_are_set() {
    let Some(Location::Url(url)) = fresh() else {
        return;
    };
    let mut store = open(&Location::Url(url.clone())).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    let id = store.insert_object(&key("k", "v1")).unwrap().id;
    assert!(store.unkeyed().unwrap().is_empty());
    // A row whose keys were never filled in (as SQLite rows from before its
    // schema 5 are).
    let schema = url.rsplit("%3D").next().unwrap().to_string();
    admin(&url)
        .batch_execute(&format!(
            "SET search_path = {schema};
             UPDATE objects SET label = NULL, ckaid = NULL WHERE id = {id}"
        ))
        .unwrap();
    assert_eq!(store.unkeyed().unwrap(), vec![(id, "{}".to_string())]);
    let keys = RowKeys {
        label: b"k".to_vec(),
        public_label: None,
        ckaid: b"\x07".to_vec(),
    };
    store.set_keys(&[(id, keys)]).unwrap();
    assert!(store.unkeyed().unwrap().is_empty());
    assert_eq!(store.lookup(Lookup::CkaId(b"\x07")).unwrap(), vec![id]);
}

#[test]
fn a_host_name_is_resolved_without_starting_a_thread() {
    // Tokio would resolve a name on a blocking-pool thread: a thread left in
    // a host process (an nginx master that forks afterwards). The store
    // resolves on the calling thread instead.
    let Some(Location::Url(url)) = fresh() else {
        return;
    };
    let url = url.replace("127.0.0.1", "localhost");
    let tokio_threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("tokio"))
            .count()
    };
    let mut store = open(&Location::Url(url)).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    assert_eq!(tokio_threads(), 0);
}

/// Store-level rates on a durable server (fsync on), for BENCHMARKS.md:
/// `bash tests/with-postgres.sh cargo test --release --lib
/// store_write_and_catch_up_rates -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: needs SOFTMHSM_STORE_URL (tests/with-postgres.sh)"]
fn store_write_and_catch_up_rates() {
    let url = std::env::var("SOFTMHSM_STORE_URL").unwrap();
    let mut store = open(&Location::Url(url)).unwrap();
    store.init_token("t", SO_PIN, 1000, 90).unwrap();
    let t = Instant::now();
    for i in 0..300 {
        store.insert_object(&key(&format!("k{i}"), "v1")).unwrap();
    }
    println!("insert_object: {:.0}/s", 300.0 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for _ in 0..300 {
        store
            .changes_since(store.change_seq().unwrap() - 1)
            .unwrap();
    }
    println!(
        "change_seq + changes_since: {:.0}/s",
        300.0 / t.elapsed().as_secs_f64()
    );
}
