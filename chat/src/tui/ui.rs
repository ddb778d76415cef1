use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line as TextLine, Span, Text};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use veche_client::ConnectionState;

use super::app::{App, Focus, Mode};

/// Draws the whole screen: discussions on the left, messages and composer on the right,
/// status at the bottom.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let [main, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    let [left, right] =
        Layout::horizontal([Constraint::Length(32), Constraint::Min(20)]).areas(main);
    let composer_height = (app.composer.lines().count().max(1) + 2).min(8) as u16 + 1;
    let [messages_area, composer_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(composer_height)]).areas(right);

    // Discussions.
    let items: Vec<ListItem<'_>> = app
        .discussions
        .iter()
        .map(|d| {
            let mut spans = vec![Span::raw(app.name_of(d))];
            if d.unread > 0 {
                spans.push(Span::raw(format!(" ({})", d.unread)).bold());
            }
            if d.mentions > 0 {
                spans.push(Span::raw(" @").bold());
            }
            ListItem::new(TextLine::from(spans))
        })
        .collect();
    let mut state =
        ListState::default().with_selected((!app.discussions.is_empty()).then_some(app.selected));
    let list_block = Block::bordered().title(" Обсуждения ");
    let list = List::new(items)
        .block(if app.focus == Focus::Discussions {
            list_block.bold()
        } else {
            list_block
        })
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(list, left, &mut state);

    // Messages, then this discussion's pending and failed ones.
    let title = app
        .current()
        .map(|d| format!(" {} ", app.name_of(d)))
        .unwrap_or_default();
    let mut text = Text::default();
    if app.more_history {
        text.push_line(TextLine::from("… PgUp for older messages").italic());
    }
    for (i, line) in app.lines.iter().enumerate() {
        let mut spans = vec![Span::raw(format!("{}: ", short(&line.author))).bold()];
        if line.reply_to.is_some() {
            spans.push(Span::raw("↪ "));
        }
        match &line.text {
            Some(t) => spans.push(Span::raw(t.clone())),
            None => spans.push(Span::raw("[deleted]").italic()),
        }
        if line.edited && line.text.is_some() {
            spans.push(Span::raw(" (edited)").italic());
        }
        for (emoji, n) in &line.reactions {
            spans.push(Span::raw(format!("  {emoji} {n}")));
        }
        let mut l = TextLine::from(spans);
        if app.focus == Focus::Messages && app.cursor == Some(i) {
            l = l.reversed();
        }
        text.push_line(l);
    }
    let open = app.current().map(|d| d.id.as_str());
    for p in app
        .pending
        .iter()
        .filter(|p| Some(p.discussion.as_str()) == open)
    {
        let marker = match &p.failed {
            None => Span::raw(" ⏳ sending"),
            Some(reason) => Span::raw(format!(" ✗ failed: {reason}")).bold(),
        };
        text.push_line(TextLine::from(vec![
            Span::raw(format!("{}: ", short(&app.me))).bold(),
            Span::raw(p.text.clone()),
            marker,
        ]));
    }
    // Keep the newest lines in view, or the selected message when one is selected.
    let inner_height = messages_area.height.saturating_sub(2);
    let bottom = (text.lines.len() as u16).saturating_sub(inner_height);
    let scroll = match (app.focus, app.cursor) {
        (Focus::Messages, Some(i)) => {
            let line = i as u16 + u16::from(app.more_history);
            bottom.min(line.saturating_sub(inner_height / 2))
        }
        _ => bottom,
    };
    let messages_block = Block::bordered().title(title);
    frame.render_widget(
        Paragraph::new(text)
            .block(if app.focus == Focus::Messages {
                messages_block.bold()
            } else {
                messages_block
            })
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        messages_area,
    );

    // Composer.
    let heading = match &app.mode {
        Mode::Compose => format!(" Сообщение — {} отправляет ", app.send_key.label()),
        Mode::Reply(_) => format!(
            " Ответ — {} отправляет, Esc отменяет ",
            app.send_key.label()
        ),
        Mode::Edit(_) => format!(
            " Правка — {} сохраняет, Esc отменяет ",
            app.send_key.label()
        ),
    };
    frame.render_widget(
        Paragraph::new(app.composer.as_str())
            .block(Block::bordered().title(heading))
            .wrap(Wrap { trim: false }),
        composer_area,
    );

    // Status.
    let connection = match app.connection {
        ConnectionState::Online => "● online",
        ConnectionState::Connecting => "◌ connecting",
        ConnectionState::Offline => "○ offline",
    };
    frame.render_widget(
        Paragraph::new(format!(
            "{connection}  {}  Tab: focus  Ctrl+R reply  Ctrl+E edit  Ctrl+D delete  Ctrl+Q quit  {}",
            app.me, app.notice
        )),
        status,
    );
}

/// The login part of a user id.
fn short(user: &str) -> &str {
    user.split('@').next().unwrap_or(user)
}
