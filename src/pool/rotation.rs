//! Rotation policies applied to a pool's store: read and set a key's policy,
//! and rotate the keys whose policy says so (`key rotate-due`, and the
//! library at user login). The policy's shape and rules are pure:
//! [`crate::engine::rotation`].

pub use crate::engine::rotation::*;

use super::lifecycle;
use crate::engine::key::KeyRecord;
use crate::engine::lifecycle::{Outcome, Refusal};
use crate::error::Error;
use crate::store::{MasterKey, Store};
use cryptoki_sys::CKR_FUNCTION_REJECTED;

/// The policy of `name`, if it has one.
pub fn get(store: &dyn Store, name: &str) -> Outcome<Option<Policy>> {
    match store.rotation_policy(name)? {
        Some(text) => Policy::parse(&text).map(Some),
        None => Ok(None),
    }
}

/// Set the policy of a live key `name` from its JSON (checked first; nothing
/// is written if it is refused). Returns the policy as stored.
pub fn set(store: &mut dyn Store, name: &str, text: &str) -> Outcome<Policy> {
    let policy = Policy::parse(text)?;
    lifecycle::show(store, name, None)?;
    store.set_rotation_policy(name, Some(&policy.to_json().to_string()))?;
    Ok(policy)
}

/// When a version of `name` made by rotation at `now` expires (its policy's
/// `expiryTime`), if it has such a policy.
pub fn new_version_expiry(store: &dyn Store, name: &str, now: i64) -> Outcome<Option<i64>> {
    Ok(get(store, name)?
        .and_then(|p| p.expiry)
        .map(|e| now.saturating_add(e.secs)))
}

/// One thing [`rotate_due`] did or found.
#[derive(Debug)]
pub enum Due {
    /// `name` got this new current version.
    Rotated(KeyRecord),
    /// `name`'s `Notify` trigger fired for this current version.
    Notify(KeyRecord),
    /// Rotation was due but refused (e.g. 100 versions already).
    Failed(String, Refusal),
}

/// Apply every key's policy at `now`: rotate the keys whose `Rotate` trigger
/// fired, report those whose `Notify` trigger fired. One key's failure does not
/// stop the others.
pub fn rotate_due(store: &mut dyn Store, master: &MasterKey, now: i64) -> Outcome<Vec<Due>> {
    let mut out = Vec::new();
    for (name, text) in store.rotation_policies()? {
        let Ok(policy) = Policy::parse(&text) else {
            continue; // stored only after parsing; a newer build's shape is left alone
        };
        let current = lifecycle::show(store, &name, None)?.key;
        if policy.due(&current, Action::Rotate, now) {
            // Decided on what was read; the store inserts only while that
            // version is still current, so however many processes find the
            // rotation due at once, it happens exactly once.
            match lifecycle::rotate_from(store, master, &name, Some(&current.version), now) {
                Ok(k) => out.push(Due::Rotated(k)),
                Err(Refusal::Token(Error(CKR_FUNCTION_REJECTED))) => {}
                Err(e) => out.push(Due::Failed(current.name.clone(), e)),
            }
        } else if policy.due(&current, Action::Notify, now) {
            out.push(Due::Notify(current));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::key::KeyKind;
    use crate::engine::lifecycle::KeySpec;
    use std::collections::BTreeMap;

    /// An initialised store in a temp dir, with its master key and one P-256 key `k` made at `t0`.
    fn store_with_key(t0: i64) -> (tempfile::TempDir, crate::store::SqliteStore, MasterKey) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let master = store.init_token("rot", b"so-pin-1", 1000, 7).unwrap();
        let spec = KeySpec {
            kind: KeyKind::Ec(crate::crypto::Curve::P256),
            ops: None,
            tags: BTreeMap::from([("env".to_string(), "ci".to_string())]),
            enabled: true,
            nbf: None,
            exp: Some(t0 + 60 * DAY),
            id: None,
        };
        lifecycle::create(&mut store, &master, "k", &spec, t0).unwrap();
        (dir, store, master)
    }

    #[test]
    fn rotate_trigger_fires_once_at_time_after_create() {
        let t0 = 1_800_000_000;
        let (_dir, mut store, master) = store_with_key(t0);
        set(
            &mut store,
            "K",
            r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P10D"},"action":{"type":"Rotate"}}],
                "attributes":{"expiryTime":"P30D"}}"#,
        )
        .unwrap();
        let first = lifecycle::show(&store, "k", None).unwrap().key;
        assert!(rotate_due(&mut store, &master, t0 + 10 * DAY - 1)
            .unwrap()
            .is_empty());
        let due = rotate_due(&mut store, &master, t0 + 10 * DAY).unwrap();
        let [Due::Rotated(new)] = due.as_slice() else {
            panic!("expected one rotation, got {due:?}")
        };
        assert_ne!(new.version, first.version);
        assert_eq!(new.kind, first.kind);
        assert_eq!(new.ops, first.ops);
        assert_eq!(new.tags, first.tags);
        assert_eq!(new.created, t0 + 10 * DAY);
        // expiryTime applies to the new version; the old one keeps its own.
        assert_eq!(new.exp, Some(t0 + 40 * DAY));
        let versions = lifecycle::versions(&store, "k").unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].key.exp, Some(t0 + 60 * DAY));
        assert!(!versions[0].current && versions[1].current);
        // The new version is young: nothing due until 10 days after it.
        assert!(rotate_due(&mut store, &master, t0 + 19 * DAY)
            .unwrap()
            .is_empty());
        assert_eq!(
            rotate_due(&mut store, &master, t0 + 20 * DAY)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(lifecycle::versions(&store, "k").unwrap().len(), 3);
    }

    #[test]
    fn before_expiry_triggers_rotate_and_notify() {
        let t0 = 1_800_000_000;
        let (_dir, mut store, master) = store_with_key(t0);
        set(
            &mut store,
            "k",
            r#"{"lifetimeActions":[{"trigger":{"timeBeforeExpiry":"P7D"},"action":{"type":"Notify"}}]}"#,
        )
        .unwrap();
        // exp = t0 + 60 days; Notify from 7 days before; no rotation ever.
        assert!(rotate_due(&mut store, &master, t0 + 53 * DAY - 1)
            .unwrap()
            .is_empty());
        let due = rotate_due(&mut store, &master, t0 + 53 * DAY).unwrap();
        assert!(matches!(due.as_slice(), [Due::Notify(k)] if k.name == "k"));
        assert_eq!(lifecycle::versions(&store, "k").unwrap().len(), 1);
        set(
            &mut store,
            "k",
            r#"{"lifetimeActions":[{"trigger":{"timeBeforeExpiry":"P7D"},"action":{"type":"Rotate"}}]}"#,
        )
        .unwrap();
        let due = rotate_due(&mut store, &master, t0 + 53 * DAY).unwrap();
        // No expiryTime: the new version never expires, so the trigger cannot fire again.
        assert!(matches!(due.as_slice(), [Due::Rotated(k)] if k.exp.is_none()));
        assert!(rotate_due(&mut store, &master, t0 + 900 * DAY)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn deleted_keys_are_not_rotated_and_purge_drops_the_policy() {
        let t0 = 1_800_000_000;
        let (_dir, mut store, master) = store_with_key(t0);
        let policy = r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P7D"},"action":{"type":"Rotate"}}]}"#;
        set(&mut store, "k", policy).unwrap();
        lifecycle::delete(&mut store, "k", t0).unwrap();
        assert!(rotate_due(&mut store, &master, t0 + 8 * DAY)
            .unwrap()
            .is_empty());
        // A policy for a deleted (or unknown) key is refused; nothing is written.
        assert!(matches!(
            set(&mut store, "k", policy),
            Err(Refusal::UnknownKey(_))
        ));
        // Recovered: the policy is back.
        lifecycle::recover(&mut store, "k").unwrap();
        assert!(get(&store, "k").unwrap().is_some());
        lifecycle::delete(&mut store, "k", t0).unwrap();
        lifecycle::purge(&mut store, "k", t0).unwrap();
        assert_eq!(store.rotation_policy("k").unwrap(), None);
    }

    #[test]
    fn backup_carries_the_policy_and_restore_brings_it_back() {
        let t0 = 1_800_000_000;
        let (_dir, mut store, master) = store_with_key(t0);
        let policy = r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Rotate"}}],"attributes":{"expiryTime":"P90D"}}"#;
        let set_policy = set(&mut store, "k", policy).unwrap();
        let blob = lifecycle::backup(&store, &master, "k").unwrap();
        lifecycle::delete(&mut store, "k", t0).unwrap();
        lifecycle::purge(&mut store, "k", t0).unwrap();
        assert_eq!(store.rotation_policy("k").unwrap(), None);
        lifecycle::restore(&mut store, &master, &blob).unwrap();
        assert_eq!(get(&store, "k").unwrap(), Some(set_policy));
        // And it acts: the restored key rotates when the trigger is due.
        let due = rotate_due(&mut store, &master, t0 + 31 * DAY).unwrap();
        assert!(matches!(due.as_slice(), [Due::Rotated(_)]), "{due:?}");
    }

    #[test]
    fn a_backup_without_a_policy_restores_without_one_and_a_bad_one_is_damage() {
        let t0 = 1_800_000_000;
        let (_dir, mut store, master) = store_with_key(t0);
        let blob = lifecycle::backup(&store, &master, "k").unwrap();
        let label = lifecycle::token_label(&store).unwrap();
        let decoded = lifecycle::decode_backup(&master, &label, &blob).unwrap();
        assert_eq!(decoded.rotation_policy, None);
        // The same backup with a policy the service would refuse (expiry < 28 days).
        let json = master
            .open(
                format!("softmhsm key backup v1 {label}").as_bytes(),
                &blob[b"SOFTMHSM-KEY-BACKUP-1\n".len()..],
            )
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["rotation_policy"] = r#"{"attributes":{"expiryTime":"P1D"}}"#.into();
        let bad = lifecycle::seal_backup(&master, &label, v.to_string().as_bytes()).unwrap();
        assert!(matches!(
            lifecycle::decode_backup(&master, &label, &bad),
            Err(Refusal::Invalid(_))
        ));
        lifecycle::delete(&mut store, "k", t0).unwrap();
        lifecycle::purge(&mut store, "k", t0).unwrap();
        assert!(lifecycle::restore(&mut store, &master, &bad).is_err());
        assert!(
            store.versions_of("k").unwrap().is_empty(),
            "a refused restore writes nothing"
        );
        lifecycle::restore(&mut store, &master, &blob).unwrap();
        assert_eq!(store.rotation_policy("k").unwrap(), None);
    }

    #[test]
    fn a_refused_policy_writes_nothing() {
        let (_dir, mut store, _master) = store_with_key(1_800_000_000);
        let good = r#"{"attributes":{"expiryTime":"P90D"}}"#;
        set(&mut store, "k", good).unwrap();
        assert!(set(&mut store, "k", r#"{"attributes":{"expiryTime":"P1D"}}"#).is_err());
        assert_eq!(
            get(&store, "k").unwrap().unwrap().expiry.unwrap().text,
            "P90D"
        );
    }

    #[test]
    fn durations_follow_iso_8601() {
        let d = |s: &str| parse_duration(s).map(|d| d.secs);
        assert_eq!(d("P90D"), Some(90 * DAY));
        assert_eq!(d("P1Y10D"), Some(375 * DAY));
        assert_eq!(d("P3M"), Some(90 * DAY));
        assert_eq!(d("P2W"), Some(14 * DAY));
        assert_eq!(d("PT48H"), Some(2 * DAY));
        assert_eq!(d("P1DT2H3M4S"), Some(DAY + 7384));
        assert_eq!(d("PT1M"), Some(60));
        for bad in [
            "",
            "P",
            "PT",
            "90D",
            "P90",
            "PD",
            "P1D2Y",
            "P1DD",
            "P1H",
            "P-1D",
            "P1.5D",
            "P1DT",
            "p90d",
            "P99999999999999999999D",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn policy_rules_are_the_services() {
        let ok = r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P90D"},"action":{"type":"Rotate"}},
                     {"trigger":{"timeBeforeExpiry":"P30D","timeAfterCreate":null},"action":{"type":"notify"}}],
                     "attributes":{"expiryTime":"P1Y"}}"#;
        let p = Policy::parse(ok).unwrap();
        assert_eq!(p.actions.len(), 2);
        assert_eq!(p.expiry.as_ref().unwrap().secs, 365 * DAY);
        // Round trip through the stored form.
        assert_eq!(Policy::parse(&p.to_json().to_string()).unwrap(), p);
        let refused = [
            r#"{"attributes":{"expiryTime":"P27D"}}"#,
            r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P6D"},"action":{"type":"Rotate"}}]}"#,
            r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D","timeBeforeExpiry":"P30D"},"action":{"type":"Rotate"}}]}"#,
            r#"{"lifetimeActions":[{"trigger":{},"action":{"type":"Rotate"}}]}"#,
            r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P60D"},"action":{"type":"Rotate"}}],"attributes":{"expiryTime":"P30D"}}"#,
            r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Rotate"}},{"trigger":{"timeAfterCreate":"P40D"},"action":{"type":"Rotate"}}]}"#,
            r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Delete"}}]}"#,
            r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"}}]}"#,
            r#"{"lifetimeActions":{}}"#,
            r#"[]"#,
            r#"{"#,
        ];
        for r in refused {
            assert!(
                matches!(Policy::parse(r), Err(Refusal::Invalid(_))),
                "{r} was accepted"
            );
        }
    }
}
