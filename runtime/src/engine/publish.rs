//! The `publish` capability: where events a function emits go.
//!
//! The engine does not know Redis. It calls a [`Publisher`] given with each invocation: the
//! stream trigger's publisher appends to Redis; `eddy invoke` uses [`MemoryPublisher`], which
//! keeps them in a list printed after the result.

use serde::Serialize;
use std::sync::{Arc, Mutex};

/// One event a function asked to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishRequest {
    /// The publishing function.
    pub function: String,
    /// The target stream.
    pub stream: String,
    /// The new event's type.
    pub event_type: String,
    /// Its JSON payload.
    #[serde(serialize_with = "data_as_text")]
    pub data: Vec<u8>,
    /// The id of the event being handled, kept as the new event's cause.
    pub caused_by: String,
    /// Extensions carried over from the event being handled (trace context, correlation id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<(String, String)>,
}

fn data_as_text<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}

/// Why a publish was refused (mirrors the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The function may not publish there.
    #[error("denied: {0}")]
    Denied(String),
    /// An argument was wrong.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The host cannot publish right now.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Somewhere published events go.
pub trait Publisher: Send + Sync {
    /// Publishes one event and returns its new id.
    fn publish(&self, request: PublishRequest) -> Result<String, PublishError>;
}

/// Longest stream name accepted; Redis allows more, but a longer name is surely a mistake.
pub const MAX_STREAM_NAME_BYTES: usize = 256;

/// Checks a stream name and an event type before any publisher sees them.
pub fn validate_publish(stream: &str, event_type: &str) -> Result<(), PublishError> {
    if stream.is_empty() || stream.len() > MAX_STREAM_NAME_BYTES {
        return Err(PublishError::Invalid(format!(
            "stream name {stream:?}: expected 1 to {MAX_STREAM_NAME_BYTES} bytes"
        )));
    }
    if stream.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(PublishError::Invalid(format!(
            "stream name {stream:?}: expected no whitespace or control characters"
        )));
    }
    if event_type.is_empty() {
        return Err(PublishError::Invalid(
            "event type: expected a non-empty string".into(),
        ));
    }
    Ok(())
}

/// Lets a function publish only to the streams its manifest lists, passing the rest on.
pub struct AllowedStreams {
    inner: Arc<dyn Publisher>,
    allowed: Vec<String>,
}

impl AllowedStreams {
    /// Wraps `inner` so only streams in `allowed` (exact names) are published to.
    pub fn new(inner: Arc<dyn Publisher>, allowed: Vec<String>) -> Self {
        Self { inner, allowed }
    }
}

impl Publisher for AllowedStreams {
    fn publish(&self, request: PublishRequest) -> Result<String, PublishError> {
        if self.allowed.contains(&request.stream) {
            self.inner.publish(request)
        } else {
            Err(PublishError::Denied(format!(
                "function {} may not publish to stream {:?}: add it to `publish` in its manifest \
                 (allowed: {:?})",
                request.function, request.stream, self.allowed
            )))
        }
    }
}

/// Adds the extensions an invocation carries (see [`super::propagation`]) to every event it
/// publishes.
pub struct Carrying {
    inner: Arc<dyn Publisher>,
    carried: Vec<(String, String)>,
}

impl Carrying {
    /// Wraps `inner`, adding `carried` to each request.
    pub fn new(inner: Arc<dyn Publisher>, carried: Vec<(String, String)>) -> Self {
        Self { inner, carried }
    }
}

impl Publisher for Carrying {
    fn publish(&self, mut request: PublishRequest) -> Result<String, PublishError> {
        request.extensions.extend(self.carried.iter().cloned());
        self.inner.publish(request)
    }
}

/// Keeps published events in memory, numbering them; used by `eddy invoke` and tests.
#[derive(Debug, Default)]
pub struct MemoryPublisher {
    events: Mutex<Vec<(String, PublishRequest)>>,
}

impl MemoryPublisher {
    /// The events published so far, with their ids, in order.
    pub fn events(&self) -> Vec<(String, PublishRequest)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Publisher for MemoryPublisher {
    fn publish(&self, request: PublishRequest) -> Result<String, PublishError> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("mem-{}", events.len() + 1);
        events.push((id.clone(), request));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_streams_may_be_published_to() {
        let memory = Arc::new(MemoryPublisher::default());
        let allowed = AllowedStreams::new(memory.clone(), vec!["emails".into()]);
        let request = |stream: &str| PublishRequest {
            function: "f".into(),
            stream: stream.into(),
            event_type: "T".into(),
            data: b"{}".to_vec(),
            caused_by: "e".into(),
            extensions: Vec::new(),
        };
        assert!(allowed.publish(request("emails")).is_ok());
        assert!(matches!(
            allowed.publish(request("payments")),
            Err(PublishError::Denied(m)) if m.contains("payments")
        ));
        assert_eq!(memory.events().len(), 1);
    }

    #[test]
    fn bad_stream_names_and_types_are_invalid() {
        assert!(validate_publish("orders", "OrderPlaced").is_ok());
        assert!(matches!(
            validate_publish("", "T"),
            Err(PublishError::Invalid(_))
        ));
        assert!(matches!(
            validate_publish("a b", "T"),
            Err(PublishError::Invalid(_))
        ));
        assert!(matches!(
            validate_publish(&"s".repeat(257), "T"),
            Err(PublishError::Invalid(_))
        ));
        assert!(matches!(
            validate_publish("orders", ""),
            Err(PublishError::Invalid(_))
        ));
    }

    #[test]
    fn memory_publisher_numbers_events_in_order() {
        let publisher = MemoryPublisher::default();
        let request = PublishRequest {
            function: "f".into(),
            stream: "s".into(),
            event_type: "T".into(),
            data: b"{}".to_vec(),
            caused_by: "e".into(),
            extensions: Vec::new(),
        };
        assert_eq!(publisher.publish(request.clone()).unwrap(), "mem-1");
        assert_eq!(publisher.publish(request).unwrap(), "mem-2");
        assert_eq!(publisher.events().len(), 2);
    }
}
