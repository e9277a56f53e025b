//! The broker: Redis, the one distributed engine behind Eddy. This room owns connecting to it
//! (or starting a private `redis-server` for a one-machine host, in `embedded`) and the
//! `publish` capability's Redis side.
//!
//! Two kinds of connection are used. One shared, multiplexed [`Conn`] carries every short
//! command (acks, scripts, publishes) and reconnects by itself after a drop. Each stream reader
//! gets its own, because a blocking `XREADGROUP` would hold up every command queued behind it
//! on a shared connection. Either may be to a single server or a cluster ([`connection`]).

pub mod connection;
pub mod embedded;
pub mod groups;
pub mod keyvalue;
mod memory;

pub use connection::Conn;
pub use keyvalue::RedisKeyValue;
pub use memory::RedisMemory;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use connection::{Patience, Target};

#[cfg(doc)]
use crate::engine::validate_publish;
use crate::engine::{Claimed, OnceClaim, PublishError, PublishRequest, Publisher};
use crate::wire;

/// How long a short command may wait for its reply before it counts as failed.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an API request's command (an ingress write, a readiness ping) may wait: a client
/// is told 503 by then rather than held while Redis is away or stalled.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a blocking read waits for new entries before it returns empty and checks for
/// shutdown; also bounds how late a host notices it is asked to stop.
pub const READ_BLOCK: Duration = Duration::from_millis(1000);

/// How the hosts' Redis is reached, once its shape is known.
#[derive(Clone)]
enum Reach {
    Single(redis::Client),
    Cluster(Arc<[String]>),
}

/// The hosts' Redis: a single server or a cluster.
#[derive(Clone)]
pub struct Broker {
    reach: Reach,
    shared: Conn,
    requests: Conn,
    url: Arc<str>,
    replicas: u32,
    /// Until when (ms since the Unix epoch) writes do not wait for replicas, after a `WAIT`
    /// came back short: a replica that is down must cost one timeout now and then, not one
    /// per settle.
    waits_suspended_until_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// How long writes stop waiting for replicas after a `WAIT` found fewer than asked for.
pub const WAIT_SUSPENSION: Duration = Duration::from_secs(10);

/// Replicas a write may be made to wait for at most (`eddy up --wait-replicas`).
pub const MAX_WAIT_REPLICAS: u32 = 5;
/// How long a write waits for its replicas before going on without them: the write has
/// landed on the master either way, and a replica that is down must not stall every settle.
pub const REPLICA_WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// The shared connection's patience: a few retries, then the caller hears of it.
const SHARED: Patience = Patience {
    response: RESPONSE_TIMEOUT,
    connect: CONNECT_TIMEOUT,
    retries: 3,
};
/// An API request's: no retry, a short wait.
const REQUESTS: Patience = Patience {
    response: REQUEST_TIMEOUT,
    connect: CONNECT_TIMEOUT,
    retries: 0,
};
/// An API request's on a cluster: a redirection (`MOVED` after a failover, `ASK` while a slot
/// moves) is followed by retrying, within the same overall wait.
const CLUSTER_REQUESTS: Patience = Patience {
    response: REQUEST_TIMEOUT,
    connect: CONNECT_TIMEOUT,
    retries: 2,
};
/// A blocking reader's: long enough for one block.
const READER: Patience = Patience {
    response: READ_BLOCK.saturating_add(RESPONSE_TIMEOUT),
    connect: CONNECT_TIMEOUT,
    retries: 3,
};

impl Broker {
    /// Connects to `given`: `redis://host:port/db`, `rediss://…`, `unix:///path`, or a cluster
    /// (`redis+cluster://host:port,host:port`, a comma-separated list, or any one node of a
    /// cluster, found out by asking it).
    pub async fn connect(given: &str) -> anyhow::Result<Self> {
        // Only the redacted form reaches a message: the URL may carry a password.
        let url = &connection::redacted(given);
        let reach = match Target::parse(given)? {
            Target::Cluster(seeds) => Reach::Cluster(seeds.into()),
            Target::Single(single_url) => {
                let client = redis::Client::open(single_url.as_str()).with_context(|| {
                    format!("invalid Redis URL {url:?}: expected redis://HOST:PORT")
                })?;
                let mut probe = connection::single(&client, SHARED)
                    .await
                    .with_context(|| format!("cannot connect to Redis at {url}"))?;
                match connection::is_cluster_node(&mut probe).await {
                    Ok(true) => Reach::Cluster(vec![single_url].into()),
                    Ok(false) => Reach::Single(client),
                    // A server that refuses INFO (its operator renamed it) may still be a
                    // cluster node: CLUSTER INFO answers there and errs on a single server.
                    Err(_) => {
                        let cluster: redis::RedisResult<String> = redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query_async(&mut probe)
                            .await;
                        if cluster.is_ok_and(|info| info.contains("cluster_state")) {
                            Reach::Cluster(vec![single_url].into())
                        } else {
                            Reach::Single(client)
                        }
                    }
                }
            }
        };
        let shared = open(&reach, SHARED)
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        let requests = match reach {
            Reach::Single(_) => open(&reach, REQUESTS).await,
            Reach::Cluster(_) => open(&reach, CLUSTER_REQUESTS).await,
        }
        .with_context(|| format!("cannot connect to Redis at {url}"))?;
        Ok(Self {
            reach,
            shared,
            requests,
            url: url.as_str().into(),
            replicas: 0,
            waits_suspended_until_ms: Default::default(),
        })
    }

    /// Makes the writes whose loss in a failover would lose something (settles and dead-letter
    /// forwards) wait until `replicas` replicas of their master have them (`WAIT`, at most
    /// [`REPLICA_WAIT_TIMEOUT`]). 0, the default, waits for none: Redis replicates
    /// asynchronously, and a master that dies may take its last writes with it.
    pub fn wait_for_replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas.min(MAX_WAIT_REPLICAS);
        self
    }

    /// The replicas writes wait for, if `--wait-replicas` asked for any.
    pub fn replicas_to_wait_for(&self) -> Option<u32> {
        (self.replicas > 0).then_some(self.replicas)
    }

    /// The replicas a write waits for now: none while waits are suspended after a short
    /// `WAIT` (see [`replicas_missing`](Self::replicas_missing)).
    pub fn replicas_to_wait_for_now(&self) -> Option<u32> {
        let until = self
            .waits_suspended_until_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if until > chrono::Utc::now().timestamp_millis() {
            return None;
        }
        self.replicas_to_wait_for()
    }

    /// Records that a `WAIT` found only `acked` replicas: writes stop waiting for
    /// [`WAIT_SUSPENSION`], so that a replica that is down slows the work by one timeout now
    /// and then instead of one per settle (which would stop it).
    pub fn replicas_missing(&self, acked: u32) {
        let until = chrono::Utc::now().timestamp_millis() + WAIT_SUSPENSION.as_millis() as i64;
        let before = self
            .waits_suspended_until_ms
            .swap(until, std::sync::atomic::Ordering::Relaxed);
        if before < chrono::Utc::now().timestamp_millis() {
            crate::metrics::METRICS.redis_error("wait", "replicas_missing");
            tracing::warn!(acked, wanted = self.replicas, suspended_for = ?WAIT_SUSPENSION,
                "fewer replicas than --wait-replicas confirmed a write: writes go on without \
                 waiting for a while (a failover now may lose the last of them)");
        }
    }

    /// Adds `WAIT` for the configured replicas to `pipe` unless waits are suspended; true if
    /// added. Its reply, how many replicas have the writes, is the pipeline's one reply not
    /// ignored. In a pipeline it runs on the node the pipeline's keys live on: the one whose
    /// replicas matter. `WAIT` blocks the connection it is sent on, so a pipeline carrying it
    /// must go over a connection of its own, never the shared one.
    pub fn push_wait(&self, pipe: &mut redis::Pipeline) -> bool {
        if self.replicas_to_wait_for_now().is_some() {
            self.push_wait_counted(pipe);
            true
        } else {
            false
        }
    }

    /// Warns when a primary of the hosts' Redis has fewer replicas than `--wait-replicas`
    /// asks for: every write would wait out its timeout.
    pub async fn check_replicas(&self) {
        if self.replicas == 0 {
            return;
        }
        let Ok(texts) = info_per_node(&mut self.shared(), "replication").await else {
            return;
        };
        for text in texts {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(|v| v.trim().to_owned())
            };
            if field("role").as_deref() != Some("master") {
                continue;
            }
            let replicas: u32 = field("connected_slaves")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if replicas < self.replicas {
                tracing::warn!(
                    replicas,
                    wanted = self.replicas,
                    "a Redis primary has fewer replicas than --wait-replicas asks for: writes \
                     will not wait for replicas it does not have"
                );
                return;
            }
        }
    }

    /// Adds `WAIT` for the configured replicas to `pipe`, replying how many have the writes.
    pub fn push_wait_counted(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("WAIT")
            .arg(self.replicas)
            .arg(REPLICA_WAIT_TIMEOUT.as_millis() as u64);
    }

    /// The shared connection for short commands; clones share it.
    pub fn shared(&self) -> Conn {
        self.shared.clone()
    }

    /// The connection for API requests a client waits on: it does not retry a lost
    /// connection before answering and gives up after [`REQUEST_TIMEOUT`], so a client gets a
    /// prompt 503 while Redis is away (the next request reconnects).
    pub fn requests(&self) -> Conn {
        self.requests.clone()
    }

    /// A connection of its own for blocking reads.
    pub async fn dedicated(&self) -> anyhow::Result<Conn> {
        open(&self.reach, READER)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", self.url))
    }

    /// Whether the hosts' Redis is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.reach, Reach::Cluster(_))
    }

    /// The URL connected to, its password hidden, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }
}

async fn open(reach: &Reach, patience: Patience) -> anyhow::Result<Conn> {
    match reach {
        Reach::Single(client) => Ok(connection::single(client, patience).await?),
        Reach::Cluster(seeds) => connection::cluster(seeds, patience).await,
    }
}

/// What a failed Redis command means to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// Redis refused a write because `maxmemory` is reached (`OOM`): space must be freed
    /// (trimming, a higher limit) before writes land again.
    Full,
    /// Redis did not answer: not reachable, the connection dropped, or no reply in time.
    Away,
    /// The key holds another type than the command works on (`WRONGTYPE`): retrying cannot
    /// help.
    WrongType,
    /// Any other error reply.
    Other,
}

impl Trouble {
    /// Classifies `error`. A refused command inside a pipeline or `MULTI` comes back as a list
    /// of server errors (an aborted transaction among them): each is looked at by its code.
    pub fn of(error: &redis::RedisError) -> Self {
        let codes = server_codes(error);
        if codes.iter().any(|c| c == "OOM") {
            Trouble::Full
        } else if codes.iter().any(|c| c == "WRONGTYPE") {
            Trouble::WrongType
        } else if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || matches!(
                error.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                        | redis::ServerErrorKind::TryAgain
                        | redis::ServerErrorKind::ClusterDown
                        | redis::ServerErrorKind::MasterDown
                )
            )
            || codes
                .iter()
                .any(|c| c == "CLUSTERDOWN" || c == "TRYAGAIN" || c == "MASTERDOWN")
        {
            Trouble::Away
        } else {
            Trouble::Other
        }
    }

    /// The label of `eddy_redis_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trouble::Full => "full",
            Trouble::Away => "unavailable",
            Trouble::WrongType | Trouble::Other => "error",
        }
    }
}

/// Whether `error` says Redis does not know a script (`NOSCRIPT`: it restarted, was flushed, or
/// is a replica promoted by a failover, which never had the scripts loaded), alone or inside a
/// pipeline's replies.
pub fn is_noscript(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || server_codes(error).iter().any(|c| c == "NOSCRIPT")
}

/// The codes of the server errors inside `error` (a pipeline's or a transaction's replies);
/// empty for an error that is not a list of them.
fn server_codes(error: &redis::RedisError) -> Vec<String> {
    error
        .clone()
        .into_server_errors()
        .map(|errors| errors.iter().map(|(_, e)| e.code().to_owned()).collect())
        .unwrap_or_default()
}

/// An `INFO <section>` reply as text per node: one on a single server; on a cluster, where the
/// command goes to every node, each node's.
pub async fn info_per_node<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    section: &str,
) -> redis::RedisResult<Vec<String>> {
    let reply: redis::Value = redis::cmd("INFO").arg(section).query_async(conn).await?;
    Ok(node_texts(reply))
}

/// The texts of an `INFO` reply: a map of node to text on a cluster, one text otherwise.
pub fn node_texts(reply: redis::Value) -> Vec<String> {
    match reply {
        redis::Value::Map(nodes) => nodes
            .into_iter()
            .filter_map(|(_, text)| redis::from_redis_value(text).ok())
            .collect(),
        other => redis::from_redis_value(other).into_iter().collect(),
    }
}

/// Whether `error` says a key moved to another cluster node (`MOVED`, or `ASK` while its
/// slot migrates), alone or inside a pipeline's replies.
pub fn is_redirect(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        error.kind(),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    ) || server_codes(error)
        .iter()
        .any(|c| matches!(c.as_str(), "MOVED" | "ASK" | "EXECABORT"))
}

/// After a pipeline came back redirected: the cluster client follows redirections of single
/// commands only, so one keyed command makes it learn where `key` lives now, and the
/// pipeline, sent again, goes there. True if `error` was a redirection.
pub async fn follow_redirect<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    key: &str,
    error: &redis::RedisError,
) -> bool {
    if !is_redirect(error) {
        return false;
    }
    let _: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(key).query_async(conn).await;
    true
}

/// Classifies `error` and counts it in `eddy_redis_errors_total{operation, kind}`.
pub fn counted(operation: &'static str, error: &redis::RedisError) -> Trouble {
    let trouble = Trouble::of(error);
    crate::metrics::METRICS.redis_error(operation, trouble.as_str());
    trouble
}

/// Publishes events functions emit by `XADD`ing them in the wire format.
pub struct RedisPublisher {
    conn: Conn,
}

impl RedisPublisher {
    /// A publisher over `broker`'s shared connection.
    pub fn new(broker: &Broker) -> Self {
        Self {
            conn: broker.shared(),
        }
    }
}

/// KEYS: the once key. ARGV: pending value, lease ms. 1: this invocation's claim; 0: done;
/// 2: held by another invocation.
static CLAIM_ONCE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local held = redis.call('GET', KEYS[1])
        if not held then
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
        end
        if held == ARGV[1] then return 1 end
        if held == 'done' then return 0 end
        return 2
        ",
    )
});

/// KEYS: the once key. ARGV: pending value, '1' to keep (succeeded), ttl ms.
static SETTLE_ONCE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if ARGV[2] == '1' then
            redis.call('SET', KEYS[1], 'done', 'PX', ARGV[3])
        else
            redis.call('DEL', KEYS[1])
        end
        return 1
        ",
    )
});

/// The Redis key of a `once` claim, hash-tagged by function.
pub fn once_key(function: &str, key: &str) -> String {
    format!("eddy:once:{{{function}}}:{key}")
}

#[async_trait::async_trait]
impl Publisher for RedisPublisher {
    async fn claim_once(&self, claim: &OnceClaim) -> Result<bool, PublishError> {
        claim.validate()?;
        let mut conn = self.conn.clone();
        let mut invocation = CLAIM_ONCE.prepare_invoke();
        invocation
            .key(once_key(&claim.function, &claim.key))
            .arg(claim.pending_value())
            .arg(claim.lease.as_millis() as u64);
        let claimed: redis::RedisResult<i64> = invocation.invoke_async(&mut conn).await;
        match claimed.map_err(|e| PublishError::Unavailable(format!("redis: {e}")))? {
            1 => Claimed::Yes,
            0 => Claimed::AlreadyDone,
            _ => Claimed::HeldElsewhere,
        }
        .answer()
    }

    async fn settle_once(&self, claims: &[OnceClaim], succeeded: bool) {
        for claim in claims {
            let mut conn = self.conn.clone();
            let mut invocation = SETTLE_ONCE.prepare_invoke();
            invocation
                .key(once_key(&claim.function, &claim.key))
                .arg(claim.pending_value())
                .arg(if succeeded { "1" } else { "0" })
                .arg(claim.ttl.as_millis() as u64);
            let settled: redis::RedisResult<i64> = invocation.invoke_async(&mut conn).await;
            // A lost settle leaves the claim pending until its lease ends: a retry then
            // claims it again, so nothing is skipped for good.
            if let Err(error) = settled {
                tracing::warn!(function = %claim.function, key = %claim.key, %error, "settling a once key failed");
            }
        }
    }

    /// The engine checked the request ([`validate_publish`]) before it reached here.
    async fn publish(&self, request: PublishRequest) -> Result<String, PublishError> {
        let id = uuid::Uuid::new_v4().to_string();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let fields = wire::published_fields(&request, &id, &time);
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&request.stream)
            .arg("*")
            .arg(&fields)
            .query_async(&mut conn)
            .await;
        result.map(|_entry_id| id).map_err(|e| {
            counted("publish", &e);
            PublishError::Unavailable(format!("redis: {e}"))
        })
    }
}
