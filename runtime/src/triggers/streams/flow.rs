//! Flow control of a stream trigger: an operator's pause and the circuit breaker. Both stop a
//! trigger from starting new work, on every host, without losing anything: entries wait in
//! the stream (lag grows) and retries wait in their schedule until the trigger goes on.
//!
//! **State.** One Redis hash, [`FLOW_KEY`], holds a JSON [`FlowState`] per trigger, under the
//! field `<function> <stream>` (names hold no spaces). Every change is one script on that key,
//! so two hosts (or a host and an operator) never half-apply one, and a cluster keeps it in one
//! slot. A trigger with no field runs freely; pausing writes `paused`, resuming deletes the
//! field (an operator's resume also closes a tripped breaker).
//!
//! **Reading it.** Each host reads the whole hash every [`FLOW_POLL`] ([`watch()`]), one command
//! per host whatever the number of triggers, and its triggers look at the copy before each
//! read, each retry lease and each claim of abandoned entries: a pause stops new work on every
//! host within a poll plus one blocking read. In-flight events finish and are settled.
//!
//! **The breaker** (`[triggers.stream.breaker]`): each host counts its trigger's outcomes over
//! a sliding `window` (4xx rejections count as answers, not failures). When at least
//! `min_events` were seen and the failed share reaches `failure_rate`, the host trips it in
//! Redis (only if no one has already), with the reason; every host then stops the trigger.
//! After `cool_down` it is half-open: the first host to take the probe (a script, so exactly
//! one) lets a single event through (a new entry first, which has all its attempts left, else
//! a due retry). A probe that
//! succeeds closes the breaker everywhere; one that fails trips it again for another
//! `cool_down`. Nothing is attempted while it is open, so nothing burns its attempts into the
//! dead-letter stream while a downstream is down. A host that dies while probing loses the
//! probe after the probe lease; another host takes it.
//!
//! Cost: one `HGETALL` per host per [`FLOW_POLL`]; nothing per event (outcomes are counted in
//! memory), and a script per trip or probe.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// The hash of every trigger's flow state: `<function> <stream>` → JSON [`FlowState`].
pub const FLOW_KEY: &str = "eddy:{eddy:flow}:triggers";
/// How often each host reads [`FLOW_KEY`]: a pause or a trip reaches every host within this
/// plus one blocking read.
pub const FLOW_POLL: Duration = Duration::from_millis(250);

/// Default share of failed events that trips a breaker: 0.5.
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// Default window outcomes are counted over: 1 minute.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default outcomes needed in the window before the breaker may trip: 20.
pub const DEFAULT_MIN_EVENTS: u32 = 20;
/// Default time a tripped breaker stays open before a probe: 30 s.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(30);
/// Longest window or cool-down accepted.
pub const MAX_BREAKER_DURATION: Duration = Duration::from_secs(3600);
/// Highest `min_events` accepted.
pub const MAX_MIN_EVENTS: u32 = 1_000_000;

/// A trigger's circuit breaker settings (`[triggers.stream.breaker]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Share of failed events, over the window, that trips it (0 < rate ≤ 1).
    pub failure_rate: f64,
    /// How far back outcomes count.
    pub window: Duration,
    /// Outcomes needed in the window before it may trip.
    pub min_events: u32,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: DEFAULT_FAILURE_RATE,
            window: DEFAULT_WINDOW,
            min_events: DEFAULT_MIN_EVENTS,
            cool_down: DEFAULT_COOL_DOWN,
        }
    }
}

/// What Redis says of one trigger's flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowState {
    /// Set while an operator has the trigger paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Paused>,
    /// Set while the breaker is open or half-open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Tripped>,
}

/// An operator's pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paused {
    /// When (ms since the Unix epoch; Lua writes numbers as floats).
    pub at_ms: f64,
    /// Who asked, as the API saw it.
    pub by: String,
}

/// A tripped breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tripped {
    /// When it first tripped (ms since the Unix epoch).
    pub at_ms: f64,
    /// Until when it stays open; then it is half-open.
    pub until_ms: f64,
    /// Why, in words.
    pub reason: String,
    /// The host that tripped it last.
    pub host: String,
    /// How many times it tripped since it last closed (probes that failed included).
    pub trips: f64,
    /// The probe's holder while half-open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// Until when the probe's holder keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_until_ms: Option<f64>,
}

/// What a trigger may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Run freely.
    Open,
    /// Paused by an operator.
    Paused,
    /// The breaker is open: nothing new until the cool-down ends.
    Tripped,
    /// The cool-down is over: one probe event may go.
    HalfOpen,
}

impl Flow {
    /// The value of the `eddy_trigger_flow` gauge: 0 running, 1 paused, 2 breaker open,
    /// 3 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            Flow::Open => 0,
            Flow::Paused => 1,
            Flow::Tripped => 2,
            Flow::HalfOpen => 3,
        }
    }
}

impl Flow {
    /// How `eddy status` and the page say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Open => "running",
            Flow::Paused => "paused",
            Flow::Tripped => "breaker open",
            Flow::HalfOpen => "breaker half-open",
        }
    }
}

/// Whether a host holding `token` may take the probe of `state` at `now_ms`, as far as its
/// copy shows: no one else holds a live one. Saves a script call per look while another host
/// probes; the script decides.
pub fn probe_free(state: Option<&FlowState>, token: &str, now_ms: i64) -> bool {
    state
        .and_then(|s| s.breaker.as_ref())
        .is_none_or(|b| match (&b.probe, b.probe_until_ms) {
            (Some(holder), Some(until)) => holder == token || until <= now_ms as f64,
            _ => true,
        })
}

/// What `state` lets a trigger do at `now_ms`. A pause wins over the breaker.
pub fn decide(state: Option<&FlowState>, now_ms: i64) -> Flow {
    let Some(state) = state else {
        return Flow::Open;
    };
    if state.paused.is_some() {
        return Flow::Paused;
    }
    match &state.breaker {
        None => Flow::Open,
        Some(tripped) if (now_ms as f64) < tripped.until_ms => Flow::Tripped,
        Some(_) => Flow::HalfOpen,
    }
}

/// The field of a trigger in [`FLOW_KEY`].
pub fn field(function: &str, stream: &str) -> String {
    format!("{function} {stream}")
}

/// Every host's copy of [`FLOW_KEY`], refreshed each [`FLOW_POLL`].
pub type FlowView = watch::Receiver<Arc<BTreeMap<String, FlowState>>>;

/// Starts reading [`FLOW_KEY`] every [`FLOW_POLL`] until `stop`. A failed read keeps the last
/// copy: a trigger does not run because Redis blinked, nor stop.
pub fn watch(broker: &Broker, stop: CancellationToken) -> FlowView {
    let (sender, view) = watch::channel(Arc::new(BTreeMap::new()));
    let mut conn = broker.shared();
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            match read(&mut conn).await {
                Ok(states) => {
                    failing = false;
                    sender.send_if_modified(|current| {
                        if **current == states {
                            false
                        } else {
                            *current = Arc::new(states);
                            true
                        }
                    });
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "reading the triggers' pause and breaker states failed; \
                        keeping the last ones");
                }
                Err(_) => {}
            }
            if !crate::backoff::sleep_or_cancel(FLOW_POLL, &stop).await {
                return;
            }
        }
    });
    view
}

/// Every trigger's state in [`FLOW_KEY`]; a field or value that does not parse is left out
/// (the next change to it overwrites it).
pub async fn read<C: ConnectionLike>(
    conn: &mut C,
) -> redis::RedisResult<BTreeMap<String, FlowState>> {
    // Bytes, not text: one value that is not UTF-8 (written by hand) must not hide the rest.
    let raw: BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
        .arg(FLOW_KEY)
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .filter_map(|(field, value)| {
            let field = String::from_utf8(field).ok()?;
            let state: FlowState = serde_json::from_slice(&value).ok()?;
            Some((field, state))
        })
        .collect())
}

/// Triggers the flow hash holds at most: a pause of a name no host runs is accepted (it may
/// start later), so without a ceiling a client could grow it without end.
pub const MAX_FLOW_ENTRIES: usize = 10_000;

/// Shared by the scripts: a field's state, whatever a hand or an older writer left there
/// (not JSON, not an object, JSON nulls) read as a clean table.
const LOAD_STATE: &str = r"
local function load(raw)
    if not raw then return {} end
    local ok, state = pcall(cjson.decode, raw)
    if not ok or type(state) ~= 'table' then return {} end
    if state.paused == cjson.null then state.paused = nil end
    if state.breaker == cjson.null or type(state.breaker) ~= 'table' then
        state.breaker = nil
    end
    local b = state.breaker
    if b then
        if b.probe == cjson.null then b.probe = nil end
        if type(b.until_ms) ~= 'number' then b.until_ms = 0 end
        if type(b.probe_until_ms) ~= 'number' then b.probe_until_ms = nil end
    end
    return state
end
";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LOAD_STATE}\n{body}"))
}

/// KEYS: flow. ARGV: field, now ms, who, most fields. 1 if paused, -1 if the hash is full.
static PAUSE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(
        r"
        local raw = redis.call('HGET', KEYS[1], ARGV[1])
        if not raw and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
        local state = load(raw)
        state.paused = { at_ms = tonumber(ARGV[2]), by = ARGV[3] }
        redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
        return 1
        ",
    )
});

/// KEYS: flow. ARGV: field, now ms, until ms, reason, host, probe token ('' to trip a closed
/// breaker only). 1 if tripped.
static TRIP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(
        r"
        local state = load(redis.call('HGET', KEYS[1], ARGV[1]))
        local old = state.breaker
        if ARGV[6] == '' then
            if old then return 0 end
        elseif not old or old.probe ~= ARGV[6] then
            return 0
        end
        local at = tonumber(ARGV[2])
        if old and type(old.at_ms) == 'number' then at = old.at_ms end
        local trips = 1
        if old and type(old.trips) == 'number' then trips = old.trips + 1 end
        state.breaker = {
            at_ms = at,
            until_ms = tonumber(ARGV[3]),
            reason = ARGV[4],
            host = ARGV[5],
            trips = trips,
        }
        redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
        return 1
        ",
    )
});

/// KEYS: flow. ARGV: field, now ms, token, probe lease until ms. 1 if the caller holds the
/// probe.
static PROBE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(
        r"
        local raw = redis.call('HGET', KEYS[1], ARGV[1])
        if not raw then return 0 end
        local state = load(raw)
        local breaker = state.breaker
        if not breaker or state.paused then return 0 end
        local now = tonumber(ARGV[2])
        if now < breaker.until_ms then return 0 end
        if breaker.probe and breaker.probe ~= ARGV[3] and breaker.probe_until_ms
            and breaker.probe_until_ms > now then
            return 0
        end
        breaker.probe = ARGV[3]
        breaker.probe_until_ms = tonumber(ARGV[4])
        redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
        return 1
        ",
    )
});

/// KEYS: flow. ARGV: field, probe token. 1 if the breaker closed.
static CLOSE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    script(
        r"
        local raw = redis.call('HGET', KEYS[1], ARGV[1])
        if not raw then return 0 end
        local state = load(raw)
        if not state.breaker or state.breaker.probe ~= ARGV[2] then return 0 end
        state.breaker = nil
        if state.paused then
            redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
        else
            redis.call('HDEL', KEYS[1], ARGV[1])
        end
        return 1
        ",
    )
});

/// Pauses the trigger of `function` on `stream`, on every host. False if the flow hash
/// already holds [`MAX_FLOW_ENTRIES`] triggers.
pub async fn pause<C: ConnectionLike>(
    conn: &mut C,
    function: &str,
    stream: &str,
    by: &str,
) -> redis::RedisResult<bool> {
    let mut invocation = PAUSE.prepare_invoke();
    invocation
        .key(FLOW_KEY)
        .arg(field(function, stream))
        .arg(chrono::Utc::now().timestamp_millis())
        .arg(by)
        .arg(MAX_FLOW_ENTRIES);
    invocation.invoke_async::<i64>(conn).await.map(|n| n == 1)
}

/// Forgets every flow state of `function` (it was removed: a later function of the same name
/// starts running).
pub async fn forget<C: ConnectionLike>(conn: &mut C, function: &str) -> redis::RedisResult<()> {
    let fields: Vec<Vec<u8>> = redis::cmd("HKEYS").arg(FLOW_KEY).query_async(conn).await?;
    let prefix = format!("{function} ");
    let mine: Vec<&Vec<u8>> = fields
        .iter()
        .filter(|f| f.starts_with(prefix.as_bytes()))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    redis::cmd("HDEL")
        .arg(FLOW_KEY)
        .arg(mine)
        .query_async::<i64>(conn)
        .await
        .map(drop)
}

/// Resumes the trigger of `function` on `stream`: ends a pause and closes a tripped breaker.
/// True if it was paused or tripped.
pub async fn resume<C: ConnectionLike>(
    conn: &mut C,
    function: &str,
    stream: &str,
) -> redis::RedisResult<bool> {
    redis::cmd("HDEL")
        .arg(FLOW_KEY)
        .arg(field(function, stream))
        .query_async::<i64>(conn)
        .await
        .map(|n| n > 0)
}

/// Trips the breaker of `field` until `until_ms`. With `probe`, only if that probe holds it
/// (a failed probe); without, only if it is closed. True if this call tripped it.
pub async fn trip<C: ConnectionLike>(
    conn: &mut C,
    field: &str,
    until_ms: i64,
    reason: &str,
    host: &str,
    probe: Option<&str>,
) -> redis::RedisResult<bool> {
    let mut invocation = TRIP.prepare_invoke();
    invocation
        .key(FLOW_KEY)
        .arg(field)
        .arg(chrono::Utc::now().timestamp_millis())
        .arg(until_ms)
        .arg(reason)
        .arg(host)
        .arg(probe.unwrap_or(""));
    invocation.invoke_async::<i64>(conn).await.map(|n| n == 1)
}

/// Takes (or keeps) the probe of a half-open breaker until `lease_until_ms`. True if the
/// caller holds it.
pub async fn take_probe<C: ConnectionLike>(
    conn: &mut C,
    field: &str,
    token: &str,
    lease_until_ms: i64,
) -> redis::RedisResult<bool> {
    let mut invocation = PROBE.prepare_invoke();
    invocation
        .key(FLOW_KEY)
        .arg(field)
        .arg(chrono::Utc::now().timestamp_millis())
        .arg(token)
        .arg(lease_until_ms);
    invocation.invoke_async::<i64>(conn).await.map(|n| n == 1)
}

/// Closes the breaker of `field` after the probe `token` succeeded. True if closed.
pub async fn close<C: ConnectionLike>(
    conn: &mut C,
    field: &str,
    token: &str,
) -> redis::RedisResult<bool> {
    let mut invocation = CLOSE.prepare_invoke();
    invocation.key(FLOW_KEY).arg(field).arg(token);
    invocation.invoke_async::<i64>(conn).await.map(|n| n == 1)
}

/// The stream triggers this process runs, function → streams (counted: while a function is
/// restarted its old and new triggers overlap), so that the API can pause a function's
/// triggers by its name alone.
static RUNNING: std::sync::LazyLock<std::sync::Mutex<BTreeMap<(String, String), usize>>> =
    std::sync::LazyLock::new(Default::default);

/// Notes that `function`'s trigger on `stream` runs here until the returned guard is dropped.
pub fn running(function: &str, stream: &str) -> RunningGuard {
    let key = (function.to_owned(), stream.to_owned());
    *RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default() += 1;
    RunningGuard { key }
}

/// Keeps a trigger listed as running here; see [`running`].
pub struct RunningGuard {
    key: (String, String),
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = running.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.key);
            }
        }
    }
}

/// The streams `function`'s triggers read on this host.
pub fn running_streams(function: &str) -> Vec<String> {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .filter(|(f, _)| f == function)
        .map(|(_, stream)| stream.clone())
        .collect()
}

/// One host's count of a trigger's outcomes over the breaker's window, in one-second buckets.
#[derive(Debug, Default)]
pub struct Window {
    /// (second since the Unix epoch, answered, failed), oldest first.
    buckets: VecDeque<(i64, u32, u32)>,
}

impl Window {
    /// Counts outcomes seen at `now_ms`: `answered` that did not fail, `failed` that did.
    pub fn add(&mut self, now_ms: i64, answered: u32, failed: u32) {
        let second = now_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some((at, a, f)) if *at == second => {
                *a += answered;
                *f += failed;
            }
            _ => self.buckets.push_back((second, answered, failed)),
        }
    }

    /// Forgets everything (the breaker closed or tripped: a new count starts).
    pub fn clear(&mut self) {
        self.buckets.clear();
    }

    /// Whether `config` trips at `now_ms`; if so, why, in words.
    pub fn trips(&mut self, config: &BreakerConfig, now_ms: i64) -> Option<String> {
        let oldest = now_ms.div_euclid(1000) - config.window.as_secs().max(1) as i64;
        while self.buckets.front().is_some_and(|(at, _, _)| *at <= oldest) {
            self.buckets.pop_front();
        }
        let (answered, failed) = self.buckets.iter().fold((0u64, 0u64), |(a, f), (_, x, y)| {
            (a + *x as u64, f + *y as u64)
        });
        let total = answered + failed;
        if total < config.min_events as u64 || total == 0 {
            return None;
        }
        let rate = failed as f64 / total as f64;
        (rate >= config.failure_rate).then(|| {
            format!(
                "{failed} of {total} events failed over the last {} ({:.0}%, the breaker trips \
                 at {:.0}%)",
                humantime::format_duration(config.window),
                rate * 100.0,
                config.failure_rate * 100.0
            )
        })
    }
}

/// The `breaker` table of a stream trigger, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    failure_rate: Option<f64>,
    window: Option<String>,
    min_events: Option<i64>,
    cool_down: Option<String>,
}

impl BreakerConfig {
    /// The breaker a `breaker` table at `at` asks for (every field defaulted), or the field at
    /// fault.
    pub fn from_settings(
        at: &str,
        raw: BreakerSettings,
    ) -> Result<BreakerConfig, crate::settings::FieldError> {
        use crate::settings;
        let mut config = BreakerConfig::default();
        if let Some(rate) = raw.failure_rate {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(settings::error(
                    &format!("{at}.failure_rate"),
                    &rate.to_string(),
                    "a share of failed events above 0.0 and at most 1.0 (0.5 trips at half)",
                ));
            }
            config.failure_rate = rate;
        }
        for (name, text, slot) in [
            ("window", &raw.window, &mut config.window),
            ("cool_down", &raw.cool_down, &mut config.cool_down),
        ] {
            if let Some(text) = text {
                *slot = settings::duration_where(
                    &format!("{at}.{name}"),
                    text,
                    |value| {
                        value >= Duration::from_secs(1)
                            && value <= MAX_BREAKER_DURATION
                            && value.subsec_nanos() == 0
                    },
                    "whole seconds from 1s to 1h",
                )?;
            }
        }
        config.min_events = settings::range(
            &format!("{at}.min_events"),
            raw.min_events,
            DEFAULT_MIN_EVENTS as usize,
            1,
            MAX_MIN_EVENTS as usize,
        )? as u32;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tripped(until_ms: f64) -> FlowState {
        FlowState {
            paused: None,
            breaker: Some(Tripped {
                at_ms: 0.0,
                until_ms,
                reason: "r".into(),
                host: "h".into(),
                trips: 1.0,
                probe: None,
                probe_until_ms: None,
            }),
        }
    }

    #[test]
    fn a_pause_wins_and_a_cool_down_ends_half_open() {
        assert_eq!(decide(None, 5), Flow::Open);
        assert_eq!(decide(Some(&tripped(10.0)), 5), Flow::Tripped);
        assert_eq!(decide(Some(&tripped(10.0)), 10), Flow::HalfOpen);
        let mut both = tripped(10.0);
        both.paused = Some(Paused {
            at_ms: 0.0,
            by: "ops".into(),
        });
        assert_eq!(decide(Some(&both), 20), Flow::Paused);
        assert_eq!(decide(Some(&FlowState::default()), 20), Flow::Open);
    }

    #[test]
    fn the_window_trips_on_the_rate_only_past_the_minimum_and_forgets_old_seconds() {
        let config = BreakerConfig {
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_events: 4,
            cool_down: Duration::from_secs(1),
        };
        let mut window = Window::default();
        window.add(0, 0, 3);
        assert_eq!(window.trips(&config, 0), None, "3 events, 4 needed");
        window.add(1_000, 2, 0);
        let why = window.trips(&config, 1_000).expect("3 of 5 failed");
        assert!(why.contains("3 of 5"), "{why}");
        // Ten seconds on, the failures have left the window.
        window.add(11_500, 4, 0);
        assert_eq!(window.trips(&config, 11_500), None);
        window.clear();
        window.add(12_000, 0, 4);
        assert!(window.trips(&config, 12_000).is_some());
    }

    #[test]
    fn a_probe_held_by_another_host_is_not_asked_for_until_its_lease_ends() {
        let mut state = tripped(0.0);
        assert!(probe_free(Some(&state), "me", 10));
        let breaker = state.breaker.as_mut().unwrap();
        breaker.probe = Some("other".into());
        breaker.probe_until_ms = Some(100.0);
        assert!(!probe_free(Some(&state), "me", 10));
        assert!(
            probe_free(Some(&state), "other", 10),
            "its holder renews it"
        );
        assert!(
            probe_free(Some(&state), "me", 100),
            "a lapsed probe is free"
        );
    }

    #[test]
    fn states_round_trip_as_the_scripts_write_them() {
        // cjson writes numbers as floats and leaves out what is nil.
        let text = r#"{"breaker":{"at_ms":1.796173677764e+12,"until_ms":1796173707764,"reason":"x","host":"h","trips":2}}"#;
        let state: FlowState = serde_json::from_str(text).unwrap();
        assert_eq!(state.breaker.as_ref().unwrap().trips, 2.0);
        assert_eq!(decide(Some(&state), 1_796_173_707_764), Flow::HalfOpen);
    }
}
