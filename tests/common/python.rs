//! Python `cryptography` as the independent checker of the post-quantum
//! suites (tests/pqc.rs, tests/hash_ml_dsa.rs): `$SOFTMHSM_PYTHON` if set (CI
//! points it at a venv with a recent `cryptography`), else `python3`; and the
//! base64url of the CLI's JSON.

use super::REQUIRE_TOOLS_ENV;
use std::env;
use std::process::Command;

/// The Python with `cryptography` >= 47.
pub fn python() -> String {
    env::var("SOFTMHSM_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether Python `cryptography` with ML-DSA (its μ API included) and ML-KEM
/// is there; like `tool`, a missing one is a failure under
/// `SOFTMHSM_REQUIRE_TOOLS`, else a skip.
pub fn python_has_mldsa() -> bool {
    let ok = Command::new(python())
        .args([
            "-c",
            "from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem; mldsa.MLDSA65PublicKey.verify_mu",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let required = env::var(REQUIRE_TOOLS_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{} with cryptography >= 47 (ML-DSA with verify_mu, ML-KEM) is not installed (set SOFTMHSM_PYTHON), and {REQUIRE_TOOLS_ENV} is set",
        python()
    );
    println!("SKIPPED: python3 with cryptography >= 47 is not installed");
    false
}

/// Unpadded base64url, as the CLI writes binary values.
pub fn b64url(b: &[u8]) -> String {
    use base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::encode_string(b)
}

/// The bytes of a base64url string in the CLI's JSON.
pub fn b64url_decode(v: &serde_json::Value) -> Vec<u8> {
    use base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::decode_vec(v.as_str().expect("a base64url string")).expect("base64url")
}
