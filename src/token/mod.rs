//! Slots, tokens, sessions, login state, object handles and active operations.
//!
//! The library state is process-global (a PKCS#11 library is): `C_Initialize`
//! builds a [`Library`], `C_Finalize` drops it. After `fork()` the child sees a
//! different pid and must call `C_Initialize` again; the parent's state (its
//! SQLite connections above all) is never used by the child, only closed.

pub mod audit;
pub mod operation;
pub mod session;
pub mod slot;

/// The pool's object snapshot entries, as the token's sessions use them.
pub use crate::pool::objects;

use crate::config;
use crate::error::{Error, Result};
use cryptoki_sys::*;
use session::Session;
use slot::Slot;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The initialised library.
pub struct Library {
    pid: u32,
    /// Slots in id order (slot id = index).
    pub slots: Vec<Arc<Slot>>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<Session>>>,
    next_session: AtomicU64,
}

static LIBRARY: RwLock<Option<Arc<Library>>> = RwLock::new(None);

fn global_write() -> std::sync::RwLockWriteGuard<'static, Option<Arc<Library>>> {
    LIBRARY.write().unwrap_or_else(|p| p.into_inner())
}

/// C_Initialize: build the library state from the configuration.
pub fn initialize() -> Result<()> {
    crate::logging::init(Some(log::LevelFilter::Error));
    let mut g = global_write();
    let pid = crate::ffi::fork::pid();
    if let Some(lib) = g.as_ref() {
        if lib.pid == pid {
            return Err(Error(CKR_CRYPTOKI_ALREADY_INITIALIZED));
        }
        // A forked child: the parent's connections are never used here, but
        // they are closed. SQLite keeps its lock bookkeeping per process and
        // per file, and the child inherited the parent's: a new connection
        // beside a forgotten one would count itself among the parent's readers
        // and take no lock of its own, so another process closing last would
        // delete the WAL under it. Closing is safe for the parent: SQLite
        // checkpoints and removes the WAL only when it gets an exclusive lock,
        // which the parent's (real, per-process) shared lock forbids.
        drop(g.take());
    }
    crate::pool::audit::begin();
    let cfg = config::load()?;
    let slots = cfg
        .tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| Arc::new(Slot::new(i as CK_SLOT_ID, t)))
        .collect();
    *g = Some(Arc::new(Library {
        pid,
        slots,
        sessions: RwLock::new(HashMap::new()),
        next_session: AtomicU64::new(1),
    }));
    Ok(())
}

/// C_Finalize.
pub fn finalize() -> Result<()> {
    let mut g = global_write();
    match g.take() {
        Some(lib) if lib.pid == crate::ffi::fork::pid() => {
            crate::pool::audit::shutdown();
            Ok(())
        }
        Some(lib) => {
            // A forked child that never initialised: close the inherited
            // connections (see `initialize`) and say so.
            drop(lib);
            Err(Error(CKR_CRYPTOKI_NOT_INITIALIZED))
        }
        None => Err(Error(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
}

/// The initialised library (`CKR_CRYPTOKI_NOT_INITIALIZED` before C_Initialize,
/// after C_Finalize, and in a forked child that has not re-initialised).
pub fn library() -> Result<Arc<Library>> {
    let g = LIBRARY.read().unwrap_or_else(|p| p.into_inner());
    match g.as_ref() {
        Some(lib) if lib.pid == crate::ffi::fork::pid() => Ok(lib.clone()),
        _ => Err(Error(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
}

impl Library {
    /// The slot of an id (`CKR_SLOT_ID_INVALID`).
    pub fn slot(&self, id: CK_SLOT_ID) -> Result<Arc<Slot>> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.slots.get(i))
            .cloned()
            .ok_or(Error(CKR_SLOT_ID_INVALID))
    }

    /// The session of a handle (`CKR_SESSION_HANDLE_INVALID`).
    pub fn session(&self, h: CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h)
            .cloned()
            .ok_or(Error(CKR_SESSION_HANDLE_INVALID))
    }

    /// The sessions open on a slot.
    pub fn sessions_of(&self, slot: CK_SLOT_ID) -> Vec<Arc<Session>> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.slot.id == slot)
            .cloned()
            .collect()
    }

    /// C_OpenSession (PKCS#11 3.1 §5.6.1).
    pub fn open_session(&self, slot_id: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        let slot = self.slot(slot_id)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        slot.initialized()?;
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && slot.state().login == slot::LoggedIn::So {
            return Err(Error(CKR_SESSION_READ_WRITE_SO_EXISTS));
        }
        // Objects are reachable by their stable handles from the first session on.
        slot.sync()?;
        let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        // Handles are never reused within a process.
        let h = self.next_session.fetch_add(1, Ordering::Relaxed);
        sessions.insert(h, Arc::new(Session::new(h, slot, rw)));
        Ok(h)
    }

    /// C_CloseSession: its session objects go; closing the last session of a
    /// token logs the application out of it.
    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = self
            .sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&h)
            .ok_or(Error(CKR_SESSION_HANDLE_INVALID))?;
        s.slot.pool.drop_session_objects(h);
        if self.sessions_of(s.slot.id).is_empty() {
            s.slot.logout_quietly();
        }
        Ok(())
    }

    /// C_CloseAllSessions.
    pub fn close_all_sessions(&self, slot_id: CK_SLOT_ID) -> Result<()> {
        let slot = self.slot(slot_id)?;
        for s in self.sessions_of(slot_id) {
            let _ = self.close_session(s.handle);
        }
        slot.logout_quietly();
        Ok(())
    }

    /// C_Login with the session-state rules of PKCS#11 3.1 §5.6.6.
    pub fn login(
        &self,
        session: &Session,
        user: CK_USER_TYPE,
        pin: &[u8],
        principal: Option<&str>,
    ) -> Result<()> {
        let who = match user {
            CKU_SO => crate::pool::PinUser::So,
            CKU_USER => crate::pool::PinUser::User,
            CKU_CONTEXT_SPECIFIC => return Err(Error(CKR_OPERATION_NOT_INITIALIZED)),
            _ => return Err(Error(CKR_USER_TYPE_INVALID)),
        };
        // Read the login state first: never hold the token lock while taking the
        // session table's (C_OpenSession takes them in the other order).
        let nobody = session.slot.state().login == slot::LoggedIn::Nobody;
        if who == crate::pool::PinUser::So
            && nobody
            && self.sessions_of(session.slot.id).iter().any(|s| !s.rw)
        {
            return Err(Error(CKR_SESSION_READ_ONLY_EXISTS));
        }
        match (who, principal) {
            (crate::pool::PinUser::User, None) => match session.slot.principal_in_pin(pin)? {
                // "name:PIN" for a principal of that name (2.40 applications).
                Some((name, pin)) => session.slot.login(who, pin, Some(&name)),
                None => session.slot.login(who, pin, None),
            },
            _ => session.slot.login(who, pin, principal),
        }
    }
}
