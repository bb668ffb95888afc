//! The operator's metrics: OpenTelemetry instruments, as in the services, read out in the
//! Prometheus text format on `/metrics` (`opentelemetry-prometheus`), and also sent over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, as the services' are.
//!
//! Four series are all an operator of the operator needs: how many reconciles ran and how they
//! ended, why the failing ones failed, how long they took, and whether this replica leads.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, MeterProvider, ObservableGauge},
};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Registry, TextEncoder};

/// Upper bounds, in seconds, of the reconcile duration histogram's buckets.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    registry: Registry,
    provider: SdkMeterProvider,
    reconciles: Counter<u64>,
    errors: Counter<u64>,
    duration: Histogram<f64>,
    _leader_gauge: ObservableGauge<u64>,
    leader: Arc<AtomicBool>,
    /// Reconciles finished, for whoever holds the metrics (tests).
    finished: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The instruments, on a meter provider of their own: `/metrics` reads it, and so does an
    /// OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut provider = SdkMeterProvider::builder();
        match opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
        {
            Ok(exporter) => provider = provider.with_reader(exporter),
            Err(e) => tracing::error!(error = %e, "no Prometheus metrics"),
        }
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            match opentelemetry_otlp::MetricExporter::builder().with_http().build() {
                Ok(exporter) => provider = provider.with_reader(PeriodicReader::builder(exporter).build()),
                Err(e) => tracing::warn!(error = %e, "OTLP metric export disabled"),
            }
        }
        let provider = provider.build();
        let meter = provider.meter("ftgo-operator");
        let leader = Arc::new(AtomicBool::new(false));
        let leads = leader.clone();
        let metrics = Self {
            reconciles: meter
                .u64_counter("ftgo_operator_reconciles")
                .with_description("Reconciles run, by result.")
                .build(),
            errors: meter
                .u64_counter("ftgo_operator_reconcile_errors")
                .with_description("Failed reconciles, by reason.")
                .build(),
            duration: meter
                .f64_histogram("ftgo_operator_reconcile_duration")
                .with_unit("s")
                .with_description("How long reconciles take.")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            _leader_gauge: meter
                .u64_observable_gauge("ftgo_operator_leader")
                .with_description("Whether this replica holds the leader Lease.")
                .with_callback(move |observer| observer.observe(u64::from(leads.load(Ordering::Relaxed)), &[]))
                .build(),
            leader,
            registry,
            provider,
            finished: AtomicU64::new(0),
        };
        // Both results are on /metrics from the start, at 0, so a rate over them is defined before
        // the first reconcile (a standby replica may never run one).
        for result in ["success", "error"] {
            metrics.reconciles.add(0, &[KeyValue::new("result", result)]);
        }
        metrics
    }

    /// Records one finished reconcile; `error` is the failure's reason, if it failed.
    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "success" };
        self.reconciles.add(1, &[KeyValue::new("result", result)]);
        if let Some(reason) = error {
            self.errors.add(1, &[KeyValue::new("reason", reason)]);
        }
        self.duration.record(took.as_secs_f64(), &[]);
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Reconciles finished so far, whatever their result.
    pub fn reconciles(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not encode the metrics");
            String::new()
        })
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_reason_and_timed_in_cumulative_buckets() {
        let metrics = Metrics::default();
        let fresh = metrics.render();
        for line in ["ftgo_operator_reconciles_total{result=\"success\"} 0", "ftgo_operator_leader 0"] {
            assert!(fresh.lines().any(|l| l == line), "{line} before any reconcile, in\n{fresh}");
        }
        metrics.reconciled(Duration::from_millis(30), None);
        metrics.reconciled(Duration::from_secs(3), Some("CleanupBlocked"));
        metrics.set_leader(true);
        let text = metrics.render();
        for line in [
            "ftgo_operator_reconciles_total{result=\"success\"} 1",
            "ftgo_operator_reconciles_total{result=\"error\"} 1",
            "ftgo_operator_reconcile_errors_total{reason=\"CleanupBlocked\"} 1",
            "ftgo_operator_reconcile_duration_seconds_bucket{le=\"0.025\"} 0",
            "ftgo_operator_reconcile_duration_seconds_bucket{le=\"0.05\"} 1",
            "ftgo_operator_reconcile_duration_seconds_bucket{le=\"5\"} 2",
            "ftgo_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "ftgo_operator_reconcile_duration_seconds_count 2",
            "ftgo_operator_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(metrics.reconciles(), 2);
    }
}
