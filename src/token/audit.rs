//! The PKCS#11 side of the audit log ([`crate::pool::audit`]): one-line
//! hooks the entry points wrap around their call, recording management
//! operations, logins, refused crypto operations and (with `audit = "all"`)
//! successful ones, each naming who acted ([`identity`]).

use super::objects::{split_handle, Entry};
use super::session::Session;
use super::slot::{LoggedIn, Slot};
use crate::engine::key::{Body, KeyOps};
use crate::engine::mechanism::{lookup, Mechanism};
use crate::engine::policy;
use crate::error::Result;
use crate::pool::access::Identity;
use crate::pool::audit::{self, Caller, Crypto, Event, TokenLog};
use cryptoki_sys::CK_OBJECT_HANDLE;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Who is acting on `slot`: the `identity` of every PKCS#11-side record,
/// taken here and nowhere else.
pub fn identity(slot: &Slot) -> Option<Arc<str>> {
    // Shared, so naming the user costs a reference count, not an allocation.
    static USER: OnceLock<Arc<str>> = OnceLock::new();
    static SO: OnceLock<Arc<str>> = OnceLock::new();
    let st = slot.state();
    let (shared, name) = match (st.login, &st.identity) {
        (LoggedIn::Nobody, _) => return None,
        // A principal's name is already shared.
        (LoggedIn::User, Identity::Principal(name)) => return Some(name.clone()),
        (LoggedIn::User, _) => (&USER, "user"),
        (LoggedIn::So, _) => (&SO, "so"),
    };
    Some(shared.get_or_init(|| name.into()).clone())
}

impl TokenLog for Slot {
    fn file(&self) -> PathBuf {
        audit::path_for(&self.config.store_path())
    }

    fn label(&self) -> String {
        self.pool.label()
    }
}

/// Record one PKCS#11 event on `slot`'s token, if its level records
/// management events.
fn record(
    slot: &Slot,
    op: &str,
    failure: Option<crate::error::Error>,
    kid: Option<&str>,
    algorithm: Option<&str>,
    who: Option<Arc<str>>,
    t: Instant,
) {
    if !slot.config.audit.management() {
        return;
    }
    let description = failure.map_or_else(|| "CKR_OK".to_string(), |e| e.to_string());
    audit::record_algorithm(
        &slot.config.store_path(),
        &Event {
            operation: op,
            success: failure.is_none(),
            description: &description,
            kid,
            identity: who.as_deref(),
            duration: t.elapsed(),
            caller: Caller::Pkcs11,
        },
        algorithm,
    );
}

/// The kid of a token key (session objects and certificates have none).
fn kid(slot: &Slot, e: &Entry) -> Option<String> {
    match &e.rec.body {
        Body::Key(k) if e.is_token() => Some(policy::kid(&slot.pool.label(), k)),
        _ => None,
    }
}

/// The Managed HSM algorithm (JWA name) of operation `op` with `mech` on `e`.
fn algorithm(mech: Option<&Mechanism>, e: &Entry, op: KeyOps) -> Option<String> {
    let mech = mech?;
    lookup(mech.ty)?.jwa(op, e.rec.key()?.kind, &mech.param)
}

/// The algorithm names the registry gives (see [`algorithm`]), so that a
/// buffered operation holds a `&'static str`: a `String` it carried would be
/// freed by the flusher thread, into the signing thread's malloc arena.
const ALGORITHMS: &[&str] = &[
    "ES256",
    "ES256K",
    "ES384",
    "ES512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "RSA1_5",
    "RSA-OAEP",
    "RSA-OAEP-256",
    "A128KW",
    "A192KW",
    "A256KW",
    "A128GCM",
    "A192GCM",
    "A256GCM",
    "A128CBC",
    "A192CBC",
    "A256CBC",
    "A128CBCPAD",
    "A192CBCPAD",
    "A256CBCPAD",
];

/// [`algorithm`], shared when it is one of [`ALGORITHMS`].
fn algorithm_name(mech: Option<&Mechanism>, e: &Entry, op: KeyOps) -> Option<Cow<'static, str>> {
    let name = algorithm(mech, e, op)?;
    Some(match ALGORITHMS.iter().find(|a| **a == name) {
        Some(a) => Cow::Borrowed(a),
        None => Cow::Owned(name),
    })
}

/// A call on the token itself (`C_InitToken`, `C_InitPIN`, `C_SetPIN`,
/// `C_Login`, `C_Logout`): always recorded, naming who is logged in after
/// the call, else before it (so a `C_Logout` names who left).
pub fn token_call<T>(slot: &Slot, op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let before = identity(slot);
    let r = f();
    let who = identity(slot).or(before);
    record(slot, op, r.as_ref().err().copied(), None, None, who, t);
    r
}

/// A call that makes a key (`C_GenerateKey*`, `C_CreateObject`,
/// `C_UnwrapKey`): recorded when it fails, and when it made a token key (with
/// the new key's kid). Session keys are scratch objects, not pool keys.
pub fn key_made(
    slot: &Slot,
    op: &str,
    f: impl FnOnce() -> Result<Arc<Entry>>,
) -> Result<Arc<Entry>> {
    let t = Instant::now();
    let r = f();
    match &r {
        Ok(e) => {
            if let Some(kid) = kid(slot, e) {
                record(slot, op, None, Some(&kid), None, identity(slot), t);
            }
        }
        Err(e) => record(slot, op, Some(*e), None, None, identity(slot), t),
    }
    r
}

/// A management call on an existing object (`C_DestroyObject`,
/// `C_SetAttributeValue`): recorded when the object is a token key.
pub fn key_changed<T>(
    slot: &Slot,
    op: &str,
    e: &Entry,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let Some(kid) = kid(slot, e) else {
        return f();
    };
    let t = Instant::now();
    let r = f();
    let failure = r.as_ref().err().copied();
    record(slot, op, failure, Some(&kid), None, identity(slot), t);
    r
}

/// A crypto operation's `*Init` (or `C_WrapKey`) `op` on `key` with `mech`
/// (None when the caller's mechanism could not be read) for `ops`: a refusal
/// is recorded with the management events, a success (one per operation,
/// with a token key) only at level `all`, and then buffered raw: the line is
/// formatted by the flusher, off this path.
pub fn crypto<T>(
    session: &Session,
    op: &'static str,
    key: CK_OBJECT_HANDLE,
    mech: Option<&Mechanism>,
    ops: KeyOps,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let t = Instant::now();
    let r = f();
    let slot = &session.slot;
    match &r {
        Err(e) => {
            if !slot.config.audit.management() {
                return r;
            }
            let entry = session.object(key).ok().map(|(k, _)| k);
            let kid = entry.as_ref().and_then(|k| kid(slot, k));
            let alg = entry.as_ref().and_then(|k| algorithm(mech, k, ops));
            let who = identity(slot);
            record(slot, op, Some(*e), kid.as_deref(), alg.as_deref(), who, t);
        }
        Ok(_) => {
            if !slot.config.audit.crypto() {
                return r;
            }
            let ended = Instant::now();
            // The handle was just checked (`f` succeeded): the pool's
            // snapshot alone, without the freshness and visibility checks
            // of `Session::object` again.
            let Ok(Some(entry)) = slot.pool.entry(split_handle(key).0) else {
                return r;
            };
            if !entry.is_token() || entry.rec.key().is_none() {
                return r;
            }
            audit::record_crypto(Crypto {
                operation: op,
                started: t,
                ended,
                algorithm: algorithm_name(mech, &entry, ops),
                key: entry,
                identity: identity(slot),
                token: slot.clone(),
            });
        }
    }
    r
}

/// A rotation the library made by policy at user login ([`Slot::login`]):
/// `KeyRotate` with the new version's kid, or its failure.
pub fn policy_rotation(slot: &Slot, kid: Option<&str>, failure: Option<crate::error::Error>) {
    record(
        slot,
        "KeyRotate",
        failure,
        kid,
        None,
        identity(slot),
        Instant::now(),
    );
}
