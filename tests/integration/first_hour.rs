//! A new user's first hour: `eddy new` scaffolds a project outside any Eddy checkout in each
//! language and shape, which `eddy build` builds and `eddy invoke` runs with its manifest's
//! settings; `eddy dev` builds, runs and rebuilds a project on each change, printing each
//! event's outcome, and keeps the last good version running through a broken build; and
//! `eddy completions` writes a script each shell accepts.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eddy_tests::{eddy_bin, run, with_toolchains};

/// `eddy new NAME --lang LANG [--style STYLE] DIR`, then build and invoke it from its folder.
fn scaffold_build_invoke(lang: &str, style: &str) {
    // A temporary folder, outside the repository: nothing may refer back to the checkout.
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join(format!("fn-{lang}-{style}"));
    let out = run(Command::new(eddy_bin())
        .args(["new", "greeter", "--lang", lang, "--style", style])
        .args([
            "--trigger",
            "stream:greets",
            "--trigger",
            "cron:0 0 * * * *",
        ])
        .arg(&project));
    assert_eq!(out.code, 0, "{lang}/{style}: {}", out.stderr);
    assert!(out.stdout.contains("created"), "{}", out.stdout);
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    for step in ["eddy build", "eddy invoke .", "eddy deploy --build"] {
        assert!(readme.contains(step), "{lang}: README lacks {step:?}");
    }
    let manifest = std::fs::read_to_string(project.join("eddy.toml")).unwrap();
    assert!(manifest.contains("stream = \"greets\""), "{manifest}");
    assert!(
        manifest.contains("schedule = \"0 0 * * * *\""),
        "{manifest}"
    );
    // Nothing but the vendored SDK (which points at its vendored WIT) names a path upward.
    for (path, text) in walk(&project) {
        assert!(
            !text.contains("../") || path.contains("/vendor/"),
            "{lang}: {path} refers outside the project"
        );
    }

    let mut build = with_toolchains(&mut Command::new(eddy_bin()))
        .arg("build")
        .current_dir(&project)
        .output()
        .unwrap();
    if lang == "javascript" {
        // The scaffold lists its tools in package.json for `npm install`; this test takes them
        // from EDDY_JS_TOOLS instead of the network.
        assert!(
            std::fs::read_to_string(project.join("package.json"))
                .unwrap()
                .contains("componentize-js")
        );
    }
    assert!(
        build.status.success(),
        "{lang}/{style} build: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    build.stderr.clear();

    let out = run(Command::new(eddy_bin())
        .args([
            "invoke",
            ".",
            "--data",
            r#"{"name":"Ada"}"#,
            "--output",
            "json",
        ])
        .current_dir(&project));
    assert_eq!(
        out.code, 0,
        "{lang}/{style}: {}\n{}",
        out.stdout, out.stderr
    );
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let body = result["result"]["body"].as_str().unwrap_or_default();
    // "Hello" comes from the manifest's [config], read by `invoke .`.
    assert!(body.contains("Hello, Ada!"), "{lang}/{style}: {result}");
    assert_eq!(
        result["published"].as_array().map(Vec::len),
        Some(1),
        "{result}"
    );

    let out = run(Command::new(eddy_bin())
        .args(["invoke", ".", "--data", r#"{"nom":"Ada"}"#])
        .current_dir(&project));
    assert_eq!(
        out.code, 3,
        "{lang}/{style}: a bad event is rejected\n{}",
        out.stdout
    );
}

/// Every text file under `dir`, by path.
fn walk(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((path.display().to_string(), text));
        }
    }
    out
}

#[test]
fn a_new_rust_project_builds_and_runs_anywhere() {
    scaffold_build_invoke("rust", "eddy");
}

#[test]
fn a_new_javascript_project_builds_and_runs_anywhere() {
    scaffold_build_invoke("javascript", "eddy");
    scaffold_build_invoke("javascript", "openwhisk");
}

#[test]
fn a_new_python_project_builds_and_runs_anywhere() {
    scaffold_build_invoke("python", "eddy");
    scaffold_build_invoke("python", "openwhisk");
}

#[test]
fn new_refuses_what_it_cannot_make_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("mine.txt"), "keep").unwrap();
    for (args, expected) in [
        (vec!["new", "Bad", "--lang", "rust"], "NAME \"Bad\""),
        (
            vec!["new", "ok", "--lang", "rust", "--style", "openwhisk"],
            "--style openwhisk",
        ),
        (
            vec!["new", "ok", "--lang", "python", "--trigger", "queue:x"],
            "unknown kind \"queue\"",
        ),
        (
            vec![
                "new",
                "ok",
                "--lang",
                "python",
                "--trigger",
                "cron:every day",
            ],
            "cron:every day",
        ),
        (vec!["new", "ok", "--lang", "python", "taken"], "not empty"),
    ] {
        let out = run(Command::new(eddy_bin()).args(&args).current_dir(dir.path()));
        assert_eq!(out.code, 1, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["taken"], "something was left behind");
    assert_eq!(
        std::fs::read_to_string(taken.join("mine.txt")).unwrap(),
        "keep"
    );
}

#[test]
fn completions_are_written_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef eddy"),
        ("fish", "complete -c eddy"),
    ] {
        let out = run(Command::new(eddy_bin()).args(["completions", shell]));
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}");
        assert!(out.stdout.contains("deploy"), "{shell}: no subcommands");
    }
    // bash itself accepts the script.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("eddy.bash");
    std::fs::write(
        &script,
        run(Command::new(eddy_bin()).args(["completions", "bash"])).stdout,
    )
    .unwrap();
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p eddy", script.display()))
        .status()
        .unwrap();
    assert!(status.success());
}

/// `eddy dev`'s stdout, line by line, as it comes.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    /// Waits for a line holding `text`; panics with everything seen after `limit`.
    fn expect(&mut self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "eddy dev printed no line with {text:?} within {limit:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child with a valid signal: Ctrl-C, as a person would.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn dev_rebuilds_on_change_and_keeps_the_last_good_version() {
    const BUILD: Duration = Duration::from_secs(120);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("greeter");
    let out = run(Command::new(eddy_bin())
        .args([
            "new",
            "greeter",
            "--lang",
            "python",
            "--trigger",
            "stream:greets",
        ])
        .arg(&project));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listen = format!("127.0.0.1:{}", free_port());
    let host = format!("http://{listen}");
    let mut child = with_toolchains(&mut Command::new(eddy_bin()))
        .args(["dev", "--listen", &listen])
        .current_dir(&project)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (send, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut dev = Dev {
        child,
        lines,
        seen: Vec::new(),
    };
    dev.expect("deployed version 1", BUILD);
    let publish = |data: &str| {
        let out = run(Command::new(eddy_bin())
            .args(["publish", "greets", "--type", "greet", "--data", data])
            .args(["--host", &host]));
        assert_eq!(out.code, 0, "{}", out.stderr);
    };
    // The trigger starts at the stream's end once deployed; an event sent as it starts may be
    // before it, so send until one is seen.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        publish(r#"{"name":"Ada"}"#);
        match dev.lines.recv_timeout(Duration::from_secs(3)) {
            Ok(line) if line.contains("done") && line.contains("200") => break,
            Ok(line) => dev.seen.push(line),
            Err(_) => assert!(Instant::now() < deadline, "{}", dev.seen.join("\n")),
        }
    }
    publish(r#"{"nom":"Ada"}"#);
    let rejected = dev.expect("rejected", Duration::from_secs(20));
    assert!(rejected.contains("400"), "{rejected}");
    assert!(
        rejected.contains("expected"),
        "the function's words: {rejected}"
    );

    // An edit is built and swapped in.
    let source = project.join("app.py");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(
        &source,
        text.replace("raise eddy.Rejected(", "raise ValueError("),
    )
    .unwrap();
    dev.expect("changed:", Duration::from_secs(10));
    dev.expect("deployed version 2", BUILD);
    publish(r#"{"nom":"Bob"}"#);
    let failed = dev.expect("failed", Duration::from_secs(30));
    assert!(failed.contains("500"), "{failed}");

    // A broken edit: the build error is shown, version 2 keeps running.
    std::fs::write(&source, "def handle(event:\n").unwrap();
    dev.expect("build or deploy failed", BUILD);
    dev.expect("version 2 keeps running", Duration::from_secs(5));
    publish(r#"{"name":"Cy"}"#);
    dev.expect("done", Duration::from_secs(30));
}

/// The README's first steps, run as written in a fresh shell from a folder that holds the
/// repository's `scripts` and `examples` (links, so `.eddy` and `hello` land in a scratch
/// folder), with `eddy` installed by `scripts/install` into a folder first on the PATH.
#[test]
fn the_readme_first_steps_run_as_written() {
    let readme = std::fs::read_to_string(eddy_tests::repo_dir().join("README.md")).unwrap();
    let block = readme
        .split("<!-- first-steps -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /first-steps -->").next())
        .expect("the README's first-steps block");
    let script: String = block
        .lines()
        .filter(|line| !line.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        script.contains("scripts/install") && script.contains("eddy up"),
        "{script}"
    );

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&work).unwrap();
    for linked in ["scripts", "examples"] {
        std::os::unix::fs::symlink(eddy_tests::repo_dir().join(linked), work.join(linked)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("bash");
    shell
        .arg("-c")
        // Stop at the first failing step; whatever happens, leave no host behind.
        .arg(format!(
            "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
        ))
        .current_dir(&work)
        .env("PATH", path)
        .env("EDDY_INSTALL_DIR", &bin)
        .env_remove("EDDY_HOST")
        .env_remove("EDDY_TOKEN")
        .env_remove("EDDY_REDIS_URL")
        .env_remove("EDDY_FUNCTIONS")
        .env_remove("RUST_LOG");
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    let out = shell.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(bin.join("eddy").is_file());
    assert!(stdout.contains("contract"), "--version: {stdout}");
    let hello = stdout
        .lines()
        .find(|l| l.contains("hello event"))
        .unwrap_or_else(|| panic!("no record of hello:\n{stdout}\n{stderr}"));
    assert!(hello.contains("-> done 200"), "{hello}");
    assert!(stdout.contains("Hello, Ada!"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("record-analytics event") && l.contains("-> done 200")),
        "{stdout}"
    );
}
