use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::admin::{AdminReply, AdminRequest};
use crate::discussions::{
    Cursor, DiscussionEvent, DiscussionInfo, MessageVersion, ObjectRef, SendMessage,
};
use crate::files::{FileInfo, FilePolicy, NewUpload, UploadInfo};
use crate::presence::{
    NotificationLevel, NotificationSetting, PresenceChoice, PresenceInfo, PushEndpointInfo,
    PushTarget,
};

/// A frame sent by a client on its control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The first frame of every connection: the versions the client speaks.
    Hello {
        /// Protocol versions the client supports.
        versions: Vec<u16>,
        /// Free-form client name and version, for logs (`veche-cli/0.1`).
        client: String,
    },
    /// A request; the node answers with a [`ServerFrame::Response`] or
    /// [`ServerFrame::Error`] carrying the same `id`.
    Request {
        /// Chosen by the client, unique among its requests in flight.
        id: u64,
        /// What the client asks for.
        request: Request,
    },
}

/// What a client can ask of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check; allowed before authentication.
    Ping,
    /// Creates the first administrator with the one-time setup token the node printed.
    Setup {
        /// The setup token.
        token: String,
        /// Login of the new administrator.
        login: String,
        /// Their password.
        password: String,
        /// Display name.
        display_name: String,
        /// E-mail address.
        email: String,
    },
    /// Logs in with a password and opens a session bound to `device_id`.
    Login {
        /// The user's login (without `@node`).
        login: String,
        /// The password.
        password: String,
        /// The device this session belongs to.
        device_id: String,
        /// Human-readable device name (`Laptop`, `veche-cli on build-01`).
        device_name: String,
    },
    /// Authenticates this connection with a session token from an earlier login.
    Resume {
        /// The session token.
        token: String,
        /// Must be the device the session was opened for.
        device_id: String,
    },
    /// Ends this connection's session; the token stops working.
    Logout,
    /// The authenticated user's own account.
    Whoami,
    /// The authenticated user's own sessions, one per device they signed in on.
    ListSessions,
    /// Ends one of the authenticated user's own sessions (signs that device out; this one's
    /// own session is a logout).
    RevokeSession {
        /// The session's id (from `list_sessions`).
        session: String,
    },
    /// Changes the authenticated user's own password; other sessions are revoked.
    ChangePassword {
        /// The current password.
        old_password: String,
        /// The new password.
        new_password: String,
    },
    /// An administrator command; the user must be an administrator.
    Admin {
        /// The command.
        command: AdminRequest,
    },
    /// Opens the dialog with another user, creating it on first use. Both users opening it at
    /// once get the same discussion.
    OpenDialog {
        /// The other user (`login` or `login@node`).
        with: String,
    },
    /// Creates a group with the caller as owner.
    CreateGroup {
        /// Title, 1–200 characters.
        title: String,
        /// The other members (`login` or `login@node`).
        members: Vec<String>,
    },
    /// Opens the discussion of a business object, creating it on first use; the caller must
    /// have access to the object.
    OpenObject {
        /// The object.
        object: ObjectRef,
        /// Title for a new discussion (ignored if it exists).
        #[serde(default)]
        title: String,
    },
    /// How a business object looks (title, link, fields), from the context provider plugin of
    /// its type; for users who may read the object's discussion.
    DescribeObject {
        /// The object.
        object: ObjectRef,
    },
    /// Full-text search over the messages the caller may read now, best first.
    Search(crate::discussions::SearchQuery),
    /// People by display name, login or e-mail, with prefixes, typos and Latin↔Cyrillic
    /// transliteration; locked users are not listed.
    Directory {
        /// What was typed.
        query: String,
        /// At most this many (1–100).
        limit: u32,
        /// A linked node whose directory is searched instead of this node's, as far as the
        /// link's scope allows (its people are `login@node`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// Sets who may read and post in an object's discussion (administrators; registered
    /// applications later). Replaces the previous list.
    SetObjectAccess {
        /// The object.
        object: ObjectRef,
        /// Users (`login` or `login@node`).
        #[serde(default)]
        users: Vec<String>,
        /// Groups whose members have access (discussion ids of groups).
        #[serde(default)]
        groups: Vec<String>,
    },
    /// The caller's discussion list, most recent activity first (groups without their
    /// member lists; `get_discussion` has them).
    ListDiscussions,
    /// One discussion.
    GetDiscussion {
        /// The discussion.
        discussion: String,
    },
    /// Adds members to a group (owners).
    AddMembers {
        /// The group.
        discussion: String,
        /// Users (`login` or `login@node`).
        users: Vec<String>,
    },
    /// Removes a member from a group (owners), or the caller (anyone: leaving).
    RemoveMember {
        /// The group.
        discussion: String,
        /// The user (`login` or `login@node`).
        user: String,
    },
    /// Changes a group's or object discussion's title.
    SetTitle {
        /// The discussion.
        discussion: String,
        /// New title, 1–200 characters.
        title: String,
    },
    /// Follows or unfollows an object discussion (it is in the caller's list while followed).
    Follow {
        /// The discussion.
        discussion: String,
        /// Follow (true) or unfollow (false).
        follow: bool,
    },
    /// Receive live events of this object discussion on this connection while it is open in
    /// the client, even if not followed.
    Watch {
        /// The discussion.
        discussion: String,
        /// Start (true) or stop (false).
        watch: bool,
    },
    /// Posts a message.
    Send(SendMessage),
    /// Edits the caller's own message.
    Edit {
        /// The discussion.
        discussion: String,
        /// The message.
        message_id: String,
        /// New text.
        text: String,
    },
    /// Deletes a message (its author, a group owner, or a node administrator).
    Delete {
        /// The discussion.
        discussion: String,
        /// The message.
        message_id: String,
    },
    /// Adds or removes the caller's reaction.
    React {
        /// The discussion.
        discussion: String,
        /// The message.
        message_id: String,
        /// An emoji or a `:shortcode:`.
        emoji: String,
        /// Add (true) or remove (false).
        add: bool,
    },
    /// Clicks a button of a message; its author receives an `action_clicked` event.
    Click {
        /// The discussion.
        discussion: String,
        /// The message.
        message_id: String,
        /// The button's id.
        action_id: String,
    },
    /// Events of a discussion before `before` (exclusive; latest when absent), newest last.
    History {
        /// The discussion.
        discussion: String,
        /// Page boundary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// At most this many events (1–500).
        limit: u32,
    },
    /// Events after each cursor, in order; `more: true` in the answer means call again with
    /// the new cursors.
    Sync {
        /// The client's cursors.
        cursors: Vec<Cursor>,
    },
    /// Versions of an edited message.
    EditHistory {
        /// The discussion.
        discussion: String,
        /// The message.
        message_id: String,
    },
    /// Moves the caller's read marker forward to `seq`.
    MarkRead {
        /// The discussion.
        discussion: String,
        /// The last sequence number read.
        seq: u64,
    },
    /// Sets the caller's presence choice and status text (kept across restarts).
    SetPresence {
        /// What others should see.
        choice: PresenceChoice,
        /// A short status text (at most 100 characters; empty clears it).
        #[serde(default)]
        status_text: String,
    },
    /// How long this device's user has been idle; `0` when they are active now. Clients send
    /// it when the user becomes idle or active again.
    Activity {
        /// Milliseconds since the user's last input on this device.
        idle_ms: u64,
    },
    /// The presence of these users (at most 500); with `subscribe`, this connection also
    /// receives their changes from now on (replacing the previous subscription).
    GetPresence {
        /// Users (`login` or `login@node`).
        users: Vec<String>,
        /// Receive their changes too.
        #[serde(default)]
        subscribe: bool,
    },
    /// The caller is typing in a discussion (`true`, repeated every few seconds while it
    /// lasts) or stopped (`false`). Never stored; others see it expire by itself.
    Typing {
        /// The discussion.
        discussion: String,
        /// Typing or stopped.
        typing: bool,
    },
    /// Sets which messages of a discussion notify the caller, and optionally mutes it until a
    /// time.
    SetNotifications {
        /// The discussion.
        discussion: String,
        /// The level.
        level: NotificationLevel,
        /// Nothing is pushed from this discussion before this time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        muted_until: Option<Timestamp>,
    },
    /// The caller's notification settings that differ from the default.
    Notifications,
    /// What a client needs to register for push: the node's VAPID public key and the names of
    /// the configured push gateways.
    PushConfig,
    /// Registers this device's push endpoint (replacing its previous one of the same kind).
    RegisterPush {
        /// Where to push.
        target: PushTarget,
    },
    /// Removes one of the caller's push endpoints.
    UnregisterPush {
        /// The endpoint.
        id: String,
    },
    /// The caller's push endpoints.
    ListPush,
    /// Declares a file to upload (see `files`); answered with `upload`.
    CreateUpload(NewUpload),
    /// How far an upload of the caller's has come; answered with `upload`.
    UploadStatus {
        /// The upload id.
        upload: String,
    },
    /// Drops an unfinished upload of the caller's.
    CancelUpload {
        /// The upload id.
        upload: String,
    },
    /// A file's description, for a caller who may download it; answered with `file`.
    GetFile {
        /// The file id.
        file: String,
    },
    /// The node's file policy and the caller's usage; answered with `file_policy`.
    FilePolicy,
    /// The caller's client preferences, as last stored (an empty object at first); answered
    /// with `preferences`.
    GetPreferences,
    /// Replaces the caller's client preferences: a JSON object of at most
    /// [`MAX_PREFERENCES_BYTES`], defined by the clients, kept so that they follow the user.
    SetPreferences {
        /// The preferences.
        preferences: serde_json::Value,
    },
}

impl Request {
    /// The request's `method`, as it is written on the wire: for logs and metrics.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Setup { .. } => "setup",
            Self::Login { .. } => "login",
            Self::Resume { .. } => "resume",
            Self::Logout => "logout",
            Self::Whoami => "whoami",
            Self::ListSessions => "list_sessions",
            Self::RevokeSession { .. } => "revoke_session",
            Self::ChangePassword { .. } => "change_password",
            Self::Admin { .. } => "admin",
            Self::OpenDialog { .. } => "open_dialog",
            Self::CreateGroup { .. } => "create_group",
            Self::OpenObject { .. } => "open_object",
            Self::DescribeObject { .. } => "describe_object",
            Self::Search(_) => "search",
            Self::Directory { .. } => "directory",
            Self::SetObjectAccess { .. } => "set_object_access",
            Self::ListDiscussions => "list_discussions",
            Self::GetDiscussion { .. } => "get_discussion",
            Self::AddMembers { .. } => "add_members",
            Self::RemoveMember { .. } => "remove_member",
            Self::SetTitle { .. } => "set_title",
            Self::Follow { .. } => "follow",
            Self::Watch { .. } => "watch",
            Self::Send(_) => "send",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::React { .. } => "react",
            Self::Click { .. } => "click",
            Self::History { .. } => "history",
            Self::Sync { .. } => "sync",
            Self::EditHistory { .. } => "edit_history",
            Self::MarkRead { .. } => "mark_read",
            Self::SetPresence { .. } => "set_presence",
            Self::Activity { .. } => "activity",
            Self::GetPresence { .. } => "get_presence",
            Self::Typing { .. } => "typing",
            Self::SetNotifications { .. } => "set_notifications",
            Self::Notifications => "notifications",
            Self::PushConfig => "push_config",
            Self::RegisterPush { .. } => "register_push",
            Self::UnregisterPush { .. } => "unregister_push",
            Self::ListPush => "list_push",
            Self::CreateUpload(_) => "create_upload",
            Self::UploadStatus { .. } => "upload_status",
            Self::CancelUpload { .. } => "cancel_upload",
            Self::GetFile { .. } => "get_file",
            Self::FilePolicy => "file_policy",
            Self::GetPreferences => "get_preferences",
            Self::SetPreferences { .. } => "set_preferences",
        }
    }
}

/// The largest preferences object, serialized as JSON.
pub const MAX_PREFERENCES_BYTES: usize = 16 * 1024;

/// A frame sent by the node on a client's control stream.
///
/// Types the node sends accept unknown fields, so that a node may add optional fields within
/// a protocol version; types the node receives refuse them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `Hello`: the version both sides will speak.
    Welcome {
        /// The negotiated protocol version.
        version: u16,
        /// The node's name (the part after `@` in user ids).
        node: String,
        /// The node's clock.
        server_time: Timestamp,
    },
    /// A successful answer to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The answer (boxed: replies are far larger than the other frames).
        reply: Box<Reply>,
    },
    /// A failed request (`id` set) or a connection-level error (`id` absent), after which the
    /// node closes the connection.
    Error {
        /// The request's id, if the error answers a request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// What went wrong.
        error: ErrorBody,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to `Ping`.
    Pong {
        /// The node's clock.
        server_time: Timestamp,
    },
    /// Answer to `Login` and `Setup`: the connection is now authenticated.
    LoggedIn {
        /// The session token. Shown once; the node keeps only its hash.
        session_token: String,
        /// The new session.
        session: SessionInfo,
        /// The user.
        user: UserInfo,
    },
    /// Answer to `Resume`: the connection is now authenticated.
    Resumed {
        /// The resumed session.
        session: SessionInfo,
        /// The user.
        user: UserInfo,
    },
    /// Answer to `Whoami`.
    Me {
        /// The user.
        user: UserInfo,
    },
    /// Answer to `GetPreferences`.
    Preferences {
        /// The preferences object.
        preferences: serde_json::Value,
    },
    /// Answer to `ListSessions`.
    Sessions {
        /// The sessions, most recently seen first.
        sessions: Vec<SessionInfo>,
        /// The id of the session this request came on.
        current: String,
    },
    /// The request was carried out and has nothing to return.
    Done,
    /// Answer to an administrator command.
    Admin {
        /// The command's result.
        result: AdminReply,
    },
    /// One discussion.
    Discussion {
        /// The discussion.
        discussion: DiscussionInfo,
    },
    /// The discussion list, most recent activity first.
    Discussions {
        /// The discussions.
        discussions: Vec<DiscussionInfo>,
    },
    /// Answer to `send`: the stored message (the original one for a resend).
    Sent {
        /// Message id.
        message_id: String,
        /// Its sequence number.
        seq: u64,
    },
    /// Answer to `describe_object`.
    Object {
        /// The object's card.
        card: crate::discussions::ObjectCard,
    },
    /// Answer to `search`.
    SearchResults {
        /// Best first.
        hits: Vec<crate::discussions::SearchHit>,
        /// Set when nothing matched the query as typed and it was retried on the other
        /// keyboard layout: the query that was used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        corrected_query: Option<String>,
        /// Whether another page follows.
        more: bool,
    },
    /// Answer to `directory`.
    Directory {
        /// Best match first.
        users: Vec<DirectoryEntry>,
    },
    /// Answer to `history` and `sync`.
    Events {
        /// Events in sequence order (per discussion).
        events: Vec<DiscussionEvent>,
        /// `history`: older events exist (page back with `before`); `sync`: not everything was
        /// returned yet (call again with the new cursors).
        more: bool,
    },
    /// Answer to `edit_history`.
    Versions {
        /// Oldest first.
        versions: Vec<MessageVersion>,
    },
    /// Answer to `get_presence`.
    Presence {
        /// In the order asked; unknown users are left out.
        users: Vec<PresenceInfo>,
    },
    /// Answer to `notifications`.
    NotificationSettings {
        /// Settings that differ from the default.
        settings: Vec<NotificationSetting>,
    },
    /// Answer to `push_config`.
    PushConfig {
        /// The node's VAPID public key (uncompressed P-256 point, base64url), the
        /// `applicationServerKey` of `pushManager.subscribe`.
        vapid_public_key: String,
        /// Names of the push gateways devices may register with.
        gateways: Vec<String>,
    },
    /// Answer to `register_push`.
    PushRegistered {
        /// The endpoint's id.
        id: String,
    },
    /// Answer to `list_push`.
    PushEndpoints {
        /// The caller's endpoints.
        endpoints: Vec<PushEndpointInfo>,
    },
    /// Answer to `create_upload` and `upload_status`.
    Upload {
        /// The upload.
        upload: UploadInfo,
    },
    /// Answer to `get_file`.
    File {
        /// The file.
        file: FileInfo,
    },
    /// Answer to `file_policy`.
    FilePolicy {
        /// The policy.
        policy: FilePolicy,
    },
}

/// An event the node pushes on the connection's event stream (a unidirectional stream the node
/// opens after `Welcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The node is shutting down; reconnect later.
    ShuttingDown,
    /// This connection's session ended (revoked by an administrator, logged out, user locked,
    /// password changed). The connection closes right after.
    SessionEnded {
        /// Why.
        reason: String,
    },
    /// A change in a discussion the user can read, in sequence order per discussion.
    Discussion {
        /// The event.
        event: DiscussionEvent,
    },
    /// The user can no longer read this discussion (removed, left, or lost access to its
    /// object): forget it.
    DiscussionRemoved {
        /// The discussion.
        discussion: String,
    },
    /// The home node of `discussion`, a linked node, refused for good something the user wrote
    /// there on this node (a message, edit, deletion or reaction, or opening a dialog): it
    /// will not appear. Sending the same message again gets the same refusal.
    NotDelivered {
        /// The discussion.
        discussion: String,
        /// The message written or changed (none when a dialog could not be opened).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// Why.
        reason: String,
    },
    /// Someone clicked a button of one of the user's messages.
    ActionClicked {
        /// The discussion.
        discussion: String,
        /// The message.
        message_id: String,
        /// The button.
        action_id: String,
        /// Who clicked.
        user: String,
    },
    /// Presence changes of the user's contacts (people they share a dialog or group with),
    /// of users this connection subscribed to, and of the user themselves; also a snapshot of
    /// the contacts who are not offline, right after the connection authenticates. At most one
    /// per coalescing period.
    Presence {
        /// The changed users.
        users: Vec<PresenceInfo>,
    },
    /// Someone is typing in a discussion, or stopped. A `typing: true` that is not renewed
    /// within `expires_in_ms` has ended (the node also sends `typing: false` then).
    Typing {
        /// The discussion.
        discussion: String,
        /// Who.
        user: String,
        /// Typing or stopped.
        typing: bool,
        /// How long this indicator lasts unless renewed.
        expires_in_ms: u64,
    },
    /// An event this client does not know (from a newer node); skip it.
    #[serde(other)]
    Unknown,
}

/// What went wrong, in a form programs can match (`code`) and people can read (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation, safe to show to the user.
    pub message: String,
    /// For `throttled`: milliseconds until a new attempt may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For `unsupported_version`: the versions the node speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<u16>>,
    /// For a refusal by the node's policy: the setting that refused, such as
    /// `files.max_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl ErrorBody {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
            supported_versions: None,
            rule: None,
        }
    }

    /// A refusal by the policy setting `rule`.
    pub fn refused_by(rule: &str, message: impl Into<String>) -> Self {
        Self {
            rule: Some(rule.to_owned()),
            ..Self::new(ErrorCode::Forbidden, message)
        }
    }
}

/// Error codes. Clients must treat a code they do not know as `internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The account is locked by an administrator.
    AccountLocked,
    /// The request is well-formed but its content is invalid (the message says which field).
    BadRequest,
    /// The object already exists.
    Conflict,
    /// The frame exceeds the size limit.
    FrameTooLarge,
    /// The user may not do this.
    Forbidden,
    /// Something failed inside the node; the request may be retried.
    Internal,
    /// Wrong login or password (never says which).
    InvalidCredentials,
    /// The frame could not be decoded.
    MalformedFrame,
    /// The object does not exist or is not visible to the user.
    NotFound,
    /// Too many attempts; see `retry_after_ms`.
    Throttled,
    /// The request needs an authenticated connection.
    Unauthenticated,
    /// The request was not carried out because the node is stopping or the session ended;
    /// it may be sent again on a new connection.
    Unavailable,
    /// No protocol version in common; see `supported_versions`.
    UnsupportedVersion,
    /// A code this client does not know.
    #[serde(other)]
    Unknown,
}

/// A person as the directory shows them to colleagues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// `login@node`.
    pub id: String,
    /// Login.
    pub login: String,
    /// Display name.
    pub display_name: String,
    /// Department.
    #[serde(default)]
    pub department: String,
}

/// A user account as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Department.
    #[serde(default)]
    pub department: String,
    /// `login@node`.
    pub id: String,
    /// The login.
    pub login: String,
    /// Display name.
    pub display_name: String,
    /// E-mail address.
    pub email: String,
    /// Node administrator.
    pub admin: bool,
    /// Locked by an administrator: cannot log in.
    pub locked: bool,
    /// When the account was created.
    pub created_at: Timestamp,
}

/// A login session of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id (not the token).
    pub id: String,
    /// The device the session is bound to.
    pub device_id: String,
    /// The device's human-readable name.
    pub device_name: String,
    /// When the session was opened.
    pub created_at: Timestamp,
    /// Last login or resume.
    pub last_seen_at: Timestamp,
    /// When the session expires unless resumed before.
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {

    #[test]
    fn method_is_the_wire_tag() {
        for request in [
            Request::Ping,
            Request::Logout,
            Request::ListDiscussions,
            Request::ListSessions,
            Request::PushConfig,
            Request::FilePolicy,
            Request::GetPreferences,
            Request::ListPush,
            Request::Notifications,
            Request::Whoami,
        ] {
            let value = serde_json::to_value(&request).unwrap();
            assert_eq!(value["method"], request.method(), "{request:?}");
        }
    }
    use super::*;
    use crate::frame;

    #[test]
    fn unknown_error_codes_decode_as_unknown() {
        #[derive(Serialize)]
        struct Raw<'a> {
            code: &'a str,
            message: &'a str,
        }
        let bytes = frame::encode(
            &Raw {
                code: "from_the_future",
                message: "x",
            },
            1024,
        )
        .unwrap();
        let body: ErrorBody = frame::decode(&bytes[4..]).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
    }

    #[test]
    fn unknown_fields_are_refused() {
        #[derive(Serialize)]
        struct Raw {
            r#type: &'static str,
            versions: Vec<u16>,
            client: &'static str,
            admin: bool,
        }
        let raw = Raw {
            r#type: "hello",
            versions: vec![1],
            client: "x",
            admin: true,
        };
        let bytes = frame::encode(&raw, 1024).unwrap();
        assert!(frame::decode::<ClientFrame>(&bytes[4..]).is_err());
    }

    #[test]
    fn clients_tolerate_what_newer_nodes_add() {
        #[derive(Serialize)]
        struct FutureEvent {
            r#type: &'static str,
            payload: u32,
        }
        let bytes = frame::encode(
            &FutureEvent {
                r#type: "presence_changed",
                payload: 1,
            },
            1024,
        )
        .unwrap();
        assert_eq!(frame::decode::<Event>(&bytes[4..]).unwrap(), Event::Unknown);

        #[derive(Serialize)]
        struct FuturePong {
            kind: &'static str,
            server_time: i64,
            load: f32,
        }
        let bytes = frame::encode(
            &FuturePong {
                kind: "pong",
                server_time: 5,
                load: 0.5,
            },
            1024,
        )
        .unwrap();
        assert_eq!(
            frame::decode::<Reply>(&bytes[4..]).unwrap(),
            Reply::Pong {
                server_time: Timestamp(5)
            }
        );
    }
}
