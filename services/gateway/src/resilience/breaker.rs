//! The circuit breaker (the seed's hystrix role), as a tower layer.
//!
//! It is written here rather than taken from a crate because it must judge gRPC outcomes: a
//! `NOT_FOUND` or `INVALID_ARGUMENT` is a healthy backend answering, while `UNAVAILABLE` or a missed
//! deadline is a sick one. Those codes exist only after tonic has decoded the response trailers,
//! above the HTTP `Service` that a generic layer around a `Channel` sees; and the gateway changes
//! its thresholds while it runs (live configuration) and reports each circuit's state as a gauge,
//! which the general-purpose breaker crates do not offer together.
//!
//! States: **closed** (calls flow; consecutive failures are counted), **open** (calls fail at once
//! with `UNAVAILABLE` for a while), **half-open** (one trial call; success closes the circuit,
//! failure opens it again). The circuit first opens for [`FIRST_OPEN`], and each failed trial
//! doubles that up to `open_for`: a backend that was down for a moment is called again within a
//! fraction of a second, one that stays down gets one trial call every `open_for`.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};

use pin_project_lite::pin_project;
// Tokio's clock, so that tests can move it; outside a paused test it is the system's.
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::Deadline;

/// How long a circuit stays open the first time (or `open_for`, if that is shorter).
pub const FIRST_OPEN: Duration = Duration::from_millis(250);

/// What the breaker reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
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

/// One backend's circuit breaker. Cheap to share; the lock is held only to read or update the
/// state, never across a call.
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

/// Permission to make one call. Report its outcome with [`Permit::record`]. A permit dropped
/// unrecorded is a call abandoned: past its [`deadline`](Permit::until) that is a failure (the
/// backend did not answer in time), before it the caller left and the backend is not judged.
#[must_use]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    deadline: Option<Instant>,
    /// Whether this is a half-open circuit's one trial call.
    trial: bool,
    recorded: bool,
}

impl Permit<'_> {
    /// The deadline of the call: dropped unrecorded after it, the call counts as a failure.
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Records the outcome of the call this permit allowed.
    pub fn record(mut self, healthy: bool) {
        self.recorded = true;
        self.breaker.judge(healthy);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            self.breaker.judge(false);
        } else if self.trial {
            self.breaker.release_trial();
        }
    }
}

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
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut inner = self.lock();
        let state = &mut inner.state;
        let trial = match *state {
            State::Closed { .. } => false,
            State::Open { until, .. } if Instant::now() < until => return None,
            State::Open { interval, .. } | State::HalfOpen { trial_in_flight: false, interval } => {
                *state = State::HalfOpen { trial_in_flight: true, interval };
                true
            }
            State::HalfOpen { trial_in_flight: true, .. } => return None,
        };
        Some(Permit { breaker: self, deadline: None, trial, recorded: false })
    }

    /// Consul reports a healthy instance of the backend again: an open circuit forgets the
    /// backoff it grew while the backend was down, and makes its trial call within
    /// [`FIRST_OPEN`] (time for Fabio to route to the instance), not at the end of that interval.
    pub fn healthy_instance_seen(&self) {
        let mut inner = self.lock();
        inner.state = match inner.state {
            State::Open { until, .. } => {
                State::Open { until: until.min(Instant::now() + FIRST_OPEN), interval: FIRST_OPEN }
            }
            State::HalfOpen { trial_in_flight, .. } => State::HalfOpen { trial_in_flight, interval: FIRST_OPEN },
            closed @ State::Closed { .. } => closed,
        };
    }

    /// Takes in the outcome of a call.
    fn judge(&self, healthy: bool) {
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

    /// Forgets a trial call whose caller left before it ended: the next caller makes the trial,
    /// rather than wait for an outcome that will never come.
    fn release_trial(&self) {
        let mut inner = self.lock();
        if let State::HalfOpen { trial_in_flight: true, interval } = inner.state {
            inner.state = State::HalfOpen { trial_in_flight: false, interval };
        }
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

/// The source of the `UNAVAILABLE` an open circuit answers: a call that was never made.
#[derive(Debug)]
pub struct CircuitOpen;

impl std::fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("circuit open")
    }
}

impl std::error::Error for CircuitOpen {}

/// Whether `status` is an open circuit's refusal (no backend was called, so retrying it at once
/// would only be refused again).
pub fn is_circuit_open(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|source| source.is::<CircuitOpen>())
}

/// The breaker as a tower layer, for services that answer a gRPC `Status`.
#[derive(Debug, Clone, Copy)]
pub struct BreakerLayer<'a> {
    breaker: &'a CircuitBreaker,
    backend: &'static str,
}

impl<'a> BreakerLayer<'a> {
    pub fn new(breaker: &'a CircuitBreaker, backend: &'static str) -> Self {
        Self { breaker, backend }
    }
}

impl<'a, S> Layer<S> for BreakerLayer<'a> {
    type Service = Breaking<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaking { inner, layer: *self }
    }
}

/// A service whose calls go through a circuit breaker (see [`BreakerLayer`]).
#[derive(Debug, Clone)]
pub struct Breaking<'a, S> {
    inner: S,
    layer: BreakerLayer<'a>,
}

impl<'a, S, T> Service<Deadline> for Breaking<'a, S>
where
    S: Service<Deadline, Response = T, Error = Status>,
{
    type Response = T;
    type Error = Status;
    type Future = BreakingFuture<'a, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, deadline: Deadline) -> Self::Future {
        match self.layer.breaker.try_acquire() {
            Some(permit) => {
                BreakingFuture::Called { call: self.inner.call(deadline), permit: Some(permit.until(deadline.0)) }
            }
            None => {
                let mut status = Status::unavailable(format!("{} is unavailable (circuit open)", self.layer.backend));
                status.set_source(Arc::new(CircuitOpen));
                BreakingFuture::Refused { status: Some(status) }
            }
        }
    }
}

pin_project! {
    /// The answer of a call through [`Breaking`]: the backend's, recorded by the breaker, or the
    /// open circuit's refusal.
    #[project = Projection]
    pub enum BreakingFuture<'a, F> {
        Called { #[pin] call: F, permit: Option<Permit<'a>> },
        Refused { status: Option<Status> },
    }
}

impl<F, T> Future for BreakingFuture<'_, F>
where
    F: Future<Output = Result<T, Status>>,
{
    type Output = Result<T, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projection::Called { call, permit } => {
                let outcome = ready!(call.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(!outcome.as_ref().is_err_and(is_backend_failure));
                }
                Poll::Ready(outcome)
            }
            Projection::Refused { status } => Poll::Ready(Err(status.take().expect("polled after it answered"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(breaker: &CircuitBreaker) {
        breaker.try_acquire().expect("a permit").record(false);
    }

    #[tokio::test]
    async fn half_open_lets_one_trial_through_and_closes_on_success() {
        let breaker = CircuitBreaker::new(1, Duration::from_millis(50));
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let permit = breaker.try_acquire().expect("the trial call");
        assert!(breaker.try_acquire().is_none(), "only one trial at a time");
        permit.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_failed_trial_opens_the_circuit_again() {
        let breaker = CircuitBreaker::new(1, Duration::from_millis(50));
        fail(&breaker);
        tokio::time::sleep(Duration::from_millis(60)).await;
        fail(&breaker);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_circuit_opens_briefly_first_and_longer_after_each_failed_trial() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(2));
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
        breaker.try_acquire().expect("a trial").record(true);
        fail(&breaker);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "closed again, the next opening is brief");
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_instance_in_consul_cuts_the_open_interval_back_to_the_first() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(2));
        fail(&breaker);
        for open in [250, 500, 1000] {
            tokio::time::advance(Duration::from_millis(open)).await;
            fail(&breaker);
        }
        // Open for 2 s now; Consul sees the backend back 100 ms into it.
        tokio::time::advance(Duration::from_millis(100)).await;
        breaker.healthy_instance_seen();
        tokio::time::advance(FIRST_OPEN - Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), BreakerState::Open, "Fabio gets a moment to route to it");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen, "the trial comes now, not 1.65 s later");
        // The backoff starts again from the beginning.
        fail(&breaker);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // A closed circuit, or one about to try anyway, is left as it is.
        breaker.try_acquire().expect("the trial").record(true);
        breaker.healthy_instance_seen();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_from_before_the_circuit_opened_does_not_free_the_trial_when_its_caller_leaves() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(2));
        let earlier = breaker.try_acquire().expect("closed").until(Instant::now() + Duration::from_secs(3));
        fail(&breaker);
        tokio::time::advance(FIRST_OPEN).await;
        let trial = breaker.try_acquire().expect("the trial");
        drop(earlier);
        assert!(breaker.try_acquire().is_none(), "the trial is still the only call");
        trial.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_frees_the_next_caller_and_a_missed_deadline_is_a_failure() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(2));
        fail(&breaker);
        tokio::time::advance(FIRST_OPEN).await;
        // The caller of the trial hangs up before its deadline: nobody learnt anything.
        drop(breaker.try_acquire().expect("the trial").until(Instant::now() + Duration::from_secs(1)));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // The next trial outlives its deadline: the backend did not answer in time.
        let trial = breaker.try_acquire().expect("the trial is free again").until(Instant::now());
        drop(trial);
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
