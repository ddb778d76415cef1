//! The gateway's JSON endpoints. Each handler is a thin translation into the same service
//! calls the QUIC connection makes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use veche_protocol::discussions::{Action, ObjectRef, SendMessage};
use veche_protocol::{Reply, Request};

use super::{ApiError, AppAuth, AppState, ErrorResponse, Gateway, Peer, Principal};
use crate::apps::{NewWebhook, Signing};
use crate::services::user_request;
use veche_core::discussions::Caller;

type Result<T> = std::result::Result<T, ApiError>;

pub(super) fn routes(r: OpenApiRouter<Arc<Gateway>>) -> OpenApiRouter<Arc<Gateway>> {
    r.routes(routes!(node_info))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(rpc))
        .routes(routes!(list_discussions))
        .routes(routes!(history))
        .routes(routes!(post_message))
        .routes(routes!(search))
        .routes(routes!(directory))
        .routes(routes!(register))
        .routes(routes!(activate))
        .routes(routes!(ensure_discussion))
        .routes(routes!(set_access, get_access))
        .routes(routes!(post_object_message))
        .routes(routes!(post_event))
        .routes(routes!(add_webhook, list_webhooks))
        .routes(routes!(remove_webhook))
        .routes(routes!(subscribe, unsubscribe))
        .routes(routes!(publish))
        .routes(routes!(pull))
        .routes(routes!(ack))
}

/// A protocol value carried as JSON (see docs/protocol.md for its fields).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub(crate) struct Wire(pub(crate) serde_json::Value);

pub(super) fn wire<T: Serialize>(value: &T) -> Json<Wire> {
    Json(Wire(
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
    ))
}

async fn call(gateway: &Gateway, caller: &Caller, request: Request) -> Result<Reply> {
    Ok(user_request(&gateway.services, caller, request).await?)
}

// ---- node ----

/// The node's name and the key that signs its webhook requests.
#[derive(Debug, Serialize, ToSchema)]
struct NodeInfo {
    /// The node's name (the part after `@` in user ids).
    name: String,
    /// The ed25519 public key (hex) that `Veche-Signature: ed25519=…` is checked against.
    public_key: String,
    /// Protocol versions the node speaks.
    protocol_versions: Vec<u16>,
}

#[utoipa::path(get, path = "/api/v1/node", tag = "node",
    responses((status = 200, body = NodeInfo)))]
async fn node_info(State(g): AppState) -> Json<NodeInfo> {
    Json(NodeInfo {
        name: g.node_name.clone(),
        public_key: g.services.apps.public_key_hex(),
        protocol_versions: veche_protocol::PROTOCOL_VERSIONS.to_vec(),
    })
}

// ---- users ----

/// Credentials of a person.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    login: String,
    password: String,
    /// Chosen by the client, kept across sessions: 1–64 of `A-Z a-z 0-9 . _ -`.
    device_id: String,
    #[serde(default)]
    device_name: String,
    /// A browser: keep the session in an HttpOnly cookie instead of answering its token.
    #[serde(default)]
    cookie: bool,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
struct LoginReply {
    /// Send as `Authorization: Bearer …` with `Veche-Device: <device_id>`. Absent when the
    /// session went into the cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<String>,
    #[schema(value_type = Object)]
    user: serde_json::Value,
}

#[utoipa::path(post, path = "/api/v1/login", tag = "users", request_body = LoginBody,
    description = "Opens a session. With `\"cookie\": true` (the web client) the session is \
                   kept in an HttpOnly cookie, taken back only with a `Veche-Device` header \
                   from the node's own pages, and no token is answered.",
    responses((status = 200, body = LoginReply), (status = 401, body = ErrorResponse),
              (status = 429, body = ErrorResponse)))]
async fn login(
    State(g): AppState,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> Result<(HeaderMap, Json<LoginReply>)> {
    let ip = g.client_ip(peer.ip(), &headers);
    let (session_token, auth) = g
        .services
        .accounts
        .login(
            &body.login,
            &body.password,
            &body.device_id,
            &body.device_name,
            ip,
        )
        .await?;
    let mut out = HeaderMap::new();
    let session_token = if body.cookie {
        set_cookie(
            &mut out,
            &super::session_cookie(Some(&session_token), g.tls),
        );
        None
    } else {
        Some(session_token)
    };
    Ok((
        out,
        Json(LoginReply {
            session_token,
            user: serde_json::to_value(&auth.user).unwrap_or_default(),
        }),
    ))
}

fn set_cookie(headers: &mut HeaderMap, value: &str) {
    if let Ok(value) = axum::http::HeaderValue::from_str(value) {
        headers.append(axum::http::header::SET_COOKIE, value);
    }
}

/// Nothing to say.
#[derive(Debug, Serialize, ToSchema)]
struct Empty {}

#[utoipa::path(post, path = "/api/v1/logout", tag = "users",
    description = "Ends the caller's session (and clears the web client's cookie).",
    responses((status = 200, body = Empty), (status = 401, body = ErrorResponse)))]
async fn logout(State(g): AppState, principal: Principal) -> Result<(HeaderMap, Json<Empty>)> {
    let (_, cookie) = account_request(&g, &principal, Request::Logout).await?;
    let mut out = HeaderMap::new();
    if let Some(cookie) = cookie {
        set_cookie(&mut out, &cookie);
    }
    Ok((out, Json(Empty {})))
}

/// Whether `request` is one of the account requests the gateway answers itself (the others
/// go to `user_request`, as on QUIC).
pub(super) fn is_account_request(request: &Request) -> bool {
    matches!(
        request,
        Request::Whoami
            | Request::Logout
            | Request::ListSessions
            | Request::RevokeSession { .. }
            | Request::ChangePassword { .. }
    )
}

/// An account request of a person on the gateway, as the QUIC connection answers it; with
/// the reply, a `Set-Cookie` value that clears the cookie when the request ended the cookie's
/// own session.
pub(super) async fn account_request(
    g: &Gateway,
    principal: &Principal,
    request: Request,
) -> std::result::Result<(Reply, Option<String>), veche_protocol::ErrorBody> {
    use veche_protocol::{ErrorBody, ErrorCode};
    let Principal::User {
        caller,
        session,
        cookie,
        ip,
    } = principal
    else {
        return Err(ErrorBody::new(
            ErrorCode::Forbidden,
            "an application has no sessions or password of a person",
        ));
    };
    let accounts = &g.services.accounts;
    let registry = &g.services.registry;
    let clear = |ended: &[String]| {
        (*cookie && ended.contains(session)).then(|| super::session_cookie(None, g.tls))
    };
    let fail = |e: crate::accounts::AccountError| crate::errors::body(&e);
    match request {
        Request::Whoami => {
            let user = accounts.user_by_id(&caller.user).await.map_err(fail)?;
            Ok((
                Reply::Me {
                    user: crate::accounts::user_info(&user),
                },
                None,
            ))
        }
        Request::Logout => {
            let ended = accounts
                .end_sessions(
                    &caller.user,
                    Some(session),
                    &format!("user:{}", caller.user),
                    "session.logout",
                )
                .await
                .map_err(fail)?;
            registry.end_sessions(&ended, "logged out");
            // The cookie goes whatever ended: its session is over either way.
            Ok((
                Reply::Done,
                cookie.then(|| super::session_cookie(None, g.tls)),
            ))
        }
        Request::ListSessions => Ok((
            Reply::Sessions {
                sessions: accounts.own_sessions(&caller.user).await.map_err(fail)?,
                current: session.clone(),
            },
            None,
        )),
        Request::RevokeSession { session: target } => {
            let ended = accounts
                .end_own_session(&caller.user, &target)
                .await
                .map_err(fail)?;
            registry.end_sessions(&ended, "signed out from another device");
            Ok((Reply::Done, clear(&ended)))
        }
        Request::ChangePassword {
            old_password,
            new_password,
        } => {
            let ended = accounts
                .change_own_password(&caller.user, session, &old_password, &new_password, *ip)
                .await
                .map_err(fail)?;
            registry.end_sessions(&ended, "the password was changed");
            Ok((Reply::Done, clear(&ended)))
        }
        _ => Err(ErrorBody::new(
            ErrorCode::BadRequest,
            "not an account request",
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/rpc", tag = "users", request_body = Wire,
    description = "Any discussion request of the QUIC protocol, as JSON (`{\"method\": \
                   \"send\", …}`); answers its reply. Users and applications.",
    responses((status = 200, body = Wire), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse)))]
async fn rpc(
    State(g): AppState,
    principal: Principal,
    Json(body): Json<Wire>,
) -> Result<(HeaderMap, Json<Wire>)> {
    let request: Request = serde_json::from_value(body.0)
        .map_err(|e| ApiError::bad_request(format!("not a request: {e}")))?;
    if matches!(request, Request::Watch { .. }) {
        return Err(ApiError::bad_request(
            "watch delivers live events to a connection: send it on the WebSocket",
        ));
    }
    let mut out = HeaderMap::new();
    if is_account_request(&request) {
        let (reply, cookie) = account_request(&g, &principal, request).await?;
        if let Some(cookie) = cookie {
            set_cookie(&mut out, &cookie);
        }
        return Ok((out, wire(&reply)));
    }
    Ok((out, wire(&call(&g, principal.caller(), request).await?)))
}

#[utoipa::path(get, path = "/api/v1/discussions", tag = "users",
    responses((status = 200, body = Wire)))]
async fn list_discussions(State(g): AppState, principal: Principal) -> Result<Json<Wire>> {
    Ok(wire(
        &call(&g, principal.caller(), Request::ListDiscussions).await?,
    ))
}

/// A page of history.
#[derive(Debug, Deserialize, IntoParams)]
struct HistoryQuery {
    /// Events before this sequence number (the newest when absent).
    before: Option<u64>,
    /// At most this many events (1–500, default 50).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/discussions/{discussion}/history", tag = "users",
    params(("discussion" = String, Path), HistoryQuery),
    responses((status = 200, body = Wire), (status = 404, body = ErrorResponse)))]
async fn history(
    State(g): AppState,
    principal: Principal,
    Path(discussion): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Wire>> {
    let request = Request::History {
        discussion,
        before: q.before,
        limit: q.limit.unwrap_or(50),
    };
    Ok(wire(&call(&g, principal.caller(), request).await?))
}

/// A message to post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    /// Chosen by the sender and kept across retries: a retry returns the original message.
    client_msg_id: String,
    #[serde(default)]
    text: String,
    reply_to: Option<String>,
    /// Machine-readable data (JSON, at most 64 KiB).
    #[schema(value_type = Object)]
    data: Option<serde_json::Value>,
    /// Buttons: `[{"id": "approve", "label": "Approve"}]`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    actions: Vec<Action>,
    /// Ids of files uploaded for this discussion (`POST /api/v1/uploads`), at most 10.
    #[serde(default)]
    files: Vec<String>,
}

/// Where a posted message landed.
#[derive(Debug, Serialize, ToSchema)]
struct Posted {
    discussion: String,
    message_id: String,
    seq: u64,
}

fn posted(discussion: String, reply: Reply) -> Result<Json<Posted>> {
    match reply {
        Reply::Sent { message_id, seq } => Ok(Json(Posted {
            discussion,
            message_id,
            seq,
        })),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected reply",
        )),
    }
}

fn send_request(discussion: &str, body: MessageBody) -> Request {
    Request::Send(SendMessage {
        files: body.files,
        discussion: discussion.to_owned(),
        client_msg_id: body.client_msg_id,
        text: body.text,
        reply_to: body.reply_to,
        data: body.data,
        actions: body.actions,
    })
}

#[utoipa::path(post, path = "/api/v1/discussions/{discussion}/messages", tag = "users",
    params(("discussion" = String, Path)), request_body = MessageBody,
    responses((status = 200, body = Posted), (status = 404, body = ErrorResponse),
              (status = 409, body = ErrorResponse)))]
async fn post_message(
    State(g): AppState,
    principal: Principal,
    Path(discussion): Path<String>,
    Json(body): Json<MessageBody>,
) -> Result<Json<Posted>> {
    let reply = call(&g, principal.caller(), send_request(&discussion, body)).await?;
    posted(discussion, reply)
}

/// A search (see the `search` request of the protocol).
#[derive(Debug, Deserialize, IntoParams)]
struct SearchParams {
    /// Words, codes and numbers, all required, in any form.
    q: String,
    /// Only in this discussion.
    discussion: Option<String>,
    /// Only by this author (user id).
    author: Option<String>,
    /// Written at or after (ms since the epoch, UTC).
    from: Option<i64>,
    /// Written before (ms since the epoch, UTC).
    to: Option<i64>,
    /// Only messages with files attached.
    #[serde(default)]
    has_file: bool,
    /// Hits to skip.
    offset: Option<u32>,
    /// At most this many (1–100, default 20).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/search", tag = "users", params(SearchParams),
    description = "Messages the caller may read now, best first, with snippets; \
                   `corrected_query` when the query was retried on the other keyboard layout.",
    responses((status = 200, body = Wire), (status = 400, body = ErrorResponse),
              (status = 503, body = ErrorResponse)))]
async fn search(
    State(g): AppState,
    principal: Principal,
    Query(p): Query<SearchParams>,
) -> Result<Json<Wire>> {
    let request = Request::Search(veche_protocol::discussions::SearchQuery {
        has_file: p.has_file,
        query: p.q,
        discussion: p.discussion,
        author: p.author,
        object: None,
        from: p.from.map(veche_protocol::Timestamp),
        to: p.to.map(veche_protocol::Timestamp),
        offset: p.offset.unwrap_or(0),
        limit: p.limit.unwrap_or(20),
    });
    Ok(wire(&call(&g, principal.caller(), request).await?))
}

/// A directory lookup.
#[derive(Debug, Deserialize, IntoParams)]
struct DirectoryParams {
    /// A name, login or e-mail, in either alphabet.
    q: String,
    /// At most this many (1–100, default 20).
    limit: Option<u32>,
    /// A linked node whose directory is searched instead.
    node: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/directory", tag = "users", params(DirectoryParams),
    responses((status = 200, body = Wire), (status = 400, body = ErrorResponse)))]
async fn directory(
    State(g): AppState,
    principal: Principal,
    Query(p): Query<DirectoryParams>,
) -> Result<Json<Wire>> {
    let request = Request::Directory {
        query: p.q,
        limit: p.limit.unwrap_or(20),
        node: p.node,
    };
    Ok(wire(&call(&g, principal.caller(), request).await?))
}

// ---- application registration ----

/// Starts a registration: a one-time code goes to `email`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    /// The application's name: its login, and the `application` of its objects.
    name: String,
    email: String,
}

#[utoipa::path(post, path = "/api/v1/apps/register", tag = "apps", request_body = RegisterBody,
    responses((status = 202, description = "The code was sent"),
              (status = 403, body = ErrorResponse), (status = 409, body = ErrorResponse),
              (status = 429, body = ErrorResponse), (status = 502, body = ErrorResponse)))]
async fn register(
    State(g): AppState,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Json(body): Json<RegisterBody>,
) -> Result<StatusCode> {
    super::limit(&g.registrations, g.client_ip(peer.ip(), &headers))?;
    g.services
        .apps
        .start_registration(
            &body.name,
            &body.email,
            false,
            &format!("app:{}", body.name),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Finishes a registration with the code from the e-mail.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    name: String,
    code: String,
    /// This installation of the application (for example its database's unique id): the
    /// credentials work from it only, so a copy of the database cannot post.
    instance_id: String,
}

/// The application's credentials: shown once.
#[derive(Debug, Serialize, ToSchema)]
struct ActivateReply {
    app: String,
    user_id: String,
    /// Send as `Authorization: Bearer …` with `Veche-Instance: <instance_id>`.
    secret: String,
}

#[utoipa::path(post, path = "/api/v1/apps/activate", tag = "apps", request_body = ActivateBody,
    responses((status = 200, body = ActivateReply), (status = 400, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)))]
async fn activate(
    State(g): AppState,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    Json(body): Json<ActivateBody>,
) -> Result<Json<ActivateReply>> {
    super::limit(&g.activations, g.client_ip(peer.ip(), &headers))?;
    let c = g
        .services
        .apps
        .activate(&body.name, &body.code, &body.instance_id)
        .await?;
    Ok(Json(ActivateReply {
        app: c.app,
        user_id: c.user_id,
        secret: c.secret,
    }))
}

// ---- object discussions ----

fn object(app: &AppAuth, object_type: String, object_id: String) -> ObjectRef {
    ObjectRef {
        application: app.app.name.clone(),
        object_type,
        object_id,
    }
}

/// How the discussion is called when it is created.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EnsureBody {
    #[serde(default)]
    title: String,
}

async fn ensure(g: &Gateway, app: &AppAuth, object: ObjectRef, title: &str) -> Result<Reply> {
    Ok(g.services
        .discussions
        .open_object(&app.caller, object, title)
        .await?)
}

/// The id of the object's discussion, created if needed (found on the read path when it
/// exists: no round through the sequencer).
async fn ensure_id(g: &Gateway, app: &AppAuth, object: ObjectRef) -> Result<String> {
    if let Some(id) = g
        .services
        .discussions
        .existing_object_discussion(&app.caller, &object)
        .await?
    {
        return Ok(id);
    }
    discussion_id(&ensure(g, app, object, "").await?)
}

fn discussion_id(reply: &Reply) -> Result<String> {
    match reply {
        Reply::Discussion { discussion } => Ok(discussion.id.clone()),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected reply",
        )),
    }
}

#[utoipa::path(put, path = "/api/v1/objects/{object_type}/{object_id}/discussion", tag = "apps",
    params(("object_type" = String, Path), ("object_id" = String, Path)),
    request_body = EnsureBody,
    description = "The discussion of one of the application's objects, created on the first \
                   call and returned as it is on every later one.",
    responses((status = 200, body = Wire), (status = 400, body = ErrorResponse)))]
async fn ensure_discussion(
    State(g): AppState,
    app: AppAuth,
    Path((object_type, object_id)): Path<(String, String)>,
    body: Option<Json<EnsureBody>>,
) -> Result<Json<Wire>> {
    let title = body.map(|b| b.0.title).unwrap_or_default();
    let reply = ensure(&g, &app, object(&app, object_type, object_id), &title).await?;
    Ok(wire(&reply))
}

/// Who may see an object (and so its discussion).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AccessList {
    /// Logins or user ids.
    #[serde(default)]
    users: Vec<String>,
    /// Group discussion ids: their members.
    #[serde(default)]
    groups: Vec<String>,
}

#[utoipa::path(put, path = "/api/v1/objects/{object_type}/{object_id}/access", tag = "apps",
    params(("object_type" = String, Path), ("object_id" = String, Path)),
    request_body = AccessList,
    description = "Replaces the object's access list. Users who lose access lose the \
                   discussion at once, live connections included.",
    responses((status = 204), (status = 404, body = ErrorResponse)))]
async fn set_access(
    State(g): AppState,
    app: AppAuth,
    Path((object_type, object_id)): Path<(String, String)>,
    Json(body): Json<AccessList>,
) -> Result<StatusCode> {
    g.services
        .discussions
        .set_object_access(
            &app.caller,
            object(&app, object_type, object_id),
            &body.users,
            &body.groups,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/objects/{object_type}/{object_id}/access", tag = "apps",
    params(("object_type" = String, Path), ("object_id" = String, Path)),
    responses((status = 200, body = AccessList)))]
async fn get_access(
    State(g): AppState,
    app: AppAuth,
    Path((object_type, object_id)): Path<(String, String)>,
) -> Result<Json<AccessList>> {
    let (users, groups) = g
        .services
        .discussions
        .object_access_list(&app.caller, &object(&app, object_type, object_id))
        .await?;
    Ok(Json(AccessList { users, groups }))
}

#[utoipa::path(post, path = "/api/v1/objects/{object_type}/{object_id}/messages", tag = "apps",
    params(("object_type" = String, Path), ("object_id" = String, Path)),
    request_body = MessageBody,
    description = "Posts into the object's discussion as the application (creating the \
                   discussion if needed). Clicks on its buttons come back as `action.clicked` \
                   webhook requests and `action_clicked` events on the application's WebSocket.",
    responses((status = 200, body = Posted), (status = 409, body = ErrorResponse)))]
async fn post_object_message(
    State(g): AppState,
    app: AppAuth,
    Path((object_type, object_id)): Path<(String, String)>,
    Json(body): Json<MessageBody>,
) -> Result<Json<Posted>> {
    let discussion = ensure_id(&g, &app, object(&app, object_type, object_id)).await?;
    let reply = call(&g, &app.caller, send_request(&discussion, body)).await?;
    posted(discussion, reply)
}

// ---- business events ----

/// A business event (`invoice.posted`) about one of the application's objects.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EventBody {
    kind: String,
    object_type: Option<String>,
    object_id: Option<String>,
    #[schema(value_type = Object)]
    #[serde(default)]
    payload: serde_json::Value,
    /// Or the `Idempotency-Key` header: the same key is accepted once.
    idempotency_key: Option<String>,
    /// Also show the event in the object's discussion, with this text.
    timeline: Option<String>,
}

/// Whether the event was new.
#[derive(Debug, Serialize, ToSchema)]
struct EventReply {
    /// `false`: this key was seen before; nothing was routed again.
    fresh: bool,
    /// The timeline message, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Posted>,
}

#[utoipa::path(post, path = "/api/v1/events", tag = "apps", request_body = EventBody,
    description = "Routed to bots subscribed to the kind and to webhooks that want it. Recorded once per key; the key reused for another event is refused with `409 conflict`.",
    responses((status = 200, body = EventReply), (status = 400, body = ErrorResponse),
        (status = 409, body = ErrorResponse)))]
async fn post_event(
    State(g): AppState,
    app: AppAuth,
    headers: HeaderMap,
    Json(body): Json<EventBody>,
) -> Result<Json<EventReply>> {
    let key = body
        .idempotency_key
        .or_else(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .ok_or_else(|| ApiError::bad_request("an idempotency key is required"))?;
    let object = match (body.object_type, body.object_id) {
        (Some(t), Some(i)) => Some(object(&app, t, i)),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "object_type and object_id go together",
            ));
        }
    };
    if body.timeline.is_some() && object.is_none() {
        return Err(ApiError::bad_request("a timeline note needs an object"));
    }
    // Everything that can be refused is checked before the event is recorded, so that a
    // refusal never follows an event that went out.
    if let Some(object) = &object {
        veche_core::discussions::check_object(object)?;
    }
    let discussion = match (&body.timeline, &object) {
        (Some(_), Some(object)) => Some(ensure_id(&g, &app, object.clone()).await?),
        _ => None,
    };
    let fresh = g
        .services
        .apps
        .post_event(
            &app.app,
            body.kind.clone(),
            object.clone(),
            body.payload.to_string(),
            key.clone(),
        )
        .await?;
    let mut message = None;
    if let (Some(text), Some(discussion)) = (body.timeline, discussion) {
        // Derived from the key: a retried event finds its message instead of posting twice.
        let client_msg_id = format!(
            "event-{}",
            &hex::encode(Sha256::digest(key.as_bytes()))[..32]
        );
        let send = MessageBody {
            client_msg_id,
            text,
            reply_to: None,
            data: Some(serde_json::json!({ "event": body.kind, "payload": body.payload })),
            actions: Vec::new(),
            files: Vec::new(),
        };
        let reply = call(&g, &app.caller, send_request(&discussion, send)).await?;
        message = Some(posted(discussion, reply)?.0);
    }
    Ok(Json(EventReply { fresh, message }))
}

// ---- webhooks ----

/// A webhook to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    /// Event kinds (`invoice.posted`, `action.clicked`, …) or `*`.
    kinds: Vec<String>,
    /// `hmac-sha256` (default) or `ed25519`.
    #[schema(value_type = Option<String>)]
    signing: Option<Signing>,
}

/// A webhook, with the state of its requests.
#[derive(Debug, Serialize, ToSchema)]
struct WebhookReply {
    #[schema(value_type = Object)]
    webhook: serde_json::Value,
    /// The HMAC key, shown only when the webhook is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "apps", request_body = WebhookBody,
    description = "Requests are POSTed with `Veche-Event`, `Veche-Delivery` (deduplicate on \
                   it), `Veche-Timestamp` and `Veche-Signature` (`v1=` HMAC-SHA256 or \
                   `ed25519=` over `veche-webhook:<timestamp>.<body>`), and retried with \
                   backoff until \
                   a 2xx answer.",
    responses((status = 201, body = WebhookReply), (status = 400, body = ErrorResponse)))]
async fn add_webhook(
    State(g): AppState,
    app: AppAuth,
    Json(body): Json<WebhookBody>,
) -> Result<(StatusCode, Json<WebhookReply>)> {
    let row = g
        .services
        .apps
        .add_webhook(
            &app.caller.user,
            NewWebhook {
                url: body.url,
                kinds: body.kinds,
                signing: body.signing.unwrap_or(Signing::HmacSha256),
            },
        )
        .await?;
    let secret = (!row.secret.is_empty()).then(|| row.secret.clone());
    let info = crate::services::webhook_info(&veche_store::WebhookStatus::fresh(row));
    Ok((
        StatusCode::CREATED,
        Json(WebhookReply {
            webhook: serde_json::to_value(info).unwrap_or_default(),
            secret,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "apps",
    responses((status = 200, body = Wire)))]
async fn list_webhooks(State(g): AppState, app: AppAuth) -> Result<Json<Wire>> {
    let hooks: Vec<_> = g
        .services
        .apps
        .webhooks(Some(&app.caller.user))
        .await?
        .iter()
        .map(crate::services::webhook_info)
        .collect();
    Ok(wire(&hooks))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "apps",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)))]
async fn remove_webhook(
    State(g): AppState,
    app: AppAuth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    g.services
        .apps
        .remove_webhook(&id, Some(&app.caller.user))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- topics ----

/// Pulled (no `push_url`) or pushed subscription.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    /// POST each message here (signed like webhooks); a 2xx answer acknowledges it.
    push_url: Option<String>,
    #[schema(value_type = Option<String>)]
    signing: Option<Signing>,
}

/// A subscription.
#[derive(Debug, Serialize, ToSchema)]
struct SubscriptionReply {
    topic: String,
    push_url: Option<String>,
    signing: String,
    /// The HMAC key pushed requests are signed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/topics/{topic}/subscription", tag = "topics",
    params(("topic" = String, Path)), request_body = SubscribeBody,
    description = "Messages published from now on are kept for this application until it \
                   acknowledges them (or they expire).",
    responses((status = 200, body = SubscriptionReply)))]
async fn subscribe(
    State(g): AppState,
    app: AppAuth,
    Path(topic): Path<String>,
    body: Option<Json<SubscribeBody>>,
) -> Result<Json<SubscriptionReply>> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let push = body
        .push_url
        .map(|u| (u, body.signing.unwrap_or(Signing::HmacSha256)));
    let row = g.services.apps.subscribe(&app.app, &topic, push).await?;
    Ok(Json(SubscriptionReply {
        secret: (row.push_url.is_some() && !row.secret.is_empty()).then(|| row.secret.clone()),
        topic: row.topic,
        push_url: row.push_url,
        signing: row.signing,
    }))
}

#[utoipa::path(delete, path = "/api/v1/topics/{topic}/subscription", tag = "topics",
    params(("topic" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)))]
async fn unsubscribe(
    State(g): AppState,
    app: AppAuth,
    Path(topic): Path<String>,
) -> Result<StatusCode> {
    g.services.apps.unsubscribe(&app.app, &topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A message for every subscriber of the topic.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// The same key from the same application is published once; reused with a different
    /// payload, it is refused with `409 conflict`.
    idempotency_key: String,
    /// Seconds after which the message is gone, delivered or not.
    ttl_secs: Option<u64>,
}

/// The published message.
#[derive(Debug, Serialize, ToSchema)]
struct PublishReply {
    id: i64,
    /// `false`: the key was seen before; this is the earlier message.
    fresh: bool,
}

#[utoipa::path(post, path = "/api/v1/topics/{topic}/messages", tag = "topics",
    params(("topic" = String, Path)), request_body = PublishBody,
    responses((status = 200, body = PublishReply), (status = 400, body = ErrorResponse),
        (status = 409, body = ErrorResponse)))]
async fn publish(
    State(g): AppState,
    app: AppAuth,
    Path(topic): Path<String>,
    Json(body): Json<PublishBody>,
) -> Result<Json<PublishReply>> {
    let (id, fresh) = g
        .services
        .apps
        .publish(
            &app.app,
            &topic,
            &body.payload,
            &body.idempotency_key,
            body.ttl_secs.map(Duration::from_secs),
        )
        .await?;
    Ok(Json(PublishReply { id, fresh }))
}

/// How many messages, leased for how long.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PullBody {
    /// 1–100 (default 10).
    max: Option<u32>,
    /// Unacknowledged messages come again after this (default `[apps] topic_lease_secs`).
    lease_ms: Option<u64>,
}

/// One message.
#[derive(Debug, Serialize, ToSchema)]
struct TopicMessage {
    id: i64,
    publisher: String,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    published_at: i64,
    expires_at: Option<i64>,
    /// 1 on the first delivery, more on redeliveries.
    attempt: i64,
}

/// Leased messages, oldest first.
#[derive(Debug, Serialize, ToSchema)]
struct PullReply {
    messages: Vec<TopicMessage>,
}

#[utoipa::path(post, path = "/api/v1/topics/{topic}/pull", tag = "topics",
    params(("topic" = String, Path)), request_body = PullBody,
    responses((status = 200, body = PullReply), (status = 404, body = ErrorResponse)))]
async fn pull(
    State(g): AppState,
    app: AppAuth,
    Path(topic): Path<String>,
    body: Option<Json<PullBody>>,
) -> Result<Json<PullReply>> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let rows = g
        .services
        .apps
        .pull(
            &app.app,
            &topic,
            body.max.unwrap_or(10),
            body.lease_ms.map(Duration::from_millis),
        )
        .await?;
    Ok(Json(PullReply {
        messages: rows
            .into_iter()
            .map(|r| TopicMessage {
                id: r.id,
                publisher: r.publisher,
                payload: serde_json::from_str(&r.payload).unwrap_or_default(),
                published_at: r.published_at,
                expires_at: r.expires_at,
                attempt: r.attempts,
            })
            .collect(),
    }))
}

/// Messages handled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    ids: Vec<i64>,
}

/// How many were still unacknowledged.
#[derive(Debug, Serialize, ToSchema)]
struct AckReply {
    acknowledged: u64,
}

#[utoipa::path(post, path = "/api/v1/topics/{topic}/ack", tag = "topics",
    params(("topic" = String, Path)), request_body = AckBody,
    responses((status = 200, body = AckReply)))]
async fn ack(
    State(g): AppState,
    app: AppAuth,
    Path(topic): Path<String>,
    Json(body): Json<AckBody>,
) -> Result<Json<AckReply>> {
    let acknowledged = g.services.apps.ack(&app.app, &topic, &body.ids).await?;
    Ok(Json(AckReply { acknowledged }))
}
