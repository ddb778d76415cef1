//! The `veche` command line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use veche_protocol::admin::{AdminReply, AdminRequest};
use veche_protocol::{SessionInfo, UserInfo};

use crate::config::Config;
use crate::data_dir::{DataDir, LockError};
use crate::node::{self, RunningNode, StartError, StartInfo};
use crate::{logging, services};

/// Veche: a self-hosted messaging node for companies that run on business software, and its
/// client.
#[derive(Debug, Parser)]
#[command(
    name = "veche",
    version,
    about = "Veche: the messaging node (serve, admin, config) and its client (login, chat, send, tail, history)"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node (creates ./veche-data on the first start).
    Serve(Location),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Administration: through the running node's admin socket, or on the data folder while
    /// the node is stopped.
    Admin {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// WASM plugins: install, list, enable, disable, reload, logs, dead letters.
    Plugin {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Discussions across linked nodes.
    Discussion {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        command: DiscussionCommand,
    },
    /// Links with other Veche nodes: offer, inspect, accept, confirm, list, revoke.
    Link {
        #[command(flatten)]
        location: Location,
        #[command(subcommand)]
        command: LinkCommand,
    },
    #[command(flatten)]
    Client(veche_chat::cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum DiscussionCommand {
    /// Share a group this node is home of with a linked node: its members there take part.
    Share {
        /// The group's id.
        discussion: String,
        /// The link's id (`veche link list`).
        #[arg(long)]
        link: String,
    },
}

/// Linking two nodes takes both administrators: A runs `offer` and sends the text to B; B runs
/// `inspect` and `accept` and sends the grant back; A runs `confirm`. Both compare the
/// fingerprints by phone.
#[derive(Debug, Subcommand)]
enum LinkCommand {
    /// Make a signed offer to link with another node, or to renew a link (`--renews`).
    Offer {
        /// `branch` (the same company) or `partner` (the default; a renewal keeps the link's).
        #[arg(long)]
        relationship: Option<String>,
        /// How many days the link is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Allow sharing object discussions (invoices, customers), not only dialogs and groups
        /// (`--object-discussions false` to leave it out of a renewal).
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        object_discussions: Option<bool>,
        /// Whose profiles the other node may look up: none, members (the default) or full.
        #[arg(long)]
        directory: Option<String>,
        /// Let presence travel (`--presence false` to leave it out of a renewal).
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        presence: Option<bool>,
        /// Let files travel, up to this many MiB (0, the default: no files).
        #[arg(long)]
        max_file_mb: Option<u64>,
        /// This organisation, as the other side knows it.
        #[arg(long, default_value = "")]
        organisation: String,
        /// Whom the other administrator calls about the link.
        #[arg(long, default_value = "")]
        contact: String,
        /// Write the offer to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Renew this active link: the same link for the days given here, with its scope in
        /// force changed by the scope options given, in force once the other side has
        /// accepted and this side confirmed (narrowing alone is `veche link narrow`).
        #[arg(long, value_name = "LINK")]
        renews: Option<String>,
    },
    /// Show what an offer or grant in FILE says, with its fingerprint (no node needed).
    Inspect {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
    /// Accept the offer in FILE: the link is active here at once; send the grant back.
    Accept {
        /// The offer (`-` for standard input).
        file: PathBuf,
        /// This organisation, as the other side knows it.
        #[arg(long, default_value = "")]
        organisation: String,
        /// Whom the other administrator calls about the link.
        #[arg(long, default_value = "")]
        contact: String,
        /// Write the grant to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Activate a link this node offered, from the grant in FILE.
    Confirm {
        /// The grant (`-` for standard input).
        file: PathBuf,
    },
    /// List offers and links.
    List,
    /// Narrow what a link carries, now; the other node is told (widening takes a new offer).
    Narrow {
        /// The link's id.
        link: String,
        /// Stop sharing object discussions.
        #[arg(long)]
        no_object_discussions: bool,
        /// Whose profiles the other node may look up: none or members.
        #[arg(long)]
        directory: Option<String>,
        /// Stop presence.
        #[arg(long)]
        no_presence: bool,
        /// The largest file in MiB (0: no files).
        #[arg(long)]
        max_file_mb: Option<u64>,
    },
    /// End a link now; the other node is told and stops trying.
    Revoke {
        /// The link's id.
        link: String,
        /// Why, for the other administrator.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Make a plugin crate to start from, in the folder NAME: plugin.toml, code, a test and
    /// a README; `cargo build` there builds the component, which a node in dev mode reloads.
    New {
        /// The plugin's id and crate name (a-z, 0-9, '-').
        name: String,
        /// What it does.
        #[arg(long, value_enum)]
        role: crate::plugin_new::Role,
        /// A Veche checkout, or its plugin-api folder, to build against [default: the
        /// checkout around the current folder, else the one this veche was built from].
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
        /// Where to make the folder NAME [default: the current folder].
        #[arg(long, value_name = "FOLDER")]
        dir: Option<PathBuf>,
    },
    /// Install or upgrade the plugin in FOLDER (plugin.toml and its component).
    Install {
        /// The folder, on the node's machine.
        folder: PathBuf,
        /// Grant a right the plugin asks for: kv, messaging, filesystem (repeatable).
        #[arg(long = "grant", value_name = "RIGHT")]
        grants: Vec<String>,
        /// Set a configuration value, KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// List installed plugins with their status.
    List,
    /// Enable a plugin.
    Enable {
        /// Plugin id.
        id: String,
    },
    /// Disable a plugin (its bot's inbox waits).
    Disable {
        /// Plugin id.
        id: String,
    },
    /// Reinstall a plugin from the folder it was installed from.
    Reload {
        /// Plugin id.
        id: String,
    },
    /// Uninstall a plugin. Its key-value entries, its folder (storage backends) and its log
    /// stay for a reinstall unless --purge; its bot user and the bot's messages stay as
    /// history; what its bot had not been told yet is dropped.
    Uninstall {
        /// Plugin id.
        id: String,
        /// Also remove what it stored (also after an earlier uninstall).
        #[arg(long)]
        purge: bool,
    },
    /// Show a plugin's newest log lines.
    Logs {
        /// Plugin id.
        id: String,
        /// How many lines.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show a bot's dead letters, or put them back in its inbox.
    DeadLetters {
        /// Plugin id.
        id: String,
        /// Replay this dead letter.
        #[arg(long, conflicts_with = "replay_all")]
        replay: Option<i64>,
        /// Replay all of them.
        #[arg(long)]
        replay_all: bool,
    },
}

/// Where the data folder and configuration are.
#[derive(Debug, Args, Clone, Default)]
pub struct Location {
    /// The data folder [default: ./veche-data, or storage.data_dir from --config].
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// The configuration file [default: config.toml in the data folder].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum FilesCommand {
    /// Show where new contents go and how much each backend keeps.
    Status,
    /// Send new contents to BACKEND and move the existing ones there while the node serves
    /// them; the choice is kept across restarts.
    Migrate {
        /// `fs` or `plugin:<id>`.
        #[arg(long)]
        to: String,
    },
    /// Remove expired uploads and unused files and contents now.
    Cleanup,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values.
    Check(Location),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Users and their sessions.
    #[command(subcommand)]
    User(UserCommand),
    /// Show the newest records of the audit log.
    Audit {
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Post a business event as an application would (bots subscribed to its kind get it).
    Event {
        /// The application posting it.
        #[arg(long)]
        source: String,
        /// The kind, e.g. invoice.posted.
        #[arg(long)]
        kind: String,
        /// The object, APPLICATION/TYPE/ID.
        #[arg(long)]
        object: Option<String>,
        /// The payload, JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// The application's id of the event (posting it again does nothing).
        #[arg(long)]
        key: String,
    },
    /// Rebuild the search index from the messages (search keeps answering meanwhile; offline,
    /// the next start builds it).
    Reindex,
    /// Files: where contents are kept, migration between backends, clean-up.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Business applications.
    #[command(subcommand)]
    App(AppCommand),
    /// Outgoing webhooks.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Start a registration: a one-time code is e-mailed; the application activates with it.
    Register {
        /// The application's name (a-z, 0-9, '.', '_', '-').
        name: String,
        /// Where the code goes.
        #[arg(long)]
        email: String,
    },
    /// List applications, with refused copies of their databases.
    List,
    /// Revoke an application's credentials.
    Revoke {
        /// The application's name.
        name: String,
    },
    /// Allow an application to embed the object-discussion widget in pages of these web
    /// origins (replacing the ones allowed before).
    AllowEmbed {
        /// The application's name.
        name: String,
        /// A web origin such as https://erp.corp.example; repeat for several.
        #[arg(long = "origin", required = true)]
        origins: Vec<String>,
    },
    /// Disallow an application to embed the widget; its widgets' sessions end.
    DenyEmbed {
        /// The application's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Send business events of these kinds to a URL.
    Add {
        /// The receiver.
        url: String,
        /// An event kind, or '*'; repeat for several.
        #[arg(long = "kind", required = true)]
        kinds: Vec<String>,
        /// hmac-sha256 or ed25519.
        #[arg(long, default_value = "hmac-sha256")]
        signing: String,
    },
    /// List webhooks with delivered, pending and failed requests.
    List,
    /// Remove a webhook.
    Remove {
        /// Its id.
        id: String,
    },
    /// Queue a webhook's failed requests again.
    Retry {
        /// Its id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct PasswordSource {
    /// Read the password from this file ('-' for standard input); the first line is used.
    #[arg(long, conflicts_with = "random_password")]
    password_file: Option<PathBuf>,
    /// Generate a random password and print it.
    #[arg(long)]
    random_password: bool,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user.
    Add {
        /// Login: a-z, 0-9, '.', '_', '-'.
        login: String,
        /// Display name [default: the login].
        #[arg(long, default_value = "")]
        name: String,
        /// E-mail address.
        #[arg(long, default_value = "")]
        email: String,
        /// Department (the directory finds people by it).
        #[arg(long, default_value = "")]
        department: String,
        /// Make the user a node administrator.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List users.
    List,
    /// Lock a user: they cannot log in and their connections close.
    Lock {
        /// Login.
        login: String,
    },
    /// Unlock a user.
    Unlock {
        /// Login.
        login: String,
    },
    /// Set a user's password; their sessions end.
    Passwd {
        /// Login.
        login: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List a user's sessions.
    Sessions {
        /// Login.
        login: String,
    },
    /// Revoke a user's sessions (all, or one with --session); their connections close.
    Revoke {
        /// Login.
        login: String,
        /// Only this session.
        #[arg(long)]
        session: Option<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Everything printed may hold what a user, a plugin or another node wrote: it reaches the
    // terminal with its control characters shown, never obeyed.
    let mut stdout = veche_chat::untrusted::VisibleWriter::new(std::io::stdout());
    let result = runtime.block_on(run(cli, &mut stdout));
    let _ = std::io::Write::flush(&mut stdout);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error may carry a node's or a peer's words: show their control characters.
            let message = format!("{e:#}");
            let code = veche_chat::cli::exit_code(&e);
            if code == veche_chat::cli::EXIT_QUEUED {
                // Not an error: the message waits in the outbox; scripts tell by the code.
                eprintln!("{}", veche_chat::untrusted::visible(&message));
            } else {
                eprintln!("error: {}", veche_chat::untrusted::visible(&message));
            }
            ExitCode::from(code)
        }
    }
}

/// Runs one command, printing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(location) => serve(location, out).await,
        Command::Config(ConfigCommand::Check(location)) => {
            let (data, config) = resolve(&location)?;
            writeln!(
                out,
                "# configuration is valid; data folder: {}",
                data.display()
            )?;
            write!(out, "{}", config.to_toml())?;
            Ok(())
        }
        Command::Admin { location, command } => admin_command(&location, command, out).await,
        Command::Plugin { location, command } => plugin_command(&location, command, out).await,
        Command::Link { location, command } => link_command(&location, command, out).await,
        Command::Discussion {
            location,
            command: DiscussionCommand::Share { discussion, link },
        } => {
            let (data_path, config) = resolve(&location)?;
            let request = AdminRequest::DiscussionShare { discussion, link };
            let reply = send_admin(&data_path, config, request).await?;
            Ok(print_admin_reply(&reply, out)?)
        }
        Command::Client(command) => veche_chat::cli::run(command, out).await,
    }
}

/// Finds the data folder and loads the configuration.
pub fn resolve(location: &Location) -> anyhow::Result<(PathBuf, Config)> {
    let env_data = std::env::var_os("VECHE__STORAGE__DATA_DIR").map(PathBuf::from);
    let file = match &location.config {
        Some(path) => Some(path.clone()),
        None => {
            let data = location
                .data
                .clone()
                .or(env_data.clone())
                .unwrap_or_else(default_data);
            let path = data.join("config.toml");
            path.exists().then_some(path)
        }
    };
    let config = Config::load(file.as_deref()).with_context(|| match &file {
        Some(f) => format!(
            "invalid configuration (file {}, then VECHE__ variables)",
            f.display()
        ),
        None => "invalid configuration (VECHE__ variables)".to_owned(),
    })?;
    let data = location
        .data
        .clone()
        .or(config.storage.data_dir.clone())
        .unwrap_or_else(default_data);
    Ok((data, config))
}

fn default_data() -> PathBuf {
    PathBuf::from("veche-data")
}

async fn serve(location: Location, out: &mut dyn Write) -> anyhow::Result<()> {
    // The template is written before the configuration is read, so a first start with no
    // arguments leaves a commented config.toml behind.
    let probe_data = match &location.config {
        Some(_) => None,
        None => Some(
            location
                .data
                .clone()
                .or(std::env::var_os("VECHE__STORAGE__DATA_DIR").map(PathBuf::from))
                .unwrap_or_else(default_data),
        ),
    };
    if let Some(dir) = &probe_data {
        let data =
            DataDir::create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        data.write_config_template()
            .with_context(|| format!("cannot write {}", data.config_path().display()))?;
    }
    let (data_path, config) = resolve(&location)?;
    logging::init(&config.log);
    let data = DataDir::create(&data_path)
        .with_context(|| format!("cannot create {}", data_path.display()))?;
    let node = RunningNode::start(config, data).await?;
    print_banner(node.info(), out)?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

fn print_banner(info: &StartInfo, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "Veche node {} is running.", info.node_name)?;
    writeln!(out, "  QUIC (ALPN veche/1): {}", info.quic_addr)?;
    if let Some(http) = info.http_addr {
        let scheme = if info.http_tls { "https" } else { "http" };
        writeln!(
            out,
            "  HTTP gateway:        {scheme}://{http} (OpenAPI: /api/v1/openapi.json)"
        )?;
    }
    if let Some(metrics) = info.metrics_addr {
        writeln!(
            out,
            "  metrics and health:  http://{metrics}/metrics, /health/ready"
        )?;
    }
    writeln!(out, "  data folder:         {}", info.data_dir.display())?;
    if let (Some(ca), Some(fp)) = (&info.ca_path, &info.ca_fingerprint) {
        writeln!(out, "  CA certificate:      {}", ca.display())?;
        writeln!(out, "  CA SHA-256:          {fp}")?;
    }
    writeln!(out, "  server cert SHA-256: {}", info.cert_fingerprint)?;
    writeln!(out, "  node key (ed25519):  {}", info.identity)?;
    if let Some(socket) = &info.admin_socket {
        writeln!(out, "  admin socket:        {}", socket.display())?;
    }
    if let (Some(token), Some(expires)) = (&info.setup_token, info.setup_token_expires) {
        writeln!(out)?;
        writeln!(
            out,
            "No users yet. Create the first administrator with this one-time setup token"
        )?;
        writeln!(
            out,
            "(valid until {expires}, also saved in the data folder as setup-token):"
        )?;
        writeln!(out, "  {token}")?;
        writeln!(
            out,
            "or from a shell: veche admin user add <login> --admin --random-password"
        )?;
    }
    out.flush()
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn read_password(source: &PasswordSource, out: &mut dyn Write) -> anyhow::Result<String> {
    if source.random_password {
        let password = random_password();
        writeln!(out, "generated password: {password}")?;
        return Ok(password);
    }
    let Some(path) = &source.password_file else {
        bail!("give --password-file FILE (or - for standard input) or --random-password");
    };
    let mut line = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        std::io::BufReader::new(file)
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

async fn admin_command(
    location: &Location,
    command: AdminCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let command = match command {
        AdminCommand::User(command) => command,
        AdminCommand::Reindex => {
            let (data_path, config) = resolve(location)?;
            let reply = send_admin(&data_path, config, AdminRequest::Reindex).await?;
            return Ok(print_admin_reply(&reply, out)?);
        }
        AdminCommand::Files(command) => {
            let request = match command {
                FilesCommand::Status => AdminRequest::FilesStatus,
                FilesCommand::Migrate { to } => AdminRequest::FilesMigrate { to },
                FilesCommand::Cleanup => AdminRequest::FilesCleanup,
            };
            let (data_path, config) = resolve(location)?;
            let reply = send_admin(&data_path, config, request).await?;
            return Ok(print_admin_reply(&reply, out)?);
        }
        AdminCommand::App(command) => {
            let request = match command {
                AppCommand::Register { name, email } => AdminRequest::AppRegister { name, email },
                AppCommand::List => AdminRequest::AppList,
                AppCommand::Revoke { name } => AdminRequest::AppRevoke { name },
                AppCommand::AllowEmbed { name, origins } => {
                    AdminRequest::AppEmbed { name, origins }
                }
                AppCommand::DenyEmbed { name } => AdminRequest::AppEmbed {
                    name,
                    origins: Vec::new(),
                },
            };
            let (data_path, config) = resolve(location)?;
            let reply = send_admin(&data_path, config, request).await?;
            return Ok(print_admin_reply(&reply, out)?);
        }
        AdminCommand::Webhook(command) => {
            let request = match command {
                WebhookCommand::Add {
                    url,
                    kinds,
                    signing,
                } => AdminRequest::WebhookAdd {
                    url,
                    kinds,
                    signing,
                },
                WebhookCommand::List => AdminRequest::WebhookList,
                WebhookCommand::Remove { id } => AdminRequest::WebhookRemove { id },
                WebhookCommand::Retry { id } => AdminRequest::WebhookRetry { id },
            };
            let (data_path, config) = resolve(location)?;
            let reply = send_admin(&data_path, config, request).await?;
            return Ok(print_admin_reply(&reply, out)?);
        }
        AdminCommand::Audit { limit } => {
            let (data_path, config) = resolve(location)?;
            let reply = send_admin(&data_path, config, AdminRequest::AuditLog { limit }).await?;
            return Ok(print_admin_reply(&reply, out)?);
        }
        AdminCommand::Event {
            source,
            kind,
            object,
            payload,
            key,
        } => {
            let object = object
                .map(|o| {
                    let mut parts = o.splitn(3, '/');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(t), Some(i))
                            if !a.is_empty() && !t.is_empty() && !i.is_empty() =>
                        {
                            Ok(veche_protocol::discussions::ObjectRef {
                                application: a.to_owned(),
                                object_type: t.to_owned(),
                                object_id: i.to_owned(),
                            })
                        }
                        _ => bail!("--object is APPLICATION/TYPE/ID"),
                    }
                })
                .transpose()?;
            let request = AdminRequest::EventPost {
                source,
                kind,
                object,
                payload,
                idempotency_key: key,
            };
            let (data_path, config) = resolve(location)?;
            let reply = send_admin(&data_path, config, request).await?;
            return Ok(print_admin_reply(&reply, out)?);
        }
    };
    let request = match command {
        UserCommand::Add {
            login,
            name,
            email,
            department,
            admin,
            password,
        } => AdminRequest::UserAdd {
            password: read_password(&password, out)?,
            login,
            display_name: name,
            email,
            admin,
            department,
        },
        UserCommand::List => AdminRequest::UserList,
        UserCommand::Lock { login } => AdminRequest::UserLock { login },
        UserCommand::Unlock { login } => AdminRequest::UserUnlock { login },
        UserCommand::Passwd { login, password } => AdminRequest::UserPasswd {
            password: read_password(&password, out)?,
            login,
        },
        UserCommand::Sessions { login } => AdminRequest::Sessions { login },
        UserCommand::Revoke { login, session } => AdminRequest::Revoke {
            login,
            session_id: session,
        },
    };
    let (data_path, config) = resolve(location)?;
    let reply = send_admin(&data_path, config, request).await?;
    print_admin_reply(&reply, out)?;
    Ok(())
}

async fn plugin_command(
    location: &Location,
    command: PluginCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let request = match command {
        PluginCommand::New {
            name,
            role,
            sdk,
            dir,
        } => {
            let parent = match dir {
                Some(d) => d,
                None => std::env::current_dir()?,
            };
            let made = crate::plugin_new::create(&name, role, &parent, sdk.as_deref())?;
            writeln!(
                out,
                "made {} (SDK: {})\nbuild: cd {} && cargo build\ntest: cargo test-native\n\
                 try: veche plugin install {}{} on a node with [plugins] dev_watch = true; each \
                 cargo build then reloads {}",
                made.folder.display(),
                made.sdk.display(),
                made.folder.display(),
                made.folder.display(),
                if role == crate::plugin_new::Role::Storage {
                    " --grant filesystem"
                } else {
                    ""
                },
                made.component,
            )?;
            return Ok(());
        }
        PluginCommand::Install {
            folder,
            grants,
            settings,
        } => {
            // Not `config`: clap would take it for the global `--config` and panic.
            let config = settings
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                    _ => bail!("--set takes KEY=VALUE, not {kv:?}"),
                })
                .collect::<anyhow::Result<_>>()?;
            let folder = std::path::absolute(&folder)
                .with_context(|| format!("bad folder {}", folder.display()))?;
            AdminRequest::PluginInstall {
                path: folder.display().to_string(),
                grants,
                config,
            }
        }
        PluginCommand::List => AdminRequest::PluginList,
        PluginCommand::Enable { id } => AdminRequest::PluginEnable { id },
        PluginCommand::Disable { id } => AdminRequest::PluginDisable { id },
        PluginCommand::Reload { id } => AdminRequest::PluginReload { id },
        PluginCommand::Uninstall { id, purge } => AdminRequest::PluginUninstall { id, purge },
        PluginCommand::Logs { id, limit } => AdminRequest::PluginLogs { id, limit },
        PluginCommand::DeadLetters {
            id,
            replay,
            replay_all,
        } => {
            if replay.is_some() || replay_all {
                AdminRequest::PluginReplay { id, item: replay }
            } else {
                AdminRequest::PluginDeadLetters { id }
            }
        }
    };
    let (data_path, config) = resolve(location)?;
    let reply = send_admin(&data_path, config, request).await?;
    print_admin_reply(&reply, out)?;
    Ok(())
}

fn read_text(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

fn write_text(text: &str, to: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    match to {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => writeln!(out, "{text}")?,
    }
    Ok(())
}

async fn link_command(
    location: &Location,
    command: LinkCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut save = None;
    let request = match command {
        LinkCommand::Offer {
            relationship,
            days,
            object_discussions,
            directory,
            presence,
            max_file_mb,
            organisation,
            contact,
            out: to,
            renews,
        } => {
            save = to;
            // A renewal starts from the scope in force; a new link from nothing.
            let current = match &renews {
                Some(link) => {
                    let (data_path, config) = resolve(location)?;
                    match send_admin(&data_path, config, AdminRequest::LinkList).await? {
                        AdminReply::Links { links } => {
                            links
                                .into_iter()
                                .find(|l| {
                                    l.link == *link
                                        && matches!(l.state.as_str(), "active" | "pending")
                                })
                                .with_context(|| format!("no active link {link}"))?
                                .scope
                        }
                        other => bail!("unexpected answer {other:?}"),
                    }
                }
                None => veche_protocol::admin::LinkScope {
                    object_discussions: false,
                    directory: "members".into(),
                    presence: false,
                    max_file_mb: 0,
                },
            };
            AdminRequest::LinkOffer {
                relationship: relationship.unwrap_or_default(),
                days,
                scope: veche_protocol::admin::LinkScope {
                    object_discussions: object_discussions.unwrap_or(current.object_discussions),
                    directory: directory.unwrap_or(current.directory),
                    presence: presence.unwrap_or(current.presence),
                    max_file_mb: max_file_mb.unwrap_or(current.max_file_mb),
                },
                organisation,
                contact,
                renews,
            }
        }
        LinkCommand::Inspect { file } => {
            return inspect_link(&read_text(&file)?, out);
        }
        LinkCommand::Accept {
            file,
            organisation,
            contact,
            out: to,
        } => {
            save = to;
            AdminRequest::LinkAccept {
                offer: read_text(&file)?,
                organisation,
                contact,
            }
        }
        LinkCommand::Confirm { file } => AdminRequest::LinkConfirm {
            grant: read_text(&file)?,
        },
        LinkCommand::List => AdminRequest::LinkList,
        LinkCommand::Revoke { link, reason } => AdminRequest::LinkRevoke { link, reason },
        LinkCommand::Narrow {
            link,
            no_object_discussions,
            directory,
            no_presence,
            max_file_mb,
        } => {
            // Start from the scope in force and take away what is asked.
            let (data_path, config) = resolve(location)?;
            let links = match send_admin(&data_path, config, AdminRequest::LinkList).await? {
                AdminReply::Links { links } => links,
                other => bail!("unexpected answer {other:?}"),
            };
            let current = links
                .into_iter()
                .find(|l| l.link == link && matches!(l.state.as_str(), "active" | "pending"))
                .with_context(|| format!("no active link {link}"))?
                .scope;
            AdminRequest::LinkNarrow {
                link,
                scope: veche_protocol::admin::LinkScope {
                    object_discussions: current.object_discussions && !no_object_discussions,
                    directory: directory.unwrap_or(current.directory),
                    presence: current.presence && !no_presence,
                    max_file_mb: max_file_mb.unwrap_or(current.max_file_mb),
                },
            }
        }
    };
    let (data_path, config) = resolve(location)?;
    let reply = send_admin(&data_path, config, request).await?;
    match &reply {
        AdminReply::LinkOffered { offer, link } => {
            print_link(link, out)?;
            writeln!(
                out,
                "send this offer to the other administrator and read them the fingerprint:"
            )?;
            write_text(offer, save.as_deref(), out)
        }
        AdminReply::LinkAccepted { grant, link } => {
            print_link(link, out)?;
            writeln!(
                out,
                "the link is active here; send this grant back to the offering administrator:"
            )?;
            write_text(grant, save.as_deref(), out)
        }
        other => Ok(print_admin_reply(other, out)?),
    }
}

/// Prints what an offer or grant says, verifying its signatures; nothing is stored.
fn inspect_link(text: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    use veche_federation::grant::{Grant, Offer, Party, Terms};
    fn party(p: &Party, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "  node {} (id {}), {}, contact {:?}, dials {}",
            p.node,
            p.key.node_id(),
            p.organisation,
            p.contact,
            p.addresses.join(" ")
        )
    }
    fn terms(t: &Terms, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "link {} ({:?})", t.link, t.relationship)?;
        if t.version > 1 {
            writeln!(
                out,
                "version {}: renews this link, with the scope and validity below",
                t.version
            )?;
        }
        writeln!(out, "scope {:?}", t.scope)?;
        writeln!(
            out,
            "valid from {} until {} (Unix ms)",
            t.not_before, t.not_after
        )?;
        writeln!(out, "offered by")?;
        party(&t.offerer, out)
    }
    if text.trim().starts_with("veche-link-grant:") {
        let grant = Grant::parse(text)?;
        terms(grant.terms(), out)?;
        writeln!(out, "accepted by")?;
        party(grant.acceptor(), out)?;
        writeln!(out, "grant fingerprint: {}", grant.fingerprint())?;
    } else {
        let offer = Offer::parse(text)?;
        terms(offer.terms(), out)?;
        writeln!(out, "offer fingerprint: {}", offer.fingerprint())?;
    }
    Ok(())
}

fn print_link(l: &veche_protocol::admin::LinkInfo, out: &mut dyn Write) -> std::io::Result<()> {
    let peer = if l.peer.is_empty() {
        "(waiting for the other side)".to_owned()
    } else {
        format!("{} ({}, id {})", l.peer, l.organisation, l.peer_id)
    };
    writeln!(
        out,
        "{}\tversion {}\t{}\t{}\t{}\t{}\tfingerprint {}\t{} queued{}{}",
        l.link,
        l.version,
        l.state,
        l.relationship,
        peer,
        if l.connected {
            "connected"
        } else {
            "not connected"
        },
        l.fingerprint,
        l.queued,
        l.ended_reason
            .as_ref()
            .map(|r| format!("\tended: {r}"))
            .unwrap_or_default(),
        l.stalled
            .as_ref()
            .map(|r| format!("\tstalled: {r}"))
            .unwrap_or_default()
    )
}

/// Sends a command to the running node, or runs it on the data folder if no node runs.
async fn send_admin(
    data_path: &Path,
    config: Config,
    request: AdminRequest,
) -> anyhow::Result<AdminReply> {
    if let Some(reply) =
        crate::admin_socket::send_to_socket(&data_path.join("admin.sock"), request.clone()).await?
    {
        return Ok(reply);
    }
    let data = DataDir::create(data_path)
        .with_context(|| format!("cannot create {}", data_path.display()))?;
    let opened = match node::open(
        &config,
        data,
        node::Purpose::Offline,
        veche_base::SystemClock::shared(),
    )
    .await
    {
        Ok(opened) => opened,
        Err(StartError::Lock(LockError::InUse(path))) => bail!(
            "a node is running on {} but its admin socket does not answer (is server.admin_socket off?)",
            path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let result = services::execute(&opened.services, "cli", request).await;
    opened.store.close().await;
    drop(opened.lock);
    Ok(result?)
}

fn print_admin_reply(reply: &AdminReply, out: &mut dyn Write) -> std::io::Result<()> {
    match reply {
        AdminReply::User { user } => print_user(user, out),
        AdminReply::Users { users } => {
            if users.is_empty() {
                writeln!(out, "no users")?;
            }
            users.iter().try_for_each(|u| print_user(u, out))
        }
        AdminReply::Sessions { sessions } => {
            if sessions.is_empty() {
                writeln!(out, "no sessions")?;
            }
            sessions.iter().try_for_each(|s| print_session(s, out))
        }
        AdminReply::Audit { records } => records.iter().try_for_each(|r| {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.seq, r.at, r.actor, r.action, r.target, r.detail
            )
        }),
        AdminReply::Revoked { count } => writeln!(out, "{count} session(s) ended"),
        AdminReply::Files { current, backends } => {
            writeln!(out, "new files go to: {current}")?;
            backends.iter().try_for_each(|b| {
                writeln!(
                    out,
                    "{}\t{} contents\t{} bytes",
                    b.backend, b.contents, b.bytes
                )
            })
        }
        AdminReply::FilesMigrated {
            moved,
            bytes,
            failed,
        } => {
            writeln!(out, "moved {moved} contents ({bytes} bytes)")?;
            if !failed.is_empty() {
                writeln!(
                    out,
                    "{} could not be moved and stay readable where they are; run the command again:",
                    failed.len()
                )?;
                failed.iter().try_for_each(|f| writeln!(out, "  {f}"))?;
            }
            Ok(())
        }
        AdminReply::FilesCleaned { files, contents } => {
            writeln!(out, "removed {files} files and {contents} contents")
        }
        AdminReply::Plugin { plugin } => print_plugin(plugin, out),
        AdminReply::LinkOffered { link, .. }
        | AdminReply::LinkAccepted { link, .. }
        | AdminReply::Link { link } => print_link(link, out),
        AdminReply::Links { links } => {
            if links.is_empty() {
                writeln!(out, "no links")?;
            }
            links.iter().try_for_each(|l| print_link(l, out))
        }
        AdminReply::Plugins { plugins } => {
            if plugins.is_empty() {
                writeln!(out, "no plugins")?;
            }
            plugins.iter().try_for_each(|p| print_plugin(p, out))
        }
        AdminReply::PluginLogs { lines } => lines.iter().try_for_each(|l| {
            let fields: Vec<String> = l.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                out,
                "{}\t{}\t{}\t{}",
                l.at,
                l.level,
                l.message,
                fields.join(" ")
            )
        }),
        AdminReply::DeadLetters { items } => {
            if items.is_empty() {
                writeln!(out, "no dead letters")?;
            }
            items.iter().try_for_each(|d| {
                writeln!(
                    out,
                    "{}\t{}\t{} attempts\t{}\t{}",
                    d.id, d.kind, d.attempts, d.error, d.payload
                )
            })
        }
        AdminReply::Replayed { count } => writeln!(out, "{count} item(s) back in the inbox"),
        AdminReply::PluginUninstalled {
            id,
            purged,
            kv_entries,
            log_lines,
            folder,
            bot_user,
            inbox_dropped,
        } => {
            writeln!(out, "uninstalled {id}")?;
            let what = format!(
                "{kv_entries} key-value entries, {log_lines} log lines{}",
                folder
                    .as_ref()
                    .map(|f| format!(", the folder {f}"))
                    .unwrap_or_default()
            );
            if *purged {
                writeln!(out, "removed: {what}")?;
            } else {
                writeln!(
                    out,
                    "kept for a reinstall: {what} (veche plugin uninstall {id} --purge removes them)"
                )?;
            }
            if let Some(bot) = bot_user {
                writeln!(out, "kept: the bot user {bot} and its messages")?;
            }
            if *inbox_dropped > 0 {
                writeln!(
                    out,
                    "dropped: {inbox_dropped} item(s) its bot had not been told"
                )?;
            }
            Ok(())
        }
        AdminReply::EventPosted { fresh } => writeln!(
            out,
            "{}",
            if *fresh {
                "event posted"
            } else {
                "this source already posted this key; nothing was done"
            }
        ),
        AdminReply::Apps { apps } => {
            if apps.is_empty() {
                writeln!(out, "no applications")?;
            }
            apps.iter().try_for_each(|a| {
                let copies = match (&a.last_copy_at, &a.last_copy_instance) {
                    (Some(at), Some(instance)) => format!(
                        "\t{} copy refusal(s), last {at} from instance {instance}",
                        a.copy_refusals
                    ),
                    _ => String::new(),
                };
                let embed = if a.embed_origins.is_empty() {
                    String::new()
                } else {
                    format!("\tembeds in {}", a.embed_origins.join(" "))
                };
                writeln!(
                    out,
                    "{}\t{}\t{}\tinstance {}{copies}{embed}",
                    a.name,
                    a.status,
                    a.email,
                    a.instance_id.as_deref().unwrap_or("-")
                )
            })
        }
        AdminReply::Webhook { webhook, secret } => {
            print_webhook(webhook, out)?;
            if !secret.is_empty() {
                writeln!(out, "HMAC secret (shown once): {secret}")?;
            }
            Ok(())
        }
        AdminReply::Webhooks { webhooks } => {
            if webhooks.is_empty() {
                writeln!(out, "no webhooks")?;
            }
            webhooks.iter().try_for_each(|w| print_webhook(w, out))
        }
        AdminReply::Done => writeln!(out, "done"),
    }
}

fn print_webhook(
    w: &veche_protocol::admin::WebhookInfo,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}\t{}\t{}\t{}\t{}\tdelivered {}\tpending {}\tfailed {}{}",
        w.id,
        w.owner,
        w.url,
        w.kinds.join(","),
        w.signing,
        w.delivered,
        w.pending,
        w.failed,
        w.last_error
            .as_ref()
            .map(|e| format!("\tlast error: {e}"))
            .unwrap_or_default()
    )
}

fn print_plugin(p: &veche_protocol::admin::PluginInfo, out: &mut dyn Write) -> std::io::Result<()> {
    let limits = p.limits.as_ref().map_or_else(String::new, |l| {
        format!(
            "\tlimits cpu {} ms, call {} ms, memory {} MiB, {} at once",
            l.cpu_ms, l.call_timeout_ms, l.memory_mib, l.max_concurrency
        )
    });
    writeln!(
        out,
        "{}\t{}\t{}\t{}\troles {}\trights {}\tdead letters {}{limits}",
        p.id,
        p.version,
        p.status,
        p.bot_user.as_deref().unwrap_or("-"),
        p.roles.join(" "),
        if p.rights.is_empty() {
            "-".to_owned()
        } else {
            p.rights.join(",")
        },
        p.dead_letters
    )
}

fn print_user(u: &UserInfo, out: &mut dyn Write) -> std::io::Result<()> {
    let mut flags = Vec::new();
    if u.admin {
        flags.push("admin");
    }
    if u.locked {
        flags.push("locked");
    }
    writeln!(
        out,
        "{}\t{}\t{}\t{}\tcreated {}",
        u.id,
        u.display_name,
        if u.email.is_empty() { "-" } else { &u.email },
        if flags.is_empty() {
            "-".to_owned()
        } else {
            flags.join(",")
        },
        u.created_at
    )
}

fn print_session(s: &SessionInfo, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{}\t{} ({})\tcreated {}\tlast seen {}\texpires {}",
        s.id, s.device_name, s.device_id, s.created_at, s.last_seen_at, s.expires_at
    )
}

/// Parses `args` (starting with the program name) and runs the command: what `main` does,
/// callable from tests.
pub async fn run_args<I, T>(args: I, out: &mut dyn Write) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    run(cli, out).await
}
