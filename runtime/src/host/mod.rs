//! The host process behind `eddy up`: connects to Redis, builds the services every room shares
//! ([`TriggerServices`]: the broker, the invocation workers, the records and spans exporters,
//! the flow and schema views), starts the functions given as manifests, then the API, cron,
//! retention, heartbeats, charts and the deployment follower, and on shutdown drains within a
//! grace period. Which functions run and at which version is [`crate::deployments`]' concern;
//! this module only wires the rooms together and owns the lifecycle.
//!
//! Shutdown is two cancellation tokens passed down to every loop ([`Lifecycle`]): `stop`
//! (stop reading, finish what is in flight; each function gets a child token, so a deploy can
//! stop one function) and `abandon` (the grace period is over: stop retrying Redis writes).
//! Nothing is aborted: an event not settled when the host exits is still pending in Redis and
//! another host (or this one, restarted) handles it.

pub mod migrate;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::broker::{Broker, RedisKeyValue, RedisPublisher};
use crate::deployments::{self, Deployed, LoadedFunction};
use crate::engine::{Engine, Publisher, Workers};
use crate::triggers::cron;
use crate::triggers::streams;
use crate::triggers::{Lifecycle, TriggerServices};

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
        match migrate::legacy_keys(&mut broker.shared()).await {
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
    let static_names: Vec<String> = functions
        .iter()
        .map(|f| f.manifest.name.to_string())
        .collect();
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
    let services = TriggerServices::new(
        broker,
        config.consumer.clone().into(),
        publisher,
        keyvalue,
        workers,
        config.claim_margin,
        crate::records::Recorder::spawn(broker_for_records, config.records_budget),
        config.spans.clone(),
        streams::flow::watch(&broker_for_flow, shutdown.clone()),
        schemas,
    );
    let life = Lifecycle {
        stop: shutdown.clone(),
        abandon: abandon.clone(),
    };
    let function_life = || Lifecycle {
        stop: shutdown.child_token(),
        abandon: abandon.clone(),
    };
    let mut triggers = JoinSet::new();
    // Before the groups are waited for: a Redis too full to create them is the one that most
    // needs trimming.
    triggers.spawn(crate::retention::run(
        services.broker.shared(),
        config.consumer.clone(),
        config.retention_interval,
        shutdown.clone(),
    ));
    let mut subscriptions = Vec::new();
    for loaded in &functions {
        let (_, subscribed) =
            deployments::start_function(loaded, &services, function_life(), &mut triggers);
        subscriptions.push(subscribed);
    }
    // "Ready" promises that events added from now on reach every function: wait for the groups.
    tokio::select! {
        _ = async { for subscribed in subscriptions { subscribed.await } } => {}
        _ = shutdown.cancelled() => {}
    }
    triggers.spawn(cron::run(
        services.broker.clone(),
        Vec::new(),
        shutdown.clone(),
    ));
    triggers.spawn(crate::status::heartbeat(
        services.broker.clone(),
        config.consumer.clone(),
        api_addr,
        shutdown.clone(),
    ));
    triggers.spawn(crate::charts::sample(
        services.broker.clone(),
        config.consumer.clone(),
        shutdown.clone(),
    ));
    triggers.spawn(deployments::follow(
        engine,
        services.clone(),
        life,
        static_names,
        loaded,
        deployed,
    ));
    tracing::info!(
        redis = %services.broker.url(),
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
    services.recorder.close(RECORDS_FLUSH_WAIT).await;
    tracing::info!("stopped");
    Ok(())
}

/// Longest a stopping host waits for its last invocation records to be written.
const RECORDS_FLUSH_WAIT: Duration = Duration::from_secs(2);
