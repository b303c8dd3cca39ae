//! The results: a Markdown table for people, the same data as JSON for tools.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cases::Unit;
use crate::failure::Failure;

/// Everything one run measured, and where.
#[derive(Serialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub nproc: usize,
    pub cpu: String,
    /// `quick` or `full`.
    pub mode: String,
    pub rounds: usize,
    pub seconds_per_round: f64,
    pub warmup_seconds: f64,
    pub modules: Vec<ModuleInfo>,
    /// Which two modules the ratio column compares.
    pub ratio: Option<RatioOf>,
    pub cases: Vec<CaseResult>,
    pub notes: Vec<String>,
    pub total_seconds: f64,
}

/// The ratio column is `numerator` speed / `denominator` speed.
#[derive(Serialize)]
pub struct RatioOf {
    pub numerator: String,
    pub denominator: String,
}

#[derive(Serialize)]
pub struct ModuleInfo {
    pub name: String,
    pub path: String,
    /// `C_GetInfo` description and version, or why the module could not be set up.
    pub library: String,
}

#[derive(Serialize)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    /// `ops/s`, `MB/s` or `ms`: the unit of each result's `value`.
    pub unit: &'static str,
    pub threads: usize,
    pub results: Vec<ModuleResult>,
    /// Speed of the ratio's numerator module over its denominator (> 1: numerator faster).
    pub ratio: Option<f64>,
}

#[derive(Serialize)]
pub struct ModuleResult {
    pub module: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Measured {
        /// Median over the rounds, in the case's unit.
        value: f64,
        /// Median operations per second.
        ops_per_sec: f64,
        /// Operations per second of each round, in round order.
        rounds_ops_per_sec: Vec<f64>,
    },
    NotAvailable {
        code: String,
        during: String,
    },
}

impl Outcome {
    /// Median of the rounds' rates.
    pub fn measured(unit: Unit, mut rounds: Vec<f64>) -> Outcome {
        let in_order = rounds.clone();
        rounds.sort_by(f64::total_cmp);
        let mid = rounds.len() / 2;
        let ops_per_sec = match rounds.len() {
            0 => 0.0,
            n if n % 2 == 1 => rounds[mid],
            _ => (rounds[mid - 1] + rounds[mid]) / 2.0,
        };
        Outcome::Measured {
            value: in_unit(unit, ops_per_sec),
            ops_per_sec,
            rounds_ops_per_sec: in_order,
        }
    }

    pub fn not_available(failure: Failure) -> Outcome {
        Outcome::NotAvailable {
            code: failure.code,
            during: failure.during,
        }
    }

    fn ops_per_sec(&self) -> Option<f64> {
        match self {
            Outcome::Measured { ops_per_sec, .. } => Some(*ops_per_sec),
            Outcome::NotAvailable { .. } => None,
        }
    }
}

pub fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Ops => "ops/s",
        Unit::MegabytesPerSec(_) => "MB/s",
        Unit::Millis => "ms",
    }
}

fn in_unit(unit: Unit, ops_per_sec: f64) -> f64 {
    match unit {
        Unit::Ops => ops_per_sec,
        Unit::MegabytesPerSec(bytes) => ops_per_sec * bytes as f64 / 1e6,
        Unit::Millis if ops_per_sec > 0.0 => 1000.0 / ops_per_sec,
        Unit::Millis => f64::INFINITY,
    }
}

/// The (numerator, denominator) module indices of the ratio column:
/// softmhsm over softhsm2 when both ran, else the second over the first.
pub fn ratio_pair(names: &[String]) -> Option<(usize, usize)> {
    let find = |n: &str| names.iter().position(|m| m == n);
    match (find("softmhsm"), find("softhsm2")) {
        (Some(num), Some(den)) => Some((num, den)),
        _ if names.len() == 2 => Some((1, 0)),
        _ => None,
    }
}

/// The speed ratio of two results, when both were measured.
pub fn ratio(results: &[ModuleResult], pair: Option<(usize, usize)>) -> Option<f64> {
    let (num, den) = pair?;
    let num = results.get(num)?.outcome.ops_per_sec()?;
    let den = results.get(den)?.outcome.ops_per_sec()?;
    (den > 0.0).then(|| num / den)
}

impl Report {
    /// The Markdown rendering: machine facts, the table, then why cells are n/a.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## PKCS#11 benchmark ({} run)\n", self.mode);
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(out, "- machine: {} CPUs (nproc), {}", self.nproc, self.cpu);
        let _ = writeln!(
            out,
            "- method: per case {:.1} s warm-up per module, then {} rounds of {:.1} s per module, \
             module order alternating each round; figures are the median over rounds",
            self.warmup_seconds, self.rounds, self.seconds_per_round
        );
        for m in &self.modules {
            let _ = writeln!(out, "- `{}`: {} — {}", m.name, m.path, m.library);
        }
        out.push('\n');

        let mut header = String::from("| operation | unit |");
        let mut rule = String::from("|---|---|");
        for m in &self.modules {
            let _ = write!(header, " {} |", m.name);
            rule.push_str("---:|");
        }
        if let Some(RatioOf {
            numerator: num,
            denominator: den,
        }) = &self.ratio
        {
            let _ = write!(header, " {num}/{den} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for case in &self.cases {
            let _ = write!(out, "| {} | {} |", case.title, case.unit);
            for r in &case.results {
                let cell = match &r.outcome {
                    Outcome::Measured { value, .. } => format_value(*value, case.unit),
                    Outcome::NotAvailable { code, .. } => format!("n/a ({code})"),
                };
                let _ = write!(out, " {cell} |");
            }
            if self.ratio.is_some() {
                let cell = case
                    .ratio
                    .map_or_else(|| "—".to_string(), |r| format!("{r:.2}×"));
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        if let Some(RatioOf {
            numerator: num,
            denominator: den,
        }) = &self.ratio
        {
            let _ = writeln!(
                out,
                "\nratio = speed of {num} over {den} (ops/s ratio; > 1 means {num} is faster, \
                 also for the ms rows)."
            );
        }

        let reasons: Vec<String> = self
            .cases
            .iter()
            .flat_map(|case| {
                case.results.iter().filter_map(move |r| match &r.outcome {
                    Outcome::NotAvailable { code, during } => {
                        Some(format!("{}, {}: {code} in {during}", r.module, case.title))
                    }
                    Outcome::Measured { .. } => None,
                })
            })
            .collect();
        if !reasons.is_empty() || !self.notes.is_empty() {
            out.push('\n');
        }
        for line in reasons.iter().chain(&self.notes) {
            let _ = writeln!(out, "- {line}");
        }
        let _ = writeln!(out, "\nTotal run time: {:.0} s.", self.total_seconds);
        out
    }
}

/// A figure with a precision that suits its size: 12,345 / 123.4 / 1.23.
fn format_value(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return "—".to_string();
    }
    if unit == "ops/s" && value >= 1000.0 {
        return group_digits(&format!("{value:.0}"));
    }
    match value {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// "12345" → "12,345".
pub fn group_digits(digits: &str) -> String {
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    grouped
}

/// The host's CPU model as /proc/cpuinfo names it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SS UTC`, without a date crate
/// (days to civil date: H. Hinnant's algorithm).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
