//! `cargo bench -p veche-tests --bench search`: 1,000,000 generated Russian/English messages
//! in 2,000 groups, the searching user a member of every tenth. Measures how fast the
//! indexer takes them in (from the message log, as in production) and query latency over
//! QUIC with the access filter. Prints a Markdown table for BENCHMARKS.md.
//!
//! `VECHE_BENCH_MESSAGES` overrides the message count.

use std::time::{Duration, Instant};

use veche_client::protocol::discussions::SearchQuery;
use veche_client::protocol::{Reply, Request};
use veche_client::{ClientConfig, Connection, Trust};
use veche_node::test_utils::TestNode;

#[path = "common.rs"]
mod common;
use common::{ms, percentile};

const PASSWORD: &str = "benchmark password";
const DISCUSSIONS: usize = 2_000;
const MEMBER_EVERY: usize = 10;
const QUERIES: usize = 500;

const RU: &[&str] = &[
    "счёт",
    "счета",
    "счетов",
    "оплата",
    "оплачен",
    "поставка",
    "поставки",
    "договор",
    "договора",
    "склад",
    "складе",
    "отгрузка",
    "отгрузки",
    "накладная",
    "накладной",
    "клиент",
    "клиента",
    "заказ",
    "заказы",
    "срочно",
    "проверьте",
    "сумма",
    "сумму",
    "банк",
    "платёж",
    "платежи",
    "реестр",
    "акт",
    "сверки",
    "возврат",
    "товар",
    "товары",
    "менеджер",
    "бухгалтерия",
    "директор",
    "согласовать",
    "подписан",
    "отправлен",
];
const EN: &[&str] = &[
    "invoice",
    "invoices",
    "payment",
    "shipped",
    "shipping",
    "order",
    "orders",
    "warehouse",
    "customer",
    "approved",
    "pending",
    "contract",
    "delivery",
    "return",
    "urgent",
    "please",
];

fn rng(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn text(i: usize) -> String {
    let mut next = rng(i as u64 * 2_654_435_761 + 1);
    let n = 6 + (next() % 10) as usize;
    let mut words = Vec::with_capacity(n + 1);
    for _ in 0..n {
        let r = next();
        if r.is_multiple_of(4) {
            words.push(EN[(r / 4) as usize % EN.len()].to_owned());
        } else {
            words.push(RU[(r / 4) as usize % RU.len()].to_owned());
        }
    }
    if next().is_multiple_of(3) {
        words.push(format!("ПТУ-{:06}", next() % 100_000));
    }
    words.join(" ")
}

#[tokio::main]
async fn main() {
    let messages: usize = std::env::var("VECHE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let node = TestNode::spawn().await.expect("node");
    node.add_user("bench", PASSWORD, false).await.expect("user");
    let user = format!("bench@{}", node.info().node_name);

    let started = Instant::now();
    node.bench_fill_messages(&user, DISCUSSIONS, messages, MEMBER_EVERY, &text)
        .await
        .expect("fill");
    let filled = started.elapsed();
    loop {
        if node.search_backlog().await.expect("backlog") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let indexed = started.elapsed();
    let started = Instant::now();
    node.reindex_and_wait().await.expect("reindex");
    let rebuilt = started.elapsed();

    let mut config = ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path()));
    config.server_name = "localhost".into();
    let conn = Connection::connect(&config).await.expect("connect");
    conn.login("bench", PASSWORD, "bench-dev", "bench")
        .await
        .expect("login");
    let mut next = rng(42);
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut total_hits = 0;
    for q in 0..QUERIES {
        let r = next();
        let query = match q % 3 {
            0 => RU[r as usize % RU.len()].to_owned(),
            1 => format!(
                "{} {}",
                RU[r as usize % RU.len()],
                EN[(r >> 8) as usize % EN.len()]
            ),
            _ => format!("ПТУ-{:06}", r % 100_000),
        };
        let t = Instant::now();
        let reply = conn
            .request(Request::Search(SearchQuery::text(query)))
            .await
            .expect("search");
        latencies.push(t.elapsed());
        if let Reply::SearchResults { hits, .. } = reply {
            total_hits += hits.len();
        }
    }
    latencies.sort();
    println!("| what | result |");
    println!("|---|---|");
    println!(
        "| write {messages} messages into SQLite ({DISCUSSIONS} groups) | {:.1} s |",
        filled.as_secs_f64()
    );
    println!(
        "| indexed from the message log, from the first write to an empty backlog | {:.1} s ({:.0} messages/s) |",
        indexed.as_secs_f64(),
        messages as f64 / indexed.as_secs_f64()
    );
    println!(
        "| rebuilt from the messages (`veche admin reindex`) | {:.1} s ({:.0} messages/s) |",
        rebuilt.as_secs_f64(),
        messages as f64 / rebuilt.as_secs_f64()
    );
    println!(
        "| {QUERIES} queries over QUIC, user in every {MEMBER_EVERY}th group (p50 / p99 / max) | {} / {} / {} ({:.1} hits per query) |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
        total_hits as f64 / QUERIES as f64
    );
}
