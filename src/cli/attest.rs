//! `token show`, `key attest` and `attest verify`: the token's attestation key
//! and the signed statements it makes about keys (see [`crate::engine::attest`]).

use super::args::Parsed;
use super::{output, write_new_file, CliError, Shown};
use crate::config::TokenConfig;
use crate::error::Error;
use crate::pool::attest;
use crate::pool::lifecycle::{self, rfc3339};
use crate::pool::{MasterKey, Store};
use cryptoki_sys::CKR_TOKEN_NOT_RECOGNIZED;
use serde_json::{json, Value};

/// The verbs that need no PIN: `token show` and `attest verify` (public
/// information only). None for every other verb.
pub fn without_pin(
    p: &Parsed,
    token: &TokenConfig,
    store: &mut dyn Store,
) -> Result<Option<Shown>, CliError> {
    match p.verb.path {
        ["token", "show"] => token_show(token, store).map(Some),
        ["attest", "verify"] => verify(p, store).map(Some),
        _ => Ok(None),
    }
}

/// `token show`: label, creation, recovery settings, key counts and the
/// attestation public key (PEM).
fn token_show(token: &TokenConfig, store: &dyn Store) -> Result<Shown, CliError> {
    let rec = store.token()?.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))?;
    // A versioning = "off" token's keys have no name: each is one key, one version.
    let unversioned = lifecycle::unversioned_keys(store)?.len();
    let keys = lifecycle::list(store)?.len() + unversioned;
    let versions = store.objects()?.iter().filter(|r| r.name.is_some()).count() + unversioned;
    let deleted = lifecycle::deleted(store)?.len();
    let pem = attest::public_key(store)?.map(|spki| attest::pem(&spki));
    let json = json!({
        "label": rec.label,
        "created": rec.created,
        "retentionDays": rec.retention_days,
        "purgeProtection": rec.purge_protection,
        "status": super::status(&rec),
        "keys": keys,
        "versions": versions,
        "deletedKeys": deleted,
        "attestationKey": pem,
        "path": token.location().to_string(),
    });
    let mut table = output::table(
        &[
            "Label",
            "Created",
            "Retention days",
            "Purge protection",
            "Keys",
            "Versions",
            "Deleted",
        ],
        vec![vec![
            rec.label.clone(),
            rfc3339(rec.created),
            rec.retention_days.to_string(),
            rec.purge_protection.to_string(),
            keys.to_string(),
            versions.to_string(),
            deleted.to_string(),
        ]],
    );
    table.push_str("\n\nAttestation public key:\n");
    match &pem {
        Some(pem) => table.push_str(pem.trim_end()),
        None => table.push_str("(none yet: made on the first key attest)"),
    }
    Ok(Shown { json, table })
}

/// `key attest`: the signed statement about one key version; with `--file`
/// also written to a new file.
pub fn key_attest(
    p: &Parsed,
    store: &mut dyn Store,
    master: &MasterKey,
    name: &str,
) -> Result<Shown, CliError> {
    let key = lifecycle::show(store, name, p.one("version"))?.key;
    let doc = attest::attest(store, master, &key, crate::engine::attributes::now())?;
    if let Some(file) = p.one("file") {
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        write_new_file(file, text.as_bytes())?;
    }
    let s = &doc["statement"];
    let table = output::table(
        &["Kid", "Issued", "Alg", "Signature"],
        vec![vec![
            str_of(&s["kid"]),
            s["issued"].as_i64().map(rfc3339).unwrap_or_default(),
            str_of(&doc["alg"]),
            str_of(&doc["signature"]),
        ]],
    );
    Ok(Shown { json: doc, table })
}

/// `attest verify`: check a `key attest` document with the token's
/// attestation key, or the one given with `--public-key`.
fn verify(p: &Parsed, store: &dyn Store) -> Result<Shown, CliError> {
    let file = p.required("file");
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Failed(format!("{file} is not JSON: {e}")))?;
    let spki = match p.one("public-key") {
        Some(pem) => public_key_arg(pem)?,
        None => attest::public_key(store)?.ok_or_else(|| {
            CliError::Failed("this token has no attestation key yet (key attest makes one)".into())
        })?,
    };
    attest::verify(&doc, &spki).map_err(|e| CliError::Failed(e.to_string()))?;
    let s = &doc["statement"];
    Ok(Shown {
        json: json!({ "verified": true, "kid": s["kid"], "token": s["token"], "issued": s["issued"] }),
        table: format!("verified: {}", str_of(&s["kid"])),
    })
}

/// `--public-key`: PEM text, or the path of a PEM file.
fn public_key_arg(arg: &str) -> Result<Vec<u8>, CliError> {
    let text = if arg.contains("-----BEGIN") {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg)
            .map_err(|e| CliError::Failed(format!("cannot read {arg}: {e}")))?
    };
    attest::from_pem(&text).ok_or_else(|| CliError::Failed(format!("no PUBLIC KEY PEM in {arg}")))
}

/// A JSON string's text (empty for anything else).
fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}
