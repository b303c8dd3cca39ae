//! Key material from a `C_CreateObject` template: the import rules (sizes,
//! curves) applied before any provider sees the material.

use crate::crypto::{self, PublicKey, RsaParts, SecretBytes};
use crate::engine::attributes::Template;
use crate::engine::rules;
use crate::error::{Error, Result};
use cryptoki_sys::*;

/// The key material of a C_CreateObject import template: AES key bytes, or
/// PKCS#8 built from RSA components / an EC scalar. Sizes and curves are checked
/// before the provider sees the material (`CKR_KEY_SIZE_RANGE`,
/// `CKR_CURVE_NOT_SUPPORTED`).
pub fn material(t: &Template) -> Result<SecretBytes> {
    let get = |ty| t.get(ty).ok_or(Error(CKR_TEMPLATE_INCOMPLETE));
    let secret = |ty| t.get(ty).map(|v| SecretBytes::new(v.to_vec()));
    let p = crypto::provider();
    match t.get_ulong(CKA_KEY_TYPE)? {
        Some(CKK_AES) => Ok(SecretBytes::new(get(CKA_VALUE)?.to_vec())),
        Some(CKK_RSA) => {
            let n = get(CKA_MODULUS)?;
            let bits = PublicKey::Rsa {
                n: n.to_vec(),
                e: Vec::new(),
            }
            .bits();
            if !u32::try_from(bits).is_ok_and(|b| rules::RSA_BITS.contains(&b)) {
                return Err(Error(CKR_KEY_SIZE_RANGE));
            }
            let parts = RsaParts {
                n: n.to_vec(),
                e: get(CKA_PUBLIC_EXPONENT)?.to_vec(),
                d: SecretBytes::new(get(CKA_PRIVATE_EXPONENT)?.to_vec()),
                p: secret(CKA_PRIME_1),
                q: secret(CKA_PRIME_2),
            };
            p.import_rsa(&parts)
        }
        Some(CKK_EC) => {
            let curve = rules::curve_from_params(get(CKA_EC_PARAMS)?)?;
            p.import_ec(curve, get(CKA_VALUE)?)
        }
        Some(_) => Err(Error(CKR_TEMPLATE_INCONSISTENT)),
        None => Err(Error(CKR_TEMPLATE_INCOMPLETE)),
    }
}
