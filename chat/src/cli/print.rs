//! How the command line shows what came from the node: events, files, buttons, search hits,
//! sizes. Everything untrusted passes through [`crate::untrusted`]: control characters are
//! shown, and a field never spans lines, so no text can forge an entry of a listing.

use std::io::Write;

use veche_client::protocol::discussions::{Change, DiscussionEvent, Message};
use veche_client::protocol::files::FileInfo;

use crate::download::size;
use crate::untrusted::{indented, one_line};

/// Where the lines of an entry after its first start.
const INDENT: &str = "\t\t  ";

/// Prints one event: a JSON object, or a human-readable entry.
pub(super) fn print_event(
    out: &mut dyn Write,
    e: &DiscussionEvent,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
        return Ok(());
    }
    writeln!(out, "{}", event_line(e))?;
    Ok(())
}

/// An event as one entry of a human-readable listing: `time \t #seq \t who: what`, then the
/// message's files and buttons on lines of their own. Everything that came from the node is
/// shown with its control characters visible, and the lines of a multi-line message after the
/// first are indented, so no text can forge an entry.
pub(super) fn event_line(e: &DiscussionEvent) -> String {
    let who = e.actor.split('@').next().unwrap_or(&e.actor);
    let what = match &e.change {
        Change::MessagePosted { message } => message_text(message),
        Change::MessageEdited { text, .. } => {
            format!(
                "(edited) {}",
                indented(text.as_deref().unwrap_or_default(), INDENT)
            )
        }
        Change::MessageDeleted { .. } => "(deleted a message)".into(),
        Change::ReactionAdded { emoji, .. } => format!("(reacted {})", one_line(emoji)),
        Change::ReactionRemoved { emoji, .. } => format!("(removed {})", one_line(emoji)),
        Change::TitleChanged { title } => format!("(renamed to {})", one_line(title)),
        Change::MembersAdded { users } => format!("(added {})", one_line(&users.join(", "))),
        Change::MemberRemoved { user } => format!("(removed {})", one_line(user)),
        Change::Created { .. } => "(created the discussion)".into(),
        Change::Unknown => "(something this client does not know)".into(),
    };
    format!("{}\t#{}\t{}: {what}", e.at, e.seq, one_line(who))
}

/// A message's text, then a line per file (`[file f_… name, size]`) and per button
/// (`[button id: label]`), and its reactions.
fn message_text(message: &Message) -> String {
    if message.deleted {
        return "[deleted]".into();
    }
    let mut text = indented(message.text.as_deref().unwrap_or_default(), INDENT);
    if message.edited_at.is_some() {
        text.push_str(" (edited)");
    }
    for f in &message.files {
        text.push_str(&format!("\n{INDENT}[file {}]", file_line(f)));
    }
    for a in &message.actions {
        text.push_str(&format!(
            "\n{INDENT}[button {}: {}]",
            one_line(&a.id),
            one_line(&a.label)
        ));
    }
    if !message.reactions.is_empty() {
        let reactions: Vec<String> = message
            .reactions
            .iter()
            .map(|r| format!("{} {}", one_line(&r.emoji), r.users.len()))
            .collect();
        text.push_str(&format!("\n{INDENT}[{}]", reactions.join(", ")));
    }
    text
}

/// `f_… name, 1.2 MB` on one line.
pub(super) fn file_line(f: &FileInfo) -> String {
    format!(
        "{} {}, {}",
        one_line(&f.id),
        one_line(&f.name),
        size(f.size)
    )
}

#[cfg(test)]
mod tests {
    use veche_client::protocol::Timestamp;
    use veche_client::protocol::discussions::{Action, Message};

    use super::*;
    use crate::untrusted::snippet;

    fn message(author: &str, text: &str) -> Message {
        Message {
            id: "m".into(),
            discussion: "d@hq".into(),
            seq: 7,
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
        }
    }

    fn posted(author: &str, text: &str) -> DiscussionEvent {
        posted_message(message(author, text))
    }

    fn posted_message(message: Message) -> DiscussionEvent {
        DiscussionEvent {
            discussion: "d@hq".into(),
            seq: 7,
            at: Timestamp(0),
            actor: message.author.clone(),
            change: Change::MessagePosted {
                message: Box::new(message),
            },
        }
    }

    fn printed(e: &DiscussionEvent) -> String {
        let mut out = Vec::new();
        print_event(&mut out, e, false).expect("print");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn history_and_tail_never_send_control_characters_to_the_terminal() {
        let out = printed(&posted(
            "mallory@hq",
            "hi\x1b]0;pwned\x07\x1b[2J\x1b[1A\rboris: I approve the payment",
        ));
        assert!(
            !out.trim_end_matches('\n')
                .chars()
                .any(|c| c.is_control() && c != '\t'),
            "{out:?}"
        );
        assert!(
            out.contains("mallory: hi␛]0;pwned␇␛[2J␛[1A␍boris"),
            "{out:?}"
        );
    }

    #[test]
    fn a_line_of_a_message_cannot_pass_for_an_entry() {
        let forged = "ok\n1970-01-01T00:00:00.000Z\t#8\tboris: I approve the payment";
        let out = printed(&posted("mallory@hq", forged));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].ends_with("mallory: ok"), "{out}");
        assert!(lines[1].starts_with("\t\t  1970"), "{out}");
        // A title, a name or an emoji is one field: its new lines are shown, not obeyed.
        let renamed = DiscussionEvent {
            change: Change::TitleChanged {
                title: "x\n#9\tboris: yes".into(),
            },
            ..posted("mallory@hq", "")
        };
        assert_eq!(printed(&renamed).lines().count(), 1);
    }

    #[test]
    fn files_and_buttons_are_listed_under_the_message_one_per_line() {
        let mut m = message("bot@hq", "Счёт на оплату");
        m.files = vec![FileInfo {
            id: "f_0190f1a2b3c4d5e6f708192a3b4c5d6e".into(),
            name: "счёт\n#8\tboris: ok.pdf".into(),
            size: 2048,
            mime: "application/pdf".into(),
            sha256: String::new(),
            thumbnail: false,
            dimensions: None,
            discussion: "d@hq".into(),
            uploader: "bot@hq".into(),
            created_at: Timestamp(0),
        }];
        m.actions = vec![Action {
            id: "approve".into(),
            label: "Утвердить\x1b[2J".into(),
        }];
        let out = printed(&posted_message(m));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(
            lines[1],
            "\t\t  [file f_0190f1a2b3c4d5e6f708192a3b4c5d6e счёт␊#8␉boris: ok.pdf, 2.0 KB]"
        );
        assert_eq!(lines[2], "\t\t  [button approve: Утвердить␛[2J]");
    }

    #[test]
    fn a_deleted_message_shows_no_text() {
        let mut m = message("a@hq", "");
        m.text = None;
        m.deleted = true;
        assert!(printed(&posted_message(m)).ends_with("a: [deleted]\n"));
    }

    #[test]
    fn snippets_lose_their_markup_but_not_their_controls() {
        assert_eq!(
            snippet("оплата <b>счёта</b> &lt;b&gt; &amp;\u{1b}"),
            "оплата *счёта* <b> &␛"
        );
        assert_eq!(size(1), "1 B");
        assert_eq!(size(1536), "1.5 KB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MB");
    }
}
