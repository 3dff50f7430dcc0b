//! Throttling of failed logins, per account and per client address.
//!
//! A fixed window per key: after `limit` failures within `window`, further attempts are
//! refused with 429 until the window that began with the first failure ends. Accounts are
//! keyed by normalised email whether or not the account exists, so the throttle says
//! nothing about which emails are registered. State is in memory, per instance: it slows
//! an attacker by the number of instances at worst, and needs no writes on the login path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    pub per_account: u32,
    pub per_ip: u32,
    pub window: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self { per_account: 5, per_ip: 30, window: Duration::from_secs(15 * 60) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    failures: u32,
    started: Instant,
}

/// Beyond this many tracked keys, expired windows are swept on the next failure.
const SWEEP_AT: usize = 10_000;

pub struct LoginThrottle {
    limits: ThrottleLimits,
    windows: Mutex<HashMap<String, Window>>,
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self { limits, windows: Mutex::new(HashMap::new()) }
    }

    fn keys(account: &str, ip: Option<IpAddr>) -> [(String, u32); 2] {
        [(format!("account:{}", account.trim().to_lowercase()), 0), (format!("ip:{}", ip.map_or("-".to_string(), |ip| ip.to_string())), 1)]
    }

    fn limit(&self, which: u32) -> u32 {
        if which == 0 { self.limits.per_account } else { self.limits.per_ip }
    }

    /// `Err(retry_after)` when either the account or the address is over its limit.
    pub fn check(&self, account: &str, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, which) in Self::keys(account, ip) {
            if let Some(w) = windows.get(&key) {
                let elapsed = now.saturating_duration_since(w.started);
                if elapsed < self.limits.window && w.failures >= self.limit(which) {
                    wait = wait.max(self.limits.window - elapsed);
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    pub fn record_failure(&self, account: &str, ip: Option<IpAddr>, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > SWEEP_AT {
            let window = self.limits.window;
            windows.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        for (key, _) in Self::keys(account, ip) {
            let w = windows.entry(key).or_insert(Window { failures: 0, started: now });
            if now.saturating_duration_since(w.started) >= self.limits.window {
                *w = Window { failures: 0, started: now };
            }
            w.failures += 1;
        }
    }

    /// A successful login clears the account's window (not the address's).
    pub fn record_success(&self, account: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.remove(&Self::keys(account, None)[0].0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleLimits { per_account: 3, per_ip: 5, window: Duration::from_secs(60) })
    }

    #[test]
    fn account_locks_after_limit_and_unlocks_after_window() {
        let t = throttle();
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.check("A@x.org", ip, start).is_ok());
            t.record_failure("a@x.org", ip, start);
        }
        let wait = t.check("a@X.org", ip, start + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(t.check("a@x.org", ip, start + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn address_locks_across_accounts_and_success_clears_only_the_account() {
        let t = throttle();
        let ip = Some(IpAddr::from([10, 0, 0, 2]));
        let now = Instant::now();
        for i in 0..5 {
            t.record_failure(&format!("user{i}@x.org"), ip, now);
        }
        assert!(t.check("fresh@x.org", ip, now).is_err());
        assert!(t.check("fresh@x.org", Some(IpAddr::from([10, 0, 0, 3])), now).is_ok());
        t.record_success("user0@x.org");
        assert!(t.check("user0@x.org", ip, now).is_err(), "the address stays throttled");
    }
}
