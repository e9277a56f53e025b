//! Trace context carried from an event to the events its function publishes, so one order's
//! whole flow (OrderPlaced → PaymentProcessed → …) shares one trace and one correlation id.
//!
//! - `traceparent` (W3C Trace Context): the published events keep the trace id and get this
//!   invocation's span id as their parent. An event without a valid one starts a new trace.
//! - `tracestate`: copied as is.
//! - `correlationid`: copied; an event without one lends its own id, so the first event of a
//!   flow names it.

/// The extensions every published event carries from the event being handled.
pub fn carried(extensions: &[(String, String)], event_id: &str) -> Vec<(String, String)> {
    let get = |name: &str| {
        extensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let span_id = random_hex(16);
    let traceparent = match get("traceparent").and_then(parse_traceparent) {
        Some((trace_id, flags)) => format!("00-{trace_id}-{span_id}-{flags}"),
        None => format!("00-{}-{span_id}-01", random_hex(32)),
    };
    let mut out = vec![("traceparent".to_owned(), traceparent)];
    if let Some(state) = get("tracestate") {
        out.push(("tracestate".to_owned(), state.to_owned()));
    }
    out.push((
        "correlationid".to_owned(),
        get("correlationid").unwrap_or(event_id).to_owned(),
    ));
    out
}

/// The trace id of a traceparent header value, if it is well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    parse_traceparent(traceparent).map(|(trace, _)| trace)
}

/// `(trace id, flags)` of a version-00 traceparent with a non-zero trace id.
fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace, parent, flags] = parts.as_slice() else {
        return None;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    (*version == "00"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0'))
    .then_some((*trace, *flags))
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

    fn ext(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_trace_continues_with_a_new_parent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = carried(
            &ext(&[("traceparent", incoming), ("correlationid", "order-1")]),
            "e-2",
        );
        let traceparent = &out[0].1;
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
    fn a_missing_or_bad_traceparent_starts_a_trace_and_the_id_correlates() {
        for extensions in [
            ext(&[]),
            ext(&[("traceparent", "junk")]),
            ext(&[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )]),
        ] {
            let out = carried(&extensions, "e-1");
            assert!(trace_id(&out[0].1).is_some(), "{out:?}");
            assert_eq!(out.last().unwrap().1, "e-1");
        }
    }
}
