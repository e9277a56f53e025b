//! The per-invocation store data and the host side of the WIT imports.
//!
//! Each invocation gets a fresh [`InvocationState`]: an empty WASI context (no files, sockets,
//! environment or inherited stdio), the output capture, the memory limiter, and the function's
//! settings and publisher. The `Host` impls below are the only way a guest reaches the host.
//!
//! Every import is `async`: one that waits (a publish to Redis, a `once` claim) parks the
//! invocation's future instead of blocking a thread, and the invocation's deadline, which drops
//! that future, reaches it wherever it waits. Each import also spends from the invocation's
//! budgets (output, published events and bytes) before it does anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capture::{LogLevel, OutputCapture, floor_char_boundary};
use super::limits::{Limits, MAX_ECHOED_LOG_BYTES, MAX_ECHOED_LOG_LINES, MAX_ONCE_KEYS};
use super::publish::{OnceClaim, PublishError, PublishRequest, Publisher, validate_publish};

/// Host bindings generated from `wit/`, the same contract the guest SDK reads.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "eddy:function/function@0.1.1",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use bindings::eddy::function::types as wit;
use bindings::eddy::function::{config, idempotency, logging, publisher};
pub use bindings::{Function, FunctionPre};

/// Refuses memory growth past the function's limit and remembers that it did, so a trap that
/// follows can be reported as the memory limit rather than an anonymous abort.
pub struct MemoryLimiter {
    max_bytes: usize,
    /// The size the guest asked for when it was refused.
    pub refused: Option<usize>,
}

impl MemoryLimiter {
    /// A limiter allowing memories up to `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            refused: None,
        }
    }
}

/// Most table elements an instance may have; far above what real guests use.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Everything one invocation's store holds.
pub struct InvocationState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory limiter consulted by wasmtime on every growth.
    pub limiter: MemoryLimiter,
    /// Where stdout, stderr and logs go.
    pub capture: OutputCapture,
    function: Arc<str>,
    event_id: String,
    config: Arc<BTreeMap<String, String>>,
    publisher: Arc<dyn Publisher>,
    /// The function's limits, for the publish budgets.
    limits: Limits,
    /// Events published so far, and their data bytes.
    published: (u32, u64),
    /// Guest log lines echoed into the host's log so far.
    echoed: usize,
    /// This invocation's token for `once` claims.
    token: String,
    /// When its `once` claims lapse if never settled: its deadline plus a little.
    claims_lapse: std::time::Instant,
    /// The `once` keys it claimed, settled when it ends.
    pub claims: Vec<OnceClaim>,
}

/// What an invocation's store is made from.
pub struct StateParts {
    /// The function's name.
    pub function: Arc<str>,
    /// The event being handled.
    pub event_id: String,
    /// The function's limits.
    pub limits: Limits,
    /// Where output goes.
    pub capture: OutputCapture,
    /// The function's settings.
    pub config: Arc<BTreeMap<String, String>>,
    /// Where published events go.
    pub publisher: Arc<dyn Publisher>,
    /// When unsettled `once` claims lapse.
    pub claims_lapse: std::time::Instant,
}

impl InvocationState {
    /// Fresh state for one invocation.
    pub fn new(parts: StateParts) -> Self {
        let StateParts {
            function,
            event_id,
            limits,
            capture,
            config,
            publisher,
            claims_lapse,
        } = parts;
        // The builder's defaults already give no preopens, no env, no args and denied network
        // addresses; TCP/UDP are switched off too so socket creation itself fails.
        let wasi = WasiCtx::builder()
            .stdout(capture.stdout())
            .stderr(capture.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX)),
            capture,
            function,
            event_id,
            config,
            publisher,
            limits,
            published: (0, 0),
            echoed: 0,
            token: uuid::Uuid::new_v4().simple().to_string(),
            claims_lapse,
            claims: Vec::new(),
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for InvocationState {}

impl publisher::Host for InvocationState {
    async fn publish(
        &mut self,
        stream: String,
        event_type: String,
        data: Vec<u8>,
    ) -> Result<String, wit::Error> {
        let result = self.spend_publish(&stream, &event_type, &data);
        let result = match result {
            Ok(()) => {
                let request = PublishRequest {
                    function: self.function.to_string(),
                    stream,
                    event_type,
                    data,
                    caused_by: self.event_id.clone(),
                    extensions: Vec::new(),
                };
                let (stream, event_type) = (request.stream.clone(), request.event_type.clone());
                let published = self.publisher.publish(request).await;
                match &published {
                    Ok(id) => tracing::debug!(
                        function = %self.function, %stream, %event_type, %id, "published"
                    ),
                    Err(error) => tracing::warn!(
                        function = %self.function, %stream, %error, "publish refused"
                    ),
                }
                published
            }
            Err(error) => {
                tracing::warn!(function = %self.function, %stream, %error, "publish refused");
                Err(error)
            }
        };
        result.map_err(wit_error)
    }
}

impl InvocationState {
    /// Checks a publish and spends it from the invocation's budgets: the event itself (name,
    /// type, JSON data of bounded size), then the count and bytes left.
    fn spend_publish(
        &mut self,
        stream: &str,
        event_type: &str,
        data: &[u8],
    ) -> Result<(), PublishError> {
        validate_publish(stream, event_type, data)?;
        let (count, bytes) = self.published;
        if count >= self.limits.publish_count {
            return Err(PublishError::Denied(format!(
                "this invocation already published {count} events, the limit \
                 (limits.publish_count = {})",
                self.limits.publish_count
            )));
        }
        let total = bytes + data.len() as u64;
        if total > self.limits.publish_bytes {
            return Err(PublishError::Denied(format!(
                "publishing {} more bytes would take this invocation to {total} bytes of event \
                 data, over its limit (limits.publish_bytes = {})",
                data.len(),
                self.limits.publish_bytes
            )));
        }
        self.published = (count + 1, total);
        Ok(())
    }
}

fn wit_error(error: PublishError) -> wit::Error {
    match error {
        PublishError::Denied(m) => wit::Error::Denied(m),
        PublishError::Invalid(m) => wit::Error::Invalid(m),
        PublishError::Unavailable(m) => wit::Error::Unavailable(m),
    }
}

impl logging::Host for InvocationState {
    async fn log(&mut self, level: logging::Level, message: String) {
        use logging::Level;
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        // The budget first: a line past it is dropped (and counted), never echoed.
        if self.capture.log(level, &message) == 0 {
            return;
        }
        self.echoed += 1;
        let function = &*self.function;
        if self.echoed > MAX_ECHOED_LOG_LINES {
            if self.echoed == MAX_ECHOED_LOG_LINES + 1 {
                tracing::info!(
                    function,
                    guest = true,
                    echoed = MAX_ECHOED_LOG_LINES,
                    "further guest log lines of this invocation are kept in its record only"
                );
            }
            return;
        }
        // Control characters are escaped by the host's log formatter (see `cli`), so a line
        // with a line break cannot pose as a line of its own.
        let text = &message[..floor_char_boundary(&message, MAX_ECHOED_LOG_BYTES)];
        match level {
            LogLevel::Trace => tracing::trace!(function, guest = true, "{text}"),
            LogLevel::Debug => tracing::debug!(function, guest = true, "{text}"),
            LogLevel::Info => tracing::info!(function, guest = true, "{text}"),
            LogLevel::Warn => tracing::warn!(function, guest = true, "{text}"),
            LogLevel::Error => tracing::error!(function, guest = true, "{text}"),
        }
    }
}

impl idempotency::Host for InvocationState {
    async fn once(&mut self, key: String, ttl_seconds: u32) -> Result<bool, wit::Error> {
        let claim = OnceClaim {
            function: self.function.to_string(),
            key,
            token: self.token.clone(),
            ttl: std::time::Duration::from_secs(u64::from(ttl_seconds)),
            lease: self
                .claims_lapse
                .saturating_duration_since(std::time::Instant::now())
                .max(std::time::Duration::from_millis(1)),
        };
        claim.validate().map_err(wit_error)?;
        // Remembered before asking: if the answer is lost after Redis took the claim, settling
        // still releases it (settling only touches a key this invocation's token holds).
        if !self.claims.iter().any(|c| c.key == claim.key) {
            if self.claims.len() >= MAX_ONCE_KEYS {
                return Err(wit::Error::Denied(format!(
                    "this invocation already claimed {MAX_ONCE_KEYS} once keys, the most one may"
                )));
            }
            self.claims.push(claim.clone());
        }
        self.publisher.claim_once(&claim).await.map_err(wit_error)
    }
}

impl config::Host for InvocationState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}
