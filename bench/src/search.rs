//! `search`: full-text queries over a corpus of messages the generator posts first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use veche_protocol::discussions::{SearchQuery, SendMessage};
use veche_protocol::{ErrorCode, Reply, Request};

use crate::measure::Meter;
use crate::report::Report;
use crate::stats::Latencies;
use crate::target::Target;
use crate::workload::{WorkloadError, connect_each};

/// Words the corpus and the queries are made of: office Russian and English, so that the
/// stemmers of both languages work.
const WORDS: &[&str] = &[
    "счёт",
    "договор",
    "поставка",
    "оплата",
    "склад",
    "отгрузка",
    "накладная",
    "клиент",
    "проект",
    "встреча",
    "отчёт",
    "бюджет",
    "заказ",
    "менеджер",
    "сроки",
    "акт",
    "invoice",
    "contract",
    "delivery",
    "payment",
    "warehouse",
    "shipment",
    "customer",
    "project",
    "meeting",
    "report",
    "budget",
    "order",
    "manager",
    "deadline",
    "approval",
    "release",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct SearchParams {
    /// Queries in all.
    pub queries: usize,
    /// Queries under way at once (on one connection: at most 32 are served at once).
    pub parallel: usize,
    /// Messages posted before the queries (skipped when the corpus of this prefix is there).
    pub corpus: u64,
    /// How long to wait for the index to catch up with the corpus.
    pub stall: Duration,
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            queries: 2_000,
            parallel: 8,
            corpus: 5_000,
            stall: Duration::from_secs(120),
        }
    }
}

fn sentence(words: usize) -> String {
    (0..words)
        .map(|_| WORDS[rand::random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the workload once: a new group with `corpus` messages, then the queries.
pub async fn search(target: &Target, p: &SearchParams) -> Result<crate::Report, WorkloadError> {
    if p.queries == 0 || p.parallel == 0 {
        return Err(WorkloadError::Parameters(
            "search needs queries, one at a time at least",
        ));
    }
    let tag = format!("vb{:08x}", rand::random::<u32>());
    let logins = vec![target.login_of("q", 0), target.login_of("q", 1)];
    target.ensure_users(&logins, 2).await?;
    let conn = Arc::new(
        connect_each(target, &logins[..1], 1)
            .await?
            .into_iter()
            .next()
            .map(|(c, _)| c)
            .ok_or(WorkloadError::Unexpected("connect"))?,
    );
    // The user's own messages come back as events: read them, as a client does.
    let mut drains = tokio::task::JoinSet::new();
    let drained = conn.clone();
    drains.spawn(async move { while drained.next_event().await.is_some() {} });
    let group = match conn
        .request(Request::CreateGroup {
            title: format!("search {tag}"),
            members: vec![logins[1].clone()],
        })
        .await
    {
        Ok(Reply::Discussion { discussion }) => discussion.id,
        Ok(_) => return Err(WorkloadError::Unexpected("create_group")),
        Err(e) => return Err(WorkloadError::request("create_group", e)),
    };

    // The corpus, 32 sends in flight.
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let fill_start = Instant::now();
    for _ in 0..32 {
        let (conn, next, group, tag, corpus) = (
            conn.clone(),
            next.clone(),
            group.clone(),
            tag.clone(),
            p.corpus,
        );
        tasks.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= corpus {
                    return Ok::<(), WorkloadError>(());
                }
                let request = Request::Send(SendMessage {
                    files: Vec::new(),
                    discussion: group.clone(),
                    client_msg_id: format!("{tag}-{k}"),
                    text: format!("{} {tag}n{k}", sentence(8)),
                    reply_to: None,
                    data: None,
                    actions: Vec::new(),
                });
                match conn.request(request).await {
                    Ok(Reply::Sent { .. }) => {}
                    Ok(_) => return Err(WorkloadError::Unexpected("send")),
                    Err(e) => return Err(WorkloadError::request("send", e)),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let fill_secs = fill_start.elapsed().as_secs_f64();

    // The index has caught up once the last message is found.
    let last = format!("{tag}n{}", p.corpus.saturating_sub(1));
    let waited = Instant::now();
    loop {
        match conn
            .request(Request::Search(SearchQuery::text(last.clone())))
            .await
        {
            Ok(Reply::SearchResults { hits, .. }) if !hits.is_empty() => break,
            Ok(Reply::SearchResults { .. }) => {}
            Ok(_) => return Err(WorkloadError::Unexpected("search")),
            Err(e) if e.code() == Some(ErrorCode::Unavailable) => {}
            Err(e) => return Err(WorkloadError::request("search", e)),
        }
        if waited.elapsed() > p.stall {
            return Err(WorkloadError::Stalled {
                what: "the search index catching up with the corpus".to_owned(),
                secs: p.stall.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let indexed_secs = waited.elapsed().as_secs_f64();

    let next = Arc::new(AtomicUsize::new(0));
    let hits_total = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(target.node_pid, target.threads);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..p.parallel.min(p.queries) {
        let (conn, next, hits_total, queries) =
            (conn.clone(), next.clone(), hits_total.clone(), p.queries);
        tasks.spawn(async move {
            let mut lat = Latencies::default();
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= queries {
                    return Ok::<_, WorkloadError>(lat);
                }
                let query = sentence(rand::random_range(1..=2));
                let began = Instant::now();
                match conn
                    .request(Request::Search(SearchQuery::text(query)))
                    .await
                {
                    Ok(Reply::SearchResults { hits, .. }) => {
                        hits_total.fetch_add(hits.len() as u64, Ordering::Relaxed);
                    }
                    Ok(_) => return Err(WorkloadError::Unexpected("search")),
                    Err(e) => return Err(WorkloadError::request("search", e)),
                }
                lat.record(began.elapsed());
            }
        });
    }
    let mut lat = Latencies::default();
    while let Some(done) = tasks.join_next().await {
        lat.merge(&done??);
    }
    let wall = start.elapsed().as_secs_f64().max(1e-6);
    let usage = meter.finish();
    drains.abort_all();
    let mut report = Report::new("search");
    report
        .num("corpus", p.corpus as f64, "messages")
        .num(
            "corpus_stored_msg_per_s",
            p.corpus as f64 / fill_secs.max(1e-6),
            "msg/s",
        )
        .num("index_caught_up_after_s", indexed_secs, "s")
        .num("queries", p.queries as f64, "")
        .num("parallel", p.parallel as f64, "")
        .num("queries_per_s", p.queries as f64 / wall, "/s")
        .num(
            "hits_per_query",
            hits_total.load(Ordering::Relaxed) as f64 / p.queries as f64,
            "",
        )
        .latencies("query", &mut lat);
    usage.add_to(&mut report, p.queries as u64, "query");
    Ok(report)
}
