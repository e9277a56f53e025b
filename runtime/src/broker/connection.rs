//! One connection type for both shapes of Redis a host can join: a single server (or a
//! primary with replicas behind one address) and a Redis Cluster.
//!
//! Every other room talks to Redis through [`Conn`] and never asks which shape it has: a
//! single server is reached by a [`ConnectionManager`], which reconnects by itself; a cluster
//! by the redis crate's cluster client, which follows `MOVED` and `ASK` redirections and
//! refreshes its slot map after a failover. What the shapes ask of the callers is the same:
//! every script and pipeline keeps its keys in one hash slot (Eddy's keys share a `{…}` hash tag),
//! because a cluster refuses anything else.
//!
//! Which shape: a URL with the `redis+cluster://` (or `rediss+cluster://`) scheme or a
//! comma-separated list of seed nodes is a cluster; a single URL is asked `INFO cluster`, so
//! pointing `--redis` at any one node of a cluster is enough.
//!
//! A cluster connection that stops answering is replaced ([`ClusterConn`]): after a master is
//! killed, the crate's cluster client can wedge while it rebuilds its slot map (measured: in
//! about one failover in four under load, every command on it, to any node, timed out for
//! over a minute), and a fresh client, which learns the new slot map from the survivors,
//! carries on at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to the hosts' Redis, single or clustered; clones share it.
#[derive(Clone)]
pub enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => {
                let (mut current, generation) = conn.current();
                let conn = conn.clone();
                Box::pin(async move {
                    let reply = current.req_packed_command(cmd).await;
                    conn.after(&reply, generation);
                    reply
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => {
                let (mut current, generation) = conn.current();
                let conn = conn.clone();
                Box::pin(async move {
                    let reply = current.req_packed_commands(pipeline, offset, count).await;
                    conn.after(&reply, generation);
                    reply
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            // A cluster has database 0 only.
            Conn::Cluster(_) => 0,
        }
    }
}

/// How soon a cluster connection may be replaced again after a replacement: a Redis that is
/// stalled (not a wedged client) times out on every connection, and replacing one each time
/// would only add connections.
pub const CLUSTER_REPLACE_INTERVAL: Duration = Duration::from_secs(5);

/// A cluster connection that replaces itself when a command on it times out; clones share it.
#[derive(Clone)]
pub struct ClusterConn {
    shared: Arc<ClusterShared>,
}

struct ClusterShared {
    client: ClusterClient,
    /// The connection commands go over now, and its generation (how many replaced it).
    current: RwLock<(ClusterConnection, u64)>,
    generation: AtomicU64,
    replacing: AtomicBool,
    last_replaced: Mutex<Option<Instant>>,
    patience: Patience,
    seeds: Arc<str>,
}

impl ClusterConn {
    fn current(&self) -> (ClusterConnection, u64) {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Looks at a command's outcome: a timeout on the connection of `generation` has it
    /// replaced (once, in the background, at most every [`CLUSTER_REPLACE_INTERVAL`]). Other
    /// errors (a refused connection to a dead node, `CLUSTERDOWN`, a redirection) are the
    /// client's to follow and the caller's to retry.
    fn after<T>(&self, reply: &redis::RedisResult<T>, generation: u64) {
        let Err(error) = reply else { return };
        if !error.is_timeout() {
            return;
        }
        let shared = &self.shared;
        if shared.generation.load(Ordering::Acquire) != generation
            || shared.replacing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        {
            let mut last = shared
                .last_replaced
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < CLUSTER_REPLACE_INTERVAL) {
                shared.replacing.store(false, Ordering::Release);
                return;
            }
            *last = Some(Instant::now());
        }
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let budget = shared.patience.connect + shared.patience.response;
            match tokio::time::timeout(budget, shared.client.get_async_connection()).await {
                Ok(Ok(fresh)) => {
                    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
                    *shared.current.write().unwrap_or_else(|e| e.into_inner()) =
                        (fresh, generation);
                    crate::metrics::METRICS.redis_error("cluster_connection", "replaced");
                    tracing::warn!(
                        seeds = %shared.seeds,
                        "a Redis Cluster connection stopped answering in time; it was \
                         replaced by a new one"
                    );
                }
                Ok(Err(error)) => tracing::warn!(seeds = %shared.seeds, %error,
                    "replacing a Redis Cluster connection that stopped answering failed; \
                     trying again at its next timeout"),
                Err(_) => tracing::warn!(seeds = %shared.seeds,
                    "replacing a Redis Cluster connection that stopped answering timed out; \
                     trying again at its next timeout"),
            }
            shared.replacing.store(false, Ordering::Release);
        });
    }
}

/// `url` (one URL or a comma-separated list) with every password replaced by `***`, for logs
/// and messages: a Redis URL may carry credentials, and a host's log is read by more people
/// than its secrets are.
pub fn redacted(url: &str) -> String {
    // A password may hold '/', '?' or '@' unescaped: everything up to the last '@' of a part
    // is taken as its credentials.
    url.split(',')
        .map(|part| {
            let (scheme, rest) = match part.split_once("://") {
                Some((scheme, rest)) => (format!("{scheme}://"), rest),
                None => (String::new(), part),
            };
            let rest = match rest.rsplit_once('@') {
                Some((credentials, after)) => {
                    let user = credentials.split_once(':').map_or("", |(user, _)| user);
                    format!("{user}:***@{after}")
                }
                None => rest.to_owned(),
            };
            // `?pass=…` / `?password=…` (a unix socket's way to give one).
            let rest = match rest.split_once('?') {
                Some((before, query)) => {
                    let query: Vec<String> = query
                        .split('&')
                        .map(|pair| match pair.split_once('=') {
                            Some((key, _))
                                if key.eq_ignore_ascii_case("pass")
                                    || key.eq_ignore_ascii_case("password") =>
                            {
                                format!("{key}=***")
                            }
                            _ => pair.to_owned(),
                        })
                        .collect();
                    format!("{before}?{}", query.join("&"))
                }
                None => rest,
            };
            format!("{scheme}{rest}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Where the hosts' Redis is, as `--redis` gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One server (which may turn out to be a cluster node when asked).
    Single(String),
    /// Seed nodes of a cluster, each a `redis://` or `rediss://` URL.
    Cluster(Vec<String>),
}

/// Seed nodes a cluster URL may list at most.
pub const MAX_SEEDS: usize = 64;

impl Target {
    /// Reads `--redis`: `redis://HOST:PORT[/DB]`, `rediss://…`, `unix:///PATH`, a
    /// `redis+cluster://HOST:PORT[,HOST:PORT…]` cluster, or a comma-separated list of node URLs
    /// (also a cluster). A node after the first may leave out the scheme.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        let shown = redacted(url);
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss", rest)
        } else if is_node_list(url) {
            (url.split_once("://").map_or("redis", |(s, _)| s), url)
        } else {
            return Ok(Target::Single(url.to_owned()));
        };
        // Nodes after the first may leave out the credentials: a cluster has one set.
        let first_credentials = rest
            .split(',')
            .next()
            .map(|first| first.split_once("://").map_or(first, |(_, after)| after))
            .and_then(|authority| {
                authority
                    .rsplit_once('@')
                    .map(|(credentials, _)| credentials)
            })
            .map(str::to_owned);
        let mut seeds = Vec::new();
        for part in rest.split(',') {
            let part = part.trim();
            if part.is_empty() {
                anyhow::bail!(
                    "invalid Redis URL {shown:?}: an empty node in the list; expected \
                     redis+cluster://HOST:PORT,HOST:PORT"
                );
            }
            let node = if part.contains("://") {
                part.to_owned()
            } else {
                match &first_credentials {
                    Some(credentials) if !part.contains('@') => {
                        format!("{scheme}://{credentials}@{part}")
                    }
                    _ => format!("{scheme}://{part}"),
                }
            };
            if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
                anyhow::bail!(
                    "invalid cluster node {:?} in {shown:?}: expected redis://HOST:PORT or \
                     rediss://HOST:PORT (a cluster is reached over TCP)",
                    redacted(part)
                );
            }
            seeds.push(node);
        }
        if seeds.len() > MAX_SEEDS {
            anyhow::bail!(
                "invalid Redis URL: {} seed nodes, at most {MAX_SEEDS} are read (a few are \
                 enough: the others are found from them)",
                seeds.len()
            );
        }
        Ok(Target::Cluster(seeds))
    }
}

/// Whether `url` is a comma-separated list of nodes rather than one URL whose password holds
/// a comma: every part after the first is a URL or a bare `HOST:PORT`.
fn is_node_list(url: &str) -> bool {
    let mut parts = url.split(',');
    parts.next();
    let mut any = false;
    for part in parts {
        any = true;
        let part = part.trim();
        if part.is_empty() {
            // A list with a hole: read as a list, so the hole is named.
            continue;
        }
        let bare = part.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
                && !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
        });
        if !(part.contains("://") || bare) {
            return false;
        }
    }
    any
}

/// How a connection behaves when Redis is slow or away.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// How long one command may wait for its reply.
    pub response: Duration,
    /// How long opening a connection may take.
    pub connect: Duration,
    /// How many times a command is retried after a lost connection before it fails.
    pub retries: usize,
}

/// Opens a single-server connection with `patience`.
pub async fn single(client: &redis::Client, patience: Patience) -> redis::RedisResult<Conn> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(patience.response))
        .set_connection_timeout(Some(patience.connect.min(patience.response)))
        .set_number_of_retries(patience.retries);
    client
        .get_connection_manager_with_config(config)
        .await
        .map(Conn::Single)
}

/// Opens a cluster connection to `seeds` with `patience`. Each call opens connections of its
/// own to every node, so a blocking read on one never holds up another's commands.
pub async fn cluster(seeds: &[String], patience: Patience) -> anyhow::Result<Conn> {
    let client = ClusterClient::builder(seeds.iter().map(String::as_str))
        .connection_timeout(patience.connect.min(patience.response))
        .response_timeout(patience.response)
        // A redirection or a failover retries inside the client, within this overall bound:
        // what a caller waits at most, so that it sees a failure (and a wedged client is
        // replaced) rather than hanging. The callers retry on their own schedules.
        .overall_response_timeout(Some(patience.response + patience.connect))
        .retries(patience.retries as u32)
        .build()
        .with_context(|| format!("invalid cluster nodes {:?}", redacted(&seeds.join(","))))?;
    let seeds = redacted(&seeds.join(","));
    let connection = client
        .get_async_connection()
        .await
        .with_context(|| format!("cannot connect to the Redis Cluster at {seeds}"))?;
    Ok(Conn::Cluster(ClusterConn {
        shared: Arc::new(ClusterShared {
            client,
            current: RwLock::new((connection, 0)),
            generation: AtomicU64::new(0),
            replacing: AtomicBool::new(false),
            last_replaced: Mutex::new(None),
            patience,
            seeds: seeds.into(),
        }),
    }))
}

/// Whether the server behind `conn` is a node of a cluster (`cluster_enabled:1`).
pub async fn is_cluster_node(conn: &mut Conn) -> redis::RedisResult<bool> {
    let info: String = redis::cmd("INFO").arg("cluster").query_async(conn).await?;
    Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_url_is_one_server() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/").unwrap(),
            Target::Single("redis://127.0.0.1:6379/".into())
        );
        assert_eq!(
            Target::parse("unix:///tmp/r.sock").unwrap(),
            Target::Single("unix:///tmp/r.sock".into())
        );
    }

    #[test]
    fn a_cluster_scheme_or_a_list_is_a_cluster() {
        assert_eq!(
            Target::parse("redis+cluster://a:7000,b:7001").unwrap(),
            Target::Cluster(vec!["redis://a:7000".into(), "redis://b:7001".into()])
        );
        assert_eq!(
            Target::parse("rediss+cluster://a:7000").unwrap(),
            Target::Cluster(vec!["rediss://a:7000".into()])
        );
        assert_eq!(
            Target::parse("redis://a:7000, b:7001,redis://c:7002").unwrap(),
            Target::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into(),
                "redis://c:7002".into()
            ])
        );
    }

    #[test]
    fn a_password_with_a_comma_is_one_url_and_list_nodes_share_credentials() {
        assert_eq!(
            Target::parse("redis://:se,cret@host:6379/0").unwrap(),
            Target::Single("redis://:se,cret@host:6379/0".into())
        );
        assert_eq!(
            Target::parse("redis+cluster://user:pw@a:7000,b:7001").unwrap(),
            Target::Cluster(vec![
                "redis://user:pw@a:7000".into(),
                "redis://user:pw@b:7001".into()
            ])
        );
    }

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redacted("rediss://:s3cret@host"), "rediss://:***@host");
        assert_eq!(
            redacted("redis+cluster://u:p@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(redacted("redis://host:6379/"), "redis://host:6379/");
        assert_eq!(redacted("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
        assert_eq!(
            redacted("unix:///tmp/r.sock?db=1&pass=s3cret"),
            "unix:///tmp/r.sock?db=1&pass=***"
        );
        assert_eq!(
            redacted("redis://h:1/0?password=s3cret"),
            "redis://h:1/0?password=***"
        );
        assert_eq!(redacted("redis://:pa/s3cret@h:1/"), "redis://:***@h:1/");
        let bad = Target::parse("redis://u:s3cret@a:1,,b:2")
            .unwrap_err()
            .to_string();
        assert!(!bad.contains("s3cret"), "{bad}");
    }

    #[test]
    fn bad_lists_say_what_was_expected() {
        let empty = Target::parse("redis://a:1,,b:2").unwrap_err().to_string();
        assert!(empty.contains("empty node"), "{empty}");
        let unix = Target::parse("redis://a:1,unix:///x")
            .unwrap_err()
            .to_string();
        assert!(unix.contains("expected redis://HOST:PORT"), "{unix}");
        let many = vec!["a:1"; MAX_SEEDS + 1].join(",");
        let many = Target::parse(&format!("redis+cluster://{many}"))
            .unwrap_err()
            .to_string();
        assert!(many.contains("at most"), "{many}");
    }
}
