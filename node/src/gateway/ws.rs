//! The gateway's WebSocket: live events as JSON text frames, and requests over the same
//! socket.
//!
//! The socket is registered in the same registry as QUIC connections, so it gets the same
//! events (including `discussion_removed` when access goes) and is ended the same way when
//! its session is revoked or its user locked. Requests are `{"id": 1, "request": {…}}` and
//! are answered `{"id": 1, "reply": {…}}` or `{"id": 1, "error": {…}}`; `watch` on this
//! socket makes an object discussion's events come here.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use veche_protocol::{Event, Request, frame};

use super::{AnyPrincipal, ApiError, AppState, Gateway, Principal};
use crate::services::embed::{self, EmbedScope};
use crate::services::user_request;
use veche_core::live::registry::{
    EncodedEvent, EndSignal, LiveConnection, Transport, next_connection_id,
};

/// Events buffered for a socket before it counts as lagging and is closed.
const EVENT_BUFFER: usize = 1024;
/// Close code for a client that did not keep up: reconnect and sync.
const CLOSE_LAGGED: u16 = 4009;
/// Close code for a session that ended.
const CLOSE_SESSION_ENDED: u16 = 4001;
/// Requests one socket may have in flight; more wait (and the socket stops reading).
const MAX_IN_FLIGHT: usize = 32;
/// Longest a frame may take to go out before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[utoipa::path(get, path = "/api/v1/ws", tag = "users",
    description = "WebSocket upgrade. Live events arrive as JSON text frames (the QUIC \
                   protocol's events); requests go as `{\"id\": n, \"request\": {…}}` and are \
                   answered with the same id. Credentials as headers, or the query parameters \
                   `access_token` and `device` (users) or `instance` (applications).",
    responses((status = 101, description = "Switching to WebSocket"),
              (status = 401, body = super::ErrorResponse)))]
pub(super) async fn socket(
    State(g): AppState,
    AnyPrincipal(principal): AnyPrincipal,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // The socket's task is tracked like its requests, so shutdown waits for it too.
    let tasks = g.tasks.clone();
    let upgrade = match &principal {
        // The widget named its session as a subprotocol; the answer must name one it asked.
        Principal::Embed(_) => upgrade.protocols([EMBED_PROTOCOL]),
        _ => upgrade,
    };
    Ok(upgrade
        .max_message_size(1024 * 1024)
        .on_upgrade(move |socket| tasks.track_future(run(socket, g, principal))))
}

/// The subprotocol a widget's socket asks for, next to its session token.
const EMBED_PROTOCOL: &str = "veche.embed";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    id: u64,
    request: serde_json::Value,
}

async fn run(socket: WebSocket, g: Arc<Gateway>, principal: Principal) {
    let id = next_connection_id();
    let _open = g
        .services
        .metrics
        .connection(crate::metrics::Transport::WebSocket);
    let (session, user) = match &principal {
        Principal::User {
            session, caller, ..
        } => (session.clone(), caller.user.clone()),
        Principal::App { app, caller } => (format!("app:{}", app.name), caller.user.clone()),
        Principal::Embed(scope) => (scope.session.clone(), scope.caller.user.clone()),
    };
    // An embed session's socket carries its one discussion only.
    let scope = match &principal {
        Principal::Embed(scope) => Some(scope.clone()),
        _ => None,
    };
    // Requests on this socket come from this connection (presence, watching).
    let mut principal = principal;
    match &mut principal {
        Principal::User { caller, .. } | Principal::App { caller, .. } => caller.connection = id,
        Principal::Embed(scope) => scope.caller.connection = id,
    }
    let (end_tx, mut end_rx) = mpsc::channel::<EndSignal>(4);
    let (events_tx, mut events_rx) = mpsc::channel::<EncodedEvent>(EVENT_BUFFER);
    let cancel = CancellationToken::new();
    let ended = Arc::new(AtomicBool::new(false));
    let registry = &g.services.registry;
    registry.register(
        &session,
        LiveConnection {
            id,
            user,
            conn: Transport::Socket(cancel.clone()),
            end: end_tx,
            ended: ended.clone(),
            events: events_tx,
            watching: Arc::new(Mutex::new(HashSet::new())),
        },
    );
    // A revocation or lock that committed between the credential check and the
    // registration.
    let still = match &principal {
        Principal::User { session, .. } | Principal::Embed(EmbedScope { session, .. }) => g
            .services
            .accounts
            .session_exists(session)
            .await
            .unwrap_or(false),
        Principal::App { app, .. } => g.services.apps.is_active(&app.name).await.unwrap_or(false),
    };
    if !still {
        registry.unregister(&session, id);
        return;
    }
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let (mut sink, mut stream) = socket.split();
    let (replies_tx, mut replies_rx) = mpsc::channel::<String>(64);
    let close = loop {
        tokio::select! {
            biased;
            () = g.stop.cancelled() => break Some((1001, "node shutting down".to_owned())),
            () = cancel.cancelled() => break Some((CLOSE_SESSION_ENDED, "session ended".into())),
            signal = end_rx.recv() => match signal {
                Some(EndSignal::Session(reason)) => break Some((CLOSE_SESSION_ENDED, reason)),
                Some(EndSignal::Lagged) | None => {
                    break Some((CLOSE_LAGGED, "too slow: reconnect and sync".into()))
                }
            },
            Some(event) = events_rx.recv() => {
                let Ok(event) = frame::decode::<Event>(&event.bytes()[frame::HEADER_LEN..]) else {
                    continue;
                };
                if let Some(scope) = &scope {
                    if !embed::event_in_scope(&event, &scope.discussion) {
                        continue;
                    }
                    // The user lost access to the object: the widget's session is over.
                    if matches!(&event, Event::DiscussionRemoved { .. }) {
                        if let Err(e) =
                            embed::end(&g.services, &scope.caller.user, &scope.session, embed::ACCESS_LOST)
                                .await
                        {
                            tracing::warn!(error = %e, "could not end an embed session");
                        }
                        let text = serde_json::to_string(&event).unwrap_or_default();
                        send(&mut sink, Message::Text(text.into())).await;
                        break Some((CLOSE_SESSION_ENDED, embed::ACCESS_LOST.into()));
                    }
                }
                let text = serde_json::to_string(&event).unwrap_or_default();
                if !send(&mut sink, Message::Text(text.into())).await {
                    break None;
                }
            }
            Some(reply) = replies_rx.recv() => {
                if !send(&mut sink, Message::Text(reply.into())).await {
                    break None;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    // At most MAX_IN_FLIGHT at once: waiting here stops reading the socket.
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break None;
                    };
                    let g2 = g.clone();
                    let principal = principal.clone();
                    let replies = replies_tx.clone();
                    let ended = ended.clone();
                    g.tasks.spawn(async move {
                        let answer = answer(&g2, &principal, &text, &ended).await;
                        drop(permit);
                        let _ = replies.send(answer).await;
                    });
                }
                Some(Ok(Message::Binary(_))) => {
                    break Some((1003, "send JSON text frames".into()));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            },
        }
    };
    registry.unregister(&session, id);
    if let Some((code, reason)) = close {
        send(
            &mut sink,
            Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            })),
        )
        .await;
    }
}

/// Sends one frame; `false` if the client is gone or did not take it in time.
async fn send(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    message: Message,
) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await,
        Ok(Ok(()))
    )
}

async fn answer(g: &Gateway, principal: &Principal, text: &str, ended: &AtomicBool) -> String {
    let incoming: Incoming = match serde_json::from_str(text) {
        Ok(i) => i,
        Err(e) => {
            return serde_json::json!({
                "id": null,
                "error": {"code": "bad_request", "message": format!("not a request frame: {e}")},
            })
            .to_string();
        }
    };
    if ended.load(std::sync::atomic::Ordering::SeqCst) {
        return serde_json::json!({
            "id": incoming.id,
            "error": {"code": "unauthenticated", "message": "the session ended"},
        })
        .to_string();
    }
    let result = match serde_json::from_value::<Request>(incoming.request) {
        Ok(request) if let Principal::Embed(scope) = principal => {
            embed::request(&g.services, scope, &scope.caller, request)
                .await
                .map_err(|e| {
                    let mut body = crate::errors::body(&e);
                    if let Some(code) = e.code() {
                        body.message = format!("{code}: {}", body.message);
                    }
                    body
                })
        }
        Ok(request) if super::api::is_account_request(&request) => {
            super::api::account_request(g, principal, request)
                .await
                .map(|(reply, _)| reply)
        }
        Ok(request) => user_request(&g.services, principal.caller(), request)
            .await
            .map_err(|e| crate::errors::body(&e)),
        Err(e) => Err(veche_protocol::ErrorBody::new(
            veche_protocol::ErrorCode::BadRequest,
            format!("not a request: {e}"),
        )),
    };
    match result {
        Ok(reply) => serde_json::json!({ "id": incoming.id, "reply": reply }).to_string(),
        Err(error) => serde_json::json!({ "id": incoming.id, "error": error }).to_string(),
    }
}
