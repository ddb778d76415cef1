//! Files: uploads, downloads and attachments.
//!
//! A file is uploaded in two steps. `create_upload` on the control stream declares the file
//! (discussion, name, size, SHA-256) and is checked against the node's policy before a byte
//! moves; the content then goes over a **transfer stream**, a bidirectional QUIC stream the
//! client opens for it:
//!
//! ```text
//! client ── TransferRequest::Upload{upload, offset} ── raw bytes … FIN ──▶ node
//!        ◀── TransferReply::Progress{confirmed} … ── Uploaded{file} | Error ── FIN
//! client ── TransferRequest::Download{file, offset, thumbnail} ── FIN ──▶ node
//!        ◀── TransferReply::Download{file, offset, length} ── raw bytes … FIN
//! ```
//!
//! `confirmed` is what the node has on disk; an interrupted upload resumes from the last
//! confirmed offset (`upload_status` tells it after a reconnect). When all bytes are in, the
//! node verifies the SHA-256 and the content's type, stores the content once per hash and
//! answers with the file. The file is then attached to a message with `send` (`files`), in the
//! discussion it was uploaded for; a download is allowed to whoever may read a message it is
//! attached to (and to its uploader before it is attached).

use serde::{Deserialize, Serialize};

use crate::{ErrorBody, Timestamp};

/// The largest frame on a transfer stream (the raw bytes are not framed).
pub const MAX_TRANSFER_FRAME: usize = 64 * 1024;

/// `create_upload`: declares a file before its content is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// The discussion the file will be attached in; the caller must be able to post there.
    pub discussion: String,
    /// The file name, shown to readers (sanitized by the node), 1–255 bytes.
    pub name: String,
    /// The exact size in bytes.
    pub size: u64,
    /// The SHA-256 of the content, 64 lowercase hex digits; checked when the last byte is in.
    pub sha256: String,
}

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    /// `up_<32 hex digits>`.
    pub id: String,
    /// The declared size.
    pub size: u64,
    /// Bytes the node has stored so far: the offset to send from.
    pub confirmed: u64,
    /// The upload is dropped if it is not completed by then.
    pub expires_at: Timestamp,
    /// The file, once the upload is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// `f_<32 hex digits>`: random, not derived from the content.
    pub id: String,
    /// The sanitized file name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The media type recognised from the content (not the one a client claims).
    pub mime: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Whether the node made an image preview (`thumbnail: true` in a download).
    pub thumbnail: bool,
    /// Width and height of an image, when the node could read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<(u32, u32)>,
    /// The discussion it was uploaded for.
    pub discussion: String,
    /// Who uploaded it.
    pub uploader: String,
    /// When the upload completed.
    pub created_at: Timestamp,
}

/// What the node allows, so that clients can refuse early and say why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePolicy {
    /// Files are accepted at all.
    pub enabled: bool,
    /// Discussion kinds that take files: `dialog`, `group`, `object`.
    pub discussion_kinds: Vec<String>,
    /// The largest file, in bytes.
    pub max_size: u64,
    /// Media types accepted (`image/*` style patterns); empty means all not blocked.
    pub allowed_types: Vec<String>,
    /// Media types refused.
    pub blocked_types: Vec<String>,
    /// File name extensions refused (lowercase, without the dot).
    pub blocked_extensions: Vec<String>,
    /// Bytes each user may keep in files, counting uploads in progress; 0 means no limit.
    pub quota: u64,
    /// Bytes the caller keeps now.
    pub used: u64,
    /// Files are removed this many days after upload; 0 means kept.
    pub retention_days: u32,
}

/// The first frame a client writes on a transfer stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransferRequest {
    /// Send the upload's bytes from `offset` (which must equal its `confirmed`) to the end,
    /// then finish the stream.
    Upload {
        /// The upload id.
        upload: String,
        /// Where the bytes that follow start.
        offset: u64,
    },
    /// Read a file from `offset`.
    Download {
        /// The file id.
        file: String,
        /// The first byte wanted (to resume an interrupted download).
        #[serde(default)]
        offset: u64,
        /// The image preview (PNG) instead of the file.
        #[serde(default)]
        thumbnail: bool,
    },
}

/// Frames the node writes on a transfer stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransferReply {
    /// So many bytes of the upload are stored durably.
    Progress {
        /// Bytes stored.
        confirmed: u64,
    },
    /// The upload is complete and verified.
    Uploaded {
        /// The file.
        file: FileInfo,
    },
    /// The raw bytes that follow: `length` bytes of `file` from `offset`.
    Download {
        /// The file.
        file: FileInfo,
        /// Where they start.
        offset: u64,
        /// How many follow.
        length: u64,
        /// The media type of what follows (`image/png` for a thumbnail).
        mime: String,
    },
    /// The transfer failed; the stream ends after this frame.
    Error {
        /// Why.
        error: ErrorBody,
    },
    /// A frame this client does not know (from a newer node).
    #[serde(other)]
    Unknown,
}

/// Whether `s` is a SHA-256 written as 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_frames_round_trip_and_refuse_unknown_fields() {
        let up = TransferRequest::Upload {
            upload: "up_1".into(),
            offset: 7,
        };
        let mut buf = Vec::new();
        ciborium::into_writer(&up, &mut buf).unwrap();
        let back: TransferRequest = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!(back, up);
        let json = r#"{"type":"download","file":"f_1","extra":1}"#;
        assert!(serde_json::from_str::<TransferRequest>(json).is_err());
        let json = r#"{"type":"download","file":"f_1"}"#;
        let d: TransferRequest = serde_json::from_str(json).unwrap();
        assert_eq!(
            d,
            TransferRequest::Download {
                file: "f_1".into(),
                offset: 0,
                thumbnail: false
            }
        );
        let later: TransferReply = serde_json::from_str(r#"{"type":"from_the_future"}"#).unwrap();
        assert_eq!(later, TransferReply::Unknown);
    }

    #[test]
    fn sha256_hex_is_strict() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }
}
