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

/// The `retry` table of a trigger, as written (`[triggers.stream.retry]`, also under
/// `[[triggers.cron]]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    max_attempts: Option<i64>,
    initial: Option<String>,
    factor: Option<f64>,
    max: Option<String>,
    jitter: Option<f64>,
}

impl RetryPolicy {
    /// The policy a `retry` table at `at` asks for (every field defaulted), or the field at fault.
    pub fn from_settings(
        at: &str,
        raw: Option<RetrySettings>,
    ) -> Result<RetryPolicy, crate::settings::FieldError> {
        use crate::settings;
        let mut policy = RetryPolicy::default();
        let Some(raw) = raw else {
            return Ok(policy);
        };
        policy.max_attempts = settings::range(
            &format!("{at}.max_attempts"),
            raw.max_attempts,
            policy.max_attempts as usize,
            1,
            MAX_ATTEMPTS_LIMIT as usize,
        )? as u32;
        if let Some(initial) = &raw.initial {
            policy.initial = settings::duration(&format!("{at}.initial"), initial)?;
        }
        if let Some(max) = &raw.max {
            policy.max = settings::duration(&format!("{at}.max"), max)?;
        }
        if policy.max < policy.initial {
            return Err(settings::error(
                &format!("{at}.max"),
                &format!("{:?}", humantime::format_duration(policy.max).to_string()),
                &format!(
                    "a duration no shorter than initial ({})",
                    humantime::format_duration(policy.initial)
                ),
            ));
        }
        if let Some(factor) = raw.factor {
            if !(1.0..=100.0).contains(&factor) {
                return Err(settings::error(
                    &format!("{at}.factor"),
                    &factor.to_string(),
                    "a number from 1.0 to 100.0",
                ));
            }
            policy.factor = factor;
        }
        if let Some(jitter) = raw.jitter {
            if !(0.0..=1.0).contains(&jitter) {
                return Err(settings::error(
                    &format!("{at}.jitter"),
                    &jitter.to_string(),
                    "a fraction from 0.0 to 1.0",
                ));
            }
            policy.jitter = jitter;
        }
        Ok(policy)
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
