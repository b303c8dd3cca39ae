//! Module-agnostic PKCS#11 benchmark: the same operations, timed the same way,
//! on each module named with `--module`, side by side.
//!
//! ```text
//! cargo run --release --example bench -- \
//!     --module /usr/lib/softhsm/libsofthsm2.so --module target/release/libsoftmhsm.so \
//!     [--quick] [--json out.json] [--rounds N] [--only ID,...] [--list] [--cpu]
//!     [--store-url URL]
//! ```
//!
//! `--cpu` reports loop cases in operations per second of the process's CPU
//! time (user + system, every thread, the library's own background threads
//! included, read 1.1 s after the loop so an audit flusher has written the
//! round's lines) instead of wall time: on a machine shared with other jobs
//! it measures what an operation costs, where wall-clock rates measure how
//! much of the machine the other jobs left. Several softmhsm builds can be
//! compared in one run (`--module old.so --module new.so`, distinct file
//! names). `--store-url URL` puts the last softmhsm module's token on that
//! PostgreSQL pool and the others' on SQLite: one build copied under two
//! names compares the two stores' paths in one process.
//!
//! Each module gets a fresh token in a temporary directory. Each case is set up
//! on every module, warmed up, then timed in rounds that alternate the module
//! order, so slow drift of the machine (other jobs, thermal state) hits both
//! modules alike; the table shows the median of the rounds.

// A crate root looks for modules beside itself, not in `bench/`.
#[path = "bench/cases.rs"]
mod cases;
#[path = "bench/failure.rs"]
mod failure;
#[path = "bench/module.rs"]
mod module;
#[path = "bench/report.rs"]
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cases::{Case, Op, Work};
use failure::{During, Failure};
use module::{Module, Spec};
use report::{CaseResult, ModuleInfo, ModuleResult, Outcome, Report};

const USAGE: &str = "usage: bench --module PATH [--module PATH ...] [--quick] [--json FILE] \
                     [--rounds N] [--only ID,...] [--list] [--cpu] [--store-url URL]";

/// Command-line options.
struct Options {
    modules: Vec<PathBuf>,
    quick: bool,
    json: Option<PathBuf>,
    rounds: Option<usize>,
    only: Option<Vec<String>>,
    list: bool,
    cpu: bool,
    /// The last softmhsm module's token is this PostgreSQL pool (the others
    /// stay on SQLite): the two stores' sign paths in one process.
    store_url: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        modules: Vec::new(),
        quick: false,
        json: None,
        rounds: None,
        only: None,
        list: false,
        cpu: false,
        store_url: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--module" => opts.modules.push(value("--module")?.into()),
            "--quick" => opts.quick = true,
            "--json" => opts.json = Some(value("--json")?.into()),
            "--rounds" => {
                let n = value("--rounds")?;
                let n = n
                    .parse()
                    .map_err(|_| format!("--rounds: not a number: {n}"))?;
                if n == 0 {
                    return Err("--rounds must be at least 1".into());
                }
                opts.rounds = Some(n);
            }
            "--only" => {
                let ids = value("--only")?;
                opts.only = Some(ids.split(',').map(|s| s.trim().to_string()).collect());
            }
            "--list" => opts.list = true,
            "--cpu" => opts.cpu = true,
            "--store-url" => opts.store_url = Some(value("--store-url")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if opts.modules.is_empty() && !opts.list {
        return Err("at least one --module is needed".into());
    }
    Ok(opts)
}

/// How long each case runs.
struct Timing {
    warmup: Duration,
    round: Duration,
    rounds: usize,
    /// Rates per CPU second instead of per wall second (`--cpu`).
    cpu: bool,
}

/// A module named on the command line: loaded and logged in, or why not.
struct Entry {
    spec: Spec,
    module: Result<Module, Failure>,
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("bench: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let started = Instant::now();
    let cases = select_cases(cases::all(), opts)?;
    if opts.list {
        for case in &cases {
            let quick = if case.full_only {
                " (full run only)"
            } else {
                ""
            };
            println!("{:<22} {}{quick}", case.id, case.title);
        }
        return Ok(());
    }

    let specs = module_specs(&opts.modules)?;
    let workdir = tempfile::Builder::new()
        .prefix("pkcs11-bench-")
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))?;
    // Before any module's C_Initialize and before any thread starts.
    module::prepare_environment(&specs, workdir.path(), opts.store_url.as_deref())?;

    // --quick runs in CI with two modules on two shared cores: it must stay
    // under two minutes there, fills and key generation included.
    let timing = if opts.quick {
        Timing {
            warmup: Duration::from_millis(100),
            round: Duration::from_millis(300),
            rounds: opts.rounds.unwrap_or(2),
            cpu: opts.cpu,
        }
    } else {
        Timing {
            warmup: Duration::from_millis(500),
            round: Duration::from_secs(2),
            rounds: opts.rounds.unwrap_or(5),
            cpu: opts.cpu,
        }
    };

    let mut entries: Vec<Entry> = specs
        .into_iter()
        .map(|spec| {
            eprintln!("setting up {} ({})", spec.name, spec.path.display());
            let module = Module::open(&spec);
            if let Err(failure) = &module {
                eprintln!("  {}: {failure}; every case will show n/a", spec.name);
            }
            Entry { spec, module }
        })
        .collect();

    let names: Vec<String> = entries.iter().map(|e| e.spec.name.clone()).collect();
    let pair = report::ratio_pair(&names);
    let mut results = Vec::new();
    for case in &cases {
        eprintln!("{} ...", case.id);
        let mut result = run_case(case, &mut entries, &timing);
        result.ratio = report::ratio(&result.results, pair);
        results.push(result);
    }

    let report = Report {
        date: report::utc_now(),
        command: command_line(),
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: report::cpu_model(),
        mode: format!(
            "{}{}",
            if opts.quick { "quick" } else { "full" },
            if opts.cpu {
                ", rates per CPU second"
            } else {
                ""
            }
        ),
        rounds: timing.rounds,
        seconds_per_round: timing.round.as_secs_f64(),
        warmup_seconds: timing.warmup.as_secs_f64(),
        modules: entries
            .iter()
            .map(|e| ModuleInfo {
                name: e.spec.name.clone(),
                path: e.spec.path.display().to_string(),
                library: match &e.module {
                    Ok(m) => m.library.clone(),
                    Err(failure) => format!("not set up: {failure}"),
                },
            })
            .collect(),
        ratio: pair.map(|(num, den)| report::RatioOf {
            numerator: names[num].clone(),
            denominator: names[den].clone(),
        }),
        cases: results,
        notes: entries
            .iter()
            .filter_map(|e| e.module.as_ref().ok())
            .flat_map(|m| m.notes.iter().map(move |n| format!("{}: {n}", m.name())))
            .collect(),
        total_seconds: started.elapsed().as_secs_f64(),
    };
    print!("{}", report.markdown());
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| format!("JSON: {e}"))?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The cases to run: those named by `--only`, else all (minus the slow ones with `--quick`).
fn select_cases(all: Vec<Case>, opts: &Options) -> Result<Vec<Case>, String> {
    let Some(only) = &opts.only else {
        return Ok(all
            .into_iter()
            .filter(|c| !(opts.quick && c.full_only))
            .collect());
    };
    if let Some(unknown) = only.iter().find(|id| !all.iter().any(|c| &c.id == *id)) {
        return Err(format!("--only: no case {unknown} (see --list)"));
    }
    Ok(all.into_iter().filter(|c| only.contains(&c.id)).collect())
}

/// Names the modules and refuses to load one library twice: a second `dlopen`
/// of the same file returns the same globals, so it would not be a second module.
fn module_specs(paths: &[PathBuf]) -> Result<Vec<Spec>, String> {
    let mut specs: Vec<Spec> = Vec::new();
    let mut seen = Vec::new();
    for path in paths {
        let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if seen.contains(&real) {
            return Err(format!("{} is named twice", path.display()));
        }
        seen.push(real);
        let spec = Spec::from_path(path);
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(format!("two modules are both named {}", spec.name));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Sets up, warms up and times one case on every module.
fn run_case(case: &Case, entries: &mut [Entry], timing: &Timing) -> CaseResult {
    let mut work: Vec<Result<Work, Failure>> = entries
        .iter_mut()
        .map(|e| match &mut e.module {
            Ok(m) => (case.setup)(m),
            Err(failure) => Err(failure.clone()),
        })
        .collect();
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); entries.len()];

    // Round 0 is the warm-up; its figures are dropped.
    for round in 0..=timing.rounds {
        let (budget, order): (Duration, Vec<usize>) = match round {
            0 => (timing.warmup, (0..entries.len()).collect()),
            r if r % 2 == 1 => (timing.round, (0..entries.len()).collect()),
            _ => (timing.round, (0..entries.len()).rev().collect()),
        };
        for i in order {
            let (Ok(m), Ok(w)) = (&mut entries[i].module, &work[i]) else {
                continue;
            };
            match measure(m, w, case.threads, budget, timing.cpu) {
                Ok(rate) if round > 0 => rounds[i].push(rate),
                Ok(_) => {}
                Err(failure) => {
                    eprintln!("  {}: {failure}", entries[i].spec.name);
                    work[i] = Err(failure);
                }
            }
        }
    }

    let results = entries
        .iter()
        .zip(work)
        .zip(rounds)
        .map(|((entry, work), rounds)| ModuleResult {
            module: entry.spec.name.clone(),
            outcome: match work {
                Ok(_) => Outcome::measured(case.unit, rounds),
                Err(failure) => Outcome::not_available(failure),
            },
        })
        .collect();
    CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        unit: report::unit_name(case.unit),
        threads: case.threads,
        results,
        ratio: None,
    }
}

/// Runs `work` on `m` for about `budget` and returns operations per second
/// (of wall time, or with `cpu` of the process's CPU time for loop cases).
fn measure(
    m: &mut Module,
    work: &Work,
    threads: usize,
    budget: Duration,
    cpu: bool,
) -> Result<f64, Failure> {
    match work {
        Work::Loop { op, cleanup } => {
            let before = cpu_time();
            let rate = run_loop(m, op, threads, budget).map(|(count, wall)| {
                if !cpu {
                    return count as f64 / wall.as_secs_f64();
                }
                // Background work the loop left (an audit flusher's lines) is
                // the loop's cost too: let it finish inside the measurement.
                std::thread::sleep(Duration::from_millis(1100));
                count as f64 / (cpu_time() - before).as_secs_f64()
            });
            // Clean up after a failed round as well: it may have created keys.
            if let Some(cleanup) = cleanup {
                cleanup(m.session()?)?;
            }
            rate
        }
        Work::Reinitialize => {
            let (start, mut timed, mut count) = (Instant::now(), Duration::ZERO, 0u32);
            while count == 0 || start.elapsed() < budget {
                timed += m.reinitialize()?;
                count += 1;
            }
            Ok(f64::from(count) / timed.as_secs_f64())
        }
    }
}

/// Calls `op` in a loop on `threads` threads, each with its own session, all
/// starting together; stops each after `budget` (and at least one call).
/// Returns the calls made and the longest thread's wall time.
fn run_loop(
    m: &Module,
    op: &Op,
    threads: usize,
    budget: Duration,
) -> Result<(u64, Duration), Failure> {
    let sessions = (0..threads)
        .map(|_| m.ctx.open_rw_session(m.slot).during("C_OpenSession"))
        .collect::<Result<Vec<_>, _>>()?;
    let start_together = Barrier::new(threads);
    let per_thread: Vec<Result<(u64, Duration), Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .map(|session| {
                let (op, start_together) = (Arc::clone(op), &start_together);
                scope.spawn(move || {
                    start_together.wait();
                    let start = Instant::now();
                    let mut count = 0u64;
                    loop {
                        op(&session)?;
                        count += 1;
                        let elapsed = start.elapsed();
                        if elapsed >= budget {
                            return Ok((count, elapsed));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::new("panic", "benchmark thread")))
            })
            .collect()
    });
    let (mut count, mut wall) = (0u64, Duration::ZERO);
    for result in per_thread {
        let (n, elapsed) = result?;
        count += n;
        wall = wall.max(elapsed);
    }
    Ok((count, wall))
}

/// The CPU time (user + system) this process has used, all threads.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value, and getrusage only
    // writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a pointer to a live, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The command as typed, quoted where a shell would need it.
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c))
            {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
