use anyhow::Context;
use veche_client::protocol::admin::{AdminReply, AdminRequest};
use veche_client::protocol::{ErrorCode, Event, Reply, Request, close};
use veche_node::test_utils::TestNode;

use crate::support::{PASSWORD, connect, login, next_non_presence_event, subscribe, within};

#[tokio::test]
async fn first_admin_from_setup_token_then_a_second_user_logs_in() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let token = node
        .info()
        .setup_token
        .clone()
        .context("a node with no users prints a setup token")?;
    let on_disk = std::fs::read_to_string(node.data_dir().join("setup-token"))?;
    assert_eq!(on_disk.trim(), token);

    let conn = connect(&node).await?;
    let setup = |token: &str| Request::Setup {
        token: token.to_owned(),
        login: "root".into(),
        password: PASSWORD.into(),
        display_name: "Administrator".into(),
        email: "root@example.com".into(),
    };
    let wrong = conn.request(setup("not-the-token")).await.unwrap_err();
    assert_eq!(wrong.code(), Some(ErrorCode::InvalidCredentials));
    let Reply::LoggedIn { user, .. } = conn.request(setup(&token)).await? else {
        anyhow::bail!("setup must log the administrator in");
    };
    assert_eq!(user.id, "root@test.local");
    assert!(user.admin);

    // The token is single-use.
    let other = connect(&node).await?;
    let reused = other.request(setup(&token)).await.unwrap_err();
    assert_eq!(reused.code(), Some(ErrorCode::InvalidCredentials));
    assert!(!node.data_dir().join("setup-token").exists());

    // The administrator creates a user over QUIC; that user logs in from another connection.
    let created = conn
        .request(Request::Admin {
            command: AdminRequest::UserAdd {
                login: "bob".into(),
                display_name: "Bob".into(),
                email: "bob@example.com".into(),
                password: PASSWORD.into(),
                admin: false,
                department: String::new(),
            },
        })
        .await?;
    assert!(matches!(
        created,
        Reply::Admin {
            result: AdminReply::User { .. }
        }
    ));

    let (bob, logged) = login(&node, "bob", PASSWORD, "bob-laptop").await?;
    assert_eq!(logged.user.id, "bob@test.local");
    assert_eq!(logged.token.len(), 64, "256-bit token, hex");
    assert_eq!(bob.whoami().await?.display_name, "Bob");

    // Bob is no administrator.
    let denied = bob
        .request(Request::Admin {
            command: AdminRequest::UserList,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some(ErrorCode::Forbidden));
    Ok(())
}

#[tokio::test]
async fn login_ok_wrong_password_unknown_user_and_locked() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("alice", PASSWORD, false).await?;

    let conn = connect(&node).await?;
    let unauthenticated = conn.whoami().await.unwrap_err();
    assert_eq!(unauthenticated.code(), Some(ErrorCode::Unauthenticated));

    let wrong = conn
        .login("alice", "wrong password", "d1", "d1")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Some(ErrorCode::InvalidCredentials));
    let unknown = conn
        .login("nobody", PASSWORD, "d1", "d1")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::InvalidCredentials));
    let RequestErrorText(a) = RequestErrorText::of(&wrong);
    let RequestErrorText(b) = RequestErrorText::of(&unknown);
    assert_eq!(a, b, "a wrong password and an unknown user look the same");

    let ok = conn.login("alice", PASSWORD, "d1", "Laptop").await?;
    assert_eq!(ok.user.login, "alice");
    assert_eq!(ok.session.device_name, "Laptop");

    node.admin(AdminRequest::UserLock {
        login: "alice".into(),
    })
    .await?;
    let other = connect(&node).await?;
    let locked = other
        .login("alice", PASSWORD, "d2", "d2")
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Some(ErrorCode::AccountLocked));

    node.admin(AdminRequest::UserUnlock {
        login: "alice".into(),
    })
    .await?;
    other.login("alice", PASSWORD, "d2", "d2").await?;
    Ok(())
}

struct RequestErrorText(String);
impl RequestErrorText {
    fn of(e: &veche_client::RequestError) -> Self {
        match e {
            veche_client::RequestError::Server(body) => {
                Self(format!("{:?} {}", body.code, body.message))
            }
            other => Self(other.to_string()),
        }
    }
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_with_a_retry_time() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("carol", PASSWORD, false).await?;
    node.add_user("dave", PASSWORD, false).await?;
    let conn = connect(&node).await?;
    for _ in 0..5 {
        let e = conn.login("carol", "guess", "d", "d").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidCredentials));
    }
    // Even the right password is refused while the account is throttled.
    let throttled = conn.login("carol", PASSWORD, "d", "d").await.unwrap_err();
    let veche_client::RequestError::Server(body) = throttled else {
        anyhow::bail!("expected a server error, got {throttled:?}");
    };
    assert_eq!(body.code, ErrorCode::Throttled);
    let wait = body
        .retry_after_ms
        .context("a throttled error says when to retry")?;
    assert!(
        wait > 0 && wait <= 1000,
        "first delay is at most one second, got {wait} ms"
    );
    assert!(body.message.contains("retry"), "{}", body.message);

    // Other accounts from the same address are not affected.
    conn.login("dave", PASSWORD, "d", "d").await?;

    // After the delay, the right password works again.
    tokio::time::sleep(std::time::Duration::from_millis(wait + 50)).await;
    connect(&node)
        .await?
        .login("carol", PASSWORD, "d", "d")
        .await?;
    Ok(())
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut config = veche_node::test_utils::test_config();
    config.auth.ip_failures_per_minute = 3;
    let node = TestNode::spawn_with(config).await?;
    node.add_user("erin", PASSWORD, false).await?;
    let conn = connect(&node).await?;
    for login in ["x1", "x2", "x3"] {
        conn.login(login, "guess", "d", "d").await.unwrap_err();
    }
    let e = conn.login("erin", PASSWORD, "d", "d").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Throttled));
    Ok(())
}

#[tokio::test]
async fn revoking_a_session_closes_its_connection() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("bob", PASSWORD, false).await?;
    let (laptop, laptop_session) = login(&node, "bob", PASSWORD, "laptop").await?;
    let (phone, _) = login(&node, "bob", PASSWORD, "phone").await?;

    let AdminReply::Sessions { sessions } = node
        .admin(AdminRequest::Sessions {
            login: "bob".into(),
        })
        .await?
    else {
        anyhow::bail!("expected sessions");
    };
    assert_eq!(sessions.len(), 2);

    let started = std::time::Instant::now();
    node.admin(AdminRequest::Revoke {
        login: "bob".into(),
        session_id: Some(laptop_session.session.id.clone()),
    })
    .await?;
    let reason = within(5, "revoked connection closes", laptop.closed()).await?;
    assert_eq!(reason.code, Some(u64::from(close::SESSION_REVOKED)));
    tracing::info!(elapsed = ?started.elapsed(), "revoked connection closed");

    // The other device keeps working; the revoked token no longer resumes.
    assert_eq!(phone.whoami().await?.login, "bob");
    let again = connect(&node).await?;
    let e = again
        .resume(&laptop_session.token, "laptop")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCredentials));

    // Locking the user ends the rest, with an event first when it can be delivered.
    node.admin(AdminRequest::UserLock {
        login: "bob".into(),
    })
    .await?;
    let reason = within(5, "locked user's connection closes", phone.closed()).await?;
    assert_eq!(reason.code, Some(u64::from(close::SESSION_REVOKED)));
    if let Some(event) = next_non_presence_event(&phone).await {
        assert!(matches!(event, Event::SessionEnded { .. }), "{event:?}");
    }
    Ok(())
}

#[tokio::test]
async fn restart_keeps_users_and_sessions() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("frank", PASSWORD, true).await?;
    let (conn, logged) = login(&node, "frank", PASSWORD, "desk").await?;
    drop(conn);
    let identity = node.info().identity.clone();
    let fingerprint = node.info().cert_fingerprint.clone();

    node.restart().await?;
    assert!(
        node.info().setup_token.is_none(),
        "a node with users prints no setup token"
    );
    assert_eq!(
        node.info().identity,
        identity,
        "the identity key survives a restart"
    );
    assert_eq!(
        node.info().cert_fingerprint,
        fingerprint,
        "the certificate survives a restart"
    );

    let conn = connect(&node).await?;
    let wrong_device = conn.resume(&logged.token, "other-desk").await.unwrap_err();
    assert_eq!(wrong_device.code(), Some(ErrorCode::InvalidCredentials));
    let (session, user) = conn.resume(&logged.token, "desk").await?;
    assert_eq!(session.id, logged.session.id);
    assert_eq!(user.id, "frank@test.local");
    assert!(user.admin);
    login(&node, "frank", PASSWORD, "desk2").await?;

    // Logging out ends the token and the connection.
    conn.request(Request::Logout).await?;
    let reason = within(5, "logged-out connection closes", conn.closed()).await?;
    assert_eq!(reason.code, Some(u64::from(close::SESSION_REVOKED)));
    let again = connect(&node).await?;
    let e = again.resume(&logged.token, "desk").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCredentials));
    Ok(())
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("gina", PASSWORD, false).await?;
    let (a, _) = login(&node, "gina", PASSWORD, "a").await?;
    let (b, _) = login(&node, "gina", PASSWORD, "b").await?;
    let short = a
        .request(Request::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Some(ErrorCode::BadRequest));
    a.request(Request::ChangePassword {
        old_password: PASSWORD.into(),
        new_password: "a much better one".into(),
    })
    .await?;
    within(5, "other session closes", b.closed()).await?;
    assert_eq!(a.whoami().await?.login, "gina");
    login(&node, "gina", "a much better one", "c").await?;
    Ok(())
}

#[tokio::test]
async fn admin_actions_are_audited_in_a_hash_chain() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("hank", PASSWORD, false).await?;
    node.admin(AdminRequest::UserLock {
        login: "hank".into(),
    })
    .await?;
    node.admin(AdminRequest::UserPasswd {
        login: "hank".into(),
        password: "new password 1".into(),
    })
    .await?;
    let AdminReply::Audit { records } = node.admin(AdminRequest::AuditLog { limit: 10 }).await?
    else {
        anyhow::bail!("expected audit records");
    };
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["user.passwd", "user.lock", "user.add"]);
    assert!(
        records
            .iter()
            .all(|r| r.actor == "test" && r.target == "hank@test.local")
    );
    assert!(
        records.iter().all(|r| !r.detail.contains("new password")),
        "no secrets in the audit log"
    );
    Ok(())
}

#[tokio::test]
async fn creating_a_user_another_way_retires_the_setup_token() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let token = node.info().setup_token.clone().context("setup token")?;
    node.add_user("root", PASSWORD, true).await?;
    assert!(!node.data_dir().join("setup-token").exists());
    let conn = connect(&node).await?;
    let e = conn
        .request(Request::Setup {
            token,
            login: "intruder".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            email: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCredentials));
    Ok(())
}

#[tokio::test]
async fn parallel_guesses_cannot_outrun_the_throttle() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("kim", PASSWORD, false).await?;
    // Connect first, then guess all at once.
    let mut conns = Vec::new();
    for _ in 0..12 {
        conns.push(std::sync::Arc::new(connect(&node).await?));
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(conns.len()));
    let mut tasks = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let (conn, barrier) = (conn.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let e = conn
                .login("kim", &format!("guess {i}"), "d", "d")
                .await
                .unwrap_err();
            e.code()
        }));
    }
    let mut judged = 0;
    for t in tasks {
        match t.await? {
            Some(ErrorCode::InvalidCredentials) => judged += 1,
            Some(ErrorCode::Throttled) => {}
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    assert!(
        judged <= 5,
        "{judged} guesses were checked; at most 5 may be before the delay"
    );
    assert!(judged >= 1, "some guesses are checked");
    Ok(())
}

#[tokio::test]
async fn a_login_racing_a_lock_never_keeps_a_session() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("lena", PASSWORD, false).await?;
    for round in 0..8 {
        node.admin(AdminRequest::UserUnlock {
            login: "lena".into(),
        })
        .await?;
        let conn = connect(&node).await?;
        let device = format!("race-{round}");
        let (login, lock) = tokio::join!(
            conn.login("lena", PASSWORD, &device, "race"),
            node.admin(AdminRequest::UserLock {
                login: "lena".into()
            }),
        );
        lock?;
        match login {
            // Logged in before the lock: the lock must have ended the session and connection.
            Ok(logged) => {
                within(5, "raced connection closes", conn.closed()).await?;
                let again = connect(&node).await?;
                let e = again.resume(&logged.token, &device).await.unwrap_err();
                assert_eq!(
                    e.code(),
                    Some(ErrorCode::InvalidCredentials),
                    "round {round}"
                );
            }
            Err(e) => assert!(
                matches!(
                    e.code(),
                    Some(ErrorCode::InvalidCredentials | ErrorCode::AccountLocked)
                ),
                "round {round}: {e:?}"
            ),
        }
        let AdminReply::Sessions { sessions } = node
            .admin(AdminRequest::Sessions {
                login: "lena".into(),
            })
            .await?
        else {
            anyhow::bail!("expected sessions");
        };
        assert!(
            sessions.is_empty(),
            "round {round}: a locked user kept {sessions:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_resume_racing_a_revoke_never_keeps_a_live_connection() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("mila", PASSWORD, false).await?;
    for round in 0..15 {
        let (first, logged) = login(&node, "mila", PASSWORD, "phone").await?;
        drop(first);
        let conn = connect(&node).await?;
        let (resumed, revoked) = tokio::join!(
            conn.resume(&logged.token, "phone"),
            node.admin(AdminRequest::Revoke {
                login: "mila".into(),
                session_id: Some(logged.session.id.clone())
            }),
        );
        revoked?;
        match resumed {
            // Resumed before the revoke: the connection must be closed by it.
            Ok(_) => {
                let reason = within(5, "raced connection closes", conn.closed()).await?;
                assert_eq!(
                    reason.code,
                    Some(u64::from(close::SESSION_REVOKED)),
                    "round {round}"
                );
            }
            Err(e) => assert_eq!(
                e.code(),
                Some(ErrorCode::InvalidCredentials),
                "round {round}: {e:?}"
            ),
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_authenticated_client_may_stay_silent_past_the_login_deadline() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut config = veche_node::test_utils::test_config();
    config.server.handshake_timeout_secs = 2;
    let node = TestNode::spawn_with(config).await?;
    node.add_user("nina", PASSWORD, false).await?;
    let (conn, _) = login(&node, "nina", PASSWORD, "d").await?;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(conn.whoami().await?.login, "nina");
    Ok(())
}
