//! The web page at `/`: the `eddy status` view, each function's charts of the last 15 minutes
//! and recent failures, refreshing every two seconds. It is a static HTML file and a small
//! script (in `ui/`, compiled into the binary; no build step, no library), which fetch
//! `GET /v1/status`, `GET /v1/charts` and `GET /v1/failures` behind the same token as the rest
//! of the API, and says so on the page when the API cannot be reached or refuses the token. Everything shown is written with `textContent`, never as HTML, since
//! error texts come from guests; the Content-Security-Policy allows only this host's script.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::{ApiError, ApiState, json_response};

/// Failures shown when the page does not say how many.
pub const DEFAULT_FAILURES: usize = 20;
/// The most failures one request returns: all that are kept.
pub const MAX_FAILURES: usize = crate::records::RECENT_FAILURES;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /`: the page.
pub fn page() -> Response<Full<Bytes>> {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/app.js`: the page's script.
pub fn script() -> Response<Full<Bytes>> {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn unavailable(error: redis::RedisError) -> ApiError {
    ApiError::redis("status", &error)
}

/// `GET /v1/status`: what `eddy status --output json` prints.
pub async fn status(state: &ApiState) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut conn = state.broker.shared();
    let status = crate::status::status(&mut conn)
        .await
        .map_err(unavailable)?;
    Ok(json_response(StatusCode::OK, &status))
}

/// `GET /v1/charts`: each function's last 15 minutes (see [`crate::charts`]).
pub async fn charts(state: &ApiState) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut conn = state.broker.shared();
    let charts = crate::charts::read(&mut conn).await.map_err(unavailable)?;
    Ok(json_response(StatusCode::OK, &charts))
}

/// `GET /v1/failures?limit=N`: the newest invocations that did not succeed, across functions.
pub async fn failures(
    state: &ApiState,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let limit = match query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("limit="))
    {
        None => DEFAULT_FAILURES,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_FAILURES).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "limit",
                    format!("{text:?}: expected an integer from 1 to {MAX_FAILURES}"),
                ));
            }
        },
    };
    let mut conn = state.broker.shared();
    let failures = crate::records::recent_failures(&mut conn, limit)
        .await
        .map_err(unavailable)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "failures": failures }),
    ))
}
