//! A slot and its token: this application's login state and the token-level
//! calls (C_InitToken, PINs, object creation and lookup), each a caller of the
//! pool, which holds the store, the object snapshot and every write.

use super::objects::{handle, split_handle, Entry};
use super::session::Session;
use crate::config::TokenConfig;
use crate::crypto::{self, SecretBytes};
use crate::engine::attributes::vendor::{CKA_SOFTMHSM_NAME, CKA_SOFTMHSM_VERSION};
use crate::engine::attributes::Template;
use crate::engine::key::{Body, KeyKind};
use crate::engine::policy::{self, AttrValue, Part};
use crate::engine::rules::check_pin_len;
use crate::error::{Error, Result};
use crate::pool::access::{DataAction, Identity};
use crate::pool::{
    refusal_rv, rotation, Lookup, MasterKey, PinUser, Pool, TokenRecord, MAX_PIN_FAILURES,
};
use cryptoki_sys::*;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

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

/// Who is logged in to the token, and the master key while someone is.
pub struct TokenState {
    /// Who is logged in.
    pub login: LoggedIn,
    /// The master key while someone is logged in.
    pub master: Option<Arc<MasterKey>>,
    /// As whom the logged-in user acts (local RBAC): the SO, the plain user
    /// PIN, or a named principal.
    pub identity: Identity,
}

/// One slot with its token: the login state of this application; the pool
/// holds everything stored.
pub struct Slot {
    /// `CK_SLOT_ID`.
    pub id: CK_SLOT_ID,
    /// Its configuration.
    pub config: TokenConfig,
    /// The pool behind the token.
    pub pool: Pool,
    state: RwLock<TokenState>,
}

impl Slot {
    /// A slot for `config`; the pool is opened now, its PostgreSQL connection
    /// at the first call that needs the store ([`Pool::open`]).
    pub fn new(id: CK_SLOT_ID, config: TokenConfig) -> Slot {
        Slot {
            id,
            pool: Pool::open(&config),
            config,
            state: RwLock::new(TokenState {
                login: LoggedIn::Nobody,
                master: None,
                identity: Identity::User,
            }),
        }
    }

    /// Read access to the login state.
    pub fn state(&self) -> RwLockReadGuard<'_, TokenState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the login state.
    pub fn state_mut(&self) -> RwLockWriteGuard<'_, TokenState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The token record, or None if the token is not initialised.
    pub fn record(&self) -> Result<Option<TokenRecord>> {
        self.pool.record()
    }

    /// The token record of an initialised token (`CKR_TOKEN_NOT_RECOGNIZED` otherwise).
    pub fn initialized(&self) -> Result<TokenRecord> {
        self.pool.initialized()
    }

    /// Bring the object snapshot up to date with every process's writes.
    pub fn sync(&self) -> Result<()> {
        self.pool.fresh()
    }

    /// C_InitToken (PKCS#11 3.1 §5.6.3); the caller has checked that no session is open.
    pub fn init_token(&self, so_pin: &[u8], label: &str) -> Result<()> {
        check_pin_len(so_pin)?;
        self.pool.init_token(so_pin, label)?;
        let mut st = self.state_mut();
        st.login = LoggedIn::Nobody;
        st.master = None;
        drop(st);
        self.sync()
    }

    /// C_Login for `who` (the caller checked session-state rules); with
    /// `principal`, the user logs in as that principal (C_LoginUser, or
    /// C_Login with "name:PIN").
    pub fn login(&self, who: PinUser, pin: &[u8], principal: Option<&str>) -> Result<()> {
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
        let (master, identity) = match (who, principal) {
            (PinUser::User, Some(name)) => {
                let (master, name) = self.pool.login_principal(name, pin)?;
                (master, Identity::Principal(name))
            }
            (PinUser::So, Some(_)) => return Err(Error(CKR_USER_TYPE_INVALID)),
            (PinUser::User, None) => (self.pool.unlock(who, pin)?, Identity::User),
            (PinUser::So, None) => (self.pool.unlock(who, pin)?, Identity::So),
        };
        let master = Arc::new(master);
        let rotates = self
            .pool
            .allows(&identity, DataAction::KeysRotate, None)
            .unwrap_or(false);
        {
            let mut st = self.state_mut();
            st.master = Some(master.clone());
            st.identity = identity;
            st.login = match who {
                PinUser::So => LoggedIn::So,
                PinUser::User => LoggedIn::User,
            };
        }
        self.sync()?;
        // Rotation by policy is the work of someone who may rotate every key.
        if who == PinUser::User && self.config.versioning && rotates {
            self.apply_rotation_policies(&master);
        }
        Ok(())
    }

    /// The principal `pin` names as "name:PIN", if a principal of that name
    /// exists (C_Login from a 2.40 application): (name, PIN).
    pub fn principal_in_pin<'a>(&self, pin: &'a [u8]) -> Result<Option<(String, &'a [u8])>> {
        let Some(colon) = pin.iter().position(|&b| b == b':') else {
            return Ok(None);
        };
        let Ok(name) = std::str::from_utf8(&pin[..colon]) else {
            return Ok(None);
        };
        if !crate::pool::access::valid_principal_name(name)
            || self.pool.principal_failures(name)?.is_none()
        {
            return Ok(None);
        }
        Ok(Some((name.to_string(), &pin[colon + 1..])))
    }

    /// As whom the logged-in user acts.
    pub fn identity(&self) -> Identity {
        self.state().identity.clone()
    }

    /// The one access check for a token key (DESIGN §6): whether the
    /// logged-in identity may do `action` on key `name`; refused with `denied`.
    pub fn authorize(&self, action: DataAction, name: &str, denied: CK_RV) -> Result<()> {
        let st = self.state();
        let allowed = match &st.identity {
            // The plain user PIN holds Crypto User + Crypto Officer at `/`:
            // no lookup on its crypto path.
            Identity::User if st.login == LoggedIn::User => {
                self.pool.allows(&Identity::User, action, Some(name))?
            }
            who => {
                let who = who.clone();
                drop(st);
                self.pool.allows(&who, action, Some(name))?
            }
        };
        if allowed {
            Ok(())
        } else {
            log::debug!(
                "{} refused: {}",
                action.name(),
                self.identity().audit_name()
            );
            Err(Error(denied))
        }
    }

    /// Rotate the keys whose rotation policy says so. Never fails the login:
    /// refusals (a principal without the right to write, a store that cannot
    /// be written) are logged.
    fn apply_rotation_policies(&self, master: &MasterKey) {
        match self.pool.rotate_due(master) {
            Ok(due) => {
                for d in due {
                    match d {
                        rotation::Due::Rotated(k) => {
                            log::info!(
                                "rotation policy: rotated {} to version {}",
                                k.name,
                                k.version
                            );
                            let kid = policy::kid(&self.pool.label(), &k);
                            super::audit::policy_rotation(self, Some(&kid), None);
                        }
                        rotation::Due::Notify(k) => log::warn!(
                            "rotation policy: key {} version {} expires soon",
                            k.name,
                            k.version
                        ),
                        rotation::Due::Failed(name, why) => {
                            log::warn!("rotation policy: rotating {name} failed: {why}");
                            super::audit::policy_rotation(self, None, Some(refusal_rv(why)));
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
        st.identity = Identity::User;
        self.pool.forget_secrets();
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
        self.pool.set_pin(PinUser::User, &master, pin)
    }

    /// C_SetPIN: the logged-in user's (or SO's) PIN, or the user's when nobody is.
    pub fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        let (who, identity) = {
            let st = self.state();
            let who = match st.login {
                LoggedIn::So => PinUser::So,
                _ => PinUser::User,
            };
            (
                who,
                (st.login == LoggedIn::User).then(|| st.identity.clone()),
            )
        };
        self.initialized()?;
        check_pin_len(new)?;
        if let Some(Identity::Principal(name)) = identity {
            // A principal changes its own PIN.
            let (master, _) = self.pool.login_principal(&name, old)?;
            return self
                .pool
                .set_principal_pin(&master, &name, new)
                .map_err(refusal_rv);
        }
        let master = self.pool.unlock(who, old)?;
        self.pool.set_pin(who, &master, new)
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

    /// Look up the entry and part of an object handle visible to `session`,
    /// as the pool has it after every write committed before this call: a
    /// handle names one key version and stays valid while that version exists.
    pub fn object(&self, session: &Session, h: CK_OBJECT_HANDLE) -> Result<(Arc<Entry>, Part)> {
        self.pool.fresh()?;
        let (id, part) = split_handle(h);
        let e = self
            .pool
            .entry(id)?
            .ok_or(Error(CKR_OBJECT_HANDLE_INVALID))?;
        if !e.has_part(part) || !self.visible(&e, part) {
            return Err(Error(CKR_OBJECT_HANDLE_INVALID));
        }
        // Session objects are visible in every session of the application.
        let _ = session;
        Ok((e, part))
    }

    /// Whether an object is visible now: private objects only to a logged-in
    /// user; a token key to a principal only where it may read the key
    /// (`keys/read`: outside its assignments a key is as absent).
    fn visible(&self, e: &Entry, part: Part) -> bool {
        let st = self.state();
        if let (Identity::Principal(who), LoggedIn::User, Body::Key(k), true) =
            (&st.identity, st.login, &e.rec.body, e.is_token())
        {
            let who = Identity::Principal(who.clone());
            drop(st);
            return self
                .pool
                .allows(&who, DataAction::KeysRead, Some(&k.name))
                .unwrap_or(false);
        }
        !policy::is_private(&e.rec, part) || st.login == LoggedIn::User
    }

    /// C_FindObjectsInit: the handles of every visible object matching `t`,
    /// by the versioning rules (DESIGN §2, with D3 of pkcs11-conformance):
    /// - a template naming a version (`CKA_ID` or `CKA_SOFTMHSM_VERSION`)
    ///   finds the version that carries it, current or not (of several
    ///   versions of one name carrying it, the current one, else the newest);
    /// - a template naming a key (`CKA_LABEL` or `CKA_SOFTMHSM_NAME`) finds
    ///   current versions only, so `pkcs11:object=web` is exactly one key;
    /// - a template naming neither (an enumeration: `{CKA_CLASS}` or empty)
    ///   lists the older versions of key pairs, oldest first, and after them
    ///   the current version of every key. Clients that enumerate by class
    ///   and match label and id themselves (libp11 0.4.12: every nginx,
    ///   `openssl -engine pkcs11`) so find a rotated-away version by the id
    ///   it was made with, and take the current one for a label alone (they
    ///   keep the last match). Older versions of secret keys stay out: their
    ///   clients (Java's KeyStore) address secret keys by label and refuse
    ///   two sharing one.
    pub fn find(&self, t: &Template) -> Result<Vec<CK_OBJECT_HANDLE>> {
        self.pool.fresh()?;
        // The store's indexes name the candidates; each is matched in full.
        let by = match (t.get(CKA_ID), t.get(CKA_LABEL), t.get(CKA_SOFTMHSM_VERSION)) {
            (Some(id), _, _) => Lookup::CkaId(id),
            (None, Some(l), _) => Lookup::Label(l),
            (None, None, Some(v)) => match std::str::from_utf8(v) {
                Ok(v) => Lookup::Version(v),
                // No version id is anything but ASCII hex.
                Err(_) => return Ok(Vec::new()),
            },
            (None, None, None) => Lookup::All,
        };
        let candidates = self.pool.candidates(by)?;
        let snap = self.pool.snapshot();
        let label = &snap.label;
        let by_version = t.get(CKA_ID).is_some() || t.get(CKA_SOFTMHSM_VERSION).is_some();
        let by_name = t.get(CKA_LABEL).is_some() || t.get(CKA_SOFTMHSM_NAME).is_some();
        let versioned = self.config.versioning;
        let mut out = Vec::new();
        // Older versions of key pairs, for an enumeration (listed first).
        let mut enumerated_older = Vec::new();
        // Of the non-current matches per (name, part), the best so far.
        let mut older: HashMap<(String, bool), (bool, i64)> = HashMap::new();
        let mut consider = |e: &Arc<Entry>| {
            for part in [Part::Main, Part::Public] {
                if !e.has_part(part)
                    || !self.visible(e, part)
                    || !e.matches(part, t, label, snap.recovery)
                {
                    continue;
                }
                let versioned_key = match &e.rec.body {
                    Body::Key(k) if e.is_token() && versioned => Some(k),
                    _ => None,
                };
                match versioned_key {
                    Some(k) if by_version => {
                        let key = (k.name.to_ascii_lowercase(), part == Part::Public);
                        let rank = (e.current, e.id);
                        let best = older.entry(key).or_insert(rank);
                        if rank > *best {
                            *best = rank;
                        }
                    }
                    Some(k) if !e.current => {
                        if !by_name && k.kind.is_pair() {
                            enumerated_older.push(handle(e.id, part));
                        }
                    }
                    _ => out.push(handle(e.id, part)),
                }
            }
        };
        candidates.iter().for_each(&mut consider);
        out.extend(older.into_iter().map(|((_, public), (_, id))| {
            handle(id, if public { Part::Public } else { Part::Main })
        }));
        out.sort_unstable();
        enumerated_older.sort_unstable();
        enumerated_older.extend(out);
        Ok(enumerated_older)
    }

    /// C_GetAttributeValue for one attribute of an object.
    pub fn attribute(&self, e: &Entry, part: Part, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
        let snap = self.pool.snapshot();
        policy::get_attribute(&e.view(part, &snap.label, snap.recovery), ty)
    }

    /// [`Pool::check_active`] as a `CK_RV`: every key use (`*Init` with a
    /// key, wrap, unwrap) and key creation in the token passes here.
    pub fn check_active(&self) -> Result<()> {
        self.pool.check_active().map_err(refusal_rv)
    }

    /// Store a new object (token: in the store, then the snapshot) and return its entry.
    /// A new token key (made by `action`: `keys/create` or `keys/import`)
    /// needs that permission on its name (`CKR_FUNCTION_REJECTED`).
    pub fn add(
        &self,
        session: &Session,
        token: bool,
        rec: crate::engine::key::Record,
        secret: Option<SecretBytes>,
        action: DataAction,
    ) -> Result<Arc<Entry>> {
        if rec.key().is_some() {
            self.check_active()?;
        }
        if !token {
            return Ok(self.pool.add_session_object(session.handle, rec, secret));
        }
        if let Some(k) = rec.key() {
            self.authorize(action, &k.name, CKR_FUNCTION_REJECTED)?;
        }
        self.initialized()?;
        let master = self.state().master.clone();
        self.pool.add_token_object(master.as_deref(), rec, secret)
    }

    /// Replace an object's record (C_SetAttributeValue): a token key needs
    /// `keys/write` (`CKR_ACTION_PROHIBITED`).
    pub fn update(&self, e: &Entry, rec: crate::engine::key::Record) -> Result<()> {
        if let (Body::Key(k), true) = (&e.rec.body, e.is_token()) {
            self.authorize(DataAction::KeysWrite, &k.name, CKR_ACTION_PROHIBITED)?;
        }
        self.pool.update(e, rec)
    }

    /// C_DestroyObject of one object ([`Pool::destroy`]): a token key needs
    /// `keys/delete` (`CKR_ACTION_PROHIBITED`).
    pub fn destroy(&self, e: &Entry, part: Part) -> Result<()> {
        if let (Body::Key(k), true) = (&e.rec.body, e.is_token()) {
            self.authorize(DataAction::KeysDelete, &k.name, CKR_ACTION_PROHIBITED)?;
        }
        self.pool.destroy(e, part)
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
        // Before the material is made: an RSA key takes a while.
        self.check_active()?;
        let p = crypto::provider();
        let material = match req.kind {
            KeyKind::Rsa(bits) => p.generate_rsa(bits as usize)?,
            KeyKind::Ec(curve) => p.generate_ec(curve)?,
            KeyKind::Aes(bits) => {
                let mut k = SecretBytes::new(vec![0u8; bits as usize / 8]);
                p.random(&mut k)?;
                k
            }
            KeyKind::MlDsa(set) => p.generate_ml_dsa(set)?,
            KeyKind::MlKem(set) => p.generate_ml_kem(set)?,
        };
        let public_key = match req.kind {
            KeyKind::Rsa(_) => Some(p.rsa_private(&material)?.public()),
            KeyKind::Ec(c) => Some(p.ec_private(c, &material)?.public()),
            KeyKind::Aes(_) => None,
            KeyKind::MlDsa(set) => Some(p.ml_dsa_private(set, &material)?.public()),
            KeyKind::MlKem(set) => Some(p.ml_kem_private(set, &material)?.public()),
        };
        if let Some(pk) = &public_key {
            policy::set_public(&mut req.record, pk);
        }
        self.add(
            session,
            req.token,
            req.record,
            Some(material),
            DataAction::KeysCreate,
        )
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
