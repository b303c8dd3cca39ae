//! Build script: link options for the PKCS#11 shared library.

fn main() {
    // Applications dlclose() PKCS#11 modules (pkcs11-tool, p11-kit, test
    // harnesses). aws-lc keeps per-thread state behind pthread keys whose
    // destructors run at thread exit: if the library had been unmapped by then,
    // the thread would jump into freed code (seen as SIGSEGV in
    // __nptl_deallocate_tsd). `-z nodelete` keeps the module mapped after
    // dlclose, as long-lived crypto libraries commonly do.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
