//! Output: keys as the Managed HSM REST API shows them (JSON), or tables for people.

use crate::crypto::PublicKey;
use crate::engine::key::{KeyKind, KeyRecord};
use crate::engine::lifecycle::{rfc3339, DeletedKey, KeyVersion};
use crate::engine::policy;
use serde_json::{json, Map, Value};

/// What the token adds to a key's JSON: its label (the kid authority) and its
/// recovery settings.
pub struct Pool {
    /// Token label.
    pub label: String,
    /// Soft-delete retention days.
    pub retention_days: u32,
    /// Purge protection.
    pub purge_protection: bool,
}

impl Pool {
    /// `softmhsm://<token>/keys/<name>/<version>`.
    pub fn kid(&self, k: &KeyRecord) -> String {
        policy::kid(&self.label, k)
    }

    /// `recoveryLevel`: the same function answers `CKA_SOFTMHSM_RECOVERY_LEVEL`.
    fn recovery_level(&self) -> &'static str {
        let r = policy::Recovery {
            purge_protection: self.purge_protection,
            retention_days: self.retention_days,
        };
        policy::recovery_level(true, r)
    }

    /// JSON `attributes`.
    pub fn attributes(&self, k: &KeyRecord) -> Value {
        let mut a = Map::new();
        a.insert("enabled".into(), json!(k.enabled));
        if let Some(nbf) = k.nbf {
            a.insert("nbf".into(), json!(nbf));
        }
        if let Some(exp) = k.exp {
            a.insert("exp".into(), json!(exp));
        }
        a.insert("created".into(), json!(k.created));
        a.insert("updated".into(), json!(k.updated));
        a.insert("recoveryLevel".into(), json!(self.recovery_level()));
        a.insert("recoverableDays".into(), json!(self.retention_days));
        a.insert("exportable".into(), json!(false));
        Value::Object(a)
    }

    /// A key bundle (`key show`, `create`, `rotate`, `update`, …), with the
    /// version's PKCS#11 identity.
    pub fn bundle(&self, v: &KeyVersion) -> Value {
        let k = &v.key;
        json!({
            "key": self.jwk(k),
            "attributes": self.attributes(k),
            "tags": k.tags,
            "pkcs11": pkcs11(v),
        })
    }

    /// A key item (`key list`, `key list-versions`): no key material.
    pub fn item(&self, v: &KeyVersion) -> Value {
        json!({
            "kid": self.kid(&v.key),
            "kty": v.key.kind.kty(),
            "current": v.current,
            "attributes": self.attributes(&v.key),
            "tags": v.key.tags,
            "pkcs11": pkcs11(v),
        })
    }

    /// A deleted key (`key delete`, `key list-deleted`).
    pub fn deleted(&self, d: &DeletedKey) -> Value {
        json!({
            "recoveryId": format!("softmhsm://{}/deletedkeys/{}", self.label, d.key.name),
            "deletedDate": d.deleted_at,
            "scheduledPurgeDate": d.purge_at,
            "key": self.jwk(&d.key),
            "attributes": self.attributes(&d.key),
            "tags": d.key.tags,
        })
    }

    /// The public JWK (no private part ever).
    fn jwk(&self, k: &KeyRecord) -> Value {
        let mut j = Map::new();
        j.insert("kid".into(), json!(self.kid(k)));
        j.insert("kty".into(), json!(k.kind.kty()));
        j.insert("key_ops".into(), json!(k.ops.names()));
        match k.public.as_ref().and_then(|p| p.to_public(k.kind).ok()) {
            Some(PublicKey::Rsa { n, e }) => {
                j.insert("n".into(), json!(b64url(strip_zeros(&n))));
                j.insert("e".into(), json!(b64url(strip_zeros(&e))));
            }
            Some(PublicKey::Ec { curve, point }) => {
                let len = curve.field_len();
                if point.len() == 1 + 2 * len {
                    j.insert("crv".into(), json!(curve.jwk_name()));
                    j.insert("x".into(), json!(b64url(&point[1..1 + len])));
                    j.insert("y".into(), json!(b64url(&point[1 + len..])));
                }
            }
            Some(PublicKey::MlDsa { set, key }) => {
                // The Managed HSM's AKP JWK (API 2026-05-01-preview): alg + pub.
                j.insert("alg".into(), json!(set.name()));
                j.insert("pub".into(), json!(b64url(&key)));
            }
            Some(PublicKey::MlKem { set, key }) => {
                // No Managed HSM shape: the AKP form, as the nearest one.
                j.insert("alg".into(), json!(set.name()));
                j.insert("pub".into(), json!(b64url(&key)));
            }
            None => {}
        }
        Value::Object(j)
    }

    /// Table rows for key versions.
    pub fn version_table(&self, keys: &[KeyVersion]) -> String {
        let rows = keys
            .iter()
            .map(|v| {
                let k = &v.key;
                vec![
                    k.name.clone(),
                    k.version.clone(),
                    k.kind.kty().to_string(),
                    size(k.kind),
                    k.enabled.to_string(),
                    if v.current { "yes" } else { "" }.to_string(),
                    k.ops.names().join(","),
                    k.exp.map(rfc3339).unwrap_or_default(),
                    String::from_utf8_lossy(&v.label).into_owned(),
                    hex(&v.id),
                ]
            })
            .collect();
        table(
            &[
                "Name", "Version", "Kty", "Size", "Enabled", "Current", "Ops", "Expires", "Label",
                "ID",
            ],
            rows,
        )
    }

    /// Table rows for deleted keys.
    pub fn deleted_table(&self, keys: &[DeletedKey]) -> String {
        let rows = keys
            .iter()
            .map(|d| {
                vec![
                    d.key.name.clone(),
                    d.key.kind.kty().to_string(),
                    rfc3339(d.deleted_at),
                    rfc3339(d.purge_at),
                ]
            })
            .collect();
        table(&["Name", "Kty", "Deleted", "Scheduled purge"], rows)
    }
}

/// A version's PKCS#11 identity: `CKA_LABEL` (as text; bytes that are not
/// UTF-8 are replaced) and `CKA_ID` in hex.
fn pkcs11(v: &KeyVersion) -> Value {
    json!({ "label": String::from_utf8_lossy(&v.label), "id": hex(&v.id) })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Size or curve, for tables.
fn size(kind: KeyKind) -> String {
    match kind {
        KeyKind::Rsa(b) | KeyKind::Aes(b) => b.to_string(),
        KeyKind::Ec(c) => c.jwk_name().to_string(),
        KeyKind::MlDsa(s) => s.name().to_string(),
        KeyKind::MlKem(s) => s.name().to_string(),
    }
}

/// JWK integers are unsigned big-endian without leading zero bytes (RFC 7518 §6.3.1).
fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[first..]
}

/// Base64url without padding (RFC 7515 §2).
pub fn b64url(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            s.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// Base64url back to bytes: unpadded as [`b64url`] writes it, or padded;
/// None when it is not base64url.
pub fn from_b64url(s: &str) -> Option<Vec<u8>> {
    use base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::decode_vec(s.trim_end_matches('=')).ok()
}

/// A plain text table with a header row.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.push(line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// A rotation policy (its REST JSON) as a table: one row per lifetime
/// action, then the expiry of the versions rotation makes.
pub fn policy_table(policy: &Value) -> String {
    let rows = policy["lifetimeActions"]
        .as_array()
        .map(|actions| {
            actions
                .iter()
                .map(|a| {
                    let trigger = a["trigger"].as_object();
                    let (when, after) = trigger
                        .and_then(|t| t.iter().next())
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .unwrap_or_default();
                    let kind = a["action"]["type"].as_str().unwrap_or_default().to_string();
                    vec![kind, when, after]
                })
                .collect()
        })
        .unwrap_or_default();
    let expiry = match policy["attributes"]["expiryTime"].as_str() {
        Some(e) => format!("Rotated versions expire after {e}"),
        None => "Rotated versions do not expire".to_string(),
    };
    format!(
        "{}\n\n{expiry}",
        table(&["Action", "Trigger", "Duration"], rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_matches_rfc4648_vectors() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(b"foob"), "Zm9vYg");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn jwk_integers_lose_leading_zeros() {
        assert_eq!(strip_zeros(&[0, 0, 1, 0]), &[1, 0]);
        assert_eq!(strip_zeros(&[0]), &[0]);
    }
}
