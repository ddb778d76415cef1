//! Live authenticated connections, by session, so that revoking a session, locking a user or
//! logging out reaches the connections at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use veche_protocol::close;

/// Longest a connection may take to end gracefully after its session ended; then it is closed
/// regardless. Keeps "a revoked session's connection is closed within 1 s".
const FORCE_CLOSE_AFTER: Duration = Duration::from_millis(900);

/// One live connection.
#[derive(Debug, Clone)]
pub(crate) struct LiveConnection {
    pub(crate) id: u64,
    pub(crate) conn: quinn::Connection,
    /// Tells the connection task its session ended, and why.
    pub(crate) end: mpsc::Sender<String>,
    /// Set before `end` is signalled: the connection's handlers stop acting for the session.
    pub(crate) ended: Arc<AtomicBool>,
}

/// Session id → its live connections.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<String, Vec<LiveConnection>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<LiveConnection>>> {
        // The map stays consistent under any panic in its short critical sections.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(&self, session_id: &str, live: LiveConnection) {
        self.lock()
            .entry(session_id.to_owned())
            .or_default()
            .push(live);
    }

    pub(crate) fn unregister(&self, session_id: &str, connection_id: u64) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(session_id) {
            list.retain(|c| c.id != connection_id);
            if list.is_empty() {
                map.remove(session_id);
            }
        }
    }

    /// Ends the connections of these sessions: each tells its client why and closes; any that
    /// has not closed after [`FORCE_CLOSE_AFTER`] is closed anyway.
    pub(crate) fn end_sessions(&self, session_ids: &[String], reason: &str) -> usize {
        let ended: Vec<LiveConnection> = {
            let mut map = self.lock();
            session_ids
                .iter()
                .filter_map(|id| map.remove(id))
                .flatten()
                .collect()
        };
        for live in &ended {
            live.ended.store(true, Ordering::SeqCst);
            let _ = live.end.try_send(reason.to_owned());
            let conn = live.conn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FORCE_CLOSE_AFTER).await;
                conn.close(close::SESSION_REVOKED.into(), b"session ended");
            });
        }
        ended.len()
    }
}
