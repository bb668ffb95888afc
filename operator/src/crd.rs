//! The `FtgoSystem` custom resource: one whole FTGO deployment, described in one object.
//!
//! The CRD YAML in `crds/` is generated from these types (`cargo run -p ftgo-operator --bin
//! crdgen`), so the doc comments below are what `kubectl explain ftgosystem.spec` prints, the
//! `#[serde(default)]`s are the defaults the API server fills in, and the schemars ranges and
//! patterns plus the CEL rules (`x_kube(validation)`) are what the API server refuses a bad
//! manifest with. The operator never has to re-check what the schema already guarantees.

use k8s_openapi::{
    api::core::v1::ResourceRequirements,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use ftgo_catalog::ServiceName;

/// One FTGO deployment: its services, where its infrastructure is, and what happens to its data
/// when it is deleted. The operator turns it into databases, ConfigMaps, Deployments, Services,
/// Consul registrations and Fabio routes, and reports progress in `status`.
// Each `printcolumn(...)` repeats `type_ = "string"`, which clippy mistakes for a copy-paste slip.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ftgo.dev",
    version = "v1alpha1",
    kind = "FtgoSystem",
    plural = "ftgosystems",
    shortname = "ftgo",
    namespaced,
    status = "FtgoSystemStatus",
    derive = "PartialEq",
    doc = "One FTGO deployment: its services, where its infrastructure is, and what happens to its data on delete.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every service is available, registered and routed"
    ),
    printcolumn(
        name = "Services",
        type_ = "string",
        json_path = ".status.summary",
        description = "Available services out of those the spec names"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the system is or is not ready"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct FtgoSystemSpec {
    /// The image tag every service runs, e.g. `0.1.0`. A service's `image` overrides it.
    #[serde(default = "default_version")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"))]
    pub version: String,

    /// The registry and path the images are pulled from; a service's image is
    /// `<imageRegistry>/<binary>:<version>`, e.g. `ghcr.io/ftgo-rs/order-service:0.1.0`.
    #[serde(default = "default_image_registry")]
    #[schemars(length(min = 1, max = 200))]
    pub image_registry: String,

    /// The `tracing` filter every service starts with (`info`, `debug`, `ftgo=debug,sqlx=warn`).
    /// Consul KV (`ftgo/config/<service>`) can change it live.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 200))]
    pub log_level: String,

    /// The services to run, at most one entry per service name. A service left out is not run,
    /// and whatever the operator had created for it is deleted (its database follows
    /// `databaseReclaimPolicy`). Defaults to all six services with one replica each.
    #[serde(default = "default_services")]
    #[schemars(length(max = 6))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub services: Vec<ServiceSpec>,

    /// Where Postgres, NATS and Consul are.
    pub infrastructure: Infrastructure,

    /// How the operator talks to Fabio, which routes to the services it registers in Consul.
    #[serde(default)]
    pub fabio: Fabio,

    /// Where the services send their OpenTelemetry traces and metrics. Left out: nothing is
    /// exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,

    /// What happens to the service databases and roles when this FtgoSystem is deleted or a
    /// service is removed from it: `Retain` (default) keeps them, with their data; `Delete`
    /// drops them.
    #[serde(default)]
    pub database_reclaim_policy: DatabaseReclaimPolicy,
}

/// One FTGO service to run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Which service: `consumer`, `kitchen`, `accounting`, `order`, `orchestrator` or `gateway`.
    pub name: ServiceName,

    /// How many pods run the service, 0 to 20. Zero keeps the service's database, Service and
    /// configuration while running nothing.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 20))]
    pub replicas: i32,

    /// A full image reference that replaces `<imageRegistry>/<binary>:<version>` for this
    /// service only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 400))]
    pub image: Option<String>,

    /// CPU and memory requests and limits of the service's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Fabio, as the operator sees it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.httpNodePort != self.adminNodePort").message(
    "fabio.httpNodePort and fabio.adminNodePort must differ: a node port leads to one Fabio listener"
))]
#[serde(rename_all = "camelCase")]
pub struct Fabio {
    /// Fabio's `registry.consul.kvpath`: the Consul KV prefix it reads route overrides from.
    /// The operator writes this system's overrides under `<kvPath>/ftgo/<namespace>/<name>`.
    #[serde(default = "default_fabio_kv_path")]
    #[schemars(regex(pattern = r"^/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$"))]
    pub kv_path: String,

    /// `Managed` mode only (ignored with `External`, whose Fabio the operator does not deploy):
    /// the node port of the managed Fabio's HTTP listener, which routes `/api` to the API
    /// gateway, so `http://<node>:<httpNodePort>/api/...` reaches FTGO from outside the cluster.
    /// 30000 to 32767, Kubernetes' default node port range; default 30080, the port
    /// `kind-config.yaml` maps to `127.0.0.1:8080`. A node port is taken cluster-wide: a second
    /// Managed FtgoSystem in the same cluster needs other ports.
    #[serde(default = "default_fabio_http_node_port")]
    #[schemars(range(min = 30000, max = 32767))]
    pub http_node_port: i32,

    /// `Managed` mode only (ignored with `External`): the node port of the managed Fabio's admin
    /// UI and API (`/routes`, `/api/routes`). 30000 to 32767; default 30998, the port
    /// `kind-config.yaml` maps to `127.0.0.1:9998`. Fabio's gRPC listener gets no fixed node
    /// port: the services reach it inside the cluster.
    #[serde(default = "default_fabio_admin_node_port")]
    #[schemars(range(min = 30000, max = 32767))]
    pub admin_node_port: i32,
}

impl Default for Fabio {
    fn default() -> Self {
        Self {
            kv_path: default_fabio_kv_path(),
            http_node_port: default_fabio_http_node_port(),
            admin_node_port: default_fabio_admin_node_port(),
        }
    }
}

fn default_fabio_kv_path() -> String {
    "fabio/config".to_owned()
}

fn default_fabio_http_node_port() -> i32 {
    30080
}

fn default_fabio_admin_node_port() -> i32 {
    30998
}

/// OpenTelemetry export of the services.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// An OTLP endpoint, e.g. `http://otel-collector.observability.svc:4318`, passed to every
    /// service as `OTEL_EXPORTER_OTLP_ENDPOINT` (each service reports itself as its binary's
    /// name, `OTEL_SERVICE_NAME`).
    #[schemars(regex(pattern = r"^https?://[^/\s]+/?$"))]
    pub otlp_endpoint: String,
}

/// Where the infrastructure the services share is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(
    "self.mode != 'External' || (has(self.postgres) && has(self.nats) && has(self.consul))"
).message("infrastructure.mode External needs infrastructure.postgres, infrastructure.nats and infrastructure.consul"))]
#[x_kube(validation = Rule::new(
    "self.mode != 'Managed' || (!has(self.postgres) && !has(self.nats) && !has(self.consul))"
).message("infrastructure.mode Managed deploys its own Postgres, NATS and Consul: leave out infrastructure.postgres, infrastructure.nats and infrastructure.consul"))]
#[x_kube(validation = Rule::new("self.mode == 'Managed' || !has(self.images)").message(
    "infrastructure.images are the images infrastructure.mode Managed deploys; with mode External the operator deploys no infrastructure: leave out infrastructure.images"
))]
#[serde(rename_all = "camelCase")]
pub struct Infrastructure {
    /// `External` (default): the services use the Postgres, NATS and Consul named below, which
    /// must be reachable both from the pods and from the operator (it creates the databases and
    /// the Consul registrations itself). `Managed`: the operator deploys a single-instance
    /// Postgres, NATS with JetStream, a Consul agent and Fabio (from `images`) next to the
    /// services, for trying FTGO on a local cluster such as kind; their data lives in
    /// `emptyDir`s and is lost when a pod restarts, the operator must run in the cluster to reach
    /// them, and Fabio is reachable from outside on the node ports set in `fabio`.
    #[serde(default)]
    pub mode: InfrastructureMode,

    /// The Postgres server that holds one database per service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresConnection>,

    /// The NATS JetStream server the services exchange saga messages and events over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsConnection>,

    /// The Consul agent the services read configuration from and are registered in, and that
    /// Fabio learns its routes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul: Option<ConsulConnection>,

    /// `Managed` mode only: the images of the Postgres, NATS, Consul and Fabio the operator
    /// deploys, e.g. images built and imported into a cluster that cannot reach a registry. Left
    /// out, and for each field left out, the public image. A replacement must keep the contract
    /// of the public image, described field by field; NATS, Consul and Fabio run as uid 65532
    /// without capabilities, while Postgres may start as root and step down itself. With mode
    /// `External` the API server refuses it, since nothing is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ManagedImages>,
}

/// The images `Managed` mode deploys; see [`Infrastructure::images`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedImages {
    /// Postgres, default `docker.io/library/postgres:18.6-alpine`. Its entrypoint must honour
    /// `POSTGRES_USER`, `POSTGRES_PASSWORD` and `PGDATA` (set to
    /// `/var/lib/postgresql/data/pgdata`, an `emptyDir`) as the official image's does, listen on
    /// 5432 and have `pg_isready` on its `PATH` for the readiness probe.
    #[serde(default = "default_postgres_image")]
    #[schemars(length(min = 1, max = 400))]
    pub postgres: String,

    /// NATS, default `docker.io/library/nats:2.12.8-alpine`. Its arguments are `nats-server`
    /// flags (`--jetstream --store_dir /data --http_port 8222`): the entrypoint must be
    /// `nats-server`, or pass arguments that start with `-` to it as the official image's does.
    #[serde(default = "default_nats_image")]
    #[schemars(length(min = 1, max = 400))]
    pub nats: String,

    /// Consul, default `docker.io/hashicorp/consul:1.22.6`. Its arguments start with the
    /// subcommand (`agent -dev -client 0.0.0.0 -data-dir /consul/data`): the entrypoint must be
    /// `consul`, or run `consul agent ...` for them as the official image's does.
    #[serde(default = "default_consul_image")]
    #[schemars(length(min = 1, max = 400))]
    pub consul: String,

    /// Fabio, default `docker.io/fabiolb/fabio:1.7.3`. Its arguments are Fabio flags
    /// (`-registry.consul.addr <consul> -proxy.addr ... -ui.addr :9998`): the entrypoint must be
    /// `fabio`, as the official image's is.
    #[serde(default = "default_fabio_image")]
    #[schemars(length(min = 1, max = 400))]
    pub fabio: String,
}

impl Default for ManagedImages {
    fn default() -> Self {
        Self {
            postgres: default_postgres_image(),
            nats: default_nats_image(),
            consul: default_consul_image(),
            fabio: default_fabio_image(),
        }
    }
}

// The default images: public ones, pinned to a patch release so a Managed system does not change
// under its users until this file does. `spec.infrastructure.images` replaces them (e.g. with
// images built locally for a cluster without registry access), so what the operator's `build` step asks of an image
// is written next to each: a replacement has to keep that contract. Docker Hub cannot be reached
// from where these were chosen, so each tag's existence was checked in public sources instead.

/// The official Postgres image, the current major (18) on Alpine.
///
/// Tag checked: docker-library/postgres's `18/alpine3.24/Dockerfile` sets `PG_VERSION 18.6`
/// (from which the official-images tooling publishes `18.6-alpine`), and public projects pin
/// `postgres:18.6-alpine`, one as `postgres:18.6-alpine3.23@sha256:697c180dbf24…`.
///
/// Contract used: the entrypoint initialises `PGDATA` with `POSTGRES_USER`/`POSTGRES_PASSWORD`
/// (starting as root, then stepping down to `postgres` with gosu), `pg_isready` is on `PATH`,
/// port 5432. Since 18 the image's own `PGDATA` is `/var/lib/postgresql/18/docker` under a
/// `VOLUME /var/lib/postgresql`; the operator's `build` step sets `PGDATA` explicitly, which every major honours and
/// which also skips 18's refusal to start next to an old-layout data directory (an `emptyDir` is
/// always fresh, so there is nothing that guard could protect).
pub const POSTGRES_IMAGE: &str = "docker.io/library/postgres:18.6-alpine";

/// The official NATS image: 2.12.8, the NATS release FTGO's own tests run against
/// (`infra/install.sh`), on Alpine.
///
/// Tag checked: nats-io/nats-docker has a `2.12.x/alpine3.22` Dockerfile, and public code pins
/// `nats:2.12.8-alpine`, one log with its digest `sha256:36c31459ac1d…`. (2.14 exists too; FTGO is
/// not tested against it yet.)
///
/// Contract used: the image's `docker-entrypoint.sh` runs `nats-server` with the arguments when
/// the first starts with `-`; nothing in it needs root, and JetStream writes only to
/// `--store_dir`.
pub const NATS_IMAGE: &str = "docker.io/library/nats:2.12.8-alpine";

/// HashiCorp's Consul image: 1.22.6, the Consul release FTGO's own tests build
/// (`infra/install.sh`).
///
/// Tag checked: public Terraform and a deployment check pin `hashicorp/consul:1.22.6`, next to
/// `1.22.0`, `1.22.3` and `1.22.5` elsewhere (one with its digest).
///
/// Contract used (hashicorp/consul's `Dockerfile` and `.release/docker/docker-entrypoint.sh`):
/// arguments starting with `agent` become `consul agent -data-dir=/consul/data
/// -config-dir=/consul/config ...`; then, unless `CONSUL_DISABLE_PERM_MGMT` is set, the script
/// chowns those directories and steps down with su-exec, which fails for a non-root user, so
/// the operator's `build` step sets it.
pub const CONSUL_IMAGE: &str = "docker.io/hashicorp/consul:1.22.6";

/// Fabio's own image: 1.7.3.
///
/// Tag checked: fabio's `.goreleaser.yml` publishes a `fabiolb/fabio:<version>` manifest for every
/// release tag, and public Nomad jobs run `docker.io/fabiolb/fabio:1.7.3` (and `1.7.0`). No
/// `1.7.2` image was found referenced anywhere, so this is one patch ahead of the 1.7.2 FTGO's
/// tests build from Go modules (`infra/install.sh`: v1.7.3 is not on the Go module proxy).
///
/// Contract used (fabio's `Dockerfile-goreleaser`): `FROM scratch`, `ENTRYPOINT
/// ["/usr/bin/fabio"]`, `USER nobody` (a name, not a uid), and the binary carries the file
/// capability `cap_net_bind_service=+eip`: a container without `NET_BIND_SERVICE` in its bounding
/// set cannot even exec it ("operation not permitted").
pub const FABIO_IMAGE: &str = "docker.io/fabiolb/fabio:1.7.3";

fn default_postgres_image() -> String {
    POSTGRES_IMAGE.to_owned()
}

fn default_nats_image() -> String {
    NATS_IMAGE.to_owned()
}

fn default_consul_image() -> String {
    CONSUL_IMAGE.to_owned()
}

fn default_fabio_image() -> String {
    FABIO_IMAGE.to_owned()
}

/// How the infrastructure is provided: `External` or `Managed`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InfrastructureMode {
    #[default]
    External,
    Managed,
}

/// A Postgres server and the administrator the operator creates databases and roles with.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresConnection {
    /// Host name or IP address of the Postgres server.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,

    /// TCP port of the Postgres server.
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The name of a Secret in this namespace with keys `username` and `password` of a Postgres
    /// role allowed to create roles and databases (`CREATEROLE` and `CREATEDB`, or a superuser).
    #[schemars(length(min = 1, max = 253))]
    pub admin_secret_name: String,

    /// Prepended to each database and role name (`<prefix>order`), so several FtgoSystems can
    /// share one Postgres server. Lowercase letters, digits and `_`.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[a-z0-9_]{0,30}$"))]
    pub database_prefix: String,
}

/// A NATS server with JetStream enabled.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NatsConnection {
    /// Its URL, `nats://host:port`.
    #[schemars(regex(pattern = r"^nats://[^/\s]+$"))]
    pub url: String,
}

/// A Consul agent's HTTP API.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsulConnection {
    /// Its HTTP address, `http://host:port`.
    #[schemars(regex(pattern = r"^https?://[^/\s]+/?$"))]
    pub url: String,
}

/// What deleting an FtgoSystem (or removing a service from it) does to the service databases.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DatabaseReclaimPolicy {
    #[default]
    Retain,
    Delete,
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FtgoSystemStatus {
    /// The `metadata.generation` this status describes; older means the operator has not
    /// caught up with the latest spec yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, and the conditions that explain it: `DatabasesReady`, `WorkloadsAvailable`,
    /// `ServicesRegistered` (Consul), `RoutesConfigured` (Fabio) and `Degraded`. Each carries
    /// the generation it was computed for.
    #[serde(default)]
    pub conditions: Vec<Condition>,

    /// One entry per service the spec names.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,

    /// `<available>/<named> available`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,

    /// What the operator has written outside Kubernetes for this system, each entry recorded
    /// only once the write succeeded and kept until the finalizer removes it: what deleting the
    /// system has to clean up, and all it waits for. Absent from a status written by an
    /// operator that did not keep this record yet; such a system is cleaned up as before,
    /// everything the spec implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRecord>,
}

/// What one FtgoSystem holds outside Kubernetes: Consul registrations, Fabio route overrides
/// and Postgres databases. The finalizer removes these, and only these.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRecord {
    /// The Consul node, `ftgo-<namespace>-<system>`, that holds the system's service
    /// registrations. Set once a registration on it succeeded (or was found there); absent
    /// while Consul has never been reached, and then deleting the system does not wait for
    /// Consul.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_node: Option<String>,

    /// The Consul KV key holding the system's Fabio route overrides,
    /// `<spec.fabio.kvPath>/ftgo/<namespace>/<system>`. Set once the write succeeded (or the
    /// key was found holding them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabio_routes_key: Option<String>,

    /// The Postgres databases, each with a role of the same name, that exist for the system's
    /// services: added once Postgres confirmed one, removed once it was dropped. Under
    /// `databaseReclaimPolicy: Delete` deleting the system drops these.
    #[serde(default)]
    pub databases: Vec<String>,
}

impl ExternalRecord {
    /// Records that `database` (and its role) exist; the list stays sorted and without repeats,
    /// so the same databases always give an equal record.
    pub fn add_database(&mut self, database: &str) {
        if let Err(at) = self.databases.binary_search_by(|d| d.as_str().cmp(database)) {
            self.databases.insert(at, database.to_owned());
        }
    }

    /// Records that `database` (and its role) were dropped.
    pub fn remove_database(&mut self, database: &str) {
        self.databases.retain(|d| d != database);
    }

    /// Whether nothing at all is recorded outside Kubernetes.
    pub fn is_empty(&self) -> bool {
        self.consul_node.is_none() && self.fabio_routes_key.is_none() && self.databases.is_empty()
    }
}

/// The observed state of one service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The service.
    pub name: ServiceName,
    /// `Available` (every desired replica is up to date and available), `Progressing` (a
    /// rollout or scale-up is under way) or `Stopped` (zero replicas requested).
    pub state: ServiceState,
    /// Replicas the spec asks for.
    pub replicas: i32,
    /// Replicas available according to the Deployment.
    pub available_replicas: i32,
    /// The service's database, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// The state of one service, as reported in `status.services[].state`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Available,
    Progressing,
    Stopped,
}

/// The CustomResourceDefinition, as `crds/` holds it and the operator installs it.
///
/// schemars keeps the line breaks of doc comments, which `kubectl explain` prints as they are,
/// breaking sentences in odd places. Here lines are joined back into paragraphs (a blank line
/// still separates two); that is the only difference from [`FtgoSystem::crd`].
pub fn crd() -> CustomResourceDefinition {
    let mut crd = FtgoSystem::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            unwrap_descriptions(schema);
        }
    }
    crd
}

fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = description
            .split("\n\n")
            .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    for property in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        unwrap_descriptions(property);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(
        items,
    )) = schema.items.as_mut()
    {
        unwrap_descriptions(items);
    }
}

fn default_version() -> String {
    "0.1.0".to_owned()
}

fn default_image_registry() -> String {
    "ghcr.io/ftgo-rs".to_owned()
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_replicas() -> i32 {
    1
}

fn default_postgres_port() -> i32 {
    5432
}

fn default_services() -> Vec<ServiceSpec> {
    ServiceName::ALL
        .into_iter()
        .map(|name| ServiceSpec { name, replicas: default_replicas(), image: None, resources: None })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::EXTERNAL_INFRASTRUCTURE;

    #[test]
    fn a_minimal_spec_gets_every_service_with_one_replica_and_retained_databases() {
        let spec: FtgoSystemSpec = serde_yaml::from_str(EXTERNAL_INFRASTRUCTURE).unwrap();
        assert_eq!(spec.services.len(), 6);
        assert!(spec.services.iter().all(|s| s.replicas == 1));
        assert_eq!(spec.database_reclaim_policy, DatabaseReclaimPolicy::Retain);
        assert_eq!(spec.infrastructure.mode, InfrastructureMode::External);
        assert_eq!(spec.infrastructure.postgres.unwrap().port, 5432);
    }

    #[test]
    fn descriptions_are_paragraphs_not_source_lines() {
        let crd = crd();
        let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
        let spec = &schema.properties.as_ref().unwrap()["spec"];
        let services = &spec.properties.as_ref().unwrap()["services"];
        let description = services.description.as_deref().unwrap();
        assert!(!description.contains('\n'), "{description}");
        assert!(description.starts_with("The services to run, at most one entry per service name. A service left out"));
    }

    #[test]
    fn the_schema_carries_the_rules_the_api_server_enforces() {
        let crd = serde_json::to_string(&crd()).unwrap();
        assert!(crd.contains(r#""x-kubernetes-list-type":"map""#), "services keyed by name");
        assert!(crd.contains("infrastructure.mode External needs"), "the External rule");
        assert!(crd.contains(r#""maximum":20"#), "replicas capped");
        assert!(crd.contains(r#""shortNames":["ftgo"]"#));
        assert!(crd.contains("leave out infrastructure.images"), "images only with Managed");
        assert!(crd.contains("fabio.httpNodePort and fabio.adminNodePort must differ"));
        assert!(crd.contains(r#""maximum":32767"#), "node ports within the node port range");
    }

    #[test]
    fn the_record_keeps_databases_sorted_once_each() {
        let mut record = ExternalRecord::default();
        assert!(record.is_empty());
        for database in ["order", "consumer", "order", "kitchen"] {
            record.add_database(database);
        }
        assert_eq!(record.databases, ["consumer", "kitchen", "order"]);
        record.remove_database("kitchen");
        record.remove_database("absent");
        assert_eq!(record.databases, ["consumer", "order"]);
        assert!(!record.is_empty());
    }

    #[test]
    fn a_status_without_the_record_reads_as_unknown_and_an_empty_record_is_written_out() {
        let legacy: FtgoSystemStatus = serde_json::from_value(serde_json::json!({"conditions": []})).unwrap();
        assert_eq!(legacy.external, None);
        let status = FtgoSystemStatus { external: Some(ExternalRecord::default()), ..FtgoSystemStatus::default() };
        let written = serde_json::to_value(&status).unwrap();
        assert_eq!(written["external"], serde_json::json!({"databases": []}));
        let read: FtgoSystemStatus = serde_json::from_value(written).unwrap();
        assert_eq!(read.external, Some(ExternalRecord::default()));
    }

    #[test]
    fn managed_images_default_field_by_field_to_the_public_images() {
        let spec: FtgoSystemSpec = serde_yaml::from_str(
            r#"
            infrastructure:
              mode: Managed
              images: {nats: "ftgo.local/nats:2.12.8"}
            "#,
        )
        .unwrap();
        let images = spec.infrastructure.images.unwrap();
        assert_eq!(images.nats, "ftgo.local/nats:2.12.8");
        assert_eq!(images.postgres, POSTGRES_IMAGE);
        assert_eq!(images.consul, CONSUL_IMAGE);
        assert_eq!(images.fabio, FABIO_IMAGE);
        assert_eq!((spec.fabio.http_node_port, spec.fabio.admin_node_port), (30080, 30998));
    }

    /// `kubectl explain` shows the descriptions, which spell the default images out; they must
    /// say what the schema's (and the operator's) defaults really are.
    #[test]
    fn the_image_descriptions_name_the_real_defaults() {
        let crd = crd();
        let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
        let field = |schema: &JSONSchemaProps, name: &str| schema.properties.as_ref().unwrap()[name].clone();
        let images = field(&field(&field(schema, "spec"), "infrastructure"), "images");
        let defaults =
            [("postgres", POSTGRES_IMAGE), ("nats", NATS_IMAGE), ("consul", CONSUL_IMAGE), ("fabio", FABIO_IMAGE)];
        for (name, default) in defaults {
            let property = field(&images, name);
            assert_eq!(property.default.unwrap().0, serde_json::json!(default), "{name}");
            let description = property.description.unwrap();
            assert!(description.contains(&format!("default `{default}`")), "{name}: {description}");
        }
    }
}
