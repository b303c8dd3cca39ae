//! A session and the operations it runs. The crypto path holds only this
//! session's own lock: the key is an `Arc` of the parsed key, taken at `*Init`.

use super::objects::Entry;
use super::objects::{ParsedKey, ParsedPublic};
use super::operation::{
    check_out, unwrap_bytes, CipherCtx, CipherKey, DigestCtx, FindCtx, OutBuf, SignCtx, Stage,
    Staged, VerifyCtx,
};
use super::slot::{LoggedIn, Slot};
use crate::crypto::{self, SecretBytes};
use crate::engine::attributes::{now, Template};
use crate::engine::key::KeyKind;
use crate::engine::key::{Body, KeyOps};
use crate::engine::mechanism::Mechanism;
use crate::engine::policy::{self, Part};
use crate::engine::rules;
use crate::error::{Error, Result};
use crate::pool::access::DataAction;
use cryptoki_sys::*;
use std::sync::{Arc, Mutex, MutexGuard};

/// The active operations of a session.
#[derive(Default)]
pub struct Ops {
    /// `C_FindObjects*`.
    pub find: Option<FindCtx>,
    /// `C_Sign*`.
    pub sign: Option<SignCtx>,
    /// `C_Verify*`.
    pub verify: Option<VerifyCtx>,
    /// `C_VerifySignature*` (PKCS#11 3.2): a verification of its own, with
    /// the signature given at `C_VerifySignatureInit`.
    pub verify_signature: Option<(VerifyCtx, Vec<u8>)>,
    /// `C_Digest*`.
    pub digest: Option<DigestCtx>,
    /// `C_Encrypt*`.
    pub encrypt: Option<CipherCtx>,
    /// `C_Decrypt*`.
    pub decrypt: Option<CipherCtx>,
}

/// An open session.
pub struct Session {
    /// `CK_SESSION_HANDLE`.
    pub handle: CK_SESSION_HANDLE,
    /// The slot (token) it belongs to.
    pub slot: Arc<Slot>,
    /// Read/write session.
    pub rw: bool,
    ops: Mutex<Ops>,
}

/// Run a producing step of a sign or digest operation under the output
/// convention: a length query or a short buffer keeps the operation (committed
/// to `stage`'s kind of call), success ends it. Errors end it in
/// [`Session::operation_call`].
fn finish<C: Staged>(
    slot: &mut Option<C>,
    out: OutBuf<'_>,
    stage: Stage,
    need: impl FnOnce(&C) -> usize,
    compute: impl FnOnce(&mut C) -> Result<Vec<u8>>,
) -> Result<usize> {
    let ctx = slot.as_mut().ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))?;
    ctx.mode().admit(stage)?;
    let buf = match check_out(out, need(ctx))? {
        Err(len) => return Ok(len),
        Ok(buf) => buf,
    };
    let result = compute(ctx);
    *slot = None;
    let value = result?;
    let dst = buf
        .get_mut(..value.len())
        .ok_or(Error(CKR_BUFFER_TOO_SMALL))?;
    dst.copy_from_slice(&value);
    Ok(value.len())
}

/// Run one encrypt/decrypt step under the output convention. The step is
/// computed before the operation changes, so a length query or a short buffer
/// leaves it as it was (committed to `stage`'s kind of call); success of a
/// single-part or final call ends it, and errors end it in
/// [`Session::operation_call`].
fn cipher_step(
    slot: &mut Option<CipherCtx>,
    data: &[u8],
    out: OutBuf<'_>,
    stage: Stage,
) -> Result<usize> {
    let ctx = slot.as_mut().ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))?;
    ctx.mode().admit(stage)?;
    if out.is_none() {
        if let Some(n) = ctx.known_len(data.len(), stage) {
            return Ok(n);
        }
    }
    let step = ctx.run(data, stage)?;
    let n = step.out.len();
    let buf = match check_out(out, n)? {
        Err(len) => return Ok(len),
        Ok(buf) => buf,
    };
    buf[..n].copy_from_slice(&step.out);
    if !ctx.commit(step, data) {
        *slot = None;
    }
    Ok(n)
}

/// One more part of a verification (`C_VerifyUpdate`,
/// `C_VerifySignatureUpdate`); an error ends it in [`Session::operation_call`].
fn verify_part(c: Option<&mut VerifyCtx>, data: &[u8]) -> Result<()> {
    let c = c.ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))?;
    c.mode().admit(Stage::Update)?;
    let limit = c.input_limit();
    c.update(data, limit)
}

/// The end of a verification taken out of its session (`C_Verify`,
/// `C_VerifyFinal`, `C_VerifySignature`, `C_VerifySignatureFinal`): single-part
/// over `data`, or final over the collected parts.
fn verify_end(
    c: Option<VerifyCtx>,
    stage: Stage,
    data: Option<&[u8]>,
    signature: &[u8],
) -> Result<()> {
    let mut c = c.ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))?;
    c.mode().admit(stage)?;
    c.verify(data, signature)
}

/// The operation families whose calls follow the PKCS#11 lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `C_Digest*`.
    Digest,
    /// `C_Encrypt*`.
    Encrypt,
    /// `C_Decrypt*`.
    Decrypt,
    /// `C_Sign*`.
    Sign,
    /// `C_Verify*`.
    Verify,
    /// `C_VerifySignature*`.
    VerifySignature,
}

impl Session {
    /// A new session on `slot`.
    pub fn new(handle: CK_SESSION_HANDLE, slot: Arc<Slot>, rw: bool) -> Session {
        Session {
            handle,
            slot,
            rw,
            ops: Mutex::new(Ops::default()),
        }
    }

    fn ops(&self) -> MutexGuard<'_, Ops> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run one call of an active operation (any call but its `*Init`).
    /// PKCS#11 3.0 §5.2 and §5.8–5.12: a call that returns an error other than
    /// `CKR_BUFFER_TOO_SMALL` terminates the operation, whatever raised the
    /// error (the ABI's argument checks included), so `f` does all of it.
    pub fn operation_call<T>(&self, family: Family, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let r = f();
        if matches!(&r, Err(e) if e.rv() != CKR_BUFFER_TOO_SMALL) {
            self.end(family);
        }
        r
    }

    /// End `family`'s active operation, if there is one.
    fn end(&self, family: Family) {
        let mut ops = self.ops();
        match family {
            Family::Digest => ops.digest = None,
            Family::Encrypt => ops.encrypt = None,
            Family::Decrypt => ops.decrypt = None,
            Family::Sign => ops.sign = None,
            Family::Verify => ops.verify = None,
            Family::VerifySignature => ops.verify_signature = None,
        }
    }

    /// A `*Init` with a NULL `pMechanism` (PKCS#11 3.0 §5.8.1 and its
    /// siblings): terminate the family's active operation; `CKR_OK` whether or
    /// not one was active (nothing here cannot be cancelled).
    pub fn cancel(&self, family: Family) -> Result<()> {
        self.end(family);
        Ok(())
    }

    /// `CK_SESSION_INFO.state`.
    pub fn state(&self) -> CK_STATE {
        match (self.slot.state().login, self.rw) {
            (LoggedIn::So, _) => CKS_RW_SO_FUNCTIONS,
            (LoggedIn::User, true) => CKS_RW_USER_FUNCTIONS,
            (LoggedIn::User, false) => CKS_RO_USER_FUNCTIONS,
            (LoggedIn::Nobody, true) => CKS_RW_PUBLIC_SESSION,
            (LoggedIn::Nobody, false) => CKS_RO_PUBLIC_SESSION,
        }
    }

    /// An object handle visible to this session.
    pub fn object(&self, h: CK_OBJECT_HANDLE) -> Result<(Arc<Entry>, Part)> {
        self.slot.object(self, h)
    }

    /// The key behind a key handle: `CKR_KEY_HANDLE_INVALID` if there is none.
    fn key(&self, h: CK_OBJECT_HANDLE) -> Result<(Arc<Entry>, Part)> {
        self.slot.check_active()?;
        let (e, part) = self.object(h).map_err(|_| Error(CKR_KEY_HANDLE_INVALID))?;
        match &e.rec.body {
            Body::Key(_) => Ok((e, part)),
            Body::Stored { .. } => Err(Error(CKR_KEY_TYPE_INCONSISTENT)),
        }
    }

    /// Whether a write to this object is allowed from this session.
    pub fn check_writable(&self, e: &Entry, part: Part) -> Result<()> {
        if e.is_token() && !self.rw {
            return Err(Error(CKR_SESSION_READ_ONLY));
        }
        let _ = part;
        Ok(())
    }

    // --- find ---------------------------------------------------------------

    /// C_FindObjectsInit.
    pub fn find_init(&self, t: &Template) -> Result<()> {
        let mut ops = self.ops();
        if ops.find.is_some() {
            return Err(Error(CKR_OPERATION_ACTIVE));
        }
        let handles = self.slot.find(t)?;
        ops.find = Some(FindCtx {
            handles: handles.into(),
        });
        Ok(())
    }

    /// C_FindObjects: up to `max` handles.
    pub fn find_next(&self, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let mut ops = self.ops();
        let f = ops
            .find
            .as_mut()
            .ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))?;
        let n = max.min(f.handles.len());
        Ok(f.handles.drain(..n).collect())
    }

    /// C_FindObjectsFinal.
    pub fn find_final(&self) -> Result<()> {
        self.ops()
            .find
            .take()
            .map(|_| ())
            .ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))
    }

    // --- sign ---------------------------------------------------------------

    /// C_SignInit (PKCS#11 3.1 §5.13.1).
    pub fn sign_init(&self, mech: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        let mut ops = self.ops();
        if ops.sign.is_some() {
            return Err(Error(CKR_OPERATION_ACTIVE));
        }
        let (e, part) = self.key(key)?;
        let Body::Key(k) = &e.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        if part == Part::Public {
            // A public key is the wrong type of key for signing.
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        }
        if e.is_token() {
            self.slot.authorize(
                DataAction::KeysSign,
                &k.name,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            )?;
        }
        let plan = rules::sign_plan(mech, k, KeyOps::SIGN, now())?;
        let master = self.slot.state().master.clone();
        let label = self.slot.pool.label();
        let key = e.private_key(master.as_deref(), &label)?;
        ops.sign = Some(SignCtx::new(key, plan)?);
        Ok(())
    }

    /// C_Sign.
    pub fn sign(&self, data: &[u8], out: OutBuf<'_>) -> Result<usize> {
        let mut ops = self.ops();
        finish(&mut ops.sign, out, Stage::Single, SignCtx::sig_len, |c| {
            c.sign(Some(data))
        })
    }

    /// C_SignUpdate.
    pub fn sign_update(&self, data: &[u8]) -> Result<()> {
        let mut ops = self.ops();
        let c = ops
            .sign
            .as_mut()
            .ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))?;
        c.mode().admit(Stage::Update)?;
        let limit = c.input_limit();
        c.update(data, limit)
    }

    /// C_SignFinal.
    pub fn sign_final(&self, out: OutBuf<'_>) -> Result<usize> {
        let mut ops = self.ops();
        finish(&mut ops.sign, out, Stage::Final, SignCtx::sig_len, |c| {
            c.sign(None)
        })
    }

    // --- verify -------------------------------------------------------------

    /// The verification `C_VerifyInit` and `C_VerifySignatureInit` start:
    /// the principal's verify action on a token key, then the plan.
    fn verify_op(&self, mech: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<VerifyCtx> {
        let (e, _part) = self.key(key)?;
        let Body::Key(k) = &e.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        if e.is_token() {
            self.slot.authorize(
                DataAction::KeysVerify,
                &k.name,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            )?;
        }
        let plan = rules::sign_plan(mech, k, KeyOps::VERIFY, now())?;
        VerifyCtx::new(e.public_key()?, plan)
    }

    /// C_VerifyInit.
    pub fn verify_init(&self, mech: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        let mut ops = self.ops();
        if ops.verify.is_some() {
            return Err(Error(CKR_OPERATION_ACTIVE));
        }
        ops.verify = Some(self.verify_op(mech, key)?);
        Ok(())
    }

    /// C_Verify: the operation ends whatever the outcome.
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> Result<()> {
        verify_end(
            self.ops().verify.take(),
            Stage::Single,
            Some(data),
            signature,
        )
    }

    /// C_VerifyUpdate.
    pub fn verify_update(&self, data: &[u8]) -> Result<()> {
        verify_part(self.ops().verify.as_mut(), data)
    }

    /// C_VerifyFinal.
    pub fn verify_final(&self, signature: &[u8]) -> Result<()> {
        verify_end(self.ops().verify.take(), Stage::Final, None, signature)
    }

    /// C_VerifySignatureInit, PKCS#11 3.2: as `C_VerifyInit` (same
    /// mechanisms, checks and plan), with the signature, whose length must
    /// be the key's (`CKR_SIGNATURE_LEN_RANGE`, and no operation starts).
    pub fn verify_signature_init(
        &self,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
        signature: &[u8],
    ) -> Result<()> {
        let mut ops = self.ops();
        if ops.verify_signature.is_some() {
            return Err(Error(CKR_OPERATION_ACTIVE));
        }
        let c = self.verify_op(mech, key)?;
        if signature.len() != c.sig_len() {
            return Err(Error(CKR_SIGNATURE_LEN_RANGE));
        }
        ops.verify_signature = Some((c, signature.to_vec()));
        Ok(())
    }

    /// C_VerifySignature: the operation ends whatever the outcome.
    pub fn verify_signature(&self, data: &[u8]) -> Result<()> {
        let (c, signature) = self.ops().verify_signature.take().unzip();
        verify_end(c, Stage::Single, Some(data), &signature.unwrap_or_default())
    }

    /// C_VerifySignatureUpdate.
    pub fn verify_signature_update(&self, data: &[u8]) -> Result<()> {
        verify_part(self.ops().verify_signature.as_mut().map(|(c, _)| c), data)
    }

    /// C_VerifySignatureFinal: the operation ends whatever the outcome.
    pub fn verify_signature_final(&self) -> Result<()> {
        let (c, signature) = self.ops().verify_signature.take().unzip();
        verify_end(c, Stage::Final, None, &signature.unwrap_or_default())
    }

    // --- digest -------------------------------------------------------------

    /// C_DigestInit.
    pub fn digest_init(&self, mech: &Mechanism) -> Result<()> {
        let mut ops = self.ops();
        if ops.digest.is_some() {
            return Err(Error(CKR_OPERATION_ACTIVE));
        }
        ops.digest = Some(DigestCtx::new(rules::digest_hash(mech)?));
        Ok(())
    }

    /// C_Digest.
    pub fn digest(&self, data: &[u8], out: OutBuf<'_>) -> Result<usize> {
        let mut ops = self.ops();
        finish(
            &mut ops.digest,
            out,
            Stage::Single,
            |c| c.hash.len(),
            |c| Ok(c.finish(Some(data))),
        )
    }

    /// C_DigestUpdate.
    pub fn digest_update(&self, data: &[u8]) -> Result<()> {
        let mut ops = self.ops();
        let c = ops
            .digest
            .as_mut()
            .ok_or(Error(CKR_OPERATION_NOT_INITIALIZED))?;
        c.mode().admit(Stage::Update)?;
        c.update(data);
        Ok(())
    }

    /// C_DigestFinal.
    pub fn digest_final(&self, out: OutBuf<'_>) -> Result<usize> {
        let mut ops = self.ops();
        finish(
            &mut ops.digest,
            out,
            Stage::Final,
            |c| c.hash.len(),
            |c| Ok(c.finish(None)),
        )
    }

    // --- encrypt / decrypt --------------------------------------------------

    /// The key of a cipher operation: RSA encrypts and wraps with the public
    /// key object, decrypts and unwraps with the private one; AES does both.
    fn cipher_key(
        &self,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
        op: KeyOps,
    ) -> Result<(rules::Cipher, CipherKey)> {
        let (e, part) = self.key(key)?;
        let Body::Key(k) = &e.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        if e.is_token() {
            self.permit_cipher(mech.ty, k, op, CKR_KEY_FUNCTION_NOT_PERMITTED)?;
        }
        let cipher = rules::cipher_plan(mech, k, op, now())?;
        self.cipher_side(&e, part, cipher, op)
    }

    /// The access check of a cipher operation `op` on token key `k`: the
    /// Managed HSM's action, as the audit log names it (AES-KW, and RSA on a
    /// key with wrapKey/unwrapKey but not encrypt/decrypt, are wrap/unwrap).
    fn permit_cipher(
        &self,
        ty: CK_MECHANISM_TYPE,
        k: &crate::engine::key::KeyRecord,
        op: KeyOps,
        denied: CK_RV,
    ) -> Result<()> {
        let action = match rules::cipher_operation(ty, k.ops, op) {
            KeyOps::WRAP => DataAction::KeysWrap,
            KeyOps::UNWRAP => DataAction::KeysUnwrap,
            KeyOps::DECRYPT => DataAction::KeysDecrypt,
            _ => DataAction::KeysEncrypt,
        };
        self.slot.authorize(action, &k.name, denied)
    }

    /// The parsed key a cipher operation uses, from the right half of a pair.
    fn cipher_side(
        &self,
        e: &Entry,
        part: Part,
        cipher: rules::Cipher,
        op: KeyOps,
    ) -> Result<(rules::Cipher, CipherKey)> {
        let Body::Key(k) = &e.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        let public_side = op == KeyOps::ENCRYPT || op == KeyOps::WRAP;
        let key = match (k.kind.is_pair(), part, public_side) {
            (true, Part::Public, true) => match e.public_key()? {
                super::objects::ParsedPublic::Rsa(r) => CipherKey::RsaPublic(r),
                super::objects::ParsedPublic::Ec(..)
                | super::objects::ParsedPublic::MlDsa(..)
                | super::objects::ParsedPublic::MlKem(_) => {
                    return Err(Error(CKR_KEY_TYPE_INCONSISTENT))
                }
            },
            // The other half of the pair is the wrong type of key for this op.
            (true, _, _) if (part == Part::Public) != public_side => {
                return Err(Error(CKR_KEY_TYPE_INCONSISTENT))
            }
            _ => {
                let master = self.slot.state().master.clone();
                let label = self.slot.pool.label();
                match e.private_key(master.as_deref(), &label)? {
                    ParsedKey::Rsa(r) => CipherKey::RsaPrivate(r),
                    ParsedKey::Aes(a) => CipherKey::Aes(a),
                    ParsedKey::Ec(..) | ParsedKey::MlDsa(..) | ParsedKey::MlKem(_) => {
                        return Err(Error(CKR_KEY_TYPE_INCONSISTENT))
                    }
                }
            }
        };
        Ok((cipher, key))
    }

    /// The Managed HSM operation (and audit name) of a `C_EncryptInit` or
    /// `C_DecryptInit` (`op`) with mechanism `ty` on `key`: AES-KW, and RSA on
    /// a key with wrapKey/unwrapKey but not encrypt/decrypt, are
    /// "KeyWrap"/"KeyUnwrap"; an unknown handle keeps the call's own name.
    pub fn cipher_audit_name(
        &self,
        ty: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
        op: KeyOps,
    ) -> &'static str {
        let key_ops = match self.key(key).map(|(e, _)| e) {
            Ok(e) => e.rec.key().map(|k| k.ops).unwrap_or_default(),
            Err(_) => KeyOps::default(),
        };
        let op = rules::cipher_operation(ty, key_ops, op);
        match op {
            KeyOps::WRAP => "KeyWrap",
            KeyOps::UNWRAP => "KeyUnwrap",
            KeyOps::DECRYPT => "KeyDecrypt",
            _ => "KeyEncrypt",
        }
    }

    /// C_EncryptInit (PKCS#11 3.1 §5.8.1).
    pub fn encrypt_init(&self, mech: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        let mut ops = self.ops();
        if ops.encrypt.is_some() {
            return Err(Error(CKR_OPERATION_ACTIVE));
        }
        let (cipher, key) = self.cipher_key(mech, key, KeyOps::ENCRYPT)?;
        ops.encrypt = Some(CipherCtx::new(key, cipher, true));
        Ok(())
    }

    /// C_Encrypt, C_EncryptUpdate, C_EncryptFinal (`data` empty for Final).
    pub fn encrypt(&self, data: &[u8], out: OutBuf<'_>, stage: Stage) -> Result<usize> {
        cipher_step(&mut self.ops().encrypt, data, out, stage)
    }

    /// C_DecryptInit (PKCS#11 3.1 §5.9.1).
    pub fn decrypt_init(&self, mech: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        let mut ops = self.ops();
        if ops.decrypt.is_some() {
            return Err(Error(CKR_OPERATION_ACTIVE));
        }
        let (cipher, key) = self.cipher_key(mech, key, KeyOps::DECRYPT)?;
        ops.decrypt = Some(CipherCtx::new(key, cipher, false));
        Ok(())
    }

    /// C_Decrypt, C_DecryptUpdate, C_DecryptFinal (`data` empty for Final).
    pub fn decrypt(&self, data: &[u8], out: OutBuf<'_>, stage: Stage) -> Result<usize> {
        cipher_step(&mut self.ops().decrypt, data, out, stage)
    }

    // --- wrap / unwrap ------------------------------------------------------

    /// The wrapping (`op` WRAP) or unwrapping key of C_WrapKey/C_UnwrapKey,
    /// with the handle and type errors those calls name.
    fn wrapping_key(
        &self,
        mech: &Mechanism,
        h: CK_OBJECT_HANDLE,
        op: KeyOps,
    ) -> Result<(rules::Cipher, CipherKey)> {
        let (handle_invalid, type_inconsistent) = if op == KeyOps::WRAP {
            (
                CKR_WRAPPING_KEY_HANDLE_INVALID,
                CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
            )
        } else {
            (
                CKR_UNWRAPPING_KEY_HANDLE_INVALID,
                CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
            )
        };
        self.slot.check_active()?;
        let (e, part) = self.object(h).map_err(|_| Error(handle_invalid))?;
        let Body::Key(k) = &e.rec.body else {
            return Err(Error(handle_invalid));
        };
        let retype = |err: Error| match err {
            Error(CKR_KEY_TYPE_INCONSISTENT) => Error(type_inconsistent),
            e => e,
        };
        if e.is_token() {
            let action = if op == KeyOps::WRAP {
                DataAction::KeysWrap
            } else {
                DataAction::KeysUnwrap
            };
            self.slot
                .authorize(action, &k.name, CKR_KEY_FUNCTION_NOT_PERMITTED)?;
        }
        let cipher = rules::cipher_plan(mech, k, op, now()).map_err(retype)?;
        self.cipher_side(&e, part, cipher, op).map_err(retype)
    }

    /// C_WrapKey (PKCS#11 3.1 §5.14.3). A Managed HSM never exports a key and
    /// every softmhsm key is `CKA_EXTRACTABLE` = FALSE, so after the checks in
    /// the spec's order (mechanism, wrapping key, its permission, the key) the
    /// answer is `CKR_KEY_UNEXTRACTABLE`.
    pub fn wrap_key(
        &self,
        mech: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> Result<usize> {
        rules::cipher_serves(mech.ty, KeyOps::WRAP)?;
        self.wrapping_key(mech, wrapping, KeyOps::WRAP)?;
        let (e, part) = self
            .object(key)
            .map_err(|_| Error(CKR_KEY_HANDLE_INVALID))?;
        match (&e.rec.body, part) {
            (Body::Key(_), Part::Main) => Err(Error(CKR_KEY_UNEXTRACTABLE)),
            // Public keys and stored objects are not what C_WrapKey carries.
            _ => Err(Error(CKR_KEY_NOT_WRAPPABLE)),
        }
    }

    /// C_UnwrapKey (PKCS#11 3.1 §5.14.4): an AES secret key, or an RSA/EC
    /// private key as PKCS#8, stored as an imported (non-local) key.
    pub fn unwrap_key(
        &self,
        mech: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        t: &Template,
    ) -> Result<Arc<Entry>> {
        rules::cipher_serves(mech.ty, KeyOps::UNWRAP)?;
        let (cipher, key) = self.wrapping_key(mech, unwrapping, KeyOps::UNWRAP)?;
        if t.get_ulong(CKA_CLASS)?.is_none() || t.get_ulong(CKA_KEY_TYPE)?.is_none() {
            return Err(Error(CKR_TEMPLATE_INCOMPLETE));
        }
        let material = unwrap_bytes(&key, &cipher, wrapped)?;
        self.import_key(t, material, Error(CKR_WRAPPED_KEY_INVALID))
    }

    /// C_EncapsulateKey (PKCS#11 3.2 §5.18.1) with an ML-KEM public key: a
    /// new secret key from the shared secret (see [`Session::kem_secret`]);
    /// returns the ciphertext's length and, when `out` took the ciphertext,
    /// the new key. A length query (`out` None) makes nothing.
    pub fn encapsulate_key(
        &self,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
        t: &Template,
        out: OutBuf<'_>,
    ) -> Result<(usize, Option<Arc<Entry>>)> {
        let (e, part) = self.key(key)?;
        let Body::Key(k) = &e.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        if e.is_token() {
            // Encapsulation is the key's wrapKey op, as the Managed HSM's wrap.
            self.slot.authorize(
                DataAction::KeysWrap,
                &k.name,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            )?;
        }
        rules::kem_plan(mech, k, KeyOps::WRAP, now())?;
        let KeyKind::MlKem(set) = k.kind else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        if part != Part::Public {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        }
        let len = set.ciphertext_len();
        let Some(out) = out else {
            return Ok((len, None));
        };
        if out.len() < len {
            return Err(Error(CKR_BUFFER_TOO_SMALL));
        }
        let ParsedPublic::MlKem(public) = e.public_key()? else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        let (ciphertext, secret) = public.encapsulate()?;
        let made = self.kem_secret(t, secret)?;
        out[..len].copy_from_slice(&ciphertext);
        Ok((len, Some(made)))
    }

    /// C_DecapsulateKey (PKCS#11 3.2 §5.18.2) with an ML-KEM private key: the
    /// new secret key holds the shared secret. A tampered ciphertext of the
    /// right length gives an unrelated key (FIPS 203 implicit rejection).
    pub fn decapsulate_key(
        &self,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
        t: &Template,
        ciphertext: &[u8],
    ) -> Result<Arc<Entry>> {
        let (e, part) = self.key(key)?;
        let Body::Key(k) = &e.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        if e.is_token() {
            self.slot.authorize(
                DataAction::KeysUnwrap,
                &k.name,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            )?;
        }
        rules::kem_plan(mech, k, KeyOps::UNWRAP, now())?;
        if part != Part::Main {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        }
        let master = self.slot.state().master.clone();
        let label = self.slot.pool.label();
        let ParsedKey::MlKem(private) = e.private_key(master.as_deref(), &label)? else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        let secret = private.decapsulate(ciphertext)?;
        self.kem_secret(t, secret)
    }

    /// The secret key a KEM call makes: an AES key (`CKO_SECRET_KEY`,
    /// `CKK_AES`; the token has no generic secrets) of the template's
    /// `CKA_VALUE_LEN`, the shared secret's leading bytes, 32 (AES-256) when
    /// the template does not say. Stored as imported key material is.
    fn kem_secret(&self, t: &Template, secret: SecretBytes) -> Result<Arc<Entry>> {
        if t.get_ulong(CKA_CLASS)? != Some(CKO_SECRET_KEY)
            || t.get_ulong(CKA_KEY_TYPE)? != Some(CKK_AES)
        {
            return Err(Error(CKR_TEMPLATE_INCONSISTENT));
        }
        let len = match t.get_ulong(CKA_VALUE_LEN)? {
            None => crypto::ML_KEM_SECRET_LEN,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| [16, 24, 32].contains(n))
                .ok_or(Error(CKR_ATTRIBUTE_VALUE_INVALID))?,
        };
        let material = SecretBytes::new(secret[..len].to_vec());
        self.import_key(t, material, Error(CKR_TEMPLATE_INCONSISTENT))
    }

    /// C_CreateObject of a session public key (see
    /// [`policy::public_key_request`]): the key is parsed by the provider
    /// before it is stored, so a point off its curve or a malformed modulus is
    /// `CKR_ATTRIBUTE_VALUE_INVALID` here, not at first use.
    pub fn import_public(&self, t: &Template) -> Result<Arc<Entry>> {
        let req = policy::public_key_request(t)?;
        let Body::Key(k) = &req.record.body else {
            return Err(Error(CKR_GENERAL_ERROR));
        };
        let public = k
            .public
            .as_ref()
            .ok_or(Error(CKR_GENERAL_ERROR))?
            .to_public(k.kind)?;
        let p = crypto::provider();
        let parsed = match &public {
            crypto::PublicKey::Rsa { n, e } => p.rsa_public(n, e).map(|_| ()),
            crypto::PublicKey::Ec { curve, point } => p.ec_public(*curve, point).map(|_| ()),
            crypto::PublicKey::MlDsa { set, key } => p.ml_dsa_public(*set, key).map(|_| ()),
            crypto::PublicKey::MlKem { set, key } => p.ml_kem_public(*set, key).map(|_| ()),
        };
        parsed.map_err(|_| Error(CKR_ATTRIBUTE_VALUE_INVALID))?;
        if policy::is_private(&req.record, Part::Public)
            && self.slot.state().login != LoggedIn::User
        {
            return Err(Error(CKR_USER_NOT_LOGGED_IN));
        }
        self.slot
            .add(self, false, req.record, None, DataAction::KeysImport)
    }

    /// C_CreateObject of a secret or private key: an ML-DSA private key from
    /// its `CKA_SEED` ([`Session::import_ml_dsa`]), any other from the
    /// material its template carries (`pool::import::material`).
    pub fn create_key(&self, t: &Template) -> Result<Arc<Entry>> {
        if t.get_ulong(CKA_CLASS)? == Some(CKO_PRIVATE_KEY)
            && t.get_ulong(CKA_KEY_TYPE)? == Some(CKK_ML_DSA)
        {
            return self.import_ml_dsa(t);
        }
        let material = crate::pool::import::material(t)?;
        self.import_key(t, material, Error(CKR_ATTRIBUTE_VALUE_INVALID))
    }

    /// C_CreateObject of a `CKK_ML_DSA` private key (PKCS#11 3.2): its 32-byte
    /// `CKA_SEED` and `CKA_PARAMETER_SET`, stored as the seed, as a generated
    /// key is. The expanded key (`CKA_VALUE`) is not taken: it would have to
    /// be checked against the seed, and without one it cannot be stored.
    fn import_ml_dsa(&self, t: &Template) -> Result<Arc<Entry>> {
        let set = t
            .get_ulong(CKA_PARAMETER_SET)?
            .ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
        let set =
            crypto::MlDsa::from_parameter_set(set).ok_or(Error(CKR_ATTRIBUTE_VALUE_INVALID))?;
        if t.get(CKA_VALUE).is_some() {
            return Err(Error(CKR_TEMPLATE_INCONSISTENT));
        }
        let seed = SecretBytes::new(
            t.get(CKA_SEED)
                .ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?
                .to_vec(),
        );
        if seed.len() != crypto::ML_DSA_SEED_LEN {
            return Err(Error(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        let public = crypto::provider()
            .ml_dsa_private(set, &seed)
            .map_err(|_| Error(CKR_ATTRIBUTE_VALUE_INVALID))?
            .public();
        self.store_import(t, KeyKind::MlDsa(set), Some(public), seed)
    }

    /// Store imported key material (C_CreateObject, C_UnwrapKey): raw AES key
    /// bytes or PKCS#8 RSA/EC, validated by parsing it (`bad` is the code for
    /// material that does not parse), sized by the Managed HSM rules.
    pub fn import_key(
        &self,
        t: &Template,
        material: SecretBytes,
        bad: Error,
    ) -> Result<Arc<Entry>> {
        let class = t
            .get_ulong(CKA_CLASS)?
            .ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
        let key_type = t
            .get_ulong(CKA_KEY_TYPE)?
            .ok_or(Error(CKR_TEMPLATE_INCOMPLETE))?;
        let p = crypto::provider();
        let (kind, public) = match (class, key_type) {
            (CKO_SECRET_KEY, CKK_AES) => {
                let len = u32::try_from(material.len()).map_err(|_| Error(CKR_KEY_SIZE_RANGE))?;
                if !rules::AES_BYTES.contains(&len) {
                    return Err(Error(CKR_KEY_SIZE_RANGE));
                }
                (KeyKind::Aes(len * 8), None)
            }
            (CKO_PRIVATE_KEY, CKK_RSA | CKK_EC) => {
                let kind = rules::pkcs8_kind(&material).map_err(|e| match e {
                    Error(CKR_WRAPPED_KEY_INVALID) => bad,
                    e => e,
                })?;
                if kind.key_type() != key_type {
                    return Err(Error(CKR_TEMPLATE_INCONSISTENT));
                }
                let public = match kind {
                    KeyKind::Ec(c) => p.ec_private(c, &material).map_err(|_| bad)?.public(),
                    _ => p.rsa_private(&material).map_err(|_| bad)?.public(),
                };
                (kind, Some(public))
            }
            _ => return Err(Error(CKR_TEMPLATE_INCONSISTENT)),
        };
        self.store_import(t, kind, public, material)
    }

    /// The end of every key import: the template checked against what the
    /// material is (`policy::import_request`), the session and login rules,
    /// then the new object.
    fn store_import(
        &self,
        t: &Template,
        kind: KeyKind,
        public: Option<crypto::PublicKey>,
        material: SecretBytes,
    ) -> Result<Arc<Entry>> {
        let req = policy::import_request(t, kind, public.as_ref())?;
        if req.token && !self.rw {
            return Err(Error(CKR_SESSION_READ_ONLY));
        }
        if self.slot.state().login != LoggedIn::User {
            return Err(Error(CKR_USER_NOT_LOGGED_IN));
        }
        self.slot.add(
            self,
            req.token,
            req.record,
            Some(material),
            DataAction::KeysImport,
        )
    }
}
