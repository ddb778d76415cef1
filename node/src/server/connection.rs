//! One client connection, from handshake to close.
//!
//! ```text
//! client opens the control stream (bidi) ── Hello ──▶ node
//!                                      ◀── Welcome ── (or Error unsupported_version + close)
//! node opens the event stream (uni)    ◀── Event … ──
//! client ── Request{id} … ──▶  node handles each in its own task ── Response/Error{id} ──▶
//! ```
//!
//! Until the client authenticates, frames are capped at 64 KiB and one deadline, set when the
//! connection arrives, covers the TLS handshake, hello and login. Anything malformed or
//! oversize ends this connection only, with an error frame and a close code.
//!
//! Every way a connection ends goes through [`End`], and the tail of [`run`] shuts it in an
//! order that delivers what was promised: answers to requests in flight, then a last event or
//! error frame, then the QUIC close, each step bounded in time.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use veche_protocol::files::{MAX_TRANSFER_FRAME, TransferReply, TransferRequest};
use veche_protocol::frame::{self, FrameError, MAX_OUTGOING_FRAME, MAX_UNAUTHENTICATED_FRAME};
use veche_protocol::{
    ClientFrame, ErrorBody, ErrorCode, Event, PROTOCOL_VERSIONS, Reply, Request, ServerFrame,
    close, negotiate_version,
};

use super::{Admission, Shared};
use crate::accounts::{AccountError, Authenticated, UserSpec};
use crate::services::{self, user_request};
use veche_core::discussions::Caller;
use veche_core::live::registry::{EncodedEvent, EndSignal, ForceClose, LiveConnection, Transport};

/// Outgoing frames buffered per connection before a slow reader stalls its own handlers.
const OUTBOX: usize = 64;
/// How long a download may wait for its client to take the next chunk.
const TRANSFER_STALL: Duration = Duration::from_secs(60);
/// How long a transfer stream may take to say what it is for.
const TRANSFER_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node waits for a client to acknowledge its last frames before closing.
const LINGER: Duration = Duration::from_millis(500);
/// How long an ending session waits for its requests in flight.
const SESSION_END_GRACE: Duration = Duration::from_millis(300);

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// The client finished its control stream or went away.
    ClientGone,
    /// The client broke the protocol: tell it why, then close with the code.
    Violation(ErrorBody, u32),
    /// The session ended (revoked, logged out, user locked, password changed).
    SessionEnded(String),
    /// The node is shutting down.
    Shutdown,
    /// The client did not read its events in time; it must reconnect and sync.
    Lagged,
}

/// Per-connection state shared with request handlers.
struct State {
    id: u64,
    ip: IpAddr,
    shared: Arc<Shared>,
    auth: Mutex<AuthSlot>,
    /// Set when the session ends or the connection starts closing: handlers refuse to act for
    /// the session from then on. The registry sets it before signalling `end`.
    ended: Arc<AtomicBool>,
    /// Serialises login, resume, setup and logout on this connection.
    auth_change: tokio::sync::Mutex<()>,
    admission: Mutex<Admission>,
    conn: quinn::Connection,
    end: mpsc::Sender<EndSignal>,
    out: mpsc::Sender<ServerFrame>,
    events: mpsc::Sender<EncodedEvent>,
    watching: Arc<Mutex<HashSet<String>>>,
}

/// The connection's session, and whether the connection still takes one.
#[derive(Default)]
struct AuthSlot {
    auth: Option<Authenticated>,
    /// The connection is closing: no session may be registered for it any more.
    closed: bool,
}

impl State {
    /// The caller for requests of this connection's session, while it has one.
    fn caller(&self) -> Option<Caller> {
        let auth = self.auth()?;
        Some(Caller {
            user: auth.user.id.clone(),
            device: auth.session.device_id.clone(),
            admin: auth.admin,
            connection: self.id,
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, AuthSlot> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session, unless the connection is ending.
    fn auth(&self) -> Option<Authenticated> {
        if self.ended.load(Ordering::SeqCst) {
            return None;
        }
        self.slot().auth.clone()
    }

    /// Stops registrations and removes this connection's, for the connection's tail.
    fn close_registration(&self) {
        let previous = {
            let mut slot = self.slot();
            slot.closed = true;
            slot.auth.take()
        };
        if let Some(prev) = previous {
            self.shared
                .services
                .registry
                .unregister(&prev.session.id, self.id);
        }
    }

    /// Makes `auth` this connection's session, registered so that ending the session reaches
    /// it, then checks that the session still exists: a revocation that committed between the
    /// credential check and the registration is caught here.
    async fn authenticate(&self, auth: Authenticated) -> Result<(), ErrorBody> {
        self.replace_auth(Some(auth.clone()));
        let accounts = &self.shared.services.accounts;
        match accounts.session_exists(&auth.session.id).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.replace_auth(None);
                Err(crate::errors::body(&AccountError::InvalidCredentials))
            }
            Err(e) => {
                self.replace_auth(None);
                Err(account_error(e))
            }
        }
    }

    fn replace_auth(&self, auth: Option<Authenticated>) {
        let registry = &self.shared.services.registry;
        // Registration happens under the slot lock so that it cannot slip in after the
        // connection's tail has closed registrations.
        let mut slot = self.slot();
        if slot.closed {
            return;
        }
        if let Some(prev) = std::mem::replace(&mut slot.auth, auth.clone()) {
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
                    user: now.user.id.clone(),
                    conn: Transport::Quic(Arc::new(QuicClose(self.conn.clone()))),
                    end: self.end.clone(),
                    ended: self.ended.clone(),
                    events: self.events.clone(),
                    watching: self.watching.clone(),
                },
            );
        }
    }
}

/// What a completed handshake leaves: the connection, its control stream and the event stream.
struct Handshake {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    event_stream: quinn::SendStream,
}

/// Closes the connection when the connection task ends, however it ends.
struct CloseOnDrop(quinn::Connection);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(close::NORMAL.into(), b"");
    }
}

/// TLS handshake, ALPN check, control stream, hello/welcome and the event stream, all before
/// `deadline`.
async fn handshake(
    incoming: quinn::Incoming,
    deadline: Instant,
    shared: &Shared,
) -> Option<Handshake> {
    let conn = match tokio::time::timeout_at(deadline, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return None;
        }
    };
    if !alpn_is_veche(&conn) {
        conn.close(close::PROTOCOL_VIOLATION.into(), b"ALPN veche/1 required");
        return None;
    }
    let (mut send, mut recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return None,
        Err(_) => {
            conn.close(
                close::AUTH_TIMEOUT.into(),
                b"no control stream opened in time",
            );
            return None;
        }
    };

    // Hello.
    let hello = tokio::time::timeout_at(
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
            fail(&conn, send, error, close::PROTOCOL_VIOLATION).await;
            return None;
        }
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            if let Some((error, code)) = frame_failure(e) {
                fail(&conn, send, error, code).await;
            }
            return None;
        }
        Err(_) => {
            conn.close(close::AUTH_TIMEOUT.into(), b"no hello in time");
            return None;
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
        fail(&conn, send, error, close::UNSUPPORTED_VERSION).await;
        return None;
    };
    let welcome = ServerFrame::Welcome {
        version,
        node: shared.node_name.clone(),
        server_time: shared.services.clock.now(),
    };
    let opened = tokio::time::timeout_at(deadline, async {
        frame::write(&mut send, &welcome, MAX_UNAUTHENTICATED_FRAME)
            .await
            .ok()?;
        conn.open_uni().await.ok()
    })
    .await;
    let Ok(Some(event_stream)) = opened else {
        conn.close(
            close::AUTH_TIMEOUT.into(),
            b"handshake not completed in time",
        );
        return None;
    };
    Some(Handshake {
        conn,
        send,
        recv,
        event_stream,
    })
}

pub(super) async fn run(
    incoming: quinn::Incoming,
    id: u64,
    admission: Admission,
    shared: Arc<Shared>,
) {
    let ip = incoming.remote_address().ip();
    let deadline = Instant::now() + Duration::from_secs(shared.server.handshake_timeout_secs);
    let opened = tokio::select! {
        biased;
        () = shared.stop.cancelled() => None,
        opened = handshake(incoming, deadline, &shared) => opened,
    };
    // On any failure above, the connection's last handle is dropped, which closes it.
    let Some(Handshake {
        conn,
        send,
        mut recv,
        event_stream,
    }) = opened
    else {
        return;
    };
    let _close = CloseOnDrop(conn.clone());
    let _open = shared
        .services
        .metrics
        .connection(crate::metrics::Transport::Quic);

    let (out, out_rx) = mpsc::channel::<ServerFrame>(OUTBOX);
    let (last_frame, last_frame_rx) = oneshot::channel::<Option<ServerFrame>>();
    let control_writer = tokio::spawn(write_control(send, out_rx, last_frame_rx));
    let (events, events_rx) = mpsc::channel::<EncodedEvent>(shared.server.event_buffer);
    let (last_event, last_event_rx) = oneshot::channel::<Option<Event>>();
    let event_writer = tokio::spawn(write_events(event_stream, events_rx, last_event_rx));
    let (end, mut end_rx) = mpsc::channel::<EndSignal>(1);
    let state = Arc::new(State {
        id,
        ip,
        shared: shared.clone(),
        auth: Mutex::new(AuthSlot::default()),
        ended: Arc::new(AtomicBool::new(false)),
        auth_change: tokio::sync::Mutex::new(()),
        admission: Mutex::new(admission),
        conn: conn.clone(),
        end,
        out,
        events,
        watching: Arc::default(),
    });

    tokio::spawn(accept_streams(state.clone()));

    let max_frame = shared.server.max_frame_bytes;
    let in_flight = Arc::new(Semaphore::new(shared.server.max_requests_in_flight));
    let ending = loop {
        let max = || {
            if state.auth().is_some() {
                max_frame
            } else {
                MAX_UNAUTHENTICATED_FRAME
            }
        };
        // Ending signals come first, so that a revoked session starts nothing new.
        let next = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break End::Shutdown,
            signal = end_rx.recv() => break ending_for(signal),
            () = auth_deadline(&state, deadline) => {
                break End::Violation(
                    ErrorBody::new(ErrorCode::Unauthenticated, "not authenticated in time"),
                    close::AUTH_TIMEOUT,
                );
            }
            next = frame::read_limited::<ClientFrame, _>(&mut recv, max) => next,
        };
        match next {
            Ok(Some(ClientFrame::Request { id, request })) => {
                let permit = tokio::select! {
                    biased;
                    () = shared.stop.cancelled() => {
                        refuse(&state, id, "the node is shutting down; reconnect later").await;
                        break End::Shutdown;
                    }
                    signal = end_rx.recv() => {
                        refuse(&state, id, "the connection is ending; reconnect").await;
                        break ending_for(signal);
                    }
                    permit = in_flight.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break End::Shutdown,
                    },
                };
                let state = state.clone();
                shared.requests.spawn(async move {
                    let frame = match handle(&state, request).await {
                        Ok(reply) => ServerFrame::Response {
                            id,
                            reply: Box::new(reply),
                        },
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
                break End::Violation(
                    ErrorBody::new(ErrorCode::BadRequest, "hello was already received"),
                    close::PROTOCOL_VIOLATION,
                );
            }
            Ok(None) => break End::ClientGone,
            Err(e) => match frame_failure(e) {
                Some((error, code)) => break End::Violation(error, code),
                None => break End::ClientGone,
            },
        }
    };
    tracing::debug!(?ending, "connection ending");
    state.ended.store(true, Ordering::SeqCst);

    // Answers to requests in flight go out first, except for a client that broke the protocol.
    let grace = match &ending {
        End::ClientGone | End::Shutdown => Duration::from_secs(shared.server.shutdown_grace_secs),
        End::SessionEnded(_) => SESSION_END_GRACE,
        End::Violation(..) | End::Lagged => Duration::ZERO,
    };
    let all = u32::try_from(shared.server.max_requests_in_flight).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(grace, in_flight.acquire_many(all)).await;
    state.close_registration();

    let (frame, event, code) = match ending {
        End::ClientGone => (None, None, close::NORMAL),
        End::Violation(error, code) => (Some(ServerFrame::Error { id: None, error }), None, code),
        End::SessionEnded(reason) => (
            None,
            Some(Event::SessionEnded { reason }),
            close::SESSION_REVOKED,
        ),
        End::Shutdown => (None, Some(Event::ShuttingDown), close::SHUTTING_DOWN),
        End::Lagged => (None, None, close::EVENTS_LAGGED),
    };
    let _ = last_event.send(event);
    let _ = last_frame.send(frame);
    let _ = tokio::time::timeout(LINGER * 2, async {
        let _ = control_writer.await;
        let _ = event_writer.await;
    })
    .await;
    conn.close(code.into(), close::describe(code.into()).as_bytes());
}

/// Resolves at the authentication deadline if the connection has not authenticated by then;
/// never resolves for an authenticated connection.
async fn auth_deadline(state: &State, deadline: Instant) {
    tokio::time::sleep_until(deadline).await;
    if state.slot().auth.is_some() {
        std::future::pending::<()>().await;
    }
}

fn ending_for(signal: Option<EndSignal>) -> End {
    match signal {
        Some(EndSignal::Session(reason)) => End::SessionEnded(reason),
        Some(EndSignal::Lagged) => End::Lagged,
        None => End::SessionEnded(String::new()),
    }
}

/// Answers a request that was read but will not be carried out.
async fn refuse(state: &State, id: u64, message: &str) {
    let error = ErrorBody::new(ErrorCode::Unavailable, message);
    let _ = state
        .out
        .send(ServerFrame::Error {
            id: Some(id),
            error,
        })
        .await;
}

/// Writes responses; after `last` arrives, writes it (if any) behind what is queued, finishes
/// the stream and waits until the client has it.
async fn write_control(
    mut send: quinn::SendStream,
    mut out: mpsc::Receiver<ServerFrame>,
    mut last: oneshot::Receiver<Option<ServerFrame>>,
) {
    let mut last_open = true;
    loop {
        tokio::select! {
            biased;
            next = out.recv() => match next {
                Some(f) => {
                    if write_response(&mut send, &f).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            f = &mut last, if last_open => match f {
                Ok(Some(f)) => {
                    let _ = write_response(&mut send, &f).await;
                    break;
                }
                Ok(None) => break,
                Err(_) => last_open = false,
            },
        }
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(LINGER, send.stopped()).await;
}

/// Writes one frame; a reply too large to send becomes an error for its request instead of
/// ending the connection.
async fn write_response(send: &mut quinn::SendStream, f: &ServerFrame) -> Result<(), FrameError> {
    match frame::write(send, f, MAX_OUTGOING_FRAME).await {
        Err(FrameError::TooLarge { len, .. }) => {
            let id = match f {
                ServerFrame::Response { id, .. } | ServerFrame::Error { id: Some(id), .. } => {
                    Some(*id)
                }
                _ => None,
            };
            tracing::error!(len, ?id, "reply too large to send");
            let error = ErrorBody::new(ErrorCode::Internal, "the reply is too large to send");
            frame::write(send, &ServerFrame::Error { id, error }, MAX_OUTGOING_FRAME).await
        }
        other => other,
    }
}

/// Writes events; after `last` arrives, writes it (if any), finishes the stream and waits
/// until the client has it.
async fn write_events(
    mut stream: quinn::SendStream,
    mut events: mpsc::Receiver<EncodedEvent>,
    mut last: oneshot::Receiver<Option<Event>>,
) {
    let mut events_open = true;
    loop {
        tokio::select! {
            biased;
            next = events.recv(), if events_open => match next {
                Some(e) => {
                    if stream.write_all(e.bytes()).await.is_err() {
                        return;
                    }
                }
                None => events_open = false,
            },
            e = &mut last => {
                if let Ok(Some(e)) = e {
                    let _ = frame::write(&mut stream, &e, MAX_OUTGOING_FRAME).await;
                }
                break;
            }
        }
    }
    let _ = stream.finish();
    let _ = tokio::time::timeout(LINGER, stream.stopped()).await;
}

/// Streams after the control stream: an authenticated connection's bidirectional streams
/// are file transfers (see `veche_protocol::files`); anything else is refused at once so that
/// its data does not sit in the connection's receive window.
async fn accept_streams(state: Arc<State>) {
    let code = quinn::VarInt::from_u32(close::PROTOCOL_VIOLATION);
    loop {
        tokio::select! {
            bi = state.conn.accept_bi() => match bi {
                Ok((mut send, mut recv)) => match state.caller() {
                    Some(caller) => {
                        state
                            .shared
                            .requests
                            .spawn(transfer(state.clone(), caller, send, recv));
                    }
                    None => {
                        let _ = recv.stop(code);
                        let _ = send.reset(code);
                    }
                },
                Err(_) => return,
            },
            uni = state.conn.accept_uni() => match uni {
                Ok(mut recv) => {
                    let _ = recv.stop(code);
                }
                Err(_) => return,
            },
        }
    }
}

/// One transfer stream: an upload's bytes or a download.
async fn transfer(
    state: Arc<State>,
    caller: Caller,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let files = &state.shared.services.files;
    let stop = &state.shared.stop;
    let first = tokio::time::timeout(
        TRANSFER_HEADER_TIMEOUT,
        frame::read::<TransferRequest, _>(&mut recv, MAX_TRANSFER_FRAME),
    )
    .await;
    let request = match first {
        Ok(Ok(Some(request))) => request,
        Ok(Err(e)) => {
            let error = frame_failure(e).map_or_else(
                || ErrorBody::new(ErrorCode::BadRequest, "the stream failed"),
                |(error, _)| error,
            );
            end_transfer(send, TransferReply::Error { error }).await;
            return;
        }
        Ok(Ok(None)) | Err(_) => {
            let _ = send.reset(quinn::VarInt::from_u32(close::PROTOCOL_VIOLATION));
            return;
        }
    };
    match request {
        TransferRequest::Upload { upload, offset } => {
            let (progress, mut confirmed) = watch::channel(offset);
            let work = files.receive(&caller, &upload, offset, &mut recv, progress);
            tokio::pin!(work);
            // Progress frames are written while the upload goes on; the latest value wins.
            let result = loop {
                tokio::select! {
                    result = &mut work => break Some(result),
                    () = stop.cancelled() => break None,
                    changed = confirmed.changed() => {
                        if changed.is_err() {
                            break Some(work.await);
                        }
                        let progress = TransferReply::Progress {
                            confirmed: *confirmed.borrow_and_update(),
                        };
                        let _ = frame::write(&mut send, &progress, MAX_TRANSFER_FRAME).await;
                    }
                }
            };
            let reply = match result {
                Some(Ok(file)) => TransferReply::Uploaded { file },
                Some(Err(e)) => TransferReply::Error {
                    error: crate::errors::body(&e),
                },
                None => TransferReply::Error {
                    error: ErrorBody::new(
                        ErrorCode::Unavailable,
                        "the node is shutting down; continue the upload later",
                    ),
                },
            };
            end_transfer(send, reply).await;
        }
        TransferRequest::Download {
            file,
            offset,
            thumbnail,
        } => {
            let _ = recv.stop(quinn::VarInt::from_u32(close::NORMAL));
            let download = match files.download(&caller, &file, offset, thumbnail).await {
                Ok(d) => d,
                Err(e) => {
                    end_transfer(
                        send,
                        TransferReply::Error {
                            error: crate::errors::body(&e),
                        },
                    )
                    .await;
                    return;
                }
            };
            let header = TransferReply::Download {
                file: download.file.clone(),
                offset: download.offset,
                length: download.length,
                mime: download.mime.clone(),
            };
            if frame::write(&mut send, &header, MAX_TRANSFER_FRAME)
                .await
                .is_err()
            {
                return;
            }
            let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
            // Owns the receiver: if the client stops reading, the file's reader stops too.
            let write = async {
                let mut rx = rx;
                while let Some(chunk) = rx.recv().await {
                    // A client that stops reading (but keeps the connection) lets go of the
                    // file after a while.
                    match tokio::time::timeout(TRANSFER_STALL, send.write_all(&chunk)).await {
                        Ok(Ok(())) => {}
                        _ => return Err(()),
                    }
                }
                Ok::<_, ()>(())
            };
            let sent = tokio::select! {
                (read, written) = async { tokio::join!(files.send(&download, tx), write) } => {
                    read.is_ok() && written.is_ok()
                }
                () = stop.cancelled() => false,
            };
            if sent {
                let _ = send.finish();
                let _ = send.stopped().await;
            } else {
                let _ = send.reset(quinn::VarInt::from_u32(close::TRANSFER_FAILED));
            }
        }
    }
}

/// Writes the last frame of a transfer stream and finishes it.
async fn end_transfer(mut send: quinn::SendStream, reply: TransferReply) {
    if frame::write(&mut send, &reply, MAX_TRANSFER_FRAME)
        .await
        .is_ok()
    {
        let _ = send.finish();
        let _ = tokio::time::timeout(LINGER, send.stopped()).await;
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

/// Before the connection is set up: sends a final error frame, waits briefly for the client to
/// receive it, and closes.
async fn fail(conn: &quinn::Connection, mut send: quinn::SendStream, error: ErrorBody, code: u32) {
    tracing::debug!(code = ?error.code, message = %error.message, "closing connection");
    let frame = ServerFrame::Error { id: None, error };
    let _ = tokio::time::timeout(LINGER * 2, async {
        if frame::write(&mut send, &frame, MAX_UNAUTHENTICATED_FRAME)
            .await
            .is_ok()
        {
            let _ = send.finish();
            let _ = tokio::time::timeout(LINGER, send.stopped()).await;
        }
    })
    .await;
    conn.close(code.into(), close::describe(code.into()).as_bytes());
}

fn account_error(e: AccountError) -> ErrorBody {
    crate::errors::body(&e)
}

fn unauthenticated() -> ErrorBody {
    ErrorBody::new(ErrorCode::Unauthenticated, "log in first")
}

async fn handle(state: &State, request: Request) -> Result<Reply, ErrorBody> {
    let accounts = &state.shared.services.accounts;
    match request {
        Request::Ping => Ok(Reply::Pong {
            server_time: state.shared.services.clock.now(),
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
                department: String::new(),
                admin: true,
            };
            let _serial = state.auth_change.lock().await;
            let device = format!("setup-{}", state.id);
            let (session_token, auth) = accounts
                .setup(&token, &spec, &device, "setup", state.ip)
                .await
                .map_err(account_error)?;
            state.authenticate(auth.clone()).await?;
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
            let _serial = state.auth_change.lock().await;
            let (session_token, auth) = accounts
                .login(&login, &password, &device_id, &device_name, state.ip)
                .await
                .map_err(account_error)?;
            state.authenticate(auth.clone()).await?;
            Ok(Reply::LoggedIn {
                session_token,
                session: auth.session,
                user: auth.user,
            })
        }
        Request::Resume { token, device_id } => {
            let _serial = state.auth_change.lock().await;
            let auth = accounts
                .resume(&token, &device_id)
                .await
                .map_err(account_error)?;
            state.authenticate(auth.clone()).await?;
            Ok(Reply::Resumed {
                session: auth.session,
                user: auth.user,
            })
        }
        Request::Logout => {
            let _serial = state.auth_change.lock().await;
            let auth = state.auth().ok_or_else(unauthenticated)?;
            let ended = accounts
                .end_sessions(
                    &auth.user.id,
                    Some(&auth.session.id),
                    &format!("user:{}", auth.user.id),
                    "session.logout",
                )
                .await
                .map_err(account_error)?;
            // This connection and any other of the same session end, after this answer.
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
        Request::ListSessions => {
            let auth = state.auth().ok_or_else(unauthenticated)?;
            let sessions = accounts
                .own_sessions(&auth.user.id)
                .await
                .map_err(account_error)?;
            Ok(Reply::Sessions {
                sessions,
                current: auth.session.id,
            })
        }
        Request::RevokeSession { session } => {
            let _serial = state.auth_change.lock().await;
            let auth = state.auth().ok_or_else(unauthenticated)?;
            let ended = accounts
                .end_own_session(&auth.user.id, &session)
                .await
                .map_err(account_error)?;
            // That device's connections end (this one too, after this answer, if it was ours).
            state
                .shared
                .services
                .registry
                .end_sessions(&ended, "signed out from another device");
            Ok(Reply::Done)
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
                    state.ip,
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
            let result = services::execute(
                &state.shared.services,
                &format!("user:{}", user.id),
                command,
            )
            .await
            .map_err(|e| crate::errors::body(&e))?;
            Ok(Reply::Admin { result })
        }
        other => {
            let caller = state.caller().ok_or_else(unauthenticated)?;
            user_request(&state.shared.services, &caller, other)
                .await
                .map_err(|e| crate::errors::body(&e))
        }
    }
}

/// A QUIC connection as the registry closes it when its session ends.
#[derive(Debug)]
struct QuicClose(quinn::Connection);

impl ForceClose for QuicClose {
    fn force_close(&self) {
        self.0.close(
            veche_protocol::close::SESSION_REVOKED.into(),
            b"session ended",
        );
    }
}
