//! The handler's answer: a status, which is the outcome, and a body kept with the result.

use serde::Serialize;

/// A function's answer to an event. The status is the outcome: 2xx done, 4xx rejected,
/// 5xx failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The outcome, read like an HTTP status.
    pub status: u16,
    /// The body kept with the invocation's result.
    pub body: Vec<u8>,
}

impl Response {
    /// A 200 with an empty body: the event is done.
    pub fn ok() -> Self {
        Self::new(200, Vec::new())
    }

    /// A response with a raw status and body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }

    /// A response whose body is `value` as JSON; a value that cannot be serialized gives a 500.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status, body),
            Err(error) => Self::error(500, &format!("response serialization failed: {error}")),
        }
    }

    /// A 400 with body `{"error": message}`: the event is bad and is not retried.
    pub fn bad_request(message: &str) -> Self {
        Self::error(400, message)
    }

    /// A response with `status` and body `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": message }))
    }

    /// The body as UTF-8 text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_serializes_the_value_with_the_status() {
        let response = Response::json(201, &serde_json::json!({"a": 1}));
        assert_eq!(response.status, 201);
        assert_eq!(response.text(), r#"{"a":1}"#);
    }

    #[test]
    fn bad_request_is_a_400_with_an_error_document() {
        let response = Response::bad_request("Invalid event payload");
        assert_eq!(response.status, 400);
        assert_eq!(response.text(), r#"{"error":"Invalid event payload"}"#);
    }

    #[test]
    fn ok_is_an_empty_200() {
        assert_eq!(Response::ok(), Response::new(200, Vec::new()));
    }

    #[test]
    fn an_error_converted_with_question_mark_is_a_500_with_its_causes() {
        fn parse() -> Result<u8, crate::Error> {
            Ok("x".parse::<u8>()?)
        }
        let response = parse().unwrap_err().into_response();
        assert_eq!(response.status, 500);
        assert_eq!(
            response.text(),
            r#"{"error":"invalid digit found in string"}"#
        );
    }
}
