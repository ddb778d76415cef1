use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use veche_client::protocol::discussions::{
    Change, DiscussionEvent, DiscussionInfo, DiscussionKind, Member, Message, Role,
};
use veche_client::protocol::{Event, Timestamp};
use veche_client::{OutboxEntry, OutboxState};

use super::{App, Command, Focus, Mode, draw};
use crate::SendKey;

const ME: &str = "ivan@hq";

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::CONTROL)
}

fn alt(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::ALT)
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert_eq!(app.on_key(key(KeyCode::Char(c))), None);
    }
}

fn dialog(id: &str, other: &str, unread: u64) -> DiscussionInfo {
    DiscussionInfo {
        id: id.into(),
        kind: DiscussionKind::Dialog,
        title: String::new(),
        object: None,
        members: vec![
            Member {
                user: ME.into(),
                role: Role::Member,
            },
            Member {
                user: other.into(),
                role: Role::Member,
            },
        ],
        last_seq: 1,
        last_activity_at: Timestamp(0),
        read_seq: 0,
        unread,
        mentions: 0,
        following: true,
    }
}

fn message(discussion: &str, seq: u64, author: &str, text: &str) -> DiscussionEvent {
    DiscussionEvent {
        discussion: discussion.into(),
        seq,
        at: Timestamp(0),
        actor: author.into(),
        change: Change::MessagePosted {
            message: Box::new(Message {
                id: format!("m{seq}"),
                discussion: discussion.into(),
                seq,
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

fn app_with_dialog(send_key: SendKey) -> App {
    let mut app = App::new(ME, send_key);
    let open = app.set_discussions(vec![dialog("d1", "petr@hq", 0), dialog("d2", "olga@hq", 3)]);
    assert_eq!(open, Some(Command::Open("d1".into())));
    app
}

fn screen(app: &App) -> String {
    screen_of_width(app, 100)
}

fn screen_of_width(app: &App, width: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, 20)).expect("test backend");
    terminal.draw(|f| draw(f, app)).expect("draw");
    let buffer = terminal.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            out.push_str(buffer[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

#[test]
fn enter_sends_by_default_and_alt_enter_breaks_the_line() {
    let mut app = app_with_dialog(SendKey::Enter);
    type_text(&mut app, "Привет");
    assert_eq!(app.on_key(alt(KeyCode::Enter)), None);
    type_text(&mut app, "как дела?");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Send {
            discussion: "d1".into(),
            text: "Привет\nкак дела?".into(),
            reply_to: None
        })
    );
    assert!(app.composer.is_empty());
}

#[test]
fn ctrl_enter_sends_when_configured_and_enter_breaks_the_line() {
    let mut app = app_with_dialog(SendKey::CtrlEnter);
    type_text(&mut app, "строка 1");
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    assert_eq!(app.on_key(alt(KeyCode::Enter)), None);
    type_text(&mut app, "строка 2");
    assert_eq!(
        app.on_key(ctrl(KeyCode::Enter)),
        Some(Command::Send {
            discussion: "d1".into(),
            text: "строка 1\n\nстрока 2".into(),
            reply_to: None
        })
    );
}

#[test]
fn alt_enter_sends_when_configured() {
    let mut app = app_with_dialog(SendKey::AltEnter);
    type_text(&mut app, "да");
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    assert_eq!(app.on_key(ctrl(KeyCode::Enter)), None);
    assert_eq!(
        app.on_key(alt(KeyCode::Enter)),
        Some(Command::Send {
            discussion: "d1".into(),
            text: "да".into(),
            reply_to: None
        })
    );
}

#[test]
fn empty_messages_are_not_sent() {
    let mut app = app_with_dialog(SendKey::Enter);
    type_text(&mut app, "   ");
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
}

#[test]
fn reply_edit_and_delete_act_on_the_selected_message() {
    let mut app = app_with_dialog(SendKey::Enter);
    app.set_history(
        "d1",
        &[
            message("d1", 1, "petr@hq", "Счёт готов?"),
            message("d1", 2, ME, "Почти"),
        ],
        false,
        false,
    );
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.focus, Focus::Messages);
    assert_eq!(app.cursor, Some(1));

    // Edit own message: its text comes into the composer.
    assert_eq!(app.on_key(ctrl(KeyCode::Char('e'))), None);
    assert_eq!(app.mode, Mode::Edit("m2".into()));
    assert_eq!(app.composer, "Почти");
    type_text(&mut app, " готов");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Edit {
            discussion: "d1".into(),
            message_id: "m2".into(),
            text: "Почти готов".into()
        })
    );

    // Someone else's message cannot be edited or deleted, but can be replied to.
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.cursor, Some(0));
    assert_eq!(app.on_key(ctrl(KeyCode::Char('e'))), None);
    assert_eq!(app.mode, Mode::Compose);
    assert_eq!(app.on_key(ctrl(KeyCode::Char('d'))), None);
    app.on_key(ctrl(KeyCode::Char('r')));
    type_text(&mut app, "Да");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Send {
            discussion: "d1".into(),
            text: "Да".into(),
            reply_to: Some("m1".into())
        })
    );

    app.on_key(key(KeyCode::Down));
    assert_eq!(
        app.on_key(ctrl(KeyCode::Char('d'))),
        Some(Command::Delete {
            discussion: "d1".into(),
            message_id: "m2".into()
        })
    );
}

#[test]
fn moving_through_the_list_opens_discussions_and_clears_their_unread() {
    let mut app = app_with_dialog(SendKey::Enter);
    assert_eq!(
        app.on_key(key(KeyCode::Down)),
        Some(Command::Open("d2".into()))
    );
    assert_eq!(app.discussions[1].unread, 0);
    assert_eq!(app.on_key(key(KeyCode::Down)), None, "stays on the last");
    assert_eq!(app.on_key(ctrl(KeyCode::Char('q'))), Some(Command::Quit));
}

#[test]
fn live_events_update_the_view_ring_the_bell_and_mark_read() {
    let mut app = app_with_dialog(SendKey::Enter);
    let cmd = app.on_event(&Event::Discussion {
        event: message("d1", 2, "petr@hq", "Новое"),
    });
    assert_eq!(
        cmd,
        Some(Command::MarkRead {
            discussion: "d1".into(),
            seq: 2
        })
    );
    assert!(app.bell);
    assert_eq!(app.lines.len(), 1);
    // The same event again (a resync) changes nothing.
    app.on_event(&Event::Discussion {
        event: message("d1", 2, "petr@hq", "Новое"),
    });
    assert_eq!(app.lines.len(), 1);
    // A message in another discussion counts as unread there.
    app.bell = false;
    assert_eq!(
        app.on_event(&Event::Discussion {
            event: message("d2", 5, "olga@hq", "Эй")
        }),
        None
    );
    assert_eq!(app.discussions[1].unread, 4);
    assert!(app.bell);
    // One's own messages do not ring.
    app.bell = false;
    app.on_event(&Event::Discussion {
        event: message("d1", 3, ME, "Моё"),
    });
    assert!(!app.bell);
}

#[test]
fn the_screen_shows_russian_text_pending_and_failed_messages_and_the_send_key() {
    let mut app = app_with_dialog(SendKey::CtrlEnter);
    app.set_history(
        "d1",
        &[message("d1", 1, "petr@hq", "Счёт № 42 оплачен")],
        false,
        false,
    );
    app.on_outbox(&OutboxEntry {
        id: 1,
        client_msg_id: "c1".into(),
        discussion: "d1".into(),
        target: None,
        text: "Спасибо!".into(),
        reply_to: None,
        data: None,
        files: vec![],
        state: OutboxState::Pending,
        created_at: Timestamp(0),
    });
    app.on_outbox(&OutboxEntry {
        id: 2,
        client_msg_id: "c2".into(),
        discussion: "d1".into(),
        target: None,
        text: "очень длинное".into(),
        reply_to: None,
        data: None,
        files: vec![],
        state: OutboxState::Failed {
            reason: "the text is too long".into(),
        },
        created_at: Timestamp(0),
    });
    type_text(&mut app, "Черновик");
    let text = screen(&app);
    for expected in [
        "petr@hq",
        "olga@hq (3)",
        "petr: Счёт № 42 оплачен",
        "ivan: Спасибо! ⏳",
        "sending",
        "✗ failed: the text is too long",
        "Черновик",
        "Ctrl+Enter отправляет",
        "◌ connecting",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from the screen:\n{text}"
        );
    }

    // Once stored, the pending marker goes away.
    app.on_outbox(&OutboxEntry {
        id: 1,
        client_msg_id: "c1".into(),
        discussion: "d1".into(),
        target: None,
        text: "Спасибо!".into(),
        reply_to: None,
        data: None,
        files: vec![],
        state: OutboxState::Sent {
            message_id: "m9".into(),
            seq: 9,
        },
        created_at: Timestamp(0),
    });
    assert!(!screen(&app).contains("⏳"));
}

#[test]
fn control_characters_from_the_node_are_shown_not_obeyed_and_lines_stay_lines() {
    let mut app = app_with_dialog(SendKey::Enter);
    let mut titled = dialog("d3", "x@hq", 1);
    titled.kind = DiscussionKind::Group;
    titled.title = "Закупки\x1b]0;pwned\x07".into();
    app.discussions.push(titled);
    app.set_history(
        "d1",
        &[
            message("d1", 1, "petr@hq", "ok\x1b[2J\rboris: I approve"),
            message("d1", 2, "petr@hq", "первая строка\nвторая\tстрока"),
        ],
        false,
        false,
    );
    app.on_event(&Event::NotDelivered {
        discussion: "d1".into(),
        message_id: None,
        reason: "refused\x1b[31m".into(),
    });
    let text = screen_of_width(&app, 160);
    for expected in [
        "petr: ok␛[2J␍boris: I approve",
        "Закупки␛]0;pwned␇",
        "not delivered: refused␛[31m",
        "petr: первая строка",
        // The second line of a message is indented under its text, not a line of its own.
        "      вторая    строка",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from the screen:\n{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start_matches('│').starts_with("boris")),
        "{text}"
    );
}
