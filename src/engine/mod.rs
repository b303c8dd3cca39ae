//! The Managed HSM engine: the key model, the rules tables, the attribute policy.

pub mod attest;
pub mod attributes;
pub mod audit;
pub mod byok;
pub mod key;
pub mod lifecycle;
pub mod mechanism;
pub mod policy;
pub mod rotation;
#[cfg(test)]
mod rule_matrix;
pub mod rules;
