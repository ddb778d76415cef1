//! Message text: `:shortcode:` emoji, `@login` mentions, and limits.

/// A message text as the node keeps it, or the first control character that refuses it.
///
/// Text is shown in terminals, browsers and logs, where control characters move the cursor,
/// clear the screen or forge lines. New lines and tabs are text; a Windows line end (CR LF)
/// becomes a new line; every other control character (C0, DEL, C1) refuses the text, so its
/// author learns at once instead of seeing it changed (docs/decisions.md).
pub(crate) fn without_controls(text: &str) -> Result<std::borrow::Cow<'_, str>, char> {
    let text = if text.contains("\r\n") {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    match text
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        Some(c) => Err(c),
        None => Ok(text),
    }
}

/// The refusal of a text that holds control character `c`.
pub(crate) fn control_refusal(what: &str, c: char) -> String {
    format!(
        "{what} holds the control character U+{:04X}; only new lines and tabs are allowed",
        u32::from(c)
    )
}

/// Replaces every `:shortcode:` that names an emoji (GitHub/gemoji shortcodes) with the emoji.
/// Anything else between colons is left alone.
pub(crate) fn convert_shortcodes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(':') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let code_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '+' || c == '-'))
            .unwrap_or(after.len());
        if code_len > 0
            && after[code_len..].starts_with(':')
            && let Some(emoji) = emojis::get_by_shortcode(&after[..code_len])
        {
            out.push_str(emoji.as_str());
            rest = &after[code_len + 1..];
        } else {
            out.push(':');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A reaction: an emoji itself, or a `:shortcode:` / `shortcode` naming one.
pub(crate) fn normalize_emoji(input: &str) -> Option<String> {
    let trimmed = input.trim();
    if let Some(e) = emojis::get(trimmed) {
        return Some(e.as_str().to_owned());
    }
    let code = trimmed.trim_start_matches(':').trim_end_matches(':');
    emojis::get_by_shortcode(code).map(|e| e.as_str().to_owned())
}

/// Logins mentioned as `@login` (or `@login@this-node`), in order of first appearance.
pub(crate) fn mentioned_logins(text: &str, node: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'@' && (i == 0 || !is_login_byte(bytes[i - 1])) {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && is_login_byte(bytes[end]) {
                end += 1;
            }
            // A trailing '.' ends a sentence, not a login.
            while end > start && bytes[end - 1] == b'.' {
                end -= 1;
            }
            if end > start {
                let login = text[start..end].to_lowercase();
                let mut next = end;
                // `@login@node`: only this node's users can be mentioned for now.
                if bytes.get(end) == Some(&b'@') {
                    let node_start = end + 1;
                    let mut node_end = node_start;
                    while node_end < bytes.len()
                        && (bytes[node_end].is_ascii_alphanumeric()
                            || bytes[node_end] == b'.'
                            || bytes[node_end] == b'-')
                    {
                        node_end += 1;
                    }
                    let named = text[node_start..node_end].trim_end_matches('.');
                    next = node_end;
                    if !named.eq_ignore_ascii_case(node) {
                        i = next;
                        continue;
                    }
                }
                if seen.insert(login.clone()) {
                    found.push(login);
                }
                i = next;
                continue;
            }
        }
        i += 1;
    }
    found
}

fn is_login_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcodes_become_emoji() {
        assert_eq!(
            convert_shortcodes("Готово :thumbsup: :tada:"),
            "Готово 👍 🎉"
        );
        assert_eq!(convert_shortcodes("time 10:30:45"), "time 10:30:45");
        assert_eq!(
            convert_shortcodes(":not_an_emoji: :smile"),
            ":not_an_emoji: :smile"
        );
        assert_eq!(convert_shortcodes("::"), "::");
        assert_eq!(convert_shortcodes(":+1::+1:"), "👍👍");
    }

    #[test]
    fn reactions_accept_emoji_and_shortcodes() {
        assert_eq!(normalize_emoji("👍").as_deref(), Some("👍"));
        assert_eq!(normalize_emoji(":thumbsup:").as_deref(), Some("👍"));
        assert_eq!(normalize_emoji("heart").as_deref(), Some("❤️"));
        assert_eq!(normalize_emoji("not an emoji"), None);
    }

    #[test]
    fn mentions_are_found() {
        assert_eq!(
            mentioned_logins("@ivanov, посмотри счёт. cc @a.petrova.", "hq"),
            vec!["ivanov", "a.petrova"]
        );
        assert_eq!(
            mentioned_logins("mail me: boss@corp.ru", "hq"),
            Vec::<String>::new()
        );
        assert_eq!(
            mentioned_logins("@ivanov@hq and @ivanov@other", "hq"),
            vec!["ivanov"]
        );
        assert_eq!(mentioned_logins("@Ivanov @ivanov", "hq"), vec!["ivanov"]);
    }
}
