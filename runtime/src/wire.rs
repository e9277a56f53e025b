//! The event wire format: how an event sits in a Redis stream entry.
//!
//! Fields are named after CloudEvents attributes: `type`, `source`, `id`, `subject`, `time`,
//! `datacontenttype` and `data`. Every other field is an extension. Only `data` is required:
//! `id` defaults to the entry id, `source` to `redis://<stream>`, `type` to [`DEFAULT_TYPE`],
//! `datacontenttype` to `application/json`. So any Redis client can produce an event:
//!
//! ```text
//! XADD orders * type OrderPlaced data '{"orderId":"o-1","userId":"u-1"}'
//! ```
//!
//! An entry is *malformed* when it has no `data`, when `data` does not parse as JSON while the
//! content type is JSON, or when a field name or attribute is not UTF-8 text.

use redis::Value;

use crate::engine::PublishRequest;
use crate::event::{DEFAULT_CONTENT_TYPE, Delivery, Event, TriggerKind, is_json_content_type};

/// The type given to an entry with no `type` field.
pub const DEFAULT_TYPE: &str = "eddy.unknown";
/// The extension carrying the id of the event that caused a published one.
pub const CAUSATION_EXTENSION: &str = "causationid";

/// Why stream entries could not be read: kept typed until shown, so a caller can tell a
/// missing consumer group (recreate it) from a Redis that is away (wait and retry).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The command failed in Redis or on the way there.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// Redis answered something that is not a list of entries.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

impl From<ReadError> for redis::RedisError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Redis(e) => e,
            ReadError::Reply(what) => {
                (redis::ErrorKind::Parse, "unexpected stream reply", what).into()
            }
        }
    }
}

impl ReadError {
    /// Whether the stream or its consumer group does not exist (Redis's `NOGROUP`): the
    /// group was deleted, or the stream with it, and must be created again.
    pub fn is_missing_group(&self) -> bool {
        matches!(self, ReadError::Redis(e) if e.code() == Some("NOGROUP"))
    }
}

/// One stream entry as read: its id and its fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry id, e.g. `1700000000000-0`.
    pub id: String,
    /// Field names and values; `None` when the entry was deleted from the stream while pending.
    pub fields: Option<Vec<(String, Vec<u8>)>>,
}

/// Why an entry is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// No `data` field.
    #[error("no `data` field: every event needs one")]
    NoData,
    /// `data` is not valid JSON though the content type says JSON.
    #[error("`data` is not valid JSON for content type {content_type:?}: {error}")]
    InvalidJson {
        /// The effective content type.
        content_type: String,
        /// The parser's complaint.
        error: String,
    },
    /// An attribute that must be text is not UTF-8.
    #[error("field {0:?} is not UTF-8 text")]
    NotText(String),
}

/// Builds the event for `entry` of `stream`, delivered for the `attempt`-th time.
pub fn to_event(
    stream: &str,
    entry_id: &str,
    fields: &[(String, Vec<u8>)],
    attempt: u32,
) -> Result<Event, Malformed> {
    let mut event = Event {
        id: String::new(),
        source: String::new(),
        event_type: String::new(),
        subject: None,
        time: None,
        datacontenttype: None,
        data: Vec::new(),
        extensions: Vec::new(),
        delivery: Delivery {
            trigger: TriggerKind::Stream,
            stream: Some(stream.to_owned()),
            entry_id: Some(entry_id.to_owned()),
            attempt,
        },
    };
    let mut data = None;
    for (name, value) in fields {
        if name == "data" {
            data = Some(value.clone());
            continue;
        }
        let text = std::str::from_utf8(value)
            .map_err(|_| Malformed::NotText(name.clone()))?
            .to_owned();
        match name.as_str() {
            "type" => event.event_type = text,
            "source" => event.source = text,
            "id" => event.id = text,
            "subject" => event.subject = Some(text),
            "time" => event.time = Some(text),
            "datacontenttype" => event.datacontenttype = Some(text),
            _ => event.extensions.push((name.clone(), text)),
        }
    }
    event.data = data.ok_or(Malformed::NoData)?;
    if event.id.is_empty() {
        event.id = entry_id.to_owned();
    }
    if event.source.is_empty() {
        event.source = format!("redis://{stream}");
    }
    if event.event_type.is_empty() {
        event.event_type = DEFAULT_TYPE.to_owned();
    }
    let content_type = event
        .datacontenttype
        .as_deref()
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    if is_json_content_type(content_type)
        && let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&event.data)
    {
        return Err(Malformed::InvalidJson {
            content_type: content_type.to_owned(),
            error: error.to_string(),
        });
    }
    Ok(event)
}

/// The `type` field of an entry, if it has a textual one (for the trigger's type filter).
pub fn event_type(fields: &[(String, Vec<u8>)]) -> Option<&str> {
    fields
        .iter()
        .find(|(name, _)| name == "type")
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// The fields of an event a function publishes.
pub fn published_fields(request: &PublishRequest, id: &str, time: &str) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = [
        ("type", request.event_type.clone().into_bytes()),
        (
            "source",
            format!("eddy://{}", request.function).into_bytes(),
        ),
        ("id", id.as_bytes().to_vec()),
        ("time", time.as_bytes().to_vec()),
        ("datacontenttype", DEFAULT_CONTENT_TYPE.as_bytes().to_vec()),
        ("data", request.data.clone()),
        (CAUSATION_EXTENSION, request.caused_by.clone().into_bytes()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    for (name, value) in &request.extensions {
        fields.push((name.clone(), value.clone().into_bytes()));
    }
    fields
}

/// The entries of an `XREADGROUP` reply for one stream (empty on a timeout).
pub fn read_reply_entries(reply: Value) -> Result<Vec<Entry>, ReadError> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|pair| match pair {
                Value::Array(mut kv) if kv.len() == 2 => Ok(kv.pop().unwrap_or(Value::Nil)),
                other => Err(ReadError::Reply(format!(
                    "unexpected stream in XREADGROUP reply: {other:?}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => {
            return Err(ReadError::Reply(format!(
                "unexpected XREADGROUP reply: {other:?}"
            )));
        }
    };
    let mut out = Vec::new();
    for entries in streams {
        out.extend(entries_of(entries)?);
    }
    Ok(out)
}

/// The entries of a list of `[id, [field, value, ...]]` pairs (`XREADGROUP`, `XCLAIM`, `XRANGE`).
pub fn entries_of(value: Value) -> Result<Vec<Entry>, ReadError> {
    let Value::Array(items) = value else {
        return match value {
            Value::Nil => Ok(Vec::new()),
            other => Err(ReadError::Reply(format!(
                "expected a list of entries, got {other:?}"
            ))),
        };
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            // A nil in place of an entry: deleted from the stream while pending.
            continue;
        };
        if pair.len() != 2 {
            return Err(ReadError::Reply(format!(
                "expected [id, fields], got {pair:?}"
            )));
        }
        let raw_fields = pair.pop().unwrap_or(Value::Nil);
        let id: String = redis::from_redis_value(pair.pop().unwrap_or(Value::Nil))
            .map_err(|e| ReadError::Reply(format!("entry id: {e}")))?;
        let pairs: Vec<(Value, Value)> = match raw_fields {
            Value::Nil => {
                entries.push(Entry { id, fields: None });
                continue;
            }
            Value::Array(flat) => {
                let mut iter = flat.into_iter();
                std::iter::from_fn(|| Some((iter.next()?, iter.next()?))).collect()
            }
            Value::Map(pairs) => pairs,
            other => {
                return Err(ReadError::Reply(format!(
                    "fields of {id}: unexpected {other:?}"
                )));
            }
        };
        let mut fields = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let name: Vec<u8> = redis::from_redis_value(name)
                .map_err(|e| ReadError::Reply(format!("field name of {id}: {e}")))?;
            let value: Vec<u8> = redis::from_redis_value(value)
                .map_err(|e| ReadError::Reply(format!("field value of {id}: {e}")))?;
            fields.push((String::from_utf8_lossy(&name).into_owned(), value));
        }
        let fields = Some(fields);
        entries.push(Entry { id, fields });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn only_data_is_required() {
        let event = to_event("orders", "1-0", &fields(&[("data", "{}")]), 1).unwrap();
        assert_eq!(event.id, "1-0");
        assert_eq!(event.source, "redis://orders");
        assert_eq!(event.event_type, DEFAULT_TYPE);
        assert_eq!(event.delivery.entry_id.as_deref(), Some("1-0"));
        assert_eq!(event.delivery.trigger, TriggerKind::Stream);
    }

    #[test]
    fn attributes_and_extensions_map() {
        let event = to_event(
            "orders",
            "1-0",
            &fields(&[
                ("type", "OrderPlaced"),
                ("id", "e-1"),
                ("source", "shop"),
                ("subject", "o-1"),
                ("time", "2026-01-01T00:00:00Z"),
                ("traceparent", "00-abc"),
                ("data", r#"{"orderId":"o-1"}"#),
                ("tenant", "acme"),
            ]),
            3,
        )
        .unwrap();
        assert_eq!(event.event_type, "OrderPlaced");
        assert_eq!(event.id, "e-1");
        assert_eq!(event.source, "shop");
        assert_eq!(event.subject.as_deref(), Some("o-1"));
        assert_eq!(
            event.extensions,
            vec![
                ("traceparent".into(), "00-abc".into()),
                ("tenant".into(), "acme".into())
            ]
        );
        assert_eq!(event.delivery.attempt, 3);
    }

    #[test]
    fn malformed_entries_are_named() {
        assert_eq!(
            to_event("s", "1-0", &fields(&[("type", "T")]), 1),
            Err(Malformed::NoData)
        );
        assert!(matches!(
            to_event("s", "1-0", &fields(&[("data", "{not json")]), 1),
            Err(Malformed::InvalidJson { .. })
        ));
        // Text payloads are fine when the content type says so.
        assert!(
            to_event(
                "s",
                "1-0",
                &fields(&[("data", "hello"), ("datacontenttype", "text/plain")]),
                1
            )
            .is_ok()
        );
        let binary = vec![
            ("type".to_string(), vec![0xff]),
            ("data".into(), b"{}".to_vec()),
        ];
        assert_eq!(
            to_event("s", "1-0", &binary, 1),
            Err(Malformed::NotText("type".into()))
        );
    }

    #[test]
    fn replies_parse_in_order() {
        let entry = |id: &str, kv: &[&str]| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(
                    kv.iter()
                        .map(|s| Value::BulkString(s.as_bytes().to_vec()))
                        .collect(),
                ),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"orders".to_vec()),
            Value::Array(vec![
                entry("1-0", &["type", "A", "data", "{}"]),
                entry("2-0", &["data", "[]"]),
            ]),
        ])]);
        let entries = read_reply_entries(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(event_type(entries[0].fields.as_ref().unwrap()), Some("A"));
        assert_eq!(read_reply_entries(Value::Nil).unwrap(), vec![]);
        let deleted = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"3-0".to_vec()),
            Value::Nil,
        ])]);
        assert_eq!(entries_of(deleted).unwrap()[0].fields, None);
    }
}

/// Property tests: any fields a producer writes give an event or a named [`Malformed`], and
/// what a function publishes reads back as the same event.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("data".to_owned()),
            Just("type".to_owned()),
            Just("id".to_owned()),
            Just("datacontenttype".to_owned()),
            Just("time".to_owned()),
            ".{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn any_fields_are_an_event_or_a_named_malformation(
            fields in proptest::collection::vec(
                (field_name(), proptest::collection::vec(any::<u8>(), 0..64)),
                0..12,
            ),
            attempt in 1u32..100,
        ) {
            match to_event("s", "1-0", &fields, attempt) {
                Ok(event) => {
                    let data = fields.iter().rev().find(|(n, _)| n == "data").map(|(_, v)| v);
                    prop_assert_eq!(Some(&event.data), data);
                    prop_assert!(!event.id.is_empty() && !event.event_type.is_empty());
                    prop_assert_eq!(event.delivery.attempt, attempt);
                }
                Err(malformed) => prop_assert!(!malformed.to_string().is_empty()),
            }
        }

        #[test]
        fn a_published_event_reads_back_the_same(
            event_type in "[A-Za-z][A-Za-z0-9.]{0,40}",
            number in any::<i64>(),
            text in ".{0,40}",
            id in "[a-z0-9-]{1,36}",
        ) {
            let data = serde_json::json!({ "n": number, "text": text }).to_string().into_bytes();
            let request = PublishRequest {
                function: "f".into(),
                stream: "s".into(),
                event_type: event_type.clone(),
                data: data.clone(),
                caused_by: "cause".into(),
                extensions: vec![("traceparent".into(), "00-abc".into())],
            };
            let fields = published_fields(&request, &id, "2026-01-01T00:00:00Z");
            let event = to_event("s", "1-0", &fields, 1).unwrap();
            prop_assert_eq!(event.event_type, event_type);
            prop_assert_eq!(event.id, id);
            prop_assert_eq!(event.data, data);
            prop_assert_eq!(event.source, "eddy://f");
        }
    }
}
