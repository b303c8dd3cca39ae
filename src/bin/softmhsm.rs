//! The softmhsm admin CLI (DESIGN §6); everything lives in [`softmhsm::cli`].

// The binary is its own crate root: the library's rule holds here too, with
// the one signal call below as the only exception (DESIGN §1).
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like every Unix filter: `softmhsm key list | head` ends quietly when the
    // reader goes, instead of a "failed printing to stdout" panic (Rust
    // ignores SIGPIPE by default).
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    ExitCode::from(softmhsm::cli::main(&args))
}
