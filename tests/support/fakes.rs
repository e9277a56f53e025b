//! The examples' stand-in APIs (`examples/fake_apis.py`: a users API, a Mailgun-shaped mail API,
//! a payments API) as the demo runs them: a real HTTP server on a free loopback port, stopped
//! when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::repo_dir;

/// A running `fake_apis.py`.
pub struct FakeApis {
    child: Child,
    url: String,
}

impl FakeApis {
    /// Starts the server with API key `key`; the first `mail_failures` messages get a 503.
    pub fn start(key: &str, mail_failures: u32) -> Self {
        let mut child = Command::new("python3")
            .arg(repo_dir().join("examples/fake_apis.py"))
            .args(["--port", "0", "--key", key])
            .args(["--mail-fail", &mail_failures.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting examples/fake_apis.py (python3)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("reading its address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("fake_apis.py said {line:?}"))
            .to_owned();
        Self { child, url }
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The mail messages accepted so far, and how many times the mail API was called.
    pub fn messages(&self) -> (Vec<serde_json::Value>, u64) {
        let reply = crate::http::curl(&[&format!("{}/_messages", self.url)]).json();
        let messages = reply["messages"].as_array().cloned().unwrap_or_default();
        (messages, reply["attempts"].as_u64().unwrap_or(0))
    }

    /// The charges and refunds accepted so far.
    pub fn charges(&self) -> Vec<serde_json::Value> {
        let reply = crate::http::curl(&[&format!("{}/_charges", self.url)]).json();
        reply["charges"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for FakeApis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
