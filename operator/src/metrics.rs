//! The operator's Prometheus metrics, in the text exposition format.
//!
//! Four series are all an operator of the operator needs: how many reconciles ran and how they
//! ended, why the failing ones failed, how long they took, and whether this replica leads.
//! They are few and fixed, so they are kept in atomics and a small map rather than pulling in a
//! metrics framework.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// Upper bounds, in seconds, of the reconcile duration histogram's buckets.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
pub struct Metrics {
    succeeded: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Cumulative counts per bucket (Prometheus buckets are cumulative), then sum and count.
    duration: Mutex<([u64; BUCKETS.len()], f64, u64)>,
    leader: AtomicBool,
}

impl Metrics {
    /// Records one finished reconcile; `error` is the failure's reason, if it failed.
    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        match error {
            None => self.succeeded.fetch_add(1, Ordering::Relaxed),
            Some(reason) => {
                *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        let seconds = took.as_secs_f64();
        let mut duration = self.duration.lock().unwrap_or_else(|e| e.into_inner());
        for (bucket, bound) in duration.0.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        duration.1 += seconds;
        duration.2 += 1;
    }

    /// Reconciles finished so far, whatever their result.
    pub fn reconciles(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ftgo_operator_reconciles_total Reconciles run, by result.");
        let _ = writeln!(out, "# TYPE ftgo_operator_reconciles_total counter");
        let _ = writeln!(
            out,
            "ftgo_operator_reconciles_total{{result=\"success\"}} {}",
            self.succeeded.load(Ordering::Relaxed)
        );
        let _ =
            writeln!(out, "ftgo_operator_reconciles_total{{result=\"error\"}} {}", self.failed.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP ftgo_operator_reconcile_errors_total Failed reconciles, by reason.");
        let _ = writeln!(out, "# TYPE ftgo_operator_reconcile_errors_total counter");
        for (reason, count) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "ftgo_operator_reconcile_errors_total{{reason=\"{reason}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP ftgo_operator_reconcile_duration_seconds How long reconciles take.");
        let _ = writeln!(out, "# TYPE ftgo_operator_reconcile_duration_seconds histogram");
        let (buckets, sum, count) = *self.duration.lock().unwrap_or_else(|e| e.into_inner());
        for (bound, bucket) in BUCKETS.iter().zip(buckets) {
            let _ = writeln!(out, "ftgo_operator_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {bucket}");
        }
        let _ = writeln!(out, "ftgo_operator_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "ftgo_operator_reconcile_duration_seconds_sum {sum}");
        let _ = writeln!(out, "ftgo_operator_reconcile_duration_seconds_count {count}");
        let _ = writeln!(out, "# HELP ftgo_operator_leader Whether this replica holds the leader Lease.");
        let _ = writeln!(out, "# TYPE ftgo_operator_leader gauge");
        let _ = writeln!(out, "ftgo_operator_leader {}", u8::from(self.is_leader()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_reason_and_timed_in_cumulative_buckets() {
        let metrics = Metrics::default();
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
    }
}
