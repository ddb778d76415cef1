//! `cargo bench -p veche-tests`: measures a real node on loopback and prints a Markdown table
//! for BENCHMARKS.md. Numbers, not assertions: these machines are shared and noisy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use veche_client::protocol::{ClientFrame, Request, frame};
use veche_client::{ClientConfig, Connection, Trust};
use veche_node::test_utils::TestNode;

const PASSWORD: &str = "benchmark password";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn row(what: &str, value: String) {
    println!("| {what} | {value} |");
}

fn codec() {
    let frame_value = ClientFrame::Request {
        id: 42,
        request: Request::Login {
            login: "ivanov".into(),
            password: "correct horse battery staple".into(),
            device_id: "0b5c3c3e-6a1f-4f4e-9e4e-3f2a1b0c9d8e".into(),
            device_name: "Рабочий ноутбук".into(),
        },
    };
    let n = 200_000;
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        let encoded = frame::encode(&frame_value, 1 << 20).expect("encode");
        bytes += encoded.len();
        let decoded: ClientFrame = frame::decode(&encoded[4..]).expect("decode");
        std::hint::black_box(decoded);
    }
    let per = start.elapsed() / n;
    let size = bytes / n as usize;
    row(
        &format!("frame encode + decode (login request, {size} bytes)"),
        format!("{:.2} µs", per.as_secs_f64() * 1e6),
    );
}

async fn connect(node: &TestNode) -> Connection {
    let config = ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path()));
    Connection::connect(&config).await.expect("connect")
}

async fn logins(node: &TestNode) {
    let n = 64;
    let connections = 4;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let conn = connect(node).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..n / connections {
                conn.login("bench", PASSWORD, &format!("dev-{c}-{i}"), "bench")
                    .await
                    .expect("login");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    row(
        &format!("password logins, {connections} connections (argon2id 19 MiB, t=2)"),
        format!("{:.0} logins/s", f64::from(n) / secs),
    );
}

async fn ping_latency(node: &TestNode) {
    let conn = connect(node).await;
    conn.login("bench", PASSWORD, "latency", "bench")
        .await
        .expect("login");
    let n = 5_000;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.request(Request::Ping).await.expect("ping");
        samples.push(t.elapsed());
    }
    samples.sort();
    row(
        "request round trip, one connection, sequential (p50 / p99)",
        format!(
            "{:.0} µs / {:.0} µs",
            percentile(&samples, 0.5).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6
        ),
    );
}

async fn throughput(node: &TestNode) {
    let connections = 8;
    let per_connection = 4_000;
    let in_flight = 16;
    let mut conns = Vec::new();
    for c in 0..connections {
        let conn = connect(node).await;
        conn.login("bench", PASSWORD, &format!("tp-{c}"), "bench")
            .await
            .expect("login");
        conns.push(Arc::new(conn));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for conn in &conns {
        for _ in 0..in_flight {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_connection / in_flight {
                    conn.request(Request::Whoami).await.expect("whoami");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    let total = connections * per_connection;
    row(
        &format!(
            "authenticated requests (whoami: one SQLite read), {connections} connections × {in_flight} in flight"
        ),
        format!(
            "{:.0} requests/s",
            total as f64 / start.elapsed().as_secs_f64()
        ),
    );
}

async fn connects(node: &TestNode) {
    let n = 200;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let conn = connect(node).await;
        samples.push(start.elapsed());
        drop(conn);
    }
    samples.sort();
    row(
        "new connection: QUIC Retry + TLS 1.3 handshake + hello/welcome (p50 / p99)",
        format!(
            "{:.2} ms / {:.2} ms",
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3
        ),
    );
}

async fn revocation(node: &TestNode) {
    use veche_client::protocol::admin::AdminRequest;
    let n = 20;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let conn = connect(node).await;
        let logged = conn
            .login("bench", PASSWORD, &format!("revoke-{i}"), "bench")
            .await
            .expect("login");
        let start = Instant::now();
        node.admin(AdminRequest::Revoke {
            login: "bench".into(),
            session_id: Some(logged.session.id),
        })
        .await
        .expect("revoke");
        conn.closed().await;
        samples.push(start.elapsed());
    }
    samples.sort();
    row(
        "session revoked → its connection closed, as the client sees it (p50 / max)",
        format!(
            "{:.1} ms / {:.1} ms",
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3
        ),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let node = TestNode::spawn().await.expect("node");
        node.add_user("bench", PASSWORD, false).await.expect("user");
        println!("| what | result |");
        println!("|---|---|");
        codec();
        connects(&node).await;
        logins(&node).await;
        ping_latency(&node).await;
        throughput(&node).await;
        revocation(&node).await;
    });
}
