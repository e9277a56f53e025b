//! The host's capabilities as plain functions: publish events, log, read settings.

use crate::Error;
use crate::bindings::eddy::function::{config as wit_config, logging, publisher, types};
use serde::Serialize;

/// Publishes an event of type `event_type` with `data` as its JSON payload to `stream`, and
/// returns the new event's id. A refusal by the host becomes an [`Error`]: a 500 (retried) when
/// the host is unavailable, otherwise a 500 naming the reason.
pub fn publish<T: Serialize + ?Sized>(
    stream: &str,
    event_type: &str,
    data: &T,
) -> Result<String, Error> {
    let data = serde_json::to_vec(data).map_err(|e| {
        Error::new(format!(
            "publish to {stream}: data is not serializable: {e}"
        ))
    })?;
    publisher::publish(stream, event_type, &data).map_err(|error| {
        let reason = match error {
            types::Error::Denied(m) => format!("denied: {m}"),
            types::Error::Invalid(m) => format!("invalid: {m}"),
            types::Error::Unavailable(m) => format!("unavailable: {m}"),
        };
        Error::new(format!("publish {event_type} to {stream} failed: {reason}"))
    })
}

/// Reads the function's setting `key` (from its manifest's `[config]` table).
pub fn config(key: &str) -> Option<String> {
    wit_config::get(key)
}

/// Log lines kept in the host's logs and the invocation's record.
pub mod log {
    use super::logging::{Level, log};

    /// Logs a debug line.
    pub fn debug(message: impl AsRef<str>) {
        log(Level::Debug, message.as_ref());
    }

    /// Logs an info line.
    pub fn info(message: impl AsRef<str>) {
        log(Level::Info, message.as_ref());
    }

    /// Logs a warning.
    pub fn warn(message: impl AsRef<str>) {
        log(Level::Warn, message.as_ref());
    }

    /// Logs an error.
    pub fn error(message: impl AsRef<str>) {
        log(Level::Error, message.as_ref());
    }
}
