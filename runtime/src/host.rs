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
use crate::broker::{Broker, RedisPublisher};
use crate::engine::{AllowedStreams, Engine, Function, FunctionSpec, Publisher, Workers};
use crate::manifest::{self, Manifest};
use crate::triggers::cron;
use crate::triggers::streams::{self, HostContext};

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
}

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
        let bytes = std::fs::read(&manifest.component).with_context(|| {
            format!(
                "{}: cannot read component {}",
                file.display(),
                manifest.component.display()
            )
        })?;
        let spec = FunctionSpec {
            name: manifest.name.clone(),
            limits: manifest.limits,
            config: manifest.config.clone(),
        };
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
    functions: Vec<LoadedFunction>,
    listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
) -> anyhow::Result<()> {
    let broker = Broker::connect(&config.redis_url).await?;
    if let Some(listener) = listener {
        let state = Arc::new(api::ApiState {
            broker: broker.clone(),
            token_digest: config.token_digest,
        });
        tokio::spawn(api::serve(listener, state, shutdown.clone()));
    }
    let workers = Workers::new(config.workers, tokio::runtime::Handle::current())
        .context("cannot start the invocation workers")?;
    let ctx = HostContext {
        workers,
        publisher: Arc::new(RedisPublisher::new(&broker)),
        broker,
        consumer: config.consumer.clone().into(),
        shutdown: shutdown.clone(),
        abandon: abandon.clone(),
        claim_margin: config.claim_margin,
    };
    let mut triggers = JoinSet::new();
    for loaded in &functions {
        let publisher: Arc<dyn Publisher> = Arc::new(AllowedStreams::new(
            ctx.publisher.clone(),
            loaded.manifest.publish.clone(),
        ));
        for trigger in &loaded.manifest.streams {
            triggers.spawn(streams::run(
                loaded.function.clone(),
                publisher.clone(),
                trigger.clone(),
                ctx.clone(),
            ));
        }
    }
    let tickers: Vec<_> = functions
        .iter()
        .flat_map(|f| f.manifest.tickers.iter().cloned())
        .collect();
    triggers.spawn(cron::run(ctx.broker.clone(), tickers, shutdown.clone()));
    tracing::info!(
        redis = %config.redis_url,
        consumer = %config.consumer,
        functions = functions.len(),
        tasks = triggers.len(),
        "eddy host ready"
    );
    if functions.is_empty() {
        tracing::warn!("no functions loaded: pass --functions PATH");
    }
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
    tracing::info!("stopped");
    Ok(())
}
