//! The controller: one reconcile per FtgoSystem change (or change of anything it owns), as a
//! pipeline of read → validate → build → apply → status, and a finalizer for what Kubernetes'
//! garbage collector cannot clean up: Consul registrations, Fabio routes and databases.
//!
//! Every step is idempotent, and a reconcile that finds everything as it should be writes
//! nothing: children are applied with server-side apply (which the API server turns into a
//! no-op when the operator's fields already have these values), and status is compared before
//! it is written. That is what makes an operator restart, or a second replica taking over,
//! invisible to everything watching.

use std::{collections::BTreeMap, fmt::Debug, future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        finalizer::{Event as Finalizer, finalizer},
        reflector::ObjectRef,
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    catalog::ServiceName,
    consul::Consul,
    crd::{DatabaseReclaimPolicy, FtgoSystem, InfrastructureMode},
    database::{Admin, AdminLogin, generate_password},
    desired::{
        self, DatabaseCredentials, Desired, FIELD_MANAGER, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY,
        credentials_secret_name, database_name, instance_selector,
    },
    discovery, managed,
    metrics::Metrics,
    status::{self, Observations},
    validate::{System, validate},
};

/// Held on every FtgoSystem until it is deregistered from Consul and its databases (under
/// `Delete`) are dropped.
pub const FINALIZER: &str = "ftgo.dev/cleanup";

/// How often a healthy system is looked at again even when nothing changed, to repair drift
/// the watches cannot see (a database dropped by hand).
const RESYNC_READY: Duration = Duration::from_secs(300);
/// How soon a system that is not ready yet is looked at again.
const RESYNC_PENDING: Duration = Duration::from_secs(30);
/// How soon a failed reconcile is retried.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the FtgoSystem has no namespace")]
    NotNamespaced,
    #[error("{0}")]
    Step(String),
    #[error("cleanup blocked: {0}")]
    CleanupBlocked(String),
}

impl Error {
    /// A short CamelCase name for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.reason()
                }
                _ => "FinalizerError",
            },
            Error::NotNamespaced => "NotNamespaced",
            Error::Step(_) => "ReconcileFailed",
            Error::CleanupBlocked(_) => "CleanupBlocked",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// `instance` names this replica in Events (`reportingInstance`), e.g. the pod name.
    pub fn new(client: Client, instance: Option<String>, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.to_owned(), instance };
        Self { recorder: Recorder::new(client.clone(), reporter), client, metrics }
    }

    async fn event(&self, system: &FtgoSystem, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // An Event is a courtesy to people watching; failing to write one must not fail the
        // reconcile (the namespace may be terminating).
        if let Err(err) = self.recorder.publish(&event, &system.object_ref(&())).await {
            warn!(%err, reason, "could not publish an Event");
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Runs the controller until `shutdown` completes, then lets running reconciles finish.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    // Only the operator's own children are watched (and cached), not every Secret in the cluster.
    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}"));
    Controller::new(Api::<FtgoSystem>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Deployment>::all(client.clone()), children.clone())
        .owns(Api::<Service>::all(client.clone()), children.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), children.clone())
        .owns(Api::<Secret>::all(client.clone()), children.clone())
        // Readiness changes reach Consul through EndpointSlices, which inherit the Service's
        // labels (and so the system's) from the EndpointSlice controller.
        .watches(Api::<EndpointSlice>::all(client), children, |slice| {
            let system = slice.labels().get(LABEL_INSTANCE)?.clone();
            Some(ObjectRef::new(&system).within(&slice.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(system = %object, "reconciled"),
                Err(err) => warn!(%err, "reconcile failed"),
            }
        })
        .await;
}

#[tracing::instrument(skip_all, fields(namespace = system.namespace(), system = %system.name_any()))]
pub async fn reconcile(system: Arc<FtgoSystem>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_timed(system, &ctx).await;
    ctx.metrics.reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

async fn reconcile_timed(system: Arc<FtgoSystem>, ctx: &Context) -> Result<Action, Error> {
    let namespace = system.namespace().ok_or(Error::NotNamespaced)?;
    let api: Api<FtgoSystem> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, system, |event| async {
        match event {
            Finalizer::Apply(system) => apply(&system, ctx).await,
            Finalizer::Cleanup(system) => cleanup(&system, ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)))
}

pub fn error_policy(system: Arc<FtgoSystem>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(system = %system.name_any(), reason = err.reason(), %err, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER_ERROR)
}

/// What the operator already made for one FtgoSystem, found by its labels.
#[derive(Default)]
struct Children {
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
}

async fn list<K>(client: &Client, namespace: &str, selector: &str) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default().labels(selector)).await?.items)
}

impl Children {
    async fn read(client: &Client, system: &System) -> Result<Self, kube::Error> {
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

async fn apply(object: &FtgoSystem, ctx: &Context) -> Result<Action, Error> {
    let system = match validate(object) {
        Ok(system) => system,
        // Retrying cannot fix a spec; the next change to it will be reconciled.
        Err(invalid) => {
            degrade(object, ctx, "InvalidSpec", &invalid.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let mut children = Children::read(&ctx.client, &system).await?;
    let mut changed = Vec::new();
    let infrastructure = match system.mode {
        InfrastructureMode::External => None,
        InfrastructureMode::Managed => {
            // The managed Postgres's superuser password: generated once, then kept in its
            // Secret. The Secret is applied first, so the database step below can log in with it.
            let admin_secret = managed::admin_secret_name(&system.name);
            let existing = children.secrets.iter().find(|s| s.name_any() == admin_secret);
            let password = existing.and_then(|s| secret_text(s, "password")).unwrap_or_else(generate_password);
            let infrastructure = managed::build(&system, &password);
            for secret in &infrastructure.secrets {
                let applied = apply_one(&ctx.client, secret, &children.secrets, &mut changed).await?;
                children.secrets.retain(|s| s.name_any() != applied.name_any());
                children.secrets.push(applied);
            }
            Some(infrastructure)
        }
    };

    let (credentials, databases) = ensure_databases(&system, &children.secrets, ctx, object).await;
    let mut desired = desired::build(&system, &credentials);
    if let Some(infrastructure) = infrastructure {
        desired.secrets.extend(infrastructure.secrets);
        desired.deployments.extend(infrastructure.deployments);
        desired.services.extend(infrastructure.services);
    }
    let mut failure = None;
    let (deployments, services) = match apply_desired(&ctx.client, &desired, &children, &mut changed).await {
        Ok(applied) => applied,
        Err(err) => {
            failure = Some(("ApplyFailed".to_owned(), err.to_string()));
            (children.deployments.clone(), children.services.clone())
        }
    };
    let mut deleted = Vec::new();
    if failure.is_none()
        && let Err(err) = delete_orphans(&system, &desired, &children, ctx, &mut deleted).await
    {
        failure = Some(("OrphanDeletionFailed".to_owned(), err.to_string()));
    }
    if !changed.is_empty() {
        ctx.event(object, EventType::Normal, "Applied", format!("created or updated {}", changed.join(", "))).await;
    }
    if !deleted.is_empty() {
        ctx.event(object, EventType::Normal, "Deleted", format!("deleted {}", deleted.join(", "))).await;
    }
    if let Some((reason, message)) = &failure {
        ctx.event(object, EventType::Warning, reason, message.clone()).await;
    }

    let service_states: Vec<_> = system
        .services
        .iter()
        .map(|spec| {
            let name = desired::child_name(&system.name, spec.name);
            let deployment = deployments.iter().find(|d| d.name_any() == name);
            let database = credentials.get(&spec.name).map(|c| c.database.clone());
            status::service_status(spec, deployment, database)
        })
        .collect();
    let consul = Consul::new(&system.consul.url);
    let registrations = register(&system, &consul, &services, &service_states, ctx, object).await;
    let routes = configure_routes(&system, &consul, ctx, object).await;
    let observations = Observations {
        generation: system.generation,
        services: service_states,
        databases,
        registrations,
        routes,
        failure,
    };
    let ready = write_status(object, &system, &observations, ctx).await?;

    match observations.failure {
        Some((_, message)) => Err(Error::Step(message)),
        None if ready => Ok(Action::requeue(RESYNC_READY)),
        None => Ok(Action::requeue(RESYNC_PENDING)),
    }
}

/// Writes the status `observations` call for, unless the object already has it. Returns
/// whether the system is ready.
async fn write_status(
    object: &FtgoSystem,
    system: &System,
    observations: &Observations,
    ctx: &Context,
) -> Result<bool, Error> {
    let previous = object.status.as_ref();
    let next = status::status(system, previous, observations, &status::now());
    let ready = status::ready(Some(&next)).is_some_and(|c| c.status == "True");
    if previous == Some(&next) {
        return Ok(ready);
    }
    let api: Api<FtgoSystem> = Api::namespaced(ctx.client.clone(), &system.namespace);
    api.patch_status(&system.name, &PatchParams::default(), &Patch::Merge(json!({ "status": next }))).await?;
    let was_ready = status::ready(previous).map(|c| c.status.as_str());
    let now_ready = status::ready(Some(&next));
    if let Some(condition) = now_ready
        && was_ready != Some(condition.status.as_str())
    {
        let type_ = if ready { EventType::Normal } else { EventType::Warning };
        let reason = if ready { "Ready" } else { "NotReady" };
        ctx.event(object, type_, reason, condition.message.clone()).await;
    }
    Ok(ready)
}

/// Reads the administrator login from the Secret the spec names.
async fn admin_login(client: &Client, system: &System) -> Result<AdminLogin, String> {
    let name = &system.postgres.admin_secret_name;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &system.namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|err| format!("reading Secret {name}: {err}"))?
        .ok_or_else(|| format!("the Postgres admin Secret {name} does not exist"))?;
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| format!("the Postgres admin Secret {name} has no key {key:?}"))
    };
    Ok(AdminLogin { username: field("username")?, password: field("password")? })
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// Makes sure every named service's role and database exist. Returns the credentials whose
/// database is known to accept them (only those are written into Secrets, so a Secret never
/// holds a password Postgres does not know), and what went wrong, if anything.
async fn ensure_databases(
    system: &System,
    secrets: &[Secret],
    ctx: &Context,
    object: &FtgoSystem,
) -> (BTreeMap<ServiceName, DatabaseCredentials>, Result<(), String>) {
    let mut wanted = Vec::new();
    for spec in &system.services {
        let Some(database) = database_name(system, spec.name) else { continue };
        let secret_name = credentials_secret_name(&system.name, spec.name);
        let existing = secrets.iter().find(|s| s.name_any() == secret_name).and_then(|s| secret_text(s, "password"));
        let is_new = existing.is_none();
        let password = existing.unwrap_or_else(generate_password);
        wanted.push((spec.name, DatabaseCredentials { role: database.clone(), database, password }, is_new));
    }
    let mut ready = BTreeMap::new();
    if wanted.is_empty() {
        return (ready, Ok(()));
    }
    let admin = match admin_login(&ctx.client, system).await {
        Ok(login) => Admin::connect(&system.postgres, &login).await.map_err(|e| e.to_string()),
        Err(why) => Err(why),
    };
    let mut admin = match admin {
        Ok(admin) => admin,
        Err(why) => {
            // Keep the Secrets that exist: the databases behind them were made before.
            let existing = wanted.into_iter().filter(|(_, _, is_new)| !is_new);
            ready.extend(existing.map(|(service, credentials, _)| (service, credentials)));
            return (ready, Err(why));
        }
    };
    let mut problems = Vec::new();
    let mut created = Vec::new();
    for (service, credentials, is_new) in wanted {
        match admin.ensure(&credentials, is_new).await {
            Ok(true) => {
                created.push(credentials.database.clone());
                ready.insert(service, credentials);
            }
            Ok(false) => {
                ready.insert(service, credentials);
            }
            Err(err) => {
                problems.push(format!("{service}: {err}"));
                if !is_new {
                    ready.insert(service, credentials);
                }
            }
        }
    }
    if !created.is_empty() {
        let note = format!("created or updated databases and roles {}", created.join(", "));
        ctx.event(object, EventType::Normal, "DatabasesProvisioned", note).await;
    }
    if problems.is_empty() { (ready, Ok(())) } else { (ready, Err(problems.join("; "))) }
}

/// Applies every desired object with server-side apply; records the ones whose
/// `resourceVersion` moved (created or really changed). Returns the applied Deployments (whose
/// status the API server returns with them) and Services (with their cluster IPs).
async fn apply_desired(
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

async fn apply_one<K>(client: &Client, object: &K, live: &[K], changed: &mut Vec<String>) -> Result<K, kube::Error>
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
/// dropped too under `Delete`; its credentials Secret goes only once that worked, so a failed
/// drop is retried with the credentials still at hand.
async fn delete_orphans(
    system: &System,
    desired: &Desired,
    live: &Children,
    ctx: &Context,
    deleted: &mut Vec<String>,
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
        let login = admin_login(client, system).await.map_err(Error::Step)?;
        let mut admin = Admin::connect(&system.postgres, &login).await.map_err(|e| Error::Step(e.to_string()))?;
        for secret in &orphans {
            if let (Some(database), Some(role)) = (secret_text(secret, "database"), secret_text(secret, "username")) {
                admin.drop(&database, &role).await.map_err(|e| Error::Step(e.to_string()))?;
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

fn owner_service(object: &impl Resource) -> Option<ServiceName> {
    object.meta().labels.as_ref()?.get(LABEL_COMPONENT).and_then(|c| ServiceName::parse(c))
}

async fn delete_unwanted<K>(
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

async fn delete_tolerating_absence<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Makes Consul hold exactly the system's instances, each with a check that follows its
/// Kubernetes readiness; writes only what differs.
async fn register(
    system: &System,
    consul: &Consul,
    services: &[Service],
    states: &[crate::crd::ServiceStatus],
    ctx: &Context,
    object: &FtgoSystem,
) -> Result<(), String> {
    let names: Vec<String> = system.services.iter().map(|s| desired::child_name(&system.name, s.name)).collect();
    // `in ()` is not a valid selector: a system without services has no slices to look for.
    let slices: Vec<EndpointSlice> = if names.is_empty() {
        Vec::new()
    } else {
        let selector = format!("kubernetes.io/service-name in ({})", names.join(","));
        list(&ctx.client, &system.namespace, &selector).await.map_err(|e| format!("listing EndpointSlices: {e}"))?
    };
    let mut instances = BTreeMap::new();
    for (spec, state) in system.services.iter().zip(states) {
        let name = desired::child_name(&system.name, spec.name);
        let own: Vec<EndpointSlice> =
            slices.iter().filter(|s| s.labels().get("kubernetes.io/service-name") == Some(&name)).cloned().collect();
        let kube_service = services.iter().find(|s| s.name_any() == name);
        instances.insert(spec.name, discovery::instances(spec.name, &own, kube_service, state.available_replicas));
    }
    let desired = discovery::registrations(system, &instances);
    let node = discovery::node_name(system);
    let registered = consul.node_services(&node).await.map_err(|e| e.to_string())?;
    let checks = consul.node_checks(&node).await.map_err(|e| e.to_string())?;
    let (write, remove) = discovery::plan(&desired, &registered, &checks);
    let mut changed = Vec::new();
    for registration in write {
        consul.register(registration).await.map_err(|e| e.to_string())?;
        changed.push(format!("{} ({})", registration.service.id, registration.checks[0].status));
    }
    for id in &remove {
        consul.deregister_service(&node, id).await.map_err(|e| e.to_string())?;
    }
    if !changed.is_empty() {
        ctx.event(object, EventType::Normal, "Registered", format!("registered in Consul: {}", changed.join(", ")))
            .await;
    }
    if !remove.is_empty() {
        let note = format!("deregistered from Consul: {}", remove.join(", "));
        ctx.event(object, EventType::Normal, "Deregistered", note).await;
    }
    Ok(())
}

/// Writes the system's Fabio route overrides under its own KV key, if they differ.
async fn configure_routes(system: &System, consul: &Consul, ctx: &Context, object: &FtgoSystem) -> Result<(), String> {
    let key = discovery::routes_key(system);
    let routes = discovery::fabio_routes(system);
    if consul.kv_get(&key).await.map_err(|e| e.to_string())?.as_deref() == Some(routes.as_str()) {
        return Ok(());
    }
    consul.kv_put(&key, &routes).await.map_err(|e| e.to_string())?;
    ctx.event(object, EventType::Normal, "RoutesWritten", format!("wrote Fabio route overrides to Consul KV {key}"))
        .await;
    Ok(())
}

/// Runs while the FtgoSystem is being deleted. The children go with it by owner reference;
/// what remains is outside Kubernetes: the Consul registrations, the Fabio routes and (under
/// `Delete`) the databases. Until this succeeds the finalizer stays, and `status`
/// and a Warning Event say what blocks it.
async fn cleanup(object: &FtgoSystem, ctx: &Context) -> Result<Action, Error> {
    let system = match validate(object) {
        Ok(system) => system,
        // Nothing can be cleaned up without knowing where it is; holding the object forever
        // would not help.
        Err(invalid) => {
            ctx.event(object, EventType::Warning, "CleanupSkipped", invalid.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    if system.mode == InfrastructureMode::Managed {
        // The managed Consul and Postgres are children of the system and go with it, with the
        // registrations and databases they hold; nothing outside Kubernetes remains.
        info!(system = %system.name, namespace = %system.namespace, "cleaned up (managed infrastructure)");
        return Ok(Action::await_change());
    }
    let consul = Consul::new(&system.consul.url);
    let deregistered = async {
        consul.deregister_node(&discovery::node_name(&system)).await?;
        consul.kv_delete(&discovery::routes_key(&system)).await
    };
    if let Err(err) = deregistered.await {
        let why = format!("cannot deregister from Consul: {err}");
        degrade(object, ctx, "CleanupBlocked", &why).await;
        return Err(Error::CleanupBlocked(why));
    }
    if let Err(why) = drop_databases(&system, ctx, object).await {
        degrade(object, ctx, "CleanupBlocked", &why).await;
        return Err(Error::CleanupBlocked(why));
    }
    info!(system = %system.name, namespace = %system.namespace, "cleaned up");
    Ok(Action::await_change())
}

async fn drop_databases(system: &System, ctx: &Context, object: &FtgoSystem) -> Result<(), String> {
    if system.database_reclaim_policy == DatabaseReclaimPolicy::Retain {
        return Ok(());
    }
    let login = match admin_login(&ctx.client, system).await {
        Ok(login) => login,
        Err(why) => {
            // The admin Secret goes when the namespace goes; then there is no way to log in,
            // and waiting would only keep the namespace from ever disappearing.
            let note = format!("databases were not dropped: {why}");
            ctx.event(object, EventType::Warning, "DatabasesNotDropped", note).await;
            return Ok(());
        }
    };
    let mut admin = Admin::connect(&system.postgres, &login).await.map_err(|e| e.to_string())?;
    let mut dropped = Vec::new();
    for service in ServiceName::ALL {
        if let Some(database) = database_name(system, service) {
            admin.drop(&database, &database).await.map_err(|e| e.to_string())?;
            dropped.push(database);
        }
    }
    let note = format!("dropped databases and roles {}", dropped.join(", "));
    ctx.event(object, EventType::Normal, "DatabasesDropped", note).await;
    Ok(())
}

/// Reports in status that the system is stuck (`Degraded=True` and `Ready=False`, both with
/// `reason`), and as a Warning Event when that is news. Best effort: during a cleanup the
/// namespace may already be going.
async fn degrade(object: &FtgoSystem, ctx: &Context, reason: &str, why: &str) {
    let generation = object.metadata.generation.unwrap_or_default();
    let mut next = object.status.clone().unwrap_or_default();
    let checks = [
        status::Check::new(status::READY, false, reason, why),
        status::Check::new(status::DEGRADED, true, reason, why),
    ];
    let stamped = status::conditions(&next.conditions, &checks, generation, &status::now());
    next.conditions.retain(|c| c.type_ != status::READY && c.type_ != status::DEGRADED);
    next.conditions.splice(0..0, stamped);
    if object.status.as_ref() == Some(&next) {
        return;
    }
    ctx.event(object, EventType::Warning, reason, why.to_owned()).await;
    let api: Api<FtgoSystem> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = Patch::Merge(json!({ "status": next }));
    if let Err(err) = api.patch_status(&object.name_any(), &PatchParams::default(), &patch).await {
        warn!(%err, reason, "could not report in status");
    }
}
