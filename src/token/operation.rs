//! Active operations of a session (sign, verify, digest, find) and the
//! output-length convention every producing call follows.

use super::objects::{ParsedKey, ParsedPublic};
use crate::crypto::{self, Curve, Hash, Hasher};
use crate::engine::rules::{SignPlan, SignScheme};
use crate::error::{Error, Result};
use cryptoki_sys::*;

/// Where a producing call writes its output: `None` is the length query (NULL buffer).
pub type OutBuf<'a> = Option<&'a mut [u8]>;

/// What a producing call reports back.
#[derive(Debug, PartialEq, Eq)]
pub enum Produced {
    /// Output written (or, for a length query, needed): this many bytes.
    Len(usize),
}

/// Apply the PKCS#11 output convention (§5.2): a NULL buffer returns the length and
/// keeps the operation; a short buffer is `CKR_BUFFER_TOO_SMALL` and keeps it.
/// Returns Ok(Some(buf)) when the caller should compute into `buf`.
pub fn check_out<'a>(
    out: OutBuf<'a>,
    need: usize,
) -> Result<std::result::Result<&'a mut [u8], usize>> {
    match out {
        None => Ok(Err(need)),
        Some(buf) if buf.len() < need => Err(Error(CKR_BUFFER_TOO_SMALL)),
        Some(buf) => Ok(Ok(buf)),
    }
}

/// The key side of a sign operation.
#[derive(Clone)]
pub enum Signer {
    /// RSA private key.
    Rsa(std::sync::Arc<dyn crypto::RsaPrivateKey>),
    /// EC private key.
    Ec(std::sync::Arc<dyn crypto::EcPrivateKey>, Curve),
}

impl Signer {
    /// The signer of a parsed private key; AES keys do not sign.
    pub fn from_key(k: ParsedKey) -> Result<Signer> {
        match k {
            ParsedKey::Rsa(r) => Ok(Signer::Rsa(r)),
            ParsedKey::Ec(e, c) => Ok(Signer::Ec(e, c)),
            ParsedKey::Aes(_) => Err(Error(CKR_KEY_TYPE_INCONSISTENT)),
        }
    }
}

/// A sign or verify operation in progress.
pub struct SignOp<K> {
    key: K,
    plan: SignPlan,
    /// Streaming hash for the hash-then-sign mechanisms.
    hasher: Option<Box<dyn Hasher>>,
    /// Collected input for the digest-input mechanisms used multi-part.
    buffer: Vec<u8>,
    /// Set once `*Update` ran: a single-part call is then refused.
    pub multipart: bool,
}

/// Signing in progress.
pub type SignCtx = SignOp<Signer>;
/// Verification in progress.
pub type VerifyCtx = SignOp<ParsedPublic>;

impl<K> SignOp<K> {
    /// Start an operation.
    pub fn new(key: K, plan: SignPlan) -> SignOp<K> {
        let hash = match plan.scheme {
            SignScheme::RsaPkcs1(h) => Some(h),
            SignScheme::RsaPss(Some(h)) | SignScheme::Ecdsa(Some(h)) => Some(h),
            _ => None,
        };
        SignOp {
            key,
            plan,
            hasher: hash.map(|h| crypto::provider().hasher(h)),
            buffer: Vec::new(),
            multipart: false,
        }
    }

    /// `*Update`: hash, or collect (bounded by `limit`, the largest valid input).
    pub fn update(&mut self, data: &[u8], limit: usize) -> Result<()> {
        self.multipart = true;
        match &mut self.hasher {
            Some(h) => h.update(data),
            None => {
                if self.buffer.len() + data.len() > limit {
                    return Err(Error(CKR_DATA_LEN_RANGE));
                }
                self.buffer.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// The collected input (digest, or data for the digest-input mechanisms).
    fn take_input(&mut self, single: Option<&[u8]>) -> Vec<u8> {
        match (self.hasher.take(), single) {
            (Some(mut h), Some(d)) => {
                h.update(d);
                h.finish()
            }
            (Some(h), None) => h.finish(),
            (None, Some(d)) => d.to_vec(),
            (None, None) => std::mem::take(&mut self.buffer),
        }
    }
}

/// Split a PKCS#1 DigestInfo into its hash and digest, for SHA-256/384/512.
fn parse_digest_info(data: &[u8]) -> Option<(Hash, &[u8])> {
    [Hash::Sha256, Hash::Sha384, Hash::Sha512]
        .into_iter()
        .find_map(|h| {
            let rest = data.strip_prefix(h.digest_info_prefix())?;
            (rest.len() == h.len()).then_some((h, rest))
        })
}

impl SignCtx {
    /// Signature length.
    pub fn sig_len(&self) -> usize {
        match &self.key {
            Signer::Rsa(k) => k.size(),
            Signer::Ec(_, c) => 2 * c.field_len(),
        }
    }

    /// The most input a digest-input mechanism accepts.
    pub fn input_limit(&self) -> usize {
        match &self.key {
            Signer::Rsa(k) => k.size(),
            Signer::Ec(..) => 64,
        }
    }

    /// Compute the signature over the collected (or single-part) input.
    pub fn sign(&mut self, single: Option<&[u8]>) -> Result<Vec<u8>> {
        let input = self.take_input(single);
        match (&self.key, self.plan.scheme) {
            (Signer::Rsa(k), SignScheme::RsaPkcs1Raw) => match parse_digest_info(&input) {
                // The DigestInfo case is RS256/384/512, done by the fastest RSA code.
                Some((h, digest)) => k.sign_pkcs1(h, digest),
                None => k.sign_pkcs1_raw(&input),
            },
            (Signer::Rsa(k), SignScheme::RsaPkcs1(h)) => k.sign_pkcs1(h, &input),
            (Signer::Rsa(k), SignScheme::RsaPss(_)) => {
                let h = self
                    .plan
                    .pss_hash
                    .ok_or(Error(CKR_MECHANISM_PARAM_INVALID))?;
                if input.len() != h.len() {
                    return Err(Error(CKR_DATA_LEN_RANGE));
                }
                k.sign_pss(h, &input)
            }
            (Signer::Ec(k, c), SignScheme::Ecdsa(_)) => {
                if input.len() != c.hash().len() {
                    return Err(Error(CKR_DATA_LEN_RANGE));
                }
                k.sign_prehash(&input)
            }
            _ => Err(Error(CKR_KEY_TYPE_INCONSISTENT)),
        }
    }
}

impl VerifyCtx {
    /// Expected signature length.
    pub fn sig_len(&self) -> usize {
        match &self.key {
            ParsedPublic::Rsa(k) => k.size(),
            ParsedPublic::Ec(_, c) => 2 * c.field_len(),
        }
    }

    /// The most input a digest-input mechanism accepts.
    pub fn input_limit(&self) -> usize {
        match &self.key {
            ParsedPublic::Rsa(k) => k.size(),
            ParsedPublic::Ec(..) => 64,
        }
    }

    /// Check `signature` over the collected (or single-part) input.
    pub fn verify(&mut self, single: Option<&[u8]>, signature: &[u8]) -> Result<()> {
        if signature.len() != self.sig_len() {
            return Err(Error(CKR_SIGNATURE_LEN_RANGE));
        }
        let input = self.take_input(single);
        match (&self.key, self.plan.scheme) {
            (ParsedPublic::Rsa(k), SignScheme::RsaPkcs1Raw) => match parse_digest_info(&input) {
                Some((h, digest)) => k.verify_pkcs1(h, digest, signature),
                None => k.verify_pkcs1_raw(&input, signature),
            },
            (ParsedPublic::Rsa(k), SignScheme::RsaPkcs1(h)) => k.verify_pkcs1(h, &input, signature),
            (ParsedPublic::Rsa(k), SignScheme::RsaPss(_)) => {
                let h = self
                    .plan
                    .pss_hash
                    .ok_or(Error(CKR_MECHANISM_PARAM_INVALID))?;
                if input.len() != h.len() {
                    return Err(Error(CKR_DATA_LEN_RANGE));
                }
                k.verify_pss(h, &input, signature)
            }
            (ParsedPublic::Ec(k, c), SignScheme::Ecdsa(_)) => {
                if input.len() != c.hash().len() {
                    return Err(Error(CKR_DATA_LEN_RANGE));
                }
                k.verify_prehash(&input, signature)
            }
            _ => Err(Error(CKR_KEY_TYPE_INCONSISTENT)),
        }
    }
}

/// A digest in progress.
pub struct DigestCtx {
    /// The hash.
    pub hash: Hash,
    hasher: Option<Box<dyn Hasher>>,
    /// Set once `C_DigestUpdate` ran.
    pub multipart: bool,
}

impl DigestCtx {
    /// Start a digest.
    pub fn new(hash: Hash) -> DigestCtx {
        DigestCtx {
            hash,
            hasher: Some(crypto::provider().hasher(hash)),
            multipart: false,
        }
    }

    /// Absorb input.
    pub fn update(&mut self, data: &[u8]) {
        self.multipart = true;
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
    }

    /// Finish.
    pub fn finish(&mut self, single: Option<&[u8]>) -> Vec<u8> {
        let mut h = self
            .hasher
            .take()
            .unwrap_or_else(|| crypto::provider().hasher(self.hash));
        if let Some(d) = single {
            h.update(d);
        }
        h.finish()
    }
}

/// A search in progress: the matching handles, snapshotted at `C_FindObjectsInit`.
pub struct FindCtx {
    /// Handles not yet returned.
    pub handles: std::collections::VecDeque<CK_OBJECT_HANDLE>,
}
