//! `softmhsm check`: open every record and every sealed blob of a pool,
//! read-only, and say what is damaged.

use super::attest;
use crate::engine::key::{Body, Record};
use crate::engine::policy;
use crate::error::Result;
use crate::store::{MasterKey, Store};

/// One damaged thing: what it is, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The row (`object 12`, `key web version 0a…`) or `attestation key`.
    pub what: String,
    /// What is wrong.
    pub problem: String,
}

/// What `check` looked at.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows read (live and soft-deleted).
    pub rows: usize,
    /// Sealed blobs opened.
    pub sealed: usize,
    /// What is damaged.
    pub damaged: Vec<Damage>,
}

/// Read every row of `store` (a pool labelled `label` whose master key is
/// `master`): each record must parse, each sealed blob must open under the
/// master key with its own kid, each key's private part must parse; and the
/// attestation key must open. Changes nothing.
pub fn check(store: &dyn Store, master: &MasterKey, label: &str) -> Result<Report> {
    let mut report = Report::default();
    for row in store.all_objects()? {
        report.rows += 1;
        let what = match (&row.name, &row.version) {
            (Some(n), Some(v)) => format!("key {n} version {v} (row {})", row.id),
            _ => format!("object row {}", row.id),
        };
        let mut damaged = |problem: &str| {
            report.damaged.push(Damage {
                what: what.clone(),
                problem: problem.to_string(),
            })
        };
        let rec = match Record::from_json(&row.attrs) {
            Ok(rec) => rec,
            Err(_) => {
                damaged("its attribute record does not parse");
                continue;
            }
        };
        let (Body::Key(k), Some(sealed)) = (&rec.body, &row.sealed) else {
            continue;
        };
        report.sealed += 1;
        let material = match master.open(policy::kid(label, k).as_bytes(), sealed) {
            Ok(m) => m,
            Err(_) => {
                damaged(
                    "its sealed key material does not open under the pool's master key and its kid",
                );
                continue;
            }
        };
        let p = crate::crypto::provider();
        let parsed = match k.kind {
            crate::engine::key::KeyKind::Rsa(_) => p.rsa_private(&material).map(|_| ()),
            crate::engine::key::KeyKind::Ec(c) => p.ec_private(c, &material).map(|_| ()),
            crate::engine::key::KeyKind::Aes(_) => p.aes(&material).map(|_| ()),
            crate::engine::key::KeyKind::MlDsa(s) => p.ml_dsa_private(s, &material).map(|_| ()),
            crate::engine::key::KeyKind::MlKem(s) => p.ml_kem_private(s, &material).map(|_| ()),
        };
        if parsed.is_err() {
            damaged("its key material opens but is not a valid key of its type");
        }
    }
    if let Some(row) = store.attestation_key()? {
        report.sealed += 1;
        if !attest::opens(&row, master) {
            report.damaged.push(Damage {
                what: "attestation key".into(),
                problem: "its sealed private key does not open under the pool's master key".into(),
            });
        }
    }
    Ok(report)
}
