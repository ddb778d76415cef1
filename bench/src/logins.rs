//! `logins`: password logins, then session resumes, each on a fresh connection as a client
//! that starts (or reconnects) makes them; measured separately.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::measure::Meter;
use crate::report::Report;
use crate::stats::Latencies;
use crate::target::Target;
use crate::workload::WorkloadError;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoginParams {
    /// Password logins a second; `None`: as fast as `parallel` allows.
    pub rate: Option<f64>,
    /// Password logins in all.
    pub logins: usize,
    /// Session resumes in all (after the logins).
    pub resumes: usize,
    /// Resumes a second; `None`: as fast as `parallel` allows.
    pub resume_rate: Option<f64>,
    /// Attempts under way at once; also the number of users (one each, so that no account
    /// has two attempts under way, which the node's throttle would slow down).
    pub parallel: usize,
}

impl Default for LoginParams {
    fn default() -> Self {
        Self {
            rate: None,
            logins: 200,
            resumes: 2_000,
            resume_rate: None,
            parallel: 8,
        }
    }
}

/// Runs the workload once.
pub async fn logins(target: &Target, p: &LoginParams) -> Result<Report, WorkloadError> {
    if p.logins == 0 || p.parallel == 0 {
        return Err(WorkloadError::Parameters(
            "logins needs at least one login and one at a time",
        ));
    }
    let users: Vec<String> = (0..p.parallel).map(|i| target.login_of("l", i)).collect();
    target.ensure_users(&users, 2).await?;
    let mut report = Report::new("logins");
    report.num("parallel", p.parallel as f64, "");

    let (tokens, lat, wall, usage) = phase(target, &users, p.logins, p.rate, None).await?;
    let mut lat = lat;
    report
        .num("rate_asked", p.rate.unwrap_or(0.0), "/s")
        .num("logins", p.logins as f64, "")
        .num("logins_per_s", p.logins as f64 / wall, "/s")
        .latencies("login", &mut lat);
    if let Some(cpu) = usage.node_cpu {
        report.num("node_cpu_ms_per_login", cpu * 1e3 / p.logins as f64, "ms");
    }
    if let Some(note) = usage.bound_note() {
        report.note(format!("logins: {note}"));
    }

    if p.resumes > 0 {
        let (_, mut lat, wall, usage) =
            phase(target, &users, p.resumes, p.resume_rate, Some(tokens)).await?;
        report
            .num("resumes", p.resumes as f64, "")
            .num("resumes_per_s", p.resumes as f64 / wall, "/s")
            .latencies("resume", &mut lat);
        if let Some(cpu) = usage.node_cpu {
            report.num("node_cpu_ms_per_resume", cpu * 1e3 / p.resumes as f64, "ms");
        }
        if let Some(cpu) = usage.own_cpu {
            report.num(
                "generator_cpu_ms_per_resume",
                cpu * 1e3 / p.resumes as f64,
                "ms",
            );
        }
        if let Some(note) = usage.bound_note() {
            report.note(format!("resumes: {note}"));
        }
    }
    Ok(report)
}

/// `count` attempts by one worker per user, each on a new connection closed right after:
/// password logins, or resumes with `tokens` (one per user). Returns each user's latest
/// session token, the latencies (connect + authenticate), the wall time and the usage.
async fn phase(
    target: &Target,
    users: &[String],
    count: usize,
    rate: Option<f64>,
    tokens: Option<Vec<String>>,
) -> Result<(Vec<String>, Latencies, f64, crate::measure::Usage), WorkloadError> {
    let next = Arc::new(AtomicUsize::new(0));
    let resuming = tokens.is_some();
    let meter = Meter::start(target.node_pid, target.threads);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (w, login) in users.iter().enumerate() {
        let target = target.clone();
        let login = login.clone();
        let next = next.clone();
        let mut token = tokens.as_ref().map(|t| t[w].clone());
        tasks.spawn(async move {
            let endpoint = target.endpoint()?;
            let mut lat = Latencies::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count {
                    return Ok::<_, WorkloadError>((w, token.unwrap_or_default(), lat));
                }
                if let Some(rate) = rate {
                    let at = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                let began = Instant::now();
                let conn = target.connect_on(&endpoint).await?;
                if resuming {
                    conn.resume(
                        token.as_deref().unwrap_or_default(),
                        &Target::device_of(&login),
                    )
                    .await
                    .map_err(|e| WorkloadError::request("resume", e))?;
                } else {
                    token = Some(target.login(&conn, &login).await?.token);
                }
                lat.record(began.elapsed());
                drop(conn);
            }
        });
    }
    let mut latest = vec![String::new(); users.len()];
    let mut lat = Latencies::default();
    while let Some(done) = tasks.join_next().await {
        let (w, token, l) = done??;
        latest[w] = token;
        lat.merge(&l);
    }
    let wall = start.elapsed().as_secs_f64().max(1e-6);
    Ok((latest, lat, wall, meter.finish()))
}
