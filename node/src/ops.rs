//! The operations listener (`[metrics]`): `/metrics` in Prometheus' text format,
//! `/health/live` and `/health/ready`, on an address of its own.
//!
//! Gauges that describe state rather than events (the WAL's size, queue depths, links) are
//! read from storage when a scrape comes in, so that nothing on the hot path keeps them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Sampled};
use crate::services::Services;

/// What the listener's handlers read.
#[derive(Debug)]
pub(crate) struct Ops {
    pub(crate) services: Services,
    pub(crate) metrics: Metrics,
    /// The database file; its write-ahead log is beside it (`-wal`).
    pub(crate) database: PathBuf,
    /// Set once every listener of the node is up, cleared when it begins to stop.
    pub(crate) listening: Arc<AtomicBool>,
}

/// Serves the listener until `stop`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    ops: Arc<Ops>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(ops);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
}

async fn live() -> &'static str {
    "live\n"
}

/// Ready when storage answers, the search index is open and the listeners are up; otherwise
/// 503 with what is not ready, one per line.
async fn ready(State(ops): State<Arc<Ops>>) -> Response {
    let mut missing = Vec::new();
    if !ops.listening.load(Ordering::SeqCst) {
        missing.push("listeners");
    }
    if let Err(e) = ops.services.store.meta().get("node_name").await {
        tracing::warn!(error = %e, "health check: storage does not answer");
        missing.push("storage");
    }
    if !ops.services.search.is_ready() {
        missing.push("search");
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let body = missing
            .iter()
            .map(|m| format!("not ready: {m}\n"))
            .collect::<String>();
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let sampled = sample(&ops).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.metrics.render(&sampled),
    )
        .into_response()
}

/// Reads the state gauges; a value that cannot be read is left at zero and logged.
async fn sample(ops: &Ops) -> Sampled {
    let store = &ops.services.store;
    let wal = {
        let mut name = ops.database.clone().into_os_string();
        name.push("-wal");
        PathBuf::from(name)
    };
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "metrics: cannot read the {what}");
    };
    let mut sampled = Sampled {
        wal_bytes: std::fs::metadata(&wal).map_or(0, |m| m.len()),
        ..Sampled::default()
    };
    match store.search().search_backlog().await {
        Ok(n) => sampled.search_backlog = n,
        Err(e) => warn("search backlog", &e),
    }
    match store.apps().webhook_queue_len().await {
        Ok(n) => sampled.webhook_queue = n,
        Err(e) => warn("webhook queue", &e),
    }
    match store.push().push_queue_len().await {
        Ok(n) => sampled.push_queue = n,
        Err(e) => warn("push queue", &e),
    }
    match store.files().bytes_by_backend().await {
        Ok(rows) => sampled.file_bytes = rows,
        Err(e) => warn("file sizes", &e),
    }
    match ops.services.federation.list().await {
        Ok(links) => {
            // Ended links stay, down: a gauge once shown would otherwise keep its last value.
            sampled.links = links
                .into_iter()
                .filter(|l| l.state != "offered")
                .map(|l| {
                    let queued = i64::try_from(l.queued).unwrap_or(i64::MAX);
                    (l.link, l.connected && l.state == "active", queued)
                })
                .collect();
        }
        Err(e) => warn("links", &e),
    }
    sampled
}
