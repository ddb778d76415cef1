//! `cargo bench -p veche-tests --bench plugins`: the plugin host's costs on a real node.
//!
//! - a bot event: the dispatcher's call of `on-message` on a pooled (warm) instance, on the
//!   plugin threads where dispatchers run;
//! - `authorize` of a context provider, cached and uncached;
//! - a spinning plugin (a bot whose `on-event` loops until its 50 ms CPU budget stops it,
//!   called back to back) against other users' message round trip p99;
//! - how long an infinite loop runs before the CPU budget stops it.
//!
//! Prints a Markdown table for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use veche_client::protocol::admin::AdminRequest;
use veche_client::protocol::discussions::SendMessage;
use veche_client::protocol::{Reply, Request};
use veche_client::{ClientConfig, Connection, Trust};
use veche_node::test_utils::{TestNode, plugin_folder, test_config};

#[path = "common.rs"]
mod common;
use common::{ms, percentile};

const PASSWORD: &str = "benchmark password";

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

async fn install(
    node: &TestNode,
    name: &str,
    grants: &[&str],
    config: &[(&str, &str)],
) -> tempfile::TempDir {
    let folder = plugin_folder(name).expect("plugin built");
    node.admin(AdminRequest::PluginInstall {
        path: folder.path().display().to_string(),
        grants: grants.iter().map(|g| (*g).to_owned()).collect(),
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    })
    .await
    .expect("installed");
    folder
}

async fn connect(node: &TestNode, login: &str) -> Connection {
    node.add_user(login, PASSWORD, false).await.expect("user");
    let conn = Connection::connect(&ClientConfig::new(
        node.quic_addr(),
        Trust::CaFile(node.ca_path()),
    ))
    .await
    .expect("connect");
    conn.login(login, PASSWORD, login, login)
        .await
        .expect("login");
    conn
}

/// Mean time per call of `f`, after a warm-up.
async fn per_call(n: u32, mut f: impl AsyncFnMut()) -> Duration {
    for _ in 0..n / 10 {
        f().await;
    }
    let start = Instant::now();
    for _ in 0..n {
        f().await;
    }
    start.elapsed() / n
}

/// Round trips of posting into a group, one at a time, for `secs`; sorted.
async fn post_round_trips(conn: &Connection, group: &str, secs: u64, tag: &str) -> Vec<Duration> {
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let request = Request::Send(SendMessage {
            files: Vec::new(),
            discussion: group.to_owned(),
            client_msg_id: format!("{tag}-{i}"),
            text: "ping".into(),
            reply_to: None,
            data: None,
            actions: Vec::new(),
        });
        let start = Instant::now();
        conn.request(request).await.expect("sent");
        out.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out.sort();
    out
}

async fn run() {
    let mut config = test_config();
    config.plugins.breaker_failures = 1_000_000;
    let node = TestNode::spawn_with(config).await.expect("node");
    let _ctx = install(&node, "invoice-context", &["kv"], &[]).await;
    let _echo = install(&node, "echo-bot", &[], &[]).await;
    let _hostile = install(&node, "hostile", &[], &[("mode", "loop")]).await;
    // Both read their events, as clients do (a client that does not is disconnected).
    let anna = std::sync::Arc::new(connect(&node, "anna").await);
    let boris = std::sync::Arc::new(connect(&node, "boris").await);
    for conn in [anna.clone(), boris.clone()] {
        tokio::spawn(async move { while conn.next_event().await.is_some() {} });
    }
    let group = match anna
        .request(Request::CreateGroup {
            title: "bench".into(),
            members: vec!["boris".into()],
        })
        .await
        .expect("group")
    {
        Reply::Discussion { discussion } => discussion.id,
        other => panic!("{other:?}"),
    };

    // Bot event on a warm instance.
    node.time_bot_calls("echo-bot", &group, "warm-up", 2_000)
        .await
        .expect("bot calls");
    let bot = node
        .time_bot_calls("echo-bot", &group, "hello", 20_000)
        .await
        .expect("bot calls")
        / 20_000;

    // Authorize: the invoice's data in the plugin's store, then cached and uncached answers.
    node.admin(AdminRequest::EventPost {
        source: "erp".into(),
        kind: "invoice.posted".into(),
        object: Some(veche_client::protocol::discussions::ObjectRef {
            application: "erp".into(),
            object_type: "invoice".into(),
            object_id: "INV-1".into(),
        }),
        payload: r#"{"number":"1","counterparty":"c","amount":"1","readers":["anna@test.local"]}"#
            .into(),
        idempotency_key: "bench".into(),
    })
    .await
    .expect("event");
    while node
        .object_access("erp", "invoice", "INV-1", "anna@test.local")
        .await
        != Some("read")
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cached = per_call(200_000, async || {
        node.object_access("erp", "invoice", "INV-1", "anna@test.local")
            .await;
    })
    .await;
    let mut n = 0u64;
    let uncached = per_call(20_000, async || {
        // A new user each time: never in the cache.
        n += 1;
        node.object_access("erp", "invoice", "INV-1", &format!("u{n}@test.local"))
            .await;
    })
    .await;

    // An infinite loop under a 50 ms CPU budget.
    let mut stops = Vec::new();
    for i in 0..10 {
        let start = Instant::now();
        node.object_access("erp", "hostile", &format!("x{i}"), "anna@test.local")
            .await;
        stops.push(start.elapsed());
    }
    stops.sort();

    // Other users' round trips, quiet and next to a plugin spinning back to back.
    // Quiet and spinning periods alternate (8 rounds of 2 s each), so that drift in the
    // machine's load falls on both sides alike.
    let node = std::sync::Arc::new(node);
    let (mut quiet, mut busy, mut spin_calls) = (Vec::new(), Vec::new(), 0u64);
    for round in 0..8 {
        quiet.extend(post_round_trips(&anna, &group, 2, &format!("quiet{round}")).await);
        let spinning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        // The spinner is a task of its own, as a connection's request would be.
        let spinner = tokio::spawn({
            let spinning = spinning.clone();
            let node = node.clone();
            async move {
                let mut calls = 0u64;
                while spinning.load(std::sync::atomic::Ordering::Relaxed) {
                    calls += 1;
                    let _ = node.call_bot_event("hostile", "hostile.poke").await;
                }
                calls
            }
        });
        busy.extend(post_round_trips(&anna, &group, 2, &format!("spin{round}")).await);
        spinning.store(false, std::sync::atomic::Ordering::Relaxed);
        spin_calls += spinner.await.expect("spinner");
    }
    quiet.sort();
    busy.sort();
    drop(boris);

    let p = |v: &[Duration], q| percentile(v, q);
    println!("| Measure | Result |");
    println!("|---|---|");
    println!(
        "| bot event, `on-message` on a warm instance (mean of 20,000) | {} |",
        us(bot)
    );
    println!("| `authorize`, cached (mean of 200,000) | {} |", us(cached));
    println!(
        "| `authorize`, uncached: one plugin call (mean of 20,000) | {} |",
        us(uncached)
    );
    println!(
        "| infinite loop stopped after (50 ms CPU budget, 10 runs) | p50 {}, max {} |",
        ms(p(&stops, 0.5)),
        ms(p(&stops, 1.0))
    );
    println!(
        "| others' message round trip, quiet ({} posts) | p50 {}, p99 {} |",
        quiet.len(),
        ms(p(&quiet, 0.5)),
        ms(p(&quiet, 0.99))
    );
    println!(
        "| same, next to a plugin spinning at its CPU limit ({} posts, {spin_calls} spins) | p50 {}, p99 {} ({:+.0} % p99) |",
        busy.len(),
        ms(p(&busy, 0.5)),
        ms(p(&busy, 0.99)),
        (p(&busy, 0.99).as_secs_f64() / p(&quiet, 0.99).as_secs_f64().max(1e-9) - 1.0) * 100.0
    );
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
