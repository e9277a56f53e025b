//! A Rust Eddy function: schedules shipping for a paid order, once per order.

use std::time::Duration;

use eddy_sdk::{Error, Event, Response, config, log, once, publish};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    order_id: String,
}

fn handle(event: Event) -> Result<Response, Error> {
    let Ok(order) = event.json::<Order>() else {
        return Ok(Response::bad_request("an order needs orderId"));
    };
    if once(&format!("ship:{}", order.order_id), Duration::from_secs(86_400))? {
        let stream = config("output_stream").unwrap_or_else(|| "shipping".to_owned());
        publish(&stream, "ShippingScheduled", &order)?;
        log::info(format!("shipping scheduled for {}", order.order_id));
    }
    Ok(Response::ok())
}

eddy_sdk::export!(handle);
