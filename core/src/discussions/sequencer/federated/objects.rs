//! Object discussions across links: who of a linked node may read an object discussion is
//! decided on the object's node and kept in reader lists that travel with the log.

use super::*;

impl Sequencer {
    /// At the home: a linked node's user opens the discussion of one of this node's objects
    /// (`Query::Object`; `held` is what their node holds for them). The object's rule decides
    /// for them exactly as for a user here (the application's context provider or access
    /// list). If they may see it, the discussion is opened if need be and shared over the link
    /// (again, if their node lost it), and their node is told what they may do there unless
    /// it holds that already; if not, it is told that too, should it hold otherwise.
    pub(in crate::discussions::sequencer) async fn fed_open_object(
        &self,
        b: &mut Batch,
        link: &str,
        (user, held): (&str, Option<wire::Access>),
        object: &ObjectRef,
        title: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        let peer = b
            .fed_link_peer(link)
            .await?
            .ok_or(DiscussionError::NotFound("link"))?;
        if node_of(user) != Some(peer.as_str()) {
            return Err(DiscussionError::NotFound("object"));
        }
        let scope = b.fed_link_scope(link).await?.unwrap_or_default();
        let objects = serde_json::from_str::<veche_federation::grant::Scope>(&scope)
            .is_ok_and(|s| s.object_discussions);
        if !objects {
            return Err(DiscussionError::NotFound("object"));
        }
        let object_key = ObjectKey {
            app: &object.application,
            kind: &object.object_type,
            id: &object.object_id,
        };
        let access = object_access(b, self, object_key, user).await?;
        let existing = b.object_discussion(object_key).await?;
        let d = match (access, existing) {
            (Access::None, existing) => {
                // Told only if it was told otherwise (what the node says it holds is not
                // trusted here: it would learn of the discussion): a refusal queues nothing.
                if let Some(d) = existing
                    && b.fed_reader(&d.id, user).await?.is_some()
                {
                    self.tell_reader(b, &d, link, user, None, out).await?;
                }
                return Ok(Done::Reader(None));
            }
            (_, Some(d)) => d,
            (_, None) => {
                let caller = Caller {
                    user: user.to_owned(),
                    device: format!("fed-{peer}"),
                    admin: false,
                    connection: 0,
                };
                // Known here by id from now on, like any user of a linked node.
                remote_user(b, user, &self.node, self.now()).await?;
                let Done::Discussion(id) = self
                    .open_object(b, Origin::Here, &caller, object, title, out)
                    .await?
                else {
                    return Err(fed_error("opening an object gave no discussion"));
                };
                b.discussion(&id)
                    .await?
                    .ok_or(DiscussionError::NotFound("object"))?
            }
        };
        // Shared again if the node lost it, but not more often than every few minutes: each
        // share is an entry of the discussion's log.
        let now = self.now();
        let share = match b.fed_shared_at(&d.id, link).await? {
            None => true,
            Some(at) => held.is_none() && now.saturating_sub(at) >= SHARE_AGAIN_AFTER_MS,
        };
        if share {
            self.share_state(b, key, &d, link, out).await?;
        }
        let write = access == Access::Write;
        let told = b.fed_reader(&d.id, user).await?;
        if share || held != Some(reader_to_wire(Some(write))) || told != Some(write) {
            self.tell_reader(b, &d, link, user, Some(write), out)
                .await?;
        }
        Ok(Done::Reader(Some((d.id, write))))
    }

    /// At the home: records what `user` of the peer of `link` may do in the object discussion
    /// `d`, and tells the peer. When the last of the peer's users may no longer read it, the
    /// discussion is no longer shared over the link.
    pub(super) async fn tell_reader(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        link: &str,
        user: &str,
        access: ReaderAccess,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        b.fed_set_reader(&d.id, user, access).await?;
        let item = Item::Readers {
            discussion: d.id.clone(),
            users: vec![Reader {
                user: user.to_owned(),
                access: reader_to_wire(access),
            }],
        };
        b.fed_enqueue(link, &encode(&item)).await?;
        if access.is_none() {
            let peer = node_of(user);
            let others = b
                .fed_readers(&d.id)
                .await?
                .iter()
                .any(|(u, _)| node_of(u) == peer);
            if !others {
                b.fed_unshare(&d.id, link).await?;
            }
        }
        out.push(Delivery::WakeLinks(vec![link.to_owned()]));
        Ok(())
    }

    /// At the home: decides again for every user of a linked node told they may read the
    /// object discussion `d`, and tells their nodes of each change (an access list changed, or
    /// a context provider may answer otherwise now). A context provider is asked once for all
    /// of them; if it fails, nothing changes now.
    pub(in crate::discussions::sequencer) async fn recheck_readers(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let (Some(app), Some(kind), Some(id)) = (&d.object_app, &d.object_type, &d.object_id)
        else {
            return Ok(());
        };
        if self.fed.key.is_none() || !self.is_home(&d.id) || is_linked_object(app) {
            return Ok(());
        }
        let readers = b.fed_readers(&d.id).await?;
        if readers.is_empty() {
            return Ok(());
        }
        let object_key = ObjectKey { app, kind, id };
        let decided: Vec<Access> = if self.plugins.serves(kind) {
            let object = ObjectRef {
                application: app.clone(),
                object_type: kind.clone(),
                object_id: id.clone(),
            };
            let users: Vec<String> = readers.iter().map(|(u, _)| u.clone()).collect();
            match self.provider_answers(&object, &users)? {
                Some(decided) if decided.len() == users.len() => decided,
                _ => return Ok(()),
            }
        } else {
            let mut decided = Vec::with_capacity(readers.len());
            for (user, _) in &readers {
                decided.push(object_access(b, self, object_key, user).await?);
            }
            decided
        };
        for ((user, write), now) in readers.into_iter().zip(decided) {
            let now = match now {
                Access::None => None,
                Access::Read => Some(false),
                Access::Write => Some(true),
            };
            if now == Some(write) {
                continue;
            }
            let link = match node_of(&user) {
                Some(node) => b.fed_link_to(node).await?,
                None => None,
            };
            match link {
                Some(link) => self.tell_reader(b, d, &link, &user, now, out).await?,
                // No link reaches the user's node any more (its readers went with it).
                None => {
                    b.fed_set_reader(&d.id, &user, None).await?;
                }
            }
        }
        Ok(())
    }

    /// A share that fails for good (a discussion with no member here left) is logged and
    /// skipped, so that it does not undo the others; a storage failure fails the command.
    pub(super) fn share_tolerant(
        &self,
        shared: Result<Done, DiscussionError>,
    ) -> Result<(), DiscussionError> {
        match shared {
            Ok(_) => Ok(()),
            Err(e @ DiscussionError::Store(_)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "a discussion was not shared again");
                Ok(())
            }
        }
    }

    /// At the home: [`Self::recheck_readers`] for the object discussions after `after` (by id),
    /// a page at a time; the id to go on after, if there are more.
    pub(in crate::discussions::sequencer) async fn recheck_all_readers(
        &self,
        b: &mut Batch,
        after: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        // A few discussions a command: each may wait for a context provider.
        const PAGE: i64 = 10;
        let page = b.fed_told_readers(self.node.as_str(), after, PAGE).await?;
        for id in &page {
            if let Some(d) = b.discussion(id).await? {
                self.recheck_readers(b, &d, out).await?;
            }
        }
        let next = if page.len() as i64 == PAGE {
            page.last().cloned()
        } else {
            None
        };
        Ok(Done::Checked(next))
    }

    /// On a replica: the home of an object discussion says what some of this node's users
    /// may do there. Users not (or no longer) here are skipped; those who lose it are told.
    pub(super) async fn fed_readers(
        &self,
        b: &mut Batch,
        link: &str,
        discussion: &str,
        users: Vec<Reader>,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        if round.peer(b, link).await?.as_deref() != node_of(discussion) {
            return Err(fed_error("readers named by a node that is not the home"));
        }
        let d = b
            .discussion(discussion)
            .await?
            .filter(|d| d.object_app.as_deref().is_some_and(is_linked_object))
            .ok_or_else(|| fed_error("readers of an object discussion not shared here"))?;
        let mut lost = Vec::new();
        for r in users {
            if node_of(&r.user) != Some(self.node.as_str()) || !b.user_exists(&r.user).await? {
                continue;
            }
            let access = reader_from_wire(r.access);
            if b.fed_set_reader(&d.id, &r.user, access).await? && access.is_none() {
                lost.push(r.user);
            }
        }
        if !lost.is_empty() {
            out.push(Delivery::Revoked {
                discussion: d.id,
                users: lost,
            });
        }
        Ok(Done::Nothing)
    }

    /// On a replica: an object discussion as its home shared it (created here, its title
    /// brought up to date). Its application is named with the home (`app@home`), so that it
    /// never mixes with this node's own objects; nobody here may read it until the home says
    /// who may (`fed_readers`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_object_share(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        existing: Option<DiscussionRow>,
        body: &Body,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let home = node_of(discussion).unwrap_or_default();
        if let Some(d) = existing {
            if d.kind != DiscussionKind::Object || body.kind.as_deref() != Some("object") {
                return Err(fed_error("a discussion shared again as another kind"));
            }
            if let Some(title) = &body.title
                && *title != d.title
            {
                self.set_title(b, origin, caller, &d.id, title, out).await?;
            }
            return Ok(Done::Discussion(d.id));
        }
        let object = body
            .object
            .as_ref()
            .ok_or_else(|| fed_error("an object discussion shared without its object"))?;
        check_object(object)?;
        if is_linked_object(&object.application) {
            return Err(fed_error("an object discussion of a third node"));
        }
        // The link must carry object discussions as this node holds it too.
        let link = b
            .fed_link_to(home)
            .await?
            .ok_or_else(|| fed_error("the link has ended"))?;
        let scope = b.fed_link_scope(&link).await?.unwrap_or_default();
        if !serde_json::from_str::<veche_federation::grant::Scope>(&scope)
            .is_ok_and(|s| s.object_discussions)
        {
            return Err(DiscussionError::Forbidden(
                "this link does not share object discussions".into(),
            ));
        }
        let d = DiscussionRow {
            id: discussion.to_owned(),
            object_app: Some(format!("{}@{home}", object.application)),
            object_type: Some(object.object_type.clone()),
            object_id: Some(object.object_id.clone()),
            ..self.new_discussion(
                veche_protocol::discussions::DiscussionKind::Object,
                body.title.clone().unwrap_or_default(),
                caller,
            )
        };
        b.insert_discussion(&d).await?;
        self.announce_created(b, origin, &d, out).await?;
        Ok(Done::Discussion(d.id))
    }
}
