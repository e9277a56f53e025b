//! `eddy deploy` and `eddy functions`: ship a function to running hosts and manage what is
//! deployed, through a host's API. Every host of the cluster picks a change up within a second.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{ApiArgs, Client, segment};
use super::{EXIT_OK, OutputFormat};
use crate::engine::digest;
use crate::manifest;

/// Arguments of `eddy deploy`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy deploy examples/order-placed/functions/order-confirmation.toml\n  \
    eddy deploy ./my-function            # its eddy.toml\n  \
    eddy deploy ./my-function --canary 10%   # 10% of events to the new version, rolled back\n  \
                                             # by itself if it fails more than the stable one\n  \
    EDDY_HOST=http://10.0.0.5:7070 EDDY_TOKEN=... eddy deploy fn/eddy.toml --output json\n\n\
    The manifest is checked here first, then by the host, which also compiles the component and\n\
    checks it implements the function world; a refused deploy changes nothing.")]
pub struct DeployArgs {
    /// The manifest (eddy.toml) or a folder holding one.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Build the function from source first, by its project kind: Rust (Cargo.toml: cargo),
    /// JavaScript (package.json: componentize-js on app.js) or Python (app.py:
    /// componentize-py). The result goes where the manifest's `component` points.
    #[arg(long)]
    pub build: bool,

    /// Deploy as a canary taking this share of events (`10%`, by a hash of the event id, on
    /// every host) beside the current version, until `eddy functions promote` or `rollback`.
    /// It is rolled back by itself when its failure rate over `--canary-window` exceeds the
    /// stable version's by `--canary-margin`, once it has `--canary-min-events` outcomes.
    #[arg(long, value_name = "PERCENT")]
    pub canary: Option<String>,

    /// With --canary: the window outcomes are compared over (1s..=1h).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1m",
        requires = "canary"
    )]
    pub canary_window: String,

    /// With --canary: how much higher its failure rate may be (0.0..=1.0; 0.2 is 20 points).
    #[arg(long, value_name = "SHARE", default_value_t = crate::canary::DEFAULT_MARGIN, requires = "canary")]
    pub canary_margin: f64,

    /// With --canary: its outcomes needed in the window before it is judged.
    #[arg(long, value_name = "N", default_value_t = crate::canary::DEFAULT_MIN_EVENTS, requires = "canary")]
    pub canary_min_events: u32,

    /// How long to wait for the host to run the new version (it compiles it first), e.g. 2m;
    /// 0s returns once the registry has it. Events published before a new function runs are
    /// not read by it (its group starts at the stream's end).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = super::duration_zero_to(MAX_DEPLOY_WAIT))]
    pub wait: std::time::Duration,

    /// Where the host is.
    #[command(flatten)]
    pub api: ApiArgs,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// Longest `eddy deploy --wait`.
const MAX_DEPLOY_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Waits until the host at `client` runs `version` of `name`, at most `limit`; says how long
/// it took on stderr (a live count on a terminal, one line when piped). Whether it did.
pub fn wait_running(
    client: &Client,
    name: &str,
    version: u64,
    limit: std::time::Duration,
    human: bool,
) -> anyhow::Result<bool> {
    use std::io::{IsTerminal as _, Write as _};
    let path = format!("/v1/functions/{}", segment(name));
    let started = std::time::Instant::now();
    let live = human && std::io::stderr().is_terminal();
    let mut shown = 0;
    loop {
        // A newer version (another deploy since) means this one was taken in and passed.
        if client.get(&path)?["running_here"]
            .as_u64()
            .is_some_and(|running| running >= version)
        {
            if live {
                eprint!("\r\x1b[2K");
            }
            if human {
                eprintln!(
                    "running version {version} on the host ({:.1} s to compile and switch)",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(true);
        }
        let elapsed = started.elapsed();
        if elapsed >= limit {
            if live {
                eprintln!();
            }
            return Ok(false);
        }
        if live && elapsed.as_secs() != shown {
            shown = elapsed.as_secs();
            eprint!("\rthe host is compiling and switching to version {version}… {shown} s");
            let _ = std::io::stderr().flush();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs `eddy deploy`.
pub fn run(args: DeployArgs) -> anyhow::Result<u8> {
    let manifest = manifest::load(&args.path)?;
    if args.build {
        super::build::build(&manifest)?;
    }
    let client = Client::new(&args.api)?;
    let human = args.output == OutputFormat::Human;
    let canary = match &args.canary {
        Some(percent) => {
            crate::canary::parse_percent(percent).map_err(|e| anyhow::anyhow!("--canary: {e}"))?;
            Some(serde_json::json!({
                "percent": percent,
                "window": args.canary_window,
                "margin": args.canary_margin,
                "min_events": args.canary_min_events,
            }))
        }
        None => None,
    };
    let canary_deploy = canary.is_some();
    let answer = ship(&client, &manifest, canary, human)?;
    // A canary runs beside the stable version, which stays what the host reports.
    if !canary_deploy && !args.wait.is_zero() {
        let version = answer["version"].as_u64().unwrap_or_default();
        if !wait_running(&client, &manifest.name, version, args.wait, human)? {
            eprintln!(
                "warning: the host at {} does not run version {version} of {} after {:?}: \
                 see its log (a name taken by an `eddy up --functions` manifest is ignored)",
                args.api.url, manifest.name, args.wait
            );
        }
    }
    if human {
        print_function(&answer);
        if let Some(percent) = &args.canary {
            println!(
                "  canary: {percent} of events (by event id) on every host; `eddy functions \
                 promote {0}` makes it current, `eddy functions rollback {0}` ends it",
                manifest.name
            );
        }
        warn_unschematized(&client, &manifest);
    } else {
        println!("{answer}");
    }
    Ok(EXIT_OK)
}

/// Uploads the function's component and deploys its manifest (with `canary` settings, if any)
/// through `client`; the API's answer. With `human`, says what it is doing on stderr.
pub fn ship(
    client: &Client,
    manifest: &manifest::Manifest,
    canary: Option<Value>,
    human: bool,
) -> anyhow::Result<Value> {
    let text = crate::inputs::read_capped_text(&manifest.path, manifest::MAX_MANIFEST_BYTES)
        .with_context(|| format!("cannot read {}", manifest.path.display()))?;
    let bytes = manifest.read_component()?;
    let digest = digest(&bytes);
    if human {
        eprintln!(
            "uploading {} ({} KiB, sha256 {})…",
            manifest.component.display(),
            bytes.len() / 1024,
            &digest[..12]
        );
    }
    let started = std::time::Instant::now();
    client.put(
        &format!("/v1/components/{digest}"),
        "application/wasm",
        &bytes,
    )?;
    if human {
        eprintln!(
            "uploaded in {:.1} s; the host checks and compiles it, then deploys {}…",
            started.elapsed().as_secs_f64(),
            manifest.name
        );
    }
    let mut body = serde_json::json!({ "manifest": text, "digest": digest });
    if let Some(canary) = canary {
        body["canary"] = canary;
    }
    client.post(
        "/v1/functions",
        "application/json",
        body.to_string().as_bytes(),
    )
}

/// Warns about the event types the function's triggers name that have no schema: their events
/// reach it unchecked (`validate = true` cannot check them either).
fn warn_unschematized(client: &Client, manifest: &manifest::Manifest) {
    let mut types: Vec<&String> = manifest
        .streams
        .iter()
        .filter_map(|t| t.types.as_ref())
        .flatten()
        .filter(|t| t.as_str() != crate::triggers::cron::TICK_TYPE)
        .collect();
    types.sort();
    types.dedup();
    if types.is_empty() {
        return;
    }
    let Ok(answer) = client.get("/v1/schemas") else {
        return;
    };
    let known: Vec<&str> = answer["schemas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["type"].as_str())
        .collect();
    let missing: Vec<&str> = types
        .iter()
        .map(|t| t.as_str())
        .filter(|t| !known.contains(t))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "warning: no schema for {}: events of these types reach {} unchecked (eddy schemas \
             put TYPE FILE)",
            missing.join(", "),
            manifest.name
        );
    }
}

fn print_function(f: &Value) {
    println!(
        "{} version {} (sha256 {}) deployed {}",
        f["name"].as_str().unwrap_or("?"),
        f["version"],
        f["digest"].as_str().unwrap_or("?"),
        f["deployed_at"].as_str().unwrap_or("?")
    );
    for t in f["triggers"].as_array().into_iter().flatten() {
        match t["kind"].as_str() {
            Some("stream") => println!(
                "  stream {} (group {})",
                t["stream"].as_str().unwrap_or("?"),
                t["group"].as_str().unwrap_or("?")
            ),
            _ => println!(
                "  cron {} {} ({})",
                t["name"].as_str().unwrap_or("?"),
                t["schedule"].as_str().unwrap_or("?"),
                t["timezone"].as_str().unwrap_or("?")
            ),
        }
    }
}

/// Arguments of `eddy functions`.
#[derive(Debug, Args)]
pub struct FunctionsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FunctionsCommand,

    /// Where the host is.
    #[command(flatten)]
    pub api: ApiArgs,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// The functions subcommands.
#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// List deployed functions and their current versions.
    Ls,
    /// Show a function's versions.
    Show {
        /// The function.
        name: String,
    },
    /// Remove a function (every host stops it).
    Rm {
        /// The function.
        name: String,
    },
    /// Make the running canary the current version on every host.
    Promote {
        /// The function.
        name: String,
    },
    /// End a running canary (every event back on the stable version); without a canary, make
    /// the previous version (or --version N) current again.
    Rollback {
        /// The function.
        name: String,
        /// The version to go back to (default: the one before the current).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Stop taking new events on every host: in-flight ones finish, entries wait in the stream
    /// (lag grows) and retries in their schedule; nothing is lost. The pause is kept in Redis,
    /// through restarts, until `eddy functions resume`.
    #[command(
        after_help = "Examples:\n  eddy functions pause order-confirmation\n  \
        eddy functions pause order-confirmation --trigger orders\n  \
        eddy functions resume order-confirmation"
    )]
    Pause {
        /// The function.
        name: String,
        /// Only its trigger on this stream (default: every stream trigger the host runs for it;
        /// needed for a function the host does not run).
        #[arg(long, value_name = "STREAM")]
        trigger: Option<String>,
    },
    /// Take new events again after `pause`; also closes a tripped circuit breaker at once.
    Resume {
        /// The function.
        name: String,
        /// Only its trigger on this stream (default: every stream trigger the host runs for it).
        #[arg(long, value_name = "STREAM")]
        trigger: Option<String>,
    },
}

/// Runs `eddy functions`.
pub fn run_functions(args: FunctionsArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.api)?;
    let answer = match &args.command {
        FunctionsCommand::Ls => client.get("/v1/functions")?,
        FunctionsCommand::Show { name } => {
            client.get(&format!("/v1/functions/{}", segment(name)))?
        }
        FunctionsCommand::Rm { name } => {
            client.delete(&format!("/v1/functions/{}", segment(name)))?
        }
        FunctionsCommand::Promote { name } => client.post(
            &format!("/v1/functions/{}/promote", segment(name)),
            "application/json",
            b"{}",
        )?,
        FunctionsCommand::Rollback { name, version } => {
            let body = serde_json::json!({ "version": version }).to_string();
            client.post(
                &format!("/v1/functions/{}/rollback", segment(name)),
                "application/json",
                body.as_bytes(),
            )?
        }
        FunctionsCommand::Pause { name, trigger } | FunctionsCommand::Resume { name, trigger } => {
            let verb = if matches!(args.command, FunctionsCommand::Pause { .. }) {
                "pause"
            } else {
                "resume"
            };
            let body = serde_json::json!({ "trigger": trigger }).to_string();
            client.post(
                &format!("/v1/functions/{}/{verb}", segment(name)),
                "application/json",
                body.as_bytes(),
            )?
        }
    };
    if args.output == OutputFormat::Json {
        println!("{answer}");
        return Ok(EXIT_OK);
    }
    match &args.command {
        FunctionsCommand::Ls => {
            let functions = answer["functions"].as_array().cloned().unwrap_or_default();
            if functions.is_empty() {
                println!("no functions deployed");
            }
            for f in &functions {
                print_function(f);
            }
        }
        FunctionsCommand::Show { .. } => {
            for v in answer["versions"].as_array().into_iter().flatten() {
                let marker = if v["current"] == true { "* " } else { "  " };
                print!("{marker}");
                print_function(v);
            }
            let canary = &answer["canary"];
            if !canary.is_null() {
                let settings = &canary["settings"];
                println!(
                    "canary: version {} takes {}% of events (window {}s, margin {}, min {} attempts)",
                    settings["version"],
                    settings["percent"],
                    settings["window_s"],
                    settings["margin"],
                    settings["min_events"]
                );
                for side in ["stable", "canary"] {
                    let c = &canary[side];
                    println!(
                        "  {side:<6} version {:<4} {:>7} attempts {:>7} failed or rejected ({:.1}%)",
                        c["version"].to_string(),
                        c["attempts"].as_u64().unwrap_or(0),
                        c["failed"].as_u64().unwrap_or(0),
                        c["failure_rate"].as_f64().unwrap_or(0.0) * 100.0
                    );
                }
            }
            let ended = &answer["last_canary"];
            if !ended.is_null() {
                let when = ended["ended_ms"]
                    .as_i64()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                println!(
                    "last canary: version {} ended {when}: {}",
                    ended["version"],
                    ended["reason"].as_str().unwrap_or("?")
                );
            }
        }
        FunctionsCommand::Promote { name } => {
            println!(
                "{name} version {} is current on every host",
                answer["current"]
            )
        }
        FunctionsCommand::Rm { name } => println!("removed {name}"),
        FunctionsCommand::Rollback { name, .. } if !answer["canary_ended"].is_null() => {
            println!(
                "{name}: canary version {} ended, every event on version {}",
                answer["canary_ended"], answer["current"]
            )
        }
        FunctionsCommand::Rollback { name, .. } => {
            println!("{name} is back on version {}", answer["current"])
        }
        FunctionsCommand::Pause { name, .. } => {
            for stream in answer["triggers"].as_array().into_iter().flatten() {
                println!(
                    "{name} paused on {} (every host stops taking its events within a second)",
                    stream.as_str().unwrap_or("?")
                );
            }
        }
        FunctionsCommand::Resume { name, .. } => {
            let resumed = answer["resumed"].as_array().cloned().unwrap_or_default();
            for stream in answer["triggers"].as_array().into_iter().flatten() {
                let state = if resumed.contains(stream) {
                    "resumed"
                } else {
                    "was not paused"
                };
                println!("{name} {state} on {}", stream.as_str().unwrap_or("?"));
            }
        }
    }
    Ok(EXIT_OK)
}
