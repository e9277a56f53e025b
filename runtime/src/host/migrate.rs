//! Moving keys whose names changed so that a Redis Cluster can hold them, on a single server
//! that an older Eddy wrote.
//!
//! A cluster runs a script only when every key it touches is in one hash slot, so keys used
//! together got a shared hash tag (`eddy:{eddy:records}:bytes` beside `eddy:records`). Hosts
//! before that wrote them untagged. A cluster deployment starts empty (Eddy did not run on one
//! before), but a single server may hold the old names: [`legacy_keys`] renames them once,
//! in one script, when a host starts (a host that cannot, refuses to start rather than run
//! with an empty registry). A name already taken by the new layout is never overwritten, so
//! running it again, or on several hosts at once, changes nothing; a legacy key left beside
//! its new name is reported.
//!
//! Hosts of the older version still running beside a new one keep writing the old names;
//! stop every host of a Redis, then start the new ones (on Kubernetes, scale to zero or use the
//! `Recreate` strategy for this upgrade).

use redis::aio::ConnectionLike;

use crate::records;
use crate::registry;

/// KEYS: none (a single server only; it touches keys by name, which a cluster forbids).
/// ARGV: legacy functions set, functions set, legacy function prefix, function prefix, then
/// triples of old name, new name and the type the old key must have. Returns how many keys
/// moved and how many legacy keys stay because their new name was taken; an error naming the
/// key when one has another type than Eddy wrote (nothing is moved then).
static LEGACY: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"#!lua flags=allow-oom
        local function kind(key) return redis.call('TYPE', key).ok end
        local function check(key, want)
            local found = kind(key)
            if found ~= 'none' and found ~= want then
                return redis.error_reply('ERR ' .. key .. ' is a ' .. found .. ', expected a ' .. want)
            end
        end
        local err = check(ARGV[1], 'set')
        if err then return err end
        local names = {}
        if kind(ARGV[1]) == 'set' then
            names = redis.call('SMEMBERS', ARGV[1])
            for _, name in ipairs(names) do
                err = check(ARGV[3] .. name, 'hash')
                if err then return err end
            end
        end
        for i = 5, #ARGV, 3 do
            err = check(ARGV[i], ARGV[i + 2])
            if err then return err end
        end
        local moved, left = 0, 0
        local function move(old, new)
            if redis.call('EXISTS', old) == 1 then
                if redis.call('EXISTS', new) == 0 then
                    redis.call('RENAME', old, new)
                    moved = moved + 1
                else
                    left = left + 1
                end
            end
        end
        for _, name in ipairs(names) do
            move(ARGV[3] .. name, ARGV[4] .. name)
        end
        move(ARGV[1], ARGV[2])
        for i = 5, #ARGV, 3 do
            move(ARGV[i], ARGV[i + 1])
        end
        return {moved, left}
        ",
    )
});

/// Renames keys an older Eddy wrote under names a cluster cannot use; returns how many moved
/// and how many stay because their new name is taken (both layouts were written to). Nothing
/// is written when there is nothing to move, so a read-only replica with no legacy keys is
/// fine.
pub async fn legacy_keys<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<(u64, u64)> {
    let present: u64 = redis::cmd("EXISTS")
        .arg(registry::LEGACY_FUNCTIONS_KEY)
        .arg(&records::LEGACY_KEYS[..])
        .query_async(conn)
        .await?;
    if present == 0 {
        return Ok((0, 0));
    }
    let mut invocation = LEGACY.prepare_invoke();
    invocation
        .arg(registry::LEGACY_FUNCTIONS_KEY)
        .arg(registry::FUNCTIONS_KEY)
        .arg(registry::LEGACY_FUNCTION_PREFIX)
        .arg(registry::FUNCTION_PREFIX);
    let new = [
        (records::RECORDS_BYTES_KEY, "string"),
        (records::RECORDS_SIZES_KEY, "list"),
        (records::FAILURES_KEY, "list"),
    ];
    for (old, (new, kind)) in records::LEGACY_KEYS.iter().zip(new) {
        invocation.arg(*old).arg(new).arg(kind);
    }
    invocation.invoke_async(conn).await
}
