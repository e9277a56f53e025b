//! Cronjobs over HTTP: `GET /v1/cronjobs`, `POST /v1/cronjobs`, `DELETE /v1/cronjobs/{name}`,
//! the same store `eddy cron` writes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, ApiState, json_response, read_body};
use crate::triggers::cron::store::{self, StoreError};
use crate::triggers::cron::{CatchUp, CronJob};

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Invalid(invalid) => ApiError::invalid(invalid.field, invalid.message),
        StoreError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string()),
        StoreError::Missing(_) => ApiError::not_found(error.to_string()),
        StoreError::Redis(e) => ApiError::redis("cronjobs", &e),
    }
}

/// `GET /v1/cronjobs`.
pub async fn list(state: &ApiState) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut conn = state.broker.shared();
    let rows = store::list(&mut conn).await.map_err(store_error)?;
    Ok(json_response(StatusCode::OK, &json!({ "cronjobs": rows })))
}

/// `POST /v1/cronjobs` with `{"name", "schedule", "stream", "type", "data"?, "timezone"?,
/// "catch_up"?, "late_grace"?}` (`late_grace` a duration such as `"60s"`).
pub async fn create(
    state: &ApiState,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (_, body) = read_body(state, request, super::MAX_EVENT_BODY_BYTES).await?;
    let input: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("body", format!("expected a JSON cronjob: {e}")))?;
    let text = |field: &str| -> Result<String, ApiError> {
        input[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(field, "expected a string"))
    };
    let name = text("name")?;
    let catch_up = match input.get("catch_up") {
        None | Some(Value::Null) => CatchUp::default(),
        Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
            ApiError::bad_request(
                "catch_up",
                format!("{value}: expected \"none\", \"latest\" or \"all\""),
            )
        })?,
    };
    let late_grace = match input.get("late_grace") {
        None | Some(Value::Null) => crate::triggers::cron::DEFAULT_LATE_GRACE,
        Some(value) => value
            .as_str()
            .and_then(|t| crate::units::parse_duration(t).ok())
            .filter(|d| *d <= crate::triggers::cron::MAX_LATE_GRACE)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "late_grace",
                    format!("{value}: expected a duration such as \"60s\", at most 1h"),
                )
            })?,
    };
    let job = CronJob {
        schedule: text("schedule")?,
        timezone: input["timezone"].as_str().unwrap_or("UTC").to_owned(),
        stream: text("stream")?,
        event_type: text("type")?,
        data: input.get("data").cloned().unwrap_or(json!({})).to_string(),
        catch_up,
        late_grace_ms: crate::triggers::cron::grace_ms(late_grace),
    };
    let mut conn = state.broker.shared();
    let created = store::create(&mut conn, &name, &job)
        .await
        .map_err(store_error)?;
    Ok(json_response(StatusCode::CREATED, &created))
}

/// `DELETE /v1/cronjobs/{name}`.
pub async fn delete(state: &ApiState, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut conn = state.broker.shared();
    store::remove(&mut conn, name).await.map_err(store_error)?;
    Ok(json_response(StatusCode::OK, &json!({ "removed": name })))
}
