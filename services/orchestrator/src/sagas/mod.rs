//! The saga engine: pure, no I/O.
//!
//! A saga is a list of [`Step`]s. Each step may have an action (a command to a participant) and a
//! compensation (the command that undoes it). The orchestrator sends the action of the current
//! step and waits for the reply:
//! - success: the next step with an action runs; after the last, the saga has SUCCEEDED;
//! - refusal: the saga turns COMPENSATING and sends, newest first, the compensation of every
//!   earlier step that has one; when none is left, it is COMPENSATED.
//!
//! Step 0 of every FTGO saga is the one the Order Service did itself when it started the saga
//! (create the order, request its cancel or revision): it has no action, and its compensation
//! puts the order back (reject it, undo the cancel or the revision) with the reason.
//!
//! Each command carries `Ftgo-Saga-Step` = `<step>:<f|c>`; a reply whose step does not match the
//! saga's current one is stale and ignored.
//!
//! No saga waits for ever. When a step's deadline passes without a reply, the orchestrator calls
//! [`Saga::on_deadline`]: the step's command is sent again (a participant handles a repeated
//! command as it handled the first), up to a bounded number of attempts. Then the saga gives up on
//! the step:
//! - a forward step at or before the saga's pivot (the last step that can be undone) is treated
//!   as refused, and the saga compensates, starting with the step's own compensation when it has
//!   one: the command may have been applied without its reply arriving yet;
//! - a step after the pivot (which must not be undone) or a compensation leaves the saga
//!   `FAILED`, with the reason, for an operator. A failed saga still waits for the reply to the
//!   step it gave up on: a late reply (for instance, after the operator replayed the
//!   participant's dead letter) resumes it where it stopped.

pub mod cancel_order;
pub mod create_order;
pub mod revise_order;

use chrono::{DateTime, Utc};
use ftgo_platform::ids::{OrderId, SagaId};
use ftgo_platform::messaging::{OutgoingMessage, saga::SAGA_STEP_HEADER, streams::command_subject};
use prost::{Message, Name};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Where every participant sends its replies to the orchestrator.
pub const REPLY_SUBJECT: &str = "ftgo.reply.orchestrator.saga";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumString, strum::IntoStaticStr)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaState {
    Running,
    Compensating,
    Succeeded,
    Compensated,
    /// A step went unanswered through every attempt and could not be undone: the saga waits for
    /// an operator (or a late reply to that step).
    Failed,
}

impl SagaState {
    /// The name used in the API and in the database (`RUNNING`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// Whether the saga is over: it sends nothing more and takes no more replies. (A failed saga
    /// is not over: it still takes the reply to the step it gave up on.)
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Compensated)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The step's action succeeded (or it needed none).
    Done,
    /// The participant refused the step; the saga compensates.
    Refused,
    /// The step was undone.
    Compensated,
    /// The compensation itself was refused: the saga carries on undoing the earlier steps, and
    /// the refusal is kept here for an operator.
    CompensationRefused,
    /// No reply came before the step's deadline: its command was sent again.
    Resent,
    /// No reply came through every attempt: the saga gave up on the step.
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A command for a participant, ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub subject: String,
    pub message_type: String,
    pub payload: Vec<u8>,
}

const FORWARD: char = 'f';
const COMPENSATING: char = 'c';

/// Whether the `Ftgo-Saga-Step` `header` names a compensation (`<step>:c`), not an action.
pub fn awaits_compensation(header: &str) -> bool {
    header.ends_with(COMPENSATING)
}

/// A step's command, or why it cannot be built from the saga's data (a fact an earlier reply should
/// have taught it is missing): the step then counts as refused, never sent with a blank field.
pub type Built = Result<Command, String>;

/// The command `message` for `service`'s command subject.
pub fn command<M: Message + Name>(service: &str, message: &M) -> Built {
    let OutgoingMessage { subject, message_type, payload, .. } =
        OutgoingMessage::protobuf(command_subject(service, M::NAME), message);
    Ok(Command { subject, message_type, payload })
}

/// A participant's reply, as the engine sees it: what the participant said of the command (the
/// platform's `Ftgo-Saga-Outcome`, whatever the message type), and the message itself for a step
/// that learns from it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub message_type: String,
    pub payload: Vec<u8>,
    /// `Err(reason)` when the participant refused.
    pub outcome: Result<(), String>,
}

impl Reply {
    pub fn outcome(&self) -> Result<(), String> {
        self.outcome.clone()
    }

    pub fn decode<M: Message + Name + Default>(&self) -> Result<M, String> {
        ftgo_platform::messaging::saga::decode(&self.message_type, &self.payload)
    }
}

/// Reads a successful reply into the saga's data; an `Err` turns the reply into a refusal.
pub type LearnFromReply<D> = fn(&mut D, &Reply) -> Result<(), String>;

/// One step of a saga over data `D`.
pub struct Step<D> {
    pub name: &'static str,
    /// The command that performs the step; `None` for step 0, done by the saga's initiator.
    pub action: Option<fn(&D) -> Built>,
    /// The command that undoes the step, given the saga's failure reason.
    pub compensation: Option<fn(&D, &str) -> Built>,
    /// What a successful reply teaches the saga (the ticket id, ...). An `Err` makes the reply a
    /// refusal.
    pub on_success: Option<LearnFromReply<D>>,
}

impl<D> Step<D> {
    /// Step 0, done by the saga's initiator before the saga starts (the Order Service created the
    /// order); `compensation` undoes it when a later step fails.
    pub const fn initiated(name: &'static str, compensation: fn(&D, &str) -> Built) -> Self {
        Self { name, action: None, compensation: Some(compensation), on_success: None }
    }

    /// A step that sends `action`'s command to a participant and waits for its reply.
    pub const fn invoke(name: &'static str, action: fn(&D) -> Built) -> Self {
        Self { name, action: Some(action), compensation: None, on_success: None }
    }

    /// Undone by `compensation` when a later step fails (a step without one cannot be undone:
    /// the pivot and the steps after it).
    pub const fn compensated_by(mut self, compensation: fn(&D, &str) -> Built) -> Self {
        self.compensation = Some(compensation);
        self
    }

    /// Learns from its successful reply with `learn`.
    pub const fn on_success(mut self, learn: LearnFromReply<D>) -> Self {
        self.on_success = Some(learn);
        self
    }
}

/// Something to do with a saga type known only by its stored name: [`with_saga_type`] calls
/// `visit` with the definition as a type parameter.
pub trait SagaVisitor {
    type Output;
    fn visit<D: SagaDefinition>(self) -> Self::Output;
}

/// The saga registry: every saga type the orchestrator runs, by the name its rows store. The one
/// place a new saga type is added; `None` for a name it does not know.
pub fn with_saga_type<V: SagaVisitor>(saga_type: &str, visitor: V) -> Option<V::Output> {
    use self::{cancel_order::CancelOrderData, create_order::CreateOrderData, revise_order::ReviseOrderData};
    match saga_type {
        CreateOrderData::TYPE => Some(visitor.visit::<CreateOrderData>()),
        CancelOrderData::TYPE => Some(visitor.visit::<CancelOrderData>()),
        ReviseOrderData::TYPE => Some(visitor.visit::<ReviseOrderData>()),
        _ => None,
    }
}

/// Whether the registry has `saga_type`.
pub fn is_known(saga_type: &str) -> bool {
    struct Known;
    impl SagaVisitor for Known {
        type Output = ();
        fn visit<D: SagaDefinition>(self) {}
    }
    with_saga_type(saga_type, Known).is_some()
}

/// A saga type: its data and its steps.
pub trait SagaDefinition: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// `CreateOrderSaga`, ...
    const TYPE: &'static str;
    /// In order; step 0 is the initiator's ([`Step::initiated`]).
    const STEPS: &'static [Step<Self>];
}

/// A running or finished saga instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Saga<D> {
    pub id: SagaId,
    pub order_id: OrderId,
    pub state: SagaState,
    /// The step whose reply the saga waits for (forward or compensating, as `state` says).
    pub step: usize,
    pub data: D,
    pub failure_reason: Option<String>,
    pub history: Vec<StepRecord>,
    /// The `Ftgo-Saga-Step` of the command in flight, which its reply must echo; `None` once the
    /// saga has finished. (It also says a failed saga's direction: `:f` or `:c`.)
    pub awaiting: Option<String>,
    /// How many times the command in flight has been sent.
    pub attempts: u32,
}

/// What the saga sends next, with the `Ftgo-Saga-Step` header that its reply must echo.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    pub command: Command,
    pub step_header: String,
}

impl Next {
    /// The outbox message for this command, addressed from saga `saga_id`.
    pub fn message(&self, saga_id: SagaId) -> OutgoingMessage {
        use ftgo_platform::messaging::saga::{REPLY_TO_HEADER, SAGA_ID_HEADER};
        OutgoingMessage::new(&self.command.subject, &self.command.message_type, self.command.payload.clone())
            .with_header(SAGA_ID_HEADER, saga_id.to_string())
            .with_header(SAGA_STEP_HEADER, &self.step_header)
            .with_header(REPLY_TO_HEADER, REPLY_SUBJECT)
    }
}

/// What a missed deadline did to a saga ([`Saga::on_deadline`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Overdue {
    /// The step's command, to send again.
    Resent(Next),
    /// The saga gave up on the step: it compensates (with its first compensation, or `None` if
    /// nothing is left to undo) or it failed (`None`).
    GaveUp(Option<Next>),
    /// The saga waits for nothing (finished or failed).
    NotWaiting,
}

impl Overdue {
    /// The command to send, if any.
    pub fn next(self) -> Option<Next> {
        match self {
            Overdue::Resent(next) => Some(next),
            Overdue::GaveUp(next) => next,
            Overdue::NotWaiting => None,
        }
    }
}

/// Why a reply was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("stale reply for step {got:?}; the saga is at {expected:?}")]
    Stale { got: String, expected: String },
    #[error("the saga has already finished")]
    Finished,
}

impl<D: SagaDefinition> Saga<D> {
    /// A new saga whose step 0 the initiator already did; returns it with its first command.
    pub fn start(order_id: OrderId, data: D, now: DateTime<Utc>) -> (Self, Option<Next>) {
        let mut saga = Self {
            id: SagaId::new(),
            order_id,
            state: SagaState::Running,
            step: 0,
            data,
            failure_reason: None,
            history: vec![StepRecord {
                name: D::STEPS[0].name.to_owned(),
                status: StepStatus::Done,
                at: now,
                detail: None,
            }],
            awaiting: None,
            attempts: 0,
        };
        let next = saga.forward_from(1, now);
        (saga, next)
    }

    /// The `Ftgo-Saga-Step` the saga waits for, if any.
    pub fn expected_step_header(&self) -> Option<&str> {
        self.awaiting.as_deref()
    }

    /// Whether the saga is undoing its steps (or gave up while undoing them).
    pub fn is_compensating(&self) -> bool {
        self.state == SagaState::Compensating || self.awaiting.as_deref().is_some_and(awaits_compensation)
    }

    /// Sends `command` for the current step, in the saga's current direction.
    fn send(&mut self, command: Command) -> Next {
        let direction = if self.state == SagaState::Compensating { COMPENSATING } else { FORWARD };
        let header = format!("{}:{direction}", self.step);
        self.awaiting = Some(header.clone());
        self.attempts = 1;
        Next { command, step_header: header }
    }

    /// Applies the reply to the current step and returns the next command, if any.
    pub fn on_reply(
        &mut self,
        step_header: &str,
        reply: &Reply,
        now: DateTime<Utc>,
    ) -> Result<Option<Next>, ReplyError> {
        let Some(expected) = self.awaiting.clone() else {
            return Err(ReplyError::Finished);
        };
        if step_header != expected {
            return Err(ReplyError::Stale { got: step_header.to_owned(), expected });
        }
        if self.state == SagaState::Failed {
            // The late reply to the step the saga gave up on: it carries on from there.
            self.state = if awaits_compensation(&expected) { SagaState::Compensating } else { SagaState::Running };
            if self.state == SagaState::Running {
                self.failure_reason = None;
            }
        }
        let step = &D::STEPS[self.step];
        let record = |status, detail| StepRecord { name: step.name.to_owned(), status, at: now, detail };
        if self.state == SagaState::Compensating {
            let refused = reply.outcome().err();
            let status = if refused.is_some() { StepStatus::CompensationRefused } else { StepStatus::Compensated };
            self.history.push(record(status, refused));
            return Ok(self.compensate_from(self.step.checked_sub(1), now));
        }
        let outcome =
            reply.outcome().and_then(|()| step.on_success.map_or(Ok(()), |learn| learn(&mut self.data, reply)));
        match outcome {
            Ok(()) => {
                self.history.push(record(StepStatus::Done, None));
                Ok(self.forward_from(self.step + 1, now))
            }
            Err(reason) => {
                self.history.push(record(StepStatus::Refused, Some(reason.clone())));
                self.failure_reason = Some(format!("{} refused: {reason}", step.name));
                self.state = SagaState::Compensating;
                Ok(self.compensate_from(self.step.checked_sub(1), now))
            }
        }
    }

    fn forward_from(&mut self, from: usize, now: DateTime<Utc>) -> Option<Next> {
        let steps = D::STEPS;
        for (index, step) in steps.iter().enumerate().skip(from) {
            if let Some(action) = step.action {
                self.step = index;
                match action(&self.data) {
                    Ok(command) => return Some(self.send(command)),
                    Err(reason) => {
                        let reason = format!("could not be sent: {reason}");
                        self.history.push(StepRecord {
                            name: step.name.to_owned(),
                            status: StepStatus::Refused,
                            at: now,
                            detail: Some(reason.clone()),
                        });
                        self.failure_reason = Some(format!("{} {reason}", step.name));
                        self.state = SagaState::Compensating;
                        return self.compensate_from(index.checked_sub(1), now);
                    }
                }
            }
            self.history.push(StepRecord {
                name: step.name.to_owned(),
                status: StepStatus::Done,
                at: now,
                detail: None,
            });
        }
        self.state = SagaState::Succeeded;
        self.step = steps.len();
        self.awaiting = None;
        None
    }

    fn compensate_from(&mut self, from: Option<usize>, now: DateTime<Utc>) -> Option<Next> {
        let steps = D::STEPS;
        let reason = self.failure_reason.clone().unwrap_or_default();
        let mut index = from;
        while let Some(i) = index {
            if let Some(compensation) = steps[i].compensation {
                self.step = i;
                match compensation(&self.data, &reason) {
                    Ok(command) => return Some(self.send(command)),
                    // Kept for an operator, as a refused compensation is; the saga undoes the rest.
                    Err(why) => self.history.push(StepRecord {
                        name: steps[i].name.to_owned(),
                        status: StepStatus::CompensationRefused,
                        at: now,
                        detail: Some(format!("could not be sent: {why}")),
                    }),
                }
            }
            index = i.checked_sub(1);
        }
        self.state = SagaState::Compensated;
        self.awaiting = None;
        None
    }

    /// The current step's deadline passed without a reply. While attempts remain (`attempts` in
    /// all, the first send included) the command is sent again; then the saga gives up on the
    /// step as the module documentation says. Nothing happens to a saga that is not waiting
    /// (finished, or already failed).
    pub fn on_deadline(&mut self, attempts: u32, now: DateTime<Utc>) -> Overdue {
        if self.state.is_finished() || self.state == SagaState::Failed {
            return Overdue::NotWaiting;
        }
        let Some(header) = self.awaiting.clone() else { return Overdue::NotWaiting };
        let step = &D::STEPS[self.step];
        let record =
            |status, detail: String| StepRecord { name: step.name.to_owned(), status, at: now, detail: Some(detail) };
        let command = if self.state == SagaState::Compensating {
            step.compensation
                .map(|compensate| compensate(&self.data, self.failure_reason.as_deref().unwrap_or_default()))
        } else {
            step.action.map(|act| act(&self.data))
        };
        if self.attempts < attempts
            && let Some(Ok(command)) = command
        {
            self.attempts += 1;
            let detail = format!("no reply; sent again (attempt {} of {attempts})", self.attempts);
            self.history.push(record(StepStatus::Resent, detail));
            return Overdue::Resent(Next { command, step_header: header });
        }
        let tries = if self.attempts == 1 { "attempt" } else { "attempts" };
        let reason = format!("{} got no reply after {} {tries}", step.name, self.attempts);
        self.history.push(record(StepStatus::TimedOut, reason.clone()));
        if self.state == SagaState::Running && self.step <= Self::pivot() {
            self.failure_reason = Some(reason);
            self.state = SagaState::Compensating;
            let from = if step.compensation.is_some() { Some(self.step) } else { self.step.checked_sub(1) };
            return Overdue::GaveUp(self.compensate_from(from, now));
        }
        if self.state == SagaState::Running {
            self.failure_reason = Some(reason);
        }
        self.state = SagaState::Failed;
        Overdue::GaveUp(None)
    }

    /// The last step that can be undone: the steps after it must complete.
    fn pivot() -> usize {
        D::STEPS.iter().rposition(|step| step.compensation.is_some()).unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use ftgo_platform::ids::{ConsumerId, RestaurantId};

    use super::*;

    /// The ids the saga tests use: one order, its consumer and restaurant, and its ticket.
    pub const T1: &str = "00000000-0000-4000-8000-0000000000f1";

    pub fn o1() -> OrderId {
        "00000000-0000-4000-8000-0000000000a1".parse().unwrap()
    }

    pub fn c1() -> ConsumerId {
        "00000000-0000-4000-8000-0000000000c1".parse().unwrap()
    }

    pub fn r1() -> RestaurantId {
        "00000000-0000-4000-8000-0000000000b1".parse().unwrap()
    }

    /// A successful reply of type `M`.
    pub fn reply<M: Message + Name>(message: &M) -> Reply {
        Reply { message_type: M::full_name(), payload: message.encode_to_vec(), outcome: Ok(()) }
    }

    /// A refusal of type `M`, for `reason`.
    pub fn refusal<M: Message + Name>(message: &M, reason: &str) -> Reply {
        Reply { outcome: Err(reason.to_owned()), ..reply(message) }
    }

    /// Replies `reply` to the saga's current step and returns the next command's type.
    pub fn answer<D: SagaDefinition>(saga: &mut Saga<D>, reply: &Reply) -> Option<String> {
        let header = saga.expected_step_header().expect("the saga waits for a reply").to_owned();
        saga.on_reply(&header, reply, Utc::now()).unwrap().map(|next| next.command.message_type)
    }
}
