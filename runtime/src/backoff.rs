//! Waiting between tries: the one backoff every loop of the host uses when Redis, a socket or
//! a listener fails, and the one interruptible sleep.
//!
//! A loop that talks to something that can go away (a Redis read, a deployments follower, the
//! API's accept) keeps a [`Backoff`]: after a failure it waits [`Backoff::wait`], which doubles
//! from the first pause up to the ceiling, and a success puts it back at the first pause
//! ([`Backoff::reset`]). Every wait is cut short by the loop's cancellation token, so a host
//! stops promptly however long it was waiting.
//!
//! This is not the retry policy of a failed *event* (that is [`crate::delivery::RetryPolicy`],
//! durable in Redis and set per function): it only paces a process's own reconnects.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First pause after a failed Redis command in a host loop.
pub const REDIS_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between two tries of a Redis command in a host loop: short enough that a
/// Redis back from a restart is noticed within seconds.
pub const REDIS_CEILING: Duration = Duration::from_secs(5);
/// First pause after a failed `accept` (out of file descriptors, say).
pub const ACCEPT_FIRST: Duration = Duration::from_millis(10);
/// Longest pause between two failed `accept`s.
pub const ACCEPT_CEILING: Duration = Duration::from_secs(1);

/// Exponential backoff: the pause to take after each failure, doubling up to a ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    ceiling: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `first` and doubling up to `ceiling`.
    pub const fn new(first: Duration, ceiling: Duration) -> Self {
        Backoff {
            first,
            ceiling,
            next: first,
        }
    }

    /// The backoff of a loop reading or writing Redis ([`REDIS_FIRST`] to [`REDIS_CEILING`]).
    pub const fn redis() -> Self {
        Backoff::new(REDIS_FIRST, REDIS_CEILING)
    }

    /// The backoff of an accept loop ([`ACCEPT_FIRST`] to [`ACCEPT_CEILING`]).
    pub const fn accept() -> Self {
        Backoff::new(ACCEPT_FIRST, ACCEPT_CEILING)
    }

    /// The pause the next failure waits.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Takes the pause for this failure and doubles the next one, up to the ceiling.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.ceiling);
        pause
    }

    /// Back to the first pause: call after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Waits this failure's pause; false if `cancel` fired first (the loop should end).
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let pause = self.next_pause();
        sleep_or_cancel(pause, cancel).await
    }
}

/// Sleeps for `duration`; false if `cancel` fired first. Every timer and backoff wait of the
/// host goes through it, so every loop stops promptly on shutdown.
pub async fn sleep_or_cancel(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = cancel.cancelled() => false,
    }
}

/// Retries `op` with [`Backoff::redis`] until it succeeds (`Some`) or `cancel` fires (`None`);
/// with `cancel` already fired, `op` is tried once. Each failure is logged with `what`.
pub async fn retry_until_ok<T, E, F, Fut>(
    cancel: &CancellationToken,
    what: &str,
    mut op: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::redis();
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::warn!(%error, "{what} failed; retrying in {:?}", backoff.peek());
                if !backoff.wait(cancel).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling_and_reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let pauses: Vec<u128> = (0..5).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_cancelled_wait_ends_at_once() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(!backoff.wait(&cancel).await);
        let mut tries = 0;
        let out: Option<()> = retry_until_ok(&cancel, "test", || {
            tries += 1;
            async { Err::<(), _>("down") }
        })
        .await;
        assert_eq!((out, tries), (None, 1));
    }
}
