//! Reporting a settled batch, from one place: metrics (through handles resolved once per
//! trigger), the invocation span's fields and its export, invocation records (one queue send
//! per batch), and the log lines an operator reads when an event is retried or dead-lettered.

use std::sync::Arc;
use std::time::SystemTime;

use crate::delivery::error_text;
use crate::engine::{Function, InvokeResult, Outcome};
use crate::metrics::FunctionMetrics;
use crate::records::{Record, Recorder};
use crate::telemetry::{FinishedInvocation, SpanExport};

use super::plan::{Delivery, Planned, Verdict};
use crate::wire;

/// What observing needs of an event, taken before the event is handed to the function.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The event's id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The flow it belongs to (its `correlationid`, or its own id).
    pub correlation_id: String,
    /// The event a function published it from, if any.
    pub caused_by: Option<String>,
}

impl Facts {
    /// The facts of `event`.
    pub fn of(event: &crate::event::Event) -> Self {
        let ext = |name: &str| {
            event
                .extensions
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Self {
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            correlation_id: ext("correlationid").unwrap_or_else(|| event.id.clone()),
            caused_by: ext(wire::CAUSATION_EXTENSION),
        }
    }
}

/// One delivery as it went, for reporting.
pub struct Observed<'a> {
    /// The delivery.
    pub delivery: &'a Delivery,
    /// What became of it.
    pub verdict: &'a Verdict,
    /// What the plan wrote for it.
    pub planned: &'a Planned,
    /// The event's facts and span, when it reached the function.
    pub ran: Option<(&'a Facts, &'a tracing::Span)>,
}

/// Reports one trigger's batches.
pub(super) struct Observer {
    /// The function's metric handles.
    pub metrics: FunctionMetrics,
    /// Where records go.
    pub recorder: Recorder,
    /// Where spans are exported.
    pub spans: SpanExport,
    /// This host's consumer name, written into records.
    pub host: Arc<str>,
    /// The trigger's stream.
    pub stream: String,
    /// Its dead-letter stream, named in logs.
    pub dead_letter: String,
}

impl Observer {
    /// Reports every delivery of a settled batch.
    pub fn batch<'a>(&self, function: &Function, items: impl IntoIterator<Item = Observed<'a>>) {
        let ended = SystemTime::now();
        let time = chrono::DateTime::<chrono::Utc>::from(ended)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut records = Vec::new();
        for item in items {
            match (item.verdict, item.ran) {
                (Verdict::Ran(result), Some((facts, span))) => {
                    let error = result.failure.as_ref().map(|_| error_text(result));
                    self.ran(
                        function,
                        item.delivery,
                        result,
                        facts,
                        span,
                        error.as_deref(),
                        ended,
                    );
                    // A rejection's record says why too: the function's own words in its body.
                    let record_error = error.or_else(|| {
                        (result.outcome != crate::engine::Outcome::Done).then(|| error_text(result))
                    });
                    records.push(self.record(
                        function,
                        item.delivery,
                        result,
                        facts,
                        &time,
                        record_error,
                    ));
                }
                (Verdict::Malformed(_) | Verdict::Abandoned, _) => {
                    // Not counted by the invocation path: these never reached the function.
                    self.metrics.dead_lettered.inc();
                }
                _ => {}
            }
            self.log(function, item.delivery, item.planned, item.verdict);
        }
        self.recorder.record_many(records);
    }

    #[allow(clippy::too_many_arguments)]
    fn ran(
        &self,
        function: &Function,
        delivery: &Delivery,
        result: &InvokeResult,
        facts: &Facts,
        span: &tracing::Span,
        error: Option<&str>,
        ended: SystemTime,
    ) {
        self.metrics.duration.observe(result.duration.as_secs_f64());
        self.metrics
            .window
            .record(result.outcome, result.duration.as_secs_f64());
        self.metrics
            .instantiation
            .observe(result.instantiation.as_secs_f64());
        // The span's closing fields only serve the debug line that reports them: formatting
        // them costs the fmt layer more than the rest of the span, so only when it is shown.
        if tracing::enabled!(tracing::Level::DEBUG) {
            span.record("outcome", result.outcome.as_str());
            span.record("status", result.status);
            span.record(
                "duration_ms",
                (result.duration.as_secs_f64() * 1e6).round() / 1e3,
            );
            if let Some(exported) = &result.span {
                span.record("trace_id", exported.trace_id.as_str());
            }
            span.in_scope(|| tracing::debug!("invoked"));
        }
        if let Some(exported) = &result.span {
            self.spans.finished(&FinishedInvocation {
                span: exported,
                function: function.name(),
                version: function.version(),
                event_id: &facts.event_id,
                event_type: &facts.event_type,
                stream: &self.stream,
                entry_id: &delivery.entry_id,
                attempt: delivery.attempt,
                outcome: result.outcome.as_str(),
                status: result.status,
                error,
                ended,
                duration: result.duration,
            });
        }
    }

    fn record(
        &self,
        function: &Function,
        delivery: &Delivery,
        result: &InvokeResult,
        facts: &Facts,
        time: &str,
        error: Option<String>,
    ) -> Record {
        Record {
            time: time.to_owned(),
            function: function.name().to_owned(),
            event_id: facts.event_id.clone(),
            event_type: facts.event_type.clone(),
            stream: Some(self.stream.clone()),
            entry_id: Some(delivery.entry_id.clone()),
            attempt: delivery.attempt,
            status: result.status,
            outcome: result.outcome.as_str().to_owned(),
            error,
            duration_ms: result.duration.as_secs_f64() * 1000.0,
            host: self.host.to_string(),
            correlation_id: facts.correlation_id.clone(),
            caused_by: facts.caused_by.clone(),
            logs: crate::records::logs_for(
                result.outcome,
                &crate::delivery::log_tail(&result.output),
            ),
        }
    }

    /// Counts the event's outcome and says what happens next when it is not done.
    fn log(&self, function: &Function, delivery: &Delivery, planned: &Planned, verdict: &Verdict) {
        let ran = match verdict {
            Verdict::Ran(result) => Some(result),
            _ => None,
        };
        if let Some(result) = ran {
            match (planned, result.outcome) {
                (Planned::Ack, _) => self.metrics.ok.inc(),
                (_, Outcome::Rejected) => self.metrics.rejected.inc(),
                _ => self.metrics.failed.inc(),
            };
        }
        match planned {
            Planned::Retry(delay_ms) => {
                self.metrics.retried.inc();
                tracing::info!(
                    function = function.name(),
                    stream = %self.stream,
                    entry_id = %delivery.entry_id,
                    attempt = delivery.attempt,
                    error = %ran.map(|r| error_text(r)).unwrap_or_default(),
                    retry_in_ms = delay_ms,
                    "invocation failed; retry scheduled"
                );
            }
            Planned::DeadLetter(reason) => {
                if ran.is_some() {
                    self.metrics.dead_lettered.inc();
                }
                let error = match verdict {
                    Verdict::Ran(result) => error_text(result),
                    Verdict::Malformed(why) => why.clone(),
                    _ => String::new(),
                };
                tracing::warn!(
                    function = function.name(),
                    stream = %self.stream,
                    entry_id = %delivery.entry_id,
                    reason = reason.as_str(),
                    attempt = delivery.attempt,
                    %error,
                    dead_letter = %self.dead_letter,
                    "dead-lettering"
                );
            }
            Planned::Nothing => tracing::warn!(
                function = function.name(),
                stream = %self.stream,
                entry_id = %delivery.entry_id,
                "event left to its current holder: its lease here was stale or taken over"
            ),
            Planned::Ack => {}
        }
    }
}
