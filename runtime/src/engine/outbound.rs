//! Outbound HTTP: how a function's `wasi:http/outgoing-handler` calls leave the sandbox.
//!
//! wasmtime-wasi-http implements the standard interface; this room decides what a request may
//! do before it is sent, and sends it:
//!
//! - **Allow-list.** Only origins the manifest lists (`[outbound] http`: scheme, host, and a
//!   port, `*` for any, or none for the scheme's default) are reached. Anything else fails in the
//!   guest with `HTTP-request-denied`; the host logs the first refused URL of an invocation.
//! - **Deadline.** Connecting, the first byte and the gaps between bytes are each cut to the
//!   time left before the invocation's deadline, so no request outlives its invocation (and the
//!   invocation's end drops whatever is still in flight).
//! - **Limits.** At most `http_concurrency` requests in flight per invocation, and a response
//!   body of at most `http_response_bytes`; a limit that hits is named in the error the guest
//!   gets and in the invocation's record.
//! - **TLS** with rustls: the usual web roots plus the host's `--ca-file`, never a plaintext
//!   downgrade (`https` is only ever TLS) and no way to skip verification.
//! - **Trace context.** Each request carries the invocation's `traceparent`.
//! - **Kept-alive connections.** A connection whose response was read to its end goes back to
//!   the function's [`Pool`], so the next request to that origin skips the TCP and TLS
//!   handshakes, as any HTTP client's pool does. Only idle connections are kept (a few per
//!   origin, for a short while); a request itself never outlives its invocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame};
use serde::Serialize;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::metrics::METRICS;
use crate::settings::Expected;

/// The scheme of an allowed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Which ports an allowed origin covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// The scheme's default port only.
    Default,
    /// This one.
    Exactly(u16),
    /// Any (`:*`).
    Any,
}

/// One entry of a function's allow-list: `https://api.example.com`, `http://127.0.0.1:*`,
/// `https://*.example.com:8443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: Scheme,
    /// Lowercase; `*.` in front covers every subdomain (not the domain itself).
    host: String,
    ports: Ports,
}

impl Origin {
    /// Parses an allow-list entry; the error says which part is wrong and what was expected.
    pub fn parse(text: &str) -> Result<Self, Expected> {
        let example = "as in \"https://api.example.com\", \"http://127.0.0.1:*\" or \
                       \"https://*.example.com:8443\"";
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if lower.starts_with("https://") || lower.starts_with("http://") {
            return Err(Expected::from(format!(
                "a lowercase scheme, http:// or https://, {example}"
            )));
        } else {
            return Err(Expected::from(format!(
                "an origin: http:// or https://, a host, and a port or * if not the default, \
                 {example}"
            )));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(Expected::from(format!(
                "a host after the scheme, {example}"
            )));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(Expected::from(format!(
                "a scheme, a host and a port only (no path, query or user part), {example}"
            )));
        }
        // A bracketed IPv6 literal holds colons of its own; the port comes after the bracket.
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let Some((address, after)) = inner.split_once(']') else {
                return Err(Expected::from(
                    "an IPv6 address closed by ], as in \"http://[::1]:8080\"".to_owned(),
                ));
            };
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(Expected::from(format!(
                    "an IPv6 address between the brackets, not {address:?}"
                )));
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    "a port after the closing bracket, as in \"http://[::1]:8080\"".to_owned()
                })?),
            };
            (format!("[{}]", address.to_ascii_lowercase()), port)
        } else {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            if port.is_some_and(|p| p.contains(':')) {
                return Err(Expected::from(
                    "an IPv6 address in brackets, as in \"http://[::1]:8080\"".to_owned(),
                ));
            }
            (host.to_ascii_lowercase(), port)
        };
        let ports = match port {
            None => Ports::Default,
            Some("*") => Ports::Any,
            Some(port) => match port.parse::<u16>() {
                Ok(n) if n > 0 => Ports::Exactly(n),
                _ => {
                    return Err(Expected::from(format!(
                        "a port from 1 to 65535, or *, not {port:?}"
                    )));
                }
            },
        };
        if !host.starts_with('[') {
            let bare = host.strip_prefix("*.").unwrap_or(&host);
            let label_ok = |label: &str| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if bare.len() > 253 || !bare.split('.').all(label_ok) {
                return Err(Expected::from(format!(
                    "a host that is a DNS name or an address (letters, digits and hyphens \
                     between dots; `*.` in front for every subdomain), not {host:?}"
                )));
            }
        }
        Ok(Self {
            scheme,
            host,
            ports,
        })
    }

    fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => self.host == host,
        };
        let port_ok = match self.ports {
            Ports::Default => port == scheme.default_port(),
            Ports::Exactly(p) => port == p,
            Ports::Any => true,
        };
        self.scheme == scheme && host_ok && port_ok
    }
}

/// A function's allow-list of origins; empty (the default) allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Origin>);

impl AllowList {
    /// The allow-list of `origins`.
    pub fn new(origins: Vec<Origin>) -> Self {
        Self(origins)
    }

    /// The origins it allows.
    pub fn origins(&self) -> &[Origin] {
        &self.0
    }

    /// The entry that lets a request to `uri` be sent, if any.
    fn matching(&self, uri: &hyper::Uri) -> Option<&Origin> {
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        self.0
            .iter()
            .find(|origin| origin.allows(scheme, &host, port))
    }
}

/// Largest CA file read for `--ca-file`.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// The TLS settings every function's requests use: the usual web roots plus, if given, the
/// certificates of a PEM file (a private CA).
pub fn tls_config(ca_file: Option<&std::path::Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let pem = crate::inputs::read_capped(path, MAX_CA_FILE_BYTES)
            .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| {
                format!("--ca-file {}: expected PEM certificates", path.display())
            })?;
            roots.add(cert).with_context(|| {
                format!(
                    "--ca-file {}: a certificate is not a usable CA",
                    path.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            anyhow::bail!(
                "--ca-file {}: no certificate found: expected PEM (-----BEGIN CERTIFICATE-----)",
                path.display()
            );
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What an invocation's outbound requests did, for its result and record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboundStats {
    /// Requests sent (allowed and attempted).
    pub calls: u32,
    /// Their time in all, from sending to the end of the response body.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Requests refused by the allow-list.
    pub denied: u32,
    /// The limits that hit, by their manifest name (`http_concurrency`, `http_response_bytes`,
    /// `timeout`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<&'static str>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl OutboundStats {
    /// Notes that limit `name` was hit (once, however often).
    pub(crate) fn limit(&mut self, name: &'static str) {
        if !self.limits.contains(&name) {
            self.limits.push(name);
        }
    }
}

/// Idle connections kept per origin, at most.
const MAX_IDLE_PER_ORIGIN: usize = 8;
/// Idle connections kept per function in all, at most.
const MAX_IDLE: usize = 64;
/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a connection goes: TLS or not, host, port.
type PoolKey = (bool, String, u16);

/// A connection ready to send a request.
type Sender = hyper::client::conn::http1::SendRequest<WasiBody>;

/// A function's idle outbound connections, by origin.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<std::collections::HashMap<PoolKey, Vec<(Sender, Instant)>>>,
}

impl Pool {
    /// An idle connection to `key`, if one is still open and fresh.
    fn take(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.get_mut(key)?;
        while let Some((sender, since)) = senders.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender`, whose response was read to its end, for the next request to `key`.
    fn put(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, senders| {
            senders.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE_TIMEOUT);
            !senders.is_empty()
        });
        let total: usize = idle.values().map(Vec::len).sum();
        let senders = idle.entry(key).or_default();
        if total < MAX_IDLE && senders.len() < MAX_IDLE_PER_ORIGIN {
            senders.push((sender, Instant::now()));
        }
    }
}

/// The outbound side of one invocation: its allow-list, limits, deadline and what it did.
pub struct Outbound {
    /// The function, for logs and metrics.
    function: Arc<str>,
    /// Where it may go.
    allow: Arc<AllowList>,
    /// How it connects over TLS.
    tls: Arc<rustls::ClientConfig>,
    /// When the invocation ends.
    deadline: Instant,
    /// Requests in flight at most.
    concurrency: usize,
    /// Bytes of one response body at most.
    response_bytes: u64,
    /// The invocation's `traceparent`, added to each request.
    traceparent: Option<String>,
    /// The function's kept-alive connections.
    pool: Arc<Pool>,
    in_flight: Arc<AtomicUsize>,
    stats: Arc<Mutex<OutboundStats>>,
}

impl Outbound {
    /// The outbound side of an invocation of `function`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        function: Arc<str>,
        allow: Arc<AllowList>,
        tls: Arc<rustls::ClientConfig>,
        deadline: Instant,
        concurrency: usize,
        response_bytes: u64,
        traceparent: Option<String>,
        pool: Arc<Pool>,
    ) -> Self {
        Self {
            function,
            allow,
            tls,
            deadline,
            concurrency,
            response_bytes,
            traceparent,
            pool,
            in_flight: Arc::new(AtomicUsize::new(0)),
            stats: Arc::new(Mutex::new(OutboundStats::default())),
        }
    }

    /// An outbound side that lets nothing out: for a component only being checked at load.
    pub fn closed(function: Arc<str>, tls: Arc<rustls::ClientConfig>, deadline: Instant) -> Self {
        Self::new(
            function,
            Arc::new(AllowList::default()),
            tls,
            deadline,
            1,
            0,
            None,
            Arc::default(),
        )
    }

    /// A handle on what the requests did, read when the invocation ends.
    pub fn stats(&self) -> Arc<Mutex<OutboundStats>> {
        self.stats.clone()
    }

    fn with_stats(&self, f: impl FnOnce(&mut OutboundStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// A boxed future of the shape `WasiHttpHooks::send_request` returns.
type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    hyper::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

fn refuse(error: HttpError) -> Sent {
    Box::new(async move { Err(error) })
}

/// The origin of a URL, for logs: its user part, path and query may carry a key.
fn shown_origin(uri: &hyper::Uri) -> String {
    let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{}{port}",
        uri.scheme_str().unwrap_or("?"),
        uri.host().unwrap_or("?"),
    )
}

impl WasiHttpHooks for Outbound {
    fn p2_error_from_tls(
        &mut self,
        error: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
        let certificate = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        tracing::warn!(function = %self.function, %error, "outbound TLS failed");
        if certificate {
            ErrorCode::TlsCertificateError
        } else {
            ErrorCode::TlsProtocolError
        }
    }

    fn send_request(
        &mut self,
        mut request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Sent {
        let uri = request.uri().clone();
        // Metrics name the allow-list entry's host, not the one asked for: a guest with a
        // wildcard entry cannot grow the label set beyond what its manifest lists.
        let Some(host) = self.allow.matching(&uri).map(|origin| origin.host.clone()) else {
            let mut first = false;
            self.with_stats(|s| {
                first = s.denied == 0;
                s.denied += 1;
            });
            if first {
                tracing::warn!(
                    function = %self.function, origin = %shown_origin(&uri),
                    "outbound request refused: the origin is not in the function's [outbound] \
                     http allow-list"
                );
            }
            METRICS.outbound(&self.function, "denied", "denied", None);
            return refuse(HttpError::HttpRequestDenied);
        };
        if self.in_flight.load(Ordering::Acquire) >= self.concurrency {
            self.with_stats(|s| s.limit("http_concurrency"));
            METRICS.outbound(&self.function, &host, "limited", None);
            return refuse(HttpError::ConnectionLimitReached);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.with_stats(|s| s.limit("timeout"));
            return refuse(HttpError::ConnectionTimeout);
        }
        let cut = |asked: Option<Duration>| asked.map_or(left, |d| d.min(left));
        let options = options.unwrap_or_default();
        let timeouts = Timeouts {
            connect: cut(options.connect_timeout),
            first_byte: cut(options.first_byte_timeout),
            between_bytes: cut(options.between_bytes_timeout),
            deadline: self.deadline,
        };
        if let Some(traceparent) = &self.traceparent
            && let Ok(value) = hyper::header::HeaderValue::from_str(traceparent)
        {
            request.headers_mut().insert("traceparent", value);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.with_stats(|s| s.calls += 1);
        let call = Call {
            function: self.function.clone(),
            host,
            started: Instant::now(),
            in_flight: self.in_flight.clone(),
            stats: self.stats.clone(),
            limit: self.response_bytes,
            deadline: self.deadline,
            ended: false,
        };
        let (tls, pool) = (self.tls.clone(), self.pool.clone());
        Box::new(async move { send(request, tls, pool, timeouts, call).await })
    }
}

/// The time limits of one request, each already cut to the invocation's deadline.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
    deadline: Instant,
}

/// One request in flight: counted until its response body ends (or it fails), then its time
/// is added to the invocation's.
struct Call {
    function: Arc<str>,
    host: String,
    started: Instant,
    in_flight: Arc<AtomicUsize>,
    stats: Arc<Mutex<OutboundStats>>,
    limit: u64,
    /// When the invocation ends.
    deadline: Instant,
    ended: bool,
}

/// How close to the invocation's deadline a request's timeout must fire to be the deadline's
/// doing rather than the guest's own shorter timeout.
const DEADLINE_SLACK: Duration = Duration::from_millis(10);

impl Call {
    /// A timeout fired: the invocation's `timeout` limit if it was the deadline that cut the
    /// request, else the guest's own choice, not a limit.
    fn timed_out(&self) {
        if Instant::now() + DEADLINE_SLACK >= self.deadline {
            self.limit_hit("timeout");
        }
    }

    fn limit_hit(&self, name: &'static str) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .limit(name);
    }

    fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .duration += self.started.elapsed();
    }

    fn fail(mut self, outcome: &str, error: HttpError) -> HttpError {
        METRICS.outbound(
            &self.function,
            &self.host,
            outcome,
            Some(self.started.elapsed()),
        );
        self.end();
        error
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end();
    }
}

/// Sends `request` over HTTP/1.1, on a kept-alive connection to its origin if the pool has one
/// that is ready, else on a new one, and returns the response with its body bounded by the
/// call's limits.
async fn send(
    mut request: hyper::Request<WasiBody>,
    tls: Arc<rustls::ClientConfig>,
    pool: Arc<Pool>,
    timeouts: Timeouts,
    call: Call,
) -> Result<
    (
        hyper::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let uri = request.uri().clone();
    let https = uri.scheme_str() == Some("https");
    let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
        return Err(call.fail("error", HttpError::HttpRequestUriInvalid));
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let key: PoolKey = (https, host.clone(), port);
    let pooled = match pool.take(&key) {
        Some(mut sender) => match tokio::time::timeout(timeouts.connect, sender.ready()).await {
            Ok(Ok(())) => Some(sender),
            _ => None,
        },
        None => None,
    };
    let mut sender = match pooled {
        Some(sender) => sender,
        None => match connect(&host, port, https, tls, timeouts).await {
            Ok(sender) => sender,
            Err((outcome, error)) => {
                if outcome == "timeout" {
                    call.timed_out();
                }
                return Err(call.fail(outcome, error));
            }
        },
    };
    let deadline = tokio::time::Instant::from_std(timeouts.deadline);
    // Over a connection of its own the request names only its path (origin form).
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let response =
        match tokio::time::timeout(timeouts.first_byte, sender.send_request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(call.fail("error", HttpError::from(error))),
            Err(_) => {
                call.timed_out();
                return Err(call.fail("timeout", HttpError::HttpResponseTimeout));
            }
        };
    let status = response.status().as_u16();
    METRICS.outbound(
        &call.function,
        &call.host,
        match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Some(call.started.elapsed()),
    );
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > call.limit) {
        call.limit_hit("http_response_bytes");
        let limit = call.limit;
        return Err(call.fail("too_large", HttpError::HttpResponseBodySize(Some(limit))));
    }
    let reusable = !response
        .headers()
        .get(hyper::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let response = response.map(|incoming| {
        Bounded {
            inner: incoming,
            read: 0,
            gap: timeouts.between_bytes,
            deadline,
            timer: None,
            call,
            reuse: reusable.then_some((pool, key, sender)),
        }
        .boxed_unsync()
    });
    // The connection is driven by a task of its own (see `connect`): nothing more to run here.
    let connection: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
        Box::new(async { Ok(()) });
    Ok((response, connection))
}

/// Opens a connection to `host:port` (TCP, then TLS for `https`) within the connect timeout,
/// and starts the task that drives it: it ends when the connection closes or is no longer
/// wanted (its request dropped, or its idle time in the pool over). The error's first part is
/// the outcome for metrics.
async fn connect(
    host: &str,
    port: u16,
    https: bool,
    tls: Arc<rustls::ClientConfig>,
    timeouts: Timeouts,
) -> Result<Sender, (&'static str, HttpError)> {
    // A bracketed IPv6 literal connects without its brackets.
    let address = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = match tokio::time::timeout(
        timeouts.connect,
        tokio::net::TcpStream::connect((address.as_str(), port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return Err(("error", HttpError::Connect(error))),
        Err(_) => return Err(("timeout", HttpError::ConnectionTimeout)),
    };
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if https {
        let Ok(name) = rustls::pki_types::ServerName::try_from(address) else {
            return Err((
                "error",
                HttpError::DnsError {
                    rcode: Some("invalid DNS name".to_owned()),
                    info_code: None,
                },
            ));
        };
        let connector = tokio_rustls::TlsConnector::from(tls);
        match tokio::time::timeout(timeouts.connect, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(error)) => return Err(("tls_error", HttpError::Tls(error))),
            Err(_) => return Err(("timeout", HttpError::ConnectionTimeout)),
        }
    } else {
        Box::new(tcp)
    };
    let handshake = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream));
    let (sender, connection) = match tokio::time::timeout(timeouts.connect, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => return Err(("error", HttpError::from(error))),
        Err(_) => return Err(("timeout", HttpError::ConnectionTimeout)),
    };
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "an outbound connection ended with an error");
        }
    });
    Ok(sender)
}

/// A stream a request travels over: TCP, or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A response body bounded by size, by the gap between its frames, and by the invocation's
/// deadline.
struct Bounded {
    inner: hyper::body::Incoming,
    read: u64,
    gap: Duration,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    call: Call,
    /// Where the connection goes back once the body is read to its end.
    reuse: Option<(Arc<Pool>, PoolKey, Sender)>,
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > this.call.limit {
                        this.call.limit_hit("http_response_bytes");
                        this.call.end();
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                            this.call.limit,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.call.end();
                Poll::Ready(Some(Err(HttpError::from(error))))
            }
            Poll::Ready(None) => {
                this.call.end();
                if let Some((pool, key, sender)) = this.reuse.take() {
                    pool.put(key, sender);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let until = (tokio::time::Instant::now() + this.gap).min(this.deadline);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.call.timed_out();
                    this.call.end();
                    return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &[&str], url: &str) -> bool {
        let list = AllowList::new(list.iter().map(|o| Origin::parse(o).unwrap()).collect());
        list.matching(&url.parse().unwrap()).is_some()
    }

    #[test]
    fn origins_cover_their_scheme_host_and_port() {
        let mailgun = ["https://api.mailgun.net"];
        assert!(allows(&mailgun, "https://api.mailgun.net/v3/x/messages"));
        assert!(allows(&mailgun, "https://API.mailgun.net:443/"));
        assert!(!allows(&mailgun, "http://api.mailgun.net/"), "no downgrade");
        assert!(
            !allows(&mailgun, "https://api.mailgun.net:8443/"),
            "other port"
        );
        assert!(!allows(
            &mailgun,
            "https://evil.net/?https://api.mailgun.net"
        ));
        let local = ["http://127.0.0.1:*"];
        assert!(allows(&local, "http://127.0.0.1:9000/users/1"));
        assert!(!allows(&local, "http://localhost:9000/"));
        let wildcard = ["https://*.example.com:8443"];
        assert!(allows(&wildcard, "https://a.example.com:8443/"));
        assert!(!allows(&wildcard, "https://example.com:8443/"));
        assert!(!allows(&wildcard, "https://badexample.com:8443/"));
        assert!(
            !allows(&[], "https://api.mailgun.net/"),
            "empty allows nothing"
        );
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "api.mailgun.net",
            "ftp://x",
            "https://",
            "https://x/path",
            "https://x:port",
            "https://user@x",
            "https://x?y",
            "http://x:0",
            "http://x:99999",
            "http://::1",
            "http://[::1",
            "http://[nope]:80",
            "http://-",
            "http://a..b",
            "HTTP://x",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Origin::parse("http://x:0")
                .unwrap_err()
                .contains("1 to 65535")
        );
        assert!(
            Origin::parse("HTTPS://x")
                .unwrap_err()
                .contains("lowercase")
        );
        assert!(
            Origin::parse("http://::1")
                .unwrap_err()
                .contains("brackets")
        );
        assert!(Origin::parse("http://-").unwrap_err().contains("DNS name"));
        assert!(Origin::parse("https://[::1]:8443").is_ok());
        assert!(Origin::parse("http://127.0.0.1:*/").is_ok());
    }
}
