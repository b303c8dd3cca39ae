//! The benchmark cases: one row each, a key setup and the timed operation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use crate::failure::{During, Failure};
use crate::module::{self, fill_label, Curve, KeySpec, Module};

/// What a case's figure counts.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// Operations per second.
    Ops,
    /// Megabytes (10^6 B) per second, each operation processing this many bytes.
    MegabytesPerSec(usize),
    /// Milliseconds per operation, for slow one-off operations.
    Millis,
}

/// The timed operation, called in a loop on one session per thread.
pub type Op = Arc<dyn Fn(&Session) -> Result<(), Failure> + Send + Sync>;
/// Untimed work after each measured round (destroying the keys a round generated).
pub type Cleanup = Box<dyn Fn(&Session) -> Result<(), Failure>>;

/// Prepares keys (or token contents) on one module and returns the work to time.
pub type Setup = Box<dyn Fn(&mut Module) -> Result<Work, Failure>>;

/// What a case's setup hands to the measuring loop.
pub enum Work {
    /// Run `op` repeatedly; `cleanup` after each round, outside the timing.
    Loop { op: Op, cleanup: Option<Cleanup> },
    /// `C_Finalize`, then time `C_Initialize` + `C_OpenSession` + `C_Login`.
    Reinitialize,
}

impl Work {
    fn op(op: impl Fn(&Session) -> Result<(), Failure> + Send + Sync + 'static) -> Work {
        Work::Loop {
            op: Arc::new(op),
            cleanup: None,
        }
    }
}

/// One row of the table.
pub struct Case {
    /// Stable identifier for `--only` and the JSON output.
    pub id: String,
    /// What the row says.
    pub title: String,
    pub unit: Unit,
    /// Sessions (one per thread) running the operation at once.
    pub threads: usize,
    /// Too slow for `--quick`; runs there only when named with `--only`.
    pub full_only: bool,
    pub setup: Setup,
}

impl Case {
    fn new(
        id: impl Into<String>,
        title: impl Into<String>,
        unit: Unit,
        setup: impl Fn(&mut Module) -> Result<Work, Failure> + 'static,
    ) -> Case {
        Case {
            id: id.into(),
            title: title.into(),
            unit,
            threads: 1,
            full_only: false,
            setup: Box::new(setup),
        }
    }

    fn threads(mut self, threads: usize) -> Case {
        self.threads = threads;
        self
    }

    fn full_only(mut self) -> Case {
        self.full_only = true;
        self
    }
}

/// A mechanism built afresh for each call: `Mechanism` holds raw parameter
/// pointers, so it cannot be shared between threads, but a constructor can.
type MechFn = fn() -> Mechanism<'static>;

const MESSAGE: [u8; 32] = [0x5a; 32];

/// DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn sha256_rsa_pkcs() -> Mechanism<'static> {
    Mechanism::Sha256RsaPkcs
}

fn rsa_pkcs() -> Mechanism<'static> {
    Mechanism::RsaPkcs
}

fn sha256_rsa_pss() -> Mechanism<'static> {
    Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    })
}

fn rsa_oaep_sha1() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

fn ecdsa() -> Mechanism<'static> {
    Mechanism::Ecdsa
}

/// Every case, in the order they run and appear.
pub fn all() -> Vec<Case> {
    let digest_info: Vec<u8> = SHA256_DIGEST_INFO.iter().chain(&MESSAGE).copied().collect();
    let mut cases = vec![
        sign(
            "rsa2048-sign-sha256",
            "RSA-2048 sign CKM_SHA256_RSA_PKCS (32 B)",
            KeySpec::Rsa(2048),
            sha256_rsa_pkcs,
            MESSAGE.to_vec(),
        ),
        sign(
            "rsa2048-sign-pkcs",
            "RSA-2048 sign CKM_RSA_PKCS (SHA-256 DigestInfo)",
            KeySpec::Rsa(2048),
            rsa_pkcs,
            digest_info,
        ),
        sign(
            "rsa2048-sign-pss",
            "RSA-2048 sign CKM_SHA256_RSA_PKCS_PSS (salt 32)",
            KeySpec::Rsa(2048),
            sha256_rsa_pss,
            MESSAGE.to_vec(),
        ),
        sign(
            "rsa3072-sign",
            "RSA-3072 sign CKM_SHA256_RSA_PKCS",
            KeySpec::Rsa(3072),
            sha256_rsa_pkcs,
            MESSAGE.to_vec(),
        ),
        sign(
            "rsa4096-sign",
            "RSA-4096 sign CKM_SHA256_RSA_PKCS",
            KeySpec::Rsa(4096),
            sha256_rsa_pkcs,
            MESSAGE.to_vec(),
        ),
        verify(
            "rsa2048-verify",
            "RSA-2048 verify CKM_SHA256_RSA_PKCS",
            KeySpec::Rsa(2048),
            sha256_rsa_pkcs,
            MESSAGE.to_vec(),
        ),
        rsa_oaep_decrypt(),
    ];
    for (curve, name) in [
        (Curve::P256, "P-256"),
        (Curve::P384, "P-384"),
        (Curve::P521, "P-521"),
        (Curve::Secp256k1, "secp256k1"),
    ] {
        let id = format!("{}-sign", name.to_lowercase().replace('-', ""));
        let title = format!(
            "ECDSA {name} sign CKM_ECDSA ({} B digest)",
            curve.digest_len()
        );
        let digest = vec![0xa5; curve.digest_len()];
        cases.push(sign(&id, &title, KeySpec::Ec(curve), ecdsa, digest));
    }
    cases.extend([
        verify(
            "p256-verify",
            "ECDSA P-256 verify CKM_ECDSA",
            KeySpec::Ec(Curve::P256),
            ecdsa,
            vec![0xa5; 32],
        ),
        aes_gcm(
            "aes256-gcm-1k",
            "AES-256-GCM encrypt 1 KiB",
            1024,
            Unit::Ops,
        ),
        aes_gcm(
            "aes256-gcm-1m",
            "AES-256-GCM encrypt 1 MiB",
            1 << 20,
            Unit::MegabytesPerSec(1 << 20),
        ),
        aes_key_wrap(),
    ]);
    for threads in [1, 2] {
        let sessions = if threads == 1 { "thread" } else { "threads" };
        cases.push(
            sign(
                &format!("rsa2048-sign-{threads}t"),
                &format!("RSA-2048 sign throughput, {threads} {sessions}"),
                KeySpec::Rsa(2048),
                sha256_rsa_pkcs,
                MESSAGE.to_vec(),
            )
            .threads(threads),
        );
    }
    for threads in [1, 2] {
        let sessions = if threads == 1 { "thread" } else { "threads" };
        cases.push(
            sign(
                &format!("p256-sign-{threads}t"),
                &format!("ECDSA P-256 sign throughput, {threads} {sessions}"),
                KeySpec::Ec(Curve::P256),
                ecdsa,
                vec![0xa5; 32],
            )
            .threads(threads),
        );
    }
    cases.extend([keygen_rsa2048(), keygen_p256(), keygen_aes256()]);
    cases.extend([find(100), find(1_000), find(10_000).full_only()]);
    cases.push(login_after_initialize(10_000).full_only());
    cases
}

/// Sign `data`; setup checks one signature with `C_Verify`.
fn sign(id: &str, title: &str, spec: KeySpec, mech: MechFn, data: Vec<u8>) -> Case {
    Case::new(id, title, Unit::Ops, move |m| {
        let key = m.key(spec)?;
        let session = m.session()?;
        let signature = session.sign(&mech(), key.private, &data).during("C_Sign")?;
        session
            .verify(&mech(), key.public, &data, &signature)
            .during("C_Verify of the first signature")?;
        let data = data.clone();
        Ok(Work::op(move |s| {
            s.sign(&mech(), key.private, &data).during("C_Sign")?;
            Ok(())
        }))
    })
}

/// Verify one signature made in setup.
fn verify(id: &str, title: &str, spec: KeySpec, mech: MechFn, data: Vec<u8>) -> Case {
    Case::new(id, title, Unit::Ops, move |m| {
        let key = m.key(spec)?;
        let signature = m
            .session()?
            .sign(&mech(), key.private, &data)
            .during("C_Sign")?;
        let data = data.clone();
        Ok(Work::op(move |s| {
            s.verify(&mech(), key.public, &data, &signature)
                .during("C_Verify")
        }))
    })
}

/// Decrypt one OAEP ciphertext made in setup with the module's own public key.
fn rsa_oaep_decrypt() -> Case {
    let title = "RSA-2048 decrypt CKM_RSA_PKCS_OAEP (SHA-1, 32 B)";
    Case::new("rsa2048-decrypt-oaep", title, Unit::Ops, |m| {
        let key = m.key(KeySpec::Rsa(2048))?;
        let session = m.session()?;
        let ciphertext = session
            .encrypt(&rsa_oaep_sha1(), key.public, &MESSAGE)
            .during("C_Encrypt (OAEP, public key)")?;
        let plaintext = session
            .decrypt(&rsa_oaep_sha1(), key.private, &ciphertext)
            .during("C_Decrypt")?;
        Failure::check(plaintext == MESSAGE, "wrong plaintext", "C_Decrypt")?;
        Ok(Work::op(move |s| {
            s.decrypt(&rsa_oaep_sha1(), key.private, &ciphertext)
                .during("C_Decrypt")?;
            Ok(())
        }))
    })
}

/// AES-256-GCM encryption of `len` bytes, 12-byte IV (a counter, never reused
/// under the key), no AAD, 16-byte tag.
fn aes_gcm(id: &str, title: &str, len: usize, unit: Unit) -> Case {
    Case::new(id, title, unit, move |m| {
        let key = m.key(KeySpec::Aes256)?.private;
        let plaintext = vec![0x42u8; len];
        let counter = AtomicU64::new(0);
        let encrypt = move |s: &Session| -> Result<usize, Failure> {
            let mut iv = [0u8; 12];
            iv[4..].copy_from_slice(&counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            let params = GcmParams::new(&mut iv, &[], 128.into()).during("CK_GCM_PARAMS")?;
            let ciphertext = s
                .encrypt(&Mechanism::AesGcm(params), key, &plaintext)
                .during("C_Encrypt")?;
            Ok(ciphertext.len())
        };
        let written = encrypt(m.session()?)?;
        Failure::check(written == len + 16, "wrong ciphertext length", "C_Encrypt")?;
        Ok(Work::op(move |s| encrypt(s).map(drop)))
    })
}

/// RFC 3394 wrap of an AES-256 key under another AES-256 key: `C_WrapKey` of
/// an extractable key where the module has them. softmhsm has none (a Managed
/// HSM never exports); its wrapKey takes the key bytes from the caller, which
/// is `C_Encrypt` with `CKM_AES_KEY_WRAP`: the same RFC 3394 computation on
/// the same 32 bytes.
fn aes_key_wrap() -> Case {
    let title =
        "AES-256 CKM_AES_KEY_WRAP of an AES-256 key (C_WrapKey; softmhsm: C_Encrypt, its wrapKey)";
    Case::new("aes256-kw-wrap", title, Unit::Ops, |m| {
        let wrapping = m.key(KeySpec::Aes256)?.private;
        let Ok(target) = m.key(KeySpec::Aes256Extractable) else {
            let key_bytes = vec![0x5au8; 32];
            let wrap = move |s: &Session| {
                s.encrypt(&Mechanism::AesKeyWrap, wrapping, &key_bytes)
                    .during("C_Encrypt (CKM_AES_KEY_WRAP of 32 key bytes)")
            };
            let wrapped = wrap(m.session()?)?;
            Failure::check(wrapped.len() == 40, "wrong wrapped length", "C_Encrypt")?;
            return Ok(Work::op(move |s| wrap(s).map(drop)));
        };
        let target = target.private;
        let wrapped = m
            .session()?
            .wrap_key(&Mechanism::AesKeyWrap, wrapping, target)
            .during("C_WrapKey")?;
        Failure::check(wrapped.len() == 40, "wrong wrapped length", "C_WrapKey")?;
        Ok(Work::op(move |s| {
            s.wrap_key(&Mechanism::AesKeyWrap, wrapping, target)
                .during("C_WrapKey")?;
            Ok(())
        }))
    })
}

/// Key generation as token objects. Every generated key is destroyed after
/// its round, outside the timing, so the token does not grow from case to case.
fn keygen(
    id: &str,
    title: &str,
    generate: fn(&Session, &str) -> Result<module::Key, Failure>,
) -> Case {
    let id_owned = id.to_string();
    Case::new(id, title, Unit::Ops, move |m| {
        let created: Arc<Mutex<Vec<ObjectHandle>>> = Arc::default();
        let labels = Arc::new(AtomicU64::new(0));
        let prefix = m.unique_label(&id_owned);
        let op_created = Arc::clone(&created);
        let op: crate::cases::Op = Arc::new(move |s: &Session| {
            let n = labels.fetch_add(1, Ordering::Relaxed);
            let key = generate(s, &format!("{prefix}-{n}"))?;
            let mut created = op_created.lock().unwrap_or_else(|e| e.into_inner());
            created.push(key.private);
            if key.public != key.private {
                created.push(key.public);
            }
            Ok(())
        });
        let cleanup: Cleanup = Box::new(move |s: &Session| {
            let handles = std::mem::take(&mut *created.lock().unwrap_or_else(|e| e.into_inner()));
            for handle in handles {
                s.destroy_object(handle).during("C_DestroyObject")?;
            }
            Ok(())
        });
        Ok(Work::Loop {
            op,
            cleanup: Some(cleanup),
        })
    })
}

fn keygen_rsa2048() -> Case {
    keygen(
        "keygen-rsa2048",
        "RSA-2048 key pair generation (token)",
        |s, label| module::generate_rsa(s, 2048, label),
    )
}

fn keygen_p256() -> Case {
    keygen(
        "keygen-p256",
        "P-256 key pair generation (token)",
        |s, label| module::generate_ec(s, Curve::P256, label),
    )
}

fn keygen_aes256() -> Case {
    keygen(
        "keygen-aes256",
        "AES-256 key generation (token)",
        |s, label| module::generate_aes(s, label, false),
    )
}

/// `C_FindObjectsInit` + `C_FindObjects` + `C_FindObjectsFinal` for one label
/// in a token holding `count` fill keys (plus the few keys of earlier cases).
fn find(count: usize) -> Case {
    let id = format!("find-{count}");
    let title = format!("find 1 key by label among {} keys", thousands(count));
    Case::new(id, title, Unit::Ops, move |m| {
        m.fill_to(count)?;
        let template = vec![Attribute::Label(fill_label(count / 2).into_bytes())];
        Ok(Work::op(move |s| {
            let found = s.find_objects(&template).during("C_FindObjects")?;
            Failure::check(found.len() == 1, "wrong number of objects", "C_FindObjects")
        }))
    })
}

/// `C_Initialize` + `C_OpenSession` + `C_Login` with `count` keys on the token
/// (in process, after `C_Finalize`).
fn login_after_initialize(count: usize) -> Case {
    let id = format!("login-{count}");
    let title = format!(
        "C_Initialize + C_OpenSession + C_Login, {} keys",
        thousands(count)
    );
    Case::new(id, title, Unit::Millis, move |m| {
        m.fill_to(count)?;
        Ok(Work::Reinitialize)
    })
}

/// 10000 → "10,000".
fn thousands(n: usize) -> String {
    crate::report::group_digits(&n.to_string())
}
