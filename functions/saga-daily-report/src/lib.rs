//! `saga-daily-report` (`examples/order-saga`): answers the `DailyReportRequired` tick that the
//! `daily-report` cronjob emits at midnight by publishing `DailyReportGenerated` for the day
//! that ended, once per day. Settings: `reports_stream` (default `reports`).

use std::time::Duration;

use eddy_sdk::{Error, Event, Response, config, log, once, publish};
use serde_json::json;

fn handle(event: Event) -> Result<Response, Error> {
    // The tick's time names the report; a cronjob's event id is unique per tick.
    let day = event
        .time()
        .and_then(|t| t.get(..10))
        .unwrap_or("unknown")
        .to_owned();
    if !once(
        &format!("report:{}", event.id()),
        Duration::from_secs(2 * 24 * 3600),
    )? {
        return Ok(Response::ok());
    }
    let stream = config("reports_stream").unwrap_or_else(|| "reports".to_owned());
    publish(
        &stream,
        "DailyReportGenerated",
        &json!({ "day": day, "tick": event.id() }),
    )?;
    log::info(format!("daily report for {day} generated"));
    Ok(Response::ok())
}

eddy_sdk::export!(handle);
