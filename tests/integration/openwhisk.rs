//! Functions in the OpenWhisk action shape (`main(params)` returning `{statusCode, body}`),
//! written with no Eddy code but the event-bus module, built by the real toolchains
//! (`eddy deploy --build`: esbuild and componentize-js, componentize-py), deployed to a real
//! host and fed raw entries with `redis-cli`: outcomes, dead letters and published events as
//! the SDKs' table says (sdk/js/README.md, "Functions in the OpenWhisk shape").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use eddy_tests::fakes::FakeApis;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{StreamEntry, entries, eventually, group_exists};
use eddy_tests::{eddy_bin, eddy_redis, repo_dir, run, with_toolchains};

const WAIT: Duration = Duration::from_secs(60);

/// Copies `examples/openwhisk-orders/<name>` (its sources, not build outputs) into `to`.
fn copy_example(name: &str, to: &Path) -> PathBuf {
    let from = repo_dir().join("examples/openwhisk-orders").join(name);
    let dir = to.join(name);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            continue;
        }
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// `eddy deploy --build DIR` to the host at `url`; panics with the build's output on failure.
fn deploy(dir: &Path, url: &str) {
    let out = run(with_toolchains(&mut Command::new(eddy_bin()))
        .args(["deploy", "--build"])
        .arg(dir)
        .args(["--host", url]));
    assert_eq!(
        out.code,
        0,
        "{}: {}\n{}",
        dir.display(),
        out.stdout,
        out.stderr
    );
}

/// `eddy build DIR`, returning the run (for the build errors a test expects).
fn build(dir: &Path) -> eddy_tests::Run {
    run(with_toolchains(&mut Command::new(eddy_bin()))
        .arg("build")
        .arg(dir))
}

/// Appends a raw entry with `redis-cli`, as any producer could.
fn redis_cli_xadd(redis: &RedisServer, stream: &str, fields: &[(&str, &str)]) {
    let mut command = Command::new("redis-cli");
    command
        .args(["-p", &redis.port().to_string(), "XADD", stream, "*"])
        .args(fields.iter().flat_map(|(k, v)| [*k, *v]));
    let out = command.output().expect("running redis-cli");
    assert!(out.status.success(), "redis-cli: {out:?}");
}

/// The invocation records of `function`, newest first.
fn records(redis: &RedisServer, function: &str) -> Vec<serde_json::Value> {
    let run = eddy_redis(&["logs", function, "--output", "json"], &redis.url());
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The one record of `event` for `function`, once it is there.
fn record_of(redis: &RedisServer, function: &str, event: &str) -> serde_json::Value {
    eventually(WAIT, &format!("{function}'s record of {event}"), || {
        records(redis, function)
            .into_iter()
            .find(|r| r["event_id"] == event)
    })
}

fn idle_host(redis: &RedisServer, dir: &Path, env: &[(&str, &str)]) -> Host {
    let idle = dir.join("idle");
    std::fs::create_dir(&idle).unwrap();
    eddy_tests::streams::manifest(&idle, "idle", "echo", "");
    Host::start_with_env(&redis.url(), &idle, &[], env)
}

/// The seeds' order flow in their own shape: a CommonJS producer publishing through
/// `publishEvent`, an async ES-module consumer calling a mail API with `fetch`, and two Python
/// consumers (one `async def`), each a directory with no Eddy code but `eddy-events`.
#[test]
fn the_seeds_order_flow_runs_as_written() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let apis = FakeApis::start("ow-mail-key", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut host = idle_host(&redis, dir.path(), &[("MAIL_KEY", "ow-mail-key")]);
    let url = host.api_url();
    for name in [
        "place-order",
        "send-email",
        "update-inventory",
        "record-analytics",
    ] {
        let project = copy_example(name, dir.path());
        // The example calls the APIs on port 8081; this test's stand-ins listen elsewhere.
        let manifest = project.join("eddy.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, text.replace("http://127.0.0.1:8081", apis.url())).unwrap();
        deploy(&project, &url);
    }
    for (stream, group) in [
        ("checkout", "place-order"),
        ("orders", "send-email"),
        ("orders", "update-inventory"),
        ("orders", "record-analytics"),
    ] {
        eventually(WAIT, &format!("{group}'s trigger"), || {
            group_exists(&mut conn, stream, group).then_some(())
        });
    }

    let checkout =
        std::fs::read_to_string(repo_dir().join("examples/openwhisk-orders/events/checkout.json"))
            .unwrap();
    redis_cli_xadd(
        &redis,
        "checkout",
        &[
            ("id", "c-1"),
            ("type", "checkout.submitted"),
            ("data", &checkout),
        ],
    );
    redis_cli_xadd(
        &redis,
        "checkout",
        &[
            ("id", "c-2"),
            ("type", "checkout.submitted"),
            ("data", r#"{"userId":"u-42","items":[]}"#),
        ],
    );

    // The producer answered 201 and published the order where [event_bus] routes it.
    let placed = record_of(&redis, "place-order", "c-1");
    assert_eq!(placed["status"], 201, "{placed}");
    assert_eq!(placed["outcome"], "done", "{placed}");
    let order = eventually(WAIT, "the order placed", || {
        entries(&mut conn, "orders").into_iter().next()
    });
    assert_eq!(order.get("type"), "order.placed");
    assert_eq!(order.get("causationid"), "c-1");
    let data = order.data();
    assert_eq!(data["orderId"], "o-2001");
    assert_eq!(data["total"], 28.0);

    // The bad checkout: 400, dead-lettered at once with the function's own error text.
    let dead = eventually(WAIT, "the rejected checkout", || {
        entries(&mut conn, "checkout.dlq").into_iter().next()
    });
    assert_eq!(dead.get("id"), "c-2");
    assert_eq!(dead.get("eddy.reason"), "rejected");
    assert_eq!(dead.get("eddy.status"), "400");

    // send-email: the mail API's first answer is a 503, returned as `{ error }`, so a failure
    // that is retried; the retry sends the mail, with the secret from the default parameters.
    let mails = eventually(WAIT, "the confirmation mail", || {
        let (messages, attempts) = apis.messages();
        (!messages.is_empty()).then_some((messages, attempts))
    });
    assert_eq!(mails.1, 2, "one 503, then the mail");
    assert_eq!(mails.0[0]["to"], "ada@example.com");
    assert_eq!(mails.0[0]["subject"], "Your order o-2001");
    let email = eventually(WAIT, "send-email's two attempts", || {
        let all = records(&redis, "send-email");
        (all.len() == 2).then_some(all)
    });
    let mut outcomes: Vec<_> = email
        .iter()
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, [(1, 500), (2, 200)], "{email:?}");

    // update-inventory (Python) published through its own [event_bus]; record-analytics
    // (`async def`, no statusCode) is a 200.
    let reserved = eventually(WAIT, "the stock reserved", || {
        entries(&mut conn, "inventory").into_iter().next()
    });
    assert_eq!(reserved.get("type"), "inventory.reserved");
    assert_eq!(reserved.data()["items"][0]["sku"], "book-1");
    let order_id = order.get("id").to_owned();
    let analytics = record_of(&redis, "record-analytics", &order_id);
    assert_eq!(analytics["status"], 200, "{analytics}");
    let inventory = record_of(&redis, "update-inventory", &order_id);
    assert_eq!(inventory["status"], 200, "{inventory}");
    assert!(
        entries(&mut conn, "orders.dlq").is_empty(),
        "{}",
        host.log()
    );
}

/// A JavaScript and a Python project returning each shape of result the table lists.
const JS_CASES: &str = r#"
exports.main = async (params) => {
  switch (params.mode) {
    case "app-error": return { error: "stock service down" };
    case "throw": throw new Error("thrown on purpose");
    case "reject": return Promise.reject(new Error("rejected on purpose"));
    case "no-status": return { total: 3 };
    case "object-body": return { statusCode: 202, body: { accepted: true } };
    case "not-object": return 42;
    case "bad-status": return { statusCode: 99 };
    case "nothing": return;
    default: return { statusCode: 400, body: JSON.stringify({ error: "Invalid event payload" }) };
  }
};
"#;

const PYTHON_CASES: &str = r#"
import json


def main(params):
    mode = params.get("mode")
    if mode == "app-error":
        return {"error": "stock service down"}
    if mode == "throw":
        raise ValueError("thrown on purpose")
    if mode == "no-status":
        return {"total": 3}
    if mode == "object-body":
        return {"statusCode": 202, "body": {"accepted": True}}
    if mode == "not-object":
        return 42
    if mode == "bad-status":
        return {"statusCode": 99}
    if mode == "nothing":
        return None
    return {"statusCode": 400, "body": json.dumps({"error": "Invalid event payload"})}
"#;

/// Each result shape gives the outcome the table documents, and the body the records keep.
#[test]
fn each_result_shape_gives_its_documented_outcome() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let mut host = idle_host(&redis, dir.path(), &[]);
    let url = host.api_url();

    let js = dir.path().join("cases-js");
    std::fs::create_dir(&js).unwrap();
    std::fs::write(js.join("index.js"), JS_CASES).unwrap();
    std::fs::write(
        js.join("package.json"),
        r#"{"name":"cases-js","private":true}"#,
    )
    .unwrap();
    let py = dir.path().join("cases-py");
    std::fs::create_dir(&py).unwrap();
    std::fs::write(py.join("main.py"), PYTHON_CASES).unwrap();
    for (project, name) in [(&js, "cases-js"), (&py, "cases-py")] {
        std::fs::write(
            project.join("eddy.toml"),
            format!(
                "name = {name:?}\ncomponent = \"app.wasm\"\n[[triggers.stream]]\n\
                 stream = {name:?}\n[triggers.stream.retry]\nmax_attempts = 1\n"
            ),
        )
        .unwrap();
        deploy(project, &url);
        eventually(WAIT, "the deployed trigger", || {
            group_exists(&mut conn, name, name).then_some(())
        });
    }

    // mode, the status, and (for a failure or rejection) text its dead letter's error holds.
    let cases = vec![
        ("app-error", 500, Some("stock service down")),
        ("throw", 500, Some("thrown on purpose")),
        ("no-status", 200, None),
        ("object-body", 202, None),
        ("not-object", 500, Some("not")),
        (
            "bad-status",
            500,
            Some("expected an integer from 100 to 599"),
        ),
        ("nothing", 200, None),
        ("bad-payload", 400, Some("Invalid event payload")),
    ];
    for (stream, extra) in [
        (
            "cases-js",
            Some(("reject", 500, Some("rejected on purpose"))),
        ),
        ("cases-py", None),
    ] {
        let mut all = cases.clone();
        all.extend(extra);
        for (mode, _, _) in &all {
            redis_cli_xadd(
                &redis,
                stream,
                &[
                    ("id", &format!("{stream}-{mode}")),
                    ("type", "case"),
                    ("data", &format!(r#"{{"mode":"{mode}"}}"#)),
                ],
            );
        }
        for (mode, status, text) in &all {
            let id = format!("{stream}-{mode}");
            let record = record_of(&redis, stream, &id);
            assert_eq!(record["status"], *status, "{stream} {mode}: {record}");
            if let Some(text) = text {
                let dead: StreamEntry = eventually(WAIT, &format!("{id} dead-lettered"), || {
                    entries(&mut conn, &format!("{stream}.dlq"))
                        .into_iter()
                        .find(|e| e.get("id") == id)
                });
                let reason = if *status == 400 { "rejected" } else { "failed" };
                assert_eq!(dead.get("eddy.reason"), reason, "{id}");
                assert!(
                    dead.get("eddy.error").contains(text),
                    "{id}: {:?}\n{}",
                    dead.get("eddy.error"),
                    host.log()
                );
            }
        }
    }
}

/// A module that exports no `main` (nor `handle`) fails the build, naming the file and what
/// was expected; so does a Node.js built-in the sandbox does not have.
#[test]
fn a_module_without_main_fails_the_build_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "js-no-main",
            "index.js",
            "const main = () => ({});\nmodule.exports = { mian: main };\n",
            "index.js exports no function `main`",
        ),
        (
            "js-builtin",
            "index.js",
            "const fs = require(\"fs\");\nexports.main = () => ({});\n",
            "Could not resolve \"fs\"",
        ),
        (
            "py-no-main",
            "main.py",
            "def mian(params):\n    return {}\n",
            "main.py defines no function main(params)",
        ),
    ];
    for (name, file, source, expected) in cases {
        let project = dir.path().join(name);
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join(file), source).unwrap();
        if file.ends_with(".js") {
            std::fs::write(project.join("package.json"), r#"{"private":true}"#).unwrap();
        }
        std::fs::write(
            project.join("eddy.toml"),
            format!("name = {name:?}\ncomponent = \"app.wasm\"\n"),
        )
        .unwrap();
        let out = build(&project);
        assert_ne!(out.code, 0, "{name} built");
        assert!(
            out.stderr.contains(expected),
            "{name}: expected {expected:?} in\n{}",
            out.stderr
        );
        assert!(
            !project.join("app.wasm").exists(),
            "{name} left a component"
        );
    }
}
