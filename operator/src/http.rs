//! The operator's own HTTP endpoints, for the kubelet and Prometheus:
//!
//! - `GET /healthz`: the process is alive (liveness);
//! - `GET /readyz`: the replica is up, as leader or standby (readiness); the body says which;
//! - `GET /metrics`: [`Metrics`] in the Prometheus text format.
//!
//! A standby is ready too: it is doing its job, which is waiting. Marking it unready would only
//! make a rollout of two replicas wait forever for the second.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::metrics::Metrics;

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn ready(State(metrics): State<Arc<Metrics>>) -> &'static str {
    if metrics.is_leader() { "ok: leader" } else { "ok: standby" }
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render())
}
