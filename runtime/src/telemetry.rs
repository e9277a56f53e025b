//! Invocation spans exported with OpenTelemetry (OTLP over HTTP), off unless
//! `eddy up --otlp-endpoint` names a collector.
//!
//! Each invocation already has its place in a W3C trace ([`InvocationSpan`]): the trace and
//! parent span come from the event's `traceparent`, and the span id is the one its published
//! events name as their parent. Exporting therefore builds the span after the fact, with those
//! exact ids and the measured start and end, so what a collector shows and what travels on the
//! streams agree. That is why spans are handed to the SDK's batch processor as finished span
//! data rather than made with a tracer (whose ids come from its own generator). The processor
//! exports from its own thread; a collector that is down costs dropped spans, never a slower
//! invocation.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor as _};

use crate::engine::propagation::InvocationSpan;

/// The OTLP/HTTP path spans are posted to under the collector's base URL.
pub const TRACES_PATH: &str = "/v1/traces";
/// How long stopping waits for the last spans to be sent.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How spans are encoded for the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (the OTLP default).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[value(name = "http/json")]
    HttpJson,
}

/// What one finished invocation contributes to its trace.
pub struct FinishedInvocation<'a> {
    /// The invocation's ids in its trace.
    pub span: &'a InvocationSpan,
    /// The function.
    pub function: &'a str,
    /// Its deployed version, if any.
    pub version: Option<u32>,
    /// The event's id and type.
    pub event_id: &'a str,
    /// The event's type.
    pub event_type: &'a str,
    /// The stream and entry it came from.
    pub stream: &'a str,
    /// The entry id.
    pub entry_id: &'a str,
    /// The attempt.
    pub attempt: u32,
    /// done, rejected or failed.
    pub outcome: &'a str,
    /// The status returned, if any.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<&'a str>,
    /// When it ended and how long it ran.
    pub ended: SystemTime,
    /// How long it ran.
    pub duration: Duration,
}

/// Exports invocation spans, or does nothing when no collector is configured; cheap to clone.
#[derive(Clone, Default)]
pub struct SpanExport {
    inner: Option<Arc<Exporting>>,
}

struct Exporting {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport")
            .field("enabled", &self.enabled())
            .finish()
    }
}

impl SpanExport {
    /// No export.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Exports to the collector at `endpoint` (its http:// base URL, e.g.
    /// `http://localhost:4318`, or the full traces URL). Call outside an async runtime: the
    /// HTTP client is blocking.
    pub fn otlp(endpoint: &str, protocol: OtlpProtocol, host: &str) -> anyhow::Result<Self> {
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_protocol(match protocol {
                OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
                OtlpProtocol::HttpJson => Protocol::HttpJson,
            })
            .build()
            .with_context(|| format!("cannot set up OTLP export to {url}"))?;
        let resource = Resource::builder()
            .with_service_name("eddy")
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", host.to_owned()),
            ])
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource);
        tracing::info!(%url, "exporting invocation spans with OTLP");
        Ok(Self {
            inner: Some(Arc::new(Exporting {
                processor,
                scope: InstrumentationScope::builder("eddy")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            })),
        })
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Exports the span of one finished invocation (if its trace is sampled).
    pub fn finished(&self, inv: &FinishedInvocation<'_>) {
        let Some(exporting) = &self.inner else {
            return;
        };
        let ids = inv.span;
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(&ids.trace_id),
            SpanId::from_hex(&ids.span_id),
        ) else {
            return;
        };
        if !ids.sampled() {
            return;
        }
        let parent_span_id = ids
            .parent_span_id
            .as_deref()
            .and_then(|p| SpanId::from_hex(p).ok());
        let mut attributes = vec![
            KeyValue::new("eddy.function", inv.function.to_owned()),
            KeyValue::new("eddy.event.id", inv.event_id.to_owned()),
            KeyValue::new("eddy.event.type", inv.event_type.to_owned()),
            KeyValue::new("eddy.attempt", i64::from(inv.attempt)),
            KeyValue::new("eddy.outcome", inv.outcome.to_owned()),
            KeyValue::new("messaging.system", "redis"),
            KeyValue::new("messaging.destination.name", inv.stream.to_owned()),
            KeyValue::new("messaging.message.id", inv.entry_id.to_owned()),
        ];
        if let Some(version) = inv.version {
            attributes.push(KeyValue::new("eddy.function.version", i64::from(version)));
        }
        if let Some(status) = inv.status {
            attributes.push(KeyValue::new("eddy.status", i64::from(status)));
        }
        exporting.processor.on_end(SpanData {
            span_context: SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent_span_id.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: parent_span_id.is_some(),
            span_kind: SpanKind::Consumer,
            name: Cow::Owned(format!("process {}", inv.function)),
            start_time: inv.ended.checked_sub(inv.duration).unwrap_or(inv.ended),
            end_time: inv.ended,
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: if inv.outcome == "failed" {
                Status::error(inv.error.unwrap_or("failed").to_owned())
            } else {
                Status::Unset
            },
            instrumentation_scope: exporting.scope.clone(),
        });
    }

    /// Sends the spans still queued; call outside an async runtime.
    pub fn shutdown(&self) {
        if let Some(exporting) = &self.inner
            && let Err(error) = exporting.processor.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(%error, "flushing invocation spans failed");
        }
    }
}

/// The traces URL for a collector `endpoint`: its base URL gets [`TRACES_PATH`].
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.starts_with("https://") {
        // The exporter is built without a TLS stack (it would double the build): say so now
        // rather than drop every span later.
        anyhow::bail!(
            "--otlp-endpoint {endpoint:?}: https is not supported; send spans over http to a \
             collector or agent next to the host (e.g. http://localhost:4318), which can \
             forward them over TLS"
        );
    }
    if !endpoint.starts_with("http://") {
        anyhow::bail!(
            "--otlp-endpoint {endpoint:?}: expected the http:// URL of an OTLP/HTTP collector, \
             e.g. http://localhost:4318"
        );
    }
    Ok(if endpoint.ends_with(TRACES_PATH) {
        endpoint.to_owned()
    } else {
        format!("{endpoint}{TRACES_PATH}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://localhost:4318").unwrap(),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c.example/v1/traces/").unwrap(),
            "http://c.example/v1/traces"
        );
        let error = traces_url("https://c.example").unwrap_err().to_string();
        assert!(error.contains("https is not supported"), "{error}");
        let error = traces_url("localhost:4318").unwrap_err().to_string();
        assert!(error.contains("--otlp-endpoint"), "{error}");
    }
}
