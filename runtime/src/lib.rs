//! # Eddy: an event-driven serverless runtime
//!
//! Eddy runs WebAssembly functions on events: entries in Redis Streams, cron ticks, direct
//! invocations. Each event gets a fresh sandboxed instance; the status it returns decides
//! whether the event is done, rejected or retried.
//!
//! Layout, bottom layer first. A module uses only modules of its own layer or below, and no
//! two use each other (`layers.rs` tests both):
//!
//! 1. Foundations: [`units`] (sizes and durations as people write them), [`names`] (the one
//!    validation of every name), [`inputs`] (local files, read with a cap), [`event`] (the
//!    CloudEvents-shaped event), [`outcome`] (done, rejected, failed), [`backoff`] (the one
//!    backoff of every loop), [`metrics`] (Prometheus counters, and the charts' windows).
//! 2. [`engine`]: wasmtime, limits, compiling and caching components, `invoke`. No Redis.
//! 3. [`wire`]: how an event sits in a Redis stream entry.
//! 4. [`broker`]: connecting to Redis (or starting a private one), publishing, key-value.
//! 5. State in Redis, one owner each: [`registry`] (deployed versions), [`canary`],
//!    [`records`] (invocation records), [`schemas`], [`retention`], [`telemetry`] (spans).
//! 6. [`delivery`]: what an outcome means: ack, retry after backoff, dead-letter.
//! 7. [`triggers`]: streams and cron, turning outside events into invocations.
//! 8. The control plane: [`manifest`] (`eddy.toml`, composing each trigger's settings),
//!    [`status`] (heartbeats, cluster status), [`charts`] (the page's last 15 minutes),
//!    [`deployments`] (which functions run here, at which version).
//! 9. [`api`]: the HTTP API every host serves.
//! 10. [`host`]: the `eddy up` process: start, run every room, drain on shutdown.
//! 11. [`cli`]: the `eddy` command line, one module per command.

#![deny(missing_docs)]

pub mod api;
pub mod backoff;
pub mod broker;
pub mod canary;
pub mod charts;
pub mod cli;
pub mod delivery;
pub mod deployments;
pub mod engine;
pub mod event;
pub mod host;
pub mod inputs;
#[cfg(test)]
mod layers;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod outcome;
pub mod records;
pub mod registry;
pub mod retention;
pub mod schemas;
pub mod settings;
pub mod status;
pub mod telemetry;
pub mod triggers;
pub mod units;
pub mod wire;
