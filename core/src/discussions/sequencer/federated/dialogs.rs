//! Dialogs between users of two linked nodes: the home is the node whose name sorts first,
//! and the dialog's id derives from the pair, so that either side may open it first.

use super::*;

impl Sequencer {
    /// The dialog of `caller` with `with`, one of them a user of a linked node (`key` is the
    /// pair). Its home is the node whose name sorts first, and its id derives from the pair.
    /// The home shares it over the link at once; the other node creates it here and asks the
    /// home to open it, ahead of the messages its user writes there meanwhile (pending until
    /// the home has sequenced them, like any submission).
    pub(in crate::discussions::sequencer) async fn open_linked_dialog(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        with: &str,
        key: String,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(node_key) = &self.fed.key else {
            return Err(DiscussionError::NotFound("user"));
        };
        let theirs = [caller.user.as_str(), with]
            .into_iter()
            .find_map(|u| node_of(u).filter(|n| *n != self.node.as_str()))
            .ok_or_else(|| fed_error("neither user is of another node"))?;
        self.existing_or_linked_users(b, origin, &[with.to_owned()])
            .await?;
        let link = b
            .fed_link_to(theirs)
            .await?
            .ok_or(DiscussionError::NotFound("user"))?;
        let home = theirs.min(self.node.as_str());
        let existing = b.dialog_by_key(&key).await?;
        let d = match existing.clone() {
            Some(d) => d,
            None => {
                let mut pair: Vec<&str> = key.split('\n').collect();
                pair.sort_unstable();
                let d = DiscussionRow {
                    id: dialog_id(&key, home),
                    dialog_key: Some(key.clone()),
                    ..self.new_discussion(
                        veche_protocol::discussions::DiscussionKind::Dialog,
                        String::new(),
                        caller,
                    )
                };
                b.insert_discussion(&d).await?;
                for user in pair {
                    b.add_member(&d.id, user, "member", d.created_at).await?;
                }
                self.forget_cache();
                self.announce_created(b, origin, &d, out).await?;
                d
            }
        };
        if self.is_home(&d.id) {
            if !b.fed_shares(&d.id).await?.contains(&link) {
                self.share_state(b, node_key, &d, &link, out).await?;
            }
        } else if origin.applying().is_none()
            && (existing.is_none() || b.fed_head(&d.id).await?.is_none())
        {
            // Asked again while the home has not shared it: the first request may have been
            // refused (the user did not exist there yet); a repeat is harmless.
            let body = Body {
                users: vec![with.to_owned()],
                ..Body::default()
            };
            let txn = uuid::Uuid::new_v4().simple().to_string();
            let header = self.header("dialog.open", &d.id, &caller.user, txn.clone(), None);
            let bytes = serde_json::to_vec(&body).map_err(fed_error)?;
            let event = Event::create(node_key, header, Some(bytes)).map_err(fed_error)?;
            // Kept so that a refusal can be matched and told.
            let pending = NewPending {
                event_id: &event.id().to_hex(),
                message_id: &d.id,
                discussion: &d.id,
                author: &caller.user,
                device: &caller.device,
                client_msg_id: &txn,
                kind: "dialog.open",
                at: self.now(),
            };
            b.fed_add_pending(&pending).await?;
            submit(b, link, &event, out).await?;
        }
        Ok(Done::Discussion(d.id))
    }

    /// At the home: a dialog with a user of a linked node that is not shared over an active
    /// link (the link it was shared over ended, and the nodes linked again) is shared over
    /// the new one, its state first. The link, if so.
    pub(super) async fn share_dialog_again(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        out: &mut Vec<Delivery>,
    ) -> Result<Option<String>, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Ok(None);
        };
        let Some(pair) = d.dialog_key.as_deref().filter(|_| self.is_home(&d.id)) else {
            return Ok(None);
        };
        let Some(theirs) = pair
            .split('\n')
            .find_map(|u| node_of(u).filter(|n| *n != self.node.as_str()))
        else {
            return Ok(None);
        };
        let Some(link) = b.fed_link_to(theirs).await? else {
            return Ok(None);
        };
        if b.fed_shares(&d.id).await?.contains(&link) {
            return Ok(Some(link));
        }
        self.share_state(b, key, d, &link, out).await?;
        Ok(Some(link))
    }

    /// At the home: a linked node's user opens a dialog with a user of this node: a person
    /// (not a bot, not locked) the link's directory scope lets that node see. Whatever the
    /// reason, a refusal says only "not found", so that logins cannot be probed.
    pub(super) async fn fed_open_dialog(
        &self,
        b: &mut Batch,
        link: &str,
        event: &Event,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let h = event.header();
        let body = body_of(event)?;
        let with = match body.users.as_slice() {
            [with] if node_of(with) == Some(self.node.as_str()) => with,
            _ => return Err(fed_error("a dialog is opened with one user of this node")),
        };
        if !b
            .fed_reachable(link, &h.origin, with, full_directory)
            .await?
        {
            return Err(DiscussionError::NotFound("user"));
        }
        remote_user(b, &h.author, &self.node, self.now()).await?;
        let mut pair = [h.author.as_str(), with.as_str()];
        pair.sort_unstable();
        let key = pair.join("\n");
        // The home is the node whose name sorts first: this one, or the asker got it wrong.
        let home = h.origin.as_str().min(self.node.as_str());
        if h.discussion != dialog_id(&key, home) {
            return Err(fed_error("that is not the id of these users' dialog"));
        }
        self.open_linked_dialog(b, Origin::Here, &author(event, false), with, key, out)
            .await
    }
}
