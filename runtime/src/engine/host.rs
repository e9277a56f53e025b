//! The per-invocation store data and the host side of the WIT imports.
//!
//! Each invocation gets a fresh [`InvocationState`]: an empty WASI context (no files, sockets,
//! environment or inherited stdio), the output capture, the memory limiter, and the function's
//! settings and publisher. The `Host` impls below are the only way a guest reaches the host.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capture::{LogLevel, OutputCapture};
use super::publish::{OnceClaim, PublishError, PublishRequest, Publisher, validate_publish};

/// Host bindings generated from `wit/`, the same contract the guest SDK reads.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "eddy:function/function@0.1.1",
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
    /// This invocation's token for `once` claims.
    token: String,
    /// When its `once` claims lapse if never settled: its deadline plus a little.
    claims_lapse: std::time::Instant,
    /// The `once` keys it claimed, settled when it ends.
    pub claims: Vec<OnceClaim>,
}

impl InvocationState {
    /// Fresh state for one invocation of `function` handling event `event_id`.
    pub fn new(
        function: Arc<str>,
        event_id: String,
        max_memory_bytes: usize,
        capture: OutputCapture,
        config: Arc<BTreeMap<String, String>>,
        publisher: Arc<dyn Publisher>,
        claims_lapse: std::time::Instant,
    ) -> Self {
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
            limiter: MemoryLimiter::new(max_memory_bytes),
            capture,
            function,
            event_id,
            config,
            publisher,
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
    fn publish(
        &mut self,
        stream: String,
        event_type: String,
        data: Vec<u8>,
    ) -> Result<String, wit::Error> {
        let request = PublishRequest {
            function: self.function.to_string(),
            stream,
            event_type,
            data,
            caused_by: self.event_id.clone(),
            extensions: Vec::new(),
        };
        let result = validate_publish(&request.stream, &request.event_type)
            .and_then(|()| self.publisher.publish(request.clone()));
        match &result {
            Ok(id) => tracing::debug!(
                function = %self.function, stream = %request.stream,
                event_type = %request.event_type, id = %id, "published"
            ),
            Err(error) => tracing::warn!(
                function = %self.function, stream = %request.stream, %error, "publish refused"
            ),
        }
        result.map_err(|error| match error {
            PublishError::Denied(m) => wit::Error::Denied(m),
            PublishError::Invalid(m) => wit::Error::Invalid(m),
            PublishError::Unavailable(m) => wit::Error::Unavailable(m),
        })
    }
}

impl logging::Host for InvocationState {
    fn log(&mut self, level: logging::Level, message: String) {
        use logging::Level;
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let function = &*self.function;
        match level {
            LogLevel::Trace => tracing::trace!(function, guest = true, "{message}"),
            LogLevel::Debug => tracing::debug!(function, guest = true, "{message}"),
            LogLevel::Info => tracing::info!(function, guest = true, "{message}"),
            LogLevel::Warn => tracing::warn!(function, guest = true, "{message}"),
            LogLevel::Error => tracing::error!(function, guest = true, "{message}"),
        }
        self.capture.log(level, &message);
    }
}

impl idempotency::Host for InvocationState {
    fn once(&mut self, key: String, ttl_seconds: u32) -> Result<bool, wit::Error> {
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
        // Remembered before asking: if the answer is lost after Redis took the claim, settling
        // still releases it (settling only touches a key this invocation's token holds).
        if !self.claims.iter().any(|c| c.key == claim.key) {
            self.claims.push(claim.clone());
        }
        self.publisher.claim_once(&claim).map_err(|e| match e {
            PublishError::Denied(m) => wit::Error::Denied(m),
            PublishError::Invalid(m) => wit::Error::Invalid(m),
            PublishError::Unavailable(m) => wit::Error::Unavailable(m),
        })
    }
}

impl config::Host for InvocationState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}
