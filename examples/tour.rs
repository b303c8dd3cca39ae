//! A tour of softmhsm through the C ABI, the way a PKCS#11 application sees it.
//!
//! `cargo run --release --example tour` loads the freshly built
//! `libsoftmhsm.so` with the `cryptoki` crate, on the zero-config default store
//! (`$SOFTMHSM_DIR`, else `$XDG_DATA_HOME/softmhsm`, else
//! `~/.local/share/softmhsm`). An uninitialised token there is initialised as
//! `tour` with demo PINs; a token the tour made before is reused (its keys gain
//! new versions: run it twice to see Managed HSM versioning); any other token
//! is left alone. `--temp` uses a throwaway directory instead.
//!
//! It generates one key of every Managed HSM type, signs with each through
//! `C_Sign`, verifies through `C_Verify`, and checks every signature again with
//! an independent implementation (the RustCrypto crates) from the public key
//! the token exports.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use sha2::Digest;
use std::error::Error;
use std::path::PathBuf;

type Res<T> = Result<T, Box<dyn Error>>;

const SO_PIN: &str = "tour-so-pin";
const USER_PIN: &str = "tour-pin";
const LABEL: &str = "tour";

fn main() -> Res<()> {
    let temp = std::env::args().any(|a| a == "--temp");
    let _tempdir = if temp {
        let d = tempfile::tempdir()?;
        std::env::set_var("SOFTMHSM_DIR", d.path());
        Some(d)
    } else {
        None
    };
    let store = softmhsm::config::default_dir().ok_or("no HOME to put the default store in")?;
    let module = module_path()?;
    println!("softmhsm tour");
    println!("  module : {}", module.display());
    println!("  store  : {}", store.display());

    let p11 = Pkcs11::new(&module)?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let info = p11.get_library_info()?;
    println!(
        "1. C_Initialize: {} {} (Cryptoki {}.{})",
        info.manufacturer_id(),
        info.library_description(),
        info.cryptoki_version().major(),
        info.cryptoki_version().minor()
    );

    let slot = *p11.get_all_slots()?.first().ok_or("no slot")?;
    let token = p11.get_token_info(slot)?;
    if !token.token_initialized() {
        p11.init_token(slot, &AuthPin::new(SO_PIN.into()), LABEL)?;
        let s = p11.open_rw_session(slot)?;
        s.login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))?;
        s.init_pin(&AuthPin::new(USER_PIN.into()))?;
        s.logout()?;
        println!("2. C_InitToken + C_InitPIN: token '{LABEL}' initialised (SO PIN {SO_PIN:?}, user PIN {USER_PIN:?})");
    } else if token.label() == LABEL {
        println!("2. token '{LABEL}' found from an earlier tour: reusing it");
    } else {
        return Err(format!(
            "the default store holds token '{}', not the tour's: run with --temp or point SOFTMHSM_DIR at an empty directory",
            token.label()
        )
        .into());
    }

    let session = p11.open_rw_session(slot)?;
    session.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))?;
    println!("3. C_OpenSession + C_Login as user");

    println!("4. C_GenerateKeyPair / C_GenerateKey, C_Sign, C_Verify, independent check:");
    let message = b"softmhsm: a Managed HSM pool on this machine";
    for (name, bits) in [
        ("tour-rsa-2048", 2048u64),
        ("tour-rsa-3072", 3072),
        ("tour-rsa-4096", 4096),
    ] {
        let made = session.generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Label(name.into()),
                Attribute::ModulusBits(bits.into()),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Label(name.into()),
                Attribute::Sign(true),
            ],
        );
        let (public, private) = pair_or_current(&session, made, name)?;
        let sig = session.sign(&Mechanism::Sha256RsaPkcs, private, message)?;
        session.verify(&Mechanism::Sha256RsaPkcs, public, message, &sig)?;
        let (n, e) = rsa_public(&session, public)?;
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from_bytes_be(&e),
        )?;
        key.verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(message),
            &sig,
        )?;
        report(&session, private, name, "RS256", sig.len())?;
    }

    for (name, oid, curve) in [
        ("tour-p256", OID_P256, "P-256"),
        ("tour-p256k", OID_SECP256K1, "P-256K"),
        ("tour-p384", OID_P384, "P-384"),
        ("tour-p521", OID_P521, "P-521"),
    ] {
        let made = session.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Label(name.into()),
                Attribute::EcParams(oid.to_vec()),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Label(name.into()),
                Attribute::Sign(true),
            ],
        );
        let (public, private) = pair_or_current(&session, made, name)?;
        // CKM_ECDSA signs a digest; the Managed HSM pairs each curve with one hash.
        let digest = match curve {
            "P-384" => sha2::Sha384::digest(message).to_vec(),
            "P-521" => sha2::Sha512::digest(message).to_vec(),
            _ => sha2::Sha256::digest(message).to_vec(),
        };
        let sig = session.sign(&Mechanism::Ecdsa, private, &digest)?;
        session.verify(&Mechanism::Ecdsa, public, &digest, &sig)?;
        let point = ec_point(&session, public)?;
        verify_ecdsa(curve, &point, &digest, &sig)?;
        let alg = match curve {
            "P-256" => "ES256",
            "P-256K" => "ES256K",
            "P-384" => "ES384",
            _ => "ES512",
        };
        report(&session, private, name, alg, sig.len())?;
    }

    for (name, len) in [
        ("tour-aes-128", 16u64),
        ("tour-aes-192", 24),
        ("tour-aes-256", 32),
    ] {
        let made = session.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(name.into()),
                Attribute::ValueLen(len.into()),
            ],
        );
        let key = match at_cap(made, name)? {
            Some(k) => k,
            None => current(&session, name, ObjectClass::SECRET_KEY)?,
        };
        let sensitive = session
            .get_attributes(key, &[AttributeType::Value])
            .unwrap_or_default();
        println!(
            "   {name:<14} oct-HSM {:>4} bits  version {}  value readable: {}",
            len * 8,
            vendor_string(&session, key, CKA_SOFTMHSM_VERSION)?,
            !sensitive.is_empty()
        );
    }

    let found = session.find_objects(&[Attribute::Label(b"tour-p256".to_vec())])?;
    println!(
        "5. C_FindObjects by label 'tour-p256': {} objects (the current version's private and public key)",
        found.len()
    );
    session.logout()?;
    drop(session);
    p11.finalize()?;
    println!(
        "6. C_Logout, C_Finalize: done. Every signature verified by the token and by RustCrypto."
    );
    Ok(())
}

/// The `libsoftmhsm.so` cargo built together with this example: building an
/// example leaves the library in `target/<profile>/deps/` (only `cargo build`
/// copies it up to `target/<profile>/`, and that copy may be from another build).
fn module_path() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("SOFTMHSM_MODULE") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or("unexpected binary location")?;
    let built_with_us = dir.join("deps").join("libsoftmhsm.so");
    Ok(if built_with_us.exists() {
        built_with_us
    } else {
        dir.join("libsoftmhsm.so")
    })
}

const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
const CKA_SOFTMHSM_VERSION: u64 = 0x8000_0000 | 0x534D_0000 | 0x02;
const CKA_SOFTMHSM_KID: u64 = 0x8000_0000 | 0x534D_0000 | 0x03;

/// The Managed HSM caps a key at 100 versions: a store the tour has run on
/// 100 times refuses a 101st (`CKR_ACTION_PROHIBITED`); the tour then goes on
/// with the current version.
fn at_cap<T>(made: cryptoki::error::Result<T>, name: &str) -> Res<Option<T>> {
    match made {
        Ok(t) => Ok(Some(t)),
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::ActionProhibited, _)) => {
            println!(
                "   {name}: 100 versions already (the Managed HSM's cap); using the current one"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The current version's object of `class` under `name`.
fn current(s: &Session, name: &str, class: ObjectClass) -> Res<ObjectHandle> {
    let found = s.find_objects(&[Attribute::Class(class), Attribute::Label(name.into())])?;
    found
        .first()
        .copied()
        .ok_or_else(|| format!("{name}: no current version").into())
}

/// A new key pair, or the current one at the version cap.
fn pair_or_current(
    s: &Session,
    made: cryptoki::error::Result<(ObjectHandle, ObjectHandle)>,
    name: &str,
) -> Res<(ObjectHandle, ObjectHandle)> {
    Ok(match at_cap(made, name)? {
        Some(pair) => pair,
        None => (
            current(s, name, ObjectClass::PUBLIC_KEY)?,
            current(s, name, ObjectClass::PRIVATE_KEY)?,
        ),
    })
}

fn report(s: &Session, private: ObjectHandle, name: &str, alg: &str, sig_len: usize) -> Res<()> {
    println!(
        "   {name:<14} {alg:<7} {sig_len:>3}-byte signature verified; kid {}",
        vendor_string(s, private, CKA_SOFTMHSM_KID)?
    );
    Ok(())
}

fn vendor_string(s: &Session, h: ObjectHandle, ty: u64) -> Res<String> {
    let attrs = s.get_attributes(h, &[AttributeType::VendorDefined(ty)])?;
    match attrs.first() {
        Some(Attribute::VendorDefined((_, v))) => Ok(String::from_utf8_lossy(v).into_owned()),
        _ => Err("vendor attribute missing".into()),
    }
}

fn rsa_public(s: &Session, h: ObjectHandle) -> Res<(Vec<u8>, Vec<u8>)> {
    let attrs = s.get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])?;
    let (mut n, mut e) = (None, None);
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    Ok((n.ok_or("no modulus")?, e.ok_or("no exponent")?))
}

/// The uncompressed point inside the DER OCTET STRING of `CKA_EC_POINT`.
fn ec_point(s: &Session, h: ObjectHandle) -> Res<Vec<u8>> {
    let attrs = s.get_attributes(h, &[AttributeType::EcPoint])?;
    let Some(Attribute::EcPoint(der)) = attrs.into_iter().next() else {
        return Err("no EC point".into());
    };
    let body = match der.get(1) {
        Some(l) if *l < 0x80 => &der[2..],
        Some(0x81) => &der[3..],
        _ => return Err("unexpected EC point encoding".into()),
    };
    Ok(body.to_vec())
}

fn verify_ecdsa(curve: &str, point: &[u8], digest: &[u8], sig: &[u8]) -> Res<()> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    match curve {
        "P-256" => p256::ecdsa::VerifyingKey::from_sec1_bytes(point)?
            .verify_prehash(digest, &p256::ecdsa::Signature::from_slice(sig)?)?,
        "P-256K" => {
            let sig = k256::ecdsa::Signature::from_slice(sig)?;
            let sig = sig.normalize_s().unwrap_or(sig);
            k256::ecdsa::VerifyingKey::from_sec1_bytes(point)?.verify_prehash(digest, &sig)?
        }
        "P-384" => p384::ecdsa::VerifyingKey::from_sec1_bytes(point)?
            .verify_prehash(digest, &p384::ecdsa::Signature::from_slice(sig)?)?,
        _ => p521::ecdsa::VerifyingKey::from_sec1_bytes(point)?
            .verify_prehash(digest, &p521::ecdsa::Signature::from_slice(sig)?)?,
    }
    Ok(())
}
