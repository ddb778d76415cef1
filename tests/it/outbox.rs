//! Offline sending, as the README promises (issue 27): `veche send` queues whatever it is given
//! while the node is down, every command that connects sends the outbox first, commands of one
//! profile work side by side, and scripts can tell a queued message from a stored one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use veche_chat::cli::{EXIT_QUEUED, Queued};
use veche_client::protocol::discussions::Change;
use veche_client::protocol::{Reply, Request};
use veche_client::{ConnectError, Connection};
use veche_node::test_utils::TestNode;

use crate::support::{PASSWORD, client_config, discussion, login, post, subscribe, veche, within};

/// A client folder in `tmp`, logged in as `user` through `veche login`.
pub(crate) async fn logged_in(node: &TestNode, tmp: &Path, user: &str) -> anyhow::Result<String> {
    let profile = tmp.join(format!("{user}-client"));
    let profile = profile.to_str().context("utf-8 path")?.to_owned();
    let pw = password_file(tmp)?;
    let out = veche(&[
        "login",
        "--server",
        &node.quic_addr().to_string(),
        "--ca",
        node.ca_path().to_str().context("utf-8 path")?,
        "--user",
        user,
        "--password-file",
        pw.to_str().context("utf-8 path")?,
        "--profile",
        &profile,
    ])
    .await?;
    anyhow::ensure!(out.starts_with("logged in as "), "{out}");
    Ok(profile)
}

fn password_file(tmp: &Path) -> anyhow::Result<PathBuf> {
    let pw = tmp.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    Ok(pw)
}

/// Runs `veche send`, expecting the message to be queued rather than stored.
async fn send_queued(args: &[&str]) -> anyhow::Result<Queued> {
    let mut argv = vec!["send"];
    argv.extend_from_slice(args);
    match veche(&argv).await {
        Ok(out) => anyhow::bail!("expected the message to be queued, got {out:?}"),
        Err(e) => match e.downcast::<Queued>() {
            Ok(queued) => Ok(queued),
            Err(e) => Err(e.context("expected the message to be queued")),
        },
    }
}

/// Every message text of a discussion, oldest first.
async fn texts(conn: &Connection, discussion: &str) -> anyhow::Result<Vec<String>> {
    let reply = within(
        15,
        "history",
        conn.request(Request::History {
            discussion: discussion.to_owned(),
            before: None,
            limit: 500,
        }),
    )
    .await??;
    let Reply::Events { events, .. } = reply else {
        anyhow::bail!("expected events, got {reply:?}");
    };
    Ok(events
        .into_iter()
        .filter_map(|e| match e.change {
            Change::MessagePosted { message } => message.text,
            _ => None,
        })
        .collect())
}

/// The texts of `veche history --json` output.
fn history_texts(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["change"]["message"]["text"].as_str().map(str::to_owned))
        .collect()
}

/// `veche send petrov …`, the README's own example, while the node is down: queued with the
/// name, resolved when the node is back; a name of nobody fails with the reason, shown by
/// `veche outbox`.
#[tokio::test]
async fn a_message_to_a_user_written_while_the_node_is_down_is_queued_and_sent_later()
-> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("ivanov", PASSWORD, false).await?;
    node.add_user("petrov", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let profile = logged_in(&node, tmp.path(), "ivanov").await?;

    let addr = node.quic_addr();
    node.stop().await;
    send_queued(&["petrov", "Счёт № 42 оплачен", "--profile", &profile]).await?;
    send_queued(&["nobody", "в никуда", "--profile", &profile]).await?;
    let listed = veche(&["outbox", "--profile", &profile]).await?;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("pending\tpetrov\tСчёт № 42 оплачен"),
        "{listed}"
    );

    node.start_again_at_same_address(addr).await?;
    // The next command that connects sends the outbox first: the dialog with petrov is opened.
    let history = veche(&["history", "petrov", "--json", "--profile", &profile]).await?;
    assert_eq!(history_texts(&history), vec!["Счёт № 42 оплачен"]);
    let (petrov, _) = login(&node, "petrov", PASSWORD, "p").await?;
    let dialog = discussion(
        &petrov,
        Request::OpenDialog {
            with: "ivanov".into(),
        },
    )
    .await?;
    assert_eq!(texts(&petrov, &dialog.id).await?, vec!["Счёт № 42 оплачен"]);

    let listed = veche(&["outbox", "--profile", &profile]).await?;
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        listed.contains("failed\tnobody\tв никуда\tno discussion or user named \"nobody\""),
        "{listed}"
    );
    Ok(())
}

/// A node that is not running is told at once by its host: connecting does not wait for the
/// timeout.
#[tokio::test]
async fn connecting_to_a_node_that_is_not_running_fails_at_once() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    let mut config = client_config(&node);
    config.timeout = Duration::from_secs(600);
    node.stop().await;
    let result = within(60, "connect", Connection::connect(&config)).await?;
    match result {
        Err(ConnectError::Unreachable(addr)) => assert_eq!(addr, config.addr),
        other => anyhow::bail!("expected unreachable, got {other:?}"),
    }
    Ok(())
}

/// A node that does not answer at all (its host is down, or packets are dropped) is tried by
/// one send; the sends after it are queued without trying, until a command connects again.
#[tokio::test]
async fn after_one_unanswered_attempt_sends_are_queued_without_trying() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("olga", PASSWORD, false).await?;
    node.add_user("oleg", PASSWORD, false).await?;
    let (oleg, _) = login(&node, "oleg", PASSWORD, "o").await?;
    let dialog = discussion(
        &oleg,
        Request::OpenDialog {
            with: "olga".into(),
        },
    )
    .await?;
    let tmp = tempfile::tempdir()?;
    let profile = logged_in(&node, tmp.path(), "olga").await?;

    // The profile now points at a socket that reads everything and answers nothing.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    silent.set_nonblocking(true)?;
    let profile_toml = Path::new(&profile).join("profile.toml");
    let real = std::fs::read_to_string(&profile_toml)?;
    let node_addr = node.quic_addr().to_string();
    anyhow::ensure!(real.contains(&node_addr), "{real}");
    std::fs::write(
        &profile_toml,
        real.replace(&node_addr, &silent.local_addr()?.to_string()),
    )?;
    let received = || -> anyhow::Result<usize> {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        loop {
            match silent.recv(&mut buf) {
                Ok(_) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) => return Err(e.into()),
            }
        }
    };

    let queued = send_queued(&[&dialog.id, "раз", "--profile", &profile]).await?;
    assert!(queued.reason.contains("did not answer"), "{queued}");
    assert!(received()? > 0, "the first send tried to reach the node");
    let queued = send_queued(&[&dialog.id, "два", "--profile", &profile]).await?;
    assert!(queued.reason.contains("did not answer"), "{queued}");
    assert_eq!(received()?, 0, "the second send did not try again");

    // Back at the node: a command that connects sends both, and sends are tried again.
    std::fs::write(&profile_toml, &real)?;
    veche(&["discussions", "--profile", &profile]).await?;
    assert_eq!(texts(&oleg, &dialog.id).await?, vec!["раз", "два"]);
    let out = veche(&["send", &dialog.id, "три", "--profile", &profile]).await?;
    assert!(out.starts_with("sent "), "{out}");
    Ok(())
}

/// The README: the queue goes out "with the next command that connects": `discussions` and
/// `history` as well as `send`.
#[tokio::test]
async fn every_command_that_connects_sends_the_outbox_first() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("vera", PASSWORD, false).await?;
    node.add_user("vlad", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let profile = logged_in(&node, tmp.path(), "vera").await?;
    let addr = node.quic_addr();

    node.stop().await;
    send_queued(&["vlad", "до discussions", "--profile", &profile]).await?;
    node.start_again_at_same_address(addr).await?;
    let listed = veche(&["discussions", "--profile", &profile]).await?;
    assert!(listed.contains("vlad@"), "{listed}");
    let (vlad, _) = login(&node, "vlad", PASSWORD, "v").await?;
    let dialog = discussion(
        &vlad,
        Request::OpenDialog {
            with: "vera".into(),
        },
    )
    .await?;
    assert_eq!(texts(&vlad, &dialog.id).await?, vec!["до discussions"]);

    node.stop().await;
    send_queued(&[&dialog.id, "до history", "--profile", &profile]).await?;
    node.start_again_at_same_address(addr).await?;
    let history = veche(&["history", "vlad", "--json", "--profile", &profile]).await?;
    assert_eq!(
        history_texts(&history),
        vec!["до discussions", "до history"]
    );
    Ok(())
}

/// `veche tail` and `veche send` of one profile at the same time: the send goes out at once
/// (it used to be reported unreachable, held back by the outbox lock `tail` kept).
#[tokio::test]
async fn tail_and_send_of_one_profile_work_side_by_side() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("zoya", PASSWORD, false).await?;
    node.add_user("zhenya", PASSWORD, false).await?;
    let (zhenya, _) = login(&node, "zhenya", PASSWORD, "z").await?;
    let dialog = discussion(
        &zhenya,
        Request::OpenDialog {
            with: "zoya".into(),
        },
    )
    .await?;
    let tmp = tempfile::tempdir()?;
    let profile = logged_in(&node, tmp.path(), "zoya").await?;

    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .args(["tail", "zhenya", "--profile", &profile])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(tail.stdout.take().context("tail's output")?).lines();
    // Zhenya posts until `tail` (which needs a moment to connect) shows one.
    let mut n = 0;
    within(60, "tail follows the dialog", async {
        loop {
            tokio::select! {
                line = lines.next_line() => {
                    let line = line?.context("tail ended")?;
                    if line.contains("zhenya: здесь") {
                        return anyhow::Ok(());
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    n += 1;
                    post(&zhenya, &dialog.id, &format!("z{n}"), "здесь").await?;
                }
            }
        }
    })
    .await??;

    let out = veche(&["send", "zhenya", "рядом с tail", "--profile", &profile]).await?;
    assert!(out.starts_with("sent "), "{out}");
    within(30, "tail shows the message sent beside it", async {
        loop {
            let line = lines.next_line().await?.context("tail ended")?;
            if line.contains("zoya: рядом с tail") {
                return anyhow::Ok(());
            }
        }
    })
    .await??;
    tail.kill().await?;
    Ok(())
}

/// `--ca tls/ca.pem`, given relative to the current folder, still works from any other.
#[tokio::test]
async fn a_relative_ca_path_works_from_another_folder() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("rita", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let profile = tmp.path().join("client");
    let pw = password_file(tmp.path())?;
    // A real process, in the node's folder: the tests' own working folder is shared.
    let login = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .current_dir(node.data_dir())
        .args(["login", "--server", &node.quic_addr().to_string()])
        .args(["--ca", "tls/ca.pem", "--user", "rita", "--password-file"])
        .arg(&pw)
        .arg("--profile")
        .arg(&profile)
        .output();
    let login = within(60, "veche login", login).await??;
    anyhow::ensure!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let saved = std::fs::read_to_string(profile.join("profile.toml"))?;
    assert!(
        saved.contains(node.ca_path().to_str().context("utf-8 path")?),
        "{saved}"
    );
    // From here (the tests' folder, not the node's).
    veche(&[
        "discussions",
        "--profile",
        profile.to_str().context("utf-8 path")?,
    ])
    .await?;
    Ok(())
}

/// A script tells a queued send by its exit code, 75 (EX_TEMPFAIL); `--wait` waits until the
/// node has the message.
#[tokio::test]
async fn a_queued_send_exits_75_and_wait_waits_until_stored() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("sasha", PASSWORD, false).await?;
    node.add_user("senya", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let profile = logged_in(&node, tmp.path(), "sasha").await?;
    let help = veche(&["send", "--help"]).await.unwrap_err();
    let help = format!("{help:#}");
    assert!(help.contains("75") && help.contains("--wait"), "{help}");

    let addr = node.quic_addr();
    node.stop().await;
    let send = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .args(["send", "senya", "в очередь", "--profile", &profile])
        .output();
    let send = within(60, "veche send", send).await??;
    assert_eq!(send.status.code(), Some(i32::from(EXIT_QUEUED)));
    assert!(String::from_utf8_lossy(&send.stdout).is_empty());
    let said = String::from_utf8_lossy(&send.stderr);
    assert!(said.starts_with("queued: "), "{said}");

    // Started while the node is down, it returns once the node has stored the message.
    let wait_args = ["send", "senya", "дождусь", "--wait", "--profile", &profile];
    let (out, restarted) = tokio::join!(
        within(60, "send --wait", veche(&wait_args)),
        node.start_again_at_same_address(addr)
    );
    restarted?;
    let out = out??;
    assert!(out.starts_with("sent "), "{out}");
    let (senya, _) = login(&node, "senya", PASSWORD, "s").await?;
    let dialog = discussion(
        &senya,
        Request::OpenDialog {
            with: "sasha".into(),
        },
    )
    .await?;
    assert_eq!(
        texts(&senya, &dialog.id).await?,
        vec!["в очередь", "дождусь"]
    );
    Ok(())
}
