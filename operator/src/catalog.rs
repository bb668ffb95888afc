//! What the operator knows about each FTGO service: its binary, its port, its database, its
//! configuration name and the gRPC service Fabio routes to it.
//!
//! These facts are fixed by the services themselves, not by the user, so they live in code and
//! not in the `FtgoSystem` spec: a manifest names *which* services run and *how many*, never
//! which port the order service listens on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One of the six FTGO services: `consumer`, `kitchen`, `accounting`, `order`, `orchestrator` or
/// `gateway`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Consumer,
    Kitchen,
    Accounting,
    Order,
    Orchestrator,
    Gateway,
}

/// How clients reach a service: the gRPC services by gRPC (probed with `grpc.health.v1`), the
/// gateway by HTTP (probed with `GET /healthz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl ServiceName {
    /// Every service, in the order a reader meets them in the saga.
    pub const ALL: [ServiceName; 6] = [
        ServiceName::Consumer,
        ServiceName::Kitchen,
        ServiceName::Accounting,
        ServiceName::Order,
        ServiceName::Orchestrator,
        ServiceName::Gateway,
    ];

    /// The name in manifests, labels and child object names.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Consumer => "consumer",
            ServiceName::Kitchen => "kitchen",
            ServiceName::Accounting => "accounting",
            ServiceName::Order => "order",
            ServiceName::Orchestrator => "orchestrator",
            ServiceName::Gateway => "gateway",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The binary, which is also the image name and the `app.kubernetes.io/name` label.
    pub fn binary(self) -> &'static str {
        match self {
            ServiceName::Gateway => "api-gateway",
            ServiceName::Consumer => "consumer-service",
            ServiceName::Kitchen => "kitchen-service",
            ServiceName::Accounting => "accounting-service",
            ServiceName::Order => "order-service",
            ServiceName::Orchestrator => "orchestrator-service",
        }
    }

    /// The name the service reads its settings under: `config/<name>.toml` and the Consul KV key
    /// `ftgo/config/<name>`. It happens to equal the binary's name for every service.
    pub fn config_name(self) -> &'static str {
        self.binary()
    }

    pub fn port(self) -> u16 {
        match self {
            ServiceName::Consumer => 7101,
            ServiceName::Kitchen => 7102,
            ServiceName::Accounting => 7103,
            ServiceName::Order => 7104,
            ServiceName::Orchestrator => 7105,
            ServiceName::Gateway => 8080,
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            ServiceName::Gateway => Protocol::Http,
            _ => Protocol::Grpc,
        }
    }

    /// The service's own database (database per service); the gateway owns no data.
    pub fn database(self) -> Option<&'static str> {
        match self {
            ServiceName::Gateway => None,
            other => Some(other.as_str()),
        }
    }

    /// The fully qualified gRPC service that Fabio routes by path prefix.
    pub fn grpc_service(self) -> Option<&'static str> {
        match self {
            ServiceName::Consumer => Some("ftgo.consumer.v1.ConsumerService"),
            ServiceName::Kitchen => Some("ftgo.kitchen.v1.KitchenService"),
            ServiceName::Accounting => Some("ftgo.accounting.v1.AccountingService"),
            ServiceName::Order => Some("ftgo.order.v1.OrderService"),
            ServiceName::Orchestrator => Some("ftgo.orchestrator.v1.SagaService"),
            ServiceName::Gateway => None,
        }
    }

    /// The `urlprefix-` tags Fabio builds its routes from. gRPC calls are HTTP/2 requests to
    /// `/<package>.<Service>/<Method>`, so a prefix on the service's full name routes exactly
    /// that service; `proto=grpc` makes Fabio speak HTTP/2 to the upstream.
    pub fn fabio_tags(self) -> Vec<String> {
        match self.grpc_service() {
            Some(grpc) => vec![format!("urlprefix-/{grpc} proto=grpc")],
            None => vec!["urlprefix-/api".to_owned(), "urlprefix-/healthz".to_owned()],
        }
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for service in ServiceName::ALL {
            let json = serde_json::to_value(service).unwrap();
            assert_eq!(json, service.as_str());
            assert_eq!(ServiceName::parse(service.as_str()), Some(service));
        }
        assert_eq!(ServiceName::parse("payments"), None);
    }

    #[test]
    fn grpc_services_are_routed_by_their_full_grpc_name() {
        assert_eq!(ServiceName::Order.fabio_tags(), ["urlprefix-/ftgo.order.v1.OrderService proto=grpc"]);
        assert_eq!(ServiceName::Orchestrator.fabio_tags(), ["urlprefix-/ftgo.orchestrator.v1.SagaService proto=grpc"]);
        assert_eq!(ServiceName::Gateway.fabio_tags(), ["urlprefix-/api", "urlprefix-/healthz"]);
    }
}
