//! WASM plugins against a real node: the shipped plugins (invoice context, approval bot, file
//! store) and hostile ones (spinning, hoarding memory, panicking, reading files, built for a
//! future API), all built for wasm32-wasip2 by the test run.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use veche_client::Connection;
use veche_client::protocol::admin::{AdminReply, AdminRequest, PluginInfo};
use veche_client::protocol::discussions::{
    Change, DiscussionEvent, DiscussionInfo, Message, ObjectRef,
};
use veche_client::protocol::{ErrorCode, Reply, Request};
use veche_node::test_utils::{TestNode, test_config};

use crate::support::*;

fn config() -> veche_node::config::Config {
    let mut c = test_config();
    c.plugins.breaker_failures = 3;
    c.plugins.breaker_pause_ms = 60_000;
    c
}

async fn install(
    node: &TestNode,
    folder: &std::path::Path,
    grants: &[&str],
    config: &[(&str, &str)],
) -> anyhow::Result<PluginInfo> {
    let reply = node
        .admin(AdminRequest::PluginInstall {
            path: folder.display().to_string(),
            grants: grants.iter().map(|g| (*g).to_owned()).collect(),
            config: config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        })
        .await?;
    match reply {
        AdminReply::Plugin { plugin } => Ok(plugin),
        other => bail!("expected a plugin, got {other:?}"),
    }
}

async fn install_refused(node: &TestNode, name: &str, grants: &[&str]) -> anyhow::Result<String> {
    let folder = plugin_folder(name)?;
    match install(node, folder.path(), grants, &[]).await {
        Ok(p) => bail!("{name} was installed: {p:?}"),
        Err(e) => Ok(e.to_string()),
    }
}

async fn plugin(node: &TestNode, id: &str) -> anyhow::Result<PluginInfo> {
    match node.admin(AdminRequest::PluginList).await? {
        AdminReply::Plugins { plugins } => plugins
            .into_iter()
            .find(|p| p.id == id)
            .with_context(|| format!("{id} is not listed")),
        other => bail!("expected plugins, got {other:?}"),
    }
}

async fn event(
    node: &TestNode,
    kind: &str,
    object: Option<ObjectRef>,
    payload: &str,
    key: &str,
) -> anyhow::Result<bool> {
    match node
        .admin(AdminRequest::EventPost {
            source: "erp".into(),
            kind: kind.into(),
            object,
            payload: payload.into(),
            idempotency_key: key.into(),
        })
        .await?
    {
        AdminReply::EventPosted { fresh } => Ok(fresh),
        other => bail!("expected event_posted, got {other:?}"),
    }
}

/// Waits until a line matching `wanted` is in the plugin's log (written in the background).
async fn logged(
    node: &TestNode,
    id: &str,
    wanted: impl Fn(&veche_client::protocol::admin::PluginLogLine) -> bool,
) -> anyhow::Result<()> {
    eventually(10, "log line", async || {
        let request = AdminRequest::PluginLogs {
            id: id.into(),
            limit: 200,
        };
        let AdminReply::PluginLogs { lines } = node.admin(request).await? else {
            bail!("expected logs")
        };
        if !lines.iter().any(&wanted) {
            bail!("not logged yet: {lines:?}");
        }
        Ok(())
    })
    .await
}

async fn paused(node: &TestNode) -> anyhow::Result<PluginInfo> {
    eventually(30, "paused", async || {
        let info = plugin(node, "hostile").await?;
        if !info.status.starts_with("paused") {
            bail!("{info:?}");
        }
        Ok(info)
    })
    .await
}

fn invoice(id: &str) -> ObjectRef {
    ObjectRef {
        application: "erp".into(),
        object_type: "invoice".into(),
        object_id: id.into(),
    }
}

const INVOICE: &str = r#"{"number":"ПТУ-000123","counterparty":"ООО Ромашка","amount":"1 250,00","currency":"RUB",
    "readers":["anna@test.local"],"writers":["boris@test.local"]}"#;

/// Retries `f` until it succeeds (bots work asynchronously) or `secs` pass.
async fn messages(conn: &Connection, discussion: &str) -> anyhow::Result<Vec<Message>> {
    match ask(
        conn,
        Request::History {
            discussion: discussion.into(),
            before: None,
            limit: 500,
        },
    )
    .await?
    {
        Reply::Events { events, .. } => Ok(events
            .into_iter()
            .filter_map(|e: DiscussionEvent| match e.change {
                Change::MessagePosted { message } => Some(*message),
                _ => None,
            })
            .collect()),
        other => bail!("expected events, got {other:?}"),
    }
}

fn server_code(e: &anyhow::Error) -> Option<ErrorCode> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<veche_client::RequestError>() {
            Some(veche_client::RequestError::Server(body)) => Some(body.code),
            _ => None,
        })
}

#[tokio::test]
async fn invoice_context_decides_who_sees_an_invoice_and_how_it_is_shown() -> anyhow::Result<()> {
    let _log = subscribe();
    // Answers stay cached far longer than the test runs: only dropping the cache changes them.
    let mut c = config();
    c.plugins.authorize_cache_ms = 600_000;
    let node = TestNode::spawn_with(c).await?;
    let boris = user(&node, "boris").await?;
    let anna = user(&node, "anna").await?;
    let eve = user(&node, "eve").await?;
    let folder = plugin_folder("invoice-context")?;

    // The plugin asks for its key-value store: refused until granted, naming the right.
    let refused = install(&node, folder.path(), &[], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("kv"), "{refused}");
    let info = install(&node, folder.path(), &["kv"], &[]).await?;
    assert_eq!(info.status, "active");

    // Unknown invoices do not exist for the provider.
    let open = Request::OpenObject {
        object: invoice("INV-1"),
        title: String::new(),
    };
    let err = ask(&boris, open.clone()).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::BadRequest), "{err:#}");
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");

    // The ERP posts the invoice; the plugin learns it through its bot role.
    assert!(
        event(
            &node,
            "invoice.posted",
            Some(invoice("INV-1")),
            INVOICE,
            "e1"
        )
        .await?
    );
    assert!(
        !event(
            &node,
            "invoice.posted",
            Some(invoice("INV-1")),
            INVOICE,
            "e1"
        )
        .await?,
        "idempotent"
    );
    let d = eventually(10, "invoice known", async || {
        discussion(&boris, open.clone()).await
    })
    .await?;
    assert_eq!(d.title, "Invoice ПТУ-000123", "rendered by the plugin");
    post(&boris, &d.id, "b1", "Оплату подтверждаю").await?;

    // The card shows number, counterparty and amount, to those who may read the invoice.
    let describe = Request::DescribeObject {
        object: invoice("INV-1"),
    };
    let Reply::Object { card } = ask(&anna, describe.clone()).await? else {
        bail!("expected a card")
    };
    assert_eq!(card.title, "Invoice ПТУ-000123");
    assert_eq!(card.subtitle.as_deref(), Some("ООО Ромашка"));
    assert!(
        card.fields
            .contains(&("Amount".to_owned(), "1 250,00 RUB".to_owned())),
        "{card:?}"
    );
    let err = ask(&eve, describe).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::NotFound), "{err:#}");

    // Anna may read but not post; Eve may not even see it.
    let seen = discussion(
        &anna,
        Request::GetDiscussion {
            discussion: d.id.clone(),
        },
    )
    .await?;
    assert_eq!(seen.id, d.id);
    assert_eq!(messages(&anna, &d.id).await?.len(), 1);
    let err = post(&anna, &d.id, "a1", "я тоже").await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::Forbidden), "{err:#}");
    let err = ask(
        &eve,
        Request::GetDiscussion {
            discussion: d.id.clone(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::NotFound), "{err:#}");
    let err = ask(&eve, open.clone()).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::NotFound), "{err:#}");

    // Live events reach the followers the provider admits.
    ask(
        &anna,
        Request::Follow {
            discussion: d.id.clone(),
            follow: true,
        },
    )
    .await?;
    let err = ask(
        &eve,
        Request::Follow {
            discussion: d.id.clone(),
            follow: true,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::NotFound), "{err:#}");
    post(&boris, &d.id, "b2", "Счёт оплачен").await?;
    let live = event_matching(&anna, |e| e.discussion == d.id).await?;
    assert!(
        matches!(&live.change, Change::MessagePosted { message } if message.text.as_deref() == Some("Счёт оплачен")),
        "{live:?}"
    );
    no_event(&eve).await?;

    // Disabling the provider fails closed: nobody reads the invoice's discussion.
    node.admin(AdminRequest::PluginDisable {
        id: "invoice-context".into(),
    })
    .await?;
    let err = ask(
        &boris,
        Request::GetDiscussion {
            discussion: d.id.clone(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::NotFound), "{err:#}");
    node.admin(AdminRequest::PluginEnable {
        id: "invoice-context".into(),
    })
    .await?;
    discussion(
        &boris,
        Request::GetDiscussion {
            discussion: d.id.clone(),
        },
    )
    .await?;

    // The ERP takes Anna off the invoice. Her answer is cached for ten minutes in this
    // test, but once the provider has handled the event, the node forgets its answers about
    // that invoice, and she is refused.
    let get = Request::GetDiscussion {
        discussion: d.id.clone(),
    };
    discussion(&anna, get.clone()).await?;
    let updated = INVOICE.replace(r#""readers":["anna@test.local"]"#, r#""readers":[]"#);
    assert_ne!(updated, INVOICE);
    event(
        &node,
        "invoice.updated",
        Some(invoice("INV-1")),
        &updated,
        "e2",
    )
    .await?;
    eventually(10, "anna refused", async || {
        match ask(&anna, get.clone()).await {
            Err(e) if server_code(&e) == Some(ErrorCode::NotFound) => Ok(()),
            other => bail!("still admitted: {other:?}"),
        }
    })
    .await?;
    // A reload keeps the provider's state: Boris still reads the invoice's discussion.
    node.admin(AdminRequest::PluginReload {
        id: "invoice-context".into(),
    })
    .await?;
    discussion(&boris, get.clone()).await?;
    Ok(())
}

#[tokio::test]
async fn approval_bot_asks_and_records_who_decided() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let boris = user(&node, "boris").await?;
    let anna = user(&node, "anna").await?;
    let vera = user(&node, "vera").await?;
    let ctx = plugin_folder("invoice-context")?;
    install(&node, ctx.path(), &["kv"], &[]).await?;
    let bot = plugin_folder("approval-bot")?;
    let info = install(&node, bot.path(), &["kv"], &[]).await?;
    assert_eq!(info.bot_user.as_deref(), Some("approval-bot@test.local"));

    let mut payload: serde_json::Value = serde_json::from_str(INVOICE)?;
    payload["readers"] =
        serde_json::json!(["anna@test.local", "boris@test.local", "vera@test.local"]);
    payload["writers"] = serde_json::json!(["anna@test.local", "boris@test.local"]);
    event(
        &node,
        "invoice.posted",
        Some(invoice("INV-7")),
        &payload.to_string(),
        "e7",
    )
    .await?;

    let open = Request::OpenObject {
        object: invoice("INV-7"),
        title: String::new(),
    };
    let (d, request) = eventually(10, "approval request", async || {
        let d = discussion(&boris, open.clone()).await?;
        let m = messages(&boris, &d.id).await?;
        let first = m.into_iter().next().context("no message yet")?;
        Ok((d, first))
    })
    .await?;
    assert_eq!(request.author, "approval-bot@test.local");
    assert_eq!(
        request.text.as_deref(),
        Some("Invoice ПТУ-000123 from ООО Ромашка for 1 250,00 RUB awaits approval.")
    );
    let buttons: Vec<&str> = request.actions.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(buttons, ["approve", "reject"]);

    let click = |action: &str| Request::Click {
        discussion: d.id.clone(),
        message_id: request.id.clone(),
        action_id: action.into(),
    };
    ask(&boris, click("approve")).await?;
    // Vera may read the invoice but not act on it: her click is refused.
    let err = ask(&vera, click("approve")).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::Forbidden), "{err:#}");
    ask(&anna, click("reject")).await?;
    let replies = eventually(10, "two answers", async || {
        let m: Vec<Message> = messages(&boris, &d.id).await?.into_iter().skip(1).collect();
        if m.len() < 2 {
            bail!("{} answers so far", m.len());
        }
        Ok(m)
    })
    .await?;
    let texts: Vec<&str> = replies.iter().filter_map(|m| m.text.as_deref()).collect();
    assert_eq!(
        texts,
        [
            "Approved by boris@test.local.",
            "Already decided: Approved by boris@test.local."
        ]
    );
    assert!(
        replies
            .iter()
            .all(|m| m.reply_to.as_deref() == Some(request.id.as_str()))
    );

    // Its log shows the decision; nothing is dead.
    logged(&node, "approval-bot", |l| {
        l.message.contains("boris@test.local decided")
    })
    .await?;
    assert_eq!(plugin(&node, "approval-bot").await?.dead_letters, 0);
    Ok(())
}

#[tokio::test]
async fn a_spinning_plugin_is_stopped_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let boris = user(&node, "boris").await?;
    let anna = user(&node, "anna").await?;
    let folder = plugin_folder("hostile")?;
    install(&node, folder.path(), &[], &[("mode", "loop")]).await?;

    let group = discussion(
        &boris,
        Request::CreateGroup {
            title: "ops".into(),
            members: vec!["anna".into()],
        },
    )
    .await?;
    let object = ObjectRef {
        application: "erp".into(),
        object_type: "hostile".into(),
        object_id: "x".into(),
    };
    let open = Request::OpenObject {
        object,
        title: "spin".into(),
    };
    // The authorize call spins; its CPU budget (50 ms) stops it and access is denied.
    let spinning = {
        let boris = &boris;
        let open = open.clone();
        async move { ask(boris, open).await }
    };
    let chatting = async {
        for i in 0..20 {
            post(&anna, &group.id, &format!("a{i}"), "still here").await?;
        }
        anyhow::Ok(())
    };
    let (spun, chatted) = tokio::join!(spinning, chatting);
    chatted?;
    let err = spun.unwrap_err();
    assert_eq!(
        server_code(&err),
        Some(ErrorCode::NotFound),
        "fails closed: {err:#}"
    );
    assert_eq!(messages(&boris, &group.id).await?.len(), 20);

    // Three such failures pause it; the administrator sees why: its CPU budget stopped it
    // (not the call's timeout).
    for _ in 0..2 {
        ask(&boris, open.clone()).await.unwrap_err();
    }
    let info = plugin(&node, "hostile").await?;
    assert!(info.status.starts_with("paused"), "{info:?}");
    assert!(info.status.contains("CPU"), "{info:?}");
    // Its author sees the same in the plugin's log, not only in the node's: each failed call
    // and the pause, written by the node.
    let by_node = |l: &veche_client::protocol::admin::PluginLogLine| {
        l.level == "error" && l.fields.get("by").is_some_and(|b| b == "node")
    };
    logged(&node, "hostile", |l| {
        by_node(l)
            && l.message.starts_with("authorize failed")
            && l.message.contains("CPU time (50 ms)")
    })
    .await?;
    logged(&node, "hostile", |l| {
        by_node(l) && l.message.starts_with("paused for") && l.message.contains("CPU")
    })
    .await?;
    // While paused, calls are refused at once, without calling the plugin (still failing
    // closed).
    let calls = node.plugin_calls_started("hostile");
    ask(&boris, open.clone()).await.unwrap_err();
    assert_eq!(node.plugin_calls_started("hostile"), calls);
    Ok(())
}

/// Waits until the epoch ticker sleeps (no plugin call in flight); its ticks so far.
async fn ticker_asleep(node: &TestNode) -> anyhow::Result<u64> {
    eventually(10, "the epoch ticker asleep", async || {
        match node.plugin_epoch_ticker() {
            (ticks, true) => Ok(ticks),
            (ticks, false) => bail!("still ticking at {ticks}"),
        }
    })
    .await
}

/// Issue 28: the epoch ticker costs nothing while no plugin call runs, and still stops a
/// spinning plugin at its CPU limit.
#[tokio::test]
async fn the_epoch_ticker_ticks_only_while_a_plugin_call_runs() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let boris = user(&node, "boris").await?;
    let anna = user(&node, "anna").await?;
    let folder = plugin_folder("hostile")?;
    install(&node, folder.path(), &[], &[("mode", "loop")]).await?;
    let group = discussion(
        &boris,
        Request::CreateGroup {
            title: "ops".into(),
            members: vec!["anna".into()],
        },
    )
    .await?;

    // Work that calls no plugin leaves the ticker asleep: not one tick.
    let idle = ticker_asleep(&node).await?;
    for i in 0..10 {
        post(&anna, &group.id, &format!("a{i}"), "no plugin here").await?;
    }
    assert_eq!(messages(&boris, &group.id).await?.len(), 10);
    assert_eq!(node.plugin_epoch_ticker(), (idle, true));

    // A spinning authorize call wakes it; it ticks until the plugin's CPU budget (50 ticks)
    // stops the call, then sleeps again.
    let open = Request::OpenObject {
        object: ObjectRef {
            application: "erp".into(),
            object_type: "hostile".into(),
            object_id: "x".into(),
        },
        title: "spin".into(),
    };
    let err = ask(&boris, open).await.unwrap_err();
    assert_eq!(server_code(&err), Some(ErrorCode::NotFound), "{err:#}");
    let after = ticker_asleep(&node).await?;
    assert!(after >= idle + 50, "{idle} -> {after} ticks");
    Ok(())
}

#[tokio::test]
async fn memory_hoarding_and_panics_are_contained_and_parked() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut config = config();
    config.metrics.enabled = true;
    config.metrics.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let node = TestNode::spawn_with(config).await?;
    let folder = plugin_folder("hostile")?;

    install(&node, folder.path(), &[], &[("mode", "alloc")]).await?;
    event(&node, "hostile.poke", None, "{}", "p1").await?;
    // Each attempt hits the 16 MiB cap; after three the breaker pauses the plugin.
    let info = paused(&node).await?;
    assert!(info.status.contains("memory"), "{info:?}");
    logged(&node, "hostile", |l| {
        l.level == "error"
            && l.message.starts_with("on-event failed")
            && l.message.contains("memory")
    })
    .await?;
    // The metrics saw the same: three calls over their limit, then one pause.
    let samples = crate::metrics::scrape(&node.metrics_url().context("no metrics")?).await?;
    let hostile = [("plugin", "hostile")];
    assert_eq!(samples.get("veche_plugin_traps_total", &hostile), 3.0);
    assert_eq!(samples.get("veche_plugin_pauses_total", &hostile), 1.0);
    assert!(samples.get("veche_plugin_calls_total", &hostile) >= 3.0);

    // Upgraded to a panicking configuration (a new version starts with a closed breaker): the
    // event keeps failing, is parked as a dead letter, and the panics pause the plugin.
    install(&node, folder.path(), &[], &[("mode", "panic")]).await?;
    let dead = eventually(30, "dead letter", async || {
        match node
            .admin(AdminRequest::PluginDeadLetters {
                id: "hostile".into(),
            })
            .await?
        {
            AdminReply::DeadLetters { items } if !items.is_empty() => Ok(items),
            _ => bail!("no dead letter yet"),
        }
    })
    .await?;
    assert!(dead[0].error.contains("panicked"), "{dead:?}");
    for i in 0..3 {
        event(&node, "hostile.poke", None, "{}", &format!("q{i}")).await?;
    }
    let info = paused(&node).await?;
    assert!(info.status.contains("panicked"), "{info:?}");
    logged(&node, "hostile", |l| {
        l.level == "stderr" && l.message.contains("on purpose")
    })
    .await?;

    // Fixed (behaving again): replayed items are handled and the dead letters are gone.
    install(&node, folder.path(), &[], &[("mode", "ok")]).await?;
    node.admin(AdminRequest::PluginReplay {
        id: "hostile".into(),
        item: None,
    })
    .await?;
    eventually(20, "inbox drained", async || {
        let info = plugin(&node, "hostile").await?;
        if info.dead_letters > 0 {
            bail!("{info:?}");
        }
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn ungranted_imports_and_future_apis_are_refused_at_install() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let e = install_refused(&node, "sneaky-fs", &[]).await?;
    assert!(e.contains("wasi:filesystem"), "{e}");
    let e = install_refused(&node, "future-api", &[]).await?;
    assert!(e.contains("veche:plugin") && e.contains("@1.0.0"), "{e}");
    assert!(e.contains("0.1"), "names what the node implements: {e}");
    // A storage backend may not be granted a folder it did not ask for, nor a bogus right.
    let e = install_refused(&node, "echo-bot", &["sockets"]).await?;
    assert!(e.contains("sockets"), "{e}");
    // A bot never takes over a person's account.
    node.add_user("echo-bot", PASSWORD, false).await?;
    let e = install_refused(&node, "echo-bot", &[]).await?;
    assert!(e.contains("taken"), "{e}");
    match node.admin(AdminRequest::PluginList).await? {
        AdminReply::Plugins { plugins } => assert!(plugins.is_empty(), "{plugins:?}"),
        other => bail!("{other:?}"),
    }
    Ok(())
}

/// A node that watches plugin folders (dev mode), the echo bot installed from a folder of its
/// own, and boris in a group with the bot.
async fn dev_node_with_echo_group()
-> anyhow::Result<(TestNode, Connection, tempfile::TempDir, DiscussionInfo)> {
    let mut c = config();
    c.plugins.dev_watch = true;
    let node = TestNode::spawn_with(c).await?;
    let boris = user(&node, "boris").await?;
    let folder = plugin_folder("echo-bot")?;
    install(&node, folder.path(), &[], &[]).await?;
    let group = discussion(
        &boris,
        Request::CreateGroup {
            title: "echo".into(),
            members: vec!["echo-bot".into()],
        },
    )
    .await?;
    Ok((node, boris, folder, group))
}

#[tokio::test]
async fn dev_mode_reload_swaps_versions_without_losing_a_bot_event() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, boris, folder, group) = dev_node_with_echo_group().await?;

    const N: usize = 30;
    for i in 0..N {
        post(&boris, &group.id, &format!("m{i}"), &format!("n{i}")).await?;
        if i == N / 2 {
            // A new build lands in the watched folder.
            let manifest = std::fs::read_to_string(folder.path().join("plugin.toml"))?
                .replace("version = \"1.0.0\"", "version = \"2.0.0\"")
                .replace("label = \"v1\"", "label = \"v2\"");
            std::fs::write(folder.path().join("plugin.toml"), manifest)?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let echoes = eventually(20, "all echoes", async || {
        let m = messages(&boris, &group.id).await?;
        let echoes: Vec<String> = m
            .into_iter()
            .filter(|m| m.author == "echo-bot@test.local")
            .filter_map(|m| m.text)
            .collect();
        if echoes.len() < N {
            bail!("{} echoes", echoes.len());
        }
        Ok(echoes)
    })
    .await?;
    assert_eq!(
        echoes.len(),
        N,
        "each message echoed exactly once: {echoes:?}"
    );
    for i in 0..N {
        let n = echoes
            .iter()
            .filter(|e| e.ends_with(&format!(": n{i}")))
            .count();
        assert_eq!(n, 1, "message {i}: {echoes:?}");
    }
    assert!(
        echoes.first().is_some_and(|e| e.starts_with("v1:")),
        "{echoes:?}"
    );
    assert!(
        echoes.last().is_some_and(|e| e.starts_with("v2:")),
        "{echoes:?}"
    );
    assert_eq!(plugin(&node, "echo-bot").await?.version, "2.0.0");
    Ok(())
}

#[tokio::test]
async fn fs_store_keeps_blobs_compressed_and_survives_a_restart() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut node = TestNode::spawn_with(config()).await?;
    let folder = plugin_folder("fs-store")?;
    let e = install(&node, folder.path(), &[], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("filesystem"), "{e}");
    install(&node, folder.path(), &["filesystem"], &[]).await?;

    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        node.blob_put("fs-store", "files/a", &big)
            .await
            .map_err(anyhow::Error::msg)?,
        3_000_000
    );
    node.blob_put("fs-store", "files/b", b"small")
        .await
        .map_err(anyhow::Error::msg)?;
    node.blob_put("fs-store", "other/c", b"x")
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        node.blob_list("fs-store", "files/")
            .await
            .map_err(anyhow::Error::msg)?,
        [("files/a".to_owned(), 3_000_000), ("files/b".to_owned(), 5)]
    );
    // Compressed on disk, in the plugin's own folder.
    let dir = node
        .data_dir()
        .join("plugins")
        .join("data")
        .join("fs-store");
    let on_disk: u64 = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(on_disk < 1_000_000, "{on_disk} bytes on disk");

    // After a restart the compiled component comes from the cache and the blobs are there.
    let cache = node.data_dir().join("plugins").join("cache");
    let artifacts = || -> anyhow::Result<Vec<(std::path::PathBuf, std::time::SystemTime)>> {
        let mut v: Vec<_> = std::fs::read_dir(&cache)?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
            .collect();
        v.sort();
        Ok(v)
    };
    let before = artifacts()?;
    assert_eq!(before.len(), 1, "{before:?}");
    node.restart().await?;
    assert_eq!(artifacts()?, before, "not recompiled");
    assert_eq!(
        node.blob_get("fs-store", "files/a")
            .await
            .map_err(anyhow::Error::msg)?,
        big
    );
    assert_eq!(
        node.blob_size("fs-store", "files/b")
            .await
            .map_err(anyhow::Error::msg)?,
        Some(5)
    );
    assert!(
        node.blob_delete("fs-store", "files/a")
            .await
            .map_err(anyhow::Error::msg)?
    );
    assert_eq!(
        node.blob_size("fs-store", "files/a")
            .await
            .map_err(anyhow::Error::msg)?,
        None
    );
    assert!(node.blob_get("fs-store", "files/a").await.is_err());
    Ok(())
}

#[tokio::test]
async fn the_plugin_commands_work_from_the_shell() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let folder = plugin_folder("approval-bot")?;
    let data = node.data_dir().display().to_string();
    let out = veche(&[
        "plugin",
        "--data",
        &data,
        "install",
        &folder.path().display().to_string(),
        "--grant",
        "kv",
    ])
    .await?;
    assert!(out.starts_with("approval-bot\t0.1.0\tactive"), "{out}");
    let out = veche(&["plugin", "--data", &data, "disable", "approval-bot"]).await?;
    assert!(out.contains("disabled"), "{out}");
    let out = veche(&["plugin", "--data", &data, "list"]).await?;
    assert!(
        out.contains("approval-bot") && out.contains("disabled"),
        "{out}"
    );
    let out = veche(&["plugin", "--data", &data, "enable", "approval-bot"]).await?;
    assert!(out.contains("active"), "{out}");
    let out = veche(&["plugin", "--data", &data, "reload", "approval-bot"]).await?;
    assert!(out.contains("active"), "{out}");
    let out = veche(&["plugin", "--data", &data, "dead-letters", "approval-bot"]).await?;
    assert_eq!(out, "no dead letters\n");
    let out = veche(&[
        "admin",
        "--data",
        &data,
        "event",
        "--source",
        "erp",
        "--kind",
        "invoice.posted",
        "--object",
        "erp/invoice/INV-9",
        "--payload",
        "{\"number\":\"9\"}",
        "--key",
        "k9",
    ])
    .await?;
    assert_eq!(out, "event posted\n");
    let out = veche(&["plugin", "--data", &data, "logs", "approval-bot"]).await?;
    assert!(!out.contains("error"), "{out}");
    Ok(())
}

/// Plugin authors issue: a slow context provider delays only the commands that need its
/// answer, never the node's writer. Without timing: the provider is parked on a gate the test
/// holds, another user's send completes meanwhile, and the parked command completes once the
/// gate opens.
#[tokio::test]
async fn a_parked_context_provider_stalls_no_one_else() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let boris = user(&node, "boris").await?;
    let anna = user(&node, "anna").await?;
    let folder = plugin_folder("gated-context")?;
    install(&node, folder.path(), &["kv"], &[]).await?;
    let group = discussion(
        &anna,
        Request::CreateGroup {
            title: "ops".into(),
            members: vec!["boris".into()],
        },
    )
    .await?;
    let open = Request::OpenObject {
        object: ObjectRef {
            application: "erp".into(),
            object_type: "gated".into(),
            object_id: "G-1".into(),
        },
        title: "Заказ G-1".into(),
    };
    let opening = ask(&boris, open.clone());
    let meanwhile = async {
        eventually(30, "the provider is asked", async || {
            anyhow::ensure!(node.plugin_calls_in_flight("gated-context") == 1);
            Ok(())
        })
        .await?;
        // The provider's call may take 10 s; the send must not wait for it.
        within(8, "a send while the provider waits", async {
            post(&anna, &group.id, "a1", "не ждёт провайдера").await
        })
        .await??;
        anyhow::ensure!(
            node.plugin_calls_in_flight("gated-context") == 1,
            "the provider stopped waiting before the send completed"
        );
        within(
            8,
            "opening the gate",
            node.plugin_kv_set("gated-context", "gate", b"1"),
        )
        .await??;
        anyhow::Ok(())
    };
    let (opened, meanwhile) = tokio::join!(opening, meanwhile);
    meanwhile?;
    let Reply::Discussion { discussion } = opened? else {
        bail!("expected the object discussion")
    };
    assert_eq!(discussion.title, "Заказ G-1");
    // The gate open, the discussion works as any other.
    post(&boris, &discussion.id, "b1", "по заказу").await?;
    assert_eq!(messages(&boris, &discussion.id).await?.len(), 1);
    Ok(())
}

/// Installs the gated-context provider with its gate open; Boris, a user.
async fn open_gate(node: &TestNode) -> anyhow::Result<Connection> {
    let boris = user(node, "boris").await?;
    let folder = plugin_folder("gated-context")?;
    install(node, folder.path(), &["kv"], &[]).await?;
    node.plugin_kv_set("gated-context", "gate", b"1").await?;
    Ok(boris)
}

/// Opening the discussion of gated object `id`.
fn gated_object(id: &str) -> Request {
    Request::OpenObject {
        object: ObjectRef {
            application: "erp".into(),
            object_type: "gated".into(),
            object_id: id.into(),
        },
        title: format!("Заказ {id}"),
    }
}

/// Plugin authors issue: what a plugin logs in `init` reaches `veche plugin logs` also when
/// `init` succeeds (it used to be dropped with the instance's first call).
#[tokio::test]
async fn what_init_logs_reaches_the_plugin_log() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let boris = open_gate(&node).await?;
    let Reply::Discussion { .. } = ask(&boris, gated_object("G-2")).await? else {
        bail!("expected the object discussion")
    };
    logged(&node, "gated-context", |l| {
        l.message.contains("gated-context ready")
    })
    .await
}

/// Plugin authors issue: a context provider that tries to write while answering is refused
/// (it may be asked at any time, and its answers are cached), and the refusal is in its log,
/// not only in its failed answer, which reads to users as "not found".
#[tokio::test]
async fn a_provider_writing_while_answering_learns_why_in_its_log() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let boris = open_gate(&node).await?;
    match ask(&boris, gated_object("W-1")).await {
        Err(e) if server_code(&e) == Some(ErrorCode::NotFound) => {}
        other => bail!("expected not found, got {other:?}"),
    }
    logged(&node, "gated-context", |l| {
        l.level == "warn" && l.message.contains("kv.set refused")
    })
    .await
}

/// Plugin authors issue: compiled artifacts of old versions do not pile up in the cache; it
/// keeps each plugin's current version and the one before.
#[tokio::test]
async fn only_the_current_and_previous_compiled_versions_are_kept() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let folder = plugin_folder("echo-bot")?;
    let wasm = folder.path().join("echo_bot.wasm");
    let original = std::fs::read(&wasm)?;
    let cache = node.data_dir().join("plugins").join("cache");
    let artifacts = || -> anyhow::Result<usize> {
        let mut n = 0;
        for entry in std::fs::read_dir(&cache)? {
            n += usize::from(entry?.path().extension().is_some_and(|x| x == "cwasm"));
        }
        Ok(n)
    };
    for version in 0..4u8 {
        // Each version ends in a custom section of its own (id 0, 3 bytes: the name "v" and
        // the version), which a component may carry: a new hash, a new artifact.
        let mut bytes = original.clone();
        bytes.extend_from_slice(&[0, 3, 1, b'v', version]);
        std::fs::write(&wasm, &bytes)?;
        install(&node, folder.path(), &[], &[]).await?;
        assert_eq!(
            artifacts()?,
            usize::from(version.min(1)) + 1,
            "after version {version}"
        );
    }
    Ok(())
}

/// Plugin authors issue: the administrator caps what a plugin may ask for; `plugin install`
/// refuses more, naming the limit and the cap, and shows the limits a plugin runs under.
#[tokio::test]
async fn plugin_limits_are_capped_by_the_node() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut c = config();
    c.plugins.max_call_timeout_ms = 5000;
    c.plugins.max_cpu_ms = 1000;
    let node = TestNode::spawn_with(c).await?;
    let refused = install_refused(&node, "gated-context", &["kv"]).await?;
    assert!(
        refused
            .contains("limits.call-timeout-ms = 10000 (cap: [plugins] max_call_timeout_ms = 5000)")
            && refused.contains("limits.cpu-ms = 2000 (cap: [plugins] max_cpu_ms = 1000)"),
        "{refused}"
    );
    let folder = plugin_folder("hostile")?;
    let info = install(&node, folder.path(), &[], &[]).await?;
    let limits = info.limits.context("limits shown")?;
    assert_eq!(
        (limits.cpu_ms, limits.call_timeout_ms, limits.memory_mib),
        (50, 1000, 16)
    );
    Ok(())
}

/// Plugin authors issue: `plugin install --set KEY=VALUE` configures the plugin (it panicked:
/// clap took `--set`'s field for the global `--config`).
#[tokio::test]
async fn plugin_install_takes_settings_from_the_shell() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let folder = plugin_folder("hostile")?;
    let data = node.data_dir().display().to_string();
    let out = veche(&[
        "plugin",
        "--data",
        &data,
        "install",
        &folder.path().display().to_string(),
        "--set",
        "mode=loop",
    ])
    .await?;
    assert!(out.starts_with("hostile\t0.1.0\tactive"), "{out}");
    assert!(
        out.contains("limits cpu 50 ms, call 1000 ms, memory 16 MiB"),
        "{out}"
    );
    // The setting took: the provider spins and access is denied.
    assert_eq!(
        node.object_access("erp", "hostile", "x", "anyone@test.local")
            .await,
        Some("none")
    );
    let refused = veche(&[
        "plugin",
        "--data",
        &data,
        "install",
        &folder.path().display().to_string(),
        "--set",
        "=x",
    ])
    .await
    .unwrap_err();
    assert!(format!("{refused:#}").contains("KEY=VALUE"), "{refused:#}");
    Ok(())
}

/// Plugin authors issue: a broken build landing in a watched folder is refused, the previous
/// version keeps serving, and the author sees why in `plugin list` and `plugin logs` (it was
/// only in the node's log); the next good build clears it.
#[tokio::test]
async fn a_rejected_dev_reload_shows_in_the_plugin_status_and_log() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, boris, folder, group) = dev_node_with_echo_group().await?;
    let wasm = folder.path().join("echo_bot.wasm");
    let good = std::fs::read(&wasm)?;
    std::fs::write(&wasm, b"\0asm but not a component")?;
    let info = eventually(20, "reload refused", async || {
        let info = plugin(&node, "echo-bot").await?;
        if !info.status.starts_with("active (reload failed: ") {
            bail!("{info:?}");
        }
        Ok(info)
    })
    .await?;
    assert_eq!(info.version, "1.0.0");
    logged(&node, "echo-bot", |l| {
        l.level == "error"
            && l.message.starts_with("reload from ")
            && l.message.contains("version 1.0.0 keeps running")
    })
    .await?;
    let data = node.data_dir().display().to_string();
    let out = veche(&["plugin", "--data", &data, "list"]).await?;
    assert!(out.contains("\tactive (reload failed: "), "{out}");

    // The previous version still answers.
    post(&boris, &group.id, "m1", "still there").await?;
    eventually(20, "echo", async || {
        let m = messages(&boris, &group.id).await?;
        if !m
            .iter()
            .any(|m| m.text.as_deref() == Some("v1: still there"))
        {
            bail!("{m:?}");
        }
        Ok(())
    })
    .await?;

    // A good build again (a new custom section: a new hash) clears the status.
    let mut fixed = good;
    fixed.extend_from_slice(&[0, 3, 1, b'v', 2]);
    std::fs::write(&wasm, &fixed)?;
    eventually(20, "reloaded", async || {
        let info = plugin(&node, "echo-bot").await?;
        if info.status != "active" {
            bail!("{info:?}");
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// Plugin authors issue: `plugin uninstall` takes a plugin out and keeps what it stored
/// (key-value entries, its folder, its log) for a reinstall; `--purge` removes that too. Its
/// bot user's messages stay as history, and a storage backend holding files stays installed.
#[tokio::test]
async fn uninstall_keeps_what_a_plugin_stored_unless_purged() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(config()).await?;
    let data = node.data_dir().display().to_string();
    let boris = user(&node, "boris").await?;
    let echo = plugin_folder("echo-bot")?;
    install(&node, echo.path(), &[], &[]).await?;
    let group = discussion(
        &boris,
        Request::CreateGroup {
            title: "echo".into(),
            members: vec!["echo-bot".into()],
        },
    )
    .await?;
    let echoed = async |text: &str| {
        let wanted = format!("v1: {text}");
        eventually(20, "echo", async || {
            let m = messages(&boris, &group.id).await?;
            m.into_iter()
                .find(|m| m.text.as_deref() == Some(wanted.as_str()))
                .with_context(|| format!("no {wanted:?} yet"))
        })
        .await
    };
    post(&boris, &group.id, "m0", "hello").await?;
    let first = echoed("hello").await?;
    assert_eq!(first.author, "echo-bot@test.local");
    node.plugin_kv_set("echo-bot", "seen", b"1").await?;

    let out = veche(&["plugin", "--data", &data, "uninstall", "echo-bot"]).await?;
    assert!(out.starts_with("uninstalled echo-bot\n"), "{out}");
    assert!(
        out.contains("kept for a reinstall: 1 key-value entries"),
        "{out}"
    );
    assert!(
        out.contains("kept: the bot user echo-bot@test.local and its messages"),
        "{out}"
    );
    match node.admin(AdminRequest::PluginList).await? {
        AdminReply::Plugins { plugins } => assert!(plugins.is_empty(), "{plugins:?}"),
        other => bail!("{other:?}"),
    }
    let installed = node.data_dir().join("plugins").join("installed");
    assert!(!installed.join("echo-bot").exists());
    // The bot's messages are history.
    let history = messages(&boris, &group.id).await?;
    assert!(history.iter().any(|m| m.id == first.id), "{history:?}");
    // Without --purge, an uninstalled plugin is not there to uninstall again.
    let again = node
        .admin(AdminRequest::PluginUninstall {
            id: "echo-bot".into(),
            purge: false,
        })
        .await;
    assert!(again.is_err(), "{again:?}");

    // Reinstalled, its bot answers again, with what it stored.
    install(&node, echo.path(), &[], &[]).await?;
    post(&boris, &group.id, "m1", "again").await?;
    echoed("again").await?;
    let purged = node
        .admin(AdminRequest::PluginUninstall {
            id: "echo-bot".into(),
            purge: true,
        })
        .await?;
    let AdminReply::PluginUninstalled {
        purged: true,
        kv_entries: 1,
        ..
    } = purged
    else {
        bail!("{purged:?}")
    };
    // Nothing is left to purge.
    let e = node
        .admin(AdminRequest::PluginUninstall {
            id: "echo-bot".into(),
            purge: true,
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    // An id is never a path.
    let e = node
        .admin(AdminRequest::PluginUninstall {
            id: "../../x".into(),
            purge: true,
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");

    // A storage backend: its folder stays unless purged; while files go to it, it stays.
    let store = plugin_folder("fs-store")?;
    install(&node, store.path(), &["filesystem"], &[]).await?;
    node.blob_put("fs-store", "files/a", b"kept")
        .await
        .map_err(anyhow::Error::msg)?;
    let folder = node
        .data_dir()
        .join("plugins")
        .join("data")
        .join("fs-store");
    let out = veche(&["plugin", "--data", &data, "uninstall", "fs-store"]).await?;
    assert!(out.contains(&folder.display().to_string()), "{out}");
    assert!(folder.is_dir());
    install(&node, store.path(), &["filesystem"], &[]).await?;
    assert_eq!(
        node.blob_get("fs-store", "files/a")
            .await
            .map_err(anyhow::Error::msg)?,
        b"kept"
    );
    node.admin(AdminRequest::FilesMigrate {
        to: "plugin:fs-store".into(),
    })
    .await?;
    let refused = veche(&[
        "plugin",
        "--data",
        &data,
        "uninstall",
        "fs-store",
        "--purge",
    ])
    .await
    .unwrap_err();
    assert!(
        format!("{refused:#}").contains("files migrate --to fs"),
        "{refused:#}"
    );
    assert_eq!(plugin(&node, "fs-store").await?.status, "active");
    node.admin(AdminRequest::FilesMigrate { to: "fs".into() })
        .await?;
    let out = veche(&[
        "plugin",
        "--data",
        &data,
        "uninstall",
        "fs-store",
        "--purge",
    ])
    .await?;
    assert!(out.contains("removed: "), "{out}");
    assert!(!folder.exists());
    Ok(())
}

/// Plugin authors issue: `veche plugin new NAME --role bot` makes a crate, outside the node's
/// workspace, that `cargo build` alone builds; installed from its folder on a node in dev mode
/// (the component is a link into `target/`), every build is reloaded.
#[tokio::test]
async fn a_new_bot_crate_builds_and_reloads_on_each_cargo_build() -> anyhow::Result<()> {
    let _log = subscribe();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the checkout")?;
    // Shared with the other plugin builds of the test run: dependencies are built once.
    let target = root.join("target").join("plugins");
    let dir = tempfile::tempdir()?;
    let made = tokio::process::Command::new(env!("CARGO_BIN_EXE_veche-it"))
        .args(["plugin", "new", "ping-bot", "--role", "bot", "--dir"])
        .arg(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .await?;
    let said = String::from_utf8_lossy(&made.stdout);
    assert!(
        made.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // Without --sdk, the SDK of the checkout this veche was built from.
    assert!(
        said.contains(&root.join("plugin-api").display().to_string()),
        "{said}"
    );
    let folder = dir.path().join("ping-bot");
    assert!(
        std::fs::symlink_metadata(folder.join("ping_bot.wasm"))?.is_symlink(),
        "the component is a link into target/"
    );
    // The checkout's versions of the dependencies (nothing to fetch).
    std::fs::copy(root.join("Cargo.lock"), folder.join("Cargo.lock"))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = async || -> anyhow::Result<()> {
        let out = tokio::process::Command::new(&cargo)
            .arg("build")
            .current_dir(&folder)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .await?;
        if !out.status.success() {
            bail!("cargo build: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    build().await?;

    let mut c = config();
    c.plugins.dev_watch = true;
    let node = TestNode::spawn_with(c).await?;
    let info = install(&node, &folder, &[], &[]).await?;
    assert_eq!(info.bot_user.as_deref(), Some("ping-bot@test.local"));
    let boris = user(&node, "boris").await?;
    let group = discussion(
        &boris,
        Request::CreateGroup {
            title: "ping".into(),
            members: vec!["ping-bot".into()],
        },
    )
    .await?;
    let answered = async |n: usize, text: &str| {
        eventually(30, "the bot's answer", async || {
            let m = messages(&boris, &group.id).await?;
            let answers: Vec<String> = m
                .into_iter()
                .filter(|m| m.author == "ping-bot@test.local")
                .filter_map(|m| m.text)
                .collect();
            if answers.len() < n {
                bail!("{answers:?}");
            }
            Ok(answers[n - 1] == text)
        })
        .await
    };
    post(&boris, &group.id, "p1", "ping").await?;
    assert!(answered(1, "pong").await?);

    // The author changes the answer and runs `cargo build`: nothing else.
    let lib = folder.join("src").join("lib.rs");
    let code = std::fs::read_to_string(&lib)?;
    std::fs::write(&lib, code.replace("\"pong\"", "\"pong, v2\""))?;
    build().await?;
    // Pings until one is answered by the new build (those before it by the old one).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut n = 1;
    loop {
        n += 1;
        post(&boris, &group.id, &format!("p{n}"), "ping").await?;
        if answered(n, "pong, v2").await? {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never reloaded");
    }
    Ok(())
}
