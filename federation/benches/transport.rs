//! `cargo bench -p veche-federation --bench transport`: one link between two federation transports
//! on loopback (libp2p TCP + Noise + Yamux, in one process), in-memory storage. Signed events
//! are verified by the receiver as they would be between nodes. Measures events per second for
//! a queued backlog, and the latency of single events (queued on one side until stored on the
//! other) as p50/p99. Numbers, not assertions: these machines are shared and noisy.

use std::time::{Duration, Instant};

use veche_federation::event::{EVENT_FORMAT, Event, EventHeader};
use veche_federation::grant::{
    DirectoryScope, GRANT_FORMAT, Grant, Offer, Party, Relationship, Scope, Terms,
};
use veche_federation::keys::NodeKey;
use veche_federation::memory::MemoryStore;
use veche_federation::net::{self, Handle, NetConfig, Notification};
use veche_federation::wire::Item;

fn party(key: &NodeKey, name: &str, port: u16) -> Party {
    Party {
        node: name.into(),
        key: key.public(),
        addresses: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
        organisation: name.into(),
        contact: String::new(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn event(key: &NodeKey, n: u64) -> Item {
    let event = Event::create(
        key,
        EventHeader {
            format: EVENT_FORMAT,
            kind: "message.post".into(),
            discussion: "0123456789abcdef0123456789abcdef@branch".into(),
            home: "branch".into(),
            origin: "hq".into(),
            author: "anna@hq".into(),
            client_txn: format!("txn-{n}"),
            created_at: 0,
            target: None,
            body_hash: None,
            body_len: 0,
        },
        // A typical chat message.
        Some(
            format!("{{\"text\":\"Invoice {n} is paid; the goods ship on Monday.\"}}").into_bytes(),
        ),
    )
    .expect("an event");
    Item::Submit {
        event: event.wire().clone(),
    }
}

async fn start(
    name: &str,
    key: &NodeKey,
    port: u16,
    store: MemoryStore,
    grant: Grant,
) -> (Handle, tokio::sync::mpsc::UnboundedReceiver<Notification>) {
    let config = NetConfig {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr")],
        ..NetConfig::default()
    };
    let scope = grant.terms().scope.clone();
    let (handle, notes, _) = net::start(name, key, config, store, vec![(grant, scope)])
        .await
        .expect("transport");
    handle.listen_addresses().await;
    (handle, notes)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (NodeKey::generate(), NodeKey::generate());
    let terms = Terms {
        format: GRANT_FORMAT,
        link: "00112233445566778899aabbccddeeff".into(),
        version: 1,
        relationship: Relationship::Branch,
        scope: Scope {
            object_discussions: true,
            directory: DirectoryScope::Members,
            presence: false,
            max_file_mb: 0,
        },
        not_before: 0,
        not_after: i64::MAX,
        nonce: "bench".into(),
        offerer: party(&ka, "hq", pa),
    };
    let grant = Offer::create(&ka, terms)
        .expect("offer")
        .accept(&kb, party(&kb, "branch", pb), 1)
        .expect("grant");
    let link = grant.link().to_owned();
    let (sa, sb) = (MemoryStore::default(), MemoryStore::default());
    let (a, _a_notes) = start("hq", &ka, pa, sa.clone(), grant.clone()).await;
    let (_b, mut b_notes) = start("branch", &kb, pb, sb.clone(), grant).await;

    // Warm up: connect and greet.
    sa.enqueue(&link, event(&ka, 0));
    a.wake(&link);
    while sb.inbox_len(&link) < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Throughput: a backlog written while the link was busy elsewhere.
    const BACKLOG: u64 = 50_000;
    let items: Vec<Item> = (1..=BACKLOG).map(|n| event(&ka, n)).collect();
    for item in items {
        sa.enqueue(&link, item);
    }
    let start_at = Instant::now();
    a.wake(&link);
    while sb.inbox_len(&link) < (BACKLOG + 1) as usize {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start_at.elapsed();
    println!(
        "backlog of {BACKLOG} signed events: {:.0} events/s ({took:.2?})",
        BACKLOG as f64 / took.as_secs_f64()
    );

    // Latency: one event at a time, from queued to stored (and acknowledged) on the other side.
    while b_notes.try_recv().is_ok() {}
    let mut samples = Vec::new();
    for n in 0..2_000u64 {
        let item = event(&ka, BACKLOG + 1 + n);
        let want = sb.inbox_len(&link) + 1;
        let t = Instant::now();
        sa.enqueue(&link, item);
        a.wake(&link);
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), b_notes.recv()).await;
            let Ok(next) = next else {
                panic!(
                    "event {n} did not arrive: {} queued, {:?}",
                    sa.outbox_len(&link),
                    a.status().await
                );
            };
            match next {
                Some(Notification::Received { .. }) if sb.inbox_len(&link) >= want => break,
                Some(_) => continue,
                None => panic!("the transport stopped"),
            }
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "single events over {} round trips: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}
