//! Login throttling, per account and per source address. Pure logic: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 10_000;

/// What a client is told to wait when only attempts still in progress block it.
const PENDING_WAIT: Duration = Duration::from_secs(1);

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Wrong credentials: counts against the account and the address.
    Failed,
    /// Right credentials: clears the account's failures.
    Succeeded,
    /// Ended before the credentials were judged (bad request, storage error).
    Undecided,
}

/// Failed-login bookkeeping.
#[derive(Debug)]
pub(crate) struct Throttle {
    failures_before_delay: usize,
    window: Duration,
    max_delay: Duration,
    ip_per_minute: usize,
    accounts: HashMap<String, VecDeque<Instant>>,
    ips: HashMap<IpAddr, VecDeque<Instant>>,
    /// Attempts that passed `begin` and have not ended: they count as failures until they
    /// end, so that parallel guesses cannot all slip past the limit.
    pending_accounts: HashMap<String, usize>,
    pending_ips: HashMap<IpAddr, usize>,
}

impl Throttle {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        Self {
            failures_before_delay: config.account_failures_before_delay as usize,
            window: Duration::from_secs(config.account_failure_window_secs),
            max_delay: Duration::from_secs(config.max_account_delay_secs),
            ip_per_minute: config.ip_failures_per_minute as usize,
            accounts: HashMap::new(),
            ips: HashMap::new(),
            pending_accounts: HashMap::new(),
            pending_ips: HashMap::new(),
        }
    }

    /// Starts an attempt: `Err(wait)` if it must not be tried now, otherwise the attempt is
    /// pending until [`Throttle::end`].
    pub(crate) fn begin(&mut self, login: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = address_key(ip);
        self.check(login, ip, now)?;
        *self.pending_accounts.entry(login.to_owned()).or_default() += 1;
        *self.pending_ips.entry(ip).or_default() += 1;
        Ok(())
    }

    /// Ends an attempt started with [`Throttle::begin`].
    pub(crate) fn end(&mut self, login: &str, ip: IpAddr, outcome: Outcome, now: Instant) {
        let ip = address_key(ip);
        if let Some(n) = self.pending_accounts.get_mut(login) {
            *n -= 1;
            if *n == 0 {
                self.pending_accounts.remove(login);
            }
        }
        if let Some(n) = self.pending_ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.pending_ips.remove(&ip);
            }
        }
        match outcome {
            Outcome::Failed => self.record_failure(login, ip, now),
            Outcome::Succeeded => self.record_success(login),
            Outcome::Undecided => {}
        }
    }

    /// `Err(wait)` when an attempt for `login` from `ip` must not be tried before `wait` passes.
    fn check(&mut self, login: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        let ip_pending = self.pending_ips.get(&ip).copied().unwrap_or(0);
        let fails = self.ips.entry(ip).or_default();
        prune(fails, now, Duration::from_secs(60));
        if fails.len() + ip_pending >= self.ip_per_minute {
            // With only pending attempts to blame, retry once they have had time to end.
            wait = wait.max(fails.front().map_or(PENDING_WAIT, |oldest| {
                (*oldest + Duration::from_secs(60)).saturating_duration_since(now)
            }));
        }
        let account_pending = self.pending_accounts.get(login).copied().unwrap_or(0);
        let fails = self.accounts.entry(login.to_owned()).or_default();
        prune(fails, now, self.window);
        let count = fails.len() + account_pending;
        if count >= self.failures_before_delay {
            let excess = (count - self.failures_before_delay).min(30) as u32;
            let delay = Duration::from_secs(1u64 << excess).min(self.max_delay);
            wait = wait.max(fails.back().map_or(PENDING_WAIT, |last| {
                (*last + delay).saturating_duration_since(now)
            }));
            // Attempts still being checked may turn into failures: wait for them too.
            if account_pending > 0 {
                wait = wait.max(PENDING_WAIT);
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    fn record_failure(&mut self, login: &str, ip: IpAddr, now: Instant) {
        if self.accounts.len() + self.ips.len() > SWEEP_AT {
            self.sweep(now);
        }
        self.accounts
            .entry(login.to_owned())
            .or_default()
            .push_back(now);
        self.ips.entry(ip).or_default().push_back(now);
    }

    fn record_success(&mut self, login: &str) {
        self.accounts.remove(login);
    }

    fn sweep(&mut self, now: Instant) {
        let window = self.window;
        self.accounts.retain(|_, f| {
            prune(f, now, window);
            !f.is_empty()
        });
        self.ips.retain(|_, f| {
            prune(f, now, Duration::from_secs(60));
            !f.is_empty()
        });
    }
}

/// The unit an address limit applies to: one IPv4 address, or one IPv6 /64 (what a single
/// subscriber usually gets, so that rotating addresses inside it does not multiply the limit).
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

fn prune(fails: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while fails
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > window)
    {
        fails.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(&AuthConfig::default())
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn account_delay_starts_after_five_failures_and_doubles() {
        let mut t = throttle();
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.check("ivanov", IP, start), Ok(()));
            t.record_failure("ivanov", IP, start);
        }
        assert_eq!(t.check("ivanov", IP, start), Err(Duration::from_secs(1)));
        assert_eq!(
            t.check("petrov", IP, start),
            Ok(()),
            "other accounts are unaffected"
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(t.check("ivanov", IP, later), Ok(()));
        t.record_failure("ivanov", IP, later);
        assert_eq!(t.check("ivanov", IP, later), Err(Duration::from_secs(2)));
        t.record_success("ivanov");
        assert_eq!(t.check("ivanov", IP, later), Ok(()));
    }

    #[test]
    fn attempts_in_progress_count_against_the_limit() {
        let mut t = throttle();
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(t.begin("ivanov", IP, now), Ok(()));
        }
        assert_eq!(
            t.begin("ivanov", IP, now),
            Err(PENDING_WAIT),
            "a sixth parallel guess waits"
        );
        t.end("ivanov", IP, Outcome::Undecided, now);
        assert_eq!(
            t.begin("ivanov", IP, now),
            Ok(()),
            "an undecided attempt frees its place"
        );
        for _ in 0..5 {
            t.end("ivanov", IP, Outcome::Failed, now);
        }
        assert_eq!(t.check("ivanov", IP, now), Err(Duration::from_secs(1)));
    }

    #[test]
    fn an_ipv6_subscriber_is_one_address() {
        let mut t = throttle();
        let now = Instant::now();
        for i in 0..30u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, 0, 0, 1));
            assert!(t.begin(&format!("u{i}"), ip, now).is_ok());
            t.end(&format!("u{i}"), ip, Outcome::Failed, now);
        }
        let same_64 = IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 0, 1, 0xffff, 1, 2, 3,
        ));
        assert!(t.begin("v", same_64, now).is_err());
        let other_64 = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(t.begin("v", other_64, now).is_ok());
    }

    #[test]
    fn failures_expire_with_the_window() {
        let mut t = throttle();
        let start = Instant::now();
        for _ in 0..5 {
            t.record_failure("ivanov", IP, start);
        }
        let after = start + Duration::from_secs(15 * 60 + 1);
        assert_eq!(t.check("ivanov", IP, after), Ok(()));
    }

    #[test]
    fn one_address_is_limited_across_accounts() {
        let mut t = throttle();
        let start = Instant::now();
        for i in 0..30 {
            t.record_failure(&format!("user{i}"), IP, start);
        }
        let wait = t
            .check("someone-else", IP, start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.check("someone-else", other, start), Ok(()));
    }
}
