//! `eddy replay`: re-running a function over a range of its stream's history through a real
//! host. Only that function's group sees the entries again, each once per replay, marked
//! `replayedfrom=history`; a type filter still applies; ranges by id; a dry run changes nothing.

use std::time::Duration;

use eddy_tests::eddy_redis;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{
    StreamEntry, add, entries, eventually, group_exists, record_function, scheduled_retries, unique,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn replay(redis: &RedisServer, args: &[&str]) -> (i32, Value, String) {
    let run = eddy_redis(
        &[&["replay"], args, &["--output", "json"]].concat(),
        &redis.url(),
    );
    let json = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, json, run.stderr)
}

/// How many records each `(event id, replayedfrom)` pair left.
fn runs(records: &[StreamEntry]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let d = r.data();
            (
                d["id"].as_str().unwrap_or_default().to_owned(),
                d["replayedfrom"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_function_is_rerun_over_its_history_and_no_other_group_is() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, projection, other) = (unique("orders"), unique("proj"), unique("other"));
    // The projection handles OrderPlaced only; another function reads the same stream.
    record_function(
        dir.path(),
        "projection",
        &stream,
        &projection,
        "",
        "types = [\"OrderPlaced\"]",
    );
    record_function(dir.path(), "mailer", &stream, &other, "", "");
    let _host = Host::start(&redis.url(), dir.path(), &[]);
    eventually(WAIT, "the groups", || {
        (group_exists(&mut conn, &stream, "projection")
            && group_exists(&mut conn, &stream, "mailer"))
        .then_some(())
    });
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(add(
            &mut conn,
            &stream,
            &[
                ("id", &format!("o-{n}")),
                ("type", "OrderPlaced"),
                ("data", "{}"),
            ],
        ));
    }
    add(
        &mut conn,
        &stream,
        &[("id", "c-0"), ("type", "OrderCancelled"), ("data", "{}")],
    );
    eventually(WAIT, "first runs", || {
        (entries(&mut conn, &projection).len() == 4 && entries(&mut conn, &other).len() == 5)
            .then_some(())
    });

    // A dry run counts what the stream holds and schedules nothing.
    let (code, dry, err) = replay(
        &redis,
        &[
            "projection",
            "--from",
            "-",
            "--stream",
            &stream,
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(dry["read"], 5);
    assert_eq!(dry["scheduled"], 0);

    // The whole history: the four orders run again, marked; the cancellation is of another
    // type and is dropped by the trigger's filter.
    let (code, all, err) = replay(&redis, &["projection", "--from", "-", "--stream", &stream]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(all["group"], "projection");
    assert_eq!(all["scheduled"], 5);
    let records = eventually(WAIT, "the re-runs", || {
        let found = entries(&mut conn, &projection);
        (found.len() == 8).then_some(found)
    });
    // A re-run records itself before its entry leaves the schedule: wait for the schedule to
    // empty, or the next replay would (rightly) skip entries still waiting there.
    eventually(WAIT, "the schedule emptied", || {
        (scheduled_retries(&mut conn, &stream, "projection") == 0).then_some(())
    });
    let mut expected: Vec<(String, String)> = (0..4)
        .flat_map(|n| {
            [
                (format!("o-{n}"), String::new()),
                (format!("o-{n}"), "history".into()),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(runs(&records), expected);

    // From the third order to the fourth, by entry id.
    let (code, part, err) = replay(
        &redis,
        &[
            "projection",
            "--from",
            &ids[2],
            "--to",
            &ids[3],
            "--stream",
            &stream,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(part["scheduled"], 2);
    let records = eventually(WAIT, "the partial re-run", || {
        let found = entries(&mut conn, &projection);
        (found.len() == 10).then_some(found)
    });
    let history_runs = |id: &str| {
        runs(&records)
            .iter()
            .filter(|(i, r)| i == id && r == "history")
            .count()
    };
    assert_eq!(history_runs("o-1"), 1);
    assert_eq!(history_runs("o-2"), 2);
    assert_eq!(history_runs("o-3"), 2);

    // Nothing was re-run by the other function of the stream: the replays were never added to
    // the stream, and the other group has nothing unread, unacknowledged or scheduled.
    let length: u64 = redis::cmd("XLEN").arg(&stream).query(&mut conn).unwrap();
    assert_eq!(length, 5);
    assert!(eddy_tests::streams::settled(&mut conn, &stream, "mailer"));
    eventually(WAIT, "the projection settled", || {
        eddy_tests::streams::settled(&mut conn, &stream, "projection").then_some(())
    });
    assert_eq!(entries(&mut conn, &other).len(), 5);
    assert_eq!(entries(&mut conn, &projection).len(), 10);

    // Mistakes are explained.
    let (code, _, err) = replay(&redis, &["projection", "--from", "-"]);
    assert_eq!(code, 1);
    assert!(err.contains("--stream"), "{err}");
    let (code, _, err) = replay(
        &redis,
        &["projection", "--from", "yesterday", "--stream", &stream],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("--from \"yesterday\": expected an entry id"),
        "{err}"
    );
    let (code, _, err) = replay(&redis, &["nobody", "--from", "-", "--stream", &stream]);
    assert_eq!(code, 1);
    assert!(err.contains("no consumer group \"nobody\""), "{err}");
}
