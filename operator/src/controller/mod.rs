//! The controller: one reconcile per FtgoSystem change (or change of anything it owns), as a
//! pipeline of read → validate → build → apply → status, and a finalizer for what Kubernetes'
//! garbage collector cannot clean up: Consul registrations, Fabio routes and databases.
//!
//! Every step is idempotent, and a reconcile that finds everything as it should be writes
//! nothing: children are applied with server-side apply (which the API server turns into a
//! no-op when the operator's fields already have these values), and status is compared before
//! it is written. That is what makes an operator restart, or a second replica taking over,
//! invisible to everything watching.

use std::{fmt::Debug, future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        finalizer::{Event as Finalizer, finalizer},
        reflector::ObjectRef,
        watcher,
    },
};
use serde_json::json;
use tracing::warn;

use ftgo_platform::consul::Consul;

use crate::{
    crd::{ExternalRecord, FtgoSystem, FtgoSystemStatus, InfrastructureMode},
    metrics::Metrics,
    names::{self, FIELD_MANAGER, LABEL_INSTANCE, LABEL_MANAGED_BY},
};

pub mod apply;
pub mod build;
mod cleanup;
pub mod status;
pub mod validate;

use apply::{
    Children, apply_desired, apply_one,
    databases::{AdminLoginError, drop_databases, ensure_databases, secret_text},
    delete_orphans,
    postgres::{DatabaseError, generate_password},
    registration::{configure_routes, register},
};
use build::managed;
use cleanup::cleanup;
pub use cleanup::{CLEANUP_SKIPPED, CleanupBlocked, SKIP_CLEANUP_ANNOTATION};
use status::Observations;
use validate::{System, validate};

/// Held on every FtgoSystem until what `status.external` records of it is deregistered from
/// Consul and (under `Delete`) dropped from Postgres, or [`SKIP_CLEANUP_ANNOTATION`] lets it go.
pub const FINALIZER: &str = "ftgo.dev/cleanup";

/// How often a healthy system is looked at again even when nothing changed, to repair drift
/// the watches cannot see (a database dropped by hand).
const RESYNC_READY: Duration = Duration::from_secs(300);
/// How soon a system that is not ready yet is looked at again.
const RESYNC_PENDING: Duration = Duration::from_secs(30);
/// How soon a failed reconcile is retried.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// Why a reconcile (or one of its steps) failed. Each variant keeps its cause as `source`, and
/// names itself in metrics, Events and the `Degraded` condition through [`Error::reason`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the FtgoSystem has no namespace")]
    NotNamespaced,
    /// The administrator's login to Postgres could not be read from its Secret.
    #[error("the Postgres administrator's login: {0}")]
    AdminLogin(#[source] AdminLoginError),
    #[error("Postgres: {0}")]
    Database(#[from] DatabaseError),
    /// Applying the desired objects failed (the step's cause inside).
    #[error("applying the desired objects: {0}")]
    ApplyFailed(#[source] kube::Error),
    /// Deleting what the spec no longer names failed.
    #[error("deleting what the spec no longer names: {0}")]
    OrphanDeletionFailed(#[source] Box<Error>),
    /// Something outside Kubernetes still holds the deleted system's data.
    #[error("cleanup blocked: {0}")]
    CleanupBlocked(#[source] CleanupBlocked),
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
            Error::AdminLogin(_) => "AdminLoginUnavailable",
            Error::Database(_) => "DatabaseFailed",
            Error::ApplyFailed(_) => "ApplyFailed",
            Error::OrphanDeletionFailed(_) => "OrphanDeletionFailed",
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
            let admin_secret = names::admin_secret_name(&system.name);
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

    // What the system holds outside Kubernetes: what earlier reconciles recorded, plus what this
    // one writes (each added only once its write succeeded), minus what it drops.
    let mut record = object.status.as_ref().and_then(|s| s.external.clone()).unwrap_or_default();
    let (credentials, databases) = ensure_databases(&system, &children.secrets, ctx, object, &mut record).await;
    let mut desired = build::build(&system, &credentials);
    if let Some(infrastructure) = infrastructure {
        desired.secrets.extend(infrastructure.secrets);
        desired.deployments.extend(infrastructure.deployments);
        desired.services.extend(infrastructure.services);
    }
    let mut failure = None;
    let (deployments, services) = match apply_desired(&ctx.client, &desired, &children, &mut changed).await {
        Ok(applied) => applied,
        Err(err) => {
            failure = Some(Error::ApplyFailed(err));
            (children.deployments.clone(), children.services.clone())
        }
    };
    let mut deleted = Vec::new();
    if failure.is_none()
        && let Err(err) = delete_orphans(&system, &desired, &children, ctx, &mut deleted, &mut record).await
    {
        failure = Some(Error::OrphanDeletionFailed(Box::new(err)));
    }
    if !changed.is_empty() {
        ctx.event(object, EventType::Normal, "Applied", format!("created or updated {}", changed.join(", "))).await;
    }
    if !deleted.is_empty() {
        ctx.event(object, EventType::Normal, "Deleted", format!("deleted {}", deleted.join(", "))).await;
    }
    if let Some(err) = &failure {
        ctx.event(object, EventType::Warning, err.reason(), err.to_string()).await;
    }

    let service_states: Vec<_> = system
        .services
        .iter()
        .map(|spec| {
            let name = names::child_name(&system.name, spec.name);
            let deployment = deployments.iter().find(|d| d.name_any() == name);
            let database = credentials.get(&spec.name).map(|c| c.database.clone());
            status::service_status(spec, deployment, database)
        })
        .collect();
    let (registrations, routes) = match Consul::new(&system.consul.url) {
        Ok(consul) => {
            let registered = register(&system, &consul, &services, &service_states, ctx, object, &mut record).await;
            (registered, configure_routes(&system, &consul, ctx, object, &mut record).await)
        }
        Err(invalid) => (Err(invalid.to_string()), Err(invalid.to_string())),
    };
    let observations = Observations {
        generation: system.generation,
        services: service_states,
        databases,
        registrations,
        routes,
        failure: failure.as_ref().map(|err| (err.reason().to_owned(), err.to_string())),
        external: record,
    };
    let ready = write_status(object, &system, &observations, ctx).await?;

    match failure {
        Some(err) => Err(err),
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
    for failing in status::new_failures(previous, &next) {
        let note = format!("{}: {}", failing.type_, failing.message);
        ctx.event(object, EventType::Warning, &failing.reason, note).await;
    }
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

/// Reports in status that the system is stuck (`Degraded=True` and `Ready=False`, both with
/// `reason`), and as a Warning Event when that is news. Best effort: during a cleanup the
/// namespace may already be going.
async fn degrade(object: &FtgoSystem, ctx: &Context, reason: &str, why: &str) {
    let generation = object.metadata.generation.unwrap_or_default();
    // A first status records, truthfully, that nothing was written outside Kubernetes yet (a
    // status without the record would mean "written by an operator that kept none").
    let mut next = object.status.clone().unwrap_or_else(|| FtgoSystemStatus {
        external: Some(ExternalRecord::default()),
        ..FtgoSystemStatus::default()
    });
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
