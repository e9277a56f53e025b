//! `saga-payment`, the order saga's payment step (`examples/order-saga`).
//!
//! - `OrderPlaced` (stream `orders`): charges the order once (`once("charge:<order>")`) and
//!   publishes `PaymentProcessed` (carrying the items, for the inventory step), or
//!   `PaymentFailed` when the card is declined: here, when the total is over the setting
//!   `decline_over` (default 500), standing in for a payment provider's answer.
//! - `OrderCancelled` (compensation, after `OutOfStock`): refunds once and publishes
//!   `PaymentRefunded`.
//!
//! An order without `orderId`, items or a positive total is rejected (400): retrying cannot fix
//! it. Settings: `decline_over`, `payments_stream` (default `payments`).

use std::time::Duration;

use eddy_sdk::{Error, Event, Response, config, log, once, publish};
use serde::Deserialize;
use serde_json::{Value, json};

/// How long a charge or refund is remembered, so a late duplicate is still skipped.
const REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);

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
    let limit: f64 = config("decline_over")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500.0);
    if order.total > limit {
        publish(
            stream,
            "PaymentFailed",
            &json!({
                "orderId": order.order_id,
                "reason": format!("card declined: {:.2} is over the limit of {limit:.2}", order.total),
            }),
        )?;
        log::warn(format!("payment for {} declined", order.order_id));
        return Ok(Response::ok());
    }
    publish(
        stream,
        "PaymentProcessed",
        &json!({
            "orderId": order.order_id,
            "amount": order.total,
            "items": order.items,
            "paymentId": format!("pay-{}", order.order_id),
        }),
    )?;
    log::info(format!("charged {:.2} for {}", order.total, order.order_id));
    Ok(Response::ok())
}

fn refund(order: &Order, stream: &str) -> Result<Response, Error> {
    if once(&format!("refund:{}", order.order_id), REMEMBER)? {
        publish(
            stream,
            "PaymentRefunded",
            &json!({ "orderId": order.order_id, "paymentId": format!("pay-{}", order.order_id) }),
        )?;
        log::info(format!("refunded {}", order.order_id));
    }
    Ok(Response::ok())
}

eddy_sdk::export!(handle);
