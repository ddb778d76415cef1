//! Federation: real nodes on loopback, each with its own data folder, linked over libp2p.

use anyhow::{Context, bail};
use veche_client::Connection;
use veche_client::protocol::admin::{AdminReply, AdminRequest, LinkInfo, LinkScope};
use veche_client::protocol::discussions::{Change, DiscussionEvent, DiscussionInfo, Message};
use veche_client::protocol::files::FileInfo;
use veche_client::protocol::presence::{PresenceChoice, PresenceState};
use veche_client::protocol::{ErrorCode, Event, Reply, Request};
use veche_node::test_utils::{TestNode, test_config};

use crate::files::{
    content, download, files_status, refusal, send_files, sent, sha, upload, user_again,
};
use crate::presence::{query, sees as shown};
use crate::support::{
    PASSWORD, ask, discussion, eventually, login, message, next_non_presence_event, post, user,
    veche, within,
};

/// A node named `name` whose federation port stays the same across restarts (linked nodes
/// dial the address in the grant).
async fn node(name: &str) -> anyhow::Result<TestNode> {
    node_with_clock(name, veche_base::SystemClock::shared()).await
}

/// [`node`], going by `clock`.
async fn node_with_clock(name: &str, clock: veche_base::SharedClock) -> anyhow::Result<TestNode> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut config = test_config();
    config.node.name = Some(name.to_owned());
    config.federation.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}")];
    config.metrics.enabled = true;
    config.metrics.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(TestNode::spawn_with_clock(config, clock).await?)
}

/// Waits until `node`'s metrics show `link` up or down with a backlog `backlog` accepts.
async fn link_metrics(
    node: &TestNode,
    link: &str,
    up: bool,
    backlog: impl Fn(f64) -> bool,
) -> anyhow::Result<()> {
    let base = node.metrics_url().context("no metrics listener")?;
    eventually(30, "link metrics", async || {
        let samples = crate::metrics::scrape(&base).await?;
        let shown = (
            samples.get("veche_federation_link_up", &[("link", link)]),
            samples.get("veche_federation_link_backlog", &[("link", link)]),
        );
        if shown.0 == f64::from(u8::from(up)) && backlog(shown.1) {
            Ok(())
        } else {
            bail!("link {link}: up, backlog = {shown:?}")
        }
    })
    .await
}

/// A group's messages as `conn` sees them now, in the order of its log.
async fn messages(conn: &Connection, group: &str) -> anyhow::Result<Vec<Message>> {
    match ask(
        conn,
        Request::History {
            discussion: group.into(),
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

/// A group's messages as `conn` sees them: id, author and text (`None` once deleted), in the
/// order of its log.
async fn log(
    conn: &Connection,
    group: &str,
) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
    Ok(messages(conn, group)
        .await?
        .into_iter()
        .map(|m| (m.id, m.author, m.text))
        .collect())
}

/// Waits until `conn` sees exactly these texts in the group, in this order.
async fn sees(conn: &Connection, group: &str, texts: &[Option<&str>]) -> anyhow::Result<()> {
    eventually(20, "the group's messages", async || {
        let now = log(conn, group).await?;
        let got: Vec<Option<&str>> = now.iter().map(|m| m.2.as_deref()).collect();
        if got == texts {
            Ok(())
        } else {
            bail!("{got:?}")
        }
    })
    .await
}

async fn share(home: &TestNode, group: &str, link: &str) -> anyhow::Result<()> {
    home.admin(AdminRequest::DiscussionShare {
        discussion: group.to_owned(),
        link: link.to_owned(),
    })
    .await?;
    Ok(())
}

/// A group on `owner`'s node with these members (of any linked node).
async fn group(owner: &Connection, members: &[&str]) -> anyhow::Result<DiscussionInfo> {
    discussion(
        owner,
        Request::CreateGroup {
            title: "Поставки".into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        },
    )
    .await
}

fn scope() -> LinkScope {
    LinkScope {
        object_discussions: true,
        directory: "members".into(),
        presence: false,
        max_file_mb: 10,
    }
}

async fn offer(node: &TestNode) -> anyhow::Result<(String, LinkInfo)> {
    offer_scoped(node, scope()).await
}

async fn offer_scoped(node: &TestNode, scope: LinkScope) -> anyhow::Result<(String, LinkInfo)> {
    offer_renewing(node, scope, None).await
}

/// An offer of a new link, or of a renewal of `renews`.
async fn offer_renewing(
    node: &TestNode,
    scope: LinkScope,
    renews: Option<&str>,
) -> anyhow::Result<(String, LinkInfo)> {
    match node
        .admin(AdminRequest::LinkOffer {
            relationship: "branch".into(),
            days: 30,
            scope,
            organisation: "Head office".into(),
            contact: "it@hq".into(),
            renews: renews.map(str::to_owned),
        })
        .await?
    {
        AdminReply::LinkOffered { offer, link } => Ok((offer, link)),
        other => bail!("expected link_offered, got {other:?}"),
    }
}

async fn accept(node: &TestNode, offer: &str) -> anyhow::Result<(String, LinkInfo)> {
    match node
        .admin(AdminRequest::LinkAccept {
            offer: offer.to_owned(),
            organisation: "Branch".into(),
            contact: "it@branch".into(),
        })
        .await?
    {
        AdminReply::LinkAccepted { grant, link } => Ok((grant, link)),
        other => bail!("expected link_accepted, got {other:?}"),
    }
}

async fn links(node: &TestNode) -> anyhow::Result<Vec<LinkInfo>> {
    match node.admin(AdminRequest::LinkList).await? {
        AdminReply::Links { links } => Ok(links),
        other => bail!("expected links, got {other:?}"),
    }
}

async fn link_state(node: &TestNode, link: &str) -> anyhow::Result<LinkInfo> {
    links(node)
        .await?
        .into_iter()
        .find(|l| l.link == link)
        .with_context(|| format!("no link {link}"))
}

/// Links `a` (offering) with `b` (accepting); the link's id.
pub(crate) async fn link(a: &TestNode, b: &TestNode) -> anyhow::Result<String> {
    link_scoped(a, b, scope()).await
}

async fn link_scoped(a: &TestNode, b: &TestNode, scope: LinkScope) -> anyhow::Result<String> {
    let (text, _) = offer_scoped(a, scope).await?;
    let (grant, info) = accept(b, &text).await?;
    a.admin(AdminRequest::LinkConfirm { grant }).await?;
    Ok(info.link)
}

#[tokio::test]
async fn links_need_both_signatures_refuse_strangers_and_end_on_either_side() -> anyhow::Result<()>
{
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    let stranger = node("stranger.test").await?;

    // Offer: signed by hq, waiting for the other side.
    let (text, offered) = offer(&hq).await?;
    assert_eq!(offered.state, "offered");
    let file = hq.data_dir().join("offer.txt");
    std::fs::write(&file, &text)?;
    let shown = veche(&["link", "inspect", file.to_str().context("path")?]).await?;
    assert!(
        shown.contains(&format!("offer fingerprint: {}", offered.fingerprint)),
        "{shown}"
    );
    assert!(shown.contains("node hq.test"), "{shown}");
    // A node cannot accept its own offer.
    let err = accept(&hq, &text).await.unwrap_err();
    assert!(format!("{err:#}").contains("offer of this node"), "{err:#}");

    // Accept: countersigned by branch, pending there until hq shows it confirmed.
    let (grant, accepted) = accept(&branch, &text).await?;
    assert_eq!(accepted.state, "pending");
    assert_eq!(accepted.peer, "hq.test");
    assert_eq!(accepted.organisation, "Head office");
    assert_eq!(accepted.scope, scope());
    // Accepting the same offer twice is refused.
    let err = accept(&branch, &text).await.unwrap_err();
    assert!(format!("{err:#}").contains("known already"), "{err:#}");

    // A grant altered on the way is refused; the real one activates the link on hq.
    let mut forged = grant.clone().into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let err = hq
        .admin(AdminRequest::LinkConfirm {
            grant: String::from_utf8(forged)?,
        })
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("does not verify") || err.contains("not a readable link"),
        "{err}"
    );
    let confirmed = match hq
        .admin(AdminRequest::LinkConfirm {
            grant: grant.clone(),
        })
        .await?
    {
        AdminReply::Link { link } => link,
        other => bail!("expected link, got {other:?}"),
    };
    assert_eq!(confirmed.peer, "branch.test");
    assert_eq!(confirmed.state, "active");
    // Both administrators read out the same fingerprint.
    assert_eq!(confirmed.fingerprint, accepted.fingerprint);
    let again = hq
        .admin(AdminRequest::LinkConfirm { grant })
        .await
        .unwrap_err();
    assert!(format!("{again:#}").contains("known already"), "{again:#}");
    let id = confirmed.link.clone();
    eventually(15, "connected on both sides", async || {
        let (a, b) = (link_state(&hq, &id).await?, link_state(&branch, &id).await?);
        if a.connected && b.connected && b.state == "active" {
            Ok(())
        } else {
            bail!("hq {a:?}, branch {b:?}")
        }
    })
    .await?;

    // Either side narrows the scope alone, and the other hears it; widening takes a new offer.
    let mut narrower = scope();
    narrower.object_discussions = false;
    narrower.max_file_mb = 0;
    hq.admin(AdminRequest::LinkNarrow {
        link: id.clone(),
        scope: narrower.clone(),
    })
    .await?;
    assert_eq!(link_state(&hq, &id).await?.scope, narrower);
    eventually(15, "the branch hears of the narrower scope", async || {
        let there = link_state(&branch, &id).await?;
        if there.scope == narrower {
            Ok(())
        } else {
            bail!("{there:?}")
        }
    })
    .await?;
    let err = branch
        .admin(AdminRequest::LinkNarrow {
            link: id.clone(),
            scope: scope(),
        })
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("new offer"), "{err:#}");

    // A stranger accepts another offer of hq, but hq never confirms it: hq does not let it in.
    let (second, _) = offer(&hq).await?;
    let (_, strange) = accept(&stranger, &second).await?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let seen = link_state(&stranger, &strange.link).await?;
    assert!(!seen.connected, "{seen:?}");
    assert_eq!(link_state(&hq, &strange.link).await?.state, "offered");

    // The branch revokes: the head office hears it, both stop.
    branch
        .admin(AdminRequest::LinkRevoke {
            link: id.clone(),
            reason: "office closed".into(),
        })
        .await?;
    let here = link_state(&branch, &id).await?;
    assert_eq!(here.state, "ended");
    eventually(15, "hq hears of the revocation", async || {
        let there = link_state(&hq, &id).await?;
        match there.ended_reason.as_deref() {
            Some(r) if there.state == "ended" && r.contains("office closed") => Ok(()),
            _ => bail!("{there:?}"),
        }
    })
    .await?;
    let err = branch
        .admin(AdminRequest::LinkRevoke {
            link: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    // The audit log has every step.
    let audit = veche(&[
        "admin",
        "--data",
        hq.data_dir().to_str().context("path")?,
        "audit",
    ])
    .await?;
    for action in ["link.offer", "link.confirm", "link.ended"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }

    // A new link between the two can be made after the old one ended.
    let mut branch = branch;
    let again = link(&hq, &branch).await?;
    assert_ne!(again, id);
    eventually(15, "the new link connects", async || {
        if link_state(&hq, &again).await?.connected {
            Ok(())
        } else {
            bail!("not yet")
        }
    })
    .await?;
    // Links survive a restart: the branch comes back and reconnects by itself.
    branch.restart().await?;
    eventually(15, "reconnected after a restart", async || {
        let (a, b) = (
            link_state(&hq, &again).await?,
            link_state(&branch, &again).await?,
        );
        if a.connected && b.connected && b.state == "active" {
            Ok(())
        } else {
            bail!("hq {a:?}, branch {b:?}")
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_shared_group_carries_messages_edits_and_deletes_both_ways() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    let id = link(&hq, &branch).await?;
    let anna = user(&hq, "anna").await?;
    let boris = user(&branch, "boris").await?;
    // A user of an unlinked node cannot be added.
    let err = ask(
        &anna,
        Request::CreateGroup {
            title: "x".into(),
            members: vec!["eve@elsewhere.test".into()],
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    let g = group(&anna, &["boris@branch.test"]).await?;
    // History before the share stays at home.
    let (early, _) = post(&anna, &g.id, "a0", "до общего доступа").await?;
    share(&hq, &g.id, &id).await?;

    // The branch gets the group, with its members, and the head office's messages.
    eventually(20, "the group reaches the branch", async || {
        let d = discussion(
            &boris,
            Request::GetDiscussion {
                discussion: g.id.clone(),
            },
        )
        .await?;
        if d.title == "Поставки" {
            Ok(())
        } else {
            bail!("{d:?}")
        }
    })
    .await?;
    // A reply to a message the branch never had arrives as a plain message.
    let mut reply = crate::support::message(&g.id, "a1", "Счёт 17 оплачен");
    reply.reply_to = Some(early);
    let a1 = match ask(&anna, Request::Send(reply)).await? {
        Reply::Sent { message_id, .. } => message_id,
        other => bail!("expected sent, got {other:?}"),
    };
    sees(&boris, &g.id, &[Some("Счёт 17 оплачен")]).await?;

    // The branch writes: pending (seq 0) until the home sequences it, then everywhere.
    let (b1, seq) = post(&boris, &g.id, "b1", "Отгрузим в понедельник").await?;
    assert_eq!(seq, 0, "a message for another home is pending");
    let both = [Some("Счёт 17 оплачен"), Some("Отгрузим в понедельник")];
    sees(&boris, &g.id, &both).await?;
    let mut at_home = vec![Some("до общего доступа")];
    at_home.extend(both);
    sees(&anna, &g.id, &at_home).await?;
    // Sent again (a reconnect), it is the same message, once.
    let (again, _) = post(&boris, &g.id, "b1", "Отгрузим в понедельник").await?;
    assert_eq!(again, b1);
    let on_hq = log(&anna, &g.id).await?;
    assert_eq!(on_hq[2].0, b1, "one message id on both nodes");
    assert_eq!(on_hq[2].1, "boris@branch.test");
    assert_eq!(log(&boris, &g.id).await?, on_hq[1..]);

    // The branch's author edits; the home's author deletes; both travel.
    ask(
        &boris,
        Request::Edit {
            discussion: g.id.clone(),
            message_id: b1.clone(),
            text: "Отгрузим во вторник".into(),
        },
    )
    .await?;
    ask(
        &anna,
        Request::Delete {
            discussion: g.id.clone(),
            message_id: a1.clone(),
        },
    )
    .await?;
    let after = [None, Some("Отгрузим во вторник")];
    sees(&boris, &g.id, &after).await?;
    sees(
        &anna,
        &g.id,
        &[Some("до общего доступа"), None, Some("Отгрузим во вторник")],
    )
    .await?;
    // A member the branch does not know (a typo) cannot be added there; the group goes on.
    ask(
        &anna,
        Request::AddMembers {
            discussion: g.id.clone(),
            users: vec!["typo@branch.test".into()],
        },
    )
    .await?;
    post(&anna, &g.id, "a2", "после опечатки").await?;
    sees(
        &boris,
        &g.id,
        &[None, Some("Отгрузим во вторник"), Some("после опечатки")],
    )
    .await?;
    // Nobody edits someone else's message, on either node.
    let err = ask(
        &anna,
        Request::Edit {
            discussion: g.id.clone(),
            message_id: b1.clone(),
            text: "чужое".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("author"), "{err:#}");
    // Members are changed on the home only.
    let err = ask(
        &boris,
        Request::SetTitle {
            discussion: g.id.clone(),
            title: "Мой".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("home node"), "{err:#}");
    Ok(())
}

#[tokio::test]
async fn messages_written_during_a_partition_arrive_once_in_the_homes_order() -> anyhow::Result<()>
{
    let mut hq = node("hq.test").await?;
    let mut branch = node("branch.test").await?;
    let id = link(&hq, &branch).await?;
    let anna = user(&hq, "anna").await?;
    let boris = user(&branch, "boris").await?;
    let g = group(&anna, &["boris@branch.test"]).await?;
    share(&hq, &g.id, &id).await?;
    post(&anna, &g.id, "a0", "до разрыва").await?;
    sees(&boris, &g.id, &[Some("до разрыва")]).await?;
    drop(boris);

    // The branch is down: the home goes on; its messages wait in the outbox. The branch
    // stores runs of plain posts together, and a reply or a mention on its own, in between.
    branch.stop().await;
    let (first, _) = post(&anna, &g.id, "a1", "пока филиал недоступен 1").await?;
    post(&anna, &g.id, "a2", "пока филиал недоступен 2").await?;
    let mut reply = message(&g.id, "p3", "ответ на первое");
    reply.reply_to = Some(first.clone());
    ask(&anna, Request::Send(reply)).await?;
    post(&anna, &g.id, "p4", "@boris@branch.test, взгляни").await?;
    post(&anna, &g.id, "p5", "пока филиал недоступен 5").await?;
    post(&anna, &g.id, "p6", "пока филиал недоступен 6").await?;
    // The home's metrics show the link down with the six messages waiting.
    link_metrics(&hq, &id, false, |queued| queued >= 6.0).await?;
    branch.restart().await?;
    let (boris, _) = login(&branch, "boris", PASSWORD, "boris-device").await?;
    let three = [
        Some("до разрыва"),
        Some("пока филиал недоступен 1"),
        Some("пока филиал недоступен 2"),
        Some("ответ на первое"),
        Some("@boris@branch.test, взгляни"),
        Some("пока филиал недоступен 5"),
        Some("пока филиал недоступен 6"),
    ];
    sees(&boris, &g.id, &three).await?;
    link_metrics(&hq, &id, true, |queued| queued == 0.0).await?;
    assert_eq!(log(&anna, &g.id).await?, log(&boris, &g.id).await?);
    let Reply::Events { events, .. } = ask(
        &boris,
        Request::History {
            discussion: g.id.clone(),
            before: None,
            limit: 500,
        },
    )
    .await?
    else {
        bail!("expected the group's history");
    };
    let posted: Vec<(u64, Option<String>)> = events
        .into_iter()
        .filter_map(|e| match e.change {
            Change::MessagePosted { message } => Some((e.seq, message.reply_to)),
            _ => None,
        })
        .collect();
    assert!(posted.windows(2).all(|w| w[0].0 < w[1].0), "{posted:?}");
    assert_eq!(posted[3].1.as_deref(), Some(first.as_str()));
    let shown = discussion(
        &boris,
        Request::GetDiscussion {
            discussion: g.id.clone(),
        },
    )
    .await?;
    assert_eq!((shown.unread, shown.mentions), (7, 1));

    // The home is down: the branch's messages are pending, and go when it returns.
    drop(anna);
    hq.stop().await;
    let (_, seq) = post(&boris, &g.id, "b1", "пока офис недоступен").await?;
    assert_eq!(seq, 0);
    sees(&boris, &g.id, &three).await?;
    hq.restart().await?;
    let (anna, _) = login(&hq, "anna", PASSWORD, "anna-device").await?;
    post(&anna, &g.id, "a3", "офис снова в сети").await?;
    let all = [
        Some("до разрыва"),
        Some("пока филиал недоступен 1"),
        Some("пока филиал недоступен 2"),
        Some("ответ на первое"),
        Some("@boris@branch.test, взгляни"),
        Some("пока филиал недоступен 5"),
        Some("пока филиал недоступен 6"),
        Some("пока офис недоступен"),
        Some("офис снова в сети"),
    ];
    // The branch's message was submitted on reconnect, before the home's new one.
    eventually(20, "the same log on both nodes", async || {
        let (a, b) = (log(&anna, &g.id).await?, log(&boris, &g.id).await?);
        let texts: Vec<Option<&str>> = a.iter().map(|m| m.2.as_deref()).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        let mut want = all.to_vec();
        want.sort();
        if a == b && sorted == want {
            Ok(())
        } else {
            bail!("hq {a:?}\nbranch {b:?}")
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn three_nodes_converge_on_the_homes_log() -> anyhow::Result<()> {
    let a = node("a.test").await?;
    let b = node("b.test").await?;
    let c = node("c.test").await?;
    let ab = link(&a, &b).await?;
    let ac = link(&a, &c).await?;
    let alla = user(&a, "alla").await?;
    let bella = user(&b, "bella").await?;
    let clara = user(&c, "clara").await?;
    let g = group(&alla, &["bella@b.test", "clara@c.test"]).await?;
    share(&a, &g.id, &ab).await?;
    share(&a, &g.id, &ac).await?;
    for conn in [&bella, &clara] {
        eventually(20, "the group arrives", async || {
            discussion(
                conn,
                Request::GetDiscussion {
                    discussion: g.id.clone(),
                },
            )
            .await
            .map(|_| ())
        })
        .await?;
    }
    // Everyone writes at once.
    for i in 0..5 {
        post(&alla, &g.id, &format!("a{i}"), &format!("A{i}")).await?;
        post(&bella, &g.id, &format!("b{i}"), &format!("B{i}")).await?;
        post(&clara, &g.id, &format!("c{i}"), &format!("C{i}")).await?;
    }
    eventually(30, "three identical logs", async || {
        let (la, lb, lc) = (
            log(&alla, &g.id).await?,
            log(&bella, &g.id).await?,
            log(&clara, &g.id).await?,
        );
        if la.len() == 15 && la == lb && la == lc {
            Ok(())
        } else {
            bail!("a {} b {} c {}", la.len(), lb.len(), lc.len())
        }
    })
    .await?;
    // C's messages reached B through the home, signed by C.
    let lb = log(&bella, &g.id).await?;
    assert!(lb.iter().any(|m| m.1 == "clara@c.test"));
    Ok(())
}

/// The files of a message in a group's history, as `conn` sees them.
async fn files_of(conn: &Connection, group: &str, message: &str) -> anyhow::Result<Vec<FileInfo>> {
    messages(conn, group)
        .await?
        .into_iter()
        .find(|m| m.id == message)
        .map(|m| m.files)
        .context("the message is not there (yet)")
}

/// The refusal of a post (client id `id`) of `file` to `group`; taking it fails the test.
async fn files_refused(
    conn: &Connection,
    group: &str,
    id: &str,
    file: &str,
) -> anyhow::Result<veche_client::protocol::ErrorBody> {
    send_files(conn, group, id, "с файлом", &[file])
        .await?
        .err()
        .context("a file the link does not carry was taken")
}

/// Waits until `conn` has the message `id` of `group`; its files.
async fn arrived_files(
    conn: &Connection,
    group: &str,
    id: &str,
) -> anyhow::Result<Vec<(String, String, u64, String)>> {
    eventually(20, "the message with its files", async || {
        let files = files_of(conn, group, id).await?;
        Ok(files
            .into_iter()
            .map(|f| (f.id, f.name, f.size, f.sha256))
            .collect())
    })
    .await
}

#[tokio::test]
async fn files_travel_by_reference_and_are_fetched_within_the_links_scope() -> anyhow::Result<()> {
    let a = node("a.test").await?;
    let b = node("b.test").await?;
    let c = node("c.test").await?;
    let ab = link(&a, &b).await?;
    let small_link = LinkScope {
        max_file_mb: 1,
        ..scope()
    };
    let ac = link_scoped(&a, &c, small_link).await?;
    let alla = user(&a, "alla").await?;
    let bella = user(&b, "bella").await?;
    let clara = user(&c, "clara").await?;
    let g = group(&alla, &["bella@b.test", "clara@c.test"]).await?;
    share(&a, &g.id, &ab).await?;
    share(&a, &g.id, &ac).await?;

    // The home's files: a small one, and one of two pieces on the wire.
    let (small, big) = (content(1, 200_000), content(2, 1_500_000));
    let fs = upload(&alla, &g.id, "акт.pdf", &small).await?;
    let fb = upload(&alla, &g.id, "скан.tiff", &big).await?;
    let m1 = sent(&alla, &g.id, "m1", "документы", &[&fs.id, &fb.id]).await?;
    let on_b = arrived_files(&bella, &g.id, &m1).await?;
    let described = |f: &[(String, String, u64, String)]| -> Vec<(String, u64, String)> {
        f.iter()
            .map(|(_, n, s, h)| (n.clone(), *s, h.clone()))
            .collect()
    };
    let expected = vec![
        ("акт.pdf".to_owned(), 200_000, sha(&small)),
        ("скан.tiff".to_owned(), 1_500_000, sha(&big)),
    ];
    assert_eq!(described(&on_b), expected);
    assert_eq!(download(&bella, &on_b[1].0).await?, big);
    assert_eq!(download(&bella, &on_b[0].0).await?, small);
    // c's link carries files of at most 1 MiB.
    let on_c = arrived_files(&clara, &g.id, &m1).await?;
    assert_eq!(described(&on_c), expected);
    assert_eq!(download(&clara, &on_c[0].0).await?, small);
    let too_big = refusal(download(&clara, &on_c[1].0).await.unwrap_err())?;
    assert!(too_big.message.contains("at most 1 MiB"), "{too_big:?}");
    // A content known here only by a linked node's word is still taken from a local upload.
    let own = group(&clara, &[]).await?;
    let local = upload(&clara, &own.id, "скан.tiff", &big).await?;
    sent(&clara, &own.id, "own1", "мой скан", &[&local.id]).await?;
    assert_eq!(download(&clara, &local.id).await?, big);

    // A replica's file: the home fetches it from b, and c gets it through the home.
    let answer = content(3, 50_000);
    let fa = upload(&bella, &g.id, "ответ.docx", &answer).await?;
    let m2 = sent(&bella, &g.id, "m2", "ответ", &[&fa.id]).await?;
    let on_a = arrived_files(&alla, &g.id, &m2).await?;
    // The home fetches it by itself: it keeps every file of its discussions.
    eventually(30, "the home holds b's file", async || {
        let (_, backends) = files_status(&a).await?;
        if backends.iter().any(|(name, n)| name == "remote" && *n > 0) {
            bail!("{backends:?}")
        }
        Ok(())
    })
    .await?;
    // So it serves the file with b down.
    let mut b = b;
    b.stop().await;
    let on_c = arrived_files(&clara, &g.id, &m2).await?;
    assert_eq!(download(&clara, &on_c[0].0).await?, answer);
    assert_eq!(download(&alla, &on_a[0].0).await?, answer);
    b.restart().await?;
    let bella = user_again(&b, "bella").await?;
    let on_b = arrived_files(&bella, &g.id, &m2).await?;
    assert_eq!(
        described(&on_b),
        [("ответ.docx".to_owned(), 50_000, sha(&answer))]
    );

    // A file over the link's limit is refused before it leaves c.
    let over = content(4, 1_100_000);
    let fo = upload(&clara, &g.id, "отчёт.xlsx", &over).await?;
    let refused = files_refused(&clara, &g.id, "m3", &fo.id).await?;
    assert!(refused.message.contains("at most 1 MiB"), "{refused:?}");

    // A linked node gets the files of discussions it takes part in, and no others.
    let rogue = Rogue::link(&a).await?;
    let elsewhere = group(&alla, &["bella@b.test"]).await?;
    share(&a, &elsewhere.id, &ab).await?;
    let secret = content(5, 1000);
    let fsec = upload(&alla, &elsewhere.id, "секрет.txt", &secret).await?;
    let m4 = sent(&alla, &elsewhere.id, "m4", "секрет", &[&fsec.id]).await?;
    let on_b4 = arrived_files(&bella, &elsewhere.id, &m4).await?;
    share(&a, &g.id, &rogue.link).await?;
    let piece = eventually(
        20,
        "the rogue is served a file of a shared group",
        async || {
            Ok(rogue
                .handle
                .fetch(&rogue.link, &g.id, &sha(&small), 0)
                .await?)
        },
    )
    .await?;
    assert_eq!(piece.total, 200_000);
    assert_eq!(piece.bytes, small);
    let not_found = |r: Result<_, veche_federation::net::QueryError>| matches!(&r, Err(veche_federation::net::QueryError::Refused(why)) if why.contains("not found"));
    for (discussion, hash) in [(&elsewhere.id, sha(&secret)), (&g.id, sha(&secret))] {
        let refused = rogue.handle.fetch(&rogue.link, discussion, &hash, 0).await;
        assert!(not_found(refused));
    }
    // A hash names a content but proves nothing: a node that names the secret's hash in a
    // group shared with it gets nothing back, and neither do the group's members here.
    let leak = group(&alla, &["eve@rogue.test", "bella@b.test"]).await?;
    share(&a, &leak.id, &rogue.link).await?;
    share(&a, &leak.id, &ab).await?;
    let claim = rogue.post(
        &leak.id,
        serde_json::json!({"text": "смотрите", "files": [
            {"sha256": sha(&secret), "size": secret.len(), "name": "секрет.txt", "mime": "text/plain"}
        ]}),
    )?;
    rogue.acknowledged().await?;
    let listed = arrived_files(&alla, &leak.id, &claim).await?;
    assert_eq!(listed[0].3, sha(&secret));
    let fetched = rogue
        .handle
        .fetch(&rogue.link, &leak.id, &sha(&secret), 0)
        .await;
    assert!(not_found(fetched));
    // Here the home asks the rogue for the content, which never sends it.
    let unproven = refusal(download(&alla, &listed[0].0).await.unwrap_err())?;
    assert_eq!(unproven.code, ErrorCode::Unavailable, "{unproven:?}");
    // b holds the secret, fetched for the other group; the claim still proves nothing there.
    let claimed_on_b = arrived_files(&bella, &leak.id, &claim).await?;
    assert_eq!(download(&bella, &on_b4[0].0).await?, secret);
    let unproven = refusal(download(&bella, &claimed_on_b[0].0).await.unwrap_err())?;
    assert_eq!(unproven.code, ErrorCode::Unavailable, "{unproven:?}");

    // A deleted message's files are served no more.
    ask(
        &alla,
        Request::Delete {
            discussion: g.id.clone(),
            message_id: m1.clone(),
        },
    )
    .await?;
    let gone = rogue
        .handle
        .fetch(&rogue.link, &g.id, &sha(&small), 0)
        .await;
    assert!(not_found(gone));
    // b fetched the content once and keeps it: the home is not needed any more. Its own
    // user's file, back from the home, never needed fetching.
    let mut a = a;
    a.stop().await;
    assert_eq!(download(&bella, &on_b4[0].0).await?, secret);
    assert_eq!(download(&bella, &on_b[0].0).await?, answer);
    Ok(())
}

/// The link `link` as `node` holds it in force (not an open renewal offer).
async fn in_force(node: &TestNode, link: &str) -> anyhow::Result<LinkInfo> {
    links(node)
        .await?
        .into_iter()
        .find(|l| l.link == link && l.state != "offered")
        .with_context(|| format!("no link {link}"))
}

#[tokio::test]
async fn a_renewal_widens_a_link_once_both_sign_and_keeps_what_it_carries() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    // Files do not travel on this link at first.
    let no_files = LinkScope {
        max_file_mb: 0,
        ..scope()
    };
    let (first, _) = offer_scoped(&hq, no_files).await?;
    let (first_grant, info) = accept(&branch, &first).await?;
    hq.admin(AdminRequest::LinkConfirm { grant: first_grant })
        .await?;
    let link = info.link;
    let anna = user(&hq, "anna").await?;
    let boris = user(&branch, "boris").await?;
    let g = group(&anna, &["boris@branch.test"]).await?;
    share(&hq, &g.id, &link).await?;
    post(&anna, &g.id, "a1", "до продления").await?;
    sees(&boris, &g.id, &[Some("до продления")]).await?;
    let doc = content(7, 10_000);
    let f = upload(&boris, &g.id, "счёт.pdf", &doc).await?;
    let refused = files_refused(&boris, &g.id, "b1", &f.id).await?;
    assert!(refused.message.contains("carries no files"), "{refused:?}");

    // The head office offers a renewal of the same link that carries files.
    let (text, offered) = offer_renewing(&hq, scope(), Some(&link)).await?;
    assert_eq!(
        (
            offered.link.as_str(),
            offered.version,
            offered.state.as_str()
        ),
        (link.as_str(), 2, "offered")
    );
    assert_eq!(in_force(&hq, &link).await?.version, 1);
    let err = offer_renewing(&hq, scope(), Some("no-such-link"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    // The branch accepts. Until the head office confirms, the link goes on as it was.
    let (grant, accepted) = accept(&branch, &text).await?;
    assert_eq!(
        (
            accepted.version,
            accepted.renewing,
            accepted.scope.max_file_mb
        ),
        (1, Some(2), 0)
    );
    assert_eq!(accepted.state, "active");
    post(&anna, &g.id, "a-between", "между подписями").await?;
    sees(
        &boris,
        &g.id,
        &[Some("до продления"), Some("между подписями")],
    )
    .await?;
    hq.admin(AdminRequest::LinkConfirm { grant }).await?;
    eventually(
        20,
        "both nodes hold version 2 and are connected",
        async || {
            let (a, b) = (in_force(&hq, &link).await?, in_force(&branch, &link).await?);
            if (a.version, b.version, a.connected, b.connected) == (2, 2, true, true)
                && a.scope.max_file_mb == 10
            {
                Ok(())
            } else {
                bail!("{a:?} {b:?}")
            }
        },
    )
    .await?;
    assert_eq!(in_force(&branch, &link).await?.renewing, None);
    // Neither the renewal nor the first offer, accepted again, changes the link.
    let again = accept(&branch, &text).await.unwrap_err();
    assert!(
        format!("{again:#}").contains("known already (at version 2)"),
        "{again:#}"
    );
    let stale = accept(&branch, &first).await.unwrap_err();
    assert!(
        format!("{stale:#}").contains("a renewal must be later"),
        "{stale:#}"
    );
    // The same link carries files now, and what it carried goes on.
    let m = sent(&boris, &g.id, "b2", "счёт", &[&f.id]).await?;
    let files = arrived_files(&anna, &g.id, &m).await?;
    let got = eventually(20, "the file from the branch", async || {
        Ok(download(&anna, &files[0].0).await?)
    })
    .await?;
    assert_eq!(got, doc);
    post(&anna, &g.id, "a2", "после продления").await?;
    let all = [
        Some("до продления"),
        Some("между подписями"),
        Some("счёт"),
        Some("после продления"),
    ];
    sees(&boris, &g.id, &all).await?;
    sees(&anna, &g.id, &all).await?;

    // From the command line a renewal starts from what is in force: here only presence is
    // added, and the organisation stays as the link names it.
    let data = hq.data_dir().to_str().context("path")?.to_owned();
    let file = hq.data_dir().join("renewal.txt");
    let path = file.to_str().context("path")?;
    veche(&[
        "link",
        "--data",
        &data,
        "offer",
        "--renews",
        &link,
        "--presence",
        "--out",
        path,
    ])
    .await?;
    let shown = veche(&["link", "inspect", path]).await?;
    assert!(shown.contains("version 3"), "{shown}");
    assert!(shown.contains("presence: true, max_file_mb: 10"), "{shown}");
    assert!(shown.contains("Head office"), "{shown}");
    Ok(())
}

#[tokio::test]
async fn dialogs_span_nodes_and_linked_directories_answer_within_scope() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    // A branch of the company: its whole directory is open to the head office.
    let id = link_scoped(&hq, &branch, full_directory()).await?;
    let anna = user(&hq, "anna").await?;
    let boris = user(&branch, "boris").await?;
    let vera = user(&branch, "vera").await?;
    // "branch.test" sorts first: the branch is the home of its dialogs with the head office.
    // Anna opens hers with Boris on the other node and writes at once: pending.
    let d = open_dialog(&anna, "boris@branch.test").await?;
    let (first, seq) = post(&anna, &d.id, "a1", "Привет из головного офиса").await?;
    assert_eq!(seq, 0, "a message for another home is pending");
    sees(&boris, &d.id, &[Some("Привет из головного офиса")]).await?;
    assert_eq!(
        open_dialog(&boris, "anna@hq.test").await?.id,
        d.id,
        "one dialog"
    );
    assert_eq!(open_dialog(&anna, "boris@branch.test").await?.id, d.id);
    post(&boris, &d.id, "b1", "Здравствуйте!").await?;
    let both = [Some("Привет из головного офиса"), Some("Здравствуйте!")];
    sees(&anna, &d.id, &both).await?;
    sees(&boris, &d.id, &both).await?;
    assert_eq!(log(&anna, &d.id).await?, log(&boris, &d.id).await?);
    assert_eq!(log(&boris, &d.id).await?[0].0, first, "one message id");
    let shown = discussion(
        &boris,
        Request::GetDiscussion {
            discussion: d.id.clone(),
        },
    )
    .await?;
    assert_eq!(
        shown.kind,
        veche_client::protocol::discussions::DiscussionKind::Dialog
    );

    // Both sides open a dialog at the same moment: still one.
    let (on_hq, on_branch) = tokio::join!(
        open_dialog(&anna, "vera@branch.test"),
        open_dialog(&vera, "anna@hq.test")
    );
    let (on_hq, on_branch) = (on_hq?, on_branch?);
    assert_eq!(on_hq.id, on_branch.id);
    post(&vera, &on_hq.id, "v1", "Счёт готов").await?;
    post(&anna, &on_hq.id, "a2", "Спасибо").await?;
    sees(&anna, &on_hq.id, &[Some("Счёт готов"), Some("Спасибо")]).await?;
    sees(&vera, &on_hq.id, &[Some("Счёт готов"), Some("Спасибо")]).await?;

    // Users of unlinked nodes are out of reach.
    let err = open_dialog(&anna, "eve@elsewhere.test").await.unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");

    // A dialog with someone the branch does not have: created here, refused by its home, and
    // Anna is told; so is a message she wrote there meanwhile.
    let ghost = open_dialog(&anna, "nobody@branch.test").await?;
    let (lost, seq) = post(&anna, &ghost.id, "g1", "Алло?").await?;
    assert_eq!(seq, 0);
    let told = not_delivered(&anna, &ghost.id, 2).await?;
    assert_eq!(told[0].0, None, "the dialog itself: {told:?}");
    assert!(told[0].1.contains("not found"), "{told:?}");
    assert_eq!(told[1].0.as_deref(), Some(lost.as_str()), "{told:?}");
    // Sent again, the same message gets the refusal, not a pending success.
    let err = post(&anna, &ghost.id, "g1", "Алло?").await.unwrap_err();
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
    // The other way round: Vera's node is the home of her dialog with someone the head office
    // does not have; the head office cannot take it, and Vera is told.
    let nobody = open_dialog(&vera, "nobody@hq.test").await?;
    let told = not_delivered(&vera, &nobody.id, 1).await?;
    assert!(told[0].1.contains("cannot take part"), "{told:?}");

    // What the branch's directory says of its people refreshes the profiles known here: Zoya
    // is known at the head office by her login once she writes, and by her name once found.
    branch
        .admin(AdminRequest::UserAdd {
            login: "zoya".into(),
            display_name: "Зоя Смирнова".into(),
            email: "zoya@example.com".into(),
            password: PASSWORD.into(),
            admin: false,
            department: "Склад".into(),
        })
        .await?;
    let (zoya, _) = login(&branch, "zoya", PASSWORD, "zoya-device").await?;
    let with_zoya = open_dialog(&zoya, "anna@hq.test").await?;
    post(&zoya, &with_zoya.id, "z1", "Накладная готова").await?;
    sees(&anna, &with_zoya.id, &[Some("Накладная готова")]).await?;
    let profile = async || -> anyhow::Result<(String, String)> {
        match hq.admin(AdminRequest::UserList).await? {
            AdminReply::Users { users } => users
                .into_iter()
                .find(|u| u.id == "zoya@branch.test")
                .map(|u| (u.display_name, u.department))
                .context("zoya is known at the head office"),
            other => bail!("expected users, got {other:?}"),
        }
    };
    assert_eq!(profile().await?, ("zoya".to_owned(), String::new()));
    let found = ask(
        &anna,
        Request::Directory {
            query: "Зоя".into(),
            limit: 10,
            node: Some("branch.test".into()),
        },
    )
    .await?;
    assert!(
        matches!(&found, Reply::Directory { users } if users.len() == 1),
        "{found:?}"
    );
    eventually(10, "the profile is refreshed", async || {
        match profile().await? {
            (name, department) if name == "Зоя Смирнова" && department == "Склад" => {
                Ok(())
            }
            other => bail!("{other:?}"),
        }
    })
    .await?;

    // The head office searches the branch's directory over the link. Narrowed to "members",
    // it finds people of discussions the two nodes share, not Gleb, and cannot open a dialog
    // with him either.
    user(&branch, "gleb").await?;
    let mut narrower = full_directory();
    narrower.directory = "members".into();
    hq.admin(AdminRequest::LinkNarrow {
        link: id.clone(),
        scope: narrower.clone(),
    })
    .await?;
    eventually(15, "the branch hears of the narrower scope", async || {
        let there = link_state(&branch, &id).await?;
        if there.scope == narrower {
            Ok(())
        } else {
            bail!("{there:?}")
        }
    })
    .await?;
    let hidden = open_dialog(&anna, "gleb@branch.test").await?;
    let told = not_delivered(&anna, &hidden.id, 1).await?;
    assert!(told[0].1.contains("not found"), "{told:?}");
    // Boris already talks with the head office: a colleague of Anna's still reaches him.
    let oleg = user(&hq, "oleg").await?;
    let reached = open_dialog(&oleg, "boris@branch.test").await?;
    post(&oleg, &reached.id, "o1", "Добрый день").await?;
    sees(&boris, &reached.id, &[Some("Добрый день")]).await?;
    let people = async |q: &str| -> anyhow::Result<Vec<String>> {
        match ask(
            &anna,
            Request::Directory {
                query: q.into(),
                limit: 10,
                node: Some("branch.test".into()),
            },
        )
        .await?
        {
            Reply::Directory { users } => Ok(users.into_iter().map(|u| u.login).collect()),
            other => bail!("expected a directory, got {other:?}"),
        }
    };
    assert_eq!(people("bor").await?, ["boris@branch.test"]);
    assert_eq!(people("vera").await?, ["vera@branch.test"]);
    assert!(people("gleb").await?.is_empty());
    // Narrowed to no directory, the branch refuses.
    narrower.directory = "none".into();
    hq.admin(AdminRequest::LinkNarrow {
        link: id.clone(),
        scope: narrower,
    })
    .await?;
    eventually(
        15,
        "the branch refuses directory queries",
        async || match people("bor").await {
            Err(e) if format!("{e:#}").contains("directory") => Ok(()),
            other => bail!("{other:?}"),
        },
    )
    .await?;
    Ok(())
}

/// Two people who share a group across a link reach each other from either side, whichever
/// node is the group's home and whichever sorts first (with the default `members` directory
/// scope); people who share nothing stay out of reach.
#[tokio::test]
async fn people_who_share_a_group_reach_each_other_from_either_side() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    let id = link(&hq, &branch).await?;
    let anna = user(&hq, "anna").await?;
    let boris = user(&branch, "boris").await?;
    user(&branch, "gleb").await?;
    // The group's home is the head office, which sorts last: the branch is the home of the
    // two's dialog, and sees Boris only as a member of a group of the head office's.
    let g = group(&anna, &["boris@branch.test"]).await?;
    share(&hq, &g.id, &id).await?;
    post(&anna, &g.id, "a0", "Поставки на неделю").await?;
    sees(&boris, &g.id, &[Some("Поставки на неделю")]).await?;

    let d = open_dialog(&anna, "boris@branch.test").await?;
    let (_, seq) = post(&anna, &d.id, "a1", "Борис, вопрос по накладной").await?;
    assert_eq!(seq, 0, "a message for another home is pending");
    sees(&boris, &d.id, &[Some("Борис, вопрос по накладной")]).await?;
    post(&boris, &d.id, "b1", "Слушаю").await?;
    let both = [Some("Борис, вопрос по накладной"), Some("Слушаю")];
    sees(&anna, &d.id, &both).await?;
    assert_eq!(log(&anna, &d.id).await?, log(&boris, &d.id).await?);

    // Each finds the other in the other node's directory.
    let find = async |conn: &Connection, q: &str, node: &str| -> anyhow::Result<Vec<String>> {
        match ask(
            conn,
            Request::Directory {
                query: q.into(),
                limit: 10,
                node: Some(node.into()),
            },
        )
        .await?
        {
            Reply::Directory { users } => Ok(users.into_iter().map(|u| u.login).collect()),
            other => bail!("expected a directory, got {other:?}"),
        }
    };
    assert_eq!(
        find(&anna, "boris", "branch.test").await?,
        ["boris@branch.test"]
    );
    assert_eq!(find(&boris, "anna", "hq.test").await?, ["anna@hq.test"]);
    // Gleb shares nothing with the head office: not found, and a dialog is refused with the
    // reason told to its author.
    assert!(find(&anna, "gleb", "branch.test").await?.is_empty());
    let hidden = open_dialog(&anna, "gleb@branch.test").await?;
    let told = not_delivered(&anna, &hidden.id, 1).await?;
    assert!(told[0].1.contains("not found"), "{told:?}");
    Ok(())
}

/// The dialog of `conn`'s user with `with`.
async fn open_dialog(conn: &Connection, with: &str) -> anyhow::Result<DiscussionInfo> {
    discussion(conn, Request::OpenDialog { with: with.into() }).await
}

fn full_directory() -> LinkScope {
    LinkScope {
        directory: "full".into(),
        ..scope()
    }
}

/// Waits until `conn` is told of `n` refusals in `discussion`: (message id, reason) each.
async fn not_delivered(
    conn: &Connection,
    discussion: &str,
    n: usize,
) -> anyhow::Result<Vec<(Option<String>, String)>> {
    let mut told = Vec::new();
    while told.len() < n {
        match within(20, "not delivered", next_non_presence_event(conn)).await? {
            Some(Event::NotDelivered {
                discussion: d,
                message_id,
                reason,
            }) if d == discussion => told.push((message_id, reason)),
            Some(_) => continue,
            None => bail!("the event stream ended"),
        }
    }
    Ok(told)
}

#[tokio::test]
async fn presence_crosses_a_link_that_carries_it() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let mut branch = node("branch.test").await?;
    let mut with_presence = full_directory();
    with_presence.presence = true;
    link_scoped(&hq, &branch, with_presence).await?;
    let anna = user(&hq, "anna").await?;
    let boris = user(&branch, "boris").await?;
    // Boris is online before Anna and he share anything: he is shown once they do.
    open_dialog(&anna, "boris@branch.test").await?;
    shown(&anna, "boris@branch.test", PresenceState::Available).await?;
    shown(&boris, "anna@hq.test", PresenceState::Available).await?;
    // Changes travel, with the status text.
    ask(
        &boris,
        Request::SetPresence {
            choice: PresenceChoice::Dnd,
            status_text: "на складе".into(),
        },
    )
    .await?;
    shown(&anna, "boris@branch.test", PresenceState::Dnd).await?;
    let asked = query(&anna, "boris@branch.test").await?;
    assert_eq!(asked.state, PresenceState::Dnd);
    assert_eq!(asked.status_text, "на складе");
    // The branch stops: its users are shown offline at once.
    branch.stop().await;
    shown(&anna, "boris@branch.test", PresenceState::Offline).await?;
    let asked = query(&anna, "boris@branch.test").await?;
    assert_eq!(asked.state, PresenceState::Offline);
    assert_eq!(asked.status_text, "");
    Ok(())
}

#[tokio::test]
async fn a_dialog_carries_on_when_its_nodes_link_again() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    let first = link_scoped(&hq, &branch, full_directory()).await?;
    let anna = user(&hq, "anna").await?;
    let vera = user(&hq, "vera").await?;
    let boris = user(&branch, "boris").await?;
    let d = open_dialog(&boris, "anna@hq.test").await?;
    let d2 = open_dialog(&boris, "vera@hq.test").await?;
    post(&boris, &d.id, "b1", "до разрыва").await?;
    sees(&anna, &d.id, &[Some("до разрыва")]).await?;
    post(&boris, &d2.id, "b1v", "Вере до разрыва").await?;
    sees(&vera, &d2.id, &[Some("Вере до разрыва")]).await?;
    branch
        .admin(AdminRequest::LinkRevoke {
            link: first.clone(),
            reason: "new contract".into(),
        })
        .await?;
    eventually(15, "both ends see the link ended", async || {
        let (a, b) = (
            link_state(&hq, &first).await?,
            link_state(&branch, &first).await?,
        );
        if a.state == "ended" && b.state == "ended" {
            Ok(())
        } else {
            bail!("{a:?} {b:?}")
        }
    })
    .await?;
    link_scoped(&hq, &branch, full_directory()).await?;
    // The home's user writes first: the dialog is shared over the new link, then the message.
    post(&boris, &d.id, "b2", "снова на связи").await?;
    sees(&anna, &d.id, &[Some("до разрыва"), Some("снова на связи")]).await?;
    // And the other way.
    post(&anna, &d.id, "a1", "отлично").await?;
    let all = [Some("до разрыва"), Some("снова на связи"), Some("отлично")];
    sees(&boris, &d.id, &all).await?;
    sees(&anna, &d.id, &all).await?;
    // In the other dialog the head office writes first: its home shares it over the new link
    // when the submission arrives.
    post(&vera, &d2.id, "v1", "и я тут").await?;
    let both = [Some("Вере до разрыва"), Some("и я тут")];
    sees(&boris, &d2.id, &both).await?;
    sees(&vera, &d2.id, &both).await?;
    Ok(())
}

#[tokio::test]
async fn a_linked_node_that_replays_or_forges_events_changes_nothing() -> anyhow::Result<()> {
    use veche_federation::event::{EVENT_FORMAT, Event, EventHeader};
    use veche_federation::keys::NodeKey;
    use veche_federation::wire::Item;

    let hq = node("hq.test").await?;
    let anna = user(&hq, "anna").await?;
    let rogue = Rogue::link(&hq).await?;
    let g = group(&anna, &["eve@rogue.test"]).await?;
    share(&hq, &g.id, &rogue.link).await?;

    let post = |signer: &NodeKey, txn: &str, text: &str| -> anyhow::Result<Item> {
        let header = EventHeader {
            format: EVENT_FORMAT,
            kind: "message.post".into(),
            discussion: g.id.clone(),
            home: "hq.test".into(),
            origin: "rogue.test".into(),
            author: "eve@rogue.test".into(),
            client_txn: txn.into(),
            created_at: 0,
            target: None,
            body_hash: None,
            body_len: 0,
        };
        let body = serde_json::to_vec(&serde_json::json!({ "text": text }))?;
        let event = Event::create(signer, header, Some(body))?;
        Ok(Item::Submit {
            event: event.wire().clone(),
        })
    };
    let once = post(&rogue.key, "t1", "один раз")?;
    // The same event twice, one signed with a key that is not the node's, then a good one.
    rogue.send(once.clone());
    rogue.send(once);
    rogue.send(post(&NodeKey::from_secret([8; 32]), "t2", "подделка")?);
    rogue.send(post(&rogue.key, "t3", "после")?);
    rogue.acknowledged().await?;
    sees(&anna, &g.id, &[Some("один раз"), Some("после")]).await?;
    let authors: Vec<String> = log(&anna, &g.id).await?.into_iter().map(|m| m.1).collect();
    assert_eq!(authors, ["eve@rogue.test", "eve@rogue.test"]);
    rogue.handle.stop();
    Ok(())
}

#[tokio::test]
async fn a_home_that_names_messages_already_taken_stalls_nothing() -> anyhow::Result<()> {
    use veche_federation::event::{EVENT_FORMAT, Event, EventHeader, Stamp, StampBody};
    use veche_federation::keys::Hash;
    use veche_federation::wire::Item;

    let hq = node("hq.test").await?;
    let anna = user(&hq, "anna").await?;
    let rogue = Rogue::link(&hq).await?;
    // A message of anna's elsewhere, whose id the rogue home will name.
    let own = group(&anna, &[]).await?;
    let (taken, _) = post(&anna, &own.id, "c1", "моё").await?;

    // The rogue is the home of a group with anna in it, and stamps its log itself.
    let g = "g1@rogue.test";
    let mut prev = Hash::default();
    let mut seq = 0;
    let mut stamped = |kind: &str, body: serde_json::Value| -> anyhow::Result<Item> {
        seq += 1;
        let header = EventHeader {
            format: EVENT_FORMAT,
            kind: kind.into(),
            discussion: g.into(),
            home: "rogue.test".into(),
            origin: "rogue.test".into(),
            author: "eve@rogue.test".into(),
            client_txn: format!("t{seq}"),
            created_at: 0,
            target: None,
            body_hash: None,
            body_len: 0,
        };
        let event = Event::create(&rogue.key, header, Some(serde_json::to_vec(&body)?))?;
        let stamp = Stamp::create(
            &rogue.key,
            StampBody {
                format: EVENT_FORMAT,
                discussion: g.into(),
                seq,
                event: event.id(),
                origin_key: rogue.key.public(),
                prev,
                accepted_at: 0,
            },
        );
        prev = stamp.hash();
        Ok(Item::Stamped {
            stamp: stamp.signed().clone(),
            event: event.wire().clone(),
        })
    };
    let text = |message: &str, text: &str| serde_json::json!({ "message": message, "text": text });
    rogue.send(stamped(
        "discussion.share",
        serde_json::json!({
            "kind": "group",
            "title": "Чужая",
            "members": [["eve@rogue.test", "owner"], ["anna@hq.test", "member"]],
        }),
    )?);
    // One run of posts: a fresh id, the same id again, anna's message's id, a fresh one.
    rogue.send(stamped("message.post", text("m1@rogue.test", "первое"))?);
    rogue.send(stamped("message.post", text("m1@rogue.test", "второе"))?);
    rogue.send(stamped("message.post", text(&taken, "третье"))?);
    rogue.send(stamped("message.post", text("m2@rogue.test", "четвёртое"))?);
    rogue.acknowledged().await?;
    sees(&anna, g, &[Some("первое"), Some("четвёртое")]).await?;
    sees(&anna, &own.id, &[Some("моё")]).await?;
    // The log goes on, and this node keeps applying; deleting "its" message deletes nothing
    // of anna's.
    rogue.send(stamped(
        "message.delete",
        serde_json::json!({ "message": taken }),
    )?);
    rogue.send(stamped("message.post", text("m3@rogue.test", "пятое"))?);
    rogue.acknowledged().await?;
    sees(
        &anna,
        g,
        &[Some("первое"), Some("четвёртое"), Some("пятое")],
    )
    .await?;
    sees(&anna, &own.id, &[Some("моё")]).await?;
    rogue.handle.stop();
    Ok(())
}

/// A linked node that is the federation crate alone, with an in-memory store, linked to `hq`
/// by a real grant (full directory scope): it sends what the test makes it send.
struct Rogue {
    key: veche_federation::keys::NodeKey,
    store: veche_federation::memory::MemoryStore,
    handle: veche_federation::net::Handle,
    _notes: tokio::sync::mpsc::UnboundedReceiver<veche_federation::net::Notification>,
    link: String,
}

impl Rogue {
    async fn link(hq: &TestNode) -> anyhow::Result<Self> {
        use veche_federation::grant::{Offer, Party};
        use veche_federation::keys::NodeKey;
        use veche_federation::memory::MemoryStore;
        use veche_federation::net::{self, NetConfig};

        let key = NodeKey::from_secret([7; 32]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("/ip4/127.0.0.1/tcp/{port}");
        let (offer, info) = offer_scoped(hq, full_directory()).await?;
        let party = Party {
            node: "rogue.test".into(),
            key: key.public(),
            addresses: vec![address.clone()],
            organisation: "Rogue".into(),
            contact: "admin@rogue.test".into(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let grant = Offer::parse(&offer)?.accept(&key, party, now)?;
        hq.admin(AdminRequest::LinkConfirm {
            grant: grant.to_text(),
        })
        .await?;
        let store = MemoryStore::default();
        let config = NetConfig {
            listen: vec![address.parse()?],
            request_timeout: std::time::Duration::from_secs(5),
            retry_min: std::time::Duration::from_millis(50),
            retry_max: std::time::Duration::from_millis(500),
            idle_timeout: std::time::Duration::from_secs(30),
            ..NetConfig::default()
        };
        let scope = grant.terms().scope.clone();
        let (handle, notes, _task) = net::start(
            "rogue.test",
            &key,
            config,
            store.clone(),
            vec![(grant, scope)],
        )
        .await?;
        Ok(Self {
            key,
            store,
            handle,
            _notes: notes,
            link: info.link,
        })
    }

    /// Queues a post by `eve@rogue.test` to `discussion` (homed elsewhere) with this body; the
    /// id its home gives the message.
    fn post(&self, discussion: &str, body: serde_json::Value) -> anyhow::Result<String> {
        use veche_federation::event::{EVENT_FORMAT, Event, EventHeader, node_of};
        let header = EventHeader {
            format: EVENT_FORMAT,
            kind: "message.post".into(),
            discussion: discussion.into(),
            home: node_of(discussion).context("no home")?.into(),
            origin: "rogue.test".into(),
            author: "eve@rogue.test".into(),
            client_txn: hex::encode(rand::random::<[u8; 16]>()),
            created_at: 0,
            target: None,
            body_hash: None,
            body_len: 0,
        };
        let event = Event::create(&self.key, header, Some(serde_json::to_vec(&body)?))?;
        let id = format!(
            "{}@{}",
            &event.id().to_hex()[..32],
            node_of(discussion).context("no home")?
        );
        self.send(veche_federation::wire::Item::Submit {
            event: event.wire().clone(),
        });
        Ok(id)
    }

    /// Queues `item`; [`Self::acknowledged`] sends what is queued.
    fn send(&self, item: veche_federation::wire::Item) {
        self.store.enqueue(&self.link, item);
    }

    /// Sends what is queued and waits until the real node has stored it all.
    async fn acknowledged(&self) -> anyhow::Result<()> {
        self.handle.wake(&self.link);
        eventually(
            20,
            "the rogue's outbox is acknowledged",
            async || match self.store.outbox_len(&self.link) {
                0 => Ok(()),
                left => bail!("{left} left"),
            },
        )
        .await
    }
}

/// An invoice of the head office's ERP, as a node names it: `erp` there, `erp@hq.test`
/// anywhere else.
fn hq_invoice(application: &str) -> veche_client::protocol::discussions::ObjectRef {
    veche_client::protocol::discussions::ObjectRef {
        application: application.into(),
        object_type: "invoice".into(),
        object_id: "INV-7".into(),
    }
}

async fn set_access(admin: &Connection, users: &[&str]) -> anyhow::Result<()> {
    ask(
        admin,
        Request::SetObjectAccess {
            object: hq_invoice("erp"),
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            groups: Vec::new(),
        },
    )
    .await?;
    Ok(())
}

/// Waits until `conn` can no longer read `discussion`.
async fn loses(conn: &Connection, discussion: &str, what: &str) -> anyhow::Result<()> {
    eventually(20, what, async || match messages(conn, discussion).await {
        Err(e) if format!("{e:#}").contains("not found") => Ok(()),
        other => bail!("{other:?}"),
    })
    .await
}

async fn open_invoice(conn: &Connection, application: &str) -> anyhow::Result<DiscussionInfo> {
    discussion(
        conn,
        Request::OpenObject {
            object: hq_invoice(application),
            title: String::new(),
        },
    )
    .await
}

#[tokio::test]
async fn an_object_discussion_spans_nodes_for_the_users_its_home_allows() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    let partner = node("partner.test").await?;
    let to_branch = link(&hq, &branch).await?;
    // The partner's link carries groups, not object discussions.
    let mut narrow = scope();
    narrow.object_discussions = false;
    let to_partner = link_scoped(&hq, &partner, narrow).await?;
    hq.add_user("root", PASSWORD, true).await?;
    let (root, _) = login(&hq, "root", PASSWORD, "root-device").await?;
    let anna = user(&hq, "anna").await?;
    let boris = user(&branch, "boris").await?;
    let vera = user(&branch, "vera").await?;
    let pavel = user(&partner, "pavel").await?;
    // The head office's access list names a user of the branch, and one of the partner.
    set_access(&root, &["anna", "boris@branch.test", "pavel@partner.test"]).await?;
    let on_hq = open_invoice(&anna, "erp").await?;
    post(&anna, &on_hq.id, "a1", "Счёт выставлен").await?;

    // Boris opens the invoice of the head office from his node: the same discussion, shared
    // with the branch from here on.
    let on_branch = open_invoice(&boris, "erp@hq.test").await?;
    assert_eq!(on_branch.id, on_hq.id);
    assert_eq!(on_branch.object, Some(hq_invoice("erp@hq.test")));
    assert_eq!(on_branch.title, "invoice INV-7");
    let (b1, seq) = post(&boris, &on_hq.id, "b1", "Оплатим в пятницу").await?;
    assert_eq!(seq, 0, "a message for another home is pending");
    sees(
        &anna,
        &on_hq.id,
        &[Some("Счёт выставлен"), Some("Оплатим в пятницу")],
    )
    .await?;
    sees(&boris, &on_hq.id, &[Some("Оплатим в пятницу")]).await?;
    assert_eq!(log(&anna, &on_hq.id).await?[1].0, b1, "one message id");
    // Having posted, Boris follows it: the head office's next message reaches him live.
    post(&anna, &on_hq.id, "a2", "Спасибо").await?;
    within(20, "the head office's message", async {
        loop {
            match next_non_presence_event(&boris).await {
                Some(Event::Discussion { event }) => {
                    if let Change::MessagePosted { message } = &event.change
                        && message.text.as_deref() == Some("Спасибо")
                    {
                        assert_eq!(event.discussion, on_hq.id);
                        return Ok(());
                    }
                }
                Some(_) => {}
                None => bail!("the connection closed"),
            }
        }
    })
    .await??;

    // Vera, on the same node, is not on the list: the discussion is there, but not for her.
    let err = open_invoice(&vera, "erp@hq.test").await.unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    let err = messages(&vera, &on_hq.id).await.unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    // The partner's link does not carry object discussions, whatever the list says.
    let err = open_invoice(&pavel, "erp@hq.test").await.unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    // Nobody here can set who sees another node's object, nor name a local object that way.
    let err = ask(
        &root,
        Request::SetObjectAccess {
            object: hq_invoice("erp@branch.test"),
            users: vec!["anna".into()],
            groups: Vec::new(),
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("that node"), "{err:#}");

    // The head office takes Boris off the list: the branch no longer shows it to him, and
    // what he writes there is refused.
    set_access(&root, &["anna"]).await?;
    loses(&boris, &on_hq.id, "Boris loses the invoice").await?;
    let err = post(&boris, &on_hq.id, "b2", "А как же я?")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    let err = open_invoice(&boris, "erp@hq.test").await.unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    // Nobody at the branch may read it now: what follows is not sent there.
    post(&anna, &on_hq.id, "a3", "Без Бориса").await?;

    // Back on the list, Boris opens it again: the head office shares it anew, and the
    // branch goes on from there.
    set_access(&root, &["anna", "boris@branch.test"]).await?;
    let again = open_invoice(&boris, "erp@hq.test").await?;
    assert_eq!(again.id, on_hq.id);
    post(&boris, &on_hq.id, "b3", "Я снова здесь").await?;
    sees(
        &boris,
        &on_hq.id,
        &[
            Some("Оплатим в пятницу"),
            Some("Спасибо"),
            Some("Я снова здесь"),
        ],
    )
    .await?;
    sees(
        &anna,
        &on_hq.id,
        &[
            Some("Счёт выставлен"),
            Some("Оплатим в пятницу"),
            Some("Спасибо"),
            Some("Без Бориса"),
            Some("Я снова здесь"),
        ],
    )
    .await?;

    // The list names a group instead, Boris among its members: he keeps the invoice until
    // he leaves the group.
    let g = group(&anna, &["boris@branch.test"]).await?;
    share(&hq, &g.id, &to_branch).await?;
    ask(
        &root,
        Request::SetObjectAccess {
            object: hq_invoice("erp"),
            users: vec!["anna".into()],
            groups: vec![g.id.clone()],
        },
    )
    .await?;
    assert_eq!(open_invoice(&boris, "erp@hq.test").await?.id, on_hq.id);
    ask(
        &anna,
        Request::RemoveMember {
            discussion: g.id.clone(),
            user: "boris@branch.test".into(),
        },
    )
    .await?;
    loses(&boris, &on_hq.id, "Boris loses the invoice with the group").await?;
    ask(
        &anna,
        Request::AddMembers {
            discussion: g.id.clone(),
            users: vec!["boris@branch.test".into()],
        },
    )
    .await?;
    assert_eq!(open_invoice(&boris, "erp@hq.test").await?.id, on_hq.id);
    // An administrator may share it again where it is shared (a copy that lost its place
    // starts over), but not share it anywhere else.
    share(&hq, &on_hq.id, &to_branch).await?;
    post(&anna, &on_hq.id, "a4", "Снова вместе").await?;
    eventually(20, "the branch goes on after the share", async || {
        let texts: Vec<Option<String>> = log(&boris, &on_hq.id)
            .await?
            .into_iter()
            .map(|m| m.2)
            .collect();
        match texts.last() {
            Some(Some(t)) if t == "Снова вместе" => Ok(()),
            _ => bail!("{texts:?}"),
        }
    })
    .await?;
    let err = share(&hq, &on_hq.id, &to_partner).await.unwrap_err();
    assert!(format!("{err:#}").contains("only groups"), "{err:#}");

    // The head office narrows the link to groups only: object discussions stop travelling
    // over it, and the branch shows them to nobody.
    let mut narrower = scope();
    narrower.object_discussions = false;
    hq.admin(AdminRequest::LinkNarrow {
        link: to_branch,
        scope: narrower,
    })
    .await?;
    loses(&boris, &on_hq.id, "the branch drops the invoice").await?;
    let err = open_invoice(&boris, "erp@hq.test").await.unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
    Ok(())
}

/// The messages of [`around_a_backup`]: one before the backup, two after.
const BEFORE: [&str; 3] = ["до резервной копии", "после копии 1", "после копии 2"];

/// Which node [`around_a_backup`] backs up; its user writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Hq,
    Branch,
}

/// What [`around_a_backup`] leaves: the link, the group, and the backup.
struct Around {
    id: String,
    g: DiscussionInfo,
    backup: Backup,
}

/// Links the head office (Anna) with the branch (Boris) and shares a group of the head
/// office; the user of `side` writes [`BEFORE`] there, the first message before a backup of
/// their node, the other two after it, and both see all three.
async fn around_a_backup(
    hq: &mut TestNode,
    branch: &mut TestNode,
    side: Side,
) -> anyhow::Result<Around> {
    let id = link(hq, branch).await?;
    let anna = user(hq, "anna").await?;
    let boris = user(branch, "boris").await?;
    let g = group(&anna, &["boris@branch.test"]).await?;
    share(hq, &g.id, &id).await?;
    sees(&boris, &g.id, &[]).await?;
    let (node, login_name, reader) = match side {
        Side::Hq => (hq, "anna", &boris),
        Side::Branch => (branch, "boris", &anna),
    };
    let writer = if side == Side::Hq { &anna } else { &boris };
    post(writer, &g.id, "w0", BEFORE[0]).await?;
    sees(
        reader,
        &g.id,
        &BEFORE[..1].iter().copied().map(Some).collect::<Vec<_>>(),
    )
    .await?;
    let backup = Backup::take(node).await?;
    let (writer, _) = login(node, login_name, PASSWORD, &format!("{login_name}-device")).await?;
    post(&writer, &g.id, "w1", BEFORE[1]).await?;
    post(&writer, &g.id, "w2", BEFORE[2]).await?;
    sees(reader, &g.id, &BEFORE.map(Some)).await?;
    Ok(Around { id, g, backup })
}

/// A copy of a node's data folder, taken while it was stopped, as a nightly backup is.
struct Backup {
    _dir: tempfile::TempDir,
    copy: std::path::PathBuf,
}

impl Backup {
    /// Stops `node`, copies its data folder, and starts it again.
    async fn take(node: &mut TestNode) -> anyhow::Result<Self> {
        node.stop().await;
        let dir = tempfile::tempdir()?;
        let copy = dir.path().join("data");
        copy_folder(node.data_dir(), &copy)?;
        node.restart().await?;
        Ok(Self { _dir: dir, copy })
    }

    /// Stops `node`, puts the copy in place of its data folder, and starts it again.
    async fn restore(&self, node: &mut TestNode) -> anyhow::Result<()> {
        node.stop().await;
        std::fs::remove_dir_all(node.data_dir())?;
        copy_folder(&self.copy, node.data_dir())?;
        node.restart().await?;
        Ok(())
    }
}

/// Copies the folder `from` to `to` (which must not exist), as a backup does.
fn copy_folder(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_folder(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_node_restored_from_a_backup_loses_nothing_it_writes_afterwards_and_catches_up()
-> anyhow::Result<()> {
    let mut hq = node("hq.test").await?;
    let mut branch = node("branch.test").await?;
    // The branch is backed up, then goes on: the head office stores two more of its items.
    let Around { id, g, backup } = around_a_backup(&mut hq, &mut branch, Side::Branch).await?;
    let before = BEFORE.map(Some);

    // The branch's disk is lost and the backup restored while the head office is out of
    // reach: it numbers its next items as it numbered those after the backup, numbers the
    // head office has taken already, and more of them (so numbers alone do not tell).
    hq.stop().await;
    backup.restore(&mut branch).await?;
    let (boris, _) = login(&branch, "boris", PASSWORD, "boris-device").await?;
    let restored = [
        "после восстановления 1",
        "после восстановления 2",
        "после восстановления 3",
    ];
    for (n, text) in restored.iter().enumerate() {
        post(&boris, &g.id, &format!("b{}", n + 3), text).await?;
    }
    hq.restart().await?;
    let (anna, _) = login(&hq, "anna", PASSWORD, "anna-device").await?;
    let mut after = before.to_vec();
    after.extend(restored.map(Some));
    sees(&anna, &g.id, &after).await?;
    // The other way, the head office cannot resend what the branch lost since the backup:
    // it sends the group's state again, and the branch's copy goes on from there.
    post(&anna, &g.id, "a1", "головной офис снова слышен").await?;
    eventually(20, "the branch hears the head office again", async || {
        let texts: Vec<Option<String>> =
            log(&boris, &g.id).await?.into_iter().map(|m| m.2).collect();
        let first = texts.first().cloned().flatten();
        let last = texts.last().cloned().flatten();
        if first.as_deref() == Some("до резервной копии")
            && last.as_deref() == Some("головной офис снова слышен")
        {
            Ok(())
        } else {
            bail!("{texts:?}")
        }
    })
    .await?;
    assert_eq!(link_state(&hq, &id).await?.stalled, None);
    // The group is whole at the head office, each message once.
    after.push(Some("головной офис снова слышен"));
    sees(&anna, &g.id, &after).await?;
    Ok(())
}

#[tokio::test]
async fn a_home_restored_from_a_backup_goes_on_after_its_replicas() -> anyhow::Result<()> {
    let mut hq = node("hq.test").await?;
    let mut branch = node("branch.test").await?;
    // The head office is backed up, then goes on: the branch takes two more entries of the
    // group's log.
    let Around { g, backup, .. } = around_a_backup(&mut hq, &mut branch, Side::Hq).await?;
    let before = BEFORE.map(Some);
    let (boris, _) = login(&branch, "boris", PASSWORD, "boris-device").await?;

    // The head office is restored: its log of the group restarts at numbers the branch
    // holds. It asks the branch where it is, and goes on after it.
    backup.restore(&mut hq).await?;
    let (anna, _) = login(&hq, "anna", PASSWORD, "anna-device").await?;
    ask(
        &anna,
        Request::SetTitle {
            discussion: g.id.clone(),
            title: "После восстановления".into(),
        },
    )
    .await?;
    eventually(20, "the branch follows the restored home", async || {
        let d = discussion(
            &boris,
            Request::GetDiscussion {
                discussion: g.id.clone(),
            },
        )
        .await?;
        if d.title == "После восстановления" {
            Ok(())
        } else {
            bail!("{}", d.title)
        }
    })
    .await?;
    post(&anna, &g.id, "a3", "снова вместе").await?;
    let mut after = before.to_vec();
    after.push(Some("снова вместе"));
    sees(&boris, &g.id, &after).await?;
    Ok(())
}

/// Issue 29: an offer replayed to a third node is signed there, but its offerer confirmed
/// another node's grant and never lets the third in. The link shows pending there, ends once
/// the confirmation window passes (the node's clock is moved, not waited for), and its users
/// are told that what they wrote over it is not delivered.
#[tokio::test]
async fn a_replayed_offer_stays_pending_then_ends_and_tells_its_users() -> anyhow::Result<()> {
    let hq = node("hq.test").await?;
    let branch = node("branch.test").await?;
    let clock = veche_base::ManualClock::starting_now();
    let stranger = node_with_clock("stranger.test", clock.clone()).await?;
    hq.add_user("anna", PASSWORD, false).await?;

    let (text, _) = offer(&hq).await?;
    let (grant, accepted) = accept(&branch, &text).await?;
    assert_eq!(accepted.state, "pending");
    hq.admin(AdminRequest::LinkConfirm { grant }).await?;
    let id = accepted.link.clone();
    eventually(15, "the branch's link is confirmed", async || {
        let there = link_state(&branch, &id).await?;
        if there.state == "active" && there.connected {
            Ok(())
        } else {
            bail!("{there:?}")
        }
    })
    .await?;

    // The same offer, replayed to the stranger: signed there, pending.
    let (_, replayed) = accept(&stranger, &text).await?;
    assert_eq!(replayed.state, "pending");
    let sveta = user(&stranger, "sveta").await?;
    let dialog = open_dialog(&sveta, "anna@hq.test").await?;
    let (lost, seq) = post(&sveta, &dialog.id, "s1", "Здравствуйте").await?;
    assert_eq!(seq, 0, "pending at its home");
    let seen = link_state(&stranger, &replayed.link).await?;
    assert_eq!(seen.state, "pending", "{seen:?}");
    assert!(!seen.connected, "{seen:?}");
    assert!(seen.queued > 0, "{seen:?}");

    clock.advance(veche_federation::link::CONFIRM_WITHIN + std::time::Duration::from_secs(1));
    let told = not_delivered(&sveta, &dialog.id, 2).await?;
    assert!(
        told.iter()
            .any(|(m, r)| m.as_deref() == Some(lost.as_str()) && r.contains("never confirmed")),
        "{told:?}"
    );
    let ended = link_state(&stranger, &replayed.link).await?;
    assert_eq!(ended.state, "ended", "{ended:?}");
    assert!(
        ended
            .ended_reason
            .as_deref()
            .is_some_and(|r| r.contains("never confirmed")),
        "{ended:?}"
    );
    // Sent again, the message gets the same answer.
    let err = post(&sveta, &dialog.id, "s1", "Здравствуйте")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("never confirmed"), "{err:#}");
    // The branch's link, confirmed, goes on.
    assert_eq!(link_state(&branch, &id).await?.state, "active");
    Ok(())
}
