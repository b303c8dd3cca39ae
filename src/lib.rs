//! softmhsm: a PKCS#11 provider that behaves like an Azure Key Vault Managed HSM
//! pool on the local machine. Module map (DESIGN §1).

// Unsafe code lives in `ffi` only (DESIGN §1).
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod logging;
pub mod store;
pub mod token;
