//! After a node is restored from a backup or a link rejoins: the state and the logs that
//! were lost are sent again.

use super::*;

impl Sequencer {
    /// See [`super::Op::FedResync`].
    pub(in crate::discussions::sequencer) async fn fed_resync(
        &self,
        b: &mut Batch,
        link: &str,
        received: i64,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        let Some(peer) = b.fed_link_peer(link).await? else {
            return Ok(Done::Nothing);
        };
        b.fed_renumber_outbox(link, received).await?;
        for id in b.fed_shared_over(link).await? {
            let Some(d) = b.discussion(&id).await?.filter(|d| self.is_home(&d.id)) else {
                continue;
            };
            self.share_tolerant(self.share_state(b, key, &d, link, out).await)?;
            for (user, write) in b.fed_readers(&d.id).await? {
                if node_of(&user) == Some(peer.as_str()) {
                    self.tell_reader(b, &d, link, &user, Some(write), out)
                        .await?;
                }
            }
        }
        out.push(Delivery::WakeLinks(vec![link.to_owned()]));
        Ok(Done::Nothing)
    }

    /// At a home restored from a backup: `heads` are where the peer of `link` is in the logs
    /// of discussions this node is home of. Each discussion's state is shared again, numbered
    /// two past the peer's head or this node's, whichever is further: the peer takes a share
    /// after a gap as a new start (as every other node it is shared with, whose head may be
    /// anywhere: a share that does not chain is taken as a new start too), and the log goes
    /// on from there. A discussion that cannot be shared is skipped and logged.
    pub(in crate::discussions::sequencer) async fn fed_rejoin(
        &self,
        b: &mut Batch,
        link: &str,
        heads: Vec<(String, i64)>,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        if b.fed_link_peer(link).await?.is_none() {
            return Ok(Done::Nothing);
        }
        for (id, theirs) in heads {
            let Some(d) = b.discussion(&id).await?.filter(|d| self.is_home(&d.id)) else {
                continue;
            };
            let ours = b.fed_head(&d.id).await?.map_or(0, |h| h.fseq);
            tracing::warn!(
                discussion = d.id,
                ours,
                theirs,
                "restored: sharing the discussion again past where the linked node is"
            );
            let after = theirs.max(ours).saturating_add(1);
            self.share_tolerant(self.share_state_after(b, key, &d, (link, after), out).await)?;
        }
        Ok(Done::Nothing)
    }
}
