//! The retry policy: how many attempts an event gets and how long to wait before each.
//!
//! Exponential backoff with jitter: the delay before attempt `n` (n ≥ 2) is
//! `min(initial × factor^(n−2), max)`, then drawn uniformly from `[d × (1 − jitter), d]`, so hosts
//! retrying the same burst of failures spread out instead of hammering a recovering dependency in
//! step.

use std::time::Duration;

/// Attempts an event gets in all, the first included, before it is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Highest `max_attempts` accepted: beyond this a poison event only burns resources.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Delay before the second attempt.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Growth of the delay per attempt.
pub const DEFAULT_BACKOFF_FACTOR: f64 = 2.0;
/// Longest delay between two attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Fraction of each delay that is randomised away (0 = exact delays, 1 = anywhere from 0).
pub const DEFAULT_JITTER: f64 = 0.5;

/// How an event that failed is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included ([`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Delay before the second attempt ([`DEFAULT_BACKOFF_INITIAL`]).
    pub initial: Duration,
    /// Growth per attempt ([`DEFAULT_BACKOFF_FACTOR`]).
    pub factor: f64,
    /// Cap on any one delay ([`DEFAULT_BACKOFF_MAX`]).
    pub max: Duration,
    /// Randomised fraction of each delay ([`DEFAULT_JITTER`]).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial: DEFAULT_BACKOFF_INITIAL,
            factor: DEFAULT_BACKOFF_FACTOR,
            max: DEFAULT_BACKOFF_MAX,
            jitter: DEFAULT_JITTER,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` without jitter: the schedule's upper bound.
    pub fn base_delay(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(1024) as i32;
        let seconds = self.initial.as_secs_f64() * self.factor.powi(exponent);
        if !seconds.is_finite() || seconds >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(seconds)
        }
    }

    /// The delay before attempt `next_attempt`, jittered.
    pub fn delay(&self, next_attempt: u32) -> Duration {
        let base = self.base_delay(next_attempt);
        if self.jitter <= 0.0 {
            return base;
        }
        base.mul_f64(1.0 - self.jitter * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_factor_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.base_delay(2), Duration::from_secs(1));
        assert_eq!(policy.base_delay(3), Duration::from_secs(2));
        assert_eq!(policy.base_delay(5), Duration::from_secs(8));
        assert_eq!(policy.base_delay(10), Duration::from_secs(256));
        assert_eq!(policy.base_delay(11), Duration::from_secs(300));
        assert_eq!(policy.base_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let policy = RetryPolicy::default();
        for _ in 0..1000 {
            let d = policy.delay(3);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
        let exact = RetryPolicy {
            jitter: 0.0,
            ..policy
        };
        assert_eq!(exact.delay(3), Duration::from_secs(2));
    }
}
