//! The node under test: how to reach it as a client, how to administer it (users), and its
//! process id.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::UnixStream;
use veche_client::{ClientConfig, ConnectError, Connection, LoggedIn, RequestError};
use veche_protocol::admin::{AdminReply, AdminRequest};
use veche_protocol::{ClientFrame, ErrorBody, ErrorCode, Reply, Request, ServerFrame, frame};

/// How the generator creates its users.
#[derive(Debug, Clone)]
pub enum AdminAccess {
    /// The node's admin socket (`admin.sock` in its data folder): the node runs on this
    /// machine and the data folder is readable.
    Socket(PathBuf),
    /// An administrator's account, over QUIC: works with a node anywhere.
    Account {
        /// Login.
        login: String,
        /// Password.
        password: String,
    },
}

/// The node under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where and how to connect (address, trust, timeouts).
    pub client: ClientConfig,
    /// How to create users.
    pub admin: AdminAccess,
    /// The node's process id, for its CPU and memory; `None` for a node elsewhere.
    pub node_pid: Option<u32>,
    /// Logins of the generator's users start with this (`bench-s0`, `bench-r3`, ...).
    pub prefix: String,
    /// The password of every generator user.
    pub password: String,
    /// Worker threads of the generator's runtime (to tell when it is the bound).
    pub threads: usize,
}

/// Why the generator could not set up or talk to the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// No connection to the node.
    #[error("cannot connect to the node: {0}")]
    Connect(Box<ConnectError>),
    /// A request failed.
    #[error("{what}: {source}")]
    Request {
        /// Which request.
        what: String,
        /// Why.
        source: Box<RequestError>,
    },
    /// The admin socket could not be opened.
    #[error("admin socket {path}: {source}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A frame on the admin socket could not be written or read.
    #[error("admin socket: {0}")]
    Frame(#[from] frame::FrameError),
    /// The node refused an administrator command.
    #[error("the node refused {what}: {}", .body.message)]
    Refused {
        /// Which command.
        what: String,
        /// The node's answer.
        body: Box<ErrorBody>,
    },
    /// The node answered with something else than the request expects.
    #[error("unexpected answer to {0}")]
    Unexpected(&'static str),
}

impl SetupError {
    /// Wraps a failed request, naming it.
    pub fn request(what: impl Into<String>, source: RequestError) -> Self {
        Self::Request {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

impl From<ConnectError> for SetupError {
    fn from(e: ConnectError) -> Self {
        Self::Connect(Box::new(e))
    }
}

/// One administrator channel: a socket connection or an administrator's session.
#[derive(Debug)]
pub enum Admin {
    /// The admin socket (commands one after another on one stream).
    Socket {
        /// The stream.
        stream: UnixStream,
        /// The next request id.
        next_id: u64,
    },
    /// An administrator's QUIC session.
    Account(Connection),
}

impl Admin {
    /// Runs one command.
    pub async fn call(&mut self, command: AdminRequest) -> Result<AdminReply, SetupError> {
        let what = command_name(&command);
        match self {
            Self::Socket { stream, next_id } => {
                *next_id += 1;
                let request = ClientFrame::Request {
                    id: *next_id,
                    request: Request::Admin { command },
                };
                frame::write(stream, &request, frame::DEFAULT_MAX_FRAME).await?;
                match frame::read::<ServerFrame, _>(stream, frame::MAX_OUTGOING_FRAME).await? {
                    Some(ServerFrame::Response { reply, .. }) => match *reply {
                        Reply::Admin { result } => Ok(result),
                        _ => Err(SetupError::Unexpected("an admin command")),
                    },
                    Some(ServerFrame::Error { error, .. }) => Err(SetupError::Refused {
                        what,
                        body: Box::new(error),
                    }),
                    Some(_) | None => Err(SetupError::Unexpected("an admin command")),
                }
            }
            Self::Account(conn) => match conn.request(Request::Admin { command }).await {
                Ok(Reply::Admin { result }) => Ok(result),
                Ok(_) => Err(SetupError::Unexpected("an admin command")),
                Err(RequestError::Server(body)) => Err(SetupError::Refused {
                    what,
                    body: Box::new(body),
                }),
                Err(e) => Err(SetupError::request(what, e)),
            },
        }
    }
}

fn command_name(command: &AdminRequest) -> String {
    match command {
        AdminRequest::UserAdd { login, .. } => format!("adding user {login}"),
        _ => "an admin command".to_owned(),
    }
}

/// The process id of whoever serves the admin socket at `path` (the node), from the socket's
/// peer credentials.
pub async fn pid_from_socket(path: &std::path::Path) -> Option<u32> {
    let stream = UnixStream::connect(path).await.ok()?;
    let pid = stream.peer_cred().ok()?.pid()?;
    u32::try_from(pid).ok()
}

impl Target {
    /// A new QUIC endpoint (one UDP socket) for connections to the node.
    pub fn endpoint(&self) -> Result<quinn::Endpoint, SetupError> {
        Ok(veche_client::endpoint(&self.client)?)
    }

    /// A new connection on its own endpoint.
    pub async fn connect(&self) -> Result<Connection, SetupError> {
        Ok(Connection::connect(&self.client).await?)
    }

    /// A new connection on a shared endpoint.
    pub async fn connect_on(&self, endpoint: &quinn::Endpoint) -> Result<Connection, SetupError> {
        Ok(Connection::connect_on(endpoint.clone(), &self.client).await?)
    }

    /// The login of the generator's user `role` + `n` (`bench-r3`).
    pub fn login_of(&self, role: &str, n: usize) -> String {
        format!("{}-{role}{n}", self.prefix)
    }

    /// The device id the generator's user `login` uses (resumes need the same).
    pub fn device_of(login: &str) -> String {
        format!("{login}-bench")
    }

    /// Logs `login` in with the generator's password on `conn`.
    pub async fn login(&self, conn: &Connection, login: &str) -> Result<LoggedIn, SetupError> {
        let device = Self::device_of(login);
        conn.login(login, &self.password, &device, "veche-bench")
            .await
            .map_err(|e| SetupError::request(format!("logging in as {login}"), e))
    }

    /// Connects and logs `login` in.
    pub async fn connect_as(&self, login: &str) -> Result<(Connection, LoggedIn), SetupError> {
        let conn = self.connect().await?;
        let logged = self.login(&conn, login).await?;
        Ok((conn, logged))
    }

    /// Opens an administrator channel.
    pub async fn admin(&self) -> Result<Admin, SetupError> {
        match &self.admin {
            AdminAccess::Socket(path) => {
                let stream =
                    UnixStream::connect(path)
                        .await
                        .map_err(|source| SetupError::Socket {
                            path: path.clone(),
                            source,
                        })?;
                Ok(Admin::Socket { stream, next_id: 0 })
            }
            AdminAccess::Account { login, password } => {
                let conn = self.connect().await?;
                conn.login(login, password, "veche-bench-admin", "veche-bench")
                    .await
                    .map_err(|e| SetupError::request("logging in as the administrator", e))?;
                Ok(Admin::Account(conn))
            }
        }
    }

    /// Creates the users `logins` with the generator's password; users that exist already are
    /// kept (their password must be the generator's). Runs `parallel` commands at a time: each
    /// costs the node one password hash.
    pub async fn ensure_users(&self, logins: &[String], parallel: usize) -> Result<(), SetupError> {
        let logins: Arc<Vec<String>> = Arc::new(logins.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..parallel.clamp(1, logins.len().max(1)) {
            let mut admin = self.admin().await?;
            let logins = logins.clone();
            let next = next.clone();
            let password = self.password.clone();
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(login) = logins.get(i) else {
                        return Ok::<(), SetupError>(());
                    };
                    let command = AdminRequest::UserAdd {
                        login: login.clone(),
                        display_name: format!("Bench {login}"),
                        email: format!("{login}@bench.example"),
                        password: password.clone(),
                        admin: false,
                        department: "bench".to_owned(),
                    };
                    match admin.call(command).await {
                        Ok(_) => {}
                        Err(SetupError::Refused { body, .. })
                            if body.code == ErrorCode::Conflict => {}
                        Err(e) => return Err(e),
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(result) => result?,
                Err(_) => return Err(SetupError::Unexpected("a user creation task (it panicked)")),
            }
        }
        Ok(())
    }
}
