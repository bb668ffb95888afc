//! The API gateway: FTGO's public HTTP/JSON API (`docs/api.md`) in front of the gRPC services.
//!
//! Each request is translated into calls on the owning service. Every call has a deadline, only
//! idempotent calls are retried, and every backend sits behind its own circuit breaker
//! ([`resilience`]), so one slow or dead service costs its callers a fast error, not a pile-up.
//! The gateway keeps no state of its own: it can be restarted, or run in many copies, at will.

pub mod api;
pub mod backends;
pub mod error;
pub mod idempotency;
pub mod openapi;
pub mod resilience;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use ftgo_catalog::ServiceName;
use ftgo_platform::{
    config::{BaseConfig, Settings},
    runtime::Running,
    service,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use backends::Backends;

/// The gateway in the catalog (`ftgo-catalog`).
pub const NAME: ServiceName = ServiceName::Gateway;
/// The name the gateway's configuration is found under (`config/api-gateway.toml`, Consul KV).
pub const SERVICE: &str = NAME.config_name();

/// The gateway's settings. It has no database and no NATS connection: it only calls services.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// `environment`, `log_level` and `consul`, as every FTGO program has them.
    #[serde(flatten)]
    pub base: BaseConfig,
    pub http: HttpConfig,
    pub backends: BackendsConfig,
    pub resilience: ResilienceConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the gateway listens. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Larger request bodies are refused with 413 before they are read.
    pub max_body_bytes: usize,
}

/// Where each back-end service's gRPC server is, as `http://host:port`, by its catalog name
/// (`[backends] kitchen = "http://..."`, `FTGO_BACKENDS__KITCHEN`). Every back-end service of the
/// catalog needs one, and nothing else may have one: [`Backends::connect`] refuses both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct BackendsConfig(pub BTreeMap<ServiceName, String>);

impl BackendsConfig {
    /// Every back-end service at the address `address` gives it.
    pub fn each(address: impl Fn(ServiceName) -> String) -> Self {
        Self(ServiceName::back_end().map(|service| (service, address(service))).collect())
    }

    /// The address of `service`'s gRPC server.
    pub fn address(&self, service: ServiceName) -> Option<&str> {
        self.0.get(&service).map(String::as_str)
    }

    pub fn set(&mut self, service: ServiceName, address: impl Into<String>) {
        self.0.insert(service, address.into());
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResilienceConfig {
    /// The deadline of one gRPC call, sent to the server as `grpc-timeout` too.
    #[serde(with = "ftgo_platform::config::seconds")]
    pub call_timeout: Duration,
    /// How long a connection attempt to a backend may take.
    #[serde(with = "ftgo_platform::config::seconds")]
    pub connect_timeout: Duration,
    /// Consecutive failures (unavailable, deadline exceeded) that open a backend's circuit.
    pub breaker_failures: u32,
    /// The longest an open circuit refuses calls before it lets one trial call through. It opens
    /// for 250 ms first (or this, if shorter), and each failed trial doubles that up to this.
    #[serde(with = "ftgo_platform::config::seconds")]
    pub breaker_open_for: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base: BaseConfig::local(),
            http: HttpConfig { listen: "127.0.0.1:8080".parse().expect("static address"), max_body_bytes: 64 * 1024 },
            // Each service on this machine at its catalog port.
            backends: BackendsConfig::each(|service| format!("http://127.0.0.1:{}", service.port())),
            resilience: ResilienceConfig {
                call_timeout: Duration::from_secs(3),
                connect_timeout: Duration::from_secs(1),
                breaker_failures: 5,
                breaker_open_for: Duration::from_secs(2),
            },
        }
    }
}

impl Settings for Config {
    fn base(&self) -> &BaseConfig {
        &self.base
    }
}

/// Binds the HTTP listener and serves the API until `shutdown`; returns once it is listening.
/// Backends are connected lazily, so the gateway starts (and answers `/healthz`) while the
/// services are still coming up.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let backends = Backends::connect(&config.backends, &config.resilience)?;
    let router = api::router(backends.clone(), config.http.max_body_bytes);
    let circuits = backends.clone().observe_circuits();
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    let mut running = Running::new(addr, shutdown.clone());
    if !config.base.consul.addr.is_empty() {
        // An open circuit tries its backend again as soon as Consul sees an instance back.
        backends.follow_health(&mut running, &config.base.consul.addr)?;
    }
    running.spawn("http server", async move {
        // The circuit gauge reports for as long as the server runs.
        let _circuits = circuits;
        axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
        Ok(())
    });
    // Live: the log level, deadlines and breaker thresholds. Registered, Fabio sends every public
    // path to the gateway: the API and its health check.
    service::join_consul(&mut running, NAME, addr, config.clone(), move |live: Config| {
        backends.configure(&live.resilience);
        tracing::info!(resilience = ?live.resilience, "live configuration applied");
    })
    .await?;
    tracing::info!(%addr, "{SERVICE} serving");
    Ok(running)
}
