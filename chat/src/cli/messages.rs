//! Reading and acting on messages: `history` (paged), `tail` (reconnecting), `react`,
//! `unreact`, `edit`, `delete` and `click`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use veche_client::protocol::discussions::{
    Change, Cursor, DiscussionEvent, DiscussionInfo, DiscussionKind,
};
use veche_client::protocol::{ErrorCode, Event, Reply, Request};

use super::args::{ActionArg, DiscussionArg, MessageArg};
use super::print::{event_line, print_event};
use super::{ClientDir, Session, kind};
use crate::untrusted::one_line;

/// The most events the node returns per `history` request.
const MAX_PAGE: u32 = 500;

/// Which part of a history to print.
#[derive(Debug, Clone, Copy)]
pub(super) enum Page {
    /// The `limit` latest events before `before` (or the latest of all).
    Latest {
        /// Only events before this sequence number.
        before: Option<u64>,
        /// How many.
        limit: u32,
    },
    /// Every event from the first.
    All,
}

/// `veche history`: events oldest first. A limit above what the node returns at once is read
/// page by page; when older events remain, standard error says how to read them.
pub(super) async fn history(
    dir: &ClientDir,
    arg: &DiscussionArg,
    page: Page,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let id = session.discussion(arg, false).await?;
    match page {
        Page::Latest { before, limit } => {
            let mut pages = Vec::new();
            let mut left = limit;
            let mut cursor = before;
            let mut more = false;
            while left > 0 {
                let (events, older) =
                    page_before(&session, &id, cursor, left.min(MAX_PAGE)).await?;
                more = older;
                let Some(first) = events.first() else { break };
                cursor = Some(first.seq);
                left = left.saturating_sub(u32::try_from(events.len()).unwrap_or(u32::MAX));
                pages.push(events);
                if !older {
                    break;
                }
            }
            for e in pages.iter().rev().flatten() {
                print_event(out, e, json)?;
            }
            out.flush()?;
            if more && let Some(oldest) = cursor {
                eprintln!("older events exist: add --before {oldest} to read them");
            }
        }
        Page::All => {
            // Forward from the first event, a page at a time, printed as it comes.
            let mut seq = 0;
            loop {
                let cursors = vec![Cursor {
                    discussion: id.clone(),
                    seq,
                }];
                let Reply::Events { events, more } = session.ask(Request::Sync { cursors }).await?
                else {
                    bail!("unexpected reply to sync");
                };
                let before = seq;
                for e in &events {
                    if e.discussion == id && e.seq > seq {
                        print_event(out, e, json)?;
                        seq = e.seq;
                    }
                }
                out.flush()?;
                if !more || seq == before {
                    break;
                }
            }
        }
    }
    session.end().await;
    Ok(())
}

/// One page of events before `before`, oldest first, and whether older ones exist.
async fn page_before(
    session: &Session,
    discussion: &str,
    before: Option<u64>,
    limit: u32,
) -> anyhow::Result<(Vec<DiscussionEvent>, bool)> {
    let request = Request::History {
        discussion: discussion.to_owned(),
        before,
        limit,
    };
    match session.ask(request).await? {
        Reply::Events { events, more } => Ok((events, more)),
        other => bail!("unexpected reply {}", kind(&other)),
    }
}

/// The id of the message the user named in `discussion`: an id as it is, a number looked up.
async fn message_id(
    session: &Session,
    discussion: &str,
    arg: &MessageArg,
) -> anyhow::Result<String> {
    let seq = match arg {
        MessageArg::Id(id) => return Ok(id.to_string()),
        MessageArg::Seq(seq) => *seq,
    };
    let (events, _) = page_before(session, discussion, Some(seq.saturating_add(1)), 1).await?;
    match events.into_iter().find(|e| e.seq == seq) {
        Some(DiscussionEvent {
            change: Change::MessagePosted { message },
            ..
        }) => Ok(message.id),
        Some(e) => bail!(
            "#{seq} is not a message: {}",
            event_line(&e).split('\t').nth(2).unwrap_or_default()
        ),
        None => bail!("this discussion has no event #{seq}"),
    }
}

/// Sends the request `request` makes of the discussion's and the message's ids; `failed`
/// names what could not be done.
async fn on_message(
    dir: &ClientDir,
    discussion: &DiscussionArg,
    message: &MessageArg,
    request: impl FnOnce(String, String) -> Request,
    failed: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let id = session.discussion(discussion, false).await?;
    let message_id = message_id(&session, &id, message).await?;
    session
        .done(request(id, message_id))
        .await
        .with_context(failed)?;
    session.end().await;
    Ok(())
}

/// `veche react` and `veche unreact`.
pub(super) async fn react(
    dir: &ClientDir,
    discussion: &DiscussionArg,
    message: &MessageArg,
    emoji: &str,
    add: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let request = |discussion, message_id| Request::React {
        discussion,
        message_id,
        emoji: emoji.to_owned(),
        add,
    };
    on_message(dir, discussion, message, request, || {
        format!("cannot react to {message}")
    })
    .await?;
    let what = if add { "reacted" } else { "took back" };
    writeln!(out, "{what} {} on {message}", one_line(emoji))?;
    Ok(())
}

/// `veche edit`.
pub(super) async fn edit(
    dir: &ClientDir,
    discussion: &DiscussionArg,
    message: &MessageArg,
    text: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let request = |discussion, message_id| Request::Edit {
        discussion,
        message_id,
        text: text.to_owned(),
    };
    on_message(dir, discussion, message, request, || {
        format!("cannot edit {message}")
    })
    .await?;
    writeln!(out, "edited {message}")?;
    Ok(())
}

/// `veche delete`.
pub(super) async fn delete(
    dir: &ClientDir,
    discussion: &DiscussionArg,
    message: &MessageArg,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let request = |discussion, message_id| Request::Delete {
        discussion,
        message_id,
    };
    on_message(dir, discussion, message, request, || {
        format!("cannot delete {message}")
    })
    .await?;
    writeln!(out, "deleted {message}")?;
    Ok(())
}

/// `veche click`.
pub(super) async fn click(
    dir: &ClientDir,
    discussion: &DiscussionArg,
    message: &MessageArg,
    action: &ActionArg,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let request = |discussion, message_id| Request::Click {
        discussion,
        message_id,
        action_id: action.0.clone(),
    };
    on_message(dir, discussion, message, request, || {
        format!("cannot click {} on {message}", one_line(&action.0))
    })
    .await?;
    writeln!(out, "clicked {} on {message}", one_line(&action.0))?;
    Ok(())
}

/// How long `tail` waits before connecting again, at first and at most.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Why one connection of `tail` ended.
enum Ended {
    /// Printed as many events as asked.
    Done,
    /// The connection was lost: connect again.
    Lost,
}

/// `veche tail`: prints the discussion's events as they happen (after `after` first, if
/// given), across reconnections, without a gap or a repeat; fails when the user can no
/// longer read the discussion or the session ended.
pub(super) async fn tail(
    dir: &ClientDir,
    arg: &DiscussionArg,
    after: Option<u64>,
    json: bool,
    count: Option<usize>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut session = Session::start(dir).await?;
    let id = session.discussion(arg, false).await?;
    let mut state = Tail {
        id,
        shown: one_line(&arg.to_string()).into_owned(),
        last: after,
        printed: 0,
        count,
        json,
    };
    let mut retry = FIRST_RETRY;
    loop {
        match state.follow(&session, out).await? {
            Ended::Done => break,
            Ended::Lost => {}
        }
        session.end().await;
        eprintln!("the connection was lost; connecting again");
        session = loop {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
            match Session::start(dir).await {
                Ok(session) => break session,
                Err(e) if unreachable(&e) => continue,
                Err(e) => return Err(e),
            }
        };
        retry = FIRST_RETRY;
    }
    session.end().await;
    Ok(())
}

/// Whether `e` says the node could not be reached (worth trying again).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<veche_client::ClientError>()
            .is_some_and(veche_client::ClientError::is_unreachable)
    })
}

struct Tail {
    id: String,
    /// What the user named, for messages.
    shown: String,
    /// The last event printed (or the one to start after).
    last: Option<u64>,
    printed: usize,
    count: Option<usize>,
    json: bool,
}

impl Tail {
    /// Follows the discussion on one connection until it ends.
    async fn follow(&mut self, session: &Session, out: &mut dyn Write) -> anyhow::Result<Ended> {
        let shown = self.shown.clone();
        let lost_access = move || {
            anyhow::anyhow!("you can no longer read {shown} (removed, or your access to it ended)")
        };
        let info: DiscussionInfo = match session
            .conn
            .request(Request::GetDiscussion {
                discussion: self.id.clone(),
            })
            .await
        {
            Ok(Reply::Discussion { discussion }) => discussion,
            Ok(other) => bail!("unexpected reply {}", kind(&other)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => return Err(lost_access()),
            Err(e) if e.code().is_none() => return Ok(Ended::Lost),
            Err(e) => return Err(super::refusal(e)),
        };
        // Object discussions send live events to the connections that watch them.
        if info.kind == DiscussionKind::Object {
            match session
                .conn
                .request(Request::Watch {
                    discussion: self.id.clone(),
                    watch: true,
                })
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::NotFound) => return Err(lost_access()),
                Err(e) if e.code().is_none() => return Ok(Ended::Lost),
                Err(e) => return Err(super::refusal(e)),
            }
        }
        // What happened since the last event printed, up to now (live events after the watch
        // follow, and whatever both carry is printed once).
        let from = *self.last.get_or_insert(info.last_seq);
        {
            let mut seq = from;
            loop {
                let cursors = vec![Cursor {
                    discussion: self.id.clone(),
                    seq,
                }];
                let reply = match session.conn.request(Request::Sync { cursors }).await {
                    Ok(reply) => reply,
                    Err(e) if e.code().is_none() => return Ok(Ended::Lost),
                    Err(e) => return Err(super::refusal(e)),
                };
                let Reply::Events { events, more } = reply else {
                    bail!("unexpected reply {}", kind(&reply));
                };
                let before = seq;
                for e in &events {
                    seq = seq.max(e.seq);
                    if self.show(e, out)? {
                        return Ok(Ended::Done);
                    }
                }
                if !more || seq == before {
                    break;
                }
            }
        }
        while let Some(event) = session.conn.next_event().await {
            match event {
                Event::Discussion { event } if self.show(&event, out)? => {
                    return Ok(Ended::Done);
                }
                Event::DiscussionRemoved { discussion } if discussion == self.id => {
                    return Err(lost_access());
                }
                Event::SessionEnded { reason } => {
                    bail!(
                        "the session ended: {} (log in again with `veche login`)",
                        one_line(&reason)
                    );
                }
                _ => {}
            }
        }
        Ok(Ended::Lost)
    }

    /// Prints `e` if it is of this discussion and new; says whether enough were printed.
    fn show(&mut self, e: &DiscussionEvent, out: &mut dyn Write) -> anyhow::Result<bool> {
        if e.discussion != self.id || self.last.is_some_and(|last| e.seq <= last) {
            return Ok(false);
        }
        print_event(out, e, self.json)?;
        out.flush()?;
        self.last = Some(e.seq);
        self.printed += 1;
        Ok(self.count.is_some_and(|c| self.printed >= c))
    }
}
