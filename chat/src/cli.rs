//! Scriptable client commands: `veche login`, `discussions`, `send`, `tail`, `history`, `chat`.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use veche_client::protocol::discussions::{Change, DiscussionEvent, DiscussionInfo};
use veche_client::protocol::{Event, Reply, Request};
use veche_client::{Client, ClientEvent, OutboxState};

use crate::profile::client_dir;
use crate::untrusted::{indented, one_line};
use crate::{Profile, SendKey};

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
        Ok(Profile {
            server: self.server,
            server_name: self.server_name,
            ca_file: self.ca,
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
    /// Send a message (through the outbox: if the node is unreachable it goes out later).
    Send {
        /// Discussion id, title, or a user (opens the dialog with them).
        discussion: String,
        /// The text.
        text: String,
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
            let conn = client.connect_once().await?;
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
            dir,
        } => {
            let (client, _) = open(&dir).await?;
            // An id works offline; a name is resolved while connected.
            let id = if looks_like_id(&discussion) {
                discussion.clone()
            } else {
                let conn = client.connect_once().await?;
                resolve(&conn, &client, &discussion, true).await?
            };
            let entry = client.send(&id, &text, None).await?;
            client.start();
            let state = wait_for(&client, entry.id).await?;
            client.shutdown().await;
            match state {
                OutboxState::Sent { message_id, seq } => {
                    writeln!(out, "sent {} (seq {seq})", one_line(&message_id))?
                }
                OutboxState::Pending => writeln!(
                    out,
                    "queued: the node is unreachable; it goes out, in order, with the next `veche send` or while `veche chat` runs"
                )?,
                OutboxState::Failed { reason } => bail!("refused: {reason}"),
            }
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
) -> anyhow::Result<(Client, std::sync::Arc<veche_client::Connection>, String)> {
    let (client, _) = open(dir).await?;
    let conn = client.connect_once().await?;
    let id = resolve(&conn, &client, discussion, false).await?;
    Ok((client, conn, id))
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

/// A discussion id from an id, a title, or the other user of a dialog (`login` or `login@node`).
async fn resolve(
    conn: &veche_client::Connection,
    client: &Client,
    what: &str,
    open_dialog: bool,
) -> anyhow::Result<String> {
    let me = client.user().await?.unwrap_or_default();
    let discussions = list(conn).await?;
    if let Some(d) = discussions.iter().find(|d| d.id == what) {
        return Ok(d.id.clone());
    }
    let matches: Vec<&DiscussionInfo> = discussions
        .iter()
        .filter(|d| {
            let n = name(d, &me);
            n == what || n.split('@').next() == Some(what)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        // Not in the list: when sending, a user's name opens (or creates) the dialog with them.
        [] if open_dialog => match conn
            .request(Request::OpenDialog {
                with: what.to_owned(),
            })
            .await
        {
            Ok(Reply::Discussion { discussion }) => Ok(discussion.id),
            Ok(other) => bail!("unexpected reply {other:?}"),
            Err(e) if e.code() == Some(veche_client::protocol::ErrorCode::NotFound) => {
                bail!("no discussion or user named {what:?}")
            }
            Err(e) => Err(e.into()),
        },
        [] => bail!("no discussion named {what:?} in your list"),
        _ => bail!("{what:?} names several discussions; use the id"),
    }
}

/// A discussion id: `<32 hex digits>@<node>`.
fn looks_like_id(s: &str) -> bool {
    s.split_once('@').is_some_and(|(id, node)| {
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !node.is_empty()
    })
}

/// Waits until outbox entry `id` leaves the pending state. Gives up (leaving it queued) if the
/// client is not online within 5 s, or after 15 s in all.
async fn wait_for(client: &Client, id: i64) -> anyhow::Result<OutboxState> {
    let mut events = client.subscribe();
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(15);
    let mut state = client.state();
    loop {
        if started.elapsed() > Duration::from_secs(5)
            && *state.borrow_and_update() != veche_client::ConnectionState::Online
        {
            return Ok(OutboxState::Pending);
        }
        if let Some(entry) = client.outbox().await?.into_iter().find(|e| e.id == id)
            && entry.state != OutboxState::Pending
        {
            return Ok(entry.state);
        }
        let tick = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        match tokio::time::timeout_at(tick, events.recv()).await {
            Err(_) if tick == deadline => return Ok(OutboxState::Pending),
            Err(_) => {}
            Ok(Ok(ClientEvent::Outbox(_) | ClientEvent::State(_)) | Err(_)) => {}
            Ok(Ok(ClientEvent::Server(_))) => {}
        }
    }
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
