//! Cronjobs in Redis: create, list with their state, remove. Shared by `eddy cron` (which talks
//! to Redis directly) and the HTTP API, so both validate and store exactly alike.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use redis::aio::ConnectionLike;
use serde_json::{Value, json};

use super::{CRONJOBS_KEY, CronJob, cronjob_state_key, cronjob_ticker};

/// Why a cronjob change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The cronjob is invalid; the error names the field.
    #[error(transparent)]
    Invalid(#[from] super::InvalidCronJob),
    /// A cronjob of that name exists.
    #[error("cronjob {0:?} already exists: remove it first")]
    Exists(String),
    /// No cronjob of that name.
    #[error("no cronjob named {0:?}")]
    Missing(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Validates and stores cronjob `name`; returns its description (as [`list`] gives it).
pub async fn create<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
    job: &CronJob,
) -> Result<Value, StoreError> {
    cronjob_ticker(name, job)?;
    let text = serde_json::to_string(job).expect("a cronjob serializes");
    let created: bool = redis::cmd("HSETNX")
        .arg(CRONJOBS_KEY)
        .arg(name)
        .arg(&text)
        .query_async(conn)
        .await?;
    if !created {
        return Err(StoreError::Exists(name.to_owned()));
    }
    // The state hash holds the definition its ticks fire for, beside the mark, in the stream's
    // slot (see [`super::Ticker::definition`]). A leftover state of an earlier cronjob of this
    // name is replaced, so it can neither fire for the old definition nor skip the new one's
    // first ticks.
    // The mark starts at now, as for any schedule seen for the first time: a mark an earlier
    // cronjob of this name left under an older key layout is not inherited.
    let state = cronjob_state_key(name, &job.stream);
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(&state)
        .ignore()
        .cmd("HSET")
        .arg(&state)
        .arg("def")
        .arg(&text)
        .arg("last")
        .arg(Utc::now().timestamp())
        .ignore()
        .query_async(conn)
        .await?;
    Ok(describe(name, job, &Default::default()))
}

/// Removes cronjob `name` and its state.
pub async fn remove<C: ConnectionLike>(conn: &mut C, name: &str) -> Result<(), StoreError> {
    if crate::names::identifier(name).is_err() {
        return Err(StoreError::Missing(name.to_owned()));
    }
    let stored: Option<String> = redis::cmd("HGET")
        .arg(CRONJOBS_KEY)
        .arg(name)
        .query_async(conn)
        .await?;
    let Some(stored) = stored else {
        return Err(StoreError::Missing(name.to_owned()));
    };
    // The state goes first: an empty `def` (a tombstone, which a starting ticker never
    // replaces) and no host fires another tick, whatever list it read last. Then the
    // definition; if that step is lost, the cronjob is listed but inert, and removing it again
    // finishes.
    if let Ok(job) = serde_json::from_str::<CronJob>(&stored) {
        let _: () = redis::cmd("HSET")
            .arg(cronjob_state_key(name, &job.stream))
            .arg("def")
            .arg("")
            .query_async(conn)
            .await?;
    }
    let _: i64 = redis::cmd("HDEL")
        .arg(CRONJOBS_KEY)
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Every cronjob with its next fire time, last fire time and last result, sorted by name.
pub async fn list<C: ConnectionLike>(conn: &mut C) -> Result<Vec<Value>, StoreError> {
    let jobs: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(CRONJOBS_KEY)
        .query_async(conn)
        .await?;
    let mut rows = Vec::new();
    for (name, text) in jobs {
        let Ok(job) = serde_json::from_str::<CronJob>(&text) else {
            rows.push(json!({ "name": name, "error": "unreadable cronjob" }));
            continue;
        };
        let state: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(cronjob_state_key(&name, &job.stream))
            .query_async(conn)
            .await?;
        rows.push(describe(&name, &job, &state));
    }
    Ok(rows)
}

fn describe(name: &str, job: &CronJob, state: &std::collections::HashMap<String, String>) -> Value {
    let next = cronjob_ticker(name, job)
        .ok()
        .and_then(|t| t.schedule.next_after(Utc::now()))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let last_fire = state
        .get("fired_at")
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    json!({
        "name": name,
        "schedule": job.schedule,
        "timezone": job.timezone,
        "stream": job.stream,
        "type": job.event_type,
        "data": job.data,
        "catch_up": job.catch_up,
        "late_grace_ms": job.late_grace_ms,
        "late_grace": humantime::format_duration(Duration::from_millis(job.late_grace_ms)).to_string(),
        "missed": {
            "emitted": state.get("missed_emitted").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0),
            "skipped": state.get("missed_skipped").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0),
        },
        "next": next,
        "last_fire": last_fire,
        "last_result": state.get("result"),
    })
}
