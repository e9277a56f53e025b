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
