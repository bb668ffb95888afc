//! Step four of the pipeline, the one that writes: the operator's children in the API server,
//! read by label, applied by server-side apply, and deleted when the spec no longer names them;
//! the per-service databases ([`databases`], through [`postgres`]); the Consul registrations and
//! Fabio routes ([`registration`]).

pub mod databases;
pub mod postgres;
pub mod registration;

use std::fmt::Debug;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use ftgo_catalog::ServiceName;

use crate::{
    controller::{build::Desired, validate::System},
    crd::{DatabaseReclaimPolicy, ExternalRecord},
    names::{FIELD_MANAGER, LABEL_COMPONENT, instance_selector},
};

use super::{Context, Error};
use databases::{admin_login, secret_text};
use postgres::Admin;

/// What the operator already made for one FtgoSystem, found by its labels.
#[derive(Default)]
pub(super) struct Children {
    pub(super) secrets: Vec<Secret>,
    pub(super) config_maps: Vec<ConfigMap>,
    pub(super) deployments: Vec<Deployment>,
    pub(super) services: Vec<Service>,
}

pub(super) async fn list<K>(client: &Client, namespace: &str, selector: &str) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default().labels(selector)).await?.items)
}

impl Children {
    pub(super) async fn read(client: &Client, system: &System) -> Result<Self, kube::Error> {
        let selector = instance_selector(&system.name);
        let ns = system.namespace.as_str();
        Ok(Self {
            secrets: list(client, ns, &selector).await?,
            config_maps: list(client, ns, &selector).await?,
            deployments: list(client, ns, &selector).await?,
            services: list(client, ns, &selector).await?,
        })
    }
}

/// Applies every desired object with server-side apply; records the ones whose
/// `resourceVersion` moved (created or really changed). Returns the applied Deployments (whose
/// status the API server returns with them) and Services (with their cluster IPs).
pub(super) async fn apply_desired(
    client: &Client,
    desired: &Desired,
    live: &Children,
    changed: &mut Vec<String>,
) -> Result<(Vec<Deployment>, Vec<Service>), kube::Error> {
    for secret in &desired.secrets {
        apply_one(client, secret, &live.secrets, changed).await?;
    }
    for config_map in &desired.config_maps {
        apply_one(client, config_map, &live.config_maps, changed).await?;
    }
    let mut deployments = Vec::new();
    for deployment in &desired.deployments {
        deployments.push(apply_one(client, deployment, &live.deployments, changed).await?);
    }
    let mut services = Vec::new();
    for service in &desired.services {
        services.push(apply_one(client, service, &live.services, changed).await?);
    }
    Ok((deployments, services))
}

pub(super) async fn apply_one<K>(
    client: &Client,
    object: &K,
    live: &[K],
    changed: &mut Vec<String>,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    // `force`: the operator is the authority on these fields; a conflicting manager (someone's
    // `kubectl edit`) is overruled rather than failing every reconcile.
    let applied = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await?;
    let before = live.iter().find(|o| o.name_any() == name).and_then(|o| o.resource_version());
    if before != applied.resource_version() {
        changed.push(format!("{} {name}", K::kind(&())));
    }
    Ok(applied)
}

/// Deletes the children of services the spec no longer names. A removed service's database is
/// dropped too under `Delete` (and leaves `record`); its credentials Secret goes only once that
/// worked, so a failed drop is retried with the credentials still at hand.
pub(super) async fn delete_orphans(
    system: &System,
    desired: &Desired,
    live: &Children,
    ctx: &Context,
    deleted: &mut Vec<String>,
    record: &mut ExternalRecord,
) -> Result<(), Error> {
    let client = &ctx.client;
    let ns = system.namespace.as_str();
    delete_unwanted(client, ns, &live.config_maps, &desired.config_maps, deleted).await?;
    delete_unwanted(client, ns, &live.deployments, &desired.deployments, deleted).await?;
    delete_unwanted(client, ns, &live.services, &desired.services, deleted).await?;

    let orphans: Vec<&Secret> = live
        .secrets
        .iter()
        .filter(|s| !desired.secrets.iter().any(|d| d.name_any() == s.name_any()))
        .filter(|s| owner_service(*s).is_none_or(|service| !system.named(service)))
        .collect();
    if orphans.is_empty() {
        return Ok(());
    }
    if system.database_reclaim_policy == DatabaseReclaimPolicy::Delete {
        let login = admin_login(client, system).await.map_err(Error::AdminLogin)?;
        let mut admin = Admin::connect(&system.postgres, &login).await?;
        for secret in &orphans {
            if let (Some(database), Some(role)) = (secret_text(secret, "database"), secret_text(secret, "username")) {
                admin.drop(&database, &role).await?;
                record.remove_database(&database);
                deleted.push(format!("database {database}"));
            }
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for secret in orphans {
        delete_tolerating_absence(&secrets, &secret.name_any()).await?;
        deleted.push(format!("Secret {}", secret.name_any()));
    }
    Ok(())
}

pub(super) fn owner_service(object: &impl Resource) -> Option<ServiceName> {
    object.meta().labels.as_ref()?.get(LABEL_COMPONENT).and_then(|c| ServiceName::parse(c))
}

pub(super) async fn delete_unwanted<K>(
    client: &Client,
    namespace: &str,
    live: &[K],
    desired: &[K],
    deleted: &mut Vec<String>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    for object in live.iter().filter(|o| !desired.iter().any(|d| d.name_any() == o.name_any())) {
        delete_tolerating_absence(&api, &object.name_any()).await?;
        deleted.push(format!("{} {}", K::kind(&()), object.name_any()));
    }
    Ok(())
}

pub(super) async fn delete_tolerating_absence<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}
