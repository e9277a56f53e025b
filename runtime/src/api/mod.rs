//! The control plane's HTTP API, served by every host (`eddy up --listen`, default
//! 127.0.0.1:7070): health, readiness (Redis answers and the deployed functions are loaded),
//! event ingress (`events`), the registry of deployed functions (`functions`), cronjobs
//! (`cronjobs`) and streams' retention (`streams`). A Redis that refuses writes because it is
//! full answers 507, one that is away 503, both with Redis's message and `Retry-After`.
//!
//! `GET /` is the web page (live status and recent failures, see `page`). Every endpoint but
//! `GET /healthz` needs `Authorization: Bearer <token>` (or, from a browser, HTTP Basic with the
//! token as the password) when the host has a token (`EDDY_TOKEN` or `--token-file`); a host
//! without one only listens on loopback. Tokens are compared in constant time (on their
//! SHA-256, so not even the length leaks). Errors have one shape:
//! `{"error": {"code", "message", "field"?}}`. Request bodies are capped (beyond the cap the
//! answer is 413 before the body is read) and timed (408); the connections themselves are
//! bounded in `server`. Path segments are percent-decoded, then every name in them is checked
//! like any other name ([`crate::names`]).

mod cronjobs;
mod events;
mod functions;
mod page;
mod schemas;
mod server;
mod streams;

pub use functions::{
    DEFAULT_API_INVOKE_CONCURRENCY, DEFAULT_API_INVOKE_QUEUE, InvokeBound, MAX_API_INVOKE_BOUND,
};
pub use server::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    HttpLimits, MAX_CONNECTIONS_CEILING, MAX_HTTP_TIMEOUT, raise_open_file_limit, serve,
};

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use crate::broker::Broker;

/// The address a host listens on when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Largest event request body accepted (one event, or a batch).
pub const MAX_EVENT_BODY_BYTES: usize = 1024 * 1024;
/// Largest request head (request line and headers) accepted: 64 KiB. Beyond it the connection
/// is closed with a 431; it also bounds what a slow client can make the host hold.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What the API needs from the host.
pub struct ApiState {
    /// Redis.
    pub broker: Broker,
    /// SHA-256 of the bearer token, if the host has one.
    pub token_digest: Option<[u8; 32]>,
    /// The engine, to check components before they are stored.
    pub engine: crate::engine::Engine,
    /// Names of the functions loaded from this host's `--functions` manifests.
    pub static_functions: Vec<String>,
    /// Where events published by synchronous invocations go.
    pub publisher: Arc<dyn crate::engine::Publisher>,
    /// Where their key-value buckets live.
    pub keyvalue: Arc<dyn crate::engine::KeyValue>,
    /// Set once the host has loaded the deployed functions at start.
    pub loaded: Arc<std::sync::atomic::AtomicBool>,
    /// The threads invocations run on, shared with the triggers.
    pub workers: crate::engine::Workers,
    /// The deployed functions this host runs, by name, with their version.
    pub deployed: crate::deployments::Deployed,
    /// How many API invocations may run and wait at once.
    pub invocations: InvokeBound,
    /// What bounds the API's connections and request bodies.
    pub http: HttpLimits,
    /// The event schemas ingress checks events against.
    pub schemas: crate::schemas::SchemaView,
}

/// An error answer: status, machine-readable code, message for a person, the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Seconds to send as `Retry-After`, for a 429 or 503.
    retry_after: Option<u32>,
    /// More, machine-readable: e.g. every break of an incompatible schema.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// A 400 about `field`.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            field: Some(field.to_owned()),
            retry_after: None,
            details: None,
        }
    }

    /// A 422-style refusal of a well-formed request that fails validation; still a 400 here,
    /// with code `invalid`, naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: message.into(),
            field: Some(field.to_owned()),
            retry_after: None,
            details: None,
        }
    }

    /// A 409: the request conflicts with the state (a canary runs, a name is taken, …).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A 429: too much is running; try again after `retry_after` seconds.
    pub fn busy(message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message)
        }
    }

    /// Redis failed `what`: a 507 when it is full (the request may be sent again once space
    /// is freed), a 409 when a key holds another type (sending again cannot help), else a 503;
    /// each carries Redis's own message, the retryable ones a `Retry-After`. A 503 after a
    /// timeout says the write may have landed: Redis may have done it without answering.
    pub fn redis(what: &'static str, error: &redis::RedisError) -> Self {
        let (status, code) = match crate::broker::counted(what, error) {
            crate::broker::Trouble::Full => (StatusCode::INSUFFICIENT_STORAGE, "redis_full"),
            crate::broker::Trouble::WrongType => {
                return Self::new(
                    StatusCode::CONFLICT,
                    "wrong_type",
                    format!("redis ({what}): {error}: the key exists and holds another type"),
                );
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let maybe_done = if error.is_timeout() {
            "; Redis may have done it without answering: send an event id (ce-id) to tell a \
             retry from a new event"
        } else {
            ""
        };
        Self {
            retry_after: Some(1),
            ..Self::new(status, code, format!("redis ({what}): {error}{maybe_done}"))
        }
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            details: None,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = json_response(self.status, &json!({ "error": error }));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way: the connection cannot be reused.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a response from valid parts")
}

/// The SHA-256 of a token, as kept by [`ApiState`].
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Binds `addr`, refusing a non-loopback address without a token.
pub async fn bind(addr: &str, has_token: bool) -> anyhow::Result<TcpListener> {
    let parsed: SocketAddr = addr
        .parse()
        .with_context(|| format!("--listen {addr:?}: expected IP:PORT, e.g. 127.0.0.1:7070"))?;
    if !parsed.ip().is_loopback() && !has_token {
        anyhow::bail!(
            "--listen {addr}: refusing to serve the API beyond loopback without a token: set \
             EDDY_TOKEN or pass --token-file"
        );
    }
    TcpListener::bind(parsed)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The path's segments, each percent-decoded (so `a%2Fb` is the one segment `a/b`); an error
/// names a segment that does not decode to UTF-8.
fn decoded_segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.trim_matches('/')
        .split('/')
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    ApiError::bad_request(
                        "path",
                        format!("path segment {segment:?} is not percent-encoded UTF-8"),
                    )
                })
        })
        .collect()
}

async fn route(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let decoded = match decoded_segments(&path) {
        Ok(segments) => segments,
        Err(error) => return error.into_response(),
    };
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = request.method().clone();
    if method == Method::GET && segments == ["healthz"] {
        return json_response(StatusCode::OK, &json!({ "status": "ok" }));
    }
    if let Err(error) = authorize(state, &request) {
        let mut response = error.into_response();
        if method == Method::GET && (segments == [""] || segments == ["ui", "app.js"]) {
            // A browser asks for the token (as the password) and then sends it on every
            // request of the page, its data fetches included. The script is challenged too:
            // a page opened as http://user:token@host/ loads it without credentials, and the
            // browser sends the URL's only when challenged.
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"eddy\", charset=\"UTF-8\""),
            );
        }
        return response;
    }
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["readyz"]) => ready(state).await,
        (&Method::GET, [""]) => Ok(page::page()),
        (&Method::GET, ["ui", "app.js"]) => Ok(page::script()),
        (&Method::GET, ["v1", "status"]) => page::status(state).await,
        (&Method::GET, ["v1", "charts"]) => page::charts(state).await,
        (&Method::GET, ["v1", "failures"]) => page::failures(state, request.uri().query()).await,
        (&Method::GET, ["metrics"]) => {
            // The request connection: it answers or fails within seconds while Redis is in
            // trouble, and the whole read is bounded by the scrape budget.
            let mut conn = state.broker.requests();
            let _ = tokio::time::timeout(
                crate::metrics::SCRAPE_REDIS_BUDGET,
                crate::retention::refresh_gauges(&mut conn),
            )
            .await;
            if tokio::time::timeout(
                crate::metrics::SCRAPE_REDIS_BUDGET,
                crate::status::refresh_gauges(&mut conn),
            )
            .await
            .is_err()
            {
                tracing::debug!("a scrape's Redis reads ran past their budget");
            }
            let text = crate::metrics::METRICS.render();
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(text)))
                .expect("a response from valid parts"))
        }
        (&Method::POST, ["v1", "streams", stream, "events"]) => {
            let stream = (*stream).to_owned();
            events::ingest(state, &stream, request).await
        }
        (&Method::GET, ["v1", "streams"]) => streams::list(state).await,
        (&Method::GET, ["v1", "schemas"]) => schemas::list(state).await,
        (&Method::GET, ["v1", "schemas", event_type]) => {
            schemas::show(state, event_type, request.uri().query()).await
        }
        (&Method::PUT, ["v1", "schemas", event_type]) => {
            let event_type = (*event_type).to_owned();
            schemas::put(state, &event_type, request).await
        }
        (&Method::DELETE, ["v1", "schemas", event_type]) => {
            schemas::delete(state, event_type).await
        }
        (&Method::GET, ["v1", "streams", stream, "retention"]) => {
            streams::show(state, stream).await
        }
        (&Method::PUT, ["v1", "streams", stream, "retention"]) => {
            let stream = (*stream).to_owned();
            streams::put(state, &stream, request).await
        }
        (&Method::DELETE, ["v1", "streams", stream, "retention"]) => {
            streams::delete(state, stream).await
        }
        (&Method::PUT, ["v1", "components", digest]) => {
            let digest = (*digest).to_owned();
            functions::put_component(state, &digest, request).await
        }
        (&Method::POST, ["v1", "functions"]) => functions::deploy(state, request).await,
        (&Method::GET, ["v1", "cronjobs"]) => cronjobs::list(state).await,
        (&Method::POST, ["v1", "cronjobs"]) => cronjobs::create(state, request).await,
        (&Method::DELETE, ["v1", "cronjobs", name]) => cronjobs::delete(state, name).await,
        (&Method::GET, ["v1", "functions"]) => functions::list(state).await,
        (&Method::GET, ["v1", "functions", name]) => functions::show(state, name).await,
        (&Method::DELETE, ["v1", "functions", name]) => functions::delete(state, name).await,
        (&Method::POST, ["v1", "functions", name, "invoke"]) => {
            let name = (*name).to_owned();
            functions::invoke(state, &name, request).await
        }
        (&Method::POST, ["v1", "functions", name, "promote"]) => {
            functions::promote(state, name).await
        }
        (&Method::POST, ["v1", "functions", name, "rollback"]) => {
            let name = (*name).to_owned();
            functions::rollback(state, &name, request).await
        }
        (&Method::POST, ["v1", "functions", name, verb @ ("pause" | "resume")]) => {
            let (name, pause) = ((*name).to_owned(), *verb == "pause");
            functions::pause_or_resume(state, &name, pause, request).await
        }
        (_, ["readyz"])
        | (_, ["v1", "streams", _, "events"])
        | (_, ["v1", "streams"])
        | (_, ["v1", "schemas", ..])
        | (_, ["v1", "streams", _, "retention"])
        | (_, ["v1", "components", _])
        | (_, ["v1", "functions", ..])
        | (_, ["v1", "cronjobs", ..]) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {method} {path}"),
        )),
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn authorize(state: &ApiState, request: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(expected) = &state.token_digest else {
        return Ok(());
    };
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Basic credentials are what a browser resends by itself, to any request for this host,
    // even one another site's page makes: they may only read (the page's GETs), never change.
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let given = header.and_then(|h| presented_token(h, reading));
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send `Authorization: Bearer <token>` (a browser reading the \
             page: the token as the password)",
        ));
    };
    if bool::from(token_digest(&given).ct_eq(expected)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong bearer token",
        ))
    }
}

/// The token in an `Authorization` header: `Bearer <token>`, or, for reads only, HTTP Basic
/// with the token as the password (any user name), which is what a browser can send for the
/// web page.
fn presented_token(header: &str, allow_basic: bool) -> Option<String> {
    if let Some(token) = header.strip_prefix("Bearer ") {
        return Some(token.to_owned());
    }
    let encoded = header.strip_prefix("Basic ").filter(|_| allow_basic)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

async fn ready(state: &ApiState) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut conn = state.broker.requests();
    let pong: redis::RedisResult<String> = if state.broker.is_cluster() {
        // Every node answers PING while the cluster is down (a master and its replicas
        // lost): ask for the cluster's own state.
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async::<String>(&mut conn)
            .await
            .and_then(|info| {
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    Ok(info)
                } else {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                        "the cluster reports cluster_state:fail",
                    )))
                }
            })
    } else {
        redis::cmd("PING").query_async(&mut conn).await
    };
    let loaded = state.loaded.load(std::sync::atomic::Ordering::Acquire);
    match pong {
        Ok(_) if !loaded => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "still loading the deployed functions",
        )),
        Ok(_) => Ok(json_response(
            StatusCode::OK,
            &json!({ "status": "ready", "redis": "ok", "functions": "loaded" }),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("redis unreachable: {error}"),
        )),
    }
}

/// Reads a request body of at most `max` bytes within the body timeout; 413 beyond the size,
/// 408 beyond the time.
pub async fn read_body(
    state: &ApiState,
    request: Request<Incoming>,
    max: usize,
) -> Result<(hyper::http::request::Parts, Bytes), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body over the {max}-byte limit"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let phase = parts.extensions.get::<server::Phase>().cloned();
    if let Some(phase) = &phase {
        phase.reading_body();
    }
    let timeout = state.http.body_timeout;
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect()).await;
    if let Some(phase) = &phase {
        phase.handling();
    }
    let collected = collected
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {timeout:?}"),
            )
        })?
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the request body: {error}"),
                )
            }
        })?;
    Ok((parts, collected.to_bytes()))
}
