//! When a call is made again: the two `tower::retry` policies of the gateway's stack.
//!
//! - [`OnUnavailable`], above the breaker: an idempotent call that met `UNAVAILABLE` is tried once
//!   more, if the retry budget allows and the deadline leaves room.
//! - [`UntilConnected`], below the breaker: a call whose connection was refused was never sent, so
//!   it is tried again whatever it does, with a growing pause, until the deadline is near.
//!
//! Both take the request, a [`Deadline`], as it is: every attempt shares the call's one deadline.

use std::time::Duration;

use tokio::time::Sleep;
use tonic::{Code, Status};
use tower::retry::{
    Policy,
    budget::{Budget, TpsBudget},
};

use super::{Deadline, Idempotency, breaker::is_circuit_open};

/// The pause before an idempotent call's second attempt.
pub(super) const PAUSE: Duration = Duration::from_millis(50);
/// The least time a second attempt must have before the deadline: with less, it would likely end
/// in a timeout that hides the first attempt's clearer `UNAVAILABLE`.
const SHORTEST_ATTEMPT: Duration = Duration::from_millis(100);

/// The first and the longest pause between attempts to connect.
const FIRST_CONNECT_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_CONNECT_PAUSE: Duration = Duration::from_millis(400);

/// One more attempt after `UNAVAILABLE` for an idempotent call, withdrawn from `budget` (into which
/// every call deposits before it starts): a sick backend gets few second attempts however many
/// calls fail. An open circuit's refusal is never retried, nor is a call whose deadline leaves too
/// little time for another attempt to be worth making.
#[derive(Debug, Clone)]
pub struct OnUnavailable<'a> {
    budget: &'a TpsBudget,
    retries_left: u32,
    backend: &'static str,
}

impl<'a> OnUnavailable<'a> {
    pub fn new(budget: &'a TpsBudget, idempotency: Idempotency, backend: &'static str) -> Self {
        let retries_left = match idempotency {
            Idempotency::Idempotent => 1,
            Idempotency::NotIdempotent => 0,
        };
        Self { budget, retries_left, backend }
    }
}

impl<T> Policy<Deadline, T, Status> for OnUnavailable<'_> {
    type Future = Sleep;

    fn retry(&mut self, deadline: &mut Deadline, result: &mut Result<T, Status>) -> Option<Sleep> {
        let Err(status) = result else { return None };
        if status.code() != Code::Unavailable || is_circuit_open(status) || self.retries_left == 0 {
            return None;
        }
        if deadline.left() < PAUSE + SHORTEST_ATTEMPT {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!(backend = self.backend, "no retry: the retry budget is spent");
            return None;
        }
        tracing::debug!(backend = self.backend, %status, "backend unavailable; trying again");
        self.retries_left -= 1;
        Some(tokio::time::sleep(PAUSE))
    }

    fn clone_request(&mut self, deadline: &Deadline) -> Option<Deadline> {
        Some(*deadline)
    }
}

/// Another attempt after a refused connection, pausing 50, 100, 200, 400, 400 ... ms, as long as
/// the deadline leaves room. Below the breaker, so that one call counts once however many times
/// it had to connect.
#[derive(Debug, Clone)]
pub struct UntilConnected {
    pause: Duration,
}

impl Default for UntilConnected {
    fn default() -> Self {
        Self { pause: FIRST_CONNECT_PAUSE }
    }
}

impl<T> Policy<Deadline, T, Status> for UntilConnected {
    type Future = Sleep;

    fn retry(&mut self, deadline: &mut Deadline, result: &mut Result<T, Status>) -> Option<Sleep> {
        let Err(status) = result else { return None };
        let pause = self.pause;
        if !never_sent(status) || deadline.left() <= pause {
            return None;
        }
        tracing::debug!(%status, ?pause, "connection refused; trying again");
        self.pause = (pause * 2).min(LONGEST_CONNECT_PAUSE);
        Some(tokio::time::sleep(pause))
    }

    fn clone_request(&mut self, deadline: &Deadline) -> Option<Deadline> {
        Some(*deadline)
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

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    #[test]
    fn a_connection_refused_behind_fabio_was_never_sent() {
        let fabio = "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:44409: connect: connection refused\"";
        assert!(never_sent(&Status::unavailable(fabio)));
        assert!(never_sent(&Status::unavailable("tcp connect error")));
        assert!(!never_sent(&Status::unavailable("connection reset by peer")), "it may have been handled");
        assert!(!never_sent(&Status::internal(fabio)));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_connections_are_tried_again_with_growing_pauses_until_the_deadline_is_near() {
        let mut policy = UntilConnected::default();
        let mut deadline = Deadline(Instant::now() + Duration::from_millis(1000));
        let mut refused: Result<(), _> = Err(Status::unavailable("tcp connect error"));
        let mut pauses = Vec::new();
        while let Some(pause) = policy.retry(&mut deadline, &mut refused) {
            let started = Instant::now();
            pause.await;
            pauses.push(started.elapsed().as_millis());
        }
        assert_eq!(pauses, [50, 100, 200, 400], "a fifth pause of 400 ms would pass the deadline");
        let mut reset: Result<(), _> = Err(Status::unavailable("connection reset by peer"));
        assert!(UntilConnected::default().retry(&mut deadline, &mut reset).is_none(), "it may have been handled");
    }
}
