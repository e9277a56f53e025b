//! `eddy dev`: the edit, rebuild, rerun loop. It builds a function project, starts a host with a
//! private Redis for it, deploys the function there, and then, each time a source file
//! changes, builds again and deploys the new version, which the host swaps in without a
//! restart. Each invocation's outcome is printed as one line as it happens.
//!
//! The host is this same binary's `eddy up`, run as a child whose log goes to a file in the
//! data folder, so the terminal shows the function and not the host. Deploying goes through
//! the host's API like `eddy deploy`, and outcomes come from the invocation records like
//! `eddy logs --follow`: dev adds a loop, not a second way to run functions. A build that fails
//! is shown, and the last version that built keeps running.
//!
//! Changes are found by looking at the project's files' sizes and modification times twice a
//! second, skipping build outputs (`target/`, `node_modules/`, hidden folders, `*.wasm`). A
//! function project is small, so this costs nothing that matters, and it needs no inotify
//! watches (which run out on big machines) and works on every file system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

use super::client::{ApiArgs, Client};
use crate::manifest::{self, Manifest};
use crate::names::Escaped;
use crate::records::{self, Record};

/// How often the project's files are looked at.
const POLL: Duration = Duration::from_millis(500);
/// How long files must stay unchanged before a rebuild starts: an editor saving several files
/// (or writing one in steps) causes one build, not several.
const SETTLE: Duration = Duration::from_millis(300);
/// How long the host may take to become ready (it may start redis-server first).
const HOST_START: Duration = Duration::from_secs(30);
/// How long a deployed version may take to be running on the dev host (it compiles it first).
const SWAP_WAIT: Duration = Duration::from_secs(120);
/// How often invocation records are read for new outcomes.
const RECORDS_POLL: Duration = Duration::from_millis(250);
/// Most files looked at in a project: past this, the watch stops growing (and says so).
const MAX_WATCHED_FILES: usize = 10_000;
/// Folders whose changes are build outputs or tools, never sources.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", "__pycache__", "vendor"];

/// Arguments of `eddy dev`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    eddy dev                       # the project in this folder\n  \
    eddy dev ../send-mail --listen 127.0.0.1:7171\n\n\
    Then, in another terminal: `eddy publish STREAM --data '{...}'` (or `--host` with the\n\
    --listen address). Ctrl-C stops the host and its private Redis.")]
pub struct DevArgs {
    /// The function project: its manifest (eddy.toml) or the folder holding it.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Address of the dev host's HTTP API (event ingress, the web page).
    #[arg(long, value_name = "IP:PORT", default_value = crate::api::DEFAULT_LISTEN)]
    pub listen: String,

    /// Where the dev host keeps its private Redis and its log (default: .eddy in the project).
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// Use this Redis instead of a private one (e.g. redis://127.0.0.1:6379).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// How to print each invocation: one line for people, or its record as one JSON object
    /// per line (as `eddy logs --output json`).
    #[arg(long, short = 'o', value_enum, default_value_t = super::OutputFormat::Human)]
    pub output: super::OutputFormat,
}

/// Runs `eddy dev` until Ctrl-C.
pub fn run(args: DevArgs) -> anyhow::Result<u8> {
    let first = manifest::load(&args.path)?;
    let project = project_dir(&first);
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| project.join(".eddy"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;

    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    {
        // Ctrl-C, `kill`, or the terminal closing: each stops the dev host before dev exits.
        let stop = stop.clone();
        runtime.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut hangup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = hangup.recv() => {}
            }
            stop.store(true, Ordering::SeqCst);
        });
    }

    // Another host already answering there would take the deploys meant for this one.
    if let Err(error) = std::net::TcpListener::bind(&args.listen) {
        bail!(
            "--listen {}: {error}: another host (or program) is there; stop it or pass \
             --listen 127.0.0.1:PORT",
            args.listen
        );
    }
    let mut host = DevHost::start(&args, &data_dir)?;
    let client = Client::new(&ApiArgs {
        url: format!("http://{}", args.listen),
        token: None,
        token_file: None,
    })?;
    host.wait_ready(&client, &stop)?;
    let redis_url = super::redis_url(args.redis.as_deref(), &data_dir)?;
    println!(
        "eddy dev: {} on a host at http://{} (Redis {}, host log {})",
        first.name,
        args.listen,
        crate::broker::connection::redacted(&redis_url),
        host.log.display()
    );
    runtime.spawn(print_outcomes(
        redis_url,
        first.name.to_string(),
        args.output,
    ));

    // The data folder may be inside the project: its files change with every deploy.
    let ignored = [data_dir.clone()];
    let snapshot = |dir: &Path| snapshot(dir, &ignored);
    let mut seen = snapshot(&project);
    let mut version = build_and_deploy(&args.path, &client);
    if version.is_none() {
        println!("waiting for a change to build again");
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL);
        if let Some(code) = host.exited() {
            bail!(
                "the dev host stopped ({code}); its log: {}",
                host.log.display()
            );
        }
        let now = snapshot(&project);
        if now == seen {
            continue;
        }
        // Wait for the files to settle, then build what is there.
        let mut settled = now;
        loop {
            std::thread::sleep(SETTLE);
            let again = snapshot(&project);
            if again == settled {
                break;
            }
            settled = again;
        }
        let changed = changed_files(&seen, &settled);
        seen = settled;
        println!("changed: {changed}: building …");
        match build_and_deploy(&args.path, &client) {
            Some(v) => version = Some(v),
            None => match &version {
                Some(v) => println!("version {v} keeps running"),
                None => println!("nothing runs yet: waiting for a change to build again"),
            },
        }
    }
    println!("stopping the dev host …");
    host.stop();
    Ok(super::EXIT_OK)
}

fn project_dir(manifest: &Manifest) -> PathBuf {
    manifest
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Loads the manifest again (it may have changed), builds, deploys; the deployed version, or
/// `None` after printing why not.
fn build_and_deploy(path: &Path, client: &Client) -> Option<u64> {
    let attempt = || -> anyhow::Result<u64> {
        let manifest = manifest::load(path)?;
        super::build::build(&manifest)?;
        let answer = super::deploy::ship(client, &manifest, None, false)?;
        let version = answer["version"].as_u64().unwrap_or_default();
        // The registry has it; the host swaps it in a moment later (after compiling it).
        if !super::deploy::wait_running(client, &manifest.name, version, SWAP_WAIT, false)? {
            bail!(
                "the host has not switched to version {version} after {SWAP_WAIT:?}: see its log"
            );
        }
        Ok(version)
    };
    match attempt() {
        Ok(version) => {
            println!("deployed version {version}: waiting for events");
            Some(version)
        }
        Err(error) => {
            println!("build or deploy failed: {error:#}");
            None
        }
    }
}

/// The child `eddy up` and the file its output goes to.
struct DevHost {
    child: Child,
    log: PathBuf,
}

impl DevHost {
    fn start(args: &DevArgs, data_dir: &Path) -> anyhow::Result<Self> {
        let log = data_dir.join("host.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let exe = std::env::current_exe().context("finding the eddy binary")?;
        let mut command = Command::new(exe);
        command
            .arg("up")
            .args(["--listen", &args.listen])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // The dev host's settings are these flags, not a production host's environment.
            .env_remove("EDDY_FUNCTIONS")
            .env_remove("EDDY_TOKEN");
        if let Some(redis) = &args.redis {
            command.args(["--redis", redis]);
        } else {
            command.env_remove("EDDY_REDIS_URL");
        }
        // Its own process group: Ctrl-C reaches `eddy dev` alone, which then stops the host
        // once, in order, rather than both racing to shut down.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // And if dev itself is killed outright, the host is told to stop.
        // SAFETY: prctl(2) only, between fork and exec, as pre_exec requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().context("starting the dev host (eddy up)")?;
        Ok(Self { child, log })
    }

    fn wait_ready(&mut self, client: &Client, stop: &AtomicBool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            // Its own exit first: an answer on the port from anything else is not this host.
            if let Some(code) = self.exited() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "the dev host did not start ({code}):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if client.get("/readyz").is_ok() {
                return Ok(());
            }
            if started.elapsed() > HOST_START || stop.load(Ordering::SeqCst) {
                self.stop();
                bail!(
                    "the dev host was not ready within {HOST_START:?}; its log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Stops the host as Ctrl-C would (SIGTERM: it drains and stops its Redis), then waits.
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with our own child's pid and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let started = Instant::now();
        while self.exited().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DevHost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints one line per invocation of `function` as its record is written.
async fn print_outcomes(redis_url: String, function: String, output: super::OutputFormat) {
    let broker = loop {
        match crate::broker::Broker::connect(&redis_url).await {
            Ok(broker) => break broker,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let mut conn = broker.shared();
    let mut cursor = loop {
        match records::cursor(&mut conn).await {
            Ok(cursor) => break cursor,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    loop {
        tokio::time::sleep(RECORDS_POLL).await;
        let Ok(found) = records::newer(&mut conn, &mut cursor).await else {
            continue;
        };
        for record in found.iter().filter(|r| r.function == function) {
            match output {
                super::OutputFormat::Human => println!("{}", outcome_line(record)),
                super::OutputFormat::Json => {
                    println!("{}", serde_json::to_string(record).unwrap_or_default())
                }
            }
        }
    }
}

/// One invocation as one line: time, outcome and status, event, attempt, duration, and why
/// when it did not succeed.
fn outcome_line(record: &Record) -> String {
    let time = record.time.get(11..23).unwrap_or(&record.time);
    let status = record.status.map_or("-".to_owned(), |s| s.to_string());
    let why = match (&record.error, record.outcome.as_str()) {
        (Some(error), outcome) if outcome != "done" => format!("  {}", Escaped(error)),
        _ => String::new(),
    };
    format!(
        "{time}  {:<8} {status:>3}  {} {}  attempt {}  {:.1} ms{why}",
        record.outcome,
        Escaped(&record.event_type),
        Escaped(&record.event_id),
        record.attempt,
        record.duration_ms,
    )
}

/// Size and modification time of each source file in the project.
type Snapshot = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

fn snapshot(dir: &Path, ignored: &[PathBuf]) -> Snapshot {
    let mut files = Snapshot::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let path = entry.path();
                let skipped = path
                    .canonicalize()
                    .is_ok_and(|real| ignored.iter().any(|i| real.starts_with(i)));
                if !SKIPPED_DIRS.contains(&name.as_ref()) && !skipped {
                    folders.push(entry.path());
                }
            } else if kind.is_file() && !name.ends_with(".wasm") {
                if files.len() >= MAX_WATCHED_FILES {
                    return files;
                }
                if let Ok(meta) = entry.metadata() {
                    files.insert(entry.path(), (meta.len(), meta.modified().ok()));
                }
            }
        }
    }
    files
}

/// The files that differ between two snapshots, named for the person watching.
fn changed_files(before: &Snapshot, after: &Snapshot) -> String {
    let mut names: Vec<String> = after
        .iter()
        .filter(|(path, meta)| before.get(*path) != Some(meta))
        .map(|(path, _)| path.display().to_string())
        .chain(
            before
                .keys()
                .filter(|path| !after.contains_key(*path))
                .map(|path| format!("{} (removed)", path.display())),
        )
        .collect();
    let more = names.len().saturating_sub(3);
    names.truncate(3);
    if more > 0 {
        names.push(format!("{more} more"));
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_sources_and_skips_outputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.js"), "a").unwrap();
        std::fs::write(dir.path().join("app.wasm"), "w").unwrap();
        for skipped in ["node_modules", "target", ".eddy"] {
            std::fs::create_dir(dir.path().join(skipped)).unwrap();
            std::fs::write(dir.path().join(skipped).join("x.js"), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/util.js"), "u").unwrap();
        let before = snapshot(dir.path(), &[]);
        let names: Vec<_> = before
            .keys()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["app.js", "lib/util.js"]);

        std::fs::write(dir.path().join("lib/util.js"), "longer").unwrap();
        std::fs::remove_file(dir.path().join("app.js")).unwrap();
        let after = snapshot(dir.path(), &[]);
        let changed = changed_files(&before, &after);
        assert!(changed.contains("util.js"), "{changed}");
        assert!(changed.contains("app.js (removed)"), "{changed}");
    }
}
