//! BYOK helpers shared by `byok.rs` (C ABI) and `cli_byok.rs` (the CLI): key
//! material and transfer blobs made by the `openssl` command — an
//! implementation independent of the token — and checks made with it.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `openssl args…` in `dir`; its standard output. Panics with its stderr
/// if it fails (and if openssl is missing).
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether `openssl args…` succeeds (for verification).
pub fn openssl_ok(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A target key made by openssl in `dir`: `<name>.pem` (the private key),
/// `<name>.pub.pem` (its public key) and `<name>.bin` (what the blob carries:
/// PKCS#8 DER for RSA/EC, the key bytes for AES).
pub struct TargetKey {
    pub name: String,
    pub pem: PathBuf,
    pub public: PathBuf,
    pub material: PathBuf,
}

/// What kind of target key to make.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Rsa(u32),
    /// An OpenSSL curve name (prime256v1, secp256k1, secp384r1, secp521r1).
    Ec(&'static str),
    Aes(u32),
}

/// Make a target key with openssl.
pub fn target_key(dir: &Path, name: &str, kind: Kind) -> TargetKey {
    let pem = format!("{name}.pem");
    let public = format!("{name}.pub.pem");
    let bin = format!("{name}.bin");
    match kind {
        Kind::Rsa(bits) => {
            let opt = format!("rsa_keygen_bits:{bits}");
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    &opt,
                    "-out",
                    &pem,
                ],
            );
        }
        Kind::Ec(curve) => {
            let opt = format!("ec_paramgen_curve:{curve}");
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    &opt,
                    "-out",
                    &pem,
                ],
            );
        }
        Kind::Aes(bits) => {
            let n = (bits / 8).to_string();
            openssl(dir, &["rand", "-out", &bin, &n]);
        }
    }
    if !matches!(kind, Kind::Aes(_)) {
        // `pkey -outform DER` writes PKCS#1/SEC1 on OpenSSL 3.0; BYOK carries PKCS#8.
        openssl(
            dir,
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER", "-out", &bin,
            ],
        );
        openssl(dir, &["pkey", "-in", &pem, "-pubout", "-out", &public]);
    }
    TargetKey {
        name: name.to_string(),
        pem: dir.join(pem),
        public: dir.join(public),
        material: dir.join(bin),
    }
}

/// `CKM_RSA_AES_KEY_WRAP` done by openssl alone, as examples/byok.sh does it:
/// a fresh AES-256 key, RFC 5649 wrap of `material` under it
/// (`-id-aes256-wrap-pad`), RSA-OAEP (SHA-1, MGF1-SHA-1) of the AES key under
/// the KEK public key `kek_pub` (PEM or DER SPKI file).
pub fn openssl_rsa_aes_wrap(dir: &Path, kek_pub: &Path, material: &Path) -> Vec<u8> {
    let (aes, enc, wrapped) = ("eph.aes", "eph.aes.enc", "target.kwp");
    openssl(dir, &["rand", "-out", aes, "32"]);
    let key_hex: String = std::fs::read(dir.join(aes))
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let material = material.to_str().unwrap();
    openssl(
        dir,
        &[
            "enc",
            "-id-aes256-wrap-pad",
            "-K",
            &key_hex,
            "-iv",
            "A65959A6",
            "-in",
            material,
            "-out",
            wrapped,
        ],
    );
    let keyform = if std::fs::read(kek_pub).unwrap().starts_with(b"-----") {
        "PEM"
    } else {
        "DER"
    };
    openssl(
        dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-keyform",
            keyform,
            "-inkey",
            kek_pub.to_str().unwrap(),
            "-in",
            aes,
            "-out",
            enc,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-pkeyopt",
            "rsa_mgf1_md:sha1",
        ],
    );
    let mut out = std::fs::read(dir.join(enc)).unwrap();
    out.extend(std::fs::read(dir.join(wrapped)).unwrap());
    for f in [aes, enc, wrapped] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    out
}

/// The Managed HSM BYOK transfer blob for `ciphertext` made for `kid`.
pub fn byok_json(kid: &str, ciphertext: &[u8]) -> String {
    format!(
        r#"{{"schema_version":"1.0.0","header":{{"kid":"{kid}","alg":"dir","enc":"CKM_RSA_AES_KEY_WRAP"}},"ciphertext":"{}","generator":"softmhsm tests (openssl)"}}"#,
        b64url(ciphertext)
    )
}

/// Base64url without padding (RFC 4648 §5).
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// DER `ECDSA-Sig-Value` of a raw r‖s signature, for OpenSSL.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().position(|x| *x != 0).unwrap_or(b.len() - 1)..];
        let pad = b[0] & 0x80 != 0;
        let mut v = vec![0x02, (b.len() + pad as usize) as u8];
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut der = vec![0x30];
    if body.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(body.len() as u8);
    der.extend_from_slice(&body);
    der
}

/// Whether openssl verifies `sig` (DER for ECDSA) over `msg` with the public
/// key in `public` (PEM) and digest `md` (sha256, sha384, sha512).
pub fn openssl_verifies(dir: &Path, public: &Path, md: &str, msg: &[u8], sig: &[u8]) -> bool {
    std::fs::write(dir.join("v.msg"), msg).unwrap();
    std::fs::write(dir.join("v.sig"), sig).unwrap();
    openssl_ok(
        dir,
        &[
            "dgst",
            &format!("-{md}"),
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            "v.sig",
            "v.msg",
        ],
    )
}
