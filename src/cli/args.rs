//! The command line: the verb table and a small hand-written parser (no
//! dependency; `--help` on every verb comes from the same table).

use super::CliError;
use std::collections::HashMap;

/// How many values an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// None: a switch.
    Flag,
    /// Exactly one.
    One,
    /// Zero or more, up to the next `--option`.
    Many,
}

/// One option of a verb.
pub struct Opt {
    /// Long name without the dashes.
    pub name: &'static str,
    /// Values taken.
    pub arity: Arity,
    /// Whether it must be given.
    pub required: bool,
    /// Help text (value placeholder first).
    pub help: &'static str,
}

pub(super) const fn opt(
    name: &'static str,
    arity: Arity,
    required: bool,
    help: &'static str,
) -> Opt {
    Opt {
        name,
        arity,
        required,
        help,
    }
}

/// A verb (`init`, `key create`, …).
pub struct Verb {
    /// The words that name it.
    pub path: &'static [&'static str],
    /// One-line description.
    pub summary: &'static str,
    /// Its options (the global ones come on top).
    pub opts: &'static [Opt],
}

use Arity::{Flag, Many, One};

/// Options every verb takes.
pub const GLOBAL: &[Opt] = &[
    opt(
        "token",
        One,
        false,
        "LABEL  the token to use, by its label (default: the first configured)",
    ),
    opt(
        "slot",
        One,
        false,
        "N  the token to use, by its slot (its place in the configuration, from 0; see token list)",
    ),
    opt(
        "pin",
        One,
        false,
        "PIN  the user PIN (else --pin-file, else $SOFTMHSM_PIN, else a prompt on a terminal; on a shared machine prefer those: a command line is visible to other users)",
    ),
    opt(
        "pin-file",
        One,
        false,
        "FILE  read the user PIN from the first line of FILE",
    ),
    opt(
        "user",
        One,
        false,
        "NAME  act as this principal (its PIN from --pin, --pin-file, $SOFTMHSM_PIN or the prompt); default: the plain user PIN",
    ),
    opt(
        "output",
        One,
        false,
        "json|table  output format (default json)",
    ),
    opt("help", Flag, false, "show this help"),
];

pub(super) const NEW_PIN: Opt = opt(
    "new-pin",
    One,
    false,
    "PIN  the new user PIN (else --new-pin-file, else a prompt on a terminal, asked twice)",
);
pub(super) const NEW_PIN_FILE: Opt = opt(
    "new-pin-file",
    One,
    false,
    "FILE  read the new user PIN from the first line of FILE",
);
pub(super) const SO_PIN: Opt = opt(
    "so-pin",
    One,
    false,
    "PIN  the Security Officer PIN (else --so-pin-file, else $SOFTMHSM_SO_PIN, else a prompt on a terminal)",
);
pub(super) const SO_PIN_FILE: Opt = opt(
    "so-pin-file",
    One,
    false,
    "FILE  read the SO PIN from the first line of FILE",
);

pub(super) const NAME: Opt = opt("name", One, true, "NAME  key name (1-127 of 0-9 a-z A-Z -)");
pub(super) const VERSION: Opt = opt(
    "version",
    One,
    false,
    "VERSION  a key version (default: the current one)",
);

const DP_SIGN_ALG: Opt = opt(
    "algorithm",
    One,
    true,
    "RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES256K|ES384|ES512|ML-DSA-44|ML-DSA-65|ML-DSA-87",
);
const DIGEST: Opt = opt(
    "digest",
    One,
    false,
    "B64URL  the digest to sign (as long as the algorithm's hash; not for ML-DSA)",
);
const DP_MESSAGE: Opt = opt(
    "value",
    One,
    false,
    "B64URL  ML-DSA: the message itself (pure ML-DSA signs the message, not a digest)",
);
const DP_MU: Opt = opt(
    "mu",
    One,
    false,
    "B64URL  ML-DSA: an external mu (FIPS 204's 64-byte message representative, context included) instead of --value",
);
const DP_CONTEXT: Opt = opt(
    "context",
    One,
    false,
    "B64URL  ML-DSA context string (FIPS 204, at most 255 bytes; default: empty)",
);
const DP_CIPHER_ALG: Opt = opt(
    "algorithm",
    One,
    true,
    "RSA1_5|RSA-OAEP|RSA-OAEP-256|A128GCM|A192GCM|A256GCM|A128CBC|A192CBC|A256CBC|A128CBCPAD|A192CBCPAD|A256CBCPAD",
);
const DP_WRAP_ALG: Opt = opt(
    "algorithm",
    One,
    true,
    "RSA-OAEP-256|RSA-OAEP|RSA1_5|A128KW|A192KW|A256KW",
);
const DP_VALUE: Opt = opt("value", One, true, "B64URL  the bytes to operate on");
const DP_IV: Opt = opt(
    "iv",
    One,
    false,
    "B64URL  AES-CBC's IV (16 bytes); AES-GCM decryption's (encryption makes one and prints it)",
);
const DP_AAD: Opt = opt(
    "aad",
    One,
    false,
    "B64URL  AES-GCM additional authenticated data",
);
const DP_TAG: Opt = opt("tag", One, false, "B64URL  AES-GCM decryption's tag");

/// Every verb.
pub const VERBS: &[Verb] = &[
    Verb {
        path: &["init"],
        summary: "initialise (or re-initialise) a token and set its user PIN",
        opts: &[
            opt("label", One, true, "LABEL  token label (1-32 characters)"),
            opt("so-pin", One, true, "PIN  Security Officer PIN (the current one to re-initialise)"),
            opt("retention-days", One, false, "N  soft-delete retention, 7-90 (default 90)"),
            opt("purge-protection", Flag, false, "forbid purging deleted keys before their purge date (cannot be undone)"),
            opt("force", Flag, false, "re-initialise a token that holds keys, erasing them (never a purge-protected one)"),
            opt("require-security-domain", Flag, false, "keep the pool provisioned (every key operation refused) until `security-domain download` has run once"),
            opt("group", One, false, "GROUP  share the token directory with a service user's group (2770, files 0660)"),
        ],
    },
    Verb {
        path: &["key", "create"],
        summary: "create a key, or a new version of an existing name",
        opts: &[
            NAME,
            opt("kty", One, true, "RSA|EC|oct|AKP  key type (-HSM suffix accepted)"),
            opt("size", One, false, "BITS  RSA 2048|3072|4096 (default 2048), oct 128|192|256 (default 256)"),
            opt("curve", One, false, "P-256|P-256K|P-384|P-521  EC curve (default P-256)"),
            opt("alg", One, false, "ML-DSA-44|ML-DSA-65|ML-DSA-87  AKP key's algorithm (default ML-DSA-65)"),
            opt("ops", Many, false, "OP...  sign verify encrypt decrypt wrapKey unwrapKey, or import alone (RSA: a BYOK key-exchange key) (default: all the type allows)"),
            opt("tags", Many, false, "K=V...  at most 15 tags"),
            opt("enabled", One, false, "true|false  (default true)"),
            opt("not-before", One, false, "RFC3339  not usable before"),
            opt("expires", One, false, "RFC3339  not usable from"),
            opt("id", One, false, "HEX  the version's PKCS#11 CKA_ID (default: the 16 bytes of its version id)"),
        ],
    },
    Verb {
        path: &["pin", "change"],
        summary: "change the user PIN (the current one from --pin, --pin-file, $SOFTMHSM_PIN or the prompt)",
        opts: &[NEW_PIN, NEW_PIN_FILE],
    },
    Verb {
        path: &["pin", "unlock"],
        summary: "set a new user PIN with the SO PIN, unlocking a locked one (as C_InitPIN)",
        opts: &[SO_PIN, SO_PIN_FILE, NEW_PIN, NEW_PIN_FILE],
    },
    Verb {
        path: &["key", "list"],
        summary: "list keys (current versions)",
        opts: &[],
    },
    Verb {
        path: &["key", "list-versions"],
        summary: "list the versions of a key",
        opts: &[NAME],
    },
    Verb {
        path: &["key", "show"],
        summary: "show a key's public part and attributes",
        opts: &[
            opt("name", One, false, "NAME  key name (needed unless --id is given)"),
            VERSION,
            opt("id", One, false, "HEX  the version whose PKCS#11 CKA_ID this is (current first, else newest)"),
        ],
    },
    Verb {
        path: &["key", "update"],
        summary: "change a key version's attributes",
        opts: &[
            NAME,
            VERSION,
            opt("enabled", One, false, "true|false"),
            opt("not-before", One, false, "RFC3339|none"),
            opt("expires", One, false, "RFC3339|none"),
            opt("ops", Many, false, "OP...  the new key_ops"),
            opt("tags", Many, false, "K=V...  replace every tag (none given: remove all)"),
        ],
    },
    Verb {
        path: &["key", "rotate"],
        summary: "make a new current version (same type, size, ops, tags)",
        opts: &[NAME],
    },
    Verb {
        path: &["key", "rotation-policy", "show"],
        summary: "show a key's rotation policy (lifetimeActions, expiryTime)",
        opts: &[NAME],
    },
    Verb {
        path: &["key", "rotation-policy", "update"],
        summary: "set a key's rotation policy from JSON (the REST API's shape)",
        opts: &[
            NAME,
            opt("value", One, true, "JSON|@FILE  the policy, e.g. {\"lifetimeActions\":[{\"trigger\":{\"timeAfterCreate\":\"P90D\"},\"action\":{\"type\":\"Rotate\"}}],\"attributes\":{\"expiryTime\":\"P1Y\"}}"),
        ],
    },
    Verb {
        path: &["key", "rotate-due"],
        summary: "apply every rotation policy now: rotate the keys that are due, report Notify triggers",
        opts: &[],
    },
    Verb {
        path: &["key", "delete"],
        summary: "soft-delete a key (every version)",
        opts: &[NAME],
    },
    Verb {
        path: &["key", "list-deleted"],
        summary: "list soft-deleted keys",
        opts: &[],
    },
    Verb {
        path: &["key", "recover"],
        summary: "bring a soft-deleted key back",
        opts: &[NAME],
    },
    Verb {
        path: &["key", "purge"],
        summary: "erase a soft-deleted key for good",
        opts: &[NAME],
    },
    Verb {
        path: &["key", "backup"],
        summary: "write every version of a key to a file, sealed under the pool's master key",
        opts: &[NAME, opt("file", One, true, "FILE  the backup file to create")],
    },
    Verb {
        path: &["key", "restore"],
        summary: "restore a key backup into the pool it came from",
        opts: &[opt("file", One, true, "FILE  a file written by key backup")],
    },
    Verb {
        path: &["key", "attest"],
        summary: "a statement of a key version's properties, signed by the token's attestation key",
        opts: &[NAME, VERSION, opt("file", One, false, "FILE  also write it to this new file")],
    },
    Verb {
        path: &["key", "sign"],
        summary: "sign a digest with a key version (az keyvault key sign); prints {kid, value}",
        opts: &[NAME, VERSION, DP_SIGN_ALG, DIGEST, DP_MESSAGE, DP_MU, DP_CONTEXT],
    },
    Verb {
        path: &["key", "verify"],
        summary: "check a signature of a digest (az keyvault key verify); prints {kid, value: true|false}",
        opts: &[NAME, VERSION, DP_SIGN_ALG, DIGEST, DP_MESSAGE, DP_MU, DP_CONTEXT, opt("signature", One, true, "B64URL  the signature")],
    },
    Verb {
        path: &["key", "encrypt"],
        summary: "encrypt a value (az keyvault key encrypt; RSA with the public key); prints {kid, value} (AES-GCM: and iv, tag, aad)",
        opts: &[NAME, VERSION, DP_CIPHER_ALG, DP_VALUE, DP_IV, DP_AAD],
    },
    Verb {
        path: &["key", "decrypt"],
        summary: "decrypt a value (az keyvault key decrypt); prints {kid, value}",
        opts: &[NAME, VERSION, DP_CIPHER_ALG, DP_VALUE, DP_IV, DP_AAD, DP_TAG],
    },
    Verb {
        path: &["key", "wrap"],
        summary: "wrap a key's bytes (the REST wrapKey); prints {kid, value}",
        opts: &[NAME, VERSION, DP_WRAP_ALG, DP_VALUE],
    },
    Verb {
        path: &["key", "unwrap"],
        summary: "unwrap a wrapped key's bytes (the REST unwrapKey); prints {kid, value}",
        opts: &[NAME, VERSION, DP_WRAP_ALG, DP_VALUE],
    },
    Verb {
        path: &["key", "random"],
        summary: "random bytes from the token's generator (the REST getRandomBytes); prints {value}",
        opts: &[opt("count", One, true, "N  how many bytes, 1-128")],
    },
    Verb {
        path: &["check"],
        summary: "open every record and sealed key of the token, read-only, and report what is damaged (exit 1 if anything is)",
        opts: &[],
    },
    Verb {
        path: &["token", "list"],
        summary: "every configured token: slot, label, store, initialised, key count (no PIN needed)",
        opts: &[],
    },
    Verb {
        path: &["token", "show"],
        summary: "the token: label, retention, key counts, attestation public key (no PIN needed)",
        opts: &[],
    },
    Verb {
        path: &["attest", "verify"],
        summary: "verify a key attest statement (no PIN needed)",
        opts: &[
            opt("file", One, true, "FILE  a statement written by key attest"),
            opt("public-key", One, false, "PEM  a PEM file (or text) of the attestation public key (default: the token's)"),
        ],
    },
    Verb {
        path: &["audit"],
        summary: "print the token's audit log (JSON lines, or --output table)",
        opts: &[
            opt("since", One, false, "WHEN  RFC 3339 time, or a duration back from now (30s, 15m, 1h, 2d)"),
            opt("operation", One, false, "NAME  only this operationName (KeyCreate, Login, KeySign, ...)"),
        ],
    },
];

/// Every verb: the table above, then the key import/download verbs and the
/// security-domain verbs (kept in `byok.rs` and `security_domain.rs` so each
/// group of verbs lives with its code).
pub fn all_verbs() -> impl Iterator<Item = &'static Verb> {
    VERBS
        .iter()
        .chain(super::byok::VERBS)
        .chain(super::security_domain::VERBS)
        .chain(super::access::VERBS)
}

/// A parsed command line.
pub struct Parsed {
    /// The verb.
    pub verb: &'static Verb,
    values: HashMap<&'static str, Vec<String>>,
}

/// What the command line asks for.
pub enum Command {
    /// Run a verb.
    Run(Parsed),
    /// Print this text and succeed (help, version).
    Print(String),
}

impl Parsed {
    /// The value of a one-value option.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// The values of a many-value option, if it was given.
    pub fn many(&self, name: &str) -> Option<&[String]> {
        self.values.get(name).map(Vec::as_slice)
    }

    /// Whether a switch was given.
    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A required option's value (the parser has checked it is there).
    pub fn required(&self, name: &str) -> &str {
        self.one(name).unwrap_or_default()
    }
}

/// Parse the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .take_while(|a| !a.starts_with('-'))
        .collect();
    if words.is_empty() {
        return match args.first().map(String::as_str) {
            None | Some("--help") | Some("-h") => Ok(Command::Print(main_help())),
            Some("--version") | Some("-V") => Ok(Command::Print(format!(
                "softmhsm {}",
                env!("CARGO_PKG_VERSION")
            ))),
            Some(other) => Err(CliError::Usage(format!("unknown option '{other}'"))),
        };
    }
    let Some(verb) = all_verbs().find(|v| v.path == words.as_slice()) else {
        // A group ("key", "key rotation-policy") alone or with --help lists its verbs.
        let group: Vec<&Verb> = all_verbs()
            .filter(|v| v.path.len() > words.len() && v.path[..words.len()] == words[..])
            .collect();
        let asks_help = matches!(
            args.get(words.len()).map(String::as_str),
            None | Some("--help") | Some("-h")
        );
        if !group.is_empty() && asks_help {
            return Ok(Command::Print(group_help(&words, &group)));
        }
        return Err(CliError::Usage(format!(
            "unknown command '{}' (see softmhsm --help)",
            words.join(" ")
        )));
    };
    let rest = &args[words.len()..];
    let mut values: HashMap<&'static str, Vec<String>> = HashMap::new();
    let mut i = 0;
    while i < rest.len() {
        let arg = &rest[i];
        let Some(body) = arg.strip_prefix("--") else {
            return Err(usage(verb, format!("unexpected argument '{arg}'")));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(o) = GLOBAL.iter().chain(verb.opts).find(|o| o.name == name) else {
            return Err(usage(verb, format!("unknown option '--{name}'")));
        };
        if o.name == "help" {
            return Ok(Command::Print(verb_help(verb)));
        }
        if values.contains_key(o.name) {
            return Err(usage(verb, format!("--{name} given twice")));
        }
        i += 1;
        let mut vals = Vec::new();
        match (o.arity, inline) {
            (Flag, Some(_)) => return Err(usage(verb, format!("--{name} takes no value"))),
            (Flag, None) => {}
            (_, Some(v)) => vals.push(v),
            (One, None) => match rest.get(i) {
                Some(v) if !v.starts_with("--") => {
                    vals.push(v.clone());
                    i += 1;
                }
                _ => return Err(usage(verb, format!("--{name} needs a value"))),
            },
            (Many, None) => {
                while let Some(v) = rest.get(i).filter(|v| !v.starts_with("--")) {
                    vals.push(v.clone());
                    i += 1;
                }
            }
        }
        values.insert(o.name, vals);
    }
    if let Some(missing) = verb
        .opts
        .iter()
        .find(|o| o.required && !values.contains_key(o.name))
    {
        return Err(usage(verb, format!("--{} is required", missing.name)));
    }
    Ok(Command::Run(Parsed { verb, values }))
}

/// A usage error that points at the verb's help.
fn usage(verb: &Verb, msg: String) -> CliError {
    CliError::Usage(format!(
        "{msg} (see softmhsm {} --help)",
        verb.path.join(" ")
    ))
}

/// `softmhsm --help`.
fn main_help() -> String {
    let mut s = format!(
        "softmhsm {}: admin CLI for the softmhsm PKCS#11 token (a local Managed HSM pool)\n\n\
         Usage: softmhsm <command> [options]\n\nCommands:\n",
        env!("CARGO_PKG_VERSION")
    );
    s.push_str(&verb_table(&all_verbs().collect::<Vec<_>>()));
    s.push_str(
        "\nOutput is JSON unless --output table. Exit codes: 0 success, 1 the operation \
         failed, 2 bad usage.\nThe token store is the library's: $SOFTMHSM_CONF, \
         $SOFTMHSM_DIR, /etc/softmhsm/softmhsm.toml, $XDG_DATA_HOME/softmhsm or \
         ~/.local/share/softmhsm.\n\
         Run 'softmhsm <command> --help' for its options.",
    );
    s
}

/// One aligned line per verb: its words, then its summary.
fn verb_table(verbs: &[&Verb]) -> String {
    let width = verbs
        .iter()
        .map(|v| v.path.join(" ").len())
        .max()
        .unwrap_or(0);
    verbs
        .iter()
        .map(|v| format!("  {:<width$}  {}\n", v.path.join(" "), v.summary))
        .collect()
}

/// `softmhsm <group> --help`, e.g. `softmhsm key rotation-policy --help`.
fn group_help(words: &[&str], verbs: &[&Verb]) -> String {
    format!(
        "Usage: softmhsm {} <command> [options]\n\nCommands:\n{}\n\
         Run 'softmhsm <command> --help' for its options.",
        words.join(" "),
        verb_table(verbs)
    )
}

/// `softmhsm <verb> --help`.
fn verb_help(verb: &Verb) -> String {
    let mut s = format!(
        "softmhsm {}: {}\n\nOptions:\n",
        verb.path.join(" "),
        verb.summary
    );
    for o in verb.opts.iter().chain(GLOBAL) {
        let (value, text) = match o.arity {
            Flag => ("", o.help),
            _ => o.help.split_once("  ").unwrap_or(("VALUE", o.help)),
        };
        let head = format!("--{} {value}", o.name);
        let req = if o.required { " (required)" } else { "" };
        s.push_str(&format!("  {head:<28} {text}{req}\n"));
    }
    s.pop();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> Parsed {
        match parse(&args(s)) {
            Ok(Command::Run(p)) => p,
            _ => panic!("{s} did not parse as a verb"),
        }
    }

    #[test]
    fn options_take_their_values() {
        let p = run("key create --name k --kty EC --ops sign verify --tags a=1 --pin=1234");
        assert_eq!(p.verb.path, &["key", "create"]);
        assert_eq!(p.one("name"), Some("k"));
        assert_eq!(p.many("ops").unwrap(), &["sign", "verify"]);
        assert_eq!(p.many("tags").unwrap(), &["a=1"]);
        assert_eq!(p.one("pin"), Some("1234"));
    }

    #[test]
    fn unknown_verbs_and_options_are_usage_errors() {
        for s in [
            "key frobnicate",
            "frobnicate",
            "key list --bogus",
            "key list extra",
        ] {
            assert!(matches!(parse(&args(s)), Err(CliError::Usage(_))), "{s}");
        }
    }

    #[test]
    fn a_group_lists_its_verbs() {
        for s in [
            "key rotation-policy",
            "key rotation-policy --help",
            "key rotation-policy -h",
        ] {
            let Ok(Command::Print(text)) = parse(&args(s)) else {
                panic!("{s}: expected the group's help");
            };
            assert!(text.contains("key rotation-policy show"), "{text}");
            assert!(text.contains("key rotation-policy update"), "{text}");
            assert!(
                !text.contains("key create"),
                "only the group's verbs: {text}"
            );
        }
        let Ok(Command::Print(key)) = parse(&args("key --help")) else {
            panic!("key --help");
        };
        assert!(key.contains("key create") && key.contains("key rotation-policy show"));
        assert!(!key.contains("token show"), "{key}");
        assert!(matches!(
            parse(&args("key rotation-policy frobnicate")),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            parse(&args("key rotation-policy --output table")),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn main_help_aligns_every_summary() {
        let Ok(Command::Print(text)) = parse(&args("--help")) else {
            panic!("--help");
        };
        let columns: Vec<usize> = all_verbs()
            .map(|v| {
                let line = text
                    .lines()
                    .find(|l| {
                        l.trim_start()
                            .starts_with(&format!("{} ", v.path.join(" ")))
                    })
                    .unwrap_or_else(|| panic!("{:?} missing", v.path));
                line.find(v.summary).expect("summary on its line")
            })
            .collect();
        assert!(
            columns.windows(2).all(|w| w[0] == w[1]),
            "{columns:?}\n{text}"
        );
    }

    #[test]
    fn every_verb_has_help() {
        for v in all_verbs() {
            let line = format!("{} --help", v.path.join(" "));
            assert!(
                matches!(parse(&args(&line)), Ok(Command::Print(_))),
                "{line}"
            );
        }
    }
}
