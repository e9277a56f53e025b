//! `update-inventory`: on `OrderPlaced`, checks the order lists its items and reserves them by
//! publishing `InventoryReserved` with the number of units.
//!
//! Settings: `inventory_stream` (default `inventory`).

use eddy_sdk::{Error, Event, Response, config, log, publish};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderPlaced {
    order_id: Option<String>,
    items: Option<Vec<Item>>,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

fn handle(event: Event) -> Result<Response, Error> {
    let Ok(order) = event.json::<OrderPlaced>() else {
        return Ok(Response::bad_request("Invalid event payload"));
    };
    let (Some(order_id), Some(items)) = (order.order_id, order.items) else {
        return Ok(Response::bad_request("Invalid event payload"));
    };
    if items.is_empty() {
        return Ok(Response::bad_request("Invalid event payload: no items"));
    }
    let item_count: u32 = items.iter().map(|item| item.quantity).sum();
    let skus: Vec<&str> = items.iter().map(|item| item.sku.as_str()).collect();
    let stream = config("inventory_stream").unwrap_or_else(|| "inventory".to_owned());
    publish(
        &stream,
        "InventoryReserved",
        &json!({ "orderId": order_id, "itemCount": item_count, "skus": skus }),
    )?;
    log::info(format!("reserved {item_count} units for order {order_id}"));
    Ok(Response::json(
        200,
        &json!({ "orderId": order_id, "itemCount": item_count }),
    ))
}

eddy_sdk::export!(handle);
