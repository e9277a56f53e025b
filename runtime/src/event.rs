//! The host's view of an event: CloudEvents attributes, payload, extensions and delivery facts.
//!
//! Triggers build an [`Event`]; the engine hands it to the function through the WIT `event`
//! record. This type knows nothing of Redis or wasm.

use serde::{Deserialize, Serialize};

/// What caused an invocation (mirrors the WIT `trigger-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// An entry read from a Redis stream.
    Stream,
    /// A cron tick.
    Cron,
    /// A direct invocation.
    Invoke,
    /// An event received over HTTP.
    Http,
}

/// How an event reached the function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// What caused the invocation.
    pub trigger: TriggerKind,
    /// The stream it was read from, for stream triggers.
    pub stream: Option<String>,
    /// The stream entry id, for stream triggers.
    pub entry_id: Option<String>,
    /// The attempt number, starting at 1.
    pub attempt: u32,
}

impl Delivery {
    /// A direct invocation (`eddy invoke`, the API's invoke endpoint, benchmarks): no stream.
    pub fn invoked(attempt: u32) -> Self {
        Self {
            trigger: TriggerKind::Invoke,
            stream: None,
            entry_id: None,
            attempt,
        }
    }
}

/// A CloudEvents-shaped event with its delivery facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per source.
    pub id: String,
    /// Where the event happened.
    pub source: String,
    /// The event type, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The subject within the source.
    pub subject: Option<String>,
    /// When it happened, RFC 3339.
    pub time: Option<String>,
    /// The media type of `data`.
    pub datacontenttype: Option<String>,
    /// The payload.
    pub data: Vec<u8>,
    /// Other attributes (CloudEvents extensions), in order.
    pub extensions: Vec<(String, String)>,
    /// How it reached the function.
    pub delivery: Delivery,
}

/// The media type events carry when none is given.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// A media type without its parameters, lowercased: `Application/JSON; charset=utf-8` →
/// `application/json`.
pub fn media_type_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type is JSON (`application/json` or any `+json` suffix), so its payload must
/// parse as JSON.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = media_type_essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/cloudevents+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/octet-stream"));
    }
}
