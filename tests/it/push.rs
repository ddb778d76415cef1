//! Push notifications: a real node pushing to real HTTP receivers on loopback; Web Push
//! payloads decrypted here with the subscription's keys (RFC 8291), independently of the node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use aes_gcm::aead::{Aead, KeyInit};
use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Verifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use veche_client::Connection;
use veche_client::protocol::presence::{NotificationLevel, PresenceChoice, PushTarget};
use veche_client::protocol::{ErrorCode, Reply, Request, Timestamp};
use veche_node::test_utils::{TestNode, test_config};

use crate::support::*;

/// One request a receiver got.
#[derive(Debug)]
struct Pushed {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// What a receiver answers: 503 while `fail_next` > 0 (counting down), else `status`.
#[derive(Debug, Clone)]
struct Answer {
    status: Arc<AtomicU16>,
    fail_next: Arc<AtomicUsize>,
}

/// An HTTP receiver on loopback: its base URL, what it receives, and how it answers.
async fn receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<Pushed>, Answer)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = Answer {
        status: Arc::new(AtomicU16::new(201)),
        fail_next: Arc::new(AtomicUsize::new(0)),
    };
    let a = answer.clone();
    let app = axum::Router::new().fallback(axum::routing::post(
        move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let a = a.clone();
            async move {
                let failing = a
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let _ = tx.send(Pushed {
                    path: uri.path().to_owned(),
                    headers,
                    body,
                });
                if failing {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::from_u16(a.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
                }
            }
        },
    ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, rx, answer))
}

/// The next request, which must be to `path`.
async fn next_to(rx: &mut mpsc::UnboundedReceiver<Pushed>, path: &str) -> anyhow::Result<Pushed> {
    let p = within(15, &format!("a push to {path}"), rx.recv())
        .await?
        .context("the receiver stopped")?;
    anyhow::ensure!(
        p.path == path,
        "expected a push to {path}, got one to {}",
        p.path
    );
    Ok(p)
}

/// A browser's push subscription: its P-256 key pair and authentication secret.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        loop {
            let bytes: [u8; 32] = rand::random();
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                return Self {
                    secret,
                    auth: rand::random(),
                };
            }
        }
    }

    fn target(&self, endpoint: String) -> PushTarget {
        PushTarget::WebPush {
            endpoint,
            p256dh: URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false)),
            auth: URL_SAFE_NO_PAD.encode(self.auth),
        }
    }

    /// Decrypts an `aes128gcm` body as the browser would (RFC 8291 §3.4, RFC 8188 §2).
    fn decrypt(&self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        decrypt(&self.secret, &self.auth, body)
    }
}

fn decrypt(ua: &p256::SecretKey, auth: &[u8], body: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(body.len() > 21, "too short for an aes128gcm header");
    let salt = &body[..16];
    let record_size = u32::from_be_bytes(body[16..20].try_into()?);
    let id_len = usize::from(body[20]);
    let as_public_bytes = body.get(21..21 + id_len).context("key id")?;
    let ciphertext = &body[21 + id_len..];
    anyhow::ensure!(
        ciphertext.len() <= record_size as usize,
        "a notification is one record"
    );
    let as_public = p256::PublicKey::from_sec1_bytes(as_public_bytes)?;
    let shared = p256::ecdh::diffie_hellman(ua.to_nonzero_scalar(), as_public.as_affine());
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(ua.public_key().to_encoded_point(false).as_bytes());
    info.extend_from_slice(as_public_bytes);
    let mut ikm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&info, &mut ikm)
        .map_err(|e| anyhow::anyhow!("hkdf: {e}"))?;
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut key = [0u8; 16];
    let mut nonce = [0u8; 12];
    hk.expand(b"Content-Encoding: aes128gcm\0", &mut key)
        .map_err(|e| anyhow::anyhow!("hkdf: {e}"))?;
    hk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|e| anyhow::anyhow!("hkdf: {e}"))?;
    let plain = aes_gcm::Aes128Gcm::new(&key.into())
        .decrypt(&nonce.into(), ciphertext)
        .map_err(|_| {
            anyhow::anyhow!("the payload does not decrypt with the subscription's keys")
        })?;
    let end = plain
        .iter()
        .rposition(|b| *b != 0)
        .context("no padding delimiter")?;
    anyhow::ensure!(plain[end] == 2, "the last record ends with delimiter 2");
    Ok(plain[..end].to_vec())
}

#[test]
fn the_test_decryptor_reads_the_rfc_8291_example() -> anyhow::Result<()> {
    // RFC 8291, Appendix A.
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s);
    let ua = p256::SecretKey::from_slice(&b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")?)?;
    let body = b64(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
    )?;
    let plain = decrypt(&ua, &b64("BTBZMqHH6r4Tts7J_aSIgg")?, &body)?;
    assert_eq!(plain, b"When I grow up, I want to be a watermelon");
    let mut tampered = body.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    assert!(decrypt(&ua, &b64("BTBZMqHH6r4Tts7J_aSIgg")?, &tampered).is_err());
    Ok(())
}

fn json(bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(bytes)?)
}

async fn register(conn: &Connection, target: PushTarget) -> anyhow::Result<String> {
    match ask(conn, Request::RegisterPush { target }).await? {
        Reply::PushRegistered { id } => Ok(id),
        other => anyhow::bail!("expected push_registered, got {other:?}"),
    }
}

async fn endpoints(conn: &Connection) -> anyhow::Result<usize> {
    match ask(conn, Request::ListPush).await? {
        Reply::PushEndpoints { endpoints } => Ok(endpoints.len()),
        other => anyhow::bail!("expected push_endpoints, got {other:?}"),
    }
}

#[tokio::test]
async fn web_push_reaches_a_user_away_from_the_screen_encrypted_to_their_browser()
-> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let (url, mut pushed, answer) = receiver().await?;
    let alice = user(&node, "alice").await?;
    node.add_user("bob", PASSWORD, false).await?;
    let carol = user(&node, "carol").await?;
    let (phone, _) = login(&node, "bob", PASSWORD, "phone").await?;
    let (laptop, _) = login(&node, "bob", PASSWORD, "laptop").await?;
    let to_bob = discussion(&alice, Request::OpenDialog { with: "bob".into() }).await?;
    let to_carol = discussion(
        &alice,
        Request::OpenDialog {
            with: "carol".into(),
        },
    )
    .await?;

    let vapid = match ask(&phone, Request::PushConfig).await? {
        Reply::PushConfig {
            vapid_public_key, ..
        } => vapid_public_key,
        other => anyhow::bail!("expected push_config, got {other:?}"),
    };
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&vapid)?.len(),
        65,
        "an uncompressed P-256 point"
    );

    // Endpoints that are not public push services are refused, with the reason.
    let browser = Browser::new();
    for (endpoint, why) in [
        ("http://203.0.113.5/push".to_owned(), "https"),
        (
            "https://169.254.169.254/push".to_owned(),
            "not a public push service",
        ),
        (
            "https://10.1.2.3/push".to_owned(),
            "not a public push service",
        ),
    ] {
        match phone
            .request(Request::RegisterPush {
                target: browser.target(endpoint),
            })
            .await
        {
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::BadRequest));
                assert!(e.to_string().contains(why), "{e}");
            }
            Ok(r) => anyhow::bail!("expected bad_request, got {r:?}"),
        }
    }
    register(&phone, browser.target(format!("{url}/wp/bob"))).await?;
    let carols = Browser::new();
    register(&carol, carols.target(format!("{url}/wp/carol"))).await?;
    // The phone's app is closed; its session (and so its endpoint) stays.
    phone.close().await;
    carol.close().await;

    // Bob is at his laptop: no push.
    post(&alice, &to_bob.id, "m1", "while you are here").await?;
    // Carol is offline: pushed. The decider takes messages in order, so once carol's push is
    // out, bob's message above has been decided on.
    post(&alice, &to_carol.id, "c1", "marker").await?;
    next_to(&mut pushed, "/wp/carol").await?;

    // Bob's laptop has been idle for an hour: he is away, so he is pushed.
    ask(&laptop, Request::Activity { idle_ms: 3_600_000 }).await?;
    post(&alice, &to_bob.id, "m2", "are you there? 🙂").await?;
    let got = next_to(&mut pushed, "/wp/bob").await?;
    let header = |name: &str| {
        got.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-encoding"), "aes128gcm");
    assert_eq!(header("urgency"), "high", "a dialog message is urgent");
    assert!(!header("ttl").is_empty());
    assert_eq!(header("topic").len(), 32);
    let authorization = header("authorization");
    assert!(
        authorization.starts_with("vapid t=") && authorization.ends_with(&format!("k={vapid}")),
        "signed with the node's VAPID key: {authorization}"
    );
    let notification = json(&browser.decrypt(&got.body)?)?;
    assert_eq!(notification["text"], "are you there? 🙂", "{notification}");
    assert_eq!(
        notification["count"], 1,
        "the first message was never pushed"
    );
    assert_eq!(notification["reason"], "message");
    assert_eq!(notification["author"], "alice@test.local");
    assert_eq!(notification["discussion"], to_bob.id);
    assert!(
        carols.decrypt(&got.body).is_err(),
        "encrypted to bob's browser only"
    );

    // The push service says the subscription is gone: the endpoint is removed.
    answer.status.store(410, Ordering::SeqCst);
    post(&alice, &to_bob.id, "m3", "hello?").await?;
    next_to(&mut pushed, "/wp/bob").await?;
    eventually(10, "the gone endpoint removed", async || {
        anyhow::ensure!(endpoints(&laptop).await? == 0);
        Ok(())
    })
    .await?;
    Ok(())
}

/// A node pushing to a company gateway `corp` (a receiver here): alice, and bob and dave with
/// their devices registered with the gateway (`tok-bob`, `tok-dave`), connected; alice's
/// dialogs with each, and a group of the three.
struct Office {
    node: TestNode,
    pushed: mpsc::UnboundedReceiver<Pushed>,
    answer: Answer,
    alice: Connection,
    bob: Connection,
    dave: Connection,
    to_bob: veche_client::protocol::discussions::DiscussionInfo,
    to_dave: veche_client::protocol::discussions::DiscussionInfo,
    group: veche_client::protocol::discussions::DiscussionInfo,
}

async fn office(mut config: veche_node::config::Config) -> anyhow::Result<Office> {
    let (url, pushed, answer) = receiver().await?;
    config
        .push
        .gateways
        .insert("corp".into(), format!("{url}/gw"));
    let node = TestNode::spawn_with(config).await?;
    let alice = user(&node, "alice").await?;
    let bob = user(&node, "bob").await?;
    let dave = user(&node, "dave").await?;
    let to_bob = discussion(&alice, Request::OpenDialog { with: "bob".into() }).await?;
    let to_dave = discussion(
        &alice,
        Request::OpenDialog {
            with: "dave".into(),
        },
    )
    .await?;
    let group = discussion(
        &alice,
        Request::CreateGroup {
            title: "Warehouse".into(),
            members: vec!["bob".into(), "dave".into()],
        },
    )
    .await?;
    for (conn, key) in [(&bob, "tok-bob"), (&dave, "tok-dave")] {
        let target = PushTarget::Gateway {
            gateway: "corp".into(),
            pushkey: key.into(),
        };
        register(conn, target).await?;
    }
    Ok(Office {
        node,
        pushed,
        answer,
        alice,
        bob,
        dave,
        to_bob,
        to_dave,
        group,
    })
}

#[tokio::test]
async fn gateway_pushes_respect_dnd_levels_mutes_and_retry() -> anyhow::Result<()> {
    let _log = subscribe();
    let Office {
        node,
        mut pushed,
        answer,
        alice,
        bob,
        dave,
        to_bob,
        to_dave,
        group,
    } = office({
        let mut config = test_config();
        config.metrics.enabled = true;
        config.metrics.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config
    })
    .await?;
    let node_key = ed25519_dalek::VerifyingKey::from_bytes(
        &hex::decode(&node.info().identity)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("a 32-byte key"))?,
    )?;
    match bob
        .request(Request::RegisterPush {
            target: PushTarget::Gateway {
                gateway: "elsewhere".into(),
                pushkey: "x".into(),
            },
        })
        .await
    {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::BadRequest)),
        Ok(r) => anyhow::bail!("expected bad_request, got {r:?}"),
    }
    ask(
        &bob,
        Request::SetPresence {
            choice: PresenceChoice::Dnd,
            status_text: String::new(),
        },
    )
    .await?;
    bob.close().await;
    dave.close().await;

    // A marker: a message to dave, pushed; once it is out, everything before it is decided.
    let mut markers = 0;
    let mut marker = async |pushed: &mut mpsc::UnboundedReceiver<Pushed>| -> anyhow::Result<()> {
        markers += 1;
        post(&alice, &to_dave.id, &format!("marker-{markers}"), "marker").await?;
        let p = within(15, "dave's push", pushed.recv())
            .await?
            .context("receiver stopped")?;
        let body = json(&p.body)?;
        anyhow::ensure!(
            body["pushkey"] == "tok-dave",
            "expected dave's push, got {body}"
        );
        Ok(())
    };
    let next_bob = async |pushed: &mut mpsc::UnboundedReceiver<Pushed>| {
        let p = within(15, "bob's push", pushed.recv())
            .await?
            .context("receiver stopped")?;
        let body = json(&p.body)?;
        anyhow::ensure!(
            body["pushkey"] == "tok-bob",
            "expected bob's push, got {body}"
        );
        Ok::<_, anyhow::Error>(p)
    };

    // Do not disturb: nothing.
    post(&alice, &to_bob.id, "d1", "during dnd").await?;
    marker(&mut pushed).await?;

    // Back from DND (and offline again): pushed, signed by the node.
    let (bob, _) = login(&node, "bob", PASSWORD, "bob-device").await?;
    ask(
        &bob,
        Request::SetPresence {
            choice: PresenceChoice::Auto,
            status_text: String::new(),
        },
    )
    .await?;
    bob.close().await;
    // The gateway fails once: the same notification comes again.
    answer.fail_next.store(1, Ordering::SeqCst);
    post(&alice, &to_bob.id, "d2", "after dnd").await?;
    let first = next_bob(&mut pushed).await?;
    let again = next_bob(&mut pushed).await?;
    assert_eq!(first.body, again.body, "retried as it was");
    let samples =
        crate::metrics::scrape(&node.metrics_url().context("no metrics listener")?).await?;
    assert_eq!(samples.get("veche_push_failures_total", &[]), 1.0);
    assert_eq!(
        first.headers.get("veche-delivery"),
        again.headers.get("veche-delivery")
    );
    let body = json(&again.body)?;
    assert_eq!(body["notification"]["text"], "after dnd", "{body}");
    assert_eq!(
        body["notification"]["count"], 1,
        "the DND message was never pushed"
    );
    assert_eq!(body["user"], "bob@test.local");
    assert_eq!(body["device_id"], "bob-device");
    let ts = again.headers["veche-timestamp"].to_str()?;
    let sig = again.headers["veche-signature"]
        .to_str()?
        .strip_prefix("ed25519=")
        .context("an ed25519 signature")?;
    let sig = ed25519_dalek::Signature::from_slice(&hex::decode(sig)?)?;
    let body_text = std::str::from_utf8(&again.body)?;
    node_key.verify(format!("veche-push:{ts}.{body_text}").as_bytes(), &sig)?;
    assert!(
        node_key
            .verify(format!("veche-webhook:{ts}.{body_text}").as_bytes(), &sig)
            .is_err(),
        "a gateway request cannot pass for a webhook request"
    );

    // Groups notify of mentions by default, not of every message.
    post(&alice, &group.id, "g1", "hello all").await?;
    post(&alice, &group.id, "g2", "@bob look at this").await?;
    let got = json(&next_bob(&mut pushed).await?.body)?;
    assert_eq!(got["notification"]["text"], "@bob look at this", "{got}");
    assert_eq!(got["notification"]["reason"], "mention");
    assert_eq!(
        got["notification"]["count"], 1,
        "the plain group message was not pushed"
    );

    // Bob turns the group off, and mutes the dialog for an hour.
    let (bob, _) = login(&node, "bob", PASSWORD, "bob-device").await?;
    ask(
        &bob,
        Request::SetNotifications {
            discussion: group.id.clone(),
            level: NotificationLevel::Nothing,
            muted_until: None,
        },
    )
    .await?;
    let hour = Timestamp(Timestamp::now().as_millis() + 3_600_000);
    ask(
        &bob,
        Request::SetNotifications {
            discussion: to_bob.id.clone(),
            level: NotificationLevel::Default,
            muted_until: Some(hour),
        },
    )
    .await?;
    match ask(&bob, Request::Notifications).await? {
        Reply::NotificationSettings { settings } => assert_eq!(settings.len(), 2, "{settings:?}"),
        other => anyhow::bail!("expected settings, got {other:?}"),
    }
    // Not for a discussion bob cannot read.
    match bob
        .request(Request::SetNotifications {
            discussion: "nope@test.local".into(),
            level: NotificationLevel::All,
            muted_until: None,
        })
        .await
    {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::NotFound)),
        Ok(r) => anyhow::bail!("expected not_found, got {r:?}"),
    }
    bob.close().await;
    post(&alice, &group.id, "g3", "@bob again").await?;
    post(&alice, &to_bob.id, "d3", "muted").await?;
    // Back to the defaults: the dialog notifies again.
    let (bob, _) = login(&node, "bob", PASSWORD, "bob-device").await?;
    ask(
        &bob,
        Request::SetNotifications {
            discussion: to_bob.id.clone(),
            level: NotificationLevel::Default,
            muted_until: None,
        },
    )
    .await?;
    bob.close().await;
    marker(&mut pushed).await?;
    post(&alice, &to_bob.id, "d4", "unmuted").await?;
    let got = json(&next_bob(&mut pushed).await?.body)?;
    assert_eq!(got["notification"]["text"], "unmuted", "{got}");
    assert_eq!(
        got["notification"]["count"], 1,
        "muted messages were not pushed"
    );
    eventually(10, "the push queue empties", async || {
        anyhow::ensure!(node.push_queue_len().await? == 0);
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn waiting_notifications_are_dropped_when_access_ends_or_the_message_is_deleted()
-> anyhow::Result<()> {
    let _log = subscribe();
    let mut config = test_config();
    // A window long enough for the removal and the deletion to land inside it.
    config.push.coalesce_ms = 1500;
    let Office {
        node,
        mut pushed,
        alice,
        bob,
        dave,
        to_bob,
        to_dave,
        group,
        ..
    } = office(config).await?;
    bob.close().await;
    dave.close().await;

    // Queued for bob, then bob leaves the group before it goes out.
    post(&alice, &group.id, "g1", "@bob the secret plan").await?;
    ask(
        &alice,
        Request::RemoveMember {
            discussion: group.id.clone(),
            user: "bob".into(),
        },
    )
    .await?;
    // Queued for bob, then deleted before it goes out.
    let (deleted, _) = post(&alice, &to_bob.id, "d1", "sent by mistake").await?;
    ask(
        &alice,
        Request::Delete {
            discussion: to_bob.id.clone(),
            message_id: deleted,
        },
    )
    .await?;
    // Dave's notification is due after both of bob's would have been. Two messages within
    // the window are one notification.
    post(&alice, &to_dave.id, "m1", "marker").await?;
    post(&alice, &to_dave.id, "m2", "and another").await?;
    let first = within(15, "dave's push", pushed.recv())
        .await?
        .context("receiver stopped")?;
    let body = json(&first.body)?;
    assert_eq!(body["pushkey"], "tok-dave", "bob got something: {body}");
    assert_eq!(body["notification"]["count"], 2, "coalesced: {body}");
    assert_eq!(body["notification"]["text"], "and another");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    if let Ok(p) = pushed.try_recv() {
        anyhow::bail!("nothing else is pushed, got {}", json(&p.body)?);
    }
    eventually(10, "the push queue empties", async || {
        anyhow::ensure!(node.push_queue_len().await? == 0);
        Ok(())
    })
    .await?;
    Ok(())
}
