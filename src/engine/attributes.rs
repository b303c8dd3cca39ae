//! Attribute templates as safe Rust values, and the encodings PKCS#11 uses for
//! attribute values (CK_BBOOL, CK_ULONG, CK_DATE).

use crate::error::{Error, Result};
use cryptoki_sys::*;
use std::fmt;
use zeroize::Zeroizing;

/// The softmhsm vendor attributes (`include/softmhsm.h`).
pub mod vendor {
    use cryptoki_sys::CK_ATTRIBUTE_TYPE;
    const BASE: CK_ATTRIBUTE_TYPE = 0x8000_0000 | 0x534D_0000;
    /// The key's Managed HSM name (read-only).
    pub const CKA_SOFTMHSM_NAME: CK_ATTRIBUTE_TYPE = BASE + 0x01;
    /// The 32-hex version id; in a find template it selects that version.
    pub const CKA_SOFTMHSM_VERSION: CK_ATTRIBUTE_TYPE = BASE + 0x02;
    /// `softmhsm://<token>/keys/<name>/<version>` (read-only).
    pub const CKA_SOFTMHSM_KID: CK_ATTRIBUTE_TYPE = BASE + 0x03;
    /// JWK `attributes.enabled`.
    pub const CKA_SOFTMHSM_ENABLED: CK_ATTRIBUTE_TYPE = BASE + 0x04;
    /// JWK `attributes.nbf`, seconds since the epoch (0 = unset).
    pub const CKA_SOFTMHSM_NBF: CK_ATTRIBUTE_TYPE = BASE + 0x05;
    /// JWK `attributes.exp`, seconds since the epoch (0 = unset).
    pub const CKA_SOFTMHSM_EXP: CK_ATTRIBUTE_TYPE = BASE + 0x06;
    /// JWK `attributes.created` (read-only).
    pub const CKA_SOFTMHSM_CREATED: CK_ATTRIBUTE_TYPE = BASE + 0x07;
    /// JWK `attributes.updated` (read-only).
    pub const CKA_SOFTMHSM_UPDATED: CK_ATTRIBUTE_TYPE = BASE + 0x08;
    /// key_ops contains `import` (BYOK key-exchange key).
    pub const CKA_SOFTMHSM_IMPORT: CK_ATTRIBUTE_TYPE = BASE + 0x09;
    /// Tags as a JSON object.
    pub const CKA_SOFTMHSM_TAGS: CK_ATTRIBUTE_TYPE = BASE + 0x0A;
    /// TRUE on the current version of a key (read-only).
    pub const CKA_SOFTMHSM_CURRENT: CK_ATTRIBUTE_TYPE = BASE + 0x0B;
    /// JWK `attributes.recoveryLevel` (read-only).
    pub const CKA_SOFTMHSM_RECOVERY_LEVEL: CK_ATTRIBUTE_TYPE = BASE + 0x0C;
}

/// One attribute of a caller's template, copied out of caller memory. A value
/// may be key material (`CKA_VALUE`, `CKA_PRIVATE_EXPONENT`, …) on its way to
/// being sealed, so it is wiped when dropped and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Attr {
    /// `CKA_*`.
    pub ty: CK_ATTRIBUTE_TYPE,
    /// The value bytes exactly as given, wiped on drop.
    pub value: Zeroizing<Vec<u8>>,
}

/// The type and the length only: templates reach debug logs and panic messages.
impl fmt::Debug for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attr")
            .field("ty", &format_args!("{:#x}", self.ty))
            .field("len", &self.value.len())
            .finish_non_exhaustive()
    }
}

/// A caller's template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template(pub Vec<Attr>);

impl Template {
    /// The raw value of `ty`, if present (the last one wins if repeated).
    pub fn get(&self, ty: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|a| a.ty == ty)
            .map(|a| a.value.as_slice())
    }

    /// `ty` as a CK_BBOOL; a value that is not one byte is `CKR_ATTRIBUTE_VALUE_INVALID`.
    pub fn get_bool(&self, ty: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
        self.get(ty).map(decode_bool).transpose()
    }

    /// `ty` as a CK_ULONG; a value of the wrong size is `CKR_ATTRIBUTE_VALUE_INVALID`.
    pub fn get_ulong(&self, ty: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
        self.get(ty).map(decode_ulong).transpose()
    }

    /// The attribute types present.
    pub fn types(&self) -> impl Iterator<Item = CK_ATTRIBUTE_TYPE> + '_ {
        self.0.iter().map(|a| a.ty)
    }
}

/// Encode a CK_BBOOL.
pub fn bool_bytes(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

/// Encode a CK_ULONG in the platform's byte order, as PKCS#11 requires.
pub fn ulong_bytes(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Decode a CK_BBOOL (one byte; any non-zero value is TRUE).
pub fn decode_bool(v: &[u8]) -> Result<bool> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(Error(CKR_ATTRIBUTE_VALUE_INVALID)),
    }
}

/// Decode a CK_ULONG.
pub fn decode_ulong(v: &[u8]) -> Result<CK_ULONG> {
    let bytes: [u8; std::mem::size_of::<CK_ULONG>()] = v
        .try_into()
        .map_err(|_| Error(CKR_ATTRIBUTE_VALUE_INVALID))?;
    Ok(CK_ULONG::from_ne_bytes(bytes))
}

/// Encode seconds since the epoch as a CK_DATE (`YYYYMMDD`), UTC.
pub fn date_bytes(secs: i64) -> Vec<u8> {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}{m:02}{d:02}").into_bytes()
}

/// Decode a CK_DATE into seconds since the epoch at 00:00:00 UTC. An empty value
/// means "no date" (None).
pub fn decode_date(v: &[u8]) -> Result<Option<i64>> {
    if v.is_empty() {
        return Ok(None);
    }
    let bad = || Error(CKR_ATTRIBUTE_VALUE_INVALID);
    if v.len() != 8 || !v.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let s = std::str::from_utf8(v).map_err(|_| bad())?;
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(Some(days_from_civil(y, m, d) * 86_400))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_ck_date() {
        // 2026-11-23 00:00:00 UTC = 1795392000
        assert_eq!(date_bytes(1_795_392_000), b"20261123".to_vec());
        assert_eq!(decode_date(b"20261123").unwrap(), Some(1_795_392_000));
        assert_eq!(decode_date(b"19700101").unwrap(), Some(0));
        assert_eq!(decode_date(b"").unwrap(), None);
        assert_eq!(
            decode_date(b"2026132"),
            Err(Error(CKR_ATTRIBUTE_VALUE_INVALID))
        );
        assert_eq!(
            decode_date(b"20261301"),
            Err(Error(CKR_ATTRIBUTE_VALUE_INVALID))
        );
    }

    /// A template holding a secret key's value, as `C_CreateObject` receives it.
    fn secret_template() -> Template {
        Template(vec![
            Attr {
                ty: CKA_CLASS,
                value: ulong_bytes(CKO_SECRET_KEY).into(),
            },
            Attr {
                ty: CKA_VALUE,
                value: vec![0xA5; 32].into(),
            },
        ])
    }

    #[test]
    fn template_debug_never_shows_values() {
        let shown = format!("{:?}", secret_template());
        assert!(shown.contains("ty: 0x11"), "{shown}");
        assert!(shown.contains("len: 32"), "{shown}");
        assert!(!shown.contains("165"), "value bytes printed: {shown}");
        assert!(
            !shown.to_lowercase().contains("a5"),
            "value bytes printed: {shown}"
        );
        let pretty = format!("{:#?}", secret_template());
        assert!(!pretty.contains("165"), "value bytes printed: {pretty}");
    }

    #[test]
    fn template_values_are_wiped_on_drop() {
        // Compile-time: the field's type wipes its buffer when dropped. Reading
        // freed memory to watch it happen would be undefined behaviour.
        fn wiped_on_drop(_: &impl zeroize::ZeroizeOnDrop) {}
        let t = secret_template();
        for a in &t.0 {
            wiped_on_drop(&a.value);
        }
        assert_eq!(t.get(CKA_VALUE), Some(&[0xA5; 32][..]));
    }

    #[test]
    fn bool_must_be_one_byte() {
        assert_eq!(decode_bool(&[1]), Ok(true));
        assert_eq!(
            decode_bool(&[0, 0]),
            Err(Error(CKR_ATTRIBUTE_VALUE_INVALID))
        );
    }
}
