//! Trace context carried from an event to the events its function publishes, so one order's
//! whole flow (OrderPlaced → PaymentProcessed → …) shares one trace and one correlation id.
//!
//! - `traceparent` (W3C Trace Context): the published events keep the trace id and get this
//!   invocation's span id as their parent. An event without a valid one starts a new trace.
//! - `tracestate`: copied as is.
//! - `correlationid`: copied; an event without one lends its own id, so the first event of a
//!   flow names it.

/// One invocation's place in its trace: the trace it continues (or starts), its own span id,
/// and the span of whoever published the event, if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// This invocation's span: 16 lowercase hex digits.
    pub span_id: String,
    /// The span that published the event (the traceparent's parent id), if it had a valid one.
    pub parent_span_id: Option<String>,
    /// The W3C trace flags (`01` = sampled).
    pub flags: String,
}

impl InvocationSpan {
    /// A new span for handling an event with `extensions`: a child of its traceparent, or the
    /// root of a new sampled trace.
    pub fn for_event(extensions: &[(String, String)]) -> Self {
        let span_id = random_hex(16);
        let incoming = extensions
            .iter()
            .find(|(k, _)| k == "traceparent")
            .and_then(|(_, v)| parse_traceparent(v));
        match incoming {
            Some(parsed) => Self {
                trace_id: parsed.trace.to_owned(),
                span_id,
                parent_span_id: Some(parsed.parent.to_owned()),
                flags: parsed.flags.to_owned(),
            },
            None => Self {
                trace_id: random_hex(32),
                span_id,
                parent_span_id: None,
                flags: "01".to_owned(),
            },
        }
    }

    /// The traceparent naming this span as the parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }

    /// Whether the trace is sampled (to be exported).
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|f| f & 1 == 1)
    }
}

/// The extensions every event published while handling `event_id` (with `extensions`, in
/// `span`) carries.
pub fn carried(
    extensions: &[(String, String)],
    event_id: &str,
    span: &InvocationSpan,
) -> Vec<(String, String)> {
    let get = |name: &str| {
        extensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut out = vec![("traceparent".to_owned(), span.traceparent())];
    if let Some(state) = get("tracestate") {
        out.push(("tracestate".to_owned(), state.to_owned()));
    }
    out.push((
        "correlationid".to_owned(),
        get("correlationid").unwrap_or(event_id).to_owned(),
    ));
    out
}

struct Traceparent<'a> {
    trace: &'a str,
    parent: &'a str,
    flags: &'a str,
}

/// The parts of a version-00 traceparent with non-zero trace and parent ids.
fn parse_traceparent(value: &str) -> Option<Traceparent<'_>> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace, parent, flags] = parts.as_slice() else {
        return None;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    (*version == "00"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && nonzero(trace)
        && nonzero(parent))
    .then_some(Traceparent {
        trace,
        parent,
        flags,
    })
}

fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        out.push_str(&format!("{:016x}", fastrand::u64(1..)));
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_id(traceparent: &str) -> Option<&str> {
        parse_traceparent(traceparent).map(|parsed| parsed.trace)
    }

    fn ext(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_trace_continues_with_a_new_parent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let extensions = ext(&[("traceparent", incoming), ("correlationid", "order-1")]);
        let span = InvocationSpan::for_event(&extensions);
        assert_eq!(span.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(span.sampled());
        let out = carried(&extensions, "e-2", &span);
        let traceparent = &out[0].1;
        assert_eq!(traceparent, &span.traceparent());
        assert_eq!(
            trace_id(traceparent),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_ne!(
            traceparent, incoming,
            "the parent id is this invocation's span"
        );
        assert!(traceparent.ends_with("-01"));
        assert_eq!(
            out.last().unwrap(),
            &("correlationid".to_owned(), "order-1".to_owned())
        );
    }

    #[test]
    fn an_unsampled_trace_stays_unsampled() {
        let span = InvocationSpan::for_event(&ext(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]));
        assert!(!span.sampled());
        assert!(span.traceparent().ends_with("-00"));
    }

    #[test]
    fn a_missing_or_bad_traceparent_starts_a_trace_and_the_id_correlates() {
        for extensions in [
            ext(&[]),
            ext(&[("traceparent", "junk")]),
            ext(&[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )]),
        ] {
            let span = InvocationSpan::for_event(&extensions);
            assert_eq!(span.parent_span_id, None);
            let out = carried(&extensions, "e-1", &span);
            assert!(trace_id(&out[0].1).is_some(), "{out:?}");
            assert_eq!(out.last().unwrap().1, "e-1");
        }
    }
}
