//! CPU and memory of the node and of the generator over one measured stretch, and which of
//! them bounded it.

use std::time::{Duration, Instant};

use crate::procstat::{self, Sample};
use crate::report::Report;

/// Started at the beginning of the measured stretch of a workload.
#[derive(Debug)]
pub struct Meter {
    pid: Option<u32>,
    threads: usize,
    start: Instant,
    node: Option<Sample>,
    own: Option<Sample>,
}

/// What a stretch cost.
#[derive(Debug, Clone)]
pub struct Usage {
    /// Its wall time.
    pub wall: Duration,
    /// The node's CPU seconds, when its pid is known.
    pub node_cpu: Option<f64>,
    /// The generator's own CPU seconds.
    pub own_cpu: Option<f64>,
    /// The node's resident set at the end, KiB.
    pub node_rss_kib: Option<u64>,
    /// The node's peak resident set at the end, KiB.
    pub node_hwm_kib: Option<u64>,
    /// The generator's worker threads.
    pub threads: usize,
}

impl Meter {
    /// Starts measuring node `pid` (if known) and this process, whose runtime has `threads`
    /// worker threads.
    pub fn start(pid: Option<u32>, threads: usize) -> Self {
        Self {
            pid,
            threads,
            start: Instant::now(),
            node: pid.and_then(|p| procstat::sample(p).ok()),
            own: procstat::sample_self().ok(),
        }
    }

    /// Ends the stretch.
    pub fn finish(&self) -> Usage {
        let node_end = self.pid.and_then(|p| procstat::sample(p).ok());
        let own_end = procstat::sample_self().ok();
        let node_cpu = match (&self.node, &node_end) {
            (Some(a), Some(b)) => Some(procstat::cpu_between(a, b).0),
            _ => None,
        };
        let own_cpu = match (&self.own, &own_end) {
            (Some(a), Some(b)) => Some(procstat::cpu_between(a, b).0),
            _ => None,
        };
        Usage {
            wall: self.start.elapsed(),
            node_cpu,
            own_cpu,
            node_rss_kib: node_end.map(|s| s.rss_kib),
            node_hwm_kib: node_end.map(|s| s.hwm_kib),
            threads: self.threads,
        }
    }
}

/// The node's resident set now, KiB.
pub fn node_rss_kib(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| procstat::sample(p).ok())
        .map(|s| s.rss_kib)
}

impl Usage {
    /// Adds the figures to `report`: CPU of both sides (per `unit` when `units` > 0: e.g.
    /// `node_cpu_ms_per_msg`) and the node's memory, with a note on what bounded the stretch.
    pub fn add_to(&self, report: &mut Report, units: u64, unit: &str) {
        let wall = self.wall.as_secs_f64().max(1e-9);
        report.num("wall_s", wall, "s");
        if let Some(cpu) = self.node_cpu {
            report.num("node_cpu_s", cpu, "s");
            report.num("node_cpu_ms_per_s", cpu * 1e3 / wall, "ms/s");
            if units > 0 {
                report.num(
                    &format!("node_cpu_ms_per_{unit}"),
                    cpu * 1e3 / units as f64,
                    "ms",
                );
            }
        }
        if let Some(cpu) = self.own_cpu {
            report.num("generator_cpu_s", cpu, "s");
            if units > 0 {
                report.num(
                    &format!("generator_cpu_ms_per_{unit}"),
                    cpu * 1e3 / units as f64,
                    "ms",
                );
            }
        }
        if let Some(rss) = self.node_rss_kib {
            report.num("node_rss_mib", rss as f64 / 1024.0, "MiB");
        }
        if let Some(hwm) = self.node_hwm_kib {
            report.num("node_peak_rss_mib", hwm as f64 / 1024.0, "MiB");
        }
        if self.node_cpu.is_none() {
            report.note(
                "node CPU and memory unknown: give --node-pid, or run on the node's machine \
                 with its admin socket",
            );
        }
        if let Some(note) = self.bound_note() {
            report.note(note);
        }
    }

    /// Which side bounded the stretch, if either was saturated.
    pub fn bound_note(&self) -> Option<String> {
        let wall = self.wall.as_secs_f64();
        // CPU time comes in 10 ms ticks: a shorter stretch says nothing about who was busy.
        if wall < 0.5 {
            return None;
        }
        let own = self.own_cpu? / wall;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if own >= 0.9 * self.threads as f64 {
            return Some(format!(
                "the generator is the bound: its {} worker threads were {:.0} % busy",
                self.threads,
                own * 100.0 / self.threads as f64
            ));
        }
        let node = self.node_cpu? / wall;
        if node + own >= 0.9 * cores {
            let who = if own >= node {
                "the generator is the bound"
            } else {
                "the node and the generator share the cores"
            };
            return Some(format!(
                "the machine's {cores:.0} cores were saturated (node {node:.2} cores, generator \
                 {own:.2} cores): {who}"
            ));
        }
        None
    }
}
