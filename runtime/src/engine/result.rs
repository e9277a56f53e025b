//! What one invocation returned: its status, body, output and duration, or why it failed.
//!
//! Which [`Outcome`] a status means is [`crate::outcome`]'s; what delivery does with it (ack,
//! retry, dead-letter) is [`crate::delivery`]'s.

use serde::Serialize;
use std::time::Duration;

use super::capture::Captured;
use crate::outcome::Outcome;

/// Why an invocation failed, when it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The function answered with a 5xx (or a 1xx/3xx, which is not a final answer).
    Status {
        /// The status returned.
        status: u16,
    },
    /// The function answered with a status outside 100..=599.
    InvalidStatus {
        /// The status returned.
        status: u16,
    },
    /// The instance trapped (a Rust panic is a trap); `panic` holds the panic message when the
    /// guest printed one.
    Trap {
        /// The trap, as wasmtime reports it.
        message: String,
        /// The guest's panic message, from its stderr.
        panic: Option<String>,
    },
    /// The wall-time limit was reached and the instance was interrupted.
    Timeout {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The instance tried to grow its memory past the limit.
    MemoryLimit {
        /// The limit, in bytes.
        limit_bytes: u64,
        /// The size the guest asked for, in bytes.
        requested_bytes: u64,
    },
    /// The function succeeded but Redis did not take one of its publishes (full, away): the
    /// event is retried so the published event is not lost.
    PublishFailed {
        /// The stream it published to.
        stream: String,
        /// Redis's answer.
        message: String,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { status } => write!(f, "function returned status {status}"),
            Failure::InvalidStatus { status } => {
                write!(
                    f,
                    "function returned invalid status {status}: expected 100..=599"
                )
            }
            Failure::Trap {
                message,
                panic: Some(panic),
            } => write!(f, "trap: {message}; panic: {panic}"),
            Failure::Trap { message, .. } => write!(f, "trap: {message}"),
            Failure::Timeout { limit_ms } => {
                write!(f, "timed out: wall-time limit of {limit_ms} ms reached")
            }
            Failure::MemoryLimit {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "memory limit of {limit_bytes} bytes reached (the guest asked for {requested_bytes})"
            ),
            Failure::PublishFailed { stream, message } => write!(
                f,
                "publishing to {stream:?} failed ({message}); the event is retried so that \
                 nothing it publishes is lost"
            ),
        }
    }
}

/// Everything one invocation produced.
#[derive(Debug, Clone, Serialize)]
pub struct InvokeResult {
    /// Done, rejected or failed.
    pub outcome: Outcome,
    /// The status the function returned, if it returned at all.
    pub status: Option<u16>,
    /// The response body (empty when the function did not return).
    #[serde(serialize_with = "body_as_text")]
    pub body: Vec<u8>,
    /// Why it failed, when `outcome` is failed.
    pub failure: Option<Failure>,
    /// Wall time from instantiation to the end of the call.
    #[serde(serialize_with = "duration_as_ms")]
    pub duration: Duration,
    /// Captured stdout, stderr and log lines.
    pub output: Captured,
    /// The part of `duration` spent making the instance.
    #[serde(skip)]
    pub instantiation: Duration,
    /// The invocation's span in its trace, when it ran.
    #[serde(skip)]
    pub span: Option<crate::engine::propagation::InvocationSpan>,
    /// What its outbound HTTP requests did.
    pub outbound: super::outbound::OutboundStats,
}

impl InvokeResult {
    /// The result of a call that returned `status` and `body`.
    pub fn returned(status: u16, body: Vec<u8>, duration: Duration, output: Captured) -> Self {
        let outcome = Outcome::of_status(status);
        let failure = match (outcome, status) {
            (Outcome::Failed, 100..=599) => Some(Failure::Status { status }),
            (Outcome::Failed, _) => Some(Failure::InvalidStatus { status }),
            _ => None,
        };
        Self {
            outcome,
            status: Some(status),
            body,
            failure,
            duration,
            output,
            instantiation: Duration::ZERO,
            span: None,
            outbound: Default::default(),
        }
    }

    /// The result of a call that did not return.
    pub fn failed(failure: Failure, duration: Duration, output: Captured) -> Self {
        Self {
            outcome: Outcome::Failed,
            status: None,
            body: Vec::new(),
            failure: Some(failure),
            duration,
            output,
            instantiation: Duration::ZERO,
            span: None,
            outbound: Default::default(),
        }
    }

    /// Turns a success into a failure because a publish of it did not reach Redis; other
    /// outcomes stay (a rejection or failure is not made better or worse by it).
    pub fn lost_publish(&mut self, stream: String, message: String) {
        if self.outcome == Outcome::Done {
            self.outcome = Outcome::Failed;
            self.failure = Some(Failure::PublishFailed { stream, message });
        }
    }

    /// Replaces every secret's value with `[redacted]` in what the result keeps of the guest:
    /// its body, output and failure. Where the output budget cut the output, what is left of a
    /// secret at the end of each part is redacted too.
    pub fn redact(&mut self, secrets: &super::secrets::Secrets) {
        if secrets.is_empty() {
            return;
        }
        secrets.redact_bytes(&mut self.body);
        let cut = self.output.dropped_bytes > 0;
        let texts = [&mut self.output.stdout, &mut self.output.stderr]
            .into_iter()
            .chain(self.output.logs.iter_mut().map(|line| &mut line.message));
        for text in texts {
            secrets.redact_in_place(text);
            if cut {
                secrets.redact_cut(text);
            }
        }
        if let Some(Failure::Trap { message, panic }) = &mut self.failure {
            secrets.redact_in_place(message);
            if let Some(panic) = panic {
                secrets.redact_in_place(panic);
            }
        }
    }

    /// The body as UTF-8 text, lossily.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn body_as_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

fn duration_as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_contract_table() {
        assert_eq!(Outcome::of_status(200), Outcome::Done);
        assert_eq!(Outcome::of_status(204), Outcome::Done);
        assert_eq!(Outcome::of_status(299), Outcome::Done);
        assert_eq!(Outcome::of_status(400), Outcome::Rejected);
        assert_eq!(Outcome::of_status(499), Outcome::Rejected);
        assert_eq!(Outcome::of_status(500), Outcome::Failed);
        assert_eq!(Outcome::of_status(599), Outcome::Failed);
        assert_eq!(Outcome::of_status(100), Outcome::Failed);
        assert_eq!(Outcome::of_status(302), Outcome::Failed);
        assert_eq!(Outcome::of_status(0), Outcome::Failed);
        assert_eq!(Outcome::of_status(600), Outcome::Failed);
    }

    #[test]
    fn a_status_outside_the_range_is_an_invalid_status_failure() {
        let result = InvokeResult::returned(700, vec![], Duration::ZERO, Captured::default());
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.failure, Some(Failure::InvalidStatus { status: 700 }));
        let result = InvokeResult::returned(503, vec![], Duration::ZERO, Captured::default());
        assert_eq!(result.failure, Some(Failure::Status { status: 503 }));
        let result = InvokeResult::returned(404, vec![], Duration::ZERO, Captured::default());
        assert_eq!(result.failure, None);
    }
}
