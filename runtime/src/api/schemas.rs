//! Event schemas over HTTP: `GET /v1/schemas` (every type's latest version), `GET
//! /v1/schemas/{type}[?version=N]`, `PUT /v1/schemas/{type}[?compatibility=backward|none]`
//! with the schema as the body, and `DELETE /v1/schemas/{type}`: the store `eddy schemas`
//! uses ([`crate::schemas`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{ApiError, ApiState, json_response, read_body};
use crate::schemas::{self, Compatibility, MAX_SCHEMA_BYTES, SchemaError};

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn check_type(event_type: &str) -> Result<(), ApiError> {
    crate::names::event_type(event_type)
        .map_err(|e| ApiError::bad_request("type", format!("event type {e}")))
}

fn to_api(error: SchemaError) -> ApiError {
    match error {
        SchemaError::Invalid(message) => ApiError::invalid("schema", message),
        SchemaError::Incompatible { ref breaks, .. } => {
            let breaks: Vec<String> = breaks.iter().map(ToString::to_string).collect();
            let mut api = ApiError::new(StatusCode::CONFLICT, "incompatible", error.to_string());
            api.details = Some(json!({ "breaks": breaks }));
            api
        }
        SchemaError::Full(message) => ApiError::new(StatusCode::CONFLICT, "too_many", message),
        SchemaError::Redis(e) => ApiError::redis("schemas", &e),
    }
}

/// `GET /v1/schemas`.
pub async fn list(state: &ApiState) -> Result<Response<Full<Bytes>>, ApiError> {
    let all = schemas::list(&mut state.broker.requests())
        .await
        .map_err(to_api)?;
    Ok(json_response(StatusCode::OK, &json!({ "schemas": all })))
}

/// `GET /v1/schemas/{type}[?version=N]`.
pub async fn show(
    state: &ApiState,
    event_type: &str,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_type(event_type)?;
    let version = match query_value(query, "version") {
        None => None,
        Some(text) => Some(text.parse::<u32>().map_err(|_| {
            ApiError::bad_request(
                "version",
                format!("version {text:?}: expected a number from 1"),
            )
        })?),
    };
    let found = schemas::get(&mut state.broker.requests(), event_type, version)
        .await
        .map_err(to_api)?;
    let Some((info, version, schema)) = found else {
        return Err(ApiError::not_found(match version {
            Some(v) => format!("event type {event_type:?} has no schema version {v}"),
            None => format!("event type {event_type:?} has no schema"),
        }));
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "type": event_type, "version": version, "latest": info, "schema": schema }),
    ))
}

/// `PUT /v1/schemas/{type}[?compatibility=…]`.
pub async fn put(
    state: &ApiState,
    event_type: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_type(event_type)?;
    let mode = match query_value(request.uri().query(), "compatibility") {
        None => None,
        Some("backward") => Some(Compatibility::Backward),
        Some("none") => Some(Compatibility::None),
        Some(other) => {
            return Err(ApiError::bad_request(
                "compatibility",
                format!("compatibility {other:?}: expected \"backward\" or \"none\""),
            ));
        }
    };
    let (_, body) = read_body(state, request, MAX_SCHEMA_BYTES).await?;
    let info = schemas::put(&mut state.broker.requests(), event_type, &body, mode)
        .await
        .map_err(to_api)?;
    Ok(json_response(StatusCode::OK, &json!(info)))
}

/// `DELETE /v1/schemas/{type}`.
pub async fn delete(state: &ApiState, event_type: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    check_type(event_type)?;
    if !schemas::remove(&mut state.broker.requests(), event_type)
        .await
        .map_err(to_api)?
    {
        return Err(ApiError::not_found(format!(
            "event type {event_type:?} has no schema"
        )));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "type": event_type, "removed": true }),
    ))
}
