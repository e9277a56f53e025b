//! Streams and their retention over HTTP: `GET /v1/streams` (every stream with a policy, its
//! source, length and what the last trim found), `GET`, `PUT` and `DELETE
//! /v1/streams/{stream}/retention`, the same store `eddy streams` uses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, ApiState, json_response, read_body};
use crate::retention::{self, PutError, Retention};

/// Largest retention request body: a policy is two short fields.
const MAX_POLICY_BODY_BYTES: usize = 4096;

fn check_stream(stream: &str) -> Result<(), ApiError> {
    crate::names::StreamName::check(stream)
        .map_err(|e| ApiError::bad_request("stream", e.to_string()))
}

async fn rows(state: &ApiState) -> Result<Vec<Value>, ApiError> {
    let mut conn = state.broker.shared();
    let rows = retention::overview(&mut conn)
        .await
        .map_err(|e| ApiError::redis("retention", &e))?;
    Ok(rows.into_iter().map(|row| json!(row)).collect())
}

/// `GET /v1/streams`.
pub async fn list(state: &ApiState) -> Result<Response<Full<Bytes>>, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &json!({ "streams": rows(state).await? }),
    ))
}

/// `GET /v1/streams/{stream}/retention`: the stream's row; a stream without a policy reads as
/// keeping everything, with source `none`.
pub async fn show(state: &ApiState, stream: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    check_stream(stream)?;
    let row = rows(state)
        .await?
        .into_iter()
        .find(|row| row["stream"] == stream)
        .unwrap_or_else(|| {
            json!({
                "stream": stream, "source": "none", "max_age_ms": null, "max_len": null,
                "keeps": "everything (no trigger reads it and no policy is set)",
                "length": null, "trimmed": 0, "held_back": 0, "trimmed_at_ms": null,
            })
        });
    Ok(json_response(StatusCode::OK, &row))
}

/// `PUT /v1/streams/{stream}/retention` with `{"max_age": "7d"?, "max_len": N?}`; neither
/// keeps everything.
pub async fn put(
    state: &ApiState,
    stream: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_stream(stream)?;
    let (_, body) = read_body(state, request, MAX_POLICY_BODY_BYTES).await?;
    let input: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "body",
            format!("expected a JSON object such as {{\"max_age\": \"7d\"}}: {e}"),
        )
    })?;
    let Value::Object(fields) = &input else {
        return Err(ApiError::bad_request("body", "expected a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "max_age" && *k != "max_len") {
        return Err(ApiError::bad_request(
            unknown,
            format!("unknown field {unknown:?}: expected max_age and/or max_len"),
        ));
    }
    let max_age = match fields.get("max_age") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.as_str()),
        Some(other) => {
            return Err(ApiError::bad_request(
                "max_age",
                format!("{other}: expected a duration such as \"7d\""),
            ));
        }
    };
    let max_len = match fields.get("max_len") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            ApiError::bad_request("max_len", format!("{value}: expected a count of entries"))
        })?),
    };
    let policy = Retention::parse(max_age, max_len)
        .map_err(|e| ApiError::bad_request(e.field, e.to_string()))?;
    let mut conn = state.broker.shared();
    retention::put_policy(&mut conn, stream, Some(policy))
        .await
        .map_err(put_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "stream": stream, "source": "set", "max_age_ms": policy.max_age_ms,
                 "max_len": policy.max_len, "keeps": policy.describe() }),
    ))
}

/// `DELETE /v1/streams/{stream}/retention`: back to the manifest's policy or the default.
pub async fn delete(state: &ApiState, stream: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    check_stream(stream)?;
    let mut conn = state.broker.shared();
    retention::put_policy(&mut conn, stream, None)
        .await
        .map_err(put_error)?;
    Ok(json_response(StatusCode::OK, &json!({ "reset": stream })))
}

fn put_error(error: PutError) -> ApiError {
    match error {
        PutError::TooMany => ApiError::bad_request("stream", error.to_string()),
        PutError::Redis(e) => ApiError::redis("retention", &e),
    }
}
