//! Requests of authenticated users.

use veche_protocol::{Reply, Request};

use super::Services;
use crate::push::PushError;
use veche_core::discussions::{Caller, DiscussionError, Discussions};

/// Carries out a request of an authenticated user (QUIC or the HTTP gateway), counted and
/// timed in the metrics by method and outcome.
pub(crate) async fn user_request(
    services: &Services,
    caller: &Caller,
    request: Request,
) -> Result<Reply, DiscussionError> {
    if !services.metrics.is_enabled() {
        return carry_out(services, caller, request).await;
    }
    let method = request.method();
    let started = std::time::Instant::now();
    let result = carry_out(services, caller, request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => crate::errors::outcome(e),
    };
    services.metrics.request(method, outcome, started.elapsed());
    result
}

async fn carry_out(
    services: &Services,
    caller: &Caller,
    request: Request,
) -> Result<Reply, DiscussionError> {
    let d = &services.discussions;
    let push_error = |e: PushError| match e {
        PushError::BadRequest(m) => DiscussionError::BadRequest(m),
        PushError::NotFound => DiscussionError::NotFound("push endpoint"),
        PushError::Store(e) => DiscussionError::Store(e),
    };
    match request {
        Request::SetPresence {
            choice,
            status_text,
        } => {
            services
                .presence
                .set_choice(&caller.user, choice, &status_text)
                .map_err(|e| DiscussionError::BadRequest(e.to_string()))?;
            Ok(Reply::Done)
        }
        Request::Activity { idle_ms } => {
            services
                .presence
                .activity(&caller.user, caller.connection, idle_ms);
            Ok(Reply::Done)
        }
        Request::GetPresence { users, subscribe } => {
            let users = d.existing_users(&users).await?;
            Ok(Reply::Presence {
                users: services
                    .presence
                    .query(&caller.user, caller.connection, &users, subscribe)
                    .await?,
            })
        }
        Request::Typing { discussion, typing } => {
            // An invisible user's typing would show them online; a renewal within half the
            // indicator's life only extends it.
            if typing
                && (services.presence.invisible(&caller.user)
                    || services.presence.typing_renewed(&caller.user, &discussion))
            {
                return Ok(Reply::Done);
            }
            let audience = d.typing_audience(caller, &discussion).await?;
            services
                .presence
                .typing(&caller.user, &discussion, typing, audience);
            Ok(Reply::Done)
        }
        Request::SetNotifications {
            discussion,
            level,
            muted_until,
        } => {
            d.get(caller, &discussion).await?;
            services
                .push
                .set_level(&caller.user, &discussion, level, muted_until)
                .await
                .map_err(push_error)
        }
        Request::Notifications => services.push.levels(&caller.user).await.map_err(push_error),
        Request::PushConfig => Ok(services.push.config_reply()),
        Request::RegisterPush { target } => services
            .push
            .register(&caller.user, &caller.device, target)
            .await
            .map_err(push_error),
        Request::UnregisterPush { id } => services
            .push
            .unregister(&caller.user, &id)
            .await
            .map_err(push_error),
        Request::ListPush => services.push.list(&caller.user).await.map_err(push_error),
        Request::CreateUpload(new) => Ok(Reply::Upload {
            upload: services.files.create_upload(caller, new).await?,
        }),
        Request::UploadStatus { upload } => Ok(Reply::Upload {
            upload: services.files.upload_status(caller, &upload).await?,
        }),
        Request::CancelUpload { upload } => {
            services.files.cancel_upload(caller, &upload).await?;
            Ok(Reply::Done)
        }
        Request::GetFile { file } => Ok(Reply::File {
            file: services.files.get(caller, &file).await?,
        }),
        Request::FilePolicy => Ok(Reply::FilePolicy {
            policy: services.files.policy(caller).await?,
        }),
        Request::GetPreferences => {
            let stored = services.accounts.preferences(&caller.user).await?;
            let preferences = stored
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_else(|| serde_json::json!({}));
            Ok(Reply::Preferences { preferences })
        }
        Request::SetPreferences { preferences } => {
            if !preferences.is_object() {
                return Err(DiscussionError::BadRequest(
                    "preferences are a JSON object".into(),
                ));
            }
            let text = preferences.to_string();
            if text.len() > veche_protocol::MAX_PREFERENCES_BYTES {
                return Err(DiscussionError::BadRequest(format!(
                    "preferences are {} bytes of JSON; the limit is {}",
                    text.len(),
                    veche_protocol::MAX_PREFERENCES_BYTES
                )));
            }
            services
                .accounts
                .set_preferences(&caller.user, &text)
                .await?;
            Ok(Reply::Done)
        }
        Request::Search(query) => services.search.messages(d, caller, query).await,
        other => discussion_request(d, caller, other).await,
    }
}

async fn discussion_request(
    d: &Discussions,
    caller: &Caller,
    request: Request,
) -> Result<Reply, DiscussionError> {
    match request {
        Request::OpenDialog { with } => d.open_dialog(caller, &with).await,
        Request::CreateGroup { title, members } => d.create_group(caller, &title, &members).await,
        Request::OpenObject { object, title } => d.open_object(caller, object, &title).await,
        Request::DescribeObject { object } => d.describe_object(caller, &object).await,
        Request::Directory { query, limit, node } => {
            d.directory(&query, limit, node.as_deref()).await
        }
        Request::SetObjectAccess {
            object,
            users,
            groups,
        } => d.set_object_access(caller, object, &users, &groups).await,
        Request::ListDiscussions => d.list(caller).await,
        Request::GetDiscussion { discussion } => Ok(Reply::Discussion {
            discussion: d.get(caller, &discussion).await?,
        }),
        Request::AddMembers { discussion, users } => {
            d.add_members(caller, &discussion, &users).await
        }
        Request::RemoveMember { discussion, user } => {
            d.remove_member(caller, &discussion, &user).await
        }
        Request::SetTitle { discussion, title } => d.set_title(caller, &discussion, &title).await,
        Request::Follow { discussion, follow } => d.follow(caller, &discussion, follow).await,
        Request::Watch { discussion, watch } => d.watch(caller, &discussion, watch).await,
        Request::Send(message) => d.send(caller, message).await,
        Request::Edit {
            discussion,
            message_id,
            text,
        } => d.edit(caller, &discussion, &message_id, &text).await,
        Request::Delete {
            discussion,
            message_id,
        } => d.delete(caller, &discussion, &message_id).await,
        Request::React {
            discussion,
            message_id,
            emoji,
            add,
        } => d.react(caller, &discussion, &message_id, &emoji, add).await,
        Request::Click {
            discussion,
            message_id,
            action_id,
        } => d.click(caller, &discussion, &message_id, &action_id).await,
        Request::History {
            discussion,
            before,
            limit,
        } => d.history(caller, &discussion, before, limit).await,
        Request::Sync { cursors } => d.sync(caller, &cursors).await,
        Request::EditHistory {
            discussion,
            message_id,
        } => d.edit_history(caller, &discussion, &message_id).await,
        Request::MarkRead { discussion, seq } => d.mark_read(caller, &discussion, seq).await,
        Request::Ping
        | Request::Setup { .. }
        | Request::Login { .. }
        | Request::Resume { .. }
        | Request::Logout
        | Request::Whoami
        | Request::ListSessions
        | Request::RevokeSession { .. }
        | Request::ChangePassword { .. }
        | Request::Admin { .. }
        | Request::SetPresence { .. }
        | Request::Activity { .. }
        | Request::GetPresence { .. }
        | Request::Typing { .. }
        | Request::SetNotifications { .. }
        | Request::Notifications
        | Request::PushConfig
        | Request::RegisterPush { .. }
        | Request::UnregisterPush { .. }
        | Request::ListPush
        | Request::CreateUpload(_)
        | Request::UploadStatus { .. }
        | Request::CancelUpload { .. }
        | Request::GetFile { .. }
        | Request::FilePolicy
        | Request::GetPreferences
        | Request::SetPreferences { .. }
        | Request::Search(_) => Err(DiscussionError::BadRequest(
            "not a discussion request".into(),
        )),
    }
}
