//! Logging behind `SOFTMHSM_LOG` (`error`, `warn`, `info`, `debug`, `trace`):
//! lines go to standard error. Nothing secret is ever logged.

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "softmhsm[{}] {}: {}",
                std::process::id(),
                record.level(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Install the logger once, if `SOFTMHSM_LOG` asks for it. A host application
/// that installed its own `log` logger keeps it.
pub fn init() {
    let Ok(level) = std::env::var("SOFTMHSM_LOG") else {
        return;
    };
    let filter = match level.to_ascii_lowercase().as_str() {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(filter);
    }
}
