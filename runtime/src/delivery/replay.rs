//! Re-running a function over a range of its stream's history (`eddy replay`), e.g. to rebuild
//! a projection after fixing it.
//!
//! The entries are scheduled into the *retry schedule of the function's group*, due at once
//! with their attempt count reset, exactly as a replayed dead letter is: the hosts already
//! running that group take them with a lease, and the usual retry and dead-letter rules apply.
//! Only that function sees them again (adding them to the stream would deliver them to every
//! other group too), and the group's position in the stream does not move. Each entry carries
//! a `replayedfrom` extension (`history`) so a function can tell a re-run from a first run.
//!
//! An entry already waiting in the schedule (a retry in progress, or an earlier replay not yet
//! run) is left as it is rather than scheduled twice. The range ends at the group's position
//! ([`cap_end`]): entries the group has not read yet will reach it anyway, and the end is fixed
//! before paging, so a busy stream cannot keep a replay running.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionLike;

use super::dead_letter::admin::REPLAYED_FROM;
use super::{RetryKeys, RetryRecord};
use crate::wire::{self, Entry};

/// Entries read and scheduled per round trip.
pub const PAGE: usize = 500;
/// The `replayedfrom` value of a re-run from history.
pub const FROM_HISTORY: &str = "history";

/// KEYS: due, data, attempts, lease. ARGV: now ms, then entry id and record pairs.
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local scheduled = 0
        for i = 2, #ARGV, 2 do
            local id = ARGV[i]
            if not redis.call('ZSCORE', KEYS[1], id) then
                redis.call('HSET', KEYS[2], id, ARGV[i + 1])
                redis.call('HSET', KEYS[3], id, 0)
                redis.call('HDEL', KEYS[4], id)
                redis.call('ZADD', KEYS[1], ARGV[1], id)
                scheduled = scheduled + 1
            end
        end
        return scheduled
        ",
    )
});

/// One page of a stream's history: up to [`PAGE`] entries from `start` (inclusive, or
/// exclusive with a `(` prefix) to `end`.
pub async fn page<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    start: &str,
    end: &str,
) -> redis::RedisResult<Vec<Entry>> {
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(PAGE)
        .query_async(conn)
        .await?;
    wire::entries_of(reply).map_err(redis::RedisError::from)
}

/// Schedules `entries` of `stream` for `group` again, due now; returns how many were scheduled
/// (the rest were already waiting in the schedule).
pub async fn schedule<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
    entries: &[Entry],
) -> redis::RedisResult<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let keys = RetryKeys::new(stream, group);
    let mut invocation = SCHEDULE.prepare_invoke();
    keys.add_keys(&mut invocation);
    invocation.arg(now);
    for entry in entries {
        let mut fields = entry.fields.clone().unwrap_or_default();
        fields.retain(|(n, _)| n != REPLAYED_FROM);
        fields.push((REPLAYED_FROM.to_owned(), FROM_HISTORY.as_bytes().to_vec()));
        let record = RetryRecord {
            fields,
            first_failure_ms: now,
            last_failure_ms: now,
            ..RetryRecord::default()
        };
        invocation.arg(&entry.id).arg(record.encode());
    }
    let scheduled: usize = invocation.invoke_async(conn).await?;
    Ok(scheduled)
}

/// A stream position for `XRANGE` from what a person typed: an entry id (`1700000000000-0`,
/// or its millisecond part), an RFC 3339 time, a duration meaning that long ago (`2h`), or
/// `-`/`+` for the start or end of the stream. `now_ms` anchors durations.
pub fn position(input: &str, now_ms: i64) -> Result<String, String> {
    let input = input.trim();
    if input == "-" || input == "+" {
        return Ok(input.to_owned());
    }
    let is_id = |s: &str| {
        let mut parts = s.splitn(2, '-');
        let ms = parts.next().unwrap_or_default();
        let seq = parts.next();
        !ms.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.is_none_or(|q| !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()))
    };
    if is_id(input) {
        return Ok(input.to_owned());
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(input) {
        return Ok(time.timestamp_millis().max(0).to_string());
    }
    if let Ok(ago) = humantime::parse_duration(input) {
        return Ok((now_ms - ago.as_millis() as i64).max(0).to_string());
    }
    Err(format!(
        "{input:?}: expected an entry id (1700000000000-0), an RFC 3339 time \
         (2026-11-24T08:00:00Z), a duration meaning that long ago (2h), or - / +"
    ))
}

/// An `XRANGE` bound as a comparable `(ms, seq)`: `ms` alone as an end means its last entry.
fn bound(position: &str) -> Option<(u64, u64)> {
    match position {
        "-" => Some((0, 0)),
        "+" => Some((u64::MAX, u64::MAX)),
        _ => {
            let (ms, seq) = position.split_once('-').unwrap_or((position, ""));
            let ms = ms.parse().ok()?;
            let seq = if seq.is_empty() {
                u64::MAX
            } else {
                seq.parse().ok()?
            };
            Some((ms, seq))
        }
    }
}

/// The end of a replay: `to`, or the group's last-delivered id if that comes first.
pub fn cap_end(to: &str, last_delivered: &str) -> String {
    match (bound(to), bound(last_delivered)) {
        (Some(end), Some(delivered)) if delivered < end => last_delivered.to_owned(),
        _ => to.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_ends_at_the_group_position() {
        assert_eq!(cap_end("+", "1700000000000-3"), "1700000000000-3");
        assert_eq!(
            cap_end("1700000000000", "1700000000000-3"),
            "1700000000000-3"
        );
        assert_eq!(cap_end("1600000000000", "1700000000000-3"), "1600000000000");
        assert_eq!(
            cap_end("1700000000000-2", "1700000000000-3"),
            "1700000000000-2"
        );
        assert_eq!(cap_end("+", "0-0"), "0-0");
    }

    #[test]
    fn positions_from_ids_times_and_durations() {
        let now = 1_800_000_000_000;
        assert_eq!(position("1700000000000-5", now).unwrap(), "1700000000000-5");
        assert_eq!(position("1700000000000", now).unwrap(), "1700000000000");
        assert_eq!(position("-", now).unwrap(), "-");
        assert_eq!(
            position("2023-11-14T22:13:20Z", now).unwrap(),
            "1700000000000"
        );
        assert_eq!(position("1h", now).unwrap(), "1799996400000");
        for bad in ["yesterday", "17-", "-5", "1h ago"] {
            let error = position(bad, now).unwrap_err();
            assert!(error.contains("expected an entry id"), "{bad}: {error}");
        }
    }
}
