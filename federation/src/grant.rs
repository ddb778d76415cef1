//! Link grants: the two administrators' signed agreement that their nodes may talk.
//!
//! 1. **Offer.** A's administrator signs [`Terms`] (scope, validity, A's key, name and addresses,
//!    a nonce) and sends the text out of band.
//! 2. **Accept.** B's administrator reviews it, adds B's [`Party`] and countersigns: that is the
//!    [`Grant`]. B's node allows A's key from then on.
//! 3. **Confirm.** A's administrator imports the grant; A's node checks that it answers an offer
//!    A made, and allows B's key.
//!
//! Both administrators compare [`fingerprint`]s over the phone. Blobs hold public data only:
//! integrity matters, secrecy does not. Nothing in a grant is ever re-encoded: the signed bytes
//! travel and are stored as they were made.

use serde::{Deserialize, Serialize};

use crate::keys::{Hash, NodeKey, PublicKey, Purpose, Signature, SignatureError};

/// The version of the offer and acceptance formats.
pub const GRANT_FORMAT: u8 = 1;

const OFFER_PREFIX: &str = "veche-link-offer:";
const GRANT_PREFIX: &str = "veche-link-grant:";
const NOTICE_PREFIX: &str = "veche-link-notice:";

/// One side of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// The node's name: the part after `@` in its users' ids. Only this party may speak for
    /// users of that name.
    pub node: String,
    /// The node's key (its libp2p identity).
    pub key: PublicKey,
    /// Where the node listens, as libp2p multiaddrs; the only addresses the other side dials.
    pub addresses: Vec<String>,
    /// The organisation, as people know it.
    pub organisation: String,
    /// Whom to call about the link.
    pub contact: String,
}

/// Two offices of one company, or two companies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relationship {
    /// The same company: discussions may be shared without the other side approving each one.
    Branch,
    /// Another company.
    Partner,
}

/// Which users of one node the other may look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryScope {
    /// Nobody beyond the authors of shared messages.
    None,
    /// Members of shared discussions.
    Members,
    /// The whole user directory.
    Full,
}

/// What a link carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Object discussions (about invoices, customers) may be shared, not only dialogs and groups.
    pub object_discussions: bool,
    /// The user directory the other side may search.
    pub directory: DirectoryScope,
    /// Presence travels.
    pub presence: bool,
    /// Files travel, up to this size in MiB (0: no files).
    pub max_file_mb: u64,
}

impl Scope {
    /// What both `self` and `other` allow: two one-sided narrowings together.
    pub fn meet(&self, other: &Scope) -> Scope {
        Scope {
            object_discussions: self.object_discussions && other.object_discussions,
            directory: self.directory.min(other.directory),
            presence: self.presence && other.presence,
            max_file_mb: self.max_file_mb.min(other.max_file_mb),
        }
    }

    /// Whether `self` allows nothing that `wider` does not: a narrowing may be made by one side.
    pub fn is_within(&self, wider: &Scope) -> bool {
        (!self.object_discussions || wider.object_discussions)
            && self.directory <= wider.directory
            && (!self.presence || wider.presence)
            && self.max_file_mb <= wider.max_file_mb
    }
}

/// What the offering administrator proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// [`GRANT_FORMAT`].
    pub format: u8,
    /// The link's id: 32 hex digits, random.
    pub link: String,
    /// Grows with every renewal of the same link (wider scope, longer validity).
    pub version: u32,
    /// Branch or partner.
    pub relationship: Relationship,
    /// What the link carries.
    pub scope: Scope,
    /// Valid from (Unix milliseconds).
    pub not_before: i64,
    /// Valid until (Unix milliseconds); after it the link behaves as revoked.
    pub not_after: i64,
    /// Random, so that two offers are never the same bytes.
    pub nonce: String,
    /// The offering node.
    pub offerer: Party,
}

/// What the accepting administrator adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedTerms {
    /// [`GRANT_FORMAT`].
    pub format: u8,
    /// The hash of the offer's signed bytes.
    pub offer: Hash,
    /// The accepting node.
    pub acceptor: Party,
}

/// Bytes and the signature over them, exactly as made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The CBOR bytes that were signed.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// The signature.
    pub signature: Signature,
}

/// Why an offer, grant or notice was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The text is not an offer, grant or notice of this format.
    #[error("not a readable link {0}")]
    Malformed(&'static str),
    /// A signature does not verify.
    #[error("the {0} signature does not verify: {1}")]
    Signature(&'static str, SignatureError),
    /// Outside its validity.
    #[error("the link offer is not valid now (valid from {not_before} until {not_after}, Unix ms)")]
    Expired {
        /// Valid from.
        not_before: i64,
        /// Valid until.
        not_after: i64,
    },
    /// A node tried to link with itself, or both sides use one key or one name.
    #[error("both sides of a link must be different nodes")]
    SameNode,
    /// The acceptance answers another offer.
    #[error("the acceptance answers another offer")]
    WrongOffer,
    /// The key signing an acceptance is not the acceptor's, or the one accepting is not us.
    #[error("the signing key is not the party's key")]
    WrongKey,
    /// A notice is for another link or signed by neither party.
    #[error("the notice is not from a party of this link")]
    NotAParty,
    /// A narrowing widens something.
    #[error("a one-sided change may only narrow the scope")]
    Widens,
}

/// Whether `name` is a node name as users' ids carry it: lower-case ASCII letters, digits,
/// `-` and `.`, starting with a letter or digit, at most 253 characters (no look-alikes).
pub fn is_node_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && !b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || *c == b'.' || *c == b'-')
        && !name.ends_with('.')
        && !name.contains("..")
}

fn check_party(p: &Party) -> Result<(), GrantError> {
    if !is_node_name(&p.node) {
        return Err(GrantError::Malformed("party (node name)"));
    }
    if p.addresses.len() > 16
        || p.addresses.iter().any(|a| a.len() > 256)
        || p.organisation.len() > 256
        || p.contact.len() > 256
    {
        return Err(GrantError::Malformed("party (too long)"));
    }
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding to a Vec cannot fail");
    out
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &'static str) -> Result<T, GrantError> {
    ciborium::from_reader(bytes).map_err(|_| GrantError::Malformed(what))
}

fn armor(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}{}", data_encoding::BASE64URL_NOPAD.encode(bytes))
}

fn unarmor(prefix: &str, text: &str, what: &'static str) -> Result<Vec<u8>, GrantError> {
    let body = text
        .trim()
        .strip_prefix(prefix)
        .ok_or(GrantError::Malformed(what))?;
    if body.len() > 64 * 1024 {
        return Err(GrantError::Malformed(what));
    }
    data_encoding::BASE64URL_NOPAD
        .decode(body.as_bytes())
        .map_err(|_| GrantError::Malformed(what))
}

/// A short fingerprint for people to compare: 80 bits of the hash, four groups of four.
pub fn fingerprint(bytes: &[u8]) -> String {
    let hash = Hash::of(bytes);
    let text = data_encoding::BASE32_NOPAD.encode(&hash.0[..10]);
    text.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// A signed offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    signed: Signed,
    terms: Terms,
}

impl Offer {
    /// Signs `terms` with the offerer's key, which must be the one the terms name.
    pub fn create(key: &NodeKey, terms: Terms) -> Result<Self, GrantError> {
        if terms.offerer.key != key.public() {
            return Err(GrantError::WrongKey);
        }
        let bytes = encode(&terms);
        let signature = key.sign(Purpose::Grant, &bytes);
        Ok(Self {
            signed: Signed { bytes, signature },
            terms,
        })
    }

    fn from_signed(signed: Signed) -> Result<Self, GrantError> {
        let terms: Terms = decode(&signed.bytes, "offer")?;
        let link_ok = terms.link.len() == 32
            && terms
                .link
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if terms.format != GRANT_FORMAT || !link_ok || terms.nonce.len() > 64 {
            return Err(GrantError::Malformed("offer"));
        }
        check_party(&terms.offerer)?;
        terms
            .offerer
            .key
            .verify(Purpose::Grant, &signed.bytes, &signed.signature)
            .map_err(|e| GrantError::Signature("offer", e))?;
        Ok(Self { signed, terms })
    }

    /// Reads and verifies an offer's text.
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        let bytes = unarmor(OFFER_PREFIX, text, "offer")?;
        Self::from_signed(decode(&bytes, "offer")?)
    }

    /// The text to send to the other administrator.
    pub fn to_text(&self) -> String {
        armor(OFFER_PREFIX, &encode(&self.signed))
    }

    /// What is offered.
    pub fn terms(&self) -> &Terms {
        &self.terms
    }

    /// The hash of the signed bytes.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.signed.bytes)
    }

    /// What both administrators read out to each other.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.signed.bytes)
    }

    /// Countersigns the offer as `acceptor`, whose key `key` must be.
    pub fn accept(&self, key: &NodeKey, acceptor: Party, now: i64) -> Result<Grant, GrantError> {
        check_time(&self.terms, now)?;
        if acceptor.key != key.public() {
            return Err(GrantError::WrongKey);
        }
        check_party(&acceptor)?;
        let accepted = AcceptedTerms {
            format: GRANT_FORMAT,
            offer: self.hash(),
            acceptor,
        };
        let bytes = encode(&accepted);
        let signature = key.sign(Purpose::Grant, &bytes);
        let grant = Grant {
            offer: self.clone(),
            acceptance: Signed { bytes, signature },
            accepted,
        };
        grant.check_parties()?;
        Ok(grant)
    }
}

fn check_time(terms: &Terms, now: i64) -> Result<(), GrantError> {
    if now < terms.not_before || now >= terms.not_after {
        return Err(GrantError::Expired {
            not_before: terms.not_before,
            not_after: terms.not_after,
        });
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantWire {
    offer: Signed,
    acceptance: Signed,
}

/// An offer with its acceptance: both signatures over bytes kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    offer: Offer,
    acceptance: Signed,
    accepted: AcceptedTerms,
}

impl Grant {
    /// Reads and verifies a grant's text: both signatures, the offer it answers, two nodes.
    /// Validity in time is checked by [`Grant::check_time`], since a stored grant is re-read
    /// after it expired.
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        let bytes = unarmor(GRANT_PREFIX, text, "grant")?;
        let wire: GrantWire = decode(&bytes, "grant")?;
        let offer = Offer::from_signed(wire.offer)?;
        let accepted: AcceptedTerms = decode(&wire.acceptance.bytes, "acceptance")?;
        if accepted.format != GRANT_FORMAT {
            return Err(GrantError::Malformed("acceptance"));
        }
        check_party(&accepted.acceptor)?;
        accepted
            .acceptor
            .key
            .verify(
                Purpose::Grant,
                &wire.acceptance.bytes,
                &wire.acceptance.signature,
            )
            .map_err(|e| GrantError::Signature("acceptance", e))?;
        if accepted.offer != offer.hash() {
            return Err(GrantError::WrongOffer);
        }
        let grant = Self {
            offer,
            acceptance: wire.acceptance,
            accepted,
        };
        grant.check_parties()?;
        Ok(grant)
    }

    fn check_parties(&self) -> Result<(), GrantError> {
        let (a, b) = (&self.offer.terms.offerer, &self.accepted.acceptor);
        if a.key == b.key || a.node == b.node {
            return Err(GrantError::SameNode);
        }
        Ok(())
    }

    /// The text to send back to the offering administrator, and to store.
    pub fn to_text(&self) -> String {
        armor(
            GRANT_PREFIX,
            &encode(&GrantWire {
                offer: self.offer.signed.clone(),
                acceptance: self.acceptance.clone(),
            }),
        )
    }

    /// The offer this grant accepts.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The offered terms.
    pub fn terms(&self) -> &Terms {
        &self.offer.terms
    }

    /// The link's id.
    pub fn link(&self) -> &str {
        &self.offer.terms.link
    }

    /// The offering node.
    pub fn offerer(&self) -> &Party {
        &self.offer.terms.offerer
    }

    /// The accepting node.
    pub fn acceptor(&self) -> &Party {
        &self.accepted.acceptor
    }

    /// The party with `key`, if either.
    pub fn party(&self, key: &PublicKey) -> Option<&Party> {
        [self.offerer(), self.acceptor()]
            .into_iter()
            .find(|p| p.key == *key)
    }

    /// The other party, seen from `me`; `None` if `me` is not a party.
    pub fn peer_of(&self, me: &PublicKey) -> Option<&Party> {
        if self.offerer().key == *me {
            Some(self.acceptor())
        } else if self.acceptor().key == *me {
            Some(self.offerer())
        } else {
            None
        }
    }

    /// Identifies this exact grant: both nodes present it when they connect.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.acceptance.bytes)
    }

    /// What both administrators read out to each other after accepting.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.acceptance.bytes)
    }

    /// Whether the grant is within its validity at `now` (Unix ms).
    pub fn check_time(&self, now: i64) -> Result<(), GrantError> {
        check_time(&self.offer.terms, now)
    }
}

/// A one-sided change to a link, signed by one party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// The link.
    pub link: String,
    /// The grant it applies to.
    pub grant: Hash,
    /// When (Unix ms).
    pub at: i64,
    /// What changes.
    pub change: Change,
}

/// What a [`Notice`] changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// The link ends: the other side stops retrying.
    Revoke {
        /// Why, for the other administrator.
        reason: String,
    },
    /// The scope becomes narrower.
    Narrow {
        /// The new scope, within the current one.
        scope: Scope,
    },
}

/// A notice with its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNotice {
    signed: Signed,
    notice: Notice,
}

impl SignedNotice {
    /// Signs `notice` as a party of `grant`; a narrowing must be within `current`.
    pub fn create(
        key: &NodeKey,
        grant: &Grant,
        current: &Scope,
        notice: Notice,
    ) -> Result<Self, GrantError> {
        if grant.party(&key.public()).is_none() || notice.grant != grant.hash() {
            return Err(GrantError::NotAParty);
        }
        if let Change::Narrow { scope } = &notice.change
            && !scope.is_within(current)
        {
            return Err(GrantError::Widens);
        }
        let bytes = encode(&notice);
        let signature = key.sign(Purpose::LinkNotice, &bytes);
        Ok(Self {
            signed: Signed { bytes, signature },
            notice,
        })
    }

    /// Verifies a notice received for `grant`: signed by `from`, who must be a party, and, for a
    /// narrowing, within `current`.
    pub fn verify(
        signed: Signed,
        grant: &Grant,
        from: &PublicKey,
        current: &Scope,
    ) -> Result<Self, GrantError> {
        let notice: Notice = decode(&signed.bytes, "notice")?;
        if grant.party(from).is_none()
            || notice.link != grant.link()
            || notice.grant != grant.hash()
        {
            return Err(GrantError::NotAParty);
        }
        from.verify(Purpose::LinkNotice, &signed.bytes, &signed.signature)
            .map_err(|e| GrantError::Signature("notice", e))?;
        if let Change::Narrow { scope } = &notice.change
            && !scope.is_within(current)
        {
            return Err(GrantError::Widens);
        }
        Ok(Self { signed, notice })
    }

    /// The notice.
    pub fn notice(&self) -> &Notice {
        &self.notice
    }

    /// The bytes and signature, as sent.
    pub fn signed(&self) -> &Signed {
        &self.signed
    }

    /// The text form, for the administrator's records.
    pub fn to_text(&self) -> String {
        armor(NOTICE_PREFIX, &encode(&self.signed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn party(key: &NodeKey, node: &str) -> Party {
        Party {
            node: node.into(),
            key: key.public(),
            addresses: vec!["/ip4/127.0.0.1/tcp/1".into()],
            organisation: format!("{node} org"),
            contact: "admin@example.com".into(),
        }
    }

    pub(crate) fn terms(key: &NodeKey, node: &str) -> Terms {
        Terms {
            format: GRANT_FORMAT,
            link: "00112233445566778899aabbccddeeff".into(),
            version: 1,
            relationship: Relationship::Branch,
            scope: Scope {
                object_discussions: true,
                directory: DirectoryScope::Members,
                presence: true,
                max_file_mb: 10,
            },
            not_before: 1_000,
            not_after: 10_000,
            nonce: "n".into(),
            offerer: party(key, node),
        }
    }

    #[test]
    fn offer_accept_and_parse_round_trip() {
        let (a, b) = (NodeKey::from_secret([1; 32]), NodeKey::from_secret([2; 32]));
        let offer = Offer::create(&a, terms(&a, "hq")).unwrap();
        let read = Offer::parse(&offer.to_text()).unwrap();
        assert_eq!(read, offer);
        assert_eq!(read.fingerprint(), offer.fingerprint());
        assert_eq!(offer.fingerprint().len(), 19);
        let grant = read.accept(&b, party(&b, "branch"), 5_000).unwrap();
        let back = Grant::parse(&grant.to_text()).unwrap();
        assert_eq!(back, grant);
        assert_eq!(back.peer_of(&a.public()).unwrap().node, "branch");
        assert_eq!(back.peer_of(&b.public()).unwrap().node, "hq");
        assert!(
            back.peer_of(&NodeKey::from_secret([3; 32]).public())
                .is_none()
        );
    }

    #[test]
    fn tampering_expiry_and_self_links_are_refused() {
        let (a, b) = (NodeKey::from_secret([1; 32]), NodeKey::from_secret([2; 32]));
        let offer = Offer::create(&a, terms(&a, "hq")).unwrap();
        assert!(matches!(
            offer.accept(&b, party(&b, "branch"), 10_000),
            Err(GrantError::Expired { .. })
        ));
        assert_eq!(
            offer.accept(&a, party(&a, "hq2"), 5_000).unwrap_err(),
            GrantError::SameNode
        );
        assert_eq!(
            offer.accept(&b, party(&a, "x"), 5_000).unwrap_err(),
            GrantError::WrongKey
        );
        // Someone widens the scope in transit: the offerer's signature no longer holds.
        let mut signed = offer.signed.clone();
        let mut t = offer.terms.clone();
        t.scope.directory = DirectoryScope::Full;
        signed.bytes = encode(&t);
        let text = armor(OFFER_PREFIX, &encode(&signed));
        assert!(matches!(
            Offer::parse(&text),
            Err(GrantError::Signature("offer", SignatureError::Invalid))
        ));
        assert!(matches!(
            Offer::parse("veche-link-offer:!!"),
            Err(GrantError::Malformed(_))
        ));
        // An acceptance grafted onto another offer.
        let grant = offer.accept(&b, party(&b, "branch"), 5_000).unwrap();
        let mut other_terms = terms(&a, "hq");
        other_terms.nonce = "other".into();
        let other = Offer::create(&a, other_terms).unwrap();
        let forged = armor(
            GRANT_PREFIX,
            &encode(&GrantWire {
                offer: other.signed.clone(),
                acceptance: grant.acceptance.clone(),
            }),
        );
        assert_eq!(Grant::parse(&forged).unwrap_err(), GrantError::WrongOffer);
    }

    #[test]
    fn notices_narrow_but_never_widen() {
        let (a, b) = (NodeKey::from_secret([1; 32]), NodeKey::from_secret([2; 32]));
        let grant = Offer::create(&a, terms(&a, "hq"))
            .unwrap()
            .accept(&b, party(&b, "branch"), 5_000)
            .unwrap();
        let current = grant.terms().scope.clone();
        let mut narrower = current.clone();
        narrower.presence = false;
        let notice = Notice {
            link: grant.link().into(),
            grant: grant.hash(),
            at: 6_000,
            change: Change::Narrow {
                scope: narrower.clone(),
            },
        };
        let signed = SignedNotice::create(&b, &grant, &current, notice.clone()).unwrap();
        let read =
            SignedNotice::verify(signed.signed().clone(), &grant, &b.public(), &current).unwrap();
        assert_eq!(read.notice(), &notice);
        // Signed by b, claimed to come from a.
        assert!(matches!(
            SignedNotice::verify(signed.signed().clone(), &grant, &a.public(), &current),
            Err(GrantError::Signature(..))
        ));
        let mut wider = current.clone();
        wider.directory = DirectoryScope::Full;
        let widen = Notice {
            change: Change::Narrow { scope: wider },
            ..notice
        };
        assert_eq!(
            SignedNotice::create(&b, &grant, &current, widen).unwrap_err(),
            GrantError::Widens
        );
        let stranger = NodeKey::from_secret([5; 32]);
        let revoke = Notice {
            link: grant.link().into(),
            grant: grant.hash(),
            at: 7_000,
            change: Change::Revoke { reason: "x".into() },
        };
        assert_eq!(
            SignedNotice::create(&stranger, &grant, &current, revoke).unwrap_err(),
            GrantError::NotAParty
        );
    }
}
