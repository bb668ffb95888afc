//! Step two of the pipeline: turn an `FtgoSystem` read from the API server into a [`System`] the
//! later steps can use without re-checking anything.
//!
//! Most rules are enforced by the API server through the CRD schema. What is left is what the
//! schema cannot express in Rust's types: the CEL rule guarantees the External connections are
//! present, but they are still `Option`s in [`Infrastructure`](crate::crd::Infrastructure); here
//! they become plain fields ("parse, don't validate"), and an object that somehow lacks them
//! (a CRD installed without its rules, say) gets an error that names the field.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use ftgo_catalog::ServiceName;

use crate::{
    controller::build::managed,
    crd::{
        ConsulConnection, DatabaseReclaimPolicy, FtgoSystem, InfrastructureMode, ManagedImages, NatsConnection,
        PostgresConnection, ServiceSpec,
    },
};

/// A validated FtgoSystem: everything the build and apply steps need, with nothing optional
/// that they depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct System {
    pub name: String,
    pub namespace: String,
    pub generation: i64,
    /// Makes every child garbage-collected with the FtgoSystem.
    pub owner: OwnerReference,
    pub version: String,
    pub image_registry: String,
    pub log_level: String,
    /// Fabio's KV prefix for route overrides, without leading or trailing `/`.
    pub fabio_kv_path: String,
    /// Where the services export traces and metrics, if anywhere.
    pub otlp_endpoint: Option<String>,
    /// The services the spec names, in [`ServiceName::ALL`] order so every output is stable.
    pub services: Vec<ServiceSpec>,
    /// `Managed`: the operator deploys the infrastructure below itself, and these connections
    /// point at what it deploys.
    pub mode: InfrastructureMode,
    pub postgres: PostgresConnection,
    pub nats: NatsConnection,
    pub consul: ConsulConnection,
    /// What `Managed` mode deploys: the spec's images, the public ones where it names none.
    pub images: ManagedImages,
    /// The node ports of the managed Fabio's HTTP listener and admin UI.
    pub fabio_http_node_port: i32,
    pub fabio_admin_node_port: i32,
    pub database_reclaim_policy: DatabaseReclaimPolicy,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSystem {
    #[error("the FtgoSystem has no {0}; it did not come from the API server")]
    MissingMetadata(&'static str),
    #[error("spec.infrastructure.{0} is required when infrastructure.mode is External")]
    MissingConnection(&'static str),
}

impl System {
    pub fn named(&self, service: ServiceName) -> bool {
        self.services.iter().any(|s| s.name == service)
    }
}

pub fn validate(system: &FtgoSystem) -> Result<System, InvalidSystem> {
    let namespace = system.namespace().ok_or(InvalidSystem::MissingMetadata("namespace"))?;
    let owner = system.controller_owner_ref(&()).ok_or(InvalidSystem::MissingMetadata("uid"))?;
    let spec = &system.spec;
    let infrastructure = &spec.infrastructure;
    let mut services = spec.services.clone();
    services.sort_by_key(|s| s.name);
    services.dedup_by_key(|s| s.name);
    let name = system.name_any();
    let (postgres, nats, consul) = match infrastructure.mode {
        InfrastructureMode::External => (
            infrastructure.postgres.clone().ok_or(InvalidSystem::MissingConnection("postgres"))?,
            infrastructure.nats.clone().ok_or(InvalidSystem::MissingConnection("nats"))?,
            infrastructure.consul.clone().ok_or(InvalidSystem::MissingConnection("consul"))?,
        ),
        InfrastructureMode::Managed => managed::connections(&name, &namespace),
    };
    Ok(System {
        name,
        namespace,
        generation: system.metadata.generation.unwrap_or_default(),
        owner,
        version: spec.version.clone(),
        image_registry: spec.image_registry.trim_end_matches('/').to_owned(),
        log_level: spec.log_level.clone(),
        fabio_kv_path: spec.fabio.kv_path.trim_matches('/').to_owned(),
        otlp_endpoint: spec.telemetry.as_ref().map(|t| t.otlp_endpoint.clone()),
        services,
        mode: infrastructure.mode,
        postgres,
        nats,
        consul,
        images: infrastructure.images.clone().unwrap_or_default(),
        fabio_http_node_port: spec.fabio.http_node_port,
        fabio_admin_node_port: spec.fabio.admin_node_port,
        database_reclaim_policy: spec.database_reclaim_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(yaml: &str) -> FtgoSystem {
        serde_yaml::from_str(yaml).unwrap()
    }

    const SHOP: &str = r#"
        apiVersion: ftgo.dev/v1alpha1
        kind: FtgoSystem
        metadata: {name: shop, namespace: food, uid: 1234-abcd, generation: 3}
        spec:
          imageRegistry: registry.example/ftgo/
          services: [{name: order, replicas: 2}, {name: consumer}]
          infrastructure:
            postgres: {host: db, adminSecretName: pg-admin}
            nats: {url: "nats://nats:4222"}
            consul: {url: "http://consul:8500"}
    "#;

    #[test]
    fn a_complete_system_validates_with_services_in_catalog_order() {
        let system = validate(&fixture(SHOP)).unwrap();
        assert_eq!(system.name, "shop");
        assert_eq!(system.namespace, "food");
        assert_eq!(system.generation, 3);
        assert_eq!(system.owner.uid, "1234-abcd");
        assert_eq!(system.owner.controller, Some(true));
        assert_eq!(system.image_registry, "registry.example/ftgo");
        let names: Vec<_> = system.services.iter().map(|s| s.name).collect();
        assert_eq!(names, [ServiceName::Consumer, ServiceName::Order]);
    }

    #[test]
    fn a_system_without_consul_is_refused_with_the_field_named() {
        let yaml = SHOP.replace(r#"consul: {url: "http://consul:8500"}"#, "");
        let err = validate(&fixture(&yaml)).unwrap_err();
        assert_eq!(err.to_string(), "spec.infrastructure.consul is required when infrastructure.mode is External");
    }

    #[test]
    fn a_managed_system_connects_to_what_the_operator_deploys() {
        let yaml = SHOP.replace(
            r#"postgres: {host: db, adminSecretName: pg-admin}
            nats: {url: "nats://nats:4222"}
            consul: {url: "http://consul:8500"}"#,
            "mode: Managed",
        );
        let system = validate(&fixture(&yaml)).unwrap();
        assert_eq!(system.postgres.host, "shop-postgres.food.svc");
        assert_eq!(system.postgres.admin_secret_name, "shop-postgres-admin");
        assert_eq!(system.nats.url, "nats://shop-nats.food.svc:4222");
        assert_eq!(system.consul.url, "http://shop-consul.food.svc:8500");
    }

    #[test]
    fn a_system_not_read_from_the_api_server_is_refused() {
        let yaml = SHOP.replace("uid: 1234-abcd, ", "");
        assert_eq!(validate(&fixture(&yaml)).unwrap_err(), InvalidSystem::MissingMetadata("uid"));
    }
}
