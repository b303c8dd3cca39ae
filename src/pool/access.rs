//! Managed HSM local RBAC (issue 13, DESIGN §6): the data actions, the nine
//! built-in roles as published, scopes, and what one identity may do.
//!
//! The tables here are the one copy of the published roles; everything that
//! decides access reads them through [`Grants`], which the pool computes once
//! per principal whenever the stored assignments change, so a check on the
//! crypto path is a bit test (and, for a grant on one key, one map lookup).

pub use crate::store::{Assignment, Principal};

use super::Pool;
use crate::engine::lifecycle::{Outcome, Refusal};
use crate::error::{Error, Result};
use crate::store::check_principal_pin;
use cryptoki_sys::CKR_PIN_INCORRECT;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// The prefix of every Managed HSM data action name.
pub const ACTION_PREFIX: &str = "Microsoft.KeyVault/managedHsm";

/// One Managed HSM data action (the permission a call needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DataAction {
    /// Read a key's attributes and public part; find it.
    KeysRead,
    /// Update a key's attributes (`C_SetAttributeValue`, `key update`).
    KeysWrite,
    /// Rotate a key (and set its rotation policy).
    KeysRotate,
    /// Create a key (`C_GenerateKey*`, `key create`).
    KeysCreate,
    /// Delete a key (soft-delete: `C_DestroyObject`, `key delete`).
    KeysDelete,
    /// Read deleted keys.
    DeletedKeysRead,
    /// Recover a deleted key.
    DeletedKeysRecover,
    /// Purge a deleted key.
    DeletedKeysPurge,
    /// Back up a key.
    KeysBackup,
    /// Restore a key from a backup.
    KeysRestore,
    /// Release a key (secure key release; attestation here).
    KeysRelease,
    /// Import key material (`C_CreateObject`, `C_UnwrapKey`, BYOK).
    KeysImport,
    /// Encrypt with a key.
    KeysEncrypt,
    /// Decrypt with a key.
    KeysDecrypt,
    /// Wrap with a key.
    KeysWrap,
    /// Unwrap with a key.
    KeysUnwrap,
    /// Sign with a key.
    KeysSign,
    /// Verify with a key.
    KeysVerify,
    /// Download the security domain.
    SecurityDomainDownload,
    /// Upload a security domain.
    SecurityDomainUpload,
    /// Read the status of a security domain upload.
    SecurityDomainUploadRead,
    /// Read the security domain's transfer key.
    SecurityDomainTransferKeyRead,
    /// Read role assignments.
    RoleAssignmentsRead,
    /// Create role assignments.
    RoleAssignmentsWrite,
    /// Delete role assignments.
    RoleAssignmentsDelete,
    /// Read role definitions.
    RoleDefinitionsRead,
    /// Create role definitions.
    RoleDefinitionsWrite,
    /// Delete role definitions.
    RoleDefinitionsDelete,
    /// Start a full backup.
    BackupStart,
    /// Read a full backup's status.
    BackupStatus,
    /// Start a full restore.
    RestoreStart,
    /// Read a full restore's status.
    RestoreStatus,
}

use DataAction::*;

/// Every data action, with its published name (after [`ACTION_PREFIX`]).
pub const ACTIONS: &[(DataAction, &str)] = &[
    (KeysRead, "/keys/read/action"),
    (KeysWrite, "/keys/write/action"),
    (KeysRotate, "/keys/rotate/action"),
    (KeysCreate, "/keys/create"),
    (KeysDelete, "/keys/delete"),
    (DeletedKeysRead, "/keys/deletedKeys/read/action"),
    (DeletedKeysRecover, "/keys/deletedKeys/recover/action"),
    (DeletedKeysPurge, "/keys/deletedKeys/delete"),
    (KeysBackup, "/keys/backup/action"),
    (KeysRestore, "/keys/restore/action"),
    (KeysRelease, "/keys/release/action"),
    (KeysImport, "/keys/import/action"),
    (KeysEncrypt, "/keys/encrypt/action"),
    (KeysDecrypt, "/keys/decrypt/action"),
    (KeysWrap, "/keys/wrap/action"),
    (KeysUnwrap, "/keys/unwrap/action"),
    (KeysSign, "/keys/sign/action"),
    (KeysVerify, "/keys/verify/action"),
    (SecurityDomainDownload, "/securitydomain/download/action"),
    (SecurityDomainUpload, "/securitydomain/upload/action"),
    (SecurityDomainUploadRead, "/securitydomain/upload/read"),
    (
        SecurityDomainTransferKeyRead,
        "/securitydomain/transferkey/read",
    ),
    (RoleAssignmentsRead, "/roleAssignments/read/action"),
    (RoleAssignmentsWrite, "/roleAssignments/write/action"),
    (RoleAssignmentsDelete, "/roleAssignments/delete/action"),
    (RoleDefinitionsRead, "/roleDefinitions/read/action"),
    (RoleDefinitionsWrite, "/roleDefinitions/write/action"),
    (RoleDefinitionsDelete, "/roleDefinitions/delete/action"),
    (BackupStart, "/backup/start/action"),
    (BackupStatus, "/backup/status/action"),
    (RestoreStart, "/restore/start/action"),
    (RestoreStatus, "/restore/status/action"),
];

impl DataAction {
    /// The published name, with its prefix
    /// (`Microsoft.KeyVault/managedHsm/keys/sign/action`).
    pub fn name(self) -> String {
        let suffix = ACTIONS
            .iter()
            .find(|(a, _)| *a == self)
            .map_or("", |(_, n)| n);
        format!("{ACTION_PREFIX}{suffix}")
    }

    /// The action a published name names, with or without its prefix.
    pub fn parse(name: &str) -> Option<DataAction> {
        let suffix = name.strip_prefix(ACTION_PREFIX).unwrap_or(name);
        ACTIONS
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(suffix))
            .map(|(a, _)| *a)
    }

    /// Whether the action is on keys (granted at `/keys/<name>` too).
    pub fn on_keys(self) -> bool {
        (self as u8) <= KeysVerify as u8
    }

    fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

/// A built-in role definition, as published.
pub struct Role {
    /// `roleName`.
    pub name: &'static str,
    /// The role definition's id (`name` in the REST API).
    pub id: &'static str,
    /// What the role permits.
    pub actions: &'static [DataAction],
}

/// The nine built-in roles ("Local RBAC built-in roles for Managed HSM",
/// 2024-01-25). One deliberate difference: the published table also gives
/// Crypto Auditor `keys/deletedKeys/delete` (purge), which contradicts the
/// role's own description ("read (but not use) key attributes"); an auditor
/// here cannot purge.
pub const ROLES: &[Role] = &[
    Role {
        name: "Managed HSM Administrator",
        id: "a290e904-7015-4bba-90c8-60543313cdb4",
        actions: &[
            SecurityDomainDownload,
            SecurityDomainUpload,
            SecurityDomainUploadRead,
            SecurityDomainTransferKeyRead,
            RoleAssignmentsRead,
            RoleAssignmentsWrite,
            RoleAssignmentsDelete,
            RoleDefinitionsRead,
            RoleDefinitionsWrite,
            RoleDefinitionsDelete,
            BackupStart,
            BackupStatus,
            RestoreStart,
            RestoreStatus,
        ],
    },
    Role {
        name: "Managed HSM Crypto Officer",
        id: "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
        actions: &[
            DeletedKeysRead,
            DeletedKeysRecover,
            DeletedKeysPurge,
            RoleAssignmentsRead,
            RoleAssignmentsWrite,
            RoleAssignmentsDelete,
            RoleDefinitionsRead,
            RoleDefinitionsWrite,
            RoleDefinitionsDelete,
        ],
    },
    Role {
        name: "Managed HSM Crypto User",
        id: "21dbd100-6940-42c2-9190-5d6cb909625b",
        actions: &[
            KeysRead,
            KeysWrite,
            KeysRotate,
            KeysCreate,
            KeysDelete,
            KeysBackup,
            KeysRestore,
            KeysRelease,
            KeysImport,
            KeysEncrypt,
            KeysDecrypt,
            KeysWrap,
            KeysUnwrap,
            KeysSign,
            KeysVerify,
            RoleAssignmentsRead,
            RoleDefinitionsRead,
        ],
    },
    Role {
        name: "Managed HSM Policy Administrator",
        id: "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
        actions: &[
            RoleAssignmentsRead,
            RoleAssignmentsWrite,
            RoleAssignmentsDelete,
            RoleDefinitionsRead,
            RoleDefinitionsWrite,
            RoleDefinitionsDelete,
        ],
    },
    Role {
        name: "Managed HSM Crypto Auditor",
        id: "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3",
        actions: &[KeysRead, RoleAssignmentsRead, RoleDefinitionsRead],
    },
    Role {
        name: "Managed HSM Crypto Service Encryption User",
        id: "33413926-3206-4cdd-b39a-83574fe37a17",
        actions: &[KeysRead, KeysWrap, KeysUnwrap],
    },
    Role {
        name: "Managed HSM Crypto Service Release User",
        id: "21dbd100-6940-42c2-9190-5d6cb909625c",
        actions: &[KeysRelease],
    },
    Role {
        name: "Managed HSM Backup",
        id: "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
        actions: &[KeysBackup, BackupStart, BackupStatus],
    },
    Role {
        name: "Managed HSM Restore",
        id: "6efe6056-5259-49d2-8b3d-d3d73544b20b",
        actions: &[KeysRestore, RestoreStart, RestoreStatus],
    },
];

/// The role named `name_or_id`: its id, its full name, or its name without
/// "Managed HSM " (case-insensitive).
pub fn role(name_or_id: &str) -> Option<&'static Role> {
    let want = name_or_id.trim();
    ROLES.iter().find(|r| {
        r.id.eq_ignore_ascii_case(want)
            || r.name.eq_ignore_ascii_case(want)
            || r.name
                .strip_prefix("Managed HSM ")
                .is_some_and(|n| n.eq_ignore_ascii_case(want))
    })
}

/// The role with this id.
pub fn role_by_id(id: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.id == id)
}

/// A role definition: a built-in one (from [`ROLES`]) or a custom one
/// (stored in the pool, `role definition create`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleDef {
    /// Its id (a UUID).
    pub id: String,
    /// `roleName`.
    pub name: String,
    /// Its description (empty for the built-in ones).
    pub description: String,
    /// What it permits.
    pub actions: Vec<DataAction>,
    /// Whether it is one of the nine built-in roles.
    pub builtin: bool,
}

impl From<&Role> for RoleDef {
    fn from(r: &Role) -> RoleDef {
        RoleDef {
            id: r.id.into(),
            name: r.name.into(),
            description: String::new(),
            actions: r.actions.to_vec(),
            builtin: true,
        }
    }
}

impl RoleDef {
    /// A stored custom role (names this build does not know grant nothing).
    fn stored(row: &crate::store::RoleRow) -> RoleDef {
        let names: Vec<String> = serde_json::from_str(&row.actions).unwrap_or_else(|e| {
            log::warn!("role definition {}: unreadable data actions: {e}", row.id);
            Vec::new()
        });
        RoleDef {
            id: row.id.clone(),
            name: row.name.clone(),
            description: row.description.clone(),
            actions: names.iter().filter_map(|n| DataAction::parse(n)).collect(),
            builtin: false,
        }
    }

    /// Whether `name_or_id` names this role (its id, or its name, case-insensitively).
    pub fn is(&self, name_or_id: &str) -> bool {
        let want = name_or_id.trim();
        self.id.eq_ignore_ascii_case(want) || self.name.eq_ignore_ascii_case(want)
    }
}

/// Where an assignment applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/`: the whole pool, every action.
    Pool,
    /// `/keys`: every key (key actions only).
    Keys,
    /// `/keys/<name>`: one key by name (key actions only).
    Key(String),
}

impl Scope {
    /// Parse `/`, `/keys` or `/keys/<name>` (a valid key name).
    pub fn parse(s: &str) -> Option<Scope> {
        match s.trim_end_matches('/') {
            "" => Some(Scope::Pool),
            "/keys" => Some(Scope::Keys),
            other => {
                let name = other.strip_prefix("/keys/")?;
                crate::engine::key::is_valid_name(name.as_bytes())
                    .then(|| Scope::Key(name.to_string()))
            }
        }
    }

    /// The stored and shown form (a key name as given).
    pub fn text(&self) -> String {
        match self {
            Scope::Pool => "/".into(),
            Scope::Keys => "/keys".into(),
            Scope::Key(n) => format!("/keys/{n}"),
        }
    }

    /// Whether two scopes are the same (key names compare case-insensitively).
    pub fn same(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Key(a), Scope::Key(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

/// Whether `name` is a valid principal name: 1–64 of `A-Z a-z 0-9 - _ . @`,
/// and not one of the names the audit log gives the built-in identities.
pub fn valid_principal_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Names of the built-in identities in audit lines, not available to principals.
const RESERVED: &[&str] = &["so", "user"];

/// What one identity may do: the actions granted pool-wide, on every key,
/// and per key (lower-case name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pool: u64,
    keys: u64,
    per_key: HashMap<String, u64>,
}

impl Grants {
    /// The grants of roles held at `/`.
    pub fn of_roles(roles: &[&Role]) -> Grants {
        let mut g = Grants::default();
        for r in roles {
            g.add(r.actions, &Scope::Pool);
        }
        g
    }

    /// The grants of a principal's assignments, of built-in roles and of
    /// the custom roles `custom` (unknown roles and scopes, from a newer
    /// build or a role deleted meanwhile, grant nothing).
    pub fn of_assignments<'a>(
        assignments: impl Iterator<Item = &'a Assignment>,
        custom: &[RoleDef],
    ) -> Grants {
        let mut g = Grants::default();
        for a in assignments {
            let Some(scope) = Scope::parse(&a.scope) else {
                continue;
            };
            if let Some(role) = role_by_id(&a.role_id) {
                g.add(role.actions, &scope);
            } else if let Some(role) = custom.iter().find(|r| r.id == a.role_id) {
                g.add(&role.actions, &scope);
            }
        }
        g
    }

    fn add(&mut self, actions: &[DataAction], scope: &Scope) {
        for a in actions {
            match scope {
                Scope::Pool => self.pool |= a.bit(),
                Scope::Keys if a.on_keys() => self.keys |= a.bit(),
                Scope::Key(n) if a.on_keys() => {
                    *self.per_key.entry(n.to_ascii_lowercase()).or_default() |= a.bit()
                }
                // A role's other actions are granted at `/` only.
                _ => {}
            }
        }
    }

    /// Whether `action` is allowed (on key `key`, for a key action; `None`:
    /// on every key).
    pub fn allows(&self, action: DataAction, key: Option<&str>) -> bool {
        let bit = action.bit();
        if self.pool & bit != 0 || (action.on_keys() && self.keys & bit != 0) {
            return true;
        }
        match key {
            Some(k) if action.on_keys() && !self.per_key.is_empty() => self
                .per_key
                .get(&k.to_ascii_lowercase())
                .is_some_and(|m| m & bit != 0),
            _ => false,
        }
    }

    /// Whether some key action is granted on some key (a principal who can
    /// reach at least one key).
    pub fn reaches_keys(&self) -> bool {
        self.pool != 0 || self.keys != 0 || !self.per_key.is_empty()
    }
}

/// Who acts: the SO (the administrator), the plain user PIN (the pool's
/// default principal) or a named principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `CKU_SO` / `--so-pin`: Managed HSM Administrator + Policy Administrator at `/`.
    So,
    /// The plain user PIN: Crypto User + Crypto Officer at `/`.
    User,
    /// A named principal, with its assignments' grants.
    Principal(Arc<str>),
}

impl Identity {
    /// The name the audit log gives it (`so`, `user`, or the principal's name).
    pub fn audit_name(&self) -> &str {
        match self {
            Identity::So => "so",
            Identity::User => "user",
            Identity::Principal(n) => n,
        }
    }
}

/// The roles of the built-in identities (names as in [`ROLES`]).
pub fn builtin_roles(who: &Identity) -> Vec<&'static Role> {
    let names: &[&str] = match who {
        Identity::So => &[
            "Managed HSM Administrator",
            "Managed HSM Policy Administrator",
        ],
        Identity::User => &["Managed HSM Crypto User", "Managed HSM Crypto Officer"],
        Identity::Principal(_) => &[],
    };
    names.iter().filter_map(|n| role(n)).collect()
}

/// The stored principals and, per principal (lower-case name), its grants:
/// read once, and again after any process changed an assignment.
#[derive(Default)]
pub struct AccessTable {
    grants: HashMap<String, Arc<Grants>>,
}

impl AccessTable {
    fn load(
        principals: &[Principal],
        assignments: &[Assignment],
        custom: &[RoleDef],
    ) -> AccessTable {
        let grants = principals
            .iter()
            .map(|p| {
                let lc = p.name.to_lowercase();
                let mine = assignments
                    .iter()
                    .filter(|a| a.principal.eq_ignore_ascii_case(&p.name));
                (lc, Arc::new(Grants::of_assignments(mine, custom)))
            })
            .collect();
        AccessTable { grants }
    }
}

/// The fixed grants of the SO and of the plain user PIN.
static SO_GRANTS: LazyLock<Grants> =
    LazyLock::new(|| Grants::of_roles(&builtin_roles(&Identity::So)));
static USER_GRANTS: LazyLock<Grants> =
    LazyLock::new(|| Grants::of_roles(&builtin_roles(&Identity::User)));

/// A fresh object id (a random UUID, version 4).
pub fn new_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    crate::crypto::seal::fill_random(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl Pool {
    /// The access table, read from the store on first use after a change.
    fn access(&self) -> Result<Arc<AccessTable>> {
        if let Some(t) = self
            .access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(t.clone());
        }
        let (principals, assignments, roles) = self
            .read(|s| Ok::<_, Error>((s.principals()?, s.assignments()?, s.role_definitions()?)))?;
        let custom: Vec<RoleDef> = roles.iter().map(RoleDef::stored).collect();
        let table = Arc::new(AccessTable::load(&principals, &assignments, &custom));
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Some(table.clone());
        Ok(table)
    }

    /// Forget the access table (another process changed an assignment).
    pub(super) fn access_changed(&self) {
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The one access check (DESIGN §6): whether `who` may do `action` (on
    /// key `key`, for a key action). The SO and the plain user PIN hold fixed
    /// roles (no store read); a principal's grants come from its
    /// assignments as every process last committed them (call
    /// [`Pool::fresh`] first, as every `*Init` does).
    pub fn allows(&self, who: &Identity, action: DataAction, key: Option<&str>) -> Result<bool> {
        match who {
            Identity::User => Ok(USER_GRANTS.allows(action, key)),
            Identity::So => Ok(SO_GRANTS.allows(action, key)),
            Identity::Principal(name) => Ok(self
                .access()?
                .grants
                .get(&name.to_lowercase())
                .is_some_and(|g| g.allows(action, key))),
        }
    }

    /// What `who` may do, as one value (the CLI filters its lists with it).
    pub fn grants(&self, who: &Identity) -> Result<Arc<Grants>> {
        Ok(match who {
            Identity::User => Arc::new(USER_GRANTS.clone()),
            Identity::So => Arc::new(SO_GRANTS.clone()),
            Identity::Principal(name) => self
                .access()?
                .grants
                .get(&name.to_lowercase())
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// [`Pool::allows`] as a lifecycle outcome: [`Refusal::Denied`] naming
    /// who, what and where.
    pub fn authorize(&self, who: &Identity, action: DataAction, key: Option<&str>) -> Outcome<()> {
        if self.allows(who, action, key)? {
            return Ok(());
        }
        Err(Refusal::Denied(format!(
            "{} has no role assignment granting {} at {}",
            match who {
                Identity::Principal(n) => format!("principal '{n}'"),
                Identity::User => "the user PIN".to_string(),
                Identity::So => "the SO".to_string(),
            },
            action.name(),
            key.map_or_else(|| "/".to_string(), |k| format!("/keys/{k}"))
        )))
    }

    /// Check principal `name`'s PIN and unwrap the master key; the login is
    /// counted in the store (a principal locks after ten failures in a row,
    /// leaving every other principal and the user PIN working). An unknown
    /// name is `CKR_PIN_INCORRECT`, as a wrong PIN: a login does not tell
    /// which principals exist. Returns the principal's own spelling.
    pub fn login_principal(&self, name: &str, pin: &[u8]) -> Result<(super::MasterKey, Arc<str>)> {
        let Some((p, slot)) = self.read(|s| s.principal_pin(name))? else {
            return Err(Error(CKR_PIN_INCORRECT));
        };
        // The key derivation runs without the store's lock.
        match check_principal_pin(&p.object_id, &slot, pin) {
            Ok(master) => {
                if slot.failures > 0 {
                    self.read(|s| s.count_principal_login(&p.name, true))?;
                }
                Ok((master, p.name.into()))
            }
            Err(Error(CKR_PIN_INCORRECT)) => {
                self.read(|s| s.count_principal_login(&p.name, false))?;
                Err(Error(CKR_PIN_INCORRECT))
            }
            Err(e) => Err(e),
        }
    }

    /// Every principal.
    pub fn principals(&self) -> Result<Vec<Principal>> {
        self.read(|s| s.principals())
    }

    /// A principal's consecutive failed logins (None: no such principal).
    pub fn principal_failures(&self, name: &str) -> Result<Option<u32>> {
        Ok(self
            .read(|s| s.principal_pin(name))?
            .map(|(_, slot)| slot.failures))
    }

    /// Make principal `name` with `pin` (the caller holds the master key:
    /// the SO's login).
    pub fn add_principal(
        &self,
        master: &super::MasterKey,
        name: &str,
        pin: &[u8],
    ) -> Outcome<Principal> {
        if !valid_principal_name(name) {
            return Err(Refusal::Invalid(format!(
                "bad principal name '{name}': use 1-64 characters of A-Z a-z 0-9 - _ . @ (not 'so' or 'user')"
            )));
        }
        crate::engine::rules::check_pin_len(pin)?;
        let p = Principal {
            name: name.to_string(),
            object_id: new_uuid()?,
            created: crate::engine::attributes::now(),
        };
        if !self.read(|s| s.add_principal(&p, master, pin))? {
            return Err(Refusal::Invalid(format!(
                "a principal named '{name}' exists"
            )));
        }
        Ok(p)
    }

    /// Give principal `name` a new PIN (unlocking it).
    pub fn set_principal_pin(
        &self,
        master: &super::MasterKey,
        name: &str,
        pin: &[u8],
    ) -> Outcome<()> {
        crate::engine::rules::check_pin_len(pin)?;
        if !self.read(|s| s.set_principal_pin(name, master, pin))? {
            return Err(Refusal::Invalid(format!("no principal named '{name}'")));
        }
        Ok(())
    }

    /// Delete principal `name` and its assignments.
    pub fn delete_principal(&self, name: &str) -> Outcome<()> {
        if !self.write(|s| s.delete_principal(name))? {
            return Err(Refusal::Invalid(format!("no principal named '{name}'")));
        }
        Ok(())
    }

    /// Every role definition: the built-in ones, then the custom ones.
    pub fn roles(&self) -> Result<Vec<RoleDef>> {
        let mut all: Vec<RoleDef> = ROLES.iter().map(RoleDef::from).collect();
        all.extend(
            self.read(|s| s.role_definitions())?
                .iter()
                .map(RoleDef::stored),
        );
        Ok(all)
    }

    /// The role `name_or_id` names: a built-in one (also by its name
    /// without "Managed HSM "), else a custom one.
    pub fn find_role(&self, name_or_id: &str) -> Result<Option<RoleDef>> {
        if let Some(r) = role(name_or_id) {
            return Ok(Some(r.into()));
        }
        Ok(self
            .roles()?
            .into_iter()
            .find(|r| !r.builtin && r.is(name_or_id)))
    }

    /// `role definition create`: a custom role permitting `actions`.
    pub fn create_role(
        &self,
        name: &str,
        description: &str,
        actions: &[DataAction],
    ) -> Outcome<RoleDef> {
        let name = name.trim();
        if name.is_empty() || name.len() > 256 {
            return Err(Refusal::Invalid(
                "a role needs a roleName of 1-256 characters".into(),
            ));
        }
        if actions.is_empty() {
            return Err(Refusal::Invalid(
                "a role needs at least one data action".into(),
            ));
        }
        if self.find_role(name)?.is_some() {
            return Err(Refusal::Invalid(format!("a role named '{name}' exists")));
        }
        let mut names: Vec<String> = actions.iter().map(|a| a.name()).collect();
        names.sort();
        names.dedup();
        let row = crate::store::RoleRow {
            id: new_uuid()?,
            name: name.to_string(),
            description: description.to_string(),
            actions: serde_json::to_string(&names)
                .map_err(|_| Error(cryptoki_sys::CKR_GENERAL_ERROR))?,
            created: crate::engine::attributes::now(),
        };
        if !self.write(|s| s.add_role_definition(&row))? {
            return Err(Refusal::Invalid(format!("a role named '{name}' exists")));
        }
        Ok(RoleDef::stored(&row))
    }

    /// `role definition delete`: a custom role no assignment uses.
    pub fn delete_role(&self, name_or_id: &str) -> Outcome<RoleDef> {
        let Some(role) = self.find_role(name_or_id)? else {
            return Err(Refusal::Invalid(format!("no role named '{name_or_id}'")));
        };
        if role.builtin {
            return Err(Refusal::Invalid(format!(
                "'{}' is built in: it cannot be deleted",
                role.name
            )));
        }
        match self.write(|s| s.delete_role_definition(&role.id))? {
            None => Err(Refusal::Invalid(format!("no role named '{name_or_id}'"))),
            Some(0) => Ok(role),
            Some(n) => Err(Refusal::Invalid(format!(
                "'{}' is assigned {n} time(s): delete those assignments first",
                role.name
            ))),
        }
    }

    /// Every role assignment.
    pub fn assignments(&self) -> Result<Vec<Assignment>> {
        self.read(|s| s.assignments())
    }

    /// Assign `role` to principal `principal` at `scope`.
    pub fn assign(&self, principal: &str, role: &RoleDef, scope: &Scope) -> Outcome<Assignment> {
        let a = Assignment {
            id: new_uuid()?,
            principal: principal.to_string(),
            role_id: role.id.clone(),
            scope: scope.text(),
            created: crate::engine::attributes::now(),
        };
        if self.write(|s| s.add_assignment(&a))? {
            return Ok(a);
        }
        let known = self.read(|s| s.principal_pin(principal))?.is_some();
        Err(Refusal::Invalid(if known {
            format!("'{principal}' already holds {} at {}", role.name, a.scope)
        } else {
            format!("no principal named '{principal}'")
        }))
    }

    /// Remove the assignment of `role` to `principal` at `scope`.
    pub fn unassign(&self, principal: &str, role: &RoleDef, scope: &Scope) -> Outcome<()> {
        if !self.write(|s| s.delete_assignment(principal, &role.id, &scope.text()))? {
            return Err(Refusal::Invalid(format!(
                "'{principal}' holds no {} at {}",
                role.name,
                scope.text()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_one_name() {
        for (i, (a, _)) in ACTIONS.iter().enumerate() {
            assert_eq!(*a as usize, i, "ACTIONS is in enum order");
        }
        let mut names: Vec<String> = ACTIONS.iter().map(|(a, _)| a.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
        assert_eq!(
            KeysSign.name(),
            "Microsoft.KeyVault/managedHsm/keys/sign/action"
        );
    }

    #[test]
    fn roles_are_found_by_name_short_name_and_id() {
        assert_eq!(role("Managed HSM Crypto User").unwrap().id, ROLES[2].id);
        assert_eq!(role("crypto user").unwrap().id, ROLES[2].id);
        assert_eq!(
            role("2c18b078-7c48-4d3a-af88-5a3a1b3f82b3").unwrap().name,
            "Managed HSM Crypto Auditor"
        );
        assert!(role("Owner").is_none());
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(Scope::parse("/"), Some(Scope::Pool));
        assert_eq!(Scope::parse("/keys"), Some(Scope::Keys));
        assert_eq!(Scope::parse("/keys/"), Some(Scope::Keys));
        assert_eq!(Scope::parse("/keys/web"), Some(Scope::Key("web".into())));
        assert_eq!(Scope::parse("/keys/no_underscores"), None);
        assert_eq!(Scope::parse("keys"), None);
        assert_eq!(Scope::parse("/secrets"), None);
    }

    #[test]
    fn a_key_scope_grants_key_actions_on_that_key_only() {
        let a = Assignment {
            id: "x".into(),
            principal: "app1".into(),
            role_id: role("Crypto User").unwrap().id.into(),
            scope: "/keys/Web".into(),
            created: 0,
        };
        let g = Grants::of_assignments(std::iter::once(&a), &[]);
        assert!(g.allows(KeysSign, Some("web")));
        assert!(!g.allows(KeysSign, Some("db")));
        assert!(!g.allows(KeysSign, None));
        assert!(
            !g.allows(RoleAssignmentsRead, None),
            "not a key action: granted at / only"
        );
    }

    #[test]
    fn principal_names() {
        assert!(valid_principal_name("app1@example.com"));
        assert!(valid_principal_name("a.b-c_d"));
        assert!(!valid_principal_name(""));
        assert!(!valid_principal_name(&"a".repeat(65)));
        assert!(!valid_principal_name("a:b"));
        assert!(!valid_principal_name("User"));
    }
}
