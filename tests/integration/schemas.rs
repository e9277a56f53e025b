//! Event schemas end to end: versions put with the CLI are checked for compatibility (a
//! breaking one is refused with what breaks), ingress refuses invalid data with 400 naming the
//! path and the rule and stores nothing, a trigger with `validate = true` dead-letters an
//! invalid entry written by a raw Redis client without running the function, and a function's
//! publish of invalid data fails that invocation.

use std::time::Duration;

use eddy_tests::eddy_redis;
use eddy_tests::host::Host;
use eddy_tests::http::curl;
use eddy_tests::redis_server::RedisServer;
use eddy_tests::streams::{
    dead_letters_with_outbox, entries, eventually, group_exists, record_function, unique,
};
use redis::Commands as _;

const WAIT: Duration = Duration::from_secs(30);

fn put(
    redis: &RedisServer,
    dir: &std::path::Path,
    event_type: &str,
    schema: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let file = dir.join(format!("{}.json", unique("schema")));
    std::fs::write(&file, schema).unwrap();
    let mut args = vec!["schemas", "put", event_type, file.to_str().unwrap()];
    args.extend_from_slice(extra);
    eddy_redis(&args, &redis.url()).into_parts()
}

const V1: &str = r#"{"type":"object","required":["orderId"],"properties":{"orderId":{"type":"string"},"total":{"type":"number"}}}"#;

#[test]
fn versions_are_checked_for_compatibility_and_ingress_refuses_invalid_data() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();

    let (code, out, err) = put(&redis, dir.path(), "OrderPlaced", V1, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("OrderPlaced schema version 1 (backward"),
        "{out}"
    );
    // The same document again changes nothing.
    let (_, out, _) = put(&redis, dir.path(), "OrderPlaced", V1, &[]);
    assert!(out.contains("version 1"), "{out}");
    // An optional field: compatible.
    let v2 = V1.replace(
        r#""total":{"type":"number"}"#,
        r#""total":{"type":"number"},"note":{"type":"string"}"#,
    );
    let (code, out, err) = put(&redis, dir.path(), "OrderPlaced", &v2, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");
    // A new required field and a narrowed type: refused, each named by path.
    let v3 = v2
        .replace(
            r#""required":["orderId"]"#,
            r#""required":["orderId","userId"]"#,
        )
        .replace(
            r#""total":{"type":"number"}"#,
            r#""total":{"type":"integer"}"#,
        );
    let (code, _, err) = put(&redis, dir.path(), "OrderPlaced", &v3, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not backward compatible with version 2"),
        "{err}"
    );
    assert!(err.contains("/: new required field \"userId\""), "{err}");
    assert!(
        err.contains("/total: type narrowed from number to integer"),
        "{err}"
    );
    let (_, out, _) = eddy_redis(&["schemas", "ls"], &redis.url()).into_parts();
    assert!(
        out.contains("OrderPlaced") && out.contains(" 2 "),
        "still version 2: {out}"
    );
    // A schema that is not one: refused with why.
    let (code, _, err) = put(&redis, dir.path(), "Bad", r#"{"type":"nope"}"#, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("not a valid JSON Schema"), "{err}");
    let (code, _, err) = put(&redis, dir.path(), "Bad", "{not json", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("not JSON"), "{err}");

    // Ingress: a host's API checks data against the latest version.
    let stream = unique("orders");
    let dir_fns = tempfile::tempdir().unwrap();
    // A host runs at least one function: one on another stream.
    record_function(
        dir_fns.path(),
        "idle",
        &unique("idle"),
        &unique("records"),
        "",
        "",
    );
    let mut host = Host::start(&redis.url(), dir_fns.path(), &[]);
    let url = format!("{}/v1/streams/{stream}/events", host.api_url());
    let post = |data: &str| {
        let body = format!(
            r#"{{"specversion":"1.0","id":"{}","source":"test","type":"OrderPlaced","data":{data}}}"#,
            unique("ev")
        );
        curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/cloudevents+json",
            "--data-binary",
            &body,
            &url,
        ])
    };
    let refused = post(r#"{"orderId":5}"#);
    assert_eq!(refused.status, 400, "{}", refused.body);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "invalid");
    assert_eq!(error["details"]["path"], "/orderId");
    assert_eq!(error["details"]["failures"][0]["rule"], "type");
    assert!(
        error["message"].as_str().unwrap().contains("version 2"),
        "{error}"
    );
    let missing = post(r#"{"total":1}"#);
    assert_eq!(
        missing.json()["error"]["details"]["failures"][0]["rule"],
        "required"
    );
    assert_eq!(
        conn.xlen::<_, u64>(&stream).unwrap_or(0),
        0,
        "nothing was stored"
    );
    assert_eq!(post(r#"{"orderId":"o-1"}"#).status, 202);
    // Another content type does not slip data past the schema.
    let binary = curl(&[
        "-X",
        "POST",
        "-H",
        "ce-specversion: 1.0",
        "-H",
        "ce-id: b-1",
        "-H",
        "ce-source: t",
        "-H",
        "ce-type: OrderPlaced",
        "-H",
        "content-type: text/plain",
        "--data-binary",
        r#"{"orderId":5}"#,
        &url,
    ]);
    assert_eq!(binary.status, 400, "{}", binary.body);
    assert_eq!(
        binary.json()["error"]["details"]["failures"][0]["rule"],
        "datacontenttype"
    );
    // `eddy publish` goes through the same door.
    let (code, _, err) = eddy_tests::eddy_host(
        &[
            "publish",
            &stream,
            "--type",
            "OrderPlaced",
            "--data",
            r#"{"orderId":[]}"#,
        ],
        &host.api_url(),
    )
    .into_parts();
    assert_ne!(code, 0);
    assert!(err.contains("/orderId"), "{err}");
    assert_eq!(conn.xlen::<_, u64>(&stream).unwrap(), 1);

    // Removed: no longer checked (within the host's one-second poll).
    let (code, _, err) = eddy_redis(&["schemas", "rm", "OrderPlaced"], &redis.url()).into_parts();
    assert_eq!(code, 0, "{err}");
    eventually(WAIT, "the removal to reach the host", || {
        (post(r#"{"orderId":5}"#).status == 202).then_some(())
    });
}

#[test]
fn a_validating_trigger_dead_letters_invalid_entries_unrun_and_invalid_publishes_fail() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = put(&redis, dir.path(), "OrderPlaced", V1, &[]);
    assert_eq!(code, 0, "{err}");
    // The record fixture publishes `Attempt` records: a schema they do not meet makes the
    // second function's publish fail.
    let (code, _, err) = put(
        &redis,
        dir.path(),
        "Attempt",
        r#"{"type":"object","required":["approvedBy"]}"#,
        &[],
    );
    assert_eq!(code, 0, "{err}");

    let fns = tempfile::tempdir().unwrap();
    let (stream, records) = (unique("orders"), unique("records"));
    record_function(
        fns.path(),
        "checked",
        &stream,
        &records,
        "",
        "types = [\"OrderPlaced\"]\nvalidate = true\n[triggers.stream.retry]\nmax_attempts = 1",
    );
    let (other, other_records) = (unique("other"), unique("records"));
    record_function(
        fns.path(),
        "publisher",
        &other,
        &other_records,
        "",
        "[triggers.stream.retry]\nmax_attempts = 1",
    );
    let _host = Host::start(&redis.url(), fns.path(), &[]);
    eventually(WAIT, "the groups", || {
        (group_exists(&mut conn, &stream, "checked")
            && group_exists(&mut conn, &other, "publisher"))
        .then_some(())
    });
    // Written past ingress, as any Redis client can.
    let _: String = conn
        .xadd(
            &stream,
            "*",
            &[
                ("type", "OrderPlaced"),
                ("id", "bad-1"),
                ("data", r#"{"orderId":7}"#),
            ],
        )
        .unwrap();
    let letters = eventually(WAIT, "the invalid entry's dead letter", || {
        let found = dead_letters_with_outbox(&mut conn, &stream);
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(letters[0].get("eddy.reason"), "invalid");
    let error = letters[0].get("eddy.error");
    assert!(error.contains("at /orderId, rule `type`"), "{error}");
    assert_eq!(letters[0].get("eddy.attempts"), "0", "never run");
    assert!(
        entries(&mut conn, &records).is_empty(),
        "the function did not run"
    );

    // The function's own publish of data its type's schema refuses fails the invocation.
    let _: String = conn
        .xadd(&other, "*", &[("type", "Anything"), ("data", "{}")])
        .unwrap();
    let letters = eventually(WAIT, "the failed invocation's dead letter", || {
        let found = dead_letters_with_outbox(&mut conn, &other);
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(letters[0].get("eddy.reason"), "failed");
    let error = letters[0].get("eddy.error");
    assert!(
        error.contains("does not match the schema of")
            && error.contains("Attempt")
            && error.contains("approvedBy"),
        "{error}"
    );
    assert!(
        entries(&mut conn, &other_records).is_empty(),
        "nothing invalid was published"
    );
}

#[test]
fn a_host_that_cannot_read_the_schemas_lets_nothing_through_unchecked() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    // A careless hand replaced the schema index with a string.
    let _: () = conn.set("eddy:{eddy:schemas}:index", "oops").unwrap();
    let fns = tempfile::tempdir().unwrap();
    record_function(
        fns.path(),
        "idle",
        &unique("idle"),
        &unique("records"),
        "",
        "",
    );
    let mut host = Host::start(&redis.url(), fns.path(), &[]);
    let stream = unique("orders");
    let url = format!(
        "{}/v1/streams/{stream}/events?type=OrderPlaced",
        host.api_url()
    );
    let post = || {
        curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            "{}",
            &url,
        ])
    };
    let refused = post();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("not loaded the event schemas"),
        "{}",
        refused.body
    );
    let _: () = conn.del("eddy:{eddy:schemas}:index").unwrap();
    eventually(
        WAIT,
        "the schemas to load once the index is readable",
        || (post().status == 202).then_some(()),
    );
}
