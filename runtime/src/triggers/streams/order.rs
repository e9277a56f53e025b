//! Ordering by key: events with the same key are handled one at a time, in stream order,
//! across every host and through retries, while other keys keep full concurrency.
//!
//! A consumer group hands entries to whichever host reads first, so two events of one order
//! can run at once on two hosts, and a retry can let a later event overtake a failed one. An
//! ordered trigger therefore gives each key a *head*: the one event of the key that may run.
//! Everything lives in Redis, under the stream's hash tag (one Cluster slot, so one script sees
//! it all), per stream and group:
//! - `heads`: key → the entry id of its head;
//! - `owners`: head entry id → its key (so a head is released by id alone);
//! - `lanes`: a sorted set of the events waiting behind heads, one member per event, made of
//!   the key's length, the key and the zero-padded entry id, so members of one key sort
//!   together and in stream order (`ZRANGEBYLEX` finds a key's next event).
//!
//! **Admission.** The reader does not call `XREADGROUP` itself: the `READ` script does, inside Redis,
//! and admits each entry in the same atomic step. An entry whose key has no head becomes the
//! head and runs; one whose key has a head is *parked*: acknowledged, its fields copied into
//! the retry schedule's record hash (not its due set) and added to the lane. Scripts run one at
//! a time and `XREADGROUP` hands out entries in stream order, so admission order is stream
//! order, whichever host reads. When nothing is new, the script returns the stream's last id
//! and the reader blocks on a plain `XREAD` after it (scripts cannot block).
//!
//! **Release.** A head's final settlement (acknowledged, or dead-lettered) starts with
//! [`push_release`] in the same pipeline, which releases the key only while this host still
//! holds the head (pending for it, or leased with its token), so a settle landing late after a
//! takeover releases nothing: its key's next parked event becomes the head and is
//! made due at once in the retry schedule, where any host's retry loop leases it like a retry
//! (its first attempt). A head that fails is scheduled for retry and stays the head, so its
//! key waits until it succeeds or is dead-lettered; other keys go on.
//!
//! **Failure.** A head held by a host that dies is still pending (or leased) in Redis: another
//! host claims it once idle for the timeout plus the claim margin, as any abandoned event, and
//! the key goes on from there. A head that is neither pending nor scheduled any more (an
//! operator acknowledged it by hand, it was deleted while pending on a dead host, the group
//! was made again) is stale: the next admission of its key or the next sweep releases it, so
//! no key is blocked for ever.
//!
//! **Cost.** Per read batch, one script instead of one `XREADGROUP`, plus one `XREAD` when the
//! stream is idle; per admitted entry, two hash writes (three more and a sorted-set write if it
//! parks, and its key read out of `data` with `cjson` when the key is a data path); per settled
//! batch, one release script. A parked event later costs one lease, like a retry. Measured in
//! the streams benchmark (`ordered` rows).
//!
//! **Leaving ordering.** A trigger that starts without ordering makes every event still parked
//! due ([`unpark_all`]); a sweep of `heads` every few seconds ([`sweep`]) releases heads whose
//! event is gone, so a key never waits for an event of its own to arrive.
//!
//! What it does not order: events replayed from history or from a dead-letter stream go
//! straight into the retry schedule and run beside their key's head; an event without the key
//! runs unordered or is dead-lettered, as the trigger says ([`Unkeyed`]).

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionLike;

use crate::settings::Expected;
use crate::wire::Entry;

/// Longest ordering key kept, in bytes: an event whose key is longer is dead-lettered as
/// malformed (keys are stored in Redis per waiting event).
pub const MAX_KEY_BYTES: usize = 256;
/// Longest attribute name or data path segment in a `key` setting.
pub const MAX_KEY_NAME: usize = 64;
/// Most segments in a data path (`data.a.b.c`).
pub const MAX_KEY_PATH: usize = 8;

/// Where an event's ordering key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An entry field: a CloudEvents attribute (`subject`) or extension (`partitionkey`).
    Attribute(String),
    /// A path of object members into the JSON `data` (`data.orderId` → `["orderId"]`); a
    /// string or number there is the key.
    Data(Vec<String>),
}

impl KeySource {
    /// Reads a `key` setting: an attribute or extension name, or `data.` and a member path.
    pub fn parse(text: &str) -> Result<Self, Expected> {
        let expected = || {
            format!(
                "an attribute or extension name (lowercase letters and digits, at most \
                 {MAX_KEY_NAME}), or \"data.\" and a path of up to {MAX_KEY_PATH} member names \
                 such as \"data.orderId\""
            )
        };
        if let Some(path) = text.strip_prefix("data.") {
            let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
            let ok = parts.len() <= MAX_KEY_PATH
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= MAX_KEY_NAME && !p.contains(['\0']));
            return if ok {
                Ok(KeySource::Data(parts))
            } else {
                Err(Expected::from(expected()))
            };
        }
        let ok = !text.is_empty()
            && text.len() <= MAX_KEY_NAME
            && text != "data"
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(KeySource::Attribute(text.to_owned()))
        } else {
            Err(Expected::from(expected()))
        }
    }

    /// How the read script is told about it: `f:<field>` or `d:<path with dots>`.
    fn spec(&self) -> String {
        match self {
            KeySource::Attribute(name) => format!("f:{name}"),
            KeySource::Data(path) => format!("d:{}", path.join(".")),
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Attribute(name) => f.write_str(name),
            KeySource::Data(path) => write!(f, "data.{}", path.join(".")),
        }
    }
}

/// What an ordered trigger does with an event that has no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unkeyed {
    /// Handle it at once, beside every key (the default).
    #[default]
    Unordered,
    /// Dead-letter it as malformed without running it.
    Reject,
}

/// An ordered trigger's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordering {
    /// Where the key is read, first found wins ([`Ordering::default_key`] unless set).
    pub key: Vec<KeySource>,
    /// What happens to an event with none of them.
    pub unkeyed: Unkeyed,
}

impl Ordering {
    /// The key when the manifest names none: the CloudEvents `partitionkey` extension, then
    /// `subject`.
    pub fn default_key() -> Vec<KeySource> {
        vec![
            KeySource::Attribute("partitionkey".to_owned()),
            KeySource::Attribute("subject".to_owned()),
        ]
    }

    /// The key's description for messages: `partitionkey or subject`.
    pub fn describe_key(&self) -> String {
        self.key
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// The Redis keys of one ordered trigger (stream and group).
#[derive(Debug, Clone)]
pub struct OrderKeys {
    heads: String,
    owners: String,
    lanes: String,
}

impl OrderKeys {
    /// The keys for `stream` read through `group`, in the stream's Cluster slot.
    pub fn new(stream: &str, group: &str) -> Self {
        let base = format!("eddy:{{{stream}}}:{group}:order");
        Self {
            heads: format!("{base}:heads"),
            owners: format!("{base}:owners"),
            lanes: format!("{base}:lanes"),
        }
    }
}

/// One entry an ordered read returns: to run, or refused without running (the reason).
#[derive(Debug)]
pub struct Admitted {
    /// The entry.
    pub entry: Entry,
    /// Why it must not run, when it must not.
    pub refused: Option<String>,
}

/// What an ordered read found.
#[derive(Debug)]
pub enum Read {
    /// Entries admitted to run (parked ones are not among them); may be empty when every entry
    /// read was parked.
    Entries(Vec<Admitted>),
    /// Nothing new: block on `XREAD` after this id.
    Idle(String),
}

/// Lua shared by the scripts: padding ids, lane members, whether a head is still held, and
/// releasing a head. KEYS (common to all): stream, heads, owners, lanes, due, data, lease.
const PRELUDE: &str = r"
local stream, heads, owners, lanes, due, data = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lease = KEYS[7]
local function held(id, group)
    if redis.call('HEXISTS', data, id) == 1 then return true end
    return #redis.call('XPENDING', stream, group, id, id, 1) > 0
end
local function pad(n) return string.rep('0', 20 - #n) .. n end
local function prefix(key) return string.format('%05d', #key) .. key end
local function member(key, id)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    return prefix(key) .. pad(ms) .. '-' .. pad(seq)
end
local function unpad(n) return (string.gsub(n, '^0+(%d)', '%1')) end
local function id_of(key, m)
    local ms, seq = string.match(string.sub(m, #prefix(key) + 1), '^(%d+)-(%d+)$')
    return unpad(ms) .. '-' .. unpad(seq)
end
local function release(id, now)
    local key = redis.call('HGET', owners, id)
    if not key then return 0 end
    redis.call('HDEL', owners, id)
    if redis.call('HGET', heads, key) ~= id then return 0 end
    local p = prefix(key)
    while true do
        local next = redis.call('ZRANGEBYLEX', lanes, '[' .. p, '[' .. p .. '\255', 'LIMIT', 0, 1)[1]
        if not next then
            redis.call('HDEL', heads, key)
            return 0
        end
        redis.call('ZREM', lanes, next)
        local nid = id_of(key, next)
        if redis.call('HEXISTS', data, nid) == 1 then
            redis.call('HSET', heads, key, nid)
            redis.call('HSET', owners, nid, key)
            redis.call('ZADD', due, now, nid)
            return 1
        end
    end
end
";

/// KEYS: stream, heads, owners, lanes, due, data. ARGV: group, consumer, count,
/// reject unkeyed (1/0), longest key, now ms, then key specs. Returns `{0, last id}` when
/// nothing is new, else `{1, {id, fields, verdict}...}` with verdict `run`, `nokey` or `long`.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local group, consumer = ARGV[1], ARGV[2]
local reject, longest, now = ARGV[4] == '1', tonumber(ARGV[5]), ARGV[6]
local specs = {}
for i = 7, #ARGV do specs[#specs + 1] = ARGV[i] end
local function field(fields, name)
    for i = 1, #fields, 2 do
        if fields[i] == name then return fields[i + 1] end
    end
    return nil
end
local decoded
local function key_of(fields)
    decoded = nil
    for _, spec in ipairs(specs) do
        local kind, name = string.sub(spec, 1, 1), string.sub(spec, 3)
        local value
        if kind == 'f' then
            value = field(fields, name)
        else
            if decoded == nil then
                local raw = field(fields, 'data')
                local ok, v = false, nil
                if raw then ok, v = pcall(cjson.decode, raw) end
                decoded = ok and v or false
            end
            value = decoded
            for part in string.gmatch(name, '[^.]+') do
                if type(value) ~= 'table' then value = nil break end
                value = value[part]
            end
            if type(value) == 'number' then
                if value == math.floor(value) and math.abs(value) < 2^53 then
                    value = string.format('%d', value)
                else
                    value = string.format('%.17g', value)
                end
            elseif type(value) ~= 'string' then
                value = nil
            end
        end
        if value and #value > 0 then return value end
    end
    return nil
end
local function record(fields)
    local function u32(n)
        return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
            math.floor(n / 16777216) % 256)
    end
    local parts = {string.char(1), string.rep('\0', 18), u32(0), u32(0), u32(#fields / 2)}
    for i = 1, #fields do
        parts[#parts + 1] = u32(#fields[i])
        parts[#parts + 1] = fields[i]
    end
    return table.concat(parts)
end
local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[3],
    'STREAMS', stream, '>')
if not read then
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    return {0, last and last[1] or '0-0'}
end
local out = {}
for _, entry in ipairs(read[1][2]) do
    local id, fields = entry[1], entry[2]
    local key = key_of(fields)
    local verdict = 'run'
    if key == nil then
        if reject then verdict = 'nokey' end
    elseif #key > longest then
        verdict = 'long'
    else
        local head = redis.call('HGET', heads, key)
        if head and head ~= id and not held(head, group) then
            release(head, now)
            head = redis.call('HGET', heads, key)
        end
        if not head or head == id then
            redis.call('HSET', heads, key, id)
            redis.call('HSET', owners, id, key)
        else
            redis.call('XACK', stream, group, id)
            redis.call('HSET', data, id, record(fields))
            redis.call('ZADD', lanes, 0, member(key, id))
            verdict = nil
        end
    end
    if verdict then out[#out + 1] = {id, fields, verdict} end
end
return {1, out}
",
    ))
});

/// KEYS: stream, heads, owners, lanes, due, data, lease. ARGV: now ms, group, consumer, then
/// (entry id, lease token) pairs, the token empty for a pending entry. Each id's key is
/// released only if this host still holds the id (pending for this consumer, or leased with
/// that token): a settle that lands late, after another host took the event over, releases
/// nothing. Sent before the acknowledgements in the same pipeline, while the proof stands.
/// Returns how many parked events became due.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local made = 0
for i = 4, #ARGV, 2 do
    local id, token = ARGV[i], ARGV[i + 1]
    local mine
    if token == '' then
        mine = #redis.call('XPENDING', stream, ARGV[2], id, id, 1, ARGV[3]) > 0
    else
        mine = redis.call('HGET', lease, id) == token
    end
    if mine then made = made + release(id, ARGV[1]) end
end
return made
",
    ))
});

/// KEYS: as [`RELEASE`]. ARGV: now ms, group, HSCAN cursor. Releases the stale heads (neither
/// pending nor scheduled: acknowledged by hand, deleted while pending on a dead host) among
/// the next few; returns the next cursor and how many were released.
static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local page = redis.call('HSCAN', heads, ARGV[3], 'COUNT', 100)
local released = 0
for i = 1, #page[2], 2 do
    local head = page[2][i + 1]
    if not held(head, ARGV[2]) then
        if not redis.call('HGET', owners, head) then
            redis.call('HSET', owners, head, page[2][i])
        end
        release(head, ARGV[1])
        released = released + 1
    end
end
return {page[1], released}
",
    ))
});

/// KEYS: as [`RELEASE`]. ARGV: now ms. For a trigger no longer ordered: makes up to 1,000
/// parked events due (they run unordered now) and, once none is left, forgets the heads.
/// Returns how many it made due.
static UNPARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PRELUDE}{}",
        r"
local members = redis.call('ZRANGE', lanes, 0, 999)
for _, m in ipairs(members) do
    local key_len = tonumber(string.sub(m, 1, 5))
    local id = id_of(string.sub(m, 6, 5 + key_len), m)
    if redis.call('HEXISTS', data, id) == 1 then
        redis.call('ZADD', due, ARGV[1], id)
    end
    redis.call('ZREM', lanes, m)
end
if #members < 1000 then redis.call('DEL', heads, owners) end
return #members
",
    ))
});

fn prepare<'a>(
    script: &'a Script,
    stream: &str,
    keys: &OrderKeys,
    retry: &crate::delivery::RetryKeys,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(stream)
        .key(&keys.heads)
        .key(&keys.owners)
        .key(&keys.lanes);
    retry.add_for_ordering(&mut invocation);
    invocation
}

/// Reads up to `count` new entries as `consumer` and admits them (see the module docs).
#[allow(clippy::too_many_arguments)]
pub async fn read<C: ConnectionLike>(
    conn: &mut C,
    config: &super::StreamTriggerConfig,
    ordering: &Ordering,
    keys: &OrderKeys,
    retry: &crate::delivery::RetryKeys,
    consumer: &str,
    count: usize,
    now_ms: i64,
) -> redis::RedisResult<Read> {
    let mut invocation = prepare(&READ, &config.stream, keys, retry);
    invocation
        .arg(&config.group)
        .arg(consumer)
        .arg(count)
        .arg(u8::from(ordering.unkeyed == Unkeyed::Reject))
        .arg(MAX_KEY_BYTES)
        .arg(now_ms);
    for source in &ordering.key {
        invocation.arg(source.spec());
    }
    let reply: redis::Value = match invocation.invoke_async(conn).await {
        Err(error) if crate::broker::is_noscript(&error) => {
            // A script cache flushed between the load and the call: once more, loading it.
            READ.load_async(conn).await?;
            invocation.invoke_async(conn).await?
        }
        other => other?,
    };
    parse_read(reply, ordering)
}

fn parse_read(reply: redis::Value, ordering: &Ordering) -> redis::RedisResult<Read> {
    let invalid = |what: &str| {
        redis::RedisError::from((redis::ErrorKind::Parse, "ordered read", what.to_owned()))
    };
    let redis::Value::Array(mut parts) = reply else {
        return Err(invalid("not an array"));
    };
    if parts.len() != 2 {
        return Err(invalid("not a pair"));
    }
    let body = parts.pop().expect("two parts");
    let flag: i64 = redis::from_redis_value(parts.pop().expect("two parts"))?;
    if flag == 0 {
        return Ok(Read::Idle(redis::from_redis_value(body)?));
    }
    let redis::Value::Array(rows) = body else {
        return Ok(Read::Entries(Vec::new()));
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, fields, verdict): (String, Vec<(String, Vec<u8>)>, String) =
            redis::from_redis_value(row)?;
        let refused = match verdict.as_str() {
            "nokey" => Some(format!(
                "no ordering key: the trigger orders by {} and refuses events without one",
                ordering.describe_key()
            )),
            "long" => Some(format!(
                "ordering key longer than {MAX_KEY_BYTES} bytes (from {})",
                ordering.describe_key()
            )),
            _ => None,
        };
        out.push(Admitted {
            entry: Entry {
                id,
                fields: Some(fields),
            },
            refused,
        });
    }
    Ok(Read::Entries(out))
}

/// Adds to `pipe` releasing the keys held by `ids` (heads whose settlement is final, each with
/// its lease token or `""` for a pending entry; ids that hold no key are skipped). Must come
/// before the settlement's acknowledgements in the pipeline (see the `RELEASE` script).
#[allow(clippy::too_many_arguments)]
pub fn push_release(
    pipe: &mut redis::Pipeline,
    stream: &str,
    group: &str,
    consumer: &str,
    keys: &OrderKeys,
    retry: &crate::delivery::RetryKeys,
    now_ms: i64,
    ids: &[(String, String)],
) {
    let mut invocation = prepare(&RELEASE, stream, keys, retry);
    invocation.arg(now_ms).arg(group).arg(consumer);
    for (id, token) in ids {
        invocation.arg(id).arg(token);
    }
    pipe.invoke_script(&invocation).ignore();
}

/// Releases stale heads among the next page of `heads` from `cursor`; returns the next cursor
/// (`0` once round) and how many were released.
pub async fn sweep<C: ConnectionLike>(
    conn: &mut C,
    config: &super::StreamTriggerConfig,
    keys: &OrderKeys,
    retry: &crate::delivery::RetryKeys,
    cursor: u64,
    now_ms: i64,
) -> redis::RedisResult<(u64, u64)> {
    let mut invocation = prepare(&SWEEP, &config.stream, keys, retry);
    invocation.arg(now_ms).arg(&config.group).arg(cursor);
    let (cursor, released): (String, u64) = invocation.invoke_async(conn).await?;
    Ok((cursor.parse().unwrap_or(0), released))
}

/// For a trigger that is not ordered (any more): makes every event its ordered past left
/// parked due, so none waits for a release that no longer comes. One `EXISTS` when there is
/// nothing to do.
pub async fn unpark_all<C: ConnectionLike>(
    conn: &mut C,
    config: &super::StreamTriggerConfig,
    retry: &crate::delivery::RetryKeys,
    now_ms: i64,
) -> redis::RedisResult<u64> {
    let keys = OrderKeys::new(&config.stream, &config.group);
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&keys.lanes)
        .arg(&keys.heads)
        .query_async(conn)
        .await?;
    if exists == 0 {
        return Ok(0);
    }
    let mut made = 0;
    loop {
        let mut invocation = prepare(&UNPARK, &config.stream, &keys, retry);
        invocation.arg(now_ms);
        let batch: u64 = invocation.invoke_async(conn).await?;
        made += batch;
        if batch < 1000 {
            return Ok(made);
        }
    }
}

/// Loads the scripts, after Redis answered `NOSCRIPT` to a pipeline.
pub async fn load_scripts<C: ConnectionLike>(conn: &mut C) -> redis::RedisResult<()> {
    for script in [&*READ, &*RELEASE, &*SWEEP, &*UNPARK] {
        script.load_async(conn).await?;
    }
    Ok(())
}

impl Ordering {
    /// The ordering a stream trigger at `at` asks for with its `ordering`, `key` and `unkeyed`
    /// fields (none unless `ordering = "key"`), or the field at fault.
    pub fn from_settings(
        at: &str,
        ordering: Option<&str>,
        key: Option<&str>,
        unkeyed: Option<Unkeyed>,
    ) -> Result<Option<Ordering>, crate::settings::FieldError> {
        use crate::settings;
        match ordering {
            None | Some("none") => {
                let unkeyed = unkeyed.map(|u| format!("{u:?}").to_lowercase());
                for (name, value) in [("key", key.map(str::to_owned)), ("unkeyed", unkeyed)] {
                    if let Some(value) = value {
                        return Err(settings::error(
                            &format!("{at}.{name}"),
                            &format!("{value:?}"),
                            "ordering = \"key\" beside it (it only means something on a trigger \
                             ordered by key)",
                        ));
                    }
                }
                Ok(None)
            }
            Some("key") => {
                let key = match key {
                    None => Ordering::default_key(),
                    Some(text) => vec![KeySource::parse(text).map_err(|expected| {
                        settings::error(&format!("{at}.key"), &format!("{text:?}"), &expected)
                    })?],
                };
                Ok(Some(Ordering {
                    key,
                    unkeyed: unkeyed.unwrap_or_default(),
                }))
            }
            Some(other) => Err(settings::error(
                &format!("{at}.ordering"),
                &format!("{other:?}"),
                "\"key\" (events with the same key one at a time, in stream order) or \"none\"",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_settings_read_back_or_name_what_is_expected() {
        assert_eq!(
            KeySource::parse("partitionkey"),
            Ok(KeySource::Attribute("partitionkey".into()))
        );
        assert_eq!(
            KeySource::parse("data.order.id"),
            Ok(KeySource::Data(vec!["order".into(), "id".into()]))
        );
        for bad in [
            "",
            "data",
            "Subject",
            "data.",
            "data.a..b",
            "sub ject",
            &"k".repeat(MAX_KEY_NAME + 1),
            &format!("data{}", ".a".repeat(MAX_KEY_PATH + 1)),
        ] {
            let error = KeySource::parse(bad).expect_err(bad);
            assert!(error.contains("data.orderId"), "{error}");
        }
        let ordering = Ordering {
            key: Ordering::default_key(),
            unkeyed: Unkeyed::Unordered,
        };
        assert_eq!(ordering.describe_key(), "partitionkey or subject");
    }

    #[test]
    fn keys_share_the_stream_slot() {
        let keys = OrderKeys::new("orders", "billing");
        for key in [&keys.heads, &keys.owners, &keys.lanes] {
            assert!(key.starts_with("eddy:{orders}:billing:order:"), "{key}");
        }
    }

    #[test]
    fn the_script_s_parked_record_is_the_schedule_s_record_layout() {
        // READ writes a version-1 record by hand: no failure yet, then the fields, each
        // length-prefixed. The same bytes must come out of the Rust encoder.
        let fields = vec![
            ("type".to_owned(), b"A".to_vec()),
            ("data".to_owned(), b"{}".to_vec()),
        ];
        let mut by_hand = vec![1u8];
        by_hand.extend([0u8; 18]);
        by_hand.extend(0u32.to_le_bytes());
        by_hand.extend(0u32.to_le_bytes());
        by_hand.extend((fields.len() as u32).to_le_bytes());
        for (name, value) in &fields {
            by_hand.extend((name.len() as u32).to_le_bytes());
            by_hand.extend(name.as_bytes());
            by_hand.extend((value.len() as u32).to_le_bytes());
            by_hand.extend(value);
        }
        let record = crate::delivery::RetryRecord {
            fields,
            ..Default::default()
        };
        assert_eq!(record.encode(), by_hand);
    }
}
