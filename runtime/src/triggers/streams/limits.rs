//! Cluster-wide limits of a function: at most `max_concurrency` of its events in flight across
//! every host, and at most `rate` started per second, so a small downstream sees the same load
//! from eight hosts as from one.
//!
//! Both live in Redis, per function, under one hash tag:
//! - **slots**: a sorted set of slot tokens scored by when each lease ends. Taking slots is one
//!   script (drop expired leases, count, add up to what is free), timed by Redis's own clock so
//!   hosts' clocks do not matter. A host holds a slot from before it reads an event until the
//!   event is settled; its leases are renewed every [`SLOT_REFRESH`] while held, so the slots
//!   of a host that dies free themselves after [`SLOT_LEASE`], and the others never exceed the
//!   limit meanwhile.
//! - **rate**: a token bucket (tokens, last refill) filled at `rate` up to a burst of a tenth of
//!   a second's worth (at least one), so over any window the events started stay within the
//!   rate plus that burst. Tokens taken for a read that found fewer entries go back.
//!
//! The limits gate each reader and retry loop of the function's triggers before they read or
//! lease, never an event already taken: a host waits (counted in
//! `eddy_limit_wait_seconds_total`) with its local permits, and the wait gives way at once to a
//! stop. A trigger without limits makes no Redis call here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::Script;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Conn;
use crate::metrics::METRICS;
use crate::settings::Expected;

/// Highest `max_concurrency` accepted.
pub const MAX_CLUSTER_CONCURRENCY: usize = 100_000;
/// Highest `rate` accepted, in events per second.
pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;
/// How long a slot is held without renewal before it frees itself (its host presumed dead).
pub const SLOT_LEASE: Duration = Duration::from_secs(10);
/// How often a host renews the leases of the slots it holds.
pub const SLOT_REFRESH: Duration = Duration::from_secs(2);
/// How often a loop that found no free slot asks again.
const SLOT_POLL: Duration = Duration::from_millis(20);
/// Longest a loop waits for a rate token before asking again.
const MAX_RATE_WAIT: Duration = Duration::from_millis(500);
/// The bucket's burst, in seconds of the rate.
const BURST_SECONDS: f64 = 0.1;

/// A function's cluster-wide limits, from its manifest's `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClusterLimits {
    /// Events in flight across every host at most.
    pub max_concurrency: Option<usize>,
    /// Events started per second across every host at most.
    pub rate: Option<f64>,
}

impl ClusterLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_concurrency.is_some() || self.rate.is_some()
    }
}

/// Reads a rate such as `100/s`, `6000/m` or `10/h` into events per second.
pub fn parse_rate(text: &str) -> Result<f64, Expected> {
    let expected = || {
        format!(
            "a count per unit such as \"100/s\", \"6000/m\" or \"10/h\" (at most \
             {MAX_RATE_PER_SECOND} per second)"
        )
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(expected)?;
    let count: u64 = count.trim().parse().map_err(|_| expected())?;
    let seconds = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(Expected::from(expected())),
    };
    let rate = count as f64 / seconds;
    if count == 0 || rate > MAX_RATE_PER_SECOND {
        return Err(Expected::from(expected()));
    }
    Ok(rate)
}

/// KEYS: slots. ARGV: lease ms, limit, wanted, token prefix. Returns the tokens taken.
static TAKE_SLOTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
        local out = {}
        for i = 1, math.min(free, tonumber(ARGV[3])) do
            local token = ARGV[4] .. ':' .. i
            redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), token)
            out[i] = token
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        return out
        ",
    )
});

/// KEYS: slots. ARGV: lease ms, tokens. Renews the leases of the tokens held, adding back any
/// whose lease lapsed (the host was stalled: its events still run, so the slot is in use and
/// others must see it). Returns how many had lapsed.
static RENEW_SLOTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local lapsed = 0
        for i = 2, #ARGV do
            lapsed = lapsed + redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        return lapsed
        ",
    )
});

/// KEYS: bucket. ARGV: tokens per ms, burst, wanted (negative: give that many back). Returns
/// the tokens taken and, when none, the ms until one is there.
static TAKE_TOKENS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
        local rate, burst, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
        local tokens = tonumber(state[1]) or burst
        local at = tonumber(state[2]) or now
        tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
        local taken = 0
        if wanted < 0 then
            tokens = math.min(burst, tokens - wanted)
        else
            taken = math.min(math.floor(tokens), wanted)
            tokens = tokens - taken
        end
        redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
        redis.call('PEXPIRE', KEYS[1], 3600000)
        if taken > 0 or wanted <= 0 then return {taken, 0} end
        return {0, math.ceil((1 - tokens) / rate)}
        ",
    )
});

/// What a dropped [`Permit`] gives back, for the background task to write.
enum Giveback {
    Slot(String),
    Token,
}

/// What a function's permits share with the task that renews and frees them.
struct Shared {
    function: String,
    slots_key: String,
    bucket_key: String,
    limits: ClusterLimits,
    held: Mutex<HashSet<String>>,
    giveback: mpsc::UnboundedSender<Giveback>,
}

/// Takes slots and rate tokens for one function's trigger on this host.
pub struct Limiter {
    shared: Option<Arc<Shared>>,
    conn: Conn,
    /// Unique to this limiter (host, trigger and start): slot tokens never collide, even
    /// between two triggers of one function on one host.
    prefix: String,
    counter: AtomicU64,
}

/// One event's right to run: the trigger's local permit and, under cluster-wide limits, its
/// slot and rate token. Dropping it frees them (the slot at once, an unspent token back into
/// the bucket).
pub struct Permit {
    _local: OwnedSemaphorePermit,
    slot: Option<String>,
    token: bool,
    shared: Option<Arc<Shared>>,
}

impl Permit {
    /// Marks the rate token as used by an event (not given back on drop).
    pub fn spend(&mut self) {
        self.token = false;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        if let Some(slot) = self.slot.take() {
            shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&slot);
            let _ = shared.giveback.send(Giveback::Slot(slot));
        }
        if self.token {
            let _ = shared.giveback.send(Giveback::Token);
        }
    }
}

impl Limiter {
    /// The limiter of `function` with `limits`, talking to Redis over `conn` as `consumer`.
    /// Without limits it only wraps permits.
    pub fn new(function: &str, limits: ClusterLimits, conn: Conn, consumer: Arc<str>) -> Self {
        let shared = limits.any().then(|| {
            let (giveback, returned) = mpsc::unbounded_channel();
            let base = format!("eddy:{{eddy:limits:{function}}}");
            let shared = Arc::new(Shared {
                function: function.to_owned(),
                slots_key: format!("{base}:slots"),
                bucket_key: format!("{base}:rate"),
                limits,
                held: Mutex::default(),
                giveback,
            });
            tokio::spawn(upkeep(
                Arc::downgrade(&shared),
                returned,
                conn.clone(),
                shared.slots_key.clone(),
                shared.bucket_key.clone(),
                limits.rate,
                function.to_owned(),
            ));
            shared
        });
        Self {
            shared,
            conn,
            prefix: format!("{consumer}:{}", uuid::Uuid::new_v4().simple()),
            counter: AtomicU64::new(0),
        }
    }

    /// Whether this limiter has limits to keep.
    pub fn limits(&self) -> bool {
        self.shared.is_some()
    }

    /// Turns local permits into permits to run: under limits, waits until at least one slot
    /// and token are free, takes as many as there are permits (up to what is free) and lets
    /// the other local permits go. `None` if `stop` fires first.
    pub async fn admit(
        &self,
        mut local: Vec<OwnedSemaphorePermit>,
        stop: &CancellationToken,
    ) -> Option<Vec<Permit>> {
        let Some(shared) = &self.shared else {
            return Some(local.into_iter().map(Permit::unlimited).collect());
        };
        let mut slots: Vec<Option<String>> = Vec::new();
        if let Some(max) = shared.limits.max_concurrency {
            let started = Instant::now();
            loop {
                match self.take_slots(shared, max, local.len()).await {
                    Ok(taken) if !taken.is_empty() => {
                        slots = taken.into_iter().map(Some).collect();
                        break;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        crate::broker::counted("limits", &error);
                        tracing::warn!(function = %shared.function, %error,
                            "taking a cluster-wide slot failed; trying again");
                    }
                }
                if !super::sleep_or_cancel(SLOT_POLL, stop).await {
                    return None;
                }
            }
            let waited = started.elapsed();
            if waited >= SLOT_POLL {
                METRICS.limit_waited(&shared.function, "concurrency", waited.as_secs_f64());
            }
            local.truncate(slots.len());
        }
        if let Some(rate) = shared.limits.rate {
            let started = Instant::now();
            let tokens = loop {
                match self.take_tokens(shared, rate, local.len() as i64).await {
                    Ok((taken, _)) if taken > 0 => break taken as usize,
                    Ok((_, wait_ms)) => {
                        let wait = Duration::from_millis(wait_ms.max(1) as u64).min(MAX_RATE_WAIT);
                        if !super::sleep_or_cancel(wait, stop).await {
                            return None;
                        }
                    }
                    Err(error) => {
                        crate::broker::counted("limits", &error);
                        tracing::warn!(function = %shared.function, %error,
                            "taking a rate token failed; trying again");
                        if !super::sleep_or_cancel(SLOT_POLL, stop).await {
                            return None;
                        }
                    }
                }
            };
            let waited = started.elapsed();
            if waited >= Duration::from_millis(1) {
                METRICS.limit_waited(&shared.function, "rate", waited.as_secs_f64());
            }
            local.truncate(tokens);
        }
        // Slots beyond the tokens granted go back at once (taken before the rate said how many).
        let extra: Vec<String> = if slots.len() > local.len() {
            slots.split_off(local.len()).into_iter().flatten().collect()
        } else {
            Vec::new()
        };
        slots.resize(local.len(), None);
        for slot in extra {
            shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&slot);
            let _ = shared.giveback.send(Giveback::Slot(slot));
        }
        Some(
            local
                .into_iter()
                .zip(slots)
                .map(|(local, slot)| Permit {
                    _local: local,
                    slot,
                    token: shared.limits.rate.is_some(),
                    shared: Some(shared.clone()),
                })
                .collect(),
        )
    }

    async fn take_slots(
        &self,
        shared: &Shared,
        max: usize,
        wanted: usize,
    ) -> redis::RedisResult<Vec<String>> {
        let prefix = format!(
            "{}:{}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = TAKE_SLOTS.prepare_invoke();
        invocation
            .key(&shared.slots_key)
            .arg(SLOT_LEASE.as_millis() as u64)
            .arg(max)
            .arg(wanted)
            .arg(&prefix);
        let taken: Vec<String> = invocation.invoke_async(&mut self.conn.clone()).await?;
        shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(taken.iter().cloned());
        Ok(taken)
    }

    async fn take_tokens(
        &self,
        shared: &Shared,
        rate: f64,
        wanted: i64,
    ) -> redis::RedisResult<(i64, i64)> {
        take_tokens(&mut self.conn.clone(), &shared.bucket_key, rate, wanted).await
    }
}

impl Permit {
    fn unlimited(local: OwnedSemaphorePermit) -> Self {
        Self {
            _local: local,
            slot: None,
            token: false,
            shared: None,
        }
    }
}

async fn take_tokens(
    conn: &mut Conn,
    bucket: &str,
    rate: f64,
    wanted: i64,
) -> redis::RedisResult<(i64, i64)> {
    let burst = (rate * BURST_SECONDS).max(1.0);
    let mut invocation = TAKE_TOKENS.prepare_invoke();
    invocation
        .key(bucket)
        .arg(rate / 1000.0)
        .arg(burst)
        .arg(wanted);
    invocation.invoke_async(conn).await
}

/// Frees what dropped permits give back, and renews the leases of slots still held, until
/// the limiter and all its permits are gone: what the last ones gave back is freed too (a
/// stopping host frees its slots rather than leaving them to their leases).
#[allow(clippy::too_many_arguments)]
async fn upkeep(
    shared: Weak<Shared>,
    mut returned: mpsc::UnboundedReceiver<Giveback>,
    mut conn: Conn,
    slots_key: String,
    bucket_key: String,
    rate: Option<f64>,
    function: String,
) {
    let mut renew = tokio::time::interval(SLOT_REFRESH);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            first = returned.recv() => {
                let Some(first) = first else { return };
                let mut slots = Vec::new();
                let mut tokens = 0i64;
                for giveback in std::iter::once(first).chain(std::iter::from_fn(|| returned.try_recv().ok())) {
                    match giveback {
                        Giveback::Slot(slot) => slots.push(slot),
                        Giveback::Token => tokens += 1,
                    }
                }
                if !slots.is_empty() {
                    let freed: redis::RedisResult<()> = redis::cmd("ZREM")
                        .arg(&slots_key)
                        .arg(&slots)
                        .query_async(&mut conn)
                        .await;
                    if let Err(error) = freed {
                        // The lease ends the slot anyway, at most SLOT_LEASE later.
                        crate::broker::counted("limits", &error);
                        tracing::warn!(%function, %error,
                            "freeing cluster-wide slots failed; their leases end them");
                    }
                }
                if tokens > 0 && let Some(rate) = rate
                    && let Err(error) = take_tokens(&mut conn, &bucket_key, rate, -tokens).await
                {
                    crate::broker::counted("limits", &error);
                }
            }
            _ = renew.tick() => {
                let Some(shared) = shared.upgrade() else { continue };
                let held: Vec<String> = shared
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                if held.is_empty() {
                    continue;
                }
                let mut invocation = RENEW_SLOTS.prepare_invoke();
                invocation
                    .key(&shared.slots_key)
                    .arg(SLOT_LEASE.as_millis() as u64)
                    .arg(&held);
                let renewed: redis::RedisResult<i64> = invocation.invoke_async(&mut conn).await;
                match renewed {
                    Ok(0) => {}
                    Ok(lapsed) => {
                        METRICS.redis_error("limits", "slot_lapsed");
                        tracing::warn!(%function, lapsed,
                            "cluster-wide slots lapsed while this host was stalled (longer than \
                             their lease): taken back, but other hosts may have run events in \
                             them meanwhile, above max_concurrency");
                    }
                    Err(error) => {
                        crate::broker::counted("limits", &error);
                        tracing::warn!(%function, %error,
                            "renewing cluster-wide slots failed; trying again");
                    }
                }
            }
        }
    }
}

impl ClusterLimits {
    /// The cluster-wide limits `[limits]`'s `max_concurrency` and `rate` ask for, or the field
    /// at fault.
    pub fn from_settings(
        max_concurrency: Option<i64>,
        rate: Option<&str>,
    ) -> Result<ClusterLimits, crate::settings::FieldError> {
        use crate::settings;
        Ok(ClusterLimits {
            max_concurrency: match max_concurrency {
                None => None,
                Some(n) => Some(settings::range(
                    "limits.max_concurrency",
                    Some(n),
                    0,
                    1,
                    MAX_CLUSTER_CONCURRENCY,
                )?),
            },
            rate: match rate {
                None => None,
                Some(text) => Some(parse_rate(text).map_err(|expected| {
                    settings::error("limits.rate", &format!("{text:?}"), &expected)
                })?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_back_per_second_or_name_the_form() {
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("6000/m"), Ok(100.0));
        assert_eq!(parse_rate("36/h"), Ok(0.01));
        for bad in [
            "",
            "100",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/d",
            "2000000/s",
            "x/s",
        ] {
            let error = parse_rate(bad).expect_err(bad);
            assert!(error.contains("\"100/s\""), "{error}");
        }
    }
}
