//! softmhsm: a PKCS#11 provider that behaves like an Azure Key Vault Managed HSM
//! pool on the local machine. Module map (DESIGN §1).

// Unsafe code lives in `ffi` only (DESIGN §1). There, even inside an
// `unsafe fn`, each unsafe operation sits in its own `unsafe {}` block under a
// `// SAFETY:` line saying why it is sound (clippy checks the comment; CI runs
// it with -D warnings).
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod file_modes;
pub mod logging;
pub mod pool;
pub mod store;
pub mod token;
