//! The pure middle of the stream trigger: what each delivered event's fate means for Redis.
//!
//! A batch of deliveries comes in, each with its [`Verdict`] (ran to a result, or stopped
//! before running: deleted, of another type, malformed, abandoned too often, or left to the
//! host that holds it now); one [`Settlement`] goes out: the acknowledgements, retry schedules,
//! reschedules, finished retries and dead letters to write, in one pipeline. No I/O happens
//! here, so every row of the outcome table is tested below without Redis; `settle` applies a
//! settlement and `observe` reports it.

use crate::delivery::{
    DeadLetter, Decision, LeasedRetry, Reason, RetryRecord, decide, error_text, log_tail,
};
use crate::engine::InvokeResult;
use crate::event::Event;

use super::config::StreamTriggerConfig;
use crate::wire;

/// An entry's fields, in order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// Where a delivered event came from: what settling it needs.
#[derive(Debug, Clone)]
pub enum Source {
    /// Read from the stream (new, or claimed from a consumer that died): pending for this
    /// consumer. `None` fields: the entry was deleted from the stream while pending.
    Stream(Option<Fields>),
    /// Leased from the durable retry schedule.
    Retry(LeasedRetry),
}

/// One event taken for handling, from either source.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream entry id.
    pub entry_id: String,
    /// Which attempt this is, counting the one about to start.
    pub attempt: u32,
    /// Where it came from.
    pub source: Source,
}

impl Delivery {
    /// The entry's fields, unless it was deleted while pending.
    pub fn fields(&self) -> Option<&Fields> {
        match &self.source {
            Source::Stream(fields) => fields.as_ref(),
            Source::Retry(leased) => Some(&leased.record.fields),
        }
    }

    /// The failure history of a retried event.
    pub fn history(&self) -> Option<&RetryRecord> {
        match &self.source {
            Source::Stream(_) => None,
            Source::Retry(leased) => Some(&leased.record),
        }
    }

    /// The event's id (its `id` field, else the entry id): what a canary split hashes.
    pub fn event_id(&self) -> String {
        self.fields()
            .and_then(|fields| fields.iter().find(|(name, _)| name == "id"))
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_else(|| self.entry_id.clone())
    }

    /// Whether this host holds it as a pending stream entry (rather than a retry lease).
    pub fn is_pending(&self) -> bool {
        matches!(self.source, Source::Stream(_))
    }
}

/// What became of one delivery.
#[derive(Debug)]
pub enum Verdict {
    /// Deleted from the stream while pending: nothing left to handle.
    Gone,
    /// Of a type this trigger does not handle (only a replay from history can schedule one).
    OtherType,
    /// Hosts stopped while handling it on every attempt allowed.
    Abandoned,
    /// Not an event; the message says why.
    Malformed(String),
    /// Its data does not match its type's schema; the message names the path and the rule.
    Invalid(String),
    /// Not run here to an outcome this host may settle: its lease could not be confirmed in
    /// time, or another host took it over. Whoever holds it now settles it.
    LeftToHolder,
    /// The function ran and gave this result.
    Ran(Box<InvokeResult>),
}

/// The first stage's answer for one delivery: run it as this event, or it is already decided.
#[derive(Debug)]
// Short-lived (one per delivery, matched at once): boxing the event would cost an allocation
// per event for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Screened {
    /// Hand it to the function.
    Run(Event),
    /// Settle it without running.
    Decided(Verdict),
}

/// Decides, before running anything, whether a delivery reaches the function.
pub fn screen(config: &StreamTriggerConfig, delivery: &Delivery) -> Screened {
    let Some(fields) = delivery.fields() else {
        return Screened::Decided(Verdict::Gone);
    };
    if !config.handles(wire::event_type(fields)) {
        return Screened::Decided(Verdict::OtherType);
    }
    if delivery.attempt > config.retry.max_attempts {
        return Screened::Decided(Verdict::Abandoned);
    }
    match wire::to_event(&config.stream, &delivery.entry_id, fields, delivery.attempt) {
        Ok(event) => Screened::Run(event),
        Err(malformed) => Screened::Decided(Verdict::Malformed(malformed.to_string())),
    }
}

/// A failed pending entry moved into the retry schedule (and acknowledged in the same step).
#[derive(Debug, Clone, PartialEq)]
pub struct FirstRetry {
    /// The stream entry id.
    pub entry_id: String,
    /// When the next attempt is due (ms since the Unix epoch).
    pub due_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Its fields and failure.
    pub record: RetryRecord,
}

/// A leased retry that failed again, put back for another attempt.
#[derive(Debug, Clone)]
pub struct Reschedule {
    /// The lease it was run under.
    pub leased: LeasedRetry,
    /// When the next attempt is due.
    pub due_ms: i64,
    /// Its fields and failure so far.
    pub record: RetryRecord,
}

/// An event that cannot succeed, with where it is held now.
#[derive(Debug, Clone)]
pub struct Letter {
    /// What the dead letter says.
    pub letter: DeadLetter,
    /// The original fields, copied into the dead letter.
    pub fields: Fields,
    /// The retry lease it is held under, or `None` for a pending stream entry.
    pub leased: Option<LeasedRetry>,
}

/// What was planned for one delivery, for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Acknowledged (or its retry finished): done, or not this trigger's.
    Ack,
    /// Another attempt after this delay (ms).
    Retry(i64),
    /// Dead-lettered for this reason.
    DeadLetter(Reason),
    /// Nothing written: left to the host that holds it.
    Nothing,
}

/// Everything one batch writes to Redis, in one pipeline.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Pending entries to acknowledge with one `XACK`.
    pub acks: Vec<String>,
    /// Leased retries that are done, to remove from the schedule.
    pub finished: Vec<LeasedRetry>,
    /// Pending entries that failed, to move into the schedule.
    pub first_retries: Vec<FirstRetry>,
    /// Leased retries that failed again.
    pub reschedules: Vec<Reschedule>,
    /// Events to dead-letter.
    pub dead_letters: Vec<Letter>,
    /// One entry per delivery, in the order given.
    pub planned: Vec<Planned>,
    /// Entries settled for good (acknowledged, finished or dead-lettered) on a trigger ordered
    /// by key, each with its lease token (empty for a pending entry): the keys they hold, if
    /// any, go to their next events ([`super::order`]).
    pub released: Vec<(String, String)>,
}

impl Settlement {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
            && self.finished.is_empty()
            && self.first_retries.is_empty()
            && self.reschedules.is_empty()
            && self.dead_letters.is_empty()
    }

    /// Whether a retry was scheduled or a key released to a parked event (the retry loop may
    /// want to look sooner).
    pub fn schedules_retries(&self) -> bool {
        !self.first_retries.is_empty() || !self.reschedules.is_empty() || !self.released.is_empty()
    }
}

/// What a plan needs besides the verdicts: who, where, the retry policy and the time.
pub struct PlanContext<'a> {
    /// The function's name, written into dead letters.
    pub function: &'a str,
    /// The trigger's stream and group.
    pub config: &'a StreamTriggerConfig,
    /// Now, in ms since the Unix epoch.
    pub now_ms: i64,
}

/// Turns each delivery's verdict into the writes that settle it.
pub fn plan<'a>(
    ctx: &PlanContext<'_>,
    items: impl IntoIterator<Item = (&'a Delivery, &'a Verdict)>,
) -> Settlement {
    let mut out = Settlement::default();
    for (delivery, verdict) in items {
        let planned = match verdict {
            Verdict::LeftToHolder => Planned::Nothing,
            Verdict::Gone | Verdict::OtherType => {
                done(&mut out, delivery);
                Planned::Ack
            }
            Verdict::Abandoned => {
                let (status, last) = delivery
                    .history()
                    .map_or((None, ""), |h| (h.last_status, h.last_error.as_str()));
                let made = delivery.attempt - 1;
                let error = if last.is_empty() {
                    format!("hosts stopped while handling it on {made} attempts")
                } else {
                    format!(
                        "hosts stopped while handling it on {made} attempts; last error: {last}"
                    )
                };
                let letter = letter(ctx, delivery, Reason::Abandoned, status, error, "", made);
                dead_letter(&mut out, delivery, letter)
            }
            Verdict::Malformed(why) | Verdict::Invalid(why) => {
                let reason = match verdict {
                    Verdict::Invalid(_) => Reason::Invalid,
                    _ => Reason::Malformed,
                };
                let made = delivery.attempt - 1;
                let letter = letter(ctx, delivery, reason, None, why.clone(), "", made);
                dead_letter(&mut out, delivery, letter)
            }
            Verdict::Ran(result) => ran(ctx, &mut out, delivery, result),
        };
        if ctx.config.ordering.is_some() && matches!(planned, Planned::Ack | Planned::DeadLetter(_))
        {
            let token = match &delivery.source {
                Source::Stream(_) => String::new(),
                Source::Retry(leased) => leased.token.clone(),
            };
            out.released.push((delivery.entry_id.clone(), token));
        }
        out.planned.push(planned);
    }
    out
}

fn ran(
    ctx: &PlanContext<'_>,
    out: &mut Settlement,
    delivery: &Delivery,
    result: &InvokeResult,
) -> Planned {
    match decide(result, delivery.attempt, &ctx.config.retry) {
        Decision::Ack => {
            done(out, delivery);
            Planned::Ack
        }
        Decision::Retry(delay) => {
            let delay_ms = delay.as_millis() as i64;
            let due_ms = ctx.now_ms + delay_ms;
            let record = RetryRecord {
                fields: delivery.fields().cloned().unwrap_or_default(),
                first_failure_ms: delivery
                    .history()
                    .map_or(ctx.now_ms, |h| h.first_failure_or(ctx.now_ms)),
                last_failure_ms: ctx.now_ms,
                last_status: result.status,
                last_error: error_text(result),
                log_tail: log_tail(&result.output),
            };
            match &delivery.source {
                Source::Stream(_) => out.first_retries.push(FirstRetry {
                    entry_id: delivery.entry_id.clone(),
                    due_ms,
                    attempts: delivery.attempt,
                    record,
                }),
                Source::Retry(leased) => out.reschedules.push(Reschedule {
                    leased: leased.clone(),
                    due_ms,
                    record,
                }),
            }
            Planned::Retry(delay_ms)
        }
        Decision::DeadLetter(reason) => {
            let letter = letter(
                ctx,
                delivery,
                reason,
                result.status,
                error_text(result),
                &log_tail(&result.output),
                delivery.attempt,
            );
            dead_letter(out, delivery, letter)
        }
    }
}

/// Settles a delivery that needs nothing more: acknowledged, or its retry finished.
fn done(out: &mut Settlement, delivery: &Delivery) {
    match &delivery.source {
        Source::Stream(_) => out.acks.push(delivery.entry_id.clone()),
        Source::Retry(leased) => out.finished.push(leased.clone()),
    }
}

fn dead_letter(out: &mut Settlement, delivery: &Delivery, letter: DeadLetter) -> Planned {
    let reason = letter.reason;
    out.dead_letters.push(Letter {
        letter,
        fields: delivery.fields().cloned().unwrap_or_default(),
        leased: match &delivery.source {
            Source::Stream(_) => None,
            Source::Retry(leased) => Some(leased.clone()),
        },
    });
    Planned::DeadLetter(reason)
}

fn letter(
    ctx: &PlanContext<'_>,
    delivery: &Delivery,
    reason: Reason,
    status: Option<u16>,
    error: String,
    logs: &str,
    attempts: u32,
) -> DeadLetter {
    DeadLetter {
        reason,
        function: ctx.function.to_owned(),
        group: ctx.config.group.to_string(),
        stream: ctx.config.stream.to_string(),
        entry_id: delivery.entry_id.clone(),
        status,
        error,
        logs: logs.to_owned(),
        attempts,
        first_failure_ms: delivery
            .history()
            .map_or(ctx.now_ms, |h| h.first_failure_or(ctx.now_ms)),
        last_failure_ms: ctx.now_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::RetryPolicy;
    use crate::engine::{Captured, Failure};

    fn config() -> StreamTriggerConfig {
        StreamTriggerConfig {
            stream: crate::names::StreamName::new("orders").unwrap(),
            group: crate::names::GroupName::new("billing").unwrap(),
            types: Some(vec!["OrderPlaced".into()]),
            start: super::super::Start::Latest,
            batch: 64,
            concurrency: 8,
            retry: RetryPolicy {
                max_attempts: 3,
                initial: Duration::from_millis(100),
                factor: 2.0,
                max: Duration::from_secs(10),
                jitter: 0.0,
            },
            dead_letter: crate::names::StreamName::new("orders.dlq").unwrap(),
            instance: super::super::Instance::PerEvent,
            batch_window: std::time::Duration::ZERO,
            retention: None,
            breaker: None,
            ordering: None,
            cluster: Default::default(),
            validate: false,
        }
    }

    fn fields(event_type: &str) -> Fields {
        vec![
            ("type".into(), event_type.as_bytes().to_vec()),
            ("data".into(), br#"{"orderId":"o-1"}"#.to_vec()),
        ]
    }

    fn pending(id: &str, attempt: u32) -> Delivery {
        Delivery {
            entry_id: id.into(),
            attempt,
            source: Source::Stream(Some(fields("OrderPlaced"))),
        }
    }

    fn retried(id: &str, attempt: u32) -> Delivery {
        Delivery {
            entry_id: id.into(),
            attempt,
            source: Source::Retry(LeasedRetry {
                entry_id: id.into(),
                attempt,
                record: RetryRecord {
                    fields: fields("OrderPlaced"),
                    first_failure_ms: 500,
                    last_failure_ms: 900,
                    last_status: Some(503),
                    last_error: "status 503".into(),
                    log_tail: String::new(),
                },
                token: "host-a:7".into(),
            }),
        }
    }

    fn returned(status: u16) -> Verdict {
        Verdict::Ran(Box::new(InvokeResult::returned(
            status,
            b"why".to_vec(),
            Duration::ZERO,
            Captured::default(),
        )))
    }

    fn plan_one(delivery: &Delivery, verdict: &Verdict) -> Settlement {
        let config = config();
        let ctx = PlanContext {
            function: "bill",
            config: &config,
            now_ms: 1000,
        };
        plan(&ctx, [(delivery, verdict)])
    }

    #[test]
    fn success_acks_a_pending_entry_and_finishes_a_retry() {
        let s = plan_one(&pending("1-0", 1), &returned(200));
        assert_eq!(s.acks, ["1-0"]);
        assert_eq!(s.planned, [Planned::Ack]);
        let s = plan_one(&retried("2-0", 2), &returned(204));
        assert!(s.acks.is_empty());
        assert_eq!(s.finished.len(), 1);
        assert_eq!(s.finished[0].token, "host-a:7");
    }

    #[test]
    fn a_failure_is_scheduled_first_then_rescheduled_then_dead_lettered() {
        let s = plan_one(&pending("1-0", 1), &returned(500));
        assert_eq!(s.planned, [Planned::Retry(100)]);
        assert!(s.acks.is_empty(), "the schedule script acknowledges it");
        let first = &s.first_retries[0];
        assert_eq!((first.due_ms, first.attempts), (1100, 1));
        assert_eq!(first.record.first_failure_ms, 1000);
        assert_eq!(first.record.last_status, Some(500));

        let s = plan_one(&retried("1-0", 2), &returned(503));
        assert_eq!(s.planned, [Planned::Retry(200)]);
        let again = &s.reschedules[0];
        assert_eq!(again.due_ms, 1200);
        assert_eq!(again.record.first_failure_ms, 500, "history is kept");

        let s = plan_one(&retried("1-0", 3), &returned(503));
        assert_eq!(s.planned, [Planned::DeadLetter(Reason::Failed)]);
        let letter = &s.dead_letters[0];
        assert_eq!(letter.letter.attempts, 3);
        assert_eq!(letter.letter.first_failure_ms, 500);
        assert!(letter.leased.is_some(), "settled under its lease");
        assert_eq!(letter.fields, fields("OrderPlaced"));
    }

    #[test]
    fn rejections_are_dead_lettered_at_once_but_408_and_429_are_retried() {
        let s = plan_one(&pending("1-0", 1), &returned(400));
        assert_eq!(s.planned, [Planned::DeadLetter(Reason::Rejected)]);
        let letter = &s.dead_letters[0];
        assert!(letter.leased.is_none());
        assert_eq!(letter.letter.status, Some(400));
        assert_eq!(
            (letter.letter.function.as_str(), letter.letter.attempts),
            ("bill", 1)
        );
        for status in [408, 429] {
            let s = plan_one(&pending("1-0", 1), &returned(status));
            assert_eq!(s.planned, [Planned::Retry(100)], "status {status}");
        }
    }

    #[test]
    fn a_trap_or_timeout_is_a_failure() {
        let timeout = Verdict::Ran(Box::new(InvokeResult::failed(
            Failure::Timeout { limit_ms: 10 },
            Duration::ZERO,
            Captured::default(),
        )));
        let s = plan_one(&pending("1-0", 1), &timeout);
        assert_eq!(s.planned, [Planned::Retry(100)]);
        assert!(s.first_retries[0].record.last_error.contains("10 ms"));
    }

    #[test]
    fn entries_that_never_reach_the_function() {
        let gone = Delivery {
            entry_id: "1-0".into(),
            attempt: 2,
            source: Source::Stream(None),
        };
        assert!(matches!(
            screen(&config(), &gone),
            Screened::Decided(Verdict::Gone)
        ));
        assert_eq!(plan_one(&gone, &Verdict::Gone).acks, ["1-0"]);

        let other = Delivery {
            source: Source::Stream(Some(fields("Refunded"))),
            ..pending("2-0", 1)
        };
        assert!(matches!(
            screen(&config(), &other),
            Screened::Decided(Verdict::OtherType)
        ));
        assert_eq!(plan_one(&other, &Verdict::OtherType).acks, ["2-0"]);
        let s = plan_one(&retried("2-0", 2), &Verdict::OtherType);
        assert_eq!(s.finished.len(), 1, "a replayed one leaves the schedule");

        let malformed = Delivery {
            source: Source::Stream(Some(vec![("type".into(), b"OrderPlaced".to_vec())])),
            ..pending("3-0", 1)
        };
        let Screened::Decided(verdict) = screen(&config(), &malformed) else {
            panic!("an entry without data is malformed");
        };
        let s = plan_one(&malformed, &verdict);
        assert_eq!(s.planned, [Planned::DeadLetter(Reason::Malformed)]);
        assert_eq!(s.dead_letters[0].letter.attempts, 0);
        assert!(s.dead_letters[0].letter.error.contains("data"));

        assert!(matches!(
            screen(&config(), &pending("4-0", 1)),
            Screened::Run(_)
        ));
    }

    #[test]
    fn an_entry_past_its_attempts_is_abandoned_with_its_last_error() {
        let delivery = retried("1-0", 4);
        assert!(matches!(
            screen(&config(), &delivery),
            Screened::Decided(Verdict::Abandoned)
        ));
        let s = plan_one(&delivery, &Verdict::Abandoned);
        let letter = &s.dead_letters[0].letter;
        assert_eq!(letter.reason, Reason::Abandoned);
        assert_eq!(letter.attempts, 3);
        assert_eq!(letter.status, Some(503));
        assert_eq!(
            letter.error,
            "hosts stopped while handling it on 3 attempts; last error: status 503"
        );
        let s = plan_one(&pending("2-0", 4), &Verdict::Abandoned);
        assert_eq!(
            s.dead_letters[0].letter.error,
            "hosts stopped while handling it on 3 attempts"
        );
    }

    #[test]
    fn an_event_left_to_its_holder_writes_nothing() {
        let s = plan_one(&pending("1-0", 1), &Verdict::LeftToHolder);
        assert!(s.is_empty());
        assert_eq!(s.planned, [Planned::Nothing]);
    }

    #[test]
    fn a_mixed_batch_settles_each_event_alone() {
        let config = config();
        let ctx = PlanContext {
            function: "bill",
            config: &config,
            now_ms: 1000,
        };
        let deliveries: Vec<Delivery> = (1..=10).map(|n| pending(&format!("{n}-0"), 1)).collect();
        let verdicts: Vec<Verdict> = (1..=10)
            .map(|n| returned(if n == 3 || n == 7 { 500 } else { 200 }))
            .collect();
        let s = plan(&ctx, deliveries.iter().zip(&verdicts));
        assert_eq!(s.acks.len(), 8);
        assert!(!s.acks.contains(&"3-0".to_owned()));
        let retried: Vec<&str> = s
            .first_retries
            .iter()
            .map(|r| r.entry_id.as_str())
            .collect();
        assert_eq!(retried, ["3-0", "7-0"]);
        assert!(s.schedules_retries());
        assert_eq!(s.planned.len(), 10);
    }
}
