//! `eddy invoke` on the fixture components: every row of the outcome table, the limits, output
//! capture, publish, config and the compile cache.

use eddy_tests::{eddy, wasm};
use serde_json::Value;

fn invoke_json(fixture: &str, extra: &[&str]) -> (i32, Value) {
    let run = eddy_tests::invoke_json(&wasm(fixture), extra);
    (run.code, run.json())
}

#[test]
fn a_2xx_is_done_with_body_logs_stdout_and_config() {
    let (code, out) = invoke_json(
        "echo",
        &[
            "--data",
            r#"{"orderId":"o-1"}"#,
            "--type",
            "OrderPlaced",
            "--id",
            "evt-1",
            "--config",
            "greeting=hello",
            "--extension",
            "traceparent=00-abc-def-01",
            "--attempt",
            "3",
        ],
    );
    assert_eq!(code, 0);
    let result = &out["result"];
    assert_eq!(result["outcome"], "done");
    assert_eq!(result["status"], 200);
    let body: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], "evt-1");
    assert_eq!(body["type"], "OrderPlaced");
    assert_eq!(body["data"]["orderId"], "o-1");
    assert_eq!(body["greeting"], "hello");
    assert_eq!(body["attempt"], 3);
    assert_eq!(body["trigger"], "invoke");
    assert_eq!(body["extensions"]["traceparent"], "00-abc-def-01");
    assert_eq!(result["output"]["stdout"], "echo stdout evt-1\n");
    assert_eq!(result["output"]["logs"][0]["level"], "info");
    assert_eq!(result["output"]["logs"][0]["message"], "echo handled evt-1");
}

#[test]
fn a_missing_setting_reads_as_none() {
    let (code, out) = invoke_json("echo", &[]);
    assert_eq!(code, 0);
    let body: Value = serde_json::from_str(out["result"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["greeting"], Value::Null);
}

#[test]
fn a_4xx_is_rejected_with_exit_code_3() {
    let (code, out) = invoke_json("reject", &[]);
    assert_eq!(code, 3);
    assert_eq!(out["result"]["outcome"], "rejected");
    assert_eq!(out["result"]["status"], 400);
    assert_eq!(out["result"]["body"], r#"{"error":"rejected on purpose"}"#);
    assert_eq!(out["result"]["failure"], Value::Null);
}

#[test]
fn a_5xx_is_failed_with_exit_code_4_and_stderr_kept() {
    let (code, out) = invoke_json("fail", &[]);
    assert_eq!(code, 4);
    let result = &out["result"];
    assert_eq!(result["outcome"], "failed");
    assert_eq!(result["status"], 500);
    assert_eq!(result["failure"]["kind"], "status");
    assert_eq!(result["body"], r#"{"error":"failing on purpose"}"#);
    assert_eq!(result["output"]["stderr"], "fail fixture: about to fail\n");
}

#[test]
fn a_panic_is_a_failed_trap_carrying_the_panic_message() {
    let (code, out) = invoke_json("panic", &["--id", "evt-p"]);
    assert_eq!(code, 4);
    let failure = &out["result"]["failure"];
    assert_eq!(out["result"]["outcome"], "failed");
    assert_eq!(out["result"]["status"], Value::Null);
    assert_eq!(failure["kind"], "trap");
    assert!(
        failure["message"].as_str().unwrap().contains("unreachable"),
        "{failure}"
    );
    assert_eq!(
        failure["panic"],
        "fixture panicked on purpose for event evt-p"
    );
}

#[test]
fn an_infinite_loop_is_stopped_by_the_time_limit() {
    let (code, out) = invoke_json("spin", &["--timeout", "300ms"]);
    assert_eq!(code, 4);
    assert_eq!(out["result"]["failure"]["kind"], "timeout");
    assert_eq!(out["result"]["failure"]["limit_ms"], 300);
}

#[test]
fn growing_past_the_memory_limit_fails_naming_the_limit() {
    let (code, out) = invoke_json("grow-memory", &["--memory", "8MiB"]);
    assert_eq!(code, 4);
    let failure = &out["result"]["failure"];
    assert_eq!(failure["kind"], "memory_limit");
    assert_eq!(failure["limit_bytes"], 8 * 1024 * 1024);
    assert!(failure["requested_bytes"].as_u64().unwrap() > 8 * 1024 * 1024);
}

#[test]
fn captured_output_is_capped_and_the_rest_counted() {
    let (code, out) = invoke_json("huge-output", &["--output-limit", "4KiB"]);
    assert_eq!(code, 0, "a chatty function still succeeds");
    let output = &out["result"]["output"];
    let kept = output["stdout"].as_str().unwrap().len()
        + output["stderr"].as_str().unwrap().len()
        + output["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line["message"].as_str().unwrap().len())
            .sum::<usize>();
    assert_eq!(kept, 4096);
    // 8192 lines of 1024 bytes on stdout plus 8192 log lines of at least 1035 bytes.
    assert!(
        output["dropped_bytes"].as_u64().unwrap() > 16_000_000,
        "{output}"
    );
}

#[test]
fn published_events_are_recorded_in_order_with_their_cause() {
    let (code, out) = invoke_json(
        "publish-many",
        &[
            "--data",
            r#"{"count":5,"stream":"ticks"}"#,
            "--id",
            "cause-1",
        ],
    );
    assert_eq!(code, 0);
    let published = out["published"].as_array().unwrap();
    assert_eq!(published.len(), 5);
    for (n, event) in published.iter().enumerate() {
        assert_eq!(event["stream"], "ticks");
        assert_eq!(event["type"], "Tick");
        assert_eq!(event["data"], format!(r#"{{"n":{n}}}"#));
        assert_eq!(event["causedBy"], "cause-1");
    }
}

#[test]
fn human_output_shows_the_outcome_and_published_events() {
    let cache = tempfile::tempdir().unwrap();
    let path = wasm("publish-many");
    let run = eddy(
        &["invoke", path.to_str().unwrap(), "--data", r#"{"count":2}"#],
        cache.path(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("status:    200 (done) in "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("published: 2\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Tick -> fanout  {\"n\":1}"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_second_run_loads_the_compiled_component_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let path = wasm("echo");
    let args = [
        "invoke",
        path.to_str().unwrap(),
        "--log-level",
        "eddy=debug",
    ];
    let first = eddy(&args, cache.path());
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stderr.contains("cached=false"), "{}", first.stderr);
    let second = eddy(&args, cache.path());
    assert_eq!(second.code, 0, "{second:?}");
    assert!(second.stderr.contains("cached=true"), "{}", second.stderr);
    let entries = walk(&cache.path().join("eddy/components"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].ends_with(".cwasm"));
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}
