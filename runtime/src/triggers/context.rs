//! What a trigger is handed when it starts, in three parts that change at different times:
//!
//! - [`TriggerServices`]: the host's shared services (Redis, the invocation workers, where
//!   records and spans go, the flow and schema views). One set per host, cloned into every
//!   trigger; nothing in it belongs to one function.
//! - [`FunctionSlot`]: the function a trigger feeds: the version it runs now (swapped in place
//!   by a deploy), the canary taking a share while one runs, and the publisher behind the
//!   function's allow-list. One per function, shared by its triggers.
//! - [`Lifecycle`]: when to stop reading and when to give up on what is in flight. One per
//!   function, so a deploy can stop one function's triggers and leave the others running.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::engine::{AllowedStreams, Function, KeyValue, Publisher, Workers};

/// The host's shared services, the same for every trigger of the host.
#[derive(Clone)]
pub struct TriggerServices {
    /// The Redis server.
    pub broker: Broker,
    /// This host's consumer name in every group.
    pub consumer: Arc<str>,
    /// Where functions' key-value buckets live.
    pub keyvalue: Arc<dyn KeyValue>,
    /// The threads invocations run on.
    pub workers: Workers,
    /// Extra idle time, beyond the function's timeout, before a pending entry is presumed
    /// abandoned and claimed.
    pub claim_margin: Duration,
    /// Where invocation records go.
    pub recorder: crate::records::Recorder,
    /// Where invocation spans are exported, if anywhere.
    pub spans: crate::telemetry::SpanExport,
    /// Every trigger's pause and breaker state, as last read
    /// ([`super::streams::flow::watch`]).
    pub flow: super::streams::flow::FlowView,
    /// The event schemas, as last read ([`crate::schemas::watch`]).
    pub schemas: crate::schemas::SchemaView,
    /// Where published events go, schema-checked, before any function's allow-list: private,
    /// so a trigger only ever publishes through [`publisher_for`](Self::publisher_for).
    publisher: Arc<dyn Publisher>,
}

impl TriggerServices {
    /// The services of a host whose functions publish through `publisher`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        broker: Broker,
        consumer: Arc<str>,
        publisher: Arc<dyn Publisher>,
        keyvalue: Arc<dyn KeyValue>,
        workers: Workers,
        claim_margin: Duration,
        recorder: crate::records::Recorder,
        spans: crate::telemetry::SpanExport,
        flow: super::streams::flow::FlowView,
        schemas: crate::schemas::SchemaView,
    ) -> Self {
        TriggerServices {
            broker,
            consumer,
            keyvalue,
            workers,
            claim_margin,
            recorder,
            spans,
            flow,
            schemas,
            publisher,
        }
    }

    /// The publisher of a function allowed to publish to `allowed` streams only.
    pub fn publisher_for(&self, allowed: Vec<String>) -> Arc<dyn Publisher> {
        Arc::new(AllowedStreams::new(self.publisher.clone(), allowed))
    }
}

/// When a function's triggers stop.
#[derive(Clone)]
pub struct Lifecycle {
    /// Cancelled when the function's triggers should stop (the host stops, or a deploy
    /// replaces or removes the function): stop reading, finish what is in flight.
    pub stop: CancellationToken,
    /// Cancelled when the host's grace period ends: stop retrying Redis writes and give up.
    pub abandon: CancellationToken,
}

/// The version of a function its triggers run: swapped in place when a new version with the
/// same triggers is deployed, so the switch is immediate and invocations already running
/// finish on the version they started with.
pub type FunctionCell = Arc<std::sync::RwLock<Function>>;

/// A canary version a function's triggers send a share of events to.
#[derive(Clone)]
pub struct CanaryRun {
    /// Its version number.
    pub version: u32,
    /// The share of events it takes (%).
    pub percent: u8,
    /// The version itself.
    pub function: Function,
}

/// Where a function's triggers find its running canary, if any; set by the deployment follower.
pub type CanaryCell = Arc<std::sync::RwLock<Option<CanaryRun>>>;

/// The function a trigger feeds, shared by every trigger of that function.
#[derive(Clone)]
pub struct FunctionSlot {
    /// The version running now.
    pub current: FunctionCell,
    /// The canary version while a canary deploy runs ([`crate::canary`]).
    pub canary: CanaryCell,
    /// Where its published events go: the host's, behind the function's allow-list.
    pub publisher: Arc<dyn Publisher>,
}

impl FunctionSlot {
    /// A slot running `function`, publishing through `publisher`, with no canary.
    pub fn new(function: Function, publisher: Arc<dyn Publisher>) -> Self {
        FunctionSlot {
            current: Arc::new(std::sync::RwLock::new(function)),
            canary: Default::default(),
            publisher,
        }
    }

    /// The version running now.
    pub fn function(&self) -> Function {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
