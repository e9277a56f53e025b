//! `eddy status`: one screen a person reads: hosts alive and dead, deployed functions and
//! versions, lag per group, dead letters, cronjobs with their next fire.

use clap::Args;
use serde_json::Value;

use super::{EXIT_OK, OutputFormat, RedisArgs};

/// Arguments of `eddy status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the hosts' Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// Runs `eddy status`.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let status = super::with_redis(args.redis.clone(), |mut conn| async move {
        anyhow::Ok(crate::status::status(&mut conn).await?)
    })?;
    if args.redis.output == OutputFormat::Json {
        println!("{status}");
        return Ok(EXIT_OK);
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let list = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    let redis = &status["redis"];
    let used = redis["used_memory"].as_u64().unwrap_or(0);
    let policy = text(&redis["maxmemory_policy"]);
    match redis["maxmemory"].as_u64().unwrap_or(0) {
        0 => println!(
            "REDIS\n  memory {} (no maxmemory)",
            bytesize::ByteSize::b(used).display().iec()
        ),
        max => println!(
            "REDIS\n  memory {} of {} ({}%), maxmemory-policy {policy}{}{}",
            bytesize::ByteSize::b(used).display().iec(),
            bytesize::ByteSize::b(max).display().iec(),
            used.saturating_mul(100) / max,
            if policy == "noeviction" {
                ""
            } else {
                " (WARNING: a full Redis deletes keys under this policy, streams and retry \
                 schedules among them; use noeviction)"
            },
            if redis["full"] == true {
                " FULL: writes are refused (OOM); trim streams (eddy streams retention) or raise \
                 maxmemory"
            } else {
                ""
            }
        ),
    }
    println!("HOSTS");
    for h in list("hosts") {
        println!(
            "  {:<32} {:<6} api {:<22} seen {} ms ago",
            text(&h["consumer"]),
            if h["alive"] == true { "alive" } else { "DEAD" },
            text(&h["api"]),
            text(&h["last_seen_ms_ago"])
        );
    }
    println!("FUNCTIONS");
    for f in list("functions") {
        println!(
            "  {:<32} version {:<4} sha256 {}",
            text(&f["name"]),
            text(&f["version"]),
            text(&f["digest"])
        );
    }
    println!("GROUPS");
    for g in list("groups") {
        println!(
            "  {:<32} group {:<24} lag {:<6} pending {}{}",
            text(&g["stream"]),
            text(&g["group"]),
            text(&g["lag"]),
            text(&g["pending"]),
            if g["lag_estimated"] == true {
                "  (lag estimated: Redis's counter is unknown or impossible; counted, at most 100)"
            } else {
                ""
            }
        );
    }
    let stopped = list("flow");
    if !stopped.is_empty() {
        println!("STOPPED TRIGGERS");
        for f in stopped {
            let since = match &f["breaker"] {
                serde_json::Value::Null => format!("since {}", text(&f["paused_since"])),
                b => format!(
                    "until {} ({} trips): {}",
                    text(&b["open_until"]),
                    text(&b["trips"]),
                    text(&b["reason"])
                ),
            };
            println!(
                "  {:<24} {:<24} {:<18} {since}",
                text(&f["function"]),
                text(&f["stream"]),
                text(&f["state"])
            );
        }
    }
    println!("DEAD LETTERS");
    for d in list("dead_letters") {
        println!("  {:<32} {}", text(&d["stream"]), text(&d["count"]));
    }
    println!("CRONJOBS");
    for c in list("cronjobs") {
        println!(
            "  {:<24} {:<16} next {:<22} last {}",
            text(&c["name"]),
            text(&c["schedule"]),
            text(&c["next"]),
            text(&c["last_fire"])
        );
    }
    Ok(EXIT_OK)
}
