//! The object-discussion widget: an application an administrator allowed to embed mints a
//! short-lived, single-use token for one user and one of its objects; the widget's page
//! exchanges it for an embed session, a stored session of its own kind (`embed`) that covers
//! that one discussion and nothing else, and ends as soon as the user loses access to the
//! object.
//!
//! Every use of an embed session asks `authorize` again (through the discussions service);
//! a refusal ends the session and its live socket. Requests outside the discussion are
//! refused by [`in_scope`] before they reach any service.

use std::time::Duration;

use veche_protocol::discussions::ObjectRef;
use veche_protocol::{Event, Request};

use super::Services;
use crate::accounts::{AccountError, random_token, token_hash};
use crate::errors::{Classified, Kind};
use veche_core::discussions::{Caller, DiscussionError};
use veche_store::{AuditRecord, EmbedScopeRow, EmbedTokenRow, SessionRow, StoreError, TokenTaken};

/// Prefix of the tokens an application mints (`vemb_` and 64 hex digits: 256 bits).
pub(crate) const TOKEN_PREFIX: &str = "vemb_";
/// Prefix of embed session tokens.
pub(crate) const SESSION_PREFIX: &str = "vembs_";
/// A token's life when the application does not say: long enough to load a page.
pub(crate) const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The longest life a token may ask for: it travels in a page's address (its fragment).
pub(crate) const MAX_TOKEN_TTL: Duration = Duration::from_secs(300);
/// An embed session unused this long ends (a form left open over a working day survives).
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// An embed session ends this long after it began, however busy.
pub(crate) const SESSION_MAX: Duration = Duration::from_secs(24 * 3600);
/// The device an embed session is recorded under.
pub(crate) const EMBED_DEVICE: &str = "embed";
/// Most origins one application may be framed by.
pub(crate) const MAX_ORIGINS: usize = 20;

/// Why a widget operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EmbedError {
    /// The request's content is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The application may not embed the widget.
    #[error(
        "application {0:?} may not embed the widget; an administrator allows it with `veche admin app allow-embed {0} --origin https://…`"
    )]
    NotAllowed(String),
    /// The user may not see the object (or it, or the user, does not exist).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The user is locked.
    #[error("this account is locked")]
    Locked,
    /// The token is not one the node minted.
    #[error("unknown embed token")]
    UnknownToken,
    /// The token was used already.
    #[error("this embed token was used already; the application mints a new one for every page")]
    UsedToken,
    /// The token expired.
    #[error("this embed token has expired; the application mints a new one for every page")]
    ExpiredToken,
    /// The token was minted for another object than the page shows.
    #[error("this embed token was minted for another object")]
    WrongObject,
    /// The embed session is unknown, expired or ended.
    #[error("the embed session ended: {0}")]
    SessionEnded(String),
    /// The request is not one the widget makes, or names another discussion.
    #[error("an embed session covers its one discussion only")]
    OutOfScope,
    /// The discussions service refused.
    #[error(transparent)]
    Discussion(#[from] DiscussionError),
    /// Storage failed.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    /// An account operation failed.
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl EmbedError {
    /// The machine-readable code the gateway answers with, where it is not a protocol one.
    pub(crate) fn code(&self) -> Option<&'static str> {
        match self {
            Self::UnknownToken => Some("invalid_token"),
            Self::UsedToken => Some("used_token"),
            Self::ExpiredToken => Some("expired_token"),
            Self::SessionEnded(_) => Some("session_ended"),
            _ => None,
        }
    }
}

impl Classified for EmbedError {
    fn kind(&self) -> Kind<'_> {
        use veche_protocol::ErrorCode as C;
        Kind::Public(match self {
            Self::BadRequest(_) | Self::WrongObject => C::BadRequest,
            Self::NotAllowed(_) | Self::OutOfScope => C::Forbidden,
            Self::NotFound(_) => C::NotFound,
            Self::Locked => C::AccountLocked,
            Self::UnknownToken | Self::UsedToken | Self::ExpiredToken | Self::SessionEnded(_) => {
                C::Unauthenticated
            }
            Self::Discussion(e) => return e.kind(),
            Self::Account(e) => return e.kind(),
            Self::Store(_) => return Kind::Internal,
        })
    }
}

/// A minted token.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    pub(crate) token: String,
    pub(crate) expires_at: i64,
    pub(crate) discussion: String,
}

/// An embed session, as the widget's page gets it.
#[derive(Debug, Clone)]
pub(crate) struct EmbedSession {
    pub(crate) token: String,
    pub(crate) user: String,
    pub(crate) discussion: String,
    pub(crate) origins: Vec<String>,
    pub(crate) expires_at: i64,
}

/// An authenticated embed session: who, and the one discussion it covers.
#[derive(Debug, Clone)]
pub(crate) struct EmbedScope {
    pub(crate) caller: Caller,
    pub(crate) session: String,
    pub(crate) discussion: String,
}

/// A web origin as a `frame-ancestors` source and a `postMessage` target:
/// `scheme://host[:port]`, lowercase, with the default port left out. Refuses anything
/// else (paths, wildcards, credentials, other schemes).
pub(crate) fn parse_origin(input: &str) -> Result<String, EmbedError> {
    let bad = |why: &str| EmbedError::BadRequest(format!("origin {input:?}: {why}"));
    let text = input.trim().trim_end_matches('/');
    if text.contains('*') {
        return Err(bad("wildcards are not allowed; name each origin"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("use http:// or https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("no user name or password"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("an origin has no path, query or fragment"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(url.origin().ascii_serialization())
}

/// Whether an embed session covering `discussion` may make `request`: reading, writing,
/// reacting and typing in that discussion, and nothing else.
pub(crate) fn in_scope(request: &Request, discussion: &str) -> bool {
    match request {
        Request::GetDiscussion { discussion: d }
        | Request::History { discussion: d, .. }
        | Request::Watch { discussion: d, .. }
        | Request::Typing { discussion: d, .. }
        | Request::MarkRead { discussion: d, .. }
        | Request::EditHistory { discussion: d, .. }
        | Request::Edit { discussion: d, .. }
        | Request::Delete { discussion: d, .. }
        | Request::React { discussion: d, .. }
        | Request::Click { discussion: d, .. } => d == discussion,
        // Its files: the sequencer takes only files the user uploaded for this discussion,
        // and the gateway's file routes keep the session's uploads and downloads in it.
        Request::Send(message) => message.discussion == discussion,
        // The user's own policy and quota, checked before a file is sent.
        Request::FilePolicy => true,
        Request::Sync { cursors } => cursors.iter().all(|c| c.discussion == discussion),
        _ => false,
    }
}

/// Whether an embed session's socket passes `event` on: events of its discussion and the
/// connection's own, never the user's other discussions or presence.
pub(crate) fn event_in_scope(event: &Event, discussion: &str) -> bool {
    match event {
        Event::Discussion { event } => event.discussion == discussion,
        Event::DiscussionRemoved { discussion: d }
        | Event::Typing { discussion: d, .. }
        | Event::NotDelivered { discussion: d, .. }
        | Event::ActionClicked { discussion: d, .. } => d == discussion,
        Event::ShuttingDown | Event::SessionEnded { .. } => true,
        Event::Presence { .. } | Event::Unknown => false,
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Allows an application to embed the widget in pages of these origins (none: disallows
/// it, ending its embed sessions). Returns the origins as stored.
pub(crate) async fn set_origins(
    services: &Services,
    app: &str,
    origins: &[String],
    actor: &str,
) -> Result<Vec<String>, EmbedError> {
    if origins.len() > MAX_ORIGINS {
        return Err(EmbedError::BadRequest(format!(
            "at most {MAX_ORIGINS} origins per application"
        )));
    }
    let mut parsed = origins
        .iter()
        .map(|o| parse_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    parsed.sort();
    parsed.dedup();
    let audit = AuditRecord {
        at: services.clock.now_ms(),
        actor: actor.to_owned(),
        action: if parsed.is_empty() {
            "app.embed.deny"
        } else {
            "app.embed.allow"
        },
        target: app.to_owned(),
        detail: parsed.join(" "),
    };
    let ended = services
        .store
        .embed()
        .set_embed_origins(app, &parsed, &audit)
        .await?
        .ok_or(EmbedError::NotFound("application"))?;
    services
        .registry
        .end_sessions(&ended, "the application may no longer embed the widget");
    Ok(parsed)
}

/// The origins that may frame `app`'s widget now (none when it may not embed).
pub(crate) async fn origins(services: &Services, app: &str) -> Result<Vec<String>, EmbedError> {
    Ok(services.store.embed().embed_origins(app).await?)
}

/// The caller a user's widget acts as: never with an administrator's powers.
fn embed_caller(user: &str) -> Caller {
    Caller {
        user: user.to_owned(),
        device: EMBED_DEVICE.to_owned(),
        admin: false,
        connection: 0,
    }
}

/// The user named (login or id), unlocked.
async fn unlocked_user(services: &Services, user: &str) -> Result<String, EmbedError> {
    let id = services
        .discussions
        .user_ref(user)
        .map_err(|_| EmbedError::NotFound("user"))?;
    let row = match services.accounts.user_by_id(&id).await {
        Ok(row) => row,
        Err(AccountError::NotFound(_)) => return Err(EmbedError::NotFound("user")),
        Err(e) => return Err(e.into()),
    };
    if row.locked {
        return Err(EmbedError::Locked);
    }
    Ok(row.id)
}

/// Whether `user` may read `discussion` now; "not found" when not.
async fn check_access(services: &Services, user: &str, discussion: &str) -> Result<(), EmbedError> {
    match services
        .discussions
        .get(&embed_caller(user), discussion)
        .await
    {
        Ok(_) => Ok(()),
        Err(DiscussionError::NotFound(_)) => Err(EmbedError::NotFound("object")),
        Err(e) => Err(e.into()),
    }
}

/// Mints a token for `user` and the application's object, if the application may embed,
/// the user is unlocked and may see the object now. The object's discussion is created if
/// it does not exist yet.
pub(crate) async fn mint(
    services: &Services,
    app: &Caller,
    app_name: &str,
    object: ObjectRef,
    user: &str,
    ttl: Option<Duration>,
) -> Result<Minted, EmbedError> {
    let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(EmbedError::BadRequest(format!(
            "ttl_secs is 1 to {}",
            MAX_TOKEN_TTL.as_secs()
        )));
    }
    if origins(services, app_name).await?.is_empty() {
        return Err(EmbedError::NotAllowed(app_name.to_owned()));
    }
    let user = unlocked_user(services, user).await?;
    let d = &services.discussions;
    let discussion = match d.existing_object_discussion(app, &object).await? {
        Some(id) => id,
        None => match d.open_object(app, object.clone(), "").await? {
            veche_protocol::Reply::Discussion { discussion } => discussion.id,
            _ => return Err(EmbedError::NotFound("object")),
        },
    };
    check_access(services, &user, &discussion).await?;
    let token = format!("{TOKEN_PREFIX}{}", random_token());
    let now = services.clock.now_ms();
    let expires_at = now.saturating_add(ms(ttl));
    let row = EmbedTokenRow {
        token_hash: token_hash(&token),
        application: app_name.to_owned(),
        user_id: user.clone(),
        object_type: object.object_type.clone(),
        object_id: object.object_id.clone(),
        discussion_id: discussion.clone(),
        created_at: now,
        expires_at,
        used_at: None,
    };
    let audit = AuditRecord {
        at: now,
        actor: format!("app:{app_name}"),
        action: "embed.token",
        target: user,
        detail: format!(
            "{app_name}/{}/{} for {} s",
            object.object_type,
            object.object_id,
            ttl.as_secs()
        ),
    };
    services
        .store
        .embed()
        .insert_embed_token(&row, &audit)
        .await?;
    Ok(Minted {
        token,
        expires_at,
        discussion,
    })
}

/// Exchanges a token for an embed session on the page of `object`: once, before it
/// expires, while the user may still see the object.
pub(crate) async fn exchange(
    services: &Services,
    token: &str,
    object: &ObjectRef,
) -> Result<EmbedSession, EmbedError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(EmbedError::UnknownToken);
    }
    let store = &services.store;
    let now = services.clock.now_ms();
    let row = match store
        .embed()
        .take_embed_token(&token_hash(token), now)
        .await?
    {
        TokenTaken::Taken(row) => row,
        TokenTaken::Used => return Err(EmbedError::UsedToken),
        TokenTaken::Expired => return Err(EmbedError::ExpiredToken),
        TokenTaken::Unknown => return Err(EmbedError::UnknownToken),
    };
    if row.application != object.application
        || row.object_type != object.object_type
        || row.object_id != object.object_id
    {
        return Err(EmbedError::WrongObject);
    }
    unlocked_user(services, &row.user_id).await?;
    check_access(services, &row.user_id, &row.discussion_id).await?;
    let session_token = format!("{SESSION_PREFIX}{}", random_token());
    let id = uuid::Uuid::now_v7().to_string();
    let ends_at = now.saturating_add(ms(SESSION_MAX));
    let expires_at = now.saturating_add(ms(SESSION_IDLE)).min(ends_at);
    let label: String = format!(
        "embed {}/{}/{}",
        row.application, row.object_type, row.object_id
    )
    .chars()
    .take(128)
    .collect();
    let session = SessionRow {
        id: id.clone(),
        user_id: row.user_id.clone(),
        token_hash: token_hash(&session_token),
        device_id: EMBED_DEVICE.to_owned(),
        device_name: label.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at,
        kind: "embed".into(),
    };
    let scope = EmbedScopeRow {
        session_id: id.clone(),
        application: row.application.clone(),
        object_type: row.object_type.clone(),
        object_id: row.object_id.clone(),
        discussion_id: row.discussion_id.clone(),
        ends_at,
    };
    let audit = AuditRecord {
        at: now,
        actor: format!("app:{}", row.application),
        action: "session.create",
        target: row.user_id.clone(),
        detail: format!("session {id} {label}"),
    };
    if !store
        .embed()
        .insert_embed_session(&session, &scope, &audit)
        .await?
    {
        return Err(EmbedError::NotAllowed(row.application));
    }
    Ok(EmbedSession {
        token: session_token,
        user: row.user_id,
        discussion: row.discussion_id,
        origins: store.embed().embed_origins(&object.application).await?,
        expires_at,
    })
}

/// Authenticates a request of an embed session: the session is live, its user unlocked and
/// still allowed to read its discussion. A user who lost access ends the session here.
pub(crate) async fn resume(services: &Services, token: &str) -> Result<EmbedScope, EmbedError> {
    let ended = || EmbedError::SessionEnded("unknown, expired or ended session".into());
    if !token.starts_with(SESSION_PREFIX) {
        return Err(ended());
    }
    let store = &services.store;
    let now = services.clock.now_ms();
    let (session, scope) = store
        .embed()
        .embed_session_by_token_hash(&token_hash(token))
        .await?
        .filter(|(s, e)| s.expires_at > now && e.ends_at > now)
        .ok_or_else(ended)?;
    unlocked_user(services, &session.user_id).await?;
    match check_access(services, &session.user_id, &scope.discussion_id).await {
        Ok(()) => {}
        Err(EmbedError::NotFound(_)) => {
            end(services, &session.user_id, &session.id, ACCESS_LOST).await?;
            return Err(EmbedError::SessionEnded(ACCESS_LOST.into()));
        }
        Err(e) => return Err(e),
    }
    let expires = now.saturating_add(ms(SESSION_IDLE)).min(scope.ends_at);
    store
        .sessions()
        .touch_session(&session.id, now, expires)
        .await?;
    Ok(EmbedScope {
        caller: embed_caller(&session.user_id),
        session: session.id,
        discussion: scope.discussion_id,
    })
}

/// Carries out a request of an embed session (with `caller`, the session's caller on its
/// connection): only within its discussion; a refusal because the user lost access ends
/// the session.
pub(crate) async fn request(
    services: &Services,
    scope: &EmbedScope,
    caller: &Caller,
    request: Request,
) -> Result<veche_protocol::Reply, EmbedError> {
    if !in_scope(&request, &scope.discussion) {
        return Err(EmbedError::OutOfScope);
    }
    match super::user_request(services, caller, request).await {
        Ok(reply) => Ok(reply),
        Err(DiscussionError::NotFound(what)) => {
            match check_access(services, &caller.user, &scope.discussion).await {
                Err(EmbedError::NotFound(_)) => {
                    end(services, &caller.user, &scope.session, ACCESS_LOST).await?;
                    Err(EmbedError::SessionEnded(ACCESS_LOST.into()))
                }
                Err(e) => Err(e),
                Ok(()) => Err(EmbedError::Discussion(DiscussionError::NotFound(what))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Why an embed session ends when its user can no longer see the object.
pub(crate) const ACCESS_LOST: &str = "access to the object was withdrawn";

/// Ends an embed session: deleted in storage, then its live socket is told and closed.
pub(crate) async fn end(
    services: &Services,
    user: &str,
    session: &str,
    reason: &str,
) -> Result<(), EmbedError> {
    let ended = services
        .accounts
        .end_sessions(user, Some(session), "node", "embed.end")
        .await?;
    services.registry.end_sessions(&ended, reason);
    Ok(())
}

/// Ends every embed session of an application (it was revoked).
pub(crate) async fn end_app(services: &Services, app: &str) -> Result<(), EmbedError> {
    let ended = services.store.embed().end_app_embed_sessions(app).await?;
    services
        .registry
        .end_sessions(&ended, "the application was revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use veche_protocol::discussions::{Cursor, SendMessage};

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_origin("https://ERP.corp.example/").ok().as_deref(),
            Some("https://erp.corp.example")
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            parse_origin("https://erp.corp.example:443").ok().as_deref(),
            Some("https://erp.corp.example")
        );
        for bad in [
            "erp.corp.example",
            "https://*.corp.example",
            "*",
            "https://erp.corp.example/forms",
            "https://erp.corp.example?x=1",
            "https://user:pw@erp.corp.example",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://erp.corp.example; script-src *",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn an_embed_session_reaches_its_discussion_only() {
        let here = "d-1";
        let send = |discussion: &str, files: Vec<String>| {
            Request::Send(SendMessage {
                discussion: discussion.into(),
                client_msg_id: "c1".into(),
                text: "hi".into(),
                reply_to: None,
                data: None,
                actions: Vec::new(),
                files,
            })
        };
        assert!(in_scope(&send(here, Vec::new()), here));
        assert!(!in_scope(&send("d-2", Vec::new()), here));
        assert!(in_scope(&send(here, vec!["f_1".into()]), here));
        assert!(!in_scope(&send("d-2", vec!["f_1".into()]), here));
        assert!(in_scope(&Request::FilePolicy, here));
        let history = |d: &str| Request::History {
            discussion: d.into(),
            before: None,
            limit: 50,
        };
        assert!(in_scope(&history(here), here));
        assert!(!in_scope(&history("d-2"), here));
        let sync = |ds: &[&str]| Request::Sync {
            cursors: ds
                .iter()
                .map(|d| Cursor {
                    discussion: (*d).into(),
                    seq: 0,
                })
                .collect(),
        };
        assert!(in_scope(&sync(&[here]), here));
        assert!(!in_scope(&sync(&[here, "d-2"]), here));
        for other in [
            Request::ListDiscussions,
            Request::Whoami,
            Request::ListSessions,
            Request::GetPreferences,
            Request::OpenDialog {
                with: "anna".into(),
            },
        ] {
            assert!(!in_scope(&other, here), "{other:?}");
        }
    }

    #[test]
    fn an_embed_socket_passes_its_discussions_events_only() {
        let here = "d-1";
        assert!(event_in_scope(
            &Event::DiscussionRemoved {
                discussion: here.into()
            },
            here
        ));
        assert!(!event_in_scope(
            &Event::DiscussionRemoved {
                discussion: "d-2".into()
            },
            here
        ));
        assert!(!event_in_scope(
            &Event::Presence { users: Vec::new() },
            here
        ));
        assert!(event_in_scope(
            &Event::Typing {
                discussion: here.into(),
                user: "anna@n".into(),
                typing: true,
                expires_in_ms: 5000
            },
            here
        ));
    }
}
