//! HTTP requests to a host's API through a real client, `curl`, as users and scripts make them.

use std::process::Command;

/// What `curl` got back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code; 0 when no response arrived.
    pub status: u16,
    /// The status line and headers, lowercased.
    pub head: String,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    }
}

/// Runs `curl -s` with `args` (a URL among them) and returns the status, headers and body.
pub fn curl(args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "-"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // A 100 Continue comes first when curl sends a large body: keep the final response.
    let mut rest = text.as_str();
    while rest.starts_with("HTTP/1.1 100") {
        rest = rest.split_once("\r\n\r\n").map_or("", |(_, r)| r);
    }
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}
