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
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
            HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret,
            SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;

use crate::{
    controller::{build::owned_metadata, validate::System},
    crd::{ConsulConnection, NatsConnection, PostgresConnection},
    names::{LABEL_MANAGED_BY, admin_secret_name, app_labels, app_selector_labels},
};

/// The uid and gid NATS, Consul and Fabio run as: the user of the local images. The public ones
/// work with any uid (see above), and a numeric one is needed anyway, since the kubelet cannot
/// check `runAsNonRoot` against Fabio's `USER nobody`.
const NON_ROOT: i64 = 65532;

/// The superuser of the managed Postgres.
const POSTGRES_USER: &str = "postgres";

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

/// The labels of every object of the managed infrastructure's `part`.
fn labels(system: &System, part: &str) -> BTreeMap<String, String> {
    app_labels(system, part, "infrastructure")
}

fn metadata(system: &System, name: String, part: &str) -> ObjectMeta {
    owned_metadata(system, name, labels(system, part))
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

/// The runtime's default seccomp profile, the one Docker gives every container, so both the
/// public and the local images are used to it (Kubernetes' own default, unless the kubelet is
/// configured otherwise, is no filter at all).
fn runtime_default_seccomp() -> Option<SeccompProfile> {
    Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() })
}

/// NATS, Consul and Fabio: non-root, as the Pod Security Standards' `restricted` level asks.
/// `fsGroup` makes the `emptyDir` theirs whatever the runtime creates it as.
fn non_root_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT),
        run_as_group: Some(NON_ROOT),
        fs_group: Some(NON_ROOT),
        seccomp_profile: runtime_default_seccomp(),
        ..PodSecurityContext::default()
    }
}

/// A non-root container with every capability dropped but `keep`.
fn non_root_container(keep: &[&str]) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: (!keep.is_empty()).then(|| keep.iter().map(|c| (*c).to_owned()).collect()),
        }),
        ..SecurityContext::default()
    }
}

/// Postgres: the official image's entrypoint starts as root to chown `PGDATA`, then steps down
/// to `postgres` with gosu, so it can be neither non-root nor capability-less (gosu needs
/// SETUID/SETGID, the chown CHOWN and FOWNER). What it does allow: the default seccomp profile,
/// and no privilege escalation, since gosu is no setuid binary but root calling setuid().
fn postgres_pod() -> PodSecurityContext {
    PodSecurityContext { seccomp_profile: runtime_default_seccomp(), ..PodSecurityContext::default() }
}

/// One part of the infrastructure: a single-replica Deployment (recreated, never two at once,
/// since each keeps state in its pod) with an `emptyDir` at `data`, and its Service.
fn part(
    system: &System,
    part: &str,
    mut container: Container,
    security: PodSecurityContext,
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
            selector: LabelSelector {
                match_labels: Some(app_selector_labels(&system.name, part)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(security),
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
            selector: Some(app_selector_labels(&system.name, part)),
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
    let images = &system.images;
    let postgres = Container {
        name: "postgres".to_owned(),
        image: Some(images.postgres.clone()),
        env: Some(vec![
            env("POSTGRES_USER", POSTGRES_USER),
            // Below the `emptyDir` rather than at it: Postgres wants its data directory owned by
            // its own user with mode 0700, which an image running as non-root (the local one)
            // cannot make of a mount point owned by root, but gets by creating a subdirectory.
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
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let nats = Container {
        name: "nats".to_owned(),
        image: Some(images.nats.clone()),
        args: Some(["--jetstream", "--store_dir", "/data", "--http_port", "8222"].map(str::to_owned).to_vec()),
        readiness_probe: Some(http_probe("/healthz?js-enabled-only=true", 8222)),
        security_context: Some(non_root_container(&[])),
        ..Container::default()
    };
    let consul = Container {
        name: "consul".to_owned(),
        image: Some(images.consul.clone()),
        args: Some(["agent", "-dev", "-client", "0.0.0.0", "-data-dir", "/consul/data"].map(str::to_owned).to_vec()),
        // The public image's entrypoint would otherwise chown its directories and su-exec to its
        // own user, neither of which a non-root user may do; an image whose entrypoint is
        // `consul` itself ignores it.
        env: Some(vec![env("CONSUL_DISABLE_PERM_MGMT", "true")]),
        readiness_probe: Some(http_probe("/v1/status/leader", 8500)),
        security_context: Some(non_root_container(&[])),
        ..Container::default()
    };
    let consul_addr = format!("{}:8500", host(&system.name, &system.namespace, "consul"));
    let fabio = Container {
        name: "fabio".to_owned(),
        image: Some(images.fabio.clone()),
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
        // Only so that the public image's binary, which carries the file capability, may be
        // executed at all; without privilege escalation the process is not granted it, and it
        // needs none: every listener is above 1024.
        security_context: Some(non_root_container(&["NET_BIND_SERVICE"])),
        ..Container::default()
    };
    let (fabio_deployment, mut fabio_service) =
        part(system, "fabio", fabio, non_root_pod(), "/data", &[("http", 9999), ("grpc", 9997), ("admin", 9998)]);
    expose_on_nodes(
        &mut fabio_service,
        &[("http", system.fabio_http_node_port), ("admin", system.fabio_admin_node_port)],
    );
    let parts = [
        part(system, "postgres", postgres, postgres_pod(), "/var/lib/postgresql/data", &[("postgres", 5432)]),
        part(system, "nats", nats, non_root_pod(), "/data", &[("client", 4222), ("monitor", 8222)]),
        part(system, "consul", consul, non_root_pod(), "/consul/data", &[("http", 8500)]),
        (fabio_deployment, fabio_service),
    ];
    let (deployments, services) = parts.into_iter().unzip();
    Managed { secrets: vec![secret], deployments, services }
}

/// Makes `service` a `NodePort` Service with the given node ports, so that a client outside the
/// cluster (through kind's port mappings, say) reaches those ports. Ports not named get a node
/// port the API server picks, which nothing relies on.
fn expose_on_nodes(service: &mut Service, node_ports: &[(&str, i32)]) {
    let Some(spec) = service.spec.as_mut() else { return };
    spec.type_ = Some("NodePort".to_owned());
    for port in spec.ports.iter_mut().flatten() {
        port.node_port = node_ports.iter().find(|(name, _)| port.name.as_deref() == Some(name)).map(|(_, p)| *p);
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;
    use crate::{
        crd::{CONSUL_IMAGE, FABIO_IMAGE, NATS_IMAGE, POSTGRES_IMAGE},
        names::LABEL_COMPONENT,
        testing::system_with,
    };

    fn system() -> System {
        system_with("infrastructure: {mode: Managed}")
    }

    fn pod(managed: &Managed, part: usize) -> PodSpec {
        managed.deployments[part].spec.as_ref().unwrap().template.spec.clone().unwrap()
    }

    fn images(managed: &Managed) -> Vec<String> {
        (0..4).map(|i| pod(managed, i).containers[0].image.clone().unwrap()).collect()
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

    #[test]
    fn without_images_in_the_spec_the_public_images_run() {
        assert_eq!(images(&build(&system(), "pw")), [POSTGRES_IMAGE, NATS_IMAGE, CONSUL_IMAGE, FABIO_IMAGE]);
        for image in [POSTGRES_IMAGE, NATS_IMAGE, CONSUL_IMAGE, FABIO_IMAGE] {
            assert!(image.starts_with("docker.io/"), "{image} is pulled from Docker Hub");
        }
    }

    #[test]
    fn the_images_in_the_spec_replace_the_public_ones_one_by_one() {
        let system = system_with(
            r#"
            infrastructure:
              mode: Managed
              images:
                postgres: ftgo.local/postgres:15
                nats: ftgo.local/nats:2.12.8
                consul: ftgo.local/consul:1.22.6
                fabio: ftgo.local/fabio:1.7.2
            "#,
        );
        let expected =
            ["ftgo.local/postgres:15", "ftgo.local/nats:2.12.8", "ftgo.local/consul:1.22.6", "ftgo.local/fabio:1.7.2"];
        assert_eq!(images(&build(&system, "pw")), expected);

        let only_nats = system_with(
            r#"
            infrastructure:
              mode: Managed
              images: {nats: "ftgo.local/nats:2.12.8"}
            "#,
        );
        let expected = [POSTGRES_IMAGE, "ftgo.local/nats:2.12.8", CONSUL_IMAGE, FABIO_IMAGE];
        assert_eq!(images(&build(&only_nats, "pw")), expected);
    }

    fn node_ports(service: &Service) -> Vec<(String, i32, Option<i32>)> {
        let ports = service.spec.as_ref().unwrap().ports.clone().unwrap();
        ports.into_iter().map(|p| (p.name.unwrap(), p.port, p.node_port)).collect()
    }

    #[test]
    fn fabio_is_reached_from_outside_on_the_node_ports_kind_maps() {
        let managed = build(&system(), "pw");
        let fabio = &managed.services[3];
        assert_eq!(fabio.name_any(), "shop-fabio");
        assert_eq!(fabio.spec.as_ref().unwrap().type_.as_deref(), Some("NodePort"));
        let expected = [
            ("http".to_owned(), 9999, Some(30080)),
            ("grpc".to_owned(), 9997, None),
            ("admin".to_owned(), 9998, Some(30998)),
        ];
        assert_eq!(node_ports(fabio), expected);
        // The rest stays inside the cluster.
        for service in &managed.services[..3] {
            assert_eq!(service.spec.as_ref().unwrap().type_, None, "{}", service.name_any());
            assert!(node_ports(service).iter().all(|(_, _, node_port)| node_port.is_none()));
        }
    }

    #[test]
    fn fabio_node_ports_come_from_the_spec() {
        let system = system_with(
            r#"
            infrastructure: {mode: Managed}
            fabio: {httpNodePort: 31080, adminNodePort: 31998}
            "#,
        );
        let managed = build(&system, "pw");
        let ports: Vec<_> = node_ports(&managed.services[3]).into_iter().map(|(_, _, node_port)| node_port).collect();
        assert_eq!(ports, [Some(31080), None, Some(31998)]);
    }

    #[test]
    fn nats_consul_and_fabio_run_as_non_root_without_capabilities() {
        let managed = build(&system(), "pw");
        for part in 1..4 {
            let pod = pod(&managed, part);
            let security = pod.security_context.unwrap();
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(security.run_as_user, Some(65532), "a numeric user, which the kubelet can check");
            assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
            let container = pod.containers[0].security_context.clone().unwrap();
            assert_eq!(container.allow_privilege_escalation, Some(false));
            assert_eq!(container.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
        }
        // The public Fabio binary carries cap_net_bind_service: without it in the bounding set
        // the kernel refuses to exec it.
        let fabio = pod(&managed, 3).containers[0].security_context.clone().unwrap();
        assert_eq!(fabio.capabilities.unwrap().add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
        // The public Consul image's entrypoint must not try to chown and su-exec as non-root.
        let consul = pod(&managed, 2).containers[0].env.clone().unwrap();
        assert!(consul.iter().any(|e| e.name == "CONSUL_DISABLE_PERM_MGMT"));
    }

    #[test]
    fn postgres_may_start_as_root_to_step_down_itself() {
        let pod = pod(&build(&system(), "pw"), 0);
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, None);
        assert_eq!(security.run_as_user, None);
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let container = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.capabilities, None, "gosu and the entrypoint's chown need root's capabilities");
    }
}
