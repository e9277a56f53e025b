//! `order-confirmation`: on `OrderPlaced`, fetches the user from the users API and sends the
//! confirmation email through a Mailgun-shaped mail API, once per order.
//!
//! - An order without `orderId` or `userId` is rejected (400): retrying cannot fix it.
//! - A user the users API does not know (404) is rejected too.
//! - A mail API answering 5xx, or any API not answering in time, fails the invocation (500): the
//!   host retries it with backoff, and `once` makes sure the mail goes out once.
//! - Once sent, it publishes `EmailSent` with the mail API's message id.
//!
//! Settings: `users_api` and `mail_api` (base URLs, which the manifest's `[outbound] http` must
//! allow), `mail_domain`, `mail_from`, `email_stream` (default `emails`). Secret: `mail_key`,
//! the mail API's key (HTTP Basic password, user `api`).

use std::time::Duration;

use eddy_sdk::{Error, Event, Response, config, http, log, once, publish, secret};
use serde::Deserialize;
use serde_json::json;

/// How long a sent confirmation is remembered, so a late duplicate is still skipped.
const REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long one call to an API may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderPlaced {
    order_id: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct User {
    email: String,
    #[serde(default)]
    name: String,
}

fn setting(key: &str) -> Result<String, Error> {
    config(key).ok_or_else(|| Error::new(format!("setting `{key}` is missing from the manifest")))
}

fn handle(event: Event) -> Result<Response, Error> {
    let Ok(order) = event.json::<OrderPlaced>() else {
        return Ok(Response::bad_request("Invalid event payload"));
    };
    let (Some(order_id), Some(user_id)) = (order.order_id, order.user_id) else {
        return Ok(Response::bad_request("Invalid event payload"));
    };

    let users = setting("users_api")?;
    let response = http::Request::get(&format!("{users}/users/{user_id}"))
        .timeout(CALL_TIMEOUT)
        .send()?;
    let user: User = match response.status {
        200 => response.json()?,
        404 => return Ok(Response::bad_request(&format!("unknown user {user_id}"))),
        status => return Err(Error::new(format!("users API answered {status}"))),
    };

    if !once(&format!("email:{order_id}"), REMEMBER)? {
        log::info(format!("confirmation for {order_id} was already sent"));
        return Ok(Response::ok());
    }
    let (mail, domain) = (setting("mail_api")?, setting("mail_domain")?);
    let from = config("mail_from").unwrap_or_else(|| format!("shop@{domain}"));
    let key = secret("mail_key").ok_or_else(|| Error::new("secret `mail_key` is not set"))?;
    let sent = http::Request::post(&format!("{mail}/v3/{domain}/messages"))
        .basic_auth("api", &key)
        .timeout(CALL_TIMEOUT)
        .form(&[
            ("from", from.as_str()),
            ("to", user.email.as_str()),
            ("subject", &format!("Your order {order_id} is confirmed")),
            (
                "text",
                &format!("Hello {}, thank you for order {order_id}.", user.name),
            ),
        ])
        .send()?;
    if !(200..300).contains(&sent.status) {
        // Failing releases the `once` key, so the retry sends it.
        return Err(Error::new(format!(
            "mail API answered {}: {}",
            sent.status,
            sent.text()
        )));
    }
    let message_id = sent
        .json::<serde_json::Value>()
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let stream = config("email_stream").unwrap_or_else(|| "emails".to_owned());
    publish(
        &stream,
        "EmailSent",
        &json!({ "orderId": order_id, "to": user.email, "messageId": message_id }),
    )?;
    log::info(format!(
        "confirmation for {order_id} sent to {} as {message_id}",
        user.email
    ));
    Ok(Response::json(
        200,
        &json!({ "orderId": order_id, "messageId": message_id }),
    ))
}

eddy_sdk::export!(handle);
