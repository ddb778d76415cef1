//! The object-discussion widget over the HTTP gateway: who may mint embed tokens, that a
//! token works once and only before it expires (by the node's clock, moved by the test),
//! that an embed session reaches its one discussion and nothing else, and that it ends, its
//! socket told and closed, when the user loses access to the object.

use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use veche_node::test_utils::TestNode;
use veche_protocol::admin::{AdminReply, AdminRequest};

use crate::apps::{TestApp, call, error_code, node_with_mail_and_clock, register_app, ws_json};
use crate::support::{PASSWORD, subscribe, within};

const HOST: &str = "http://localhost:5173";

/// Mints a token as `app`: the status and body.
async fn mint(
    app: &TestApp,
    object_id: &str,
    user: &str,
    ttl: Option<u64>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut body = json!({"object_type": "invoice", "object_id": object_id, "user": user});
    if let Some(ttl) = ttl {
        body["ttl_secs"] = json!(ttl);
    }
    app.req(reqwest::Method::POST, "/api/v1/embed/tokens", Some(body))
        .await
}

/// Exchanges a token on the page of `erp/invoice/{object_id}`.
async fn exchange(
    node: &TestNode,
    token: &str,
    object_id: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    call(
        reqwest::Client::new().post(format!("{}/api/v1/embed/session", node.http_url())),
        Some(
            json!({"token": token, "app": "erp", "object_type": "invoice", "object_id": object_id}),
        ),
    )
    .await
}

/// A request of an embed session.
async fn embed_rpc(
    node: &TestNode,
    session: &str,
    request: Value,
) -> anyhow::Result<(StatusCode, Value)> {
    call(
        reqwest::Client::new()
            .post(format!("{}/api/v1/embed/rpc", node.http_url()))
            .bearer_auth(session),
        Some(request),
    )
    .await
}

async fn allow(node: &TestNode, app: &str, origins: &[&str]) -> anyhow::Result<AdminReply> {
    Ok(node
        .admin(AdminRequest::AppEmbed {
            name: app.into(),
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        })
        .await?)
}

/// A session token for `user` on `erp/invoice/{object_id}`.
async fn session(
    node: &TestNode,
    erp: &TestApp,
    object_id: &str,
    user: &str,
) -> anyhow::Result<Value> {
    let (status, minted) = mint(erp, object_id, user, None).await?;
    anyhow::ensure!(status == StatusCode::OK, "mint: {status} {minted}");
    let token = minted["token"].as_str().context("token")?;
    let (status, session) = exchange(node, token, object_id).await?;
    anyhow::ensure!(status == StatusCode::OK, "exchange: {status} {session}");
    Ok(session)
}

#[tokio::test]
async fn embed_tokens_are_minted_for_allowed_apps_and_work_once_before_they_expire()
-> anyhow::Result<()> {
    let _log = subscribe();
    let clock = veche_base::ManualClock::starting_now();
    let (node, mut mail) = node_with_mail_and_clock(|_| {}, clock.clone()).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    let crm = register_app(&node, &mut mail, "crm").await?;
    node.add_user("alice", PASSWORD, false).await?;
    node.add_user("bob", PASSWORD, false).await?;
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-1/access",
        Some(json!({"users": ["alice"]})),
    )
    .await?;

    // Nobody allowed erp to embed yet: no token, and no page to frame.
    let (status, body) = mint(&erp, "INV-1", "alice", None).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("allow-embed"),
        "{body}"
    );
    let page = |app: &str| format!("{}/embed/object/{app}/invoice/INV-1", node.http_url());
    let response = reqwest::get(page("erp")).await?;
    assert_eq!(response.status().as_u16(), 404);

    // An origin is scheme, host and port: anything else is refused before it is stored.
    for bad in [
        "*",
        "https://erp.example/forms",
        "erp.example",
        "https://x; script-src *",
    ] {
        assert!(
            allow(&node, "erp", &[bad]).await.is_err(),
            "{bad} was taken"
        );
    }
    allow(&node, "erp", &[HOST, "https://ERP.corp.example/"]).await?;
    let AdminReply::Apps { apps } = node.admin(AdminRequest::AppList).await? else {
        anyhow::bail!("not an app list");
    };
    let listed = apps
        .iter()
        .find(|a| a.name == "erp")
        .context("erp listed")?;
    assert_eq!(
        listed.embed_origins,
        vec!["http://localhost:5173", "https://erp.corp.example"]
    );

    // The page is framed by those origins only; another application's is not served.
    let response = reqwest::get(page("erp")).await?;
    assert_eq!(response.status().as_u16(), 200);
    let csp = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors http://localhost:5173 https://erp.corp.example"),
        "{csp}"
    );
    assert!(response.headers().get("x-frame-options").is_none());
    assert_eq!(reqwest::get(page("crm")).await?.status().as_u16(), 404);
    let (status, body) = mint(&crm, "INV-1", "alice", None).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Only for a user who may see the object now, and for at most five minutes.
    let (status, body) = mint(&erp, "INV-1", "bob", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = mint(&erp, "INV-1", "nobody", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = mint(&erp, "INV-1", "alice", Some(301)).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A token works once.
    let (status, minted) = mint(&erp, "INV-1", "alice", None).await?;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let token = minted["token"].as_str().context("token")?.to_owned();
    assert!(
        token.starts_with("vemb_") && token.len() == 5 + 64,
        "{token}"
    );
    let page_path = minted["page"].as_str().context("page")?;
    assert_eq!(
        page_path,
        format!("/embed/object/erp/invoice/INV-1#t={token}")
    );
    let (status, first) = exchange(&node, &token, "INV-1").await?;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["user"], "alice@test.local");
    assert_eq!(first["discussion"], minted["discussion"]);
    assert_eq!(
        first["origins"],
        json!(["http://localhost:5173", "https://erp.corp.example"])
    );
    let (status, again) = exchange(&node, &token, "INV-1").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{again}");
    assert_eq!(error_code(&again), "used_token");

    // A token used on another object's page is refused.
    let (_, other) = mint(&erp, "INV-1", "alice", None).await?;
    let (status, body) =
        exchange(&node, other["token"].as_str().context("token")?, "INV-2").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A token expires by the node's clock.
    let (_, late) = mint(&erp, "INV-1", "alice", Some(60)).await?;
    clock.advance(Duration::from_secs(61));
    let (status, body) = exchange(&node, late["token"].as_str().context("token")?, "INV-1").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "expired_token");
    let (status, body) = exchange(&node, &format!("vemb_{}", "0".repeat(64)), "INV-1").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "invalid_token");

    // Disallowing the application ends its widgets' sessions.
    let session = first["session_token"].as_str().context("session")?;
    let discussion = first["discussion"].clone();
    let (status, body) = embed_rpc(
        &node,
        session,
        json!({"method": "get_discussion", "discussion": discussion}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    allow(&node, "erp", &[]).await?;
    let (status, body) = embed_rpc(
        &node,
        session,
        json!({"method": "get_discussion", "discussion": discussion}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "session_ended");
    let (status, _) = mint(&erp, "INV-1", "alice", None).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test]
async fn an_embed_session_reaches_its_discussion_only_and_ends_with_access() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) =
        node_with_mail_and_clock(|_| {}, veche_base::SystemClock::shared()).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    node.add_user("alice", PASSWORD, false).await?;
    allow(&node, "erp", &[HOST]).await?;
    for object in ["INV-1", "INV-2"] {
        erp.ok(
            reqwest::Method::PUT,
            &format!("/api/v1/objects/invoice/{object}/access"),
            Some(json!({"users": ["alice"]})),
        )
        .await?;
        erp.ok(
            reqwest::Method::POST,
            &format!("/api/v1/objects/invoice/{object}/messages"),
            Some(json!({"client_msg_id": format!("{object}-hello"), "text": format!("About {object}")})),
        )
        .await?;
    }
    let one = session(&node, &erp, "INV-1", "alice").await?;
    let two = session(&node, &erp, "INV-2", "alice").await?;
    let token = one["session_token"].as_str().context("session")?.to_owned();
    let here = one["discussion"].as_str().context("discussion")?.to_owned();
    let there = two["discussion"].as_str().context("discussion")?.to_owned();
    assert_ne!(here, there);

    // Its own discussion: read and write.
    let (status, page) = embed_rpc(
        &node,
        &token,
        json!({"method": "history", "discussion": here, "limit": 50}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.to_string().contains("About INV-1"), "{page}");
    let (status, body) = embed_rpc(
        &node,
        &token,
        json!({"method": "send", "discussion": here, "client_msg_id": "w1", "text": "Checked"}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Anything else is refused: another discussion the user may read, the user's list, the
    // account, and every endpoint of the person's own sessions.
    for request in [
        json!({"method": "history", "discussion": there, "limit": 50}),
        json!({"method": "send", "discussion": there, "client_msg_id": "w2", "text": "x"}),
        json!({"method": "sync", "cursors": [{"discussion": there, "seq": 0}]}),
        json!({"method": "list_discussions"}),
        json!({"method": "whoami"}),
        json!({"method": "open_dialog", "with": "erp"}),
    ] {
        let (status, body) = embed_rpc(&node, &token, request.clone()).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{request}: {body}");
    }
    let http = reqwest::Client::new();
    for url in [
        format!("{}/api/v1/discussions", node.http_url()),
        format!("{}/api/v1/discussions/{there}/history", node.http_url()),
    ] {
        let (status, body) = call(
            http.get(&url)
                .bearer_auth(&token)
                .header("Veche-Device", "embed"),
            None,
        )
        .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {body}");
    }
    let (status, body) = call(
        http.post(format!("{}/api/v1/rpc", node.http_url()))
            .bearer_auth(&token)
            .header("Veche-Device", "embed"),
        Some(json!({"method": "history", "discussion": here, "limit": 5})),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Its socket (the token as a subprotocol, not in the URL) carries its discussion's events.
    let mut request = format!("{}/api/v1/ws", node.http_url().replace("http://", "ws://"))
        .into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("veche.embed, {token}").parse()?,
    );
    let (mut ws, response) =
        within(10, "websocket", tokio_tungstenite::connect_async(request)).await??;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("veche.embed")
    );
    ws.send(Message::text(
        json!({"id": 1, "request": {"method": "watch", "discussion": here, "watch": true}})
            .to_string(),
    ))
    .await?;
    let reply = ws_json(&mut ws, |v| v["id"] == 1).await?;
    assert!(reply.get("reply").is_some(), "{reply}");
    ws.send(Message::text(
        json!({"id": 2, "request": {"method": "history", "discussion": there, "limit": 5}})
            .to_string(),
    ))
    .await?;
    let refused = ws_json(&mut ws, |v| v["id"] == 2).await?;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    erp.ok(
        reqwest::Method::POST,
        "/api/v1/objects/invoice/INV-1/messages",
        Some(json!({"client_msg_id": "p2", "text": "Paid"})),
    )
    .await?;
    let event = ws_json(&mut ws, |v| v["type"] == "discussion").await?;
    assert_eq!(event["event"]["change"]["message"]["text"], "Paid");

    // The application takes alice off the object's list: the socket is told and closed, and
    // the session is gone.
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-1/access",
        Some(json!({"users": []})),
    )
    .await?;
    let removed = ws_json(&mut ws, |v| v["type"] == "discussion_removed").await?;
    assert_eq!(removed["discussion"], here.as_str());
    let close = loop {
        match within(10, "close frame", ws.next()).await? {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            Some(Err(e)) => anyhow::bail!("socket failed instead of closing: {e}"),
            None => anyhow::bail!("socket ended without a close frame"),
        }
    };
    let close = close.context("close frame without a code")?;
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    let (status, body) = embed_rpc(
        &node,
        &token,
        json!({"method": "get_discussion", "discussion": here}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "session_ended");

    // Its other widget's session, on an object alice still sees, lives on; until the user
    // is locked.
    let other = two["session_token"].as_str().context("session")?;
    let (status, body) = embed_rpc(
        &node,
        other,
        json!({"method": "get_discussion", "discussion": there}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.admin(AdminRequest::UserLock {
        login: "alice".into(),
    })
    .await?;
    let (status, body) = embed_rpc(
        &node,
        other,
        json!({"method": "get_discussion", "discussion": there}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    Ok(())
}

#[tokio::test]
async fn an_embed_session_ends_on_its_next_request_when_access_went_while_it_was_idle()
-> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) =
        node_with_mail_and_clock(|_| {}, veche_base::SystemClock::shared()).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    node.add_user("alice", PASSWORD, false).await?;
    allow(&node, "erp", &[HOST]).await?;
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-9/access",
        Some(json!({"users": ["alice"]})),
    )
    .await?;
    let s = session(&node, &erp, "INV-9", "alice").await?;
    let token = s["session_token"].as_str().context("session")?;
    let here = s["discussion"].clone();
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-9/access",
        Some(json!({"users": []})),
    )
    .await?;
    let (status, body) = embed_rpc(
        &node,
        token,
        json!({"method": "history", "discussion": here, "limit": 5}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "session_ended");
    // Access given back does not revive it: the session was deleted.
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-9/access",
        Some(json!({"users": ["alice"]})),
    )
    .await?;
    let (status, _) = embed_rpc(
        &node,
        token,
        json!({"method": "history", "discussion": here, "limit": 5}),
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}

/// Uploads `data` into `discussion` over HTTP with `auth`'s credentials: the upload's
/// declaration status and body, then (if declared) the file.
async fn http_upload(
    node: &TestNode,
    auth: &dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    discussion: &str,
    name: &str,
    data: &[u8],
) -> anyhow::Result<(StatusCode, Value)> {
    let http = reqwest::Client::new();
    let base = node.http_url();
    let (status, up) = call(
        auth(http.post(format!("{base}/api/v1/uploads"))),
        Some(json!({"discussion": discussion, "name": name, "size": data.len(), "sha256": crate::files::sha(data)})),
    )
    .await?;
    if status != StatusCode::OK {
        return Ok((status, up));
    }
    let id = up["id"].as_str().context("upload id")?;
    let response = within(
        15,
        "upload",
        auth(http.put(format!("{base}/api/v1/uploads/{id}?offset=0")))
            .body(data.to_vec())
            .send(),
    )
    .await??;
    let status = StatusCode::from_u16(response.status().as_u16())?;
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn an_embed_session_attaches_and_downloads_files_of_its_discussion_only() -> anyhow::Result<()>
{
    let _log = subscribe();
    let (node, mut mail) =
        node_with_mail_and_clock(|_| {}, veche_base::SystemClock::shared()).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    node.add_user("alice", PASSWORD, false).await?;
    allow(&node, "erp", &[HOST]).await?;
    for object in ["INV-1", "INV-2"] {
        erp.ok(
            reqwest::Method::PUT,
            &format!("/api/v1/objects/invoice/{object}/access"),
            Some(json!({"users": ["alice"]})),
        )
        .await?;
    }
    let one = session(&node, &erp, "INV-1", "alice").await?;
    let two = session(&node, &erp, "INV-2", "alice").await?;
    let token = one["session_token"].as_str().context("session")?.to_owned();
    let here = one["discussion"].as_str().context("discussion")?.to_owned();
    let there = two["discussion"].as_str().context("discussion")?.to_owned();
    let widget = |b: reqwest::RequestBuilder| b.bearer_auth(&token);
    let http = reqwest::Client::new();
    let base = node.http_url();
    let get = async |url: String| {
        let r = within(15, "download", widget(http.get(url)).send()).await??;
        anyhow::Ok((
            StatusCode::from_u16(r.status().as_u16())?,
            r.bytes().await?.to_vec(),
        ))
    };

    // The policy, then a file into its own discussion, sent with a message.
    let (status, policy) = embed_rpc(&node, &token, json!({"method": "file_policy"})).await?;
    assert_eq!(status, StatusCode::OK, "{policy}");
    let data = crate::files::content(7, 200_000);
    let (status, file) = http_upload(&node, &widget, &here, "акт.bin", &data).await?;
    assert_eq!(status, StatusCode::OK, "{file}");
    let mine = file["id"].as_str().context("file id")?.to_owned();
    let (status, body) = embed_rpc(
        &node,
        &token,
        json!({"method": "send", "discussion": here, "client_msg_id": "f1", "text": "Акт", "files": [mine]}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, bytes) = get(format!("{base}/api/v1/files/{mine}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, data);

    // Nothing of the user's other discussion: no upload into it, none of its files, none
    // of the user's uploads there (all made by alice herself, from her own session).
    let (status, body) = http_upload(&node, &widget, &there, "x.bin", b"xyz").await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let device = "alice-web";
    let alice_token = crate::files::http_token(&node, "alice", device).await?;
    let alice =
        |b: reqwest::RequestBuilder| b.bearer_auth(&alice_token).header("Veche-Device", device);
    let (status, theirs) = http_upload(&node, &alice, &there, "другой.bin", b"other").await?;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    let theirs = theirs["id"].as_str().context("file id")?.to_owned();
    let (status, body) = call(
        alice(http.post(format!("{base}/api/v1/discussions/{there}/messages"))),
        Some(json!({"client_msg_id": "a1", "text": "Другой счёт", "files": [theirs]})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, unsent) = http_upload(&node, &alice, &there, "черновик.bin", b"draft").await?;
    assert_eq!(status, StatusCode::OK, "{unsent}");
    let unsent = unsent["id"].as_str().context("file id")?.to_owned();
    for id in [&theirs, &unsent] {
        for url in [
            format!("{base}/api/v1/files/{id}"),
            format!("{base}/api/v1/files/{id}/thumbnail"),
        ] {
            let (status, _) = get(url.clone()).await?;
            assert_eq!(status, StatusCode::NOT_FOUND, "{url}");
        }
    }
    // Her own session still reads both.
    let r = alice(http.get(format!("{base}/api/v1/files/{theirs}")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let (status, declared) = call(
        alice(http.post(format!("{base}/api/v1/uploads"))),
        Some(json!({"discussion": there, "name": "y.bin", "size": 3, "sha256": crate::files::sha(b"abc")})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{declared}");
    let upload = declared["id"].as_str().context("upload id")?;
    let (status, body) = call(
        widget(http.get(format!("{base}/api/v1/uploads/{upload}"))),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(
        widget(http.delete(format!("{base}/api/v1/uploads/{upload}"))),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let r = widget(http.put(format!("{base}/api/v1/uploads/{upload}?offset=0")))
        .body(b"abc".to_vec())
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    // A file of another discussion cannot be attached through the widget either.
    let (status, body) = embed_rpc(
        &node,
        &token,
        json!({"method": "send", "discussion": here, "client_msg_id": "f2", "text": "x", "files": [theirs]}),
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Once alice loses access to the invoice, its files are gone for the widget too.
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-1/access",
        Some(json!({"users": []})),
    )
    .await?;
    let (status, _) = get(format!("{base}/api/v1/files/{mine}")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}
