//! Running a read batch: screen it, hand it to the invocation workers, keep its leases fresh
//! while it waits and runs, and settle and report results as they come back.
//!
//! A batch is split into one part per worker thread (so every core gets work), and each part
//! is one hand-off: its invocations run as futures of one task on a worker and come back in
//! groups ([`crate::engine::Workers::submit_batch`]). Each group is planned, settled with one
//! pipeline and reported, and only then are its permits released. One timer per part
//! refreshes every lease the part still holds, with one pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Span;

use super::observe::{Facts, Observed};
use super::plan::{self, Delivery, PlanContext, Screened, Verdict};
use super::{Instance, Trigger};
use crate::engine::{BatchJob, Failure, GROUP_LINGER, InvokeResult, RunHooks, Services};

/// Events a part holds at least before a batch is split across worker threads: smaller
/// parts cost a hand-off and a settlement each for little parallelism (under load, several
/// reads are in flight at once and spread over the threads anyway).
const MIN_PART: usize = 16;

/// An event's lease as this host last saw it: when Redis last confirmed it is this host's, and
/// whether a refresh found it taken over.
struct Lease {
    confirmed: std::sync::Mutex<Instant>,
    lost: AtomicBool,
}

impl Lease {
    fn new() -> Self {
        Self {
            confirmed: std::sync::Mutex::new(Instant::now()),
            lost: AtomicBool::new(false),
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

/// One delivery of a part, from its hand-off to its settlement.
struct Slot {
    delivery: Delivery,
    /// Set once known.
    verdict: Option<Verdict>,
    facts: Option<Facts>,
    span: Option<Span>,
    lease: Arc<Lease>,
    cancel: CancellationToken,
    permit: Option<super::limits::Permit>,
}

impl Trigger {
    /// Runs `deliveries`, one permit each, as parts of at most one per worker thread.
    pub(super) fn dispatch(
        self: &Arc<Self>,
        deliveries: Vec<Delivery>,
        permits: Vec<super::limits::Permit>,
    ) {
        debug_assert_eq!(deliveries.len(), permits.len());
        if deliveries.is_empty() {
            return;
        }
        {
            let mut mine = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for delivery in deliveries.iter().filter(|d| d.is_pending()) {
                mine.insert(delivery.entry_id.clone());
            }
        }
        let parts = self
            .services
            .workers
            .threads()
            .min(deliveries.len().div_ceil(MIN_PART))
            .max(1);
        let size = deliveries.len().div_ceil(parts);
        let slots = deliveries
            .into_iter()
            .zip(permits)
            .map(|(delivery, permit)| Slot {
                delivery,
                verdict: None,
                facts: None,
                span: None,
                lease: Arc::new(Lease::new()),
                cancel: CancellationToken::new(),
                permit: Some(permit),
            })
            .collect::<Vec<_>>();
        // During a canary deploy, its share of events (by a hash of the event id) runs on it.
        let canary = self
            .slot
            .canary
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let groups = match canary {
            None => vec![(slots, None)],
            Some(run) => {
                let (trial, stable): (Vec<Slot>, Vec<Slot>) = slots
                    .into_iter()
                    .partition(|slot| crate::canary::takes(&slot.delivery.event_id(), run.percent));
                vec![(stable, None), (trial, Some(run.function))]
            }
        };
        for (mut slots, version) in groups {
            while !slots.is_empty() {
                let rest = slots.split_off(size.min(slots.len()));
                let part = std::mem::replace(&mut slots, rest);
                let (trigger, version) = (self.clone(), version.clone());
                self.tasks
                    .spawn(async move { trigger.run_part(part, version).await });
            }
        }
    }

    /// Screens, runs, settles and reports one part, on `version` if given (a canary), else on
    /// the function's current version.
    async fn run_part(
        self: Arc<Self>,
        mut slots: Vec<Slot>,
        version: Option<crate::engine::Function>,
    ) {
        let function = version.unwrap_or_else(|| self.function());
        self.observer.metrics.in_flight.inc_by(slots.len() as i64);
        let mut jobs = Vec::new();
        let mut ran = Vec::new();
        for (index, slot) in slots.iter_mut().enumerate() {
            let refused = if self.order.is_some() {
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&slot.delivery.entry_id)
            } else {
                None
            };
            match plan::screen(&self.config, &slot.delivery) {
                // What is wrong with the entry itself says more than its missing key.
                Screened::Run(_) if refused.is_some() => {
                    slot.verdict = refused.map(Verdict::Malformed);
                }
                Screened::Decided(verdict) => slot.verdict = Some(verdict),
                // Schemas not read yet: left pending, run (and checked) once they are.
                Screened::Run(_)
                    if self.config.validate && !crate::schemas::loaded(&self.services.schemas) =>
                {
                    slot.verdict = Some(Verdict::LeftToHolder);
                }
                Screened::Run(event)
                    if self.config.validate
                        && let Err(invalid) = crate::schemas::check(
                            &self.services.schemas,
                            &event.event_type,
                            event.datacontenttype.as_deref(),
                            &event.data,
                        ) =>
                {
                    slot.verdict = Some(Verdict::Invalid(invalid.to_string()));
                }
                Screened::Run(event) => {
                    // The rate token is spent only on an event that runs; the others' go back.
                    if let Some(permit) = slot.permit.as_mut() {
                        permit.spend();
                    }
                    // One span per invocation: everything logged while handling the event
                    // carries it, and its outcome, status and duration are filled in at the end.
                    let span = tracing::info_span!(
                        "invocation",
                        function = function.name(),
                        version = function.version(),
                        event_id = %event.id,
                        stream = %self.config.stream,
                        entry_id = %slot.delivery.entry_id,
                        attempt = slot.delivery.attempt,
                        trace_id = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                        status = tracing::field::Empty,
                        duration_ms = tracing::field::Empty,
                    );
                    slot.facts = Some(Facts::of(&event));
                    slot.span = Some(span.clone());
                    // Another host may take the event once it has been idle for the timeout
                    // plus the margin; started within three quarters of the margin of its last
                    // confirmation, the invocation ends (at its deadline) with a quarter of the
                    // margin to spare.
                    let (lease, max) = (slot.lease.clone(), self.services.claim_margin * 3 / 4);
                    // Events of a shared instance run one after another: once the host stops,
                    // those not started yet are left pending for another host rather than
                    // queued past the grace period.
                    let stopping = (self.config.instance == Instance::PerBatch)
                        .then(|| self.life.stop.clone());
                    jobs.push(BatchJob {
                        event,
                        hooks: RunHooks {
                            may_start: Some(Box::new(move || {
                                lease.fresh_within(max)
                                    && stopping.as_ref().is_none_or(|s| !s.is_cancelled())
                            })),
                            cancel: Some(slot.cancel.clone()),
                            ..RunHooks::default()
                        },
                        span,
                    });
                    ran.push(index);
                }
            }
        }
        // What is decided without running settles first.
        let decided: Vec<usize> = (0..slots.len())
            .filter(|i| slots[*i].verdict.is_some())
            .collect();
        self.settle(&function, &mut slots, &decided).await;
        if !jobs.is_empty() {
            let services = Services {
                publisher: self.slot.publisher.clone(),
                keyvalue: self.services.keyvalue.clone(),
            };
            let results = match self.config.instance {
                Instance::PerEvent => {
                    self.services
                        .workers
                        .submit_batch(function.clone(), jobs, services)
                }
                Instance::PerBatch => {
                    self.services
                        .workers
                        .submit_each(function.clone(), jobs, services)
                }
            };
            self.collect(&function, &mut slots, &ran, results).await;
        }
        let mut mine = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.iter().filter(|s| s.delivery.is_pending()) {
            mine.remove(&slot.delivery.entry_id);
        }
    }

    /// Receives the part's results group by group, settling each, while refreshing the
    /// leases of what is still out.
    async fn collect(
        &self,
        function: &crate::engine::Function,
        slots: &mut [Slot],
        ran: &[usize],
        mut results: crate::engine::BatchResults,
    ) {
        let every = (self.services.claim_margin / 4).max(Duration::from_millis(10));
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut outstanding = ran.len();
        while outstanding > 0 {
            tokio::select! {
                first = results.recv() => {
                    let Some(first) = first else { break };
                    // What arrives soon after shares the settlement (one pipeline for many).
                    let mut group = vec![first];
                    let until = tokio::time::Instant::now() + GROUP_LINGER;
                    while group.len() < outstanding {
                        match tokio::time::timeout_at(until, results.recv()).await {
                            Ok(Some(more)) => group.push(more),
                            _ => break,
                        }
                    }
                    let mut settled = Vec::with_capacity(group.len());
                    for (job, result) in group {
                        let index = ran[job];
                        slots[index].verdict = Some(match result {
                            Some(result) => Verdict::Ran(Box::new(result)),
                            None => Verdict::LeftToHolder,
                        });
                        settled.push(index);
                    }
                    outstanding -= settled.len();
                    self.settle(function, slots, &settled).await;
                }
                _ = refresh.tick() => self.refresh(slots, ran).await,
            }
        }
        // The worker stopped without answering for these: a bug in the host, not the guest.
        let lost: Vec<usize> = ran
            .iter()
            .copied()
            .filter(|i| slots[*i].verdict.is_none())
            .collect();
        if !lost.is_empty() {
            for &index in &lost {
                slots[index].verdict = Some(Verdict::Ran(Box::new(InvokeResult::failed(
                    Failure::Trap {
                        message: "host error: the invocation worker stopped".to_owned(),
                        panic: None,
                    },
                    Duration::ZERO,
                    Default::default(),
                ))));
            }
            self.settle(function, slots, &lost).await;
        }
    }

    /// Refreshes the leases of the part's events still running or waiting to.
    async fn refresh(&self, slots: &[Slot], ran: &[usize]) {
        let open: Vec<&Slot> = ran
            .iter()
            .map(|i| &slots[*i])
            .filter(|s| s.verdict.is_none())
            .collect();
        if open.is_empty() {
            return;
        }
        let deliveries: Vec<&Delivery> = open.iter().map(|s| &s.delivery).collect();
        let until = super::now_ms() + self.min_idle().as_millis() as i64;
        let Some(mine) = self.settler.refresh(&deliveries, until).await else {
            return;
        };
        for (slot, mine) in open.iter().zip(mine) {
            if mine {
                slot.lease.confirm();
            } else {
                if !slot.lease.lost.swap(true, Ordering::AcqRel) {
                    self.warn(
                        "an event this host holds was taken over by another host; \
                         stopping its invocation",
                        &slot.delivery.entry_id,
                    );
                }
                slot.cancel.cancel();
            }
        }
    }

    /// Plans, writes and reports the slots at `indices` (whose verdicts are known), then
    /// releases their permits.
    async fn settle(
        &self,
        function: &crate::engine::Function,
        slots: &mut [Slot],
        indices: &[usize],
    ) {
        if indices.is_empty() {
            return;
        }
        let ctx = PlanContext {
            function: function.name(),
            config: &self.config,
            now_ms: super::now_ms(),
        };
        let settlement = plan::plan(
            &ctx,
            indices.iter().map(|i| {
                let slot = &slots[*i];
                (
                    &slot.delivery,
                    slot.verdict.as_ref().expect("settled slots have verdicts"),
                )
            }),
        );
        self.settler.apply(&settlement, &self.life.abandon).await;
        if settlement.schedules_retries() {
            self.retry_wakeup.notify_one();
        }
        self.observer.batch(
            function,
            indices.iter().zip(&settlement.planned).map(|(i, planned)| {
                let slot = &slots[*i];
                Observed {
                    delivery: &slot.delivery,
                    verdict: slot.verdict.as_ref().expect("settled slots have verdicts"),
                    planned,
                    ran: slot.facts.as_ref().zip(slot.span.as_ref()),
                }
            }),
        );
        let outcomes: Vec<(&str, Option<bool>)> = indices
            .iter()
            .map(|i| {
                let slot = &slots[*i];
                let failed = match slot.verdict.as_ref() {
                    Some(plan::Verdict::Ran(result)) => {
                        Some(result.outcome == crate::engine::Outcome::Failed)
                    }
                    _ => None,
                };
                (slot.delivery.entry_id.as_str(), failed)
            })
            .collect();
        self.flow_outcomes(&outcomes).await;
        let (ran, bad) = indices.iter().fold((0u64, 0u64), |(ran, bad), i| {
            match slots[*i].verdict.as_ref() {
                Some(plan::Verdict::Ran(result)) => (
                    ran + 1,
                    bad + u64::from(result.outcome != crate::engine::Outcome::Done),
                ),
                _ => (ran, bad),
            }
        });
        self.canary_outcomes(function, ran, bad).await;
        for &index in indices {
            slots[index].permit = None;
        }
        self.observer.metrics.in_flight.dec_by(indices.len() as i64);
    }
}
