use std::future::Future;
use std::time::{Duration, Instant};

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

use veche_client::protocol::discussions::{DiscussionEvent, DiscussionInfo, SendMessage};
use veche_client::protocol::{Event, Reply, Request};

/// Creates a user and logs them in on a new connection.
pub(crate) async fn user(node: &TestNode, login_name: &str) -> anyhow::Result<Connection> {
    node.add_user(login_name, PASSWORD, false).await?;
    Ok(
        login(node, login_name, PASSWORD, &format!("{login_name}-device"))
            .await?
            .0,
    )
}

/// Sends a request and returns its reply, failing the test on a server error.
pub(crate) async fn ask(conn: &Connection, request: Request) -> anyhow::Result<Reply> {
    Ok(within(15, "request", conn.request(request)).await??)
}

pub(crate) async fn discussion(
    conn: &Connection,
    request: Request,
) -> anyhow::Result<DiscussionInfo> {
    match ask(conn, request).await? {
        Reply::Discussion { discussion } => Ok(discussion),
        other => anyhow::bail!("expected a discussion, got {other:?}"),
    }
}

pub(crate) fn message(discussion: &str, client_msg_id: &str, text: &str) -> SendMessage {
    SendMessage {
        files: Vec::new(),
        discussion: discussion.to_owned(),
        client_msg_id: client_msg_id.to_owned(),
        text: text.to_owned(),
        reply_to: None,
        data: None,
        actions: Vec::new(),
    }
}

/// Posts a message; returns its id and sequence number.
pub(crate) async fn post(
    conn: &Connection,
    discussion: &str,
    client_msg_id: &str,
    text: &str,
) -> anyhow::Result<(String, u64)> {
    match ask(
        conn,
        Request::Send(message(discussion, client_msg_id, text)),
    )
    .await?
    {
        Reply::Sent { message_id, seq } => Ok((message_id, seq)),
        other => anyhow::bail!("expected sent, got {other:?}"),
    }
}

/// The next discussion event on this connection (other events are skipped).
pub(crate) async fn next_discussion_event(conn: &Connection) -> anyhow::Result<DiscussionEvent> {
    loop {
        match within(10, "discussion event", conn.next_event()).await? {
            Some(Event::Discussion { event }) => return Ok(event),
            Some(_) => continue,
            None => anyhow::bail!("the event stream ended"),
        }
    }
}

/// Asserts that no event arrives within a short while (presence and typing, which come and
/// go with every connection, aside).
pub(crate) async fn no_event(conn: &Connection) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
    loop {
        match tokio::time::timeout_at(deadline, conn.next_event()).await {
            Err(_) => return Ok(()),
            Ok(Some(Event::Presence { .. } | Event::Typing { .. })) => continue,
            Ok(event) => anyhow::bail!("expected no event, got {event:?}"),
        }
    }
}

/// The next event that is not about presence or typing.
pub(crate) async fn next_non_presence_event(conn: &Connection) -> Option<Event> {
    loop {
        match conn.next_event().await {
            Some(Event::Presence { .. } | Event::Typing { .. }) => continue,
            other => return other,
        }
    }
}

/// Skips discussion events until one matches.
pub(crate) async fn event_matching(
    conn: &Connection,
    matches: impl Fn(&DiscussionEvent) -> bool,
) -> anyhow::Result<DiscussionEvent> {
    loop {
        let event = next_discussion_event(conn).await?;
        if matches(&event) {
            return Ok(event);
        }
    }
}

/// Proves `conn` received nothing since its last event: `poster` posts a marker in
/// `marker_discussion` (which `conn`'s user can read), and the next discussion event `conn`
/// receives must be that marker. Deliveries follow commit order, so anything committed before
/// the marker would have come first.
pub(crate) async fn quiet_until_marker(
    conn: &Connection,
    poster: &Connection,
    marker_discussion: &str,
) -> anyhow::Result<()> {
    let marker = format!("marker-{}", rand::random::<u64>());
    post(poster, marker_discussion, &marker, &marker).await?;
    let event = next_discussion_event(conn).await?;
    match &event.change {
        veche_client::protocol::discussions::Change::MessagePosted { message }
            if message.text.as_deref() == Some(marker.as_str()) =>
        {
            Ok(())
        }
        _ => anyhow::bail!("expected only the marker, got {event:?}"),
    }
}

/// Runs the `veche` command line in-process, as the binary would; returns what it printed.
pub(crate) async fn veche(args: &[&str]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut argv = vec!["veche"];
    argv.extend_from_slice(args);
    veche_node::cli::run_args(argv, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

pub(crate) use veche_node::test_utils::plugin_folder;

/// Retries `f` every 50 ms until it succeeds or `secs` pass.
pub(crate) async fn eventually<T>(
    secs: u64,
    what: &str,
    mut f: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("gave up waiting: {what}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
