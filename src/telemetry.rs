//! Logs and traces: one subscriber builder, one guard that flushes the exporter on shutdown, and the W3C
//! trace-context glue for incoming gRPC metadata and outgoing upstream requests.

use crate::config::{LogFormat, TelemetryConfig};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, Targets},
    fmt::MakeWriter,
    layer::SubscriberExt,
    registry::LookupSpan,
};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global subscriber is already set")]
    AlreadySet,
}

/// Flushes and stops the trace exporter when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    flush_timeout: std::time::Duration,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Errors here only mean some spans were not exported; nothing is left to tell.
            let _ = provider.shutdown_with_timeout(self.flush_timeout);
        }
    }
}

/// Installs the process-wide subscriber: logs to stdout, and spans to OTLP when an endpoint is set.
/// Without one, spans still get real W3C trace context (see [`subscriber`]), so `traceparent` goes
/// upstream either way.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(endpoint, &config.service_name)?),
        None => None,
    };
    let subscriber = subscriber(config, std::io::stdout, provider.as_ref());
    tracing::subscriber::set_global_default(subscriber).map_err(|_| TelemetryError::AlreadySet)?;
    Ok(TelemetryGuard {
        provider,
        flush_timeout: std::time::Duration::from_millis(config.flush_timeout_ms),
    })
}

/// The subscriber costd runs with, writing logs to `writer` and spans to `tracer_provider` if given.
/// Tests build theirs here too, with a capture writer and an in-memory exporter.
///
/// The OpenTelemetry layer is always installed: without a provider of the caller's, an SDK provider
/// with no exporter gives every span its trace and span ids (continuing the caller's trace), which is
/// what the `traceparent` sent upstream is made of. Nothing is exported then.
pub fn subscriber<W>(
    config: &TelemetryConfig,
    writer: W,
    tracer_provider: Option<&SdkTracerProvider>,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        || EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // The tracer keeps its provider alive for as long as the subscriber lives.
    let tracer = match tracer_provider {
        Some(provider) => provider.tracer("costd"),
        None => SdkTracerProvider::builder().build().tracer("costd"),
    };
    // costd's own spans carry the trace context upstream, so they are traced whatever the log level
    // (a quieter log must not cut the trace).
    let own_spans = Targets::new().with_target("costd", tracing::Level::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter().or(own_spans));
    tracing_subscriber::registry()
        .with(otel)
        .with(log_layer(config.log_format, writer).with_filter(filter()))
}

fn log_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    }
}

fn otlp_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build())
}

/// Makes `span` a child of the W3C `traceparent` carried by incoming headers, when there is one.
pub fn continue_remote_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderCarrier(HeaderRef::Read(headers)));
    if opentelemetry::trace::TraceContextExt::has_active_span(&parent) {
        // Fails only when the span is disabled, in which case there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// Adds the `traceparent` of `span` to outgoing headers, and its `tracestate` when that is not empty
/// (W3C Trace Context: an empty `tracestate` is not to be sent).
pub fn inject_trace_context(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context: Context = span.context();
    TraceContextPropagator::new()
        .inject_context(&context, &mut HeaderCarrier(HeaderRef::Write(headers)));
}

enum HeaderRef<'a> {
    Read(&'a http::HeaderMap),
    Write(&'a mut http::HeaderMap),
}

struct HeaderCarrier<'a>(HeaderRef<'a>);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let headers: &http::HeaderMap = match &self.0 {
            HeaderRef::Read(headers) => headers,
            HeaderRef::Write(headers) => headers,
        };
        headers.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        match &self.0 {
            HeaderRef::Read(headers) => headers.keys().map(|k| k.as_str()).collect(),
            HeaderRef::Write(headers) => headers.keys().map(|k| k.as_str()).collect(),
        }
    }
}

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if key == "tracestate" && value.is_empty() {
            return;
        }
        if let HeaderRef::Write(headers) = &mut self.0
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            )
        {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn config(log_level: &str) -> TelemetryConfig {
        TelemetryConfig {
            log_level: log_level.to_string(),
            ..TelemetryConfig::default()
        }
    }

    /// Headers an upstream request made inside a costd span gets, under a subscriber without an
    /// exporter, continuing `incoming` when it carries a trace.
    fn outgoing(log_level: &str, incoming: &[(&str, &str)]) -> http::HeaderMap {
        let subscriber = subscriber(&config(log_level), std::io::sink, None);
        tracing::subscriber::with_default(subscriber, || {
            let mut caller = http::HeaderMap::new();
            for (name, value) in incoming {
                caller.insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            let span = tracing::info_span!("upstream request");
            continue_remote_trace(&span, &caller);
            let mut headers = http::HeaderMap::new();
            inject_trace_context(&span, &mut headers);
            headers
        })
    }

    fn parts(headers: &http::HeaderMap) -> Vec<String> {
        let traceparent = headers
            .get("traceparent")
            .expect("a traceparent without any exporter")
            .to_str()
            .unwrap();
        traceparent.split('-').map(str::to_string).collect()
    }

    #[test]
    fn a_span_has_a_trace_context_without_an_exporter_even_when_logs_are_quiet() {
        for level in ["info", "warn", "off"] {
            let headers = outgoing(level, &[]);
            let ids = parts(&headers);
            assert_eq!(ids.len(), 4, "{ids:?}");
            assert_eq!(ids[0], "00");
            assert_ne!(ids[1], "0".repeat(32), "a real trace id at level {level}");
            assert_ne!(ids[2], "0".repeat(16));
            assert!(
                headers.get("tracestate").is_none(),
                "an empty tracestate is not sent"
            );
        }
    }

    #[test]
    fn the_callers_trace_and_tracestate_continue() {
        let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
        let headers = outgoing(
            "warn",
            &[
                ("traceparent", &traceparent),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        );
        let ids = parts(&headers);
        assert_eq!(ids[1], TRACE_ID);
        assert_ne!(
            ids[2], "00f067aa0ba902b7",
            "a span of its own in that trace"
        );
        assert_eq!(
            headers.get("tracestate").map(|v| v.to_str().unwrap()),
            Some("congo=t61rcWkgMzE")
        );
        let without_state = outgoing("info", &[("traceparent", &traceparent)]);
        assert_eq!(parts(&without_state)[1], TRACE_ID);
        assert!(without_state.get("tracestate").is_none());
    }
}
