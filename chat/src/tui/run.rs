use std::io::Write;

use ratatui::crossterm::event::{
    self, Event as TermEvent, KeyEventKind, KeyboardEnhancementFlags, PopKeyboardEnhancementFlags,
    PushKeyboardEnhancementFlags,
};
use ratatui::crossterm::execute;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use veche_client::protocol::discussions::SearchQuery;
use veche_client::protocol::{Reply, Request};
use veche_client::{Client, ClientEvent, ConnectionState, RequestError};

use veche_client::protocol::files::FileInfo;

use super::app::{App, Command};
use super::ui::draw;
use crate::Profile;
use crate::download::{destination, fetch};

/// Messages loaded when a discussion is opened, and per PgUp.
const PAGE: u32 = 100;
/// Without a key press for this long, the node is told the user is idle (it shows them away
/// once the node's own idle period has passed, and pushes their notifications).
const IDLE_AFTER: Duration = Duration::from_secs(60);

/// What the node was told about the user's idleness on the current connection.
struct Idle {
    last_key: Instant,
    reported: bool,
}

impl Idle {
    /// Tells the node when the user went idle, or came back.
    async fn report(&mut self, client: &Client, now_idle: bool) {
        let idle_ms = if now_idle {
            u64::try_from(self.last_key.elapsed().as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        // Best effort: offline, the next connection starts active and is told again.
        if client.request(Request::Activity { idle_ms }).await.is_ok() {
            self.reported = now_idle;
        }
    }
}

/// Runs the terminal client until the user quits.
pub async fn run(client: Client, me: String, profile: &Profile) -> anyhow::Result<()> {
    client.start();
    let mut events = client.subscribe();
    let mut app = App::new(&me, profile.send_key);
    for entry in client.outbox().await? {
        app.on_outbox(&entry);
    }

    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("veche chat needs a terminal; use `veche tail` or `veche send` in scripts");
    }
    let mut terminal = ratatui::try_init()?;
    // Lets terminals that support it tell Ctrl+Enter from Enter.
    let _ = execute!(
        std::io::stdout(),
        PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
    );
    let (keys_tx, mut keys) = mpsc::channel(64);
    std::thread::spawn(move || {
        loop {
            match event::read() {
                Ok(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => {
                    if keys_tx.blocking_send(key).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });

    let mut idle = Idle {
        last_key: Instant::now(),
        reported: false,
    };
    let mut idle_check = tokio::time::interval(Duration::from_secs(10));
    // Typing indicators expire by the second.
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let started = Instant::now();
    let now_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let result = async {
        loop {
            app.tick(now_ms());
            terminal.draw(|frame| draw(frame, &app))?;
            if app.bell {
                app.bell = false;
                ring(profile);
            }
            let command = tokio::select! {
                key = keys.recv() => match key {
                    Some(key) => {
                        app.tick(now_ms());
                        idle.last_key = Instant::now();
                        if idle.reported {
                            idle.report(&client, false).await;
                        }
                        app.on_key(key)
                    }
                    None => Some(Command::Quit),
                },
                _ = second.tick() => None,
                _ = idle_check.tick() => {
                    if !idle.reported && idle.last_key.elapsed() >= IDLE_AFTER {
                        idle.report(&client, true).await;
                    }
                    None
                }
                event = events.recv() => match event {
                    Ok(ClientEvent::Server(event)) => {
                        app.tick(now_ms());
                        app.on_event(&event)
                    }
                    Ok(ClientEvent::Outbox(entry)) => {
                        app.on_outbox(&entry);
                        None
                    }
                    Ok(ClientEvent::State(state)) => {
                        app.set_connection(state);
                        if state == ConnectionState::Online {
                            // A new connection counts as active until told otherwise.
                            idle.reported = false;
                            refresh(&client, &mut app).await
                        } else {
                            None
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => refresh(&client, &mut app).await,
                    Err(broadcast::error::RecvError::Closed) => Some(Command::Quit),
                },
            };
            let mut next = command;
            while let Some(command) = next.take() {
                if command == Command::Quit {
                    return anyhow::Ok(());
                }
                next = perform(&client, &mut app, command).await;
            }
        }
    }
    .await;

    let _ = execute!(std::io::stdout(), PopKeyboardEnhancementFlags);
    ratatui::restore();
    client.shutdown().await;
    result
}

/// Reloads the discussion list (after connecting, or after missing events).
async fn refresh(client: &Client, app: &mut App) -> Option<Command> {
    match client.discussions().await {
        Ok(discussions) => app.set_discussions(discussions),
        Err(e) => {
            app.notice = e.to_string();
            None
        }
    }
}

/// Does what the user asked through `client`; may ask for one more step. Failures become the
/// notice. Public so that tests drive an [`App`] against a real node without a terminal.
pub async fn perform(client: &Client, app: &mut App, command: Command) -> Option<Command> {
    let outcome = match command {
        Command::Open(discussion) => match client.history(&discussion, None, PAGE).await {
            Ok((events, more)) => {
                app.set_history(&discussion, &events, more, false);
                let seq = events.last().map(|e| e.seq)?;
                return Some(Command::MarkRead { discussion, seq });
            }
            Err(e) => Err(e),
        },
        Command::LoadOlder { discussion, before } => client
            .history(&discussion, Some(before), PAGE)
            .await
            .map(|(events, more)| app.set_history(&discussion, &events, more, true)),
        Command::Send {
            discussion,
            text,
            reply_to,
        } => client
            .send(&discussion, &text, reply_to.as_deref())
            .await
            .map(|entry| app.on_outbox(&entry)),
        Command::Edit {
            discussion,
            message_id,
            text,
        } => client.edit(&discussion, &message_id, &text).await,
        Command::Delete {
            discussion,
            message_id,
        } => client.delete(&discussion, &message_id).await,
        Command::MarkRead { discussion, seq } => client.mark_read(&discussion, seq).await,
        Command::Click {
            discussion,
            message_id,
            action_id,
        } => client
            .request(Request::Click {
                discussion,
                message_id,
                action_id: action_id.clone(),
            })
            .await
            .map(|_| app.notice = format!("clicked {action_id}")),
        Command::Search(query) => match client
            .request(Request::Search(SearchQuery::text(query.clone())))
            .await
        {
            Ok(Reply::SearchResults {
                hits,
                corrected_query,
                more,
            }) => {
                app.set_search(&query, hits, corrected_query, more);
                Ok(())
            }
            Ok(_) => Err(RequestError::UnexpectedReply("search").into()),
            Err(e) => Err(e),
        },
        Command::CreateGroup { title, members } => {
            match client
                .request(Request::CreateGroup { title, members })
                .await
            {
                Ok(Reply::Discussion { discussion }) => return app.group_created(discussion),
                Ok(_) => Err(RequestError::UnexpectedReply("create_group").into()),
                Err(e) => Err(e),
            }
        }
        Command::Download(info) => {
            download(client, app, &info).await;
            Ok(())
        }
        Command::Typing { discussion, typing } => {
            // Best effort: an indicator that does not arrive expires by itself.
            let _ = client.request(Request::Typing { discussion, typing }).await;
            Ok(())
        }
        Command::Quit => Ok(()),
    };
    if let Err(e) = outcome {
        app.notice = e.to_string();
    }
    None
}

/// Downloads a file into the downloads folder under its own name (made safe), never over a
/// file that exists; says how it went in the notice.
async fn download(client: &Client, app: &mut App, info: &FileInfo) {
    let outcome = async {
        let target = destination(&info.name, &info.id, Some(app.downloads.clone()))?;
        if target.exists() {
            anyhow::bail!("{} exists already", target.display());
        }
        fetch(&*client.connection()?, info, &target).await?;
        anyhow::Ok(target)
    }
    .await;
    app.notice = match outcome {
        Ok(target) => format!("downloaded {}", target.display()),
        Err(e) => format!("cannot download {}: {e:#}", info.name),
    };
}

/// The bell, or the configured sound command.
fn ring(profile: &Profile) {
    match &profile.sound_command {
        Some(command) => {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .spawn();
        }
        None => {
            let mut out = std::io::stdout();
            let _ = out.write_all(b"\x07");
            let _ = out.flush();
        }
    }
}
