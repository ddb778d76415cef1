//! One round of items received over a link, applied in order inside the sequencer's batch.

use super::*;

impl Sequencer {
    /// Applies received items in order, each in a savepoint of its own. A transient failure
    /// holds back the rest of its link (tried again later, in order); a storage failure
    /// breaks the batch, so nothing of the round is kept and all is tried again.
    pub(in crate::discussions::sequencer) async fn fed_many(
        &self,
        b: &mut Batch,
        items: Vec<(String, Item)>,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let mut held = HashSet::new();
        let mut round = Round::default();
        let ids: Vec<String> = items
            .iter()
            .filter_map(|(_, item)| match item {
                Item::Submit { event } | Item::Stamped { event, .. } => {
                    Some(Hash::of(&event.header).to_hex())
                }
                Item::Refusal { .. } | Item::Readers { .. } => None,
            })
            .collect();
        round.known = b.fed_known_events(&ids).await?;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        while let Some((link, item)) = items.next() {
            if held.contains(&link) {
                outcomes.push(FedOutcome::Later);
                continue;
            }
            // A run of the home's plain posts to one discussion is stored in a few multi-row
            // statements: the bulk of what a replica receives.
            if let Some((discussion, body)) = self.plain_post(&item) {
                let mut run = vec![(item, body)];
                while let Some((next_link, next)) = items.peek() {
                    if *next_link != link {
                        break;
                    }
                    match self.plain_post(next) {
                        Some((d, body)) if d == discussion => {
                            if let Some((_, next)) = items.next() {
                                run.push((next, body));
                            }
                        }
                        _ => break,
                    }
                }
                for result in self.fed_posts(b, &link, run, &mut round, out).await? {
                    outcomes.push(match result {
                        Ok(()) => FedOutcome::Applied,
                        Err(e) => {
                            tracing::error!(link, error = %e, "a received item was refused");
                            FedOutcome::Refused(e.to_string())
                        }
                    });
                }
                continue;
            }
            let header = match &item {
                Item::Submit { event } | Item::Stamped { event, .. } => Event::peek(event).ok(),
                Item::Refusal { .. } | Item::Readers { .. } => None,
            };
            // A submission refused for good is answered, so that its author learns of it.
            let submitted = match (&item, &header) {
                (Item::Submit { event }, Some(h)) => Some((
                    Hash::of(&event.header),
                    h.discussion.clone(),
                    h.author.clone(),
                )),
                _ => None,
            };
            // Messages and reactions leave the batch's dialogs and groups as they were.
            let plain = header
                .as_ref()
                .is_some_and(|h| h.kind.starts_with("message.") || h.kind.starts_with("reaction."));
            // A stamped event writes only under a savepoint of its own, or fails the whole
            // round (`fed_apply`): two statements fewer on the replica's hot path.
            let guarded = !matches!(item, Item::Stamped { .. });
            if guarded {
                b.savepoint().await?;
            }
            let mut delivered = Vec::new();
            // A stamped event is known once logged (`Round::advance`); a submission once taken.
            let submitted_id = match &item {
                Item::Submit { event } => Some(Hash::of(&event.header).to_hex()),
                Item::Stamped { .. } | Item::Refusal { .. } | Item::Readers { .. } => None,
            };
            let result = match item {
                Item::Submit { event } => {
                    self.fed_submit(b, &link, event, &mut round, &mut delivered)
                        .await
                }
                Item::Stamped { stamp, event } => {
                    self.fed_apply(b, &link, stamp, event, &mut round, &mut delivered)
                        .await
                }
                Item::Refusal {
                    event,
                    discussion,
                    author,
                    reason,
                } => {
                    self.fed_refusal(
                        b,
                        &link,
                        &event,
                        discussion,
                        author,
                        &reason,
                        &mut delivered,
                    )
                    .await
                }
                Item::Readers { discussion, users } => {
                    self.fed_readers(b, &link, &discussion, users, &mut round, &mut delivered)
                        .await
                }
            };
            if !plain || result.is_err() {
                self.forget_cache();
            }
            if guarded {
                match &result {
                    Ok(_) => b.release().await?,
                    Err(_) => {
                        b.rollback_command().await?;
                        round.forget_users();
                    }
                }
            }
            match result {
                Ok(_) => {
                    // A repeat later in the round is skipped.
                    round.known.extend(submitted_id);
                    out.extend(delivered);
                    outcomes.push(FedOutcome::Applied);
                }
                Err(e @ DiscussionError::Store(StoreError::Conflict)) => {
                    self.refuse(b, &link, submitted, &e, out).await?;
                    outcomes.push(FedOutcome::Refused(e.to_string()));
                }
                Err(e @ (DiscussionError::Store(_) | DiscussionError::Undecided(_))) => {
                    return Err(e);
                }
                Err(DiscussionError::Unavailable) => {
                    held.insert(link);
                    outcomes.push(FedOutcome::Later);
                }
                Err(e) => {
                    tracing::error!(link, error = %e, "a received item was refused");
                    self.refuse(b, &link, submitted, &e, out).await?;
                    outcomes.push(FedOutcome::Refused(e.to_string()));
                }
            }
        }
        Ok(Done::Federated(outcomes))
    }
}
