//! The order functions from `functions/` on valid and invalid `OrderPlaced` events, run with
//! `eddy invoke`: order-confirmation against the example's stand-in users and mail APIs (real
//! HTTP servers), update-inventory against an in-memory stock bucket.

use std::process::Command;

use eddy_tests::fakes::FakeApis;
use eddy_tests::{eddy_bin, invoke_json, run, wasm};
use serde_json::{Value, json};

const ORDER: &str = r#"{"orderId":"o-1","userId":"u-1","email":"ada@example.com",
  "items":[{"sku":"book","quantity":2,"price":12.5},{"sku":"pen","quantity":1,"price":3}]}"#;

const MAIL_KEY: &str = "mail-key-for-tests";

fn invoke(function: &str, data: &str, extra: &[&str]) -> (i32, Value) {
    let run = invoke_json(
        &wasm(function),
        &[&["--type", "OrderPlaced", "--data", data], extra].concat(),
    );
    (run.code, run.json())
}

/// order-confirmation invoked on `data` against `apis`, with `extra` flags.
fn confirm(apis: &FakeApis, data: &str, extra: &[&str]) -> (i32, Value) {
    let cache = tempfile::tempdir().unwrap();
    let url = apis.url();
    let out = run(Command::new(eddy_bin())
        .arg("invoke")
        .arg(wasm("order-confirmation"))
        .args(["--type", "OrderPlaced", "--data", data, "--output", "json"])
        .args(["--allow-http", url])
        .args(["--config", &format!("users_api={url}")])
        .args(["--config", &format!("mail_api={url}")])
        .args(["--config", "mail_domain=shop.example"])
        .args(["--secret", "mail_key=env:EDDY_TEST_MAIL_KEY"])
        .args(extra)
        .env("EDDY_TEST_MAIL_KEY", MAIL_KEY)
        .env("XDG_CACHE_HOME", cache.path()));
    (out.code, out.json())
}

fn body(out: &Value) -> Value {
    serde_json::from_str(out["result"]["body"].as_str().unwrap()).unwrap()
}

#[test]
fn order_confirmation_fetches_the_user_and_sends_the_email() {
    let apis = FakeApis::start(MAIL_KEY, 0);
    let (code, out) = confirm(&apis, ORDER, &[]);
    assert_eq!(code, 0, "{out}");
    let (messages, _) = apis.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        messages[0]["to"], "ada@example.com",
        "the users API's address"
    );
    assert_eq!(messages[0]["domain"], "shop.example");
    assert_eq!(messages[0]["subject"], "Your order o-1 is confirmed");
    let published = out["published"].as_array().unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["stream"], "emails");
    assert_eq!(published[0]["type"], "EmailSent");
    assert_eq!(body(&out)["messageId"], messages[0]["id"]);
    assert_eq!(
        out["result"]["outbound"]["calls"], 2,
        "the user, then the mail"
    );
}

#[test]
fn order_confirmation_rejects_an_unknown_user_and_retries_a_failing_mail_api() {
    let apis = FakeApis::start(MAIL_KEY, 1);
    let unknown = ORDER.replace("u-1", "u-nobody");
    let (code, out) = confirm(&apis, &unknown, &[]);
    assert_eq!(code, 3, "a 404 user is a bad event: {out}");
    assert_eq!(out["result"]["status"], 400);
    // The mail API answers 503 once: a failure (retried by a host), nothing published.
    let (code, out) = confirm(&apis, ORDER, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out["result"]["body"]
            .as_str()
            .unwrap()
            .contains("mail API answered 503"),
        "{out}"
    );
    assert_eq!(out["published"], json!([]));
    // The wrong key is refused by the mail API: a failure too.
    let out = run(Command::new(eddy_bin())
        .arg("invoke")
        .arg(wasm("order-confirmation"))
        .args(["--data", ORDER, "--output", "json"])
        .args(["--allow-http", apis.url()])
        .args(["--config", &format!("users_api={}", apis.url())])
        .args(["--config", &format!("mail_api={}", apis.url())])
        .args(["--config", "mail_domain=shop.example"])
        .args(["--secret", "mail_key=env:EDDY_TEST_MAIL_KEY"])
        .env("EDDY_TEST_MAIL_KEY", "a-wrong-key-123"));
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stdout.contains("mail API answered 401"),
        "{}",
        out.stdout
    );
}

#[test]
fn order_confirmation_rejects_an_order_without_a_user() {
    for data in [r#"{"orderId":"o-1"}"#, r#"{"userId":"u-1"}"#, "[1,2]"] {
        let (code, out) = invoke("order-confirmation", data, &[]);
        assert_eq!(code, 3, "{data}: {out}");
        assert_eq!(out["result"]["status"], 400);
        assert_eq!(
            out["result"]["body"],
            r#"{"error":"Invalid event payload"}"#
        );
        assert_eq!(out["published"], json!([]));
    }
}

/// update-inventory on `data` with the shared `inventory` bucket seeded with `stock`.
fn reserve(data: &str, stock: &[&str]) -> (i32, Value) {
    let mut extra = vec!["--kv-bucket", "inventory", "--shared-bucket", "inventory"];
    for pair in stock {
        extra.extend_from_slice(&["--kv", pair]);
    }
    invoke("update-inventory", data, &extra)
}

#[test]
fn update_inventory_takes_the_units_from_the_stock() {
    let (code, out) = reserve(ORDER, &["book=5", "pen=1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["published"][0]["stream"], "inventory");
    assert_eq!(out["published"][0]["type"], "InventoryReserved");
    let reserved: Value =
        serde_json::from_str(out["published"][0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        reserved,
        json!({"orderId": "o-1", "itemCount": 3, "skus": ["book", "pen"]})
    );
    assert_eq!(
        out["keyvalue"]["shared:inventory"],
        json!({"book": "3", "pen": "0"})
    );
}

#[test]
fn update_inventory_never_goes_below_zero() {
    // Two books in stock, one pen short: nothing is taken, OutOfStock says which and how many.
    let (code, out) = reserve(ORDER, &["book=2"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["published"][0]["type"], "OutOfStock");
    let short: Value = serde_json::from_str(out["published"][0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        short,
        json!({"orderId": "o-1", "sku": "pen", "requested": 1, "available": 0})
    );
    assert_eq!(
        out["keyvalue"]["shared:inventory"],
        json!({"book": "2"}),
        "the books were put back"
    );
}

#[test]
fn update_inventory_rejects_an_order_without_items() {
    for data in [
        r#"{"orderId":"o-1"}"#,
        r#"{"orderId":"o-1","items":[]}"#,
        r#"{"items":[{"sku":"a"}]}"#,
    ] {
        let (code, out) = invoke("update-inventory", data, &[]);
        assert_eq!(code, 3, "{data}: {out}");
        assert_eq!(out["result"]["status"], 400);
        assert_eq!(out["published"], json!([]));
    }
}

#[test]
fn record_analytics_sums_revenue_in_the_configured_currency() {
    let (code, out) = invoke("record-analytics", ORDER, &["--config", "currency=EUR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        body(&out),
        json!({"event": "OrderPlaced", "orderId": "o-1", "units": 3, "revenue": 28.0, "currency": "EUR"})
    );
}

#[test]
fn record_analytics_rejects_an_event_without_an_order() {
    let (code, out) = invoke("record-analytics", r#"{"items":[]}"#, &[]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(
        out["result"]["body"],
        r#"{"error":"Invalid event payload"}"#
    );
}

/// The example's manifests (`examples/order-placed/functions`), pointed at `apis` and at the
/// test's build of the functions, with short retry delays.
fn example_manifests(dir: &std::path::Path, apis: &FakeApis) {
    let from = eddy_tests::repo_dir().join("examples/order-placed/functions");
    let functions = eddy_tests::functions_dir().display().to_string();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("http://127.0.0.1:8081", apis.url())
            .replace(
                "${EDDY_FUNCTIONS_DIR:-../../../functions/target/wasm32-wasip2/release}",
                &functions,
            )
            .replace("initial = \"500ms\"", "initial = \"100ms\"");
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
}

#[test]
fn the_order_placed_flow_runs_end_to_end_against_the_apis() {
    use eddy_tests::host::Host;
    use eddy_tests::redis_server::RedisServer;
    use eddy_tests::streams::{add, entries, eventually};
    use std::time::Duration;

    // The mail API is having a bad minute: two 503s, then it works.
    let apis = FakeApis::start(MAIL_KEY, 2);
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let dir = tempfile::tempdir().unwrap();
    example_manifests(dir.path(), &apis);
    for (sku, units) in [("book-1", "5"), ("pen-7", "1")] {
        let set = eddy_tests::eddy_redis(&["kv", "set", "inventory", sku, units], &redis.url());
        assert_eq!(set.code, 0, "{set:?}");
    }
    let _host = Host::start_with_env(&redis.url(), dir.path(), &[], &[("MAIL_KEY", MAIL_KEY)]);
    let order = std::fs::read_to_string(
        eddy_tests::repo_dir().join("examples/order-placed/events/order-placed.json"),
    )
    .unwrap();
    add(
        &mut conn,
        "orders",
        &[("type", "OrderPlaced"), ("data", &order)],
    );
    let sent = eventually(Duration::from_secs(30), "the confirmation sent", || {
        entries(&mut conn, "emails").into_iter().next()
    });
    assert_eq!(sent.get("type"), "EmailSent");
    let (messages, attempts) = apis.messages();
    assert_eq!(messages.len(), 1, "sent once: {messages:?}");
    assert_eq!(attempts, 3, "after two failed attempts");
    assert_eq!(
        messages[0]["to"], "alan@example.com",
        "u-42, from the users API"
    );
    let reserved = eventually(Duration::from_secs(10), "the stock reserved", || {
        entries(&mut conn, "inventory").into_iter().next()
    });
    assert_eq!(reserved.get("type"), "InventoryReserved");
    let left = |sku: &str| {
        eddy_tests::eddy_redis(&["kv", "get", "inventory", sku], &redis.url())
            .stdout
            .trim()
            .to_owned()
    };
    assert_eq!(
        (left("book-1"), left("pen-7")),
        ("3".to_owned(), "0".to_owned())
    );
}
