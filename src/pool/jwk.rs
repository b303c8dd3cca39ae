//! Key material from a private JWK (RFC 7517/7518 §6), as the Managed HSM's
//! "import a key in JWK format" takes it: RSA with `n e d p q dp dq qi`, EC
//! with `crv x y d`, oct with `k`. The material is then imported and checked
//! like a PEM key (`lifecycle::import`, `inspect`).

use super::lifecycle::{inspect, Material, Outcome, Refusal};
use crate::crypto::{self, Curve, PublicKey, RsaParts, SecretBytes};
use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::Value;

fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal::Invalid(msg.into())
}

/// A member of the JWK, base64url-decoded; an absent member is refused.
fn member(jwk: &Value, name: &str) -> Outcome<SecretBytes> {
    let s = jwk[name]
        .as_str()
        .ok_or_else(|| invalid(format!("the JWK has no '{name}'")))?;
    Base64UrlUnpadded::decode_vec(s.trim_end_matches('='))
        .map(SecretBytes::new)
        .map_err(|_| invalid(format!("the JWK's '{name}' is not base64url")))
}

/// The key material of a private JWK; its public members must be the
/// private key's (a JWK whose `x`/`y` or `n`/`e` belong to another key is refused).
pub fn material(json: &[u8]) -> Outcome<Material> {
    let jwk: Value =
        serde_json::from_slice(json).map_err(|e| invalid(format!("not a JSON JWK: {e}")))?;
    let kty = jwk["kty"]
        .as_str()
        .ok_or_else(|| invalid("the JWK has no 'kty'"))?;
    let p = crypto::provider();
    let bad = |_: ()| invalid("the JWK's private key is not consistent");
    let (material, public) = match kty.strip_suffix("-HSM").unwrap_or(kty) {
        "oct" => return Ok(Material::Aes(member(&jwk, "k")?)),
        "RSA" => {
            let crt = [
                member(&jwk, "dp")?,
                member(&jwk, "dq")?,
                member(&jwk, "qi")?,
            ];
            let parts = RsaParts {
                n: member(&jwk, "n")?.to_vec(),
                e: member(&jwk, "e")?.to_vec(),
                d: member(&jwk, "d")?,
                p: Some(member(&jwk, "p")?),
                q: Some(member(&jwk, "q")?),
            };
            let der = p.import_rsa(&parts).map_err(|_| bad(()))?;
            // The provider derives dp, dq and qi from p and q: the JWK's must be those.
            let derived = crypto::spki::rsa_crt_values(&der).ok_or_else(|| bad(()))?;
            if crt
                .iter()
                .zip(&derived)
                .any(|(given, d)| strip(given) != d.as_slice())
            {
                return Err(invalid("the JWK's dp, dq or qi do not match its p and q"));
            }
            let public = PublicKey::Rsa {
                n: strip(&parts.n).to_vec(),
                e: strip(&parts.e).to_vec(),
            };
            (Material::Pkcs8(der), public)
        }
        "EC" => {
            let crv = jwk["crv"]
                .as_str()
                .ok_or_else(|| invalid("the JWK has no 'crv'"))?;
            let curve = Curve::ALL
                .into_iter()
                .find(|c| c.jwk_name() == crv)
                .ok_or_else(|| {
                    invalid(format!(
                        "unsupported curve '{crv}': use P-256, P-256K, P-384 or P-521"
                    ))
                })?;
            let (x, y, d) = (member(&jwk, "x")?, member(&jwk, "y")?, member(&jwk, "d")?);
            let len = curve.field_len();
            if x.len() != len || y.len() != len || d.len() != len {
                return Err(invalid(format!(
                    "the JWK's x, y and d of {crv} are {len} bytes each"
                )));
            }
            let der = p.import_ec(curve, &d).map_err(|_| bad(()))?;
            let point = [&[4u8][..], &x, &y].concat();
            (Material::Pkcs8(der), PublicKey::Ec { curve, point })
        }
        other => {
            return Err(invalid(format!(
                "unknown JWK kty '{other}': use RSA, EC or oct"
            )))
        }
    };
    let (_, derived) = inspect(&material)?;
    let same = match (&derived, &public) {
        (Some(PublicKey::Rsa { n, e }), PublicKey::Rsa { n: n2, e: e2 }) => {
            strip(n) == strip(n2) && strip(e) == strip(e2)
        }
        (Some(d), p) => d == p,
        _ => false,
    };
    if !same {
        return Err(invalid(
            "the JWK's public members are not its private key's",
        ));
    }
    Ok(material)
}

fn strip(b: &[u8]) -> &[u8] {
    &b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..]
}
