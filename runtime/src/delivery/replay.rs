//! Dead-letter operations: list, show, replay, purge.
//!
//! Every stream trigger records its dead-letter stream in the `eddy:dead-letter-streams` set,
//! so the operations find every dead letter without scanning keys.
//!
//! **Replay** puts a dead letter back into the *retry schedule of the group that failed it*,
//! due now, with its attempt count reset and a `replayedfrom` extension naming the dead letter:
//! only the function that failed runs it again. (Adding it to the source stream instead would
//! deliver it to every other group of that stream a second time.) Removing the dead letter and
//! scheduling it are one Lua script that runs only if the `XDEL` removed the entry, so a replay
//! interrupted and run again never schedules an event twice.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionLike;

use super::{RetryKeys, RetryRecord};

/// The set of dead-letter streams in use.
pub const DEAD_LETTER_STREAMS_KEY: &str = "eddy:dead-letter-streams";
/// The extension a replayed event carries: the id of the dead letter it came from.
pub const REPLAYED_FROM: &str = "replayedfrom";

/// A dead letter as read back.
#[derive(Debug, Clone)]
pub struct StoredLetter {
    /// The dead-letter stream.
    pub stream: String,
    /// Its entry id there.
    pub id: String,
    /// All fields: the original ones, then the `eddy.*` ones.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StoredLetter {
    /// Field `name` as text.
    pub fn get(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The original entry's fields, without the `eddy.*` ones.
    pub fn original(&self) -> Vec<(String, Vec<u8>)> {
        self.fields
            .iter()
            .filter(|(n, _)| !n.starts_with("eddy."))
            .cloned()
            .collect()
    }
}

/// Remembers `stream` as a dead-letter stream.
pub async fn register<C: ConnectionLike>(conn: &mut C, stream: &str) -> redis::RedisResult<()> {
    redis::cmd("SADD")
        .arg(DEAD_LETTER_STREAMS_KEY)
        .arg(stream)
        .query_async(conn)
        .await
}

/// Every dead letter of `function` (or of every function), oldest first per stream.
pub async fn letters<C: ConnectionLike>(
    conn: &mut C,
    function: Option<&str>,
) -> redis::RedisResult<Vec<StoredLetter>> {
    let mut streams: Vec<String> = redis::cmd("SMEMBERS")
        .arg(DEAD_LETTER_STREAMS_KEY)
        .query_async(conn)
        .await?;
    streams.sort();
    let mut out = Vec::new();
    for stream in streams {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await?;
        let entries = crate::triggers::streams::wire::entries_of(reply)
            .map_err(|e| redis::RedisError::from((redis::ErrorKind::Parse, "XRANGE reply", e)))?;
        for entry in entries {
            let letter = StoredLetter {
                stream: stream.clone(),
                id: entry.id,
                fields: entry.fields.unwrap_or_default(),
            };
            if function.is_none_or(|f| letter.get("eddy.function").as_deref() == Some(f)) {
                out.push(letter);
            }
        }
    }
    Ok(out)
}

/// KEYS: dead-letter stream, due, data, attempts, lease. ARGV: dead letter id, original entry
/// id, now ms, record.
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
        redis.call('HSET', KEYS[4], ARGV[2], 0)
        redis.call('HDEL', KEYS[5], ARGV[2])
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
        return 1
        ",
    )
});

/// Replays one dead letter; false if it was already gone (replayed or purged meanwhile).
pub async fn replay<C: ConnectionLike>(
    conn: &mut C,
    letter: &StoredLetter,
) -> redis::RedisResult<bool> {
    let (Some(stream), Some(group), Some(entry_id)) = (
        letter.get("eddy.stream"),
        letter.get("eddy.group"),
        letter.get("eddy.entry_id"),
    ) else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "dead letter lacks eddy.stream, eddy.group or eddy.entry_id",
        )));
    };
    let mut fields = letter.original();
    fields.retain(|(n, _)| n != REPLAYED_FROM);
    fields.push((REPLAYED_FROM.to_owned(), letter.id.clone().into_bytes()));
    let now = chrono::Utc::now().timestamp_millis();
    let record = RetryRecord {
        fields,
        first_failure_ms: now,
        last_failure_ms: now,
        last_status: None,
        last_error: String::new(),
        log_tail: String::new(),
    };
    let keys = RetryKeys::new(&stream, &group);
    let mut invocation = REPLAY.prepare_invoke();
    invocation.key(&letter.stream);
    keys.add_keys(&mut invocation);
    invocation
        .arg(&letter.id)
        .arg(&entry_id)
        .arg(now)
        .arg(record.encode());
    let replayed: i64 = invocation.invoke_async(conn).await?;
    Ok(replayed == 1)
}

/// Deletes one dead letter; false if it was already gone.
pub async fn purge<C: ConnectionLike>(
    conn: &mut C,
    letter: &StoredLetter,
) -> redis::RedisResult<bool> {
    let removed: i64 = redis::cmd("XDEL")
        .arg(&letter.stream)
        .arg(&letter.id)
        .query_async(conn)
        .await?;
    Ok(removed == 1)
}
