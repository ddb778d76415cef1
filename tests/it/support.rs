use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use veche_client::{ClientConfig, Connection, LoggedIn, Trust};
use veche_node::test_utils::TestNode;

pub(crate) const PASSWORD: &str = "correct horse battery";

/// Per-test log output, captured by the test harness.
pub(crate) fn subscribe() -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .finish();
    tracing::subscriber::set_default(subscriber)
}

/// Every network wait in a test goes through this: a hang fails the test instead of CI.
pub(crate) async fn within<T>(
    secs: u64,
    what: &str,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .with_context(|| format!("timed out after {secs} s: {what}"))
}

pub(crate) fn client_config(node: &TestNode) -> ClientConfig {
    ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path()))
}

pub(crate) async fn connect(node: &TestNode) -> anyhow::Result<Connection> {
    Ok(within(15, "connect", Connection::connect(&client_config(node))).await??)
}

pub(crate) async fn login(
    node: &TestNode,
    login: &str,
    password: &str,
    device: &str,
) -> anyhow::Result<(Connection, LoggedIn)> {
    let conn = connect(node).await?;
    let logged = within(15, "login", conn.login(login, password, device, device)).await??;
    Ok((conn, logged))
}

/// A raw QUIC connection with the veche ALPN, for sending hand-made bytes.
pub(crate) async fn raw(
    node: &TestNode,
) -> anyhow::Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let config = client_config(node);
    let endpoint = veche_client::endpoint(&config)?;
    let conn = within(
        15,
        "raw connect",
        endpoint.connect(config.addr, &config.server_name)?,
    )
    .await??;
    let (send, recv) = within(15, "open control stream", conn.open_bi()).await??;
    Ok((conn, send, recv))
}

/// The application close code of a closed connection.
pub(crate) fn close_code(error: &quinn::ConnectionError) -> Option<u64> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}
