//! Presence and typing: real nodes, real QUIC connections.

use veche_client::Connection;
use veche_client::protocol::presence::{PresenceChoice, PresenceInfo, PresenceState};
use veche_client::protocol::{ErrorCode, Event, Reply, Request};
use veche_node::test_utils::{TestNode, test_config};

use crate::support::*;

/// Waits for a presence event on `conn` that shows `user` in `state`; other events are
/// skipped.
pub(crate) async fn sees(
    conn: &Connection,
    user: &str,
    state: PresenceState,
) -> anyhow::Result<()> {
    within(10, &format!("{user} shown {state:?}"), async {
        loop {
            match conn.next_event().await {
                Some(Event::Presence { users }) => {
                    if users.iter().any(|u| u.user == user && u.state == state) {
                        return Ok(());
                    }
                }
                Some(_) => {}
                None => anyhow::bail!("the event stream ended"),
            }
        }
    })
    .await?
}

/// Every presence entry about `user` that reaches `conn` within `ms`.
async fn presence_about(conn: &Connection, user: &str, ms: u64) -> Vec<PresenceInfo> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, conn.next_event()).await {
        if let Event::Presence { users } = event {
            seen.extend(users.into_iter().filter(|u| u.user == user));
        }
    }
    seen
}

pub(crate) async fn query(conn: &Connection, user: &str) -> anyhow::Result<PresenceInfo> {
    match ask(
        conn,
        Request::GetPresence {
            users: vec![user.to_owned()],
            subscribe: false,
        },
    )
    .await?
    {
        Reply::Presence { mut users } if users.len() == 1 => Ok(users.remove(0)),
        other => anyhow::bail!("expected one presence, got {other:?}"),
    }
}

async fn set(conn: &Connection, choice: PresenceChoice, text: &str) -> anyhow::Result<()> {
    ask(
        conn,
        Request::SetPresence {
            choice,
            status_text: text.to_owned(),
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn presence_follows_the_most_present_device_idle_time_and_a_grace_period()
-> anyhow::Result<()> {
    let _log = subscribe();
    let mut config = test_config();
    config.presence.offline_grace_ms = 4000;
    let node = TestNode::spawn_with(config).await?;
    let bob = user(&node, "bob").await?;
    node.add_user("alice", PASSWORD, false).await?;
    let (phone, _) = login(&node, "alice", PASSWORD, "phone").await?;
    discussion(&phone, Request::OpenDialog { with: "bob".into() }).await?;
    let alice = "alice@test.local";
    sees(&bob, alice, PresenceState::Available).await?;

    // A second device; the first one goes idle: still available, thanks to the second.
    let (laptop, laptop_login) = login(&node, "alice", PASSWORD, "laptop").await?;
    ask(&phone, Request::Activity { idle_ms: 3_600_000 }).await?;
    assert_eq!(query(&bob, alice).await?.state, PresenceState::Available);
    // Both idle: away, and bob is told.
    ask(&laptop, Request::Activity { idle_ms: 3_600_000 }).await?;
    assert_eq!(query(&bob, alice).await?.state, PresenceState::Away);
    sees(&bob, alice, PresenceState::Away).await?;
    // Active again on the laptop.
    ask(&laptop, Request::Activity { idle_ms: 0 }).await?;
    sees(&bob, alice, PresenceState::Available).await?;

    // The phone leaves: the laptop keeps alice present, bob hears nothing about her.
    phone.close().await;
    // The laptop drops and comes back within the grace period: no flicker.
    laptop.close().await;
    let back = connect(&node).await?;
    within(10, "resume", back.resume(&laptop_login.token, "laptop")).await??;
    let flicker = presence_about(&bob, alice, 4500).await;
    assert!(
        flicker.iter().all(|p| p.state != PresenceState::Offline),
        "a reconnect within the grace period shows no offline: {flicker:?}"
    );
    assert_eq!(query(&bob, alice).await?.state, PresenceState::Available);

    // Gone for good: offline once the grace period is over.
    back.close().await;
    sees(&bob, alice, PresenceState::Offline).await?;
    assert_eq!(query(&bob, alice).await?.state, PresenceState::Offline);
    Ok(())
}

#[tokio::test]
async fn presence_goes_to_contacts_and_subscribers_only() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut node = TestNode::spawn().await?;
    let alice = user(&node, "alice").await?;
    let bob = user(&node, "bob").await?;
    let carol = user(&node, "carol").await?;
    discussion(
        &alice,
        Request::CreateGroup {
            title: "Sales".into(),
            members: vec!["bob".into()],
        },
    )
    .await?;
    let alice_id = "alice@test.local";
    sees(&bob, alice_id, PresenceState::Available).await?;

    set(&alice, PresenceChoice::Dnd, "at the customer's").await?;
    sees(&bob, alice_id, PresenceState::Dnd).await?;
    let shown = query(&bob, alice_id).await?;
    assert_eq!(shown.status_text, "at the customer's");

    // Carol shares nothing with alice: her changes do not reach carol.
    set(&alice, PresenceChoice::Away, "").await?;
    sees(&bob, alice_id, PresenceState::Away).await?;
    let heard = presence_about(&carol, alice_id, 500).await;
    assert!(heard.is_empty(), "a stranger was told: {heard:?}");

    // Carol may ask, and subscribe.
    match ask(
        &carol,
        Request::GetPresence {
            users: vec!["alice".into(), "nobody".into()],
            subscribe: true,
        },
    )
    .await?
    {
        Reply::Presence { users } => {
            assert_eq!(users.len(), 1, "unknown users are left out: {users:?}");
            assert_eq!(users[0].state, PresenceState::Away);
        }
        other => anyhow::bail!("expected presence, got {other:?}"),
    }
    set(&alice, PresenceChoice::Auto, "").await?;
    sees(&carol, alice_id, PresenceState::Available).await?;

    // Invisible: others see offline, alice sees herself invisible.
    set(&alice, PresenceChoice::Invisible, "secret").await?;
    sees(&bob, alice_id, PresenceState::Offline).await?;
    let to_bob = query(&bob, alice_id).await?;
    assert_eq!(to_bob.state, PresenceState::Offline);
    assert_eq!(
        to_bob.status_text, "",
        "an invisible user's status is not shown"
    );
    assert_eq!(
        query(&alice, alice_id).await?.state,
        PresenceState::Invisible
    );

    // The choice is kept: a new connection after a restart still shows it.
    node.restart().await?;
    let (again, _) = login(&node, "alice", PASSWORD, "alice-device").await?;
    let bob2 = login(&node, "bob", PASSWORD, "bob-device").await?.0;
    assert_eq!(
        query(&again, alice_id).await?.state,
        PresenceState::Invisible
    );
    assert_eq!(query(&bob2, alice_id).await?.state, PresenceState::Offline);

    // Too long a status is refused with a reason.
    let long = "x".repeat(101);
    match again
        .request(Request::SetPresence {
            choice: PresenceChoice::Auto,
            status_text: long,
        })
        .await
    {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::BadRequest)),
        Ok(r) => anyhow::bail!("expected bad_request, got {r:?}"),
    }
    Ok(())
}

/// The next typing event about `discussion` with `want`: (who, expires_in_ms).
async fn typing_event(conn: &Connection, id: &str, want: bool) -> anyhow::Result<(String, u64)> {
    within(10, "typing event", async {
        loop {
            match conn.next_event().await {
                Some(Event::Typing {
                    discussion,
                    user,
                    typing,
                    expires_in_ms,
                }) if discussion == id && typing == want => return Ok((user, expires_in_ms)),
                Some(_) => {}
                None => anyhow::bail!("the event stream ended"),
            }
        }
    })
    .await?
}

#[tokio::test]
async fn typing_reaches_members_and_expires_by_itself() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut config = test_config();
    config.presence.typing_ttl_ms = 400;
    let node = TestNode::spawn_with(config).await?;
    let alice = user(&node, "alice").await?;
    let bob = user(&node, "bob").await?;
    let carol = user(&node, "carol").await?;
    let dialog = discussion(&alice, Request::OpenDialog { with: "bob".into() }).await?;
    ask(
        &alice,
        Request::Typing {
            discussion: dialog.id.clone(),
            typing: true,
        },
    )
    .await?;
    let (who, ttl) = typing_event(&bob, &dialog.id, true).await?;
    assert_eq!(who, "alice@test.local");
    assert_eq!(ttl, 400);
    // Not renewed: it ends by itself.
    let (who, _) = typing_event(&bob, &dialog.id, false).await?;
    assert_eq!(who, "alice@test.local");

    // Started and stopped by hand.
    for typing_now in [true, false] {
        ask(
            &alice,
            Request::Typing {
                discussion: dialog.id.clone(),
                typing: typing_now,
            },
        )
        .await?;
        typing_event(&bob, &dialog.id, typing_now).await?;
    }

    // Someone who cannot read the dialog cannot type in it.
    match carol
        .request(Request::Typing {
            discussion: dialog.id.clone(),
            typing: true,
        })
        .await
    {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::NotFound)),
        Ok(r) => anyhow::bail!("expected not_found, got {r:?}"),
    }
    // Nothing about typing was ever stored in the dialog's log.
    match ask(
        &bob,
        Request::History {
            discussion: dialog.id.clone(),
            before: None,
            limit: 100,
        },
    )
    .await?
    {
        Reply::Events { events, .. } => assert_eq!(events.len(), 1, "only its creation"),
        other => anyhow::bail!("expected events, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_burst_of_changes_reaches_contacts_as_one_update() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut config = test_config();
    config.presence.coalesce_ms = 3000;
    let node = TestNode::spawn_with(config).await?;
    let bob = user(&node, "bob").await?;
    let alice = user(&node, "alice").await?;
    discussion(&alice, Request::OpenDialog { with: "bob".into() }).await?;
    let alice_id = "alice@test.local";
    // Bob is told at a tick; the next one is a whole period away, so the burst below falls
    // between two ticks.
    sees(&bob, alice_id, PresenceState::Available).await?;
    set(&alice, PresenceChoice::Away, "").await?;
    set(&alice, PresenceChoice::Dnd, "").await?;
    set(&alice, PresenceChoice::Auto, "back").await?;
    let told = within(10, "the coalesced update", async {
        let mut told = Vec::new();
        loop {
            match bob.next_event().await {
                Some(Event::Presence { users }) => {
                    told.extend(users.into_iter().filter(|u| u.user == alice_id));
                    if told.iter().any(|u| u.status_text == "back") {
                        return Ok::<_, anyhow::Error>(told);
                    }
                }
                Some(_) => {}
                None => anyhow::bail!("the event stream ended"),
            }
        }
    })
    .await??;
    assert_eq!(told.len(), 1, "one update for three changes: {told:?}");
    assert_eq!(told[0].state, PresenceState::Available);
    Ok(())
}
