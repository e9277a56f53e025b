//! The function manifest, `eddy.toml`: what to run, with which limits and settings, on which
//! triggers.
//!
//! ```toml
//! name = "order-confirmation"            # required: lowercase letters, digits, - and _
//! component = "order_confirmation.wasm"  # required: relative to this file
//! publish = ["emails"]       # streams the function may publish to; default none
//!
//! [limits]            # each has a ceiling; see `engine::limits`
//! memory = "64MiB"    # default 64MiB, at most 4GiB
//! timeout = "30s"     # default 30s, wall time of one invocation, at most 15m
//! output = "64KiB"    # default 64KiB of captured stdout, stderr and logs, at most 16MiB
//! publish_count = 1000      # events one invocation may publish, at most 100000
//! publish_bytes = "16MiB"   # their data in all, at most 1GiB
//! http_response_bytes = "10MiB"  # one outbound response body, at most 256MiB
//! http_concurrency = 16     # outbound requests in flight per invocation, 1..=256
//! kv_write_bytes = "16MiB"  # key-value bytes one invocation may write, at most 1GiB
//! max_concurrency = 10      # its events in flight across every host, 1..=100000; default none
//! rate = "100/s"            # its events started per second across every host ("6000/m",
//!                           # "10/h"); default none (see streams::limits)
//!
//! [outbound]
//! http = ["https://api.mailgun.net", "http://127.0.0.1:*"]  # origins it may call; default none
//!
//! [keyvalue]
//! shared = ["inventory"]    # bucket names shared with other functions; others are its own
//!
//! [secrets]                 # resolved by each host at load; never stored or shown
//! mailgun_key = "env:MAILGUN_KEY"      # or "file:/run/secrets/mailgun"
//!
//! [config]            # read by the function with config::get; values are strings
//! email_stream = "emails"   # keys starting with `eddy.` are Eddy's own
//!
//! [event_bus]         # where `publishEvent(type, data)` publishes (OpenWhisk-shaped functions)
//! default = "orders"          # the stream for any type the table below does not list
//! types = { "inventory.low" = "alerts" }   # a type and its stream; each must be in `publish`
//!
//! [[triggers.stream]]
//! stream = "orders"           # required
//! group = "order-confirmation" # default: the function's name
//! types = ["OrderPlaced"]     # default: every type; other types are acked untouched
//! start = "latest"            # or "earliest": a new group replays the stream's history
//! batch = 32                  # entries per read, 1..=1000
//! concurrency = 32            # events in flight per host (running or queued), 1..=256
//! dead_letter = "orders.dlq"  # default: <stream>.dlq
//! instance = "per-event"      # or "per-batch": one instance for a read batch, for throughput
//! batch_window = "0s"         # wait up to this for a read to fill its batch, at most 10s
//! validate = false           # true: an event whose data does not match its type's schema
//!                             # is dead-lettered as "invalid" unrun (see `schemas`)
//!
//! ordering = "none"           # or "key": one event per key at a time, in stream order, on
//!                             # every host and through retries (see streams::order)
//! key = "partitionkey"        # with ordering = "key": an attribute or extension, or a data
//!                             # path such as "data.orderId"; default partitionkey, then subject
//! unkeyed = "unordered"       # an event with no key: "unordered" runs it at once, "reject"
//!                             # dead-letters it
//!
//! [triggers.stream.retention]  # what the stream keeps (see `retention`); default 7 days
//! max_age = "7d"              # 1s..=3650d, by entry time
//! max_len = 1000000           # at most this many entries
//!
//! [triggers.stream.breaker]    # stop the trigger while it mostly fails (see streams::flow)
//! failure_rate = 0.5          # failed share that trips it, above 0.0 up to 1.0
//! window = "1m"               # outcomes counted over this, 1s..=1h
//! min_events = 20             # outcomes needed in the window first, 1..=1000000
//! cool_down = "30s"           # open this long, then one probe event, 1s..=1h
//!
//! [triggers.stream.retry]      # the same table works under [[triggers.cron]]
//! max_attempts = 5            # attempts in all, 1..=100
//! initial = "1s"              # delay before the second attempt
//! factor = 2.0                # growth per attempt, 1.0..=100.0
//! max = "5m"                  # cap on one delay
//! jitter = 0.5                # random fraction taken off each delay, 0.0..=1.0
//!
//! [[triggers.cron]]
//! name = "daily-report"       # default: the function's name; unique per host
//! schedule = "0 0 0 * * *"    # required: 6 fields with seconds (5 fields: second 0)
//! timezone = "UTC"            # IANA name, default UTC
//! catch_up = "latest"         # missed ticks when no host ran: "none", "latest" or "all" (≤100)
//! late_grace = "60s"          # a tick later than this is missed (catch_up decides), at most 1h
//! dead_letter = "reports.dlq"  # default: <tick stream>.dlq, eddy:cron:daily-report.dlq
//! ```
//!
//! A cron trigger ticks into the internal stream `eddy:cron:<name>`, which the function reads
//! through a stream trigger of its own: the `retry` table and `dead_letter` work as above.
//!
//! Unknown fields are errors, so a typo never silently means a default. Every error names the
//! file, the field, the value and what was expected. Names follow [`crate::names`]: a stream,
//! group, dead-letter or publish name may not start with `eddy:` (Eddy's own keys) nor hold
//! braces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::{
    AllowList, FunctionSpec, Limits, LimitsSettings, Origin, SecretSource, Secrets,
};
use crate::names::{self, BucketName, FunctionName, NameError, StreamName};
use crate::settings::Expected;
use crate::settings::{self, FieldError};
use crate::triggers::cron::Ticker;
use crate::triggers::cron::settings::{self as cron_settings, CronTriggerSettings};
use crate::triggers::streams::limits::ClusterLimits;
use crate::triggers::streams::{StreamTriggerConfig, StreamTriggerSettings};

/// The file name looked for in a folder.
pub const MANIFEST_FILE: &str = "eddy.toml";
/// The prefix of the `[config]` keys Eddy sets itself, refused in a manifest's `[config]`.
pub const RESERVED_CONFIG_PREFIX: &str = "eddy.";
/// The config key holding `[event_bus] default`, read by the SDKs' `publishEvent`.
pub const EVENT_BUS_DEFAULT_KEY: &str = "eddy.event_bus.default";
/// The prefix of the config keys holding `[event_bus.types]`, one per type.
pub const EVENT_BUS_TYPE_PREFIX: &str = "eddy.event_bus.type.";
/// The config key listing the names of the function's other config keys and of its secrets,
/// as JSON (`{"config": [...], "secrets": [...]}`): the SDKs' OpenWhisk shape passes them to
/// `main` as default parameters, as OpenWhisk does with an action's parameters.
pub const PARAMS_KEY: &str = "eddy.params";
/// Most entries in `[event_bus.types]`.
const MAX_EVENT_BUS_TYPES: usize = 1000;

/// Hands `[event_bus]` to the function as config keys, which is how the SDKs' `publishEvent`
/// reads it: the routing is data of the function's own, with no host call of its own, and the
/// host still checks every publish against `publish`.
fn event_bus_config(
    v: &Validator<'_>,
    bus: &RawEventBus,
    publish: &[String],
    config: &mut BTreeMap<String, String>,
) -> Result<(), ManifestError> {
    let allowed = |field: &str, stream: &str| {
        v.name(field, stream, names::stream(stream))?;
        v.check(
            field,
            stream,
            publish.iter().any(|p| p == stream),
            "a stream listed in `publish` too (the host allows publishing only there)",
        )
    };
    if let Some(stream) = &bus.default {
        allowed("event_bus.default", stream)?;
        config.insert(EVENT_BUS_DEFAULT_KEY.to_owned(), stream.clone());
    }
    v.check(
        "event_bus.types",
        &bus.types.len().to_string(),
        bus.types.len() <= MAX_EVENT_BUS_TYPES,
        &format!("at most {MAX_EVENT_BUS_TYPES} entries"),
    )?;
    for (event_type, stream) in &bus.types {
        let field = format!("event_bus.types.{event_type:?}");
        v.name(&field, event_type, names::event_type(event_type))?;
        allowed(&field, stream)?;
        config.insert(
            format!("{EVENT_BUS_TYPE_PREFIX}{event_type}"),
            stream.clone(),
        );
    }
    Ok(())
}
/// Largest manifest file read: 256 KiB, far more than any real one.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from.
    pub path: PathBuf,
    /// The function's name.
    pub name: FunctionName,
    /// The component file, resolved against the manifest's folder.
    pub component: PathBuf,
    /// Its limits.
    pub limits: Limits,
    /// Its settings.
    pub config: BTreeMap<String, String>,
    /// The streams it may publish to (none by default).
    pub publish: Vec<StreamName>,
    /// Its stream triggers, including those reading its cron triggers' tick streams.
    pub streams: Vec<StreamTriggerConfig>,
    /// Its cron triggers' tickers.
    pub tickers: Vec<Ticker>,
    /// The origins its outbound HTTP may reach.
    pub outbound: AllowList,
    /// The bucket names it shares with other functions.
    pub shared_buckets: Vec<BucketName>,
    /// Where each of its secrets comes from, by name.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Whether it came from the registry (deployed through the API) rather than a file the
    /// host's operator gave: such a manifest's secrets are read under stricter rules.
    pub deployed: bool,
}

impl Manifest {
    /// Its component's bytes, read with the engine's cap; the error names the manifest and
    /// the component file.
    pub fn read_component(&self) -> anyhow::Result<Vec<u8>> {
        use anyhow::Context as _;
        crate::inputs::read_capped(&self.component, crate::engine::MAX_COMPONENT_BYTES as u64)
            .with_context(|| {
                format!(
                    "{}: cannot read component {}",
                    self.path.display(),
                    self.component.display()
                )
            })
    }

    /// The streams it may publish to, as the engine's allow-list takes them.
    pub fn publish_streams(&self) -> Vec<String> {
        self.publish.iter().map(|s| s.to_string()).collect()
    }

    /// What the engine needs to load this function on this host: name, limits, settings,
    /// outbound origins, shared buckets, secrets (resolved here, now), and the deployed
    /// `version` if it came from the registry. A secret this host cannot resolve is an error
    /// naming the secret and its source. A deployed manifest's secrets come only from where
    /// [`SecretSource::resolve_deployed`] allows, files under `secret_dirs`.
    pub fn function_spec(
        &self,
        version: Option<u32>,
        secret_dirs: &[PathBuf],
    ) -> Result<FunctionSpec, ManifestError> {
        let mut values = BTreeMap::new();
        for (name, source) in &self.secrets {
            let resolved = if self.deployed {
                source.resolve_deployed(secret_dirs)
            } else {
                source.resolve()
            };
            let value = resolved.map_err(|reason| ManifestError::Secret {
                path: self.path.clone(),
                name: name.clone(),
                origin: source.to_string(),
                reason,
            })?;
            values.insert(name.clone(), value);
        }
        Ok(FunctionSpec {
            name: self.name.to_string(),
            limits: self.limits,
            config: self.config.clone(),
            version,
            secrets: Secrets::new(values),
            outbound: self.outbound.clone(),
            shared_buckets: self.shared_buckets.iter().map(|b| b.to_string()).collect(),
        })
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{}: cannot read the manifest: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a field of the wrong type, or an unknown field.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field has a value outside what is accepted.
    #[error("{}: field `{field}` = {value}: expected {expected}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The field's dotted path, e.g. `triggers.stream[0].batch`.
        field: String,
        /// The value found.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A secret this host cannot resolve.
    #[error("{}: secret `{name}` from {origin}: {reason}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// The secret's name.
        name: String,
        /// Where it comes from (`env:VAR`, `file:/path`).
        origin: String,
        /// Why it cannot be read.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    component: String,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    triggers: RawTriggers,
    #[serde(default)]
    outbound: RawOutbound,
    #[serde(default)]
    keyvalue: RawKeyValue,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    event_bus: RawEventBus,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEventBus {
    default: Option<String>,
    #[serde(default)]
    types: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    #[serde(default)]
    http: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeyValue {
    #[serde(default)]
    shared: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<String>,
    timeout: Option<String>,
    output: Option<String>,
    publish_count: Option<i64>,
    publish_bytes: Option<String>,
    http_response_bytes: Option<String>,
    http_concurrency: Option<i64>,
    max_concurrency: Option<i64>,
    rate: Option<String>,
    kv_write_bytes: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    stream: Vec<StreamTriggerSettings>,
    #[serde(default)]
    cron: Vec<CronTriggerSettings>,
}

/// Reads and validates the manifest at `path` (a file, or a folder holding `eddy.toml`).
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let path = if path.is_dir() {
        path.join(MANIFEST_FILE)
    } else {
        path.to_path_buf()
    };
    let text = crate::inputs::read_capped_text(&path, MAX_MANIFEST_BYTES).map_err(|source| {
        ManifestError::Read {
            path: path.clone(),
            source,
        }
    })?;
    parse(&path, &text)
}

/// Finds the manifests under `path`: the file itself, or every `eddy.toml` in the folder and
/// its direct subfolders, sorted.
pub fn discover(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    if path.join(MANIFEST_FILE).is_file() {
        found.push(path.join(MANIFEST_FILE));
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?.path();
        if entry.is_dir() && entry.join(MANIFEST_FILE).is_file() {
            found.push(entry.join(MANIFEST_FILE));
        } else if entry.is_file()
            && entry.extension().is_some_and(|e| e == "toml")
            && entry.file_name().is_some_and(|n| n != MANIFEST_FILE)
        {
            found.push(entry);
        }
    }
    found.sort();
    Ok(found)
}

/// Validates manifest `text` read from `path` (used to resolve the component path).
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    parse_with(path, text, true)
}

/// Validates the manifest of a deployed function: the component comes from the registry, so its
/// path is neither expanded nor resolved.
pub fn parse_deployed(name: &str, text: &str) -> Result<Manifest, ManifestError> {
    parse_with(
        &PathBuf::from(format!("registry:{name}/eddy.toml")),
        text,
        false,
    )
}

fn parse_with(path: &Path, text: &str, resolve_component: bool) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })?;
    let v = Validator { path };

    let name = settings::named("name", raw.name.clone(), FunctionName::new).map_err(|e| v.at(e))?;
    v.check(
        "component",
        &raw.component,
        !raw.component.trim().is_empty(),
        "the path of a .wasm component, relative to the manifest",
    )?;
    let component = if resolve_component {
        let expanded = expand_env(&raw.component, |name| std::env::var(name).ok())
            .map_err(|expected| v.error("component", &format!("{:?}", raw.component), &expected))?;
        path.parent().unwrap_or(Path::new(".")).join(expanded)
    } else {
        PathBuf::from(&raw.component)
    };

    let limits = Limits::from_settings(&LimitsSettings {
        memory: raw.limits.memory.clone(),
        timeout: raw.limits.timeout.clone(),
        output: raw.limits.output.clone(),
        publish_count: raw.limits.publish_count,
        publish_bytes: raw.limits.publish_bytes.clone(),
        http_response_bytes: raw.limits.http_response_bytes.clone(),
        http_concurrency: raw.limits.http_concurrency,
        kv_write_bytes: raw.limits.kv_write_bytes.clone(),
    })
    .map_err(|e| v.at(e))?;
    let cluster =
        ClusterLimits::from_settings(raw.limits.max_concurrency, raw.limits.rate.as_deref())
            .map_err(|e| v.at(e))?;
    let mut origins = Vec::new();
    for (i, text) in raw.outbound.http.iter().enumerate() {
        let origin = Origin::parse(text).map_err(|expected| {
            v.error(
                &format!("outbound.http[{i}]"),
                &format!("{text:?}"),
                &expected,
            )
        })?;
        origins.push(origin);
    }
    let mut shared_buckets: Vec<BucketName> = Vec::new();
    for (i, bucket) in raw.keyvalue.shared.into_iter().enumerate() {
        let field = format!("keyvalue.shared[{i}]");
        let bucket = settings::named(&field, bucket, BucketName::new).map_err(|e| v.at(e))?;
        v.check(
            &field,
            &bucket,
            !shared_buckets.contains(&bucket),
            "a bucket name not already listed",
        )?;
        shared_buckets.push(bucket);
    }
    let mut secrets = BTreeMap::new();
    for (name, text) in &raw.secrets {
        v.name(&format!("secrets.{name}"), name, names::identifier(name))?;
        let mut source = SecretSource::parse(text).map_err(|expected| {
            v.error(&format!("secrets.{name}"), &format!("{text:?}"), &expected)
        })?;
        // A relative file is found next to the manifest, as its component is.
        if let SecretSource::File(file) = &mut source
            && resolve_component
            && file.is_relative()
        {
            *file = path.parent().unwrap_or(Path::new(".")).join(&*file);
        }
        secrets.insert(name.clone(), source);
    }

    let mut config = BTreeMap::new();
    for (key, value) in raw.config {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(v.error(
                    &format!("config.{key}"),
                    &other.to_string(),
                    "a string, number or boolean",
                ));
            }
        };
        if key.starts_with(RESERVED_CONFIG_PREFIX) {
            return Err(v.error(
                &format!("config.{key}"),
                &text,
                &format!(
                    "a key not starting with `{RESERVED_CONFIG_PREFIX}` (Eddy's own settings)"
                ),
            ));
        }
        config.insert(key, text);
    }
    let params = serde_json::json!({
        "config": config.keys().collect::<Vec<_>>(),
        "secrets": secrets.keys().collect::<Vec<_>>(),
    });
    event_bus_config(&v, &raw.event_bus, &raw.publish, &mut config)?;
    if !config.is_empty() || !secrets.is_empty() {
        config.insert(PARAMS_KEY.to_owned(), params.to_string());
    }

    let mut streams = Vec::new();
    for (i, t) in raw.triggers.stream.into_iter().enumerate() {
        let at = format!("triggers.stream[{i}]");
        streams.push(
            StreamTriggerConfig::from_settings(&at, t, &raw.name, cluster).map_err(|e| v.at(e))?,
        );
    }

    let mut publish = Vec::with_capacity(raw.publish.len());
    for (i, stream) in raw.publish.into_iter().enumerate() {
        publish.push(
            settings::named(&format!("publish[{i}]"), stream, StreamName::new)
                .map_err(|e| v.at(e))?,
        );
    }

    let mut tickers: Vec<Ticker> = Vec::new();
    for (i, t) in raw.triggers.cron.into_iter().enumerate() {
        let at = format!("triggers.cron[{i}]");
        let (ticker, trigger) = cron_settings::from_settings(&at, t, &raw.name, cluster, &tickers)
            .map_err(|e| v.at(e))?;
        streams.push(trigger);
        tickers.push(ticker);
    }

    Ok(Manifest {
        path: path.to_path_buf(),
        name,
        component,
        limits,
        config,
        publish,
        streams,
        tickers,
        outbound: AllowList::new(origins),
        shared_buckets,
        secrets,
        deployed: !resolve_component,
    })
}

/// Expands `${NAME}` and `${NAME:-default}` in `text` with `lookup`, so a manifest can point
/// at a build directory that differs between machines. The error says what was expected.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Expected> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a closing `}` after `${`".to_owned())?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Expected::from(format!(
                "a variable name of letters, digits and _ in `${{{inner}}}`"
            )));
        }
        match lookup(name)
            .filter(|v| !v.is_empty())
            .or(default.map(str::to_owned))
        {
            Some(value) => out.push_str(&value),
            None => {
                return Err(Expected::from(format!(
                    "environment variable {name} to be set (or a default: `${{{name}:-PATH}}`)"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

struct Validator<'a> {
    path: &'a Path,
}

impl ManifestError {
    /// The field at fault, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl Validator<'_> {
    /// A section's refusal, in this file.
    fn at(&self, e: FieldError) -> ManifestError {
        ManifestError::Field {
            path: self.path.to_path_buf(),
            field: e.field,
            value: e.value,
            expected: e.expected,
        }
    }

    fn error(&self, field: &str, value: &str, expected: &str) -> ManifestError {
        self.at(settings::error(field, value, expected))
    }

    fn check(
        &self,
        field: &str,
        value: &str,
        ok: bool,
        expected: &str,
    ) -> Result<(), ManifestError> {
        settings::check(field, value, ok, expected).map_err(|e| self.at(e))
    }

    fn name(
        &self,
        field: &str,
        value: &str,
        verdict: Result<(), NameError>,
    ) -> Result<(), ManifestError> {
        settings::name(field, value, verdict).map_err(|e| self.at(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::delivery::RetryPolicy;
    use crate::triggers::cron::CatchUp;
    use crate::triggers::streams::order::{KeySource, Ordering, Unkeyed};
    use crate::triggers::streams::{DEFAULT_BATCH, DEFAULT_CONCURRENCY, Instance, Start};

    fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("/fns/f/eddy.toml"), text)
    }

    #[test]
    fn event_bus_routes_reach_the_function_as_config_within_publish() {
        let m = parse_str(
            "name = \"p\"\ncomponent = \"p.wasm\"\npublish = [\"orders\", \"alerts\"]\n\
             [config]\nregion = \"eu\"\n[event_bus]\ndefault = \"orders\"\n\
             [event_bus.types]\n\"inventory.low\" = \"alerts\"\n",
        )
        .unwrap();
        assert_eq!(m.config[EVENT_BUS_DEFAULT_KEY], "orders");
        assert_eq!(m.config["eddy.event_bus.type.inventory.low"], "alerts");
        assert_eq!(
            m.config[PARAMS_KEY],
            r#"{"config":["region"],"secrets":[]}"#
        );

        let err = parse_str(
            "name = \"p\"\ncomponent = \"p.wasm\"\npublish = [\"orders\"]\n\
             [event_bus.types]\n\"x\" = \"elsewhere\"\n",
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("event_bus.types.\"x\""), "{err}");
        assert!(err.to_string().contains("listed in `publish`"), "{err}");

        let err =
            parse_str("name = \"p\"\ncomponent = \"p.wasm\"\n[config]\n\"eddy.params\" = \"x\"\n")
                .unwrap_err();
        assert_eq!(err.field(), Some("config.eddy.params"), "{err}");

        // A manifest with no config, secrets or event bus gets no reserved keys.
        let m = parse_str("name = \"p\"\ncomponent = \"p.wasm\"\n").unwrap();
        assert!(m.config.is_empty());
    }

    #[test]
    fn a_minimal_manifest_gets_every_default() {
        let m = parse_str(
            "name = \"echo\"\ncomponent = \"echo.wasm\"\n[[triggers.stream]]\nstream = \"orders\"\n",
        )
        .unwrap();
        assert_eq!(m.component, Path::new("/fns/f/echo.wasm"));
        assert_eq!(m.limits, Limits::default());
        let t = &m.streams[0];
        assert_eq!(t.group, "echo");
        assert_eq!(t.dead_letter, "orders.dlq");
        assert_eq!(t.start, Start::Latest);
        assert_eq!(
            (t.batch, t.concurrency),
            (DEFAULT_BATCH, DEFAULT_CONCURRENCY)
        );
        assert_eq!(t.retry, RetryPolicy::default());
        assert!(t.handles(Some("Anything")));
    }

    #[test]
    fn every_field_is_read() {
        let m = parse_str(
            r#"
            name = "inv"
            component = "../x.wasm"
            [limits]
            memory = "8MiB"
            timeout = "250ms"
            output = "1KiB"
            [config]
            a = "b"
            n = 3
            [[triggers.stream]]
            stream = "orders"
            group = "g"
            types = ["OrderPlaced"]
            start = "earliest"
            batch = 5
            concurrency = 2
            dead_letter = "dead"
            [triggers.stream.retry]
            max_attempts = 3
            initial = "10ms"
            factor = 3.0
            max = "1s"
            jitter = 0.0
            "#,
        )
        .unwrap();
        assert_eq!(m.limits.memory_bytes, 8 << 20);
        assert_eq!(m.limits.timeout, Duration::from_millis(250));
        assert_eq!(m.limits.output_bytes, 1024);
        assert_eq!(m.config["n"], "3");
        let t = &m.streams[0];
        assert_eq!(t.start, Start::Earliest);
        assert!(!t.handles(Some("Other")) && !t.handles(None));
        assert_eq!(t.retry.max_attempts, 3);
        assert_eq!(t.retry.initial, Duration::from_millis(10));
        assert_eq!(t.dead_letter, "dead");
        assert_eq!(t.ordering, None);
    }

    #[test]
    fn ordering_by_key_reads_back_and_its_settings_need_it() {
        let head = "name = \"f\"\ncomponent = \"f.wasm\"\n[[triggers.stream]]\nstream = \"s\"\n";
        let m = parse_str(&format!("{head}ordering = \"key\"\n")).unwrap();
        let ordering = m.streams[0].ordering.clone().unwrap();
        assert_eq!(ordering.key, Ordering::default_key());
        assert_eq!(ordering.unkeyed, Unkeyed::Unordered);
        let m = parse_str(&format!(
            "{head}ordering = \"key\"\nkey = \"data.orderId\"\nunkeyed = \"reject\"\n"
        ))
        .unwrap();
        let ordering = m.streams[0].ordering.clone().unwrap();
        assert_eq!(ordering.key, vec![KeySource::Data(vec!["orderId".into()])]);
        assert_eq!(ordering.unkeyed, Unkeyed::Reject);
        for (text, field) in [
            ("ordering = \"fifo\"\n", "triggers.stream[0].ordering"),
            ("key = \"subject\"\n", "triggers.stream[0].key"),
            ("unkeyed = \"reject\"\n", "triggers.stream[0].unkeyed"),
            (
                "ordering = \"key\"\nkey = \"Data.x\"\n",
                "triggers.stream[0].key",
            ),
        ] {
            assert_eq!(field_error(&format!("{head}{text}")).0, field, "{text}");
        }
    }

    fn field_error(text: &str) -> (String, String) {
        match parse_str(text) {
            Err(ManifestError::Field { field, value, .. }) => (field, value),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let head = "name = \"f\"\ncomponent = \"f.wasm\"\n";
        let stream = "[[triggers.stream]]\nstream = \"s\"\n";
        assert_eq!(
            field_error("name = \"Bad Name\"\ncomponent = \"f.wasm\"\n").0,
            "name"
        );
        assert_eq!(
            field_error(&format!("{head}[limits]\nmemory = \"lots\"\n")),
            ("limits.memory".into(), "\"lots\"".into())
        );
        assert_eq!(
            field_error(&format!("{head}{stream}batch = 0\n")),
            ("triggers.stream[0].batch".into(), "0".into())
        );
        assert_eq!(
            field_error(&format!(
                "{head}{stream}[triggers.stream.retry]\njitter = 2.0\n"
            ))
            .0,
            "triggers.stream[0].retry.jitter"
        );
        assert_eq!(
            field_error(&format!("{head}[[triggers.stream]]\nstream = \"a b\"\n")).0,
            "triggers.stream[0].stream"
        );
        assert_eq!(
            field_error(&format!("{head}{stream}batch_window = \"20s\"\n")),
            ("triggers.stream[0].batch_window".into(), "\"20s\"".into())
        );
        assert!(parse_str(&format!("{head}{stream}instance = \"per-thread\"\n")).is_err());
        let m = parse_str(&format!(
            "{head}{stream}instance = \"per-batch\"\nbatch_window = \"50ms\"\n"
        ))
        .unwrap();
        assert_eq!(m.streams[0].instance, Instance::PerBatch);
        assert_eq!(m.streams[0].batch_window, Duration::from_millis(50));
    }

    #[test]
    fn a_cron_trigger_reads_its_own_tick_stream() {
        let m = parse_str(
            "name = \"report\"\ncomponent = \"r.wasm\"\n[[triggers.cron]]\nschedule = \"0 0 * * *\"\ntimezone = \"Europe/Paris\"\n[triggers.cron.retry]\nmax_attempts = 2\n",
        )
        .unwrap();
        assert_eq!(m.tickers.len(), 1);
        assert_eq!(m.tickers[0].name, "report");
        assert_eq!(m.tickers[0].catch_up, CatchUp::Latest);
        assert_eq!(m.tickers[0].schedule.timezone(), "Europe/Paris");
        let t = &m.streams[0];
        assert_eq!(t.stream, "eddy:cron:report");
        assert_eq!(t.group, "report");
        assert_eq!(t.dead_letter, "eddy:cron:report.dlq");
        assert_eq!(t.retry.max_attempts, 2);
        assert_eq!(t.start, Start::Earliest);
        let head = "name = \"f\"\ncomponent = \"f.wasm\"\n[[triggers.cron]]\n";
        assert_eq!(
            field_error(&format!("{head}schedule = \"61 * * * * *\"\n")).0,
            "triggers.cron[0].schedule"
        );
        assert_eq!(
            field_error(&format!(
                "{head}schedule = \"* * * * *\"\ntimezone = \"Nowhere\"\n"
            ))
            .0,
            "triggers.cron[0].timezone"
        );
        assert_eq!(
            field_error(&format!("{head}schedule = \"0 0 0 31 2 *\"\n")).0,
            "triggers.cron[0].schedule"
        );
        assert_eq!(
            field_error(&format!(
                "{head}schedule = \"* * * * *\"\nname = \"Bad!\"\n"
            ))
            .0,
            "triggers.cron[0].name"
        );
    }

    #[test]
    fn component_paths_expand_variables() {
        let lookup = |name: &str| (name == "DIR").then(|| "/build".to_owned());
        assert_eq!(
            expand_env("${DIR}/f.wasm", lookup).unwrap(),
            "/build/f.wasm"
        );
        assert_eq!(expand_env("${NOPE:-x}/f.wasm", lookup).unwrap(), "x/f.wasm");
        assert_eq!(expand_env("plain.wasm", lookup).unwrap(), "plain.wasm");
        assert!(
            expand_env("${NOPE}/f.wasm", lookup)
                .unwrap_err()
                .contains("NOPE")
        );
        assert!(expand_env("${DIR", lookup).is_err());
        assert!(expand_env("${A B}", lookup).is_err());
    }

    #[test]
    fn typos_and_wrong_types_are_syntax_errors() {
        for text in [
            "name = \"f\"\ncomponent = \"f.wasm\"\ntimeout = \"1s\"\n",
            "name = \"f\"\ncomponent = \"f.wasm\"\n[[triggers.stream]]\nstream = \"s\"\nstart = \"middle\"\n",
            "name = \"f\"\n",
            "name = 3\ncomponent = \"f.wasm\"\n",
        ] {
            assert!(
                matches!(parse_str(text), Err(ManifestError::Syntax { .. })),
                "{text}"
            );
        }
    }
}

/// Property tests: any text is a manifest or an error naming the file, and a manifest written
/// within every setting's range reads back with those settings.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::delivery::MAX_ATTEMPTS_LIMIT;
    use crate::triggers::streams::{MAX_BATCH, MAX_CONCURRENCY};

    proptest! {
        #[test]
        fn any_text_is_a_manifest_or_a_named_error(
            text in prop_oneof![
                ".{0,200}",
                ("[a-z_]{1,12}", ".{0,20}").prop_map(|(key, value)| format!(
                    "name = \"f\"\ncomponent = \"f.wasm\"\n[[triggers.stream]]\nstream = \"s\"\n{key} = {value}\n"
                )),
            ],
        ) {
            match parse(Path::new("fuzz/eddy.toml"), &text) {
                Ok(manifest) => prop_assert!(!manifest.name.is_empty()),
                Err(error) => prop_assert!(error.to_string().contains("fuzz/eddy.toml"), "{}", error),
            }
        }

        #[test]
        fn settings_within_range_read_back(
            name in "[a-z][a-z0-9_-]{0,30}",
            stream in "[A-Za-z0-9][A-Za-z0-9._-]{0,40}",
            batch in 1usize..=MAX_BATCH,
            concurrency in 1usize..=MAX_CONCURRENCY,
            attempts in 1u32..=MAX_ATTEMPTS_LIMIT,
            max_len in 1u64..1_000_000_000,
            days in 1u64..3650,
        ) {
            let text = format!(
                "name = {name:?}\ncomponent = \"f.wasm\"\n[[triggers.stream]]\nstream = {stream:?}\n\
                 batch = {batch}\nconcurrency = {concurrency}\n\
                 [triggers.stream.retention]\nmax_len = {max_len}\nmax_age = \"{days}d\"\n\
                 [triggers.stream.retry]\nmax_attempts = {attempts}\n"
            );
            let manifest = parse(Path::new("eddy.toml"), &text).unwrap();
            let trigger = &manifest.streams[0];
            prop_assert_eq!(&manifest.name, &name);
            prop_assert_eq!(&trigger.stream, &stream);
            prop_assert_eq!(&trigger.group, &name);
            prop_assert_eq!(trigger.batch, batch);
            prop_assert_eq!(trigger.concurrency, concurrency);
            prop_assert_eq!(trigger.retry.max_attempts, attempts);
            let retention = trigger.retention.unwrap();
            prop_assert_eq!(retention.max_len, Some(max_len));
            prop_assert_eq!(retention.max_age_ms, Some(days * 24 * 3600 * 1000));
        }
    }
}
