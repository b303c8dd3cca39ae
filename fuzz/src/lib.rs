//! Shared pieces of the softmhsm fuzz targets: a reader that turns the
//! fuzzer's bytes into choices, and fixture keys made once per process.

use cryptoki_sys::*;
use softmhsm::crypto::{self, Curve, SecretBytes};
use softmhsm::engine::attributes::{bool_bytes, ulong_bytes, Attr, Template};
use softmhsm::engine::key::{KeyKind, Record};
use softmhsm::engine::policy;
use std::sync::OnceLock;

/// The fuzzer's bytes read front to back; an exhausted input reads as zeros,
/// so every input is a complete (if short) program.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Read `data` from the start.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// Up to `n` bytes, borrowed from the input itself.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// One of `items`, chosen by one byte.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.u8() as usize % items.len()]
    }

    /// A `CK_ULONG`: mostly one of `interesting`, sometimes any value.
    pub fn ulong(&mut self, interesting: &[CK_ULONG]) -> CK_ULONG {
        let sel = self.u8() as usize;
        if sel < interesting.len() {
            interesting[sel]
        } else if sel >= 0xf0 {
            self.u64() as CK_ULONG
        } else {
            interesting[sel % interesting.len()]
        }
    }
}

/// The softmhsm vendor attribute base (`include/softmhsm.h`).
const VENDOR: CK_ATTRIBUTE_TYPE = 0x8000_0000 | 0x534D_0000;

/// Every attribute type the library's policy names, the vendor ones, and a
/// few it does not know.
pub const ATTRIBUTE_TYPES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_APPLICATION,
    CKA_VALUE,
    CKA_OBJECT_ID,
    CKA_CERTIFICATE_TYPE,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_NAME_HASH_ALGORITHM,
    CKA_CHECK_VALUE,
    CKA_KEY_TYPE,
    CKA_SUBJECT,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_DERIVE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
    CKA_PUBLIC_KEY_INFO,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_VALUE_LEN,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALLOWED_MECHANISMS,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_UNIQUE_ID,
    CKA_ALLOWED_MECHANISMS,
    CKA_WRAP_TEMPLATE,
    VENDOR + 0x01,
    VENDOR + 0x02,
    VENDOR + 0x03,
    VENDOR + 0x04,
    VENDOR + 0x05,
    VENDOR + 0x06,
    VENDOR + 0x07,
    VENDOR + 0x08,
    VENDOR + 0x09,
    VENDOR + 0x0A,
    VENDOR + 0x0B,
    VENDOR + 0x0C,
    VENDOR + 0x0D,
    CKA_VENDOR_DEFINED,
];

/// `CK_ULONG` values worth trying in an attribute or parameter.
pub const ULONGS: &[CK_ULONG] = &[
    0,
    1,
    CKO_DATA,
    CKO_CERTIFICATE,
    CKO_PUBLIC_KEY,
    CKO_PRIVATE_KEY,
    CKO_SECRET_KEY,
    CKK_RSA,
    CKK_EC,
    CKK_AES,
    CKC_X_509,
    16,
    24,
    32,
    12,
    96,
    128,
    2048,
    3072,
    4096,
    CKM_AES_KEY_GEN,
    CKM_EC_KEY_PAIR_GEN,
    CK_UNAVAILABLE_INFORMATION,
    u32::MAX as CK_ULONG,
];

/// DER named-curve OIDs (and a printable-string name) as `CKA_EC_PARAMS`.
pub const EC_PARAMS: &[&[u8]] = &[
    &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
    &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
    &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
    &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
    &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21],
    b"\x13\x0aprime256v1",
];

/// A template from attribute list literals.
pub fn template(attrs: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Template {
    Template(
        attrs
            .iter()
            .map(|(ty, value)| Attr {
                ty: *ty,
                value: value.clone().into(),
            })
            .collect(),
    )
}

/// A key of each kind the token has, with its record and material, made once
/// per process by the library's own template rules.
pub struct Fixture {
    /// Type and size.
    pub kind: KeyKind,
    /// The record as the token would store it.
    pub rec: Record,
    /// PKCS#8 (pairs) or the raw key (AES).
    pub material: SecretBytes,
}

/// AES-256, EC P-256, EC secp256k1 and RSA-2048 fixtures.
pub fn fixtures() -> &'static [Fixture] {
    static KEYS: OnceLock<Vec<Fixture>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let p = crypto::provider();
        let t = bool_bytes(true);
        let aes = policy::key_request(
            CKM_AES_KEY_GEN,
            None,
            &template(&[
                (CKA_VALUE_LEN, ulong_bytes(32)),
                (CKA_LABEL, b"fuzz-aes".to_vec()),
                (CKA_ENCRYPT, t.clone()),
                (CKA_DECRYPT, t.clone()),
                (CKA_WRAP, t.clone()),
                (CKA_UNWRAP, t.clone()),
            ]),
        )
        .expect("AES fixture template");
        let mut material = SecretBytes::new(vec![0u8; 32]);
        p.random(&mut material).expect("random");
        let mut out = vec![Fixture {
            kind: aes.kind,
            rec: aes.record,
            material,
        }];
        for (curve, params) in [(Curve::P256, EC_PARAMS[0]), (Curve::P256K, EC_PARAMS[1])] {
            let req = policy::key_request(
                CKM_EC_KEY_PAIR_GEN,
                Some(&template(&[
                    (CKA_EC_PARAMS, params.to_vec()),
                    (CKA_VERIFY, t.clone()),
                ])),
                &template(&[(CKA_SIGN, t.clone()), (CKA_LABEL, b"fuzz-ec".to_vec())]),
            )
            .expect("EC fixture template");
            let material = p.generate_ec(curve).expect("EC key");
            let mut rec = req.record;
            let public = p.ec_private(curve, &material).expect("EC parse").public();
            policy::set_public(&mut rec, &public);
            out.push(Fixture {
                kind: req.kind,
                rec,
                material,
            });
        }
        let req = policy::key_request(
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            Some(&template(&[
                (CKA_MODULUS_BITS, ulong_bytes(2048)),
                (CKA_VERIFY, t.clone()),
                (CKA_ENCRYPT, t.clone()),
                (CKA_WRAP, t.clone()),
            ])),
            &template(&[
                (CKA_SIGN, t.clone()),
                (CKA_DECRYPT, t.clone()),
                (CKA_UNWRAP, t.clone()),
                (CKA_LABEL, b"fuzz-rsa".to_vec()),
            ]),
        )
        .expect("RSA fixture template");
        let material = p.generate_rsa(2048).expect("RSA key");
        let mut rec = req.record;
        let public = p.rsa_private(&material).expect("RSA parse").public();
        policy::set_public(&mut rec, &public);
        out.push(Fixture {
            kind: req.kind,
            rec,
            material,
        });
        out
    })
}

/// A data object and a certificate record, as `C_CreateObject` makes them.
pub fn stored_records() -> &'static [Record] {
    static RECS: OnceLock<Vec<Record>> = OnceLock::new();
    RECS.get_or_init(|| {
        let data = policy::stored_object(&template(&[
            (CKA_CLASS, ulong_bytes(CKO_DATA)),
            (CKA_LABEL, b"fuzz-data".to_vec()),
            (CKA_APPLICATION, b"fuzz".to_vec()),
            (CKA_VALUE, b"value".to_vec()),
        ]))
        .expect("data fixture")
        .1;
        let cert = policy::stored_object(&template(&[
            (CKA_CLASS, ulong_bytes(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_TYPE, ulong_bytes(CKC_X_509)),
            (CKA_LABEL, b"fuzz-cert".to_vec()),
            (CKA_SUBJECT, b"subject".to_vec()),
            (CKA_VALUE, b"not really DER".to_vec()),
        ]))
        .expect("certificate fixture")
        .1;
        vec![data, cert]
    })
}
