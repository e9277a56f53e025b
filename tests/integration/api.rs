//! The host's HTTP API through a real client (`curl`): health and readiness, bearer tokens,
//! CloudEvents ingress in structured, binary and batch modes and as plain JSON, body caps, and
//! the one error shape.

use std::process::Command;

use eddy_tests::eddy_bin;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{entries, manifest, unique};
use serde_json::Value;

const TOKEN: &str = "s3cret-token-for-tests";

struct Api {
    _redis: RedisServer,
    conn: redis::Connection,
    _host: Host,
    url: String,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let fns = dir.path().join("fns");
    std::fs::create_dir(&fns).unwrap();
    manifest(&fns, "idle", "echo", "");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut host = Host::start(
        &redis.url(),
        &fns,
        &["--token-file", token_file.to_str().unwrap()],
    );
    let url = host.api_url();
    Api {
        conn: redis.conn(),
        _redis: redis,
        _host: host,
        url,
        _dir: dir,
    }
}

/// Runs curl and returns (status, body as JSON or Null).
fn curl(args: &[&str]) -> (u16, Value) {
    let reply = eddy_tests::http::curl(args);
    (reply.status, reply.json())
}

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

#[test]
fn health_needs_no_token_and_everything_else_does() {
    let a = api();
    assert_eq!(curl(&[&format!("{}/healthz", a.url)]).0, 200);
    let (status, body) = curl(&[&format!("{}/readyz", a.url)]);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = curl(&[
        "-H",
        "Authorization: Bearer nope",
        &format!("{}/readyz", a.url),
    ]);
    assert_eq!(wrong.0, 401);
    let body = eddy_tests::streams::eventually(
        std::time::Duration::from_secs(10),
        "the host to be ready",
        || {
            let (status, body) = curl(&["-H", &auth(), &format!("{}/readyz", a.url)]);
            (status == 200).then_some(body)
        },
    );
    assert_eq!(body["redis"], "ok");
    assert_eq!(body["functions"], "loaded");
    let (status, body) = curl(&["-H", &auth(), &format!("{}/v1/nothing", a.url)]);
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[test]
fn cloudevents_land_in_all_three_modes_and_as_plain_json() {
    let mut a = api();
    let stream = unique("orders");
    let endpoint = format!("{}/v1/streams/{stream}/events", a.url);

    let structured = r#"{"specversion":"1.0","type":"OrderPlaced","source":"shop","id":"ev-1",
        "subject":"o-1","tenant":"acme","data":{"orderId":"o-1"}}"#;
    let (status, body) = curl(&[
        "-H",
        &auth(),
        "-H",
        "Content-Type: application/cloudevents+json",
        "--data",
        structured,
        &endpoint,
    ]);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 1);

    let (status, body) = curl(&[
        "-H",
        &auth(),
        "-H",
        "ce-specversion: 1.0",
        "-H",
        "ce-type: PaymentProcessed",
        "-H",
        "ce-source: payments",
        "-H",
        "ce-id: ev-2",
        "-H",
        "ce-traceparent: 00-abc-def-01",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"amount":12.5}"#,
        &endpoint,
    ]);
    assert_eq!(status, 202, "{body}");

    let batch = r#"[{"specversion":"1.0","type":"A","source":"s","id":"ev-3","data":1},
        {"specversion":"1.0","type":"B","source":"s","id":"ev-4","datacontenttype":"text/plain","data":"hi"}]"#;
    let (status, body) = curl(&[
        "-H",
        &auth(),
        "-H",
        "Content-Type: application/cloudevents-batch+json",
        "--data",
        batch,
        &endpoint,
    ]);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 2);

    let (status, body) = curl(&[
        "-H",
        &auth(),
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"plain":true}"#,
        &format!("{endpoint}?type=Plain"),
    ]);
    assert_eq!(status, 202, "{body}");

    let landed = entries(&mut a.conn, &stream);
    assert_eq!(landed.len(), 5);
    assert_eq!(landed[0].get("type"), "OrderPlaced");
    assert_eq!(landed[0].get("id"), "ev-1");
    assert_eq!(landed[0].get("subject"), "o-1");
    assert_eq!(landed[0].get("tenant"), "acme");
    assert_eq!(landed[0].data()["orderId"], "o-1");
    assert_eq!(landed[1].get("type"), "PaymentProcessed");
    assert_eq!(landed[1].get("traceparent"), "00-abc-def-01");
    assert_eq!(landed[1].get("datacontenttype"), "application/json");
    assert_eq!(landed[1].data()["amount"], 12.5);
    assert_eq!(landed[2].get("id"), "ev-3");
    assert_eq!(landed[3].get("data"), "hi");
    assert_eq!(landed[4].get("type"), "Plain");
    assert_eq!(landed[4].data()["plain"], true);
    assert_eq!(landed[4].get("source"), "eddy://http");
}

#[test]
fn bad_requests_get_one_error_shape_and_add_nothing() {
    let mut a = api();
    let stream = unique("orders");
    let endpoint = format!("{}/v1/streams/{stream}/events", a.url);
    let cases: &[(&str, &str, &str, &str)] = &[
        // (url, content type, body, field)
        (
            &endpoint,
            "application/cloudevents+json",
            r#"{"specversion":"1.0","source":"s","id":"1"}"#,
            "type",
        ),
        (&endpoint, "application/cloudevents+json", "{broken", "body"),
        (
            &endpoint,
            "application/cloudevents-batch+json",
            r#"[{"specversion":"1.0","type":"A","source":"s","id":"1","data":1},{"specversion":"1.0","type":"B","source":"s"}]"#,
            "[1].id",
        ),
        (&endpoint, "application/json", "{not json", "data"),
    ];
    for (url, content_type, body, field) in cases {
        let (status, answer) = curl(&[
            "-H",
            &auth(),
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data",
            body,
            url,
        ]);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
        assert_eq!(answer["error"]["field"], *field, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, answer) = curl(&[
        "-H",
        &auth(),
        "--data",
        "{}",
        &format!("{}/v1/streams/eddy:cron:x/events", a.url),
    ]);
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["field"], "stream");
    assert!(
        entries(&mut a.conn, &stream).is_empty(),
        "a refused request added events"
    );

    let big = a._dir.path().join("big.json");
    std::fs::write(&big, format!("\"{}\"", "x".repeat(2 * 1024 * 1024))).unwrap();
    let (status, answer) = curl(&[
        "-H",
        &auth(),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", big.display()),
        &endpoint,
    ]);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
}

#[test]
fn a_host_refuses_to_serve_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "idle", "echo", "");
    let out = Command::new(eddy_bin())
        .args([
            "up",
            "--redis",
            "redis://127.0.0.1:1/",
            "--listen",
            "0.0.0.0:0",
            "--functions",
        ])
        .arg(dir.path())
        .env_remove("EDDY_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("without a token"), "{stderr}");
}

#[test]
fn eddy_publish_goes_through_the_api() {
    let mut a = api();
    let stream = unique("orders");
    let publish = |token: &str| {
        Command::new(eddy_bin())
            .args([
                "publish",
                &stream,
                "--type",
                "OrderPlaced",
                "--subject",
                "o-9",
            ])
            .args([
                "--data",
                r#"{"orderId":"o-9"}"#,
                "--host",
                &a.url,
                "--token",
                token,
            ])
            .env_remove("EDDY_TOKEN")
            .output()
            .unwrap()
    };
    let refused = publish("wrong");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401 unauthorized"), "{stderr}");
    let out = publish(TOKEN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("published OrderPlaced"));
    let landed = entries(&mut a.conn, &stream);
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].get("subject"), "o-9");
    assert_eq!(landed[0].get("source"), "eddy://cli");
    assert_eq!(landed[0].data()["orderId"], "o-9");
}

#[test]
fn cronjobs_are_managed_over_http() {
    let a = api();
    let endpoint = format!("{}/v1/cronjobs", a.url);
    let post = |body: &str| {
        curl(&[
            "-H",
            &auth(),
            "-H",
            "Content-Type: application/json",
            "--data",
            body,
            &endpoint,
        ])
    };
    let (status, body) = post(
        r#"{"name":"nightly","schedule":"0 0 0 * * *","stream":"reports","type":"DailyReportRequired","data":{"scope":"all"}}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "nightly");
    assert!(
        body["next"]
            .as_str()
            .is_some_and(|n| n.ends_with("T00:00:00Z")),
        "{body}"
    );
    assert_eq!(
        post(r#"{"name":"nightly","schedule":"* * * * * *","stream":"s","type":"T"}"#).0,
        409
    );
    let (status, body) = post(r#"{"name":"bad","schedule":"* *","stream":"s","type":"T"}"#);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "schedule", "{body}");
    let (status, body) = post(
        r#"{"name":"tz","schedule":"* * * * *","timezone":"Nowhere/Land","stream":"s","type":"T"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = curl(&["-H", &auth(), &endpoint]);
    assert_eq!(status, 200);
    let names: Vec<&str> = body["cronjobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["nightly"], "refused cronjobs were stored");
    let delete = || {
        curl(&[
            "-H",
            &auth(),
            "-X",
            "DELETE",
            &format!("{endpoint}/nightly"),
        ])
    };
    assert_eq!(delete().0, 200);
    assert_eq!(delete().0, 404);
}

#[test]
fn the_host_itself_refuses_bad_deploys_naming_the_field() {
    let a = api();
    let deploy = |body: &str| {
        curl(&[
            "-H",
            &auth(),
            "-H",
            "Content-Type: application/json",
            "--data",
            body,
            &format!("{}/v1/functions", a.url),
        ])
    };
    let manifest =
        "name = \"f\"\ncomponent = \"f.wasm\"\n[[triggers.stream]]\nstream = \"s\"\nbatch = 0\n";
    let (status, body) =
        deploy(&serde_json::json!({ "manifest": manifest, "digest": "0".repeat(64) }).to_string());
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["field"], "manifest.triggers.stream[0].batch",
        "{body}"
    );
    let good = "name = \"f\"\ncomponent = \"f.wasm\"\n";
    let (status, body) =
        deploy(&serde_json::json!({ "manifest": good, "digest": "0".repeat(64) }).to_string());
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "digest", "{body}");
    let (status, body) = curl(&[
        "-H",
        &auth(),
        "-X",
        "PUT",
        "--data",
        "not wasm",
        &format!("{}/v1/components/{}", a.url, "0".repeat(64)),
    ]);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sha256"),
        "{body}"
    );
}
