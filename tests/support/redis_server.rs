//! A real `redis-server` per test, on a free loopback port, with its files in a temporary dir;
//! killed when dropped. The append-only file is fsynced on every write, so a restart in the
//! middle of a test loses nothing, as with a production Redis configured for durability.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    durable: bool,
}

impl RedisServer {
    /// Starts a server on a free port, fsyncing every write, and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Starts a server with Redis's default durability (no fsync per write), as benchmarks
    /// measure Eddy rather than the disk.
    pub fn start_fast() -> Self {
        Self::start_with(false)
    }

    fn start_with(durable: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free port")
            .port();
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            durable,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            // `DEBUG SLEEP` stalls the server in fault tests.
            .args(["--enable-debug-command", "local"])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .args(["--daemonize", "no", "--logfile"])
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "starting redis-server: scripts/test installs it (apt-get install redis-server)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = redis::Client::open(self.url()).and_then(|c| c.get_connection())
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL hosts connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A new connection.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connecting to the test redis-server")
    }

    /// Stops the server (SIGTERM: it writes its files) and starts it again on the same port and
    /// files, after `down` of downtime.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut child) = self.child.take() {
            crate::host::signal(child.id(), libc::SIGTERM);
            child.wait().expect("waiting for redis-server");
        }
        std::thread::sleep(down);
        self.spawn();
    }

    /// Kills the server at once (SIGKILL, as a crash or the OOM killer would); what was
    /// fsynced survives for [`start_again`](Self::start_again).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().expect("waiting for redis-server");
        }
    }

    /// Starts a crashed server again on the same port and files.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn();
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
