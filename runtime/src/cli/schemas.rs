//! `eddy schemas put|ls|show|rm`: event schemas, one JSON Schema per event type, versioned. A
//! new version is checked against the previous one (`backward` by default); the latest one is
//! enforced at ingress, on functions' publishes and on triggers with `validate = true`. See
//! [`crate::schemas`].

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{EXIT_OK, OutputFormat, RedisArgs};
use crate::schemas::{self, Compatibility, MAX_SCHEMA_BYTES, SchemaError};

/// Arguments of `eddy schemas`.
#[derive(Debug, Args)]
pub struct SchemasArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SchemasCommand,

    /// Where the hosts' Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The schemas subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Store a new version of an event type's schema (JSON Schema, from a file or `-`).
    #[command(after_help = "Examples:\n  \
        eddy schemas put OrderPlaced schemas/order-placed.json\n  \
        eddy schemas put OrderPlaced v3.json --compatibility none   # accept a breaking change\n\n\
        With `backward` (the default, kept per type), a new version may add optional fields and\n\
        widen types, but not add a required field, narrow a type, tighten a bound, close the\n\
        object or make a required field optional; what breaks is listed by path. Putting the\n\
        latest version again changes nothing. Hosts enforce a change within a second.")]
    Put {
        /// The event type (the `type` attribute), e.g. OrderPlaced.
        event_type: String,
        /// The schema file (JSON), or `-` for stdin.
        file: std::path::PathBuf,
        /// How this version must relate to the previous one (default: the type's mode, which
        /// its first version sets; `none` here accepts one breaking version, and the next put is
        /// checked as before).
        #[arg(long, value_enum)]
        compatibility: Option<Compatibility>,
    },
    /// List event types with a schema: latest version, mode, when it was put.
    Ls,
    /// Print a type's schema (the latest version, or `--version N`).
    Show {
        /// The event type.
        event_type: String,
        /// Which version.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Remove every version of a type's schema: its events are no longer checked.
    Rm {
        /// The event type.
        event_type: String,
    },
}

fn explain(error: SchemaError) -> anyhow::Error {
    match error {
        SchemaError::Incompatible {
            event_type,
            version,
            previous,
            breaks,
        } => {
            let lines: Vec<String> = breaks.iter().map(|b| format!("  {b}")).collect();
            anyhow::anyhow!(
                "version {version} of {event_type:?} is not backward compatible with version \
                 {previous}:\n{}\n(fix the schema, or put it with --compatibility none if every \
                 producer and consumer changes with it)",
                lines.join("\n")
            )
        }
        other => anyhow::anyhow!("{other}"),
    }
}

/// Runs `eddy schemas`.
pub fn run(args: SchemasArgs) -> anyhow::Result<u8> {
    let output = args.redis.output;
    super::with_redis(args.redis.clone(), |mut conn| async move {
        match args.command {
            SchemasCommand::Put {
                event_type,
                file,
                compatibility,
            } => {
                let limit = MAX_SCHEMA_BYTES as u64 + 1;
                let text = if file.as_os_str() == "-" {
                    crate::inputs::read_capped_from(std::io::stdin(), limit)
                } else {
                    crate::inputs::read_capped(&file, limit)
                }
                .with_context(|| format!("cannot read the schema {}", file.display()))?;
                let info = schemas::put(&mut conn, &event_type, &text, compatibility)
                    .await
                    .map_err(explain)?;
                match output {
                    OutputFormat::Json => println!("{}", serde_json::to_string(&info)?),
                    OutputFormat::Human => println!(
                        "{} schema version {} ({} compatibility)",
                        info.event_type,
                        info.version,
                        serde_json::to_value(info.compatibility)?
                            .as_str()
                            .unwrap_or("-")
                    ),
                }
            }
            SchemasCommand::Ls => {
                let all = schemas::list(&mut conn).await.map_err(explain)?;
                match output {
                    OutputFormat::Json => println!("{}", serde_json::to_string(&all)?),
                    OutputFormat::Human if all.is_empty() => {
                        println!("no event type has a schema (eddy schemas put TYPE FILE)")
                    }
                    OutputFormat::Human => {
                        println!("{:<40} {:>7} {:<10} UPDATED", "TYPE", "VERSION", "MODE");
                        for info in all {
                            let when = chrono::DateTime::from_timestamp_millis(info.updated_ms)
                                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                                .unwrap_or_default();
                            println!(
                                "{:<40} {:>7} {:<10} {when}",
                                info.event_type,
                                info.version,
                                serde_json::to_value(info.compatibility)?
                                    .as_str()
                                    .unwrap_or("-"),
                            );
                        }
                    }
                }
            }
            SchemasCommand::Show {
                event_type,
                version,
            } => {
                let Some((_, version, schema)) = schemas::get(&mut conn, &event_type, version)
                    .await
                    .map_err(explain)?
                else {
                    anyhow::bail!(
                        "event type {event_type:?} has no schema{}",
                        version.map(|v| format!(" version {v}")).unwrap_or_default()
                    );
                };
                match output {
                    OutputFormat::Json => println!(
                        "{}",
                        serde_json::json!({"type": event_type, "version": version, "schema": schema})
                    ),
                    OutputFormat::Human => {
                        println!("# {event_type} version {version}");
                        println!("{}", serde_json::to_string_pretty(&schema)?);
                    }
                }
            }
            SchemasCommand::Rm { event_type } => {
                if !schemas::remove(&mut conn, &event_type)
                    .await
                    .map_err(explain)?
                {
                    anyhow::bail!("event type {event_type:?} has no schema");
                }
                if output == OutputFormat::Human {
                    println!("removed every version of {event_type}'s schema");
                }
            }
        }
        Ok(EXIT_OK)
    })
}
