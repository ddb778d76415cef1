//! Administrator commands. The same commands reach the node three ways: from an administrator's
//! client over QUIC, from `veche admin …` over the local admin socket, and from `veche admin …`
//! straight against the data folder while the node is stopped.

use serde::{Deserialize, Serialize};

use crate::{SessionInfo, Timestamp, UserInfo};

/// An administrator command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Creates a user.
    UserAdd {
        /// Login (without `@node`).
        login: String,
        /// Display name.
        display_name: String,
        /// E-mail address.
        email: String,
        /// Initial password.
        password: String,
        /// Make the user a node administrator.
        admin: bool,
    },
    /// Lists all users.
    UserList,
    /// Locks a user: they cannot log in, and their live connections close.
    UserLock {
        /// Login.
        login: String,
    },
    /// Unlocks a user.
    UserUnlock {
        /// Login.
        login: String,
    },
    /// Sets a user's password; their sessions are revoked.
    UserPasswd {
        /// Login.
        login: String,
        /// New password.
        password: String,
    },
    /// Lists a user's sessions.
    Sessions {
        /// Login.
        login: String,
    },
    /// The newest records of the audit log.
    AuditLog {
        /// How many records, newest first (1 to 10000).
        limit: u32,
    },
    /// Revokes one session of a user, or all of them; their connections close.
    Revoke {
        /// Login.
        login: String,
        /// The session to revoke; all sessions when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
    },
}

/// The result of an administrator command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AdminReply {
    /// The user that was created or changed.
    User {
        /// The user.
        user: UserInfo,
    },
    /// Answer to `UserList`.
    Users {
        /// All users, by login.
        users: Vec<UserInfo>,
    },
    /// Answer to `Sessions`.
    Sessions {
        /// The user's sessions, newest first.
        sessions: Vec<SessionInfo>,
    },
    /// Answer to `AuditLog`.
    Audit {
        /// Records, newest first.
        records: Vec<AuditEntry>,
    },
    /// Answer to `Revoke` and `UserPasswd`: how many sessions ended.
    Revoked {
        /// Number of sessions revoked.
        count: u64,
    },
}

/// One record of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: i64,
    /// When it happened.
    pub at: Timestamp,
    /// Who did it: `cli`, `admin-socket`, `user:login@node`, `ip:…`.
    pub actor: String,
    /// What: `user.add`, `user.lock`, `session.revoke`, `login.fail`, …
    pub action: String,
    /// On what.
    pub target: String,
    /// Details (never passwords, tokens or message bodies).
    pub detail: String,
}
