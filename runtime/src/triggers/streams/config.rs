//! A stream trigger's settings: the `[[triggers.stream]]` manifest section as written
//! ([`StreamTriggerSettings`]), its validation ([`StreamTriggerConfig::from_settings`]), and
//! what it turns into. Every setting has a named default.

use std::time::Duration;

use crate::delivery::{RetryPolicy, RetrySettings};
use crate::names::{GroupName, StreamName};
use crate::retention::{Retention, RetentionSettings};
use crate::settings::{self, FieldError};

use super::flow::{BreakerConfig, BreakerSettings};
use super::limits::ClusterLimits;
use super::order::{Ordering, Unkeyed};

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
    pub stream: StreamName,
    /// The consumer group (default: the function's name).
    pub group: GroupName,
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
    pub dead_letter: StreamName,
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

/// One `[[triggers.stream]]` section, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamTriggerSettings {
    stream: String,
    group: Option<String>,
    types: Option<Vec<String>>,
    start: Option<Start>,
    batch: Option<i64>,
    concurrency: Option<i64>,
    retry: Option<RetrySettings>,
    dead_letter: Option<String>,
    instance: Option<Instance>,
    batch_window: Option<String>,
    retention: Option<RetentionSettings>,
    breaker: Option<BreakerSettings>,
    ordering: Option<String>,
    validate: Option<bool>,
    key: Option<String>,
    unkeyed: Option<Unkeyed>,
}

impl StreamTriggerConfig {
    /// The trigger the section at `at` asks for, of function `function` (its default group)
    /// under the function's cluster-wide limits, or the field at fault.
    pub fn from_settings(
        at: &str,
        t: StreamTriggerSettings,
        function: &str,
        cluster: ClusterLimits,
    ) -> Result<StreamTriggerConfig, FieldError> {
        let stream = settings::named(&format!("{at}.stream"), t.stream, StreamName::new)?;
        let group = settings::named(
            &format!("{at}.group"),
            t.group.unwrap_or_else(|| function.to_owned()),
            GroupName::new,
        )?;
        if let Some(types) = &t.types {
            settings::check(
                &format!("{at}.types"),
                &format!("{types:?}"),
                !types.is_empty() && types.iter().all(|t| !t.trim().is_empty()),
                "a non-empty list of non-empty event types (leave it out to handle every type)",
            )?;
        }
        let batch = settings::range(&format!("{at}.batch"), t.batch, DEFAULT_BATCH, 1, MAX_BATCH)?;
        let concurrency = settings::range(
            &format!("{at}.concurrency"),
            t.concurrency,
            DEFAULT_CONCURRENCY,
            1,
            MAX_CONCURRENCY,
        )?;
        let retry = RetryPolicy::from_settings(&format!("{at}.retry"), t.retry)?;
        let dead_letter = settings::named(
            &format!("{at}.dead_letter"),
            t.dead_letter
                .unwrap_or_else(|| format!("{stream}{DEAD_LETTER_SUFFIX}")),
            StreamName::new,
        )?;
        settings::check(
            &format!("{at}.dead_letter"),
            &dead_letter,
            dead_letter != stream,
            "a stream name other than the trigger's own stream",
        )?;
        let batch_window = match &t.batch_window {
            None => DEFAULT_BATCH_WINDOW,
            Some(text) => settings::duration_where(
                &format!("{at}.batch_window"),
                text,
                |window| window <= MAX_BATCH_WINDOW,
                &format!("a duration of at most {MAX_BATCH_WINDOW:?}"),
            )?,
        };
        let retention = match t.retention {
            None => None,
            Some(raw) => Some(Retention::from_settings(&format!("{at}.retention"), raw)?),
        };
        let breaker = match t.breaker {
            None => None,
            Some(raw) => Some(BreakerConfig::from_settings(&format!("{at}.breaker"), raw)?),
        };
        let ordering =
            Ordering::from_settings(at, t.ordering.as_deref(), t.key.as_deref(), t.unkeyed)?;
        Ok(StreamTriggerConfig {
            stream,
            group,
            types: t.types,
            start: t.start.unwrap_or(Start::Latest),
            batch,
            concurrency,
            retry,
            dead_letter,
            instance: t.instance.unwrap_or_default(),
            batch_window,
            retention,
            breaker,
            ordering,
            cluster,
            validate: t.validate.unwrap_or(false),
        })
    }
}
