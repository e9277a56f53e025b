//! The registry over HTTP: upload components, deploy, list, show, roll back, delete.
//!
//! A deploy is two calls: `PUT /v1/components/{sha256}` with the component's bytes (stored once
//! per digest; uploading the same bytes again is a no-op), then `POST /v1/functions` with
//! `{"manifest": "<eddy.toml text>", "digest": "<sha256>"}`. Both validate before storing
//! anything: the digest matches, the component compiles and implements the function world, the
//! manifest is valid, so a failed deploy changes nothing and the previous version keeps serving.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ApiError, ApiState, json_response, read_body};
use crate::engine::{FunctionSpec, digest};
use crate::manifest;
use crate::registry;

use crate::engine::MAX_COMPONENT_BYTES;
/// Largest deploy request (the manifest) accepted.
const MAX_DEPLOY_BODY_BYTES: usize = 256 * 1024;
/// Default number of API invocations that may run at once on a host: 4. They share the
/// workers and the instance pool with the triggers, within this bound of their own.
pub const DEFAULT_API_INVOKE_CONCURRENCY: usize = 4;
/// Default number of API invocations that may wait for a turn: 16. Beyond, 429.
pub const DEFAULT_API_INVOKE_QUEUE: usize = 16;
/// Largest either bound may be set to.
pub const MAX_API_INVOKE_BOUND: usize = 1024;
/// Seconds a 429 asks the client to wait before trying again.
const RETRY_AFTER_SECONDS: u32 = 1;

/// The bound on API invocations: a few run, a few more wait, the rest are refused at once.
pub struct InvokeBound {
    running: Arc<Semaphore>,
    /// One permit per invocation running or waiting.
    admitted: Arc<Semaphore>,
    most: usize,
}

impl InvokeBound {
    /// `concurrency` running at once, `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Self {
            running: Arc::new(Semaphore::new(concurrency.max(1))),
            admitted: Arc::new(Semaphore::new(concurrency.max(1) + queue)),
            most: concurrency.max(1) + queue,
        }
    }

    /// Takes a turn: waits for one if there is room in the queue, else a 429.
    async fn turn(&self) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), ApiError> {
        let admission = self.admitted.clone().try_acquire_owned().map_err(|_| {
            ApiError::busy(
                format!(
                    "{} invocations are running or waiting on this host, its limit \
                     (--api-invoke-concurrency and --api-invoke-queue): try again shortly",
                    self.most
                ),
                RETRY_AFTER_SECONDS,
            )
        })?;
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .expect("the invocation semaphore is never closed");
        Ok((admission, permit))
    }
}

fn unavailable(error: redis::RedisError) -> ApiError {
    ApiError::redis("registry", &error)
}

fn check_name(name: &str) -> Result<(), ApiError> {
    crate::names::FunctionName::check(name)
        .map_err(|e| ApiError::bad_request("name", e.to_string()))
}

/// `PUT /v1/components/{digest}`.
pub async fn put_component(
    state: &ApiState,
    claimed: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if claimed.len() != 64
        || !claimed
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ApiError::bad_request(
            "digest",
            format!("{claimed:?}: expected 64 lowercase hex digits (sha256)"),
        ));
    }
    let (_, body) = read_body(state, request, MAX_COMPONENT_BYTES).await?;
    let actual = digest(&body);
    if actual != claimed {
        return Err(ApiError::bad_request(
            "digest",
            format!("the body's sha256 is {actual}, not {claimed}"),
        ));
    }
    let engine = state.engine.clone();
    let bytes = body.clone();
    tokio::task::spawn_blocking(move || engine.load(FunctionSpec::new("upload-check"), &bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::invalid("component", e.to_string()))?;
    let mut conn = state.broker.shared();
    let created = registry::put_component(&mut conn, &actual, &body)
        .await
        .map_err(unavailable)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &json!({ "digest": actual, "bytes": body.len(), "stored": created }),
    ))
}

/// `POST /v1/functions`.
pub async fn deploy(
    state: &ApiState,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (_, body) = read_body(state, request, MAX_DEPLOY_BODY_BYTES).await?;
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "body",
            format!("expected JSON {{\"manifest\", \"digest\"}}: {e}"),
        )
    })?;
    let text = request["manifest"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("manifest", "expected the manifest's TOML text"))?;
    let digest = request["digest"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("digest", "expected the component's sha256"))?;
    let manifest = manifest::parse_deployed("upload", text).map_err(|e| {
        let field = e
            .field()
            .map(|f| format!("manifest.{f}"))
            .unwrap_or_else(|| "manifest".to_owned());
        ApiError::invalid(
            &field,
            e.to_string().replace("registry:upload/eddy.toml: ", ""),
        )
    })?;
    if state.static_functions.iter().any(|n| *n == manifest.name) {
        return Err(ApiError::conflict(format!(
            "function {:?} is loaded from a host's --functions manifest; deploy it under another name",
            manifest.name
        )));
    }
    let mut conn = state.broker.shared();
    let bytes = registry::get_component(&mut conn, digest)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ApiError::bad_request(
                "digest",
                format!("no component {digest}: upload it first (PUT /v1/components/{digest})"),
            )
        })?;
    let spec = manifest
        .function_spec(None, state.engine.secret_dirs())
        .map_err(|e| {
            ApiError::invalid(
                "manifest.secrets",
                e.to_string().replace("registry:upload/eddy.toml: ", ""),
            )
        })?;
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || engine.load(spec, &bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::invalid("component", e.to_string()))?;
    if !request["canary"].is_null() {
        let canary = canary_settings(&request["canary"])?;
        // The canary shares the stable version's triggers: events are split inside them.
        let stable = registry::current(&mut conn, &manifest.name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                ApiError::bad_request(
                    "canary",
                    format!(
                        "function {:?} is not deployed: a canary needs a stable version to \
                         compare with (deploy without --canary first)",
                        manifest.name
                    ),
                )
            })?;
        let stable_manifest = manifest::parse_deployed(&manifest.name, &stable.manifest)
            .map_err(|e| ApiError::invalid("manifest", e.to_string()))?;
        if !crate::deployments::same_wiring(&stable_manifest, &manifest) {
            return Err(ApiError::bad_request(
                "canary",
                "a canary must keep the stable version's triggers and publish list (events are \
                 split between the two inside the same triggers): deploy this change without \
                 --canary",
            ));
        }
        let version = crate::canary::deploy(&mut conn, &manifest.name, digest, text, canary)
            .await
            .map_err(|e| {
                if e.code() == Some(crate::canary::CANARY_RUNNING) {
                    ApiError::conflict(format!(
                        "a canary of {:?} runs already: promote or roll it back first",
                        manifest.name
                    ))
                } else {
                    unavailable(e)
                }
            })?;
        let mut answer = describe(&manifest.name, &version, Some(stable.version));
        answer["canary"] = json!(true);
        return Ok(json_response(StatusCode::CREATED, &answer));
    }
    let version = registry::deploy(&mut conn, &manifest.name, digest, text)
        .await
        .map_err(|e| {
            if e.code() == Some(crate::canary::CANARY_RUNNING) {
                ApiError::conflict(format!(
                    "a canary of {:?} runs: promote it (eddy functions promote) or roll it \
                         back (eddy functions rollback) before deploying another version",
                    manifest.name
                ))
            } else {
                unavailable(e)
            }
        })?;
    Ok(json_response(
        StatusCode::CREATED,
        &describe(&manifest.name, &version, Some(version.version)),
    ))
}

/// Reads a deploy's `canary` settings: `{"percent": "10%", "window"?: "1m", "margin"?: 0.2,
/// "min_events"?: 20}`, each checked with its range.
fn canary_settings(value: &Value) -> Result<crate::canary::Canary, ApiError> {
    use crate::canary::*;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request(
            "canary",
            "expected an object such as {\"percent\": \"10%\"}",
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["percent", "window", "margin", "min_events"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(
            &format!("canary.{unknown}"),
            format!("unknown field {unknown:?}: expected percent, window, margin, min_events"),
        ));
    }
    let percent = match &fields.get("percent") {
        Some(Value::String(text)) => parse_percent(text),
        Some(Value::Number(n)) => parse_percent(&n.to_string()),
        _ => Err("expected a share such as \"10%\"".to_owned()),
    }
    .map_err(|e| ApiError::bad_request("canary.percent", e))?;
    let window = match fields.get("window") {
        None => DEFAULT_WINDOW,
        Some(v) => v
            .as_str()
            .and_then(|t| crate::units::parse_duration(t).ok())
            .filter(|d| d.as_secs() >= 1 && *d <= MAX_WINDOW && d.subsec_nanos() == 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "canary.window",
                    format!("{v}: expected whole seconds from \"1s\" to \"1h\""),
                )
            })?,
    };
    let margin = match fields.get("margin") {
        None => DEFAULT_MARGIN,
        Some(v) => v
            .as_f64()
            .filter(|m| (0.0..=1.0).contains(m))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "canary.margin",
                    format!("{v}: expected a share from 0.0 to 1.0 (0.2: 20 points)"),
                )
            })?,
    };
    let min_events = match fields.get("min_events") {
        None => DEFAULT_MIN_EVENTS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_MIN_EVENTS)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "canary.min_events",
                    format!("{v}: expected a count from 1 to {MAX_MIN_EVENTS}"),
                )
            })?,
    };
    Ok(Canary {
        version: 0,
        percent,
        window_s: window.as_secs(),
        margin,
        min_events,
        started_ms: chrono::Utc::now().timestamp_millis(),
    })
}

/// `POST /v1/functions/{name}/promote`: the running canary becomes the current version.
pub async fn promote(state: &ApiState, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let mut conn = state.broker.shared();
    match crate::canary::promote(&mut conn, name).await {
        Ok(version) => Ok(json_response(
            StatusCode::OK,
            &json!({ "name": name, "current": version }),
        )),
        Err(e) if e.code() == Some(crate::canary::NO_CANARY) => Err(ApiError::conflict(format!(
            "function {name:?} has no canary running (eddy deploy --canary 10% starts one)"
        ))),
        Err(e) => Err(unavailable(e)),
    }
}

fn describe(name: &str, version: &registry::Version, current: Option<u32>) -> Value {
    let triggers: Vec<Value> = manifest::parse_deployed(name, &version.manifest)
        .map(|m| {
            m.streams
                .iter()
                .filter(|t| !t.stream.starts_with("eddy:cron:"))
                .map(|t| json!({ "kind": "stream", "stream": t.stream, "group": t.group }))
                .chain(m.tickers.iter().map(|t| {
                    json!({ "kind": "cron", "name": t.name, "schedule": t.schedule.expression(), "timezone": t.schedule.timezone() })
                }))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": name,
        "version": version.version,
        "current": current == Some(version.version),
        "digest": version.digest,
        "deployed_at": version.deployed_at,
        "triggers": triggers,
    })
}

/// `GET /v1/functions`.
pub async fn list(state: &ApiState) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut conn = state.broker.shared();
    let mut out = Vec::new();
    for name in registry::names(&mut conn).await.map_err(unavailable)? {
        if let Some(version) = registry::current(&mut conn, &name)
            .await
            .map_err(unavailable)?
        {
            out.push(describe(&name, &version, Some(version.version)));
        }
    }
    Ok(json_response(StatusCode::OK, &json!({ "functions": out })))
}

/// `GET /v1/functions/{name}`.
pub async fn show(state: &ApiState, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let mut conn = state.broker.shared();
    let (versions, current) = registry::versions(&mut conn, name)
        .await
        .map_err(unavailable)?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no function {name:?}")));
    }
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| describe(name, v, current))
        .collect();
    let (canary, ended) = crate::canary::state(&mut conn, name)
        .await
        .map_err(unavailable)?;
    let canary = match (canary, current) {
        (Some(canary), Some(stable)) => {
            let mut counts = Vec::new();
            for version in [stable, canary.version] {
                let (events, failed) =
                    crate::canary::counts(&mut conn, name, version, canary.window_s)
                        .await
                        .map_err(unavailable)?;
                let rate = if events == 0 {
                    0.0
                } else {
                    failed as f64 / events as f64
                };
                counts.push(json!({ "version": version, "attempts": events, "failed": failed, "failure_rate": rate }));
            }
            json!({ "settings": canary, "stable": counts[0], "canary": counts[1] })
        }
        _ => Value::Null,
    };
    // The version this host (the one answering) runs now: what `eddy dev` waits for after a
    // deploy, since hosts swap a new version in a moment after the registry has it.
    let running_here = state
        .deployed
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .map(|(version, _)| *version);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "name": name, "current": current, "versions": versions, "canary": canary,
                 "last_canary": ended, "running_here": running_here }),
    ))
}

/// `DELETE /v1/functions/{name}`.
pub async fn delete(state: &ApiState, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let mut conn = state.broker.shared();
    if !registry::delete(&mut conn, name)
        .await
        .map_err(unavailable)?
    {
        return Err(ApiError::not_found(format!("no function {name:?}")));
    }
    // A pause or a breaker of the removed function must not hold a later one of its name.
    if let Err(error) = crate::triggers::streams::flow::forget(&mut conn, name).await {
        tracing::warn!(function = name, %error, "forgetting the removed function's pauses failed");
    }
    Ok(json_response(StatusCode::OK, &json!({ "deleted": name })))
}

/// `POST /v1/functions/{name}/rollback` with optional `{"version": N}`.
pub async fn rollback(
    state: &ApiState,
    name: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let (_, body) = read_body(state, request, MAX_DEPLOY_BODY_BYTES).await?;
    let to = if body.is_empty() {
        None
    } else {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("body", format!("expected JSON {{\"version\": N}}: {e}"))
        })?;
        match &value["version"] {
            Value::Null => None,
            v => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("version", format!("{v}: expected a version number"))
                    })?,
            ),
        }
    };
    let mut conn = state.broker.shared();
    // During a canary, a rollback ends it: every event back on the stable version.
    if to.is_none()
        && let Some(version) =
            crate::canary::end(&mut conn, name, None, "rolled back by an operator")
                .await
                .map_err(unavailable)?
    {
        let current = registry::current(&mut conn, name)
            .await
            .map_err(unavailable)?
            .map(|v| v.version);
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "name": name, "current": current, "canary_ended": version }),
        ));
    }
    use registry::RollbackError;
    match registry::rollback(&mut conn, name, to).await {
        Ok(version) => Ok(json_response(
            StatusCode::OK,
            &json!({ "name": name, "current": version }),
        )),
        Err(RollbackError::CanaryRunning) => Err(ApiError::conflict(format!(
            "a canary of {name:?} runs: roll it back without --version first (or promote it)"
        ))),
        Err(RollbackError::NotDeployed) => {
            Err(ApiError::not_found(format!("no function {name:?}")))
        }
        Err(e @ (RollbackError::NoEarlierVersion | RollbackError::NoSuchVersion(_))) => {
            Err(ApiError::bad_request("version", e.to_string()))
        }
        Err(RollbackError::Redis(e)) => Err(unavailable(e)),
    }
}

/// `POST /v1/functions/{name}/pause` or `…/resume`, with optional `{"trigger": "<stream>"}`:
/// every host stops (or goes on) taking new events of the function's stream triggers (those
/// this host runs, or the one named). Resuming also closes a tripped circuit breaker.
pub async fn pause_or_resume(
    state: &ApiState,
    name: &str,
    pause: bool,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let (_, body) = read_body(state, request, MAX_DEPLOY_BODY_BYTES).await?;
    let named = if body.is_empty() {
        None
    } else {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "body",
                format!("expected JSON {{\"trigger\": \"STREAM\"}}: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "body",
                format!("{value}: expected a JSON object {{\"trigger\": \"STREAM\"}} or no body"),
            ));
        }
        match &value["trigger"] {
            Value::Null => None,
            Value::String(stream) => {
                crate::names::StreamName::check(stream)
                    .map_err(|e| ApiError::bad_request("trigger", e.to_string()))?;
                Some(stream.clone())
            }
            other => {
                return Err(ApiError::bad_request(
                    "trigger",
                    format!("{other}: expected the name of a stream the function reads"),
                ));
            }
        }
    };
    let running = crate::triggers::streams::flow::running_streams(name);
    let streams = match named {
        // A function this host runs has its streams known here: a typo is refused rather
        // than pausing nothing. One it does not run may be paused by name (it may run
        // elsewhere, or start later).
        Some(stream) if pause && !running.is_empty() && !running.contains(&stream) => {
            return Err(ApiError::not_found(format!(
                "function {name:?} reads no stream {stream:?} on this host; its stream \
                 triggers here read {running:?}"
            )));
        }
        Some(stream) => vec![stream],
        None => {
            let streams = running;
            if streams.is_empty() {
                return Err(ApiError::not_found(format!(
                    "function {name:?} runs no stream trigger on this host: name its stream \
                     with {{\"trigger\": \"STREAM\"}} (eddy functions pause {name} --trigger \
                     STREAM)"
                )));
            }
            streams
        }
    };
    let mut conn = state.broker.requests();
    let mut changed = Vec::new();
    for stream in &streams {
        let done = if pause {
            let paused = crate::triggers::streams::flow::pause(&mut conn, name, stream, "api")
                .await
                .map_err(|e| ApiError::redis("flow", &e))?;
            if !paused {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many",
                    format!(
                        "{} triggers are paused or tripped already, the most kept: resume some \
                         first (eddy status lists them)",
                        crate::triggers::streams::flow::MAX_FLOW_ENTRIES
                    ),
                ));
            }
            Ok(true)
        } else {
            crate::triggers::streams::flow::resume(&mut conn, name, stream).await
        };
        if done.map_err(|e| ApiError::redis("flow", &e))? {
            changed.push(stream.clone());
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "function": name,
            "triggers": streams,
            if pause { "paused" } else { "resumed" }: changed,
        }),
    ))
}

/// `POST /v1/functions/{name}/invoke`: runs the current version once on the event in the body
/// (`{"type", "data", "id"?, "source"?, "subject"?, "extensions"?}`) and answers with the
/// result: status, outcome, body, logs, duration. Events it publishes are really published (to
/// the streams its manifest allows). It runs on the host's workers and instance pool, within
/// the API's own bound ([`InvokeBound`]): beyond it, a 429 with `Retry-After`.
pub async fn invoke(
    state: &ApiState,
    name: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let (_, body) = read_body(state, request, super::MAX_EVENT_BODY_BYTES).await?;
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("body", format!("expected a JSON event: {e}")))?
    };
    let event = invoked_event(&input)?;
    let turn = state.invocations.turn().await?;
    let mut conn = state.broker.shared();
    let version = registry::current(&mut conn, name)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("no function {name:?} is deployed")))?;
    use crate::deployments::LoadVersionError as E;
    let loaded = crate::deployments::current_or_load(
        &state.deployed,
        &state.engine,
        &mut conn,
        name,
        &version,
    )
    .await
    .map_err(|error| match error {
        E::Manifest(e @ manifest::ManifestError::Secret { .. }) => {
            ApiError::invalid("manifest.secrets", e.to_string())
        }
        E::Manifest(e) => ApiError::invalid("manifest", e.to_string()),
        E::MissingComponent(_) | E::NoSuchVersion(_) => ApiError::not_found(error.to_string()),
        E::Redis(e) => unavailable(e),
        E::Load(e) => ApiError::invalid("component", e.to_string()),
        E::Task(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        ),
    })?;
    let publisher: Arc<dyn crate::engine::Publisher> =
        Arc::new(crate::engine::AllowedStreams::new(
            state.publisher.clone(),
            loaded.manifest.publish_streams(),
        ));
    // The turn is held until the invocation ends, even if this caller hangs up first.
    let submitted = state.workers.submit(
        loaded.function,
        event,
        crate::engine::Services {
            publisher,
            keyvalue: state.keyvalue.clone(),
        },
        crate::engine::RunHooks::default(),
        Some(Box::new(turn)),
    );
    let result = submitted.done.await.ok().flatten().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the invocation worker stopped",
        )
    })?;
    let mut answer = serde_json::to_value(&result).unwrap_or_default();
    answer["function"] = json!(name);
    answer["version"] = json!(version.version);
    Ok(json_response(StatusCode::OK, &answer))
}

/// The event an API invocation runs on, from its JSON body.
fn invoked_event(input: &Value) -> Result<crate::event::Event, ApiError> {
    let text = |field: &str| input[field].as_str().map(str::to_owned);
    let mut extensions = Vec::new();
    if let Some(map) = input["extensions"].as_object() {
        for (key, value) in map {
            let value = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            extensions.push((key.clone(), value));
        }
    }
    Ok(crate::event::Event {
        id: text("id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        source: text("source").unwrap_or_else(|| "eddy://invoke".to_owned()),
        event_type: text("type").unwrap_or_else(|| "eddy.invoke".to_owned()),
        subject: text("subject"),
        time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        datacontenttype: Some(crate::event::DEFAULT_CONTENT_TYPE.to_owned()),
        data: input
            .get("data")
            .cloned()
            .unwrap_or(json!({}))
            .to_string()
            .into_bytes(),
        extensions,
        delivery: crate::event::Delivery::invoked(1),
    })
}
