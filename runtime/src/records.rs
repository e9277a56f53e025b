//! Invocation records: what happened to each event, kept in Redis for `eddy logs` and
//! `eddy trace`.
//!
//! Every invocation is recorded: time, function, event id, stream and entry id, attempt,
//! status, outcome, duration, the host, the correlation id, and its log lines (bounded to
//! [`RECORD_LOG_BYTES`]). Records go to `eddy:records:<function>` (the newest
//! [`RECORDS_PER_FUNCTION`] are kept) and to `eddy:trace:<correlation id>` (a flow's records in
//! order, kept [`TRACE_TTL`]); `eddy:event:<id>` maps an event to its correlation id;
//! [`FAILURES_KEY`] keeps the newest failures across functions, for the web page. A host
//! writes them from a background task in pipelined batches, off the invocation path.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Records kept per function (older ones are trimmed).
pub const RECORDS_PER_FUNCTION: usize = 1000;
/// Records kept per flow (correlation id): the newest.
pub const RECORDS_PER_TRACE: usize = 1000;
/// How long a flow's records and event lookups are kept.
pub const TRACE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bytes of log lines kept in one record.
pub const RECORD_LOG_BYTES: usize = 2048;
/// The newest failed or rejected invocations across all functions, newest first.
pub const FAILURES_KEY: &str = "eddy:failures";
/// How many of those are kept.
pub const RECENT_FAILURES: usize = 200;
/// Records written per pipeline at most.
const BATCH: usize = 256;

/// One invocation, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// When it ended (RFC 3339).
    pub time: String,
    /// The function.
    pub function: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The stream and entry it came from, if any.
    pub stream: Option<String>,
    /// Its entry id there.
    pub entry_id: Option<String>,
    /// The attempt.
    pub attempt: u32,
    /// The status returned, if any.
    pub status: Option<u16>,
    /// done, rejected or failed.
    pub outcome: String,
    /// The failure, if failed.
    pub error: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: f64,
    /// The host (consumer name).
    pub host: String,
    /// The flow's correlation id.
    pub correlation_id: String,
    /// The event that caused this one, if it was published by a function.
    pub caused_by: Option<String>,
    /// The end of the captured log lines.
    pub logs: String,
}

impl Record {
    /// When the invocation started, in microseconds since the Unix epoch (0 if unknown).
    pub fn started_micros(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| t.timestamp_micros() - (self.duration_ms * 1000.0) as i64)
            .unwrap_or(0)
    }

    /// What tells two records apart, for showing each once.
    pub fn key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.time, self.function, self.event_id, self.attempt, self.host
        )
    }
}

/// The last [`RECORD_LOG_BYTES`] of `logs`, cut at a character boundary.
pub fn bounded_logs(logs: &str) -> String {
    let cut = logs.len().saturating_sub(RECORD_LOG_BYTES);
    let cut = (cut..=logs.len())
        .find(|i| logs.is_char_boundary(*i))
        .unwrap_or(logs.len());
    logs[cut..].to_owned()
}

/// Queues records for writing; cheap to clone.
#[derive(Clone)]
pub struct Recorder(mpsc::UnboundedSender<Record>);

impl Recorder {
    /// Starts the writing task.
    pub fn spawn(conn: ConnectionManager) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write(conn, receiver));
        Self(sender)
    }

    /// Queues `record`.
    pub fn record(&self, record: Record) {
        let _ = self.0.send(record);
    }
}

async fn write(mut conn: ConnectionManager, mut receiver: mpsc::UnboundedReceiver<Record>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let ttl = TRACE_TTL.as_secs();
        let mut failed = false;
        for record in batch.drain(..) {
            let json = serde_json::to_string(&record).expect("a record serializes");
            let by_function = format!("eddy:records:{}", record.function);
            let trace = format!("eddy:trace:{}", record.correlation_id);
            pipe.cmd("LPUSH").arg(&by_function).arg(&json).ignore();
            pipe.cmd("LTRIM")
                .arg(&by_function)
                .arg(0)
                .arg(RECORDS_PER_FUNCTION - 1)
                .ignore();
            if record.outcome != "done" {
                pipe.cmd("LPUSH").arg(FAILURES_KEY).arg(&json).ignore();
                failed = true;
            }
            pipe.cmd("RPUSH").arg(&trace).arg(&json).ignore();
            // A client that reuses one correlation id must not grow a list without end.
            pipe.cmd("LTRIM")
                .arg(&trace)
                .arg(-(RECORDS_PER_TRACE as i64))
                .arg(-1)
                .ignore();
            pipe.cmd("EXPIRE").arg(&trace).arg(ttl).ignore();
            pipe.cmd("SET")
                .arg(format!("eddy:event:{}", record.event_id))
                .arg(&record.correlation_id)
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        if failed {
            pipe.cmd("LTRIM")
                .arg(FAILURES_KEY)
                .arg(0)
                .arg(RECENT_FAILURES - 1)
                .ignore();
        }
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            // Records are for people; losing a batch during an outage is acceptable.
            tracing::warn!(%error, "writing invocation records failed");
        }
    }
}

/// The newest records of `function`, newest first, optionally only failures or one event's.
pub async fn logs<C: ConnectionLike>(
    conn: &mut C,
    function: &str,
    failed_only: bool,
    event: Option<&str>,
) -> redis::RedisResult<Vec<Record>> {
    Ok(read_list(conn, &format!("eddy:records:{function}"), -1)
        .await?
        .into_iter()
        .filter(|r| !failed_only || r.outcome != "done")
        .filter(|r| event.is_none_or(|e| r.event_id == e))
        .collect())
}

/// The newest `limit` (at most [`RECENT_FAILURES`]) invocations that did not succeed, across
/// every function, newest first: one list, kept as records are written, so the web page's
/// poll reads only what it shows.
pub async fn recent_failures<C: ConnectionLike>(
    conn: &mut C,
    limit: usize,
) -> redis::RedisResult<Vec<Record>> {
    let last = limit.clamp(1, RECENT_FAILURES) as isize - 1;
    read_list(conn, FAILURES_KEY, last).await
}

/// Every recorded invocation of the flow `event_id` belongs to, in order.
pub async fn trace<C: ConnectionLike>(
    conn: &mut C,
    event_id: &str,
) -> redis::RedisResult<Vec<Record>> {
    let correlation: Option<String> = redis::cmd("GET")
        .arg(format!("eddy:event:{event_id}"))
        .query_async(conn)
        .await?;
    let correlation = correlation.unwrap_or_else(|| event_id.to_owned());
    let mut flow = read_list(conn, &format!("eddy:trace:{correlation}"), -1).await?;
    // Records land in the order invocations *ended*; a function can publish and keep working,
    // so the event it caused may finish first. Ordering by start keeps cause before effect.
    flow.sort_by_key(Record::started_micros);
    Ok(flow)
}

/// The records of list `key` up to index `last` (-1: all), skipping any that do not parse
/// (written by a newer host).
async fn read_list<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    last: isize,
) -> redis::RedisResult<Vec<Record>> {
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(last)
        .query_async(conn)
        .await?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_logs_keeps_the_end_and_whole_characters() {
        assert_eq!(bounded_logs("short"), "short");
        let long = format!("{}é{}", "a".repeat(10), "b".repeat(RECORD_LOG_BYTES - 1));
        let kept = bounded_logs(&long);
        // The cut falls inside 'é' (two bytes), so it moves past it.
        assert_eq!(kept, "b".repeat(RECORD_LOG_BYTES - 1));
    }
}
