use std::sync::Arc;

use veche_client::protocol::discussions::{Action, Change, Cursor, DiscussionKind, ObjectRef};
use veche_client::protocol::{ErrorCode, Event, Reply, Request};
use veche_node::test_utils::TestNode;

use crate::support::{
    PASSWORD, ask, connect, discussion, event_matching, login, message, next_discussion_event,
    no_event, post, subscribe, user, within,
};

fn invoice(id: &str) -> ObjectRef {
    ObjectRef {
        application: "erp".into(),
        object_type: "invoice".into(),
        object_id: id.into(),
    }
}

async fn admin(node: &TestNode) -> anyhow::Result<veche_client::Connection> {
    node.add_user("root", PASSWORD, true).await?;
    Ok(login(node, "root", PASSWORD, "root-device").await?.0)
}

#[tokio::test]
async fn concurrent_opens_of_one_dialog_give_one_discussion() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("anna", PASSWORD, false).await?;
    node.add_user("boris", PASSWORD, false).await?;
    let mut conns = Vec::new();
    for i in 0..20 {
        let (me, other) = if i % 2 == 0 {
            ("anna", "boris")
        } else {
            ("boris", "anna")
        };
        let (conn, _) = login(&node, me, PASSWORD, &format!("d{i}")).await?;
        conns.push((Arc::new(conn), other));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(conns.len()));
    let mut tasks = Vec::new();
    for (conn, other) in conns {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            discussion(&conn, Request::OpenDialog { with: other.into() }).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let d = t.await??;
        assert_eq!(d.kind, DiscussionKind::Dialog);
        assert_eq!(d.members.len(), 2);
        ids.insert(d.id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().unwrap_or_default();
    assert!(
        id.ends_with("@test.local"),
        "discussion ids carry the home node: {id}"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_opens_of_one_object_give_one_discussion() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let root = admin(&node).await?;
    let mut logins = Vec::new();
    for i in 0..20 {
        let name = format!("clerk{i}");
        node.add_user(&name, PASSWORD, false).await?;
        logins.push(name);
    }
    ask(
        &root,
        Request::SetObjectAccess {
            object: invoice("INV-1"),
            users: logins.clone(),
            groups: vec![],
        },
    )
    .await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(logins.len()));
    let mut tasks = Vec::new();
    for name in logins {
        let (conn, _) = login(&node, &name, PASSWORD, "d").await?;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            discussion(
                &conn,
                Request::OpenObject {
                    object: invoice("INV-1"),
                    title: "Счёт INV-1".into(),
                },
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let d = t.await??;
        assert_eq!(d.object, Some(invoice("INV-1")));
        ids.insert(d.id);
    }
    assert_eq!(ids.len(), 1);
    Ok(())
}

#[tokio::test]
async fn messages_edits_reactions_deletes_and_read_state() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let owner = user(&node, "olga").await?;
    let member = user(&node, "petr").await?;
    let group = discussion(
        &owner,
        Request::CreateGroup {
            title: "Закупки :package:".into(),
            members: vec!["petr".into()],
        },
    )
    .await?;
    assert_eq!(group.title, "Закупки 📦");
    // created + members_added
    assert_eq!(next_discussion_event(&member).await?.seq, 1);
    assert_eq!(next_discussion_event(&member).await?.seq, 2);

    let (msg, seq) = post(&owner, &group.id, "c1", "@petr посмотри счёт :thumbsup:").await?;
    let event = next_discussion_event(&member).await?;
    assert_eq!(event.seq, seq);
    let Change::MessagePosted { message } = event.change else {
        anyhow::bail!("expected a message")
    };
    assert_eq!(message.text.as_deref(), Some("@petr посмотри счёт 👍"));
    assert_eq!(message.mentions, vec!["petr@test.local".to_owned()]);

    let Reply::Discussions { discussions } = ask(&member, Request::ListDiscussions).await? else {
        anyhow::bail!("expected the list");
    };
    assert_eq!((discussions[0].unread, discussions[0].mentions), (1, 1));
    ask(
        &member,
        Request::MarkRead {
            discussion: group.id.clone(),
            seq,
        },
    )
    .await?;
    let Reply::Discussions { discussions } = ask(&member, Request::ListDiscussions).await? else {
        anyhow::bail!("expected the list");
    };
    assert_eq!(
        (
            discussions[0].unread,
            discussions[0].mentions,
            discussions[0].read_seq
        ),
        (0, 0, seq)
    );

    // Only the author edits; history of versions is kept.
    let e = member
        .request(Request::Edit {
            discussion: group.id.clone(),
            message_id: msg.clone(),
            text: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    ask(
        &owner,
        Request::Edit {
            discussion: group.id.clone(),
            message_id: msg.clone(),
            text: "исправлено".into(),
        },
    )
    .await?;
    let event = next_discussion_event(&member).await?;
    assert!(
        matches!(event.change, Change::MessageEdited { ref text, version: 2, .. } if text.as_deref() == Some("исправлено"))
    );
    let Reply::Versions { versions } = ask(
        &member,
        Request::EditHistory {
            discussion: group.id.clone(),
            message_id: msg.clone(),
        },
    )
    .await?
    else {
        anyhow::bail!("expected versions");
    };
    assert_eq!(
        versions.iter().map(|v| v.text.as_str()).collect::<Vec<_>>(),
        ["@petr посмотри счёт 👍", "исправлено"]
    );

    // Reactions.
    ask(
        &member,
        Request::React {
            discussion: group.id.clone(),
            message_id: msg.clone(),
            emoji: ":heart:".into(),
            add: true,
        },
    )
    .await?;
    let event =
        event_matching(&owner, |e| matches!(e.change, Change::ReactionAdded { .. })).await?;
    assert!(
        matches!(event.change, Change::ReactionAdded { ref emoji, .. } if emoji == "❤️"),
        "{event:?}"
    );
    let e = member
        .request(Request::React {
            discussion: group.id.clone(),
            message_id: msg.clone(),
            emoji: "nope".into(),
            add: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));

    // A member cannot delete the owner's message; the owner can delete a member's.
    let (petrs, _) = post(&member, &group.id, "p1", "моё сообщение").await?;
    let e = member
        .request(Request::Delete {
            discussion: group.id.clone(),
            message_id: msg.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    ask(
        &owner,
        Request::Delete {
            discussion: group.id.clone(),
            message_id: petrs.clone(),
        },
    )
    .await?;

    // History shows tombstones, with the body purged everywhere.
    let Reply::Events { events, more } = ask(
        &member,
        Request::History {
            discussion: group.id.clone(),
            before: None,
            limit: 100,
        },
    )
    .await?
    else {
        anyhow::bail!("expected events");
    };
    assert!(!more);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
    let posted = events
        .iter()
        .find_map(|e| match &e.change {
            Change::MessagePosted { message } if message.id == petrs => Some(message.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("the deleted message is still in history as a tombstone"))?;
    assert!(posted.deleted && posted.text.is_none());
    let Reply::Versions { versions } = ask(
        &member,
        Request::EditHistory {
            discussion: group.id.clone(),
            message_id: petrs,
        },
    )
    .await?
    else {
        anyhow::bail!("expected versions");
    };
    assert!(versions.is_empty());

    // Title edits are events like any other; only owners may.
    let e = member
        .request(Request::SetTitle {
            discussion: group.id.clone(),
            title: "Моё".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    ask(
        &owner,
        Request::SetTitle {
            discussion: group.id.clone(),
            title: "Закупки 2026".into(),
        },
    )
    .await?;
    loop {
        let event = next_discussion_event(&member).await?;
        if let Change::TitleChanged { title } = event.change {
            assert_eq!(title, "Закупки 2026");
            break;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_resent_message_is_stored_once_and_a_reused_id_conflicts() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    let a = user(&node, "alla").await?;
    let b = user(&node, "bogdan").await?;
    let dialog = discussion(
        &a,
        Request::OpenDialog {
            with: "bogdan".into(),
        },
    )
    .await?;
    next_discussion_event(&b).await?; // created

    let first = post(&a, &dialog.id, "cm-1", "Привет").await?;
    let again = post(&a, &dialog.id, "cm-1", "Привет").await?;
    assert_eq!(first, again);
    next_discussion_event(&b).await?;
    no_event(&b).await?;

    let e = a
        .request(Request::Send(message(&dialog.id, "cm-1", "Другой текст")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));

    // Weeks later, after a restart, the same resend still returns the original.
    drop((a, b));
    node.restart().await?;
    let (a, _) = login(&node, "alla", PASSWORD, "alla-device").await?;
    assert_eq!(post(&a, &dialog.id, "cm-1", "Привет").await?, first);
    // Another device may use the same client id for its own message.
    let (a2, _) = login(&node, "alla", PASSWORD, "alla-phone").await?;
    let other = post(&a2, &dialog.id, "cm-1", "Привет").await?;
    assert_ne!(other.0, first.0);
    Ok(())
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let writer = user(&node, "vera").await?;
    let (reader, reader_login) = {
        node.add_user("gleb", PASSWORD, false).await?;
        login(&node, "gleb", PASSWORD, "gleb-laptop").await?
    };
    let group = discussion(
        &writer,
        Request::CreateGroup {
            title: "Склад".into(),
            members: vec!["gleb".into()],
        },
    )
    .await?;
    let mut cursor = 0;
    for _ in 0..2 {
        cursor = next_discussion_event(&reader).await?.seq;
    }
    drop(reader);
    for i in 0..5 {
        post(
            &writer,
            &group.id,
            &format!("w{i}"),
            &format!("сообщение {i}"),
        )
        .await?;
    }
    let reader = connect(&node).await?;
    reader.resume(&reader_login.token, "gleb-laptop").await?;
    let Reply::Events { events, more } = ask(
        &reader,
        Request::Sync {
            cursors: vec![Cursor {
                discussion: group.id.clone(),
                seq: cursor,
            }],
        },
    )
    .await?
    else {
        anyhow::bail!("expected events");
    };
    assert!(!more);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
    // Nothing is repeated live, and new messages arrive live.
    no_event(&reader).await?;
    post(&writer, &group.id, "w5", "ещё").await?;
    assert_eq!(next_discussion_event(&reader).await?.seq, 8);

    // History pages backwards.
    let Reply::Events { events, more } = ask(
        &reader,
        Request::History {
            discussion: group.id.clone(),
            before: Some(8),
            limit: 3,
        },
    )
    .await?
    else {
        anyhow::bail!("expected events");
    };
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert!(more);
    Ok(())
}

#[tokio::test]
async fn buttons_reach_the_author_as_events() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let bot = user(&node, "bot").await?;
    let human = user(&node, "ivan").await?;
    let dialog = discussion(
        &bot,
        Request::OpenDialog {
            with: "ivan".into(),
        },
    )
    .await?;
    let mut msg = message(&dialog.id, "b1", "Согласовать счёт?");
    msg.data = Some(serde_json_value());
    msg.actions = vec![Action {
        id: "approve".into(),
        label: "Согласовать".into(),
    }];
    let Reply::Sent { message_id, .. } = ask(&bot, Request::Send(msg)).await? else {
        anyhow::bail!("sent")
    };
    ask(
        &human,
        Request::Click {
            discussion: dialog.id.clone(),
            message_id: message_id.clone(),
            action_id: "approve".into(),
        },
    )
    .await?;
    loop {
        match within(10, "click", bot.next_event()).await? {
            Some(Event::ActionClicked {
                action_id, user, ..
            }) => {
                assert_eq!(
                    (action_id.as_str(), user.as_str()),
                    ("approve", "ivan@test.local")
                );
                break;
            }
            Some(_) => continue,
            None => anyhow::bail!("event stream ended"),
        }
    }
    let e = human
        .request(Request::Click {
            discussion: dialog.id,
            message_id,
            action_id: "delete-all".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    Ok(())
}

fn serde_json_value() -> serde_json::Value {
    serde_json::json!({ "invoice": "INV-7", "amount": 1250.5, "currency": "RUB" })
}

#[tokio::test]
async fn limits_are_enforced_with_clear_errors() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let a = user(&node, "alik").await?;
    node.add_user("beta", PASSWORD, false).await?;
    let dialog = discussion(
        &a,
        Request::OpenDialog {
            with: "beta".into(),
        },
    )
    .await?;
    let e = a
        .request(Request::Send(message(&dialog.id, "x", &"я".repeat(9000))))
        .await
        .unwrap_err();
    let veche_client::RequestError::Server(body) = e else {
        anyhow::bail!("server error expected")
    };
    assert_eq!(body.code, ErrorCode::BadRequest);
    assert!(body.message.contains("16384"), "{}", body.message);
    let e = a
        .request(Request::Send(message(&dialog.id, "y", "   ")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    let e = a
        .request(Request::OpenDialog {
            with: "alik".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    let e = a
        .request(Request::OpenDialog {
            with: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    Ok(())
}
