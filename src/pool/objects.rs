//! The in-memory object cache of one token: token objects mirrored from the
//! store, session objects, handles, the label index, and parsed keys.

use crate::crypto::{
    self, Curve, EcPrivateKey, EcPublicKey, PublicKey, RsaPrivateKey, RsaPublicKey, SecretBytes,
};
use crate::engine::attributes::Template;
use crate::engine::key::{Body, KeyKind, Record};
use crate::engine::policy::{self, AttrValue, Part, Recovery, View};
use crate::error::{Error, Result};
use crate::store::{MasterKey, ObjectRow, RowKeys};
use cryptoki_sys::*;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Session object ids start here so they never meet store row ids.
pub const SESSION_ID_BASE: i64 = 1 << 40;

/// A private or secret key, parsed once and shared by every operation that uses it
/// (parsing an RSA key costs tens of µs; a P-256 signature itself about 20 µs).
#[derive(Clone)]
pub enum ParsedKey {
    /// RSA private key.
    Rsa(Arc<dyn RsaPrivateKey>),
    /// EC private key.
    Ec(Arc<dyn EcPrivateKey>, Curve),
    /// AES key.
    Aes(Arc<dyn crypto::AesKey>),
    /// ML-DSA private key, expanded from its seed.
    MlDsa(Arc<dyn crypto::MlDsaPrivateKey>, crypto::MlDsa),
    /// ML-KEM decapsulation key.
    MlKem(Arc<dyn crypto::MlKemPrivateKey>),
}

/// A parsed public key.
#[derive(Clone)]
pub enum ParsedPublic {
    /// RSA.
    Rsa(Arc<dyn RsaPublicKey>),
    /// EC.
    Ec(Arc<dyn EcPublicKey>, Curve),
    /// ML-DSA.
    MlDsa(Arc<dyn crypto::MlDsaPublicKey>, crypto::MlDsa),
    /// ML-KEM encapsulation key.
    MlKem(Arc<dyn crypto::MlKemPublicKey>),
}

/// One row: a key version (one or two PKCS#11 objects), a certificate or a data object.
pub struct Entry {
    /// Store row id, or a session id ≥ [`SESSION_ID_BASE`].
    pub id: i64,
    /// The owning session of a session object.
    pub owner: Option<CK_SESSION_HANDLE>,
    /// Whether this is the current version of its name.
    pub current: bool,
    /// The record.
    pub rec: Record,
    /// Secret material sealed under the master key (token keys).
    pub sealed: Option<Vec<u8>>,
    /// Secret material in memory (session keys), wiped on drop.
    pub plain: Option<SecretBytes>,
    parsed: OnceLock<ParsedKey>,
    parsed_public: OnceLock<ParsedPublic>,
}

impl Entry {
    /// A token object from its store row.
    pub fn from_row(row: &ObjectRow) -> Result<Entry> {
        Ok(Entry {
            id: row.id,
            owner: None,
            current: row.current,
            rec: Record::from_json(&row.attrs)?,
            sealed: row.sealed.clone(),
            plain: None,
            parsed: OnceLock::new(),
            parsed_public: OnceLock::new(),
        })
    }

    /// A session object.
    pub fn session(
        id: i64,
        owner: CK_SESSION_HANDLE,
        rec: Record,
        plain: Option<SecretBytes>,
    ) -> Entry {
        Entry {
            id,
            owner: Some(owner),
            current: true,
            rec,
            sealed: None,
            plain,
            parsed: OnceLock::new(),
            parsed_public: OnceLock::new(),
        }
    }

    /// A copy with another `current` flag (parsed keys are kept).
    pub fn with_current(&self, current: bool) -> Entry {
        Entry {
            id: self.id,
            owner: self.owner,
            current,
            rec: self.rec.clone(),
            sealed: self.sealed.clone(),
            plain: self.plain.clone(),
            parsed: self.parsed.clone(),
            parsed_public: self.parsed_public.clone(),
        }
    }

    /// A copy with a new record (after C_SetAttributeValue); parsed keys are kept.
    pub fn with_record(&self, rec: Record) -> Entry {
        let mut e = self.with_current(self.current);
        e.rec = rec;
        e
    }

    /// Erase the secret material and its parsed form (the private half was destroyed).
    pub fn forget_material(&mut self) {
        self.sealed = None;
        self.plain = None;
        self.parsed = OnceLock::new();
    }

    /// A copy that has forgotten its parsed private key (at logout).
    pub fn without_secrets(&self) -> Entry {
        let mut e = self.with_current(self.current);
        e.parsed = OnceLock::new();
        e
    }

    /// Token object (true) or session object.
    pub fn is_token(&self) -> bool {
        self.owner.is_none()
    }

    /// Whether `part` exists on this row (each half of a pair can be destroyed alone).
    pub fn has_part(&self, part: Part) -> bool {
        match (&self.rec.body, part) {
            (Body::Key(k), Part::Main) => !k.private_hidden,
            (Body::Key(k), Part::Public) => k.kind.is_pair() && !k.public_hidden,
            (Body::Stored { .. }, Part::Main) => true,
            (Body::Stored { .. }, Part::Public) => false,
        }
    }

    /// The attribute view of one part, on a token labelled `token_label`
    /// with the deletion settings `recovery`.
    pub fn view<'a>(&'a self, part: Part, token_label: &'a str, recovery: Recovery) -> View<'a> {
        View {
            rec: &self.rec,
            part,
            token: self.is_token(),
            current: self.current,
            token_label,
            recovery,
        }
    }

    /// Whether `part` matches every attribute of a find template (which
    /// versions a template finds is the finder's rule: `Slot::find`).
    pub fn matches(&self, part: Part, t: &Template, token_label: &str, recovery: Recovery) -> bool {
        let view = self.view(part, token_label, recovery);
        t.0.iter()
            .all(|a| policy::get_attribute(&view, a.ty) == AttrValue::Value(a.value.to_vec()))
    }

    /// The parsed private/secret key, opened with `master` and parsed on first use.
    pub fn private_key(&self, master: Option<&MasterKey>, token_label: &str) -> Result<ParsedKey> {
        if let Some(p) = self.parsed.get() {
            return Ok(p.clone());
        }
        let Body::Key(k) = &self.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        let material: SecretBytes = match (&self.plain, &self.sealed) {
            (Some(p), _) => p.clone(),
            (None, Some(sealed)) => {
                let master = master.ok_or(Error(CKR_USER_NOT_LOGGED_IN))?;
                master.open(policy::kid(token_label, k).as_bytes(), sealed)?
            }
            (None, None) => return Err(Error(CKR_KEY_FUNCTION_NOT_PERMITTED)),
        };
        let p = crypto::provider();
        let parsed = match k.kind {
            KeyKind::Rsa(_) => ParsedKey::Rsa(p.rsa_private(&material)?),
            KeyKind::Ec(c) => ParsedKey::Ec(p.ec_private(c, &material)?, c),
            KeyKind::Aes(_) => ParsedKey::Aes(p.aes(&material)?),
            KeyKind::MlDsa(set) => ParsedKey::MlDsa(p.ml_dsa_private(set, &material)?, set),
            KeyKind::MlKem(set) => ParsedKey::MlKem(p.ml_kem_private(set, &material)?),
        };
        Ok(self.parsed.get_or_init(|| parsed).clone())
    }

    /// The parsed public key (RSA/EC), parsed on first use.
    pub fn public_key(&self) -> Result<ParsedPublic> {
        if let Some(p) = self.parsed_public.get() {
            return Ok(p.clone());
        }
        let Body::Key(k) = &self.rec.body else {
            return Err(Error(CKR_KEY_TYPE_INCONSISTENT));
        };
        let public = k
            .public
            .as_ref()
            .ok_or(Error(CKR_KEY_TYPE_INCONSISTENT))?
            .to_public(k.kind)?;
        let p = crypto::provider();
        let parsed = match public {
            PublicKey::Rsa { n, e } => ParsedPublic::Rsa(p.rsa_public(&n, &e)?),
            PublicKey::Ec { curve, point } => ParsedPublic::Ec(p.ec_public(curve, &point)?, curve),
            PublicKey::MlDsa { set, key } => ParsedPublic::MlDsa(p.ml_dsa_public(set, &key)?, set),
            PublicKey::MlKem { set, key } => ParsedPublic::MlKem(p.ml_kem_public(set, &key)?),
        };
        Ok(self.parsed_public.get_or_init(|| parsed).clone())
    }
}

/// A record's lookup keys, as the store keeps them beside its JSON.
pub fn row_keys(rec: &Record) -> RowKeys {
    let public_label = match &rec.body {
        Body::Key(k) => k.public_label.clone().filter(|l| *l != rec.label),
        Body::Stored { .. } => None,
    };
    RowKeys {
        label: rec.label.clone(),
        public_label,
        ckaid: rec.id.clone(),
    }
}

/// The handle of one part of a row: stable for a row's lifetime, never 0.
pub fn handle(id: i64, part: Part) -> CK_OBJECT_HANDLE {
    ((id as CK_OBJECT_HANDLE) << 1) | (part == Part::Public) as CK_OBJECT_HANDLE
}

/// The row id and part of a handle.
pub fn split_handle(h: CK_OBJECT_HANDLE) -> (i64, Part) {
    let part = if h & 1 == 1 { Part::Public } else { Part::Main };
    ((h >> 1) as i64, part)
}

/// The objects of one token this process holds: the token objects it has
/// used (loaded from the store on first use, then kept up to date) and its
/// session objects. Which token objects exist is the store's to say
/// ([`crate::store::Store::lookup`]): nothing here grows with the pool.
#[derive(Default)]
pub struct Objects {
    /// Token objects loaded from the store.
    entries: HashMap<i64, Arc<Entry>>,
    /// Session objects (ids from [`SESSION_ID_BASE`]), apart: every find
    /// looks at all of them.
    sessions: HashMap<i64, Arc<Entry>>,
    next_session_id: i64,
}

impl Objects {
    fn map(&self, id: i64) -> &HashMap<i64, Arc<Entry>> {
        if id >= SESSION_ID_BASE {
            &self.sessions
        } else {
            &self.entries
        }
    }

    /// The entry of a row id, if loaded.
    pub fn get(&self, id: i64) -> Option<&Arc<Entry>> {
        self.map(id).get(&id)
    }

    /// This process's session objects.
    pub fn sessions(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.sessions.values()
    }

    /// The ids of the token objects loaded.
    pub fn loaded_token_ids(&self) -> Vec<i64> {
        self.entries.keys().copied().collect()
    }

    /// A fresh session object id.
    pub fn next_session_id(&mut self) -> i64 {
        self.next_session_id += 1;
        SESSION_ID_BASE + self.next_session_id
    }

    /// Insert or replace an entry.
    pub fn put(&mut self, e: Arc<Entry>) {
        if e.is_token() {
            self.entries.insert(e.id, e);
        } else {
            self.sessions.insert(e.id, e);
        }
    }

    /// Remove an entry.
    pub fn remove(&mut self, id: i64) -> Option<Arc<Entry>> {
        if id >= SESSION_ID_BASE {
            self.sessions.remove(&id)
        } else {
            self.entries.remove(&id)
        }
    }

    /// Load a store row (or bring a loaded one up to date) and return its
    /// entry; None if the row does not parse (logged by `Record::from_json`).
    pub fn load(&mut self, row: &ObjectRow) -> Option<Arc<Entry>> {
        let e = self.refreshed(row)?;
        self.put(e.clone());
        Some(e)
    }

    /// The entry a store row makes, reusing this cache's entry (and its parsed
    /// keys) when the row's record and material did not change.
    fn refreshed(&self, row: &ObjectRow) -> Option<Arc<Entry>> {
        let fresh = Entry::from_row(row).ok()?;
        Some(match self.entries.get(&row.id) {
            Some(old) if old.rec == fresh.rec && old.sealed == fresh.sealed => {
                if old.current == fresh.current {
                    old.clone()
                } else {
                    Arc::new(old.with_current(fresh.current))
                }
            }
            _ => Arc::new(fresh),
        })
    }

    /// Apply the rows changed in the store: every loaded id in `touched` takes
    /// its row from `rows`, or leaves the cache when it has none (deleted or
    /// soft-deleted); rows not loaded stay unloaded. O(changes).
    pub fn apply(&mut self, touched: &[i64], rows: &[ObjectRow]) {
        let live: HashMap<i64, &ObjectRow> = rows.iter().map(|r| (r.id, r)).collect();
        for id in touched {
            if !self.entries.contains_key(id) {
                continue;
            }
            match live.get(id).and_then(|row| self.refreshed(row)) {
                Some(e) => self.put(e),
                None => {
                    self.remove(*id);
                }
            }
        }
    }

    /// Replace the loaded token objects with `rows` (the store's rows of the
    /// ids that were loaded and are still live), keeping the parsed keys of
    /// rows that did not change, and keeping session objects.
    pub fn reload(&mut self, rows: &[ObjectRow]) {
        let keep: Vec<Arc<Entry>> = rows.iter().filter_map(|r| self.refreshed(r)).collect();
        self.entries.clear();
        for e in keep {
            self.put(e);
        }
    }

    /// Forget every parsed private key (logout).
    pub fn forget_secrets(&mut self) {
        let all: Vec<Arc<Entry>> = self
            .entries
            .values()
            .chain(self.sessions.values())
            .map(|e| Arc::new(e.without_secrets()))
            .collect();
        for e in all {
            self.put(e);
        }
    }

    /// Remove the session objects of `session` (C_CloseSession).
    pub fn drop_session_objects(&mut self, session: CK_SESSION_HANDLE) {
        self.sessions.retain(|_, e| e.owner != Some(session));
    }

    /// Remove everything (token re-initialisation).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.sessions.clear();
    }
}
