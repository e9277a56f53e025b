//! The embedded Redis: with no `--redis` URL, `eddy up` starts a private `redis-server` child
//! listening only on a Unix socket in the data dir (`./.eddy` by default), with the append-only
//! file on so queued events and retry schedules survive a restart, and stops it on exit.
//!
//! It is the one-machine default, not a different engine: the host talks to it exactly as to
//! any other Redis. Two hosts cannot share a data dir (a lock file says so); a `redis-server`
//! left behind by a host that was killed is stopped before a new one starts.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The data dir used when none is given.
pub const DEFAULT_DATA_DIR: &str = ".eddy";
/// How long `redis-server` may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `redis-server` may take to write its files and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest Unix socket path the kernel accepts, less a margin (`sun_path` is 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// A running private `redis-server`.
pub struct EmbeddedRedis {
    child: Option<Child>,
    socket: PathBuf,
    dir: PathBuf,
    _lock: File,
}

impl EmbeddedRedis {
    /// Starts `redis-server` with its files in `data_dir` and waits until it answers.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data dir {}", data_dir.display()))?;
        let lock = File::create(dir.join("host.lock"))
            .with_context(|| format!("cannot create {}", dir.join("host.lock").display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another eddy host is using data dir {}: stop it, pass --data-dir, or share its \
                 Redis with --redis",
                dir.display()
            );
        }
        let socket = dir.join("redis.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "data dir {} is too deep for a Unix socket path (at most {MAX_SOCKET_PATH} bytes): \
                 pass a shorter --data-dir",
                dir.display()
            );
        }
        stop_leftover(&dir);

        let child = Command::new("redis-server")
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(&dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal reaches the host, which drains
            // and acks first, and only then stops Redis.
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "redis-server is not installed: install it (Debian/Ubuntu: `sudo apt-get install \
                 redis-server`, macOS: `brew install redis`) or point eddy at a running Redis \
                 with --redis redis://HOST:PORT"
            ),
            Err(e) => return Err(e).context("cannot start redis-server"),
        };
        let mut redis = Self {
            child: Some(child),
            socket,
            dir,
            _lock: lock,
        };
        redis.wait_ready()?;
        Ok(redis)
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "redis-server exited at start ({status}); its log {} says:\n{}",
                    self.dir.join("redis.log").display(),
                    log_tail(&self.dir)
                );
            }
            if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&self.socket) {
                use std::io::{Read as _, Write as _};
                stream.set_read_timeout(Some(Duration::from_millis(500)))?;
                let mut reply = [0u8; 64];
                if stream.write_all(b"PING\r\n").is_ok()
                    && let Ok(n) = stream.read(&mut reply)
                    && reply[..n].starts_with(b"+PONG")
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server did not answer on {} within {:?}",
                    self.socket.display(),
                    START_TIMEOUT
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks Redis to write its files and exit, and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!("redis-server did not stop within {STOP_TIMEOUT:?}; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for EmbeddedRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid we own and a standard signal has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Stops a `redis-server` a killed host left running on this data dir: we hold the lock, so
/// no live host owns it.
fn stop_leftover(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("redis.pid")) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return;
    };
    let is_redis = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.contains("redis-server"));
    if !is_redis {
        return;
    }
    tracing::warn!(
        pid,
        "stopping the redis-server a previous host left running"
    );
    terminate(pid);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
