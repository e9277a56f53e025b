//! The per-function counters the web page's charts are drawn from: what each function's
//! invocations on this host did since [`crate::charts`]' sampler last looked. The per-event
//! path adds to two relaxed atomics here; the sampler takes and zeroes them every step.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use crate::outcome::Outcome;

/// The upper bound of the first duration bucket; each next one doubles it.
const FIRST_BUCKET_SECONDS: f64 = 0.000_05;
/// Duration buckets: 50 µs doubling up to about 52 s, and one for anything longer.
pub const BUCKETS: usize = 21;
/// What one function's invocations on this host did since the sampler last looked.
#[derive(Default)]
pub struct Window {
    done: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    durations: [AtomicU64; BUCKETS + 1],
}

impl Window {
    /// Counts one invocation that ended in `outcome` after `seconds`.
    pub fn record(&self, outcome: Outcome, seconds: f64) {
        let counter = match outcome {
            Outcome::Done => &self.done,
            Outcome::Rejected => &self.rejected,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.durations[bucket_of(seconds)].fetch_add(1, Ordering::Relaxed);
    }

    /// What was counted, zeroing it.
    pub fn take(&self) -> Sample {
        Sample {
            done: self.done.swap(0, Ordering::Relaxed),
            rejected: self.rejected.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
            durations: std::array::from_fn(|i| self.durations[i].swap(0, Ordering::Relaxed)),
        }
    }
}

fn bucket_of(seconds: f64) -> usize {
    let mut bound = FIRST_BUCKET_SECONDS;
    for i in 0..BUCKETS {
        if seconds <= bound {
            return i;
        }
        bound *= 2.0;
    }
    BUCKETS
}

/// The upper bound of bucket `i`, in seconds (the last one has none; twice the one before).
pub fn bound_of(i: usize) -> f64 {
    FIRST_BUCKET_SECONDS * 2f64.powi(i as i32)
}

/// What a [`Window`] counted between two looks.
pub struct Sample {
    /// Invocations that ended done.
    pub done: u64,
    /// Invocations that ended rejected.
    pub rejected: u64,
    /// Invocations that ended failed.
    pub failed: u64,
    /// Invocations per duration bucket (see [`bound_of`]).
    pub durations: [u64; BUCKETS + 1],
}

impl Sample {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.done + self.rejected + self.failed == 0
    }
}

static WINDOWS: LazyLock<Mutex<BTreeMap<String, Arc<Window>>>> = LazyLock::new(Default::default);

/// The window `function`'s invocations on this host are counted in.
pub fn window(function: &str) -> Arc<Window> {
    WINDOWS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(function.to_owned())
        .or_default()
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_doubling_buckets() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.000_05), 0);
        assert_eq!(bucket_of(0.000_06), 1);
        assert_eq!(bucket_of(0.001), 5); // 50 µs · 2^5 = 1.6 ms
        assert_eq!(bucket_of(1e9), BUCKETS);
    }

    #[test]
    fn a_window_counts_and_takes() {
        let window = Window::default();
        window.record(Outcome::Done, 0.001);
        window.record(Outcome::Failed, 0.002);
        window.record(Outcome::Rejected, 0.0001);
        let sample = window.take();
        assert_eq!((sample.done, sample.rejected, sample.failed), (1, 1, 1));
        assert_eq!(sample.durations.iter().sum::<u64>(), 3);
        assert!(window.take().is_empty());
    }
}
