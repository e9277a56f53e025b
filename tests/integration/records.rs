//! Invocation records: `eddy logs` (all, failed only, one event) and `eddy trace` across a
//! two-function flow, from what real hosts recorded.

use std::time::Duration;

use eddy_tests::eddy_redis;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, eventually, group_exists, record_function, unique};
use serde_json::Value;

fn eddy(redis: &RedisServer, args: &[&str]) -> (i32, Vec<Value>, String) {
    let run = eddy_redis(&[args, &["--output", "json"]].concat(), &redis.url());
    let lines = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (run.code, lines, run.stderr)
}

#[test]
fn logs_and_traces_show_what_happened_to_an_event() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, hop, sink) = (unique("orders"), unique("hop"), unique("sink"));
    record_function(dir.path(), "first", &stream, &hop, "", "");
    record_function(
        dir.path(),
        "second",
        &hop,
        &sink,
        "status = \"500\"",
        "[triggers.stream.retry]\nmax_attempts = 2\ninitial = \"50ms\"",
    );
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(Duration::from_secs(10), "the groups", || {
        (group_exists(&mut conn, &stream, "first") && group_exists(&mut conn, &hop, "second"))
            .then_some(())
    });
    add(
        &mut conn,
        &stream,
        &[("id", "order-7"), ("type", "OrderPlaced"), ("data", "{}")],
    );

    let flow = eventually(
        Duration::from_secs(20),
        "three recorded invocations",
        || {
            let (code, lines, _) = eddy(&redis, &["trace", "order-7"]);
            (code == 0 && lines.len() == 3).then_some(lines)
        },
    );
    let summary: Vec<(String, u64, String)> = flow
        .iter()
        .map(|r| {
            (
                r["function"].as_str().unwrap().to_owned(),
                r["attempt"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("first".into(), 1, "done".into()),
            ("second".into(), 1, "failed".into()),
            ("second".into(), 2, "failed".into())
        ]
    );
    assert!(
        flow.iter().all(|r| r["correlation_id"] == "order-7"),
        "{flow:?}"
    );
    assert_eq!(flow[1]["caused_by"], "order-7");

    // Tracing from a later event of the flow finds the same flow.
    let second_event = flow[1]["event_id"].as_str().unwrap();
    let (code, again, _) = eddy(&redis, &["trace", second_event]);
    assert_eq!(code, 0);
    assert_eq!(again.len(), 3);

    let (code, failed, _) = eddy(&redis, &["logs", "second", "--failed"]);
    assert_eq!(code, 0);
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|r| r["status"] == 500 && r["error"].as_str().is_some_and(|e| e.contains("500")))
    );
    let (_, first, _) = eddy(&redis, &["logs", "first", "--event", "order-7"]);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["stream"], stream.as_str());
    let (_, none, _) = eddy(&redis, &["logs", "first", "--failed"]);
    assert!(none.is_empty());

    let (code, _, err) = eddy(&redis, &["trace", "no-such-event"]);
    assert_eq!(code, 1);
    assert!(err.contains("no invocation records"), "{err}");
}
