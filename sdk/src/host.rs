//! The host's capabilities as plain functions: publish events, do an effect once, log, read
//! settings.

use std::time::Duration;

use crate::Error;
use crate::bindings::eddy::function::{
    config as wit_config, idempotency, logging, publisher, secrets, types,
};
use serde::Serialize;

fn reason(error: types::Error) -> String {
    match error {
        types::Error::Denied(m) => format!("denied: {m}"),
        types::Error::Invalid(m) => format!("invalid: {m}"),
        types::Error::Unavailable(m) => format!("unavailable: {m}"),
    }
}

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
        Error::new(format!(
            "publish {event_type} to {stream} failed: {}",
            reason(error)
        ))
    })
}

/// Claims `key` (scoped to this function) so an effect happens once even though an event can
/// be delivered more than once. `Ok(true)`: go ahead. `Ok(false)`: an earlier invocation did
/// it: skip it. `Err`: another invocation is doing it right now (or the host is unavailable);
/// returned with `?` it fails this invocation, which is retried. The claim is kept for `ttl`
/// (whole seconds, 1 s to 30 days) if this invocation succeeds, and released if it fails, so a
/// retry can do the effect then.
///
/// ```ignore
/// if eddy_sdk::once(&format!("charge:{}", order.id), Duration::from_secs(86_400))? {
///     charge(&order)?;
/// }
/// ```
pub fn once(key: &str, ttl: Duration) -> Result<bool, Error> {
    let seconds = u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX);
    idempotency::once(key, seconds)
        .map_err(|error| Error::new(format!("once {key:?} failed: {}", reason(error))))
}

/// Reads the function's setting `key` (from its manifest's `[config]` table).
pub fn config(key: &str) -> Option<String> {
    wit_config::get(key)
}

/// Reads the function's secret `name` (from its manifest's `[secrets]`, resolved by the host).
/// The host redacts the value from everything it keeps of the invocation: do not publish it.
pub fn secret(name: &str) -> Option<String> {
    secrets::get(name)
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
