-- PostgreSQL twin of migrations/sqlite/0008_federation.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- Federation: links with other nodes and their delivery queues.

-- Offers this node made and the other side has not answered yet.
CREATE TABLE fed_offers (
    link TEXT PRIMARY KEY,
    offer TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Links: the grant as both administrators signed it, and the delivery counters.
CREATE TABLE fed_links (
    link TEXT PRIMARY KEY,
    grant_text TEXT NOT NULL,
    peer_node TEXT NOT NULL,
    peer_key BYTEA NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'ended')),
    -- The scope in force (JSON): the grant's, or narrower after a one-sided notice.
    scope TEXT NOT NULL,
    ended_reason TEXT,
    -- The last link_seq given to an outbox item.
    out_last BIGINT NOT NULL DEFAULT 0,
    -- The last link_seq the peer has stored.
    acked BIGINT NOT NULL DEFAULT 0,
    -- The last link_seq stored from the peer.
    received BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    ended_at BIGINT
);
-- One active link per peer node, by name and by key.
CREATE UNIQUE INDEX fed_links_active_peer ON fed_links (peer_node) WHERE state = 'active';
CREATE UNIQUE INDEX fed_links_active_key ON fed_links (peer_key) WHERE state = 'active';

-- Items for the peer, until it has stored them.
CREATE TABLE fed_outbox (
    link TEXT NOT NULL REFERENCES fed_links (link) ON DELETE CASCADE,
    link_seq BIGINT NOT NULL,
    item BYTEA NOT NULL,
    PRIMARY KEY (link, link_seq)
);

-- Items from the peer, in its order, until applied; `refused` (by the transport) or `error` (by
-- the node) says why one never will be.
CREATE TABLE fed_inbox (
    link TEXT NOT NULL REFERENCES fed_links (link) ON DELETE CASCADE,
    link_seq BIGINT NOT NULL,
    item BYTEA NOT NULL,
    refused TEXT,
    received_at BIGINT NOT NULL,
    -- When it was applied (or found unusable: then `error` says why).
    processed_at BIGINT,
    error TEXT,
    PRIMARY KEY (link, link_seq)
);

-- Groups this node is home of, shared over links.
CREATE TABLE fed_shares (
    discussion_id TEXT NOT NULL REFERENCES discussions (id),
    link TEXT NOT NULL REFERENCES fed_links (link),
    shared_at BIGINT NOT NULL,
    PRIMARY KEY (discussion_id, link)
);

-- The federated log of every shared discussion, on its home and on replicas: each event and
-- its home's stamp (CBOR, exactly as signed), numbered without gaps from where this node
-- joined.
CREATE TABLE fed_log (
    discussion_id TEXT NOT NULL,
    fseq BIGINT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    message_id TEXT,
    stamp BYTEA NOT NULL,
    event BYTEA NOT NULL,
    PRIMARY KEY (discussion_id, fseq)
);
CREATE INDEX fed_log_by_message ON fed_log (message_id);

-- What local users wrote in other homes' discussions, by their exactly-once key.
CREATE TABLE fed_pending (
    event_id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    discussion_id TEXT NOT NULL,
    author TEXT NOT NULL,
    device_id TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (author, device_id, client_msg_id)
);
