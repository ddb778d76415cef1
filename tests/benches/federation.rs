//! `cargo bench -p veche-tests --bench federation`: replication between two real nodes linked
//! over libp2p on loopback, each with its own data folder and SQLite database, one group shared
//! from the head office (the home) to the branch. Measures, as users see it:
//! - a message written at the home until a member at the branch receives it (p50, p99);
//! - a message written at the branch until its author there sees it sequenced by the home
//!   (submission, stamping, and the stamped event back) and until the home's member sees it;
//! - events per second reaching the branch while sixteen writers at the home post at once, one
//!   message at a time each, then eight at a time each;
//! - how fast a backlog written while the branch was down is caught up once it is back;
//! - a file written at the home: its first download at the branch (fetched over the link),
//!   and the next (from the branch's own store).
//!
//! Nodes and clients share one process (a 2-worker tokio runtime). Numbers, not assertions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use veche_client::protocol::admin::{AdminReply, AdminRequest, LinkScope};
use veche_client::protocol::discussions::{Change, SendMessage};
use veche_client::protocol::files::NewUpload;
use veche_client::protocol::{Event, Reply, Request};
use veche_client::{ClientConfig, Connection, Trust};
use veche_node::test_utils::{TestNode, test_config};

#[path = "common.rs"]
mod common;
use common::{ms, percentile};

const PASSWORD: &str = "benchmark password";
/// Writers at the home in the throughput runs.
const WRITERS: usize = 16;
/// Messages each writer posts in a throughput run.
const EACH: usize = 500;
/// The file sent over the link, in MiB.
const FILE_MB: usize = 32;

async fn node(name: &str) -> TestNode {
    let mut config = test_config();
    config.node.name = Some(name.to_owned());
    TestNode::spawn_with(config).await.expect("node")
}

async fn connect(node: &TestNode, login: &str) -> Connection {
    node.add_user(login, PASSWORD, false).await.expect("user");
    self::login(node, login).await
}

async fn login(node: &TestNode, login: &str) -> Connection {
    let mut config = ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path()));
    config.timeout = Duration::from_secs(60);
    let conn = Connection::connect(&config).await.expect("connect");
    conn.login(login, PASSWORD, login, login)
        .await
        .expect("login");
    conn
}

async fn link(home: &TestNode, branch: &TestNode) -> String {
    let offer = match home
        .admin(AdminRequest::LinkOffer {
            relationship: "branch".into(),
            days: 1,
            scope: LinkScope {
                object_discussions: false,
                directory: "members".into(),
                presence: false,
                max_file_mb: 64,
            },
            organisation: String::new(),
            contact: String::new(),
            renews: None,
        })
        .await
        .expect("offer")
    {
        AdminReply::LinkOffered { offer, .. } => offer,
        other => panic!("{other:?}"),
    };
    let (grant, link) = match branch
        .admin(AdminRequest::LinkAccept {
            offer,
            organisation: String::new(),
            contact: String::new(),
        })
        .await
        .expect("accept")
    {
        AdminReply::LinkAccepted { grant, link } => (grant, link.link),
        other => panic!("{other:?}"),
    };
    home.admin(AdminRequest::LinkConfirm { grant })
        .await
        .expect("confirm");
    link
}

fn message(group: &str, text: &str) -> SendMessage {
    SendMessage {
        discussion: group.to_owned(),
        client_msg_id: text.to_owned(),
        text: text.to_owned(),
        reply_to: None,
        data: None,
        actions: Vec::new(),
        files: Vec::new(),
    }
}

async fn send(conn: &Connection, group: &str, id: &str, text: &str) {
    let reply = conn
        .request(Request::Send(SendMessage {
            client_msg_id: id.to_owned(),
            ..message(group, text)
        }))
        .await
        .expect("send");
    assert!(matches!(reply, Reply::Sent { .. }), "{reply:?}");
}

/// Waits for the message with this text among `conn`'s events.
async fn posted(conn: &Connection, text: &str) {
    loop {
        match conn.next_event().await {
            Some(Event::Discussion { event }) => {
                if let Change::MessagePosted { message } = event.change
                    && message.text.as_deref() == Some(text)
                {
                    return;
                }
            }
            Some(_) => {}
            None => panic!("the event stream ended"),
        }
    }
}

/// A connection whose events are read and dropped: members receive every message, and the
/// node closes a connection that leaves its events unread.
fn draining(conn: Connection) -> Arc<Connection> {
    let conn = Arc::new(conn);
    let events = Arc::clone(&conn);
    tokio::spawn(async move { while events.next_event().await.is_some() {} });
    conn
}

/// The group's last sequence number on `conn`'s node.
async fn last_seq(conn: &Connection, group: &str) -> u64 {
    match conn
        .request(Request::GetDiscussion {
            discussion: group.to_owned(),
        })
        .await
        .expect("get")
    {
        Reply::Discussion { discussion } => discussion.last_seq,
        other => panic!("{other:?}"),
    }
}

/// Starts every writer posting `EACH` messages, `in_flight` at a time, texts starting with
/// `prefix`; the tasks end when all are sent.
fn write(
    writers: &[Arc<Connection>],
    group: &str,
    prefix: char,
    in_flight: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (w, conn) in writers.iter().enumerate() {
        for lane in 0..in_flight {
            let conn = Arc::clone(conn);
            let group = group.to_owned();
            tasks.push(tokio::spawn(async move {
                for i in (lane..EACH).step_by(in_flight) {
                    let text = format!("{prefix}{w}-{i}");
                    send(&conn, &group, &text, &text).await;
                }
            }));
        }
    }
    tasks
}

/// Sixteen writers at the home post `EACH` messages each, `in_flight` at a time per writer,
/// texts starting with `prefix`; how long until the member at the branch has them all.
async fn live(
    writers: &[Arc<Connection>],
    group: &str,
    boris: &Connection,
    prefix: char,
    in_flight: usize,
) -> Duration {
    let total = EACH * writers.len();
    let start = Instant::now();
    let tasks = write(writers, group, prefix, in_flight);
    let mut seen = 0;
    while seen < total {
        match boris.next_event().await {
            Some(Event::Discussion { event }) => {
                if let Change::MessagePosted { message } = event.change
                    && message
                        .text
                        .as_deref()
                        .is_some_and(|t| t.starts_with(prefix))
                {
                    seen += 1;
                }
            }
            Some(_) => {}
            None => panic!("the event stream ended"),
        }
    }
    let took = start.elapsed();
    for t in tasks {
        t.await.expect("writer");
    }
    took
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
    let hq = node("hq.bench").await;
    let mut branch = node("branch.bench").await;
    let id = link(&hq, &branch).await;
    let anna = Arc::new(connect(&hq, "anna").await);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(draining(connect(&hq, &format!("w{w}")).await));
    }
    let boris = connect(&branch, "boris").await;
    let group = match anna
        .request(Request::CreateGroup {
            title: "bench".into(),
            members: std::iter::once("boris@branch.bench".to_owned())
                .chain((0..WRITERS).map(|w| format!("w{w}@hq.bench")))
                .collect(),
        })
        .await
        .expect("group")
    {
        Reply::Discussion { discussion } => discussion.id,
        other => panic!("{other:?}"),
    };
    hq.admin(AdminRequest::DiscussionShare {
        discussion: group.clone(),
        link: id,
    })
    .await
    .expect("share");
    // Warm up: the link connects, the group reaches the branch.
    send(&anna, &group, "warm", "warm").await;
    posted(&boris, "warm").await;

    // Home → branch, one message at a time.
    let mut home_to_branch = Vec::new();
    for i in 0..500 {
        let text = format!("h{i}");
        let t = Instant::now();
        send(&anna, &group, &text, &text).await;
        posted(&boris, &text).await;
        home_to_branch.push(t.elapsed());
    }
    home_to_branch.sort();

    // Branch → home → branch: submitted, sequenced at the home, stamped back.
    let mut round_trip = Vec::new();
    let mut to_home = Vec::new();
    for i in 0..300 {
        let text = format!("b{i}");
        let t = Instant::now();
        send(&boris, &group, &text, &text).await;
        posted(&anna, &text).await;
        to_home.push(t.elapsed());
        posted(&boris, &text).await;
        round_trip.push(t.elapsed());
    }
    to_home.sort();
    round_trip.sort();

    // Throughput: many writers at the home at once (the home commits them in groups), counted
    // as they reach the branch: each writer one message at a time, then eight at a time.
    let total = EACH * WRITERS;
    let took = live(&writers, &group, &boris, 't', 1).await;
    let took_pipelined = live(&writers, &group, &boris, 'u', 8).await;

    // A backlog across the link: the branch is down while the home writes; once it is back,
    // how fast the replica's copy of the group catches up (stored, applied, and in its log).
    // A fresh connection that reads its events (one that leaves them unread is closed).
    drop(boris);
    let boris = draining(login(&branch, "boris").await);
    let before = last_seq(&boris, &group).await;
    drop(boris);
    branch.stop().await;
    let written = Instant::now();
    for t in write(&writers, &group, 'p', 8) {
        t.await.expect("writer");
    }
    let written = written.elapsed();
    branch.restart().await.expect("restart");
    let boris = draining(login(&branch, "boris").await);
    let target = before + total as u64;
    let mut first = None;
    loop {
        let now = last_seq(&boris, &group).await;
        if now > before && first.is_none() {
            first = Some((Instant::now(), now));
        }
        if now >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (t0, seq0) = first.expect("progress");
    let caught_up = t0.elapsed();
    let backlog_rate = (target - seq0) as f64 / caught_up.as_secs_f64();

    // A file over the link: written at the home, downloaded twice at the branch. A fresh
    // connection at the home (the first one's events were left unread).
    drop(anna);
    let anna = draining(login(&hq, "anna").await);
    let data: Vec<u8> = (0..FILE_MB * 1024 * 1024)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = anna
        .create_upload(NewUpload {
            discussion: group.clone(),
            name: "scan.bin".into(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(&data)),
        })
        .await
        .expect("upload");
    let file = anna
        .send_upload(&up.id, 0, data.as_slice(), |_| {})
        .await
        .expect("upload");
    let mut m = message(&group, "file");
    m.files = vec![file.id];
    anna.request(Request::Send(m)).await.expect("send");
    let at_branch = loop {
        let files = match boris
            .request(Request::History {
                discussion: group.clone(),
                before: None,
                limit: 1,
            })
            .await
            .expect("history")
        {
            Reply::Events { events, .. } => events.into_iter().find_map(|e| match e.change {
                Change::MessagePosted { message } => message.files.into_iter().next(),
                _ => None,
            }),
            other => panic!("{other:?}"),
        };
        match files {
            Some(f) => break f.id,
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let mut downloads = Vec::new();
    for _ in 0..2 {
        let mut out = Vec::with_capacity(data.len());
        let t = Instant::now();
        boris
            .download(&at_branch, 0, false, &mut out)
            .await
            .expect("download");
        downloads.push(t.elapsed());
        assert!(out == data, "the file arrived changed");
    }

    println!("| what | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| home → branch member (500 messages, one at a time) | {} | {} |",
        ms(percentile(&home_to_branch, 0.5)),
        ms(percentile(&home_to_branch, 0.99))
    );
    println!(
        "| branch → home member (300, submitted and sequenced) | {} | {} |",
        ms(percentile(&to_home, 0.5)),
        ms(percentile(&to_home, 0.99))
    );
    println!(
        "| branch → home → branch author (stamped event back) | {} | {} |",
        ms(percentile(&round_trip, 0.5)),
        ms(percentile(&round_trip, 0.99))
    );
    println!(
        "\n{total} messages from {WRITERS} writers at the home (one at a time each) reached the branch member in {took:.2?}: {:.0} events/s",
        total as f64 / took.as_secs_f64()
    );
    println!(
        "{total} messages from {WRITERS} writers at the home (eight at a time each) reached the branch member in {took_pipelined:.2?}: {:.0} events/s",
        total as f64 / took_pipelined.as_secs_f64()
    );
    println!(
        "with the branch down, the home took {total} messages (eight at a time per writer) in {written:.2?}: {:.0} messages/s",
        total as f64 / written.as_secs_f64()
    );
    println!(
        "a backlog of {total} messages written while the branch was down: the branch's copy caught up at {backlog_rate:.0} events/s ({caught_up:.2?} from the first arrival)"
    );
    let rate = |d: Duration| FILE_MB as f64 / d.as_secs_f64();
    println!(
        "a {FILE_MB} MiB file written at the home: first download at the branch (fetched over the link) {:.2?}, {:.0} MiB/s; the next (from the branch's store) {:.2?}, {:.0} MiB/s",
        downloads[0],
        rate(downloads[0]),
        downloads[1],
        rate(downloads[1])
    );
}
