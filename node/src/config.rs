//! The node's configuration: one typed struct, read from `config.toml` and overridden by
//! `VECHE__SECTION__KEY` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use veche_core::config::is_type_pattern;
pub use veche_core::config::{FilesConfig, MessagesConfig, PresenceConfig};
use veche_protocol::ids::NodeName;

/// The commented configuration file `veche serve` writes into a new data folder.
pub const TEMPLATE: &str = include_str!("config.template.toml");

/// Environment variables with this prefix override the file: `VECHE__SERVER__LISTEN`.
pub const ENV_PREFIX: &str = "VECHE__";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or an environment variable does not parse, or names an unknown key.
    #[error("{0}")]
    Parse(String),
    /// A value parses but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The offending key, `section.key`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[node]`
    pub node: NodeConfig,
    /// `[server]`
    pub server: ServerConfig,
    /// `[quic]`
    pub quic: QuicConfig,
    /// `[tls]`
    pub tls: TlsConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[messages]`
    pub messages: MessagesConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[plugins]`
    pub plugins: PluginsConfig,
    /// `[http]`
    pub http: HttpConfig,
    /// `[smtp]`
    pub smtp: SmtpConfig,
    /// `[apps]`
    pub apps: AppsConfig,
    /// `[presence]`
    pub presence: PresenceConfig,
    /// `[push]`
    pub push: PushConfig,
    /// `[files]`
    pub files: FilesConfig,
    /// `[federation]`
    pub federation: FederationConfig,
    /// `[metrics]`
    pub metrics: MetricsConfig,
}

/// `[federation]`: links with other Veche nodes (libp2p over TCP, Noise, Yamux).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Whether the node listens for and dials linked nodes. Without links, every connection is
    /// refused anyway.
    pub enabled: bool,
    /// Where to listen, as libp2p multiaddrs.
    pub listen: Vec<String>,
    /// The addresses written into this node's link offers and grants, which the other node
    /// dials. Empty: the addresses listened on, when they are specific (not 0.0.0.0).
    pub advertise: Vec<String>,
    /// How long a request to a linked node may take, in seconds.
    pub request_timeout_secs: u64,
    /// The longest pause before trying again a linked node that refused, in seconds (one that
    /// cannot be reached is probed at least every 5 s: `veche_federation::link::PROBE_MAX`).
    pub retry_max_secs: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec!["/ip4/0.0.0.0/tcp/7701".into()],
            advertise: Vec::new(),
            request_timeout_secs: 10,
            retry_max_secs: 300,
        }
    }
}

/// `[push]`: notifications for users who are not at a screen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Whether notifications are pushed at all.
    pub enabled: bool,
    /// Messages of one discussion within this window become one notification, in
    /// milliseconds.
    pub coalesce_ms: u64,
    /// The first retry delay of a failed push, in milliseconds; doubled on each further
    /// failure, up to ten minutes.
    pub retry_base_ms: u64,
    /// Attempts after which a notification is given up.
    pub attempts: u32,
    /// How long one push request may take, in seconds.
    pub timeout_secs: u64,
    /// Put the message's first 200 characters in the notification (Web Push payloads are
    /// encrypted to the browser; gateways see them).
    pub include_text: bool,
    /// The contact the VAPID signature names (`mailto:` or `https:`), shown to push
    /// services; empty means `mailto:postmaster@<node name>`.
    pub vapid_contact: String,
    /// Company push gateways devices may register with, by name: `{ mobile =
    /// "https://push.corp.example/notify" }`. Each receives signed JSON POSTs.
    pub gateways: std::collections::BTreeMap<String, String>,
    /// Whether Web Push endpoints on this machine's loopback addresses (also over plain
    /// HTTP) are accepted; for tests and development only.
    pub allow_loopback_endpoints: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            coalesce_ms: 2000,
            retry_base_ms: 1000,
            attempts: 8,
            timeout_secs: 10,
            include_text: true,
            vapid_contact: String::new(),
            gateways: std::collections::BTreeMap::new(),
            allow_loopback_endpoints: false,
        }
    }
}

/// `[http]`: the HTTP/WebSocket gateway for applications and clients that cannot speak QUIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the gateway runs.
    pub enabled: bool,
    /// The address it listens on. Without `tls`, keep it on loopback or a trusted network,
    /// or put a TLS-terminating reverse proxy in front.
    pub listen: SocketAddr,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Serve HTTPS with the node's certificate (the one QUIC uses) instead of plain HTTP.
    pub tls: bool,
    /// Reverse proxies whose `X-Forwarded-For` is believed: behind them, throttling counts
    /// the client's address rather than the proxy's.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8780)),
            max_body_bytes: 1024 * 1024,
            tls: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// STARTTLS when the relay offers it, plain otherwise (an internal relay).
    Opportunistic,
    /// STARTTLS or nothing is sent.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Never encrypt (a relay on this machine).
    None,
}

/// `[smtp]`: the relay that carries registration codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The relay's host name; empty means no mail can be sent (registration by code is
    /// refused with a message saying so).
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// How the connection is secured.
    pub security: SmtpSecurity,
    /// The sender address.
    pub from: String,
    /// Login for relays that require authentication.
    pub username: Option<String>,
    /// Password for relays that require authentication.
    pub password: Option<String>,
    /// How long one conversation with the relay may take, in seconds.
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 25,
            security: SmtpSecurity::Opportunistic,
            from: "veche@localhost".into(),
            username: None,
            password: None,
            timeout_secs: 20,
        }
    }
}

/// `[apps]`: business applications, their webhooks and topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppsConfig {
    /// E-mail domains (`corp.example`) from which an application may start its own
    /// registration; an administrator can always start one (`veche admin app register`).
    pub self_registration_domains: Vec<String>,
    /// How long a registration code stays valid, in seconds.
    pub code_ttl_secs: u64,
    /// Wrong codes tried before the registration's codes stop working.
    pub code_attempts: u32,
    /// Shortest interval between two codes sent for one application, in seconds.
    pub code_resend_secs: u64,
    /// The first retry delay of a failed webhook request, in milliseconds; doubled on each
    /// further failure, up to ten minutes.
    pub webhook_retry_base_ms: u64,
    /// Attempts after which a webhook request is given up and shown as failed.
    pub webhook_attempts: u32,
    /// How long one webhook request may take, in seconds.
    pub webhook_timeout_secs: u64,
    /// How long a pulled topic message stays leased before it is delivered again, by
    /// default, in seconds.
    pub topic_lease_secs: u64,
    /// Whether applications may have the node call webhook and push receivers on this
    /// machine's loopback addresses (link-local and metadata addresses are always refused).
    pub allow_loopback_receivers: bool,
}

impl Default for AppsConfig {
    fn default() -> Self {
        Self {
            self_registration_domains: Vec::new(),
            code_ttl_secs: 900,
            code_attempts: 5,
            code_resend_secs: 60,
            webhook_retry_base_ms: 1000,
            webhook_attempts: 12,
            webhook_timeout_secs: 10,
            topic_lease_secs: 30,
            allow_loopback_receivers: false,
        }
    }
}

/// `[plugins]`: the WASM plugin host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Dev mode: reload a plugin within a second when the folder it was installed from
    /// changes.
    pub dev_watch: bool,
    /// How long a context provider's authorize answer is reused, in milliseconds.
    pub authorize_cache_ms: u64,
    /// Failures (traps, timeouts, limits) within `breaker_window_secs` that pause a plugin.
    pub breaker_failures: u32,
    /// The window in which failures count.
    pub breaker_window_secs: u64,
    /// The first pause, in milliseconds; doubled after each failed probe, up to 15 minutes.
    pub breaker_pause_ms: u64,
    /// The share of one core each bot or storage backend may use, in percent; a plugin that
    /// used it up waits for the next second.
    pub cpu_share_percent: u32,
    /// The most CPU time a plugin may ask for per call (`limits.cpu-ms`), in milliseconds.
    pub max_cpu_ms: u32,
    /// The longest a plugin's call may take (`limits.call-timeout-ms`), in milliseconds.
    pub max_call_timeout_ms: u32,
    /// The most memory a plugin may ask for (`limits.memory`), in MiB.
    pub max_memory_mb: u32,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dev_watch: false,
            authorize_cache_ms: 5000,
            breaker_failures: 5,
            breaker_window_secs: 60,
            breaker_pause_ms: 30_000,
            cpu_share_percent: 25,
            max_cpu_ms: 2000,
            max_call_timeout_ms: 10_000,
            max_memory_mb: 128,
        }
    }
}

impl PluginsConfig {
    /// The limits a plugin asks for that are over this node's caps, each as
    /// `limits.KEY = asked (cap: [plugins] KEY = cap)`.
    pub(crate) fn over_caps(&self, cpu_ms: u32, call_timeout_ms: u32, memory: u64) -> Vec<String> {
        let mut over = Vec::new();
        if cpu_ms > self.max_cpu_ms {
            over.push(format!(
                "limits.cpu-ms = {cpu_ms} (cap: [plugins] max_cpu_ms = {})",
                self.max_cpu_ms
            ));
        }
        if call_timeout_ms > self.max_call_timeout_ms {
            over.push(format!(
                "limits.call-timeout-ms = {call_timeout_ms} (cap: [plugins] max_call_timeout_ms = {})",
                self.max_call_timeout_ms
            ));
        }
        if memory > u64::from(self.max_memory_mb) * 1024 * 1024 {
            over.push(format!(
                "limits.memory = {} MiB (cap: [plugins] max_memory_mb = {})",
                memory.div_ceil(1024 * 1024),
                self.max_memory_mb
            ));
        }
        over
    }
}

/// `[node]`: who this node is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The node's name, the part after `@` in user ids. Fixed at the first start: when absent,
    /// the name stored then (or, on the first start, this machine's host name) is used.
    pub name: Option<String>,
}

/// `[server]`: the client listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// UDP address for QUIC clients.
    pub listen: SocketAddr,
    /// Connections one IP address may hold at once.
    pub max_connections_per_ip: u32,
    /// Connections one IP address may hold before they authenticate.
    pub max_unauthenticated_per_ip: u32,
    /// Seconds a new connection has to say hello and authenticate.
    pub handshake_timeout_secs: u64,
    /// Largest frame accepted after authentication, in bytes.
    pub max_frame_bytes: usize,
    /// Requests one connection may have in flight.
    pub max_requests_in_flight: usize,
    /// Seconds shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
    /// Serve the local admin socket (`admin.sock` in the data folder).
    pub admin_socket: bool,
    /// Events queued per connection for a client that reads slowly; past this the node closes
    /// the connection (code 9) and the client resyncs from its cursors. At least one write
    /// batch (512 events), so that the burst after a group commit is not taken for slowness.
    pub event_buffer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            max_connections_per_ip: 50,
            max_unauthenticated_per_ip: 20,
            handshake_timeout_secs: 10,
            max_frame_bytes: veche_protocol::frame::DEFAULT_MAX_FRAME,
            max_requests_in_flight: 32,
            shutdown_grace_secs: 10,
            admin_socket: true,
            event_buffer: 4096,
        }
    }
}

/// `[quic]`: transport limits for client connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicConfig {
    /// Bidirectional streams a client may open at once.
    pub max_bidi_streams: u32,
    /// Unidirectional streams a client may open at once.
    pub max_uni_streams: u32,
    /// Bytes a client may send on one stream before the node reads them.
    pub stream_receive_window: u32,
    /// Bytes a client may send on all streams of a connection before the node reads them.
    pub receive_window: u32,
    /// Seconds of silence after which a connection is dropped.
    pub idle_timeout_secs: u64,
    /// Seconds between keep-alive packets.
    pub keep_alive_secs: u64,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            max_bidi_streams: 16,
            max_uni_streams: 4,
            stream_receive_window: 512 * 1024,
            receive_window: 2 * 1024 * 1024,
            idle_timeout_secs: 30,
            keep_alive_secs: 10,
        }
    }
}

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain to use instead of the generated one (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the generated certificate.
    pub hostnames: Vec<String>,
}

/// `[storage]`: where data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The data folder; `./veche-data` when absent. Only read from a file given with
    /// `--config` or from `VECHE__STORAGE__DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// The database: absent for SQLite in the data folder (the default), or a PostgreSQL URL,
    /// `postgres://user@host:5432/name`. Files, keys and the lock stay in the data folder.
    pub database: Option<String>,
}

impl StorageConfig {
    /// Checks `database`: a PostgreSQL URL with a host and a database name.
    fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.database else {
            return Ok(());
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("must be a PostgreSQL URL, postgres://user@host:5432/database")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.is_empty() || host.starts_with(':') {
            return Err("names no host: postgres://user@host:5432/database".into());
        }
        if let Some((_, port)) = host.rsplit_once(':')
            && !host.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(format!("has the port `{port}`, which is not a number"));
        }
        let name = path.split('?').next().unwrap_or("");
        if name.is_empty() {
            return Err("names no database: postgres://user@host:5432/database".into());
        }
        Ok(())
    }
}

/// `[auth]`: passwords, sessions and login throttling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Argon2id memory cost in KiB (at least 19456, OWASP's minimum).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (at least 2).
    pub argon2_iterations: u32,
    /// Shortest password accepted, in bytes.
    pub min_password_len: usize,
    /// Days a session lives without being used.
    pub session_idle_days: u32,
    /// Failed logins of one account within the window before each attempt is delayed.
    pub account_failures_before_delay: u32,
    /// Window for counting failed logins of one account, in seconds.
    pub account_failure_window_secs: u64,
    /// Longest delay imposed on one account, in seconds.
    pub max_account_delay_secs: u64,
    /// Failed logins one IP address may make per minute.
    pub ip_failures_per_minute: u32,
    /// Hours the first-start setup token stays valid.
    pub setup_token_ttl_hours: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            min_password_len: 8,
            session_idle_days: 30,
            account_failures_before_delay: 5,
            account_failure_window_secs: 15 * 60,
            max_account_delay_secs: 15 * 60,
            ip_failures_per_minute: 30,
            setup_token_ttl_hours: 24,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `veche_node=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads `file` (if it exists) and then the `VECHE__` environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::extract(figment)
    }

    /// Parses a configuration from TOML text alone (no environment).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Parse(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        if let Some(name) = &self.node.name {
            name.parse::<NodeName>()
                .map_err(|e| invalid("node.name", e.to_string()))?;
        }
        self.storage
            .validate()
            .map_err(|e| invalid("storage.database", e))?;
        // The plugin host's own bounds (plugins/manifest.rs) are the caps' upper ends.
        if !(1..=10_000).contains(&self.plugins.max_cpu_ms) {
            return Err(invalid("plugins.max_cpu_ms", "must be 1..=10000"));
        }
        if !(1..=60_000).contains(&self.plugins.max_call_timeout_ms) {
            return Err(invalid("plugins.max_call_timeout_ms", "must be 1..=60000"));
        }
        if !(1..=128).contains(&self.plugins.max_memory_mb) {
            return Err(invalid("plugins.max_memory_mb", "must be 1..=128"));
        }
        let s = &self.server;
        if s.max_connections_per_ip == 0 {
            return Err(invalid(
                "server.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if s.max_unauthenticated_per_ip == 0
            || s.max_unauthenticated_per_ip > s.max_connections_per_ip
        {
            return Err(invalid(
                "server.max_unauthenticated_per_ip",
                "must be between 1 and server.max_connections_per_ip",
            ));
        }
        if s.handshake_timeout_secs == 0 {
            return Err(invalid(
                "server.handshake_timeout_secs",
                "must be at least 1",
            ));
        }
        if !(veche_protocol::frame::MAX_UNAUTHENTICATED_FRAME..=16 * 1024 * 1024)
            .contains(&s.max_frame_bytes)
        {
            return Err(invalid(
                "server.max_frame_bytes",
                "must be between 65536 and 16777216",
            ));
        }
        if !(512..=1_048_576).contains(&s.event_buffer) {
            return Err(invalid(
                "server.event_buffer",
                "must be between 512 and 1048576",
            ));
        }
        if s.max_requests_in_flight == 0 {
            return Err(invalid(
                "server.max_requests_in_flight",
                "must be at least 1",
            ));
        }
        let q = &self.quic;
        if q.max_bidi_streams == 0 {
            return Err(invalid("quic.max_bidi_streams", "must be at least 1"));
        }
        if q.stream_receive_window < 16 * 1024 {
            return Err(invalid(
                "quic.stream_receive_window",
                "must be at least 16384",
            ));
        }
        if q.receive_window < q.stream_receive_window {
            return Err(invalid(
                "quic.receive_window",
                "must be at least quic.stream_receive_window",
            ));
        }
        if q.idle_timeout_secs == 0 || q.keep_alive_secs >= q.idle_timeout_secs {
            return Err(invalid(
                "quic.keep_alive_secs",
                "must be shorter than quic.idle_timeout_secs, which must be at least 1",
            ));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                return Err(invalid("tls.key_file", "is required with tls.cert_file"));
            }
            (None, Some(_)) => {
                return Err(invalid("tls.cert_file", "is required with tls.key_file"));
            }
            _ => {}
        }
        let a = &self.auth;
        if a.argon2_memory_kib < 19 * 1024 {
            return Err(invalid(
                "auth.argon2_memory_kib",
                "must be at least 19456 (OWASP minimum)",
            ));
        }
        if a.argon2_iterations < 2 {
            return Err(invalid(
                "auth.argon2_iterations",
                "must be at least 2 (OWASP minimum)",
            ));
        }
        if !(8..=1024).contains(&a.min_password_len) {
            return Err(invalid(
                "auth.min_password_len",
                "must be between 8 and 1024",
            ));
        }
        if a.session_idle_days == 0 {
            return Err(invalid("auth.session_idle_days", "must be at least 1"));
        }
        if a.account_failures_before_delay == 0 {
            return Err(invalid(
                "auth.account_failures_before_delay",
                "must be at least 1",
            ));
        }
        if a.ip_failures_per_minute == 0 {
            return Err(invalid("auth.ip_failures_per_minute", "must be at least 1"));
        }
        if a.setup_token_ttl_hours == 0 {
            return Err(invalid("auth.setup_token_ttl_hours", "must be at least 1"));
        }
        if !(1..=512 * 1024).contains(&self.messages.max_text_bytes) {
            return Err(invalid(
                "messages.max_text_bytes",
                "must be between 1 and 524288",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        let a = &self.apps;
        for (key, value) in [
            ("apps.code_ttl_secs", a.code_ttl_secs),
            ("apps.webhook_timeout_secs", a.webhook_timeout_secs),
            ("apps.webhook_retry_base_ms", a.webhook_retry_base_ms),
            ("apps.topic_lease_secs", a.topic_lease_secs),
            ("smtp.timeout_secs", self.smtp.timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if a.code_attempts == 0 || a.webhook_attempts == 0 {
            return Err(invalid(
                if a.code_attempts == 0 {
                    "apps.code_attempts"
                } else {
                    "apps.webhook_attempts"
                },
                "must be at least 1",
            ));
        }
        let p = &self.presence;
        for (key, value) in [
            ("presence.idle_away_secs", p.idle_away_secs),
            ("presence.coalesce_ms", p.coalesce_ms),
            ("presence.typing_ttl_ms", p.typing_ttl_ms),
            ("push.retry_base_ms", self.push.retry_base_ms),
            ("push.timeout_secs", self.push.timeout_secs),
            ("push.attempts", u64::from(self.push.attempts)),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let f = &self.files;
        for kind in &f.discussion_kinds {
            if veche_protocol::discussions::DiscussionKind::parse(kind).is_none() {
                return Err(invalid(
                    "files.discussion_kinds",
                    format!("{kind:?} is not a discussion kind (dialog, group, object)"),
                ));
            }
        }
        for (key, list) in [
            ("files.allowed_types", &f.allowed_types),
            ("files.blocked_types", &f.blocked_types),
        ] {
            if let Some(bad) = list.iter().find(|t| !is_type_pattern(t)) {
                return Err(invalid(
                    key,
                    format!("{bad:?} is not a media type such as image/png or image/*"),
                ));
            }
        }
        if f.backend != "fs" && f.backend.strip_prefix("plugin:").is_none_or(str::is_empty) {
            return Err(invalid(
                "files.backend",
                format!("{:?} is neither \"fs\" nor \"plugin:<id>\"", f.backend),
            ));
        }
        for (key, value) in [
            ("files.max_size_mb", f.max_size_mb),
            ("files.upload_expiry_hours", f.upload_expiry_hours),
            ("files.unattached_hours", f.unattached_hours),
            ("files.thumbnail_size", u64::from(f.thumbnail_size)),
            ("files.max_image_pixels", f.max_image_pixels),
            ("files.confirm_every_kb", f.confirm_every_kb),
            ("files.cleanup_secs", f.cleanup_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if f.max_size_mb > 1024 * 1024 {
            return Err(invalid(
                "files.max_size_mb",
                "must be at most 1048576 (1 TiB)",
            ));
        }
        let fed = &self.federation;
        for (key, list) in [
            ("federation.listen", &fed.listen),
            ("federation.advertise", &fed.advertise),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|a| a.parse::<veche_federation::Multiaddr>().is_err())
            {
                return Err(invalid(
                    key,
                    format!("{bad:?} is not a multiaddr such as /ip4/0.0.0.0/tcp/7701"),
                ));
            }
        }
        for (key, value) in [
            ("federation.request_timeout_secs", fed.request_timeout_secs),
            ("federation.retry_max_secs", fed.retry_max_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (name, url) in &self.push.gateways {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok || name.is_empty() {
                return Err(invalid(
                    "push.gateways",
                    format!("{name:?} = {url:?} is not a name with an http(s) URL"),
                ));
            }
        }
        let contact = &self.push.vapid_contact;
        let contact_ok =
            contact.is_empty() || contact.starts_with("mailto:") || contact.starts_with("https:");
        if !contact_ok {
            return Err(invalid(
                "push.vapid_contact",
                "must start with mailto: or https:",
            ));
        }
        self.metrics.validate(&self.http)?;
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if !self.smtp.host.is_empty() && self.smtp.from.parse::<lettre::Address>().is_err() {
            return Err(invalid(
                "smtp.from",
                format!("{:?} is not an e-mail address", self.smtp.from),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `veche config check`; secrets (the SMTP
    /// password, a password in the database URL) are shown as `<redacted>`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.smtp.password.is_some() {
            shown.smtp.password = Some("<redacted>".into());
        }
        if let Some(url) = &mut shown.storage.database
            && let Some((scheme, rest)) = url.split_once("://")
            && let Some((user_info, host)) = rest.split_once('@')
            && let Some((user, _password)) = user_info.split_once(':')
        {
            *url = format!("{scheme}://{user}:<redacted>@{host}");
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}

mod metrics;
pub use metrics::MetricsConfig;

#[cfg(test)]
mod tests;
