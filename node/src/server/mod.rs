//! The QUIC listener: transport limits, per-address connection caps, and one task per
//! connection (see `connection`).

pub(crate) mod connection;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veche_protocol::close;

use crate::config::{QuicConfig, ServerConfig};
use crate::identity::QuicKeys;
use crate::services::Services;
use crate::tls::{TlsError, TlsMaterial};

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// QUIC refused the TLS configuration.
    #[error("QUIC refused the TLS configuration: {0}")]
    Crypto(String),
    /// Binding the UDP socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// The QUIC endpoint. `keys` must survive restarts (see `NodeIdentity::quic_keys`), or the
/// clients of a node that crashed wait for their idle timeout.
pub(crate) fn endpoint(
    tls: &TlsMaterial,
    server: &ServerConfig,
    quic: &QuicConfig,
    keys: QuicKeys,
) -> Result<quinn::Endpoint, ListenError> {
    let crypto = QuicServerConfig::try_from(tls.server_config()?)
        .map_err(|e| ListenError::Crypto(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quic.max_bidi_streams.into())
        .max_concurrent_uni_streams(quic.max_uni_streams.into())
        .stream_receive_window(quic.stream_receive_window.into())
        .receive_window(quic.receive_window.into())
        .send_window(u64::from(quic.receive_window) * 4)
        .keep_alive_interval(Some(Duration::from_secs(quic.keep_alive_secs)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(quic.idle_timeout_secs))
                .map_err(|e| ListenError::Crypto(e.to_string()))?,
        ));
    config.transport_config(Arc::new(transport));
    let bind = |source| ListenError::Bind {
        addr: server.listen,
        source,
    };
    let socket = std::net::UdpSocket::bind(server.listen).map_err(bind)?;
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(keys.reset));
    let cid_key = keys.connection_id;
    endpoint.cid_generator(move || -> Box<dyn quinn::ConnectionIdGenerator> {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    quinn::Endpoint::new(
        endpoint,
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind)
}

/// Counts connections per source address.
#[derive(Debug)]
struct AddressLimits {
    max_total: u32,
    max_unauthenticated: u32,
    counts: Mutex<HashMap<IpAddr, (u32, u32)>>,
}

/// One admitted connection's place in the counts; released on drop.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Arc<AddressLimits>,
    ip: IpAddr,
    authenticated: bool,
}

impl AddressLimits {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = counts.entry(ip).or_default();
        if entry.0 >= self.max_total || entry.1 >= self.max_unauthenticated {
            return None;
        }
        entry.0 += 1;
        entry.1 += 1;
        Some(Admission {
            limits: self.clone(),
            ip,
            authenticated: false,
        })
    }
}

impl Admission {
    /// The connection authenticated: it no longer counts against the unauthenticated cap.
    pub(crate) fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = counts.get_mut(&self.ip) {
                entry.1 = entry.1.saturating_sub(1);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = counts.get_mut(&self.ip) {
            entry.0 = entry.0.saturating_sub(1);
            if !self.authenticated {
                entry.1 = entry.1.saturating_sub(1);
            }
            if entry.0 == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Settings every connection task reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) services: Services,
    pub(crate) server: ServerConfig,
    pub(crate) node_name: String,
    /// Stops reading new requests; in-flight ones finish.
    pub(crate) stop: CancellationToken,
    /// Every request handler, so that shutdown can wait for in-flight writes.
    pub(crate) requests: TaskTracker,
}

/// Accepts connections until `shared.stop` fires.
pub(crate) async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    connections: TaskTracker,
) {
    let limits = Arc::new(AddressLimits {
        max_total: shared.server.max_connections_per_ip,
        max_unauthenticated: shared.server.max_unauthenticated_per_ip,
        counts: Mutex::new(HashMap::new()),
    });
    loop {
        let incoming = tokio::select! {
            () = shared.stop.cancelled() => return,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        let remote = incoming.remote_address();
        // Count a connection against its address only once the address is proven (QUIC
        // Retry), so that spoofed packets cannot fill another address's slots.
        if !incoming.remote_address_validated() {
            if incoming.may_retry() {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
            } else {
                incoming.ignore();
            }
            continue;
        }
        let Some(admission) = limits.admit(crate::throttle::address_key(remote.ip())) else {
            tracing::warn!(%remote, "refusing connection: too many from this address");
            incoming.refuse();
            continue;
        };
        let id = veche_core::live::registry::next_connection_id();
        let shared = shared.clone();
        connections.spawn(async move {
            let span = tracing::info_span!("conn", id, %remote);
            let _ = tracing::Instrument::instrument(
                connection::run(incoming, id, admission, shared),
                span,
            )
            .await;
        });
    }
}

/// Closes every connection still open with the shutdown code.
pub(crate) fn close_all(endpoint: &quinn::Endpoint) {
    endpoint.close(close::SHUTTING_DOWN.into(), b"node shutting down");
}
