//! Logs always; OpenTelemetry traces when an OTLP endpoint is configured.
//!
//! Every reconcile is a `tracing` span (with the system's namespace and name), so exporting
//! traces is one more `tracing` layer. It is switched on by the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable and speaks
//! OTLP over HTTP/protobuf; without one nothing is exported, and nothing breaks when the
//! collector is away (the batch exporter drops what it cannot send).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes the spans still buffered when dropped: hold it until the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|key| std::env::var(key).is_ok_and(|v| !v.is_empty()))
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) filters the logs; traces carry
/// the operator's own spans only, not the HTTP client's internals (or the exporter's own
/// requests, which would trace themselves forever).
pub fn init(service_name: &'static str) -> anyhow::Result<Telemetry> {
    let logs = tracing_subscriber::fmt::layer()
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let (traces, provider) = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(EnvFilter::new("ftgo_operator=debug,kube_runtime=info,off"));
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };
    tracing_subscriber::registry().with(logs).with(traces).init();
    Ok(Telemetry { provider })
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("could not flush the last traces: {err}");
        }
    }
}
