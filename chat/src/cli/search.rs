//! `veche search`: full-text search over the messages the user may read.

use std::io::Write;

use anyhow::bail;
use veche_client::protocol::Reply;
use veche_client::protocol::Request;
use veche_client::protocol::discussions::SearchQuery;

use super::args::{DiscussionArg, ObjectArg, TimeArg, UserArg};
use super::{ClientDir, Session, kind, list, name};
use crate::untrusted::{one_line, snippet};

/// What narrows a search, from the command line.
#[derive(Debug)]
pub(super) struct Filters {
    pub(super) discussion: Option<DiscussionArg>,
    pub(super) author: Option<UserArg>,
    pub(super) object: Option<ObjectArg>,
    pub(super) since: Option<TimeArg>,
    pub(super) until: Option<TimeArg>,
    pub(super) has_file: bool,
    pub(super) limit: u32,
    pub(super) offset: u32,
}

/// Prints the hits, best first: `time \t discussion \t #seq \t author: snippet` (matches
/// between `*`), or one JSON object per hit. Standard error says when the query was retried
/// on the other keyboard layout, and how to get the next page.
pub(super) async fn run(
    dir: &ClientDir,
    query: &str,
    f: Filters,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let discussion = match &f.discussion {
        Some(d) => Some(session.discussion(d, false).await?),
        None => None,
    };
    // A login alone is a user of this node, as everywhere else.
    let home = session.me.split_once('@').map_or("", |(_, node)| node);
    let author = f.author.map(|a| {
        if a.as_str().contains('@') || home.is_empty() {
            a.as_str().to_owned()
        } else {
            format!("{}@{home}", a.as_str())
        }
    });
    let request = Request::Search(SearchQuery {
        query: query.to_owned(),
        discussion,
        author,
        object: f.object.map(|o| o.0),
        from: f.since.map(|t| t.0),
        to: f.until.map(|t| t.0),
        has_file: f.has_file,
        offset: f.offset,
        limit: f.limit,
    });
    let reply = session.ask(request).await?;
    let Reply::SearchResults {
        hits,
        corrected_query,
        more,
    } = reply
    else {
        bail!("unexpected reply {}", kind(&reply));
    };
    let discussions = if json {
        Vec::new()
    } else {
        list(&session.conn).await?
    };
    let me = session.me.clone();
    session.end().await;
    if let Some(corrected) = &corrected_query {
        eprintln!(
            "nothing matched as typed; these are hits for {}",
            one_line(corrected)
        );
    }
    for hit in &hits {
        if json {
            writeln!(out, "{}", serde_json::to_string(hit)?)?;
            continue;
        }
        let shown = discussions
            .iter()
            .find(|d| d.id == hit.discussion)
            .map_or_else(|| hit.discussion.clone(), |d| name(d, &me));
        let author = hit.author.split('@').next().unwrap_or(&hit.author);
        writeln!(
            out,
            "{}\t{}\t#{}\t{}: {}",
            hit.created_at,
            one_line(&shown),
            hit.seq,
            one_line(author),
            snippet(&hit.snippet)
        )?;
    }
    out.flush()?;
    if more {
        let next = f
            .offset
            .saturating_add(u32::try_from(hits.len()).unwrap_or(u32::MAX));
        eprintln!("more hits: add --offset {next}");
    }
    Ok(())
}
