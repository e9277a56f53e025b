//! Tracing end to end: a three-function chain exported over OTLP/HTTP to a collector shares
//! one trace, each span the parent of the next, with the ids the published events carry; and
//! `--log-format json` logs carry the invocation span's fields.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_tests::collector::Collector;
use eddy_tests::host::Host;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{add, entries, eventually, group_exists, record_function, unique};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// An OTLP JSON span's attribute `key`, as text.
fn attribute(span: &Value, key: &str) -> String {
    let value = span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
        .unwrap_or_else(|| panic!("span has no attribute {key}: {span}"));
    match (&value["stringValue"], &value["intValue"]) {
        (Value::String(s), _) => s.clone(),
        (_, Value::String(i)) => i.clone(),
        (_, Value::Number(i)) => i.to_string(),
        _ => panic!("attribute {key} is neither text nor integer: {value}"),
    }
}

#[test]
fn a_chain_of_three_functions_is_one_exported_trace() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let orders = unique("orders");
    let hops: Vec<String> = (0..3).map(|i| unique(&format!("hop{i}"))).collect();
    let sources = [orders.clone(), hops[0].clone(), hops[1].clone()];
    let names = ["payment", "inventory", "shipping"];
    for (i, name) in names.iter().enumerate() {
        record_function(dir.path(), name, &sources[i], &hops[i], "", "");
    }
    let collector = Collector::start();
    let mut host = Host::start(
        &redis.url(),
        dir.path(),
        &[
            "--otlp-endpoint",
            &collector.url(),
            "--otlp-protocol",
            "http/json",
            "--log-format",
            "json",
            "--log-level",
            "info,eddy=debug",
        ],
    );
    eventually(WAIT, "the groups", || {
        group_exists(&mut conn, &orders, "payment").then_some(())
    });
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let origin_span = "b7ad6b7169203331";
    add(
        &mut conn,
        &orders,
        &[
            ("id", "order-42"),
            ("type", "OrderPlaced"),
            ("traceparent", &format!("00-{trace}-{origin_span}-01")),
            ("data", "{}"),
        ],
    );
    eventually(WAIT, "the end of the chain", || {
        entries(&mut conn, &hops[2]).into_iter().next()
    });
    // Stopping flushes the spans still queued.
    assert!(host.terminate(WAIT).success(), "{}", host.log());

    let spans = collector.spans();
    let by_function: BTreeMap<String, &Value> = spans
        .iter()
        .map(|s| (attribute(s, "eddy.function"), s))
        .collect();
    assert_eq!(by_function.len(), 3, "one span per invocation: {spans:#?}");
    let mut parent = origin_span.to_owned();
    for (i, name) in names.iter().enumerate() {
        let span = by_function[*name];
        assert_eq!(span["traceId"], trace, "{name}: {span}");
        assert_eq!(span["parentSpanId"], parent.as_str(), "{name}: {span}");
        assert_eq!(span["name"], format!("process {name}"));
        assert_eq!(attribute(span, "eddy.outcome"), "done");
        assert_eq!(attribute(span, "eddy.attempt"), "1");
        assert_eq!(attribute(span, "messaging.destination.name"), sources[i]);
        let start: u128 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u128 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start <= end, "{span}");
        // The event this function published names its span as the parent.
        let published = entries(&mut conn, &hops[i]).remove(0);
        let traceparent = published.get("traceparent");
        assert_eq!(
            traceparent,
            format!("00-{trace}-{}-01", span["spanId"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(published.get("correlationid"), "order-42");
        parent = span["spanId"].as_str().unwrap().to_owned();
    }

    // The JSON logs of the invocation carry the span's fields.
    let log = host.log();
    let invoked: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "invoked" && l["span"]["name"] == "invocation")
        .collect();
    assert_eq!(invoked.len(), 3, "{log}");
    for line in &invoked {
        let span = &line["span"];
        assert!(
            names.contains(&span["function"].as_str().unwrap()),
            "{line}"
        );
        assert_eq!(span["trace_id"], trace, "{line}");
        assert_eq!(span["outcome"], "done", "{line}");
        assert!(
            span["entry_id"].as_str().is_some_and(|e| e.contains('-')),
            "{line}"
        );
    }
}
