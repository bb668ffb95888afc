//! What the finalizer does while an FtgoSystem is being deleted.

use kube::runtime::{controller::Action, events::EventType};
use tracing::info;

use ftgo_platform::consul::Consul;

use crate::{
    controller::validate::validate,
    crd::{FtgoSystem, InfrastructureMode},
    names,
};

use super::{Context, Error, degrade, drop_databases};

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
    let deregistered = async {
        let consul = Consul::new(&system.consul.url)?;
        consul.catalog_deregister_node(&names::node_name(&system)).await?;
        consul.kv_delete(&names::routes_key(&system)).await
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
