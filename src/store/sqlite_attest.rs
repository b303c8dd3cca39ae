//! The token's attestation key pair in the token row (schema v3 columns
//! `attest_sealed`, `attest_public`): the private key sealed under the master
//! key like every secret, the public key (SPKI DER) in the clear.

use super::WriteTx;
use crate::error::{Error, Result};
use crate::store::AttestationRow;
use cryptoki_sys::CKR_TOKEN_NOT_RECOGNIZED;
use rusqlite::{params, Connection, OptionalExtension};

/// The token's attestation key, or None if it has none yet (a token
/// initialised before attestation existed). `CKR_TOKEN_NOT_RECOGNIZED`
/// before initialisation.
pub(super) fn attestation_key(conn: &Connection) -> Result<Option<AttestationRow>> {
    let row = conn
        .prepare_cached("SELECT attest_sealed, attest_public FROM token WHERE id = 1")?
        .query_row([], |r| {
            Ok((
                r.get::<_, Option<Vec<u8>>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
            ))
        })
        .optional()?;
    match row.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))? {
        (Some(sealed), Some(public)) => Ok(Some(AttestationRow { sealed, public })),
        _ => Ok(None),
    }
}

/// Store an attestation key unless the token already has one (another
/// process may have made it meanwhile); true if this one was stored.
pub(super) fn set_attestation_key(tx: WriteTx<'_>, key: &AttestationRow) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE token SET attest_sealed = ?1, attest_public = ?2
             WHERE id = 1 AND (attest_sealed IS NULL OR attest_public IS NULL)",
        )?
        .execute(params![key.sealed, key.public])?;
    tx.commit()?;
    Ok(n == 1)
}
