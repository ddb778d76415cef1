//! What linked nodes say to each other on `/veche/fed/1` (libp2p request-response, CBOR).
//!
//! Every request names its link and both nodes' ids; a request for another link, from
//! another node than the authenticated peer, or to another node than the receiver is refused.

use serde::{Deserialize, Serialize};

use crate::event::EventWire;
use crate::grant::Signed;
use crate::keys::{Hash, NodeId};

/// The protocol id.
pub const PROTOCOL: &str = "/veche/fed/1";

/// At most this many items in one push.
pub const MAX_BATCH_ITEMS: usize = 256;
/// A push is cut after the item that brings it past this many bytes of events.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// The largest request or response read from the wire.
pub const MAX_FRAME: u64 = 4 * 1024 * 1024;

/// Who a request is from and for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// The link.
    pub link: String,
    /// The sender's node id.
    pub from: NodeId,
    /// The receiver's node id.
    pub to: NodeId,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Sent by each side on every new connection.
    Hello {
        /// Link and nodes.
        address: Address,
        /// The grant the sender holds; both must hold the same one.
        grant: Hash,
        /// The last `link_seq` the sender has stored from the receiver, so the receiver's
        /// outbox resumes after it.
        received: u64,
    },
    /// A batch of the sender's outbox, `link_seq` `first`, `first + 1`, ...
    Push {
        /// Link and nodes.
        address: Address,
        /// The first item's `link_seq`.
        first: u64,
        /// The items.
        items: Vec<Item>,
    },
    /// A revocation or narrowing, signed by the sender.
    Notice {
        /// Link and nodes.
        address: Address,
        /// The signed [`crate::grant::Notice`].
        notice: Signed,
    },
}

impl Request {
    /// Link and nodes.
    pub fn address(&self) -> &Address {
        match self {
            Request::Hello { address, .. }
            | Request::Push { address, .. }
            | Request::Notice { address, .. } => address,
        }
    }
}

/// One outbox item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Item {
    /// An event written by the sender's users, for a discussion the receiver is home of.
    Submit {
        /// The event, signed by the sender.
        event: EventWire,
    },
    /// An event the sender, as home, has stamped.
    Stamped {
        /// The stamp, signed by the sender.
        stamp: Signed,
        /// The event, signed by its origin.
        event: EventWire,
    },
}

impl Item {
    /// Bytes this item takes in a batch, roughly.
    pub fn weight(&self) -> usize {
        let event = match self {
            Item::Submit { event } | Item::Stamped { event, .. } => event,
        };
        event.header.len() + event.body.as_ref().map_or(0, Vec::len) + 160
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The answer to `hello`: what the responder has stored from the requester.
    Hello {
        /// The last `link_seq` stored.
        received: u64,
    },
    /// Everything up to `upto` is stored; items that can never be accepted are listed, and
    /// count as received.
    Ack {
        /// The last contiguous `link_seq` stored.
        upto: u64,
        /// Items refused for good, with why.
        rejected: Vec<Rejected>,
    },
    /// The request was refused as a whole: wrong link, node or grant, or a revoked link.
    Refused {
        /// Why.
        reason: String,
        /// The link is over for the responder: stop trying.
        link_ended: bool,
    },
}

/// An item refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejected {
    /// Its `link_seq`.
    pub link_seq: u64,
    /// Why.
    pub reason: String,
}
