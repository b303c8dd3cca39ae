//! A slot and its token: the store connection, login state, the object cache,
//! and the token-level calls (C_InitToken, PINs, object creation and lookup).

use super::objects::{handle, split_handle, Entry, Objects};
use super::session::Session;
use crate::config::TokenConfig;
use crate::crypto::{self, SecretBytes};
use crate::engine::attributes::Template;
use crate::engine::key::{Body, KeyKind};
use crate::engine::policy::{self, AttrValue, Part, Recovery};
use crate::engine::{lifecycle, rotation};
use crate::error::{Error, Result};
use crate::store::{MasterKey, NewObject, PinUser, Store, TokenRecord, MAX_PIN_FAILURES};
use cryptoki_sys::*;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Shortest and longest PIN accepted.
pub const PIN_LEN: std::ops::RangeInclusive<usize> = 4..=255;

/// The deletion settings of a token record (its keys' recovery level).
pub fn recovery(rec: &TokenRecord) -> Recovery {
    Recovery {
        purge_protection: rec.purge_protection,
        retention_days: rec.retention_days,
    }
}

/// Who is logged in to the token (PKCS#11 login is per application, per token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoggedIn {
    /// Nobody.
    Nobody,
    /// The normal user.
    User,
    /// The Security Officer.
    So,
}

/// What the token knows while the library is initialised.
pub struct TokenState {
    /// Who is logged in.
    pub login: LoggedIn,
    /// The master key while someone is logged in.
    pub master: Option<Arc<MasterKey>>,
    /// The token label (empty until initialised).
    pub label: String,
    /// The object cache.
    pub objects: Objects,
    /// The token's deletion settings, read with the label.
    pub recovery: Recovery,
    /// Whether the cache has been filled from the store at least once.
    loaded: bool,
}

/// One slot with its token.
pub struct Slot {
    /// `CK_SLOT_ID`.
    pub id: CK_SLOT_ID,
    /// Its configuration.
    pub config: TokenConfig,
    store: Mutex<Option<Store>>,
    state: RwLock<TokenState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was already caught at the ABI; the data
    // (a connection, a cache) stays consistent because every write is transactional.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    /// A slot for `config`; the store is opened now (a failure leaves the token
    /// unusable with `CKR_DEVICE_ERROR`, and is logged).
    pub fn new(id: CK_SLOT_ID, config: TokenConfig) -> Slot {
        let store = match Store::open(&config.store_path()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!(
                    "cannot open token store {}: {e}",
                    config.store_path().display()
                );
                None
            }
        };
        Slot {
            id,
            config,
            store: Mutex::new(store),
            state: RwLock::new(TokenState {
                login: LoggedIn::Nobody,
                master: None,
                label: String::new(),
                objects: Objects::default(),
                recovery: Recovery::default(),
                loaded: false,
            }),
        }
    }

    /// Run `f` on the store connection.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        let mut g = lock(&self.store);
        let store = g.as_mut().ok_or(Error(CKR_DEVICE_ERROR))?;
        f(store)
    }

    /// Run `f` on the store connection and then, still holding the store, on the
    /// token state. Every change of the cache that follows a store read or write
    /// goes through here: the store lock orders them as the store did, so a
    /// snapshot read by one thread can never be applied after another thread's
    /// later write (the lock order is always store, then state).
    pub fn with_store_then_state<T, U>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T>,
        g: impl FnOnce(&mut TokenState, T) -> U,
    ) -> Result<U> {
        let mut guard = lock(&self.store);
        let store = guard.as_mut().ok_or(Error(CKR_DEVICE_ERROR))?;
        let t = f(store)?;
        let mut st = self.state_mut();
        Ok(g(&mut st, t))
    }

    /// Read access to the token state.
    pub fn state(&self) -> RwLockReadGuard<'_, TokenState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the token state.
    pub fn state_mut(&self) -> RwLockWriteGuard<'_, TokenState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The token record, or None if the token is not initialised.
    pub fn record(&self) -> Result<Option<TokenRecord>> {
        self.with_store(|s| s.token())
    }

    /// The token record of an initialised token (`CKR_TOKEN_NOT_RECOGNIZED` otherwise).
    pub fn initialized(&self) -> Result<TokenRecord> {
        self.record()?.ok_or(Error(CKR_TOKEN_NOT_RECOGNIZED))
    }

    /// Bring the object cache up to date with other processes' writes.
    pub fn sync(&self) -> Result<()> {
        self.with_store_then_state(
            |s| {
                if s.changed()? {
                    Ok(Some((s.objects()?, s.token()?)))
                } else {
                    Ok(None)
                }
            },
            |st, rows| {
                if let Some((rows, rec)) = rows {
                    st.recovery = rec.as_ref().map(recovery).unwrap_or_default();
                    st.label = rec.map(|r| r.label).unwrap_or_default();
                    st.objects.reload(&rows);
                }
                st.loaded = true;
            },
        )
    }

    /// C_InitToken (PKCS#11 3.1 §5.6.3); the caller has checked that no session is open.
    pub fn init_token(&self, so_pin: &[u8], label: &str) -> Result<()> {
        check_pin_len(so_pin)?;
        let rec = self.record()?;
        self.with_store(|s| {
            if rec.is_some() {
                // Re-initialisation needs the current SO PIN.
                s.unlock(PinUser::So, so_pin)?;
            }
            s.init_token(
                label,
                so_pin,
                self.config.kdf_iterations,
                self.config.retention_days,
            )
            .map(|master| crate::engine::attest::provision(s, &master))
        })?;
        let mut st = self.state_mut();
        st.login = LoggedIn::Nobody;
        st.master = None;
        st.objects.clear();
        st.label = label.trim_end().to_string();
        // Our own writes do not move the store's change counter for this connection.
        st.recovery = self.record()?.as_ref().map(recovery).unwrap_or_default();
        st.loaded = false;
        drop(st);
        self.sync()
    }

    /// C_Login for `who` (the caller checked session-state rules).
    pub fn login(&self, who: PinUser, pin: &[u8]) -> Result<()> {
        self.initialized()?;
        {
            let st = self.state();
            match (st.login, who) {
                (LoggedIn::User, PinUser::User) | (LoggedIn::So, PinUser::So) => {
                    return Err(Error(CKR_USER_ALREADY_LOGGED_IN))
                }
                (LoggedIn::User, PinUser::So) | (LoggedIn::So, PinUser::User) => {
                    return Err(Error(CKR_USER_ANOTHER_ALREADY_LOGGED_IN))
                }
                _ => {}
            }
        }
        let master = Arc::new(self.with_store(|s| s.unlock(who, pin))?);
        {
            let mut st = self.state_mut();
            st.master = Some(master.clone());
            st.login = match who {
                PinUser::So => LoggedIn::So,
                PinUser::User => LoggedIn::User,
            };
        }
        if who == PinUser::User && self.config.versioning {
            self.apply_rotation_policies(&master);
        }
        self.sync()
    }

    /// Rotate the keys whose rotation policy says so (the library's half of
    /// `softmhsm key rotate-due`: it needs the master key, so it runs at user
    /// login). Never fails the login: refusals are logged.
    fn apply_rotation_policies(&self, master: &MasterKey) {
        let now = crate::engine::attributes::now();
        let done = self.with_store_then_state(
            |s| {
                let due = rotation::rotate_due(s, master, now).map_err(|r| match r {
                    lifecycle::Refusal::Token(e) => e,
                    _ => Error(CKR_GENERAL_ERROR),
                })?;
                let rotated = due.iter().any(|d| matches!(d, rotation::Due::Rotated(_)));
                Ok((due, if rotated { Some(s.objects()?) } else { None }))
            },
            |st, (due, rows)| {
                // Our own writes do not move the store's data_version: reload here.
                if let Some(rows) = rows {
                    st.objects.reload(&rows);
                }
                due
            },
        );
        match done {
            Ok(due) => {
                for d in due {
                    match d {
                        rotation::Due::Rotated(k) => {
                            log::info!(
                                "rotation policy: rotated {} to version {}",
                                k.name,
                                k.version
                            );
                            let kid = policy::kid(&self.state().label, &k);
                            super::audit::policy_rotation(self, Some(&kid), None);
                        }
                        rotation::Due::Notify(k) => log::warn!(
                            "rotation policy: key {} version {} expires soon",
                            k.name,
                            k.version
                        ),
                        rotation::Due::Failed(name, why) => {
                            log::warn!("rotation policy: rotating {name} failed: {why}");
                            let rv = match why {
                                lifecycle::Refusal::Token(e) => e,
                                _ => Error(CKR_ACTION_PROHIBITED),
                            };
                            super::audit::policy_rotation(self, None, Some(rv));
                        }
                    }
                }
            }
            Err(e) => log::warn!("rotation policies not applied: {e:?}"),
        }
    }

    /// C_Logout: forget the master key and every parsed private key.
    pub fn logout(&self) -> Result<()> {
        let mut st = self.state_mut();
        if st.login == LoggedIn::Nobody {
            return Err(Error(CKR_USER_NOT_LOGGED_IN));
        }
        st.login = LoggedIn::Nobody;
        st.master = None;
        st.objects.forget_secrets();
        Ok(())
    }

    /// Log out if anyone is logged in (last session closed).
    pub fn logout_quietly(&self) {
        let _ = self.logout();
    }

    /// C_InitPIN: the SO sets the user PIN (also unlocks a locked user PIN).
    pub fn init_pin(&self, pin: &[u8]) -> Result<()> {
        check_pin_len(pin)?;
        let master = {
            let st = self.state();
            if st.login != LoggedIn::So {
                return Err(Error(CKR_USER_NOT_LOGGED_IN));
            }
            st.master.clone().ok_or(Error(CKR_USER_NOT_LOGGED_IN))?
        };
        self.with_store(|s| s.set_pin(PinUser::User, &master, pin))
    }

    /// C_SetPIN: the logged-in user's (or SO's) PIN, or the user's when nobody is.
    pub fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        let who = match self.state().login {
            LoggedIn::So => PinUser::So,
            _ => PinUser::User,
        };
        self.initialized()?;
        check_pin_len(new)?;
        self.with_store(|s| {
            let master = s.unlock(who, old)?;
            s.set_pin(who, &master, new)
        })
    }

    /// The `CK_TOKEN_INFO.flags` that reflect the token's state now.
    pub fn token_flags(&self) -> Result<CK_FLAGS> {
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED;
        if let Some(rec) = self.record()? {
            flags |= CKF_TOKEN_INITIALIZED;
            if rec.user_pin_initialized {
                flags |= CKF_USER_PIN_INITIALIZED;
            }
            flags |= pin_flags(
                rec.user_failures,
                CKF_USER_PIN_COUNT_LOW,
                CKF_USER_PIN_FINAL_TRY,
                CKF_USER_PIN_LOCKED,
            );
            // The SO PIN never locks, so it never reaches a final try.
            if rec.so_failures > 0 {
                flags |= CKF_SO_PIN_COUNT_LOW;
            }
        }
        Ok(flags)
    }

    /// Look up the entry and part of an object handle visible to `session`.
    pub fn object(&self, session: &Session, h: CK_OBJECT_HANDLE) -> Result<(Arc<Entry>, Part)> {
        let (id, part) = split_handle(h);
        let st = self.state();
        let e = st.objects.get(id).ok_or(Error(CKR_OBJECT_HANDLE_INVALID))?;
        if !e.has_part(part) || !self.visible(&st, e, part) {
            return Err(Error(CKR_OBJECT_HANDLE_INVALID));
        }
        let _ = session;
        Ok((e.clone(), part))
    }

    /// Whether an object is visible now: private objects only to a logged-in user.
    fn visible(&self, st: &TokenState, e: &Entry, part: Part) -> bool {
        !policy::is_private(&e.rec, part) || st.login == LoggedIn::User
    }

    /// C_FindObjectsInit: the handles of every visible object matching `t`.
    pub fn find(&self, t: &Template) -> Result<Vec<CK_OBJECT_HANDLE>> {
        self.sync()?;
        let st = self.state();
        let label = st.label.clone();
        let mut out = Vec::new();
        let mut consider = |e: &Arc<Entry>| {
            for part in [Part::Main, Part::Public] {
                if e.has_part(part)
                    && self.visible(&st, e, part)
                    && e.matches(part, t, &label, st.recovery)
                {
                    out.push(handle(e.id, part));
                }
            }
        };
        match t.get(CKA_LABEL) {
            // Indexed: find-by-label stays flat as the token grows.
            Some(l) => st.objects.with_label(l).for_each(&mut consider),
            None => st.objects.iter().for_each(&mut consider),
        }
        out.sort_unstable();
        Ok(out)
    }

    /// C_GetAttributeValue for one attribute of an object.
    pub fn attribute(&self, e: &Entry, part: Part, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
        let st = self.state();
        policy::get_attribute(&e.view(part, &st.label, st.recovery), ty)
    }

    /// Store a new object (token: in the store first, then the cache) and return its entry.
    pub fn add(
        &self,
        session: &Session,
        token: bool,
        rec: crate::engine::key::Record,
        secret: Option<SecretBytes>,
    ) -> Result<Arc<Entry>> {
        let mut rec = rec;
        if !token {
            let mut st = self.state_mut();
            let id = st.objects.next_session_id();
            let e = Arc::new(Entry::session(id, session.handle, rec, secret));
            st.objects.put(e.clone());
            return Ok(e);
        }
        self.initialized()?;
        self.sync()?;
        let (master, label) = {
            let st = self.state();
            (st.master.clone(), st.label.clone())
        };
        let versioned = self.config.versioning;
        let (name, version, sealed) = match &mut rec.body {
            Body::Key(k) => {
                if versioned {
                    // Names are unique case-insensitively: a new key under an existing
                    // name is a new version and keeps the name's first spelling.
                    let existing = self.state().objects.iter().find_map(|e| match &e.rec.body {
                        Body::Key(o) if e.is_token() && o.name.eq_ignore_ascii_case(&k.name) => {
                            Some(o.name.clone())
                        }
                        _ => None,
                    });
                    if let Some(existing) = existing {
                        k.name = existing;
                    }
                }
                let sealed = match &secret {
                    Some(s) => {
                        let master = master.as_ref().ok_or(Error(CKR_USER_NOT_LOGGED_IN))?;
                        Some(master.seal(policy::kid(&label, k).as_bytes(), s))
                    }
                    None => None,
                };
                (
                    versioned.then(|| k.name.clone()),
                    Some(k.version.clone()),
                    sealed,
                )
            }
            Body::Stored { .. } => (None, None, None),
        };
        let attrs = rec.to_json()?;
        self.with_store_then_state(
            |s| {
                if let Some(name) = &name {
                    if s.versions_of(name)?.len() >= lifecycle::MAX_VERSIONS {
                        log::warn!(
                            "key {name} already has {} versions: no new version",
                            lifecycle::MAX_VERSIONS
                        );
                        return Err(Error(CKR_ACTION_PROHIBITED));
                    }
                }
                let row = s.insert_object(&NewObject {
                    name: name.clone(),
                    version,
                    attrs,
                    sealed,
                })?;
                Ok(Arc::new(Entry::from_row(&row)?))
            },
            |st, e| {
                if let Some(name) = &name {
                    let older: Vec<Arc<Entry>> = st
                        .objects
                        .iter()
                        .filter(|o| {
                            o.current
                                && o.is_token()
                                && matches!(&o.rec.body, Body::Key(k) if k.name.eq_ignore_ascii_case(name))
                        })
                        .cloned()
                        .collect();
                    for o in older {
                        st.objects.put(Arc::new(o.with_current(false)));
                    }
                }
                st.objects.put(e.clone());
                e
            },
        )
    }

    /// Replace an object's record (C_SetAttributeValue).
    pub fn update(&self, e: &Entry, rec: crate::engine::key::Record) -> Result<()> {
        let fresh = Arc::new(e.with_record(rec));
        if e.is_token() {
            let json = fresh.rec.to_json()?;
            self.with_store_then_state(
                |s| s.update_attrs(e.id, &json),
                |st, ()| put_keeping_current(st, fresh),
            )
        } else {
            self.state_mut().objects.put(fresh);
            Ok(())
        }
    }

    /// C_DestroyObject of one object. The two halves of a key pair are separate
    /// PKCS#11 objects: destroying one leaves the other. A versioned token key is
    /// a Managed HSM key: when its last visible half goes (an AES key has one),
    /// the whole key, every version, is soft-deleted ([`lifecycle::delete`]);
    /// until then a destroyed half is only hidden, its material kept sealed, so
    /// `key recover` brings the key back whole. Elsewhere (session objects,
    /// tokens with versioning off) a destroyed private half's material is
    /// erased at once and the row goes with the last half.
    pub fn destroy(&self, e: &Entry, part: Part) -> Result<()> {
        if !e.rec.destroyable {
            return Err(Error(CKR_ACTION_PROHIBITED));
        }
        let other = match part {
            Part::Main => Part::Public,
            Part::Public => Part::Main,
        };
        if let (Body::Key(k), true) = (&e.rec.body, e.is_token() && self.config.versioning) {
            if e.has_part(other) {
                let mut rec = e.rec.clone();
                if let Body::Key(k) = &mut rec.body {
                    match part {
                        Part::Main => k.private_hidden = true,
                        Part::Public => k.public_hidden = true,
                    }
                }
                return self.update(e, rec);
            }
            // Only the deleted versions leave the cache: a full reload here
            // made every destroy O(token size).
            return self.with_store_then_state(
                |s| {
                    lifecycle::delete_versions(s, &k.name, crate::engine::attributes::now())
                        .map_err(|r| match r {
                            lifecycle::Refusal::Token(e) => e,
                            // Another version has CKA_DESTROYABLE=FALSE.
                            lifecycle::Refusal::Invalid(_) => Error(CKR_ACTION_PROHIBITED),
                            // Deleted meanwhile by another thread or process.
                            _ => Error(CKR_OBJECT_HANDLE_INVALID),
                        })
                },
                |st, ids| {
                    for id in ids {
                        st.objects.remove(id);
                    }
                },
            );
        }
        if matches!(e.rec.body, Body::Key(_)) && e.has_part(other) {
            let mut rec = e.rec.clone();
            if let Body::Key(k) = &mut rec.body {
                match part {
                    Part::Main => k.private_hidden = true,
                    Part::Public => k.public_hidden = true,
                }
            }
            if part == Part::Public {
                return self.update(e, rec);
            }
            let mut rest = e.with_record(rec);
            rest.forget_material();
            let rest = Arc::new(rest);
            if e.is_token() {
                let json = rest.rec.to_json()?;
                return self.with_store_then_state(
                    |s| s.forget_secret(e.id, &json),
                    |st, ()| put_keeping_current(st, rest),
                );
            }
            self.state_mut().objects.put(rest);
            return Ok(());
        }
        if e.is_token() {
            // Another version may have become current: take the store's word for it.
            self.with_store_then_state(
                |s| s.delete_object(e.id),
                |st, promoted| {
                    st.objects.remove(e.id);
                    if let Some(cur) = promoted.and_then(|id| st.objects.get(id).cloned()) {
                        st.objects.put(Arc::new(cur.with_current(true)));
                    }
                },
            )?;
        } else {
            self.state_mut().objects.remove(e.id);
        }
        Ok(())
    }

    /// Generate a key (C_GenerateKey / C_GenerateKeyPair) and store it.
    pub fn generate(
        &self,
        session: &Session,
        mechanism: CK_MECHANISM_TYPE,
        public: Option<&Template>,
        private: &Template,
    ) -> Result<Arc<Entry>> {
        let mut req = policy::key_request(mechanism, public, private)?;
        if req.token && !session.rw {
            return Err(Error(CKR_SESSION_READ_ONLY));
        }
        if self.state().login != LoggedIn::User {
            return Err(Error(CKR_USER_NOT_LOGGED_IN));
        }
        let p = crypto::provider();
        let material = match req.kind {
            KeyKind::Rsa(bits) => p.generate_rsa(bits as usize)?,
            KeyKind::Ec(curve) => p.generate_ec(curve)?,
            KeyKind::Aes(bits) => {
                let mut k = SecretBytes::new(vec![0u8; bits as usize / 8]);
                p.random(&mut k)?;
                k
            }
        };
        let public_key = match req.kind {
            KeyKind::Rsa(_) => Some(p.rsa_private(&material)?.public()),
            KeyKind::Ec(c) => Some(p.ec_private(c, &material)?.public()),
            KeyKind::Aes(_) => None,
        };
        if let Some(pk) = &public_key {
            policy::set_public(&mut req.record, pk);
        }
        self.add(session, req.token, req.record, Some(material))
    }
}

/// Put a rewritten entry into the cache keeping the `current` flag the cache
/// holds now: the entry was read before the write, and a new version may have
/// been made meanwhile.
fn put_keeping_current(st: &mut TokenState, e: Arc<Entry>) {
    let e = match st.objects.get(e.id).map(|o| o.current) {
        Some(c) if c != e.current => Arc::new(e.with_current(c)),
        _ => e,
    };
    st.objects.put(e);
}

/// PIN length rule (`CKR_PIN_LEN_RANGE`).
pub fn check_pin_len(pin: &[u8]) -> Result<()> {
    if PIN_LEN.contains(&pin.len()) {
        Ok(())
    } else {
        Err(Error(CKR_PIN_LEN_RANGE))
    }
}

/// The COUNT_LOW / FINAL_TRY / LOCKED flags for a failure count.
fn pin_flags(failures: u32, low: CK_FLAGS, final_try: CK_FLAGS, locked: CK_FLAGS) -> CK_FLAGS {
    if failures >= MAX_PIN_FAILURES {
        locked
    } else if failures + 1 == MAX_PIN_FAILURES {
        low | final_try
    } else if failures > 0 {
        low
    } else {
        0
    }
}
