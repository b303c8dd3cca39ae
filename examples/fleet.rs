//! A pool for a fleet, measured (BENCHMARKS.md, "A fleet on one PostgreSQL
//! pool"): the same cases on a SQLite pool and on a PostgreSQL pool, in one
//! run, each case in fresh processes that load the module:
//!
//! - AES-256 and P-256 token key generation (durable commits), keys/s;
//! - P-256 `C_SignInit` + `C_Sign` in one thread, rounds alternating the stores;
//! - with 10,000 keys in the pool (and each further size of `--keys`): the
//!   first find by label after another process (the CLI) created a key,
//!   `C_Initialize` + `C_OpenSession` + `C_Login` + one find in a fresh
//!   process (PIN KDF at 1 iteration), and AES-256 token key generation;
//! - 4 processes creating 100 keys each at once (at the first size);
//! - N processes signing while one more process disables and re-enables a
//!   key every 250 ms: the total sign rate, and the staleness — from the
//!   start of the writer's `C_SetAttributeValue` (so it includes the durable
//!   commit) to the first `C_SignInit` of each signer that obeys it (each
//!   signer tries that key once a millisecond, so the figure is +1 ms).
//!
//! ```text
//! cargo build --release --example fleet --bins
//! bash tests/with-postgres.sh target/release/examples/fleet \
//!     --module target/release/libsoftmhsm.so --cli target/release/softmhsm \
//!     [--keys 10000,100000] [--signers 4,32]
//! ```
//!
//! The PostgreSQL pool is `$SOFTMHSM_STORE_URL`; the SQLite pool is made in
//! `$TMPDIR`. Asserts nothing about speed.
//!
//! **The fill** (not measured) makes the keys through PKCS#11 as every other
//! case does — four processes generating AES-256 token keys — but without
//! waiting for the disk, which would take ~8 minutes per 100,000 keys at this
//! VM's ~200 durable commits/s: the SQLite pool is copied to `/dev/shm`,
//! filled there and copied back (then `sync`); the PostgreSQL fillers connect
//! with `synchronous_commit = off` (same statements, same transactions; the
//! commit does not wait for the WAL flush), then `CHECKPOINT` and `VACUUM
//! ANALYZE` (what autovacuum would have done to a pool grown over time). The
//! rows are the ones a durable fill makes; every measured case runs durably.

#[path = "support/token.rs"]
mod token;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use token::{aes, counts, load};

const SO_PIN: &str = "fleet-so-pin";
const USER_PIN: &str = "fleet-pin";
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CKA_SOFTMHSM_ENABLED` (include/softmhsm.h).
const CKA_SOFTMHSM_ENABLED: u64 = (0x8000_0000 | 0x534D_0000) + 0x04;
/// How often the writer flips the probe key.
const FLIP_EVERY: Duration = Duration::from_millis(250);

struct Options {
    module: PathBuf,
    cli: PathBuf,
    /// The pool sizes to measure at, ascending.
    keys: Vec<usize>,
    signers: Vec<usize>,
    seconds: u64,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        module: PathBuf::from("target/release/libsoftmhsm.so"),
        cli: PathBuf::from("target/release/softmhsm"),
        keys: vec![10_000],
        signers: vec![4, 32],
        seconds: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--module" => o.module = v()?.into(),
            "--cli" => o.cli = v()?.into(),
            "--keys" => {
                o.keys = counts(&v()?)?;
                o.keys.sort_unstable();
            }
            "--seconds" => o.seconds = v()?.parse().map_err(|_| "bad --seconds")?,
            "--signers" => o.signers = counts(&v()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some("--worker") {
        worker(&args[2..])
    } else {
        parse().and_then(|o| run(&o))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------
// Workers: one measurement in a process of its own, on the store its
// environment names; the result on stdout.
// ---------------------------------------------------------------------------

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn e<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{what}: {err}")
}

fn login(p: &Pkcs11) -> Result<Session, String> {
    let slot = p.get_slots_with_token().map_err(e("C_GetSlotList"))?[0];
    let s = p.open_rw_session(slot).map_err(e("C_OpenSession"))?;
    s.login(UserType::User, Some(&AuthPin::from(USER_PIN)))
        .map_err(e("C_Login"))?;
    Ok(s)
}

fn p256(s: &Session, label: &str) -> Result<(), String> {
    let l = Attribute::Label(label.as_bytes().to_vec());
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(OID_P256.to_vec()),
            l.clone(),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            l,
        ],
    )
    .map(|_| ())
    .map_err(e("C_GenerateKeyPair"))
}

fn private_key(s: &Session, label: &str) -> Result<ObjectHandle, String> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(e("C_FindObjects"))?;
    found.first().copied().ok_or(format!("no key {label}"))
}

fn sign(s: &Session, key: ObjectHandle) -> cryptoki::error::Result<Vec<u8>> {
    s.sign(&Mechanism::Ecdsa, key, &[7u8; 32])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn worker(args: &[String]) -> Result<(), String> {
    let module = PathBuf::from(&args[1]);
    let num = |i: usize| -> Result<u64, String> {
        args.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("worker {}: argument {i}", args[0]))
    };
    if args[0] == "startup" {
        return startup(&module, &args[2]);
    }
    let p = load(&module)?;
    match args[0].as_str() {
        "init" => {
            let slot = p.get_slots_with_token().map_err(e("C_GetSlotList"))?[0];
            p.init_token(slot, &AuthPin::from(SO_PIN), "fleet")
                .map_err(e("C_InitToken"))?;
            let so = p.open_rw_session(slot).map_err(e("C_OpenSession"))?;
            so.login(UserType::So, Some(&AuthPin::from(SO_PIN)))
                .map_err(e("C_Login(SO)"))?;
            so.init_pin(&AuthPin::from(USER_PIN))
                .map_err(e("C_InitPIN"))?;
            drop(so);
            let s = login(&p)?;
            p256(&s, "sig")?;
            p256(&s, "probe")?;
        }
        "keygen-aes" | "keygen-p256" => {
            let s = login(&p)?;
            let n = num(2)?;
            let t = Instant::now();
            for i in 0..n {
                let label = format!("{}-{}-{i}", args[0], std::process::id());
                if args[0] == "keygen-aes" {
                    aes(&s, &label)?;
                } else {
                    p256(&s, &label)?;
                }
            }
            println!("{}", n as f64 / t.elapsed().as_secs_f64());
        }
        "sign" => {
            let s = login(&p)?;
            let key = private_key(&s, "sig")?;
            let span = Duration::from_millis(num(2)?);
            sign(&s, key).map_err(e("C_Sign"))?;
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < span {
                sign(&s, key).map_err(e("C_Sign"))?;
                n += 1;
            }
            println!("{}", n as f64 / t.elapsed().as_secs_f64());
        }
        "fill" => {
            let s = login(&p)?;
            let (size, part) = (num(2)?, num(3)?);
            for i in 0..num(4)? {
                aes(&s, &format!("fill-{size}-{part}-{i}"))?;
            }
        }
        "catch-up" => {
            let s = login(&p)?;
            let cli = &args[2];
            let mut finds = Vec::new();
            for w in 0..num(3)? {
                let name = format!("foreign-{}-{w}", std::process::id());
                let st = Command::new(cli)
                    .args(["key", "create", "--name", &name, "--kty", "oct"])
                    .stdout(Stdio::null())
                    .status()
                    .map_err(e("softmhsm key create"))?;
                if !st.success() {
                    return Err(format!("softmhsm key create: {st}"));
                }
                let t = Instant::now();
                let found = s
                    .find_objects(&[Attribute::Label(name.as_bytes().to_vec())])
                    .map_err(e("C_FindObjects"))?;
                finds.push(t.elapsed().as_secs_f64() * 1e3);
                if found.len() != 1 {
                    return Err(format!("{name}, made by the CLI, was not found"));
                }
            }
            println!("{}", median(finds));
        }
        "together" => {
            let s = login(&p)?;
            let start = num(3)?;
            while now_us() < start {
                std::thread::sleep(Duration::from_micros(200));
            }
            for i in 0..num(2)? {
                aes(&s, &format!("together-{}-{i}", std::process::id()))?;
            }
            println!("{}", now_us());
        }
        "signer" => {
            let s = login(&p)?;
            let key = private_key(&s, "sig")?;
            let probe = private_key(&s, "probe")?;
            let span = Duration::from_millis(num(2)?);
            let t = Instant::now();
            let mut next_probe = Instant::now();
            let mut n = 0u64;
            let mut state = true;
            let mut flips = Vec::new();
            while t.elapsed() < span {
                sign(&s, key).map_err(e("C_Sign"))?;
                n += 1;
                if Instant::now() >= next_probe {
                    next_probe = Instant::now() + Duration::from_millis(1);
                    let enabled = sign(&s, probe).is_ok();
                    if enabled != state {
                        state = enabled;
                        flips.push((now_us(), enabled));
                    }
                }
            }
            println!("{}", n as f64 / t.elapsed().as_secs_f64());
            for (at, enabled) in flips {
                println!("{at} {}", u8::from(enabled));
            }
        }
        "flipper" => {
            let s = login(&p)?;
            let probe = private_key(&s, "probe")?;
            let span = Duration::from_millis(num(2)?);
            let t = Instant::now();
            let mut enabled = true;
            while t.elapsed() < span {
                std::thread::sleep(FLIP_EVERY);
                enabled = !enabled;
                let asked = now_us();
                s.update_attributes(
                    probe,
                    &[Attribute::VendorDefined((
                        AttributeType::VendorDefined(CKA_SOFTMHSM_ENABLED),
                        vec![u8::from(enabled)],
                    ))],
                )
                .map_err(e("C_SetAttributeValue(CKA_SOFTMHSM_ENABLED)"))?;
                println!("{asked} {} {}", now_us(), u8::from(enabled));
            }
            if !enabled {
                s.update_attributes(
                    probe,
                    &[Attribute::VendorDefined((
                        AttributeType::VendorDefined(CKA_SOFTMHSM_ENABLED),
                        vec![1],
                    ))],
                )
                .map_err(e("C_SetAttributeValue(CKA_SOFTMHSM_ENABLED)"))?;
            }
        }
        other => return Err(format!("unknown worker {other}")),
    }
    Ok(())
}

/// `C_Initialize` + `C_OpenSession` + `C_Login` + one find of `label`, in
/// this fresh process; prints milliseconds.
fn startup(module: &Path, label: &str) -> Result<(), String> {
    let t = Instant::now();
    let p = load(module)?;
    let s = login(&p)?;
    let found = s
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(e("C_FindObjects"))?;
    println!("{}", t.elapsed().as_secs_f64() * 1e3);
    if found.is_empty() {
        return Err(format!("no key {label}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------

/// One pool: its name, the environment that selects it, and how a fill
/// goes without waiting for the disk.
struct Pool {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    /// None for the fillers themselves.
    fast: Option<Fast>,
}

/// How [`fill`] relaxes durability (see the module doc).
enum Fast {
    /// The SQLite pool's directory, filled in a copy on tmpfs.
    Tmpfs { dir: PathBuf, scratch: PathBuf },
    /// The PostgreSQL pool's URL, filled with `synchronous_commit = off`.
    Unsynced(String),
}

impl Pool {
    fn command(&self, o: &Options, worker: &str, args: &[String]) -> Result<Command, String> {
        let mut c = Command::new(std::env::current_exe().map_err(e("current_exe"))?);
        c.arg("--worker")
            .arg(worker)
            .arg(&o.module)
            .args(args)
            .env_remove("SOFTMHSM_STORE_URL")
            .env("SOFTMHSM_KDF_ITERATIONS", "1")
            .env("SOFTMHSM_PIN", USER_PIN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        Ok(c)
    }

    fn spawn(&self, o: &Options, worker: &str, args: &[String]) -> Result<Child, String> {
        self.command(o, worker, args)?
            .spawn()
            .map_err(e("spawn a worker"))
    }

    /// Run a worker to its end; its stdout.
    fn run(&self, o: &Options, worker: &str, args: &[String]) -> Result<String, String> {
        finish(self.spawn(o, worker, args)?, worker)
    }

    fn number(&self, o: &Options, worker: &str, args: &[String]) -> Result<f64, String> {
        let out = self.run(o, worker, args)?;
        out.trim()
            .parse()
            .map_err(|_| format!("{worker} printed {out:?}"))
    }
}

fn finish(child: Child, what: &str) -> Result<String, String> {
    let out = child.wait_with_output().map_err(e("wait for a worker"))?;
    if !out.status.success() {
        return Err(format!("worker {what} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(o: &Options) -> Result<(), String> {
    let url = std::env::var("SOFTMHSM_STORE_URL")
        .map_err(|_| "SOFTMHSM_STORE_URL must name the PostgreSQL pool (tests/with-postgres.sh)")?;
    let temp = tempfile::tempdir().map_err(e("temp dir"))?;
    let sqlite_dir = temp.path().join("sqlite");
    let pg_dir = temp.path().join("pg");
    std::fs::create_dir_all(&sqlite_dir).map_err(e("mkdir"))?;
    std::fs::create_dir_all(&pg_dir).map_err(e("mkdir"))?;
    let scratch = tempfile::Builder::new()
        .prefix("fleet-fill-")
        .tempdir_in("/dev/shm")
        .map_err(e("temp dir in /dev/shm"))?;
    let pools = [
        Pool {
            name: "SQLite",
            env: vec![("SOFTMHSM_DIR", sqlite_dir.display().to_string())],
            fast: Some(Fast::Tmpfs {
                dir: sqlite_dir.clone(),
                scratch: scratch.path().join("sqlite"),
            }),
        },
        Pool {
            name: "PostgreSQL",
            env: vec![
                ("SOFTMHSM_DIR", pg_dir.display().to_string()),
                ("SOFTMHSM_STORE_URL", url.clone()),
            ],
            fast: Some(Fast::Unsynced(url)),
        },
    ];
    eprintln!("load average at the start: {}", load_average());
    let row = |what: &str, unit: &str, v: [f64; 2]| {
        println!(
            "| {what} | {unit} | {:.3} | {:.3} | {:.2}× |",
            v[0],
            v[1],
            v[1] / v[0]
        );
    };
    println!("| case | unit | SQLite | PostgreSQL | PostgreSQL/SQLite |");
    println!("|---|---|---:|---:|---:|");
    for p in &pools {
        p.run(o, "init", &[])?;
    }
    let both = |f: &mut dyn FnMut(&Pool) -> Result<f64, String>| -> Result<[f64; 2], String> {
        Ok([f(&pools[0])?, f(&pools[1])?])
    };
    row(
        "AES-256 token key generation (500 keys)",
        "keys/s",
        both(&mut |p| p.number(o, "keygen-aes", &["500".into()]))?,
    );
    row(
        "P-256 token key pair generation (300 pairs)",
        "pairs/s",
        both(&mut |p| p.number(o, "keygen-p256", &["300".into()]))?,
    );
    // Sign rate: rounds alternating which store goes first.
    let mut signs = [Vec::new(), Vec::new()];
    for round in 0..6 {
        for i in [round % 2, 1 - round % 2] {
            signs[i].push(pools[i].number(o, "sign", &["2000".into()])?);
        }
    }
    eprintln!(
        "sign rounds: SQLite {:?}, PostgreSQL {:?}",
        signs[0], signs[1]
    );
    row(
        "P-256 C_SignInit+C_Sign, 1 thread (median of 6 rounds of 2 s)",
        "ops/s",
        [median(signs[0].clone()), median(signs[1].clone())],
    );
    // Each size is that many filled keys, plus the ~1,000 the cases before
    // made (and ~300 more per earlier size).
    let mut filled = 0;
    for (step, &size) in o.keys.iter().enumerate() {
        let mut took = [0.0; 2];
        for (i, p) in pools.iter().enumerate() {
            took[i] = fill(o, p, size, size - filled)?;
        }
        filled = size;
        eprintln!(
            "filled to {size} keys: SQLite {:.1} s, PostgreSQL {:.1} s; load average {}",
            took[0],
            took[1],
            load_average()
        );
        let keys = thousands(size);
        row(
            &format!("first find after another process's write, {keys} keys (median of 7)"),
            "ms",
            both(&mut |p| p.number(o, "catch-up", &[o.cli.display().to_string(), "7".into()]))?,
        );
        let label = format!("fill-{size}-0-0");
        row(
            &format!("C_Initialize + C_OpenSession + C_Login + find, {keys} keys (median of 5)"),
            "ms",
            both(&mut |p| {
                let mut v = Vec::new();
                for _ in 0..5 {
                    let out = p.run(o, "startup", std::slice::from_ref(&label))?;
                    v.push(
                        out.trim()
                            .parse()
                            .map_err(|_| format!("startup: {out:?}"))?,
                    );
                }
                Ok(median(v))
            })?,
        );
        row(
            &format!("AES-256 token key generation, {keys} keys in the pool (300 keys)"),
            "keys/s",
            both(&mut |p| p.number(o, "keygen-aes", &["300".into()]))?,
        );
        if step == 0 {
            // The cases with several processes at once, at the first size.
            concurrent(o, &pools, &row)?;
        }
    }
    eprintln!("load average at the end: {}", load_average());
    Ok(())
}

/// 4 processes × 100 keys at once, then `o.signers` signers with a writer.
fn concurrent(
    o: &Options,
    pools: &[Pool; 2],
    row: &dyn Fn(&str, &str, [f64; 2]),
) -> Result<(), String> {
    let mut together = [0.0; 2];
    for (i, p) in pools.iter().enumerate() {
        let start = now_us() + 1_500_000;
        let children: Vec<Child> = (0..4)
            .map(|_| p.spawn(o, "together", &["100".into(), start.to_string()]))
            .collect::<Result<_, _>>()?;
        let mut end = 0u64;
        for c in children {
            let out = finish(c, "together")?;
            end = end.max(
                out.trim()
                    .parse()
                    .map_err(|_| format!("together: {out:?}"))?,
            );
        }
        together[i] = 400.0 / ((end - start) as f64 / 1e6);
    }
    row(
        "4 processes × 100 AES-256 keys at once (total)",
        "keys/s",
        together,
    );
    for &n in &o.signers {
        let mut rates = [0.0; 2];
        let mut writes = [0.0; 2];
        let mut stale = [(0.0, 0.0, 0.0); 2];
        for (i, p) in pools.iter().enumerate() {
            let (rate, write, s) = signers_and_a_writer(o, p, n)?;
            rates[i] = rate;
            writes[i] = write;
            stale[i] = s;
        }
        row(
            &format!("{n} processes signing P-256 while 1 writes: total sign rate"),
            "ops/s",
            rates,
        );
        row(
            "… the writer's C_SetAttributeValue(CKA_SOFTMHSM_ENABLED): median",
            "ms",
            writes,
        );
        row(
            "… staleness, from the writer's call to each signer obeying: median",
            "ms",
            [stale[0].0, stale[1].0],
        );
        row(
            "… staleness: 99th percentile",
            "ms",
            [stale[0].1, stale[1].1],
        );
        row("… staleness: maximum", "ms", [stale[0].2, stale[1].2]);
    }
    Ok(())
}

/// Fill pool `p` with `count` more AES-256 token keys (labels
/// `fill-<size>-<part>-<i>`), four processes at once, durability relaxed for
/// the fill only (see the module doc); the seconds it took.
fn fill(o: &Options, p: &Pool, size: usize, count: usize) -> Result<f64, String> {
    let t = Instant::now();
    let fast = p.fast.as_ref().ok_or("a filler is not filled")?;
    let mut env = p.env.clone();
    match fast {
        Fast::Tmpfs { dir, scratch } => {
            copy_dir(dir, scratch)?;
            env.retain(|(k, _)| *k != "SOFTMHSM_DIR");
            env.push(("SOFTMHSM_DIR", scratch.display().to_string()));
        }
        Fast::Unsynced(url) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            env.retain(|(k, _)| *k != "SOFTMHSM_STORE_URL");
            env.push((
                "SOFTMHSM_STORE_URL",
                format!("{url}{sep}options=-csynchronous_commit%3Doff"),
            ));
        }
    }
    let filler = Pool {
        name: p.name,
        env,
        fast: None,
    };
    let fillers: Vec<Child> = (0..4)
        .map(|part| {
            let n = count / 4 + usize::from(part < count % 4);
            filler.spawn(
                o,
                "fill",
                &[size.to_string(), part.to_string(), n.to_string()],
            )
        })
        .collect::<Result<_, _>>()?;
    for c in fillers {
        finish(c, "fill")?;
    }
    match fast {
        Fast::Tmpfs { dir, scratch } => {
            copy_dir(scratch, dir)?;
            let synced = Command::new("sync").status().map_err(e("sync"))?;
            if !synced.success() {
                return Err(format!("sync: {synced}"));
            }
        }
        Fast::Unsynced(url) => {
            let mut admin =
                postgres::Client::connect(url, postgres::NoTls).map_err(e("connect as admin"))?;
            admin.batch_execute("CHECKPOINT").map_err(e("CHECKPOINT"))?;
            admin
                .batch_execute("VACUUM ANALYZE")
                .map_err(e("VACUUM ANALYZE"))?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Make `to` a copy of the directory `from` (no process has either open).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(e("clear a pool copy"))?;
    }
    std::fs::create_dir_all(to).map_err(e("mkdir"))?;
    for entry in std::fs::read_dir(from).map_err(e("read a pool directory"))? {
        let entry = entry.map_err(e("read a pool directory"))?;
        std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(e("copy a pool file"))?;
    }
    Ok(())
}

/// The machine's load averages (1, 5, 15 minutes).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `n` with thousands separators (10,000).
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` signer processes and one flipper on pool `p` for `o.seconds`: the
/// total sign rate, the median time of the writer's call (ms), and the
/// staleness (median, 99th percentile, maximum, ms) from the writer's call to
/// every signer obeying it.
fn signers_and_a_writer(o: &Options, p: &Pool, n: usize) -> Result<(f64, f64, Spread), String> {
    let ms = (o.seconds * 1000).to_string();
    let signers: Vec<Child> = (0..n)
        .map(|_| p.spawn(o, "signer", std::slice::from_ref(&ms)))
        .collect::<Result<_, _>>()?;
    // Let every signer log in and load its keys before the first flip.
    std::thread::sleep(Duration::from_millis(500 + 50 * n as u64));
    let flipper_ms = (o.seconds * 1000).saturating_sub(1000 + 50 * n as u64);
    let flipper = p.spawn(o, "flipper", &[flipper_ms.to_string()])?;
    // Each flip: when the writer called, when its call returned, the state.
    let flips: Vec<(u64, u64, bool)> = finish(flipper, "flipper")?
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()? == "1",
            ))
        })
        .collect();
    let mut writes: Vec<f64> = flips.iter().map(|f| (f.1 - f.0) as f64 / 1e3).collect();
    let mut rate = 0.0;
    let mut delays = Vec::new();
    for c in signers {
        let out = finish(c, "signer")?;
        let mut lines = out.lines();
        rate += lines
            .next()
            .and_then(|l| l.trim().parse::<f64>().ok())
            .ok_or("signer printed no rate")?;
        let seen = parse_flips(&lines.collect::<Vec<_>>().join("\n"));
        if std::env::var_os("FLEET_DEBUG").is_some() {
            eprintln!("{}: flips {flips:?}\nseen {seen:?}", p.name);
        }
        for &(asked, _, state) in &flips {
            // The first time this signer saw the new state after the call.
            if let Some(&(t, _)) = seen.iter().find(|(t, s)| *s == state && *t >= asked) {
                delays.push((t - asked) as f64 / 1e3);
            }
        }
    }
    if delays.is_empty() {
        return Err("no signer saw a flip".into());
    }
    let expected = flips.len() * n;
    if delays.len() != expected {
        eprintln!(
            "{}: {n} signers saw {} of {expected} flips",
            p.name,
            delays.len()
        );
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    Ok((
        rate,
        median(std::mem::take(&mut writes)),
        (pct(0.5), pct(0.99), pct(1.0)),
    ))
}

/// Median, 99th percentile and maximum, ms.
type Spread = (f64, f64, f64);

fn parse_flips(text: &str) -> Vec<(u64, bool)> {
    text.lines()
        .filter_map(|l| {
            let (t, s) = l.trim().split_once(' ')?;
            Some((t.parse().ok()?, s == "1"))
        })
        .collect()
}
