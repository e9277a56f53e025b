//! Delivery: what an invocation's outcome means for the event, shared by every trigger so the
//! retry rules exist once.
//!
//! Which status is which [`Outcome`] is the WIT contract's table (`wit/eddy.wit`, "Outcomes").
//! What each outcome does is [`decide`], as plain logic: done is acknowledged; rejected is
//! dead-lettered at once, except 408 and 429 ([`RETRYABLE_CLIENT_STATUSES`]), which say
//! "later" and are retried like a failure; failed is retried after the policy's backoff for
//! that attempt, up to `max_attempts` attempts in all, then dead-lettered.
//!
//! The Redis side lives in the submodules:
//! - `retry_policy`: the retry policy and the delay before each attempt.
//! - `retry_queue`: the durable schedule of retries (a sorted set leased by Lua scripts), so a
//!   retry survives the host that scheduled it.
//! - [`dead_letter`]: what a dead-letter entry holds, the two steps that move it there (ack
//!   into the stream's outbox, then forward), safe across cluster slots, and the operations
//!   of `eddy dlq` ([`dead_letter::admin`]: list, show, replay into the retry schedule, purge).
//! - [`replay`]: `eddy replay`, re-running a function over a range of its stream's history.

pub mod dead_letter;
pub mod replay;
mod retry_policy;
mod retry_queue;

pub use dead_letter::{
    DeadLetter, LOG_TAIL_BYTES, Reason, error_text, forward as forward_dead_letters, log_tail,
    push_dead_letter_pending,
};
pub use retry_policy::{
    DEFAULT_BACKOFF_FACTOR, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_JITTER,
    DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, RetryPolicy, RetrySettings,
};
pub use retry_queue::{LeasedRetry, RetryKeys, RetryRecord};

/// Loads every settling script into Redis's script cache: pipelines send a script's hash
/// only, and Redis forgets scripts when it restarts.
pub async fn load_scripts<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<()> {
    retry_queue::load_scripts(conn).await?;
    dead_letter::load_script(conn).await
}

use std::time::Duration;

use crate::engine::{InvokeResult, Outcome};

/// What to do with an event after an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done: acknowledge it.
    Ack,
    /// Try again after this delay; the next attempt is `attempt + 1`.
    Retry(Duration),
    /// Give up: move it to the dead-letter stream for this reason.
    DeadLetter(Reason),
}

/// Statuses in the 4xx range that mean "try later" rather than "never".
pub const RETRYABLE_CLIENT_STATUSES: [u16; 2] = [408, 429];

/// Decides the fate of an event whose `attempt`-th invocation gave `result`.
pub fn decide(result: &InvokeResult, attempt: u32, policy: &RetryPolicy) -> Decision {
    let retryable = match result.outcome {
        Outcome::Done => return Decision::Ack,
        Outcome::Rejected => result
            .status
            .is_some_and(|s| RETRYABLE_CLIENT_STATUSES.contains(&s)),
        Outcome::Failed => true,
    };
    if !retryable {
        return Decision::DeadLetter(Reason::Rejected);
    }
    if attempt >= policy.max_attempts {
        return Decision::DeadLetter(Reason::Failed);
    }
    Decision::Retry(policy.delay(attempt + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Captured, Failure};

    fn returned(status: u16) -> InvokeResult {
        InvokeResult::returned(status, Vec::new(), Duration::ZERO, Captured::default())
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(10),
            jitter: 0.0,
        }
    }

    #[test]
    fn the_status_table_decides() {
        let p = policy();
        assert_eq!(decide(&returned(200), 1, &p), Decision::Ack);
        assert_eq!(decide(&returned(204), 3, &p), Decision::Ack);
        assert_eq!(
            decide(&returned(400), 1, &p),
            Decision::DeadLetter(Reason::Rejected)
        );
        assert_eq!(
            decide(&returned(404), 1, &p),
            Decision::DeadLetter(Reason::Rejected)
        );
        assert_eq!(
            decide(&returned(429), 1, &p),
            Decision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            decide(&returned(408), 2, &p),
            Decision::Retry(Duration::from_millis(200))
        );
        assert_eq!(
            decide(&returned(500), 1, &p),
            Decision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            decide(&returned(503), 3, &p),
            Decision::DeadLetter(Reason::Failed)
        );
        let trap = InvokeResult::failed(
            Failure::Timeout { limit_ms: 10 },
            Duration::ZERO,
            Captured::default(),
        );
        assert_eq!(
            decide(&trap, 1, &p),
            Decision::Retry(Duration::from_millis(100))
        );
        assert_eq!(decide(&trap, 3, &p), Decision::DeadLetter(Reason::Failed));
    }
}
