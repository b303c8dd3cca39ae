//! The security domain (DESIGN §7): a pool's recovery root, carried to a new
//! pool through a quorum of RSA key pairs the customer holds.
//!
//! **What it is.** Everything that seals the pool's keys and key backups:
//! the 256-bit master key and the *pool identity*, which is the token label —
//! the authority of every kid (`softmhsm://<label>/keys/<name>/<version>`),
//! and every sealed key's AAD is its kid, every key backup's AAD names the
//! label. A pool that adopts a security domain therefore takes both: the old
//! master key and the old label ([`upload`] re-initialises the new, empty pool
//! under the old label).
//!
//! **The security-domain file** ([`download`]) is JSON: `format`,
//! `schemaVersion`, `poolId` (the label), `created`, `quorum`, one entry per
//! wrapping key (`index` = the Shamir x, `wrappingKeySha256` = SHA-256 of the
//! key's SPKI DER, `encryptedKey` = RSA-OAEP-256 of a fresh AES-256 key, `iv`,
//! `ciphertext` = AES-256-GCM of the share) and `mac`. Integrity, in two layers:
//! each share's GCM AAD is the whole header (every field above but the
//! ciphertexts, and every entry's index and fingerprint), so a changed header
//! field fails every share; and `mac` is HMAC-SHA-256, under a key derived from
//! the recovered master key, over the header and every entry's ciphertexts,
//! checked after recombination. Anyone can encrypt a share to a public wrapping
//! key, so GCM alone cannot tell a forged share from a real one: the MAC does,
//! because only the real secret yields the key it was made with. What an
//! attacker with the file and fewer than `quorum` private keys can do: read the
//! metadata (pool label, quorum, fingerprints), destroy the file, or alter it
//! — which every recovery refuses. What they cannot: learn anything of the
//! secret (Shamir shares below the quorum are independent of it), or make a
//! recovery yield a secret other than the one in the file. Someone who can
//! replace the whole file with one of their own making (their own secret,
//! encrypted to your public keys) is not stopped by the MAC: keep the file
//! with your backups; key backups of the real pool do not restore into a pool
//! that adopted a forged domain.
//!
//! **Recovery**: [`init_recovery`] gives a new, empty pool an exchange key
//! pair (private half sealed in the pool as a private data object);
//! [`restore_blob`] (offline, no pool) recombines the domain from a quorum of
//! private keys and encrypts it to the exchange key; [`upload`] opens that blob
//! and makes the pool adopt the domain.

use super::lifecycle::token_label;
use crate::crypto::{self, shamir, spki, Hash, PublicKey, SecretBytes};
use crate::engine::key::{hex, unhex, Body, Record};
use crate::engine::lifecycle::{Outcome, Refusal};
use crate::error::Error;
use crate::store::{MasterKey, NewObject, PinUser, Store};
use base64ct::{Base64, Encoding};
use cryptoki_sys::*;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// `format` of a security-domain file.
pub const FORMAT: &str = "softmhsm-security-domain";
/// `format` of a restore blob.
pub const BLOB_FORMAT: &str = "softmhsm-security-domain-restore-blob";
/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The fewest wrapping keys a security domain is split for.
pub const MIN_WRAPPING_KEYS: usize = 3;
/// The smallest RSA wrapping key accepted.
pub const MIN_RSA_BITS: usize = 2048;
/// `CKA_LABEL` of the data object that holds the sealed exchange private key.
pub const EXCHANGE_LABEL: &str = "softmhsm-security-domain-exchange-key";
/// Size of the exchange key pair made by [`init_recovery`]: the smallest
/// wrapping key's, since the blob it protects holds what the shares do (and a
/// 3072-bit key takes 10-45 s to make in a debug build of the pure-Rust provider).
const EXCHANGE_BITS: usize = 2048;
/// First byte of the encoded secret (its layout's version).
const SECRET_VERSION: u8 = 1;
/// Bytes of an AES-GCM IV and tag.
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A pool's security domain: its master key and its identity (the label).
pub struct SecurityDomain {
    /// The master key that seals every key and key backup.
    pub master: MasterKey,
    /// The token label, the kid's authority and part of every seal's AAD.
    pub label: String,
}

impl SecurityDomain {
    /// The security domain of an unlocked pool.
    pub fn of_pool(store: &dyn Store, master: &MasterKey) -> Outcome<SecurityDomain> {
        Ok(SecurityDomain {
            master: MasterKey::from_bytes(master.expose())?,
            label: token_label(store)?,
        })
    }

    /// The secret that is split: version byte, master key, label.
    fn encode(&self) -> SecretBytes {
        let mut out = SecretBytes::new(Vec::with_capacity(1 + 32 + self.label.len()));
        out.push(SECRET_VERSION);
        out.extend_from_slice(self.master.expose());
        out.extend_from_slice(self.label.as_bytes());
        out
    }

    fn decode(secret: &[u8]) -> Outcome<SecurityDomain> {
        match secret.split_first() {
            Some((&SECRET_VERSION, rest)) if rest.len() > 32 => {
                let (key, label) = rest.split_at(32);
                let label = std::str::from_utf8(label).map_err(|_| altered())?;
                Ok(SecurityDomain {
                    master: MasterKey::from_bytes(key)?,
                    label: label.to_string(),
                })
            }
            _ => Err(altered()),
        }
    }

    /// HMAC-SHA-256 of `data` under a key derived from the master key for
    /// this purpose only.
    fn mac(&self, data: &[u8]) -> Result<Hmac<Sha256>, Error> {
        let mut derive = hmac(self.master.expose())?;
        derive.update(b"softmhsm security-domain file mac v1");
        let key = Zeroizing::new(<[u8; 32]>::from(derive.finalize().into_bytes()));
        let mut mac = hmac(&key[..])?;
        mac.update(data);
        Ok(mac)
    }
}

/// HMAC-SHA-256 under `key` (any length is accepted: the error cannot happen).
fn hmac(key: &[u8]) -> Result<Hmac<Sha256>, Error> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| Error(CKR_GENERAL_ERROR))
}

fn altered() -> Refusal {
    Refusal::Invalid(
        "the security domain file was altered or is damaged (its integrity check failed)".into(),
    )
}

fn invalid(why: impl Into<String>) -> Refusal {
    Refusal::Invalid(why.into())
}

/// SHA-256 of a public key's SPKI DER, lowercase hex (as `openssl pkey -pubin
/// -outform DER | sha256sum` prints it).
pub fn fingerprint(key: &PublicKey) -> String {
    hex(&Sha256::digest(spki::spki_der(key)))
}

/// A security-domain file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SdFile {
    format: String,
    schema_version: u32,
    pool_id: String,
    created: i64,
    quorum: usize,
    shares: Vec<SdShare>,
    mac: String,
}

/// One share, encrypted to one wrapping key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SdShare {
    index: u8,
    wrapping_key_sha256: String,
    encrypted_key: String,
    iv: String,
    ciphertext: String,
}

/// A restore blob: the security domain encrypted to one exchange key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RestoreBlob {
    format: String,
    schema_version: u32,
    pool_id: String,
    exchange_key_sha256: String,
    encrypted_key: String,
    iv: String,
    ciphertext: String,
}

/// Append one length-prefixed field: the byte strings MACed and used as AAD
/// are unambiguous whatever the fields hold.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl SdFile {
    /// The header every share's GCM AAD starts with.
    fn header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        field(&mut h, self.format.as_bytes());
        field(&mut h, &self.schema_version.to_be_bytes());
        field(&mut h, self.pool_id.as_bytes());
        field(&mut h, &self.created.to_be_bytes());
        field(&mut h, &(self.quorum as u64).to_be_bytes());
        field(&mut h, &(self.shares.len() as u64).to_be_bytes());
        for s in &self.shares {
            field(&mut h, &[s.index]);
            field(&mut h, s.wrapping_key_sha256.as_bytes());
        }
        h
    }

    fn share_aad(header: &[u8], index: u8) -> Vec<u8> {
        let mut aad = header.to_vec();
        field(&mut aad, b"share");
        field(&mut aad, &[index]);
        aad
    }

    /// What `mac` covers: the header and every share's ciphertexts.
    fn mac_input(&self) -> Vec<u8> {
        let mut m = self.header();
        for s in &self.shares {
            field(&mut m, &[s.index]);
            field(&mut m, s.encrypted_key.as_bytes());
            field(&mut m, s.iv.as_bytes());
            field(&mut m, s.ciphertext.as_bytes());
        }
        m
    }
}

/// RSA-OAEP-256 of a fresh AES-256 key, AES-256-GCM of `plaintext` under it:
/// (encryptedKey, iv, ciphertext), base64.
fn encrypt_to(key: &PublicKey, aad: &[u8], plaintext: &[u8]) -> Outcome<(String, String, String)> {
    let PublicKey::Rsa { n, e } = key else {
        return Err(invalid("wrapping keys must be RSA keys"));
    };
    let p = crypto::provider();
    let mut aes_key = SecretBytes::new(vec![0u8; 32]);
    p.random(&mut aes_key)?;
    let mut iv = [0u8; IV_LEN];
    p.random(&mut iv)?;
    let ciphertext = p.aes(&aes_key)?.gcm_seal(&iv, aad, plaintext, TAG_LEN)?;
    let encrypted_key = p.rsa_public(n, e)?.encrypt_oaep(Hash::Sha256, &aes_key)?;
    Ok((
        Base64::encode_string(&encrypted_key),
        Base64::encode_string(&iv),
        Base64::encode_string(&ciphertext),
    ))
}

/// Undo [`encrypt_to`] with the private key (PKCS#8); None if anything fails
/// (a wrong key, an altered field).
fn decrypt_with(
    private: &dyn crypto::RsaPrivateKey,
    aad: &[u8],
    encrypted_key: &str,
    iv: &str,
    ciphertext: &str,
) -> Option<SecretBytes> {
    let ek = Base64::decode_vec(encrypted_key).ok()?;
    let iv = Base64::decode_vec(iv).ok()?;
    let ct = Base64::decode_vec(ciphertext).ok()?;
    if iv.len() != IV_LEN || ct.len() < TAG_LEN {
        return None;
    }
    let aes_key = private.decrypt_oaep(Hash::Sha256, &ek).ok()?;
    if aes_key.len() != 32 {
        return None;
    }
    crypto::provider()
        .aes(&aes_key)
        .ok()?
        .gcm_open(&iv, aad, &ct, TAG_LEN)
        .ok()
}

/// Check the wrapping keys of a download: 3–10 RSA keys of 2048 bits or
/// more, no key twice; returns their fingerprints.
pub fn check_wrapping_keys(keys: &[PublicKey], quorum: usize) -> Outcome<Vec<String>> {
    if !(MIN_WRAPPING_KEYS..=shamir::MAX_SHARES).contains(&keys.len()) {
        return Err(invalid(format!(
            "give {MIN_WRAPPING_KEYS} to {} wrapping keys ({} given)",
            shamir::MAX_SHARES,
            keys.len()
        )));
    }
    if !(2..=keys.len()).contains(&quorum) {
        return Err(invalid(format!(
            "the quorum must be 2 to {} (the number of wrapping keys), not {quorum}",
            keys.len()
        )));
    }
    let mut fps = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if !matches!(k, PublicKey::Rsa { .. }) || k.bits() < MIN_RSA_BITS {
            return Err(invalid(format!(
                "wrapping key {} is not an RSA key of {MIN_RSA_BITS} bits or more",
                i + 1
            )));
        }
        let fp = fingerprint(k);
        if fps.contains(&fp) {
            return Err(invalid(format!("wrapping key {} is given twice", i + 1)));
        }
        fps.push(fp);
    }
    Ok(fps)
}

/// `security-domain download`: split `sd` into one share per wrapping key,
/// any `quorum` of which recover it; the file's JSON.
pub fn download(
    sd: &SecurityDomain,
    keys: &[PublicKey],
    quorum: usize,
    now: i64,
) -> Outcome<Vec<u8>> {
    let fps = check_wrapping_keys(keys, quorum)?;
    let shares = shamir::split(&sd.encode(), quorum, keys.len())?;
    let mut file = SdFile {
        format: FORMAT.into(),
        schema_version: SCHEMA_VERSION,
        pool_id: sd.label.clone(),
        created: now,
        quorum,
        shares: shares
            .iter()
            .zip(&fps)
            .map(|(s, fp)| SdShare {
                index: s.x,
                wrapping_key_sha256: fp.clone(),
                encrypted_key: String::new(),
                iv: String::new(),
                ciphertext: String::new(),
            })
            .collect(),
        mac: String::new(),
    };
    let header = file.header();
    for ((entry, share), key) in file.shares.iter_mut().zip(&shares).zip(keys) {
        let aad = SdFile::share_aad(&header, share.x);
        (entry.encrypted_key, entry.iv, entry.ciphertext) = encrypt_to(key, &aad, &share.y)?;
    }
    file.mac = Base64::encode_string(&sd.mac(&file.mac_input())?.finalize().into_bytes());
    to_json(&file)
}

fn to_json(v: &impl Serialize) -> Outcome<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(v).map_err(|_| Error(CKR_GENERAL_ERROR))?;
    out.push(b'\n');
    Ok(out)
}

/// Parse and check a security-domain file's shape (not yet its integrity).
fn parse_file(json: &[u8]) -> Outcome<SdFile> {
    let file: SdFile = serde_json::from_slice(json).map_err(|e| {
        invalid(format!(
            "not a security domain file ({}): {e}",
            if e.is_data() { "bad field" } else { "bad JSON" }
        ))
    })?;
    if file.format != FORMAT {
        return Err(invalid(format!(
            "not a security domain file (format '{}')",
            file.format
        )));
    }
    if file.schema_version != SCHEMA_VERSION {
        return Err(invalid(format!(
            "security domain schema version {} is not supported (this build reads {SCHEMA_VERSION})",
            file.schema_version
        )));
    }
    let n = file.shares.len();
    if !(MIN_WRAPPING_KEYS..=shamir::MAX_SHARES).contains(&n) || !(2..=n).contains(&file.quorum) {
        return Err(altered());
    }
    for (i, s) in file.shares.iter().enumerate() {
        let fp_ok = s.wrapping_key_sha256.len() == 64
            && unhex(&s.wrapping_key_sha256).is_some()
            && s.wrapping_key_sha256 == s.wrapping_key_sha256.to_lowercase();
        let dup = file.shares[..i]
            .iter()
            .any(|t| t.index == s.index || t.wrapping_key_sha256 == s.wrapping_key_sha256);
        if s.index == 0 || !fp_ok || dup {
            return Err(altered());
        }
    }
    Ok(file)
}

/// Recover the security domain from a file and the private halves (PKCS#8)
/// of at least a quorum of its wrapping keys; the offline half of recovery.
pub fn recover(json: &[u8], private_keys: &[SecretBytes]) -> Outcome<SecurityDomain> {
    let file = parse_file(json)?;
    let header = file.header();
    let p = crypto::provider();
    let mut shares = Vec::new();
    let mut used = Vec::new();
    for (i, pkcs8) in private_keys.iter().enumerate() {
        let key = p
            .rsa_private(pkcs8)
            .map_err(|_| invalid(format!("private key {} is not an RSA private key", i + 1)))?;
        let fp = fingerprint(&key.public());
        let Some(entry) = file.shares.iter().find(|s| s.wrapping_key_sha256 == fp) else {
            return Err(invalid(format!(
                "private key {} is not one of the file's wrapping keys (SHA-256 {fp})",
                i + 1
            )));
        };
        if used.contains(&entry.index) {
            return Err(invalid(format!("private key {} is given twice", i + 1)));
        }
        let aad = SdFile::share_aad(&header, entry.index);
        let y = decrypt_with(
            &*key,
            &aad,
            &entry.encrypted_key,
            &entry.iv,
            &entry.ciphertext,
        )
        .ok_or_else(altered)?;
        used.push(entry.index);
        shares.push(shamir::Share { x: entry.index, y });
    }
    if shares.len() < file.quorum {
        return Err(invalid(format!(
            "the quorum is {} of {} wrapping keys: {} private key(s) given",
            file.quorum,
            file.shares.len(),
            shares.len()
        )));
    }
    let secret = shamir::combine(&shares, file.quorum)?;
    let sd = SecurityDomain::decode(&secret)?;
    let mac = Base64::decode_vec(&file.mac).map_err(|_| altered())?;
    sd.mac(&file.mac_input())?
        .verify_slice(&mac)
        .map_err(|_| altered())?;
    if sd.label != file.pool_id {
        return Err(altered());
    }
    Ok(sd)
}

impl RestoreBlob {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::new();
        field(&mut aad, self.format.as_bytes());
        field(&mut aad, &self.schema_version.to_be_bytes());
        field(&mut aad, self.pool_id.as_bytes());
        field(&mut aad, self.exchange_key_sha256.as_bytes());
        aad
    }
}

/// `security-domain restore-blob`: recover the domain from `json` and the
/// private keys, and encrypt it to the new pool's exchange key.
pub fn restore_blob(
    json: &[u8],
    private_keys: &[SecretBytes],
    exchange: &PublicKey,
) -> Outcome<Vec<u8>> {
    if !matches!(exchange, PublicKey::Rsa { .. }) || exchange.bits() < MIN_RSA_BITS {
        return Err(invalid(
            "the exchange key must be an RSA key of 2048 bits or more",
        ));
    }
    let sd = recover(json, private_keys)?;
    let mut blob = RestoreBlob {
        format: BLOB_FORMAT.into(),
        schema_version: SCHEMA_VERSION,
        pool_id: sd.label.clone(),
        exchange_key_sha256: fingerprint(exchange),
        encrypted_key: String::new(),
        iv: String::new(),
        ciphertext: String::new(),
    };
    (blob.encrypted_key, blob.iv, blob.ciphertext) =
        encrypt_to(exchange, &blob.aad(), &sd.encode())?;
    to_json(&blob)
}

/// Open a restore blob with the exchange private key (PKCS#8). Public for
/// the fuzz targets; [`upload`] is the way in.
#[doc(hidden)]
pub fn open_restore_blob(json: &[u8], exchange_pkcs8: &[u8]) -> Outcome<SecurityDomain> {
    open_blob(json, &*crypto::provider().rsa_private(exchange_pkcs8)?)
}

/// Open a restore blob with the exchange private key.
fn open_blob(json: &[u8], exchange: &dyn crypto::RsaPrivateKey) -> Outcome<SecurityDomain> {
    let blob: RestoreBlob = serde_json::from_slice(json)
        .map_err(|e| invalid(format!("not a security domain restore blob: {e}")))?;
    if blob.format != BLOB_FORMAT {
        return Err(invalid(format!(
            "not a security domain restore blob (format '{}')",
            blob.format
        )));
    }
    if blob.schema_version != SCHEMA_VERSION {
        return Err(invalid(format!(
            "restore blob schema version {} is not supported",
            blob.schema_version
        )));
    }
    if blob.exchange_key_sha256 != fingerprint(&exchange.public()) {
        return Err(invalid(
            "the restore blob was made for another exchange key (run init-recovery and restore-blob again with this pool's key)",
        ));
    }
    let blob_altered = || invalid("the restore blob was altered or is damaged");
    let secret = decrypt_with(
        exchange,
        &blob.aad(),
        &blob.encrypted_key,
        &blob.iv,
        &blob.ciphertext,
    )
    .ok_or_else(blob_altered)?;
    let sd = SecurityDomain::decode(&secret).map_err(|_| blob_altered())?;
    if sd.label != blob.pool_id {
        return Err(blob_altered());
    }
    Ok(sd)
}

/// The AAD of the sealed exchange private key of the pool labelled `label`.
fn exchange_aad(label: &str) -> Vec<u8> {
    format!("softmhsm security-domain exchange key v1 {label}").into_bytes()
}

/// Whether a record is the exchange key's data object.
pub(crate) fn is_exchange(rec: &Record) -> bool {
    matches!(&rec.body, Body::Stored { class, attrs, .. }
        if *class == CKO_DATA && attrs.get(&CKA_LABEL).map(Vec::as_slice) == Some(EXCHANGE_LABEL.as_bytes()))
}

/// Refuse unless the pool is empty: no key (live or deleted), no object but
/// the exchange key. Returns the exchange key's row id and sealed key.
fn empty_pool(store: &dyn Store, verb: &str) -> Outcome<Option<(i64, Vec<u8>)>> {
    let mut exchange = None;
    let mut others = 0;
    for row in store.objects()? {
        match Record::from_json(&row.attrs) {
            Ok(rec) if is_exchange(&rec) => exchange = row.sealed.map(|s| (row.id, s)),
            _ => others += 1,
        }
    }
    let deleted = store.deleted_names()?.len();
    if others + deleted > 0 {
        return Err(invalid(format!(
            "{verb} needs a new, empty pool: this one holds {others} object(s) and {deleted} deleted key(s)"
        )));
    }
    Ok(exchange)
}

/// `security-domain init-recovery`: give a new, empty pool an exchange key
/// pair (replacing one made before); returns its public key.
pub fn init_recovery(store: &mut dyn Store, master: &MasterKey) -> Outcome<PublicKey> {
    let old = empty_pool(&*store, "init-recovery")?;
    let label = token_label(&*store)?;
    let p = crypto::provider();
    let pkcs8 = p.generate_rsa(EXCHANGE_BITS)?;
    let public = p.rsa_private(&pkcs8)?.public();
    let rec = Record {
        body: Body::Stored {
            class: CKO_DATA,
            private: true,
            attrs: BTreeMap::from([
                (CKA_LABEL, EXCHANGE_LABEL.as_bytes().to_vec()),
                (CKA_APPLICATION, b"softmhsm security domain".to_vec()),
            ]),
        },
        label: EXCHANGE_LABEL.as_bytes().to_vec(),
        id: Vec::new(),
        uid: crate::engine::key::random_hex_id()?,
        modifiable: false,
        destroyable: true,
    };
    if let Some((id, _)) = old {
        store.delete_object(id)?;
    }
    store.insert_object(&NewObject {
        attrs: rec.to_json()?,
        keys: super::objects::row_keys(&rec),
        sealed: Some(master.seal(&exchange_aad(&label), &pkcs8)?),
        ..Default::default()
    })?;
    Ok(public)
}

/// What [`upload`] needs to re-initialise the pool under the adopted domain.
pub struct Adoption<'a> {
    /// The SO PIN (checked by the caller), kept.
    pub so_pin: &'a [u8],
    /// The user PIN to set.
    pub user_pin: &'a [u8],
    /// PBKDF2 iterations for both PINs.
    pub kdf_iterations: u32,
}

/// `security-domain upload --restore-blob`: the new, empty pool adopts the
/// domain in `blob` (made by [`restore_blob`] for its exchange key): it is
/// re-initialised under the old label, its PINs wrap the old master key, a
/// new attestation key is made. Every check runs before the first write.
pub fn upload(
    store: &mut dyn Store,
    master: &MasterKey,
    blob: &[u8],
    how: &Adoption<'_>,
) -> Outcome<SecurityDomain> {
    let (id, sealed) = empty_pool(&*store, "upload")?.ok_or_else(|| {
        invalid("this pool has no exchange key: run security-domain init-recovery first")
    })?;
    let label = token_label(&*store)?;
    let pkcs8 = master.open(&exchange_aad(&label), &sealed)?;
    let exchange = crypto::provider().rsa_private(&pkcs8)?;
    let sd = open_blob(blob, &*exchange)?;
    let record = store.token()?.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))?;
    // Not one transaction (the Store trait has no such call): interrupted
    // here, the pool is left empty with a fresh master key, and recovery is
    // run again from init-recovery; the security-domain file is untouched.
    store.delete_object(id)?;
    store.init_token(
        &sd.label,
        how.so_pin,
        how.kdf_iterations,
        record.retention_days,
    )?;
    store.set_pin(PinUser::So, &sd.master, how.so_pin)?;
    store.set_pin(PinUser::User, &sd.master, how.user_pin)?;
    super::attest::provision(store, &sd.master);
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_pair(bits: usize) -> (SecretBytes, PublicKey) {
        let p = crypto::provider();
        let pkcs8 = p.generate_rsa(bits).unwrap();
        let public = p.rsa_private(&pkcs8).unwrap().public();
        (pkcs8, public)
    }

    fn domain() -> SecurityDomain {
        SecurityDomain {
            master: MasterKey::generate().unwrap(),
            label: "old-pool".into(),
        }
    }

    #[test]
    fn a_quorum_recovers_and_fewer_are_refused() {
        let keys: Vec<_> = (0..3).map(|_| rsa_pair(2048)).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.1.clone()).collect();
        let sd = domain();
        let file = download(&sd, &publics, 2, 1).unwrap();
        for pair in [[0, 1], [1, 2], [2, 0]] {
            let privs: Vec<_> = pair.iter().map(|&i| keys[i].0.clone()).collect();
            let back = recover(&file, &privs).unwrap();
            assert_eq!(back.master.expose(), sd.master.expose());
            assert_eq!(back.label, "old-pool");
        }
        let one = recover(&file, &[keys[0].0.clone()]).err().unwrap();
        assert!(one.to_string().contains("quorum is 2 of 3"), "{one}");
    }

    #[test]
    fn a_forged_share_fails_the_mac() {
        let keys: Vec<_> = (0..3).map(|_| rsa_pair(2048)).collect();
        let publics: Vec<_> = keys.iter().map(|k| k.1.clone()).collect();
        let file = download(&domain(), &publics, 2, 1).unwrap();
        let mut parsed = parse_file(&file).unwrap();
        // Anyone may encrypt a share to a public key, with the right AAD.
        let aad = SdFile::share_aad(&parsed.header(), parsed.shares[0].index);
        let forged = encrypt_to(&publics[0], &aad, &[7u8; 41]).unwrap();
        let s = &mut parsed.shares[0];
        (s.encrypted_key, s.iv, s.ciphertext) = forged;
        let json = to_json(&parsed).unwrap();
        let e = recover(&json, &[keys[0].0.clone(), keys[1].0.clone()])
            .err()
            .unwrap();
        assert!(e.to_string().contains("altered"), "{e}");
    }

    #[test]
    fn small_or_few_wrapping_keys_are_refused() {
        let small = PublicKey::Rsa {
            n: vec![0xc5; 128],
            e: vec![1, 0, 1],
        };
        let big: Vec<_> = (0..3).map(|_| rsa_pair(2048).1).collect();
        assert!(download(&domain(), &big[..2], 2, 1).is_err());
        assert!(download(&domain(), &[small, big[0].clone(), big[1].clone()], 2, 1).is_err());
        assert!(download(
            &domain(),
            &[big[0].clone(), big[0].clone(), big[1].clone()],
            2,
            1
        )
        .is_err());
        assert!(download(&domain(), &big, 1, 1).is_err());
        assert!(download(&domain(), &big, 4, 1).is_err());
    }
}
