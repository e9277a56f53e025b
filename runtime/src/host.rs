//! The host process behind `eddy up`: loads functions from their manifests, connects to Redis,
//! runs every trigger, and on shutdown drains within a grace period.
//!
//! Shutdown is two cancellation tokens passed down to every loop: `shutdown` (stop reading,
//! finish what is in flight) and `abandon` (the grace period is over: stop retrying Redis
//! writes). Nothing is aborted: an event not settled when the host exits is still pending in
//! Redis and another host (or this one, restarted) handles it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::broker::{Broker, RedisKeyValue, RedisPublisher};
use crate::engine::{AllowedStreams, Engine, Function, Publisher, Workers};
use crate::manifest::{self, Manifest};
use crate::registry;
use crate::triggers::cron;
use crate::triggers::streams::{self, FunctionCell, HostContext};

/// How long in-flight invocations get to finish after a stop signal.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Idle time beyond a function's timeout after which another host claims a pending entry.
pub const DEFAULT_CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// How to run a host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The Redis URL.
    pub redis_url: String,
    /// This host's consumer name in every group ([`default_consumer_name`]).
    pub consumer: String,
    /// Time in-flight invocations get after a stop signal ([`DEFAULT_GRACE`]).
    pub grace: Duration,
    /// Extra idle time before claiming another consumer's pending entry
    /// ([`DEFAULT_CLAIM_MARGIN`]).
    pub claim_margin: Duration,
    /// Invocation threads ([`crate::engine::default_workers`]: one per core).
    pub workers: usize,
    /// SHA-256 of the API's bearer token, if any.
    pub token_digest: Option<[u8; 32]>,
    /// Where invocation spans are exported, if anywhere.
    pub spans: crate::telemetry::SpanExport,
    /// What bounds the API's connections and request bodies.
    pub http: api::HttpLimits,
    /// API invocations running at once ([`api::DEFAULT_API_INVOKE_CONCURRENCY`]).
    pub api_invoke_concurrency: usize,
    /// API invocations waiting for a turn beyond those ([`api::DEFAULT_API_INVOKE_QUEUE`]).
    pub api_invoke_queue: usize,
    /// Redis memory every invocation record may take, across hosts
    /// ([`crate::records::DEFAULT_BUDGET`]).
    pub records_budget: u64,
    /// How often the host trims streams when it holds the retention lease
    /// ([`crate::retention::DEFAULT_INTERVAL`]).
    pub retention_interval: Duration,
    /// Replicas a settle, a dead-letter forward or an ingress write waits for (`WAIT`).
    pub wait_replicas: u32,
}

/// The deployed functions a host runs now, by name, with their version: what the API's invoke
/// runs, so it never loads (and compiles) a function per call.
pub type Deployed = Arc<std::sync::RwLock<BTreeMap<String, (u32, LoadedFunction)>>>;

/// A function ready to run: its manifest and its loaded component.
#[derive(Clone)]
pub struct LoadedFunction {
    /// Where it came from and its triggers.
    pub manifest: Manifest,
    /// The loaded component.
    pub function: Function,
}

/// A consumer name unique to this process: `<hostname>-<pid>-<4 random hex digits>`.
pub fn default_consumer_name() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!(
        "{hostname}-{}-{:04x}",
        std::process::id(),
        fastrand::u16(..)
    )
}

/// Loads every manifest found under `paths` and its component. Fails on the first problem,
/// naming the file; checks that no two functions share a name or a stream's consumer group.
pub fn load_functions(engine: &Engine, paths: &[PathBuf]) -> anyhow::Result<Vec<LoadedFunction>> {
    let mut files = Vec::new();
    for path in paths {
        let found = manifest::discover(path)
            .with_context(|| format!("cannot read functions from {}", path.display()))?;
        if found.is_empty() {
            bail!(
                "no manifest in {}: expected an eddy.toml file or a folder holding some",
                path.display()
            );
        }
        files.extend(found);
    }
    let mut loaded: Vec<LoadedFunction> = Vec::new();
    let mut groups = BTreeMap::new();
    for file in files {
        let manifest = manifest::load(&file)?;
        if let Some(other) = loaded.iter().find(|f| f.manifest.name == manifest.name) {
            bail!(
                "{}: function name {:?} is already used by {}",
                file.display(),
                manifest.name,
                other.manifest.path.display()
            );
        }
        for ticker in &manifest.tickers {
            if let Some(other) = loaded
                .iter()
                .find(|f| f.manifest.tickers.iter().any(|t| t.name == ticker.name))
            {
                bail!(
                    "{}: cron trigger name {:?} is already used by function {:?}: give it a \
                     `name` of its own",
                    file.display(),
                    ticker.name,
                    other.manifest.name
                );
            }
        }
        for trigger in &manifest.streams {
            let key = (trigger.stream.clone(), trigger.group.clone());
            if let Some(other) = groups.insert(key, manifest.name.clone()) {
                bail!(
                    "{}: stream {:?} group {:?} is already read by function {other:?}; two \
                     functions in one group would split its events between them (give each its \
                     own group)",
                    file.display(),
                    trigger.stream,
                    trigger.group
                );
            }
        }
        let bytes = crate::inputs::read_capped(
            &manifest.component,
            crate::engine::MAX_COMPONENT_BYTES as u64,
        )
        .with_context(|| {
            format!(
                "{}: cannot read component {}",
                file.display(),
                manifest.component.display()
            )
        })?;
        let spec = manifest.function_spec(None, engine.secret_dirs())?;
        let function = engine.load(spec, &bytes).with_context(|| {
            format!(
                "{}: cannot load component {}",
                file.display(),
                manifest.component.display()
            )
        })?;
        tracing::info!(
            function = %manifest.name,
            digest = function.digest(),
            triggers = manifest.streams.len(),
            "function loaded"
        );
        loaded.push(LoadedFunction { manifest, function });
    }
    Ok(loaded)
}

/// Runs the host until `shutdown` is cancelled, then drains for up to `config.grace`.
pub async fn run(
    config: HostConfig,
    engine: Engine,
    functions: Vec<LoadedFunction>,
    listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
) -> anyhow::Result<()> {
    let broker = Broker::connect(&config.redis_url)
        .await?
        .wait_for_replicas(config.wait_replicas);
    broker.check_replicas().await;
    if !broker.is_cluster() {
        match crate::broker::migrate::legacy_keys(&mut broker.shared()).await {
            Ok((0, 0)) => {}
            Ok((moved, left)) => {
                if moved > 0 {
                    tracing::info!(moved, "renamed keys an older Eddy wrote");
                }
                if left > 0 {
                    tracing::error!(
                        left,
                        "keys an older Eddy wrote stay beside their new names \
                        (both were written to: was an older host still running?); \
                        eddy:functions and eddy:function:* hold what they deployed"
                    );
                }
            }
            Err(error) => anyhow::bail!(
                "cannot move the keys an older Eddy wrote in {} to their new names ({error}); \
                 a host started without them would see no deployed function. Connect to the \
                 primary, allow EVAL and RENAME for this user, or fix or delete the key named, \
                 then start again",
                broker.url()
            ),
        }
    }
    let static_names: Vec<String> = functions.iter().map(|f| f.manifest.name.clone()).collect();
    let loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = Workers::new(config.workers).context("cannot start the invocation workers")?;
    let deployed: Deployed = Default::default();
    let api_addr = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    // One of each for the triggers and the API: they share the broker's connection.
    // Events a function publishes are checked against their type's schema.
    let schemas = crate::schemas::watch(&broker, shutdown.clone()).await;
    let publisher: Arc<dyn Publisher> = Arc::new(crate::schemas::Validating::new(
        Arc::new(RedisPublisher::new(&broker)),
        schemas.clone(),
    ));
    let keyvalue: Arc<dyn crate::engine::KeyValue> = Arc::new(RedisKeyValue::new(&broker));
    if let Some(listener) = listener {
        let state = Arc::new(api::ApiState {
            broker: broker.clone(),
            token_digest: config.token_digest,
            engine: engine.clone(),
            static_functions: static_names.clone(),
            publisher: publisher.clone(),
            keyvalue: keyvalue.clone(),
            loaded: loaded.clone(),
            workers: workers.clone(),
            deployed: deployed.clone(),
            invocations: api::InvokeBound::new(
                config.api_invoke_concurrency,
                config.api_invoke_queue,
            ),
            http: config.http,
            schemas: schemas.clone(),
        });
        tokio::spawn(api::serve(listener, state, shutdown.clone()));
    }
    let broker_for_records = broker.shared();
    let broker_for_flow = broker.clone();
    let ctx = HostContext {
        workers,
        publisher,
        keyvalue,
        broker,
        consumer: config.consumer.clone().into(),
        shutdown: shutdown.clone(),
        abandon: abandon.clone(),
        claim_margin: config.claim_margin,
        recorder: crate::records::Recorder::spawn(broker_for_records, config.records_budget),
        spans: config.spans.clone(),
        flow: streams::flow::watch(&broker_for_flow, shutdown.clone()),
        schemas,
        canary: Default::default(),
    };
    let mut triggers = JoinSet::new();
    // Before the groups are waited for: a Redis too full to create them is the one that most
    // needs trimming.
    triggers.spawn(crate::retention::run(
        ctx.broker.shared(),
        config.consumer.clone(),
        config.retention_interval,
        shutdown.clone(),
    ));
    let mut subscriptions = Vec::new();
    for loaded in &functions {
        let (_, _, subscribed) =
            start_function(loaded, &ctx, shutdown.child_token(), &mut triggers);
        subscriptions.push(subscribed);
    }
    // "Ready" promises that events added from now on reach every function: wait for the groups.
    tokio::select! {
        _ = async { for subscribed in subscriptions { subscribed.await } } => {}
        _ = shutdown.cancelled() => {}
    }
    triggers.spawn(cron::run(ctx.broker.clone(), Vec::new(), shutdown.clone()));
    triggers.spawn(crate::status::heartbeat(
        ctx.broker.clone(),
        config.consumer.clone(),
        api_addr,
        shutdown.clone(),
    ));
    triggers.spawn(crate::charts::sample(
        ctx.broker.clone(),
        config.consumer.clone(),
        shutdown.clone(),
    ));
    triggers.spawn(follow_deployments(
        engine,
        ctx.clone(),
        static_names,
        loaded,
        deployed,
    ));
    tracing::info!(
        redis = %ctx.broker.url(),
        consumer = %config.consumer,
        functions = functions.len(),
        "eddy host ready"
    );
    shutdown.cancelled().await;
    tracing::info!(
        grace_ms = config.grace.as_millis() as u64,
        "stopping: no new reads; finishing invocations in flight"
    );
    let grace = tokio::spawn({
        let abandon = abandon.clone();
        async move {
            tokio::time::sleep(config.grace).await;
            abandon.cancel();
        }
    });
    while triggers.join_next().await.is_some() {}
    grace.abort();
    ctx.recorder.close(RECORDS_FLUSH_WAIT).await;
    tracing::info!("stopped");
    Ok(())
}

/// Longest a stopping host waits for its last invocation records to be written.
const RECORDS_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Longest a host waits for a function's consumer groups before announcing it anyway.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);

/// Starts every trigger of one function (stream triggers and cron tickers) under `stop`:
/// cancelling it stops their reads; invocations in flight finish and are settled. Returns the
/// cell the triggers read the function from, to swap in a new version with the same triggers,
/// and a future that ends when every stream trigger's consumer group exists (or a trigger
/// stopped before that).
fn start_function(
    loaded: &LoadedFunction,
    ctx: &HostContext,
    stop: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> (
    FunctionCell,
    streams::CanaryCell,
    impl Future<Output = ()> + use<>,
) {
    let cell: FunctionCell = Arc::new(std::sync::RwLock::new(loaded.function.clone()));
    let publisher: Arc<dyn Publisher> = Arc::new(AllowedStreams::new(
        ctx.publisher.clone(),
        loaded.manifest.publish.clone(),
    ));
    let ctx = HostContext {
        shutdown: stop.clone(),
        // Each function its own: the deployment follower sets it while a canary runs.
        canary: Default::default(),
        ..ctx.clone()
    };
    let canary = ctx.canary.clone();
    let mut subscriptions = Vec::new();
    for trigger in &loaded.manifest.streams {
        let (subscribed, on_subscribed) = tokio::sync::oneshot::channel();
        subscriptions.push(on_subscribed);
        tasks.spawn(streams::run(
            cell.clone(),
            publisher.clone(),
            trigger.clone(),
            ctx.clone(),
            subscribed,
        ));
    }
    for ticker in &loaded.manifest.tickers {
        tasks.spawn(ticker.clone().run(ctx.broker.shared(), stop.clone()));
    }
    let declared = loaded
        .manifest
        .streams
        .iter()
        .map(|t| crate::retention::Declared {
            stream: t.stream.clone(),
            group: t.group.clone(),
            dead_letter: t.dead_letter.clone(),
            policy: t.retention,
        })
        .collect();
    tasks.spawn(crate::retention::declare(
        ctx.broker.shared(),
        declared,
        stop.clone(),
    ));
    // A trigger that stopped first drops its sender; that ends the wait as well. The wait is
    // bounded: a group Redis keeps refusing (the trigger logs why and retries) must not hold
    // back the host's other functions and deployments.
    let generation = crate::status::running_started(crate::status::RunningFunction {
        name: loaded.manifest.name.clone(),
        source: if loaded.manifest.deployed {
            "deployed"
        } else {
            "manifest"
        }
        .to_owned(),
        version: None,
        triggers: describe_triggers(&loaded.manifest),
        groups: loaded
            .manifest
            .streams
            .iter()
            .map(|t| (t.stream.clone(), t.group.clone()))
            .collect(),
    });
    crate::metrics::METRICS.function_loaded(&loaded.manifest.name);
    tasks.spawn({
        let (name, stop) = (loaded.manifest.name.clone(), stop.clone());
        async move {
            stop.cancelled().await;
            crate::status::running_stopped(&name, generation);
        }
    });
    let name = loaded.manifest.name.clone();
    let subscribed = async move {
        let all = async {
            for on_subscribed in subscriptions {
                let _ = on_subscribed.await;
            }
        };
        if tokio::time::timeout(SUBSCRIBE_WAIT, all).await.is_err() {
            tracing::warn!(function = %name, wait_s = SUBSCRIBE_WAIT.as_secs(),
                "a consumer group is not created yet; announcing the function anyway");
        }
    };
    (cell, canary, subscribed)
}

/// A function's triggers as people read them: its cron schedules, and the streams it reads
/// other than its own tick streams.
fn describe_triggers(manifest: &Manifest) -> Vec<String> {
    let mut out: Vec<String> = manifest
        .tickers
        .iter()
        .map(|t| {
            format!(
                "cron {} ({})",
                t.schedule.expression(),
                t.schedule.timezone()
            )
        })
        .collect();
    out.extend(
        manifest
            .streams
            .iter()
            .filter(|s| !manifest.tickers.iter().any(|t| t.stream == s.stream))
            .map(|s| format!("stream {} (group {})", s.stream, s.group)),
    );
    out
}

/// Whether two versions of a function read the same triggers and publish to the same streams,
/// so the new one can be swapped into the running triggers.
pub fn same_wiring(a: &Manifest, b: &Manifest) -> bool {
    let cron = |m: &Manifest| -> Vec<(String, String, String)> {
        m.tickers
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.schedule.expression().to_owned(),
                    t.schedule.timezone().to_owned(),
                )
            })
            .collect()
    };
    a.streams == b.streams && a.publish == b.publish && cron(a) == cron(b)
}

/// Loads the current version of deployed function `name` from the registry.
async fn load_deployed(
    engine: &Engine,
    conn: &mut crate::broker::Conn,
    name: &str,
) -> anyhow::Result<Option<(u32, LoadedFunction)>> {
    let Some(version) = registry::current(conn, name).await? else {
        return Ok(None);
    };
    let loaded = load_version(engine, conn, name, &version).await?;
    Ok(Some((version.version, loaded)))
}

/// Loads version `version` of deployed function `name`, for a canary.
async fn load_canary(
    engine: &Engine,
    conn: &mut crate::broker::Conn,
    name: &str,
    version: u32,
) -> anyhow::Result<crate::engine::Function> {
    let (versions, _) = registry::versions(conn, name).await?;
    let record = versions
        .into_iter()
        .find(|v| v.version == version)
        .ok_or_else(|| anyhow::anyhow!("version {version} is not in the registry"))?;
    Ok(load_version(engine, conn, name, &record).await?.function)
}

/// Judges a canary every [`crate::canary::JUDGE_EVERY`] until `stop`: ends it, with the
/// reason, once it fails more than the stable version by the margin. Every host runs one; the
/// first to end it wins.
async fn judge_canary(
    mut conn: crate::broker::Conn,
    name: String,
    stable: u32,
    canary: crate::canary::Canary,
    stop: CancellationToken,
) {
    while crate::triggers::sleep_or_cancel(crate::canary::JUDGE_EVERY, &stop).await {
        let counts = async {
            let s = crate::canary::counts(&mut conn, &name, stable, canary.window_s).await?;
            let c =
                crate::canary::counts(&mut conn, &name, canary.version, canary.window_s).await?;
            redis::RedisResult::Ok((s, c))
        };
        let (stable_counts, canary_counts) = match counts.await {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(function = %name, %error, "reading canary outcomes failed");
                continue;
            }
        };
        let Some(reason) = crate::canary::judge(&canary, stable_counts, canary_counts) else {
            continue;
        };
        match crate::canary::end(&mut conn, &name, Some(canary.version), &reason).await {
            Ok(Some(_)) => {
                crate::metrics::METRICS.canary_rolled_back(&name);
                tracing::warn!(function = %name, version = canary.version, %reason,
                    "canary rolled back automatically");
                return;
            }
            Ok(None) => return,
            Err(error) => tracing::warn!(function = %name, %error, "ending the canary failed"),
        }
    }
}

/// Why a deployed version could not be loaded on this host.
#[derive(Debug, thiserror::Error)]
pub enum LoadVersionError {
    /// Its manifest is invalid, or names a secret this host cannot resolve.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// Its component is not in the registry.
    #[error("component {0} is missing from the registry")]
    MissingComponent(String),
    /// The registry could not be read.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The component does not load.
    #[error(transparent)]
    Load(#[from] crate::engine::LoadError),
    /// The compile task died (a bug in the host).
    #[error("the compile task failed: {0}")]
    Task(String),
}

/// Loads `version` of deployed function `name`: its manifest, its secrets on this host, its
/// component from the registry, compiled off the async workers.
pub async fn load_version(
    engine: &Engine,
    conn: &mut crate::broker::Conn,
    name: &str,
    version: &registry::Version,
) -> Result<LoadedFunction, LoadVersionError> {
    let manifest = manifest::parse_deployed(name, &version.manifest)?;
    let bytes = registry::get_component(conn, &version.digest)
        .await?
        .ok_or_else(|| LoadVersionError::MissingComponent(version.digest.clone()))?;
    let spec = manifest.function_spec(Some(version.version), engine.secret_dirs())?;
    let engine = engine.clone();
    // Compiling (or reading the compile cache) blocks: keep it off the async workers.
    let function = tokio::task::spawn_blocking(move || engine.load(spec, &bytes))
        .await
        .map_err(|e| LoadVersionError::Task(e.to_string()))??;
    Ok(LoadedFunction { manifest, function })
}

/// Runs deployed functions: loads every current one, then follows the deployments stream and
/// switches each function to its new current version (or stops it) as changes arrive. A
/// version this host cannot load is logged and the previous one keeps serving.
async fn follow_deployments(
    engine: Engine,
    ctx: HostContext,
    static_names: Vec<String>,
    loaded: Arc<std::sync::atomic::AtomicBool>,
    deployed: Deployed,
) {
    let publish = |name: &str, entry: Option<(u32, LoadedFunction)>| {
        let mut map = deployed.write().unwrap_or_else(|e| e.into_inner());
        match entry {
            Some(entry) => map.insert(name.to_owned(), entry),
            None => map.remove(name),
        };
    };
    let stop = ctx.shutdown.clone();
    let mut conn = ctx.broker.shared();
    let mut reader = loop {
        match ctx.broker.dedicated().await {
            Ok(reader) => break reader,
            Err(error) => {
                tracing::warn!(%error, "connecting the deployments reader failed; retrying");
                if !crate::triggers::sleep_or_cancel(Duration::from_secs(1), &stop).await {
                    return;
                }
            }
        }
    };
    let mut tasks = JoinSet::new();
    struct Running {
        version: u32,
        manifest: Manifest,
        cell: FunctionCell,
        stop: CancellationToken,
        /// The canary its triggers send a share to, if one runs.
        canary: streams::CanaryCell,
        /// The canary's version and the stop of its judge.
        judge: Option<(u32, CancellationToken)>,
    }
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // Where the stream stands before the registry is read: nothing after it is missed.
    let mut last_id: String = redis::cmd("XREVRANGE")
        .arg(registry::DEPLOYMENTS_STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async::<Vec<(String, redis::Value)>>(&mut conn)
        .await
        .ok()
        .and_then(|entries| entries.into_iter().next().map(|(id, _)| id))
        .unwrap_or_else(|| "0-0".to_owned());
    let mut pending: Vec<String> = registry::names(&mut conn).await.unwrap_or_default();
    loop {
        // Functions whose canary did not load here: tried again after the next wait.
        let mut again = Vec::new();
        for name in pending.drain(..) {
            if static_names.contains(&name) {
                tracing::warn!(function = %name, "a deployed function has the name of a --functions one; ignored");
                continue;
            }
            match load_deployed(&engine, &mut conn, &name).await {
                Ok(Some((version, loaded))) => {
                    let digest = loaded.function.digest().to_owned();
                    publish(&name, Some((version, loaded.clone())));
                    match running.get_mut(&name) {
                        Some(current) if current.version == version => {}
                        Some(current) if same_wiring(&current.manifest, &loaded.manifest) => {
                            *current.cell.write().unwrap_or_else(|e| e.into_inner()) =
                                loaded.function.clone();
                            tracing::info!(function = %name, from = current.version, to = version, %digest, "switched version in place");
                            crate::metrics::METRICS.deploy(&name);
                            crate::status::running_version(&name, version);
                            current.version = version;
                            current.manifest = loaded.manifest;
                        }
                        _ => {
                            let stop_new = stop.child_token();
                            let (cell, canary, subscribed) =
                                start_function(&loaded, &ctx, stop_new.clone(), &mut tasks);
                            // Announced as running once its groups exist, and only then.
                            tokio::select! {
                                _ = subscribed => {}
                                _ = stop.cancelled() => {}
                            }
                            let fresh = Running {
                                version,
                                manifest: loaded.manifest,
                                cell,
                                stop: stop_new,
                                canary,
                                judge: None,
                            };
                            crate::status::running_version(&name, version);
                            match running.insert(name.clone(), fresh) {
                                Some(old) => {
                                    old.stop.cancel();
                                    tracing::info!(function = %name, from = old.version, to = version, %digest, "switched version, triggers restarted");
                                }
                                None => {
                                    tracing::info!(function = %name, version, %digest, "deployed function running")
                                }
                            }
                            crate::metrics::METRICS.deploy(&name);
                        }
                    }
                }
                Ok(None) => {
                    publish(&name, None);
                    if let Some(old) = running.remove(&name) {
                        if let Some((_, judge)) = &old.judge {
                            judge.cancel();
                        }
                        old.stop.cancel();
                        tracing::info!(function = %name, version = old.version, "function removed");
                    }
                }
                Err(error) => {
                    tracing::error!(function = %name, error = %format!("{error:#}"), "cannot load the deployed version; the previous one keeps serving");
                }
            }
            if let Some(run) = running.get_mut(&name) {
                let wanted = crate::canary::state(&mut conn, &name)
                    .await
                    .ok()
                    .and_then(|(canary, _)| canary);
                let have = run.judge.as_ref().map(|(v, _)| *v);
                if wanted.as_ref().map(|c| c.version) != have {
                    if let Some((_, judge)) = run.judge.take() {
                        judge.cancel();
                    }
                    *run.canary.write().unwrap_or_else(|e| e.into_inner()) = None;
                    if let Some(canary) = wanted {
                        match load_canary(&engine, &mut conn, &name, canary.version).await {
                            Ok(function) => {
                                *run.canary.write().unwrap_or_else(|e| e.into_inner()) =
                                    Some(streams::CanaryRun {
                                        version: canary.version,
                                        percent: canary.percent,
                                        function,
                                    });
                                let judge = stop.child_token();
                                tokio::spawn(judge_canary(
                                    ctx.broker.shared(),
                                    name.clone(),
                                    run.version,
                                    canary.clone(),
                                    judge.clone(),
                                ));
                                run.judge = Some((canary.version, judge));
                                tracing::info!(function = %name, stable = run.version,
                                    canary = canary.version, percent = canary.percent,
                                    "canary running: a share of events goes to the new version");
                            }
                            Err(error) => {
                                tracing::error!(function = %name, version = canary.version,
                                    error = %format!("{error:#}"),
                                    "cannot load the canary version; every event stays on the \
                                     stable one here, trying again in a few seconds");
                                again.push(name.clone());
                            }
                        }
                    } else if have.is_some() {
                        tracing::info!(function = %name, "canary ended: every event on the stable version");
                    }
                }
            }
        }
        pending.extend(again);
        // The first pass over the registry is done: the host is ready.
        loaded.store(true, std::sync::atomic::Ordering::Release);
        let mut read = redis::cmd("XREAD");
        read.arg("BLOCK")
            .arg(crate::broker::READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(registry::DEPLOYMENTS_STREAM)
            .arg(&last_id);
        let reply: redis::RedisResult<redis::Value> = tokio::select! {
            reply = read.query_async(&mut reader) => reply,
            _ = stop.cancelled() => break,
        };
        match reply
            .map_err(|e| e.to_string())
            .and_then(streams::wire::read_reply_entries)
        {
            Ok(entries) => {
                for entry in entries {
                    last_id = entry.id.clone();
                    let name = entry
                        .fields
                        .unwrap_or_default()
                        .into_iter()
                        .find(|(k, _)| k == "function")
                        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
                    if let Some(name) = name
                        && !pending.contains(&name)
                    {
                        pending.push(name);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading deployments failed; retrying");
                if !crate::triggers::sleep_or_cancel(Duration::from_secs(1), &stop).await {
                    break;
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
