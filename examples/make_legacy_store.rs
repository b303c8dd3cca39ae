//! Makes the legacy-store fixture that `tests/legacy_store.rs` opens: a token
//! store written by this build, so that later builds (new schema versions,
//! restructured code) can prove they still open it and every key still works.
//!
//! ```text
//! cargo build && cargo run --example make_legacy_store -- tests/fixtures/store-v3
//! ```
//!
//! Everything goes through the interfaces a user has — the C ABI (the
//! `cryptoki` crate on `libsoftmhsm.so`) and the `softmhsm` CLI — never the
//! store's internals. It builds the token in a scratch directory, checkpoints
//! the SQLite WAL into the main file, and copies three files to the output
//! directory (overwriting them): `softmhsm.db`, `audit-softmhsm.jsonl` and
//! `manifest.json`, which records for every key version its `CKA_ID`, its
//! public key (SPKI DER, hex) or, for AES, ciphertexts of a fixed plaintext,
//! so a later build can check signatures and decryptions independently.
//!
//! The token: label `legacy`, SO PIN `legacy-so-pin`, user PIN `legacy-pin`,
//! PBKDF2 cost 1000 (`SOFTMHSM_KDF_ITERATIONS`), retention 90 days. Keys:
//! `p11-*` by `C_GenerateKeyPair`/`C_GenerateKey` with a label and an explicit
//! `CKA_ID` (one with a label outside the name rule, so it gets a generated
//! name); `cli-*` by `softmhsm key create`; `rotated` (rotated twice, then given
//! a rotation policy); `deleted` (soft-deleted last). The CLI binary is
//! `target/<profile>/softmhsm` (`cargo build` puts it there) unless
//! `$SOFTMHSM_CLI` names another; the module is the one built with this
//! example unless `$SOFTMHSM_MODULE` names another.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::{json, Value};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

type Res<T> = Result<T, Box<dyn Error>>;

const LABEL: &str = "legacy";
const SO_PIN: &str = "legacy-so-pin";
const USER_PIN: &str = "legacy-pin";
const KDF_ITERATIONS: &str = "1000";
/// What every AES key encrypts, under [`CBC_IV`] (CKM_AES_CBC_PAD) and
/// [`GCM_IV`] + [`GCM_AAD`] (CKM_AES_GCM, 128-bit tag).
const PLAINTEXT: &[u8] = b"softmhsm legacy store fixture: this plaintext must come back";
const CBC_IV: [u8; 16] = *b"legacy-cbc-iv-16";
const GCM_IV: [u8; 12] = *b"legacy-gcm12";
const GCM_AAD: &[u8] = b"legacy-aad";
/// A policy that never comes due on the fixture's keys: its Rotate trigger
/// counts from an expiry they do not have (a `timeAfterCreate` Rotate would
/// make every login rotate the key once the fixture is old enough).
const POLICY: &str = r#"{"lifetimeActions":[{"trigger":{"timeBeforeExpiry":"P30D"},"action":{"type":"Rotate"}},{"trigger":{"timeAfterCreate":"P90D"},"action":{"type":"Notify"}}],"attributes":{"expiryTime":"P1Y"}}"#;

const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
const CKA_SOFTMHSM_NAME: u64 = 0x8000_0000 | 0x534D_0000 | 0x01;
const CKA_SOFTMHSM_VERSION: u64 = 0x8000_0000 | 0x534D_0000 | 0x02;

/// How a key was made and what it is.
#[derive(Clone, Copy)]
enum Spec {
    /// RSA 2048.
    Rsa,
    /// EC on a curve: (Managed HSM curve name, CKA_EC_PARAMS).
    Ec(&'static str, &'static [u8]),
    /// AES-256.
    Aes,
}

impl Spec {
    fn kty(self) -> &'static str {
        match self {
            Spec::Rsa => "RSA",
            Spec::Ec(..) => "EC",
            Spec::Aes => "oct",
        }
    }

    fn curve(self) -> Option<&'static str> {
        match self {
            Spec::Ec(c, _) => Some(c),
            _ => None,
        }
    }
}

const EVERY_TYPE: [(&str, Spec); 6] = [
    ("rsa", Spec::Rsa),
    ("p256", Spec::Ec("P-256", OID_P256)),
    ("p256k", Spec::Ec("P-256K", OID_SECP256K1)),
    ("p384", Spec::Ec("P-384", OID_P384)),
    ("p521", Spec::Ec("P-521", OID_P521)),
    ("aes", Spec::Aes),
];

/// A C_GenerateKeyPair key whose label breaks the name rule (space, `#`).
const ODD_LABEL: &str = "TLS key #1";

fn main() -> Res<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: make_legacy_store <output dir>")?,
    );
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("token");
    let cli = Cli::new(&dir)?;

    // 1. The CLI: the token (and its attestation key), keys of every type, a
    // rotated key with a rotation policy, the key to soft-delete later.
    cli.run(&[
        "init", "--label", LABEL, "--so-pin", SO_PIN, "--pin", USER_PIN,
    ])?;
    let mut keys = Vec::new();
    for (suffix, spec) in EVERY_TYPE {
        let name = format!("cli-{suffix}");
        let mut args = vec!["key", "create", "--name", &name, "--kty", spec.kty()];
        if let Some(c) = spec.curve() {
            args.extend(["--curve", c]);
        }
        if suffix == "rsa" {
            args.extend(["--tags", "env=prod", "owner=legacy"]);
        }
        cli.run(&args)?;
        keys.push((name, "softmhsm key create", spec));
    }
    cli.run(&[
        "key", "create", "--name", "rotated", "--kty", "EC", "--curve", "P-256",
    ])?;
    cli.run(&["key", "rotate", "--name", "rotated"])?;
    cli.run(&["key", "rotate", "--name", "rotated"])?;
    cli.run(&[
        "key",
        "rotation-policy",
        "update",
        "--name",
        "rotated",
        "--value",
        POLICY,
    ])?;
    keys.push((
        "rotated".into(),
        "softmhsm key create, then key rotate twice",
        Spec::Ec("P-256", OID_P256),
    ));
    cli.run(&[
        "key", "create", "--name", "deleted", "--kty", "EC", "--curve", "P-384",
    ])?;
    keys.push((
        "deleted".into(),
        "softmhsm key create, then key delete",
        Spec::Ec("P-384", OID_P384),
    ));

    // 2. The C ABI: keys of every type with a label and an explicit CKA_ID;
    // then every version's public key or ciphertexts.
    let manifest_keys = {
        let p11 = Pkcs11::new(module_path()?)?;
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
        let slot = *p11
            .get_slots_with_token()?
            .first()
            .ok_or("no slot with a token")?;
        let s = p11.open_rw_session(slot)?;
        s.login(UserType::User, Some(&AuthPin::from(USER_PIN)))?;
        let mut id = 0u8;
        for (suffix, spec) in EVERY_TYPE {
            id += 1;
            let label = format!("p11-{suffix}");
            generate(&s, spec, &label, id)?;
            keys.push((label, "C_GenerateKey(Pair) with CKA_LABEL and CKA_ID", spec));
        }
        id += 1;
        generate(&s, Spec::Ec("P-256", OID_P256), ODD_LABEL, id)?;
        keys.push((
            ODD_LABEL.into(),
            "C_GenerateKeyPair with a label outside the name rule",
            Spec::Ec("P-256", OID_P256),
        ));
        let mut out = Vec::new();
        for (label, made_by, spec) in &keys {
            let (name, versions) = cli.versions_of(&s, label)?;
            let mut vs = Vec::new();
            for v in versions {
                vs.push(describe_version(&s, *spec, &v)?);
            }
            let size = match spec {
                Spec::Rsa => Some(2048),
                Spec::Aes => Some(256),
                Spec::Ec(..) => None,
            };
            out.push(json!({
                "label": label,
                "name": name,
                "made_by": made_by,
                "kty": spec.kty(),
                "size": size,
                "curve": spec.curve(),
                "versions": vs,
            }));
        }
        s.logout()?;
        drop(s);
        p11.finalize()?;
        out
    };

    // 3. The CLI again: soft-delete, and what the token says about itself.
    cli.run(&["key", "delete", "--name", "deleted"])?;
    let policy = cli.json(&["key", "rotation-policy", "show", "--name", "rotated"])?;
    let token = cli.json(&["token", "show"])?;

    // 4. Fold the WAL into the main file, so softmhsm.db alone is the store.
    let db = dir.join("softmhsm.db");
    {
        let conn = rusqlite::Connection::open(&db)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    let wal = dir.join("softmhsm.db-wal");
    if wal.exists() && std::fs::metadata(&wal)?.len() > 0 {
        return Err(format!("{} still holds frames after the checkpoint", wal.display()).into());
    }
    let schema: u32 =
        rusqlite::Connection::open(&db)?.query_row("PRAGMA user_version", [], |r| r.get(0))?;

    let audit = std::fs::read_to_string(dir.join("audit-softmhsm.jsonl"))?;
    let manifest = json!({
        "about": "made by examples/make_legacy_store.rs; see README.md next to this file",
        "commit": git(&["rev-parse", "HEAD"]),
        "src_commit": git(&["log", "-1", "--format=%H", "--", "src", "include", "build.rs", "Cargo.toml", "Cargo.lock"]),
        "src_dirty": git(&["status", "--porcelain", "--", "src", "include", "build.rs", "Cargo.toml", "Cargo.lock"]).map(|s| !s.is_empty()),
        "schema_version": schema,
        "made_at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "token_label": LABEL,
        "so_pin": SO_PIN,
        "user_pin": USER_PIN,
        "kdf_iterations": KDF_ITERATIONS.parse::<u32>()?,
        "retention_days": token["retentionDays"],
        "attestation_key_pem": token["attestationKey"],
        "aes": {
            "plaintext": String::from_utf8(PLAINTEXT.to_vec())?,
            "cbc_pad_iv": hex(&CBC_IV),
            "gcm_iv": hex(&GCM_IV),
            "gcm_aad": hex(GCM_AAD),
            "gcm_tag_bits": 128,
        },
        "rotation_policy": { "key": "rotated", "policy": policy },
        "soft_deleted": ["deleted"],
        "audit_lines": audit.lines().count(),
        "keys": manifest_keys,
    });

    std::fs::create_dir_all(&out)?;
    std::fs::copy(&db, out.join("softmhsm.db"))?;
    std::fs::write(out.join("audit-softmhsm.jsonl"), audit)?;
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    println!(
        "wrote {} (schema version {schema}, {} keys)",
        out.display(),
        keys.len()
    );
    Ok(())
}

/// `C_GenerateKeyPair` / `C_GenerateKey` of a token key labelled `label` with
/// `CKA_ID` = `[id]`.
fn generate(s: &Session, spec: Spec, label: &str, id: u8) -> Res<()> {
    let common = |a: &mut Vec<Attribute>| {
        a.push(Attribute::Token(true));
        a.push(Attribute::Label(label.as_bytes().to_vec()));
        a.push(Attribute::Id(vec![id]));
    };
    match spec {
        Spec::Aes => {
            let mut t = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::ValueLen(32.into()),
            ];
            common(&mut t);
            s.generate_key(&Mechanism::AesKeyGen, &t)?;
        }
        Spec::Rsa | Spec::Ec(..) => {
            let mut public = vec![Attribute::Verify(true), Attribute::Private(false)];
            let mut private = vec![
                Attribute::Sign(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ];
            common(&mut public);
            common(&mut private);
            let mech = match spec {
                Spec::Rsa => {
                    public.push(Attribute::ModulusBits(2048.into()));
                    public.push(Attribute::PublicExponent(vec![1, 0, 1]));
                    Mechanism::RsaPkcsKeyPairGen
                }
                Spec::Ec(_, oid) => {
                    public.push(Attribute::EcParams(oid.to_vec()));
                    Mechanism::EccKeyPairGen
                }
                Spec::Aes => unreachable!("handled above"),
            };
            s.generate_key_pair(&mech, &public, &private)?;
        }
    }
    Ok(())
}

/// One version: its id, `CKA_ID`, whether it is current, and its SPKI (RSA,
/// EC) or ciphertexts of [`PLAINTEXT`] (AES).
fn describe_version(s: &Session, spec: Spec, v: &Version) -> Res<Value> {
    let mut d = json!({
        "version": v.version,
        "current": v.current,
        "cka_id": hex(&v.cka_id),
    });
    match spec {
        Spec::Aes => {
            let key = one(s, ObjectClass::SECRET_KEY, v)?;
            let cbc = s.encrypt(&Mechanism::AesCbcPad(CBC_IV), key, PLAINTEXT)?;
            let mut iv = GCM_IV;
            let gcm = s.encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, GCM_AAD, 128.into())?),
                key,
                PLAINTEXT,
            )?;
            d["aes_cbc_pad"] = hex(&cbc).into();
            d["aes_gcm"] = hex(&gcm).into();
        }
        Spec::Rsa | Spec::Ec(..) => {
            let key = one(s, ObjectClass::PUBLIC_KEY, v)?;
            let spki = match s
                .get_attributes(key, &[AttributeType::PublicKeyInfo])?
                .first()
            {
                Some(Attribute::PublicKeyInfo(der)) if !der.is_empty() => der.clone(),
                _ => return Err("no CKA_PUBLIC_KEY_INFO".into()),
            };
            d["spki_der"] = hex(&spki).into();
        }
    }
    Ok(d)
}

/// The one object of `class` of version `v` (`CKA_SOFTMHSM_VERSION` selects
/// any version; a template without it finds only current ones).
fn one(s: &Session, class: ObjectClass, v: &Version) -> Res<ObjectHandle> {
    let found = s.find_objects(&[
        Attribute::Class(class),
        Attribute::Id(v.cka_id.clone()),
        version_attr(&v.version),
    ])?;
    match found.as_slice() {
        [h] => Ok(*h),
        other => Err(format!("{} objects of version {}", other.len(), v.version).into()),
    }
}

fn version_attr(version: &str) -> Attribute {
    Attribute::VendorDefined((
        AttributeType::VendorDefined(CKA_SOFTMHSM_VERSION),
        version.as_bytes().to_vec(),
    ))
}

/// One version of a key, as the C ABI shows it.
struct Version {
    version: String,
    current: bool,
    cka_id: Vec<u8>,
}

/// The `softmhsm` CLI on the scratch token.
struct Cli {
    bin: PathBuf,
    dir: PathBuf,
}

impl Cli {
    fn new(dir: &Path) -> Res<Cli> {
        let bin = match std::env::var_os("SOFTMHSM_CLI") {
            Some(p) => PathBuf::from(p),
            None => target_dir()?.join("softmhsm"),
        };
        if !bin.exists() {
            return Err(format!("{} is missing: run `cargo build` first", bin.display()).into());
        }
        // The store and everything this process loads read the same directory.
        std::env::set_var("SOFTMHSM_DIR", dir);
        std::env::set_var("SOFTMHSM_KDF_ITERATIONS", KDF_ITERATIONS);
        std::env::remove_var("SOFTMHSM_CONF");
        std::env::remove_var("SOFTMHSM_AUDIT");
        Ok(Cli {
            bin,
            dir: dir.to_path_buf(),
        })
    }

    fn run(&self, args: &[&str]) -> Res<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .env("SOFTMHSM_DIR", &self.dir)
            .env("SOFTMHSM_PIN", USER_PIN)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "softmhsm {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    fn json(&self, args: &[&str]) -> Res<Value> {
        Ok(serde_json::from_str(&self.run(args)?)?)
    }

    /// The name of the key labelled `label` (a label outside the name rule gets
    /// a generated one) and its versions, oldest first: `key list-versions`,
    /// with `CKA_ID` from the C ABI.
    fn versions_of(&self, s: &Session, label: &str) -> Res<(String, Vec<Version>)> {
        let current = s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])?;
        let first = *current.first().ok_or(format!("no key labelled {label}"))?;
        let name = vendor_string(s, first, CKA_SOFTMHSM_NAME)?;
        let listed = self.json(&["key", "list-versions", "--name", &name])?;
        let mut versions = Vec::new();
        for v in listed.as_array().ok_or("list-versions is not a list")? {
            let kid = v["kid"].as_str().ok_or("no kid")?;
            let version = kid.rsplit('/').next().unwrap_or_default().to_string();
            let objects = s.find_objects(&[version_attr(&version)])?;
            let h = *objects
                .first()
                .ok_or(format!("no object of version {version}"))?;
            let cka_id = match s.get_attributes(h, &[AttributeType::Id])?.first() {
                Some(Attribute::Id(id)) => id.clone(),
                _ => return Err("no CKA_ID".into()),
            };
            versions.push(Version {
                version,
                current: v["current"] == true,
                cka_id,
            });
        }
        Ok((name, versions))
    }
}

fn vendor_string(s: &Session, h: ObjectHandle, ty: u64) -> Res<String> {
    match s
        .get_attributes(h, &[AttributeType::VendorDefined(ty)])?
        .first()
    {
        Some(Attribute::VendorDefined((_, v))) => Ok(String::from_utf8(v.clone())?),
        _ => Err("vendor attribute missing".into()),
    }
}

/// `target/<profile>/`, where this example's binary lives under `examples/`.
fn target_dir() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .ok_or("unexpected example location")?
        .to_path_buf())
}

/// The `libsoftmhsm.so` cargo built together with this example (it leaves the
/// library in `target/<profile>/deps/`; only `cargo build` copies it up).
fn module_path() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("SOFTMHSM_MODULE") {
        return Ok(PathBuf::from(p));
    }
    let dir = target_dir()?;
    let built_with_us = dir.join("deps").join("libsoftmhsm.so");
    Ok(if built_with_us.exists() {
        built_with_us
    } else {
        dir.join("libsoftmhsm.so")
    })
}

/// What `git args…` prints in this repository, if git knows.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
