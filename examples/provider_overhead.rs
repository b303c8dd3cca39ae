//! What softmhsm's provider layer costs over raw aws-lc-rs on the signing hot
//! path (RSA-2048 PKCS#1, P-256 ECDSA) and what routing secp256k1 to `k256`
//! gains over aws-lc-rs. A measurement, not a test: run it in release,
//!
//!     cargo run --release --example provider_overhead
//!
//! (`cargo test` only builds it, so it cannot rot.)

#[cfg(feature = "aws-lc")]
fn main() {
    use aws_lc_rs::digest::{Digest, SHA256};
    use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
    use softmhsm::crypto::{aws_lc::AwsLc, provider, Curve, Hash, Provider};
    use std::time::Instant;

    fn rate(n: u32, mut f: impl FnMut()) -> f64 {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        f64::from(n) / t.elapsed().as_secs_f64()
    }
    let digest = [7u8; 32];
    let d = Digest::import_less_safe(&digest, &SHA256).expect("digest");

    let rsa = AwsLc.generate_rsa(2048).expect("rsa keygen");
    let raw = RsaKeyPair::from_pkcs8(&rsa).expect("rsa pkcs8");
    let ours = provider().rsa_private(&rsa).expect("rsa key");
    let mut sig = vec![0u8; raw.public_modulus_len()];
    let raw_rate = rate(2000, || {
        raw.sign_digest(&signature::RSA_PKCS1_SHA256, &d, &mut sig)
            .expect("raw sign")
    });
    let our_rate = rate(2000, || {
        ours.sign_pkcs1(Hash::Sha256, &digest).expect("sign");
    });
    println!(
        "RSA-2048 PKCS#1: raw aws-lc-rs {raw_rate:.0}/s, provider {our_rate:.0}/s ({:.3}x)",
        our_rate / raw_rate
    );

    let ec = AwsLc.generate_ec(Curve::P256).expect("ec keygen");
    let raw = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &ec)
        .expect("ec pkcs8");
    let ours = provider().ec_private(Curve::P256, &ec).expect("ec key");
    let raw_rate = rate(50_000, || {
        raw.sign_digest(&d).expect("raw sign");
    });
    let our_rate = rate(50_000, || {
        ours.sign_prehash(&digest).expect("sign");
    });
    println!(
        "P-256 ECDSA: raw aws-lc-rs {raw_rate:.0}/s, provider {our_rate:.0}/s ({:.3}x)",
        our_rate / raw_rate
    );

    let k1 = AwsLc.generate_ec(Curve::P256K).expect("k1 keygen");
    let aws = AwsLc.ec_private(Curve::P256K, &k1).expect("k1 key");
    let ours = provider().ec_private(Curve::P256K, &k1).expect("k1 key");
    let aws_rate = rate(5_000, || {
        aws.sign_prehash(&digest).expect("sign");
    });
    let our_rate = rate(5_000, || {
        ours.sign_prehash(&digest).expect("sign");
    });
    println!(
        "secp256k1: aws-lc-rs {aws_rate:.0}/s, routed (k256) {our_rate:.0}/s ({:.2}x)",
        our_rate / aws_rate
    );
}

#[cfg(not(feature = "aws-lc"))]
fn main() {
    eprintln!("provider_overhead compares against aws-lc-rs: build with the default features");
}
