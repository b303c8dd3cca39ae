//! Encryption at rest: the pool's master key ("security domain") seals every
//! private or secret part with AES-256-GCM; the master key itself is wrapped under
//! keys derived from the SO and user PINs (PBKDF2-HMAC-SHA-256).

use crate::crypto::SecretBytes;
use crate::error::{Error, Result};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use cryptoki_sys::{CKR_DEVICE_ERROR, CKR_PIN_INCORRECT};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// Bytes in a master key (AES-256).
const KEY_LEN: usize = 32;
/// Bytes in a GCM nonce.
const NONCE_LEN: usize = 12;
/// Bytes in a GCM tag.
const TAG_LEN: usize = 16;
/// Bytes in a PIN salt.
pub const SALT_LEN: usize = 16;

/// The token's 256-bit master key; wiped from memory on drop.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    /// Redacted: the key bytes never reach a log or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<MasterKey> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut key[..])?;
        Ok(MasterKey(key))
    }

    /// Seal `plaintext` with AES-256-GCM under this key; `aad` binds the blob to its
    /// record (the kid), so a sealed blob cannot be moved to another record.
    /// Output: 12-byte random nonce || ciphertext || 16-byte tag.
    ///
    /// Should the OS RNG fail, the nonce is derived from the key, a
    /// process-wide counter, the time and the input instead (still unique per
    /// call). GCM's only other failure is a plaintext over 64 GiB:
    /// `CKR_DEVICE_ERROR`, and nothing is returned that a caller could store.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        if fill_random(&mut nonce).is_err() {
            nonce = self.fallback_nonce(aad, plaintext);
        }
        let cipher = Aes256Gcm::new((&*self.0).into());
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        match cipher.encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            aad,
            &mut out[NONCE_LEN..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(out)
            }
            Err(_) => {
                // Wipe the copied plaintext before giving up.
                zeroize::Zeroize::zeroize(&mut out);
                log::error!("seal: plaintext too long for AES-GCM");
                Err(Error(CKR_DEVICE_ERROR))
            }
        }
    }

    /// Open a blob made by [`MasterKey::seal`] with the same `aad`;
    /// any mismatch or tampering is `CKR_DEVICE_ERROR` (the store is damaged).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error(CKR_DEVICE_ERROR));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let cipher = Aes256Gcm::new((&*self.0).into());
        // Decrypt in a zeroizing buffer so the plaintext never sits in a plain Vec.
        let mut buf: SecretBytes = Zeroizing::new(ciphertext.to_vec());
        cipher
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buf, tag.into())
            .map_err(|_| Error(CKR_DEVICE_ERROR))?;
        Ok(buf)
    }

    /// Wrap this key under a key derived from `pin` (PBKDF2-HMAC-SHA-256 with
    /// `salt` and `iterations`); `aad` names the purpose (SO or user).
    pub(crate) fn wrap_under_pin(
        &self,
        pin: &[u8],
        salt: &[u8],
        iterations: u32,
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        kek(pin, salt, iterations).seal(aad, &self.0[..])
    }

    /// Unwrap a master key made by [`MasterKey::wrap_under_pin`]. A GCM tag
    /// failure means a wrong PIN: `CKR_PIN_INCORRECT`.
    pub(crate) fn unwrap_under_pin(
        wrapped: &[u8],
        pin: &[u8],
        salt: &[u8],
        iterations: u32,
        aad: &[u8],
    ) -> Result<MasterKey> {
        let plain = kek(pin, salt, iterations)
            .open(aad, wrapped)
            .map_err(|_| Error(CKR_PIN_INCORRECT))?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            // The tag verified, so the blob is ours but malformed: the store is damaged.
            return Err(Error(CKR_DEVICE_ERROR));
        }
        key.copy_from_slice(&plain);
        Ok(MasterKey(key))
    }

    /// The key from its 32 bytes (a security domain being adopted);
    /// `CKR_ARGUMENTS_BAD` for any other length.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<MasterKey> {
        if bytes.len() != KEY_LEN {
            return Err(Error(cryptoki_sys::CKR_ARGUMENTS_BAD));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(MasterKey(key))
    }

    /// The raw key bytes, to be split into security-domain shares and nothing else.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0[..]
    }

    /// The raw key bytes, for tests that check they never reach the disk.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0[..]
    }

    /// A unique nonce without the OS RNG: HMAC over a process-wide counter, the
    /// time, the pid and the input, under a sub-key of this key (so the HMAC and
    /// GCM never share a key).
    fn fallback_nonce(&self, aad: &[u8], plaintext: &[u8]) -> [u8; NONCE_LEN] {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let sub_key = Zeroizing::new(
            hmac_sha256(&self.0[..], &[b"softmhsm nonce key v1"]).unwrap_or_default(),
        );
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let aad_len = (aad.len() as u64).to_be_bytes();
        let digest = hmac_sha256(
            &sub_key[..],
            &[
                &count.to_be_bytes(),
                &nanos.to_be_bytes(),
                &std::process::id().to_be_bytes(),
                &aad_len,
                aad,
                plaintext,
            ],
        )
        .unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        nonce
    }
}

/// HMAC-SHA-256 of the concatenated `parts`; `None` only if the key is refused
/// (HMAC accepts any key length, so never in practice).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

/// The key-encryption key for a PIN; a `MasterKey` so it is wiped on drop.
fn kek(pin: &[u8], salt: &[u8], iterations: u32) -> MasterKey {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::pbkdf2_hmac::<Sha256>(pin, salt, iterations, &mut key[..]);
    MasterKey(key)
}

/// Fill `buf` from the OS RNG; failure is `CKR_DEVICE_ERROR` (the token's RNG failed).
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf).map_err(|e| {
        log::error!("OS random number generator failed: {e}");
        Error(CKR_DEVICE_ERROR)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a private key, or something like it";

    #[test]
    fn seal_then_open_returns_plaintext() {
        let key = MasterKey::generate().unwrap();
        let blob = key.seal(b"kid-1", SECRET).unwrap();
        assert_eq!(blob.len(), NONCE_LEN + SECRET.len() + TAG_LEN);
        assert_eq!(&key.open(b"kid-1", &blob).unwrap()[..], SECRET);
    }

    #[test]
    fn seal_uses_a_fresh_nonce_each_time() {
        let key = MasterKey::generate().unwrap();
        assert_ne!(
            key.seal(b"kid", SECRET).unwrap(),
            key.seal(b"kid", SECRET).unwrap()
        );
    }

    #[test]
    fn open_with_other_aad_is_device_error() {
        let key = MasterKey::generate().unwrap();
        let blob = key.seal(b"kid-1", SECRET).unwrap();
        assert_eq!(
            key.open(b"kid-2", &blob).unwrap_err(),
            Error(CKR_DEVICE_ERROR)
        );
    }

    #[test]
    fn open_of_flipped_byte_is_device_error() {
        let key = MasterKey::generate().unwrap();
        let blob = key.seal(b"kid", SECRET).unwrap();
        for i in [0, NONCE_LEN, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert_eq!(key.open(b"kid", &bad).unwrap_err(), Error(CKR_DEVICE_ERROR));
        }
    }

    #[test]
    fn open_under_other_key_is_device_error() {
        let blob = MasterKey::generate().unwrap().seal(b"kid", SECRET).unwrap();
        let other = MasterKey::generate().unwrap();
        assert_eq!(
            other.open(b"kid", &blob).unwrap_err(),
            Error(CKR_DEVICE_ERROR)
        );
    }

    #[test]
    fn open_of_truncated_blob_is_device_error() {
        let key = MasterKey::generate().unwrap();
        assert_eq!(
            key.open(b"kid", &[0u8; 27]).unwrap_err(),
            Error(CKR_DEVICE_ERROR)
        );
    }

    #[test]
    fn fallback_nonce_differs_per_call() {
        let key = MasterKey::generate().unwrap();
        assert_ne!(
            key.fallback_nonce(b"kid", SECRET),
            key.fallback_nonce(b"kid", SECRET)
        );
    }

    #[test]
    fn pin_wrap_round_trips_and_wrong_pin_is_pin_incorrect() {
        let key = MasterKey::generate().unwrap();
        let salt = [7u8; SALT_LEN];
        let wrapped = key
            .wrap_under_pin(b"1234", &salt, 1000, b"purpose")
            .unwrap();
        let back = MasterKey::unwrap_under_pin(&wrapped, b"1234", &salt, 1000, b"purpose").unwrap();
        assert_eq!(&back.0[..], &key.0[..]);
        let wrong = MasterKey::unwrap_under_pin(&wrapped, b"1235", &salt, 1000, b"purpose");
        assert_eq!(wrong.err(), Some(Error(CKR_PIN_INCORRECT)));
        let other_purpose = MasterKey::unwrap_under_pin(&wrapped, b"1234", &salt, 1000, b"other");
        assert_eq!(other_purpose.err(), Some(Error(CKR_PIN_INCORRECT)));
    }
}
