//! The engine: compiles components, checks them against the function world, and runs one
//! fresh, sandboxed instance per event.
//!
//! It knows nothing of Redis, cron or HTTP: triggers turn outside events into [`Event`]s and
//! call [`Function::invoke`] (or [`Function::run`] with their hooks); delivery decides what the
//! returned [`InvokeResult`] means for the event. Loading is where the work is: the component
//! is compiled (or fetched from the disk cache), linked against the host imports and
//! pre-instantiated into an `InstancePre`, so an invocation only allocates a pooled instance
//! slot (copy-on-write memory image), runs, and drops it.
//!
//! An invocation is a future (wasmtime's async support): a guest waiting in a host call holds
//! no thread, and one deadline covers everything it does. Guest code is interrupted at the
//! deadline by the epoch callback; a host call it waits in is dropped at the deadline by a
//! timer around the whole call. Either way the result is a timeout, on time.
//!
//! Layout:
//! - `limits`: every limit and its named default.
//! - `cache`: compiled components on disk, keyed by content hash and engine fingerprint.
//! - `imports`: the store data and what a guest can call: the host side of the WIT imports.
//! - `capture`: bounded stdout, stderr and log capture.
//! - `publish`: the `publish` capability's trait and the in-memory publisher.
//! - `keyvalue`: the key-value store's trait, bucket scoping and the in-memory store.
//! - `outbound`: outbound HTTP: allow-list, deadline, limits, TLS.
//! - `secrets`: secrets, and their redaction from what the host keeps.
//! - `result`: what one invocation returned, or why it failed.
//! - `gate`: how many invocations may run guest code at once.
//! - `workers`: the threads invocations run on.
//! - [`propagation`]: trace context carried into published events.

mod cache;
mod capture;
mod gate;
mod imports;
mod keyvalue;
mod limits;
mod outbound;
pub mod propagation;
mod publish;
mod result;
mod secrets;
mod workers;

pub use crate::outcome::Outcome;
pub use cache::{ComponentCache, digest};
pub use capture::{Captured, LogLevel, LogLine, OutputCapture, floor_char_boundary};
pub use gate::CpuGate;
pub use keyvalue::{
    BucketId, KeyValue, KvError, MAX_BATCH_KEYS, MAX_BATCH_READ_BYTES, MAX_KEY_BYTES, MAX_OPEN_CAS,
    MAX_VALUE_BYTES, MemoryKeyValue, check_key, check_value, not_a_number, overflows,
    too_much_to_read,
};
pub use limits::*;
pub use outbound::{AllowList, Origin, OutboundStats};
pub use publish::{
    AllowedStreams, Claimed, HELD_ELSEWHERE, MAX_ONCE_KEY_BYTES, MAX_ONCE_TTL, MemoryPublisher,
    OnceClaim, OnceState, PublishError, PublishRequest, Publisher, validate_publish,
};
pub use result::{Failure, InvokeResult};
pub use secrets::{MIN_SECRET_BYTES, REDACTED, SecretSource, Secrets};
pub use workers::{BatchJob, BatchResults, GROUP_LINGER, Submitted, Workers, default_workers};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::component::Linker;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline};

use crate::event::{Event, TriggerKind};
use imports::{FunctionPre, InvocationState, StateParts, wit};

/// The WIT world every function must implement.
pub const WORLD: &str = "eddy:function/function@0.1.2";

/// The function export every component must provide.
pub const HANDLER_EXPORT: &str = "eddy:function/handler@0.1.2#handle";

/// Why a component could not be loaded; each variant says what was expected.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: expected a component starting with \"\\0asm\"")]
    NotWasm,
    /// A core module was given where a component is needed.
    #[error(
        "a core WebAssembly module, not a component: build the function for the wasm32-wasip2 \
         target (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component failed to validate or compile.
    #[error("invalid component: {0}")]
    Compile(String),
    /// The component does not fit the function world (wrong export, signature or import).
    #[error("component does not implement world {WORLD}: {0}")]
    World(String),
    /// The limits asked for are unusable.
    #[error("invalid limits: {0}")]
    Limits(String),
}

/// The wasmtime engine, its linker of host imports, the epoch ticker, the compile cache and the
/// instance pool's permits. One per host; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    linker: Linker<InvocationState>,
    cache: Option<ComponentCache>,
    /// One permit per pooled instance slot invocations may use: an invocation waits for one
    /// rather than failing when the pool is full.
    instances: Arc<Semaphore>,
    /// The slots kept for load-time checks ([`LOAD_CHECK_INSTANCES`]).
    load_checks: Arc<Semaphore>,
    /// How outbound HTTPS connects: the web roots plus `--ca-file`.
    tls: Arc<rustls::ClientConfig>,
    /// Where deployed functions' secret files may be (`--secret-dir`).
    secret_dirs: Vec<std::path::PathBuf>,
}

impl Engine {
    /// Builds the engine: pooling allocator sized by `config` (plus the load-check slots),
    /// copy-on-write memory images, async support, epoch interruption driven by a background
    /// ticker thread.
    pub fn new(config: &EngineConfig) -> anyhow::Result<Self> {
        let slots = config.max_instances + LOAD_CHECK_INSTANCES;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_memories(slots * MAX_MEMORIES_PER_COMPONENT)
            .total_tables(slots * MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_stacks(slots)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memory_size(MAX_MEMORY_BYTES as usize)
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(config.keep_resident_bytes);
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&wasm)?;

        let mut linker = Linker::new(&wasmtime);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        imports::add_to_linker(&mut linker)?;
        imports::add_http_error_code(&mut linker)?;
        let tls = outbound::tls_config(config.ca_file.as_deref())?;

        spawn_epoch_ticker(&wasmtime);
        let cache = config
            .cache_dir
            .as_deref()
            .map(|dir| ComponentCache::new(dir, &wasmtime));
        Ok(Self {
            inner: Arc::new(EngineInner {
                wasmtime,
                linker,
                cache,
                instances: Arc::new(Semaphore::new(config.max_instances as usize)),
                load_checks: Arc::new(Semaphore::new(LOAD_CHECK_INSTANCES as usize)),
                tls,
                secret_dirs: config.secret_dirs.clone(),
            }),
        })
    }

    /// The folders whose files deployed functions may name as secrets.
    pub fn secret_dirs(&self) -> &[std::path::PathBuf] {
        &self.inner.secret_dirs
    }

    /// Compiles `bytes` (or loads it from the cache), checks it implements the function world,
    /// and pre-instantiates it. Nothing is kept on failure. Blocks (compiling takes a while):
    /// call it from a blocking thread, never from an async task.
    pub fn load(&self, spec: FunctionSpec, bytes: &[u8]) -> Result<Function, LoadError> {
        spec.limits.validate().map_err(LoadError::Limits)?;
        check_header(bytes)?;
        let digest = digest(bytes);
        let started = Instant::now();
        let (component, cached) = match &self.inner.cache {
            Some(cache) => cache.load_or_compile(&self.inner.wasmtime, &digest, bytes),
            None => wasmtime::component::Component::new(&self.inner.wasmtime, bytes)
                .map(|component| (component, false))
                .map_err(anyhow::Error::from),
        }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::World(format!("{e:#}")))?;
        let pre = FunctionPre::new(instance_pre).map_err(|e| LoadError::World(format!("{e:#}")))?;
        self.check_instantiates(&pre, &spec)?;
        tracing::debug!(
            function = %spec.name, %digest, cached,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "component loaded"
        );
        Ok(Function {
            inner: Arc::new(FunctionInner {
                name: spec.name.into(),
                digest,
                version: spec.version,
                limits: spec.limits,
                config: Arc::new(spec.config),
                secrets: Arc::new(spec.secrets),
                outbound: Arc::new(spec.outbound),
                shared_buckets: Arc::new(spec.shared_buckets),
                pool: Arc::default(),
                pre,
                engine: self.clone(),
            }),
        })
    }
}

impl Engine {
    /// Instantiates once in a scratch store, because export signatures are only type-checked
    /// when an instance is made: a wrong `handle` must fail the load, not every event. Uses a
    /// slot of its own ([`LOAD_CHECK_INSTANCES`]) and a small runtime of its own.
    fn check_instantiates(
        &self,
        pre: &FunctionPre<InvocationState>,
        spec: &FunctionSpec,
    ) -> Result<(), LoadError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LoadError::Compile(format!("cannot start the check's runtime: {e}")))?;
        runtime.block_on(async {
            let _slot = self
                .inner
                .load_checks
                .acquire()
                .await
                .expect("the load-check semaphore is never closed");
            let deadline = Instant::now() + LOAD_CHECK_TIMEOUT;
            let function: Arc<str> = spec.name.as_str().into();
            let mut store = new_store(
                &self.inner.wasmtime,
                StateParts {
                    function: function.clone(),
                    event_id: String::new(),
                    limits: spec.limits,
                    capture: OutputCapture::new(0),
                    config: Arc::new(BTreeMap::new()),
                    publisher: Arc::new(MemoryPublisher::default()),
                    deadline,
                    secrets: Arc::new(Secrets::default()),
                    keyvalue: Arc::new(MemoryKeyValue::default()),
                    shared_buckets: Arc::new(Vec::new()),
                    outbound: outbound::Outbound::closed(
                        function,
                        self.inner.tls.clone(),
                        deadline,
                    ),
                },
                deadline,
                Arc::new(AtomicBool::new(false)),
            );
            let instantiated =
                tokio::time::timeout(LOAD_CHECK_TIMEOUT, pre.instantiate_async(&mut store)).await;
            match instantiated {
                Ok(Ok(_)) => Ok(()),
                Err(_) => Err(LoadError::World(format!(
                    "instantiating the component took longer than {LOAD_CHECK_TIMEOUT:?}"
                ))),
                Ok(Err(_)) if store.data().limiter.refused.is_some() => {
                    Err(LoadError::Limits(format!(
                        "the component's initial memory exceeds the memory limit of {} bytes",
                        spec.limits.memory_bytes
                    )))
                }
                Ok(Err(e)) if format!("{e:#}").contains("type mismatch") => {
                    Err(LoadError::World(format!(
                        "export {HANDLER_EXPORT} has the wrong signature, expected \
                         func(event: event) -> response: {e:#}"
                    )))
                }
                Ok(Err(e)) => Err(LoadError::World(format!("{e:#}"))),
            }
        })
    }
}

/// How long after the invocation's deadline (its start plus its timeout) an unsettled `once`
/// claim lasts. The invocation is stopped at the deadline, so a claim still pending after this
/// belongs to a host that died; its event is redelivered no sooner than half the claim margin
/// after the deadline, so the claim has lapsed by then as long as the margin is at least
/// [`MIN_CLAIM_MARGIN`].
pub const ONCE_LEASE_SLACK: Duration = Duration::from_millis(100);
/// The smallest claim margin that keeps [`ONCE_LEASE_SLACK`]'s promise, with room to spare.
pub const MIN_CLAIM_MARGIN: Duration = Duration::from_millis(250);

/// The one way a store is made, for the load-time check and for every event alike: fresh
/// state, the memory limiter, and the epoch callback that interrupts guest code at `deadline`
/// and otherwise yields on every tick (raising `ticked`), so the scheduler and the deadline's
/// timer get a turn however long the guest computes.
fn new_store(
    engine: &wasmtime::Engine,
    parts: StateParts,
    deadline: Instant,
    ticked: Arc<AtomicBool>,
) -> Store<InvocationState> {
    let mut store = Store::new(engine, InvocationState::new(parts));
    store.limiter(|state| &mut state.limiter);
    set_deadline(&mut store, deadline, ticked);
    store
}

/// Sets the epoch callback of `store` for a call that must end by `deadline` (again for each
/// event of a batch sharing the instance).
fn set_deadline(store: &mut Store<InvocationState>, deadline: Instant, ticked: Arc<AtomicBool>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            return Err(Trap::Interrupt.into());
        }
        ticked.store(true, Ordering::Release);
        Ok(UpdateDeadline::Yield(1))
    });
}

/// A background thread advances the epoch every [`EPOCH_TICK`]; it holds only a weak
/// reference, so it ends when the engine is dropped.
fn spawn_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("eddy-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Tells a component from a core module or a non-wasm file by the preamble, so the error says
/// which it is instead of a parser message.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version (u16 LE) and layer (u16 LE); layer 0 is a core module, 1 a component.
    match u16::from_le_bytes([bytes[6], bytes[7]]) {
        0 => Err(LoadError::CoreModule),
        _ => Ok(()),
    }
}

/// What to load: a name, limits and settings.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name, used in logs and as the publisher's source.
    pub name: String,
    /// Its limits.
    pub limits: Limits,
    /// Its settings, read by the guest through `config.get`.
    pub config: BTreeMap<String, String>,
    /// Its deployed version, if it came from the registry.
    pub version: Option<u32>,
    /// Its secrets, resolved on this host.
    pub secrets: Secrets,
    /// The origins its outbound HTTP may reach (none by default).
    pub outbound: AllowList,
    /// The bucket names it shares with other functions.
    pub shared_buckets: Vec<String>,
}

impl FunctionSpec {
    /// A spec with default limits and no settings, secrets, outbound origins or shared buckets.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            limits: Limits::default(),
            config: BTreeMap::new(),
            version: None,
            secrets: Secrets::default(),
            outbound: AllowList::default(),
            shared_buckets: Vec::new(),
        }
    }
}

/// What an invocation reaches beyond its own instance: where its published events go (and its
/// `once` keys are kept), and where its buckets live.
#[derive(Clone)]
pub struct Services {
    /// Published events and `once` keys.
    pub publisher: Arc<dyn Publisher>,
    /// Key-value buckets.
    pub keyvalue: Arc<dyn KeyValue>,
}

impl Services {
    /// Services that keep everything in memory: `eddy invoke`, tests.
    pub fn in_memory() -> Self {
        Self {
            publisher: Arc::new(MemoryPublisher::default()),
            keyvalue: Arc::new(MemoryKeyValue::default()),
        }
    }

    /// `publisher`, with buckets in memory.
    pub fn with_publisher(publisher: Arc<dyn Publisher>) -> Self {
        Self {
            publisher,
            keyvalue: Arc::new(MemoryKeyValue::default()),
        }
    }
}

/// A loaded, pre-instantiated function; cheap to clone and share across tasks.
#[derive(Clone)]
pub struct Function {
    inner: Arc<FunctionInner>,
}

struct FunctionInner {
    name: Arc<str>,
    digest: String,
    version: Option<u32>,
    limits: Limits,
    config: Arc<BTreeMap<String, String>>,
    secrets: Arc<Secrets>,
    outbound: Arc<AllowList>,
    shared_buckets: Arc<Vec<String>>,
    /// Kept-alive outbound connections, shared by the function's invocations.
    pool: Arc<outbound::Pool>,
    pre: FunctionPre<InvocationState>,
    engine: Engine,
}

/// What a trigger can ask of an invocation beyond the function and the event.
#[derive(Default)]
pub struct RunHooks {
    /// Asked right before the start; false means the event is no longer this host's to run
    /// (its lease may have lapsed), so the invocation does not start.
    pub may_start: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Cancelled to stop the invocation: its event was taken by another host.
    pub cancel: Option<CancellationToken>,
    /// The CPU gate of the threads it runs on, if any ([`CpuGate`]).
    pub gate: Option<Arc<CpuGate>>,
}

impl Function {
    /// The function's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The sha256 of the component it runs.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Its deployed version, if it came from the registry.
    pub fn version(&self) -> Option<u32> {
        self.inner.version
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Runs the function once on `event` in a fresh instance, which is dropped afterwards;
    /// waits for a free instance slot first. Ends by the function's timeout. Its buckets are
    /// kept in memory, for this call only.
    pub async fn invoke(&self, event: &Event, publisher: Arc<dyn Publisher>) -> InvokeResult {
        self.invoke_with(event, Services::with_publisher(publisher))
            .await
    }

    /// [`invoke`](Self::invoke) with every service given.
    pub async fn invoke_with(&self, event: &Event, services: Services) -> InvokeResult {
        self.run(event, services, RunHooks::default())
            .await
            .expect("an invocation without hooks always runs")
    }

    /// [`invoke`](Self::invoke) from a thread that is not running async code (the CLI, tests):
    /// drives the invocation on a small runtime of its own.
    pub fn invoke_blocking(&self, event: &Event, publisher: Arc<dyn Publisher>) -> InvokeResult {
        self.invoke_with_blocking(event, Services::with_publisher(publisher))
    }

    /// [`invoke_with`](Self::invoke_with) from a thread that is not running async code.
    pub fn invoke_with_blocking(&self, event: &Event, services: Services) -> InvokeResult {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("starting a runtime for one invocation")
            .block_on(self.invoke_with(event, services))
    }

    /// Runs the function once on `event`, with a trigger's `hooks`. `None` when it did not
    /// run to an outcome this host may settle: `may_start` said no, or `cancel` fired.
    pub async fn run(
        &self,
        event: &Event,
        services: Services,
        hooks: RunHooks,
    ) -> Option<InvokeResult> {
        let mut out = None;
        self.run_each(
            [(event, hooks, tracing::Span::none())],
            services,
            |_, result| out = result,
        )
        .await;
        out
    }

    /// Runs the function on each of `jobs` in turn, in **one** fresh instance, and calls
    /// `done` with each result as it comes (its index, and `None` as [`run`](Self::run)
    /// says). Each event still gets its own deadline, budgets, `once` claims, captured output
    /// and outcome; only the instance (its memory and globals) is shared, which is what saves
    /// instantiating it per event. When a call traps (or times out, or hits the memory
    /// limit), or is cancelled because its lease was lost, that instance is dropped and the
    /// batch's next event starts in a fresh one. Each call runs in its `span` (none: the
    /// caller's).
    pub async fn run_each<E: std::borrow::Borrow<Event>>(
        &self,
        jobs: impl IntoIterator<Item = (E, RunHooks, tracing::Span)>,
        services: Services,
        mut done: impl FnMut(usize, Option<InvokeResult>),
    ) {
        let inner = &*self.inner;
        let _slot = inner
            .engine
            .inner
            .instances
            .acquire()
            .await
            .expect("the instance semaphore is never closed");
        let limits = inner.limits;
        let capture = OutputCapture::new(limits.output_bytes);
        let mut session: Option<Store<InvocationState>> = None;
        let mut bindings: Option<imports::FunctionBindings> = None;
        for (index, (event, hooks, call_span)) in jobs.into_iter().enumerate() {
            let event: &Event = event.borrow();
            // From here a gate slot is held; it is given back however this ends.
            let slot = gate::Slot::take(hooks.gate.as_deref()).await;
            if hooks.may_start.as_ref().is_some_and(|may| !may()) {
                done(index, None);
                continue;
            }

            let span = propagation::InvocationSpan::for_event(&event.extensions);
            let publisher: Arc<dyn Publisher> = Arc::new(publish::Carrying::new(
                services.publisher.clone(),
                propagation::carried(&event.extensions, &event.id, &span),
            ));
            let started = Instant::now();
            let deadline = started + limits.timeout;
            let ticked = Arc::new(AtomicBool::new(false));
            let outbound = outbound::Outbound::new(
                inner.name.clone(),
                inner.outbound.clone(),
                inner.engine.inner.tls.clone(),
                deadline,
                limits.http_concurrency as usize,
                limits.http_response_bytes,
                Some(span.traceparent()),
                inner.pool.clone(),
            );
            let outbound_stats = outbound.stats();
            let store = match &mut session {
                Some(store) => {
                    store.data_mut().begin_event(
                        event.id.clone(),
                        publisher.clone(),
                        deadline,
                        outbound,
                    );
                    set_deadline(store, deadline, ticked.clone());
                    store
                }
                None => session.insert({
                    // A fresh instance after a failed one: the event's output budget is whole.
                    capture.reset(limits.output_bytes);
                    new_store(
                        &inner.engine.inner.wasmtime,
                        StateParts {
                            function: inner.name.clone(),
                            event_id: event.id.clone(),
                            limits,
                            capture: capture.clone(),
                            config: inner.config.clone(),
                            publisher: publisher.clone(),
                            deadline,
                            secrets: inner.secrets.clone(),
                            keyvalue: services.keyvalue.clone(),
                            shared_buckets: inner.shared_buckets.clone(),
                            outbound,
                        },
                        deadline,
                        ticked.clone(),
                    )
                }),
            };

            let mut instantiation = Duration::ZERO;
            let wit_event = to_wit(event);
            let call = async {
                let instance = match &bindings {
                    Some(instance) => instance,
                    None => {
                        let made = inner.pre.instantiate_async(&mut *store).await?;
                        instantiation = started.elapsed();
                        bindings.insert(made)
                    }
                };
                instance
                    .eddy_function_handler()
                    .call_handle(&mut *store, &wit_event)
                    .await
            };
            let ended = {
                let call = tracing::Instrument::instrument(slot.run(call, ticked), call_span);
                let cancelled = async {
                    match &hooks.cancel {
                        Some(token) => token.cancelled().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    returned = tokio::time::timeout_at(deadline.into(), call) => Some(returned),
                    () = cancelled => None,
                }
            };
            let duration = started.elapsed();
            let refused = store.data().limiter.refused;
            let claims = std::mem::take(&mut store.data_mut().claims);
            let output = capture.finish();
            let Some(returned) = ended else {
                tracing::warn!(
                    function = %inner.name, event_id = %event.id,
                    "invocation cancelled: its event was taken over by another host"
                );
                if !claims.is_empty() {
                    publisher.settle_once(&claims, false).await;
                }
                // Stopped mid-call: the instance is not reused.
                session = None;
                bindings = None;
                done(index, None);
                continue;
            };
            let mut result = match returned {
                Ok(Ok(response)) => {
                    InvokeResult::returned(response.status, response.body, duration, output)
                }
                Ok(Err(error)) => {
                    let failure = classify_error(&error, refused, &limits, &output.stderr);
                    InvokeResult::failed(failure, duration, output)
                }
                // The deadline passed while the guest waited in a host call.
                Err(_elapsed) => InvokeResult::failed(
                    Failure::Timeout {
                        limit_ms: limits.timeout.as_millis() as u64,
                    },
                    duration,
                    output,
                ),
            };
            if let Some((stream, message)) = store.data_mut().publish_failed.take() {
                result.lost_publish(stream, message);
            }
            if result.status.is_none() {
                // Trapped, timed out or out of memory: the instance cannot be entered again,
                // and the batch's next event starts in a fresh one, so one bad event costs
                // the others nothing.
                session = None;
                bindings = None;
            }
            tracing::debug!(
                function = %inner.name, event_id = %event.id, attempt = event.delivery.attempt,
                outcome = result.outcome.as_str(), status = result.status,
                duration_us = duration.as_micros() as u64, "instance finished"
            );
            if !claims.is_empty() {
                // Kept only when the invocation succeeded, so a retry of a failure can redo them.
                publisher
                    .settle_once(&claims, result.outcome == Outcome::Done)
                    .await;
            }
            // Redacted whole before the body is cut, so the cut cannot split a secret unseen.
            result.redact(&inner.secrets);
            if result.body.len() > MAX_RESPONSE_BODY_BYTES {
                result.body.truncate(MAX_RESPONSE_BODY_BYTES);
                inner.secrets.redact_cut_bytes(&mut result.body);
            }
            if !result.output.stdout.is_empty() || !result.output.stderr.is_empty() {
                tracing::debug!(
                    function = %inner.name, event_id = %event.id,
                    stdout = %result.output.stdout, stderr = %result.output.stderr, "guest output"
                );
            }
            result.outbound = outbound_stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if result.failure
                == Some(Failure::Timeout {
                    limit_ms: limits.timeout.as_millis() as u64,
                })
                && result.outbound.calls > 0
            {
                result.outbound.limit("timeout");
            }
            result.span = Some(span);
            result.instantiation = instantiation;
            done(index, Some(result));
        }
    }
}

/// Names what stopped a call that did not return.
fn classify_error(
    error: &wasmtime::Error,
    refused_memory: Option<usize>,
    limits: &Limits,
    stderr: &str,
) -> Failure {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Failure::Timeout {
            limit_ms: limits.timeout.as_millis() as u64,
        };
    }
    if let Some(requested) = refused_memory {
        return Failure::MemoryLimit {
            limit_bytes: limits.memory_bytes,
            requested_bytes: requested as u64,
        };
    }
    Failure::Trap {
        message: error.root_cause().to_string(),
        panic: panic_message(stderr),
    }
}

/// Finds a Rust panic's message in captured stderr: the text after "panicked at <location>:".
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")?;
    let rest = &stderr[start..];
    let (_, message) = rest.split_once(":\n")?;
    let message = message
        .lines()
        .take_while(|line| !line.starts_with("note: "))
        .collect::<Vec<_>>()
        .join("\n");
    Some(message.trim().to_owned()).filter(|m| !m.is_empty())
}

fn to_wit(event: &Event) -> wit::Event {
    wit::Event {
        id: event.id.clone(),
        source: event.source.clone(),
        type_: event.event_type.clone(),
        subject: event.subject.clone(),
        time: event.time.clone(),
        datacontenttype: event.datacontenttype.clone(),
        data: event.data.clone(),
        extensions: event.extensions.clone(),
        delivery: wit::Delivery {
            trigger: match event.delivery.trigger {
                TriggerKind::Stream => wit::TriggerKind::Stream,
                TriggerKind::Cron => wit::TriggerKind::Cron,
                TriggerKind::Invoke => wit::TriggerKind::Invoke,
                TriggerKind::Http => wit::TriggerKind::Http,
            },
            stream: event.delivery.stream.clone(),
            entry_id: event.delivery.entry_id.clone(),
            attempt: event.delivery.attempt,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_files_modules_and_components_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0asm"), Err(LoadError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn the_panic_message_is_read_from_stderr() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:6:5:\nboom for e-1\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("boom for e-1"));
        assert_eq!(panic_message("nothing here"), None);
    }
}
