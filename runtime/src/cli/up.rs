//! `eddy up`: start a host that runs functions on the events of Redis streams.
//!
//! With `--redis URL` it joins that Redis (and every other host on it: they share each
//! consumer group's work). Without, it starts a private `redis-server` on a Unix socket in the
//! data dir and stops it on exit. SIGINT or SIGTERM drains and exits 0; a second signal stops
//! waiting for in-flight invocations.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::EXIT_OK;
use crate::api;
use crate::broker::embedded::{DEFAULT_DATA_DIR, EmbeddedRedis};
use crate::engine::{
    DEFAULT_MAX_INSTANCES, Engine, EngineConfig, default_cache_dir, default_workers,
};
use crate::host::{self, HostConfig};
use crate::telemetry::SpanExport;

/// Largest token file read: 4 KiB.
const MAX_TOKEN_BYTES: u64 = 4096;
/// Longest --grace or --claim-margin accepted.
const MAX_HOST_DURATION: Duration = Duration::from_secs(3600);
/// Most --workers accepted.
const MAX_WORKERS: usize = 1024;

/// Arguments of `eddy up`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy up --functions examples/order-placed/functions/order-confirmation.toml\n  \
    eddy up --redis redis://127.0.0.1:6379 --functions ./deploy/   # every eddy.toml in it\n  \
    EDDY_REDIS_URL=redis://redis:6379 eddy up --functions fns --log-format json\n\n\
    Events: any Redis client can add one, e.g.\n  \
    redis-cli XADD orders '*' type OrderPlaced data '{\"orderId\":\"o-1\",\"userId\":\"u-1\"}'\n\n\
    Each host is its own consumer in every group, named <hostname>-<pid>-<random> unless\n\
    --consumer is given; several hosts on one Redis share the work.")]
pub struct UpArgs {
    /// Redis to use, e.g. redis://127.0.0.1:6379 or unix:///run/redis.sock. Without it, a
    /// private redis-server is started in --data-dir.
    #[arg(long, env = "EDDY_REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,

    /// Where the private redis-server keeps its socket and append-only file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// A function manifest (eddy.toml), or a folder of them; repeat for more.
    #[arg(
        long,
        short = 'f',
        value_name = "PATH",
        env = "EDDY_FUNCTIONS",
        value_delimiter = ','
    )]
    pub functions: Vec<PathBuf>,

    /// Time in-flight invocations get to finish after SIGINT/SIGTERM, at most 1h.
    #[arg(long, value_parser = super::duration_up_to(MAX_HOST_DURATION), default_value = "30s")]
    // host::DEFAULT_GRACE
    pub grace: Duration,

    /// Idle time, beyond a function's timeout, after which a pending entry of another
    /// consumer is presumed abandoned and claimed; at least 250ms, at most 1h.
    #[arg(long, value_parser = super::duration_up_to(MAX_HOST_DURATION), default_value = "5s")]
    // host::DEFAULT_CLAIM_MARGIN
    pub claim_margin: Duration,

    /// This host's consumer name (default `<hostname>-<pid>-<random>`).
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,

    /// Threads running guest code (default: one per core), at most 1024. As many guests
    /// compute at once; a guest waiting in a host call (a sleep, a publish) holds none. Events
    /// beyond these wait in a local queue, their Redis leases kept fresh.
    #[arg(long, value_name = "N", value_parser = super::count_within(1, MAX_WORKERS))]
    pub workers: Option<usize>,

    /// Size of the engine's instance pool (instances alive at once), at least --workers and at
    /// most 65536. An event that finds the pool full waits for a slot.
    #[arg(long, default_value_t = DEFAULT_MAX_INSTANCES, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_instances: u32,

    /// API invocations (POST /v1/functions/NAME/invoke) running at once, at most 1024. They
    /// share the workers and the instance pool with the triggers.
    #[arg(long, value_name = "N", default_value_t = api::DEFAULT_API_INVOKE_CONCURRENCY,
        value_parser = super::count_within(1, api::MAX_API_INVOKE_BOUND))]
    pub api_invoke_concurrency: usize,

    /// API invocations that may wait for a turn, at most 1024; beyond, the API answers 429 with
    /// Retry-After.
    #[arg(long, value_name = "N", default_value_t = api::DEFAULT_API_INVOKE_QUEUE,
        value_parser = super::count_within(0, api::MAX_API_INVOKE_BOUND))]
    pub api_invoke_queue: usize,

    /// Redis memory that invocation records (`eddy logs`, `eddy trace`, the page) may take in
    /// all, across hosts and functions: the oldest are dropped beyond it. At least 1MiB, at
    /// most 64GiB.
    #[arg(
        long,
        env = "EDDY_RECORDS_BUDGET",
        value_name = "SIZE",
        default_value = "64MiB",
        value_parser = super::bytes_within(crate::records::MIN_BUDGET, crate::records::MAX_BUDGET)
    )]
    // records::DEFAULT_BUDGET
    pub records_budget: u64,

    /// How often streams are trimmed by their retention policy (one host at a time trims, the
    /// one holding the lease); from 1s to 1h.
    #[arg(long, value_name = "DURATION", default_value = "30s",
        value_parser = super::duration_within(crate::retention::MIN_INTERVAL, crate::retention::MAX_INTERVAL))]
    // retention::DEFAULT_INTERVAL
    pub retention_interval: Duration,

    /// Replicas that must have a settle or a dead-letter forward before the host goes on
    /// (Redis `WAIT`, at most 500ms each, over a connection of each trigger's own; 0 to 5).
    /// Redis replicates asynchronously: a master that fails over may lose its last writes, and
    /// with them an acknowledgement (the event comes again) or a dead letter (a letter not
    /// confirmed stays in the outbox and is forwarded again). 1 closes that window for a
    /// primary with replicas or a Redis Cluster, at a cost measured in BENCHMARKS.md. 0 (the
    /// default) waits for none.
    #[arg(long, env = "EDDY_WAIT_REPLICAS", value_name = "N", default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=crate::broker::MAX_WAIT_REPLICAS as i64))]
    pub wait_replicas: u32,

    /// Time a client has to send a request's headers, from their first byte; at most 1h.
    #[arg(long, value_name = "DURATION", default_value = "10s",
        value_parser = super::duration_up_to(api::MAX_HTTP_TIMEOUT))]
    // api::DEFAULT_HEADER_TIMEOUT
    pub http_header_timeout: Duration,

    /// Time a client has to send a request's body (408 beyond); at most 1h.
    #[arg(long, value_name = "DURATION", default_value = "30s",
        value_parser = super::duration_up_to(api::MAX_HTTP_TIMEOUT))]
    // api::DEFAULT_BODY_TIMEOUT
    pub http_body_timeout: Duration,

    /// Time a kept-alive API connection may sit idle between requests; at most 1h.
    #[arg(long, value_name = "DURATION", default_value = "30s",
        value_parser = super::duration_up_to(api::MAX_HTTP_TIMEOUT))]
    // api::DEFAULT_IDLE_TIMEOUT
    pub http_idle_timeout: Duration,

    /// Open API connections at most (lowered to fit the open-file limit). At the cap a new
    /// connection evicts the longest idle one.
    #[arg(long, value_name = "N", default_value_t = api::DEFAULT_MAX_CONNECTIONS,
        value_parser = super::count_within(1, api::MAX_CONNECTIONS_CEILING))]
    pub http_max_connections: usize,

    /// Address of the HTTP API (health, readiness, event ingress). Beyond loopback it needs a
    /// token.
    #[arg(long, value_name = "IP:PORT", default_value = crate::api::DEFAULT_LISTEN)]
    pub listen: String,

    /// File holding the API's bearer token (else EDDY_TOKEN). Without a token the API has no
    /// authentication and only listens on loopback.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Compile every component afresh instead of using the on-disk cache.
    #[arg(long)]
    pub no_cache: bool,

    /// A PEM file of extra certificate authorities functions' outbound HTTPS trusts, beside the
    /// usual web roots (a private CA). There is no way to skip verification.
    #[arg(long, env = "EDDY_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// A folder whose files functions deployed through the API may name as secrets
    /// (`file:/run/secrets/eddy/mail_key`); repeat for more. None by default: a deployed
    /// manifest then takes secrets from environment variables only (never the host's own
    /// EDDY_* settings). Manifests given with --functions may read any file.
    #[arg(
        long = "secret-dir",
        env = "EDDY_SECRET_DIRS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub secret_dirs: Vec<PathBuf>,

    /// Export one span per invocation to this OpenTelemetry collector (OTLP over HTTP, e.g.
    /// http://localhost:4318). Off when absent.
    #[arg(long, env = "EDDY_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// How spans are encoded for the collector.
    #[arg(long, value_enum, default_value = "http/protobuf")]
    pub otlp_protocol: crate::telemetry::OtlpProtocol,
}

/// Runs `eddy up` until a stop signal.
pub fn run(args: UpArgs) -> anyhow::Result<u8> {
    let engine = Engine::new(&EngineConfig {
        max_instances: args.max_instances,
        cache_dir: if args.no_cache {
            None
        } else {
            default_cache_dir()
        },
        ca_file: args.ca_file.clone(),
        secret_dirs: args.secret_dirs.clone(),
        ..EngineConfig::default()
    })
    .context("cannot start the engine")?;
    let workers = args.workers.unwrap_or_else(default_workers);
    if workers > args.max_instances as usize {
        anyhow::bail!(
            "--workers {workers} is more than --max-instances {}: each worker needs an instance",
            args.max_instances
        );
    }
    if args.claim_margin < crate::engine::MIN_CLAIM_MARGIN {
        anyhow::bail!(
            "--claim-margin {:?}: expected at least {:?}, so an abandoned entry is only claimed \
             after its once() keys have lapsed",
            args.claim_margin,
            crate::engine::MIN_CLAIM_MARGIN
        );
    }
    let functions = crate::deployments::load::from_manifests(&engine, &args.functions)?;
    let token = match &args.token_file {
        Some(path) => Some(
            crate::inputs::read_capped_text(path, MAX_TOKEN_BYTES)
                .with_context(|| format!("cannot read --token-file {}", path.display()))?,
        ),
        None => std::env::var("EDDY_TOKEN").ok(),
    }
    .map(|t| t.trim().to_owned())
    .filter(|t| !t.is_empty());

    let mut embedded = None;
    let redis_url = match args.redis {
        Some(url) => url,
        None => {
            let redis = EmbeddedRedis::start(&args.data_dir)?;
            let url = redis.url();
            tracing::info!(%url, "started a private redis-server");
            embedded = Some(redis);
            url
        }
    };
    let consumer = args.consumer.unwrap_or_else(host::default_consumer_name);
    // Built before the async runtime starts: the exporter's HTTP client is a blocking one.
    let spans = match &args.otlp_endpoint {
        Some(endpoint) => SpanExport::otlp(endpoint, args.otlp_protocol, &consumer)?,
        None => SpanExport::disabled(),
    };
    let config = HostConfig {
        redis_url,
        consumer,
        grace: args.grace,
        claim_margin: args.claim_margin,
        workers,
        token_digest: token.as_deref().map(crate::api::token_digest),
        spans: spans.clone(),
        http: api::HttpLimits {
            header_timeout: args.http_header_timeout,
            body_timeout: args.http_body_timeout,
            idle_timeout: args.http_idle_timeout,
            max_connections: args.http_max_connections,
        },
        api_invoke_concurrency: args.api_invoke_concurrency,
        api_invoke_queue: args.api_invoke_queue,
        records_budget: args.records_budget,
        retention_interval: args.retention_interval,
        wait_replicas: args.wait_replicas,
    };
    crate::api::raise_open_file_limit();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shutdown = CancellationToken::new();
    let abandon = CancellationToken::new();
    let result = runtime.block_on(async {
        let listener = crate::api::bind(&args.listen, token.is_some()).await?;
        tokio::spawn(watch_signals(shutdown.clone(), abandon.clone()));
        host::run(config, engine, functions, Some(listener), shutdown, abandon).await
    });
    // Invocations still running past the grace period are abandoned, not awaited: their
    // entries stay pending in Redis.
    runtime.shutdown_timeout(Duration::from_millis(100));
    spans.shutdown();
    if let Some(mut redis) = embedded {
        redis.stop();
    }
    result.map(|()| EXIT_OK)
}

/// First SIGINT/SIGTERM: drain. Second: stop waiting.
async fn watch_signals(shutdown: CancellationToken, abandon: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for stop signals");
        return;
    };
    for token in [shutdown, abandon] {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    }
}
