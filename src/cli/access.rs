//! Local RBAC from the command line (issue 13), shaped after `az keyvault
//! role`: `principal create|list|delete|set-pin`, `role definition list`,
//! `role assignment create|list|delete`; and which data action each key verb
//! needs, checked against the acting identity (`--user NAME` with its PIN,
//! else the plain user PIN). The rules live in [`crate::pool::access`].

use super::args::{opt, Arity::*, Parsed, Verb, SO_PIN, SO_PIN_FILE};
use super::{output, so_pin, user_pin, CliError, Shown};
use crate::config::TokenConfig;
use crate::pool::access::{self, DataAction, Identity, RoleDef, Scope, ROLES};
use crate::pool::{MasterKey, PinUser, Pool};
use serde_json::{json, Value};

const PRINCIPAL_NAME: super::args::Opt = opt(
    "name",
    One,
    true,
    "NAME  principal name (1-64 of A-Z a-z 0-9 - _ . @)",
);
const PRINCIPAL_PIN: super::args::Opt = opt(
    "principal-pin",
    One,
    false,
    "PIN  the principal's PIN (else --principal-pin-file, else a prompt on a terminal)",
);
const PRINCIPAL_PIN_FILE: super::args::Opt = opt(
    "principal-pin-file",
    One,
    false,
    "FILE  read the principal's PIN from the first line of FILE",
);
const ROLE: super::args::Opt = opt(
    "role",
    One,
    true,
    "ROLE  role name (\"Managed HSM Crypto User\", or without \"Managed HSM \") or id",
);
const ASSIGNEE: super::args::Opt = opt("assignee", One, true, "NAME  the principal");
const SCOPE: super::args::Opt = opt(
    "scope",
    One,
    true,
    "SCOPE  / or /keys (the whole pool) or /keys/NAME (one key)",
);

/// The verbs of this file (after the main table in `args.rs`).
pub const VERBS: &[Verb] = &[
    Verb {
        path: &["principal", "create"],
        summary: "make a principal with its own PIN (SO PIN); it holds no role until assigned one",
        opts: &[PRINCIPAL_NAME, PRINCIPAL_PIN, PRINCIPAL_PIN_FILE, SO_PIN, SO_PIN_FILE],
    },
    Verb {
        path: &["principal", "list"],
        summary: "every principal: name, object id, created, failed logins (SO PIN)",
        opts: &[SO_PIN, SO_PIN_FILE],
    },
    Verb {
        path: &["principal", "delete"],
        summary: "delete a principal and its role assignments (SO PIN)",
        opts: &[PRINCIPAL_NAME, SO_PIN, SO_PIN_FILE],
    },
    Verb {
        path: &["principal", "set-pin"],
        summary: "give a principal a new PIN, unlocking it (SO PIN)",
        opts: &[PRINCIPAL_NAME, PRINCIPAL_PIN, PRINCIPAL_PIN_FILE, SO_PIN, SO_PIN_FILE],
    },
    Verb {
        path: &["role", "definition", "list"],
        summary: "the role definitions, built-in and custom: roleName, id, roleType, permissions[].dataActions (no PIN needed)",
        opts: &[],
    },
    Verb {
        path: &["role", "definition", "create"],
        summary: "a custom role (as the SO with --so-pin, else as the user: needs roleDefinitions/write)",
        opts: &[
            opt("role-definition", One, true, "JSON|@FILE  {\"roleName\": …, \"description\": …, \"permissions\": [{\"dataActions\": [\"Microsoft.KeyVault/managedHsm/keys/sign/action\", …]}]}"),
            SO_PIN,
            SO_PIN_FILE,
        ],
    },
    Verb {
        path: &["role", "definition", "delete"],
        summary: "delete a custom role that no assignment uses (needs roleDefinitions/delete)",
        opts: &[
            opt("name", One, true, "NAME|ID  the custom role"),
            SO_PIN,
            SO_PIN_FILE,
        ],
    },
    Verb {
        path: &["role", "assignment", "create"],
        summary: "assign a role to a principal at a scope (as the SO with --so-pin, else as the user: needs roleAssignments/write)",
        opts: &[ROLE, ASSIGNEE, SCOPE, SO_PIN, SO_PIN_FILE],
    },
    Verb {
        path: &["role", "assignment", "list"],
        summary: "role assignments, optionally of one principal or at one scope (needs roleAssignments/read)",
        opts: &[
            opt("assignee", One, false, "NAME  only this principal's"),
            opt("scope", One, false, "SCOPE  only at this scope"),
            SO_PIN,
            SO_PIN_FILE,
        ],
    },
    Verb {
        path: &["role", "assignment", "delete"],
        summary: "remove a role assignment (needs roleAssignments/delete)",
        opts: &[ROLE, ASSIGNEE, SCOPE, SO_PIN, SO_PIN_FILE],
    },
];

/// Whether `p` is one of these verbs.
pub fn is_ours(p: &Parsed) -> bool {
    VERBS.iter().any(|v| v.path == p.verb.path)
}

/// The checks made before any PIN is asked for: a scope spelled right, a
/// role definition that parses.
pub fn usage(p: &Parsed) -> Result<(), CliError> {
    if let Some(s) = p.one("scope") {
        scope(s)?;
    }
    if p.verb.path == ["role", "definition", "create"] {
        role_spec(p)?;
    }
    Ok(())
}

fn role(pool: &Pool, name: &str) -> Result<RoleDef, CliError> {
    pool.find_role(name)?.ok_or_else(|| {
        CliError::Failed(format!(
            "unknown role '{name}' (softmhsm role definition list shows the roles)"
        ))
    })
}

/// `--role-definition JSON|@FILE` as `az keyvault role definition create`
/// takes it: `roleName`, `description`, `permissions[].dataActions`
/// (every name a published data action).
fn role_spec(p: &Parsed) -> Result<(String, String, Vec<DataAction>), CliError> {
    let value = p.required("role-definition");
    let text = match value.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| CliError::Failed(format!("cannot read {file}: {e}")))?,
        None => value.to_string(),
    };
    let bad = |why: String| CliError::Failed(format!("bad role definition: {why}"));
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let name = v["roleName"]
        .as_str()
        .ok_or_else(|| bad("no roleName".into()))?
        .to_string();
    let description = v["description"].as_str().unwrap_or_default().to_string();
    let mut actions = Vec::new();
    for perm in v["permissions"].as_array().into_iter().flatten() {
        for a in perm["dataActions"].as_array().into_iter().flatten() {
            let a = a
                .as_str()
                .ok_or_else(|| bad("a data action is not a string".into()))?;
            actions.push(
                DataAction::parse(a).ok_or_else(|| bad(format!("unknown data action '{a}'")))?,
            );
        }
        if perm["notDataActions"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
        {
            return Err(bad("notDataActions are not supported".into()));
        }
    }
    if actions.is_empty() {
        return Err(bad("no permissions[].dataActions".into()));
    }
    Ok((name, description, actions))
}

fn scope(s: &str) -> Result<Scope, CliError> {
    Scope::parse(s).ok_or_else(|| {
        CliError::Failed(format!(
            "bad scope '{s}': use / or /keys (the whole pool) or /keys/NAME"
        ))
    })
}

/// A role definition as the REST API shows it.
fn definition(r: &RoleDef) -> Value {
    json!({
        "id": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{}", r.id),
        "name": r.id,
        "roleName": r.name,
        "description": r.description,
        "roleType": if r.builtin { "BuiltInRole" } else { "CustomRole" },
        "type": "Microsoft.Authorization/roleDefinitions",
        "assignableScopes": ["/"],
        "permissions": [{
            "actions": [],
            "notActions": [],
            "dataActions": r.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
            "notDataActions": [],
        }],
    })
}

/// A role assignment as `az keyvault role assignment list` shows it.
fn assignment(a: &access::Assignment, roles: &[RoleDef]) -> Value {
    let role_name = roles
        .iter()
        .find(|r| r.id == a.role_id)
        .map_or("", |r| r.name.as_str());
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.scope, a.id),
        "name": a.id,
        "principalName": a.principal,
        "roleDefinitionId": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{}", a.role_id),
        "roleName": role_name,
        "scope": a.scope,
        "type": "Microsoft.Authorization/roleAssignments",
    })
}

/// A principal's PIN: `--principal-pin`, `--principal-pin-file`, or a prompt.
fn principal_pin(p: &Parsed) -> Result<String, CliError> {
    super::some_pin(
        p,
        "principal-pin",
        "SOFTMHSM_PRINCIPAL_PIN",
        "principal PIN: ",
    )
}

/// Log in as the SO (verbs that manage credentials).
fn as_so(p: &Parsed, token: &TokenConfig, pool: &Pool) -> Result<MasterKey, CliError> {
    let pin = so_pin(p)?;
    super::login(token, pool, PinUser::So, &pin)
}

/// The identity the role verbs act as: the SO when an SO PIN is given,
/// else the acting user ([`acting`]).
fn admin_or_user(p: &Parsed, token: &TokenConfig, pool: &Pool) -> Result<Identity, CliError> {
    let so_given = p.one("so-pin").is_some()
        || p.one("so-pin-file").is_some()
        || std::env::var("SOFTMHSM_SO_PIN").is_ok_and(|v| !v.is_empty());
    if so_given {
        as_so(p, token, pool)?;
        return Ok(Identity::So);
    }
    Ok(acting(p, token, pool)?.1)
}

/// Log in as the acting user: principal `--user NAME` with its PIN, else
/// the plain user PIN (`--pin`, `--pin-file`, `$SOFTMHSM_PIN`, the prompt).
pub(super) fn acting(
    p: &Parsed,
    token: &TokenConfig,
    pool: &Pool,
) -> Result<(MasterKey, Identity), CliError> {
    let pin = user_pin(p)?;
    match p.one("user") {
        None => Ok((
            super::login(token, pool, PinUser::User, &pin)?,
            Identity::User,
        )),
        Some(name) => {
            let r = super::audit::login(token, Identity::Principal(name.into()), || {
                pool.login_principal(name, pin.as_bytes())
            });
            match r {
                Ok((master, name)) => Ok((master, Identity::Principal(name))),
                Err(crate::error::Error(cryptoki_sys::CKR_PIN_INCORRECT)) => {
                    let left = pool.principal_failures(name)?.map(|f| {
                        crate::pool::MAX_PIN_FAILURES.saturating_sub(f)
                    });
                    Err(CliError::Failed(match left {
                        Some(left) => format!(
                            "wrong PIN for principal '{name}': {left} {} left before it locks",
                            if left == 1 { "try" } else { "tries" }
                        ),
                        None => format!("wrong PIN for principal '{name}'"),
                    }))
                }
                Err(crate::error::Error(cryptoki_sys::CKR_PIN_LOCKED)) => Err(CliError::Failed(
                    format!("principal '{name}' is locked: the SO must set a new PIN (principal set-pin)"),
                )),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Refuse unless `who` may do `action` (on key `key`).
fn permit(
    pool: &Pool,
    who: &Identity,
    action: DataAction,
    key: Option<&str>,
) -> Result<(), CliError> {
    Ok(pool.authorize(who, action, key)?)
}

/// `role definition list`: the built-in roles as published, and the
/// pool's custom ones when it has a store (`pool`).
pub fn definitions(pool: Option<&Pool>) -> Result<Shown, CliError> {
    let roles = match pool {
        Some(pool) => pool.roles()?,
        None => ROLES.iter().map(RoleDef::from).collect(),
    };
    Ok(Shown {
        json: roles.iter().map(definition).collect(),
        table: output::table(
            &["Role", "Id", "Type", "Data actions"],
            roles
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.id.clone(),
                        if r.builtin { "built-in" } else { "custom" }.to_string(),
                        r.actions.len().to_string(),
                    ]
                })
                .collect(),
        ),
    })
}

/// Run one of these verbs.
pub fn run(p: &Parsed, token: &TokenConfig, pool: &Pool) -> Result<Shown, CliError> {
    match p.verb.path {
        ["role", "definition", "list"] => definitions(Some(pool)),
        ["role", "definition", "create"] => {
            let (name, description, actions) = role_spec(p)?;
            let who = admin_or_user(p, token, pool)?;
            permit(pool, &who, DataAction::RoleDefinitionsWrite, None)?;
            let made = pool.create_role(&name, &description, &actions)?;
            Ok(Shown {
                json: definition(&made),
                table: format!("role {} ({}) created", made.name, made.id),
            })
        }
        ["role", "definition", "delete"] => {
            let who = admin_or_user(p, token, pool)?;
            permit(pool, &who, DataAction::RoleDefinitionsDelete, None)?;
            let gone = pool.delete_role(p.required("name"))?;
            Ok(Shown {
                json: definition(&gone),
                table: format!("role {} ({}) deleted", gone.name, gone.id),
            })
        }
        ["principal", "create"] => {
            let name = p.required("name");
            let pin = principal_pin(p)?;
            let master = as_so(p, token, pool)?;
            let made = pool.add_principal(&master, name, pin.as_bytes())?;
            Ok(principal_shown(&[(made, 0)]))
        }
        ["principal", "list"] => {
            as_so(p, token, pool)?;
            let mut rows = Vec::new();
            for pr in pool.principals()? {
                let failures = pool.principal_failures(&pr.name)?.unwrap_or(0);
                rows.push((pr, failures));
            }
            let mut shown = principal_shown(&rows);
            if rows.is_empty() {
                shown.table = "no principals".into();
            }
            Ok(shown)
        }
        ["principal", "delete"] => {
            let name = p.required("name");
            as_so(p, token, pool)?;
            pool.delete_principal(name)?;
            Ok(Shown {
                json: json!({ "deleted": name }),
                table: format!("deleted principal {name} and its role assignments"),
            })
        }
        ["principal", "set-pin"] => {
            let name = p.required("name");
            let pin = principal_pin(p)?;
            let master = as_so(p, token, pool)?;
            pool.set_principal_pin(&master, name, pin.as_bytes())?;
            Ok(Shown {
                json: json!({ "result": format!("new PIN set for principal {name}") }),
                table: format!("new PIN set for principal {name} (unlocked)"),
            })
        }
        ["role", "assignment", "create"] => {
            let role = role(pool, p.required("role"))?;
            let scope = scope(p.required("scope"))?;
            let who = admin_or_user(p, token, pool)?;
            permit(pool, &who, DataAction::RoleAssignmentsWrite, None)?;
            let a = pool.assign(p.required("assignee"), &role, &scope)?;
            Ok(assignments_shown(&[a], &pool.roles()?))
        }
        ["role", "assignment", "delete"] => {
            let role = role(pool, p.required("role"))?;
            let scope = scope(p.required("scope"))?;
            let who = admin_or_user(p, token, pool)?;
            permit(pool, &who, DataAction::RoleAssignmentsDelete, None)?;
            let assignee = p.required("assignee");
            pool.unassign(assignee, &role, &scope)?;
            Ok(Shown {
                json: json!({ "deleted": { "assignee": assignee, "roleName": role.name, "scope": scope.text() } }),
                table: format!("removed {} from {assignee} at {}", role.name, scope.text()),
            })
        }
        ["role", "assignment", "list"] => {
            let who = admin_or_user(p, token, pool)?;
            permit(pool, &who, DataAction::RoleAssignmentsRead, None)?;
            let want_scope = p.one("scope").map(scope).transpose()?;
            let list: Vec<access::Assignment> = pool
                .assignments()?
                .into_iter()
                .filter(|a| {
                    p.one("assignee")
                        .is_none_or(|n| n.eq_ignore_ascii_case(&a.principal))
                })
                .filter(|a| {
                    want_scope
                        .as_ref()
                        .is_none_or(|w| Scope::parse(&a.scope).is_some_and(|s| s.same(w)))
                })
                .collect();
            Ok(assignments_shown(&list, &pool.roles()?))
        }
        _ => Err(CliError::Usage("unknown command".into())),
    }
}

fn principal_shown(rows: &[(access::Principal, u32)]) -> Shown {
    Shown {
        json: rows
            .iter()
            .map(|(pr, failures)| {
                json!({
                    "name": pr.name,
                    "objectId": pr.object_id,
                    "created": crate::engine::lifecycle::rfc3339(pr.created),
                    "failedLogins": failures,
                    "locked": *failures >= crate::pool::MAX_PIN_FAILURES,
                })
            })
            .collect(),
        table: output::table(
            &["Name", "Object id", "Created", "Failed logins"],
            rows.iter()
                .map(|(pr, failures)| {
                    vec![
                        pr.name.clone(),
                        pr.object_id.clone(),
                        crate::engine::lifecycle::rfc3339(pr.created),
                        failures.to_string(),
                    ]
                })
                .collect(),
        ),
    }
}

fn assignments_shown(list: &[access::Assignment], roles: &[RoleDef]) -> Shown {
    Shown {
        json: list.iter().map(|a| assignment(a, roles)).collect(),
        table: output::table(
            &["Principal", "Role", "Scope", "Id"],
            list.iter()
                .map(|a| {
                    vec![
                        a.principal.clone(),
                        roles
                            .iter()
                            .find(|r| r.id == a.role_id)
                            .map_or(a.role_id.clone(), |r| r.name.clone()),
                        a.scope.clone(),
                        a.id.clone(),
                    ]
                })
                .collect(),
        ),
    }
}

/// The data action a key verb needs, and whether it is on the named key
/// (else on every key: `/` or `/keys`). None: the verb needs no role
/// (`key random`, `check`: any identity that logged in).
pub fn key_action(path: &[&str]) -> Option<(DataAction, bool)> {
    use DataAction::*;
    Some(match path {
        ["key", "create"] => (KeysCreate, true),
        ["key", "import"] => (KeysImport, true),
        ["key", "list"] => (KeysRead, false),
        ["key", "list-versions"] | ["key", "show"] | ["key", "download"] | ["key", "attest"] => {
            (KeysRead, true)
        }
        ["key", "update"] => (KeysWrite, true),
        ["key", "rotate"] => (KeysRotate, true),
        ["key", "rotation-policy", "show"] => (KeysRead, true),
        ["key", "rotation-policy", "update"] => (KeysWrite, true),
        ["key", "rotate-due"] => (KeysRotate, false),
        ["key", "delete"] => (KeysDelete, true),
        ["key", "list-deleted"] => (DeletedKeysRead, false),
        ["key", "recover"] => (DeletedKeysRecover, true),
        ["key", "purge"] => (DeletedKeysPurge, true),
        ["key", "backup"] => (KeysBackup, true),
        // The key's name is inside the backup: restoring needs the pool.
        ["key", "restore"] => (KeysRestore, false),
        ["key", "sign"] => (KeysSign, true),
        ["key", "verify"] => (KeysVerify, true),
        ["key", "encrypt"] => (KeysEncrypt, true),
        ["key", "decrypt"] => (KeysDecrypt, true),
        ["key", "wrap"] => (KeysWrap, true),
        ["key", "unwrap"] => (KeysUnwrap, true),
        _ => return None,
    })
}

/// Check that `who` may run key verb `p` (before the verb touches anything).
/// `key list` and `key list-deleted` need the action on some key and then
/// show only the keys it reaches ([`Grants`](access::Grants)); `key show
/// --id` without a name needs `keys/read` on the pool.
pub fn check_key_verb(p: &Parsed, pool: &Pool, who: &Identity) -> Result<(), CliError> {
    let Some((action, on_key)) = key_action(p.verb.path) else {
        return Ok(());
    };
    let key = if on_key {
        p.one("name").filter(|n| !n.is_empty())
    } else {
        None
    };
    if matches!(action, DataAction::KeysRead | DataAction::DeletedKeysRead) && !on_key {
        // Filtered by the verb itself.
        return Ok(());
    }
    permit(pool, who, action, key)
}
