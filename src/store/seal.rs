//! Encryption at rest: the pool's master key ("security domain") seals every
//! private or secret part with AES-256-GCM; the master key itself is wrapped under
//! keys derived from the SO and user PINs (PBKDF2-HMAC-SHA-256).

use crate::crypto::SecretBytes;
use crate::error::Result;

/// The token's 256-bit master key; wiped from memory on drop.
pub struct MasterKey(/* zeroizing 32 bytes */ ());

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<MasterKey> {
        todo!()
    }

    /// Seal `plaintext` with AES-256-GCM under this key; `aad` binds the blob to its
    /// record (the kid), so a sealed blob cannot be moved to another record.
    /// Output: 12-byte random nonce || ciphertext || 16-byte tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let _ = (aad, plaintext);
        todo!()
    }

    /// Open a blob made by [`MasterKey::seal`] with the same `aad`;
    /// any mismatch or tampering is `CKR_DEVICE_ERROR` (the store is damaged).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes> {
        let _ = (aad, sealed);
        todo!()
    }
}
