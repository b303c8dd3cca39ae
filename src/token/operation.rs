//! Active operations of a session (sign, verify, digest, find) and the
//! output-length convention every producing call follows.

use super::objects::{ParsedKey, ParsedPublic};
use crate::crypto::{self, Hash, Hasher, PreHash, SecretBytes, ML_DSA_MU_LEN};
use crate::engine::mechanism::SignFamily;
use crate::engine::rules::{Cipher, CipherParam, CipherScheme, SignPlan};
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

/// Which kind of call an active operation is committed to. PKCS#11 3.0 §5.2
/// and §5.8–5.12: after a single-part call kept the operation (a length query,
/// a short buffer) only that call may follow, and after `*Update` (or a
/// `*Final` length query) only `*Update`/`*Final`; the other kind answers
/// `CKR_OPERATION_ACTIVE`, which, like every error, ends the operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Just initialised: either kind may follow.
    #[default]
    Fresh,
    /// A single-part call (`C_Sign`, `C_Digest`, …) kept the operation.
    Single,
    /// `*Update` ran, or `*Final` kept the operation.
    Multi,
}

impl Mode {
    /// Admit a call at `stage`, committing a fresh operation to its kind.
    pub fn admit(&mut self, stage: Stage) -> Result<()> {
        let kind = if stage == Stage::Single {
            Mode::Single
        } else {
            Mode::Multi
        };
        match *self {
            Mode::Fresh => {
                *self = kind;
                Ok(())
            }
            m if m == kind => Ok(()),
            _ => Err(Error(CKR_OPERATION_ACTIVE)),
        }
    }
}

/// An active operation context: the kind of call it is committed to.
pub trait Staged {
    /// The operation's [`Mode`].
    fn mode(&mut self) -> &mut Mode;
}

/// A sign or verify operation in progress.
pub struct SignOp<K> {
    key: K,
    plan: SignPlan,
    /// Streaming hash for the hash-then-sign mechanisms.
    hasher: Option<Box<dyn Hasher>>,
    /// Collected input for the digest-input mechanisms used multi-part.
    buffer: Vec<u8>,
    mode: Mode,
}

impl<K> Staged for SignOp<K> {
    fn mode(&mut self) -> &mut Mode {
        &mut self.mode
    }
}

/// Signing in progress: the private half (the plan at `*Init` refused every
/// key kind no signing row takes).
pub type SignCtx = SignOp<ParsedKey>;
/// Verification in progress.
pub type VerifyCtx = SignOp<ParsedPublic>;

impl<K> SignOp<K> {
    /// Start an operation: its streaming hash, for the mechanisms that hash
    /// on the token (`CKR_MECHANISM_INVALID` where the provider has none).
    pub fn new(key: K, plan: SignPlan) -> Result<SignOp<K>> {
        let p = crypto::provider();
        let hasher = match (plan.prehash, plan.family) {
            (Some(h), _) => Some(p.hasher(h)),
            (None, SignFamily::HashMlDsa(Some(ph))) => Some(p.pre_hasher(ph)?),
            _ => None,
        };
        Ok(SignOp {
            hasher,
            key,
            plan,
            buffer: Vec::new(),
            mode: Mode::Fresh,
        })
    }

    /// `*Update`: hash, or collect (bounded by `limit`, the largest valid input).
    pub fn update(&mut self, data: &[u8], limit: usize) -> Result<()> {
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

    /// PSS: the parameter's hash, which the plan always decides.
    fn pss_hash(&self) -> Result<Hash> {
        self.plan.digest.ok_or(Error(CKR_MECHANISM_PARAM_INVALID))
    }

    /// The input to hand the provider: a family that signs a digest (or
    /// HashML-DSA's PH(M), or a μ) gets exactly its length
    /// (`CKR_DATA_LEN_RANGE`).
    fn input(&mut self, single: Option<&[u8]>) -> Result<Vec<u8>> {
        let input = self.take_input(single);
        let want = match self.plan.family {
            SignFamily::HashMlDsa(_) => self.plan.pre_hash.map(PreHash::len),
            SignFamily::MlDsaMu => Some(ML_DSA_MU_LEN),
            _ => self.plan.digest.map(Hash::len),
        };
        match want {
            Some(n) if input.len() != n => Err(Error(CKR_DATA_LEN_RANGE)),
            _ => Ok(input),
        }
    }

    /// The μ an ML-DSA key signs or verifies: the caller's (external μ), or
    /// HashML-DSA's over PH(M) `input` with the key's `tr`.
    fn mu(
        &self,
        tr: impl FnOnce() -> Result<[u8; ML_DSA_MU_LEN]>,
        input: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if self.plan.family == SignFamily::MlDsaMu {
            return Ok(input);
        }
        let ph = self
            .plan
            .pre_hash
            .ok_or(Error(CKR_MECHANISM_PARAM_INVALID))?;
        crypto::hash_ml_dsa_mu(crypto::provider(), &tr()?, ph, &self.plan.context, &input)
    }
}

/// The longest message ML-DSA signs in parts: pure ML-DSA hashes the whole
/// message with the key's `tr` first, so parts are collected in memory.
const ML_DSA_MESSAGE_LIMIT: usize = 16 << 20;

/// The key half a family's provider method needs; another half is the wrong
/// type of key (the plan refuses it first, so this is never reached).
fn half<T>(key: Option<T>) -> Result<T> {
    key.ok_or(Error(CKR_KEY_TYPE_INCONSISTENT))
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
            ParsedKey::Rsa(k) => k.size(),
            ParsedKey::Ec(_, c) => 2 * c.field_len(),
            ParsedKey::MlDsa(_, set) => set.signature_len(),
            // Never: no signing row takes an AES or ML-KEM key, so the plan refused it.
            ParsedKey::Aes(_) | ParsedKey::MlKem(_) => 0,
        }
    }

    /// The most input a digest-input mechanism accepts.
    pub fn input_limit(&self) -> usize {
        match &self.key {
            ParsedKey::Rsa(k) => k.size(),
            ParsedKey::Ec(..) | ParsedKey::Aes(_) | ParsedKey::MlKem(_) => 64,
            ParsedKey::MlDsa(..) => ML_DSA_MESSAGE_LIMIT,
        }
    }

    /// Compute the signature over the collected (or single-part) input: the
    /// one place a signature family meets its provider's sign method.
    pub fn sign(&mut self, single: Option<&[u8]>) -> Result<Vec<u8>> {
        let input = self.input(single)?;
        let rsa = || {
            half(match &self.key {
                ParsedKey::Rsa(k) => Some(k),
                _ => None,
            })
        };
        match self.plan.family {
            SignFamily::RsaPkcs1 => match self.plan.digest {
                Some(h) => rsa()?.sign_pkcs1(h, &input),
                // CKM_RSA_PKCS: a DigestInfo is RS256/384/512, done by the fastest RSA code.
                None => match parse_digest_info(&input) {
                    Some((h, digest)) => rsa()?.sign_pkcs1(h, digest),
                    None => rsa()?.sign_pkcs1_raw(&input),
                },
            },
            SignFamily::RsaPss => rsa()?.sign_pss(self.pss_hash()?, &input),
            SignFamily::Ecdsa => match &self.key {
                ParsedKey::Ec(k, _) => k.sign_prehash(&input),
                _ => half(None),
            },
            SignFamily::MlDsa => match &self.key {
                ParsedKey::MlDsa(k, _) if self.plan.deterministic => {
                    k.sign_deterministic(&input, &self.plan.context)
                }
                ParsedKey::MlDsa(k, _) => k.sign(&input, &self.plan.context),
                _ => half(None),
            },
            SignFamily::HashMlDsa(_) | SignFamily::MlDsaMu => {
                let ParsedKey::MlDsa(k, _) = &self.key else {
                    return half(None);
                };
                let mu = self.mu(|| k.tr(), input)?;
                match self.plan.deterministic {
                    true => k.sign_mu_deterministic(&mu),
                    false => k.sign_mu(&mu),
                }
            }
        }
    }
}

impl VerifyCtx {
    /// Expected signature length.
    pub fn sig_len(&self) -> usize {
        match &self.key {
            ParsedPublic::Rsa(k) => k.size(),
            ParsedPublic::Ec(_, c) => 2 * c.field_len(),
            ParsedPublic::MlDsa(_, set) => set.signature_len(),
            ParsedPublic::MlKem(_) => 0,
        }
    }

    /// The most input a digest-input mechanism accepts.
    pub fn input_limit(&self) -> usize {
        match &self.key {
            ParsedPublic::Rsa(k) => k.size(),
            ParsedPublic::Ec(..) | ParsedPublic::MlKem(_) => 64,
            ParsedPublic::MlDsa(..) => ML_DSA_MESSAGE_LIMIT,
        }
    }

    /// Check `signature` over the collected (or single-part) input: the one
    /// place a signature family meets its provider's verify method.
    pub fn verify(&mut self, single: Option<&[u8]>, signature: &[u8]) -> Result<()> {
        if signature.len() != self.sig_len() {
            return Err(Error(CKR_SIGNATURE_LEN_RANGE));
        }
        let input = self.input(single)?;
        let rsa = || {
            half(match &self.key {
                ParsedPublic::Rsa(k) => Some(k),
                _ => None,
            })
        };
        match self.plan.family {
            SignFamily::RsaPkcs1 => match self.plan.digest {
                Some(h) => rsa()?.verify_pkcs1(h, &input, signature),
                None => match parse_digest_info(&input) {
                    Some((h, digest)) => rsa()?.verify_pkcs1(h, digest, signature),
                    None => rsa()?.verify_pkcs1_raw(&input, signature),
                },
            },
            SignFamily::RsaPss => rsa()?.verify_pss(self.pss_hash()?, &input, signature),
            SignFamily::Ecdsa => match &self.key {
                ParsedPublic::Ec(k, _) => k.verify_prehash(&input, signature),
                _ => half(None),
            },
            SignFamily::MlDsa => match &self.key {
                ParsedPublic::MlDsa(k, _) => k.verify(&input, &self.plan.context, signature),
                _ => half(None),
            },
            SignFamily::HashMlDsa(_) | SignFamily::MlDsaMu => {
                let ParsedPublic::MlDsa(k, _) = &self.key else {
                    return half(None);
                };
                let mu = self.mu(|| k.tr(), input)?;
                k.verify_mu(&mu, signature)
            }
        }
    }
}

/// A digest in progress.
pub struct DigestCtx {
    /// The hash.
    pub hash: Hash,
    hasher: Option<Box<dyn Hasher>>,
    mode: Mode,
}

impl Staged for DigestCtx {
    fn mode(&mut self) -> &mut Mode {
        &mut self.mode
    }
}

impl DigestCtx {
    /// Start a digest.
    pub fn new(hash: Hash) -> DigestCtx {
        DigestCtx {
            hash,
            hasher: Some(crypto::provider().hasher(hash)),
            mode: Mode::Fresh,
        }
    }

    /// Absorb input.
    pub fn update(&mut self, data: &[u8]) {
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

/// The key side of an encrypt/decrypt operation.
#[derive(Clone)]
pub enum CipherKey {
    /// RSA public key (encrypt).
    RsaPublic(std::sync::Arc<dyn crypto::RsaPublicKey>),
    /// RSA private key (decrypt).
    RsaPrivate(std::sync::Arc<dyn crypto::RsaPrivateKey>),
    /// AES key (both directions).
    Aes(std::sync::Arc<dyn crypto::AesKey>),
}

/// Which call of an operation is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `C_Encrypt` / `C_Decrypt`.
    Single,
    /// `C_*Update`.
    Update,
    /// `C_*Final`.
    Final,
}

/// The most a buffering mode (RSA, GCM) collects across `*Update` calls: the
/// largest input the ABI accepts in one call.
const MAX_BUFFERED: usize = 256 << 20;

/// What one step produced, and how the operation's state moves on.
pub struct Step {
    /// Output to hand to the caller.
    pub out: SecretBytes,
    carry: Carry,
}

enum Carry {
    /// Append the input to the buffer (RSA, GCM: nothing is released before Final).
    Append,
    /// CBC: the bytes held back and the next IV (the last ciphertext block).
    Chain(SecretBytes, [u8; 16]),
    /// The operation ends.
    End,
}

/// An encrypt or decrypt operation in progress.
pub struct CipherCtx {
    key: CipherKey,
    cipher: Cipher,
    encrypt: bool,
    /// Input not yet processed (all of it for RSA and GCM; under a block, or
    /// the held-back last block, for CBC).
    buffer: SecretBytes,
    mode: Mode,
}

impl Staged for CipherCtx {
    fn mode(&mut self) -> &mut Mode {
        &mut self.mode
    }
}

impl CipherCtx {
    /// Start an operation (`encrypt` false: decrypt).
    pub fn new(key: CipherKey, cipher: Cipher, encrypt: bool) -> CipherCtx {
        CipherCtx {
            key,
            cipher,
            encrypt,
            buffer: SecretBytes::default(),
            mode: Mode::Fresh,
        }
    }

    /// The output length of a step when it is known without computing it
    /// (for a length query); RSA decryption answers the modulus size, the
    /// upper bound PKCS#11 §5.2 allows.
    pub fn known_len(&self, input: usize, stage: Stage) -> Option<usize> {
        let total = self.buffer.len() + input;
        match (self.cipher.scheme, &self.cipher.param) {
            (CipherScheme::RsaPkcs1 | CipherScheme::RsaOaep, _) if stage == Stage::Update => {
                Some(0)
            }
            (CipherScheme::RsaPkcs1 | CipherScheme::RsaOaep | CipherScheme::RsaAesKw, _) => {
                self.rsa_size()
            }
            (CipherScheme::AesGcm, _) if stage == Stage::Update => Some(0),
            (CipherScheme::AesGcm, CipherParam::Gcm { tag_len, .. }) if self.encrypt => {
                Some(total + tag_len)
            }
            (CipherScheme::AesGcm, CipherParam::Gcm { tag_len, .. }) => {
                Some(total.saturating_sub(*tag_len))
            }
            _ => None,
        }
    }

    /// The modulus size of an RSA key, either half.
    fn rsa_size(&self) -> Option<usize> {
        match &self.key {
            CipherKey::RsaPublic(k) => Some(k.size()),
            CipherKey::RsaPrivate(k) => Some(k.size()),
            CipherKey::Aes(_) => None,
        }
    }

    /// The AES key (the plan refused every other key for an AES family).
    fn aes(&self) -> Result<&dyn crypto::AesKey> {
        match &self.key {
            CipherKey::Aes(k) => Ok(k.as_ref()),
            _ => Err(Error(CKR_KEY_TYPE_INCONSISTENT)),
        }
    }

    /// Compute one step without changing the operation (see
    /// [`CipherCtx::commit`]): the one place a cipher family meets its
    /// provider methods (an exhaustive `match`, so a new family's arm is
    /// asked for by the compiler).
    pub fn run(&self, data: &[u8], stage: Stage) -> Result<Step> {
        let end = |out: SecretBytes| Step {
            out,
            carry: Carry::End,
        };
        let append = || Step {
            out: SecretBytes::default(),
            carry: Carry::Append,
        };
        if stage == Stage::Update && !matches!(self.cipher.scheme, CipherScheme::AesCbc { .. }) {
            let limit = self.rsa_size().unwrap_or(MAX_BUFFERED);
            if self.buffer.len() + data.len() > limit {
                return Err(Error(if self.encrypt {
                    CKR_DATA_LEN_RANGE
                } else {
                    CKR_ENCRYPTED_DATA_LEN_RANGE
                }));
            }
            return Ok(append());
        }
        let input: &[u8] = match stage {
            Stage::Single => data,
            _ => &self.buffer,
        };
        let oaep = match self.cipher.param {
            CipherParam::Oaep(h) => Some(h),
            _ => None,
        };
        match self.cipher.scheme {
            CipherScheme::RsaPkcs1 | CipherScheme::RsaOaep => match (&self.key, oaep) {
                (CipherKey::RsaPublic(k), None) => Ok(end(k.encrypt_pkcs1(input)?.into())),
                (CipherKey::RsaPublic(k), Some(h)) => Ok(end(k.encrypt_oaep(h, input)?.into())),
                (CipherKey::RsaPrivate(k), _) if input.len() != k.size() => {
                    Err(Error(CKR_ENCRYPTED_DATA_LEN_RANGE))
                }
                // One code for every RSA1_5 failure: no padding oracle.
                (CipherKey::RsaPrivate(k), None) => Ok(end(k
                    .decrypt_pkcs1(input)
                    .map_err(|_| Error(CKR_ENCRYPTED_DATA_INVALID))?)),
                (CipherKey::RsaPrivate(k), Some(h)) => Ok(end(k.decrypt_oaep(h, input)?)),
                (CipherKey::Aes(_), _) => Err(Error(CKR_KEY_TYPE_INCONSISTENT)),
            },
            CipherScheme::AesGcm => {
                let (k, CipherParam::Gcm { iv, aad, tag_len }) = (self.aes()?, &self.cipher.param)
                else {
                    return Err(Error(CKR_MECHANISM_PARAM_INVALID));
                };
                Ok(end(if self.encrypt {
                    k.gcm_seal(iv, aad, input, *tag_len)?.into()
                } else {
                    k.gcm_open(iv, aad, input, *tag_len)?
                }))
            }
            CipherScheme::AesCbc { pad } => {
                let (k, CipherParam::Iv(iv)) = (self.aes()?, &self.cipher.param) else {
                    return Err(Error(CKR_MECHANISM_PARAM_INVALID));
                };
                self.cbc_step(k, iv, pad, data, stage)
            }
            // The Managed HSM's wrapKey/unwrapKey of caller-supplied bytes.
            CipherScheme::AesKw | CipherScheme::AesKwp => {
                let k = self.aes()?;
                let kwp = self.cipher.scheme == CipherScheme::AesKwp;
                let out = if self.encrypt {
                    SecretBytes::from(if kwp {
                        k.kwp_wrap(input)?
                    } else {
                        k.kw_wrap(input)?
                    })
                } else {
                    let r = if kwp {
                        k.kwp_unwrap(input)
                    } else {
                        k.kw_unwrap(input)
                    };
                    // The unwrap primitives speak C_UnwrapKey's codes.
                    r.map_err(|e| match e {
                        Error(CKR_WRAPPED_KEY_LEN_RANGE) => Error(CKR_ENCRYPTED_DATA_LEN_RANGE),
                        Error(CKR_WRAPPED_KEY_INVALID) => Error(CKR_ENCRYPTED_DATA_INVALID),
                        e => e,
                    })?
                };
                Ok(end(out))
            }
            // BYOK import is C_UnwrapKey only (`unwrap_bytes`); its row serves nothing else.
            CipherScheme::RsaAesKw => Err(Error(CKR_KEY_TYPE_INCONSISTENT)),
        }
    }

    /// CBC: single-part in one go; multi-part processes whole blocks, carries
    /// the last ciphertext block as the next IV, and for CBC_PAD decryption
    /// keeps the last block back until Final (it holds the padding).
    fn cbc_step(
        &self,
        k: &dyn crypto::AesKey,
        iv: &[u8; 16],
        pad: bool,
        data: &[u8],
        stage: Stage,
    ) -> Result<Step> {
        let crypt = |iv: &[u8; 16], input: &[u8], pad: bool| -> Result<SecretBytes> {
            if self.encrypt {
                Ok(k.cbc_encrypt(iv, input, pad)?.into())
            } else {
                k.cbc_decrypt(iv, input, pad)
            }
        };
        match stage {
            Stage::Single => Ok(Step {
                out: crypt(iv, data, pad)?,
                carry: Carry::End,
            }),
            Stage::Final => {
                let out = match (pad, self.encrypt) {
                    (true, true) => crypt(iv, &self.buffer, true)?,
                    (true, false) if self.buffer.len() == 16 => crypt(iv, &self.buffer, true)?,
                    (false, _) if self.buffer.is_empty() => SecretBytes::default(),
                    (_, true) => return Err(Error(CKR_DATA_LEN_RANGE)),
                    (_, false) => return Err(Error(CKR_ENCRYPTED_DATA_LEN_RANGE)),
                };
                Ok(Step {
                    out,
                    carry: Carry::End,
                })
            }
            Stage::Update => {
                let mut total =
                    SecretBytes::new(Vec::with_capacity(self.buffer.len() + data.len()));
                total.extend_from_slice(&self.buffer);
                total.extend_from_slice(data);
                let release = if pad && !self.encrypt {
                    total.len().saturating_sub(1) / 16 * 16
                } else {
                    total.len() / 16 * 16
                };
                let (now, later) = total.split_at(release);
                if now.is_empty() {
                    return Ok(Step {
                        out: SecretBytes::default(),
                        carry: Carry::Chain(SecretBytes::new(later.to_vec()), *iv),
                    });
                }
                let out = crypt(iv, now, false)?;
                let last = if self.encrypt { &out[..] } else { now };
                let mut next = [0u8; 16];
                next.copy_from_slice(&last[last.len() - 16..]);
                Ok(Step {
                    out,
                    carry: Carry::Chain(SecretBytes::new(later.to_vec()), next),
                })
            }
        }
    }

    /// Apply a step's state change after its output was delivered; false when
    /// the operation has ended.
    pub fn commit(&mut self, step: Step, data: &[u8]) -> bool {
        match step.carry {
            Carry::Append => {
                self.buffer.extend_from_slice(data);
                true
            }
            Carry::Chain(rest, iv) => {
                self.buffer = rest;
                if let CipherParam::Iv(cur) = &mut self.cipher.param {
                    *cur = iv;
                }
                true
            }
            Carry::End => false,
        }
    }
}

/// Unwrap `wrapped` with `key` under `cipher` (C_UnwrapKey): decryption in one
/// go, with the ciphertext errors reported as wrapped-key errors.
pub fn unwrap_bytes(key: &CipherKey, cipher: &Cipher, wrapped: &[u8]) -> Result<SecretBytes> {
    let r = match (key, cipher.scheme, &cipher.param) {
        (CipherKey::Aes(k), CipherScheme::AesKw, _) => k.kw_unwrap(wrapped),
        (CipherKey::Aes(k), CipherScheme::AesKwp, _) => k.kwp_unwrap(wrapped),
        (
            CipherKey::RsaPrivate(k),
            CipherScheme::RsaAesKw,
            CipherParam::RsaAesKw { oaep, aes_bytes },
        ) => crate::pool::byok::unwrap_rsa_aes(k.as_ref(), *oaep, *aes_bytes, wrapped),
        _ => {
            let ctx = CipherCtx::new(key.clone(), cipher.clone(), false);
            ctx.run(wrapped, Stage::Single).map(|s| s.out)
        }
    };
    r.map_err(|e| match e {
        Error(CKR_ENCRYPTED_DATA_INVALID) => Error(CKR_WRAPPED_KEY_INVALID),
        Error(CKR_ENCRYPTED_DATA_LEN_RANGE) | Error(CKR_DATA_LEN_RANGE) => {
            Error(CKR_WRAPPED_KEY_LEN_RANGE)
        }
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Curve, PublicKey};
    use crate::engine::key::{KeyKind, KeyOps, KeyRecord};
    use crate::engine::mechanism::{Jwa, Mechanism, Param, ParamKind, REGISTRY};
    use crate::engine::rules::{cipher_plan, possible_ops, sign_plan};
    use std::collections::BTreeMap;

    fn record(kind: KeyKind) -> KeyRecord {
        KeyRecord {
            kind,
            name: "k".into(),
            version: "v".into(),
            public: None,
            ops: KeyOps::SIGN.with(KeyOps::VERIFY),
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

    /// Both halves of a fresh key of `kind`, parsed by the library's provider.
    fn pair(kind: KeyKind) -> (ParsedKey, ParsedPublic) {
        let p = crypto::provider();
        match kind {
            KeyKind::Rsa(bits) => {
                let k = p
                    .rsa_private(&p.generate_rsa(bits as usize).unwrap())
                    .unwrap();
                let PublicKey::Rsa { n, e } = k.public() else {
                    unreachable!()
                };
                let public = p.rsa_public(&n, &e).unwrap();
                (ParsedKey::Rsa(k), ParsedPublic::Rsa(public))
            }
            KeyKind::Ec(c) => {
                let k = p.ec_private(c, &p.generate_ec(c).unwrap()).unwrap();
                let PublicKey::Ec { point, .. } = k.public() else {
                    unreachable!()
                };
                let public = p.ec_public(c, &point).unwrap();
                (ParsedKey::Ec(k, c), ParsedPublic::Ec(public, c))
            }
            KeyKind::MlDsa(set) => {
                let k = p
                    .ml_dsa_private(set, &p.generate_ml_dsa(set).unwrap())
                    .unwrap();
                let PublicKey::MlDsa { key, .. } = k.public() else {
                    unreachable!()
                };
                let public = p.ml_dsa_public(set, &key).unwrap();
                (ParsedKey::MlDsa(k, set), ParsedPublic::MlDsa(public, set))
            }
            KeyKind::Aes(_) | KeyKind::MlKem(_) => {
                unreachable!("no signing row takes an AES or ML-KEM key")
            }
        }
    }

    /// The drift check of "a new family is one row plus one provider method":
    /// every registry row that signs is decided by `sign_plan` from its row
    /// alone and reaches its family's provider methods through
    /// `SignCtx::sign` and `VerifyCtx::verify` on every key kind it takes,
    /// and names its Managed HSM algorithm.
    #[test]
    fn every_signing_row_signs_and_verifies_through_its_family() {
        let mut kinds = vec![KeyKind::Rsa(2048)];
        kinds.extend(Curve::ALL.map(KeyKind::Ec));
        #[cfg(feature = "aws-lc")]
        kinds.extend(crypto::MlDsa::ALL.map(KeyKind::MlDsa));
        let pairs: Vec<_> = kinds.iter().map(|k| (*k, pair(*k))).collect();
        for d in REGISTRY.iter().filter(|d| d.sign.is_some()) {
            let signing = d.sign.unwrap();
            let hash = signing.prehash.unwrap_or(Hash::Sha256);
            let mech = Mechanism {
                ty: d.ty,
                param: match d.param {
                    ParamKind::Pss => Param::Pss {
                        hash: match hash {
                            Hash::Sha256 => CKM_SHA256,
                            Hash::Sha384 => CKM_SHA384,
                            _ => CKM_SHA512,
                        },
                        mgf: match hash {
                            Hash::Sha256 => CKG_MGF1_SHA256,
                            Hash::Sha384 => CKG_MGF1_SHA384,
                            _ => CKG_MGF1_SHA512,
                        },
                        salt_len: hash.len() as CK_ULONG,
                    },
                    ParamKind::HashSignContext => Param::HashSignContext {
                        hedge: CKH_HEDGE_PREFERRED,
                        context: b"ctx".to_vec(),
                        hash: CKM_SHA3_384,
                    },
                    _ => Param::None,
                },
            };
            let mut fitted = 0;
            for (kind, (private, public)) in pairs.iter().filter(|(k, _)| d.keys.fits(*k)) {
                fitted += 1;
                let what = format!("{} on {kind:?}", d.name);
                let rec = record(*kind);
                let plan = sign_plan(&mech, &rec, KeyOps::SIGN, 0).expect(&what);
                assert_eq!(plan.family, signing.family, "{what}");
                let input = match (plan.prehash, plan.digest, signing.family) {
                    (Some(_), ..) => b"a message of any length".to_vec(),
                    (None, Some(h), _) => vec![7; h.len()],
                    // ML-DSA signs the message itself; HashML-DSA hashes it here …
                    (None, None, SignFamily::MlDsa | SignFamily::HashMlDsa(Some(_))) => {
                        b"a message".to_vec()
                    }
                    // … or takes the caller's PH(M) (CKM_HASH_ML_DSA).
                    (None, None, SignFamily::HashMlDsa(None)) => {
                        vec![7; plan.pre_hash.expect(&what).len()]
                    }
                    // CKM_RSA_PKCS: a DigestInfo (RS256).
                    (None, None, _) => [Hash::Sha256.digest_info_prefix(), &[7; 32]].concat(),
                };
                let mut signer = SignCtx::new(private.clone(), plan).expect(&what);
                let sig = signer.sign(Some(&input)).expect(&what);
                assert_eq!(sig.len(), signer.sig_len(), "{what}");
                let plan = sign_plan(&mech, &rec, KeyOps::VERIFY, 0).expect(&what);
                let verify = |sig: &[u8]| {
                    VerifyCtx::new(public.clone(), plan.clone())
                        .and_then(|mut v| v.verify(Some(&input), sig))
                };
                assert_eq!(verify(&sig), Ok(()), "{what}");
                let mut bad = sig.clone();
                bad[sig.len() / 2] ^= 1;
                assert_eq!(verify(&bad), Err(Error(CKR_SIGNATURE_INVALID)), "{what}");
                let named = d.jwa(KeyOps::SIGN, *kind, &mech.param).is_some();
                assert!(
                    named || signing.jwa == Jwa::RsByInput,
                    "{what}: no JWA name"
                );
            }
            assert!(fitted > 0, "{} fits no key kind", d.name);
        }
    }

    /// A parameter of each kind that the Managed HSM rules accept.
    fn good_param(kind: ParamKind) -> Param {
        let oaep = Param::Oaep {
            hash: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            label: Vec::new(),
        };
        match kind {
            ParamKind::None => Param::None,
            ParamKind::Oaep => oaep,
            ParamKind::Gcm => Param::Gcm {
                iv: vec![1; 12],
                aad: b"aad".to_vec(),
                tag_bits: 128,
            },
            ParamKind::Iv => Param::Bytes(vec![2; 16]),
            ParamKind::RsaAesKeyWrap => Param::RsaAesKeyWrap {
                aes_bits: 256,
                oaep: Box::new(oaep),
            },
            ParamKind::Pss | ParamKind::SignContext | ParamKind::HashSignContext => {
                unreachable!("no cipher row reads signature parameters")
            }
        }
    }

    /// The same drift check for cipher rows: `cipher_plan` decides every one
    /// from its row alone, and `CipherCtx::run` (or `unwrap_bytes`, for the
    /// BYOK row) reaches its family's provider methods on every key kind it
    /// claims; what encrypts decrypts back, and a length query's answer
    /// bounds the output.
    #[test]
    fn every_cipher_row_runs_through_its_family() {
        let p = crypto::provider();
        let rsa = pair(KeyKind::Rsa(2048));
        let (ParsedKey::Rsa(private), ParsedPublic::Rsa(public)) = rsa else {
            unreachable!()
        };
        let aes = p.aes(&[9; 32]).unwrap();
        let keys = [
            (
                KeyKind::Rsa(2048),
                CipherKey::RsaPublic(public),
                CipherKey::RsaPrivate(private),
            ),
            (
                KeyKind::Aes(256),
                CipherKey::Aes(aes.clone()),
                CipherKey::Aes(aes),
            ),
        ];
        let text = [5u8; 32];
        for d in REGISTRY.iter().filter(|d| d.cipher.is_some()) {
            let mech = Mechanism {
                ty: d.ty,
                param: good_param(d.param),
            };
            let mut fitted = 0;
            for (kind, enc, dec) in keys.iter().filter(|(k, ..)| d.keys.fits(*k)) {
                fitted += 1;
                let what = format!("{} on {kind:?}", d.name);
                let mut rec = record(*kind);
                rec.ops = possible_ops(*kind);
                if !d.serves(KeyOps::ENCRYPT) {
                    // BYOK: unwrap only, by a key whose one op is import.
                    rec.ops = KeyOps::IMPORT;
                    let c = cipher_plan(&mech, &rec, KeyOps::UNWRAP, 0).expect(&what);
                    let r = unwrap_bytes(dec, &c, &[0; 64]);
                    assert!(
                        matches!(
                            r,
                            Err(Error(CKR_WRAPPED_KEY_INVALID | CKR_WRAPPED_KEY_LEN_RANGE))
                        ),
                        "{what}"
                    );
                    continue;
                }
                let c = cipher_plan(&mech, &rec, KeyOps::ENCRYPT, 0).expect(&what);
                let enc = CipherCtx::new(enc.clone(), c.clone(), true);
                let sealed = enc.run(&text, Stage::Single).expect(&what).out;
                if let Some(n) = enc.known_len(text.len(), Stage::Single) {
                    assert!(sealed.len() <= n, "{what}: length query {n}");
                }
                let c = cipher_plan(&mech, &rec, KeyOps::DECRYPT, 0).expect(&what);
                let dec = CipherCtx::new(dec.clone(), c, false);
                let opened = dec.run(&sealed, Stage::Single).expect(&what).out;
                assert_eq!(&opened[..], &text[..], "{what}");
                let named = d.jwa(KeyOps::ENCRYPT, *kind, &mech.param).is_some();
                assert!(named, "{what}: no JWA name");
            }
            assert!(fitted > 0, "{} fits no key kind", d.name);
        }
    }
}
