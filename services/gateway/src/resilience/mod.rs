//! How the gateway calls a backend: each call goes through a stack of tower layers, outermost
//! first:
//!
//! 1. `tower::timeout`: one deadline for the whole call, every attempt and pause included.
//! 2. `tower::retry` with [`retry::OnUnavailable`]: an idempotent call that met `UNAVAILABLE` is
//!    tried once more, paid from a retry budget (tower's `TpsBudget`: at most a fifth of the calls
//!    of the last ten seconds, and ten a second whatever the traffic), so that a sick backend is
//!    not hit with a storm of second attempts.
//! 3. [`breaker::BreakerLayer`]: the circuit breaker, which judges gRPC status codes.
//! 4. `tower::retry` with [`retry::UntilConnected`]: a refused connection was never sent, so it is
//!    tried again, whatever the call does, until the deadline is near.
//! 5. The call itself, a `tower::service_fn` around the typed tonic method. A `NOT_FOUND` that the
//!    service did not mark as its own ([`ftgo_platform::grpc::is_absent`]) is Fabio saying that no
//!    healthy instance is registered: it becomes `UNAVAILABLE` here, so that the breaker counts it
//!    and the client gets a 503, never a 404 for an entity that may well exist.
//!
//! The request that travels down the stack is the call's [`Deadline`]; the call forwards what is
//! left of it as `grpc-timeout`, so that the backend stops working when the gateway stops waiting.
//!
//! The stack is put together for each call, on the stack: every RPC method of a typed client has
//! its own request and response types, so one long-lived stack per backend would need boxed,
//! type-erased calls for no gain. What outlives a call (the breaker, the retry budget, the
//! configured timeout) is the backend's [`CallPolicy`], which the layers borrow.
//!
//! tonic enforces the `grpc-timeout` it sends, and ends a call that outlives it with `CANCELLED`
//! ("Timeout expired"), a moment before the timeout layer would. A `CANCELLED` at the deadline is
//! therefore reported as what it is, `DEADLINE_EXCEEDED`: the breaker counts it and the client
//! gets a 504.

pub mod breaker;
pub mod retry;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use ftgo_platform::grpc::is_absent;
// Tokio's clock, so that tests can move it; outside a paused test it is the system's.
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{
    BoxError, ServiceBuilder, ServiceExt,
    retry::{
        RetryLayer,
        budget::{Budget, TpsBudget},
    },
    timeout::TimeoutLayer,
};

pub use self::breaker::{BreakerState, CircuitBreaker, FIRST_OPEN};
use self::{
    breaker::{BreakerLayer, is_circuit_open},
    retry::{OnUnavailable, UntilConnected},
};

/// Whether a call may be repeated without changing its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads: retried once after `UNAVAILABLE`.
    Idempotent,
    /// Commands: never retried by the gateway; a client that retries sees the service's answer.
    NotIdempotent,
}

/// When a call stops being worth waiting for: the request of every layer in the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// What is left of it.
    pub fn left(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// `status` as the truth about the backend: a `NOT_FOUND` that the service did not mark as its own
/// came from the proxy in between (Fabio's "no route found") and means that no instance answered;
/// a `CANCELLED` once the deadline has passed is tonic enforcing the `grpc-timeout`.
fn as_the_backend_meant(status: Status, deadline: Deadline) -> Status {
    match status.code() {
        Code::NotFound if !is_absent(&status) => {
            Status::unavailable(format!("no instance answered ({})", status.message()))
        }
        Code::Cancelled if deadline.left().is_zero() => {
            Status::deadline_exceeded(format!("no answer within the deadline ({})", status.message()))
        }
        _ => status,
    }
}

/// The calling policy for one backend: what its calls' layers share.
#[derive(Debug)]
pub struct CallPolicy {
    pub backend: &'static str,
    /// The deadline of one call, in milliseconds (changeable while running).
    timeout_ms: AtomicU64,
    pub breaker: CircuitBreaker,
    /// What second attempts may spend: every call deposits, every retry withdraws.
    retries: TpsBudget,
}

impl CallPolicy {
    pub fn new(backend: &'static str, timeout: Duration, breaker: CircuitBreaker) -> Self {
        Self {
            backend,
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
            breaker,
            retries: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Runs `call` through the stack: the breaker, a retry after `UNAVAILABLE` when `idempotency`
    /// allows it, all attempts within one deadline. `call` is given what is left of the deadline,
    /// to forward as `grpc-timeout`.
    pub async fn run<T, F, Fut>(&self, idempotency: Idempotency, call: F) -> Result<T, Status>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.run_waiting(idempotency, Duration::ZERO, call).await
    }

    /// [`run`](Self::run) for a call that the backend may hold for up to `wait` on purpose (a
    /// `GetOrder` that waits for a state): its deadline is the usual one plus `wait`.
    pub async fn run_waiting<T, F, Fut>(&self, idempotency: Idempotency, wait: Duration, call: F) -> Result<T, Status>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let budget = self.timeout() + wait;
        // Taken before the timeout layer starts its clock (when the stack is called), so that a
        // call the layer cuts off is always past this deadline, which the breaker checks.
        let deadline = Deadline(Instant::now() + budget);
        self.retries.deposit();
        let call = &call;
        let stack = ServiceBuilder::new()
            .layer(TimeoutLayer::new(budget))
            .layer(RetryLayer::new(OnUnavailable::new(&self.retries, idempotency, self.backend)))
            .layer(BreakerLayer::new(&self.breaker, self.backend))
            .layer(RetryLayer::new(UntilConnected::default()))
            .service_fn(move |deadline: Deadline| {
                let answer = call(deadline.left());
                async move { answer.await.map_err(|status| as_the_backend_meant(status, deadline)) }
            });
        stack.oneshot(deadline).await.map_err(|error| self.reported(error, budget))
    }

    /// What the stack's error says to the gateway's handlers.
    fn reported(&self, error: BoxError, budget: Duration) -> Status {
        let status = match error.downcast::<Status>() {
            Ok(status) => *status,
            Err(error) if error.is::<tower::timeout::error::Elapsed>() => {
                return Status::deadline_exceeded(format!("{} did not answer within {budget:?}", self.backend));
            }
            // Only the timeout layer adds errors of its own.
            Err(error) => return Status::internal(format!("calling {}: {error}", self.backend)),
        };
        if status.code() == Code::Unavailable && !is_circuit_open(&status) {
            Status::unavailable(format!("{} is unavailable: {}", self.backend, status.message()))
        } else {
            status
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{retry::PAUSE as PAUSE_BEFORE_A_RETRY, *};

    /// A call that counts itself in `calls` and fails with `status`.
    fn failing(calls: &AtomicU32, status: Status) -> impl Fn(Duration) -> std::future::Ready<Result<(), Status>> + '_ {
        move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(status.clone()))
        }
    }

    fn policy(failures: u32, open_for: Duration) -> CallPolicy {
        CallPolicy::new("kitchen", Duration::from_millis(200), CircuitBreaker::new(failures, open_for))
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_fails_fast() {
        let policy = policy(3, Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        for _ in 0..3 {
            let result = policy
                .run(Idempotency::NotIdempotent, failing(&calls, Status::unavailable("connection refused")))
                .await;
            assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        }
        assert_eq!(policy.breaker.state(), BreakerState::Open);
        let result: Result<(), _> = policy
            .run(Idempotency::NotIdempotent, |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        let status = result.unwrap_err();
        assert!(status.message().contains("circuit open"), "{status:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "an open circuit does not call the backend");
    }

    #[tokio::test]
    async fn answers_that_refuse_a_request_do_not_count_as_failures() {
        let policy = policy(2, Duration::from_secs(60));
        for _ in 0..5 {
            let result: Result<(), _> = policy
                .run(Idempotency::Idempotent, |_| async { Err(ftgo_platform::grpc::not_found("no such order")) })
                .await;
            assert_eq!(result.unwrap_err().code(), Code::NotFound);
        }
        assert_eq!(policy.breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_not_found_the_service_did_not_mark_is_an_unavailable_backend() {
        let policy = policy(2, Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        let no_route = failing(&calls, Status::not_found("no route found"));
        let status = policy.run(Idempotency::Idempotent, no_route).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("no route found"), "{status:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a read is tried again");
        assert_eq!(policy.breaker.state(), BreakerState::Open, "both attempts counted as failures");
    }

    #[tokio::test]
    async fn a_success_resets_the_failure_count() {
        let policy = policy(2, Duration::from_secs(60));
        let fail = || async { Err::<(), _>(Status::unavailable("down")) };
        let _ = policy.run(Idempotency::NotIdempotent, |_| fail()).await;
        let _ = policy.run(Idempotency::NotIdempotent, |_| async { Ok(()) }).await;
        let _ = policy.run(Idempotency::NotIdempotent, |_| fail()).await;
        assert_eq!(policy.breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn one_deadline_covers_every_attempt() {
        let policy = policy(10, Duration::from_secs(60));
        let started = Instant::now();
        let slow_then_unavailable = |left: Duration| async move {
            tokio::time::sleep(left.saturating_sub(Duration::from_millis(20))).await;
            Err::<(), _>(Status::unavailable("reset"))
        };
        let status = policy.run(Idempotency::Idempotent, slow_then_unavailable).await.unwrap_err();
        assert!(matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded), "{status:?}");
        assert!(started.elapsed() < Duration::from_millis(200 + 150), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn idempotent_calls_are_retried_once_after_unavailable_and_commands_never() {
        let policy = policy(10, Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        let flaky = |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(Status::unavailable("reset")) } else { Ok(n) } }
        };
        assert_eq!(policy.run(Idempotency::Idempotent, flaky).await.unwrap(), 1);

        calls.store(0, Ordering::SeqCst);
        let flaky = |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(Status::unavailable("reset")) } else { Ok(n) } }
        };
        assert_eq!(policy.run(Idempotency::NotIdempotent, flaky).await.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_tried_again_even_for_a_command_and_counts_once() {
        let policy = policy(2, Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        let refused_twice = |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(Status::unavailable("tcp connect error")) } else { Ok(n) } }
        };
        assert_eq!(policy.run(Idempotency::NotIdempotent, refused_twice).await.unwrap(), 2);
        assert_eq!(policy.breaker.state(), BreakerState::Closed);

        // A backend that keeps refusing: tried until the deadline, then one failure for the breaker.
        let result: Result<(), _> =
            policy.run(Idempotency::NotIdempotent, |_| async { Err(Status::unavailable("tcp connect error")) }).await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        assert_eq!(policy.breaker.state(), BreakerState::Closed, "one failure of two allowed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_failures_retries_only_what_the_retry_budget_allows() {
        let policy = policy(u32::MAX, Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        // 1000 calls at once, every one failing: without a budget, 2000 attempts.
        let calls_at_once =
            (0..1000).map(|_| policy.run(Idempotency::Idempotent, failing(&calls, Status::unavailable("reset"))));
        futures::future::join_all(calls_at_once).await;
        // The budget's reserve (10 a second over 10 s) and a fifth of the calls: 100 + 200 retries.
        let attempts = calls.load(Ordering::SeqCst);
        assert!((1000..=1300).contains(&attempts), "{attempts} attempts");
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_cut_off_and_counted_as_a_failure() {
        let policy = policy(1, Duration::from_secs(60));
        let result: Result<(), _> = policy
            .run(Idempotency::NotIdempotent, |_| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(status.message(), "kitchen did not answer within 200ms");
        assert_eq!(policy.breaker.state(), BreakerState::Open, "a backend that misses its deadline is unwell");
    }

    #[tokio::test]
    async fn tonic_enforcing_the_deadline_is_reported_as_a_missed_deadline_and_counted() {
        let policy = policy(1, Duration::from_secs(60));
        // What a tonic channel answers when the grpc-timeout it was given runs out.
        let enforced = |left: Duration| async move {
            tokio::time::sleep(left).await;
            Err::<(), _>(Status::cancelled("Timeout expired"))
        };
        let status = policy.run(Idempotency::Idempotent, enforced).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(policy.breaker.state(), BreakerState::Open);
        // A call the backend cancelled on its own, well before the deadline, is its answer.
        let healthy = self::policy(1, Duration::from_secs(60));
        let status =
            healthy.run(Idempotency::Idempotent, |_| async { Err::<(), _>(Status::cancelled("shutting down")) });
        assert_eq!(status.await.unwrap_err().code(), Code::Cancelled);
        assert_eq!(healthy.breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_leaves_during_the_trial_call_frees_it_for_the_next() {
        let policy = policy(1, Duration::from_secs(60));
        let _ = policy.run(Idempotency::NotIdempotent, |_| async { Err::<(), _>(Status::unavailable("down")) }).await;
        tokio::time::advance(FIRST_OPEN).await;
        // The trial call hangs, and its caller gives up before the call's deadline.
        let hangs = policy.run(Idempotency::NotIdempotent, |_| std::future::pending::<Result<(), Status>>());
        assert!(tokio::time::timeout(Duration::from_millis(10), hangs).await.is_err());
        assert_eq!(policy.breaker.state(), BreakerState::HalfOpen);
        let answered = policy.run(Idempotency::NotIdempotent, |_| async { Ok(()) }).await;
        assert!(answered.is_ok(), "the next caller made the trial: {answered:?}");
        assert_eq!(policy.breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn an_open_circuit_is_not_retried_even_for_a_read() {
        let policy = policy(1, Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        let unavailable = failing(&calls, Status::unavailable("reset"));
        // The first attempt opens the circuit; the retry meets it open and calls nothing.
        let status = policy.run(Idempotency::Idempotent, &unavailable).await.unwrap_err();
        assert_eq!(status.message(), "kitchen is unavailable (circuit open)");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A read that meets the open circuit at once is refused at once, not tried again.
        let started = Instant::now();
        let status = policy.run(Idempotency::Idempotent, &unavailable).await.unwrap_err();
        assert_eq!(status.message(), "kitchen is unavailable (circuit open)");
        assert!(started.elapsed() < PAUSE_BEFORE_A_RETRY, "took {:?}", started.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
