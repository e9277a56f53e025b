//! # Eddy: an event-driven serverless runtime
//!
//! Eddy runs WebAssembly functions on events: entries in Redis Streams, cron ticks, direct
//! invocations. Each event gets a fresh sandboxed instance; the status it returns decides
//! whether the event is done, rejected or retried.
//!
//! Layout:
//! - [`engine`]: wasmtime, limits, compiling and caching components, `invoke`.
//! - [`event`]: the host's CloudEvents-shaped event type.
//! - [`cli`]: the `eddy` command line, one module per command.

#![deny(missing_docs)]

pub mod cli;
pub mod engine;
pub mod event;
