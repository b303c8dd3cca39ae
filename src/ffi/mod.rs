//! The C ABI (DESIGN §5): every `C_*` entry point catches panics, turns raw
//! pointers into checked Rust values, calls one safe function, and returns its
//! `CK_RV`. `unsafe` lives here and nowhere else in the library.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod crypto;
mod general;
mod interface;
mod keys;
mod object;
mod session;
mod slot;
mod unsupported;

use crate::engine::attributes::{Attr, Template};
use crate::engine::mechanism::{lookup, Mechanism, Param, ParamKind};
use crate::error::{Error, Result};
use crate::token::operation::OutBuf;
use cryptoki_sys::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Largest single attribute value or data buffer read from a caller (256 MiB):
/// anything larger is a corrupt length, not data.
const MAX_INPUT: usize = 256 << 20;

/// Run an entry point body: a panic becomes `CKR_GENERAL_ERROR` instead of
/// unwinding into (and, since Rust 1.81, aborting) the host process.
pub(crate) fn entry(f: impl FnOnce() -> Result<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => {
            log::debug!("returning {e}");
            e.rv()
        }
        Err(_) => {
            log::error!("internal panic caught at the PKCS#11 boundary");
            CKR_GENERAL_ERROR
        }
    }
}

/// A caller's input buffer; NULL is allowed only with length 0.
pub(crate) unsafe fn input<'a>(p: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8]> {
    let len = usize::try_from(len).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || len > MAX_INPUT {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// A caller's output buffer with its in/out length: NULL buffer = length query.
pub(crate) unsafe fn output<'a>(p: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<OutBuf<'a>> {
    if len.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    if p.is_null() {
        return Ok(None);
    }
    let n = usize::try_from(*len).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
    Ok(Some(std::slice::from_raw_parts_mut(p, n)))
}

/// Run a producing call under the output-length convention: on success or a
/// length query write the length to `*len`; on `CKR_BUFFER_TOO_SMALL` write the
/// length needed (asked with a length query, which changes nothing).
pub(crate) unsafe fn produce(
    p: *mut CK_BYTE,
    len: *mut CK_ULONG,
    mut f: impl FnMut(OutBuf<'_>) -> Result<usize>,
) -> Result<()> {
    let out = output(p, len)?;
    match f(out) {
        Ok(n) => {
            *len = n as CK_ULONG;
            Ok(())
        }
        Err(Error(CKR_BUFFER_TOO_SMALL)) => {
            if let Ok(n) = f(None) {
                *len = n as CK_ULONG;
            }
            Err(Error(CKR_BUFFER_TOO_SMALL))
        }
        Err(e) => Err(e),
    }
}

/// Copy a caller's template into Rust values.
pub(crate) unsafe fn template(p: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Template> {
    let count = usize::try_from(count).map_err(|_| Error(CKR_ARGUMENTS_BAD))?;
    if count == 0 {
        return Ok(Template::default());
    }
    if p.is_null() || count > 4096 {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    let raw = std::slice::from_raw_parts(p, count);
    let mut attrs = Vec::with_capacity(count);
    for a in raw {
        let value = input(a.pValue as *const CK_BYTE, a.ulValueLen)?.to_vec();
        attrs.push(Attr { ty: a.type_, value });
    }
    Ok(Template(attrs))
}

/// Copy a caller's `CK_MECHANISM`, parsing the parameters the token understands.
pub(crate) unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism> {
    if p.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    let m = &*p;
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
            let pss = std::ptr::read_unaligned(m.pParameter as *const CK_RSA_PKCS_PSS_PARAMS);
            Param::Pss {
                hash: pss.hashAlg,
                mgf: pss.mgf,
                salt_len: pss.sLen,
            }
        }
        ParamKind::Oaep => {
            sized(std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>())?;
            oaep_param(m.pParameter as *const CK_RSA_PKCS_OAEP_PARAMS)?
        }
        ParamKind::RsaAesKeyWrap => {
            sized(std::mem::size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>())?;
            let w = std::ptr::read_unaligned(m.pParameter as *const CK_RSA_AES_KEY_WRAP_PARAMS);
            if w.pOAEPParams.is_null() {
                return Err(invalid());
            }
            Param::RsaAesKeyWrap {
                aes_bits: w.ulAESKeyBits,
                oaep: Box::new(oaep_param(w.pOAEPParams)?),
            }
        }
        ParamKind::Gcm => {
            sized(std::mem::size_of::<CK_GCM_PARAMS>())?;
            let g = std::ptr::read_unaligned(m.pParameter as *const CK_GCM_PARAMS);
            // ulIvBits is ignored, as PKCS#11 3.0 §2.12.3 says (ulIvLen is the length).
            Param::Gcm {
                iv: input(g.pIv, g.ulIvLen).map_err(|_| invalid())?.to_vec(),
                aad: input(g.pAAD, g.ulAADLen).map_err(|_| invalid())?.to_vec(),
                tag_bits: g.ulTagBits,
            }
        }
        ParamKind::None | ParamKind::Iv if len == 0 => Param::None,
        ParamKind::None | ParamKind::Iv => {
            if len > MAX_INPUT {
                return Err(invalid());
            }
            Param::Bytes(std::slice::from_raw_parts(m.pParameter as *const u8, len).to_vec())
        }
    };
    Ok(Mechanism {
        ty: m.mechanism,
        param,
    })
}

/// Copy a caller's non-NULL `CK_RSA_PKCS_OAEP_PARAMS`.
unsafe fn oaep_param(p: *const CK_RSA_PKCS_OAEP_PARAMS) -> Result<Param> {
    let invalid = || Error(CKR_MECHANISM_PARAM_INVALID);
    let o = std::ptr::read_unaligned(p);
    let label = input(o.pSourceData as *const CK_BYTE, o.ulSourceDataLen)
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
    pub unsafe fn template(p: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Template> {
        super::template(p, count)
    }

    /// [`mechanism`]: a caller's `CK_MECHANISM` with its parameter parsed.
    pub unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism> {
        super::mechanism(p)
    }

    /// The key material of a `C_CreateObject` import template.
    pub fn import_material(t: &Template) -> Result<SecretBytes> {
        object::import_material(t)
    }
}

/// Write a value through a caller's pointer (`CKR_ARGUMENTS_BAD` if NULL).
pub(crate) unsafe fn put<T>(p: *mut T, v: T) -> Result<()> {
    if p.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    p.write(v);
    Ok(())
}

/// Fill a blank-padded fixed-width PKCS#11 string field.
pub(crate) fn pad(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    let b = s.as_bytes();
    let n = b.len().min(dst.len());
    dst[..n].copy_from_slice(&b[..n]);
}

/// Write a list under the PKCS#11 convention (NULL list = count query).
pub(crate) unsafe fn put_list<T: Copy>(
    list: *mut T,
    count: *mut CK_ULONG,
    items: &[T],
) -> Result<()> {
    if count.is_null() {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    if list.is_null() {
        *count = items.len() as CK_ULONG;
        return Ok(());
    }
    if (*count as usize) < items.len() {
        *count = items.len() as CK_ULONG;
        return Err(Error(CKR_BUFFER_TOO_SMALL));
    }
    std::ptr::copy_nonoverlapping(items.as_ptr(), list, items.len());
    *count = items.len() as CK_ULONG;
    Ok(())
}
