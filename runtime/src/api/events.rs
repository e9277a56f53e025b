//! Event ingress: `POST /v1/streams/{stream}/events` turns CloudEvents arriving over HTTP into
//! stream entries in Eddy's wire format, so a service publishes without a Redis client.
//!
//! Four request shapes, told apart by the content type and headers:
//! - structured mode, `application/cloudevents+json`: one JSON CloudEvent;
//! - batch mode, `application/cloudevents-batch+json`: a JSON array of them, added atomically;
//! - binary mode, `ce-*` headers (`ce-specversion`, `ce-id`, `ce-source`, `ce-type`, …) with the
//!   body as `data` and `content-type` as `datacontenttype`;
//! - anything else: the body is the `data` of a new event (type from `?type=`, default
//!   `eddy.unknown`; a new UUID id; source `eddy://http`).
//!
//! The answer is 202 with the new entry ids. Every event is checked exactly as a stream entry
//! would be (JSON data must parse) before anything is added, so a bad batch adds nothing.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiState, MAX_EVENT_BODY_BYTES, json_response, read_body};
use crate::event::{DEFAULT_CONTENT_TYPE, is_json_content_type, media_type_essence};
use crate::wire::{self, DEFAULT_TYPE};
/// Longest extension name CloudEvents recommends.
const MAX_EXTENSION_NAME: usize = 20;
/// The CloudEvents version accepted.
const SPEC_VERSION: &str = "1.0";

type Fields = Vec<(String, Vec<u8>)>;

/// Handles one ingress request.
pub async fn ingest(
    state: &ApiState,
    stream: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    crate::names::StreamName::check(stream)
        .map_err(|e| ApiError::bad_request("stream", e.to_string()))?;
    let query_type = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("type="))
            .map(|t| {
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    });
    let (parts, body) = read_body(state, request, MAX_EVENT_BODY_BYTES).await?;
    let events = parse(stream, &parts.headers, query_type, &body)?;
    for (index, fields) in events.iter().enumerate() {
        check_schema(state, fields, index, events.len())?;
    }

    let mut pipe = redis::pipe();
    pipe.atomic();
    for fields in &events {
        pipe.cmd("XADD").arg(stream).arg("*").arg(fields);
    }
    let mut conn = state.broker.requests();
    let ids: Vec<String> = match pipe.query_async(&mut conn).await {
        Ok(ids) => ids,
        // A transaction redirected after a failover or a slot move wrote nothing: sent again
        // once the client knows where the stream lives now.
        Err(error) if crate::broker::follow_redirect(&mut conn, stream, &error).await => pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| ApiError::redis("ingress", &e))?,
        Err(error) => return Err(ApiError::redis("ingress", &error)),
    };
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({ "stream": stream, "ids": ids }),
    ))
}

/// Refuses an event whose data does not match its type's schema, naming the path and the rule
/// (and which event of a batch), so nothing of the request is added.
fn check_schema(
    state: &ApiState,
    fields: &Fields,
    index: usize,
    count: usize,
) -> Result<(), ApiError> {
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let event_type = field("type")
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| DEFAULT_TYPE.to_owned());
    let content_type = field("datacontenttype").map(|t| String::from_utf8_lossy(t).into_owned());
    let Some(data) = field("data") else {
        return Ok(());
    };
    if !crate::schemas::loaded(&state.schemas) {
        return Err(ApiError::new(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this host has not loaded the event schemas yet (Redis trouble?): nothing is accepted \
             unchecked; try again or another host",
        ));
    }
    crate::schemas::check(&state.schemas, &event_type, content_type.as_deref(), data).map_err(|invalid| {
        let which = if count > 1 {
            format!("event {index} of the batch: ")
        } else {
            String::new()
        };
        let mut error = ApiError::invalid("data", format!("{which}{invalid}"));
        error.details = Some(json!({
            "type": invalid.event_type,
            "version": invalid.version,
            "path": invalid.path(),
            "failures": invalid.failures.iter().map(|(path, rule, message)| {
                json!({ "path": if path.is_empty() { "/" } else { path }, "rule": rule, "message": message })
            }).collect::<Vec<_>>(),
        }));
        error
    })
}

/// The events of an ingress request to `stream`, in whichever CloudEvents mode it came
/// (batch, structured, binary, or a plain body with `?type=`), each checked as a host would read
/// it from the stream. Pure, so every mode is tested on any input without a server.
fn parse(
    stream: &str,
    headers: &HeaderMap,
    query_type: Option<String>,
    body: &Bytes,
) -> Result<Vec<Fields>, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let essence = media_type_essence(&content_type);

    let events: Vec<Fields> = match essence.as_str() {
        "application/cloudevents-batch+json" => {
            let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request("body", format!("expected a JSON array of CloudEvents: {e}"))
            })?;
            if items.is_empty() {
                return Err(ApiError::bad_request("body", "the batch is empty"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| structured(item, &format!("[{i}].")))
                .collect::<Result<_, _>>()?
        }
        "application/cloudevents+json" => {
            let item: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request("body", format!("expected a JSON CloudEvent: {e}"))
            })?;
            vec![structured(&item, "")?]
        }
        _ if headers.contains_key("ce-specversion") => {
            vec![binary(headers, &content_type, body)?]
        }
        _ => vec![plain(query_type, &content_type, body)?],
    };
    for (i, fields) in events.iter().enumerate() {
        let at = |field: &str| {
            if events.len() > 1 {
                format!("[{i}].{field}")
            } else {
                field.to_owned()
            }
        };
        let event = wire::to_event(stream, "0-0", fields, 1)
            .map_err(|malformed| ApiError::bad_request(&at("data"), malformed.to_string()))?;
        // The same rule as a guest's publish and a cronjob's, whichever mode it came in by.
        crate::names::event_type(&event.event_type)
            .map_err(|e| ApiError::bad_request(&at("type"), format!("event type {e}")))?;
    }

    Ok(events)
}

fn required<'a>(object: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a str, ApiError> {
    match object.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(other) => Err(ApiError::bad_request(
            &format!("{at}{name}"),
            format!("expected a non-empty string, got {other}"),
        )),
        None => Err(ApiError::bad_request(
            &format!("{at}{name}"),
            format!("the CloudEvents attribute {name:?} is required"),
        )),
    }
}

fn check_extension_name(name: &str, field: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_EXTENSION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            field,
            format!(
                "extension name {name:?}: expected 1 to {MAX_EXTENSION_NAME} lowercase letters or digits"
            ),
        ))
    }
}

/// One structured-mode CloudEvent; `at` prefixes field names in errors (`[2].`).
fn structured(item: &Value, at: &str) -> Result<Fields, ApiError> {
    let Value::Object(object) = item else {
        return Err(ApiError::bad_request(
            at.trim_end_matches('.'),
            "expected a JSON object",
        ));
    };
    let version = required(object, "specversion", at)?;
    if version != SPEC_VERSION {
        return Err(ApiError::bad_request(
            &format!("{at}specversion"),
            format!("{version:?}: expected {SPEC_VERSION:?}"),
        ));
    }
    let mut fields: Fields = Vec::new();
    for name in ["type", "source", "id"] {
        fields.push((
            name.to_owned(),
            required(object, name, at)?.as_bytes().to_vec(),
        ));
    }
    for name in ["subject", "time", "datacontenttype"] {
        match object.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => fields.push((name.to_owned(), s.as_bytes().to_vec())),
            Some(other) => {
                return Err(ApiError::bad_request(
                    &format!("{at}{name}"),
                    format!("expected a string, got {other}"),
                ));
            }
        }
    }
    let content_type = object
        .get("datacontenttype")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    let data = match (object.get("data"), object.get("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                &format!("{at}data_base64"),
                "give data or data_base64, not both",
            ));
        }
        (_, Some(Value::String(encoded))) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| {
                ApiError::bad_request(&format!("{at}data_base64"), format!("not base64: {e}"))
            })?,
        (_, Some(other)) => {
            return Err(ApiError::bad_request(
                &format!("{at}data_base64"),
                format!("expected a base64 string, got {other}"),
            ));
        }
        (Some(Value::String(text)), None) if !is_json_content_type(content_type) => {
            text.as_bytes().to_vec()
        }
        (Some(value), None) => value.to_string().into_bytes(),
        (None, None) => b"null".to_vec(),
    };
    fields.push(("data".to_owned(), data));
    for (name, value) in object {
        if matches!(
            name.as_str(),
            "specversion"
                | "type"
                | "source"
                | "id"
                | "subject"
                | "time"
                | "datacontenttype"
                | "data"
                | "data_base64"
        ) {
            continue;
        }
        check_extension_name(name, &format!("{at}{name}"))?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            other => {
                return Err(ApiError::bad_request(
                    &format!("{at}{name}"),
                    format!("extension values are strings, numbers or booleans, got {other}"),
                ));
            }
        };
        fields.push((name.clone(), text.into_bytes()));
    }
    Ok(fields)
}

/// A binary-mode CloudEvent: attributes in `ce-*` headers, the body as data.
fn binary(headers: &HeaderMap, content_type: &str, body: &Bytes) -> Result<Fields, ApiError> {
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::bad_request(name, "header value is not visible ASCII text")
                })
            })
            .transpose()
    };
    let version = header("ce-specversion")?.unwrap_or_default();
    if version != SPEC_VERSION {
        return Err(ApiError::bad_request(
            "ce-specversion",
            format!("{version:?}: expected {SPEC_VERSION:?}"),
        ));
    }
    let mut fields: Fields = Vec::new();
    for name in ["type", "source", "id"] {
        let value = header(&format!("ce-{name}"))?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    &format!("ce-{name}"),
                    format!("the CloudEvents attribute {name:?} is required (header ce-{name})"),
                )
            })?;
        fields.push((name.to_owned(), value.into_bytes()));
    }
    for name in ["subject", "time"] {
        if let Some(value) = header(&format!("ce-{name}"))? {
            fields.push((name.to_owned(), value.into_bytes()));
        }
    }
    if !content_type.is_empty() {
        fields.push((
            "datacontenttype".to_owned(),
            content_type.as_bytes().to_vec(),
        ));
    }
    fields.push(("data".to_owned(), body.to_vec()));
    for (name, value) in headers {
        let Some(extension) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if matches!(
            extension,
            "specversion" | "type" | "source" | "id" | "subject" | "time"
        ) {
            continue;
        }
        check_extension_name(extension, name.as_str())?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request(name.as_str(), "header value is not text"))?;
        fields.push((extension.to_owned(), value.as_bytes().to_vec()));
    }
    Ok(fields)
}

/// A plain body: it becomes the data of a new event.
fn plain(event_type: Option<String>, content_type: &str, body: &Bytes) -> Result<Fields, ApiError> {
    let event_type = event_type.unwrap_or_else(|| DEFAULT_TYPE.to_owned());
    if event_type.is_empty() {
        return Err(ApiError::bad_request("type", "expected a non-empty ?type="));
    }
    let content_type = if content_type.is_empty() {
        DEFAULT_CONTENT_TYPE
    } else {
        content_type
    };
    Ok(vec![
        ("type".to_owned(), event_type.into_bytes()),
        ("source".to_owned(), b"eddy://http".to_vec()),
        (
            "id".to_owned(),
            uuid::Uuid::new_v4().to_string().into_bytes(),
        ),
        (
            "datacontenttype".to_owned(),
            content_type.as_bytes().to_vec(),
        ),
        ("data".to_owned(), body.to_vec()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn structured_events_map_to_the_wire_format() {
        let event = json!({
            "specversion": "1.0", "type": "OrderPlaced", "source": "shop", "id": "e-1",
            "subject": "o-1", "data": {"orderId": "o-1"}, "tenant": "acme", "retries": 2
        });
        let fields = structured(&event, "").unwrap();
        assert_eq!(field(&fields, "type"), Some("OrderPlaced"));
        assert_eq!(field(&fields, "data"), Some(r#"{"orderId":"o-1"}"#));
        assert_eq!(field(&fields, "tenant"), Some("acme"));
        assert_eq!(field(&fields, "retries"), Some("2"));
        let text = json!({"specversion": "1.0", "type": "T", "source": "s", "id": "1",
            "datacontenttype": "text/plain", "data": "hello"});
        assert_eq!(
            field(&structured(&text, "").unwrap(), "data"),
            Some("hello")
        );
        let b64 = json!({"specversion": "1.0", "type": "T", "source": "s", "id": "1",
            "datacontenttype": "application/octet-stream", "data_base64": "aGk="});
        assert_eq!(field(&structured(&b64, "").unwrap(), "data"), Some("hi"));
    }

    #[test]
    fn bad_structured_events_name_the_field() {
        let field_of = |v: Value| structured(&v, "[1].").unwrap_err().field.unwrap();
        assert_eq!(
            field_of(json!({"type": "T", "source": "s", "id": "1"})),
            "[1].specversion"
        );
        assert_eq!(
            field_of(json!({"specversion": "1.0", "source": "s", "id": "1"})),
            "[1].type"
        );
        assert_eq!(
            field_of(
                json!({"specversion": "1.0", "type": "T", "source": "s", "id": "1", "eddy.reason": "x"})
            ),
            "[1].eddy.reason"
        );
        assert_eq!(
            field_of(json!({"specversion": "0.3", "type": "T", "source": "s", "id": "1"})),
            "[1].specversion"
        );
    }
}

/// Property tests: any body in any of the three CloudEvents modes (and the plain one) gives
/// events the stream trigger will read, or a 400 naming the field; a structured event's
/// attributes and data come through unchanged.
#[cfg(test)]
mod properties {
    use hyper::header::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,16}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const CONTENT_TYPES: [&str; 5] = [
        "application/cloudevents-batch+json",
        "application/cloudevents+json",
        "application/json",
        "text/plain",
        "",
    ];

    proptest! {
        #[test]
        fn any_request_is_events_or_a_named_error(
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                json_value().prop_map(|v| v.to_string().into_bytes()),
            ],
            mode in 0..CONTENT_TYPES.len(),
            binary in any::<bool>(),
            header in proptest::collection::vec(any::<u8>(), 0..32),
            query_type in proptest::option::of(".{0,40}"),
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(CONTENT_TYPES[mode]) {
                headers.insert(CONTENT_TYPE, value);
            }
            if binary {
                headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
                if let Ok(value) = HeaderValue::from_bytes(&header) {
                    for name in ["ce-id", "ce-type", "ce-source", "ce-x"] {
                        headers.insert(name, value.clone());
                    }
                }
            }
            match parse("s", &headers, query_type, &Bytes::from(body)) {
                Ok(events) => {
                    prop_assert!(!events.is_empty());
                    for fields in &events {
                        prop_assert!(wire::to_event("s", "0-0", fields, 1).is_ok());
                    }
                }
                Err(error) => {
                    prop_assert_eq!(error.status, StatusCode::BAD_REQUEST);
                    prop_assert!(error.field.is_some() && !error.message.is_empty());
                }
            }
        }

        #[test]
        fn a_structured_event_comes_through_unchanged(
            id in "[A-Za-z0-9-]{1,36}",
            event_type in "[A-Za-z][A-Za-z0-9.]{0,40}",
            subject in proptest::option::of("[a-z0-9/]{1,20}"),
            data in json_value(),
        ) {
            let mut event = json!({
                "specversion": "1.0", "id": id, "type": event_type, "source": "/tests",
                "data": data,
            });
            if let Some(subject) = &subject {
                event["subject"] = json!(subject);
            }
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
            let events = parse("s", &headers, None, &Bytes::from(event.to_string())).unwrap();
            let read = wire::to_event("s", "0-0", &events[0], 1).unwrap();
            prop_assert_eq!(read.id, id);
            prop_assert_eq!(read.event_type, event_type);
            prop_assert_eq!(read.subject, subject);
            let back: Value = serde_json::from_slice(&read.data).unwrap();
            prop_assert_eq!(back, data);
        }
    }
}
