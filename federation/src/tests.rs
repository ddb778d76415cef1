//! The transport on real libp2p connections over loopback, with an in-memory store.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::event::{EVENT_FORMAT, Event, EventHeader, EventWire, Stamp, StampBody};
use crate::grant::{
    Change, DirectoryScope, GRANT_FORMAT, Grant, Notice, Offer, Party, Relationship, Scope,
    SignedNotice, Terms,
};
use crate::keys::{Hash, NodeKey, Purpose};
use crate::memory::MemoryStore;
use crate::net::{self, Handle, NetConfig, Notification, QueryError};
use crate::store::Incoming;
use crate::wire::{Access, Chunk, Item, MAX_CHUNK, Presence, Profile, Query, Reader};

struct Node {
    key: NodeKey,
    store: MemoryStore,
    handle: Handle,
    notes: mpsc::UnboundedReceiver<Notification>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(port: u16) -> NetConfig {
    NetConfig {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        request_timeout: Duration::from_secs(5),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(30),
        ..NetConfig::default()
    }
}

async fn node(name: &str, secret: u8, store: MemoryStore, grants: Vec<Grant>, port: u16) -> Node {
    let key = NodeKey::from_secret([secret; 32]);
    let grants = grants
        .into_iter()
        .map(|g| {
            let scope = g.terms().scope.clone();
            (g, scope)
        })
        .collect();
    let (handle, notes, _task) = net::start(name, &key, config(port), store.clone(), grants)
        .await
        .unwrap();
    handle.listen_addresses().await;
    Node {
        key,
        store,
        handle,
        notes,
    }
}

fn party(key: &NodeKey, name: &str, port: u16) -> Party {
    Party {
        node: name.into(),
        key: key.public(),
        addresses: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
        organisation: name.into(),
        contact: format!("admin@{name}"),
    }
}

fn link(a: (&NodeKey, &str, u16), b: (&NodeKey, &str, u16)) -> Grant {
    let terms = Terms {
        format: GRANT_FORMAT,
        link: hex::encode(rand::random::<[u8; 16]>()),
        version: 1,
        relationship: Relationship::Branch,
        scope: Scope {
            object_discussions: true,
            directory: DirectoryScope::Members,
            presence: true,
            max_file_mb: 10,
        },
        not_before: 0,
        not_after: i64::MAX,
        nonce: hex::encode(rand::random::<[u8; 8]>()),
        offerer: party(a.0, a.1, a.2),
    };
    Offer::create(a.0, terms)
        .unwrap()
        .accept(b.0, party(b.0, b.1, b.2), 1)
        .unwrap()
}

fn submit(key: &NodeKey, author: &str, origin: &str, home: &str, n: u64) -> Item {
    let event = Event::create(
        key,
        EventHeader {
            format: EVENT_FORMAT,
            kind: "message.post".into(),
            discussion: format!("d@{home}"),
            home: home.into(),
            origin: origin.into(),
            author: author.into(),
            client_txn: format!("txn-{n}"),
            created_at: 0,
            target: None,
            body_hash: None,
            body_len: 0,
        },
        Some(format!("message {n}").into_bytes()),
    )
    .unwrap();
    Item::Submit {
        event: event.wire().clone(),
    }
}

/// The next version of `grant`, offered by `a` and accepted by `b`, its scope changed by
/// `change`.
fn renewal(a: &Node, b: &Node, grant: &Grant, change: impl FnOnce(&mut Scope)) -> Grant {
    let mut terms = grant.terms().clone();
    terms.version += 1;
    terms.nonce = "renewal".into();
    change(&mut terms.scope);
    Offer::create(&a.key, terms)
        .unwrap()
        .accept(&b.key, grant.acceptor().clone(), 1)
        .unwrap()
}

/// `by`'s notice narrowing `grant` to `scope`.
fn narrowing(by: &Node, grant: &Grant, scope: Scope, at: i64) -> SignedNotice {
    SignedNotice::create(
        &by.key,
        grant,
        &grant.terms().scope,
        Notice {
            link: grant.link().to_owned(),
            grant: grant.hash(),
            at,
            change: Change::Narrow { scope },
        },
    )
    .unwrap()
}

/// hq and branch, linked, each with an empty in-memory store.
struct Pair {
    a: Node,
    b: Node,
    grant: Grant,
    id: String,
    branch_port: u16,
}

async fn pair() -> Pair {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (NodeKey::from_secret([1; 32]), NodeKey::from_secret([2; 32]));
    let grant = link((&ka, "hq", pa), (&kb, "branch", pb));
    let id = grant.link().to_owned();
    let a = node("hq", 1, MemoryStore::default(), vec![grant.clone()], pa).await;
    let b = node("branch", 2, MemoryStore::default(), vec![grant.clone()], pb).await;
    Pair {
        a,
        b,
        grant,
        id,
        branch_port: pb,
    }
}

/// Connects `a` to `b` over `link`: one item from `a` has reached `b`.
async fn connect(a: &Node, b: &Node, link: &str) {
    a.store
        .enqueue(link, submit(&a.key, "anna@hq", "hq", "branch", 0));
    a.handle.wake(link);
    wait_for("connected", || b.store.inbox_len(link) == 1).await;
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting: {what}");
}

/// The home's word on what `user` may do in the object discussion `discussion`.
fn readers(discussion: &str, user: &str) -> Item {
    Item::Readers {
        discussion: discussion.into(),
        users: vec![Reader {
            user: user.into(),
            access: Access::Write,
        }],
    }
}

fn texts(items: &[Incoming]) -> Vec<String> {
    items
        .iter()
        .map(|i| match &i.item {
            Item::Submit { event } | Item::Stamped { event, .. } => {
                String::from_utf8(event.body.clone().unwrap_or_default()).unwrap()
            }
            Item::Refusal { reason, .. } => reason.clone(),
            Item::Readers { users, .. } => users
                .iter()
                .map(|r| format!("{} {:?}", r.user, r.access))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_in_order_exactly_once_both_ways() {
    let Pair { a, b, id, .. } = pair().await;
    // The receiver fails twice after storing: the sender resends, nothing is stored twice.
    b.store.fail_after_store(2);
    for n in 0..300 {
        a.store
            .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", n));
    }
    a.handle.wake(&id);
    for n in 0..5 {
        b.store
            .enqueue(&id, submit(&b.key, "boris@branch", "branch", "hq", n));
    }
    b.handle.wake(&id);
    wait_for("300 items on b", || b.store.inbox(&id).len() >= 300).await;
    wait_for("5 items on a", || a.store.inbox(&id).len() >= 5).await;
    let expected: Vec<String> = (0..300).map(|n| format!("message {n}")).collect();
    assert_eq!(texts(&b.store.inbox(&id)), expected);
    let seqs: Vec<u64> = b.store.inbox(&id).iter().map(|i| i.link_seq).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    assert_eq!(texts(&a.store.inbox(&id)).len(), 5);
    // The sender learns that everything was stored.
    wait_for("acknowledged", || a.store.outbox_len(&id) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_one_by_one_never_wait_for_a_lost_wake() {
    // A wake that arrives while the outbox is being read must not be lost when that read
    // comes back empty (it once was: delivery stalled until the next unrelated wake).
    let Pair { a, b, id, .. } = pair().await;
    for n in 0..400 {
        a.store
            .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", n));
        a.handle.wake(&id);
        wait_for("the event", || b.store.inbox_len(&id) > n as usize).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_resumes_where_it_stopped() {
    let Pair {
        a,
        b,
        grant,
        id,
        branch_port: pb,
    } = pair().await;
    for n in 0..10 {
        a.store
            .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", n));
    }
    a.handle.wake(&id);
    wait_for("10 on b", || b.store.inbox(&id).len() == 10).await;
    b.handle.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Written while the receiver is down.
    for n in 10..20 {
        a.store
            .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", n));
    }
    a.handle.wake(&id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b2 = node("branch", 2, b.store.clone(), vec![grant], pb).await;
    wait_for("20 on b", || b2.store.inbox(&id).len() >= 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expected: Vec<String> = (0..20).map(|n| format!("message {n}")).collect();
    assert_eq!(texts(&b2.store.inbox(&id)), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_items_are_refused_one_by_one_and_the_rest_goes_on() {
    let Pair { mut a, b, id, .. } = pair().await;
    let good = |n| submit(&a.key, "anna@hq", "hq", "branch", n);
    // 2: hq speaks for a user of branch (signed by hq, so only the author check catches it).
    let header = EventHeader {
        format: EVENT_FORMAT,
        kind: "message.post".into(),
        discussion: "d@branch".into(),
        home: "branch".into(),
        origin: "hq".into(),
        author: "boris@branch".into(),
        client_txn: "forged".into(),
        created_at: 0,
        target: None,
        body_hash: None,
        body_len: 0,
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&header, &mut bytes).unwrap();
    let signature = a.key.sign(Purpose::Event, &bytes);
    let foreign = Item::Submit {
        event: EventWire {
            header: bytes,
            signature,
            body: None,
        },
    };
    // 3: a bad signature.
    let Item::Submit { event: mut broken } = good(3) else {
        unreachable!()
    };
    broken.signature.0[5] ^= 1;
    // 4: submitted to hq's own discussion at branch (addressed to another home).
    let elsewhere = submit(&a.key, "anna@hq", "hq", "partner", 4);
    // 5: a stamp from a node that is not the discussion's home.
    let Item::Submit { event: e5 } = good(5) else {
        unreachable!()
    };
    let stamp = Stamp::create(
        &a.key,
        StampBody {
            format: EVENT_FORMAT,
            discussion: "d@branch".into(),
            seq: 1,
            event: Hash::of(&e5.header),
            origin_key: a.key.public(),
            prev: Hash::default(),
            accepted_at: 0,
        },
    );
    let not_home = Item::Stamped {
        stamp: stamp.signed().clone(),
        event: e5,
    };
    // 6, 7: refusals hq cannot give: about a user of another node, and about a discussion
    // homed at neither end. 8 and 9 it can give: of a submission to hq, and of a share from
    // branch.
    let refusal = |author: &str, discussion: &str| Item::Refusal {
        event: Hash::default(),
        discussion: discussion.into(),
        author: author.into(),
        reason: "refused".into(),
    };
    for item in [
        good(1),
        foreign,
        Item::Submit { event: broken },
        elsewhere,
        not_home,
        refusal("boris@partner", "d@hq"),
        refusal("boris@branch", "d@partner"),
        refusal("boris@branch", "d@hq"),
        refusal("boris@branch", "d@branch"),
        // 10, 11: who may read an object discussion, said by a node that is not its home,
        // and of a user of another node. 12 hq can say.
        readers("d@branch", "boris@branch"),
        readers("d@hq", "anna@hq"),
        readers("d@hq", "boris@branch"),
        good(13),
    ] {
        a.store.enqueue(&id, item);
    }
    a.handle.wake(&id);
    wait_for("the good ones", || b.store.inbox(&id).len() == 5).await;
    assert_eq!(
        texts(&b.store.inbox(&id)),
        [
            "message 1",
            "refused",
            "refused",
            "boris@branch Write",
            "message 13"
        ]
    );
    let refused: Vec<(u64, String)> = b
        .store
        .refused()
        .iter()
        .map(|r| (r.link_seq, r.reason.clone()))
        .collect();
    assert_eq!(refused.len(), 8, "{refused:?}");
    assert!(
        refused[0].1.contains("does not belong to hq"),
        "{refused:?}"
    );
    assert!(refused[1].1.contains("signature"), "{refused:?}");
    assert!(refused[2].1.contains("not this node"), "{refused:?}");
    assert!(refused[3].1.contains("not the home"), "{refused:?}");
    assert!(
        refused[4].1.contains("not a user of this node"),
        "{refused:?}"
    );
    assert!(refused[5].1.contains("not the home"), "{refused:?}");
    assert!(refused[6].1.contains("not the home"), "{refused:?}");
    assert!(
        refused[7].1.contains("not a user of this node"),
        "{refused:?}"
    );
    // The sender is told which, for its dead letters.
    let told = loop {
        match tokio::time::timeout(Duration::from_secs(10), a.notes.recv()).await {
            Ok(Some(Notification::Rejected { rejected, .. })) => break rejected,
            Ok(Some(_)) => continue,
            other => panic!("no rejection: {other:?}"),
        }
    };
    let seqs: Vec<u64> = told.iter().map(|r| r.link_seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6, 7, 10, 11]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peers_are_refused_and_revocation_stops_retries() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (ka, kb, kc) = (
        NodeKey::from_secret([1; 32]),
        NodeKey::from_secret([2; 32]),
        NodeKey::from_secret([3; 32]),
    );
    let grant = link((&ka, "hq", pa), (&kb, "branch", pb));
    let id = grant.link().to_owned();
    let a = node("hq", 1, MemoryStore::default(), vec![grant.clone()], pa).await;
    let mut b = node("branch", 2, MemoryStore::default(), vec![grant.clone()], pb).await;
    // C holds a genuine grant with hq, but hq never confirmed it: hq does not let C in.
    let stray = link((&kc, "stranger", pc), (&ka, "hq", pa));
    let stray_id = stray.link().to_owned();
    let c = node("stranger", 3, MemoryStore::default(), vec![stray], pc).await;
    c.store.enqueue(
        &stray_id,
        submit(&c.key, "eve@stranger", "stranger", "hq", 0),
    );
    c.handle.wake(&stray_id);
    a.store
        .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", 0));
    a.handle.wake(&id);
    wait_for("b got it", || b.store.inbox(&id).len() == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(a.store.inbox(&stray_id).is_empty());
    let status = c.handle.status().await;
    assert_eq!(status[0].acked, 0, "{status:?}");

    // Branch narrows the scope, then revokes: hq hears both, verified, and stops.
    let mut narrower = grant.terms().scope.clone();
    narrower.presence = false;
    let narrow = SignedNotice::create(
        &b.key,
        &grant,
        &grant.terms().scope,
        Notice {
            link: id.clone(),
            grant: grant.hash(),
            at: 1,
            change: Change::Narrow {
                scope: narrower.clone(),
            },
        },
    )
    .unwrap();
    b.handle.notify(&id, narrow);
    let mut a = a;
    let scope = loop {
        match tokio::time::timeout(Duration::from_secs(10), a.notes.recv()).await {
            Ok(Some(Notification::Narrowed { scope, .. })) => break scope,
            Ok(Some(_)) => continue,
            other => panic!("not narrowed: {other:?}"),
        }
    };
    assert_eq!(scope, narrower);
    let revoke = SignedNotice::create(
        &b.key,
        &grant,
        &grant.terms().scope,
        Notice {
            link: id.clone(),
            grant: grant.hash(),
            at: 2,
            change: Change::Revoke {
                reason: "office closed".into(),
            },
        },
    )
    .unwrap();
    b.handle.end_link(&id, Some(revoke));
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), a.notes.recv()).await {
            Ok(Some(Notification::Ended { reason, notice, .. })) => break (reason, notice),
            Ok(Some(_)) => continue,
            other => panic!("not ended: {other:?}"),
        }
    };
    assert!(ended.0.contains("office closed"), "{ended:?}");
    assert!(ended.1.is_some());
    // The revoking side has ended the link too; nothing more goes either way.
    for _ in 0..100 {
        if b.handle.status().await[0].ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.handle.status().await[0].ended);
    while b.notes.try_recv().is_ok() {}
    a.store
        .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", 1));
    a.handle.wake(&id);
    b.store
        .enqueue(&id, submit(&b.key, "boris@branch", "branch", "hq", 1));
    b.handle.wake(&id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.store.inbox(&id).len(), 1);
    assert!(a.store.inbox(&id).is_empty());
    assert!(a.handle.status().await[0].ended);
    while let Ok(n) = b.notes.try_recv() {
        assert!(!matches!(n, Notification::Received { .. }), "{n:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_takes_over_when_the_peer_greets_with_it() {
    let Pair {
        a,
        mut b,
        grant,
        id,
        ..
    } = pair().await;
    connect(&a, &b, &id).await;
    let renewal = renewal(&a, &b, &grant, |scope| scope.presence = false);
    // branch has accepted it; the link goes on under the first grant meanwhile.
    b.handle.expect_renewal(renewal.clone()).await.unwrap();
    a.store
        .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", 1));
    a.handle.wake(&id);
    wait_for("the link goes on", || b.store.inbox_len(&id) == 2).await;
    // hq confirms: both greet again, and branch takes the renewal when hq greets with it.
    a.handle
        .renew_link(renewal.clone(), renewal.terms().scope.clone())
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), b.notes.recv()).await {
            Ok(Some(Notification::Renewed { link, grant })) => {
                assert_eq!(grant, renewal.hash());
                assert_eq!(link, id);
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!("not renewed: {other:?}"),
        }
    }
    a.store
        .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", 2));
    a.handle.wake(&id);
    wait_for("hq's next item", || b.store.inbox_len(&id) == 3).await;
    b.store
        .enqueue(&id, submit(&b.key, "boris@branch", "branch", "hq", 1));
    b.handle.wake(&id);
    wait_for("branch's item", || a.store.inbox_len(&id) == 1).await;
    // A renewal of another peer's link is not taken.
    let stranger = NodeKey::from_secret([9; 32]);
    let mut terms = renewal.terms().clone();
    terms.version = 3;
    terms.offerer.key = stranger.public();
    let foreign = Offer::create(&stranger, terms)
        .unwrap()
        .accept(&b.key, grant.acceptor().clone(), 1)
        .unwrap();
    assert!(b.handle.expect_renewal(foreign).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowing_drops_a_renewal_held_for_the_peer() {
    let Pair {
        a,
        mut b,
        grant,
        id,
        ..
    } = pair().await;
    connect(&a, &b, &id).await;
    let renewal = renewal(&a, &b, &grant, |_| {});
    b.handle.expect_renewal(renewal.clone()).await.unwrap();
    // branch narrows meanwhile: the held renewal would widen the link again, so it goes.
    let mut narrower = grant.terms().scope.clone();
    narrower.presence = false;
    b.handle.notify(&id, narrowing(&b, &grant, narrower, 1));
    a.handle
        .renew_link(renewal.clone(), renewal.terms().scope.clone())
        .await
        .unwrap();
    let renewed = |n: &Notification| matches!(n, Notification::Renewed { .. });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(n)) = tokio::time::timeout_at(deadline, b.notes.recv()).await {
        assert!(!renewed(&n), "a dropped renewal was put in force");
    }
    // Accepted again, it is put in force at hq's next greeting.
    b.handle.expect_renewal(renewal.clone()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), b.notes.recv()).await {
            Ok(Some(n)) if renewed(&n) => break,
            Ok(Some(_)) => continue,
            other => panic!("not renewed: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_node_answers_directory_queries_or_says_why_not() {
    let Pair { a, mut b, id, .. } = pair().await;
    // Not connected yet: a query does not wait for the link.
    let early = a.handle.query(&id, directory("Борис")).await;
    assert!(
        matches!(early, Err(QueryError::Unreachable(_))),
        "{early:?}"
    );
    connect(&a, &b, &id).await;
    tokio::spawn(async move {
        while let Some(note) = b.notes.recv().await {
            let Notification::Query {
                query: Query::Directory { text, limit },
                scope,
                responder,
                ..
            } = note
            else {
                continue;
            };
            assert_eq!(scope.directory, DirectoryScope::Members);
            match text.as_str() {
                "refuse" => responder.refuse("not today"),
                "silence" => drop(responder),
                _ => responder.answer(
                    (0..limit + 5)
                        .map(|n| Profile {
                            id: format!("boris{n}@branch"),
                            display_name: text.clone(),
                            department: "Склад".into(),
                        })
                        .collect(),
                ),
            }
        }
    });
    let found = a.handle.query(&id, directory("Борис")).await.unwrap();
    assert_eq!(found.len(), 3, "at most the limit asked for");
    assert_eq!(found[0].id, "boris0@branch");
    assert_eq!(found[0].display_name, "Борис");
    let refused = a.handle.query(&id, directory("refuse")).await;
    assert_eq!(refused, Err(QueryError::Refused("not today".into())));
    let silent = a.handle.query(&id, directory("silence")).await;
    assert!(matches!(silent, Err(QueryError::Refused(_))), "{silent:?}");
    let empty = a.handle.query(&id, directory(" ")).await;
    assert!(matches!(empty, Err(QueryError::Malformed(_))), "{empty:?}");
    let nowhere = a.handle.query("no-such-link", directory("Борис")).await;
    assert_eq!(nowhere, Err(QueryError::NoLink));
    // The link carries on.
    a.store
        .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", 1));
    a.handle.wake(&id);
    wait_for("the next item", || a.store.outbox_len(&id) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_node_serves_pieces_of_files_while_the_link_carries_files() {
    let Pair {
        mut a,
        b,
        grant,
        id,
        ..
    } = pair().await;
    connect(&a, &b, &id).await;
    const CONTENT: &[u8] = b"the invoice, scanned";
    let sha = |c: char| c.to_string().repeat(64);
    let (narrowed_tx, mut narrowed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(note) = a.notes.recv().await {
            let (query, scope, responder) = match note {
                Notification::Query {
                    query,
                    scope,
                    responder,
                    ..
                } => (query, scope, responder),
                Notification::Narrowed { .. } => {
                    let _ = narrowed_tx.send(());
                    continue;
                }
                _ => continue,
            };
            let Query::File {
                discussion,
                sha256,
                offset,
            } = query
            else {
                continue;
            };
            assert_eq!(scope.max_file_mb, 10);
            let total = CONTENT.len() as u64;
            match sha256.chars().next() {
                // Pieces of 8 bytes from the offset asked for.
                Some('a') if discussion == "d@hq" => {
                    let from = usize::try_from(offset).unwrap().min(CONTENT.len());
                    let to = (from + 8).min(CONTENT.len());
                    responder.chunk(Chunk {
                        total,
                        bytes: CONTENT[from..to].to_vec(),
                    });
                }
                Some('b') => responder.chunk(Chunk {
                    total: u64::MAX,
                    bytes: vec![0; MAX_CHUNK + 1],
                }),
                Some('c') => responder.chunk(Chunk {
                    total: 3,
                    bytes: CONTENT.to_vec(),
                }),
                Some('d') => responder.answer(Vec::new()),
                _ => responder.refuse("no such file here"),
            }
        }
    });
    let mut got = Vec::new();
    loop {
        let piece = b
            .handle
            .fetch(&id, "d@hq", &sha('a'), got.len() as u64)
            .await
            .unwrap();
        assert_eq!(piece.total, CONTENT.len() as u64);
        if piece.bytes.is_empty() {
            break;
        }
        got.extend(piece.bytes);
    }
    assert_eq!(got, CONTENT);
    let refused = |r: Result<Chunk, QueryError>| matches!(r, Err(QueryError::Refused(_)));
    // Too large a piece is not sent, one that overruns the file or of the wrong kind is not
    // taken.
    assert!(refused(b.handle.fetch(&id, "d@hq", &sha('b'), 0).await));
    assert!(refused(b.handle.fetch(&id, "d@hq", &sha('c'), 0).await));
    assert!(refused(b.handle.fetch(&id, "d@hq", &sha('d'), 0).await));
    // A malformed request never leaves.
    let malformed = b.handle.fetch(&id, "d@hq", "not-a-hash", 0).await;
    assert!(
        matches!(malformed, Err(QueryError::Malformed(_))),
        "{malformed:?}"
    );
    // Once the link carries no files, hq's transport refuses before its node is asked.
    let mut narrower = grant.terms().scope.clone();
    narrower.max_file_mb = 0;
    b.handle.notify(&id, narrowing(&b, &grant, narrower, 1));
    tokio::time::timeout(Duration::from_secs(10), narrowed.recv())
        .await
        .unwrap();
    let closed = b.handle.fetch(&id, "d@hq", &sha('a'), 0).await;
    assert_eq!(
        closed,
        Err(QueryError::Refused("this link does not carry files".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_asks_for_objects_for_its_own_users_and_heads_of_its_own_logs_only() {
    let Pair {
        mut a,
        b,
        grant,
        id,
        ..
    } = pair().await;
    connect(&a, &b, &id).await;
    let (narrowed_tx, mut narrowed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(note) = a.notes.recv().await {
            match note {
                Notification::Query {
                    query:
                        Query::Object {
                            user, object_id, ..
                        },
                    responder,
                    ..
                } => match (user.as_str(), object_id.as_str()) {
                    ("boris@branch", "INV-1") => responder.object("o1@hq".into(), Access::Write),
                    ("boris@branch", "INV-2") => responder.object("o2@hq".into(), Access::Read),
                    _ => responder.object("o1@hq".into(), Access::None),
                },
                Notification::Query {
                    query: Query::Head { discussion },
                    responder,
                    ..
                } => responder.head((discussion == "d@branch").then_some(7)),
                Notification::Narrowed { .. } => {
                    let _ = narrowed_tx.send(());
                }
                _ => {}
            }
        }
    });
    // A home restored from a backup asks where the peer is in its own discussions' logs, and
    // only in those.
    assert_eq!(b.handle.head(&id, "d@branch").await, Ok(Some(7)));
    assert_eq!(b.handle.head(&id, "e@branch").await, Ok(None));
    assert_eq!(
        b.handle.head(&id, "d@hq").await,
        Err(QueryError::Refused(
            "a node asks only about discussions it is home of".into()
        ))
    );
    let open = |user: &'static str, object: &'static str| {
        b.handle
            .open_object(&id, user, ("erp", "invoice", object), None)
    };
    assert_eq!(
        open("boris@branch", "INV-1").await,
        Ok(("o1@hq".to_owned(), Access::Write))
    );
    assert_eq!(
        open("boris@branch", "INV-2").await,
        Ok(("o2@hq".to_owned(), Access::Read))
    );
    // "None" travels as "not found".
    assert_eq!(
        open("vera@branch", "INV-1").await,
        Err(QueryError::Refused("object not found".into()))
    );
    // hq's transport refuses, before its node is asked, an object for a user of hq itself.
    assert_eq!(
        open("anna@hq", "INV-1").await,
        Err(QueryError::Refused(
            "an object is opened for a user of the asking node only".into()
        ))
    );
    assert!(matches!(
        open("boris@branch", "").await,
        Err(QueryError::Malformed(_))
    ));
    // Once the link carries no object discussions, nothing is asked.
    let mut narrower = grant.terms().scope.clone();
    narrower.object_discussions = false;
    b.handle.notify(&id, narrowing(&b, &grant, narrower, 1));
    tokio::time::timeout(Duration::from_secs(10), narrowed.recv())
        .await
        .unwrap();
    assert_eq!(
        open("boris@branch", "INV-1").await,
        Err(QueryError::Refused(
            "this link does not share object discussions".into()
        ))
    );
}

fn directory(text: &str) -> Query {
    Query::Directory {
        text: text.into(),
        limit: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_to_a_connected_peer_for_its_own_users_only() {
    let Pair { a, mut b, id, .. } = pair().await;
    connect(&a, &b, &id).await;
    let presence = |user: &str, state: &str| Presence {
        user: user.into(),
        state: state.into(),
        status_text: "в отпуске".into(),
    };
    // hq cannot speak for branch's users.
    a.handle.send_presence(
        &id,
        vec![presence("anna@hq", "away"), presence("boris@branch", "dnd")],
    );
    let heard = loop {
        match tokio::time::timeout(Duration::from_secs(10), b.notes.recv()).await {
            Ok(Some(Notification::Presence { users, .. })) => break users,
            Ok(Some(_)) => continue,
            other => panic!("no presence: {other:?}"),
        }
    };
    assert_eq!(heard, [presence("anna@hq", "away")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_changes_faster_than_a_peer_takes_are_merged_not_lost() {
    let Pair { a, mut b, id, .. } = pair().await;
    connect(&a, &b, &id).await;
    // One change at a time, faster than the 20 a second (after a burst of 50) a node takes:
    // each would go alone, and a peer refuses what comes too fast.
    const USERS: usize = 150;
    for i in 0..USERS {
        a.handle.send_presence(
            &id,
            vec![Presence {
                user: format!("u{i}@hq"),
                state: "away".into(),
                status_text: String::new(),
            }],
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.handle.send_presence(
        &id,
        vec![Presence {
            user: "u0@hq".into(),
            state: "dnd".into(),
            status_text: String::new(),
        }],
    );
    let mut heard = std::collections::HashMap::new();
    let mut requests = 0;
    while heard.len() < USERS || heard.get("u0@hq").map(String::as_str) != Some("dnd") {
        match tokio::time::timeout(Duration::from_secs(10), b.notes.recv()).await {
            Ok(Some(Notification::Presence { users, .. })) => {
                requests += 1;
                for p in users {
                    heard.insert(p.user, p.state);
                }
            }
            Ok(Some(_)) => continue,
            other => panic!("{} of {USERS} heard: {other:?}", heard.len()),
        }
    }
    // Paced, not sent one by one.
    assert!(requests < USERS, "{requests} requests");
}

/// The branch `b` comes back from an empty store, as if restored from an old backup.
async fn restored(b: Node, grant: Grant, port: u16) -> Node {
    b.handle.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    node("branch", 2, MemoryStore::default(), vec![grant], port).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_restored_from_a_backup_numbers_what_it_queued_after_the_peers_watermark() {
    let Pair {
        a,
        b,
        grant,
        id,
        branch_port: pb,
    } = pair().await;
    for n in 0..3 {
        b.store
            .enqueue(&id, submit(&b.key, "boris@branch", "branch", "hq", n));
    }
    b.handle.wake(&id);
    wait_for("acknowledged", || b.store.outbox_len(&id) == 0).await;
    // The branch comes back from an old backup: it numbers its new items from 1 again, numbers
    // hq has taken already, and more of them than hq holds (so numbers alone do not tell).
    let b2 = restored(b, grant, pb).await;
    for n in 3..8 {
        b2.store
            .enqueue(&id, submit(&b2.key, "boris@branch", "branch", "hq", n));
    }
    b2.handle.wake(&id);
    wait_for("the new items arrive", || a.store.inbox_len(&id) == 8).await;
    let expected: Vec<String> = (0..8).map(|n| format!("message {n}")).collect();
    assert_eq!(texts(&a.store.inbox(&id)), expected);
    let seqs: Vec<u64> = a.store.inbox(&id).iter().map(|i| i.link_seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    // And numbering goes on from there.
    b2.store
        .enqueue(&id, submit(&b2.key, "boris@branch", "branch", "hq", 8));
    b2.handle.wake(&id);
    wait_for("the next one", || a.store.inbox_len(&id) == 9).await;
    assert_eq!(a.store.inbox(&id)[8].link_seq, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_lost_acknowledged_items_is_reported_not_fed_out_of_order() {
    let Pair {
        mut a,
        b,
        grant,
        id,
        branch_port: pb,
    } = pair().await;
    for n in 0..3 {
        a.store
            .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", n));
    }
    a.handle.wake(&id);
    wait_for("acknowledged", || a.store.outbox_len(&id) == 0).await;
    let b2 = restored(b, grant, pb).await;
    a.store
        .enqueue(&id, submit(&a.key, "anna@hq", "hq", "branch", 3));
    a.handle.wake(&id);
    let mut stalled = None;
    for _ in 0..200 {
        stalled = a.handle.status().await.into_iter().find_map(|s| s.stalled);
        if stalled.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stalled = stalled.expect("the link is reported stalled");
    assert!(
        stalled.contains("up to 0") && stalled.contains("holds 4"),
        "{stalled}"
    );
    // Nothing after the hole was taken.
    assert_eq!(b2.store.inbox_len(&id), 0);
    // The node is told, once, so that it can queue what replaces the lost items.
    let mut behind = 0;
    while let Ok(Some(note)) =
        tokio::time::timeout(Duration::from_millis(500), a.notes.recv()).await
    {
        if let Notification::Behind { link, received } = note {
            assert_eq!((link.as_str(), received), (id.as_str(), 0));
            behind += 1;
        }
    }
    assert_eq!(behind, 1);
}
