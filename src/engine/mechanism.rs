//! A caller's `CK_MECHANISM` as a safe Rust value.

use crate::crypto::Hash;
use crate::error::{Error, Result};
use cryptoki_sys::*;

/// A mechanism and its parsed parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mechanism {
    /// `CKM_*`.
    pub ty: CK_MECHANISM_TYPE,
    /// The parameter, parsed for the mechanisms that define one.
    pub param: Param,
}

/// Mechanism parameters the token understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// No parameter given.
    None,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss {
        /// `hashAlg` (a `CKM_SHA*`).
        hash: CK_MECHANISM_TYPE,
        /// `mgf` (a `CKG_MGF1_*`).
        mgf: CK_RSA_PKCS_MGF_TYPE,
        /// `sLen`.
        salt_len: CK_ULONG,
    },
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep {
        /// `hashAlg` (a `CKM_SHA*`).
        hash: CK_MECHANISM_TYPE,
        /// `mgf` (a `CKG_MGF1_*`).
        mgf: CK_RSA_PKCS_MGF_TYPE,
        /// `source` (`CKZ_DATA_SPECIFIED` or 0).
        source: CK_RSA_PKCS_OAEP_SOURCE_TYPE,
        /// The label (`pSourceData`).
        label: Vec<u8>,
    },
    /// `CK_GCM_PARAMS`.
    Gcm {
        /// `pIv`.
        iv: Vec<u8>,
        /// `pAAD`.
        aad: Vec<u8>,
        /// `ulTagBits`.
        tag_bits: CK_ULONG,
    },
    /// `CK_RSA_AES_KEY_WRAP_PARAMS` (PKCS#11 3.0 §2.1.21) with its
    /// `CK_RSA_PKCS_OAEP_PARAMS` (read as [`Param::Oaep`]).
    RsaAesKeyWrap {
        /// `ulAESKeyBits`: the ephemeral AES key's size.
        aes_bits: CK_ULONG,
        /// `pOAEPParams`.
        oaep: Box<Param>,
    },
    /// Any other parameter, as raw bytes.
    Bytes(Vec<u8>),
}

impl Mechanism {
    /// A mechanism without parameter.
    pub fn new(ty: CK_MECHANISM_TYPE) -> Mechanism {
        Mechanism {
            ty,
            param: Param::None,
        }
    }

    /// True when the caller gave no parameter (or an empty one).
    pub fn has_no_param(&self) -> bool {
        match &self.param {
            Param::None => true,
            Param::Bytes(b) => b.is_empty(),
            _ => false,
        }
    }

    /// Whether this mechanism type takes a `CK_RSA_PKCS_PSS_PARAMS`.
    pub fn takes_pss_params(ty: CK_MECHANISM_TYPE) -> bool {
        matches!(
            ty,
            CKM_RSA_PKCS_PSS
                | CKM_SHA1_RSA_PKCS_PSS
                | CKM_SHA224_RSA_PKCS_PSS
                | CKM_SHA256_RSA_PKCS_PSS
                | CKM_SHA384_RSA_PKCS_PSS
                | CKM_SHA512_RSA_PKCS_PSS
        )
    }
}

/// The hash a `CKM_SHA*` digest mechanism names, if it is one the token supports.
pub fn hash_of_digest_mechanism(m: CK_MECHANISM_TYPE) -> Option<Hash> {
    match m {
        CKM_SHA_1 => Some(Hash::Sha1),
        CKM_SHA256 => Some(Hash::Sha256),
        CKM_SHA384 => Some(Hash::Sha384),
        CKM_SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// The hash a `CKG_MGF1_*` names.
pub fn hash_of_mgf(mgf: CK_RSA_PKCS_MGF_TYPE) -> Option<Hash> {
    match mgf {
        CKG_MGF1_SHA1 => Some(Hash::Sha1),
        CKG_MGF1_SHA256 => Some(Hash::Sha256),
        CKG_MGF1_SHA384 => Some(Hash::Sha384),
        CKG_MGF1_SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// `CKR_MECHANISM_PARAM_INVALID`, the answer to any malformed parameter.
pub fn param_invalid() -> Error {
    Error(CKR_MECHANISM_PARAM_INVALID)
}

/// Check that `m` has no parameter (mechanisms that define none).
pub fn expect_no_param(m: &Mechanism) -> Result<()> {
    if m.has_no_param() {
        Ok(())
    } else {
        Err(param_invalid())
    }
}
