//! The read-only key verbs on a `versioning = "off"` token (SoftHSM-like:
//! each PKCS#11 key is a key of its own, several may share a label): `key
//! list`, `key show`, `key list-versions` and `key download` find its keys by
//! label (`--name`) or `CKA_ID` (`--id`), and show both.

use super::args::Parsed;
use super::output::Pool;
use super::{byok, hex_id, CliError, Shown};
use crate::pool::lifecycle::{self, KeyVersion};
use crate::pool::Store;

/// Run a read-only key verb on the unversioned token's `store`.
pub(super) fn run(p: &Parsed, store: &dyn Store, pool: &Pool) -> Result<Shown, CliError> {
    let keys = lifecycle::unversioned_keys(store)?;
    match p.verb.path {
        ["key", "list"] => Ok(many(pool, &keys)),
        ["key", "list-versions"] => {
            let found = matching(p, keys)?;
            Ok(many(pool, &found))
        }
        ["key", "show"] => {
            let v = one(p, keys)?;
            Ok(Shown {
                json: pool.bundle(&v),
                table: pool.version_table(std::slice::from_ref(&v)),
            })
        }
        ["key", "download"] => byok::write_public(pool, &one(p, keys)?, p.required("file")),
        _ => Err(CliError::Usage("unknown command".into())),
    }
}

/// Several keys, as `key list` shows them.
fn many(pool: &Pool, keys: &[KeyVersion]) -> Shown {
    Shown {
        json: keys.iter().map(|k| pool.item(k)).collect(),
        table: pool.version_table(keys),
    }
}

/// The keys `--name` (their label) and `--id` (their `CKA_ID`) select; at
/// least one of them is needed, and a key must match.
fn matching(p: &Parsed, keys: Vec<KeyVersion>) -> Result<Vec<KeyVersion>, CliError> {
    let name = p.one("name").filter(|n| !n.is_empty());
    let id = p.one("id").map(hex_id).transpose()?;
    if name.is_none() && id.is_none() {
        return Err(CliError::Usage("give --name LABEL or --id HEX".into()));
    }
    let found: Vec<KeyVersion> = keys
        .into_iter()
        .filter(|k| name.is_none_or(|n| k.label == n.as_bytes()))
        .filter(|k| id.as_ref().is_none_or(|i| &k.id == i))
        .collect();
    if found.is_empty() {
        return Err(CliError::Failed(format!(
            "no key labelled '{}'{}",
            name.unwrap_or("*"),
            p.one("id")
                .map(|i| format!(" with id {i}"))
                .unwrap_or_default()
        )));
    }
    Ok(found)
}

/// The one key `--name`/`--id` select; several are refused (labels are not
/// unique on this token: `--id` tells them apart).
fn one(p: &Parsed, keys: Vec<KeyVersion>) -> Result<KeyVersion, CliError> {
    let mut found = matching(p, keys)?;
    if found.len() > 1 {
        return Err(CliError::Failed(format!(
            "{} keys are labelled so (this token has versioning = \"off\": labels may repeat); key show --id HEX picks one",
            found.len()
        )));
    }
    Ok(found.remove(0))
}
