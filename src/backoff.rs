//! How long to wait before trying again: exponential backoff with full jitter, the one rule
//! for every retry in the server (the change-feed listener's reconnects, a log consumer's
//! failing page, and later the mail and webhook workers).
//!
//! Full jitter (a uniform delay in `[0, min(cap, base · 2^attempt)]`, as in AWS's
//! "Exponential Backoff And Jitter") spreads retries of many clients that failed together,
//! where "equal jitter" or none would have them retry in waves. Pure: the random sample is
//! an argument, so the rule is tested without a clock.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The ceiling for the `attempt`th retry (0-based): `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(self.cap)
    }

    /// The delay before the `attempt`th retry, for a uniform sample `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`delay`](Self::delay) with a fresh random sample.
    pub fn delay_now(&self, attempt: u32) -> Duration {
        self.delay(attempt, unit_sample())
    }
}

/// A uniform sample in `[0, 1)`.
pub fn unit_sample() -> f64 {
    let bytes = crate::crypto::random_bytes::<4>();
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));

    #[test]
    fn grows_exponentially_is_capped_and_jittered_from_zero() {
        assert_eq!(B.delay(0, 0.0), Duration::ZERO);
        assert_eq!(B.delay(0, 0.999_999), Duration::from_millis(100).mul_f64(0.999_999));
        assert_eq!(B.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(B.delay(30, 0.5), Duration::from_secs(15));
        assert_eq!(B.delay(u32::MAX, 1.0), Duration::from_secs(30));
        assert_eq!(B.delay(2, 7.0), B.ceiling(2), "samples outside [0, 1) are clamped");
        // Far past the point where base · 2^attempt overflows: no panic, no wrap, capped.
        for attempt in (0..200).chain([u32::MAX - 1]) {
            assert!(B.ceiling(attempt) <= B.ceiling(attempt + 1));
            if attempt >= 9 {
                assert_eq!(B.ceiling(attempt), B.cap, "100 ms · 2^9 is past the 30 s cap");
            }
            for unit in [0.0, 0.25, 0.5, 0.75, 0.999] {
                assert!(B.delay(attempt, unit) <= B.ceiling(attempt));
                assert!(B.delay(attempt, unit) <= B.cap);
            }
        }
    }

    #[test]
    fn random_samples_stay_in_range_and_spread() {
        let samples: Vec<f64> = (0..1000).map(|_| unit_sample()).collect();
        assert!(samples.iter().all(|u| (0.0..1.0).contains(u)));
        let low = samples.iter().filter(|u| **u < 0.5).count();
        assert!((300..700).contains(&low), "{low} of 1000 below one half");
    }
}
