//! The administrator's file policy: what a file is (recognised from its content), whether it
//! is accepted, and the rule that refuses it.

use veche_protocol::ErrorBody;

use crate::config::FilesConfig;
#[cfg(test)]
use crate::config::is_type_pattern;

/// How many leading bytes the type is recognised from.
pub const SNIFF_BYTES: usize = 8192;

fn matches(pattern: &str, mime: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(ty) => mime
            .split_once('/')
            .is_some_and(|(t, _)| t.eq_ignore_ascii_case(ty)),
        None => pattern.eq_ignore_ascii_case(mime),
    }
}

/// The media type of content starting with `head` (at most [`SNIFF_BYTES`] of it).
pub fn sniff(head: &[u8]) -> String {
    if head.starts_with(b"#!") {
        return "text/x-shellscript".into();
    }
    if let Some(t) = infer::get(head) {
        return t.mime_type().to_owned();
    }
    // Programs too short for `infer`'s checks are still programs.
    if head.starts_with(b"MZ") {
        return "application/vnd.microsoft.portable-executable".into();
    }
    if head.starts_with(b"\x7fELF") {
        return "application/x-executable".into();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A character cut at the end of the sample is still text.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if text && !head.contains(&0) {
        "text/plain".into()
    } else {
        "application/octet-stream".into()
    }
}

/// The name as stored and shown: no folders, no control or bidirectional-override characters
/// (which can disguise `exe.pdf` as `fdp.exe`), no leading or trailing dots and spaces, at
/// most 255 bytes.
pub fn sanitize_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    if out.is_empty() { "file".into() } else { out }
}

/// The name's extension, lowercase, if it has one.
pub fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// Checks what can be checked before a byte is sent: files at all, the discussion's kind,
/// the size and the name.
pub fn check_declared(
    config: &FilesConfig,
    kind: &str,
    name: &str,
    size: u64,
) -> Result<(), ErrorBody> {
    if !config.enabled {
        return Err(ErrorBody::refused_by(
            "files.enabled",
            "the administrator has turned files off on this node",
        ));
    }
    if !config.discussion_kinds.iter().any(|k| k == kind) {
        return Err(ErrorBody::refused_by(
            "files.discussion_kinds",
            format!("files are not allowed in {kind} discussions on this node"),
        ));
    }
    let max = config.max_size_mb.saturating_mul(1024 * 1024);
    if size > max {
        return Err(ErrorBody::refused_by(
            "files.max_size_mb",
            format!(
                "the file is {size} bytes; the largest allowed is {} MiB",
                config.max_size_mb
            ),
        ));
    }
    if let Some(ext) = extension(name)
        && config
            .blocked_extensions
            .iter()
            .any(|b| b.eq_ignore_ascii_case(&ext))
    {
        return Err(ErrorBody::refused_by(
            "files.blocked_extensions",
            format!("files ending in .{ext} are not allowed on this node"),
        ));
    }
    Ok(())
}

/// Checks the type recognised from the content.
pub fn check_type(config: &FilesConfig, mime: &str) -> Result<(), ErrorBody> {
    if config.blocked_types.iter().any(|p| matches(p, mime)) {
        return Err(ErrorBody::refused_by(
            "files.blocked_types",
            format!("the content is {mime}, which is not allowed on this node"),
        ));
    }
    if !config.allowed_types.is_empty() && !config.allowed_types.iter().any(|p| matches(p, mime)) {
        return Err(ErrorBody::refused_by(
            "files.allowed_types",
            format!(
                "the content is {mime}; this node accepts only {}",
                config.allowed_types.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Whether a download of this type is shown in place rather than saved (HTTP gateway):
/// raster images only; everything else (HTML, SVG, scripts, unknown) is an attachment.
pub fn inline(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_the_type() {
        assert_eq!(
            sniff(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0"),
            "application/x-executable"
        );
        assert_eq!(sniff(b"#!/bin/sh\nrm -rf /\n"), "text/x-shellscript");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff("Счёт №42 оплачен".as_bytes()), "text/plain");
        // A character cut by the sample's end is still text; NUL bytes are not.
        assert_eq!(sniff(&"ё".as_bytes()[..1]), "text/plain");
        assert_eq!(sniff(b"a\0b"), "application/octet-stream");
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0"),
            "application/vnd.microsoft.portable-executable"
        );
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("C:\\Users\\a\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_name("invoice\u{202e}fdp.exe"), "invoicefdp.exe");
        assert_eq!(sanitize_name("a\0b\nc.txt"), "abc.txt");
        assert_eq!(sanitize_name(" .. "), "file");
        assert_eq!(sanitize_name(&"я".repeat(200)).len(), 254);
        assert_eq!(extension("Report.PDF.Exe").as_deref(), Some("exe"));
        assert_eq!(extension(".bashrc"), None);
    }

    #[test]
    fn rules_name_themselves() {
        let mut c = FilesConfig::default();
        let rule = |r: Result<(), ErrorBody>| r.unwrap_err().rule.unwrap();
        assert!(check_declared(&c, "group", "a.pdf", 1024).is_ok());
        assert_eq!(
            rule(check_declared(&c, "group", "run.BAT", 10)),
            "files.blocked_extensions"
        );
        assert_eq!(
            rule(check_declared(&c, "group", "a.pdf", 101 << 20)),
            "files.max_size_mb"
        );
        assert_eq!(
            rule(check_type(&c, "application/x-executable")),
            "files.blocked_types"
        );
        c.allowed_types = vec!["image/*".into()];
        assert!(check_type(&c, "image/png").is_ok());
        assert_eq!(rule(check_type(&c, "text/plain")), "files.allowed_types");
        c.discussion_kinds = vec!["group".into()];
        assert_eq!(
            rule(check_declared(&c, "dialog", "a.pdf", 1)),
            "files.discussion_kinds"
        );
        c.enabled = false;
        assert_eq!(
            rule(check_declared(&c, "group", "a.pdf", 1)),
            "files.enabled"
        );
        assert!(is_type_pattern("image/*") && is_type_pattern("application/vnd.ms-excel"));
        assert!(!is_type_pattern("*") && !is_type_pattern("image/") && !is_type_pattern("a b/c"));
    }
}
