//! Server-side discovery on Kubernetes, built purely: which service instances Consul should
//! hold for a system (so Fabio routes to them), and which Fabio route overrides.
//!
//! Locally each service registers itself; in a cluster the operator does it for them, from the
//! EndpointSlices Kubernetes keeps for each Service. An endpoint's readiness becomes its
//! Consul check status, so Fabio stops routing to a pod the moment Kubernetes would.

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use ftgo_platform::consul::{CatalogCheck, CatalogRegistration as Registration, CatalogService};

use crate::{
    controller::validate::System,
    names::{node_name, system_tag},
};
use ftgo_catalog::ServiceName;

/// One instance of a service, as Kubernetes reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Stable for the instance's lifetime: the pod name, or the address when there is none.
    pub key: String,
    pub address: String,
    pub port: u16,
    pub ready: bool,
    /// Says where the instance came from, for the check's output.
    pub source: String,
}

/// The instances of one service: every endpoint address in its EndpointSlices, or, when there
/// are none (no EndpointSlice controller, as in a bare API server), the Service's cluster IP,
/// ready when the Deployment has an available replica.
pub fn instances(
    service: ServiceName,
    slices: &[EndpointSlice],
    kube_service: Option<&Service>,
    available_replicas: i32,
) -> Vec<Instance> {
    let mut instances = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find_map(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(service.port());
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(address) = endpoint.addresses.first() else { continue };
            let conditions = endpoint.conditions.as_ref();
            // The EndpointSlice API: an unknown `ready` is to be read as ready.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                && !conditions.and_then(|c| c.terminating).unwrap_or(false);
            let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.clone());
            instances.push(Instance {
                key: pod.clone().unwrap_or_else(|| address.replace([':', '.'], "-")),
                address: address.clone(),
                port,
                ready,
                source: match pod {
                    Some(pod) => format!("pod {pod}"),
                    None => format!("endpoint {address}"),
                },
            });
        }
    }
    if instances.is_empty()
        && let Some(ip) = kube_service.and_then(|s| s.spec.as_ref()).and_then(|s| s.cluster_ip.clone())
        && ip != "None"
    {
        instances.push(Instance {
            key: "service".to_owned(),
            address: ip,
            port: service.port(),
            ready: available_replicas > 0,
            source: format!("Service cluster IP ({available_replicas} replicas available)"),
        });
    }
    instances.sort_by(|a, b| a.key.cmp(&b.key));
    instances
}

/// The registrations `instances` call for.
pub fn registrations(system: &System, instances: &BTreeMap<ServiceName, Vec<Instance>>) -> Vec<Registration> {
    let node = node_name(system);
    let meta = BTreeMap::from([
        ("external-source".to_owned(), "kubernetes".to_owned()),
        ("ftgo-system".to_owned(), format!("{}/{}", system.namespace, system.name)),
    ]);
    let mut registrations = Vec::new();
    for (service, instances) in instances {
        for instance in instances {
            let id = format!("{}-{service}-{}", system.name, instance.key);
            let mut tags = service.fabio_tags();
            tags.push(system_tag(system));
            registrations.push(Registration {
                node: node.clone(),
                address: "127.0.0.1".to_owned(),
                node_meta: meta.clone(),
                service: CatalogService {
                    id: id.clone(),
                    service: service.binary().to_owned(),
                    address: instance.address.clone(),
                    port: instance.port,
                    tags,
                    meta: meta.clone(),
                },
                checks: vec![CatalogCheck {
                    check_id: format!("{id}:ready"),
                    name: "Kubernetes readiness".to_owned(),
                    status: if instance.ready { "passing" } else { "critical" }.to_owned(),
                    service_id: id,
                    output: format!("{} is {}", instance.source, if instance.ready { "ready" } else { "not ready" }),
                }],
                skip_node_update: true,
            });
        }
    }
    registrations
}

/// What to write to make Consul hold `desired`: the registrations that are missing or differ
/// (in address, port, tags, meta or check status), and the service IDs to remove. Equal
/// entries are left alone, so a restarted operator writes nothing and no check flaps.
pub fn plan<'a>(
    desired: &'a [Registration],
    registered: &[CatalogService],
    checks: &[CatalogCheck],
) -> (Vec<&'a Registration>, Vec<String>) {
    let tags_sorted = |s: &CatalogService| {
        let mut s = s.clone();
        s.tags.sort();
        s
    };
    let write = desired
        .iter()
        .filter(|d| {
            let same_service = registered.iter().any(|r| tags_sorted(r) == tags_sorted(&d.service));
            let same_checks = d.checks.iter().all(|want| {
                checks.iter().any(|have| {
                    have.check_id == want.check_id && have.status == want.status && have.service_id == want.service_id
                })
            });
            !(same_service && same_checks)
        })
        .collect();
    let remove =
        registered.iter().filter(|r| !desired.iter().any(|d| d.service.id == r.id)).map(|r| r.id.clone()).collect();
    (write, remove)
}

/// Fabio's route overrides for the system: every route the system's tags create is pinned to
/// instances carrying the system's tag. Anything else registered under the same Consul service
/// name (a developer's `just up` pointing at the same Consul, say) then gets none of its traffic.
pub fn fabio_routes(system: &System) -> String {
    let tag = system_tag(system);
    let mut routes =
        format!("# FtgoSystem {}/{}: written by ftgo-operator, removed with it.\n", system.namespace, system.name);
    for spec in &system.services {
        let service = spec.name;
        for fabio_tag in service.fabio_tags() {
            let Some(prefix) = fabio_tag.strip_prefix("urlprefix-") else { continue };
            let path = prefix.split_whitespace().next().unwrap_or(prefix);
            routes.push_str(&format!("route weight {} {path} weight 1 tags \"{tag}\"\n", service.binary()));
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{names::routes_key, testing::external_system};

    fn system() -> System {
        external_system("[{name: order}, {name: gateway}]")
    }

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml::from_str(yaml).unwrap()
    }

    const ORDER_SLICE: &str = r#"
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: shop-order-abc}
        addressType: IPv4
        ports: [{name: grpc, port: 7104}]
        endpoints:
          - addresses: [10.1.0.5]
            conditions: {ready: true}
            targetRef: {kind: Pod, name: shop-order-1}
          - addresses: [10.1.0.6]
            conditions: {ready: false}
            targetRef: {kind: Pod, name: shop-order-2}
          - addresses: [10.1.0.7]
    "#;

    #[test]
    fn endpoint_readiness_becomes_the_instance_state() {
        let found = instances(ServiceName::Order, &[slice(ORDER_SLICE)], None, 0);
        let summary: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.address.as_str(), i.ready)).collect();
        assert_eq!(
            summary,
            [("10-1-0-7", "10.1.0.7", true), ("shop-order-1", "10.1.0.5", true), ("shop-order-2", "10.1.0.6", false)]
        );
    }

    #[test]
    fn without_endpoint_slices_the_cluster_ip_stands_in_and_follows_availability() {
        let service: Service = serde_yaml::from_str("spec: {clusterIP: 10.0.0.9}").unwrap();
        let down = instances(ServiceName::Order, &[], Some(&service), 0);
        assert_eq!(down.len(), 1);
        assert_eq!((down[0].address.as_str(), down[0].port, down[0].ready), ("10.0.0.9", 7104, false));
        assert!(instances(ServiceName::Order, &[], Some(&service), 1)[0].ready);
        let headless: Service = serde_yaml::from_str("spec: {clusterIP: None}").unwrap();
        assert!(instances(ServiceName::Order, &[], Some(&headless), 1).is_empty());
    }

    /// The registrations of the three endpoints in [`ORDER_SLICE`].
    fn order_registrations() -> Vec<Registration> {
        let found =
            BTreeMap::from([(ServiceName::Order, instances(ServiceName::Order, &[slice(ORDER_SLICE)], None, 0))]);
        registrations(&system(), &found)
    }

    #[test]
    fn registrations_carry_fabio_tags_and_a_check_that_follows_readiness() {
        let regs = order_registrations();
        assert_eq!(regs.len(), 3);
        let second = &regs[2];
        assert_eq!(second.node, "ftgo-food-shop");
        assert_eq!(second.service.id, "shop-order-shop-order-2");
        assert_eq!(second.service.service, "order-service");
        assert_eq!(
            second.service.tags,
            [
                "urlprefix-/ftgo.order.v1.OrderService proto=grpc",
                "urlprefix-order-service/ftgo.admin.v1.DeadLetterService proto=grpc",
                "ftgo-system=food.shop"
            ]
        );
        assert_eq!(second.checks[0].status, "critical");
        assert_eq!(regs[1].checks[0].status, "passing");
    }

    #[test]
    fn only_what_differs_is_written_and_what_is_no_longer_wanted_is_removed() {
        let desired = order_registrations();
        let mut registered: Vec<CatalogService> = desired.iter().map(|r| r.service.clone()).collect();
        registered[0].tags.reverse();
        let mut checks: Vec<CatalogCheck> = desired.iter().flat_map(|r| r.checks.clone()).collect();
        let (write, remove) = plan(&desired, &registered, &checks);
        assert!(write.is_empty() && remove.is_empty(), "tag order does not matter");

        checks[1].status = "critical".to_owned();
        let mut stale = registered[0].clone();
        stale.id = "shop-order-gone".to_owned();
        registered.push(stale);
        let (write, remove) = plan(&desired, &registered, &checks);
        assert_eq!(write.iter().map(|r| r.service.id.as_str()).collect::<Vec<_>>(), ["shop-order-shop-order-1"]);
        assert_eq!(remove, ["shop-order-gone"]);
    }

    #[test]
    fn fabio_overrides_pin_each_route_to_the_systems_instances() {
        assert_eq!(
            fabio_routes(&system()),
            "# FtgoSystem food/shop: written by ftgo-operator, removed with it.\n\
             route weight order-service /ftgo.order.v1.OrderService weight 1 tags \"ftgo-system=food.shop\"\n\
             route weight order-service order-service/ftgo.admin.v1.DeadLetterService weight 1 tags \"ftgo-system=food.shop\"\n\
             route weight api-gateway /api weight 1 tags \"ftgo-system=food.shop\"\n\
             route weight api-gateway /healthz weight 1 tags \"ftgo-system=food.shop\"\n"
        );
        assert_eq!(routes_key(&system()), "fabio/config/ftgo/food/shop");
        let mut elsewhere = system();
        elsewhere.fabio_kv_path = "lb/routes".to_owned();
        assert_eq!(routes_key(&elsewhere), "lb/routes/ftgo/food/shop");
    }
}
