//! `eddy logs NAME` and `eddy trace EVENT_ID`: what happened to events, from the invocation
//! records hosts keep in Redis (see [`crate::records`]).

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;

use super::{EXIT_OK, OutputFormat, RedisArgs};
use crate::names::Escaped;
use crate::records::{self, Record};

/// Arguments of `eddy logs`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy logs order-confirmation --failed\n  \
    eddy logs order-confirmation --event order-1001\n  \
    eddy logs order-confirmation --follow")]
pub struct LogsArgs {
    /// The function.
    pub name: String,
    /// Only invocations that did not succeed.
    #[arg(long)]
    pub failed: bool,
    /// Only invocations of this event id.
    #[arg(long, value_name = "ID")]
    pub event: Option<String>,
    /// Keep printing new records as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Where the records are.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// Arguments of `eddy trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// An event id: every invocation of its flow (same correlation id) is shown, in order.
    pub event_id: String,
    /// Where the records are.
    #[command(flatten)]
    pub redis: RedisArgs,
}

fn print(record: &Record, output: OutputFormat) {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string(record).unwrap_or_default()),
        OutputFormat::Human => {
            println!(
                "{} {} event {} ({}) attempt {} -> {} {} in {:.2} ms on {}{}",
                record.time,
                record.function,
                Escaped(&record.event_id),
                Escaped(&record.event_type),
                record.attempt,
                record.outcome,
                record.status.map_or("-".to_owned(), |s| s.to_string()),
                record.duration_ms,
                Escaped(&record.host),
                record
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", Escaped(e)))
                    .unwrap_or_default()
            );
            for line in record.logs.lines() {
                println!("    {}", Escaped(line));
            }
        }
    }
}

/// Runs `eddy logs`.
pub fn run_logs(args: LogsArgs) -> anyhow::Result<u8> {
    super::with_redis(args.redis.clone(), |mut conn| async move {
        // Where following picks up: taken before the listing, so nothing falls in between
        // (a record both listed and followed is shown once, by its key).
        let mut cursor = records::cursor(&mut conn).await?;
        let mut found =
            records::logs(&mut conn, &args.name, args.failed, args.event.as_deref()).await?;
        found.reverse(); // oldest first
        if found.is_empty() && args.redis.output == OutputFormat::Human {
            println!("no invocation records for {} yet", args.name);
        }
        let mut shown: HashSet<String> = found.iter().map(Record::key).collect();
        for record in &found {
            print(record, args.redis.output);
        }
        if !args.follow {
            return Ok(EXIT_OK);
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Only what was written since the last look: a busy stream is not read again.
            for record in records::newer(&mut conn, &mut cursor).await? {
                let wanted = record.function == args.name
                    && (!args.failed || record.outcome != "done")
                    && args.event.as_deref().is_none_or(|e| record.event_id == e);
                if wanted && shown.insert(record.key()) {
                    print(&record, args.redis.output);
                }
            }
            // Keys of records printed long ago can go: following never sees them again.
            if shown.len() > 4 * records::RECORDS_PER_FUNCTION {
                shown.clear();
            }
        }
    })
}

/// Runs `eddy trace`.
pub fn run_trace(args: TraceArgs) -> anyhow::Result<u8> {
    super::with_redis(args.redis.clone(), |mut conn| async move {
        let found = records::trace(&mut conn, &args.event_id).await?;
        if found.is_empty() {
            anyhow::bail!(
                "no invocation records for event {:?} (records are kept within the --records-budget of the hosts, newest first)",
                args.event_id
            );
        }
        for record in &found {
            print(record, args.redis.output);
        }
        Ok(EXIT_OK)
    })
}
