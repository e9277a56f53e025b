//! A stream trigger's settings, validated: what the `[[triggers.stream]]` manifest section
//! turns into. Every setting has a named default.

use std::time::Duration;

use crate::delivery::RetryPolicy;

/// Entries read per `XREADGROUP` at most.
pub const DEFAULT_BATCH: usize = 32;
/// Highest batch accepted.
pub const MAX_BATCH: usize = 1000;
/// Events of one trigger in flight at once on one host: running on a worker or queued for one.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Highest concurrency accepted (the engine's instance pool is the real ceiling).
pub const MAX_CONCURRENCY: usize = 256;
/// How long a read waits at most for a batch to fill: none by default (read what is there).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::ZERO;
/// The longest batch window accepted.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(10);
/// Suffix of the default dead-letter stream: `<stream>.dlq`.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Only entries added after the group was created (`$`).
    Latest,
    /// Everything still in the stream (`0`): a new function replays history.
    Earliest,
}

impl Start {
    /// The id given to `XGROUP CREATE`.
    pub fn group_start_id(self) -> &'static str {
        match self {
            Start::Latest => "$",
            Start::Earliest => "0",
        }
    }
}

/// How many events one instance of the function handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Instance {
    /// A fresh instance per event (the default): no state leaks from one event to the next.
    #[default]
    PerEvent,
    /// One instance per batch, its events handled one after another: no instantiation per
    /// event, for throughput. Each event keeps its own status, deadline, budgets and retries;
    /// what one event leaves in the instance's memory the next one sees. After a trap (or a
    /// timeout) the next event starts in a fresh instance.
    PerBatch,
}

/// One stream trigger of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamTriggerConfig {
    /// The stream read.
    pub stream: String,
    /// The consumer group (default: the function's name).
    pub group: String,
    /// Event types handled; others are acknowledged untouched. `None` handles every type.
    pub types: Option<Vec<String>>,
    /// Where a new group starts (default latest).
    pub start: Start,
    /// Entries per read at most ([`DEFAULT_BATCH`]).
    pub batch: usize,
    /// Invocations in flight per host ([`DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// How failures are retried.
    pub retry: RetryPolicy,
    /// Where events that cannot succeed go (default `<stream>.dlq`).
    pub dead_letter: String,
    /// One instance per event or per batch ([`Instance::PerEvent`] by default).
    pub instance: Instance,
    /// How long a read waits for more entries to fill its batch ([`DEFAULT_BATCH_WINDOW`]).
    pub batch_window: Duration,
    /// What the stream keeps, if the manifest says ([`crate::retention`] has the default).
    pub retention: Option<crate::retention::Retention>,
    /// The circuit breaker, if the manifest has one ([`super::flow`]).
    pub breaker: Option<super::flow::BreakerConfig>,
    /// Ordering by key, if the manifest asks for it ([`super::order`]).
    pub ordering: Option<super::order::Ordering>,
    /// The function's cluster-wide limits, shared by all its triggers ([`super::limits`]).
    pub cluster: super::limits::ClusterLimits,
    /// Whether events are checked against their type's schema before running
    /// ([`crate::schemas`]): one that does not match is dead-lettered as `invalid`.
    pub validate: bool,
}

impl StreamTriggerConfig {
    /// Whether an entry of type `event_type` is for this trigger.
    pub fn handles(&self, event_type: Option<&str>) -> bool {
        match &self.types {
            None => true,
            Some(types) => event_type.is_some_and(|t| types.iter().any(|x| x == t)),
        }
    }
}
