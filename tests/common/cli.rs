//! The admin CLI (`softmhsm`) as a subprocess, for the tests that drive it:
//! each run gets the test's own `SOFTMHSM_DIR` from the harness.

use super::USER_PIN;
use serde_json::Value;
use std::process::{Command, Stdio};

/// One CLI run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the CLI with the fixture user PIN in `$SOFTMHSM_PIN`.
pub fn cli(args: &[&str]) -> Run {
    cli_with(args, Some(USER_PIN))
}

/// Run the CLI; stdin is not a terminal.
pub fn cli_with(args: &[&str], pin: Option<&str>) -> Run {
    cli_env(args, pin, &[])
}

/// [`cli_with`] with extra environment variables (another `SOFTMHSM_DIR`,
/// `SOFTMHSM_AUDIT`, …).
pub fn cli_env(args: &[&str], pin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_softmhsm"));
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("SOFTMHSM_PIN");
    if let Some(pin) = pin {
        cmd.env("SOFTMHSM_PIN", pin);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run softmhsm");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run the CLI, expect success, parse its JSON.
#[track_caller]
pub fn json(args: &[&str]) -> Value {
    let r = cli(args);
    assert_eq!(r.code, 0, "softmhsm {args:?} failed: {}", r.stderr);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("softmhsm {args:?} printed no JSON ({e}): {}", r.stdout))
}

/// Run the CLI, expect `code` and a one-line error mentioning `what`.
#[track_caller]
pub fn refused(args: &[&str], code: i32, what: &str) {
    assert_refused(&cli(args), code, what);
}

/// A run that ended with `code` and a one-line error mentioning `what`.
#[track_caller]
pub fn assert_refused(r: &Run, code: i32, what: &str) {
    assert_eq!(r.code, code, "exit code: {}", r.stderr);
    assert_eq!(
        r.stderr.lines().count(),
        1,
        "one-line error: {:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains(what),
        "error {:?} should mention {what:?}",
        r.stderr
    );
}
