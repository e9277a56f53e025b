//! Metrics after known traffic: the Prometheus exposition at `/metrics` is parsed and its values
//! checked against what was sent.

use std::collections::HashMap;
use std::time::Duration;

use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, pending, record_function, unique};

/// The samples of a Prometheus text exposition: `name{labels}` → value.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(url: &str) -> HashMap<String, f64> {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{url}/metrics")])
        .output()
        .unwrap();
    assert!(out.status.success(), "GET /metrics failed");
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn metrics_count_known_traffic() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    for (name, status) in [("good", "200"), ("picky", "422")] {
        record_function(
            dir.path(),
            name,
            &stream,
            &records,
            &format!("status = \"{status}\""),
            "",
        );
    }
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    let url = host.api_url();
    eventually(Duration::from_secs(10), "both groups", || {
        let m = scrape(&url);
        let key = |g: &str| format!("eddy_consumer_lag{{stream=\"{stream}\",group=\"{g}\"}}");
        (m.contains_key(&key("good")) && m.contains_key(&key("picky"))).then_some(())
    });
    for n in 0..3 {
        add(&mut conn, &stream, &[("data", &format!("{{\"n\":{n}}}"))]);
    }
    eventually(Duration::from_secs(20), "every event settled", || {
        (entries(&mut conn, &format!("{stream}.dlq")).len() == 3
            && pending(&mut conn, &stream, "good") == 0
            && pending(&mut conn, &stream, "picky") == 0)
            .then_some(())
    });
    let m = eventually(Duration::from_secs(10), "the counters", || {
        let m = scrape(&url);
        (m.get("eddy_events_total{function=\"good\",outcome=\"ok\"}") == Some(&3.0)).then_some(m)
    });
    let get = |key: &str| {
        m.get(key)
            .copied()
            .unwrap_or_else(|| panic!("no sample {key}"))
    };
    assert_eq!(
        get("eddy_events_total{function=\"picky\",outcome=\"rejected\"}"),
        3.0
    );
    assert_eq!(
        get("eddy_events_total{function=\"picky\",outcome=\"dead_lettered\"}"),
        3.0
    );
    // A trigger's series exist from its start (at 0), so dashboards and rate() see them
    // before the first failure.
    assert_eq!(
        get("eddy_events_total{function=\"good\",outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(
        get("eddy_invocation_duration_seconds_count{function=\"good\"}"),
        3.0
    );
    assert_eq!(
        get("eddy_instantiation_duration_seconds_count{function=\"good\"}"),
        3.0
    );
    assert!(
        get("eddy_instantiation_duration_seconds_sum{function=\"good\"}")
            <= get("eddy_invocation_duration_seconds_sum{function=\"good\"}"),
        "instantiation is part of the invocation"
    );
    assert_eq!(get("eddy_invocations_in_flight{function=\"good\"}"), 0.0);
    assert_eq!(
        get(&format!(
            "eddy_consumer_lag{{stream=\"{stream}\",group=\"good\"}}"
        )),
        0.0
    );
    assert_eq!(
        get(&format!(
            "eddy_consumer_pending{{stream=\"{stream}\",group=\"picky\"}}"
        )),
        0.0
    );
    assert_eq!(
        get(&format!("eddy_dead_letters{{stream=\"{stream}.dlq\"}}")),
        3.0
    );
}

/// Before any event: the build's info and each loaded function's series are there at 0, so
/// dashboards and alerts work from the start; and every metric the Grafana dashboard in
/// `deploy/grafana` queries is one a host serves.
#[test]
fn series_exist_at_zero_and_the_dashboard_queries_only_real_metrics() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    record_function(dir.path(), "quiet", &stream, &records, "", "");
    let mut host = Host::start(&redis.url(), dir.path(), &[]);
    let url = host.api_url();
    let text = eventually(Duration::from_secs(10), "the group's gauges", || {
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("{url}/metrics")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("eddy_consumer_lag{").then_some(text)
    });
    let samples = parse(&text);
    let build = samples
        .iter()
        .find(|(k, _)| k.starts_with("eddy_build_info{"))
        .unwrap_or_else(|| panic!("no eddy_build_info in\n{text}"));
    assert_eq!(*build.1, 1.0);
    assert!(build.0.contains("contract=\""), "{}", build.0);
    for outcome in ["ok", "rejected", "failed", "retried", "dead_lettered"] {
        let key = format!("eddy_events_total{{function=\"quiet\",outcome=\"{outcome}\"}}");
        assert_eq!(samples.get(&key), Some(&0.0), "{key} in\n{text}");
    }
    assert!(
        samples.contains_key("eddy_invocation_duration_seconds_count{function=\"quiet\"}"),
        "{text}"
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(eddy_tests::repo_dir().join("deploy/grafana/eddy-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("eddy_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 8, "{queried:?}");
    let served: std::collections::BTreeSet<&str> = samples
        .keys()
        .map(|k| k.split(['{', ' ']).next().unwrap())
        .collect();
    let missing: Vec<_> = queried
        .iter()
        .filter(|name| !served.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which a host does not serve:\n{text}"
    );
}
