//! # Eddy: an event-driven serverless runtime
//!
//! Eddy runs WebAssembly functions on events: entries in Redis Streams, cron ticks, direct
//! invocations. Each event gets a fresh sandboxed instance; the status it returns decides
//! whether the event is done, rejected or retried.
//!
//! Layout:
//! - [`engine`]: wasmtime, limits, compiling and caching components, `invoke`.
//! - [`event`]: the host's CloudEvents-shaped event type.
//! - [`triggers`]: what turns outside events into invocations (Redis streams).
//! - [`delivery`]: what an outcome means: ack, retry after backoff, dead-letter.
//! - [`broker`]: connecting to Redis, or starting a private one; publishing.
//! - [`inputs`]: local input files, read with a cap.
//! - [`manifest`]: the function manifest, `eddy.toml`.
//! - [`names`]: the one validation of every name users and guests give.
//! - [`api`]: the HTTP API every host serves: health, readiness, event ingress.
//! - [`registry`]: deployed functions and their versions, in Redis.
//! - [`metrics`]: Prometheus metrics served at `/metrics`.
//! - [`charts`]: each function's last 15 minutes, for the web page's charts.
//! - [`retention`]: trimming streams by policy, never below what a group still needs.
//! - [`records`]: invocation records for `eddy logs` and `eddy trace`.
//! - [`status`]: host heartbeats and the cluster status `eddy status` shows.
//! - [`host`]: the `eddy up` process: load, run every trigger, drain on shutdown.
//! - [`cli`]: the `eddy` command line, one module per command.
//! - [`units`]: sizes and durations as people write them.

#![deny(missing_docs)]

pub mod api;
pub mod broker;
pub mod canary;
pub mod charts;
pub mod cli;
pub mod delivery;
pub mod engine;
pub mod event;
pub mod host;
pub mod inputs;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod records;
pub mod registry;
pub mod retention;
pub mod schemas;
pub mod status;
pub mod telemetry;
pub mod triggers;
pub mod units;
