//! Dead letters: events that cannot succeed, kept with the reason instead of being dropped.
//!
//! A dead-letter entry starts with Eddy's `eddy.*` fields saying why, then a marker field
//! [`ORIGINAL_MARKER`] whose value counts the original entry's fields, then those fields,
//! unchanged. Eddy's fields come first and are authoritative: a producer that wrote its own
//! `eddy.function` or `eddy.group` into an entry finds them kept after the marker, as part of
//! the original, and never taken for Eddy's (which would list the letter under another
//! function, or replay it into another group). Dead letters written before the marker existed
//! (the original first, Eddy's fields appended) are still read: see
//! [`super::replay::StoredLetter`].
//!
//! Adding the dead letter and acknowledging the original happen in one Lua script, and only if
//! the acknowledgement removed a pending entry: a crash leaves the original pending or the dead
//! letter written, never neither and never both, and two hosts that both finished the same
//! entry write one dead letter between them.

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
}

impl Reason {
    /// The reason as written in the dead letter.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Failed => "failed",
            Reason::Malformed => "malformed",
            Reason::Abandoned => "abandoned",
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

/// KEYS: stream, dead-letter stream. ARGV: group, entry id, then field/value pairs.
/// Dead-letters only if this acknowledgement is the one that removes the pending entry.
static DEAD_LETTER_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
            return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
        end
        return false
        ",
    )
});

/// Adds to `pipe` dead-lettering a pending stream entry and acknowledging it in one step
/// (nothing happens if the entry was no longer pending: another host finished it).
pub fn push_dead_letter_pending(
    pipe: &mut redis::Pipeline,
    dead_letter_stream: &str,
    original: &[(String, Vec<u8>)],
    letter: &DeadLetter,
) {
    let mut invocation = DEAD_LETTER_PENDING.prepare_invoke();
    invocation
        .key(&letter.stream)
        .key(dead_letter_stream)
        .arg(&letter.group)
        .arg(&letter.entry_id);
    push_letter(&mut invocation, original, letter);
    pipe.invoke_script(&invocation).ignore();
}

/// Loads the script [`push_dead_letter_pending`] uses (see
/// [`super::retry_queue::load_scripts`]).
pub async fn load_script<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<()> {
    DEAD_LETTER_PENDING.load_async(conn).await.map(drop)
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
