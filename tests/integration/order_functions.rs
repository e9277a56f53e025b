//! The order functions from `functions/` on valid and invalid `OrderPlaced` events.

use eddy_tests::{eddy, wasm};
use serde_json::{Value, json};

const ORDER: &str = r#"{"orderId":"o-1","userId":"u-1","email":"ada@example.com",
  "items":[{"sku":"book","quantity":2,"price":12.5},{"sku":"pen","quantity":1,"price":3}]}"#;

fn invoke(function: &str, data: &str, extra: &[&str]) -> (i32, Value) {
    let cache = tempfile::tempdir().unwrap();
    let path = wasm(function);
    let mut args = vec![
        "invoke",
        path.to_str().unwrap(),
        "--type",
        "OrderPlaced",
        "--data",
        data,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let run = eddy(&args, cache.path());
    (run.code, run.json())
}

fn body(out: &Value) -> Value {
    serde_json::from_str(out["result"]["body"].as_str().unwrap()).unwrap()
}

#[test]
fn order_confirmation_requests_the_email() {
    let (code, out) = invoke("order-confirmation", ORDER, &[]);
    assert_eq!(code, 0, "{out}");
    let published = out["published"].as_array().unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["stream"], "emails");
    assert_eq!(published[0]["type"], "EmailRequested");
    let email: Value = serde_json::from_str(published[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(email["to"], "ada@example.com");
    assert_eq!(email["orderId"], "o-1");
    assert_eq!(body(&out)["emailEvent"], published[0]["id"]);
}

#[test]
fn order_confirmation_publishes_to_the_configured_stream() {
    let (code, out) = invoke(
        "order-confirmation",
        ORDER,
        &["--config", "email_stream=mail-out"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["published"][0]["stream"], "mail-out");
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

#[test]
fn update_inventory_reserves_the_units() {
    let (code, out) = invoke("update-inventory", ORDER, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["published"][0]["stream"], "inventory");
    assert_eq!(out["published"][0]["type"], "InventoryReserved");
    let reserved: Value =
        serde_json::from_str(out["published"][0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        reserved,
        json!({"orderId": "o-1", "itemCount": 3, "skus": ["book", "pen"]})
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
