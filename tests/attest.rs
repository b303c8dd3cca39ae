//! Key attestation: `softmhsm token show`, `key attest` and `attest verify`,
//! run as subprocesses on each test's own token (and the token made through the
//! C ABI). Statements are checked by independent verifiers: the `p256` crate
//! and, when it is installed, `openssl dgst -sha256 -verify`.

#[macro_use]
mod common;

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use common::cli::{assert_refused, cli, cli_env, json, Run};
use common::*;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;
use std::path::Path;

/// Run the CLI (fixture user PIN in `$SOFTMHSM_PIN`), optionally on another token dir.
fn cli_in(dir: Option<&Path>, args: &[&str]) -> Run {
    match dir {
        Some(d) => cli_env(
            args,
            Some(USER_PIN),
            &[("SOFTMHSM_DIR", d.to_str().expect("UTF-8 token dir"))],
        ),
        None => cli(args),
    }
}

#[track_caller]
fn json_in(dir: Option<&Path>, args: &[&str]) -> Value {
    let r = cli_in(dir, args);
    assert_eq!(r.code, 0, "softmhsm {args:?} failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}", r.stdout))
}

fn init_in(dir: Option<&Path>) {
    json_in(dir, &["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
}

/// A scratch file path in the test's temp dir.
fn scratch(name: &str) -> String {
    store_dir()
        .parent()
        .unwrap()
        .join(name)
        .display()
        .to_string()
}

/// `key attest --file F`; returns the document and the file.
fn attest_to_file(name: &str, file: &str) -> Value {
    let doc = json(&["key", "attest", "--name", name, "--file", &scratch(file)]);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(scratch(file)).unwrap()).unwrap();
    assert_eq!(doc, written, "the file holds what was printed");
    doc
}

/// The token's attestation public key (SPKI DER) from `token show`.
fn token_spki(dir: Option<&Path>) -> Vec<u8> {
    let pem = json_in(dir, &["token", "show"])["attestationKey"]
        .as_str()
        .expect("token show prints the attestation key PEM")
        .to_string();
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    Base64::decode_vec(&b64).expect("PEM body is base64")
}

/// The bytes the signature covers: compact JSON with sorted keys, as
/// `serde_json` writes a `Value` (its map is a BTreeMap).
fn signed_bytes(doc: &Value) -> Vec<u8> {
    serde_json::to_vec(&doc["statement"]).unwrap()
}

/// Verify a document with the `p256` crate.
fn p256_verifies(doc: &Value, spki: &[u8]) -> bool {
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).expect("P-256 SPKI");
    let raw = Base64UrlUnpadded::decode_vec(doc["signature"].as_str().unwrap()).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&raw).expect("64-byte r||s");
    key.verify(&signed_bytes(doc), &sig).is_ok()
}

/// `attest verify`; returns the run.
fn verify(file: &str, extra: &[&str]) -> Run {
    let mut args = vec!["attest", "verify", "--file", file];
    args.extend(extra);
    cli(&args)
}

p11_test! {
    fn ec_statement_verifies_with_p256_and_openssl() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_in(None);
        let shown = json(&["key", "create", "--name", "sig", "--kty", "EC", "--tags", "env=prod"]);
        let doc = attest_to_file("sig", "sig.att.json");
        let s = &doc["statement"];
        assert_eq!(doc["alg"], "ES256");
        for field in ["kid", "kty", "crv", "x", "y", "key_ops"] {
            assert_eq!(s[field], shown["key"][field], "{field} as key show says");
        }
        assert_eq!(s["local"], true);
        assert_eq!(s["extractable"], false);
        assert_eq!(s["enabled"], true);
        assert_eq!(s["tags"]["env"], "prod");
        assert_eq!(s["token"], TOKEN_LABEL);
        assert!(s["issued"].as_i64().unwrap() >= s["created"].as_i64().unwrap());
        let spki = token_spki(None);
        assert_eq!(Base64::decode_vec(doc["attestation_key"].as_str().unwrap()).unwrap(), spki);
        assert!(p256_verifies(&doc, &spki), "p256 verifies the statement");
        let r = verify(&scratch("sig.att.json"), &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);

        if !tool("openssl") {
            return;
        }
        let raw = Base64UrlUnpadded::decode_vec(doc["signature"].as_str().unwrap()).unwrap();
        let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
        std::fs::write(scratch("sig.der"), der.as_bytes()).unwrap();
        std::fs::write(scratch("statement"), signed_bytes(&doc)).unwrap();
        let pem = json(&["token", "show"])["attestationKey"].as_str().unwrap().to_string();
        std::fs::write(scratch("attest.pem"), pem).unwrap();
        let out = run_cmd(
            "openssl",
            &["dgst", "-sha256", "-verify", &scratch("attest.pem"), "-signature", &scratch("sig.der"), &scratch("statement")]
                .map(Into::into),
        );
        assert!(out.contains("Verified OK"), "openssl says: {out}");
    }
}

p11_test! {
    fn rsa_statement_has_n_and_e_and_aes_statement_has_only_its_size() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_in(None);
        let rsa = json(&["key", "create", "--name", "web", "--kty", "RSA", "--size", "2048"]);
        json(&["key", "create", "--name", "data", "--kty", "oct", "--size", "128"]);
        let spki = token_spki(None);
        let doc = attest_to_file("web", "web.json");
        assert_eq!(doc["statement"]["n"], rsa["key"]["n"]);
        assert_eq!(doc["statement"]["e"], rsa["key"]["e"]);
        assert_eq!(doc["statement"]["key_size"], 2048);
        assert!(p256_verifies(&doc, &spki));
        let doc = attest_to_file("data", "data.json");
        let s = &doc["statement"];
        assert_eq!(s["kty"], "oct-HSM");
        assert_eq!(s["key_size"], 128);
        for absent in ["n", "e", "crv", "x", "y"] {
            assert!(s.get(absent).is_none(), "an AES statement has no {absent}");
        }
        assert!(p256_verifies(&doc, &spki));
        assert_eq!(verify(&scratch("data.json"), &[]).code, 0);
    }
}

p11_test! {
    fn forged_statements_are_refused() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_in(None);
        json(&["key", "create", "--name", "a", "--kty", "EC"]);
        json(&["key", "create", "--name", "b", "--kty", "EC"]);
        let doc = attest_to_file("a", "a.json");
        let other = attest_to_file("b", "b.json");
        let write = |name: &str, v: &Value| {
            std::fs::write(scratch(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
            scratch(name)
        };

        let mut changed = doc.clone();
        changed["statement"]["extractable"] = Value::Bool(true);
        assert_refused(&verify(&write("changed.json", &changed), &[]), 1, "modified");

        let mut tagged = doc.clone();
        tagged["statement"]["tags"]["owner"] = "mallory".into();
        assert_refused(&verify(&write("tagged.json", &tagged), &[]), 1, "modified");

        let mut swapped = doc.clone();
        swapped["signature"] = other["signature"].clone();
        assert_refused(&verify(&write("swapped.json", &swapped), &[]), 1, "modified");

        let mut garbled = doc.clone();
        garbled["signature"] = "AAAA".into();
        assert_refused(&verify(&write("garbled.json", &garbled), &[]), 1, "64 bytes");

        let mut hs = doc.clone();
        hs["alg"] = "HS256".into();
        assert_refused(&verify(&write("hs.json", &hs), &[]), 1, "unsupported alg");

        // Reordered and re-indented, the statement still verifies (canonical form).
        std::fs::write(scratch("compact.json"), serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(verify(&scratch("compact.json"), &[]).code, 0);
    }
}

p11_test! {
    fn another_tokens_statement_is_refused_unless_its_key_is_given() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_in(None);
        let other_dir = store_dir().parent().unwrap().join("other");
        init_in(Some(&other_dir));
        json_in(Some(&other_dir), &["key", "create", "--name", "k", "--kty", "EC"]);
        let file = scratch("other.json");
        json_in(Some(&other_dir), &["key", "attest", "--name", "k", "--file", &file]);
        // Same label, same key name: only the attestation key tells them apart.
        assert_refused(&verify(&file, &[]), 1, "another attestation key");
        let pem = json_in(Some(&other_dir), &["token", "show"])["attestationKey"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::write(scratch("other.pem"), &pem).unwrap();
        let r = verify(&file, &["--public-key", &scratch("other.pem")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        // And this token's statements fail under the other token's key.
        json(&["key", "create", "--name", "k", "--kty", "EC"]);
        let mine = scratch("mine.json");
        json(&["key", "attest", "--name", "k", "--file", &mine]);
        assert_refused(&verify(&mine, &["--public-key", &scratch("other.pem")]), 1, "another attestation key");
    }
}

p11_test! {
    fn pkcs11_tokens_get_an_attestation_key_and_imports_are_not_local() {
        softmhsm_only!("attestation is softmhsm's");
        let t = Token::fresh();
        t.keypair(Kp::Ec(OID_P256), "generated");
        let imported = vec![
            class(ObjectClass::SECRET_KEY),
            key_type(KeyType::AES),
            Attribute::Token(true),
            Attribute::Encrypt(true),
            Attribute::Label(b"imported".to_vec()),
            Attribute::Value(vec![7u8; 32]),
        ];
        ok(t.session.create_object(&imported), "C_CreateObject(AES)");
        let spki = token_spki(None);
        let generated = json(&["key", "attest", "--name", "generated"]);
        assert_eq!(generated["statement"]["local"], true);
        assert!(p256_verifies(&generated, &spki));
        let imported = json(&["key", "attest", "--name", "imported"]);
        assert_eq!(imported["statement"]["local"], false, "an imported key is not CKA_LOCAL");
        assert!(p256_verifies(&imported, &spki));
    }
}

p11_test! {
    fn an_older_token_gets_its_key_on_the_first_attest() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_in(None);
        json(&["key", "create", "--name", "k", "--kty", "EC"]);
        let db = rusqlite::Connection::open(store_dir().join("softmhsm.db")).unwrap();
        db.execute("UPDATE token SET attest_sealed = NULL, attest_public = NULL", []).unwrap();
        drop(db);
        assert_eq!(json(&["token", "show"])["attestationKey"], Value::Null);
        let r = cli(&["attest", "verify", "--file", "/nonexistent"]);
        assert_eq!(r.code, 1);
        let doc = attest_to_file("k", "k.json");
        let spki = token_spki(None);
        assert!(p256_verifies(&doc, &spki));
        assert_eq!(verify(&scratch("k.json"), &[]).code, 0);
        // Kept: a second statement is signed by the same key.
        let again = json(&["key", "attest", "--name", "k"]);
        assert_eq!(again["attestation_key"], doc["attestation_key"]);
    }
}

p11_test! {
    fn an_older_version_can_be_attested() {
        softmhsm_only!("the CLI works on softmhsm's store");
        init_in(None);
        let first = json(&["key", "create", "--name", "k", "--kty", "EC"]);
        json(&["key", "rotate", "--name", "k"]);
        let kid = first["key"]["kid"].as_str().unwrap();
        let version = kid.rsplit('/').next().unwrap();
        let doc = json(&["key", "attest", "--name", "k", "--version", version]);
        assert_eq!(doc["statement"]["kid"], kid);
        assert!(p256_verifies(&doc, &token_spki(None)));
        let r = cli(&["key", "attest", "--name", "nosuch"]);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("unknown key"), "{}", r.stderr);
    }
}
