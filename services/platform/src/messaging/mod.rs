//! Asynchronous messaging over NATS JetStream, with nothing lost and nothing applied twice.
//!
//! The pattern, end to end:
//! 1. A service changes its state and, **in the same database transaction**, writes the messages
//!    that change causes into its outbox ([`outbox::enqueue`]). Either both commit or neither does.
//! 2. The [`relay::OutboxRelay`] publishes committed outbox rows to JetStream with the row's id as
//!    `Nats-Msg-Id`, and marks them published once JetStream has acknowledged them. A relay that
//!    dies between the two publishes again; JetStream's duplicate window drops the copy.
//! 3. An [`inbox::InboxConsumer`] receives each message and, **in one transaction**, records its id
//!    as processed and applies the handler's effect (which may enqueue more messages). A message
//!    delivered twice finds its id recorded and is only acknowledged.
//! 4. A message that cannot be handled is retried a bounded number of times with back-off, then
//!    moved to the dead-letter table, so it never blocks the messages behind it; an operator lists
//!    and replays it ([`dead_letters`]).

pub mod connection;
pub mod dead_letters;
pub mod dispatch;
pub mod inbox;
pub mod outbox;
pub mod relay;
pub mod saga;
pub mod streams;

use std::collections::BTreeMap;

use uuid::Uuid;

/// JetStream's de-duplication header: the outbox row id.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The fully qualified protobuf type of the payload, e.g. `ftgo.kitchen.v1.CreateTicket`.
pub const MESSAGE_TYPE_HEADER: &str = "Ftgo-Message-Type";

/// A message on its way out, as the outbox stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub id: Uuid,
    pub subject: String,
    pub message_type: String,
    /// Extra headers: correlation ids, reply subjects, trace context.
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl OutgoingMessage {
    /// A new message with a fresh id.
    pub fn new(subject: impl Into<String>, message_type: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            id: Uuid::new_v4(),
            subject: subject.into(),
            message_type: message_type.into(),
            headers: BTreeMap::new(),
            payload,
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}
