//! The federation transport as the discussions and files services see it. This layer owns the
//! trait; `federation` implements it over the running libp2p transport, so nothing here
//! imports the federation service that sits above it.

use futures_util::future::BoxFuture;
use veche_federation::wire;
use veche_federation::wire::QueryError;

/// Links to other nodes: waking a link's outbox and asking its peer.
pub trait Links: Send + Sync + std::fmt::Debug {
    /// Tells the transport that `link`'s outbox has new items.
    fn wake(&self, link: &str);

    /// Asks the peer of `link` a question (the directory), if the peer is connected.
    fn query<'a>(
        &'a self,
        link: &'a str,
        query: wire::Query,
    ) -> BoxFuture<'a, Result<Vec<wire::Profile>, QueryError>>;

    /// Asks the peer of `link` for a piece of a file, if the peer is connected.
    fn fetch<'a>(
        &'a self,
        link: &'a str,
        discussion: &'a str,
        sha256: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<wire::Chunk, QueryError>>;

    /// Asks the peer of `link` for the discussion of one of its objects, for `user`.
    fn open_object<'a>(
        &'a self,
        link: &'a str,
        user: &'a str,
        object: (&'a str, &'a str, &'a str),
        held: Option<wire::Access>,
    ) -> BoxFuture<'a, Result<(String, wire::Access), QueryError>>;
}

/// No transport: offline administrator commands, which never reach another node.
#[derive(Debug, Default)]
pub struct NoLinks;

impl Links for NoLinks {
    fn wake(&self, _link: &str) {}

    fn query<'a>(
        &'a self,
        _link: &'a str,
        _query: wire::Query,
    ) -> BoxFuture<'a, Result<Vec<wire::Profile>, QueryError>> {
        Box::pin(async { Err(QueryError::Stopped) })
    }

    fn fetch<'a>(
        &'a self,
        _link: &'a str,
        _discussion: &'a str,
        _sha256: &'a str,
        _offset: u64,
    ) -> BoxFuture<'a, Result<wire::Chunk, QueryError>> {
        Box::pin(async { Err(QueryError::Stopped) })
    }

    fn open_object<'a>(
        &'a self,
        _link: &'a str,
        _user: &'a str,
        _object: (&'a str, &'a str, &'a str),
        _held: Option<wire::Access>,
    ) -> BoxFuture<'a, Result<(String, wire::Access), QueryError>> {
        Box::pin(async { Err(QueryError::Stopped) })
    }
}
