//! CPU time and memory of a process, read from Linux's `/proc`.

use std::io;
use std::time::{Duration, Instant};

/// `/proc/<pid>/stat` counts CPU time in ticks of this many a second (`USER_HZ`, 100 on
/// every Linux architecture's user ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// User + system CPU time so far, in seconds (10 ms resolution).
    pub cpu_secs: f64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// The peak resident set size so far, KiB.
    pub hwm_kib: u64,
    /// When it was read.
    pub at: Instant,
}

/// Reads process `pid`.
pub fn sample(pid: u32) -> io::Result<Sample> {
    read(&format!("/proc/{pid}"))
}

/// Reads this process.
pub fn sample_self() -> io::Result<Sample> {
    read("/proc/self")
}

fn read(dir: &str) -> io::Result<Sample> {
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    Ok(Sample {
        cpu_secs: stat_cpu_secs(&stat)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable stat"))?,
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        at: Instant::now(),
    })
}

/// utime + stime of a `/proc/<pid>/stat` text, in seconds.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // The command name, in parentheses, may hold spaces: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after the ')' they are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU used between two samples of one process, and the wall time between them.
pub fn cpu_between(a: &Sample, b: &Sample) -> (f64, Duration) {
    (
        (b.cpu_secs - a.cpu_secs).max(0.0),
        b.at.saturating_duration_since(a.at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_after_the_command_name() {
        let stat = "1234 (tokio runtime) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0";
        assert_eq!(stat_cpu_secs(stat), Some(3.25));
    }

    #[test]
    fn this_process_can_be_read() {
        let s = sample_self().expect("read /proc/self");
        assert!(s.rss_kib > 0);
        assert!(s.hwm_kib >= s.rss_kib);
    }
}
