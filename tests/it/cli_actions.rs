//! Every user action from the command line (issue 27, "every protocol action from the command
//! line"): each `veche` command runs in-process (or as a real process where it must keep
//! running) against a real node, and what it did is checked from another client.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use veche_client::Connection;
use veche_client::protocol::discussions::{Action, Change, DiscussionKind, ObjectRef};
use veche_client::protocol::presence::{NotificationLevel, PresenceState};
use veche_client::protocol::{Event, Reply, Request};
use veche_node::test_utils::TestNode;

use crate::support::{
    PASSWORD, ask, discussion, eventually, login, message, post, subscribe, veche, within,
};

/// A client folder in `tmp`, logged in as `user` through `veche login`.
async fn profile(node: &TestNode, tmp: &Path, user: &str) -> anyhow::Result<String> {
    crate::outbox::logged_in(node, tmp, user).await
}

/// Runs `veche ARGS --profile PROFILE`.
async fn run(profile: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = args.to_vec();
    argv.extend_from_slice(&["--profile", profile]);
    within(60, "veche", veche(&argv)).await?
}

/// Runs `veche ARGS --profile PROFILE`, expecting it to fail; returns the error's text.
async fn refused(profile: &str, args: &[&str]) -> anyhow::Result<String> {
    match run(profile, args).await {
        Ok(out) => anyhow::bail!("expected {args:?} to fail, it printed {out:?}"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

async fn dialog(conn: &Connection, with: &str) -> anyhow::Result<String> {
    Ok(discussion(conn, Request::OpenDialog { with: with.into() })
        .await?
        .id)
}

/// The next event on `conn` that is not presence or typing.
async fn next_event(conn: &Connection) -> anyhow::Result<Event> {
    within(
        15,
        "an event",
        crate::support::next_non_presence_event(conn),
    )
    .await?
    .context("the event stream ended")
}

/// The next discussion change on `conn`.
async fn next_change(conn: &Connection) -> anyhow::Result<Change> {
    Ok(crate::support::next_discussion_event(conn).await?.change)
}

/// The next discussion change on `conn` that `wanted` picks (others are skipped).
async fn change_matching(
    conn: &Connection,
    wanted: impl Fn(&Change) -> bool,
) -> anyhow::Result<Change> {
    Ok(crate::support::event_matching(conn, |e| wanted(&e.change))
        .await?
        .change)
}

fn json_lines(out: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    out.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

#[tokio::test]
async fn a_group_is_created_grown_renamed_shrunk_and_left_from_the_command_line()
-> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    for user in ["ivan", "petr", "olga"] {
        node.add_user(user, PASSWORD, false).await?;
    }
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;
    let petr = profile(&node, tmp.path(), "petr").await?;
    let (olga_conn, _) = login(&node, "olga", PASSWORD, "o").await?;
    let (ivan_conn, _) = login(&node, "ivan", PASSWORD, "i").await?;

    let out = run(&ivan, &["group", "create", "Закупки", "petr"]).await?;
    let id = out
        .strip_prefix("created ")
        .and_then(|rest| rest.split('\t').next())
        .with_context(|| format!("no id in {out:?}"))?
        .to_owned();
    assert!(out.trim_end().ends_with("\tЗакупки"), "{out}");
    let info = discussion(
        &ivan_conn,
        Request::GetDiscussion {
            discussion: id.clone(),
        },
    )
    .await?;
    assert_eq!(info.kind, DiscussionKind::Group);
    let mut members: Vec<&str> = info.members.iter().map(|m| m.user.as_str()).collect();
    members.sort_unstable();
    assert_eq!(members, ["ivan@test.local", "petr@test.local"]);

    // By title, as the README's users would.
    assert_eq!(
        run(&ivan, &["group", "add", "Закупки", "olga"]).await?,
        "added olga\n"
    );
    match next_change(&olga_conn).await? {
        Change::Created { .. } | Change::MembersAdded { .. } => {}
        other => anyhow::bail!("olga was not told she was added: {other:?}"),
    }
    run(&ivan, &["group", "rename", &id, "Закупки 2027"]).await?;
    let info = discussion(
        &ivan_conn,
        Request::GetDiscussion {
            discussion: id.clone(),
        },
    )
    .await?;
    assert_eq!(info.title, "Закупки 2027");

    // Only the owner manages members; the refusal says so.
    let err = refused(&petr, &["group", "remove", &id, "olga"]).await?;
    assert!(err.contains("forbidden"), "{err}");
    run(&ivan, &["group", "remove", "Закупки 2027", "olga"]).await?;
    within(15, "olga loses the group", async {
        loop {
            if let Event::DiscussionRemoved { discussion } = next_event(&olga_conn).await?
                && discussion == id
            {
                return anyhow::Ok(());
            }
        }
    })
    .await??;

    run(&petr, &["group", "leave", &id]).await?;
    let info = discussion(
        &ivan_conn,
        Request::GetDiscussion {
            discussion: id.clone(),
        },
    )
    .await?;
    let members: Vec<&str> = info.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(members, ["ivan@test.local"]);

    // A dialog is not a group: told before anything is asked of the node.
    dialog(&ivan_conn, "olga").await?;
    let err = refused(&ivan, &["group", "add", "olga", "petr"]).await?;
    assert!(err.contains("is a dialog, not a group"), "{err}");
    let err = refused(&ivan, &["group", "add", &id, "Пётр"]).await?;
    assert!(err.contains("login"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_object_discussion_is_opened_and_tailed_across_a_restart_until_access_ends()
-> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("root", PASSWORD, true).await?;
    node.add_user("ivan", PASSWORD, false).await?;
    node.add_user("olga", PASSWORD, false).await?;
    let (root, _) = login(&node, "root", PASSWORD, "r").await?;
    let invoice = ObjectRef {
        application: "erp".into(),
        object_type: "invoice".into(),
        object_id: "INV-7".into(),
    };
    let access = |users: &[&str]| Request::SetObjectAccess {
        object: invoice.clone(),
        users: users.iter().map(|u| (*u).to_owned()).collect(),
        groups: vec![],
    };
    ask(&root, access(&["ivan", "olga"])).await?;
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;

    let out = run(
        &ivan,
        &["open-object", "erp/invoice/INV-7", "--title", "Счёт 7"],
    )
    .await?;
    let (id, title) = out.trim_end().split_once('\t').context("id and title")?;
    assert_eq!(title, "Счёт 7", "{out}");
    let id = id.to_owned();
    // Opened, not followed: it is not in the list.
    let listed = run(&ivan, &["discussions"]).await?;
    assert!(!listed.contains(&id), "{listed}");
    let err = refused(&ivan, &["open-object", "erp/invoice"]).await?;
    assert!(err.contains("APP/TYPE/ID"), "{err}");

    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .args(["tail", "erp/invoice/INV-7", "--profile", &ivan])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(tail.stdout.take().context("tail's output")?).lines();
    let (olga, _) = login(&node, "olga", PASSWORD, "o").await?;
    // Olga posts until `tail` (which needs a moment to connect) shows one.
    let mut n = 0;
    within(60, "tail follows the object discussion", async {
        loop {
            tokio::select! {
                line = lines.next_line() => {
                    let line = line?.context("tail ended")?;
                    if line.contains("olga: оплачен?") {
                        return anyhow::Ok(());
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    n += 1;
                    post(&olga, &id, &format!("o{n}"), "оплачен?").await?;
                }
            }
        }
    })
    .await??;

    // The node restarts: tail connects again by itself and misses nothing.
    let addr = node.quic_addr();
    drop(olga);
    node.start_again_at_same_address(addr).await?;
    let (olga, _) = login(&node, "olga", PASSWORD, "o").await?;
    post(&olga, &id, "after-restart", "после перезапуска").await?;
    within(60, "tail shows what was posted after the restart", async {
        loop {
            let line = lines.next_line().await?.context("tail ended")?;
            if line.contains("olga: после перезапуска") {
                return anyhow::Ok(());
            }
        }
    })
    .await??;

    // Ivan is taken off the object's list: tail stops, says why, and fails.
    let (root, _) = login(&node, "root", PASSWORD, "r").await?;
    ask(&root, access(&["olga"])).await?;
    let status = within(30, "tail stops", tail.wait()).await??;
    assert!(!status.success());
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(
        tail.stderr.as_mut().context("tail's errors")?,
        &mut stderr,
    )
    .await?;
    assert!(
        stderr.contains("can no longer read erp/invoice/INV-7"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn reactions_edits_deletions_and_clicks_reach_the_other_client() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    node.add_user("petr", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;
    let (petr, _) = login(&node, "petr", PASSWORD, "p").await?;
    let id = dialog(&petr, "ivan").await?;
    let (theirs, seq) = post(&petr, &id, "p1", "Счёт № 42 готов").await?;
    change_matching(&petr, |c| matches!(c, Change::MessagePosted { .. })).await?;

    let seq_arg = format!("#{seq}");
    run(&ivan, &["react", "petr", &seq_arg, ":thumbsup:"]).await?;
    match next_change(&petr).await? {
        Change::ReactionAdded { message_id, emoji } => {
            assert_eq!(message_id, theirs);
            assert_eq!(emoji, "👍");
        }
        other => anyhow::bail!("expected a reaction, got {other:?}"),
    }
    run(&ivan, &["unreact", "petr", &seq.to_string(), "👍"]).await?;
    assert!(matches!(
        next_change(&petr).await?,
        Change::ReactionRemoved { message_id, .. } if message_id == theirs
    ));

    // Someone else's message is not ivan's to edit; the refusal says so.
    let err = refused(&ivan, &["edit", "petr", &seq_arg, "подделка"]).await?;
    assert!(
        err.contains("cannot edit #") && err.contains("forbidden"),
        "{err}"
    );

    let sent = run(&ivan, &["send", "petr", "Черновик"]).await?;
    let mine = sent
        .strip_prefix("sent ")
        .and_then(|s| s.split(' ').next())
        .context("message id")?
        .to_owned();
    change_matching(&petr, |c| matches!(c, Change::MessagePosted { .. })).await?;
    // By id this time.
    run(&ivan, &["edit", &id, &mine, "Счёт № 42 оплачен"]).await?;
    match next_change(&petr).await? {
        Change::MessageEdited {
            message_id, text, ..
        } => {
            assert_eq!(message_id, mine);
            assert_eq!(text.as_deref(), Some("Счёт № 42 оплачен"));
        }
        other => anyhow::bail!("expected an edit, got {other:?}"),
    }
    run(&ivan, &["delete", "petr", &mine]).await?;
    assert!(matches!(
        next_change(&petr).await?,
        Change::MessageDeleted { message_id } if message_id == mine
    ));

    // A button: listed by `history`, clicked by ivan, told to its author.
    let mut with_button = message(&id, "p2", "Утвердить оплату?");
    with_button.actions = vec![Action {
        id: "approve".into(),
        label: "Утвердить".into(),
    }];
    let Reply::Sent { message_id, seq } = ask(&petr, Request::Send(with_button)).await? else {
        anyhow::bail!("not sent");
    };
    change_matching(&petr, |c| matches!(c, Change::MessagePosted { .. })).await?;
    let history = run(&ivan, &["history", "petr"]).await?;
    assert!(
        history.contains("\t\t  [button approve: Утвердить]"),
        "{history}"
    );
    assert!(history.contains("ivan: [deleted]"), "{history}");
    run(&ivan, &["click", "petr", &format!("#{seq}"), "approve"]).await?;
    within(15, "the click reaches the author", async {
        loop {
            if let Event::ActionClicked {
                message_id: clicked,
                action_id,
                user,
                ..
            } = next_event(&petr).await?
            {
                assert_eq!(clicked, message_id);
                assert_eq!(action_id, "approve");
                assert_eq!(user, "ivan@test.local");
                return anyhow::Ok(());
            }
        }
    })
    .await??;

    // A number that is not a message says what it is.
    let err = refused(&ivan, &["react", "petr", "#1", "👍"]).await?;
    assert!(err.contains("#1 is not a message"), "{err}");
    let err = refused(&ivan, &["react", "petr", "#999", "👍"]).await?;
    assert!(err.contains("no event #999"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_file_sent_from_the_command_line_downloads_with_identical_bytes() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    node.add_user("petr", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;
    let petr = profile(&node, tmp.path(), "petr").await?;
    // Over a transfer chunk, and not a round size.
    let bytes: Vec<u8> = (0..700_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = tmp.path().join("акт сверки.bin");
    std::fs::write(&path, &bytes)?;
    let path = path.to_str().context("utf-8 path")?;

    let out = run(&ivan, &["send", "petr", "Акт сверки", "--file", path]).await?;
    assert!(out.starts_with("sent "), "{out}");
    let history = run(&petr, &["history", "ivan"]).await?;
    let file_id = history
        .lines()
        .find_map(|l| l.strip_prefix("\t\t  [file "))
        .and_then(|l| l.split(' ').next())
        .with_context(|| format!("no file listed in {history}"))?
        .to_owned();
    assert!(history.contains("акт сверки.bin, 683.6 KB]"), "{history}");

    let into = tmp.path().join("downloads");
    std::fs::create_dir(&into)?;
    let into_s = into.to_str().context("utf-8 path")?;
    let out = run(&petr, &["download", &file_id, "-o", into_s]).await?;
    assert!(out.starts_with("downloaded акт сверки.bin to "), "{out}");
    assert!(
        std::fs::read(into.join("акт сверки.bin"))? == bytes,
        "the bytes differ"
    );
    // Not over an existing file, unless asked.
    let err = refused(&petr, &["download", &file_id, "-o", into_s]).await?;
    assert!(err.contains("exists already"), "{err}");

    // An interrupted download continues from what its .part holds, and is checked whole.
    let target = tmp.path().join("resumed.bin");
    std::fs::write(tmp.path().join("resumed.bin.part"), &bytes[..300_000])?;
    run(
        &petr,
        &[
            "download",
            &file_id,
            "-o",
            target.to_str().context("utf-8")?,
        ],
    )
    .await?;
    assert!(std::fs::read(&target)? == bytes, "the resumed bytes differ");
    assert!(!tmp.path().join("resumed.bin.part").exists());
    // A .part that does not hold the file's beginning is found out and discarded.
    let spoiled = tmp.path().join("spoiled.bin");
    std::fs::write(tmp.path().join("spoiled.bin.part"), vec![0u8; 1000])?;
    let err = refused(
        &petr,
        &[
            "download",
            &file_id,
            "-o",
            spoiled.to_str().context("utf-8")?,
        ],
    )
    .await?;
    assert!(err.contains("does not match its SHA-256"), "{err}");
    assert!(!spoiled.exists() && !tmp.path().join("spoiled.bin.part").exists());

    // Through the outbox: a file sent while the node is down goes out with the next command.
    let addr = node.quic_addr();
    node.stop().await;
    let err = refused(&ivan, &["send", "petr", "--file", path]).await?;
    assert!(err.starts_with("queued: "), "{err}");
    let outbox = run(&ivan, &["outbox"]).await?;
    assert!(
        outbox.contains("[file ") && outbox.contains("акт сверки.bin"),
        "{outbox}"
    );
    node.start_again_at_same_address(addr).await?;
    run(&ivan, &["discussions"]).await?;
    let history = run(&petr, &["history", "ivan", "--json"]).await?;
    let files: Vec<serde_json::Value> = json_lines(&history)?
        .into_iter()
        .filter_map(|e| e["change"]["message"]["files"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(files.len(), 2, "{history}");
    let sha = veche_client::sha256_of(bytes.as_slice()).await?.0;
    assert!(
        files.iter().all(|f| f["sha256"] == sha.as_str()),
        "{files:?}"
    );

    let err = refused(&petr, &["download", "f_0123"]).await?;
    assert!(err.contains("f_<32 hex digits>"), "{err}");
    Ok(())
}

#[tokio::test]
async fn search_finds_a_russian_word_in_another_form_with_filters() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    node.add_user("petr", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;
    let (petr, _) = login(&node, "petr", PASSWORD, "p").await?;
    let id = dialog(&petr, "ivan").await?;
    post(&petr, &id, "p1", "Счёт поставщику оплачен").await?;
    run(&ivan, &["send", "petr", "Где счета за декабрь?"]).await?;

    let out = eventually(15, "both messages are indexed", async || {
        let out = run(&ivan, &["search", "счёт"]).await?;
        anyhow::ensure!(out.lines().count() == 2, "{out}");
        Ok(out)
    })
    .await?;
    assert!(out.contains("\tpetr: *Счёт* поставщику оплачен"), "{out}");
    assert!(out.contains("\tivan: Где *счета* за декабрь"), "{out}");
    // Filters: by author (a login of this node), by discussion, as JSON.
    let out = run(&ivan, &["search", "счёт", "--from", "petr"]).await?;
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("petr: *Счёт*"), "{out}");
    let out = run(
        &ivan,
        &["search", "счёт", "декабрь", "--in", "petr", "--json"],
    )
    .await?;
    let hits = json_lines(&out)?;
    assert_eq!(hits.len(), 1, "{out}");
    assert_eq!(hits[0]["author"], "ivan@test.local");
    // A query typed on the English layout.
    let out = run(&ivan, &["search", "gjcnfdobre"]).await?;
    assert!(out.contains("поставщику"), "{out}");
    let err = refused(&ivan, &["search", "счёт", "--since", "вчера"]).await?;
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    Ok(())
}

#[tokio::test]
async fn whoami_sessions_and_logout() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let laptop = profile(&node, tmp.path(), "ivan").await?;
    let phone = tmp.path().join("phone");
    let pw = tmp.path().join("pw");
    veche(&[
        "login",
        "--server",
        &node.quic_addr().to_string(),
        "--ca",
        node.ca_path().to_str().context("utf-8")?,
        "--user",
        "ivan",
        "--password-file",
        pw.to_str().context("utf-8")?,
        "--device-name",
        "phone",
        "--profile",
        phone.to_str().context("utf-8")?,
    ])
    .await?;
    let phone = phone.to_str().context("utf-8")?.to_owned();

    let me = run(&laptop, &["whoami"]).await?;
    assert!(me.starts_with("ivan@test.local"), "{me}");
    let me = json_lines(&run(&laptop, &["whoami", "--json"]).await?)?;
    assert_eq!(me[0]["login"], "ivan");

    let sessions = json_lines(&run(&laptop, &["sessions", "--json"]).await?)?;
    assert_eq!(sessions.len(), 2);
    let phone_session = sessions
        .iter()
        .find(|s| s["device_name"] == "phone")
        .context("the phone's session")?;
    assert_eq!(phone_session["current"], false);
    let listed = run(&laptop, &["sessions"]).await?;
    assert_eq!(listed.matches("this profile").count(), 1, "{listed}");
    let phone_id = phone_session["id"].as_str().context("id")?;
    let out = run(&laptop, &["sessions", "--end", phone_id]).await?;
    assert_eq!(out, format!("ended session {phone_id}\n"));
    let err = refused(&phone, &["whoami"]).await?;
    assert!(
        err.contains("invalid_credentials") || err.contains("InvalidCredentials"),
        "{err}"
    );
    let err = refused(&laptop, &["sessions", "--end", "not-a-session"]).await?;
    assert!(err.contains("UUID"), "{err}");

    let people = run(&laptop, &["people", "ivan"]).await?;
    assert!(people.starts_with("ivan@test.local\t"), "{people}");

    // A new password, given on standard input as a script would; the old one stops working.
    let mut passwd = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .args(["passwd", "--profile", &laptop])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    tokio::io::AsyncWriteExt::write_all(
        passwd.stdin.as_mut().context("stdin")?,
        format!("{PASSWORD}\nновый пароль 2027\n").as_bytes(),
    )
    .await?;
    let done = within(60, "veche passwd", passwd.wait_with_output()).await??;
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    login(&node, "ivan", "новый пароль 2027", "check").await?;
    assert!(
        crate::support::connect(&node)
            .await?
            .login("ivan", PASSWORD, "x", "x")
            .await
            .is_err()
    );
    // This profile's own session stays.
    assert!(run(&laptop, &["whoami"]).await?.starts_with("ivan@"));

    assert_eq!(run(&laptop, &["logout"]).await?, "logged out\n");
    // The token is gone from the profile, and from the node.
    let err = refused(&laptop, &["whoami"]).await?;
    assert!(err.contains("not logged in"), "{err}");
    let veche_client::protocol::admin::AdminReply::Sessions { sessions } = node
        .admin(veche_client::protocol::admin::AdminRequest::Sessions {
            login: "ivan".into(),
        })
        .await?
    else {
        anyhow::bail!("expected sessions");
    };
    // Only the session the test opened to check the new password is left.
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].device_name, "check");
    // The phone's own session ended already: logging out there says so and still succeeds.
    assert_eq!(
        run(&phone, &["logout"]).await?,
        "logged out (the session had already ended)\n"
    );
    Ok(())
}

#[tokio::test]
async fn presence_and_notification_levels_are_set_from_the_command_line() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    node.add_user("petr", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;
    let (petr, _) = login(&node, "petr", PASSWORD, "p").await?;
    let id = dialog(&petr, "ivan").await?;

    assert_eq!(
        run(&ivan, &["status", "dnd", "в отпуске до 10-го"]).await?,
        "status: dnd (в отпуске до 10-го)\n"
    );
    // Seen by another user while ivan is connected.
    let (_ivan_conn, _) = login(&node, "ivan", PASSWORD, "i").await?;
    let Reply::Presence { users } = ask(
        &petr,
        Request::GetPresence {
            users: vec!["ivan".into()],
            subscribe: false,
        },
    )
    .await?
    else {
        anyhow::bail!("expected presence");
    };
    assert_eq!(users[0].state, PresenceState::Dnd);
    assert_eq!(users[0].status_text, "в отпуске до 10-го");
    assert_eq!(run(&ivan, &["status"]).await?, "dnd\tв отпуске до 10-го\n");
    let err = refused(&ivan, &["status", "busy"]).await?;
    assert!(err.contains("available, away, dnd or invisible"), "{err}");

    run(
        &ivan,
        &["notify", "petr", "none", "--mute-until", "2030-01-01"],
    )
    .await?;
    let Reply::NotificationSettings { settings } = ask(
        &login(&node, "ivan", PASSWORD, "i").await?.0,
        Request::Notifications,
    )
    .await?
    else {
        anyhow::bail!("expected settings");
    };
    assert_eq!(settings.len(), 1);
    assert_eq!(settings[0].discussion, id);
    assert_eq!(settings[0].level, NotificationLevel::Nothing);
    assert_eq!(
        settings[0].muted_until.map(|t| t.to_string()),
        Some("2030-01-01T00:00:00.000Z".to_owned())
    );
    let listed = run(&ivan, &["notify"]).await?;
    assert_eq!(
        listed,
        format!("{id}\tpetr@test.local\tnone\tmuted until 2030-01-01T00:00:00.000Z\n")
    );
    Ok(())
}

#[tokio::test]
async fn history_pages_past_what_the_node_returns_at_once() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    node.add_user("petr", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;
    let (petr, _) = login(&node, "petr", PASSWORD, "p").await?;
    let id = dialog(&petr, "ivan").await?;
    let mut last = 0;
    for i in 1..=620 {
        last = post(&petr, &id, &format!("m{i}"), &format!("сообщение {i}"))
            .await?
            .1;
    }
    let seqs = |out: &str| -> anyhow::Result<Vec<u64>> {
        json_lines(out)?
            .iter()
            .map(|e| e["seq"].as_u64().context("seq"))
            .collect()
    };

    // More than one page of the node's: the latest 600, oldest first, without a gap.
    let got = seqs(&run(&ivan, &["history", "petr", "--limit", "600", "--json"]).await?)?;
    assert_eq!(got, ((last - 599)..=last).collect::<Vec<_>>());
    // Before a sequence number.
    let got = seqs(
        &run(
            &ivan,
            &[
                "history", "petr", "--before", "100", "--limit", "10", "--json",
            ],
        )
        .await?,
    )?;
    assert_eq!(got, (90..100).collect::<Vec<_>>());
    let out = run(
        &ivan,
        &["history", "petr", "--before", "3", "--limit", "10"],
    )
    .await?;
    assert_eq!(out.lines().count(), 2, "{out}");
    // Everything, page by page.
    let got = seqs(&run(&ivan, &["history", "petr", "--all", "--json"]).await?)?;
    assert_eq!(got, (1..=last).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn login_sends_what_was_queued_while_the_session_was_ended() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    node.add_user("petr", PASSWORD, false).await?;
    let tmp = tempfile::tempdir()?;
    let ivan = profile(&node, tmp.path(), "ivan").await?;
    let (petr, _) = login(&node, "petr", PASSWORD, "p").await?;
    let id = dialog(&petr, "ivan").await?;

    // An administrator ends ivan's session: his send stays in the outbox.
    node.admin(veche_client::protocol::admin::AdminRequest::Revoke {
        login: "ivan".into(),
        session_id: None,
    })
    .await?;
    let err = refused(&ivan, &["send", "petr", "написано до входа"]).await?;
    assert!(err.contains("stays in the outbox"), "{err}");
    assert!(
        run(&ivan, &["outbox"])
            .await?
            .contains("pending\tpetr\tнаписано до входа")
    );

    // Logging in again sends it, with no other command.
    profile(&node, tmp.path(), "ivan").await?;
    let Reply::Events { events, .. } = ask(
        &petr,
        Request::History {
            discussion: id,
            before: None,
            limit: 10,
        },
    )
    .await?
    else {
        anyhow::bail!("expected events");
    };
    let texts: Vec<String> = events
        .into_iter()
        .filter_map(|e| match e.change {
            Change::MessagePosted { message } => message.text,
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["написано до входа"]);
    assert_eq!(run(&ivan, &["outbox"]).await?, "");
    Ok(())
}
