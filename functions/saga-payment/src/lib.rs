//! `saga-payment`, the order saga's payment step (`examples/order-saga`).
//!
//! - `OrderPlaced` (stream `orders`): charges the order once (`once("charge:<order>")`) through
//!   the payments API (`POST {payments_api}/v1/charges`, a bearer key from the secret
//!   `payments_key`), remembers the charge in its own key-value bucket `charges`, and publishes
//!   `PaymentProcessed` (carrying the items, for the inventory step), or `PaymentFailed` when
//!   the API declines the card (402). A payments API that fails (5xx) or does not answer in time
//!   fails the invocation: it is retried, and `once` keeps it to one charge.
//! - `OrderCancelled` (compensation, after `OutOfStock`): refunds the remembered charge once
//!   (`POST {payments_api}/v1/refunds`) and publishes `PaymentRefunded`.
//!
//! An order without `orderId`, items or a positive total is rejected (400): retrying cannot fix
//! it. Settings: `payments_api` (which the manifest's `[outbound] http` must allow),
//! `payments_stream` (default `payments`).

use std::time::Duration;

use eddy_sdk::kv::Bucket;
use eddy_sdk::{Error, Event, Response, config, http, log, once, publish, secret};
use serde::Deserialize;
use serde_json::{Value, json};

/// How long a charge or refund is remembered, so a late duplicate is still skipped.
const REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long one call to the payments API may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    order_id: String,
    #[serde(default)]
    items: Vec<Value>,
    #[serde(default)]
    total: f64,
}

fn handle(event: Event) -> Result<Response, Error> {
    let Ok(order) = event.json::<Order>() else {
        return Ok(Response::bad_request("an order needs orderId"));
    };
    let stream = config("payments_stream").unwrap_or_else(|| "payments".to_owned());
    match event.event_type() {
        "OrderPlaced" => charge(&order, &stream),
        "OrderCancelled" => refund(&order, &stream),
        other => Ok(Response::bad_request(&format!(
            "payment does not handle {other}"
        ))),
    }
}

/// A call to the payments API: its status and JSON answer.
fn call(path: &str, body: &Value) -> Result<(u16, Value), Error> {
    let api = config("payments_api")
        .ok_or_else(|| Error::new("setting `payments_api` is missing from the manifest"))?;
    let key =
        secret("payments_key").ok_or_else(|| Error::new("secret `payments_key` is not set"))?;
    let response = http::Request::post(&format!("{api}{path}"))
        .header("authorization", &format!("Bearer {key}"))
        .timeout(CALL_TIMEOUT)
        .json(body)?
        .send()?;
    if response.status >= 500 {
        return Err(Error::new(format!(
            "payments API answered {}",
            response.status
        )));
    }
    Ok((response.status, response.json().unwrap_or(Value::Null)))
}

fn charge(order: &Order, stream: &str) -> Result<Response, Error> {
    if order.items.is_empty() || order.total <= 0.0 || !order.total.is_finite() {
        return Ok(Response::bad_request(&format!(
            "order {}: expected items and a positive total",
            order.order_id
        )));
    }
    if !once(&format!("charge:{}", order.order_id), REMEMBER)? {
        log::info(format!("order {} was already charged", order.order_id));
        return Ok(Response::ok());
    }
    let (status, answer) = call(
        "/v1/charges",
        &json!({ "orderId": order.order_id, "amount": order.total }),
    )?;
    if status == 402 {
        publish(
            stream,
            "PaymentFailed",
            &json!({
                "orderId": order.order_id,
                "reason": answer["reason"].as_str().unwrap_or("card declined"),
            }),
        )?;
        log::warn(format!("payment for {} declined", order.order_id));
        return Ok(Response::ok());
    }
    let Some(charge) = answer["id"].as_str().filter(|_| status == 200) else {
        return Err(Error::new(format!(
            "payments API answered {status} without a charge id"
        )));
    };
    Bucket::open("charges")?.set(&order.order_id, charge.as_bytes())?;
    publish(
        stream,
        "PaymentProcessed",
        &json!({
            "orderId": order.order_id,
            "amount": order.total,
            "items": order.items,
            "paymentId": charge,
        }),
    )?;
    log::info(format!(
        "charged {:.2} for {} as {charge}",
        order.total, order.order_id
    ));
    Ok(Response::ok())
}

fn refund(order: &Order, stream: &str) -> Result<Response, Error> {
    if !once(&format!("refund:{}", order.order_id), REMEMBER)? {
        return Ok(Response::ok());
    }
    let charges = Bucket::open("charges")?;
    let Some(charge) = charges.get(&order.order_id)? else {
        log::info(format!(
            "order {} was never charged: nothing to refund",
            order.order_id
        ));
        return Ok(Response::ok());
    };
    let charge = String::from_utf8_lossy(&charge).into_owned();
    let (status, _) = call("/v1/refunds", &json!({ "charge": charge }))?;
    if status != 200 {
        return Err(Error::new(format!(
            "payments API refused the refund: {status}"
        )));
    }
    publish(
        stream,
        "PaymentRefunded",
        &json!({ "orderId": order.order_id, "paymentId": charge }),
    )?;
    log::info(format!("refunded {} ({charge})", order.order_id));
    Ok(Response::ok())
}

eddy_sdk::export!(handle);
