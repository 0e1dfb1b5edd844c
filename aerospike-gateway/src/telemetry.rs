//! The gateway's logs and spans.
//!
//! Logs go to stderr, always. Spans (a request, each hit's wait for its group
//! commit, the group commit, each store operation) exist only when an OTLP
//! endpoint is configured: then they continue the caller's W3C trace context
//! (`traceparent`) and go out over OTLP/HTTP in batches, off the request path.
//! Otherwise no layer wants them, so every span callsite is disabled once and
//! for all and a span costs the hot path one check of a cached flag.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use counter_api::paths;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TraceExport;

/// The target of every span the gateway records, and the only one exported.
pub const SPANS: &str = counter_store::SPANS;

/// Owns the span exporter, if any; [`Telemetry::shutdown`] sends what is left.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); spans to `export`, if
/// given.
pub fn init(export: Option<&TraceExport>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs are events; spans are for the exporter, so formatting them for a log
    // line nobody reads costs nothing when tracing is off.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(|meta| meta.is_event()).and(filter));
    let provider = export.map(exporter).transpose()?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("aerospike-gateway"))
            .with_filter(Targets::new().with_target(SPANS, tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .context("installing the log subscriber")?;
    if let Some(export) = export {
        tracing::info!(url = %export.traces_url, "exporting spans over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn exporter(export: &TraceExport) -> anyhow::Result<SdkTracerProvider> {
    // The exporter's HTTP client is reqwest. Built beside the end-to-end tests
    // (`cargo test --workspace`), reqwest gets their rustls without a crypto
    // provider, and building any client then panics, even for plain http://. A
    // process-wide provider keeps the exporter working however the binary was
    // built; if one is installed already, that one stays. (rustls deprecates
    // ring for lacking post-quantum key exchange; exports here are plain HTTP.)
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&export.traces_url)
        .build()
        .with_context(|| format!("setting up span export to {}", export.traces_url))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(export.service_name.clone())
                .build(),
        )
        .build())
}

impl Telemetry {
    /// Sends the spans still buffered; waits at most a few seconds for the
    /// collector. Outside the async runtime: the exporter's client blocks.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(%error, "spans may have been lost at shutdown");
        }
    }
}

/// Middleware: serves each API request inside a server span that continues the
/// caller's trace, as its `traceparent` and `tracestate` headers carry it. Probes
/// and scrapes are not traced.
pub async fn continue_trace(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if [paths::HEALTHZ, paths::READYZ, paths::METRICS].contains(&path) {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(path, MatchedPath::as_str);
    let span = tracing::info_span!(
        target: SPANS,
        "request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        http.route = route,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return next.run(request).await;
    }
    let parent = TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(request.headers()));
    // No caller's trace (or a malformed one): the request starts its own.
    let _ = span.set_parent(parent);
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// What a span link to `span` needs; `None` when tracing is off.
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context().span().span_context().clone();
    context.is_valid().then_some(context)
}

/// The trace a hit of a batch came from, when it is not the request's own: the
/// web tier sends the hits that met in one instance in one call, whose
/// `traceparent` header carries the trace of one of them at most (under Spin
/// 4.0.2, none: Spin replaces it with a trace of its own outgoing call).
pub struct CallerTrace {
    caller: opentelemetry::Context,
    request: SpanContext,
}

impl CallerTrace {
    /// `None` when tracing is off, when `traceparent` is not a valid one, and when
    /// it is in the request's own trace (the request's span is the nearer parent).
    pub fn of_hit(traceparent: &str) -> Option<Self> {
        let request = tracing::Span::current();
        if request.is_disabled() {
            return None;
        }
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let caller = context.span().span_context().clone();
        let request_context = request.context().span().span_context().clone();
        (caller.is_valid() && caller.trace_id() != request_context.trace_id()).then_some(Self {
            caller: context,
            request: request_context,
        })
    }

    /// Makes `span`, just created, a child of the caller's span, linked to the
    /// request that brought it.
    pub fn adopt(self, span: &tracing::Span) {
        let _ = span.set_parent(self.caller);
        span.add_link(self.request);
    }
}
