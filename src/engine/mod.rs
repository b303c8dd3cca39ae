//! The Managed HSM engine: the key model, the rules tables, the attribute policy.

pub mod attributes;
pub mod key;
pub mod mechanism;
pub mod policy;
pub mod rules;
