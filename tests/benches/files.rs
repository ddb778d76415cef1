//! `cargo bench -p veche-tests --bench files`: file transfer over QUIC on loopback. One
//! 256 MB upload and download, then 8 clients uploading 32 MB each at once; throughput, the
//! node's resident-set growth, and how much identical content costs (deduplication). Numbers,
//! not assertions: these machines are shared and noisy.

use std::time::Instant;

#[path = "generated.rs"]
mod generated;

use generated::Generated;
use veche_client::protocol::Request;
use veche_client::protocol::files::NewUpload;
use veche_client::{ClientConfig, Connection, Trust};
use veche_node::test_utils::{TestNode, test_config};

const PASSWORD: &str = "benchmark password";

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn upload(conn: &Connection, discussion: &str, size: u64, seed: u64) -> String {
    let (sha256, _) = veche_client::sha256_of(Generated::new(size, seed))
        .await
        .expect("hash");
    let up = conn
        .create_upload(NewUpload {
            discussion: discussion.to_owned(),
            name: format!("{seed}.bin"),
            size,
            sha256,
        })
        .await
        .expect("create upload");
    conn.send_upload(&up.id, 0, Generated::new(size, seed), |_| {})
        .await
        .expect("upload")
        .id
}

fn row(what: &str, value: String) {
    println!("| {what} | {value} |");
}

fn mb_per_s(bytes: u64, secs: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / secs / 1e6)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut config = test_config();
        config.files.max_size_mb = 512;
        config.files.quota_mb = 0;
        config.http.enabled = false;
        let node = TestNode::spawn_with(config).await.expect("node");
        node.add_user("alice", PASSWORD, false).await.expect("user");
        let client = ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path()));
        let alice = Connection::connect(&client).await.expect("connect");
        alice.login("alice", PASSWORD, "bench", "bench").await.expect("login");
        let group = match alice
            .request(Request::CreateGroup {
                title: "bench".into(),
                members: Vec::new(),
            })
            .await
            .expect("group")
        {
            veche_client::protocol::Reply::Discussion { discussion } => discussion.id,
            other => panic!("{other:?}"),
        };
        println!("| what | result |\n|---|---|");

        let size: u64 = 256 << 20;
        let before = rss_kib();
        let start = Instant::now();
        let file = upload(&alice, &group, size, 7).await;
        let secs = start.elapsed().as_secs_f64();
        // Hashing the source first is the client's work; the transfer itself is what follows.
        row(
            "one 256 MB upload (client hashes, then sends; node writes, fsyncs every MiB, verifies)",
            mb_per_s(size, secs),
        );
        let start = Instant::now();
        let (_, n) = alice
            .download(&file, 0, false, tokio::io::sink())
            .await
            .expect("download");
        row(
            "one 256 MB download (node and client both verify SHA-256)",
            mb_per_s(n, start.elapsed().as_secs_f64()),
        );
        row(
            "peak resident set growth of node + client for the two",
            format!("{} MB", rss_kib().saturating_sub(before) / 1024),
        );

        let clients = 8;
        let each: u64 = 32 << 20;
        let mut conns = Vec::new();
        for i in 0..clients {
            let c = Connection::connect(&client).await.expect("connect");
            c.login("alice", PASSWORD, &format!("bench-{i}"), "bench")
                .await
                .expect("login");
            conns.push(c);
        }
        let start = Instant::now();
        let uploads = conns
            .iter()
            .enumerate()
            .map(|(i, c)| upload(c, &group, each, 100 + i as u64));
        futures_util::future::join_all(uploads).await;
        row(
            &format!("{clients} clients uploading {} MB each at once", each >> 20),
            mb_per_s(each * clients as u64, start.elapsed().as_secs_f64()),
        );

        // The same content again: all bytes still travel (no one gets content by its hash
        // alone), but nothing new is stored.
        let stored = || {
            walk(&node.data_dir().join("files/blobs"))
        };
        let before_bytes = stored();
        let start = Instant::now();
        upload(&alice, &group, each, 100).await;
        row(
            "a 32 MB upload of content already stored",
            format!(
                "{}, {} bytes more on disk",
                mb_per_s(each, start.elapsed().as_secs_f64()),
                stored().saturating_sub(before_bytes)
            ),
        );
    });
}

fn walk(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += walk(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
