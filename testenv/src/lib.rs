//! Real infrastructure for FTGO's tests and local runs.
//!
//! Every server FTGO depends on is started here as a private child process: its own temporary
//! directory, its own free ports on 127.0.0.1, a readiness check before it is handed out, and a
//! clean stop when the handle is dropped, even when the test panics (see [`process`]).
//!
//! | server | type | ready when |
//! | --- | --- | --- |
//! | Postgres | [`Postgres`] | a connection succeeds; [`Postgres::create_database`] gives each test its own database |
//! | NATS with JetStream | [`Nats`] | `/healthz?js-enabled-only=true` answers |
//! | Consul dev agent | [`Consul`] | a leader is elected and the node is in the catalog |
//! | Fabio | [`Fabio`] | its admin `/health` answers |
//! | etcd + kube-apiserver | [`KubeControlPlane`] | `/readyz` answers `ok` |
//! | container images (no Docker daemon) | [`images::ImageSpec`] | [`images::build`] wrote its OCI archive, for `ctr images import` |
//!
//! The binaries come from `just infra` (see `infra/install.sh`); [`host::binary`] says where it
//! looked when one is missing.

pub mod cluster;
pub mod consul;
pub mod fabio;
pub mod foreground;
pub mod host;
pub mod images;
pub mod kube;
pub mod nats;
pub mod netns;
mod pki;
pub mod postgres;
pub mod process;
pub mod snapshot;

pub use cluster::KubeCluster;
pub use consul::Consul;
pub use fabio::Fabio;
pub use kube::KubeControlPlane;
pub use nats::Nats;
pub use postgres::{Durability, Postgres, TestDatabase};

/// Installs a `tracing` subscriber for tests once (`RUST_LOG` filters; default `warn`), so server
/// start-up problems are visible in a failing test's output.
pub fn init_test_tracing() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Polls `check` every 100 ms until it returns `Some`, and panics naming `what` once `timeout`
/// has passed: the one bounded wait every test uses for what happens asynchronously.
pub async fn eventually<T>(what: &str, timeout: std::time::Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
