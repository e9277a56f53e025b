//! `eddy replay NAME --from ID|TIME [--to ...]`: re-run a function over a range of its stream's
//! history (see [`crate::delivery::replay`]). Talks to Redis directly.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;

use super::RedisArgs;
use super::{EXIT_OK, OutputFormat};
use crate::delivery::replay as history;
use crate::wire;

/// Arguments of `eddy replay`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy replay order-projection --from -                      # the whole stream\n  \
    eddy replay order-projection --from 2h                     # the last two hours\n  \
    eddy replay order-projection --from 2026-11-24T08:00:00Z --to 2026-11-24T09:00:00Z\n  \
    eddy replay order-projection --from 1795542342286-0 --dry-run\n\n\
    The entries go to the function's own consumer group only (its retry schedule, due now, with\n\
    a replayedfrom=history extension); other groups of the stream do not see them again, and the\n\
    group's position in the stream does not move. The range ends at that position: entries the\n\
    group has not read yet reach it as usual. Hosts running the function must be up.")]
pub struct ReplayArgs {
    /// The function to re-run.
    pub name: String,
    /// Where to start: an entry id, an RFC 3339 time, a duration meaning that long ago (2h),
    /// or - for the start of the stream.
    #[arg(long, value_name = "ID|TIME")]
    pub from: String,
    /// Where to stop (inclusive): same forms as --from; default the end of the stream.
    #[arg(long, value_name = "ID|TIME", default_value = "+")]
    pub to: String,
    /// The stream, when the function has several stream triggers or is not deployed.
    #[arg(long)]
    pub stream: Option<String>,
    /// The consumer group (default: the trigger's, else the function's name).
    #[arg(long)]
    pub group: Option<String>,
    /// Count what would be re-run, without scheduling anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the hosts' Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The trigger a replay goes through.
struct Target {
    stream: String,
    group: String,
    types: Option<Vec<String>>,
    /// The group's position: entries after it are still to be delivered normally.
    last_delivered: String,
}

/// Finds the stream and group: from the flags, checked against the deployed manifest if any.
async fn target(conn: &mut crate::broker::Conn, args: &ReplayArgs) -> anyhow::Result<Target> {
    let deployed = crate::registry::current(conn, &args.name).await?;
    let triggers = match &deployed {
        Some(version) => {
            crate::manifest::parse_deployed(&args.name, &version.manifest)
                .context("reading the deployed manifest")?
                .streams
        }
        None => Vec::new(),
    };
    let chosen = match (&args.stream, triggers.as_slice()) {
        (Some(stream), _) => triggers.iter().find(|t| &t.stream == stream),
        (None, [only]) => Some(only),
        (None, []) => bail!(
            "function {:?} is not deployed (or has no stream trigger): name its stream with \
             --stream (and --group if it is not the function's name)",
            args.name
        ),
        (None, several) => bail!(
            "function {:?} reads several streams ({}): choose one with --stream",
            args.name,
            several
                .iter()
                .map(|t| t.stream.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let stream = args
        .stream
        .clone()
        .or_else(|| chosen.map(|t| t.stream.to_string()))
        .expect("a stream was chosen above");
    let group = args
        .group
        .clone()
        .or_else(|| chosen.map(|t| t.group.to_string()))
        .unwrap_or_else(|| args.name.clone());
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(conn)
        .await
        .unwrap_or_default();
    let text = |g: &std::collections::HashMap<String, redis::Value>, field: &str| {
        g.get(field)
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
    };
    let Some(last_delivered) = groups
        .iter()
        .find(|g| text(g, "name").as_deref() == Some(group.as_str()))
        .and_then(|g| text(g, "last-delivered-id"))
    else {
        bail!(
            "stream {stream:?} has no consumer group {group:?}: no host has run function {:?} \
             on it (start one, or name the group with --group)",
            args.name
        );
    };
    Ok(Target {
        stream,
        group,
        types: chosen.and_then(|t| t.types.clone()),
        last_delivered,
    })
}

/// Runs `eddy replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<u8> {
    let now = chrono::Utc::now().timestamp_millis();
    let from = history::position(&args.from, now).map_err(|e| anyhow::anyhow!("--from {e}"))?;
    let to = history::position(&args.to, now).map_err(|e| anyhow::anyhow!("--to {e}"))?;
    super::with_redis(args.redis.clone(), |mut conn| async move {
        let target = target(&mut conn, &args).await?;
        let to = history::cap_end(&to, &target.last_delivered);
        let human = args.redis.output == OutputFormat::Human;
        let (mut read, mut selected, mut scheduled) = (0usize, 0usize, 0usize);
        let mut start = from.clone();
        loop {
            let page = history::page(&mut conn, &target.stream, &start, &to).await?;
            let Some(last) = page.last() else { break };
            start = format!("({}", last.id);
            read += page.len();
            let chosen: Vec<_> = page
                .into_iter()
                .filter(|e| {
                    let fields = e.fields.as_deref().unwrap_or_default();
                    target.types.as_ref().is_none_or(|types| {
                        wire::event_type(fields).is_some_and(|t| types.iter().any(|x| x == t))
                    })
                })
                .collect();
            selected += chosen.len();
            if !args.dry_run {
                scheduled +=
                    history::schedule(&mut conn, &target.stream, &target.group, &chosen).await?;
            }
            if human {
                eprint!(
                    "\r{} {selected} entries of {} (read {read})",
                    if args.dry_run { "found" } else { "scheduled" },
                    target.stream
                );
                let _ = std::io::stderr().flush();
            }
        }
        if human && read > 0 {
            eprintln!();
        }
        match args.redis.output {
            OutputFormat::Json => println!(
                "{}",
                json!({
                    "function": args.name, "stream": target.stream, "group": target.group,
                    "from": from, "to": to, "read": read, "selected": selected,
                    "scheduled": scheduled, "dry_run": args.dry_run,
                })
            ),
            OutputFormat::Human if args.dry_run => println!(
                "{selected} entries of {} would be re-run by {} (group {})",
                target.stream, args.name, target.group
            ),
            OutputFormat::Human => println!(
                "scheduled {scheduled} entries of {} for {} (group {}){}",
                target.stream,
                args.name,
                target.group,
                if scheduled < selected {
                    format!("; {} were already waiting to run", selected - scheduled)
                } else {
                    String::new()
                }
            ),
        }
        Ok(EXIT_OK)
    })
}
