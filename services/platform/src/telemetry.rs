//! Logs and traces for every FTGO binary (the design's observability): structured logs filtered
//! by `log_level`, and OpenTelemetry traces that follow one order across every hop.
//!
//! The trace context travels in W3C `traceparent` headers: HTTP into the gateway, gRPC metadata
//! from the gateway to a service, and NATS message headers from an outbox to the consumer that
//! handles the message. So the span of the Kitchen handling `CreateTicket` is a descendant of the
//! gateway's `POST /api/orders`, though the saga ran through three services and the outbox between.
//!
//! Metrics (requests, saga outcomes and durations, breaker states, message outcomes, outbox lag)
//! are OpenTelemetry instruments from [`meter`], exported the same way.
//!
//! Spans and metrics are exported over OTLP (HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard
//! variable), in batches, off the request path; when it is not set, or the collector is down,
//! nothing is exported and nothing else changes.

use std::{collections::BTreeMap, sync::OnceLock};

use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
    propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry, filter::LevelFilter, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

/// Changes the log filter of the running process (live configuration). Set once, by [`install`].
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Keeps the tracer provider alive; dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops exporting spans"]
pub struct Telemetry {
    provider: SdkTracerProvider,
    meters: Option<SdkMeterProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
        if let Some(meters) = &self.meters {
            let _ = meters.shutdown();
        }
    }
}

/// The meter every FTGO instrument comes from. Until a meter provider is installed (no OTLP
/// endpoint), instruments are no-ops.
pub fn meter() -> opentelemetry::metrics::Meter {
    global::meter("ftgo")
}

/// Makes `provider` the source of every instrument created after this call (tests pass one with
/// an in-memory exporter).
pub fn install_meter_provider(provider: &SdkMeterProvider) {
    global::set_meter_provider(provider.clone());
}

/// Installs logging and tracing for the binary `service`. `log_level` filters the logs (a
/// `tracing` filter, overridden by `RUST_LOG`); spans are recorded at `info` and above whatever
/// the log level, so a quiet service still carries the trace along.
pub fn init(service: &str, log_level: &str) -> Telemetry {
    let resource = Resource::builder().with_service_name(service.to_owned()).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meters = None;
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("{service}: OTLP span export disabled: {e}"),
        }
        match opentelemetry_otlp::MetricExporter::builder().with_http().build() {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_resource(resource)
                    .with_reader(PeriodicReader::builder(exporter).build())
                    .build();
                install_meter_provider(&provider);
                meters = Some(provider);
            }
            Err(e) => eprintln!("{service}: OTLP metric export disabled: {e}"),
        }
    }
    let provider = builder.build();
    install(&provider, log_level);
    Telemetry { provider, meters }
}

/// Installs the subscriber with `provider` as the tracer (tests pass one with an in-memory
/// exporter). Does nothing if a subscriber is already installed.
pub fn install(provider: &SdkTracerProvider, log_level: &str) {
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log_level));
    let (filter, handle) = reload::Layer::new(filter);
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("ftgo")).with_filter(LevelFilter::INFO);
    // The log filter applies to the log lines only; spans reach the tracer at `info` whatever
    // the log level, so a quiet service still carries every trace along.
    let installed = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        .with(traces)
        .try_init();
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Replaces the log filter, e.g. from `info` to `ftgo_order_service=debug,info`. `RUST_LOG`, when
/// set, is the operator's explicit choice and wins over configuration.
pub fn set_log_level(log_level: &str) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let filter = EnvFilter::try_new(log_level).map_err(|e| anyhow::anyhow!("log_level {log_level:?}: {e}"))?;
    if let Some(handle) = LOG_FILTER.get() {
        handle.reload(filter)?;
        tracing::info!(log_level, "log level changed");
    }
    Ok(())
}

/// The trace context of the current span, as headers to send along (`traceparent`, ...).
pub fn current_context_headers() -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut MapCarrier(&mut headers)));
    headers
}

/// Makes `span` a child of the trace context carried by `headers` (if any).
pub fn set_parent_from(span: &tracing::Span, headers: &dyn Extractor) {
    let parent: Context = global::get_text_map_propagator(|propagator| propagator.extract(headers));
    // Fails only when no OpenTelemetry layer is installed, and then there is nothing to link.
    let _ = span.set_parent(parent);
}

struct MapCarrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// HTTP headers (and gRPC metadata, which travels as HTTP/2 headers) as a trace context carrier.
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// NATS message headers as a trace context carrier.
pub struct NatsHeaders<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}
