use std::sync::Arc;

use veche_client::protocol::discussions::{Action, Change, Cursor, DiscussionKind, ObjectRef};
use veche_client::protocol::{ErrorCode, Event, Reply, Request};
use veche_node::test_utils::TestNode;

use crate::support::{
    PASSWORD, ask, connect, discussion, event_matching, login, message, next_discussion_event,
    no_event, post, quiet_until_marker, subscribe, user, within,
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
    quiet_until_marker(&b, &a, &dialog.id).await?;

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

/// How a principal should see a discussion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sees {
    /// Not at all: every path says "not found".
    Nothing,
    /// Reads and posts; deletes others' messages only as `owner`.
    Member { owner: bool },
}

#[tokio::test]
async fn access_matrix() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let root = admin(&node).await?;
    let own = user(&node, "own").await?;
    let mem = user(&node, "mem").await?;
    let non = user(&node, "non").await?;
    let obj = user(&node, "obj").await?;
    let clerk = user(&node, "clerk").await?;

    let group = discussion(
        &own,
        Request::CreateGroup {
            title: "G".into(),
            members: vec!["mem".into()],
        },
    )
    .await?;
    let dialog = discussion(&own, Request::OpenDialog { with: "mem".into() }).await?;
    ask(
        &root,
        Request::SetObjectAccess {
            object: invoice("INV-9"),
            users: vec!["obj".into(), "clerk".into()],
            groups: vec![],
        },
    )
    .await?;
    let object = discussion(
        &obj,
        Request::OpenObject {
            object: invoice("INV-9"),
            title: String::new(),
        },
    )
    .await?;
    // Who posts messages in each discussion: someone other than the principal being checked.
    let insiders = [(&group.id, &mem), (&dialog.id, &mem), (&object.id, &clerk)];
    let insider_for = |name: &str, i: usize| -> &veche_client::Connection {
        match (name, i) {
            ("mem", 0 | 1) => &own,
            _ => insiders[i].1,
        }
    };

    use Sees::*;
    let matrix: [(&str, &veche_client::Connection, [Sees; 3]); 5] = [
        (
            "own",
            &own,
            [Member { owner: true }, Member { owner: false }, Nothing],
        ),
        (
            "mem",
            &mem,
            [Member { owner: false }, Member { owner: false }, Nothing],
        ),
        ("non", &non, [Nothing, Nothing, Nothing]),
        ("obj", &obj, [Nothing, Nothing, Member { owner: false }]),
        // Node administrators get no reading rights from their role.
        ("root", &root, [Nothing, Nothing, Nothing]),
    ];

    // Live events: every principal watches the object discussion if it may.
    for (name, conn, sees) in &matrix {
        let watch = conn
            .request(Request::Watch {
                discussion: object.id.clone(),
                watch: true,
            })
            .await;
        match sees[2] {
            Nothing => assert_eq!(
                watch.unwrap_err().code(),
                Some(ErrorCode::NotFound),
                "{name} watch"
            ),
            Member { .. } => assert!(watch.is_ok(), "{name} watch"),
        }
    }
    for (i, (d, insider)) in insiders.iter().enumerate() {
        let text = format!("live {i}");
        post(insider, d, &format!("live-{i}"), &text).await?;
        for (name, conn, sees) in &matrix {
            if sees[i] != Nothing {
                let want = text.clone();
                event_matching(conn, |e| matches!(&e.change, Change::MessagePosted { message } if message.text.as_deref() == Some(want.as_str())))
                    .await
                    .map_err(|e| anyhow::anyhow!("{name} did not receive {text:?} live: {e}"))?;
            }
        }
    }
    // Delivery happens in one pass after each commit, so by now outsiders would have it.
    for (name, conn, sees) in &matrix {
        while let Ok(Some(event)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), conn.next_event()).await
        {
            if let Event::Discussion { event } = &event {
                let i = [&group.id, &dialog.id, &object.id]
                    .iter()
                    .position(|d| **d == event.discussion);
                if let Some(i) = i {
                    assert_ne!(
                        sees[i], Nothing,
                        "{name} received an event of a discussion it cannot see"
                    );
                }
            }
        }
    }

    for (name, conn, sees) in &matrix {
        for (i, (d, _)) in insiders.iter().enumerate() {
            let ctx = format!("{name} in discussion {i}");
            let insider = insider_for(name, i);
            let (seed, _) = post(insider, d, &format!("seed-{name}-{i}"), "seed").await?;
            let history = conn
                .request(Request::History {
                    discussion: (*d).clone(),
                    before: None,
                    limit: 10,
                })
                .await;
            let get = conn
                .request(Request::GetDiscussion {
                    discussion: (*d).clone(),
                })
                .await;
            let send = conn
                .request(Request::Send(message(d, &format!("p-{name}-{i}"), "hello")))
                .await;
            let react = conn
                .request(Request::React {
                    discussion: (*d).clone(),
                    message_id: seed.clone(),
                    emoji: "👍".into(),
                    add: true,
                })
                .await;
            let edit = conn
                .request(Request::Edit {
                    discussion: (*d).clone(),
                    message_id: seed.clone(),
                    text: "mine now".into(),
                })
                .await;
            let delete = conn
                .request(Request::Delete {
                    discussion: (*d).clone(),
                    message_id: seed.clone(),
                })
                .await;
            let sync = conn
                .request(Request::Sync {
                    cursors: vec![Cursor {
                        discussion: (*d).clone(),
                        seq: 0,
                    }],
                })
                .await;
            let versions = conn
                .request(Request::EditHistory {
                    discussion: (*d).clone(),
                    message_id: seed.clone(),
                })
                .await;
            let read = conn
                .request(Request::MarkRead {
                    discussion: (*d).clone(),
                    seq: 1,
                })
                .await;
            match sees[i] {
                Nothing => {
                    for (op, r) in [
                        ("history", &history),
                        ("get", &get),
                        ("send", &send),
                        ("react", &react),
                        ("edit", &edit),
                        ("delete", &delete),
                        ("edit history", &versions),
                        ("mark read", &read),
                    ] {
                        let code = r.as_ref().err().and_then(|e| e.code());
                        assert_eq!(
                            code,
                            Some(ErrorCode::NotFound),
                            "{ctx}: {op} must look like a missing discussion"
                        );
                    }
                    assert!(
                        matches!(sync, Ok(Reply::Events { ref events, .. }) if events.is_empty()),
                        "{ctx}: sync"
                    );
                }
                Member { owner } => {
                    for (op, r) in [
                        ("history", &history),
                        ("get", &get),
                        ("send", &send),
                        ("react", &react),
                        ("edit history", &versions),
                        ("mark read", &read),
                    ] {
                        assert!(r.is_ok(), "{ctx}: {op} failed: {r:?}");
                    }
                    assert_eq!(
                        edit.unwrap_err().code(),
                        Some(ErrorCode::Forbidden),
                        "{ctx}: edit of another's message"
                    );
                    match owner {
                        true => assert!(delete.is_ok(), "{ctx}: owner deletes"),
                        false => assert_eq!(
                            delete.unwrap_err().code(),
                            Some(ErrorCode::Forbidden),
                            "{ctx}: delete"
                        ),
                    }
                    assert!(
                        matches!(sync, Ok(Reply::Events { ref events, .. }) if !events.is_empty()),
                        "{ctx}: sync"
                    );
                }
            }
        }
        // The list: what one may see (and, for objects, has posted in), nothing else.
        let Reply::Discussions { discussions } = ask(conn, Request::ListDiscussions).await? else {
            anyhow::bail!("expected the list");
        };
        for (i, d) in [&group.id, &dialog.id, &object.id].iter().enumerate() {
            let listed = discussions.iter().any(|x| x.id == **d);
            assert_eq!(
                listed,
                sees[i] != Nothing,
                "{name}: discussion {i} in the list"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn losing_access_to_an_object_takes_effect_at_once() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let root = admin(&node).await?;
    let stays = user(&node, "stays").await?;
    let leaves = user(&node, "leaves").await?;
    // Access through a group as well as directly.
    let team = discussion(
        &root,
        Request::CreateGroup {
            title: "Бухгалтерия".into(),
            members: vec!["leaves".into()],
        },
    )
    .await?;
    ask(
        &root,
        Request::SetObjectAccess {
            object: invoice("INV-5"),
            users: vec!["stays".into()],
            groups: vec![team.id.clone()],
        },
    )
    .await?;
    let d = discussion(
        &leaves,
        Request::OpenObject {
            object: invoice("INV-5"),
            title: String::new(),
        },
    )
    .await?;
    post(&leaves, &d.id, "l1", "я тут").await?; // posting follows it
    ask(
        &stays,
        Request::Follow {
            discussion: d.id.clone(),
            follow: true,
        },
    )
    .await?;
    post(&stays, &d.id, "s1", "и я").await?;
    event_matching(&leaves, |e| e.seq == 3).await?;

    ask(
        &root,
        Request::SetObjectAccess {
            object: invoice("INV-5"),
            users: vec!["stays".into()],
            groups: vec![],
        },
    )
    .await?;
    loop {
        match within(5, "discussion_removed", leaves.next_event()).await? {
            Some(Event::DiscussionRemoved { discussion }) => {
                assert_eq!(discussion, d.id);
                break;
            }
            Some(_) => continue,
            None => anyhow::bail!("event stream ended"),
        }
    }
    post(&stays, &d.id, "s2", "секрет").await?;
    let canary = discussion(
        &stays,
        Request::OpenDialog {
            with: "leaves".into(),
        },
    )
    .await?;
    event_matching(&leaves, |e| e.discussion == canary.id).await?; // created
    quiet_until_marker(&leaves, &stays, &canary.id).await?;
    let e = leaves
        .request(Request::History {
            discussion: d.id.clone(),
            before: None,
            limit: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let Reply::Discussions { discussions } = ask(&leaves, Request::ListDiscussions).await? else {
        anyhow::bail!("list")
    };
    assert!(discussions.iter().all(|x| x.id != d.id));
    Ok(())
}

/// The list is built from two statements for all discussions; each entry must be exactly
/// what asking for that one discussion answers, and hold nothing the caller may not read.
#[tokio::test]
async fn the_discussion_list_agrees_with_each_discussion() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let root = admin(&node).await?;
    let olga = user(&node, "olga").await?;
    let petr = user(&node, "petr").await?;
    let ivan = user(&node, "ivan").await?;
    for id in ["INV-1", "INV-2"] {
        ask(
            &root,
            Request::SetObjectAccess {
                object: invoice(id),
                users: vec!["olga".into(), "petr".into()],
                groups: vec![],
            },
        )
        .await?;
    }
    let mine = discussion(
        &olga,
        Request::CreateGroup {
            title: "Закупки".into(),
            members: vec!["petr".into(), "ivan".into()],
        },
    )
    .await?;
    let dialog = discussion(
        &olga,
        Request::OpenDialog {
            with: "petr".into(),
        },
    )
    .await?;
    let his = discussion(
        &ivan,
        Request::CreateGroup {
            title: "Склад".into(),
            members: vec!["olga".into()],
        },
    )
    .await?;
    let mut objects = Vec::new();
    for id in ["INV-1", "INV-2"] {
        let d = discussion(
            &olga,
            Request::OpenObject {
                object: invoice(id),
                title: format!("Счёт {id}"),
            },
        )
        .await?;
        post(&olga, &d.id, &format!("o-{id}"), "смотрю").await?; // posting follows it
        post(&petr, &d.id, &format!("p-{id}"), "@olga проверь").await?;
        objects.push(d);
    }
    post(&petr, &mine.id, "p1", "@olga счёт готов").await?;
    let (_, read_to) = post(&ivan, &mine.id, "i1", "и накладная").await?;
    post(&ivan, &mine.id, "i2", "@olga @petr срочно").await?;
    post(&petr, &dialog.id, "p2", "привет").await?;
    let (gone, _) = post(&ivan, &his.id, "i3", "удалю").await?;
    post(&ivan, &his.id, "i4", "останется").await?;
    ask(
        &ivan,
        Request::Delete {
            discussion: his.id.clone(),
            message_id: gone,
        },
    )
    .await?;
    ask(
        &olga,
        Request::MarkRead {
            discussion: mine.id.clone(),
            seq: read_to,
        },
    )
    .await?;
    // Olga still follows INV-2 but may no longer read it.
    ask(
        &root,
        Request::SetObjectAccess {
            object: invoice("INV-2"),
            users: vec!["petr".into()],
            groups: vec![],
        },
    )
    .await?;

    let Reply::Discussions { discussions } = ask(&olga, Request::ListDiscussions).await? else {
        anyhow::bail!("expected the list");
    };
    let mut ids: Vec<&str> = discussions.iter().map(|d| d.id.as_str()).collect();
    for pair in discussions.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            (a.last_activity_at.0, &b.id) >= (b.last_activity_at.0, &a.id),
            "most recent activity first, then by id: {ids:?}"
        );
    }
    ids.sort_unstable();
    let mut expected = [
        his.id.as_str(),
        dialog.id.as_str(),
        mine.id.as_str(),
        objects[0].id.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected, "every discussion but the object she lost");
    let counts = |id: &str| {
        discussions.iter().find(|d| d.id == id).map(|d| {
            (
                d.unread,
                d.mentions,
                d.read_seq,
                d.members.len(),
                d.following,
            )
        })
    };
    assert_eq!(
        counts(&his.id),
        Some((1, 0, 0, 2, true)),
        "a deleted message is not unread"
    );
    assert_eq!(counts(&dialog.id), Some((1, 0, 0, 2, true)));
    assert_eq!(counts(&mine.id), Some((1, 1, read_to, 3, true)));
    assert_eq!(
        counts(&objects[0].id).map(|c| (c.1, c.3, c.4)),
        Some((1, 0, true))
    );
    for listed in &discussions {
        let alone = discussion(
            &olga,
            Request::GetDiscussion {
                discussion: listed.id.clone(),
            },
        )
        .await?;
        assert_eq!(&alone, listed);
    }
    Ok(())
}

#[tokio::test]
async fn messages_sent_across_random_connection_kills_arrive_exactly_once_in_order()
-> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let _guard = subscribe();
    for seed in 0..3u64 {
        let node = TestNode::spawn().await?;
        node.add_user("sender", PASSWORD, false).await?;
        let receiver = Arc::new(user(&node, "receiver").await?);
        let (first, token) = login(&node, "sender", PASSWORD, "phone").await?;
        let dialog = discussion(
            &first,
            Request::OpenDialog {
                with: "receiver".into(),
            },
        )
        .await?;
        drop(first);
        next_discussion_event(&receiver).await?; // created

        let n = 40;
        let texts: Vec<String> = (0..n).map(|i| format!("message {i}")).collect();
        let collector = {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < n {
                    let e = next_discussion_event(&receiver).await?;
                    if let Change::MessagePosted { message } = e.change {
                        got.push((e.seq, message.text.unwrap_or_default()));
                    }
                }
                anyhow::Ok(got)
            })
        };

        // The client's own queue: what has not been acknowledged is sent again, same id.
        let mut queue: std::collections::VecDeque<(String, String)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("s{seed}-m{i}"), t.clone()))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut reconnects = 0;
        while !queue.is_empty() {
            reconnects += 1;
            anyhow::ensure!(reconnects < 500, "no progress");
            // A reconnect may be refused while killed connections still count against the
            // address; like a real client, try again.
            let Ok(conn) = connect(&node).await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let conn = Arc::new(conn);
            if conn.resume(&token.token, "phone").await.is_err() {
                continue;
            }
            while let Some((id, text)) = queue.front().cloned() {
                let request = Request::Send(message(&dialog.id, &id, &text));
                let roll: f64 = rng.random();
                let answer = if roll < 0.1 {
                    // Killed before sending.
                    conn.quic().close(0u32.into(), b"kill");
                    break;
                } else if roll < 0.3 {
                    // Killed while the request is in flight: it may or may not have been stored.
                    let pending = tokio::spawn({
                        let conn = conn.clone();
                        async move { conn.request(request).await }
                    });
                    tokio::time::sleep(std::time::Duration::from_micros(rng.random_range(0..3000)))
                        .await;
                    conn.quic().close(0u32.into(), b"kill");
                    pending.await?
                } else {
                    conn.request(request).await
                };
                match answer {
                    Ok(Reply::Sent { .. }) => {
                        queue.pop_front();
                    }
                    Ok(other) => anyhow::bail!("unexpected reply {other:?}"),
                    Err(_) => break,
                }
            }
        }

        let got = within(30, "receiver gets every message", collector).await???;
        let got_texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            got_texts,
            texts.iter().map(String::as_str).collect::<Vec<_>>(),
            "seed {seed}: live, once, in order"
        );
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "seed {seed}: sequence order"
        );
        let (marker_sender, _) = login(&node, "sender", PASSWORD, "marker").await?;
        quiet_until_marker(&receiver, &marker_sender, &dialog.id).await?;

        let Reply::Events { events, .. } = ask(
            &receiver,
            Request::History {
                discussion: dialog.id.clone(),
                before: None,
                limit: 500,
            },
        )
        .await?
        else {
            anyhow::bail!("expected events");
        };
        let stored: Vec<String> = events
            .into_iter()
            .filter_map(|e| match e.change {
                Change::MessagePosted { message } => message.text,
                _ => None,
            })
            .filter(|t| !t.starts_with("marker-"))
            .collect();
        assert_eq!(
            stored, texts,
            "seed {seed}: stored once each, in order ({reconnects} connections)"
        );
    }
    Ok(())
}

#[tokio::test]
async fn members_leave_and_are_removed_and_groups_keep_an_owner() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let boss = user(&node, "boss").await?;
    let ann = user(&node, "ann").await?;
    let bob = user(&node, "bob").await?;
    let g = discussion(
        &boss,
        Request::CreateGroup {
            title: "Отдел".into(),
            members: vec!["ann".into()],
        },
    )
    .await?;

    // Only owners add and remove others.
    let e = ann
        .request(Request::AddMembers {
            discussion: g.id.clone(),
            users: vec!["bob".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    ask(
        &boss,
        Request::AddMembers {
            discussion: g.id.clone(),
            users: vec!["bob".into()],
        },
    )
    .await?;
    let added = next_discussion_event(&bob).await?;
    assert!(
        matches!(&added.change, Change::MembersAdded { users } if users == &["bob@test.local".to_owned()]),
        "new members receive members_added: {added:?}"
    );
    let e = ann
        .request(Request::RemoveMember {
            discussion: g.id.clone(),
            user: "bob".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    post(&bob, &g.id, "b1", "я в группе").await?;

    // Removed: told, then nothing more, and the history is closed.
    ask(
        &boss,
        Request::RemoveMember {
            discussion: g.id.clone(),
            user: "bob".into(),
        },
    )
    .await?;
    event_matching(
        &bob,
        |e| matches!(&e.change, Change::MemberRemoved { user } if user == "bob@test.local"),
    )
    .await?;
    loop {
        match within(5, "discussion_removed", bob.next_event()).await? {
            Some(Event::DiscussionRemoved { discussion }) if discussion == g.id => break,
            Some(_) => continue,
            None => anyhow::bail!("event stream ended"),
        }
    }
    let e = bob
        .request(Request::History {
            discussion: g.id.clone(),
            before: None,
            limit: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    // The owner leaves: the longest-standing member becomes owner.
    ask(
        &boss,
        Request::RemoveMember {
            discussion: g.id.clone(),
            user: "boss".into(),
        },
    )
    .await?;
    let g2 = discussion(
        &ann,
        Request::GetDiscussion {
            discussion: g.id.clone(),
        },
    )
    .await?;
    assert_eq!(g2.members.len(), 1);
    assert_eq!(g2.members[0].user, "ann@test.local");
    assert_eq!(
        g2.members[0].role,
        veche_client::protocol::discussions::Role::Owner
    );
    ask(
        &ann,
        Request::SetTitle {
            discussion: g.id.clone(),
            title: "Отдел продаж".into(),
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn leaving_a_group_ends_the_object_access_it_gave() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let root = admin(&node).await?;
    let clerk = user(&node, "clerk").await?;
    let team = discussion(
        &root,
        Request::CreateGroup {
            title: "Склад".into(),
            members: vec!["clerk".into()],
        },
    )
    .await?;
    ask(
        &root,
        Request::SetObjectAccess {
            object: invoice("INV-77"),
            users: vec![],
            groups: vec![team.id.clone()],
        },
    )
    .await?;
    let d = discussion(
        &clerk,
        Request::OpenObject {
            object: invoice("INV-77"),
            title: String::new(),
        },
    )
    .await?;
    ask(
        &clerk,
        Request::Watch {
            discussion: d.id.clone(),
            watch: true,
        },
    )
    .await?;
    ask(
        &clerk,
        Request::RemoveMember {
            discussion: team.id.clone(),
            user: "clerk".into(),
        },
    )
    .await?;
    let mut removed = std::collections::HashSet::new();
    while removed.len() < 2 {
        match within(5, "discussion_removed", clerk.next_event()).await? {
            Some(Event::DiscussionRemoved { discussion }) => {
                removed.insert(discussion);
            }
            Some(_) => continue,
            None => anyhow::bail!("event stream ended"),
        }
    }
    assert!(
        removed.contains(&d.id) && removed.contains(&team.id),
        "{removed:?}"
    );
    let e = clerk
        .request(Request::History {
            discussion: d.id.clone(),
            before: None,
            limit: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    Ok(())
}

/// Clients issue: control characters in new texts are refused with a reason, not stored (they
/// would clear a reader's screen or forge lines); new lines and tabs are text, and a Windows
/// line end is kept as a new line.
#[tokio::test]
async fn texts_with_control_characters_are_refused_and_windows_line_ends_kept() -> anyhow::Result<()>
{
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let a = user(&node, "rita").await?;
    node.add_user("sasha", PASSWORD, false).await?;
    let dialog = discussion(
        &a,
        Request::OpenDialog {
            with: "sasha".into(),
        },
    )
    .await?;
    for (n, text) in [
        "ok\x1b[2J",
        "ok\rboris: I approve",
        "bell\x07",
        "c1\u{9b}31m",
    ]
    .into_iter()
    .enumerate()
    {
        let e = a
            .request(Request::Send(message(&dialog.id, &format!("c{n}"), text)))
            .await
            .unwrap_err();
        let veche_client::RequestError::Server(body) = e else {
            anyhow::bail!("server error expected for {text:?}")
        };
        assert_eq!(body.code, ErrorCode::BadRequest, "{text:?}");
        assert!(
            body.message.contains("control character U+"),
            "{}",
            body.message
        );
    }
    let (id, _) = post(&a, &dialog.id, "ok", "строка 1\r\nстрока\t2").await?;
    let e = a
        .request(Request::Edit {
            discussion: dialog.id.clone(),
            message_id: id.clone(),
            text: "правка\x1b]0;x\x07".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    let Reply::Events { events, .. } = ask(
        &a,
        Request::History {
            discussion: dialog.id.clone(),
            before: None,
            limit: 10,
        },
    )
    .await?
    else {
        anyhow::bail!("expected events")
    };
    let texts: Vec<String> = events
        .into_iter()
        .filter_map(|e| match e.change {
            Change::MessagePosted { message } => message.text,
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["строка 1\nстрока\t2".to_owned()]);
    Ok(())
}
