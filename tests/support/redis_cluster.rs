//! A real Redis Cluster per test: three masters and three replicas on free loopback ports,
//! each a `redis-server --cluster-enabled yes` with its own files, joined by
//! `redis-cli --cluster create --cluster-replicas 1`; killed when dropped.
//!
//! A failover test starts its cluster with a short `cluster-node-timeout`, so a replica takes
//! over a killed master in a few seconds; the others keep a longer one, so a busy machine does
//! not fail a master over by mistake.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;

/// How long a node may be unreachable before the others fail it over: long enough that a
/// node starved of CPU by a busy test run is not failed over by mistake.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// The node timeout of a cluster whose test kills a master: a quick failover.
pub const FAILOVER_NODE_TIMEOUT: Duration = Duration::from_millis(2000);

/// One node of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running three-master, three-replica cluster.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster of three masters with one replica each, and
    /// waits until every node says the cluster is up.
    pub fn start() -> Self {
        Self::start_with_node_timeout(NODE_TIMEOUT)
    }

    /// [`start`](Self::start) with `node_timeout` (see [`FAILOVER_NODE_TIMEOUT`]).
    pub fn start_with_node_timeout(node_timeout: Duration) -> Self {
        // A port found free may be taken by another test's server before this one binds it:
        // the node then exits at once, and the cluster is started again on other ports.
        for _ in 0..3 {
            if let Some(cluster) = Self::try_start(node_timeout) {
                return cluster;
            }
        }
        panic!("redis-server did not start on the ports found free, three times");
    }

    fn try_start(node_timeout: Duration) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            // The cluster bus gets a port of its own, found free like the client port, rather
            // than Redis's default of the port plus 10000, which may be taken.
            let (port, bus) = loop {
                let (port, bus) = (free_port(), free_port());
                if port != bus {
                    break (port, bus);
                }
            };
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(&node_dir)
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-config-file", "nodes.conf"])
                .args([
                    "--cluster-node-timeout",
                    &node_timeout.as_millis().to_string(),
                ])
                // Replicas sync at once rather than after the default 5 s wait for others,
                // and a replica takes over however long its link was down (a test kills
                // masters soon after the start).
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--cluster-replica-validity-factor", "0"])
                // Replicas are what keeps the data here: no files, and no fsync to stall on.
                .args(["--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--logfile"])
                .arg(node_dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "starting redis-server: scripts/test installs it (apt-get install redis-server)",
                );
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = Self { nodes, dir };
        if !cluster.nodes.iter().all(|node| cluster.pings(node.port)) {
            return None;
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_ok(Duration::from_secs(30));
        // A replica that never links (its master's bus port taken by another test's server
        // between the check and the bind) gets the cluster started again on other ports.
        cluster
            .wait_for_replicas(Duration::from_secs(30))
            .then_some(cluster)
    }

    /// Waits until three nodes are replicas with their link to the master up and their
    /// masters streaming writes to them: only then does a killed master fail over to a
    /// replica that has its data.
    fn wait_for_replicas(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let linked = self
                .running_ports()
                .iter()
                .filter(|port| {
                    node_conn(**port)
                        .and_then(|mut c| {
                            redis::cmd("INFO")
                                .arg("replication")
                                .query::<String>(&mut c)
                        })
                        .is_ok_and(|info| {
                            info.contains("role:slave") && info.contains("master_link_status:up")
                        })
                })
                .count();
            if linked == 3 && self.masters().iter().all(|m| self.replicates_writes(*m)) {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!("the replicas did not sync ({linked} of 3); starting again");
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a write to the master on `port` reaches a replica. A replica says its link is
    /// up once it has loaded the master's snapshot, but the master streams writes to it only
    /// after its first acknowledgement (up to a second later): a kill before then loses
    /// every write. `WAIT` asks for that acknowledgement and waits for it.
    fn replicates_writes(&self, port: u16) -> bool {
        let Ok(mut conn) = node_conn(port) else {
            return false;
        };
        let Some(key) = (0..10_000)
            .map(|n| format!("eddy-test:replication:{n}"))
            .find(|key| self.master_of(key) == port)
        else {
            return false;
        };
        redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .query::<()>(&mut conn)
            .is_ok()
            && redis::cmd("WAIT")
                .arg(1)
                .arg(2000)
                .query::<i64>(&mut conn)
                .is_ok_and(|acked| acked >= 1)
    }

    /// Whether the node on `port` answers `PING` within 10 s.
    fn pings(&self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = node_conn(port)
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node reports `cluster_state:ok` with all slots served, and
    /// the cluster client can write to a key on each master.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let all_ok = self.running_ports().iter().all(|port| {
                node_conn(*port)
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .is_ok_and(|info| {
                        info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                    })
            });
            if all_ok && self.writable() {
                return;
            }
            if Instant::now() > deadline {
                let states: Vec<String> = self
                    .running_ports()
                    .iter()
                    .map(|port| {
                        let info = node_conn(*port)
                            .and_then(|mut c| {
                                redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c)
                            })
                            .unwrap_or_else(|e| e.to_string());
                        let state: Vec<&str> = info
                            .lines()
                            .filter(|l| {
                                l.starts_with("cluster_state") || l.starts_with("cluster_slots")
                            })
                            .collect();
                        format!(
                            "{port}: {}\n{}",
                            state.join(" "),
                            self.log(*port)
                                .lines()
                                .rev()
                                .take(5)
                                .collect::<Vec<_>>()
                                .join("\n")
                        )
                    })
                    .collect();
                panic!("the cluster did not come up:\n{}", states.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn writable(&self) -> bool {
        let Ok(mut conn) = self.try_conn() else {
            return false;
        };
        ["{a}", "{b}", "{c}"]
            .iter()
            .all(|key| conn.set::<_, _, ()>(format!("eddy-test:{key}"), 1).is_ok())
    }

    fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The URL hosts connect to: every master's and replica's address as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .running_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The URL of one node alone: a host given it finds out that it is a cluster.
    pub fn one_node_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.running_ports()[0])
    }

    fn try_conn(&self) -> redis::RedisResult<redis::cluster::ClusterConnection> {
        let seeds: Vec<String> = self
            .running_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect();
        redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()?
            .get_connection()
    }

    /// A new cluster connection, following redirections.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        self.try_conn().expect("connecting to the test cluster")
    }

    /// The port of the master serving `key`'s slot now.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .running_ports()
            .iter()
            .find_map(|port| {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query(&mut node_conn(*port).ok()?)
                    .ok()
            })
            .expect("a node answers CLUSTER KEYSLOT");
        for port in self.running_ports() {
            let Ok(mut conn) = node_conn(port) else {
                continue;
            };
            let Ok(slots) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<redis::Value>(&mut conn)
            else {
                continue;
            };
            let ranges = match parse_slots(&slots) {
                Some(ranges) => ranges,
                None => continue,
            };
            if let Some((_, _, master)) = ranges
                .into_iter()
                .find(|(start, end, _)| (*start..=*end).contains(&slot))
            {
                return master;
            }
        }
        panic!("no master serves the slot of {key:?}");
    }

    /// The ports of the three masters now.
    pub fn masters(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self
            .running_ports()
            .into_iter()
            .filter(|port| {
                node_conn(*port)
                    .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c))
                    .ok()
                    .and_then(|role| redis::from_redis_value_ref::<String>(role.first()?).ok())
                    .is_some_and(|role| role == "master")
            })
            .collect();
        out.sort();
        out
    }

    /// The ports of every running node, masters and replicas.
    pub fn ports(&self) -> Vec<u16> {
        self.running_ports()
    }

    /// A direct connection to the node on `port` (it answers for its own slots only).
    pub fn node(&self, port: u16) -> redis::Connection {
        node_conn(port).expect("connecting to a cluster node")
    }

    /// The port of a replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        self.running_ports()
            .into_iter()
            .find(|port| {
                node_conn(*port)
                    .and_then(|mut c| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut c)
                    })
                    .is_ok_and(|info| info.contains(&format!("master_port:{master}\r")))
            })
            .expect("the master has a replica")
    }

    /// Makes the replica on `replica` take over from its master by `CLUSTER FAILOVER` (both
    /// stay up: the old master becomes a replica, and clients are told `MOVED`), and waits
    /// until the cluster is settled again.
    pub fn fail_over_to(&self, replica: u16) {
        let _: String = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut node_conn(replica).expect("connecting to the replica"))
            .expect("CLUSTER FAILOVER");
        let deadline = Instant::now() + Duration::from_secs(30);
        // ROLE changes on the replica first; every node's slot map must show it before a
        // test asks who serves a slot (`master_of` reads any node's map).
        while !(self.masters().contains(&replica) && self.every_map_has_master(replica)) {
            assert!(
                Instant::now() < deadline,
                "the manual failover did not happen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_ok(Duration::from_secs(30));
    }

    /// Whether every running node's `CLUSTER SLOTS` names `port` as the master of some slots.
    fn every_map_has_master(&self, port: u16) -> bool {
        self.running_ports().into_iter().all(|node| {
            node_conn(node)
                .and_then(|mut c| {
                    redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query::<redis::Value>(&mut c)
                })
                .ok()
                .and_then(|slots| parse_slots(&slots))
                .is_some_and(|ranges| ranges.iter().any(|(_, _, master)| *master == port))
        })
    }

    /// Stops the node on `port` (SIGSTOP) without closing its connections: it answers
    /// nothing, as a node stalled by a long command or a frozen machine would, until
    /// [`resume`](Self::resume).
    pub fn pause(&self, port: u16) {
        crate::host::signal(self.pid(port), libc::SIGSTOP);
    }

    /// Lets a node stopped by [`pause`](Self::pause) go on.
    pub fn resume(&self, port: u16) {
        crate::host::signal(self.pid(port), libc::SIGCONT);
    }

    fn pid(&self, port: u16) -> u32 {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .expect("a running node of this cluster")
            .id()
    }

    /// Kills the node on `port` at once (SIGKILL, as a crash would).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node's log, for a failure message.
    pub fn log(&self, port: u16) -> String {
        std::fs::read_to_string(self.dir.path().join(port.to_string()).join("redis.log"))
            .unwrap_or_default()
    }
}

/// A direct connection to one node (no redirection following).
fn node_conn(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_secs(1))
}

/// `CLUSTER SLOTS` as (first slot, last slot, master's port) ranges (every node is on
/// loopback).
fn parse_slots(value: &redis::Value) -> Option<Vec<(u16, u16, u16)>> {
    let redis::Value::Array(ranges) = value else {
        return None;
    };
    let mut out = Vec::new();
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            return None;
        };
        let start: u16 = redis::from_redis_value_ref(parts.first()?).ok()?;
        let end: u16 = redis::from_redis_value_ref(parts.get(1)?).ok()?;
        let redis::Value::Array(master) = parts.get(2)? else {
            return None;
        };
        let port: u16 = redis::from_redis_value_ref(master.get(1)?).ok()?;
        out.push((start, end, port));
    }
    Some(out)
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
