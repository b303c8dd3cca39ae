//! The CLI side of the audit log ([`crate::pool::audit`]): each verb that
//! manages keys or the token is recorded (caller `cli`), as is each PIN check,
//! each naming who acted ([`identity`]); `softmhsm audit` reads the log back.

use super::args::Parsed;
use super::{output, pick_token, CliError, Shown};
use crate::config::TokenConfig;
use crate::engine::lifecycle::parse_rfc3339;
use crate::error::Result;
use crate::pool::access::Identity;
use crate::pool::audit::{self, Caller, Event, Line};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Instant;

/// Whose PIN this command checked successfully (one command per process).
static LOGGED_IN: Mutex<Option<Identity>> = Mutex::new(None);

/// Who is acting in this command: the `identity` of every CLI-side record,
/// taken here and nowhere else. `user`, `so` or the principal's name after
/// that PIN was checked, else none.
fn identity() -> Option<String> {
    LOGGED_IN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|who| who.audit_name().to_string())
}

/// The data-plane verbs whose successes only `audit = "all"` records, as
/// for the library's successful crypto operations.
const CRYPTO: [&str; 6] = [
    "KeySign",
    "KeyVerify",
    "KeyEncrypt",
    "KeyDecrypt",
    "KeyWrap",
    "KeyUnwrap",
];

/// The `operationName` of a verb, or None for verbs that only read public
/// information or the log itself (`token show`, `attest verify`, `audit`).
fn operation(path: &[&str]) -> Option<&'static str> {
    Some(match path {
        ["init"] => "TokenInit",
        ["check"] => "TokenCheck",
        ["pin", "change"] => "PinChange",
        ["pin", "unlock"] => "PinInit",
        ["key", "create"] => "KeyCreate",
        ["key", "list"] => "KeyList",
        ["key", "list-versions"] => "KeyListVersions",
        ["key", "show"] => "KeyGet",
        ["key", "update"] => "KeyUpdate",
        ["key", "rotate"] => "KeyRotate",
        ["key", "delete"] => "KeyDelete",
        ["key", "list-deleted"] => "KeyListDeleted",
        ["key", "recover"] => "KeyRecover",
        ["key", "purge"] => "KeyPurge",
        ["key", "backup"] => "KeyBackup",
        ["key", "restore"] => "KeyRestore",
        ["key", "attest"] => "KeyAttest",
        ["key", "sign"] => "KeySign",
        ["key", "verify"] => "KeyVerify",
        ["key", "encrypt"] => "KeyEncrypt",
        ["key", "decrypt"] => "KeyDecrypt",
        ["key", "wrap"] => "KeyWrap",
        ["key", "unwrap"] => "KeyUnwrap",
        ["key", "random"] => "GetRandomBytes",
        ["key", "import"] => "KeyImport",
        ["key", "download"] => "KeyGet",
        ["key", "rotation-policy", "show"] => "KeyRotationPolicyGet",
        ["key", "rotation-policy", "update"] => "KeyRotationPolicySet",
        ["key", "rotate-due"] => "KeyRotateDue",
        ["security-domain", "download"] => "SecurityDomainDownload",
        ["security-domain", "init-recovery"] => "SecurityDomainInitRecovery",
        ["security-domain", "upload"] => "SecurityDomainUpload",
        ["backup", "start"] => "FullBackup",
        ["restore", "start"] => "FullRestore",
        ["principal", "create"] => "PrincipalCreate",
        ["principal", "delete"] => "PrincipalDelete",
        ["principal", "set-pin"] => "PrincipalSetPin",
        ["role", "definition", "create"] => "RoleDefinitionCreate",
        ["role", "definition", "delete"] => "RoleDefinitionDelete",
        ["role", "assignment", "create"] => "RoleAssignmentCreate",
        ["role", "assignment", "delete"] => "RoleAssignmentDelete",
        _ => return None,
    })
}

/// Run a verb with `run` and record it; every buffered line is written before
/// the command ends.
pub(super) fn logged(
    p: &Parsed,
    run: impl FnOnce(&Parsed) -> std::result::Result<Shown, CliError>,
) -> std::result::Result<Shown, CliError> {
    let started = Instant::now();
    let result = run(p);
    let token = pick_token(p).ok().filter(super::store_exists);
    let op = operation(p.verb.path);
    // A successful data-plane verb is recorded at level `all` only (the
    // other events wherever the level records management, in `record`).
    let quiet = |t: &TokenConfig| {
        op.is_some_and(|op| CRYPTO.contains(&op)) && result.is_ok() && !t.audit.crypto()
    };
    if let (Some(op), Some(token)) = (op, token.filter(|t| !quiet(t))) {
        let kid = result
            .as_ref()
            .ok()
            .and_then(|s| kid_in(&s.json))
            .or_else(|| {
                let name = p.one("name")?;
                let label = crate::pool::Pool::open_or_fail(&token)
                    .ok()?
                    .record()
                    .ok()??
                    .label;
                Some(format!("softmhsm://{label}/keys/{name}"))
            });
        let description = match &result {
            Ok(_) => "OK".to_string(),
            Err(CliError::Usage(m) | CliError::Failed(m)) => m.clone(),
            Err(CliError::Damaged(_)) => "damage found".to_string(),
        };
        record(
            &token,
            op,
            result.is_ok(),
            &description,
            kid.as_deref(),
            // The data-plane verbs name their algorithm, as a PKCS#11 refusal does.
            p.one("algorithm"),
            started,
        );
    }
    audit::flush();
    result
}

/// Check `who`'s PIN with `unlock` and record the login; once it succeeds,
/// this command acts as `who`.
pub(super) fn login<T>(
    token: &TokenConfig,
    who: Identity,
    unlock: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let started = Instant::now();
    let r = unlock();
    if r.is_ok() {
        *LOGGED_IN.lock().unwrap_or_else(|p| p.into_inner()) = Some(who);
    }
    let description = r
        .as_ref()
        .err()
        .map_or("CKR_OK".to_string(), |e| e.to_string());
    record(token, "Login", r.is_ok(), &description, None, None, started);
    r
}

#[allow(clippy::too_many_arguments)]
fn record(
    token: &TokenConfig,
    op: &str,
    ok: bool,
    description: &str,
    kid: Option<&str>,
    algorithm: Option<&str>,
    t: Instant,
) {
    if !token.audit.management() {
        return;
    }
    let who = identity();
    audit::record_algorithm(
        &token.store_path(),
        &Event {
            operation: op,
            success: ok,
            description,
            kid,
            identity: who.as_deref(),
            duration: t.elapsed(),
            caller: Caller::Cli,
        },
        algorithm,
    );
}

/// The kid a verb's JSON output names.
fn kid_in(v: &Value) -> Option<String> {
    [&v["key"]["kid"], &v["kid"], &v["statement"]["kid"]]
        .into_iter()
        .find_map(|k| k.as_str().map(str::to_string))
}

/// `softmhsm audit`: print the token's audit lines (JSON lines, or a table),
/// optionally since a time and of one operation.
pub(super) fn print(p: &Parsed) -> std::result::Result<(), CliError> {
    let table = match p.one("output") {
        None | Some("json") => false,
        Some("table") => true,
        Some(o) => {
            return Err(CliError::Usage(format!(
                "unknown output '{o}': use json or table"
            )))
        }
    };
    let since = p
        .one("since")
        .map(|s| {
            since(s, crate::engine::attributes::now()).ok_or_else(|| {
                CliError::Usage(format!(
                    "bad --since '{s}': use RFC 3339 or a duration such as 30s, 15m, 1h, 2d"
                ))
            })
        })
        .transpose()?;
    let operation = p.one("operation");
    let token = pick_token(p)?;
    let path = audit::path_for(&token.store_path());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut rows = Vec::new();
    for raw in text.lines() {
        let Ok(line) = serde_json::from_str::<Line>(raw) else {
            log::warn!("audit: skipping a malformed line in {}", path.display());
            continue;
        };
        if since.is_some_and(|s| parse_rfc3339(&line.time).is_none_or(|t| t < s)) {
            continue;
        }
        if operation.is_some_and(|o| !o.eq_ignore_ascii_case(&line.operation_name)) {
            continue;
        }
        if !table {
            println!("{raw}");
        }
        rows.push(line);
    }
    if table {
        let rows = rows
            .into_iter()
            .map(|l| {
                vec![
                    l.time,
                    l.operation_name,
                    l.result_type,
                    l.result_description,
                    l.kid.unwrap_or_default(),
                    l.identity.unwrap_or_default(),
                    l.caller,
                    l.pid.to_string(),
                    l.duration_ms.to_string(),
                ]
            })
            .collect();
        println!(
            "{}",
            output::table(
                &[
                    "Time",
                    "Operation",
                    "Result",
                    "Description",
                    "Kid",
                    "Identity",
                    "Caller",
                    "Pid",
                    "Ms"
                ],
                rows
            )
        );
    }
    Ok(())
}

/// `--since`: RFC 3339, or a duration back from `now` (`30s`, `15m`, `1h`, `2d`).
fn since(s: &str, now: i64) -> Option<i64> {
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n >= 0)?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    Some(now - n.checked_mul(secs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_and_durations() {
        assert_eq!(since("1h", 10_000), Some(6_400));
        assert_eq!(since("2d", 200_000), Some(27_200));
        assert_eq!(since("1970-01-01T00:01:00Z", 5), Some(60));
        for bad in ["", "h", "1y", "-1h", "soon"] {
            assert_eq!(since(bad, 10), None, "{bad}");
        }
    }

    #[test]
    fn management_verbs_have_operation_names() {
        assert_eq!(operation(&["key", "rotate"]), Some("KeyRotate"));
        assert_eq!(operation(&["audit"]), None);
        assert_eq!(operation(&["token", "show"]), None);
    }
}
