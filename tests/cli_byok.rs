//! `softmhsm key import` (PEM and BYOK) and `key download`, run as a
//! subprocess on each test's own token directory; the imported keys are used
//! through the C ABI and their output checked by the `openssl` command with
//! the original keys.

#[macro_use]
mod common;
mod byok_support;

use byok_support::*;
use common::cli::*;
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki_sys::*;
use std::path::Path;

const MSG: &[u8] = b"signed by a key the CLI imported";

fn init() {
    json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
}

/// The kid of the current version of `name`.
fn kid(name: &str) -> String {
    json(&["key", "show", "--name", name])["key"]["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many key versions the store holds (every name, every version).
fn versions() -> usize {
    json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let name = k["kid"]
                .as_str()
                .unwrap()
                .split('/')
                .nth(4)
                .unwrap()
                .to_string();
            json(&["key", "list-versions", "--name", &name])
                .as_array()
                .unwrap()
                .len()
        })
        .sum()
}

/// A KEK made by the CLI, and its public key downloaded as PEM into `dir`.
fn kek(dir: &Path) -> (String, std::path::PathBuf) {
    json(&[
        "key", "create", "--name", "KEK", "--kty", "RSA-HSM", "--size", "2048", "--ops", "import",
    ]);
    let pem = dir.join("kek.pem");
    json(&[
        "key",
        "download",
        "--name",
        "KEK",
        "--file",
        pem.to_str().unwrap(),
    ]);
    (kid("KEK"), pem)
}

/// Write a BYOK blob for `material` made with openssl; returns its path.
fn blob(dir: &Path, kid: &str, kek_pub: &Path, material: &Path, name: &str) -> String {
    let ct = openssl_rsa_aes_wrap(dir, kek_pub, material);
    let path = dir.join(format!("{name}.byok.json"));
    std::fs::write(&path, byok_json(kid, &ct)).unwrap();
    path.to_str().unwrap().to_string()
}

/// The private (or secret) key of the current version of `name`, through the C ABI.
fn key_of(t: &Token, name: &str, class: ObjectClass) -> ObjectHandle {
    let found = t.find(&[
        Attribute::Class(class),
        Attribute::Label(name.as_bytes().to_vec()),
    ]);
    assert_eq!(found.len(), 1, "one {class:?} named {name}");
    found[0]
}

/// Sign `MSG` with the token key `name` and check it with openssl and `public`.
fn token_signs_as(t: &Token, dir: &Path, name: &str, public: &Path, ec: bool) {
    let k = key_of(t, name, ObjectClass::PRIVATE_KEY);
    assert!(
        !t.attr_bool(k, CKA_LOCAL, "CKA_LOCAL"),
        "imported keys are not local"
    );
    assert!(!t.attr_bool(k, CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE"));
    assert!(!t.attr_bool(k, CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"));
    let sig = if ec {
        ecdsa_raw_to_der(&ok(
            t.session.sign(&Mechanism::EcdsaSha256, k, MSG),
            "C_Sign(ECDSA)",
        ))
    } else {
        ok(
            t.session.sign(&Mechanism::Sha256RsaPkcs, k, MSG),
            "C_Sign(RSA)",
        )
    };
    assert!(
        openssl_verifies(dir, public, "sha256", MSG, &sig),
        "OpenSSL verifies {name}'s signature with the original public key"
    );
}

p11_test! {
    fn kek_is_import_only_and_rsa_only() {
        init();
        let r = json(&["key", "create", "--name", "KEK", "--kty", "RSA-HSM", "--size", "3072", "--ops", "import"]);
        assert_eq!(r["key"]["key_ops"], serde_json::json!(["import"]));
        refused(&["key", "create", "--name", "K2", "--kty", "RSA", "--ops", "import", "sign"], 1, "'import' excludes every other operation");
        refused(&["key", "create", "--name", "K3", "--kty", "EC", "--ops", "import"], 1, "only RSA keys");
        refused(&["key", "update", "--name", "KEK", "--ops", "sign"], 1, "cannot be added to or removed");
        json(&["key", "create", "--name", "plain", "--kty", "RSA"]);
        refused(&["key", "update", "--name", "plain", "--ops", "import"], 1, "cannot be added to or removed");
        // Through PKCS#11 the KEK signs and decrypts nothing.
        let t = Token::reopen_existing();
        let k = key_of(&t, "KEK", ObjectClass::PRIVATE_KEY);
        assert_rv(t.session.sign(&Mechanism::Sha256RsaPkcs, k, MSG), CKR_KEY_FUNCTION_NOT_PERMITTED, "KEK sign");
        assert_rv(t.session.decrypt(&Mechanism::RsaPkcs, k, &[0u8; 384]), CKR_KEY_FUNCTION_NOT_PERMITTED, "KEK decrypt");
        // And rotating keeps it a KEK.
        assert_eq!(json(&["key", "rotate", "--name", "KEK"])["key"]["key_ops"], serde_json::json!(["import"]));
    }
}

p11_test! {
    fn download_writes_spki_pem_that_openssl_reads() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        json(&["key", "create", "--name", "web", "--kty", "RSA", "--size", "3072"]);
        json(&["key", "create", "--name", "chain", "--kty", "EC", "--curve", "P-384"]);
        let t = Token::reopen_existing();
        for name in ["web", "chain"] {
            let pem = dir.path().join(format!("{name}.pem"));
            let r = json(&["key", "download", "--name", name, "--file", pem.to_str().unwrap()]);
            assert_eq!(r["kid"].as_str().unwrap(), kid(name));
            let der = dir.path().join(format!("{name}.der"));
            openssl(dir.path(), &["pkey", "-pubin", "-in", pem.to_str().unwrap(), "-outform", "DER", "-out", der.to_str().unwrap()]);
            let public = key_of(&t, name, ObjectClass::PUBLIC_KEY);
            assert_eq!(std::fs::read(&der).unwrap(), t.attr(public, CKA_PUBLIC_KEY_INFO, "CKA_PUBLIC_KEY_INFO"), "{name}: openssl reads the token's public key");
        }
        // An older version by --version; an existing file is never overwritten.
        let old = kid("web").rsplit('/').next().unwrap().to_string();
        json(&["key", "rotate", "--name", "web"]);
        let pem = dir.path().join("web-old.pem");
        json(&["key", "download", "--name", "web", "--version", &old, "--file", pem.to_str().unwrap()]);
        assert_eq!(std::fs::read(&pem).unwrap(), std::fs::read(dir.path().join("web.pem")).unwrap());
        refused(&["key", "download", "--name", "web", "--file", pem.to_str().unwrap()], 1, "cannot create");
        json(&["key", "create", "--name", "data", "--kty", "oct"]);
        let aes = dir.path().join("aes.pem");
        refused(&["key", "download", "--name", "data", "--file", aes.to_str().unwrap()], 1, "no public key");
        assert!(!aes.exists());
    }
}

p11_test! {
    fn pem_import_gives_keys_that_sign_as_the_originals() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rsa = target_key(d, "rsa", Kind::Rsa(2048));
        let ec = target_key(d, "ec", Kind::Ec("prime256v1"));
        // Traditional forms too: PKCS#1 RSA and SEC1 EC (after an EC PARAMETERS block).
        openssl(d, &["rsa", "-in", "rsa.pem", "-traditional", "-out", "rsa-trad.pem"]);
        openssl(d, &["ecparam", "-name", "secp256k1", "-genkey", "-out", "k1.pem"]);
        openssl(d, &["pkey", "-in", "k1.pem", "-pubout", "-out", "k1.pub.pem"]);
        for (name, file) in [("rsa", &rsa.pem), ("ec", &ec.pem)] {
            let r = json(&["key", "import", "--name", name, "--file", file.to_str().unwrap(), "--tags", "origin=pem"]);
            assert_eq!(r["tags"]["origin"], "pem");
        }
        json(&["key", "import", "--name", "rsa-trad", "--file", d.join("rsa-trad.pem").to_str().unwrap(), "--ops", "sign", "verify"]);
        json(&["key", "import", "--name", "k1", "--file", d.join("k1.pem").to_str().unwrap()]);
        let t = Token::reopen_existing();
        token_signs_as(&t, d, "rsa", &rsa.public, false);
        token_signs_as(&t, d, "rsa-trad", &rsa.public, false);
        token_signs_as(&t, d, "ec", &ec.public, true);
        let k = key_of(&t, "rsa-trad", ObjectClass::PRIVATE_KEY);
        assert!(!t.attr_bool(k, CKA_DECRYPT, "CKA_DECRYPT"), "--ops sign verify only");
        // secp256k1 with ECDSA-SHA256 as ES256K.
        token_signs_as(&t, d, "k1", &d.join("k1.pub.pem"), true);
        // Sizes and curves outside the Managed HSM's, encrypted keys, a missing file.
        openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "small.pem"]);
        refused(&["key", "import", "--name", "small", "--file", d.join("small.pem").to_str().unwrap()], 1, "RSA key size");
        openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp224r1", "-out", "p224.pem"]);
        refused(&["key", "import", "--name", "p224", "--file", d.join("p224.pem").to_str().unwrap()], 1, "unsupported curve");
        openssl(d, &["pkcs8", "-topk8", "-in", "ec.pem", "-passout", "pass:secret", "-out", "enc.pem"]);
        refused(&["key", "import", "--name", "enc", "--file", d.join("enc.pem").to_str().unwrap()], 1, "encrypted");
        refused(&["key", "import", "--name", "none", "--file", d.join("absent.pem").to_str().unwrap()], 1, "cannot read");
        refused(&["key", "import", "--name", "both", "--file", "a", "--byok-file", "b"], 2, "either --file");
    }
}

p11_test! {
    fn byok_import_gives_keys_that_sign_and_encrypt_as_the_originals() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (kid, kek_pub) = kek(d);
        let rsa = target_key(d, "rsa", Kind::Rsa(3072));
        let ec = target_key(d, "ec", Kind::Ec("prime256v1"));
        let aes = target_key(d, "aes", Kind::Aes(256));
        let b = blob(d, &kid, &kek_pub, &rsa.material, "rsa");
        let r = json(&["key", "import", "--name", "byok-rsa", "--byok-file", &b, "--kty", "RSA-HSM"]);
        assert_eq!(r["key"]["kty"], "RSA-HSM");
        let b = blob(d, &kid, &kek_pub, &ec.material, "ec");
        // No --kty: told by the content.
        let r = json(&["key", "import", "--name", "byok-ec", "--byok-file", &b, "--enabled", "true"]);
        assert_eq!(r["key"]["crv"], "P-256");
        let b = blob(d, &kid, &kek_pub, &aes.material, "aes");
        let r = json(&["key", "import", "--name", "byok-aes", "--byok-file", &b, "--kty", "oct", "--ops", "encrypt", "decrypt"]);
        assert_eq!(r["key"]["key_ops"], serde_json::json!(["encrypt", "decrypt"]));
        let t = Token::reopen_existing();
        token_signs_as(&t, d, "byok-rsa", &rsa.public, false);
        token_signs_as(&t, d, "byok-ec", &ec.public, true);
        // The token encrypts with the imported AES key; openssl decrypts with the original bytes.
        let k = key_of(&t, "byok-aes", ObjectClass::SECRET_KEY);
        assert!(!t.attr_bool(k, CKA_LOCAL, "CKA_LOCAL"));
        let iv = [0x11u8; 16];
        let ct = ok(t.session.encrypt(&Mechanism::AesCbcPad(iv), k, MSG), "C_Encrypt(AES-CBC-PAD)");
        std::fs::write(d.join("ct.bin"), &ct).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let key_hex = hex(&std::fs::read(&aes.material).unwrap());
        openssl(d, &["enc", "-d", "-aes-256-cbc", "-K", &key_hex, "-iv", &hex(&iv), "-in", "ct.bin", "-out", "pt.bin"]);
        assert_eq!(std::fs::read(d.join("pt.bin")).unwrap(), MSG, "openssl decrypts with the original key");
    }
}

p11_test! {
    fn bad_byok_blobs_are_refused_and_write_nothing() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (kid, kek_pub) = kek(d);
        json(&["key", "create", "--name", "ordinary", "--kty", "RSA"]);
        let ordinary_kid = self::kid("ordinary");
        let ordinary_pub = d.join("ordinary.pem");
        json(&["key", "download", "--name", "ordinary", "--file", ordinary_pub.to_str().unwrap()]);
        let aes = target_key(d, "aes", Kind::Aes(256));
        let ct = openssl_rsa_aes_wrap(d, &kek_pub, &aes.material);
        let write = |name: &str, text: &str| {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        };
        let before = versions();
        // A ciphertext with one bit flipped, in the RSA part and in the KWP part.
        for i in [10, ct.len() - 3] {
            let mut bad = ct.clone();
            bad[i] ^= 0x20;
            let f = write("tampered.json", &byok_json(&kid, &bad));
            refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "does not open with key-exchange key 'KEK'");
        }
        // A kid no key has; a kid of another pool.
        let f = write("unknown.json", &byok_json(&format!("softmhsm://{TOKEN_LABEL}/keys/nokey/00"), &ct));
        refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "unknown key-exchange key");
        let f = write("foreign.json", &byok_json(&kid.replace(TOKEN_LABEL, "elsewhere"), &ct));
        refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "unknown key-exchange key");
        // A blob made for a key that is not a KEK is refused before anything is opened.
        let ct2 = openssl_rsa_aes_wrap(d, &ordinary_pub, &aes.material);
        let f = write("not-kek.json", &byok_json(&ordinary_kid, &ct2));
        refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "not a key-exchange key");
        // Not JSON, not base64url, another scheme.
        let f = write("junk.json", "this is not json");
        refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "not a BYOK blob");
        let f = write("b64.json", &byok_json(&kid, &ct).replace("\"ciphertext\":\"", "\"ciphertext\":\"*"));
        refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "not base64url");
        let f = write("enc.json", &byok_json(&kid, &ct).replace("CKM_RSA_AES_KEY_WRAP", "A256KW"));
        refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "header.enc");
        // The blob holds AES, not what --kty says.
        let f = write("good.json", &byok_json(&kid, &ct));
        refused(&["key", "import", "--name", "x", "--byok-file", &f, "--kty", "RSA"], 1, "not an RSA or EC private key");
        // A disabled KEK imports nothing.
        json(&["key", "update", "--name", "KEK", "--enabled", "false"]);
        refused(&["key", "import", "--name", "x", "--byok-file", &f], 1, "disabled");
        assert_eq!(versions(), before, "nothing was written");
        json(&["key", "update", "--name", "KEK", "--enabled", "true"]);
        json(&["key", "import", "--name", "x", "--byok-file", &f]);
        assert_eq!(versions(), before + 1);
    }
}
