//! Federation: real nodes on loopback, each with its own data folder, linked over libp2p.

use anyhow::{Context, bail};
use veche_client::protocol::admin::{AdminReply, AdminRequest, LinkInfo, LinkScope};
use veche_node::test_utils::{TestNode, test_config};

use crate::support::{eventually, veche};

async fn node(name: &str) -> anyhow::Result<TestNode> {
    let mut config = test_config();
    config.node.name = Some(name.to_owned());
    Ok(TestNode::spawn_with(config).await?)
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
    match node
        .admin(AdminRequest::LinkOffer {
            relationship: "branch".into(),
            days: 30,
            scope: scope(),
            organisation: "Head office".into(),
            contact: "it@hq".into(),
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
    let (text, _) = offer(a).await?;
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

    // Accept: countersigned by branch, active there at once.
    let (grant, accepted) = accept(&branch, &text).await?;
    assert_eq!(accepted.state, "active");
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
    assert!(format!("{again:#}").contains("no open offer"), "{again:#}");
    let id = confirmed.link.clone();
    eventually(15, "connected on both sides", async || {
        let (a, b) = (link_state(&hq, &id).await?, link_state(&branch, &id).await?);
        if a.connected && b.connected {
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
