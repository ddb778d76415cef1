//! Starting and stopping a node: the order in which the data folder, storage, identity,
//! certificate, accounts and listeners come up, and go down.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use veche_base::{SharedClock, SystemClock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veche_protocol::Timestamp;
use veche_protocol::admin::{AdminReply, AdminRequest};
use veche_protocol::ids::NodeName;

use crate::accounts::{AccountError, Accounts};
use crate::apps::Apps;
use crate::config::Config;
use crate::data_dir::{DataDir, DataLock, LockError, write_private};
use crate::gateway::{self, Gateway};
use crate::identity::{IdentityError, NodeIdentity};
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::push::{Push, Vapid};
use crate::server::{self, ListenError, Shared};
use crate::services::{self, Services};
use crate::tls::{TlsError, TlsMaterial};
use veche_core::discussions::{Discussions, Outlets};
use veche_core::live::presence::Presence;
use veche_core::live::registry::Registry;
use veche_store::{Location, Store, StoreError};

const NODE_NAME_KEY: &str = "node_name";

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data folder could not be created or used.
    #[error("data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another node runs on this data folder.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The plugin host could not start.
    #[error("plugins: {0}")]
    Plugins(String),
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity key could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener could not start.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// Accounts could not start.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The configured node name differs from the one fixed at the first start.
    #[error(
        "node.name is {configured:?} but this data folder belongs to node {stored:?}; the name is fixed at the first start"
    )]
    NodeNameChanged {
        /// From the configuration.
        configured: String,
        /// From the database.
        stored: String,
    },
    /// The federation transport could not start (for example, its port is taken).
    #[error("federation: {0}")]
    Federation(String),
    /// The files folder could not be prepared.
    #[error("files: {0}")]
    Files(String),
    /// The VAPID key (Web Push) could not be loaded or created.
    #[error("{0}")]
    Vapid(String),
    /// The admin socket could not be created.
    #[error("admin socket {path}: {source}")]
    AdminSocket {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What a started node tells its operator.
#[derive(Debug, Clone)]
pub struct StartInfo {
    /// The node's name.
    pub node_name: String,
    /// The bound QUIC address (the real port when the config said 0).
    pub quic_addr: SocketAddr,
    /// The data folder.
    pub data_dir: PathBuf,
    /// The generated CA certificate to give to clients, if the node generated its own.
    pub ca_path: Option<PathBuf>,
    /// SHA-256 of that CA certificate.
    pub ca_fingerprint: Option<String>,
    /// SHA-256 of the server certificate.
    pub cert_fingerprint: String,
    /// The node's ed25519 public key, hex.
    pub identity: String,
    /// The one-time token for creating the first administrator, when the node has no users.
    pub setup_token: Option<String>,
    /// When that token expires.
    pub setup_token_expires: Option<Timestamp>,
    /// The admin socket, when enabled.
    pub admin_socket: Option<PathBuf>,
    /// The bound HTTP gateway address, when enabled.
    pub http_addr: Option<SocketAddr>,
    /// Whether the gateway serves HTTPS.
    pub http_tls: bool,
    /// The bound metrics and health listener's address, when `[metrics]` is enabled.
    pub metrics_addr: Option<SocketAddr>,
}

/// Storage and accounts opened on a data folder, with its lock held.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) lock: DataLock,
    pub(crate) data: DataDir,
    pub(crate) store: Store,
    pub(crate) node_name: NodeName,
    pub(crate) services: Services,
    pub(crate) identity: NodeIdentity,
}

/// How the data folder is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// For a running node: the identity key is created if missing.
    Serve,
    /// For an offline admin command, possibly run as another user: nothing is created that
    /// the node would then fail to read; a missing identity key is replaced by a throwaway
    /// one (offline commands sign nothing).
    Offline,
}

/// Opens the data folder for a node or an offline admin command.
pub(crate) async fn open(
    config: &Config,
    data: DataDir,
    purpose: Purpose,
    clock: SharedClock,
) -> Result<Opened, StartError> {
    let lock = data.lock()?;
    let location = match &config.storage.database {
        Some(url) => Location::Postgres(url.clone()),
        None => Location::Sqlite(data.database_path()),
    };
    let store = Store::connect(&location).await?;
    let metrics = if config.metrics.enabled && purpose == Purpose::Serve {
        Metrics::enabled()
    } else {
        Metrics::default()
    };
    let node_name = resolve_node_name(config, &store).await?;
    let accounts = Accounts::new(
        store.clone(),
        node_name.clone(),
        config.auth.clone(),
        Some(data.setup_token_path()),
        clock.clone(),
        metrics.clone(),
    )
    .await?;
    let registry = Arc::new(Registry::new(metrics.fanout()));
    let plugins = Plugins::start(
        store.clone(),
        node_name.clone(),
        data.root(),
        config.plugins.clone(),
        clock.clone(),
        metrics.clone(),
    )
    .await
    .map_err(|e| StartError::Plugins(e.to_string()))?;
    let identity = match purpose {
        Purpose::Serve => NodeIdentity::load_or_create(&data.identity_path())?,
        Purpose::Offline => NodeIdentity::load_or_throwaway(&data.identity_path())?,
    };
    let apps = Apps::new(
        store.clone(),
        node_name.clone(),
        config.apps.clone(),
        config.smtp.clone(),
        plugins.clone(),
        identity.signing_key(),
        clock.clone(),
        metrics.clone(),
    );
    let presence = Presence::new(
        store.clone(),
        registry.clone(),
        config.presence.clone(),
        clock.clone(),
    );
    let vapid = match purpose {
        Purpose::Serve => Vapid::load_or_create(&data.vapid_key_path())
            .map_err(|e| StartError::Vapid(e.to_string()))?,
        Purpose::Offline => Vapid::throwaway(),
    };
    let push = Push::new(
        store.clone(),
        config.push.clone(),
        presence.clone(),
        vapid,
        node_name.as_str(),
        identity.signing_key(),
        clock.clone(),
        metrics.clone(),
    )
    .await?;
    let fed_key = (purpose == Purpose::Serve).then(|| {
        Arc::new(veche_federation::keys::NodeKey::from_secret(
            identity.signing_key().to_bytes(),
        ))
    });
    let transport = crate::federation::Transport::default();
    let committed = Arc::new(tokio::sync::Notify::new());
    let discussions = Discussions::start(
        store.clone(),
        node_name.clone(),
        registry.clone(),
        veche_core::discussions::Limits {
            messages: config.messages.clone(),
            files: config.files.clone(),
        },
        veche_core::discussions::access::ProviderHost::new(Arc::new(plugins.clone())),
        Outlets {
            presence: presence.clone(),
            push: Arc::new(push.clone()),
            fed: veche_core::discussions::FedOutlet {
                key: fed_key.clone(),
                links: Arc::new(transport.clone()),
            },
            metrics: Arc::new(metrics.clone()),
            committed: committed.clone(),
        },
        clock.clone(),
    );
    let search = crate::search::Search::new(
        store.clone(),
        data.root(),
        purpose == Purpose::Offline,
        committed,
    );
    let files = crate::files::Files::open(
        store.clone(),
        config.files.clone(),
        data.root(),
        discussions.clone(),
        plugins.clone(),
        node_name.clone(),
        Arc::new(transport.clone()),
        clock.clone(),
    )
    .await
    .map_err(|e| StartError::Files(e.to_string()))?;
    let federation = crate::federation::Federation::new(
        store.clone(),
        node_name.clone(),
        fed_key,
        config.federation.clone(),
        transport,
        crate::federation::Services {
            discussions: discussions.clone(),
            presence: presence.clone(),
            files: files.clone(),
        },
        clock.clone(),
    );
    Ok(Opened {
        lock,
        data,
        store: store.clone(),
        node_name,
        services: Services {
            accounts,
            registry,
            discussions,
            search,
            plugins,
            apps,
            presence,
            push,
            files,
            federation,
            clock,
            store,
            metrics,
        },
        identity,
    })
}

async fn resolve_node_name(config: &Config, store: &Store) -> Result<NodeName, StartError> {
    let stored = store.meta().get(NODE_NAME_KEY).await?;
    let name = match (&config.node.name, stored) {
        (Some(configured), Some(stored)) if *configured != stored => {
            return Err(StartError::NodeNameChanged {
                configured: configured.clone(),
                stored,
            });
        }
        (_, Some(stored)) => stored,
        (Some(configured), None) => configured.clone(),
        (None, None) => default_node_name(),
    };
    let parsed = name.parse::<NodeName>().unwrap_or_else(|_| {
        // Only a hand-edited database can hold an invalid name; fall back to a valid one
        // rather than refuse to start.
        tracing::warn!(%name, "stored node name is invalid; using localhost");
        "localhost"
            .parse()
            .unwrap_or_else(|_| unreachable!("'localhost' is a valid node name"))
    });
    store.meta().set(NODE_NAME_KEY, parsed.as_str()).await?;
    Ok(parsed)
}

fn default_node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim().to_lowercase();
    if host.parse::<NodeName>().is_ok() {
        host
    } else {
        "localhost".to_owned()
    }
}

/// A running node. Dropping it without [`RunningNode::shutdown`] aborts it abruptly.
#[derive(Debug)]
pub struct RunningNode {
    info: StartInfo,
    services: Services,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningNode {
    /// Starts a node on `data` with `config`, going by this machine's clock.
    pub async fn start(config: Config, data: DataDir) -> Result<Self, StartError> {
        Self::start_with_clock(config, data, SystemClock::shared()).await
    }

    /// Starts a node on `data` with `config`, going by `clock` (tests set it).
    pub async fn start_with_clock(
        config: Config,
        data: DataDir,
        clock: SharedClock,
    ) -> Result<Self, StartError> {
        let opened = open(&config, data, Purpose::Serve, clock).await?;
        let Opened {
            lock,
            data,
            store,
            node_name,
            services,
            identity,
        } = opened;

        if let Some(seq) = store.audit_log().verify_audit_chain().await? {
            tracing::error!(
                seq,
                "the audit log chain is broken at this record: it was altered outside Veche"
            );
        }
        let removed = store
            .sessions()
            .delete_expired_sessions(services.clock.now_ms())
            .await?;
        if removed > 0 {
            tracing::info!(removed, "removed expired sessions");
        }
        services.plugins.connect(services.discussions.clone());
        let tls = TlsMaterial::load(&data, &config.tls, node_name.as_str())?;

        let setup = services.accounts.issue_setup_token().await?;
        let token_path = data.setup_token_path();
        match &setup {
            Some((token, _)) => write_private(&token_path, format!("{token}\n").as_bytes())
                .map_err(|source| StartError::DataDir {
                    path: token_path.clone(),
                    source,
                })?,
            None => {
                let _ = std::fs::remove_file(&token_path);
            }
        }

        let endpoint = server::endpoint(&tls, &config.server, &config.quic, identity.quic_keys())?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|source| StartError::DataDir {
                path: data.root().to_owned(),
                source,
            })?;

        let stop = CancellationToken::new();
        services
            .federation
            .start(stop.clone())
            .await
            .map_err(|e| StartError::Federation(e.to_string()))?;
        let admin_clients = TaskTracker::new();
        let admin_socket = if config.server.admin_socket {
            let path = data.admin_socket_path();
            // We hold the data-folder lock, so a socket file left here is stale.
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path).map_err(|source| {
                StartError::AdminSocket {
                    path: path.clone(),
                    source,
                }
            })?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| StartError::AdminSocket {
                    path: path.clone(),
                    source,
                },
            )?;
            tokio::spawn(crate::admin_socket::serve_socket(
                listener,
                services.clone(),
                stop.clone(),
                admin_clients.clone(),
            ));
            Some(path)
        } else {
            None
        };

        let (http, http_addr) = if config.http.enabled {
            let listener = tokio::net::TcpListener::bind(config.http.listen)
                .await
                .map_err(|source| ListenError::Bind {
                    addr: config.http.listen,
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| ListenError::Bind {
                addr: config.http.listen,
                source,
            })?;
            (Some(listener), Some(addr))
        } else {
            (None, None)
        };

        let (ops_listener, metrics_addr) = if config.metrics.enabled {
            let listen = config.metrics.listen;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| ListenError::Bind {
                    addr: listen,
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| ListenError::Bind {
                addr: listen,
                source,
            })?;
            (Some(listener), Some(addr))
        } else {
            (None, None)
        };

        let http_tls = if config.http.tls {
            Some(tls.http_server_config()?)
        } else {
            if http_addr.is_some_and(|a| !a.ip().is_loopback()) {
                tracing::warn!(
                    addr = ?http_addr,
                    "the HTTP gateway serves plain HTTP beyond loopback; set [http] tls = true \
                     or put a TLS proxy in front"
                );
            }
            None
        };

        let info = StartInfo {
            node_name: node_name.to_string(),
            quic_addr,
            data_dir: data.root().to_owned(),
            ca_path: tls.ca_path.clone(),
            ca_fingerprint: tls.ca_fingerprint.clone(),
            cert_fingerprint: tls.fingerprint.clone(),
            identity: identity.public_key_hex(),
            setup_token: setup.as_ref().map(|(t, _)| t.clone()),
            setup_token_expires: setup.map(|(_, e)| e),
            admin_socket: admin_socket.clone(),
            http_addr,
            http_tls: http_tls.is_some(),
            metrics_addr,
        };
        let listening = Arc::new(AtomicBool::new(false));
        if let Some(listener) = ops_listener {
            tokio::spawn(crate::ops::serve(
                listener,
                Arc::new(crate::ops::Ops {
                    services: services.clone(),
                    metrics: services.metrics.clone(),
                    database: data.database_path(),
                    listening: listening.clone(),
                }),
                stop.clone(),
            ));
        }

        let shared = Arc::new(Shared {
            services: services.clone(),
            server: config.server.clone(),
            node_name: node_name.to_string(),
            stop: stop.clone(),
            requests: TaskTracker::new(),
        });
        let connections = TaskTracker::new();
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let http_config = config.http.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            let listening = listening.clone();
            async move {
                let accept = tokio::spawn(server::accept_loop(
                    endpoint.clone(),
                    shared.clone(),
                    connections.clone(),
                ));
                let sweeper = tokio::spawn(sweep_sessions(
                    store.clone(),
                    shared.services.clock.clone(),
                    stop.clone(),
                ));
                let sender = shared.services.apps.spawn_sender(stop.clone());
                let presence = shared.services.presence.spawn(stop.clone());
                let pushers = shared.services.push.spawn(stop.clone());
                let cleaner = tokio::spawn(shared.services.files.clone().run_cleanup(stop.clone()));
                let fetcher =
                    tokio::spawn(shared.services.files.clone().run_prefetch(stop.clone()));
                let indexer = shared.services.search.spawn_indexer(stop.clone());
                let ws_tasks = TaskTracker::new();
                let gateway = http.map(|listener| {
                    tokio::spawn(gateway::serve(
                        listener,
                        Arc::new(Gateway {
                            services: shared.services.clone(),
                            node_name: shared.node_name.clone(),
                            stop: stop.clone(),
                            registrations: gateway::registration_limiter(),
                            activations: gateway::activation_limiter(),
                            tasks: ws_tasks.clone(),
                            trusted_proxies: http_config.trusted_proxies.clone(),
                            tls: http_tls.is_some(),
                        }),
                        http_config,
                        http_tls,
                    ))
                });
                stop.cancelled().await;
                listening.store(false, Ordering::SeqCst);
                shared.services.federation.stop();
                let _ = accept.await;
                sweeper.abort();
                // Clean-up only removes what is already unused; the next start does the rest.
                cleaner.abort();
                fetcher.abort();
                if let Some(mut gateway) = gateway
                    && tokio::time::timeout(grace, &mut gateway).await.is_err()
                {
                    tracing::warn!("HTTP requests did not finish within the shutdown grace period");
                    gateway.abort();
                }
                ws_tasks.close();
                let _ = tokio::time::timeout(grace, ws_tasks.wait()).await;
                for mut task in [sender, indexer, presence].into_iter().chain(pushers) {
                    if tokio::time::timeout(grace, &mut task).await.is_err() {
                        // Nothing they do is lost by stopping: webhook requests and pushes
                        // are sent again, indexing resumes from the index's own position,
                        // presence is in memory (choices not yet saved are saved on the way
                        // out).
                        task.abort();
                        let _ = task.await;
                    }
                }
                // Each connection finishes its requests in flight, tells its client, and
                // closes; then stragglers are waited for and anything left is closed.
                connections.close();
                if tokio::time::timeout(grace + Duration::from_secs(2), connections.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!("connections did not close within the shutdown grace period");
                }
                shared.requests.close();
                if tokio::time::timeout(grace, shared.requests.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!("requests did not finish within the shutdown grace period");
                }
                server::close_all(&endpoint);
                let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
                admin_clients.close();
                let _ = tokio::time::timeout(grace, admin_clients.wait()).await;
                shared.services.plugins.shutdown(grace).await;
                store.close().await;
                if let Some(path) = admin_socket {
                    let _ = std::fs::remove_file(path);
                }
                drop(lock);
                tracing::info!("node stopped");
            }
        });
        // Every listener is bound (the kernel queues connections until the tasks accept them).
        listening.store(true, Ordering::SeqCst);
        let http = info.http_addr.map(|a| a.to_string()).unwrap_or_default();
        let metrics = info.metrics_addr.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(node = %info.node_name, addr = %quic_addr, %http, %metrics, "node started");
        Ok(Self {
            info,
            services,
            stop,
            task: Some(task),
        })
    }

    /// What the node reported at start.
    pub fn info(&self) -> &StartInfo {
        &self.info
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.info.quic_addr
    }

    /// Runs an administrator command in-process, as `actor`.
    pub async fn admin(
        &self,
        actor: &str,
        request: AdminRequest,
    ) -> Result<AdminReply, services::AdminError> {
        services::execute(&self.services, actor, request).await
    }

    /// The plugin host.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn plugins(&self) -> &Plugins {
        &self.services.plugins
    }

    /// The search service.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn search(&self) -> &crate::search::Search {
        &self.services.search
    }

    /// The clock the node goes by.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn clock(&self) -> &SharedClock {
        &self.services.clock
    }

    /// Storage.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn store(&self) -> &Store {
        &self.services.store
    }

    /// Stops accepting, finishes in-flight requests, closes connections and storage.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn sweep_sessions(store: Store, clock: SharedClock, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = store
            .sessions()
            .delete_expired_sessions(clock.now_ms())
            .await
        {
            tracing::warn!(error = %e, "could not remove expired sessions");
        }
        // Kept a day past their expiry, so that a late use is told "expired", not "unknown".
        let day_ago = clock.now_ms().saturating_sub(86_400_000);
        if let Err(e) = store.embed().delete_expired_embed_tokens(day_ago).await {
            tracing::warn!(error = %e, "could not remove expired embed tokens");
        }
    }
}
