//! Groups (`veche group create|add|remove|rename|leave`) and business objects' discussions
//! (`veche open-object`).

use std::io::Write;

use anyhow::{Context, bail};
use veche_client::protocol::discussions::DiscussionKind;
use veche_client::protocol::{Reply, Request};

use super::args::{DiscussionArg, ObjectArg};
use super::{ClientDir, GroupCommand, Session, kind};
use crate::untrusted::one_line;

/// Runs a `veche group` command.
pub(super) async fn run(command: GroupCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create {
            title,
            members,
            dir,
        } => {
            let session = Session::start(&dir).await?;
            let reply = session
                .ask(Request::CreateGroup {
                    title: title.clone(),
                    members: members.iter().map(|m| m.as_str().to_owned()).collect(),
                })
                .await
                .context("cannot create the group")?;
            let Reply::Discussion { discussion } = reply else {
                bail!("unexpected reply {}", kind(&reply));
            };
            session.end().await;
            writeln!(
                out,
                "created {}\t{}",
                one_line(&discussion.id),
                one_line(&discussion.title)
            )?;
        }
        GroupCommand::Add { group, users, dir } => {
            let session = Session::start(&dir).await?;
            let id = group_id(&session, &group).await?;
            session
                .done(Request::AddMembers {
                    discussion: id,
                    users: users.iter().map(|u| u.as_str().to_owned()).collect(),
                })
                .await
                .with_context(|| {
                    format!("cannot add members to {}", one_line(&group.to_string()))
                })?;
            session.end().await;
            let names: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
            writeln!(out, "added {}", names.join(", "))?;
        }
        GroupCommand::Remove { group, user, dir } => {
            let session = Session::start(&dir).await?;
            let id = group_id(&session, &group).await?;
            session
                .done(Request::RemoveMember {
                    discussion: id,
                    user: user.as_str().to_owned(),
                })
                .await
                .with_context(|| {
                    format!("cannot remove {user} from {}", one_line(&group.to_string()))
                })?;
            session.end().await;
            writeln!(out, "removed {user}")?;
        }
        GroupCommand::Rename { group, title, dir } => {
            let session = Session::start(&dir).await?;
            let id = session.discussion(&group, false).await?;
            session
                .done(Request::SetTitle {
                    discussion: id,
                    title: title.clone(),
                })
                .await
                .with_context(|| format!("cannot rename {}", one_line(&group.to_string())))?;
            session.end().await;
            writeln!(out, "renamed to {}", one_line(&title))?;
        }
        GroupCommand::Leave { group, dir } => {
            let session = Session::start(&dir).await?;
            let id = group_id(&session, &group).await?;
            session
                .done(Request::RemoveMember {
                    discussion: id,
                    user: session.me.clone(),
                })
                .await
                .with_context(|| format!("cannot leave {}", one_line(&group.to_string())))?;
            session.end().await;
            writeln!(out, "left {}", one_line(&group.to_string()))?;
        }
    }
    Ok(())
}

/// The group the user named; a dialog or an object discussion is refused here, with why.
async fn group_id(session: &Session, group: &DiscussionArg) -> anyhow::Result<String> {
    let id = session.discussion(group, false).await?;
    let reply = session
        .ask(Request::GetDiscussion {
            discussion: id.clone(),
        })
        .await?;
    let Reply::Discussion { discussion } = reply else {
        bail!("unexpected reply {}", kind(&reply));
    };
    if discussion.kind != DiscussionKind::Group {
        bail!(
            "{} is a {}, not a group",
            one_line(&group.to_string()),
            discussion.kind.as_str()
        );
    }
    Ok(id)
}

/// `veche open-object`: opens (creating on first use) an object's discussion, optionally
/// following it; prints `id \t title`.
pub(super) async fn open_object(
    dir: &ClientDir,
    object: ObjectArg,
    title: Option<String>,
    follow: Option<bool>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let reply = session
        .ask(Request::OpenObject {
            object: object.0.clone(),
            title: title.unwrap_or_default(),
        })
        .await
        .with_context(|| format!("cannot open {}", one_line(&object.to_string())))?;
    let Reply::Discussion { mut discussion } = reply else {
        bail!("unexpected reply {}", kind(&reply));
    };
    if let Some(follow) = follow {
        session
            .done(Request::Follow {
                discussion: discussion.id.clone(),
                follow,
            })
            .await
            .context("cannot follow it")?;
        discussion.following = follow;
    }
    session.end().await;
    if json {
        writeln!(out, "{}", serde_json::to_string(&discussion)?)?;
    } else {
        writeln!(
            out,
            "{}\t{}{}",
            one_line(&discussion.id),
            one_line(&discussion.title),
            if discussion.following {
                "\tfollowing"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}
