//! `eddy cron create|ls|rm`: cronjobs, schedules that emit an event into a stream with no wasm
//! involved. They live in Redis (the `eddy:cronjobs` hash), so every host runs them and they
//! survive restarts; hosts pick up a change within a second.

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{EXIT_OK, OutputFormat, RedisArgs};
use crate::triggers::cron::store::{self, StoreError};
use crate::triggers::cron::{CatchUp, CronJob};

/// Arguments of `eddy cron`.
#[derive(Debug, Args)]
pub struct CronArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CronCommand,

    /// Where the hosts' Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The cron subcommands.
#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Create a cronjob that emits an event into a stream on a schedule.
    #[command(after_help = "Examples:\n  \
        eddy cron create daily-report --schedule '0 0 0 * * *' --stream reports --type DailyReportRequired\n  \
        eddy cron create heartbeat --schedule '*/10 * * * * *' --stream beats --type Beat --data '{\"from\":\"cron\"}'\n  \
        eddy cron create paris-9am --schedule '0 9 * * 1-5' --timezone Europe/Paris --stream s --type T\n\n\
        Each tick adds one event with id cron:<name>:<scheduled unix time>, time = the scheduled\n\
        time and a firedtime extension, once per tick however many hosts run.")]
    Create {
        /// A simple name: lowercase letters, digits, - and _.
        name: String,
        /// 6 fields with seconds (sec min hour day-of-month month day-of-week), or 5 (second 0).
        #[arg(long)]
        schedule: String,
        /// IANA timezone the schedule is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// The stream the events go to.
        #[arg(long)]
        stream: String,
        /// The events' type.
        #[arg(long = "type")]
        event_type: String,
        /// The events' JSON payload.
        #[arg(long, default_value = "{}")]
        data: String,
        /// Ticks missed while no host ran (older than --late-grace): none, latest (fire the
        /// newest) or all (up to 100).
        #[arg(long, value_enum, default_value_t = CatchUp::Latest)]
        catch_up: CatchUp,
        /// How late a tick may be and still fire as an ordinary late tick (a host stalled, or
        /// the schedule picked up by another host); older ticks are missed and --catch-up
        /// decides them. 0s: every tick not fired on time is missed. At most 1h.
        #[arg(long, value_name = "DURATION", default_value = "60s",
            value_parser = super::duration_zero_to(crate::triggers::cron::MAX_LATE_GRACE))]
        late_grace: std::time::Duration,
    },
    /// List cronjobs with their next and last fire times.
    Ls,
    /// Remove a cronjob.
    Rm {
        /// Its name.
        name: String,
    },
}

/// Runs `eddy cron`.
pub fn run(args: CronArgs) -> anyhow::Result<u8> {
    super::with_redis(args.redis.clone(), |mut conn| async move {
        match args.command {
            CronCommand::Create {
                name,
                schedule,
                timezone,
                stream,
                event_type,
                data,
                catch_up,
                late_grace,
            } => {
                let job = CronJob {
                    schedule,
                    timezone,
                    stream,
                    event_type,
                    data,
                    catch_up,
                    late_grace_ms: crate::triggers::cron::grace_ms(late_grace),
                };
                let created = match store::create(&mut conn, &name, &job).await {
                    Err(StoreError::Exists(_)) => {
                        bail!("cronjob {name:?} already exists: `eddy cron rm {name}` first")
                    }
                    other => other?,
                };
                match args.redis.output {
                    OutputFormat::Json => println!("{created}"),
                    OutputFormat::Human => println!(
                        "created cronjob {name}: {} ({}) -> {} {}; next {}",
                        job.schedule,
                        job.timezone,
                        job.stream,
                        job.event_type,
                        created["next"].as_str().unwrap_or("never")
                    ),
                }
            }
            CronCommand::Rm { name } => {
                match store::remove(&mut conn, &name).await {
                    Err(StoreError::Missing(_)) => {
                        bail!("no cronjob named {name:?} (`eddy cron ls` lists them)")
                    }
                    other => other?,
                }
                if args.redis.output == OutputFormat::Human {
                    println!("removed cronjob {name}");
                } else {
                    println!("{}", serde_json::json!({ "removed": name }));
                }
            }
            CronCommand::Ls => {
                let rows = store::list(&mut conn).await?;
                match args.redis.output {
                    OutputFormat::Json => println!("{}", serde_json::Value::Array(rows)),
                    OutputFormat::Human if rows.is_empty() => println!("no cronjobs"),
                    OutputFormat::Human => {
                        println!(
                            "{:<20} {:<18} {:<14} {:<24} {:<21} {:<25} {:<16} LAST RESULT",
                            "NAME",
                            "SCHEDULE",
                            "TIMEZONE",
                            "STREAM TYPE",
                            "NEXT",
                            "LAST FIRE",
                            "MISSED (EMIT/SKIP)"
                        );
                        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
                        for row in rows {
                            println!(
                                "{:<20} {:<18} {:<14} {:<24} {:<21} {:<25} {:<16} {}",
                                text(&row["name"]),
                                text(&row["schedule"]),
                                text(&row["timezone"]),
                                format!("{} {}", text(&row["stream"]), text(&row["type"])),
                                text(&row["next"]),
                                text(&row["last_fire"]),
                                format!(
                                    "{}/{}",
                                    row["missed"]["emitted"].as_u64().unwrap_or(0),
                                    row["missed"]["skipped"].as_u64().unwrap_or(0)
                                ),
                                text(&row["last_result"]),
                            );
                        }
                    }
                }
            }
        }
        Ok(EXIT_OK)
    })
}
