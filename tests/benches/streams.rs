//! Stream benchmarks against a real `redis-server` and a real `eddy up` host (not timed tests:
//! run by `scripts/bench`, figures recorded in BENCHMARKS.md).
//!
//! 1. **Drain cost**: 100k events queued in a stream, drained by hosts running the `noop` and
//!    `echo` functions and, in the same run, by peers: a bare native consumer (the same
//!    `XREADGROUP`/`XACK` loop with no wasm: the limit), a redis-py consumer-group loop and a
//!    BullMQ worker at concurrency 1 and 100 (when `EDDY_BENCH_PYTHON` and `EDDY_BENCH_BULLMQ`
//!    name them; `scripts/bench` installs both). Each row gives events/s, the ratio to native,
//!    the consumer's CPU µs per event, Redis's CPU µs per event (`INFO cpu`) and Redis
//!    commands per event (`INFO commandstats`): CPU per event is far steadier than events/s.
//! 2. **Latency**: events published at a steady rate to a host running the `record` function;
//!    an event counts as handled when the record it publishes is read back, so the figure also
//!    holds the function's own publish and one read: an upper bound on publish → handled.
//!
//! Environment: `EDDY_BENCH_EVENTS` (default 100000), `EDDY_BENCH_RATE` (events/s, default
//! 1000), `EDDY_BENCH_SECONDS` (latency run length, default 10).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eddy_tests::host::Host;
use eddy_tests::redis_cluster::RedisCluster;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{eventually, group_exists, manifest, record_function, unique};
use redis::Commands as _;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Batch size both consumers read with.
const BATCH: usize = 64;

fn fill(conn: &mut redis::Connection, stream: &str, events: usize) {
    fill_keyed(conn, stream, events, None);
}

/// [`fill`], each event with a `partitionkey` of one of `keys` keys, round robin.
fn fill_keyed(conn: &mut redis::Connection, stream: &str, events: usize, keys: Option<usize>) {
    let payload =
        r#"{"orderId":"o-1","userId":"u-1","items":[{"sku":"a","quantity":1,"price":2.5}]}"#;
    for chunk in (0..events).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            let id = format!("ev-{n}");
            let mut fields = vec![("type", "OrderPlaced"), ("id", &id), ("data", payload)];
            let key = keys.map(|keys| format!("k{}", n % keys));
            if let Some(key) = &key {
                fields.push(("partitionkey", key));
            }
            pipe.xadd(stream, "*", &fields).ignore();
        }
        let () = pipe.query(conn).expect("filling the stream");
    }
}

/// Where a drain's CPU went and what it asked of Redis, per event.
#[derive(Clone, Copy, Default)]
struct Cost {
    events_per_s: f64,
    /// CPU the consumer process used over the drain, µs per event (`None`: not measured).
    consumer_us: Option<f64>,
    /// CPU Redis used over the drain, µs per event (`INFO cpu`).
    redis_us: f64,
    /// Redis commands per event (`INFO commandstats`, commands run by scripts included).
    commands: f64,
}

/// Redis's CPU seconds and commands run so far.
#[derive(Clone, Copy)]
struct RedisUse {
    cpu_s: f64,
    commands: u64,
}

fn redis_use(conn: &mut redis::Connection) -> RedisUse {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn).unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let cpu_s = field("used_cpu_sys") + field("used_cpu_user");
    let stats: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let commands = stats
        .lines()
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    RedisUse { cpu_s, commands }
}

/// CPU seconds (user and system, every thread) process `pid` has used.
fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// What a drain measures: the clock, the consumers' CPU (summed over their processes) and
/// Redis's use, from its start.
struct Meter {
    started: Instant,
    redis: RedisUse,
    consumers: Vec<(u32, f64)>,
}

impl Meter {
    fn start(conn: &mut redis::Connection, consumers: &[u32]) -> Self {
        Self {
            redis: redis_use(conn),
            consumers: consumers
                .iter()
                .map(|pid| (*pid, process_cpu_s(*pid)))
                .collect(),
            started: Instant::now(),
        }
    }

    fn stop(self, conn: &mut redis::Connection, events: usize) -> Cost {
        let seconds = self.started.elapsed().as_secs_f64();
        let redis = redis_use(conn);
        let per_event = |s: f64| s * 1e6 / events as f64;
        Cost {
            events_per_s: events as f64 / seconds,
            consumer_us: (!self.consumers.is_empty()).then(|| {
                per_event(
                    self.consumers
                        .iter()
                        .map(|(pid, before)| process_cpu_s(*pid) - before)
                        .sum(),
                )
            }),
            redis_us: per_event(redis.cpu_s - self.redis.cpu_s),
            commands: (redis.commands - self.redis.commands) as f64 / events as f64,
        }
    }
}

/// A new stream named after `base` holding `events` events, and its group `g` at the start:
/// what a peer consumer drains.
fn filled_with_group(conn: &mut redis::Connection, base: &str, events: usize) -> String {
    let stream = unique(base);
    fill(conn, &stream, events);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .query(conn)
        .unwrap();
    stream
}

fn native_drain(redis: &RedisServer, events: usize) -> Cost {
    let mut conn = redis.conn();
    let stream = filled_with_group(&mut conn, "native", events);
    let mut meter_conn = redis.conn();
    let meter = Meter::start(&mut meter_conn, &[std::process::id()]);
    let mut handled = 0;
    while handled < events {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("native")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query(&mut conn)
            .unwrap();
        let entries = eddy::wire::read_reply_entries(reply).unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        handled += ids.len();
        let _: i64 = redis::cmd("XACK")
            .arg(&stream)
            .arg("g")
            .arg(&ids)
            .query(&mut conn)
            .unwrap();
    }
    meter.stop(&mut meter_conn, events)
}

/// A peer consumer run as its own process: it prints one JSON line with `events_per_s` and
/// `cpu_us_per_event`; Redis's side is measured here.
fn peer_drain(redis: &RedisServer, events: usize, command: &mut std::process::Command) -> Cost {
    let mut conn = redis.conn();
    let meter = Meter::start(&mut conn, &[]);
    let output = command.output().expect("starting a peer consumer");
    assert!(
        output.status.success(),
        "peer consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut cost = meter.stop(&mut conn, events);
    let line = String::from_utf8_lossy(&output.stdout);
    let reported: serde_json::Value =
        serde_json::from_str(line.trim().lines().last().unwrap_or("")).expect("peer's JSON line");
    cost.events_per_s = reported["events_per_s"].as_f64().unwrap();
    cost.consumer_us = reported["cpu_us_per_event"].as_f64();
    cost
}

fn redis_py_drain(redis: &RedisServer, python: &str, events: usize) -> Cost {
    let stream = filled_with_group(&mut redis.conn(), "redis-py", events);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/peers/redis_py_consumer.py"
    );
    peer_drain(
        redis,
        events,
        std::process::Command::new(python)
            .arg(script)
            .arg(redis.url())
            .arg(&stream)
            .arg("g")
            .arg(events.to_string())
            .arg(BATCH.to_string()),
    )
}

fn bullmq_drain(redis: &RedisServer, drain: &str, events: usize, concurrency: usize) -> Cost {
    peer_drain(
        redis,
        events,
        std::process::Command::new("node")
            .arg(drain)
            .arg(redis.url())
            .arg(unique("bullmq"))
            .arg(events.to_string())
            .arg(concurrency.to_string()),
    )
}

fn eddy_drain(
    redis: &RedisServer,
    events: usize,
    component: &str,
    concurrency: Option<usize>,
    extra: &str,
) -> Cost {
    eddy_drain_on(redis, events, component, concurrency, extra, 1, None)
}

/// [`eddy_drain`] by `hosts` hosts sharing the group, their CPU summed, of events spread over
/// `keys` partition keys if given.
fn eddy_drain_on(
    redis: &RedisServer,
    events: usize,
    component: &str,
    concurrency: Option<usize>,
    extra: &str,
    hosts: usize,
    keys: Option<usize>,
) -> Cost {
    let mut conn = redis.conn();
    let stream = unique("eddy");
    fill_keyed(&mut conn, &stream, events, keys);
    let dir = tempfile::tempdir().unwrap();
    let concurrency = concurrency.map_or(String::new(), |c| format!("concurrency = {c}\n"));
    manifest(
        dir.path(),
        component,
        component,
        &format!(
            "[[triggers.stream]]\nstream = {stream:?}\nstart = \"earliest\"\nbatch = {BATCH}\n{concurrency}{extra}"
        ),
    );
    let hosts: Vec<Host> = (0..hosts)
        .map(|_| Host::start(&redis.url(), dir.path(), &[]))
        .collect();
    // The host creates the group when its trigger starts; the clock starts then.
    eventually(Duration::from_secs(30), "the group", || {
        group_exists(&mut conn, &stream, component).then_some(())
    });
    let pids: Vec<u32> = hosts.iter().map(Host::pid).collect();
    let meter = Meter::start(&mut conn, &pids);
    while !eddy_tests::streams::settled(&mut conn, &stream, component) {
        std::thread::sleep(Duration::from_millis(20));
    }
    meter.stop(&mut conn, events)
}

/// A drain of `events` spread over three streams, one per master of `cluster`, by `hosts`
/// hosts running `noop` on all three, with `up` extra host arguments. Redis's figures are
/// summed over every node, replicas included (they apply each write too).
fn eddy_cluster_drain(
    cluster: &RedisCluster,
    events: usize,
    hosts: usize,
    up: &[&str],
) -> (Cost, String) {
    let mut conn = cluster.conn();
    let mut streams = std::collections::BTreeMap::new();
    for n in 0..500 {
        let name = unique(&format!("spread{n}"));
        streams.entry(cluster.master_of(&name)).or_insert(name);
        if streams.len() == 3 {
            break;
        }
    }
    let streams: Vec<String> = streams.into_values().collect();
    for stream in &streams {
        fill(
            &mut cluster.node(cluster.master_of(stream)),
            stream,
            events / 3,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let triggers: String = streams
        .iter()
        .map(|s| {
            format!(
                "[[triggers.stream]]
stream = {s:?}
start = \"earliest\"
batch = {BATCH}
"
            )
        })
        .collect();
    manifest(dir.path(), "noop", "noop", &triggers);
    let hosts: Vec<Host> = (0..hosts)
        .map(|_| Host::start(&cluster.url(), dir.path(), up))
        .collect();
    eventually(Duration::from_secs(30), "the groups", || {
        streams
            .iter()
            .all(|s| group_exists(&mut conn, s, "noop"))
            .then_some(())
    });
    let ports = cluster.ports();
    let masters = cluster.masters();
    let pids: Vec<u32> = hosts.iter().map(Host::pid).collect();
    let redis_before: Vec<RedisUse> = ports
        .iter()
        .map(|p| redis_use(&mut cluster.node(*p)))
        .collect();
    let consumers_before: Vec<f64> = pids.iter().map(|p| process_cpu_s(*p)).collect();
    let started = Instant::now();
    while !streams
        .iter()
        .all(|s| eddy_tests::streams::settled(&mut conn, s, "noop"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let drained = (events / 3 * 3) as f64;
    let redis_after: Vec<RedisUse> = ports
        .iter()
        .map(|p| redis_use(&mut cluster.node(*p)))
        .collect();
    // Redis CPU seconds and commands used during the drain, on every node or on the masters.
    let used = |masters_only: bool| {
        ports
            .iter()
            .zip(redis_after.iter().zip(&redis_before))
            .filter(|(port, _)| !masters_only || masters.contains(port))
            .fold((0.0, 0u64), |(cpu, commands), (_, (a, b))| {
                (cpu + a.cpu_s - b.cpu_s, commands + a.commands - b.commands)
            })
    };
    let (cpu, commands) = used(false);
    let (master_cpu, master_commands) = used(true);
    // Replicas apply every write again (an XREADGROUP reaches them as one XCLAIM per entry):
    // the split shows what the masters, which bound the throughput, spend.
    let masters_alone = format!(
        "    masters alone: {:.2} Redis CPU µs and {:.3} commands per event",
        master_cpu * 1e6 / drained,
        master_commands as f64 / drained
    );
    let consumer: f64 = pids
        .iter()
        .zip(&consumers_before)
        .map(|(p, before)| process_cpu_s(*p) - before)
        .sum();
    let cost = Cost {
        events_per_s: drained / seconds,
        consumer_us: Some(consumer * 1e6 / drained),
        redis_us: cpu * 1e6 / drained,
        commands: commands as f64 / drained,
    };
    (cost, masters_alone)
}

/// The drain rows on a 3-master cluster (with 3 replicas), all on this machine: the hosts and
/// six redis-servers share its two cores, so these rows show what the cluster path costs per
/// event, not how far more machines would take it.
fn cluster_rows(events: usize, native: f64) {
    let cluster = RedisCluster::start();
    for hosts in [1, 2, 4] {
        let (cost, masters) = eddy_cluster_drain(&cluster, events, hosts, &[]);
        row(
            &format!("eddy, noop, 3-master cluster, {hosts} host(s)"),
            cost,
            native,
        );
        println!("{masters}");
    }
    let (cost, masters) = eddy_cluster_drain(&cluster, events, 1, &["--wait-replicas", "1"]);
    row(
        "eddy, noop, 3-master cluster, 1 host, --wait-replicas 1",
        cost,
        native,
    );
    println!("{masters}");
}

/// Ordering by key against the same drain unordered, on one and on two hosts: events keyed
/// over 1,000 keys (each key's events far apart: ordering costs its bookkeeping) and over 10
/// (at most 10 events in flight, the rest parked and released one by one).
fn ordering_rows(redis: &RedisServer, events: usize, native: f64) {
    for hosts in [1, 2] {
        let on = if hosts == 1 {
            String::new()
        } else {
            format!(", {hosts} hosts")
        };
        row(
            &format!("eddy, noop, unordered, 1000 keys{on}"),
            eddy_drain_on(redis, events, "noop", None, "", hosts, Some(1000)),
            native,
        );
        for keys in [1000, 10] {
            row(
                &format!("eddy, noop, ordered, {keys} keys{on}"),
                eddy_drain_on(
                    redis,
                    events,
                    "noop",
                    None,
                    "ordering = \"key\"\n",
                    hosts,
                    Some(keys),
                ),
                native,
            );
        }
    }
}

/// Prints one row of the drain table.
fn row(name: &str, cost: Cost, native: f64) {
    println!(
        "  {name:<48} {:>9.0} ev/s {:>6.2}x  {:>9}  {:>7.2}  {:>7.3}",
        cost.events_per_s,
        cost.events_per_s / native,
        cost.consumer_us
            .map_or("-".to_owned(), |us| format!("{us:.1}")),
        cost.redis_us,
        cost.commands,
    );
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn latency(redis: &RedisServer, rate: u64, seconds: u64) -> Vec<Duration> {
    let mut conn = redis.conn();
    let stream = unique("lat");
    let records = unique("lat-records");
    let dir = tempfile::tempdir().unwrap();
    record_function(dir.path(), "rec", &stream, &records, "", "");
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(Duration::from_secs(30), "the group", || {
        group_exists(&mut conn, &stream, "rec").then_some(())
    });
    let total = (rate * seconds) as usize;
    let reader = {
        let mut conn = redis.conn();
        let records = records.clone();
        std::thread::spawn(move || {
            let mut latencies = Vec::with_capacity(total);
            let mut last = "0".to_owned();
            while latencies.len() < total {
                let reply: redis::Value = redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(2000)
                    .arg("STREAMS")
                    .arg(&records)
                    .arg(&last)
                    .query(&mut conn)
                    .unwrap();
                let received = now_ns();
                let entries = eddy::wire::read_reply_entries(reply).unwrap();
                if entries.is_empty() {
                    panic!("records stopped arriving after {}", latencies.len());
                }
                for entry in entries {
                    last = entry.id.clone();
                    let fields = entry.fields.unwrap();
                    let data = &fields.iter().find(|(k, _)| k == "data").unwrap().1;
                    let record: serde_json::Value = serde_json::from_slice(data).unwrap();
                    let sent: u128 = record["data"]["sent"].as_str().unwrap().parse().unwrap();
                    latencies.push(Duration::from_nanos((received - sent) as u64));
                }
            }
            latencies
        })
    };
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for n in 0..total {
        let due = start + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let data = format!("{{\"sent\":\"{}\"}}", now_ns());
        let _: String = conn.xadd(&stream, "*", &[("data", data)]).unwrap();
    }
    let mut latencies = reader.join().unwrap();
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let events: usize = env_or("EDDY_BENCH_EVENTS", 100_000);
    let rate: u64 = env_or("EDDY_BENCH_RATE", 1000);
    let seconds: u64 = env_or("EDDY_BENCH_SECONDS", 10);
    let redis = RedisServer::start_fast();

    println!(
        "drain, {events} queued events, batch {BATCH} (per event: consumer CPU µs, Redis CPU µs, Redis commands)"
    );
    println!(
        "  {:<48} {:>14} {:>7}  {:>9}  {:>7}  {:>7}",
        "consumer", "rate", "ratio", "cpu µs", "redis µs", "cmds"
    );
    if std::env::var("EDDY_BENCH_ONLY").as_deref() == Ok("ordering") {
        let native = native_drain(&redis, events);
        row(
            "native XREADGROUP/XACK loop, no wasm",
            native,
            native.events_per_s,
        );
        ordering_rows(&redis, events, native.events_per_s);
        return;
    }
    if std::env::var("EDDY_BENCH_ONLY").as_deref() == Ok("cluster") {
        let native = native_drain(&redis, events);
        row(
            "native XREADGROUP/XACK loop, no wasm",
            native,
            native.events_per_s,
        );
        row(
            "eddy, noop, default concurrency",
            eddy_drain(&redis, events, "noop", None, ""),
            native.events_per_s,
        );
        cluster_rows(events, native.events_per_s);
        return;
    }
    let native = native_drain(&redis, events);
    row(
        "native XREADGROUP/XACK loop, no wasm",
        native,
        native.events_per_s,
    );
    let native = native.events_per_s;
    match std::env::var("EDDY_BENCH_PYTHON") {
        Ok(python) => row(
            "redis-py consumer-group loop",
            redis_py_drain(&redis, &python, events),
            native,
        ),
        Err(_) => println!("  redis-py: skipped (EDDY_BENCH_PYTHON unset; scripts/bench sets it)"),
    }
    match std::env::var("EDDY_BENCH_BULLMQ") {
        Ok(drain) => {
            // One job at a time is slow: a fifth of the events gives the same per-event figures.
            row(
                "BullMQ worker, concurrency 1",
                bullmq_drain(&redis, &drain, events / 5, 1),
                native,
            );
            row(
                "BullMQ worker, concurrency 100",
                bullmq_drain(&redis, &drain, events, 100),
                native,
            );
        }
        Err(_) => println!("  BullMQ: skipped (EDDY_BENCH_BULLMQ unset; scripts/bench sets it)"),
    }
    row(
        "eddy, noop, default concurrency",
        eddy_drain(&redis, events, "noop", None, ""),
        native,
    );
    row(
        "eddy, noop, per-batch instance, concurrency 128",
        eddy_drain(
            &redis,
            events,
            "noop",
            Some(128),
            "instance = \"per-batch\"\n",
        ),
        native,
    );
    row(
        "eddy, echo, default concurrency",
        eddy_drain(&redis, events, "echo", None, ""),
        native,
    );
    for concurrency in [8, 128] {
        row(
            &format!("eddy, echo, concurrency {concurrency}"),
            eddy_drain(&redis, events, "echo", Some(concurrency), ""),
            native,
        );
    }

    // Scale-out on one Redis: hosts share the group. On a 2-core machine they share its CPU
    // too, so what grows is the cost per event; Redis's CPU per event bounds the throughput
    // any number of hosts on more machines can reach.
    for hosts in [2, 4] {
        row(
            &format!("eddy, noop, default concurrency, {hosts} hosts"),
            eddy_drain_on(&redis, events, "noop", None, "", hosts, None),
            native,
        );
    }

    ordering_rows(&redis, events, native);
    cluster_rows(events, native);

    println!("latency publish -> handled at {rate} events/s for {seconds} s (record function)");
    let latencies = latency(&redis, rate, seconds);
    println!(
        "  p50 {:?}  p99 {:?}  max {:?}  ({} events)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        latencies.len()
    );
}
