//! Post-quantum operations per second (issue 17): each through the token's C
//! ABI (`cryptoki`, and the 3.2 function table for C_EncapsulateKey /
//! C_DecapsulateKey) beside the same operation on raw aws-lc-rs, in one run,
//! rounds alternating so drift of the machine hits both alike; RSA-3072 and
//! P-384 signing through the token for scale.
//!
//! ```text
//! cargo build --release && cargo run --release --example pq_bench -- target/release/libsoftmhsm.so [SECONDS_PER_ROUND]
//! ```

use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, ML_KEM_1024, ML_KEM_512, ML_KEM_768};
use aws_lc_rs::signature::{
    KeyPair as _, PqdsaKeyPair, UnparsedPublicKey, ML_DSA_44, ML_DSA_44_SIGNING, ML_DSA_65,
    ML_DSA_65_SIGNING, ML_DSA_87, ML_DSA_87_SIGNING,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, MlDsaParameterSetType, MlKemParameterSetType, ObjectHandle, ParameterSetType,
};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use softmhsm::crypto::{self as token_crypto, MlDsa};
use softmhsm::ffi::pqdsa::{PqdsaKey, NID_MLDSA44, NID_MLDSA65, NID_MLDSA87};
use std::time::{Duration, Instant};

const MSG: &[u8] = &[0x5a; 32];
const ROUNDS: usize = 5;

/// Operations per second of `op` run for `budget`.
fn rate(budget: Duration, mut op: impl FnMut()) -> f64 {
    op(); // warm-up
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The rows to run: those whose name contains the third argument (all without it).
static ONLY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Token vs raw, rounds alternating; prints one row.
fn row(name: &str, budget: Duration, mut token: impl FnMut(), raw: Option<&mut dyn FnMut()>) {
    if !name.contains(ONLY.get().map_or("", String::as_str)) {
        return;
    }
    let mut t = Vec::new();
    let mut r = Vec::new();
    let mut raw = raw;
    for i in 0..ROUNDS {
        let mut token_round = || t.push(rate(budget, &mut token));
        if i % 2 == 0 {
            token_round();
            if let Some(raw) = raw.as_deref_mut() {
                r.push(rate(budget, raw));
            }
        } else {
            if let Some(raw) = raw.as_deref_mut() {
                r.push(rate(budget, raw));
            }
            token_round();
        }
    }
    let tm = median(t);
    if r.is_empty() {
        println!("| {name} | {tm:.0} | | |");
    } else {
        let rm = median(r);
        println!("| {name} | {tm:.0} | {rm:.0} | {:.2} |", tm / rm);
    }
}

fn open(path: &str) -> (Pkcs11, Session, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("pq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_var("SOFTMHSM_DIR", &dir);
    std::env::set_var("SOFTMHSM_KDF_ITERATIONS", "1000");
    let ctx = Pkcs11::new(path).expect("load the module");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx.get_slots_with_token().unwrap()[0];
    let (so, user) = (AuthPin::from("so-pin-1234"), AuthPin::from("user-1234"));
    ctx.init_token(slot, &so, "bench").unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    s.login(UserType::So, Some(&so)).unwrap();
    s.init_pin(&user).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&user)).unwrap();
    (ctx, s, dir)
}

fn pair(
    s: &Session,
    gen: &Mechanism,
    set: ParameterSetType,
    op: [Attribute; 2],
) -> (ObjectHandle, ObjectHandle) {
    let [public_op, private_op] = op;
    s.generate_key_pair(
        gen,
        &[
            Attribute::Token(false),
            Attribute::ParameterSet(set),
            public_op,
        ],
        &[
            Attribute::Token(false),
            Attribute::Private(true),
            private_op,
        ],
    )
    .unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: pq_bench LIBSOFTMHSM.so [SECONDS [ROW-NAME-PART]]");
    let secs: f64 = args.next().map_or(1.0, |s| s.parse().unwrap());
    ONLY.set(args.next().unwrap_or_default()).unwrap();
    let budget = Duration::from_secs_f64(secs);
    let (ctx, s, dir) = open(&path);
    let raw_lib = unsafe { cryptoki_sys::Pkcs11::new(&path) }.unwrap();
    let mut iface: *mut CK_INTERFACE = std::ptr::null_mut();
    let mut v32 = CK_VERSION { major: 3, minor: 2 };
    // SAFETY: NUL-terminated name, valid out-pointers.
    let rv =
        unsafe { raw_lib.C_GetInterface(c"PKCS 11".as_ptr() as *mut _, &mut v32, &mut iface, 0) };
    assert_eq!(rv, CKR_OK);
    // SAFETY: C_GetInterface succeeded: a static 3.2 table.
    let f32 = unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_2) };

    println!("| operation | token ops/s | raw aws-lc-rs ops/s | token / raw |");
    println!("|---|---:|---:|---:|");
    let pure = Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Preferred, None));
    let dsa = [
        (
            MlDsaParameterSetType::ML_DSA_44,
            "ML-DSA-44",
            NID_MLDSA44,
            &ML_DSA_44_SIGNING,
            &ML_DSA_44,
        ),
        (
            MlDsaParameterSetType::ML_DSA_65,
            "ML-DSA-65",
            NID_MLDSA65,
            &ML_DSA_65_SIGNING,
            &ML_DSA_65,
        ),
        (
            MlDsaParameterSetType::ML_DSA_87,
            "ML-DSA-87",
            NID_MLDSA87,
            &ML_DSA_87_SIGNING,
            &ML_DSA_87,
        ),
    ];
    for (set, name, nid, signing, verifying) in dsa {
        let ops = [Attribute::Verify(true), Attribute::Sign(true)];
        row(
            &format!("{name} keygen (session key pair)"),
            budget,
            || {
                let (a, b) = pair(&s, &Mechanism::MlDsaKeyPairGen, set.into(), ops.clone());
                s.destroy_object(a).unwrap();
                s.destroy_object(b).unwrap();
            },
            Some(&mut || drop(PqdsaKeyPair::generate(signing).unwrap())),
        );
        let (public, private) = pair(&s, &Mechanism::MlDsaKeyPairGen, set.into(), ops);
        let raw = PqdsaKeyPair::generate(signing).unwrap();
        let mut sig = vec![0u8; signing.signature_len()];
        row(
            &format!("{name} sign (32 B)"),
            budget,
            || drop(s.sign(&pure, private, MSG).unwrap()),
            Some(&mut || {
                raw.sign(MSG, &mut sig).unwrap();
            }),
        );
        // A context goes through aws-lc's EVP interface (src/ffi/pqdsa.rs), not
        // aws-lc-rs: its cost against aws-lc-rs's context-free sign, and the EVP
        // path itself with the empty context (would it serve every signature?).
        let ctx16 = [0x3c; 16];
        let with_ctx = Mechanism::MlDsa(SignAdditionalContext::new(
            HedgeType::Preferred,
            Some(&ctx16),
        ));
        row(
            &format!("{name} sign (32 B), 16 B context"),
            budget,
            || drop(s.sign(&with_ctx, private, MSG).unwrap()),
            Some(&mut || {
                raw.sign(MSG, &mut sig).unwrap();
            }),
        );
        // The deterministic variant runs on RustCrypto's ml-dsa (aws-lc exports none).
        let det = Mechanism::MlDsa(SignAdditionalContext::new(
            HedgeType::DeterministicRequired,
            None,
        ));
        row(
            &format!("{name} sign (32 B), deterministic (ml-dsa crate)"),
            budget,
            || drop(s.sign(&det, private, MSG).unwrap()),
            Some(&mut || {
                raw.sign(MSG, &mut sig).unwrap();
            }),
        );
        let seed = [0x11u8; 32];
        let evp = PqdsaKey::from_seed(nid, &seed).unwrap();
        let raw_seeded = PqdsaKeyPair::from_seed(signing, &seed).unwrap();
        row(
            &format!(
                "{name} sign (32 B), EVP path with the empty context, no token (vs aws-lc-rs)"
            ),
            budget,
            || drop(evp.sign(MSG, &[], signing.signature_len()).unwrap()),
            Some(&mut || {
                raw_seeded.sign(MSG, &mut sig).unwrap();
            }),
        );
        let ctx_sig = s.sign(&with_ctx, private, MSG).unwrap();
        let token_sig = s.sign(&pure, private, MSG).unwrap();
        let raw_sig = {
            let n = raw.sign(MSG, &mut sig).unwrap();
            sig[..n].to_vec()
        };
        let raw_public = raw.public_key().as_ref().to_vec();
        row(
            &format!("{name} verify"),
            budget,
            || s.verify(&pure, public, MSG, &token_sig).unwrap(),
            // Parsing included, as the token's C_VerifyInit looks its key up
            // (its parsed public key is cached, aws-lc-rs parses each time here).
            Some(&mut || {
                UnparsedPublicKey::new(verifying, &raw_public)
                    .verify(MSG, &raw_sig)
                    .unwrap()
            }),
        );
        row(
            &format!("{name} verify, 16 B context"),
            budget,
            || s.verify(&with_ctx, public, MSG, &ctx_sig).unwrap(),
            Some(&mut || {
                UnparsedPublicKey::new(verifying, &raw_public)
                    .verify(MSG, &raw_sig)
                    .unwrap()
            }),
        );
    }

    hash_ml_dsa_rows(&ctx, &s, budget);

    let kem = [
        (MlKemParameterSetType::ML_KEM_512, "ML-KEM-512", &ML_KEM_512),
        (MlKemParameterSetType::ML_KEM_768, "ML-KEM-768", &ML_KEM_768),
        (
            MlKemParameterSetType::ML_KEM_1024,
            "ML-KEM-1024",
            &ML_KEM_1024,
        ),
    ];
    for (set, name, alg) in kem {
        let (public, private) = pair(
            &s,
            &Mechanism::MlKemKeyPairGen,
            set.into(),
            [Attribute::Encapsulate(true), Attribute::Decapsulate(true)],
        );
        let raw = DecapsulationKey::generate(alg).unwrap();
        let raw_ek = raw.encapsulation_key().unwrap();
        let class: CK_OBJECT_CLASS = CKO_SECRET_KEY;
        let key_type: CK_KEY_TYPE = CKK_AES;
        let mut tmpl = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: &class as *const _ as *mut _,
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_KEY_TYPE,
                pValue: &key_type as *const _ as *mut _,
                ulValueLen: 8,
            },
        ];
        let h = s.handle();
        let mut m = CK_MECHANISM {
            mechanism: CKM_ML_KEM,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut ct = vec![0u8; 1568];
        let mut encapsulate = move || {
            let (mut n, mut key) = (ct.len() as CK_ULONG, 0);
            // SAFETY: valid pointers and lengths.
            let rv = unsafe {
                f32.C_EncapsulateKey.unwrap()(
                    h,
                    &mut m,
                    public.handle(),
                    tmpl.as_mut_ptr(),
                    2,
                    ct.as_mut_ptr(),
                    &mut n,
                    &mut key,
                )
            };
            assert_eq!(rv, CKR_OK);
            // SAFETY: a valid session and object handle.
            assert_eq!(unsafe { f32.C_DestroyObject.unwrap()(h, key) }, CKR_OK);
            ct[..n as usize].to_vec()
        };
        let token_ct = encapsulate();
        row(
            &format!(
                "{name} encapsulate (+ C_DestroyObject of the new key, ciphertext copied out)"
            ),
            budget,
            || drop(encapsulate()),
            Some(&mut || drop(raw_ek.encapsulate().unwrap())),
        );
        let (raw_ct, _) = raw_ek.encapsulate().unwrap();
        let raw_ct = raw_ct.as_ref().to_vec();
        let mut m = CK_MECHANISM {
            mechanism: CKM_ML_KEM,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        row(
            &format!("{name} decapsulate (+ C_DestroyObject of the new key)"),
            budget,
            || {
                let mut key = 0;
                // SAFETY: valid pointers and lengths.
                let rv = unsafe {
                    f32.C_DecapsulateKey.unwrap()(
                        h,
                        &mut m,
                        private.handle(),
                        tmpl.as_mut_ptr(),
                        2,
                        token_ct.as_ptr() as *mut _,
                        token_ct.len() as CK_ULONG,
                        &mut key,
                    )
                };
                assert_eq!(rv, CKR_OK);
                // SAFETY: a valid session and object handle.
                assert_eq!(unsafe { f32.C_DestroyObject.unwrap()(h, key) }, CKR_OK);
            },
            Some(&mut || {
                drop(
                    raw.decapsulate(Ciphertext::from(raw_ct.as_slice()))
                        .unwrap(),
                )
            }),
        );
    }

    // For scale: the classical keys through the token.
    let (_, rsa) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::ModulusBits(3072.into()),
                Attribute::Verify(true),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .unwrap();
    row(
        "RSA-3072 sign CKM_SHA256_RSA_PKCS",
        budget,
        || drop(s.sign(&Mechanism::Sha256RsaPkcs, rsa, MSG).unwrap()),
        None,
    );
    let p384 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let (_, ec) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(p384),
                Attribute::Verify(true),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .unwrap();
    row(
        "P-384 sign CKM_ECDSA (48 B digest)",
        budget,
        || drop(s.sign(&Mechanism::Ecdsa, ec, &[0xa5; 48]).unwrap()),
        None,
    );
    drop(s);
    std::fs::remove_dir_all(dir).unwrap();
}

/// HashML-DSA through the token (`CKM_HASH_ML_DSA_SHA256/512`: the token
/// hashes, computes μ and signs it through aws-lc's EVP_PKEY_sign) and the
/// external-μ signature `key sign --mu` makes (the provider's `sign_mu`, what
/// the data plane calls once the key is open), each beside aws-lc-rs's pure
/// ML-DSA sign (or verify) of the same set and message.
fn hash_ml_dsa_rows(ctx: &Pkcs11, s: &Session, budget: Duration) {
    // An older build (compared with `ROW-NAME-PART`) may not have HashML-DSA.
    let slot = s.get_session_info().unwrap().slot_id();
    let mechanisms = ctx.get_mechanism_list(slot).unwrap();
    if !mechanisms.contains(&cryptoki::mechanism::MechanismType::HASH_ML_DSA_SHA256) {
        println!("(no HashML-DSA in this build: its rows are left out)");
        return;
    }
    let sets = [
        (
            MlDsa::P44,
            MlDsaParameterSetType::ML_DSA_44,
            &ML_DSA_44_SIGNING,
            &ML_DSA_44,
        ),
        (
            MlDsa::P65,
            MlDsaParameterSetType::ML_DSA_65,
            &ML_DSA_65_SIGNING,
            &ML_DSA_65,
        ),
        (
            MlDsa::P87,
            MlDsaParameterSetType::ML_DSA_87,
            &ML_DSA_87_SIGNING,
            &ML_DSA_87,
        ),
    ];
    let none = || SignAdditionalContext::new(HedgeType::Preferred, None);
    for (set, p11_set, signing, verifying) in sets {
        let name = set.name();
        let ops = [Attribute::Verify(true), Attribute::Sign(true)];
        let (public, private) = pair(s, &Mechanism::MlDsaKeyPairGen, p11_set.into(), ops);
        let raw = PqdsaKeyPair::generate(signing).unwrap();
        let mut sig = vec![0u8; signing.signature_len()];
        let raw_sig = {
            let n = raw.sign(MSG, &mut sig).unwrap();
            sig[..n].to_vec()
        };
        let raw_public = raw.public_key().as_ref().to_vec();
        for (mech, hash) in [
            (Mechanism::HashMlDsaSha256(none()), "SHA256"),
            (Mechanism::HashMlDsaSha512(none()), "SHA512"),
        ] {
            row(
                &format!("{name} HashML-DSA-{hash} sign (32 B)"),
                budget,
                || drop(s.sign(&mech, private, MSG).unwrap()),
                Some(&mut || {
                    raw.sign(MSG, &mut sig).unwrap();
                }),
            );
            let token_sig = s.sign(&mech, private, MSG).unwrap();
            row(
                &format!("{name} HashML-DSA-{hash} verify (vs aws-lc-rs pure verify)"),
                budget,
                || s.verify(&mech, public, MSG, &token_sig).unwrap(),
                Some(&mut || {
                    UnparsedPublicKey::new(verifying, &raw_public)
                        .verify(MSG, &raw_sig)
                        .unwrap()
                }),
            );
        }
        let seed = [0x22u8; 32];
        let key = token_crypto::provider().ml_dsa_private(set, &seed).unwrap();
        let mu = [0x6du8; 64];
        row(
            &format!("{name} external-mu sign (provider sign_mu, no store)"),
            budget,
            || drop(key.sign_mu(&mu).unwrap()),
            Some(&mut || {
                raw.sign(MSG, &mut sig).unwrap();
            }),
        );
        if set == MlDsa::P65 {
            // A large message: HashML-DSA-SHA256 hashes it with SHA-256 (SHA-NI
            // here), pure ML-DSA with SHAKE256.
            let big = vec![0xa5u8; 1 << 20];
            let mech = Mechanism::HashMlDsaSha256(none());
            row(
                &format!("{name} HashML-DSA-SHA256 sign (1 MiB) vs aws-lc-rs pure sign (1 MiB)"),
                budget,
                || drop(s.sign(&mech, private, &big).unwrap()),
                Some(&mut || {
                    raw.sign(&big, &mut sig).unwrap();
                }),
            );
        }
    }
}
