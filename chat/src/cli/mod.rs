//! Scriptable client commands: every action of the client protocol from the command line
//! (`veche login`, `send`, `history`, `group`, `react`, `search`, `download`, `sessions`, …),
//! and `veche chat`, the terminal client.
//!
//! Arguments are parsed once into types ([`args`]); whatever the node sends back is shown
//! through [`crate::untrusted`] ([`print`]). Every command that connects sends the outbox
//! first.

mod account;
pub mod args;
mod files;
mod groups;
mod messages;
mod print;
mod search;

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use veche_client::protocol::discussions::DiscussionInfo;
use veche_client::protocol::{ErrorCode, Reply, Request};
use veche_client::{Client, ClientEvent, Connection, ConnectionState, OutboxState, RequestError};

use crate::profile::client_dir;
use crate::untrusted::{one_line, visible};
use crate::{Profile, SendKey};

use args::{
    ActionArg, DiscussionArg, FileArg, LevelArg, MessageArg, ObjectArg, SessionArg, StatusArg,
    TimeArg, UserArg,
};

/// The exit code of a `veche send` whose message is queued, not yet stored by the node:
/// `EX_TEMPFAIL` of `sysexits.h`, "try again later".
pub const EXIT_QUEUED: u8 = 75;

/// How long `veche send` tries to reach the node before it leaves the message queued.
const SEND_BUDGET: Duration = Duration::from_secs(5);

/// `veche send` wrote the message to the outbox, but the node does not have it yet. It goes out,
/// in order, with the next command of the profile that connects. The binary exits with
/// [`EXIT_QUEUED`].
#[derive(Debug)]
pub struct Queued {
    /// Why it was not sent now.
    pub reason: String,
}

impl std::fmt::Display for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queued: {}; it goes out, in order, with the next command that connects \
             (`veche send --wait` waits until the node has it)",
            self.reason
        )
    }
}

impl std::error::Error for Queued {}

/// The exit code for a command that failed with `error`: [`EXIT_QUEUED`] for a queued send,
/// else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<Queued>().is_some() {
        EXIT_QUEUED
    } else {
        1
    }
}

/// Where the client keeps its profile, session and outbox.
#[derive(Debug, Args, Clone, Default)]
pub struct ClientDir {
    /// The client folder [default: $VECHE_CLIENT_DIR or ~/.local/share/veche-client].
    #[arg(long = "profile")]
    dir: Option<PathBuf>,
}

/// Where the node is and how to trust it.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// The node's QUIC address, host:port.
    #[arg(long)]
    server: SocketAddr,
    /// The name in the node's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Trust the node's CA certificate (its `tls/ca.pem`).
    #[arg(long, conflicts_with = "fingerprint")]
    ca: Option<PathBuf>,
    /// Or trust exactly the certificate with this SHA-256 fingerprint.
    #[arg(long)]
    fingerprint: Option<String>,
}

impl NodeArgs {
    /// A profile for this node, keeping personal settings of an earlier profile in `dir`.
    fn profile(self, dir: &std::path::Path) -> anyhow::Result<Profile> {
        if self.ca.is_none() && self.fingerprint.is_none() {
            bail!("give --ca (the node's tls/ca.pem) or --fingerprint (its certificate's SHA-256)");
        }
        let earlier = Profile::load(dir).ok();
        // Kept absolute: the profile is used from any folder.
        let ca_file = match self.ca {
            Some(ca) => Some(
                std::path::absolute(&ca)
                    .with_context(|| format!("cannot locate --ca {}", ca.display()))?,
            ),
            None => None,
        };
        Ok(Profile {
            server: self.server,
            server_name: self.server_name,
            ca_file,
            fingerprint: self.fingerprint,
            send_key: earlier.as_ref().map(|p| p.send_key).unwrap_or_default(),
            sound_command: earlier.and_then(|p| p.sound_command),
        })
    }
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Log in to a node and remember it; sends what the outbox holds.
    Login {
        #[command(flatten)]
        node: NodeArgs,
        /// Login.
        #[arg(long)]
        user: String,
        /// Read the password from this file; '-' reads standard input: on a terminal the
        /// password is asked for and not shown as it is typed, else its first line is taken.
        #[arg(long, default_value = "-")]
        password_file: PathBuf,
        /// This device's name, as administrators see it.
        #[arg(long, default_value = "veche-cli")]
        device_name: String,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Create the node's first administrator with the setup token it printed, and log in.
    Setup {
        #[command(flatten)]
        node: NodeArgs,
        /// The one-time setup token (also in the node's data folder as `setup-token`).
        #[arg(long)]
        token: String,
        /// The administrator's login.
        #[arg(long)]
        user: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Read the password from this file; '-' reads standard input: on a terminal the
        /// password is asked for and not shown as it is typed, else its first line is taken.
        #[arg(long, default_value = "-")]
        password_file: PathBuf,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Who this profile is logged in as.
    Whoami {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// End this profile's session on the node and forget its token here.
    Logout {
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Your sessions, one per device you signed in on; `--end ID` signs that device out.
    Sessions {
        /// End this session (its device is signed out at once).
        #[arg(long, value_name = "ID")]
        end: Option<SessionArg>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Change your password (your other devices are signed out). On a terminal both are
    /// asked for without being shown; otherwise standard input's first line is the current
    /// password and its second the new one.
    Passwd {
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Find people by name, login, e-mail or department (typos, transliteration and the other
    /// keyboard layout are forgiven).
    People {
        /// What to look for.
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        /// Ask this linked node's directory instead.
        #[arg(long)]
        node: Option<String>,
        /// At most this many (1-100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// List discussions, most recent activity first.
    Discussions {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Create and manage groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Open the discussion of a business object, APP/TYPE/ID (created on first use), and print
    /// its id.
    OpenObject {
        /// The object, such as erp/invoice/INV-42.
        object: ObjectArg,
        /// The title of a new discussion.
        #[arg(long)]
        title: Option<String>,
        /// Also follow it: it joins your discussion list (`--follow false` leaves it).
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        follow: Option<bool>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Send a message, through the outbox: if the node is unreachable it is queued and goes out,
    /// in order, with the next command that connects.
    ///
    /// Prints `sent ID (seq N)` and exits 0 once the node stored it. A queued message exits
    /// with code 75 (EX_TEMPFAIL), saying so on standard error; a refused one exits 1 with the
    /// reason. When the node did not answer within the last minute, the message is queued at
    /// once without trying again (a node that is not running at all is told at once anyway).
    Send {
        /// Discussion id, title, or a user (opens the dialog with them); offline, a name is
        /// resolved once the node is reachable.
        discussion: DiscussionArg,
        /// The text (may be left out when files are attached).
        text: Option<String>,
        /// Attach this file (up to 10); it is uploaded when the message goes out, and an
        /// interrupted upload continues where it stopped.
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Wait, however long it takes, until the node has stored the message (or refused it).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// List the messages of the outbox not yet sent, and those the node refused, with why.
    Outbox {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Follow a discussion's live events; reconnects by itself, and stops with an error when
    /// you lose access.
    Tail {
        /// Discussion id, title, the other user of a dialog, or a business object APP/TYPE/ID
        /// (followed or not).
        discussion: DiscussionArg,
        /// First print the events after this sequence number.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Print a discussion's history, oldest first: the latest events, or those before a
    /// sequence number; says on standard error how to read further back.
    History {
        /// Discussion id, title, the other user of a dialog, or a business object APP/TYPE/ID.
        discussion: DiscussionArg,
        /// How many events.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Only events before this sequence number.
        #[arg(long, value_name = "SEQ", conflicts_with = "all")]
        before: Option<u64>,
        /// Every event from the first, page by page.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Find messages you may read. All words must occur, in any form (`счета` finds `счёт`);
    /// a query typed on the wrong keyboard layout is retried on the other.
    Search {
        /// The words.
        #[arg(required = true, num_args = 1..)]
        words: Vec<String>,
        /// Only in this discussion.
        #[arg(long = "in", value_name = "DISCUSSION")]
        discussion: Option<DiscussionArg>,
        /// Only by this author.
        #[arg(long = "from", value_name = "USER")]
        author: Option<UserArg>,
        /// Only in this business object's discussion, APP/TYPE/ID.
        #[arg(long)]
        object: Option<ObjectArg>,
        /// Only messages written at or after this time (YYYY-MM-DD, YYYY-MM-DDTHH:MM, UTC).
        #[arg(long)]
        since: Option<TimeArg>,
        /// Only messages written before this time.
        #[arg(long)]
        until: Option<TimeArg>,
        /// Only messages with files attached (file names are searched too).
        #[arg(long)]
        has_file: bool,
        /// At most this many hits (1-100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Skip this many hits (the next page).
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// React to a message with an emoji or a :shortcode:.
    React {
        /// The discussion.
        discussion: DiscussionArg,
        /// The message: its number as `veche history` shows it (#7), or its id.
        message: MessageArg,
        /// An emoji or a :shortcode:.
        emoji: String,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Take back a reaction.
    Unreact {
        /// The discussion.
        discussion: DiscussionArg,
        /// The message: its number (#7), or its id.
        message: MessageArg,
        /// The emoji or :shortcode: reacted with.
        emoji: String,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Replace the text of one of your messages.
    Edit {
        /// The discussion.
        discussion: DiscussionArg,
        /// The message: its number (#7), or its id.
        message: MessageArg,
        /// The new text.
        text: String,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Delete a message (yours; in a group you own, anyone's).
    Delete {
        /// The discussion.
        discussion: DiscussionArg,
        /// The message: its number (#7), or its id.
        message: MessageArg,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Click a button of a message (`veche history` lists them); its author is told.
    Click {
        /// The discussion.
        discussion: DiscussionArg,
        /// The message: its number (#7), or its id.
        message: MessageArg,
        /// The button's id.
        action: ActionArg,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Show your presence, or set it: available, away, dnd or invisible, with a status text.
    Status {
        /// What others see (available: from your devices' activity).
        status: Option<StatusArg>,
        /// The status text (at most 100 characters; left out, it is cleared).
        #[arg(requires = "status")]
        text: Option<String>,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Show your notification settings, or set which messages of a discussion notify you:
    /// default, all, mentions or none.
    Notify {
        /// The discussion.
        #[arg(requires = "level")]
        discussion: Option<DiscussionArg>,
        /// The level.
        level: Option<LevelArg>,
        /// Also mute it until this time (YYYY-MM-DD, YYYY-MM-DDTHH:MM, UTC).
        #[arg(long, requires = "level")]
        mute_until: Option<TimeArg>,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Download a file into a file of its name here, or where `-o` says; an interrupted
    /// download continues where it stopped.
    Download {
        /// The file's id, as `veche history` lists it (f_…).
        file: FileArg,
        /// Where to write it (a folder, or a file name).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Replace a file that is there already.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// The full-screen terminal client.
    Chat {
        /// Which key sends (the others insert a new line); remembered in the profile.
        #[arg(long, value_enum)]
        send_key: Option<SendKey>,
        #[command(flatten)]
        dir: ClientDir,
    },
}

/// `veche group …`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group you own, with these members; prints its id.
    Create {
        /// The title.
        title: String,
        /// The other members (login, or login@node).
        members: Vec<UserArg>,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Add members to a group you own.
    Add {
        /// The group: its id or title.
        group: DiscussionArg,
        /// Users (login, or login@node).
        #[arg(required = true, num_args = 1..)]
        users: Vec<UserArg>,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Remove a member from a group you own.
    Remove {
        /// The group: its id or title.
        group: DiscussionArg,
        /// The user (login, or login@node).
        user: UserArg,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Rename a group you own (or an object discussion you can read).
    Rename {
        /// The group: its id or title.
        group: DiscussionArg,
        /// The new title.
        title: String,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Leave a group.
    Leave {
        /// The group: its id or title.
        group: DiscussionArg,
        #[command(flatten)]
        dir: ClientDir,
    },
}

/// Runs a client command, printing to `out`.
pub async fn run(command: ClientCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        ClientCommand::Login {
            node,
            user,
            password_file,
            device_name,
            dir,
        } => {
            let dir = client_dir(dir.dir.as_deref());
            let profile = node.profile(&dir)?;
            let password = read_password(&password_file)?;
            let client = Client::open(&dir, profile.client_config()?).await?;
            let pending = pending_ids(&client, None).await?;
            let logged = client.login(&user, &password, &device_name).await;
            report_refused(&client, &pending).await?;
            let logged = logged?;
            client.shutdown().await;
            profile.save(&dir)?;
            writeln!(
                out,
                "logged in as {} ({})",
                one_line(&logged.user.id),
                one_line(&logged.user.display_name)
            )?;
        }
        ClientCommand::Setup {
            node,
            token,
            user,
            name,
            password_file,
            dir,
        } => {
            let dir = client_dir(dir.dir.as_deref());
            let profile = node.profile(&dir)?;
            let password = read_password(&password_file)?;
            let client = Client::open(&dir, profile.client_config()?).await?;
            let pending = pending_ids(&client, None).await?;
            let logged = client
                .setup(token.trim(), &user, &password, &name, "veche-cli")
                .await;
            report_refused(&client, &pending).await?;
            let logged = logged?;
            client.shutdown().await;
            profile.save(&dir)?;
            writeln!(
                out,
                "created administrator {} and logged in",
                one_line(&logged.user.id)
            )?;
        }
        ClientCommand::Whoami { json, dir } => account::whoami(&dir, json, out).await?,
        ClientCommand::Logout { dir } => account::logout(&dir, out).await?,
        ClientCommand::Sessions { end, json, dir } => {
            account::sessions(&dir, end, json, out).await?
        }
        ClientCommand::Passwd { dir } => account::passwd(&dir, out).await?,
        ClientCommand::People {
            query,
            node,
            limit,
            json,
            dir,
        } => account::people(&dir, &query.join(" "), node, limit, json, out).await?,
        ClientCommand::Discussions { json, dir } => {
            let session = Session::start(&dir).await?;
            let discussions = list(&session.conn).await?;
            for d in &discussions {
                if json {
                    writeln!(out, "{}", serde_json::to_string(d)?)?;
                } else {
                    writeln!(
                        out,
                        "{}\t{}\t{} unread\t{}",
                        one_line(&d.id),
                        one_line(&name(d, &session.me)),
                        d.unread,
                        d.last_activity_at
                    )?;
                }
            }
            session.end().await;
        }
        ClientCommand::Group { command } => groups::run(command, out).await?,
        ClientCommand::OpenObject {
            object,
            title,
            follow,
            json,
            dir,
        } => groups::open_object(&dir, object, title, follow, json, out).await?,
        ClientCommand::Send {
            discussion,
            text,
            files,
            wait,
            dir,
        } => {
            let text = text.unwrap_or_default();
            if text.is_empty() && files.is_empty() {
                bail!("give the text, or a file with --file");
            }
            let (client, _) = open(&dir).await?;
            // Durable first: whatever happens next, the message is not lost. A name is
            // resolved, and files uploaded, when the outbox is sent.
            let to = discussion.to_string();
            let entry = if files.is_empty() {
                client.send_to(&to, &text, None).await?
            } else {
                client.send_files_to(&to, &text, &files).await?
            };
            let state = if wait {
                wait_until_stored(&client, entry.id).await
            } else {
                send_now(&client, entry.id).await
            };
            client.shutdown().await;
            match state? {
                OutboxState::Sent { message_id, seq } => {
                    writeln!(out, "sent {} (seq {seq})", one_line(&message_id))?
                }
                OutboxState::Pending => {
                    return Err(Queued {
                        reason: "the node has not stored it yet".to_owned(),
                    }
                    .into());
                }
                OutboxState::Failed { reason } => bail!("refused: {}", visible(&reason)),
            }
        }
        ClientCommand::Outbox { json, dir } => {
            let (client, _) = open(&dir).await?;
            for entry in client.outbox().await? {
                let (state, reason) = match &entry.state {
                    OutboxState::Pending => ("pending", ""),
                    OutboxState::Failed { reason } => ("failed", reason.as_str()),
                    OutboxState::Sent { .. } => continue,
                };
                let to = entry.target.as_deref().unwrap_or(&entry.discussion);
                let files: Vec<String> = entry
                    .files
                    .iter()
                    .map(|f| f.path.display().to_string())
                    .collect();
                if json {
                    let line = serde_json::json!({
                        "id": entry.id,
                        "client_msg_id": entry.client_msg_id,
                        "to": to,
                        "discussion": entry.discussion,
                        "text": entry.text,
                        "files": files,
                        "state": state,
                        "reason": reason,
                        "created_at": entry.created_at,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    let mut text = one_line(&entry.text).into_owned();
                    for f in &files {
                        text.push_str(&format!(" [file {}]", one_line(f)));
                    }
                    writeln!(
                        out,
                        "{}\t{state}\t{}\t{}\t{}",
                        entry.created_at,
                        one_line(to),
                        text.trim_start(),
                        one_line(reason)
                    )?;
                }
            }
            client.shutdown().await;
        }
        ClientCommand::Tail {
            discussion,
            after,
            json,
            count,
            dir,
        } => messages::tail(&dir, &discussion, after, json, count, out).await?,
        ClientCommand::History {
            discussion,
            limit,
            before,
            all,
            json,
            dir,
        } => {
            let page = match (all, before) {
                (true, _) => messages::Page::All,
                (false, before) => messages::Page::Latest { before, limit },
            };
            messages::history(&dir, &discussion, page, json, out).await?
        }
        ClientCommand::Search {
            words,
            discussion,
            author,
            object,
            since,
            until,
            has_file,
            limit,
            offset,
            json,
            dir,
        } => {
            let filters = search::Filters {
                discussion,
                author,
                object,
                since,
                until,
                has_file,
                limit,
                offset,
            };
            search::run(&dir, &words.join(" "), filters, json, out).await?
        }
        ClientCommand::React {
            discussion,
            message,
            emoji,
            dir,
        } => messages::react(&dir, &discussion, &message, &emoji, true, out).await?,
        ClientCommand::Unreact {
            discussion,
            message,
            emoji,
            dir,
        } => messages::react(&dir, &discussion, &message, &emoji, false, out).await?,
        ClientCommand::Edit {
            discussion,
            message,
            text,
            dir,
        } => messages::edit(&dir, &discussion, &message, &text, out).await?,
        ClientCommand::Delete {
            discussion,
            message,
            dir,
        } => messages::delete(&dir, &discussion, &message, out).await?,
        ClientCommand::Click {
            discussion,
            message,
            action,
            dir,
        } => messages::click(&dir, &discussion, &message, &action, out).await?,
        ClientCommand::Status { status, text, dir } => {
            account::status(&dir, status, text, out).await?
        }
        ClientCommand::Notify {
            discussion,
            level,
            mute_until,
            dir,
        } => account::notify(&dir, discussion.zip(level), mute_until, out).await?,
        ClientCommand::Download {
            file,
            output,
            force,
            dir,
        } => files::download(&dir, &file, output, force, out).await?,
        ClientCommand::Chat { send_key, dir } => {
            let (client, mut profile) = open(&dir).await?;
            if let Some(key) = send_key {
                profile.send_key = key;
                profile.save(&client_dir(dir.dir.as_deref()))?;
            }
            let me = client
                .user()
                .await?
                .context("not logged in: run `veche login` first")?;
            crate::tui::run(client, me, &profile).await?;
        }
    }
    Ok(())
}

/// One command's connection: the client, its connection (the outbox already sent on it) and
/// who the user is.
struct Session {
    client: Client,
    conn: Arc<Connection>,
    me: String,
}

impl Session {
    /// Opens the profile and connects; the outbox goes out first.
    async fn start(dir: &ClientDir) -> anyhow::Result<Self> {
        let (client, _) = open(dir).await?;
        let conn = connect(&client).await?;
        let me = client
            .user()
            .await?
            .context("not logged in: run `veche login` first")?;
        Ok(Self { client, conn, me })
    }

    /// Sends a request; a refusal becomes an error saying what was refused and why.
    async fn ask(&self, request: Request) -> anyhow::Result<Reply> {
        self.conn.request(request).await.map_err(refusal)
    }

    /// Sends a request that answers `done`.
    async fn done(&self, request: Request) -> anyhow::Result<()> {
        match self.ask(request).await? {
            Reply::Done => Ok(()),
            other => bail!("unexpected reply {}", kind(&other)),
        }
    }

    /// The discussion the user named: an id as it is, a name from their list (with
    /// `open_dialog`, a user's name opens the dialog with them), else an object's discussion.
    async fn discussion(&self, arg: &DiscussionArg, open_dialog: bool) -> anyhow::Result<String> {
        let (name, object) = match arg {
            DiscussionArg::Id(id) => return Ok(id.to_string()),
            DiscussionArg::Name { name, object } => (name, object),
        };
        match self.conn.resolve(&self.me, name, open_dialog).await {
            Ok(id) => Ok(id),
            Err(
                veche_client::ResolveError::NotListed(_) | veche_client::ResolveError::NotFound(_),
            ) if object.is_some() => {
                let object = object.clone().context("an object")?;
                let shown = ObjectArg(object.clone()).to_string();
                match self
                    .ask(Request::OpenObject {
                        object,
                        title: String::new(),
                    })
                    .await
                    .with_context(|| format!("no discussion named {}", one_line(&shown)))?
                {
                    Reply::Discussion { discussion } => Ok(discussion.id),
                    other => bail!("unexpected reply {}", kind(&other)),
                }
            }
            Err(e) => Err(anyhow::Error::new(e)),
        }
    }

    /// Closes the connection and the client's store.
    async fn end(self) {
        self.client.shutdown().await;
    }
}

/// A refused request as an error people can read: the node's reason, then its code.
fn refusal(e: RequestError) -> anyhow::Error {
    match &e {
        RequestError::Server(body) => {
            let hint = match body.code {
                ErrorCode::NotFound => " (it does not exist, or is not visible to you)",
                ErrorCode::Forbidden => " (not allowed for you)",
                ErrorCode::InvalidCredentials | ErrorCode::Unauthenticated => {
                    " (log in again with `veche login`)"
                }
                _ => "",
            };
            anyhow::anyhow!(
                "{}: {}{hint}",
                code_name(body.code),
                one_line(&body.message)
            )
        }
        _ => anyhow::Error::new(e),
    }
}

/// An error code as the protocol names it (`not_found`).
fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

/// A reply's kind, for "unexpected reply" errors (never its content).
fn kind(reply: &Reply) -> String {
    serde_json::to_value(reply)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "of another kind".to_owned())
}

/// Connects for one command. The outbox goes out first; a message of it the node refuses
/// (or whose name resolves to nobody) is reported on standard error, and stays listed by
/// `veche outbox`.
async fn connect(client: &Client) -> anyhow::Result<Arc<Connection>> {
    connect_within(client, None, None).await
}

async fn connect_within(
    client: &Client,
    budget: Option<Duration>,
    reported_by_caller: Option<i64>,
) -> anyhow::Result<Arc<Connection>> {
    let pending = pending_ids(client, reported_by_caller).await?;
    let connected = match budget {
        Some(budget) => client.connect_once_within(budget).await,
        None => client.connect_once().await,
    };
    let conn =
        match connected {
            Ok(conn) => conn,
            Err(e @ veche_client::ClientError::NotLoggedIn) => {
                return Err(anyhow::Error::new(e).context("run `veche login` first"));
            }
            Err(veche_client::ClientError::Request(e))
                if matches!(
                    e.code(),
                    Some(ErrorCode::InvalidCredentials | ErrorCode::AccountLocked)
                ) =>
            {
                return Err(anyhow::Error::new(veche_client::ClientError::Request(e)).context(
                "the session is no longer valid (ended, logged out or locked): log in again \
                 with `veche login`",
            ));
            }
            Err(e) => return Err(e.into()),
        };
    report_refused(client, &pending).await?;
    Ok(conn)
}

/// The outbox's pending messages but `except` (which its caller reports itself).
async fn pending_ids(client: &Client, except: Option<i64>) -> anyhow::Result<Vec<i64>> {
    Ok(client
        .outbox()
        .await?
        .into_iter()
        .filter(|e| e.state == OutboxState::Pending && Some(e.id) != except)
        .map(|e| e.id)
        .collect())
}

/// Tells on standard error which of the messages `pending` (before a connection) the node
/// refused since (or whose name resolved to nobody).
async fn report_refused(client: &Client, pending: &[i64]) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut stderr = crate::untrusted::VisibleWriter::new(std::io::stderr());
    for entry in client.outbox().await? {
        if let OutboxState::Failed { reason } = &entry.state
            && pending.contains(&entry.id)
        {
            let to = entry.target.as_deref().unwrap_or(&entry.discussion);
            let _ = writeln!(
                stderr,
                "not sent to {}: {} ({})",
                one_line(to),
                one_line(&entry.text),
                one_line(reason)
            );
        }
    }
    Ok(())
}

/// Tries once to send the outbox (with the message `id`) now; says where `id` stands. A node
/// known to be down is not tried again.
async fn send_now(client: &Client, id: i64) -> anyhow::Result<OutboxState> {
    if client.known_down().await? {
        return Err(Queued {
            reason: "the node did not answer a moment ago".to_owned(),
        }
        .into());
    }
    match connect_within(client, Some(SEND_BUDGET), Some(id)).await {
        Ok(_conn) => {}
        Err(e) => {
            if let Some(reason) = e
                .downcast_ref::<veche_client::ClientError>()
                .filter(|e| e.is_unreachable())
                .map(ToString::to_string)
            {
                return Err(Queued { reason }.into());
            }
            return Err(e.context("the message stays in the outbox"));
        }
    }
    outbox_state(client, id).await
}

/// Stays connected, sending the outbox, until the node has stored or refused message `id`.
async fn wait_until_stored(client: &Client, id: i64) -> anyhow::Result<OutboxState> {
    let mut events = client.subscribe();
    let mut state = client.state();
    client.start();
    loop {
        let now = outbox_state(client, id).await?;
        if now != OutboxState::Pending {
            return Ok(now);
        }
        tokio::select! {
            event = events.recv() => match event {
                Ok(ClientEvent::Outbox(e)) if e.id == id && e.state != OutboxState::Pending => {
                    return Ok(e.state);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    bail!("the client stopped")
                }
            },
            changed = state.changed() => {
                if changed.is_err() || *state.borrow_and_update() == ConnectionState::Offline {
                    bail!("cannot connect: is the profile logged in? (the message stays in the outbox)");
                }
            }
        }
    }
}

async fn outbox_state(client: &Client, id: i64) -> anyhow::Result<OutboxState> {
    client
        .outbox()
        .await?
        .into_iter()
        .find(|e| e.id == id)
        .map(|e| e.state)
        .context("the message left the outbox")
}

async fn open(dir: &ClientDir) -> anyhow::Result<(Client, Profile)> {
    let dir = client_dir(dir.dir.as_deref());
    let profile = Profile::load(&dir)?;
    let client = Client::open(&dir, profile.client_config()?).await?;
    Ok((client, profile))
}

/// The password from `path`, or from standard input for `-`: typed at a prompt without echo
/// when standard input is a terminal, else the first line (for scripts).
fn read_password(path: &PathBuf) -> anyhow::Result<String> {
    let mut line = String::new();
    if path.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            line = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        } else {
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password")?;
        }
    } else {
        line = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        line.truncate(line.find('\n').unwrap_or(line.len()));
    }
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

async fn list(conn: &veche_client::Connection) -> anyhow::Result<Vec<DiscussionInfo>> {
    match conn.request(Request::ListDiscussions).await? {
        Reply::Discussions { discussions } => Ok(discussions),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn name(d: &DiscussionInfo, me: &str) -> String {
    veche_client::discussion_name(d, me)
}
