//! How the gateway calls a backend: with a deadline, with a retry only when the call is
//! idempotent, and through a circuit breaker (the seed's hystrix role).
//!
//! Retries draw on a budget (tower's `TpsBudget`): at most a fifth of the calls of the last ten
//! seconds, and ten a second whatever the traffic, so that a sick backend is not hit with a storm of
//! second attempts.
//!
//! The breaker is written here rather than taken from a generic tower layer because it must
//! judge gRPC outcomes: a `NOT_FOUND` or `INVALID_ARGUMENT` is a healthy backend answering, while
//! `UNAVAILABLE` or a missed deadline is a sick one. Those codes only exist after tonic has decoded
//! the response trailers, above the HTTP `Service` that a tower layer around a `Channel` sees.
//!
//! States: **closed** (calls flow; consecutive failures are counted), **open** (calls fail at once
//! with `UNAVAILABLE` for a while), **half-open** (one trial call; success closes the circuit,
//! failure opens it again). The circuit first opens for [`FIRST_OPEN`], and each failed trial
//! doubles that up to `open_for`: a backend that was down for a moment is called again within a
//! fraction of a second, one that stays down gets one trial call every `open_for`.
//!
//! A `NOT_FOUND` counts as a healthy answer only when the service marked it as its own
//! ([`ftgo_platform::grpc::is_absent`]); any other is Fabio saying that no healthy instance is
//! registered, and becomes `UNAVAILABLE` here, so that the breaker counts it and the client gets a
//! 503, never a 404 for an entity that may well exist.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ftgo_platform::grpc::is_absent;
// Tokio's clock, so that tests can move it; outside a paused test it is the system's.
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::retry::budget::{Budget, TpsBudget};

/// How long a circuit stays open the first time (or `open_for`, if that is shorter).
pub const FIRST_OPEN: Duration = Duration::from_millis(250);

/// Whether a call may be repeated without changing its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads: retried once after `UNAVAILABLE`.
    Idempotent,
    /// Commands: never retried by the gateway; a client that retries sees the service's answer.
    NotIdempotent,
}

/// What the breaker reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    /// `interval` is how long it has been open this time: the next failed trial doubles it.
    Open {
        until: Instant,
        interval: Duration,
    },
    HalfOpen {
        trial_in_flight: bool,
        interval: Duration,
    },
}

/// One backend's circuit breaker. Cheap to share behind an `Arc`; the lock is held only to read
/// or update the state, never across a call.
#[derive(Debug)]
pub struct CircuitBreaker {
    inner: Mutex<Inner>,
}

/// The state and the thresholds under one lock: thresholds can change while the gateway runs
/// (live configuration), and a transition must see one consistent set.
#[derive(Debug)]
struct Inner {
    failures_to_open: u32,
    open_for: Duration,
    state: State,
}

/// Permission to make one call; report its outcome with [`CircuitBreaker::record`].
#[must_use]
#[derive(Debug)]
pub struct Permit(());

impl CircuitBreaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                failures_to_open: failures_to_open.max(1),
                open_for,
                state: State::Closed { consecutive_failures: 0 },
            }),
        }
    }

    /// New thresholds; they apply from the next failure (an open circuit keeps its deadline).
    pub fn configure(&self, failures_to_open: u32, open_for: Duration) {
        let mut inner = self.lock();
        inner.failures_to_open = failures_to_open.max(1);
        inner.open_for = open_for;
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until, .. } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// `None` while the circuit is open, or while the half-open trial call is in flight.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut inner = self.lock();
        let state = &mut inner.state;
        match *state {
            State::Closed { .. } => Some(Permit(())),
            State::Open { until, .. } if Instant::now() < until => None,
            State::Open { interval, .. } | State::HalfOpen { trial_in_flight: false, interval } => {
                *state = State::HalfOpen { trial_in_flight: true, interval };
                Some(Permit(()))
            }
            State::HalfOpen { trial_in_flight: true, .. } => None,
        }
    }

    /// Records the outcome of the call `permit` allowed.
    pub fn record(&self, permit: Permit, healthy: bool) {
        let Permit(()) = permit;
        let mut inner = self.lock();
        inner.state = match (&inner.state, healthy) {
            (_, true) => State::Closed { consecutive_failures: 0 },
            (State::Closed { consecutive_failures }, false) if consecutive_failures + 1 < inner.failures_to_open => {
                State::Closed { consecutive_failures: consecutive_failures + 1 }
            }
            (State::Closed { .. }, false) => {
                let interval = FIRST_OPEN.min(inner.open_for);
                tracing::warn!(open_for = ?interval, "circuit opened");
                State::Open { until: Instant::now() + interval, interval }
            }
            (State::Open { interval, .. } | State::HalfOpen { interval, .. }, false) => {
                let interval = (*interval * 2).min(inner.open_for);
                tracing::debug!(open_for = ?interval, "trial call failed; circuit opened again");
                State::Open { until: Instant::now() + interval, interval }
            }
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is always valid, even if a holder panicked.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `status` says the backend is unwell (as opposed to answering a bad or refused request).
pub fn is_backend_failure(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::ResourceExhausted)
}

/// `status` as the truth about the backend: a `NOT_FOUND` that the service did not mark as its own
/// came from the proxy in between (Fabio's "no route found") and means that no instance answered.
fn unrouted_is_unavailable(status: Status) -> Status {
    if status.code() == Code::NotFound && !is_absent(&status) {
        Status::unavailable(format!("no instance answered ({})", status.message()))
    } else {
        status
    }
}

/// Whether `status` reports a connection that could not even be opened: the request never left,
/// so sending it again is safe whatever it does. A backend that has just started, or whose
/// Service the node's proxy has not wired yet, refuses connections for a moment.
pub fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = error.source();
    }
    // tonic's wording when the TCP connection fails, whatever its cause; and Fabio's gRPC proxy's
    // (grpc-go) when the instance it picked refuses the connection: Consul has not yet noticed
    // that the instance is gone, and another one may answer.
    let message = status.message();
    message == "tcp connect error"
        || (message.contains("Error while dialing") && message.contains("connection refused"))
}

/// Calls `call` until it gets past connecting, pausing 50, 100, 200, 400, 400 ... ms between
/// refused connections, as long as `budget` allows. One call's breaker permit covers them all.
async fn until_connected<T, F, Fut>(call: &mut F, budget: Duration) -> Result<T, Status>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let outcome = call(budget.saturating_sub(started.elapsed())).await;
        match outcome {
            Err(status) if never_sent(&status) && started.elapsed() + pause < budget => {
                tracing::debug!(%status, ?pause, "connection refused; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(400));
            }
            other => return other,
        }
    }
}

/// The calling policy for one backend.
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

    /// Runs `call` through the breaker, retrying once after `UNAVAILABLE` when `idempotency` allows
    /// it, all attempts within one deadline. `call` is given what is left of the deadline, to
    /// forward as `grpc-timeout`.
    pub async fn run<T, F, Fut>(&self, idempotency: Idempotency, call: F) -> Result<T, Status>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.run_waiting(idempotency, Duration::ZERO, call).await
    }

    /// [`run`](Self::run) for a call that the backend may hold for up to `wait` on purpose (a
    /// `GetOrder` that waits for a state): its deadline is the usual one plus `wait`.
    pub async fn run_waiting<T, F, Fut>(
        &self,
        idempotency: Idempotency,
        wait: Duration,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let attempts = match idempotency {
            Idempotency::Idempotent => 2,
            Idempotency::NotIdempotent => 1,
        };
        let deadline = self.timeout() + wait;
        let started = Instant::now();
        self.retries.deposit();
        let mut last = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                if !self.retries.withdraw() {
                    tracing::debug!(backend = self.backend, "no retry: the retry budget is spent");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let Some(permit) = self.breaker.try_acquire() else {
                return Err(Status::unavailable(format!("{} is unavailable (circuit open)", self.backend)));
            };
            let outcome = match tokio::time::timeout(left, until_connected(&mut call, left)).await {
                Ok(outcome) => outcome.map_err(unrouted_is_unavailable),
                Err(_) => {
                    Err(Status::deadline_exceeded(format!("{} did not answer within {deadline:?}", self.backend)))
                }
            };
            let failed = outcome.as_ref().err().is_some_and(is_backend_failure);
            self.breaker.record(permit, !failed);
            match outcome {
                Err(status) if status.code() == Code::Unavailable => {
                    tracing::debug!(backend = self.backend, attempt, %status, "backend unavailable");
                    last = Some(Status::unavailable(format!("{} is unavailable: {}", self.backend, status.message())));
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable(format!("{} is unavailable", self.backend))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(failures: u32, open_for: Duration) -> CallPolicy {
        CallPolicy::new("kitchen", Duration::from_millis(200), CircuitBreaker::new(failures, open_for))
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_fails_fast() {
        let policy = policy(3, Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        for _ in 0..3 {
            let result: Result<(), _> = policy
                .run(Idempotency::NotIdempotent, |_| async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(Status::unavailable("connection refused"))
                })
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
        let no_route = |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Status::not_found("no route found")) }
        };
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
    async fn half_open_lets_one_trial_through_and_closes_on_success() {
        let policy = policy(1, Duration::from_millis(50));
        let _ = policy.run(Idempotency::NotIdempotent, |_| async { Err::<(), _>(Status::unavailable("down")) }).await;
        assert_eq!(policy.breaker.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(policy.breaker.state(), BreakerState::HalfOpen);
        let permit = policy.breaker.try_acquire().expect("the trial call");
        assert!(policy.breaker.try_acquire().is_none(), "only one trial at a time");
        policy.breaker.record(permit, true);
        assert_eq!(policy.breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_failed_trial_opens_the_circuit_again() {
        let policy = policy(1, Duration::from_millis(50));
        let permit = policy.breaker.try_acquire().unwrap();
        policy.breaker.record(permit, false);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let permit = policy.breaker.try_acquire().expect("the trial call");
        policy.breaker.record(permit, false);
        assert_eq!(policy.breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_circuit_opens_briefly_first_and_longer_after_each_failed_trial() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(2));
        let fail = |breaker: &CircuitBreaker| breaker.record(breaker.try_acquire().expect("a permit"), false);
        fail(&breaker);
        // Open for FIRST_OPEN (250 ms), then 500 ms, 1 s, 2 s, and never longer than open_for.
        for open in [250, 500, 1000, 2000, 2000] {
            tokio::time::advance(Duration::from_millis(open - 10)).await;
            assert_eq!(breaker.state(), BreakerState::Open, "still open {open} ms after opening, less 10");
            tokio::time::advance(Duration::from_millis(10)).await;
            assert_eq!(breaker.state(), BreakerState::HalfOpen);
            fail(&breaker);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        breaker.record(breaker.try_acquire().expect("a trial"), true);
        fail(&breaker);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "closed again, the next opening is brief");
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
        let failing = || {
            policy.run(Idempotency::Idempotent, |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Status::unavailable("reset"))
            })
        };
        // 1000 calls at once, every one failing: without a budget, 2000 attempts.
        futures::future::join_all((0..1000).map(|_| failing())).await;
        // The budget's reserve (10 a second over 10 s) and a fifth of the calls: 100 + 200 retries.
        let attempts = calls.load(Ordering::SeqCst);
        assert!((1000..=1300).contains(&attempts), "{attempts} attempts");
    }

    #[test]
    fn a_connection_refused_behind_fabio_was_never_sent() {
        let fabio = "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:44409: connect: connection refused\"";
        assert!(never_sent(&Status::unavailable(fabio)));
        assert!(never_sent(&Status::unavailable("tcp connect error")));
        assert!(!never_sent(&Status::unavailable("connection reset by peer")), "it may have been handled");
        assert!(!never_sent(&Status::internal(fabio)));
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_cut_off() {
        let policy = policy(10, Duration::from_secs(60));
        let result: Result<(), _> = policy
            .run(Idempotency::NotIdempotent, |_| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert_eq!(result.unwrap_err().code(), Code::DeadlineExceeded);
    }
}
