use std::collections::HashMap;
use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use veche_client::protocol::Event;
use veche_client::protocol::discussions::{
    Action, Change, DiscussionEvent, DiscussionInfo, DiscussionKind, Message, SearchHit,
};
use veche_client::protocol::files::FileInfo;
use veche_client::protocol::presence::PresenceState;
use veche_client::{ConnectionState, OutboxEntry, OutboxState};

use crate::SendKey;

/// While the user keeps typing, `typing: true` goes out at most this often (milliseconds): the
/// node's indicator lasts twice as long by default, and the web client renews it as often.
pub const TYPING_EVERY_MS: u64 = 3_000;

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
    /// A search query (Ctrl+F).
    Search,
    /// The title of a new group (Ctrl+N).
    GroupTitle,
    /// The members of a new group with this title.
    GroupMembers(String),
}

/// Search results shown instead of the messages.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchView {
    /// The query they answer.
    pub query: String,
    /// Best first.
    pub hits: Vec<SearchHit>,
    /// Index into `hits`.
    pub selected: usize,
    /// The query the node searched instead, when nothing matched as typed.
    pub corrected: Option<String>,
    /// More hits exist than shown.
    pub more: bool,
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
    /// Its buttons, in order (shown numbered from 1).
    pub actions: Vec<Action>,
    /// Its files, in order (shown numbered from 1).
    pub files: Vec<FileInfo>,
}

/// What the next digit key chooses, for the selected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A button to click (Ctrl+B).
    Button,
    /// A file to download (Ctrl+O).
    File,
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
    /// Click a button of a message.
    Click {
        discussion: String,
        message_id: String,
        action_id: String,
    },
    /// Search the messages the user may read.
    Search(String),
    /// Create a group with the user as owner.
    CreateGroup { title: String, members: Vec<String> },
    /// Download a file into the downloads folder.
    Download(FileInfo),
    /// Move the read marker.
    MarkRead { discussion: String, seq: u64 },
    /// Tell the others the user is typing here, or stopped (best effort).
    Typing { discussion: String, typing: bool },
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
    /// The runner's clock in milliseconds (see [`App::tick`]); typing indicators expire by it.
    pub now_ms: u64,
    /// Users' presence as the node last told it; a user absent here is shown offline.
    pub presence: HashMap<String, PresenceState>,
    /// Who is typing, per discussion: the user and when their indicator ends (`now_ms`).
    pub typing: HashMap<String, Vec<(String, u64)>>,
    /// Search results, while searching.
    pub search: Option<SearchView>,
    /// A message to select once its discussion's history is shown (a search hit).
    jump_to: Option<String>,
    /// The composer's text and mode, kept while it searches or names a new group.
    stash: Option<(String, Mode)>,
    /// Where downloaded files go (the current folder unless set).
    pub downloads: PathBuf,
    /// Set while a digit key picks a button or a file of the selected message.
    pub pick: Option<Pick>,
    /// Where and when this user's typing was last sent, while it lasts.
    typing_sent: Option<(String, u64)>,
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
            now_ms: 0,
            presence: HashMap::new(),
            typing: HashMap::new(),
            typing_sent: None,
            pick: None,
            downloads: PathBuf::from("."),
            search: None,
            jump_to: None,
            stash: None,
        }
    }

    /// Moves the clock to `now_ms` (monotonic milliseconds) and drops the typing indicators
    /// that were not renewed in time.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        for users in self.typing.values_mut() {
            users.retain(|(_, until)| *until > now_ms);
        }
        self.typing.retain(|_, users| !users.is_empty());
    }

    /// Shows a connection state. Presence and typing are known only while connected (a new
    /// connection gets a fresh snapshot), so they are forgotten otherwise.
    pub fn set_connection(&mut self, state: ConnectionState) {
        self.connection = state;
        if state != ConnectionState::Online {
            self.presence.clear();
            self.typing.clear();
            self.typing_sent = None;
        }
    }

    /// A user's presence as shown: offline unless the node said otherwise.
    pub fn presence_of(&self, user: &str) -> PresenceState {
        self.presence
            .get(user)
            .copied()
            .unwrap_or(PresenceState::Offline)
    }

    /// The other member of a dialog; `None` for other kinds.
    pub fn dialog_partner<'a>(&self, d: &'a DiscussionInfo) -> Option<&'a str> {
        (d.kind == DiscussionKind::Dialog)
            .then(|| {
                d.members
                    .iter()
                    .map(|m| m.user.as_str())
                    .find(|u| *u != self.me)
            })
            .flatten()
    }

    /// Who is typing in `discussion` now, in the order they started.
    pub fn typing_in(&self, discussion: &str) -> Vec<&str> {
        self.typing
            .get(discussion)
            .map(|users| users.iter().map(|(u, _)| u.as_str()).collect())
            .unwrap_or_default()
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
            if let Some(id) = self.jump_to.take() {
                match self.lines.iter().position(|l| l.id == id) {
                    Some(i) => {
                        self.cursor = Some(i);
                        self.focus = Focus::Messages;
                    }
                    None => self.notice = "the message is further back: PgUp".into(),
                }
            }
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
                if let Change::MessagePosted { message } = &event.change {
                    // A message ends its author's typing indicator there.
                    if let Some(users) = self.typing.get_mut(&event.discussion) {
                        users.retain(|(u, _)| *u != message.author);
                    }
                    if message.author != self.me {
                        self.bell = true;
                    }
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
            Event::Presence { users } => {
                for p in users {
                    match p.state {
                        PresenceState::Offline => self.presence.remove(&p.user),
                        state => self.presence.insert(p.user.clone(), state),
                    };
                }
                None
            }
            Event::Typing {
                discussion,
                user,
                typing,
                expires_in_ms,
            } => {
                if *user == self.me {
                    return None;
                }
                let users = self.typing.entry(discussion.clone()).or_default();
                users.retain(|(u, _)| u != user);
                if *typing {
                    users.push((user.clone(), self.now_ms.saturating_add(*expires_in_ms)));
                }
                self.typing.retain(|_, users| !users.is_empty());
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

    /// Handles a key. A key that changes what the composer holds may, instead of nothing,
    /// ask to tell the others that the user is typing (at most every [`TYPING_EVERY_MS`]) or
    /// stopped (the composer was emptied without sending).
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        let before = self.composer.len();
        // Only keys that write start an indicator: a draft given back after a search does not.
        let typed = matches!(
            key.code,
            KeyCode::Char(_) | KeyCode::Backspace | KeyCode::Enter
        );
        let command = self.key_command(key);
        if command.is_some() || self.composer.len() == before {
            return command;
        }
        self.typing_command(typed)
    }

    /// `typing: true` when the user writes a message or reply and was not reported typing
    /// here lately; `typing: false` when they were and the composer no longer holds one.
    fn typing_command(&mut self, typed: bool) -> Option<Command> {
        let writing = typed
            && !self.composer.trim().is_empty()
            && matches!(self.mode, Mode::Compose | Mode::Reply(_));
        let here = self.current().map(|d| d.id.clone());
        match (self.typing_sent.take(), here) {
            (Some((d, at)), Some(here))
                if writing && d == here && self.now_ms.saturating_sub(at) < TYPING_EVERY_MS =>
            {
                self.typing_sent = Some((d, at));
                None
            }
            (_, Some(here)) if writing => {
                self.typing_sent = Some((here.clone(), self.now_ms));
                Some(Command::Typing {
                    discussion: here,
                    typing: true,
                })
            }
            (Some((d, _)), _) => Some(Command::Typing {
                discussion: d,
                typing: false,
            }),
            (None, _) => None,
        }
    }

    fn key_command(&mut self, key: KeyEvent) -> Option<Command> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if let Some(pick) = self.pick.take() {
            self.notice.clear();
            return match key.code {
                KeyCode::Char(c @ '1'..='9') if !ctrl && !alt => self.picked(pick, c),
                // Anything else cancels the choice (and is not typed).
                _ => None,
            };
        }
        match key.code {
            KeyCode::Char('f') if ctrl => {
                self.enter_mode(Mode::Search);
                None
            }
            KeyCode::Char('n') if ctrl => {
                self.enter_mode(Mode::GroupTitle);
                None
            }
            KeyCode::Enter if matches!(self.mode, Mode::Search) => self.search_enter(),
            KeyCode::Enter if matches!(self.mode, Mode::GroupTitle) => {
                let title = self.composer.trim().to_owned();
                if !title.is_empty() {
                    self.composer.clear();
                    self.mode = Mode::GroupMembers(title);
                }
                None
            }
            KeyCode::Enter if matches!(self.mode, Mode::GroupMembers(_)) => {
                let members: Vec<String> = self
                    .composer
                    .split([',', ' ', ';'])
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                let Mode::GroupMembers(title) = self.leave_mode() else {
                    return None;
                };
                Some(Command::CreateGroup { title, members })
            }
            KeyCode::Esc if self.stash.is_some() => {
                self.leave_mode();
                None
            }
            KeyCode::Up | KeyCode::Down if self.search.is_some() => {
                if let Some(view) = &mut self.search
                    && !view.hits.is_empty()
                {
                    let delta = if key.code == KeyCode::Up { -1 } else { 1 };
                    view.selected = view
                        .selected
                        .saturating_add_signed(delta)
                        .min(view.hits.len() - 1);
                }
                None
            }
            KeyCode::Char('b') if ctrl => self.start_pick(Pick::Button),
            KeyCode::Char('o') if ctrl => self.start_pick(Pick::File),
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

    /// Puts the composer's text aside and lets it take a search query or a group's title.
    fn enter_mode(&mut self, mode: Mode) {
        if self.stash.is_none() {
            let text = std::mem::take(&mut self.composer);
            let previous = std::mem::replace(&mut self.mode, Mode::Compose);
            self.stash = Some((text, previous));
        } else {
            self.composer.clear();
        }
        self.search = None;
        self.mode = mode;
    }

    /// Closes the search or the new group's questions and gives the composer its text back;
    /// returns the mode that was left.
    fn leave_mode(&mut self) -> Mode {
        self.search = None;
        let (text, previous) = self.stash.take().unwrap_or((String::new(), Mode::Compose));
        self.composer = text;
        std::mem::replace(&mut self.mode, previous)
    }

    /// Enter while searching: searches for a new query; opens the selected hit of the
    /// results shown.
    fn search_enter(&mut self) -> Option<Command> {
        let query = self.composer.trim().to_owned();
        let hit = match &self.search {
            Some(view) if view.query == query => view.hits.get(view.selected).cloned(),
            _ => None,
        };
        let Some(hit) = hit else {
            return (!query.is_empty()).then_some(Command::Search(query));
        };
        let Some(index) = self.discussions.iter().position(|d| d.id == hit.discussion) else {
            self.notice = "that discussion is not in your list".into();
            return None;
        };
        self.leave_mode();
        self.selected = index;
        self.lines.clear();
        self.cursor = None;
        self.jump_to = Some(hit.message_id);
        Some(Command::Open(hit.discussion))
    }

    /// Shows the node's answer to a search, if the user is still searching for it.
    pub fn set_search(
        &mut self,
        query: &str,
        hits: Vec<SearchHit>,
        corrected: Option<String>,
        more: bool,
    ) {
        if self.mode != Mode::Search || self.composer.trim() != query {
            return;
        }
        self.search = Some(SearchView {
            query: query.to_owned(),
            hits,
            selected: 0,
            corrected,
            more,
        });
    }

    /// Selects a group the user just created (the node's events add it too).
    pub fn group_created(&mut self, group: DiscussionInfo) -> Option<Command> {
        let id = group.id.clone();
        let index = match self.discussions.iter().position(|d| d.id == id) {
            Some(i) => i,
            None => {
                self.discussions.insert(0, group);
                0
            }
        };
        self.selected = index;
        self.lines.clear();
        self.cursor = None;
        self.notice = "group created".into();
        Some(Command::Open(id))
    }

    /// Ctrl+B or Ctrl+O on the selected message: one button or file is acted on at once,
    /// several wait for a digit.
    fn start_pick(&mut self, pick: Pick) -> Option<Command> {
        let Some(line) = self.selected_line() else {
            self.notice = "select a message first (Tab, then Up and Down)".into();
            return None;
        };
        let count = match pick {
            Pick::Button => line.actions.len(),
            Pick::File => line.files.len(),
        };
        let what = match pick {
            Pick::Button => "button",
            Pick::File => "file",
        };
        match count {
            0 => {
                self.notice = format!("this message has no {what}");
                None
            }
            1 => self.picked(pick, '1'),
            n => {
                self.pick = Some(pick);
                self.notice = format!("which {what}? 1–{}; another key cancels", n.min(9));
                None
            }
        }
    }

    /// The button or file number `digit` of the selected message.
    fn picked(&mut self, pick: Pick, digit: char) -> Option<Command> {
        let index = usize::try_from(digit.to_digit(10)?).ok()?.checked_sub(1)?;
        let discussion = self.current()?.id.clone();
        let line = self.selected_line()?;
        match pick {
            Pick::Button => {
                let Some(action) = line.actions.get(index) else {
                    self.notice = format!("no button {digit}");
                    return None;
                };
                Some(Command::Click {
                    discussion,
                    message_id: line.id.clone(),
                    action_id: action.id.clone(),
                })
            }
            Pick::File => {
                let Some(file) = line.files.get(index) else {
                    self.notice = format!("no file {digit}");
                    return None;
                };
                Some(Command::Download(file.clone()))
            }
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
        // The message ends the indicator for those who see it; the next key starts another.
        self.typing_sent = None;
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
            // Enter in these modes is handled before; nothing is sent from them.
            Mode::Search | Mode::GroupTitle | Mode::GroupMembers(_) => {
                self.mode = mode;
                return None;
            }
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
        actions: message.actions.clone(),
        files: message.files.clone(),
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
                l.actions.clear();
                l.files.clear();
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
