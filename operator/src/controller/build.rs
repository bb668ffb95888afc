//! Step three of the pipeline: the Kubernetes objects a [`System`] should have, built purely:
//! each service's Secret, ConfigMap, Deployment and Service (here), the managed infrastructure
//! ([`managed`]), and the Consul registrations and Fabio routes ([`discovery`]).
//!
//! Nothing here talks to the API server, reads a clock or draws a random number: generated
//! passwords come in as [`DatabaseCredentials`], chosen by the caller. The same input therefore
//! always gives the same objects, which is what makes server-side apply of them a no-op when
//! nothing changed (the API server does not even bump `resourceVersion`), and what lets the unit
//! tests below pin every detail.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction,
            HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Secret, SecretKeySelector, Service, ServicePort,
            ServiceSpec as KubeServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;

use ftgo_api_gateway::{BackendsConfig, Config as GatewayConfig, HttpConfig};
use ftgo_catalog::{Protocol, ServiceName};
use ftgo_platform::config::{BaseConfig, ConsulConfig, ServiceConfig};

use crate::{
    controller::validate::System,
    names::{LABEL_MANAGED_BY, child_name, credentials_secret_name, labels, selector_labels},
};

pub mod discovery;
pub mod managed;

/// Where the ConfigMap is mounted; the service reads `$FTGO_CONFIG_FILE` from there.
const CONFIG_DIR: &str = "/etc/ftgo";
/// Lets a Deployment roll when only its ConfigMap changed.
pub const CONFIG_HASH_ANNOTATION: &str = "ftgo.dev/config-hash";

/// The objects one FtgoSystem should have, each list in [`ServiceName::ALL`] order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
}

/// A service's own database and the role that owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseCredentials {
    pub database: String,
    pub role: String,
    pub password: String,
}

/// The metadata of an object `system` owns (and takes with it when deleted): `name` in the
/// system's namespace, with `labels`.
fn owned_metadata(system: &System, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(system.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![system.owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn metadata(system: &System, name: String, service: ServiceName) -> ObjectMeta {
    owned_metadata(system, name, labels(system, service))
}

/// Builds every object `system` should have. `credentials` holds one entry per service with a
/// database; a service without one gets no Secret (its pods wait for it).
pub fn build(system: &System, credentials: &BTreeMap<ServiceName, DatabaseCredentials>) -> Desired {
    let mut desired = Desired::default();
    for spec in &system.services {
        let service = spec.name;
        if let Some(credentials) = credentials.get(&service) {
            desired.secrets.push(credentials_secret(system, service, credentials));
        }
        let config = config_file(system, service);
        desired.deployments.push(deployment(system, spec, &config));
        desired.config_maps.push(config_map(system, service, config));
        desired.services.push(kube_service(system, service));
    }
    desired
}

/// `url` is what the service reads (`FTGO_DATABASE__URL`); the parts are there for people and
/// tools that connect by hand.
fn credentials_secret(system: &System, service: ServiceName, credentials: &DatabaseCredentials) -> Secret {
    let postgres = &system.postgres;
    let url = format!(
        "postgres://{}:{}@{}:{}/{}",
        credentials.role, credentials.password, postgres.host, postgres.port, credentials.database
    );
    let data = [
        ("username", credentials.role.clone()),
        ("password", credentials.password.clone()),
        ("database", credentials.database.clone()),
        ("host", postgres.host.clone()),
        ("port", postgres.port.to_string()),
        ("url", url),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), ByteString(value.into_bytes())))
    .collect();
    Secret {
        metadata: metadata(system, credentials_secret_name(&system.name, service), service),
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// What the service's database URL says in its settings file: the real one, with its password,
/// comes from the service's Secret as `FTGO_DATABASE__URL`, which wins over the file. Not a URL, so
/// a pod without the variable fails at start with this message instead of trying localhost.
pub const DATABASE_URL_FROM_SECRET: &str = "set by FTGO_DATABASE__URL from the service's Secret";

/// The service's settings as the TOML file its layered configuration reads: the very settings
/// type the service loads (`ftgo_platform::config::ServiceConfig`, or the gateway's `Config`),
/// filled in and serialised. A file, not environment variables: in the service's layering a file
/// sits *below* Consul KV, so the settings an operator of the system changes live in Consul (the
/// log level) still win.
pub fn config_file(system: &System, service: ServiceName) -> String {
    let listen = std::net::SocketAddr::from(([0, 0, 0, 0], service.port()));
    let base = BaseConfig {
        environment: ENVIRONMENT.to_owned(),
        log_level: system.log_level.clone(),
        consul: ConsulConfig { addr: system.consul.url.trim_end_matches('/').to_owned(), register: false },
    };
    let written = match service.protocol() {
        Protocol::Grpc => {
            let mut settings = ServiceConfig::local(service);
            let common = &mut settings.common;
            common.base = base;
            common.grpc.listen = listen;
            common.nats.url = system.nats.url.clone();
            common.database.url = DATABASE_URL_FROM_SECRET.to_owned();
            toml::to_string(&settings)
        }
        Protocol::Http => {
            let defaults = GatewayConfig::default();
            let settings = GatewayConfig {
                base,
                http: HttpConfig { listen, ..defaults.http },
                // Every backend, named or not: a missing service then shows up in the gateway as
                // an unreachable backend (and a degraded answer), not as a configuration error.
                backends: BackendsConfig::each(|backend| {
                    format!("http://{}.{}.svc:{}", child_name(&system.name, backend), system.namespace, backend.port())
                }),
                ..defaults
            };
            toml::to_string(&settings)
        }
    };
    // Plain structs of strings, numbers and tables, with the tables last: nothing TOML cannot hold.
    written.expect("a service's settings serialise to TOML")
}

/// The `environment` a service on Kubernetes runs in: anything but `local` reads Consul KV.
const ENVIRONMENT: &str = "kubernetes";

fn config_map(system: &System, service: ServiceName, config: String) -> ConfigMap {
    ConfigMap {
        metadata: metadata(system, child_name(&system.name, service), service),
        data: Some(BTreeMap::from([(format!("{}.toml", service.config_name()), config)])),
        ..ConfigMap::default()
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every build of the operator, so upgrading the
/// operator does not restart every pod (`std`'s hasher promises no such stability).
fn stable_hash(text: &str) -> String {
    let hash = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{hash:016x}")
}

pub fn image(system: &System, spec: &crate::crd::ServiceSpec) -> String {
    spec.image.clone().unwrap_or_else(|| format!("{}/{}:{}", system.image_registry, spec.name.binary(), system.version))
}

fn probe(service: ServiceName, initial_delay: i32, period: i32) -> Probe {
    let port = i32::from(service.port());
    let (grpc, http_get) = match service.protocol() {
        Protocol::Grpc => (Some(GRPCAction { port, service: None }), None),
        Protocol::Http => (
            None,
            Some(HTTPGetAction {
                path: Some("/healthz".to_owned()),
                port: IntOrString::Int(port),
                ..HTTPGetAction::default()
            }),
        ),
    };
    Probe {
        grpc,
        http_get,
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn deployment(system: &System, spec: &crate::crd::ServiceSpec, config: &str) -> Deployment {
    let service = spec.name;
    let config_file = format!("{}.toml", service.config_name());
    let mut env = vec![EnvVar {
        name: "FTGO_CONFIG_FILE".to_owned(),
        value: Some(format!("{CONFIG_DIR}/{config_file}")),
        ..EnvVar::default()
    }];
    if service.database().is_some() {
        env.push(EnvVar {
            name: "FTGO_DATABASE__URL".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: credentials_secret_name(&system.name, service),
                    key: "url".to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    if let Some(endpoint) = &system.otlp_endpoint {
        env.push(EnvVar {
            name: "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            value: Some(endpoint.clone()),
            ..EnvVar::default()
        });
        env.push(EnvVar {
            name: "OTEL_SERVICE_NAME".to_owned(),
            value: Some(service.binary().to_owned()),
            ..EnvVar::default()
        });
    }
    let port_name = match service.protocol() {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http",
    };
    let container = Container {
        name: service.as_str().to_owned(),
        image: Some(image(system, spec)),
        ports: Some(vec![ContainerPort {
            name: Some(port_name.to_owned()),
            container_port: i32::from(service.port()),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        readiness_probe: Some(probe(service, 2, 5)),
        liveness_probe: Some(probe(service, 10, 10)),
        resources: spec.resources.clone(),
        ..Container::default()
    };
    let mut pod_labels = labels(system, service);
    pod_labels.remove(LABEL_MANAGED_BY);
    Deployment {
        metadata: metadata(system, child_name(&system.name, service), service),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&system.name, service)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), stable_hash(config))])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".to_owned(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: child_name(&system.name, service),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn kube_service(system: &System, service: ServiceName) -> Service {
    let (name, app_protocol) = match service.protocol() {
        Protocol::Grpc => ("grpc", "kubernetes.io/h2c"),
        Protocol::Http => ("http", "http"),
    };
    Service {
        metadata: metadata(system, child_name(&system.name, service), service),
        spec: Some(KubeServiceSpec {
            selector: Some(selector_labels(&system.name, service)),
            ports: Some(vec![ServicePort {
                name: Some(name.to_owned()),
                port: i32::from(service.port()),
                target_port: Some(IntOrString::String(name.to_owned())),
                protocol: Some("TCP".to_owned()),
                app_protocol: Some(app_protocol.to_owned()),
                ..ServicePort::default()
            }]),
            ..KubeServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::validate::validate,
        crd::FtgoSystem,
        names::{LABEL_COMPONENT, LABEL_INSTANCE, LABEL_PART_OF, LABEL_VERSION, database_name, instance_selector},
    };

    const SHOP: &str = r#"
        apiVersion: ftgo.dev/v1alpha1
        kind: FtgoSystem
        metadata: {name: shop, namespace: food, uid: 1234-abcd, generation: 1}
        spec:
          version: 1.2.3
          logLevel: debug
          services:
            - {name: gateway}
            - name: order
              replicas: 2
              resources: {requests: {cpu: 100m, memory: 64Mi}}
            - {name: kitchen, image: "registry.example/kitchen:dev"}
          infrastructure:
            postgres: {host: db.infra, port: 5433, adminSecretName: pg-admin, databasePrefix: shop_}
            nats: {url: "nats://nats.infra:4222"}
            consul: {url: "http://consul.infra:8500/"}
    "#;

    fn shop() -> System {
        let system: FtgoSystem = serde_yaml::from_str(SHOP).unwrap();
        validate(&system).unwrap()
    }

    fn credentials(system: &System) -> BTreeMap<ServiceName, DatabaseCredentials> {
        system
            .services
            .iter()
            .filter_map(|s| {
                let database = database_name(system, s.name)?;
                Some((s.name, DatabaseCredentials { role: database.clone(), database, password: "pw".to_owned() }))
            })
            .collect()
    }

    fn built() -> Desired {
        let system = shop();
        build(&system, &credentials(&system))
    }

    fn names<T: kube::ResourceExt>(objects: &[T]) -> Vec<String> {
        objects.iter().map(|o| o.name_any()).collect()
    }

    #[test]
    fn every_named_service_gets_a_config_map_deployment_and_service_and_only_those() {
        let desired = built();
        let expected = ["shop-kitchen", "shop-order", "shop-gateway"];
        assert_eq!(names(&desired.config_maps), expected);
        assert_eq!(names(&desired.deployments), expected);
        assert_eq!(names(&desired.services), expected);
        // The gateway owns no data, so it gets no database Secret.
        assert_eq!(names(&desired.secrets), ["shop-kitchen-database", "shop-order-database"]);
    }

    #[test]
    fn every_child_is_owned_by_the_system_and_labelled_for_orphan_deletion() {
        let desired = built();
        let metas = desired
            .secrets
            .iter()
            .map(|o| &o.metadata)
            .chain(desired.config_maps.iter().map(|o| &o.metadata))
            .chain(desired.deployments.iter().map(|o| &o.metadata))
            .chain(desired.services.iter().map(|o| &o.metadata));
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("food"));
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "FtgoSystem");
            assert_eq!(owners[0].api_version, "ftgo.dev/v1alpha1");
            assert_eq!(owners[0].uid, "1234-abcd");
            assert_eq!(owners[0].controller, Some(true));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[LABEL_INSTANCE], "shop");
            assert_eq!(labels[LABEL_MANAGED_BY], "ftgo-operator");
            assert_eq!(labels[LABEL_PART_OF], "ftgo");
            assert_eq!(labels[LABEL_VERSION], "1.2.3");
        }
        assert_eq!(
            instance_selector("shop"),
            "app.kubernetes.io/instance=shop,app.kubernetes.io/managed-by=ftgo-operator"
        );
    }

    #[test]
    fn a_grpc_service_deployment_runs_the_image_with_config_database_and_grpc_probes() {
        let desired = built();
        let order = &desired.deployments[1];
        let expected: Deployment = serde_yaml::from_str(
            r#"
            spec:
              replicas: 2
              selector:
                matchLabels: {app.kubernetes.io/name: order-service, app.kubernetes.io/instance: shop}
              template:
                spec:
                  containers:
                    - name: order
                      image: ghcr.io/ftgo-rs/order-service:1.2.3
                      ports: [{name: grpc, containerPort: 7104, protocol: TCP}]
                      env:
                        - {name: FTGO_CONFIG_FILE, value: /etc/ftgo/order-service.toml}
                        - name: FTGO_DATABASE__URL
                          valueFrom: {secretKeyRef: {name: shop-order-database, key: url, optional: false}}
                      volumeMounts: [{name: config, mountPath: /etc/ftgo, readOnly: true}]
                      readinessProbe:
                        grpc: {port: 7104}
                        initialDelaySeconds: 2
                        periodSeconds: 5
                        timeoutSeconds: 2
                        failureThreshold: 3
                      livenessProbe:
                        grpc: {port: 7104}
                        initialDelaySeconds: 10
                        periodSeconds: 10
                        timeoutSeconds: 2
                        failureThreshold: 3
                      resources: {requests: {cpu: 100m, memory: 64Mi}}
                  volumes: [{name: config, configMap: {name: shop-order}}]
            "#,
        )
        .unwrap();
        let spec = order.spec.as_ref().unwrap();
        let expected_spec = expected.spec.unwrap();
        assert_eq!(spec.replicas, expected_spec.replicas);
        assert_eq!(spec.selector, expected_spec.selector);
        assert_eq!(spec.template.spec, expected_spec.template.spec);
        let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(pod_labels[LABEL_COMPONENT], "order");
    }

    #[test]
    fn the_gateway_is_probed_over_http_and_gets_no_database() {
        let desired = built();
        let gateway = &desired.deployments[2];
        let container = &gateway.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("ghcr.io/ftgo-rs/api-gateway:1.2.3"));
        let probe = container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
        assert_eq!(probe.port, IntOrString::Int(8080));
        let env: Vec<_> = container.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["FTGO_CONFIG_FILE"]);
    }

    #[test]
    fn a_telemetry_endpoint_reaches_every_service_under_its_own_name() {
        let mut system = shop();
        let env_of = |system: &System| {
            let desired = build(system, &credentials(system));
            let container =
                &desired.deployments[1].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
            container.env.clone().unwrap().into_iter().map(|e| (e.name, e.value)).collect::<Vec<_>>()
        };
        assert!(!env_of(&system).iter().any(|(name, _)| name.starts_with("OTEL_")));
        system.otlp_endpoint = Some("http://collector:4318".to_owned());
        let env = env_of(&system);
        assert!(env.contains(&("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), Some("http://collector:4318".to_owned()))));
        assert!(env.contains(&("OTEL_SERVICE_NAME".to_owned(), Some("order-service".to_owned()))));
    }

    #[test]
    fn a_service_image_override_replaces_registry_and_version() {
        let desired = built();
        let kitchen = desired.deployments[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(kitchen.containers[0].image.as_deref(), Some("registry.example/kitchen:dev"));
    }

    #[test]
    fn config_files_carry_listen_address_nats_consul_and_the_gateway_backends() {
        let system = shop();
        assert_eq!(
            config_file(&system, ServiceName::Order),
            "environment = \"kubernetes\"\nlog_level = \"debug\"\n\n\
             [consul]\naddr = \"http://consul.infra:8500\"\nregister = false\n\n\
             [grpc]\nlisten = \"0.0.0.0:7104\"\n\n\
             [database]\nurl = \"set by FTGO_DATABASE__URL from the service's Secret\"\nmax_connections = 10\n\
             connect_timeout = 5.0\n\n[nats]\nurl = \"nats://nats.infra:4222\"\n"
        );
        let gateway = config_file(&system, ServiceName::Gateway);
        assert!(gateway.contains("[http]\nlisten = \"0.0.0.0:8080\"\n"), "{gateway}");
        assert!(gateway.contains("consumer = \"http://shop-consumer.food.svc:7101\"\n"), "{gateway}");
        assert!(gateway.contains("orchestrator = \"http://shop-orchestrator.food.svc:7105\"\n"), "{gateway}");
        let desired = built();
        assert!(desired.config_maps[1].data.as_ref().unwrap().contains_key("order-service.toml"));
    }

    #[test]
    fn the_pod_template_changes_when_and_only_when_the_config_does() {
        let system = shop();
        let hash = |system: &System| {
            let desired = build(system, &credentials(system));
            desired.deployments[1].spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone()
        };
        let before = hash(&system);
        assert_eq!(before, hash(&system), "the same input builds the same pod template");
        let mut louder = system.clone();
        louder.log_level = "trace".to_owned();
        assert_ne!(before, hash(&louder));
    }

    #[test]
    fn credentials_become_a_secret_with_a_ready_to_use_url() {
        let desired = built();
        let data = desired.secrets[1].data.as_ref().unwrap();
        let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
        assert_eq!(text("url"), "postgres://shop_order:pw@db.infra:5433/shop_order");
        assert_eq!(text("username"), "shop_order");
        assert_eq!(text("database"), "shop_order");
    }

    #[test]
    fn services_expose_the_named_port_with_its_protocol() {
        let desired = built();
        let order = desired.services[1].spec.as_ref().unwrap();
        let port = &order.ports.as_ref().unwrap()[0];
        assert_eq!(port.port, 7104);
        assert_eq!(port.target_port, Some(IntOrString::String("grpc".to_owned())));
        assert_eq!(port.app_protocol.as_deref(), Some("kubernetes.io/h2c"));
        assert_eq!(order.selector, Some(selector_labels("shop", ServiceName::Order)));
    }

    /// What the operator writes is what the service reads: each file, loaded by the services' own
    /// layered loader over the service's defaults, gives back the settings it was written from.
    #[test]
    fn every_config_file_round_trips_through_the_services_own_loader() {
        let mut system = shop();
        // Values that need escaping in TOML must survive it.
        system.log_level = "info,ftgo=debug,\"quoted\"\\path".to_owned();
        for service in ServiceName::ALL {
            let file = config_file(&system, service);
            let name = service.config_name();
            match service.protocol() {
                Protocol::Grpc => {
                    let loaded: ServiceConfig =
                        ftgo_platform::config::with_consul_document(name, ServiceConfig::local(service), &file)
                            .unwrap();
                    assert_eq!(toml::to_string(&loaded).unwrap(), file, "{service}");
                    assert_eq!(loaded.common.base.log_level, system.log_level);
                    assert_eq!(loaded.common.grpc.listen.port(), service.port());
                    assert_eq!(loaded.common.database.url, DATABASE_URL_FROM_SECRET);
                }
                Protocol::Http => {
                    let loaded: GatewayConfig =
                        ftgo_platform::config::with_consul_document(name, GatewayConfig::default(), &file).unwrap();
                    assert_eq!(toml::to_string(&loaded).unwrap(), file, "{service}");
                    assert_eq!(
                        loaded.backends.address(ServiceName::Orchestrator),
                        Some("http://shop-orchestrator.food.svc:7105")
                    );
                    assert_eq!(loaded.base.consul.addr, "http://consul.infra:8500");
                }
            }
        }
    }
}
