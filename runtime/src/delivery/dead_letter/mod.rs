//! Dead letters: events that cannot succeed, kept with the reason instead of being dropped.
//!
//! A dead-letter entry starts with Eddy's `eddy.*` fields saying why, then a marker field
//! [`ORIGINAL_MARKER`] whose value counts the original entry's fields, then those fields,
//! unchanged. Eddy's fields come first and are authoritative: a producer that wrote its own
//! `eddy.function` or `eddy.group` into an entry finds them kept after the marker, as part of
//! the original, and never taken for Eddy's (which would list the letter under another
//! function, or replay it into another group). Dead letters written before the marker existed
//! (the original first, Eddy's fields appended) are still read: see
//! [`admin::StoredLetter`].
//!
//! A dead letter travels in two steps, because the dead-letter stream (`orders.dlq`) and the
//! stream it came from (`orders`) are two keys that a Redis Cluster puts in different slots,
//! and no script may touch both:
//!
//! 1. **Into the outbox.** One script, in the source stream's slot, acknowledges the original
//!    (or ends its retry lease) and adds the letter to the stream's outbox
//!    (`eddy:{orders}:dead-letters`, see [`outbox_key`]) only if that acknowledgement removed a
//!    pending entry. A crash leaves the original pending or the letter in the outbox, never
//!    neither and never both; two hosts that both finished the same entry write one letter.
//! 2. **Forwarded** ([`forward`]), by the host that wrote it right after, and by every host
//!    following the stream on its retry round (a host that died between the steps leaves its
//!    letters to them). For each outbox entry: a script in the dead-letter stream's slot adds
//!    the letter there unless its *forwarded marker* (`eddy:{orders.dlq}:forwarded:<letter>`)
//!    exists, and sets the marker; then the outbox entry is deleted. A forwarder that dies after
//!    adding but before deleting leaves a marker behind, so the next forwarder deletes the
//!    entry without adding it again: never lost, never doubled. The marker is not deleted with
//!    the entry but expires after [`FORWARDED_MARKER_TTL`], because another forwarder may have
//!    read the same entry just before it was deleted and still be about to add it.
//!
//! The outbox entry holds the target stream in `eddy.to`, the letter's own random id in
//! `eddy.letter` (which names its marker), then the letter's fields as they will be written. The same two steps run on a single server, so there is one protocol to
//! trust; they cost three more round trips per dead letter, which is the rare path.

pub mod admin;

use redis::Script;
use std::sync::LazyLock;

use crate::engine::{Captured, InvokeResult};

/// The field between Eddy's fields and the original entry's; its value is how many original
/// fields follow.
pub const ORIGINAL_MARKER: &str = "eddy.original";

/// Bytes of captured log lines kept in a dead letter: the end of the output, where the
/// failure usually is.
pub const LOG_TAIL_BYTES: usize = 4096;
/// Bytes of a rejecting function's response body kept as the error message.
const BODY_EXCERPT_BYTES: usize = 1024;

/// Why an event was dead-lettered (the `eddy.reason` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The function answered 4xx (not 408 or 429): the event itself is wrong.
    Rejected,
    /// Every attempt failed (5xx, trap, timeout, memory limit).
    Failed,
    /// The entry is not an event: no `data`, or `data` not valid for its content type.
    Malformed,
    /// Hosts stopped while handling it on every attempt (it may be killing them).
    Abandoned,
    /// Its data does not match its type's schema, on a trigger with `validate = true`.
    Invalid,
}

impl Reason {
    /// The reason as written in the dead letter.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Failed => "failed",
            Reason::Malformed => "malformed",
            Reason::Abandoned => "abandoned",
            Reason::Invalid => "invalid",
        }
    }
}

/// Everything a dead letter says about why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Why.
    pub reason: Reason,
    /// The function that could not handle it.
    pub function: String,
    /// The consumer group it was read through.
    pub group: String,
    /// The stream it came from.
    pub stream: String,
    /// Its entry id there.
    pub entry_id: String,
    /// The last status the function returned, if it returned.
    pub status: Option<u16>,
    /// The error: the failure, the rejection body, or what is malformed.
    pub error: String,
    /// The tail of the last attempt's captured output.
    pub logs: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the first attempt failed (milliseconds since the Unix epoch).
    pub first_failure_ms: i64,
    /// When the last attempt failed.
    pub last_failure_ms: i64,
}

impl DeadLetter {
    /// Eddy's `eddy.*` fields, written before the original entry's.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("eddy.reason", self.reason.as_str().to_owned()),
            ("eddy.function", self.function.clone()),
            ("eddy.group", self.group.clone()),
            ("eddy.stream", self.stream.clone()),
            ("eddy.entry_id", self.entry_id.clone()),
            ("eddy.attempts", self.attempts.to_string()),
            ("eddy.error", self.error.clone()),
            ("eddy.first_failure", rfc3339(self.first_failure_ms)),
            ("eddy.last_failure", rfc3339(self.last_failure_ms)),
        ];
        if let Some(status) = self.status {
            fields.push(("eddy.status", status.to_string()));
        }
        if !self.logs.is_empty() {
            fields.push(("eddy.logs", self.logs.clone()));
        }
        fields
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The error text of an invocation that did not succeed: the trap, timeout or limit, or for a
/// status the status and the start of the response body (where the function says why).
pub fn error_text(result: &InvokeResult) -> String {
    match (&result.failure, result.status) {
        (Some(failure), None) => failure.to_string(),
        (_, status) => {
            let body = result.body_text();
            let status = status.unwrap_or_default();
            if body.is_empty() {
                format!("function returned status {status}")
            } else {
                format!(
                    "function returned status {status}: {}",
                    truncate_start(&body, BODY_EXCERPT_BYTES)
                )
            }
        }
    }
}

/// The last [`LOG_TAIL_BYTES`] of an invocation's output: log lines, then stderr and stdout.
pub fn log_tail(output: &Captured) -> String {
    let mut text = String::new();
    for line in &output.logs {
        text.push_str(line.level.as_str());
        text.push_str(": ");
        text.push_str(&line.message);
        text.push('\n');
    }
    for (name, stream) in [("stderr", &output.stderr), ("stdout", &output.stdout)] {
        if !stream.is_empty() {
            text.push_str(name);
            text.push_str(": ");
            text.push_str(stream);
            if !stream.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    truncate_end(&text, LOG_TAIL_BYTES)
}

/// At most `max` bytes from the start of `text`, cut at a character boundary.
fn truncate_start(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// At most `max` bytes from the end of `text`, cut at a character boundary.
fn truncate_end(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// The field of an outbox entry naming the dead-letter stream it is for.
pub const OUTBOX_TARGET: &str = "eddy.to";
/// The field of an outbox entry holding its letter's own random id, which names its forwarded
/// marker: an entry id could come again after a failover lost the entry that had it.
pub const OUTBOX_LETTER: &str = "eddy.letter";
/// How long a forwarded marker outlives its letter's forwarding: far longer than a forwarder
/// takes between reading an outbox entry and adding it (bounded by the connection's timeouts,
/// seconds), and short enough that a storm of dead letters leaves few markers behind.
pub const FORWARDED_MARKER_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Outbox entries forwarded per round trip.
const FORWARD_PAGE: usize = 100;

/// The outbox of dead letters from `stream`, in its hash slot.
pub fn outbox_key(stream: &str) -> String {
    format!("eddy:{{{stream}}}:dead-letters")
}

/// The marker saying that the letter `letter` reached `dead_letter_stream`, in the dead-letter
/// stream's slot.
fn forwarded_marker(dead_letter_stream: &str, letter: &str) -> String {
    format!("eddy:{{{dead_letter_stream}}}:forwarded:{letter}")
}

/// A new letter id for [`OUTBOX_LETTER`].
pub(super) fn letter_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// KEYS: stream, its outbox. ARGV: group, entry id, dead-letter stream, letter id, then
/// field/value pairs. Writes the letter to the outbox only if this acknowledgement is the one
/// that removes the pending entry.
static DEAD_LETTER_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
            return redis.call('XADD', KEYS[2], '*', 'eddy.to', ARGV[3], 'eddy.letter', ARGV[4],
                unpack(ARGV, 5))
        end
        return false
        ",
    )
});

/// KEYS: dead-letter stream, forwarded marker. ARGV: marker ttl ms, then field/value pairs.
/// 1: added; 0: the marker says it was added before.
static FORWARD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[2]) == 1 then
            -- Still in the outbox: the marker must outlive it.
            redis.call('PEXPIRE', KEYS[2], ARGV[1])
            return 0
        end
        redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
        redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
        return 1
        ",
    )
});

/// Adds to `pipe` acknowledging a pending stream entry and putting its dead letter in the
/// stream's outbox in one step (nothing happens if the entry was no longer pending: another
/// host finished it). [`forward`] takes it on to `dead_letter_stream`.
pub fn push_dead_letter_pending(
    pipe: &mut redis::Pipeline,
    dead_letter_stream: &str,
    original: &[(String, Vec<u8>)],
    letter: &DeadLetter,
) {
    let mut invocation = DEAD_LETTER_PENDING.prepare_invoke();
    invocation
        .key(&letter.stream)
        .key(outbox_key(&letter.stream))
        .arg(&letter.group)
        .arg(&letter.entry_id)
        .arg(dead_letter_stream)
        .arg(letter_id());
    push_letter(&mut invocation, original, letter);
    pipe.invoke_script(&invocation).ignore();
}

/// Loads the script [`push_dead_letter_pending`] uses (see
/// [`crate::delivery::load_scripts`]).
pub async fn load_script<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<()> {
    DEAD_LETTER_PENDING.load_async(conn).await?;
    FORWARD.load_async(conn).await.map(drop)
}

/// What a forwarding round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Letters added to their dead-letter streams.
    pub added: usize,
    /// Letters that could not be forwarded and stay in the outbox (a dead-letter stream that
    /// is a key of another type, replicas that did not confirm): tried again next round.
    pub held: usize,
    /// Of those, entries no host wrote (another shape, or aimed at a reserved stream).
    pub refused: usize,
    /// The last error that held a letter, for the round's one log line.
    pub last_error: Option<String>,
}

/// Whether an outbox entry may be forwarded to `target`: a stream name a manifest can give as
/// a dead-letter stream (a user stream, or a cron trigger's `eddy:cron:<name>.dlq`), never
/// another reserved key such as `eddy:deployments`.
fn is_dead_letter_target(target: &str) -> bool {
    crate::names::stream(target).is_ok()
        || target
            .strip_prefix("eddy:cron:")
            .and_then(|rest| rest.strip_suffix(".dlq"))
            .is_some_and(|name| crate::names::identifier(name).is_ok())
}

/// Forwards every letter in `stream`'s outbox to its dead-letter stream (step 2 of the
/// module's protocol). Safe to run on any number of hosts at once. A letter that cannot be
/// forwarded stays in the outbox without holding up the ones after it; an error only ends the
/// round when Redis is away or full.
pub async fn forward<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    broker: &crate::broker::Broker,
    stream: &str,
) -> redis::RedisResult<Forwarded> {
    let outbox = outbox_key(stream);
    let mut done = Forwarded::default();
    let mut after = "-".to_owned();
    loop {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(&outbox)
            .arg(&after)
            .arg("+")
            .arg("COUNT")
            .arg(FORWARD_PAGE)
            .query_async(conn)
            .await?;
        let entries = crate::wire::entries_of(reply).map_err(redis::RedisError::from)?;
        let count = entries.len();
        for entry in entries {
            after = format!("({}", entry.id);
            let fields = entry.fields.unwrap_or_default();
            let (target, letter) = match fields.as_slice() {
                [(to_name, to), (letter_name, letter), ..]
                    if to_name == OUTBOX_TARGET
                        && letter_name == OUTBOX_LETTER
                        && is_dead_letter_target(&String::from_utf8_lossy(to)) =>
                {
                    (
                        String::from_utf8_lossy(to).into_owned(),
                        String::from_utf8_lossy(letter).into_owned(),
                    )
                }
                _ => {
                    // Only Eddy writes here (the key is reserved): an entry of another shape,
                    // or one aimed at a reserved stream (`eddy:deployments`), was not written
                    // by a host and is never forwarded; it stays for an operator to see.
                    done.held += 1;
                    done.refused += 1;
                    continue;
                }
            };
            match forward_one(conn, broker, &target, &letter, &fields[2..]).await {
                Ok(Some(fresh)) => {
                    done.added += fresh;
                    let _: i64 = redis::cmd("XDEL")
                        .arg(&outbox)
                        .arg(&entry.id)
                        .query_async(conn)
                        .await?;
                }
                Ok(None) => done.held += 1,
                Err(error) => match crate::broker::Trouble::of(&error) {
                    crate::broker::Trouble::Away | crate::broker::Trouble::Full => {
                        return Err(error);
                    }
                    crate::broker::Trouble::WrongType | crate::broker::Trouble::Other => {
                        // This letter's stream is unusable (another type under its name):
                        // the letters after it, to other streams, still go.
                        crate::broker::counted("dead_letter", &error);
                        tracing::debug!(%outbox, id = %entry.id, dead_letter_stream = %target, %error,
                            "a dead letter cannot be forwarded; it stays in the outbox");
                        done.held += 1;
                        done.last_error = Some(format!("{target}: {error}"));
                    }
                },
            }
        }
        if count < FORWARD_PAGE {
            return Ok(done);
        }
    }
}

/// Adds one letter to `target` unless its marker says it is there: `Some(1)` added, `Some(0)`
/// there before, `None` added but not confirmed by the replicas `--wait-replicas` asks for
/// (the outbox keeps it; the marker makes the next try a no-op). With replicas asked for, the
/// `WAIT` rides in the same pipeline, so it runs on the dead-letter stream's own node.
async fn forward_one<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    broker: &crate::broker::Broker,
    target: &str,
    letter: &str,
    fields: &[(String, Vec<u8>)],
) -> redis::RedisResult<Option<usize>> {
    let mut invocation = FORWARD.prepare_invoke();
    invocation
        .key(target)
        .key(forwarded_marker(target, letter))
        .arg(FORWARDED_MARKER_TTL.as_millis() as u64);
    for (name, value) in fields {
        invocation.arg(name).arg(value.as_slice());
    }
    let Some(replicas) = broker.replicas_to_wait_for_now() else {
        let fresh: i64 = invocation.invoke_async(conn).await?;
        return Ok(Some(fresh as usize));
    };
    let mut pipe = redis::pipe();
    pipe.invoke_script(&invocation);
    broker.push_wait_counted(&mut pipe);
    let sent: redis::RedisResult<(i64, u32)> = pipe.query_async(conn).await;
    let (fresh, acked) = match sent {
        Err(error) if crate::broker::is_noscript(&error) => {
            FORWARD.load_async(conn).await?;
            pipe.query_async(conn).await?
        }
        other => other?,
    };
    if acked < replicas {
        broker.replicas_missing(acked);
        return Ok(None);
    }
    Ok(Some(fresh as usize))
}

/// Original fields a dead letter keeps at most. A producer can write an entry with any number
/// of fields, but a Lua script cannot pass more than a few thousand values on to `XADD`; past
/// this the letter says how many were dropped (`eddy.dropped_fields`) rather than failing.
pub const MAX_LETTER_FIELDS: usize = 1000;

/// Appends a dead letter's field/value pairs to a script's arguments: Eddy's `eddy.*` fields,
/// the marker with the count of original fields, then the original's (at most
/// [`MAX_LETTER_FIELDS`]).
pub(super) fn push_letter(
    invocation: &mut redis::ScriptInvocation<'_>,
    original: &[(String, Vec<u8>)],
    letter: &DeadLetter,
) {
    for (name, value) in letter.fields() {
        invocation.arg(name).arg(value);
    }
    let kept = kept_fields(original);
    if kept.len() < original.len() {
        invocation
            .arg("eddy.dropped_fields")
            .arg(original.len() - kept.len());
    }
    invocation.arg(ORIGINAL_MARKER).arg(kept.len());
    for (name, value) in kept {
        invocation.arg(name).arg(value.as_slice());
    }
}

/// The original fields a dead letter keeps, in their order: all of them, or past
/// [`MAX_LETTER_FIELDS`] the event's own (`data` and the CloudEvents attributes) first, then
/// the others until the cap, so a replay still finds its payload.
fn kept_fields(original: &[(String, Vec<u8>)]) -> Vec<&(String, Vec<u8>)> {
    if original.len() <= MAX_LETTER_FIELDS {
        return original.iter().collect();
    }
    const OWN: [&str; 9] = [
        "data",
        "type",
        "id",
        "source",
        "specversion",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
    ];
    let own = |name: &str| OWN.contains(&name);
    let room = MAX_LETTER_FIELDS.saturating_sub(original.iter().filter(|(n, _)| own(n)).count());
    let mut others = 0;
    original
        .iter()
        .filter(|(name, _)| {
            own(name) || {
                others += 1;
                others <= room
            }
        })
        .take(MAX_LETTER_FIELDS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LogLevel, LogLine};

    #[test]
    fn only_dead_letter_streams_are_forwarding_targets() {
        for good in ["orders.dlq", "errors", "eddy:cron:report.dlq"] {
            assert!(is_dead_letter_target(good), "{good}");
        }
        for bad in [
            "eddy:deployments",
            "eddy:cron:report",
            "eddy:records",
            "a{b}",
            "",
        ] {
            assert!(!is_dead_letter_target(bad), "{bad}");
        }
    }

    #[test]
    fn the_log_tail_keeps_the_end() {
        let output = Captured {
            logs: (0..2000)
                .map(|i| LogLine {
                    level: LogLevel::Info,
                    message: format!("line {i}"),
                })
                .collect(),
            stderr: "boom\n".into(),
            ..Captured::default()
        };
        let tail = log_tail(&output);
        assert!(tail.len() <= LOG_TAIL_BYTES + '…'.len_utf8());
        assert!(tail.starts_with('…'));
        assert!(tail.ends_with("info: line 1999\nstderr: boom\n"), "{tail}");
        assert_eq!(truncate_end("héllo", 4), "…llo");
        assert_eq!(truncate_start("héllo", 2), "h");
    }

    #[test]
    fn a_letter_of_too_many_fields_keeps_the_event_itself() {
        let mut original: Vec<(String, Vec<u8>)> = (0..4000)
            .map(|i| (format!("f{i}"), b"x".to_vec()))
            .collect();
        original.push(("data".into(), b"{}".to_vec()));
        let kept = kept_fields(&original);
        assert_eq!(kept.len(), MAX_LETTER_FIELDS);
        assert_eq!(kept.last().unwrap().0, "data");
        assert_eq!(kept[0].0, "f0");
        assert_eq!(kept_fields(&original[..10]).len(), 10);
    }

    #[test]
    fn fields_say_why() {
        let letter = DeadLetter {
            reason: Reason::Rejected,
            function: "f".into(),
            group: "g".into(),
            stream: "s".into(),
            entry_id: "1-0".into(),
            status: Some(400),
            error: "bad".into(),
            logs: String::new(),
            attempts: 1,
            first_failure_ms: 0,
            last_failure_ms: 1000,
        };
        let fields = letter.fields();
        assert!(fields.contains(&("eddy.reason", "rejected".into())));
        assert!(fields.contains(&("eddy.status", "400".into())));
        assert!(fields.contains(&("eddy.last_failure", "1970-01-01T00:00:01.000Z".into())));
        assert!(!fields.iter().any(|(name, _)| *name == "eddy.logs"));
    }
}
