//! The local admin socket that carries administrator commands from `veche admin` to a running
//! node.
//!
//! The socket is a Unix socket in the data folder with mode 0600: whoever may read the data
//! folder is the node's administrator. It carries the same frames as the QUIC protocol
//! (`Request::Admin` in, `Response`/`Error` out).

use std::path::Path;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veche_protocol::admin::{AdminReply, AdminRequest};
use veche_protocol::{ClientFrame, ErrorBody, ErrorCode, Reply, Request, ServerFrame, frame};

use crate::services::{Services, execute};

/// Serves the admin socket until `stop` fires. A command that has started always finishes;
/// `clients` tracks them so that shutdown can wait.
pub(crate) async fn serve_socket(
    listener: UnixListener,
    services: Services,
    stop: CancellationToken,
    clients: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let services = services.clone();
        let stop = stop.clone();
        clients.spawn(async move {
            if let Err(e) = serve_admin_client(stream, &services, &stop).await {
                tracing::debug!(error = %e, "admin socket client ended");
            }
        });
    }
}

async fn serve_admin_client(
    mut stream: UnixStream,
    services: &Services,
    stop: &CancellationToken,
) -> Result<(), frame::FrameError> {
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = frame::read::<ClientFrame, _>(&mut stream, frame::DEFAULT_MAX_FRAME) => next?,
        };
        let Some(frame) = next else { return Ok(()) };
        let reply = match frame {
            ClientFrame::Request {
                id,
                request: Request::Admin { command },
            } => match execute(services, "admin-socket", command).await {
                Ok(result) => ServerFrame::Response {
                    id,
                    reply: Box::new(Reply::Admin { result }),
                },
                Err(e) => ServerFrame::Error {
                    id: Some(id),
                    error: crate::errors::body(&e),
                },
            },
            ClientFrame::Request { id, .. } => ServerFrame::Error {
                id: Some(id),
                error: ErrorBody::new(
                    ErrorCode::BadRequest,
                    "the admin socket takes admin commands only",
                ),
            },
            ClientFrame::Hello { .. } => ServerFrame::Error {
                id: None,
                error: ErrorBody::new(ErrorCode::BadRequest, "the admin socket needs no hello"),
            },
        };
        frame::write(&mut stream, &reply, frame::MAX_OUTGOING_FRAME).await?;
    }
}

/// Why a command sent over the admin socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminSocketError {
    /// The node refused the command.
    #[error("{}", .0.message)]
    Refused(ErrorBody),
    /// Talking to the socket failed.
    #[error("admin socket: {0}")]
    Frame(#[from] frame::FrameError),
    /// The node closed the socket without answering.
    #[error("the node closed the admin socket without answering")]
    Closed,
    /// The node answered with something other than an admin result.
    #[error("unexpected answer on the admin socket")]
    Unexpected,
}

/// Sends one command to the running node's admin socket. `Ok(None)`: no node listens there.
pub(crate) async fn send_to_socket(
    path: &Path,
    command: AdminRequest,
) -> Result<Option<AdminReply>, AdminSocketError> {
    let Ok(mut stream) = UnixStream::connect(path).await else {
        return Ok(None);
    };
    let request = ClientFrame::Request {
        id: 1,
        request: Request::Admin { command },
    };
    frame::write(&mut stream, &request, frame::DEFAULT_MAX_FRAME).await?;
    match frame::read::<ServerFrame, _>(&mut stream, frame::MAX_OUTGOING_FRAME).await? {
        Some(ServerFrame::Response { reply, .. }) => match *reply {
            Reply::Admin { result } => Ok(Some(result)),
            _ => Err(AdminSocketError::Unexpected),
        },
        Some(ServerFrame::Error { error, .. }) => Err(AdminSocketError::Refused(error)),
        Some(_) => Err(AdminSocketError::Unexpected),
        None => Err(AdminSocketError::Closed),
    }
}
