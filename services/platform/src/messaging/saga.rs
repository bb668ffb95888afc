//! How saga commands, replies and events are addressed and correlated.
//!
//! A command carries the saga's id (`Ftgo-Saga-Id`), its step (`Ftgo-Saga-Step`) and the subject
//! its reply goes to (`Ftgo-Reply-To`). A participant answers with [`reply_to`], which copies the
//! saga id and step into the reply, so the orchestrator can match the reply to its saga instance. Payloads are protobuf messages;
//! their fully qualified type name travels in `Ftgo-Message-Type`.

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

impl OutgoingMessage {
    /// A protobuf message on `subject`, typed by its fully qualified name.
    pub fn protobuf<M: Message + Name>(subject: impl Into<String>, message: &M) -> Self {
        Self::new(subject, M::full_name(), message.encode_to_vec())
    }
}

impl IncomingMessage {
    /// Decodes the payload as `M`. A payload of another type, or one that does not decode, can
    /// never be handled: it is refused (and dead-lettered), not retried.
    pub fn decode<M: Message + Name + Default>(&self) -> Result<M, HandlerError> {
        if self.message_type != M::full_name() {
            return Err(HandlerError::Rejected(anyhow::anyhow!(
                "expected a {}, got a {}",
                M::full_name(),
                self.message_type
            )));
        }
        M::decode(self.payload.as_ref())
            .map_err(|e| HandlerError::Rejected(anyhow::anyhow!("undecodable {}: {e}", M::full_name())))
    }

    pub fn saga_id(&self) -> Option<&str> {
        self.header(SAGA_ID_HEADER)
    }
}

/// The reply to `command`: sent to the command's `Ftgo-Reply-To` subject with its saga id. A
/// command without a reply subject cannot be answered, so it is refused.
pub fn reply_to<M: Message + Name>(command: &IncomingMessage, reply: &M) -> Result<OutgoingMessage, HandlerError> {
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
