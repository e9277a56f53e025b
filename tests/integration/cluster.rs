//! Eddy on a real Redis Cluster (three masters, three replicas): two hosts, one given the
//! cluster's seed list and one a single node's address (it finds out it is a cluster), and
//! streams placed so that each master serves one. Everything a host does runs across the
//! slots: stream triggers with retries, dead letters forwarded to a stream in another slot and
//! replayed, `once`, history replay, cron ticks and a cronjob's fired once, shared key-value
//! counters, a deploy with ingress, invocation records, status and metrics. Then a master is
//! killed while a host drains: its replica takes over and the host carries on without a
//! restart; and a master stalled past the commands' timeout has the host replace its cluster
//! connections and carry on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eddy_tests::eddy_redis;
use eddy_tests::host::Host;
use eddy_tests::redis_cluster::RedisCluster;
use eddy_tests::streams::{
    StreamEntry, add, entries, eventually, manifest, pending, record_function, scheduled_retries,
    settled, unique,
};

/// One stream name per master: `base-<n>` names tried until each master serves one.
fn one_stream_per_master(cluster: &RedisCluster, base: &str) -> Vec<String> {
    let mut by_master: BTreeMap<u16, String> = BTreeMap::new();
    for n in 0..200 {
        let name = unique(&format!("{base}{n}"));
        by_master.entry(cluster.master_of(&name)).or_insert(name);
        if by_master.len() == 3 {
            break;
        }
    }
    assert_eq!(by_master.len(), 3, "names spread over the masters");
    by_master.into_values().collect()
}

fn attempts_by_event(records: &[StreamEntry]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in records {
        let data = record.data();
        if let (Some(id), Some(attempt)) = (data["id"].as_str(), data["attempt"].as_u64()) {
            out.entry(id.to_owned()).or_default().push(attempt);
        }
    }
    out
}

fn cli(host: &str, args: &[&str]) -> (i32, String, String) {
    eddy_tests::eddy_host(args, host).into_parts()
}

/// Waits for the groups `<prefix><n>` on `streams`, then adds `per_stream` events to each,
/// with ids `<stream>-<n>`.
fn fill_when_grouped(
    conn: &mut redis::cluster::ClusterConnection,
    streams: &[String],
    prefix: &str,
    per_stream: usize,
) {
    eventually(Duration::from_secs(20), "every group", || {
        streams
            .iter()
            .enumerate()
            .all(|(n, s)| eddy_tests::streams::group_exists(conn, s, &format!("{prefix}{n}")))
            .then_some(())
    });
    for stream in streams {
        for n in 0..per_stream {
            add(
                conn,
                stream,
                &[("id", &format!("{stream}-{n}")), ("data", "{}")],
            );
        }
    }
}

#[test]
fn a_cluster_runs_streams_dead_letters_cron_and_deploys_across_its_masters() {
    let cluster = RedisCluster::start();
    let mut conn = cluster.conn();
    let dir = tempfile::tempdir().unwrap();
    let streams = one_stream_per_master(&cluster, "orders");
    let records = unique("records");
    // Each stream: a function that fails the first attempt and succeeds the second (retries
    // through the schedule in the stream's slot), recording every attempt.
    for (n, stream) in streams.iter().enumerate() {
        record_function(
            dir.path(),
            &format!("retry{n}"),
            stream,
            &records,
            "status = \"500\"\nsucceed_on = \"2\"",
            "[triggers.stream.retry]\ninitial = \"100ms\"\njitter = 0.0",
        );
    }
    // One more group on the first stream that never succeeds: its dead letters go to a stream
    // the cluster places by its own name.
    let letters = unique("letters");
    record_function(
        dir.path(),
        "doomed",
        &streams[0],
        &records,
        "status = \"500\"",
        &format!("dead_letter = {letters:?}\n[triggers.stream.retry]\nmax_attempts = 1"),
    );
    // Claims each event id once.
    let once_stream = &unique("once");
    record_function(
        dir.path(),
        "onlyonce",
        once_stream,
        &records,
        "once = \"true\"",
        "",
    );
    // A cron trigger every second, two hosts: each tick handled once.
    manifest(
        dir.path(),
        "ticker",
        "record",
        &format!(
            "publish = [{records:?}]\n[config]\nrecord_stream = {records:?}\n\
             [[triggers.cron]]\nname = \"clusterclock\"\nschedule = \"* * * * * *\"\n"
        ),
    );

    // Key-value: a counter two hosts increment, in a bucket hashed to its own slot.
    let counts = unique("counts");
    manifest(
        dir.path(),
        "counter",
        "reach",
        &format!(
            "[keyvalue]\nshared = [\"tally\"]\n[[triggers.stream]]\nstream = {counts:?}\nconcurrency = 8\n"
        ),
    );
    // A cronjob (stored in Redis, run by whichever host): its ticks go to a user stream.
    let job_stream = unique("ticks");
    let created = eddy_redis(
        &[
            "cron",
            "create",
            "clusterjob",
            "--schedule",
            "* * * * * *",
            "--stream",
            &job_stream,
            "--type",
            "Tick",
        ],
        &cluster.url(),
    );
    assert_eq!(created.code, 0, "{}", created.stderr);

    let mut a = Host::start(&cluster.url(), dir.path(), &[]);
    let mut b = Host::start(&cluster.one_node_url(), dir.path(), &[]);
    a.wait_for_log("stream trigger starting", Duration::from_secs(20));
    b.wait_for_log("stream trigger starting", Duration::from_secs(20));
    const PER_STREAM: usize = 20;
    fill_when_grouped(&mut conn, &streams, "retry", PER_STREAM);
    // The same event id twice on the once stream: handled once, skipped once.
    for _ in 0..2 {
        add(&mut conn, once_stream, &[("id", "the-one"), ("data", "{}")]);
    }

    // Retries: every event's second attempt succeeded, nothing is pending or scheduled.
    eventually(
        Duration::from_secs(60),
        "every event retried once and done",
        || {
            let by_event = attempts_by_event(&entries(&mut conn, &records));
            streams
                .iter()
                .all(|stream| {
                    (0..PER_STREAM).all(|n| {
                        by_event
                            .get(&format!("{stream}-{n}"))
                            .is_some_and(|attempts| {
                                attempts.iter().filter(|a| **a == 2).count() >= 1
                            })
                    })
                })
                .then_some(())
        },
    );
    for (n, stream) in streams.iter().enumerate() {
        let group = format!("retry{n}");
        eventually(Duration::from_secs(20), "the groups settled", || {
            (settled(&mut conn, stream, &group)
                && pending(&mut conn, stream, &group) == 0
                && scheduled_retries(&mut conn, stream, &group) == 0)
                .then_some(())
        });
    }

    // Dead letters: one per event of the first stream, none twice, none left in the outbox.
    let dead = eventually(Duration::from_secs(30), "every dead letter", || {
        let found = entries(&mut conn, &letters);
        (found.len() >= PER_STREAM).then_some(found)
    });
    std::thread::sleep(Duration::from_millis(500));
    let dead = entries(&mut conn, &letters).len().max(dead.len());
    assert_eq!(
        dead, PER_STREAM,
        "each failed event dead-lettered exactly once"
    );
    let outbox = format!("eddy:{{{}}}:dead-letters", streams[0]);
    assert_eq!(
        entries(&mut conn, &outbox).len(),
        0,
        "the outbox is drained"
    );

    // Dead-letter replay: the letters leave their stream and come back, each once.
    let listed = eddy_redis(&["dlq", "replay", "doomed", "--all"], &cluster.url());
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed
            .stdout
            .contains(&format!("replayed {PER_STREAM} of {PER_STREAM}")),
        "{}",
        listed.stdout
    );
    eventually(Duration::from_secs(30), "each replay handled", || {
        let replayed: BTreeSet<String> = entries(&mut conn, &records)
            .iter()
            .filter(|r| {
                !r.data()["replayedfrom"].is_null() && r.data()["replayedfrom"] != "history"
            })
            .filter_map(|r| r.data()["id"].as_str().map(str::to_owned))
            .collect();
        (replayed.len() == PER_STREAM).then_some(())
    });
    eventually(
        Duration::from_secs(30),
        "the replays dead-lettered again",
        || (entries(&mut conn, &letters).len() == PER_STREAM).then_some(()),
    );

    // Once: the duplicate id was skipped, not handled twice.
    eventually(Duration::from_secs(20), "the once claims", || {
        let mine: Vec<String> = entries(&mut conn, &records)
            .iter()
            .filter(|r| r.data()["id"] == "the-one")
            .map(|r| r.get("type").to_owned())
            .collect();
        (mine.len() == 2).then_some(mine)
    });
    let kinds: BTreeSet<String> = entries(&mut conn, &records)
        .iter()
        .filter(|r| r.data()["id"] == "the-one")
        .map(|r| r.get("type").to_owned())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Attempt".to_owned(), "Skipped".to_owned()])
    );

    // History replay of one function over its stream.
    let history = eddy_redis(
        &["replay", "retry2", "--from", "-", "--stream", &streams[2]],
        &cluster.url(),
    );
    assert_eq!(history.code, 0, "{}", history.stderr);
    eventually(Duration::from_secs(30), "the history re-run", || {
        let rerun = entries(&mut conn, &records)
            .iter()
            .filter(|r| r.data()["replayedfrom"] == "history")
            .count();
        (rerun >= PER_STREAM).then_some(())
    });

    // Cron: two hosts, each tick recorded once.
    let ticks = eventually(Duration::from_secs(20), "a few ticks", || {
        let ticks: Vec<String> = entries(&mut conn, &records)
            .iter()
            .filter_map(|r| r.data()["id"].as_str().map(str::to_owned))
            .filter(|id| id.starts_with("cron:clusterclock:"))
            .collect();
        (ticks.len() >= 3).then_some(ticks)
    });
    let distinct: BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");

    // Deploy through one host; an event sent by ingress through the other is handled.
    let deployed_stream = unique("deployed");
    let deployed_records = unique("deployed-records");
    let deploy_dir = tempfile::tempdir().unwrap();
    let path = record_function(
        deploy_dir.path(),
        "late",
        &deployed_stream,
        &deployed_records,
        "",
        "",
    );
    let (url_a, url_b) = (a.api_url(), b.api_url());
    let (code, out, err) = cli(&url_a, &["deploy", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    a.wait_for_log("deployed function running", Duration::from_secs(20));
    b.wait_for_log("deployed function running", Duration::from_secs(20));
    let (code, out, err) = cli(
        &url_b,
        &[
            "publish",
            &deployed_stream,
            "--type",
            "T",
            "--id",
            "via-ingress",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    eventually(Duration::from_secs(20), "the deployed function ran", || {
        entries(&mut conn, &deployed_records)
            .iter()
            .any(|r| r.data()["id"] == "via-ingress")
            .then_some(())
    });

    // Key-value increments from two hosts are atomic on the cluster too.
    let increment = r#"{"do":"increment","bucket":"tally","key":"n"}"#;
    for _ in 0..200 {
        add(&mut conn, &counts, &[("data", increment)]);
    }
    eventually(Duration::from_secs(30), "the increments", || {
        let n = eddy_redis(&["kv", "get", "tally", "n"], &cluster.url()).stdout;
        (n.trim() == "200").then_some(())
    });

    // The cronjob: ticks once each, its state readable.
    let job_ticks = eventually(Duration::from_secs(20), "cronjob ticks", || {
        let found = entries(&mut conn, &job_stream);
        (found.len() >= 3).then_some(found)
    });
    let ids: BTreeSet<&str> = job_ticks.iter().map(|t| t.get("id")).collect();
    assert_eq!(ids.len(), job_ticks.len(), "a cronjob tick fired twice");
    let listed = eddy_redis(&["cron", "ls", "--output", "json"], &cluster.url());
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        !listed.json()[0]["last_fire"].is_null(),
        "{}",
        listed.stdout
    );
    let removed = eddy_redis(&["cron", "rm", "clusterjob"], &cluster.url());
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let after_rm = entries(&mut conn, &job_stream).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        entries(&mut conn, &job_stream).len() <= after_rm + 1,
        "a removed cronjob kept firing"
    );

    // Invocation records: `eddy logs` reads them from the cluster.
    let logs = eddy_redis(&["logs", "retry0", "--output", "json"], &cluster.url());
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.contains("retry0"), "{}", logs.stdout);

    // Status and metrics read every group on every master.
    let status = eddy_redis(&["status", "--output", "json"], &cluster.url());
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status = status.json();
    let groups = status["groups"].as_array().expect("groups").clone();
    for stream in &streams {
        assert!(
            groups.iter().any(|g| g["stream"] == stream.as_str()),
            "{stream} missing from {groups:?}"
        );
    }
    assert!(
        status["redis"]["used_memory"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert_eq!(
        status["hosts"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let metrics = eddy_tests::http::curl(&[&format!("{url_a}/metrics")]).body;
    for stream in &streams {
        assert!(
            metrics.contains(&format!("eddy_consumer_lag{{stream=\"{stream}\"")),
            "no lag for {stream}"
        );
    }
    assert!(
        metrics.contains("eddy_redis_memory_used_bytes"),
        "{metrics}"
    );
}

#[test]
fn a_master_killed_mid_drain_fails_over_and_the_hosts_carry_on() {
    master_killed_mid_drain(&[]);
}

/// The same with settles waiting for a replica: a `WAIT` to the dead master must not hold the
/// host up once its replica has taken over.
#[test]
fn a_master_killed_mid_drain_fails_over_with_writes_waiting_for_replicas() {
    master_killed_mid_drain(&["--wait-replicas", "1"]);
}

fn master_killed_mid_drain(host_args: &[&str]) {
    let mut cluster =
        RedisCluster::start_with_node_timeout(eddy_tests::redis_cluster::FAILOVER_NODE_TIMEOUT);
    let mut conn = cluster.conn();
    let dir = tempfile::tempdir().unwrap();
    let streams = one_stream_per_master(&cluster, "drain");
    let victim = cluster.master_of(&streams[0]);
    // The records must survive the failover to count what was handled: keep them elsewhere.
    let records = (0..200)
        .map(|n| unique(&format!("records{n}")))
        .find(|name| cluster.master_of(name) != victim)
        .expect("a name on another master");
    for (n, stream) in streams.iter().enumerate() {
        record_function(
            dir.path(),
            &format!("drain{n}"),
            stream,
            &records,
            "work_ms = \"10\"",
            "",
        );
        // A read whose reply died with the master is pending on the promoted replica, for
        // this host, which never saw it: it is claimed once idle for the timeout plus the
        // claim margin, so a short timeout keeps the test short.
        let path = dir.path().join(format!("drain{n}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen("[config]", "[limits]\ntimeout = \"2s\"\n[config]", 1),
        )
        .unwrap();
    }
    let mut host = Host::start(&cluster.url(), dir.path(), host_args);
    host.wait_for_log("stream trigger starting", Duration::from_secs(20));
    const PER_STREAM: usize = 300;
    fill_when_grouped(&mut conn, &streams, "drain", PER_STREAM);
    // Kill the master of the first stream while the host drains it.
    eventually(Duration::from_secs(20), "the drain under way", || {
        (entries(&mut conn, &records).len() > 50).then_some(())
    });
    let before_kill = entries(&mut conn, &records).len();
    assert!(
        before_kill < 3 * PER_STREAM,
        "the drain was over before the kill ({before_kill} handled)"
    );
    cluster.kill(victim);
    // The others notice the death only after the node timeout: until then the cluster still
    // says it is fine, with the dead master serving the slot.
    eventually(
        Duration::from_secs(30),
        "a replica taking over the slot",
        || (cluster.master_of(&streams[0]) != victim).then_some(()),
    );
    cluster.wait_until_ok(Duration::from_secs(30));
    let mut conn = cluster.conn();
    // Events added after the failover are handled too: the host follows the new master.
    for stream in &streams {
        add(
            &mut conn,
            stream,
            &[("id", &format!("{stream}-after")), ("data", "{}")],
        );
    }
    let survivors: Vec<String> = entries(&mut conn, &streams[0])
        .iter()
        .map(|e| e.get("id").to_owned())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let handled = loop {
        let by_event = attempts_by_event(&entries(&mut conn, &records));
        if streams
            .iter()
            .all(|s| by_event.contains_key(&format!("{s}-after")))
            && survivors.iter().all(|id| by_event.contains_key(id))
        {
            break by_event;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not drained after the failover ({} of {} handled):\n{}",
            by_event.len(),
            3 * PER_STREAM + 3,
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Entries the old master acknowledged but never replicated are gone with it: count them,
    // as asynchronous replication allows; the other masters lost nothing.
    let kept_on_victim = entries(&mut conn, &streams[0]);
    for entry in &kept_on_victim {
        let id = entry.get("id");
        assert!(
            handled.contains_key(id),
            "{id} survived the failover but was never handled"
        );
    }
    let kept_on_victim = kept_on_victim.len();
    for stream in &streams[1..] {
        let missing = (0..PER_STREAM)
            .filter(|n| !handled.contains_key(&format!("{stream}-{n}")))
            .count();
        assert_eq!(missing, 0, "events of a surviving master were not handled");
    }
    let missing_on_victim = (0..PER_STREAM)
        .filter(|n| !handled.contains_key(&format!("{}-{n}", streams[0])))
        .count();
    eprintln!(
        "failover: {} of {PER_STREAM} entries survived on the promoted replica; {missing_on_victim} \
         events not handled (lost to asynchronous replication); {} cluster connections replaced",
        kept_on_victim.saturating_sub(1),
        host.log().matches("was replaced by a new one").count()
    );
    // A manual failover of another master: the old one stays up and answers MOVED, which a
    // pipeline (a settle, an ingress transaction) must follow.
    let moving = &streams[1];
    let old_master = cluster.master_of(moving);
    cluster.fail_over_to(cluster.replica_of(old_master));
    assert_ne!(cluster.master_of(moving), old_master);
    let mut conn = cluster.conn();
    for n in 0..20 {
        add(
            &mut conn,
            moving,
            &[("id", &format!("moved-{n}")), ("data", "{}")],
        );
    }
    let api = host.api_url();
    let (code, out, err) = cli(
        &api,
        &["publish", moving, "--type", "T", "--id", "moved-ingress"],
    );
    assert_eq!(code, 0, "ingress after a manual failover: {out}{err}");
    eventually(
        Duration::from_secs(60),
        "events after the manual failover",
        || {
            let by_event = attempts_by_event(&entries(&mut conn, &records));
            ((0..20).all(|n| by_event.contains_key(&format!("moved-{n}")))
                && by_event.contains_key("moved-ingress"))
            .then_some(())
        },
    );
    eventually(Duration::from_secs(30), "the moved stream settled", || {
        (settled(&mut conn, moving, "drain1") && pending(&mut conn, moving, "drain1") == 0)
            .then_some(())
    });

    assert!(
        !host.log().contains("panicked"),
        "the host panicked:\n{}",
        host.log()
    );
    host.terminate(Duration::from_secs(30));
}

/// A master that stops answering (SIGSTOP, shorter than the node timeout, so no failover):
/// the commands waiting on it time out, the host replaces the cluster connections they went
/// over, and once the master answers again every event is handled.
#[test]
fn a_stalled_master_has_its_connections_replaced_and_nothing_is_lost() {
    let cluster = RedisCluster::start_with_node_timeout(Duration::from_secs(60));
    let mut conn = cluster.conn();
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("stall");
    let stalled = cluster.master_of(&stream);
    let records = (0..200)
        .map(|n| unique(&format!("records{n}")))
        .find(|name| cluster.master_of(name) != stalled)
        .expect("a name on another master");
    record_function(dir.path(), "stall", &stream, &records, "", "");
    let mut host = Host::start(&cluster.url(), dir.path(), &[]);
    eventually(Duration::from_secs(20), "the group", || {
        eddy_tests::streams::group_exists(&mut conn, &stream, "stall").then_some(())
    });
    for n in 0..10 {
        add(
            &mut conn,
            &stream,
            &[("id", &format!("before-{n}")), ("data", "{}")],
        );
    }
    eventually(Duration::from_secs(20), "events before the stall", || {
        (attempts_by_event(&entries(&mut conn, &records)).len() == 10).then_some(())
    });
    cluster.pause(stalled);
    // Longer than a blocking read's overall bound (its block, its response timeout and a
    // connect timeout: 8 s), so the reader's command times out.
    std::thread::sleep(Duration::from_secs(10));
    cluster.resume(stalled);
    for n in 0..10 {
        add(
            &mut conn,
            &stream,
            &[("id", &format!("after-{n}")), ("data", "{}")],
        );
    }
    eventually(Duration::from_secs(60), "events after the stall", || {
        (attempts_by_event(&entries(&mut conn, &records)).len() == 20).then_some(())
    });
    host.wait_for_log("was replaced by a new one", Duration::from_secs(5));
    let metrics = eddy_tests::http::curl(&[&format!("{}/metrics", host.api_url())]).body;
    assert!(
        metrics
            .contains(r#"eddy_redis_errors_total{operation="cluster_connection",kind="replaced"}"#),
        "{metrics}"
    );
    host.terminate(Duration::from_secs(30));
}

#[test]
fn keys_an_older_eddy_wrote_on_one_redis_move_to_their_tagged_names_once() {
    use redis::Commands as _;
    let redis = eddy_tests::redis_server::RedisServer::start();
    let mut conn = redis.conn();
    let _: () = conn.sadd("eddy:functions", "legacy").unwrap();
    let _: () = conn
        .hset_multiple(
            "eddy:function:legacy",
            &[("latest", "1"), ("current", "1"), ("v1", "{}")],
        )
        .unwrap();
    let _: () = conn.set("eddy:records:bytes", 42).unwrap();
    let _: () = conn.rpush("eddy:failures", "a failure").unwrap();
    // A name the new layout already holds is never overwritten.
    let _: () = conn.rpush("eddy:records:sizes", "old").unwrap();
    let _: () = conn.rpush("eddy:{eddy:records}:sizes", "new").unwrap();

    let functions = tempfile::tempdir().unwrap();
    manifest(functions.path(), "idle", "echo", "");
    let mut host = Host::start(&redis.url(), functions.path(), &[]);
    host.wait_for_log("eddy host ready", Duration::from_secs(20));
    assert!(
        host.log().contains("renamed keys an older Eddy wrote"),
        "{}",
        host.log()
    );
    assert!(
        host.log().contains("stay beside their new names"),
        "the taken name is reported: {}",
        host.log()
    );
    let members: Vec<String> = conn.smembers("eddy:{eddy:deployments}:functions").unwrap();
    assert_eq!(members, ["legacy"]);
    let current: Option<String> = conn
        .hget("eddy:{eddy:deployments}:function:legacy", "current")
        .unwrap();
    assert_eq!(current.as_deref(), Some("1"));
    let bytes: Option<u64> = conn.get("eddy:{eddy:records}:bytes").unwrap();
    assert_eq!(bytes, Some(42));
    let failures: Vec<String> = conn.lrange("eddy:{eddy:records}:failures", 0, -1).unwrap();
    assert_eq!(failures, ["a failure"]);
    let sizes: Vec<String> = conn.lrange("eddy:{eddy:records}:sizes", 0, -1).unwrap();
    assert_eq!(sizes, ["new"], "an existing new key was overwritten");
    for gone in [
        "eddy:functions",
        "eddy:function:legacy",
        "eddy:records:bytes",
        "eddy:failures",
    ] {
        let exists: bool = conn.exists(gone).unwrap();
        assert!(!exists, "{gone} is still there");
    }
    // A legacy key of another type than Eddy wrote: the host refuses to start, naming it,
    // and moves nothing.
    let odd = eddy_tests::redis_server::RedisServer::start();
    let mut odd_conn = odd.conn();
    let _: () = odd_conn.set("eddy:functions", "not a set").unwrap();
    let refused = eddy_tests::run_within(
        std::process::Command::new(eddy_tests::eddy_bin())
            .args([
                "up",
                "--redis",
                &odd.url(),
                "--listen",
                "127.0.0.1:0",
                "--functions",
            ])
            .arg(functions.path()),
        Duration::from_secs(30),
    );
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("eddy:functions is a string, expected a set"),
        "{}",
        refused.stderr
    );
    let kept: String = odd_conn.get("eddy:functions").unwrap();
    assert_eq!(kept, "not a set");

    // A second host finds nothing left to move and changes nothing.
    let mut again = Host::start(&redis.url(), functions.path(), &[]);
    again.wait_for_log("eddy host ready", Duration::from_secs(20));
    assert!(!again.log().contains("renamed keys"), "{}", again.log());
    let members: Vec<String> = conn.smembers("eddy:{eddy:deployments}:functions").unwrap();
    assert_eq!(members, ["legacy"]);
}
