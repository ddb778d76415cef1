//! The node's metrics: handles of the `metrics` facade registered once, at start, against
//! this node's own Prometheus recorder, and rendered by the operations listener (`ops.rs`).
//!
//! Each node has its own recorder rather than the process-wide one: several nodes run in one
//! process (tests, embedding) and each must show only its own figures. The hot path only
//! touches pre-registered handles (an atomic add); labels are fixed strings or names from a
//! small set known in advance (request methods, outcomes, transports, plugin ids), never user
//! or discussion ids. Without `[metrics] enabled` every handle is a no-op.
//!
//! `docs/metrics.md` lists every family; a test checks that list against a scrape.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use veche_core::live::registry::Fanout;

/// Latency buckets in seconds, for requests and commits: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Commands per sequencer batch, up to `sequencer::MAX_BATCH`.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How a client reached the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A QUIC connection.
    Quic,
    /// A WebSocket of the HTTP gateway.
    WebSocket,
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// A session was opened.
    Ok,
    /// Wrong login or password.
    Failed,
    /// The account is locked.
    Locked,
    /// Refused by throttling before the password was checked.
    Throttled,
    /// Any other error (bad request, storage).
    Error,
}

impl LoginOutcome {
    const ALL: [Self; 5] = [
        Self::Ok,
        Self::Failed,
        Self::Locked,
        Self::Throttled,
        Self::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Locked => "locked",
            Self::Throttled => "throttled",
            Self::Error => "error",
        }
    }
}

/// The handles of one plugin.
#[derive(Debug, Clone)]
pub(crate) struct PluginMetrics {
    /// Calls into the plugin.
    pub(crate) calls: Counter,
    /// Calls that trapped or hit a limit.
    pub(crate) traps: Counter,
    /// Times the breaker paused the plugin.
    pub(crate) pauses: Counter,
}

/// The node's metric handles; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    connections_quic: Counter,
    connections_ws: Counter,
    open_quic: Gauge,
    open_ws: Gauge,
    logins: [Counter; 5],
    /// (method, outcome) → the request counter; (method) → its latency histogram. Filled on
    /// first use: methods and outcomes are `&'static str`s from closed sets.
    requests: RwLock<HashMap<(&'static str, &'static str), Counter>>,
    latency: RwLock<HashMap<&'static str, Histogram>>,
    messages_stored: Counter,
    deliveries: Counter,
    lagging_closes: Counter,
    batch_size: Histogram,
    commit_seconds: Histogram,
    webhook_failures: Counter,
    push_failures: Counter,
}

/// Gauges set when a scrape comes in, from storage and the services' state.
#[derive(Debug, Default)]
pub(crate) struct Sampled {
    /// Bytes in SQLite's write-ahead log.
    pub(crate) wal_bytes: u64,
    /// Messages the search index has yet to take in.
    pub(crate) search_backlog: i64,
    /// Webhook requests waiting to be sent.
    pub(crate) webhook_queue: i64,
    /// Notifications waiting to be pushed.
    pub(crate) push_queue: i64,
    /// Bytes of file contents per backend.
    pub(crate) file_bytes: Vec<(String, i64)>,
    /// Per linked node: its name, whether the link is up, and the federated events waiting
    /// to be sent to it.
    pub(crate) links: Vec<(String, bool, i64)>,
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::from_static_parts(k, v))
            .collect::<Vec<_>>(),
    )
}

const META: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Inner {
    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.recorder.register_counter(&key(name, labels), &META)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &META)
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Histogram {
        self.recorder.register_histogram(&key(name, labels), &META)
    }

    fn owned_gauge(&self, name: &'static str, label: &'static str, value: &str) -> Gauge {
        let key = Key::from_parts(name, vec![Label::new(label, value.to_owned())]);
        self.recorder.register_gauge(&key, &META)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl veche_core::discussions::BatchMetrics for Metrics {
    fn batch(&self, commands: usize, stored: u64, took: Duration) {
        Metrics::batch(self, commands, stored, took);
    }
}

impl Metrics {
    /// Handles that record into a new Prometheus recorder of this node.
    pub(crate) fn enabled() -> Self {
        let builder = PrometheusBuilder::new();
        // Both calls only fail on an empty bucket list.
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("veche_sequencer_batch_commands".into()),
                    BATCH_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let noop = Counter::noop;
        let mut inner = Inner {
            recorder,
            handle,
            connections_quic: noop(),
            connections_ws: noop(),
            open_quic: Gauge::noop(),
            open_ws: Gauge::noop(),
            logins: std::array::from_fn(|_| noop()),
            requests: RwLock::default(),
            latency: RwLock::default(),
            messages_stored: noop(),
            deliveries: noop(),
            lagging_closes: noop(),
            batch_size: Histogram::noop(),
            commit_seconds: Histogram::noop(),
            webhook_failures: noop(),
            push_failures: noop(),
        };
        inner.connections_quic = inner.counter("veche_connections_total", &[("transport", "quic")]);
        inner.connections_ws =
            inner.counter("veche_connections_total", &[("transport", "websocket")]);
        inner.open_quic = inner.gauge("veche_connections_open", &[("transport", "quic")]);
        inner.open_ws = inner.gauge("veche_connections_open", &[("transport", "websocket")]);
        for outcome in LoginOutcome::ALL {
            inner.logins[outcome as usize] =
                inner.counter("veche_logins_total", &[("outcome", outcome.as_str())]);
        }
        inner.messages_stored = inner.counter("veche_messages_stored_total", &[]);
        inner.deliveries = inner.counter("veche_fanout_deliveries_total", &[]);
        inner.lagging_closes = inner.counter("veche_fanout_lagging_closes_total", &[]);
        inner.batch_size = inner.histogram("veche_sequencer_batch_commands", &[]);
        inner.commit_seconds = inner.histogram("veche_sequencer_commit_seconds", &[]);
        inner.webhook_failures = inner.counter("veche_webhook_failures_total", &[]);
        inner.push_failures = inner.counter("veche_push_failures_total", &[]);
        Self {
            inner: Some(Arc::new(inner)),
        }
    }

    /// Whether a recorder is behind these handles.
    pub(crate) fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A connection of `transport` opened; the returned guard counts it as open until dropped.
    pub(crate) fn connection(&self, transport: Transport) -> OpenConnection {
        let gauge = match (&self.inner, transport) {
            (Some(i), Transport::Quic) => {
                i.connections_quic.increment(1);
                i.open_quic.clone()
            }
            (Some(i), Transport::WebSocket) => {
                i.connections_ws.increment(1);
                i.open_ws.clone()
            }
            (None, _) => Gauge::noop(),
        };
        gauge.increment(1.0);
        OpenConnection(gauge)
    }

    /// A login ended with `outcome`.
    pub(crate) fn login(&self, outcome: LoginOutcome) {
        if let Some(i) = &self.inner {
            i.logins[outcome as usize].increment(1);
        }
    }

    /// A client request `method` ended with `outcome` (`ok` or an error code) after `took`.
    pub(crate) fn request(&self, method: &'static str, outcome: &'static str, took: Duration) {
        let Some(i) = &self.inner else { return };
        let counter = read(&i.requests).get(&(method, outcome)).cloned();
        let counter = counter.unwrap_or_else(|| {
            let c = i.counter(
                "veche_requests_total",
                &[("method", method), ("outcome", outcome)],
            );
            write(&i.requests).insert((method, outcome), c.clone());
            c
        });
        counter.increment(1);
        let histogram = read(&i.latency).get(method).cloned();
        let histogram = histogram.unwrap_or_else(|| {
            let h = i.histogram("veche_request_duration_seconds", &[("method", method)]);
            write(&i.latency).insert(method, h.clone());
            h
        });
        histogram.record(took.as_secs_f64());
    }

    /// A sequencer batch of `commands` committed, `stored` of them new messages, in `took`.
    pub(crate) fn batch(&self, commands: usize, stored: u64, took: Duration) {
        if let Some(i) = &self.inner {
            i.batch_size.record(commands as f64);
            i.commit_seconds.record(took.as_secs_f64());
            i.messages_stored.increment(stored);
        }
    }

    /// The fan-out's counters, for the live registry.
    pub(crate) fn fanout(&self) -> Fanout {
        self.inner
            .as_ref()
            .map_or_else(Fanout::default, |i| Fanout {
                deliveries: i.deliveries.clone(),
                lagging_closes: i.lagging_closes.clone(),
            })
    }

    /// A webhook request failed (an attempt; it may be retried).
    pub(crate) fn webhook_failed(&self) {
        if let Some(i) = &self.inner {
            i.webhook_failures.increment(1);
        }
    }

    /// A push notification failed to be sent (an attempt; it may be retried).
    pub(crate) fn push_failed(&self) {
        if let Some(i) = &self.inner {
            i.push_failures.increment(1);
        }
    }

    /// The handles of plugin `id`, registered once when the plugin is loaded.
    pub(crate) fn plugin(&self, id: &str) -> PluginMetrics {
        match &self.inner {
            Some(i) => {
                let labels = || vec![Label::new("plugin", id.to_owned())];
                PluginMetrics {
                    calls: i.recorder.register_counter(
                        &Key::from_parts("veche_plugin_calls_total", labels()),
                        &META,
                    ),
                    traps: i.recorder.register_counter(
                        &Key::from_parts("veche_plugin_traps_total", labels()),
                        &META,
                    ),
                    pauses: i.recorder.register_counter(
                        &Key::from_parts("veche_plugin_pauses_total", labels()),
                        &META,
                    ),
                }
            }
            None => PluginMetrics {
                calls: Counter::noop(),
                traps: Counter::noop(),
                pauses: Counter::noop(),
            },
        }
    }

    /// Sets the sampled gauges and renders every metric in Prometheus' text format.
    pub(crate) fn render(&self, sampled: &Sampled) -> String {
        let Some(i) = &self.inner else {
            return String::new();
        };
        // Gauges above 2^53 lose precision as f64; a WAL or a backlog never gets there.
        #[allow(clippy::cast_precision_loss)]
        let f = |v: i64| v as f64;
        #[allow(clippy::cast_precision_loss)]
        i.gauge("veche_sqlite_wal_bytes", &[])
            .set(sampled.wal_bytes as f64);
        i.gauge("veche_search_backlog", &[])
            .set(f(sampled.search_backlog));
        i.gauge("veche_webhook_queue", &[])
            .set(f(sampled.webhook_queue));
        i.gauge("veche_push_queue", &[]).set(f(sampled.push_queue));
        for (backend, bytes) in &sampled.file_bytes {
            i.owned_gauge("veche_file_bytes_stored", "backend", backend)
                .set(f(*bytes));
        }
        for (link, up, backlog) in &sampled.links {
            i.owned_gauge("veche_federation_link_up", "link", link)
                .set(if *up { 1.0 } else { 0.0 });
            i.owned_gauge("veche_federation_link_backlog", "link", link)
                .set(f(*backlog));
        }
        i.handle.run_upkeep();
        i.handle.render()
    }
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn describe(recorder: &PrometheusRecorder) {
    use metrics::Unit;
    let counters: &[(&'static str, &'static str)] = &[
        (
            "veche_connections_total",
            "Client connections opened, by transport.",
        ),
        ("veche_logins_total", "Password logins, by outcome."),
        (
            "veche_requests_total",
            "Client requests, by method and outcome (ok or an error code).",
        ),
        (
            "veche_messages_stored_total",
            "New messages committed by the sequencer.",
        ),
        (
            "veche_fanout_deliveries_total",
            "Events handed to live connections' queues.",
        ),
        (
            "veche_fanout_lagging_closes_total",
            "Connections closed for not reading their events in time.",
        ),
        (
            "veche_webhook_failures_total",
            "Webhook requests that failed (each attempt).",
        ),
        (
            "veche_push_failures_total",
            "Push notifications that failed to be sent (each attempt).",
        ),
        ("veche_plugin_calls_total", "Calls into a plugin."),
        (
            "veche_plugin_traps_total",
            "Plugin calls that trapped or hit a limit.",
        ),
        (
            "veche_plugin_pauses_total",
            "Times a plugin was paused by its breaker.",
        ),
    ];
    for (name, help) in counters {
        recorder.describe_counter((*name).into(), None, (*help).into());
    }
    let gauges: &[(&'static str, Option<Unit>, &'static str)] = &[
        (
            "veche_connections_open",
            None,
            "Client connections open now, by transport.",
        ),
        (
            "veche_sqlite_wal_bytes",
            Some(Unit::Bytes),
            "Size of SQLite's write-ahead log.",
        ),
        (
            "veche_search_backlog",
            None,
            "Messages the search index has yet to take in.",
        ),
        (
            "veche_webhook_queue",
            None,
            "Webhook requests waiting to be sent.",
        ),
        (
            "veche_push_queue",
            None,
            "Notifications waiting to be pushed.",
        ),
        (
            "veche_file_bytes_stored",
            Some(Unit::Bytes),
            "Bytes of file contents, by backend.",
        ),
        (
            "veche_federation_link_up",
            None,
            "1 when the link to a node is connected, by link.",
        ),
        (
            "veche_federation_link_backlog",
            None,
            "Federated events waiting to be sent, by link.",
        ),
    ];
    for (name, unit, help) in gauges {
        recorder.describe_gauge((*name).into(), *unit, (*help).into());
    }
    recorder.describe_histogram(
        "veche_request_duration_seconds".into(),
        Some(Unit::Seconds),
        "Time to answer a client request, by method.".into(),
    );
    recorder.describe_histogram(
        "veche_sequencer_batch_commands".into(),
        None,
        "Commands per sequencer write batch.".into(),
    );
    recorder.describe_histogram(
        "veche_sequencer_commit_seconds".into(),
        Some(Unit::Seconds),
        "Time from a batch's first write to its durable commit.".into(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_handles_render_nothing() {
        let m = Metrics::default();
        m.login(LoginOutcome::Failed);
        m.request("send", "ok", Duration::from_millis(1));
        assert!(!m.is_enabled());
        assert_eq!(m.render(&Sampled::default()), "");
    }

    #[test]
    fn labels_are_rendered() {
        let m = Metrics::enabled();
        m.login(LoginOutcome::Failed);
        m.request("send", "ok", Duration::from_millis(1));
        m.request("send", "ok", Duration::from_millis(2));
        let _open = m.connection(Transport::Quic);
        let text = m.render(&Sampled::default());
        assert!(
            text.contains("veche_logins_total{outcome=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("veche_requests_total{method=\"send\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("veche_connections_open{transport=\"quic\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("veche_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
