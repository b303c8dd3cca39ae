//! What the pool examples (`scale`, `fleet`) do the same way: load the
//! module and make AES-256 token keys.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::Session;
use std::path::Path;

/// Load the module at `module` and `C_Initialize` it (OS locking).
pub fn load(module: &Path) -> Result<Pkcs11, String> {
    let p = Pkcs11::new(module).map_err(|e| format!("load {}: {e}", module.display()))?;
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    Ok(p)
}

/// One AES-256 token key labelled `label` (sensitive, not extractable).
pub fn aes(s: &Session, label: &str) -> Result<(), String> {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
    .map(|_| ())
    .map_err(|e| format!("C_GenerateKey: {e}"))
}

/// A comma-separated list of counts (`--sizes 1000,10000`).
pub fn counts(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("bad count {s}")))
        .collect()
}
