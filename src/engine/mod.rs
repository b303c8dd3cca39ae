//! The Managed HSM engine: the key model, the rules tables, the attribute policy.

pub mod attest;
pub mod attributes;
pub mod audit;
pub mod key;
pub mod lifecycle;
pub mod mechanism;
pub mod policy;
#[cfg(test)]
mod rule_matrix;
pub mod rules;
