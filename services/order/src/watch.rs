//! Waiting for an order to change, without polling: `GetOrder` with `wait_for` parks on the order
//! here and wakes the moment a change to it commits.
//!
//! - **In this process.** Whoever commits a change to an order (a saga command, a cancel or a
//!   revise) calls [`OrderWatch::announce`] after the commit. Every waiter on that order wakes and
//!   reads it again.
//! - **Across replicas.** `announce` also publishes the order id on the core NATS subject
//!   [`SIGNAL_SUBJECT`] (not JetStream: a signal is worthless once nobody waits for it), and
//!   [`OrderWatch::listen`] wakes this replica's waiters for the changes other replicas committed.
//! - **Nothing relies on a signal arriving.** A waiter reads the order itself; a signal only says
//!   "read it now". A waiter also reads it every [`RECHECK`], so a lost signal costs at most that
//!   much latency, never a wrong answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ftgo_platform::ids::OrderId;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where the Order Service's replicas tell each other that an order changed (payload: the
/// announcing replica's id, a space, the order id).
pub const SIGNAL_SUBJECT: &str = "ftgo.signal.order.changed";

/// How often a waiter reads its order even when no signal came.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The longest wait a client may ask for (in the contract, `ftgo-proto`).
pub use ftgo_proto::order::v1::MAX_WAIT;

/// The orders someone is waiting for, in this process.
pub struct OrderWatch {
    /// This replica's id, so that it ignores its own signals coming back from NATS.
    replica: Uuid,
    waiting: Mutex<HashMap<OrderId, Waiters>>,
    nats: Option<async_nats::Client>,
    /// Cancelled when the service stops: every waiter answers at once instead of holding the
    /// server's graceful shutdown for the rest of its wait.
    stopping: CancellationToken,
}

struct Waiters {
    notify: Arc<Notify>,
    count: usize,
}

/// One waiter's registration; dropping it unregisters.
pub struct Subscription<'a> {
    watch: &'a OrderWatch,
    order: OrderId,
    notify: Arc<Notify>,
}

impl Subscription<'_> {
    /// Resolves when the order may have changed since this future was enabled (see
    /// [`Notify::notified`]). Wait on [`stopping`](Self::stopping) beside it.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Cancelled when the service begins to stop: a waiter answers at once.
    pub fn stopping(&self) -> &CancellationToken {
        &self.watch.stopping
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut waiting = self.watch.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = waiting.get_mut(&self.order) {
            waiters.count -= 1;
            if waiters.count == 0 {
                waiting.remove(&self.order);
            }
        }
    }
}

impl OrderWatch {
    /// `nats`: where to tell other replicas about changes (`None`: this process only).
    pub fn new(nats: Option<async_nats::Client>, stopping: CancellationToken) -> Self {
        Self { replica: Uuid::new_v4(), waiting: Mutex::default(), nats, stopping }
    }

    /// Registers interest in `order`. Enable [`Subscription::changed`] *before* reading the order,
    /// so that a change committed between the read and the wait is not missed.
    pub fn subscribe(&self, order: OrderId) -> Subscription<'_> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let waiters = waiting.entry(order).or_insert_with(|| Waiters { notify: Arc::default(), count: 0 });
        waiters.count += 1;
        Subscription { watch: self, order, notify: waiters.notify.clone() }
    }

    /// How many orders someone waits for (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Wakes this process's waiters on `order`.
    fn wake(&self, order: OrderId) {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiters) = waiting.get(&order) {
            waiters.notify.notify_waiters();
        }
    }

    /// Says that a change to `order` has committed: wakes the waiters here at once, and tells the
    /// other replicas. Call it after the commit, never before.
    pub async fn announce(&self, order: OrderId) {
        self.wake(order);
        if let Some(nats) = &self.nats {
            let payload = format!("{} {order}", self.replica);
            if let Err(e) = nats.publish(SIGNAL_SUBJECT, payload.into()).await {
                // Other replicas' waiters find the change at their next recheck.
                tracing::debug!(error = %e, "could not signal an order change to the other replicas");
            }
        }
    }

    /// Wakes this replica's waiters for the changes other replicas announce, until `shutdown`.
    pub async fn listen(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Some(nats) = &self.nats else { return Ok(()) };
        let mut signals = nats.subscribe(SIGNAL_SUBJECT).await?;
        loop {
            let signal = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                signal = signals.next() => signal,
            };
            let Some(signal) = signal else { anyhow::bail!("the order-change subscription ended") };
            let text = String::from_utf8_lossy(&signal.payload);
            let Some((replica, order)) = text.split_once(' ') else { continue };
            if replica == self.replica.to_string() {
                continue;
            }
            if let Ok(order) = order.parse() {
                self.wake(order);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_enabled_before_the_change_is_woken_and_unregisters_when_dropped() {
        let watch = OrderWatch::new(None, CancellationToken::new());
        let (order, other) = (OrderId::new(), OrderId::new());
        let subscription = watch.subscribe(order);
        let second = watch.subscribe(order);
        assert_eq!(watch.waiting(), 1);
        {
            let changed = subscription.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            watch.announce(other).await;
            assert!(futures::poll!(changed.as_mut()).is_pending(), "another order's change wakes nobody here");
            watch.announce(order).await;
            assert!(futures::poll!(changed.as_mut()).is_ready());
        }
        drop(subscription);
        assert_eq!(watch.waiting(), 1, "the second waiter still waits");
        drop(second);
        assert_eq!(watch.waiting(), 0);
    }
}
