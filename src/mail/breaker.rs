//! A circuit breaker per relay, so a failing SMTP server is not hammered: closed (mail
//! flows) → open (nothing is sent) once the failures over a rolling window pass a rate →
//! half-open when the open period is over, which lets one probe through: its success
//! closes the breaker, its failure opens it again.
//!
//! Half-open is computed when the breaker is read (no timer task): [`Breaker::state`] of an
//! open breaker whose period has passed is half-open. Pure: times are arguments.

use std::collections::VecDeque;
use std::time::Duration;

use crate::store::Millis;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes older than this do not count.
    pub window: Duration,
    /// Fewer tries than this in the window never open the breaker (one failure in one try
    /// is not a failing relay).
    pub min_tries: usize,
    /// The failing share of the window's tries (0 to 1) that opens the breaker.
    pub failure_rate: f64,
    /// How long it stays open before a probe may go through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), min_tries: 5, failure_rate: 0.5, open_for: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Millis },
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    /// (when, succeeded), oldest first, within the window.
    outcomes: VecDeque<(Millis, bool)>,
    opened_at: Option<Millis>,
    /// A half-open breaker's probe is out: others wait for its result.
    probing: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, outcomes: VecDeque::new(), opened_at: None, probing: false }
    }

    pub fn state(&self, now: Millis) -> State {
        match self.opened_at {
            None => State::Closed,
            Some(at) => {
                let until = at.plus(self.config.open_for);
                if now.0 >= until.0 { State::HalfOpen } else { State::Open { until } }
            }
        }
    }

    /// Whether a try may go to the relay now; `Err(at)`: hold the mail back until `at`.
    pub fn allow(&mut self, now: Millis) -> Result<(), Millis> {
        match self.state(now) {
            State::Closed => Ok(()),
            State::Open { until } => Err(until),
            State::HalfOpen if !self.probing => {
                self.probing = true;
                Ok(())
            }
            // The probe is out; look again once it should have answered.
            State::HalfOpen => Err(now.plus(self.config.open_for)),
        }
    }

    /// Counts a try's outcome (a relay's own refusal of one message is not a relay failure:
    /// count only what says the relay is unwell).
    pub fn record(&mut self, now: Millis, succeeded: bool) {
        if self.opened_at.is_some() {
            // Only the half-open probe's answer gets here: it decides.
            self.probing = false;
            self.outcomes.clear();
            self.opened_at = if succeeded { None } else { Some(now) };
            return;
        }
        self.outcomes.push_back((now, succeeded));
        let oldest = now.0 - self.config.window.as_millis() as i64;
        while self.outcomes.front().is_some_and(|(at, _)| at.0 < oldest) {
            self.outcomes.pop_front();
        }
        let failures = self.outcomes.iter().filter(|(_, ok)| !ok).count();
        let tries = self.outcomes.len();
        if tries >= self.config.min_tries && failures as f64 >= self.config.failure_rate * tries as f64 {
            self.opened_at = Some(now);
        }
    }

    /// Failures and tries in the window, for the answer a held-back mail records.
    pub fn counts(&self) -> (usize, usize) {
        (self.outcomes.iter().filter(|(_, ok)| !ok).count(), self.outcomes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig =
        BreakerConfig { window: Duration::from_secs(10), min_tries: 4, failure_rate: 0.5, open_for: Duration::from_secs(30) };

    #[test]
    fn opens_on_a_failure_rate_and_half_opens_lazily_for_one_probe() {
        let mut b = Breaker::new(CONFIG);
        let t = |s: i64| Millis(1_000_000 + s * 1000);
        // Three failures are not enough tries; the fourth try decides.
        for s in 0..3 {
            assert_eq!(b.allow(t(s)), Ok(()));
            b.record(t(s), false);
        }
        assert_eq!(b.state(t(3)), State::Closed);
        b.record(t(3), true);
        assert_eq!(b.state(t(3)), State::Open { until: t(33) }, "3 of 4 failed");
        assert_eq!(b.allow(t(10)), Err(t(33)));
        // Half-open when read after the period, with no timer: one probe, the rest wait.
        assert_eq!(b.state(t(33)), State::HalfOpen);
        assert_eq!(b.allow(t(33)), Ok(()));
        assert_eq!(b.allow(t(34)), Err(t(64)), "only one probe at a time");
        b.record(t(35), false);
        assert_eq!(b.state(t(35)), State::Open { until: t(65) }, "a failed probe opens it again");
        assert_eq!(b.allow(t(65)), Ok(()));
        b.record(t(66), true);
        assert_eq!(b.state(t(66)), State::Closed, "a good probe closes it");
        assert_eq!(b.counts(), (0, 0), "and it starts counting afresh");
    }

    #[test]
    fn old_failures_leave_the_window_and_successes_keep_it_closed() {
        let mut b = Breaker::new(CONFIG);
        let t = |s: i64| Millis(5_000 + s * 1000);
        for s in 0..3 {
            b.record(t(s), false);
        }
        // Eleven seconds later those three have left the window.
        for s in 14..18 {
            b.record(t(s), s % 2 == 0);
        }
        assert_eq!(b.counts(), (2, 4));
        assert!(matches!(b.state(t(18)), State::Open { .. }), "2 of 4 is the rate");
        let mut healthy = Breaker::new(CONFIG);
        for s in 0..100 {
            healthy.record(t(s), s % 4 != 0);
        }
        assert_eq!(healthy.state(t(100)), State::Closed, "a quarter failing is below the rate");
    }
}
