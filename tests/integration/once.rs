//! `once(key, ttl)` through a real host and Redis: a failed attempt releases its claim so the
//! retry does the effect; once an attempt succeeds, duplicates of the event are skipped; the key
//! is kept as `done` with the time to live the function asked for.

use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, group_exists, record_function, unique};

/// A running `charge` function (the `record` fixture using `once`) with `settings` and
/// `trigger`, its group created.
struct Charge {
    _redis: RedisServer,
    conn: redis::Connection,
    _dir: tempfile::TempDir,
    host: Host,
    stream: String,
    records: String,
}

fn charge(settings: &str, trigger: &str) -> Charge {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("payments"), unique("records"));
    record_function(dir.path(), "charge", &stream, &records, settings, trigger);
    // Two workers whatever the machine's core count: two deliveries must be able to overlap.
    let host = Host::start(&redis.url(), dir.path(), &["--workers", "2"]);
    eventually(Duration::from_secs(10), "the group", || {
        group_exists(&mut conn, &stream, "charge").then_some(())
    });
    Charge {
        _redis: redis,
        conn,
        _dir: dir,
        host,
        stream,
        records,
    }
}

#[test]
fn a_duplicate_is_skipped_but_a_failed_attempt_is_redone() {
    // Every field bound: the Redis, folder and host must live to the end of the test.
    let Charge {
        _redis,
        mut conn,
        _dir,
        host: _host,
        stream,
        records,
    } = charge(
        "once = \"true\"\nstatus = \"500\"\nsucceed_on = \"2\"",
        "[triggers.stream.retry]\ninitial = \"50ms\"",
    );
    add(&mut conn, &stream, &[("id", "o-1"), ("data", "{}")]);
    eventually(Duration::from_secs(20), "the retry that succeeds", || {
        (entries(&mut conn, &records).len() == 2).then_some(())
    });
    // Its claim is settled before the entry is acknowledged; a duplicate sent earlier would
    // find the claim still held and fail once before being skipped.
    eventually(Duration::from_secs(20), "the retry acknowledged", || {
        eddy_tests::streams::settled(&mut conn, &stream, "charge").then_some(())
    });
    // The same event delivered twice more (a duplicate publish upstream).
    add(&mut conn, &stream, &[("id", "o-1"), ("data", "{}")]);
    add(&mut conn, &stream, &[("id", "o-1"), ("data", "{}")]);
    let seen = eventually(Duration::from_secs(20), "the duplicates", || {
        let found = entries(&mut conn, &records);
        (found.len() == 4).then_some(found)
    });
    let summary: Vec<(String, u64)> = seen
        .iter()
        .map(|r| {
            (
                r.get("type").to_owned(),
                r.data()["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Attempt".to_owned(), 1),
            ("Attempt".to_owned(), 2),
            ("Skipped".to_owned(), 1),
            ("Skipped".to_owned(), 1),
        ],
        "the failed first attempt released its claim; the duplicates were skipped"
    );
    let key = "eddy:once:{charge}:o-1";
    let value: String = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
    assert_eq!(value, "done");
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
}

#[test]
fn a_duplicate_running_at_the_same_time_is_retried_not_skipped() {
    // Each attempt works for 1.5 s while holding its claim; two deliveries of one event run
    // side by side.
    let Charge {
        _redis,
        mut conn,
        _dir,
        host,
        stream,
        records,
    } = charge(
        "once = \"true\"\nwork_ms = \"1500\"",
        "concurrency = 4\n[triggers.stream.retry]\ninitial = \"2s\"",
    );
    add(&mut conn, &stream, &[("id", "o-7"), ("data", "{}")]);
    add(&mut conn, &stream, &[("id", "o-7"), ("data", "{}")]);
    let seen = eventually(Duration::from_secs(20), "both deliveries settled", || {
        let found = entries(&mut conn, &records);
        (found.len() == 2).then_some(found)
    });
    let types: Vec<&str> = seen.iter().map(|r| r.get("type")).collect();
    assert_eq!(
        types,
        ["Attempt", "Skipped"],
        "the effect happened once; the duplicate waited for it"
    );
    // How many retries it took depends on how busy the machine is; that it was retried does not.
    assert!(
        seen[1].data()["attempt"].as_u64().unwrap() >= 2,
        "the duplicate failed while the claim was held, then was retried: {:?}",
        seen[1].data()
    );
    assert!(
        host.log()
            .contains("another invocation running now holds this once key"),
        "{}",
        host.log()
    );
}
