//! The batch-shaped delivery path end to end: events read together are settled each alone
//! (a failure in a batch is retried and dead-lettered by itself, the rest acknowledged once),
//! and invocation records stay within their Redis budget however many events run.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, manifest, pending, scheduled_retries, unique};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn one_batch_with_a_failure_and_a_trap_settles_each_event_alone() {
    a_mixed_batch_settles_each_event_alone("per-event");
}

#[test]
fn one_instance_per_batch_still_settles_each_event_alone() {
    // The trap ends the shared instance; the events after it run in a fresh one.
    a_mixed_batch_settles_each_event_alone("per-batch");
}

fn a_mixed_batch_settles_each_event_alone(instance: &str) {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let stream = unique("batch");
    // Queued before the host starts, so its first read takes all ten as one batch.
    for n in 1..=10 {
        let data = match n {
            3 => r#"{"status":503}"#.to_owned(),
            7 => r#"{"trap":true}"#.to_owned(),
            _ => format!(r#"{{"n":{n}}}"#),
        };
        add(
            &mut conn,
            &stream,
            &[("id", &format!("ev-{n}")), ("data", &data)],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "mixed",
        "status",
        &format!(
            "[[triggers.stream]]\nstream = {stream:?}\nstart = \"earliest\"\nbatch = 10\n\
             concurrency = 10\ninstance = {instance:?}\nbatch_window = \"200ms\"\n\
             [triggers.stream.retry]\nmax_attempts = 3\ninitial = \"100ms\"\n\
             jitter = 0.0\n"
        ),
    );
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    let dlq = format!("{stream}.dlq");
    let letters = eventually(WAIT, "two dead letters", || {
        let letters = entries(&mut conn, &dlq);
        (letters.len() == 2).then_some(letters)
    });
    eventually(WAIT, "nothing pending or scheduled", || {
        (pending(&mut conn, &stream, "mixed") == 0
            && scheduled_retries(&mut conn, &stream, "mixed") == 0)
            .then_some(())
    });
    let mut by_event: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for letter in &letters {
        by_event.insert(
            letter.get("id").to_owned(),
            (
                letter.get("eddy.reason").to_owned(),
                letter.get("eddy.attempts").to_owned(),
                letter.get("eddy.error").to_owned(),
            ),
        );
    }
    let failed = &by_event["ev-3"];
    assert_eq!((failed.0.as_str(), failed.1.as_str()), ("failed", "3"));
    assert!(failed.2.contains("503"), "{failed:?}");
    let trapped = &by_event["ev-7"];
    assert_eq!((trapped.0.as_str(), trapped.1.as_str()), ("failed", "3"));
    assert!(trapped.2.contains("trapping on purpose"), "{trapped:?}");

    // Every outcome is in the records: the eight others once each, done on their first
    // attempt; the two failures on attempts 1, 2 and 3, each with its own count.
    let records = eventually(WAIT, "every attempt recorded", || {
        let run = eddy_tests::eddy_redis(&["logs", "mixed", "--output", "json"], &redis.url());
        assert_eq!(run.code, 0, "{}", run.stderr);
        let records: Vec<serde_json::Value> = run
            .stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (records.len() == 14).then_some(records)
    });
    let mut attempts: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for record in &records {
        attempts
            .entry(record["event_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                record["attempt"].as_u64().unwrap(),
                record["outcome"].as_str().unwrap().to_owned(),
            ));
    }
    for n in [1, 2, 4, 5, 6, 8, 9, 10] {
        assert_eq!(
            attempts[&format!("ev-{n}")],
            [(1, "done".to_owned())],
            "ev-{n}: {records:?}"
        );
    }
    for n in [3, 7] {
        let mut tries = attempts[&format!("ev-{n}")].clone();
        tries.sort();
        assert_eq!(
            tries,
            [1, 2, 3].map(|a| (a, "failed".to_owned())),
            "ev-{n}: {records:?}"
        );
    }
}

#[test]
fn a_batch_smaller_than_its_size_runs_when_its_window_ends() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let stream = unique("window");
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "windowed",
        "noop",
        &format!(
            "[[triggers.stream]]\nstream = {stream:?}\nbatch = 10\nconcurrency = 10\n\
             instance = \"per-batch\"\nbatch_window = \"300ms\"\n"
        ),
    );
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    host.wait_for_log("eddy host ready", WAIT);
    for n in 0..3 {
        add(
            &mut conn,
            &stream,
            &[("id", &format!("ev-{n}")), ("data", "{}")],
        );
    }
    // Three of ten never fill the batch: the window ends and they run anyway.
    eventually(WAIT, "the three handled", || {
        eddy_tests::streams::settled(&mut conn, &stream, "windowed").then_some(())
    });
    let records = eventually(WAIT, "their records", || {
        let run = eddy_tests::eddy_redis(&["logs", "windowed", "--output", "json"], &redis.url());
        (run.stdout.lines().count() == 3).then_some(run.stdout)
    });
    assert!(
        records.lines().all(|l| l.contains("\"outcome\":\"done\"")),
        "{records}"
    );
}

#[test]
fn records_stay_within_their_budget_however_many_events_run() {
    let redis = RedisServer::start_fast();
    let mut conn = redis.conn();
    let stream = unique("many");
    let events = 200_000;
    let payload = r#"{"orderId":"o-1","userId":"u-1","items":[{"sku":"a","quantity":1}]}"#;
    for chunk in (0..events).collect::<Vec<usize>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("id")
                .arg(format!("ev-{n}"))
                .arg("data")
                .arg(payload)
                .ignore();
        }
        let () = pipe.query(&mut conn).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "noop",
        "noop",
        &format!("[[triggers.stream]]\nstream = {stream:?}\nstart = \"earliest\"\nbatch = 64\n"),
    );
    let budget: u64 = 1024 * 1024;
    let _host = Host::start(&redis.url(), dir.path(), &["--records-budget", "1MiB"]);
    eventually(Duration::from_secs(300), "every event handled", || {
        let info: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query(&mut conn)
            .ok()?;
        let group = info.first()?;
        let number = |name: &str| redis::from_redis_value::<u64>(group.get(name)?.clone()).ok();
        (number("lag") == Some(0) && number("pending") == Some(0)).then_some(())
    });
    // The last records land within the writer's linger.
    std::thread::sleep(Duration::from_millis(500));
    let used: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("eddy:records")
        .query(&mut conn)
        .unwrap();
    assert!(
        used <= budget + budget / 4,
        "records use {used} bytes of Redis memory, over the {budget}-byte budget"
    );
    // Nothing per event or per flow: the keys are a fixed handful (the function's chart stream
    // among them), whatever the event count.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(
        keys.len() < 12,
        "keys grew with the events: {} keys: {keys:?}",
        keys.len()
    );
    // The newest records are still there to read.
    let run = eddy_tests::eddy_redis(&["logs", "noop", "--output", "json"], &redis.url());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown = run.stdout.lines().count();
    assert!(
        (100..=eddy::records::RECORDS_PER_FUNCTION).contains(&shown),
        "eddy logs showed {shown} records"
    );
}

#[test]
fn a_stopping_host_writes_the_records_of_what_it_settled_last() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let stream = unique("last");
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "last",
        "hostile",
        &format!(
            "[limits]\ntimeout = \"10s\"\n[[triggers.stream]]\nstream = {stream:?}\n\
             start = \"earliest\"\nconcurrency = 8\n"
        ),
    );
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    host.wait_for_log("eddy host ready", WAIT);
    for n in 0..8 {
        add(
            &mut conn,
            &stream,
            &[
                ("id", &format!("ev-{n}")),
                ("data", r#"{"do":"sleep","ms":1500}"#),
            ],
        );
    }
    eventually(WAIT, "all eight running", || {
        (pending(&mut conn, &stream, "last") == 8).then_some(())
    });
    // They end and are settled during the stop, after the reader has stopped: the host
    // exits right after, with their records just queued.
    assert!(host.terminate(WAIT).success(), "{}", host.log());
    assert_eq!(
        pending(&mut conn, &stream, "last"),
        0,
        "settled before exit"
    );
    let run = eddy_tests::eddy_redis(&["logs", "last", "--output", "json"], &redis.url());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 8, "a record per settled event");
}
