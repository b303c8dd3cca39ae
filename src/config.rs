//! Configuration (DESIGN §4): `SOFTMHSM_CONF` names a TOML file listing tokens;
//! without it one token lives at `$SOFTMHSM_DIR`, else `$XDG_DATA_HOME/softmhsm/`,
//! else `~/.local/share/softmhsm/`. Zero configuration works.

use crate::error::{Error, Result};
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenConfig {
    /// The token directory (holds `softmhsm.db`).
    pub dir: PathBuf,
    /// Managed HSM versioning of token keys by label (default) or SoftHSM-like
    /// distinct keys per label (`versioning = "off"`).
    pub versioning: bool,
    /// PBKDF2 iterations used when the token is initialised.
    pub kdf_iterations: u32,
    /// Soft-delete retention fixed when the token is initialised.
    pub retention_days: u32,
}

impl TokenConfig {
    /// The store file path.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
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
    path: PathBuf,
    #[serde(default)]
    versioning: Option<String>,
    #[serde(default)]
    kdf_iterations: Option<u32>,
    #[serde(default)]
    retention_days: Option<u32>,
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
    Ok(Config {
        tokens: vec![TokenConfig {
            dir,
            versioning: true,
            kdf_iterations: env_iterations.unwrap_or(DEFAULT_KDF_ITERATIONS),
            retention_days: DEFAULT_RETENTION_DAYS,
        }],
    })
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
            let retention_days = t.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
            if !(7..=90).contains(&retention_days) {
                return Err(bad("retention_days must be 7 to 90".into()));
            }
            Ok(TokenConfig {
                dir: t.path,
                versioning,
                kdf_iterations: env_iterations
                    .or(t.kdf_iterations)
                    .unwrap_or(DEFAULT_KDF_ITERATIONS),
                retention_days,
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
    fn bad_configuration_is_refused() {
        assert!(parse("[[token]]\npath = \"/a\"\nversioning = \"maybe\"\n", None).is_err());
        assert!(parse("[[token]]\npath = \"/a\"\nretention_days = 3\n", None).is_err());
        assert!(parse("[[token]]\nbogus = 1\n", None).is_err());
        assert!(parse("", None).is_err());
    }
}
