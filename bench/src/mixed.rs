//! `mixed`: an office day, compressed: many clients connected and mostly idle, a few active
//! groups where people type and then post, and presence changing (going away, coming back,
//! do not disturb). Measures what the node spends per second and per message on all of it.
//!
//! Object discussions need an application or a context provider plugin installed on the
//! node; the generator sets up neither, so they are not part of this day yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use veche_client::Connection;
use veche_protocol::discussions::{Change, SendMessage};
use veche_protocol::presence::PresenceChoice;
use veche_protocol::{Event, Reply, Request};

use crate::idle::authenticate_all;
use crate::measure::Meter;
use crate::report::Report;
use crate::stats::Latencies;
use crate::target::{SetupError, Target};
use crate::workload::WorkloadError;

/// What to run.
#[derive(Debug, Clone)]
pub struct MixedParams {
    /// Users connected, one connection each.
    pub users: usize,
    /// Active groups.
    pub groups: usize,
    /// Members of each group (taken from the users in turn).
    pub group_size: usize,
    /// How long the day lasts.
    pub duration: Duration,
    /// Messages a second over all groups.
    pub message_rate: f64,
    /// Presence changes a second over all users.
    pub presence_rate: f64,
    /// Logins under way at once while connecting.
    pub parallel: usize,
}

impl Default for MixedParams {
    fn default() -> Self {
        Self {
            users: 200,
            groups: 5,
            group_size: 8,
            duration: Duration::from_secs(60),
            message_rate: 5.0,
            presence_rate: 2.0,
            parallel: 8,
        }
    }
}

/// Counts shared by the event readers.
#[derive(Debug, Default)]
struct Seen {
    deliveries: AtomicU64,
    typing: AtomicU64,
    presence: AtomicU64,
    latencies: Mutex<Latencies>,
}

/// An exponentially distributed pause with this mean rate (a Poisson process of events).
fn pause(rate: f64) -> Duration {
    let u: f64 = rand::random_range(f64::EPSILON..1.0);
    Duration::from_secs_f64(-u.ln() / rate)
}

/// Runs the day once (new groups each time; users reused).
pub async fn mixed(target: &Target, p: &MixedParams) -> Result<Report, WorkloadError> {
    if p.users < 2 || p.group_size < 2 || p.group_size > p.users {
        return Err(WorkloadError::Parameters(
            "mixed needs groups of 2 or more, and at least as many users as a group holds",
        ));
    }
    if p.message_rate.is_nan()
        || p.message_rate <= 0.0
        || p.presence_rate.is_nan()
        || p.presence_rate < 0.0
    {
        return Err(WorkloadError::Parameters(
            "the message rate must be above zero, the presence rate at least zero",
        ));
    }
    let tag = format!("vb{:08x}", rand::random::<u32>());
    let logins: Vec<String> = (0..p.users).map(|i| target.login_of("m", i)).collect();
    target.ensure_users(&logins, 2).await?;
    let endpoints: Vec<quinn::Endpoint> = (0..p.users.div_ceil(256))
        .map(|_| target.endpoint())
        .collect::<Result<_, SetupError>>()?;
    let (held, _) = authenticate_all(target, &logins, &endpoints, p.parallel, None).await?;
    let conns: Vec<Arc<Connection>> = held.into_iter().map(|(c, _)| Arc::new(c)).collect();

    // Everyone reads their events, as a client does, until the day is over.
    let base = Instant::now();
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = tokio::task::JoinSet::new();
    for conn in &conns {
        readers.spawn(read_events(
            conn.clone(),
            tag.clone(),
            base,
            seen.clone(),
            stop_rx.clone(),
        ));
    }

    // The groups: members in turn from the users.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for g in 0..p.groups {
        let members: Vec<usize> = (0..p.group_size)
            .map(|m| (g * p.group_size + m) % p.users)
            .collect();
        let others = members[1..].iter().map(|&m| logins[m].clone()).collect();
        let id = match conns[members[0]]
            .request(Request::CreateGroup {
                title: format!("office {tag} {g}"),
                members: others,
            })
            .await
        {
            Ok(Reply::Discussion { discussion }) => discussion.id,
            Ok(_) => return Err(WorkloadError::Unexpected("create_group")),
            Err(e) => return Err(WorkloadError::request("create_group", e)),
        };
        groups.push((id, members));
    }

    let meter = Meter::start(target.node_pid, target.threads);
    let start = Instant::now();
    let end = start + p.duration;
    let mut actions = tokio::task::JoinSet::new();
    let mut next_message = start + pause(p.message_rate);
    let mut next_presence = start
        + if p.presence_rate > 0.0 {
            pause(p.presence_rate)
        } else {
            p.duration * 2
        };
    let mut messages = 0u64;
    let mut expected = 0u64;
    let mut presence_changes = 0u64;
    while next_message.min(next_presence) < end {
        if next_message <= next_presence {
            tokio::time::sleep_until(next_message.into()).await;
            next_message += pause(p.message_rate);
            let (group, members) = &groups[rand::random_range(0..groups.len())];
            let author = members[rand::random_range(0..members.len())];
            let conn = conns[author].clone();
            let (group, tag, n) = (group.clone(), tag.clone(), messages);
            messages += 1;
            // Every member's connection gets the message, the author's too.
            expected += members.len() as u64;
            actions.spawn(async move {
                // Typing first, for one to three seconds, as a person does.
                conn.request(Request::Typing {
                    discussion: group.clone(),
                    typing: true,
                })
                .await
                .map_err(|e| WorkloadError::request("typing", e))?;
                tokio::time::sleep(Duration::from_millis(rand::random_range(1000..3000))).await;
                let sent_us = base.elapsed().as_micros() as u64;
                let request = Request::Send(SendMessage {
                    files: Vec::new(),
                    discussion: group,
                    client_msg_id: format!("{tag}-{n}"),
                    text: format!("{tag} {sent_us} {}", "ok, I will look at it today"),
                    reply_to: None,
                    data: None,
                    actions: Vec::new(),
                });
                match conn.request(request).await {
                    Ok(Reply::Sent { .. }) => Ok::<(), WorkloadError>(()),
                    Ok(_) => Err(WorkloadError::Unexpected("send")),
                    Err(e) => Err(WorkloadError::request("send", e)),
                }
            });
        } else {
            tokio::time::sleep_until(next_presence.into()).await;
            next_presence += pause(p.presence_rate.max(f64::EPSILON));
            let conn = conns[rand::random_range(0..conns.len())].clone();
            presence_changes += 1;
            let request = match rand::random_range(0..4) {
                0 => Request::Activity { idle_ms: 600_000 },
                1 => Request::Activity { idle_ms: 0 },
                2 => Request::SetPresence {
                    choice: PresenceChoice::Dnd,
                    status_text: "in a meeting".to_owned(),
                },
                _ => Request::SetPresence {
                    choice: PresenceChoice::Auto,
                    status_text: String::new(),
                },
            };
            actions.spawn(async move {
                conn.request(request)
                    .await
                    .map(|_| ())
                    .map_err(|e| WorkloadError::request("presence", e))
            });
        }
        // Finished actions are collected as the day goes, so that an error stops it early.
        while let Some(done) = actions.try_join_next() {
            done??;
        }
    }
    while let Some(done) = actions.join_next().await {
        done??;
    }
    // Deliveries still under way: wait for them, at most 30 s without progress.
    let mut last = (seen.deliveries.load(Ordering::Relaxed), Instant::now());
    while seen.deliveries.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = seen.deliveries.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let usage = meter.finish();
    let _ = stop_tx.send(true);
    while readers.join_next().await.is_some() {}

    let delivered = seen.deliveries.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *seen.latencies.lock().await);
    let mut report = Report::new("mixed");
    report
        .num("users", p.users as f64, "")
        .num("groups", p.groups as f64, "")
        .num("group_size", p.group_size as f64, "")
        .num("messages", messages as f64, "")
        .num("presence_changes", presence_changes as f64, "")
        .num("deliveries", delivered as f64, "")
        .num(
            "deliveries_missing",
            expected.saturating_sub(delivered) as f64,
            "",
        )
        .num(
            "typing_events_received",
            seen.typing.load(Ordering::Relaxed) as f64,
            "",
        )
        .num(
            "presence_events_received",
            seen.presence.load(Ordering::Relaxed) as f64,
            "",
        )
        .latencies("delivery", &mut latencies);
    usage.add_to(&mut report, messages, "msg");
    Ok(report)
}

async fn read_events(
    conn: Arc<Connection>,
    tag: String,
    base: Instant,
    seen: Arc<Seen>,
    mut stop: watch::Receiver<bool>,
) {
    let mut local = Latencies::default();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            event = conn.next_event() => match event {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            Event::Discussion { event } => {
                if let Change::MessagePosted { message } = event.change {
                    let text = message.text.unwrap_or_default();
                    let mut parts = text.split(' ');
                    if parts.next() == Some(tag.as_str())
                        && let Some(Ok(t)) = parts.next().map(str::parse::<u64>)
                    {
                        let now = base.elapsed().as_micros() as u64;
                        local.record(Duration::from_micros(now.saturating_sub(t)));
                        seen.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Event::Typing { .. } => {
                seen.typing.fetch_add(1, Ordering::Relaxed);
            }
            Event::Presence { .. } => {
                seen.presence.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    seen.latencies.lock().await.merge(&local);
}
