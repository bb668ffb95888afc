//! What the finalizer does while an FtgoSystem is being deleted.
//!
//! It removes what the system holds outside Kubernetes, and only that: `status.external`
//! records each Consul registration node, Fabio KV key and database once it was written (see
//! [`ExternalRecord`]), so a system whose Consul was never reachable has nothing in Consul, and
//! its deletion does not wait for Consul. The annotation [`SKIP_CLEANUP_ANNOTATION`] lets the
//! finalizer go without touching anything outside Kubernetes, and a Warning Event lists what was
//! left behind.

use kube::{Api, ResourceExt, runtime::controller::Action, runtime::events::EventType};
use tracing::{info, warn};

use ftgo_catalog::ServiceName;
use ftgo_platform::consul::{Consul, ConsulError};

use crate::{
    controller::validate::{System, validate},
    crd::{DatabaseReclaimPolicy, ExternalRecord, FtgoSystem, FtgoSystemStatus, InfrastructureMode},
    names,
};

use super::{Context, DatabaseError, Error, degrade, drop_databases};

/// Set to `"true"` on an FtgoSystem, it makes the finalizer let go without cleaning up outside
/// Kubernetes: the escape hatch for a system whose Consul or Postgres is gone for good.
pub const SKIP_CLEANUP_ANNOTATION: &str = "ftgo.dev/skip-cleanup";

/// The reason of the Warning Event that says what a cleanup did not remove.
pub const CLEANUP_SKIPPED: &str = "CleanupSkipped";

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

/// What a deleted system holds outside Kubernetes as far as the operator knows: what the
/// finalizer removes, and the only things it waits for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Holdings {
    /// Whether this comes from the status's record (`false`: the status predates the record,
    /// and this is everything the spec implies).
    pub recorded: bool,
    pub consul_node: Option<String>,
    pub routes_key: Option<String>,
    /// Databases, each with a role of the same name.
    pub databases: Vec<String>,
}

impl Holdings {
    /// From the status the object has now. No status at all: no reconcile got as far as
    /// writing one, so nothing was recorded outside Kubernetes either. A status without the
    /// record was written by an operator that did not keep one: everything the spec implies
    /// (the system's node and KV key, every service's database) may exist.
    pub(crate) fn of(system: &System, status: Option<&FtgoSystemStatus>) -> Self {
        match status.map(|s| s.external.as_ref()) {
            None => Self { recorded: true, ..Self::default() },
            Some(Some(record)) => Self::recorded(record),
            Some(None) => Self {
                recorded: false,
                consul_node: Some(names::node_name(system)),
                routes_key: Some(names::routes_key(system)),
                databases: ServiceName::ALL.into_iter().filter_map(|s| names::database_name(system, s)).collect(),
            },
        }
    }

    fn recorded(record: &ExternalRecord) -> Self {
        Self {
            recorded: true,
            consul_node: record.consul_node.clone(),
            routes_key: record.fabio_routes_key.clone(),
            databases: record.databases.clone(),
        }
    }

    fn in_consul(&self) -> bool {
        self.consul_node.is_some() || self.routes_key.is_some()
    }

    /// What is left outside Kubernetes when the finalizer lets go without cleaning up: the
    /// note of the Warning Event.
    pub(crate) fn left_behind(&self, system: &System) -> String {
        let mut left = Vec::new();
        if let Some(node) = &self.consul_node {
            left.push(format!("Consul node {node} with its service registrations (Consul at {})", system.consul.url));
        }
        if let Some(key) = &self.routes_key {
            left.push(format!("Fabio route overrides at Consul KV key {key} (Consul at {})", system.consul.url));
        }
        if !self.databases.is_empty() {
            let retained = match system.database_reclaim_policy {
                DatabaseReclaimPolicy::Retain => ", kept in any case under databaseReclaimPolicy Retain",
                DatabaseReclaimPolicy::Delete => "",
            };
            let postgres = &system.postgres;
            left.push(format!(
                "Postgres databases and roles {} (Postgres at {}:{}{retained})",
                self.databases.join(", "),
                postgres.host,
                postgres.port
            ));
        }
        let skipped = format!("{SKIP_CLEANUP_ANNOTATION} is \"true\": released without cleaning up outside Kubernetes");
        match (self.recorded, left.is_empty()) {
            (true, true) => format!("{skipped}; the status records nothing written there, nothing is left behind"),
            (true, false) => format!("{skipped}; left behind: {}", left.join("; ")),
            (false, _) => format!(
                "{skipped}; the status predates the record of what was written there, so any of these may be left \
                 behind: {}",
                left.join("; ")
            ),
        }
    }
}

/// Whether the object carries [`SKIP_CLEANUP_ANNOTATION`]` = "true"`.
pub(crate) fn skip_requested(object: &FtgoSystem) -> bool {
    object.annotations().get(SKIP_CLEANUP_ANNOTATION).is_some_and(|v| v == "true")
}

/// Runs while the FtgoSystem is being deleted. The children go with it by owner reference;
/// what remains is outside Kubernetes: what the status records of the Consul registrations,
/// the Fabio routes and (under `Delete`) the databases. Until this succeeds the finalizer stays,
/// and `status` and a Warning Event say what blocks it, unless the object asks to skip it.
pub(super) async fn cleanup(cached: &FtgoSystem, ctx: &Context) -> Result<Action, Error> {
    // The cached object may predate the status the last reconcile wrote, and with it the record
    // of what that reconcile wrote outside Kubernetes: read it again.
    let namespace = cached.namespace().ok_or(Error::NotNamespaced)?;
    let api: Api<FtgoSystem> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(fresh) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let object = &fresh;
    let system = match validate(object) {
        Ok(system) => system,
        // Nothing can be cleaned up without knowing where it is; holding the object forever
        // would not help.
        Err(invalid) => {
            ctx.event(object, EventType::Warning, CLEANUP_SKIPPED, invalid.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    if system.mode == InfrastructureMode::Managed {
        // The managed Consul and Postgres are children of the system and go with it, with the
        // registrations and databases they hold; nothing outside Kubernetes remains.
        info!(system = %system.name, namespace = %system.namespace, "cleaned up (managed infrastructure)");
        return Ok(Action::await_change());
    }
    let holdings = Holdings::of(&system, object.status.as_ref());
    if skip_requested(object) {
        let note = holdings.left_behind(&system);
        warn!(system = %system.name, namespace = %system.namespace, %note, "cleanup skipped");
        ctx.event(object, EventType::Warning, CLEANUP_SKIPPED, note).await;
        return Ok(Action::await_change());
    }
    let cleaned_up = async {
        deregister(&system, &holdings).await.map_err(CleanupBlocked::Consul)?;
        drop_databases(&system, &holdings.databases, ctx, object).await.map_err(CleanupBlocked::Postgres)
    };
    if let Err(blocked) = cleaned_up.await {
        degrade(object, ctx, "CleanupBlocked", &blocked.to_string()).await;
        return Err(Error::CleanupBlocked(blocked));
    }
    info!(system = %system.name, namespace = %system.namespace, "cleaned up");
    Ok(Action::await_change())
}

/// Removes the system's node (and with it every registration) from Consul, and its Fabio routes:
/// those of them it holds. Holding neither needs no Consul at all.
async fn deregister(system: &System, holdings: &Holdings) -> Result<(), ConsulError> {
    if !holdings.in_consul() {
        return Ok(());
    }
    let consul = Consul::new(&system.consul.url)?;
    if let Some(node) = &holdings.consul_node {
        consul.catalog_deregister_node(node).await?;
    }
    if let Some(key) = &holdings.routes_key {
        consul.kv_delete(key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{EXTERNAL_INFRASTRUCTURE, system_with};

    fn system(policy: &str) -> System {
        system_with(&format!(
            "services: [{{name: order}}, {{name: gateway}}]\ndatabaseReclaimPolicy: {policy}{EXTERNAL_INFRASTRUCTURE}"
        ))
    }

    fn status(external: Option<ExternalRecord>) -> FtgoSystemStatus {
        FtgoSystemStatus { external, ..FtgoSystemStatus::default() }
    }

    #[test]
    fn a_system_that_never_reached_consul_holds_nothing_there() {
        let system = system("Delete");
        let record = ExternalRecord { databases: vec!["order".to_owned()], ..ExternalRecord::default() };
        let holdings = Holdings::of(&system, Some(&status(Some(record))));
        assert!(!holdings.in_consul(), "{holdings:?}");
        assert_eq!(holdings.databases, ["order"]);
        assert!(holdings.recorded);
    }

    #[test]
    fn the_record_is_what_cleanup_removes() {
        let system = system("Delete");
        let record = ExternalRecord {
            consul_node: Some("ftgo-food-shop".to_owned()),
            fabio_routes_key: Some("fabio/config/ftgo/food/shop".to_owned()),
            databases: vec!["order".to_owned()],
        };
        let holdings = Holdings::of(&system, Some(&status(Some(record))));
        assert_eq!(holdings.consul_node.as_deref(), Some("ftgo-food-shop"));
        assert_eq!(holdings.routes_key.as_deref(), Some("fabio/config/ftgo/food/shop"));
        assert!(holdings.in_consul());
    }

    #[test]
    fn no_status_means_nothing_was_written_and_a_status_without_record_means_everything_may_have_been() {
        let system = system("Delete");
        let none = Holdings::of(&system, None);
        assert_eq!(none, Holdings { recorded: true, ..Holdings::default() });
        let legacy = Holdings::of(&system, Some(&status(None)));
        assert!(!legacy.recorded);
        assert_eq!(legacy.consul_node.as_deref(), Some("ftgo-food-shop"));
        assert_eq!(legacy.routes_key.as_deref(), Some("fabio/config/ftgo/food/shop"));
        // Every service's database, as the operator before the record dropped them.
        assert_eq!(legacy.databases, ["consumer", "kitchen", "accounting", "order", "orchestrator"]);
    }

    #[test]
    fn the_left_behind_note_names_every_recorded_holding_and_where_it_is() {
        let record = ExternalRecord {
            consul_node: Some("ftgo-food-shop".to_owned()),
            fabio_routes_key: Some("fabio/config/ftgo/food/shop".to_owned()),
            databases: vec!["order".to_owned()],
        };
        let system = system("Delete");
        let note = Holdings::of(&system, Some(&status(Some(record.clone())))).left_behind(&system);
        assert!(note.starts_with("ftgo.dev/skip-cleanup is \"true\""), "{note}");
        assert!(
            note.contains("Consul node ftgo-food-shop with its service registrations (Consul at http://consul:8500)")
        );
        assert!(note.contains("Fabio route overrides at Consul KV key fabio/config/ftgo/food/shop"), "{note}");
        assert!(note.contains("Postgres databases and roles order (Postgres at db:5432)"), "{note}");
        assert!(!note.contains("Retain"), "{note}");

        let retained = system_with(&format!("services: [{{name: order}}]{EXTERNAL_INFRASTRUCTURE}"));
        let note = Holdings::of(&retained, Some(&status(Some(record)))).left_behind(&retained);
        assert!(note.contains("kept in any case under databaseReclaimPolicy Retain"), "{note}");

        let nothing = Holdings::of(&system, Some(&status(Some(ExternalRecord::default())))).left_behind(&system);
        assert!(nothing.ends_with("nothing is left behind"), "{nothing}");
        let legacy = Holdings::of(&system, Some(&status(None))).left_behind(&system);
        assert!(legacy.contains("predates the record"), "{legacy}");
        assert!(legacy.contains("Consul node ftgo-food-shop"), "{legacy}");
    }

    #[test]
    fn only_the_annotation_set_to_true_skips_cleanup() {
        let with = |annotations: serde_json::Value| -> FtgoSystem {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ftgo.dev/v1alpha1",
                "kind": "FtgoSystem",
                "metadata": {"name": "shop", "namespace": "food", "annotations": annotations},
                "spec": serde_yaml::from_str::<serde_json::Value>(EXTERNAL_INFRASTRUCTURE).unwrap(),
            }))
            .unwrap()
        };
        assert!(skip_requested(&with(serde_json::json!({"ftgo.dev/skip-cleanup": "true"}))));
        assert!(!skip_requested(&with(serde_json::json!({"ftgo.dev/skip-cleanup": "false"}))));
        assert!(!skip_requested(&with(serde_json::json!({"ftgo.dev/skip-cleanup": "yes"}))));
        assert!(!skip_requested(&with(serde_json::json!({}))));
    }
}
