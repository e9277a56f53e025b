//! The stream trigger: runs a function on every entry of a Redis stream, through a consumer
//! group, with at-least-once delivery.
//!
//! The unit of work is a read batch, in stages, each in its own file:
//! 1. **read** (here): per trigger and host, a reader takes as many concurrency permits as are
//!    free (up to `batch`) and reads that many new entries with one blocking `XREADGROUP`;
//!    every few seconds it also claims entries a dead consumer left pending (the claim counts
//!    as an attempt). A retry loop leases due events from the durable schedule
//!    ([`crate::delivery`]). Both give [`plan::Delivery`] values, one type whatever the source.
//! 2. **screen and run** (`batch`): entries that cannot reach the function (deleted, of
//!    another type, malformed, out of attempts) are decided at once; the rest go to the
//!    invocation workers as one job per worker thread, not one per event. Their leases are
//!    kept fresh together while they wait and run, so no other host mistakes them for
//!    abandoned; an invocation starts only if its lease was confirmed recently, and is
//!    cancelled if a refresh finds it taken over: one event never runs twice at once.
//! 3. **plan** ([`plan`]): outcomes in, a settlement out (acks, retry schedules, reschedules,
//!    dead letters). Pure, with every row of the outcome table tested without Redis.
//! 4. **settle** (`settle`): the settlement in one pipeline, retried until it lands.
//! 5. **observe** ([`observe`]): metrics, spans and invocation records, from one place.
//!
//! An event's permit is released only once its outcome is settled in Redis, so `concurrency`
//! bounds the events in flight. On shutdown the loops stop reading, invocations in flight
//! finish and are settled, and anything not finished stays pending for another host.

mod batch;
mod config;
pub mod flow;
pub mod limits;
pub mod observe;
pub mod order;
pub mod plan;
mod settle;

pub use config::{
    DEAD_LETTER_SUFFIX, DEFAULT_BATCH, DEFAULT_BATCH_WINDOW, DEFAULT_CONCURRENCY, Instance,
    MAX_BATCH, MAX_BATCH_WINDOW, MAX_CONCURRENCY, Start, StreamTriggerConfig,
    StreamTriggerSettings,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::broker::Conn;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::backoff::{Backoff, retry_until_ok, sleep_or_cancel};
use crate::broker::READ_BLOCK;
use crate::delivery::RetryKeys;
use crate::engine::Function;
use crate::metrics::METRICS;
use crate::triggers::{FunctionSlot, Lifecycle, TriggerServices};
use crate::wire::{self, Entry, ReadError};
use plan::{Delivery, Source};

/// How often, per idle-time threshold, a reader looks for entries to claim: a dead
/// consumer's entries wait at most a quarter of the threshold past it.
const CLAIM_CHECKS_PER_IDLE: u32 = 4;
/// Longest gap between two claim checks.
const MAX_CLAIM_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a retry loop sleeps before looking at the schedule again (other hosts may have
/// scheduled something sooner).
const RETRY_POLL: Duration = Duration::from_millis(250);
/// How often a retry loop forwards dead letters left in its stream's outbox by a host that
/// stopped between the two steps of a dead letter (each host forwards its own at once).
const DEAD_LETTER_SWEEP: Duration = Duration::from_secs(5);
/// Longest a reader under load waits for more permits to free before reading (see
/// `take_permits`).
const READ_LINGER: Duration = Duration::from_millis(2);
/// Longest one read blocks while a batch window fills (the host may be stopping).
const WINDOW_READ_BLOCK: Duration = Duration::from_millis(100);

struct Trigger {
    slot: FunctionSlot,
    config: StreamTriggerConfig,
    keys: RetryKeys,
    services: TriggerServices,
    life: Lifecycle,
    conn: Conn,
    settler: settle::Settler,
    observer: observe::Observer,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    retry_wakeup: Notify,
    lease_counter: AtomicU64,
    /// Entries this host is handling now: never claimed as abandoned by this host itself.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// This trigger's field in the flow states.
    flow_field: String,
    /// Its flow when last looked at: for the gauge, the log and a breaker's closing.
    flow_seen: std::sync::Mutex<flow::Flow>,
    /// Outcomes counted for the breaker.
    window: std::sync::Mutex<flow::Window>,
    /// The probe this host holds while the breaker is half-open.
    probe: std::sync::Mutex<Option<Probe>>,
    /// Entries a blocking read returned after the trigger stopped: run first when it goes on.
    held: std::sync::Mutex<Vec<Entry>>,
    /// Until when (ms) this host knows the breaker is open because it tripped it, before its
    /// copy of the flow states says so.
    tripped_here_until: std::sync::atomic::AtomicI64,
    /// The ordering keys, on a trigger ordered by key.
    order: Option<order::OrderKeys>,
    /// The function's cluster-wide slots and rate tokens.
    limiter: limits::Limiter,
    /// The keys the read script names (ordering state, untouched when not ordered).
    script_keys: order::OrderKeys,
    /// The stream's last id when a scripted read last found nothing new.
    idle_after: std::sync::Mutex<Option<String>>,
    /// Entries an ordered read refused (no key, or too long a key), with why: dead-lettered
    /// without running when dispatched.
    refused: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// A half-open breaker's probe held by this host.
struct Probe {
    /// The holder's token in Redis.
    token: String,
    /// The entry sent through, once one is.
    entry_id: Option<String>,
}

/// How often a trigger stopped by its flow looks at the host's copy again (no Redis call).
const FLOW_CHECK: Duration = Duration::from_millis(100);
/// Longest a probe's read blocks waiting for an entry.
const PROBE_READ_BLOCK: Duration = Duration::from_millis(250);

/// Runs the trigger feeding `slot`'s function until `life.stop` is cancelled, then drains.
/// `subscribed` fires once the consumer group exists, so a caller can say "ready" truthfully.
pub async fn run(
    slot: FunctionSlot,
    config: StreamTriggerConfig,
    services: TriggerServices,
    life: Lifecycle,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let conn = services.broker.shared();
    // `WAIT` blocks the connection it goes over: with replicas to wait for, the settles of
    // this trigger get a connection of their own.
    let settle_conn = match services.broker.replicas_to_wait_for() {
        None => conn.clone(),
        Some(_) => match services.broker.dedicated().await {
            Ok(own) => own,
            Err(error) => {
                tracing::warn!(stream = %config.stream, %error,
                    "no connection of its own for settles; they wait for replicas on the shared one");
                conn.clone()
            }
        },
    };
    let name = slot.function().name().to_owned();
    let config_stream = config.stream.clone();
    let limiter = limits::Limiter::new(
        &name,
        config.cluster,
        conn.clone(),
        services.consumer.clone(),
    );
    let (config_group, config_ordering) = (config.group.clone(), config.ordering.is_some());
    let trigger = Arc::new(Trigger {
        keys: RetryKeys::new(&config.stream, &config.group),
        permits: Arc::new(Semaphore::new(config.concurrency)),
        settler: settle::Settler::new(
            settle_conn,
            &services.broker,
            &config,
            services.consumer.clone(),
        ),
        observer: observe::Observer {
            metrics: METRICS.function(&name),
            recorder: services.recorder.clone(),
            spans: services.spans.clone(),
            host: services.consumer.clone(),
            stream: config.stream.to_string(),
            dead_letter: config.dead_letter.to_string(),
        },
        slot,
        config,
        conn,
        services: services.clone(),
        life,
        tasks: TaskTracker::new(),
        retry_wakeup: Notify::new(),
        lease_counter: AtomicU64::new(0),
        in_flight: Default::default(),
        flow_field: flow::field(&name, &config_stream),
        flow_seen: std::sync::Mutex::new(flow::Flow::Open),
        window: Default::default(),
        probe: Default::default(),
        held: Default::default(),
        tripped_here_until: Default::default(),
        order: config_ordering.then(|| order::OrderKeys::new(&config_stream, &config_group)),
        refused: Default::default(),
        limiter,
        script_keys: order::OrderKeys::new(&config_stream, &config_group),
        idle_after: Default::default(),
    });
    METRICS.set_flow(&name, &trigger.config.stream, 0);
    let _running = flow::running(&name, &trigger.config.stream);
    tracing::info!(
        function = trigger.function().name(),
        stream = %trigger.config.stream,
        group = %trigger.config.group,
        consumer = %trigger.services.consumer,
        "stream trigger starting"
    );
    METRICS.watch_group(
        &trigger.config.stream,
        &trigger.config.group,
        &trigger.config.dead_letter,
    );
    if let Err(error) = crate::delivery::dead_letter::admin::register(
        &mut trigger.conn.clone(),
        &trigger.config.dead_letter,
    )
    .await
    {
        tracing::warn!(%error, "recording the dead-letter stream failed");
    }
    if trigger.config.ordering.is_none() {
        // Events parked while the trigger was ordered run now rather than wait for ever.
        match order::unpark_all(
            &mut trigger.conn.clone(),
            &trigger.config,
            &trigger.keys,
            now_ms(),
        )
        .await
        {
            Ok(0) => {}
            Ok(made) => tracing::info!(stream = %trigger.config.stream, events = made,
                "the trigger is no longer ordered by key: events parked behind their key run now"),
            Err(error) => trigger.warn(
                "releasing events parked by ordering failed",
                &error.to_string(),
            ),
        }
    }
    if trigger
        .ensure_group(trigger.config.start.group_start_id())
        .await
    {
        // From here no entry added to the stream is missed, whatever the group's start.
        let _ = subscribed.send(());
        let retries = tokio::spawn(trigger.clone().retry_loop());
        trigger.clone().read_loop().await;
        let _ = retries.await;
    }
    trigger.tasks.close();
    tokio::select! {
        _ = trigger.tasks.wait() => {}
        _ = trigger.life.abandon.cancelled() => {
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
    tracing::info!(function = %name, %stream, "stream trigger stopped");
}

impl Trigger {
    /// The version to run now.
    fn function(&self) -> Function {
        self.slot.function()
    }

    /// Creates the consumer group (and the stream) if absent, starting at `start`. False if
    /// shut down first.
    async fn ensure_group(&self, start: &'static str) -> bool {
        let config = &self.config;
        retry_until_ok(&self.life.stop, "creating the consumer group", || {
            let mut conn = self.conn.clone();
            async move {
                let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&config.stream)
                    .arg(&config.group)
                    .arg(start)
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match created {
                    Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                    // A full Redis refuses the create (MKSTREAM may write) before it checks
                    // for the group: a group that exists already is all a trigger needs.
                    Err(e) if crate::broker::Trouble::of(&e) == crate::broker::Trouble::Full => {
                        let groups: Vec<std::collections::HashMap<String, redis::Value>> =
                            redis::cmd("XINFO")
                                .arg("GROUPS")
                                .arg(&config.stream)
                                .query_async(&mut conn)
                                .await
                                .unwrap_or_default();
                        let exists = groups.iter().any(|g| {
                            g.get("name").is_some_and(|n| {
                                redis::from_redis_value::<String>(n.clone())
                                    .is_ok_and(|n| n == config.group)
                            })
                        });
                        if exists { Ok(()) } else { Err(e) }
                    }
                    other => other,
                }
            }
        })
        .await
        .is_some()
    }

    /// Makes the group again after it vanished while this trigger ran: Redis restarted
    /// without persistence, a failover promoted a replica that never got it, or someone
    /// deleted it. What it had delivered is unknown, so it starts at the stream's start:
    /// entries still in the stream come again (at least once) rather than being skipped, as
    /// `start = "latest"` would skip those a producer added since. False if shut down first.
    async fn remake_group(&self) -> bool {
        tracing::warn!(
            function = self.function().name(),
            stream = %self.config.stream,
            group = %self.config.group,
            "the consumer group vanished; making it again from the stream's start (entries \
             still in the stream are delivered again)"
        );
        METRICS.redis_error("read", "group_vanished");
        self.ensure_group(Start::Earliest.group_start_id()).await
    }

    fn min_idle(&self) -> Duration {
        self.function().limits().timeout + self.services.claim_margin
    }

    async fn read_loop(self: Arc<Self>) {
        let shutdown = self.life.stop.clone();
        let Some(mut reader) = retry_until_ok(&shutdown, "connecting the stream reader", || {
            let broker = self.services.broker.clone();
            async move { broker.dedicated().await }
        })
        .await
        else {
            return;
        };
        let claim_interval = (self.min_idle() / CLAIM_CHECKS_PER_IDLE).min(MAX_CLAIM_INTERVAL);
        let mut last_claim: Option<Instant> = None;
        let mut backoff = Backoff::redis();
        loop {
            match self.wait_for_flow().await {
                None => return,
                Some(true) => {}
                Some(false) => {
                    self.send_probe(&mut reader).await;
                    continue;
                }
            }
            let Some(mut permits) = self.permits_unless_shutdown(true).await else {
                return;
            };
            if self.flow_now() != flow::Flow::Open {
                // Paused or tripped while waiting for permits: nothing new starts.
                continue;
            }
            let held = self.take_held(permits.len()).await;
            if !held.is_empty() {
                let taken = permits.split_off(permits.len() - held.len());
                self.dispatch(held, taken);
                continue;
            }
            if last_claim.is_none_or(|t| t.elapsed() >= claim_interval) {
                last_claim = Some(Instant::now());
                match self.claim_abandoned(permits.len()).await {
                    Ok(claimed) if !claimed.is_empty() => {
                        let taken = permits.split_off(permits.len() - claimed.len());
                        let deliveries = claimed
                            .into_iter()
                            .map(|(entry, attempt)| from_stream(entry, attempt))
                            .collect();
                        self.dispatch(deliveries, taken);
                    }
                    Ok(_) => {}
                    Err(error) => self.warn("claiming abandoned entries failed", &error),
                }
                if permits.is_empty() {
                    continue;
                }
            }
            let mut result = self.read(&mut reader, permits.len(), READ_BLOCK).await;
            if let Ok(entries) = &mut result
                && !entries.is_empty()
                && !self.config.batch_window.is_zero()
            {
                // Wait a little for the batch to fill: fewer, fuller batches.
                let deadline = Instant::now() + self.config.batch_window;
                while entries.len() < permits.len() && !shutdown.is_cancelled() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left < Duration::from_millis(1) {
                        break;
                    }
                    // Short reads, so a stop is noticed within one of them.
                    let more = self
                        .read(
                            &mut reader,
                            permits.len() - entries.len(),
                            left.min(WINDOW_READ_BLOCK),
                        )
                        .await;
                    match more {
                        Ok(more) => entries.extend(more),
                        // What was read is handled; the error shows again at the next read.
                        Err(_) => break,
                    }
                }
            }
            if self.flow_now() != flow::Flow::Open {
                // Paused or tripped during the blocking read: what it returned is held (pending
                // for this consumer) and goes first once the trigger runs again.
                if let Ok(entries) = result {
                    self.held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(entries);
                }
                continue;
            }
            match result {
                Ok(mut entries) => {
                    backoff.reset();
                    if entries.len() > permits.len() {
                        tracing::error!(
                            read = entries.len(),
                            asked = permits.len(),
                            "read more entries than asked for; the rest stay pending"
                        );
                        entries.truncate(permits.len());
                    }
                    let taken = permits.split_off(permits.len() - entries.len());
                    drop(permits);
                    let nothing = entries.is_empty();
                    let deliveries = entries
                        .into_iter()
                        .map(|entry| from_stream(entry, 1))
                        .collect();
                    self.dispatch(deliveries, taken);
                    if nothing {
                        self.wait_for_new(&mut reader, READ_BLOCK).await;
                    }
                }
                Err(error) => {
                    drop(permits);
                    if error.is_missing_group() {
                        if !self.remake_group().await {
                            return;
                        }
                        continue;
                    }
                    self.warn("reading the stream failed; retrying", &error);
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reads up to `count` new entries, blocking up to `block` for the first.
    async fn read(
        &self,
        reader: &mut Conn,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, ReadError> {
        if self.config.ordering.is_some() || self.limiter.limits() {
            return self.read_scripted(reader, count).await;
        }
        let reply: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.config.group)
            .arg(&*self.services.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.config.stream)
            .arg(">")
            .query_async(reader)
            .await;
        wire::read_reply_entries(reply?)
    }

    /// [`read`](Self::read) through the read script, which never blocks: for a trigger ordered
    /// by key (entries are admitted as they are read; those parked behind their key's head are
    /// not returned), and for a function with cluster-wide limits (a blocking read would hold
    /// its slots and rate tokens while it waits). When nothing is new, the stream's last id is
    /// kept for [`wait_for_new`](Self::wait_for_new), which the reader calls holding nothing.
    async fn read_scripted(
        &self,
        reader: &mut Conn,
        count: usize,
    ) -> Result<Vec<Entry>, ReadError> {
        let unordered = order::Ordering {
            key: Vec::new(),
            unkeyed: order::Unkeyed::Unordered,
        };
        let ordering = self.config.ordering.as_ref().unwrap_or(&unordered);
        let read = order::read(
            reader,
            &self.config,
            ordering,
            &self.script_keys,
            &self.keys,
            &self.services.consumer,
            count,
            now_ms(),
        )
        .await?;
        match read {
            order::Read::Entries(admitted) => {
                let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
                Ok(admitted
                    .into_iter()
                    .map(|a| {
                        if let Some(why) = a.refused {
                            refused.insert(a.entry.id.clone(), why);
                        }
                        a.entry
                    })
                    .collect())
            }
            order::Read::Idle(after) => {
                *self.idle_after.lock().unwrap_or_else(|e| e.into_inner()) = Some(after);
                Ok(Vec::new())
            }
        }
    }

    /// After a scripted read found nothing new: blocks (up to `block`) until the stream has an
    /// entry after the one it saw last, holding no permit, slot or token meanwhile.
    async fn wait_for_new(&self, reader: &mut Conn, block: Duration) {
        let Some(after) = self
            .idle_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.config.stream)
            .arg(after);
        let waited: redis::RedisResult<redis::Value> = tokio::select! {
            biased;
            _ = self.life.stop.cancelled() => return,
            waited = command.query_async(reader) => waited,
        };
        if let Err(error) = waited {
            self.warn("waiting for new entries failed", &error);
            sleep_or_cancel(crate::backoff::REDIS_FIRST, &self.life.stop).await;
        }
    }

    /// [`take_permits`](Self::take_permits), then the function's cluster-wide slots and rate
    /// tokens for them ([`limits`]), or `None` once the host is stopping.
    async fn permits_unless_shutdown(&self, linger: bool) -> Option<Vec<limits::Permit>> {
        let local = tokio::select! {
            // Shutdown first: free permits are always ready and must not win the race.
            biased;
            _ = self.life.stop.cancelled() => None,
            held = self.take_permits(linger) => Some(held),
        }?;
        self.limiter.admit(local, &self.life.stop).await
    }

    /// Waits for one free permit, then takes every other free one up to `batch`. With `linger`
    /// (the reader, under load), it then waits up to [`READ_LINGER`] for at least
    /// [`read_threshold`](Self::read_threshold) permits, so that one read, one hand-off and
    /// one settlement serve many events rather than each settled event freeing a read of its
    /// own. The wait is short and bounded: a slow event holding permits delays nothing by
    /// more than that.
    async fn take_permits(&self, linger: bool) -> Vec<OwnedSemaphorePermit> {
        let first = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut held = vec![first];
        self.take_free(&mut held);
        if linger && held.len() < self.read_threshold() {
            // A trigger with a batch window has said it would rather wait to fill a batch.
            let deadline = tokio::time::Instant::now() + READ_LINGER.max(self.config.batch_window);
            while held.len() < self.read_threshold() {
                match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await
                {
                    Ok(permit) => {
                        held.push(permit.expect("the semaphore is never closed"));
                        self.take_free(&mut held);
                    }
                    Err(_) => break,
                }
            }
        }
        held
    }

    /// Adds every free permit to `held`, up to `batch`.
    fn take_free(&self, held: &mut Vec<OwnedSemaphorePermit>) {
        while held.len() < self.config.batch {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
    }

    /// Free permits the reader lingers for under load: half a batch (or half the concurrency,
    /// if smaller). When idle every permit is free and a read starts at once.
    fn read_threshold(&self) -> usize {
        (self.config.batch.min(self.config.concurrency) / 2).max(1)
    }

    /// Claims up to `max` entries idle longer than the threshold, with their attempt numbers.
    async fn claim_abandoned(&self, max: usize) -> Result<Vec<(Entry, u32)>, ReadError> {
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
            .await?;
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
            .arg(&*self.services.consumer)
            .arg(min_idle)
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
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
        let shutdown = self.life.stop.clone();
        let mut conn = self.conn.clone();
        let mut backoff = Backoff::redis();
        let mut last_sweep: Option<std::time::Instant> = None;
        let mut sweep_cursor = 0u64;
        loop {
            if last_sweep.is_none_or(|at| at.elapsed() >= DEAD_LETTER_SWEEP) {
                self.settler.forward_dead_letters();
                last_sweep = Some(std::time::Instant::now());
                if let Some(keys) = &self.order {
                    // Heads nobody holds any more (deleted while pending on a dead host,
                    // acknowledged by hand) give their keys on, a page at a time.
                    match order::sweep(
                        &mut conn,
                        &self.config,
                        keys,
                        &self.keys,
                        sweep_cursor,
                        now_ms(),
                    )
                    .await
                    {
                        Ok((next, released)) => {
                            sweep_cursor = next;
                            if released > 0 {
                                tracing::warn!(stream = %self.config.stream, released,
                                    "released ordering keys whose head event is gone");
                                self.retry_wakeup.notify_one();
                            }
                        }
                        Err(error) => self.warn("sweeping ordering keys failed", &error),
                    }
                }
            }
            if self.flow_now() != flow::Flow::Open {
                // Paused or tripped: due retries wait in the schedule (a half-open breaker's
                // probe is the reader's to send).
                if !sleep_or_cancel(FLOW_CHECK, &shutdown).await {
                    return;
                }
                continue;
            }
            if self.limiter.limits() {
                // Slots are taken only for retries that are due: an idle retry loop holding
                // them would starve the reader (and other hosts) for nothing.
                match self.keys.next_due(&mut conn).await {
                    Ok(Some(due)) if due <= now_ms() => {}
                    other => {
                        let wait = match other {
                            Ok(Some(due)) => Duration::from_millis((due - now_ms()) as u64),
                            _ => RETRY_POLL,
                        };
                        tokio::select! {
                            _ = tokio::time::sleep(wait.min(RETRY_POLL)) => {}
                            _ = self.retry_wakeup.notified() => {}
                            _ = shutdown.cancelled() => return,
                        }
                        continue;
                    }
                }
            }
            let Some(mut permits) = self.permits_unless_shutdown(false).await else {
                return;
            };
            if self.flow_now() != flow::Flow::Open {
                // Stopped while waiting for a permit (perhaps one the reader let go of on
                // seeing the stop): nothing is leased.
                continue;
            }
            let leased = self.lease_due(&mut conn, permits.len()).await;
            let wait = match leased {
                Ok(deliveries) => {
                    backoff.reset();
                    let full = deliveries.len() == permits.len();
                    let taken = permits.split_off(permits.len() - deliveries.len());
                    drop(permits);
                    self.dispatch(deliveries, taken);
                    if full {
                        continue;
                    }
                    match self.keys.next_due(&mut conn).await {
                        Ok(Some(due)) => {
                            Duration::from_millis((due - now_ms()).max(0) as u64).min(RETRY_POLL)
                        }
                        Ok(None) => RETRY_POLL,
                        Err(error) => {
                            self.warn("reading the retry schedule failed", &error);
                            RETRY_POLL
                        }
                    }
                }
                Err(error) => {
                    drop(permits);
                    self.warn("leasing due retries failed", &error);
                    backoff.next_pause()
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.retry_wakeup.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// What the flow states let this trigger do now. Keeps the gauge current, logs a change,
    /// and forgets the breaker's count when the trigger goes on after a stop.
    fn flow_now(&self) -> flow::Flow {
        let state = self.services.flow.borrow().get(&self.flow_field).cloned();
        let at = now_ms();
        let mut now = flow::decide(state.as_ref(), at);
        let tripped_here = self.tripped_here_until.load(Ordering::Relaxed);
        if tripped_here > 0 {
            let caught_up = state
                .as_ref()
                .and_then(|s| s.breaker.as_ref())
                .is_some_and(|b| b.until_ms >= tripped_here as f64);
            if caught_up || at >= tripped_here {
                // The copy shows this host's trip now: from here it alone decides, so an
                // operator's resume takes effect at once.
                self.tripped_here_until.store(0, Ordering::Relaxed);
            } else if now == flow::Flow::Open {
                now = flow::Flow::Tripped;
            }
        }
        let mut seen = self.flow_seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen != now {
            let function = self.function();
            METRICS.set_flow(function.name(), &self.config.stream, now.gauge());
            let reason = state
                .as_ref()
                .and_then(|s| s.breaker.as_ref())
                .map(|b| b.reason.as_str())
                .unwrap_or_default();
            match now {
                flow::Flow::Open => {
                    self.window
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                    tracing::info!(function = function.name(), stream = %self.config.stream,
                        "stream trigger running again");
                }
                flow::Flow::Paused => {
                    tracing::info!(function = function.name(), stream = %self.config.stream,
                        "stream trigger paused: no new events until it is resumed")
                }
                flow::Flow::Tripped => {
                    tracing::warn!(function = function.name(), stream = %self.config.stream,
                        %reason, "circuit breaker open: no new events until a probe succeeds")
                }
                flow::Flow::HalfOpen => {
                    tracing::info!(function = function.name(), stream = %self.config.stream,
                        "circuit breaker half-open: one probe event may go")
                }
            }
            *seen = now;
        }
        now
    }

    /// Waits until the flow lets the reader start work: `Some(true)` to run freely,
    /// `Some(false)` to send one probe event (this host holds the probe), `None` when the
    /// host is stopping.
    async fn wait_for_flow(&self) -> Option<bool> {
        loop {
            match self.flow_now() {
                flow::Flow::Open => return Some(true),
                flow::Flow::HalfOpen if self.may_take_probe() && self.take_probe().await => {
                    return Some(false);
                }
                _ => {}
            }
            if !sleep_or_cancel(FLOW_CHECK, &self.life.stop).await {
                return None;
            }
        }
    }

    fn probe_in_flight(&self) -> bool {
        self.probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|p| p.entry_id.is_some())
    }

    /// Whether asking Redis for the probe could succeed: none in flight here, and the copy
    /// shows no live probe held by another host.
    fn may_take_probe(&self) -> bool {
        let view = self.services.flow.borrow();
        !self.probe_in_flight()
            && flow::probe_free(view.get(&self.flow_field), &self.probe_token(), now_ms())
    }

    /// This host's token when it holds a half-open breaker's probe.
    fn probe_token(&self) -> String {
        format!("{}:probe", self.services.consumer)
    }

    /// Takes (or renews) the half-open breaker's probe for this host. True if held.
    async fn take_probe(&self) -> bool {
        let token = self.probe_token();
        let until = now_ms() + self.min_idle().as_millis() as i64;
        match flow::take_probe(&mut self.conn.clone(), &self.flow_field, &token, until).await {
            Ok(true) => {
                let mut probe = self.probe.lock().unwrap_or_else(|e| e.into_inner());
                if probe.is_none() {
                    *probe = Some(Probe {
                        token,
                        entry_id: None,
                    });
                }
                true
            }
            Ok(false) => false,
            Err(error) => {
                self.warn("taking the breaker's probe failed", &error);
                false
            }
        }
    }

    /// Leases up to `max` due retries from the schedule for this host, for the claim
    /// threshold from now.
    async fn lease_due(&self, conn: &mut Conn, max: usize) -> redis::RedisResult<Vec<Delivery>> {
        let now = now_ms();
        let lease_until = now + self.min_idle().as_millis() as i64;
        let token = format!(
            "{}:{}",
            self.services.consumer,
            self.lease_counter.fetch_add(1, Ordering::Relaxed)
        );
        let leased = self.keys.lease(conn, now, lease_until, max, &token).await?;
        Ok(leased
            .into_iter()
            .map(|leased| Delivery {
                entry_id: leased.entry_id.clone(),
                attempt: leased.attempt,
                source: Source::Retry(leased),
            })
            .collect())
    }

    /// Up to `max` entries held since a stop, each confirmed still this consumer's (its idle
    /// time reset) first: while the trigger was stopped longer than the claim threshold,
    /// another host may have claimed one, and it is that host's now.
    async fn take_held(&self, max: usize) -> Vec<Delivery> {
        let held: Vec<Delivery> = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let take = held.len().min(max);
            held.drain(..take)
                .map(|entry| from_stream(entry, 1))
                .collect()
        };
        if held.is_empty() {
            return held;
        }
        let until = now_ms() + self.min_idle().as_millis() as i64;
        let refs: Vec<&Delivery> = held.iter().collect();
        let Some(mine) = self.settler.refresh(&refs, until).await else {
            // Not confirmed: left pending, for a claim once idle (this host's or another's).
            return Vec::new();
        };
        held.into_iter()
            .zip(mine)
            .filter_map(|(delivery, mine)| mine.then_some(delivery))
            .collect()
    }

    /// Sends one event through a half-open breaker: one held since the stop, else a new entry,
    /// else a due retry. Nothing to send: the probe is kept (renewed at the next look) until
    /// there is.
    async fn send_probe(self: &Arc<Self>, reader: &mut Conn) {
        let permit = tokio::select! {
            biased;
            _ = self.life.stop.cancelled() => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
        };
        let Some(permit) = permit else {
            return;
        };
        let Some(permit) = self
            .limiter
            .admit(vec![permit], &self.life.stop)
            .await
            .and_then(|mut p| p.pop())
        else {
            return;
        };
        // A new entry first: a failed probe costs the event one attempt, and a new one has
        // them all, where probing with the same due retry again and again would use its last.
        let mut fresh = self.take_held(1).await.into_iter().next();
        if fresh.is_none() {
            match self.read(reader, 1, PROBE_READ_BLOCK).await {
                Ok(entries) => fresh = entries.into_iter().next().map(|e| from_stream(e, 1)),
                Err(error) if error.is_missing_group() => {
                    self.remake_group().await;
                }
                Err(_) => {}
            }
        }
        let delivery = match fresh {
            Some(delivery) => Some(delivery),
            None => self
                .lease_due(&mut self.conn.clone(), 1)
                .await
                .unwrap_or_default()
                .into_iter()
                .next(),
        };
        let Some(delivery) = delivery else {
            return;
        };
        if let Some(probe) = self
            .probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            probe.entry_id = Some(delivery.entry_id.clone());
        }
        tracing::info!(function = self.function().name(), stream = %self.config.stream,
            entry_id = %delivery.entry_id, attempt = delivery.attempt,
            "circuit breaker half-open: sending one probe event");
        self.dispatch(vec![delivery], vec![permit]);
    }

    /// Counts attempts that ran, and those that failed or were rejected, per version while a
    /// canary runs, for its judges (one pipeline per settled group; nothing when no canary
    /// runs).
    async fn canary_outcomes(&self, function: &Function, total: u64, failed: u64) {
        if self
            .slot
            .canary
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return;
        }
        let Some(version) = function.version() else {
            return;
        };
        if total == 0 {
            return;
        }
        if let Err(error) = crate::canary::record(
            &mut self.conn.clone(),
            function.name(),
            version,
            total,
            failed,
        )
        .await
        {
            self.warn("counting canary outcomes failed", &error);
        }
    }

    /// Counts settled outcomes for the breaker (`Some(failed)` per event that ran, `None` for
    /// one that did not), and ends this host's probe with its event's outcome: success closes
    /// the breaker everywhere, failure trips it for another cool-down.
    async fn flow_outcomes(&self, outcomes: &[(&str, Option<bool>)]) {
        let probed = {
            let probe = self.probe.lock().unwrap_or_else(|e| e.into_inner());
            probe.as_ref().and_then(|p| {
                let id = p.entry_id.as_deref()?;
                let (_, failed) = outcomes.iter().find(|(entry, _)| *entry == id)?;
                Some((p.token.clone(), *failed))
            })
        };
        if probed.is_none() && self.config.breaker.is_none() {
            // The common case, once per settled batch: nothing to count.
            return;
        }
        let function = self.function();
        let mut conn = self.conn.clone();
        if let Some((token, failed)) = probed {
            *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = None;
            match failed {
                Some(false) => match flow::close(&mut conn, &self.flow_field, &token).await {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(function = function.name(),
                        stream = %self.config.stream,
                        "the probe event succeeded: circuit breaker closed"),
                    Err(error) => self.warn("closing the breaker failed", &error),
                },
                Some(true) => {
                    let cool_down = self.config.breaker.unwrap_or_default().cool_down;
                    let until = now_ms() + cool_down.as_millis() as i64;
                    let reason = "the probe event failed";
                    match flow::trip(
                        &mut conn,
                        &self.flow_field,
                        until,
                        reason,
                        &self.services.consumer,
                        Some(&token),
                    )
                    .await
                    {
                        Ok(true) => {
                            self.tripped_here_until.store(until, Ordering::Relaxed);
                            METRICS.breaker_tripped(function.name(), &self.config.stream);
                            tracing::warn!(function = function.name(),
                                stream = %self.config.stream, ?cool_down,
                                "the probe event failed: circuit breaker open again");
                        }
                        Ok(false) => {}
                        Err(error) => self.warn("tripping the breaker failed", &error),
                    }
                }
                // Not run to an outcome (taken over, gone): the probe is taken again.
                None => {}
            }
            return;
        }
        let Some(config) = self.config.breaker else {
            return;
        };
        // Events that finish after a stop do not count: the next count starts when it goes on.
        if self.flow_now() != flow::Flow::Open {
            return;
        }
        let failed = outcomes.iter().filter(|(_, f)| *f == Some(true)).count() as u32;
        let answered = outcomes.iter().filter(|(_, f)| *f == Some(false)).count() as u32;
        if failed + answered == 0 {
            return;
        }
        let now = now_ms();
        let reason = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            window.add(now, answered, failed);
            window.trips(&config, now)
        };
        let Some(reason) = reason else {
            return;
        };
        let until = now + config.cool_down.as_millis() as i64;
        match flow::trip(
            &mut conn,
            &self.flow_field,
            until,
            &reason,
            &self.services.consumer,
            None,
        )
        .await
        {
            Ok(tripped) => {
                self.window
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                if tripped {
                    self.tripped_here_until.store(until, Ordering::Relaxed);
                    METRICS.breaker_tripped(function.name(), &self.config.stream);
                    tracing::warn!(function = function.name(), stream = %self.config.stream,
                        %reason, cool_down = ?config.cool_down,
                        "circuit breaker tripped: every host stops taking this trigger's events \
                         until a probe after the cool-down succeeds");
                }
            }
            Err(error) => self.warn("tripping the breaker failed", &error),
        }
    }

    fn warn(&self, what: &str, error: &dyn std::fmt::Display) {
        tracing::warn!(
            function = self.function().name(),
            stream = %self.config.stream,
            group = %self.config.group,
            %error,
            "{what}"
        );
    }
}

/// A delivery of a stream entry for its `attempt`-th time.
fn from_stream(entry: Entry, attempt: u32) -> Delivery {
    Delivery {
        entry_id: entry.id,
        attempt,
        source: Source::Stream(entry.fields),
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
