//! Scriptable client commands: `veche login`, `discussions`, `send`, `tail`, `history`,
//! `outbox`, `chat`.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use veche_client::protocol::discussions::{Change, DiscussionEvent, DiscussionInfo};
use veche_client::protocol::{Event, Reply, Request};
use veche_client::{Client, ClientEvent, Connection, ConnectionState, OutboxState};

use crate::profile::client_dir;
use crate::untrusted::{indented, one_line, visible};
use crate::{Profile, SendKey};

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
    /// Log in to a node and remember it.
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
    /// List discussions, most recent activity first.
    Discussions {
        /// One JSON object per line.
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
        discussion: String,
        /// The text.
        text: String,
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
    /// Print a discussion's live events.
    Tail {
        /// Discussion id, title, or the other user of a dialog.
        discussion: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        #[command(flatten)]
        dir: ClientDir,
    },
    /// Print a discussion's recent history.
    History {
        /// Discussion id, title, or the other user of a dialog.
        discussion: String,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
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
            let logged = client.login(&user, &password, &device_name).await?;
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
            let logged = client
                .setup(token.trim(), &user, &password, &name, "veche-cli")
                .await?;
            client.shutdown().await;
            profile.save(&dir)?;
            writeln!(
                out,
                "created administrator {} and logged in",
                one_line(&logged.user.id)
            )?;
        }
        ClientCommand::Discussions { json, dir } => {
            let (client, _) = open(&dir).await?;
            let conn = connect(&client).await?;
            let discussions = list(&conn).await?;
            let me = client.user().await?.unwrap_or_default();
            for d in &discussions {
                if json {
                    writeln!(out, "{}", serde_json::to_string(d)?)?;
                } else {
                    writeln!(
                        out,
                        "{}\t{}\t{} unread\t{}",
                        one_line(&d.id),
                        one_line(&name(d, &me)),
                        d.unread,
                        d.last_activity_at
                    )?;
                }
            }
            client.shutdown().await;
        }
        ClientCommand::Send {
            discussion,
            text,
            wait,
            dir,
        } => {
            let (client, _) = open(&dir).await?;
            // Durable first: whatever happens next, the message is not lost. A name is
            // resolved when the outbox is sent.
            let entry = client.send_to(&discussion, &text, None).await?;
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
                if json {
                    let line = serde_json::json!({
                        "id": entry.id,
                        "client_msg_id": entry.client_msg_id,
                        "to": to,
                        "discussion": entry.discussion,
                        "text": entry.text,
                        "state": state,
                        "reason": reason,
                        "created_at": entry.created_at,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{}\t{state}\t{}\t{}\t{}",
                        entry.created_at,
                        one_line(to),
                        one_line(&entry.text),
                        one_line(reason)
                    )?;
                }
            }
            client.shutdown().await;
        }
        ClientCommand::Tail {
            discussion,
            json,
            count,
            dir,
        } => {
            let (client, conn, id) = open_discussion(&dir, &discussion).await?;
            // Object discussions deliver live events to connections that watch them.
            let _ = conn
                .request(Request::Watch {
                    discussion: id.clone(),
                    watch: true,
                })
                .await;
            let mut printed = 0;
            while let Some(event) = conn.next_event().await {
                if let Event::Discussion { event } = &event
                    && event.discussion == id
                {
                    print_event(out, event, json)?;
                    out.flush()?;
                    printed += 1;
                    if count.is_some_and(|c| printed >= c) {
                        break;
                    }
                }
            }
            client.shutdown().await;
        }
        ClientCommand::History {
            discussion,
            limit,
            json,
            dir,
        } => {
            let (client, conn, id) = open_discussion(&dir, &discussion).await?;
            let reply = conn
                .request(Request::History {
                    discussion: id,
                    before: None,
                    limit,
                })
                .await?;
            let Reply::Events { events, .. } = reply else {
                bail!("unexpected reply")
            };
            for e in &events {
                print_event(out, e, json)?;
            }
            client.shutdown().await;
        }
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

/// Connects with the stored session and finds a discussion of the caller's list.
async fn open_discussion(
    dir: &ClientDir,
    discussion: &str,
) -> anyhow::Result<(Client, Arc<Connection>, String)> {
    let (client, _) = open(dir).await?;
    let conn = connect(&client).await?;
    let me = client.user().await?.unwrap_or_default();
    let id = conn.resolve(&me, discussion, false).await?;
    Ok((client, conn, id))
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
    let pending: Vec<i64> = client
        .outbox()
        .await?
        .into_iter()
        .filter(|e| e.state == OutboxState::Pending && Some(e.id) != reported_by_caller)
        .map(|e| e.id)
        .collect();
    let conn = match budget {
        Some(budget) => client.connect_once_within(budget).await?,
        None => client.connect_once().await?,
    };
    if !pending.is_empty() {
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
    }
    Ok(conn)
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

fn print_event(out: &mut dyn Write, e: &DiscussionEvent, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
        return Ok(());
    }
    writeln!(out, "{}", event_line(e))?;
    Ok(())
}

/// An event as one entry of a human-readable listing: `time \t #seq \t who: what`. Everything
/// that came from the node is shown with its control characters visible, and the lines of a
/// multi-line message after the first are indented, so no text can forge an entry.
fn event_line(e: &DiscussionEvent) -> String {
    const INDENT: &str = "\t\t  ";
    let who = e.actor.split('@').next().unwrap_or(&e.actor);
    let what = match &e.change {
        Change::MessagePosted { message } => match &message.text {
            Some(text) => indented(text, INDENT),
            None => "[deleted]".into(),
        },
        Change::MessageEdited { text, .. } => {
            format!(
                "(edited) {}",
                indented(text.as_deref().unwrap_or_default(), INDENT)
            )
        }
        Change::MessageDeleted { .. } => "(deleted a message)".into(),
        Change::ReactionAdded { emoji, .. } => format!("(reacted {})", one_line(emoji)),
        Change::ReactionRemoved { emoji, .. } => format!("(removed {})", one_line(emoji)),
        Change::TitleChanged { title } => format!("(renamed to {})", one_line(title)),
        Change::MembersAdded { users } => format!("(added {})", one_line(&users.join(", "))),
        Change::MemberRemoved { user } => format!("(removed {})", one_line(user)),
        Change::Created { .. } => "(created the discussion)".into(),
        Change::Unknown => "(something this client does not know)".into(),
    };
    format!("{}\t#{}\t{}: {what}", e.at, e.seq, one_line(who))
}

#[cfg(test)]
mod tests {
    use veche_client::protocol::Timestamp;
    use veche_client::protocol::discussions::Message;

    use super::*;

    fn posted(author: &str, text: &str) -> DiscussionEvent {
        DiscussionEvent {
            discussion: "d@hq".into(),
            seq: 7,
            at: Timestamp(0),
            actor: author.into(),
            change: Change::MessagePosted {
                message: Box::new(Message {
                    id: "m".into(),
                    discussion: "d@hq".into(),
                    seq: 7,
                    author: author.into(),
                    text: Some(text.into()),
                    data: None,
                    actions: vec![],
                    reply_to: None,
                    mentions: vec![],
                    reactions: vec![],
                    files: vec![],
                    created_at: Timestamp(0),
                    edited_at: None,
                    version: 1,
                    deleted: false,
                }),
            },
        }
    }

    fn printed(e: &DiscussionEvent) -> String {
        let mut out = Vec::new();
        print_event(&mut out, e, false).expect("print");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn history_and_tail_never_send_control_characters_to_the_terminal() {
        let out = printed(&posted(
            "mallory@hq",
            "hi\x1b]0;pwned\x07\x1b[2J\x1b[1A\rboris: I approve the payment",
        ));
        assert!(
            !out.trim_end_matches('\n')
                .chars()
                .any(|c| c.is_control() && c != '\t'),
            "{out:?}"
        );
        assert!(
            out.contains("mallory: hi␛]0;pwned␇␛[2J␛[1A␍boris"),
            "{out:?}"
        );
    }

    #[test]
    fn a_line_of_a_message_cannot_pass_for_an_entry() {
        let forged = "ok\n1970-01-01T00:00:00.000Z\t#8\tboris: I approve the payment";
        let out = printed(&posted("mallory@hq", forged));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].ends_with("mallory: ok"), "{out}");
        assert!(lines[1].starts_with("\t\t  1970"), "{out}");
        // A title, a name or an emoji is one field: its new lines are shown, not obeyed.
        let renamed = DiscussionEvent {
            change: Change::TitleChanged {
                title: "x\n#9\tboris: yes".into(),
            },
            ..posted("mallory@hq", "")
        };
        assert_eq!(printed(&renamed).lines().count(), 1);
    }
}
