//! The security domain (issue 14): `softmhsm security-domain download`,
//! `init-recovery`, `restore-blob` and `upload`, run as subprocesses, with
//! wrapping keys made by `openssl genpkey` (an implementation independent of
//! the token); keys recovered into a new pool are used through the C ABI and
//! their signatures checked by openssl with the old pool's public key.

#[macro_use]
mod common;
mod byok_support;

use byok_support::{openssl, openssl_verifies};
use common::cli::*;
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki_sys::CKR_FUNCTION_REJECTED;
use serde_json::Value;
use std::path::{Path, PathBuf};

const MSG: &[u8] = b"signed before the store was lost";
/// The new pool's SO PIN, not the old one's: upload keeps the new pool's.
const NEW_SO_PIN: &str = "87654321";

/// A path as a CLI argument.
fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Three RSA-2048 key pairs made by openssl in `dir`: (private key, public key) PEM paths.
fn wrapping_keys(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    (1..=3)
        .map(|i| {
            let key = dir.join(format!("wk{i}.key"));
            let public = dir.join(format!("wk{i}.pem"));
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    arg(&key),
                ],
            );
            openssl(
                dir,
                &["pkey", "-in", arg(&key), "-pubout", "-out", arg(&public)],
            );
            (key, public)
        })
        .collect()
}

/// Make the pool in `dir/name` the one the CLI children and the next
/// `C_Initialize` use.
fn use_pool(dir: &Path, name: &str) {
    std::env::set_var("SOFTMHSM_DIR", dir.join(name));
}

/// `security-domain download` of the current pool with `keys` and quorum 2.
fn download(dir: &Path, keys: &[(PathBuf, PathBuf)]) -> PathBuf {
    let file = dir.join("sd.json");
    let mut args = vec![
        "security-domain",
        "download",
        "--sd-quorum",
        "2",
        "--security-domain-file",
        arg(&file),
        "--so-pin",
        SO_PIN,
        "--sd-wrapping-keys",
    ];
    args.extend(keys.iter().map(|k| arg(&k.1)));
    let shown = json(&args);
    assert_eq!(shown["poolId"], TOKEN_LABEL);
    assert_eq!(shown["quorum"], 2);
    file
}

/// A new pool `name` (label "fresh", its own SO PIN) with an exchange key; its public key's path.
fn new_pool_with_exchange_key(dir: &Path, name: &str) -> PathBuf {
    use_pool(dir, name);
    json(&["init", "--label", "fresh", "--so-pin", NEW_SO_PIN]);
    let ex = dir.join(format!("{name}-exchange.pem"));
    json(&[
        "security-domain",
        "init-recovery",
        "--sd-exchange-key",
        arg(&ex),
        "--so-pin",
        NEW_SO_PIN,
    ]);
    ex
}

/// `security-domain restore-blob` with the private keys `keys`; the run and the blob's path.
fn restore_blob(dir: &Path, sd: &Path, ex: &Path, keys: &[&Path], out: &str) -> (Run, PathBuf) {
    let blob = dir.join(out);
    let mut args = vec![
        "security-domain",
        "restore-blob",
        "--sd-file",
        arg(sd),
        "--sd-exchange-key",
        arg(ex),
        "--sd-file-restore-blob",
        arg(&blob),
        "--sd-wrapping-keys",
    ];
    args.extend(keys.iter().map(|k| arg(k)));
    // No pool and no PIN: neither is in the environment.
    (
        cli_env(&args, None, &[("SOFTMHSM_DIR", "/nonexistent/pool")]),
        blob,
    )
}

/// The private key of the current version of `name`, through the C ABI.
fn private_key(t: &Token, name: &str) -> cryptoki::object::ObjectHandle {
    let found = t.find(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(name.as_bytes().to_vec()),
    ]);
    assert_eq!(found.len(), 1, "one private key named {name}");
    found[0]
}

/// Sign `MSG` with `name` (RS256: deterministic, so the same key gives the same bytes).
fn sign(name: &str) -> Vec<u8> {
    let t = Token::reopen_existing();
    let key = private_key(&t, name);
    sign_and_close(t, key)
}

/// Sign `MSG` with `key` (RS256), then close the session and finalise the
/// library, so the next step's process-wide state starts afresh.
fn sign_and_close(t: Token, key: cryptoki::object::ObjectHandle) -> Vec<u8> {
    let sig = ok(
        t.session.sign(&Mechanism::Sha256RsaPkcs, key, MSG),
        "C_Sign(RS256)",
    );
    close(t);
    sig
}

/// Close the session and finalise the library.
fn close(t: Token) {
    let Token {
        session, pkcs11, ..
    } = t;
    drop(session);
    ok(pkcs11.finalize(), "C_Finalize");
}

/// The old pool (the harness's directory, label `TOKEN_LABEL`): a key `sig`,
/// its backup, its public key and a signature; then its security domain.
struct OldPool {
    backup: PathBuf,
    public: PathBuf,
    signature: Vec<u8>,
    sd: PathBuf,
}

fn old_pool(dir: &Path, keys: &[(PathBuf, PathBuf)]) -> OldPool {
    use_pool(dir, "old");
    json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
    json(&[
        "key", "create", "--name", "sig", "--kty", "RSA", "--size", "2048",
    ]);
    let backup = dir.join("sig.bak");
    json(&["key", "backup", "--name", "sig", "--file", arg(&backup)]);
    let public = dir.join("sig-old.pem");
    json(&["key", "download", "--name", "sig", "--file", arg(&public)]);
    let signature = sign("sig");
    let sd = download(dir, keys);
    OldPool {
        backup,
        public,
        signature,
        sd,
    }
}

/// The start of every recovery test: three wrapping keys, an old pool with a
/// key and its downloaded security domain, and a new pool with an exchange
/// key (None when openssl is missing outside CI).
struct Recovery {
    dir: PathBuf,
    keys: Vec<(PathBuf, PathBuf)>,
    old: OldPool,
    ex: PathBuf,
}

fn recovery() -> Option<Recovery> {
    if !tool("openssl") {
        return None;
    }
    let dir = store_dir();
    let keys = wrapping_keys(&dir);
    let old = old_pool(&dir, &keys);
    let ex = new_pool_with_exchange_key(&dir, "new");
    Some(Recovery { dir, keys, old, ex })
}

p11_test! {
    fn a_quorum_of_two_moves_the_pool_and_its_keys_sign_the_same() {
        if !tool("openssl") {
            return;
        }
        let dir = store_dir();
        let keys = wrapping_keys(&dir);
        let old = old_pool(&dir, &keys);
        assert!(openssl_verifies(&dir, &old.public, "sha256", MSG, &old.signature));

        // The store is lost; a new pool, and on an offline machine the blob.
        let ex = new_pool_with_exchange_key(&dir, "new");
        let (run, blob) = restore_blob(&dir, &old.sd, &ex, &[&keys[0].0, &keys[2].0], "blob.json");
        assert_eq!(run.code, 0, "restore-blob: {}", run.stderr);
        let up = json(&["security-domain", "upload", "--sd-file", arg(&blob), "--restore-blob", "--so-pin", NEW_SO_PIN]);
        assert_eq!(up["poolId"], TOKEN_LABEL, "the new pool takes the old label");

        // The old pool's key backup restores, with the same public key.
        json(&["key", "restore", "--file", arg(&old.backup)]);
        let public = dir.join("sig-new.pem");
        json(&["key", "download", "--name", "sig", "--file", arg(&public)]);
        assert_eq!(std::fs::read(&public).unwrap(), std::fs::read(&old.public).unwrap());
        let signature = sign("sig");
        assert_eq!(signature, old.signature, "RS256 by the same key gives the same signature");
        assert!(openssl_verifies(&dir, &old.public, "sha256", MSG, &signature));

        // The new pool's SO PIN still opens it; a new key is sealed under the adopted domain.
        json(&["key", "create", "--name", "later", "--kty", "EC"]);
        assert_eq!(json(&["token", "show"])["label"], TOKEN_LABEL);
    }
}

p11_test! {
    fn one_private_key_alone_is_refused() {
        let Some(Recovery { dir, keys, old, ex }) = recovery() else {
            return;
        };
        let (run, blob) = restore_blob(&dir, &old.sd, &ex, &[&keys[1].0], "blob.json");
        assert_refused(&run, 1, "quorum is 2 of 3");
        assert!(!blob.exists(), "no blob written");
        // The same key twice is not two shares.
        let (run, _) = restore_blob(&dir, &old.sd, &ex, &[&keys[1].0, &keys[1].0], "blob.json");
        assert_refused(&run, 1, "given twice");
    }
}

p11_test! {
    fn a_private_key_of_another_pair_is_refused() {
        let Some(Recovery { dir, keys, old, ex }) = recovery() else {
            return;
        };
        let stranger = dir.join("stranger.key");
        openssl(&dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", arg(&stranger)]);
        let (run, blob) = restore_blob(&dir, &old.sd, &ex, &[&keys[0].0, &stranger], "blob.json");
        assert_refused(&run, 1, "not one of the file's wrapping keys");
        assert!(!blob.exists(), "no blob written");
    }
}

/// Every field of a security-domain file, as a JSON pointer, and a changed value.
fn tampered_fields(v: &Value) -> Vec<(String, Value)> {
    let flip = |s: &str| {
        // Change one character in the middle, staying in the field's alphabet.
        let mut c: Vec<char> = s.chars().collect();
        let i = c.len() / 2;
        c[i] = if c[i] == 'a' { 'b' } else { 'a' };
        Value::String(c.into_iter().collect())
    };
    let mut out = vec![
        ("/format".into(), Value::from("softmhsm-security-domain-x")),
        ("/schemaVersion".into(), Value::from(2)),
        ("/poolId".into(), Value::from("other")),
        (
            "/created".into(),
            Value::from(v["created"].as_i64().unwrap() + 1),
        ),
        ("/quorum".into(), Value::from(3)),
        ("/mac".into(), flip(v["mac"].as_str().unwrap())),
    ];
    for (i, s) in v["shares"].as_array().unwrap().iter().enumerate() {
        out.push((
            format!("/shares/{i}/index"),
            Value::from(s["index"].as_u64().unwrap() % 3 + 4),
        ));
        for f in ["wrappingKeySha256", "encryptedKey", "iv", "ciphertext"] {
            out.push((format!("/shares/{i}/{f}"), flip(s[f].as_str().unwrap())));
        }
    }
    out
}

p11_test! {
    fn tampering_with_any_field_of_the_file_is_refused() {
        let Some(Recovery { dir, keys, old, ex }) = recovery() else {
            return;
        };
        let original: Value = serde_json::from_slice(&std::fs::read(&old.sd).unwrap()).unwrap();
        let quorum = [keys[0].0.as_path(), keys[1].0.as_path()];
        let mut cases = tampered_fields(&original);
        assert_eq!(cases.len(), 6 + 3 * 5, "every field of the file");
        // Structure: an extra field, a share removed.
        let mut extra = original.clone();
        extra["note"] = Value::from("hello");
        let mut fewer = original.clone();
        fewer["shares"].as_array_mut().unwrap().pop();
        let mut edited: Vec<(String, Value)> = cases
            .drain(..)
            .map(|(pointer, value)| {
                let mut v = original.clone();
                *v.pointer_mut(&pointer).unwrap() = value;
                (pointer, v)
            })
            .collect();
        edited.push(("an extra field".into(), extra));
        edited.push(("a share removed".into(), fewer));
        for (i, (what, v)) in edited.iter().enumerate() {
            let file = dir.join(format!("tampered-{i}.json"));
            std::fs::write(&file, serde_json::to_vec_pretty(v).unwrap()).unwrap();
            let (run, blob) = restore_blob(&dir, &file, &ex, &quorum, &format!("blob-{i}.json"));
            assert_eq!(run.code, 1, "{what}: exit code; stderr {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{what}: one line: {}", run.stderr);
            assert!(!blob.exists(), "{what}: no blob written");
        }
        // The untouched file still recovers.
        let (run, _) = restore_blob(&dir, &old.sd, &ex, &quorum, "blob.json");
        assert_eq!(run.code, 0, "untouched: {}", run.stderr);
    }
}

p11_test! {
    fn upload_takes_only_an_empty_pool_and_its_own_exchange_key() {
        if !tool("openssl") {
            return;
        }
        let dir = store_dir();
        let keys = wrapping_keys(&dir);
        let old = old_pool(&dir, &keys);
        let quorum = [keys[0].0.as_path(), keys[1].0.as_path()];
        // A blob for pool b's exchange key does not open in pool c.
        let ex_b = new_pool_with_exchange_key(&dir, "b");
        let _ex_c = new_pool_with_exchange_key(&dir, "c");
        let (run, blob_b) = restore_blob(&dir, &old.sd, &ex_b, &quorum, "blob-b.json");
        assert_eq!(run.code, 0, "restore-blob: {}", run.stderr);
        let upload = ["security-domain", "upload", "--sd-file", arg(&blob_b), "--restore-blob", "--so-pin", NEW_SO_PIN];
        assert_refused(&cli(&upload), 1, "another exchange key");
        assert_eq!(json(&["token", "show"])["label"], "fresh", "pool c unchanged");

        // A tampered blob is refused.
        use_pool(&dir, "b");
        let mut v: Value = serde_json::from_slice(&std::fs::read(&blob_b).unwrap()).unwrap();
        v["poolId"] = Value::from("other");
        let bad = dir.join("blob-b-tampered.json");
        std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
        let tampered = ["security-domain", "upload", "--sd-file", arg(&bad), "--restore-blob", "--so-pin", NEW_SO_PIN];
        assert_refused(&cli(&tampered), 1, "altered");

        // A pool with a key takes no security domain (and makes no exchange key).
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        assert_refused(&cli(&upload), 1, "new, empty pool");
        let ex = dir.join("refused-exchange.pem");
        assert_refused(
            &cli(&["security-domain", "init-recovery", "--sd-exchange-key", arg(&ex), "--so-pin", NEW_SO_PIN]),
            1,
            "new, empty pool",
        );
        assert_eq!(json(&["token", "show"])["label"], "fresh", "pool b unchanged");
        json(&["key", "show", "--name", "k"]);
    }
}

p11_test! {
    fn download_needs_the_so_pin_and_three_big_enough_keys() {
        if !tool("openssl") {
            return;
        }
        let dir = store_dir();
        let keys = wrapping_keys(&dir);
        use_pool(&dir, "old");
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        let out = dir.join("sd.json");
        let base = ["security-domain", "download", "--security-domain-file", arg(&out), "--sd-wrapping-keys"];
        let with = |extra: &[&str], ks: &[&Path]| {
            let mut a: Vec<&str> = base.to_vec();
            a.extend(ks.iter().map(|k| arg(k)));
            a.extend(extra);
            cli(&a)
        };
        let three = [keys[0].1.as_path(), keys[1].1.as_path(), keys[2].1.as_path()];
        assert_refused(&with(&["--sd-quorum", "2", "--so-pin", "00000000"], &three), 1, "wrong SO PIN");
        assert_refused(&with(&["--sd-quorum", "2", "--so-pin", SO_PIN], &three[..2]), 1, "3 to 10 wrapping keys");
        assert_refused(&with(&["--sd-quorum", "4", "--so-pin", SO_PIN], &three), 1, "quorum must be 2 to 3");
        let small = dir.join("small.key");
        let small_pub = dir.join("small.pem");
        openssl(&dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", arg(&small)]);
        openssl(&dir, &["pkey", "-in", arg(&small), "-pubout", "-out", arg(&small_pub)]);
        assert_refused(&with(&["--sd-quorum", "2", "--so-pin", SO_PIN], &[three[0], three[1], &small_pub]), 1, "2048 bits or more");
        assert!(!out.exists(), "nothing written");
        // A certificate serves as a wrapping key, with its key's fingerprint.
        let cert = dir.join("wk3.crt");
        openssl(&dir, &["req", "-x509", "-key", arg(&keys[2].0), "-subj", "/CN=wk3", "-days", "1", "-out", arg(&cert)]);
        let shown = with(&["--sd-quorum", "3", "--so-pin", SO_PIN], &[three[0], three[1], &cert]);
        assert_eq!(shown.code, 0, "{}", shown.stderr);
        let der = dir.join("wk3.der");
        openssl(&dir, &["pkey", "-pubin", "-in", arg(&keys[2].1), "-outform", "DER", "-out", arg(&der)]);
        let digest = String::from_utf8(openssl(&dir, &["dgst", "-sha256", "-r", arg(&der)])).unwrap();
        let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(shown["wrappingKeys"][2].as_str().unwrap(), digest.split(' ').next().unwrap());
    }
}

/// The keys `key list` shows, by name, with their JSON.
fn listed() -> Vec<(String, Value)> {
    json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .nth(4)
                    .unwrap()
                    .to_string(),
                k.clone(),
            )
        })
        .collect()
}

/// What a full backup must carry of the pool, as the CLI shows it.
fn pool_state() -> Value {
    let names: Vec<String> = listed().into_iter().map(|(n, _)| n).collect();
    let keys: Vec<Value> = names
        .iter()
        .map(|n| {
            serde_json::json!({
                "versions": json(&["key", "list-versions", "--name", n]),
                "policy": json(&["key", "rotation-policy", "show", "--name", n]),
            })
        })
        .collect();
    serde_json::json!({ "keys": keys, "deleted": json(&["key", "list-deleted"]) })
}

p11_test! {
    fn a_whole_pool_backup_restores_into_the_recovered_pool() {
        if !tool("openssl") {
            return;
        }
        let dir = store_dir();
        let keys = wrapping_keys(&dir);
        let old = old_pool(&dir, &keys);
        // Versions, tags, a rotation policy, a disabled key, a deleted key.
        json(&["key", "rotate", "--name", "sig"]);
        json(&["key", "create", "--name", "aes", "--kty", "oct", "--tags", "team=pay", "env=prod"]);
        json(&["key", "rotation-policy", "update", "--name", "aes", "--value",
               r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P90D"},"action":{"type":"Rotate"}}],"attributes":{"expiryTime":"P1Y"}}"#]);
        json(&["key", "create", "--name", "off", "--kty", "EC", "--enabled", "false"]);
        json(&["key", "create", "--name", "gone", "--kty", "EC"]);
        json(&["key", "rotate", "--name", "gone"]);
        let gone_versions = json(&["key", "list-versions", "--name", "gone"]);
        json(&["key", "delete", "--name", "gone"]);
        let before = pool_state();
        let full = dir.join("pool.bak");
        let shown = json(&["backup", "start", "--file", arg(&full), "--so-pin", SO_PIN]);
        // The deleted key is carried with both its versions.
        assert_eq!((shown["keys"].as_u64(), shown["deletedKeys"].as_u64(), shown["versions"].as_u64()), (Some(3), Some(1), Some(6)));

        // A pool with another security domain does not open it.
        use_pool(&dir, "stranger");
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        assert_refused(&cli(&["restore", "start", "--file", arg(&full), "--so-pin", SO_PIN]), 1, "another security domain");

        // The recovered pool restores all of it.
        let ex = new_pool_with_exchange_key(&dir, "new");
        let (run, blob) = restore_blob(&dir, &old.sd, &ex, &[&keys[1].0, &keys[2].0], "blob.json");
        assert_eq!(run.code, 0, "restore-blob: {}", run.stderr);
        json(&["security-domain", "upload", "--sd-file", arg(&blob), "--restore-blob", "--so-pin", NEW_SO_PIN]);
        let restored = json(&["restore", "start", "--file", arg(&full), "--so-pin", NEW_SO_PIN]);
        assert_eq!(restored["versions"], 6);
        assert_eq!(pool_state(), before, "every key, version, attribute, tag, policy and deletion");
        json(&["key", "recover", "--name", "gone"]);
        assert_eq!(json(&["key", "list-versions", "--name", "gone"]), gone_versions, "both versions of the deleted key");
        // Version 1 of sig is the one that signed before.
        assert_eq!(sign_version_one(), old.signature);
        // Restoring again is refused: the names are taken.
        assert_refused(&cli(&["restore", "start", "--file", arg(&full), "--so-pin", NEW_SO_PIN]), 1, "already exist");
    }
}

/// Sign `MSG` with the first version of `sig` (found by its CKA_ID).
fn sign_version_one() -> Vec<u8> {
    let first = json(&["key", "list-versions", "--name", "sig"])[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let version = first.rsplit('/').next().unwrap();
    let id: Vec<u8> = (0..version.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&version[i..i + 2], 16).unwrap())
        .collect();
    let t = Token::reopen_existing();
    let found = t.find(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(id),
    ]);
    assert_eq!(found.len(), 1, "version one of sig");
    sign_and_close(t, found[0])
}

p11_test! {
    fn one_key_of_a_whole_pool_backup_restores_alone() {
        let dir = store_dir();
        use_pool(&dir, "old");
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        json(&["key", "create", "--name", "one", "--kty", "oct"]);
        json(&["key", "create", "--name", "two", "--kty", "oct"]);
        let full = dir.join("pool.bak");
        json(&["backup", "start", "--file", arg(&full), "--so-pin", SO_PIN]);
        json(&["key", "delete", "--name", "two"]);
        json(&["key", "purge", "--name", "two"]);
        let shown = json(&["restore", "start", "--file", arg(&full), "--key-name", "two", "--so-pin", SO_PIN]);
        assert_eq!(shown["keys"], 1);
        let names: Vec<String> = listed().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["one", "two"]);
        assert_refused(&cli(&["restore", "start", "--file", arg(&full), "--key-name", "three", "--so-pin", SO_PIN]), 1, "not in the backup");
        assert_refused(&cli(&["restore", "start", "--file", arg(&full), "--key-name", "one", "--so-pin", SO_PIN]), 1, "already exist");
    }
}

/// The `operationName` of every line of the current pool's audit log.
fn audited() -> Vec<String> {
    let dir = PathBuf::from(std::env::var_os("SOFTMHSM_DIR").unwrap());
    std::fs::read_to_string(dir.join("audit-softmhsm.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["operationName"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

p11_test! {
    fn upload_in_one_step_with_the_file_and_a_pkcs1_public_key_and_audited() {
        if !tool("openssl") {
            return;
        }
        let dir = store_dir();
        let mut keys = wrapping_keys(&dir);
        // One wrapping key as a traditional PKCS#1 RSA PUBLIC KEY.
        let pkcs1 = dir.join("wk2.pkcs1.pem");
        openssl(&dir, &["rsa", "-in", arg(&keys[1].0), "-RSAPublicKey_out", "-out", arg(&pkcs1)]);
        keys[1].1 = pkcs1;
        let old = old_pool(&dir, &keys);
        let ops = audited();
        assert!(ops.contains(&"SecurityDomainDownload".to_string()), "{ops:?}");

        let ex = new_pool_with_exchange_key(&dir, "new");
        let usage = cli(&["security-domain", "upload", "--sd-file", arg(&old.sd), "--so-pin", NEW_SO_PIN]);
        assert_refused(&usage, 2, "--restore-blob");
        json(&["security-domain", "upload", "--sd-file", arg(&old.sd), "--sd-exchange-key", arg(&ex),
               "--sd-wrapping-keys", arg(&keys[0].0), arg(&keys[1].0), "--so-pin", NEW_SO_PIN]);
        json(&["key", "restore", "--file", arg(&old.backup)]);
        assert_eq!(sign("sig"), old.signature);
        let ops = audited();
        for op in ["SecurityDomainInitRecovery", "SecurityDomainUpload", "KeyRestore"] {
            assert!(ops.contains(&op.to_string()), "{op} in {ops:?}");
        }
    }
}

p11_test! {
    fn encrypted_private_keys_open_with_their_passwords() {
        let Some(Recovery { dir, keys, old, ex }) = recovery() else {
            return;
        };
        let enc = dir.join("wk1.enc.key");
        openssl(&dir, &["pkey", "-in", arg(&keys[0].0), "-aes-256-cbc", "-passout", "pass:first secret", "-out", arg(&enc)]);
        let blob = dir.join("blob.json");
        let run = |passwords: &[&str]| {
            let mut a = vec!["security-domain", "restore-blob", "--sd-file", arg(&old.sd), "--sd-exchange-key", arg(&ex),
                             "--sd-file-restore-blob", arg(&blob), "--sd-wrapping-keys", arg(&enc), arg(&keys[1].0)];
            if !passwords.is_empty() {
                a.push("--passwords");
                a.extend(passwords);
            }
            cli_with(&a, None)
        };
        assert_refused(&run(&[]), 1, "encrypted");
        assert_refused(&run(&["first secret"]), 2, "one each");
        assert_refused(&run(&["wrong", ""]), 1, "wrong password");
        assert!(!blob.exists());
        let ok_run = run(&["first secret", ""]);
        assert_eq!(ok_run.code, 0, "{}", ok_run.stderr);
        json(&["security-domain", "upload", "--sd-file", arg(&blob), "--restore-blob", "--so-pin", NEW_SO_PIN]);
        json(&["key", "restore", "--file", arg(&old.backup)]);
    }
}

/// The CLI's refusal in a provisioned pool.
const PROVISIONED: &str = "waiting for its security domain to be downloaded";

/// Mark the current pool provisioned behind the CLI's back, as another
/// process would see a pool made with `--require-security-domain` (the only
/// way to have keys in a provisioned pool, to show that using them is
/// refused). Through the configuration, so on whichever store the test runs.
fn provision_behind() {
    let config = softmhsm::config::load().unwrap();
    let mut store = softmhsm::store::open(&config.tokens[0].location()).unwrap();
    store.set_provisioned(true).unwrap();
}

p11_test! {
    fn a_provisioned_pool_refuses_key_creation_until_its_domain_is_downloaded() {
        if !tool("openssl") {
            return;
        }
        let dir = store_dir();
        let keys = wrapping_keys(&dir);
        use_pool(&dir, "old");
        let shown = json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--require-security-domain"]);
        assert_eq!(shown["status"], "Provisioned");
        refused(&["key", "create", "--name", "k", "--kty", "EC"], 1, PROVISIONED);
        refused(&["key", "list"], 1, PROVISIONED);
        refused(&["backup", "start", "--file", arg(&dir.join("pool.bak")), "--so-pin", SO_PIN], 1, PROVISIONED);

        let t = Token::reopen_existing();
        assert_rv(t.try_keypair(Kp::Ec(OID_P256), "k", true), CKR_FUNCTION_REJECTED, "C_GenerateKeyPair in a provisioned pool");
        assert_rv(t.session.generate_key(&Mechanism::AesKeyGen, &Token::aes_template(32, "a", false)), CKR_FUNCTION_REJECTED, "C_GenerateKey of a session key");
        let aes = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![1u8; 32]),
        ];
        assert_rv(t.session.create_object(&aes), CKR_FUNCTION_REJECTED, "C_CreateObject of an AES key");
        close(t);

        assert_eq!(json(&["token", "show"])["status"], "Provisioned");
        download(&dir, &keys);
        assert_eq!(json(&["token", "show"])["status"], "Active", "active after download");
        json(&["key", "create", "--name", "k", "--kty", "EC"]);
        let t = Token::reopen_existing();
        ok(t.try_keypair(Kp::Ec(OID_P256), "p", true), "C_GenerateKeyPair once active");
    }
}

p11_test! {
    fn a_provisioned_pool_refuses_signing_seen_by_a_running_process() {
        let dir = store_dir();
        use_pool(&dir, "p");
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
        let t = Token::reopen_existing();
        let pair = t.keypair(Kp::Ec(OID_P256), "k");
        ok(t.session.sign(&Mechanism::Ecdsa, pair.private, &[7u8; 32]), "C_Sign while active");
        provision_behind();
        assert_rv(t.session.sign(&Mechanism::Ecdsa, pair.private, &[7u8; 32]), CKR_FUNCTION_REJECTED, "C_SignInit in a provisioned pool");
        assert_rv(t.session.verify(&Mechanism::Ecdsa, pair.public, &[7u8; 32], &[0u8; 64]), CKR_FUNCTION_REJECTED, "C_VerifyInit in a provisioned pool");
        refused(&["key", "rotate", "--name", "k"], 1, PROVISIONED);
    }
}

p11_test! {
    fn plain_init_and_reinit_without_the_flag_make_an_active_pool() {
        let dir = store_dir();
        use_pool(&dir, "p");
        assert_eq!(json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN])["status"], "Active");
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
        json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN, "--force", "--require-security-domain"]);
        refused(&["key", "create", "--name", "k", "--kty", "oct"], 1, PROVISIONED);
        assert_eq!(json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN])["status"], "Active");
        json(&["key", "create", "--name", "k", "--kty", "oct"]);
    }
}

p11_test! {
    fn c_inittoken_makes_an_active_pool() {
        let t = Token::fresh();
        ok(t.try_keypair(Kp::Ec(OID_P256), "k", true), "C_GenerateKeyPair after C_InitToken");
    }
}

p11_test! {
    fn upload_makes_a_provisioned_pool_active() {
        let Some(Recovery { dir, keys, old, .. }) = recovery() else {
            return;
        };
        use_pool(&dir, "adopting");
        json(&["init", "--label", "fresh", "--so-pin", NEW_SO_PIN, "--require-security-domain"]);
        let ex = dir.join("adopting-exchange.pem");
        json(&["security-domain", "init-recovery", "--sd-exchange-key", arg(&ex), "--so-pin", NEW_SO_PIN]);
        let (run, blob) = restore_blob(&dir, &old.sd, &ex, &[&keys[0].0, &keys[1].0], "blob.json");
        assert_eq!(run.code, 0, "restore-blob: {}", run.stderr);
        json(&["security-domain", "upload", "--sd-file", arg(&blob), "--restore-blob", "--so-pin", NEW_SO_PIN]);
        json(&["key", "restore", "--file", arg(&old.backup)]);
    }
}
