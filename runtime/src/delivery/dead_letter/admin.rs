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

use super::ORIGINAL_MARKER;
use crate::delivery::{RetryKeys, RetryRecord};

/// The set of dead-letter streams in use.
pub const DEAD_LETTER_STREAMS_KEY: &str = "eddy:dead-letter-streams";
/// The extension a replayed event carries: the id of the dead letter it came from.
pub const REPLAYED_FROM: &str = "replayedfrom";

/// One field of a stream entry: its name and value.
pub type Field = (String, Vec<u8>);

/// A dead letter as read back.
#[derive(Debug, Clone)]
pub struct StoredLetter {
    /// The dead-letter stream.
    pub stream: String,
    /// Its entry id there.
    pub id: String,
    /// All fields, as stored (see [`super`] for the layout).
    pub fields: Vec<Field>,
}

impl StoredLetter {
    /// Splits the fields into Eddy's and the original entry's. The current layout puts Eddy's
    /// first, up to [`ORIGINAL_MARKER`]; a letter from before it has the original first and
    /// Eddy's appended, so Eddy's are its trailing run of `eddy.*` fields.
    fn parts(&self) -> (&[Field], &[Field]) {
        let leading = self
            .fields
            .iter()
            .take_while(|(n, _)| n.starts_with("eddy."))
            .position(|(n, _)| n == ORIGINAL_MARKER);
        if let Some(marker) = leading {
            return (&self.fields[..marker], &self.fields[marker + 1..]);
        }
        let trailing = self
            .fields
            .iter()
            .rev()
            .take_while(|(n, _)| n.starts_with("eddy."))
            .count();
        let split = self.fields.len() - trailing;
        (&self.fields[split..], &self.fields[..split])
    }

    /// Eddy's field `name` (e.g. `eddy.function`) as text; never one the producer wrote.
    pub fn get(&self, name: &str) -> Option<String> {
        self.parts()
            .0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Eddy's fields.
    pub fn eddy_fields(&self) -> &[Field] {
        self.parts().0
    }

    /// The original entry's fields, exactly as the producer wrote them.
    pub fn original(&self) -> Vec<Field> {
        self.parts().1.to_vec()
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
        let reply: redis::RedisResult<redis::Value> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            // A dead-letter stream someone overwrote with another type holds no letters (they
            // wait in the outbox): the other streams' are still listed.
            Err(error)
                if crate::broker::Trouble::of(&error) == crate::broker::Trouble::WrongType =>
            {
                tracing::warn!(%stream, "a dead-letter stream's name holds another type of key");
                continue;
            }
            Err(error) => return Err(error),
        };
        let entries = crate::wire::entries_of(reply).map_err(redis::RedisError::from)?;
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

/// KEYS: due, data, attempts, lease, replayed set. ARGV: letter reference, original entry id,
/// now ms, record, forget-before ms. Schedules the original again unless this letter was
/// replayed before (1 scheduled, 0 not).
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[5])
        if redis.call('ZSCORE', KEYS[5], ARGV[1]) then return 0 end
        redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
        redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
        redis.call('HSET', KEYS[3], ARGV[2], 0)
        redis.call('HDEL', KEYS[4], ARGV[2])
        redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
        return 1
        ",
    )
});

/// How long a replayed letter is remembered: a replay that stopped between scheduling the
/// event and deleting its letter is finished by running it again within this time.
pub const REPLAYED_MEMORY: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The sorted set of letters replayed into `group`'s schedule for `stream`, in the stream's
/// slot: `<dead-letter stream>/<letter id>` scored by when.
pub fn replayed_key(stream: &str, group: &str) -> String {
    format!("eddy:{{{stream}}}:{group}:replayed")
}

/// Replays one dead letter; false if another replay got there first. A letter purged while
/// this replay scheduled it is still replayed (true): the operator asked for both at once.
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
    // Two steps, because the letter and the schedule live in different cluster slots: schedule
    // the event unless this letter was replayed already (remembered in the schedule's slot),
    // then delete the letter. A replay stopped in between is finished by running it again: the
    // event is not scheduled twice, and the letter goes.
    let keys = RetryKeys::new(&stream, &group);
    let mut invocation = REPLAY.prepare_invoke();
    keys.add_keys(&mut invocation);
    invocation
        .key(replayed_key(&stream, &group))
        .arg(format!("{}/{}", letter.stream, letter.id))
        .arg(&entry_id)
        .arg(now)
        .arg(record.encode())
        .arg(now - REPLAYED_MEMORY.as_millis() as i64);
    let scheduled: i64 = invocation.invoke_async(conn).await?;
    let deleted = purge(conn, letter).await?;
    Ok(scheduled == 1 || deleted)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(fields: &[(&str, &str)]) -> StoredLetter {
        StoredLetter {
            stream: "orders.dlq".into(),
            id: "1-0".into(),
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn eddy_fields_come_first_and_a_producers_own_are_part_of_the_original() {
        let stored = letter(&[
            ("eddy.reason", "rejected"),
            ("eddy.function", "strict"),
            (ORIGINAL_MARKER, "3"),
            ("data", "{}"),
            ("eddy.function", "victim"),
            (ORIGINAL_MARKER, "forged"),
        ]);
        assert_eq!(stored.get("eddy.function").as_deref(), Some("strict"));
        assert_eq!(stored.eddy_fields().len(), 2);
        let original = stored.original();
        assert_eq!(original.len(), 3);
        assert_eq!(original[1].0, "eddy.function");
    }

    #[test]
    fn letters_from_before_the_marker_are_read_from_their_end() {
        let stored = letter(&[
            ("type", "T"),
            ("data", "{}"),
            ("eddy.reason", "failed"),
            ("eddy.function", "f"),
        ]);
        assert_eq!(stored.get("eddy.reason").as_deref(), Some("failed"));
        assert_eq!(stored.original().len(), 2);
    }
}
