//! `cargo bench -p veche-tests --bench messages`: message throughput and delivery latency in
//! one group on a real node on loopback. Prints a Markdown table for BENCHMARKS.md.
//!
//! Clients run in the same process as the node (they are measured together for CPU and RSS).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veche_client::protocol::discussions::{Change, SendMessage};
use veche_client::protocol::{Event, Reply, Request};
use veche_client::{ClientConfig, Connection, Trust};
use veche_node::test_utils::TestNode;

#[path = "common.rs"]
mod common;
use common::{ms, percentile};

const PASSWORD: &str = "benchmark password";

/// Send times by client message id, shared with the receivers.
type Sent = Arc<Mutex<HashMap<String, Instant>>>;

/// User + system CPU seconds of this process, and its peak RSS in MiB (Linux /proc).
fn process_usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let (_, cpu) = common::stat_cpu(&stat);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm / 1024.0)
}

async fn connect(node: &TestNode, login: &str, device: &str) -> Connection {
    let mut config = ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path()));
    config.timeout = Duration::from_secs(60);
    let conn = Connection::connect(&config).await.expect("connect");
    conn.login(login, PASSWORD, device, device)
        .await
        .expect("login");
    conn
}

/// Receivers: each records delivery latency of every message until it has `expect` of them.
fn spawn_receivers(
    receivers: Vec<Connection>,
    sent: Sent,
    expect: usize,
) -> Vec<tokio::task::JoinHandle<Vec<Duration>>> {
    receivers
        .into_iter()
        .map(|conn| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(expect);
                while latencies.len() < expect {
                    match tokio::time::timeout(Duration::from_secs(60), conn.next_event()).await {
                        Ok(Some(Event::Discussion { event })) => {
                            if let Change::MessagePosted { message } = event.change {
                                let id = message.text.unwrap_or_default();
                                let at = sent.lock().expect("lock").get(&id).copied();
                                if let Some(at) = at {
                                    latencies.push(at.elapsed());
                                }
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                latencies
            })
        })
        .collect()
}

struct Setup {
    node: TestNode,
    group: String,
    senders: Vec<Arc<Connection>>,
    receivers: Vec<Connection>,
}

async fn setup(senders: usize, receivers: usize) -> Setup {
    let mut config = veche_node::test_utils::test_config();
    // Clients share the two cores with the node here; under saturation they fall behind by
    // more than a production client on its own machine would.
    config.server.event_buffer = 1 << 18;
    let node = TestNode::spawn_with(config).await.expect("node");
    let mut members = Vec::new();
    for i in 0..senders {
        node.add_user(&format!("s{i}"), PASSWORD, false)
            .await
            .expect("user");
        members.push(format!("s{i}"));
    }
    for i in 0..receivers {
        node.add_user(&format!("r{i}"), PASSWORD, false)
            .await
            .expect("user");
        members.push(format!("r{i}"));
    }
    node.add_user("owner", PASSWORD, false).await.expect("user");
    let owner = connect(&node, "owner", "owner").await;
    let Reply::Discussion { discussion } = owner
        .request(Request::CreateGroup {
            title: "bench".into(),
            members,
        })
        .await
        .expect("group")
    else {
        panic!("expected a discussion");
    };
    let mut s = Vec::new();
    for i in 0..senders {
        s.push(Arc::new(
            connect(&node, &format!("s{i}"), &format!("s{i}")).await,
        ));
    }
    let mut r = Vec::new();
    for i in 0..receivers {
        let conn = connect(&node, &format!("r{i}"), &format!("r{i}")).await;
        r.push(conn);
    }
    // Let the creation events drain before measuring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Setup {
        node,
        group: discussion.id,
        senders: s,
        receivers: r,
    }
}

fn send_request(group: &str, id: &str) -> Request {
    Request::Send(SendMessage {
        files: Vec::new(),
        discussion: group.to_owned(),
        client_msg_id: id.to_owned(),
        text: id.to_owned(),
        reply_to: None,
        data: None,
        actions: Vec::new(),
    })
}

async fn max_rate(total: usize, in_flight_per_sender: usize) {
    let Setup {
        node,
        group,
        senders,
        receivers,
    } = setup(8, 10).await;
    let sent: Sent = Arc::default();
    let n_receivers = receivers.len();
    let per_task = total / (senders.len() * in_flight_per_sender);
    let sent_total = per_task * senders.len() * in_flight_per_sender;
    let collectors = spawn_receivers(receivers, sent.clone(), sent_total);
    let (cpu0, _) = process_usage();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, conn) in senders.iter().enumerate() {
        for t in 0..in_flight_per_sender {
            let conn = conn.clone();
            let group = group.clone();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..per_task {
                    let id = format!("m-{s}-{t}-{k}");
                    sent.lock()
                        .expect("lock")
                        .insert(id.clone(), Instant::now());
                    conn.request(send_request(&group, &id)).await.expect("send");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let stored_secs = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for c in collectors {
        latencies.extend(c.await.expect("receiver"));
    }
    let delivered_secs = start.elapsed().as_secs_f64();
    let (cpu1, rss) = process_usage();
    latencies.sort();
    println!(
        "| maximum rate: {} senders × {in_flight_per_sender} in flight, {n_receivers} online receivers, {sent_total} messages | {:.0} msg/s stored, {:.0} deliveries/s ({} of {}) | {} / {} / {} | {:.1} s CPU for {:.1} s wall, peak RSS {:.0} MiB |",
        senders.len(),
        sent_total as f64 / stored_secs,
        latencies.len() as f64 / delivered_secs,
        latencies.len(),
        sent_total * n_receivers,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        cpu1 - cpu0,
        delivered_secs,
        rss,
    );
    drop(node);
}

async fn fixed_rate(rate: u32, seconds: u32) {
    let Setup {
        node,
        group,
        senders,
        receivers,
    } = setup(1, 10).await;
    let total = (rate * seconds) as usize;
    let sent: Sent = Arc::default();
    let n_receivers = receivers.len();
    let collectors = spawn_receivers(receivers, sent.clone(), total);
    let (cpu0, _) = process_usage();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let sender = senders[0].clone();
    let mut pending = Vec::with_capacity(total);
    for k in 0..total {
        tick.tick().await;
        let id = format!("f-{k}");
        sent.lock()
            .expect("lock")
            .insert(id.clone(), Instant::now());
        let conn = sender.clone();
        let group = group.clone();
        pending.push(tokio::spawn(async move {
            if let Err(e) = conn.request(send_request(&group, &id)).await {
                panic!("send: {e:?}, close: {:?}", conn.quic().close_reason());
            }
        }));
    }
    for p in pending {
        p.await.expect("sender");
    }
    let mut latencies = Vec::new();
    for c in collectors {
        latencies.extend(c.await.expect("receiver"));
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu1, rss) = process_usage();
    latencies.sort();
    println!(
        "| fixed rate: {rate} msg/s for {seconds} s, {n_receivers} online receivers | {} deliveries of {} | {} / {} / {} | {:.1} s CPU for {:.1} s wall, peak RSS {:.0} MiB |",
        latencies.len(),
        total * n_receivers,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        cpu1 - cpu0,
        secs,
        rss,
    );
    drop(node);
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        println!(
            "| scenario | throughput | delivery latency p50 / p99 / max | process CPU and memory |"
        );
        println!("|---|---|---|---|");
        fixed_rate(1000, 5).await;
        max_rate(20_000, 16).await;
    });
}
