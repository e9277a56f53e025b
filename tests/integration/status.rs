//! `eddy status` with two hosts, then one killed: shown dead once its heartbeat expires.

use std::time::Duration;

use eddy_tests::eddy_bin;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{eventually, record_function, unique};
use serde_json::Value;

fn status(redis: &RedisServer) -> Value {
    let out = std::process::Command::new(eddy_bin())
        .args(["status", "--output", "json", "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_shows_hosts_groups_and_cronjobs_and_a_dead_host() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    record_function(dir.path(), "rec", &stream, &records, "", "");
    let _survivor = Host::start(&redis.url(), dir.path(), &["--consumer", "survivor"]);
    let mut victim = Host::start(&redis.url(), dir.path(), &["--consumer", "victim"]);
    let cron = std::process::Command::new(eddy_bin())
        .args([
            "cron",
            "create",
            "nightly",
            "--schedule",
            "0 0 0 * * *",
            "--stream",
            "r",
            "--type",
            "T",
        ])
        .args(["--redis", &redis.url()])
        .status()
        .unwrap();
    assert!(cron.success());

    let alive = |s: &Value, name: &str| -> Option<bool> {
        s["hosts"]
            .as_array()?
            .iter()
            .find(|h| h["consumer"] == name)
            .map(|h| h["alive"] == true)
    };
    // Heartbeats can start before the triggers have created their group: wait for both.
    let s = eventually(
        Duration::from_secs(10),
        "both hosts alive and the group",
        || {
            let s = status(&redis);
            let has_group = s["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g["stream"] == stream.as_str()));
            (alive(&s, "survivor") == Some(true) && alive(&s, "victim") == Some(true) && has_group)
                .then_some(s)
        },
    );
    let group = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["stream"] == stream.as_str())
        .unwrap_or_else(|| panic!("no group for {stream}: {s}"));
    assert_eq!(group["group"], "rec");
    assert_eq!(group["lag"], 0);
    assert!(
        s["cronjobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "nightly")
    );
    assert!(
        s["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["stream"] == format!("{stream}.dlq").as_str())
    );

    victim.kill();
    eventually(
        Duration::from_secs(20),
        "the killed host shown dead",
        || {
            let s = status(&redis);
            (alive(&s, "victim") == Some(false) && alive(&s, "survivor") == Some(true))
                .then_some(())
        },
    );
    let human = std::process::Command::new(eddy_bin())
        .args(["status", "--redis", &redis.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("victim") && text.contains("DEAD") && text.contains("nightly"),
        "{text}"
    );
}
