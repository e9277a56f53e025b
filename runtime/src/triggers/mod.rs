//! Triggers turn things that happen outside into function invocations.
//!
//! - [`streams`]: entries of Redis streams, read through consumer groups.
//! - [`cron`]: schedules; their ticks become events in a stream (a function's own internal
//!   stream, read by an ordinary stream trigger, or any stream for a cronjob).
//!
//! A trigger owns its manifest section and its read loop; what an outcome means (ack, retry,
//! dead-letter) belongs to [`crate::delivery`], shared by all of them.

pub mod cron;
pub mod streams;

/// Sleeps for `duration`; false if `cancel` fired first. Every trigger loop's backoff and
/// timer waits go through it, so they all stop promptly on shutdown.
pub(crate) async fn sleep_or_cancel(
    duration: std::time::Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = cancel.cancelled() => false,
    }
}

/// First wait after a failed try in [`retry_until_ok`]; doubled per failure up to
/// [`MAX_RETRY_BACKOFF`].
pub(crate) const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// Longest wait between two tries in [`retry_until_ok`].
pub(crate) const MAX_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// Retries `op` with backoff until it succeeds (`Some`) or `cancel` fires (`None`); with
/// `cancel` already fired, `op` is tried once. The one retry loop of the triggers' Redis work.
pub(crate) async fn retry_until_ok<T, E, F, Fut>(
    cancel: &tokio_util::sync::CancellationToken,
    what: &str,
    mut op: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = RETRY_BACKOFF;
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::warn!(%error, "{what} failed; retrying in {backoff:?}");
                if !sleep_or_cancel(backoff, cancel).await {
                    return None;
                }
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
            }
        }
    }
}
