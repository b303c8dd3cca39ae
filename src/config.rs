//! Configuration (DESIGN §4): `SOFTMHSM_CONF` names a TOML file listing tokens
//! (each with a `path`, or a PostgreSQL `url`); without it one token lives at
//! `$SOFTMHSM_DIR`, else `$XDG_DATA_HOME/softmhsm/`, else
//! `~/.local/share/softmhsm/`, and `$SOFTMHSM_STORE_URL` puts its store in a
//! PostgreSQL database instead. Zero configuration works.

use crate::error::{Error, Result};
use crate::pool::audit::Level;
use crate::store::Location;
use cryptoki_sys::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The store file inside a token directory.
pub const STORE_FILE: &str = "softmhsm.db";
/// Default PBKDF2 iterations for PIN-derived keys (OWASP 2023 figure for HMAC-SHA-256).
pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;
/// Default soft-delete retention in days (the Managed HSM default).
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// One token (one slot).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The token directory (holds `softmhsm.db`, or only this machine's own
    /// state, e.g. the audit log, when the store is at `url`).
    pub dir: PathBuf,
    /// A PostgreSQL pool shared by several machines (libpq URL, multi-host
    /// allowed) instead of the SQLite file in `dir`.
    pub url: Option<String>,
    /// Managed HSM versioning of token keys by label (default) or SoftHSM-like
    /// distinct keys per label (`versioning = "off"`).
    pub versioning: bool,
    /// PBKDF2 iterations used when the token is initialised.
    pub kdf_iterations: u32,
    /// Soft-delete retention fixed when the token is initialised.
    pub retention_days: u32,
    /// The longest a change committed elsewhere can stay unseen when its
    /// signal was lost (a writer killed between commit and signal, a lost
    /// PostgreSQL notification): the pool asks the database at least this often.
    pub max_staleness_ms: u64,
    /// What the audit log records (`audit = "all" | "management" | "off"`,
    /// `all` by default; `SOFTMHSM_AUDIT` overrides it).
    pub audit: Level,
}

impl TokenConfig {
    /// The store file path (the SQLite store; with a `url`, where this
    /// machine's own files are named after).
    pub fn store_path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    /// Where the token's store is: the PostgreSQL `url` if set, else the file.
    pub fn location(&self) -> Location {
        match &self.url {
            Some(url) => Location::Url(url.clone()),
            None => Location::Path(self.store_path()),
        }
    }
}

impl std::fmt::Debug for TokenConfig {
    /// As derived, with the URL's password hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("dir", &self.dir)
            .field("url", &self.url.as_ref().map(|_| self.location()))
            .field("versioning", &self.versioning)
            .field("kdf_iterations", &self.kdf_iterations)
            .field("retention_days", &self.retention_days)
            .field("max_staleness_ms", &self.max_staleness_ms)
            .field("audit", &self.audit)
            .finish()
    }
}

/// The configuration: the tokens, one per slot, in slot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Tokens in slot order.
    pub tokens: Vec<TokenConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, rename = "token")]
    tokens: Vec<FileToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    versioning: Option<String>,
    #[serde(default)]
    kdf_iterations: Option<u32>,
    #[serde(default)]
    retention_days: Option<u32>,
    #[serde(default)]
    max_staleness_ms: Option<u64>,
    #[serde(default)]
    audit: Option<String>,
}

/// Read the configuration from the environment.
pub fn load() -> Result<Config> {
    let env_iterations = std::env::var("SOFTMHSM_KDF_ITERATIONS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| *v > 0);
    if let Some(path) = std::env::var_os("SOFTMHSM_CONF") {
        return load_file(Path::new(&path), env_iterations);
    }
    let dir = default_dir().ok_or_else(|| {
        log::error!("no token directory: set SOFTMHSM_DIR, XDG_DATA_HOME or HOME");
        Error(CKR_GENERAL_ERROR)
    })?;
    let url = std::env::var("SOFTMHSM_STORE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    Ok(Config {
        tokens: vec![TokenConfig {
            dir,
            url,
            versioning: true,
            kdf_iterations: env_iterations.unwrap_or(DEFAULT_KDF_ITERATIONS),
            retention_days: DEFAULT_RETENTION_DAYS,
            max_staleness_ms: match std::env::var("SOFTMHSM_MAX_STALENESS_MS") {
                Ok(v) => staleness(v.parse().ok()).map_err(|why| {
                    log::error!("bad SOFTMHSM_MAX_STALENESS_MS {v:?}: {why}");
                    Error(CKR_GENERAL_ERROR)
                })?,
                Err(_) => DEFAULT_MAX_STALENESS_MS,
            },
            audit: Level::from_env().unwrap_or_default(),
        }],
    })
}

/// The default [`TokenConfig::max_staleness_ms`].
pub const DEFAULT_MAX_STALENESS_MS: u64 = 1000;

/// A staleness bound in milliseconds: 10 to 60,000 (None: not a number).
fn staleness(ms: Option<u64>) -> std::result::Result<u64, String> {
    match ms {
        Some(ms) if (10..=60_000).contains(&ms) => Ok(ms),
        _ => Err("max_staleness_ms must be 10 to 60000".into()),
    }
}

/// The zero-config token directory.
pub fn default_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = nonempty("SOFTMHSM_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = nonempty("XDG_DATA_HOME") {
        return Some(PathBuf::from(d).join("softmhsm"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".local/share/softmhsm"))
}

/// Parse a TOML configuration file.
pub fn load_file(path: &Path, env_iterations: Option<u32>) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        log::error!("cannot read SOFTMHSM_CONF {}: {e}", path.display());
        Error(CKR_GENERAL_ERROR)
    })?;
    parse(&text, env_iterations)
}

/// Parse configuration text.
pub fn parse(text: &str, env_iterations: Option<u32>) -> Result<Config> {
    let bad = |why: String| {
        log::error!("bad softmhsm configuration: {why}");
        Error(CKR_GENERAL_ERROR)
    };
    let file: FileConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let env_audit = Level::from_env();
    if file.tokens.is_empty() {
        return Err(bad("no [[token]] listed".into()));
    }
    let tokens = file
        .tokens
        .into_iter()
        .map(|t| {
            let versioning = match t.versioning.as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(v) => {
                    return Err(bad(format!(
                        "versioning must be \"on\" or \"off\", not {v:?}"
                    )))
                }
            };
            let audit = match t.audit.as_deref().map(|v| (v, Level::parse(v))) {
                None => Level::default(),
                Some((v, None)) => {
                    return Err(bad(format!(
                        "audit must be \"all\", \"management\" or \"off\", not {v:?}"
                    )))
                }
                Some((_, Some(level))) => level,
            };
            let retention_days = t.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
            if !(7..=90).contains(&retention_days) {
                return Err(bad("retention_days must be 7 to 90".into()));
            }
            let dir = match (t.path, &t.url) {
                (Some(path), _) => path,
                // A shared pool still keeps this machine's own files locally.
                (None, Some(_)) => default_dir()
                    .ok_or_else(|| bad("a token with a url and no path needs HOME".into()))?,
                (None, None) => return Err(bad("a [[token]] needs a path or a url".into())),
            };
            Ok(TokenConfig {
                dir,
                url: t.url,
                versioning,
                kdf_iterations: env_iterations
                    .or(t.kdf_iterations)
                    .unwrap_or(DEFAULT_KDF_ITERATIONS),
                retention_days,
                max_staleness_ms: match t.max_staleness_ms {
                    Some(ms) => staleness(Some(ms)).map_err(bad)?,
                    None => DEFAULT_MAX_STALENESS_MS,
                },
                audit: env_audit.unwrap_or(audit),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Config { tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_tokens_become_several_slots() {
        let c = parse(
            "[[token]]\npath = \"/a\"\n[[token]]\npath = \"/b\"\nversioning = \"off\"\nkdf_iterations = 1000\n",
            None,
        )
        .unwrap();
        assert_eq!(c.tokens.len(), 2);
        assert!(c.tokens[0].versioning);
        assert!(!c.tokens[1].versioning);
        assert_eq!(c.tokens[1].kdf_iterations, 1000);
        assert_eq!(c.tokens[0].kdf_iterations, DEFAULT_KDF_ITERATIONS);
        assert_eq!(c.tokens[1].store_path(), PathBuf::from("/b/softmhsm.db"));
    }

    #[test]
    fn audit_is_a_per_token_setting_all_by_default() {
        // (SOFTMHSM_AUDIT, which overrides it, is not set under `cargo test`.)
        let c = parse(
            "[[token]]\npath = \"/a\"\n[[token]]\npath = \"/b\"\naudit = \"management\"\n[[token]]\npath = \"/c\"\naudit = \"off\"\n",
            None,
        )
        .unwrap();
        let levels: Vec<Level> = c.tokens.iter().map(|t| t.audit).collect();
        assert_eq!(levels, [Level::All, Level::Management, Level::Off]);
    }

    #[test]
    fn a_token_with_a_url_is_a_postgresql_store() {
        let c = parse(
            "[[token]]\npath = \"/a\"\nurl = \"postgresql://app:pw@db1,db2/pool\"\n",
            None,
        )
        .unwrap();
        let t = &c.tokens[0];
        assert_eq!(
            t.location(),
            Location::Url("postgresql://app:pw@db1,db2/pool".into())
        );
        assert_eq!(t.dir, PathBuf::from("/a"));
        assert!(!format!("{t:?}").contains("pw"), "no password in Debug");
        let c = parse("[[token]]\npath = \"/a\"\n", None).unwrap();
        assert_eq!(
            c.tokens[0].location(),
            Location::Path(PathBuf::from("/a/softmhsm.db"))
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(parse("[[token]]\npath = \"/a\"\nversioning = \"maybe\"\n", None).is_err());
        assert!(parse("[[token]]\npath = \"/a\"\nretention_days = 3\n", None).is_err());
        assert!(parse("[[token]]\npath = \"/a\"\nmax_staleness_ms = 5\n", None).is_err());
        let c = parse("[[token]]\npath = \"/a\"\nmax_staleness_ms = 250\n", None).unwrap();
        assert_eq!(c.tokens[0].max_staleness_ms, 250);
        let c = parse("[[token]]\npath = \"/a\"\n", None).unwrap();
        assert_eq!(c.tokens[0].max_staleness_ms, DEFAULT_MAX_STALENESS_MS);
        assert!(parse("[[token]]\nbogus = 1\n", None).is_err());
        assert!(parse("[[token]]\npath = \"/a\"\naudit = \"some\"\n", None).is_err());
        assert!(parse("[[token]]\nversioning = \"on\"\n", None).is_err());
        assert!(parse("", None).is_err());
    }
}
