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

use super::{ApiError, ApiState, json_response, read_body};
use crate::engine::{FunctionSpec, digest};
use crate::manifest::{self, is_name};
use crate::registry;

/// Largest component upload accepted.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;
/// Largest deploy request (the manifest) accepted.
const MAX_DEPLOY_BODY_BYTES: usize = 256 * 1024;

fn unavailable(error: redis::RedisError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("redis: {error}"),
    )
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "name",
            format!("{name:?}: expected 1 to 64 lowercase letters, digits, '-' or '_'"),
        ))
    }
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
    let (_, body) = read_body(request, MAX_COMPONENT_BYTES).await?;
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
    let (_, body) = read_body(request, MAX_DEPLOY_BODY_BYTES).await?;
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
    if state.static_functions.contains(&manifest.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "function {:?} is loaded from a host's --functions manifest; deploy it under another name",
                manifest.name
            ),
        ));
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
    let spec = manifest.function_spec(None);
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || engine.load(spec, &bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::invalid("component", e.to_string()))?;
    let version = registry::deploy(&mut conn, &manifest.name, digest, text)
        .await
        .map_err(unavailable)?;
    Ok(json_response(
        StatusCode::CREATED,
        &describe(&manifest.name, &version, Some(version.version)),
    ))
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
    Ok(json_response(
        StatusCode::OK,
        &json!({ "name": name, "current": current, "versions": versions }),
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
    Ok(json_response(StatusCode::OK, &json!({ "deleted": name })))
}

/// `POST /v1/functions/{name}/rollback` with optional `{"version": N}`.
pub async fn rollback(
    state: &ApiState,
    name: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let (_, body) = read_body(request, MAX_DEPLOY_BODY_BYTES).await?;
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
    match registry::rollback(&mut conn, name, to).await {
        Ok(version) => Ok(json_response(
            StatusCode::OK,
            &json!({ "name": name, "current": version }),
        )),
        Err(e) if e.to_string().contains("not deployed") => {
            Err(ApiError::not_found(format!("no function {name:?}")))
        }
        Err(e) if e.to_string().contains("version") => {
            Err(ApiError::bad_request("version", e.to_string()))
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// `POST /v1/functions/{name}/invoke`: runs the current version once on the event in the body
/// (`{"type", "data", "id"?, "source"?, "subject"?, "extensions"?}`) and answers with the
/// result: status, outcome, body, logs, duration. Events it publishes are really published (to
/// the streams its manifest allows).
pub async fn invoke(
    state: &ApiState,
    name: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_name(name)?;
    let (_, body) = read_body(request, super::MAX_EVENT_BODY_BYTES).await?;
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("body", format!("expected a JSON event: {e}")))?
    };
    let text = |field: &str| input[field].as_str().map(str::to_owned);
    let mut conn = state.broker.shared();
    let version = registry::current(&mut conn, name)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("no function {name:?} is deployed")))?;
    let manifest = manifest::parse_deployed(name, &version.manifest)
        .map_err(|e| ApiError::invalid("manifest", e.to_string()))?;
    let bytes = registry::get_component(&mut conn, &version.digest)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("component {} is missing", version.digest)))?;
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
    let event = crate::event::Event {
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
    };
    let spec = manifest.function_spec(Some(version.version));
    let publisher: std::sync::Arc<dyn crate::engine::Publisher> = std::sync::Arc::new(
        crate::engine::AllowedStreams::new(state.publisher.clone(), manifest.publish.clone()),
    );
    let engine = state.engine.clone();
    let result = tokio::task::spawn_blocking(move || {
        engine
            .load(spec, &bytes)
            .map(|function| function.invoke(&event, publisher))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::invalid("component", e.to_string()))?;
    let mut answer = serde_json::to_value(&result).unwrap_or_default();
    answer["function"] = json!(name);
    answer["version"] = json!(version.version);
    Ok(json_response(StatusCode::OK, &answer))
}
