//! The admin CLI `softmhsm` (DESIGN §6): the Managed HSM verbs PKCS#11 has no
//! call for, shaped after `az keyvault key`, on the same store and engine as the
//! library (so a key made here is usable through PKCS#11 and vice versa).
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage. Errors are one
//! line on standard error.

pub mod args;
mod attest;
mod audit;
pub mod byok;
pub mod output;
mod security_domain;

use crate::config::{self, TokenConfig};
use crate::crypto::Curve;
use crate::engine::attributes::now;
use crate::engine::key::{KeyKind, KeyOps};
use crate::error::Error;
use crate::pool::lifecycle::{self, KeySpec, KeyUpdate, Refusal};
use crate::pool::rotation;
use crate::pool::{self as pools, MasterKey, PinUser};
use args::{Command, Parsed};
use cryptoki_sys::*;
use output::Pool;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

/// Why the CLI stopped.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage (exit 2).
    Usage(String),
    /// The operation failed (exit 1).
    Failed(String),
}

impl From<Refusal> for CliError {
    fn from(r: Refusal) -> CliError {
        match r {
            Refusal::Token(e) => CliError::Failed(token_error(e)),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> CliError {
        CliError::Failed(token_error(e))
    }
}

/// A one-line message for a token error.
fn token_error(e: Error) -> String {
    match e.0 {
        CKR_PIN_INCORRECT => "wrong PIN".into(),
        CKR_PIN_LOCKED => "the user PIN is locked: the SO must set a new one".into(),
        CKR_USER_PIN_NOT_INITIALIZED => "the token has no user PIN yet".into(),
        CKR_TOKEN_NOT_RECOGNIZED => "the token is not initialised (run softmhsm init)".into(),
        CKR_PIN_LEN_RANGE => "PINs are 4-255 characters".into(),
        CKR_DEVICE_ERROR => "the token store cannot be used (see SOFTMHSM_LOG=debug)".into(),
        CKR_TOKEN_WRITE_PROTECTED => "purge protection: the token holds keys (live, or deleted and not yet past their purge date), so it cannot be re-initialised".into(),
        rv => format!("token error 0x{rv:08x}"),
    }
}

/// How results are shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Table,
}

/// What a verb produced: JSON, and its table form for people.
struct Shown {
    json: Value,
    table: String,
}

/// Run the CLI on `args` (without the program name); returns the exit code.
pub fn main(args: &[String]) -> u8 {
    crate::logging::init();
    let result = args::parse(args).and_then(|cmd| match cmd {
        Command::Print(text) => {
            println!("{text}");
            Ok(None)
        }
        Command::Run(p) if p.verb.path == ["audit"] => audit::print(&p).map(|()| None),
        Command::Run(p) => audit::logged(&p, run).map(|shown| Some((shown, format(&p)))),
    });
    match result {
        Ok(None) => 0,
        Ok(Some((shown, fmt))) => {
            let fmt = match fmt {
                Ok(f) => f,
                Err(e) => return report(e),
            };
            match fmt {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&shown.json).unwrap_or_default()
                ),
                Format::Table => println!("{}", shown.table),
            }
            0
        }
        Err(e) => report(e),
    }
}

/// Print a one-line error; return its exit code.
fn report(e: CliError) -> u8 {
    match e {
        CliError::Usage(m) => {
            eprintln!("softmhsm: {m}");
            2
        }
        CliError::Failed(m) => {
            eprintln!("softmhsm: {m}");
            1
        }
    }
}

fn format(p: &Parsed) -> Result<Format, CliError> {
    match p.one("output") {
        None | Some("json") => Ok(Format::Json),
        Some("table") => Ok(Format::Table),
        Some(o) => Err(CliError::Usage(format!(
            "unknown output '{o}': use json or table"
        ))),
    }
}

/// Run one verb.
fn run(p: &Parsed) -> Result<Shown, CliError> {
    // Usage is checked in full before the store is touched.
    format(p)?;
    let spec = match p.verb.path {
        ["key", "create"] => Some(key_spec(p)?),
        _ => None,
    };
    let change = match p.verb.path {
        ["key", "update"] => Some(key_update(p)?),
        _ => None,
    };
    let import_or_download = byok::usage(p)?;
    if security_domain::is_ours(p) {
        return security_domain::run(p);
    }
    let token = pick_token(p.one("token"))?;
    let service = pools::Pool::open_or_fail(&token)?;
    if p.verb.path == ["init"] {
        return init(p, &token, &service);
    }
    if let Some(shown) = service.write(|s| attest::without_pin(p, &token, s))? {
        return Ok(shown);
    }
    if !token.versioning {
        return Err(CliError::Failed(
            "this token has versioning = \"off\": the key verbs need Managed HSM names".into(),
        ));
    }
    let pin = user_pin(p)?;
    let master = audit::login(&token, || service.unlock(PinUser::User, pin.as_bytes()))?;
    let rec = service.initialized()?;
    let pool = Pool {
        label: rec.label,
        retention_days: rec.retention_days,
        purge_protection: rec.purge_protection,
    };
    let name = p.one("name").unwrap_or_default();
    // Every verb is one call into the pool service, which lends its store for
    // the verb's lifecycle steps and keeps its snapshot coherent after them.
    service.write(|s| verb(p, s, &master, &pool, name, spec, change, import_or_download))
}

/// The key verbs, on a store the pool lends.
#[allow(clippy::too_many_arguments)]
fn verb(
    p: &Parsed,
    s: &mut dyn pools::Store,
    master: &MasterKey,
    pool: &Pool,
    name: &str,
    spec: Option<KeySpec>,
    change: Option<KeyUpdate>,
    import_or_download: Option<byok::Request>,
) -> Result<Shown, CliError> {
    let bundle = |k: &crate::engine::key::KeyRecord, current: bool| Shown {
        json: pool.bundle(k),
        table: pool.version_table(&[lifecycle::KeyVersion {
            key: k.clone(),
            current,
        }]),
    };
    match p.verb.path {
        ["key", "create"] => {
            let spec = spec.ok_or_else(|| CliError::Usage("no key spec".into()))?;
            Ok(bundle(
                &lifecycle::create(s, master, name, &spec, now())?,
                true,
            ))
        }
        ["key", "list"] => {
            let keys = lifecycle::list(s)?;
            Ok(Shown {
                json: keys.iter().map(|k| pool.item(k)).collect(),
                table: pool.version_table(&keys),
            })
        }
        ["key", "list-versions"] => {
            let keys = lifecycle::versions(s, name)?;
            if keys.is_empty() {
                return Err(Refusal::UnknownKey(name.into()).into());
            }
            Ok(Shown {
                json: keys.iter().map(|k| pool.item(k)).collect(),
                table: pool.version_table(&keys),
            })
        }
        ["key", "show"] => {
            let v = lifecycle::show(s, name, p.one("version"))?;
            Ok(bundle(&v.key, v.current))
        }
        ["key", "update"] => {
            let change = change.unwrap_or_default();
            let k = lifecycle::update(s, name, p.one("version"), &change, now())?;
            let current = lifecycle::show(s, name, None)?.key.version == k.version;
            Ok(bundle(&k, current))
        }
        ["key", "rotate"] => Ok(bundle(&lifecycle::rotate(s, master, name, now())?, true)),
        ["key", "rotation-policy", "show"] => {
            lifecycle::show(s, name, None)?;
            let json = match rotation::get(s, name)? {
                Some(policy) => policy.to_json(),
                None => serde_json::json!({ "lifetimeActions": [], "attributes": {} }),
            };
            let table = serde_json::to_string_pretty(&json).unwrap_or_default();
            Ok(Shown { json, table })
        }
        ["key", "rotation-policy", "update"] => {
            let value = p.required("value");
            let text = match value.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))?,
                None => value.to_string(),
            };
            let json = rotation::set(s, name, &text)?.to_json();
            let table = serde_json::to_string_pretty(&json).unwrap_or_default();
            Ok(Shown { json, table })
        }
        ["key", "rotate-due"] => {
            let due = rotation::rotate_due(s, master, now())?;
            let mut json = Vec::new();
            let mut table = String::new();
            let mut failed = Vec::new();
            for d in &due {
                let (name, what, version) = match d {
                    rotation::Due::Rotated(k) => (&k.name, "rotated", k.version.as_str()),
                    rotation::Due::Notify(k) => (&k.name, "notify", k.version.as_str()),
                    rotation::Due::Failed(n, why) => {
                        failed.push(format!("{n}: {why}"));
                        (n, "failed", "")
                    }
                };
                json.push(serde_json::json!({ "name": name, "action": what, "version": version }));
                table.push_str(&format!("{what:8} {name} {version}\n"));
            }
            if !failed.is_empty() {
                return Err(CliError::Failed(format!(
                    "rotation failed for {}",
                    failed.join("; ")
                )));
            }
            if table.is_empty() {
                table.push_str("nothing due");
            }
            Ok(Shown {
                json: Value::Array(json),
                table: table.trim_end().to_string(),
            })
        }
        ["key", "delete"] => {
            let d = lifecycle::delete(s, name, now())?;
            Ok(Shown {
                json: pool.deleted(&d),
                table: pool.deleted_table(&[d]),
            })
        }
        ["key", "list-deleted"] => {
            let keys = lifecycle::deleted(s)?;
            Ok(Shown {
                json: keys.iter().map(|d| pool.deleted(d)).collect(),
                table: pool.deleted_table(&keys),
            })
        }
        ["key", "recover"] => {
            let v = lifecycle::recover(s, name)?;
            Ok(bundle(&v.key, true))
        }
        ["key", "purge"] => {
            lifecycle::purge(s, name, now())?;
            Ok(Shown {
                json: serde_json::json!({ "purged": name }),
                table: format!("purged {name}"),
            })
        }
        ["key", "backup"] => {
            let file = p.required("file");
            let blob = lifecycle::backup(s, master, name)?;
            write_new_file(file, &blob)?;
            let versions = lifecycle::versions(s, name)?.len();
            Ok(Shown {
                json: serde_json::json!({ "name": name, "versions": versions, "file": file }),
                table: format!("backed up {versions} version(s) of {name} to {file}"),
            })
        }
        ["key", "restore"] => {
            let file = p.required("file");
            let blob = std::fs::read(file)
                .map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))?;
            Ok(bundle(&lifecycle::restore(s, master, &blob)?, true))
        }
        ["key", "attest"] => attest::key_attest(p, s, master, name),
        ["key", "import"] | ["key", "download"] => match import_or_download {
            Some(req) => byok::run(req, name, p.one("version"), s, master, pool),
            None => Err(CliError::Usage("unknown command".into())),
        },
        _ => Err(CliError::Usage("unknown command".into())),
    }
}

/// `softmhsm init`: initialise the token (re-initialising needs the current SO
/// PIN, as `C_InitToken` does), set the user PIN, optionally turn on purge protection.
fn init(p: &Parsed, token: &TokenConfig, service: &pools::Pool) -> Result<Shown, CliError> {
    let label = p.required("label");
    if label.is_empty() || label.len() > 32 {
        return Err(CliError::Failed(format!(
            "bad token label '{label}': 1-32 bytes"
        )));
    }
    let so_pin = p.required("so-pin");
    let pin = user_pin(p)?;
    for pin in [so_pin, pin.as_str()] {
        crate::engine::rules::check_pin_len(pin.as_bytes())?;
    }
    let retention = match p.one("retention-days") {
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (7..=90).contains(d))
            .ok_or_else(|| CliError::Usage(format!("bad --retention-days '{d}': 7-90")))?,
        None => token.retention_days,
    };
    if service.record()?.is_some() {
        service.unlock(PinUser::So, so_pin.as_bytes())?;
        let (live, deleted) =
            service.read(|s| Ok::<_, Error>((s.objects()?.len(), s.deleted_names()?.len())))?;
        if live + deleted > 0 && !p.flag("force") {
            return Err(CliError::Failed(format!(
                "the token holds {live} objects and {deleted} deleted keys: re-initialising erases them all; add --force"
            )));
        }
    }
    service.write(|s| {
        let master: MasterKey =
            s.init_token(label, so_pin.as_bytes(), token.kdf_iterations, retention)?;
        s.set_pin(PinUser::User, &master, pin.as_bytes())?;
        pools::attest::provision(s, &master);
        if p.flag("purge-protection") {
            s.set_purge_protection(true)?;
        }
        Ok::<_, CliError>(())
    })?;
    let rec = service.initialized()?;
    let json = serde_json::json!({
        "label": rec.label,
        "path": token.store_path(),
        "retentionDays": rec.retention_days,
        "purgeProtection": rec.purge_protection,
    });
    Ok(Shown {
        table: output::table(
            &["Label", "Retention days", "Purge protection", "Path"],
            vec![vec![
                rec.label.clone(),
                rec.retention_days.to_string(),
                rec.purge_protection.to_string(),
                token.store_path().display().to_string(),
            ]],
        ),
        json,
    })
}

/// Create `path` (mode 0600) with `data`; an existing file is never overwritten.
fn write_new_file(path: &str, data: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Failed(format!("cannot create {path}: {e}")))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::Failed(format!("cannot write {path}: {e}")))
}

/// The configured token named `label` (by its initialised label), or the first.
fn pick_token(label: Option<&str>) -> Result<TokenConfig, CliError> {
    let cfg = config::load()
        .map_err(|_| CliError::Failed("no usable configuration (see SOFTMHSM_LOG=debug)".into()))?;
    let Some(label) = label else {
        return cfg
            .tokens
            .into_iter()
            .next()
            .ok_or_else(|| CliError::Failed("no token configured".into()));
    };
    for t in cfg.tokens {
        let rec = pools::Pool::open_or_fail(&t)?.record()?;
        if rec.is_some_and(|r| r.label == label) {
            return Ok(t);
        }
    }
    Err(CliError::Failed(format!("no token labelled '{label}'")))
}

/// The user PIN: `--pin`, `$SOFTMHSM_PIN`, or a prompt when standard input is a terminal.
fn user_pin(p: &Parsed) -> Result<String, CliError> {
    if let Some(pin) = p.one("pin") {
        return Ok(pin.to_string());
    }
    if let Some(pin) = std::env::var("SOFTMHSM_PIN").ok().filter(|v| !v.is_empty()) {
        return Ok(pin);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no PIN: give --pin or set SOFTMHSM_PIN".into(),
        ));
    }
    prompt_pin()
}

/// Read a PIN from the terminal without echo. Echo is switched with `stty`
/// rather than termios calls, so no `unsafe` lives outside `src/ffi`.
fn prompt_pin() -> Result<String, CliError> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    eprint!("PIN: ");
    let _ = std::io::stderr().flush();
    let quiet = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if quiet {
        stty("echo");
    }
    eprintln!();
    read.map_err(|e| CliError::Failed(format!("cannot read the PIN: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `key create` options as a key spec.
fn key_spec(p: &Parsed) -> Result<KeySpec, CliError> {
    let kty = p.required("kty");
    let kty = kty.strip_suffix("-HSM").unwrap_or(kty);
    let size = match p.one("size") {
        Some(s) => Some(
            s.parse::<u32>()
                .map_err(|_| CliError::Usage(format!("bad --size '{s}'")))?,
        ),
        None => None,
    };
    let kind = match kty.to_ascii_lowercase().as_str() {
        "rsa" => KeyKind::Rsa(size.unwrap_or(2048)),
        "oct" => KeyKind::Aes(size.unwrap_or(256)),
        "ec" => {
            if size.is_some() {
                return Err(CliError::Usage("EC keys take --curve, not --size".into()));
            }
            KeyKind::Ec(curve(p.one("curve").unwrap_or("P-256"))?)
        }
        _ => {
            return Err(CliError::Usage(format!(
                "unknown --kty '{}': use RSA, EC or oct",
                p.required("kty")
            )))
        }
    };
    if p.one("curve").is_some() && !matches!(kind, KeyKind::Ec(_)) {
        return Err(CliError::Usage("--curve is for EC keys".into()));
    }
    Ok(KeySpec {
        kind,
        ops: p.many("ops").map(ops).transpose()?,
        tags: p.many("tags").map(tags).transpose()?.unwrap_or_default(),
        enabled: p.one("enabled").map(boolean).transpose()?.unwrap_or(true),
        nbf: p.one("not-before").map(date).transpose()?,
        exp: p.one("expires").map(date).transpose()?,
    })
}

/// `key update` options.
fn key_update(p: &Parsed) -> Result<KeyUpdate, CliError> {
    let optional_date = |s: &str| match s {
        "none" => Ok(None),
        s => date(s).map(Some),
    };
    Ok(KeyUpdate {
        enabled: p.one("enabled").map(boolean).transpose()?,
        nbf: p.one("not-before").map(optional_date).transpose()?,
        exp: p.one("expires").map(optional_date).transpose()?,
        ops: p.many("ops").map(ops).transpose()?,
        tags: p.many("tags").map(tags).transpose()?,
    })
}

fn curve(s: &str) -> Result<Curve, CliError> {
    Curve::ALL
        .into_iter()
        .find(|c| c.jwk_name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "unknown --curve '{s}': use P-256, P-256K, P-384 or P-521"
            ))
        })
}

fn ops(names: &[String]) -> Result<KeyOps, CliError> {
    names.iter().try_fold(KeyOps::default(), |acc, n| {
        KeyOps::NAMES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(n))
            .map(|(op, _)| acc.with(*op))
            .ok_or_else(|| CliError::Usage(format!("unknown operation '{n}'")))
    })
}

fn tags(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut tags = BTreeMap::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("bad tag '{pair}': use name=value")))?;
        if tags.insert(k.to_string(), v.to_string()).is_some() {
            return Err(CliError::Usage(format!("tag '{k}' given twice")));
        }
    }
    Ok(tags)
}

fn boolean(s: &str) -> Result<bool, CliError> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(CliError::Usage(format!("'{s}' is not true or false"))),
    }
}

fn date(s: &str) -> Result<i64, CliError> {
    lifecycle::parse_rfc3339(s).ok_or_else(|| {
        CliError::Usage(format!(
            "bad date '{s}': use RFC 3339, e.g. 2030-01-01T00:00:00Z"
        ))
    })
}
