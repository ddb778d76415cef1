use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line as TextLine, Span, Text};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use veche_client::ConnectionState;

use super::app::{App, Focus, Mode};
use crate::untrusted::{one_line, visible};

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
            let mut spans = vec![Span::raw(one_line(&app.name_of(d)).into_owned())];
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
        .map(|d| format!(" {} ", one_line(&app.name_of(d))))
        .unwrap_or_default();
    let mut text = Text::default();
    if app.more_history {
        text.push_line(TextLine::from("… PgUp for older messages").italic());
    }
    let mut first_line_of = Vec::with_capacity(app.lines.len());
    for (i, line) in app.lines.iter().enumerate() {
        let author = format!("{}: ", one_line(short(&line.author)));
        let indent = " ".repeat(author.chars().count());
        let mut rows = match &line.text {
            Some(t) => message_rows(t),
            None => vec![vec![Span::raw("[deleted]").italic()]],
        };
        let last = rows.len() - 1;
        if line.edited && line.text.is_some() {
            rows[last].push(Span::raw(" (edited)").italic());
        }
        for (emoji, n) in &line.reactions {
            rows[last].push(Span::raw(format!("  {} {n}", one_line(emoji))));
        }
        first_line_of.push(text.lines.len());
        for (r, row) in rows.into_iter().enumerate() {
            let mut spans = if r == 0 {
                vec![Span::raw(author.clone()).bold()]
            } else {
                vec![Span::raw(indent.clone())]
            };
            if r == 0 && line.reply_to.is_some() {
                spans.push(Span::raw("↪ "));
            }
            spans.extend(row);
            let mut l = TextLine::from(spans);
            if app.focus == Focus::Messages && app.cursor == Some(i) {
                l = l.reversed();
            }
            text.push_line(l);
        }
    }
    let open = app.current().map(|d| d.id.as_str());
    for p in app
        .pending
        .iter()
        .filter(|p| Some(p.discussion.as_str()) == open)
    {
        let marker = match &p.failed {
            None => Span::raw(" ⏳ sending"),
            Some(reason) => Span::raw(format!(" ✗ failed: {}", one_line(reason))).bold(),
        };
        let author = format!("{}: ", one_line(short(&app.me)));
        let indent = " ".repeat(author.chars().count());
        let mut rows = message_rows(&p.text);
        let last = rows.len() - 1;
        rows[last].push(marker);
        for (r, row) in rows.into_iter().enumerate() {
            let mut spans = if r == 0 {
                vec![Span::raw(author.clone()).bold()]
            } else {
                vec![Span::raw(indent.clone())]
            };
            spans.extend(row);
            text.push_line(TextLine::from(spans));
        }
    }
    // Keep the newest lines in view, or the selected message when one is selected.
    let inner_height = messages_area.height.saturating_sub(2);
    let bottom = (text.lines.len() as u16).saturating_sub(inner_height);
    let scroll = match (app.focus, app.cursor) {
        (Focus::Messages, Some(i)) => {
            let line = first_line_of.get(i).copied().unwrap_or_default() as u16;
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
            one_line(&app.me),
            one_line(&app.notice)
        )),
        status,
    );
}

/// A message text as rows of the view: one per line of the text, control characters shown
/// visibly, tabs as spaces (a terminal would move the cursor for them).
fn message_rows(text: &str) -> Vec<Vec<Span<'static>>> {
    visible(text)
        .split('\n')
        .map(|row| vec![Span::raw(row.replace('\t', "    "))])
        .collect()
}

/// The login part of a user id.
fn short(user: &str) -> &str {
    user.split('@').next().unwrap_or(user)
}
