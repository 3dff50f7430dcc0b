//! Throttling of failed logins: growing delays per (account, client) and per client, never
//! a lock that strangers can put on someone else's account.
//!
//! - Keys: the pair (normalised email, client key) and the client key alone, where the
//!   client key is its IPv4 address or its IPv6 /64 (`http::client::throttle_key`). Five
//!   wrong passwords for alice from one place slow down that place's attempts at alice;
//!   alice logging in from her own address is not affected. There is no key for the
//!   account alone: that is the one an attacker could use to lock her out.
//! - Delays: the first `free` failures cost nothing; after that each attempt must wait
//!   `base × 2^(failures − free)` since the last failure, up to `max_delay` (OWASP's
//!   "exponential back-off" rather than a hard lock). A pair is forgotten `forget_after`
//!   the last failure, or at once on a successful login.
//! - One attempt at a time per client key ([`LoginThrottle::begin`]): a flood from one
//!   address cannot queue thousands of password checks.
//! - Memory is bounded: both maps are `moka` caches with a capacity and a time to live,
//!   evicting the least useful entries rather than clearing everything.
//!
//! Accounts are keyed by email whether or not the account exists, so the throttle says
//! nothing about which emails are registered. State is per instance: it slows an attacker
//! by the number of instances at worst, and needs no writes on the login path.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::http::client::throttle_key;

#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures per (account, client) before delays start.
    pub per_account: u32,
    /// Failures per client (any account) before delays start.
    pub per_ip: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A key with no failure for this long starts afresh.
    pub forget_after: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            per_account: 5,
            per_ip: 30,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(15 * 60),
        }
    }
}

/// Keys tracked per map at most.
const CAPACITY: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
}

type ClientKey = Option<IpAddr>;

pub struct LoginThrottle {
    limits: ThrottleLimits,
    pairs: Cache<(String, ClientKey), Strikes>,
    clients: Cache<ClientKey, Strikes>,
    /// Client keys with a login being checked right now (bounded by requests in flight).
    checking: Arc<Mutex<HashSet<ClientKey>>>,
}

/// A login attempt in progress for one client key; dropping it lets the next one in.
pub struct Attempt {
    key: ClientKey,
    checking: Arc<Mutex<HashSet<ClientKey>>>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.checking.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

fn account_key(account: &str) -> String {
    account.trim().to_lowercase()
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        let ttl = limits.forget_after.max(limits.max_delay);
        Self {
            limits,
            pairs: Cache::builder().max_capacity(CAPACITY).time_to_live(ttl).build(),
            clients: Cache::builder().max_capacity(CAPACITY).time_to_live(ttl).build(),
            checking: Arc::default(),
        }
    }

    /// How long after its last failure a key with `failures` must wait.
    fn delay(&self, failures: u32, free: u32) -> Duration {
        if failures < free {
            return Duration::ZERO;
        }
        let doublings = (failures - free).min(30);
        self.limits.base_delay.saturating_mul(1u32 << doublings).min(self.limits.max_delay)
    }

    fn wait(&self, strikes: Option<Strikes>, free: u32, now: Instant) -> Duration {
        let Some(s) = strikes else { return Duration::ZERO };
        let since = now.saturating_duration_since(s.last);
        if since >= self.limits.forget_after {
            return Duration::ZERO;
        }
        self.delay(s.failures, free).saturating_sub(since)
    }

    /// Starts an attempt: `Err(retry_after)` while the pair or the client must wait, or
    /// while another attempt from the same client is being checked.
    pub fn begin(&self, account: &str, ip: Option<IpAddr>, now: Instant) -> Result<Attempt, Duration> {
        let client = ip.map(throttle_key);
        let wait = self.wait(self.pairs.get(&(account_key(account), client)), self.limits.per_account, now).max(self.wait(
            self.clients.get(&client),
            self.limits.per_ip,
            now,
        ));
        if !wait.is_zero() {
            return Err(wait);
        }
        let mut checking = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        if !checking.insert(client) {
            return Err(Duration::from_secs(1));
        }
        Ok(Attempt { key: client, checking: self.checking.clone() })
    }

    /// Whether `ip`'s client failed a login recently (its checks wait in the suspects' place).
    pub fn suspect(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        self.clients
            .get(&ip.map(throttle_key))
            .is_some_and(|s| s.failures > 0 && now.saturating_duration_since(s.last) < self.limits.forget_after)
    }

    pub fn record_failure(&self, account: &str, ip: Option<IpAddr>, now: Instant) {
        let client = ip.map(throttle_key);
        let bump = |old: Option<Strikes>| {
            let failures = old.filter(|s| now.saturating_duration_since(s.last) < self.limits.forget_after).map_or(0, |s| s.failures);
            Strikes { failures: failures.saturating_add(1), last: now }
        };
        let pair = (account_key(account), client);
        self.pairs.insert(pair.clone(), bump(self.pairs.get(&pair)));
        self.clients.insert(client, bump(self.clients.get(&client)));
    }

    /// A successful login clears the pair (not the client: it may be guessing at others).
    pub fn record_success(&self, account: &str, ip: Option<IpAddr>) {
        self.pairs.invalidate(&(account_key(account), ip.map(throttle_key)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleLimits {
            per_account: 3,
            per_ip: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
        })
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn delays_grow_per_pair_and_never_reach_the_owner_elsewhere() {
        let t = throttle();
        let start = Instant::now();
        for _ in 0..3 {
            drop(t.begin("A@x.org", ip(1), start).unwrap());
            t.record_failure("a@x.org", ip(1), start);
        }
        // 3 failures: the next attempt from there waits 1 s, then 2 s, 4 s …
        assert_eq!(t.begin("a@X.org", ip(1), start).err(), Some(Duration::from_secs(1)));
        assert!(t.begin("a@x.org", ip(1), start + Duration::from_secs(1)).is_ok());
        t.record_failure("a@x.org", ip(1), start + Duration::from_secs(1));
        assert_eq!(t.begin("a@x.org", ip(1), start + Duration::from_secs(2)).err(), Some(Duration::from_secs(1)));
        // The owner, from their own address, is not slowed at all.
        assert!(t.begin("a@x.org", ip(2), start).is_ok());
        // Capped, and forgotten after a quiet spell.
        for _ in 0..20 {
            t.record_failure("a@x.org", ip(1), start);
        }
        assert_eq!(t.begin("a@x.org", ip(1), start).err(), Some(Duration::from_secs(60)));
        assert!(t.begin("a@x.org", ip(1), start + Duration::from_secs(601)).is_ok());
    }

    #[test]
    fn a_client_guessing_many_accounts_is_slowed_and_success_clears_only_the_pair() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..5 {
            t.record_failure(&format!("user{i}@x.org"), ip(3), now);
        }
        assert!(t.begin("fresh@x.org", ip(3), now).is_err(), "the client waits, whatever account it tries");
        assert!(t.begin("fresh@x.org", ip(4), now).is_ok());
        t.record_success("user0@x.org", ip(3));
        assert!(t.begin("user0@x.org", ip(3), now).is_err(), "the client stays slowed");
    }

    #[test]
    fn one_attempt_at_a_time_per_client_and_ipv6_by_64() {
        let t = throttle();
        let now = Instant::now();
        let a: Option<IpAddr> = Some("2001:db8::1".parse().unwrap());
        let b: Option<IpAddr> = Some("2001:db8::2".parse().unwrap());
        let first = t.begin("a@x.org", a, now).unwrap();
        assert!(t.begin("b@x.org", b, now).is_err(), "the same /64 is one client");
        drop(first);
        assert!(t.begin("b@x.org", b, now).is_ok());
        for _ in 0..5 {
            t.record_failure("z@x.org", a, now);
        }
        assert!(t.begin("y@x.org", b, now).is_err(), "failures from one address of a /64 slow the whole /64");
    }
}
