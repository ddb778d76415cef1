//! Text from the node, made safe to print on a terminal.
//!
//! Everything a client prints that came over the network (message texts, titles, names,
//! status texts, file names, error messages) is untrusted: an ESC, BEL or CR in it would let
//! its author clear the reader's screen, retitle the terminal window or overwrite a line with
//! a forged one ("boris: I approve the payment"). Every control character (Unicode category
//! Cc: C0, DEL and C1) is therefore shown as a visible symbol instead of being sent to the
//! terminal: ESC as `␛`, CR as `␍`, DEL as `␡`, C1 controls as `<U+009B>`.

use std::borrow::Cow;

/// `text` with every control character but new line and tab shown visibly.
pub fn visible(text: &str) -> Cow<'_, str> {
    neutralise(text, |c| c == '\n' || c == '\t')
}

/// `text` on one line: every control character shown visibly, new lines and tabs included.
/// For names, titles, reasons and other text that a line-oriented output shows in one field.
pub fn one_line(text: &str) -> Cow<'_, str> {
    neutralise(text, |_| false)
}

/// A message text for a line-oriented listing: controls shown visibly and every line after
/// the first indented by `indent`, so that a line of the message can never pass for a line of
/// the listing.
pub fn indented(text: &str, indent: &str) -> String {
    visible(text).replace('\n', &format!("\n{indent}"))
}

/// A search snippet (HTML-escaped by the node, matches in `<b>`) as plain text on one line,
/// matches between `*`.
pub fn snippet(html: &str) -> String {
    let plain = html
        .replace("<b>", "*")
        .replace("</b>", "*")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&");
    one_line(&plain).into_owned()
}

/// A writer that shows every control character written through it, but new lines and tabs,
/// as [`visible`] does: for the whole output of a command that prints what the node, a plugin
/// or another user wrote (user lists, plugin logs, audit entries).
#[derive(Debug)]
pub struct VisibleWriter<W: std::io::Write> {
    inner: W,
    /// The first byte of a two-byte UTF-8 sequence that may be a C1 control (U+0080–U+009F).
    pending_c2: bool,
}

impl<W: std::io::Write> VisibleWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending_c2: false,
        }
    }
}

impl<W: std::io::Write> std::io::Write for VisibleWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + 8);
        let symbol = |c: char, out: &mut Vec<u8>| {
            let mut tmp = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        };
        for &b in buf {
            if std::mem::take(&mut self.pending_c2) {
                if (0x80..=0x9f).contains(&b) {
                    out.extend_from_slice(format!("<U+{b:04X}>").as_bytes());
                    continue;
                }
                out.push(0xc2);
            }
            match b {
                b'\n' | b'\t' => out.push(b),
                0x00..=0x1f => symbol(
                    char::from_u32(0x2400 + u32::from(b)).unwrap_or('\u{fffd}'),
                    &mut out,
                ),
                0x7f => symbol('\u{2421}', &mut out),
                0xc2 => self.pending_c2 = true,
                _ => out.push(b),
            }
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.pending_c2) {
            self.inner.write_all(&[0xc2])?;
        }
        self.inner.flush()
    }
}

fn neutralise(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !c.is_control() || keep(c) {
            out.push(c);
            continue;
        }
        match u32::from(c) {
            // The Unicode "Control Pictures" block has one symbol per C0 control and DEL.
            n @ 0x00..=0x1f => out.push(char::from_u32(0x2400 + n).unwrap_or('\u{fffd}')),
            0x7f => out.push('\u{2421}'),
            n => out.push_str(&format!("<U+{n:04X}>")),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_bells_and_carriage_returns_become_visible() {
        let attack = "ok\x1b]0;pwned\x07\x1b[2J\rboris: I approve the payment";
        let shown = visible(attack);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert_eq!(shown, "ok␛]0;pwned␇␛[2J␍boris: I approve the payment");
    }

    #[test]
    fn new_lines_and_tabs_stay_in_messages_but_not_on_one_line() {
        assert_eq!(visible("a\n\tb"), "a\n\tb");
        assert_eq!(one_line("a\n\tb"), "a␊␉b");
        assert_eq!(indented("a\nb\x1b", "\t  "), "a\n\t  b␛");
    }

    #[test]
    fn delete_and_c1_controls_are_named() {
        assert_eq!(one_line("x\x7fy\u{9b}31m"), "x␡y<U+009B>31m");
    }

    #[test]
    fn a_writer_shows_controls_even_split_across_writes() {
        use std::io::Write;
        let mut w = VisibleWriter::new(Vec::new());
        // "ок\x1b[2J", a C1 CSI split between two writes, a tab and a new line.
        w.write_all("ок\x1b[2J".as_bytes()).expect("write");
        w.write_all(&[0xc2]).expect("write");
        w.write_all(&[0x9b, b'1', b'\t', b'\r', b'\n'])
            .expect("write");
        w.write_all("ё".as_bytes()).expect("write");
        w.flush().expect("flush");
        let shown = String::from_utf8(w.inner).expect("utf-8");
        assert_eq!(shown, "ок␛[2J<U+009B>1\t␍\nё");
    }

    #[test]
    fn ordinary_text_is_not_copied() {
        assert!(matches!(
            visible("Счёт 42 оплачен 👍"),
            Cow::Borrowed("Счёт 42 оплачен 👍")
        ));
    }
}
