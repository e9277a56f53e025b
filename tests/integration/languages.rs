//! Functions in Rust, JavaScript and Python, each built from its template by the real
//! toolchain (`eddy deploy --build`: cargo, componentize-js, componentize-py), deployed to a
//! real host, handling an event, skipping its duplicate through `once`, and rejecting a bad
//! event into the dead-letter stream.
//!
//! The toolchains come from `scripts/test` (`EDDY_COMPONENTIZE_PY`, `EDDY_JS_TOOLS`); the
//! defaults below are where it installs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use eddy_tests::eddy_bin;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, group_exists, unique};

const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copies template `name` (not its build outputs) into `to`.
fn copy_template(name: &str, to: &Path) {
    let from = repo().join("sdk/templates").join(name);
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn toolchain_env(command: &mut Command) -> &mut Command {
    let home = std::env::var("HOME").unwrap_or_default();
    let py = std::env::var("EDDY_COMPONENTIZE_PY")
        .unwrap_or_else(|_| format!("{home}/.cache/eddy/venv/bin/componentize-py"));
    let js = std::env::var("EDDY_JS_TOOLS")
        .unwrap_or_else(|_| repo().join("sdk/js").display().to_string());
    command
        .env("EDDY_COMPONENTIZE_PY", py)
        .env("EDDY_JS_TOOLS", js)
}

struct Case {
    template: &'static str,
    name: &'static str,
    event_type: &'static str,
    good: &'static str,
    bad: &'static str,
    published_type: &'static str,
    /// Rewrites the template's manifest for this test's streams.
    manifest: fn(&str, &str, &str) -> String,
}

fn run(case: &Case) {
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
        let sdk = format!("path = {:?}", repo().join("sdk").display().to_string());
        std::fs::write(&cargo_toml, text.replace("path = \"../..\"", &sdk)).unwrap();
    }
    let (input, output) = (unique("in"), unique("out"));
    std::fs::write(
        project.join("eddy.toml"),
        (case.manifest)(case.name, &input, &output),
    )
    .unwrap();

    let mut host = Host::start(&redis.url(), &idle, &[]);
    let url = host.api_url();
    let out = toolchain_env(&mut Command::new(eddy_bin()))
        .args(["deploy", "--build"])
        .arg(&project)
        .args(["--host", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}: {}\n{stderr}",
        case.template,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("built "), "{stderr}");
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
        (eddy_tests::streams::pending(&mut conn, &input, case.name) == 0).then_some(())
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
    run(&Case {
        template: "rust",
        name: "ship-order",
        event_type: "PaymentProcessed",
        good: r#"{"orderId":"o-1"}"#,
        bad: r#"{"total":3}"#,
        published_type: "ShippingScheduled",
        manifest: |name, input, output| {
            format!(
                "name = {name:?}\ncomponent = \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/ship_order.wasm\"\n\
                 publish = [{output:?}]\n[config]\noutput_stream = {output:?}\n\
                 [[triggers.stream]]\nstream = {input:?}\n[triggers.stream.retry]\nmax_attempts = 1\n"
            )
        },
    });
}

#[test]
fn a_python_function_built_with_componentize_py() {
    run(&Case {
        template: "python",
        name: "reserve-stock",
        event_type: "OrderPlaced",
        good: r#"{"orderId":"o-1"}"#,
        bad: r#"{"total":3}"#,
        published_type: "InventoryReserved",
        manifest: |name, input, output| {
            format!(
                "name = {name:?}\ncomponent = \"app.wasm\"\npublish = [{output:?}]\n[config]\n\
                 output_stream = {output:?}\n[[triggers.stream]]\nstream = {input:?}\n\
                 [triggers.stream.retry]\nmax_attempts = 1\n"
            )
        },
    });
}

#[test]
fn a_javascript_function_built_with_componentize_js() {
    run(&Case {
        template: "javascript",
        name: "send-confirmation",
        event_type: "OrderPlaced",
        good: r#"{"orderId":"o-1","email":"a@example.com"}"#,
        bad: r#"{"orderId":"o-2"}"#,
        published_type: "EmailRequested",
        manifest: |name, input, output| {
            format!(
                "name = {name:?}\ncomponent = \"app.wasm\"\npublish = [{output:?}]\n[config]\n\
                 output_stream = {output:?}\n[[triggers.stream]]\nstream = {input:?}\n\
                 [triggers.stream.retry]\nmax_attempts = 1\n"
            )
        },
    });
}
