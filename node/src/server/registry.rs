//! Live authenticated connections, by session, so that revoking a session, locking a user or
//! shutting down reaches the connections at once.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use veche_protocol::{Event, close};

/// One live connection.
#[derive(Debug, Clone)]
pub(crate) struct LiveConnection {
    pub(crate) id: u64,
    pub(crate) conn: quinn::Connection,
    pub(crate) events: mpsc::Sender<Event>,
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

    /// Ends the connections of these sessions: tells them why, then closes them.
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
            let _ = live.events.try_send(Event::SessionEnded {
                reason: reason.to_owned(),
            });
            live.conn
                .close(close::SESSION_REVOKED.into(), reason.as_bytes());
        }
        ended.len()
    }

    /// Tells every authenticated connection that the node is going away.
    pub(crate) fn announce_shutdown(&self) {
        for live in self.lock().values().flatten() {
            let _ = live.events.try_send(Event::ShuttingDown);
        }
    }
}
