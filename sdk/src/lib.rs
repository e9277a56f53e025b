//! # eddy-sdk: write Eddy functions in Rust
//!
//! An Eddy function is a WebAssembly component that receives one [`Event`] and answers with a
//! [`Response`] whose status is the outcome: 2xx done, 4xx rejected (never retried), 5xx failed
//! (retried with backoff, then dead-lettered). A panic is a failure too.
//!
//! This crate turns a plain Rust function into that component. It hides the generated
//! bindings of the `eddy:function` WIT contract behind typed helpers: [`Event::json`] for the
//! payload, [`Response`] constructors, [`publish`] to emit follow-up events, [`log`] and
//! [`config`].
//!
//! ## A complete function
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "order-confirmation"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! eddy-sdk = { path = "../../sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use eddy_sdk::{Error, Event, Response, publish};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct OrderPlaced {
//!     order_id: Option<String>,
//!     user_id: Option<String>,
//! }
//!
//! fn handle(event: Event) -> Result<Response, Error> {
//!     // A payload that is not JSON of this shape becomes a 400 (rejected, not retried).
//!     let order: OrderPlaced = event.json()?;
//!     let (Some(order_id), Some(user_id)) = (order.order_id, order.user_id) else {
//!         return Ok(Response::bad_request("Invalid event payload"));
//!     };
//!     eddy_sdk::log::info(format!("confirming order {order_id}"));
//!     // An `Err` from `?` here becomes a 500: the event is retried later.
//!     publish("emails", "EmailRequested", &serde_json::json!({
//!         "to": user_id,
//!         "template": "order-confirmation",
//!         "orderId": order_id,
//!     }))?;
//!     Ok(Response::json(200, &serde_json::json!({ "confirmed": order_id })))
//! }
//!
//! eddy_sdk::export!(handle);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and run it with
//! `eddy invoke target/wasm32-wasip2/release/order_confirmation.wasm --data '{"orderId":"o-1","userId":"u-1"}'`.
//!
//! ## Layout
//! - [`Event`]: the incoming event and its delivery facts.
//! - [`Response`]: the answer; its status is the outcome.
//! - [`Error`]: what `?` produces; becomes a response with its status (500 unless said).
//! - [`publish`], [`log`], [`config`], [`secret`], [`once`]: the host's capabilities.
//! - [`http`]: calling HTTP APIs (the manifest's `[outbound] http` allow-list).
//! - [`kv`]: key-value buckets that outlive an invocation.
#![deny(missing_docs)]

// Lets the generated bindings name this crate by its public path from inside it too.
extern crate self as eddy_sdk;

mod error;
mod event;
mod host;
pub mod http;
pub mod kv;
mod response;

pub use error::Error;
pub use event::{Event, Trigger};
pub use host::{config, log, once, publish, secret};
pub use response::Response;

/// The bindings generated from `wit/`; used by [`export!`], not meant to be called directly.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "eddy:function/function@0.1.2",
        // The WASI packages the contract refers to (HTTP, I/O, clocks, key-value) too.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_eddy_function",
        default_bindings_module: "eddy_sdk::bindings",
        runtime_path: "eddy_sdk::__wit_bindgen::rt",
    });
}

/// The bindings runtime, re-exported so function crates need no direct `wit-bindgen` dependency.
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Calls a handler with an SDK event and turns its result into the WIT response.
#[doc(hidden)]
pub fn __dispatch(
    event: bindings::eddy::function::types::Event,
    handler: fn(Event) -> Result<Response, Error>,
) -> bindings::eddy::function::types::Response {
    let response = match handler(Event::from_wit(event)) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    bindings::eddy::function::types::Response {
        status: response.status,
        body: response.body,
    }
}

/// Exports `fn(Event) -> Result<Response, Error>` as this component's event handler.
///
/// Use it once per function crate, at the top level: `eddy_sdk::export!(handle);`.
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        #[doc(hidden)]
        struct __EddyFunction;

        impl $crate::bindings::exports::eddy::function::handler::Guest for __EddyFunction {
            fn handle(
                event: $crate::bindings::eddy::function::types::Event,
            ) -> $crate::bindings::eddy::function::types::Response {
                $crate::__dispatch(event, $handler)
            }
        }

        $crate::bindings::__export_eddy_function!(__EddyFunction with_types_in $crate::bindings);
    };
}
