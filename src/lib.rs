//! softmhsm: a PKCS#11 provider that behaves like an Azure Key Vault Managed HSM
//! pool on the local machine. Module map (DESIGN §1).

pub mod cli;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod logging;
pub mod pool;
pub mod store;
pub mod token;
