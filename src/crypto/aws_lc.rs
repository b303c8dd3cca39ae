//! aws-lc-rs provider.
