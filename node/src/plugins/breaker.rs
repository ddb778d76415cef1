//! A circuit breaker per plugin: after repeated failures (traps, timeouts, exhausted limits,
//! not answers the plugin chose to give) the plugin is paused, then probed with one call;
//! each failed probe doubles the pause, up to a ceiling.

use std::time::{Duration, Instant};

/// The breaker's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerConfig {
    /// Failures within `window` that open the breaker.
    pub(crate) failures: u32,
    pub(crate) window: Duration,
    /// The first pause; doubled after each failed probe.
    pub(crate) pause: Duration,
    pub(crate) max_pause: Duration,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    recent: Vec<Instant>,
    state: State,
    /// The next pause.
    pause: Duration,
    /// Why it last opened.
    pub(crate) reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe call is out since then.
    Probing {
        since: Instant,
    },
}

/// A probe that has not reported back by then (its caller gave up on it) is replaced by a
/// new one; longer than any plugin call may last.
const PROBE_EXPIRY: Duration = Duration::from_secs(90);

/// What the breaker says about a call now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Yes,
    /// Paused for this much longer.
    No(Duration),
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            recent: Vec::new(),
            state: State::Closed,
            pause: config.pause,
            reason: None,
        }
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open { until } if now >= until => {
                self.state = State::Probing { since: now };
                Admit::Yes
            }
            State::Open { until } => Admit::No(until - now),
            State::Probing { since } if now.duration_since(since) > PROBE_EXPIRY => {
                self.state = State::Probing { since: now };
                Admit::Yes
            }
            // While the probe is out, nothing else goes in.
            State::Probing { .. } => Admit::No(Duration::from_millis(100)),
        }
    }

    pub(crate) fn success(&mut self) {
        if matches!(self.state, State::Probing { .. }) {
            self.pause = self.config.pause;
            self.recent.clear();
            self.reason = None;
        }
        self.state = State::Closed;
    }

    /// A call that neither succeeded nor failed (the node could not run it): if it was the
    /// probe, the next call probes again.
    pub(crate) fn inconclusive(&mut self, now: Instant) {
        if matches!(self.state, State::Probing { .. }) {
            self.state = State::Open { until: now };
        }
    }

    /// Records a failure; `true` if the breaker opened because of it.
    pub(crate) fn failure(&mut self, now: Instant, why: &str) -> bool {
        match self.state {
            State::Probing { .. } => {
                self.pause = (self.pause * 2).min(self.config.max_pause);
                self.open(now, why);
                true
            }
            State::Open { .. } => false,
            State::Closed => {
                self.recent
                    .retain(|t| now.duration_since(*t) < self.config.window);
                self.recent.push(now);
                if self.recent.len() as u32 >= self.config.failures {
                    self.open(now, why);
                    true
                } else {
                    false
                }
            }
        }
    }

    fn open(&mut self, now: Instant, why: &str) {
        self.state = State::Open {
            until: now + self.pause,
        };
        self.recent.clear();
        self.reason = Some(why.to_owned());
    }

    /// `Some((reason, remaining))` while paused.
    pub(crate) fn paused(&self, now: Instant) -> Option<(String, Duration)> {
        match self.state {
            State::Open { until } if now < until => {
                Some((self.reason.clone().unwrap_or_default(), until - now))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            window: Duration::from_secs(60),
            pause: Duration::from_secs(30),
            max_pause: Duration::from_secs(90),
        }
    }

    #[test]
    fn opens_after_repeated_failures_and_probes_with_backoff() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        assert!(!b.failure(t0, "trap"));
        assert!(!b.failure(t0, "trap"));
        assert_eq!(b.admit(t0), Admit::Yes);
        assert!(b.failure(t0, "trap"));
        assert_eq!(b.admit(t0), Admit::No(Duration::from_secs(30)));
        assert_eq!(b.paused(t0).unwrap().0, "trap");

        // The probe fails: the next pause is twice as long.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(t1), Admit::Yes);
        assert!(matches!(b.admit(t1), Admit::No(_)), "one probe at a time");
        assert!(b.failure(t1, "trap again"));
        assert_eq!(b.admit(t1), Admit::No(Duration::from_secs(60)));

        // Capped at the maximum, then a good probe closes it and resets the pause.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(b.admit(t2), Admit::Yes);
        b.failure(t2, "x");
        assert_eq!(b.admit(t2), Admit::No(Duration::from_secs(90)));
        let t3 = t2 + Duration::from_secs(90);
        assert_eq!(b.admit(t3), Admit::Yes);
        b.success();
        assert_eq!(b.admit(t3), Admit::Yes);
        assert!(b.paused(t3).is_none());
        // Once a pause is over, the breaker no longer reports it (the next call probes).
        b.failure(t3, "a");
        b.failure(t3, "a");
        b.failure(t3, "a");
        assert!(b.paused(t3).is_some());
        assert!(b.paused(t3 + Duration::from_secs(31)).is_none());
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.failure(t0, "timeout");
        }
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(t1), Admit::Yes);
        assert!(matches!(
            b.admit(t1 + Duration::from_secs(10)),
            Admit::No(_)
        ));
        assert_eq!(
            b.admit(t1 + PROBE_EXPIRY + Duration::from_secs(1)),
            Admit::Yes
        );
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        b.failure(t0, "a");
        b.failure(t0, "a");
        assert!(!b.failure(t0 + Duration::from_secs(61), "a"));
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Admit::Yes);
    }
}
