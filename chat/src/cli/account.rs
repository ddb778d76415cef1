//! The account from the command line: `whoami`, `logout`, `sessions`, `passwd`, `people`,
//! `status` (presence) and `notify` (notification levels).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use veche_client::protocol::presence::PresenceChoice;
use veche_client::protocol::{ErrorCode, Reply, Request};
use veche_client::{ClientError, RequestError};

use super::args::{DiscussionArg, LevelArg, SessionArg, StatusArg, TimeArg};
use super::{ClientDir, Session, connect, kind, list, name, open, refusal};
use crate::untrusted::one_line;

/// `veche whoami`: the account, as the node knows it.
pub(super) async fn whoami(dir: &ClientDir, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let reply = session.ask(Request::Whoami).await?;
    session.end().await;
    let Reply::Me { user } = reply else {
        bail!("unexpected reply {}", kind(&reply));
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&user)?)?;
        return Ok(());
    }
    write!(out, "{}", one_line(&user.id))?;
    if !user.display_name.is_empty() {
        write!(out, " ({})", one_line(&user.display_name))?;
    }
    if !user.email.is_empty() {
        write!(out, "\t{}", one_line(&user.email))?;
    }
    if user.admin {
        write!(out, "\tadministrator")?;
    }
    writeln!(out)?;
    Ok(())
}

/// Whether `e` says the stored session is no longer valid.
fn session_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let code = cause
            .downcast_ref::<ClientError>()
            .and_then(|e| match e {
                ClientError::Request(r) => r.code(),
                _ => None,
            })
            .or_else(|| {
                cause
                    .downcast_ref::<RequestError>()
                    .and_then(RequestError::code)
            });
        matches!(
            code,
            Some(ErrorCode::InvalidCredentials | ErrorCode::Unauthenticated)
        ) || matches!(
            cause.downcast_ref::<ClientError>(),
            Some(ClientError::NotLoggedIn)
        )
    })
}

/// `veche logout`: ends the session on the node (the outbox goes out first), and forgets its
/// token here whatever the node says: a profile told to log out never keeps a working token.
pub(super) async fn logout(dir: &ClientDir, out: &mut dyn Write) -> anyhow::Result<()> {
    let (client, _) = open(dir).await?;
    let told: anyhow::Result<()> = async {
        let conn = connect(&client).await?;
        match conn.request(Request::Logout).await {
            Ok(Reply::Done) => Ok(()),
            Ok(other) => bail!("unexpected reply {}", kind(&other)),
            Err(e) => Err(refusal(e)),
        }
    }
    .await;
    client.forget_session().await?;
    client.shutdown().await;
    match told {
        Ok(()) => writeln!(out, "logged out")?,
        Err(e) if session_gone(&e) => writeln!(out, "logged out (the session had already ended)")?,
        Err(e) => {
            return Err(e.context(
                "the session token is forgotten here, but the node could not be told: the \
                 session stays valid there until it expires; end it from another device with \
                 `veche sessions --end ID`",
            ));
        }
    }
    Ok(())
}

/// `veche sessions`: lists the user's sessions, or ends one (`--end`); ending this profile's
/// own is a logout.
pub(super) async fn sessions(
    dir: &ClientDir,
    end: Option<SessionArg>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let reply = session.ask(Request::ListSessions).await?;
    let Reply::Sessions { sessions, current } = reply else {
        bail!("unexpected reply {}", kind(&reply));
    };
    if let Some(end) = end {
        session
            .done(Request::RevokeSession {
                session: end.as_str().to_owned(),
            })
            .await
            .with_context(|| format!("cannot end session {}", end.as_str()))?;
        if end.as_str() == current {
            session.client.forget_session().await?;
            session.end().await;
            writeln!(
                out,
                "ended session {} (this profile's own: logged out)",
                end.as_str()
            )?;
        } else {
            session.end().await;
            writeln!(out, "ended session {}", end.as_str())?;
        }
        return Ok(());
    }
    session.end().await;
    for s in &sessions {
        let this = s.id == current;
        if json {
            let mut value = serde_json::to_value(s)?;
            value["current"] = this.into();
            writeln!(out, "{value}")?;
        } else {
            writeln!(
                out,
                "{}\t{}\tsince {}\tlast seen {}{}",
                one_line(&s.id),
                one_line(&s.device_name),
                s.created_at,
                s.last_seen_at,
                if this { "\tthis profile" } else { "" }
            )?;
        }
    }
    Ok(())
}

/// `veche status`: shows the user's presence, or sets the choice and status text.
pub(super) async fn status(
    dir: &ClientDir,
    status: Option<StatusArg>,
    text: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    if let Some(StatusArg(choice)) = status {
        let text = text.unwrap_or_default();
        session
            .done(Request::SetPresence {
                choice,
                status_text: text.clone(),
            })
            .await
            .context("cannot set the status")?;
        session.end().await;
        let shown = match choice {
            PresenceChoice::Auto => "available",
            other => other.as_str(),
        };
        if text.is_empty() {
            writeln!(out, "status: {shown}")?;
        } else {
            writeln!(out, "status: {shown} ({})", one_line(&text))?;
        }
        return Ok(());
    }
    let reply = session
        .ask(Request::GetPresence {
            users: vec![session.me.clone()],
            subscribe: false,
        })
        .await?;
    session.end().await;
    let Reply::Presence { users } = reply else {
        bail!("unexpected reply {}", kind(&reply));
    };
    let me = users.first().context("the node did not say")?;
    let state = serde_json::to_value(me.state)?
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    if me.status_text.is_empty() {
        writeln!(out, "{state}")?;
    } else {
        writeln!(out, "{state}\t{}", one_line(&me.status_text))?;
    }
    Ok(())
}

/// `veche notify`: lists the settings that differ from the default, or sets one
/// discussion's level (and mute).
pub(super) async fn notify(
    dir: &ClientDir,
    set: Option<(DiscussionArg, LevelArg)>,
    mute_until: Option<TimeArg>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    if let Some((discussion, LevelArg(level))) = set {
        let id = session.discussion(&discussion, true).await?;
        session
            .done(Request::SetNotifications {
                discussion: id,
                level,
                muted_until: mute_until.map(|t| t.0),
            })
            .await
            .with_context(|| {
                format!(
                    "cannot set notifications of {}",
                    one_line(&discussion.to_string())
                )
            })?;
        session.end().await;
        write!(
            out,
            "{}: {}",
            one_line(&discussion.to_string()),
            level.as_str()
        )?;
        if let Some(until) = mute_until {
            write!(out, ", muted until {}", until.0)?;
        }
        writeln!(out)?;
        return Ok(());
    }
    let reply = session.ask(Request::Notifications).await?;
    let Reply::NotificationSettings { settings } = reply else {
        bail!("unexpected reply {}", kind(&reply));
    };
    let discussions = list(&session.conn).await?;
    let me = session.me.clone();
    session.end().await;
    for s in &settings {
        let shown = discussions
            .iter()
            .find(|d| d.id == s.discussion)
            .map_or_else(|| s.discussion.clone(), |d| name(d, &me));
        write!(
            out,
            "{}\t{}\t{}",
            one_line(&s.discussion),
            one_line(&shown),
            s.level.as_str()
        )?;
        if let Some(until) = s.muted_until {
            write!(out, "\tmuted until {until}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// `veche passwd`: changes the password; this profile's session stays, the others end.
pub(super) async fn passwd(dir: &ClientDir, out: &mut dyn Write) -> anyhow::Result<()> {
    let (old_password, new_password) = if std::io::stdin().is_terminal() {
        let old =
            rpassword::prompt_password("Current password: ").context("cannot read the password")?;
        let new =
            rpassword::prompt_password("New password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("New password again: ")
            .context("cannot read the password")?;
        if new != again {
            bail!("the new passwords differ");
        }
        (old, new)
    } else {
        let mut lines = std::io::stdin().lock().lines();
        let mut next = || -> anyhow::Result<String> {
            Ok(lines
                .next()
                .context("give the current password and the new one on two lines")?
                .context("cannot read the password")?
                .trim_end_matches('\r')
                .to_owned())
        };
        (next()?, next()?)
    };
    if old_password.is_empty() || new_password.is_empty() {
        bail!("the password is empty");
    }
    let session = Session::start(dir).await?;
    session
        .done(Request::ChangePassword {
            old_password,
            new_password,
        })
        .await
        .context("cannot change the password")?;
    session.end().await;
    writeln!(out, "password changed; your other devices are signed out")?;
    Ok(())
}

/// `veche people`: the directory, best match first: `id \t name \t department`.
pub(super) async fn people(
    dir: &ClientDir,
    query: &str,
    node: Option<String>,
    limit: u32,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let reply = session
        .ask(Request::Directory {
            query: query.to_owned(),
            limit,
            node,
        })
        .await?;
    session.end().await;
    let Reply::Directory { users } = reply else {
        bail!("unexpected reply {}", kind(&reply));
    };
    for u in &users {
        if json {
            writeln!(out, "{}", serde_json::to_string(u)?)?;
        } else {
            writeln!(
                out,
                "{}\t{}\t{}",
                one_line(&u.id),
                one_line(&u.display_name),
                one_line(&u.department)
            )?;
        }
    }
    Ok(())
}
