//! Every name and label the operator gives what it makes: the children's names, their
//! `app.kubernetes.io/*` labels, the selectors that find them again, and the names the system goes
//! by in Consul and Fabio. One place, so that what `build` writes and what `apply`, `cleanup` and
//! the watches look for cannot drift apart.

use std::collections::BTreeMap;

use ftgo_catalog::ServiceName;

use crate::controller::validate::System;

/// The field manager of every server-side apply: the operator owns exactly the fields it sets.
pub const FIELD_MANAGER: &str = "ftgo-operator";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";

/// `<system>-<service>`: the name of a service's ConfigMap, Deployment and Service.
pub fn child_name(system: &str, service: ServiceName) -> String {
    format!("{system}-{service}")
}

/// `<system>-<service>-database`: the Secret holding a service's database credentials.
pub fn credentials_secret_name(system: &str, service: ServiceName) -> String {
    format!("{system}-{service}-database")
}

/// The database (and role) name of a service: the optional prefix and the service's database.
pub fn database_name(system: &System, service: ServiceName) -> Option<String> {
    service.database().map(|db| format!("{}{db}", system.postgres.database_prefix))
}

/// Selects every object this operator made for one FtgoSystem: what orphan deletion lists.
pub fn instance_selector(system: &str) -> String {
    format!("{LABEL_INSTANCE}={system},{LABEL_MANAGED_BY}={FIELD_MANAGER}")
}

/// The labels that pick a service's pods. Fixed for the Deployment's lifetime (a selector is
/// immutable), so the version is not among them.
pub fn selector_labels(system: &str, service: ServiceName) -> BTreeMap<String, String> {
    app_selector_labels(system, service.binary())
}

/// The labels that pick the pods of `app`: a service's binary, or a part of the managed
/// infrastructure (`postgres`, `nats`, ...).
pub fn app_selector_labels(system: &str, app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_NAME.to_owned(), app.to_owned()), (LABEL_INSTANCE.to_owned(), system.to_owned())])
}

/// The standard `app.kubernetes.io/*` labels of every object made for `service`.
pub fn labels(system: &System, service: ServiceName) -> BTreeMap<String, String> {
    app_labels(system, service.binary(), service.as_str())
}

/// The standard `app.kubernetes.io/*` labels of every object made for `app` (see
/// [`app_selector_labels`]), which plays the role `component` in the system.
pub fn app_labels(system: &System, app: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = app_selector_labels(&system.name, app);
    labels.extend([
        (LABEL_COMPONENT.to_owned(), component.to_owned()),
        (LABEL_PART_OF.to_owned(), "ftgo".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
        (LABEL_VERSION.to_owned(), system.version.clone()),
    ]);
    labels
}

/// `<system>-postgres-admin`: the generated superuser password of the managed Postgres.
pub fn admin_secret_name(system: &str) -> String {
    format!("{system}-postgres-admin")
}

/// The Consul node the system's instances are registered on. One node per system makes
/// cleanup a single deregistration, and stale entries easy to find.
pub fn node_name(system: &System) -> String {
    format!("ftgo-{}-{}", system.namespace, system.name)
}

/// The Consul KV key holding this system's Fabio route overrides. Fabio reads every key under
/// its `registry.consul.kvpath` (`spec.fabio.kvPath`, `fabio/config` by default) as one routing
/// table, so each system owns exactly one key and never edits another's.
pub fn routes_key(system: &System) -> String {
    format!("{}/ftgo/{}/{}", system.fabio_kv_path, system.namespace, system.name)
}

/// Marks a registration as this system's: Fabio's route overrides select instances by it.
pub fn system_tag(system: &System) -> String {
    format!("ftgo-system={}.{}", system.namespace, system.name)
}
