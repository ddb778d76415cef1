//! The web client's side of the gateway: sessions in an HttpOnly cookie that only the node's
//! own pages can use, the account requests (who am I, my sessions, sign out), and the pages
//! themselves, served from the binary.

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use veche_node::test_utils::TestNode;

use crate::support::{PASSWORD, subscribe, within};

const DEVICE: &str = "web-0123456789abcdef";

/// Signs `login` in as the web client does; the session cookie's `name=value`.
async fn sign_in(node: &TestNode, login: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/login", node.http_url()))
        .header("Veche-Device", DEVICE)
        .json(&json!({
            "login": login,
            "password": PASSWORD,
            "device_id": DEVICE,
            "device_name": "Chromium on Linux",
            "cookie": true,
        }))
        .send()
        .await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let set = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await?;
    // The page never holds the token: only the cookie does.
    assert!(body.get("session_token").is_none(), "{body}");
    assert_eq!(body["user"]["login"], login);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    Ok(set.split(';').next().unwrap_or_default().to_owned())
}

/// A request with the session cookie, as the web client sends it.
fn with_cookie(request: reqwest::RequestBuilder, cookie: &str) -> reqwest::RequestBuilder {
    request
        .header(COOKIE, cookie)
        .header("Veche-Device", DEVICE)
}

async fn rpc(node: &TestNode, cookie: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
    let response = within(
        15,
        "rpc",
        with_cookie(
            reqwest::Client::new().post(format!("{}/api/v1/rpc", node.http_url())),
            cookie,
        )
        .json(&body)
        .send(),
    )
    .await??;
    let status = response.status();
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn a_browser_session_lives_in_a_cookie_only_the_nodes_own_pages_can_use() -> anyhow::Result<()>
{
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("anna", PASSWORD, false).await?;
    let cookie = sign_in(&node, "anna").await?;
    let url = format!("{}/api/v1/discussions", node.http_url());
    let http = reqwest::Client::new();

    let ok = with_cookie(http.get(&url), &cookie).send().await?;
    assert_eq!(ok.status(), StatusCode::OK);
    // Without the device header (a cross-site form cannot send one) the cookie is ignored.
    let bare = http.get(&url).header(COOKIE, &cookie).send().await?;
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    // Another site's script cannot use it either.
    let foreign = with_cookie(http.get(&url), &cookie)
        .header(ORIGIN, "http://evil.example")
        .send()
        .await?;
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let own = with_cookie(http.get(&url), &cookie)
        .header(ORIGIN, node.http_url())
        .send()
        .await?;
    assert_eq!(own.status(), StatusCode::OK);

    // The WebSocket takes the cookie from the node's own origin only.
    let ws_url = format!(
        "{}/api/v1/ws?device={DEVICE}",
        node.http_url().replacen("http", "ws", 1)
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )?;
    request
        .headers_mut()
        .insert(COOKIE.as_str(), cookie.parse()?);
    request
        .headers_mut()
        .insert(ORIGIN.as_str(), "http://evil.example".parse()?);
    let refused = tokio_tungstenite::connect_async(request.clone()).await;
    assert!(refused.is_err(), "a foreign origin's socket was accepted");
    request
        .headers_mut()
        .insert(ORIGIN.as_str(), node.http_url().parse()?);
    let (mut socket, _) = within(15, "socket", tokio_tungstenite::connect_async(request)).await??;
    use futures_util::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"id": 1, "request": {"method": "whoami"}})
                .to_string()
                .into(),
        ))
        .await?;
    let answer = within(15, "whoami on the socket", async {
        while let Some(frame) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame? {
                let v: Value = serde_json::from_str(&text)?;
                if v["id"] == 1 {
                    return anyhow::Ok(v);
                }
            }
        }
        anyhow::bail!("the socket closed")
    })
    .await??;
    assert_eq!(answer["reply"]["user"]["login"], "anna", "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_person_on_the_gateway_sees_their_sessions_ends_one_and_signs_out() -> anyhow::Result<()>
{
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("boris", PASSWORD, false).await?;
    let cookie = sign_in(&node, "boris").await?;

    let (status, me) = rpc(&node, &cookie, json!({"method": "whoami"})).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["kind"], "me");
    assert_eq!(me["user"]["id"], format!("boris@{}", node.info().node_name));

    // A second device signs in with a token, as a script would.
    let phone = within(
        15,
        "login",
        reqwest::Client::new()
            .post(format!("{}/api/v1/login", node.http_url()))
            .json(&json!({"login": "boris", "password": PASSWORD, "device_id": "phone", "device_name": "Телефон"}))
            .send(),
    )
    .await??;
    assert_eq!(phone.status(), StatusCode::OK);
    let (_, sessions) = rpc(&node, &cookie, json!({"method": "list_sessions"})).await?;
    assert_eq!(sessions["kind"], "sessions", "{sessions}");
    let list = sessions["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 2, "{sessions}");
    let current = sessions["current"].as_str().unwrap_or_default().to_owned();
    let mine = list
        .iter()
        .find(|s| s["id"] == current.as_str())
        .ok_or_else(|| anyhow::anyhow!("the current session is listed: {sessions}"))?;
    assert_eq!(mine["device_name"], "Chromium on Linux");
    let phone = list
        .iter()
        .find(|s| s["device_id"] == "phone")
        .ok_or_else(|| anyhow::anyhow!("the phone is listed: {sessions}"))?;

    // Ending the phone's session signs the phone out, not this browser.
    let (status, done) = rpc(
        &node,
        &cookie,
        json!({"method": "revoke_session", "session": phone["id"]}),
    )
    .await?;
    assert_eq!(
        (status, done["kind"].clone()),
        (StatusCode::OK, json!("done"))
    );
    let (_, sessions) = rpc(&node, &cookie, json!({"method": "list_sessions"})).await?;
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(1));
    // Someone else's or an unknown session is not found.
    let (status, _) = rpc(
        &node,
        &cookie,
        json!({"method": "revoke_session", "session": "nope"}),
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Signing out ends the session and clears the cookie.
    let response = with_cookie(
        reqwest::Client::new().post(format!("{}/api/v1/logout", node.http_url())),
        &cookie,
    )
    .json(&json!({}))
    .send()
    .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let cleared = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _) = rpc(&node, &cookie, json!({"method": "whoami"})).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}

/// The web client is served by the node itself, from its binary: the page for every route of
/// the client, content-hashed assets cached for good and compressed as the browser accepts,
/// a Content-Security-Policy that allows nothing inline and no framing, and the API's own
/// JSON errors kept for `/api/`.
#[tokio::test]
async fn the_node_serves_the_web_client_from_its_binary() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    let http = reqwest::Client::builder().no_gzip().no_brotli().build()?;
    let get = |path: &str, encoding: Option<&str>| {
        let mut request = http.get(format!("{}{path}", node.http_url()));
        if let Some(e) = encoding {
            request = request.header(reqwest::header::ACCEPT_ENCODING, e);
        }
        request.send()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };

    let page = get("/", None).await?;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let csp = header(&page, "content-security-policy");
    for rule in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(rule), "{rule} missing: {csp}");
    }
    let html = page.text().await?;
    assert!(html.contains("<div id=\"app\">"), "{html}");
    // A route of the client gets the same page.
    let route = get("/d/some-discussion", None).await?;
    assert_eq!(route.status(), StatusCode::OK);
    assert_eq!(route.text().await?, html);

    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no script in {html}"))?
        .to_owned();
    assert!(script.starts_with("/assets/"), "{script}");
    let plain = get(&script, None).await?;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        header(&plain, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(header(&plain, "cache-control").contains("immutable"));
    let etag = header(&plain, "etag");
    let plain = plain.bytes().await?;
    let brotli = get(&script, Some("gzip, deflate, br")).await?;
    assert_eq!(header(&brotli, "content-encoding"), "br");
    assert_eq!(header(&brotli, "vary"), "Accept-Encoding");
    let brotli = brotli.bytes().await?;
    assert!(
        brotli.len() < plain.len() / 2,
        "{} vs {}",
        brotli.len(),
        plain.len()
    );
    let gzip = get(&script, Some("gzip")).await?;
    assert_eq!(header(&gzip, "content-encoding"), "gzip");
    let refused = get(&script, Some("br;q=0, gzip;q=0")).await?;
    assert_eq!(header(&refused, "content-encoding"), "");
    // Unchanged since the browser's copy: 304.
    let again = http
        .get(format!("{}{script}", node.http_url()))
        .header(reqwest::header::IF_NONE_MATCH, &etag)
        .send()
        .await?;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    assert_eq!(
        get("/assets/nothing.js", None).await?.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/.source-hash", None).await?.status(),
        StatusCode::NOT_FOUND
    );
    let api = get("/api/v1/nothing", None).await?;
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let body: Value = api.json().await?;
    assert_eq!(body["error"]["code"], "no_route");
    let post = http.post(format!("{}/", node.http_url())).send().await?;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    Ok(())
}

/// A person's client preferences are kept on the node, so that they follow them to every
/// device: an object the clients define, at most 16 KiB of JSON.
#[tokio::test]
async fn preferences_follow_the_user_to_another_device() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("vera", PASSWORD, false).await?;
    let laptop = sign_in(&node, "vera").await?;
    let (_, first) = rpc(&node, &laptop, json!({"method": "get_preferences"})).await?;
    assert_eq!(first, json!({"kind": "preferences", "preferences": {}}));
    let wanted = json!({"send_key": "ctrl-enter", "sound": false, "language": "ru"});
    let (status, _) = rpc(
        &node,
        &laptop,
        json!({"method": "set_preferences", "preferences": wanted}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    // Another device of the same person (a QUIC client) sees them.
    let (phone, _) = crate::support::login(&node, "vera", PASSWORD, "phone").await?;
    let reply =
        crate::support::ask(&phone, veche_client::protocol::Request::GetPreferences).await?;
    let veche_client::protocol::Reply::Preferences { preferences } = reply else {
        anyhow::bail!("expected preferences, got {reply:?}")
    };
    assert_eq!(preferences, wanted);

    for refused in [json!([1, 2]), json!({"x": "я".repeat(9000)})] {
        let (status, body) = rpc(
            &node,
            &laptop,
            json!({"method": "set_preferences", "preferences": refused}),
        )
        .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (_, kept) = rpc(&node, &laptop, json!({"method": "get_preferences"})).await?;
    assert_eq!(kept["preferences"], wanted);
    Ok(())
}

/// A file's download and preview take the device from their address (a plain link or
/// `<img>` of the node's pages cannot send the header), with the cookie only: never a token
/// from the address, and no other route takes the device there.
#[tokio::test]
async fn a_file_download_takes_the_device_from_its_address() -> anyhow::Result<()> {
    let _guard = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("anna", PASSWORD, false).await?;
    node.add_user("boris", PASSWORD, false).await?;
    let cookie = sign_in(&node, "anna").await?;
    let base = node.http_url();
    let http = reqwest::Client::new();
    let (status, opened) = rpc(
        &node,
        &cookie,
        json!({"method": "open_dialog", "with": "boris"}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{opened}");
    let dialog = opened["discussion"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let data = crate::files::content(3, 100_000);
    let up: Value = with_cookie(http.post(format!("{base}/api/v1/uploads")), &cookie)
        .json(&json!({"discussion": dialog, "name": "счёт.bin", "size": data.len(), "sha256": crate::files::sha(&data)}))
        .send()
        .await?
        .json()
        .await?;
    let upload = up["id"].as_str().unwrap_or_default();
    let file: Value = with_cookie(
        http.put(format!("{base}/api/v1/uploads/{upload}?offset=0")),
        &cookie,
    )
    .body(data.clone())
    .send()
    .await?
    .json()
    .await?;
    let id = file["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("f_"), "{file}");

    // The cookie and the device in the address: the file, as a link would save it.
    let url = format!("{base}/api/v1/files/{id}?device={DEVICE}");
    let ok = http.get(&url).header(COOKIE, &cookie).send().await?;
    assert_eq!(ok.status(), StatusCode::OK);
    let disposition = ok
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert_eq!(ok.bytes().await?.to_vec(), data);
    // Resumable like any download.
    let rest = http
        .get(&url)
        .header(COOKIE, &cookie)
        .header("Range", "bytes=99000-")
        .send()
        .await?;
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(rest.bytes().await?.to_vec(), data[99_000..].to_vec());
    // The preview's address takes it too (none for this file: "not found", not "who are you").
    let thumb = http
        .get(format!(
            "{base}/api/v1/files/{id}/thumbnail?device={DEVICE}"
        ))
        .header(COOKIE, &cookie)
        .send()
        .await?;
    assert_eq!(thumb.status(), StatusCode::NOT_FOUND);

    // Without the device, with another device, or from another site's page: refused.
    let bare = http
        .get(format!("{base}/api/v1/files/{id}"))
        .header(COOKIE, &cookie)
        .send()
        .await?;
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let other = http
        .get(format!(
            "{base}/api/v1/files/{id}?device=web-ffffffffffffffff"
        ))
        .header(COOKIE, &cookie)
        .send()
        .await?;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    let foreign = http
        .get(&url)
        .header(COOKIE, &cookie)
        .header(ORIGIN, "http://evil.example")
        .send()
        .await?;
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);

    // A token is never taken from a file's address.
    let token: Value = http
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"login": "anna", "password": PASSWORD, "device_id": "script"}))
        .send()
        .await?
        .json()
        .await?;
    let token = token["session_token"].as_str().unwrap_or_default();
    assert!(!token.is_empty());
    let in_url = http
        .get(format!(
            "{base}/api/v1/files/{id}?access_token={token}&device=script"
        ))
        .send()
        .await?;
    assert_eq!(in_url.status(), StatusCode::UNAUTHORIZED);

    // Other routes still want the header.
    let list = http
        .get(format!("{base}/api/v1/discussions?device={DEVICE}"))
        .header(COOKIE, &cookie)
        .send()
        .await?;
    assert_eq!(list.status(), StatusCode::UNAUTHORIZED);
    let upload_status = http
        .get(format!("{base}/api/v1/uploads/{upload}?device={DEVICE}"))
        .header(COOKIE, &cookie)
        .send()
        .await?;
    assert_eq!(upload_status.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}
