//! Test support for Eddy's black-box suite: finds the real `eddy` binary and the real
//! components built from `functions/`, runs commands, and builds tiny components from WAT for
//! the cases no real guest should exhibit (wrong world, core module); starts real
//! `redis-server`s on free loopback ports and real `eddy up` hosts against them.
//!
//! `scripts/test` builds both and sets `EDDY_BIN` and `EDDY_FUNCTIONS_DIR`; without them the
//! paths are derived from the test binary's own target directory.

#![deny(missing_docs)]

pub mod collector;
pub mod fakes;
pub mod host;
pub mod http;
pub mod proxy;
pub mod redis_cluster;
pub mod redis_server;
pub mod streams;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the test executable's profile (`target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test executable");
    // target/release/deps/integration-<hash> -> target/release
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The `eddy` binary under test.
pub fn eddy_bin() -> PathBuf {
    let path = std::env::var_os("EDDY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("eddy"));
    assert!(
        path.exists(),
        "eddy binary not found at {}: run scripts/test (or cargo build --release -p eddy)",
        path.display()
    );
    path
}

/// The directory of compiled guest components.
pub fn functions_dir() -> PathBuf {
    std::env::var_os("EDDY_FUNCTIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            profile_dir()
                .parent()
                .expect("profile dir has a parent")
                .join("wasm32-wasip2/release")
        })
}

/// The component built from guest crate `name` (e.g. `echo`, `order-confirmation`).
pub fn wasm(name: &str) -> PathBuf {
    let path = functions_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "component {} not found: run scripts/test, which builds functions/ first",
        path.display()
    );
    path
}

/// The bytes of component `name`.
pub fn wasm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).expect("reading component")
}

/// A finished `eddy` run.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Self {
        Self {
            code: output.status.code().expect("eddy exited by a signal"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The exit code, stdout and stderr.
    pub fn into_parts(self) -> (i32, String, String) {
        (self.code, self.stdout, self.stderr)
    }

    /// stdout parsed as JSON (for `--output json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `eddy` with `args`, using `cache` as its compile cache.
pub fn eddy(args: &[&str], cache: &Path) -> Run {
    run(Command::new(eddy_bin())
        .args(args)
        .env("XDG_CACHE_HOME", cache))
}

/// `eddy invoke COMPONENT --output json ARGS…`, with a compile cache of its own.
pub fn invoke_json(component: &Path, args: &[&str]) -> Run {
    let cache = tempfile::tempdir().expect("temp dir");
    let component = component.to_str().expect("a UTF-8 path");
    let mut all = vec!["invoke", component, "--output", "json"];
    all.extend_from_slice(args);
    eddy(&all, cache.path())
}

/// Runs a Redis-direct `eddy` command (`cron`, `dlq`, `logs`, `replay`, …) with `args`
/// against the Redis at `redis_url`.
pub fn eddy_redis(args: &[&str], redis_url: &str) -> Run {
    run(Command::new(eddy_bin())
        .args(args)
        .args(["--redis", redis_url]))
}

/// Runs a client `eddy` command (`deploy`, `publish`, `functions`, …) with `args` against the
/// host API at `host`, with no token from the caller's environment.
pub fn eddy_host(args: &[&str], host: &str) -> Run {
    run(Command::new(eddy_bin())
        .args(args)
        .args(["--host", host])
        .env_remove("EDDY_TOKEN"))
}

/// Runs `command` (an `eddy` one) to its end, without the caller's log settings.
pub fn run(command: &mut Command) -> Run {
    let output = command
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running eddy");
    Run::from_output(output)
}

/// Runs `command` (an `eddy` one) expecting it to end by itself within `limit`; panics if it
/// is still running then (a host that started when it should have refused its input).
pub fn run_within(command: &mut Command, limit: std::time::Duration) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = command
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("running eddy");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for eddy") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "eddy was still running after {limit:?}:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Run {
        code: status.code().expect("eddy exited by a signal"),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// Compiles WAT text to a binary file in `dir` and returns its path.
pub fn wat_file(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let bytes = wat::parse_str(wat).expect("fixture WAT parses");
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("writing WAT fixture");
    path
}

/// The repository's root folder.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// Points `command` (an `eddy build` or `eddy deploy --build`) at the JavaScript and Python
/// toolchains: `EDDY_COMPONENTIZE_PY` and `EDDY_JS_TOOLS` as `scripts/test` exports them, else
/// where it installs them.
pub fn with_toolchains(command: &mut Command) -> &mut Command {
    let home = std::env::var("HOME").unwrap_or_default();
    let python = std::env::var("EDDY_COMPONENTIZE_PY")
        .unwrap_or_else(|_| format!("{home}/.cache/eddy/venv/bin/componentize-py"));
    let javascript = std::env::var("EDDY_JS_TOOLS")
        .unwrap_or_else(|_| repo_dir().join("sdk/js").display().to_string());
    command
        .env("EDDY_COMPONENTIZE_PY", python)
        .env("EDDY_JS_TOOLS", javascript)
}
