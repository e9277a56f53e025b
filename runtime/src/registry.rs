//! The registry: deployed functions, kept in Redis so every host of a cluster sees the same
//! ones.
//!
//! - `eddy:component:<sha256>`: a component's bytes, stored once however often it is deployed.
//! - `eddy:{eddy:deployments}:function:<name>`: a hash of the function's versions (`v1`, `v2`,
//!   … → JSON [`Version`]), `current` (the version serving) and `latest` (the last number
//!   given).
//! - `eddy:{eddy:deployments}:functions`: the set of deployed names.
//! - `eddy:deployments`: a stream every host follows; each entry names a function whose current
//!   version changed (deployed, rolled back or deleted), and the host loads that version (or
//!   stops the function) and switches to it.
//!
//! Every change is one Lua script, so a version, the current pointer and the deployments entry
//! never disagree. The braces put every key a script touches in the deployments stream's hash
//! slot, as a Redis Cluster requires. (Before they had them, the first two were
//! `eddy:function:<name>` and `eddy:functions`: [`LEGACY_FUNCTIONS_KEY`] and
//! [`crate::host::migrate`] move them on a single server.)

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

/// The stream of deployment changes hosts follow.
pub const DEPLOYMENTS_STREAM: &str = "eddy:deployments";
/// The set of deployed function names.
pub const FUNCTIONS_KEY: &str = "eddy:{eddy:deployments}:functions";
/// Where [`FUNCTIONS_KEY`] was before registry keys shared a hash slot.
pub const LEGACY_FUNCTIONS_KEY: &str = "eddy:functions";
/// Where a function's hash was before, by name: this prefix and the name.
pub const LEGACY_FUNCTION_PREFIX: &str = "eddy:function:";
/// Where a function's hash is, by name: this prefix and the name.
pub const FUNCTION_PREFIX: &str = "eddy:{eddy:deployments}:function:";

/// One deployed version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Its number, from 1.
    pub version: u32,
    /// The sha256 of its component.
    pub digest: String,
    /// Its manifest, as uploaded.
    pub manifest: String,
    /// When it was deployed (RFC 3339).
    pub deployed_at: String,
}

/// The key of a component's bytes.
pub fn component_key(digest: &str) -> String {
    format!("eddy:component:{digest}")
}

fn function_key(name: &str) -> String {
    format!("{FUNCTION_PREFIX}{name}")
}

/// Stores a component under its digest unless it is there already; true if it was new.
pub async fn put_component<C: ConnectionLike>(
    conn: &mut C,
    digest: &str,
    bytes: &[u8],
) -> redis::RedisResult<bool> {
    redis::cmd("SET")
        .arg(component_key(digest))
        .arg(bytes)
        .arg("NX")
        .query_async::<Option<String>>(conn)
        .await
        .map(|set| set.is_some())
}

/// A component's bytes.
pub async fn get_component<C: ConnectionLike>(
    conn: &mut C,
    digest: &str,
) -> redis::RedisResult<Option<Vec<u8>>> {
    redis::cmd("GET")
        .arg(component_key(digest))
        .query_async(conn)
        .await
}

/// KEYS: function hash, names set, deployments. ARGV: name, version JSON template (with
/// `"version":0`), now. Returns the new version number.
static DEPLOY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('HEXISTS', KEYS[1], 'canary') == 1 then
            return redis.error_reply('CANARYRUNNING a canary runs: promote or roll it back first')
        end
        local n = redis.call('HINCRBY', KEYS[1], 'latest', 1)
        local record = string.gsub(ARGV[2], '"version":0', '"version":' .. n, 1)
        redis.call('HSET', KEYS[1], 'v' .. n, record, 'current', n)
        redis.call('SADD', KEYS[2], ARGV[1])
        redis.call('XADD', KEYS[3], '*', 'function', ARGV[1], 'action', 'deploy', 'version', n)
        return n
        "#,
    )
});

/// KEYS: function hash, deployments. ARGV: name, target version (0 = the one before current).
/// Returns the version now current, or an error string.
static ROLLBACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local current = tonumber(redis.call('HGET', KEYS[1], 'current') or '0')
        if current == 0 then return redis.error_reply('NOTDEPLOYED not deployed') end
        if redis.call('HEXISTS', KEYS[1], 'canary') == 1 then
            return redis.error_reply('CANARYRUNNING a canary runs: promote or roll it back first')
        end
        local target = tonumber(ARGV[2])
        if target == 0 then
            target = current - 1
            -- A canary that was rolled back never served as the function: skipped.
            while target > 0 and (redis.call('HEXISTS', KEYS[1], 'v' .. target) == 0
                    or redis.call('HEXISTS', KEYS[1], 'ended_v' .. target) == 1) do
                target = target - 1
            end
            if target == 0 then return redis.error_reply('NOEARLIER no earlier version') end
        elseif redis.call('HEXISTS', KEYS[1], 'v' .. target) == 0 then
            return redis.error_reply('NOSUCHVERSION no such version')
        end
        redis.call('HSET', KEYS[1], 'current', target)
        redis.call('XADD', KEYS[2], '*', 'function', ARGV[1], 'action', 'rollback', 'version', target)
        return target
        ",
    )
});

/// KEYS: function hash, names set, deployments. ARGV: name. Returns 1 if it existed.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('DEL', KEYS[1]) == 0 then return 0 end
        redis.call('SREM', KEYS[2], ARGV[1])
        redis.call('XADD', KEYS[3], '*', 'function', ARGV[1], 'action', 'delete')
        return 1
        ",
    )
});

/// Records a new version of `name` running component `digest` with `manifest`, makes it
/// current and announces it. Returns it.
pub async fn deploy<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
    digest: &str,
    manifest: &str,
) -> redis::RedisResult<Version> {
    let mut version = Version {
        version: 0,
        digest: digest.to_owned(),
        manifest: manifest.to_owned(),
        deployed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let template = serde_json::to_string(&version).expect("a version serializes");
    let number: u32 = DEPLOY
        .key(function_key(name))
        .key(FUNCTIONS_KEY)
        .key(DEPLOYMENTS_STREAM)
        .arg(name)
        .arg(template)
        .invoke_async(conn)
        .await?;
    version.version = number;
    Ok(version)
}

/// Makes version `to` (or, with `None`, the one before the current) current again.
pub async fn rollback<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
    to: Option<u32>,
) -> Result<u32, RollbackError> {
    ROLLBACK
        .key(function_key(name))
        .key(DEPLOYMENTS_STREAM)
        .arg(name)
        .arg(to.unwrap_or(0))
        .invoke_async(conn)
        .await
        .map_err(|e| match e.code() {
            Some("NOTDEPLOYED") => RollbackError::NotDeployed,
            Some("CANARYRUNNING") => RollbackError::CanaryRunning,
            Some("NOEARLIER") => RollbackError::NoEarlierVersion,
            Some("NOSUCHVERSION") => RollbackError::NoSuchVersion(to.unwrap_or(0)),
            _ => RollbackError::Redis(e),
        })
}

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// The function is not deployed.
    #[error("the function is not deployed")]
    NotDeployed,
    /// A canary runs: it must be promoted or rolled back first.
    #[error("a canary runs: promote it or roll it back first")]
    CanaryRunning,
    /// No version before the current one served as the function.
    #[error("no earlier version to roll back to")]
    NoEarlierVersion,
    /// The version asked for does not exist.
    #[error("version {0} does not exist")]
    NoSuchVersion(u32),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Removes `name` and all its versions (components stay: others may share them). False if it
/// was not deployed.
pub async fn delete<C: ConnectionLike>(conn: &mut C, name: &str) -> redis::RedisResult<bool> {
    let removed: i64 = DELETE
        .key(function_key(name))
        .key(FUNCTIONS_KEY)
        .key(DEPLOYMENTS_STREAM)
        .arg(name)
        .invoke_async(conn)
        .await?;
    Ok(removed == 1)
}

/// The current version of `name`, if deployed.
pub async fn current<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
) -> redis::RedisResult<Option<Version>> {
    let current: Option<u32> = redis::cmd("HGET")
        .arg(function_key(name))
        .arg("current")
        .query_async(conn)
        .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    let text: Option<String> = redis::cmd("HGET")
        .arg(function_key(name))
        .arg(format!("v{current}"))
        .query_async(conn)
        .await?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Every version of `name`, oldest first, and the current number.
pub async fn versions<C: ConnectionLike>(
    conn: &mut C,
    name: &str,
) -> redis::RedisResult<(Vec<Version>, Option<u32>)> {
    let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(function_key(name))
        .query_async(conn)
        .await?;
    let current = all.get("current").and_then(|c| c.parse().ok());
    let mut versions: Vec<Version> = all
        .iter()
        .filter(|(k, _)| k.starts_with('v'))
        .filter_map(|(_, v)| serde_json::from_str(v).ok())
        .collect();
    versions.sort_by_key(|v| v.version);
    Ok((versions, current))
}

/// The deployed function names, sorted.
pub async fn names<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<Vec<String>> {
    let mut names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(FUNCTIONS_KEY)
        .query_async(conn)
        .await?;
    names.sort();
    Ok(names)
}

/// Property tests of stored registry records: any text is a version or an error, never a
/// panic, and a version reads back as written.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_stored_text_is_a_version_or_an_error(
            text in prop_oneof![
                ".{0,200}",
                (any::<u32>(), ".{0,20}").prop_map(|(v, d)| format!(
                    r#"{{"version":{v},"digest":{d:?},"manifest":"","deployed_at":""}}"#
                )),
            ],
        ) {
            match serde_json::from_str::<Version>(&text) {
                Ok(version) => {
                    let again = serde_json::to_string(&version).unwrap();
                    prop_assert_eq!(serde_json::from_str::<Version>(&again).unwrap(), version);
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        #[test]
        fn versions_round_trip(
            version in any::<u32>(), digest in "[0-9a-f]{64}", manifest in ".{0,200}",
            deployed_at in ".{0,30}",
        ) {
            let stored = Version { version, digest, manifest, deployed_at };
            let text = serde_json::to_string(&stored).unwrap();
            let back: Version = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, stored);
        }
    }
}
