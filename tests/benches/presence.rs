//! `cargo bench -p veche-tests --bench presence`: a presence storm on a real node on loopback.
//! Prints a Markdown row for BENCHMARKS.md.
//!
//! 2,000 users, each connected over QUIC and a member of 10 groups of 20 (drawn so that each has
//! about 190 different contacts), change their presence once a second (`set_presence`,
//! alternating available and away, so every change is also saved). The node runs on a tokio
//! runtime of its own (2 workers, threads named `veche-node`), the clients on another
//! (`bench-client`), so that the node's CPU can be told from the clients' by thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use veche_client::protocol::presence::PresenceChoice;
use veche_client::protocol::{Event, Reply, Request};
use veche_client::{ClientConfig, Connection, Trust};
use veche_node::test_utils::{TestNode, test_config};

#[path = "common.rs"]
mod common;
use common::{ms, percentile};

const USERS: usize = 2000;
const GROUP: usize = 20;
const LAYERS: usize = 10;
const WARMUP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(10);
/// Multipliers coprime with 2,000: each layer groups users differently.
const SPREAD: [usize; LAYERS] = [1, 3, 7, 9, 11, 13, 17, 19, 21, 23];

/// CPU seconds of this process's threads: (node, clients). Linux /proc, 100 ticks a second.
fn cpu_by_thread() -> (f64, f64) {
    let (mut node, mut clients) = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0);
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (comm, cpu) = common::stat_cpu(&stat);
        if comm.starts_with("bench-client") {
            clients += cpu;
        } else {
            node += cpu;
        }
    }
    (node, clients)
}

fn main() {
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("veche-node")
        .enable_all()
        .build()
        .expect("node runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");
    let mut config = test_config();
    config.server.max_connections_per_ip = 5000;
    config.server.max_unauthenticated_per_ip = 5000;
    config.presence.coalesce_ms = 1000;
    config.http.enabled = false;
    let node = node_rt
        .block_on(TestNode::spawn_with(config))
        .expect("node");
    let sessions = node_rt
        .block_on(node.bench_sessions("u", USERS))
        .expect("users");
    let client_config = {
        let mut c = ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path()));
        c.timeout = Duration::from_secs(20);
        c
    };
    client_rt.block_on(storm(client_config, sessions));
    node_rt.block_on(async {
        let mut node = node;
        node.stop().await;
    });
}

async fn storm(config: ClientConfig, sessions: Vec<(String, String)>) {
    let started = Instant::now();
    let connected = Arc::new(AtomicU64::new(0));
    let conns: Vec<Arc<Connection>> = futures_util::stream::iter(sessions)
        .map(|(_, token)| {
            let config = config.clone();
            let connected = connected.clone();
            async move {
                // A handshake lost in the crowd is tried again, as a client would.
                let mut attempts = 0;
                let conn = loop {
                    match Connection::connect(&config).await {
                        Ok(c) => break c,
                        Err(e) if attempts < 3 => {
                            attempts += 1;
                            eprintln!(
                                "connect failed after {} connections ({e}); again",
                                connected.load(Ordering::Relaxed)
                            );
                        }
                        Err(e) => panic!("connect: {e}"),
                    }
                };
                connected.fetch_add(1, Ordering::Relaxed);
                conn.resume(&token, "bench").await.expect("resume");
                Arc::new(conn)
            }
        })
        .buffered(64)
        .collect()
        .await;
    eprintln!(
        "{USERS} connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Groups: in layer k, user i sits in group (i * SPREAD[k] mod USERS) / GROUP.
    let per_layer = USERS / GROUP;
    let mut created = 0;
    for (k, spread) in SPREAD.iter().enumerate() {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); per_layer];
        for i in 0..USERS {
            groups[(i * spread % USERS) / GROUP].push(i);
        }
        let requests = groups.into_iter().enumerate().map(|(g, members)| {
            let owner = conns[members[0]].clone();
            async move {
                let reply = owner
                    .request(Request::CreateGroup {
                        title: format!("layer {k} group {g}"),
                        members: members[1..].iter().map(|m| format!("u{m}")).collect(),
                    })
                    .await
                    .expect("group");
                assert!(matches!(reply, Reply::Discussion { .. }));
            }
        });
        futures_util::stream::iter(requests)
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        created += per_layer;
    }
    eprintln!("{created} groups created");

    let events = Arc::new(AtomicU64::new(0));
    let entries = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = conns
        .iter()
        .map(|conn| {
            let conn = conn.clone();
            let (events, entries) = (events.clone(), entries.clone());
            tokio::spawn(async move {
                while let Some(event) = conn.next_event().await {
                    if let Event::Presence { users } = event {
                        events.fetch_add(1, Ordering::Relaxed);
                        entries.fetch_add(users.len() as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Let the group creations' presence reloads settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let end = Instant::now() + WARMUP + MEASURE;
    let changers: Vec<_> = conns
        .iter()
        .enumerate()
        .map(|(i, conn)| {
            let conn = conn.clone();
            tokio::spawn(async move {
                // Spread the users over the second.
                tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / USERS as u64))
                    .await;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut latencies = Vec::new();
                let mut away = false;
                loop {
                    let at = tick.tick().await;
                    if Instant::now() >= end {
                        return latencies;
                    }
                    away = !away;
                    let choice = if away {
                        PresenceChoice::Away
                    } else {
                        PresenceChoice::Auto
                    };
                    let sent = Instant::now();
                    conn.request(Request::SetPresence {
                        choice,
                        status_text: String::new(),
                    })
                    .await
                    .expect("set_presence");
                    if at.into_std() >= end - MEASURE {
                        latencies.push(sent.elapsed());
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(WARMUP).await;
    let (node0, clients0) = cpu_by_thread();
    let (events0, entries0) = (
        events.load(Ordering::Relaxed),
        entries.load(Ordering::Relaxed),
    );
    let measured = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let secs = measured.elapsed().as_secs_f64();
    let (node1, clients1) = cpu_by_thread();
    let (events1, entries1) = (
        events.load(Ordering::Relaxed),
        entries.load(Ordering::Relaxed),
    );
    let mut latencies = Vec::new();
    for c in changers {
        latencies.extend(c.await.expect("changer"));
    }
    latencies.sort();
    for r in readers {
        r.abort();
    }
    println!(
        "| presence storm: {USERS} users, {LAYERS} groups of {GROUP} each, 1 change/user/s | {:.0} changes/s | {:.0} presence events/s, {:.0} user updates/s delivered | set_presence p50 {} / p99 {} | node {:.0} % of one core ({:.1} s CPU in {:.1} s); clients {:.1} s |",
        latencies.len() as f64 / secs,
        (events1 - events0) as f64 / secs,
        (entries1 - entries0) as f64 / secs,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        (node1 - node0) / secs * 100.0,
        node1 - node0,
        secs,
        clients1 - clients0,
    );
}
