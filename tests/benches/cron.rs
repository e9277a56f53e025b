//! Cron precision benchmark (not a timed test): how late ticks fire on an idle host. A cronjob
//! on a per-second schedule runs for `EDDY_BENCH_TICKS` ticks (default 300) on one real host;
//! each tick event carries its scheduled `time` and the `firedtime` the host stamped just before
//! the `XADD`; lateness is the difference. Figures go in BENCHMARKS.md.

use std::time::Duration;

use chrono::DateTime;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{entries, manifest};

fn main() {
    let ticks: usize = std::env::var("EDDY_BENCH_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let redis = RedisServer::start_fast();
    let mut conn = redis.conn();
    let fns = tempfile::tempdir().unwrap();
    manifest(fns.path(), "idle", "echo", "");
    let _host = Host::start(&redis.url(), fns.path(), &[]);
    let status = std::process::Command::new(eddy_tests::eddy_bin())
        .args(["cron", "create", "bench", "--schedule", "* * * * * *"])
        .args([
            "--stream",
            "bench-ticks",
            "--type",
            "Tick",
            "--redis",
            &redis.url(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    println!("cron lateness: per-second schedule, {ticks} ticks, one idle host");
    loop {
        let n = entries(&mut conn, "bench-ticks").len();
        if n >= ticks {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut late: Vec<f64> = entries(&mut conn, "bench-ticks")
        .iter()
        .take(ticks)
        .map(|e| {
            let scheduled = DateTime::parse_from_rfc3339(e.get("time")).unwrap();
            let fired = DateTime::parse_from_rfc3339(e.get("firedtime")).unwrap();
            (fired - scheduled).num_microseconds().unwrap() as f64 / 1000.0
        })
        .collect();
    late.sort_by(f64::total_cmp);
    let pct = |p: f64| late[((late.len() as f64 * p).ceil() as usize).clamp(1, late.len()) - 1];
    println!(
        "  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} ticks)",
        pct(0.5),
        pct(0.99),
        late[late.len() - 1],
        late.len()
    );
}
