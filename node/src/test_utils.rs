//! A real node for tests: QUIC on `127.0.0.1:0`, a temporary data folder, shut down on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use veche_protocol::admin::{AdminReply, AdminRequest};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::{RunningNode, StartError, StartInfo};

/// A node started for a test.
#[derive(Debug)]
pub struct TestNode {
    node: Option<RunningNode>,
    config: Config,
    dir: tempfile::TempDir,
    clock: veche_base::SharedClock,
    /// The PostgreSQL database of this node when `VECHE_TEST_POSTGRES` names a server;
    /// dropped after the node (fields drop in order).
    _database: Option<veche_store::TestDatabase>,
}

/// The configuration tests start from: loopback, port 0, node name `test.local`.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.node.name = Some("test.local".to_owned());
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.shutdown_grace_secs = 5;
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.apps.webhook_retry_base_ms = 50;
    config.apps.allow_loopback_receivers = true;
    config.presence.offline_grace_ms = 300;
    config.presence.coalesce_ms = 100;
    config.push.coalesce_ms = 100;
    config.push.retry_base_ms = 50;
    config.push.allow_loopback_endpoints = true;
    config.files.confirm_every_kb = 256;
    config.federation.listen = vec!["/ip4/127.0.0.1/tcp/0".to_owned()];
    config.federation.retry_max_secs = 1;
    config
}

impl TestNode {
    /// Starts a node with [`test_config`].
    pub async fn spawn() -> Result<Self, StartError> {
        Self::spawn_with(test_config()).await
    }

    /// Starts a node with `config` in a new temporary data folder.
    pub async fn spawn_with(config: Config) -> Result<Self, StartError> {
        Self::spawn_with_clock(config, veche_base::SystemClock::shared()).await
    }

    /// Starts a node with `config` that goes by `clock` (a [`veche_base::ManualClock`] the
    /// test moves, instead of sleeping), in a new temporary data folder; its database is a
    /// new one on the PostgreSQL server `VECHE_TEST_POSTGRES` names, if set and `config`
    /// names none.
    pub async fn spawn_with_clock(
        mut config: Config,
        clock: veche_base::SharedClock,
    ) -> Result<Self, StartError> {
        let database = match config.storage.database {
            Some(_) => None,
            None => veche_store::TestDatabase::from_env().await?,
        };
        if let Some(database) = &database {
            config.storage.database = Some(database.url().to_owned());
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().map_err(|source| StartError::DataDir {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut this = Self {
            node: None,
            config,
            dir,
            clock,
            _database: database,
        };
        this.start().await?;
        Ok(this)
    }

    async fn start(&mut self) -> Result<(), StartError> {
        let data = DataDir::create(self.dir.path()).map_err(|source| StartError::DataDir {
            path: self.dir.path().to_owned(),
            source,
        })?;
        self.node = Some(
            RunningNode::start_with_clock(self.config.clone(), data, self.clock.clone()).await?,
        );
        Ok(())
    }

    fn node(&self) -> &RunningNode {
        self.node
            .as_ref()
            .unwrap_or_else(|| unreachable!("a TestNode always holds a node between calls"))
    }

    /// The metrics listener's base URL (`http://127.0.0.1:port`), when `[metrics]` is enabled.
    pub fn metrics_url(&self) -> Option<String> {
        self.info().metrics_addr.map(|a| format!("http://{a}"))
    }

    /// What the node reported at start.
    pub fn info(&self) -> &StartInfo {
        self.node().info()
    }

    /// The HTTP gateway's base URL, `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        match self.info().http_addr {
            Some(addr) => format!("http://{addr}"),
            None => String::new(),
        }
    }

    /// The QUIC address to connect to.
    pub fn quic_addr(&self) -> SocketAddr {
        self.node().quic_addr()
    }

    /// The generated CA certificate clients must trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs an administrator command in-process.
    pub async fn admin(&self, request: AdminRequest) -> Result<AdminReply, crate::AdminError> {
        self.node().admin("test", request).await
    }

    /// Creates a user with a password.
    pub async fn add_user(
        &self,
        login: &str,
        password: &str,
        admin: bool,
    ) -> Result<AdminReply, crate::AdminError> {
        self.admin(AdminRequest::UserAdd {
            login: login.to_owned(),
            display_name: String::new(),
            email: format!("{login}@example.com"),
            password: password.to_owned(),
            admin,
            department: String::new(),
        })
        .await
    }

    /// Benchmarks only: `n` users `{prefix}{i}` with one session each on device `bench`,
    /// written straight into storage (no password hashing); returns (login, session token).
    pub async fn bench_sessions(
        &self,
        prefix: &str,
        n: usize,
    ) -> Result<Vec<(String, String)>, veche_store::StoreError> {
        let node = &self.info().node_name;
        let mut rows = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let login = format!("{prefix}{i}");
            let token = hex::encode(rand::random::<[u8; 32]>());
            rows.push((
                format!("{login}@{node}"),
                login.clone(),
                crate::accounts::token_hash(&token),
            ));
            out.push((login, token));
        }
        let now = self.node().clock().now_ms();
        self.node()
            .store()
            .sessions()
            .bench_sessions(&rows, now, now + 86_400_000)
            .await?;
        Ok(out)
    }

    /// Notifications waiting in the push queue.
    pub async fn push_queue_len(&self) -> Result<i64, veche_store::StoreError> {
        self.node().store().push().push_queue_len().await
    }

    /// Benchmarks only: writes `discussions` groups and `messages` messages by `user` straight
    /// into storage (see `Store::bench_fill`); the search indexer then takes them in.
    pub async fn bench_fill_messages(
        &self,
        user: &str,
        discussions: usize,
        messages: usize,
        member_every: usize,
        text: &(dyn Fn(usize) -> String + Sync),
    ) -> Result<(), veche_store::StoreError> {
        self.node()
            .store()
            .search()
            .bench_fill(
                &self.info().node_name,
                user,
                discussions,
                messages,
                member_every,
                text,
            )
            .await
    }

    /// Rebuilds the search index from the messages and waits until the new one is in place.
    pub async fn reindex_and_wait(&self) -> Result<(), crate::AdminError> {
        let search = self.node().search();
        let before = search.rebuilds();
        self.admin(AdminRequest::Reindex).await?;
        while search.rebuilds() == before {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Messages written that the search index has yet to take in.
    pub async fn search_backlog(&self) -> Result<i64, veche_store::StoreError> {
        self.node().store().search().search_backlog().await
    }

    /// Stops the node gracefully, keeping the data folder.
    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Stops the node and starts it again on the same data folder. The port may change.
    pub async fn restart(&mut self) -> Result<(), StartError> {
        self.stop().await;
        self.start().await
    }

    /// Starts a stopped node again on the address it had, as an administrator restarting a
    /// node does (clients keep their configured address).
    pub async fn start_again_at_same_address(
        &mut self,
        addr: SocketAddr,
    ) -> Result<(), StartError> {
        self.stop().await;
        self.config.server.listen = addr;
        self.start().await
    }

    /// Writes a blob through a storage-backend plugin, streaming `data` in chunks.
    pub async fn blob_put(&self, backend: &str, key: &str, data: &[u8]) -> anyhow::Result<u64> {
        let blobs = self.blobs(backend)?;
        blobs
            .put(key, data)
            .await
            .map(|b| b.size)
            .map_err(anyhow::Error::from)
    }

    /// Reads a whole blob through a storage-backend plugin.
    pub async fn blob_get(&self, backend: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        let blobs = self.blobs(backend)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let collect = async {
            let mut out = Vec::new();
            while let Some(chunk) = rx.recv().await {
                out.extend_from_slice(&chunk);
            }
            out
        };
        let (read, out) = tokio::join!(blobs.get(key, tx), collect);
        read?;
        Ok(out)
    }

    /// Keys and sizes of a storage backend's blobs under `prefix`.
    pub async fn blob_list(
        &self,
        backend: &str,
        prefix: &str,
    ) -> anyhow::Result<Vec<(String, u64)>> {
        let blobs = self.blobs(backend)?;
        let list = blobs.list(prefix, None, 1000).await?;
        Ok(list.into_iter().map(|b| (b.key, b.size)).collect())
    }

    /// A blob's size, if it exists.
    pub async fn blob_size(&self, backend: &str, key: &str) -> anyhow::Result<Option<u64>> {
        let stat = self.blobs(backend)?.stat(key).await?;
        Ok(stat.map(|b| b.size))
    }

    /// Deletes a blob; whether it existed.
    pub async fn blob_delete(&self, backend: &str, key: &str) -> anyhow::Result<bool> {
        self.blobs(backend)?
            .delete(key)
            .await
            .map_err(anyhow::Error::from)
    }

    fn blobs(&self, backend: &str) -> anyhow::Result<crate::plugins::storage::PluginBlobs> {
        self.node()
            .plugins()
            .storage_backend(backend)
            .ok_or_else(|| anyhow::anyhow!("no storage backend {backend}"))
    }

    /// What `user` may do in an object's discussion according to its context provider
    /// (through the node's cache): `none`, `read` or `write`; `None` if no provider serves
    /// the type.
    pub async fn object_access(
        &self,
        application: &str,
        object_type: &str,
        object_id: &str,
        user: &str,
    ) -> Option<&'static str> {
        let object = veche_protocol::discussions::ObjectRef {
            application: application.to_owned(),
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
        };
        self.node()
            .plugins()
            .object_access(&object, user)
            .await
            .map(|a| match a {
                crate::plugins::Access::None => "none",
                crate::plugins::Access::Read => "read",
                crate::plugins::Access::Write => "write",
            })
    }

    /// How many calls were made into the current version of plugin `id`.
    pub fn plugin_calls_started(&self, id: &str) -> u64 {
        self.node().plugins().calls_started(id)
    }

    /// The plugins' epoch ticker: its ticks so far, and whether it sleeps waiting for a call.
    pub fn plugin_epoch_ticker(&self) -> (u64, bool) {
        self.node().plugins().epoch_ticker()
    }

    /// How many calls into plugin `id` are running now.
    pub fn plugin_calls_in_flight(&self, id: &str) -> usize {
        self.node().plugins().calls_in_flight(id)
    }

    /// Sets `key` in plugin `id`'s key-value store, as the plugin itself would.
    pub async fn plugin_kv_set(
        &self,
        id: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), veche_store::StoreError> {
        self.node()
            .store()
            .plugins()
            .kv_set(id, key, value, u64::MAX)
            .await
            .map(drop)
    }

    /// Calls a bot's `on-event` once with an event of `kind` as its dispatcher would, without
    /// applying what it returns.
    pub async fn call_bot_event(&self, plugin: &str, kind: &str) -> anyhow::Result<usize> {
        self.node().plugins().call_bot_event(plugin, kind).await
    }

    /// Calls a bot's `on-message` `n` times in a row as its dispatcher would (on a pooled
    /// instance, on the plugin threads), without applying what it returns; the time it took.
    pub async fn time_bot_calls(
        &self,
        plugin: &str,
        discussion: &str,
        text: &str,
        n: u32,
    ) -> anyhow::Result<std::time::Duration> {
        let message = crate::plugins::BotMessage {
            id: format!("{}@bench", uuid::Uuid::now_v7().simple()),
            discussion: discussion.to_owned(),
            object: None,
            author: "bench@test.local".into(),
            text: text.to_owned(),
            mentions: Vec::new(),
            reply_to: None,
            sent_at: 0,
        };
        self.node()
            .plugins()
            .time_bot_calls(plugin, message, n)
            .await
    }
}

/// The workspace's plugins and test plugins, built once per process for wasm32-wasip2 (in
/// `target/plugins`); the folder holding the components.
pub fn built_plugins() -> anyhow::Result<&'static Path> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, std::sync::Arc<anyhow::Error>>> =
        std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let root = workspace_root()?;
        let target = root.join("target").join("plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(&root).args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ]);
        cmd.arg(&target);
        for (name, _) in PLUGIN_CRATES {
            cmd.args(["-p", name]);
        }
        let out = cmd
            .output()
            .map_err(|e| std::sync::Arc::new(anyhow::anyhow!("cannot run cargo: {e}")))?;
        if !out.status.success() {
            return Err(std::sync::Arc::new(anyhow::anyhow!(
                "building the plugins failed (is the wasm32-wasip2 target installed?):\n{}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(target.join("wasm32-wasip2").join("release"))
    });
    built
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
}

/// Plugin crates, with their folders.
const PLUGIN_CRATES: &[(&str, &str)] = &[
    ("invoice-context", "plugins/invoice-context"),
    ("approval-bot", "plugins/approval-bot"),
    ("fs-store", "plugins/fs-store"),
    ("hostile", "tests/plugins/hostile"),
    ("gated-context", "tests/plugins/gated-context"),
    ("echo-bot", "examples/echo-bot"),
    ("sneaky-fs", "tests/plugins/sneaky-fs"),
    ("future-api", "tests/plugins/future-api"),
];

fn workspace_root() -> Result<PathBuf, std::sync::Arc<anyhow::Error>> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| std::sync::Arc::new(anyhow::anyhow!("no workspace root")))
}

/// A temporary folder ready to install: the plugin's `plugin.toml` and its built component.
pub fn plugin_folder(name: &str) -> anyhow::Result<tempfile::TempDir> {
    let built = built_plugins()?;
    let (_, folder) = PLUGIN_CRATES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| anyhow::anyhow!("no plugin {name}"))?;
    let root = workspace_root().map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        root.join(folder).join("plugin.toml"),
        dir.path().join("plugin.toml"),
    )?;
    let wasm = format!("{}.wasm", name.replace('-', "_"));
    std::fs::copy(built.join(&wasm), dir.path().join(&wasm))?;
    Ok(dir)
}

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The recipients.
    pub to: Vec<String>,
    /// The message as sent (headers and body).
    pub data: String,
}

impl Mail {
    /// The eight-digit code in the message.
    pub fn code(&self) -> std::io::Result<String> {
        let digits: Vec<char> = self.data.chars().collect();
        for w in digits.windows(8) {
            if w.iter().all(char::is_ascii_digit) {
                return Ok(w.iter().collect());
            }
        }
        Err(std::io::Error::other(format!("no code in {:?}", self.data)))
    }
}

/// A minimal SMTP server on loopback for tests: speaks the protocol for real (no STARTTLS
/// offered), keeps what it is sent; returns its port and the messages.
pub async fn smtp_sink() -> std::io::Result<(u16, mpsc::UnboundedReceiver<Mail>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = smtp_session(stream, tx).await;
            });
        }
    });
    Ok((port, rx))
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Mail>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut to = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write
                .write_all(b"250-sink.test\r\n250 8BITMIME\r\n")
                .await?;
        } else if upper.starts_with("HELO") || upper.starts_with("MAIL FROM") {
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO") {
            to.push(
                line.get(8..)
                    .unwrap_or_default()
                    .trim()
                    .trim_matches(['<', '>'])
                    .to_owned(),
            );
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(&l);
                data.push('\n');
            }
            let _ = tx.send(Mail {
                to: std::mem::take(&mut to),
                data,
            });
            write.write_all(b"250 queued\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
    Ok(())
}
