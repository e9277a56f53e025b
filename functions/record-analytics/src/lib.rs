//! `record-analytics`: folds an order event into an analytics record (revenue, units) and
//! returns it; events without an order id are rejected.
//!
//! Settings: `currency` (default `USD`), the currency the record is labelled with.

use eddy_sdk::{Error, Event, Response, config, log};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    order_id: Option<String>,
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    price: f64,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

fn handle(event: Event) -> Result<Response, Error> {
    let Ok(order) = event.json::<Order>() else {
        return Ok(Response::bad_request("Invalid event payload"));
    };
    let Some(order_id) = order.order_id else {
        return Ok(Response::bad_request("Invalid event payload"));
    };
    let units: u32 = order.items.iter().map(|item| item.quantity).sum();
    let revenue: f64 = order
        .items
        .iter()
        .map(|item| item.price * f64::from(item.quantity))
        .sum();
    let currency = config("currency").unwrap_or_else(|| "USD".to_owned());
    log::info(format!(
        "{} for order {order_id}: {units} units",
        event.event_type()
    ));
    Ok(Response::json(
        200,
        &json!({
            "event": event.event_type(),
            "orderId": order_id,
            "units": units,
            "revenue": revenue,
            "currency": currency,
        }),
    ))
}

eddy_sdk::export!(handle);
