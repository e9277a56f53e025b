//! Charts: each function's last 15 minutes in 10-second steps, for the web page. Events by
//! outcome, p50 and p99 duration, and the backlog (lag and pending) of its triggers, across
//! every host.
//!
//! The per-event path only adds to a few atomic counters of the function's
//! [`Window`](crate::metrics::window::Window) (its
//! outcome, and one bucket of a duration histogram). Every [`STEP`] each host's sampler takes
//! what the windows counted, reads the lag and pending of each function's consumer groups, and
//! appends one entry per function that had anything to say to the Redis stream
//! `eddy:charts:<function>`, trimmed by time (`MINID`) to the window and expiring when nothing
//! is written for a while. Reading (`GET /v1/charts`) is one `XRANGE` per function, merging
//! hosts' entries of the same step: counts and histograms add up, the backlog is the largest
//! seen (every host sees the same groups). So the cost is one small write per function per
//! host every 10 s, whatever the event rate, and nothing when a function is idle.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::ConnectionLike;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::metrics::window::{BUCKETS, bound_of, window};

/// The width of one point of a chart.
pub const STEP: Duration = Duration::from_secs(10);
/// How far back the charts go.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most functions one `GET /v1/charts` reads.
const MAX_CHARTED_FUNCTIONS: usize = 200;

/// The stream holding `function`'s chart entries.
pub fn key(function: &str) -> String {
    format!("eddy:charts:{function}")
}

/// Every [`STEP`] until `stop`, writes what each function running here did and its backlog.
pub async fn sample(broker: Broker, consumer: String, stop: CancellationToken) {
    let mut conn = broker.shared();
    // Functions whose last entry showed a backlog: one more entry says when it is gone.
    let mut backlogged: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        if !crate::backoff::sleep_or_cancel(STEP, &stop).await {
            return;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let step_ms = STEP.as_millis() as i64;
        let t = now_ms / step_ms * step_ms - step_ms;
        for function in crate::status::running() {
            let sample = window(&function.name).take();
            let (mut lag, mut pending) = (0u64, 0u64);
            for (stream, group) in &function.groups {
                if let Ok(Some(state)) =
                    crate::broker::groups::state(&mut conn, stream, group).await
                {
                    lag += state.lag;
                    pending += state.pending;
                }
            }
            let had_backlog = backlogged.get(&function.name).copied().unwrap_or(false);
            let has_backlog = lag + pending > 0;
            backlogged.insert(function.name.clone(), has_backlog);
            if sample.is_empty() && !has_backlog && !had_backlog {
                continue;
            }
            let durations = sample
                .durations
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let key = key(&function.name);
            let oldest = now_ms - (WINDOW + STEP).as_millis() as i64;
            let written: redis::RedisResult<()> = redis::pipe()
                .cmd("XADD")
                .arg(&key)
                .arg("MINID")
                .arg("~")
                .arg(oldest)
                .arg("*")
                .arg("t")
                .arg(t)
                .arg("h")
                .arg(&consumer)
                .arg("d")
                .arg(sample.done)
                .arg("r")
                .arg(sample.rejected)
                .arg("f")
                .arg(sample.failed)
                .arg("ms")
                .arg(durations)
                .arg("lag")
                .arg(lag)
                .arg("pending")
                .arg(pending)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(2 * WINDOW.as_millis() as u64)
                .ignore()
                .query_async(&mut conn)
                .await;
            if let Err(error) = written {
                tracing::debug!(%error, function = %function.name, "writing a chart entry failed");
            }
        }
    }
}

/// One step of a function's chart, merged across hosts.
#[derive(Default)]
struct Point {
    done: u64,
    rejected: u64,
    failed: u64,
    durations: [u64; BUCKETS + 1],
    lag: u64,
    pending: u64,
}

/// The duration below which `q` of the counted invocations ended, in ms, by linear
/// interpolation inside the bucket it falls in; none without invocations.
fn quantile_ms(durations: &[u64; BUCKETS + 1], q: f64) -> Option<f64> {
    let total: u64 = durations.iter().fold(0u64, |a, b| a.saturating_add(*b));
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in durations.iter().enumerate() {
        if *count > 0 && (below + count) as f64 >= rank {
            let low = if i == 0 { 0.0 } else { bound_of(i - 1) };
            let high = if i == BUCKETS {
                2.0 * bound_of(BUCKETS - 1)
            } else {
                bound_of(i)
            };
            let within = ((rank - below as f64) / *count as f64).clamp(0.0, 1.0);
            return Some((low + (high - low) * within) * 1000.0);
        }
        below += count;
    }
    None
}

/// `GET /v1/charts`' answer: the functions running on live hosts or deployed, each with its
/// points of the last [`WINDOW`], oldest first.
pub async fn read<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<Value> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut names: std::collections::BTreeSet<String> = crate::status::running_names(conn)
        .await?
        .into_iter()
        .collect();
    names.extend(crate::registry::names(conn).await?);
    let since = now_ms - WINDOW.as_millis() as i64;
    let step_ms = STEP.as_millis() as i64;
    let truncated = names.len() > MAX_CHARTED_FUNCTIONS;
    let mut functions = Vec::new();
    for name in names.into_iter().take(MAX_CHARTED_FUNCTIONS) {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key(&name))
            .arg(since)
            .arg("+")
            .query_async(conn)
            .await?;
        let mut points: BTreeMap<i64, Point> = BTreeMap::new();
        for (_, fields) in entries {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            let number = |name: &str| field(name).parse::<u64>().unwrap_or(0);
            // An entry is what hosts wrote, or anyone with the Redis: only steps within the
            // window count, and sums saturate rather than wrap.
            let Ok(t) = field("t").parse::<i64>() else {
                continue;
            };
            if t < since - step_ms || t > now_ms {
                continue;
            }
            let point = points.entry(t).or_default();
            point.done = point.done.saturating_add(number("d"));
            point.rejected = point.rejected.saturating_add(number("r"));
            point.failed = point.failed.saturating_add(number("f"));
            for (slot, count) in point.durations.iter_mut().zip(field("ms").split(',')) {
                *slot = slot.saturating_add(count.parse::<u64>().unwrap_or(0));
            }
            point.lag = point.lag.max(number("lag"));
            point.pending = point.pending.max(number("pending"));
        }
        let points: Vec<Value> = points
            .into_iter()
            .map(|(t, p)| {
                json!({
                    "t": t, "done": p.done, "rejected": p.rejected, "failed": p.failed,
                    "p50_ms": quantile_ms(&p.durations, 0.5),
                    "p99_ms": quantile_ms(&p.durations, 0.99),
                    "lag": p.lag, "pending": p.pending,
                })
            })
            .collect();
        functions.push(json!({ "name": name, "points": points }));
    }
    Ok(json!({
        "window_s": WINDOW.as_secs(),
        "step_s": STEP.as_secs(),
        "now_ms": now_ms,
        "functions": functions,
        "truncated": truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let mut durations = [0u64; BUCKETS + 1];
        assert_eq!(quantile_ms(&durations, 0.5), None);
        // 100 invocations between 0.8 and 1.6 ms (bucket 5).
        durations[5] = 100;
        let p50 = quantile_ms(&durations, 0.5).unwrap();
        assert!((p50 - 1.2).abs() < 1e-9, "{p50}");
        // One slow one of 101 lifts p99 to the top of the fast bucket, not to the slow one.
        durations[12] = 1;
        let p99 = quantile_ms(&durations, 0.99).unwrap();
        assert!(p99 <= 1.6 + 1e-9, "{p99}");
        let p100 = quantile_ms(&durations, 1.0).unwrap();
        assert!(p100 > 100.0, "{p100}");
    }
}
