//! Administrator commands. The same commands reach the node three ways: from an administrator's
//! client over QUIC, from `veche admin …` over the local admin socket, and from `veche admin …`
//! straight against the data folder while the node is stopped.

use std::collections::BTreeMap;

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
        /// Department (for the directory).
        #[serde(default)]
        department: String,
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
    /// Installs or upgrades a plugin from a folder on the node's machine holding `plugin.toml`
    /// and the component.
    PluginInstall {
        /// The folder.
        path: String,
        /// Rights granted: `kv`, `messaging`, `filesystem`. Every right the plugin asks for
        /// must be granted, or the install is refused.
        #[serde(default)]
        grants: Vec<String>,
        /// The installation's configuration (overrides the manifest's defaults).
        #[serde(default)]
        config: BTreeMap<String, String>,
    },
    /// Lists installed plugins.
    PluginList,
    /// Enables a plugin.
    PluginEnable {
        /// Plugin id.
        id: String,
    },
    /// Disables a plugin: it gets no calls; its bot's inbox waits.
    PluginDisable {
        /// Plugin id.
        id: String,
    },
    /// Reinstalls a plugin from the folder it was installed from.
    PluginReload {
        /// Plugin id.
        id: String,
    },
    /// Removes a plugin: it gets no more calls and its installed component goes; its bot
    /// inbox is dropped. What it stored (key-value entries, its folder, its log) stays for a
    /// reinstall unless `purge`; its bot user and the bot's messages always stay, as history.
    /// With `purge`, also clears what an earlier uninstall left.
    PluginUninstall {
        /// Plugin id.
        id: String,
        /// Also remove what the plugin stored.
        #[serde(default)]
        purge: bool,
    },
    /// The newest lines of a plugin's log.
    PluginLogs {
        /// Plugin id.
        id: String,
        /// How many lines (1 to 2000).
        limit: u32,
    },
    /// A bot's dead letters: items it failed on repeatedly.
    PluginDeadLetters {
        /// Plugin id.
        id: String,
    },
    /// Puts a bot's dead letters (one, or all) back in its inbox.
    PluginReplay {
        /// Plugin id.
        id: String,
        /// The dead letter; all of them when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<i64>,
    },
    /// Posts a business event, as an application would: bots subscribed to its kind receive
    /// it once per (source, idempotency key).
    EventPost {
        /// The application that posts it.
        source: String,
        /// E.g. `invoice.posted`.
        kind: String,
        /// The object it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object: Option<crate::discussions::ObjectRef>,
        /// JSON.
        payload: String,
        /// The application's id for the event.
        idempotency_key: String,
    },
    /// Starts an application's registration: a one-time code is e-mailed to `email`.
    AppRegister {
        /// The application's name (its login, and the `application` of its objects).
        name: String,
        /// Where the code goes.
        email: String,
    },
    /// Rebuilds the search index from the messages; search keeps answering meanwhile.
    Reindex,
    /// Lists applications.
    AppList,
    /// Revokes an application's credentials.
    AppRevoke {
        /// The application's name.
        name: String,
    },
    /// Allows an application to embed the object-discussion widget in pages of these web
    /// origins (`https://erp.corp.example`), replacing the ones allowed before; with none,
    /// disallows it and ends its widgets' sessions.
    AppEmbed {
        /// The application's name.
        name: String,
        /// `scheme://host[:port]` each.
        origins: Vec<String>,
    },
    /// Adds a node webhook: business events of these kinds are POSTed to `url`, signed.
    WebhookAdd {
        /// The receiver.
        url: String,
        /// Event kinds, or `*` for all.
        kinds: Vec<String>,
        /// `hmac-sha256` or `ed25519`.
        signing: String,
    },
    /// Lists every webhook with its delivery state.
    WebhookList,
    /// Removes a webhook.
    WebhookRemove {
        /// Its id.
        id: String,
    },
    /// Queues a webhook's failed requests again.
    WebhookRetry {
        /// Its id.
        id: String,
    },
    /// Where file contents are kept, and how much.
    FilesStatus,
    /// Sends new file contents to `to` (`fs` or `plugin:<id>`) and moves the existing ones
    /// there, one at a time, while the node keeps serving them.
    FilesMigrate {
        /// The backend.
        to: String,
    },
    /// Removes expired uploads, files no message uses any more and contents no file uses,
    /// now rather than at the next periodic clean-up.
    FilesCleanup,
    /// Makes a signed offer to link with another node, to send to its administrator.
    LinkOffer {
        /// `branch` (the same company) or `partner`.
        relationship: String,
        /// How many days the link is valid.
        days: u32,
        /// What the link may carry.
        scope: LinkScope,
        /// This organisation, as the other side knows it.
        organisation: String,
        /// Whom the other administrator calls about the link.
        contact: String,
        /// The active link this offer renews: the same link, a later version (a wider scope,
        /// a later expiry), in force once the other side has accepted and this side
        /// confirmed. Until then the link carries on as it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        renews: Option<String>,
    },
    /// Countersigns another node's offer: the link is active on this node at once, and the
    /// returned grant goes back to the offering administrator.
    LinkAccept {
        /// The offer's text.
        offer: String,
        /// This organisation, as the other side knows it.
        organisation: String,
        /// Whom the other administrator calls about the link.
        contact: String,
    },
    /// Activates a link this node offered, from the grant the other side returned.
    LinkConfirm {
        /// The grant's text.
        grant: String,
    },
    /// Every link, offered, active or ended.
    LinkList,
    /// Narrows what a link carries, at once and without the other side's signature (widening
    /// takes a new offer); the other node is told.
    LinkNarrow {
        /// The link's id.
        link: String,
        /// The new scope: nothing in it may be wider than now.
        scope: LinkScope,
    },
    /// Shares a group this node is home of with a linked node: its members there read and
    /// write it, and everything in it from now on travels over the link.
    DiscussionShare {
        /// The group's id.
        discussion: String,
        /// The link's id.
        link: String,
    },
    /// Ends a link at once and tells the other node, which stops trying.
    LinkRevoke {
        /// The link's id.
        link: String,
        /// Why, for the other administrator.
        reason: String,
    },
}

/// What a link may carry; either side may later narrow it alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkScope {
    /// Object discussions (about invoices, customers) may be shared, not only dialogs and
    /// groups.
    pub object_discussions: bool,
    /// Whose profiles the other node may look up: `none`, `members` (of shared discussions)
    /// or `full`.
    pub directory: String,
    /// Presence travels.
    pub presence: bool,
    /// Files travel, up to this size in MiB (0: no files).
    pub max_file_mb: u64,
}

/// A link with another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The link's id.
    pub link: String,
    /// `offered` (waiting for the other side's grant), `pending` (accepted here, not yet
    /// confirmed by the other node: it ends unconfirmed after a while), `active` or `ended`.
    pub state: String,
    /// The other node's name; empty while offered.
    pub peer: String,
    /// The other node's id (from its key); empty while offered.
    pub peer_id: String,
    /// The other organisation; empty while offered.
    pub organisation: String,
    /// `branch` or `partner`.
    pub relationship: String,
    /// What the link carries now.
    pub scope: LinkScope,
    /// What both administrators compare: of the offer while offered, of the grant after.
    pub fingerprint: String,
    /// The grant's version: 1, then one more with each renewal.
    #[serde(default)]
    pub version: u32,
    /// Valid until.
    pub not_after: Timestamp,
    /// Whether a connection is open now and the other node has answered this one's greeting.
    pub connected: bool,
    /// Items waiting to be delivered to the other node.
    pub queued: u64,
    /// Why the link ended.
    pub ended_reason: Option<String>,
    /// Why delivery to the other node cannot go on, if it cannot (it lost items it had
    /// acknowledged, restored from a backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    /// The version of a renewal this node accepted, in force once the other node confirms it
    /// (until then the link goes on under `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewing: Option<u32>,
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
    /// The plugin that was installed or changed.
    Plugin {
        /// The plugin.
        plugin: PluginInfo,
    },
    /// Answer to `PluginList`.
    Plugins {
        /// Installed plugins, by id.
        plugins: Vec<PluginInfo>,
    },
    /// Answer to `PluginLogs`.
    PluginLogs {
        /// Oldest first.
        lines: Vec<PluginLogLine>,
    },
    /// Answer to `PluginDeadLetters`.
    DeadLetters {
        /// Oldest first.
        items: Vec<DeadLetter>,
    },
    /// Answer to `PluginUninstall`.
    PluginUninstalled {
        /// The plugin's id.
        id: String,
        /// Whether what it stored was removed too.
        purged: bool,
        /// Its key-value entries (kept, or removed when purged).
        kv_entries: u64,
        /// Its log lines (kept, or removed when purged).
        log_lines: u64,
        /// Its folder (storage backends), if it has one (kept, or removed when purged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        folder: Option<String>,
        /// Its bot user, which stays with its messages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bot_user: Option<String>,
        /// Items its bot had not been told yet, dropped.
        inbox_dropped: u64,
    },
    /// Answer to `PluginReplay`: how many items went back in line.
    Replayed {
        /// Count.
        count: u64,
    },
    /// Answer to `EventPost`.
    EventPosted {
        /// `false` if the source had already sent this idempotency key.
        fresh: bool,
    },
    /// Answer to `AppList`.
    Apps {
        /// By name.
        apps: Vec<AppInfo>,
    },
    /// Answer to `WebhookAdd`.
    Webhook {
        /// The webhook.
        webhook: WebhookInfo,
        /// The HMAC secret, shown only now (empty for ed25519).
        secret: String,
    },
    /// Answer to `WebhookList`.
    Webhooks {
        /// Oldest first.
        webhooks: Vec<WebhookInfo>,
    },
    /// Answer to `FilesStatus`.
    Files {
        /// Where new contents go.
        current: String,
        /// Contents per backend.
        backends: Vec<FileBackendInfo>,
    },
    /// Answer to `FilesMigrate`.
    FilesMigrated {
        /// Contents moved.
        moved: u64,
        /// Their bytes.
        bytes: u64,
        /// SHA-256 of contents that could not be moved (they stay readable where they are;
        /// run the command again).
        failed: Vec<String>,
    },
    /// Answer to `FilesCleanup`.
    FilesCleaned {
        /// Files removed.
        files: u64,
        /// Contents removed.
        contents: u64,
    },
    /// Answer to `LinkOffer`.
    LinkOffered {
        /// The offer's text, for the other administrator.
        offer: String,
        /// The link as this node sees it now.
        link: LinkInfo,
    },
    /// Answer to `LinkAccept`.
    LinkAccepted {
        /// The grant's text, for the offering administrator.
        grant: String,
        /// The link.
        link: LinkInfo,
    },
    /// Answer to `LinkConfirm`.
    Link {
        /// The link.
        link: LinkInfo,
    },
    /// Answer to `LinkList`.
    Links {
        /// Newest first.
        links: Vec<LinkInfo>,
    },
    /// A command that returns nothing succeeded.
    Done,
}

/// Contents kept on one storage backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBackendInfo {
    /// `fs` or `plugin:<id>`.
    pub backend: String,
    /// Distinct contents.
    pub contents: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A business application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// Its name.
    pub name: String,
    /// Its user id.
    pub user_id: String,
    /// Where its codes go.
    pub email: String,
    /// `pending`, `active` or `revoked`.
    pub status: String,
    /// When its registration started.
    pub created_at: Timestamp,
    /// When it was activated.
    pub activated_at: Option<Timestamp>,
    /// The instance it is bound to.
    pub instance_id: Option<String>,
    /// Connections refused as copies of its database.
    pub copy_refusals: u64,
    /// The last such refusal.
    pub last_copy_at: Option<Timestamp>,
    /// The instance id the last copy presented.
    pub last_copy_instance: Option<String>,
    /// The web origins that may embed its object-discussion widget (none: it may not).
    #[serde(default)]
    pub embed_origins: Vec<String>,
}

/// An outgoing webhook and the state of its requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookInfo {
    /// Its id.
    pub id: String,
    /// `node` or the owning application's user id.
    pub owner: String,
    /// The receiver.
    pub url: String,
    /// Event kinds it wants.
    pub kinds: Vec<String>,
    /// `hmac-sha256` or `ed25519`.
    pub signing: String,
    /// Requests waiting or being retried.
    pub pending: u64,
    /// Requests delivered.
    pub delivered: u64,
    /// Requests given up after every attempt failed.
    pub failed: u64,
    /// The most recent error.
    pub last_error: Option<String>,
}

/// An installed plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Whether the administrator enabled it.
    pub enabled: bool,
    /// `active`, `disabled`, `paused for …: why`, or `failed: why`.
    pub status: String,
    /// Roles, e.g. `context-provider(invoice)`, `bot(invoice.posted)`.
    pub roles: Vec<String>,
    /// Rights it holds.
    pub rights: Vec<String>,
    /// Its bot user, if it has the bot role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_user: Option<String>,
    /// Items its bot failed on repeatedly.
    pub dead_letters: u64,
    /// The limits each of its calls runs under (what it asked for, within the node's caps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PluginLimits>,
}

/// The limits a plugin's calls run under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginLimits {
    /// CPU time per call, in milliseconds.
    pub cpu_ms: u32,
    /// Wall-clock time per call, in milliseconds.
    pub call_timeout_ms: u32,
    /// Memory, in MiB.
    pub memory_mib: u64,
    /// Calls at once.
    pub max_concurrency: u32,
}

/// One line of a plugin's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginLogLine {
    /// When.
    pub at: Timestamp,
    /// `trace` … `error`, or `stderr` for what the plugin printed.
    pub level: String,
    /// The message.
    pub message: String,
    /// Structured fields.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// An item a bot failed on repeatedly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id (for replaying it alone).
    pub id: i64,
    /// `message`, `event` or `click`.
    pub kind: String,
    /// Attempts made.
    pub attempts: u64,
    /// The last error.
    pub error: String,
    /// When it was queued.
    pub at: Timestamp,
    /// What the bot was to be told (JSON).
    pub payload: String,
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
