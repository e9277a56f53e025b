//! Canary deploys over two real hosts: the canary takes its share of events by a hash of the
//! event id (checked event by event, and within 5 points of the share over 2,000), shows its
//! counts in `eddy functions show`, and is promoted; a canary that fails every event is rolled
//! back by the hosts within its window, its failed events succeed on the stable version and
//! nothing is dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{entries, eventually, fill_events as fill, manifest, unique};
use eddy_tests::wasm;

const WAIT: Duration = Duration::from_secs(60);

fn eddy(host: &str, args: &[&str]) -> (i32, String, String) {
    eddy_tests::eddy_host(args, host).into_parts()
}

/// Writes a `rec` manifest for the record fixture tagged `variant`, with `settings`.
fn version(
    dir: &std::path::Path,
    file: &str,
    stream: &str,
    records: &str,
    variant: &str,
    settings: &str,
) -> String {
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            "name = \"rec\"\ncomponent = {:?}\npublish = [{records:?}]\n[config]\nrecord_stream = \
             {records:?}\nvariant = {variant:?}\n{settings}\n[[triggers.stream]]\nstream = \
             {stream:?}\n[triggers.stream.retry]\ninitial = \"1s\"\njitter = 0.0\nmax_attempts = 8\n",
            wasm("record").display().to_string()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn two_hosts(redis: &RedisServer, dir: &std::path::Path) -> (Host, Host) {
    let idle = dir.join("idle");
    std::fs::create_dir(&idle).unwrap();
    manifest(&idle, "idle", "echo", "");
    (
        Host::start(&redis.url(), &idle, &[]),
        Host::start(&redis.url(), &idle, &[]),
    )
}

#[test]
fn a_canary_takes_its_share_by_event_id_on_every_host_and_is_promoted() {
    const EVENTS: usize = 2000;
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let stable = version(dir.path(), "v1.toml", &stream, &records, "stable", "");
    let trial = version(dir.path(), "v2.toml", &stream, &records, "canary", "");
    let (mut a, mut b) = two_hosts(&redis, dir.path());
    let url = a.api_url();
    let (code, out, err) = eddy(&url, &["deploy", &stable]);
    assert_eq!(code, 0, "{out}{err}");
    a.wait_for_log("deployed function running", WAIT);
    b.wait_for_log("deployed function running", WAIT);
    // A canary must keep the triggers: another stream is refused, and nothing changes.
    let moved = version(
        dir.path(),
        "moved.toml",
        &unique("elsewhere"),
        &records,
        "x",
        "",
    );
    let (code, _, err) = eddy(&url, &["deploy", &moved, "--canary", "20%"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("must keep the stable version's triggers"),
        "{err}"
    );
    let (code, _, err) = eddy(&url, &["deploy", &trial, "--canary", "120%"]);
    assert_ne!(code, 0);
    assert!(err.contains("1% to 99%"), "{err}");

    let (code, out, err) = eddy(&url, &["deploy", &trial, "--canary", "20%"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("canary: 20%"), "{out}");
    a.wait_for_log("canary running", WAIT);
    b.wait_for_log("canary running", WAIT);
    fill(&mut conn, &stream, EVENTS);
    let found = eventually(WAIT, "every event handled", || {
        let found = entries(&mut conn, &records);
        let ids: BTreeSet<String> = found
            .iter()
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect();
        (ids.len() == EVENTS).then_some(found)
    });
    let mut variant_of: BTreeMap<String, String> = BTreeMap::new();
    for record in &found {
        let data = record.data();
        variant_of.insert(
            data["id"].as_str().unwrap().to_owned(),
            data["variant"].as_str().unwrap().to_owned(),
        );
    }
    for (id, variant) in &variant_of {
        let expected = if eddy::canary::takes(id, 20) {
            "canary"
        } else {
            "stable"
        };
        assert_eq!(
            variant, expected,
            "event {id} ran on the version its id chose"
        );
    }
    let canary = variant_of.values().filter(|v| *v == "canary").count();
    assert!(
        canary.abs_diff(EVENTS / 5) <= EVENTS / 20,
        "{canary} of {EVENTS} on the canary, expected 20% ± 5 points"
    );
    let (code, out, err) = eddy(&url, &["functions", "show", "rec"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("canary: version 2 takes 20% of events"),
        "{out}"
    );
    assert!(
        out.contains(&format!("canary version 2    {canary:>7} attempts")),
        "{out}"
    );

    // While it runs, another version cannot slip in beside it.
    let (code, _, err) = eddy(&url, &["deploy", &stable]);
    assert_ne!(code, 0);
    assert!(err.contains("a canary of \"rec\" runs"), "{err}");
    let (code, out, err) = eddy(&url, &["functions", "promote", "rec"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rec version 2 is current"), "{out}");
    a.wait_for_log("canary ended", WAIT);
    b.wait_for_log("canary ended", WAIT);
    let (_, out, _) = eddy(&url, &["functions", "show", "rec"]);
    assert!(
        out.contains("* rec version 2"),
        "version 2 is current: {out}"
    );
    let (code, _, err) = eddy(&url, &["functions", "promote", "rec"]);
    assert_ne!(code, 0, "no canary left to promote");
    assert!(err.contains("no canary running"), "{err}");
}

#[test]
fn a_failing_canary_is_rolled_back_by_itself_and_its_events_succeed_on_the_stable_version() {
    const EVENTS: usize = 300;
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    let stable = version(
        dir.path(),
        "v1.toml",
        &stream,
        &records,
        "stable",
        "record_end = \"true\"",
    );
    let broken = version(
        dir.path(),
        "v2.toml",
        &stream,
        &records,
        "canary",
        "record_end = \"true\"\nstatus = \"503\"",
    );
    let (mut a, mut b) = two_hosts(&redis, dir.path());
    let url = a.api_url();
    let (code, out, err) = eddy(&url, &["deploy", &stable]);
    assert_eq!(code, 0, "{out}{err}");
    a.wait_for_log("deployed function running", WAIT);
    b.wait_for_log("deployed function running", WAIT);
    let (code, out, err) = eddy(
        &url,
        &[
            "deploy",
            &broken,
            "--canary",
            "30%",
            "--canary-window",
            "20s",
            "--canary-min-events",
            "10",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    a.wait_for_log("canary running", WAIT);
    b.wait_for_log("canary running", WAIT);
    fill(&mut conn, &stream, EVENTS);
    // Well within the 20 s window: the canary fails every event it gets.
    a.wait_for_log("canary ended", Duration::from_secs(20));
    b.wait_for_log("canary ended", Duration::from_secs(20));

    let done = eventually(WAIT, "every event succeeded", || {
        let found = entries(&mut conn, &records);
        let ok: BTreeSet<String> = found
            .iter()
            .filter(|r| r.get("type") == "Done" && r.data()["status"] == 200)
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect();
        (ok.len() == EVENTS).then_some(found)
    });
    let failed_on_canary = done
        .iter()
        .filter(|r| r.get("type") == "Done" && r.data()["status"] != 200)
        .inspect(|r| assert_eq!(r.data()["variant"], "canary"))
        .count();
    assert!(
        failed_on_canary >= 10,
        "the canary was judged on its failures"
    );
    assert!(
        done.iter()
            .filter(|r| r.get("type") == "Done" && r.data()["status"] == 200)
            .all(|r| r.data()["variant"] == "stable"),
        "every success was on the stable version"
    );
    assert!(
        entries(&mut conn, &format!("{stream}.dlq")).is_empty()
            && entries(&mut conn, &format!("eddy:{{{stream}}}:dead-letters")).is_empty(),
        "nothing dead-lettered"
    );
    let (code, out, err) = eddy(&url, &["functions", "show", "rec"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("last canary: version 2 ended")
            && out.contains("more than the 20-point margin"),
        "{out}"
    );
    assert!(
        out.contains("* rec version 1"),
        "the stable version is still current: {out}"
    );
    let metrics = |url: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("{url}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("eddy_canary_rollbacks_total{function=\"rec\"} ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let url_b = b.api_url();
    assert_eq!(
        metrics(&url) + metrics(&url_b),
        1.0,
        "one host rolled it back"
    );
    // A later rollback skips the canary that never served.
    let (code, out, err) = eddy(&url, &["deploy", &stable]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rec version 3"), "{out}");
    let (code, out, err) = eddy(&url, &["functions", "rollback", "rec"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("back on version 1"), "{out}");
}
