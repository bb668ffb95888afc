//! The saga commands the Consumer Service takes part in (subjects `ftgo.command.consumer.>`).

use std::sync::LazyLock;

use ftgo_platform::messaging::{
    dispatch::Table,
    inbox::{ConsumerConfig, HandlerError, IncomingMessage, MessageHandler},
    outbox,
    saga::{self, Outcome},
};
use ftgo_platform::{runtime::Running, service::Infrastructure};
use ftgo_proto::consumer::v1 as api;
use sqlx::PgConnection;

use crate::{domain, store};

/// The durable consumers this service runs: name (also the key in `processed_messages`), subjects,
/// handler.
pub fn consumers(infra: &Infrastructure, running: &mut Running) {
    infra.consume(running, ConsumerConfig::new("consumer-service", ["ftgo.command.consumer.>"]), ConsumerCommands);
}

pub struct ConsumerCommands;

/// The commands, one variant per message type.
enum Command {
    VerifyConsumer(api::VerifyConsumer),
}

static COMMANDS: LazyLock<Table<Command>> = LazyLock::new(|| Table::new().on(Command::VerifyConsumer));

impl MessageHandler for ConsumerCommands {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let reply = match COMMANDS.decode(message)? {
            Command::VerifyConsumer(c) => {
                let outcome = verify_consumer(tx, &c).await?;
                let verified = outcome.map(|()| api::ConsumerVerified { consumer_id: c.consumer_id.clone() });
                let refusal = |reason: &str| api::ConsumerVerificationFailed {
                    consumer_id: c.consumer_id,
                    reason: reason.to_owned(),
                };
                saga::answer(message, verified, refusal)?
            }
        };
        outbox::enqueue(tx, &reply).await?;
        Ok(())
    }
}

/// Create Order, step 2. A malformed id is a refusal the saga must hear about, not a dead letter.
async fn verify_consumer(tx: &mut PgConnection, command: &api::VerifyConsumer) -> Result<Outcome<()>, HandlerError> {
    let consumer = match domain::consumer::parse_consumer_id(&command.consumer_id) {
        Ok(id) => store::find(tx, id).await?,
        Err(_) => None,
    };
    Ok(domain::consumer::verify_consumer_may_order(consumer.as_ref(), &command.consumer_id))
}
