//! The `eddy` command line: argument parsing, logging set-up and exit codes.
//!
//! One module per command, each thin over the library. Output meant for people goes to stdout;
//! diagnostics go through `tracing` to stderr.

pub mod invoke;

use clap::{Parser, Subcommand, ValueEnum};
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

/// Eddy runs WebAssembly functions on events from Redis Streams and cron.
#[derive(Debug, Parser)]
#[command(
    name = "eddy",
    version,
    about = "Event-driven serverless runtime: Redis Streams and cron events run sandboxed WebAssembly functions.",
    after_help = "Examples:\n  \
        eddy invoke order_confirmation.wasm --data '{\"orderId\":\"o-1\",\"userId\":\"u-1\"}'\n  \
        eddy invoke echo.wasm --type OrderPlaced --config greeting=hi --output json\n\n\
        Exit codes: 0 done, 1 error, 2 usage, 3 rejected (4xx), 4 failed (5xx, trap, limit)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log filter for diagnostics on stderr (e.g. `info`, `eddy=debug`); `RUST_LOG` also works.
    #[arg(long, global = true, env = "EDDY_LOG", default_value = "warn")]
    pub log_level: String,

    /// Log format for diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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
    /// Run a function component once on one event, locally, without Redis.
    Invoke(invoke::InvokeArgs),
}

impl Cli {
    /// Runs the parsed command and returns the process exit code.
    pub fn run(self) -> ExitCode {
        init_tracing(&self.log_level, self.log_format);
        let result = match self.command {
            Command::Invoke(args) => invoke::run(args),
        };
        match result {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                // One line, the whole context chain, no backtrace: this is for a person.
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

fn init_tracing(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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

/// Parses a byte size such as `64MiB`, `512k` or `1048576`.
pub fn parse_bytes(input: &str) -> Result<u64, String> {
    input
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{input:?}: expected a size such as 64MiB or 512KiB ({e})"))
}

/// Parses a duration such as `500ms`, `30s` or `2m`.
pub fn parse_duration(input: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(input)
        .map_err(|e| format!("{input:?}: expected a duration such as 500ms, 30s or 2m ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 * 1024 * 1024);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
