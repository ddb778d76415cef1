use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use veche_client::protocol::Event;
use veche_client::protocol::discussions::{
    Change, DiscussionEvent, DiscussionInfo, DiscussionKind, Message,
};
use veche_client::{ConnectionState, OutboxEntry, OutboxState};

use crate::SendKey;

/// Where keys go besides the composer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Up and Down move through discussions.
    Discussions,
    /// Up and Down select a message (to reply, edit or delete).
    Messages,
}

/// What the composer is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A new message.
    Compose,
    /// A reply to this message.
    Reply(String),
    /// A new text for this message of one's own.
    Edit(String),
}

/// A message as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Message id.
    pub id: String,
    /// Sequence number.
    pub seq: u64,
    /// Author's user id.
    pub author: String,
    /// Text, `None` once deleted.
    pub text: Option<String>,
    /// Edited at least once.
    pub edited: bool,
    /// Reactions as `emoji count`.
    pub reactions: Vec<(String, usize)>,
    /// The message it replies to.
    pub reply_to: Option<String>,
}

/// A message of one's own the node has not stored (yet, or ever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Outbox order.
    pub outbox_id: i64,
    /// The discussion.
    pub discussion: String,
    /// The text.
    pub text: String,
    /// `None` while waiting; the node's reason once refused.
    pub failed: Option<String>,
}

/// What the application must do for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show this discussion: load its history.
    Open(String),
    /// Load older history of the open discussion, before this sequence number.
    LoadOlder { discussion: String, before: u64 },
    /// Put a message in the outbox.
    Send {
        discussion: String,
        text: String,
        reply_to: Option<String>,
    },
    /// Replace the text of one's own message.
    Edit {
        discussion: String,
        message_id: String,
        text: String,
    },
    /// Delete one's own message.
    Delete {
        discussion: String,
        message_id: String,
    },
    /// Move the read marker.
    MarkRead { discussion: String, seq: u64 },
    /// Leave the program.
    Quit,
}

/// The terminal client's state.
#[derive(Debug)]
pub struct App {
    /// The user's id.
    pub me: String,
    /// Which key sends.
    pub send_key: SendKey,
    /// Connection state, shown in the status line.
    pub connection: ConnectionState,
    /// The discussion list, most recent first.
    pub discussions: Vec<DiscussionInfo>,
    /// Index into `discussions`.
    pub selected: usize,
    /// Messages of the open discussion, oldest first.
    pub lines: Vec<Line>,
    /// Older history exists.
    pub more_history: bool,
    /// Selected message (index into `lines`) when the focus is on messages.
    pub cursor: Option<usize>,
    /// Messages of one's own not yet stored, or refused.
    pub pending: Vec<Pending>,
    /// The composer's text.
    pub composer: String,
    /// What the composer is writing.
    pub mode: Mode,
    /// Where Up and Down go.
    pub focus: Focus,
    /// A short notice for the status line.
    pub notice: String,
    /// Set when something deserves the bell; the runner rings and clears it.
    pub bell: bool,
}

impl App {
    /// A new state for user `me`.
    pub fn new(me: &str, send_key: SendKey) -> Self {
        Self {
            me: me.to_owned(),
            send_key,
            connection: ConnectionState::Connecting,
            discussions: Vec::new(),
            selected: 0,
            lines: Vec::new(),
            more_history: false,
            cursor: None,
            pending: Vec::new(),
            composer: String::new(),
            mode: Mode::Compose,
            focus: Focus::Discussions,
            notice: String::new(),
            bell: false,
        }
    }

    /// The open discussion.
    pub fn current(&self) -> Option<&DiscussionInfo> {
        self.discussions.get(self.selected)
    }

    /// How a discussion is named: its title, or a dialog's other member.
    pub fn name_of(&self, d: &DiscussionInfo) -> String {
        if d.kind == DiscussionKind::Dialog || d.title.is_empty() {
            d.members
                .iter()
                .map(|m| m.user.as_str())
                .find(|u| *u != self.me)
                .unwrap_or(&d.title)
                .to_owned()
        } else {
            d.title.clone()
        }
    }

    /// Replaces the discussion list, keeping the open discussion selected.
    pub fn set_discussions(&mut self, discussions: Vec<DiscussionInfo>) -> Option<Command> {
        let open = self.current().map(|d| d.id.clone());
        self.discussions = discussions;
        match open.and_then(|id| self.discussions.iter().position(|d| d.id == id)) {
            Some(i) => {
                self.selected = i;
                None
            }
            None => {
                self.selected = 0;
                self.current().map(|d| Command::Open(d.id.clone()))
            }
        }
    }

    /// Shows a page of history of the open discussion: the newest page, or an older one.
    pub fn set_history(
        &mut self,
        discussion: &str,
        events: &[DiscussionEvent],
        more: bool,
        older: bool,
    ) {
        if self.current().is_none_or(|d| d.id != discussion) {
            return;
        }
        let mut page = Vec::new();
        for e in events {
            apply_change(&mut page, e);
        }
        if older {
            page.append(&mut self.lines);
            self.lines = page;
        } else {
            self.lines = page;
            self.cursor = None;
            // Opening a discussion reads it.
            if let Some(d) = self.discussions.get_mut(self.selected) {
                d.unread = 0;
                d.mentions = 0;
            }
        }
        self.more_history = more;
    }

    /// Applies an event from the node.
    pub fn on_event(&mut self, event: &Event) -> Option<Command> {
        match event {
            Event::Discussion { event } => {
                let open = self.current().is_some_and(|d| d.id == event.discussion);
                if let Some(d) = self
                    .discussions
                    .iter_mut()
                    .find(|d| d.id == event.discussion)
                {
                    d.last_seq = d.last_seq.max(event.seq);
                    d.last_activity_at = event.at;
                    if let Change::MessagePosted { message } = &event.change
                        && message.author != self.me
                        && !open
                    {
                        d.unread += 1;
                    }
                    if let Change::TitleChanged { title } = &event.change {
                        d.title = title.clone();
                    }
                }
                if let Change::MessagePosted { message } = &event.change
                    && message.author != self.me
                {
                    self.bell = true;
                }
                if open {
                    apply_change(&mut self.lines, event);
                    return Some(Command::MarkRead {
                        discussion: event.discussion.clone(),
                        seq: event.seq,
                    });
                }
                if !self.discussions.iter().any(|d| d.id == event.discussion) {
                    self.notice = "new discussion".into();
                }
                None
            }
            Event::DiscussionRemoved { discussion } => {
                let was_open = self.current().is_some_and(|d| d.id == *discussion);
                self.discussions.retain(|d| d.id != *discussion);
                self.selected = self.selected.min(self.discussions.len().saturating_sub(1));
                if was_open {
                    self.lines.clear();
                    return self.current().map(|d| Command::Open(d.id.clone()));
                }
                None
            }
            Event::ShuttingDown => {
                self.notice = "the node is restarting; reconnecting".into();
                None
            }
            Event::SessionEnded { reason } => {
                self.notice = format!("session ended: {reason}");
                None
            }
            Event::NotDelivered { reason, .. } => {
                self.notice = format!("not delivered: {reason}");
                None
            }
            Event::ActionClicked {
                action_id, user, ..
            } => {
                self.notice = format!("{user} clicked {action_id}");
                None
            }
            _ => None,
        }
    }

    /// Shows an outbox change: pending and failed messages; sent ones leave the list (the node's
    /// event shows them).
    pub fn on_outbox(&mut self, entry: &OutboxEntry) {
        self.pending.retain(|p| p.outbox_id != entry.id);
        match &entry.state {
            OutboxState::Pending => self.pending.push(Pending {
                outbox_id: entry.id,
                discussion: entry.discussion.clone(),
                text: entry.text.clone(),
                failed: None,
            }),
            OutboxState::Failed { reason } => self.pending.push(Pending {
                outbox_id: entry.id,
                discussion: entry.discussion.clone(),
                text: entry.text.clone(),
                failed: Some(reason.clone()),
            }),
            OutboxState::Sent { .. } => {}
        }
        self.pending.sort_by_key(|p| p.outbox_id);
    }

    /// Handles a key.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Char('q' | 'c') if ctrl => Some(Command::Quit),
            KeyCode::Enter => {
                let sends = match self.send_key {
                    SendKey::Enter => !ctrl && !alt,
                    SendKey::CtrlEnter => ctrl,
                    SendKey::AltEnter => alt,
                };
                if sends {
                    self.submit()
                } else {
                    self.composer.push('\n');
                    None
                }
            }
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Discussions => Focus::Messages,
                    Focus::Messages => Focus::Discussions,
                };
                if self.focus == Focus::Messages && self.cursor.is_none() && !self.lines.is_empty()
                {
                    self.cursor = Some(self.lines.len() - 1);
                }
                None
            }
            KeyCode::Up => self.move_selection(-1),
            KeyCode::Down => self.move_selection(1),
            KeyCode::PageUp => {
                let d = self.current()?;
                let before = self.lines.first().map(|l| l.seq)?;
                self.more_history.then(|| Command::LoadOlder {
                    discussion: d.id.clone(),
                    before,
                })
            }
            KeyCode::Esc => {
                self.mode = Mode::Compose;
                self.composer.clear();
                None
            }
            KeyCode::Char('r') if ctrl => {
                let line = self.selected_line()?;
                self.mode = Mode::Reply(line.id.clone());
                None
            }
            KeyCode::Char('e') if ctrl => {
                let line = self.selected_line()?.clone();
                if line.author != self.me || line.text.is_none() {
                    self.notice = "only your own messages can be edited".into();
                    return None;
                }
                self.composer = line.text.unwrap_or_default();
                self.mode = Mode::Edit(line.id);
                None
            }
            KeyCode::Char('d') if ctrl => {
                let line = self.selected_line()?;
                if line.author != self.me {
                    self.notice = "only your own messages can be deleted here".into();
                    return None;
                }
                let id = line.id.clone();
                Some(Command::Delete {
                    discussion: self.current()?.id.clone(),
                    message_id: id,
                })
            }
            KeyCode::Backspace => {
                self.composer.pop();
                None
            }
            KeyCode::Char(c) if !ctrl => {
                self.composer.push(c);
                None
            }
            _ => None,
        }
    }

    fn selected_line(&self) -> Option<&Line> {
        self.cursor.and_then(|i| self.lines.get(i))
    }

    fn move_selection(&mut self, delta: isize) -> Option<Command> {
        match self.focus {
            Focus::Discussions => {
                if self.discussions.is_empty() {
                    return None;
                }
                let next = self
                    .selected
                    .saturating_add_signed(delta)
                    .min(self.discussions.len() - 1);
                if next == self.selected {
                    return None;
                }
                self.selected = next;
                self.lines.clear();
                self.cursor = None;
                self.mode = Mode::Compose;
                if let Some(d) = self.discussions.get_mut(next) {
                    d.unread = 0;
                    d.mentions = 0;
                }
                self.current().map(|d| Command::Open(d.id.clone()))
            }
            Focus::Messages => {
                if self.lines.is_empty() {
                    return None;
                }
                let at = self.cursor.unwrap_or(self.lines.len() - 1);
                self.cursor = Some(at.saturating_add_signed(delta).min(self.lines.len() - 1));
                None
            }
        }
    }

    fn submit(&mut self) -> Option<Command> {
        let text = self.composer.trim_end().to_owned();
        if text.trim().is_empty() {
            return None;
        }
        let discussion = self.current()?.id.clone();
        self.composer.clear();
        let mode = std::mem::replace(&mut self.mode, Mode::Compose);
        Some(match mode {
            Mode::Compose => Command::Send {
                discussion,
                text,
                reply_to: None,
            },
            Mode::Reply(id) => Command::Send {
                discussion,
                text,
                reply_to: Some(id),
            },
            Mode::Edit(message_id) => Command::Edit {
                discussion,
                message_id,
                text,
            },
        })
    }
}

fn line_from(message: &Message) -> Line {
    Line {
        id: message.id.clone(),
        seq: message.seq,
        author: message.author.clone(),
        text: message.text.clone(),
        edited: message.version > 1,
        reactions: message
            .reactions
            .iter()
            .map(|r| (r.emoji.clone(), r.users.len()))
            .collect(),
        reply_to: message.reply_to.clone(),
    }
}

/// Applies one event to a list of lines (idempotent for repeated events).
fn apply_change(lines: &mut Vec<Line>, event: &DiscussionEvent) {
    match &event.change {
        Change::MessagePosted { message } if !lines.iter().any(|l| l.id == message.id) => {
            lines.push(line_from(message));
        }
        Change::MessageEdited {
            message_id, text, ..
        } => {
            if let Some(l) = lines.iter_mut().find(|l| l.id == *message_id) {
                l.text = text.clone().or(l.text.take());
                l.edited = true;
            }
        }
        Change::MessageDeleted { message_id } => {
            if let Some(l) = lines.iter_mut().find(|l| l.id == *message_id) {
                l.text = None;
                l.reactions.clear();
            }
        }
        Change::ReactionAdded { message_id, emoji }
        | Change::ReactionRemoved { message_id, emoji } => {
            let added = matches!(event.change, Change::ReactionAdded { .. });
            if let Some(l) = lines.iter_mut().find(|l| l.id == *message_id) {
                match l.reactions.iter_mut().find(|(e, _)| e == emoji) {
                    Some((_, n)) if added => *n += 1,
                    Some((_, n)) => *n = n.saturating_sub(1),
                    None if added => l.reactions.push((emoji.clone(), 1)),
                    None => {}
                }
                l.reactions.retain(|(_, n)| *n > 0);
            }
        }
        _ => {}
    }
}
