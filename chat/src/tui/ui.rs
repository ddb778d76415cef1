use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line as TextLine, Span, Text};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use veche_client::ConnectionState;
use veche_client::protocol::presence::PresenceState;

use super::app::{App, Focus, Mode};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::download::size;
use crate::untrusted::{one_line, snippet, visible};

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
            let mut spans = vec![match app.dialog_partner(d) {
                Some(user) => dot(app.presence_of(user)),
                None => Span::raw("  "),
            }];
            spans.push(Span::raw(one_line(&app.name_of(d)).into_owned()));
            if !app.typing_in(&d.id).is_empty() {
                spans.push(Span::raw(" ✎"));
            }
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
    // Rows are wrapped here, not by the paragraph: every row of a message after its first is
    // indented under its text (so no wrapped text can pass for another entry), and the rows
    // counted are the rows drawn, so the newest stay in view.
    let width = usize::from(messages_area.width.saturating_sub(2));
    let mut first_line_of = Vec::with_capacity(app.lines.len());
    for (i, line) in app.lines.iter().enumerate() {
        let mut rows = match &line.text {
            Some(t) => message_rows(t),
            None => vec![vec![Span::raw("[deleted]").italic()]],
        };
        if line.reply_to.is_some() {
            rows[0].insert(0, Span::raw("↪ "));
        }
        let last = rows.len() - 1;
        if line.edited && line.text.is_some() {
            rows[last].push(Span::raw(" (edited)").italic());
        }
        for (emoji, n) in &line.reactions {
            rows[last].push(Span::raw(format!("  {} {n}", one_line(emoji))));
        }
        // Files and buttons on rows of their own, numbered for Ctrl+O and Ctrl+B.
        for (n, f) in line.files.iter().enumerate() {
            rows.push(vec![Span::raw(format!(
                "[file {}] {} ({})",
                n + 1,
                one_line(&f.name),
                size(f.size)
            ))]);
        }
        if !line.actions.is_empty() {
            let mut row = Vec::new();
            for (n, a) in line.actions.iter().enumerate() {
                if n > 0 {
                    row.push(Span::raw(" "));
                }
                row.push(Span::raw(format!("[{} {}]", n + 1, one_line(&a.label))).bold());
            }
            rows.push(row);
        }
        first_line_of.push(text.lines.len());
        let selected = app.focus == Focus::Messages && app.cursor == Some(i);
        push_entry(&mut text, short(&line.author), rows, width, selected);
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
        let mut rows = message_rows(&p.text);
        let last = rows.len() - 1;
        rows[last].push(marker);
        push_entry(&mut text, short(&app.me), rows, width, false);
    }
    if let Some(d) = app.current() {
        let typing = app.typing_in(&d.id);
        if !typing.is_empty() {
            let names: Vec<String> = typing
                .iter()
                .map(|u| one_line(short(u)).into_owned())
                .collect();
            let verb = if names.len() == 1 { "is" } else { "are" };
            text.push_line(
                TextLine::from(format!("✎ {} {verb} typing…", names.join(", "))).italic(),
            );
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
    if app.mode == Mode::Search || app.search.is_some() {
        draw_search(frame, app, messages_area);
    } else {
        draw_messages(frame, app, messages_area, title, text, scroll);
    }

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
        Mode::Search => " Поиск — Enter ищет, ↑↓ выбирают, Enter открывает, Esc закрывает ".into(),
        Mode::GroupTitle => " Новая группа: название — Enter дальше, Esc отменяет ".into(),
        Mode::GroupMembers(title) => format!(
            " Участники «{}» через пробел или запятую — Enter создаёт, Esc отменяет ",
            one_line(title)
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
        Paragraph::new(TextLine::from(vec![
            Span::raw(format!("{connection}  ")),
            dot(app.presence_of(&app.me)),
            Span::raw(format!("{}  ", one_line(&app.me))),
            Span::raw(format!("{}  ", one_line(&app.notice))).bold(),
            Span::raw(
                "Tab focus  Ctrl+R reply  Ctrl+E edit  Ctrl+D delete  Ctrl+B button  \
                 Ctrl+O file  Ctrl+Q quit",
            ),
        ])),
        status,
    );
}

/// The open discussion's messages.
fn draw_messages(
    frame: &mut Frame<'_>,
    app: &App,
    area: Rect,
    title: String,
    text: Text<'_>,
    scroll: u16,
) {
    let messages_block = Block::bordered().title(title);
    frame.render_widget(
        Paragraph::new(text)
            .block(if app.focus == Focus::Messages {
                messages_block.bold()
            } else {
                messages_block
            })
            .scroll((scroll, 0)),
        area,
    );
}

/// Search results, best first, in place of the messages: where, who, and the text around
/// the matches (between `*`), the selected one highlighted.
fn draw_search(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let mut text = Text::default();
    let title = match &app.search {
        None => " Поиск ".to_owned(),
        Some(view) => {
            if let Some(corrected) = &view.corrected {
                text.push_line(
                    TextLine::from(format!(
                        "nothing matched as typed; hits for {}",
                        one_line(corrected)
                    ))
                    .italic(),
                );
            }
            if view.hits.is_empty() {
                text.push_line(TextLine::from("no messages match").italic());
            }
            for (i, hit) in view.hits.iter().enumerate() {
                let place = app
                    .discussions
                    .iter()
                    .find(|d| d.id == hit.discussion)
                    .map_or_else(|| hit.discussion.clone(), |d| app.name_of(d));
                let mut line = TextLine::from(vec![
                    Span::raw(format!("{} #{}  ", one_line(&place), hit.seq)),
                    Span::raw(format!("{}: ", one_line(short(&hit.author)))).bold(),
                    Span::raw(snippet(&hit.snippet)),
                ]);
                if i == view.selected {
                    line = line.reversed();
                }
                text.push_line(line);
            }
            if view.more {
                text.push_line(TextLine::from("… more hits: make the query narrower").italic());
            }
            format!(" Поиск: {} ", one_line(&view.query))
        }
    };
    let selected = app.search.as_ref().map_or(0, |v| v.selected) as u16;
    let inner_height = area.height.saturating_sub(2);
    let scroll = selected.saturating_sub(inner_height.saturating_sub(1));
    frame.render_widget(
        Paragraph::new(text)
            .block(Block::bordered().title(title).bold())
            .scroll((scroll, 0)),
        area,
    );
}

/// Adds one message: `author: ` before its first row, its other rows (its lines, then those
/// that wrapping `width` makes) indented as far; reversed when selected.
fn push_entry(
    text: &mut Text<'static>,
    author: &str,
    rows: Vec<Vec<Span<'static>>>,
    width: usize,
    selected: bool,
) {
    let author = format!("{}: ", one_line(author));
    let indent = UnicodeWidthStr::width(author.as_str());
    let mut first = true;
    for row in rows {
        for part in wrap(row, width.saturating_sub(indent).max(1)) {
            let mut spans = if first {
                vec![Span::raw(author.clone()).bold()]
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            first = false;
            spans.extend(part);
            let mut l = TextLine::from(spans);
            if selected {
                l = l.reversed();
            }
            text.push_line(l);
        }
    }
}

/// Splits a row of styled text into rows at most `width` columns wide, after the last space
/// that fits when there is one (the space stays at the end of its row), else anywhere.
fn wrap(row: Vec<Span<'static>>, width: usize) -> Vec<Vec<Span<'static>>> {
    let chars: Vec<(char, Style)> = row
        .iter()
        .flat_map(|span| span.content.chars().map(move |c| (c, span.style)))
        .collect();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let mut used = 0;
        let mut end = start;
        let mut last_space = None;
        while end < chars.len() {
            let w = UnicodeWidthChar::width(chars[end].0).unwrap_or(0);
            if used + w > width && end > start {
                break;
            }
            used += w;
            if chars[end].0 == ' ' {
                last_space = Some(end);
            }
            end += 1;
        }
        if end < chars.len()
            && let Some(space) = last_space
        {
            end = space + 1;
        }
        parts.push(spans_of(&chars[start..end]));
        start = end;
    }
    if parts.is_empty() {
        parts.push(Vec::new());
    }
    parts
}

/// Characters back into spans, one per run of a style.
fn spans_of(chars: &[(char, Style)]) -> Vec<Span<'static>> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    for &(c, style) in chars {
        match spans.last_mut() {
            Some(span) if span.style == style => span.content.to_mut().push(c),
            _ => spans.push(Span::styled(c.to_string(), style)),
        }
    }
    spans
}

/// A presence dot and a space: green available, yellow away, red do not disturb, hollow
/// offline (and invisible, as others see it).
fn dot(state: PresenceState) -> Span<'static> {
    match state {
        PresenceState::Available => Span::raw("● ").fg(Color::Green),
        PresenceState::Away => Span::raw("◐ ").fg(Color::Yellow),
        PresenceState::Dnd => Span::raw("⊖ ").fg(Color::Red),
        PresenceState::Offline | PresenceState::Invisible | PresenceState::Unknown => {
            Span::raw("○ ")
        }
    }
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
