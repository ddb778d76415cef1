//! The operations listener: Prometheus metrics that move with real traffic, health checks,
//! and no listener at all unless `[metrics]` is enabled.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use prometheus_parse::{Scrape, Value};
use veche_client::protocol::{ErrorCode, Request};
use veche_node::test_utils::{TestNode, test_config};

use crate::support::{
    PASSWORD, connect, discussion, event_matching, eventually, login, post, subscribe, within,
};

/// Samples of one scrape: (family, sorted labels) → value. A histogram's value is the count
/// of its observations (its `+Inf` bucket); its `_sum` and `_count` lines are samples of
/// their own.
#[derive(Debug)]
pub(crate) struct Samples(HashMap<(String, Vec<(String, String)>), f64>);

impl Samples {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
        let mut out = HashMap::new();
        for s in scrape.samples {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            let value = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map(|b| b.count)
                    .context("a histogram without its +Inf bucket")?,
                Value::Summary(_) => anyhow::bail!("{} is a summary, not a histogram", s.metric),
            };
            out.insert((s.metric, labels), value);
        }
        Ok(Self(out))
    }

    /// The value of `family` with exactly these labels; 0 if it has not appeared yet.
    pub(crate) fn get(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.0
            .get(&(family.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has_family(&self, family: &str) -> bool {
        self.0.keys().any(|(name, _)| name == family)
    }
}

pub(crate) async fn scrape(base: &str) -> anyhow::Result<Samples> {
    let response = within(15, "scrape", reqwest::get(format!("{base}/metrics"))).await??;
    anyhow::ensure!(
        response.status().is_success(),
        "/metrics: {}",
        response.status()
    );
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(content_type.starts_with("text/plain"), "{content_type}");
    Samples::parse(&response.text().await?)
}

/// The families `docs/metrics.md` lists, with whether they show without plugins, links or
/// files (its "shown" column says `always` for those).
fn documented_families() -> anyhow::Result<Vec<(String, bool)>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))?;
    let families: Vec<(String, bool)> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `veche_"))
        .map(|rest| {
            let name = rest.split('`').next().unwrap_or_default();
            let always = rest.split('|').nth(2).is_some_and(|c| c.trim() == "always");
            (format!("veche_{name}"), always)
        })
        .collect();
    anyhow::ensure!(families.len() >= 20, "docs/metrics.md lists {families:?}");
    Ok(families)
}

#[tokio::test]
async fn metrics_count_logins_messages_and_requests() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut config = test_config();
    config.metrics.enabled = true;
    config.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let node = TestNode::spawn_with(config).await?;
    let base = node.metrics_url().context("no metrics listener")?;

    let live = within(15, "live", reqwest::get(format!("{base}/health/live"))).await??;
    assert_eq!(live.status(), reqwest::StatusCode::OK);
    // Ready once the search index is open (built at the first start).
    eventually(60, "ready", async || {
        let r = reqwest::get(format!("{base}/health/ready")).await?;
        anyhow::ensure!(r.status() == reqwest::StatusCode::OK, "{}", r.text().await?);
        Ok(())
    })
    .await?;

    node.add_user("ann", PASSWORD, false).await?;
    node.add_user("ben", PASSWORD, false).await?;
    let (ann, _) = login(&node, "ann", PASSWORD, "ann-desk").await?;
    let (ben, _) = login(&node, "ben", PASSWORD, "ben-desk").await?;
    let dialog = discussion(&ann, Request::OpenDialog { with: "ben".into() }).await?;

    let before = scrape(&base).await?;
    assert_eq!(before.get("veche_logins_total", &[("outcome", "ok")]), 2.0);

    const SENT: f64 = 3.0;
    for i in 0..3 {
        post(&ann, &dialog.id, &format!("m{i}"), &format!("message {i}")).await?;
    }
    // Ben's connection received the last one: everything before was delivered.
    event_matching(&ben, |e| {
        matches!(&e.change,
            veche_client::protocol::discussions::Change::MessagePosted { message }
                if message.text.as_deref() == Some("message 2"))
    })
    .await?;
    let wrong = connect(&node).await?;
    let refused = within(
        15,
        "wrong login",
        wrong.login("ann", "not the password", "x", "x"),
    )
    .await?
    .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidCredentials));

    let after = scrape(&base).await?;
    let moved = |family: &str, labels: &[(&str, &str)]| {
        after.get(family, labels) - before.get(family, labels)
    };
    assert_eq!(moved("veche_logins_total", &[("outcome", "failed")]), 1.0);
    assert_eq!(moved("veche_logins_total", &[("outcome", "ok")]), 0.0);
    assert_eq!(moved("veche_messages_stored_total", &[]), SENT);
    let send_ok = [("method", "send"), ("outcome", "ok")];
    assert_eq!(moved("veche_requests_total", &send_ok), SENT);
    assert_eq!(
        moved("veche_request_duration_seconds", &[("method", "send")]),
        SENT
    );
    // The refused login's connection; the two users' connections came before.
    assert_eq!(
        moved("veche_connections_total", &[("transport", "quic")]),
        1.0
    );
    assert_eq!(
        after.get("veche_connections_open", &[("transport", "quic")]),
        3.0
    );
    // Each message went to both users' connections (presence may add more).
    assert!(moved("veche_fanout_deliveries_total", &[]) >= 2.0 * SENT);
    assert_eq!(after.get("veche_fanout_lagging_closes_total", &[]), 0.0);
    // Every send went through a committed batch.
    assert!(moved("veche_sequencer_commit_seconds", &[]) >= 1.0);
    assert!(
        after
            .0
            .iter()
            .any(|((name, _), v)| name == "veche_sequencer_batch_commands_sum" && *v >= SENT),
        "{after:?}"
    );
    // SQLite's write-ahead log is a file in the data folder; PostgreSQL keeps its own.
    if std::env::var_os("VECHE_TEST_POSTGRES").is_none() {
        assert!(after.get("veche_sqlite_wal_bytes", &[]) > 0.0);
    }

    for (family, always) in documented_families()? {
        if always {
            assert!(
                after.has_family(&family),
                "{family} is missing from the scrape"
            );
        }
    }
    // What is rendered is documented.
    let documented: Vec<String> = documented_families()?.into_iter().map(|f| f.0).collect();
    for (name, _) in after.0.keys() {
        let family = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            documented.iter().any(|d| d == family),
            "{name} is not in docs/metrics.md"
        );
    }
    Ok(())
}

#[tokio::test]
async fn no_metrics_listener_unless_enabled() -> anyhow::Result<()> {
    let _guard = subscribe();
    // A port that was free a moment ago, configured but not enabled.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = test_config();
    config.metrics.listen = SocketAddr::from(([127, 0, 0, 1], port));
    let node = TestNode::spawn_with(config).await?;
    assert!(node.info().metrics_addr.is_none());
    assert!(node.metrics_url().is_none());
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "something listens on the metrics port");
    Ok(())
}

/// The sample dashboard parses, shows every documented family and asks for nothing else, so
/// that a renamed metric cannot leave a panel silently empty.
#[test]
fn the_sample_dashboard_queries_documented_metrics() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    ))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let documented: Vec<String> = documented_families()?.into_iter().map(|f| f.0).collect();
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let mut queried = std::collections::HashSet::new();
    for panel in panels {
        for target in panel["targets"]
            .as_array()
            .context("a panel without targets")?
        {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("veche_"));
            for name in names {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| documented.iter().any(|d| d == f))
                    .unwrap_or(name);
                anyhow::ensure!(
                    documented.iter().any(|d| d == family),
                    "{name} in {:?} is not in docs/metrics.md",
                    panel["title"]
                );
                queried.insert(family.to_owned());
            }
        }
    }
    let unshown: Vec<&String> = documented
        .iter()
        .filter(|d| !queried.contains(*d))
        .collect();
    anyhow::ensure!(
        unshown.is_empty(),
        "the dashboard does not show {unshown:?}"
    );
    Ok(())
}
