//! Business applications over the HTTP gateway: registration by a code sent through a real
//! SMTP conversation, database-copy protection, object discussions, business events,
//! webhooks, topics, the WebSocket, and the OpenAPI description against the served routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::{HeaderMap, StatusCode};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use veche_node::config::{Config, SmtpSecurity};
use veche_node::test_utils::{Mail, TestNode, smtp_sink, test_config};
use veche_protocol::admin::{AdminReply, AdminRequest};

use crate::support::{PASSWORD, subscribe, within};

// ---- an HTTP receiver for webhooks and pushes ----

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// An HTTP server that answers 500 to the first `fail_first` requests, then 200.
async fn receiver(
    fail_first: usize,
) -> anyhow::Result<(String, mpsc::UnboundedReceiver<Received>, Arc<Mutex<usize>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(0usize));
    let count = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            let count = count.clone();
            async move {
                let n = {
                    let mut c = count.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n <= fail_first {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let _ = tx.send(Received { headers, body });
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, rx, seen))
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> anyhow::Result<T> {
    within(15, what, rx.recv())
        .await?
        .with_context(|| format!("{what}: channel closed"))
}

// ---- HTTP helpers ----

/// A node whose registration mail goes to a fresh SMTP sink.
pub(crate) async fn node_with_mail(
    tune: impl FnOnce(&mut Config),
) -> anyhow::Result<(TestNode, mpsc::UnboundedReceiver<Mail>)> {
    node_with_mail_and_clock(tune, veche_base::SystemClock::shared()).await
}

/// [`node_with_mail`] going by `clock`.
pub(crate) async fn node_with_mail_and_clock(
    tune: impl FnOnce(&mut Config),
    clock: veche_base::SharedClock,
) -> anyhow::Result<(TestNode, mpsc::UnboundedReceiver<Mail>)> {
    let (port, mail) = smtp_sink().await?;
    let mut config = test_config();
    config.smtp.host = "127.0.0.1".into();
    config.smtp.port = port;
    config.smtp.security = SmtpSecurity::Opportunistic;
    config.smtp.from = "veche@test.local".into();
    config.apps.self_registration_domains = vec!["example.test".into()];
    tune(&mut config);
    Ok((TestNode::spawn_with_clock(config, clock).await?, mail))
}

/// A status and JSON body.
pub(crate) async fn call(
    request: reqwest::RequestBuilder,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    let response = within(15, "http request", request.send()).await??;
    let status = StatusCode::from_u16(response.status().as_u16())?;
    let text = response.text().await?;
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?
    };
    Ok((status, value))
}

pub(crate) fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// An activated application.
#[derive(Debug, Clone)]
pub(crate) struct TestApp {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) secret: String,
    pub(crate) instance: String,
}

impl TestApp {
    pub(crate) async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        call(
            self.http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.secret)
                .header("Veche-Instance", &self.instance),
            body,
        )
        .await
    }

    pub(crate) async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.req(method, path, body).await?;
        if !status.is_success() {
            bail!("{path}: {status} {value}");
        }
        Ok(value)
    }
}

/// Registers and activates `name` through the gateway with the code from the sink.
pub(crate) async fn register_app(
    node: &TestNode,
    mail: &mut mpsc::UnboundedReceiver<Mail>,
    name: &str,
) -> anyhow::Result<TestApp> {
    let http = reqwest::Client::new();
    let base = node.http_url();
    let (status, body) = call(
        http.post(format!("{base}/api/v1/apps/register")),
        Some(json!({"name": name, "email": "ops@example.test"})),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::ACCEPTED, "register: {status} {body}");
    let code = next(mail, "registration mail").await?.code()?;
    let instance = format!("{name}-instance");
    let (status, body) = call(
        http.post(format!("{base}/api/v1/apps/activate")),
        Some(json!({"name": name, "code": code, "instance_id": instance})),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "activate: {status} {body}");
    Ok(TestApp {
        http,
        base,
        secret: body["secret"].as_str().context("secret")?.to_owned(),
        instance,
    })
}

/// Logs a user in over HTTP; returns (token, device).
pub(crate) async fn http_login(node: &TestNode, login: &str) -> anyhow::Result<(String, String)> {
    let device = format!("{login}-web");
    let (status, body) = call(
        reqwest::Client::new().post(format!("{}/api/v1/login", node.http_url())),
        Some(json!({"login": login, "password": PASSWORD, "device_id": device})),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "login: {status} {body}");
    Ok((
        body["session_token"].as_str().context("token")?.to_owned(),
        device,
    ))
}

// ---- tests ----

#[tokio::test]
async fn registration_by_emailed_code() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let http = reqwest::Client::new();
    let base = node.http_url();
    let register = |name: &str, email: &str| {
        call(
            http.post(format!("{base}/api/v1/apps/register")),
            Some(json!({"name": name, "email": email})),
        )
    };
    let activate = |name: &str, code: &str, instance: &str| {
        call(
            http.post(format!("{base}/api/v1/apps/activate")),
            Some(json!({"name": name, "code": code, "instance_id": instance})),
        )
    };

    // An address outside the allowed domains cannot register itself.
    let (status, body) = register("erp", "someone@elsewhere.test").await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = register("erp", "ops@example.test").await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let sent = next(&mut mail, "the code").await?;
    assert_eq!(sent.to, vec!["ops@example.test".to_owned()]);
    let code = sent.code()?;

    // Asking again at once is throttled, with the time to wait.
    let (status, body) = register("erp", "ops@example.test").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]["retry_after_ms"].as_u64().unwrap_or(0) > 0);

    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let (status, body) = activate("erp", wrong, "erp-1").await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "wrong_code")
    );

    let (status, body) = activate("erp", &code, "erp-1").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let secret = body["secret"].as_str().context("secret")?.to_owned();
    assert_eq!(body["user_id"], "erp@test.local");

    // The code works once.
    let (status, body) = activate("erp", &code, "erp-1").await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "used_code")
    );

    // The registered instance is served; a copy of its database is refused and reported.
    let whoami = |instance: &str| {
        call(
            http.get(format!("{base}/api/v1/webhooks"))
                .bearer_auth(&secret)
                .header("Veche-Instance", instance),
            None,
        )
    };
    assert_eq!(whoami("erp-1").await?.0, StatusCode::OK);
    let (status, body) = whoami("erp-test-copy").await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "database_copy")
    );
    let AdminReply::Apps { apps } = node.admin(AdminRequest::AppList).await? else {
        bail!("expected apps");
    };
    let erp = apps
        .iter()
        .find(|a| a.name == "erp")
        .context("erp listed")?;
    assert_eq!(erp.status, "active");
    assert_eq!(erp.copy_refusals, 1);
    assert_eq!(erp.last_copy_instance.as_deref(), Some("erp-test-copy"));
    let AdminReply::Audit { records } = node.admin(AdminRequest::AuditLog { limit: 20 }).await?
    else {
        bail!("expected audit records");
    };
    assert!(records.iter().any(|r| r.action == "app.copy_refused"));

    // Locking the application's user stops it; unlocking lets it back.
    node.admin(AdminRequest::UserLock {
        login: "erp".into(),
    })
    .await?;
    assert_eq!(whoami("erp-1").await?.0, StatusCode::UNAUTHORIZED);
    node.admin(AdminRequest::UserUnlock {
        login: "erp".into(),
    })
    .await?;
    assert_eq!(whoami("erp-1").await?.0, StatusCode::OK);

    // A revoked application's secret stops working, and it cannot register itself again.
    node.admin(AdminRequest::AppRevoke { name: "erp".into() })
        .await?;
    assert_eq!(whoami("erp-1").await?.0, StatusCode::UNAUTHORIZED);
    let (status, body) = register("erp", "ops@example.test").await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The name of a person cannot be taken by an application.
    node.add_user("alice", PASSWORD, false).await?;
    let (status, _) = register("alice", "ops@example.test").await?;
    assert_eq!(status, StatusCode::CONFLICT);

    // An administrator registers an application with any address.
    node.admin(AdminRequest::AppRegister {
        name: "warehouse".into(),
        email: "store@elsewhere.test".into(),
    })
    .await?;
    let sent = next(&mut mail, "the administrator's code").await?;
    assert_eq!(sent.to, vec!["store@elsewhere.test".to_owned()]);
    let (status, body) = activate("warehouse", &sent.code()?, "wh-1").await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A name someone started to register with their address is taken from them by an
    // administrator's registration: the first code stops working.
    register("billing", "ops@example.test").await?;
    let squatter = next(&mut mail, "the squatter's code").await?.code()?;
    node.admin(AdminRequest::AppRegister {
        name: "billing".into(),
        email: "finance@elsewhere.test".into(),
    })
    .await?;
    let real = next(&mut mail, "the real code").await?;
    assert_eq!(real.to, vec!["finance@elsewhere.test".to_owned()]);
    let (status, body) = activate("billing", &squatter, "b-1").await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "wrong_code")
    );
    let (status, body) = activate("billing", &real.code()?, "b-1").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}

#[tokio::test]
async fn expired_and_exhausted_codes_are_refused() -> anyhow::Result<()> {
    let _log = subscribe();
    // The node's clock moves only when the test says: codes expire without waiting.
    let clock = veche_base::ManualClock::starting_now();
    let (node, mut mail) = node_with_mail_and_clock(
        |c| {
            c.apps.code_resend_secs = 0;
            c.apps.code_attempts = 2;
        },
        clock.clone(),
    )
    .await?;
    let ttl = Duration::from_secs(veche_node::config::Config::default().apps.code_ttl_secs);
    let http = reqwest::Client::new();
    let base = node.http_url();
    let register = |name: &str| {
        call(
            http.post(format!("{base}/api/v1/apps/register")),
            Some(json!({"name": name, "email": "ops@example.test"})),
        )
    };
    let activate = |name: &str, code: &str| {
        call(
            http.post(format!("{base}/api/v1/apps/activate")),
            Some(json!({"name": name, "code": code, "instance_id": "i-1"})),
        )
    };
    register("erp").await?;
    let code = next(&mut mail, "code").await?.code()?;
    clock.advance(ttl + Duration::from_secs(1));
    let (status, body) = activate("erp", &code).await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "expired_code")
    );

    // A fresh code works, but not after too many wrong ones.
    register("erp").await?;
    let code = next(&mut mail, "second code").await?.code()?;
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..2 {
        let (_, body) = activate("erp", wrong).await?;
        assert_eq!(error_code(&body), "wrong_code");
    }
    let (status, body) = activate("erp", &code).await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );

    // A new code has a budget of its own.
    register("erp").await?;
    let code = next(&mut mail, "third code").await?.code()?;
    let (status, body) = activate("erp", &code).await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A registration whose codes all expired no longer holds its name.
    register("stale").await?;
    next(&mut mail, "stale code").await?;
    clock.advance(ttl + Duration::from_secs(1));
    let (status, body) = call(
        http.post(format!("{base}/api/v1/apps/register")),
        Some(json!({"name": "stale", "email": "other@example.test"})),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        next(&mut mail, "the new owner's code").await?.to,
        vec!["other@example.test".to_owned()]
    );

    // A name whose objects are already in use is for an administrator to give.
    node.add_user("root", PASSWORD, true).await?;
    let (root, _) = crate::support::login(&node, "root", PASSWORD, "root-dev").await?;
    crate::support::ask(
        &root,
        veche_protocol::Request::SetObjectAccess {
            object: veche_protocol::discussions::ObjectRef {
                application: "ledger".into(),
                object_type: "account".into(),
                object_id: "62".into(),
            },
            users: vec!["root".into()],
            groups: vec![],
        },
    )
    .await?;
    let (status, body) = register("ledger").await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // No pending registration by that name.
    let (status, body) = activate("nobody", &code).await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );

    // Without a relay the node says so and keeps no code.
    let mut config = test_config();
    config.apps.self_registration_domains = vec!["example.test".into()];
    let silent = TestNode::spawn_with(config).await?;
    let (status, body) = call(
        http.post(format!("{}/api/v1/apps/register", silent.http_url())),
        Some(json!({"name": "erp", "email": "ops@example.test"})),
    )
    .await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_GATEWAY, "mail_failed")
    );
    Ok(())
}

#[tokio::test]
async fn object_discussion_is_ensured_once_under_concurrency() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let erp = erp.clone();
        tasks.push(tokio::spawn(async move {
            erp.ok(
                reqwest::Method::PUT,
                "/api/v1/objects/invoice/INV-1/discussion",
                Some(json!({"title": format!("Invoice INV-1 ({i})")})),
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let body = t.await??;
        ids.insert(body["discussion"]["id"].as_str().context("id")?.to_owned());
    }
    assert_eq!(ids.len(), 1, "one discussion per object: {ids:?}");

    // An application's namespace is its own: another application's objects are not.
    let other = register_app(&node, &mut mail, "crm").await?;
    let (status, _) = other
        .req(
            reqwest::Method::GET,
            "/api/v1/objects/invoice/INV-1/access",
            None,
        )
        .await?;
    // crm asks about crm/invoice/INV-1, which is a different object with an empty list.
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn access_list_reaches_a_connected_user_at_once() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    node.add_user("alice", PASSWORD, false).await?;
    node.add_user("bob", PASSWORD, false).await?;
    let discussion = erp
        .ok(
            reqwest::Method::PUT,
            "/api/v1/objects/invoice/INV-7/discussion",
            None,
        )
        .await?["discussion"]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-7/access",
        Some(json!({"users": ["alice", "bob"]})),
    )
    .await?;
    let list = erp
        .ok(
            reqwest::Method::GET,
            "/api/v1/objects/invoice/INV-7/access",
            None,
        )
        .await?;
    assert_eq!(list["users"], json!(["alice@test.local", "bob@test.local"]));

    // Alice, over the WebSocket, watches the discussion and sees the application's post.
    let (token, device) = http_login(&node, "alice").await?;
    let ws_url = format!(
        "{}/api/v1/ws?access_token={token}&device={device}",
        node.http_url().replace("http://", "ws://")
    );
    let (mut ws, _) = within(10, "websocket", tokio_tungstenite::connect_async(&ws_url)).await??;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"id": 1, "request": {"method": "watch", "discussion": discussion, "watch": true}})
            .to_string(),
    ))
    .await?;
    let reply = ws_json(&mut ws, |v| v["id"] == 1).await?;
    assert!(reply.get("reply").is_some(), "{reply}");
    erp.ok(
        reqwest::Method::POST,
        "/api/v1/objects/invoice/INV-7/messages",
        Some(json!({"client_msg_id": "m1", "text": "Please check the amount"})),
    )
    .await?;
    let event = ws_json(&mut ws, |v| v["type"] == "discussion").await?;
    assert_eq!(
        event["event"]["change"]["message"]["text"],
        "Please check the amount"
    );

    // The application watches its object's discussion on its own socket and sees alice.
    let app_ws_url = format!(
        "{}/api/v1/ws?access_token={}&instance={}",
        node.http_url().replace("http://", "ws://"),
        erp.secret,
        erp.instance
    );
    let (mut app_ws, _) = within(
        10,
        "app websocket",
        tokio_tungstenite::connect_async(&app_ws_url),
    )
    .await??;
    app_ws
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"id": 7, "request": {"method": "watch", "discussion": discussion, "watch": true}})
                .to_string(),
        ))
        .await?;
    ws_json(&mut app_ws, |v| v["id"] == 7).await?;
    let (status, body) = call(
        reqwest::Client::new()
            .post(format!(
                "{}/api/v1/discussions/{discussion}/messages",
                node.http_url()
            ))
            .bearer_auth(&token)
            .header("Veche-Device", &device),
        Some(json!({"client_msg_id": "a1", "text": "The amount is right"})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = ws_json(&mut app_ws, |v| v["type"] == "discussion").await?;
    assert_eq!(
        seen["event"]["change"]["message"]["text"],
        "The amount is right"
    );

    // Taking alice off the list removes the discussion from her at once: before anything
    // that happens after the change (a message of hers, sent once the change is answered).
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-7/access",
        Some(json!({"users": ["bob"]})),
    )
    .await?;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"id": 9, "request": {"method": "whoami"}}).to_string(),
    ))
    .await?;
    let removed = ws_json(&mut ws, |v| {
        v["type"] == "discussion_removed" || v["id"] == 9
    })
    .await?;
    assert_eq!(
        removed["type"], "discussion_removed",
        "the removal came after what followed the change: {removed}"
    );
    assert_eq!(removed["discussion"], discussion.as_str());
    // And her HTTP reads refuse it too.
    let (status, _) = call(
        reqwest::Client::new()
            .get(format!(
                "{}/api/v1/discussions/{discussion}/history",
                node.http_url()
            ))
            .bearer_auth(&token)
            .header("Veche-Device", &device),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON frame on the socket that matches.
pub(crate) async fn ws_json(
    ws: &mut Ws,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    loop {
        let frame = within(10, "websocket frame", ws.next())
            .await?
            .context("socket closed")??;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text)?;
            if matches(&value) {
                return Ok(value);
            }
        }
    }
}

fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn business_events_are_taken_once_and_reach_signed_webhooks() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    let (url, mut hooks, _) = receiver(0).await?;
    let created = erp
        .ok(
            reqwest::Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": url, "kinds": ["invoice.posted"]})),
        )
        .await?;
    let secret = created["secret"].as_str().context("secret")?.to_owned();
    let crm = register_app(&node, &mut mail, "crm").await?;
    let (other_url, mut others, _) = receiver(0).await?;
    crm.ok(
        reqwest::Method::POST,
        "/api/v1/webhooks",
        Some(json!({"url": other_url, "kinds": ["*"]})),
    )
    .await?;

    let event = json!({
        "kind": "invoice.posted", "object_type": "invoice", "object_id": "INV-1",
        "payload": {"amount": "10.00"}, "timeline": "Invoice INV-1 posted",
    });
    let (status, first) = erp
        .req(
            reqwest::Method::POST,
            "/api/v1/events",
            Some({
                let mut e = event.clone();
                e["idempotency_key"] = "INV-1/posted".into();
                e
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["fresh"], true);
    // The same key again, this time in the header: accepted, not routed again.
    let (_, again) = erp
        .req(reqwest::Method::POST, "/api/v1/events", Some(event.clone()))
        .await?;
    assert_eq!(error_code(&again), "bad_request", "a key is required");
    let (status, second) = call(
        erp.http
            .post(format!("{}/api/v1/events", erp.base))
            .bearer_auth(&erp.secret)
            .header("Veche-Instance", &erp.instance)
            .header("Idempotency-Key", "INV-1/posted"),
        Some(event),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["fresh"], false);
    assert_eq!(
        first["message"]["message_id"], second["message"]["message_id"],
        "the timeline note is posted once"
    );

    let got = next(&mut hooks, "webhook").await?;
    let body = got.json();
    assert_eq!(body["kind"], "invoice.posted");
    assert_eq!(body["source"], "erp");
    assert_eq!(body["object"]["object_id"], "INV-1");
    assert_eq!(body["payload"]["amount"], "10.00");
    let ts = &got.headers["veche-timestamp"];
    assert_eq!(
        got.headers["veche-signature"],
        format!("v1={}", hmac_hex(&secret, &format!("{ts}.{}", got.body)))
    );
    assert_ne!(
        got.headers["veche-signature"],
        format!("v1={}", hmac_hex("wrong", &format!("{ts}.{}", got.body)))
    );
    // Exactly one request for the one event, and nothing for another application's
    // webhook: applications share data through topics, not through each other's events.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        hooks.try_recv().is_err(),
        "the repeated key reached the webhook"
    );
    assert!(
        others.try_recv().is_err(),
        "another application got erp's event"
    );
    Ok(())
}

#[tokio::test]
async fn webhooks_retry_sign_with_the_node_key_and_show_failures() -> anyhow::Result<()> {
    use ed25519_dalek::Verifier;
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|c| {
        c.apps.webhook_attempts = 3;
        c.metrics.enabled = true;
        c.metrics.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    })
    .await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    // Fails twice, then takes it.
    let (url, mut hooks, seen) = receiver(2).await?;
    node.admin(AdminRequest::WebhookAdd {
        url,
        kinds: vec!["*".into()],
        signing: "ed25519".into(),
    })
    .await?;
    // Nobody listens here: every attempt fails.
    let dead = TcpListener::bind("127.0.0.1:0").await?;
    let dead_url = format!("http://{}/gone", dead.local_addr()?);
    drop(dead);
    let AdminReply::Webhook {
        webhook: dead_hook, ..
    } = node
        .admin(AdminRequest::WebhookAdd {
            url: dead_url,
            kinds: vec!["order.shipped".into()],
            signing: "hmac-sha256".into(),
        })
        .await?
    else {
        bail!("expected a webhook");
    };

    erp.ok(
        reqwest::Method::POST,
        "/api/v1/events",
        Some(json!({"kind": "order.shipped", "payload": {"order": 5}, "idempotency_key": "o5"})),
    )
    .await?;
    let got = next(&mut hooks, "webhook after retries").await?;
    assert_eq!(*seen.lock().unwrap(), 3, "two failures, then delivered");
    let (_, node_info) = call(
        reqwest::Client::new().get(format!("{}/api/v1/node", node.http_url())),
        None,
    )
    .await?;
    let key: [u8; 32] = hex::decode(node_info["public_key"].as_str().context("key")?)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("key length"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)?;
    let sig: [u8; 64] = hex::decode(
        got.headers["veche-signature"]
            .strip_prefix("ed25519=")
            .context("ed25519 signature")?,
    )?
    .try_into()
    .map_err(|_| anyhow::anyhow!("signature length"))?;
    let signed = format!(
        "veche-webhook:{}.{}",
        got.headers["veche-timestamp"], got.body
    );
    key.verify(
        signed.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )?;
    let forged = format!(
        "veche-webhook:{}.{}x",
        got.headers["veche-timestamp"], got.body
    );
    assert!(
        key.verify(
            forged.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig)
        )
        .is_err()
    );

    // The dead receiver's request is given up after its attempts and shown as failed. The
    // other hook's delivery is recorded once the node has read its receiver's answer, which
    // may come after the receiver saw the request: wait for both records.
    let failed = within(20, "the dead webhook to fail", async {
        loop {
            if let AdminReply::Webhooks { webhooks } = node.admin(AdminRequest::WebhookList).await?
                && let Some(w) = webhooks.iter().find(|w| w.id == dead_hook.id)
                && w.failed == 1
                && webhooks.iter().all(|w| w.pending == 0)
            {
                return anyhow::Ok(w.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    assert_eq!(failed.pending, 0);
    assert!(failed.last_error.is_some());
    // The metrics counted every failed attempt: two to the receiver, three to the dead one.
    let samples =
        crate::metrics::scrape(&node.metrics_url().context("no metrics listener")?).await?;
    assert_eq!(samples.get("veche_webhook_failures_total", &[]), 5.0);
    assert_eq!(samples.get("veche_webhook_queue", &[]), 0.0);
    Ok(())
}

#[tokio::test]
async fn topics_deliver_with_ack_redelivery_and_expiry() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    let wh = register_app(&node, &mut mail, "warehouse").await?;
    let post = reqwest::Method::POST;
    wh.ok(
        reqwest::Method::PUT,
        "/api/v1/topics/shipments/subscription",
        None,
    )
    .await?;
    let publish = |key: &str, ttl: Option<u64>| {
        erp.ok(
            post.clone(),
            "/api/v1/topics/shipments/messages",
            Some(json!({"payload": {"key": key}, "idempotency_key": key, "ttl_secs": ttl})),
        )
    };
    let first = publish("a", None).await?;
    assert_eq!(first["fresh"], true);
    let again = publish("a", None).await?;
    assert_eq!(
        (again["id"].clone(), again["fresh"].clone()),
        (first["id"].clone(), json!(false))
    );
    publish("b", Some(3)).await?;

    let pull = |lease_ms: u64| {
        wh.ok(
            post.clone(),
            "/api/v1/topics/shipments/pull",
            Some(json!({"max": 10, "lease_ms": lease_ms})),
        )
    };
    let got = pull(300).await?;
    let messages = got["messages"].as_array().context("messages")?;
    assert_eq!(messages.len(), 2, "{got}");
    assert_eq!(messages[0]["payload"]["key"], "a");
    assert_eq!(messages[0]["attempt"], 1);
    // Leased: nothing more until the lease runs out.
    assert_eq!(pull(300).await?["messages"], json!([]));
    let acked = wh
        .ok(
            post.clone(),
            "/api/v1/topics/shipments/ack",
            Some(json!({"ids": [messages[0]["id"]]})),
        )
        .await?;
    assert_eq!(acked["acknowledged"], 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let redelivered = pull(300).await?;
    let redelivered = redelivered["messages"].as_array().context("messages")?;
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0]["payload"]["key"], "b");
    assert_eq!(redelivered[0]["attempt"], 2);
    // Its time to live passes: it is gone, acknowledged or not.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(pull(300).await?["messages"], json!([]));

    // A pushed subscription: a 2xx answer acknowledges; a failure is retried.
    let (url, mut pushes, _) = receiver(1).await?;
    let sub = erp
        .ok(
            reqwest::Method::PUT,
            "/api/v1/topics/invoices/subscription",
            Some(json!({"push_url": url})),
        )
        .await?;
    let secret = sub["secret"].as_str().context("push secret")?.to_owned();
    wh.ok(
        post.clone(),
        "/api/v1/topics/invoices/messages",
        Some(json!({"payload": {"n": 1}, "idempotency_key": "n1"})),
    )
    .await?;
    let got = next(&mut pushes, "pushed message").await?;
    let body = got.json();
    assert_eq!(body["payload"]["n"], 1);
    assert_eq!(body["attempt"], 2, "the first attempt failed");
    let ts = &got.headers["veche-timestamp"];
    assert_eq!(
        got.headers["veche-signature"],
        format!("v1={}", hmac_hex(&secret, &format!("{ts}.{}", got.body)))
    );
    // A pushed subscription is not pulled.
    let (status, _) = erp.req(post, "/api/v1/topics/invoices/pull", None).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // No subscription, nothing to pull.
    let (status, _) = wh
        .req(reqwest::Method::POST, "/api/v1/topics/other/pull", None)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

/// A reused idempotency key with another payload is refused with a conflict, as a reused
/// `client_msg_id` is for messages; the same payload (keys in any order) is a repeat.
#[tokio::test]
async fn topics_refuse_a_reused_key_with_another_payload() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    let wh = register_app(&node, &mut mail, "warehouse").await?;
    let post = reqwest::Method::POST;
    wh.ok(
        reqwest::Method::PUT,
        "/api/v1/topics/orders/subscription",
        None,
    )
    .await?;
    let path = "/api/v1/topics/orders/messages";
    let first = erp
        .ok(
            post.clone(),
            path,
            Some(json!({"payload": {"order": 1, "qty": 5}, "idempotency_key": "o1"})),
        )
        .await?;
    assert_eq!(first["fresh"], true);
    let repeat = erp
        .ok(
            post.clone(),
            path,
            Some(json!({"payload": {"qty": 5, "order": 1}, "idempotency_key": "o1"})),
        )
        .await?;
    assert_eq!(
        (&repeat["id"], &repeat["fresh"]),
        (&first["id"], &json!(false))
    );

    let (status, body) = erp
        .req(
            post.clone(),
            path,
            Some(json!({"payload": {"order": 1, "qty": 7}, "idempotency_key": "o1"})),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    // The same key on another topic, or from another application, is another message.
    let other = wh
        .ok(
            post.clone(),
            path,
            Some(json!({"payload": {"order": 1, "qty": 7}, "idempotency_key": "o1"})),
        )
        .await?;
    assert_eq!(other["fresh"], true);

    // The subscriber got the first payload and the other publisher's, never the refused one.
    let got = wh
        .ok(
            post,
            "/api/v1/topics/orders/pull",
            Some(json!({"max": 10, "lease_ms": 30_000})),
        )
        .await?;
    let payloads: Vec<&Value> = got["messages"]
        .as_array()
        .context("messages")?
        .iter()
        .map(|m| &m["payload"])
        .collect();
    assert_eq!(
        payloads,
        [
            &json!({"order": 1, "qty": 5}),
            &json!({"order": 1, "qty": 7})
        ],
        "{got}"
    );
    Ok(())
}

#[tokio::test]
async fn business_events_refuse_a_reused_key_for_another_event() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    let post = reqwest::Method::POST;
    let event = |kind: &str, id: &str, amount: &str| {
        json!({
            "kind": kind, "object_type": "invoice", "object_id": id,
            "payload": {"amount": amount, "currency": "RUB"}, "idempotency_key": "INV-7/posted",
        })
    };
    let first = erp
        .ok(
            post.clone(),
            "/api/v1/events",
            Some(event("invoice.posted", "INV-7", "10.00")),
        )
        .await?;
    assert_eq!(first["fresh"], true);
    // The same event again (its payload's keys in another order): a repeat.
    let mut same = event("invoice.posted", "INV-7", "10.00");
    same["payload"] = json!({"currency": "RUB", "amount": "10.00"});
    let repeat = erp.ok(post.clone(), "/api/v1/events", Some(same)).await?;
    assert_eq!(repeat["fresh"], false);

    // The key reused for another payload, kind or object: refused, not taken as a repeat.
    for other in [
        event("invoice.posted", "INV-7", "99.00"),
        event("invoice.cancelled", "INV-7", "10.00"),
        event("invoice.posted", "INV-8", "10.00"),
    ] {
        let (status, body) = erp.req(post.clone(), "/api/v1/events", Some(other)).await?;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "conflict", "{body}");
    }
    Ok(())
}

#[tokio::test]
async fn clicks_on_an_applications_buttons_reach_its_webhook() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|_| {}).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    node.add_user("alice", PASSWORD, false).await?;
    let (url, mut hooks, _) = receiver(0).await?;
    erp.ok(
        reqwest::Method::POST,
        "/api/v1/webhooks",
        Some(json!({"url": url, "kinds": ["action.clicked"]})),
    )
    .await?;
    erp.ok(
        reqwest::Method::PUT,
        "/api/v1/objects/invoice/INV-3/access",
        Some(json!({"users": ["alice"]})),
    )
    .await?;
    let posted = erp
        .ok(
            reqwest::Method::POST,
            "/api/v1/objects/invoice/INV-3/messages",
            Some(json!({
                "client_msg_id": "approve-1", "text": "Approve INV-3?",
                "data": {"invoice": "INV-3"},
                "actions": [{"id": "approve", "label": "Approve"}],
            })),
        )
        .await?;
    let (token, device) = http_login(&node, "alice").await?;
    let (status, body) = call(
        reqwest::Client::new()
            .post(format!("{}/api/v1/rpc", node.http_url()))
            .bearer_auth(&token)
            .header("Veche-Device", &device),
        Some(json!({
            "method": "click", "discussion": posted["discussion"],
            "message_id": posted["message_id"], "action_id": "approve",
        })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = next(&mut hooks, "click webhook").await?.json();
    assert_eq!(got["type"], "action_clicked");
    assert_eq!(got["action_id"], "approve");
    assert_eq!(got["user"], "alice@test.local");
    assert_eq!(got["data"]["invoice"], "INV-3");
    assert_eq!(got["object"]["object_id"], "INV-3");
    Ok(())
}

#[tokio::test]
async fn openapi_description_matches_the_served_routes() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let http = reqwest::Client::new();
    let (status, spec) = call(
        http.get(format!("{}/api/v1/openapi.json", node.http_url())),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    let paths = spec["paths"].as_object().context("paths")?;
    assert!(paths.len() >= 15, "{} paths", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "put", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let request = http.request(
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?,
                format!("{}{concrete}", node.http_url()),
            );
            let response = within(15, "route", request.send()).await??;
            let status = response.status().as_u16();
            let text = response.text().await?;
            assert_ne!(status, 405, "{method} {path} is described but not served");
            assert!(
                !text.contains("no_route"),
                "{method} {path} is described but not served"
            );
            checked += 1;
        }
    }
    // And a route that is not described is not served.
    let (status, body) = call(
        http.get(format!("{}/api/v1/nothing", node.http_url())),
        None,
    )
    .await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "no_route")
    );
    assert!(checked >= 18, "{checked} operations checked");
    Ok(())
}

#[tokio::test]
async fn the_erp_example_runs_against_a_node() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mail) = node_with_mail(|_| {}).await?;
    node.add_user("alice", PASSWORD, false).await?;
    node.add_user("bob", PASSWORD, false).await?;
    // The approval bot answers invoice.posted in the invoice's discussion, which the ERP
    // lets it see.
    let bot = crate::support::plugin_folder("approval-bot")?;
    node.admin(AdminRequest::PluginInstall {
        path: bot.path().display().to_string(),
        grants: vec!["kv".into()],
        config: Default::default(),
    })
    .await?;
    let mail = Arc::new(tokio::sync::Mutex::new(mail));
    let report = veche_erp_example::scenario(
        &node.http_url(),
        "ops@example.test",
        &["alice", "bob", "approval-bot"],
        "erp-db-1",
        |_app| {
            let mail = mail.clone();
            async move { Ok(next(&mut *mail.lock().await, "code").await?.code()?) }
        },
    )
    .await?;
    assert!(report.event_fresh);
    assert_eq!(report.received.len(), 1);
    assert_eq!(report.received[0]["payload"]["invoice"], "INV-1");
    // Alice reads the invoice's discussion: the event's note, then the bot's request.
    let (token, device) = http_login(&node, "alice").await?;
    let history = crate::support::eventually(20, "the approval request", async || {
        let (status, history) = call(
            reqwest::Client::new()
                .get(format!(
                    "{}/api/v1/discussions/{}/history",
                    node.http_url(),
                    report.discussion
                ))
                .bearer_auth(&token)
                .header("Veche-Device", &device),
            None,
        )
        .await?;
        anyhow::ensure!(status == StatusCode::OK, "{history}");
        let text = history.to_string();
        anyhow::ensure!(text.contains("awaits approval"), "no request yet: {text}");
        Ok(text)
    })
    .await?;
    assert!(history.contains("Invoice INV-1 was posted: 1250.00 EUR"));
    assert!(history.contains("Invoice INV-1 from Acme for 1250.00 EUR awaits approval."));
    Ok(())
}

#[tokio::test]
async fn the_gateway_serves_https_with_the_node_certificate() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut config = test_config();
    config.http.tls = true;
    let node = TestNode::spawn_with(config).await?;
    let addr = node.info().http_addr.context("http address")?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(node.ca_path())?)?;
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("localhost", addr)
        .build()?;
    let (status, body) = call(
        https.get(format!("https://localhost:{}/api/v1/node", addr.port())),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "test.local");
    // Plain HTTP gets no answer from a TLS port; a client that does not trust the node's
    // CA does not connect.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/node"))
        .send()
        .await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", addr)
        .build()?;
    assert!(
        untrusting
            .get(format!("https://localhost:{}/api/v1/node", addr.port()))
            .send()
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn registrations_are_limited_per_address() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let (status, body) = call(
            http.post(format!("{}/api/v1/apps/register", node.http_url())),
            Some(json!({"name": format!("app{i}"), "email": "x@nowhere.test"})),
        )
        .await?;
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(error_code(&body), "throttled");
            assert!(body["error"]["retry_after_ms"].as_u64().unwrap_or(0) > 0);
        }
    }
    // Ten refused by policy (the domain may not self-register), then throttled.
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::FORBIDDEN)
            .count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);

    // Behind a trusted proxy, each client counts for itself.
    let mut config = test_config();
    config.http.trusted_proxies = vec!["127.0.0.1".parse()?];
    let proxied = TestNode::spawn_with(config).await?;
    for i in 0..12 {
        let (status, _) = call(
            http.post(format!("{}/api/v1/apps/register", proxied.http_url()))
                .header("X-Forwarded-For", format!("198.51.100.{i}")),
            Some(json!({"name": format!("app{i}"), "email": "x@nowhere.test"})),
        )
        .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "client {i}");
    }
    Ok(())
}

#[tokio::test]
async fn applications_cannot_aim_the_node_at_its_own_machine() -> anyhow::Result<()> {
    let _log = subscribe();
    let (node, mut mail) = node_with_mail(|c| c.apps.allow_loopback_receivers = false).await?;
    let erp = register_app(&node, &mut mail, "erp").await?;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/hook",
    ] {
        let (status, body) = erp
            .req(
                reqwest::Method::POST,
                "/api/v1/webhooks",
                Some(json!({"url": url, "kinds": ["*"]})),
            )
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        let (status, _) = erp
            .req(
                reqwest::Method::PUT,
                "/api/v1/topics/t/subscription",
                Some(json!({"push_url": url})),
            )
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}");
    }
    // The administrator's own webhooks may go anywhere.
    node.admin(AdminRequest::WebhookAdd {
        url: "http://127.0.0.1:9/hook".into(),
        kinds: vec!["*".into()],
        signing: "hmac-sha256".into(),
    })
    .await?;
    Ok(())
}
