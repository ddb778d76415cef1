//! On a replica: local commands in another home's discussion become submissions to the home,
//! and the home's stamped events are checked against the log and applied in order, through
//! the commands local users use.

use super::*;

impl Sequencer {
    /// The answer to a submission sent before with the same exactly-once key, if there was
    /// one: its message id, or its home's refusal.
    pub(in crate::discussions::sequencer) async fn submitted_before(
        &self,
        b: &mut Batch,
        caller: &Caller,
        d: &DiscussionRow,
        client_txn: &str,
    ) -> Result<Option<Result<String, DiscussionError>>, DiscussionError> {
        let home = node_of(&d.id).unwrap_or_default();
        let pending = b
            .fed_pending(&caller.user, &caller.device, client_txn)
            .await?;
        Ok(pending.map(|p| match p.refused {
            Some(reason) => Err(DiscussionError::Forbidden(format!(
                "{home} refused it: {reason}"
            ))),
            None => Ok(p.message_id),
        }))
    }

    /// On a replica: a local user's change of another home's discussion, signed and queued for
    /// the home (with the files it attaches). Its message id, for a post.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::discussions::sequencer) async fn submit_home(
        &self,
        b: &mut Batch,
        caller: &Caller,
        d: &DiscussionRow,
        kind: &str,
        body: Body,
        client_txn: &str,
        files: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<String, DiscussionError> {
        let key = self.fed.key.as_ref().ok_or(DiscussionError::Unavailable)?;
        let home = node_of(&d.id).ok_or_else(|| fed_error("the discussion names no home"))?;
        if let Some(answer) = self.submitted_before(b, caller, d, client_txn).await? {
            return answer;
        }
        let link = b.fed_link_to(home).await?.ok_or_else(|| {
            DiscussionError::Forbidden(format!(
                "this discussion lives on {home}, and there is no active link with it"
            ))
        })?;
        let target = match &body.message {
            Some(m) => b
                .fed_event_of_message(&d.id, m)
                .await?
                .and_then(|h| Hash::from_hex(&h)),
            None => None,
        };
        let header = self.header(kind, &d.id, &caller.user, client_txn.to_owned(), target);
        let message_id = body.message.clone();
        let bytes = serde_json::to_vec(&body).map_err(fed_error)?;
        let event = Event::create(key, header, Some(bytes)).map_err(fed_error)?;
        let message_id = message_id.unwrap_or_else(|| message_id_of(&event.id(), home));
        let pending = NewPending {
            event_id: &event.id().to_hex(),
            message_id: &message_id,
            discussion: &d.id,
            author: &caller.user,
            device: &caller.device,
            client_msg_id: client_txn,
            kind,
            at: self.now(),
        };
        if !b.fed_add_pending(&pending).await? {
            return Err(DiscussionError::Store(StoreError::Aborted(
                "a submission key vanished during its own transaction".into(),
            )));
        }
        b.fed_pending_files(pending.event_id, files).await?;
        submit(b, link, &event, out).await?;
        Ok(message_id)
    }

    /// A linked node could not take an event of one of this node's users: the home refused a
    /// submission, or a node a discussion was shared with could not take the share (a dialog
    /// with a user it does not have). The author is told; a refusal of nothing this node sent
    /// is ignored.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fed_refusal(
        &self,
        b: &mut Batch,
        link: &str,
        event: &Hash,
        discussion: String,
        author: String,
        reason: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        let message_id = if self.is_home(&discussion) {
            // Only a share sent over this very link, and only its author is told.
            let shared_here = b.fed_shares(&discussion).await?.iter().any(|l| l == link);
            let stored = b.fed_share_event(&event.to_hex(), &discussion).await?;
            let shared_by = stored
                .and_then(|bytes| ciborium::from_reader::<EventWire, _>(bytes.as_slice()).ok())
                .and_then(|wire| Event::peek(&wire).ok())
                .map(|h| h.author);
            if !shared_here || shared_by.as_deref() != Some(author.as_str()) {
                return Ok(Done::Nothing);
            }
            None
        } else {
            match b
                .fed_refuse_pending(&event.to_hex(), &discussion, &author, &reason)
                .await?
            {
                Some(message) => message,
                None => return Ok(Done::Nothing),
            }
        };
        tracing::warn!(link, discussion, author, reason, "a linked node refused");
        out.push(Delivery::Personal {
            users: vec![author],
            event: veche_protocol::Event::NotDelivered {
                discussion,
                message_id,
                reason,
            },
        });
        Ok(Done::Nothing)
    }

    /// See [`super::Op::FedUndelivered`].
    pub(in crate::discussions::sequencer) async fn fed_undelivered(
        &self,
        b: &mut Batch,
        home: &str,
        reason: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        for (discussion, author, message_id) in b.fed_refuse_pending_at(home, reason).await? {
            tracing::warn!(
                home,
                discussion,
                author,
                reason,
                "not delivered: the link ended"
            );
            out.push(Delivery::Personal {
                users: vec![author],
                event: veche_protocol::Event::NotDelivered {
                    discussion,
                    message_id,
                    reason: reason.to_owned(),
                },
            });
        }
        Ok(Done::Nothing)
    }

    /// The discussion and body of `item` if it is the home's stamped post of plain text (no
    /// reply, no mention, no file): one [`Self::fed_posts`] stores with others in a few statements.
    pub(super) fn plain_post(&self, item: &Item) -> Option<(String, Body)> {
        let Item::Stamped { event, .. } = item else {
            return None;
        };
        let header = Event::peek(event).ok()?;
        if header.kind != "message.post" || self.is_home(&header.discussion) {
            return None;
        }
        let body: Body = serde_json::from_slice(event.body.as_deref()?).ok()?;
        let text = body.text.as_deref()?;
        let plain = body.reply_to.is_none()
            && body.files.is_empty()
            && text::mentioned_logins(&text::convert_shortcodes(text), self.node.as_str())
                .is_empty();
        plain.then_some((header.discussion, body))
    }

    /// On a replica: a run of the home's plain posts to one discussion ([`Self::plain_post`]).
    /// Each is checked as [`Self::fed_apply`] checks it and applied as a send would apply it
    /// (one this node cannot apply is skipped, its stamp still logged), but the messages,
    /// their events and their log entries are stored in multi-row statements, and the
    /// discussion's number is written once. Every write is made only after every check, so
    /// the run needs no savepoint: a storage error fails the round.
    pub(super) async fn fed_posts(
        &self,
        b: &mut Batch,
        link: &str,
        run: Vec<(Item, Body)>,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Vec<Result<(), DiscussionError>>, DiscussionError> {
        // Only what a later round may get past fails this one; anything else skips its item.
        let fails_round = |e: &DiscussionError| {
            matches!(
                e,
                DiscussionError::Unavailable
                    | DiscussionError::Store(
                        StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Aborted(_)
                    )
            )
        };
        let fail = |e: DiscussionError| match e {
            e @ DiscussionError::Store(StoreError::Database(_) | StoreError::Migrate(_)) => e,
            other => DiscussionError::Store(StoreError::Aborted(other.to_string())),
        };
        let mut outcomes = Vec::with_capacity(run.len());
        let mut next = Vec::with_capacity(run.len());
        for (item, body) in run {
            let Item::Stamped { stamp, event } = item else {
                outcomes.push(Err(fed_error("not a stamped event")));
                continue;
            };
            match self.fed_check(b, link, stamp, event, round).await {
                Ok(Some(n)) => {
                    round.advance(&n.stamp, &n.event);
                    next.push((n, body));
                    outcomes.push(Ok(()));
                }
                Ok(None) => outcomes.push(Ok(())),
                Err(e) if fails_round(&e) => return Err(fail(e)),
                Err(e) => outcomes.push(Err(e)),
            }
        }
        let at = self.now();
        let mut logs = Vec::with_capacity(next.len());
        // Each with the index of its log entry.
        let mut accepted: Vec<(usize, Caller, MessageRow, Applying)> =
            Vec::with_capacity(next.len());
        let mut d: Option<DiscussionRow> = None;
        for (Next { stamp, event }, body) in next {
            let message_id = self.message_id_for(&event, &body);
            logs.push(log_row(&stamp, &event, message_id.clone()));
            let caller = author(&event, true);
            let m = SendMessage {
                discussion: stamp.body().discussion.clone(),
                client_msg_id: event.id().to_hex(),
                text: body.text.unwrap_or_default(),
                reply_to: None,
                data: None,
                actions: Vec::new(),
                files: Vec::new(),
            };
            let checked = match (message_id, self.content(&m)) {
                (None, _) => Err(fed_error("the post names no message")),
                (Some(_), Err(e)) => Err(e),
                (Some(id), Ok(content)) => {
                    match self.readable_as(b, &caller, &m.discussion, true).await {
                        Ok((_, grant)) if !grant.write => Err(super::super::read_only()),
                        Ok((row, _)) => {
                            match round.user(b, &caller.user, &self.node, self.now()).await {
                                Ok(()) => Ok((id, content, row)),
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            let (id, content, row) = match checked {
                Ok(ok) => ok,
                Err(e) if fails_round(&e) => return Err(fail(e)),
                Err(e) => {
                    tracing::warn!(discussion = m.discussion, event = %event.id(), error = %e, "a federated post could not be applied here; skipped");
                    continue;
                }
            };
            d.get_or_insert(row);
            let applying = Applying {
                event,
                origin_key: stamp.body().origin_key,
            };
            accepted.push((
                logs.len() - 1,
                caller.clone(),
                MessageRow {
                    id,
                    discussion_id: m.discussion,
                    seq: 0,
                    author: caller.user,
                    device_id: caller.device,
                    client_msg_id: m.client_msg_id,
                    payload_hash: content.hash,
                    text: Some(content.text),
                    data: content.data,
                    actions: content.actions,
                    reply_to: None,
                    created_at: at,
                    edited_at: None,
                    version: 1,
                    deleted: false,
                },
                applying,
            ));
        }
        // The home names its messages, and a local client chooses its device and message ids:
        // a post whose id, or whose exactly-once key, is taken here (or earlier in the run) is
        // skipped as a send would refuse it, rather than failing the round.
        let rows: Vec<&MessageRow> = accepted.iter().map(|(_, _, row, _)| row).collect();
        let taken = b.messages_taken(&rows).await?;
        let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
        let mut posts: Vec<(Caller, MessageRow, Applying)> = Vec::with_capacity(accepted.len());
        for (i, (entry, caller, mut row, applying)) in accepted.into_iter().enumerate() {
            let key = (
                row.author.clone(),
                row.device_id.clone(),
                row.client_msg_id.clone(),
            );
            if taken.contains(&i) || ids.contains(&row.id) || keys.contains(&key) {
                tracing::warn!(
                    message = row.id,
                    "a federated post names a message or client id in use here; skipped"
                );
                // Its log entry must not point at the message that holds the id here.
                logs[entry].message_id = None;
                continue;
            }
            ids.insert(row.id.clone());
            keys.insert(key);
            let Some(d) = &d else {
                continue;
            };
            row.seq = d.last_seq + 1 + posts.len() as i64;
            posts.push((caller, row, applying));
        }
        if let (Some(d), Some((_, last, _))) = (&d, posts.last()) {
            let rows: Vec<MessageRow> = posts.iter().map(|(_, row, _)| row.clone()).collect();
            b.insert_messages(&rows)
                .await
                .map_err(DiscussionError::Store)?;
            self.set_seq(b, &d.id, last.seq, at).await?;
            let events: Vec<EventRow> = rows
                .iter()
                .map(|row| EventRow {
                    discussion_id: d.id.clone(),
                    seq: row.seq,
                    kind: "message_posted".into(),
                    actor: row.author.clone(),
                    at,
                    message_id: Some(row.id.clone()),
                    detail: "{}".into(),
                })
                .collect();
            b.insert_events(&events).await?;
            let mut d = d.clone();
            d.last_seq = last.seq;
            if d.kind == DiscussionKind::Object {
                // As a send does: posting puts an object discussion in one's list.
                let mut authors: Vec<&str> =
                    posts.iter().map(|(c, _, _)| c.user.as_str()).collect();
                authors.sort_unstable();
                authors.dedup();
                for author in authors {
                    b.set_follow(author, &d.id, true).await?;
                }
            }
            for (caller, row, applying) in posts {
                let origin = Origin::Stamped(&applying);
                self.announce_posted(
                    b,
                    origin,
                    &caller,
                    &d,
                    row,
                    Vec::new(),
                    None,
                    Vec::new(),
                    out,
                )
                .await
                .map_err(fail)?;
            }
        }
        b.fed_log_append_many(&logs).await?;
        Ok(outcomes)
    }

    /// On a replica: whether the home's stamped event is the next of its discussion's log
    /// here (`Some`), or one this node has already (`None`); refused if it is neither.
    pub(super) async fn fed_check(
        &self,
        b: &mut Batch,
        link: &str,
        stamp: Signed,
        wire: EventWire,
        round: &mut Round,
    ) -> Result<Option<Next>, DiscussionError> {
        let stamp = Stamp::stored(stamp).map_err(fed_error)?;
        let event = Event::stored(wire).map_err(fed_error)?;
        stamp.check_event(&event).map_err(fed_error)?;
        // The log's numbers are SQLite integers.
        if i64::try_from(stamp.body().seq).is_err() {
            return Err(fed_error("a stamp's number is out of range"));
        }
        let h = event.header().clone();
        let discussion = stamp.body().discussion.clone();
        if round.peer(b, link).await?.as_deref() != node_of(&discussion) {
            return Err(fed_error(
                "stamped by a node that is not the discussion's home",
            ));
        }
        if round.known.contains(&event.id().to_hex()) {
            return Ok(None);
        }
        let head = match round.heads.get(&discussion) {
            Some(head) => Some(*head),
            None => match b.fed_head(&discussion).await? {
                Some(head) => Some(Head {
                    seq: u64::try_from(head.fseq).unwrap_or(0),
                    hash: stamp_hash(&head.stamp)?,
                }),
                None => None,
            },
        };
        match head {
            // A replica's log starts where the discussion was shared with it.
            None if h.kind == "discussion.share" => {}
            None => return Err(fed_error("the discussion was never shared with this node")),
            Some(head) => {
                match head.next(&stamp) {
                    Ok(_) => {}
                    Err(ChainError::Old { seq, head }) => {
                        // Known events were skipped above: an unknown one at an old number is
                        // the home numbering again what it had numbered (restored from a
                        // backup). It is skipped, and said.
                        tracing::warn!(
                            discussion,
                            seq,
                            head,
                            event = %event.id(),
                            "the home stamped a number it had given another event (restored from a backup?); skipped"
                        );
                        return Ok(None);
                    }
                    // A share is a snapshot: it restarts a replica that lost its place (the
                    // home's administrator shares the group again).
                    // (Or, a home restored from a backup shares it past where this node is,
                    // after numbers it may have given other events: see `fed_rejoin`.)
                    Err(ChainError::Gap { .. } | ChainError::Fork { .. })
                        if h.kind == "discussion.share" =>
                    {
                        tracing::warn!(
                            discussion,
                            "the home resent the group's state; following it from here"
                        );
                    }
                    // Items come in order, and an earlier one that must wait holds this one
                    // back: a gap here means the predecessor was refused for good. The group
                    // stops on this node until its home shares it again.
                    Err(e) => {
                        return Err(fed_error(format!(
                            "{e}; the group waits for its home to share it again"
                        )));
                    }
                }
            }
        }
        Ok(Some(Next { stamp, event }))
    }

    /// On a replica: the home's next stamped event, applied if it follows the log.
    pub(super) async fn fed_apply(
        &self,
        b: &mut Batch,
        link: &str,
        stamp: Signed,
        wire: EventWire,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(Next { stamp, event }) = self.fed_check(b, link, stamp, wire, round).await? else {
            return Ok(Done::Nothing);
        };
        let h = event.header().clone();
        let discussion = stamp.body().discussion.clone();
        // What this node cannot read or apply is skipped below; the stamp still enters the log.
        let body = body_of(&event).unwrap_or_default();
        // What the home stamped, it authorized: the author acts with every right here.
        let caller = author(&event, true);
        let applying = Applying {
            event: event.clone(),
            origin_key: stamp.body().origin_key,
        };
        let origin = self.origin_of(&applying);
        // The change is applied in a savepoint of its own: if this node cannot apply it (a
        // reply to a message from before the share, a user unknown here), it is skipped and
        // logged, and the log goes on: one event never stops a group.
        b.savepoint().await?;
        let mut delivered = Vec::new();
        let result = match self.known_users(b, &event, &body, round).await {
            Err(e) => Err(e),
            Ok(()) if h.kind == "discussion.share" => {
                self.apply_share(b, origin, &caller, &discussion, &body, &mut delivered)
                    .await
            }
            Ok(()) => {
                self.apply_change(
                    b,
                    origin,
                    &caller,
                    &discussion,
                    &h.kind,
                    body.clone(),
                    &event,
                    &mut delivered,
                )
                .await
            }
        };
        let done = match result {
            Ok(done) => {
                b.release().await?;
                out.extend(delivered);
                done
            }
            Err(
                e @ (DiscussionError::Unavailable | DiscussionError::Store(StoreError::Aborted(_))),
            ) => {
                b.rollback_command().await?;
                round.forget_users();
                self.forget_cache();
                return Err(e);
            }
            Err(e @ DiscussionError::Store(StoreError::Database(_) | StoreError::Migrate(_))) => {
                b.rollback_command().await?;
                round.forget_users();
                self.forget_cache();
                return Err(e);
            }
            Err(e) => {
                b.rollback_command().await?;
                round.forget_users();
                // What the cache saw of the undone change is undone too.
                self.forget_cache();
                tracing::warn!(discussion, kind = h.kind, event = %event.id(), error = %e, "a federated change could not be applied here; skipped");
                if h.kind == "discussion.share" {
                    // The home's user learns that this node cannot take part (a dialog with
                    // a user it does not have), in words that say nothing of who exists here.
                    let refused = (event.id(), discussion.clone(), h.author.clone());
                    let why = DiscussionError::Forbidden(format!(
                        "{} cannot take part in this discussion",
                        self.node
                    ));
                    self.refuse(b, link, Some(refused), &why, out).await?;
                }
                Done::Nothing
            }
        };
        let message_id = match h.kind.as_str() {
            "message.post" => self.message_id_for(&event, &body),
            _ => body.message.clone(),
        };
        b.fed_log_append(&log_row(&stamp, &event, message_id.clone()))
            .await?;
        round.advance(&stamp, &event);
        if h.kind == "message.delete"
            && let Some(m) = &message_id
        {
            purge_bodies(b, &discussion, m).await?;
        }
        Ok(done)
    }

    /// Makes sure the users an event names are known here (users of other nodes as profile
    /// records).
    pub(super) async fn known_users(
        &self,
        b: &mut Batch,
        event: &Event,
        body: &Body,
        round: &mut Round,
    ) -> Result<(), DiscussionError> {
        for user in body.users.iter().chain(body.members.iter().map(|(u, _)| u)) {
            round.user(b, user, &self.node, self.now()).await?;
        }
        round
            .user(b, &event.header().author, &self.node, self.now())
            .await
    }

    pub(super) fn message_id_for(&self, event: &Event, body: &Body) -> Option<String> {
        body.message.clone().or_else(|| {
            node_of(&event.header().discussion).map(|home| message_id_of(&event.id(), home))
        })
    }

    /// Applies a message, reaction, member or title change through the ordinary command.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_change(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        kind: &str,
        body: Body,
        event: &Event,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let message = || {
            body.message
                .clone()
                .ok_or_else(|| fed_error("the event names no message"))
        };
        match kind {
            "message.post" => {
                let text = body.text.clone().unwrap_or_default();
                // A reply to a message this node never had (written before the share) is
                // shown as a plain message here.
                let reply_to = match &body.reply_to {
                    Some(r)
                        if b.message(r)
                            .await?
                            .is_some_and(|m| m.discussion_id == discussion) =>
                    {
                        Some(r.clone())
                    }
                    _ => None,
                };
                let files = self
                    .record_files(b, discussion, &caller.user, event, &body.files)
                    .await?;
                self.send(
                    b,
                    origin,
                    caller,
                    SendMessage {
                        discussion: discussion.to_owned(),
                        client_msg_id: event.id().to_hex(),
                        text,
                        reply_to,
                        data: None,
                        actions: Vec::new(),
                        files,
                    },
                    out,
                )
                .await
            }
            "message.edit" => {
                let text = body.text.clone().unwrap_or_default();
                self.edit(b, origin, caller, discussion, &message()?, &text, out)
                    .await
            }
            "message.delete" => {
                self.delete(b, origin, caller, discussion, &message()?, out)
                    .await
            }
            "reaction.add" | "reaction.remove" => {
                let emoji = body.emoji.clone().unwrap_or_default();
                self.react(
                    b,
                    origin,
                    caller,
                    discussion,
                    &message()?,
                    &emoji,
                    kind == "reaction.add",
                    out,
                )
                .await
            }
            "member.add" => {
                self.add_members(b, origin, caller, discussion, &body.users, out)
                    .await
            }
            "member.remove" => {
                let user = body
                    .users
                    .first()
                    .ok_or_else(|| fed_error("the event names no member"))?;
                self.remove_member(b, origin, caller, discussion, user, out)
                    .await
            }
            "discussion.title" => {
                let title = body.title.clone().unwrap_or_default();
                self.set_title(b, origin, caller, discussion, &title, out)
                    .await
            }
            other => Err(fed_error(format!("unknown kind {other}"))),
        }
    }

    /// On a replica: the discussion as its home shared it (created here, or its members
    /// brought up to date).
    pub(super) async fn apply_share(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        body: &Body,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let at = self.now();
        let existing = b.discussion(discussion).await?;
        if body.kind.as_deref() == Some("object")
            || existing
                .as_ref()
                .is_some_and(|d| d.kind == DiscussionKind::Object)
        {
            return self
                .apply_object_share(b, origin, caller, discussion, existing, body, out)
                .await;
        }
        let d = match existing {
            Some(d) => d,
            None if body.kind.as_deref() == Some("dialog") => {
                let mut pair: Vec<&str> = body.members.iter().map(|(u, _)| u.as_str()).collect();
                pair.sort_unstable();
                let key = pair.join("\n");
                let home = node_of(discussion).unwrap_or_default();
                let nodes: Vec<Option<&str>> = pair.iter().map(|u| node_of(u)).collect();
                // One user of the home, one of this node, the home the name that sorts first,
                // and the id both nodes derive.
                let well_formed = pair.len() == 2
                    && nodes.contains(&Some(home))
                    && nodes.contains(&Some(self.node.as_str()))
                    && home < self.node.as_str()
                    && pair.contains(&caller.user.as_str())
                    && dialog_id(&key, home) == discussion;
                if !well_formed {
                    return Err(fed_error("a shared dialog is not between its two users"));
                }
                let with = if pair[0] == caller.user {
                    pair[1]
                } else {
                    pair[0]
                };
                // This node's user must be a person who may be reached from there: the same
                // rule a home applies to `dialog.open`.
                let mine = pair
                    .iter()
                    .find(|u| node_of(u) == Some(self.node.as_str()))
                    .copied()
                    .unwrap_or_default();
                let link = b
                    .fed_link_to(home)
                    .await?
                    .ok_or_else(|| fed_error("the link has ended"))?;
                if !b.fed_reachable(&link, home, mine, full_directory).await? {
                    return Err(DiscussionError::NotFound("user"));
                }
                return self
                    .open_linked_dialog(b, origin, caller, with, key, out)
                    .await;
            }
            None => {
                let d = DiscussionRow {
                    id: discussion.to_owned(),
                    ..self.new_discussion(
                        veche_protocol::discussions::DiscussionKind::Group,
                        body.title.clone().unwrap_or_default(),
                        caller,
                    )
                };
                b.insert_discussion(&d).await?;
                for (user, role) in &body.members {
                    let role = if role == "owner" { "owner" } else { "member" };
                    b.add_member(&d.id, user, role, at).await?;
                }
                self.forget_cache();
                self.announce_created(b, origin, &d, out).await?;
                return Ok(Done::Discussion(d.id));
            }
        };
        // The snapshot is authoritative: members it lacks leave, its title holds.
        let present: Vec<String> = b.members(&d.id).await?.into_iter().map(|m| m.0).collect();
        let mut added = Vec::new();
        for (user, role) in &body.members {
            if !present.contains(user) {
                let role = if role == "owner" { "owner" } else { "member" };
                b.add_member(&d.id, user, role, at).await?;
                added.push(user.clone());
            }
        }
        if !added.is_empty() {
            self.forget_cache();
            self.announce_members_added(b, origin, &d, &caller.user, added, out)
                .await?;
        }
        for user in present {
            if !body.members.iter().any(|(m, _)| *m == user) {
                self.forget_cache();
                self.remove_member(b, origin, caller, &d.id, &user, out)
                    .await?;
            }
        }
        if let Some(title) = &body.title
            && *title != d.title
        {
            self.forget_cache();
            self.set_title(b, origin, caller, &d.id, title, out).await?;
        }
        Ok(Done::Discussion(d.id))
    }
}
