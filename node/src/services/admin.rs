//! Administrator commands.

use veche_protocol::admin::{AdminReply, AdminRequest, AppInfo, WebhookInfo};
use veche_protocol::{ErrorBody, ErrorCode, Timestamp};

use super::{Services, embed};
use crate::accounts::{AccountError, UserSpec};
use crate::apps::{AppError, NewWebhook, Signing};
use crate::errors::{Classified, Kind};
use crate::federation::FederationError;
use crate::files::FileError;
use crate::plugins::{BusinessEvent, PluginError};
use veche_store::{AppRow, WebhookStatus};

/// Carries out one administrator command on behalf of `actor` (written to the audit log).
pub(crate) async fn execute(
    services: &Services,
    actor: &str,
    request: AdminRequest,
) -> Result<AdminReply, AdminError> {
    let accounts = &services.accounts;
    Ok(match request {
        AdminRequest::UserAdd {
            login,
            display_name,
            email,
            password,
            admin,
            department,
        } => {
            let spec = UserSpec {
                login,
                display_name,
                email,
                password,
                department,
                admin,
            };
            AdminReply::User {
                user: accounts.create_user(&spec, actor).await?,
            }
        }
        AdminRequest::UserList => AdminReply::Users {
            users: accounts.users().await?,
        },
        AdminRequest::UserLock { login } => {
            let (user, mut ended) = accounts.set_locked(&login, true, actor).await?;
            // An application's WebSockets are registered under its name.
            ended.push(format!("app:{login}"));
            services
                .registry
                .end_sessions(&ended, "the account was locked");
            AdminReply::User { user }
        }
        AdminRequest::UserUnlock { login } => AdminReply::User {
            user: accounts.set_locked(&login, false, actor).await?.0,
        },
        AdminRequest::UserPasswd { login, password } => {
            let ended = accounts
                .set_password(&login, &password, None, actor)
                .await?;
            services
                .registry
                .end_sessions(&ended, "the password was changed");
            AdminReply::Revoked {
                count: ended.len() as u64,
            }
        }
        AdminRequest::Sessions { login } => AdminReply::Sessions {
            sessions: accounts.sessions(&login).await?,
        },
        AdminRequest::AuditLog { limit } => AdminReply::Audit {
            records: accounts.audit_tail(limit).await?,
        },
        AdminRequest::Revoke { login, session_id } => {
            let user = accounts.user(&login).await?;
            let ended = accounts
                .end_sessions(&user.id, session_id.as_deref(), actor, "session.revoke")
                .await?;
            if session_id.is_some() && ended.is_empty() {
                return Err(AdminError::NotFound("session"));
            }
            services
                .registry
                .end_sessions(&ended, "the session was revoked by an administrator");
            AdminReply::Revoked {
                count: ended.len() as u64,
            }
        }
        AdminRequest::PluginInstall {
            path,
            grants,
            config,
        } => AdminReply::Plugin {
            plugin: plugins(
                services
                    .plugins
                    .install(std::path::Path::new(&path), &grants, &config, actor)
                    .await,
            )?,
        },
        AdminRequest::PluginList => AdminReply::Plugins {
            plugins: plugins(services.plugins.list().await)?,
        },
        AdminRequest::PluginEnable { id } => AdminReply::Plugin {
            plugin: plugins(services.plugins.set_enabled(&id, true, actor).await)?,
        },
        AdminRequest::PluginDisable { id } => AdminReply::Plugin {
            plugin: plugins(services.plugins.set_enabled(&id, false, actor).await)?,
        },
        AdminRequest::PluginReload { id } => AdminReply::Plugin {
            plugin: plugins(services.plugins.reload(&id, actor).await)?,
        },
        AdminRequest::PluginUninstall { id, purge } => {
            // A storage backend holding files, or taking new ones, stays.
            if let Some(why) = services
                .files
                .backend_in_use(&format!("plugin:{id}"))
                .await?
            {
                return Err(AdminError::BadRequest(format!(
                    "{id} is not uninstalled: {why}"
                )));
            }
            let done = plugins(services.plugins.uninstall(&id, purge, actor).await)?;
            AdminReply::PluginUninstalled {
                id,
                purged: done.purged,
                kv_entries: done.store.kv_entries,
                log_lines: done.store.log_lines,
                folder: done.folder,
                bot_user: done.store.bot_user,
                inbox_dropped: done.store.inbox_dropped,
            }
        }
        AdminRequest::PluginLogs { id, limit } => AdminReply::PluginLogs {
            lines: plugins(services.plugins.logs(&id, limit).await)?,
        },
        AdminRequest::PluginDeadLetters { id } => AdminReply::DeadLetters {
            items: plugins(services.plugins.dead_letters(&id).await)?,
        },
        AdminRequest::PluginReplay { id, item } => AdminReply::Replayed {
            count: plugins(services.plugins.replay(&id, item, actor).await)?,
        },
        AdminRequest::EventPost {
            source,
            kind,
            object,
            payload,
            idempotency_key,
        } => {
            let event = BusinessEvent::new(
                source,
                kind,
                object,
                payload,
                idempotency_key,
                services.clock.now_ms(),
            )
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
            let key = event.idempotency_key.clone();
            let fresh = match services.plugins.post_event(event).await? {
                veche_store::Recorded::New(_) => true,
                veche_store::Recorded::Repeat(_) => false,
                veche_store::Recorded::Conflict(id) => {
                    return Err(AdminError::BadRequest(format!(
                        "idempotency_key {key:?} was already used for a different event (event {id})"
                    )));
                }
            };
            AdminReply::EventPosted { fresh }
        }
        AdminRequest::AppRegister { name, email } => {
            apps(
                services
                    .apps
                    .start_registration(&name, &email, true, actor)
                    .await,
            )?;
            AdminReply::Done
        }
        AdminRequest::FilesStatus => {
            let (current, usage) = services.files.status().await.map_err(AdminError::from)?;
            AdminReply::Files {
                current,
                backends: usage
                    .into_iter()
                    .map(|u| veche_protocol::admin::FileBackendInfo {
                        backend: u.backend,
                        contents: u64::try_from(u.blobs).unwrap_or(0),
                        bytes: u64::try_from(u.bytes).unwrap_or(0),
                    })
                    .collect(),
            }
        }
        AdminRequest::FilesMigrate { to } => {
            let done = services
                .files
                .migrate(actor, &to)
                .await
                .map_err(AdminError::from)?;
            AdminReply::FilesMigrated {
                moved: done.moved,
                bytes: done.bytes,
                failed: done.failed,
            }
        }
        AdminRequest::FilesCleanup => {
            let (files, contents) = services.files.cleanup().await.map_err(AdminError::from)?;
            AdminReply::FilesCleaned {
                files: files as u64,
                contents: contents as u64,
            }
        }
        AdminRequest::LinkOffer {
            relationship,
            days,
            scope,
            organisation,
            contact,
            renews,
        } => {
            let terms = crate::federation::OfferTerms {
                relationship: &relationship,
                days,
                scope: &scope,
                renews: renews.as_deref(),
            };
            let (offer, link) = services
                .federation
                .offer(actor, terms, organisation, contact)
                .await?;
            AdminReply::LinkOffered {
                offer: offer.to_text(),
                link,
            }
        }
        AdminRequest::LinkAccept {
            offer,
            organisation,
            contact,
        } => {
            let (grant, link) = services
                .federation
                .accept(actor, &offer, organisation, contact)
                .await?;
            AdminReply::LinkAccepted {
                grant: grant.to_text(),
                link,
            }
        }
        AdminRequest::LinkConfirm { grant } => AdminReply::Link {
            link: services.federation.confirm(actor, &grant).await?,
        },
        AdminRequest::LinkList => AdminReply::Links {
            links: services.federation.list().await?,
        },
        AdminRequest::LinkNarrow { link, scope } => AdminReply::Link {
            link: services.federation.narrow(actor, &link, &scope).await?,
        },
        AdminRequest::DiscussionShare { discussion, link } => {
            services.federation.share(actor, &discussion, &link).await?;
            AdminReply::Done
        }
        AdminRequest::LinkRevoke { link, reason } => {
            services.federation.revoke(actor, &link, &reason).await?;
            AdminReply::Done
        }
        AdminRequest::Reindex => {
            services.search.request_reindex().map_err(|e| {
                AdminError::BadRequest(format!("cannot reset the search index: {e}"))
            })?;
            AdminReply::Done
        }
        AdminRequest::AppList => {
            let store = &services.store;
            let mut list = Vec::new();
            for row in apps(services.apps.list().await)? {
                let mut info = app_info(&row);
                info.embed_origins = store.embed().allowed_embed_origins(&row.name).await?;
                list.push(info);
            }
            AdminReply::Apps { apps: list }
        }
        AdminRequest::AppRevoke { name } => {
            apps(services.apps.revoke(&name, actor).await)?;
            services
                .registry
                .end_sessions(&[format!("app:{name}")], "the application was revoked");
            embed::end_app(services, &name).await?;
            AdminReply::Done
        }
        AdminRequest::AppEmbed { name, origins } => {
            embed::set_origins(services, &name, &origins, actor).await?;
            AdminReply::Done
        }
        AdminRequest::WebhookAdd {
            url,
            kinds,
            signing,
        } => {
            let signing = match signing.as_str() {
                "hmac-sha256" | "" => Signing::HmacSha256,
                "ed25519" => Signing::Ed25519,
                other => {
                    return Err(AdminError::BadRequest(format!(
                        "signing {other:?}: use hmac-sha256 or ed25519"
                    )));
                }
            };
            let row = apps(
                services
                    .apps
                    .add_webhook(
                        "node",
                        NewWebhook {
                            url,
                            kinds,
                            signing,
                        },
                    )
                    .await,
            )?;
            let secret = row.secret.clone();
            AdminReply::Webhook {
                webhook: webhook_info(&WebhookStatus::fresh(row)),
                secret,
            }
        }
        AdminRequest::WebhookList => AdminReply::Webhooks {
            webhooks: apps(services.apps.webhooks(None).await)?
                .iter()
                .map(webhook_info)
                .collect(),
        },
        AdminRequest::WebhookRemove { id } => {
            apps(services.apps.remove_webhook(&id, None).await)?;
            AdminReply::Done
        }
        AdminRequest::WebhookRetry { id } => AdminReply::Replayed {
            count: apps(services.apps.retry_webhook(&id).await)?,
        },
    })
}

fn apps<T>(result: Result<T, AppError>) -> Result<T, AdminError> {
    result.map_err(AdminError::from)
}

pub(crate) fn app_info(row: &AppRow) -> AppInfo {
    AppInfo {
        name: row.name.clone(),
        user_id: row.user_id.clone(),
        email: row.email.clone(),
        status: row.status.clone(),
        created_at: Timestamp(row.created_at),
        activated_at: row.activated_at.map(Timestamp),
        instance_id: row.instance_id.clone(),
        copy_refusals: u64::try_from(row.copy_refusals).unwrap_or(0),
        last_copy_at: row.last_copy_at.map(Timestamp),
        last_copy_instance: row.last_copy_instance.clone(),
        embed_origins: Vec::new(),
    }
}

pub(crate) fn webhook_info(w: &WebhookStatus) -> WebhookInfo {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    WebhookInfo {
        id: w.hook.id.clone(),
        owner: w.hook.owner.clone(),
        url: w.hook.url.clone(),
        kinds: serde_json::from_str(&w.hook.kinds).unwrap_or_default(),
        signing: w.hook.signing.clone(),
        pending: count(w.pending),
        delivered: count(w.delivered),
        failed: count(w.failed),
        last_error: w.last_error.clone(),
    }
}

fn plugins<T>(result: Result<T, PluginError>) -> Result<T, AdminError> {
    result.map_err(AdminError::from)
}

/// Why an administrator command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The user, session, link, plugin or application does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The command's content is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// An account operation failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// A service refused, in the protocol's terms already (file operations).
    #[error("{}", .0.message)]
    Refused(Box<ErrorBody>),
    /// Storage failed.
    #[error("storage failure: {0}")]
    Store(#[from] veche_store::StoreError),
}

/// Link errors in the admin protocol's terms: a missing link is named as such, and every
/// other refusal is the administrator's to fix.
impl From<FederationError> for AdminError {
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::Store(e) => Self::Store(e),
            FederationError::NotFound(_) => Self::NotFound("link"),
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl From<FileError> for AdminError {
    fn from(e: FileError) -> Self {
        Self::Refused(Box::new(crate::errors::body(&e)))
    }
}

/// Plugin errors in the admin protocol's terms.
impl From<PluginError> for AdminError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::NotFound(_) => Self::NotFound("plugin"),
            PluginError::Store(e) => Self::Store(e),
            e => Self::BadRequest(e.to_string()),
        }
    }
}

/// Widget errors in the admin protocol's terms.
impl From<embed::EmbedError> for AdminError {
    fn from(e: embed::EmbedError) -> Self {
        match e {
            embed::EmbedError::NotFound(what) => Self::NotFound(what),
            embed::EmbedError::Store(e) => Self::Store(e),
            embed::EmbedError::Account(e) => Self::Account(e),
            e => Self::BadRequest(e.to_string()),
        }
    }
}

/// Application errors in the admin protocol's terms.
impl From<AppError> for AdminError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound(what) => Self::NotFound(what),
            AppError::Store(e) => Self::Store(e),
            e => Self::BadRequest(e.to_string()),
        }
    }
}

impl Classified for AdminError {
    fn kind(&self) -> Kind<'_> {
        Kind::Public(match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Account(e) => return e.kind(),
            Self::Refused(body) => return Kind::Decided(body),
            Self::Store(_) => return Kind::Internal,
        })
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Account(e) => e.retry_after(),
            _ => None,
        }
    }
}
