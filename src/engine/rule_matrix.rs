//! The rule matrix (issue 3): every Managed HSM key type × every mechanism the
//! token knows (and some it must refuse) × every crypto operation, against the
//! expected return code. The expectations are written here from DESIGN §3, as a
//! second, independent statement of the rules, not derived from `rules.rs`.

use super::key::{KeyKind, KeyOps, KeyRecord};
use super::mechanism::{Mechanism, Param};
use super::rules::{cipher_plan, possible_ops, sign_plan};
use crate::crypto::Curve;
use crate::error::{Error, Result};
use cryptoki_sys::*;
use std::collections::BTreeMap;

/// Every key type and size a Managed HSM offers.
const KINDS: [KeyKind; 10] = [
    KeyKind::Rsa(2048),
    KeyKind::Rsa(3072),
    KeyKind::Rsa(4096),
    KeyKind::Ec(Curve::P256),
    KeyKind::Ec(Curve::P256K),
    KeyKind::Ec(Curve::P384),
    KeyKind::Ec(Curve::P521),
    KeyKind::Aes(128),
    KeyKind::Aes(192),
    KeyKind::Aes(256),
];

/// Mechanisms: every sign and cipher mechanism offered, and some that are not.
const MECHS: [CK_MECHANISM_TYPE; 25] = [
    CKM_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
    CKM_RSA_PKCS_OAEP,
    CKM_AES_GCM,
    CKM_AES_CBC,
    CKM_AES_CBC_PAD,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_KWP,
    CKM_RSA_AES_KEY_WRAP,
    // Not Managed HSM algorithms: always refused.
    CKM_SHA1_RSA_PKCS,
    CKM_MD5_RSA_PKCS,
    CKM_ECDSA_SHA1,
    CKM_AES_ECB,
    CKM_AES_CTR,
    CKM_RSA_X_509,
];

const OPS: [KeyOps; 6] = [
    KeyOps::SIGN,
    KeyOps::VERIFY,
    KeyOps::ENCRYPT,
    KeyOps::DECRYPT,
    KeyOps::WRAP,
    KeyOps::UNWRAP,
];

/// A valid parameter for each mechanism (the matrix is about key type,
/// mechanism and operation; parameter rules have their own tests).
fn mechanism(ty: CK_MECHANISM_TYPE) -> Mechanism {
    let pss = |h: CK_MECHANISM_TYPE, mgf, len| Param::Pss {
        hash: h,
        mgf,
        salt_len: len,
    };
    let param = match ty {
        CKM_RSA_PKCS_PSS | CKM_SHA256_RSA_PKCS_PSS => pss(CKM_SHA256, CKG_MGF1_SHA256, 32),
        CKM_SHA384_RSA_PKCS_PSS => pss(CKM_SHA384, CKG_MGF1_SHA384, 48),
        CKM_SHA512_RSA_PKCS_PSS => pss(CKM_SHA512, CKG_MGF1_SHA512, 64),
        CKM_RSA_PKCS_OAEP => Param::Oaep {
            hash: CKM_SHA_1,
            mgf: CKG_MGF1_SHA1,
            source: CKZ_DATA_SPECIFIED,
            label: vec![],
        },
        CKM_AES_GCM => Param::Gcm {
            iv: vec![0; 12],
            aad: vec![],
            tag_bits: 128,
        },
        CKM_AES_CBC | CKM_AES_CBC_PAD => Param::Bytes(vec![0; 16]),
        CKM_RSA_AES_KEY_WRAP => Param::RsaAesKeyWrap {
            aes_bits: 256,
            oaep: Box::new(mechanism(CKM_RSA_PKCS_OAEP).param),
        },
        _ => Param::None,
    };
    Mechanism { ty, param }
}

/// The expected outcome, from DESIGN §3 in words:
/// RSA signs with RS*/PS*/RSNULL and en/decrypts and wraps with RSA1_5 and
/// RSA-OAEP; EC only signs, each ECDSA-with-hash only on its curve; AES
/// en/decrypts with GCM, CBC(-PAD), KW and KWP (KW/KWP en/decryption is the
/// Managed HSM's wrapKey/unwrapKey of caller bytes) and wraps with KW, KWP, GCM
/// and CBC-PAD.
/// An unknown mechanism, or one that does not do the operation, is
/// `CKR_MECHANISM_INVALID`; a known one on the wrong key type is
/// `CKR_KEY_TYPE_INCONSISTENT`. `CKM_RSA_AES_KEY_WRAP` only unwraps, and only
/// with a key-exchange key (key_ops = import alone), so the ordinary keys of
/// the matrix are refused it (`CKR_KEY_FUNCTION_NOT_PERMITTED`).
fn expected(kind: KeyKind, mech: CK_MECHANISM_TYPE, op: KeyOps) -> CK_RV {
    let rsa = matches!(kind, KeyKind::Rsa(_));
    let aes = matches!(kind, KeyKind::Aes(_));
    let signing = op == KeyOps::SIGN || op == KeyOps::VERIFY;
    let wrapping = op == KeyOps::WRAP || op == KeyOps::UNWRAP;
    let ok_if = |fits: bool| {
        if fits {
            CKR_OK
        } else {
            CKR_KEY_TYPE_INCONSISTENT
        }
    };
    match mech {
        CKM_RSA_PKCS => ok_if(rsa),
        CKM_SHA256_RSA_PKCS
        | CKM_SHA384_RSA_PKCS
        | CKM_SHA512_RSA_PKCS
        | CKM_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS => {
            if signing {
                ok_if(rsa)
            } else {
                CKR_MECHANISM_INVALID
            }
        }
        CKM_ECDSA | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384 | CKM_ECDSA_SHA512 => {
            if !signing {
                return CKR_MECHANISM_INVALID;
            }
            let curve_fits = matches!(
                (kind, mech),
                (KeyKind::Ec(_), CKM_ECDSA)
                    | (KeyKind::Ec(Curve::P256 | Curve::P256K), CKM_ECDSA_SHA256)
                    | (KeyKind::Ec(Curve::P384), CKM_ECDSA_SHA384)
                    | (KeyKind::Ec(Curve::P521), CKM_ECDSA_SHA512)
            );
            ok_if(curve_fits)
        }
        CKM_RSA_PKCS_OAEP => {
            if signing {
                CKR_MECHANISM_INVALID
            } else {
                ok_if(rsa)
            }
        }
        CKM_AES_GCM | CKM_AES_CBC_PAD => {
            if signing {
                CKR_MECHANISM_INVALID
            } else {
                ok_if(aes)
            }
        }
        CKM_AES_CBC => {
            if signing || wrapping {
                CKR_MECHANISM_INVALID
            } else {
                ok_if(aes)
            }
        }
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_KWP => {
            if signing {
                CKR_MECHANISM_INVALID
            } else {
                ok_if(aes)
            }
        }
        CKM_RSA_AES_KEY_WRAP => match (op == KeyOps::UNWRAP, rsa) {
            (false, _) => CKR_MECHANISM_INVALID,
            (true, true) => CKR_KEY_FUNCTION_NOT_PERMITTED,
            (true, false) => CKR_KEY_TYPE_INCONSISTENT,
        },
        _ => CKR_MECHANISM_INVALID,
    }
}

fn key(kind: KeyKind) -> KeyRecord {
    KeyRecord {
        kind,
        name: "matrix".into(),
        version: "0".repeat(32),
        public: None,
        ops: possible_ops(kind),
        enabled: true,
        nbf: None,
        exp: None,
        created: 0,
        updated: 0,
        tags: BTreeMap::new(),
        local: true,
        gen_mechanism: None,
        public_private: false,
        public_label: None,
        public_hidden: false,
        private_hidden: false,
        allowed_mechanisms: None,
    }
}

/// Decide `op` with `mech` on `k` at time `now`, through the engine's tables.
fn plan(k: &KeyRecord, mech: CK_MECHANISM_TYPE, op: KeyOps, now: i64) -> Result<()> {
    let m = mechanism(mech);
    if op == KeyOps::SIGN || op == KeyOps::VERIFY {
        sign_plan(&m, k, op, now).map(|_| ())
    } else {
        cipher_plan(&m, k, op, now).map(|_| ())
    }
}

fn outcome(kind: KeyKind, mech: CK_MECHANISM_TYPE, op: KeyOps) -> CK_RV {
    match plan(&key(kind), mech, op, 0) {
        Ok(()) => CKR_OK,
        Err(Error(rv)) => rv,
    }
}

/// Every (kind, mechanism, op) the matrix allows.
fn allowed() -> Vec<(KeyKind, CK_MECHANISM_TYPE, KeyOps)> {
    let mut v = Vec::new();
    for kind in KINDS {
        for mech in MECHS {
            for op in OPS {
                if expected(kind, mech, op) == CKR_OK {
                    v.push((kind, mech, op));
                }
            }
        }
    }
    v
}

#[test]
fn every_key_type_mechanism_and_operation_gives_the_managed_hsm_answer() {
    let mut cases = 0;
    let mut wrong = Vec::new();
    for kind in KINDS {
        for mech in MECHS {
            for op in OPS {
                cases += 1;
                let (want, got) = (expected(kind, mech, op), outcome(kind, mech, op));
                if want != got {
                    wrong.push(format!(
                        "{kind:?} × 0x{mech:x} × {:?}: expected {}, got {}",
                        op.names(),
                        crate::error::rv_name(want),
                        crate::error::rv_name(got)
                    ));
                }
            }
        }
    }
    assert_eq!(cases, 10 * 25 * 6);
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn an_op_missing_from_key_ops_is_refused_for_every_valid_combination() {
    // RSA: 3 sizes × (8 sign mechs × 2 + 2 cipher mechs × 4) = 72; EC: 4 curves × 2 ×
    // (ECDSA + its one hash) = 16; AES: 3 sizes × (GCM, CBC-PAD, KW, KWP × 4 + CBC × 2) = 54.
    assert_eq!(allowed().len(), 142, "allowed combinations in the matrix");
    for (kind, mech, op) in allowed() {
        // AES-KW/KWP encryption is the Managed HSM's wrapKey, decryption its unwrapKey.
        let key_wrap = matches!(mech, CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_KWP);
        let needed = match op {
            KeyOps::ENCRYPT if key_wrap => KeyOps::WRAP,
            KeyOps::DECRYPT if key_wrap => KeyOps::UNWRAP,
            op => op,
        };
        // RSA1_5 and RSA-OAEP are encrypt and wrapKey alike: C_Encrypt needs
        // either op (decrypt or unwrapKey for C_Decrypt), so it is refused
        // only when both are missing, and runs with either one alone.
        let rsa_wrap = match op {
            _ if !matches!(mech, CKM_RSA_PKCS | CKM_RSA_PKCS_OAEP) => None,
            KeyOps::ENCRYPT => Some(KeyOps::WRAP),
            KeyOps::DECRYPT => Some(KeyOps::UNWRAP),
            _ => None,
        };
        if let Some(wrap) = rsa_wrap {
            for alone in [op, wrap] {
                let mut k = key(kind);
                k.ops = KeyOps(k.ops.without(op).without(wrap).0 | alone.0);
                assert_eq!(
                    plan(&k, mech, op, 0),
                    Ok(()),
                    "{kind:?} 0x{mech:x} {:?} with only {:?}",
                    op.names(),
                    alone.names()
                );
            }
        }
        let mut k = key(kind);
        k.ops = k.ops.without(needed).without(rsa_wrap.unwrap_or(needed));
        assert_eq!(
            plan(&k, mech, op, 0),
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED)),
            "{kind:?} 0x{mech:x} {:?} without {:?} in key_ops",
            op.names(),
            needed.names()
        );
        if needed != op {
            let mut k = key(kind);
            k.ops = k.ops.without(op);
            assert_eq!(
                plan(&k, mech, op, 0),
                Ok(()),
                "{kind:?} 0x{mech:x} {:?} needs {:?}, not {:?}",
                op.names(),
                needed.names(),
                op.names()
            );
        }
    }
}

#[test]
fn outside_the_date_window_only_decrypt_unwrap_and_verify_remain() {
    for (kind, mech, op) in allowed() {
        let mut k = key(kind);
        k.exp = Some(100);
        let still = [KeyOps::DECRYPT, KeyOps::UNWRAP, KeyOps::VERIFY].contains(&op);
        let want = if still {
            Ok(())
        } else {
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
        };
        assert_eq!(
            plan(&k, mech, op, 100),
            want,
            "expired {kind:?} 0x{mech:x} {:?}",
            op.names()
        );
    }
}

#[test]
fn a_key_exchange_key_only_imports() {
    for bits in [2048, 3072, 4096] {
        let mut kek = key(KeyKind::Rsa(bits));
        kek.ops = KeyOps::IMPORT;
        for mech in MECHS {
            for op in OPS {
                let got = plan(&kek, mech, op, 0);
                if mech == CKM_RSA_AES_KEY_WRAP && op == KeyOps::UNWRAP {
                    assert_eq!(got, Ok(()), "KEK {bits} BYOK unwrap");
                } else {
                    let want = match expected(KeyKind::Rsa(bits), mech, op) {
                        // Every mechanism the RSA key could use is refused: no op but import.
                        CKR_OK => CKR_KEY_FUNCTION_NOT_PERMITTED,
                        rv => rv,
                    };
                    assert_eq!(
                        got,
                        Err(Error(want)),
                        "KEK {bits} 0x{mech:x} {:?}",
                        op.names()
                    );
                }
            }
        }
        // An expired or disabled KEK imports nothing.
        let mut late = kek.clone();
        late.exp = Some(100);
        assert_eq!(
            plan(&late, CKM_RSA_AES_KEY_WRAP, KeyOps::UNWRAP, 100),
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
        );
        kek.enabled = false;
        assert_eq!(
            plan(&kek, CKM_RSA_AES_KEY_WRAP, KeyOps::UNWRAP, 0),
            Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED))
        );
    }
}

#[test]
fn rsa_aes_key_wrap_parameters_are_checked() {
    let mut kek = key(KeyKind::Rsa(2048));
    kek.ops = KeyOps::IMPORT;
    let with = |aes_bits, hash, mgf, label: &[u8]| Mechanism {
        ty: CKM_RSA_AES_KEY_WRAP,
        param: Param::RsaAesKeyWrap {
            aes_bits,
            oaep: Box::new(Param::Oaep {
                hash,
                mgf,
                source: CKZ_DATA_SPECIFIED,
                label: label.to_vec(),
            }),
        },
    };
    let plan = |m: &Mechanism| cipher_plan(m, &kek, KeyOps::UNWRAP, 0).map(|_| ());
    for bits in [128, 192, 256] {
        assert_eq!(plan(&with(bits, CKM_SHA_1, CKG_MGF1_SHA1, b"")), Ok(()));
    }
    assert_eq!(plan(&with(256, CKM_SHA256, CKG_MGF1_SHA256, b"")), Ok(()));
    for m in [
        with(512, CKM_SHA_1, CKG_MGF1_SHA1, b""),
        with(0, CKM_SHA_1, CKG_MGF1_SHA1, b""),
        with(256, CKM_SHA384, CKG_MGF1_SHA384, b""),
        with(256, CKM_SHA256, CKG_MGF1_SHA1, b""),
        with(256, CKM_SHA_1, CKG_MGF1_SHA1, b"label"),
        Mechanism::new(CKM_RSA_AES_KEY_WRAP),
    ] {
        assert_eq!(plan(&m), Err(Error(CKR_MECHANISM_PARAM_INVALID)), "{m:?}");
    }
}
