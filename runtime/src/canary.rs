//! Canary deploys: a new version takes a share of a function's events beside the stable one,
//! on every host, and is rolled back by itself when it fails more than the stable version.
//!
//! `eddy deploy --canary 10%` records the new version in the registry as the function's
//! *canary* (the `canary` field of its hash) without changing `current`, and announces it on
//! the deployments stream. Each host then runs both versions: an event goes to the canary when
//! a hash of its id falls under the share, so a retry of an event goes to the version that
//! failed it while the canary lasts (and to the stable one after a rollback).
//!
//! While a canary runs, hosts count each version's attempts in Redis in one-second buckets,
//! those that failed or were rejected (a version that refuses what the stable one handles is
//! as wrong as one that fails) apart,
//! and each host judges every second over the last `window`: once the canary has `min_events`
//! outcomes there, and its failure rate exceeds the stable version's by more than `margin`, the
//! host ends the canary with that reason (one script: the first host wins, the others find it
//! ended). The end is announced on the deployments stream, so every host stops sending events
//! to the canary within a second; `eddy functions show` and `eddy:deployments` keep the reason.
//! `eddy functions promote` makes the canary current; `eddy functions rollback` ends it.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

use crate::registry::{DEPLOYMENTS_STREAM, FUNCTION_PREFIX, FUNCTIONS_KEY};

/// How long outcomes are counted over, unless the deploy says.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Longest window accepted.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// How much higher (as a share, 0.2 = 20 points) the canary's failure rate may be.
pub const DEFAULT_MARGIN: f64 = 0.2;
/// Outcomes of the canary needed in the window before it is judged.
pub const DEFAULT_MIN_EVENTS: u32 = 20;
/// Most outcomes asked for before judging.
pub const MAX_MIN_EVENTS: u32 = 1_000_000;
/// How often each host judges a running canary.
pub const JUDGE_EVERY: Duration = Duration::from_secs(1);

/// A running canary, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// The canary's version.
    pub version: u32,
    /// The share of events it takes, 1..=99 (%).
    pub percent: u8,
    /// Outcomes are compared over this many seconds.
    pub window_s: u64,
    /// How much higher its failure rate may be than the stable's (0.0..=1.0).
    pub margin: f64,
    /// Its outcomes needed in the window before it is judged.
    pub min_events: u32,
    /// When it started (ms since the Unix epoch).
    pub started_ms: i64,
}

/// How a canary ended other than by promotion, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    /// The canary's version.
    pub version: u32,
    /// Why: the failure rates compared, or an operator's rollback.
    pub reason: String,
    /// When (ms since the Unix epoch).
    pub ended_ms: i64,
}

/// Whether the event with this id goes to a canary taking `percent` % of events: the same id
/// always answers the same (FNV-1a of the id, modulo 100).
pub fn takes(event_id: &str, percent: u8) -> bool {
    let hash = event_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % 100) < u64::from(percent)
}

/// Reads `10%` (or `10`) into a share of 1..=99.
pub fn parse_percent(text: &str) -> Result<u8, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<u8>() {
        Ok(n) if (1..=99).contains(&n) => Ok(n),
        _ => Err(format!(
            "canary share {text:?}: expected a percentage from 1% to 99%, such as \"10%\""
        )),
    }
}

fn function_key(name: &str) -> String {
    format!("{FUNCTION_PREFIX}{name}")
}

fn stats_key(name: &str, version: u32) -> String {
    format!("eddy:{{eddy:deployments}}:canary-stats:{name}:{version}")
}

/// KEYS: function hash, names, deployments. ARGV: name, version template, canary template.
/// Returns the canary's version, or an error if nothing is deployed or a canary runs already.
static DEPLOY_CANARY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if not redis.call('HGET', KEYS[1], 'current') then
            return redis.error_reply('NOTDEPLOYED the function is not deployed')
        end
        if redis.call('HEXISTS', KEYS[1], 'canary') == 1 then
            return redis.error_reply('CANARYRUNNING a canary runs already')
        end
        local n = redis.call('HINCRBY', KEYS[1], 'latest', 1)
        local record = string.gsub(ARGV[2], '"version":0', '"version":' .. n, 1)
        local canary = string.gsub(ARGV[3], '"version":0', '"version":' .. n, 1)
        redis.call('HSET', KEYS[1], 'v' .. n, record, 'canary', canary)
        redis.call('SADD', KEYS[2], ARGV[1])
        redis.call('XADD', KEYS[3], '*', 'function', ARGV[1], 'action', 'canary', 'version', n)
        return n
        "#,
    )
});

/// KEYS: function hash, deployments. ARGV: name. Makes the canary current; returns its version.
static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local canary = redis.call('HGET', KEYS[1], 'canary')
        if not canary then return redis.error_reply('NOCANARY no canary runs') end
        local version = cjson.decode(canary)['version']
        redis.call('HSET', KEYS[1], 'current', version)
        redis.call('HDEL', KEYS[1], 'canary')
        redis.call('XADD', KEYS[2], '*', 'function', ARGV[1], 'action', 'promote', 'version', version)
        return version
        ",
    )
});

/// KEYS: function hash, deployments. ARGV: name, version (0: whichever runs), ended JSON
/// template. Ends the canary if it is that version; returns its version, or 0.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local canary = redis.call('HGET', KEYS[1], 'canary')
        if not canary then return 0 end
        local version = cjson.decode(canary)['version']
        if ARGV[2] ~= '0' and tonumber(ARGV[2]) ~= version then return 0 end
        local ended = string.gsub(ARGV[3], '"version":0', '"version":' .. version, 1)
        redis.call('HDEL', KEYS[1], 'canary')
        redis.call('HSET', KEYS[1], 'canary_ended', ended, 'ended_v' .. version, 1)
        redis.call('XADD', KEYS[2], '*', 'function', ARGV[1], 'action', 'canary-ended',
            'version', version, 'reason', cjson.decode(ended)['reason'])
        return version
        "#,
    )
});

/// Records version `version` of `name` as the canary, sending `canary.percent` % of events to it.
/// Returns its version number.
pub async fn deploy<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
    digest: &str,
    manifest: &str,
    mut canary: Canary,
) -> redis::RedisResult<crate::registry::Version> {
    let mut version = crate::registry::Version {
        version: 0,
        digest: digest.to_owned(),
        manifest: manifest.to_owned(),
        deployed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    canary.version = 0;
    let number: u32 = DEPLOY_CANARY
        .key(function_key(name))
        .key(FUNCTIONS_KEY)
        .key(DEPLOYMENTS_STREAM)
        .arg(name)
        .arg(serde_json::to_string(&version).expect("a version serializes"))
        .arg(serde_json::to_string(&canary).expect("a canary serializes"))
        .invoke_async(conn)
        .await?;
    version.version = number;
    Ok(version)
}

/// The error code a registry script answers when `name` has no canary to promote.
pub const NO_CANARY: &str = "NOCANARY";
/// The error code when a canary runs already.
pub const CANARY_RUNNING: &str = "CANARYRUNNING";
/// The error code when the function has no stable version to compare with.
pub const NOT_DEPLOYED: &str = "NOTDEPLOYED";

/// Makes the canary of `name` current. Returns its version.
pub async fn promote<C: ConnectionLike>(conn: &mut C, name: &str) -> redis::RedisResult<u32> {
    PROMOTE
        .key(function_key(name))
        .key(DEPLOYMENTS_STREAM)
        .arg(name)
        .invoke_async(conn)
        .await
}

/// Ends the canary of `name` (only if it is `version`, when given) for `reason`. Returns the
/// version ended, if one was.
pub async fn end<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
    version: Option<u32>,
    reason: &str,
) -> redis::RedisResult<Option<u32>> {
    let ended = Ended {
        version: 0,
        reason: reason.to_owned(),
        ended_ms: chrono::Utc::now().timestamp_millis(),
    };
    let version: u32 = END
        .key(function_key(name))
        .key(DEPLOYMENTS_STREAM)
        .arg(name)
        .arg(version.unwrap_or(0))
        .arg(serde_json::to_string(&ended).expect("serializes"))
        .invoke_async(conn)
        .await?;
    Ok((version != 0).then_some(version))
}

/// The running canary of `name` and how the last one ended, if any.
pub async fn state<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
) -> redis::RedisResult<(Option<Canary>, Option<Ended>)> {
    let (canary, ended): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(function_key(name))
        .arg("canary")
        .arg("canary_ended")
        .query_async(conn)
        .await?;
    Ok((
        canary.and_then(|c| serde_json::from_str(&c).ok()),
        ended.and_then(|e| serde_json::from_str(&e).ok()),
    ))
}

/// Counts `total` outcomes of `version` of `name`, `failed` of them failures, in this second's
/// bucket.
pub async fn record<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
    version: u32,
    total: u64,
    failed: u64,
) -> redis::RedisResult<()> {
    let second = chrono::Utc::now().timestamp();
    let key = stats_key(name, version);
    redis::pipe()
        .cmd("HINCRBY")
        .arg(&key)
        .arg(format!("{second}:n"))
        .arg(total)
        .ignore()
        .cmd("HINCRBY")
        .arg(&key)
        .arg(format!("{second}:f"))
        .arg(failed)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(2 * MAX_WINDOW.as_secs())
        .ignore()
        .query_async(conn)
        .await
}

/// Outcomes and failures of `version` of `name` over the last `window_s` seconds; older
/// buckets are dropped on the way.
pub async fn counts<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
    version: u32,
    window_s: u64,
) -> redis::RedisResult<(u64, u64)> {
    let key = stats_key(name, version);
    let all: HashMap<String, u64> = redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
    let since = chrono::Utc::now().timestamp() - window_s as i64 + 1;
    let (mut total, mut failed, mut old) = (0, 0, Vec::new());
    for (field, count) in &all {
        let Some((second, kind)) = field.split_once(':') else {
            continue;
        };
        let Ok(second) = second.parse::<i64>() else {
            continue;
        };
        if second < since {
            old.push(field.clone());
            continue;
        }
        match kind {
            "n" => total += count,
            "f" => failed += count,
            _ => {}
        }
    }
    if !old.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("HDEL")
            .arg(&key)
            .arg(&old)
            .query_async(conn)
            .await;
    }
    Ok((total, failed))
}

/// Why the canary must end, if it must: given the stable's and the canary's (attempts, failed
/// or rejected ones) over the window.
pub fn judge(canary: &Canary, stable: (u64, u64), trial: (u64, u64)) -> Option<String> {
    if trial.0 < u64::from(canary.min_events) || trial.0 == 0 {
        return None;
    }
    let rate = |(n, f): (u64, u64)| if n == 0 { 0.0 } else { f as f64 / n as f64 };
    let (stable_rate, trial_rate) = (rate(stable), rate(trial));
    (trial_rate > stable_rate + canary.margin).then(|| {
        format!(
            "canary version {} failed or rejected {} of {} attempts ({:.0}%) over the last {}s \
             against the stable version's {} of {} ({:.0}%), more than the {:.0}-point margin",
            canary.version,
            trial.1,
            trial.0,
            trial_rate * 100.0,
            canary.window_s,
            stable.1,
            stable.0,
            stable_rate * 100.0,
            canary.margin * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        Canary {
            version: 3,
            percent: 20,
            window_s: 60,
            margin: 0.2,
            min_events: 20,
            started_ms: 0,
        }
    }

    #[test]
    fn the_split_is_stable_per_id_and_near_the_share() {
        let taken = (0..10_000)
            .filter(|n| takes(&format!("ev-{n}"), 20))
            .count();
        assert!((1_800..=2_200).contains(&taken), "{taken}");
        assert_eq!(takes("ev-1", 20), takes("ev-1", 20));
        assert!(!takes("anything", 0));
    }

    #[test]
    fn a_canary_is_judged_only_with_enough_events_and_past_the_margin() {
        let c = canary();
        assert_eq!(judge(&c, (100, 0), (19, 19)), None, "too few events");
        assert_eq!(
            judge(&c, (100, 10), (20, 6)),
            None,
            "30% vs 10%: within 20 points"
        );
        let reason = judge(&c, (100, 10), (20, 7)).expect("35% vs 10%");
        assert!(
            reason.contains("rejected 7 of 20 attempts (35%)"),
            "{reason}"
        );
        assert!(reason.contains("10 of 100 (10%)"), "{reason}");
    }

    #[test]
    fn shares_read_back_or_say_what_is_expected() {
        assert_eq!(parse_percent("10%"), Ok(10));
        assert_eq!(parse_percent("99"), Ok(99));
        for bad in ["0%", "100%", "-5%", "ten", ""] {
            assert!(parse_percent(bad).unwrap_err().contains("1% to 99%"));
        }
    }
}
