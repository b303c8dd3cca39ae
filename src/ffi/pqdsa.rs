//! A third foreign interface: the aws-lc ML-DSA calls aws-lc-rs 1.19 has no
//! API for — signing and verifying with a FIPS 204 context string (§5.2–5.3,
//! at most 255 bytes), and over a μ computed outside (HashML-DSA, external μ),
//! with the hashes HashML-DSA pre-hashes with (SHA3-224 and the SHAKEs are
//! not in aws-lc-rs's `digest`). aws-lc-rs's `PqdsaKeyPair` signs with the
//! empty context only; this is the same aws-lc code (the aws-lc-sys that
//! aws-lc-rs links), reached through `EVP_DigestSign`/`EVP_DigestVerify` with
//! `EVP_PKEY_CTX_set1_signature_context_string`, and for μ through
//! `EVP_PKEY_sign`/`EVP_PKEY_verify`, which on an ML-DSA key take μ as their
//! "digest". Every aws-lc object is freed by a `Drop`; no call here panics.

use crate::crypto::PreHash;
use aws_lc_sys as lc;
use std::ffi::c_int;
use std::ptr::{self, NonNull};

/// The aws-lc NIDs of ML-DSA-44, -65 and -87.
pub use lc::{NID_MLDSA44, NID_MLDSA65, NID_MLDSA87};

/// An aws-lc `EVP_PKEY` of type `EVP_PKEY_PQDSA` (private or public).
pub struct PqdsaKey(NonNull<lc::EVP_PKEY>);

// SAFETY: an EVP_PKEY is never mutated after construction here; aws-lc
// reference-counts it atomically and signs and verifies through it from any
// thread (each operation has its own EVP_MD_CTX and EVP_PKEY_CTX).
unsafe impl Send for PqdsaKey {}
// SAFETY: as above: concurrent use is read-only.
unsafe impl Sync for PqdsaKey {}

impl Drop for PqdsaKey {
    fn drop(&mut self) {
        // SAFETY: the pointer came from an aws-lc constructor and is freed once.
        // aws-lc's OPENSSL_free cleanses what it frees (the expanded key).
        unsafe { lc::EVP_PKEY_free(self.0.as_ptr()) }
    }
}

/// An `EVP_MD_CTX`, freed on drop.
struct MdCtx(NonNull<lc::EVP_MD_CTX>);

impl Drop for MdCtx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_MD_CTX_new and is freed once; the
        // EVP_PKEY_CTX it owns goes with it.
        unsafe { lc::EVP_MD_CTX_free(self.0.as_ptr()) }
    }
}

/// An `EVP_PKEY_CTX`, freed on drop.
struct PkeyCtx(NonNull<lc::EVP_PKEY_CTX>);

impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_PKEY_CTX_new and is freed once.
        unsafe { lc::EVP_PKEY_CTX_free(self.0.as_ptr()) }
    }
}

/// A failed aws-lc call: its error queue (thread-local) is emptied so it does
/// not grow or leak into the next caller's diagnosis.
fn failed<T>() -> Option<T> {
    clear_errors();
    None
}

fn clear_errors() {
    // SAFETY: no arguments; clears this thread's error queue.
    unsafe { lc::ERR_clear_error() }
}

impl PqdsaKey {
    /// The private key expanded from its 32-byte seed ξ (FIPS 204 Algorithm 6).
    pub fn from_seed(nid: c_int, seed: &[u8]) -> Option<PqdsaKey> {
        // SAFETY: `seed` is a valid slice of `seed.len()` bytes; aws-lc copies it.
        let p = unsafe { lc::EVP_PKEY_pqdsa_new_raw_private_key(nid, seed.as_ptr(), seed.len()) };
        NonNull::new(p).map(PqdsaKey).or_else(failed)
    }

    /// The public key from its FIPS 204 pkEncode.
    pub fn from_public(nid: c_int, key: &[u8]) -> Option<PqdsaKey> {
        // SAFETY: `key` is a valid slice of `key.len()` bytes; aws-lc copies it.
        let p = unsafe { lc::EVP_PKEY_pqdsa_new_raw_public_key(nid, key.as_ptr(), key.len()) };
        NonNull::new(p).map(PqdsaKey).or_else(failed)
    }

    /// An EVP_MD_CTX set up by `init` (DigestSignInit or DigestVerifyInit) for
    /// this key, with `context` as the signature context.
    fn md_ctx(
        &self,
        context: &[u8],
        init: unsafe extern "C" fn(
            *mut lc::EVP_MD_CTX,
            *mut *mut lc::EVP_PKEY_CTX,
            *const lc::EVP_MD,
            *mut lc::ENGINE,
            *mut lc::EVP_PKEY,
        ) -> c_int,
    ) -> Option<MdCtx> {
        // SAFETY: no arguments; the result is checked for NULL below.
        let ctx = MdCtx(NonNull::new(unsafe { lc::EVP_MD_CTX_new() }).or_else(failed)?);
        let mut pctx: *mut lc::EVP_PKEY_CTX = ptr::null_mut();
        // SAFETY: `ctx` and the key are live aws-lc objects; ML-DSA takes no
        // digest (NULL) and no engine; `pctx` receives a pointer owned by `ctx`.
        let ok = unsafe {
            init(
                ctx.0.as_ptr(),
                &mut pctx,
                ptr::null(),
                ptr::null_mut(),
                self.0.as_ptr(),
            )
        };
        if ok != 1 || pctx.is_null() {
            return failed();
        }
        // SAFETY: `pctx` is the live EVP_PKEY_CTX of `ctx`; `context` is a valid
        // slice, copied by aws-lc (which refuses more than 255 bytes).
        let ok = unsafe {
            lc::EVP_PKEY_CTX_set1_signature_context_string(pctx, context.as_ptr(), context.len())
        };
        if ok != 1 {
            return failed();
        }
        Some(ctx)
    }

    /// Pure ML-DSA, hedged (FIPS 204 Algorithm 2), of `message` under
    /// `context`; `max_len` is the parameter set's signature length.
    pub fn sign(&self, message: &[u8], context: &[u8], max_len: usize) -> Option<Vec<u8>> {
        let ctx = self.md_ctx(context, lc::EVP_DigestSignInit)?;
        let mut out = vec![0u8; max_len];
        let mut len = out.len();
        // SAFETY: `out` has room for `len` bytes (the set's signature length,
        // which aws-lc checks against its own); `message` is a valid slice.
        let ok = unsafe {
            lc::EVP_DigestSign(
                ctx.0.as_ptr(),
                out.as_mut_ptr(),
                &mut len,
                message.as_ptr(),
                message.len(),
            )
        };
        if ok != 1 || len > out.len() {
            return failed();
        }
        out.truncate(len);
        Some(out)
    }

    /// Whether `signature` is a pure ML-DSA signature of `message` under
    /// `context` (FIPS 204 Algorithm 3).
    pub fn verify(&self, message: &[u8], context: &[u8], signature: &[u8]) -> bool {
        let Some(ctx) = self.md_ctx(context, lc::EVP_DigestVerifyInit) else {
            return false;
        };
        // SAFETY: `signature` and `message` are valid slices of their lengths.
        let ok = unsafe {
            lc::EVP_DigestVerify(
                ctx.0.as_ptr(),
                signature.as_ptr(),
                signature.len(),
                message.as_ptr(),
                message.len(),
            )
        };
        if ok != 1 {
            clear_errors();
        }
        ok == 1
    }

    /// An EVP_PKEY_CTX for this key set up by `init` (sign or verify init),
    /// with no context string: aws-lc refuses one beside μ, which already
    /// carries it.
    fn pkey_ctx(
        &self,
        init: unsafe extern "C" fn(*mut lc::EVP_PKEY_CTX) -> c_int,
    ) -> Option<PkeyCtx> {
        // SAFETY: the key is a live EVP_PKEY (aws-lc takes a reference); no engine.
        let ctx = PkeyCtx(
            NonNull::new(unsafe { lc::EVP_PKEY_CTX_new(self.0.as_ptr(), ptr::null_mut()) })
                .or_else(failed)?,
        );
        // SAFETY: `ctx` is a live EVP_PKEY_CTX.
        if unsafe { init(ctx.0.as_ptr()) } != 1 {
            return failed();
        }
        Some(ctx)
    }

    /// `ML-DSA.Sign_internal` over μ (64 bytes; aws-lc refuses another
    /// length), hedged: aws-lc draws rnd itself. `max_len` is the parameter
    /// set's signature length.
    pub fn sign_mu(&self, mu: &[u8], max_len: usize) -> Option<Vec<u8>> {
        let ctx = self.pkey_ctx(lc::EVP_PKEY_sign_init)?;
        let mut out = vec![0u8; max_len];
        let mut len = out.len();
        // SAFETY: `out` has room for `len` bytes (aws-lc checks them against
        // the set's signature length); `mu` is a valid slice.
        let ok = unsafe {
            lc::EVP_PKEY_sign(
                ctx.0.as_ptr(),
                out.as_mut_ptr(),
                &mut len,
                mu.as_ptr(),
                mu.len(),
            )
        };
        if ok != 1 || len > out.len() {
            return failed();
        }
        out.truncate(len);
        Some(out)
    }

    /// Whether `signature` is an ML-DSA signature over μ
    /// (`ML-DSA.Verify_internal` from step 7).
    pub fn verify_mu(&self, mu: &[u8], signature: &[u8]) -> bool {
        let Some(ctx) = self.pkey_ctx(lc::EVP_PKEY_verify_init) else {
            return false;
        };
        // SAFETY: `signature` and `mu` are valid slices of their lengths.
        let ok = unsafe {
            lc::EVP_PKEY_verify(
                ctx.0.as_ptr(),
                signature.as_ptr(),
                signature.len(),
                mu.as_ptr(),
                mu.len(),
            )
        };
        if ok != 1 {
            clear_errors();
        }
        ok == 1
    }
}

/// A streaming aws-lc digest of a HashML-DSA pre-hash
/// (`EVP_DigestInit_ex`/`Update`/`Final`), the SHAKEs read to their
/// [`PreHash::len`].
pub struct EvpDigest {
    ctx: MdCtx,
    out_len: usize,
    xof: bool,
    /// An aws-lc call failed: `finish` then gives no digest.
    broken: bool,
}

// SAFETY: the EVP_MD_CTX is owned by this value alone and used by one thread at a time.
unsafe impl Send for EvpDigest {}

impl EvpDigest {
    /// A new digest of `hash`.
    pub fn new(hash: PreHash) -> Option<EvpDigest> {
        // SAFETY: each call takes no argument and returns a static EVP_MD.
        let (evp, xof) = unsafe {
            match hash {
                PreHash::Sha224 => (lc::EVP_sha224(), false),
                PreHash::Sha256 => (lc::EVP_sha256(), false),
                PreHash::Sha384 => (lc::EVP_sha384(), false),
                PreHash::Sha512 => (lc::EVP_sha512(), false),
                PreHash::Sha3_224 => (lc::EVP_sha3_224(), false),
                PreHash::Sha3_256 => (lc::EVP_sha3_256(), false),
                PreHash::Sha3_384 => (lc::EVP_sha3_384(), false),
                PreHash::Sha3_512 => (lc::EVP_sha3_512(), false),
                PreHash::Shake128 => (lc::EVP_shake128(), true),
                PreHash::Shake256 => (lc::EVP_shake256(), true),
            }
        };
        // SAFETY: no arguments; the result is checked for NULL below.
        let ctx = MdCtx(NonNull::new(unsafe { lc::EVP_MD_CTX_new() }).or_else(failed)?);
        // SAFETY: `ctx` is a live EVP_MD_CTX, `evp` a static EVP_MD; no engine.
        if unsafe { lc::EVP_DigestInit_ex(ctx.0.as_ptr(), evp, ptr::null_mut()) } != 1 {
            return failed();
        }
        Some(EvpDigest {
            ctx,
            out_len: hash.len(),
            xof,
            broken: false,
        })
    }

    /// Absorb `data`.
    pub fn update(&mut self, data: &[u8]) {
        // SAFETY: `ctx` is an initialised EVP_MD_CTX; `data` a valid slice.
        let ok =
            unsafe { lc::EVP_DigestUpdate(self.ctx.0.as_ptr(), data.as_ptr().cast(), data.len()) };
        if ok != 1 {
            clear_errors();
            self.broken = true;
        }
    }

    /// The digest (an XOF's first `out_len` bytes); None if a call failed.
    pub fn finish(self) -> Option<Vec<u8>> {
        if self.broken {
            return None;
        }
        let ctx = self.ctx.0.as_ptr();
        let ok = if self.xof {
            let mut out = vec![0u8; self.out_len];
            // SAFETY: `ctx` is an initialised XOF context; `out` holds `out_len` bytes.
            let ok = unsafe { lc::EVP_DigestFinalXOF(ctx, out.as_mut_ptr(), out.len()) };
            (ok == 1).then_some(out)
        } else {
            let mut out = vec![0u8; lc::EVP_MAX_MD_SIZE as usize];
            let mut len: std::ffi::c_uint = 0;
            // SAFETY: `ctx` is an initialised hash context; `out` holds
            // EVP_MAX_MD_SIZE bytes, the most any hash writes.
            let ok = unsafe { lc::EVP_DigestFinal_ex(ctx, out.as_mut_ptr(), &mut len) };
            out.truncate(len as usize);
            (ok == 1).then_some(out)
        };
        ok.or_else(failed)
    }
}
