//! The incoming event: CloudEvents attributes, payload, extensions and delivery facts.

use crate::Error;
use crate::bindings::eddy::function::types as wit;
use serde::de::DeserializeOwned;

/// What made the host run the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An entry read from a Redis stream.
    Stream,
    /// A cron schedule's tick.
    Cron,
    /// A direct invocation (`eddy invoke`).
    Invoke,
    /// An event posted to the host's HTTP ingress.
    Http,
}

/// One event, as handed to a function.
#[derive(Debug, Clone)]
pub struct Event {
    inner: wit::Event,
}

impl Event {
    pub(crate) fn from_wit(inner: wit::Event) -> Self {
        Self { inner }
    }

    /// The event's id, unique per source.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Where the event happened, e.g. `redis://orders`.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The event type, e.g. `OrderPlaced`.
    pub fn event_type(&self) -> &str {
        &self.inner.type_
    }

    /// The subject within the source, if any.
    pub fn subject(&self) -> Option<&str> {
        self.inner.subject.as_deref()
    }

    /// When the event happened (RFC 3339), if known.
    pub fn time(&self) -> Option<&str> {
        self.inner.time.as_deref()
    }

    /// The media type of the payload, if given.
    pub fn content_type(&self) -> Option<&str> {
        self.inner.datacontenttype.as_deref()
    }

    /// The payload bytes.
    pub fn data(&self) -> &[u8] {
        &self.inner.data
    }

    /// The payload as UTF-8 text; a 400 error when it is not UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.inner.data)
            .map_err(|e| Error::bad_request(format!("event data is not UTF-8: {e}")))
    }

    /// The payload parsed as JSON into `T`; a 400 error (rejected, not retried) when it does not
    /// parse, because retrying the same bytes can never succeed.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.inner.data)
            .map_err(|e| Error::bad_request(format!("invalid event payload: {e}")))
    }

    /// The value of extension attribute `name` (e.g. `traceparent`), if present.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.inner
            .extensions
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All extension attributes, name and value.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// What made the host run the function.
    pub fn trigger(&self) -> Trigger {
        match self.inner.delivery.trigger {
            wit::TriggerKind::Stream => Trigger::Stream,
            wit::TriggerKind::Cron => Trigger::Cron,
            wit::TriggerKind::Invoke => Trigger::Invoke,
            wit::TriggerKind::Http => Trigger::Http,
        }
    }

    /// The stream the event was read from, for stream triggers.
    pub fn stream(&self) -> Option<&str> {
        self.inner.delivery.stream.as_deref()
    }

    /// The stream entry id, for stream triggers.
    pub fn entry_id(&self) -> Option<&str> {
        self.inner.delivery.entry_id.as_deref()
    }

    /// Which delivery attempt this is, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.inner.delivery.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn event(data: &str) -> Event {
        Event::from_wit(wit::Event {
            id: "e-1".into(),
            source: "test".into(),
            type_: "OrderPlaced".into(),
            subject: None,
            time: None,
            datacontenttype: Some("application/json".into()),
            data: data.as_bytes().to_vec(),
            extensions: vec![("traceparent".into(), "00-abc".into())],
            delivery: wit::Delivery {
                trigger: wit::TriggerKind::Invoke,
                stream: None,
                entry_id: None,
                attempt: 2,
            },
        })
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Order {
        order_id: String,
    }

    #[test]
    fn json_parses_the_payload() {
        let order: Order = event(r#"{"orderId":"o-1"}"#).json().unwrap();
        assert_eq!(order.order_id, "o-1");
    }

    #[test]
    fn json_that_does_not_parse_is_a_400() {
        let error = event("not json").json::<Order>().unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(
            error.message().starts_with("invalid event payload"),
            "{error}"
        );
    }

    #[test]
    fn json_missing_a_field_is_a_400_naming_it() {
        let error = event("{}").json::<Order>().unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(error.message().contains("orderId"), "{error}");
    }

    #[test]
    fn accessors_expose_the_attributes() {
        let e = event("{}");
        assert_eq!(e.event_type(), "OrderPlaced");
        assert_eq!(e.extension("traceparent"), Some("00-abc"));
        assert_eq!(e.extension("missing"), None);
        assert_eq!(e.attempt(), 2);
        assert_eq!(e.trigger(), Trigger::Invoke);
    }
}
