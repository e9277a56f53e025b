//! The `eddy` command line: argument parsing, logging set-up and exit codes.
//!
//! One module per command, each thin over the library. Output meant for people goes to stdout;
//! diagnostics go through `tracing` to stderr.

pub mod build;
pub mod client;
pub mod cron;
pub mod deploy;
pub mod dev;
pub mod dlq;
pub mod invoke;
pub mod kv;
pub mod logs;
pub mod new;
pub mod probe;
pub mod publish;
pub mod replay;
pub mod schemas;
pub mod status;
pub mod streams;
pub mod up;

use crate::broker::embedded::DEFAULT_DATA_DIR;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code of a command that completed (for `invoke`: the function returned 2xx).
pub const EXIT_OK: u8 = 0;
/// Exit code of bad input or an error before the function ran (missing file, not a component).
pub const EXIT_ERROR: u8 = 1;
/// Exit code clap uses for a malformed command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `eddy invoke` when the function rejected the event (4xx).
pub const EXIT_REJECTED: u8 = 3;
/// Exit code of `eddy invoke` when the function failed (5xx, trap, timeout, memory limit).
pub const EXIT_FAILED: u8 = 4;

/// What `eddy --version` prints: the crate version, the commit built from and the WIT
/// contract the host implements (stamped by build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EDDY_COMMIT"),
    ", contract ",
    env!("EDDY_CONTRACT"),
    ")"
);

/// Eddy runs WebAssembly functions on events from Redis Streams and cron.
#[derive(Debug, Parser)]
#[command(
    name = "eddy",
    version = VERSION,
    about = "Event-driven serverless runtime: Redis Streams and cron events run sandboxed WebAssembly functions.",
    after_help = "Examples:\n  \
        eddy up --functions examples/order-placed/functions/order-confirmation.toml\n  \
        eddy invoke order_confirmation.wasm --data '{\"orderId\":\"o-1\",\"userId\":\"u-1\"}'\n  \
        eddy invoke echo.wasm --type OrderPlaced --config greeting=hi --output json\n\n\
        Exit codes: 0 done, 1 error, 2 usage, 3 rejected (4xx), 4 failed (5xx, trap, limit)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log filter for diagnostics on stderr (e.g. `info`, `eddy=debug`); `RUST_LOG` also
    /// works. Default: `info` for `eddy up`, `warn` for the rest.
    #[arg(long, global = true, env = "EDDY_LOG")]
    pub log_level: Option<String>,

    /// Log format for diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Where the hosts' Redis is, and how to print: the arguments of every Redis-direct command
/// (global, so commands with subcommands take them after the subcommand too).
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// The Redis the hosts use. Default: the private one of a host started in --data-dir.
    #[arg(long, global = true, env = "EDDY_REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,

    /// Where a host without --redis keeps its private Redis.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// How diagnostics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Human,
    /// One JSON document, for scripts.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a host: run functions on the events of Redis streams.
    Up(up::UpArgs),
    /// Run a function component once on one event, locally, without Redis.
    Invoke(invoke::InvokeArgs),
    /// Manage cronjobs: schedules that emit events into a stream.
    Cron(cron::CronArgs),
    /// Publish one event through a running host's HTTP API.
    Publish(publish::PublishArgs),
    /// Dead letters: list, show, replay, purge.
    Dlq(dlq::DlqArgs),
    /// Streams' retention: what each keeps, and setting it.
    Streams(streams::StreamsArgs),
    /// Event schemas: put a new version (checked for compatibility), ls, show, rm.
    Schemas(schemas::SchemasArgs),
    /// Functions' key-value state: ls, get, set, del.
    Kv(kv::KvArgs),
    /// A function's invocation records (--failed, --event ID, --follow).
    Logs(logs::LogsArgs),
    /// Every invocation an event's flow caused, across functions, in order.
    Trace(logs::TraceArgs),
    /// Re-run a function over a range of its stream's history (rebuild a projection).
    Replay(replay::ReplayArgs),
    /// The cluster on one screen: hosts, functions, lag, dead letters, cronjobs.
    Status(status::StatusArgs),
    /// Ask a host whether it is alive or ready (for health checks and probes).
    Probe(probe::ProbeArgs),
    /// Create a function project (Rust, JavaScript or Python) in a new folder, ready to build.
    New(new::NewArgs),
    /// Build a function project, run it on a private host, and rebuild and swap it on every change.
    Dev(dev::DevArgs),
    /// Build a function from source (Rust, JavaScript or Python) without deploying it.
    Build(build::BuildArgs),
    /// Deploy a function to the running hosts (no restart).
    Deploy(deploy::DeployArgs),
    /// List, show, remove or roll back deployed functions.
    Functions(deploy::FunctionsArgs),
    /// Print a shell completion script: `eddy completions bash > ~/.local/share/bash-completion/completions/eddy`.
    Completions(CompletionsArgs),
}

/// Arguments of `eddy completions`.
#[derive(Debug, Args)]
#[command(after_help = "Install:\n  \
    bash: eddy completions bash > ~/.local/share/bash-completion/completions/eddy\n  \
    zsh:  eddy completions zsh > ~/.zfunc/_eddy   (with `fpath+=~/.zfunc; autoload -U compinit; compinit` in ~/.zshrc)\n  \
    fish: eddy completions fish > ~/.config/fish/completions/eddy.fish")]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl Cli {
    /// Runs the parsed command and returns the process exit code.
    pub fn run(self) -> ExitCode {
        let default_level = match self.command {
            Command::Up(_) => "info",
            Command::Dev(_) => "error",
            Command::Invoke(_)
            | Command::Cron(_)
            | Command::Publish(_)
            | Command::Deploy(_)
            | Command::Build(_)
            | Command::New(_)
            | Command::Completions(_)
            | Command::Dlq(_)
            | Command::Streams(_)
            | Command::Schemas(_)
            | Command::Probe(_)
            | Command::Kv(_)
            | Command::Status(_)
            | Command::Logs(_)
            | Command::Trace(_)
            | Command::Replay(_)
            | Command::Functions(_) => "warn",
        };
        init_tracing(
            self.log_level.as_deref().unwrap_or(default_level),
            self.log_format,
        );
        let result = match self.command {
            Command::Up(args) => up::run(args),
            Command::Invoke(args) => invoke::run(args),
            Command::Cron(args) => cron::run(args),
            Command::Publish(args) => publish::run(args),
            Command::Deploy(args) => deploy::run(args),
            Command::Build(args) => build::run(args),
            Command::New(args) => new::run(args),
            Command::Dev(args) => dev::run(args),
            Command::Completions(args) => {
                use clap::CommandFactory as _;
                clap_complete::generate(
                    args.shell,
                    &mut Cli::command(),
                    "eddy",
                    &mut std::io::stdout(),
                );
                Ok(EXIT_OK)
            }
            Command::Dlq(args) => dlq::run(args),
            Command::Streams(args) => streams::run(args),
            Command::Schemas(args) => schemas::run(args),
            Command::Probe(args) => probe::run(args),
            Command::Kv(args) => kv::run(args),
            Command::Status(args) => status::run(args),
            Command::Logs(args) => logs::run_logs(args),
            Command::Trace(args) => logs::run_trace(args),
            Command::Replay(args) => replay::run(args),
            Command::Functions(args) => deploy::run_functions(args),
        };
        match result {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                // One line, the whole context chain, no backtrace: this is for a person.
                eprintln!("error: {}", one_line(&error));
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

/// An error and its causes on one line, each cause once: an error whose message already ends
/// with its cause's (thiserror's `{source}`, `redis: {0}`) does not repeat it.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

fn init_tracing(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let text = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| filter.to_owned());
    let mut filter = EnvFilter::try_new(&text).unwrap_or_else(|_| EnvFilter::new("warn"));
    if !text.contains("redis") {
        // The Redis client warns every second about each cluster node it cannot reach; Eddy
        // reports Redis trouble itself (its own warnings, eddy_redis_errors_total), once.
        // Asking for `redis=…` in the filter brings the client's lines back.
        filter = filter.add_directive("redis=error".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).try_init(),
        // JSON escapes every control character by itself.
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The text log format's fields with control characters escaped. Guests' log lines, event ids,
/// error messages and other values from outside reach the host's log; unescaped, a line break
/// in one would print a line that looks like the host's own.
struct EscapedFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: tracing_subscriber::fmt::format::Writer<'writer>,
    first: bool,
    result: std::fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let escaped = crate::names::Escaped(value);
        self.result = match field.name() {
            "message" => write!(self.writer, "{separator}{escaped}"),
            name => write!(self.writer, "{separator}{name}={escaped}"),
        };
    }
}

impl tracing::field::Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// Parses `key=value`, naming the argument and the expected form on error.
pub fn parse_key_value(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "{input:?}: expected KEY=VALUE with a non-empty KEY"
        )),
    }
}

pub use crate::units::{parse_bytes, parse_duration};

/// A flag's parser for a duration greater than zero and at most `max`.
pub fn duration_up_to(
    max: std::time::Duration,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone + Send + Sync + 'static {
    move |input| {
        let value = parse_duration(input)?;
        if value.is_zero() || value > max {
            return Err(format!(
                "{input:?}: expected more than 0 and at most {}",
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }
}

/// A flag's parser for a duration from `min` to `max`.
pub fn duration_within(
    min: std::time::Duration,
    max: std::time::Duration,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone + Send + Sync + 'static {
    move |input| {
        let value = parse_duration(input)?;
        if !(min..=max).contains(&value) {
            return Err(format!(
                "{input:?}: expected from {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }
}

/// A flag's parser for a duration from 0 to `max` (0 meaning "none", e.g. no grace).
pub fn duration_zero_to(
    max: std::time::Duration,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone + Send + Sync + 'static {
    move |input| {
        let value = parse_duration(input)?;
        if value > max {
            return Err(format!(
                "{input:?}: expected at most {}",
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }
}

/// A flag's parser for a size from `min` to `max` bytes.
pub fn bytes_within(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |input| {
        let value = parse_bytes(input)?;
        if !(min..=max).contains(&value) {
            return Err(format!(
                "{input:?}: expected at least {min} and at most {max} bytes ({})",
                bytesize::ByteSize::b(max)
            ));
        }
        Ok(value)
    }
}

/// A flag's parser for a count from `min` to `max` (clap's own, which names the range).
pub fn count_within(min: usize, max: usize) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min as u64..=max as u64)
}

/// Runs `work` on a connection to the hosts' Redis (`--redis`, else the private one in
/// `--data-dir`), in a small runtime of its own: what every Redis-direct command does.
pub fn with_redis<T, F, Fut>(target: RedisArgs, work: F) -> anyhow::Result<T>
where
    F: FnOnce(crate::broker::Conn) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let url = redis_url(target.redis.as_deref(), &target.data_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let broker = crate::broker::Broker::connect(&url).await?;
        work(broker.shared()).await
    })
}

/// The Redis a command that talks to Redis directly uses: `--redis`, else the private one of a
/// host started in `data_dir`.
pub fn redis_url(redis: Option<&str>, data_dir: &std::path::Path) -> anyhow::Result<String> {
    if let Some(url) = redis {
        return Ok(url.to_owned());
    }
    let socket = data_dir.join("redis.sock");
    if !socket.exists() {
        anyhow::bail!(
            "no Redis given and no running host in {}: pass --redis URL (or set \
             EDDY_REDIS_URL), or start `eddy up` there first",
            data_dir.display()
        );
    }
    let socket = anyhow::Context::context(socket.canonicalize(), "resolving the Redis socket")?;
    Ok(format!("unix://{}", socket.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let wrapped = anyhow::Error::new(crate::manifest::ManifestError::Read {
            path: "x/eddy.toml".into(),
            source: io,
        })
        .context("cannot deploy");
        assert_eq!(
            one_line(&wrapped),
            "cannot deploy: x/eddy.toml: cannot read the manifest: no such file"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }

    #[test]
    fn key_values_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_key_value("=b").unwrap_err().contains("\"=b\""));
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn control_characters_in_log_values_are_escaped() {
        let shown = crate::names::Escaped("ok\nFORGED INFO eddy\u{1b}[31m\u{202e}").to_string();
        assert_eq!(shown, "ok\\nFORGED INFO eddy\\u{1b}[31m\\u{202e}");
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
