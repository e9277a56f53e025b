//! Metrics, in the Prometheus text format at `GET /metrics`: what an operator watches to answer
//! "what is failing, how far behind is each group, are ticks on time".
//!
//! A function's series exist, at 0, from the moment a host loads it, so dashboards and alerts
//! work before its first event. Counters and histograms are updated where things happen
//! (delivery, cron, deploys); the
//! consumer-group gauges (lag, pending, dead-letter length) are read from Redis (`XINFO`,
//! `XLEN`) when scraped, for the triggers this host runs, so they are never stale. Lag is the
//! true one of [`crate::broker::groups`]: 0 for a group at the stream's end whatever Redis's
//! drifting counter says.
//!
//! | metric | labels | what |
//! |--------|--------|------|
//! | `eddy_build_info` | version, commit, contract | always 1: what this binary is |
//! | `eddy_events_total` | function, outcome | events by outcome: ok, rejected, failed, retried, dead_lettered |
//! | `eddy_invocation_duration_seconds` | function | wall time of one invocation |
//! | `eddy_instantiation_duration_seconds` | function | the part of it spent making the fresh instance |
//! | `eddy_invocations_in_flight` | function | invocations running or queued for a worker |
//! | `eddy_cron_ticks_total` | schedule | ticks this host fired |
//! | `eddy_cron_lateness_seconds` | schedule | how late a tick fired |
//! | `eddy_cron_missed_ticks_total` | schedule, outcome | ticks older than the late grace at catch-up: `emitted` or `skipped` by the policy |
//! | `eddy_deploys_total` | function | versions this host switched to |
//! | `eddy_consumer_lag` | stream, group | entries not yet read by the group |
//! | `eddy_consumer_pending` | stream, group | entries read and not acknowledged |
//! | `eddy_dead_letters` | stream | length of a dead-letter stream |
//! | `eddy_outbound_requests_total` | function, host, outcome | outbound HTTP requests: `2xx`…`5xx`, `denied`, `limited`, `timeout`, `tls_error`, `too_large`, `error` |
//! | `eddy_outbound_request_duration_seconds` | function, host | time to the response head (or the failure) |
//! | `eddy_redis_errors_total` | operation, kind | Redis commands that failed: `full` (OOM), `unavailable`, `error` |
//! | `eddy_redis_memory_used_bytes` | | Redis's `used_memory`, read at scrape |
//! | `eddy_redis_memory_max_bytes` | | Redis's `maxmemory` (0: no limit), read at scrape |
//! | `eddy_retention_trimmed_entries_total` | stream | entries this host trimmed by retention |
//! | `eddy_retention_held_back_entries` | stream | entries past the policy kept because a group still needs them |
//! | `eddy_trigger_flow` | function, stream | a stream trigger's flow: 0 running, 1 paused, 2 breaker open, 3 half-open (probing) |
//! | `eddy_breaker_trips_total` | function, stream | times this host tripped a trigger's breaker (failed probes included) |
//! | `eddy_canary_rollbacks_total` | function | canary deploys this host rolled back automatically |
//! | `eddy_limit_wait_seconds_total` | function, limit | time this host's triggers waited for a cluster-wide slot (`limit="concurrency"`) or rate token (`limit="rate"`) |

pub mod window;

use std::collections::BTreeSet;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric of this process.
pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    duration: HistogramFamily,
    instantiation: HistogramFamily,
    in_flight: Family<Labels, Gauge>,
    cron_ticks: Family<Labels, Counter>,
    cron_lateness: HistogramFamily,
    cron_missed: Family<Labels, Counter>,
    deploys: Family<Labels, Counter>,
    lag: Family<Labels, Gauge>,
    pending: Family<Labels, Gauge>,
    dead_letters: Family<Labels, Gauge>,
    outbound: Family<Labels, Counter>,
    outbound_duration: HistogramFamily,
    redis_errors: Family<Labels, Counter>,
    redis_used: Gauge,
    redis_max: Gauge,
    trimmed: Family<Labels, Counter>,
    held_back: Family<Labels, Gauge>,
    flow: Family<Labels, Gauge>,
    breaker_trips: Family<Labels, Counter>,
    limit_wait: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    canary_rollbacks: Family<Labels, Counter>,
    groups: Mutex<BTreeSet<(String, String, String)>>,
}

fn duration_buckets() -> Histogram {
    // 50 µs to about 50 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

fn lateness_buckets() -> Histogram {
    // 0.5 ms to about 1 s.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 12))
}

/// One function's event metrics, resolved once (see [`Metrics::function`]); each field is a
/// handle on the series of [`METRICS`] itself.
#[derive(Clone)]
pub struct FunctionMetrics {
    /// `eddy_events_total{outcome="ok"}`.
    pub ok: Counter,
    /// `eddy_events_total{outcome="rejected"}`.
    pub rejected: Counter,
    /// `eddy_events_total{outcome="failed"}`.
    pub failed: Counter,
    /// `eddy_events_total{outcome="retried"}`.
    pub retried: Counter,
    /// `eddy_events_total{outcome="dead_lettered"}`.
    pub dead_lettered: Counter,
    /// `eddy_invocation_duration_seconds`.
    pub duration: Histogram,
    /// `eddy_instantiation_duration_seconds`.
    pub instantiation: Histogram,
    /// `eddy_invocations_in_flight`.
    pub in_flight: Gauge,
    /// What the web page's charts count (see [`crate::charts`]).
    pub window: std::sync::Arc<window::Window>,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_events",
            "Events handled, by function and outcome",
            events.clone(),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_buckets);
        registry.register(
            "eddy_invocation_duration_seconds",
            "Wall time of one invocation",
            duration.clone(),
        );
        let instantiation: HistogramFamily = Family::new_with_constructor(duration_buckets);
        registry.register(
            "eddy_instantiation_duration_seconds",
            "Time to make the fresh instance an invocation runs in",
            instantiation.clone(),
        );
        let in_flight = Family::<Labels, Gauge>::default();
        registry.register(
            "eddy_invocations_in_flight",
            "Invocations running or queued for a worker",
            in_flight.clone(),
        );
        let cron_ticks = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_cron_ticks",
            "Cron ticks this host fired",
            cron_ticks.clone(),
        );
        let cron_lateness: HistogramFamily = Family::new_with_constructor(lateness_buckets);
        registry.register(
            "eddy_cron_lateness_seconds",
            "How late a cron tick fired",
            cron_lateness.clone(),
        );
        let cron_missed = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_cron_missed_ticks",
            "Ticks older than their late grace when a host caught up, by what the catch-up policy did",
            cron_missed.clone(),
        );
        let deploys = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_deploys",
            "Function versions this host switched to",
            deploys.clone(),
        );
        let lag = Family::<Labels, Gauge>::default();
        registry.register(
            "eddy_consumer_lag",
            "Entries not yet read by the group",
            lag.clone(),
        );
        let pending = Family::<Labels, Gauge>::default();
        registry.register(
            "eddy_consumer_pending",
            "Entries read by the group and not acknowledged",
            pending.clone(),
        );
        let dead_letters = Family::<Labels, Gauge>::default();
        registry.register(
            "eddy_dead_letters",
            "Length of a dead-letter stream",
            dead_letters.clone(),
        );
        let outbound = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_outbound_requests",
            "Outbound HTTP requests of functions, by function, host and outcome",
            outbound.clone(),
        );
        let outbound_duration: HistogramFamily = Family::new_with_constructor(duration_buckets);
        registry.register(
            "eddy_outbound_request_duration_seconds",
            "Time from sending an outbound request to its response head (or its failure)",
            outbound_duration.clone(),
        );
        let redis_errors = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_redis_errors",
            "Redis commands that failed, by operation and kind (full, unavailable, error)",
            redis_errors.clone(),
        );
        let redis_used = Gauge::default();
        registry.register(
            "eddy_redis_memory_used_bytes",
            "Memory Redis uses (used_memory)",
            redis_used.clone(),
        );
        let redis_max = Gauge::default();
        registry.register(
            "eddy_redis_memory_max_bytes",
            "Redis's maxmemory; 0 means no limit",
            redis_max.clone(),
        );
        let trimmed = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_retention_trimmed_entries",
            "Stream entries this host trimmed by retention",
            trimmed.clone(),
        );
        let held_back = Family::<Labels, Gauge>::default();
        registry.register(
            "eddy_retention_held_back_entries",
            "Entries past a stream's retention kept because a group still needs them",
            held_back.clone(),
        );
        let flow = Family::<Labels, Gauge>::default();
        registry.register(
            "eddy_trigger_flow",
            "A stream trigger's flow: 0 running, 1 paused, 2 breaker open, 3 half-open",
            flow.clone(),
        );
        let breaker_trips = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_breaker_trips",
            "Times this host tripped a stream trigger's circuit breaker",
            breaker_trips.clone(),
        );
        let limit_wait = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "eddy_limit_wait_seconds",
            "Time this host's stream triggers waited for a function's cluster-wide concurrency \
             slot or rate token",
            limit_wait.clone(),
        );
        let canary_rollbacks = Family::<Labels, Counter>::default();
        registry.register(
            "eddy_canary_rollbacks",
            "Canary deploys this host rolled back because they failed more than the stable version",
            canary_rollbacks.clone(),
        );
        // Always 1; its labels say what runs, for dashboards to show and alert on mixed versions.
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "eddy_build_info",
            "The version, commit and WIT contract of this eddy binary (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&labels(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("EDDY_COMMIT")),
                ("contract", env!("EDDY_CONTRACT")),
            ]))
            .set(1);
        Self {
            registry,
            flow,
            breaker_trips,
            limit_wait,
            canary_rollbacks,
            redis_errors,
            redis_used,
            redis_max,
            trimmed,
            held_back,
            events,
            outbound,
            outbound_duration,
            duration,
            instantiation,
            in_flight,
            cron_ticks,
            cron_lateness,
            cron_missed,
            deploys,
            lag,
            pending,
            dead_letters,
            groups: Mutex::new(BTreeSet::new()),
        }
    }

    /// Counts one outbound request of `function` to `host` ending in `outcome`, and how long it
    /// took when it was sent. The host label only ever names an origin of the function's
    /// allow-list (`denied` otherwise), so its cardinality is the allow-list's.
    pub fn outbound(
        &self,
        function: &str,
        host: &str,
        outcome: &str,
        took: Option<std::time::Duration>,
    ) {
        self.outbound
            .get_or_create(&labels(&[
                ("function", function),
                ("host", host),
                ("outcome", outcome),
            ]))
            .inc();
        if let Some(took) = took {
            self.outbound_duration
                .get_or_create(&labels(&[("function", function), ("host", host)]))
                .observe(took.as_secs_f64());
        }
    }

    /// The handles of `function`'s event metrics, resolved once: a trigger holds them so its
    /// per-event path looks no label up.
    pub fn function(&self, function: &str) -> FunctionMetrics {
        let events = |outcome: &str| {
            self.events
                .get_or_create(&labels(&[("function", function), ("outcome", outcome)]))
                .clone()
        };
        let one = labels(&[("function", function)]);
        FunctionMetrics {
            ok: events("ok"),
            rejected: events("rejected"),
            failed: events("failed"),
            retried: events("retried"),
            dead_lettered: events("dead_lettered"),
            duration: self.duration.get_or_create(&one).clone(),
            instantiation: self.instantiation.get_or_create(&one).clone(),
            in_flight: self.in_flight.get_or_create(&one).clone(),
            window: window::window(function),
        }
    }

    /// Makes `function`'s series exist, at 0, as soon as it is loaded: dashboards and alerts
    /// see it before its first event.
    pub fn function_loaded(&self, function: &str) {
        let _ = self.function(function);
        let _ = self
            .deploys
            .get_or_create(&labels(&[("function", function)]));
        let _ = self
            .canary_rollbacks
            .get_or_create(&labels(&[("function", function)]));
    }

    /// Counts a tick this host fired, `late` seconds after its time.
    pub fn cron_tick(&self, schedule: &str, late: f64) {
        let l = labels(&[("schedule", schedule)]);
        self.cron_ticks.get_or_create(&l).inc();
        self.cron_lateness.get_or_create(&l).observe(late.max(0.0));
    }

    /// Counts missed ticks of `schedule` that its catch-up policy emitted and skipped.
    pub fn cron_missed(&self, schedule: &str, emitted: u64, skipped: u64) {
        for (outcome, count) in [("emitted", emitted), ("skipped", skipped)] {
            self.cron_missed
                .get_or_create(&labels(&[("schedule", schedule), ("outcome", outcome)]))
                .inc_by(count);
        }
    }

    /// Counts a failed Redis command of `operation`, by kind.
    pub fn redis_error(&self, operation: &str, kind: &str) {
        self.redis_errors
            .get_or_create(&labels(&[("operation", operation), ("kind", kind)]))
            .inc();
    }

    /// Sets the flow gauge of `function`'s trigger on `stream` (see [`crate::triggers::streams::flow::Flow::gauge`]).
    pub fn set_flow(&self, function: &str, stream: &str, value: i64) {
        self.flow
            .get_or_create(&labels(&[("function", function), ("stream", stream)]))
            .set(value);
    }

    /// Counts a trip of `function`'s breaker on `stream` by this host.
    pub fn breaker_tripped(&self, function: &str, stream: &str) {
        self.breaker_trips
            .get_or_create(&labels(&[("function", function), ("stream", stream)]))
            .inc();
    }

    /// Adds `seconds` that `function`'s triggers waited for its cluster-wide `limit`
    /// (`concurrency` or `rate`).
    pub fn limit_waited(&self, function: &str, limit: &str, seconds: f64) {
        self.limit_wait
            .get_or_create(&labels(&[("function", function), ("limit", limit)]))
            .inc_by(seconds);
    }

    /// Counts a canary of `function` this host rolled back automatically.
    pub fn canary_rolled_back(&self, function: &str) {
        self.canary_rollbacks
            .get_or_create(&labels(&[("function", function)]))
            .inc();
    }

    /// Counts entries of `stream` this host trimmed.
    pub fn trimmed(&self, stream: &str, entries: u64) {
        self.trimmed
            .get_or_create(&labels(&[("stream", stream)]))
            .inc_by(entries);
    }

    /// Sets how many entries each stream's retention keeps only because a group needs them;
    /// streams not listed (no longer trimmed) lose their series.
    pub fn set_held_back(&self, streams: impl Iterator<Item = (String, i64)>) {
        self.held_back.clear();
        for (stream, entries) in streams {
            self.held_back
                .get_or_create(&labels(&[("stream", &stream)]))
                .set(entries);
        }
    }

    /// Counts a version switch.
    pub fn deploy(&self, function: &str) {
        self.deploys
            .get_or_create(&labels(&[("function", function)]))
            .inc();
    }

    /// Registers a stream trigger whose group and dead-letter stream are reported at scrape.
    pub fn watch_group(&self, stream: &str, group: &str, dead_letter: &str) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.insert((stream.to_owned(), group.to_owned(), dead_letter.to_owned()));
    }

    /// The (stream, group, dead-letter stream) triples of the triggers this host runs.
    pub fn watched_groups(&self) -> Vec<(String, String, String)> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Sets the gauges of a consumer group, as read from Redis at scrape.
    pub fn set_group(&self, stream: &str, group: &str, lag: u64, pending: u64) {
        let l = labels(&[("stream", stream), ("group", group)]);
        self.lag.get_or_create(&l).set(lag as i64);
        self.pending.get_or_create(&l).set(pending as i64);
    }

    /// Sets the length of a dead-letter stream, as read from Redis at scrape.
    pub fn set_dead_letters(&self, stream: &str, length: i64) {
        self.dead_letters
            .get_or_create(&labels(&[("stream", stream)]))
            .set(length);
    }

    /// Sets Redis's memory use and limit, as read at scrape.
    pub fn set_redis_memory(&self, used: u64, max: u64) {
        self.redis_used.set(used as i64);
        self.redis_max.set(max as i64);
    }

    /// Everything, as Prometheus text. The gauges read from Redis are as last set (see
    /// [`crate::status::refresh_gauges`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// How long a scrape spends reading gauges from Redis at most: a Redis in trouble must not make
/// `/metrics` slower than a scraper's timeout (Prometheus's default is 10 s).
pub const SCRAPE_REDIS_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);
