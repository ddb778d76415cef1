//! One client connection, from handshake to close.
//!
//! ```text
//! client opens the control stream (bidi) ── Hello ──▶ node
//!                                      ◀── Welcome ── (or Error unsupported_version + close)
//! node opens the event stream (uni)    ◀── Event … ──
//! client ── Request{id} … ──▶  node handles each in its own task ── Response/Error{id} ──▶
//! ```
//! Anything malformed or oversize ends this connection only, with an error frame and a close
//! code. Until the client authenticates, frames are capped at 64 KiB and a deadline runs.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use veche_protocol::frame::{self, FrameError, MAX_UNAUTHENTICATED_FRAME};
use veche_protocol::{
    ClientFrame, ErrorBody, ErrorCode, Event, PROTOCOL_VERSIONS, Reply, Request, ServerFrame,
    Timestamp, close, negotiate_version,
};

use super::registry::LiveConnection;
use super::{Admission, Shared};
use crate::accounts::{AccountError, Authenticated, UserSpec};
use crate::admin;

/// Outgoing frames buffered per connection before a slow reader stalls its own handlers.
const OUTBOX: usize = 64;
const EVENT_BUFFER: usize = 256;
/// How long the node waits for a client to receive a final error frame before closing.
const LINGER: Duration = Duration::from_secs(1);

/// Per-connection state shared with request handlers.
struct State {
    id: u64,
    ip: IpAddr,
    conn: quinn::Connection,
    shared: Arc<Shared>,
    auth: Mutex<Option<Authenticated>>,
    admission: Mutex<Admission>,
    events: mpsc::Sender<Event>,
    out: mpsc::Sender<ServerFrame>,
}

impl State {
    fn auth(&self) -> Option<Authenticated> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_auth(&self, auth: Option<Authenticated>) {
        let registry = &self.shared.services.registry;
        let previous = {
            let mut slot = self.auth.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *slot, auth.clone())
        };
        if let Some(prev) = previous {
            registry.unregister(&prev.session.id, self.id);
        }
        if let Some(now) = auth {
            self.admission
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .authenticated();
            registry.register(
                &now.session.id,
                LiveConnection {
                    id: self.id,
                    conn: self.conn.clone(),
                    events: self.events.clone(),
                },
            );
        }
    }
}

pub(super) async fn run(
    incoming: quinn::Incoming,
    id: u64,
    admission: Admission,
    shared: Arc<Shared>,
) {
    let ip = incoming.remote_address().ip();
    let deadline = Duration::from_secs(shared.server.handshake_timeout_secs);
    let conn = match tokio::time::timeout(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    if !alpn_is_veche(&conn) {
        conn.close(close::PROTOCOL_VIOLATION.into(), b"ALPN veche/1 required");
        return;
    }
    let (mut send, mut recv) = match tokio::time::timeout(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return,
        Err(_) => {
            conn.close(
                close::AUTH_TIMEOUT.into(),
                b"no control stream opened in time",
            );
            return;
        }
    };

    // Hello.
    let hello = tokio::time::timeout(
        deadline,
        frame::read::<ClientFrame, _>(&mut recv, MAX_UNAUTHENTICATED_FRAME),
    )
    .await;
    let versions = match hello {
        Ok(Ok(Some(ClientFrame::Hello { versions, client }))) => {
            tracing::debug!(client = %client.chars().take(64).collect::<String>(), "hello");
            versions
        }
        Ok(Ok(Some(ClientFrame::Request { .. }))) => {
            let error = ErrorBody::new(ErrorCode::BadRequest, "the first frame must be hello");
            return fail(&conn, send, error, close::PROTOCOL_VIOLATION).await;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return fail_frame(&conn, send, e).await,
        Err(_) => {
            conn.close(close::AUTH_TIMEOUT.into(), b"no hello in time");
            return;
        }
    };
    let Some(version) = negotiate_version(&versions) else {
        let mut error = ErrorBody::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "this node speaks protocol versions {PROTOCOL_VERSIONS:?}; the client offered {versions:?}"
            ),
        );
        error.supported_versions = Some(PROTOCOL_VERSIONS.to_vec());
        return fail(&conn, send, error, close::UNSUPPORTED_VERSION).await;
    };
    let welcome = ServerFrame::Welcome {
        version,
        node: shared.node_name.clone(),
        server_time: Timestamp::now(),
    };
    if frame::write(&mut send, &welcome, MAX_UNAUTHENTICATED_FRAME)
        .await
        .is_err()
    {
        return;
    }
    let Ok(Ok(mut event_stream)) = tokio::time::timeout(deadline, conn.open_uni()).await else {
        return;
    };

    // Writers: responses on the control stream, events on the event stream.
    let max_frame = shared.server.max_frame_bytes;
    let (out, mut out_rx) = mpsc::channel::<ServerFrame>(OUTBOX);
    // A connection-level error is sent through `last`: written after what is queued, then the
    // stream is finished and the node waits (briefly) until the client has received it.
    let (last, mut last_rx) = tokio::sync::oneshot::channel::<ServerFrame>();
    let writer = tokio::spawn(async move {
        let mut last_open = true;
        loop {
            tokio::select! {
                biased;
                next = out_rx.recv() => match next {
                    Some(f) => {
                        if frame::write(&mut send, &f, max_frame).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                f = &mut last_rx, if last_open => match f {
                    Ok(f) => {
                        if frame::write(&mut send, &f, max_frame).await.is_ok() {
                            let _ = send.finish();
                            let _ = tokio::time::timeout(LINGER, send.stopped()).await;
                        }
                        return;
                    }
                    Err(_) => last_open = false,
                },
            }
        }
    });
    let (events, mut events_rx) = mpsc::channel::<Event>(EVENT_BUFFER);
    tokio::spawn(async move {
        while let Some(e) = events_rx.recv().await {
            if frame::write(&mut event_stream, &e, max_frame)
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = event_stream.finish();
    });

    let state = Arc::new(State {
        id,
        ip,
        conn: conn.clone(),
        shared: shared.clone(),
        auth: Mutex::new(None),
        admission: Mutex::new(admission),
        events,
        out,
    });

    // Authentication deadline.
    let auth_timer = {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            if state.auth().is_none() {
                state
                    .conn
                    .close(close::AUTH_TIMEOUT.into(), b"not authenticated in time");
            }
        })
    };

    let in_flight = Arc::new(Semaphore::new(shared.server.max_requests_in_flight));
    let outcome = loop {
        let max = || {
            if state.auth().is_some() {
                max_frame
            } else {
                MAX_UNAUTHENTICATED_FRAME
            }
        };
        let next = tokio::select! {
            () = shared.stop.cancelled() => break None,
            next = frame::read_limited::<ClientFrame, _>(&mut recv, max) => next,
        };
        match next {
            Ok(Some(ClientFrame::Request { id, request })) => {
                let permit = tokio::select! {
                    () = shared.stop.cancelled() => break None,
                    permit = in_flight.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break None,
                    },
                };
                let state = state.clone();
                shared.requests.spawn(async move {
                    let frame = match handle(&state, request).await {
                        Ok(reply) => ServerFrame::Response { id, reply },
                        Err(error) => ServerFrame::Error {
                            id: Some(id),
                            error,
                        },
                    };
                    let _ = state.out.send(frame).await;
                    drop(permit);
                });
            }
            Ok(Some(ClientFrame::Hello { .. })) => {
                break Some((
                    ErrorBody::new(ErrorCode::BadRequest, "hello was already received"),
                    close::PROTOCOL_VIOLATION,
                ));
            }
            Ok(None) => break None,
            Err(e) => break frame_failure(e),
        }
    };
    auth_timer.abort();
    if let Some(auth) = state.auth() {
        shared.services.registry.unregister(&auth.session.id, id);
    }
    if let Some((error, code)) = outcome {
        let _ = last.send(ServerFrame::Error { id: None, error });
        let _ = tokio::time::timeout(LINGER * 2, writer).await;
        conn.close(code.into(), close::describe(code.into()).as_bytes());
    } else {
        drop(last);
        // Clean end or shutdown: let in-flight handlers answer; the node closes connections
        // after waiting for them.
        let _ = tokio::time::timeout(
            Duration::from_secs(shared.server.shutdown_grace_secs),
            conn.closed(),
        )
        .await;
    }
}

fn alpn_is_veche(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == veche_protocol::ALPN)
}

fn frame_failure(e: FrameError) -> Option<(ErrorBody, u32)> {
    match e {
        FrameError::TooLarge { len, max } => Some((
            ErrorBody::new(
                ErrorCode::FrameTooLarge,
                format!("frame of {len} bytes exceeds the limit of {max} bytes"),
            ),
            close::FRAME_TOO_LARGE,
        )),
        FrameError::Malformed(m) => Some((
            ErrorBody::new(ErrorCode::MalformedFrame, format!("malformed frame: {m}")),
            close::MALFORMED_FRAME,
        )),
        FrameError::Truncated => Some((
            ErrorBody::new(ErrorCode::MalformedFrame, "the stream ended inside a frame"),
            close::MALFORMED_FRAME,
        )),
        FrameError::Io(_) => None,
        _ => Some((
            ErrorBody::new(ErrorCode::MalformedFrame, "malformed frame"),
            close::MALFORMED_FRAME,
        )),
    }
}

async fn fail_frame(conn: &quinn::Connection, send: quinn::SendStream, e: FrameError) {
    if let Some((error, code)) = frame_failure(e) {
        fail(conn, send, error, code).await;
    }
}

/// Sends a final error frame, waits briefly for the client to receive it, and closes.
async fn fail(conn: &quinn::Connection, mut send: quinn::SendStream, error: ErrorBody, code: u32) {
    tracing::debug!(code = ?error.code, message = %error.message, "closing connection");
    let frame = ServerFrame::Error { id: None, error };
    if frame::write(&mut send, &frame, MAX_UNAUTHENTICATED_FRAME)
        .await
        .is_ok()
    {
        let _ = send.finish();
        let _ = tokio::time::timeout(LINGER, send.stopped()).await;
    }
    conn.close(code.into(), close::describe(code.into()).as_bytes());
}

fn account_error(e: AccountError) -> ErrorBody {
    if matches!(e, AccountError::Store(_) | AccountError::Hash(_)) {
        tracing::error!(error = %e, "request failed");
    }
    e.to_body()
}

fn unauthenticated() -> ErrorBody {
    ErrorBody::new(ErrorCode::Unauthenticated, "log in first")
}

async fn handle(state: &State, request: Request) -> Result<Reply, ErrorBody> {
    let accounts = &state.shared.services.accounts;
    match request {
        Request::Ping => Ok(Reply::Pong {
            server_time: Timestamp::now(),
        }),
        Request::Setup {
            token,
            login,
            password,
            display_name,
            email,
        } => {
            let spec = UserSpec {
                login,
                display_name,
                email,
                password,
                admin: true,
            };
            let device = format!("setup-{}", state.id);
            let (session_token, auth) = accounts
                .setup(&token, &spec, &device, "setup", state.ip)
                .await
                .map_err(account_error)?;
            state.set_auth(Some(auth.clone()));
            Ok(Reply::LoggedIn {
                session_token,
                session: auth.session,
                user: auth.user,
            })
        }
        Request::Login {
            login,
            password,
            device_id,
            device_name,
        } => {
            let (session_token, auth) = accounts
                .login(&login, &password, &device_id, &device_name, state.ip)
                .await
                .map_err(account_error)?;
            state.set_auth(Some(auth.clone()));
            Ok(Reply::LoggedIn {
                session_token,
                session: auth.session,
                user: auth.user,
            })
        }
        Request::Resume { token, device_id } => {
            let auth = accounts
                .resume(&token, &device_id)
                .await
                .map_err(account_error)?;
            state.set_auth(Some(auth.clone()));
            Ok(Reply::Resumed {
                session: auth.session,
                user: auth.user,
            })
        }
        Request::Logout => {
            let auth = state.auth().ok_or_else(unauthenticated)?;
            state.set_auth(None);
            let ended = accounts
                .end_sessions(
                    &auth.user.id,
                    Some(&auth.session.id),
                    &format!("user:{}", auth.user.id),
                    "session.logout",
                )
                .await
                .map_err(account_error)?;
            // Other connections of the same session end too.
            state
                .shared
                .services
                .registry
                .end_sessions(&ended, "logged out");
            Ok(Reply::Done)
        }
        Request::Whoami => {
            let auth = state.auth().ok_or_else(unauthenticated)?;
            let user = accounts
                .user_by_id(&auth.user.id)
                .await
                .map_err(account_error)?;
            Ok(Reply::Me {
                user: crate::accounts::user_info(&user),
            })
        }
        Request::ChangePassword {
            old_password,
            new_password,
        } => {
            let auth = state.auth().ok_or_else(unauthenticated)?;
            let ended = accounts
                .change_own_password(
                    &auth.user.id,
                    &auth.session.id,
                    &old_password,
                    &new_password,
                )
                .await
                .map_err(account_error)?;
            state
                .shared
                .services
                .registry
                .end_sessions(&ended, "the password was changed");
            Ok(Reply::Done)
        }
        Request::Admin { command } => {
            let auth = state.auth().ok_or_else(unauthenticated)?;
            // The admin flag is read fresh: a demoted or locked admin loses the right at once.
            let user = accounts
                .user_by_id(&auth.user.id)
                .await
                .map_err(account_error)?;
            if !user.is_admin || user.locked {
                return Err(ErrorBody::new(ErrorCode::Forbidden, "administrators only"));
            }
            let result = admin::execute(
                &state.shared.services,
                &format!("user:{}", user.id),
                command,
            )
            .await
            .map_err(account_error)?;
            Ok(Reply::Admin { result })
        }
    }
}
