use std::time::Duration;

use veche_client::protocol::Request;
use veche_client::protocol::discussions::Change;
use veche_client::{Client, ClientEvent, ConnectionState, OutboxState};
use veche_node::test_utils::TestNode;

use crate::support::{PASSWORD, client_config, discussion, login, subscribe, veche, within};

/// Waits until the client reports `state`.
async fn reach(client: &Client, state: ConnectionState) -> anyhow::Result<()> {
    let mut rx = client.state();
    within(60, "connection state", rx.wait_for(|s| *s == state)).await??;
    Ok(())
}

/// Waits until no message of the outbox is pending; returns the outbox.
async fn drained(client: &Client) -> anyhow::Result<Vec<veche_client::OutboxEntry>> {
    within(120, "outbox drained", async {
        loop {
            let outbox = client.outbox().await?;
            if outbox.iter().all(|e| e.state != OutboxState::Pending) {
                return anyhow::Ok(outbox);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?
}

/// Every message text of a discussion, oldest first, paging history back.
async fn texts(conn: &veche_client::Connection, discussion: &str) -> anyhow::Result<Vec<String>> {
    let mut before = None;
    let mut all = Vec::new();
    loop {
        let reply = conn
            .request(Request::History {
                discussion: discussion.to_owned(),
                before,
                limit: 500,
            })
            .await?;
        let veche_client::protocol::Reply::Events { events, more } = reply else {
            anyhow::bail!("expected events");
        };
        before = events.first().map(|e| e.seq);
        let mut page: Vec<String> = events
            .into_iter()
            .filter_map(|e| match e.change {
                Change::MessagePosted { message } => message.text,
                _ => None,
            })
            .collect();
        page.append(&mut all);
        all = page;
        if !more {
            return Ok(all);
        }
    }
}

#[tokio::test]
async fn five_hundred_messages_written_while_the_node_is_down_arrive_once_in_order()
-> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("writer", PASSWORD, false).await?;
    node.add_user("reader", PASSWORD, false).await?;
    let (reader, _) = login(&node, "reader", PASSWORD, "r").await?;
    let dialog = discussion(
        &reader,
        Request::OpenDialog {
            with: "writer".into(),
        },
    )
    .await?;
    drop(reader);

    let dir = tempfile::tempdir()?;
    let client = Client::open(dir.path(), client_config(&node)).await?;
    client.login("writer", PASSWORD, "laptop").await?;
    client.start();
    reach(&client, ConnectionState::Online).await?;

    let addr = node.quic_addr();
    node.stop().await;
    reach(&client, ConnectionState::Connecting).await?;
    let texts_sent: Vec<String> = (0..500).map(|i| format!("сообщение {i}")).collect();
    for t in &texts_sent {
        client.send(&dialog.id, t, None).await?;
    }
    assert!(
        client
            .outbox()
            .await?
            .iter()
            .all(|e| e.state == OutboxState::Pending)
    );

    node.start_again_at_same_address(addr).await?;
    let outbox = drained(&client).await?;
    assert!(
        outbox
            .iter()
            .all(|e| matches!(e.state, OutboxState::Sent { .. })),
        "all sent"
    );
    let seqs: Vec<u64> = outbox
        .iter()
        .filter_map(|e| match e.state {
            OutboxState::Sent { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in the order they were written"
    );

    let (reader, _) = login(&node, "reader", PASSWORD, "r").await?;
    assert_eq!(
        texts(&reader, &dialog.id).await?,
        texts_sent,
        "each once, in order"
    );
    client.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_restarted_client_sends_its_outbox_on_the_next_connection_once() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ann", PASSWORD, false).await?;
    node.add_user("ben", PASSWORD, false).await?;
    let (ben, _) = login(&node, "ben", PASSWORD, "b").await?;
    let dialog = discussion(&ben, Request::OpenDialog { with: "ann".into() }).await?;
    let dir = tempfile::tempdir()?;

    // Composed while not connected; the program then exits.
    let first = Client::open(dir.path(), client_config(&node)).await?;
    first.login("ann", PASSWORD, "desk").await?;
    for t in ["раз", "два", "три"] {
        first.send(&dialog.id, t, None).await?;
    }
    first.shutdown().await;

    let second = Client::open(dir.path(), client_config(&node)).await?;
    assert_eq!(
        second.outbox().await?.len(),
        3,
        "the outbox survived the restart"
    );
    second.start();
    drained(&second).await?;
    second.shutdown().await;

    // A third start finds nothing to send.
    let third = Client::open(dir.path(), client_config(&node)).await?;
    let mut events = third.subscribe();
    third.start();
    reach(&third, ConnectionState::Online).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outbox = third.outbox().await?;
    assert!(
        outbox
            .iter()
            .all(|e| matches!(e.state, OutboxState::Sent { .. })),
        "{outbox:?}"
    );
    third.shutdown().await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, ClientEvent::Outbox(_)),
            "nothing left to send: {event:?}"
        );
    }
    assert_eq!(texts(&ben, &dialog.id).await?, vec!["раз", "два", "три"]);
    Ok(())
}

#[tokio::test]
async fn a_refused_message_is_marked_failed_and_the_rest_still_go_out() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("cat", PASSWORD, false).await?;
    node.add_user("dog", PASSWORD, false).await?;
    let (dog, _) = login(&node, "dog", PASSWORD, "d").await?;
    let dialog = discussion(&dog, Request::OpenDialog { with: "cat".into() }).await?;
    let dir = tempfile::tempdir()?;
    let client = Client::open(dir.path(), client_config(&node)).await?;
    client.login("cat", PASSWORD, "phone").await?;
    let mut events = client.subscribe();
    client.send(&dialog.id, "первое", None).await?;
    client.send(&dialog.id, &"я".repeat(10_000), None).await?;
    client.send(&dialog.id, "третье", None).await?;
    client.start();
    let outbox = drained(&client).await?;
    assert!(matches!(outbox[0].state, OutboxState::Sent { .. }));
    match &outbox[1].state {
        OutboxState::Failed { reason } => assert!(reason.contains("16384"), "{reason}"),
        other => anyhow::bail!("the long message should fail, got {other:?}"),
    }
    assert!(matches!(outbox[2].state, OutboxState::Sent { .. }));
    assert_eq!(texts(&dog, &dialog.id).await?, vec!["первое", "третье"]);

    // The application saw the state changes, and its own messages live, once each.
    let mut failed = 0;
    let mut posted = Vec::new();
    while !posted.contains(&"третье".to_owned()) {
        let event = within(30, "client events", events.recv()).await??;
        match event {
            ClientEvent::Outbox(e) if matches!(e.state, OutboxState::Failed { .. }) => failed += 1,
            ClientEvent::Server(veche_client::protocol::Event::Discussion { event }) => {
                if let Change::MessagePosted { message } = event.change {
                    posted.push(message.text.unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    assert_eq!(failed, 1);
    assert_eq!(posted, vec!["первое", "третье"]);
    client.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_scriptable_client_logs_in_sends_tails_and_reads_history() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("ann", PASSWORD, false).await?;
    node.add_user("ben", PASSWORD, false).await?;
    let (ben, _) = login(&node, "ben", PASSWORD, "b").await?;
    let dialog = discussion(&ben, Request::OpenDialog { with: "ann".into() }).await?;

    let dir = tempfile::tempdir()?;
    let profile = dir.path().join("client");
    let profile = profile.to_str().unwrap_or_default().to_owned();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let addr = node.quic_addr().to_string();
    let ca = node.ca_path();
    let out = veche(&[
        "login",
        "--server",
        &addr,
        "--ca",
        ca.to_str().unwrap_or_default(),
        "--user",
        "ann",
        "--password-file",
        pw.to_str().unwrap_or_default(),
        "--profile",
        &profile,
    ])
    .await?;
    assert!(out.contains("logged in as ann@test.local"), "{out}");

    let out = veche(&["discussions", "--profile", &profile]).await?;
    assert!(
        out.contains(&dialog.id) && out.contains("ben@test.local"),
        "{out}"
    );

    // A dialog is named by the other user.
    let out = veche(&[
        "send",
        "ben",
        "Привет из командной строки :wave:",
        "--profile",
        &profile,
    ])
    .await?;
    assert!(out.starts_with("sent "), "{out}");

    // `tail` prints what arrives live.
    let tail_args = ["tail", "ben", "--count", "1", "--profile", &profile];
    // Ben posts until `tail` (which needs a moment to connect) has printed one.
    let tail = within(30, "tail", veche(&tail_args));
    tokio::pin!(tail);
    let mut n = 0;
    let tailed = loop {
        tokio::select! {
            out = &mut tail => break out??,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                n += 1;
                crate::support::post(&ben, &dialog.id, &format!("b{n}"), "Ответ Бена").await?;
            }
        }
    };
    assert!(tailed.contains("ben: Ответ Бена"), "{tailed}");

    // With the node down, `send` queues; the next command that connects sends it first.
    let addr = node.quic_addr();
    node.stop().await;
    let err = veche(&[
        "send",
        &dialog.id,
        "написано без связи",
        "--profile",
        &profile,
    ])
    .await
    .unwrap_err();
    assert!(
        err.downcast_ref::<veche_chat::cli::Queued>().is_some(),
        "{err:#}"
    );
    node.start_again_at_same_address(addr).await?;
    let out = veche(&["send", &dialog.id, "и после", "--profile", &profile]).await?;
    assert!(out.starts_with("sent "), "{out}");

    let out = veche(&["history", "ben", "--json", "--profile", &profile]).await?;
    let mut texts: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["change"]["message"]["text"].as_str().map(str::to_owned))
        .collect();
    // Ben may have answered more than once while `tail` connected.
    texts.dedup();
    assert_eq!(
        texts,
        vec![
            "Привет из командной строки 👋",
            "Ответ Бена",
            "написано без связи",
            "и после"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn the_sdk_reads_writes_and_forwards_each_event_once_across_a_reconnect() -> anyhow::Result<()>
{
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("eva", PASSWORD, false).await?;
    node.add_user("fil", PASSWORD, false).await?;
    let dir = tempfile::tempdir()?;
    let client = Client::open(dir.path(), client_config(&node)).await?;
    client.login("eva", PASSWORD, "tablet").await?;
    client.start();
    reach(&client, ConnectionState::Online).await?;
    let mut events = client.subscribe();

    let (fil, _) = login(&node, "fil", PASSWORD, "f").await?;
    let dialog = discussion(&fil, Request::OpenDialog { with: "eva".into() }).await?;
    crate::support::post(&fil, &dialog.id, "f1", "первое").await?;

    let listed = client.discussions().await?;
    assert_eq!(
        listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        vec![dialog.id.as_str()]
    );
    let (history, more) = client.history(&dialog.id, None, 50).await?;
    assert!(!more);
    let first = history
        .iter()
        .find_map(|e| match &e.change {
            Change::MessagePosted { message } => Some(message.id.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("history has the message"))?;
    client.react(&dialog.id, &first, ":+1:", true).await?;
    client.mark_read(&dialog.id, 2).await?;
    let mine = client.send(&dialog.id, "моё", None).await?;
    let sent = drained(&client).await?;
    let OutboxState::Sent { message_id, .. } = &sent[0].state else {
        anyhow::bail!("sent")
    };
    assert_eq!(sent[0].id, mine.id);
    client
        .edit(&dialog.id, message_id, "моё, исправлено")
        .await?;
    client.delete(&dialog.id, message_id).await?;

    // The node restarts; a message posted meanwhile arrives once, live or by sync.
    let addr = node.quic_addr();
    node.stop().await;
    reach(&client, ConnectionState::Connecting).await?;
    node.start_again_at_same_address(addr).await?;
    let (fil, _) = login(&node, "fil", PASSWORD, "f").await?;
    crate::support::post(&fil, &dialog.id, "f2", "пока тебя не было").await?;
    // A group created while the client was away: all of it is forwarded, from the start.
    let group = discussion(
        &fil,
        Request::CreateGroup {
            title: "Новая группа".into(),
            members: vec!["eva".into()],
        },
    )
    .await?;
    crate::support::post(&fil, &group.id, "g1", "добро пожаловать").await?;
    reach(&client, ConnectionState::Online).await?;
    crate::support::post(&fil, &dialog.id, "f3", "и сейчас").await?;

    let mut seen = Vec::new();
    let mut last_seq: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    within(30, "events after the reconnect", async {
        while !seen.contains(&"и сейчас".to_owned())
            || !seen.contains(&"добро пожаловать".to_owned())
        {
            if let ClientEvent::Server(veche_client::protocol::Event::Discussion { event }) =
                events.recv().await?
            {
                let last = last_seq.entry(event.discussion.clone()).or_insert(0);
                assert!(
                    event.seq > *last,
                    "each event once, in order: {} after {last}",
                    event.seq
                );
                if event.discussion == group.id && *last == 0 {
                    assert_eq!(
                        event.seq, 1,
                        "a discussion new to the client starts at its beginning"
                    );
                }
                *last = event.seq;
                if let Change::MessagePosted { message } = event.change {
                    seen.push(message.text.unwrap_or_default());
                }
            }
        }
        anyhow::Ok(())
    })
    .await??;
    assert_eq!(
        seen.iter().filter(|t| *t == "пока тебя не было").count(),
        1,
        "{seen:?}"
    );
    client.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_first_administrator_is_created_from_the_client_with_the_setup_token()
-> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let token = node
        .info()
        .setup_token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("setup token"))?;
    let dir = tempfile::tempdir()?;
    let profile = dir
        .path()
        .join("client")
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let addr = node.quic_addr().to_string();
    let ca = node.ca_path();
    let args = [
        "setup",
        "--server",
        &addr,
        "--ca",
        ca.to_str().unwrap_or_default(),
        "--token",
        &token,
        "--user",
        "root",
        "--name",
        "Администратор",
        "--password-file",
        pw.to_str().unwrap_or_default(),
        "--profile",
        &profile,
    ];
    let out = veche(&args).await?;
    assert!(
        out.contains("created administrator root@test.local"),
        "{out}"
    );
    // The token works once.
    let again = veche(&args).await.unwrap_err();
    assert!(format!("{again:#}").contains("setup token"), "{again:#}");
    // The profile is logged in as the administrator, on its own device.
    let out = veche(&["discussions", "--profile", &profile]).await?;
    assert!(out.is_empty(), "{out}");
    let veche_client::protocol::admin::AdminReply::Sessions { sessions } = node
        .admin(veche_client::protocol::admin::AdminRequest::Sessions {
            login: "root".into(),
        })
        .await?
    else {
        anyhow::bail!("sessions");
    };
    assert_eq!(
        sessions.len(),
        1,
        "the setup session was ended: {sessions:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_revoked_client_goes_offline_instead_of_retrying() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("gena", PASSWORD, false).await?;
    let dir = tempfile::tempdir()?;
    let client = Client::open(dir.path(), client_config(&node)).await?;
    client.login("gena", PASSWORD, "laptop").await?;
    client.start();
    reach(&client, ConnectionState::Online).await?;
    node.admin(veche_client::protocol::admin::AdminRequest::Revoke {
        login: "gena".into(),
        session_id: None,
    })
    .await?;
    reach(&client, ConnectionState::Offline).await?;
    client.shutdown().await;
    Ok(())
}

/// Clients issue: the client folder holds the session token, so it is the user's alone: 0700,
/// its files 0600, when `login` creates them and, when loosened, again at the next start.
#[cfg(unix)]
#[tokio::test]
async fn the_client_folder_and_its_files_are_private_to_their_owner() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let mode = |path: &std::path::Path| -> anyhow::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    };
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("tanya", PASSWORD, false).await?;
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("home/.local/share/veche-client");
    let profile = folder.to_str().unwrap_or_default().to_owned();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let addr = node.quic_addr().to_string();
    let ca = node.ca_path();
    veche(&[
        "login",
        "--server",
        &addr,
        "--ca",
        ca.to_str().unwrap_or_default(),
        "--user",
        "tanya",
        "--password-file",
        pw.to_str().unwrap_or_default(),
        "--profile",
        &profile,
    ])
    .await?;
    let check = || -> anyhow::Result<()> {
        assert_eq!(mode(&folder)?, 0o700, "the client folder");
        let mut files = 0;
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            assert_eq!(mode(&path)?, 0o600, "{}", path.display());
            files += 1;
        }
        assert!(folder.join("client.db").exists() && folder.join("profile.toml").exists());
        assert!(files >= 2);
        Ok(())
    };
    check()?;

    // Loosened by hand, or left so by an earlier version: tightened by the next command.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755))?;
    for name in ["client.db", "profile.toml"] {
        std::fs::set_permissions(folder.join(name), std::fs::Permissions::from_mode(0o644))?;
    }
    veche(&["discussions", "--profile", &profile]).await?;
    check()?;

    // A folder everyone writes to is refused, not tightened.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared)?;
    std::fs::copy(folder.join("profile.toml"), shared.join("profile.toml"))?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777))?;
    let err = veche(&[
        "discussions",
        "--profile",
        shared.to_str().unwrap_or_default(),
    ])
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("other users write to"),
        "{err:#}"
    );
    assert_eq!(mode(&shared)?, 0o777);
    Ok(())
}

/// Clients issue: on a terminal, `veche login` asks for the password and does not show it as
/// it is typed (the real command, in a pseudo-terminal).
#[cfg(unix)]
#[tokio::test]
async fn login_on_a_terminal_asks_for_the_password_without_showing_it() -> anyhow::Result<()> {
    use std::time::Instant;

    use expectrl::Expect;

    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("uma", PASSWORD, false).await?;
    let dir = tempfile::tempdir()?;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_veche-it"));
    command
        .args(["login", "--server", &node.quic_addr().to_string(), "--ca"])
        .arg(node.ca_path())
        .args(["--user", "uma", "--profile"])
        .arg(dir.path().join("client"));
    let shown = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut terminal = expectrl::Session::spawn(command)?;
        terminal.set_expect_timeout(Some(Duration::from_secs(60)));
        let prompt = terminal.expect("Password: ")?;
        let mut shown = String::from_utf8_lossy(prompt.before()).into_owned();
        // Like `expect`'s users, type only once the program has turned echo off.
        let deadline = Instant::now() + Duration::from_secs(30);
        while terminal.get_process().get_echo()? {
            anyhow::ensure!(Instant::now() < deadline, "echo stays on at the prompt");
            std::thread::sleep(Duration::from_millis(10));
        }
        terminal.send_line(PASSWORD)?;
        let done = terminal.expect(expectrl::Regex("logged in as [^\r\n]*"))?;
        shown.push_str(&String::from_utf8_lossy(done.before()));
        shown.push_str(&String::from_utf8_lossy(&done[0]));
        Ok(shown)
    })
    .await??;
    assert!(
        !shown.contains(PASSWORD),
        "the password was shown: {shown:?}"
    );
    assert!(shown.contains("logged in as uma@test.local"), "{shown:?}");
    Ok(())
}

/// The real `veche serve` as a child process on `config` and `data`; returns it with its QUIC
/// address and CA certificate, read from its banner.
async fn serve_process(
    config: &std::path::Path,
    data: &std::path::Path,
) -> anyhow::Result<(
    tokio::process::Child,
    std::net::SocketAddr,
    std::path::PathBuf,
)> {
    use anyhow::Context;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("the node's output")?).lines();
    let (mut addr, mut ca) = (None, None);
    within(60, "the node's banner", async {
        while addr.is_none() || ca.is_none() {
            let line = lines.next_line().await?.context("the node ended")?;
            if let Some((_, a)) = line.split_once("QUIC (ALPN veche/1):") {
                addr = Some(a.trim().parse::<std::net::SocketAddr>()?);
            } else if let Some((_, c)) = line.split_once("CA certificate:") {
                ca = Some(std::path::PathBuf::from(c.trim()));
            }
        }
        anyhow::Ok(())
    })
    .await??;
    // The rest of the output is read, so that the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((
        child,
        addr.context("no QUIC address")?,
        ca.context("no CA")?,
    ))
}

/// A node killed outright and started again at once on the same port and data folder resets
/// the connections of the old process: its stateless-reset key comes from the node's identity,
/// so the client trusts the restarted node's reset and learns at once that its connection is
/// gone, instead of waiting for the idle timeout.
#[cfg(unix)]
#[tokio::test]
async fn a_node_killed_and_restarted_resets_the_old_connections() -> anyhow::Result<()> {
    let _guard = subscribe();
    let dir = tempfile::tempdir()?;
    let (config, data) = process_node_config(dir.path())?;
    let (mut first, addr, ca) = serve_process(&config, &data).await?;
    let client = veche_client::ClientConfig::new(addr, veche_client::Trust::CaFile(ca));
    let conn = within(30, "connect", veche_client::Connection::connect(&client)).await??;

    first.start_kill()?;
    first.wait().await?;
    let (_second, again, _) = serve_process(&config, &data).await?;
    assert_eq!(again, addr);

    // Without the reset the client would wait for its idle timeout and see "timed out".
    let closed = within(90, "the old connection to end", conn.closed()).await?;
    assert!(closed.reset, "{closed:?}");
    // And the node is there for a new connection.
    within(
        30,
        "connect again",
        veche_client::Connection::connect(&client),
    )
    .await??;
    Ok(())
}

/// Writes the configuration of a node for [`serve_process`]: loopback, a free QUIC port that
/// stays its own across restarts. Returns the configuration file and the data folder.
fn process_node_config(
    dir: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"test.local\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\n\
             [federation]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n"
        ),
    )?;
    Ok((config, dir.join("data")))
}

/// Until `tail`'s output shows `text`, `profile` sends it to `to` again and again.
async fn until_tail_shows(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    profile: &str,
    to: &str,
    text: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    within(120, "tail shows the message", async {
        loop {
            tokio::select! {
                line = lines.next_line() => {
                    let line = line?.context("tail ended")?;
                    if line.contains(text) {
                        return anyhow::Ok(());
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(300)) => {
                    veche(&["send", to, text, "--wait", "--profile", profile]).await?;
                }
            }
        }
    })
    .await?
}

/// `veche tail` outlives a crash of its node: the node killed outright and started again,
/// tail says it lost the connection, connects again and shows what comes next.
#[cfg(unix)]
#[tokio::test]
async fn tail_follows_a_dialog_across_a_crash_of_the_node() -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let _guard = subscribe();
    let dir = tempfile::tempdir()?;
    let (config, data) = process_node_config(dir.path())?;
    let (mut first, addr, ca) = serve_process(&config, &data).await?;
    let profiles = process_users(dir.path(), &data, addr, &ca, &["anya", "boris"]).await?;
    let (anya, boris) = (&profiles[0], &profiles[1]);
    veche(&["send", "boris", "привет", "--wait", "--profile", anya]).await?;

    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .args(["tail", "anya", "--profile", boris])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = BufReader::new(tail.stdout.take().context("tail's output")?).lines();
    let mut err = BufReader::new(tail.stderr.take().context("tail's errors")?).lines();
    until_tail_shows(&mut out, anya, "boris", "до сбоя").await?;

    first.start_kill()?;
    first.wait().await?;
    let (_second, _, _) = serve_process(&config, &data).await?;
    until_tail_shows(&mut out, anya, "boris", "после сбоя").await?;
    let said = within(30, "tail says it lost the connection", async {
        loop {
            let line = err.next_line().await?.context("tail's errors ended")?;
            if line.contains("connection was lost") {
                return anyhow::Ok(line);
            }
        }
    })
    .await??;
    assert!(said.contains("connecting again"), "{said}");
    assert!(tail.try_wait()?.is_none(), "tail ended");
    Ok(())
}

/// Adds `users` to the node running on `data` at `addr` and logs each in with a profile of its
/// own under `dir`; returns the profiles' folders.
async fn process_users(
    dir: &std::path::Path,
    data: &std::path::Path,
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    users: &[&str],
) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;

    let path = |p: &std::path::Path| p.to_str().context("utf-8 path").map(str::to_owned);
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let (pw, data, ca) = (path(&pw)?, path(data)?, path(ca)?);
    let mut profiles = Vec::new();
    for user in users {
        veche(&[
            "admin",
            "user",
            "add",
            user,
            "--password-file",
            &pw,
            "--data",
            &data,
        ])
        .await?;
        let profile = path(&dir.join(format!("{user}-client")))?;
        let out = veche(&[
            "login",
            "--server",
            &addr.to_string(),
            "--ca",
            &ca,
            "--user",
            user,
            "--password-file",
            &pw,
            "--profile",
            &profile,
        ])
        .await?;
        anyhow::ensure!(out.starts_with("logged in as "), "{out}");
        profiles.push(profile);
    }
    Ok(profiles)
}

/// `veche send` as its own process: its exit status and what it printed.
async fn send_process(args: &[&str]) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .arg("send")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await?;
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status, shown))
}

/// Issue 29: `veche send` right after a crash and an immediate restart of its node is stored,
/// not queued as "unreachable". The node is killed outright while a `tail` of the same
/// profile holds a connection to it; a send while it is down is queued at once (exit 75);
/// the node comes back on the same port and data folder, and the very next send goes out
/// with the queued one before it, in order; tail, connected again, shows it.
#[cfg(unix)]
#[tokio::test]
async fn send_right_after_a_crash_and_restart_is_stored_not_queued() -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let _guard = subscribe();
    let dir = tempfile::tempdir()?;
    let (config, data) = process_node_config(dir.path())?;
    let (mut first, addr, ca) = serve_process(&config, &data).await?;
    let profiles = process_users(dir.path(), &data, addr, &ca, &["anya", "boris"]).await?;
    let (anya, boris) = (&profiles[0], &profiles[1]);
    veche(&["send", "boris", "привет", "--wait", "--profile", anya]).await?;
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .args(["tail", "boris", "--profile", anya])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut shown = BufReader::new(tail.stdout.take().context("tail's output")?).lines();
    until_tail_shows(&mut shown, anya, "boris", "до сбоя").await?;

    first.start_kill()?;
    first.wait().await?;
    let (status, out) = send_process(&["boris", "во время сбоя", "--profile", anya]).await?;
    assert_eq!(
        status.code(),
        Some(75),
        "queued while the node is down: {out}"
    );
    assert!(out.contains("queued"), "{out}");
    let (_second, again, _) = serve_process(&config, &data).await?;
    assert_eq!(again, addr);

    let (status, out) = send_process(&["boris", "после сбоя", "--profile", anya]).await?;
    assert!(status.success(), "{status}: {out}");
    assert!(out.starts_with("sent "), "{out}");
    let outbox = veche(&["outbox", "--profile", anya]).await?;
    assert_eq!(outbox, "", "nothing left queued");
    let history = veche(&["history", "anya", "--profile", boris]).await?;
    let (during, after) = (
        history.find("во время сбоя").context(history.clone())?,
        history.find("после сбоя").context(history.clone())?,
    );
    assert!(during < after, "in order: {history}");
    within(60, "tail shows the message sent after the restart", async {
        loop {
            let line = shown.next_line().await?.context("tail ended")?;
            if line.contains("после сбоя") {
                return anyhow::Ok(());
            }
        }
    })
    .await??;
    Ok(())
}
