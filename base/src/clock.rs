//! The time the node goes by, behind a trait so that tests can set it.
//!
//! Wall-clock time only ever labels things (when a message was written, when a session
//! expires, when a code was mailed); ordering never depends on it (sequence numbers do).
//! Every such reading goes through a [`Clock`]: the node's is [`SystemClock`]; a test gives a
//! node a [`ManualClock`] and moves it, instead of sleeping or asserting on elapsed time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::Timestamp;

/// A source of the current time.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64 {
        self.now().as_millis()
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// This machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

impl SystemClock {
    /// This machine's clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(Self)
    }
}

/// A clock that stands still until it is moved: for tests.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(Self {
            ms: AtomicI64::new(start.as_millis()),
        })
    }

    /// A clock standing at this machine's time now.
    pub fn starting_now() -> Arc<Self> {
        Self::new(Timestamp::now())
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `t` (also backwards: a clock set back by an administrator).
    pub fn set(&self, t: Timestamp) {
        self.ms.store(t.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp(1_000));
        assert_eq!(clock.now(), Timestamp(1_000));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
        clock.set(Timestamp(500));
        assert_eq!(clock.now(), Timestamp(500));
        let shared: SharedClock = clock;
        assert_eq!(shared.now_ms(), 500);
    }

    #[test]
    fn the_system_clock_is_this_machines() {
        let before = Timestamp::now();
        let now = SystemClock.now();
        assert!(now >= before && now <= Timestamp::now());
    }
}
