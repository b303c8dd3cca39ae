//! The operation lifecycle of PKCS#11 3.0 §5.2 and §5.8–5.12, for every
//! family (digest, encrypt, decrypt, sign, verify), single- and multi-part,
//! through the raw function list: an error other than `CKR_BUFFER_TOO_SMALL`
//! ends the active operation; a successful call that is not a length query
//! ends it; after a single-part call kept it (length query, short buffer) only
//! the single-part call may follow, and after `*Update` only `*Update`/`*Final`.
//!
//! Outputs are checked independently: digests by `sha2`, AES-CBC-PAD by the
//! `cbc` crate under a key imported with a known value, ECDSA by `p256`.

#[macro_use]
mod common;

use std::ptr;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use common::*;
use cryptoki_sys::*;
use sha2::Digest;

const MSG: &[u8] = b"the operation lifecycle, as PKCS#11 3.0 says";
const AES_KEY: [u8; 32] = [0x42; 32];
const IV: [u8; 16] = [0x24; 16];

/// The families that produce output (C_Verify takes a signature instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    Digest,
    Encrypt,
    Decrypt,
    Sign,
}

const PRODUCING: [Fam; 4] = [Fam::Digest, Fam::Encrypt, Fam::Decrypt, Fam::Sign];

/// How a producing call is given its output.
#[derive(Clone, Copy, Debug)]
enum Out {
    /// NULL buffer, valid length pointer: the length query.
    Query,
    /// NULL length pointer: `CKR_ARGUMENTS_BAD`.
    NullLen,
    /// A buffer of this many bytes.
    Buf(usize),
}

/// A token with an AES-256 key of known value and an EC P-256 pair.
struct Fx {
    t: Token,
    aes: CK_OBJECT_HANDLE,
    ec_private: CK_OBJECT_HANDLE,
    ec_public: CK_OBJECT_HANDLE,
    point: Vec<u8>,
}

impl Fx {
    fn new() -> Fx {
        let t = Token::fresh();
        let aes = import_aes(&t);
        let ec = t.keypair(Kp::Ec(OID_P256), "lifecycle");
        let point = t.ec_point(ec.public);
        Fx {
            aes,
            ec_private: ec.private.handle(),
            ec_public: ec.public.handle(),
            point,
            t,
        }
    }

    fn h(&self) -> CK_SESSION_HANDLE {
        self.t.h()
    }

    /// `C_*Init` of a family (CKM_SHA256, CKM_AES_CBC_PAD, CKM_ECDSA_SHA256).
    fn init(&self, f: Fam) -> CK_RV {
        let mut iv = IV;
        let mut m = CK_MECHANISM {
            mechanism: CKM_SHA256,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        if matches!(f, Fam::Encrypt | Fam::Decrypt) {
            m.mechanism = CKM_AES_CBC_PAD;
            m.pParameter = iv.as_mut_ptr().cast();
            m.ulParameterLen = 16;
        }
        if f == Fam::Sign {
            m.mechanism = CKM_ECDSA_SHA256;
        }
        let h = self.h();
        unsafe {
            match f {
                Fam::Digest => p11!(self.t.raw, C_DigestInit, h, &mut m),
                Fam::Encrypt => p11!(self.t.raw, C_EncryptInit, h, &mut m, self.aes),
                Fam::Decrypt => p11!(self.t.raw, C_DecryptInit, h, &mut m, self.aes),
                Fam::Sign => p11!(self.t.raw, C_SignInit, h, &mut m, self.ec_private),
            }
        }
    }

    #[track_caller]
    fn init_ok(&self, f: Fam) {
        check(self.init(f), CKR_OK, &format!("{f:?} init"));
    }

    /// The input a family takes in this fixture: MSG, or its ciphertext for decrypt.
    fn input(&self, f: Fam) -> Vec<u8> {
        if f == Fam::Decrypt {
            cbc_encrypt(MSG)
        } else {
            MSG.to_vec()
        }
    }

    /// The single-part call (`C_Digest`, `C_Encrypt`, `C_Decrypt`, `C_Sign`).
    fn single(&self, f: Fam, data: &[u8], out: Out) -> (CK_RV, Vec<u8>, CK_ULONG) {
        let mut data = data.to_vec();
        let (d, dl) = (data.as_mut_ptr(), data.len() as CK_ULONG);
        self.produce(out, |o, ol| unsafe {
            match f {
                Fam::Digest => p11!(self.t.raw, C_Digest, self.h(), d, dl, o, ol),
                Fam::Encrypt => p11!(self.t.raw, C_Encrypt, self.h(), d, dl, o, ol),
                Fam::Decrypt => p11!(self.t.raw, C_Decrypt, self.h(), d, dl, o, ol),
                Fam::Sign => p11!(self.t.raw, C_Sign, self.h(), d, dl, o, ol),
            }
        })
    }

    /// `*Update` with `data`, or a NULL part of length 5 when `data` is None.
    /// Encrypt/decrypt updates get an output buffer large enough for anything.
    fn update(&self, f: Fam, data: Option<&[u8]>) -> (CK_RV, Vec<u8>) {
        let mut owned = data.map(<[u8]>::to_vec);
        let (d, dl) = match &mut owned {
            Some(v) => (v.as_mut_ptr(), v.len() as CK_ULONG),
            None => (ptr::null_mut(), 5),
        };
        let mut out = vec![0u8; 256];
        let mut ol = out.len() as CK_ULONG;
        let rv = unsafe {
            match f {
                Fam::Digest => p11!(self.t.raw, C_DigestUpdate, self.h(), d, dl),
                Fam::Sign => p11!(self.t.raw, C_SignUpdate, self.h(), d, dl),
                Fam::Encrypt => p11!(
                    self.t.raw,
                    C_EncryptUpdate,
                    self.h(),
                    d,
                    dl,
                    out.as_mut_ptr(),
                    &mut ol
                ),
                Fam::Decrypt => p11!(
                    self.t.raw,
                    C_DecryptUpdate,
                    self.h(),
                    d,
                    dl,
                    out.as_mut_ptr(),
                    &mut ol
                ),
            }
        };
        if matches!(f, Fam::Encrypt | Fam::Decrypt) && rv == CKR_OK {
            out.truncate(ol as usize);
        } else {
            out.clear();
        }
        (rv, out)
    }

    /// `*Final`.
    fn final_(&self, f: Fam, out: Out) -> (CK_RV, Vec<u8>, CK_ULONG) {
        self.produce(out, |o, ol| unsafe {
            match f {
                Fam::Digest => p11!(self.t.raw, C_DigestFinal, self.h(), o, ol),
                Fam::Encrypt => p11!(self.t.raw, C_EncryptFinal, self.h(), o, ol),
                Fam::Decrypt => p11!(self.t.raw, C_DecryptFinal, self.h(), o, ol),
                Fam::Sign => p11!(self.t.raw, C_SignFinal, self.h(), o, ol),
            }
        })
    }

    /// Run a producing call with the output argument `out`: the rv, the
    /// bytes written (on CKR_OK with a buffer) and the length reported.
    fn produce(
        &self,
        out: Out,
        call: impl FnOnce(*mut CK_BYTE, *mut CK_ULONG) -> CK_RV,
    ) -> (CK_RV, Vec<u8>, CK_ULONG) {
        let mut len: CK_ULONG = 0;
        match out {
            Out::Query => {
                let rv = call(ptr::null_mut(), &mut len);
                (rv, Vec::new(), len)
            }
            Out::NullLen => {
                let mut buf = [0u8; 512];
                let rv = call(buf.as_mut_ptr(), ptr::null_mut());
                (rv, Vec::new(), 0)
            }
            Out::Buf(n) => {
                let mut buf = vec![0u8; n];
                len = n as CK_ULONG;
                let rv = call(buf.as_mut_ptr(), &mut len);
                if rv == CKR_OK {
                    buf.truncate(len as usize);
                } else {
                    buf.clear();
                }
                (rv, buf, len)
            }
        }
    }

    /// `C_VerifyInit` with CKM_ECDSA_SHA256 on the public key.
    fn verify_init(&self) -> CK_RV {
        let mut m = CK_MECHANISM {
            mechanism: CKM_ECDSA_SHA256,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        unsafe { p11!(self.t.raw, C_VerifyInit, self.h(), &mut m, self.ec_public) }
    }

    /// `C_Verify`; a None signature is a NULL pointer of length 64.
    fn verify(&self, data: &[u8], sig: Option<&[u8]>) -> CK_RV {
        let mut data = data.to_vec();
        let mut sig = sig.map(<[u8]>::to_vec);
        let (s, sl) = match &mut sig {
            Some(v) => (v.as_mut_ptr(), v.len() as CK_ULONG),
            None => (ptr::null_mut(), 64),
        };
        unsafe {
            p11!(
                self.t.raw,
                C_Verify,
                self.h(),
                data.as_mut_ptr(),
                data.len() as CK_ULONG,
                s,
                sl
            )
        }
    }

    /// `C_VerifyUpdate`; None is a NULL part of length 5.
    fn verify_update(&self, data: Option<&[u8]>) -> CK_RV {
        let mut owned = data.map(<[u8]>::to_vec);
        let (d, dl) = match &mut owned {
            Some(v) => (v.as_mut_ptr(), v.len() as CK_ULONG),
            None => (ptr::null_mut(), 5),
        };
        unsafe { p11!(self.t.raw, C_VerifyUpdate, self.h(), d, dl) }
    }

    /// `C_VerifyFinal`; None is a NULL signature of length 64.
    fn verify_final(&self, sig: Option<&[u8]>) -> CK_RV {
        let mut sig = sig.map(<[u8]>::to_vec);
        let (s, sl) = match &mut sig {
            Some(v) => (v.as_mut_ptr(), v.len() as CK_ULONG),
            None => (ptr::null_mut(), 64),
        };
        unsafe { p11!(self.t.raw, C_VerifyFinal, self.h(), s, sl) }
    }

    /// A signature over MSG made by the token and checked by `p256`.
    fn signature(&self) -> Vec<u8> {
        self.init_ok(Fam::Sign);
        let (rv, sig, _) = self.single(Fam::Sign, MSG, Out::Buf(64));
        check(rv, CKR_OK, "C_Sign");
        self.assert_output(Fam::Sign, &sig);
        sig
    }

    /// Check a family's complete output over MSG with an independent implementation.
    #[track_caller]
    fn assert_output(&self, f: Fam, out: &[u8]) {
        match f {
            Fam::Digest => assert_eq!(out, sha2::Sha256::digest(MSG).as_slice(), "SHA-256 of MSG"),
            Fam::Encrypt => assert_eq!(out, cbc_encrypt(MSG), "AES-256-CBC-PAD of MSG"),
            Fam::Decrypt => assert_eq!(out, MSG, "decryption of MSG's ciphertext"),
            Fam::Sign => {
                verify_ecdsa_prehash(OID_P256, &self.point, &sha2::Sha256::digest(MSG), out)
                    .expect("ECDSA P-256 signature over MSG, checked by p256")
            }
        }
    }

    /// The operation of `f` is no longer active: the next single-part and
    /// final calls answer CKR_OPERATION_NOT_INITIALIZED, and a new init succeeds.
    #[track_caller]
    fn assert_ended(&self, f: Fam, after: &str) {
        let input = self.input(f);
        check(
            self.single(f, &input, Out::Buf(512)).0,
            CKR_OPERATION_NOT_INITIALIZED,
            &format!("{f:?} single-part call after {after}"),
        );
        check(
            self.final_(f, Out::Buf(512)).0,
            CKR_OPERATION_NOT_INITIALIZED,
            &format!("{f:?} final after {after}"),
        );
        check(self.init(f), CKR_OK, &format!("{f:?} init after {after}"));
        // Leave the family idle for the next step of the test.
        let (rv, out, _) = self.single(f, &input, Out::Buf(512));
        check(
            rv,
            CKR_OK,
            &format!("{f:?} single-part call after the new init"),
        );
        self.assert_output(f, &out);
    }

    /// The verify operation is no longer active.
    #[track_caller]
    fn assert_verify_ended(&self, sig: &[u8], after: &str) {
        check(
            self.verify(MSG, Some(sig)),
            CKR_OPERATION_NOT_INITIALIZED,
            &format!("C_Verify after {after}"),
        );
        check(
            self.verify_final(Some(sig)),
            CKR_OPERATION_NOT_INITIALIZED,
            &format!("C_VerifyFinal after {after}"),
        );
        check(
            self.verify_init(),
            CKR_OK,
            &format!("C_VerifyInit after {after}"),
        );
        check(
            self.verify(MSG, Some(sig)),
            CKR_OK,
            "C_Verify after the new init",
        );
    }
}

/// AES-256-CBC-PAD of `data` under the fixture key, by the `cbc` crate.
fn cbc_encrypt(data: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<aes::Aes256>::new(&AES_KEY.into(), &IV.into())
        .encrypt_padded_vec_mut::<Pkcs7>(data)
}

/// Import the fixture's AES key (known value) as a session key.
fn import_aes(t: &Token) -> CK_OBJECT_HANDLE {
    let (class, kt, yes, no) = (CKO_SECRET_KEY, CKK_AES, CK_TRUE, CK_FALSE);
    let mut value = AES_KEY;
    let attr = |ty, p: *const std::ffi::c_void, n: usize| CK_ATTRIBUTE {
        type_: ty,
        pValue: p as *mut _,
        ulValueLen: n as CK_ULONG,
    };
    let mut tpl = [
        attr(
            CKA_CLASS,
            (&class as *const CK_ULONG).cast(),
            std::mem::size_of::<CK_ULONG>(),
        ),
        attr(
            CKA_KEY_TYPE,
            (&kt as *const CK_ULONG).cast(),
            std::mem::size_of::<CK_ULONG>(),
        ),
        attr(CKA_TOKEN, (&no as *const CK_BBOOL).cast(), 1),
        attr(CKA_ENCRYPT, (&yes as *const CK_BBOOL).cast(), 1),
        attr(CKA_DECRYPT, (&yes as *const CK_BBOOL).cast(), 1),
        attr(CKA_VALUE, value.as_mut_ptr().cast(), value.len()),
    ];
    let mut h: CK_OBJECT_HANDLE = 0;
    let rv = unsafe {
        p11!(
            t.raw,
            C_CreateObject,
            t.h(),
            tpl.as_mut_ptr(),
            tpl.len() as CK_ULONG,
            &mut h
        )
    };
    check(rv, CKR_OK, "C_CreateObject(AES-256 session key)");
    // The imported key really is AES_KEY: decrypt an independent ciphertext.
    let ct = cbc_encrypt(b"known key");
    let pt = cbc::Decryptor::<aes::Aes256>::new(&AES_KEY.into(), &IV.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ct)
        .expect("cbc round trip");
    assert_eq!(pt, b"known key");
    h
}

p11_test! {
    fn error_ends_a_single_part_operation() {
        let fx = Fx::new();
        for f in PRODUCING {
            fx.init_ok(f);
            check(fx.single(f, &fx.input(f), Out::NullLen).0, CKR_ARGUMENTS_BAD, &format!("{f:?} single-part call with NULL pulLen"));
            fx.assert_ended(f, "an error in the single-part call");
        }
        let sig = fx.signature();
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify(MSG, None), CKR_ARGUMENTS_BAD, "C_Verify with a NULL signature");
        fx.assert_verify_ended(&sig, "an error in C_Verify");
    }
}

p11_test! {
    fn error_in_update_ends_the_operation() {
        let fx = Fx::new();
        for f in PRODUCING {
            fx.init_ok(f);
            check(fx.update(f, None).0, CKR_ARGUMENTS_BAD, &format!("{f:?} update with a NULL part"));
            check(fx.update(f, Some(b"more")).0, CKR_OPERATION_NOT_INITIALIZED, &format!("{f:?} update after the error"));
            fx.assert_ended(f, "an error in update");
        }
        let sig = fx.signature();
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify_update(None), CKR_ARGUMENTS_BAD, "C_VerifyUpdate with a NULL part");
        check(fx.verify_update(Some(MSG)), CKR_OPERATION_NOT_INITIALIZED, "C_VerifyUpdate after the error");
        fx.assert_verify_ended(&sig, "an error in C_VerifyUpdate");
    }
}

p11_test! {
    fn error_in_final_ends_the_operation() {
        let fx = Fx::new();
        for f in PRODUCING {
            fx.init_ok(f);
            check(fx.update(f, Some(&fx.input(f))).0, CKR_OK, &format!("{f:?} update"));
            check(fx.final_(f, Out::NullLen).0, CKR_ARGUMENTS_BAD, &format!("{f:?} final with NULL pulLen"));
            fx.assert_ended(f, "an error in final");
        }
        let sig = fx.signature();
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify_update(Some(MSG)), CKR_OK, "C_VerifyUpdate");
        check(fx.verify_final(None), CKR_ARGUMENTS_BAD, "C_VerifyFinal with a NULL signature");
        fx.assert_verify_ended(&sig, "an error in C_VerifyFinal");
    }
}

p11_test! {
    fn failed_computation_ends_the_operation() {
        let fx = Fx::new();
        let sig = fx.signature();
        let mut bad = sig.clone();
        bad[10] ^= 1;
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify(MSG, Some(&bad)), CKR_SIGNATURE_INVALID, "C_Verify with a damaged signature");
        fx.assert_verify_ended(&sig, "CKR_SIGNATURE_INVALID");
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify(MSG, Some(&sig[..63])), CKR_SIGNATURE_LEN_RANGE, "C_Verify with a short signature");
        fx.assert_verify_ended(&sig, "CKR_SIGNATURE_LEN_RANGE");
        fx.init_ok(Fam::Decrypt);
        let ct = cbc_encrypt(MSG);
        check(fx.single(Fam::Decrypt, &ct[..ct.len() - 1], Out::Buf(512)).0, CKR_ENCRYPTED_DATA_LEN_RANGE, "C_Decrypt of a ciphertext one byte short");
        fx.assert_ended(Fam::Decrypt, "CKR_ENCRYPTED_DATA_LEN_RANGE");
    }
}

p11_test! {
    fn buffer_too_small_keeps_the_operation() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            let (rv, _, need) = fx.single(f, &input, Out::Buf(1));
            check(rv, CKR_BUFFER_TOO_SMALL, &format!("{f:?} single-part call into 1 byte"));
            assert!(need as usize > 1, "{f:?}: a short buffer reports the length needed, got {need}");
            let (rv, out, _) = fx.single(f, &input, Out::Buf(need as usize));
            check(rv, CKR_OK, &format!("{f:?} single-part call after CKR_BUFFER_TOO_SMALL"));
            fx.assert_output(f, &out);

            fx.init_ok(f);
            let (rv, head) = fx.update(f, Some(&input));
            check(rv, CKR_OK, &format!("{f:?} update"));
            let (rv, _, need) = fx.final_(f, Out::Buf(1));
            check(rv, CKR_BUFFER_TOO_SMALL, &format!("{f:?} final into 1 byte"));
            assert!(need as usize > 1, "{f:?}: a short buffer reports the length needed, got {need}");
            let (rv, tail, _) = fx.final_(f, Out::Buf(need as usize));
            check(rv, CKR_OK, &format!("{f:?} final after CKR_BUFFER_TOO_SMALL"));
            fx.assert_output(f, &[head, tail].concat());
        }
    }
}

p11_test! {
    fn length_query_keeps_the_operation() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            let (rv, _, need) = fx.single(f, &input, Out::Query);
            check(rv, CKR_OK, &format!("{f:?} single-part length query"));
            let (rv, out, _) = fx.single(f, &input, Out::Buf(need as usize));
            check(rv, CKR_OK, &format!("{f:?} single-part call after the length query"));
            assert!(out.len() <= need as usize, "{f:?}: output fits the length the query gave");
            fx.assert_output(f, &out);

            fx.init_ok(f);
            let (rv, head) = fx.update(f, Some(&input));
            check(rv, CKR_OK, &format!("{f:?} update"));
            let (rv, _, need) = fx.final_(f, Out::Query);
            check(rv, CKR_OK, &format!("{f:?} final length query"));
            let (rv, tail, _) = fx.final_(f, Out::Buf(need as usize));
            check(rv, CKR_OK, &format!("{f:?} final after the length query"));
            fx.assert_output(f, &[head, tail].concat());
        }
    }
}

p11_test! {
    fn success_ends_the_operation() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            let (rv, out, _) = fx.single(f, &input, Out::Buf(512));
            check(rv, CKR_OK, &format!("{f:?} single-part call"));
            fx.assert_output(f, &out);
            check(fx.single(f, &input, Out::Buf(512)).0, CKR_OPERATION_NOT_INITIALIZED, &format!("{f:?} second single-part call"));
            check(fx.update(f, Some(&input)).0, CKR_OPERATION_NOT_INITIALIZED, &format!("{f:?} update after the single-part call"));

            fx.init_ok(f);
            let (rv, head) = fx.update(f, Some(&input));
            check(rv, CKR_OK, &format!("{f:?} update"));
            let (rv, tail, _) = fx.final_(f, Out::Buf(512));
            check(rv, CKR_OK, &format!("{f:?} final"));
            fx.assert_output(f, &[head, tail].concat());
            check(fx.final_(f, Out::Buf(512)).0, CKR_OPERATION_NOT_INITIALIZED, &format!("{f:?} second final"));
        }
        let sig = fx.signature();
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify(MSG, Some(&sig)), CKR_OK, "C_Verify");
        check(fx.verify(MSG, Some(&sig)), CKR_OPERATION_NOT_INITIALIZED, "second C_Verify");
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify_update(Some(MSG)), CKR_OK, "C_VerifyUpdate");
        check(fx.verify_final(Some(&sig)), CKR_OK, "C_VerifyFinal");
        check(fx.verify_final(Some(&sig)), CKR_OPERATION_NOT_INITIALIZED, "second C_VerifyFinal");
    }
}

p11_test! {
    fn update_after_single_part_length_query_is_operation_active() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            check(fx.single(f, &input, Out::Query).0, CKR_OK, &format!("{f:?} single-part length query"));
            check(fx.update(f, Some(&input)).0, CKR_OPERATION_ACTIVE, &format!("{f:?} update after a single-part length query"));
            // CKR_OPERATION_ACTIVE is an error: it ends the operation too.
            fx.assert_ended(f, "update after a single-part length query");
        }
    }
}

p11_test! {
    fn final_after_single_part_length_query_is_operation_active() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            check(fx.single(f, &input, Out::Query).0, CKR_OK, &format!("{f:?} single-part length query"));
            // Before the fix C_DigestFinal answered the SHA-256 of nothing here.
            check(fx.final_(f, Out::Buf(512)).0, CKR_OPERATION_ACTIVE, &format!("{f:?} final after a single-part length query"));
            fx.assert_ended(f, "final after a single-part length query");
        }
    }
}

p11_test! {
    fn final_after_single_part_short_buffer_is_operation_active() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            check(fx.single(f, &input, Out::Buf(1)).0, CKR_BUFFER_TOO_SMALL, &format!("{f:?} single-part call into 1 byte"));
            check(fx.final_(f, Out::Buf(512)).0, CKR_OPERATION_ACTIVE, &format!("{f:?} final after a single-part short buffer"));
            fx.assert_ended(f, "final after a single-part short buffer");
        }
    }
}

p11_test! {
    fn single_part_after_update_is_operation_active() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            check(fx.update(f, Some(&input[..16])).0, CKR_OK, &format!("{f:?} update"));
            check(fx.single(f, &input, Out::Buf(512)).0, CKR_OPERATION_ACTIVE, &format!("{f:?} single-part call after update"));
            fx.assert_ended(f, "a single-part call after update");
        }
        let sig = fx.signature();
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify_update(Some(MSG)), CKR_OK, "C_VerifyUpdate");
        check(fx.verify(MSG, Some(&sig)), CKR_OPERATION_ACTIVE, "C_Verify after C_VerifyUpdate");
        fx.assert_verify_ended(&sig, "C_Verify after C_VerifyUpdate");
    }
}

p11_test! {
    fn single_part_after_final_length_query_is_operation_active() {
        let fx = Fx::new();
        // Decrypt is left out: a CBC-PAD decryption of nothing has no length
        // (CKR_ENCRYPTED_DATA_LEN_RANGE), so its final cannot be queried here.
        for f in [Fam::Digest, Fam::Encrypt, Fam::Sign] {
            let input = fx.input(f);
            fx.init_ok(f);
            // No update: the final length query alone commits to multi-part.
            check(fx.final_(f, Out::Query).0, CKR_OK, &format!("{f:?} final length query"));
            check(fx.single(f, &input, Out::Buf(512)).0, CKR_OPERATION_ACTIVE, &format!("{f:?} single-part call after a final length query"));
            fx.assert_ended(f, "a single-part call after a final length query");
        }
    }
}

p11_test! {
    fn init_while_active_is_operation_active_and_keeps_it() {
        let fx = Fx::new();
        for f in PRODUCING {
            let input = fx.input(f);
            fx.init_ok(f);
            check(fx.init(f), CKR_OPERATION_ACTIVE, &format!("second {f:?} init"));
            let (rv, out, _) = fx.single(f, &input, Out::Buf(512));
            check(rv, CKR_OK, &format!("{f:?} single-part call after the refused init"));
            fx.assert_output(f, &out);
        }
        let sig = fx.signature();
        check(fx.verify_init(), CKR_OK, "C_VerifyInit");
        check(fx.verify_init(), CKR_OPERATION_ACTIVE, "second C_VerifyInit");
        check(fx.verify(MSG, Some(&sig)), CKR_OK, "C_Verify after the refused init");
    }
}

p11_test! {
    fn families_are_independent() {
        let fx = Fx::new();
        for f in PRODUCING {
            fx.init_ok(f);
        }
        check(fx.single(Fam::Digest, MSG, Out::NullLen).0, CKR_ARGUMENTS_BAD, "C_Digest with NULL pulLen");
        for f in [Fam::Encrypt, Fam::Decrypt, Fam::Sign] {
            let (rv, out, _) = fx.single(f, &fx.input(f), Out::Buf(512));
            check(rv, CKR_OK, &format!("{f:?} after an error in the digest operation"));
            fx.assert_output(f, &out);
        }
    }
}
