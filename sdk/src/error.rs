//! The error a handler returns with `?`: a status and a message, turned into the response.

use crate::Response;
use std::fmt;

/// A handler error: becomes a response with [`Error::status`] and a JSON body
/// `{"error": message}`.
///
/// Any `std::error::Error` converts into it with `?` as a 500 (failed, retried); use
/// [`Error::bad_request`] for an event that can never succeed (400, rejected, not retried).
pub struct Error {
    status: u16,
    message: String,
}

impl Error {
    /// A failure (500): the event is retried later.
    pub fn new(message: impl Into<String>) -> Self {
        Self::with_status(500, message)
    }

    /// A rejection (400): the event is bad and will never succeed; it is not retried.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::with_status(400, message)
    }

    /// An error with an explicit status (4xx rejects, 5xx fails).
    pub fn with_status(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The status the response will carry.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The human-readable reason.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response this error becomes.
    pub fn into_response(self) -> Response {
        Response::error(self.status, &self.message)
    }
}

/// Mirrors `anyhow`: any error type converts, keeping its chain of causes in the message.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("status", &self.status)
            .field("message", &self.message)
            .finish()
    }
}
