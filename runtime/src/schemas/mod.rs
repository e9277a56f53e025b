//! Event schemas: a JSON Schema per event type, versioned in Redis, checked where events come
//! in.
//!
//! `eddy schemas put TYPE FILE` stores a new version of `TYPE`'s schema once it compiles and,
//! in mode `backward` (the default), once [`compat::backward`] finds nothing in it that breaks
//! the previous version. The latest version of each type is then enforced at three doors:
//! - ingress (`POST /v1/streams/{s}/events`, so `eddy publish` too): an event whose `data` does
//!   not match is refused with 400, naming the JSON path and the rule, and nothing is added;
//! - a function's `publish`: the call fails in the guest with `invalid: …`;
//! - a stream trigger with `validate = true`: an entry written past ingress (by `redis-cli`,
//!   say) that does not match is dead-lettered with reason `invalid` without running the
//!   function.
//!
//! A type with no schema is not checked. Each host and API keeps compiled copies of the latest
//! versions and reloads them when the generation counter moves, which every change bumps: one
//! `GET` a second per host, nothing per event beyond the validation itself.
//!
//! Keys (one hash tag, so a put's script sees them all): `eddy:{eddy:schemas}:index` (type →
//! latest version, mode and time), `eddy:{eddy:schemas}:v:<type>` (version → schema text) and
//! `eddy:{eddy:schemas}:generation`.

pub mod compat;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::engine::{OnceClaim, PublishError, PublishRequest, Publisher};

/// Largest schema accepted, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Most event types with a schema.
pub const MAX_SCHEMA_TYPES: usize = 10_000;
/// Most versions kept per type.
pub const MAX_SCHEMA_VERSIONS: u32 = 1_000;
/// How often a host looks for schema changes.
pub const SCHEMA_POLL: Duration = Duration::from_secs(1);
/// Validation errors named in one refusal at most.
const MAX_REPORTED: usize = 5;

const INDEX_KEY: &str = "eddy:{eddy:schemas}:index";
const GENERATION_KEY: &str = "eddy:{eddy:schemas}:generation";

fn versions_key(event_type: &str) -> String {
    format!("eddy:{{eddy:schemas}}:v:{event_type}")
}

/// How a new version must relate to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compatibility {
    /// Nothing valid before becomes invalid, nothing required before becomes optional.
    #[default]
    Backward,
    /// Any new version is accepted.
    None,
}

/// What the index says of one type's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaInfo {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its latest version, from 1.
    pub version: u32,
    /// The mode the latest version was put with (and the next is checked with).
    pub compatibility: Compatibility,
    /// When the latest version was put (ms since the Unix epoch).
    pub updated_ms: i64,
}

/// Why a schema operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The event type or the schema document is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The new version breaks the previous one.
    #[error("version {version} of {event_type:?} is not backward compatible with version {previous}: {}", .breaks.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Incompatible {
        /// The type.
        event_type: String,
        /// The version it would have been.
        version: u32,
        /// The version it breaks.
        previous: u32,
        /// What breaks.
        breaks: Vec<compat::Break>,
    },
    /// Too many types or versions.
    #[error("{0}")]
    Full(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Why an event's data does not match its type's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The event type.
    pub event_type: String,
    /// The schema version checked against.
    pub version: u32,
    /// Each failure: JSON path in the data, the rule (schema keyword), what is wrong.
    pub failures: Vec<(String, String, String)>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data does not match the schema of {:?} (version {}): ",
            self.event_type, self.version
        )?;
        let parts: Vec<String> = self
            .failures
            .iter()
            .map(|(path, rule, message)| {
                let path = if path.is_empty() { "/" } else { path };
                format!("at {path}, rule `{rule}`: {message}")
            })
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl Invalid {
    /// The first failure's JSON path (`/` for the whole data).
    pub fn path(&self) -> &str {
        self.failures
            .first()
            .map(|(p, ..)| if p.is_empty() { "/" } else { p.as_str() })
            .unwrap_or("/")
    }
}

/// A schema version compiled for validation.
pub struct Compiled {
    /// What the index says of it.
    pub info: SchemaInfo,
    validator: jsonschema::Validator,
}

/// Compiles a schema document; the error says what is wrong with it.
fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| format!("not a valid JSON Schema: {e}"))
}

impl Compiled {
    /// Checks `data` (JSON text) against the schema.
    pub fn check(&self, data: &[u8]) -> Result<(), Invalid> {
        let invalid = |failures| Invalid {
            event_type: self.info.event_type.clone(),
            version: self.info.version,
            failures,
        };
        let value: Value = serde_json::from_slice(data).map_err(|e| {
            invalid(vec![(
                String::new(),
                "json".to_owned(),
                format!("data is not JSON: {e}"),
            )])
        })?;
        let failures: Vec<(String, String, String)> = self
            .validator
            .iter_errors(&value)
            .take(MAX_REPORTED)
            .map(|error| {
                let rule = error
                    .schema_path()
                    .as_str()
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                (
                    error.instance_path().as_str().to_owned(),
                    rule,
                    // Masked: the message names the rule, not the producer's data.
                    error.masked().to_string(),
                )
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(invalid(failures))
        }
    }
}

/// The latest compiled schema of every type, as a host last read them; `None` until the
/// first read succeeds (nothing may pass unchecked meanwhile: see [`loaded`]).
pub type SchemaView = watch::Receiver<Option<Arc<HashMap<String, Arc<Compiled>>>>>;

/// Whether the schemas have been read at least once: until then the doors refuse or hold
/// events (503 at ingress, `unavailable` to a publish, pending for a validating trigger)
/// rather than let them through unchecked.
pub fn loaded(view: &SchemaView) -> bool {
    view.borrow().is_some()
}

/// Checks `data` of `event_type` against its schema in `view`, if it has one. Data of a type
/// with a schema must be JSON: another `content_type` would let a producer slip anything past
/// the schema, so it is refused too.
pub fn check(
    view: &SchemaView,
    event_type: &str,
    content_type: Option<&str>,
    data: &[u8],
) -> Result<(), Invalid> {
    let schema = view
        .borrow()
        .as_ref()
        .and_then(|all| all.get(event_type).cloned());
    let Some(schema) = schema else {
        return Ok(());
    };
    let content_type = content_type.unwrap_or(crate::event::DEFAULT_CONTENT_TYPE);
    if !crate::event::is_json_content_type(content_type) {
        return Err(Invalid {
            event_type: event_type.to_owned(),
            version: schema.info.version,
            failures: vec![(
                String::new(),
                "datacontenttype".to_owned(),
                format!(
                    "the type has a schema, so its data must be JSON (application/json), not \
                     {content_type:?}"
                ),
            )],
        });
    }
    schema.check(data)
}

/// KEYS: index, versions, generation. ARGV: type, expected latest (0: none), schema, info
/// JSON. Writes the next version if the latest is still the one expected; returns 1, or 0.
static PUT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local current = redis.call('HGET', KEYS[1], ARGV[1])
        local latest = 0
        if current then latest = cjson.decode(current)['version'] end
        if latest ~= tonumber(ARGV[2]) then return 0 end
        redis.call('HSET', KEYS[2], latest + 1, ARGV[3])
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
        redis.call('INCR', KEYS[3])
        return 1
        ",
    )
});

/// The latest info of `event_type`, if it has a schema.
pub async fn info<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    event_type: &str,
) -> Result<Option<SchemaInfo>, SchemaError> {
    let raw: Option<String> = redis::cmd("HGET")
        .arg(INDEX_KEY)
        .arg(event_type)
        .query_async(conn)
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Every type's latest info, sorted by type.
pub async fn list<C: redis::aio::ConnectionLike>(
    conn: &mut C,
) -> Result<Vec<SchemaInfo>, SchemaError> {
    let raw: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(INDEX_KEY)
        .query_async(conn)
        .await?;
    let mut out: Vec<SchemaInfo> = raw
        .values()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    out.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    Ok(out)
}

/// Version `version` (the latest if `None`) of `event_type`'s schema, with the latest info.
pub async fn get<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    event_type: &str,
    version: Option<u32>,
) -> Result<Option<(SchemaInfo, u32, Value)>, SchemaError> {
    let Some(info) = info(conn, event_type).await? else {
        return Ok(None);
    };
    let version = version.unwrap_or(info.version);
    let text: Option<String> = redis::cmd("HGET")
        .arg(versions_key(event_type))
        .arg(version)
        .query_async(conn)
        .await?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .map(|schema| (info, version, schema)))
}

/// Stores `schema` as the next version of `event_type`'s schema, checked for `mode` against
/// the latest (its own mode if `None`). Putting the latest version again changes nothing.
pub async fn put<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    event_type: &str,
    schema: &[u8],
    mode: Option<Compatibility>,
) -> Result<SchemaInfo, SchemaError> {
    crate::names::event_type(event_type)
        .map_err(|e| SchemaError::Invalid(format!("event type {e}")))?;
    if schema.len() > MAX_SCHEMA_BYTES {
        return Err(SchemaError::Invalid(format!(
            "schema of {} bytes is over the {MAX_SCHEMA_BYTES}-byte limit",
            schema.len()
        )));
    }
    let document: Value = serde_json::from_slice(schema)
        .map_err(|e| SchemaError::Invalid(format!("schema is not JSON: {e}")))?;
    if !document.is_object() && !document.is_boolean() {
        return Err(SchemaError::Invalid(
            "schema must be a JSON object (or true/false)".to_owned(),
        ));
    }
    compile(&document).map_err(SchemaError::Invalid)?;
    let previous = get(conn, event_type, None).await?;
    let (expected, mode) = match &previous {
        None => {
            let count: usize = redis::cmd("HLEN").arg(INDEX_KEY).query_async(conn).await?;
            if count >= MAX_SCHEMA_TYPES {
                return Err(SchemaError::Full(format!(
                    "{MAX_SCHEMA_TYPES} event types have schemas already: remove one first"
                )));
            }
            (0, mode.unwrap_or_default())
        }
        Some((info, _, old)) => {
            if *old == document {
                return Ok(info.clone());
            }
            if info.version >= MAX_SCHEMA_VERSIONS {
                return Err(SchemaError::Full(format!(
                    "{event_type:?} has {MAX_SCHEMA_VERSIONS} versions already: remove the type \
                     and put its schema again"
                )));
            }
            // The flag is for this put; the type keeps the mode its first version set.
            if mode.unwrap_or(info.compatibility) == Compatibility::Backward {
                let breaks = compat::backward(old, &document);
                if !breaks.is_empty() {
                    return Err(SchemaError::Incompatible {
                        event_type: event_type.to_owned(),
                        version: info.version + 1,
                        previous: info.version,
                        breaks,
                    });
                }
            }
            (info.version, info.compatibility)
        }
    };
    let info = SchemaInfo {
        event_type: event_type.to_owned(),
        version: expected + 1,
        compatibility: mode,
        updated_ms: chrono::Utc::now().timestamp_millis(),
    };
    let mut invocation = PUT.prepare_invoke();
    invocation
        .key(INDEX_KEY)
        .key(versions_key(event_type))
        .key(GENERATION_KEY)
        .arg(event_type)
        .arg(expected)
        .arg(serde_json::to_string(&document).expect("a value serializes"))
        .arg(serde_json::to_string(&info).expect("info serializes"));
    let written: i64 = invocation.invoke_async(conn).await?;
    if written == 0 {
        return Err(SchemaError::Invalid(format!(
            "another version of {event_type:?} was put at the same time: look at it, then put \
             yours again"
        )));
    }
    Ok(info)
}

/// Removes every version of `event_type`'s schema. False if it had none.
pub async fn remove<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    event_type: &str,
) -> Result<bool, SchemaError> {
    let (removed, _, _): (i64, i64, i64) = redis::pipe()
        .atomic()
        .cmd("HDEL")
        .arg(INDEX_KEY)
        .arg(event_type)
        .cmd("DEL")
        .arg(versions_key(event_type))
        .cmd("INCR")
        .arg(GENERATION_KEY)
        .query_async(conn)
        .await?;
    Ok(removed == 1)
}

/// Reads and compiles the latest version of every type.
async fn load<C: redis::aio::ConnectionLike>(
    conn: &mut C,
) -> Result<HashMap<String, Arc<Compiled>>, SchemaError> {
    let mut out = HashMap::new();
    for info in list(conn).await? {
        let Some((info, _, schema)) = get(conn, &info.event_type, None).await? else {
            continue;
        };
        match compile(&schema) {
            Ok(validator) => {
                out.insert(
                    info.event_type.clone(),
                    Arc::new(Compiled { info, validator }),
                );
            }
            Err(error) => {
                tracing::warn!(event_type = %info.event_type, %error, "a stored schema does not compile; not enforced")
            }
        }
    }
    Ok(out)
}

/// Loads the schemas, then reloads them whenever the generation counter moves (looked at every
/// [`SCHEMA_POLL`]) until `stop`. A failed read keeps the last copy.
pub async fn watch(broker: &Broker, stop: CancellationToken) -> SchemaView {
    let mut conn = broker.shared();
    let mut seen: Option<i64> = None;
    let first = match generation(&mut conn).await {
        Ok(g) => match load(&mut conn).await {
            Ok(all) => {
                seen = Some(g);
                Some(Arc::new(all))
            }
            Err(error) => {
                tracing::warn!(%error, "loading event schemas failed; events of any type are \
                    held until they load");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "loading event schemas failed; events of any type are held \
                until they load");
            None
        }
    };
    let (sender, view) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            if !crate::backoff::sleep_or_cancel(SCHEMA_POLL, &stop).await {
                return;
            }
            let Ok(now) = generation(&mut conn).await else {
                continue;
            };
            if seen == Some(now) {
                continue;
            }
            match load(&mut conn).await {
                Ok(all) => {
                    seen = Some(now);
                    sender.send_replace(Some(Arc::new(all)));
                }
                Err(error) => tracing::warn!(%error, "reloading event schemas failed"),
            }
        }
    });
    view
}

async fn generation<C: redis::aio::ConnectionLike>(conn: &mut C) -> redis::RedisResult<i64> {
    let g: Option<i64> = redis::cmd("GET")
        .arg(GENERATION_KEY)
        .query_async(conn)
        .await?;
    Ok(g.unwrap_or(0))
}

/// Refuses a function's publish whose data does not match its type's schema, passing the rest
/// on.
pub struct Validating {
    inner: Arc<dyn Publisher>,
    view: SchemaView,
}

impl Validating {
    /// Wraps `inner`, checking against the schemas in `view`.
    pub fn new(inner: Arc<dyn Publisher>, view: SchemaView) -> Self {
        Self { inner, view }
    }
}

#[async_trait::async_trait]
impl Publisher for Validating {
    async fn claim_once(&self, claim: &OnceClaim) -> Result<bool, PublishError> {
        self.inner.claim_once(claim).await
    }

    async fn settle_once(&self, claims: &[OnceClaim], succeeded: bool) {
        self.inner.settle_once(claims, succeeded).await
    }

    async fn publish(&self, request: PublishRequest) -> Result<String, PublishError> {
        if !loaded(&self.view) {
            return Err(PublishError::Unavailable(
                "the event schemas are not loaded yet on this host".to_owned(),
            ));
        }
        check(&self.view, &request.event_type, None, &request.data)
            .map_err(|invalid| PublishError::Invalid(invalid.to_string()))?;
        self.inner.publish(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiled(schema: Value) -> Compiled {
        Compiled {
            info: SchemaInfo {
                event_type: "OrderPlaced".into(),
                version: 2,
                compatibility: Compatibility::Backward,
                updated_ms: 0,
            },
            validator: compile(&schema).unwrap(),
        }
    }

    #[test]
    fn a_failure_names_the_path_and_the_rule_not_the_data() {
        let schema = compiled(json!({
            "type": "object",
            "required": ["orderId"],
            "properties": {"orderId": {"type": "string"}, "items": {"type": "array",
                "items": {"type": "object", "properties": {"qty": {"minimum": 1}}}}}
        }));
        assert!(schema.check(br#"{"orderId":"o-1"}"#).is_ok());
        let invalid = schema
            .check(br#"{"orderId":"secret-123","items":[{"qty":0}]}"#)
            .unwrap_err();
        assert_eq!(invalid.path(), "/items/0/qty");
        let text = invalid.to_string();
        assert!(text.contains("rule `minimum`"), "{text}");
        assert!(text.contains("(version 2)"), "{text}");
        let invalid = schema.check(br#"{"orderId":42}"#).unwrap_err();
        assert_eq!(invalid.failures[0].0, "/orderId");
        assert_eq!(invalid.failures[0].1, "type");
        let invalid = schema.check(b"{}").unwrap_err();
        assert_eq!(invalid.failures[0].1, "required");
        assert!(schema.check(b"not json").is_err());
    }

    #[test]
    fn a_schema_that_does_not_compile_or_reaches_out_is_refused() {
        assert!(compile(&json!({"type": "no-such-type"})).is_err());
        // No remote or file references: a schema must not make a host reach anything.
        assert!(compile(&json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(compile(&json!({"$ref": "file:///etc/passwd"})).is_err());
    }
}
