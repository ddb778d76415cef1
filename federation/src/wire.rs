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
/// At most this many people in one answer to a query.
pub const MAX_PROFILES: usize = 100;
/// The longest text a query may search for.
pub const MAX_QUERY_BYTES: usize = 200;
/// The largest request or response read from the wire.
pub const MAX_FRAME: u64 = 4 * 1024 * 1024;
/// At most this many bytes of a file in one answer.
pub const MAX_CHUNK: usize = 1024 * 1024;
/// The longest discussion id a file query may name.
pub const MAX_DISCUSSION_BYTES: usize = 300;
/// The longest user id (`login@node`) a request may name.
pub const MAX_USER_BYTES: usize = 320;

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
    /// Presence changes of the sender's users (everyone relevant to the link right after
    /// greeting, then changes): sent as they happen, never stored or resent; a lost one is
    /// made good by the next greeting.
    Presence {
        /// Link and nodes.
        address: Address,
        /// At most [`MAX_PRESENCE`].
        users: Vec<Presence>,
    },
    /// A question the receiver's node answers at once, within the link's scope; nothing is
    /// stored on either side.
    Query {
        /// Link and nodes.
        address: Address,
        /// What is asked.
        query: Query,
    },
}

/// At most this many users' presence in one request.
pub const MAX_PRESENCE: usize = 1000;

/// A user's presence as their node shows it to others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// `login@node`, a user of the sender.
    pub user: String,
    /// `available`, `away`, `dnd` or `offline` (a state the receiver does not know reads as
    /// offline).
    pub state: String,
    /// What they say about themselves (empty if nothing).
    pub status_text: String,
}

/// What one node may ask another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// People of the receiver's node matching `text` (name, login, department), as far as the
    /// link's directory scope lets the asker see them.
    Directory {
        /// What a user typed (at most [`MAX_QUERY_BYTES`]).
        text: String,
        /// At most this many (1 to [`MAX_PROFILES`]).
        limit: u32,
    },
    /// Bytes of a file attached to a message of `discussion` (a discussion the receiver is home
    /// of, or one it shares with the asker), from `offset`: at most [`MAX_CHUNK`] of them.
    /// Only on a link whose scope carries files, for files within its size limit.
    File {
        /// The discussion the file was posted in.
        discussion: String,
        /// The content's SHA-256, 64 lowercase hex digits.
        sha256: String,
        /// The first byte wanted.
        offset: u64,
    },
    /// The discussion of a business object of the receiver's node, for `user` (a user of the
    /// asker): the receiver decides whether they may see the object, opens its discussion if
    /// need be, shares it with the asker and tells it who may read it ([`Item::Readers`]).
    /// Only on a link whose scope carries object discussions.
    Object {
        /// The user who opens it, `login@node` of the asker.
        user: String,
        /// The object's application (a login on the receiver's node), type and id.
        application: String,
        /// The object's type.
        object_type: String,
        /// The object's id.
        object_id: String,
        /// What the asker holds for `user` now: `None` if it does not hold the discussion at
        /// all (the receiver then shares it again), else what it was last told.
        held: Option<Access>,
    },
    /// The last number of the federated log the receiver holds of `discussion`, a discussion
    /// the asker is home of: a home restored from a backup goes on after it.
    Head {
        /// The discussion.
        discussion: String,
    },
}

/// A piece of a file, the answer to [`Query::File`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// The whole file's size.
    pub total: u64,
    /// The bytes from the asked offset (empty at the end).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A person of the answering node, as its directory shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `login@node`.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Department.
    pub department: String,
}

impl Request {
    /// Link and nodes.
    pub fn address(&self) -> &Address {
        match self {
            Request::Hello { address, .. }
            | Request::Push { address, .. }
            | Request::Notice { address, .. }
            | Request::Presence { address, .. }
            | Request::Query { address, .. } => address,
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
    /// The sender, as home, refused for good an event the receiver submitted: it will never be
    /// stamped, and its author is told why.
    Refusal {
        /// The refused event's id.
        event: Hash,
        /// The discussion it was for.
        discussion: String,
        /// Its author, a user of the receiver.
        author: String,
        /// Why (at most [`MAX_REASON_BYTES`]).
        reason: String,
    },
    /// The sender, as home of the object discussion `discussion`, decided what these users of
    /// the receiver may do there now (who may see a business object is decided by the node
    /// that holds it). Not part of the discussion's log: each linked node hears only of its
    /// own users.
    Readers {
        /// The object discussion.
        discussion: String,
        /// At most [`MAX_READERS`] users of the receiver.
        users: Vec<Reader>,
    },
}

/// At most this many users in one [`Item::Readers`].
pub const MAX_READERS: usize = 1000;

/// What a user of the receiver may do in an object discussion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reader {
    /// `login@node`, a user of the receiver.
    pub user: String,
    /// `none`, `read` or `write`.
    pub access: Access,
}

/// How far a user may take part in an object discussion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Not at all (any more).
    None,
    /// Read only.
    Read,
    /// Read and write.
    Write,
}

/// The longest reason a refusal may give.
pub const MAX_REASON_BYTES: usize = 1000;

impl Item {
    /// What tells this item from any other: the SHA-256 of its CBOR encoding.
    pub fn digest(&self) -> Hash {
        let mut bytes = Vec::new();
        // Writing to a `Vec` cannot fail.
        let _ = ciborium::into_writer(self, &mut bytes);
        Hash::of(&bytes)
    }

    /// Bytes this item takes in a batch, roughly.
    pub fn weight(&self) -> usize {
        match self {
            Item::Submit { event } | Item::Stamped { event, .. } => {
                event.header.len() + event.body.as_ref().map_or(0, Vec::len) + 160
            }
            Item::Refusal {
                discussion,
                author,
                reason,
                ..
            } => discussion.len() + author.len() + reason.len() + 80,
            Item::Readers { discussion, users } => {
                discussion.len() + users.iter().map(|r| r.user.len() + 8).sum::<usize>() + 40
            }
        }
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
        /// The [`Item::digest`] of the item stored at `received`, so that a requester restored
        /// from a backup, which numbered other items the same, can tell.
        last: Option<Hash>,
    },
    /// Everything up to `upto` is stored; items that can never be accepted are listed, and
    /// count as received.
    Ack {
        /// The last contiguous `link_seq` stored.
        upto: u64,
        /// Items refused for good, with why.
        rejected: Vec<Rejected>,
    },
    /// The answer to a directory query, best first.
    Profiles {
        /// At most [`MAX_PROFILES`].
        profiles: Vec<Profile>,
    },
    /// The answer to a file query.
    Chunk(Chunk),
    /// The answer to a head query (`None`: the discussion is not held here).
    Head {
        /// The last number of the log held.
        seq: Option<u64>,
    },
    /// The answer to an object query: the object's discussion, which follows over the link,
    /// and what the user may do there.
    Object {
        /// The discussion's id.
        discussion: String,
        /// `read` or `write`.
        access: Access,
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

/// Why a query to a linked node got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No active link by that id.
    #[error("no active link by that id")]
    NoLink,
    /// The query itself is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The linked node cannot be reached now.
    #[error("the linked node cannot be reached now: {0}")]
    Unreachable(String),
    /// The linked node refused.
    #[error("the linked node refused: {0}")]
    Refused(String),
    /// The transport has stopped.
    #[error("the federation transport has stopped")]
    Stopped,
}
