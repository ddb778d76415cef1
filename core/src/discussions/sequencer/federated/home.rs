//! At the home: every change of a shared discussion becomes a signed event with the next
//! number of its federated log, stamped and queued for each link; linked nodes' submissions
//! are judged and stamped here; sharing a discussion sends its state first.

use super::*;

impl Sequencer {
    /// At the home: puts a change of a shared discussion in its federated log and queues it
    /// for every link it is shared over. Does nothing for other discussions.
    pub(in crate::discussions::sequencer) async fn federate(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        d: &DiscussionRow,
        actor: &str,
        change: &Change,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Ok(());
        };
        if !self.is_home(&d.id) {
            return Ok(());
        }
        let mut links = b.fed_shares(&d.id).await?;
        if links.is_empty() {
            // After the change's own writes: any failure must undo the whole batch.
            let again = self
                .share_dialog_again(b, d, out)
                .await
                .map_err(|e| match e {
                    e @ DiscussionError::Store(_) => e,
                    other => DiscussionError::Store(StoreError::Aborted(other.to_string())),
                })?;
            links.extend(again);
        }
        if links.is_empty() {
            return Ok(());
        }
        let (kind, body) = match change {
            Change::MessagePosted { message } => (
                "message.post",
                Body {
                    message: Some(message.id.clone()),
                    text: message.text.clone(),
                    reply_to: message.reply_to.clone(),
                    files: message
                        .files
                        .iter()
                        .map(|f| FileRef {
                            sha256: f.sha256.clone(),
                            size: f.size,
                            name: f.name.clone(),
                            mime: f.mime.clone(),
                        })
                        .collect(),
                    ..Body::default()
                },
            ),
            Change::MessageEdited {
                message_id, text, ..
            } => (
                "message.edit",
                Body {
                    message: Some(message_id.clone()),
                    text: text.clone(),
                    ..Body::default()
                },
            ),
            Change::MessageDeleted { message_id } => (
                "message.delete",
                Body {
                    message: Some(message_id.clone()),
                    ..Body::default()
                },
            ),
            Change::ReactionAdded { message_id, emoji }
            | Change::ReactionRemoved { message_id, emoji } => (
                if matches!(change, Change::ReactionAdded { .. }) {
                    "reaction.add"
                } else {
                    "reaction.remove"
                },
                Body {
                    message: Some(message_id.clone()),
                    emoji: Some(emoji.clone()),
                    ..Body::default()
                },
            ),
            Change::TitleChanged { title } => (
                "discussion.title",
                Body {
                    title: Some(title.clone()),
                    ..Body::default()
                },
            ),
            Change::MembersAdded { users } => (
                "member.add",
                Body {
                    users: users.clone(),
                    ..Body::default()
                },
            ),
            Change::MemberRemoved { user } => (
                "member.remove",
                Body {
                    users: vec![user.clone()],
                    ..Body::default()
                },
            ),
            _ => return Ok(()),
        };
        let message_id = body.message.clone();
        let (event, origin_key) = match origin.applying() {
            // A linked node's event, exactly as its origin signed it.
            Some(a) => (a.event.clone(), a.origin_key),
            None => {
                let target = match &message_id {
                    Some(m) if kind != "message.post" => b
                        .fed_event_of_message(&d.id, m)
                        .await?
                        .and_then(|h| Hash::from_hex(&h)),
                    _ => None,
                };
                let txn = uuid::Uuid::new_v4().simple().to_string();
                let header = self.header(kind, &d.id, actor, txn, target);
                // After the change's own writes: a failure here must undo the whole batch
                // (sends have no savepoint), never commit a change the links miss.
                let broken = |e: String| DiscussionError::Store(StoreError::Aborted(e));
                let body = serde_json::to_vec(&body).map_err(|e| broken(e.to_string()))?;
                (
                    Event::create(key, header, Some(body)).map_err(|e| broken(e.to_string()))?,
                    key.public(),
                )
            }
        };
        self.stamp_and_queue(
            b,
            &d.id,
            &event,
            origin_key,
            message_id.as_deref(),
            &links,
            out,
        )
        .await
    }

    /// Gives `event` the next place in the discussion's federated log, signed and chained, and
    /// queues it for `links`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stamp_and_queue(
        &self,
        b: &mut Batch,
        discussion: &str,
        event: &Event,
        origin_key: PublicKey,
        message_id: Option<&str>,
        links: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let entry = (event, origin_key, message_id);
        self.stamp_and_queue_after(b, discussion, entry, 0, links, out)
            .await
    }

    /// [`Self::stamp_and_queue`], numbered after `after` at least (a home restored from a
    /// backup goes on after the numbers its replicas hold).
    pub(super) async fn stamp_and_queue_after(
        &self,
        b: &mut Batch,
        discussion: &str,
        (event, origin_key, message_id): (&Event, PublicKey, Option<&str>),
        after: i64,
        links: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Ok(());
        };
        let (fseq, prev) = match b.fed_head(discussion).await? {
            Some(h) => (h.fseq.max(after), stamp_hash(&h.stamp)?),
            None => (after, Hash::default()),
        };
        let stamp = Stamp::create(
            key,
            StampBody {
                format: EVENT_FORMAT,
                discussion: discussion.to_owned(),
                seq: u64::try_from(fseq + 1).unwrap_or(0),
                event: event.id(),
                origin_key,
                prev,
                accepted_at: self.now(),
            },
        );
        let kind = event.header().kind.clone();
        let message_id = match (message_id, kind.as_str()) {
            (None, "message.post") => node_of(discussion).map(|h| message_id_of(&event.id(), h)),
            (m, _) => m.map(str::to_owned),
        };
        b.fed_log_append(&log_row(&stamp, event, message_id.clone()))
            .await?;
        let item = encode(&Item::Stamped {
            stamp: stamp.signed().clone(),
            event: event.wire().clone(),
        });
        for link in links {
            b.fed_enqueue(link, &item).await?;
        }
        if kind == "message.delete"
            && let Some(m) = &message_id
        {
            purge_bodies(b, discussion, m).await?;
        }
        out.push(Delivery::WakeLinks(links.to_vec()));
        Ok(())
    }

    /// At the home: a linked node's submission for one of its users.
    pub(super) async fn fed_submit(
        &self,
        b: &mut Batch,
        link: &str,
        wire: EventWire,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let event = Event::stored(wire).map_err(fed_error)?;
        let h = event.header().clone();
        if !self.is_home(&h.discussion) {
            return Err(fed_error("this node is not the discussion's home"));
        }
        if round.known.contains(&event.id().to_hex()) {
            return Ok(Done::Nothing);
        }
        let peer = round
            .peer(b, link)
            .await?
            .ok_or_else(|| fed_error("the link has ended"))?;
        if peer != h.origin {
            return Err(fed_error(
                "the event comes from another node than the link's",
            ));
        }
        if h.kind == "dialog.open" {
            return self.fed_open_dialog(b, link, &event, out).await;
        }
        let shared = b.fed_shares(&h.discussion).await?.iter().any(|l| l == link);
        let shared_again = match (shared, b.discussion(&h.discussion).await?) {
            (false, Some(d)) => self.share_dialog_again(b, &d, out).await?.as_deref() == Some(link),
            _ => false,
        };
        if !shared && !shared_again {
            return Err(DiscussionError::Forbidden(format!(
                "{} is not shared with {}",
                h.discussion, h.origin
            )));
        }
        let origin_key = b
            .fed_link_key(link)
            .await?
            .map(veche_federation::keys::PublicKey)
            .ok_or_else(|| fed_error("the link has ended"))?;
        if !matches!(
            h.kind.as_str(),
            "message.post" | "message.edit" | "message.delete" | "reaction.add" | "reaction.remove"
        ) {
            return Err(DiscussionError::Forbidden(format!(
                "{} is changed on its home node only ({})",
                h.discussion, h.kind
            )));
        }
        let body = body_of(&event)?;
        round.user(b, &h.author, &self.node, self.now()).await?;
        let caller = author(&event, false);
        let applying = Applying {
            event: event.clone(),
            origin_key,
        };
        let origin = self.origin_of(&applying);
        self.apply_change(
            b,
            origin,
            &caller,
            &h.discussion,
            &h.kind,
            body,
            &event,
            out,
        )
        .await
    }

    /// Tells the peer of `link` that this node cannot take its user's event `(event id,
    /// discussion, author)` for good, and why: a submission, at the home; a share, elsewhere.
    /// Nothing is sent over a link that has ended.
    pub(super) async fn refuse(
        &self,
        b: &mut Batch,
        link: &str,
        refused: Option<(Hash, String, String)>,
        error: &DiscussionError,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let Some((event, discussion, author)) = refused else {
            return Ok(());
        };
        if b.fed_link_peer(link).await?.is_none() {
            return Ok(());
        }
        let mut reason = error.to_string();
        if reason.len() > veche_federation::wire::MAX_REASON_BYTES {
            let mut end = veche_federation::wire::MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        let item = Item::Refusal {
            event,
            discussion,
            author,
            reason,
        };
        b.fed_enqueue(link, &encode(&item)).await?;
        out.push(Delivery::WakeLinks(vec![link.to_owned()]));
        Ok(())
    }

    /// At the home: shares a group over a link and sends its state as the first entry the
    /// other node sees.
    pub(in crate::discussions::sequencer) async fn share(
        &self,
        b: &mut Batch,
        discussion: &str,
        link: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        let d = b
            .discussion(discussion)
            .await?
            .ok_or(DiscussionError::NotFound("discussion"))?;
        if !self.is_home(&d.id) {
            return Err(DiscussionError::BadRequest(
                "only the discussion's home node shares it".into(),
            ));
        }
        if b.fed_link_peer(link).await?.is_none() {
            return Err(DiscussionError::NotFound("link"));
        }
        // An object discussion is shared when a user of the other node opens it; sharing it
        // again by hand restarts a copy there that lost its place in the log.
        let again = d.kind == DiscussionKind::Object
            && b.fed_shares(&d.id).await?.iter().any(|l| l == link);
        if d.kind != DiscussionKind::Group && !again {
            return Err(DiscussionError::BadRequest(
                "only groups can be shared with another node by an administrator (an object \
                 discussion only again, over a link it is shared over)"
                    .into(),
            ));
        }
        self.share_state(b, key, &d, link, out).await
    }

    /// At the home: shares `d` over `link` and queues its state (members, title) as the next
    /// entry of its log, for every link it is shared over.
    pub(super) async fn share_state(
        &self,
        b: &mut Batch,
        key: &veche_federation::keys::NodeKey,
        d: &DiscussionRow,
        link: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        self.share_state_after(b, key, d, (link, 0), out).await
    }

    /// [`Self::share_state`], numbered after `after` at least.
    pub(super) async fn share_state_after(
        &self,
        b: &mut Batch,
        key: &veche_federation::keys::NodeKey,
        d: &DiscussionRow,
        (link, after): (&str, i64),
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        // Sharing again sends the group's state again: a replica that lost its place in the
        // log starts over from it.
        b.fed_add_share(&d.id, link, self.now()).await?;
        let members = b.members(&d.id).await?;
        // This node signs the share for one of its users: the creator, or (a dialog a user of
        // the other node opened) the member who is on this node. An object discussion is
        // shared by its application: whoever opened it here stays unnamed to the linked node.
        let mine = |u: &String| node_of(u) == Some(self.node.as_str());
        let app = d
            .object_app
            .as_ref()
            .map(|app| format!("{app}@{}", self.node));
        let author = app
            .iter()
            .chain(std::iter::once(&d.created_by))
            .chain(members.iter().map(|m| &m.0))
            .find(|u| mine(u))
            .cloned()
            .ok_or_else(|| fed_error("the discussion has no member on this node"))?;
        let object = match (&d.object_app, &d.object_type, &d.object_id) {
            (Some(application), Some(object_type), Some(object_id)) => Some(ObjectRef {
                application: application.clone(),
                object_type: object_type.clone(),
                object_id: object_id.clone(),
            }),
            _ => None,
        };
        let body = Body {
            kind: Some(d.kind.as_str().to_owned()),
            title: Some(d.title.clone()),
            members: members.into_iter().collect(),
            object,
            ..Body::default()
        };
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let header = self.header("discussion.share", &d.id, &author, txn, None);
        let bytes = serde_json::to_vec(&body).map_err(fed_error)?;
        let event = Event::create(key, header, Some(bytes)).map_err(fed_error)?;
        // Every link gets it: the log is one chain; nodes that had the discussion already
        // bring their member lists up to date.
        let links = b.fed_shares(&d.id).await?;
        let entry = (&event, key.public(), None);
        self.stamp_and_queue_after(b, &d.id, entry, after, &links, out)
            .await?;
        Ok(Done::Nothing)
    }
}
