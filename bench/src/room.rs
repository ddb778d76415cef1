//! `room`: senders post into one group as fast as their windows allow, or at a fixed rate;
//! every receiver must get every message exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use veche_client::Connection;
use veche_protocol::discussions::{Change, SendMessage};
use veche_protocol::{Event, Reply, Request};

use crate::measure::Meter;
use crate::report::Report;
use crate::stats::Latencies;
use crate::target::Target;
use crate::workload::{WorkloadError, connect_each};

/// What to run.
#[derive(Debug, Clone)]
pub struct RoomParams {
    /// Users posting.
    pub senders: usize,
    /// Users only receiving.
    pub receivers: usize,
    /// Sends each sender keeps in flight on its connection.
    pub window: usize,
    /// Messages a second over all senders; `None`: as fast as the windows allow.
    pub rate: Option<f64>,
    /// Messages over all senders.
    pub messages: u64,
    /// Each message's text is padded to this many bytes (at least its header).
    pub text_bytes: usize,
    /// A receiver that gets no event for this long gives up (the run reports what is missing).
    pub stall: Duration,
}

impl Default for RoomParams {
    fn default() -> Self {
        Self {
            senders: 1,
            receivers: 10,
            window: 32,
            rate: None,
            messages: 10_000,
            text_bytes: 60,
            stall: Duration::from_secs(30),
        }
    }
}

/// What a run found, beside its report.
#[derive(Debug, Clone)]
pub struct RoomOutcome {
    /// Messages sent (and acknowledged as stored).
    pub messages: u64,
    /// Distinct messages each receiver got.
    pub delivered: Vec<u64>,
    /// Deliveries of a message a receiver had already got, over all receivers.
    pub duplicates: u64,
    /// The figures.
    pub report: Report,
}

/// What one receiver saw.
#[derive(Debug)]
struct Received {
    distinct: u64,
    duplicates: u64,
    latencies: Latencies,
    /// Why it stopped before the end marker, if it did.
    ended: Option<String>,
}

/// Runs the workload once (a new group each time; the users are reused).
pub async fn room(target: &Target, p: &RoomParams) -> Result<RoomOutcome, WorkloadError> {
    if p.senders == 0 || p.window == 0 || p.messages == 0 {
        return Err(WorkloadError::Parameters(
            "room needs at least one sender, a window of one and one message",
        ));
    }
    if p.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(WorkloadError::Parameters("the rate must be above zero"));
    }
    let tag = format!("vb{:08x}", rand::random::<u32>());
    let sender_logins: Vec<String> = (0..p.senders).map(|i| target.login_of("s", i)).collect();
    let receiver_logins: Vec<String> = (0..p.receivers).map(|i| target.login_of("r", i)).collect();
    let all: Vec<String> = sender_logins
        .iter()
        .chain(&receiver_logins)
        .cloned()
        .collect();
    target.ensure_users(&all, 2).await?;

    // Each connection on its own endpoint (UDP socket and driver task), as separate clients.
    let senders: Vec<Arc<Connection>> = connect_each(target, &sender_logins, 4)
        .await?
        .into_iter()
        .map(|(c, _)| Arc::new(c))
        .collect();
    let receivers: Vec<Connection> = connect_each(target, &receiver_logins, 4)
        .await?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    // Senders read their events as clients do (their own messages come back to them): a
    // client that reads nothing falls behind and the node rightly closes it. The tasks end
    // with the workload, when this set is dropped.
    let mut drains = tokio::task::JoinSet::new();
    for conn in &senders {
        let conn = conn.clone();
        drains.spawn(async move { while conn.next_event().await.is_some() {} });
    }
    let members: Vec<String> = all[1..].to_vec();
    let group = match senders[0]
        .request(Request::CreateGroup {
            title: format!("bench {tag}"),
            members,
        })
        .await
    {
        Ok(Reply::Discussion { discussion }) => discussion.id,
        Ok(_) => return Err(WorkloadError::Unexpected("create_group")),
        Err(e) => return Err(WorkloadError::request("create_group", e)),
    };

    let per_sender: Vec<u64> = (0..p.senders as u64)
        .map(|s| p.messages / p.senders as u64 + u64::from(s < p.messages % p.senders as u64))
        .collect();
    let base = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    let mut ready = Vec::new();
    for (i, conn) in receivers.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        readers.spawn(receive(
            i,
            conn,
            group.clone(),
            tag.clone(),
            per_sender.clone(),
            base,
            p.stall,
            tx,
        ));
    }
    // Every receiver has seen the group created: its event stream is flowing.
    for rx in ready {
        if tokio::time::timeout(p.stall, rx).await.is_err() {
            return Err(WorkloadError::Stalled {
                what: "a receiver waiting for the group".to_owned(),
                secs: p.stall.as_secs(),
            });
        }
    }

    let meter = Meter::start(target.node_pid, target.threads);
    let start = Instant::now();
    let last_ack_us = Arc::new(AtomicU64::new(0));
    let mut senders_tasks = tokio::task::JoinSet::new();
    for (s, conn) in senders.iter().enumerate() {
        let next = Arc::new(AtomicU64::new(0));
        let count = per_sender[s];
        let per_second = p.rate.map(|r| r / p.senders as f64);
        for _ in 0..p.window.min(count.max(1) as usize) {
            let conn = conn.clone();
            let next = next.clone();
            let group = group.clone();
            let tag = tag.clone();
            let last_ack_us = last_ack_us.clone();
            let text_bytes = p.text_bytes;
            senders_tasks.spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= count {
                        return Ok::<(), WorkloadError>(());
                    }
                    if let Some(rate) = per_second {
                        let at = start + Duration::from_secs_f64(k as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let sent_us = base.elapsed().as_micros() as u64;
                    let mut text = format!("{tag} {s} {k} {sent_us} ");
                    while text.len() < text_bytes {
                        text.push('x');
                    }
                    let request = Request::Send(SendMessage {
                        files: Vec::new(),
                        discussion: group.clone(),
                        client_msg_id: format!("{tag}-{s}-{k}"),
                        text,
                        reply_to: None,
                        data: None,
                        actions: Vec::new(),
                    });
                    match conn.request(request).await {
                        Ok(Reply::Sent { .. }) => {
                            last_ack_us
                                .fetch_max(base.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                        Ok(_) => return Err(WorkloadError::Unexpected("send")),
                        Err(e) => return Err(WorkloadError::request("send", e)),
                    }
                }
            });
        }
    }
    while let Some(done) = senders_tasks.join_next().await {
        done??;
    }
    let stored_secs = (Duration::from_micros(last_ack_us.load(Ordering::Relaxed))
        .saturating_sub(start.duration_since(base)))
    .as_secs_f64()
    .max(1e-6);
    // The end marker: deliveries follow commit order, so a receiver that sees it has seen
    // every message before it, and any duplicate of them.
    match senders[0]
        .request(Request::Send(SendMessage {
            files: Vec::new(),
            discussion: group.clone(),
            client_msg_id: format!("{tag}-end"),
            text: format!("{tag} end"),
            reply_to: None,
            data: None,
            actions: Vec::new(),
        }))
        .await
    {
        Ok(Reply::Sent { .. }) => {}
        Ok(_) => return Err(WorkloadError::Unexpected("send")),
        Err(e) => return Err(WorkloadError::request("send (end marker)", e)),
    }
    let mut results: Vec<(usize, Received)> = Vec::new();
    while let Some(done) = readers.join_next().await {
        results.push(done?);
    }
    let delivered_secs = start.elapsed().as_secs_f64();
    let usage = meter.finish();
    drains.abort_all();
    results.sort_by_key(|(i, _)| *i);

    let mut latencies = Latencies::with_capacity((p.messages as usize) * p.receivers);
    let mut duplicates = 0;
    let mut delivered = Vec::new();
    let mut report = Report::new("room");
    for (i, r) in &results {
        latencies.merge(&r.latencies);
        duplicates += r.duplicates;
        delivered.push(r.distinct);
        if let Some(why) = &r.ended {
            report.note(format!(
                "receiver {i} stopped after {} of {} messages: {why}",
                r.distinct, p.messages
            ));
        }
    }
    let total_deliveries: u64 = delivered.iter().sum();
    let expected = p.messages * p.receivers as u64;
    report
        .num("senders", p.senders as f64, "")
        .num("receivers", p.receivers as f64, "")
        .num("window", p.window as f64, "")
        .num("rate_asked", p.rate.unwrap_or(0.0), "msg/s")
        .num("messages", p.messages as f64, "")
        .num("stored_msg_per_s", p.messages as f64 / stored_secs, "msg/s")
        .num(
            "deliveries_per_s",
            total_deliveries as f64 / delivered_secs,
            "/s",
        )
        .num(
            "deliveries_missing",
            (expected - total_deliveries.min(expected)) as f64,
            "",
        )
        .num("deliveries_duplicated", duplicates as f64, "")
        .latencies("delivery", &mut latencies);
    usage.add_to(&mut report, p.messages, "msg");
    Ok(RoomOutcome {
        messages: p.messages,
        delivered,
        duplicates,
        report,
    })
}

/// Reads one receiver's events until the end marker (or a stall), counting each message of
/// the run once and timing it from the moment its sender sent it.
#[allow(clippy::too_many_arguments)]
async fn receive(
    index: usize,
    conn: Connection,
    group: String,
    tag: String,
    per_sender: Vec<u64>,
    base: Instant,
    stall: Duration,
    ready: oneshot::Sender<()>,
) -> (usize, Received) {
    let mut seen: Vec<Vec<u64>> = per_sender
        .iter()
        .map(|n| vec![0u64; (*n as usize).div_ceil(64)])
        .collect();
    let total: u64 = per_sender.iter().sum();
    let mut out = Received {
        distinct: 0,
        duplicates: 0,
        latencies: Latencies::with_capacity(total as usize),
        ended: None,
    };
    let mut ready = Some(ready);
    loop {
        let event = match tokio::time::timeout(stall, conn.next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) => {
                let why = conn.closed().await;
                out.ended = Some(format!(
                    "the connection closed (code {:?}: {})",
                    why.code, why.reason
                ));
                break;
            }
            Err(_) => {
                out.ended = Some(format!("no event for {} s", stall.as_secs()));
                break;
            }
        };
        let Event::Discussion { event } = event else {
            continue;
        };
        if event.discussion != group {
            continue;
        }
        let text = match event.change {
            Change::Created { .. } => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            Change::MessagePosted { message } => message.text.unwrap_or_default(),
            _ => continue,
        };
        let now_us = base.elapsed().as_micros() as u64;
        let mut parts = text.split(' ');
        if parts.next() != Some(tag.as_str()) {
            continue;
        }
        let (Some(s), Some(k), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
            // "<tag> end": every message before it has been delivered.
            break;
        };
        let (Ok(s), Ok(k), Ok(t)) = (s.parse::<usize>(), k.parse::<u64>(), t.parse::<u64>()) else {
            continue;
        };
        let Some(words) = seen.get_mut(s) else {
            continue;
        };
        let Some(word) = words.get_mut((k / 64) as usize) else {
            continue;
        };
        let bit = 1u64 << (k % 64);
        if *word & bit != 0 {
            out.duplicates += 1;
            continue;
        }
        *word |= bit;
        out.distinct += 1;
        out.latencies
            .record(Duration::from_micros(now_us.saturating_sub(t)));
    }
    (index, out)
}
