//! The last step of the pipeline, computed purely: what `status` should say, given what the
//! reconcile observed and what `status` said before.
//!
//! Two promises live here. A condition's `lastTransitionTime` moves only when its `status`
//! flips, so `kubectl describe` tells *since when* something has been true. And the same
//! observations always give an equal [`FtgoSystemStatus`], so the reconciler can compare and
//! skip the write: a reconcile that changes nothing writes nothing.

use k8s_openapi::{
    api::apps::v1::Deployment,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::{
    controller::validate::System,
    crd::{ExternalRecord, FtgoSystemStatus, ServiceSpec, ServiceState, ServiceStatus},
};

pub const READY: &str = "Ready";
pub const DATABASES_READY: &str = "DatabasesReady";
pub const WORKLOADS_AVAILABLE: &str = "WorkloadsAvailable";
pub const SERVICES_REGISTERED: &str = "ServicesRegistered";
pub const ROUTES_CONFIGURED: &str = "RoutesConfigured";
pub const DEGRADED: &str = "Degraded";

/// A condition before it is stamped with a generation and a transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Check {
    pub fn new(type_: &'static str, ok: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { type_, ok, reason: reason.into(), message: message.into() }
    }
}

/// What one reconcile found out, in the terms `status` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Observations {
    pub generation: i64,
    pub services: Vec<ServiceStatus>,
    /// `Err` explains which databases are missing and why.
    pub databases: Result<(), String>,
    /// `Err` explains why Consul does not hold every instance as it should.
    pub registrations: Result<(), String>,
    /// `Err` explains why Fabio's route overrides are not in Consul KV.
    pub routes: Result<(), String>,
    /// A step that failed this time, as its [`Error`](super::Error) names and says it (reason,
    /// message): the system is `Degraded`.
    pub failure: Option<(String, String)>,
    /// What the system holds outside Kubernetes after this reconcile's writes: the previous
    /// record, plus what this reconcile wrote or found, minus what it dropped.
    pub external: ExternalRecord,
}

/// The current time, to the second: the precision `metav1.Time` keeps on the wire, so a time
/// read back from the API server compares equal to the one written.
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// How one service is doing, from the Deployment the API server reports. A Deployment counts as
/// available once the Deployment controller has seen its latest spec and every desired replica
/// is updated and available, the same test `kubectl rollout status` makes.
pub fn service_status(spec: &ServiceSpec, deployment: Option<&Deployment>, database: Option<String>) -> ServiceStatus {
    let status = deployment.and_then(|d| d.status.clone()).unwrap_or_default();
    let generation = deployment.and_then(|d| d.metadata.generation).unwrap_or(0);
    let observed = deployment.is_some() && status.observed_generation.unwrap_or(0) >= generation;
    let available_replicas = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let state = if spec.replicas == 0 && observed && total == 0 {
        ServiceState::Stopped
    } else if spec.replicas > 0 && observed && updated >= spec.replicas && available_replicas >= spec.replicas {
        ServiceState::Available
    } else {
        ServiceState::Progressing
    };
    ServiceStatus { name: spec.name, state, replicas: spec.replicas, available_replicas, database }
}

/// The checks that explain `Ready`, in the order a reader should look at them.
pub fn checks(system: &System, observations: &Observations) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(match &observations.databases {
        Ok(()) => Check::new(DATABASES_READY, true, "DatabasesReady", "every service's database and role exist"),
        Err(why) => Check::new(DATABASES_READY, false, "DatabaseUnavailable", why.clone()),
    });
    let waiting: Vec<_> = observations
        .services
        .iter()
        .filter(|s| s.state == ServiceState::Progressing)
        .map(|s| format!("{} ({}/{} available)", s.name, s.available_replicas, s.replicas))
        .collect();
    checks.push(if waiting.is_empty() {
        Check::new(WORKLOADS_AVAILABLE, true, "DeploymentsAvailable", "every Deployment has its replicas available")
    } else {
        Check::new(WORKLOADS_AVAILABLE, false, "DeploymentsProgressing", format!("waiting for {}", waiting.join(", ")))
    });
    checks.push(match &observations.registrations {
        Ok(()) => Check::new(
            SERVICES_REGISTERED,
            true,
            "Registered",
            "Consul holds every instance, checks following readiness",
        ),
        Err(why) => Check::new(SERVICES_REGISTERED, false, "ConsulUnavailable", why.clone()),
    });
    checks.push(match &observations.routes {
        Ok(()) => Check::new(ROUTES_CONFIGURED, true, "RoutesWritten", "Fabio's route overrides are in Consul KV"),
        Err(why) => Check::new(ROUTES_CONFIGURED, false, "ConsulUnavailable", why.clone()),
    });
    checks.push(match &observations.failure {
        Some((reason, message)) => Check::new(DEGRADED, true, reason.clone(), message.clone()),
        None => Check::new(DEGRADED, false, "ReconcileSucceeded", "the last reconcile completed every step"),
    });
    let blocker = checks.iter().find(|c| if c.type_ == DEGRADED { c.ok } else { !c.ok });
    let ready = match blocker {
        Some(check) => Check::new(READY, false, check.reason.clone(), check.message.clone()),
        None => Check::new(
            READY,
            true,
            "SystemReady",
            format!("{} services available in {}", system.services.len(), system.namespace),
        ),
    };
    checks.insert(0, ready);
    checks
}

/// Stamps `checks` into conditions, keeping each previous `lastTransitionTime` whose status
/// did not change.
pub fn conditions(previous: &[Condition], checks: &[Check], generation: i64, now: &Time) -> Vec<Condition> {
    checks
        .iter()
        .map(|check| {
            let status = if check.ok { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == check.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: check.type_.to_owned(),
                status: status.to_owned(),
                reason: check.reason.clone(),
                message: check.message.clone(),
                observed_generation: Some(generation),
                last_transition_time,
            }
        })
        .collect()
}

/// The whole status for `observations`, given the one the object has now.
pub fn status(
    system: &System,
    previous: Option<&FtgoSystemStatus>,
    observations: &Observations,
    now: &Time,
) -> FtgoSystemStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let checks = checks(system, observations);
    let up = observations.services.iter().filter(|s| s.state != ServiceState::Progressing).count();
    FtgoSystemStatus {
        observed_generation: Some(observations.generation),
        conditions: conditions(previous_conditions, &checks, observations.generation, now),
        services: observations.services.clone(),
        summary: Some(format!("{up}/{} available", observations.services.len())),
        external: Some(observations.external.clone()),
    }
}

/// The dependency conditions (databases, Consul registrations, Fabio routes) that have just
/// started failing, or fail for a new reason: each deserves a Warning Event, once, rather than
/// one per retry.
pub fn new_failures<'a>(previous: Option<&FtgoSystemStatus>, next: &'a FtgoSystemStatus) -> Vec<&'a Condition> {
    let before = |type_: &str| previous?.conditions.iter().find(|c| c.type_ == type_);
    next.conditions
        .iter()
        .filter(|c| [DATABASES_READY, SERVICES_REGISTERED, ROUTES_CONFIGURED].contains(&c.type_.as_str()))
        .filter(|c| c.status == "False")
        .filter(|c| before(&c.type_).is_none_or(|b| b.status != "False" || b.reason != c.reason))
        .collect()
}

/// The `Ready` condition of a status, if it has one.
pub fn ready(status: Option<&FtgoSystemStatus>) -> Option<&Condition> {
    status?.conditions.iter().find(|c| c.type_ == READY)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    use super::*;
    use crate::testing::external_system;
    use ftgo_catalog::ServiceName;

    fn system() -> System {
        external_system("[{name: order, replicas: 2}]")
    }

    fn deployment(generation: i64, observed: i64, updated: i32, available: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(updated),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        });
        d
    }

    fn order(replicas: i32) -> ServiceSpec {
        ServiceSpec { name: ServiceName::Order, replicas, image: None, resources: None }
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_deployment_is_available_only_when_its_latest_spec_is_rolled_out() {
        let state = |d: Option<&Deployment>| service_status(&order(2), d, None).state;
        assert_eq!(state(None), ServiceState::Progressing);
        assert_eq!(state(Some(&deployment(2, 1, 2, 2))), ServiceState::Progressing, "old generation");
        assert_eq!(state(Some(&deployment(2, 2, 2, 1))), ServiceState::Progressing, "one not available");
        assert_eq!(state(Some(&deployment(2, 2, 2, 2))), ServiceState::Available);
        let stopped = service_status(&order(0), Some(&deployment(3, 3, 0, 0)), None);
        assert_eq!(stopped.state, ServiceState::Stopped);
    }

    fn observations(state: ServiceState, databases: Result<(), String>) -> Observations {
        Observations {
            generation: 4,
            services: vec![ServiceStatus {
                name: ServiceName::Order,
                state,
                replicas: 2,
                available_replicas: if state == ServiceState::Available { 2 } else { 0 },
                database: Some("order".to_owned()),
            }],
            databases,
            registrations: Ok(()),
            routes: Ok(()),
            failure: None,
            external: ExternalRecord::default(),
        }
    }

    #[test]
    fn ready_needs_databases_and_workloads_and_names_the_first_blocker() {
        let system = system();
        let ready = |o: &Observations| checks(&system, o).into_iter().find(|c| c.type_ == READY).unwrap();
        assert!(ready(&observations(ServiceState::Available, Ok(()))).ok);
        let waiting = ready(&observations(ServiceState::Progressing, Ok(())));
        assert!(!waiting.ok);
        assert_eq!(waiting.reason, "DeploymentsProgressing");
        assert_eq!(waiting.message, "waiting for order (0/2 available)");
        let no_db = ready(&observations(ServiceState::Available, Err("order: connection refused".to_owned())));
        assert_eq!(no_db.reason, "DatabaseUnavailable");
        let mut unregistered = observations(ServiceState::Available, Ok(()));
        unregistered.registrations = Err("Consul at http://consul:8500: connection refused".to_owned());
        assert_eq!(ready(&unregistered).reason, "ConsulUnavailable");
        let mut failed = observations(ServiceState::Available, Ok(()));
        failed.failure = Some(("ApplyFailed".to_owned(), "boom".to_owned()));
        assert_eq!(ready(&failed).reason, "ApplyFailed");
    }

    #[test]
    fn a_dependency_failure_is_news_once() {
        let system = system();
        let healthy = status(&system, None, &observations(ServiceState::Available, Ok(())), &at(100));
        assert!(new_failures(None, &healthy).is_empty());
        let mut broken = observations(ServiceState::Available, Ok(()));
        broken.registrations = Err("Consul at http://consul:8500: connection refused".to_owned());
        let failing = status(&system, Some(&healthy), &broken, &at(200));
        let news: Vec<_> = new_failures(Some(&healthy), &failing).iter().map(|c| c.type_.clone()).collect();
        assert_eq!(news, [SERVICES_REGISTERED]);
        let still = status(&system, Some(&failing), &broken, &at(300));
        assert!(new_failures(Some(&failing), &still).is_empty(), "the same failure again is not news");
    }

    #[test]
    fn the_record_of_what_was_written_outside_kubernetes_is_part_of_the_status() {
        let system = system();
        let first = status(&system, None, &observations(ServiceState::Available, Ok(())), &at(100));
        assert_eq!(first.external, Some(ExternalRecord::default()), "nothing written yet, and the status says so");
        let mut registered = observations(ServiceState::Available, Ok(()));
        registered.external.consul_node = Some("ftgo-food-shop".to_owned());
        let next = status(&system, Some(&first), &registered, &at(200));
        assert_ne!(next, first, "a grown record is news to write");
        assert_eq!(next.external.unwrap().consul_node.as_deref(), Some("ftgo-food-shop"));
    }

    #[test]
    fn last_transition_time_moves_only_when_the_status_flips() {
        let system = system();
        let first = status(&system, None, &observations(ServiceState::Progressing, Ok(())), &at(100));
        assert!(first.conditions.iter().all(|c| c.last_transition_time == at(100)));
        assert!(first.conditions.iter().all(|c| c.observed_generation == Some(4)));

        // Same observations later: an equal status, so nothing needs writing.
        let again = status(&system, Some(&first), &observations(ServiceState::Progressing, Ok(())), &at(200));
        assert_eq!(again, first);

        // The workloads become available: Ready and WorkloadsAvailable flip, the others keep their time.
        let ready = status(&system, Some(&again), &observations(ServiceState::Available, Ok(())), &at(300));
        let time = |s: &FtgoSystemStatus, t: &str| s.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(time(&ready, READY).status, "True");
        assert_eq!(time(&ready, READY).last_transition_time, at(300));
        assert_eq!(time(&ready, WORKLOADS_AVAILABLE).last_transition_time, at(300));
        assert_eq!(time(&ready, DATABASES_READY).last_transition_time, at(100));
        assert_eq!(time(&ready, DEGRADED).last_transition_time, at(100));
        assert_eq!(ready.summary.as_deref(), Some("1/1 available"));
    }
}
