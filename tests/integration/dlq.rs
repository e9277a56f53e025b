//! Dead-letter operations with the CLI against a real host: list, show, a dry run, replaying
//! one and then all (each handled again by the function that failed it, once), replaying again
//! changing nothing, and purge needing --yes.

use std::time::Duration;

use eddy_tests::eddy_redis;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{StreamEntry, add, entries, eventually, record_function, unique};

fn dlq(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    eddy_redis(&[&["dlq"], args].concat(), &redis.url()).into_parts()
}

#[test]
fn dead_letters_are_listed_shown_replayed_once_and_purged() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let write = |status: &str| {
        record_function(
            dir.path(),
            "rec",
            &stream,
            &records,
            &format!("status = \"{status}\""),
            "[triggers.stream.retry]\nmax_attempts = 1",
        );
    };
    write("500");
    let mut broken = Host::start(&redis.url(), dir.path(), &[]);
    broken.wait_for_log("stream trigger starting", Duration::from_secs(10));
    eventually(Duration::from_secs(10), "the group", || {
        eddy_tests::streams::group_exists(&mut conn, &stream, "rec").then_some(())
    });
    for n in 0..3 {
        add(
            &mut conn,
            &stream,
            &[("id", &format!("ev-{n}")), ("data", "{}")],
        );
    }
    let dlq_stream = format!("{stream}.dlq");
    let letters = eventually(Duration::from_secs(20), "three dead letters", || {
        let found = entries(&mut conn, &dlq_stream);
        (found.len() == 3).then_some(found)
    });
    broken.kill();

    let (code, out, err) = dlq(&redis, &["ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rec") && out.contains(" 3 ") && out.contains("failed"),
        "{out}"
    );
    let (code, out, _) = dlq(&redis, &["show", "rec", &letters[0].id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("eddy.reason") && out.contains("503") || out.contains("500"),
        "{out}"
    );

    // The cause is fixed: a host with the working version.
    write("200");
    let _fixed = Host::start(&redis.url(), dir.path(), &[]);

    let (code, out, _) = dlq(&redis, &["replay", "rec", "--all", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("3 dead letter(s) would be replayed"), "{out}");
    assert_eq!(
        entries(&mut conn, &dlq_stream).len(),
        3,
        "a dry run changed something"
    );

    let replayed = |conn: &mut redis::Connection| -> Vec<StreamEntry> {
        entries(conn, &records)
            .into_iter()
            .filter(|r| !r.data()["replayedfrom"].is_null())
            .collect()
    };
    let (code, out, err) = dlq(&redis, &["replay", "rec", "--entry", &letters[0].id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 of 1"), "{out}");
    let first = eventually(
        Duration::from_secs(20),
        "the replayed event handled",
        || replayed(&mut conn).into_iter().next(),
    );
    assert_eq!(first.data()["replayedfrom"], letters[0].id.as_str());
    assert_eq!(first.data()["attempt"], 1, "the attempt count was reset");
    assert_eq!(
        first.data()["id"],
        letters[0].get("id"),
        "the original event came back"
    );

    let (code, out, _) = dlq(&redis, &["replay", "rec", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("replayed 2 of 2"), "{out}");
    eventually(Duration::from_secs(20), "all three replayed", || {
        (replayed(&mut conn).len() == 3).then_some(())
    });
    assert!(entries(&mut conn, &dlq_stream).is_empty());

    // Running it again changes nothing, and a gone entry is named.
    let (code, out, _) = dlq(&redis, &["replay", "rec", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("replayed 0 of 0"), "{out}");
    let (code, _, err) = dlq(&redis, &["replay", "rec", "--entry", &letters[0].id]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(replayed(&mut conn).len(), 3, "an event was replayed twice");

    let (code, _, err) = dlq(&redis, &["purge", "rec"]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    let (code, out, _) = dlq(&redis, &["purge", "rec", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("purged 0"), "{out}");
}
