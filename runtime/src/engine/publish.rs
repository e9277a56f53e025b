//! The `publish` and `idempotency` capabilities: where events a function emits go, and where
//! its `once` keys are kept.
//!
//! The engine does not know Redis. It calls a [`Publisher`] given with each invocation: the
//! stream trigger's publisher appends to Redis and keeps `once` keys there; `eddy invoke` uses
//! [`MemoryPublisher`], which keeps both in memory.
//!
//! A `once` key is in one of two states: *pending* (held by a running invocation, named by its
//! token, until that invocation's deadline) or *done* (an invocation that claimed it succeeded;
//! kept for the time to live it asked for). A claim answers true (claimed: go ahead), false
//! (done: skip), or fails as *unavailable* while another invocation holds it: skipping then could
//! lose the effect if that invocation fails, so this one fails and is retried instead.
//! [`OnceState`] is that logic for the in-memory publisher; the Redis one runs it in Lua.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::limits::MAX_PUBLISHED_EVENT_BYTES;

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

/// One `once(key, ttl)` claim of an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceClaim {
    /// The claiming function: keys are scoped to it.
    pub function: String,
    /// The key the function chose.
    pub key: String,
    /// The claiming invocation's token.
    pub token: String,
    /// How long the key is kept once the invocation succeeds.
    pub ttl: Duration,
    /// How long a pending claim lasts if the invocation never settles it (its host died).
    pub lease: Duration,
}

/// Longest `once` key accepted.
pub const MAX_ONCE_KEY_BYTES: usize = 512;
/// Longest time to live a `once` key may ask for: 30 days.
pub const MAX_ONCE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl OnceClaim {
    /// The value a pending claim holds.
    pub fn pending_value(&self) -> String {
        format!("pending:{}", self.token)
    }

    /// Checks the key and time to live a guest gave.
    pub fn validate(&self) -> Result<(), PublishError> {
        if self.key.is_empty() || self.key.len() > MAX_ONCE_KEY_BYTES {
            return Err(PublishError::Invalid(format!(
                "once key {:?}: expected 1 to {MAX_ONCE_KEY_BYTES} bytes",
                self.key
            )));
        }
        if self.ttl.is_zero() || self.ttl > MAX_ONCE_TTL {
            return Err(PublishError::Invalid(format!(
                "once ttl {} s: expected 1 to {} seconds",
                self.ttl.as_secs(),
                MAX_ONCE_TTL.as_secs()
            )));
        }
        Ok(())
    }
}

/// Somewhere published events go, and where `once` keys are kept.
///
/// Its methods are awaited inside a running invocation: the invocation's deadline cancels
/// them (drops the future), so none may leave a half-done write that matters.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one event and returns its new id.
    async fn publish(&self, request: PublishRequest) -> Result<String, PublishError>;

    /// Claims a `once` key for an invocation: true if it may go ahead (nobody holds the key,
    /// or this invocation already does), false if an invocation that claimed it succeeded, and
    /// [`PublishError::Unavailable`] ([`HELD_ELSEWHERE`]) while another invocation holds it.
    async fn claim_once(&self, claim: &OnceClaim) -> Result<bool, PublishError>;

    /// Ends an invocation's claims: kept for their time to live if it succeeded, released
    /// otherwise so a retry can claim them again.
    async fn settle_once(&self, claims: &[OnceClaim], succeeded: bool);
}

/// Why a claim failed while another invocation holds the key.
pub const HELD_ELSEWHERE: &str =
    "another invocation running now holds this once key; retry after it ends";

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Nobody held the key, or this invocation already did: go ahead.
    Yes,
    /// An invocation that claimed it succeeded: skip the effect.
    AlreadyDone,
    /// Another invocation holds it now.
    HeldElsewhere,
}

impl Claimed {
    /// As the answer to the guest's `once`.
    pub fn answer(self) -> Result<bool, PublishError> {
        match self {
            Self::Yes => Ok(true),
            Self::AlreadyDone => Ok(false),
            Self::HeldElsewhere => Err(PublishError::Unavailable(HELD_ELSEWHERE.to_owned())),
        }
    }
}

/// The `once` state machine over an in-memory map, for [`MemoryPublisher`].
#[derive(Debug, Default)]
pub struct OnceState {
    keys: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl OnceState {
    /// See [`Publisher::claim_once`].
    pub fn claim(&self, claim: &OnceClaim, now: Instant) -> Claimed {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let id = (claim.function.clone(), claim.key.clone());
        let pending = claim.pending_value();
        match keys.get(&id) {
            Some((value, until)) if *until > now => {
                if *value == pending {
                    Claimed::Yes
                } else if value == "done" {
                    Claimed::AlreadyDone
                } else {
                    Claimed::HeldElsewhere
                }
            }
            _ => {
                keys.insert(id, (pending, now + claim.lease));
                Claimed::Yes
            }
        }
    }

    /// See [`Publisher::settle_once`].
    pub fn settle(&self, claims: &[OnceClaim], succeeded: bool, now: Instant) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for claim in claims {
            let id = (claim.function.clone(), claim.key.clone());
            if keys
                .get(&id)
                .is_none_or(|(v, _)| *v != claim.pending_value())
            {
                continue;
            }
            if succeeded {
                keys.insert(id, ("done".to_owned(), now + claim.ttl));
            } else {
                keys.remove(&id);
            }
        }
    }
}

/// Checks a published event before any publisher sees it: the stream name (one validation for
/// every name, [`crate::names::stream`]), the type, and that the data is one JSON document of
/// at most [`MAX_PUBLISHED_EVENT_BYTES`], as its `application/json` label promises.
pub fn validate_publish(stream: &str, event_type: &str, data: &[u8]) -> Result<(), PublishError> {
    crate::names::StreamName::check(stream).map_err(|e| PublishError::Invalid(e.to_string()))?;
    crate::names::event_type(event_type)
        .map_err(|e| PublishError::Invalid(format!("event type {e}")))?;
    if data.len() > MAX_PUBLISHED_EVENT_BYTES {
        return Err(PublishError::Invalid(format!(
            "event data of {} bytes is over the {MAX_PUBLISHED_EVENT_BYTES}-byte limit of one \
             published event",
            data.len()
        )));
    }
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(data) {
        return Err(PublishError::Invalid(format!(
            "event data is not JSON ({error}): published events carry application/json"
        )));
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

#[async_trait::async_trait]
impl Publisher for AllowedStreams {
    async fn claim_once(&self, claim: &OnceClaim) -> Result<bool, PublishError> {
        self.inner.claim_once(claim).await
    }

    async fn settle_once(&self, claims: &[OnceClaim], succeeded: bool) {
        self.inner.settle_once(claims, succeeded).await
    }

    async fn publish(&self, request: PublishRequest) -> Result<String, PublishError> {
        if self.allowed.contains(&request.stream) {
            self.inner.publish(request).await
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

#[async_trait::async_trait]
impl Publisher for Carrying {
    async fn claim_once(&self, claim: &OnceClaim) -> Result<bool, PublishError> {
        self.inner.claim_once(claim).await
    }

    async fn settle_once(&self, claims: &[OnceClaim], succeeded: bool) {
        self.inner.settle_once(claims, succeeded).await
    }

    async fn publish(&self, mut request: PublishRequest) -> Result<String, PublishError> {
        request.extensions.extend(self.carried.iter().cloned());
        self.inner.publish(request).await
    }
}

/// Keeps published events in memory, numbering them; used by `eddy invoke` and tests.
#[derive(Debug, Default)]
pub struct MemoryPublisher {
    events: Mutex<Vec<(String, PublishRequest)>>,
    once: OnceState,
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

#[async_trait::async_trait]
impl Publisher for MemoryPublisher {
    async fn claim_once(&self, claim: &OnceClaim) -> Result<bool, PublishError> {
        claim.validate()?;
        self.once.claim(claim, Instant::now()).answer()
    }

    async fn settle_once(&self, claims: &[OnceClaim], succeeded: bool) {
        self.once.settle(claims, succeeded, Instant::now())
    }

    async fn publish(&self, request: PublishRequest) -> Result<String, PublishError> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("mem-{}", events.len() + 1);
        events.push((id.clone(), request));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_listed_streams_may_be_published_to() {
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
        assert!(allowed.publish(request("emails")).await.is_ok());
        assert!(matches!(
            allowed.publish(request("payments")).await,
            Err(PublishError::Denied(m)) if m.contains("payments")
        ));
        assert_eq!(memory.events().len(), 1);
    }

    fn claim(key: &str, token: &str) -> OnceClaim {
        OnceClaim {
            function: "payment".into(),
            key: key.into(),
            token: token.into(),
            ttl: Duration::from_secs(60),
            lease: Duration::from_secs(5),
        }
    }

    #[test]
    fn once_keys_are_kept_on_success_and_released_on_failure() {
        let state = OnceState::default();
        let t0 = Instant::now();
        let first = claim("charge:o-1", "a");
        assert_eq!(state.claim(&first, t0), Claimed::Yes);
        assert_eq!(
            state.claim(&first, t0),
            Claimed::Yes,
            "the holder may ask again"
        );
        assert_eq!(
            state.claim(&claim("charge:o-1", "b"), t0),
            Claimed::HeldElsewhere,
            "held by a: b must not skip, since a may still fail"
        );
        // a fails: released, so the retry b gets it and succeeds: kept.
        state.settle(std::slice::from_ref(&first), false, t0);
        let retry = claim("charge:o-1", "b");
        assert_eq!(state.claim(&retry, t0), Claimed::Yes);
        state.settle(std::slice::from_ref(&retry), true, t0);
        assert_eq!(
            state.claim(&claim("charge:o-1", "c"), t0 + Duration::from_secs(59)),
            Claimed::AlreadyDone
        );
        assert_eq!(
            state.claim(&claim("charge:o-1", "d"), t0 + Duration::from_secs(61)),
            Claimed::Yes
        );
        // A pending claim whose holder died lapses after its lease.
        let orphan = claim("reserve:o-2", "e");
        assert_eq!(state.claim(&orphan, t0), Claimed::Yes);
        assert_eq!(
            state.claim(&claim("reserve:o-2", "f"), t0 + Duration::from_secs(4)),
            Claimed::HeldElsewhere
        );
        assert_eq!(
            state.claim(&claim("reserve:o-2", "f"), t0 + Duration::from_secs(6)),
            Claimed::Yes
        );
        // The late settle of the orphan changes nothing.
        state.settle(&[orphan], true, t0 + Duration::from_secs(7));
        assert_eq!(
            state.claim(&claim("reserve:o-2", "g"), t0 + Duration::from_secs(7)),
            Claimed::HeldElsewhere,
            "still f's"
        );
        // Keys are per function.
        let other = OnceClaim {
            function: "shipping".into(),
            ..claim("charge:o-1", "h")
        };
        assert_eq!(
            state.claim(&other, t0 + Duration::from_secs(30)),
            Claimed::Yes
        );
    }

    #[test]
    fn once_keys_and_ttls_are_checked() {
        assert!(claim("k", "t").validate().is_ok());
        assert!(claim("", "t").validate().is_err());
        assert!(claim(&"k".repeat(513), "t").validate().is_err());
        let forever = OnceClaim {
            ttl: MAX_ONCE_TTL + Duration::from_secs(1),
            ..claim("k", "t")
        };
        assert!(matches!(forever.validate(), Err(PublishError::Invalid(m)) if m.contains("ttl")));
    }

    #[test]
    fn bad_stream_names_types_and_data_are_invalid() {
        assert!(validate_publish("orders", "OrderPlaced", b"{}").is_ok());
        let big = format!("\"{}\"", "x".repeat(MAX_PUBLISHED_EVENT_BYTES));
        for (stream, event_type, data) in [
            ("", "T", &b"{}"[..]),
            ("a b", "T", b"{}"),
            (&"s".repeat(257), "T", b"{}"),
            ("eddy:deployments", "T", b"{}"),
            ("orders", "", b"{}"),
            ("orders", "T\nforged", b"{}"),
            ("orders", "T", b"not json"),
            ("orders", "T", big.as_bytes()),
        ] {
            assert!(
                matches!(
                    validate_publish(stream, event_type, data),
                    Err(PublishError::Invalid(_))
                ),
                "{stream:?} {event_type:?}"
            );
        }
    }

    #[tokio::test]
    async fn memory_publisher_numbers_events_in_order() {
        let publisher = MemoryPublisher::default();
        let request = PublishRequest {
            function: "f".into(),
            stream: "s".into(),
            event_type: "T".into(),
            data: b"{}".to_vec(),
            caused_by: "e".into(),
            extensions: Vec::new(),
        };
        assert_eq!(publisher.publish(request.clone()).await.unwrap(), "mem-1");
        assert_eq!(publisher.publish(request).await.unwrap(), "mem-2");
        assert_eq!(publisher.events().len(), 2);
    }
}
