use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use veche_client::protocol::discussions::{
    Action, Change, DiscussionEvent, DiscussionInfo, DiscussionKind, Member, Message, Role,
    SearchHit,
};
use veche_client::protocol::files::FileInfo;
use veche_client::protocol::presence::{PresenceInfo, PresenceState};
use veche_client::protocol::{Event, Timestamp};
use veche_client::{ConnectionState, OutboxEntry, OutboxState};

use super::{App, Command, Focus, Mode, TYPING_EVERY_MS, draw};
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

/// Types `text`; a key may only say that the user is typing.
fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        let command = app.on_key(key(KeyCode::Char(c)));
        assert!(
            matches!(command, None | Some(Command::Typing { .. })),
            "{command:?}"
        );
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

fn presence(user: &str, state: PresenceState) -> Event {
    Event::Presence {
        users: vec![PresenceInfo {
            user: user.into(),
            state,
            status_text: String::new(),
        }],
    }
}

fn typing(discussion: &str, user: &str, on: bool) -> Event {
    Event::Typing {
        discussion: discussion.into(),
        user: user.into(),
        typing: on,
        expires_in_ms: if on { 6_000 } else { 0 },
    }
}

#[test]
fn presence_dots_follow_the_node_and_are_forgotten_offline() {
    let mut app = app_with_dialog(SendKey::Enter);
    app.set_connection(ConnectionState::Online);
    assert!(screen(&app).contains("○ petr@hq"), "{}", screen(&app));
    app.on_event(&presence("petr@hq", PresenceState::Available));
    app.on_event(&presence("olga@hq", PresenceState::Dnd));
    app.on_event(&presence(ME, PresenceState::Away));
    let text = screen(&app);
    for expected in ["● petr@hq", "⊖ olga@hq", "◐ ivan@hq"] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    app.on_event(&presence("petr@hq", PresenceState::Offline));
    assert!(screen(&app).contains("○ petr@hq"));
    // Disconnected, nobody's presence is known; the next connection's snapshot tells it.
    app.on_event(&presence("olga@hq", PresenceState::Available));
    app.set_connection(ConnectionState::Connecting);
    assert!(screen(&app).contains("○ olga@hq"));
}

#[test]
fn typing_of_others_shows_until_it_stops_expires_or_they_post() {
    let mut app = app_with_dialog(SendKey::Enter);
    app.set_connection(ConnectionState::Online);
    app.tick(1_000);
    app.on_event(&typing("d1", "petr@hq", true));
    app.on_event(&typing("d2", "olga@hq", true));
    // One's own typing (from another device) is not shown.
    app.on_event(&typing("d1", ME, true));
    let text = screen(&app);
    assert!(text.contains("✎ petr is typing…"), "{text}");
    assert!(text.contains("olga@hq ✎"), "{text}");
    assert!(!text.contains("ivan is typing"), "{text}");

    app.on_event(&typing("d1", "petr@hq", false));
    assert!(!screen(&app).contains("is typing"));
    app.on_event(&typing("d1", "petr@hq", true));
    app.on_event(&Event::Discussion {
        event: message("d1", 2, "petr@hq", "готово"),
    });
    assert!(!screen(&app).contains("is typing"), "a message ends it");
    app.tick(6_999);
    assert!(screen(&app).contains("olga@hq ✎"));
    app.tick(7_000);
    assert!(!screen(&app).contains("✎"), "not renewed in time");
}

#[test]
fn typing_is_sent_at_most_every_three_seconds_and_stopped_when_the_composer_empties() {
    let mut app = app_with_dialog(SendKey::Enter);
    app.tick(10_000);
    let on = Some(Command::Typing {
        discussion: "d1".into(),
        typing: true,
    });
    let off = Some(Command::Typing {
        discussion: "d1".into(),
        typing: false,
    });
    assert_eq!(app.on_key(key(KeyCode::Char('П'))), on);
    assert_eq!(app.on_key(key(KeyCode::Char('р'))), None);
    app.tick(10_000 + TYPING_EVERY_MS - 1);
    assert_eq!(app.on_key(key(KeyCode::Char('и'))), None);
    app.tick(10_000 + TYPING_EVERY_MS);
    assert_eq!(app.on_key(key(KeyCode::Char('в'))), on);
    // Keys that leave the composer as it is say nothing.
    assert_eq!(app.on_key(key(KeyCode::Tab)), None);
    // Erasing everything stops it; typing again starts it at once.
    for _ in 0..3 {
        assert_eq!(app.on_key(key(KeyCode::Backspace)), None);
    }
    assert_eq!(app.on_key(key(KeyCode::Backspace)), off);
    assert_eq!(app.on_key(key(KeyCode::Char('Д'))), on);
    assert_eq!(app.on_key(key(KeyCode::Esc)), off);
    // Sending ends it for the others; the next message starts another.
    assert_eq!(app.on_key(key(KeyCode::Char('а'))), on);
    assert!(matches!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Send { .. })
    ));
    assert_eq!(app.on_key(key(KeyCode::Char('и'))), on);
}

fn file(id: &str, name: &str, size: u64) -> FileInfo {
    FileInfo {
        id: id.into(),
        name: name.into(),
        size,
        mime: "application/pdf".into(),
        sha256: "00".into(),
        thumbnail: false,
        dimensions: None,
        discussion: "d1".into(),
        uploader: "petr@hq".into(),
        created_at: Timestamp(0),
    }
}

/// A message of petr's with buttons and files, selected.
fn app_with_buttons_and_files(actions: &[(&str, &str)], files: Vec<FileInfo>) -> App {
    let mut app = app_with_dialog(SendKey::Enter);
    let mut event = message("d1", 1, "petr@hq", "Счёт 42 на оплату");
    if let Change::MessagePosted { message } = &mut event.change {
        message.actions = actions
            .iter()
            .map(|(id, label)| Action {
                id: (*id).into(),
                label: (*label).into(),
            })
            .collect();
        message.files = files;
    }
    app.set_history("d1", &[event], false, false);
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.cursor, Some(0));
    app
}

#[test]
fn buttons_are_shown_numbered_and_clicked_from_the_keyboard() {
    let mut app = app_with_buttons_and_files(
        &[("approve", "Одобрить"), ("reject", "Отклонить\x1b[2J")],
        vec![],
    );
    let text = screen_of_width(&app, 140);
    assert!(
        text.contains("[1 Одобрить] [2 Отклонить␛[2J]"),
        "buttons missing:\n{text}"
    );
    // Two buttons: Ctrl+B asks which; the digit clicks, and is not typed.
    assert_eq!(app.on_key(ctrl(KeyCode::Char('b'))), None);
    assert!(app.notice.contains("1–2"), "{}", app.notice);
    assert_eq!(
        app.on_key(key(KeyCode::Char('2'))),
        Some(Command::Click {
            discussion: "d1".into(),
            message_id: "m1".into(),
            action_id: "reject".into()
        })
    );
    assert!(app.composer.is_empty());
    // A number past the buttons, or another key, clicks nothing.
    app.on_key(ctrl(KeyCode::Char('b')));
    assert_eq!(app.on_key(key(KeyCode::Char('3'))), None);
    assert_eq!(app.notice, "no button 3");
    app.on_key(ctrl(KeyCode::Char('b')));
    assert_eq!(app.on_key(key(KeyCode::Char('x'))), None);
    assert!(app.composer.is_empty());
    assert!(
        matches!(
            app.on_key(key(KeyCode::Char('1'))),
            Some(Command::Typing { .. })
        ),
        "typed, not clicked"
    );
    assert_eq!(app.composer, "1");

    // One button is clicked at once; a message without buttons says so.
    let mut app = app_with_buttons_and_files(&[("ok", "OK")], vec![]);
    assert_eq!(
        app.on_key(ctrl(KeyCode::Char('b'))),
        Some(Command::Click {
            discussion: "d1".into(),
            message_id: "m1".into(),
            action_id: "ok".into()
        })
    );
    assert_eq!(app.on_key(ctrl(KeyCode::Char('o'))), None);
    assert_eq!(app.notice, "this message has no file");
}

#[test]
fn files_are_listed_under_their_message_and_downloaded_by_number() {
    let report = file("f_1", "отчёт\x07.pdf", 1536);
    let scan = file("f_2", "скан.png", 3 * 1024 * 1024);
    let mut app = app_with_buttons_and_files(&[], vec![report.clone(), scan.clone()]);
    let text = screen_of_width(&app, 140);
    for expected in ["[file 1] отчёт␇.pdf (1.5 KB)", "[file 2] скан.png (3.0 MB)"] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    assert_eq!(app.on_key(ctrl(KeyCode::Char('o'))), None);
    assert_eq!(
        app.on_key(key(KeyCode::Char('2'))),
        Some(Command::Download(scan))
    );
    // A deleted message loses its files and buttons.
    app.on_event(&Event::Discussion {
        event: DiscussionEvent {
            discussion: "d1".into(),
            seq: 2,
            at: Timestamp(0),
            actor: "petr@hq".into(),
            change: Change::MessageDeleted {
                message_id: "m1".into(),
            },
        },
    });
    assert!(!screen_of_width(&app, 140).contains("[file"));
    assert_eq!(app.on_key(ctrl(KeyCode::Char('o'))), None);
}

fn hit(discussion: &str, seq: u64, author: &str, snippet: &str) -> SearchHit {
    SearchHit {
        discussion: discussion.into(),
        message_id: format!("m{seq}"),
        seq,
        author: author.into(),
        created_at: Timestamp(0),
        snippet: snippet.into(),
    }
}

#[test]
fn search_shows_hits_and_opens_the_chosen_one_at_its_message() {
    let mut app = app_with_dialog(SendKey::Enter);
    type_text(&mut app, "черновик");
    // The draft is put aside: the others see the user stop typing.
    assert_eq!(
        app.on_key(ctrl(KeyCode::Char('f'))),
        Some(Command::Typing {
            discussion: "d1".into(),
            typing: false
        })
    );
    assert_eq!(app.mode, Mode::Search);
    assert!(app.composer.is_empty(), "the draft is put aside");
    type_text(&mut app, "счёт");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Search("счёт".into()))
    );
    app.set_search(
        "счёт",
        vec![
            hit("d1", 7, "petr@hq", "<b>Счёт</b> 42 &amp; 43\x1b[2J"),
            hit("d2", 3, "olga@hq", "где <b>счёт</b>?"),
        ],
        None,
        false,
    );
    let text = screen_of_width(&app, 140);
    for expected in [
        "Поиск: счёт",
        "petr@hq #7  petr: *Счёт* 42 & 43␛[2J",
        "olga@hq #3  olga: где *счёт*?",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    // Up and Down choose a hit (not a discussion); Enter opens it at the message.
    assert_eq!(app.on_key(key(KeyCode::Down)), None);
    assert_eq!(app.selected, 0);
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Open("d2".into()))
    );
    assert_eq!(app.mode, Mode::Compose);
    assert_eq!(app.composer, "черновик", "the draft is back");
    assert_eq!(app.selected, 1);
    app.set_history(
        "d2",
        &[
            message("d2", 2, "olga@hq", "привет"),
            message("d2", 3, "olga@hq", "где счёт?"),
            message("d2", 4, ME, "вот"),
        ],
        false,
        false,
    );
    assert_eq!(app.focus, Focus::Messages);
    assert_eq!(app.cursor, Some(1));
    assert!(!screen(&app).contains("Поиск:"));

    // A changed query searches again; Esc closes the search.
    app.on_key(ctrl(KeyCode::Char('f')));
    type_text(&mut app, "акт");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Search("акт".into()))
    );
    app.set_search("акт", vec![], Some("fre".into()), false);
    let text = screen(&app);
    assert!(text.contains("no messages match"), "{text}");
    assert!(text.contains("hits for fre"), "{text}");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::Search("акт".into()))
    );
    assert_eq!(app.on_key(key(KeyCode::Esc)), None);
    assert_eq!(app.mode, Mode::Compose);
    assert!(app.search.is_none());
    // An answer that comes after the search was left is not shown.
    app.set_search("акт", vec![hit("d1", 1, "petr@hq", "акт")], None, false);
    assert!(app.search.is_none());
}

#[test]
fn a_group_is_named_then_given_members_and_opened_once_created() {
    let mut app = app_with_dialog(SendKey::Enter);
    assert_eq!(app.on_key(ctrl(KeyCode::Char('n'))), None);
    assert_eq!(app.mode, Mode::GroupTitle);
    assert!(screen_of_width(&app, 140).contains("Новая группа: название"));
    // An empty title goes nowhere.
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    assert_eq!(app.mode, Mode::GroupTitle);
    type_text(&mut app, "Закупки Q3");
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    assert_eq!(app.mode, Mode::GroupMembers("Закупки Q3".into()));
    type_text(&mut app, "petr, olga@hq  boris");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Some(Command::CreateGroup {
            title: "Закупки Q3".into(),
            members: vec!["petr".into(), "olga@hq".into(), "boris".into()],
        })
    );
    assert_eq!(app.mode, Mode::Compose);

    let mut group = dialog("g1", "petr@hq", 0);
    group.kind = DiscussionKind::Group;
    group.title = "Закупки Q3".into();
    assert_eq!(
        app.group_created(group.clone()),
        Some(Command::Open("g1".into()))
    );
    assert_eq!(app.current().map(|d| d.id.as_str()), Some("g1"));
    // Its creation event does not add it twice.
    assert_eq!(app.group_created(group), Some(Command::Open("g1".into())));
    assert_eq!(app.discussions.len(), 3);

    // Esc on the way leaves the composer as it was.
    type_text(&mut app, "текст");
    app.on_key(ctrl(KeyCode::Char('n')));
    type_text(&mut app, "Другая");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.on_key(key(KeyCode::Esc)), None);
    assert_eq!(
        (app.mode.clone(), app.composer.as_str()),
        (Mode::Compose, "текст")
    );
}

#[test]
fn long_and_multi_line_messages_keep_the_newest_line_in_view() {
    let mut app = app_with_dialog(SendKey::Enter);
    let long = "очень длинная строка ".repeat(30);
    let mut events = Vec::new();
    for seq in 1..=4 {
        events.push(message(
            "d1",
            seq,
            "petr@hq",
            &format!("{long}\nвторая\nтретья"),
        ));
    }
    events.push(message("d1", 5, "petr@hq", "последнее"));
    app.set_history("d1", &events, false, false);
    let text = screen(&app);
    assert!(text.contains("petr: последнее"), "{text}");
    // Wrapped rows are indented under the text, like a message's own lines: no row of a
    // message can pass for another entry.
    for row in text.lines().skip(1).take(12) {
        let pane = row.split('│').nth(3).unwrap_or_default();
        assert!(
            pane.starts_with("petr: ") || pane.starts_with("      "),
            "{row:?} in\n{text}"
        );
    }

    // The selected message is in view too, though the lines before it wrap.
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Up));
    app.on_key(key(KeyCode::Up));
    let text = screen(&app);
    assert!(text.contains("третья"), "{text}");
}
