//! Loading a PKCS#11 module, giving it a fresh token, and the keys the cases share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::failure::{During, Failure};

/// Label given to every benchmark token.
const TOKEN_LABEL: &str = "bench";
const SO_PIN: &str = "12345678";
const USER_PIN: &str = "1234";

/// Which configuration convention a module follows; decides the environment it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SoftHSMv2: `SOFTHSM2_CONF` names a config file with the token directory.
    SoftHsm2,
    /// softmhsm: `SOFTMHSM_DIR` is the token's directory.
    SoftMhsm,
    /// Anything else runs with whatever configuration it finds on its own.
    Other,
}

/// A module named on the command line, before it is loaded.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Short name for the table (`softhsm2`, `softmhsm`).
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
}

impl Spec {
    /// Derives the short name from the file name: `/usr/lib/softhsm/libsofthsm2.so` → `softhsm2`.
    pub fn from_path(path: &Path) -> Spec {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        let stem = file.split('.').next().unwrap_or(&file);
        let name = stem.strip_prefix("lib").unwrap_or(stem).to_string();
        let kind = match name.as_str() {
            n if n.starts_with("softmhsm") => Kind::SoftMhsm,
            n if n.starts_with("softhsm") => Kind::SoftHsm2,
            _ => Kind::Other,
        };
        Spec {
            name,
            path: path.to_path_buf(),
            kind,
        }
    }
}

/// Creates each module's token directory under `root` and sets the environment
/// variables the modules read in `C_Initialize`.
///
/// Environment variables are process-wide, so they are all set here, before any
/// module is initialised and before any thread exists; two modules of one kind
/// would read the same variable, so that is refused — except for several
/// softmhsm builds (an old and a new one, compared in one run): they share a
/// `SOFTMHSM_CONF` listing one token per module, and each module, opened in
/// command-line order, initialises the first token no earlier one took.
pub fn prepare_environment(specs: &[Spec], root: &Path, url: Option<&str>) -> Result<(), String> {
    let softmhsm: Vec<&Spec> = specs.iter().filter(|s| s.kind == Kind::SoftMhsm).collect();
    if url.is_some() && softmhsm.len() < 2 {
        return Err("--store-url needs two softmhsm modules (SQLite, then PostgreSQL)".into());
    }
    if softmhsm.len() > 1 {
        let mut conf = String::new();
        for (i, spec) in softmhsm.iter().enumerate() {
            let dir = root.join(&spec.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            conf.push_str(&format!(
                "[[token]]\npath = {:?}\n",
                dir.display().to_string()
            ));
            // Each module takes the first token no module has initialised, in
            // order: the last one gets the PostgreSQL pool.
            if let Some(url) = url.filter(|_| i == softmhsm.len() - 1) {
                conf.push_str(&format!("url = {url:?}\n"));
            }
        }
        let path = root.join("softmhsm.toml");
        std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
        std::env::set_var("SOFTMHSM_CONF", &path);
        std::env::set_var("SOFTMHSM_KDF_ITERATIONS", "1000");
    }
    for (i, spec) in specs.iter().enumerate() {
        if spec.kind == Kind::SoftMhsm && softmhsm.len() > 1 {
            let twice = specs[..i].iter().any(|s| s.name == spec.name);
            if twice {
                return Err(format!(
                    "{}: two softmhsm modules need distinct file names",
                    spec.path.display()
                ));
            }
            continue;
        }
        if spec.kind != Kind::Other && specs[..i].iter().any(|s| s.kind == spec.kind) {
            return Err(format!(
                "{} and an earlier module read the same environment variables; \
                 load one module of each kind",
                spec.path.display()
            ));
        }
        let dir = root.join(&spec.name);
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::create_dir_all(&dir).map_err(io)?;
        match spec.kind {
            Kind::SoftHsm2 => {
                let tokens = dir.join("tokens");
                std::fs::create_dir_all(&tokens).map_err(io)?;
                let conf = dir.join("softhsm2.conf");
                let text = format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokens.display()
                );
                std::fs::write(&conf, text).map_err(io)?;
                std::env::set_var("SOFTHSM2_CONF", &conf);
            }
            Kind::SoftMhsm => {
                std::env::set_var("SOFTMHSM_DIR", &dir);
                // The default PIN KDF cost (600,000 rounds) would dominate the login case.
                std::env::set_var("SOFTMHSM_KDF_ITERATIONS", "1000");
            }
            Kind::Other => {}
        }
    }
    Ok(())
}

/// Elliptic curves the cases use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
    Secp256k1,
}

impl Curve {
    /// `CKA_EC_PARAMS`: the DER-encoded named-curve OID.
    pub fn params(self) -> Vec<u8> {
        match self {
            Curve::P256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
            Curve::Secp256k1 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
        }
    }

    /// Length of the digest `CKM_ECDSA` signs on this curve (the curve's JWA hash).
    pub fn digest_len(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 64,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::P384 => "p384",
            Curve::P521 => "p521",
            Curve::Secp256k1 => "secp256k1",
        }
    }
}

/// A key the cases share; created once per module on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    Rsa(u64),
    Ec(Curve),
    Aes256,
    /// An AES-256 key that may leave the token wrapped (`CKA_EXTRACTABLE=TRUE`).
    Aes256Extractable,
}

/// Handles of a key; for a secret key both are the same object.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub private: ObjectHandle,
    pub public: ObjectHandle,
}

/// One loaded module with its logged-in token.
pub struct Module {
    pub spec: Spec,
    /// Library description and version, as `C_GetInfo` reports them.
    pub library: String,
    pub ctx: Pkcs11,
    pub slot: Slot,
    /// Keeps the user logged in (login state is per application, not per session)
    /// and serves key setup.
    session: Option<Session>,
    keys: HashMap<KeySpec, Key>,
    /// How many `fill-NNNNN` keys the token holds.
    pub filled: usize,
    /// Facts worth printing under the table (how long filling the token took).
    pub notes: Vec<String>,
    labels: AtomicU64,
}

impl Module {
    /// Loads the module, initialises a fresh token, sets the user PIN and logs in.
    pub fn open(spec: &Spec) -> Result<Module, Failure> {
        let ctx = Pkcs11::new(&spec.path).during("loading the library")?;
        ctx.initialize(init_args()).during("C_Initialize")?;
        let info = ctx.get_library_info().during("C_GetInfo")?;
        let library = format!(
            "{}, version {}, {}",
            info.library_description().trim(),
            info.library_version(),
            info.manufacturer_id().trim()
        );

        let slots = ctx.get_slots_with_token().during("C_GetSlotList")?;
        let mut fresh = None;
        for &slot in &slots {
            let token = ctx.get_token_info(slot).during("C_GetTokenInfo")?;
            if !token.token_initialized() {
                fresh = Some(slot);
                break;
            }
        }
        let slot = fresh
            .or_else(|| slots.first().copied())
            .ok_or_else(|| Failure::new("no slot", "C_GetSlotList"))?;
        let so_pin = AuthPin::from(SO_PIN);
        let user_pin = AuthPin::from(USER_PIN);
        ctx.init_token(slot, &so_pin, TOKEN_LABEL)
            .during("C_InitToken")?;
        // SoftHSMv2 moves an initialised token to a new slot id: look it up by
        // label. softmhsm keeps it (and several softmhsm modules of one run
        // each initialise a token of the same label: see `prepare_environment`).
        let slot = match spec.kind {
            Kind::SoftMhsm => slot,
            _ => find_slot(&ctx)?,
        };

        let session = ctx.open_rw_session(slot).during("C_OpenSession")?;
        session
            .login(UserType::So, Some(&so_pin))
            .during("C_Login (SO)")?;
        session.init_pin(&user_pin).during("C_InitPIN")?;
        session.logout().during("C_Logout (SO)")?;
        session
            .login(UserType::User, Some(&user_pin))
            .during("C_Login (user)")?;

        Ok(Module {
            spec: spec.clone(),
            library,
            ctx,
            slot,
            session: Some(session),
            keys: HashMap::new(),
            filled: 0,
            notes: Vec::new(),
            labels: AtomicU64::new(0),
        })
    }

    /// The short name used in the table.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The logged-in setup session.
    pub fn session(&self) -> Result<&Session, Failure> {
        self.session
            .as_ref()
            .ok_or_else(|| Failure::new("no session", "setup session"))
    }

    /// A label no other key of this run has: softmhsm treats a repeated label
    /// on a token key as a new version of the same key, SoftHSMv2 as a new key.
    pub fn unique_label(&self, prefix: &str) -> String {
        let n = self.labels.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{n}")
    }

    /// The shared key for `spec`, generated as a token object on first use.
    pub fn key(&mut self, spec: KeySpec) -> Result<Key, Failure> {
        if let Some(key) = self.keys.get(&spec) {
            return Ok(*key);
        }
        let label = match spec {
            KeySpec::Rsa(bits) => format!("bench-rsa-{bits}"),
            KeySpec::Ec(curve) => format!("bench-ec-{}", curve.label()),
            KeySpec::Aes256 => "bench-aes-256".to_string(),
            KeySpec::Aes256Extractable => "bench-aes-256-extractable".to_string(),
        };
        let session = self.session()?;
        let key = match spec {
            KeySpec::Rsa(bits) => generate_rsa(session, bits, &label)?,
            KeySpec::Ec(curve) => generate_ec(session, curve, &label)?,
            KeySpec::Aes256 => generate_aes(session, &label, false)?,
            KeySpec::Aes256Extractable => generate_aes(session, &label, true)?,
        };
        self.keys.insert(spec, key);
        Ok(key)
    }

    /// Adds `fill-NNNNN` AES-256 token keys until the token holds `count` of them.
    pub fn fill_to(&mut self, count: usize) -> Result<(), Failure> {
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| Failure::new("no session", "setup session"))?;
        let (from, start) = (self.filled, std::time::Instant::now());
        for i in from..count {
            generate_aes(session, &fill_label(i), false)?;
            self.filled = i + 1;
            if self.filled.is_multiple_of(1000) {
                eprintln!("  {}: {} fill keys", self.spec.name, self.filled);
            }
        }
        if count > from {
            self.notes.push(format!(
                "generating fill keys {from}..{count} (AES-256, token) took {:.1} s",
                start.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    /// `C_Finalize`, then the timed `C_Initialize` + `C_OpenSession` + `C_Login`;
    /// returns the time those three took. The token is looked up by label in
    /// between, untimed: SoftHSMv2 hands out new slot ids on every `C_Initialize`.
    /// Ends with the user logged in again in a new setup session; cached key
    /// handles are forgotten, as a module may renumber objects when it reloads.
    pub fn reinitialize(&mut self) -> Result<std::time::Duration, Failure> {
        use std::time::Instant;
        self.session = None;
        self.keys.clear();
        self.ctx.clone().finalize().during("C_Finalize")?;
        let pin = AuthPin::from(USER_PIN);

        let start = Instant::now();
        self.ctx.initialize(init_args()).during("C_Initialize")?;
        let initialize = start.elapsed();

        self.slot = find_slot(&self.ctx)?;

        let start = Instant::now();
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .during("C_OpenSession after C_Initialize")?;
        session
            .login(UserType::User, Some(&pin))
            .during("C_Login (user)")?;
        let open_and_login = start.elapsed();

        self.session = Some(session);
        Ok(initialize + open_and_login)
    }
}

fn init_args() -> CInitializeArgs {
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

/// The slot whose token carries the benchmark label.
fn find_slot(ctx: &Pkcs11) -> Result<Slot, Failure> {
    for slot in ctx.get_slots_with_token().during("C_GetSlotList")? {
        let token = ctx.get_token_info(slot).during("C_GetTokenInfo")?;
        if token.label().trim_end() == TOKEN_LABEL {
            return Ok(slot);
        }
    }
    Err(Failure::new(
        "token not found",
        "looking up the initialised token by label",
    ))
}

/// Label of the `i`th fill key.
pub fn fill_label(i: usize) -> String {
    format!("fill-{i:05}")
}

/// Generates an RSA key pair (e = 65537) as token objects.
pub fn generate_rsa(session: &Session, bits: u64, label: &str) -> Result<Key, Failure> {
    let label = label.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(label.clone()),
        Attribute::Id(label.clone()),
        Attribute::ModulusBits(bits.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Verify(true),
        Attribute::Encrypt(true),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.clone()),
        Attribute::Id(label),
        Attribute::Sign(true),
        Attribute::Decrypt(true),
    ];
    let (public, private) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .during("C_GenerateKeyPair (RSA)")?;
    Ok(Key { private, public })
}

/// Generates an EC key pair on `curve` as token objects.
pub fn generate_ec(session: &Session, curve: Curve, label: &str) -> Result<Key, Failure> {
    let label = label.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(label.clone()),
        Attribute::Id(label.clone()),
        Attribute::EcParams(curve.params()),
        Attribute::Verify(true),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.clone()),
        Attribute::Id(label),
        Attribute::Sign(true),
    ];
    let (public, private) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .during("C_GenerateKeyPair (EC)")?;
    Ok(Key { private, public })
}

/// Generates an AES-256 token key that can encrypt and wrap; `extractable`
/// lets it be wrapped itself.
pub fn generate_aes(session: &Session, label: &str, extractable: bool) -> Result<Key, Failure> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
    ];
    let what = if extractable {
        "C_GenerateKey (AES-256, CKA_EXTRACTABLE=TRUE)"
    } else {
        "C_GenerateKey (AES-256)"
    };
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .during(what)?;
    Ok(Key {
        private: key,
        public: key,
    })
}
