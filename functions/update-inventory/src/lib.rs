//! `update-inventory`: on `OrderPlaced`, reserves every item of the order from the stock kept
//! in the shared key-value bucket `inventory` (SKU → units, as text), once per order, and never
//! below zero: each item is taken with compare-and-swap, so concurrent orders on any number of
//! hosts cannot oversell. It publishes `InventoryReserved`; if an item is short it puts back
//! what it took and publishes `OutOfStock` instead.
//!
//! Stock is set by an operator: `eddy kv set inventory book-1 12`. Settings: `inventory_stream`
//! (default `inventory`).

use std::time::Duration;

use eddy_sdk::kv::Bucket;
use eddy_sdk::{Error, Event, Response, config, log, once, publish};
use serde::Deserialize;
use serde_json::json;

/// How long a reservation is remembered, so a late duplicate is still skipped.
const REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Compare-and-swap rounds on one item before the invocation fails (and is retried).
const MAX_ROUNDS: u32 = 50;

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

/// The units a stored value holds (absent: none).
fn units(value: Option<&[u8]>) -> i64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Takes `quantity` of `sku` if that many are in stock; how many there were when it could not.
fn take(stock: &Bucket, sku: &str, quantity: i64) -> Result<Result<(), i64>, Error> {
    for _ in 0..MAX_ROUNDS {
        let current = stock.get(sku)?;
        let available = units(current.as_deref());
        if available < quantity {
            return Ok(Err(available));
        }
        let left = (available - quantity).to_string();
        if stock.compare_and_swap(sku, current.as_deref(), left.as_bytes())? {
            return Ok(Ok(()));
        }
    }
    Err(Error::new(format!(
        "stock of {sku} kept changing: gave up after {MAX_ROUNDS} rounds"
    )))
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
    if !once(&format!("reserve:{order_id}"), REMEMBER)? {
        log::info(format!("stock for {order_id} was already reserved"));
        return Ok(Response::ok());
    }
    let stock = Bucket::open("inventory")?;
    let stream = config("inventory_stream").unwrap_or_else(|| "inventory".to_owned());
    let mut taken: Vec<&Item> = Vec::new();
    for item in &items {
        let quantity = i64::from(item.quantity);
        if let Err(available) = take(&stock, &item.sku, quantity)? {
            for done in &taken {
                stock.increment(&done.sku, i64::from(done.quantity))?;
            }
            publish(
                &stream,
                "OutOfStock",
                &json!({
                    "orderId": order_id, "sku": item.sku,
                    "requested": item.quantity, "available": available,
                }),
            )?;
            log::warn(format!(
                "order {order_id}: {} of {} wanted, {available} in stock",
                item.quantity, item.sku
            ));
            return Ok(Response::json(
                200,
                &json!({ "orderId": order_id, "outOfStock": item.sku }),
            ));
        }
        taken.push(item);
    }
    let item_count: u32 = items.iter().map(|item| item.quantity).sum();
    let skus: Vec<&str> = items.iter().map(|item| item.sku.as_str()).collect();
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
