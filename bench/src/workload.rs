//! What every workload shares: its error, and connecting its users.

use std::sync::Arc;

use tokio::sync::Semaphore;
use veche_client::{Connection, LoggedIn, RequestError};

use crate::target::{SetupError, Target};

/// Why a workload could not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// Setting up (users, connections, the group) failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A request of the workload failed.
    #[error("{what}: {source}")]
    Request {
        /// Which request.
        what: &'static str,
        /// Why.
        source: Box<RequestError>,
    },
    /// The node answered a request with something else than it expects.
    #[error("unexpected answer to {0}")]
    Unexpected(&'static str),
    /// Nothing happened for too long.
    #[error("{what}: nothing for {secs} s")]
    Stalled {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// The parameters make no workload.
    #[error("invalid parameters: {0}")]
    Parameters(&'static str),
    /// A task of the generator panicked.
    #[error("a task of the generator failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl WorkloadError {
    /// Wraps a failed request.
    pub fn request(what: &'static str, source: RequestError) -> Self {
        Self::Request {
            what,
            source: Box::new(source),
        }
    }
}

/// Connects each of `logins` on its own endpoint and logs it in with a password, `parallel`
/// at a time; in the order of `logins`.
pub async fn connect_each(
    target: &Target,
    logins: &[String],
    parallel: usize,
) -> Result<Vec<(Connection, LoggedIn)>, WorkloadError> {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, login) in logins.iter().enumerate() {
        let target = target.clone();
        let login = login.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let pair = target.connect_as(&login).await?;
            Ok::<_, WorkloadError>((i, pair))
        });
    }
    let mut out: Vec<Option<(Connection, LoggedIn)>> = (0..logins.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (i, pair) = done??;
        out[i] = Some(pair);
    }
    Ok(out.into_iter().flatten().collect())
}
