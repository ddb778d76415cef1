//! The configuration sections the domain reads: `[presence]`, `[files]` and `[messages]`. The
//! node's `Config` composes them with its own sections and validates them.

use serde::{Deserialize, Serialize};

/// `[presence]`: who is available, away, busy or offline, and who is typing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// A device idle this long counts as away, in seconds.
    pub idle_away_secs: u64,
    /// How long a user whose last connection closed still shows as present, so that a
    /// reconnect does not flicker, in milliseconds.
    pub offline_grace_ms: u64,
    /// Presence changes are sent at most once per this period (per changed user and per
    /// receiver), in milliseconds.
    pub coalesce_ms: u64,
    /// How long a typing indicator lasts unless renewed, in milliseconds.
    pub typing_ttl_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            idle_away_secs: 300,
            offline_grace_ms: 10_000,
            coalesce_ms: 1000,
            typing_ttl_ms: 6000,
        }
    }
}

/// `[files]`: the administrator's file policy and where contents are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Whether files are accepted at all.
    pub enabled: bool,
    /// Discussion kinds that take files: `dialog`, `group`, `object`.
    pub discussion_kinds: Vec<String>,
    /// The largest file, in MiB.
    pub max_size_mb: u64,
    /// Media types accepted, as `type/subtype` or `type/*`; empty means every type that is not
    /// blocked.
    pub allowed_types: Vec<String>,
    /// Media types refused, recognised from the content (a renamed program is still a program).
    pub blocked_types: Vec<String>,
    /// File name extensions refused (for scripts that only their name gives away).
    pub blocked_extensions: Vec<String>,
    /// MiB each user may keep in files, uploads in progress included; 0 means no limit.
    pub quota_mb: u64,
    /// Files are removed this many days after upload; 0 keeps them.
    pub retention_days: u32,
    /// Where new contents go: `fs` (the `files/` folder) or `plugin:<id>` (a storage-backend
    /// plugin). `veche admin files migrate` moves existing contents and changes this for the
    /// running node (the choice it stores wins over this key from then on).
    pub backend: String,
    /// An upload not completed within this many hours is dropped.
    pub upload_expiry_hours: u64,
    /// An uploaded file not attached to a message within this many hours is removed.
    pub unattached_hours: u64,
    /// Make PNG previews of PNG, JPEG, GIF and WebP images.
    pub thumbnails: bool,
    /// The longer side of a preview, in pixels.
    pub thumbnail_size: u32,
    /// Images larger than this many pixels get no preview (decompression bombs).
    pub max_image_pixels: u64,
    /// An upload's progress is made durable and confirmed every this many KiB.
    pub confirm_every_kb: u64,
    /// How often removable files and expired uploads are cleaned up, in seconds.
    pub cleanup_secs: u64,
}

/// Media types refused by default: programs and scripts, recognised from the content.
pub(crate) const DEFAULT_BLOCKED_TYPES: &[&str] = &[
    "application/x-executable",
    "application/x-sharedlib",
    "application/vnd.microsoft.portable-executable",
    "application/x-mach-binary",
    "application/java-archive",
    "application/wasm",
    "text/x-shellscript",
];

/// Extensions refused by default: scripts that only their name gives away (Windows runs them
/// by extension), and 1C external data processors and reports (`epf`, `erf`), which run code
/// in the company's ERP when opened.
pub(crate) const DEFAULT_BLOCKED_EXTENSIONS: &[&str] = &[
    "exe", "dll", "com", "scr", "msi", "msp", "bat", "cmd", "ps1", "psm1", "vbs", "vbe", "js",
    "jse", "wsf", "wsh", "hta", "jar", "sh", "bash", "app", "apk", "lnk", "reg", "cpl", "pif",
    "scf", "epf", "erf",
];

/// Whether `t` is `type/subtype` or `type/*`.
pub fn is_type_pattern(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match t.split_once('/') {
        Some((ty, "*")) => token(ty),
        Some((ty, sub)) => token(ty) && token(sub),
        None => false,
    }
}

impl Default for FilesConfig {
    fn default() -> Self {
        let strings = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Self {
            enabled: true,
            discussion_kinds: strings(&["dialog", "group", "object"]),
            max_size_mb: 100,
            allowed_types: Vec::new(),
            blocked_types: strings(DEFAULT_BLOCKED_TYPES),
            blocked_extensions: strings(DEFAULT_BLOCKED_EXTENSIONS),
            quota_mb: 10 * 1024,
            retention_days: 0,
            backend: "fs".into(),
            upload_expiry_hours: 24,
            unattached_hours: 24,
            thumbnails: true,
            thumbnail_size: 320,
            max_image_pixels: 25_000_000,
            confirm_every_kb: 1024,
            cleanup_secs: 600,
        }
    }
}

/// `[messages]`: limits on what users post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Longest message text, in bytes of UTF-8 (after `:shortcode:` emoji are converted).
    pub max_text_bytes: usize,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            max_text_bytes: 16 * 1024,
        }
    }
}
