//! A function's cluster-wide limits against real hosts and Redis: `max_concurrency` holds
//! across three hosts, from the fixture's own start and end records, also when one of them is
//! SIGKILLed mid-run; `rate` holds within 10% over 10 s across two hosts; both waits show in
//! `eddy_limit_wait_seconds_total`.

use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{
    entries, eventually, fill_events as fill, group_exists, most_at_once, now_ms, record_function,
    settled, unique,
};
use redis::Commands as _;

const WAIT: Duration = Duration::from_secs(90);

/// `eddy_limit_wait_seconds_total` for `function` and `limit` on the host at `url`.
fn waited(url: &str, function: &str, limit: &str) -> f64 {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{url}/metrics")])
        .output()
        .unwrap();
    let needle =
        format!("eddy_limit_wait_seconds_total{{function=\"{function}\",limit=\"{limit}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&needle)?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn max_concurrency_holds_across_three_hosts_and_a_kill() {
    const EVENTS: usize = 40;
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let path = record_function(
        dir.path(),
        "rec",
        &stream,
        &records,
        "work_ms = \"40\"\nrecord_end = \"true\"",
        "",
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "[config]",
            "[limits]\nmax_concurrency = 2\ntimeout = \"1s\"\n[config]",
            1,
        ),
    )
    .unwrap();
    let mut hosts: Vec<Host> = (0..3)
        .map(|_| Host::start(&redis.url(), dir.path(), &[]))
        .collect();
    eventually(WAIT, "the group", || {
        group_exists(&mut conn, &stream, "rec").then_some(())
    });
    fill(&mut conn, &stream, EVENTS);
    eventually(WAIT, "a quarter handled", || {
        let done = entries(&mut conn, &records)
            .iter()
            .filter(|r| r.get("type") == "Done")
            .count();
        (done >= EVENTS / 4).then_some(())
    });
    hosts[2].kill();
    let killed_ms = now_ms();
    let found = eventually(WAIT, "every event handled", || {
        let found = entries(&mut conn, &records);
        let done: std::collections::BTreeSet<String> = found
            .iter()
            .filter(|r| r.get("type") == "Done")
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect();
        (done.len() == EVENTS).then_some(found)
    });
    eventually(WAIT, "every entry settled", || {
        settled(&mut conn, &stream, "rec").then_some(())
    });
    let most = most_at_once(&found, killed_ms);
    assert!(
        most <= 2,
        "at most 2 in flight across the hosts, saw {most}"
    );
    assert_eq!(most, 2, "the limit, not less, was used");
    let url = hosts[0].api_url();
    let url2 = hosts[1].api_url();
    assert!(
        waited(&url, "rec", "concurrency") + waited(&url2, "rec", "concurrency") > 0.0,
        "the hosts counted time waiting for a slot"
    );
}

#[test]
fn a_rate_holds_within_a_tenth_over_ten_seconds_across_two_hosts() {
    const RATE: usize = 20;
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let path = record_function(dir.path(), "rec", &stream, &records, "", "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "[config]",
            &format!("[limits]\nrate = \"{RATE}/s\"\n[config]"),
            1,
        ),
    )
    .unwrap();
    let mut hosts: Vec<Host> = (0..2)
        .map(|_| Host::start(&redis.url(), dir.path(), &[]))
        .collect();
    eventually(WAIT, "the group", || {
        group_exists(&mut conn, &stream, "rec").then_some(())
    });
    // More than 12 s worth: the stream never runs dry during the window measured.
    fill(&mut conn, &stream, RATE * 14);
    let first = eventually(WAIT, "the first attempt", || {
        entries(&mut conn, &records)
            .first()
            .map(|r| r.data()["atMs"].as_u64().unwrap())
    });
    std::thread::sleep(Duration::from_millis(11_000));
    let started = entries(&mut conn, &records)
        .iter()
        .filter(|r| {
            let at = r.data()["atMs"].as_u64().unwrap();
            at >= first && at < first + 10_000
        })
        .count();
    let expected = RATE * 10;
    assert!(
        started.abs_diff(expected) * 10 <= expected,
        "{started} events started in 10 s at {RATE}/s (expected {expected} ± 10%)"
    );
    let total: f64 = hosts
        .iter_mut()
        .map(|h| waited(&h.api_url(), "rec", "rate"))
        .sum();
    assert!(
        total > 0.0,
        "the hosts counted time waiting for rate tokens"
    );
    let _: () = conn.del(&stream).unwrap();
}
