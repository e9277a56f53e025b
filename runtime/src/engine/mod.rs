//! The engine: compiles components, checks them against the function world, and runs one
//! fresh, sandboxed instance per event.
//!
//! It knows nothing of Redis, cron or HTTP: triggers turn outside events into [`Event`]s and
//! call [`Function::invoke`]; delivery decides what the returned [`InvokeResult`] means for the
//! event. Loading is where the work is: the component is compiled (or fetched from the disk
//! cache), linked against the host imports and pre-instantiated into an `InstancePre`, so an
//! invocation only allocates a pooled instance slot (copy-on-write memory image), runs, and
//! drops it.
//!
//! Layout:
//! - `limits`: every limit and its named default.
//! - `cache`: compiled components on disk, keyed by content hash and engine fingerprint.
//! - `host`: the store data and the host side of the WIT imports.
//! - `capture`: bounded stdout, stderr and log capture.
//! - `publish`: the `publish` capability's trait and the in-memory publisher.
//! - `outcome`: the status table as plain logic.
//! - `workers`: the fixed set of threads invocations run on.
//! - [`propagation`]: trace context carried into published events.

mod cache;
mod capture;
mod host;
mod limits;
mod outcome;
pub mod propagation;
mod publish;
mod workers;

pub use cache::{ComponentCache, digest};
pub use capture::{Captured, LogLevel, LogLine, OutputCapture};
pub use limits::*;
pub use outcome::{Failure, InvokeResult, Outcome};
pub use publish::{
    AllowedStreams, Claimed, HELD_ELSEWHERE, MAX_ONCE_KEY_BYTES, MAX_ONCE_TTL,
    MAX_STREAM_NAME_BYTES, MemoryPublisher, OnceClaim, OnceState, PublishError, PublishRequest,
    Publisher, validate_publish,
};
pub use workers::{Submitted, Workers, default_workers};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::event::{Event, TriggerKind};
use host::{FunctionPre, InvocationState, wit};

/// The WIT world every function must implement.
pub const WORLD: &str = "eddy:function/function@0.1.1";

/// The function export every component must provide.
pub const HANDLER_EXPORT: &str = "eddy:function/handler@0.1.1#handle";

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

/// The wasmtime engine, its linker of host imports, the epoch ticker and the compile cache.
/// One per host; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    linker: Linker<InvocationState>,
    cache: Option<ComponentCache>,
}

impl Engine {
    /// Builds the engine: pooling allocator sized by `config`, copy-on-write memory images,
    /// epoch interruption driven by a background ticker thread.
    pub fn new(config: &EngineConfig) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_memories(config.max_instances * MAX_MEMORIES_PER_COMPONENT)
            .total_tables(config.max_instances * MAX_CORE_INSTANCES_PER_COMPONENT)
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
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        host::Function::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

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
            }),
        })
    }

    /// Compiles `bytes` (or loads it from the cache), checks it implements the function world,
    /// and pre-instantiates it. Nothing is kept on failure.
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
                pre,
                engine: self.inner.wasmtime.clone(),
            }),
        })
    }
}

impl Engine {
    /// Instantiates once in a scratch store, because export signatures are only type-checked
    /// when an instance is made: a wrong `handle` must fail the load, not every event.
    fn check_instantiates(
        &self,
        pre: &FunctionPre<InvocationState>,
        spec: &FunctionSpec,
    ) -> Result<(), LoadError> {
        let mut store = new_store(
            &self.inner.wasmtime,
            &spec.limits,
            spec.name.as_str().into(),
            String::new(),
            OutputCapture::new(0),
            Arc::new(BTreeMap::new()),
            Arc::new(MemoryPublisher::default()),
        );
        match pre.instantiate(&mut store) {
            Ok(_) => Ok(()),
            Err(_) if store.data().limiter.refused.is_some() => Err(LoadError::Limits(format!(
                "the component's initial memory exceeds the memory limit of {} bytes",
                spec.limits.memory_bytes
            ))),
            Err(e) if format!("{e:#}").contains("type mismatch") => Err(LoadError::World(format!(
                "export {HANDLER_EXPORT} has the wrong signature, expected \
                 func(event: event) -> response: {e:#}"
            ))),
            Err(e) => Err(LoadError::World(format!("{e:#}"))),
        }
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
/// state, the memory limiter and the wall-time deadline from `limits`.
fn new_store(
    engine: &wasmtime::Engine,
    limits: &Limits,
    function: Arc<str>,
    event_id: String,
    capture: OutputCapture,
    config: Arc<BTreeMap<String, String>>,
    publisher: Arc<dyn Publisher>,
) -> Store<InvocationState> {
    let state = InvocationState::new(
        function,
        event_id,
        usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
        capture,
        config,
        publisher,
        Instant::now() + limits.timeout + ONCE_LEASE_SLACK,
    );
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(limits.timeout_ticks());
    store
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
}

impl FunctionSpec {
    /// A spec with default limits and no settings.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            limits: Limits::default(),
            config: BTreeMap::new(),
            version: None,
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
    pre: FunctionPre<InvocationState>,
    engine: wasmtime::Engine,
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

    /// Runs the function once on `event` in a fresh instance, which is dropped afterwards.
    /// Blocks the calling thread for up to the timeout: async callers run it on a blocking pool.
    pub fn invoke(&self, event: &Event, publisher: Arc<dyn Publisher>) -> InvokeResult {
        let inner = &*self.inner;
        let span = propagation::InvocationSpan::for_event(&event.extensions);
        let publisher: Arc<dyn Publisher> = Arc::new(publish::Carrying::new(
            publisher,
            propagation::carried(&event.extensions, &event.id, &span),
        ));
        let limits = inner.limits;
        let capture = OutputCapture::new(limits.output_bytes);
        let mut store = new_store(
            &inner.engine,
            &limits,
            inner.name.clone(),
            event.id.clone(),
            capture.clone(),
            inner.config.clone(),
            publisher.clone(),
        );

        let started = Instant::now();
        let instantiated = inner.pre.instantiate(&mut store);
        let instantiation = started.elapsed();
        let returned = instantiated.and_then(|bindings| {
            bindings
                .eddy_function_handler()
                .call_handle(&mut store, &to_wit(event))
        });
        let duration = started.elapsed();
        let refused = store.data().limiter.refused;
        let claims = std::mem::take(&mut store.data_mut().claims);
        drop(store);
        let output = capture.finish();
        if !output.stdout.is_empty() || !output.stderr.is_empty() {
            tracing::debug!(
                function = %inner.name, event_id = %event.id,
                stdout = %output.stdout, stderr = %output.stderr, "guest output"
            );
        }

        let mut result = match returned {
            Ok(response) => {
                InvokeResult::returned(response.status, response.body, duration, output)
            }
            Err(error) => {
                let failure = classify_error(&error, refused, &limits, &output.stderr);
                InvokeResult::failed(failure, duration, output)
            }
        };
        tracing::debug!(
            function = %inner.name, event_id = %event.id, attempt = event.delivery.attempt,
            outcome = result.outcome.as_str(), status = result.status,
            duration_us = duration.as_micros() as u64, "invoked"
        );
        if !claims.is_empty() {
            // Kept only when the invocation succeeded, so a retry of a failure can redo them.
            publisher.settle_once(&claims, result.outcome == Outcome::Done);
        }
        result.span = Some(span);
        result.instantiation = instantiation;
        result
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
