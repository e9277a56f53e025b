//! Functions in Rust, JavaScript and Python, each built from its template by the real
//! toolchain (`eddy deploy --build`: cargo, componentize-js, componentize-py), deployed to a
//! real host, handling an event, skipping its duplicate through `once`, and rejecting a bad
//! event into the dead-letter stream.
//!
//! The toolchains come from `scripts/test` (`EDDY_COMPONENTIZE_PY`, `EDDY_JS_TOOLS`); the
//! defaults below are where it installs them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, group_exists, unique};
use eddy_tests::{eddy_bin, repo_dir, run, with_toolchains};

const WAIT: Duration = Duration::from_secs(60);

/// Copies template `name` (not its build outputs) into `to`.
fn copy_template(name: &str, to: &Path) {
    let from = repo_dir().join("sdk/templates").join(name);
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

struct Case {
    template: &'static str,
    name: &'static str,
    event_type: &'static str,
    good: &'static str,
    bad: &'static str,
    published_type: &'static str,
    /// Where the build puts the component, as the manifest says it.
    component: &'static str,
}

fn build_deploy_and_send(case: &Case) {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle");
    std::fs::create_dir(&idle).unwrap();
    eddy_tests::streams::manifest(&idle, "idle", "echo", "");
    let project = dir.path().join(case.template);
    std::fs::create_dir(&project).unwrap();
    copy_template(case.template, &project);
    let cargo_toml = project.join("Cargo.toml");
    if cargo_toml.exists() {
        // The template points at the SDK relative to its place in the repository.
        let text = std::fs::read_to_string(&cargo_toml).unwrap();
        let sdk = format!("path = {:?}", repo_dir().join("sdk").display().to_string());
        std::fs::write(&cargo_toml, text.replace("path = \"../..\"", &sdk)).unwrap();
    }
    let (input, output) = (unique("in"), unique("out"));
    // The template's manifest, pointed at this test's streams.
    let manifest = format!(
        "name = {:?}\ncomponent = {:?}\npublish = [{output:?}]\n[config]\n\
         output_stream = {output:?}\n[[triggers.stream]]\nstream = {input:?}\n\
         [triggers.stream.retry]\nmax_attempts = 1\n",
        case.name, case.component
    );
    std::fs::write(project.join("eddy.toml"), manifest).unwrap();

    let mut host = Host::start(&redis.url(), &idle, &[]);
    let url = host.api_url();
    let out = run(with_toolchains(&mut Command::new(eddy_bin()))
        .args(["deploy", "--build"])
        .arg(&project)
        .args(["--host", &url]));
    assert_eq!(
        out.code, 0,
        "{}: {}\n{}",
        case.template, out.stdout, out.stderr
    );
    assert!(out.stderr.contains("built "), "{}", out.stderr);
    eventually(WAIT, "the deployed trigger", || {
        group_exists(&mut conn, &input, case.name).then_some(())
    });

    add(
        &mut conn,
        &input,
        &[
            ("id", "e-1"),
            ("type", case.event_type),
            ("data", case.good),
        ],
    );
    let published = eventually(WAIT, "the published event", || {
        entries(&mut conn, &output).into_iter().next()
    });
    assert_eq!(
        published.get("type"),
        case.published_type,
        "{}",
        case.template
    );
    assert_eq!(published.get("causationid"), "e-1");
    // The event publishes before its invocation ends and settles its `once` claim. A duplicate
    // arriving while the claim is still held fails (and with one attempt allowed would be
    // dead-lettered), so the duplicate is sent only after the first delivery is acknowledged.
    eventually(WAIT, "the first delivery acknowledged", || {
        eddy_tests::streams::settled(&mut conn, &input, case.name).then_some(())
    });
    // The same event again: `once` skips the effect.
    add(
        &mut conn,
        &input,
        &[
            ("id", "e-1"),
            ("type", case.event_type),
            ("data", case.good),
        ],
    );
    add(
        &mut conn,
        &input,
        &[("id", "e-2"), ("type", case.event_type), ("data", case.bad)],
    );
    let dead = eventually(WAIT, "the rejected event", || {
        entries(&mut conn, &format!("{input}.dlq"))
            .into_iter()
            .next()
    });
    assert_eq!(dead.get("id"), "e-2");
    assert_eq!(dead.get("eddy.reason"), "rejected", "{}", case.template);
    assert_eq!(dead.get("eddy.status"), "400");
    eventually(WAIT, "the duplicate settled", || {
        eddy_tests::streams::settled(&mut conn, &input, case.name).then_some(())
    });
    assert_eq!(
        entries(&mut conn, &output).len(),
        1,
        "{}: the duplicate published again\n{}",
        case.template,
        host.log()
    );
}

#[test]
fn a_rust_function_built_with_cargo() {
    build_deploy_and_send(&Case {
        template: "rust",
        name: "ship-order",
        event_type: "PaymentProcessed",
        good: r#"{"orderId":"o-1"}"#,
        bad: r#"{"total":3}"#,
        published_type: "ShippingScheduled",
        component: "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/ship_order.wasm",
    });
}

#[test]
fn a_python_function_built_with_componentize_py() {
    build_deploy_and_send(&Case {
        template: "python",
        name: "reserve-stock",
        event_type: "OrderPlaced",
        good: r#"{"orderId":"o-1"}"#,
        bad: r#"{"total":3}"#,
        published_type: "InventoryReserved",
        component: "app.wasm",
    });
}

#[test]
fn a_javascript_function_built_with_componentize_js() {
    build_deploy_and_send(&Case {
        template: "javascript",
        name: "send-confirmation",
        event_type: "OrderPlaced",
        good: r#"{"orderId":"o-1","email":"a@example.com"}"#,
        bad: r#"{"orderId":"o-2"}"#,
        published_type: "EmailRequested",
        component: "app.wasm",
    });
}
