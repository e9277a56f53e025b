//! `eddy probe [PATH]`: asks a host's API whether it is alive or ready, for container health
//! checks and Kubernetes exec probes, where no `curl` is at hand (the image holds only `eddy`)
//! and the token must come from the environment rather than a literal header.

use std::time::Duration;

use clap::Args;

use super::client::ApiArgs;
use super::{EXIT_ERROR, EXIT_OK};

/// Longest a probe waits for the answer: a probe that hangs is a failed probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Arguments of `eddy probe`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy probe /healthz                      # alive: the process answers\n  \
    eddy probe /readyz                       # ready: Redis answers, functions loaded\n  \
    EDDY_TOKEN=… eddy probe --host http://10.0.0.5:7070 /readyz\n  \
    eddy up & eddy probe --wait 30s            # in a script: go on once the host is ready\n\n\
    Exit status 0 on a 2xx answer within 2 s (or, with --wait, any within the wait), 1\n\
    otherwise (the answer is printed).")]
pub struct ProbeArgs {
    /// The path to ask: /healthz (alive) or /readyz (ready).
    #[arg(default_value = "/readyz", value_parser = ["/healthz", "/readyz"])]
    pub path: String,

    /// Ask again every 200 ms until a 2xx answer or this long has passed (e.g. 30s; at most
    /// 10m), for scripts that start a host and go on once it is ready.
    #[arg(long, value_name = "DURATION", value_parser = super::duration_up_to(MAX_WAIT))]
    pub wait: Option<Duration>,

    /// The host and token.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Longest `--wait`.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Runs `eddy probe`, asking again until `--wait` passes.
pub fn run(args: ProbeArgs) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    loop {
        let (code, answer) = ask(&args)?;
        match args.wait {
            Some(wait) if code != EXIT_OK && started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => {
                println!("{answer}");
                return Ok(code);
            }
        }
    }
}

/// Asks once: the exit code and what to print.
fn ask(args: &ProbeArgs) -> anyhow::Result<(u8, String)> {
    // The host itself answers: a redirect or a proxy would make another server's answer this
    // host's.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(PROBE_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let url = format!("{}{}", args.api.url.trim_end_matches('/'), args.path);
    let mut request = agent.get(&url);
    if let Some(token) = &args.api.resolved_token()? {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            // The first 4 KiB of the answer is shown; an answer that does not arrive whole
            // within the probe's time is a failed probe, whatever its status.
            let mut body = Vec::new();
            let read = std::io::Read::read_to_end(
                &mut std::io::Read::take(response.body_mut().as_reader(), 4096),
                &mut body,
            );
            let answer = format!("{status} {}", String::from_utf8_lossy(&body).trim());
            Ok(match read {
                Ok(_) if (200..300).contains(&status) => (EXIT_OK, answer),
                Ok(_) => (EXIT_ERROR, answer),
                Err(error) => (
                    EXIT_ERROR,
                    format!("{answer}\n{url}: the answer did not arrive whole: {error}"),
                ),
            })
        }
        Err(error) => Ok((EXIT_ERROR, format!("{url}: {error}"))),
    }
}
