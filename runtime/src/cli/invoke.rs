//! `eddy invoke FILE.wasm`: run a function once on one event, locally, with no Redis.
//!
//! Events the function publishes are kept in memory and printed after the result. The exit
//! code is the outcome: 0 done, 3 rejected, 4 failed (1 for bad input before anything ran).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use super::{EXIT_FAILED, EXIT_OK, EXIT_REJECTED, OutputFormat};
use crate::engine::{
    AllowList, BucketId, DEFAULT_MEMORY_BYTES, DEFAULT_OUTPUT_BYTES, DEFAULT_TIMEOUT, Engine,
    EngineConfig, FunctionSpec, InvokeResult, Limits, MAX_MEMORY_BYTES, MAX_OUTPUT_BYTES,
    MAX_TIMEOUT, MemoryKeyValue, MemoryPublisher, Origin, Outcome, PublishRequest, SecretSource,
    Secrets, Services,
};
use crate::event::{DEFAULT_CONTENT_TYPE, Delivery, Event, is_json_content_type};
use crate::names::Escaped;

/// Largest event data `eddy invoke` reads from `--data-file`: 16 MiB.
pub const MAX_LOCAL_DATA_BYTES: u64 = 16 * 1024 * 1024;

/// Instances `eddy invoke` pools: it runs one (plus the load-time check), so a small pool
/// reserves less address space than a host's.
const INVOKE_MAX_INSTANCES: u32 = 4;

/// Arguments of `eddy invoke`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy invoke order_confirmation.wasm --type OrderPlaced \\\n      \
      --data '{\"orderId\":\"o-1\",\"userId\":\"u-1\"}'\n  \
    eddy invoke update_inventory.wasm --data-file order.json --config inventory_stream=stock\n  \
    eddy invoke slow.wasm --timeout 500ms --memory 16MiB --output json\n\n\
    Exit codes: 0 done (2xx), 3 rejected (4xx), 4 failed (5xx, trap, timeout, memory limit),\n\
    1 bad input (missing file, not a component, invalid JSON), 2 usage.")]
pub struct InvokeArgs {
    /// The function: a component file built for wasm32-wasip2 (run here); a project folder or
    /// its eddy.toml (its component run here with the manifest's limits, config, outbound
    /// origins and secrets; flags add to them); or the name of a deployed function (run by the
    /// host at --host).
    pub file: PathBuf,

    /// The event payload. Must be valid JSON while the content type is JSON (the default).
    #[arg(long, short = 'd', default_value = "{}", conflicts_with = "data_file")]
    pub data: String,

    /// Read the payload from a file instead (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<PathBuf>,

    /// The event type.
    #[arg(long = "type", short = 't', default_value = "eddy.invoke")]
    pub event_type: String,

    /// The event source.
    #[arg(long, default_value = "eddy://invoke")]
    pub source: String,

    /// The event id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,

    /// The event subject.
    #[arg(long)]
    pub subject: Option<String>,

    /// The payload's media type.
    #[arg(long, default_value = DEFAULT_CONTENT_TYPE)]
    pub content_type: String,

    /// An extension attribute, e.g. `--extension traceparent=00-...` (repeatable).
    #[arg(long = "extension", short = 'e', value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub extensions: Vec<(String, String)>,

    /// The attempt number the function sees.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: u32,

    /// A setting the function reads with `config::get` (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub config: Vec<(String, String)>,

    /// Wall-time limit, e.g. 500ms, 30s, at most 15m [default: 30s].
    #[arg(long, value_parser = super::duration_up_to(MAX_TIMEOUT))]
    pub timeout: Option<Duration>,

    /// Memory limit, e.g. 16MiB, at most 4GiB.
    #[arg(long, value_parser = super::bytes_within(1, MAX_MEMORY_BYTES), default_value_t = DEFAULT_MEMORY_BYTES)]
    pub memory: u64,

    /// Cap on captured stdout, stderr and log bytes, at most 16MiB.
    #[arg(long, value_parser = super::bytes_within(0, MAX_OUTPUT_BYTES as u64), default_value_t = DEFAULT_OUTPUT_BYTES as u64)]
    pub output_limit: u64,

    /// An origin outbound HTTP may reach, e.g. `https://api.example.com` or
    /// `http://127.0.0.1:*` (repeatable; default none, as in a manifest's `[outbound] http`).
    #[arg(long = "allow-http", value_name = "ORIGIN", value_parser = parse_origin)]
    pub allow_http: Vec<Origin>,

    /// A PEM file of extra certificate authorities outbound HTTPS trusts (a private CA).
    #[arg(long, env = "EDDY_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// A secret the function reads with `secrets::get`: `NAME=env:VARIABLE` or
    /// `NAME=file:/path` (repeatable).
    #[arg(long = "secret", value_name = "NAME=SOURCE", value_parser = super::parse_key_value)]
    pub secrets: Vec<(String, String)>,

    /// A key-value pair put into the in-memory bucket `--kv-bucket` before the call
    /// (repeatable). The buckets' contents are printed after it.
    #[arg(long = "kv", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    pub kv: Vec<(String, String)>,

    /// The bucket `--kv` seeds, as the function opens it by name.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub kv_bucket: String,

    /// A bucket name the function shares (as `[keyvalue] shared` in a manifest; repeatable).
    #[arg(long = "shared-bucket", value_name = "NAME")]
    pub shared_buckets: Vec<String>,

    /// Compile without reading or writing the compiled-component cache.
    #[arg(long)]
    pub no_cache: bool,

    /// How to print the result.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,

    /// Where the host's API is, for a deployed function.
    #[command(flatten)]
    pub api: super::client::ApiArgs,
}

/// Runs `eddy invoke`; returns the exit code for the outcome.
pub fn run(args: InvokeArgs) -> anyhow::Result<u8> {
    let data = read_data(&args)?;
    let name = args.file.to_string_lossy().into_owned();
    if !args.file.exists()
        && args.file.extension().is_none()
        && crate::names::identifier(&name).is_ok()
    {
        return run_remote(&args, &name, &data);
    }
    if is_json_content_type(&args.content_type)
        && let Err(error) = serde_json::from_slice::<serde_json::Value>(&data)
    {
        bail!(
            "--data is not valid JSON ({error}): expected a JSON document because the \
             content type is {}; pass --content-type for other payloads",
            args.content_type
        );
    }
    let manifest = if args.file.is_dir() || args.file.extension().is_some_and(|e| e == "toml") {
        Some(crate::manifest::load(&args.file)?)
    } else {
        None
    };
    let component = manifest
        .as_ref()
        .map_or(args.file.clone(), |m| m.component.clone());
    let bytes = crate::inputs::read_capped(&component, crate::engine::MAX_COMPONENT_BYTES as u64)
        .with_context(|| {
        format!(
            "reading function {}{}",
            component.display(),
            if manifest.is_some() {
                " (the manifest's `component`: run `eddy build` first)"
            } else {
                ""
            }
        )
    })?;

    let name = match &manifest {
        Some(m) => m.name.to_string(),
        None => component
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "function".to_owned()),
    };
    let mut config = EngineConfig {
        max_instances: INVOKE_MAX_INSTANCES,
        ..EngineConfig::default()
    };
    if args.no_cache {
        config.cache_dir = None;
    }
    config.ca_file = args.ca_file.clone();
    let engine = Engine::new(&config).context("starting the engine")?;
    let mut secrets = BTreeMap::new();
    for (secret, source) in &args.secrets {
        crate::names::identifier(secret).map_err(|e| anyhow::anyhow!("--secret name {e}"))?;
        let source = SecretSource::parse(source).map_err(|expected| {
            anyhow::anyhow!("--secret {secret}={source}: expected {expected}")
        })?;
        let value = source
            .resolve()
            .map_err(|reason| anyhow::anyhow!("--secret {secret} from {source}: {reason}"))?;
        secrets.insert(secret.clone(), value);
    }
    for bucket in args.shared_buckets.iter().chain([&args.kv_bucket]) {
        crate::names::BucketName::check(bucket)?;
    }
    let spec = match &manifest {
        None => FunctionSpec {
            name,
            limits: Limits {
                memory_bytes: args.memory,
                timeout: args.timeout.unwrap_or(DEFAULT_TIMEOUT),
                output_bytes: usize::try_from(args.output_limit).unwrap_or(usize::MAX),
                ..Limits::default()
            },
            config: args.config.into_iter().collect::<BTreeMap<_, _>>(),
            version: None,
            secrets: Secrets::new(secrets),
            outbound: AllowList::new(args.allow_http.clone()),
            shared_buckets: args.shared_buckets.clone(),
        },
        Some(manifest) => {
            // The manifest's settings, with what the flags give on top.
            let mut spec = manifest.function_spec(None, &[])?;
            if let Some(timeout) = args.timeout {
                spec.limits.timeout = timeout;
            }
            if args.memory != DEFAULT_MEMORY_BYTES {
                spec.limits.memory_bytes = args.memory;
            }
            if args.output_limit != DEFAULT_OUTPUT_BYTES as u64 {
                spec.limits.output_bytes = usize::try_from(args.output_limit).unwrap_or(usize::MAX);
            }
            spec.config.extend(args.config);
            let mut origins = manifest.outbound.origins().to_vec();
            origins.extend(args.allow_http.iter().cloned());
            spec.outbound = AllowList::new(origins);
            spec.secrets = spec.secrets.with(secrets);
            spec.shared_buckets
                .extend(args.shared_buckets.iter().cloned());
            spec
        }
    };
    let function = engine
        .load(spec, &bytes)
        .with_context(|| format!("loading {}", args.file.display()))?;

    let event = Event {
        id: args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        source: args.source,
        event_type: args.event_type,
        subject: args.subject,
        time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        datacontenttype: Some(args.content_type),
        data,
        extensions: args.extensions,
        delivery: Delivery::invoked(args.attempt),
    };
    let publisher = Arc::new(MemoryPublisher::default());
    let keyvalue = Arc::new(MemoryKeyValue::default());
    let seeded = BucketId::of(function.name(), &args.kv_bucket, &args.shared_buckets);
    for (key, value) in &args.kv {
        crate::engine::check_key(key)
            .and_then(|()| crate::engine::check_value(value.as_bytes()))
            .map_err(|e| anyhow::anyhow!("--kv {key}: {e}"))?;
        keyvalue.seed(&seeded, key, value.as_bytes());
    }
    let services = Services {
        publisher: publisher.clone(),
        keyvalue: keyvalue.clone(),
    };
    let result = function.invoke_with_blocking(&event, services);
    let published = publisher.events();
    let buckets: BTreeMap<String, BTreeMap<String, String>> = keyvalue
        .buckets()
        .into_iter()
        .map(|bucket| {
            let pairs = keyvalue
                .contents(&bucket)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            (bucket.as_str().to_owned(), pairs)
        })
        .collect();

    match args.output {
        OutputFormat::Human => print_human(&result, &published, &buckets),
        OutputFormat::Json => print_json(&event, &result, &published, &buckets)?,
    }
    Ok(match result.outcome {
        Outcome::Done => EXIT_OK,
        Outcome::Rejected => EXIT_REJECTED,
        Outcome::Failed => EXIT_FAILED,
    })
}

fn read_data(args: &InvokeArgs) -> anyhow::Result<Vec<u8>> {
    match &args.data_file {
        None => Ok(args.data.clone().into_bytes()),
        Some(path) if path.as_os_str() == "-" => {
            crate::inputs::read_capped_from(std::io::stdin(), MAX_LOCAL_DATA_BYTES)
                .context("reading --data-file from stdin")
        }
        Some(path) => crate::inputs::read_capped(path, MAX_LOCAL_DATA_BYTES)
            .with_context(|| format!("reading --data-file {}", path.display())),
    }
}

/// An `--allow-http` origin.
fn parse_origin(text: &str) -> Result<Origin, String> {
    Origin::parse(text).map_err(|expected| format!("{text:?}: expected {expected}"))
}

fn print_human(
    result: &InvokeResult,
    published: &[(String, PublishRequest)],
    buckets: &BTreeMap<String, BTreeMap<String, String>>,
) {
    let duration_ms = result.duration.as_secs_f64() * 1000.0;
    match result.status {
        Some(status) => println!(
            "status:    {status} ({}) in {duration_ms:.2} ms",
            result.outcome.as_str()
        ),
        None => println!(
            "status:    none ({}) in {duration_ms:.2} ms",
            result.outcome.as_str()
        ),
    }
    // What the guest wrote is escaped: a line break or an escape sequence in it must not
    // pose as a line of this report or drive the terminal.
    if let Some(failure) = &result.failure {
        println!("failure:   {}", Escaped(&failure.to_string()));
    }
    if !result.body.is_empty() {
        println!("body:      {}", Escaped(&result.body_text()));
    }
    let output = &result.output;
    if !output.logs.is_empty() {
        println!("logs:");
        for line in &output.logs {
            println!("  [{}] {}", line.level.as_str(), Escaped(&line.message));
        }
    }
    for (label, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        if !text.is_empty() {
            println!("{label}:");
            for line in text.lines() {
                println!("  {}", Escaped(line));
            }
        }
    }
    if output.dropped_bytes > 0 {
        println!(
            "output:    {} bytes beyond the capture limit were dropped",
            output.dropped_bytes
        );
    }
    println!("published: {}", published.len());
    for (id, event) in published {
        println!(
            "  {id}  {} -> {}  {}",
            event.event_type,
            event.stream,
            Escaped(&String::from_utf8_lossy(&event.data))
        );
    }
    let outbound = &result.outbound;
    if outbound.calls > 0 || outbound.denied > 0 {
        println!(
            "outbound:  {} request(s) in {:.2} ms, {} refused by the allow-list{}",
            outbound.calls,
            outbound.duration.as_secs_f64() * 1000.0,
            outbound.denied,
            if outbound.limits.is_empty() {
                String::new()
            } else {
                format!("; limits hit: {}", outbound.limits.join(", "))
            }
        );
    }
    for (bucket, pairs) in buckets {
        println!("bucket {bucket}:");
        for (key, value) in pairs {
            println!("  {} = {}", Escaped(key), Escaped(value));
        }
    }
}

fn print_json(
    event: &Event,
    result: &InvokeResult,
    published: &[(String, PublishRequest)],
    buckets: &BTreeMap<String, BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    let published: Vec<_> = published
        .iter()
        .map(|(id, request)| {
            serde_json::json!({
                "id": id,
                "stream": request.stream,
                "type": request.event_type,
                "data": String::from_utf8_lossy(&request.data),
                "causedBy": request.caused_by,
            })
        })
        .collect();
    let document = serde_json::json!({
        "eventId": event.id,
        "result": result,
        "published": published,
        "keyvalue": buckets,
    });
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}

/// Runs deployed function `name` on a host through its API.
fn run_remote(args: &InvokeArgs, name: &str, data: &[u8]) -> anyhow::Result<u8> {
    let data: serde_json::Value = serde_json::from_slice(data)
        .context("--data: a deployed function is invoked with a JSON payload")?;
    let extensions: serde_json::Map<String, serde_json::Value> = args
        .extensions
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut event = serde_json::json!({
        "type": args.event_type,
        "source": args.source,
        "data": data,
        "extensions": extensions,
    });
    if let Some(id) = &args.id {
        event["id"] = id.clone().into();
    }
    if let Some(subject) = &args.subject {
        event["subject"] = subject.clone().into();
    }
    let answer = super::client::Client::new(&args.api)?.post(
        &format!("/v1/functions/{}/invoke", super::client::segment(name)),
        "application/json",
        event.to_string().as_bytes(),
    )?;
    let outcome = answer["outcome"]
        .as_str()
        .unwrap_or("failed")
        .to_ascii_lowercase();
    match args.output {
        OutputFormat::Json => println!("{answer}"),
        OutputFormat::Human => {
            let status = answer["status"]
                .as_u64()
                .map_or("no status".to_owned(), |s| s.to_string());
            println!(
                "{name} version {}: status {status} ({outcome}) in {} ms",
                answer["version"], answer["duration"]
            );
            if let Some(failure) = answer.get("failure").filter(|f| !f.is_null()) {
                println!("failure:   {}", Escaped(&failure.to_string()));
            }
            if let Some(body) = answer["body"].as_str().filter(|b| !b.is_empty()) {
                println!("body:      {}", Escaped(body));
            }
            for line in answer["output"]["logs"].as_array().into_iter().flatten() {
                println!(
                    "  [{}] {}",
                    line["level"].as_str().unwrap_or("?"),
                    Escaped(line["message"].as_str().unwrap_or(""))
                );
            }
        }
    }
    Ok(match outcome.as_str() {
        "done" => EXIT_OK,
        "rejected" => EXIT_REJECTED,
        _ => EXIT_FAILED,
    })
}
