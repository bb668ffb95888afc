//! `infrastructure.mode: Managed`: the infrastructure a kind cluster lacks, deployed by the
//! operator next to the services and built purely here: a single-instance Postgres, NATS with
//! JetStream, a Consul agent in dev mode and Fabio.
//!
//! This is for trying FTGO, not for keeping data: one replica each, data in `emptyDir`s (lost
//! when a pod restarts), no TLS. Production systems use `External`.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, PodSpec,
            PodTemplateSpec, Probe, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;

use crate::{
    crd::{ConsulConnection, NatsConnection, PostgresConnection},
    desired::{
        FIELD_MANAGER, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, LABEL_VERSION,
    },
    validate::System,
};

pub const POSTGRES_IMAGE: &str = "docker.io/library/postgres:17-alpine";
pub const NATS_IMAGE: &str = "docker.io/library/nats:2.11-alpine";
pub const CONSUL_IMAGE: &str = "docker.io/hashicorp/consul:1.20";
pub const FABIO_IMAGE: &str = "docker.io/fabiolb/fabio:1.6.4";

/// The superuser of the managed Postgres.
const POSTGRES_USER: &str = "postgres";

/// `<system>-postgres-admin`: the generated superuser password of the managed Postgres.
pub fn admin_secret_name(system: &str) -> String {
    format!("{system}-postgres-admin")
}

fn host(system: &str, namespace: &str, part: &str) -> String {
    format!("{system}-{part}.{namespace}.svc")
}

/// Where the services and the operator find the managed infrastructure: its Services' DNS names.
pub fn connections(system: &str, namespace: &str) -> (PostgresConnection, NatsConnection, ConsulConnection) {
    (
        PostgresConnection {
            host: host(system, namespace, "postgres"),
            port: 5432,
            admin_secret_name: admin_secret_name(system),
            database_prefix: String::new(),
        },
        NatsConnection { url: format!("nats://{}:4222", host(system, namespace, "nats")) },
        ConsulConnection { url: format!("http://{}:8500", host(system, namespace, "consul")) },
    )
}

/// The managed infrastructure's objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Managed {
    pub secrets: Vec<Secret>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
}

fn labels(system: &System, part: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), part.to_owned()),
        (LABEL_INSTANCE.to_owned(), system.name.clone()),
        (LABEL_COMPONENT.to_owned(), "infrastructure".to_owned()),
        (LABEL_PART_OF.to_owned(), "ftgo".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
        (LABEL_VERSION.to_owned(), system.version.clone()),
    ])
}

fn selector(system: &System, part: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_NAME.to_owned(), part.to_owned()), (LABEL_INSTANCE.to_owned(), system.name.clone())])
}

fn metadata(system: &System, name: String, part: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(system.namespace.clone()),
        labels: Some(labels(system, part)),
        owner_references: Some(vec![system.owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    }
}

/// One part of the infrastructure: a single-replica Deployment (recreated, never two at once,
/// since each keeps state in its pod) with an `emptyDir` at `data`, and its Service.
fn part(
    system: &System,
    part: &str,
    mut container: Container,
    data: &str,
    ports: &[(&str, i32)],
) -> (Deployment, Service) {
    let name = format!("{}-{part}", system.name);
    container.ports = Some(ports.iter().map(|(n, p)| port(n, *p)).collect());
    container.volume_mounts =
        Some(vec![VolumeMount { name: "data".to_owned(), mount_path: data.to_owned(), ..VolumeMount::default() }]);
    let mut pod_labels = labels(system, part);
    pod_labels.remove(LABEL_MANAGED_BY);
    let deployment = Deployment {
        metadata: metadata(system, name.clone(), part),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".to_owned()), ..Default::default() }),
            selector: LabelSelector { match_labels: Some(selector(system, part)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "data".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = Service {
        metadata: metadata(system, name, part),
        spec: Some(ServiceSpec {
            selector: Some(selector(system, part)),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: Some((*n).to_owned()),
                        port: *p,
                        target_port: Some(IntOrString::String((*n).to_owned())),
                        protocol: Some("TCP".to_owned()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    (deployment, service)
}

/// Builds the managed infrastructure of `system`; `admin_password` is the Postgres superuser's,
/// chosen by the caller (the existing Secret's, or a fresh one).
pub fn build(system: &System, admin_password: &str) -> Managed {
    let admin_secret = admin_secret_name(&system.name);
    let secret = Secret {
        metadata: metadata(system, admin_secret.clone(), "postgres"),
        type_: Some("Opaque".to_owned()),
        data: Some(
            [("username", POSTGRES_USER), ("password", admin_password)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    let env =
        |name: &str, value: &str| EnvVar { name: name.to_owned(), value: Some(value.to_owned()), ..EnvVar::default() };
    let postgres = Container {
        name: "postgres".to_owned(),
        image: Some(POSTGRES_IMAGE.to_owned()),
        env: Some(vec![
            env("POSTGRES_USER", POSTGRES_USER),
            env("PGDATA", "/var/lib/postgresql/data/pgdata"),
            EnvVar {
                name: "POSTGRES_PASSWORD".to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: admin_secret,
                        key: "password".to_owned(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        ]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["pg_isready".to_owned(), "-U".to_owned(), POSTGRES_USER.to_owned()]),
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        ..Container::default()
    };
    let nats = Container {
        name: "nats".to_owned(),
        image: Some(NATS_IMAGE.to_owned()),
        args: Some(["--jetstream", "--store_dir", "/data", "--http_port", "8222"].map(str::to_owned).to_vec()),
        readiness_probe: Some(http_probe("/healthz?js-enabled-only=true", 8222)),
        ..Container::default()
    };
    let consul = Container {
        name: "consul".to_owned(),
        image: Some(CONSUL_IMAGE.to_owned()),
        args: Some(["agent", "-dev", "-client", "0.0.0.0", "-data-dir", "/consul/data"].map(str::to_owned).to_vec()),
        readiness_probe: Some(http_probe("/v1/status/leader", 8500)),
        ..Container::default()
    };
    let consul_addr = format!("{}:8500", host(&system.name, &system.namespace, "consul"));
    let fabio = Container {
        name: "fabio".to_owned(),
        image: Some(FABIO_IMAGE.to_owned()),
        args: Some(
            [
                "-registry.consul.addr",
                &consul_addr,
                "-registry.consul.register.enabled=false",
                "-proxy.addr",
                ":9999;proto=http,:9997;proto=grpc",
                "-ui.addr",
                ":9998",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        readiness_probe: Some(http_probe("/health", 9998)),
        ..Container::default()
    };
    let parts = [
        part(system, "postgres", postgres, "/var/lib/postgresql/data", &[("postgres", 5432)]),
        part(system, "nats", nats, "/data", &[("client", 4222), ("monitor", 8222)]),
        part(system, "consul", consul, "/consul/data", &[("http", 8500)]),
        part(system, "fabio", fabio, "/data", &[("http", 9999), ("grpc", 9997), ("admin", 9998)]),
    ];
    let (deployments, services) = parts.into_iter().unzip();
    Managed { secrets: vec![secret], deployments, services }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;
    use crate::{crd::FtgoSystem, validate::validate};

    fn system() -> System {
        let system: FtgoSystem = serde_yaml::from_str(
            r#"
            apiVersion: ftgo.dev/v1alpha1
            kind: FtgoSystem
            metadata: {name: shop, namespace: food, uid: u1, generation: 1}
            spec:
              infrastructure: {mode: Managed}
            "#,
        )
        .unwrap();
        validate(&system).unwrap()
    }

    #[test]
    fn managed_infrastructure_is_four_owned_single_replica_deployments_with_services() {
        let managed = build(&system(), "secret-pw");
        let names: Vec<_> = managed.deployments.iter().map(|d| d.name_any()).collect();
        assert_eq!(names, ["shop-postgres", "shop-nats", "shop-consul", "shop-fabio"]);
        for deployment in &managed.deployments {
            let spec = deployment.spec.as_ref().unwrap();
            assert_eq!(spec.replicas, Some(1));
            assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));
            assert_eq!(deployment.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
            assert_eq!(deployment.labels()[LABEL_COMPONENT], "infrastructure");
        }
        let services: Vec<_> = managed.services.iter().map(|s| s.name_any()).collect();
        assert_eq!(services, names);
    }

    #[test]
    fn postgres_gets_the_generated_admin_password_from_its_secret() {
        let managed = build(&system(), "secret-pw");
        let secret = &managed.secrets[0];
        assert_eq!(secret.name_any(), "shop-postgres-admin");
        assert_eq!(secret.data.as_ref().unwrap()["password"].0, b"secret-pw");
        let container = &managed.deployments[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        let password = container.env.as_ref().unwrap().iter().find(|e| e.name == "POSTGRES_PASSWORD").unwrap();
        let reference = password.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(reference.name, "shop-postgres-admin");
    }

    #[test]
    fn nats_runs_jetstream_and_fabio_reads_the_managed_consul() {
        let managed = build(&system(), "pw");
        let args = |i: usize| {
            managed.deployments[i].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
                .args
                .clone()
                .unwrap()
        };
        assert!(args(1).contains(&"--jetstream".to_owned()));
        assert!(args(3).contains(&"shop-consul.food.svc:8500".to_owned()));
    }
}
