//! The `security-domain` verbs (shaped after `az keyvault security-domain`):
//! `download`, `init-recovery`, `restore-blob` (offline: no pool, no PIN) and
//! `upload`; and the whole-pool `backup start` / `restore start` sealed under
//! the security domain. The rules live in [`crate::pool::security_domain`] and
//! [`crate::pool::full_backup`]; this file reads and writes files and options.

use super::args::{opt, Arity::*, Parsed, Verb};
use super::byok::{der_split, pem_blocks, private_key_file, private_key_file_with};
use super::{audit, pick_token, user_pin, write_new_file, CliError, Shown};
use crate::crypto::{spki, PublicKey, SecretBytes};
use crate::engine::attributes::now;
use crate::pool::full_backup;
use crate::pool::security_domain::{self as sd, Adoption, SecurityDomain};
use crate::pool::{PinUser, Pool};

/// The verbs of this file (after the main table in `args.rs`).
pub const VERBS: &[Verb] = &[
    Verb {
        path: &["security-domain", "download"],
        summary: "split the pool's security domain into shares encrypted to 3-10 RSA keys, a quorum of which recovers it; a provisioned pool (init --require-security-domain) becomes active (SO PIN)",
        opts: &[
            opt("sd-wrapping-keys", Many, true, "PEM...  3-10 RSA public keys (PUBLIC KEY or CERTIFICATE PEM, 2048 bits or more)"),
            opt("sd-quorum", One, true, "M  how many of the keys recover the domain (2 to the number of keys)"),
            opt("security-domain-file", One, true, "FILE  the security-domain file to create"),
            opt("so-pin", One, false, "PIN  Security Officer PIN (else $SOFTMHSM_SO_PIN, else a prompt)"),
        ],
    },
    Verb {
        path: &["security-domain", "init-recovery"],
        summary: "on a new, empty pool: make an exchange key pair and write its public key (SO PIN)",
        opts: &[
            opt("sd-exchange-key", One, true, "FILE  the PEM public key file to create"),
            opt("so-pin", One, false, "PIN  Security Officer PIN (else $SOFTMHSM_SO_PIN, else a prompt)"),
        ],
    },
    Verb {
        path: &["security-domain", "restore-blob"],
        summary: "offline, no pool: recover the domain with a quorum of private keys and encrypt it to an exchange key",
        opts: &[
            opt("sd-file", One, true, "FILE  the security-domain file"),
            opt("sd-exchange-key", One, true, "FILE  the exchange public key written by init-recovery"),
            opt("sd-wrapping-keys", Many, true, "PEM...  private keys (PKCS#8 or PKCS#1 PEM) of at least a quorum of the wrapping keys"),
            opt("passwords", Many, false, "PW...  one per private key, in order, for ENCRYPTED PRIVATE KEY files (\"\" for an unencrypted one)"),
            opt("sd-file-restore-blob", One, true, "FILE  the restore blob to create"),
        ],
    },
    Verb {
        path: &["security-domain", "upload"],
        summary: "the new, empty pool adopts a security domain: from a restore blob, or from the file and a quorum of private keys (SO PIN; sets the user PIN)",
        opts: &[
            opt("sd-file", One, true, "FILE  the restore blob written by restore-blob (with --restore-blob), else the security-domain file"),
            opt("restore-blob", Flag, false, "the file is a restore blob"),
            opt("sd-exchange-key", One, false, "FILE  without --restore-blob: this pool's exchange public key (init-recovery)"),
            opt("sd-wrapping-keys", Many, false, "PEM...  without --restore-blob: private keys of at least a quorum of the wrapping keys"),
            opt("so-pin", One, false, "PIN  Security Officer PIN (else $SOFTMHSM_SO_PIN, else a prompt)"),
        ],
    },
    Verb {
        path: &["backup", "start"],
        summary: "write the whole pool (every key and version, deleted keys, policies, certificates) to a file sealed under the security domain (SO PIN)",
        opts: &[
            opt("file", One, true, "FILE  the backup file to create"),
            opt("so-pin", One, false, "PIN  Security Officer PIN (else $SOFTMHSM_SO_PIN, else a prompt)"),
        ],
    },
    Verb {
        path: &["restore", "start"],
        summary: "restore a whole-pool backup (or one key of it) into a pool holding the same security domain (SO PIN)",
        opts: &[
            opt("file", One, true, "FILE  a file written by backup start"),
            opt("key-name", One, false, "NAME  restore only this key (selective key restore)"),
            opt("so-pin", One, false, "PIN  Security Officer PIN (else $SOFTMHSM_SO_PIN, else a prompt)"),
        ],
    },
];

/// Whether `p` is one of these verbs.
pub fn is_ours(p: &Parsed) -> bool {
    VERBS.iter().any(|v| v.path == p.verb.path)
}

/// Run one of these verbs.
pub fn run(p: &Parsed) -> Result<Shown, CliError> {
    match p.verb.path {
        ["security-domain", "restore-blob"] => restore_blob(p),
        ["security-domain", "download"] => {
            let quorum = p.required("sd-quorum").parse::<usize>().map_err(|_| {
                CliError::Usage(format!("bad --sd-quorum '{}'", p.required("sd-quorum")))
            })?;
            let files = p.many("sd-wrapping-keys").unwrap_or_default();
            let keys = files
                .iter()
                .map(|f| public_key_file(f))
                .collect::<Result<Vec<_>, _>>()?;
            let fps = sd::check_wrapping_keys(&keys, quorum)?;
            let out = p.required("security-domain-file");
            let (service, master) = so_login(p)?;
            let domain = service.read(|s| SecurityDomain::of_pool(s, &master))?;
            let json = sd::download(&domain, &keys, quorum, now())?;
            write_new_file(out, &json)?;
            // Only once the file is written: a provisioned pool is active for good.
            service.activate()?;
            Ok(Shown {
                json: serde_json::json!({
                    "file": out,
                    "poolId": domain.label,
                    "quorum": quorum,
                    "wrappingKeys": fps,
                }),
                table: format!(
                    "wrote the security domain of '{}' to {out}: {quorum} of {} keys recover it",
                    domain.label,
                    keys.len()
                ),
            })
        }
        ["security-domain", "init-recovery"] => {
            let out = p.required("sd-exchange-key");
            let (service, master) = so_login(p)?;
            let public = service.write(|s| sd::init_recovery(s, &master))?;
            let pem = pem_rfc7468::encode_string(
                "PUBLIC KEY",
                pem_rfc7468::LineEnding::LF,
                &spki::spki_der(&public),
            )
            .map_err(|e| CliError::Failed(format!("cannot encode the public key: {e}")))?;
            write_new_file(out, pem.as_bytes())?;
            let fp = sd::fingerprint(&public);
            Ok(Shown {
                json: serde_json::json!({ "file": out, "exchangeKeySha256": fp }),
                table: format!("wrote the exchange public key to {out} (SHA-256 {fp})"),
            })
        }
        ["security-domain", "upload"] => {
            let file = p.required("sd-file");
            let direct = match (p.flag("restore-blob"), p.one("sd-exchange-key"), p.many("sd-wrapping-keys")) {
                (true, None, None) => None,
                (false, Some(ex), Some(keys)) => Some((ex, keys)),
                _ => {
                    return Err(CliError::Usage(
                        "give --restore-blob (a blob made by restore-blob), or --sd-exchange-key and --sd-wrapping-keys (the security-domain file and private keys)".into(),
                    ))
                }
            };
            let blob = match direct {
                None => read(file)?,
                // restore-blob and upload in one step: the private keys meet the pool's machine.
                Some((ex, keys)) => {
                    let keys = keys
                        .iter()
                        .map(|f| private_key_file(f))
                        .collect::<Result<Vec<SecretBytes>, _>>()?;
                    sd::restore_blob(&read(file)?, &keys, &public_key_file(ex)?)?
                }
            };
            let so_pin = super::so_pin(p)?;
            let user_pin = user_pin(p)?;
            crate::engine::rules::check_pin_len(user_pin.as_bytes())?;
            let token = pick_token(p)?;
            let service = Pool::open_or_fail(&token)?;
            let master = audit::login(&token, crate::pool::access::Identity::So, || {
                service.unlock(PinUser::So, so_pin.as_bytes())
            })?;
            let how = Adoption {
                so_pin: so_pin.as_bytes(),
                user_pin: user_pin.as_bytes(),
                kdf_iterations: token.kdf_iterations,
            };
            let domain = service.write(|s| sd::upload(s, &master, &blob, &how))?;
            Ok(Shown {
                json: serde_json::json!({ "poolId": domain.label, "file": file }),
                table: format!(
                    "this pool now holds the security domain of '{}' (its label); the user PIN is set",
                    domain.label
                ),
            })
        }
        ["backup", "start"] => {
            let file = p.required("file");
            let (service, master) = so_login(p)?;
            service.check_active()?;
            let (blob, summary) = service.read(|s| full_backup::backup(s, &master, now()))?;
            write_new_file(file, &blob)?;
            Ok(shown_summary("backed up", file, &summary))
        }
        ["restore", "start"] => {
            let file = p.required("file");
            let blob = read(file)?;
            let (service, master) = so_login(p)?;
            service.check_active()?;
            let only = p.one("key-name");
            let summary = service.write(|s| full_backup::restore(s, &master, &blob, only))?;
            Ok(shown_summary("restored", file, &summary))
        }
        _ => Err(CliError::Usage("unknown command".into())),
    }
}

fn shown_summary(what: &str, file: &str, s: &full_backup::Summary) -> Shown {
    Shown {
        json: serde_json::json!({
            "file": file,
            "keys": s.keys,
            "versions": s.versions,
            "deletedKeys": s.deleted,
            "objects": s.objects,
            "principals": s.principals,
            "roleDefinitions": s.roles,
            "roleAssignments": s.assignments,
        }),
        table: format!(
            "{what} {} key(s), {} deleted key(s), {} version(s) in all, {} other object(s), {} principal(s), {} custom role(s), {} role assignment(s): {file}",
            s.keys, s.deleted, s.versions, s.objects, s.principals, s.roles, s.assignments
        ),
    }
}

/// `restore-blob`: offline, no pool and no PIN.
fn restore_blob(p: &Parsed) -> Result<Shown, CliError> {
    let files = p.many("sd-wrapping-keys").unwrap_or_default();
    let passwords = match p.many("passwords") {
        Some(pw) if pw.len() != files.len() => {
            return Err(CliError::Usage(format!(
                "--passwords gives {} password(s) for {} private key(s): one each, in order (\"\" for none)",
                pw.len(),
                files.len()
            )))
        }
        Some(pw) => pw.iter().map(|p| Some(p.as_str()).filter(|p| !p.is_empty())).collect(),
        None => vec![None; files.len()],
    };
    let file = read(p.required("sd-file"))?;
    let exchange = public_key_file(p.required("sd-exchange-key"))?;
    let keys = files
        .iter()
        .zip(passwords)
        .map(|(f, pw)| private_key_file_with(f, pw))
        .collect::<Result<Vec<SecretBytes>, _>>()?;
    let out = p.required("sd-file-restore-blob");
    let blob = sd::restore_blob(&file, &keys, &exchange)?;
    write_new_file(out, &blob)?;
    Ok(Shown {
        json: serde_json::json!({ "file": out, "exchangeKeySha256": sd::fingerprint(&exchange) }),
        table: format!("wrote the restore blob to {out}"),
    })
}

/// Open the pool and check the SO PIN (audited as a login).
fn so_login(p: &Parsed) -> Result<(Pool, crate::pool::MasterKey), CliError> {
    let pin = super::so_pin(p)?;
    let token = pick_token(p)?;
    if !super::store_exists(&token) {
        return Err(CliError::Failed(format!(
            "no token at {} (softmhsm init makes one)",
            token.store_path().display()
        )));
    }
    let service = Pool::open_or_fail(&token)?;
    let master = super::login(&token, &service, PinUser::So, &pin)?;
    Ok((service, master))
}

fn read(file: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(file).map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))
}

/// An RSA public key from a PEM file: `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY`
/// (PKCS#1) or `CERTIFICATE` (X.509, its subject public key).
fn public_key_file(file: &str) -> Result<PublicKey, CliError> {
    let text = String::from_utf8(read(file)?)
        .map_err(|_| CliError::Failed(format!("{file}: not a PEM file")))?;
    let bad = |why: &str| CliError::Failed(format!("{file}: {why}"));
    // A certificate chain's first certificate is the key's.
    let (_, block) = pem_blocks(&text)
        .next()
        .ok_or_else(|| bad("no PEM public key or certificate"))?;
    let (label, der) =
        pem_rfc7468::decode_vec(block.as_bytes()).map_err(|e| bad(&format!("bad PEM: {e}")))?;
    let key = match label {
        "PUBLIC KEY" => spki_rsa(&der),
        "RSA PUBLIC KEY" => pkcs1_rsa(&der),
        "CERTIFICATE" => cert_spki(&der).and_then(spki_rsa),
        _ => None,
    };
    key.ok_or_else(|| {
        bad(&format!(
            "not an RSA public key or certificate (PEM '{label}')"
        ))
    })
}

/// The RSA key of a DER `SubjectPublicKeyInfo` (the whole element).
fn spki_rsa(der: &[u8]) -> Option<PublicKey> {
    let (seq, _) = der_split(der, 0x30)?;
    let (alg, rest) = der_split(seq, 0x30)?;
    let (oid, _) = der_split(alg, 0x06)?;
    if oid != [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01] {
        return None;
    }
    let (bits, _) = der_split(rest, 0x03)?;
    let (&0, pkcs1) = bits.split_first()? else {
        return None;
    };
    pkcs1_rsa(pkcs1)
}

/// The key of a DER PKCS#1 `RSAPublicKey`.
fn pkcs1_rsa(der: &[u8]) -> Option<PublicKey> {
    let (seq, _) = der_split(der, 0x30)?;
    let (n, rest) = der_split(seq, 0x02)?;
    let (e, _) = der_split(rest, 0x02)?;
    let strip = |b: &[u8]| b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..].to_vec();
    Some(PublicKey::Rsa {
        n: strip(n),
        e: strip(e),
    })
}

/// The `subjectPublicKeyInfo` element (whole TLV) of a DER X.509 certificate.
fn cert_spki(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = der_split(der, 0x30)?;
    let (tbs, _) = der_split(cert, 0x30)?;
    // [0] version is optional (absent in v1 certificates).
    let rest = der_split(tbs, 0xa0).map_or(tbs, |(_, r)| r);
    let (_serial, rest) = der_split(rest, 0x02)?;
    let (_sig, rest) = der_split(rest, 0x30)?;
    let (_issuer, rest) = der_split(rest, 0x30)?;
    let (_validity, rest) = der_split(rest, 0x30)?;
    let (_subject, rest) = der_split(rest, 0x30)?;
    let (_, after) = der_split(rest, 0x30)?;
    Some(&rest[..rest.len() - after.len()])
}
