//! What the transport needs from the node's storage: each link's outbox and the watermark of
//! what was received on it. The node implements it over its database; this crate never sees
//! SQL.

use std::future::Future;

use crate::keys::Hash;
use crate::wire::Item;

/// An outbox item, numbered per link from 1 without gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its place in the link's outbox.
    pub link_seq: u64,
    /// The item.
    pub item: Item,
}

/// A received item, checked by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Its place in the sender's outbox.
    pub link_seq: u64,
    /// The item, its signatures verified.
    pub item: Item,
}

/// A received item refused for good (a bad signature, a foreign author): the watermark passes
/// it, and the store may keep it for the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its place in the sender's outbox.
    pub link_seq: u64,
    /// The item as received.
    pub item: Item,
    /// Why it was refused.
    pub reason: String,
}

/// A storage failure; the transport retries later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("federation storage: {0}")]
pub struct StoreError(pub String);

/// The node's side of delivery. Every method is one transaction.
pub trait LinkStore: Clone + Send + Sync + 'static {
    /// Outbox items of `link` after `after`, in order, at most `max`.
    fn outbox(
        &self,
        link: &str,
        after: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Outgoing>, StoreError>> + Send;

    /// The peer has stored everything up to `upto`: those items may go. `last` is the
    /// [`Item::digest`] of the item the peer stored at `upto`, when it says (on greeting).
    ///
    /// If `upto` is beyond every number this store ever gave an item of the link, or the item
    /// it holds at `upto` is not the one the peer stored, this store lost items it had sent
    /// (it was restored from a backup), and the items waiting now may carry numbers the peer
    /// has already taken for others. Nothing is removed then: the waiting items are numbered
    /// again to follow `upto` (in their order; the peer skips events it has already by their
    /// id), numbering goes on after them, and `true` is returned, so that the transport sends
    /// them.
    fn acked(
        &self,
        link: &str,
        upto: u64,
        last: Option<Hash>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The last `link_seq` stored from the peer on `link` (0: none), with the
    /// [`Item::digest`] of the item stored at it.
    fn watermark(
        &self,
        link: &str,
    ) -> impl Future<Output = Result<(u64, Option<Hash>), StoreError>> + Send;

    /// Stores a received batch and returns the new watermark, in one transaction: items at or
    /// below the stored watermark are skipped (they were stored before), the rest are kept
    /// (accepted ones for processing, refused ones for the record) only if the first of them
    /// is right after the watermark, and the watermark moves to the last one kept. The
    /// transport sends an acknowledgement only after this returns.
    fn receive(
        &self,
        link: &str,
        accepted: Vec<Incoming>,
        refused: Vec<Refused>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
