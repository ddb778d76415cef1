//! `[metrics]`: the operations listener (Prometheus metrics and health checks).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HttpConfig};

/// `[metrics]`: `/metrics` (Prometheus text), `/health/live` and `/health/ready` on a listener
/// of their own, apart from the gateway, so that a firewall or a bind address keeps them
/// internal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether the listener runs (and metrics are recorded at all).
    pub enabled: bool,
    /// The address it listens on: loopback unless the scraper is elsewhere.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9780)),
        }
    }
}

impl MetricsConfig {
    /// Checks the section against the gateway's, whose port it must not take.
    pub(super) fn validate(&self, http: &HttpConfig) -> Result<(), ConfigError> {
        if self.enabled && http.enabled && self.listen.port() != 0 && self.listen == http.listen {
            return Err(ConfigError::Invalid {
                key: "metrics.listen",
                message: format!("{} is http.listen already", self.listen),
            });
        }
        Ok(())
    }
}
