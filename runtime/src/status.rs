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
        if !crate::triggers::sleep_or_cancel(HEARTBEAT_INTERVAL, &stop).await {
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
        }
        hosts.push(json!({
            "consumer": consumer,
            "alive": alive,
            "api": beat.api,
            "last_seen_ms_ago": age,
            "up_since": chrono::DateTime::from_timestamp_millis(beat.started_ms).map(|t| t.to_rfc3339()),
        }));
    }
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
    let memory = crate::metrics::RedisMemory::read(conn).await?;
    Ok(json!({
        "redis": {
            "used_memory": memory.used, "maxmemory": memory.max, "full": memory.full(),
            "maxmemory_policy": memory.policy,
        },
        "hosts": hosts,
        "functions": functions,
        "groups": lag,
        "dead_letters": dead_letters,
        "cronjobs": cronjobs,
        "flow": flow,
        "schemas": schemas,
    }))
}
