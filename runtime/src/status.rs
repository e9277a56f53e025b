//! Host heartbeats and the cluster's status: what `eddy status` shows.
//!
//! Every host writes a heartbeat into the `eddy:hosts` hash each [`HEARTBEAT_INTERVAL`]: its
//! consumer name, API address, start time, the functions and stream triggers it runs, and when
//! it was last seen. A host not seen for [`HOST_DEAD_AFTER`] is reported dead; one not seen for
//! [`HOST_FORGET_AFTER`] is dropped from the hash.

use std::time::Duration;

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::metrics::METRICS;

/// The hash of host heartbeats: consumer name → JSON [`Heartbeat`].
pub const HOSTS_KEY: &str = "eddy:hosts";
/// How often a host writes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A host not seen for this long is reported dead.
pub const HOST_DEAD_AFTER: Duration = Duration::from_secs(5);
/// A host not seen for this long is forgotten.
pub const HOST_FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What a host says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its consumer name.
    pub consumer: String,
    /// Its API address, if it serves one.
    pub api: Option<String>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: i64,
    /// When it was last seen (ms since the Unix epoch).
    pub seen_ms: i64,
    /// The stream triggers it runs: stream, group, dead-letter stream.
    pub triggers: Vec<(String, String, String)>,
    /// The functions it runs, from manifests or deployed (absent from older hosts' beats).
    #[serde(default)]
    pub functions: Vec<RunningFunction>,
}

/// A function a host runs, as its heartbeat says: what the page lists, whether it came from a
/// manifest given to `eddy up` or was deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningFunction {
    /// Its name.
    pub name: String,
    /// `manifest` (from `eddy up --functions`) or `deployed` (from the registry).
    pub source: String,
    /// The deployed version it runs; none for a manifest's function.
    pub version: Option<u32>,
    /// Its triggers, for people: `stream orders (group billing)`, `cron 0 0 * * * * (UTC)`.
    pub triggers: Vec<String>,
    /// The (stream, group) pairs it reads, whose backlog its chart shows; this host's only.
    #[serde(skip)]
    pub groups: Vec<(String, String)>,
}

/// The names of the functions the live hosts run, from their heartbeats.
pub async fn running_names<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<Vec<String>> {
    let beats: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(HOSTS_KEY)
        .query_async(conn)
        .await?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut names = std::collections::BTreeSet::new();
    for (_, beat) in beats {
        if let Ok(beat) = serde_json::from_str::<Heartbeat>(&beat)
            && now - beat.seen_ms <= HOST_DEAD_AFTER.as_millis() as i64
        {
            names.extend(beat.functions.into_iter().map(|f| f.name));
        }
    }
    Ok(names.into_iter().collect())
}

/// The functions this host runs, by name, with the generation that started each: a function
/// restarted under the same name must not be dropped when its old triggers stop.
static RUNNING: std::sync::LazyLock<
    std::sync::Mutex<std::collections::BTreeMap<String, (u64, RunningFunction)>>,
> = std::sync::LazyLock::new(Default::default);
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Notes that this host now runs `function`; returns the generation [`running_stopped`] takes.
pub fn running_started(function: RunningFunction) -> u64 {
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running.insert(function.name.clone(), (generation, function));
    generation
}

/// Notes that the triggers of `name` started as `generation` stopped.
pub fn running_stopped(name: &str, generation: u64) {
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if running.get(name).is_some_and(|(g, _)| *g == generation) {
        running.remove(name);
    }
}

/// Notes that `name` now runs deployed `version` (swapped in place).
pub fn running_version(name: &str, version: u32) {
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, function)) = running.get_mut(name) {
        function.version = Some(version);
    }
}

/// The functions this host runs.
pub fn running() -> Vec<RunningFunction> {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running.values().map(|(_, f)| f.clone()).collect()
}

/// Writes this host's heartbeat until `stop`, then removes it.
pub async fn heartbeat(
    broker: Broker,
    consumer: String,
    api: Option<String>,
    stop: CancellationToken,
) {
    let mut conn = broker.shared();
    let started_ms = chrono::Utc::now().timestamp_millis();
    loop {
        let beat = Heartbeat {
            consumer: consumer.clone(),
            api: api.clone(),
            started_ms,
            seen_ms: chrono::Utc::now().timestamp_millis(),
            triggers: METRICS.watched_groups(),
            functions: running(),
        };
        let written: redis::RedisResult<()> = redis::cmd("HSET")
            .arg(HOSTS_KEY)
            .arg(&consumer)
            .arg(serde_json::to_string(&beat).expect("a heartbeat serializes"))
            .query_async(&mut conn)
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "writing the heartbeat failed");
        }
        if !crate::backoff::sleep_or_cancel(HEARTBEAT_INTERVAL, &stop).await {
            break;
        }
    }
    let _: redis::RedisResult<()> = redis::cmd("HDEL")
        .arg(HOSTS_KEY)
        .arg(&consumer)
        .query_async(&mut conn)
        .await;
}

/// The cluster's status: hosts (alive or dead), deployed functions, lag and pending per group,
/// dead letters per stream, cronjobs, and stream triggers paused or stopped by their breaker.
pub async fn status<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<Value> {
    let now = chrono::Utc::now().timestamp_millis();
    let beats: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(HOSTS_KEY)
        .query_async(conn)
        .await?;
    let mut hosts = Vec::new();
    // Function name → how a host describes it, on how many live hosts, which versions.
    let mut running: std::collections::BTreeMap<
        String,
        (RunningFunction, u32, std::collections::BTreeSet<u32>),
    > = Default::default();
    let mut groups = std::collections::BTreeSet::new();
    for (consumer, text) in beats {
        let Ok(beat) = serde_json::from_str::<Heartbeat>(&text) else {
            continue;
        };
        let age = now - beat.seen_ms;
        if age > HOST_FORGET_AFTER.as_millis() as i64 {
            let _: () = redis::cmd("HDEL")
                .arg(HOSTS_KEY)
                .arg(&consumer)
                .query_async(conn)
                .await?;
            continue;
        }
        let alive = age <= HOST_DEAD_AFTER.as_millis() as i64;
        if alive {
            groups.extend(beat.triggers.iter().cloned());
            for function in &beat.functions {
                let entry = running
                    .entry(function.name.clone())
                    .or_insert_with(|| (function.clone(), 0u32, std::collections::BTreeSet::new()));
                entry.1 += 1;
                if let Some(version) = function.version {
                    entry.2.insert(version);
                }
            }
        }
        hosts.push(json!({
            "consumer": consumer,
            "alive": alive,
            "api": beat.api,
            "last_seen_ms_ago": age,
            "up_since": chrono::DateTime::from_timestamp_millis(beat.started_ms).map(|t| t.to_rfc3339()),
        }));
    }
    let running: Vec<Value> = running
        .into_values()
        .map(|(function, hosts, versions)| {
            json!({
                "name": function.name, "source": function.source,
                "version": versions.iter().max(), "versions": versions,
                "hosts": hosts, "triggers": function.triggers,
            })
        })
        .collect();
    let mut functions = Vec::new();
    for name in crate::registry::names(conn).await? {
        if let Some(version) = crate::registry::current(conn, &name).await? {
            let (canary, ended) = crate::canary::state(conn, &name).await.unwrap_or_default();
            let time =
                |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
            functions.push(json!({
                "name": name, "version": version.version, "digest": version.digest,
                "canary": canary.map(|c| json!({ "version": c.version, "percent": c.percent })),
                "last_canary": ended.map(|e| json!({
                    "version": e.version, "reason": e.reason, "ended": time(e.ended_ms),
                })),
            }));
        }
    }
    let mut lag = Vec::new();
    let mut dead_letter_streams = std::collections::BTreeSet::new();
    for (stream, group, dead_letter) in &groups {
        dead_letter_streams.insert(dead_letter.clone());
        // One stream that cannot be read (deleted, replaced by another type) must not take
        // the whole status with it.
        if let Ok(Some(state)) = crate::broker::groups::state(conn, stream, group).await {
            lag.push(json!({
                "stream": stream, "group": group, "lag": state.lag, "pending": state.pending,
                "lag_estimated": state.estimated,
            }));
        }
    }
    let mut dead_letters = Vec::new();
    for stream in dead_letter_streams {
        let length: redis::RedisResult<i64> =
            redis::cmd("XLEN").arg(&stream).query_async(conn).await;
        match length {
            Ok(length) => dead_letters.push(json!({ "stream": stream, "count": length })),
            // One dead-letter stream someone overwrote with another type must not hide every
            // other function's status: it is shown with what is wrong.
            Err(error)
                if crate::broker::Trouble::of(&error) == crate::broker::Trouble::WrongType =>
            {
                dead_letters.push(json!({
                    "stream": stream, "count": 0,
                    "error": format!("{stream:?} is not a stream (another key holds its name): \
                        its letters wait in the source stream's outbox"),
                }));
            }
            Err(error) => return Err(error),
        }
    }
    let cronjobs = crate::triggers::cron::store::list(conn)
        .await
        .map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "cronjobs", e.to_string()))
        })?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    // A flow hash someone replaced with another type must not hide the rest of the status.
    let flow: Vec<Value> = crate::triggers::streams::flow::read(conn)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(field, state)| {
            let (function, stream) = field.split_once(' ').unwrap_or((field.as_str(), ""));
            let time = |ms: f64| {
                chrono::DateTime::from_timestamp_millis(ms as i64).map(|t| t.to_rfc3339())
            };
            let decided = crate::triggers::streams::flow::decide(Some(&state), now_ms);
            json!({
                "function": function,
                "stream": stream,
                "state": decided.as_str(),
                "paused_since": state.paused.as_ref().and_then(|p| time(p.at_ms)),
                "breaker": state.breaker.as_ref().map(|b| json!({
                    "reason": b.reason,
                    "tripped_at": time(b.at_ms),
                    "open_until": time(b.until_ms),
                    "trips": b.trips as u64,
                    "host": b.host,
                })),
            })
        })
        .collect();
    // A schema index someone replaced with another type must not hide the rest either.
    let schemas = crate::schemas::list(conn).await.unwrap_or_default();
    let memory = crate::broker::RedisMemory::read(conn).await?;
    Ok(json!({
        "redis": {
            "used_memory": memory.used, "maxmemory": memory.max, "full": memory.full(),
            "maxmemory_policy": memory.policy,
        },
        "hosts": hosts,
        "functions": functions,
        "running": running,
        "groups": lag,
        "dead_letters": dead_letters,
        "cronjobs": cronjobs,
        "flow": flow,
        "schemas": schemas,
    }))
}
/// Reads the gauges `/metrics` shows from Redis into [`METRICS`]: each watched consumer
/// group's lag and pending count, its dead-letter stream's length, and Redis's memory. A
/// figure Redis does not give keeps the last one read: a 0 would clear alerts exactly when
/// Redis is in trouble. The caller bounds the time ([`crate::metrics::SCRAPE_REDIS_BUDGET`]).
pub async fn refresh_gauges<C: redis::aio::ConnectionLike>(conn: &mut C) {
    for (stream, group, dead_letter) in METRICS.watched_groups() {
        if let Ok(Some(state)) = crate::broker::groups::state(conn, &stream, &group).await {
            METRICS.set_group(&stream, &group, state.lag, state.pending);
        }
        let length: redis::RedisResult<i64> =
            redis::cmd("XLEN").arg(&dead_letter).query_async(conn).await;
        if let Ok(length) = length {
            METRICS.set_dead_letters(&dead_letter, length);
        }
    }
    if let Ok(memory) = crate::broker::RedisMemory::read(conn).await {
        METRICS.set_redis_memory(memory.used, memory.max);
    }
}
