//! The security suite: one test per finding of the sandbox and API review (issue 12), each an
//! attack or a careless input tried against the real binary, a real Redis and real guests.
//!
//! The `hostile` fixture is the attacker inside the sandbox: it sleeps in a host call, floods
//! the log, forges log lines and publishes oversized, countless or non-JSON events. Raw TCP
//! clients are the attackers outside: slow headers, endless bodies, idle connections by the
//! hundred. Limits are checked with generous bounds (a 1 s deadline must end the invocation
//! well before the guest's 8 s sleep); they are checks of a limit, not benchmarks.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_tests::host::Host;
use eddy_tests::http::curl;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{
    add, entries, eventually, group_exists, manifest, record_function, unique,
};
use eddy_tests::{eddy_bin, eddy_redis, invoke_json, run, run_within, wasm};
use redis::Commands as _;
use serde_json::Value;

const TOKEN: &str = "security-token-for-tests";

/// `eddy invoke` of the hostile fixture on `data`, with `extra` flags; (exit code, result).
fn invoke_hostile(data: &str, extra: &[&str]) -> (i32, Value, String) {
    let run = invoke_json(&wasm("hostile"), &[&["--data", data], extra].concat());
    let json = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, json, run.stderr)
}

/// A token file for hosts started with an API token.
fn token_file(dir: &Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, TOKEN).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The records `eddy logs NAME` prints, one JSON document each.
fn records(redis: &RedisServer, name: &str) -> Vec<Value> {
    eddy_redis(&["logs", name, "--output", "json"], &redis.url())
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The start and end of a recorded invocation, in seconds since the Unix epoch.
fn span_of(record: &Value) -> (f64, f64) {
    let end = chrono::DateTime::parse_from_rfc3339(record["time"].as_str().unwrap())
        .unwrap()
        .timestamp_micros() as f64
        / 1e6;
    (end - record["duration_ms"].as_f64().unwrap() / 1000.0, end)
}

// 1. A guest's WASI sleep escaped the wall-time limit.

#[test]
fn a_guest_blocked_in_a_host_call_stops_at_its_deadline() {
    let started = Instant::now();
    let (code, result, err) = invoke_hostile(r#"{"do":"sleep","ms":8000}"#, &["--timeout", "1s"]);
    let took = started.elapsed();
    assert_eq!(code, 4, "a timeout is a failure: {result} {err}");
    assert_eq!(result["result"]["failure"]["kind"], "timeout", "{result}");
    assert!(
        took < Duration::from_secs(5),
        "the 1 s deadline must end the 8 s sleep; eddy invoke took {took:?}"
    );
}

#[test]
fn sleeping_guests_hold_no_worker_and_never_run_twice_at_once() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (sleepy, busy, started, seen) = (
        unique("sleepy"),
        unique("busy"),
        unique("started"),
        unique("seen"),
    );
    manifest(
        dir.path(),
        "sleeper",
        "hostile",
        &format!(
            "publish = [{started:?}]\n[limits]\ntimeout = \"1s\"\n[config]\nrecord_stream = {started:?}\n\
             [[triggers.stream]]\nstream = {sleepy:?}\n[triggers.stream.retry]\nmax_attempts = 2\n\
             initial = \"100ms\"\n"
        ),
    );
    record_function(dir.path(), "bystander", &busy, &seen, "", "");
    let _host = Host::start(&redis.url(), dir.path(), &["--workers", "2"]);
    for n in 0..2 {
        add(
            &mut conn,
            &sleepy,
            &[
                ("id", &format!("nap-{n}")),
                ("data", r#"{"do":"sleep","ms":40000}"#),
            ],
        );
    }
    eventually(Duration::from_secs(10), "both sleepers started", || {
        (entries(&mut conn, &started).len() >= 2).then_some(())
    });
    // Two guests asleep in a host call on a host with two workers: an unrelated event still
    // runs at once, not when the sleeps end.
    add(&mut conn, &busy, &[("id", "unrelated"), ("data", "{}")]);
    eventually(
        Duration::from_secs(10),
        "the bystander's event handled while the sleepers sleep",
        || (!entries(&mut conn, &seen).is_empty()).then_some(()),
    );
    // Each sleeper times out after 1 s on both attempts and is dead-lettered as failed.
    let letters = eventually(
        Duration::from_secs(20),
        "both sleepers dead-lettered",
        || {
            let letters = entries(&mut conn, &format!("{sleepy}.dlq"));
            (letters.len() == 2).then_some(letters)
        },
    );
    for letter in &letters {
        assert_eq!(letter.get("eddy.reason"), "failed");
        assert!(
            letter.get("eddy.error").contains("timed out"),
            "{:?}",
            letter.fields
        );
    }
    // Two attempts per event, never one started while the other ran.
    let started_events = entries(&mut conn, &started);
    assert_eq!(started_events.len(), 4, "two attempts of two events");
    let runs = eventually(Duration::from_secs(10), "four records", || {
        let runs = records(&redis, "sleeper");
        (runs.len() == 4).then_some(runs)
    });
    for id in ["nap-0", "nap-1"] {
        let mut attempts: Vec<&Value> = runs.iter().filter(|r| r["event_id"] == id).collect();
        attempts.sort_by_key(|r| r["attempt"].as_u64());
        assert_eq!(attempts.len(), 2, "{runs:?}");
        let (_, first_end) = span_of(attempts[0]);
        let (second_start, _) = span_of(attempts[1]);
        assert!(
            second_start >= first_end,
            "attempt 2 of {id} started before attempt 1 ended: {attempts:?}"
        );
        for attempt in attempts {
            assert!(
                attempt["duration_ms"].as_f64().unwrap() < 5000.0,
                "an attempt outlived its 1 s deadline: {attempt}"
            );
        }
    }
}

// 2. API invocations were not bounded by the workers and took the whole instance pool.

#[test]
fn api_invocations_queue_then_get_429_and_never_starve_triggers() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let statics = dir.path().join("static");
    std::fs::create_dir(&statics).unwrap();
    let (steady, seen) = (unique("steady"), unique("seen"));
    record_function(
        &statics,
        "steady",
        &steady,
        &seen,
        "",
        "[triggers.stream.retry]\nmax_attempts = 1",
    );
    let token = token_file(dir.path());
    let mut host = Host::start(
        &redis.url(),
        &statics,
        &[
            "--token-file",
            &token,
            "--workers",
            "1",
            "--max-instances",
            "8",
            "--api-invoke-concurrency",
            "2",
            "--api-invoke-queue",
            "4",
        ],
    );
    let url = host.api_url();
    let deployed = dir.path().join("deployed");
    std::fs::create_dir(&deployed).unwrap();
    let slow = manifest(
        &deployed,
        "slow",
        "hostile",
        "[limits]\ntimeout = \"10s\"\n",
    );
    let later = manifest(&deployed, "later", "echo", "");
    let deploy = |path: &Path| {
        run(Command::new(eddy_bin())
            .args(["deploy", path.to_str().unwrap(), "--host", &url])
            .env("EDDY_TOKEN", TOKEN))
    };
    let deployed_slow = deploy(&slow);
    assert_eq!(deployed_slow.code, 0, "{deployed_slow:?}");
    host.wait_for_log("deployed function running", Duration::from_secs(10));

    let replies = Arc::new(Mutex::new(Vec::new()));
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let (url, replies) = (url.clone(), replies.clone());
            std::thread::spawn(move || {
                let reply = curl(&[
                    "-X",
                    "POST",
                    "-H",
                    &format!("Authorization: Bearer {TOKEN}"),
                    "-d",
                    r#"{"data":{"do":"sleep","ms":1500}}"#,
                    &format!("{url}/v1/functions/slow/invoke"),
                ]);
                replies.lock().unwrap().push(reply);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // While the flood runs: a stream event is handled, and a deploy succeeds.
    add(
        &mut conn,
        &steady,
        &[("id", "during-flood"), ("data", "{}")],
    );
    let deployed_later = deploy(&later);
    assert_eq!(
        deployed_later.code, 0,
        "a deploy during the flood: {deployed_later:?}"
    );
    eventually(Duration::from_secs(20), "the stream event handled", || {
        (!entries(&mut conn, &seen).is_empty()).then_some(())
    });
    for thread in flood {
        thread.join().unwrap();
    }
    assert!(
        entries(&mut conn, &format!("{steady}.dlq")).is_empty(),
        "an instance shortage must make an event wait, not fail"
    );
    let replies = replies.lock().unwrap();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        ok + busy.len(),
        replies.len(),
        "only 200 or 429: {replies:?}"
    );
    assert!(ok >= 2, "the bound's share ran: {replies:?}");
    assert!(
        !busy.is_empty(),
        "24 invokes over a bound of 2 + 4 queued: {replies:?}"
    );
    for reply in &busy {
        assert!(reply.header("retry-after").is_some(), "{reply:?}");
        assert_eq!(reply.json()["error"]["code"], "busy", "{reply:?}");
    }
    for reply in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(reply.json()["outcome"], "done", "{reply:?}");
    }
}

// 3. No token was needed to stop the API.

/// Opens `n` connections that send part of a request's headers and then nothing.
fn slow_clients(addr: &str, n: usize) -> Vec<TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    (0..n)
        .filter_map(|_| {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            Some(stream)
        })
        .collect()
}

/// Reads from `stream` until the peer closes it or `limit` passes; what was read, and whether
/// the peer closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&text).into_owned(), true),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&text).into_owned(), false)
}

#[test]
fn slow_idle_and_endless_clients_cannot_take_the_api_down() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let fns = dir.path().join("fns");
    std::fs::create_dir(&fns).unwrap();
    manifest(&fns, "idle", "echo", "");
    let token = token_file(dir.path());
    let mut host = Host::start_with_open_files(
        &redis.url(),
        &fns,
        &[
            "--token-file",
            &token,
            "--http-header-timeout",
            "1s",
            "--http-body-timeout",
            "1s",
            "--http-idle-timeout",
            "1s",
            "--http-max-connections",
            "1000",
        ],
        256,
    );
    let url = host.api_url();
    let addr = url.trim_start_matches("http://").to_owned();

    // More slow clients than the host has file descriptors: /healthz still answers at once.
    let mut flood = slow_clients(&addr, 400);
    let health = curl(&["--max-time", "5", &format!("{url}/healthz")]);
    assert_eq!(health.status, 200, "healthz under a slow-client flood");
    // A slow client is cut off at the header timeout, not held.
    let (_, closed) = read_until_closed(flood.last_mut().unwrap(), Duration::from_secs(5));
    assert!(
        closed,
        "a connection that never finishes its headers must be closed"
    );
    drop(flood);

    // A body that never ends, from an authorized client: answered 408 at the body timeout.
    let mut endless = TcpStream::connect(&addr).unwrap();
    write!(
        endless,
        "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\n"
    )
    .unwrap();
    let (answer, closed) = read_until_closed(&mut endless, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        closed,
        "the endless body's connection is closed after the 408"
    );

    // An idle keep-alive connection is closed after the idle timeout.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed, "an idle keep-alive connection must be closed");

    // The flood left a bounded trace in the log: warnings are rate-limited.
    let log = host.log();
    let accept_warnings = log.lines().filter(|l| l.contains("accept")).count();
    assert!(
        accept_warnings < 20,
        "{accept_warnings} accept warnings:\n{}",
        &log[..log.len().min(4000)]
    );
    assert!(
        log.len() < 256 * 1024,
        "the log grew to {} bytes",
        log.len()
    );
}

#[test]
fn slow_uploads_cannot_keep_health_checks_out() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "idle", "echo", "");
    // No token, so every upload is let in to send its body; a long body timeout.
    let mut host = Host::start(
        &redis.url(),
        dir.path(),
        &[
            "--http-body-timeout",
            "60s",
            "--http-header-timeout",
            "1s",
            "--http-max-connections",
            "20",
        ],
    );
    let url = host.api_url();
    let addr = url.trim_start_matches("http://").to_owned();
    let mut uploads = Vec::new();
    for _ in 0..30 {
        let mut upload = TcpStream::connect(&addr).unwrap();
        upload
            .write_all(
                b"POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
            )
            .unwrap();
        uploads.push(upload);
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let health = curl(&["--max-time", "5", &format!("{url}/healthz")]);
        assert_eq!(
            health.status, 200,
            "healthz with every connection uploading slowly"
        );
    }
    drop(uploads);

    // A connection idle a while, then slow with its headers, gets the header timeout from its
    // first byte, not after the rest of the (30 s) idle timeout.
    let mut late = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    late.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let (_, closed) = read_until_closed(&mut late, Duration::from_secs(5));
    assert!(
        closed,
        "a header started after an idle wait must still be timed out"
    );
}

// 4. Guest logs bypassed the output budget and could forge host log lines.

#[test]
fn guest_logs_are_budgeted_and_cannot_forge_log_lines() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (chatty, picky) = (unique("chatty"), unique("picky"));
    manifest(
        dir.path(),
        "chatty",
        "hostile",
        &format!("[[triggers.stream]]\nstream = {chatty:?}\n"),
    );
    manifest(
        dir.path(),
        "picky",
        "reject",
        &format!("[[triggers.stream]]\nstream = {picky:?}\n"),
    );
    let token = token_file(dir.path());
    let mut host = Host::start(&redis.url(), dir.path(), &["--token-file", &token]);
    let url = host.api_url();
    let before = host.log().len();
    let line = "x".repeat(1000);
    add(
        &mut conn,
        &chatty,
        &[
            ("id", "flood"),
            (
                "data",
                &serde_json::json!({ "do": "log", "lines": 20000, "text": line }).to_string(),
            ),
        ],
    );
    let forged =
        "ok\nFORGED-LINE  INFO eddy::host: deployed function running function=admin-backdoor";
    add(
        &mut conn,
        &chatty,
        &[
            ("id", "forgery"),
            (
                "data",
                &serde_json::json!({ "do": "log", "lines": 1, "text": forged }).to_string(),
            ),
        ],
    );
    // An event id with a line break, posted over HTTP to a function that rejects it: the
    // dead-lettering warning carries the id.
    let posted = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "Content-Type: application/cloudevents+json",
        "-d",
        r#"{"specversion":"1.0","type":"T","source":"s","id":"x\nFORGED-ID  WARN eddy: fake","data":{}}"#,
        &format!("{url}/v1/streams/{picky}/events"),
    ]);
    assert_eq!(posted.status, 202, "{posted:?}");
    eventually(Duration::from_secs(20), "both events handled", || {
        let handled = records(&redis, "chatty").len() == 2
            && !entries(&mut conn, &format!("{picky}.dlq")).is_empty();
        handled.then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let log = host.log();
    let grown = log.len() - before;
    assert!(
        grown < 512 * 1024,
        "20 MB of guest log lines added {grown} bytes to the host log"
    );
    for line in log.lines() {
        assert!(!line.starts_with("FORGED"), "a forged log line: {line:?}");
    }
    assert!(
        log.contains("FORGED-LINE"),
        "the guest's line is still logged, escaped"
    );
}

// 5. `limits.output` (and other limits) had no upper bound.

#[test]
fn every_limit_a_manifest_or_flag_sets_has_a_ceiling() {
    let redis = RedisServer::start();
    for (limit, field) in [
        ("output = \"1TiB\"", "limits.output"),
        ("timeout = \"100d\"", "limits.timeout"),
        ("memory = \"8GiB\"", "limits.memory"),
        ("publish_count = 10000000", "limits.publish_count"),
        ("publish_bytes = \"64GiB\"", "limits.publish_bytes"),
    ] {
        let stderr = refused_manifest(&redis, &format!("[limits]\n{limit}\n"));
        assert!(stderr.contains(field), "{limit}: {stderr}");
        assert!(stderr.contains("expected"), "{limit}: {stderr}");
    }
    for flags in [
        ["--output-limit", "16GiB"],
        ["--timeout", "100d"],
        ["--memory", "8GiB"],
    ] {
        let (code, _, err) = invoke_hostile("{}", &flags);
        assert_eq!(code, 2, "{flags:?} is a usage error: {err}");
        assert!(err.contains("at most"), "{flags:?}: {err}");
    }
}

// 6. Published events had no size or count cap, and any bytes went out labelled JSON.

#[test]
fn published_events_are_capped_in_size_count_and_type() {
    let (code, result, err) = invoke_hostile(
        r#"{"do":"publish","stream":"out","count":3,"bytes":2000000}"#,
        &[],
    );
    assert_eq!(code, 4, "{result} {err}");
    let body = result["result"]["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("published 0 of 3") && body.contains("bytes"),
        "{body}"
    );
    assert!(result["published"].as_array().is_none_or(|p| p.is_empty()));

    let (code, result, err) = invoke_hostile(
        r#"{"do":"publish","stream":"out","count":5000,"bytes":10}"#,
        &[],
    );
    assert_eq!(code, 4, "{result} {err}");
    let body = result["result"]["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("published 1000 of 5000") && body.contains("publish_count"),
        "{body}"
    );

    let (code, result, err) = invoke_hostile(
        r#"{"do":"publish-raw","stream":"out","data":"not json at all"}"#,
        &[],
    );
    assert_eq!(code, 4, "{result} {err}");
    let body = result["result"]["body"].as_str().unwrap_or_default();
    assert!(body.contains("Invalid") && body.contains("JSON"), "{body}");

    // Through a host: oversized events never reach Redis.
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (unique("in"), unique("out"));
    manifest(
        dir.path(),
        "fanout",
        "hostile",
        &format!(
            "publish = [{out:?}]\n[[triggers.stream]]\nstream = {input:?}\n\
             [triggers.stream.retry]\nmax_attempts = 1\n"
        ),
    );
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    let data =
        serde_json::json!({ "do": "publish", "stream": out, "count": 30, "bytes": 8_000_000 });
    add(&mut conn, &input, &[("data", &data.to_string())]);
    eventually(Duration::from_secs(20), "the fan-out dead-lettered", || {
        (!entries(&mut conn, &format!("{input}.dlq")).is_empty()).then_some(())
    });
    let published: usize = conn.xlen(&out).unwrap_or(0);
    assert_eq!(published, 0, "no oversized event reaches Redis");
}

// 7. The cronjob API wrote to internal keys.

#[test]
fn cronjobs_cannot_target_internal_keys() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "idle", "echo", "");
    let token = token_file(dir.path());
    let mut host = Host::start(&redis.url(), dir.path(), &["--token-file", &token]);
    let url = host.api_url();
    for (name, stream, field) in [
        ("victim", "eddy:function:victim", "stream"),
        ("deploys", "EDDY:deployments", "stream"),
        ("ticks", "Eddy:cron:victim", "stream"),
        ("braces", "a{b}", "stream"),
        ("eddy:sneaky", "fine", "name"),
    ] {
        let body = serde_json::json!({
            "name": name, "schedule": "* * * * * *", "stream": stream, "type": "T",
        });
        let reply = curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "-d",
            &body.to_string(),
            &format!("{url}/v1/cronjobs"),
        ]);
        assert_eq!(reply.status, 400, "{stream}: {reply:?}");
        assert_eq!(reply.json()["error"]["field"], field, "{stream}: {reply:?}");
    }
    let (code, _, err) = eddy_redis(
        &[
            "cron",
            "create",
            "victim",
            "--schedule",
            "* * * * * *",
            "--stream",
            "eddy:deployments",
            "--type",
            "T",
        ],
        &redis.url(),
    )
    .into_parts();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("eddy:"), "{err}");
    let stored: usize = conn.hlen("eddy:cronjobs").unwrap();
    assert_eq!(stored, 0, "nothing stored");
}

// 8. A cronjob and a function's cron trigger of one name shared their state.

/// The scheduled second of each tick in `stream`, in order.
fn tick_seconds(conn: &mut redis::Connection, stream: &str) -> Vec<i64> {
    entries(conn, stream)
        .iter()
        .map(|e| {
            e.get("id")
                .rsplit(':')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap()
        })
        .collect()
}

/// Whether `seconds` are consecutive, with no tick missing or repeated.
fn consecutive(seconds: &[i64]) -> bool {
    seconds.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn a_cronjob_and_a_cron_trigger_of_one_name_keep_their_own_state() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("report");
    let jobs = unique("jobs");
    manifest(
        dir.path(),
        "reporter",
        "echo",
        &format!("[[triggers.cron]]\nname = {name:?}\nschedule = \"* * * * * *\"\n"),
    );
    let (code, _, err) = eddy_redis(
        &[
            "cron",
            "create",
            &name,
            "--schedule",
            "* * * * * *",
            "--stream",
            &jobs,
            "--type",
            "Tick",
            "--catch-up",
            "none",
        ],
        &redis.url(),
    )
    .into_parts();
    assert_eq!(code, 0, "{err}");
    let ticks = format!("eddy:cron:{name}");
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(Duration::from_secs(20), "four ticks of each", || {
        (tick_seconds(&mut conn, &ticks).len() >= 4 && tick_seconds(&mut conn, &jobs).len() >= 4)
            .then_some(())
    });
    let (function_ticks, job_ticks) = (
        tick_seconds(&mut conn, &ticks),
        tick_seconds(&mut conn, &jobs),
    );
    // The first tick of each may be a catch-up of an earlier second; after it, none is skipped.
    assert!(consecutive(&function_ticks[1..]), "{function_ticks:?}");
    assert!(consecutive(&job_ticks[1..]), "{job_ticks:?}");
    // Removing the cronjob leaves the function's schedule alone.
    let (code, _, err) = eddy_redis(&["cron", "rm", &name], &redis.url()).into_parts();
    assert_eq!(code, 0, "{err}");
    let after = tick_seconds(&mut conn, &ticks).len();
    eventually(Duration::from_secs(10), "two more function ticks", || {
        (tick_seconds(&mut conn, &ticks).len() >= after + 2).then_some(())
    });
    let function_ticks = tick_seconds(&mut conn, &ticks);
    assert!(consecutive(&function_ticks[1..]), "{function_ticks:?}");
}

// 9. Producers could forge the fields of their own dead letters.

#[test]
fn producers_cannot_forge_dead_letter_fields() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("orders");
    manifest(
        dir.path(),
        "strict",
        "reject",
        &format!("[[triggers.stream]]\nstream = {stream:?}\n"),
    );
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(Duration::from_secs(10), "the group", || {
        group_exists(&mut conn, &stream, "strict").then_some(())
    });
    add(
        &mut conn,
        &stream,
        &[
            ("data", "{}"),
            ("eddy.reason", "fine"),
            ("eddy.function", "victim"),
            ("eddy.group", "victim-group"),
            ("eddy.stream", "victim-stream"),
            ("eddy.entry_id", "1-0"),
        ],
    );
    let dlq = format!("{stream}.dlq");
    let letter = eventually(Duration::from_secs(10), "the dead letter", || {
        entries(&mut conn, &dlq).into_iter().next()
    });
    let listed = eddy_redis(&["dlq", "ls", "--output", "json"], &redis.url());
    let rows: Value = serde_json::from_str(&listed.stdout).unwrap();
    let functions: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["function"].as_str())
        .collect();
    assert_eq!(functions, ["strict"], "listed under its real function");
    let shown = eddy_redis(
        &["dlq", "show", "strict", &letter.id, "--output", "json"],
        &redis.url(),
    );
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["fields"]["eddy.reason"], "rejected", "{shown}");
    assert_eq!(shown["fields"]["eddy.stream"], stream.as_str(), "{shown}");
    // The producer's own fields are kept, as part of the original entry.
    assert_eq!(shown["original"]["eddy.function"], "victim", "{shown}");
    // Replay goes to the group that failed it, nowhere else.
    let replayed = eddy_redis(&["dlq", "replay", "strict", "--all"], &redis.url());
    assert_eq!(replayed.code, 0, "{replayed:?}");
    let forged_schedule: usize = conn
        .zcard("eddy:{victim-stream}:victim-group:retry:due")
        .unwrap();
    assert_eq!(forged_schedule, 0);
    eventually(Duration::from_secs(10), "the replay rejected again", || {
        let again = entries(&mut conn, &dlq);
        (again.len() == 1 && again[0].id != letter.id).then_some(())
    });
}

/// `eddy up` on a folder holding one manifest of `echo` with `rest`; its stderr, after
/// checking it refused to start.
fn refused_manifest(redis: &RedisServer, rest: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "naughty", "echo", rest);
    let out = run_within(
        Command::new(eddy_bin())
            .args(["up", "--redis", &redis.url(), "--listen", "127.0.0.1:0"])
            .arg("--functions")
            .arg(dir.path()),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 1, "{rest}: {out:?}");
    out.stderr
}

/// POSTs an empty JSON event to `stream` (as written, percent-encoding included).
fn post_event(url: &str, stream: &str) -> eddy_tests::http::Reply {
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{}",
        &format!("{url}/v1/streams/{stream}/events"),
    ])
}

/// Each manifest `rest` is refused naming its field and `why`; then the API refuses events to
/// each of `streams` (as written in the path) naming the `stream` field.
fn names_are_refused(cases: &[(&str, &str)], why: &str, streams: &[&str]) {
    let redis = RedisServer::start();
    for (rest, field) in cases {
        let stderr = refused_manifest(&redis, rest);
        assert!(
            stderr.contains(field) && stderr.contains(why),
            "{rest}: {stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "idle", "echo", "");
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    let url = host.api_url();
    for stream in streams {
        let reply = post_event(&url, stream);
        assert_eq!(reply.status, 400, "{stream}: {reply:?}");
        assert_eq!(
            reply.json()["error"]["field"],
            "stream",
            "{stream}: {reply:?}"
        );
    }
}

// 10. Retry keys collided through braces in stream and group names.

#[test]
fn names_with_braces_are_refused() {
    names_are_refused(
        &[
            (
                "[[triggers.stream]]\nstream = \"ka\"\ngroup = \"kb}:kc\"\n",
                "triggers.stream[0].group",
            ),
            (
                "[[triggers.stream]]\nstream = \"ka}:kb\"\ngroup = \"kc\"\n",
                "triggers.stream[0].stream",
            ),
            (
                "[[triggers.stream]]\nstream = \"s\"\ndead_letter = \"{s}\"\n",
                "triggers.stream[0].dead_letter",
            ),
        ],
        "brace",
        &["a%7Bb%7D"],
    );
}

// 11. Manifests accepted `eddy:` names: a guest could publish into Eddy's own keys.

#[test]
fn names_with_the_eddy_prefix_are_refused_in_any_case() {
    names_are_refused(
        &[
            ("publish = [\"eddy:deployments\"]\n", "publish[0]"),
            ("publish = [\"EDDY:deployments\"]\n", "publish[0]"),
            (
                "[[triggers.stream]]\nstream = \"s\"\ndead_letter = \"eddy:functions\"\n",
                "triggers.stream[0].dead_letter",
            ),
            (
                "[[triggers.stream]]\nstream = \"Eddy:cron:x\"\n",
                "triggers.stream[0].stream",
            ),
        ],
        "eddy:",
        &["eddy%3Adeployments", "EDDY:x"],
    );
}

// 12. Local and client edges: endless local input, paths not percent-decoded, a name with a
// URL special answered 404.

#[test]
fn request_paths_are_percent_decoded_then_checked() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "idle", "echo", "");
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    let url = host.api_url();
    let slash = unique("a");
    assert_eq!(post_event(&url, &format!("{slash}%2Fb")).status, 202);
    let stored: usize = conn.xlen(format!("{slash}/b")).unwrap();
    assert_eq!(stored, 1, "the decoded name is the stream");
    let control = post_event(&url, "a%0Ab");
    assert_eq!(control.status, 400, "{control:?}");
    // An event type is decoded too, then held to the rule a guest's publish follows.
    let forged = curl(&[
        "-X",
        "POST",
        "-d",
        "{}",
        &format!("{url}/v1/streams/{slash}/events?type=T%0Aforged"),
    ]);
    assert_eq!(forged.status, 400, "{forged:?}");
    assert_eq!(forged.json()["error"]["field"], "type", "{forged:?}");
    // The CLI sends a name as one encoded segment, so the host names what is wrong with it.
    let out = run(Command::new(eddy_bin()).args([
        "publish", "a?b", "--type", "T", "--data", "{}", "--host", &url,
    ]));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("stream name") && out.stderr.contains("'?'"),
        "{}",
        out.stderr
    );
}

#[test]
fn local_input_files_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("data");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // A writer that sends 40 MiB, then keeps the pipe open: a reader with no cap waits.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..40 {
                if pipe.write_all(&chunk).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_secs(20));
        })
    };
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(eddy_bin())
        .arg("invoke")
        .arg(wasm("hostile"))
        .arg("--data-file")
        .arg(&fifo)
        .env("XDG_CACHE_HOME", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("eddy invoke kept reading an endless input");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("--data-file") && err.contains("at most"),
        "{err}"
    );
    drop(writer);
}
