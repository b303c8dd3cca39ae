//! PostgreSQL for the C-ABI tests: the store test suite's throwaway clusters
//! (src/store/pg_cluster.rs, shared rather than copied), and the switch that
//! runs a test binary's tokens on PostgreSQL: with
//! `SOFTMHSM_TEST_STORE=postgres`, every test's token gets a schema of its own
//! in a cluster this test process starts (`SOFTMHSM_STORE_URL`), so the
//! multi-process, crash and fork tests run on both stores.

#[path = "../../src/store/pg_cluster.rs"]
#[allow(dead_code)]
mod cluster;

#[allow(unused_imports)] // each test binary uses a different part
pub use cluster::{sessions_of, shared, Cluster};

/// Whether this run puts tokens on PostgreSQL (`SOFTMHSM_TEST_STORE=postgres`).
pub fn selected() -> bool {
    std::env::var("SOFTMHSM_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The URL of a fresh pool in the shared cluster, or None when PostgreSQL is
/// unavailable and not required (a test then runs on SQLite and says so).
pub fn fresh_pool() -> Option<String> {
    Some(shared()?.schema())
}

/// Whether this test child's token is on PostgreSQL (for the few checks that
/// are about the SQLite file itself).
pub fn in_use() -> bool {
    std::env::var_os("SOFTMHSM_STORE_URL").is_some()
}
