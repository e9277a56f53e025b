//! The client side of the host's HTTP API, shared by the commands that talk to a running host
//! (`eddy publish`, and the deploy commands next): where the host is, the token, and turning an
//! error answer back into one readable line.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Args;

use crate::api::DEFAULT_LISTEN;

/// How long one API call may take. A deploy compiles the component inside the request, and a
/// 20 MB JavaScript or Python component takes tens of seconds to compile on a busy small
/// machine, so this is generous; an unreachable host is caught by [`CONNECT_TIMEOUT`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How long connecting to the host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the host's API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The host's API base URL.
    #[arg(long = "host", global = true, env = "EDDY_HOST", value_name = "URL", default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    pub url: String,

    /// The API's bearer token.
    #[arg(long, global = true, env = "EDDY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A file holding the token (a mounted secret); it wins over --token and EDDY_TOKEN, as
    /// `eddy up --token-file` does.
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

/// Largest token file read: 4 KiB.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

impl ApiArgs {
    /// The token: the content of --token-file (trimmed; an empty file is an error), else
    /// --token (or `EDDY_TOKEN`).
    pub fn resolved_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let text = crate::inputs::read_capped_text(path, MAX_TOKEN_FILE_BYTES)
                .with_context(|| format!("cannot read --token-file {}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                anyhow::bail!(
                    "--token-file {} is empty: expected the API token",
                    path.display()
                );
            }
            return Ok(Some(token.to_owned()));
        }
        let token = self.token.clone();
        Ok(token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
    }
}

/// `name` as one path segment: every byte but the unreserved ones percent-encoded, so a stream
/// name holding `/` or `:` stays one segment (the API decodes it).
pub fn segment(name: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(name, RESERVED).to_string()
}

/// A connection to a host's API.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for `args`; fails only when --token-file cannot be read.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            agent,
            base: args.url.trim_end_matches('/').to_owned(),
            token: args.resolved_token()?,
        })
    }

    /// POSTs `body` with `content_type` to `path`; the JSON answer on 2xx, else the API's
    /// error as one line.
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        self.call("POST", path, Some((content_type, body)))
    }

    /// PUTs `body` to `path`.
    pub fn put(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        self.call("PUT", path, Some((content_type, body)))
    }

    /// GETs `path`.
    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.call("GET", path, None)
    }

    /// DELETEs `path`.
    pub fn delete(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.call("DELETE", path, None)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let request = match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        let sent = match body {
            Some((content_type, bytes)) => self.agent.run(
                request
                    .header("Content-Type", content_type)
                    .body(bytes.to_vec())
                    .context("building the request")?,
            ),
            None => self
                .agent
                .run(request.body(()).context("building the request")?),
        };
        let mut response = sent.with_context(|| {
            format!(
                "cannot reach the eddy host at {} (is `eddy up` running? --host / EDDY_HOST)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .context("reading the host's answer")?;
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let error = &value["error"];
        let message = error["message"].as_str().unwrap_or(&text);
        Err(match error["field"].as_str() {
            Some(field) => anyhow!(
                "{status} {}: field `{field}`: {message}",
                error["code"].as_str().unwrap_or("error")
            ),
            None => anyhow!(
                "{status} {}: {message}",
                error["code"].as_str().unwrap_or("error")
            ),
        })
    }
}
