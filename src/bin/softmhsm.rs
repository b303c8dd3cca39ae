//! The softmhsm admin CLI (DESIGN §6); everything lives in [`softmhsm::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    ExitCode::from(softmhsm::cli::main(&args))
}
