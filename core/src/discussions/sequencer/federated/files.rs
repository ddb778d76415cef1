//! Files attached to federated posts: what a replica tells the home of its users' files,
//! and how a node records files it fetches from another.

use super::*;

impl Sequencer {
    /// On a replica: what a local user's files attached to a post for `d`'s home say of
    /// themselves, once they pass the scope of the link to the home (the home fetches their
    /// contents from here).
    pub(in crate::discussions::sequencer) async fn files_for_home(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        files: &[String],
    ) -> Result<Vec<FileRef>, DiscussionError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let home = node_of(&d.id).unwrap_or_default();
        let scope = match b.fed_link_to(home).await? {
            Some(link) => b.fed_link_scope(&link).await?,
            None => None,
        };
        let Some(scope) = scope else {
            return Err(DiscussionError::Forbidden(format!(
                "this discussion lives on {home}, and there is no active link with it"
            )));
        };
        let max_mb = serde_json::from_str::<veche_federation::grant::Scope>(&scope)
            .map_err(|e| DiscussionError::Store(StoreError::Aborted(e.to_string())))?
            .max_file_mb;
        let rows = b.files_by_id(files).await?;
        for f in &rows {
            let size = u64::try_from(f.size).unwrap_or(u64::MAX);
            if max_mb == 0 || size > max_mb.saturating_mul(1024 * 1024) {
                let why = if max_mb == 0 {
                    format!("the link with {home} carries no files")
                } else {
                    format!(
                        "the link with {home} carries files of at most {max_mb} MiB; {} is {} bytes",
                        f.name, f.size
                    )
                };
                return Err(DiscussionError::Refused(Box::new(
                    veche_protocol::ErrorBody::refused_by("link.max_file_mb", why),
                )));
            }
        }
        Ok(rows.iter().map(FileRef::of).collect())
    }

    /// Records the files a federated post carries, as files of `discussion` uploaded by
    /// `uploader`, and gives their ids here (derived from the event, so the same on a retry).
    /// A content not held here is recorded as waiting at a linked node. Each file names the
    /// node it is fetched from until that node has sent its content (a hash names a content
    /// but proves nothing). At the home the files must fit the link they came over and this
    /// node's policy (a refusal refuses the post); a replica takes what the home accepted.
    pub(in crate::discussions::sequencer) async fn record_files(
        &self,
        b: &mut Batch,
        discussion: &str,
        uploader: &str,
        event: &Event,
        refs: &[FileRef],
    ) -> Result<Vec<String>, DiscussionError> {
        if refs.len() > crate::discussions::attachments::MAX_FILES_PER_MESSAGE {
            return Err(fed_error("too many files"));
        }
        let home = self.is_home(discussion);
        let kind = match b.discussion(discussion).await? {
            Some(d) => d.kind,
            None => return Err(DiscussionError::NotFound("discussion")),
        };
        // The node a content is fetched from, which must show it holds it (at the home, the
        // uploader's node: the event's origin).
        let source =
            crate::discussions::attachments::source_node(self.node.as_str(), discussion, uploader)
                .unwrap_or_default()
                .to_owned();
        // At the home, files must fit the link they come over.
        let max_bytes = if home {
            let scope = match b.fed_link_to(&source).await? {
                Some(link) => b.fed_link_scope(&link).await?,
                None => None,
            };
            let scope = scope.ok_or_else(|| fed_error("the link has ended"))?;
            let scope: veche_federation::grant::Scope =
                serde_json::from_str(&scope).map_err(fed_error)?;
            Some(scope.max_file_mb.saturating_mul(1024 * 1024))
        } else {
            None
        };
        let own = event.header().origin == self.node.as_str();
        let at = self.now();
        let mut ids = Vec::with_capacity(refs.len());
        for (position, r) in refs.iter().enumerate() {
            let size = i64::try_from(r.size).map_err(|_| fed_error("a file is too large"))?;
            if !veche_protocol::files::is_sha256_hex(&r.sha256) || r.name.is_empty() {
                return Err(fed_error("a file is named without a name or a SHA-256"));
            }
            let name = crate::file_policy::sanitize_name(&r.name);
            if let Some(max) = max_bytes {
                if max == 0 || r.size > max {
                    return Err(DiscussionError::Refused(Box::new(
                        veche_protocol::ErrorBody::refused_by(
                            "link.max_file_mb",
                            format!("the link with {source} carries no file of {} bytes", r.size),
                        ),
                    )));
                }
                crate::file_policy::check_declared(
                    &self.config.files,
                    kind.as_str(),
                    &name,
                    r.size,
                )
                .map_err(|e| DiscussionError::Refused(Box::new(e)))?;
            }
            // This node's own user's upload, coming back stamped, needs no proof.
            let proven = own
                && b.fed_submitted_content(&event.id().to_hex(), &r.sha256)
                    .await?;
            let id = Hash::of(
                format!("veche-fed/v1/file\0{}\0{position}", event.id().to_hex()).as_bytes(),
            )
            .to_hex();
            let file = FileRow {
                id: format!("f_{}", &id[..32]),
                name,
                size,
                discussion_id: discussion.to_owned(),
                uploader: uploader.to_owned(),
                created_at: at,
                attached: false,
                sha256: r.sha256.clone(),
                backend: REMOTE_BACKEND.to_owned(),
                mime: r.mime.chars().take(255).collect(),
                thumbnail: false,
                width: None,
                height: None,
                linked_from: (!proven).then(|| source.clone()),
            };
            let blob = BlobRow {
                sha256: file.sha256.clone(),
                size,
                backend: REMOTE_BACKEND.to_owned(),
                mime: file.mime.clone(),
                thumbnail: false,
                width: None,
                height: None,
                created_at: at,
            };
            b.record_linked_file(&file, &blob).await?;
            ids.push(file.id);
        }
        Ok(ids)
    }
}
