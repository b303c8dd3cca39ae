//! A store written by an older release keeps working: `tests/fixtures/store-v3`
//! (schema version 3, made by `examples/make_legacy_store.rs`; see the README
//! there) is copied into each test's token directory and opened through the C
//! ABI and the CLI. Every key is checked against what the manifest recorded
//! when the store was made — signatures verified with the recorded public key
//! by RustCrypto, AES ciphertexts decrypted back to the recorded plaintext —
//! so a migration that loses or garbles a key fails here.

mod common;

use common::cli::{cli_with, Run};
use common::*;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki_sys::CKA_ID;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The fixture: `softmhsm.db`, `audit-softmhsm.jsonl`, `manifest.json`.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v3");
/// The files a token directory of that release holds (the WAL is checkpointed).
const STORE_FILES: [&str; 2] = ["softmhsm.db", "audit-softmhsm.jsonl"];
/// What the tests sign.
const MSG: &[u8] = b"signed by a key an older release made";

/// The fixture's manifest.
fn manifest() -> Value {
    let text = fs::read_to_string(Path::new(FIXTURE).join("manifest.json"))
        .expect("read the fixture's manifest.json");
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("manifest: {what} is not a string: {v}"))
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The token directory of this test, the store file in it.
fn db_path() -> PathBuf {
    store_dir().join("softmhsm.db")
}

/// `PRAGMA user_version` of the store file (its schema version).
fn schema_version() -> u32 {
    rusqlite::Connection::open(db_path())
        .expect("open the store file")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("read user_version")
}

/// Copies the fixture into this test's token directory as a deployment has
/// it (directory 0700, files 0600), and returns the manifest.
///
/// The fixture is frozen, the clock is not: a store opened after a deleted
/// key's scheduled purge date purges it, which would make the recover test
/// expire 90 days after the fixture was made. So the copy's deletion stamps
/// move forward by the fixture's age, in the schema-3 columns `deleted_at`
/// and `purge_at` — on the copy, before any build of ours opens it, as if the
/// key had been deleted just now.
fn install() -> Value {
    let m = manifest();
    let dir = store_dir();
    for f in STORE_FILES {
        let to = dir.join(f);
        fs::copy(Path::new(FIXTURE).join(f), &to)
            .unwrap_or_else(|e| panic!("copy the fixture's {f}: {e}"));
        fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let made_at = m["made_at"].as_i64().expect("manifest: made_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let age = (now - made_at).max(0);
    let conn = rusqlite::Connection::open(db_path()).expect("open the copied store");
    conn.execute(
        "UPDATE objects SET deleted_at = deleted_at + ?1, purge_at = purge_at + ?1 \
         WHERE purge_at IS NOT NULL",
        [age],
    )
    .expect("move the deletion stamps forward");
    m
}

/// The fixture token's CLI: its PIN, this test's `SOFTMHSM_DIR`.
fn cli(m: &Value, args: &[&str]) -> Run {
    cli_with(args, Some(s(&m["user_pin"], "user_pin")))
}

/// [`cli`], expecting success and JSON.
#[track_caller]
fn cli_json(m: &Value, args: &[&str]) -> Value {
    let r = cli(m, args);
    assert_eq!(r.code, 0, "softmhsm {args:?} failed: {}", r.stderr);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("softmhsm {args:?} printed no JSON ({e}): {}", r.stdout))
}

/// The fixture token through the C ABI, the user logged in.
fn open(m: &Value) -> Token {
    let pkcs11 = load_initialized();
    let slot = slot_by_label(&pkcs11, s(&m["token_label"], "token_label"));
    let session = ok(pkcs11.open_rw_session(slot), "C_OpenSession(RW)");
    ok(
        session.login(UserType::User, Some(&pin(s(&m["user_pin"], "user_pin")))),
        "C_Login(USER) with the fixture's user PIN",
    );
    Token {
        session,
        slot,
        pkcs11,
        raw: Raw::load(),
    }
}

/// The manifest's keys, without the soft-deleted ones.
fn live_keys(m: &Value) -> Vec<&Value> {
    let deleted: Vec<&str> = m["soft_deleted"]
        .as_array()
        .expect("manifest: soft_deleted")
        .iter()
        .map(|d| s(d, "soft_deleted"))
        .collect();
    keys(m)
        .into_iter()
        .filter(|k| !deleted.contains(&s(&k["name"], "name")))
        .collect()
}

fn keys(m: &Value) -> Vec<&Value> {
    m["keys"]
        .as_array()
        .expect("manifest: keys")
        .iter()
        .collect()
}

/// The manifest key named `name`.
fn key<'a>(m: &'a Value, name: &str) -> &'a Value {
    keys(m)
        .into_iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("manifest: no key {name}"))
}

fn versions(k: &Value) -> &Vec<Value> {
    k["versions"].as_array().expect("manifest: versions")
}

/// A template entry selecting one version, current or not (a template without
/// it finds current versions only).
fn version_attr(version: &str) -> Attribute {
    vendor(CKA_SOFTMHSM_VERSION, version.as_bytes())
}

/// The one object of `class` of this manifest version, checking its `CKA_ID`.
#[track_caller]
fn object_of(t: &Token, class: ObjectClass, v: &Value) -> ObjectHandle {
    let version = s(&v["version"], "version");
    let found = t.find(&[Attribute::Class(class), version_attr(version)]);
    assert_eq!(found.len(), 1, "one {class} of version {version}");
    let id = t.attr(found[0], CKA_ID, "CKA_ID");
    assert_eq!(hex(&id), v["cka_id"], "CKA_ID of version {version}");
    found[0]
}

/// The SEC1 uncompressed point and curve OID of an EC SPKI (parsed by the
/// RustCrypto curve crates, not by the token).
fn ec_public(curve: &str, spki: &[u8]) -> (&'static [u8], Vec<u8>) {
    macro_rules! point {
        ($krate:ident) => {{
            use $krate::elliptic_curve::sec1::ToEncodedPoint;
            use $krate::pkcs8::DecodePublicKey;
            $krate::PublicKey::from_public_key_der(spki)
                .unwrap_or_else(|e| panic!("{curve} SPKI in the manifest: {e}"))
                .to_encoded_point(false)
                .as_bytes()
                .to_vec()
        }};
    }
    match curve {
        "P-256" => (OID_P256, point!(p256)),
        "P-256K" => (OID_SECP256K1, point!(k256)),
        "P-384" => (OID_P384, point!(p384)),
        "P-521" => (OID_P521, point!(p521)),
        other => panic!("manifest: unknown curve {other}"),
    }
}

/// Signs [`MSG`] with every version of the RSA/EC key `k` (found by its
/// version) and verifies each signature with the version's public key from
/// the manifest. Returns how many versions signed.
fn sign_with_every_version(t: &Token, k: &Value) -> usize {
    let name = s(&k["name"], "name");
    let mut signed = 0;
    for v in versions(k) {
        let private = object_of(t, ObjectClass::PRIVATE_KEY, v);
        let spki = unhex(s(&v["spki_der"], "spki_der"));
        let result = match s(&k["kty"], "kty") {
            "RSA" => {
                use rsa::pkcs8::DecodePublicKey;
                let public = rsa::RsaPublicKey::from_public_key_der(&spki)
                    .unwrap_or_else(|e| panic!("{name}: RSA SPKI in the manifest: {e}"));
                let sig = ok(
                    t.session.sign(&Mechanism::Sha256RsaPkcs, private, MSG),
                    &format!("C_Sign(CKM_SHA256_RSA_PKCS) with {name}"),
                );
                verify_rs256(&public, MSG, &sig)
            }
            "EC" => {
                let (oid, point) = ec_public(s(&k["curve"], "curve"), &spki);
                let curve = CURVES.iter().find(|c| c.oid == oid).expect("a known curve");
                let digest = sha2_for(curve.digest_len, MSG);
                let sig = ok(
                    t.session.sign(&Mechanism::Ecdsa, private, &digest),
                    &format!("C_Sign(CKM_ECDSA) with {name}"),
                );
                verify_ecdsa_prehash(oid, &point, &digest, &sig)
            }
            other => panic!("{name}: not a signing key type: {other}"),
        };
        result.unwrap_or_else(|e| {
            panic!(
                "{name} version {}: the signature does not verify with the recorded public key: {e}",
                v["version"]
            )
        });
        signed += 1;
    }
    signed
}

/// Signs with every version of every live RSA/EC key; returns the count.
fn sign_with_every_key(t: &Token, m: &Value) -> usize {
    live_keys(m)
        .into_iter()
        .filter(|k| k["kty"] != "oct")
        .map(|k| sign_with_every_version(t, k))
        .sum()
}

p11_test! {
    fn store_from_v3_release_is_schema_version_3() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        assert_eq!(m["schema_version"], 3, "the manifest's schema version");
        assert_eq!(schema_version(), 3, "the fixture's user_version before any open");
    }
}

p11_test! {
    fn store_from_v3_release_finds_every_key_by_label() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let t = open(&m);
        for k in live_keys(&m) {
            let label = s(&k["label"], "label");
            let current: Vec<&Value> = versions(k).iter().filter(|v| v["current"] == true).collect();
            assert_eq!(current.len(), 1, "{label}: one current version in the manifest");
            let class = if k["kty"] == "oct" { ObjectClass::SECRET_KEY } else { ObjectClass::PRIVATE_KEY };
            let found = t.find(&[Attribute::Class(class), common::label(label)]);
            assert_eq!(found.len(), 1, "{label}: one {class} by label");
            let version = t.attr(found[0], CKA_SOFTMHSM_VERSION, "CKA_SOFTMHSM_VERSION");
            assert_eq!(String::from_utf8_lossy(&version), s(&current[0]["version"], "version"), "{label}: the current version");
            assert_eq!(hex(&t.attr(found[0], CKA_ID, "CKA_ID")), current[0]["cka_id"], "{label}: CKA_ID");
            let name = t.attr(found[0], CKA_SOFTMHSM_NAME, "CKA_SOFTMHSM_NAME");
            assert_eq!(String::from_utf8_lossy(&name), s(&k["name"], "name"), "{label}: the key's name");
            if k["kty"] != "oct" {
                let public = t.find(&[Attribute::Class(ObjectClass::PUBLIC_KEY), common::label(label)]);
                assert_eq!(public.len(), 1, "{label}: one public key by label");
            }
        }
        for d in m["soft_deleted"].as_array().expect("manifest: soft_deleted") {
            let label = s(&key(&m, s(d, "soft_deleted"))["label"], "label");
            assert!(t.find(&[common::label(label)]).is_empty(), "soft-deleted {label} must not be found");
        }
    }
}

p11_test! {
    fn store_from_v3_release_signs_with_every_key() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let t = open(&m);
        let expected: usize = live_keys(&m)
            .into_iter()
            .filter(|k| k["kty"] != "oct")
            .map(|k| versions(k).len())
            .sum();
        assert!(expected >= 12, "the manifest has RSA/EC keys of every type");
        assert_eq!(sign_with_every_key(&t, &m), expected, "every RSA/EC version signed");
    }
}

p11_test! {
    fn store_from_v3_release_decrypts_with_every_aes_key() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let t = open(&m);
        let aes = &m["aes"];
        let plaintext = s(&aes["plaintext"], "aes.plaintext").as_bytes();
        let iv: [u8; 16] = unhex(s(&aes["cbc_pad_iv"], "cbc_pad_iv")).try_into().expect("16-byte IV");
        let aad = unhex(s(&aes["gcm_aad"], "gcm_aad"));
        let mut decrypted = 0;
        for k in live_keys(&m).into_iter().filter(|k| k["kty"] == "oct") {
            let name = s(&k["name"], "name");
            for v in versions(k) {
                let key = object_of(&t, ObjectClass::SECRET_KEY, v);
                let cbc = unhex(s(&v["aes_cbc_pad"], "aes_cbc_pad"));
                let out = ok(t.session.decrypt(&Mechanism::AesCbcPad(iv), key, &cbc), &format!("C_Decrypt(CKM_AES_CBC_PAD) with {name}"));
                assert_eq!(out, plaintext, "{name}: AES-CBC-PAD decrypts to the recorded plaintext");
                let mut gcm_iv = unhex(s(&aes["gcm_iv"], "gcm_iv"));
                let gcm = unhex(s(&v["aes_gcm"], "aes_gcm"));
                let params = GcmParams::new(&mut gcm_iv, &aad, 128.into()).expect("GCM params");
                let out = ok(t.session.decrypt(&Mechanism::AesGcm(params), key, &gcm), &format!("C_Decrypt(CKM_AES_GCM) with {name}"));
                assert_eq!(out, plaintext, "{name}: AES-GCM decrypts to the recorded plaintext");
                decrypted += 1;
            }
        }
        assert_eq!(decrypted, 2, "both AES keys (C ABI and CLI) decrypted");
    }
}

p11_test! {
    fn rotated_key_from_v3_release_lists_every_version() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let k = key(&m, "rotated");
        let listed = cli_json(&m, &["key", "list-versions", "--name", "rotated"]);
        let listed = listed.as_array().expect("list-versions prints a list");
        let got: Vec<(String, bool)> = listed
            .iter()
            .map(|v| {
                let kid = s(&v["kid"], "kid");
                (kid.rsplit('/').next().unwrap_or_default().to_string(), v["current"] == true)
            })
            .collect();
        let want: Vec<(String, bool)> = versions(k)
            .iter()
            .map(|v| (s(&v["version"], "version").to_string(), v["current"] == true))
            .collect();
        assert_eq!(want.len(), 3, "the fixture's rotated key has three versions");
        assert_eq!(got, want, "every version, in order, the last one current");
    }
}

p11_test! {
    fn soft_deleted_key_from_v3_release_is_listed_and_recovers() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let k = key(&m, "deleted");
        let version = s(&versions(k)[0]["version"], "version");
        let deleted = cli_json(&m, &["key", "list-deleted"]);
        let entry = deleted
            .as_array()
            .expect("list-deleted prints a list")
            .iter()
            .find(|d| d["recoveryId"].as_str().is_some_and(|r| r.ends_with("/deletedkeys/deleted")))
            .unwrap_or_else(|| panic!("list-deleted must list the fixture's deleted key: {deleted}"));
        assert!(
            s(&entry["key"]["kid"], "kid").ends_with(&format!("/keys/deleted/{version}")),
            "the deleted key's kid names its version: {entry}"
        );
        let r = cli(&m, &["key", "recover", "--name", "deleted"]);
        assert_eq!(r.code, 0, "key recover: {}", r.stderr);
        let t = open(&m);
        assert_eq!(sign_with_every_version(&t, k), 1, "the recovered key signs");
    }
}

p11_test! {
    fn rotation_policy_from_v3_release_reads_back() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let rp = &m["rotation_policy"];
        let name = s(&rp["key"], "rotation_policy.key");
        let shown = cli_json(&m, &["key", "rotation-policy", "show", "--name", name]);
        assert_eq!(shown, rp["policy"], "the policy as the release stored it");
    }
}

p11_test! {
    fn attestation_key_from_v3_release_still_attests() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let pem = s(&m["attestation_key_pem"], "attestation_key_pem");
        let token = cli_json(&m, &["token", "show"]);
        assert_eq!(token["attestationKey"], pem, "the attestation key made at init");
        let dir = tempfile::tempdir().expect("temp dir");
        let statement = dir.path().join("cli-p256.att.json");
        let pem_file = dir.path().join("attest.pem");
        fs::write(&pem_file, pem).expect("write the recorded attestation key");
        let r = cli(&m, &["key", "attest", "--name", "cli-p256", "--file", statement.to_str().unwrap()]);
        assert_eq!(r.code, 0, "key attest: {}", r.stderr);
        let r = cli_with(
            &["attest", "verify", "--file", statement.to_str().unwrap(), "--public-key", pem_file.to_str().unwrap()],
            None,
        );
        assert_eq!(r.code, 0, "attest verify with the recorded attestation key: {}", r.stderr);
    }
}

p11_test! {
    fn audit_log_from_v3_release_reads_back() {
        softmhsm_only!("the fixture is a softmhsm store");
        let m = install();
        let old = fs::read_to_string(Path::new(FIXTURE).join("audit-softmhsm.jsonl")).expect("read the fixture's audit log");
        let old: Vec<&str> = old.lines().collect();
        assert_eq!(Some(old.len() as u64), m["audit_lines"].as_u64(), "the manifest's line count");
        let r = cli_with(&["audit"], None);
        assert_eq!(r.code, 0, "softmhsm audit: {}", r.stderr);
        let printed: Vec<&str> = r.stdout.lines().collect();
        assert!(printed.len() >= old.len(), "every old line printed");
        assert_eq!(&printed[..old.len()], &old[..], "the old lines, as written");
        let r = cli_with(&["audit", "--operation", "KeyRotate"], None);
        assert_eq!(r.code, 0, "softmhsm audit --operation KeyRotate: {}", r.stderr);
        assert_eq!(r.stdout.lines().count(), 2, "the fixture's two rotations: {}", r.stdout);
        let r = cli_with(&["audit", "--output", "table"], None);
        assert_eq!(r.code, 0, "softmhsm audit --output table: {}", r.stderr);
        assert!(r.stdout.lines().count() >= old.len() + 2, "a header, a rule and a row per line");
    }
}

p11_test! {
    fn store_from_v3_release_migrates_once_and_reopens_the_same() {
        softmhsm_only!("the fixture is a softmhsm store");
        let record = store_dir().join("schema-after-first-open");
        if phase().as_deref() == Some("again") {
            // A second process on the store the first one migrated.
            let m = manifest();
            let after_first: u32 = fs::read_to_string(&record).expect("the first open's schema version").parse().expect("a number");
            let t = open(&m);
            assert!(sign_with_every_key(&t, &m) >= 12, "every key signs after the second open");
            drop(t);
            assert_eq!(schema_version(), after_first, "the second open migrates nothing");
            let listed = cli_json(&m, &["key", "list-versions", "--name", "rotated"]);
            assert_eq!(listed.as_array().map(Vec::len), Some(3), "still three versions");
            return;
        }
        let m = install();
        assert_eq!(schema_version(), 3, "the fixture before any open");
        let t = open(&m);
        let signed = sign_with_every_key(&t, &m);
        drop(t);
        let after_first = schema_version();
        assert!(after_first >= 3, "the first open leaves schema version {after_first}");
        fs::write(&record, after_first.to_string()).expect("record the schema version");
        respawn_phase(concat!(module_path!(), "::store_from_v3_release_migrates_once_and_reopens_the_same"), "again");
        assert!(signed >= 12, "every key signed after the first open");
    }
}
