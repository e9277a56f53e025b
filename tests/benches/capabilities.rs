//! Benchmark: what a function's outbound HTTP call and key-value increment cost, against the same
//! call made natively, in the same run (issue 13's targets: at most 2× each).
//!
//! - **Outbound GET.** A hyper server on loopback (its own thread) answers `GET /` with a small
//!   body. The `reach` fixture makes N GETs inside one invocation (so instantiation is not
//!   counted), each over the connection the host kept from the previous one; natively, a hyper
//!   client makes the same N GETs, once opening a new connection per request and once over one
//!   kept-alive connection (the like-for-like peer).
//! - **Key-value increment.** The `reach` fixture increments one key N times in a bucket kept in
//!   a real `redis-server`; natively, redis-rs sends the same `HINCRBY` N times (and, for
//!   reference, `INCR`).
//!
//! Figures are the median of `EDDY_BENCH_ROUNDS` (default 5) alternating rounds of
//! `EDDY_BENCH_CALLS` (default 2000) calls: wall time per call, and CPU per call (the whole
//! process: client, server and host, so both sides pay for the same server).
//! `EDDY_BENCH_PROFILE=http` (or `kv`) runs only the function's calls, to profile them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::broker::{Broker, RedisKeyValue};
use eddy::engine::{
    AllowList, Engine, EngineConfig, FunctionSpec, MemoryPublisher, Origin, Outcome, Services,
};
use eddy::event::{Delivery, Event};
use eddy_tests::redis_server::RedisServer;
use eddy_tests::wasm_bytes;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process CPU time (user + system) so far.
fn cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `work` (which makes `calls` calls); wall and CPU time per call, in µs.
fn measure(calls: usize, work: impl FnOnce()) -> (f64, f64) {
    let (wall, cpu0) = (Instant::now(), cpu());
    work();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    (per(wall.elapsed()), per(cpu() - cpu0))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A hyper server on its own thread answering every request with 64 bytes; its port.
fn start_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; 64])),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    port
}

/// N GETs from a native hyper client: a new connection per request, or one kept alive.
fn native_gets(runtime: &tokio::runtime::Runtime, port: u16, calls: usize, keep_alive: bool) {
    use http_body_util::{BodyExt as _, Empty};
    runtime.block_on(async move {
        let connect = || async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender
        };
        let mut kept = if keep_alive {
            Some(connect().await)
        } else {
            None
        };
        for _ in 0..calls {
            let mut fresh;
            let sender = match kept.as_mut() {
                Some(sender) => sender,
                None => {
                    fresh = connect().await;
                    &mut fresh
                }
            };
            let request = hyper::Request::get("/")
                .header("host", format!("127.0.0.1:{port}"))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 64);
        }
    });
}

fn event(data: serde_json::Value) -> Event {
    Event {
        id: "bench".into(),
        source: "bench".into(),
        event_type: "Bench".into(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".into()),
        data: data.to_string().into_bytes(),
        extensions: vec![],
        delivery: Delivery::invoked(1),
    }
}

fn main() {
    let calls = env_or("EDDY_BENCH_CALLS", 2000);
    let rounds = env_or("EDDY_BENCH_ROUNDS", 5);
    let engine = Engine::new(&EngineConfig {
        max_instances: 4,
        cache_dir: None,
        ..EngineConfig::default()
    })
    .unwrap();
    let port = start_server();
    let reach = engine
        .load(
            FunctionSpec {
                outbound: AllowList::new(vec![Origin::parse("http://127.0.0.1:*").unwrap()]),
                ..FunctionSpec::new("reach")
            },
            &wasm_bytes("reach"),
        )
        .unwrap();
    let redis = RedisServer::start_fast();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = runtime.block_on(Broker::connect(&redis.url())).unwrap();
    let services = Services {
        publisher: Arc::new(MemoryPublisher::default()),
        keyvalue: Arc::new(RedisKeyValue::new(&broker)),
    };
    let invoke = |data: serde_json::Value| {
        let result = runtime.block_on(reach.invoke_with(&event(data), services.clone()));
        assert_eq!(result.outcome, Outcome::Done, "{result:?}");
    };
    let get = serde_json::json!({ "do": "get", "url": format!("http://127.0.0.1:{port}/"), "times": calls });
    let increment =
        serde_json::json!({ "do": "increment", "bucket": "bench", "key": "n", "times": calls });
    let mut conn = redis.conn();
    // `EDDY_BENCH_PROFILE=http` or `=kv` runs only the function's side, for a profiler.
    match std::env::var("EDDY_BENCH_PROFILE").as_deref() {
        Ok("http") => return (0..rounds).for_each(|_| invoke(get.clone())),
        Ok("kv") => return (0..rounds).for_each(|_| invoke(increment.clone())),
        _ => {}
    }

    let mut http: [Vec<(f64, f64)>; 3] = Default::default();
    let mut kv: [Vec<(f64, f64)>; 3] = Default::default();
    for _ in 0..rounds {
        http[0].push(measure(calls, || invoke(get.clone())));
        http[1].push(measure(calls, || native_gets(&runtime, port, calls, false)));
        http[2].push(measure(calls, || native_gets(&runtime, port, calls, true)));
        kv[0].push(measure(calls, || invoke(increment.clone())));
        kv[1].push(measure(calls, || {
            for _ in 0..calls {
                let _: i64 = redis::cmd("HINCRBY")
                    .arg("native:bench")
                    .arg("n")
                    .arg(1)
                    .query(&mut conn)
                    .unwrap();
            }
        }));
        kv[2].push(measure(calls, || {
            for _ in 0..calls {
                let _: i64 = redis::cmd("INCR").arg("native:n").query(&mut conn).unwrap();
            }
        }));
    }
    let report = |title: &str, rows: &[(&str, &Vec<(f64, f64)>)]| {
        println!("\n{title} ({rounds} rounds of {calls} calls, medians)");
        println!(
            "  {:<52} {:>12} {:>12}   ratios to the two native rows (wall, CPU)",
            "", "wall µs/call", "CPU µs/call"
        );
        let medians = |values: &Vec<(f64, f64)>| {
            (
                median(values.iter().map(|r| r.0).collect()),
                median(values.iter().map(|r| r.1).collect()),
            )
        };
        let (first, second) = (medians(rows[1].1), medians(rows[2].1));
        for (name, values) in rows {
            let (wall, cpu) = medians(values);
            println!(
                "  {name:<52} {wall:>12.1} {cpu:>12.1}   {:.2}×, {:.2}× | {:.2}×, {:.2}×",
                wall / first.0,
                cpu / first.1,
                wall / second.0,
                cpu / second.1
            );
        }
    };
    report(
        "Outbound GET to a loopback hyper server",
        &[
            ("a Rust function (reach), wasi:http", &http[0]),
            ("native hyper, a new connection per request", &http[1]),
            ("native hyper, one kept-alive connection", &http[2]),
        ],
    );
    report(
        "Key-value increment in Redis",
        &[
            ("a Rust function (reach), wasi:keyvalue increment", &kv[0]),
            ("native redis-rs HINCRBY (the same command)", &kv[1]),
            ("native redis-rs INCR", &kv[2]),
        ],
    );
}
