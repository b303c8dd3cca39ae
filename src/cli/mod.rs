//! The admin CLI `softmhsm` (DESIGN §6): the Managed HSM verbs PKCS#11 has no
//! call for, shaped after `az keyvault key`, on the same store and engine as the
//! library (so a key made here is usable through PKCS#11 and vice versa).
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage. Errors are one
//! line on standard error.

mod access;
pub mod args;
mod attest;
mod audit;
pub mod byok;
mod dataplane;
pub mod output;
mod security_domain;
mod unversioned;

use crate::config::{self, TokenConfig};
use crate::crypto::Curve;
use crate::engine::attributes::now;
use crate::engine::key::{KeyKind, KeyOps};
use crate::error::Error;
use crate::pool::access::DataAction;
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
    /// `check` found damage: its report is shown, and the exit code is 1.
    Damaged(Box<Shown>),
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
        CKR_DEVICE_ERROR | CKR_DEVICE_MEMORY => pools::last_store_failure()
            .unwrap_or_else(|| "the token store cannot be used (see SOFTMHSM_LOG=debug)".into()),
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
#[derive(Debug)]
pub struct Shown {
    json: Value,
    table: String,
}

/// Run the CLI on `args` (without the program name); returns the exit code.
pub fn main(args: &[String]) -> u8 {
    crate::logging::init(None);
    let result = args::parse(args).and_then(|cmd| match cmd {
        Command::Print(text) => {
            println!("{text}");
            Ok(None)
        }
        Command::Run(p) if p.verb.path == ["audit"] => audit::print(&p).map(|()| None),
        Command::Run(p) => match audit::logged(&p, run) {
            Ok(shown) => Ok(Some((shown, format(&p), 0))),
            // A report that says something is wrong: shown, exit 1.
            Err(CliError::Damaged(shown)) => Ok(Some((*shown, format(&p), 1))),
            Err(e) => Err(e),
        },
    });
    match result {
        Ok(None) => 0,
        Ok(Some((shown, fmt, code))) => {
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
            code
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
        CliError::Damaged(_) => 1,
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
        ["key", "create"] => {
            let spec = key_spec(p)?;
            // The Managed HSM's rules refuse a bad name, size or curve
            // (exit 1) before any PIN is asked for.
            crate::engine::lifecycle::check_spec(p.required("name"), &spec)?;
            Some(spec)
        }
        _ => None,
    };
    let change = match p.verb.path {
        ["key", "update"] => Some(key_update(p)?),
        _ => None,
    };
    if p.verb.path == ["key", "show"] {
        match (p.one("name"), p.one("id")) {
            (None, None) => return Err(CliError::Usage("key show needs --name or --id".into())),
            (_, Some(id)) => drop(hex_id(id)?),
            _ => {}
        }
    }
    let import_or_download = byok::usage(p)?;
    dataplane::usage(p)?;
    access::usage(p)?;
    if p.verb.path == ["role", "definition", "list"] {
        // No PIN; the built-in roles even without a token.
        let pool = pick_token(p)
            .ok()
            .filter(store_exists)
            .and_then(|t| pools::Pool::open_or_fail(&t).ok())
            .filter(|pool| pool.record().is_ok_and(|r| r.is_some()));
        return access::definitions(pool.as_ref());
    }
    if p.verb.path == ["token", "list"] {
        return token_list();
    }
    if security_domain::is_ours(p) {
        return security_domain::run(p);
    }
    let token = pick_token(p)?;
    // Only init makes a store: any other verb on a path with none (a typo in
    // SOFTMHSM_DIR, say) says so and creates nothing.
    if p.verb.path != ["init"] && !store_exists(&token) {
        return Err(CliError::Failed(format!(
            "no token at {} (softmhsm init makes one)",
            token.store_path().display()
        )));
    }
    let service = pools::Pool::open_or_fail(&token)?;
    if p.verb.path == ["init"] {
        return init(p, &token, &service);
    }
    if let ["pin", what] = p.verb.path {
        return pin_verb(p, what, &token, &service);
    }
    if access::is_ours(p) {
        return access::run(p, &token, &service);
    }
    if let Some(shown) = service.write(|s| attest::without_pin(p, &token, s))? {
        return Ok(shown);
    }
    // A versioning = "off" token's keys are shown (labels and ids tell keys
    // sharing a label apart); changing them needs Managed HSM names.
    let shows = matches!(
        p.verb.path,
        ["key", "list" | "show" | "list-versions" | "download"]
    );
    if !token.versioning && !shows {
        return Err(CliError::Failed(
            "this token has versioning = \"off\": the key verbs that change keys need Managed HSM names".into(),
        ));
    }
    if p.verb.path != ["check"] {
        // Before any PIN is asked for: no key verb runs in a provisioned pool.
        service.check_active()?;
    }
    // As the plain user PIN, or as principal --user; every key verb is
    // checked against the acting identity's role assignments.
    let (master, who) = access::acting(p, &token, &service)?;
    access::check_key_verb(p, &service, &who)?;
    let grants = service.grants(&who)?;
    let rec = service.initialized()?;
    let pool = Pool {
        label: rec.label,
        retention_days: rec.retention_days,
        purge_protection: rec.purge_protection,
    };
    if !token.versioning {
        return service.read(|s| unversioned::run(p, s, &pool));
    }
    let name = p.one("name").unwrap_or_default();
    // Every verb is one call into the pool service, which lends its store for
    // the verb's lifecycle steps and keeps its snapshot coherent after them.
    service.write(|s| {
        verb(
            p,
            s,
            (&master, &grants),
            &pool,
            name,
            spec,
            change,
            import_or_download,
        )
    })
}

/// The key verbs, on a store the pool lends.
#[allow(clippy::too_many_arguments)]
fn verb(
    p: &Parsed,
    s: &mut dyn pools::Store,
    (master, grants): (&MasterKey, &pools::access::Grants),
    pool: &Pool,
    name: &str,
    spec: Option<KeySpec>,
    change: Option<KeyUpdate>,
    import_or_download: Option<byok::Request>,
) -> Result<Shown, CliError> {
    let shown = |v: &lifecycle::KeyVersion| Shown {
        json: pool.bundle(v),
        table: pool.version_table(std::slice::from_ref(v)),
    };
    // A version just written, as `key show` shows it.
    let written = |s: &dyn pools::Store, k: &crate::engine::key::KeyRecord| {
        lifecycle::show(s, &k.name, Some(&k.version)).map(|v| shown(&v))
    };
    match p.verb.path {
        ["key", "create"] => {
            let spec = spec.ok_or_else(|| CliError::Usage("no key spec".into()))?;
            let k = lifecycle::create(s, master, name, &spec, now())?;
            Ok(written(s, &k)?)
        }
        ["key", "list"] => {
            let mut keys = lifecycle::list(s)?;
            // A principal sees the keys it may read, as a find does.
            keys.retain(|k| grants.allows(DataAction::KeysRead, Some(&k.key.name)));
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
            let v = match p.one("id") {
                Some(id) => {
                    let named = Some(name).filter(|n| !n.is_empty());
                    lifecycle::show_by_id(s, named, &hex_id(id)?)?
                }
                None => lifecycle::show(s, name, p.one("version"))?,
            };
            Ok(shown(&v))
        }
        ["key", "update"] => {
            let change = change.unwrap_or_default();
            let k = lifecycle::update(s, name, p.one("version"), &change, now())?;
            Ok(written(s, &k)?)
        }
        ["key", "rotate"] => {
            let k = lifecycle::rotate(s, master, name, now())?;
            Ok(written(s, &k)?)
        }
        ["check"] => {
            let r = pools::check::check(s, master, &pool.label)?;
            let damaged: Vec<Value> = r
                .damaged
                .iter()
                .map(|d| serde_json::json!({ "what": d.what, "problem": d.problem }))
                .collect();
            let mut table = format!(
                "{} rows, {} sealed blobs checked: {}",
                r.rows,
                r.sealed,
                if damaged.is_empty() {
                    "nothing damaged".to_string()
                } else {
                    format!("{} damaged", damaged.len())
                }
            );
            for d in &r.damaged {
                table.push_str(&format!("\n{}: {}", d.what, d.problem));
            }
            let shown = Shown {
                json: serde_json::json!({ "rows": r.rows, "sealed": r.sealed, "damaged": damaged }),
                table,
            };
            if r.damaged.is_empty() {
                Ok(shown)
            } else {
                Err(CliError::Damaged(Box::new(shown)))
            }
        }
        ["key", "rotation-policy", "show"] => {
            lifecycle::show(s, name, None)?;
            let json = match rotation::get(s, name)? {
                Some(policy) => policy.to_json(),
                None => serde_json::json!({ "lifetimeActions": [], "attributes": {} }),
            };
            let table = output::policy_table(&json);
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
            let table = output::policy_table(&json);
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
            let mut keys = lifecycle::deleted(s)?;
            keys.retain(|d| grants.allows(DataAction::DeletedKeysRead, Some(&d.key.name)));
            Ok(Shown {
                json: keys.iter().map(|d| pool.deleted(d)).collect(),
                table: pool.deleted_table(&keys),
            })
        }
        ["key", "recover"] => {
            let v = lifecycle::recover(s, name)?;
            Ok(shown(&v))
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
            let k = lifecycle::restore(s, master, &blob)?;
            Ok(written(s, &k)?)
        }
        ["key", "attest"] => attest::key_attest(p, s, master, name),
        _ if dataplane::is_ours(p) => dataplane::run(p, s, master),
        ["key", "import"] | ["key", "download"] => match import_or_download {
            Some(req) => byok::run(req, name, p.one("version"), s, master, pool),
            None => Err(CliError::Usage("unknown command".into())),
        },
        _ => Err(CliError::Usage("unknown command".into())),
    }
}

/// The pool's activation status as the Managed HSM names it.
pub(super) fn status(rec: &pools::TokenRecord) -> &'static str {
    if rec.provisioned {
        "Provisioned"
    } else {
        "Active"
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
    // Two tokens with one label could not be told apart (`--token`, PKCS#11 URIs).
    for (slot, other) in tokens()?.iter().enumerate() {
        if other.location() != token.location() && label_of(other)?.as_deref() == Some(label) {
            return Err(CliError::Failed(format!(
                "slot {slot} ({}) is already labelled '{label}': token labels must differ",
                other.location()
            )));
        }
    }
    for pin in [so_pin, pin.as_str()] {
        crate::engine::rules::check_pin_len(pin.as_bytes())?;
    }
    let group = match p.one("group") {
        Some(g) => Some(
            crate::file_modes::group_id(g)
                .ok_or_else(|| CliError::Usage(format!("no group '{g}' in /etc/group")))?,
        ),
        None => None,
    };
    let retention = match p.one("retention-days") {
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (7..=90).contains(d))
            .ok_or_else(|| CliError::Usage(format!("bad --retention-days '{d}': 7-90")))?,
        None => token.retention_days,
    };
    if service.record()?.is_some() {
        login(token, service, PinUser::So, so_pin)?;
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
        // Re-initialising without the flag makes an active pool again.
        if p.flag("require-security-domain") {
            s.set_provisioned(true)?;
        }
        Ok::<_, CliError>(())
    })?;
    if let Some(gid) = group {
        crate::file_modes::share_with_group(&token.dir, gid).map_err(|e| {
            CliError::Failed(format!(
                "cannot share {} with group {gid}: {e}",
                token.dir.display()
            ))
        })?;
    }
    let rec = service.initialized()?;
    let json = serde_json::json!({
        "label": rec.label,
        "path": token.location().to_string(),
        "retentionDays": rec.retention_days,
        "purgeProtection": rec.purge_protection,
        "status": status(&rec),
    });
    Ok(Shown {
        table: output::table(
            &[
                "Label",
                "Retention days",
                "Purge protection",
                "Status",
                "Path",
            ],
            vec![vec![
                rec.label.clone(),
                rec.retention_days.to_string(),
                rec.purge_protection.to_string(),
                status(&rec).to_string(),
                token.location().to_string(),
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

/// The configured tokens, in slot order.
fn tokens() -> Result<Vec<TokenConfig>, CliError> {
    Ok(config::load()
        .map_err(|_| CliError::Failed("no usable configuration (see SOFTMHSM_LOG=debug)".into()))?
        .tokens)
}

/// Whether a token's store exists (a PostgreSQL store is taken to: opening
/// it says otherwise).
pub(super) fn store_exists(t: &TokenConfig) -> bool {
    t.url.is_some() || t.store_path().exists()
}

/// The label of a configured token, None if it was never initialised (a
/// store file that does not exist yet is not created to find out).
fn label_of(t: &TokenConfig) -> Result<Option<String>, CliError> {
    if !store_exists(t) {
        return Ok(None);
    }
    Ok(pools::Pool::open_or_fail(t)?.record()?.map(|r| r.label))
}

/// The configured token the command names: `--slot N` (its place in the
/// configuration), `--token LABEL` (its initialised label), or the first.
fn pick_token(p: &Parsed) -> Result<TokenConfig, CliError> {
    let tokens = tokens()?;
    match (p.one("slot"), p.one("token")) {
        (Some(_), Some(_)) => Err(CliError::Usage("give --slot or --token, not both".into())),
        (Some(n), None) => {
            let slot: usize = n
                .parse()
                .map_err(|_| CliError::Usage(format!("bad --slot '{n}': a number from 0")))?;
            let count = tokens.len();
            tokens.into_iter().nth(slot).ok_or_else(|| {
                CliError::Failed(format!("no slot {slot}: {count} token(s) configured"))
            })
        }
        (None, Some(label)) => {
            for t in tokens {
                if label_of(&t)?.as_deref() == Some(label) {
                    return Ok(t);
                }
            }
            Err(CliError::Failed(format!("no token labelled '{label}'")))
        }
        (None, None) => tokens
            .into_iter()
            .next()
            .ok_or_else(|| CliError::Failed("no token configured".into())),
    }
}

/// `token list`: every configured token, without creating any store.
fn token_list() -> Result<Shown, CliError> {
    let mut json = Vec::new();
    let mut rows = Vec::new();
    for (slot, t) in tokens()?.iter().enumerate() {
        let path = t.location().to_string();
        let (label, keys) = match label_of(t)? {
            Some(label) => {
                let pool = pools::Pool::open_or_fail(t)?;
                let keys = pool.read(|s| s.lookup(pools::Lookup::All))?.len();
                (Some(label), Some(keys))
            }
            None => (None, None),
        };
        json.push(serde_json::json!({
            "slot": slot,
            "label": label,
            "store": path,
            "initialized": label.is_some(),
            "objects": keys,
            "versioning": t.versioning,
        }));
        rows.push(vec![
            slot.to_string(),
            label.clone().unwrap_or_default(),
            path.clone(),
            label.is_some().to_string(),
            keys.map(|k| k.to_string()).unwrap_or_default(),
        ]);
    }
    Ok(Shown {
        json: Value::Array(json),
        table: output::table(&["Slot", "Label", "Store", "Initialized", "Objects"], rows),
    })
}

/// The user PIN: `--pin`, `--pin-file`, `$SOFTMHSM_PIN`, or a prompt when
/// standard input is a terminal.
fn user_pin(p: &Parsed) -> Result<String, CliError> {
    some_pin(p, "pin", "SOFTMHSM_PIN", "PIN: ")
}

/// The SO PIN: `--so-pin`, `--so-pin-file`, `$SOFTMHSM_SO_PIN`, or a prompt.
fn so_pin(p: &Parsed) -> Result<String, CliError> {
    some_pin(p, "so-pin", "SOFTMHSM_SO_PIN", "SO PIN: ")
}

/// A PIN from `--OPT`, `--OPT-file`, the environment variable `env`, or the
/// terminal.
fn some_pin(p: &Parsed, opt: &str, env: &str, ask: &str) -> Result<String, CliError> {
    if let Some(pin) = p.one(opt) {
        return Ok(pin.to_string());
    }
    if let Some(file) = p.one(&format!("{opt}-file")) {
        return pin_file(file);
    }
    if let Some(pin) = std::env::var(env).ok().filter(|v| !v.is_empty()) {
        return Ok(pin);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "no {}: give --{opt}, --{opt}-file or set {env}",
            ask.trim_end_matches([':', ' '])
        )));
    }
    prompt_pin(ask)
}

/// The first line of a PIN file.
fn pin_file(file: &str) -> Result<String, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Failed(format!("cannot read the PIN file {file}: {e}")))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The new user PIN: `--new-pin`, `--new-pin-file`, or asked twice on a terminal.
fn new_pin(p: &Parsed) -> Result<String, CliError> {
    if let Some(pin) = p.one("new-pin") {
        return Ok(pin.to_string());
    }
    if let Some(file) = p.one("new-pin-file") {
        return pin_file(file);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no new PIN: give --new-pin or --new-pin-file".into(),
        ));
    }
    let pin = prompt_pin("new PIN: ")?;
    if prompt_pin("new PIN again: ")? != pin {
        return Err(CliError::Failed("the two new PINs differ".into()));
    }
    Ok(pin)
}

/// Check `pin` for `who`, recording the login; a wrong PIN says how many
/// tries are left before the user PIN locks (the SO PIN never locks).
fn login(
    token: &TokenConfig,
    service: &pools::Pool,
    who: PinUser,
    pin: &str,
) -> Result<MasterKey, CliError> {
    let identity = match who {
        PinUser::User => pools::access::Identity::User,
        PinUser::So => pools::access::Identity::So,
    };
    match audit::login(token, identity, || service.unlock(who, pin.as_bytes())) {
        Ok(master) => Ok(master),
        Err(Error(CKR_PIN_INCORRECT)) if who == PinUser::User => {
            let failures = service.record()?.map_or(0, |r| r.user_failures);
            let left = pools::MAX_PIN_FAILURES.saturating_sub(failures);
            Err(CliError::Failed(format!(
                "wrong PIN: {left} {} left before the user PIN locks",
                if left == 1 { "try" } else { "tries" }
            )))
        }
        Err(Error(CKR_PIN_INCORRECT)) => Err(CliError::Failed("wrong SO PIN".into())),
        Err(e) => Err(e.into()),
    }
}

/// `pin change` and `pin unlock`.
fn pin_verb(
    p: &Parsed,
    what: &str,
    token: &TokenConfig,
    service: &pools::Pool,
) -> Result<Shown, CliError> {
    let (who, current) = match what {
        "change" => (PinUser::User, user_pin(p)?),
        _ => (PinUser::So, so_pin(p)?),
    };
    let new = new_pin(p)?;
    crate::engine::rules::check_pin_len(new.as_bytes())?;
    let master = login(token, service, who, &current)?;
    service.set_pin(PinUser::User, &master, new.as_bytes())?;
    let done = match what {
        "change" => "user PIN changed",
        _ => "new user PIN set (unlocked)",
    };
    Ok(Shown {
        json: serde_json::json!({ "result": done }),
        table: done.to_string(),
    })
}

/// Read a PIN from the terminal without echo. Echo is switched with `stty`
/// rather than termios calls, so no `unsafe` lives outside `src/ffi`.
fn prompt_pin(ask: &str) -> Result<String, CliError> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    eprint!("{ask}");
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
        // The Managed HSM's post-quantum keys (API 2026-05-01-preview).
        "akp" => {
            if size.is_some() {
                return Err(CliError::Usage("AKP keys take --alg, not --size".into()));
            }
            let alg = p.one("alg").unwrap_or("ML-DSA-65");
            KeyKind::MlDsa(crate::crypto::MlDsa::from_name(alg).ok_or_else(|| {
                CliError::Usage(format!(
                    "unknown --alg '{alg}': use ML-DSA-44, ML-DSA-65 or ML-DSA-87"
                ))
            })?)
        }
        _ => {
            return Err(CliError::Usage(format!(
                "unknown --kty '{}': use RSA, EC, oct or AKP",
                p.required("kty")
            )))
        }
    };
    if p.one("curve").is_some() && !matches!(kind, KeyKind::Ec(_)) {
        return Err(CliError::Usage("--curve is for EC keys".into()));
    }
    if p.one("alg").is_some() && !matches!(kind, KeyKind::MlDsa(_)) {
        return Err(CliError::Usage("--alg is for AKP keys".into()));
    }
    Ok(KeySpec {
        kind,
        ops: p.many("ops").map(ops).transpose()?,
        tags: p.many("tags").map(tags).transpose()?.unwrap_or_default(),
        enabled: p.one("enabled").map(boolean).transpose()?.unwrap_or(true),
        nbf: p.one("not-before").map(date).transpose()?,
        exp: p.one("expires").map(date).transpose()?,
        id: p.one("id").map(hex_id).transpose()?,
    })
}

/// A `CKA_ID` given in hex (`--id`): 1-64 bytes.
pub(super) fn hex_id(s: &str) -> Result<Vec<u8>, CliError> {
    let bad = || CliError::Usage(format!("--id '{s}': give 1-64 bytes in hex, e.g. 0a1b"));
    if s.is_empty() || !s.len().is_multiple_of(2) || s.len() > 128 {
        return Err(bad());
    }
    crate::engine::key::unhex(s).ok_or_else(bad)
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
            // A value the Managed HSM refuses (exit 1), like an RSA size it has not.
            CliError::Failed(format!(
                "unsupported --curve '{s}': use P-256, P-256K, P-384 or P-521"
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
