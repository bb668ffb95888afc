//! The service catalog: which FTGO services exist, and the facts each one fixes: its binary, its
//! port, its protocol, its database, the gRPC service Fabio routes to it, and the name it reads
//! its configuration under.
//!
//! It is the one place these facts are written. The services name themselves from it, `ftgo-local`
//! starts what it lists, the gateway's default backends come from its ports, and the operator
//! deploys, registers and routes from it. Adding a service starts with an entry here.
//!
//! These facts are fixed by the services themselves, not by the user, so they live in code and
//! not in the operator's `FtgoSystem` spec: a manifest names *which* services run and *how many*,
//! never which port the Order Service listens on.

use ftgo_proto::{accounting, consumer, kitchen, orchestrator, order};
use serde::{Deserialize, Serialize};

/// One of the six FTGO services: `consumer`, `kitchen`, `accounting`, `order`, `orchestrator` or
/// `gateway`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    pub const fn as_str(self) -> &'static str {
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
    pub const fn binary(self) -> &'static str {
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
    pub const fn config_name(self) -> &'static str {
        self.binary()
    }

    pub const fn port(self) -> u16 {
        match self {
            ServiceName::Consumer => 7101,
            ServiceName::Kitchen => 7102,
            ServiceName::Accounting => 7103,
            ServiceName::Order => 7104,
            ServiceName::Orchestrator => 7105,
            ServiceName::Gateway => 8080,
        }
    }

    pub const fn protocol(self) -> Protocol {
        match self {
            ServiceName::Gateway => Protocol::Http,
            _ => Protocol::Grpc,
        }
    }

    /// The service's own database (database per service); the gateway owns no data.
    pub const fn database(self) -> Option<&'static str> {
        match self {
            ServiceName::Gateway => None,
            other => Some(other.as_str()),
        }
    }

    /// The back-end services: those the gateway calls over gRPC, in catalog order.
    pub fn back_end() -> impl Iterator<Item = ServiceName> {
        Self::ALL.into_iter().filter(|s| s.protocol() == Protocol::Grpc)
    }

    /// The fully qualified gRPC service that Fabio routes by path prefix.
    pub const fn grpc_service(self) -> Option<&'static str> {
        match self {
            ServiceName::Consumer => Some(consumer::v1::consumer_service_server::SERVICE_NAME),
            ServiceName::Kitchen => Some(kitchen::v1::kitchen_service_server::SERVICE_NAME),
            ServiceName::Accounting => Some(accounting::v1::accounting_service_server::SERVICE_NAME),
            ServiceName::Order => Some(order::v1::order_service_server::SERVICE_NAME),
            ServiceName::Orchestrator => Some(orchestrator::v1::saga_service_server::SERVICE_NAME),
            ServiceName::Gateway => None,
        }
    }

    /// The `urlprefix-` tags Fabio builds its routes from. gRPC calls are HTTP/2 requests to
    /// `/<package>.<Service>/<Method>`, so a prefix on the service's full name routes exactly
    /// that service; `proto=grpc` makes Fabio speak HTTP/2 to the upstream. The admin service,
    /// which every service with a database serves, is routed by host as well: the caller names
    /// the service in the `dsthost` metadata key, which Fabio's gRPC proxy matches as the host.
    pub fn fabio_tags(self) -> Vec<String> {
        match self.grpc_service() {
            Some(_) => self.fabio_routes().iter().map(|source| format!("urlprefix-{source} proto=grpc")).collect(),
            None => self.fabio_routes().iter().map(|path| format!("urlprefix-{path}")).collect(),
        }
    }

    /// The route sources (`[host]/path` prefixes) Fabio sends to the service, as its
    /// [`fabio_tags`](Self::fabio_tags) ask: a gRPC service's full name and its admin service
    /// under its binary's name as host, or the gateway's API and health check.
    pub fn fabio_routes(self) -> Vec<String> {
        match self.grpc_service() {
            Some(grpc) => {
                let mut routes = vec![format!("/{grpc}")];
                if self.database().is_some() {
                    routes.push(format!("{}/{}", self.binary(), ADMIN_GRPC_SERVICE));
                }
                routes
            }
            None => vec!["/api".to_owned(), HTTP_HEALTH_PATH.to_owned()],
        }
    }
}

/// The admin gRPC service every service with a database serves beside its own (its dead
/// letters).
pub const ADMIN_GRPC_SERVICE: &str = ftgo_proto::admin::v1::dead_letter_service_server::SERVICE_NAME;

/// The operator's binary, which ships as an image beside the services'.
pub const OPERATOR_BINARY: &str = "ftgo-operator";

/// Every workspace binary that ships as a container image: each service's, then the operator's.
pub fn image_binaries() -> impl Iterator<Item = &'static str> {
    ServiceName::ALL.into_iter().map(ServiceName::binary).chain([OPERATOR_BINARY])
}

/// The path an HTTP service (the gateway) answers its health check on.
pub const HTTP_HEALTH_PATH: &str = "/healthz";

/// The Fabio tag that routes the gRPC service `grpc_service` (fully qualified) by path prefix.
pub fn grpc_route_tag(grpc_service: &str) -> String {
    format!("urlprefix-/{grpc_service} proto=grpc")
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
        assert_eq!(
            ServiceName::Order.fabio_tags(),
            [
                "urlprefix-/ftgo.order.v1.OrderService proto=grpc",
                "urlprefix-order-service/ftgo.admin.v1.DeadLetterService proto=grpc"
            ]
        );
        assert_eq!(ServiceName::Orchestrator.fabio_tags()[0], "urlprefix-/ftgo.orchestrator.v1.SagaService proto=grpc");
        assert_eq!(ServiceName::Gateway.fabio_tags(), ["urlprefix-/api", "urlprefix-/healthz"]);
        assert_eq!(
            ServiceName::Order.fabio_routes(),
            ["/ftgo.order.v1.OrderService", "order-service/ftgo.admin.v1.DeadLetterService"]
        );
        assert_eq!(ServiceName::Gateway.fabio_routes(), ["/api", "/healthz"]);
    }

    #[test]
    fn every_back_end_service_owns_a_database_and_a_grpc_service_and_no_two_share_anything() {
        let back_end: Vec<ServiceName> = ServiceName::back_end().collect();
        assert_eq!(back_end.len(), ServiceName::ALL.len() - 1, "all but the gateway");
        for service in &back_end {
            assert!(service.database().is_some() && service.grpc_service().is_some(), "{service}");
        }
        assert_eq!((ServiceName::Gateway.database(), ServiceName::Gateway.protocol()), (None, Protocol::Http));
        let distinct = |values: Vec<String>| values.iter().collect::<std::collections::BTreeSet<_>>().len();
        let every = |fact: fn(ServiceName) -> String| ServiceName::ALL.into_iter().map(fact).collect::<Vec<_>>();
        for facts in
            [every(|s| s.binary().to_owned()), every(|s| s.port().to_string()), every(|s| s.as_str().to_owned())]
        {
            assert_eq!(distinct(facts.clone()), ServiceName::ALL.len(), "{facts:?}");
        }
        assert_eq!(image_binaries().last(), Some(OPERATOR_BINARY));
    }
}
