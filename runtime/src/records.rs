//! Invocation records: what happened to each event, kept in Redis for `eddy logs`,
//! `eddy trace` and the web page, within a memory budget that does not grow with the event rate.
//!
//! Every invocation is recorded: time, function, event id and type, stream and entry id,
//! attempt, status, outcome, error, duration, the host, the correlation id, the event that
//! caused it, and its log lines (the last [`RECORD_LOG_BYTES`] of a failure's, the last
//! [`SUCCESS_LOG_BYTES`] of a success's). A host gathers records for up to [`LINGER`] (or
//! [`BATCH`] records) and writes them with **one** script call: one entry of the stream
//! [`RECORDS_KEY`] holding the whole batch as a JSON array (split if it would exceed a
//! sixteenth of the budget; text fields are cut to [`RECORD_FIELD_BYTES`]). The script counts the bytes it
//! holds in [`RECORDS_BYTES_KEY`] and deletes the oldest entries while the total is over the
//! budget (`eddy up --records-budget`, default [`DEFAULT_BUDGET`]), so what records cost in
//! Redis is bounded by the budget, however many events run. Failures are also kept whole in
//! [`FAILURES_KEY`] (the newest [`RECENT_FAILURES`], each at most about 4 KiB, so under 1 MiB
//! beside the budget), which the web page reads.
//!
//! Reading scans the stream from the newest entry: `eddy logs` stops once it has
//! [`RECORDS_PER_FUNCTION`] of the function's records, and `eddy trace` finds a flow only while
//! its records are within the budget. Nothing else (no key per event or per flow) is written.

use std::time::Duration;

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::broker::Conn;
use crate::engine::floor_char_boundary;

/// The stream holding every record, a batch per entry.
pub const RECORDS_KEY: &str = "eddy:records";
/// The bytes [`RECORDS_KEY`] holds, as counted by the hosts that write it. Every key the
/// records script touches carries the `{eddy:records}` hash tag, so a Redis Cluster keeps them
/// in one slot.
pub const RECORDS_BYTES_KEY: &str = "eddy:{eddy:records}:bytes";
/// The size of each entry of [`RECORDS_KEY`], oldest first.
pub const RECORDS_SIZES_KEY: &str = "eddy:{eddy:records}:sizes";
/// Bytes kept of each text field of a record (ids, type, error): a producer's 20 KB event id
/// must not make records expensive.
pub const RECORD_FIELD_BYTES: usize = 512;
/// The default budget: Redis memory all records may take, across every host and function.
pub const DEFAULT_BUDGET: u64 = 64 * 1024 * 1024;
/// The smallest budget accepted.
pub const MIN_BUDGET: u64 = 1024 * 1024;
/// The largest budget accepted.
pub const MAX_BUDGET: u64 = 64 * 1024 * 1024 * 1024;
/// Records `eddy logs` shows per function at most: the newest.
pub const RECORDS_PER_FUNCTION: usize = 1000;
/// Records `eddy trace` shows per flow at most.
pub const RECORDS_PER_TRACE: usize = 1000;
/// Bytes of log lines kept in the record of a failed or rejected invocation.
pub const RECORD_LOG_BYTES: usize = 2048;
/// Bytes of log lines kept in the record of a successful one: the common case stays small.
pub const SUCCESS_LOG_BYTES: usize = 256;
/// The newest failed or rejected invocations across all functions, newest first.
pub const FAILURES_KEY: &str = "eddy:{eddy:records}:failures";
/// Where [`RECORDS_BYTES_KEY`], [`RECORDS_SIZES_KEY`] and [`FAILURES_KEY`] were before they
/// shared a hash slot, in that order (see [`crate::host::migrate`]).
pub const LEGACY_KEYS: [&str; 3] = ["eddy:records:bytes", "eddy:records:sizes", "eddy:failures"];
/// How many of those are kept.
pub const RECENT_FAILURES: usize = 200;
/// Records written per script call at most.
pub const BATCH: usize = 512;
/// Bytes of one records entry at most, as a fraction of the budget: an entry is never dropped
/// to make room for itself, so each must be a small part of the budget.
const ENTRY_SHARE_OF_BUDGET: u64 = 16;
/// How long a record may wait for others to share its write: records are for people, and
/// one write per many events is what keeps them off Redis's per-event bill.
pub const LINGER: Duration = Duration::from_millis(50);
/// Bytes counted per stream entry beyond its JSON, for Redis's own bookkeeping.
const ENTRY_OVERHEAD: usize = 64;
/// Entries a write deletes at most to get back under the budget (a smaller budget set by a
/// later host is reached over a few writes, never by one long script).
const MAX_TRIMMED_PER_WRITE: usize = 64;
/// Stream entries read per page when scanning.
const SCAN_PAGE: usize = 32;

/// KEYS: records stream, byte counter, sizes list, failures list. ARGV: budget, entry size,
/// the batch's JSON, then the failures' JSON documents. Appends the batch, counts its bytes,
/// drops the oldest entries while over the budget (never the one just added), and keeps the
/// newest failures. The sizes list holds each entry's size in stream order, so trimming reads
/// sizes, not entries, and cuts the stream with one `XTRIM`. If the sizes and the stream no
/// longer agree (a key deleted by hand), both start over from the entry just added; a counter
/// that is gone is summed again from the sizes.
static APPEND: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        r"
        redis.call('XADD', KEYS[1], '*', 's', ARGV[2], 'r', ARGV[3])
        redis.call('RPUSH', KEYS[3], ARGV[2])
        local len = redis.call('XLEN', KEYS[1])
        if redis.call('LLEN', KEYS[3]) ~= len then
            redis.call('XTRIM', KEYS[1], 'MAXLEN', 1)
            redis.call('DEL', KEYS[3])
            redis.call('RPUSH', KEYS[3], ARGV[2])
            len = 1
        end
        local held
        if len == 1 or redis.call('EXISTS', KEYS[2]) == 0 then
            -- Counted afresh when the stream starts over or the counter is gone.
            held = 0
            for _, size in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
                held = held + tonumber(size)
            end
            redis.call('SET', KEYS[2], held)
        else
            held = redis.call('INCRBY', KEYS[2], ARGV[2])
        end
        local budget = tonumber(ARGV[1])
        local drop = 0
        while held > budget and drop < len - 1 and drop < {MAX_TRIMMED_PER_WRITE} do
            held = held - tonumber(redis.call('LPOP', KEYS[3]))
            drop = drop + 1
        end
        if drop > 0 then
            redis.call('XTRIM', KEYS[1], 'MAXLEN', len - drop)
            redis.call('SET', KEYS[2], held)
        end
        if #ARGV > 3 then
            redis.call('LPUSH', KEYS[4], unpack(ARGV, 4))
            redis.call('LTRIM', KEYS[4], 0, {last})
        end
        return held
        ",
        last = RECENT_FAILURES - 1,
    ))
});

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
    /// The record with each text field cut to [`RECORD_FIELD_BYTES`] (logs are already cut).
    fn bounded(&self) -> Self {
        let cut = |text: &str| text[..floor_char_boundary(text, RECORD_FIELD_BYTES)].to_owned();
        Self {
            function: cut(&self.function),
            event_id: cut(&self.event_id),
            event_type: cut(&self.event_type),
            stream: self.stream.as_deref().map(cut),
            entry_id: self.entry_id.as_deref().map(cut),
            error: self
                .error
                .as_deref()
                .map(|e| e[..floor_char_boundary(e, 2 * RECORD_FIELD_BYTES)].to_owned()),
            host: cut(&self.host),
            correlation_id: cut(&self.correlation_id),
            caused_by: self.caused_by.as_deref().map(cut),
            ..self.clone()
        }
    }

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

/// The end of `logs` a record keeps for an invocation that ended in `outcome`.
pub fn logs_for(outcome: crate::engine::Outcome, logs: &str) -> String {
    match outcome {
        crate::engine::Outcome::Done => last_bytes(logs, SUCCESS_LOG_BYTES),
        _ => last_bytes(logs, RECORD_LOG_BYTES),
    }
}

fn last_bytes(logs: &str, max: usize) -> String {
    let cut = logs.len().saturating_sub(max);
    let cut = (cut..=logs.len())
        .find(|i| logs.is_char_boundary(*i))
        .unwrap_or(logs.len());
    logs[cut..].to_owned()
}

/// Queues records for writing; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::UnboundedSender<Vec<Record>>,
    /// Cancelled when the host stops: what is queued is written at once, without lingering.
    closing: tokio_util::sync::CancellationToken,
    writer: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Recorder {
    /// Starts the writing task, keeping every record within `budget` bytes of Redis memory.
    pub fn spawn(conn: Conn, budget: u64) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let closing = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(write(
            conn,
            receiver,
            budget.clamp(MIN_BUDGET, MAX_BUDGET),
            closing.clone(),
        ));
        Self {
            sender,
            closing,
            writer: std::sync::Arc::new(std::sync::Mutex::new(Some(writer))),
        }
    }

    /// Queues `records` (one send for a whole batch).
    pub fn record_many(&self, records: Vec<Record>) {
        if !records.is_empty() {
            let _ = self.sender.send(records);
        }
    }

    /// Writes what is queued and stops the writer, waiting at most `wait`: a host that stops
    /// keeps the records of the events it settled last.
    pub async fn close(&self, wait: Duration) {
        self.closing.cancel();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer
            && tokio::time::timeout(wait, writer).await.is_err()
        {
            tracing::warn!("invocation records still unwritten at exit are dropped");
        }
    }
}

async fn write(
    mut conn: Conn,
    mut receiver: mpsc::UnboundedReceiver<Vec<Record>>,
    budget: u64,
    closing: tokio_util::sync::CancellationToken,
) {
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut received = Vec::new();
    loop {
        // Wait for the first records, then linger for more to share the write.
        tokio::select! {
            got = receiver.recv_many(&mut received, 64) => if got == 0 { return },
            _ = closing.cancelled() => {
                while let Ok(more) = receiver.try_recv() {
                    received.push(more);
                }
                if received.is_empty() {
                    return;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            batch.extend(received.drain(..).flatten());
            if batch.len() >= BATCH || closing.is_cancelled() {
                break;
            }
            tokio::select! {
                got = receiver.recv_many(&mut received, 64) => if got == 0 { break },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = closing.cancelled() => {}
            }
        }
        let max_entry = (budget / ENTRY_SHARE_OF_BUDGET) as usize;
        let mut json = String::from("[");
        let mut failures = Vec::new();
        for record in batch.drain(..) {
            let one = serde_json::to_string(&record.bounded()).expect("a record serializes");
            if json.len() > 1 && json.len() + one.len() + 1 > max_entry {
                append(&mut conn, std::mem::take(&mut json), &failures, budget).await;
                json.push('[');
                failures.clear();
            }
            if json.len() > 1 {
                json.push(',');
            }
            json.push_str(&one);
            if record.outcome != "done" {
                failures.push(one);
            }
        }
        if json.len() > 1 {
            append(&mut conn, json, &failures, budget).await;
        }
    }
}

/// Writes one entry of records (`json`, an array missing its closing bracket) with one
/// script call, with the failures among them.
async fn append(conn: &mut Conn, mut json: String, failures: &[String], budget: u64) {
    json.push(']');
    let mut invocation = APPEND.prepare_invoke();
    invocation
        .key(RECORDS_KEY)
        .key(RECORDS_BYTES_KEY)
        .key(RECORDS_SIZES_KEY)
        .key(FAILURES_KEY)
        .arg(budget)
        .arg(json.len() + ENTRY_OVERHEAD)
        .arg(json);
    // The newest failures only: the list keeps that many anyway.
    for failure in failures.iter().rev().take(RECENT_FAILURES).rev() {
        invocation.arg(failure);
    }
    if let Err(error) = invocation.invoke_async::<i64>(conn).await {
        // Records are for people; losing a batch during an outage is acceptable.
        tracing::warn!(%error, "writing invocation records failed");
    }
}

/// Calls `visit` with every record, newest first, until it returns false or the records end.
async fn scan<C: ConnectionLike>(
    conn: &mut C,
    mut visit: impl FnMut(Record) -> bool,
) -> redis::RedisResult<()> {
    let mut end = "+".to_owned();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(RECORDS_KEY)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query_async(conn)
            .await?;
        let Some((last_id, _)) = page.last() else {
            return Ok(());
        };
        end = format!("({last_id}");
        for (_, fields) in &page {
            let Some((_, json)) = fields.iter().find(|(name, _)| name == "r") else {
                continue;
            };
            // A batch that does not parse was written by a newer host: skipped.
            let Ok(records) = serde_json::from_str::<Vec<Record>>(json) else {
                continue;
            };
            for record in records.into_iter().rev() {
                if !visit(record) {
                    return Ok(());
                }
            }
        }
        if page.len() < SCAN_PAGE {
            return Ok(());
        }
    }
}

/// Where following the records starts: the newest entry's id (`0-0` when there is none).
pub async fn cursor<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<String> {
    let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(RECORDS_KEY)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(newest
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
}

/// The records written after `cursor`, oldest first, moving `cursor` past them: what
/// `eddy logs --follow` reads each time, rather than the whole stream.
pub async fn newer<C: ConnectionLike>(
    conn: &mut C,
    cursor: &mut String,
) -> redis::RedisResult<Vec<Record>> {
    let mut out = Vec::new();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(RECORDS_KEY)
            .arg(format!("({cursor}"))
            .arg("+")
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query_async(conn)
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        *cursor = last.clone();
        for (_, fields) in &page {
            if let Some((_, json)) = fields.iter().find(|(name, _)| name == "r")
                && let Ok(records) = serde_json::from_str::<Vec<Record>>(json)
            {
                out.extend(records);
            }
        }
        if page.len() < SCAN_PAGE {
            return Ok(out);
        }
    }
}

/// The newest records of `function` (at most [`RECORDS_PER_FUNCTION`]), newest first,
/// optionally only failures or one event's.
pub async fn logs<C: ConnectionLike>(
    conn: &mut C,
    function: &str,
    failed_only: bool,
    event: Option<&str>,
) -> redis::RedisResult<Vec<Record>> {
    let mut found = Vec::new();
    scan(conn, |record| {
        if record.function == function
            && (!failed_only || record.outcome != "done")
            && event.is_none_or(|e| record.event_id == e)
        {
            found.push(record);
        }
        found.len() < RECORDS_PER_FUNCTION
    })
    .await?;
    Ok(found)
}

/// The newest `limit` (at most [`RECENT_FAILURES`]) invocations that did not succeed, across
/// every function, newest first: one list, kept as records are written, so the web page's
/// poll reads only what it shows.
pub async fn recent_failures<C: ConnectionLike>(
    conn: &mut C,
    limit: usize,
) -> redis::RedisResult<Vec<Record>> {
    let last = limit.clamp(1, RECENT_FAILURES) as isize - 1;
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(FAILURES_KEY)
        .arg(0)
        .arg(last)
        .query_async(conn)
        .await?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}

/// Every recorded invocation of the flow `event_id` belongs to (at most
/// [`RECORDS_PER_TRACE`]), in order, among the records still held.
pub async fn trace<C: ConnectionLike>(
    conn: &mut C,
    event_id: &str,
) -> redis::RedisResult<Vec<Record>> {
    // One pass finds the flow if `event_id` started it (its correlation id is its own id);
    // otherwise it finds the event's record, whose correlation id names the flow.
    let mut flow = Vec::new();
    let mut correlation = None;
    scan(conn, |record| {
        if record.event_id == event_id && correlation.is_none() {
            correlation = Some(record.correlation_id.clone());
        }
        if record.correlation_id == event_id {
            flow.push(record);
        }
        flow.len() < RECORDS_PER_TRACE
    })
    .await?;
    if let Some(correlation) = correlation.filter(|c| c != event_id) {
        flow.clear();
        scan(conn, |record| {
            if record.correlation_id == correlation {
                flow.push(record);
            }
            flow.len() < RECORDS_PER_TRACE
        })
        .await?;
    }
    // Records land in the order invocations *ended*; a function can publish and keep working,
    // so the event it caused may finish first. Ordering by start keeps cause before effect.
    flow.sort_by_key(Record::started_micros);
    Ok(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_logs_keeps_the_end_and_whole_characters() {
        let failed = crate::engine::Outcome::Failed;
        assert_eq!(logs_for(failed, "short"), "short");
        let long = format!("{}é{}", "a".repeat(10), "b".repeat(RECORD_LOG_BYTES - 1));
        let kept = logs_for(failed, &long);
        // The cut falls inside 'é' (two bytes), so it moves past it.
        assert_eq!(kept, "b".repeat(RECORD_LOG_BYTES - 1));
    }
}
