//! `key sign | verify | encrypt | decrypt | wrap | unwrap | random`: az's
//! data-plane verbs, with the REST API's algorithm names and results
//! (`{"kid": …, "value": "<base64url>"}`). The work is `pool::dataplane`'s;
//! here the arguments are read and the result shaped.

use super::output::{b64url, from_b64url};
use super::{CliError, Shown};
use crate::engine::attributes::now;
use crate::pool::dataplane::{self, CipherInput, CipherOp, SignRequest};
use crate::pool::{MasterKey, Store};
use serde_json::{json, Map, Value};

use super::args::Parsed;

/// Whether `p` is one of these verbs.
pub(super) fn is_ours(p: &Parsed) -> bool {
    matches!(
        p.verb.path,
        [
            "key",
            "sign" | "verify" | "encrypt" | "decrypt" | "wrap" | "unwrap" | "random"
        ]
    )
}

/// Check the arguments before any PIN is asked: base64url values, the count.
pub(super) fn usage(p: &Parsed) -> Result<(), CliError> {
    if !is_ours(p) {
        return Ok(());
    }
    for o in [
        "digest",
        "signature",
        "value",
        "mu",
        "context",
        "iv",
        "aad",
        "tag",
    ] {
        if let Some(v) = p.one(o) {
            bytes(o, v)?;
        }
    }
    if p.verb.path == ["key", "random"] {
        count(p)?;
    }
    Ok(())
}

fn bytes(opt: &str, v: &str) -> Result<Vec<u8>, CliError> {
    from_b64url(v).ok_or_else(|| CliError::Usage(format!("--{opt} is not base64url")))
}

fn optional(p: &Parsed, opt: &str) -> Result<Option<Vec<u8>>, CliError> {
    p.one(opt).map(|v| bytes(opt, v)).transpose()
}

/// What `key sign`/`verify` sign: `--digest` for RS/PS/ES; for ML-DSA
/// `--value` (the message) with its optional `--context`, or `--mu` (an
/// external μ, which carries the context). Returns the bytes, the context
/// and whether they are μ.
fn sign_input(p: &Parsed, alg: &str) -> Result<(Vec<u8>, Vec<u8>, bool), CliError> {
    let ml_dsa = alg.starts_with("ML-DSA-");
    let mu = p.one("mu").is_some();
    if mu && !ml_dsa {
        return Err(CliError::Usage(format!("{alg} takes --digest, not --mu")));
    }
    if mu {
        if ["digest", "value", "context"]
            .iter()
            .any(|o| p.one(o).is_some())
        {
            return Err(CliError::Usage(format!(
                "{alg} with --mu takes no --value, --digest or --context (mu carries the context)"
            )));
        }
        return Ok((bytes("mu", p.required("mu"))?, Vec::new(), true));
    }
    let (want, other) = if ml_dsa {
        ("value", "digest")
    } else {
        ("digest", "value")
    };
    if p.one(other).is_some() || (!ml_dsa && p.one("context").is_some()) {
        return Err(CliError::Usage(format!(
            "{alg} takes --{want}, not --{other} or --context"
        )));
    }
    let v = p
        .one(want)
        .ok_or_else(|| CliError::Usage(format!("{alg} needs --{want}")))?;
    Ok((
        bytes(want, v)?,
        optional(p, "context")?.unwrap_or_default(),
        false,
    ))
}

fn count(p: &Parsed) -> Result<usize, CliError> {
    let c = p.required("count");
    c.parse()
        .map_err(|_| CliError::Usage(format!("--count '{c}' is not a number")))
}

/// Run the verb on a store the pool lends.
pub(super) fn run(p: &Parsed, s: &dyn Store, master: &MasterKey) -> Result<Shown, CliError> {
    let name = p.one("name").unwrap_or_default();
    let version = p.one("version");
    let alg = p.one("algorithm").unwrap_or_default();
    let t = now();
    let (kid, mut json) = match p.verb.path {
        ["key", "random"] => {
            let value = b64url(&dataplane::random(count(p)?)?);
            return Ok(Shown {
                table: value.clone(),
                json: json!({ "value": value }),
            });
        }
        ["key", "sign"] => {
            let (data, context, external_mu) = sign_input(p, alg)?;
            let req = SignRequest {
                alg,
                data: &data,
                context: &context,
                external_mu,
            };
            let (kid, sig) = dataplane::sign(s, master, name, version, &req, t)?;
            (kid, Map::from_iter([("value".into(), json!(b64url(&sig)))]))
        }
        ["key", "verify"] => {
            let (data, context, external_mu) = sign_input(p, alg)?;
            let req = SignRequest {
                alg,
                data: &data,
                context: &context,
                external_mu,
            };
            let sig = bytes("signature", p.required("signature"))?;
            let (kid, ok) = dataplane::verify(s, name, version, &req, &sig, t)?;
            (kid, Map::from_iter([("value".into(), json!(ok))]))
        }
        [_, verb] => {
            let op = match *verb {
                "encrypt" => CipherOp::Encrypt,
                "decrypt" => CipherOp::Decrypt,
                "wrap" => CipherOp::Wrap,
                _ => CipherOp::Unwrap,
            };
            let input = CipherInput {
                value: bytes("value", p.required("value"))?,
                iv: optional(p, "iv")?,
                aad: optional(p, "aad")?,
                tag: optional(p, "tag")?,
            };
            let (kid, out) = dataplane::cipher(s, master, name, version, op, alg, &input, t)?;
            let mut m = Map::from_iter([("value".into(), json!(b64url(&out.value)))]);
            for (k, v) in [("iv", out.iv), ("tag", out.tag), ("aad", out.aad)] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(b64url(&v)));
                }
            }
            (kid, m)
        }
        _ => return Err(CliError::Usage("unknown command".into())),
    };
    let table = json
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.as_str().map_or(v.to_string(), str::to_string)))
        .collect::<Vec<_>>();
    json.insert("kid".into(), json!(kid));
    Ok(Shown {
        table: format!("kid: {kid}\n{}", table.join("\n")),
        json: Value::Object(json),
    })
}
