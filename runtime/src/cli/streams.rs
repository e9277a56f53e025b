//! `eddy streams ls|retention`: what each stream keeps. Hosts trim every stream a trigger reads
//! (7 days by default) and every dead-letter stream (30 days), never below what a consumer
//! group still needs; `retention` sets a stream's own policy. See [`crate::retention`].

use clap::{Args, Subcommand};

use super::{EXIT_OK, OutputFormat, RedisArgs};
use crate::retention::{self, Retention};

/// Arguments of `eddy streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StreamsCommand,

    /// Where the hosts' Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The streams subcommands.
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// List streams with a retention policy: where it came from, length, entries trimmed, and
    /// entries held back because a group is behind.
    Ls,
    /// Show or set what a stream keeps.
    #[command(after_help = "Examples:\n  \
        eddy streams retention orders                       # show\n  \
        eddy streams retention orders --max-age 3d          # keep 3 days\n  \
        eddy streams retention orders --max-len 1000000     # keep the last million\n  \
        eddy streams retention orders.dlq --max-age 90d --max-len 100000   # whichever trims more\n  \
        eddy streams retention audit --keep-all             # never trim\n  \
        eddy streams retention orders --reset               # back to the manifest's or the default\n\n\
        Trimming never removes an entry a consumer group has not read or has pending; such\n\
        entries are counted as held back until the group catches up. An event waiting for a\n\
        retry keeps its own copy, so it runs the same after its entry is trimmed.")]
    Retention {
        /// The stream.
        stream: String,
        /// Keep entries at most this long (by their id's time), from 1s to 3650d.
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
        /// Keep at most this many entries, from 1.
        #[arg(long, value_name = "N")]
        max_len: Option<u64>,
        /// Never trim this stream.
        #[arg(long, conflicts_with_all = ["max_age", "max_len", "reset"])]
        keep_all: bool,
        /// Remove the policy set here: the manifest's policy or the default applies again.
        #[arg(long, conflicts_with_all = ["max_age", "max_len"])]
        reset: bool,
    },
}

/// Runs `eddy streams`.
pub fn run(args: StreamsArgs) -> anyhow::Result<u8> {
    let output = args.redis.output;
    super::with_redis(args.redis.clone(), |mut conn| async move {
        match args.command {
            StreamsCommand::Ls => {
                let rows = retention::overview(&mut conn).await?;
                match output {
                    OutputFormat::Json => println!("{}", serde_json::to_string(&rows)?),
                    OutputFormat::Human if rows.is_empty() => {
                        println!(
                            "no stream has a retention policy (no trigger runs and none is set)"
                        )
                    }
                    OutputFormat::Human => {
                        println!(
                            "{:<32} {:<9} {:<28} {:>10} {:>10} {:>10}",
                            "STREAM", "SOURCE", "KEEPS", "LENGTH", "TRIMMED", "HELD BACK"
                        );
                        for row in rows {
                            println!(
                                "{:<32} {:<9} {:<28} {:>10} {:>10} {:>10}",
                                row.stream,
                                serde_json::to_value(row.source)?.as_str().unwrap_or("-"),
                                row.keeps,
                                row.length,
                                row.trimmed,
                                row.held_back
                            );
                        }
                    }
                }
            }
            StreamsCommand::Retention {
                stream,
                max_age,
                max_len,
                keep_all,
                reset,
            } => {
                crate::names::StreamName::check(&stream)?;
                let change = if reset {
                    Some(None)
                } else if keep_all {
                    Some(Some(Retention::default()))
                } else if max_age.is_some() || max_len.is_some() {
                    let policy = Retention::parse(max_age.as_deref(), max_len).map_err(|e| {
                        anyhow::anyhow!(
                            "--{} {}: expected {}",
                            e.field.replace('_', "-"),
                            e.value,
                            e.expected
                        )
                    })?;
                    Some(Some(policy))
                } else {
                    None
                };
                if let Some(policy) = change {
                    retention::put_policy(&mut conn, &stream, policy).await?;
                }
                let row = retention::overview(&mut conn)
                    .await?
                    .into_iter()
                    .find(|row| row.stream == stream);
                match (output, row) {
                    (OutputFormat::Json, row) => println!("{}", serde_json::to_string(&row)?),
                    (OutputFormat::Human, None) => println!(
                        "{stream}: keeps everything (no trigger reads it and no policy is set)"
                    ),
                    (OutputFormat::Human, Some(row)) => println!(
                        "{stream}: keeps {} ({}); length {}, trimmed {}, held back {}",
                        row.keeps,
                        serde_json::to_value(row.source)?.as_str().unwrap_or("-"),
                        row.length,
                        row.trimmed,
                        row.held_back
                    ),
                }
            }
        }
        Ok(EXIT_OK)
    })
}
