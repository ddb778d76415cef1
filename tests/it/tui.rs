//! The terminal client (`veche chat`) against a real node, without a terminal: keys go to its
//! state ([`App`]), the commands it asks for run through [`tui::perform`] on a real SDK
//! client, and the client's events go back to the state, as `veche chat`'s loop does.

use std::time::Instant;

use anyhow::Context;
use tokio::sync::broadcast;
use veche_chat::SendKey;
use veche_chat::tui::{self, App, Command, Focus, KeyCode, KeyEvent, KeyModifiers};
use veche_client::protocol::discussions::{Action, Change, DiscussionInfo, DiscussionKind};
use veche_client::protocol::presence::PresenceState;
use veche_client::protocol::{Event, Reply, Request};
use veche_client::{Client, ClientEvent, Connection, ConnectionState};
use veche_node::test_utils::TestNode;

use crate::files::{content, sent, sha, upload};
use crate::support::*;

/// One user's terminal client.
struct Tui {
    app: App,
    client: Client,
    events: broadcast::Receiver<ClientEvent>,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Tui {
    /// Logs `login` in and waits until the client is online with its discussions listed.
    async fn start(node: &TestNode, login: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let client = Client::open(dir.path(), client_config(node)).await?;
        client.login(login, PASSWORD, "terminal").await?;
        let me = client.user().await?.context("logged in")?;
        let events = client.subscribe();
        client.start();
        let mut tui = Self {
            app: App::new(&me, SendKey::Enter),
            client,
            events,
            started: Instant::now(),
            _dir: dir,
        };
        tui.until("online", |app| app.connection == ConnectionState::Online)
            .await?;
        Ok(tui)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs a command and the ones it leads to.
    async fn run(&mut self, mut next: Option<Command>) {
        while let Some(command) = next.take() {
            next = tui::perform(&self.client, &mut self.app, command).await;
        }
    }

    async fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) {
        self.app.tick(self.now_ms());
        let command = self.app.on_key(KeyEvent::new(code, modifiers));
        self.run(command).await;
    }

    async fn press(&mut self, code: KeyCode) {
        self.key(code, KeyModifiers::NONE).await;
    }

    async fn ctrl(&mut self, c: char) {
        self.key(KeyCode::Char(c), KeyModifiers::CONTROL).await;
    }

    async fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            self.press(KeyCode::Char(c)).await;
        }
    }

    /// Reloads the discussion list, as `veche chat` does on connecting.
    async fn refresh(&mut self) -> anyhow::Result<()> {
        let list = self.client.discussions().await?;
        let command = self.app.set_discussions(list);
        self.run(command).await;
        Ok(())
    }

    /// Applies the client's events until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&App) -> bool) -> anyhow::Result<()> {
        within(15, what, async {
            while !done(&self.app) {
                let event = self.events.recv().await?;
                self.app.tick(self.now_ms());
                match event {
                    ClientEvent::Server(event) => {
                        let command = self.app.on_event(&event);
                        self.run(command).await;
                    }
                    ClientEvent::Outbox(entry) => self.app.on_outbox(&entry),
                    ClientEvent::State(state) => {
                        self.app.set_connection(state);
                        if state == ConnectionState::Online {
                            self.refresh().await?;
                        }
                    }
                }
            }
            anyhow::Ok(())
        })
        .await?
    }

    /// Opens the discussion `id` (moving through the list).
    async fn open(&mut self, id: &str) -> anyhow::Result<()> {
        self.refresh().await?;
        let index = self
            .app
            .discussions
            .iter()
            .position(|d| d.id == id)
            .context("the discussion is listed")?;
        while self.app.selected != index {
            let code = if self.app.selected < index {
                KeyCode::Down
            } else {
                KeyCode::Up
            };
            self.press(code).await;
        }
        Ok(())
    }
}

/// Users eva (who runs the terminal client) and fil, and their dialog, opened by fil.
async fn eva_and_fil() -> anyhow::Result<(TestNode, Connection, DiscussionInfo)> {
    let node = TestNode::spawn().await?;
    node.add_user("eva", PASSWORD, false).await?;
    let fil = user(&node, "fil").await?;
    let dialog = discussion(&fil, Request::OpenDialog { with: "eva".into() }).await?;
    Ok((node, fil, dialog))
}

#[tokio::test]
async fn the_terminal_client_shows_presence_and_typing_and_sends_typing() -> anyhow::Result<()> {
    let _guard = subscribe();
    let (node, fil, dialog) = eva_and_fil().await?;
    let mut eva = Tui::start(&node, "eva").await?;
    eva.until("fil shown available", |app| {
        app.presence_of("fil@test.local") == PresenceState::Available
    })
    .await?;
    ask(
        &fil,
        Request::Typing {
            discussion: dialog.id.clone(),
            typing: true,
        },
    )
    .await?;
    let id = dialog.id.clone();
    eva.until("fil shown typing", |app| {
        app.typing_in(&id) == ["fil@test.local"]
    })
    .await?;

    // eva types: fil is told, once for the keys of a few seconds.
    eva.open(&dialog.id).await?;
    eva.type_text("Сейчас").await;
    let typing = within(10, "eva's typing", async {
        loop {
            match fil.next_event().await {
                Some(Event::Typing {
                    discussion,
                    user,
                    typing,
                    ..
                }) if user == "eva@test.local" => return anyhow::Ok((discussion, typing)),
                Some(_) => {}
                None => anyhow::bail!("the event stream ended"),
            }
        }
    })
    .await??;
    assert_eq!(typing, (dialog.id.clone(), true));
    // Esc empties the composer: eva stopped.
    eva.press(KeyCode::Esc).await;
    let stopped = within(10, "eva stopped typing", async {
        loop {
            match fil.next_event().await {
                Some(Event::Typing { user, typing, .. }) if user == "eva@test.local" => {
                    return anyhow::Ok(typing);
                }
                Some(_) => {}
                None => anyhow::bail!("the event stream ended"),
            }
        }
    })
    .await??;
    assert!(
        !stopped,
        "one `typing: true` for the whole word, then `false`"
    );
    eva.client.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_terminal_client_clicks_a_button_from_the_keyboard() -> anyhow::Result<()> {
    let _guard = subscribe();
    let (node, fil, dialog) = eva_and_fil().await?;
    let mut with_buttons = message(&dialog.id, "p1", "Утвердить оплату?");
    with_buttons.actions = vec![
        Action {
            id: "approve".into(),
            label: "Утвердить".into(),
        },
        Action {
            id: "reject".into(),
            label: "Отклонить".into(),
        },
    ];
    let Reply::Sent { message_id, .. } = ask(&fil, Request::Send(with_buttons)).await? else {
        anyhow::bail!("not sent");
    };
    let mut eva = Tui::start(&node, "eva").await?;
    eva.open(&dialog.id).await?;
    eva.until("the message with its buttons", |app| {
        app.lines.iter().any(|l| l.actions.len() == 2)
    })
    .await?;
    eva.press(KeyCode::Tab).await;
    assert_eq!(eva.app.focus, Focus::Messages);
    eva.ctrl('b').await;
    eva.press(KeyCode::Char('2')).await;
    assert_eq!(eva.app.notice, "clicked reject");
    within(10, "the click reaches fil", async {
        loop {
            match fil.next_event().await {
                Some(Event::ActionClicked {
                    message_id: clicked,
                    action_id,
                    user,
                    ..
                }) => {
                    assert_eq!(
                        (clicked.as_str(), action_id.as_str(), user.as_str()),
                        (message_id.as_str(), "reject", "eva@test.local")
                    );
                    return anyhow::Ok(());
                }
                Some(_) => {}
                None => anyhow::bail!("the event stream ended"),
            }
        }
    })
    .await??;
    eva.client.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_terminal_client_lists_and_downloads_a_file() -> anyhow::Result<()> {
    let _guard = subscribe();
    let (node, fil, dialog) = eva_and_fil().await?;
    let data = content(27, 300_000);
    let file = upload(&fil, &dialog.id, "акт.bin", &data).await?;
    sent(&fil, &dialog.id, "f1", "Акт", &[&file.id]).await?;
    let mut eva = Tui::start(&node, "eva").await?;
    let downloads = tempfile::tempdir()?;
    eva.app.downloads = downloads.path().to_owned();
    eva.open(&dialog.id).await?;
    eva.until("the message with its file", |app| {
        app.lines.iter().any(|l| l.files.len() == 1)
    })
    .await?;
    eva.press(KeyCode::Tab).await;
    // One file: Ctrl+O downloads it at once.
    eva.ctrl('o').await;
    let path = downloads.path().join("акт.bin");
    assert!(
        eva.app.notice.starts_with("downloaded"),
        "{}",
        eva.app.notice
    );
    assert_eq!(sha(&std::fs::read(&path)?), sha(&data));
    // Again: the file there is not replaced.
    eva.ctrl('o').await;
    assert!(
        eva.app.notice.contains("exists already"),
        "{}",
        eva.app.notice
    );
    eva.client.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_terminal_client_searches_and_opens_a_hit_at_its_message() -> anyhow::Result<()> {
    let _guard = subscribe();
    let (node, fil, dialog) = eva_and_fil().await?;
    let group = discussion(
        &fil,
        Request::CreateGroup {
            title: "Бухгалтерия".into(),
            members: vec!["eva".into()],
        },
    )
    .await?;
    post(&fil, &dialog.id, "d1", "привет").await?;
    let (wanted, _) = post(&fil, &dialog.id, "d2", "Счёт 42 оплачен").await?;
    post(&fil, &dialog.id, "d3", "пока").await?;
    post(&fil, &group.id, "g1", "новости").await?;
    let mut eva = Tui::start(&node, "eva").await?;
    eva.open(&group.id).await?;

    eva.ctrl('f').await;
    eva.type_text("счёт").await;
    // Enter searches again until the node's index has the message.
    eventually(15, "a hit", async || {
        eva.press(KeyCode::Enter).await;
        let hits = eva.app.search.as_ref().map_or(0, |s| s.hits.len());
        anyhow::ensure!(hits == 1, "{hits} hits");
        Ok(())
    })
    .await?;
    // Enter on the hit opens its discussion at the message.
    eva.press(KeyCode::Enter).await;
    assert!(eva.app.search.is_none());
    assert_eq!(
        eva.app.current().map(|d| d.id.as_str()),
        Some(dialog.id.as_str())
    );
    assert_eq!(eva.app.focus, Focus::Messages);
    let selected = eva.app.cursor.and_then(|i| eva.app.lines.get(i));
    assert_eq!(selected.map(|l| l.id.as_str()), Some(wanted.as_str()));
    eva.client.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_terminal_client_creates_a_group() -> anyhow::Result<()> {
    let _guard = subscribe();
    let (node, fil, _dialog) = eva_and_fil().await?;
    let mut eva = Tui::start(&node, "eva").await?;
    eva.ctrl('n').await;
    eva.type_text("Закупки Q3").await;
    eva.press(KeyCode::Enter).await;
    eva.type_text("fil").await;
    eva.press(KeyCode::Enter).await;
    assert_eq!(eva.app.notice, "group created");
    let group = eva.app.current().context("a discussion is open")?.clone();
    assert_eq!(group.kind, DiscussionKind::Group);
    assert_eq!(group.title, "Закупки Q3");
    // fil is in it.
    let event = event_matching(&fil, |e| e.discussion == group.id).await?;
    assert!(
        matches!(
            &event.change,
            Change::Created { .. } | Change::MembersAdded { .. }
        ),
        "{event:?}"
    );
    // eva can write there at once.
    eva.type_text("Начнём").await;
    eva.press(KeyCode::Enter).await;
    event_matching(&fil, |e| {
        matches!(&e.change, Change::MessagePosted { message } if message.text.as_deref() == Some("Начнём"))
    })
    .await?;
    eva.client.shutdown().await;
    Ok(())
}
