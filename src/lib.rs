//! softmhsm: a PKCS#11 provider that behaves like an Azure Key Vault Managed HSM
//! pool on the local machine. Module map (DESIGN §1).

pub mod crypto;
pub mod error;
pub mod store;
