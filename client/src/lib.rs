//! The Veche client SDK: connect to a node over QUIC, negotiate the protocol, send requests and
//! receive events. Bots, applications, the terminal client and the tests use it without
//! compiling the server.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod files;
pub mod private;
mod session;
mod store;
mod tls;

pub use files::{TransferError, sha256_of};
pub use session::{
    Client, ClientError, ClientEvent, ConnectionState, MAX_FILES, UNANSWERED_MEMORY,
};
pub use store::{OutboxEntry, OutboxFile, OutboxState, StoreError};
use veche_protocol::discussions::DiscussionInfo;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use veche_protocol::frame::{self, FrameError};
use veche_protocol::{
    ClientFrame, ErrorBody, ErrorCode, Event, PROTOCOL_VERSIONS, Reply, Request, ServerFrame,
    SessionInfo, UserInfo, close,
};

pub use veche_protocol as protocol;

/// How the client decides to trust the node's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Trust certificates issued by the CA in this PEM file (the node's `tls/ca.pem`).
    CaFile(PathBuf),
    /// Trust certificates issued by this CA, PEM text.
    CaPem(Vec<u8>),
    /// Trust exactly the server certificate with this SHA-256 fingerprint (hex).
    Fingerprint(String),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The node's QUIC address.
    pub addr: SocketAddr,
    /// The name the certificate must carry (`localhost`, the node's host name).
    pub server_name: String,
    /// What to trust.
    pub trust: Trust,
    /// Sent in `hello`, for the node's logs.
    pub client_name: String,
    /// Protocol versions to offer.
    pub versions: Vec<u16>,
    /// How long connecting and each request may take.
    pub timeout: Duration,
}

impl ClientConfig {
    /// Connects to `addr`, trusting the CA certificate file `ca`, name `localhost`.
    pub fn new(addr: SocketAddr, trust: Trust) -> Self {
        Self {
            addr,
            server_name: "localhost".to_owned(),
            trust,
            client_name: concat!("veche-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            versions: PROTOCOL_VERSIONS.to_vec(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The trust anchor could not be read or used.
    #[error("trust configuration: {0}")]
    Trust(String),
    /// QUIC or TLS failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The node speaks none of our protocol versions.
    #[error("the node speaks protocol versions {supported:?}, none of ours")]
    UnsupportedVersion {
        /// What the node speaks.
        supported: Vec<u16>,
    },
    /// The node refused the hello.
    #[error("the node refused the connection: {}", .0.message)]
    Refused(ErrorBody),
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The node did not answer in time.
    #[error("the node did not answer in time")]
    Timeout,
    /// Nothing listens at the node's address: its host answered that the port is closed.
    #[error("nothing answers at {0}: the node is not running there")]
    Unreachable(SocketAddr),
}

impl ConnectError {
    /// Whether the node could not be reached (as opposed to reached and refusing us, or a
    /// configuration mistake): worth trying again later.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connection(_) | Self::Timeout | Self::Unreachable(_)
        )
    }
}

/// Why a discussion could not be found from what the user named.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No discussion of the user's list has this name.
    #[error("no discussion named {0:?} in your list")]
    NotListed(String),
    /// Neither a discussion of the user's list nor a user has this name.
    #[error("no discussion or user named {0:?}")]
    NotFound(String),
    /// Several discussions of the user's list have this name.
    #[error("{0:?} names several discussions; use the id")]
    Ambiguous(String),
    /// The node could not be asked.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// What a discussion is called for `me`: its title, or for a dialog the other member.
pub fn discussion_name(d: &DiscussionInfo, me: &str) -> String {
    if d.title.is_empty() {
        d.members
            .iter()
            .map(|m| m.user.as_str())
            .find(|u| *u != me)
            .unwrap_or("")
            .to_owned()
    } else {
        d.title.clone()
    }
}

/// Whether `s` has the shape of a discussion id, `<32 hex digits>@<node>`, rather than a name.
pub fn is_discussion_id(s: &str) -> bool {
    s.split_once('@').is_some_and(|(id, node)| {
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !node.is_empty()
    })
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The node answered with an error.
    #[error("{:?}: {}", .0.code, .0.message)]
    Server(ErrorBody),
    /// The node ended the connection with this error (not an answer to one request).
    #[error("the node closed the connection: {:?}: {}", .0.code, .0.message)]
    ConnectionFailed(ErrorBody),
    /// The connection closed before the answer arrived.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The request is larger than a frame may be; it was not sent.
    #[error("the request is {len} bytes; at most {max} can be sent")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No answer in time.
    #[error("no answer in time")]
    Timeout,
    /// The answer was not the kind of reply the request expects.
    #[error("unexpected reply to {0}")]
    UnexpectedReply(&'static str),
}

impl RequestError {
    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(body) | Self::ConnectionFailed(body) => Some(body.code),
            _ => None,
        }
    }
}

/// How the node closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The application close code (see `veche_protocol::close`), if the node closed it.
    pub code: Option<u64>,
    /// Text of the close.
    pub reason: String,
    /// The node reset the connection: it restarted and no longer knows it (connect again).
    pub reset: bool,
}

/// The result of a successful login.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The session token: keep it to resume later.
    pub token: String,
    /// The session.
    pub session: SessionInfo,
    /// The user.
    pub user: UserInfo,
}

/// Requests waiting for answers; `None` once the control stream has ended.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<Reply, ErrorBody>>>>>>;

/// A connection to a node.
#[derive(Debug)]
pub struct Connection {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    /// Encoded request frames for the writer.
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    fatal: Arc<Mutex<Option<ErrorBody>>>,
    node: String,
    version: u16,
    timeout: Duration,
}

/// How often an idle connection tells the node it is there.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// A QUIC client endpoint on an ephemeral loopback-or-any port, configured to trust `trust`.
pub fn endpoint(config: &ClientConfig) -> Result<quinn::Endpoint, ConnectError> {
    let crypto = tls::client_config(&config.trust)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| ConnectError::Trust(e.to_string()))?;
    let bind: SocketAddr = if config.addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| ConnectError::Connection(e.to_string()))?;
    // The node's keep-alives end when it crashes; the client's own make a node that came
    // back answer within seconds with a stateless reset (see the node's `quic_reset_key`), so
    // the client connects again instead of waiting for the idle timeout.
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

impl Connection {
    /// Connects, says hello and waits for the node's welcome.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ConnectError> {
        Self::connect_on(endpoint(config)?, config).await
    }

    /// Like [`Connection::connect`], on an endpoint made by [`endpoint`] that other
    /// connections may share: one UDP socket for many connections, as a load generator holding
    /// thousands of them needs.
    pub async fn connect_on(
        endpoint: quinn::Endpoint,
        config: &ClientConfig,
    ) -> Result<Self, ConnectError> {
        let attempt = async {
            let conn = endpoint
                .connect(config.addr, &config.server_name)
                .map_err(|e| ConnectError::Connection(e.to_string()))?
                .await
                .map_err(|e| ConnectError::Connection(e.to_string()))?;
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| ConnectError::Connection(e.to_string()))?;
            let hello = ClientFrame::Hello {
                versions: config.versions.clone(),
                client: config.client_name.clone(),
            };
            frame::write(&mut send, &hello, frame::MAX_UNAUTHENTICATED_FRAME).await?;
            match frame::read::<ServerFrame, _>(&mut recv, frame::MAX_OUTGOING_FRAME).await? {
                Some(ServerFrame::Welcome { version, node, .. }) => {
                    Ok((conn, send, recv, version, node))
                }
                Some(ServerFrame::Error { error, .. })
                    if error.code == ErrorCode::UnsupportedVersion =>
                {
                    Err(ConnectError::UnsupportedVersion {
                        supported: error.supported_versions.unwrap_or_default(),
                    })
                }
                Some(ServerFrame::Error { error, .. }) => Err(ConnectError::Refused(error)),
                Some(_) | None => Err(ConnectError::Connection(
                    "the node did not welcome us".to_owned(),
                )),
            }
        };
        // A node that is not running is told at once by its host (a closed UDP port), not
        // after the timeout: the probe ends the attempt early when that answer comes.
        let (conn, send, recv, version, node) = tokio::select! {
            attempt = tokio::time::timeout(config.timeout, attempt) => {
                attempt.map_err(|_| ConnectError::Timeout)??
            }
            () = closed_port(config.addr) => return Err(ConnectError::Unreachable(config.addr)),
        };

        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let fatal: Arc<Mutex<Option<ErrorBody>>> = Arc::default();
        let (out, out_rx) = mpsc::channel(64);
        tokio::spawn(write_loop(send, out_rx));
        tokio::spawn(read_loop(recv, pending.clone(), fatal.clone()));
        let (events_tx, events_rx) = mpsc::channel(256);
        tokio::spawn(event_loop(conn.clone(), events_tx));

        Ok(Self {
            conn,
            endpoint,
            out,
            pending,
            next_id: AtomicU64::new(1),
            events: tokio::sync::Mutex::new(events_rx),
            fatal,
            node: node.clone(),
            version,
            timeout: config.timeout,
        })
    }

    /// The node's name, from its welcome.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The underlying QUIC connection (for tests and diagnostics).
    pub fn quic(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&self, request: Request) -> Result<Reply, RequestError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Encoded here, so that a request too large to send fails alone instead of the stream.
        let bytes = match frame::encode(
            &ClientFrame::Request { id, request },
            frame::DEFAULT_MAX_FRAME,
        ) {
            Ok(bytes) => bytes,
            Err(frame::FrameError::TooLarge { len, max }) => {
                return Err(RequestError::TooLarge { len, max });
            }
            Err(e) => return Err(RequestError::Closed(e.to_string())),
        };
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err(self.closed_error()),
        };
        let exchange = async {
            if self.out.send(bytes).await.is_err() {
                return None;
            }
            Some(rx.await)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(None) => {
                forget(&self.pending, id);
                Err(self.closed_error())
            }
            Ok(Some(Ok(Ok(reply)))) => Ok(reply),
            Ok(Some(Ok(Err(body)))) => Err(RequestError::Server(body)),
            Ok(Some(Err(_))) => Err(self.closed_error()),
            Err(_) => {
                forget(&self.pending, id);
                Err(RequestError::Timeout)
            }
        }
    }

    fn closed_error(&self) -> RequestError {
        if let Some(body) = lock(&self.fatal).clone() {
            return RequestError::ConnectionFailed(body);
        }
        RequestError::Closed(match self.conn.close_reason() {
            Some(reason) => reason.to_string(),
            None => "the connection ended".to_owned(),
        })
    }

    /// The discussion list, most recent activity first.
    pub async fn discussions(&self) -> Result<Vec<DiscussionInfo>, RequestError> {
        match self.request(Request::ListDiscussions).await? {
            Reply::Discussions { discussions } => Ok(discussions),
            _ => Err(RequestError::UnexpectedReply("list_discussions")),
        }
    }

    /// A discussion id from what the user `me` named: an id, a title, or the other user of a
    /// dialog (`login` or `login@node`). With `open_dialog`, a user's name that no discussion
    /// of the list carries opens (or creates) the dialog with them.
    pub async fn resolve(
        &self,
        me: &str,
        what: &str,
        open_dialog: bool,
    ) -> Result<String, ResolveError> {
        let discussions = self.discussions().await?;
        if let Some(d) = discussions.iter().find(|d| d.id == what) {
            return Ok(d.id.clone());
        }
        let matches: Vec<&DiscussionInfo> = discussions
            .iter()
            .filter(|d| {
                let n = discussion_name(d, me);
                n == what || n.split('@').next() == Some(what)
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.id.clone()),
            [] if open_dialog => match self
                .request(Request::OpenDialog {
                    with: what.to_owned(),
                })
                .await
            {
                Ok(Reply::Discussion { discussion }) => Ok(discussion.id),
                Ok(_) => Err(RequestError::UnexpectedReply("open_dialog").into()),
                Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                    Err(ResolveError::NotFound(what.to_owned()))
                }
                Err(e) => Err(e.into()),
            },
            [] => Err(ResolveError::NotListed(what.to_owned())),
            _ => Err(ResolveError::Ambiguous(what.to_owned())),
        }
    }

    /// Logs in with a password.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        device_id: &str,
        device_name: &str,
    ) -> Result<LoggedIn, RequestError> {
        let reply = self
            .request(Request::Login {
                login: login.to_owned(),
                password: password.to_owned(),
                device_id: device_id.to_owned(),
                device_name: device_name.to_owned(),
            })
            .await?;
        match reply {
            Reply::LoggedIn {
                session_token,
                session,
                user,
            } => Ok(LoggedIn {
                token: session_token,
                session,
                user,
            }),
            _ => Err(RequestError::UnexpectedReply("login")),
        }
    }

    /// Authenticates with a session token from an earlier login.
    pub async fn resume(
        &self,
        token: &str,
        device_id: &str,
    ) -> Result<(SessionInfo, UserInfo), RequestError> {
        let reply = self
            .request(Request::Resume {
                token: token.to_owned(),
                device_id: device_id.to_owned(),
            })
            .await?;
        match reply {
            Reply::Resumed { session, user } => Ok((session, user)),
            _ => Err(RequestError::UnexpectedReply("resume")),
        }
    }

    /// The authenticated user.
    pub async fn whoami(&self) -> Result<UserInfo, RequestError> {
        match self.request(Request::Whoami).await? {
            Reply::Me { user } => Ok(user),
            _ => Err(RequestError::UnexpectedReply("whoami")),
        }
    }

    /// The next event from the node; `None` once the connection is gone.
    pub async fn next_event(&self) -> Option<Event> {
        self.events.lock().await.recv().await
    }

    /// Waits until the connection closes and says why.
    pub async fn closed(&self) -> CloseReason {
        match self.conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(close) => CloseReason {
                code: Some(close.error_code.into_inner()),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
                reset: false,
            },
            other => CloseReason {
                code: None,
                reason: other.to_string(),
                reset: matches!(other, quinn::ConnectionError::Reset),
            },
        }
    }

    /// Closes the connection normally.
    pub async fn close(self) {
        self.conn.close(close::NORMAL.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The background tasks hold the QUIC connection; close it so the node sees us leave.
        self.conn.close(close::NORMAL.into(), b"bye");
    }
}

/// Resolves when the host at `addr` answers that nothing listens on its UDP port (an ICMP
/// "port unreachable", which a connected UDP socket reports as a refused connection); stays
/// pending otherwise, also when nothing answers at all.
async fn closed_port(addr: SocketAddr) {
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let refused = async {
        let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
        socket.connect(addr).await.ok()?;
        // One zero byte: too short to be a QUIC packet, so a running node drops it unanswered.
        if let Err(e) = socket.send(&[0]).await {
            return (e.kind() == std::io::ErrorKind::ConnectionRefused).then_some(());
        }
        let mut buf = [0u8; 64];
        match socket.recv(&mut buf).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            // Another failure, or an answer (the port is open).
            Err(_) | Ok(_) => None,
        }
    };
    if refused.await.is_none() {
        std::future::pending::<()>().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn forget(pending: &Pending, id: u64) {
    if let Some(p) = lock(pending).as_mut() {
        p.remove(&id);
    }
}

fn take(pending: &Pending, id: u64) -> Option<oneshot::Sender<Result<Reply, ErrorBody>>> {
    lock(pending).as_mut().and_then(|p| p.remove(&id))
}

async fn write_loop(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = send.write_all(&bytes).await {
            tracing::debug!(error = %e, "write failed");
            break;
        }
    }
    let _ = send.finish();
}

async fn read_loop(
    mut recv: quinn::RecvStream,
    pending: Pending,
    fatal: Arc<Mutex<Option<ErrorBody>>>,
) {
    loop {
        match frame::read::<ServerFrame, _>(&mut recv, frame::MAX_OUTGOING_FRAME).await {
            Ok(Some(ServerFrame::Response { id, reply })) => {
                if let Some(tx) = take(&pending, id) {
                    let _ = tx.send(Ok(*reply));
                }
            }
            Ok(Some(ServerFrame::Error {
                id: Some(id),
                error,
            })) => {
                if let Some(tx) = take(&pending, id) {
                    let _ = tx.send(Err(error));
                }
            }
            Ok(Some(ServerFrame::Error { id: None, error })) => {
                *lock(&fatal) = Some(error);
            }
            Ok(Some(ServerFrame::Welcome { .. })) => {
                tracing::debug!("ignoring a second welcome");
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                break;
            }
        }
    }
    // Dropping the senders wakes every waiting request with "closed"; later requests fail at
    // once.
    *lock(&pending) = None;
}

/// The node opens the event stream after its welcome; QUIC announces it with its first
/// event, so it is accepted here rather than during connect.
async fn event_loop(conn: quinn::Connection, tx: mpsc::Sender<Event>) {
    let Ok(mut recv) = conn.accept_uni().await else {
        return;
    };
    while let Ok(Some(event)) = frame::read::<Event, _>(&mut recv, frame::MAX_OUTGOING_FRAME).await
    {
        if tx.send(event).await.is_err() {
            break;
        }
    }
}
