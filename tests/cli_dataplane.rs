//! az's data-plane verbs (`key sign | verify | encrypt | decrypt | wrap |
//! unwrap | random`) run as a subprocess on each test's own token; signatures
//! and ciphertexts are checked by the `openssl` command with `key download`'s
//! public key.

#[macro_use]
mod common;
mod byok_support;

use base64ct::{Base64UrlUnpadded, Encoding};
use byok_support::*;
use common::cli::*;
use common::*;
use std::path::{Path, PathBuf};

const MSG: &[u8] = b"signed through the data plane";

fn init() {
    json(&["init", "--label", TOKEN_LABEL, "--so-pin", SO_PIN]);
}

fn b64(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

fn unb64(s: &serde_json::Value) -> Vec<u8> {
    Base64UrlUnpadded::decode_vec(s.as_str().expect("a base64url string")).unwrap()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).to_vec()
}

/// `key download`'s public key of `name`, as a PEM file in `dir`.
fn public_pem(dir: &Path, name: &str) -> PathBuf {
    let pem = dir.join(format!("{name}.pub.pem"));
    json(&[
        "key",
        "download",
        "--name",
        name,
        "--file",
        pem.to_str().unwrap(),
    ]);
    pem
}

/// A raw `r || s` ECDSA signature as DER (what openssl verifies).
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let x = &x[x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1)..];
        let mut v = vec![0x02];
        if x[0] & 0x80 != 0 {
            v.extend([x.len() as u8 + 1, 0]);
        } else {
            v.push(x.len() as u8);
        }
        v.extend(x);
        v
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [int(r), int(s)].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

/// Whether openssl accepts `sig` over `MSG`'s SHA-256 digest with `pem`.
fn openssl_verifies_digest(dir: &Path, pem: &Path, sig: &[u8], pss: bool) -> bool {
    std::fs::write(dir.join("digest.bin"), sha256(MSG)).unwrap();
    std::fs::write(dir.join("sig.bin"), sig).unwrap();
    let mut args = vec![
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        pem.to_str().unwrap(),
        "-in",
        "digest.bin",
        "-sigfile",
        "sig.bin",
        "-pkeyopt",
        "digest:sha256",
    ];
    if pss {
        args.extend([
            "-pkeyopt",
            "rsa_padding_mode:pss",
            "-pkeyopt",
            "rsa_pss_saltlen:32",
        ]);
    }
    openssl_ok(dir, &args)
}

/// Sign `MSG`'s SHA-256 digest with `name` and `alg`; the signature bytes.
fn sign(name: &str, alg: &str) -> Vec<u8> {
    let r = json(&[
        "key",
        "sign",
        "--name",
        name,
        "--algorithm",
        alg,
        "--digest",
        &b64(&sha256(MSG)),
    ]);
    assert!(
        r["kid"]
            .as_str()
            .unwrap()
            .contains(&format!("/keys/{name}/")),
        "{r}"
    );
    unb64(&r["value"])
}

p11_test! {
    fn sign_gives_signatures_openssl_verifies_with_the_downloaded_key() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        json(&["key", "create", "--name", "rsa", "--kty", "RSA"]);
        json(&["key", "create", "--name", "ec", "--kty", "EC", "--curve", "P-256"]);
        let rsa = public_pem(d, "rsa");
        let ec = public_pem(d, "ec");
        assert!(openssl_verifies_digest(d, &rsa, &sign("rsa", "RS256"), false), "RS256");
        assert!(openssl_verifies_digest(d, &rsa, &sign("rsa", "PS256"), true), "PS256");
        assert!(openssl_verifies_digest(d, &ec, &ecdsa_der(&sign("ec", "ES256")), false), "ES256");
    }
}

p11_test! {
    fn digest_length_and_key_must_fit_the_algorithm() {
        init();
        json(&["key", "create", "--name", "ec", "--kty", "EC", "--curve", "P-256"]);
        let digest = b64(&sha256(MSG));
        refused(&["key", "sign", "--name", "ec", "--algorithm", "ES384", "--digest", &digest], 1, "48 bytes");
        refused(&["key", "sign", "--name", "ec", "--algorithm", "ES512", "--digest", &b64(&[0; 64])], 1, "does not fit");
        refused(&["key", "sign", "--name", "ec", "--algorithm", "RS256", "--digest", &digest], 1, "does not fit");
        refused(&["key", "sign", "--name", "ec", "--algorithm", "HS256", "--digest", &digest], 1, "unknown");
        refused(&["key", "sign", "--name", "ec", "--algorithm", "ES256", "--digest", "not*base64"], 2, "base64url");
    }
}

p11_test! {
    fn verify_answers_true_and_false() {
        init();
        json(&["key", "create", "--name", "ec", "--kty", "EC"]);
        let digest = b64(&sha256(MSG));
        let mut sig = sign("ec", "ES256");
        let verify = |sig: &[u8]| {
            json(&["key", "verify", "--name", "ec", "--algorithm", "ES256", "--digest", &digest, "--signature", &b64(sig)])["value"].clone()
        };
        assert_eq!(verify(&sig), serde_json::json!(true));
        sig[5] ^= 1;
        assert_eq!(verify(&sig), serde_json::json!(false));
        assert_eq!(verify(&sig[..10]), serde_json::json!(false), "a short signature is false");
    }
}

p11_test! {
    fn decrypt_opens_what_openssl_encrypted_with_rsa_oaep_256() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        json(&["key", "create", "--name", "rsa", "--kty", "RSA"]);
        let pem = public_pem(d, "rsa");
        std::fs::write(d.join("pt.bin"), MSG).unwrap();
        openssl(d, &[
            "pkeyutl", "-encrypt", "-pubin", "-inkey", pem.to_str().unwrap(), "-in", "pt.bin", "-out", "ct.bin",
            "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256",
        ]);
        let ct = std::fs::read(d.join("ct.bin")).unwrap();
        let r = json(&["key", "decrypt", "--name", "rsa", "--algorithm", "RSA-OAEP-256", "--value", &b64(&ct)]);
        assert_eq!(unb64(&r["value"]), MSG);
        // And the CLI's own encryption (with the public key) round-trips.
        let r = json(&["key", "encrypt", "--name", "rsa", "--algorithm", "RSA-OAEP", "--value", &b64(MSG)]);
        let r = json(&["key", "decrypt", "--name", "rsa", "--algorithm", "RSA-OAEP", "--value", r["value"].as_str().unwrap()]);
        assert_eq!(unb64(&r["value"]), MSG);
    }
}

p11_test! {
    fn aes_gcm_round_trips_and_a_tampered_tag_is_refused() {
        init();
        json(&["key", "create", "--name", "aes", "--kty", "oct", "--size", "256"]);
        let aad = b64(b"header");
        let e = json(&["key", "encrypt", "--name", "aes", "--algorithm", "A256GCM", "--value", &b64(MSG), "--aad", &aad]);
        assert_eq!(unb64(&e["iv"]).len(), 12, "{e}");
        assert_eq!(unb64(&e["tag"]).len(), 16, "{e}");
        assert_eq!(e["aad"].as_str(), Some(aad.as_str()));
        let decrypt = |tag: &str| {
            cli(&["key", "decrypt", "--name", "aes", "--algorithm", "A256GCM", "--value", e["value"].as_str().unwrap(),
                "--iv", e["iv"].as_str().unwrap(), "--tag", tag, "--aad", &aad])
        };
        let ok = decrypt(e["tag"].as_str().unwrap());
        assert_eq!(ok.code, 0, "{}", ok.stderr);
        let v: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
        assert_eq!(unb64(&v["value"]), MSG);
        let mut tag = unb64(&e["tag"]);
        tag[0] ^= 1;
        let bad = decrypt(&b64(&tag));
        assert_eq!(bad.code, 1, "a tampered tag is refused: {}", bad.stdout);
        refused(&["key", "encrypt", "--name", "aes", "--algorithm", "A128GCM", "--value", &b64(MSG)], 1, "does not fit");
    }
}

p11_test! {
    fn a256kw_wraps_as_rfc_3394_says() {
        init();
        // RFC 3394 §4.6: 256-bit KEK 000102…1F wraps 256 bits of key data.
        let kek: Vec<u8> = (0u8..32).collect();
        let data: Vec<u8> = [0x00u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF,
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F].to_vec();
        let expected = unhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
        let dir = tempfile::tempdir().unwrap();
        let jwk = dir.path().join("kek.json");
        std::fs::write(&jwk, serde_json::json!({ "kty": "oct", "k": b64(&kek) }).to_string()).unwrap();
        json(&["key", "import", "--name", "kek", "--jwk-file", jwk.to_str().unwrap()]);
        let w = json(&["key", "wrap", "--name", "kek", "--algorithm", "A256KW", "--value", &b64(&data)]);
        assert_eq!(unb64(&w["value"]), expected);
        let u = json(&["key", "unwrap", "--name", "kek", "--algorithm", "A256KW", "--value", w["value"].as_str().unwrap()]);
        assert_eq!(unb64(&u["value"]), data);
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

p11_test! {
    fn random_gives_count_bytes_within_1_to_128() {
        init();
        assert_eq!(unb64(&json(&["key", "random", "--count", "32"])["value"]).len(), 32);
        refused(&["key", "random", "--count", "0"], 1, "1-128");
        refused(&["key", "random", "--count", "129"], 1, "1-128");
    }
}

p11_test! {
    fn disabled_key_is_refused() {
        init();
        json(&["key", "create", "--name", "ec", "--kty", "EC", "--enabled", "false"]);
        refused(&["key", "sign", "--name", "ec", "--algorithm", "ES256", "--digest", &b64(&sha256(MSG))], 1, "may not sign");
    }
}

p11_test! {
    fn sign_only_key_is_refused_for_decrypt() {
        init();
        json(&["key", "create", "--name", "rsa", "--kty", "RSA", "--ops", "sign", "verify"]);
        refused(&["key", "decrypt", "--name", "rsa", "--algorithm", "RSA-OAEP-256", "--value", &b64(&[0; 256])], 1, "may not decrypt");
        refused(&["key", "encrypt", "--name", "rsa", "--algorithm", "RSA-OAEP-256", "--value", &b64(MSG)], 1, "may not encrypt");
    }
}

p11_test! {
    fn data_plane_verbs_are_audited_with_the_kid() {
        init();
        json(&["key", "create", "--name", "ec", "--kty", "EC"]);
        sign("ec", "ES256");
        let out = cli(&["audit", "--operation", "KeySign"]).stdout;
        let line: serde_json::Value = serde_json::from_str(out.lines().next().expect("a KeySign line")).unwrap();
        assert!(line["kid"].as_str().unwrap().contains("/keys/ec/"), "{line}");
        assert_eq!(line["algorithm"], "ES256", "{line}");
    }
}

/// The named big numbers of `openssl pkey -text -noout` (hex lines under a
/// `name:` line); `publicExponent: 65537 (0x10001)` on one line.
fn openssl_text_fields(text: &str) -> std::collections::HashMap<String, Vec<u8>> {
    let mut fields = std::collections::HashMap::new();
    let mut current: Option<(String, String)> = None;
    let done = |c: Option<(String, String)>,
                fields: &mut std::collections::HashMap<String, Vec<u8>>| {
        if let Some((name, hex)) = c {
            if !hex.is_empty() {
                let mut v = unhex(&hex);
                while v.len() > 1 && v[0] == 0 {
                    v.remove(0);
                }
                fields.insert(name, v);
            }
        }
    };
    for line in text.lines() {
        let t = line.trim();
        let is_hex = line.starts_with(' ') && t.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        if is_hex {
            if let Some((_, hex)) = current.as_mut() {
                hex.push_str(&t.replace(':', ""));
            }
            continue;
        }
        done(current.take(), &mut fields);
        if let Some((name, rest)) = t.split_once(':') {
            let rest = rest.trim();
            if let Some(hex) = rest.split("(0x").nth(1) {
                let hex = hex.trim_end_matches(')');
                let hex = if hex.len() % 2 == 1 {
                    format!("0{hex}")
                } else {
                    hex.to_string()
                };
                fields.insert(name.to_string(), unhex(&hex));
            } else if rest.is_empty() {
                current = Some((name.to_string(), String::new()));
            }
        }
    }
    done(current.take(), &mut fields);
    fields
}

/// A private JWK of the openssl key `pem` in `dir`.
fn jwk_of(dir: &Path, pem: &str, ec: bool) -> serde_json::Value {
    let text = String::from_utf8(openssl(dir, &["pkey", "-in", pem, "-text", "-noout"])).unwrap();
    let f = openssl_text_fields(&text);
    let get = |n: &str| b64(f.get(n).unwrap_or_else(|| panic!("no {n} in {text}")));
    if ec {
        let point = &f["pub"];
        let len = (point.len() - 1) / 2;
        let mut d = f["priv"].clone();
        while d.len() < len {
            d.insert(0, 0);
        }
        serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..]), "d": b64(&d),
        })
    } else {
        serde_json::json!({
            "kty": "RSA", "n": get("modulus"), "e": get("publicExponent"), "d": get("privateExponent"),
            "p": get("prime1"), "q": get("prime2"), "dp": get("exponent1"), "dq": get("exponent2"),
            "qi": get("coefficient"),
        })
    }
}

p11_test! {
    fn jwk_import_of_an_openssl_key_signs_verifiably() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"]);
        openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
        for (name, ec, alg) in [("rsa", false, "RS256"), ("ec", true, "ES256")] {
            let jwk = jwk_of(d, &format!("{name}.pem"), ec);
            let file = d.join(format!("{name}.jwk"));
            std::fs::write(&file, jwk.to_string()).unwrap();
            let r = json(&["key", "import", "--name", name, "--jwk-file", file.to_str().unwrap(), "--ops", "sign", "verify", "--tags", "from=jwk"]);
            assert_eq!(r["key"]["key_ops"], serde_json::json!(["sign", "verify"]), "{r}");
            openssl(d, &["pkey", "-in", &format!("{name}.pem"), "-pubout", "-out", &format!("{name}.orig.pub.pem")]);
            let sig = sign(name, alg);
            let sig = if ec { ecdsa_der(&sig) } else { sig };
            assert!(openssl_verifies_digest(d, &d.join(format!("{name}.orig.pub.pem")), &sig, false), "{name}: the original public key verifies");
        }
        // A JWK whose public part is another key's is refused.
        let mut jwk = jwk_of(d, "ec.pem", true);
        jwk["x"] = jwk["y"].clone();
        let file = d.join("bad.jwk");
        std::fs::write(&file, jwk.to_string()).unwrap();
        refused(&["key", "import", "--name", "bad", "--jwk-file", file.to_str().unwrap()], 1, "not its private key's");
        // And an RSA JWK whose dp is not its primes'.
        let mut jwk = jwk_of(d, "rsa.pem", false);
        jwk["dp"] = jwk["dq"].clone();
        std::fs::write(&file, jwk.to_string()).unwrap();
        refused(&["key", "import", "--name", "bad", "--jwk-file", file.to_str().unwrap()], 1, "dp, dq or qi");
    }
}

p11_test! {
    fn expired_key_still_verifies_but_no_longer_signs() {
        init();
        json(&["key", "create", "--name", "ec", "--kty", "EC"]);
        let digest = b64(&sha256(MSG));
        let sig = b64(&sign("ec", "ES256"));
        json(&["key", "update", "--name", "ec", "--expires", "2001-01-01T00:00:00Z"]);
        refused(&["key", "sign", "--name", "ec", "--algorithm", "ES256", "--digest", &digest], 1, "may not sign");
        let v = json(&["key", "verify", "--name", "ec", "--algorithm", "ES256", "--digest", &digest, "--signature", &sig]);
        assert_eq!(v["value"], serde_json::json!(true));
    }
}

p11_test! {
    fn not_yet_valid_key_is_refused() {
        init();
        json(&["key", "create", "--name", "aes", "--kty", "oct", "--not-before", "2099-01-01T00:00:00Z"]);
        refused(&["key", "wrap", "--name", "aes", "--algorithm", "A256KW", "--value", &b64(&[7; 32])], 1, "may not wrapKey");
    }
}

p11_test! {
    fn aes_cbc_pad_encrypts_as_openssl_decrypts() {
        if !tool("openssl") {
            return;
        }
        init();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key: Vec<u8> = (100u8..132).collect();
        let jwk = d.join("aes.jwk");
        std::fs::write(&jwk, serde_json::json!({ "kty": "oct", "k": b64(&key) }).to_string()).unwrap();
        json(&["key", "import", "--name", "aes", "--jwk-file", jwk.to_str().unwrap()]);
        let iv = [9u8; 16];
        refused(&["key", "encrypt", "--name", "aes", "--algorithm", "A256CBCPAD", "--value", &b64(MSG)], 1, "needs --iv");
        refused(&["key", "encrypt", "--name", "aes", "--algorithm", "A256CBCPAD", "--value", &b64(MSG), "--iv", &b64(&iv), "--aad", "YQ"], 1, "takes no --aad");
        let e = json(&["key", "encrypt", "--name", "aes", "--algorithm", "A256CBCPAD", "--value", &b64(MSG), "--iv", &b64(&iv)]);
        std::fs::write(d.join("ct.bin"), unb64(&e["value"])).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        openssl(d, &["enc", "-d", "-aes-256-cbc", "-K", &hex(&key), "-iv", &hex(&iv), "-in", "ct.bin", "-out", "pt.bin"]);
        assert_eq!(std::fs::read(d.join("pt.bin")).unwrap(), MSG);
        let r = json(&["key", "decrypt", "--name", "aes", "--algorithm", "A256CBCPAD", "--value", e["value"].as_str().unwrap(), "--iv", &b64(&iv)]);
        assert_eq!(unb64(&r["value"]), MSG);
    }
}
