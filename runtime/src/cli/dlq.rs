//! `eddy dlq ls|show|replay|purge`: look at dead letters and put them back once the cause is
//! fixed. Talks to Redis directly (`--redis`, or the private Redis of a host in `--data-dir`).

use std::io::Write as _;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{EXIT_OK, OutputFormat, RedisArgs};
use crate::delivery::dead_letter::admin::{self as letters_admin, StoredLetter};
use crate::names::Escaped;

/// Arguments of `eddy dlq`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy dlq ls                                   # counts and newest reason per function\n  \
    eddy dlq show order-confirmation 1795542342286-0\n  \
    eddy dlq replay order-confirmation --all --dry-run\n  \
    eddy dlq replay order-confirmation --entry 1795542342286-0\n  \
    eddy dlq purge order-confirmation --yes\n\n\
    A replayed event goes back to the group that failed it (not to the other groups of its\n\
    stream), attempt count reset, with a replayedfrom extension naming the dead letter.")]
pub struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,

    /// Where the hosts' Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The dlq subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters per function: how many, and the newest reason.
    Ls {
        /// Only this function.
        name: Option<String>,
    },
    /// One dead letter, every field.
    Show {
        /// The function.
        name: String,
        /// The dead letter's entry id.
        entry: String,
    },
    /// Put dead letters back: each is handled again by the function that failed it.
    Replay {
        /// The function.
        name: String,
        /// A dead letter's entry id (repeatable).
        #[arg(
            long = "entry",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        entries: Vec<String>,
        /// Every dead letter of the function.
        #[arg(long)]
        all: bool,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete every dead letter of a function.
    Purge {
        /// The function.
        name: String,
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs `eddy dlq`.
pub fn run(args: DlqArgs) -> anyhow::Result<u8> {
    super::with_redis(args.redis.clone(), |mut conn| async move {
        match &args.command {
            DlqCommand::Ls { name } => {
                let letters = letters_admin::letters(&mut conn, name.as_deref()).await?;
                let mut by_function: std::collections::BTreeMap<String, Vec<&StoredLetter>> =
                    Default::default();
                for letter in &letters {
                    by_function
                        .entry(letter.get("eddy.function").unwrap_or_else(|| "?".into()))
                        .or_default()
                        .push(letter);
                }
                let rows: Vec<serde_json::Value> = by_function
                    .iter()
                    .map(|(function, letters)| {
                        let newest = letters
                            .iter()
                            .max_by_key(|l| l.get("eddy.last_failure"))
                            .copied();
                        json!({
                            "function": function,
                            "count": letters.len(),
                            "newest": newest.map(|l| json!({
                                "stream": l.stream,
                                "entry": l.id,
                                "reason": l.get("eddy.reason"),
                                "error": l.get("eddy.error"),
                                "time": l.get("eddy.last_failure"),
                            })),
                        })
                    })
                    .collect();
                match args.redis.output {
                    OutputFormat::Json => println!("{}", serde_json::Value::Array(rows)),
                    OutputFormat::Human if rows.is_empty() => println!("no dead letters"),
                    OutputFormat::Human => {
                        for row in rows {
                            let newest = &row["newest"];
                            // The error is a guest's text: escaped, so it cannot pose as
                            // another line or drive the terminal.
                            println!(
                                "{:<24} {:>6}  newest {} in {}: {} ({})",
                                row["function"].as_str().unwrap_or("?"),
                                row["count"],
                                newest["entry"].as_str().unwrap_or("-"),
                                newest["stream"].as_str().unwrap_or("-"),
                                Escaped(newest["reason"].as_str().unwrap_or("-")),
                                Escaped(newest["error"].as_str().unwrap_or("-")),
                            );
                        }
                    }
                }
            }
            DlqCommand::Show { name, entry } => {
                let letters = letters_admin::letters(&mut conn, Some(name)).await?;
                let Some(letter) = letters.iter().find(|l| l.id == *entry) else {
                    bail!("no dead letter {entry} of function {name:?} (`eddy dlq ls {name}`)");
                };
                let text =
                    |fields: &[(String, Vec<u8>)]| -> serde_json::Map<String, serde_json::Value> {
                        fields
                            .iter()
                            .map(|(k, v)| {
                                (k.clone(), String::from_utf8_lossy(v).into_owned().into())
                            })
                            .collect()
                    };
                let original = text(&letter.original());
                let eddy = text(letter.eddy_fields());
                // `fields`: the original's with Eddy's over them (Eddy's are authoritative);
                // `original`: exactly what the producer wrote.
                let mut fields = original.clone();
                fields.extend(eddy.clone());
                match args.redis.output {
                    OutputFormat::Json => println!(
                        "{}",
                        json!({
                            "stream": letter.stream,
                            "entry": letter.id,
                            "fields": fields,
                            "original": original,
                        })
                    ),
                    OutputFormat::Human => {
                        println!("{} in {}", letter.id, letter.stream);
                        for (k, v) in &eddy {
                            println!("  {k:<18} {}", Escaped(v.as_str().unwrap_or_default()));
                        }
                        println!("  original entry:");
                        for (k, v) in &original {
                            println!(
                                "    {:<16} {}",
                                Escaped(k),
                                Escaped(v.as_str().unwrap_or_default())
                            );
                        }
                    }
                }
            }
            DlqCommand::Replay {
                name,
                entries,
                all,
                dry_run,
            } => {
                let letters: Vec<StoredLetter> = letters_admin::letters(&mut conn, Some(name))
                    .await?
                    .into_iter()
                    .filter(|l| *all || entries.contains(&l.id))
                    .collect();
                if let Some(missing) = entries
                    .iter()
                    .find(|id| !letters.iter().any(|l| &l.id == *id))
                {
                    bail!("no dead letter {missing} of function {name:?} (`eddy dlq ls {name}`)");
                }
                let total = letters.len();
                let mut replayed = 0;
                let progress = args.redis.output == OutputFormat::Human && total > 1 && !*dry_run;
                for (i, letter) in letters.iter().enumerate() {
                    if *dry_run {
                        if args.redis.output == OutputFormat::Human {
                            println!(
                                "would replay {} ({})",
                                letter.id,
                                letter.get("eddy.reason").unwrap_or_default()
                            );
                        }
                        continue;
                    }
                    if letters_admin::replay(&mut conn, letter).await? {
                        replayed += 1;
                    }
                    if progress {
                        eprint!("\rreplaying {}/{total}", i + 1);
                        let _ = std::io::stderr().flush();
                    }
                }
                if progress {
                    eprintln!();
                }
                match args.redis.output {
                    OutputFormat::Json => println!(
                        "{}",
                        json!({ "function": name, "selected": total, "replayed": replayed, "dry_run": dry_run })
                    ),
                    OutputFormat::Human if *dry_run => {
                        println!("{total} dead letter(s) would be replayed")
                    }
                    OutputFormat::Human => println!(
                        "replayed {replayed} of {total} dead letter(s) of {name}{}",
                        if replayed < total {
                            " (the rest were already gone)"
                        } else {
                            ""
                        }
                    ),
                }
            }
            DlqCommand::Purge { name, yes } => {
                if !yes {
                    bail!("purging deletes every dead letter of {name:?} for good: add --yes");
                }
                let letters = letters_admin::letters(&mut conn, Some(name)).await?;
                let mut purged = 0;
                for letter in &letters {
                    if letters_admin::purge(&mut conn, letter).await? {
                        purged += 1;
                    }
                }
                match args.redis.output {
                    OutputFormat::Json => {
                        println!("{}", json!({ "function": name, "purged": purged }))
                    }
                    OutputFormat::Human => println!("purged {purged} dead letter(s) of {name}"),
                }
            }
        }
        Ok(EXIT_OK)
    })
}
