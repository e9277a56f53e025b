//! Deploying through the CLI to running hosts: two hosts under a steady load switch to a new
//! version with no event lost, roll back, refuse broken components and manifests (the old
//! version keeps serving), and answer 404 and 400 for unknown and bad names.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, manifest, unique};
use eddy_tests::wasm;

fn eddy(host: &str, args: &[&str]) -> (i32, String, String) {
    eddy_tests::eddy_host(args, host).into_parts()
}

#[test]
fn deploys_reach_every_host_under_load_and_lose_nothing() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle");
    std::fs::create_dir(&idle).unwrap();
    manifest(&idle, "idle", "echo", "");
    let (stream, v1, v2) = (unique("orders"), unique("seen-v1"), unique("seen-v2"));
    let write = |file: &str, records: &str| {
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "name = \"rec\"\ncomponent = {:?}\npublish = [{v1:?}, {v2:?}]\n[config]\nrecord_stream = {records:?}\n[[triggers.stream]]\nstream = {stream:?}\n",
                wasm("record").display().to_string()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (first, second) = (write("v1.toml", &v1), write("v2.toml", &v2));
    let mut a = Host::start(&redis.url(), &idle, &[]);
    let mut b = Host::start(&redis.url(), &idle, &[]);
    let (url_a, url_b) = (a.api_url(), b.api_url());

    let (code, out, err) = eddy(&url_a, &["deploy", &first]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rec version 1") && out.contains(&format!("stream {stream}")),
        "{out}"
    );
    a.wait_for_log("deployed function running", Duration::from_secs(10));
    b.wait_for_log("deployed function running", Duration::from_secs(10));

    // A steady load through the whole switch.
    let sent = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (sent, running, stream) = (sent.clone(), running.clone(), stream.clone());
        let mut conn = redis.conn();
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                add(
                    &mut conn,
                    &stream,
                    &[("id", &format!("ev-{n}")), ("data", "{}")],
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = eddy(&url_b, &["deploy", &second]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rec version 2"), "{out}");
    a.wait_for_log("to=2", Duration::from_secs(10));
    b.wait_for_log("to=2", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    running.store(false, Ordering::Relaxed);
    load.join().unwrap();
    let total = sent.load(Ordering::Relaxed);

    let mut conn = redis.conn();
    let seen = |conn: &mut redis::Connection, records: &str| -> BTreeSet<String> {
        entries(conn, records)
            .iter()
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(
        Duration::from_secs(20),
        "every event handled by v1 or v2",
        || {
            let all: BTreeSet<String> = seen(&mut conn, &v1)
                .union(&seen(&mut conn, &v2))
                .cloned()
                .collect();
            (all.len() == total).then_some(())
        },
    );
    assert!(
        !seen(&mut conn, &v2).is_empty(),
        "version 2 handled nothing"
    );

    // Once both hosts switched, every new event runs on version 2.
    let before = seen(&mut conn, &v1).len();
    for n in 0..20 {
        add(
            &mut conn,
            &stream,
            &[("id", &format!("after-{n}")), ("data", "{}")],
        );
    }
    eventually(
        Duration::from_secs(10),
        "the events after the switch",
        || {
            (seen(&mut conn, &v2)
                .iter()
                .filter(|id| id.starts_with("after-"))
                .count()
                == 20)
                .then_some(())
        },
    );
    assert_eq!(
        seen(&mut conn, &v1).len(),
        before,
        "version 1 still served after the switch"
    );

    // A broken component and a broken manifest are refused; version 2 keeps serving.
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
    let junk = dir.path().join("junk.toml");
    std::fs::write(&junk, "name = \"rec\"\ncomponent = \"junk.wasm\"\n").unwrap();
    let (code, _, err) = eddy(&url_a, &["deploy", junk.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("400 invalid: field `component`: not a WebAssembly file"),
        "{err}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&second)
            .unwrap()
            .replace("[[triggers.stream]]", "[[triggers.stream]]\nbatch = 0"),
    )
    .unwrap();
    let (code, _, err) = eddy(&url_a, &["deploy", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("`triggers.stream[0].batch` = 0"), "{err}");
    let (_, shown, _) = eddy(&url_a, &["functions", "show", "rec", "--output", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["current"], 2,
        "a refused deploy changed the current version"
    );
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);
    let digests: BTreeSet<&str> = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 1, "the same component is stored once");

    // Rollback.
    let (code, out, err) = eddy(&url_b, &["functions", "rollback", "rec"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("back on version 1"), "{out}");
    a.wait_for_log("to=1", Duration::from_secs(10));
    b.wait_for_log("to=1", Duration::from_secs(10));
    let before = seen(&mut conn, &v2).len();
    add(&mut conn, &stream, &[("id", "rolled-back"), ("data", "{}")]);
    eventually(
        Duration::from_secs(10),
        "the event after the rollback",
        || seen(&mut conn, &v1).contains("rolled-back").then_some(()),
    );
    assert_eq!(seen(&mut conn, &v2).len(), before);
    // Rollbacks that cannot happen say why, and change nothing.
    let (code, _, err) = eddy(&url_b, &["functions", "rollback", "rec"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("400") && err.contains("no earlier version"),
        "{err}"
    );
    let (code, _, err) = eddy(&url_b, &["functions", "rollback", "rec", "--version", "99"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("400") && err.contains("version 99 does not exist"),
        "{err}"
    );
    let (code, _, err) = eddy(&url_b, &["functions", "rollback", "nosuch"]);
    assert_ne!(code, 0);
    assert!(err.contains("404") && err.contains("no function"), "{err}");
    let (_, shown, _) = eddy(&url_a, &["functions", "show", "rec", "--output", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["current"], 1, "a refused rollback moved the function");

    // A synchronous invocation of the deployed function, through the host.
    let (code, out, err) = eddy(
        &url_a,
        &[
            "invoke",
            "rec",
            "--type",
            "Manual",
            "--data",
            r#"{"x":1}"#,
            "--id",
            "manual-1",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rec version 1: status 200 (done)"), "{out}");
    eventually(
        Duration::from_secs(10),
        "the record of the manual invocation",
        || seen(&mut conn, &v1).contains("manual-1").then_some(()),
    );
    let (code, _, err) = eddy(&url_a, &["invoke", "nope", "--data", "{}"]);
    assert_eq!(code, 1);
    assert!(err.contains("404 not_found"), "{err}");

    // Unknown and bad names.
    let (code, _, err) = eddy(&url_a, &["functions", "show", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("404 not_found"), "{err}");
    let (code, _, err) = eddy(&url_a, &["functions", "show", "Bad!"]);
    assert_eq!(code, 1);
    assert!(err.contains("400 bad_request: field `name`"), "{err}");

    // Removal stops it everywhere.
    let (code, _, err) = eddy(&url_a, &["functions", "rm", "rec"]);
    assert_eq!(code, 0, "{err}");
    a.wait_for_log("function removed", Duration::from_secs(10));
    b.wait_for_log("function removed", Duration::from_secs(10));
    let (_, listed, _) = eddy(&url_b, &["functions", "ls"]);
    assert!(listed.contains("no functions deployed"), "{listed}");
}
