//! Faults beyond a host crash, against real processes: retention trimming while a group lags
//! and while an entry waits in a retry schedule; Redis full (`maxmemory`), down for 30 s,
//! stalled (`DEBUG SLEEP`) past the claim margin, and its connections cut. Each test counts
//! every event before and after: none lost, none dead-lettered twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eddy_tests::eddy_redis;
use eddy_tests::host::Host;
use eddy_tests::http::curl;
use eddy_tests::proxy::Proxy;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{
    StreamEntry, add, entries, eventually, group_exists, pending, record_function,
    scheduled_retries, settled, unique,
};
use redis::Commands as _;

const WAIT: Duration = Duration::from_secs(60);

/// Event ids (the `id` field the test gave) that `records` holds an `Attempt` for, with how
/// many attempts each.
fn attempts(records: &[StreamEntry]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for record in records.iter().filter(|r| r.get("type") == "Attempt") {
        let id = record.data()["id"].as_str().unwrap_or_default().to_owned();
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

/// Dead letters per original event id.
fn dead_lettered(conn: &mut redis::Connection, stream: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for letter in entries(conn, &format!("{stream}.dlq")) {
        *out.entry(letter.get("id").to_owned()).or_insert(0) += 1;
    }
    out
}

/// A `record` function `rec` on `stream` that works `work_ms` per event, `concurrency` at a
/// time, and retries failures quickly (backoff 200 ms to 1 s) up to 100 attempts: a fault
/// delays its events but never dead-letters them.
fn patient_recorder(
    dir: &std::path::Path,
    stream: &str,
    records: &str,
    work_ms: u64,
    concurrency: usize,
) {
    record_function(
        dir,
        "rec",
        stream,
        records,
        &format!("work_ms = {work_ms}"),
        &format!(
            "concurrency = {concurrency}\n[triggers.stream.retry]\ninitial = \"200ms\"\n\
             max = \"1s\"\nmax_attempts = 100"
        ),
    );
}

fn add_events(conn: &mut redis::Connection, stream: &str, ids: std::ops::Range<usize>) {
    for n in ids {
        add(conn, stream, &[("id", &format!("ev-{n}")), ("data", "{}")]);
    }
}

fn expected(ids: std::ops::Range<usize>) -> BTreeSet<String> {
    ids.map(|n| format!("ev-{n}")).collect()
}

fn wait_group(conn: &mut redis::Connection, stream: &str, group: &str) {
    eventually(WAIT, "the consumer group", || {
        group_exists(conn, stream, group).then_some(())
    });
}

fn wait_settled(conn: &mut redis::Connection, stream: &str, group: &str) {
    eventually(WAIT, "every entry settled", || {
        settled(conn, stream, group).then_some(())
    });
}

/// What `eddy streams ls -o json` says of `stream`.
fn retention_row(redis_url: &str, stream: &str) -> serde_json::Value {
    let run = eddy_redis(&["streams", "ls", "-o", "json"], redis_url);
    run.json()
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["stream"] == stream).cloned())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn retention_keeps_what_a_group_needs_and_a_retry_survives_a_trim() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    // `keep` reads every event; `flaky` only the first, failing it twice with 8 s between
    // attempts, so it sits in the retry schedule while the stream is trimmed past it.
    record_function(
        dir.path(),
        "keep",
        &stream,
        &records,
        "",
        "[triggers.stream.retention]\nmax_len = 10",
    );
    record_function(
        dir.path(),
        "flaky",
        &stream,
        &records,
        "status = 500\nsucceed_on = 3",
        "types = [\"Flaky\"]\n[triggers.stream.retry]\nmax_attempts = 3\ninitial = \"8s\"\n\
         factor = 1.0\njitter = 0.0",
    );
    let _host = Host::start(&redis.url(), dir.path(), &["--retention-interval", "1s"]);
    wait_group(&mut conn, &stream, "keep");
    wait_group(&mut conn, &stream, "flaky");
    // A group that reads nothing yet: everything from the start is still to be read by it.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("laggard")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    let flaky_id = add(
        &mut conn,
        &stream,
        &[("id", "flaky"), ("type", "Flaky"), ("data", "{}")],
    );
    add_events(&mut conn, &stream, 0..1000);
    wait_settled(&mut conn, &stream, "keep");

    // Passes run while the laggard is 1001 behind: nothing goes, and it is counted.
    eventually(WAIT, "a pass that finds entries held back", || {
        let row = retention_row(&redis.url(), &stream);
        (row["held_back"].as_u64() == Some(991)).then_some(())
    });
    let length: u64 = conn.xlen(&stream).unwrap();
    assert_eq!(length, 1001, "a lagging group's entries are kept");

    // The laggard catches up; the first entry is still in flaky's retry schedule.
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("laggard")
        .arg("c")
        .arg("COUNT")
        .arg(2000)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 1001);
    let _: u64 = conn.xack(&stream, "laggard", &ids).unwrap();
    assert_eq!(
        scheduled_retries(&mut conn, &stream, "flaky"),
        1,
        "the flaky event waits for its next attempt"
    );
    // The stream is trimmed to its policy, past the flaky entry: its retry keeps its own copy.
    eventually(WAIT, "the stream trimmed to its policy", || {
        let length: u64 = conn.xlen(&stream).unwrap();
        (length == 10).then_some(())
    });
    assert_eq!(
        scheduled_retries(&mut conn, &stream, "flaky"),
        1,
        "trimmed while the flaky event still waits"
    );
    assert!(entries(&mut conn, &stream).iter().all(|e| e.id != flaky_id));
    // It still runs, from the schedule's copy, and succeeds on its third attempt.
    let (records_key, conn2) = (records.clone(), &mut conn);
    eventually(WAIT, "the flaky event's third attempt", || {
        let seen = attempts(&entries(conn2, &records_key));
        (seen.get("flaky") == Some(&3)).then_some(())
    });
    wait_settled(&mut conn, &stream, "flaky");
    let row = retention_row(&redis.url(), &stream);
    assert_eq!(row["source"], "manifest");
    assert_eq!(row["held_back"], 0);
    assert_eq!(row["trimmed"], 991);
    let seen = attempts(&entries(&mut conn, &records));
    assert_eq!(seen.len(), 1001, "every event ran");
    assert!(dead_lettered(&mut conn, &stream).is_empty());
}

#[test]
fn retention_is_set_shown_and_reset_from_the_command_line() {
    let redis = RedisServer::start();
    let url = redis.url();
    let run = eddy_redis(
        &[
            "streams",
            "retention",
            "audit",
            "--max-age",
            "3d",
            "--max-len",
            "50",
        ],
        &url,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("3d or 50 entries (set)"),
        "{}",
        run.stdout
    );
    let row = retention_row(&url, "audit");
    assert_eq!(row["max_len"], 50);
    assert_eq!(row["max_age_ms"], 3 * 24 * 3600 * 1000);

    let bad = eddy_redis(
        &["streams", "retention", "audit", "--max-age", "soon"],
        &url,
    );
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr
            .contains("--max-age \"soon\": expected a duration"),
        "{}",
        bad.stderr
    );
    let bad = eddy_redis(&["streams", "retention", "audit", "--max-len", "0"], &url);
    assert!(
        bad.stderr.contains("--max-len 0: expected a count"),
        "{}",
        bad.stderr
    );
    let bad = eddy_redis(
        &["streams", "retention", "eddy:hosts", "--max-len", "5"],
        &url,
    );
    assert!(bad.stderr.contains("Eddy's own keys"), "{}", bad.stderr);
    assert_eq!(
        retention_row(&url, "audit")["max_len"],
        50,
        "a refused change leaves the policy as it was"
    );

    let reset = eddy_redis(&["streams", "retention", "audit", "--reset"], &url);
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    assert!(
        reset.stdout.contains("keeps everything"),
        "{}",
        reset.stdout
    );
    assert!(retention_row(&url, "audit").is_null());
}

#[test]
fn a_full_redis_refuses_writes_and_loses_nothing() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    patient_recorder(dir.path(), &stream, &records, 100, 4);
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    wait_group(&mut conn, &stream, "rec");
    add_events(&mut conn, &stream, 0..40);
    // Full while most of them are still to run: their publishes and settle writes are refused.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let api = host.api_url();
    let refused = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"type":"T","data":{}}"#,
        &format!("{api}/v1/streams/{stream}/events"),
    ]);
    assert_eq!(refused.status, 507, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "redis_full");
    assert!(refused.body.contains("OOM"), "{}", refused.body);
    eventually(WAIT, "refused writes counted in the metrics", || {
        let metrics = curl(&[&format!("{api}/metrics")]).body;
        metrics
            .lines()
            .any(|l| {
                l.starts_with("eddy_redis_errors_total{")
                    && l.contains("kind=\"full\"")
                    && l.contains("operation=\"publish\"")
            })
            .then_some(())
    });
    let status = eddy_redis(&["status"], &redis.url());
    assert!(status.stdout.contains("FULL"), "{}", status.stdout);
    std::thread::sleep(Duration::from_secs(2));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut conn)
        .unwrap();

    wait_settled(&mut conn, &stream, "rec");
    let seen = attempts(&entries(&mut conn, &records));
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected(0..40),
        "every event ran to a recorded success"
    );
    assert!(dead_lettered(&mut conn, &stream).is_empty());
    assert!(host.log().contains("OOM"), "the refusals were logged");
}

#[test]
fn redis_down_for_30_seconds_loses_nothing() {
    let mut redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    patient_recorder(dir.path(), &stream, &records, 100, 4);
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    let api = host.api_url();
    wait_group(&mut conn, &stream, "rec");
    add_events(&mut conn, &stream, 0..60);
    eventually(WAIT, "some events handled", || {
        (attempts(&entries(&mut conn, &records)).len() >= 5).then_some(())
    });
    redis.crash();
    let down = Instant::now();
    // While Redis is away the host is not ready, and ingress says so at once.
    let ready = curl(&[&format!("{api}/readyz")]);
    assert_eq!(ready.status, 503, "{}", ready.body);
    let asked = Instant::now();
    let refused = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"type":"T","data":{}}"#,
        &format!("{api}/v1/streams/{stream}/events"),
    ]);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "ingress answered without waiting for Redis"
    );
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    redis.start_again();
    let mut conn = redis.conn();
    wait_settled(&mut conn, &stream, "rec");
    let seen = attempts(&entries(&mut conn, &records));
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected(0..60)
    );
    assert!(dead_lettered(&mut conn, &stream).is_empty());
    eventually(WAIT, "ready again", || {
        (curl(&[&format!("{api}/readyz")]).status == 200).then_some(())
    });
    assert!(host.log().contains("WARN"), "the outage was logged");
}

/// A stream and its group lost while the trigger runs (Redis restarted without persistence, a
/// failover to a replica that never got them, a deletion), and a producer adding events before
/// the host reads again: the group is made again from the stream's start, so none is skipped.
#[test]
fn a_stream_that_vanishes_is_made_again_and_no_event_added_since_is_skipped() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    patient_recorder(dir.path(), &stream, &records, 0, 4);
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    wait_group(&mut conn, &stream, "rec");
    add_events(&mut conn, &stream, 0..5);
    wait_settled(&mut conn, &stream, "rec");
    // In one transaction, so the host cannot make the group again between the two.
    let mut lost = redis::pipe();
    lost.atomic().del(&stream).ignore();
    for n in 5..20 {
        lost.cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("id")
            .arg(format!("ev-{n}"))
            .arg("data")
            .arg("{}")
            .ignore();
    }
    let () = lost.query(&mut conn).unwrap();
    wait_group(&mut conn, &stream, "rec");
    wait_settled(&mut conn, &stream, "rec");
    eventually(WAIT, "every event handled", || {
        let seen = attempts(&entries(&mut conn, &records));
        (seen.keys().cloned().collect::<BTreeSet<_>>() == expected(0..20)).then_some(())
    });
    host.wait_for_log("the consumer group vanished", WAIT);
    let metrics = curl(&[&format!("{}/metrics", host.api_url())]).body;
    assert!(
        metrics.contains(r#"eddy_redis_errors_total{operation="read",kind="group_vanished"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_stall_past_the_claim_margin_settles_each_entry_once() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    // `ok` succeeds; `dead` fails every event on its only attempt: one dead letter each.
    for (name, settings, retry) in [("ok", "", ""), ("dead", "status = 500", "max_attempts = 1")] {
        record_function(
            dir.path(),
            name,
            &stream,
            &records,
            &format!("work_ms = 50\n{settings}"),
            &format!("concurrency = 4\n[triggers.stream.retry]\n{retry}"),
        );
        let path = dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen("[config]", "[limits]\ntimeout = \"1s\"\n[config]", 1),
        )
        .unwrap();
    }
    let hosts = [
        Host::start(&redis.url(), dir.path(), &[]),
        Host::start(&redis.url(), dir.path(), &[]),
    ];
    wait_group(&mut conn, &stream, "ok");
    wait_group(&mut conn, &stream, "dead");
    add_events(&mut conn, &stream, 0..80);
    eventually(WAIT, "some events handled", || {
        (!attempts(&entries(&mut conn, &records)).is_empty()).then_some(())
    });
    // Longer than timeout + claim margin (1.5 s): every entry in flight looks abandoned after.
    let _: () = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(3)
        .query(&mut conn)
        .unwrap();
    wait_settled(&mut conn, &stream, "ok");
    wait_settled(&mut conn, &stream, "dead");
    // A dead letter is forwarded from the stream's outbox after its settle (a round already
    // under way leaves a newer one to the next, at most a sweep later): wait for the last.
    let all = expected(0..80);
    let letters = eventually(WAIT, "every failing event dead-lettered", || {
        let letters = dead_lettered(&mut conn, &stream);
        (letters.keys().cloned().collect::<BTreeSet<_>>() == all).then_some(letters)
    });
    let twice: Vec<_> = letters.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "dead-lettered more than once: {twice:?}");
    assert_eq!(pending(&mut conn, &stream, "ok"), 0);
    drop(hosts);
}

#[test]
fn cut_connections_lose_nothing() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port());
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    patient_recorder(dir.path(), &stream, &records, 20, 8);
    let _host = Host::start(&proxy.url(), dir.path(), &[]);
    wait_group(&mut conn, &stream, "rec");
    for round in 0..5 {
        add_events(&mut conn, &stream, round * 40..(round + 1) * 40);
        std::thread::sleep(Duration::from_millis(300));
        proxy.cut();
    }
    wait_settled(&mut conn, &stream, "rec");
    let seen = attempts(&entries(&mut conn, &records));
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected(0..200)
    );
    assert!(dead_lettered(&mut conn, &stream).is_empty());
}

#[test]
fn a_short_fault_run_loses_nothing() {
    // The project's fault suite (scripts/chaos runs the long one): three hosts, events
    // published throughout, one of each fault (host SIGKILL and SIGSTOP, Redis SIGKILL and
    // full, connections cut), then an exact count.
    let run = eddy_tests::run_within(
        std::process::Command::new("python3")
            .arg(eddy_tests::repo_dir().join("tests/chaos/chaos.py"))
            .args(["--short", "--json", "--seed", "7"])
            .arg("--eddy")
            .arg(eddy_tests::eddy_bin())
            .arg("--functions")
            .arg(eddy_tests::functions_dir()),
        Duration::from_secs(400),
    );
    let summary: serde_json::Value = run
        .stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON summary:\n{}\n{}", run.stdout, run.stderr));
    let totals = &summary["totals"];
    assert!(totals["published"].as_u64().unwrap_or(0) > 100, "{summary}");
    assert_eq!(totals["lost"], 0, "{summary}");
    assert_eq!(totals["duplicate_dead_letters"], 0, "{summary}");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn producer_chosen_ids_beyond_float_precision_are_trimmed_exactly() {
    // Ids whose sequence part is past 2^53: a trim computed in floating point would round the
    // floor onto a pending entry and remove it.
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("explicit");
    for seq in ["9007199254740993", "9007199254740995", "9007199254740997"] {
        let _: String = conn
            .xadd(&stream, format!("5-{seq}"), &[("data", "{}")])
            .unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .query(&mut conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let _: u64 = conn.xack(&stream, "g", &["5-9007199254740993"]).unwrap();
    let set = eddy_redis(
        &["streams", "retention", &stream, "--max-age", "1s"],
        &redis.url(),
    );
    assert_eq!(set.code, 0, "{}", set.stderr);
    // Any host trims every stream with a policy; this one runs a function on another stream.
    record_function(
        dir.path(),
        "idle",
        &unique("idle"),
        &unique("records"),
        "",
        "",
    );
    let _host = Host::start(&redis.url(), dir.path(), &["--retention-interval", "1s"]);
    eventually(WAIT, "the acknowledged entry trimmed", || {
        let ids: Vec<String> = entries(&mut conn, &stream)
            .into_iter()
            .map(|e| e.id)
            .collect();
        (!ids.contains(&"5-9007199254740993".to_owned())).then_some(ids)
    });
    let ids: Vec<String> = entries(&mut conn, &stream)
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        ids,
        ["5-9007199254740995", "5-9007199254740997"],
        "the pending entry and the unread one are kept"
    );
    assert_eq!(pending(&mut conn, &stream, "g"), 1);
}

#[test]
fn ingress_to_a_key_that_is_not_a_stream_is_a_conflict_not_a_retry() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let _: () = conn.set("not-a-stream", "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    record_function(
        dir.path(),
        "idle",
        &unique("idle"),
        &unique("records"),
        "",
        "",
    );
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    let api = host.api_url();
    let reply = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"type":"T","data":{}}"#,
        &format!("{api}/v1/streams/not-a-stream/events"),
    ]);
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], "wrong_type");
    assert!(
        reply.header("retry-after").is_none(),
        "sending again cannot help"
    );
    let value: String = conn.get("not-a-stream").unwrap();
    assert_eq!(value, "x", "the key is untouched");
}

/// The lag `eddy status -o json` and `/metrics` report for `group` on `stream`.
fn reported_lag(redis_url: &str, api: &str, stream: &str, group: &str) -> (u64, bool, u64) {
    let status = eddy_redis(&["status", "-o", "json"], redis_url).json();
    let row = status["groups"]
        .as_array()
        .and_then(|g| {
            g.iter()
                .find(|r| r["stream"] == stream && r["group"] == group)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no group {group} in {status}"));
    let metrics = curl(&[&format!("{api}/metrics")]).body;
    let gauge = metrics
        .lines()
        .find(|l| {
            l.starts_with("eddy_consumer_lag{")
                && l.contains(&format!("stream=\"{stream}\""))
                && l.contains(&format!("group=\"{group}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no lag gauge in\n{metrics}"));
    (
        row["lag"].as_u64().unwrap(),
        row["lag_estimated"] == true,
        gauge,
    )
}

#[test]
fn lag_is_true_after_a_crash_and_when_redis_s_counter_is_impossible() {
    let mut redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    record_function(dir.path(), "rec", &stream, &records, "", "");
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    let api = host.api_url();
    wait_group(&mut conn, &stream, "rec");
    add_events(&mut conn, &stream, 0..200);
    wait_settled(&mut conn, &stream, "rec");
    // Everything delivered, then Redis killed and reloaded from its append-only file.
    redis.crash();
    redis.start_again();
    let mut conn = redis.conn();
    eventually(WAIT, "lag 0 after the reload", || {
        let (lag, estimated, gauge) = reported_lag(&redis.url(), &api, &stream, "rec");
        (lag == 0 && !estimated && gauge == 0).then_some(())
    });
    // A group set back with a read counter that makes Redis's lag larger than the stream: the
    // lag is counted from the ids instead (asked of the library the host and CLI share, as no
    // host may read the group while it is looked at).
    drop(host);
    let ids: Vec<String> = entries(&mut conn, &stream)
        .into_iter()
        .map(|e| e.id)
        .collect();
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&stream)
        .arg("rec")
        .arg(&ids[149])
        .arg("ENTRIESREAD")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    let _: u64 = redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MAXLEN")
        .arg(100)
        .query(&mut conn)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = runtime.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        eddy::broker::groups::state(&mut conn, &stream, "rec")
            .await
            .unwrap()
            .unwrap()
    });
    assert!(state.estimated, "{state:?}");
    assert_eq!(state.lag, 50, "the 50 entries after the group's id");
}

#[test]
fn a_dead_letter_stream_of_the_wrong_type_holds_its_letters_and_no_one_else_s() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let (broken, healthy) = (unique("broken"), unique("healthy"));
    // Someone's hash sits where one group's dead letters should go.
    let _: () = conn.hset(&broken, "not", "a stream").unwrap();
    for (name, dead_letter) in [("first", &broken), ("second", &healthy)] {
        record_function(
            dir.path(),
            name,
            &stream,
            &records,
            "status = \"500\"",
            &format!("dead_letter = {dead_letter:?}\n[triggers.stream.retry]\nmax_attempts = 1"),
        );
    }
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    wait_group(&mut conn, &stream, "first");
    wait_group(&mut conn, &stream, "second");
    add_events(&mut conn, &stream, 0..5);
    eventually(
        Duration::from_secs(30),
        "the healthy group's letters",
        || (entries(&mut conn, &healthy).len() == 5).then_some(()),
    );
    // The other group's letters wait in the stream's outbox, none lost, for the key to be
    // fixed; the hash is untouched.
    let outbox = format!("eddy:{{{stream}}}:dead-letters");
    eventually(Duration::from_secs(30), "the held letters", || {
        (entries(&mut conn, &outbox).len() == 5).then_some(())
    });
    let kind: String = redis::cmd("TYPE").arg(&broken).query(&mut conn).unwrap();
    assert_eq!(kind, "hash");
    let _: () = conn.del(&broken).unwrap();
    eventually(
        Duration::from_secs(30),
        "the held letters forwarded",
        || {
            (entries(&mut conn, &broken).len() == 5 && entries(&mut conn, &outbox).is_empty())
                .then_some(())
        },
    );

    // An entry no host wrote, aimed at a reserved stream, is never forwarded there.
    let forged = add(
        &mut conn,
        &outbox,
        &[
            ("eddy.to", "eddy:deployments"),
            ("eddy.letter", "f1"),
            ("data", "{}"),
        ],
    );
    std::thread::sleep(Duration::from_secs(7)); // past a forwarding sweep (5 s)
    let deployments: usize = conn.xlen("eddy:deployments").unwrap();
    assert_eq!(
        deployments, 0,
        "a forged outbox entry reached eddy:deployments"
    );
    assert_eq!(
        entries(&mut conn, &outbox)[0].id,
        forged,
        "it stays for an operator"
    );
}
