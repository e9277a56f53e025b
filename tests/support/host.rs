//! Real `eddy up` hosts for tests: started as child processes against a test Redis, their
//! diagnostics captured to a file, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::eddy_bin;

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child we started; no memory is involved.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A running host.
pub struct Host {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The compile cache shared by every host of the test run, so each component compiles once.
pub fn shared_cache() -> PathBuf {
    std::env::temp_dir().join(format!("eddy-test-cache-{}", std::process::id()))
}

impl Host {
    /// The `eddy up --redis URL --functions FUNCTIONS` command with `extra` arguments, a short
    /// claim margin so recovery tests are quick, and an ephemeral API port unless `extra` names
    /// one.
    fn up(redis_url: &str, functions: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(eddy_bin());
        command
            .arg("up")
            .args(["--redis", redis_url])
            .arg("--functions")
            .arg(functions)
            .args(["--claim-margin", "500ms"])
            .args(if extra.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(extra);
        command
    }

    /// Starts `eddy up --redis URL --functions FUNCTIONS` plus `extra` arguments.
    pub fn start(redis_url: &str, functions: &Path, extra: &[&str]) -> Self {
        Self::spawn(&mut Self::up(redis_url, functions, extra))
    }

    /// Like [`start`](Self::start), with `env` set in the host's environment (a secret, say).
    pub fn start_with_env(
        redis_url: &str,
        functions: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(Self::up(redis_url, functions, extra).envs(env.iter().copied()))
    }

    /// Like [`start`](Self::start), with the host's open-file limit lowered to `max_open_files`
    /// (as a container or a small `ulimit -n` would), for tests of what a flood of connections
    /// does.
    pub fn start_with_open_files(
        redis_url: &str,
        functions: &Path,
        extra: &[&str],
        max_open_files: u64,
    ) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut command = Self::up(redis_url, functions, extra);
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: max_open_files,
                    rlim_max: max_open_files,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Self::spawn(&mut command)
    }

    fn spawn(command: &mut Command) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("host.log");
        let child = command
            .env("XDG_CACHE_HOME", shared_cache())
            // EDDY_TEST_HOST_LOG widens a test host's log when chasing a failure, e.g.
            // `info,redis=debug` for the Redis client's own lines.
            .env(
                "EDDY_LOG",
                std::env::var("EDDY_TEST_HOST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("EDDY_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("host log file"))
            .spawn()
            .expect("starting eddy up");
        let mut host = Self {
            child: Some(child),
            log,
            _dir: dir,
        };
        host.wait_for_log("eddy host ready", Duration::from_secs(60));
        host
    }

    /// Starts `eddy up` with no Redis URL, so it runs a private `redis-server` in `data_dir`.
    pub fn start_embedded(data_dir: &str, functions: &Path) -> Self {
        Self::spawn(
            Command::new(eddy_bin())
                .arg("up")
                .args(["--data-dir", data_dir])
                .arg("--functions")
                .arg(functions)
                .args(["--listen", "127.0.0.1:0"])
                .env_remove("EDDY_REDIS_URL"),
        )
    }

    /// Waits until the host's diagnostics contain `needle`; panics with them on timeout or if
    /// the host exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("host exited ({status}) before {needle:?}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "host never logged {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The base URL of the host's HTTP API (it listens on a free port), from its log.
    pub fn api_url(&mut self) -> String {
        self.wait_for_log("api listening", Duration::from_secs(10));
        let log = self.log();
        let addr = log
            .lines()
            .find(|l| l.contains("api listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the host logged no api address:\n{log}"));
        format!("http://{addr}")
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("host running").id()
    }

    /// Kills the host with SIGKILL: no drain, no acks, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the host to exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("host running");
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the host") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("host did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}
