use veche_client::protocol::admin::AdminReply;
use veche_client::protocol::frame;
use veche_client::protocol::{ClientFrame, ErrorCode, Request, ServerFrame, close};
use veche_client::{ConnectError, Connection, Trust};
use veche_node::test_utils::{TestNode, test_config};

use crate::support::{
    PASSWORD, client_config, close_code, connect, login, next_non_presence_event, raw, subscribe,
    within,
};

#[tokio::test]
async fn a_protocol_version_mismatch_gets_a_clear_error() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let mut config = client_config(&node);
    config.versions = vec![99, 100];
    match within(15, "connect", Connection::connect(&config)).await? {
        Err(ConnectError::UnsupportedVersion { supported }) => assert_eq!(supported, vec![1]),
        other => anyhow::bail!("expected UnsupportedVersion, got {other:?}"),
    }
    Ok(())
}

/// Reads frames until the node's connection-level error arrives.
async fn final_error(recv: &mut quinn::RecvStream) -> anyhow::Result<ErrorCode> {
    loop {
        match within(
            10,
            "error frame",
            frame::read::<ServerFrame, _>(recv, 1 << 20),
        )
        .await??
        {
            Some(ServerFrame::Error { id: None, error }) => return Ok(error.code),
            Some(_) => continue,
            None => anyhow::bail!("stream ended without an error frame"),
        }
    }
}

async fn hello(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) -> anyhow::Result<()> {
    let hello = ClientFrame::Hello {
        versions: vec![1],
        client: "raw-test".into(),
    };
    frame::write(send, &hello, 1024).await?;
    let welcome = within(10, "welcome", frame::read::<ServerFrame, _>(recv, 1 << 20)).await??;
    anyhow::ensure!(
        matches!(welcome, Some(ServerFrame::Welcome { version: 1, .. })),
        "{welcome:?}"
    );
    Ok(())
}

#[tokio::test]
async fn oversize_frames_and_garbage_close_only_their_own_connection() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("ivan", PASSWORD, false).await?;
    let (good, _) = login(&node, "ivan", PASSWORD, "good").await?;

    // 1. A frame announcing 100 MB before authentication.
    let (conn, mut send, mut recv) = raw(&node).await?;
    hello(&mut send, &mut recv).await?;
    send.write_all(&(100u32 << 20).to_be_bytes()).await?;
    assert_eq!(final_error(&mut recv).await?, ErrorCode::FrameTooLarge);
    let closed = within(10, "oversize connection closes", conn.closed()).await?;
    assert_eq!(close_code(&closed), Some(u64::from(close::FRAME_TOO_LARGE)));

    // 2. A well-sized frame of random bytes.
    let (conn, mut send, mut recv) = raw(&node).await?;
    hello(&mut send, &mut recv).await?;
    let garbage: Vec<u8> = (0..512).map(|_| rand::random::<u8>() | 0x80).collect();
    send.write_all(&(garbage.len() as u32).to_be_bytes())
        .await?;
    send.write_all(&garbage).await?;
    assert_eq!(final_error(&mut recv).await?, ErrorCode::MalformedFrame);
    let closed = within(10, "garbage connection closes", conn.closed()).await?;
    assert_eq!(close_code(&closed), Some(u64::from(close::MALFORMED_FRAME)));

    // 3. Garbage instead of hello.
    let (conn, mut send, _recv) = raw(&node).await?;
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
    let closed = within(10, "garbage-hello connection closes", conn.closed()).await?;
    assert!(close_code(&closed).is_some(), "{closed:?}");

    // 4. A valid frame of the wrong shape (unknown method).
    let (conn, mut send, mut recv) = raw(&node).await?;
    hello(&mut send, &mut recv).await?;
    #[derive(serde::Serialize)]
    struct Bogus {
        r#type: &'static str,
        id: u64,
        request: std::collections::BTreeMap<&'static str, &'static str>,
    }
    let bogus = Bogus {
        r#type: "request",
        id: 1,
        request: [("method", "format_disk")].into(),
    };
    frame::write(&mut send, &bogus, 1024).await?;
    assert_eq!(final_error(&mut recv).await?, ErrorCode::MalformedFrame);
    within(10, "bogus connection closes", conn.closed()).await?;

    // The well-behaved client never noticed.
    assert_eq!(good.whoami().await?.login, "ivan");
    assert!(matches!(
        good.request(Request::Ping).await?,
        veche_client::protocol::Reply::Pong { .. }
    ));
    Ok(())
}

#[tokio::test]
async fn an_authenticated_client_may_send_larger_frames_up_to_the_limit() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("jane", PASSWORD, false).await?;
    let (conn, _) = login(&node, "jane", PASSWORD, "d").await?;
    // A 200 KB password is over the unauthenticated limit but under the 1 MiB one: the frame
    // is accepted and the request refused on its merits.
    let e = conn
        .request(Request::ChangePassword {
            old_password: "x".repeat(200_000),
            new_password: "y".repeat(10),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCredentials), "{e:?}");
    assert_eq!(conn.whoami().await?.login, "jane");
    Ok(())
}

#[tokio::test]
async fn clients_that_do_not_authenticate_in_time_are_dropped() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut config = test_config();
    config.server.handshake_timeout_secs = 3;
    let node = TestNode::spawn_with(config).await?;
    let conn = connect(&node).await?;
    let reason = within(10, "idle unauthenticated connection closes", conn.closed()).await?;
    assert_eq!(reason.code, Some(u64::from(close::AUTH_TIMEOUT)));
    Ok(())
}

#[tokio::test]
async fn connections_per_address_are_capped() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut config = test_config();
    config.server.max_connections_per_ip = 2;
    config.server.max_unauthenticated_per_ip = 2;
    // Long enough that only the client's close can free a slot during this test.
    config.server.handshake_timeout_secs = 60;
    let node = TestNode::spawn_with(config).await?;
    let first = connect(&node).await?;
    let _second = connect(&node).await?;
    let refused = within(
        15,
        "third connect",
        Connection::connect(&client_config(&node)),
    )
    .await?;
    match refused {
        Err(ConnectError::Connection(message)) => assert!(message.contains("refused"), "{message}"),
        other => {
            anyhow::bail!("a third connection from the same address is refused, got {other:?}")
        }
    }
    first.close().await;
    // The slot is released once the node sees the close.
    let mut admitted = false;
    for _ in 0..50 {
        if within(
            15,
            "retry connect",
            Connection::connect(&client_config(&node)),
        )
        .await?
        .is_ok()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(admitted, "a closed connection frees its slot");
    Ok(())
}

#[tokio::test]
async fn clients_can_pin_the_certificate_fingerprint() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let mut config = client_config(&node);
    config.trust = Trust::Fingerprint(node.info().cert_fingerprint.clone());
    let conn = within(15, "pinned connect", Connection::connect(&config)).await??;
    assert_eq!(conn.node(), "test.local");

    config.trust = Trust::Fingerprint("00".repeat(32));
    assert!(
        within(15, "wrong pin", Connection::connect(&config))
            .await?
            .is_err()
    );

    // A CA that did not issue the node's certificate is not trusted either.
    let other = TestNode::spawn().await?;
    config.trust = Trust::CaFile(other.ca_path());
    assert!(
        within(15, "foreign CA", Connection::connect(&config))
            .await?
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn administrators_can_bring_their_own_certificate() -> anyhow::Result<()> {
    let _guard = subscribe();
    // Node A's generated certificate stands in for one from the company's own CA.
    let issuer = TestNode::spawn().await?;
    let tls = issuer.data_dir().join("tls");
    let mut config = test_config();
    config.tls.cert_file = Some(tls.join("server.pem"));
    config.tls.key_file = Some(tls.join("server.key"));
    let node = TestNode::spawn_with(config).await?;
    assert!(
        node.info().ca_path.is_none(),
        "no CA is generated when a certificate is configured"
    );
    assert_eq!(node.info().cert_fingerprint, issuer.info().cert_fingerprint);

    let mut client = client_config(&node);
    client.trust = Trust::CaFile(issuer.ca_path());
    let conn = within(
        15,
        "connect with the company CA",
        Connection::connect(&client),
    )
    .await??;
    assert_eq!(conn.node(), "test.local");

    // A missing key file is a clear start-up error.
    let mut config = test_config();
    config.tls.cert_file = Some(tls.join("server.pem"));
    config.tls.key_file = Some(tls.join("missing.key"));
    let err = TestNode::spawn_with(config).await.unwrap_err().to_string();
    assert!(err.contains("missing.key"), "{err}");
    Ok(())
}

#[tokio::test]
async fn shutdown_tells_clients_and_closes_with_its_code() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("olga", PASSWORD, false).await?;
    let (conn, _) = login(&node, "olga", PASSWORD, "d").await?;
    within(30, "node stops", node.stop()).await?;
    let reason = within(5, "connection closes", conn.closed()).await?;
    assert_eq!(reason.code, Some(u64::from(close::SHUTTING_DOWN)));
    let event = within(5, "shutdown event", next_non_presence_event(&conn)).await?;
    assert_eq!(event, Some(veche_client::protocol::Event::ShuttingDown));
    assert!(
        !node.data_dir().join("admin.sock").exists(),
        "the admin socket is removed on shutdown"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_answers_requests_in_flight() -> anyhow::Result<()> {
    let _guard = subscribe();
    let mut node = TestNode::spawn().await?;
    node.add_user("pavel", PASSWORD, false).await?;
    let conn = std::sync::Arc::new(connect(&node).await?);
    // Eight logins queue behind the bounded password hashing, so some are still being worked
    // on when the node is told to stop.
    let mut logins = Vec::new();
    for i in 0..8 {
        let conn = conn.clone();
        logins.push(tokio::spawn(async move {
            conn.login("pavel", PASSWORD, &format!("d{i}"), "d").await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    within(30, "node stops", node.stop()).await?;
    for login in logins {
        let logged = login.await?;
        assert!(
            logged.is_ok(),
            "a request the node was working on is answered: {logged:?}"
        );
    }
    // And what it answered is stored.
    node.restart().await?;
    let AdminReply::Sessions { sessions } = node
        .admin(veche_client::protocol::admin::AdminRequest::Sessions {
            login: "pavel".into(),
        })
        .await?
    else {
        anyhow::bail!("expected sessions");
    };
    assert_eq!(sessions.len(), 8);
    Ok(())
}

#[tokio::test]
async fn the_data_folder_keeps_secrets_to_the_node_user() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let mode = |p: &std::path::Path| -> anyhow::Result<u32> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
    };
    let dir = node.data_dir();
    assert_eq!(mode(dir)?, 0o700, "data folder");
    for secret in [
        "identity.pem",
        "setup-token",
        "veche.db",
        "admin.sock",
        "tls/ca.key",
        "tls/server.key",
    ] {
        assert_eq!(mode(&dir.join(secret))?, 0o600, "{secret}");
    }
    // What clients need is readable.
    assert_eq!(mode(&dir.join("tls/ca.pem"))?, 0o644);
    Ok(())
}
