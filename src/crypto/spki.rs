//! DER encodings of public keys: `SubjectPublicKeyInfo` (RFC 5280 §4.1, for
//! `CKA_PUBLIC_KEY_INFO`) and the `CKA_EC_POINT` OCTET STRING.
//!
//! Hand-written because the structures are fixed and tiny; pulling a DER crate's
//! builder in for four SEQUENCEs is not worth it.

use super::{Curve, PublicKey};

/// DER of `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// DER of `id-ecPublicKey` (1.2.840.10045.2.1).
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER NULL: RFC 3279 §2.3.1 requires NULL parameters for rsaEncryption.
const DER_NULL: &[u8] = &[0x05, 0x00];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_SEQUENCE: u8 = 0x30;

/// Appends a DER length (short form below 128, else long form).
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends one TLV whose value is the concatenation of `parts`.
fn push_tlv(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
    out.push(tag);
    push_len(out, parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
}

fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    push_tlv(&mut out, tag, parts);
    out
}

/// A positive DER INTEGER from big-endian magnitude bytes.
fn positive_integer(magnitude: &[u8]) -> Vec<u8> {
    let lead = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let m = &magnitude[lead..];
    match m.first() {
        None => tlv(TAG_INTEGER, &[&[0]]),
        // A set top bit would read as negative: DER needs a 0x00 in front.
        Some(b) if b & 0x80 != 0 => tlv(TAG_INTEGER, &[&[0], m]),
        Some(_) => tlv(TAG_INTEGER, &[m]),
    }
}

/// The PKCS#1 `RSAPublicKey` (RFC 8017 A.1.1) for modulus `n` and exponent `e`.
pub fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &[&positive_integer(n), &positive_integer(e)])
}

/// DER `SubjectPublicKeyInfo` of `key` (the value of `CKA_PUBLIC_KEY_INFO`).
pub fn spki_der(key: &PublicKey) -> Vec<u8> {
    let (alg, subject) = match key {
        PublicKey::Rsa { n, e } => (
            tlv(TAG_SEQUENCE, &[RSA_ENCRYPTION_OID, DER_NULL]),
            rsa_public_key_der(n, e),
        ),
        PublicKey::Ec { curve, point } => (
            tlv(TAG_SEQUENCE, &[EC_PUBLIC_KEY_OID, curve.oid_der()]),
            point.clone(),
        ),
        // RFC 9881 §4: no parameters; the key is the raw pkEncode bytes.
        PublicKey::MlDsa { set, key } => (tlv(TAG_SEQUENCE, &[set.oid_der()]), key.clone()),
        // draft-ietf-lamps-kyber-certificates: likewise no parameters, the raw ek.
        PublicKey::MlKem { set, key } => (tlv(TAG_SEQUENCE, &[set.oid_der()]), key.clone()),
    };
    // BIT STRING: the leading 0 says no unused bits in the last byte.
    let bits = tlv(TAG_BIT_STRING, &[&[0], &subject]);
    tlv(TAG_SEQUENCE, &[&alg, &bits])
}

/// DER OCTET STRING holding an EC point (the value of `CKA_EC_POINT`, PKCS#11 3.1 §2.3.3).
pub fn ec_point_der(point: &[u8]) -> Vec<u8> {
    tlv(TAG_OCTET_STRING, &[point])
}

/// The uncompressed point in a `CKA_EC_POINT` value, given raw or as a DER
/// OCTET STRING (clients differ: the spec says DER, some send the raw point).
pub fn ec_point_from_attr(value: &[u8], curve: Curve) -> Option<Vec<u8>> {
    let want = 1 + 2 * curve.field_len();
    let is_point = |p: &[u8]| p.len() == want && p[0] == 0x04;
    // Raw first: a raw point starts with 0x04, which is also the OCTET STRING tag,
    // but a raw point of the right length cannot also be a well-formed DER wrapper
    // of one, since the wrapper is at least two bytes longer.
    if is_point(value) {
        return Some(value.to_vec());
    }
    let (&tag, rest) = value.split_first()?;
    if tag != TAG_OCTET_STRING {
        return None;
    }
    let (len, body) = read_len(rest)?;
    if len != body.len() || !is_point(body) {
        return None;
    }
    Some(body.to_vec())
}

/// Reads a DER length; returns it and the bytes after it. Rejects non-minimal forms.
fn read_len(input: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first < 0x80 {
        return Some((first as usize, rest));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 2 || rest.len() < n {
        return None;
    }
    let (len_bytes, body) = rest.split_at(n);
    if len_bytes[0] == 0 {
        return None;
    }
    let len = len_bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
    if len < 0x80 {
        return None;
    }
    Some((len, body))
}

/// The CRT values `dp`, `dq`, `qi` (big-endian, no leading zeros) of an RSA
/// key in PKCS#8 DER (RFC 8017 A.1.2 inside RFC 5208), for checking a JWK's
/// against the ones its primes give; None if it is not one.
pub fn rsa_crt_values(pkcs8: &[u8]) -> Option<[Vec<u8>; 3]> {
    use pkcs8::der::Decode as _;
    let info = pkcs8::PrivateKeyInfo::from_der(pkcs8).ok()?;
    let key = rsa::pkcs1::RsaPrivateKey::from_der(info.private_key).ok()?;
    let strip = |b: &[u8]| b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..].to_vec();
    Some([
        strip(key.exponent1.as_bytes()),
        strip(key.exponent2.as_bytes()),
        strip(key.coefficient.as_bytes()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_length_long_forms() {
        let mut v = Vec::new();
        push_len(&mut v, 0x7f);
        push_len(&mut v, 0x80);
        push_len(&mut v, 0x1234);
        assert_eq!(v, [0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn integer_gets_sign_byte_and_loses_leading_zeros() {
        assert_eq!(positive_integer(&[0, 0, 0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(positive_integer(&[0x01, 0x00, 0x01]), [0x02, 0x03, 1, 0, 1]);
        assert_eq!(positive_integer(&[]), [0x02, 0x01, 0x00]);
    }

    #[test]
    fn ec_point_accepted_raw_or_der() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[0x11; 64]);
        let der = ec_point_der(&point);
        assert_eq!(&der[..2], &[0x04, 65]);
        assert_eq!(ec_point_from_attr(&point, Curve::P256), Some(point.clone()));
        assert_eq!(ec_point_from_attr(&der, Curve::P256), Some(point.clone()));
        assert_eq!(ec_point_from_attr(&der, Curve::P384), None);
        assert_eq!(ec_point_from_attr(&der[..der.len() - 1], Curve::P256), None);
        assert_eq!(ec_point_from_attr(&[], Curve::P256), None);
    }

    #[test]
    fn ec_point_p521_uses_long_form_length() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[0x22; 132]);
        let der = ec_point_der(&point);
        assert_eq!(&der[..3], &[0x04, 0x81, 133]);
        assert_eq!(ec_point_from_attr(&der, Curve::P521), Some(point));
    }
}
