//! Which message types a handler takes, as one typed table: the counterpart of FTGO's
//! `SagaCommandHandlersBuilder...onMessage(Type.class, handler)`.
//!
//! A service lists its messages once, as the variants of its own enum:
//!
//! ```ignore
//! enum Command { CreateTicket(api::CreateTicket), CancelCreateTicket(api::CancelCreateTicket) }
//!
//! static COMMANDS: LazyLock<Table<Command>> =
//!     LazyLock::new(|| Table::new().on(Command::CreateTicket).on(Command::CancelCreateTicket));
//!
//! match COMMANDS.decode(message)? {
//!     Command::CreateTicket(command) => create_ticket(tx, command).await?,
//!     Command::CancelCreateTicket(command) => cancel(tx, command).await?,
//! }
//! ```
//!
//! The table reads `Ftgo-Message-Type` and decodes the payload as the type registered under it;
//! the `match` then hands each variant to its handler, and the compiler checks that every variant
//! has one. (An enum and a `match` rather than a map of async closures: a closure that borrows the
//! transaction cannot be stored as a `Send` future on stable Rust without boxing every handler.)

use std::collections::BTreeMap;

use prost::{Message, Name};

use super::{
    inbox::{HandlerError, IncomingMessage},
    saga,
};

type Decoder<E> = Box<dyn Fn(&str, &[u8]) -> Result<E, String> + Send + Sync>;

/// The message types one handler takes, each decoded into a variant of `E`.
pub struct Table<E> {
    decoders: BTreeMap<String, Decoder<E>>,
}

impl<E: 'static> Default for Table<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: 'static> Table<E> {
    pub fn new() -> Self {
        Self { decoders: BTreeMap::new() }
    }

    /// Takes messages of type `M` (by its fully qualified protobuf name), as `variant(M)`.
    ///
    /// # Panics
    /// When `M` is already in the table: two handlers for one type is a programming error.
    pub fn on<M: Message + Name + Default + 'static>(mut self, variant: fn(M) -> E) -> Self {
        let decoder: Decoder<E> =
            Box::new(move |message_type, payload| saga::decode::<M>(message_type, payload).map(variant));
        let name = M::full_name();
        assert!(self.decoders.insert(name.clone(), decoder).is_none(), "{name} is in the table twice");
        self
    }

    /// The message as one of the table's types. A type the table does not list, or a payload
    /// that does not decode, can never be handled: it is refused (and dead-lettered).
    pub fn decode(&self, message: &IncomingMessage) -> Result<E, HandlerError> {
        self.decode_listed(message).unwrap_or_else(|| {
            Err(HandlerError::Rejected(anyhow::anyhow!(
                "no handler here for {} (on {}); this consumer takes {}",
                message.message_type,
                message.subject,
                self.message_types().collect::<Vec<_>>().join(", ")
            )))
        })
    }

    /// Like [`decode`](Self::decode), but `None` for a type the table does not list: for a
    /// subscription to events of which the handler wants only some.
    pub fn decode_listed(&self, message: &IncomingMessage) -> Option<Result<E, HandlerError>> {
        let decoder = self.decoders.get(&message.message_type)?;
        Some(decoder(&message.message_type, &message.payload).map_err(|e| HandlerError::Rejected(anyhow::anyhow!(e))))
    }

    /// The fully qualified names of the types the table takes, in order.
    pub fn message_types(&self) -> impl Iterator<Item = &str> {
        self.decoders.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use async_nats::HeaderMap;
    use ftgo_proto::kitchen::v1 as kitchen;

    use super::*;

    #[derive(Debug, PartialEq)]
    enum Command {
        Create(kitchen::CreateTicket),
        Cancel(kitchen::CancelCreateTicket),
    }

    fn table() -> Table<Command> {
        Table::new().on(Command::Create).on(Command::Cancel)
    }

    fn message<M: Message + Name>(payload: &M, message_type: &str) -> IncomingMessage {
        IncomingMessage {
            id: uuid::Uuid::new_v4(),
            subject: "ftgo.command.kitchen.x".into(),
            message_type: message_type.to_owned(),
            headers: HeaderMap::new(),
            payload: payload.encode_to_vec().into(),
            delivery: 1,
        }
    }

    #[test]
    fn each_type_decodes_into_its_own_variant() {
        let cancel = kitchen::CancelCreateTicket { ticket_id: "t-1".into() };
        let decoded = table().decode(&message(&cancel, &kitchen::CancelCreateTicket::full_name())).unwrap();
        assert_eq!(decoded, Command::Cancel(cancel));
        let create = kitchen::CreateTicket { order_id: "o-1".into(), ..Default::default() };
        let decoded = table().decode(&message(&create, &kitchen::CreateTicket::full_name())).unwrap();
        assert_eq!(decoded, Command::Create(create));
    }

    #[test]
    fn an_unlisted_type_is_refused_with_the_types_the_handler_takes() {
        let other = message(&kitchen::ConfirmCreateTicket::default(), &kitchen::ConfirmCreateTicket::full_name());
        let Err(HandlerError::Rejected(e)) = table().decode(&other) else { panic!("an unlisted type was accepted") };
        let e = e.to_string();
        assert!(e.contains("ftgo.kitchen.v1.ConfirmCreateTicket"), "{e}");
        assert!(e.contains("ftgo.kitchen.v1.CancelCreateTicket, ftgo.kitchen.v1.CreateTicket"), "{e}");
        assert!(table().decode_listed(&other).is_none());
    }

    #[test]
    fn a_payload_that_does_not_decode_is_refused() {
        let mut garbage = message(&kitchen::CreateTicket::default(), &kitchen::CreateTicket::full_name());
        garbage.payload = vec![0xff, 0xff, 0xff].into();
        assert!(matches!(table().decode(&garbage), Err(HandlerError::Rejected(_))));
    }

    #[test]
    #[should_panic(expected = "twice")]
    fn a_type_cannot_have_two_handlers() {
        let _ = Table::new().on(Command::Create).on(Command::Create);
    }
}
