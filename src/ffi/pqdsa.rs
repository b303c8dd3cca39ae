//! A third foreign interface: the aws-lc ML-DSA calls aws-lc-rs 1.19 has no
//! API for — signing and verifying with a FIPS 204 context string (§5.2–5.3,
//! at most 255 bytes). aws-lc-rs's `PqdsaKeyPair` signs with the empty
//! context only; this is the same aws-lc code (the aws-lc-sys that aws-lc-rs
//! links), reached through `EVP_DigestSign`/`EVP_DigestVerify` with
//! `EVP_PKEY_CTX_set1_signature_context_string`. Every aws-lc object is freed
//! by a `Drop`; no call here panics.

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
}
