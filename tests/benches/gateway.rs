//! `cargo bench -p veche-tests --bench gateway`: the HTTP gateway on a real node on loopback.
//! Prints a Markdown table for BENCHMARKS.md.
//!
//! - posting into an object discussion as an application, 16 clients at once;
//! - a business event's trip from `POST /api/v1/events` to a signed webhook request arriving
//!   at a receiver;
//! - topic messages published by one application and pulled and acknowledged by another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use veche_node::test_utils::{TestNode, smtp_sink, test_config};

#[path = "common.rs"]
mod common;
use common::{ms, percentile};

const CLIENTS: usize = 16;
const POSTS_PER_CLIENT: usize = 250;
const EVENTS: usize = 500;
const TOPIC_MESSAGES: usize = 5000;

#[derive(Clone)]
struct App {
    http: reqwest::Client,
    base: String,
    secret: String,
    instance: String,
}

impl App {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.secret)
            .header("Veche-Instance", &self.instance)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

async fn register(
    node: &TestNode,
    mail: &mut mpsc::UnboundedReceiver<veche_node::test_utils::Mail>,
    name: &str,
) -> App {
    let http = reqwest::Client::new();
    let base = node.http_url();
    let r = http
        .post(format!("{base}/api/v1/apps/register"))
        .json(&json!({"name": name, "email": "ops@bench.test"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 202);
    let code = mail.recv().await.expect("mail").code().expect("code");
    let instance = format!("{name}-1");
    let body: Value = http
        .post(format!("{base}/api/v1/apps/activate"))
        .json(&json!({"name": name, "code": code, "instance_id": instance}))
        .send()
        .await
        .expect("activate")
        .json()
        .await
        .expect("json");
    App {
        http,
        base,
        secret: body["secret"].as_str().expect("secret").to_owned(),
        instance,
    }
}

#[tokio::main]
async fn main() {
    let (port, mut mail) = smtp_sink().await.expect("smtp sink");
    let mut config = test_config();
    config.smtp.host = "127.0.0.1".into();
    config.smtp.port = port;
    config.apps.self_registration_domains = vec!["bench.test".into()];
    let node = TestNode::spawn_with(config).await.expect("node");
    let erp = register(&node, &mut mail, "erp").await;
    let warehouse = register(&node, &mut mail, "warehouse").await;
    let put = reqwest::Method::PUT;
    let post = reqwest::Method::POST;
    erp.call(
        put.clone(),
        "/api/v1/objects/invoice/B-1/discussion",
        json!({}),
    )
    .await;

    // 1. Posts.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let erp = erp.clone();
        let post = post.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(POSTS_PER_CLIENT);
            for i in 0..POSTS_PER_CLIENT {
                let t = Instant::now();
                erp.call(
                    post.clone(),
                    "/api/v1/objects/invoice/B-1/messages",
                    json!({"client_msg_id": format!("c{c}-{i}"), "text": format!("post {i}")}),
                )
                .await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut posts = Vec::new();
    for t in tasks {
        posts.extend(t.await.expect("client"));
    }
    let posts_elapsed = started.elapsed();
    posts.sort();

    // 2. Events to a webhook.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let seen = arrived.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            let done = done_tx.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                if let Some(key) = v["idempotency_key"].as_str() {
                    seen.lock().unwrap().insert(key.to_owned(), Instant::now());
                    let _ = done.send(());
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    erp.call(
        post.clone(),
        "/api/v1/webhooks",
        json!({"url": url, "kinds": ["bench.event"]}),
    )
    .await;
    let mut sent = HashMap::new();
    for i in 0..EVENTS {
        let key = format!("e{i}");
        sent.insert(key.clone(), Instant::now());
        erp.call(
            post.clone(),
            "/api/v1/events",
            json!({"kind": "bench.event", "payload": {"i": i}, "idempotency_key": key}),
        )
        .await;
        // One event at a time in flight to the receiver, so that each latency is the path's,
        // not the queue's.
        done_rx.recv().await.expect("delivery");
    }
    let arrived = arrived.lock().unwrap().clone();
    let mut events: Vec<Duration> = sent
        .iter()
        .filter_map(|(k, t)| arrived.get(k).map(|a| a.duration_since(*t)))
        .collect();
    events.sort();

    // 3. Topics.
    warehouse
        .call(put, "/api/v1/topics/bench/subscription", json!({}))
        .await;
    let started = Instant::now();
    for i in 0..TOPIC_MESSAGES {
        erp.call(
            post.clone(),
            "/api/v1/topics/bench/messages",
            json!({"payload": {"i": i}, "idempotency_key": format!("t{i}")}),
        )
        .await;
    }
    let published = started.elapsed();
    let started = Instant::now();
    let mut received = 0;
    while received < TOPIC_MESSAGES {
        let got = warehouse
            .call(
                post.clone(),
                "/api/v1/topics/bench/pull",
                json!({"max": 100}),
            )
            .await;
        let ids: Vec<i64> = got["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|x| x["id"].as_i64()).collect())
            .unwrap_or_default();
        received += ids.len();
        warehouse
            .call(
                post.clone(),
                "/api/v1/topics/bench/ack",
                json!({"ids": ids}),
            )
            .await;
    }
    let consumed = started.elapsed();

    let rate = |n: usize, d: Duration| format!("{:.0}/s", n as f64 / d.as_secs_f64());
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| posts into an object discussion as an application ({CLIENTS} clients × {POSTS_PER_CLIENT}) | {} ; p50 {} ; p99 {} |",
        rate(posts.len(), posts_elapsed),
        ms(percentile(&posts, 0.5)),
        ms(percentile(&posts, 0.99))
    );
    println!(
        "| business event → signed webhook request received ({EVENTS}, one at a time) | p50 {} ; p99 {} |",
        ms(percentile(&events, 0.5)),
        ms(percentile(&events, 0.99))
    );
    println!(
        "| topic: publish {TOPIC_MESSAGES} one by one / pull + ack in batches of 100 | {} / {} |",
        rate(TOPIC_MESSAGES, published),
        rate(TOPIC_MESSAGES, consumed)
    );
}
