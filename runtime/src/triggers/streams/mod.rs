//! The stream trigger: runs a function on every entry of a Redis stream, through a consumer
//! group, with at-least-once delivery.
//!
//! Per trigger and host there are three loops:
//! - the **reader** takes as many concurrency permits as are free (up to `batch`), then reads
//!   that many new entries with one blocking `XREADGROUP`: never more than `concurrency` in
//!   flight. Every few seconds it also claims entries another
//!   consumer left pending for longer than the function's timeout plus a margin: that consumer
//!   died mid-invocation, and the claim counts as an attempt.
//! - the **retry loop** leases events whose backoff has elapsed from the durable schedule
//!   ([`crate::delivery`]), whichever host scheduled them.
//! - the **acker** sends the `XACK`s of handled entries in batches.
//!
//! Each invocation runs on the host's invocation workers (one thread per core); `concurrency`
//! bounds the events in flight, running or queued for a worker. From the moment an event is
//! read until it is settled, its lease in Redis is kept fresh (its idle time reset by
//! `XCLAIM … JUSTID` to itself, only while it is still this consumer's, or its retry lease
//! extended), so no other host mistakes it for abandoned, however long it waits for a worker
//! or in a host call. An invocation starts only if its lease was confirmed within three
//! quarters of the claim margin, and is cancelled if a refresh finds the event taken over: one event never
//! runs twice at once, even when this host loses Redis for a while. Its outcome is settled in
//! Redis (ack, schedule a retry, or dead-letter) before its permit is released. On shutdown the
//! loops stop reading, invocations in flight finish and are settled, and anything not finished
//! stays pending for another host.

mod config;
pub mod wire;

pub use config::{
    DEAD_LETTER_SUFFIX, DEFAULT_BATCH, DEFAULT_CONCURRENCY, MAX_BATCH, MAX_CONCURRENCY, Start,
    StreamTriggerConfig,
};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sleep_or_cancel;
use crate::broker::{Broker, READ_BLOCK};
use crate::delivery::{
    AckHandle, Acker, DeadLetter, Decision, LeasedRetry, Reason, RetryKeys, RetryRecord,
    dead_letter_pending, decide, error_text, log_tail,
};
use crate::engine::{Failure, Function, InvokeResult, Publisher, RunHooks, Workers};
use crate::metrics::METRICS;
use crate::telemetry::FinishedInvocation;
use tracing::Instrument as _;
use wire::Entry;

/// How often, per idle-time threshold, a reader looks for entries to claim: a dead
/// consumer's entries wait at most a quarter of the threshold past it.
const CLAIM_CHECKS_PER_IDLE: u32 = 4;
/// Longest gap between two claim checks.
const MAX_CLAIM_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a retry loop sleeps before looking at the schedule again (other hosts may have
/// scheduled something sooner).
const RETRY_POLL: Duration = Duration::from_millis(250);
/// First wait after a Redis error in a loop; doubled per failure up to [`MAX_ERROR_BACKOFF`].
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two tries after Redis errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// What every stream trigger of a host shares.
#[derive(Clone)]
pub struct HostContext {
    /// The Redis server.
    pub broker: Broker,
    /// This host's consumer name in every group.
    pub consumer: Arc<str>,
    /// Where published events go (before any function's allow-list).
    pub publisher: Arc<dyn Publisher>,
    /// Where functions' key-value buckets live.
    pub keyvalue: Arc<dyn crate::engine::KeyValue>,
    /// The threads invocations run on.
    pub workers: Workers,
    /// Cancelled when the host is asked to stop: stop reading, finish what is in flight.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace period ends: stop retrying Redis writes and give up.
    pub abandon: CancellationToken,
    /// Extra idle time, beyond the function's timeout, before a pending entry is presumed
    /// abandoned and claimed.
    pub claim_margin: Duration,
    /// Where invocation records go.
    pub recorder: crate::records::Recorder,
    /// Where invocation spans are exported, if anywhere.
    pub spans: crate::telemetry::SpanExport,
}

/// Where an event came from and how often it was tried: what settling it needs.
struct Delivered {
    entry_id: String,
    fields: Vec<(String, Vec<u8>)>,
    attempt: u32,
    history: Option<RetryRecord>,
}

/// The version of a function its triggers run: swapped in place when a new version with the
/// same triggers is deployed, so the switch is immediate and invocations already running
/// finish on the version they started with.
pub type FunctionCell = Arc<std::sync::RwLock<Function>>;

struct Trigger {
    function: FunctionCell,
    publisher: Arc<dyn Publisher>,
    config: StreamTriggerConfig,
    keys: RetryKeys,
    ctx: HostContext,
    conn: ConnectionManager,
    acks: AckHandle,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    retry_wakeup: Notify,
    lease_counter: AtomicU64,
    /// Entries this host is handling now: never claimed as abandoned by this host itself.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// An event's lease as this host last saw it: when Redis last confirmed it is this host's, and
/// whether a refresh found it taken over.
struct Lease {
    confirmed: std::sync::Mutex<Instant>,
    lost: std::sync::atomic::AtomicBool,
}

impl Lease {
    fn new() -> Self {
        Self {
            confirmed: std::sync::Mutex::new(Instant::now()),
            lost: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn confirm(&self) {
        *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Whether the lease was confirmed within `max` and not lost: an invocation started now
    /// ends (at its deadline) before any other host may take the event over.
    fn fresh_within(&self, max: Duration) -> bool {
        !self.lost.load(Ordering::Acquire)
            && self
                .confirmed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                <= max
    }
}

/// KEYS: stream. ARGV: group, consumer, entry id. Resets the entry's idle time only if it is
/// still pending for this consumer (1), else touches nothing (0): a refresh must never take an
/// entry back from a host that claimed it.
static REFRESH_IF_MINE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
        if #pending == 0 then return 0 end
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
        return 1
        ",
    )
});

/// A unit of work: a stream entry delivered for its `attempt`-th time, or a leased retry.
enum Work {
    Entry { entry: Entry, attempt: u32 },
    Retry(LeasedRetry),
}

/// Runs the trigger until `ctx.shutdown` is cancelled, then drains. `publisher` is where the
/// function's published events go (the host's, behind the function's allow-list).
/// `subscribed` fires once the consumer group exists, so a caller can say "ready" truthfully.
pub async fn run(
    function: FunctionCell,
    publisher: Arc<dyn Publisher>,
    config: StreamTriggerConfig,
    ctx: HostContext,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let conn = ctx.broker.shared();
    let acker = Acker::spawn(
        conn.clone(),
        config.stream.clone(),
        config.group.clone(),
        ctx.abandon.clone(),
    );
    let trigger = Arc::new(Trigger {
        keys: RetryKeys::new(&config.stream, &config.group),
        permits: Arc::new(Semaphore::new(config.concurrency)),
        acks: acker.handle(),
        function,
        publisher,
        config,
        conn,
        ctx,
        tasks: TaskTracker::new(),
        retry_wakeup: Notify::new(),
        lease_counter: AtomicU64::new(0),
        in_flight: Default::default(),
    });
    tracing::info!(
        function = trigger.function().name(),
        stream = %trigger.config.stream,
        group = %trigger.config.group,
        consumer = %trigger.ctx.consumer,
        "stream trigger starting"
    );
    METRICS.watch_group(
        &trigger.config.stream,
        &trigger.config.group,
        &trigger.config.dead_letter,
    );
    if let Err(error) =
        crate::delivery::replay::register(&mut trigger.conn.clone(), &trigger.config.dead_letter)
            .await
    {
        tracing::warn!(%error, "recording the dead-letter stream failed");
    }
    if trigger.ensure_group().await {
        // From here no entry added to the stream is missed, whatever the group's start.
        let _ = subscribed.send(());
        let retries = tokio::spawn(trigger.clone().retry_loop());
        trigger.clone().read_loop().await;
        let _ = retries.await;
    }
    trigger.tasks.close();
    tokio::select! {
        _ = trigger.tasks.wait() => {}
        _ = trigger.ctx.abandon.cancelled() => {
            tracing::warn!(
                function = trigger.function().name(),
                stream = %trigger.config.stream,
                in_flight = trigger.tasks.len(),
                "grace period over: invocations still running stay pending for another host"
            );
        }
    }
    let name = trigger.function().name().to_owned();
    let stream = trigger.config.stream.clone();
    drop(trigger);
    acker.close().await;
    tracing::info!(function = %name, %stream, "stream trigger stopped");
}

impl Trigger {
    /// The version to run now.
    fn function(&self) -> Function {
        self.function
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Creates the consumer group (and the stream) if absent. False if shut down first.
    async fn ensure_group(&self) -> bool {
        let config = &self.config;
        retry_until_ok(&self.ctx.shutdown, "creating the consumer group", || {
            let mut conn = self.conn.clone();
            async move {
                let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&config.stream)
                    .arg(&config.group)
                    .arg(config.start.group_start_id())
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match created {
                    Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                    other => other,
                }
            }
        })
        .await
        .is_some()
    }

    fn min_idle(&self) -> Duration {
        self.function().limits().timeout + self.ctx.claim_margin
    }

    async fn read_loop(self: Arc<Self>) {
        let shutdown = self.ctx.shutdown.clone();
        let Some(mut reader) = retry_until_ok(&shutdown, "connecting the stream reader", || {
            let broker = self.ctx.broker.clone();
            async move { broker.dedicated().await }
        })
        .await
        else {
            return;
        };
        let claim_interval = (self.min_idle() / CLAIM_CHECKS_PER_IDLE).min(MAX_CLAIM_INTERVAL);
        let mut last_claim: Option<Instant> = None;
        let mut backoff = ERROR_BACKOFF;
        loop {
            let Some(mut permits) = self.permits_unless_shutdown().await else {
                return;
            };
            if last_claim.is_none_or(|t| t.elapsed() >= claim_interval) {
                last_claim = Some(Instant::now());
                match self.claim_abandoned(permits.len()).await {
                    Ok(claimed) => {
                        for (entry, attempt) in claimed {
                            let permit = permits.pop().expect("claimed at most one per permit");
                            self.spawn(Work::Entry { entry, attempt }, permit);
                        }
                    }
                    Err(error) => self.warn("claiming abandoned entries failed", &error),
                }
                if permits.is_empty() {
                    continue;
                }
            }
            let reply: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.config.group)
                .arg(&*self.ctx.consumer)
                .arg("COUNT")
                .arg(permits.len())
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.config.stream)
                .arg(">")
                .query_async(&mut reader)
                .await;
            let result = reply
                .map_err(|e| e.to_string())
                .and_then(wire::read_reply_entries);
            match result {
                Ok(entries) => {
                    backoff = ERROR_BACKOFF;
                    for entry in entries {
                        let Some(permit) = permits.pop() else {
                            tracing::error!(entry_id = %entry.id, "read more entries than asked for");
                            break;
                        };
                        self.spawn(Work::Entry { entry, attempt: 1 }, permit);
                    }
                }
                Err(error) => {
                    drop(permits);
                    if error.contains("NOGROUP") {
                        // The stream or group vanished (deleted, or Redis restarted without
                        // persistence): make them again.
                        if !self.ensure_group().await {
                            return;
                        }
                        continue;
                    }
                    self.warn("reading the stream failed; retrying", &error);
                    if !sleep_or_cancel(backoff, &shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
            }
        }
    }

    /// [`take_permits`](Self::take_permits), or `None` once the host is stopping.
    async fn permits_unless_shutdown(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        tokio::select! {
            // Shutdown first: free permits are always ready and must not win the race.
            biased;
            _ = self.ctx.shutdown.cancelled() => None,
            held = self.take_permits() => Some(held),
        }
    }

    /// Waits for one free permit, then takes every other free one up to `batch`.
    async fn take_permits(&self) -> Vec<OwnedSemaphorePermit> {
        let first = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut held = vec![first];
        while held.len() < self.config.batch {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        held
    }

    /// Claims up to `max` entries idle longer than the threshold, with their attempt numbers.
    async fn claim_abandoned(&self, max: usize) -> Result<Vec<(Entry, u32)>, String> {
        let mut conn = self.conn.clone();
        let min_idle = self.min_idle().as_millis() as u64;
        let pending: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg("IDLE")
            .arg(min_idle)
            .arg("-")
            .arg("+")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<&str> = {
            let mine = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .iter()
                .map(|(id, ..)| id.as_str())
                .filter(|id| !mine.contains(*id))
                .collect()
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let claimed: redis::Value = redis::cmd("XCLAIM")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(&*self.ctx.consumer)
            .arg(min_idle)
            .arg(&ids)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let entries = wire::entries_of(claimed)?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some((_, previous_owner, idle, deliveries)) =
                pending.iter().find(|(id, ..)| *id == entry.id)
            else {
                continue;
            };
            tracing::warn!(
                function = self.function().name(),
                stream = %self.config.stream,
                entry_id = %entry.id,
                previous_owner = %previous_owner,
                idle_ms = idle,
                attempt = deliveries + 1,
                "claimed an entry its consumer abandoned"
            );
            out.push((entry, deliveries + 1));
        }
        Ok(out)
    }

    async fn retry_loop(self: Arc<Self>) {
        let shutdown = self.ctx.shutdown.clone();
        let mut conn = self.conn.clone();
        let mut backoff = ERROR_BACKOFF;
        loop {
            let Some(mut permits) = self.permits_unless_shutdown().await else {
                return;
            };
            let now = now_ms();
            let lease_until = now + self.min_idle().as_millis() as i64;
            let token = format!(
                "{}:{}",
                self.ctx.consumer,
                self.lease_counter.fetch_add(1, Ordering::Relaxed)
            );
            let leased = self
                .keys
                .lease(&mut conn, now, lease_until, permits.len(), &token)
                .await;
            let wait = match leased {
                Ok(leased) => {
                    backoff = ERROR_BACKOFF;
                    let full = leased.len() == permits.len();
                    for retry in leased {
                        let permit = permits.pop().expect("leased at most one per permit");
                        self.spawn(Work::Retry(retry), permit);
                    }
                    drop(permits);
                    if full {
                        continue;
                    }
                    match self.keys.next_due(&mut conn).await {
                        Ok(Some(due)) => {
                            Duration::from_millis((due - now_ms()).max(0) as u64).min(RETRY_POLL)
                        }
                        Ok(None) => RETRY_POLL,
                        Err(error) => {
                            self.warn("reading the retry schedule failed", &error.to_string());
                            RETRY_POLL
                        }
                    }
                }
                Err(error) => {
                    drop(permits);
                    self.warn("leasing due retries failed", &error.to_string());
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.retry_wakeup.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn spawn(self: &Arc<Self>, work: Work, permit: OwnedSemaphorePermit) {
        let trigger = self.clone();
        let entry_id = match &work {
            Work::Entry { entry, .. } => Some(entry.id.clone()),
            Work::Retry(_) => None,
        };
        if let Some(id) = &entry_id {
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
        }
        self.tasks.spawn(async move {
            trigger.handle(work).await;
            if let Some(id) = entry_id {
                trigger
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
            drop(permit);
        });
    }

    async fn handle(self: &Arc<Self>, work: Work) {
        let (entry_id, fields, attempt) = match &work {
            Work::Entry { entry, attempt } => match &entry.fields {
                Some(fields) => (entry.id.clone(), fields.clone(), *attempt),
                None => {
                    // Deleted from the stream while pending: nothing left to handle.
                    self.acks.ack(entry.id.clone());
                    return;
                }
            },
            Work::Retry(leased) => (
                leased.entry_id.clone(),
                leased.record.fields.clone(),
                leased.attempt,
            ),
        };
        if !self.config.handles(wire::event_type(&fields)) {
            // Only a replay from history can schedule an entry of another type.
            match &work {
                Work::Entry { .. } => self.acks.ack(entry_id),
                Work::Retry(leased) => {
                    self.settle("dropping an entry of another type", |mut conn| {
                        let keys = self.keys.clone();
                        let leased = leased.clone();
                        async move { keys.finish(&mut conn, &leased).await }
                    })
                    .await
                }
            }
            return;
        }
        let history = match &work {
            Work::Retry(leased) => Some(leased.record.clone()),
            Work::Entry { .. } => None,
        };
        if attempt > self.config.retry.max_attempts {
            let (status, error) = match &history {
                Some(h) => (h.last_status, h.last_error.clone()),
                None => (None, String::new()),
            };
            let error = format!(
                "hosts stopped while handling it on {} attempts{}",
                attempt - 1,
                if error.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {error}")
                }
            );
            let letter = self.letter(
                &entry_id,
                Reason::Abandoned,
                status,
                error,
                String::new(),
                attempt - 1,
                history.as_ref(),
            );
            self.dead_letter(&work, &fields, letter).await;
            return;
        }
        let event = match wire::to_event(&self.config.stream, &entry_id, &fields, attempt) {
            Ok(event) => event,
            Err(malformed) => {
                let letter = self.letter(
                    &entry_id,
                    Reason::Malformed,
                    None,
                    malformed.to_string(),
                    String::new(),
                    attempt - 1,
                    history.as_ref(),
                );
                self.dead_letter(&work, &fields, letter).await;
                return;
            }
        };
        let function = self.function();
        // One span per invocation: everything logged while handling the event carries it, and
        // its outcome, status and duration are filled in when the function returns.
        let span = tracing::info_span!(
            "invocation",
            function = function.name(),
            version = function.version(),
            event_id = %event.id,
            stream = %self.config.stream,
            entry_id = %entry_id,
            attempt,
            trace_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        self.invoke(
            work,
            function,
            event,
            Delivered {
                entry_id,
                fields,
                attempt,
                history,
            },
        )
        .instrument(span)
        .await;
    }

    /// Runs the function on one parsed event, then acks, retries or dead-letters it.
    async fn invoke(
        self: &Arc<Self>,
        work: Work,
        function: Function,
        event: crate::event::Event,
        delivered: Delivered,
    ) {
        let Delivered {
            entry_id,
            fields,
            attempt,
            history,
        } = delivered;
        let function_name = function.name().to_owned();
        let event_id = event.id.clone();
        let event_type = event.event_type.clone();
        let ext = |name: &str| {
            event
                .extensions
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let correlation_id = ext("correlationid").unwrap_or_else(|| event.id.clone());
        let caused_by = ext(wire::CAUSATION_EXTENSION);
        METRICS.in_flight(&function_name, 1);
        let lease = Arc::new(Lease::new());
        let cancel = tokio_util::sync::CancellationToken::new();
        let may_start = {
            // Another host may take the event once it has been idle for the timeout plus the
            // margin; started within three quarters of the margin of its last confirmation, the
            // invocation ends (at its deadline) with a quarter margin to spare.
            let (lease, max) = (lease.clone(), self.ctx.claim_margin * 3 / 4);
            Box::new(move || lease.fresh_within(max))
        };
        let submitted = self.ctx.workers.submit(
            function.clone(),
            event,
            crate::engine::Services {
                publisher: self.publisher.clone(),
                keyvalue: self.ctx.keyvalue.clone(),
            },
            RunHooks {
                may_start: Some(may_start),
                cancel: Some(cancel.clone()),
                ..RunHooks::default()
            },
            None,
        );
        let ran = self
            .keep_fresh(&work, &lease, &cancel, submitted.done)
            .await;
        METRICS.in_flight(&function_name, -1);
        let result = match ran {
            Ok(Some(result)) => result,
            Ok(None) => {
                // Not started (its lease could not be confirmed in time) or cancelled (taken
                // over): it is not this host's to settle. Redis still has it pending or leased,
                // and whoever holds it now, or the next claim, handles it.
                tracing::warn!(
                    function = %function_name, stream = %self.config.stream, entry_id = %entry_id,
                    "event left to its current holder: its lease here was stale or taken over"
                );
                return;
            }
            Err(_) => InvokeResult::failed(
                Failure::Trap {
                    message: "host error: the invocation worker stopped".to_owned(),
                    panic: None,
                },
                Duration::ZERO,
                Default::default(),
            ),
        };
        METRICS.invocation(
            &function_name,
            result.duration.as_secs_f64(),
            result.instantiation.as_secs_f64(),
        );
        let decision = decide(&result, attempt, &self.config.retry);
        let ended = std::time::SystemTime::now();
        let error = result.failure.as_ref().map(|_| error_text(&result));
        let current = tracing::Span::current();
        current.record("outcome", result.outcome.as_str());
        current.record("status", result.status);
        current.record(
            "duration_ms",
            (result.duration.as_secs_f64() * 1e6).round() / 1e3,
        );
        if let Some(span) = &result.span {
            current.record("trace_id", span.trace_id.as_str());
            self.ctx.spans.finished(&FinishedInvocation {
                span,
                function: &function_name,
                version: function.version(),
                event_id: &event_id,
                event_type: &event_type,
                stream: &self.config.stream,
                entry_id: &entry_id,
                attempt,
                outcome: result.outcome.as_str(),
                status: result.status,
                error: error.as_deref(),
                ended,
                duration: result.duration,
            });
        }
        self.ctx.recorder.record(crate::records::Record {
            time: chrono::DateTime::<chrono::Utc>::from(ended)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            function: function_name.clone(),
            event_id: event_id.clone(),
            event_type,
            stream: Some(self.config.stream.clone()),
            entry_id: Some(entry_id.clone()),
            attempt,
            status: result.status,
            outcome: result.outcome.as_str().to_owned(),
            error,
            duration_ms: result.duration.as_secs_f64() * 1000.0,
            host: self.ctx.consumer.to_string(),
            correlation_id,
            caused_by,
            logs: crate::records::bounded_logs(&log_tail(&result.output)),
        });
        METRICS.event(
            &function_name,
            match (decision, result.outcome) {
                (Decision::Ack, _) => "ok",
                (_, crate::engine::Outcome::Rejected) => "rejected",
                _ => "failed",
            },
        );
        match decision {
            Decision::Retry(_) => METRICS.event(&function_name, "retried"),
            Decision::DeadLetter(_) => METRICS.event(&function_name, "dead_lettered"),
            Decision::Ack => {}
        }
        tracing::debug!("invoked");
        match decision {
            Decision::Ack => match &work {
                Work::Entry { .. } => self.acks.ack(entry_id),
                Work::Retry(leased) => {
                    self.settle("finishing a retried event", |mut conn| {
                        let keys = self.keys.clone();
                        let leased = leased.clone();
                        async move { keys.finish(&mut conn, &leased).await }
                    })
                    .await;
                }
            },
            Decision::Retry(delay) => {
                let now = now_ms();
                let record = RetryRecord {
                    fields,
                    first_failure_ms: history.as_ref().map_or(now, |h| h.first_failure_ms),
                    last_failure_ms: now,
                    last_status: result.status,
                    last_error: error_text(&result),
                    log_tail: log_tail(&result.output),
                };
                let due = now + delay.as_millis() as i64;
                tracing::info!(
                    function = self.function().name(),
                    stream = %self.config.stream,
                    entry_id = %entry_id,
                    attempt,
                    error = %record.last_error,
                    retry_in_ms = delay.as_millis() as u64,
                    "invocation failed; retry scheduled"
                );
                match &work {
                    Work::Entry { .. } => {
                        self.settle("scheduling a retry", |mut conn| {
                            let keys = self.keys.clone();
                            let record = record.clone();
                            let (stream, group, id) = (
                                self.config.stream.clone(),
                                self.config.group.clone(),
                                entry_id.clone(),
                            );
                            async move {
                                keys.schedule_first(
                                    &mut conn, &stream, &group, &id, due, attempt, &record,
                                )
                                .await
                            }
                        })
                        .await;
                    }
                    Work::Retry(leased) => {
                        self.settle("rescheduling a retry", |mut conn| {
                            let keys = self.keys.clone();
                            let record = record.clone();
                            let leased = leased.clone();
                            async move { keys.reschedule(&mut conn, &leased, due, &record).await }
                        })
                        .await;
                    }
                }
                self.retry_wakeup.notify_one();
            }
            Decision::DeadLetter(reason) => {
                let letter = self.letter(
                    &entry_id,
                    reason,
                    result.status,
                    error_text(&result),
                    log_tail(&result.output),
                    attempt,
                    history.as_ref(),
                );
                self.dead_letter(&work, &fields, letter).await;
            }
        }
    }

    /// Waits for the invocation's result, keeping the event's lease fresh meanwhile (every
    /// quarter of the claim margin): while it waits for an instance or a worker and while it
    /// runs, whatever it waits on. A refresh that finds the event no longer this host's marks
    /// the lease lost and cancels the invocation.
    async fn keep_fresh(
        &self,
        work: &Work,
        lease: &Lease,
        cancel: &tokio_util::sync::CancellationToken,
        mut done: tokio::sync::oneshot::Receiver<Option<InvokeResult>>,
    ) -> Result<Option<InvokeResult>, tokio::sync::oneshot::error::RecvError> {
        let every = (self.ctx.claim_margin / 4).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                result = &mut done => return result,
                _ = tokio::time::sleep(every) => {}
            }
            let mut conn = self.conn.clone();
            let refreshed: redis::RedisResult<bool> = match work {
                Work::Entry { entry, .. } => {
                    let mut invocation = REFRESH_IF_MINE.prepare_invoke();
                    invocation
                        .key(&self.config.stream)
                        .arg(&self.config.group)
                        .arg(&*self.ctx.consumer)
                        .arg(&entry.id);
                    invocation
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .map(|mine| mine == 1)
                }
                Work::Retry(leased) => {
                    let until = now_ms() + self.min_idle().as_millis() as i64;
                    self.keys.extend_lease(&mut conn, leased, until).await
                }
            };
            match refreshed {
                Ok(true) => lease.confirm(),
                Ok(false) => {
                    if !lease.lost.swap(true, Ordering::AcqRel) {
                        self.warn(
                            "an event this host holds was taken over by another host; \
                             stopping its invocation",
                            "lease lost",
                        );
                    }
                    cancel.cancel();
                }
                Err(error) => self.warn("refreshing an event's lease failed", &error.to_string()),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn letter(
        &self,
        entry_id: &str,
        reason: Reason,
        status: Option<u16>,
        error: String,
        logs: String,
        attempts: u32,
        history: Option<&RetryRecord>,
    ) -> DeadLetter {
        let now = now_ms();
        DeadLetter {
            reason,
            function: self.function().name().to_owned(),
            group: self.config.group.clone(),
            stream: self.config.stream.clone(),
            entry_id: entry_id.to_owned(),
            status,
            error,
            logs,
            attempts,
            first_failure_ms: history.map_or(now, |h| h.first_failure_ms),
            last_failure_ms: now,
        }
    }

    async fn dead_letter(&self, work: &Work, fields: &[(String, Vec<u8>)], letter: DeadLetter) {
        if matches!(letter.reason, Reason::Malformed | Reason::Abandoned) {
            // Not counted by the invocation path: these never reached the function.
            METRICS.event(&letter.function, "dead_lettered");
        }
        tracing::warn!(
            function = self.function().name(),
            stream = %self.config.stream,
            entry_id = %letter.entry_id,
            reason = letter.reason.as_str(),
            attempts = letter.attempts,
            error = %letter.error,
            dead_letter = %self.config.dead_letter,
            "dead-lettering"
        );
        let dlq = self.config.dead_letter.clone();
        match work {
            Work::Entry { .. } => {
                self.settle("dead-lettering", |mut conn| {
                    let (dlq, letter) = (dlq.clone(), letter.clone());
                    let fields = fields.to_vec();
                    async move { dead_letter_pending(&mut conn, &dlq, &fields, &letter).await }
                })
                .await;
            }
            Work::Retry(leased) => {
                self.settle("dead-lettering a retried event", |mut conn| {
                    let (dlq, letter, leased) = (dlq.clone(), letter.clone(), leased.clone());
                    let keys = self.keys.clone();
                    async move { keys.dead_letter(&mut conn, &dlq, &leased, &letter).await }
                })
                .await;
            }
        }
    }

    /// Runs a settling write until it succeeds or the grace period ends; an unsettled event
    /// stays pending (or leased) and is delivered again, so giving up loses nothing.
    async fn settle<T, F, Fut>(&self, what: &str, op: F)
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn.clone();
        let _ = retry_until_ok(&self.ctx.abandon, what, || op(conn.clone())).await;
    }

    fn warn(&self, what: &str, error: &str) {
        tracing::warn!(
            function = self.function().name(),
            stream = %self.config.stream,
            group = %self.config.group,
            %error,
            "{what}"
        );
    }
}

/// Retries `op` with backoff until it succeeds (`Some`) or `cancel` fires (`None`).
async fn retry_until_ok<T, E, F, Fut>(cancel: &CancellationToken, what: &str, op: F) -> Option<T>
where
    E: std::fmt::Display,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = ERROR_BACKOFF;
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::warn!(%error, "{what} failed; retrying in {backoff:?}");
                if !sleep_or_cancel(backoff, cancel).await {
                    return None;
                }
                backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
