//! What the finalizer does while an FtgoSystem is being deleted.

use kube::runtime::{controller::Action, events::EventType};
use tracing::info;

use ftgo_platform::consul::{Consul, ConsulError};

use crate::{
    controller::validate::{System, validate},
    crd::{FtgoSystem, InfrastructureMode},
    names,
};

use super::{Context, DatabaseError, Error, degrade, drop_databases};

/// What still holds a deleted FtgoSystem's data outside Kubernetes, keeping its finalizer.
#[derive(Debug, thiserror::Error)]
pub enum CleanupBlocked {
    /// The system's registrations or Fabio routes could not be removed from Consul.
    #[error("cannot deregister from Consul: {0}")]
    Consul(#[source] ConsulError),
    /// Under `Delete`, the service databases and roles could not be dropped.
    #[error("cannot drop the databases: {0}")]
    Postgres(#[source] DatabaseError),
}

/// Runs while the FtgoSystem is being deleted. The children go with it by owner reference;
/// what remains is outside Kubernetes: the Consul registrations, the Fabio routes and (under
/// `Delete`) the databases. Until this succeeds the finalizer stays, and `status`
/// and a Warning Event say what blocks it.
pub(super) async fn cleanup(object: &FtgoSystem, ctx: &Context) -> Result<Action, Error> {
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
    let cleaned_up = async {
        deregister(&system).await.map_err(CleanupBlocked::Consul)?;
        drop_databases(&system, ctx, object).await.map_err(CleanupBlocked::Postgres)
    };
    if let Err(blocked) = cleaned_up.await {
        degrade(object, ctx, "CleanupBlocked", &blocked.to_string()).await;
        return Err(Error::CleanupBlocked(blocked));
    }
    info!(system = %system.name, namespace = %system.namespace, "cleaned up");
    Ok(Action::await_change())
}

/// Removes the system's node (and with it every registration) from Consul, and its Fabio routes.
async fn deregister(system: &System) -> Result<(), ConsulError> {
    let consul = Consul::new(&system.consul.url)?;
    consul.catalog_deregister_node(&names::node_name(system)).await?;
    consul.kv_delete(&names::routes_key(system)).await
}
