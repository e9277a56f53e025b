//! The cron trigger: schedules whose ticks become events, each tick fired once however many
//! hosts run it.
//!
//! Every host runs a ticker per schedule. A ticker sleeps until the exact next fire time (a
//! Tokio timer, so a tick is late by about a millisecond on an idle host, not by a polling
//! interval), then runs one Lua script that fires the tick only if it is newer than the
//! schedule's high-water mark in Redis, moves the mark, and `XADD`s the tick event, all in one
//! step. The first host to get there fires; the others find the mark moved and do nothing. There
//! is no moment where a tick is claimed but not emitted, so a host dying mid-tick cannot make a
//! tick vanish: either its script ran (the event is in the stream) or it did not (another host's
//! will, or the catch-up policy decides at the next start).
//!
//! Two shapes share this:
//! - a function's `[[triggers.cron]]`: ticks go to an internal stream `eddy:cron:<name>`, which
//!   the function reads through an ordinary stream trigger, so retries, dead letters and
//!   recovery are the stream trigger's;
//! - a *cronjob* (`eddy cron create`): ticks go straight to a user's stream as events of a given
//!   type and data, with no wasm involved. Cronjobs live in Redis, so every host runs them.
//!   Hosts re-read the list every second, but the firing script also checks that the cronjob
//!   is still stored as the ticker knows it, so a removed cronjob never fires again, even on a
//!   host that has not noticed the removal yet.
//!
//! Each tick event has a deterministic id, `cron:<name>:<scheduled unix time>`, so a consumer
//! can tell a tick from any other event and spot a duplicate.

pub mod schedule;
pub mod settings;
pub mod store;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use crate::broker::Conn;
use chrono::{DateTime, SecondsFormat, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use schedule::{Schedule, ScheduleError};

use crate::backoff::{Backoff, sleep_or_cancel};
use crate::broker::Broker;

/// The event type of a function's cron tick.
pub const TICK_TYPE: &str = "eddy.cron.tick";
/// Most missed ticks fired at start under `catch_up = "all"`.
pub const MAX_CATCH_UP: usize = 100;
/// How late a tick may be and still fire as an ordinary (late) tick: older ones are "missed"
/// and the catch-up policy decides them.
pub const DEFAULT_LATE_GRACE: Duration = Duration::from_secs(60);
/// How late a running host's own tick may be and still count as on time, whatever the grace:
/// a timer wakes a little late, more so on a busy machine, and that is not falling behind.
pub const ON_TIME_SLACK: Duration = Duration::from_millis(500);
/// The longest grace accepted.
pub const MAX_LATE_GRACE: Duration = Duration::from_secs(3600);
/// Most late ticks (within the grace) fired at once; older late ones count as missed.
pub const MAX_LATE_TICKS: usize = 1000;
/// Entries kept (approximately) in an internal tick stream; older handled ticks are trimmed.
pub const TICK_STREAM_MAXLEN: usize = 10_000;
/// How often a host re-reads the cronjob list from Redis.
pub const CRONJOB_REFRESH: Duration = Duration::from_secs(1);
/// The Redis hash of cronjobs: name → JSON [`CronJob`].
pub const CRONJOBS_KEY: &str = "eddy:cronjobs";

/// What a host does with ticks missed while no host was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Skip them.
    None,
    /// Fire the most recent one (the default).
    #[default]
    Latest,
    /// Fire each, oldest first, up to [`MAX_CATCH_UP`] of the most recent.
    All,
}

/// A cronjob: a schedule that emits an event into a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJob {
    /// The schedule expression.
    pub schedule: String,
    /// Its IANA timezone.
    pub timezone: String,
    /// The stream the events go to.
    pub stream: String,
    /// Their type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Their JSON payload.
    pub data: String,
    /// What happens to missed ticks.
    pub catch_up: CatchUp,
    /// Ticks later than this (ms) are missed, not late ([`DEFAULT_LATE_GRACE`] when absent,
    /// as in cronjobs stored before it existed).
    #[serde(default = "default_late_grace_ms")]
    pub late_grace_ms: u64,
}

fn default_late_grace_ms() -> u64 {
    grace_ms(DEFAULT_LATE_GRACE)
}

/// A grace as stored: whole milliseconds, rounded up (a grace of 500µs is not none).
pub fn grace_ms(grace: Duration) -> u64 {
    grace.as_nanos().div_ceil(1_000_000) as u64
}

/// One schedule a host runs: where its ticks go and what they hold.
#[derive(Debug, Clone)]
pub struct Ticker {
    /// The schedule's name (cronjob name, or cron trigger name).
    pub name: String,
    /// When it fires.
    pub schedule: Schedule,
    /// Missed ticks policy.
    pub catch_up: CatchUp,
    /// How late a tick may be and still fire as a late tick ([`DEFAULT_LATE_GRACE`]).
    pub late_grace: Duration,
    /// The stream ticks go to.
    pub stream: String,
    /// The tick events' type.
    pub event_type: String,
    /// Fixed data (cronjobs); `None` for function ticks, whose data describes the tick.
    pub data: Option<String>,
    /// Trim the stream to about [`TICK_STREAM_MAXLEN`] (internal tick streams only).
    pub trim: bool,
    /// A cronjob's definition as stored under [`CRONJOBS_KEY`] (and copied into its state
    /// hash, field `def`); `None` for function ticks. A tick fires only while this is still
    /// the stored definition, so `eddy cron rm` stops every host's ticks at once rather than at
    /// each host's next refresh of the list.
    pub definition: Option<String>,
    /// The hash of its high-water mark: [`state_key`] or [`cronjob_state_key`], in the hash
    /// slot of the stream it ticks into (one script updates both).
    pub state: String,
    /// Where older hosts kept the mark, newest layout first: carried over once when the state
    /// has none.
    pub legacy_states: Vec<String>,
}

/// The internal stream a function's cron trigger `name` ticks into.
pub fn tick_stream(name: &str) -> String {
    format!("eddy:cron:{name}")
}

/// The hash holding the state of function cron trigger `name`: `last` (unix seconds of the
/// newest fired tick), `fired_at` (ms), `result` (the entry id or an error). Tagged with its
/// tick stream, so a cluster keeps both in one slot.
pub fn state_key(name: &str) -> String {
    format!("eddy:{{{}}}:state", tick_stream(name))
}

/// The hash holding the state of cronjob `name` ticking into `stream`, as [`state_key`] holds
/// a cron trigger's, plus `def`, the definition it fires for: a key space of its own, so a
/// cronjob and a cron trigger of one name never share a high-water mark.
pub fn cronjob_state_key(name: &str, stream: &str) -> String {
    format!("eddy:{{{stream}}}:cronjob:{name}:state")
}

/// Where hosts before hash-tagged state kept cron trigger `name`'s state.
fn legacy_state_key(name: &str) -> String {
    format!("eddy:cron:{name}:state")
}

/// Where hosts before hash-tagged state kept cronjob `name`'s state.
fn legacy_cronjob_state_key(name: &str) -> String {
    format!("eddy:cronjob:{name}:state")
}

/// The legacy keys a cron trigger's state is carried over from.
pub fn legacy_states(name: &str) -> Vec<String> {
    vec![legacy_state_key(name)]
}

/// KEYS: state hash, stream. ARGV: tick unix seconds, fired-at ms, emit (1) or only mark (0),
/// maxlen (0 = no trim), '1' to fire only for the definition in the state's `def` (cronjobs)
/// or '', that definition, then field/value pairs. Returns the entry id, `marked` when only
/// the mark moved, or false when the tick was not newer than the mark or the cronjob is no
/// longer so defined.
static FIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[5] == '1' and redis.call('HGET', KEYS[1], 'def') ~= ARGV[6] then return false end
        local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
        local tick = tonumber(ARGV[1])
        if tick <= last then return false end
        redis.call('HSET', KEYS[1], 'last', ARGV[1])
        if ARGV[3] == '0' then return 'marked' end
        local id
        if ARGV[4] ~= '0' then
            id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 7))
        else
            id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 7))
        end
        redis.call('HSET', KEYS[1], 'fired_at', ARGV[2], 'result', id)
        return id
        ",
    )
});

impl Ticker {
    /// The fields of the event for the tick scheduled at `tick`, fired at `fired`.
    fn fields(
        &self,
        tick: DateTime<Utc>,
        fired: DateTime<Utc>,
        catch_up: bool,
    ) -> Vec<(String, String)> {
        let scheduled = tick.to_rfc3339_opts(SecondsFormat::Millis, true);
        let fired_text = fired.to_rfc3339_opts(SecondsFormat::Micros, true);
        let data = self.data.clone().unwrap_or_else(|| {
            serde_json::json!({
                "schedule": self.name,
                "scheduledTime": scheduled,
                "firedTime": fired_text,
                "catchUp": catch_up,
            })
            .to_string()
        });
        let mut fields = vec![
            ("type".to_owned(), self.event_type.clone()),
            ("source".to_owned(), format!("eddy://cron/{}", self.name)),
            (
                "id".to_owned(),
                format!("cron:{}:{}", self.name, tick.timestamp()),
            ),
            ("time".to_owned(), scheduled),
            ("datacontenttype".to_owned(), "application/json".to_owned()),
            ("data".to_owned(), data),
            ("firedtime".to_owned(), fired_text),
        ];
        if catch_up {
            fields.push(("catchup".to_owned(), "true".to_owned()));
        }
        fields
    }

    /// Fires (or, with `emit` false, only marks) the tick at `tick`, and says what this host
    /// did with it (a fired tick is counted in the metrics, with how late it was).
    async fn fire(
        &self,
        conn: &mut Conn,
        tick: DateTime<Utc>,
        emit: bool,
        catch_up: bool,
    ) -> redis::RedisResult<Fired> {
        let fired = Utc::now();
        let mut invocation = FIRE.prepare_invoke();
        invocation
            .key(&self.state)
            .key(&self.stream)
            .arg(tick.timestamp())
            .arg(fired.timestamp_millis())
            .arg(if emit { "1" } else { "0" })
            .arg(if self.trim { TICK_STREAM_MAXLEN } else { 0 });
        match &self.definition {
            Some(definition) => {
                invocation.arg("1").arg(definition);
            }
            None => {
                invocation.arg("").arg("");
            }
        }
        for (name, value) in self.fields(tick, fired, catch_up) {
            invocation.arg(name).arg(value);
        }
        let reply: Option<String> = invocation.invoke_async(conn).await?;
        Ok(match reply.as_deref() {
            None => Fired::NotHere,
            Some("marked") => Fired::Marked,
            Some(_) => {
                let late = (Utc::now() - tick).num_microseconds().unwrap_or(0) as f64 / 1e6;
                crate::metrics::METRICS.cron_tick(&self.name, late);
                Fired::Emitted(reply.unwrap_or_default())
            }
        })
    }

    /// Runs the schedule until `stop`: catches up on start, then fires each tick on time.
    pub async fn run(self, mut conn: Conn, stop: CancellationToken) {
        if let Some(definition) = &self.definition {
            // A cronjob stored by an older host, or whose creation stopped between its two
            // writes, has no copy of its definition in its state yet: give it the one this
            // host just read from the list. Only here, at start: a ticker running later must
            // never put back what `eddy cron rm` deleted.
            let state = &self.state;
            let adopted = crate::backoff::retry_until_ok(&stop, "cronjob start", || {
                let mut conn = conn.clone();
                async move {
                    redis::cmd("HSETNX")
                        .arg(state)
                        .arg("def")
                        .arg(definition)
                        .query_async::<i64>(&mut conn)
                        .await
                }
            })
            .await;
            if adopted.is_none() {
                return;
            }
        }
        let mut cursor = Utc::now();
        if !self.catch_up_until_done(&mut conn, cursor, &stop).await {
            return;
        }
        loop {
            let Some(tick) = self.schedule.next_after(cursor) else {
                tracing::info!(schedule = %self.name, "schedule has no more fire times");
                return;
            };
            let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if !sleep_or_cancel(wait, &stop).await {
                return;
            }
            if self.beyond_grace(tick) {
                // This host fell behind (it stalled, or Redis failed for a while): what is
                // older than the grace is missed, exactly as for a host that starts now.
                let now = Utc::now();
                if !self.catch_up_until_done(&mut conn, now, &stop).await {
                    return;
                }
                cursor = now;
                continue;
            }
            cursor = tick;
            let mut backoff = Backoff::redis();
            loop {
                match self.fire(&mut conn, tick, true, false).await {
                    Ok(Fired::Emitted(entry_id)) => {
                        let late_ms = (Utc::now() - tick).num_milliseconds();
                        tracing::debug!(schedule = %self.name, %entry_id, tick = %tick, late_ms, "cron tick fired");
                        break;
                    }
                    Ok(_) => break, // another host fired it
                    Err(error) => {
                        tracing::warn!(schedule = %self.name, tick = %tick, %error, "firing a cron tick failed; retrying");
                        if !backoff.wait(&stop).await {
                            return;
                        }
                        if self.beyond_grace(tick) {
                            // The mark has not moved: the next turn of the loop catches up on
                            // this tick with the others, under the policy.
                            tracing::warn!(schedule = %self.name, tick = %tick,
                                "a tick is now older than its late grace; the catch-up policy decides it");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Whether `tick` is older than the late grace (or, for a grace shorter than that, than
    /// [`ON_TIME_SLACK`]): missed rather than late.
    fn beyond_grace(&self, tick: DateTime<Utc>) -> bool {
        (Utc::now() - tick)
            .to_std()
            .is_ok_and(|late| late > self.late_grace.max(ON_TIME_SLACK))
    }

    /// [`catch_up`](Self::catch_up) to `now`, retried with backoff until it succeeds (true) or
    /// `stop` fires (false).
    async fn catch_up_until_done(
        &self,
        conn: &mut Conn,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> bool {
        crate::backoff::retry_until_ok(stop, "cron catch-up", || {
            let mut conn = conn.clone();
            async move { self.catch_up(&mut conn, now).await }
        })
        .await
        .is_some()
    }

    /// Fires the ticks missed since the high-water mark, per the catch-up policy. A schedule
    /// seen for the first time starts from now.
    async fn catch_up(&self, conn: &mut Conn, now: DateTime<Utc>) -> redis::RedisResult<()> {
        let mut last: Option<i64> = redis::cmd("HGET")
            .arg(&self.state)
            .arg("last")
            .query_async(conn)
            .await?;
        for legacy in &self.legacy_states {
            if last.is_some() {
                break;
            }
            // A mark kept under an older key layout is carried over once, so catching up
            // across the upgrade still sees what was missed (without a mark a ticker starts
            // from now). The old key is left alone: another schedule of the same name may use
            // it (a cronjob's first layout shared cron triggers' key space).
            let mark: Option<i64> = redis::cmd("HGET")
                .arg(legacy)
                .arg("last")
                .query_async(conn)
                .await?;
            if let Some(mark) = mark {
                let _: i64 = redis::cmd("HSETNX")
                    .arg(&self.state)
                    .arg("last")
                    .arg(mark)
                    .query_async(conn)
                    .await?;
                last = Some(mark);
            }
        }
        let Some(last) = last.and_then(schedule::from_unix) else {
            // Mark "now" so a later start knows what it missed.
            let _ = self.fire(conn, now, false, false).await?;
            return Ok(());
        };
        let missed = self
            .schedule
            .between(last, now, MAX_CATCH_UP + MAX_LATE_TICKS);
        let plan = plan_catch_up(&missed, now, self.late_grace, self.catch_up);
        if plan.missed > 0 {
            tracing::info!(schedule = %self.name, missed = plan.missed,
                emitted = plan.missed_emitted, late = plan.late, policy = ?self.catch_up,
                "ticks missed while no host ran them");
        }
        // Counted as done here, so hosts catching up at once count each tick once.
        let (mut emitted, mut skipped) = (0u64, 0u64);
        for (tick, emit, catching_up) in &plan.ticks {
            match self.fire(conn, *tick, *emit, *catching_up).await? {
                Fired::Emitted(_) if *catching_up => emitted += 1,
                Fired::Marked => skipped += 1,
                _ => {}
            }
        }
        if emitted + skipped > 0 {
            crate::metrics::METRICS.cron_missed(&self.name, emitted, skipped);
            let counted: redis::RedisResult<()> = redis::pipe()
                .cmd("HINCRBY")
                .arg(&self.state)
                .arg("missed_emitted")
                .arg(emitted)
                .ignore()
                .cmd("HINCRBY")
                .arg(&self.state)
                .arg("missed_skipped")
                .arg(skipped)
                .ignore()
                .query_async(conn)
                .await;
            if let Err(error) = counted {
                // A count someone overwrote must not stop the schedule.
                tracing::warn!(schedule = %self.name, %error, "counting missed ticks failed");
            }
        }
        Ok(())
    }
}

/// What a host did with one tick.
#[derive(Debug, PartialEq, Eq)]
enum Fired {
    /// It added the tick's event: this entry id.
    Emitted(String),
    /// It moved the mark past the tick without an event (a missed tick skipped).
    Marked,
    /// Nothing: another host got there first, or the cronjob is gone.
    NotHere,
}

/// What a ticker does with the ticks found between its mark and now.
#[derive(Debug, PartialEq, Eq)]
pub struct CatchUpPlan {
    /// Each tick, oldest first: whether it is emitted (or only marked as done) and whether it
    /// is emitted as a catch-up of a missed tick (rather than an ordinary late one).
    pub ticks: Vec<(DateTime<Utc>, bool, bool)>,
    /// Ticks older than the grace: missed.
    pub missed: usize,
    /// Missed ticks the policy emits.
    pub missed_emitted: usize,
    /// Ticks within the grace, fired as ordinary late ticks.
    pub late: usize,
}

/// Splits `found` (oldest first) into late ticks, within `grace` of `now`, which all fire as
/// ordinary ticks (at most [`MAX_LATE_TICKS`], the newest), and missed ones, older, of which
/// `policy` keeps none, the newest, or up to [`MAX_CATCH_UP`] of the newest.
pub fn plan_catch_up(
    found: &[DateTime<Utc>],
    now: DateTime<Utc>,
    grace: Duration,
    policy: CatchUp,
) -> CatchUpPlan {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let oldest_late = now
        .checked_sub_signed(grace)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let first_late = found.partition_point(|t| *t < oldest_late);
    // Beyond the most late ticks fired at once, the oldest late ones count as missed.
    let first_late = first_late.max(found.len().saturating_sub(MAX_LATE_TICKS));
    let (missed, late) = found.split_at(first_late);
    let keep = match policy {
        CatchUp::None => 0,
        CatchUp::Latest => 1,
        CatchUp::All => MAX_CATCH_UP,
    }
    .min(missed.len());
    let skipped = missed.len() - keep;
    let mut ticks: Vec<(DateTime<Utc>, bool, bool)> = missed
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, i >= skipped, true))
        .collect();
    ticks.extend(late.iter().map(|t| (*t, true, false)));
    CatchUpPlan {
        ticks,
        missed: missed.len(),
        missed_emitted: keep,
        late: late.len(),
    }
}

/// A cronjob refused: the field at fault, and a message that starts with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidCronJob {
    /// The field at fault: `name`, `schedule`, `stream`, `type`, `data` or `late_grace`.
    pub field: &'static str,
    /// What was wrong and what was expected.
    pub message: String,
}

/// Checks a cronjob and turns it into a ticker; the error names the field.
pub fn cronjob_ticker(name: &str, job: &CronJob) -> Result<Ticker, InvalidCronJob> {
    let invalid = |field: &'static str, message: String| InvalidCronJob { field, message };
    crate::names::identifier(name).map_err(|e| invalid("name", format!("name {e}")))?;
    let schedule = Schedule::parse(&job.schedule, &job.timezone)
        .map_err(|e| invalid("schedule", format!("schedule: {e}")))?;
    crate::names::stream(&job.stream).map_err(|e| invalid("stream", format!("stream {e}")))?;
    crate::names::event_type(&job.event_type).map_err(|e| invalid("type", format!("type {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&job.data)
        .map_err(|e| invalid("data", format!("data {:?}: expected JSON ({e})", job.data)))?;
    let late_grace = Duration::from_millis(job.late_grace_ms);
    if late_grace > MAX_LATE_GRACE {
        return Err(invalid(
            "late_grace",
            format!("late_grace {late_grace:?}: expected at most {MAX_LATE_GRACE:?}"),
        ));
    }
    Ok(Ticker {
        name: name.to_owned(),
        schedule,
        catch_up: job.catch_up,
        late_grace,
        stream: job.stream.clone(),
        event_type: job.event_type.clone(),
        data: Some(job.data.clone()),
        trim: false,
        definition: None,
        state: cronjob_state_key(name, &job.stream),
        // The first layout kept a cronjob's mark under the cron trigger key.
        legacy_states: vec![legacy_cronjob_state_key(name), legacy_state_key(name)],
    })
}

/// Runs the host's fixed tickers (functions' cron triggers) and every cronjob stored in Redis,
/// starting and stopping cronjob tickers as the list changes, until `stop`.
pub async fn run(broker: Broker, fixed: Vec<Ticker>, stop: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    for ticker in fixed {
        tasks.spawn(ticker.run(broker.shared(), stop.child_token()));
    }
    let mut running: BTreeMap<String, (String, CancellationToken)> = BTreeMap::new();
    // Definitions found invalid, so each is reported once, not at every refresh.
    let mut refused: std::collections::BTreeSet<(String, String)> = Default::default();
    let mut conn = broker.shared();
    loop {
        let listed: redis::RedisResult<BTreeMap<String, String>> = redis::cmd("HGETALL")
            .arg(CRONJOBS_KEY)
            .query_async(&mut conn)
            .await;
        match listed {
            Ok(listed) => {
                let mut wanted = BTreeMap::new();
                for (name, text) in listed {
                    match serde_json::from_str::<CronJob>(&text) {
                        Ok(job) => {
                            wanted.insert(name, (text, job));
                        }
                        Err(error) => tracing::warn!(cronjob = %name, %error, "unreadable cronjob"),
                    }
                }
                running.retain(|name, (text, token)| {
                    let keep = wanted.get(name).map(|(t, _)| t) == Some(text);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for (name, (text, job)) in wanted {
                    if running.contains_key(&name) {
                        continue;
                    }
                    match cronjob_ticker(&name, &job) {
                        Ok(mut ticker) => {
                            ticker.definition = Some(text.clone());
                            let token = stop.child_token();
                            tasks.spawn(ticker.run(broker.shared(), token.clone()));
                            tracing::info!(cronjob = %name, schedule = %job.schedule, stream = %job.stream, "cronjob running");
                            running.insert(name, (text, token));
                        }
                        Err(error) => {
                            if refused.insert((name.clone(), text)) {
                                tracing::warn!(cronjob = %name, %error, "invalid cronjob skipped");
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "reading cronjobs failed"),
        }
        if !sleep_or_cancel(CRONJOB_REFRESH, &stop).await {
            break;
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn late_ticks_fire_and_only_missed_ones_follow_the_policy() {
        // A per-second schedule 5 minutes behind, grace 60 s: ticks at most 60 s late fire as
        // ordinary ticks; of the 239 older ones, `latest` emits the newest only.
        let found: Vec<_> = (1..=300).map(at).collect();
        let now = at(300);
        let plan = plan_catch_up(&found, now, Duration::from_secs(60), CatchUp::Latest);
        assert_eq!((plan.missed, plan.missed_emitted, plan.late), (239, 1, 61));
        let emitted: Vec<_> = plan.ticks.iter().filter(|t| t.1).collect();
        assert_eq!(emitted.len(), 62);
        assert_eq!(
            emitted[0],
            &(at(239), true, true),
            "the newest missed, as a catch-up"
        );
        assert_eq!(
            emitted[1],
            &(at(240), true, false),
            "then every late tick, ordinary"
        );
        assert!(plan.ticks.iter().all(|t| t.0 > at(0)));

        let all = plan_catch_up(&found, now, Duration::from_secs(60), CatchUp::All);
        assert_eq!(all.missed_emitted, MAX_CATCH_UP);
        let none = plan_catch_up(&found, now, Duration::from_secs(60), CatchUp::None);
        assert_eq!(none.ticks.iter().filter(|t| t.1).count(), 61);
    }

    #[test]
    fn a_zero_grace_keeps_the_old_behaviour() {
        let found: Vec<_> = (1..=3).map(at).collect();
        let plan = plan_catch_up(&found, at(3), Duration::ZERO, CatchUp::Latest);
        // The tick due right now is still on time, not missed.
        assert_eq!((plan.missed, plan.late), (2, 1));
        let emitted: Vec<_> = plan.ticks.iter().filter(|t| t.1).map(|t| t.0).collect();
        assert_eq!(emitted, [at(2), at(3)]);
        let stalled = plan_catch_up(&found, at(4), Duration::ZERO, CatchUp::Latest);
        let emitted: Vec<_> = stalled.ticks.iter().filter(|t| t.1).map(|t| t.0).collect();
        assert_eq!(emitted, [at(3)], "only the newest of three missed ticks");
    }

    #[test]
    fn only_so_many_late_ticks_fire_at_once() {
        let found: Vec<_> = (1..=(MAX_LATE_TICKS as i64 + 10)).map(at).collect();
        let now = at(MAX_LATE_TICKS as i64 + 10);
        let plan = plan_catch_up(&found, now, MAX_LATE_GRACE, CatchUp::None);
        assert_eq!((plan.late, plan.missed), (MAX_LATE_TICKS, 10));
    }
}
