//! The durable retry schedule: events waiting for their next attempt live in Redis, not in a
//! host's memory, so a retry happens even if the host that scheduled it dies during the backoff.
//!
//! Per stream trigger (stream + group) there are four keys, all hash-tagged with the stream
//! name so they share its Redis Cluster slot:
//! - `due`: a sorted set of entry ids scored by when each is due (ms since the Unix epoch);
//! - `data`: entry id → the original fields and the failure so far ([`RetryRecord`]);
//! - `attempts`: entry id → attempts started so far;
//! - `lease`: entry id → the token of the host running it now.
//!
//! Moving an event into the schedule acknowledges the stream entry in the same script, and
//! only if that acknowledgement removed it from the pending list. Taking due events is a
//! *lease*: the script pushes the score forward by the lease time and counts the attempt, so if
//! the leasing host dies the event becomes due again and another host takes it, the attempt
//! already counted. Every later step (finish, reschedule, dead-letter) checks the lease token,
//! so only the current holder can settle it.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionLike;

use super::DeadLetter;

/// The Redis keys of one stream trigger's retry schedule.
#[derive(Debug, Clone)]
pub struct RetryKeys {
    due: String,
    data: String,
    attempts: String,
    lease: String,
}

/// An event taken from the schedule for its next attempt.
#[derive(Debug, Clone)]
pub struct LeasedRetry {
    /// The original stream entry id.
    pub entry_id: String,
    /// The attempt this is (already counted).
    pub attempt: u32,
    /// The original fields and the failure so far.
    pub record: RetryRecord,
    /// Proof of the lease, needed to settle it.
    pub token: String,
}

/// What the schedule keeps of an event: its fields and its failure history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryRecord {
    /// The original entry's fields, in order.
    pub fields: Vec<(String, Vec<u8>)>,
    /// When the first attempt failed (ms since the Unix epoch).
    pub first_failure_ms: i64,
    /// When the last attempt failed.
    pub last_failure_ms: i64,
    /// The last status returned, if any.
    pub last_status: Option<u16>,
    /// The last error.
    pub last_error: String,
    /// The last attempt's log tail.
    pub log_tail: String,
}

const RECORD_VERSION: u8 = 1;

impl RetryRecord {
    /// Encodes the record as length-prefixed binary: fields may hold any bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        out.extend_from_slice(&self.first_failure_ms.to_le_bytes());
        out.extend_from_slice(&self.last_failure_ms.to_le_bytes());
        out.extend_from_slice(&self.last_status.unwrap_or(0).to_le_bytes());
        put(&mut out, self.last_error.as_bytes());
        put(&mut out, self.log_tail.as_bytes());
        out.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        for (name, value) in &self.fields {
            put(&mut out, name.as_bytes());
            put(&mut out, value);
        }
        out
    }

    /// When the event first failed, or `now_ms` if it has not yet (an event parked behind its
    /// ordering key enters the schedule before any attempt).
    pub fn first_failure_or(&self, now_ms: i64) -> i64 {
        if self.first_failure_ms == 0 {
            now_ms
        } else {
            self.first_failure_ms
        }
    }

    /// Decodes what [`encode`](Self::encode) wrote; `None` if the bytes are not such a record.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(1)?[0] != RECORD_VERSION {
            return None;
        }
        let first_failure_ms = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let last_failure_ms = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let last_error = String::from_utf8(r.chunk()?.to_vec()).ok()?;
        let log_tail = String::from_utf8(r.chunk()?.to_vec()).ok()?;
        let count = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let mut fields = Vec::new();
        for _ in 0..count {
            let name = String::from_utf8(r.chunk()?.to_vec()).ok()?;
            fields.push((name, r.chunk()?.to_vec()));
        }
        r.0.is_empty().then_some(Self {
            fields,
            first_failure_ms,
            last_failure_ms,
            last_status: (status != 0).then_some(status),
            last_error,
            log_tail,
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn chunk(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len)
    }
}

/// KEYS: stream, due, data, attempts, lease. ARGV: group, id, due ms, record, attempts.
static SCHEDULE_FIRST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
        redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
        redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
        redis.call('HDEL', KEYS[5], ARGV[2])
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
        return 1
        ",
    )
});

/// KEYS: due, data, attempts, lease. ARGV: id, token, due ms, record.
static RESCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
        redis.call('HDEL', KEYS[4], ARGV[1])
        redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
        return 1
        ",
    )
});

/// KEYS: due, data, attempts, lease. ARGV: now ms, lease-until ms, max count, token.
/// Returns a flat list of id, attempt, record triples.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
        local out = {}
        for _, id in ipairs(ids) do
            local record = redis.call('HGET', KEYS[2], id)
            if record then
                redis.call('ZADD', KEYS[1], ARGV[2], id)
                redis.call('HSET', KEYS[4], id, ARGV[4])
                local attempt = redis.call('HINCRBY', KEYS[3], id, 1)
                table.insert(out, id)
                table.insert(out, attempt)
                table.insert(out, record)
            else
                redis.call('ZREM', KEYS[1], id)
                redis.call('HDEL', KEYS[3], id)
                redis.call('HDEL', KEYS[4], id)
            end
        end
        return out
        ",
    )
});

/// KEYS: due, data, attempts, lease. ARGV: id, token, until ms.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
        return 1
        ",
    )
});

/// KEYS: due, data, attempts, lease. ARGV: id, token.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
        redis.call('ZREM', KEYS[1], ARGV[1])
        redis.call('HDEL', KEYS[2], ARGV[1])
        redis.call('HDEL', KEYS[3], ARGV[1])
        redis.call('HDEL', KEYS[4], ARGV[1])
        return 1
        ",
    )
});

/// KEYS: due, data, attempts, lease, the stream's dead-letter outbox. ARGV: id, token,
/// dead-letter stream, letter id, field/value pairs.
static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return false end
        local dead = redis.call('XADD', KEYS[5], '*', 'eddy.to', ARGV[3], 'eddy.letter', ARGV[4],
            unpack(ARGV, 5))
        redis.call('ZREM', KEYS[1], ARGV[1])
        redis.call('HDEL', KEYS[2], ARGV[1])
        redis.call('HDEL', KEYS[3], ARGV[1])
        redis.call('HDEL', KEYS[4], ARGV[1])
        return dead
        ",
    )
});

impl RetryKeys {
    /// The keys of the schedule for `stream` read through `group`.
    pub fn new(stream: &str, group: &str) -> Self {
        let base = format!("eddy:{{{stream}}}:{group}:retry");
        Self {
            due: format!("{base}:due"),
            data: format!("{base}:data"),
            attempts: format!("{base}:attempts"),
            lease: format!("{base}:lease"),
        }
    }

    pub(super) fn add_keys(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation
            .key(&self.due)
            .key(&self.data)
            .key(&self.attempts)
            .key(&self.lease);
    }

    /// Adds the due set, the record hash and the lease hash to `invocation` (the ordering
    /// scripts park events in the record hash, make them due, and check a lease before a
    /// release; see `triggers::streams::order`).
    pub fn add_for_ordering(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation.key(&self.due).key(&self.data).key(&self.lease);
    }

    /// Adds to `pipe` the move of a pending stream entry whose attempt `attempts` failed into
    /// the schedule, due at `due_ms`, acknowledging it in the same step (nothing happens if it
    /// is no longer pending: another host settled it).
    #[allow(clippy::too_many_arguments)]
    pub fn push_schedule_first(
        &self,
        pipe: &mut redis::Pipeline,
        stream: &str,
        group: &str,
        entry_id: &str,
        due_ms: i64,
        attempts: u32,
        record: &RetryRecord,
    ) {
        let mut invocation = SCHEDULE_FIRST.prepare_invoke();
        invocation
            .key(stream)
            .key(&self.due)
            .key(&self.data)
            .key(&self.attempts)
            .key(&self.lease)
            .arg(group)
            .arg(entry_id)
            .arg(due_ms)
            .arg(record.encode())
            .arg(attempts);
        pipe.invoke_script(&invocation).ignore();
    }

    /// Adds to `pipe` putting a leased event back in the schedule for another attempt (nothing
    /// happens if the lease was lost: it expired and another host holds it now).
    pub fn push_reschedule(
        &self,
        pipe: &mut redis::Pipeline,
        leased: &LeasedRetry,
        due_ms: i64,
        record: &RetryRecord,
    ) {
        let mut invocation = RESCHEDULE.prepare_invoke();
        self.add_keys(&mut invocation);
        invocation
            .arg(&leased.entry_id)
            .arg(&leased.token)
            .arg(due_ms)
            .arg(record.encode());
        pipe.invoke_script(&invocation).ignore();
    }

    /// Leases up to `max` events due by `now_ms` until `until_ms`, counting an attempt each.
    pub async fn lease<C: ConnectionLike>(
        &self,
        conn: &mut C,
        now_ms: i64,
        until_ms: i64,
        max: usize,
        token: &str,
    ) -> redis::RedisResult<Vec<LeasedRetry>> {
        let mut invocation = LEASE.prepare_invoke();
        self.add_keys(&mut invocation);
        invocation.arg(now_ms).arg(until_ms).arg(max).arg(token);
        let flat: Vec<redis::Value> = invocation.invoke_async(conn).await?;
        let mut leased = Vec::new();
        for triple in flat.chunks_exact(3) {
            let entry_id: String = redis::from_redis_value_ref(&triple[0])?;
            let attempt: u32 = redis::from_redis_value_ref(&triple[1])?;
            let bytes: Vec<u8> = redis::from_redis_value_ref(&triple[2])?;
            let record = RetryRecord::decode(&bytes).unwrap_or_else(|| {
                tracing::error!(%entry_id, "unreadable retry record; retrying with no fields");
                RetryRecord::default()
            });
            leased.push(LeasedRetry {
                entry_id,
                attempt,
                record,
                token: token.to_owned(),
            });
        }
        Ok(leased)
    }

    /// When the earliest event in the schedule is due (ms since the Unix epoch), if any.
    pub async fn next_due<C: ConnectionLike>(
        &self,
        conn: &mut C,
    ) -> redis::RedisResult<Option<i64>> {
        let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.due)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        Ok(first.first().map(|(_, score)| *score as i64))
    }

    /// Adds to `pipe` extending the lease of an event this host holds until `until_ms`; its
    /// reply is 1, or 0 if the lease was lost.
    pub fn push_extend_lease(
        &self,
        pipe: &mut redis::Pipeline,
        leased: &LeasedRetry,
        until_ms: i64,
    ) {
        let mut invocation = EXTEND.prepare_invoke();
        self.add_keys(&mut invocation);
        invocation
            .arg(&leased.entry_id)
            .arg(&leased.token)
            .arg(until_ms);
        pipe.invoke_script(&invocation);
    }

    /// Adds to `pipe` removing a leased event that succeeded (nothing happens if the lease was
    /// lost).
    pub fn push_finish(&self, pipe: &mut redis::Pipeline, leased: &LeasedRetry) {
        let mut invocation = FINISH.prepare_invoke();
        self.add_keys(&mut invocation);
        invocation.arg(&leased.entry_id).arg(&leased.token);
        pipe.invoke_script(&invocation).ignore();
    }

    /// Adds to `pipe` moving a leased event to the stream's dead-letter outbox, on its way to
    /// `dead_letter_stream` (nothing happens if the lease was lost; see
    /// [`super::dead_letter`] for the two steps).
    pub fn push_dead_letter(
        &self,
        pipe: &mut redis::Pipeline,
        dead_letter_stream: &str,
        leased: &LeasedRetry,
        letter: &DeadLetter,
    ) {
        let mut invocation = DEAD_LETTER.prepare_invoke();
        self.add_keys(&mut invocation);
        invocation
            .key(super::dead_letter::outbox_key(&letter.stream))
            .arg(&leased.entry_id)
            .arg(&leased.token)
            .arg(dead_letter_stream)
            .arg(super::dead_letter::letter_id());
        super::dead_letter::push_letter(&mut invocation, &leased.record.fields, letter);
        pipe.invoke_script(&invocation).ignore();
    }
}

/// Loads every script the schedule uses, after Redis answered `NOSCRIPT` to a pipeline (it
/// restarted, or its script cache was flushed): a pipeline sends script hashes only.
pub async fn load_scripts<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<()> {
    for script in [
        &*SCHEDULE_FIRST,
        &*RESCHEDULE,
        &*LEASE,
        &*EXTEND,
        &*FINISH,
        &*DEAD_LETTER,
    ] {
        script.load_async(conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = RetryRecord {
            fields: vec![
                ("type".into(), b"T".to_vec()),
                ("data".into(), vec![0, 255, 10]),
            ],
            first_failure_ms: 1,
            last_failure_ms: -2,
            last_status: Some(503),
            last_error: "boom".into(),
            log_tail: "é".into(),
        };
        let bytes = record.encode();
        assert_eq!(RetryRecord::decode(&bytes), Some(record));
        assert_eq!(RetryRecord::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(RetryRecord::decode(b"junk"), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(RetryRecord::decode(&longer), None);
    }

    #[test]
    fn keys_share_the_stream_slot() {
        let keys = RetryKeys::new("orders", "billing");
        assert_eq!(keys.due, "eddy:{orders}:billing:retry:due");
        assert_eq!(keys.lease, "eddy:{orders}:billing:retry:lease");
    }
}

/// Property tests of the stored retry record: any bytes decode to a record or `None`, and what
/// is encoded decodes to the same record.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_record_or_none(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(record) = RetryRecord::decode(&bytes) {
                prop_assert_eq!(RetryRecord::decode(&record.encode()), Some(record));
            }
        }

        #[test]
        fn records_round_trip(
            fields in proptest::collection::vec((".{0,12}", proptest::collection::vec(any::<u8>(), 0..32)), 0..8),
            first in any::<i64>(), last in any::<i64>(), status in proptest::option::of(1u16..),
            error in ".{0,40}", logs in ".{0,40}",
        ) {
            let record = RetryRecord {
                fields,
                first_failure_ms: first,
                last_failure_ms: last,
                last_status: status,
                last_error: error,
                log_tail: logs,
            };
            prop_assert_eq!(RetryRecord::decode(&record.encode()), Some(record));
        }
    }
}
