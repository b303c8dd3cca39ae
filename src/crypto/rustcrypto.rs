//! Pure-Rust (RustCrypto) provider.
