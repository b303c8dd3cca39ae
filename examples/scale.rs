//! Scale and coherence figures of one pool (BENCHMARKS.md, "One pool, many
//! processes"): as the token grows to each size, token key generation rate,
//! `C_Initialize` + `C_OpenSession` + `C_Login` time and resident memory per
//! key (in a fresh process), and the time of the first `C_FindObjects` after
//! another process (the `softmhsm` CLI) created a key.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example scale -- --module target/release/libsoftmhsm.so \
//!     --cli target/release/softmhsm [--sizes 1000,10000,100000] [--writes 7] [--dir DIR]
//! ```
//!
//! The PIN key derivation runs with 1 iteration here, so the startup figure is
//! what comes on top of it. Keys are AES-256 token keys; asserts nothing about
//! speed.

#[path = "support/token.rs"]
mod token;

use cryptoki::context::Pkcs11;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;
use token::{aes, counts, load};

const SO_PIN: &str = "scale-so-pin";
const USER_PIN: &str = "scale-pin";
/// Keys generated to measure the rate at each size.
const RATE_KEYS: usize = 1000;

struct Options {
    module: PathBuf,
    cli: PathBuf,
    sizes: Vec<usize>,
    writes: usize,
    dir: Option<PathBuf>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        module: PathBuf::from("target/release/libsoftmhsm.so"),
        cli: PathBuf::from("target/release/softmhsm"),
        sizes: vec![1000, 10_000, 100_000],
        writes: 7,
        dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--module" => o.module = v()?.into(),
            "--cli" => o.cli = v()?.into(),
            "--sizes" => o.sizes = counts(&v()?)?,
            "--writes" => o.writes = v()?.parse().map_err(|_| "bad --writes")?,
            "--dir" => o.dir = Some(v()?.into()),
            "--probe" => return Err("--probe".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--probe") {
        return probe(Path::new(&args[2]));
    }
    match parse().and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::from(2)
        }
    }
}

fn login(p: &Pkcs11, slot: Slot) -> Result<Session, String> {
    let s = p
        .open_rw_session(slot)
        .map_err(|e| format!("C_OpenSession: {e}"))?;
    s.login(UserType::User, Some(&AuthPin::from(USER_PIN)))
        .map_err(|e| format!("C_Login: {e}"))?;
    Ok(s)
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// In a fresh process: `C_Initialize` + `C_OpenSession` + `C_Login` time and
/// the memory it took; prints `ms bytes`.
fn probe(module: &Path) -> ExitCode {
    let before = rss();
    let t = Instant::now();
    let r = load(module).and_then(|p| {
        let slot = p.get_slots_with_token().map_err(|e| e.to_string())?[0];
        let s = login(&p, slot)?;
        // One find by label: the snapshot is in use.
        s.find_objects(&[Attribute::Label(b"k1".to_vec())])
            .map_err(|e| e.to_string())?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!("{ms:.1} {}", rss().saturating_sub(before));
        Ok(())
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(o: &Options) -> Result<(), String> {
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    // --dir keeps the token for a closer look (a profile of the probe).
    let dir = o.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::env::set_var("SOFTMHSM_DIR", &dir);
    std::env::set_var("SOFTMHSM_KDF_ITERATIONS", "1");
    std::env::set_var("SOFTMHSM_PIN", USER_PIN);
    let p = load(&o.module)?;
    let slot = p.get_slots_with_token().map_err(|e| e.to_string())?[0];
    p.init_token(slot, &AuthPin::from(SO_PIN), "scale")
        .map_err(|e| format!("C_InitToken: {e}"))?;
    {
        let so = p.open_rw_session(slot).map_err(|e| e.to_string())?;
        so.login(UserType::So, Some(&AuthPin::from(SO_PIN)))
            .map_err(|e| e.to_string())?;
        so.init_pin(&AuthPin::from(USER_PIN))
            .map_err(|e| e.to_string())?;
    }
    let s = login(&p, slot)?;
    println!("module: {}", o.module.display());
    println!(
        "{:>8} {:>12} {:>14} {:>12} {:>16}",
        "keys", "keygen/s", "startup ms", "bytes/key", "find after write"
    );
    let mut made = 0usize;
    let mut first_rate = None;
    for &size in &o.sizes {
        while made < size.saturating_sub(RATE_KEYS) {
            aes(&s, &format!("k{made}"))?;
            made += 1;
        }
        let t = Instant::now();
        let batch = size.saturating_sub(made).max(1);
        for _ in 0..batch {
            aes(&s, &format!("k{made}"))?;
            made += 1;
        }
        let rate = batch as f64 / t.elapsed().as_secs_f64();
        let ratio = *first_rate.get_or_insert(rate);
        // Startup and memory in a fresh process on the same store.
        let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .args(["--probe", &o.module.display().to_string()])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut f = text.split_whitespace();
        let startup: f64 = f
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or("probe failed")?;
        let bytes: f64 = f
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or("probe failed")?;
        // Another process writes; the next find here must see it.
        let mut finds = Vec::new();
        for w in 0..o.writes {
            let name = format!("foreign-{size}-{w}");
            let st = Command::new(&o.cli)
                .args(["key", "create", "--name", &name, "--kty", "oct"])
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("{}: {e}", o.cli.display()))?;
            if !st.success() {
                return Err(format!("softmhsm key create failed: {st}"));
            }
            let t = Instant::now();
            let found = s
                .find_objects(&[Attribute::Label(name.as_bytes().to_vec())])
                .map_err(|e| e.to_string())?;
            finds.push(t.elapsed().as_secs_f64() * 1e3);
            if found.len() != 1 {
                return Err(format!(
                    "the key {name} made by another process was not found"
                ));
            }
        }
        made += o.writes;
        println!(
            "{size:>8} {rate:>9.0} ({:.2}x) {startup:>10.1} {:>12.0} {:>13.3} ms",
            rate / ratio,
            bytes / size as f64,
            median(finds)
        );
    }
    Ok(())
}
