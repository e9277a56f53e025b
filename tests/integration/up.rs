//! `eddy up` itself: manifests refused at load with the file, field and value named; the
//! embedded Redis; the message when `redis-server` is missing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use eddy_tests::host::{Host, shared_cache};
use eddy_tests::streams::{add, entries, eventually, manifest, record_function, unique};
use eddy_tests::{eddy_bin, wasm};

/// Runs `eddy up` on the manifests in `dir` against an unreachable Redis: loading fails first.
fn up_fails(dir: &Path) -> String {
    let out = Command::new(eddy_bin())
        .args(["up", "--redis", "redis://127.0.0.1:1/", "--functions"])
        .arg(dir)
        .env("XDG_CACHE_HOME", shared_cache())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Progress lines may come first; the error is the last thing printed, once.
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
    let error = &stderr[stderr.find("error: ").unwrap()..];
    assert!(
        !error.contains(" INFO "),
        "nothing follows the error: {stderr}"
    );
    error.to_owned()
}

fn refused(body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = body.replace("ECHO", &wasm("echo").display().to_string());
    std::fs::write(dir.path().join("eddy.toml"), text).unwrap();
    let stderr = up_fails(dir.path());
    assert!(stderr.contains("eddy.toml"), "the file is named: {stderr}");
    stderr
}

const HEAD: &str = "name = \"f\"\ncomponent = \"ECHO\"\n";

#[test]
fn invalid_manifests_name_the_field_and_what_was_expected() {
    let cases: &[(&str, &[&str])] = &[
        // unknown field (a typo)
        (
            "name = \"f\"\ncomponent = \"ECHO\"\ntimout = \"1s\"\n",
            &["timout", "expected one of"],
        ),
        // wrong type
        ("name = 3\ncomponent = \"ECHO\"\n", &["name", "string"]),
        // missing required field
        ("name = \"f\"\n", &["component"]),
        // bad name
        (
            "name = \"Bad Name\"\ncomponent = \"ECHO\"\n",
            &["`name`", "\"Bad Name\"", "lowercase"],
        ),
        // bad size
        (
            &format!("{HEAD}[limits]\nmemory = \"lots\"\n"),
            &["`limits.memory`", "\"lots\"", "64MiB"],
        ),
        // bad duration
        (
            &format!("{HEAD}[limits]\ntimeout = \"soon\"\n"),
            &["`limits.timeout`", "\"soon\""],
        ),
        // bad enum
        (
            &format!("{HEAD}[[triggers.stream]]\nstream = \"s\"\nstart = \"middle\"\n"),
            &["start", "middle", "latest", "earliest"],
        ),
        // integer out of range
        (
            &format!("{HEAD}[[triggers.stream]]\nstream = \"s\"\nconcurrency = 0\n"),
            &["`triggers.stream[0].concurrency` = 0", "from 1 to 256"],
        ),
        // fraction out of range
        (
            &format!(
                "{HEAD}[[triggers.stream]]\nstream = \"s\"\n[triggers.stream.retry]\njitter = 1.5\n"
            ),
            &["`triggers.stream[0].retry.jitter` = 1.5", "0.0 to 1.0"],
        ),
        // inconsistent pair
        (
            &format!(
                "{HEAD}[[triggers.stream]]\nstream = \"s\"\n[triggers.stream.retry]\ninitial = \"10s\"\nmax = \"1s\"\n"
            ),
            &["`triggers.stream[0].retry.max`", "no shorter than initial"],
        ),
        // bad stream name
        (
            &format!("{HEAD}[[triggers.stream]]\nstream = \"has space\"\n"),
            &["`triggers.stream[0].stream`", "whitespace"],
        ),
        // config value of the wrong kind
        (
            &format!("{HEAD}[config]\nnested = {{ a = 1 }}\n"),
            &["`config.nested`", "string, number or boolean"],
        ),
        // unset variable in the component path
        (
            "name = \"f\"\ncomponent = \"${EDDY_NO_SUCH_VAR}/f.wasm\"\n",
            &["`component`", "EDDY_NO_SUCH_VAR"],
        ),
        // missing component file
        (
            "name = \"f\"\ncomponent = \"missing.wasm\"\n",
            &["missing.wasm", "cannot read component"],
        ),
    ];
    for (body, needles) in cases {
        let stderr = refused(body);
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{body}\n  → {stderr}\n  lacks {needle:?}"
            );
        }
    }
}

#[test]
fn a_file_that_is_not_a_component_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
    std::fs::write(
        dir.path().join("eddy.toml"),
        "name = \"junk\"\ncomponent = \"junk.wasm\"\n",
    )
    .unwrap();
    let stderr = up_fails(dir.path());
    assert!(
        stderr.contains("junk.wasm") && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );
}

#[test]
fn two_functions_in_one_group_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        manifest(
            dir.path(),
            name,
            "echo",
            "[[triggers.stream]]\nstream = \"s\"\ngroup = \"shared\"\n",
        );
    }
    let stderr = up_fails(dir.path());
    assert!(
        stderr.contains("group \"shared\"") && stderr.contains("already read by"),
        "{stderr}"
    );
}

#[test]
fn a_missing_redis_server_is_explained_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(eddy_bin())
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .env("PATH", "/nonexistent")
        .env_remove("EDDY_REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("redis-server is not installed"), "{stderr}");
    assert!(stderr.contains("--redis"), "{stderr}");
}

#[test]
fn without_a_url_the_host_runs_its_own_redis_and_keeps_its_data() {
    // A short path: Unix socket paths are limited to about 100 bytes.
    let data = tempfile::Builder::new()
        .prefix("eddy")
        .tempdir_in("/tmp")
        .unwrap();
    let fns = tempfile::tempdir().unwrap();
    let stream = unique("orders");
    let records = unique("records");
    record_function(fns.path(), "rec", &stream, &records, "", "");
    let data_dir = data.path().to_str().unwrap().to_owned();
    let url = format!("unix://{}/redis.sock", data_dir);
    for round in 1..=2 {
        let mut host = Host::start_embedded(&data_dir, fns.path());
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        add(&mut conn, &stream, &[("data", "{}")]);
        eventually(Duration::from_secs(30), "the records", || {
            (entries(&mut conn, &records).len() == round).then_some(())
        });
        let status = host.terminate(Duration::from_secs(20));
        assert!(status.success(), "{}", host.log());
        assert!(
            !Path::new(&format!("{data_dir}/redis.sock")).exists()
                || redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .is_err(),
            "the private redis-server stopped with the host"
        );
    }
}

#[test]
fn the_version_names_the_commit_and_the_contract() {
    let run = eddy_tests::run(std::process::Command::new(eddy_tests::eddy_bin()).arg("--version"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(eddy_tests::repo_dir())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let wit = std::fs::read_to_string(eddy_tests::repo_dir().join("wit/eddy.wit")).unwrap();
    let contract = wit
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .unwrap()
        .trim_end_matches(';');
    assert!(run.stdout.starts_with("eddy 0."), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("contract {contract}")),
        "{}",
        run.stdout
    );
    // A binary built from this checkout names its commit (a dirty tree still has a HEAD).
    assert!(
        commit.is_empty() || run.stdout.contains(&format!("commit {commit}")),
        "{} (HEAD {commit})",
        run.stdout
    );
}
