//! The outcome of an invocation, the one idea every room shares: the engine produces it,
//! delivery acts on it, metrics, records and charts count it.
//!
//! The table of which status (or trap, or limit) is which outcome is written once, in the WIT
//! contract's package docs (`wit/eddy.wit`, "Outcomes"); [`Outcome::of_status`] is that table
//! as code, and [`crate::delivery::decide`] says what each outcome does to the event.

use serde::Serialize;

/// The three outcomes of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// 2xx: the event is handled.
    Done,
    /// 4xx: the event is bad and can never succeed; never retried.
    Rejected,
    /// 5xx, another status, a trap, a timeout or the memory limit: retried.
    Failed,
}

impl Outcome {
    /// The outcome a response status means: 2xx done, 4xx rejected, anything else failed.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Outcome::Done,
            400..=499 => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }

    /// The lowercase name used in output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}
