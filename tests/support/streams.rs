//! Helpers for stream tests: unique names, manifests, reading streams, and polling with a
//! deadline instead of sleeping a fixed time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::Commands as _;

use crate::wasm;

/// A name unique to this test run: `<base>-<random>`, so tests run in parallel on one Redis.
pub fn unique(base: &str) -> String {
    format!("{base}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() as u32
}

/// Writes a manifest `<name>.toml` in `dir` for function `name` running component
/// `component` (a crate of `functions/`), followed by `rest` (more TOML).
pub fn manifest(dir: &Path, name: &str, component: &str, rest: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = {name:?}\ncomponent = {:?}\n{rest}",
        wasm(component).display().to_string()
    );
    std::fs::write(&path, text).expect("writing manifest");
    path
}

/// Writes the manifest of a `record` fixture function `name` (see functions/fixtures/record)
/// reading `stream` and recording every attempt into `records`; `settings` adds `[config]`
/// lines, `trigger` adds lines to its `[[triggers.stream]]`.
pub fn record_function(
    dir: &Path,
    name: &str,
    stream: &str,
    records: &str,
    settings: &str,
    trigger: &str,
) -> PathBuf {
    manifest(
        dir,
        name,
        "record",
        &format!(
            "publish = [{records:?}]\n[config]\nrecord_stream = {records:?}\n{settings}\n\
             [[triggers.stream]]\nstream = {stream:?}\n{trigger}\n"
        ),
    )
}

/// One stream entry: its id and fields (values as text, lossily).
#[derive(Debug, Clone)]
pub struct StreamEntry {
    /// The entry id.
    pub id: String,
    /// The fields.
    pub fields: HashMap<String, String>,
}

impl StreamEntry {
    /// Field `name`, or a panic naming the entry.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("entry {} has no field {name}: {:?}", self.id, self.fields))
    }

    /// The `data` field parsed as JSON.
    pub fn data(&self) -> serde_json::Value {
        serde_json::from_str(self.get("data")).expect("data is JSON")
    }

    /// The millisecond part of the entry id: when Redis added it.
    pub fn millis(&self) -> u64 {
        self.id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .expect("entry id")
    }
}

/// An `XRANGE` reply: ids with their fields.
type RawEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// Every entry of `stream`, oldest first.
pub fn entries(conn: &mut impl redis::ConnectionLike, stream: &str) -> Vec<StreamEntry> {
    let raw: RawEntries = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE");
    raw.into_iter()
        .map(|(id, fields)| StreamEntry {
            id,
            fields: fields
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
        })
        .collect()
}

/// Adds an entry with `fields` to `stream` and returns its id.
pub fn add(conn: &mut impl redis::ConnectionLike, stream: &str, fields: &[(&str, &str)]) -> String {
    conn.xadd(stream, "*", fields).expect("XADD")
}

/// Entries pending (delivered, not acknowledged) in `group` of `stream`.
pub fn pending(conn: &mut impl redis::ConnectionLike, stream: &str, group: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(conn)
        .expect("XPENDING");
    match summary {
        redis::Value::Array(items) => redis::from_redis_value(items[0].clone()).unwrap_or(0),
        _ => 0,
    }
}

/// Entries waiting in the retry schedule of `group` on `stream`.
pub fn scheduled_retries(conn: &mut impl redis::ConnectionLike, stream: &str, group: &str) -> u64 {
    conn.zcard(format!("eddy:{{{stream}}}:{group}:retry:due"))
        .expect("ZCARD")
}

/// What `XINFO GROUPS` says of each consumer group of `stream` (none if there is no stream).
fn groups_info(
    conn: &mut impl redis::ConnectionLike,
    stream: &str,
) -> Vec<HashMap<String, redis::Value>> {
    redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(conn)
        .unwrap_or_default()
}

/// A group's name as `XINFO GROUPS` gives it.
fn group_name(info: &HashMap<String, redis::Value>) -> Option<String> {
    info.get("name")
        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
}

/// What `XINFO GROUPS` says of `group` on `stream`; `None` when the group does not exist.
fn group_info(
    conn: &mut impl redis::ConnectionLike,
    stream: &str,
    group: &str,
) -> Option<HashMap<String, redis::Value>> {
    groups_info(conn, stream)
        .into_iter()
        .find(|g| group_name(g).as_deref() == Some(group))
}

/// The names of the consumer groups of `stream`.
pub fn group_names(conn: &mut impl redis::ConnectionLike, stream: &str) -> Vec<String> {
    groups_info(conn, stream)
        .iter()
        .filter_map(group_name)
        .collect()
}

/// Whether consumer group `group` exists on `stream`.
pub fn group_exists(conn: &mut impl redis::ConnectionLike, stream: &str, group: &str) -> bool {
    group_info(conn, stream, group).is_some()
}

/// Whether `group` has read every entry of `stream` (lag 0, or its last-delivered id is the
/// stream's last entry: Redis's lag counter can drift after an AOF reload), acknowledged all
/// it read and has no retry scheduled: nothing more will run for it until a new entry arrives.
pub fn settled(conn: &mut impl redis::ConnectionLike, stream: &str, group: &str) -> bool {
    let Some(info) = group_info(conn, stream, group) else {
        return false;
    };
    let field = |name: &str| info.get(name).cloned();
    let lag = field("lag").and_then(|v| redis::from_redis_value::<u64>(v).ok());
    let last_delivered =
        field("last-delivered-id").and_then(|v| redis::from_redis_value::<String>(v).ok());
    let last: RawEntries = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(conn)
        .unwrap_or_default();
    let caught_up = lag == Some(0) || last.first().map(|(id, _)| id) == last_delivered.as_ref();
    caught_up && pending(conn, stream, group) == 0 && scheduled_retries(conn, stream, group) == 0
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adds `events` entries to `stream` in one pipeline, ids `ev-0`… and data `{"n": N}`.
pub fn fill_events(conn: &mut redis::Connection, stream: &str, events: usize) {
    let mut pipe = redis::pipe();
    for n in 0..events {
        pipe.xadd(
            stream,
            "*",
            &[
                ("id", format!("ev-{n}")),
                ("data", format!("{{\"n\":{n}}}")),
            ],
        )
        .ignore();
    }
    let () = pipe.query(conn).expect("adding events");
}

/// Dead letters of `stream`: forwarded to `<stream>.dlq`, and still in its outbox (a dead letter
/// is forwarded in a second step after the settle).
pub fn dead_letters_with_outbox(conn: &mut redis::Connection, stream: &str) -> Vec<StreamEntry> {
    let mut all = entries(conn, &format!("{stream}.dlq"));
    all.extend(entries(conn, &format!("eddy:{{{stream}}}:dead-letters")));
    all
}

/// The most attempts running at one moment, from the `record` fixture's `Attempt` and `Done`
/// records (`record_end = "true"`); an attempt with no `Done` was cut short at `open_until`
/// (a kill). At one instant an end comes before a start: a slot freed and taken again in the
/// same ms is not two at once; an attempt within one ms counts for that ms.
pub fn most_at_once(records: &[StreamEntry], open_until: u64) -> i64 {
    let mut spans: std::collections::BTreeMap<(String, u64), (u64, u64)> = Default::default();
    for record in records {
        let data = record.data();
        let at = data["atMs"].as_u64().expect("atMs");
        let key = (
            data["id"].as_str().expect("id").to_owned(),
            data["attempt"].as_u64().expect("attempt"),
        );
        let span = spans.entry(key).or_insert((at, open_until));
        match record.get("type") {
            "Attempt" => span.0 = at,
            _ => span.1 = at,
        }
    }
    let mut edges: Vec<(u64, i64)> = spans
        .values()
        .flat_map(|(start, end)| [(*start, 1), ((*end).max(start + 1), -1)])
        .collect();
    edges.sort();
    let (mut running, mut most) = (0i64, 0i64);
    for (_, step) in edges {
        running += step;
        most = most.max(running);
    }
    most
}

/// Milliseconds since the Unix epoch, as the fixtures' `atMs`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}
