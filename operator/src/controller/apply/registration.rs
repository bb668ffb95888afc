//! The discovery step of a reconcile: Consul registrations of the services' endpoints and
//! Fabio's route overrides, written only where Consul differs.

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{ResourceExt, runtime::events::EventType};

use ftgo_platform::consul::Consul;

use crate::{
    controller::{build::discovery, validate::System},
    crd::{ExternalRecord, FtgoSystem},
    names,
};

use crate::controller::{Context, apply::list};

/// Makes Consul hold exactly the system's instances, each with a check that follows its
/// Kubernetes readiness; writes only what differs. Records the system's Consul node in `record`
/// as soon as it is known to hold a registration (one was written, or found there).
pub(crate) async fn register(
    system: &System,
    consul: &Consul,
    services: &[Service],
    states: &[crate::crd::ServiceStatus],
    ctx: &Context,
    object: &FtgoSystem,
    record: &mut ExternalRecord,
) -> Result<(), String> {
    let names: Vec<String> = system.services.iter().map(|s| names::child_name(&system.name, s.name)).collect();
    // `in ()` is not a valid selector: a system without services has no slices to look for.
    let slices: Vec<EndpointSlice> = if names.is_empty() {
        Vec::new()
    } else {
        let selector = format!("kubernetes.io/service-name in ({})", names.join(","));
        list(&ctx.client, &system.namespace, &selector).await.map_err(|e| format!("listing EndpointSlices: {e}"))?
    };
    let mut instances = BTreeMap::new();
    for (spec, state) in system.services.iter().zip(states) {
        let name = names::child_name(&system.name, spec.name);
        let own: Vec<EndpointSlice> =
            slices.iter().filter(|s| s.labels().get("kubernetes.io/service-name") == Some(&name)).cloned().collect();
        let kube_service = services.iter().find(|s| s.name_any() == name);
        instances.insert(spec.name, discovery::instances(spec.name, &own, kube_service, state.available_replicas));
    }
    let desired = discovery::registrations(system, &instances);
    let node = names::node_name(system);
    let registered = consul.node_services(&node).await.map_err(|e| e.to_string())?;
    if !registered.is_empty() {
        record.consul_node = Some(node.clone());
    }
    let checks = consul.node_checks(&node).await.map_err(|e| e.to_string())?;
    let (write, remove) = discovery::plan(&desired, &registered, &checks);
    let mut changed = Vec::new();
    for registration in write {
        consul.catalog_register(registration).await.map_err(|e| e.to_string())?;
        record.consul_node = Some(node.clone());
        changed.push(format!("{} ({})", registration.service.id, registration.checks[0].status));
    }
    for id in &remove {
        consul.catalog_deregister_service(&node, id).await.map_err(|e| e.to_string())?;
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

/// Writes the system's Fabio route overrides under its own KV key, if they differ. Records the
/// key in `record` once it holds them.
pub(crate) async fn configure_routes(
    system: &System,
    consul: &Consul,
    ctx: &Context,
    object: &FtgoSystem,
    record: &mut ExternalRecord,
) -> Result<(), String> {
    let key = names::routes_key(system);
    let routes = discovery::fabio_routes(system);
    if consul.kv_get(&key).await.map_err(|e| e.to_string())?.as_deref() == Some(routes.as_str()) {
        record.fabio_routes_key = Some(key);
        return Ok(());
    }
    consul.kv_put(&key, &routes).await.map_err(|e| e.to_string())?;
    record.fabio_routes_key = Some(key.clone());
    ctx.event(object, EventType::Normal, "RoutesWritten", format!("wrote Fabio route overrides to Consul KV {key}"))
        .await;
    Ok(())
}
