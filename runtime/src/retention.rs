//! Retention: streams that do not grow forever, trimmed without ever losing an entry a consumer
//! group still needs.
//!
//! A stream's **policy** keeps at most a duration and/or a length of entries. It comes from, in
//! order: `eddy streams retention STREAM …` (stored in [`POLICIES_KEY`]); else the manifests
//! of the functions whose triggers read it that give one, merged so that what any of them keeps
//! is kept (one such function cannot shorten another's history; a function whose manifest
//! gives none accepts theirs); else the default, [`DEFAULT_MAX_AGE`] for a triggered stream and
//! [`DEFAULT_DEAD_LETTER_MAX_AGE`] for a dead-letter stream. A stream no trigger reads and no one set a policy for is never trimmed.
//! Hosts **declare** the streams their triggers read (and their dead-letter streams) in
//! [`DECLARED_KEY`] every [`DECLARE_EVERY`]; a declaration not refreshed for
//! [`DECLARATION_TTL`] (the function is gone) is dropped.
//!
//! **The floor.** One Lua script per stream computes, atomically with the trim itself, the
//! oldest entry any group of the stream still needs: for each group, the entry after its
//! last-delivered id and its oldest pending entry. It trims to the policy's cut-off or to that
//! floor, whichever is older. Being one script, no group can be created or rewound between
//! reading the floor and trimming. A stream no group reads is trimmed by its policy alone.
//! Entries kept only because of the floor are counted (**held back**: exact past a length
//! limit, estimated from entry times for an age limit), so an operator sees why memory grows.
//! An event waiting in a retry schedule does not hold the stream back: the schedule keeps its
//! own copy of the fields (it was acknowledged when it moved there), so the retry runs the same
//! whether or not the original entry is still in the stream; the same holds for replays, whose
//! schedule entries need not be ids of this stream at all.
//!
//! **One trimmer at a time.** A host trims only while it holds the lease [`LEASE_KEY`] (a
//! Redis key with an expiry, renewed before each stream): no coordination service beside
//! Redis. The lease, declaration and trim scripts are flagged `allow-oom`: a Redis that is full
//! is exactly the one that needs trimming, and the lease and declarations are a few short keys.
//!
//! Cost: per stream and script call, `XLEN`, `XINFO GROUPS` and one `XPENDING` summary per
//! group; for a length policy an `XRANGE` of at most [`LENGTH_STEP`] entries (bodies included:
//! with 1 MiB events that is 100 MiB copied; prefer an age policy for large events); `XTRIM
//! MINID ~ … LIMIT` removing at most [`TRIM_STEP`] entries as whole nodes, or, once no whole
//! node is left below the cut-off, an exact `XTRIM` of the rest of one node. A long first trim
//! takes many calls, never one long one; a pass makes at most [`MAX_STEPS`] calls per stream
//! (so a length policy removes at most 100,000 entries a pass), the next pass goes on.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use crate::broker::Conn;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;

/// How long a triggered stream keeps entries unless told otherwise: 7 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a dead-letter stream keeps entries unless told otherwise: 30 days.
pub const DEFAULT_DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest age a policy may keep (the floor protects unread entries whatever the age;
/// below a second a policy is surely a mistake).
pub const MIN_MAX_AGE: Duration = Duration::from_secs(1);
/// The longest age a policy may name (ten years); "keep all" is said by naming none.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(3650 * 24 * 3600);
/// The largest length a policy may name.
pub const MAX_MAX_LEN: u64 = 1 << 40;
/// How often the trimmer makes a pass, by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Bounds of `eddy up --retention-interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Bounds of `eddy up --retention-interval`.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Entries one script call removes at most (whole radix-tree nodes, nothing copied).
pub const TRIM_STEP: u64 = 10_000;
/// Entries a length policy reads at most per script call to find its cut-off; their bodies
/// are copied into the script, so this stays small.
pub const LENGTH_STEP: u64 = 100;
/// Script calls per stream and pass at most.
pub const MAX_STEPS: u32 = 1000;
/// How often a host refreshes its triggers' declarations.
pub const DECLARE_EVERY: Duration = Duration::from_secs(60);
/// A declaration not refreshed for this long is dropped.
pub const DECLARATION_TTL: Duration = Duration::from_secs(600);
/// Streams `eddy streams retention` may set a policy for, at most.
pub const MAX_SET_POLICIES: usize = 10_000;

/// The hash of policies set with `eddy streams retention`: stream → JSON [`Retention`].
pub const POLICIES_KEY: &str = "eddy:retention";
/// The hash of hosts' declarations: JSON `[stream, group]` → JSON [`Declaration`].
pub const DECLARED_KEY: &str = "eddy:retention:declared";
/// The trimmer's lease.
pub const LEASE_KEY: &str = "eddy:retention:lease";
/// The hash of per-stream figures from the last pass: stream → JSON [`StreamFigures`].
pub const FIGURES_KEY: &str = "eddy:retention:figures";

/// What a stream keeps: entries younger than `max_age_ms` and/or the last `max_len` entries.
/// Neither set: everything is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The oldest an entry may get, in milliseconds (by its id's time).
    pub max_age_ms: Option<u64>,
    /// The most entries kept.
    pub max_len: Option<u64>,
}

/// A policy refused, naming the setting, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value}: expected {expected}")]
pub struct PolicyError {
    /// `max_age` or `max_len`.
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What is accepted.
    pub expected: String,
}

impl Retention {
    /// The default policy of a triggered stream.
    pub fn stream_default() -> Self {
        Self {
            max_age_ms: Some(DEFAULT_MAX_AGE.as_millis() as u64),
            max_len: None,
        }
    }

    /// The default policy of a dead-letter stream.
    pub fn dead_letter_default() -> Self {
        Self {
            max_age_ms: Some(DEFAULT_DEAD_LETTER_MAX_AGE.as_millis() as u64),
            max_len: None,
        }
    }

    /// A policy from the words people write: `max_age` a duration such as `7d`, `max_len` a
    /// count. Each within its bounds.
    pub fn parse(max_age: Option<&str>, max_len: Option<u64>) -> Result<Self, PolicyError> {
        let max_age_ms = match max_age {
            None => None,
            Some(text) => {
                let expected = format!(
                    "a duration from {} to {}, such as \"7d\" or \"12h\"",
                    age_text(MIN_MAX_AGE.as_millis() as u64),
                    age_text(MAX_MAX_AGE.as_millis() as u64)
                );
                let error = || PolicyError {
                    field: "max_age",
                    value: format!("{text:?}"),
                    expected: expected.clone(),
                };
                let age = crate::units::parse_duration(text).map_err(|_| error())?;
                if !(MIN_MAX_AGE..=MAX_MAX_AGE).contains(&age) {
                    return Err(error());
                }
                Some(age.as_millis() as u64)
            }
        };
        if let Some(len) = max_len
            && !(1..=MAX_MAX_LEN).contains(&len)
        {
            return Err(PolicyError {
                field: "max_len",
                value: len.to_string(),
                expected: format!("a count of entries from 1 to {MAX_MAX_LEN}"),
            });
        }
        Ok(Self {
            max_age_ms,
            max_len,
        })
    }

    /// Whether the policy keeps everything.
    pub fn keeps_all(&self) -> bool {
        self.max_age_ms.is_none() && self.max_len.is_none()
    }

    /// The policy that keeps whatever either keeps: the longer age, the greater length, and
    /// no limit where either has none.
    pub fn more_generous(self, other: Self) -> Self {
        let wider = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        Self {
            max_age_ms: wider(self.max_age_ms, other.max_age_ms),
            max_len: wider(self.max_len, other.max_len),
        }
    }

    /// The policy as a person reads it: `7days`, `1000 entries`, `7days or 1000 entries`,
    /// `everything`.
    pub fn describe(&self) -> String {
        let age = self.max_age_ms.map(age_text);
        let len = self.max_len.map(|n| match n {
            1 => "1 entry".to_owned(),
            n => format!("{n} entries"),
        });
        match (age, len) {
            (Some(age), Some(len)) => format!("{age} or {len}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "everything".to_owned(),
        }
    }
}

/// An age as people write it in a policy: `7d`, `12h`, `90m`, `30s` or `1500ms`, in the
/// largest unit that divides it.
fn age_text(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    UNITS
        .iter()
        .find(|(size, _)| ms > 0 && ms.is_multiple_of(*size))
        .map_or_else(
            || format!("{ms}ms"),
            |(size, unit)| format!("{}{unit}", ms / size),
        )
}

/// Where a stream's policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Set with `eddy streams retention` (or the API).
    Set,
    /// A function's manifest (`[triggers.stream.retention]`).
    Manifest,
    /// The default for a triggered or dead-letter stream.
    Default,
}

/// What a host says about a stream one of its triggers reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    /// The trigger's dead-letter stream.
    pub dead_letter: String,
    /// The manifest's policy for the stream, if it has one.
    pub policy: Option<Retention>,
    /// When a host last declared it (ms since the Unix epoch).
    pub seen_ms: i64,
}

/// The stream trigger a host declares: the stream, its group, and the declaration.
#[derive(Debug, Clone)]
pub struct Declared {
    /// The stream read.
    pub stream: String,
    /// The group reading it.
    pub group: String,
    /// Its dead-letter stream.
    pub dead_letter: String,
    /// The manifest's policy, if any.
    pub policy: Option<Retention>,
}

/// What the last pass found of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFigures {
    /// Its length after the pass.
    pub length: u64,
    /// Entries trimmed by every pass so far.
    pub trimmed: u64,
    /// Entries past the policy kept because a group needs them (estimated by entry time for an
    /// age limit).
    pub held_back: u64,
    /// When the pass ran (ms since the Unix epoch).
    pub at_ms: i64,
}

/// The policy each stream is trimmed by, from what was set and what hosts declared: a set
/// policy wins; else the manifests that give one, merged with [`Retention::more_generous`]
/// so what any of them keeps is kept; else the default. A function whose manifest gives none
/// accepts the others' (it has no opinion); a dead-letter stream gets its own default.
pub fn effective(
    set: &BTreeMap<String, Retention>,
    declared: &[(String, Declaration)],
) -> BTreeMap<String, (Retention, Source)> {
    let mut out: BTreeMap<String, (Retention, Source)> = BTreeMap::new();
    let mut merge = |stream: &str, policy: Retention, source: Source| {
        out.entry(stream.to_owned())
            .and_modify(|(kept, kept_source)| match (*kept_source, source) {
                (Source::Default, Source::Manifest) => (*kept, *kept_source) = (policy, source),
                (a, b) if a == b => *kept = kept.more_generous(policy),
                _ => {}
            })
            .or_insert((policy, source));
    };
    for (stream, declaration) in declared {
        match declaration.policy {
            Some(policy) => merge(stream, policy, Source::Manifest),
            None => merge(stream, Retention::stream_default(), Source::Default),
        }
        merge(
            &declaration.dead_letter,
            Retention::dead_letter_default(),
            Source::Default,
        );
    }
    for (stream, policy) in set {
        out.insert(stream.clone(), (*policy, Source::Set));
    }
    out
}

/// Whether a declaration last refreshed at `seen_ms` is stale at `now_ms` (its function is
/// gone from every host).
pub fn is_stale(seen_ms: i64, now_ms: i64) -> bool {
    now_ms - seen_ms > DECLARATION_TTL.as_millis() as i64
}

/// KEYS: the stream. ARGV: max age (ms, 0: none), max length (0: none), length step, trim
/// step. Returns {trimmed, held back, length after, more to trim (0/1)}.
///
/// Ages are measured by Redis's clock, the one entry ids are made from, so a host's clock skew
/// does not matter. Ids are compared and incremented as decimal strings: their parts are 64-bit
/// and Lua's numbers are exact only to 2^53, so a producer's explicit id near the top must not
/// round onto a pending entry's. Bulk removal is `XTRIM MINID ~ … LIMIT` (whole radix-tree
/// nodes, nothing copied) while it removes any, then an exact `XTRIM MINID` for the rest of the
/// node that straddles the cut-off; a length policy reads at most the length step of entries
/// (their bodies come along: the step keeps that small) to find its cut-off.
static TRIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"#!lua flags=allow-oom
        local stream = KEYS[1]
        local max_age, max_len = tonumber(ARGV[1]), tonumber(ARGV[2])
        local len_step, trim_step = tonumber(ARGV[3]), tonumber(ARGV[4])
        if redis.call('EXISTS', stream) == 0 or redis.call('TYPE', stream).ok ~= 'stream' then
            return {0, 0, 0, 0}
        end
        local MAX = '18446744073709551615'
        local function parse(id)
            local ms, seq = string.match(id, '^(%d+)-(%d+)$')
            return {ms, seq}
        end
        local function less(a, b)
            if #a ~= #b then return #a < #b end
            return a < b
        end
        local function older(a, b)
            if a[1] ~= b[1] then return less(a[1], b[1]) end
            return less(a[2], b[2])
        end
        local function incr(d)
            local i, tail = #d, ''
            while i > 0 do
                local c = string.byte(d, i) - 48
                if c < 9 then return string.sub(d, 1, i - 1) .. string.char(c + 49) .. tail end
                tail = '0' .. tail
                i = i - 1
            end
            return '1' .. tail
        end
        -- The smallest id after `id`; the largest possible id stands for itself.
        local function after(id)
            local p = parse(id)
            if p[2] ~= MAX then return {p[1], incr(p[2])} end
            if p[1] ~= MAX then return {incr(p[1]), '0'} end
            return p
        end
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local len = redis.call('XLEN', stream)
        -- The policy's cut-off: entries older than it are to go.
        local cut, more = nil, 0
        if max_age > 0 and now > max_age then cut = {string.format('%.0f', now - max_age), '0'} end
        if max_len > 0 and len > max_len then
            local over = math.min(len - max_len, len_step)
            if len - max_len > len_step then more = 1 end
            local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', over)
            local c = after(head[#head][1])
            if cut == nil or older(cut, c) then cut = c end
        end
        if cut == nil then return {0, 0, len, 0} end
        -- The floor: the oldest entry some group still needs (unread or pending).
        local floor = nil
        local function need(p)
            if floor == nil or older(p, floor) then floor = p end
        end
        for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
            local name, last
            for i = 1, #group, 2 do
                if group[i] == 'name' then name = group[i + 1] end
                if group[i] == 'last-delivered-id' then last = group[i + 1] end
            end
            need(after(last))
            local pending = redis.call('XPENDING', stream, name)
            if pending[1] > 0 then need(parse(pending[2])) end
        end
        local held = false
        if floor ~= nil and older(floor, cut) then cut = floor; held = true; more = 0 end
        local id = cut[1] .. '-' .. cut[2]
        -- Whole nodes first; once none is left below the cut, the rest of the one node that
        -- straddles it, exactly (a node holds at most stream-node-max-entries).
        local trimmed = redis.call('XTRIM', stream, 'MINID', '~', id, 'LIMIT', trim_step)
        if trimmed > 0 then
            more = 1
        else
            trimmed = redis.call('XTRIM', stream, 'MINID', id)
        end
        local length = len - trimmed
        -- Held back: exact past a length limit; for an age limit, estimated from the times of
        -- the first and last entries (counting exactly would read every held entry).
        local held_back = 0
        if held and length > 0 then
            if max_len > 0 and length > max_len then held_back = length - max_len end
            if max_age > 0 then
                local first = tonumber(parse(redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1])[1])
                local last = tonumber(parse(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1][1])[1])
                local age_cut = now - max_age
                local share = 1
                if last > first then share = (age_cut - first) / (last - first) end
                local estimate = math.floor(length * math.max(0, math.min(1, share)))
                if estimate > held_back then held_back = estimate end
            end
        end
        return {trimmed, held_back, length, more}
        ",
    )
});

/// KEYS: the lease. ARGV: this host, lease ms. 1 when this host holds it now.
static TAKE_LEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"#!lua flags=allow-oom
        local holder = redis.call('GET', KEYS[1])
        if holder == false or holder == ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
        end
        return 0
        ",
    )
});

/// KEYS: a hash. ARGV: field, value pairs. Flagged `allow-oom` like the trim: the hosts'
/// declarations and the trim figures (a few short fields) must stay fresh while Redis is full,
/// or the streams filling it would stop being trimmed once their declarations expire.
static SET_FIELDS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"#!lua flags=allow-oom
        for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
        return 0
        ",
    )
});

/// KEYS: the lease. ARGV: this host. Gives the lease up only if this host holds it.
static RELEASE_LEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
    )
});

/// Trims one stream by `policy` down to what its groups still need, in steps; returns
/// (trimmed, held back, length after).
pub async fn trim(
    conn: &mut Conn,
    stream: &str,
    policy: Retention,
) -> redis::RedisResult<(u64, u64, u64)> {
    let mut trimmed_all = 0;
    for _ in 0..MAX_STEPS {
        let mut call = TRIM.prepare_invoke();
        call.key(stream)
            .arg(policy.max_age_ms.unwrap_or(0))
            .arg(policy.max_len.unwrap_or(0))
            .arg(LENGTH_STEP)
            .arg(TRIM_STEP);
        let (trimmed, held, length, more): (u64, u64, u64, u8) = call.invoke_async(conn).await?;
        trimmed_all += trimmed;
        if more == 0 || trimmed == 0 {
            return Ok((trimmed_all, held, length));
        }
    }
    let length: u64 = redis::cmd("XLEN").arg(stream).query_async(conn).await?;
    Ok((trimmed_all, 0, length))
}

/// Declares `triggers` every [`DECLARE_EVERY`] until `stop`.
pub async fn declare(mut conn: Conn, triggers: Vec<Declared>, stop: CancellationToken) {
    if triggers.is_empty() {
        return;
    }
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut call = SET_FIELDS.prepare_invoke();
        call.key(DECLARED_KEY);
        for t in &triggers {
            let field = serde_json::json!([t.stream, t.group]).to_string();
            let declaration = Declaration {
                dead_letter: t.dead_letter.clone(),
                policy: t.policy,
                seen_ms: now_ms,
            };
            let value = serde_json::to_string(&declaration).expect("a declaration serializes");
            call.arg(field).arg(value);
        }
        let written: redis::RedisResult<()> = call.invoke_async(&mut conn).await;
        let wait = match written {
            Ok(()) => DECLARE_EVERY,
            Err(error) => {
                crate::broker::counted("retention", &error);
                tracing::warn!(%error, "declaring streams for retention failed; trying again soon");
                Duration::from_secs(5)
            }
        };
        if !crate::backoff::sleep_or_cancel(wait, &stop).await {
            return;
        }
    }
}

/// The policies set with `eddy streams retention`.
pub async fn set_policies(conn: &mut Conn) -> redis::RedisResult<BTreeMap<String, Retention>> {
    json_hash(conn, POLICIES_KEY).await
}

/// A hash of stream → JSON value; fields whose value does not parse are skipped.
async fn json_hash<T: serde::de::DeserializeOwned>(
    conn: &mut Conn,
    key: &str,
) -> redis::RedisResult<BTreeMap<String, T>> {
    let raw: BTreeMap<String, String> = redis::cmd("HGETALL").arg(key).query_async(conn).await?;
    Ok(raw
        .into_iter()
        .filter_map(|(stream, json)| Some((stream, serde_json::from_str(&json).ok()?)))
        .collect())
}

/// Hosts' live declarations, by stream; and the hash fields of those that are stale at
/// `now_ms` or unreadable, to drop.
pub async fn declarations(
    conn: &mut Conn,
    now_ms: i64,
) -> redis::RedisResult<(Vec<(String, Declaration)>, Vec<String>)> {
    let raw: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(DECLARED_KEY)
        .query_async(conn)
        .await?;
    let mut live = Vec::new();
    let mut stale = Vec::new();
    for (field, json) in raw {
        let parsed = serde_json::from_str::<(String, String)>(&field)
            .ok()
            .zip(serde_json::from_str::<Declaration>(&json).ok());
        match parsed {
            Some(((stream, _group), d)) if !is_stale(d.seen_ms, now_ms) => live.push((stream, d)),
            _ => stale.push(field),
        }
    }
    Ok((live, stale))
}

/// The figures of the last passes, by stream.
pub async fn figures(conn: &mut Conn) -> redis::RedisResult<BTreeMap<String, StreamFigures>> {
    json_hash(conn, FIGURES_KEY).await
}

/// Sets (`Some`) or removes (`None`) the policy of `stream`; refuses a new stream past
/// [`MAX_SET_POLICIES`].
pub async fn put_policy(
    conn: &mut Conn,
    stream: &str,
    policy: Option<Retention>,
) -> Result<(), PutError> {
    match policy {
        None => {
            let _: () = redis::cmd("HDEL")
                .arg(POLICIES_KEY)
                .arg(stream)
                .query_async(conn)
                .await?;
        }
        Some(policy) => {
            let (count, exists): (usize, bool) = redis::pipe()
                .hlen(POLICIES_KEY)
                .hexists(POLICIES_KEY, stream)
                .query_async(conn)
                .await?;
            if !exists && count >= MAX_SET_POLICIES {
                return Err(PutError::TooMany);
            }
            let json = serde_json::to_string(&policy).expect("a policy serializes");
            let _: () = redis::cmd("HSET")
                .arg(POLICIES_KEY)
                .arg(stream)
                .arg(json)
                .query_async(conn)
                .await?;
        }
    }
    Ok(())
}

/// Why a policy could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// [`MAX_SET_POLICIES`] streams have a policy already.
    #[error("{MAX_SET_POLICIES} streams have a retention policy already: remove one first")]
    TooMany,
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Trims every stream with a policy each `interval` while this host holds the lease, until
/// `stop`.
pub async fn run(mut conn: Conn, holder: String, interval: Duration, stop: CancellationToken) {
    let lease_ms = (interval * 3).as_millis() as u64;
    loop {
        if let Err(error) = pass(&mut conn, &holder, lease_ms).await {
            crate::broker::counted("retention", &error);
            tracing::warn!(%error, "a retention pass failed; trying again at the next one");
        }
        if !crate::backoff::sleep_or_cancel(interval, &stop).await {
            break;
        }
    }
    // Let another host take over at once rather than after the lease runs out.
    let released: redis::RedisResult<()> = RELEASE_LEASE
        .key(LEASE_KEY)
        .arg(&holder)
        .invoke_async(&mut conn)
        .await;
    if let Err(error) = released {
        tracing::debug!(%error, "releasing the retention lease failed; it expires by itself");
    }
}

/// One pass: take or renew the lease, then trim each stream with a policy.
async fn pass(conn: &mut Conn, holder: &str, lease_ms: u64) -> redis::RedisResult<()> {
    if !take_lease(conn, holder, lease_ms).await? {
        return Ok(());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let set = set_policies(conn).await?;
    let (declared, stale) = declarations(conn, now_ms).await?;
    if !stale.is_empty() {
        let _: () = redis::cmd("HDEL")
            .arg(DECLARED_KEY)
            .arg(&stale)
            .query_async(conn)
            .await?;
    }
    let mut previous = figures(conn).await?;
    let mut written = Vec::new();
    for (stream, (policy, _source)) in effective(&set, &declared) {
        if policy.keeps_all() {
            continue;
        }
        // Renewed before each stream, so a long pass never outlives its lease and lets a
        // second host trim beside it.
        if !take_lease(conn, holder, lease_ms).await? {
            break;
        }
        // One stream that cannot be trimmed (its key is not a stream, Redis refused) must not
        // keep the others from being trimmed.
        let (trimmed, held_back, length) = match trim(conn, &stream, policy).await {
            Ok(done) => done,
            Err(error) => {
                crate::broker::counted("retention", &error);
                tracing::warn!(%stream, %error, "trimming a stream failed");
                continue;
            }
        };
        METRICS.trimmed(&stream, trimmed);
        let before = previous.remove(&stream).unwrap_or_default();
        let figures = StreamFigures {
            length,
            trimmed: before.trimmed + trimmed,
            held_back,
            at_ms: now_ms,
        };
        if trimmed > 0 {
            tracing::info!(%stream, trimmed, held_back, length, "trimmed by retention");
        } else if held_back > 0 {
            tracing::debug!(%stream, held_back, length, "retention held back by a group");
        }
        written.push((
            stream,
            serde_json::to_string(&figures).expect("figures serialize"),
        ));
    }
    // The figures are for people; one that cannot be written must not stop the trimming.
    let mut stored: redis::RedisResult<()> = Ok(());
    if !written.is_empty() {
        let mut call = SET_FIELDS.prepare_invoke();
        call.key(FIGURES_KEY);
        for (stream, json) in &written {
            call.arg(stream).arg(json);
        }
        stored = call.invoke_async(conn).await;
    }
    // Figures of streams no longer trimmed would otherwise linger.
    if stored.is_ok() && !previous.is_empty() {
        stored = redis::cmd("HDEL")
            .arg(FIGURES_KEY)
            .arg(previous.keys().collect::<Vec<_>>())
            .query_async(conn)
            .await;
    }
    if let Err(error) = stored {
        crate::broker::counted("retention", &error);
        tracing::warn!(%error, "writing the retention figures failed");
    }
    Ok(())
}

/// One stream's policy and figures, as `eddy streams ls` and `GET /v1/streams` show them.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRow {
    /// The stream.
    pub stream: String,
    /// Where its policy came from.
    pub source: Source,
    /// The policy's age limit (ms), if any.
    pub max_age_ms: Option<u64>,
    /// The policy's length limit, if any.
    pub max_len: Option<u64>,
    /// The policy as a person reads it.
    pub keeps: String,
    /// Its length now.
    pub length: u64,
    /// Entries trimmed so far.
    pub trimmed: u64,
    /// Entries past the policy kept because a group needs them, at the last pass.
    pub held_back: u64,
    /// When the last pass ran (ms since the Unix epoch), if one did.
    pub trimmed_at_ms: Option<i64>,
}

/// Every stream with a policy, with its length and what the last pass found.
pub async fn overview(conn: &mut Conn) -> redis::RedisResult<Vec<StreamRow>> {
    let set = set_policies(conn).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (declared, _) = declarations(conn, now_ms).await?;
    let figures = figures(conn).await?;
    let policies = effective(&set, &declared);
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    // One stream per call: a pipeline must stay in one cluster slot, and streams do not.
    let mut lengths = Vec::with_capacity(policies.len());
    for stream in policies.keys() {
        let length: u64 = LENGTH.key(stream).invoke_async(conn).await?;
        lengths.push(length);
    }
    Ok(policies
        .into_iter()
        .zip(lengths)
        .map(|((stream, (policy, source)), length)| {
            let last = figures.get(&stream).copied().unwrap_or_default();
            StreamRow {
                length,
                source,
                max_age_ms: policy.max_age_ms,
                max_len: policy.max_len,
                keeps: policy.describe(),
                trimmed: last.trimmed,
                held_back: last.held_back,
                trimmed_at_ms: (last.at_ms > 0).then_some(last.at_ms),
                stream,
            }
        })
        .collect())
}

/// KEYS: a stream. Its length, or 0 for a key of another type (which reads as empty rather
/// than failing the list).
static LENGTH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('TYPE', KEYS[1]).ok == 'stream' then return redis.call('XLEN', KEYS[1]) end
        return 0
        ",
    )
});

/// Takes the trimmer's lease for `lease_ms`, or renews it; false when another host holds it.
async fn take_lease(conn: &mut Conn, holder: &str, lease_ms: u64) -> redis::RedisResult<bool> {
    let held: u8 = TAKE_LEASE
        .key(LEASE_KEY)
        .arg(holder)
        .arg(lease_ms)
        .invoke_async(conn)
        .await?;
    Ok(held == 1)
}

/// Sets the held-back gauges from the last pass's figures, for a scrape on any host.
pub async fn refresh_gauges(conn: &mut Conn) {
    if let Ok(figures) = figures(conn).await {
        METRICS.set_held_back(
            figures
                .into_iter()
                .map(|(stream, f)| (stream, f.held_back as i64)),
        );
    }
}

/// A stream trigger's `retention` table, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    max_age: Option<String>,
    max_len: Option<i64>,
}

impl Retention {
    /// The policy a `retention` table at `at` asks for, or the field at fault. An empty table is
    /// refused: it would read as "keep everything" where the writer surely meant a limit.
    pub fn from_settings(
        at: &str,
        raw: RetentionSettings,
    ) -> Result<Retention, crate::settings::FieldError> {
        use crate::settings;
        let max_len = match raw.max_len {
            None => None,
            Some(n) => Some(u64::try_from(n).map_err(|_| {
                settings::error(
                    &format!("{at}.max_len"),
                    &n.to_string(),
                    "a count of entries from 1",
                )
            })?),
        };
        let policy = Retention::parse(raw.max_age.as_deref(), max_len)
            .map_err(|e| settings::error(&format!("{at}.{}", e.field), &e.value, &e.expected))?;
        settings::check(
            at,
            "{}",
            !policy.keeps_all(),
            "max_age and/or max_len (leave the table out to keep the default)",
        )?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_within_bounds_and_name_the_field() {
        let p = Retention::parse(Some("7d"), Some(1000)).unwrap();
        assert_eq!(p.max_age_ms, Some(7 * 24 * 3600 * 1000));
        assert_eq!(p.max_len, Some(1000));
        assert!(Retention::parse(None, None).unwrap().keeps_all());
        let error = Retention::parse(Some("soon"), None).unwrap_err();
        assert_eq!(error.field, "max_age");
        assert!(error.to_string().contains("\"soon\""), "{error}");
        assert_eq!(
            Retention::parse(Some("500ms"), None).unwrap_err().field,
            "max_age"
        );
        assert_eq!(
            Retention::parse(Some("20000d"), None).unwrap_err().field,
            "max_age"
        );
        let error = Retention::parse(None, Some(0)).unwrap_err();
        assert_eq!(error.field, "max_len");
        assert!(error.to_string().contains("from 1 to"), "{error}");
    }

    #[test]
    fn the_more_generous_policy_keeps_what_either_keeps() {
        let a = Retention::parse(Some("1d"), Some(10)).unwrap();
        let b = Retention::parse(Some("2d"), None).unwrap();
        let both = a.more_generous(b);
        assert_eq!(both.max_age_ms, b.max_age_ms);
        assert_eq!(both.max_len, None);
        assert_eq!(a.more_generous(a), a);
        assert_eq!(a.describe(), "1d or 10 entries");
        assert_eq!(
            Retention::parse(Some("90m"), Some(1)).unwrap().describe(),
            "90m or 1 entry"
        );
        assert_eq!(Retention::default().describe(), "everything");
    }

    fn declared(stream: &str, policy: Option<Retention>, seen_ms: i64) -> (String, Declaration) {
        (
            stream.to_owned(),
            Declaration {
                dead_letter: format!("{stream}.dlq"),
                policy,
                seen_ms,
            },
        )
    }

    #[test]
    fn set_beats_the_merged_manifests_and_defaults() {
        let now = 10_000_000;
        let short = Retention::parse(Some("1h"), None).unwrap();
        let long = Retention::parse(Some("2h"), None).unwrap();
        let five = Retention::parse(None, Some(5)).unwrap();
        let declarations = vec![
            declared("orders", Some(short), now),
            declared("orders", Some(long), now),
            declared("payments", None, now),
            declared("mixed", Some(five), now),
            declared("mixed", None, now),
        ];
        let set = BTreeMap::from([("payments".to_owned(), five)]);
        let policies = effective(&set, &declarations);
        assert_eq!(policies["orders"], (long, Source::Manifest));
        assert_eq!(
            policies["orders.dlq"],
            (Retention::dead_letter_default(), Source::Default)
        );
        assert_eq!(policies["payments"], (five, Source::Set));
        // A function without a policy accepts the one a manifest gives.
        assert_eq!(policies["mixed"], (five, Source::Manifest));
        let only_default = effective(&BTreeMap::new(), &[declared("x", None, now)]);
        assert_eq!(
            only_default["x"],
            (Retention::stream_default(), Source::Default)
        );
        assert!(!is_stale(now, now + DECLARATION_TTL.as_millis() as i64));
        assert!(is_stale(now, now + DECLARATION_TTL.as_millis() as i64 + 1));
    }
}
