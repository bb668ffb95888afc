//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once.
//!
//! The Lease says who holds it and when they last renewed it. A replica may take it when nobody
//! holds it or the holder's renewal is older than the lease duration. Every write carries the
//! `resourceVersion` it read, so when two replicas race, the API server accepts one write and
//! answers the other `409 Conflict`: the API server is the lock. The leader renews well within
//! the duration; if it cannot, it stops its work before anyone else may start theirs.

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease as KubeLease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Lease {
    api: Api<KubeLease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Lease {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.to_owned(), identity: identity.to_owned(), duration }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes or renews the Lease. `Ok(false)` means someone else holds it, or won a race for it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = KubeLease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && holder.is_some() {
            let held_for =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(duration_seconds)));
            let renewed = spec.renew_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
            if renewed + held_for > now {
                return Ok(false);
            }
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(MicroTime(now));
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await)
    }

    /// Gives the Lease up (if still ours) so a standby takes over at once instead of waiting for
    /// it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await).map(drop)
    }
}

fn conflict_is_false<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// How long a stopping leader lets its running reconciles finish before it stops them: a
/// reconcile is idempotent, so the next leader redoes whatever one left half done. Kubernetes
/// kills a pod 30 s after SIGTERM by default; this and [`RELEASE_TIMEOUT`] stay well inside that.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopping leader tries to hand the Lease over; after that it expires instead.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits to become leader, then runs `work` until `shutdown` turns true or leadership is
/// lost. `work` gets a receiver that turns true when it must stop; it should then finish what
/// it is doing and return. Returns `Err` when leadership was lost, so the process can exit and
/// start over as a standby.
pub async fn lead<F, Fut>(
    lease: Lease,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let retry = lease.duration / 3;
    loop {
        match lease.try_acquire().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => warn!(%err, "could not read or take the leader Lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
    }
    info!(identity = lease.identity(), "leading");
    metrics.set_leader(true);
    let (stop_work, work_stopped) = watch::channel(false);
    let mut running = tokio::spawn(work(work_stopped));
    let mut last_renewal = tokio::time::Instant::now();
    let outcome = loop {
        tokio::select! {
            _ = tokio::time::sleep(retry) => {
                match lease.try_acquire().await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => break Err(anyhow::anyhow!("another replica took the leader Lease")),
                    Err(err) => warn!(%err, "could not renew the leader Lease"),
                }
                // Stop before the Lease can expire in anyone else's eyes: two leaders must
                // never overlap, so give up with a third of the duration to spare.
                if last_renewal.elapsed() > lease.duration * 2 / 3 {
                    break Err(anyhow::anyhow!("could not renew the leader Lease in time"));
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
            _ = &mut running => break Ok(()),
        }
    };
    let _ = stop_work.send(true);
    // Bounded: a reconcile stuck on a slow API server must not keep the process from exiting.
    if !running.is_finished() && tokio::time::timeout(DRAIN_TIMEOUT, &mut running).await.is_err() {
        warn!("reconciles still running after {DRAIN_TIMEOUT:?}; stopping them");
        running.abort();
    }
    metrics.set_leader(false);
    if outcome.is_ok() {
        match tokio::time::timeout(RELEASE_TIMEOUT, lease.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "could not release the leader Lease; it will expire"),
            Err(_) => warn!("releasing the leader Lease took over {RELEASE_TIMEOUT:?}; it will expire"),
        }
    }
    outcome
}
