//! Logging behind `SOFTMHSM_LOG` (`off`, `error`, `warn`, `info`, `debug`,
//! `trace`): lines go to standard error. The library logs errors by default
//! (a store it cannot use, named with its path and cause), each distinct line
//! at most once a minute; the CLI prints its own one-line messages instead.
//! Nothing secret is ever logged.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        if record.level() <= Level::Warn && repeated(&text) {
            return;
        }
        eprintln!(
            "softmhsm[{}] {}: {text}",
            std::process::id(),
            record.level(),
        );
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// How long the same warning or error line is not repeated: a host that
/// retries a failing call in a loop (nginx's workers, a health check) gets
/// one line per distinct failure, not one per call.
const QUIET: Duration = Duration::from_secs(60);

/// Whether `text` was logged less than [`QUIET`] ago (and note it if not).
fn repeated(text: &str) -> bool {
    static SEEN: Mutex<Option<HashMap<u64, Instant>>> = Mutex::new(None);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let key = h.finish();
    let now = Instant::now();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if seen.len() > 256 {
        seen.retain(|_, t| now.duration_since(*t) < QUIET);
    }
    match seen.get(&key) {
        Some(t) if now.duration_since(*t) < QUIET => true,
        _ => {
            seen.insert(key, now);
            false
        }
    }
}

/// Install the logger once at the level `SOFTMHSM_LOG` names, else at
/// `default` (None: no logging unless asked). A host application that
/// installed its own `log` logger keeps it.
pub fn init(default: Option<LevelFilter>) {
    let asked = std::env::var("SOFTMHSM_LOG").ok();
    let filter = match asked.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("off") => return,
        Some("error") => LevelFilter::Error,
        Some("warn") => LevelFilter::Warn,
        Some("info") => LevelFilter::Info,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ => match default {
            Some(level) => level,
            None => return,
        },
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(filter);
    }
}
