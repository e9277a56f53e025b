//! `saga-shipping`, the order saga's shipping step (`examples/order-saga`): on
//! `InventoryReserved` (stream `inventory`) it books a delivery once per order
//! (`once("ship:<order>")`) and publishes `ShippingScheduled` with the carrier and the
//! expected delivery date. Settings: `carrier` (default `DHL`), `days` (default 2),
//! `shipping_stream` (default `shipping`).

use std::time::Duration;

use eddy_sdk::{Error, Event, Response, config, log, once, publish};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reserved {
    order_id: String,
}

fn handle(event: Event) -> Result<Response, Error> {
    let Ok(reserved) = event.json::<Reserved>() else {
        return Ok(Response::bad_request("InventoryReserved needs orderId"));
    };
    let order_id = reserved.order_id;
    if !once(
        &format!("ship:{order_id}"),
        Duration::from_secs(7 * 24 * 3600),
    )? {
        return Ok(Response::ok());
    }
    let carrier = config("carrier").unwrap_or_else(|| "DHL".to_owned());
    let days: u32 = config("days").and_then(|d| d.parse().ok()).unwrap_or(2);
    let stream = config("shipping_stream").unwrap_or_else(|| "shipping".to_owned());
    publish(
        &stream,
        "ShippingScheduled",
        &json!({
            "orderId": order_id,
            "carrier": carrier,
            "deliveryInDays": days,
            "reservedAt": event.time(),
        }),
    )?;
    log::info(format!("{order_id} ships with {carrier} in {days} days"));
    Ok(Response::ok())
}

eddy_sdk::export!(handle);
