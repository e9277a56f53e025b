//! Stream triggers end to end: a real `redis-server`, real `eddy up` hosts, real components.
//! Each test has its own Redis, so they run in parallel; recovery tests use a short function
//! timeout and the harness's 500 ms claim margin.

use std::collections::BTreeSet;
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{
    StreamEntry, add, entries, eventually, group_exists, manifest, pending, record_function,
    scheduled_retries, unique,
};
use redis::Commands as _;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    redis: RedisServer,
    conn: redis::Connection,
    dir: tempfile::TempDir,
    stream: String,
    records: String,
}

fn setup() -> Setup {
    let redis = RedisServer::start();
    let conn = redis.conn();
    Setup {
        redis,
        conn,
        dir: tempfile::tempdir().unwrap(),
        stream: unique("orders"),
        records: unique("records"),
    }
}

impl Setup {
    /// A `record` function on the test stream with `settings` (more `[config]` lines) and
    /// `trigger` (more `[[triggers.stream]]` lines).
    fn record(&self, name: &str, settings: &str, trigger: &str) {
        record_function(
            self.dir.path(),
            name,
            &self.stream,
            &self.records,
            settings,
            trigger,
        );
    }

    /// Sets the wall-time limit of function `name`'s manifest.
    fn set_timeout(&self, name: &str, timeout: &str) {
        let path = self.dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let limits = format!("[limits]\ntimeout = {timeout:?}\n[config]");
        std::fs::write(&path, text.replacen("[config]", &limits, 1)).unwrap();
    }

    fn host(&mut self) -> Host {
        Host::start(&self.redis.url(), self.dir.path(), &[])
    }

    fn wait_group(&mut self, group: &str) {
        let (stream, conn) = (self.stream.clone(), &mut self.conn);
        eventually(WAIT, "the consumer group", || {
            group_exists(conn, &stream, group).then_some(())
        });
    }

    fn records(&mut self) -> Vec<StreamEntry> {
        entries(&mut self.conn, &self.records)
    }

    fn wait_records(&mut self, n: usize) -> Vec<StreamEntry> {
        let (records, conn) = (self.records.clone(), &mut self.conn);
        eventually(WAIT, &format!("{n} records"), || {
            let found = entries(conn, &records);
            (found.len() >= n).then_some(found)
        })
    }

    fn dead_letters(&mut self) -> Vec<StreamEntry> {
        entries(&mut self.conn, &format!("{}.dlq", self.stream))
    }

    fn wait_dead_letters(&mut self, n: usize) -> Vec<StreamEntry> {
        let (dlq, conn) = (format!("{}.dlq", self.stream), &mut self.conn);
        eventually(WAIT, &format!("{n} dead letters"), || {
            let found = entries(conn, &dlq);
            (found.len() >= n).then_some(found)
        })
    }

    fn wait_settled(&mut self, group: &str) {
        let (stream, conn) = (self.stream.clone(), &mut self.conn);
        eventually(
            WAIT,
            "every entry read and acknowledged, no retry scheduled",
            || eddy_tests::streams::settled(conn, &stream, group).then_some(()),
        );
    }

    fn add(&mut self, fields: &[(&str, &str)]) -> String {
        add(&mut self.conn, &self.stream.clone(), fields)
    }
}

#[test]
fn an_order_flows_through_a_real_stream() {
    let mut s = setup();
    let emails = unique("emails");
    // order-confirmation calls the example's stand-in users and mail APIs.
    let apis = eddy_tests::fakes::FakeApis::start("stream-test-key", 0);
    let url = apis.url();
    manifest(
        s.dir.path(),
        "order-confirmation",
        "order-confirmation",
        &format!(
            "publish = [{emails:?}]\n[config]\nemail_stream = {emails:?}\nusers_api = {url:?}\n\
             mail_api = {url:?}\nmail_domain = \"shop.example\"\n[outbound]\nhttp = [{url:?}]\n\
             [secrets]\nmail_key = \"env:EDDY_TEST_MAIL_KEY\"\n[[triggers.stream]]\n\
             stream = {:?}\ntypes = [\"OrderPlaced\"]\n",
            s.stream
        ),
    );
    let _host = Host::start_with_env(
        &s.redis.url(),
        s.dir.path(),
        &[],
        &[("EDDY_TEST_MAIL_KEY", "stream-test-key")],
    );
    s.wait_group("order-confirmation");
    s.add(&[
        ("type", "OrderPlaced"),
        ("id", "order-event-1"),
        ("tenant", "acme"),
        (
            "data",
            r#"{"orderId":"o-1","userId":"u-1","email":"ada@example.com"}"#,
        ),
    ]);
    let published = eventually(WAIT, "the email request", || {
        let found = entries(&mut s.conn, &emails);
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(published.len(), 1);
    let email = &published[0];
    assert_eq!(email.get("type"), "EmailSent");
    assert_eq!(email.get("source"), "eddy://order-confirmation");
    assert_eq!(email.get("causationid"), "order-event-1");
    assert_eq!(email.get("datacontenttype"), "application/json");
    assert_eq!(email.data()["to"], "ada@example.com");
    s.wait_settled("order-confirmation");
    assert!(s.dead_letters().is_empty());
}

#[test]
fn only_data_is_required_on_the_wire() {
    let mut s = setup();
    s.record("rec", "", "");
    let _host = s.host();
    s.wait_group("rec");
    let entry_id = s.add(&[("data", r#"{"n":1}"#), ("subject", "s-1")]);
    let record = &s.wait_records(1)[0];
    let seen = record.data();
    assert_eq!(seen["id"], entry_id.as_str(), "id defaults to the entry id");
    assert_eq!(seen["entryId"], entry_id.as_str());
    assert_eq!(seen["type"], "eddy.unknown");
    assert_eq!(seen["attempt"], 1);
    assert_eq!(seen["data"]["n"], 1);
    assert_eq!(record.get("causationid"), entry_id);
    s.wait_settled("rec");
}

#[test]
fn other_types_are_acknowledged_untouched() {
    let mut s = setup();
    s.record("rec", "", "types = [\"Wanted\"]");
    let _host = s.host();
    s.wait_group("rec");
    s.add(&[("type", "Unwanted"), ("data", "{}")]);
    s.add(&[("type", "Unwanted"), ("data", "not even json")]);
    s.add(&[("type", "Wanted"), ("data", "{}")]);
    let records = s.wait_records(1);
    s.wait_settled("rec");
    let records_after = s.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records_after.len(), 1, "unwanted types were handled");
    assert_eq!(records_after[0].data()["type"], "Wanted");
    assert!(
        s.dead_letters().is_empty(),
        "unwanted types were dead-lettered"
    );
}

#[test]
fn start_earliest_replays_history_and_latest_does_not() {
    let mut s = setup();
    let late_records = unique("late");
    for n in 0..3 {
        s.add(&[("data", &format!("{{\"n\":{n}}}"))]);
    }
    s.record("replay", "", "start = \"earliest\"");
    record_function(s.dir.path(), "late", &s.stream, &late_records, "", "");
    let _host = s.host();
    s.wait_group("late");
    s.add(&[("data", "{\"n\":3}")]);
    let replayed = s.wait_records(4);
    let seen: BTreeSet<i64> = replayed
        .iter()
        .map(|r| r.data()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, BTreeSet::from([0, 1, 2, 3]));
    let late = eventually(WAIT, "the late group's record", || {
        let found = entries(&mut s.conn, &late_records);
        (!found.is_empty()).then_some(found)
    });
    s.wait_settled("late");
    s.wait_settled("replay");
    assert_eq!(entries(&mut s.conn, &late_records).len(), 1);
    assert_eq!(late[0].data()["data"]["n"], 3);
}

#[test]
fn a_rejection_is_dead_lettered_once_and_never_retried() {
    let mut s = setup();
    s.record(
        "rec",
        "status = \"422\"",
        "[triggers.stream.retry]\ninitial = \"50ms\"",
    );
    let _host = s.host();
    s.wait_group("rec");
    let entry_id = s.add(&[("type", "OrderPlaced"), ("tenant", "acme"), ("data", "{}")]);
    let letters = s.wait_dead_letters(1);
    s.wait_settled("rec");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.records().len(), 1, "a 4xx must not be retried");
    assert_eq!(s.dead_letters().len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.get("eddy.reason"), "rejected");
    assert_eq!(letter.get("eddy.status"), "422");
    assert_eq!(letter.get("eddy.attempts"), "1");
    assert_eq!(letter.get("eddy.function"), "rec");
    assert_eq!(letter.get("eddy.stream"), s.stream);
    assert_eq!(letter.get("eddy.entry_id"), entry_id);
    assert!(letter.get("eddy.error").contains("422"));
    // The original fields travel with it, unchanged.
    assert_eq!(letter.get("type"), "OrderPlaced");
    assert_eq!(letter.get("tenant"), "acme");
    assert_eq!(letter.get("data"), "{}");
}

#[test]
fn failures_are_retried_with_growing_delays_then_dead_lettered_once() {
    let mut s = setup();
    s.record(
        "rec",
        "status = \"503\"",
        "[triggers.stream.retry]\nmax_attempts = 4\ninitial = \"150ms\"\nfactor = 2.0\njitter = 0.0",
    );
    let _host = s.host();
    s.wait_group("rec");
    s.add(&[("data", "{}")]);
    let letter = s.wait_dead_letters(1).remove(0);
    s.wait_settled("rec");
    let attempts = s.records();
    let numbers: Vec<i64> = attempts
        .iter()
        .map(|r| r.data()["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        vec![1, 2, 3, 4],
        "exactly max_attempts attempts, numbered"
    );
    let gaps: Vec<u64> = attempts
        .windows(2)
        .map(|w| w[1].millis() - w[0].millis())
        .collect();
    for (gap, expected) in gaps.iter().zip([150, 300, 600]) {
        assert!(
            *gap >= expected,
            "gaps {gaps:?}: expected at least 150, 300, 600 ms"
        );
    }
    assert_eq!(letter.get("eddy.reason"), "failed");
    assert_eq!(letter.get("eddy.attempts"), "4");
    assert_eq!(letter.get("eddy.status"), "503");
    assert!(letter.get("eddy.error").contains("503"));
    assert!(letter.get("eddy.first_failure") < letter.get("eddy.last_failure"));
    assert_eq!(s.dead_letters().len(), 1);
}

#[test]
fn too_many_requests_is_retried_like_a_failure() {
    let mut s = setup();
    s.record(
        "rec",
        "status = \"429\"\nsucceed_on = \"3\"",
        "[triggers.stream.retry]\ninitial = \"50ms\"\njitter = 0.0",
    );
    let _host = s.host();
    s.wait_group("rec");
    s.add(&[("data", "{}")]);
    let attempts = s.wait_records(3);
    s.wait_settled("rec");
    assert_eq!(attempts.len(), 3);
    assert!(s.dead_letters().is_empty(), "it succeeded on attempt 3");
}

#[test]
fn traps_and_timeouts_are_retried_then_dead_lettered() {
    let mut s = setup();
    s.record(
        "rec",
        "status = \"500\"\nfail_with = \"panic\"",
        "[triggers.stream.retry]\nmax_attempts = 2\ninitial = \"50ms\"",
    );
    manifest(
        s.dir.path(),
        "spin",
        "spin",
        &format!(
            "[limits]\ntimeout = \"200ms\"\n[[triggers.stream]]\nstream = {:?}\n[triggers.stream.retry]\nmax_attempts = 2\ninitial = \"50ms\"\n",
            s.stream
        ),
    );
    let _host = s.host();
    s.wait_group("spin");
    s.wait_group("rec");
    s.add(&[("data", "{}")]);
    let letters = s.wait_dead_letters(2);
    s.wait_settled("rec");
    s.wait_settled("spin");
    let by = |f: &str| {
        letters
            .iter()
            .find(|l| l.get("eddy.function") == f)
            .unwrap_or_else(|| panic!("no dead letter from {f}: {letters:?}"))
            .clone()
    };
    let trap = by("rec");
    assert_eq!(trap.get("eddy.reason"), "failed");
    assert_eq!(trap.get("eddy.attempts"), "2");
    assert!(
        trap.get("eddy.error").contains("panicking on attempt 2"),
        "{}",
        trap.get("eddy.error")
    );
    assert!(!trap.fields.contains_key("eddy.status"));
    let timeout = by("spin");
    assert_eq!(timeout.get("eddy.attempts"), "2");
    assert!(
        timeout.get("eddy.error").contains("200 ms"),
        "{}",
        timeout.get("eddy.error")
    );
}

#[test]
fn malformed_entries_are_dead_lettered_before_any_invocation() {
    let mut s = setup();
    s.record("rec", "", "");
    let _host = s.host();
    s.wait_group("rec");
    s.add(&[("type", "NoData")]);
    s.add(&[("type", "BadJson"), ("data", "{oops")]);
    s.add(&[
        ("type", "Text"),
        ("datacontenttype", "text/plain"),
        ("data", "plain words"),
    ]);
    let letters = s.wait_dead_letters(2);
    s.wait_settled("rec");
    let records = s.records();
    assert_eq!(records.len(), 1, "only the well-formed entry runs");
    assert_eq!(records[0].data()["type"], "Text");
    let reasons: BTreeSet<(&str, &str, &str)> = letters
        .iter()
        .map(|l| (l.get("type"), l.get("eddy.reason"), l.get("eddy.attempts")))
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from([("NoData", "malformed", "0"), ("BadJson", "malformed", "0")])
    );
    let no_data = letters.iter().find(|l| l.get("type") == "NoData").unwrap();
    assert!(no_data.get("eddy.error").contains("`data`"));
}

#[test]
fn a_host_killed_mid_batch_loses_nothing_while_another_keeps_going() {
    const EVENTS: usize = 3000;
    let mut s = setup();
    s.record(
        "rec",
        "work_ms = \"1\"",
        "batch = 64\nconcurrency = 8\n[triggers.stream.retry]\ninitial = \"50ms\"",
    );
    // A short timeout so the dead host's entries are claimed 1.5 s after it stopped.
    s.set_timeout("rec", "1s");
    let mut doomed = s.host();
    let _survivor = s.host();
    s.wait_group("rec");
    let mut pipe = redis::pipe();
    for n in 0..EVENTS {
        pipe.xadd(
            &s.stream,
            "*",
            &[
                ("id", format!("ev-{n}")),
                ("data", format!("{{\"n\":{n}}}")),
            ],
        )
        .ignore();
    }
    let () = pipe.query(&mut s.conn).unwrap();
    eventually(WAIT, "some progress before the kill", || {
        let n: usize = s.conn.xlen(&s.records).unwrap();
        (n >= EVENTS / 5).then_some(())
    });
    doomed.kill();
    let (records, conn) = (s.records.clone(), &mut s.conn);
    eventually(Duration::from_secs(90), "every event handled", || {
        let seen: BTreeSet<String> = entries(conn, &records)
            .iter()
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect();
        (seen.len() == EVENTS).then_some(())
    });
    s.wait_settled("rec");
    assert!(s.dead_letters().is_empty(), "nothing was dead-lettered");
}

#[test]
fn a_retry_happens_even_if_its_host_dies_during_the_backoff() {
    let mut s = setup();
    s.record(
        "rec",
        "status = \"503\"\nsucceed_on = \"2\"",
        "[triggers.stream.retry]\ninitial = \"2s\"\njitter = 0.0",
    );
    let mut first = s.host();
    s.wait_group("rec");
    s.add(&[("data", "{}")]);
    s.wait_records(1);
    let (stream, conn) = (s.stream.clone(), &mut s.conn);
    eventually(WAIT, "the retry to be scheduled", || {
        (scheduled_retries(conn, &stream, "rec") == 1).then_some(())
    });
    first.kill();
    let _second = s.host();
    let attempts = s.wait_records(2);
    s.wait_settled("rec");
    assert_eq!(
        attempts[1].data()["attempt"],
        2,
        "the attempt count carried over"
    );
    assert!(attempts[1].millis() - attempts[0].millis() >= 2000);
    assert!(s.dead_letters().is_empty());
}

#[test]
fn a_redis_restart_loses_nothing() {
    let mut s = setup();
    s.record("rec", "", "[triggers.stream.retry]\ninitial = \"100ms\"");
    let host = s.host();
    s.wait_group("rec");
    for n in 0..100 {
        s.add(&[("id", &format!("ev-{n}")), ("data", "{}")]);
    }
    s.wait_records(100);
    s.redis.restart(Duration::from_millis(500));
    let mut conn = s.redis.conn();
    for n in 100..200 {
        add(
            &mut conn,
            &s.stream,
            &[("id", &format!("ev-{n}")), ("data", "{}")],
        );
    }
    s.conn = conn;
    let (records, conn) = (s.records.clone(), &mut s.conn);
    eventually(WAIT, "every event after the restart", || {
        let seen: BTreeSet<String> = entries(conn, &records)
            .iter()
            .map(|r| r.data()["id"].as_str().unwrap().to_owned())
            .collect();
        (seen.len() == 200).then_some(())
    });
    s.wait_settled("rec");
    assert!(
        host.log().contains("WARN"),
        "the outage was logged:\n{}",
        host.log()
    );
}

#[test]
fn sigterm_finishes_in_flight_work_then_exits_zero() {
    let mut s = setup();
    s.record("rec", "work_ms = \"1500\"", "concurrency = 4");
    let mut host = s.host();
    s.wait_group("rec");
    for _ in 0..4 {
        s.add(&[("data", "{}")]);
    }
    s.wait_records(4);
    let status = host.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}:\n{}", host.log());
    assert_eq!(
        pending(&mut s.conn, &s.stream, "rec"),
        0,
        "in-flight work was acked"
    );
    assert!(s.dead_letters().is_empty());
    assert_eq!(s.records().len(), 4);
}

#[test]
fn work_queued_on_a_live_host_is_never_claimed_from_under_it() {
    // One worker, eight events of 400 ms each: the last waits about 2.8 s in the local queue,
    // far past the 1.5 s idle threshold (1 s timeout + 500 ms margin). The host keeps the
    // queued entries fresh, so the second host claims none and nothing runs twice.
    let mut s = setup();
    s.record("rec", "work_ms = \"400\"", "batch = 8\nconcurrency = 8");
    s.set_timeout("rec", "1s");
    let _busy = Host::start(&s.redis.url(), s.dir.path(), &["--workers", "1"]);
    s.wait_group("rec");
    for n in 0..8 {
        s.add(&[("id", &format!("ev-{n}")), ("data", "{}")]);
    }
    s.wait_records(1);
    let _idle = Host::start(&s.redis.url(), s.dir.path(), &["--workers", "1"]);
    s.wait_records(8);
    s.wait_settled("rec");
    std::thread::sleep(Duration::from_millis(500));
    let records = s.records();
    let attempts: Vec<i64> = records
        .iter()
        .map(|r| r.data()["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1; 8], "an event ran twice: {records:?}");
}

#[test]
fn an_entry_that_keeps_killing_hosts_ends_as_abandoned() {
    // max_attempts = 1: the host handling the only attempt dies, so the claim that follows
    // would be attempt 2; instead of looping, the entry is dead-lettered as abandoned.
    let mut s = setup();
    s.record(
        "rec",
        // Long enough that the kill lands mid-attempt even on a loaded machine.
        "work_ms = \"5000\"",
        "[triggers.stream.retry]\nmax_attempts = 1",
    );
    s.set_timeout("rec", "6s");
    let mut victim = s.host();
    s.wait_group("rec");
    let entry_id = s.add(&[("type", "Poison"), ("data", "{}")]);
    s.wait_records(1);
    victim.kill();
    let _next = s.host();
    let letter = s.wait_dead_letters(1).remove(0);
    s.wait_settled("rec");
    assert_eq!(letter.get("eddy.reason"), "abandoned");
    assert_eq!(letter.get("eddy.attempts"), "1");
    assert_eq!(letter.get("eddy.entry_id"), entry_id);
    assert_eq!(letter.get("type"), "Poison");
    assert_eq!(s.records().len(), 1, "the poison entry was not run again");
}

#[test]
fn a_function_may_publish_only_where_its_manifest_allows() {
    let mut s = setup();
    // Allowed to publish somewhere else, not to its record stream.
    manifest(
        s.dir.path(),
        "rec",
        "record",
        &format!(
            "publish = [\"elsewhere\"]\n[config]\nrecord_stream = {:?}\n[[triggers.stream]]\nstream = {:?}\n[triggers.stream.retry]\nmax_attempts = 1\n",
            s.records, s.stream
        ),
    );
    let _host = s.host();
    s.wait_group("rec");
    s.add(&[("data", "{}")]);
    let letter = s.wait_dead_letters(1).remove(0);
    s.wait_settled("rec");
    assert!(s.records().is_empty(), "the refused publish happened");
    let error = letter.get("eddy.error");
    assert!(
        error.contains("may not publish") && error.contains(&s.records),
        "{error}"
    );
}

#[test]
fn a_chain_of_three_functions_shares_one_trace_and_correlation_id() {
    let mut s = setup();
    let hops: Vec<String> = (0..3).map(|i| unique(&format!("hop{i}"))).collect();
    // one -> hops[0] -> two -> hops[1] -> three -> hops[2]
    let sources = [s.stream.clone(), hops[0].clone(), hops[1].clone()];
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        record_function(s.dir.path(), name, &sources[i], &hops[i], "", "");
    }
    let _host = s.host();
    s.wait_group("one");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    s.add(&[
        ("id", "order-1"),
        ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01")),
        ("data", "{}"),
    ]);
    let last = eventually(WAIT, "the end of the chain", || {
        entries(&mut s.conn, &hops[2]).into_iter().next()
    });
    let mut parents = BTreeSet::new();
    for hop in &hops {
        let entry = entries(&mut s.conn, hop).remove(0);
        let traceparent = entry.get("traceparent").to_owned();
        assert_eq!(
            traceparent.split('-').nth(1),
            Some(trace),
            "{hop}: {traceparent}"
        );
        parents.insert(traceparent.split('-').nth(2).unwrap().to_owned());
        assert_eq!(entry.get("correlationid"), "order-1", "{hop}");
    }
    assert_eq!(parents.len(), 3, "each hop has its own span as parent");
    assert_eq!(last.get("source"), "eddy://three");
}
