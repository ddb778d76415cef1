//! Federated events and the home node's stamps.
//!
//! An [`Event`] is a CBOR header signed by the node of its author, plus an optional body
//! covered by the header's `body_hash` (so a deleted message's body can be purged while its
//! header still verifies). The header is encoded once, by its origin, and never again: the
//! event id is the SHA-256 of those exact bytes, and every node stores and forwards them
//! verbatim.
//!
//! A [`Stamp`] is the home node's word on an event's place in its discussion: `seq`, the
//! event id, and the hash of the previous stamp, so a replica detects gaps, reordering and
//! forks by checking each stamp against its [`Head`].

use serde::{Deserialize, Serialize};

use crate::grant::Signed;
use crate::keys::{Hash, NodeKey, PublicKey, Purpose, SignatureError};

/// The version of the event and stamp formats.
pub const EVENT_FORMAT: u8 = 1;

/// The largest header accepted, in bytes.
pub const MAX_HEADER: usize = 16 * 1024;
/// The largest body accepted, in bytes.
pub const MAX_BODY: usize = 256 * 1024;

/// What an event says, as its origin signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHeader {
    /// [`EVENT_FORMAT`].
    pub format: u8,
    /// What happened: `message.post`, `message.edit`, `message.delete`, `reaction.add`,
    /// `reaction.remove`, `member.add`, `member.remove`, `discussion.title`, ...; the node
    /// interprets it.
    pub kind: String,
    /// The discussion, `<id>@<home node name>`.
    pub discussion: String,
    /// The node that sequences the discussion.
    pub home: String,
    /// The node that signed the event: its author's node.
    pub origin: String,
    /// `login@origin`.
    pub author: String,
    /// The origin's idempotency key: a retry by the same client is the same event.
    pub client_txn: String,
    /// When the author wrote it, by the origin's clock (Unix ms); informational only.
    pub created_at: i64,
    /// The event an edit, deletion or reaction is about.
    pub target: Option<Hash>,
    /// SHA-256 of the body, if there is one.
    pub body_hash: Option<Hash>,
    /// The body's length in bytes.
    pub body_len: u64,
}

/// An event as it travels: the signed header bytes, and the body if it was not purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventWire {
    /// The header's CBOR bytes, as signed.
    #[serde(with = "serde_bytes")]
    pub header: Vec<u8>,
    /// The origin node's signature over them.
    pub signature: crate::keys::Signature,
    /// The body, absent once purged.
    #[serde(with = "serde_bytes", default)]
    pub body: Option<Vec<u8>>,
}

/// Why an event or stamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not a header or stamp of this format, or too large.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The author does not belong to the node that signed the event.
    #[error("{author} does not belong to {origin}, which signed the event")]
    ForeignAuthor {
        /// The claimed author.
        author: String,
        /// The signing node.
        origin: String,
    },
    /// The event claims another origin than the node it came from.
    #[error("the event claims origin {claimed} but comes from {actual}")]
    WrongOrigin {
        /// What the header says.
        claimed: String,
        /// The node whose key is checked.
        actual: String,
    },
    /// The discussion's id names another home than the header.
    #[error("the discussion {discussion} does not belong to {home}")]
    WrongHome {
        /// The discussion.
        discussion: String,
        /// The claimed home.
        home: String,
    },
    /// The body does not match the header's hash or length.
    #[error("the body does not match its hash")]
    BodyMismatch,
    /// A signature does not verify.
    #[error("the {0} signature does not verify: {1}")]
    Signature(&'static str, SignatureError),
    /// A stamp names another event or discussion than the one it came with.
    #[error("the stamp is for another event or discussion")]
    StampMismatch,
}

/// Why a stamp does not follow a head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Already applied (or older).
    #[error("seq {seq} is at or below the head {head}")]
    Old {
        /// The stamp's seq.
        seq: u64,
        /// The head's seq.
        head: u64,
    },
    /// Events are missing before it.
    #[error("seq {seq} leaves a gap after {head}")]
    Gap {
        /// The stamp's seq.
        seq: u64,
        /// The head's seq.
        head: u64,
    },
    /// The right seq, but not chained to the head: the home signed two different histories.
    #[error("seq {seq} does not chain to the head: the home node forked its log")]
    Fork {
        /// The stamp's seq.
        seq: u64,
    },
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding to a Vec cannot fail");
    out
}

/// The node part of `login@node` (or `id@home` for a discussion); `None` unless there is
/// exactly one `@` with something on both sides.
pub fn node_of(id: &str) -> Option<&str> {
    match id.split_once('@') {
        Some((local, node)) if !local.is_empty() && !node.is_empty() && !node.contains('@') => {
            Some(node)
        }
        _ => None,
    }
}

/// A verified event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    wire: EventWire,
    header: EventHeader,
}

impl Event {
    /// Signs a new event as its origin. The header's body fields are filled from `body`.
    pub fn create(
        key: &NodeKey,
        mut header: EventHeader,
        body: Option<Vec<u8>>,
    ) -> Result<Self, EventError> {
        header.format = EVENT_FORMAT;
        header.body_hash = body.as_deref().map(Hash::of);
        header.body_len = body.as_ref().map_or(0, |b| b.len() as u64);
        check_author(&header)?;
        let bytes = encode(&header);
        if bytes.len() > MAX_HEADER || header.body_len > MAX_BODY as u64 {
            return Err(EventError::Malformed("event (too large)"));
        }
        let signature = key.sign(Purpose::Event, &bytes);
        Ok(Self {
            wire: EventWire {
                header: bytes,
                signature,
                body,
            },
            header,
        })
    }

    /// Verifies an event received from `origin` (name and key as the link grant binds them):
    /// the header names that origin, its author is that origin's user, the signature holds,
    /// and the body, if present, matches.
    pub fn verify(wire: EventWire, origin: &str, key: &PublicKey) -> Result<Self, EventError> {
        let header = Self::peek(&wire)?;
        if header.origin != origin {
            return Err(EventError::WrongOrigin {
                claimed: header.origin,
                actual: origin.to_owned(),
            });
        }
        check_author(&header)?;
        key.verify(Purpose::Event, &wire.header, &wire.signature)
            .map_err(|e| EventError::Signature("event", e))?;
        if let Some(body) = &wire.body
            && (header.body_hash != Some(Hash::of(body)) || header.body_len != body.len() as u64)
        {
            return Err(EventError::BodyMismatch);
        }
        Ok(Self { wire, header })
    }

    /// An event this node verified before storing it, read back from storage: nothing is
    /// checked again but its form.
    pub fn stored(wire: EventWire) -> Result<Self, EventError> {
        let header = Self::peek(&wire)?;
        Ok(Self { wire, header })
    }

    /// Decodes a header without verifying anything, to find out whose key checks it.
    pub fn peek(wire: &EventWire) -> Result<EventHeader, EventError> {
        if wire.header.len() > MAX_HEADER || wire.body.as_ref().is_some_and(|b| b.len() > MAX_BODY)
        {
            return Err(EventError::Malformed("event (too large)"));
        }
        let header: EventHeader = ciborium::from_reader(wire.header.as_slice())
            .map_err(|_| EventError::Malformed("event header"))?;
        if header.format != EVENT_FORMAT {
            return Err(EventError::Malformed("event header (unknown format)"));
        }
        Ok(header)
    }

    /// The event id: SHA-256 of the signed header bytes.
    pub fn id(&self) -> Hash {
        Hash::of(&self.wire.header)
    }

    /// The header.
    pub fn header(&self) -> &EventHeader {
        &self.header
    }

    /// The body, unless purged.
    pub fn body(&self) -> Option<&[u8]> {
        self.wire.body.as_deref()
    }

    /// The event as it travels.
    pub fn wire(&self) -> &EventWire {
        &self.wire
    }

    /// The same event without its body (a tombstone); the header still verifies.
    pub fn purged(&self) -> Self {
        let mut wire = self.wire.clone();
        wire.body = None;
        Self {
            wire,
            header: self.header.clone(),
        }
    }
}

fn check_author(header: &EventHeader) -> Result<(), EventError> {
    if node_of(&header.discussion) != Some(header.home.as_str()) {
        return Err(EventError::WrongHome {
            discussion: header.discussion.clone(),
            home: header.home.clone(),
        });
    }
    if node_of(&header.author) != Some(header.origin.as_str()) {
        return Err(EventError::ForeignAuthor {
            author: header.author.clone(),
            origin: header.origin.clone(),
        });
    }
    Ok(())
}

/// A home node's stamp: this event is number `seq` of this discussion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StampBody {
    /// [`EVENT_FORMAT`].
    pub format: u8,
    /// The discussion.
    pub discussion: String,
    /// The event's place, from 1, gapless.
    pub seq: u64,
    /// The event's id.
    pub event: Hash,
    /// The key that signed the event, as the home checked it. A replica linked to the
    /// event's origin checks it against the key its own grant names; one that is not trusts
    /// the home for it.
    pub origin_key: PublicKey,
    /// The hash of the stamp at `seq - 1` (all zeros for the first).
    pub prev: Hash,
    /// When the home accepted it (Unix ms); the time that counts for key validity.
    pub accepted_at: i64,
}

/// A verified stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    signed: Signed,
    body: StampBody,
}

impl Stamp {
    /// Signs a stamp as the home node.
    pub fn create(key: &NodeKey, mut body: StampBody) -> Self {
        body.format = EVENT_FORMAT;
        let bytes = encode(&body);
        let signature = key.sign(Purpose::Stamp, &bytes);
        Self {
            signed: Signed { bytes, signature },
            body,
        }
    }

    /// Verifies a stamp signed by the discussion's home, whose key is `home`.
    pub fn verify(signed: Signed, home: &PublicKey) -> Result<Self, EventError> {
        if signed.bytes.len() > MAX_HEADER {
            return Err(EventError::Malformed("stamp (too large)"));
        }
        let body: StampBody = ciborium::from_reader(signed.bytes.as_slice())
            .map_err(|_| EventError::Malformed("stamp"))?;
        if body.format != EVENT_FORMAT {
            return Err(EventError::Malformed("stamp (unknown format)"));
        }
        home.verify(Purpose::Stamp, &signed.bytes, &signed.signature)
            .map_err(|e| EventError::Signature("stamp", e))?;
        Ok(Self { signed, body })
    }

    /// A stamp this node verified before storing it, read back from storage: nothing is
    /// checked again but its form.
    pub fn stored(signed: Signed) -> Result<Self, EventError> {
        let body: StampBody = ciborium::from_reader(signed.bytes.as_slice())
            .map_err(|_| EventError::Malformed("stamp"))?;
        Ok(Self { signed, body })
    }

    /// The stamp's content.
    pub fn body(&self) -> &StampBody {
        &self.body
    }

    /// The bytes and signature, as sent.
    pub fn signed(&self) -> &Signed {
        &self.signed
    }

    /// What the next stamp must name as `prev`.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.signed.bytes)
    }

    /// Checks that this stamp is for `event` in the discussion the event names.
    pub fn check_event(&self, event: &Event) -> Result<(), EventError> {
        if self.body.event != event.id() || self.body.discussion != event.header().discussion {
            return Err(EventError::StampMismatch);
        }
        Ok(())
    }
}

/// Where a discussion's log ends, as a replica knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Head {
    /// The last applied seq (0: none).
    pub seq: u64,
    /// That stamp's hash (zeros for none).
    pub hash: Hash,
}

impl Head {
    /// Checks that `stamp` comes right after this head; the new head if so.
    pub fn next(&self, stamp: &Stamp) -> Result<Head, ChainError> {
        let seq = stamp.body.seq;
        if seq <= self.seq {
            return Err(ChainError::Old {
                seq,
                head: self.seq,
            });
        }
        if seq > self.seq + 1 {
            return Err(ChainError::Gap {
                seq,
                head: self.seq,
            });
        }
        if stamp.body.prev != self.hash {
            return Err(ChainError::Fork { seq });
        }
        Ok(Head {
            seq,
            hash: stamp.hash(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(author: &str, origin: &str) -> EventHeader {
        EventHeader {
            format: EVENT_FORMAT,
            kind: "message.post".into(),
            discussion: "0123456789abcdef0123456789abcdef@hq".into(),
            home: "hq".into(),
            origin: origin.into(),
            author: author.into(),
            client_txn: "txn-1".into(),
            created_at: 1_795_000_000_000,
            target: None,
            body_hash: None,
            body_len: 0,
        }
    }

    /// Fixed keys and fields give fixed bytes, signatures and ids: another implementation (or
    /// a future version of this one) must reproduce them exactly.
    #[test]
    fn golden_vectors() {
        let origin = NodeKey::from_secret([0x11; 32]);
        let home = NodeKey::from_secret([0x22; 32]);
        let event = Event::create(
            &origin,
            header("anna@branch", "branch"),
            Some(b"{\"text\":\"hello\"}".to_vec()),
        )
        .unwrap();
        let stamp = Stamp::create(
            &home,
            StampBody {
                format: EVENT_FORMAT,
                discussion: event.header().discussion.clone(),
                seq: 1,
                event: event.id(),
                origin_key: origin.public(),
                prev: Hash::default(),
                accepted_at: 1_795_000_000_500,
            },
        );
        let vectors = [
            ("origin public key", hex::encode(origin.public().0)),
            ("origin node id", origin.public().node_id().to_string()),
            ("header bytes", hex::encode(&event.wire().header)),
            ("event signature", hex::encode(event.wire().signature.0)),
            ("event id", event.id().to_hex()),
            ("stamp bytes", hex::encode(&stamp.signed().bytes)),
            ("stamp signature", hex::encode(stamp.signed().signature.0)),
            ("stamp hash", stamp.hash().to_hex()),
        ];
        let expected = include_str!("../testdata/golden.txt");
        let actual: String = vectors
            .iter()
            .map(|(name, value)| format!("{name}: {value}\n"))
            .collect();
        assert_eq!(actual, expected, "golden vectors changed");
        // The vectors verify with an independent verifier: libp2p's own ed25519.
        #[cfg(feature = "net")]
        {
            let p2p =
                libp2p::identity::ed25519::PublicKey::try_from_bytes(&origin.public().0).unwrap();
            let mut message = b"veche-fed/v1/event\0".to_vec();
            message.extend_from_slice(&event.wire().header);
            assert!(p2p.verify(&message, &event.wire().signature.0));
        }
    }

    #[test]
    fn events_verify_only_from_their_origin_and_with_their_body() {
        let branch = NodeKey::from_secret([1; 32]);
        let other = NodeKey::from_secret([2; 32]);
        let event = Event::create(
            &branch,
            header("anna@branch", "branch"),
            Some(b"hi".to_vec()),
        )
        .unwrap();
        let ok = Event::verify(event.wire().clone(), "branch", &branch.public()).unwrap();
        assert_eq!(ok.id(), event.id());
        // Purging the body keeps the header verifiable, and the id.
        let tomb =
            Event::verify(event.purged().wire().clone(), "branch", &branch.public()).unwrap();
        assert_eq!(tomb.id(), event.id());
        assert_eq!(tomb.body(), None);
        // Another body under the same header.
        let mut wire = event.wire().clone();
        wire.body = Some(b"ho".to_vec());
        assert_eq!(
            Event::verify(wire, "branch", &branch.public()).unwrap_err(),
            EventError::BodyMismatch
        );
        // Relayed by another node, or checked with another key.
        assert!(matches!(
            Event::verify(event.wire().clone(), "partner", &other.public()),
            Err(EventError::WrongOrigin { .. })
        ));
        assert!(matches!(
            Event::verify(event.wire().clone(), "branch", &other.public()),
            Err(EventError::Signature("event", _))
        ));
        // A node cannot author for another node's users.
        assert!(matches!(
            Event::create(&branch, header("boris@hq", "branch"), None),
            Err(EventError::ForeignAuthor { .. })
        ));
        assert!(matches!(
            Event::create(&branch, header("a@b@branch", "branch"), None),
            Err(EventError::ForeignAuthor { .. })
        ));
        // The discussion's id names its home; a header cannot claim another.
        let mut elsewhere = header("anna@branch", "branch");
        elsewhere.home = "partner".into();
        assert!(matches!(
            Event::create(&branch, elsewhere, None),
            Err(EventError::WrongHome { .. })
        ));
    }

    #[test]
    fn heads_detect_gaps_replays_and_forks() {
        let home = NodeKey::from_secret([3; 32]);
        let stamp = |seq: u64, prev: Hash| {
            Stamp::create(
                &home,
                StampBody {
                    format: EVENT_FORMAT,
                    discussion: "d@hq".into(),
                    seq,
                    event: Hash::of(&seq.to_be_bytes()),
                    origin_key: home.public(),
                    prev,
                    accepted_at: 0,
                },
            )
        };
        let s1 = stamp(1, Hash::default());
        let head = Head::default().next(&s1).unwrap();
        let s2 = stamp(2, s1.hash());
        let head2 = head.next(&s2).unwrap();
        assert_eq!(head2.seq, 2);
        assert_eq!(head2.next(&s2), Err(ChainError::Old { seq: 2, head: 2 }));
        assert_eq!(
            head.next(&stamp(3, s2.hash())),
            Err(ChainError::Gap { seq: 3, head: 1 })
        );
        assert_eq!(
            head.next(&stamp(2, Hash::default())),
            Err(ChainError::Fork { seq: 2 })
        );
        let read = Stamp::verify(s2.signed().clone(), &home.public()).unwrap();
        assert_eq!(read, s2);
        assert!(
            Stamp::verify(s2.signed().clone(), &NodeKey::from_secret([4; 32]).public()).is_err()
        );
    }
}
