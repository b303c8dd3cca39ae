//! A PostgreSQL pool under its two faults (issue 12 item 4), through the C
//! ABI: the server restarted while a session signs, and the primary lost and
//! its synchronous standby promoted. Signing goes on from the cache
//! throughout; writes fail with `CKR_DEVICE_ERROR` while no server takes
//! them and work again, reconnecting by themselves, once one does; every
//! acknowledged key is in the database that is left.
//!
//! Each test starts its own throwaway clusters (tests/common/pg.rs); without
//! PostgreSQL it says SKIPPED, and fails under `SOFTMHSM_REQUIRE_TOOLS` (CI).

#[macro_use]
mod common;

use common::cli::*;
use common::pg::Cluster;
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki_sys::*;
use std::time::{Duration, Instant};

/// Sign a digest with the P-256 `pair` and check the signature with p256.
#[track_caller]
fn signs(t: &Token, pair: Pair, what: &str) {
    let digest = [9u8; 32];
    let sig = ok(
        t.session.sign(&Mechanism::Ecdsa, pair.private, &digest),
        what,
    );
    verify_ecdsa_prehash(OID_P256, &t.ec_point(pair.public), &digest, &sig)
        .unwrap_or_else(|e| panic!("{what}: the signature does not verify: {e}"));
}

/// Sign with every pair for `span` (long enough that the pool's periodic
/// check of the database, every `max_staleness_ms` = 1 s, runs and fails).
#[track_caller]
fn keeps_signing(t: &Token, pairs: &[Pair], span: Duration, what: &str) {
    let started = Instant::now();
    while started.elapsed() < span {
        for p in pairs {
            signs(t, *p, what);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The key names the CLI lists: a separate process reading the database
/// itself, not this process's cache.
fn listed() -> Vec<String> {
    let mut names: Vec<String> = json(&["key", "list"])
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|k| {
            let kid = k["kid"].as_str().or_else(|| k["key"]["kid"].as_str());
            kid.expect("a kid").split('/').nth(4).unwrap().to_string()
        })
        .collect();
    names.sort();
    names
}

p11_test! {
    fn signing_goes_on_while_postgresql_restarts_and_writes_come_back() {
        softmhsm_only!("a PostgreSQL pool");
        let Some(cluster) = Cluster::start() else {
            return;
        };
        std::env::set_var("SOFTMHSM_STORE_URL", cluster.database());
        let t = Token::fresh();
        let pair = t.keypair(Kp::Ec(OID_P256), "before");
        signs(&t, pair, "C_Sign with the server up");
        cluster.while_down(|| {
            keeps_signing(&t, &[pair], Duration::from_millis(2500), "C_Sign with the server down");
            assert_rv(
                t.try_aes(32, "while-down", true),
                CKR_DEVICE_ERROR,
                "C_GenerateKey with the server down",
            );
            assert_rv(
                t.try_keypair(Kp::Ec(OID_P256), "while-down", true),
                CKR_DEVICE_ERROR,
                "C_GenerateKeyPair with the server down",
            );
            signs(&t, pair, "C_Sign after the refused writes");
        });
        // Back: the same session writes again (the library reconnected).
        let after = t.keypair(Kp::Ec(OID_P256), "after");
        signs(&t, after, "C_Sign with a key made after the restart");
        signs(&t, pair, "C_Sign with the key made before");
        assert_eq!(listed(), ["after", "before"], "nothing of the refused writes was stored");
    }
}

p11_test! {
    fn every_acknowledged_key_survives_a_failover_to_the_synchronous_standby() {
        softmhsm_only!("a PostgreSQL pool");
        let Some(primary) = Cluster::start_primary() else {
            return;
        };
        let standby = primary.standby();
        let db = primary.database();
        let name = db.rsplit('/').next().unwrap();
        // libpq's multi-host URL: the first host that takes writes.
        std::env::set_var(
            "SOFTMHSM_STORE_URL",
            format!(
                "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/{name}?target_session_attrs=read-write",
                primary.port(),
                standby.port()
            ),
        );
        let t = Token::fresh();
        // Acknowledged: C_GenerateKeyPair returned CKR_OK, so the commit
        // reached the synchronous standby.
        let acked: Vec<Pair> = (0..5)
            .map(|i| t.keypair(Kp::Ec(OID_P256), &format!("k{i}")))
            .collect();
        let secret = t.aes(32, "aes");
        for p in &acked {
            signs(&t, *p, "C_Sign on the primary");
        }

        primary.crash();
        keeps_signing(&t, &acked, Duration::from_millis(1500), "C_Sign with no primary");
        assert_rv(
            t.try_keypair(Kp::Ec(OID_P256), "refused", true),
            CKR_DEVICE_ERROR,
            "C_GenerateKeyPair with the primary gone and the standby read-only",
        );

        standby.promote();
        // The same session reconnects through the URL's second host.
        let later = t.keypair(Kp::Ec(OID_P256), "after-failover");
        signs(&t, later, "C_Sign with a key made on the new primary");
        keeps_signing(&t, &acked, Duration::from_millis(200), "C_Sign after the failover");
        let iv = [0u8; 16];
        ok(
            t.session.encrypt(&Mechanism::AesCbcPad(iv), secret, b"still here"),
            "C_Encrypt with the AES key made before the failover",
        );
        // What another process finds in the database now serving the pool.
        assert_eq!(
            listed(),
            ["aes", "after-failover", "k0", "k1", "k2", "k3", "k4"],
            "every acknowledged key, and none of the refused one"
        );
    }
}
