//! How saga commands, replies and events are addressed and correlated.
//!
//! A command carries the saga's id (`Ftgo-Saga-Id`), its step (`Ftgo-Saga-Step`) and the subject
//! its reply goes to (`Ftgo-Reply-To`). A participant answers with [`reply_to`] when it did what
//! the command asked, or [`refuse`] when it would not; both copy the saga id and step into the
//! reply, so the orchestrator can match the reply to its saga instance, and both say the outcome
//! in `Ftgo-Saga-Outcome` (with the reason in `Ftgo-Saga-Reason`), so the orchestrator reads it
//! from any reply without knowing each participant's message types. Payloads are protobuf
//! messages; their fully qualified type name travels in `Ftgo-Message-Type`.

use prost::{Message, Name};

use super::{
    OutgoingMessage,
    inbox::{HandlerError, IncomingMessage},
};

pub const SAGA_ID_HEADER: &str = "Ftgo-Saga-Id";
pub const REPLY_TO_HEADER: &str = "Ftgo-Reply-To";
/// Which step of the saga (and in which direction) a command belongs to; echoed in the reply so
/// that the orchestrator can tell a reply to the current step from a stale one.
pub const SAGA_STEP_HEADER: &str = "Ftgo-Saga-Step";
/// On every reply: `success` (the participant did what the command asked) or `failure`.
pub const SAGA_OUTCOME_HEADER: &str = "Ftgo-Saga-Outcome";
/// On a `failure` reply: why, on one line.
pub const SAGA_REASON_HEADER: &str = "Ftgo-Saga-Reason";
const SUCCESS: &str = "success";
const FAILURE: &str = "failure";

impl OutgoingMessage {
    /// A protobuf message on `subject`, typed by its fully qualified name.
    pub fn protobuf<M: Message + Name>(subject: impl Into<String>, message: &M) -> Self {
        Self::new(subject, M::full_name(), message.encode_to_vec())
    }
}

/// The one protobuf decoder for messages: `payload` as `M`, when `message_type` (the
/// `Ftgo-Message-Type` it travelled with) names `M`.
pub fn decode<M: Message + Name + Default>(message_type: &str, payload: &[u8]) -> Result<M, String> {
    if message_type != M::full_name() {
        return Err(format!("expected a {}, got a {message_type}", M::full_name()));
    }
    M::decode(payload).map_err(|e| format!("undecodable {}: {e}", M::full_name()))
}

impl IncomingMessage {
    /// Decodes the payload as `M`. A payload of another type, or one that does not decode, can
    /// never be handled: it is refused (and dead-lettered), not retried.
    pub fn decode<M: Message + Name + Default>(&self) -> Result<M, HandlerError> {
        decode(&self.message_type, &self.payload).map_err(|e| HandlerError::Rejected(anyhow::anyhow!(e)))
    }

    pub fn saga_id(&self) -> Option<&str> {
        self.header(SAGA_ID_HEADER)
    }

    /// What a participant's reply says of its command: `Ok(())` done, `Err(reason)` refused. A
    /// reply that says neither cannot be applied, so it is refused (and dead-lettered).
    pub fn saga_outcome(&self) -> Result<Result<(), String>, HandlerError> {
        match self.header(SAGA_OUTCOME_HEADER) {
            Some(SUCCESS) => Ok(Ok(())),
            Some(FAILURE) => Ok(Err(self.header(SAGA_REASON_HEADER).unwrap_or("no reason given").to_owned())),
            other => Err(HandlerError::Rejected(anyhow::anyhow!(
                "a reply must say {SAGA_OUTCOME_HEADER}: {SUCCESS} or {FAILURE}, not {other:?}"
            ))),
        }
    }
}

/// A participant's answer to a saga command, the one meaning of *outcome* in this code base: `Ok`
/// with the reply that says it did what the command asked, or `Err` with why it would not. It
/// travels as `Ftgo-Saga-Outcome` (`success`/`failure`) and `Ftgo-Saga-Reason`.
pub type Outcome<T> = Result<T, String>;

/// The reply to `command` that says `outcome`: [`reply_to`] with the participant's success
/// message, or [`refuse`] with the refusal that `refusal` builds from the reason.
pub fn answer<S: Message + Name, F: Message + Name>(
    command: &IncomingMessage,
    outcome: Outcome<S>,
    refusal: impl FnOnce(&str) -> F,
) -> Result<OutgoingMessage, HandlerError> {
    match outcome {
        Ok(done) => reply_to(command, &done),
        Err(reason) => {
            tracing::info!(command = %command.message_type, saga_id = ?command.saga_id(), %reason, "refused");
            refuse(command, &refusal(&reason), &reason)
        }
    }
}

/// The reply to `command` when the participant did what it asked: sent to the command's
/// `Ftgo-Reply-To` subject with its saga id and step, as a `success`. A command without a reply
/// subject cannot be answered, so it is refused.
pub fn reply_to<M: Message + Name>(command: &IncomingMessage, reply: &M) -> Result<OutgoingMessage, HandlerError> {
    Ok(addressed(command, reply)?.with_header(SAGA_OUTCOME_HEADER, SUCCESS))
}

/// The reply to `command` when the participant would not do it: `refusal` (which says why in the
/// participant's own terms), as a `failure` with `reason` for the saga's history.
pub fn refuse<M: Message + Name>(
    command: &IncomingMessage,
    refusal: &M,
    reason: &str,
) -> Result<OutgoingMessage, HandlerError> {
    // A header value is one line.
    let reason: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    Ok(addressed(command, refusal)?.with_header(SAGA_OUTCOME_HEADER, FAILURE).with_header(SAGA_REASON_HEADER, reason))
}

fn addressed<M: Message + Name>(command: &IncomingMessage, reply: &M) -> Result<OutgoingMessage, HandlerError> {
    let subject = command
        .header(REPLY_TO_HEADER)
        .ok_or_else(|| HandlerError::Rejected(anyhow::anyhow!("the command has no {REPLY_TO_HEADER} header")))?;
    let mut message = OutgoingMessage::protobuf(subject, reply);
    for header in [SAGA_ID_HEADER, SAGA_STEP_HEADER] {
        if let Some(value) = command.header(header) {
            message = message.with_header(header, value);
        }
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use async_nats::HeaderMap;
    use ftgo_proto::kitchen::v1 as kitchen;

    use super::*;

    fn command() -> IncomingMessage {
        let mut headers = HeaderMap::new();
        headers.insert(SAGA_ID_HEADER, "s-1");
        headers.insert(SAGA_STEP_HEADER, "2:f");
        headers.insert(REPLY_TO_HEADER, "ftgo.reply.orchestrator.saga");
        IncomingMessage {
            id: uuid::Uuid::new_v4(),
            subject: "ftgo.command.kitchen.CreateTicket".into(),
            message_type: kitchen::CreateTicket::full_name(),
            headers,
            payload: Default::default(),
            delivery: 1,
        }
    }

    /// The reply as the orchestrator receives it.
    fn received(reply: OutgoingMessage) -> IncomingMessage {
        let mut headers = HeaderMap::new();
        for (name, value) in &reply.headers {
            headers.insert(name.as_str(), value.as_str());
        }
        IncomingMessage {
            id: reply.id,
            subject: reply.subject,
            message_type: reply.message_type,
            headers,
            payload: reply.payload.into(),
            delivery: 1,
        }
    }

    #[test]
    fn every_reply_says_its_outcome_and_keeps_the_sagas_address() {
        let done = received(reply_to(&command(), &kitchen::TicketCreated { ticket_id: "t-1".into() }).unwrap());
        assert_eq!(done.saga_outcome().unwrap(), Ok(()));
        assert_eq!((done.saga_id(), done.header(SAGA_STEP_HEADER)), (Some("s-1"), Some("2:f")));
        assert_eq!(done.subject, "ftgo.reply.orchestrator.saga");

        let why = "restaurant r-1 is closed\nfor the night";
        let refused = refuse(&command(), &kitchen::TicketCommandRefused { reason: why.into() }, why).unwrap();
        let refused = received(refused);
        assert_eq!(refused.saga_outcome().unwrap(), Err("restaurant r-1 is closed for the night".to_owned()));
        assert_eq!(refused.message_type, kitchen::TicketCommandRefused::full_name());

        // A reply that says neither cannot be applied.
        let mut silent = done;
        silent.headers = HeaderMap::new();
        assert!(matches!(silent.saga_outcome(), Err(HandlerError::Rejected(_))));
    }
}
