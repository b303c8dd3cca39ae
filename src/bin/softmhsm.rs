//! The softmhsm admin CLI (DESIGN §6). Its verbs (`init`, `key create|rotate|
//! list|show|delete|recover|purge|backup|restore|…`, `byok`, `audit`) are not
//! built yet; until they are, it says so plainly instead of pretending.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("softmhsm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | None => {
            println!(
                "softmhsm {}: admin CLI for the softmhsm PKCS#11 token\n\n\
                 The management verbs are not available in this build yet.\n\
                 Use any PKCS#11 tool with target/release/libsoftmhsm.so meanwhile\n\
                 (see README.md).",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some(verb) => {
            eprintln!("softmhsm: '{verb}' is not available in this build yet (see --help)");
            ExitCode::from(2)
        }
    }
}
