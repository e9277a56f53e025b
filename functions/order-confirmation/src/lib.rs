//! `order-confirmation`: on `OrderPlaced`, checks the order names an order and a user, then asks
//! the email service for a confirmation by publishing `EmailRequested`.
//!
//! Settings: `email_stream` (default `emails`), where the request goes.

use eddy_sdk::{Error, Event, Response, config, log, publish};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderPlaced {
    order_id: Option<String>,
    user_id: Option<String>,
    email: Option<String>,
}

fn handle(event: Event) -> Result<Response, Error> {
    let Ok(order) = event.json::<OrderPlaced>() else {
        return Ok(Response::bad_request("Invalid event payload"));
    };
    let (Some(order_id), Some(user_id)) = (order.order_id, order.user_id) else {
        return Ok(Response::bad_request("Invalid event payload"));
    };
    let confirmation = json!({
        "to": order.email.unwrap_or_else(|| format!("{user_id}@users.example")),
        "userId": user_id,
        "orderId": order_id,
        "template": "order-confirmation",
        "subject": format!("Your order {order_id} is confirmed"),
    });
    let stream = config("email_stream").unwrap_or_else(|| "emails".to_owned());
    let email_id = publish(&stream, "EmailRequested", &confirmation)?;
    log::info(format!(
        "confirmation for order {order_id} requested as {email_id}"
    ));
    Ok(Response::json(
        200,
        &json!({ "orderId": order_id, "emailEvent": email_id }),
    ))
}

eddy_sdk::export!(handle);
