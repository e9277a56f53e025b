//! Retention: streams that do not grow forever, trimmed without ever losing an entry a consumer
//! group still needs.
//!
//! A stream's **policy** keeps at most a duration and/or a length of entries. It comes from, in
//! order: `eddy streams retention STREAM …` (stored in [`POLICIES_KEY`]); the manifests of the
//! functions whose triggers read it (the most generous of them, so one function cannot shorten
//! another's history); else the default, [`DEFAULT_MAX_AGE`] for a triggered stream and
//! [`DEFAULT_DEAD_LETTER_MAX_AGE`] for a dead-letter stream. A stream no trigger reads and no
//! one set a policy for is never trimmed. Hosts **declare** the streams their triggers read
//! (and their dead-letter streams) in [`DECLARED_KEY`] every [`DECLARE_EVERY`]; a declaration
//! not refreshed for [`DECLARATION_TTL`] (the function is gone) is dropped.
//!
//! **The floor.** One Lua script per stream computes, atomically with the trim itself, the
//! oldest entry any group of the stream still needs: for each group, the entry after its
//! last-delivered id, its oldest pending entry, and the oldest entry in its retry schedule
//! (retries carry their own copy of the fields, but `eddy replay` and an operator reading the
//! stream expect the original to be there while it is being retried). The script trims with
//! `XTRIM MINID` to the policy's cut-off or to that floor, whichever is older. Being one
//! script, no group can be created or rewound between reading the floor and trimming. A stream
//! no group reads is trimmed by its policy alone. Entries kept only because of the floor are
//! counted (**held back**), so an operator sees why memory grows.
//!
//! **One trimmer at a time.** A host trims only while it holds the lease [`LEASE_KEY`] (a
//! Redis key with an expiry, renewed each pass): no coordination service beside Redis. Each
//! script call trims at most [`TRIM_STEP`] entries, so a first trim of a long stream never
//! blocks Redis for long; the pass calls it again until the stream is done.
//!
//! Cost: per stream and pass, one script running `XLEN`, `XINFO GROUPS`, one `XPENDING`
//! summary and one `HKEYS` of the retry schedule per group, an `XRANGE` of at most
//! [`TRIM_STEP`] entries for a length policy and the `XTRIM`.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;

/// How long a triggered stream keeps entries unless told otherwise: 7 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a dead-letter stream keeps entries unless told otherwise: 30 days.
pub const DEFAULT_DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest age a policy may keep: shorter would trim events before a host reads them.
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
/// Entries one script call trims at most.
pub const TRIM_STEP: u64 = 1000;
/// Script calls per stream and pass at most: a pass trims at most this × [`TRIM_STEP`].
pub const MAX_STEPS: u32 = 1000;
/// Held-back entries are counted up to this many (the gauge then reads this).
pub const HELD_COUNT_LIMIT: u64 = 10_000;
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
                    humantime::format_duration(MIN_MAX_AGE),
                    humantime::format_duration(MAX_MAX_AGE)
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
        let age = self
            .max_age_ms
            .map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string());
        let len = self.max_len.map(|n| format!("{n} entries"));
        match (age, len) {
            (Some(age), Some(len)) => format!("{age} or {len}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "everything".to_owned(),
        }
    }
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
    /// Entries past the policy kept because a group needs them (at most
    /// [`HELD_COUNT_LIMIT`]).
    pub held_back: u64,
    /// When the pass ran (ms since the Unix epoch).
    pub at_ms: i64,
}

/// The policy each stream is trimmed by, from what was set and what hosts declared (those
/// older than [`DECLARATION_TTL`] at `now_ms` are ignored).
pub fn effective(
    set: &BTreeMap<String, Retention>,
    declared: &[(String, Declaration)],
    now_ms: i64,
) -> BTreeMap<String, (Retention, Source)> {
    let mut out: BTreeMap<String, (Retention, Source)> = BTreeMap::new();
    let live = declared
        .iter()
        .filter(|(_, d)| now_ms - d.seen_ms <= DECLARATION_TTL.as_millis() as i64);
    for (stream, declaration) in live {
        let (policy, source) = match declaration.policy {
            Some(policy) => (policy, Source::Manifest),
            None => (Retention::stream_default(), Source::Default),
        };
        out.entry(stream.clone())
            .and_modify(|(kept, kept_source)| match (*kept_source, source) {
                (Source::Default, Source::Manifest) => (*kept, *kept_source) = (policy, source),
                (Source::Manifest, Source::Manifest) => *kept = kept.more_generous(policy),
                _ => {}
            })
            .or_insert((policy, source));
        out.entry(declaration.dead_letter.clone())
            .or_insert((Retention::dead_letter_default(), Source::Default));
    }
    for (stream, policy) in set {
        out.insert(stream.clone(), (*policy, Source::Set));
    }
    out
}

/// KEYS: the stream. ARGV: max age (ms, 0: none), max length (0: none), step, held-count
/// limit. Returns {trimmed, held back, length after, more to trim (0/1)}. Ages are measured by
/// Redis's clock, the one entry ids are made from, so a host's clock skew does not matter.
static TRIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local stream = KEYS[1]
        local max_age, max_len = tonumber(ARGV[1]), tonumber(ARGV[2])
        local step, held_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        if redis.call('EXISTS', stream) == 0 or redis.call('TYPE', stream).ok ~= 'stream' then
            return {0, 0, 0, 0}
        end
        local function parse(id)
            local ms, seq = string.match(id, '^(%d+)-(%d+)$')
            return {tonumber(ms), tonumber(seq)}
        end
        local function older(a, b)
            return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
        end
        local function after(id)
            local p = parse(id)
            return {p[1], p[2] + 1}
        end
        local len = redis.call('XLEN', stream)
        -- The policy's cut-off: entries older than it are to go.
        local cut = nil
        if max_age > 0 then cut = {now - max_age, 0} end
        if max_len > 0 and len > max_len then
            local over = redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(len - max_len, step))
            local c = after(over[#over][1])
            if cut == nil or older(cut, c) then cut = c end
        end
        if cut == nil then return {0, 0, len, 0} end
        -- At most `step` entries per call.
        local more = 0
        local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', step)
        if #first == step then
            local bound = after(first[#first][1])
            if older(bound, cut) then cut = bound; more = 1 end
        end
        -- The floor: the oldest entry some group still needs.
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
            local retries = 'eddy:{' .. stream .. '}:' .. name .. ':retry:data'
            for _, id in ipairs(redis.call('HKEYS', retries)) do need(parse(id)) end
        end
        local held = false
        if floor ~= nil and older(floor, cut) then cut = floor; held = true; more = 0 end
        local trimmed = redis.call('XTRIM', stream, 'MINID', string.format('%.0f-%.0f', cut[1], cut[2]))
        local length = len - trimmed
        local held_back = 0
        if held then
            if max_len > 0 and length > max_len then held_back = length - max_len end
            if max_age > 0 then
                local old = redis.call('XRANGE', stream, '-', '(' .. string.format('%.0f', now - max_age) .. '-0', 'COUNT', held_limit)
                if #old > held_back then held_back = #old end
            end
            if held_back > held_limit then held_back = held_limit end
        end
        return {trimmed, held_back, length, more}
        ",
    )
});

/// KEYS: the lease. ARGV: this host, lease ms. 1 when this host holds it now.
static TAKE_LEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local holder = redis.call('GET', KEYS[1])
        if holder == false or holder == ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
        end
        return 0
        ",
    )
});

/// Trims one stream by `policy` down to what its groups still need, in steps; returns
/// (trimmed, held back, length after).
pub async fn trim(
    conn: &mut ConnectionManager,
    stream: &str,
    policy: Retention,
) -> redis::RedisResult<(u64, u64, u64)> {
    let mut trimmed_all = 0;
    for _ in 0..MAX_STEPS {
        let mut call = TRIM.prepare_invoke();
        call.key(stream)
            .arg(policy.max_age_ms.unwrap_or(0))
            .arg(policy.max_len.unwrap_or(0))
            .arg(TRIM_STEP)
            .arg(HELD_COUNT_LIMIT);
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
pub async fn declare(
    mut conn: ConnectionManager,
    triggers: Vec<Declared>,
    stop: CancellationToken,
) {
    if triggers.is_empty() {
        return;
    }
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        for t in &triggers {
            let field = serde_json::json!([t.stream, t.group]).to_string();
            let declaration = Declaration {
                dead_letter: t.dead_letter.clone(),
                policy: t.policy,
                seen_ms: now_ms,
            };
            let value = serde_json::to_string(&declaration).expect("a declaration serializes");
            pipe.hset(DECLARED_KEY, field, value).ignore();
        }
        let written: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        let wait = match written {
            Ok(()) => DECLARE_EVERY,
            Err(error) => {
                crate::broker::counted("retention", &error);
                tracing::warn!(%error, "declaring streams for retention failed; trying again soon");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The policies set with `eddy streams retention`.
pub async fn set_policies(
    conn: &mut ConnectionManager,
) -> redis::RedisResult<BTreeMap<String, Retention>> {
    let raw: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(POLICIES_KEY)
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .filter_map(|(stream, json)| Some((stream, serde_json::from_str(&json).ok()?)))
        .collect())
}

/// Hosts' declarations, whatever their age, by stream; and the hash fields of those that are
/// stale at `now_ms` or unreadable, to drop.
pub async fn declarations(
    conn: &mut ConnectionManager,
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
            Some(((stream, _group), d))
                if now_ms - d.seen_ms <= DECLARATION_TTL.as_millis() as i64 =>
            {
                live.push((stream, d))
            }
            _ => stale.push(field),
        }
    }
    Ok((live, stale))
}

/// The figures of the last passes, by stream.
pub async fn figures(
    conn: &mut ConnectionManager,
) -> redis::RedisResult<BTreeMap<String, StreamFigures>> {
    let raw: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(FIGURES_KEY)
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .filter_map(|(stream, json)| Some((stream, serde_json::from_str(&json).ok()?)))
        .collect())
}

/// Sets (`Some`) or removes (`None`) the policy of `stream`; refuses a new stream past
/// [`MAX_SET_POLICIES`].
pub async fn put_policy(
    conn: &mut ConnectionManager,
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
pub async fn run(
    mut conn: ConnectionManager,
    holder: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let lease_ms = (interval * 3).as_millis() as u64;
    loop {
        if let Err(error) = pass(&mut conn, &holder, lease_ms).await {
            crate::broker::counted("retention", &error);
            tracing::warn!(%error, "a retention pass failed; trying again at the next one");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => break,
        }
    }
    // Let another host take over at once rather than after the lease runs out.
    let released: redis::RedisResult<()> = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
    )
    .key(LEASE_KEY)
    .arg(&holder)
    .invoke_async(&mut conn)
    .await;
    if let Err(error) = released {
        tracing::debug!(%error, "releasing the retention lease failed; it expires by itself");
    }
}

/// One pass: take or renew the lease, then trim each stream with a policy.
async fn pass(conn: &mut ConnectionManager, holder: &str, lease_ms: u64) -> redis::RedisResult<()> {
    let held: u8 = TAKE_LEASE
        .key(LEASE_KEY)
        .arg(holder)
        .arg(lease_ms)
        .invoke_async(conn)
        .await?;
    if held == 0 {
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
    for (stream, (policy, _source)) in effective(&set, &declared, now_ms) {
        if policy.keeps_all() {
            continue;
        }
        let (trimmed, held_back, length) = trim(conn, &stream, policy).await?;
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
        let json = serde_json::to_string(&figures).expect("figures serialize");
        let _: () = redis::cmd("HSET")
            .arg(FIGURES_KEY)
            .arg(&stream)
            .arg(json)
            .query_async(conn)
            .await?;
    }
    // Figures of streams no longer trimmed would otherwise linger.
    if !previous.is_empty() {
        let gone: Vec<&String> = previous.keys().collect();
        let _: () = redis::cmd("HDEL")
            .arg(FIGURES_KEY)
            .arg(gone)
            .query_async(conn)
            .await?;
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
pub async fn overview(conn: &mut ConnectionManager) -> redis::RedisResult<Vec<StreamRow>> {
    let set = set_policies(conn).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (declared, _) = declarations(conn, now_ms).await?;
    let figures = figures(conn).await?;
    let policies = effective(&set, &declared, now_ms);
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for stream in policies.keys() {
        pipe.cmd("XLEN").arg(stream);
    }
    // A key of another type makes XLEN fail; it reads as empty rather than failing the list.
    let lengths: Vec<redis::Value> = pipe.query_async(conn).await?;
    Ok(policies
        .into_iter()
        .zip(lengths)
        .map(|((stream, (policy, source)), length)| {
            let last = figures.get(&stream).copied().unwrap_or_default();
            StreamRow {
                length: redis::from_redis_value(length).unwrap_or(0),
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

/// Sets the held-back gauges from the last pass's figures, for a scrape on any host.
pub async fn refresh_gauges(conn: &mut ConnectionManager) {
    if let Ok(figures) = figures(conn).await {
        for (stream, f) in figures {
            METRICS.held_back(&stream, f.held_back as i64);
        }
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
        assert_eq!(a.describe(), "1day or 10 entries");
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
    fn set_beats_manifest_beats_default_and_stale_declarations_are_ignored() {
        let now = 10_000_000;
        let short = Retention::parse(Some("1h"), None).unwrap();
        let long = Retention::parse(Some("2h"), None).unwrap();
        let set_one = Retention::parse(None, Some(5)).unwrap();
        let declarations = vec![
            declared("orders", None, now),
            declared("orders", Some(short), now),
            declared("orders", Some(long), now),
            declared(
                "gone",
                Some(short),
                now - DECLARATION_TTL.as_millis() as i64 - 1,
            ),
            declared("payments", None, now),
        ];
        let set = BTreeMap::from([("payments".to_owned(), set_one)]);
        let policies = effective(&set, &declarations, now);
        assert_eq!(policies["orders"], (long, Source::Manifest));
        assert_eq!(
            policies["orders.dlq"],
            (Retention::dead_letter_default(), Source::Default)
        );
        assert_eq!(policies["payments"], (set_one, Source::Set));
        assert_eq!(
            policies["payments.dlq"],
            (Retention::dead_letter_default(), Source::Default)
        );
        assert!(!policies.contains_key("gone"));
        let only_default = effective(&BTreeMap::new(), &[declared("x", None, now)], now);
        assert_eq!(
            only_default["x"],
            (Retention::stream_default(), Source::Default)
        );
    }
}
