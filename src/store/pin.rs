//! What every store does the same way with PINs and the master key: the
//! wrapping AADs, salts, the checks made before a PIN is tried, the slow
//! unwrap, and the arguments of a token initialisation. Sealing stays here, in
//! Rust: a database only ever receives salts and sealed bytes.

use super::{MasterKey, PinSlot, PinUser, MAX_PIN_FAILURES};
use crate::crypto::seal::{fill_random, SALT_LEN};
use crate::error::{Error, Result};
use cryptoki_sys::{CKR_ARGUMENTS_BAD, CKR_PIN_LOCKED, CKR_USER_PIN_NOT_INITIALIZED};

/// Fixed AAD of the SO-wrapped master key: a blob wrapped for one purpose does
/// not open as the other.
const SO_WRAP_AAD: &[u8] = b"softmhsm master key v1 so";
/// Fixed AAD of the user-wrapped master key.
const USER_WRAP_AAD: &[u8] = b"softmhsm master key v1 user";

impl PinUser {
    /// Column names of this user's salt, wrapped key and failure counter (the
    /// same in every store's schema). Static strings only: SQL is never built
    /// from caller data.
    pub(super) fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            PinUser::So => ("so_salt", "so_wrapped", "so_failures"),
            PinUser::User => ("user_salt", "user_wrapped", "user_failures"),
        }
    }

    /// The AAD naming this user's wrapped master key.
    pub(super) fn wrap_aad(self) -> &'static [u8] {
        match self {
            PinUser::So => SO_WRAP_AAD,
            PinUser::User => USER_WRAP_AAD,
        }
    }
}

/// A new token's master key, with its SO wrap: what `init_token` stores.
pub(super) struct NewToken {
    /// The new master key (returned to the caller).
    pub master: MasterKey,
    /// The SO PIN's salt.
    pub salt: [u8; SALT_LEN],
    /// The master key wrapped under the SO PIN.
    pub wrapped: Vec<u8>,
}

/// Check a token initialisation's arguments (`CKR_ARGUMENTS_BAD`: at least
/// one KDF iteration, retention 7–90 days), then make a new master key wrapped
/// under `so_pin`. Runs the PIN key derivation: call it before taking any lock.
pub(super) fn new_token(
    so_pin: &[u8],
    kdf_iterations: u32,
    retention_days: u32,
) -> Result<NewToken> {
    if kdf_iterations == 0 || !(7..=90).contains(&retention_days) {
        return Err(Error(CKR_ARGUMENTS_BAD));
    }
    let master = MasterKey::generate()?;
    let salt = new_salt()?;
    let wrapped = master.wrap_under_pin(so_pin, &salt, kdf_iterations, SO_WRAP_AAD)?;
    Ok(NewToken {
        master,
        salt,
        wrapped,
    })
}

/// A fresh random PIN salt.
pub(super) fn new_salt() -> Result<[u8; SALT_LEN]> {
    let mut salt = [0u8; SALT_LEN];
    fill_random(&mut salt)?;
    Ok(salt)
}

/// The checks made before the PIN itself: a user PIN must exist and not be locked.
pub(super) fn check_pin_usable(who: PinUser, slot: &PinSlot) -> Result<()> {
    if slot.wrapped.is_none() || slot.salt.is_none() {
        return Err(Error(CKR_USER_PIN_NOT_INITIALIZED));
    }
    if who == PinUser::User && slot.failures >= MAX_PIN_FAILURES {
        return Err(Error(CKR_PIN_LOCKED));
    }
    Ok(())
}

/// Check `pin` against `who`'s stored PIN state and unwrap the master key
/// (the slow PBKDF2 step; run it without holding any lock others need).
/// Counts nothing: the caller records a failure.
pub fn check_pin(who: PinUser, slot: &PinSlot, pin: &[u8]) -> Result<MasterKey> {
    check_pin_usable(who, slot)?;
    unwrap_slot(who, slot, pin)
}

/// Unwrap the master key from `slot` with `pin` (the slow PBKDF2 step).
pub(super) fn unwrap_slot(who: PinUser, slot: &PinSlot, pin: &[u8]) -> Result<MasterKey> {
    match (&slot.salt, &slot.wrapped) {
        (Some(salt), Some(wrapped)) => {
            MasterKey::unwrap_under_pin(wrapped, pin, salt, slot.kdf_iterations, who.wrap_aad())
        }
        _ => Err(Error(CKR_USER_PIN_NOT_INITIALIZED)),
    }
}

/// The AAD of a principal's wrapped master key: bound to its object id, so a
/// blob copied onto another principal's row does not open.
pub(super) fn principal_aad(object_id: &str) -> Vec<u8> {
    format!("softmhsm master key v1 principal {object_id}").into_bytes()
}

/// Wrap `master` under a principal's new `pin`: (salt, wrapped).
pub(crate) fn principal_wrap(
    master: &MasterKey,
    object_id: &str,
    pin: &[u8],
    kdf_iterations: u32,
) -> Result<([u8; SALT_LEN], Vec<u8>)> {
    let salt = new_salt()?;
    let wrapped = master.wrap_under_pin(pin, &salt, kdf_iterations, &principal_aad(object_id))?;
    Ok((salt, wrapped))
}

/// Check a principal's `pin` against its stored state and unwrap the master
/// key (the slow step: run it without holding any lock). A principal locks
/// after [`MAX_PIN_FAILURES`] consecutive failures (`CKR_PIN_LOCKED`), as
/// the user PIN does; counts nothing.
pub fn check_principal_pin(object_id: &str, slot: &PinSlot, pin: &[u8]) -> Result<MasterKey> {
    if slot.failures >= MAX_PIN_FAILURES {
        return Err(Error(CKR_PIN_LOCKED));
    }
    match (&slot.salt, &slot.wrapped) {
        (Some(salt), Some(wrapped)) => MasterKey::unwrap_under_pin(
            wrapped,
            pin,
            salt,
            slot.kdf_iterations,
            &principal_aad(object_id),
        ),
        _ => Err(Error(CKR_USER_PIN_NOT_INITIALIZED)),
    }
}
