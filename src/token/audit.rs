//! The PKCS#11 side of the audit log ([`crate::pool::audit`]): one-line
//! hooks the entry points wrap around their call, recording management
//! operations, logins, and refused crypto operations.

use super::objects::Entry;
use super::session::Session;
use super::slot::Slot;
use crate::engine::key::Body;
use crate::engine::policy;
use crate::error::Result;
use crate::pool::audit::{self, Caller, Event};
use cryptoki_sys::CK_OBJECT_HANDLE;
use std::sync::Arc;
use std::time::Instant;

/// Record one PKCS#11 event on `slot`'s token.
fn record(
    slot: &Slot,
    op: &str,
    failure: Option<crate::error::Error>,
    kid: Option<&str>,
    t: Instant,
) {
    record_algorithm(slot, op, failure, kid, None, t);
}

/// [`record`] with the operation's Managed HSM algorithm.
fn record_algorithm(
    slot: &Slot,
    op: &str,
    failure: Option<crate::error::Error>,
    kid: Option<&str>,
    algorithm: Option<&str>,
    t: Instant,
) {
    let description = failure.map_or_else(|| "CKR_OK".to_string(), |e| e.to_string());
    audit::record_algorithm(
        &slot.config.store_path(),
        &Event {
            operation: op,
            success: failure.is_none(),
            description: &description,
            kid,
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

/// A call on the token itself (`C_InitToken`, `C_InitPIN`, `C_SetPIN`,
/// `C_Login`, `C_Logout`): always recorded.
pub fn token_call<T>(slot: &Slot, op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f();
    record(slot, op, r.as_ref().err().copied(), None, t);
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
                record(slot, op, None, Some(&kid), t);
            }
        }
        Err(e) => record(slot, op, Some(*e), None, t),
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
    record(slot, op, r.as_ref().err().copied(), Some(&kid), t);
    r
}

/// A crypto operation's `*Init` (or `C_WrapKey`): recorded only when refused,
/// with the algorithm `algorithm` names (asked only then). Successes are not
/// recorded: a line per signature would cost more than the signature.
pub fn refused<T>(
    session: &Session,
    op: &str,
    key: CK_OBJECT_HANDLE,
    algorithm: impl FnOnce() -> Option<String>,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let t = Instant::now();
    let r = f();
    if let Err(e) = &r {
        let kid = session
            .object(key)
            .ok()
            .and_then(|(k, _)| kid(&session.slot, &k));
        let alg = algorithm();
        record_algorithm(
            &session.slot,
            op,
            Some(*e),
            kid.as_deref(),
            alg.as_deref(),
            t,
        );
    }
    r
}

/// A rotation the library made by policy at user login ([`Slot::login`]):
/// `KeyRotate` with the new version's kid, or its failure.
pub fn policy_rotation(slot: &Slot, kid: Option<&str>, failure: Option<crate::error::Error>) {
    record(slot, "KeyRotate", failure, kid, Instant::now());
}
