//! What the benchmarks share (included by each with `#[path = "common.rs"] mod common;`).

use std::time::Duration;

/// The `p` quantile (0–1) of sorted durations; zero for none.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A duration in milliseconds, for the tables.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The thread or process name and its CPU seconds (user + system) in a Linux
/// `/proc/.../stat` text (100 ticks a second).
#[allow(dead_code)] // Not every benchmark reads CPU.
pub(crate) fn stat_cpu(stat: &str) -> (&str, f64) {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return ("", 0.0);
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; after the ')' they are at 11 and 12.
    (&stat[open + 1..close], (ticks(11) + ticks(12)) / 100.0)
}
