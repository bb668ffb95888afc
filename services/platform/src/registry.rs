//! Service registration in Consul (the seed's "service registry"): a service that is told to
//! (`consul.register = true`, as `just up` does) registers itself when it starts serving, with a
//! health check Consul runs against it and the `urlprefix-` tags from which Fabio builds its
//! routes; it deregisters when it stops. On Kubernetes the operator registers the endpoints
//! instead, and services leave `consul.register` off.
//!
//! The calls go through the platform's one Consul client ([`crate::consul`]).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use ftgo_catalog::{Protocol, ServiceName};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{consul::Consul, runtime::Running};

/// How Consul decides whether an instance is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `grpc.health.v1.Health/Check` on the instance's address.
    Grpc,
    /// An HTTP GET on this path answering 2xx.
    Http(&'static str),
}

/// One instance of a service, as Consul and Fabio should know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The service's name in Consul: its binary's name (`order-service`).
    pub name: String,
    pub addr: SocketAddr,
    /// Fabio route tags, e.g. `urlprefix-/ftgo.order.v1.OrderService proto=grpc`.
    pub tags: Vec<String>,
    pub check: HealthCheck,
}

impl Registration {
    /// A gRPC service reached through Fabio's gRPC listener by its fully qualified gRPC service
    /// names (every call's path starts with `/<package>.<Service>/`).
    pub fn grpc(name: &str, addr: SocketAddr, grpc_services: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            tags: grpc_services.iter().map(|s| ftgo_catalog::grpc_route_tag(s)).collect(),
            check: HealthCheck::Grpc,
        }
    }

    /// An instance of a catalogued service: its binary's name, its Fabio tags, and the health
    /// check its protocol calls for.
    pub fn of(service: ServiceName, addr: SocketAddr) -> Self {
        Self {
            name: service.binary().to_owned(),
            addr,
            tags: service.fabio_tags(),
            check: match service.protocol() {
                Protocol::Grpc => HealthCheck::Grpc,
                Protocol::Http => HealthCheck::Http(ftgo_catalog::HTTP_HEALTH_PATH),
            },
        }
    }

    /// Unique per instance, stable across restarts on the same address, so a restarted instance
    /// replaces its own stale registration instead of adding a second one.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.name, self.addr.ip(), self.addr.port())
    }

    fn body(&self) -> Value {
        let check = match &self.check {
            HealthCheck::Grpc => json!({"GRPC": self.addr.to_string(), "GRPCUseTLS": false}),
            HealthCheck::Http(path) => json!({"HTTP": format!("http://{}{path}", self.addr)}),
        };
        let mut check = check;
        check["Interval"] = json!("1s");
        check["Timeout"] = json!("1s");
        // An instance registers once it serves (its listener bound, its database and NATS
        // connected), so it starts out passing: otherwise Consul's first check, up to an interval
        // later, would keep a restarted instance out of Fabio's routes for that long.
        check["Status"] = json!("passing");
        // An instance that died without deregistering is removed after a minute of failing.
        check["DeregisterCriticalServiceAfter"] = json!("1m");
        json!({
            "ID": self.id(),
            "Name": self.name,
            "Address": self.addr.ip().to_string(),
            "Port": self.addr.port(),
            "Tags": self.tags,
            "Check": check,
        })
    }
}

/// Registers `registration` now (failing the start-up if Consul refuses), keeps it registered
/// while the service runs (re-registering if the agent forgot it), and deregisters it on
/// shutdown, as one of the service's tasks.
pub async fn register_while_running(
    running: &mut Running,
    consul_addr: &str,
    registration: Registration,
) -> Result<()> {
    let agent = Consul::new(consul_addr)?;
    agent
        .agent_register(&registration.body())
        .await
        .with_context(|| format!("registering {} in Consul", registration.id()))?;
    tracing::info!(id = %registration.id(), consul = consul_addr, "registered in Consul");
    let shutdown: CancellationToken = running.shutdown_token();
    running.spawn("consul registration", async move {
        let id = registration.id();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {
                    match agent.agent_has_service(&id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(%id, "Consul forgot this instance; registering again");
                            if let Err(e) = agent.agent_register(&registration.body()).await {
                                tracing::warn!(error = %format!("{e:#}"), "re-registration failed; will retry");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "Consul is unreachable; will retry"),
                    }
                }
            }
        }
        // Consul being gone at shutdown is no reason to fail the shutdown: its health check
        // would drop the instance anyway.
        if let Err(e) = agent.agent_deregister(&id).await {
            tracing::warn!(error = %format!("{e:#}"), "could not deregister");
        } else {
            tracing::info!(%id, "deregistered from Consul");
        }
        Ok(())
    });
    Ok(())
}
