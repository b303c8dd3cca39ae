//! The C ABI (DESIGN §5): every `C_*` entry point catches panics, turns raw
//! pointers into checked Rust values, calls one safe function, and returns its
//! `CK_RV`. `unsafe` lives here and nowhere else in the library.
//!
//! Every `unsafe` block says why it is sound: what the caller vouches for under
//! the PKCS#11 contract (a non-NULL pointer points to what the function's
//! declaration says, with the length given beside it) and which NULL or length
//! check comes before it. The helpers below state their contract under
//! `# Safety`; the entry points' contract is the PKCS#11 specification.
//! Three other foreign interfaces live here: [`shm`], the store's
//! shared-memory change counter (mmap), [`pqdsa`], the aws-lc ML-DSA
//! calls aws-lc-rs does not wrap, and [`fork`], the process id cached
//! until a fork.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod crypto;
pub mod fork;
mod general;
mod interface;
mod keys;
mod object;
#[cfg(feature = "aws-lc")]
pub mod pqdsa;
mod session;
pub mod shm;
mod slot;
mod unsupported;

use crate::engine::attributes::{Attr, Template};
use crate::engine::mechanism::{lookup, Mechanism, Param, ParamKind};
use crate::error::{Error, Result};
use crate::pool;
use crate::token::operation::OutBuf;
use cryptoki_sys::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use zeroize::Zeroizing;

/// Largest single attribute value or data buffer read from a caller (256 MiB):
/// anything larger is a corrupt length, not data.
const MAX_INPUT: usize = 256 << 20;

/// Run the body of the entry point `name`: a panic becomes `CKR_GENERAL_ERROR`
/// instead of unwinding into (and, since Rust 1.81, aborting) the host
/// process. A failure is logged at debug level naming the function; a
/// `CKR_DEVICE_ERROR` also names its cause, the store failure the call met
/// (already logged at ERROR level where it happened).
pub(crate) fn entry(name: &str, f: impl FnOnce() -> Result<()>) -> CK_RV {
    // A failure left by an earlier call (one whose caller got no error)
    // must not be blamed on this one.
    let _ = pool::last_store_failure();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) if e.rv() == CKR_DEVICE_ERROR => {
            let cause = pool::last_store_failure();
            log::debug!(
                "{name}: returning {e}: {}",
                cause.as_deref().unwrap_or("no store failure recorded")
            );
            e.rv()
        }
        Ok(Err(e)) => {
            log::debug!("{name}: returning {e}");
            e.rv()
        }
        Err(_) => {
            log::error!("{name}: internal panic caught at the PKCS#11 boundary");
            CKR_GENERAL_ERROR
        }
    }
}

/// A caller's input buffer; NULL is allowed only with length 0.
///
/// # Safety
/// `p` is NULL or points to `len` bytes that stay readable, and unchanged, for `'a`.
pub(crate) unsafe fn input<'a>(p: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8]> {
    let len = usize::try_from(len).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || len > MAX_INPUT {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: `p` is not NULL and `len` is at most MAX_INPUT (checked just above);
    // the caller guarantees `len` readable bytes behind `p` for `'a`.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A caller's output buffer with its in/out length: NULL buffer = length query.
///
/// # Safety
/// `len` is NULL or points to a readable `CK_ULONG`; `p` is NULL or points to
/// `*len` bytes that stay writable, and are touched by nothing else, for `'a`.
pub(crate) unsafe fn output<'a>(p: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<OutBuf<'a>> {
    if len.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: `len` is not NULL (checked above); the caller guarantees it readable.
    let n = usize::try_from(unsafe { *len }).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
    // SAFETY: `p` is not NULL (checked above); the caller guarantees `*len` = `n`
    // writable bytes behind it for `'a`.
    Ok(Some(unsafe { std::slice::from_raw_parts_mut(p, n) }))
}

/// Run a producing call under the output-length convention: on success or a
/// length query write the length to `*len`; on `CKR_BUFFER_TOO_SMALL` write the
/// length needed (asked with a length query, which changes nothing).
///
/// # Safety
/// As for [`output`], and `len`, when not NULL, is also writable.
pub(crate) unsafe fn produce(
    p: *mut CK_BYTE,
    len: *mut CK_ULONG,
    mut f: impl FnMut(OutBuf<'_>) -> Result<usize>,
) -> Result<()> {
    // SAFETY: this function's contract is `output`'s.
    let out = unsafe { output(p, len) }?;
    match f(out) {
        Ok(n) => {
            // SAFETY: `output` succeeded, so `len` is not NULL; the caller
            // guarantees it writable. `f` has consumed the output slice.
            unsafe { *len = n as CK_ULONG };
            Ok(())
        }
        Err(Error(CKR_BUFFER_TOO_SMALL)) => {
            if let Ok(n) = f(None) {
                // SAFETY: as above: `len` is not NULL, and writable by contract.
                unsafe { *len = n as CK_ULONG };
            }
            Err(Error(CKR_BUFFER_TOO_SMALL))
        }
        Err(e) => Err(e),
    }
}

/// Copy a caller's template into Rust values.
///
/// # Safety
/// `p` is NULL or points to `count` readable `CK_ATTRIBUTE`s, each of whose
/// `pValue` is NULL or points to `ulValueLen` readable bytes.
pub(crate) unsafe fn template(p: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Template> {
    let count = usize::try_from(count).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
    if count == 0 {
        return Ok(Template::default());
    }
    if p.is_null() || count > 4096 {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: `p` is not NULL and `count` is at most 4096 (checked just above);
    // the caller guarantees `count` attributes behind it.
    let raw = unsafe { std::slice::from_raw_parts(p, count) };
    let mut attrs = Vec::with_capacity(count);
    for a in raw {
        // SAFETY: the caller guarantees `pValue` holds `ulValueLen` bytes;
        // `input` refuses NULL with a non-zero length and oversized lengths.
        let value = unsafe { input(a.pValue as *const CK_BYTE, a.ulValueLen) }?;
        // Wiped on drop from the first copy on: the value may be key material.
        attrs.push(Attr {
            ty: a.type_,
            value: Zeroizing::new(value.to_vec()),
        });
    }
    Ok(Template(attrs))
}

/// Copy a caller's `CK_MECHANISM`, parsing the parameters the token understands.
///
/// # Safety
/// `p` is NULL or points to a readable `CK_MECHANISM` whose `pParameter` is NULL
/// or points to `ulParameterLen` readable bytes, laid out as the parameter
/// structure of its mechanism (whose own pointers follow the same rule).
pub(crate) unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism> {
    if p.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: `p` is not NULL (checked above); the caller guarantees a readable
    // `CK_MECHANISM` behind it, aligned as C lays it out.
    let m = unsafe { &*p };
    let invalid = || Error(CKR_MECHANISM_PARAM_INVALID);
    let len = usize::try_from(m.ulParameterLen).map_err(|_| invalid())?;
    if m.pParameter.is_null() && len != 0 {
        return Err(invalid());
    }
    // The registry row says which structure pParameter points to; a mechanism
    // the token does not know keeps its bytes (its plan refuses it anyway).
    let kind = lookup(m.mechanism).map_or(ParamKind::None, |d| d.param);
    let sized = |size: usize| {
        if m.pParameter.is_null() || len != size {
            Err(invalid())
        } else {
            Ok(())
        }
    };
    let param = match kind {
        ParamKind::Pss => {
            sized(std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>())?;
            // SAFETY: `pParameter` is not NULL and declared as long as the
            // structure (checked by `sized`); the caller guarantees those bytes
            // readable. The read needs no alignment.
            let pss =
                unsafe { std::ptr::read_unaligned(m.pParameter as *const CK_RSA_PKCS_PSS_PARAMS) };
            Param::Pss {
                hash: pss.hashAlg,
                mgf: pss.mgf,
                salt_len: pss.sLen,
            }
        }
        ParamKind::Oaep => {
            sized(std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>())?;
            // SAFETY: `pParameter` is not NULL and declared as long as the
            // structure (checked by `sized`); the caller guarantees it readable,
            // with `pSourceData` holding `ulSourceDataLen` bytes.
            unsafe { oaep_param(m.pParameter as *const CK_RSA_PKCS_OAEP_PARAMS) }?
        }
        ParamKind::RsaAesKeyWrap => {
            sized(std::mem::size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>())?;
            // SAFETY: `pParameter` is not NULL and declared as long as the
            // structure (checked by `sized`); the caller guarantees those bytes
            // readable. The read needs no alignment.
            let w = unsafe {
                std::ptr::read_unaligned(m.pParameter as *const CK_RSA_AES_KEY_WRAP_PARAMS)
            };
            if w.pOAEPParams.is_null() {
                return Err(invalid());
            }
            Param::RsaAesKeyWrap {
                aes_bits: w.ulAESKeyBits,
                // SAFETY: `pOAEPParams` is not NULL (checked above); the caller
                // guarantees it points to a readable `CK_RSA_PKCS_OAEP_PARAMS`.
                oaep: Box::new(unsafe { oaep_param(w.pOAEPParams) }?),
            }
        }
        ParamKind::Gcm => {
            sized(std::mem::size_of::<CK_GCM_PARAMS>())?;
            // SAFETY: `pParameter` is not NULL and declared as long as the
            // structure (checked by `sized`); the caller guarantees those bytes
            // readable. The read needs no alignment.
            let g = unsafe { std::ptr::read_unaligned(m.pParameter as *const CK_GCM_PARAMS) };
            // ulIvBits is ignored, as PKCS#11 3.0 §2.12.3 says (ulIvLen is the length).
            Param::Gcm {
                // SAFETY: the caller guarantees `pIv` holds `ulIvLen` bytes;
                // `input` refuses NULL with a non-zero length.
                iv: unsafe { input(g.pIv, g.ulIvLen) }
                    .map_err(|_| invalid())?
                    .to_vec(),
                // SAFETY: as for `pIv`: `pAAD` holds `ulAADLen` bytes, checked by `input`.
                aad: unsafe { input(g.pAAD, g.ulAADLen) }
                    .map_err(|_| invalid())?
                    .to_vec(),
                tag_bits: g.ulTagBits,
            }
        }
        // ML-DSA's parameter is optional (PKCS#11 3.2 §6.67.4): none is pure, hedged.
        ParamKind::SignContext if len == 0 => Param::None,
        ParamKind::SignContext => {
            sized(std::mem::size_of::<CK_SIGN_ADDITIONAL_CONTEXT>())?;
            // SAFETY: `pParameter` is not NULL and declared as long as the
            // structure (checked by `sized`); the caller guarantees those bytes
            // readable. The read needs no alignment.
            let c = unsafe {
                std::ptr::read_unaligned(m.pParameter as *const CK_SIGN_ADDITIONAL_CONTEXT)
            };
            if c.ulContextLen > crate::engine::rules::ML_DSA_CONTEXT_MAX as CK_ULONG {
                return Err(invalid());
            }
            Param::SignContext {
                hedge: c.hedgeVariant,
                // SAFETY: the caller guarantees `pContext` holds `ulContextLen`
                // bytes; `input` refuses NULL with a non-zero length.
                context: unsafe { input(c.pContext, c.ulContextLen) }
                    .map_err(|_| invalid())?
                    .to_vec(),
            }
        }
        // HashML-DSA's parameter is required (PKCS#11 3.2 §6.67.6): none is
        // Param::None, which its plan refuses.
        ParamKind::HashSignContext if len == 0 => Param::None,
        ParamKind::HashSignContext => {
            sized(std::mem::size_of::<CK_HASH_SIGN_ADDITIONAL_CONTEXT>())?;
            // SAFETY: `pParameter` is not NULL and declared as long as the
            // structure (checked by `sized`); the caller guarantees those bytes
            // readable. The read needs no alignment.
            let c = unsafe {
                std::ptr::read_unaligned(m.pParameter as *const CK_HASH_SIGN_ADDITIONAL_CONTEXT)
            };
            if c.ulContextLen > crate::engine::rules::ML_DSA_CONTEXT_MAX as CK_ULONG {
                return Err(invalid());
            }
            Param::HashSignContext {
                hedge: c.hedgeVariant,
                // SAFETY: the caller guarantees `pContext` holds `ulContextLen`
                // bytes; `input` refuses NULL with a non-zero length.
                context: unsafe { input(c.pContext, c.ulContextLen) }
                    .map_err(|_| invalid())?
                    .to_vec(),
                hash: c.hash,
            }
        }
        ParamKind::None | ParamKind::Iv if len == 0 => Param::None,
        ParamKind::None | ParamKind::Iv => {
            if len > MAX_INPUT {
                return Err(invalid());
            }
            // SAFETY: `len` is not 0, so `pParameter` is not NULL (checked
            // above), and at most MAX_INPUT; the caller guarantees `len`
            // readable bytes behind it.
            Param::Bytes(
                unsafe { std::slice::from_raw_parts(m.pParameter as *const u8, len) }.to_vec(),
            )
        }
    };
    Ok(Mechanism {
        ty: m.mechanism,
        param,
    })
}

/// Copy a caller's non-NULL `CK_RSA_PKCS_OAEP_PARAMS`.
///
/// # Safety
/// `p` is not NULL and points to a readable `CK_RSA_PKCS_OAEP_PARAMS` (alignment
/// not needed) whose `pSourceData` is NULL or holds `ulSourceDataLen` bytes.
unsafe fn oaep_param(p: *const CK_RSA_PKCS_OAEP_PARAMS) -> Result<Param> {
    let invalid = || Error(CKR_MECHANISM_PARAM_INVALID);
    // SAFETY: the caller guarantees `p` non-NULL and readable; the read needs no
    // alignment.
    let o = unsafe { std::ptr::read_unaligned(p) };
    // SAFETY: the caller guarantees `pSourceData` holds `ulSourceDataLen` bytes;
    // `input` refuses NULL with a non-zero length.
    let label = unsafe { input(o.pSourceData as *const CK_BYTE, o.ulSourceDataLen) }
        .map_err(|_| invalid())?
        .to_vec();
    Ok(Param::Oaep {
        hash: o.hashAlg,
        mgf: o.mgf,
        source: o.source,
        label,
    })
}

/// The ABI's input parsers, for the fuzz targets in `fuzz/`: reachable here
/// without a token. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;
    use crate::crypto::SecretBytes;

    /// [`template`]: a caller's `CK_ATTRIBUTE` array copied into a [`Template`].
    ///
    /// # Safety
    /// As for [`template`](super::template).
    pub unsafe fn template(p: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Template> {
        // SAFETY: this function's contract is `super::template`'s.
        unsafe { super::template(p, count) }
    }

    /// [`mechanism`]: a caller's `CK_MECHANISM` with its parameter parsed.
    ///
    /// # Safety
    /// As for [`mechanism`](super::mechanism).
    pub unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism> {
        // SAFETY: this function's contract is `super::mechanism`'s.
        unsafe { super::mechanism(p) }
    }

    /// The key material of a `C_CreateObject` import template.
    pub fn import_material(t: &Template) -> Result<SecretBytes> {
        crate::pool::import::material(t)
    }
}

/// Write a value through a caller's pointer (`CKR_ARGUMENTS_BAD` if NULL).
///
/// # Safety
/// `p` is NULL or valid, and aligned, for a write of one `T`.
pub(crate) unsafe fn put<T>(p: *mut T, v: T) -> Result<()> {
    if p.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: `p` is not NULL (checked above); the caller guarantees it writable.
    unsafe { p.write(v) };
    Ok(())
}

/// Fill a blank-padded fixed-width PKCS#11 string field.
pub(crate) fn pad(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    let b = s.as_bytes();
    let n = b.len().min(dst.len());
    dst[..n].copy_from_slice(&b[..n]);
}

/// Write a list under the PKCS#11 convention (NULL list = count query). In
/// every case `*count` ends up holding the length of the whole list.
///
/// # Safety
/// `count` is NULL or points to a readable, writable `CK_ULONG`; `list` is NULL
/// or points to `*count` writable `T`s.
pub(crate) unsafe fn put_list<T: Copy>(
    list: *mut T,
    count: *mut CK_ULONG,
    items: &[T],
) -> Result<()> {
    if count.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: `count` is not NULL (checked above); the caller guarantees it
    // readable and writable.
    let room = unsafe { count.replace(items.len() as CK_ULONG) };
    if list.is_null() {
        return Ok(());
    }
    if room < items.len() as CK_ULONG {
        return Err(Error(CKR_BUFFER_TOO_SMALL));
    }
    // SAFETY: `list` is not NULL and has room for `room` >= `items.len()` values
    // (checked above, guaranteed by the caller); `items` is our own memory, so
    // the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), list, items.len()) };
    Ok(())
}
