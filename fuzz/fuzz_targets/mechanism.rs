//! Mechanism parameters: a mechanism drawn from the registry (or one it does
//! not hold) and a parameter (raw bytes, or a `CK_RSA_PKCS_PSS_PARAMS` /
//! `CK_RSA_PKCS_OAEP_PARAMS` / `CK_GCM_PARAMS` / `CK_RSA_AES_KEY_WRAP_PARAMS` /
//! `CK_SIGN_ADDITIONAL_CONTEXT` / `CK_HASH_SIGN_ADDITIONAL_CONTEXT`
//! with random fields, lengths and NULLs, its pointers into the input; half
//! the time the structure the registry row names) go through the ABI's
//! `CK_MECHANISM` parser, then through the sign, cipher and digest plans
//! against a key of each type; whatever a plan accepts must be a registry row
//! that serves the operation and takes the key. A cipher the plans accept runs on
//! the rest of the input, single-part and multi-part: both must agree, an
//! encryption must decrypt back, and no output may exceed the length the
//! length query promised.
#![no_main]

use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;
use softmhsm::crypto;
use softmhsm::engine::key::{KeyKind, KeyOps};
use softmhsm::engine::mechanism::{lookup, ParamKind, REGISTRY};
use softmhsm::engine::rules::{self, Cipher, CipherScheme};
use softmhsm::ffi::fuzzing;
use softmhsm::token::operation::{unwrap_bytes, CipherCtx, CipherKey, Stage};
use softmhsm_fuzz::{fixtures, Input};
use std::mem::size_of;
use std::sync::OnceLock;

/// A fixed "now": the fixtures have no dates, and runs must be reproducible.
const NOW: i64 = 1_800_000_000;

/// Mechanisms a PKCS#11 token may offer and softmhsm does not (besides
/// every mechanism of the registry, which [`mechanisms`] lists).
const UNLISTED: &[CK_MECHANISM_TYPE] = &[
    CKM_SHA1_RSA_PKCS_PSS,
    CKM_SHA224_RSA_PKCS_PSS,
    CKM_SHA_1,
    CKM_MD5_RSA_PKCS,
    CKM_AES_ECB,
    CKM_AES_CTR,
    CKM_AES_KEY_WRAP_PAD,
    CKM_VENDOR_DEFINED,
];

/// The mechanisms an input picks from: the registry's rows, then [`UNLISTED`].
fn mechanisms() -> &'static [CK_MECHANISM_TYPE] {
    static M: OnceLock<Vec<CK_MECHANISM_TYPE>> = OnceLock::new();
    M.get_or_init(|| {
        REGISTRY
            .iter()
            .map(|d| d.ty)
            .chain(UNLISTED.iter().copied())
            .collect()
    })
}

const HASHES: &[CK_ULONG] = &[CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512, 0];
const MGFS: &[CK_ULONG] = &[
    CKG_MGF1_SHA1,
    CKG_MGF1_SHA224,
    CKG_MGF1_SHA256,
    CKG_MGF1_SHA384,
    CKG_MGF1_SHA512,
    0,
];
/// ML-DSA's hedge variants, and one that is none.
const HEDGES: &[CK_ULONG] = &[
    CKH_HEDGE_PREFERRED,
    CKH_HEDGE_REQUIRED,
    CKH_DETERMINISTIC_REQUIRED,
    7,
];
const SMALL: &[CK_ULONG] = &[0, 1, 12, 16, 20, 32, 48, 64, 96, 104, 112, 120, 128, 129];

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let ty = inp.ulong(mechanisms());
    let mut buf: Vec<u8> = Vec::new();
    let mut oaep_buf: Vec<u8> = Vec::new();
    // Half the inputs give the structure the registry row names, the rest any.
    let kind = lookup(ty).map_or(ParamKind::None, |d| d.param);
    let sel = inp.u8();
    let choice = if sel & 1 == 0 {
        match kind {
            ParamKind::None => 0,
            ParamKind::Iv => 1,
            ParamKind::Pss => 2,
            ParamKind::Oaep => 3,
            ParamKind::Gcm => 4,
            ParamKind::RsaAesKeyWrap => 5,
            ParamKind::SignContext => 6,
            ParamKind::HashSignContext => 7,
        }
    } else {
        (sel >> 1) % 8
    };
    let (param, len): (*const u8, CK_ULONG) = match choice {
        // NULL parameter with any length.
        0 => {
            let len = if inp.u8() & 1 == 0 {
                0
            } else {
                inp.u64() as CK_ULONG
            };
            (std::ptr::null(), len)
        }
        // Raw bytes of the input (CBC IVs, or anything for any mechanism).
        1 => {
            let n = inp.u8() as usize;
            let b = inp.take(n);
            // Raw bytes exactly the size of a structure with pointers would hand
            // the parser wild pointers (a caller's bug, not the library's): such
            // bytes lose their last byte, and the parser refuses them on size.
            let with_pointers = match kind {
                ParamKind::Oaep => Some(size_of::<CK_RSA_PKCS_OAEP_PARAMS>()),
                ParamKind::Gcm => Some(size_of::<CK_GCM_PARAMS>()),
                ParamKind::RsaAesKeyWrap => Some(size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>()),
                ParamKind::SignContext => Some(size_of::<CK_SIGN_ADDITIONAL_CONTEXT>()),
                ParamKind::HashSignContext => Some(size_of::<CK_HASH_SIGN_ADDITIONAL_CONTEXT>()),
                _ => None,
            };
            let b = if with_pointers == Some(b.len()) {
                &b[..b.len() - 1]
            } else {
                b
            };
            if b.is_empty() {
                (std::ptr::NonNull::<u8>::dangling().as_ptr(), 0)
            } else {
                (b.as_ptr(), b.len() as CK_ULONG)
            }
        }
        2 => {
            let p = CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: inp.ulong(HASHES),
                mgf: inp.ulong(MGFS),
                sLen: inp.ulong(SMALL),
            };
            struct_param(&mut inp, &mut buf, &p)
        }
        3 => {
            let (src, src_len) = slice_or_null(&mut inp);
            let p = CK_RSA_PKCS_OAEP_PARAMS {
                hashAlg: inp.ulong(HASHES),
                mgf: inp.ulong(MGFS),
                source: inp.ulong(&[CKZ_DATA_SPECIFIED, 0, 2]),
                pSourceData: src as *mut _,
                ulSourceDataLen: src_len,
            };
            struct_param(&mut inp, &mut buf, &p)
        }
        6 => {
            let (ctx, ctx_len) = slice_or_null(&mut inp);
            let p = CK_SIGN_ADDITIONAL_CONTEXT {
                hedgeVariant: inp.ulong(HEDGES),
                pContext: ctx as *mut _,
                ulContextLen: ctx_len,
            };
            struct_param(&mut inp, &mut buf, &p)
        }
        7 => {
            let (ctx, ctx_len) = slice_or_null(&mut inp);
            let p = CK_HASH_SIGN_ADDITIONAL_CONTEXT {
                hedgeVariant: inp.ulong(HEDGES),
                pContext: ctx as *mut _,
                ulContextLen: ctx_len,
                hash: inp.ulong(&[CKM_SHA256, CKM_SHA3_224, CKM_SHA512, CKM_SHA_1, 0]),
            };
            struct_param(&mut inp, &mut buf, &p)
        }
        5 => {
            let (src, src_len) = slice_or_null(&mut inp);
            let oaep = CK_RSA_PKCS_OAEP_PARAMS {
                hashAlg: inp.ulong(HASHES),
                mgf: inp.ulong(MGFS),
                source: inp.ulong(&[CKZ_DATA_SPECIFIED, 0, 2]),
                pSourceData: src as *mut _,
                ulSourceDataLen: src_len,
            };
            let (inner, _) = struct_param(&mut inp, &mut oaep_buf, &oaep);
            let p = CK_RSA_AES_KEY_WRAP_PARAMS {
                ulAESKeyBits: inp.ulong(&[128, 192, 256, 0, 512]),
                // The inner OAEP parameter is read at its full size: never shorter.
                pOAEPParams: if inp.u8() == 0
                    || oaep_buf.len() < size_of::<CK_RSA_PKCS_OAEP_PARAMS>()
                {
                    std::ptr::null_mut()
                } else {
                    inner as *mut _
                },
            };
            struct_param(&mut inp, &mut buf, &p)
        }
        _ => {
            let (iv, iv_len) = slice_or_null(&mut inp);
            let (aad, aad_len) = slice_or_null(&mut inp);
            let p = CK_GCM_PARAMS {
                pIv: iv as *mut _,
                ulIvLen: iv_len,
                ulIvBits: inp.ulong(SMALL),
                pAAD: aad as *mut _,
                ulAADLen: aad_len,
                ulTagBits: inp.ulong(SMALL),
            };
            struct_param(&mut inp, &mut buf, &p)
        }
    };
    let raw = CK_MECHANISM {
        mechanism: ty,
        pParameter: param as *mut _,
        ulParameterLen: len,
    };
    let mech = match unsafe { fuzzing::mechanism(&raw) } {
        Ok(m) => m,
        Err(e) => {
            assert!(
                [CKR_ARGUMENTS_BAD, CKR_MECHANISM_PARAM_INVALID].contains(&e.rv()),
                "unexpected {:#x}",
                e.rv()
            );
            return;
        }
    };
    assert_eq!(mech.ty, ty);
    let _ = rules::digest_hash(&mech);
    let chunk = inp.u8() as usize % 40 + 1;
    let text = inp.rest();
    for (i, f) in fixtures().iter().enumerate() {
        let key = f.rec.key().expect("fixture is a key");
        // What a plan accepts, the registry lists: a row that serves the
        // operation, takes the key and appears in its CKA_ALLOWED_MECHANISMS.
        let listed = |op: KeyOps| {
            let row = lookup(ty).expect("an accepted mechanism is in the registry");
            assert!(
                row.serves(op) && row.keys.fits(key.kind),
                "0x{ty:x} {op:?} on {:?}",
                key.kind
            );
            assert!(rules::usable_mechanisms(key.kind, key.ops).contains(&ty));
        };
        for op in [KeyOps::SIGN, KeyOps::VERIFY] {
            if rules::sign_plan(&mech, key, op, NOW).is_ok() {
                listed(op);
            }
        }
        for op in [KeyOps::ENCRYPT, KeyOps::DECRYPT, KeyOps::UNWRAP] {
            let _ = rules::cipher_serves(ty, op);
            if let Ok(c) = rules::cipher_plan(&mech, key, op, NOW) {
                listed(op);
                run_cipher(i, f.kind, &c, op, text, chunk);
            }
        }
        if rules::cipher_plan(&mech, key, KeyOps::WRAP, NOW).is_ok() {
            listed(KeyOps::WRAP);
        }
        // C_EncapsulateKey / C_DecapsulateKey (ML-KEM, in builds that have it).
        for op in [KeyOps::WRAP, KeyOps::UNWRAP] {
            if rules::kem_plan(&mech, key, op, NOW).is_ok() {
                listed(op);
            }
        }
    }
});

/// A slice of the input, or NULL with an arbitrary length.
fn slice_or_null(inp: &mut Input<'_>) -> (*const u8, CK_ULONG) {
    let sel = inp.u8();
    if sel == 0xff {
        (std::ptr::null(), inp.ulong(SMALL))
    } else {
        let b = inp.take(sel as usize % 40);
        if b.is_empty() {
            (std::ptr::null(), 0)
        } else {
            (b.as_ptr(), b.len() as CK_ULONG)
        }
    }
}

/// A parameter struct in a buffer at least as long as the length declared
/// for it (usually its exact size; sometimes a little off).
fn struct_param<T>(inp: &mut Input<'_>, buf: &mut Vec<u8>, p: &T) -> (*const u8, CK_ULONG) {
    let size = size_of::<T>();
    let len = match inp.u8() % 8 {
        0 => size - 1,
        1 => size + 1,
        2 => 0,
        3 => size / 2,
        _ => size,
    };
    buf.resize(size.max(len), 0);
    // SAFETY: `p` is a plain C struct of `size` bytes and `buf` holds at least that.
    unsafe { std::ptr::copy_nonoverlapping(p as *const T as *const u8, buf.as_mut_ptr(), size) };
    (buf.as_ptr(), len as CK_ULONG)
}

/// The parsed keys of fixture `i`: (for encryption, for decryption).
fn cipher_keys(i: usize, kind: KeyKind) -> &'static (CipherKey, CipherKey) {
    static KEYS: OnceLock<Vec<(CipherKey, CipherKey)>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let p = crypto::provider();
        fixtures()
            .iter()
            .map(|f| match f.kind {
                KeyKind::Aes(_) => {
                    let k = CipherKey::Aes(p.aes(&f.material).expect("AES fixture"));
                    (k.clone(), k)
                }
                KeyKind::Rsa(_) => {
                    let private = p.rsa_private(&f.material).expect("RSA fixture");
                    let crypto::PublicKey::Rsa { n, e } = private.public() else {
                        unreachable!("RSA fixture has an RSA public key")
                    };
                    let public = p.rsa_public(&n, &e).expect("RSA public");
                    (CipherKey::RsaPublic(public), CipherKey::RsaPrivate(private))
                }
                // No EC or post-quantum cipher: a placeholder the plans never pick.
                KeyKind::Ec(_) | KeyKind::MlDsa(_) | KeyKind::MlKem(_) => {
                    let k = CipherKey::Aes(p.aes(&[0; 16]).expect("AES"));
                    (k.clone(), k)
                }
            })
            .collect()
    });
    assert!(!matches!(kind, KeyKind::Ec(_)), "no cipher plan for EC");
    &keys[i]
}

/// Run an accepted cipher on `text`: single-part and in `chunk`-byte parts.
fn run_cipher(i: usize, kind: KeyKind, c: &Cipher, op: KeyOps, text: &[u8], chunk: usize) {
    let (enc_key, dec_key) = cipher_keys(i, kind);
    if op == KeyOps::UNWRAP {
        let _ = unwrap_bytes(dec_key, c, text);
        return;
    }
    if matches!(c.scheme, CipherScheme::AesKw | CipherScheme::AesKwp) {
        return; // wrap mechanisms only serve wrap/unwrap
    }
    let encrypt = op == KeyOps::ENCRYPT;
    let key = if encrypt { enc_key } else { dec_key };
    let single = one_shot(key, c, encrypt, text);
    let multi = in_parts(key, c, encrypt, text, chunk);
    let rsa = matches!(c.scheme, CipherScheme::RsaPkcs1 | CipherScheme::RsaOaep);
    if let Ok(s) = &single {
        match &multi {
            // RSA encryption is randomised: only the lengths compare.
            Ok(m) if rsa && encrypt => assert_eq!(s.len(), m.len()),
            Ok(m) => assert_eq!(s, m, "single-part and multi-part differ"),
            Err(e) => panic!(
                "single-part succeeded, multi-part failed with {:#x}",
                e.rv()
            ),
        }
        // Whatever encrypts must decrypt back (RSA encryption is randomised:
        // decrypt the single-part ciphertext). An RSA private-key operation
        // costs milliseconds here, a hundred AES inputs: one RSA input in
        // eight checks it.
        if encrypt && (!rsa || chunk % 8 == 1) {
            let back = one_shot(dec_key, c, false, s).expect("own ciphertext decrypts");
            assert_eq!(&back[..], text, "decryption of an encryption differs");
        }
    }
    if !rsa {
        // AES is deterministic: multi-part success needs single-part success.
        if multi.is_ok() {
            assert!(single.is_ok(), "multi-part succeeded, single-part failed");
        }
    }
}

fn one_shot(
    key: &CipherKey,
    c: &Cipher,
    encrypt: bool,
    text: &[u8],
) -> Result<Vec<u8>, softmhsm::error::Error> {
    let ctx = CipherCtx::new(key.clone(), c.clone(), encrypt);
    let promised = ctx.known_len(text.len(), Stage::Single);
    let out = ctx.run(text, Stage::Single)?.out.to_vec();
    if let Some(n) = promised {
        assert!(out.len() <= n, "output {} > promised {n}", out.len());
    }
    Ok(out)
}

fn in_parts(
    key: &CipherKey,
    c: &Cipher,
    encrypt: bool,
    text: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, softmhsm::error::Error> {
    let mut ctx = CipherCtx::new(key.clone(), c.clone(), encrypt);
    let mut out = Vec::new();
    for part in text.chunks(chunk) {
        let promised = ctx.known_len(part.len(), Stage::Update);
        let step = ctx.run(part, Stage::Update)?;
        if let Some(n) = promised {
            assert!(step.out.len() <= n, "update output over promise");
        }
        out.extend_from_slice(&step.out);
        assert!(ctx.commit(step, part), "an update ended the operation");
    }
    let promised = ctx.known_len(0, Stage::Final);
    let step = ctx.run(&[], Stage::Final)?;
    if let Some(n) = promised {
        assert!(step.out.len() <= n, "final output over promise");
    }
    out.extend_from_slice(&step.out);
    assert!(!ctx.commit(step, &[]), "final did not end the operation");
    Ok(out)
}
