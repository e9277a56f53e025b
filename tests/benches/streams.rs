//! Stream benchmarks against a real `redis-server` and a real `eddy up` host (not timed tests:
//! run by `scripts/bench`, figures recorded in BENCHMARKS.md).
//!
//! 1. **Drain throughput**: 100k events queued in a stream, drained by a host running the
//!    `echo` function, against a bare native consumer draining an identical stream with the
//!    same `XREADGROUP`/`XACK` loop and no wasm: the limit. Reported as events/s and a ratio.
//! 2. **Latency**: events published at a steady rate to a host running the `record` function;
//!    an event counts as handled when the record it publishes is read back, so the figure also
//!    holds the function's own publish and one read: an upper bound on publish → handled.
//!
//! Environment: `EDDY_BENCH_EVENTS` (default 100000), `EDDY_BENCH_RATE` (events/s, default
//! 1000), `EDDY_BENCH_SECONDS` (latency run length, default 10).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eddy_tests::host::Host;
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
    let payload =
        r#"{"orderId":"o-1","userId":"u-1","items":[{"sku":"a","quantity":1,"price":2.5}]}"#;
    for chunk in (0..events).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.xadd(
                stream,
                "*",
                &[
                    ("type", "OrderPlaced"),
                    ("id", &format!("ev-{n}")),
                    ("data", payload),
                ],
            )
            .ignore();
        }
        let () = pipe.query(conn).expect("filling the stream");
    }
}

fn native_drain(redis: &RedisServer, events: usize) -> f64 {
    let mut conn = redis.conn();
    let stream = unique("native");
    fill(&mut conn, &stream, events);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    let started = Instant::now();
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
        let entries = eddy::triggers::streams::wire::read_reply_entries(reply).unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        handled += ids.len();
        let _: i64 = redis::cmd("XACK")
            .arg(&stream)
            .arg("g")
            .arg(&ids)
            .query(&mut conn)
            .unwrap();
    }
    events as f64 / started.elapsed().as_secs_f64()
}

fn eddy_drain(redis: &RedisServer, events: usize, concurrency: usize) -> f64 {
    let mut conn = redis.conn();
    let stream = unique("eddy");
    fill(&mut conn, &stream, events);
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "echo",
        "echo",
        &format!(
            "[[triggers.stream]]\nstream = {stream:?}\nstart = \"earliest\"\nbatch = {BATCH}\nconcurrency = {concurrency}\n"
        ),
    );
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    // The host creates the group when its trigger starts; the clock starts then.
    eventually(Duration::from_secs(30), "the group", || {
        group_exists(&mut conn, &stream, "echo").then_some(())
    });
    let started = Instant::now();
    while !eddy_tests::streams::settled(&mut conn, &stream, "echo") {
        std::thread::sleep(Duration::from_millis(100));
    }
    events as f64 / started.elapsed().as_secs_f64()
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
                let entries = eddy::triggers::streams::wire::read_reply_entries(reply).unwrap();
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

    println!("drain throughput, {events} queued events, batch {BATCH}");
    let native = native_drain(&redis, events);
    println!("  native XREADGROUP/XACK loop, no wasm: {native:>9.0} events/s");
    for concurrency in [8, 32, 128] {
        let eddy = eddy_drain(&redis, events, concurrency);
        println!(
            "  eddy up, echo function, concurrency {concurrency}: {eddy:>9.0} events/s  ({:.2}x native)",
            eddy / native
        );
    }

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
