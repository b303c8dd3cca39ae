//! Key rotation policies (Managed HSM's `KeyRotationPolicy`): when a key gets a
//! new version by itself, and when new versions expire.
//!
//! A policy is JSON in the REST API's shape:
//!
//! ```json
//! { "lifetimeActions": [
//!     { "trigger": { "timeAfterCreate": "P90D" }, "action": { "type": "Rotate" } },
//!     { "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "Notify" } } ],
//!   "attributes": { "expiryTime": "P1Y" } }
//! ```
//!
//! The rules are the service's: `expiryTime` at least 28 days; each trigger has
//! exactly one of `timeAfterCreate`/`timeBeforeExpiry`, at least 7 days, and
//! shorter than `expiryTime` when that is set; at most one `Rotate` and one
//! `Notify` action. Durations are ISO 8601 (`P1Y2M10DT2H30M`, `P2W`); a year
//! counts 365 days and a month 30, as a fixed-length duration must.
//!
//! Policies are applied by [`rotate_due`]: the admin CLI's `key rotate-due`, and
//! the library at each user login (it needs the master key to seal new
//! versions). `Notify` has no Event Grid to talk to: `rotate_due` reports the
//! key, and the caller logs it.

use crate::engine::key::KeyRecord;
use crate::engine::lifecycle::{Outcome, Refusal};
use serde_json::{json, Map, Value};

pub const DAY: i64 = 86_400;
/// Shortest `expiryTime`.
pub const MIN_EXPIRY: i64 = 28 * DAY;
/// Shortest trigger.
pub const MIN_TRIGGER: i64 = 7 * DAY;

/// What sets off an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// This long after the current version was created.
    AfterCreate(Duration),
    /// This long before the current version expires (never, if it has no `exp`).
    BeforeExpiry(Duration),
}

/// What an action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make a new version.
    Rotate,
    /// Tell someone (reported by [`rotate_due`]).
    Notify,
}

/// An ISO 8601 duration: its text as given and its length in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duration {
    /// As given (`P90D`).
    pub text: String,
    /// Seconds.
    pub secs: i64,
}

/// A parsed, checked policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `lifetimeActions`.
    pub actions: Vec<(Trigger, Action)>,
    /// `attributes.expiryTime`: new versions made by rotation expire this long after.
    pub expiry: Option<Duration>,
}

/// Parse an ISO 8601 duration (`PnYnMnWnDTnHnMnS`, integers) to seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut secs: i64 = 0;
    let mut any = false;
    let mut add = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        let mut next = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            // Units in order, each at most once.
            let i = units[next..].iter().position(|(u, _)| *u == c)? + next;
            let n: i64 = num.parse().ok()?;
            secs = secs.checked_add(n.checked_mul(units[i].1)?)?;
            num.clear();
            next = i + 1;
            any = true;
        }
        num.is_empty().then_some(())
    };
    add(
        date,
        &[
            ('Y', 365 * DAY),
            ('M', 30 * DAY),
            ('W', 7 * DAY),
            ('D', DAY),
        ],
    )?;
    if let Some(t) = time {
        add(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    any.then(|| Duration {
        text: text.to_string(),
        secs,
    })
}

fn invalid(why: impl Into<String>) -> Refusal {
    Refusal::Invalid(format!("rotation policy: {}", why.into()))
}

fn duration_field(v: &Value, field: &str) -> Outcome<Option<Duration>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_duration(s)
            .map(Some)
            .ok_or_else(|| invalid(format!("{field} '{s}' is not an ISO 8601 duration"))),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

impl Policy {
    /// Parse and check a policy in the REST API's JSON shape.
    pub fn parse(text: &str) -> Outcome<Policy> {
        let v: Value = serde_json::from_str(text).map_err(|e| invalid(format!("bad JSON: {e}")))?;
        if !v.is_object() {
            return Err(invalid("not a JSON object"));
        }
        let expiry = match v.get("attributes") {
            None | Some(Value::Null) => None,
            Some(a) if a.is_object() => duration_field(a, "expiryTime")?,
            Some(_) => return Err(invalid("attributes must be an object")),
        };
        if let Some(e) = &expiry {
            if e.secs < MIN_EXPIRY {
                return Err(invalid(format!(
                    "expiryTime {} is shorter than 28 days",
                    e.text
                )));
            }
        }
        let list = match v.get("lifetimeActions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(invalid("lifetimeActions must be an array")),
        };
        let mut actions = Vec::new();
        for a in &list {
            let trigger = a
                .get("trigger")
                .filter(|t| t.is_object())
                .ok_or_else(|| invalid("each lifetime action needs a trigger object"))?;
            let trigger = match (
                duration_field(trigger, "timeAfterCreate")?,
                duration_field(trigger, "timeBeforeExpiry")?,
            ) {
                (Some(d), None) => Trigger::AfterCreate(d),
                (None, Some(d)) => Trigger::BeforeExpiry(d),
                _ => {
                    return Err(invalid(
                        "a trigger has exactly one of timeAfterCreate and timeBeforeExpiry",
                    ))
                }
            };
            let d = match &trigger {
                Trigger::AfterCreate(d) | Trigger::BeforeExpiry(d) => d,
            };
            if d.secs < MIN_TRIGGER {
                return Err(invalid(format!(
                    "trigger {} is shorter than 7 days",
                    d.text
                )));
            }
            if let Some(e) = &expiry {
                if d.secs >= e.secs {
                    return Err(invalid(format!(
                        "trigger {} is not shorter than expiryTime {}",
                        d.text, e.text
                    )));
                }
            }
            let kind = a
                .get("action")
                .and_then(|x| x.get("type"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("each lifetime action needs action.type"))?;
            let action = if kind.eq_ignore_ascii_case("rotate") {
                Action::Rotate
            } else if kind.eq_ignore_ascii_case("notify") {
                Action::Notify
            } else {
                return Err(invalid(format!(
                    "action type '{kind}': use Rotate or Notify"
                )));
            };
            if actions.iter().any(|(_, x)| *x == action) {
                return Err(invalid(format!("more than one {kind} action")));
            }
            actions.push((trigger, action));
        }
        Ok(Policy { actions, expiry })
    }

    /// The policy as the REST API shows it.
    pub fn to_json(&self) -> Value {
        let actions: Vec<Value> = self
            .actions
            .iter()
            .map(|(t, a)| {
                let trigger = match t {
                    Trigger::AfterCreate(d) => json!({ "timeAfterCreate": d.text }),
                    Trigger::BeforeExpiry(d) => json!({ "timeBeforeExpiry": d.text }),
                };
                let kind = match a {
                    Action::Rotate => "Rotate",
                    Action::Notify => "Notify",
                };
                json!({ "trigger": trigger, "action": { "type": kind } })
            })
            .collect();
        let mut attributes = Map::new();
        if let Some(e) = &self.expiry {
            attributes.insert("expiryTime".into(), Value::String(e.text.clone()));
        }
        json!({ "lifetimeActions": actions, "attributes": attributes })
    }

    /// Whether `action` is due now for the current version `key`.
    pub fn due(&self, key: &KeyRecord, action: Action, now: i64) -> bool {
        self.actions.iter().any(|(t, a)| {
            *a == action
                && match t {
                    Trigger::AfterCreate(d) => now >= key.created.saturating_add(d.secs),
                    Trigger::BeforeExpiry(d) => {
                        key.exp.is_some_and(|exp| now >= exp.saturating_sub(d.secs))
                    }
                }
        })
    }
}
