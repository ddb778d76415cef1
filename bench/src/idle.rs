//! `idle`: many connections, each its own user, doing nothing: what each costs the node in
//! memory, what the node burns per second while they wait, and how fast they come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use veche_client::Connection;

use crate::measure::{Meter, node_rss_kib};
use crate::report::Report;
use crate::stats::Latencies;
use crate::target::{SetupError, Target};
use crate::workload::WorkloadError;

/// What to run.
#[derive(Debug, Clone)]
pub struct IdleParams {
    /// Connections, each its own user.
    pub connections: usize,
    /// Logins (and resumes) under way at once.
    pub parallel: usize,
    /// How long the connections are held idle while the node's CPU is measured.
    pub hold: Duration,
    /// Connections per client endpoint (UDP socket).
    pub per_endpoint: usize,
}

impl Default for IdleParams {
    fn default() -> Self {
        Self {
            connections: 20,
            parallel: 8,
            hold: Duration::from_secs(10),
            per_endpoint: 256,
        }
    }
}

/// An authenticated connection and how to resume its session.
type Held = (Connection, String);

/// Runs the workload once: password logins of every user, a quiet hold, then every user
/// reconnects and resumes its session.
pub async fn idle(target: &Target, p: &IdleParams) -> Result<Report, WorkloadError> {
    let logins: Vec<String> = (0..p.connections)
        .map(|i| target.login_of("i", i))
        .collect();
    target.ensure_users(&logins, 2).await?;
    let endpoints: Vec<quinn::Endpoint> = (0..p.connections.div_ceil(p.per_endpoint.max(1)).max(1))
        .map(|_| target.endpoint())
        .collect::<Result<_, SetupError>>()?;
    let mut report = Report::new("idle");
    report.num("connections", p.connections as f64, "");
    let rss_before = node_rss_kib(target.node_pid);
    if let Some(rss) = rss_before {
        report.num("node_rss_before_mib", rss as f64 / 1024.0, "MiB");
    }

    let mut held: Vec<Held> = Vec::new();
    if p.connections > 0 {
        let meter = Meter::start(target.node_pid, target.threads);
        let (conns, mut lat) =
            authenticate_all(target, &logins, &endpoints, p.parallel, None).await?;
        let usage = meter.finish();
        held = conns;
        report
            .num(
                "logins_per_s",
                p.connections as f64 / usage.wall.as_secs_f64().max(1e-6),
                "/s",
            )
            .latencies("login", &mut lat);
        if let Some(cpu) = usage.node_cpu {
            report.num(
                "node_cpu_ms_per_login",
                cpu * 1e3 / p.connections as f64,
                "ms",
            );
        }
        let rss = node_rss_kib(target.node_pid);
        if let (Some(before), Some(after)) = (rss_before, rss) {
            report
                .num("node_rss_after_logins_mib", after as f64 / 1024.0, "MiB")
                .num(
                    "node_kib_per_connection",
                    after.saturating_sub(before) as f64 / p.connections as f64,
                    "KiB",
                );
        }
    }

    // The hold: nothing asked of the node.
    let meter = Meter::start(target.node_pid, target.threads);
    tokio::time::sleep(p.hold).await;
    let usage = meter.finish();
    let hold_s = usage.wall.as_secs_f64().max(1e-6);
    report.num("hold_s", hold_s, "s");
    if let Some(cpu) = usage.node_cpu {
        report.num("idle_node_cpu_ms_per_s", cpu * 1e3 / hold_s, "ms/s");
    }
    if let Some(cpu) = usage.own_cpu {
        report.num("idle_generator_cpu_ms_per_s", cpu * 1e3 / hold_s, "ms/s");
    }
    if let Some(rss) = node_rss_kib(target.node_pid) {
        report.num("node_rss_after_hold_mib", rss as f64 / 1024.0, "MiB");
    }
    let dead = held
        .iter()
        .filter(|(c, _)| c.quic().close_reason().is_some())
        .count();
    if dead > 0 {
        report.note(format!("{dead} connections were closed during the hold"));
    }

    if p.connections > 0 {
        // Reconnect everyone and resume their sessions.
        let tokens: Vec<String> = held.iter().map(|(_, t)| t.clone()).collect();
        drop(held);
        let meter = Meter::start(target.node_pid, target.threads);
        let (conns, mut lat) =
            authenticate_all(target, &logins, &endpoints, p.parallel, Some(tokens)).await?;
        let usage = meter.finish();
        report
            .num(
                "resumes_per_s",
                p.connections as f64 / usage.wall.as_secs_f64().max(1e-6),
                "/s",
            )
            .latencies("resume", &mut lat);
        if let Some(cpu) = usage.node_cpu {
            report.num(
                "node_cpu_ms_per_resume",
                cpu * 1e3 / p.connections as f64,
                "ms",
            );
        }
        if let Some(rss) = node_rss_kib(target.node_pid) {
            report.num("node_rss_after_resumes_mib", rss as f64 / 1024.0, "MiB");
        }
        if let Some(note) = usage.bound_note() {
            report.note(format!("resumes: {note}"));
        }
        drop(conns);
    }
    Ok(report)
}

/// Connects every user of `logins` (on the endpoints in turn), `parallel` at a time, with a
/// password login, or resuming with `tokens` (one per login). Returns the connections with
/// their session tokens, and how long each connect + authentication took.
pub(crate) async fn authenticate_all(
    target: &Target,
    logins: &[String],
    endpoints: &[quinn::Endpoint],
    parallel: usize,
    tokens: Option<Vec<String>>,
) -> Result<(Vec<Held>, Latencies), WorkloadError> {
    let logins = Arc::new(logins.to_vec());
    let tokens = Arc::new(tokens);
    let endpoints = Arc::new(endpoints.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let out: Arc<Mutex<Vec<Option<Held>>>> =
        Arc::new(Mutex::new((0..logins.len()).map(|_| None).collect()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel.clamp(1, logins.len().max(1)) {
        let (target, logins, tokens, endpoints, next, out) = (
            target.clone(),
            logins.clone(),
            tokens.clone(),
            endpoints.clone(),
            next.clone(),
            out.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Latencies::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(login) = logins.get(i) else {
                    return Ok::<_, WorkloadError>(lat);
                };
                let started = Instant::now();
                let conn = target.connect_on(&endpoints[i % endpoints.len()]).await?;
                let token = match tokens.as_ref() {
                    None => target.login(&conn, login).await?.token,
                    Some(tokens) => {
                        let token = tokens[i].clone();
                        conn.resume(&token, &Target::device_of(login))
                            .await
                            .map_err(|e| WorkloadError::request("resume", e))?;
                        token
                    }
                };
                lat.record(started.elapsed());
                out.lock().await[i] = Some((conn, token));
            }
        });
    }
    let mut latencies = Latencies::default();
    while let Some(done) = tasks.join_next().await {
        latencies.merge(&done??);
    }
    let held = std::mem::take(&mut *out.lock().await)
        .into_iter()
        .flatten()
        .collect();
    Ok((held, latencies))
}
