//! Ordering by key against real hosts and Redis: events of one key run one at a time and in
//! stream order across three hosts, through retries and a host SIGKILLed mid-run, while keys
//! run in parallel; a key whose events cannot succeed is released by each dead letter; events
//! without a key, or with one too long, are refused as the trigger says.

use std::collections::HashMap;
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{
    StreamEntry, dead_letters_with_outbox, entries, eventually, group_exists, most_at_once, now_ms,
    record_function, settled, unique,
};
use redis::Commands as _;

const WAIT: Duration = Duration::from_secs(90);

/// The Redis keys that hold a trigger's ordering state.
fn order_state(conn: &mut redis::Connection, stream: &str, group: &str) -> (u64, u64, u64) {
    let base = format!("eddy:{{{stream}}}:{group}:order");
    (
        conn.hlen(format!("{base}:heads")).unwrap(),
        conn.hlen(format!("{base}:owners")).unwrap(),
        conn.zcard(format!("{base}:lanes")).unwrap(),
    )
}

fn record_key_and_n(record: &StreamEntry) -> (String, u64) {
    let data = record.data();
    let event = &data["data"];
    (
        event["k"].as_str().expect("k").to_owned(),
        event["n"].as_u64().expect("n"),
    )
}

#[test]
fn one_key_runs_in_stream_order_across_hosts_retries_and_a_kill_while_keys_run_in_parallel() {
    const KEYS: u64 = 50;
    const PER_KEY: u64 = 40;
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let path = record_function(
        dir.path(),
        "rec",
        &stream,
        &records,
        "work_ms = \"2\"\nfail_first_percent = \"30\"\nrecord_end = \"true\"",
        "ordering = \"key\"\nkey = \"data.k\"\nbatch = 16\nconcurrency = 16\n\
         [triggers.stream.retry]\ninitial = \"50ms\"\nmax = \"200ms\"\njitter = 0.0",
    );
    // A short timeout: the killed host's heads are claimed 1.5 s after it dies.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("[config]", "[limits]\ntimeout = \"1s\"\n[config]", 1),
    )
    .unwrap();
    let mut hosts: Vec<Host> = (0..3)
        .map(|_| Host::start(&redis.url(), dir.path(), &[]))
        .collect();
    eventually(WAIT, "the group", || {
        group_exists(&mut conn, &stream, "rec").then_some(())
    });
    let mut pipe = redis::pipe();
    for n in 0..PER_KEY {
        for k in 0..KEYS {
            pipe.xadd(
                &stream,
                "*",
                &[
                    ("id", format!("k{k}-{n}")),
                    ("data", format!("{{\"k\":\"k{k}\",\"n\":{n}}}")),
                ],
            )
            .ignore();
        }
    }
    let () = pipe.query(&mut conn).unwrap();
    let total = (KEYS * PER_KEY) as usize;
    eventually(WAIT, "progress before the kill", || {
        (conn.xlen::<_, usize>(&records).unwrap() >= total / 2).then_some(())
    });
    hosts[0].kill();
    let killed_ms = now_ms();

    let done = eventually(WAIT, "every event handled successfully", || {
        let found = entries(&mut conn, &records);
        let ok: std::collections::BTreeSet<String> = found
            .iter()
            .filter(|r| r.get("type") == "Done" && r.data()["status"] == 200)
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect();
        (ok.len() == total).then_some(found)
    });
    eventually(WAIT, "every entry settled", || {
        settled(&mut conn, &stream, "rec").then_some(())
    });

    // Per key, attempts start in stream order (a repeat of the same event is at-least-once
    // delivery after the kill, not disorder) and successes come in exactly stream order.
    let mut started: HashMap<String, Vec<u64>> = HashMap::new();
    let mut succeeded: HashMap<String, Vec<u64>> = HashMap::new();
    for record in &done {
        let (key, n) = record_key_and_n(record);
        match record.get("type") {
            "Attempt" => started.entry(key).or_default().push(n),
            "Done" if record.data()["status"] == 200 => {
                let seq = succeeded.entry(key).or_default();
                if seq.last() != Some(&n) {
                    seq.push(n);
                }
            }
            _ => {}
        }
    }
    assert_eq!(succeeded.len(), KEYS as usize);
    for (key, seq) in &succeeded {
        assert_eq!(
            *seq,
            (0..PER_KEY).collect::<Vec<_>>(),
            "key {key}: successes out of stream order"
        );
        let starts = &started[key];
        assert!(
            starts.windows(2).all(|w| w[0] <= w[1]),
            "key {key}: an attempt started before an earlier event of its key was done: \
             {starts:?}"
        );
    }
    let retried = done
        .iter()
        .filter(|r| r.get("type") == "Attempt" && r.data()["attempt"] != 1)
        .count();
    assert!(retried > 0, "some first attempts failed and were retried");

    // Keys ran side by side: the most attempts running at one moment, from the fixture's own
    // start and end records.
    let most = most_at_once(&done, killed_ms);
    assert!(most > 1, "keys ran in parallel (at most {most} at once)");

    assert!(
        dead_letters_with_outbox(&mut conn, &stream).is_empty(),
        "nothing dead-lettered"
    );
    assert_eq!(
        order_state(&mut conn, &stream, "rec"),
        (0, 0, 0),
        "no key is held and nothing waits once every event is done"
    );
}

#[test]
fn dead_letters_release_their_key_and_unkeyed_or_oversized_keys_are_refused() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    record_function(
        dir.path(),
        "rec",
        &stream,
        &records,
        "status = \"500\"",
        "ordering = \"key\"\nkey = \"partitionkey\"\nunkeyed = \"reject\"\n\
         [triggers.stream.retry]\nmax_attempts = 2\ninitial = \"50ms\"\njitter = 0.0",
    );
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(WAIT, "the group", || {
        group_exists(&mut conn, &stream, "rec").then_some(())
    });
    // Every event fails both attempts: each is dead-lettered, and each dead letter lets the
    // next event of its key run.
    for n in 0..3 {
        let _: String = conn
            .xadd(
                &stream,
                "*",
                &[
                    ("id", format!("a-{n}")),
                    ("partitionkey", "a".to_owned()),
                    ("data", "{}".to_owned()),
                ],
            )
            .unwrap();
    }
    let _: String = conn
        .xadd(&stream, "*", &[("id", "no-key"), ("data", "{}")])
        .unwrap();
    let long = "x".repeat(300);
    let _: String = conn
        .xadd(
            &stream,
            "*",
            &[("id", "long-key"), ("partitionkey", &long), ("data", "{}")],
        )
        .unwrap();

    let letters = eventually(WAIT, "five dead letters", || {
        let found = dead_letters_with_outbox(&mut conn, &stream);
        (found.len() == 5).then_some(found)
    });
    let reason_of = |id: &str| {
        letters
            .iter()
            .find(|l| l.get("id") == id)
            .map(|l| {
                (
                    l.get("eddy.reason").to_owned(),
                    l.get("eddy.error").to_owned(),
                )
            })
            .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:?}"))
    };
    for n in 0..3 {
        assert_eq!(reason_of(&format!("a-{n}")).0, "failed");
    }
    let (reason, error) = reason_of("no-key");
    assert_eq!(reason, "malformed");
    assert!(error.contains("no ordering key"), "{error}");
    let (reason, error) = reason_of("long-key");
    assert_eq!(reason, "malformed");
    assert!(error.contains("longer than 256 bytes"), "{error}");

    // Key `a` ran its events one after another, each to its last attempt before the next.
    let attempts: Vec<(String, u64)> = entries(&mut conn, &records)
        .iter()
        .map(|r| {
            let data = r.data();
            (
                data["id"].as_str().unwrap().to_owned(),
                data["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (0..3)
        .flat_map(|n| [(format!("a-{n}"), 1), (format!("a-{n}"), 2)])
        .collect();
    assert_eq!(attempts, expected, "the refused events never ran");
    eventually(WAIT, "every entry settled", || {
        settled(&mut conn, &stream, "rec").then_some(())
    });
    assert_eq!(order_state(&mut conn, &stream, "rec"), (0, 0, 0));
}

#[test]
fn events_parked_while_ordered_run_once_the_trigger_is_no_longer_ordered() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let ordered = "ordering = \"key\"\nkey = \"subject\"";
    let path = record_function(
        dir.path(),
        "rec",
        &stream,
        &records,
        "work_ms = \"3000\"",
        ordered,
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[config]", "[limits]\ntimeout = \"5s\"\n[config]", 1);
    std::fs::write(&path, &text).unwrap();
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(WAIT, "the group", || {
        group_exists(&mut conn, &stream, "rec").then_some(())
    });
    for n in 0..3 {
        let _: String = conn
            .xadd(
                &stream,
                "*",
                &[
                    ("id", format!("e-{n}")),
                    ("subject", "k".to_owned()),
                    ("data", "{}".to_owned()),
                ],
            )
            .unwrap();
    }
    eventually(WAIT, "the head to start and the others to park", || {
        let started = !entries(&mut conn, &records).is_empty();
        (started && order_state(&mut conn, &stream, "rec").2 == 2).then_some(())
    });
    host.kill();
    // The same function, no longer ordered: nothing parked may wait for a release that never
    // comes.
    std::fs::write(&path, text.replace(ordered, "")).unwrap();
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(WAIT, "every event run", || {
        let ids: std::collections::BTreeSet<String> = entries(&mut conn, &records)
            .iter()
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect();
        (ids.len() == 3).then_some(())
    });
    eventually(
        WAIT,
        "every entry settled and the ordering state gone",
        || {
            (settled(&mut conn, &stream, "rec")
                && order_state(&mut conn, &stream, "rec") == (0, 0, 0))
                .then_some(())
        },
    );
}
