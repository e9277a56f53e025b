//! The per-invocation store data and the host side of the WIT imports.
//!
//! Each invocation gets a fresh [`InvocationState`]: an empty WASI context (no files, sockets,
//! environment or inherited stdio), the output capture, the memory limiter, the function's
//! settings, secrets and publisher, its key-value store, and its outbound HTTP gate
//! ([`super::outbound`]). The `Host` impls below, and wasmtime-wasi's and wasmtime-wasi-http's
//! over this state, are the only way a guest reaches the host.
//!
//! Every import is `async`: one that waits (a publish to Redis, a `once` claim) parks the
//! invocation's future instead of blocking a thread, and the invocation's deadline, which drops
//! that future, reaches it wherever it waits. Each import also spends from the invocation's
//! budgets (output, published events and bytes) before it does anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::ONCE_LEASE_SLACK;
use super::capture::{LogLevel, OutputCapture, floor_char_boundary};
use super::keyvalue::{
    BucketId, KeyValue, KvError, MAX_OPEN_BUCKETS, MAX_OPEN_CAS, check_key, check_keys, check_value,
};
use super::limits::{
    Limits, MAX_ECHOED_LOG_BYTES, MAX_ECHOED_LOG_LINES, MAX_HOST_RESOURCES, MAX_HTTP_FIELDS_BYTES,
    MAX_ONCE_KEYS,
};
use super::outbound::Outbound;
use super::publish::{OnceClaim, PublishError, PublishRequest, Publisher, validate_publish};
use super::secrets::Secrets;

/// Host bindings generated from `wit/`, the same contract the guest SDK reads: its `host-side`
/// world, the part of `function` the host implements itself (WASI HTTP and the rest come from
/// wasmtime-wasi and wasmtime-wasi-http). The key-value resources are this module's types.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "eddy:function/host-side@0.1.2",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::OpenBucket,
            "wasi:keyvalue/atomics.cas": super::OpenCas,
        },
    });
}

pub use bindings::HostSide as FunctionBindings;
pub use bindings::HostSidePre as FunctionPre;
pub use bindings::eddy::function::types as wit;
use bindings::eddy::function::{config, idempotency, logging, publisher, secrets};
use bindings::wasi::keyvalue::{atomics, batch, store};

/// Adds the host side of Eddy's own interfaces and of `wasi:keyvalue` to `linker`. (The WASI
/// packages bound by wasmtime-wasi and wasmtime-wasi-http are added by those crates.)
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<InvocationState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    type Me = HasSelf<InvocationState>;
    fn me(state: &mut InvocationState) -> &mut InvocationState {
        state
    }
    bindings::eddy::function::types::add_to_linker::<_, Me>(linker, me)?;
    publisher::add_to_linker::<_, Me>(linker, me)?;
    logging::add_to_linker::<_, Me>(linker, me)?;
    config::add_to_linker::<_, Me>(linker, me)?;
    idempotency::add_to_linker::<_, Me>(linker, me)?;
    secrets::add_to_linker::<_, Me>(linker, me)?;
    store::add_to_linker::<_, Me>(linker, me)?;
    atomics::add_to_linker::<_, Me>(linker, me)?;
    batch::add_to_linker::<_, Me>(linker, me)?;
    Ok(())
}

/// The `wasi:http/types` instance wasmtime-wasi-http 48 defines (guests importing any 0.2.x
/// resolve to it).
const WASI_HTTP_TYPES: &str = "wasi:http/types@0.2.12";

/// Replaces wasmtime-wasi-http's `http-error-code`, which only recognises an error already in
/// the standard's shape: an error a response body's stream ends with (the body grew past
/// `http_response_bytes`, a read timed out) reaches the guest in the crate's own error type,
/// so the guest would see no code at all. Must follow wasmtime-wasi-http's `add_to_linker`.
pub fn add_http_error_code(
    linker: &mut wasmtime::component::Linker<InvocationState>,
) -> wasmtime::Result<()> {
    use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
    linker.allow_shadowing(true);
    linker.instance(WASI_HTTP_TYPES)?.func_wrap(
        "http-error-code",
        |store: wasmtime::StoreContextMut<'_, InvocationState>,
         (error,): (Resource<wasmtime::Error>,)| {
            let error = store.data().table.get(&error)?;
            let code = error.downcast_ref::<ErrorCode>().cloned().or_else(|| {
                error
                    .downcast_ref::<wasmtime_wasi_http::Error>()
                    .and_then(standard_code)
            });
            Ok((code,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The standard error code of an error a response body's stream can end with.
fn standard_code(
    error: &wasmtime_wasi_http::Error,
) -> Option<wasmtime_wasi_http::p2::bindings::http::types::ErrorCode> {
    use wasmtime_wasi_http::Error as E;
    use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
    Some(match error {
        E::HttpResponseBodySize(limit) => ErrorCode::HttpResponseBodySize(*limit),
        E::ConnectionReadTimeout => ErrorCode::ConnectionReadTimeout,
        E::ConnectionTimeout => ErrorCode::ConnectionTimeout,
        E::ConnectionTerminated => ErrorCode::ConnectionTerminated,
        E::HttpResponseTimeout => ErrorCode::HttpResponseTimeout,
        E::HttpResponseIncomplete => ErrorCode::HttpResponseIncomplete,
        E::HttpProtocolError | E::Hyper(_) => ErrorCode::HttpProtocolError,
        _ => return None,
    })
}

/// A bucket a guest opened: which one it is.
pub struct OpenBucket(BucketId);

/// A compare-and-swap a guest started: the key and the value it read.
pub struct OpenCas {
    bucket: BucketId,
    key: String,
    read: Option<Vec<u8>>,
}

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
    /// When its wall-time limit passes: no effect is made after it, and unsettled `once`
    /// claims lapse a little after it ([`ONCE_LEASE_SLACK`]).
    deadline: std::time::Instant,
    /// The `once` keys it claimed, settled when it ends.
    pub claims: Vec<OnceClaim>,
    /// The first publish Redis could not take (stream, error): a success that lost a publish
    /// is turned into a failure, so the retry publishes again and nothing is lost.
    pub publish_failed: Option<(String, String)>,
    /// Its secrets.
    secrets: Arc<Secrets>,
    /// Where its buckets live, and which of their names are shared.
    keyvalue: Arc<dyn KeyValue>,
    shared_buckets: Arc<Vec<String>>,
    open_buckets: usize,
    open_cas: usize,
    /// Key-value bytes written so far, against `limits.kv_write_bytes`.
    kv_written: u64,
    /// `wasi:http`'s state, and the gate its requests pass.
    http: WasiHttpCtx,
    outbound: Outbound,
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
    /// When the invocation's wall-time limit passes.
    pub deadline: std::time::Instant,
    /// The function's secrets.
    pub secrets: Arc<Secrets>,
    /// Where its buckets live.
    pub keyvalue: Arc<dyn KeyValue>,
    /// The bucket names its manifest shares.
    pub shared_buckets: Arc<Vec<String>>,
    /// Its outbound HTTP gate.
    pub outbound: Outbound,
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
            deadline,
            secrets,
            keyvalue,
            shared_buckets,
            outbound,
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
        // Every handle lives in host memory, outside the guest's memory limit: bounded here.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
        Self {
            wasi,
            table,
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
            deadline,
            claims: Vec::new(),
            publish_failed: None,
            secrets,
            keyvalue,
            shared_buckets,
            open_buckets: 0,
            open_cas: 0,
            kv_written: 0,
            http,
            outbound,
        }
    }

    /// Readies the state of an instance that already handled an event for the next event of
    /// its batch: that event's id, publisher (carrying its trace), `once` token and lapse,
    /// outbound gate (with its deadline) and fresh per-event budgets (output, publishes,
    /// key-value writes). What the instance itself holds (its memory, open handles) stays:
    /// sharing it is what a batch trades for speed.
    pub fn begin_event(
        &mut self,
        event_id: String,
        publisher: Arc<dyn Publisher>,
        deadline: std::time::Instant,
        outbound: Outbound,
    ) {
        self.event_id = event_id;
        self.publisher = publisher;
        self.deadline = deadline;
        self.claims.clear();
        self.publish_failed = None;
        self.token = uuid::Uuid::new_v4().simple().to_string();
        self.published = (0, 0);
        self.echoed = 0;
        self.kv_written = 0;
        self.limiter.refused = None;
        self.capture.reset(self.limits.output_bytes);
        self.outbound = outbound;
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
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
        let published = match self.spend_publish(&stream, &event_type, &data) {
            Ok(()) => {
                let request = PublishRequest {
                    function: self.function.to_string(),
                    stream: stream.clone(),
                    event_type: event_type.clone(),
                    data,
                    caused_by: self.event_id.clone(),
                    extensions: Vec::new(),
                };
                self.publisher.publish(request).await
            }
            Err(error) => Err(error),
        };
        match &published {
            Ok(id) => tracing::debug!(
                function = %self.function, %stream, %event_type, %id, "published"
            ),
            Err(error) => {
                tracing::warn!(function = %self.function, %stream, %error, "publish refused");
                if let PublishError::Unavailable(message) = error
                    && self.publish_failed.is_none()
                {
                    self.publish_failed = Some((stream.clone(), message.clone()));
                }
            }
        }
        published.map_err(wit_error)
    }
}

impl InvocationState {
    /// Refuses an effect (a publish, a `once` claim, a key-value write) once the invocation's
    /// wall-time limit has passed. A host stalled past it (stopped, starved) resumes mid-call
    /// after another host claimed the event and ran it: the stale invocation must not act.
    fn before_effect(&self) -> Result<(), String> {
        if std::time::Instant::now() >= self.deadline {
            return Err(format!(
                "the invocation's wall-time limit ({:?}) has passed: no more effects",
                self.limits.timeout
            ));
        }
        Ok(())
    }

    /// Checks a publish and spends it from the invocation's budgets: the event itself (name,
    /// type, JSON data of bounded size), then the count and bytes left.
    fn spend_publish(
        &mut self,
        stream: &str,
        event_type: &str,
        data: &[u8],
    ) -> Result<(), PublishError> {
        validate_publish(stream, event_type, data)?;
        self.before_effect().map_err(PublishError::Unavailable)?;
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
        // Redacted whole, then cut: a secret the cut splits would otherwise leave its start.
        let mut text = self.secrets.redact(&message).into_owned();
        if text.len() > MAX_ECHOED_LOG_BYTES {
            text.truncate(floor_char_boundary(&text, MAX_ECHOED_LOG_BYTES));
            self.secrets.redact_cut(&mut text);
        }
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
            lease: (self.deadline + ONCE_LEASE_SLACK)
                .saturating_duration_since(std::time::Instant::now())
                .max(std::time::Duration::from_millis(1)),
        };
        claim.validate().map_err(wit_error)?;
        self.before_effect()
            .map_err(|m| wit_error(PublishError::Unavailable(m)))?;
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

impl secrets::Host for InvocationState {
    async fn get(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name).map(str::to_owned)
    }
}

fn kv_error(error: KvError) -> store::Error {
    store::Error::Other(error.to_string())
}

impl InvocationState {
    /// Counts `bytes` against the invocation's key-value write budget; an error naming the
    /// limit once it would be passed.
    fn spend_kv_write(&mut self, bytes: u64) -> Result<(), store::Error> {
        self.before_effect().map_err(store::Error::Other)?;
        let total = self.kv_written.saturating_add(bytes);
        if total > self.limits.kv_write_bytes {
            return Err(store::Error::Other(format!(
                "this write of {bytes} bytes would pass the invocation's kv_write_bytes limit \
                 of {} bytes ({} written so far)",
                self.limits.kv_write_bytes, self.kv_written
            )));
        }
        self.kv_written = total;
        Ok(())
    }

    fn bucket(&self, bucket: &Resource<OpenBucket>) -> Result<BucketId, store::Error> {
        self.table
            .get(bucket)
            .map(|open| open.0.clone())
            .map_err(|e| store::Error::Other(format!("bucket: {e}")))
    }
}

impl store::Host for InvocationState {
    async fn open(&mut self, identifier: String) -> Result<Resource<OpenBucket>, store::Error> {
        if crate::names::identifier(&identifier).is_err() {
            return Err(store::Error::NoSuchStore);
        }
        if self.open_buckets >= MAX_OPEN_BUCKETS {
            return Err(store::Error::Other(format!(
                "this invocation already holds {MAX_OPEN_BUCKETS} open buckets, the most one may"
            )));
        }
        let id = BucketId::of(&self.function, &identifier, &self.shared_buckets);
        let bucket = self
            .table
            .push(OpenBucket(id))
            .map_err(|e| store::Error::Other(e.to_string()))?;
        self.open_buckets += 1;
        Ok(bucket)
    }
}

impl store::HostBucket for InvocationState {
    async fn get(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let id = self.bucket(&bucket)?;
        check_key(&key).map_err(kv_error)?;
        self.keyvalue.get(&id, &key).await.map_err(kv_error)
    }

    async fn set(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let id = self.bucket(&bucket)?;
        check_key(&key)
            .and_then(|()| check_value(&value))
            .map_err(kv_error)?;
        self.spend_kv_write((key.len() + value.len()) as u64)?;
        self.keyvalue.set(&id, &key, &value).await.map_err(kv_error)
    }

    async fn delete(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Result<(), store::Error> {
        let id = self.bucket(&bucket)?;
        check_key(&key).map_err(kv_error)?;
        self.keyvalue.delete(&id, &[key]).await.map_err(kv_error)
    }

    async fn exists(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Result<bool, store::Error> {
        let id = self.bucket(&bucket)?;
        check_key(&key).map_err(kv_error)?;
        self.keyvalue.exists(&id, &key).await.map_err(kv_error)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<OpenBucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        let id = self.bucket(&bucket)?;
        if cursor
            .as_ref()
            .is_some_and(|c| c.len() > super::keyvalue::MAX_KEY_BYTES)
        {
            return Err(store::Error::Other(
                "cursor: not one list-keys gave".to_owned(),
            ));
        }
        let (keys, cursor) = self.keyvalue.keys(&id, cursor).await.map_err(kv_error)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<OpenBucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.open_buckets = self.open_buckets.saturating_sub(1);
        Ok(())
    }
}

impl atomics::Host for InvocationState {
    async fn increment(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        let id = self.bucket(&bucket)?;
        check_key(&key).map_err(kv_error)?;
        // A new key costs its name and a number.
        self.spend_kv_write((key.len() + 8) as u64)?;
        self.keyvalue
            .increment(&id, &key, delta)
            .await
            .map_err(kv_error)
    }

    async fn swap(
        &mut self,
        cas: Resource<OpenCas>,
        value: Vec<u8>,
    ) -> Result<(), atomics::CasError> {
        let store_error = |e: store::Error| atomics::CasError::StoreError(e);
        check_value(&value).map_err(|e| store_error(kv_error(e)))?;
        self.spend_kv_write(value.len() as u64)
            .map_err(store_error)?;
        let (bucket, key, read) = {
            let open = self
                .table
                .get(&cas)
                .map_err(|e| store_error(store::Error::Other(format!("cas: {e}"))))?;
            (open.bucket.clone(), open.key.clone(), open.read.clone())
        };
        let swapped = self
            .keyvalue
            .swap(&bucket, &key, read.as_deref(), &value)
            .await
            .map_err(|e| store_error(kv_error(e)))?;
        if swapped {
            if self.table.delete(cas).is_ok() {
                self.open_cas = self.open_cas.saturating_sub(1);
            }
            Ok(())
        } else {
            // Handed back, so the guest can read the value again and retry.
            Err(atomics::CasError::CasFailed(cas))
        }
    }
}

impl atomics::HostCas for InvocationState {
    async fn new(
        &mut self,
        bucket: Resource<OpenBucket>,
        key: String,
    ) -> Result<Resource<OpenCas>, store::Error> {
        let id = self.bucket(&bucket)?;
        check_key(&key).map_err(kv_error)?;
        // Each handle keeps a copy of the value (up to 1 MiB) in host memory.
        if self.open_cas >= MAX_OPEN_CAS {
            return Err(store::Error::Other(format!(
                "this invocation already holds {MAX_OPEN_CAS} compare-and-swap handles, the \
                 most one may: drop one first"
            )));
        }
        let read = self.keyvalue.get(&id, &key).await.map_err(kv_error)?;
        let cas = self
            .table
            .push(OpenCas {
                bucket: id,
                key,
                read,
            })
            .map_err(|e| store::Error::Other(e.to_string()))?;
        self.open_cas += 1;
        Ok(cas)
    }

    async fn current(&mut self, cas: Resource<OpenCas>) -> Result<Option<Vec<u8>>, store::Error> {
        self.table
            .get(&cas)
            .map(|open| open.read.clone())
            .map_err(|e| store::Error::Other(format!("cas: {e}")))
    }

    async fn drop(&mut self, cas: Resource<OpenCas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        self.open_cas = self.open_cas.saturating_sub(1);
        Ok(())
    }
}

impl batch::Host for InvocationState {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let id = self.bucket(&bucket)?;
        check_keys(keys.iter().map(String::as_str)).map_err(kv_error)?;
        let values = self.keyvalue.get_many(&id, &keys).await.map_err(kv_error)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|v| (key, v)))
            .collect())
    }

    async fn set_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        let id = self.bucket(&bucket)?;
        check_keys(key_values.iter().map(|(k, _)| k.as_str())).map_err(kv_error)?;
        for (_, value) in &key_values {
            check_value(value).map_err(kv_error)?;
        }
        let bytes = key_values
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
        self.spend_kv_write(bytes as u64)?;
        self.keyvalue
            .set_many(&id, &key_values)
            .await
            .map_err(kv_error)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        let id = self.bucket(&bucket)?;
        check_keys(keys.iter().map(String::as_str)).map_err(kv_error)?;
        self.keyvalue.delete(&id, &keys).await.map_err(kv_error)
    }
}
