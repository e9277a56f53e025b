//! The broker: Redis, the one distributed engine behind Eddy. This room owns connecting to it
//! (or starting a private `redis-server` for a one-machine host, in `embedded`) and the
//! `publish` capability's Redis side.
//!
//! Two kinds of connection are used. One shared, multiplexed [`ConnectionManager`] carries
//! every short command (acks, scripts, publishes) and reconnects by itself after a drop. Each
//! stream reader gets its own, because a blocking `XREADGROUP` would hold up every command
//! queued behind it on a shared connection.

pub mod embedded;
pub mod groups;
pub mod keyvalue;

pub use keyvalue::RedisKeyValue;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[cfg(doc)]
use crate::engine::validate_publish;
use crate::engine::{Claimed, OnceClaim, PublishError, PublishRequest, Publisher};
use crate::triggers::streams::wire;

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

/// A Redis server to talk to.
#[derive(Clone)]
pub struct Broker {
    client: redis::Client,
    shared: ConnectionManager,
    requests: ConnectionManager,
    url: Arc<str>,
}

impl Broker {
    /// Connects to `url` (`redis://host:port/db`, `rediss://…`, `unix:///path`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .with_context(|| format!("invalid Redis URL {url:?}: expected redis://HOST:PORT"))?;
        let shared = manager(&client, RESPONSE_TIMEOUT, 3)
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        let requests = manager(&client, REQUEST_TIMEOUT, 0)
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        Ok(Self {
            client,
            shared,
            requests,
            url: url.into(),
        })
    }

    /// The shared connection for short commands; clones share it.
    pub fn shared(&self) -> ConnectionManager {
        self.shared.clone()
    }

    /// The connection for API requests a client waits on: it does not retry a lost
    /// connection before answering and gives up after [`REQUEST_TIMEOUT`], so a client gets a
    /// prompt 503 while Redis is away (the next request reconnects).
    pub fn requests(&self) -> ConnectionManager {
        self.requests.clone()
    }

    /// A connection of its own for blocking reads.
    pub async fn dedicated(&self) -> anyhow::Result<ConnectionManager> {
        manager(&self.client, READ_BLOCK + RESPONSE_TIMEOUT, 3)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", self.url))
    }

    /// The URL connected to, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }
}

async fn manager(
    client: &redis::Client,
    response_timeout: Duration,
    retries: usize,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(CONNECT_TIMEOUT.min(response_timeout)))
        .set_number_of_retries(retries);
    client.get_connection_manager_with_config(config).await
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
        let codes: Vec<String> = error
            .clone()
            .into_server_errors()
            .map(|errors| errors.iter().map(|(_, e)| e.code().to_owned()).collect())
            .unwrap_or_default();
        if codes.iter().any(|c| c == "OOM") {
            Trouble::Full
        } else if codes.iter().any(|c| c == "WRONGTYPE") {
            Trouble::WrongType
        } else if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
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

/// Classifies `error` and counts it in `eddy_redis_errors_total{operation, kind}`.
pub fn counted(operation: &'static str, error: &redis::RedisError) -> Trouble {
    let trouble = Trouble::of(error);
    crate::metrics::METRICS.redis_error(operation, trouble.as_str());
    trouble
}

/// Publishes events functions emit by `XADD`ing them in the wire format.
pub struct RedisPublisher {
    conn: ConnectionManager,
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
