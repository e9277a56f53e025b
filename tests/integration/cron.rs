//! Cron end to end: cronjobs created with the CLI and fired by real hosts, once per tick across
//! several hosts (one killed mid-run), catch-up after every host was down, a failing cron
//! function retried then dead-lettered, and bad input refused with nothing stored.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use eddy_tests::eddy_redis;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{StreamEntry, entries, eventually, manifest, unique};
use redis::Commands as _;

fn cron(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    eddy_redis(&[&["cron"], args].concat(), &redis.url()).into_parts()
}

/// The scheduled unix second of a tick event, from its deterministic id.
fn tick_second(entry: &StreamEntry, name: &str) -> i64 {
    entry
        .get("id")
        .strip_prefix(&format!("cron:{name}:"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a tick id of {name}: {entry:?}"))
}

/// The scheduled seconds of every tick of cronjob `name` in `stream`, in stream order.
fn tick_seconds(conn: &mut redis::Connection, stream: &str, name: &str) -> Vec<i64> {
    entries(conn, stream)
        .iter()
        .map(|t| tick_second(t, name))
        .collect()
}

/// Asserts that no second fired twice.
fn assert_once_each(seconds: &[i64], what: &str) {
    let unique: BTreeSet<i64> = seconds.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seconds.len(),
        "{what}: a tick fired twice: {seconds:?}"
    );
}

/// Asserts that `seconds` are every second from the first to the last, once each.
fn assert_every_second(seconds: &[i64], what: &str) {
    let (first, last) = (seconds[0], *seconds.last().unwrap());
    assert_eq!(seconds, (first..=last).collect::<Vec<_>>(), "{what}");
}

fn empty_functions() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // A host needs no function to run cronjobs; an echo with no trigger keeps --functions valid.
    manifest(dir.path(), "idle", "echo", "");
    dir
}

fn host(redis: &RedisServer, functions: &Path) -> Host {
    Host::start(&redis.url(), functions, &[])
}

#[test]
fn every_second_fires_exactly_once_across_three_hosts_even_when_one_dies() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let fns = empty_functions();
    let stream = unique("beats");
    let mut hosts: Vec<Host> = (0..3).map(|_| host(&redis, fns.path())).collect();
    let (code, out, err) = cron(
        &redis,
        &[
            "create",
            "beat",
            "--schedule",
            "* * * * * *",
            "--stream",
            &stream,
            "--type",
            "Beat",
            "--data",
            r#"{"k":"v"}"#,
            // A host picking the cronjob up while another is more than a tick late must fire
            // the late tick, not just mark it: with `latest` it would mark all but the newest.
            "--catch-up",
            "all",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // One host is killed at a moment that differs from run to run (2 to 20 ticks in), and
    // the schedule runs for a minute in all.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let kill_after = 2 + nanos % 19;
    eventually(Duration::from_secs(40), "ticks before the kill", || {
        (entries(&mut conn, &stream).len() >= kill_after).then_some(())
    });
    hosts.remove(nanos % 3).kill();
    eventually(Duration::from_secs(90), "a minute of ticks", || {
        (entries(&mut conn, &stream).len() >= 60).then_some(())
    });
    let (code, out, _) = cron(&redis, &["ls"]);
    assert_eq!(code, 0);
    assert!(out.contains("beat") && out.contains(&stream), "{out}");
    let (code, _, err) = cron(&redis, &["rm", "beat"]);
    assert_eq!(code, 0, "{err}");
    // The firing script checks the cronjob still exists: nothing fires once `rm` returned.
    let ticks = entries(&mut conn, &stream);
    let seconds = tick_seconds(&mut conn, &stream, "beat");
    assert_once_each(&seconds, "beat");
    assert_every_second(&seconds, "a tick is missing");
    for tick in &ticks {
        assert_eq!(tick.get("type"), "Beat");
        assert_eq!(tick.data()["k"], "v");
        assert_eq!(tick.get("source"), "eddy://cron/beat");
    }
    // Two seconds of a per-second schedule: at least one tick would have fired.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        entries(&mut conn, &stream).len(),
        ticks.len(),
        "ticks continued after rm"
    );
}

#[test]
fn missed_ticks_follow_the_catch_up_policy() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let fns = empty_functions();
    let streams: Vec<(String, &str)> = ["none", "latest", "all"]
        .iter()
        .map(|policy| (unique(policy), *policy))
        .collect();
    for (stream, policy) in &streams {
        let (code, _, err) = cron(
            &redis,
            &[
                "create",
                &format!("catch-{policy}"),
                "--schedule",
                "* * * * * *",
                "--stream",
                stream,
                "--type",
                "Tick",
                "--catch-up",
                policy,
                // Every tick not fired on time counts as missed, as before late_grace existed.
                "--late-grace",
                "0s",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let mut first = host(&redis, fns.path());
    eventually(Duration::from_secs(10), "every cronjob ticking", || {
        streams
            .iter()
            .all(|(s, _)| !entries(&mut conn, s).is_empty())
            .then_some(())
    });
    first.kill();
    let counts: Vec<usize> = streams
        .iter()
        .map(|(s, _)| entries(&mut conn, s).len())
        .collect();
    std::thread::sleep(Duration::from_millis(3500)); // 3 or 4 ticks missed
    let _second = host(&redis, fns.path());
    // A ticker catches up before it fires its first regular tick, so a regular tick after the
    // restart on every stream means every catch-up has run.
    eventually(
        Duration::from_secs(15),
        "a regular tick after the restart",
        || {
            streams
                .iter()
                .zip(&counts)
                .all(|((s, _), before)| {
                    entries(&mut conn, s)
                        .iter()
                        .skip(*before)
                        .any(|e| !e.fields.contains_key("catchup"))
                })
                .then_some(())
        },
    );
    for ((stream, policy), before) in streams.iter().zip(counts) {
        let caught: Vec<StreamEntry> = entries(&mut conn, stream)
            .into_iter()
            .skip(before)
            .filter(|e| e.fields.contains_key("catchup"))
            .collect();
        match *policy {
            "none" => assert!(caught.is_empty(), "none fired {caught:?}"),
            "latest" => assert_eq!(caught.len(), 1, "latest fired {caught:?}"),
            // 3.5 s down plus the new host's start: at least 3 ticks were missed, maybe more
            // on a busy machine; every one of them fires.
            _ => assert!(caught.len() >= 3, "all fired only {} ticks", caught.len()),
        }
        let seconds = tick_seconds(&mut conn, stream, &format!("catch-{policy}"));
        assert_once_each(&seconds, policy);
    }
}

/// Creates a per-second cronjob `name` into `stream` with `extra` arguments.
fn per_second(redis: &RedisServer, name: &str, stream: &str, extra: &[&str]) {
    let args = [
        &[
            "create",
            name,
            "--schedule",
            "* * * * * *",
            "--stream",
            stream,
            "--type",
            "Tick",
        ][..],
        extra,
    ]
    .concat();
    let (code, out, err) = cron(redis, &args);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_stalled_host_s_late_ticks_fire_once_each_when_another_picks_up() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let fns = empty_functions();
    let graced = unique("graced");
    let strict = unique("strict");
    per_second(&redis, "graced", &graced, &[]); // late_grace 60s, catch-up latest
    per_second(&redis, "strict", &strict, &["--late-grace", "0s"]);
    let mut stalled = host(&redis, fns.path());
    eventually(Duration::from_secs(10), "both ticking", || {
        (!entries(&mut conn, &graced).is_empty() && !entries(&mut conn, &strict).is_empty())
            .then_some(())
    });
    eddy_tests::host::signal(stalled.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    let before = (
        entries(&mut conn, &graced).len(),
        entries(&mut conn, &strict).len(),
    );
    let _second = host(&redis, fns.path());
    // Its catch-up runs before its first regular tick.
    eventually(
        Duration::from_secs(15),
        "a regular tick from the new host",
        || {
            [(&graced, before.0), (&strict, before.1)]
                .iter()
                .all(|(stream, n)| {
                    entries(&mut conn, stream)
                        .iter()
                        .skip(*n)
                        .any(|e| !e.fields.contains_key("catchup"))
                })
                .then_some(())
        },
    );
    eddy_tests::host::signal(stalled.pid(), libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));
    for name in ["graced", "strict"] {
        let (code, _, err) = cron(&redis, &["rm", name]);
        assert_eq!(code, 0, "{err}");
    }
    stalled.kill();

    // With the grace, every second fires once, each with its own scheduled time.
    let graced_seconds = tick_seconds(&mut conn, &graced, "graced");
    assert_every_second(&graced_seconds, "late ticks were skipped or doubled");
    assert!(
        entries(&mut conn, &graced)
            .iter()
            .all(|e| !e.fields.contains_key("catchup")),
        "late ticks fire as ordinary ticks, not catch-ups"
    );
    // Without it (0s, latest): today's behaviour, only the newest of the stalled ticks.
    let strict_seconds = tick_seconds(&mut conn, &strict, "strict");
    assert_once_each(&strict_seconds, "strict");
    let (first, last) = (strict_seconds[0], *strict_seconds.last().unwrap());
    assert!(
        strict_seconds.len() < (last - first + 1) as usize,
        "grace 0 with latest skips stalled ticks: {strict_seconds:?}"
    );
}

#[test]
fn a_running_host_that_falls_behind_keeps_to_the_grace_too() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let fns = empty_functions();
    let stream = unique("behind");
    per_second(
        &redis,
        "behind",
        &stream,
        &["--late-grace", "2s", "--catch-up", "none"],
    );
    let mut only = host(&redis, fns.path());
    eventually(Duration::from_secs(10), "ticking", || {
        (entries(&mut conn, &stream).len() >= 2).then_some(())
    });
    eddy_tests::host::signal(only.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(6));
    let resumed = chrono::Utc::now().timestamp();
    eddy_tests::host::signal(only.pid(), libc::SIGCONT);
    eventually(Duration::from_secs(10), "a tick after the stall", || {
        let ticks = entries(&mut conn, &stream);
        (tick_second(ticks.last().unwrap(), "behind") > resumed + 1).then_some(())
    });
    let listed = eddy_redis(&["cron", "ls", "--output", "json"], &redis.url());
    let missed = listed.json()[0]["missed"].clone();
    only.kill();
    // Ticks more than 2 s late were missed and, under `none`, skipped and counted; only
    // the last two seconds of the stall fired late.
    let skipped = missed["skipped"].as_u64().unwrap();
    assert!((2..=6).contains(&skipped), "{missed}");
    let seconds = tick_seconds(&mut conn, &stream, "behind");
    assert_once_each(&seconds, "behind");
    let span = (seconds.last().unwrap() - seconds[0] + 1) as usize;
    assert_eq!(
        span - seconds.len(),
        skipped as usize,
        "skipped ticks are the gap"
    );
}

#[test]
fn after_a_long_outage_the_last_minute_fires_and_older_ticks_follow_the_policy() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let fns = empty_functions();
    let stream = unique("outage");
    per_second(&redis, "outage", &stream, &["--late-grace", "60s"]);
    // Every host was down for five minutes: the mark says so.
    let now = chrono::Utc::now().timestamp();
    let _: () = conn
        .hset(
            format!("eddy:{{{stream}}}:cronjob:outage:state"),
            "last",
            now - 300,
        )
        .unwrap();
    let _host = host(&redis, fns.path());
    eventually(
        Duration::from_secs(20),
        "the catch-up and a regular tick",
        || {
            let ticks = entries(&mut conn, &stream);
            (ticks.len() > 60 && tick_second(ticks.last().unwrap(), "outage") > now + 1)
                .then_some(())
        },
    );
    // eddy cron ls counts the missed ticks by what the policy did.
    let listed = eddy_redis(&["cron", "ls", "--output", "json"], &redis.url());
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let missed = listed.json()[0]["missed"].clone();
    assert_eq!(missed["emitted"], 1, "{missed}");
    let skipped = missed["skipped"].as_u64().unwrap();
    assert!((230..=242).contains(&skipped), "{missed}");
    let (code, _, err) = cron(&redis, &["rm", "outage"]);
    assert_eq!(code, 0, "{err}");
    let ticks = entries(&mut conn, &stream);
    let caught: Vec<&StreamEntry> = ticks
        .iter()
        .filter(|e| e.fields.contains_key("catchup"))
        .collect();
    assert_eq!(caught.len(), 1, "latest: one missed tick emitted");
    let missed_newest = tick_second(caught[0], "outage");
    let seconds: Vec<i64> = ticks.iter().map(|t| tick_second(t, "outage")).collect();
    // After the one catch-up, every second from the grace window on fires, once each.
    let late = &seconds[1..];
    assert_every_second(late, "the last minute's ticks");
    assert_eq!(late[0], missed_newest + 1);
    assert!(
        (now - 62..=now - 58).contains(&late[0]),
        "grace starts at {}, now {now}",
        late[0]
    );
}

#[test]
fn a_failing_cron_function_is_retried_then_dead_lettered() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let fns = tempfile::tempdir().unwrap();
    let records = unique("records");
    let name = unique("nightly").replace('-', "_");
    manifest(
        fns.path(),
        "nightly",
        "record",
        &format!(
            "publish = [{records:?}]\n[config]\nrecord_stream = {records:?}\nstatus = \"500\"\n[[triggers.cron]]\nname = {name:?}\nschedule = \"* * * * * *\"\n[triggers.cron.retry]\nmax_attempts = 2\ninitial = \"100ms\"\njitter = 0.0\n"
        ),
    );
    let _host = host(&redis, fns.path());
    let dlq = format!("eddy:cron:{name}.dlq");
    let letter = eventually(Duration::from_secs(15), "a dead-lettered tick", || {
        entries(&mut conn, &dlq).into_iter().next()
    });
    assert_eq!(letter.get("type"), "eddy.cron.tick");
    assert_eq!(letter.get("eddy.reason"), "failed");
    assert_eq!(letter.get("eddy.attempts"), "2");
    assert_eq!(letter.get("eddy.function"), "nightly");
    let second = tick_second(&letter, &name);
    assert_eq!(letter.data()["schedule"], name.as_str());
    let attempts: Vec<i64> = entries(&mut conn, &records)
        .iter()
        .filter(|r| r.data()["id"] == format!("cron:{name}:{second}").as_str())
        .map(|r| r.data()["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2], "the tick was tried exactly twice");
}

#[test]
fn bad_cronjobs_are_refused_and_nothing_is_stored() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let cases: &[(&[&str], &str)] = &[
        (&["Bad_Name!", "--schedule", "* * * * * *"], "name"),
        (&["ok", "--schedule", "* * *"], "3 fields"),
        (
            &["ok", "--schedule", "0 61 * * * *"],
            "not a valid cron expression",
        ),
        (&["ok", "--schedule", "0 0 0 30 2 *"], "never fires"),
        (
            &["ok", "--schedule", "* * * * *", "--timezone", "Moon/Base"],
            "IANA",
        ),
        (
            &["ok", "--schedule", "* * * * *", "--data", "{nope"],
            "data",
        ),
    ];
    for (args, needle) in cases {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--stream", "s", "--type", "T"]);
        let (code, out, err) = cron(&redis, &full);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let stored: usize = conn.hlen("eddy:cronjobs").unwrap();
    assert_eq!(stored, 0, "a refused cronjob was stored");
    let (code, _, err) = cron(&redis, &["rm", "missing"]);
    assert_eq!(code, 1);
    assert!(err.contains("no cronjob named"), "{err}");
}
