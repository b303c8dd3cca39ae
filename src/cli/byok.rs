//! The key import and download verbs: `key import` (a PEM private key, or a
//! Managed HSM BYOK blob opened with a key-exchange key) and `key download`
//! (the public key as SPKI PEM). Kept apart from the other verbs: the rules
//! live in `engine::lifecycle` and `engine::byok`, this file reads files and
//! options.

use super::args::{opt, Arity::*, Verb, NAME, VERSION};
use super::output::Pool;
use super::{boolean, date, ops, tags, write_new_file, CliError, Shown};
use crate::crypto::{spki, SecretBytes};
use crate::engine::attributes::now;
use crate::pool::byok::{self, Target};
use crate::pool::lifecycle::{self, ImportSpec, Material};
use crate::pool::{MasterKey, Store};

/// The verbs of this file (after the main table in `args.rs`).
pub const VERBS: &[Verb] = &[
    Verb {
        path: &["key", "import"],
        summary: "import a private key (PEM) or a BYOK blob as a key, or a new version of one",
        opts: &[
            NAME,
            opt("file", One, false, "FILE  a PEM private key (PKCS#8, or traditional RSA/EC)"),
            opt("jwk-file", One, false, "FILE  a private JWK: RSA (n e d p q dp dq qi), EC (crv x y d) or oct (k)"),
            opt("byok-file", One, false, "FILE  a Managed HSM BYOK blob made for a key-exchange key (key create --ops import)"),
            opt("kty", One, false, "RSA|EC|oct  what the BYOK blob holds (-HSM suffix accepted; default: told by the content)"),
            opt("ops", Many, false, "OP...  sign verify encrypt decrypt wrapKey unwrapKey (default: all the type allows)"),
            opt("tags", Many, false, "K=V...  at most 15 tags"),
            opt("enabled", One, false, "true|false  (default true)"),
            opt("not-before", One, false, "RFC3339  not usable before"),
            opt("expires", One, false, "RFC3339  not usable from"),
        ],
    },
    Verb {
        path: &["key", "download"],
        summary: "write a key's public key as SPKI PEM (RSA, EC and AKP keys)",
        opts: &[NAME, VERSION, opt("file", One, true, "FILE  the PEM file to create")],
    },
];

/// What one of these verbs will do, checked before the store is opened.
pub enum Request {
    /// `key import --file`.
    Pem(String, ImportSpec),
    /// `key import --jwk-file`.
    Jwk(String, ImportSpec),
    /// `key import --byok-file`.
    Byok(String, Option<Target>, ImportSpec),
    /// `key download`.
    Download(String),
}

/// Check the options of `key import` / `key download` (usage errors, exit 2);
/// None for other verbs.
pub fn usage(p: &super::args::Parsed) -> Result<Option<Request>, CliError> {
    match p.verb.path {
        ["key", "download"] => Ok(Some(Request::Download(p.required("file").to_string()))),
        ["key", "import"] => {
            let spec = ImportSpec {
                ops: p.many("ops").map(ops).transpose()?,
                tags: p.many("tags").map(tags).transpose()?.unwrap_or_default(),
                enabled: p.one("enabled").map(boolean).transpose()?,
                nbf: p.one("not-before").map(date).transpose()?,
                exp: p.one("expires").map(date).transpose()?,
            };
            if let Some(f) = p.one("jwk-file") {
                if p.one("file").is_some() || p.one("byok-file").is_some() || p.one("kty").is_some()
                {
                    return Err(CliError::Usage(
                        "--jwk-file takes no --file, --byok-file or --kty (the JWK tells its type)"
                            .into(),
                    ));
                }
                return Ok(Some(Request::Jwk(f.to_string(), spec)));
            }
            match (p.one("file"), p.one("byok-file")) {
                (Some(f), None) => {
                    if p.one("kty").is_some() {
                        return Err(CliError::Usage(
                            "--kty is for --byok-file (a PEM file tells its own key type)".into(),
                        ));
                    }
                    Ok(Some(Request::Pem(f.to_string(), spec)))
                }
                (None, Some(f)) => {
                    let target = p.one("kty").map(target).transpose()?;
                    Ok(Some(Request::Byok(f.to_string(), target, spec)))
                }
                _ => Err(CliError::Usage(
                    "give either --file (a PEM private key), --jwk-file (a JWK) or --byok-file (a BYOK blob)".into(),
                )),
            }
        }
        _ => Ok(None),
    }
}

fn target(kty: &str) -> Result<Target, CliError> {
    let k = kty.strip_suffix("-HSM").unwrap_or(kty);
    match k.to_ascii_lowercase().as_str() {
        "rsa" => Ok(Target::Rsa),
        "ec" => Ok(Target::Ec),
        "oct" => Ok(Target::Oct),
        _ => Err(CliError::Usage(format!(
            "unknown --kty '{kty}': use RSA, EC or oct"
        ))),
    }
}

/// Run `key import` / `key download` on an unlocked store.
pub(super) fn run(
    req: Request,
    name: &str,
    version: Option<&str>,
    store: &mut dyn Store,
    master: &MasterKey,
    pool: &Pool,
) -> Result<Shown, CliError> {
    let key = match req {
        Request::Download(file) => return download(store, pool, name, version, &file),
        Request::Pem(file, spec) => {
            let der = private_key_file(&file)?;
            lifecycle::import(store, master, name, &Material::Pkcs8(der), &spec, now())?
        }
        Request::Jwk(file, spec) => {
            let json = SecretBytes::new(
                std::fs::read(&file)
                    .map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))?,
            );
            let material = crate::pool::jwk::material(&json)
                .map_err(|why| CliError::Failed(format!("{file}: {why}")))?;
            lifecycle::import(store, master, name, &material, &spec, now())?
        }
        Request::Byok(file, target, spec) => {
            let json = std::fs::read(&file)
                .map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))?;
            byok::import_byok(store, master, name, &json, target, &spec, now())?
        }
    };
    let v = lifecycle::show(store, &key.name, Some(&key.version))?;
    Ok(Shown {
        json: pool.bundle(&v),
        table: pool.version_table(std::slice::from_ref(&v)),
    })
}

/// `key download`: the public key of one version as SPKI PEM.
fn download(
    store: &dyn Store,
    pool: &Pool,
    name: &str,
    version: Option<&str>,
    file: &str,
) -> Result<Shown, CliError> {
    let v = lifecycle::show(store, name, version)?;
    write_public(pool, &v, file)
}

/// Write the public key of `v` to `file` as SPKI PEM (`key download`).
pub(super) fn write_public(
    pool: &Pool,
    v: &lifecycle::KeyVersion,
    file: &str,
) -> Result<Shown, CliError> {
    let public = v
        .key
        .public
        .as_ref()
        .and_then(|p| p.to_public(v.key.kind).ok())
        .ok_or_else(|| {
            CliError::Failed(format!(
                "key '{}' has no public key to download (oct keys are symmetric)",
                v.key.name
            ))
        })?;
    let der = spki::spki_der(&public);
    let pem = pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, &der)
        .map_err(|e| CliError::Failed(format!("cannot encode the public key: {e}")))?;
    write_new_file(file, pem.as_bytes())?;
    let kid = pool.kid(&v.key);
    Ok(Shown {
        json: serde_json::json!({ "kid": kid, "file": file }),
        table: format!("wrote the public key of {kid} to {file}"),
    })
}

/// Read a private key file: PEM `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY`
/// (PKCS#1) or `EC PRIVATE KEY` (SEC1, RFC 5915), or PKCS#8 DER; always
/// returned as PKCS#8 DER.
pub(super) fn private_key_file(file: &str) -> Result<SecretBytes, CliError> {
    private_key_file_with(file, None)
}

/// [`private_key_file`]; with a password, an `ENCRYPTED PRIVATE KEY`
/// (PKCS#8 PBES2, as `openssl genpkey -aes-256-cbc` writes) is decrypted too.
pub(super) fn private_key_file_with(
    file: &str,
    password: Option<&str>,
) -> Result<SecretBytes, CliError> {
    let data = SecretBytes::new(
        std::fs::read(file).map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))?,
    );
    private_key(&data, password).map_err(|why| CliError::Failed(format!("{file}: {why}")))
}

/// See [`private_key_file_with`].
fn private_key(data: &[u8], password: Option<&str>) -> Result<SecretBytes, String> {
    if data.first() == Some(&0x30) {
        return Ok(SecretBytes::new(data.to_vec()));
    }
    let text = std::str::from_utf8(data).map_err(|_| "not a PEM or DER private key")?;
    // `openssl ecparam -genkey` writes an EC PARAMETERS block first: take the key's.
    let (label, pem) = pem_blocks(text)
        .find(|(label, _)| label.ends_with("PRIVATE KEY"))
        .ok_or("no PEM private key in the file")?;
    if let (Some(password), "ENCRYPTED PRIVATE KEY") = (password, label) {
        let (_, der) =
            pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|e| format!("bad PEM: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| format!("bad encrypted private key: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|_| "cannot decrypt the private key: wrong password?".to_string())?;
        return Ok(SecretBytes::new(plain.as_bytes().to_vec()));
    }
    if label == "ENCRYPTED PRIVATE KEY" || pem.contains("ENCRYPTED") {
        return Err("encrypted private keys are not read: decrypt it first \
                    (openssl pkey -in KEY -out PLAIN.pem)"
            .into());
    }
    let (_, der) = pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|e| format!("bad PEM: {e}"))?;
    let der = SecretBytes::new(der);
    match label {
        "PRIVATE KEY" => Ok(der),
        "RSA PRIVATE KEY" => Ok(pkcs8(RSA_ALG, &der)),
        "EC PRIVATE KEY" => {
            let curve = sec1_curve(&der).ok_or("the EC private key names no curve")?;
            let mut alg = EC_ALG.to_vec();
            alg.extend_from_slice(curve);
            Ok(pkcs8(&alg, &der))
        }
        other => Err(format!("unsupported PEM '{other}'")),
    }
}

/// The PEM blocks of a text: (label, the block from BEGIN to END inclusive).
pub(super) fn pem_blocks(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find("-----BEGIN ")?;
        let after = &rest[start + 11..];
        let label = &after[..after.find("-----")?];
        let end_marker = format!("-----END {label}-----");
        let end = rest[start..].find(&end_marker)? + start + end_marker.len();
        let block = &rest[start..end];
        rest = &rest[end..];
        Some((label, block))
    })
}

/// AlgorithmIdentifier content for rsaEncryption (OID 1.2.840.113549.1.1.1, NULL).
const RSA_ALG: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// id-ecPublicKey (1.2.840.10045.2.1); the curve OID follows.
const EC_ALG: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// PKCS#8 `PrivateKeyInfo` { version 0, algorithm, privateKey } (RFC 5208).
/// Every buffer that holds the key is sized up front (no reallocation leaves
/// a copy behind) and wiped when dropped.
fn pkcs8(alg: &[u8], key: &[u8]) -> SecretBytes {
    let mut body = SecretBytes::new(Vec::with_capacity(key.len() + alg.len() + 16));
    body.extend_from_slice(&[0x02, 0x01, 0x00]);
    body.extend_from_slice(&tlv(0x30, alg));
    body.extend_from_slice(&SecretBytes::new(tlv(0x04, key)));
    SecretBytes::new(tlv(0x30, &body))
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// The curve OID (full DER) in `parameters [0]` of a SEC1 `ECPrivateKey`.
fn sec1_curve(der: &[u8]) -> Option<&[u8]> {
    let (seq, _) = der_split(der, 0x30)?;
    let (_version, rest) = der_split(seq, 0x02)?;
    let (_key, rest) = der_split(rest, 0x04)?;
    let (params, _) = der_split(rest, 0xa0)?;
    let (_, after) = der_split(params, 0x06)?;
    after.is_empty().then_some(params)
}

/// One DER element of tag `tag` off the front: (content, rest).
pub(super) fn der_split(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        (
            rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize),
            &rest[n..],
        )
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_skip_ec_parameters() {
        let text = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n\
                    -----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n";
        let labels: Vec<&str> = pem_blocks(text).map(|(l, _)| l).collect();
        assert_eq!(labels, ["EC PARAMETERS", "EC PRIVATE KEY"]);
    }

    #[test]
    fn encrypted_and_foreign_pem_are_refused() {
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(private_key(enc.as_bytes(), None)
            .unwrap_err()
            .contains("encrypted"));
        let cert = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        assert!(private_key(cert.as_bytes(), None)
            .unwrap_err()
            .contains("no PEM private key"));
    }

    #[test]
    fn sec1_curve_is_read_from_parameters() {
        // ECPrivateKey { 1, OCTET STRING(1 byte), [0] OID P-256 }
        let p256 = crate::crypto::Curve::P256.oid_der();
        let mut body = vec![0x02, 0x01, 0x01, 0x04, 0x01, 0x07];
        body.extend(tlv(0xa0, p256));
        assert_eq!(sec1_curve(&tlv(0x30, &body)), Some(p256));
        assert_eq!(sec1_curve(&tlv(0x30, &body[..6])), None);
    }
}
