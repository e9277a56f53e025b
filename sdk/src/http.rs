//! Calling HTTP APIs from a function, over the standard `wasi:http/outgoing-handler`.
//!
//! ```no_run
//! use eddy_sdk::{Error, http};
//!
//! fn fetch_user(id: &str) -> Result<Option<serde_json::Value>, Error> {
//!     let response = http::get(&format!("http://127.0.0.1:8081/users/{id}"))?;
//!     match response.status {
//!         200 => Ok(Some(response.json()?)),
//!         404 => Ok(None),
//!         status => Err(Error::new(format!("users API answered {status}"))),
//!     }
//! }
//! ```
//!
//! A request reaches only the origins the function's manifest allows (`[outbound] http`);
//! anything else fails with `HTTP-request-denied` ([`HttpError::is_denied`]). Every request
//! ends before the invocation's deadline, and a response body is capped by the manifest's
//! `limits.http_response_bytes` (10 MiB by default). An [`HttpError`] returned with `?` fails
//! the invocation (a 500, retried), which is what a transient API failure should do.

use std::time::Duration;

use crate::Error;
use crate::bindings::wasi::http::{outgoing_handler, types};
use crate::bindings::wasi::io::streams::StreamError;

/// Bytes read from a response body per call.
const READ_CHUNK: u64 = 64 * 1024;
/// Bytes written to a request body per call: what `blocking-write-and-flush` accepts.
const WRITE_CHUNK: usize = 4096;

/// Why a request did not get a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The `wasi:http` error code, e.g. `HTTP-request-denied`, `connection-timeout`,
    /// `HTTP-response-body-size`; `invalid-request` for a request this SDK could not build.
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

impl HttpError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn from_code(url: &str, code: types::ErrorCode) -> Self {
        let name = match &code {
            types::ErrorCode::HttpRequestDenied => "HTTP-request-denied",
            types::ErrorCode::ConnectionTimeout => "connection-timeout",
            types::ErrorCode::ConnectionReadTimeout => "connection-read-timeout",
            types::ErrorCode::HttpResponseTimeout => "HTTP-response-timeout",
            types::ErrorCode::HttpResponseBodySize(_) => "HTTP-response-body-size",
            types::ErrorCode::ConnectionLimitReached => "connection-limit-reached",
            types::ErrorCode::ConnectionRefused => "connection-refused",
            types::ErrorCode::TlsCertificateError => "TLS-certificate-error",
            types::ErrorCode::TlsProtocolError => "TLS-protocol-error",
            _ => "HTTP-error",
        };
        Self::new(name, format!("{url}: {code:?}"))
    }

    /// Whether the function's allow-list refused the origin.
    pub fn is_denied(&self) -> bool {
        self.code == "HTTP-request-denied"
    }

    /// Whether the request ran out of time (its own timeout or the invocation's deadline).
    pub fn is_timeout(&self) -> bool {
        self.code.ends_with("timeout")
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

// Returned with `?` from a handler it becomes a 500 carrying this message.
impl std::error::Error for HttpError {}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// A response received, with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(format!(
                "the response ({} bytes, status {}) is not the JSON expected: {e}",
                self.body.len(),
                self.status
            ))
        })
    }
}

/// Sends a GET to `url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

impl Request {
    /// A request with `method` (`GET`, `POST`, …) to `url` (`https://host[:port]/path?query`).
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A GET.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A POST.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::new(format!("request body is not serializable: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sets a form body (`application/x-www-form-urlencoded`) from pairs.
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }

    /// Adds HTTP Basic authentication.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", &format!("Basic {token}"))
    }

    /// Gives up after `timeout` for each of connecting, the first byte and the gaps between
    /// bytes (the invocation's deadline cuts each further).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let headers = types::Fields::new();
        // A known length, rather than a chunked body, which not every API accepts.
        if !self.body.is_empty()
            && !self
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            headers
                .append("content-length", self.body.len().to_string().as_bytes())
                .map_err(|e| HttpError::new("invalid-request", format!("content-length: {e:?}")))?;
        }
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| HttpError::new("invalid-request", format!("header {name}: {e:?}")))?;
        }
        let request = types::OutgoingRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => types::Method::Get,
            "HEAD" => types::Method::Head,
            "POST" => types::Method::Post,
            "PUT" => types::Method::Put,
            "DELETE" => types::Method::Delete,
            "PATCH" => types::Method::Patch,
            "OPTIONS" => types::Method::Options,
            other => types::Method::Other(other.to_owned()),
        };
        let invalid =
            |what: &str| HttpError::new("invalid-request", format!("{}: {what}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| invalid("path"))?;
        let options = self.timeout.map(|timeout| {
            let options = types::RequestOptions::new();
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        let body = request.body().map_err(|()| invalid("body"))?;
        // Sent first, so the host drains the body as it is written.
        let pending = outgoing_handler::handle(request, options)
            .map_err(|code| HttpError::from_code(&self.url, code))?;
        {
            let stream = body.write().map_err(|()| invalid("body"))?;
            for chunk in self.body.chunks(WRITE_CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::new("HTTP-request-body", format!("{e:?}")))?;
            }
        }
        types::OutgoingBody::finish(body, None)
            .map_err(|code| HttpError::from_code(&self.url, code))?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(HttpError::from_code(&self.url, code)),
            _ => {
                return Err(HttpError::new(
                    "HTTP-error",
                    format!("{}: no response", self.url),
                ));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| invalid("response body"))?;
        let mut body = Vec::new();
        {
            let stream = incoming.stream().map_err(|()| invalid("response body"))?;
            loop {
                match stream.blocking_read(READ_CHUNK) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(error)) => {
                        let code = types::http_error_code(&error);
                        return Err(match code {
                            Some(code) => HttpError::from_code(&self.url, code),
                            None => HttpError::new(
                                "HTTP-error",
                                format!("{}: {}", self.url, error.to_debug_string()),
                            ),
                        });
                    }
                }
            }
        }
        drop(types::IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Splits `scheme://authority/path?query`.
fn split_url(url: &str) -> Result<(types::Scheme, &str, &str), HttpError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (types::Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (types::Scheme::Http, rest)
    } else {
        return Err(HttpError::new(
            "invalid-request",
            format!("{url}: expected an http:// or https:// URL"),
        ));
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(HttpError::new("invalid-request", format!("{url}: no host")));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (_, authority, path) = split_url("https://api.mailgun.net/v3/x/messages?a=1").unwrap();
        assert_eq!((authority, path), ("api.mailgun.net", "/v3/x/messages?a=1"));
        let (_, authority, path) = split_url("http://127.0.0.1:8081").unwrap();
        assert_eq!((authority, path), ("127.0.0.1:8081", "/"));
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("https:///x").is_err());
    }
}
