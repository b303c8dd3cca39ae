//! The Managed HSM engine: the key model, the rules tables, the attribute
//! policy, the lifecycle and rotation-policy rules. Pure: no store, no I/O,
//! no threads, no clock it was not handed (DESIGN §1).

pub mod attributes;
pub mod key;
pub mod lifecycle;
pub mod mechanism;
pub mod policy;
pub mod rotation;
#[cfg(test)]
mod rule_matrix;
pub mod rules;
