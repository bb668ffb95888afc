//! The saga commands the Consumer Service takes part in (subjects `ftgo.command.consumer.>`).

use ftgo_platform::messaging::{
    inbox::{HandlerError, IncomingMessage, MessageHandler},
    outbox,
    saga::{self, reply_to},
};
use ftgo_proto::consumer::v1 as api;
use prost::Name;
use sqlx::PgConnection;

use crate::{domain, store};

pub const SUBJECTS: &str = "ftgo.command.consumer.>";

pub struct ConsumerCommands;

impl MessageHandler for ConsumerCommands {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        match message.message_type.as_str() {
            t if t == api::VerifyConsumer::full_name() => verify_consumer(tx, message).await,
            other => Err(HandlerError::Rejected(anyhow::anyhow!("the Consumer Service has no command {other}"))),
        }
    }
}

/// Create Order, step 2. A malformed id is a refusal the saga must hear about, not a dead letter.
async fn verify_consumer(tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
    let command: api::VerifyConsumer = message.decode()?;
    let consumer = match domain::parse_consumer_id(&command.consumer_id) {
        Ok(id) => store::find(tx, id).await?,
        Err(_) => None,
    };
    let reply = match domain::verify_consumer_may_order(consumer.as_ref(), &command.consumer_id) {
        Ok(()) => reply_to(message, &api::ConsumerVerified { consumer_id: command.consumer_id })?,
        Err(reason) => {
            tracing::info!(consumer_id = %command.consumer_id, order_id = %command.order_id, %reason, "consumer refused");
            let refusal = api::ConsumerVerificationFailed { consumer_id: command.consumer_id, reason: reason.clone() };
            saga::refuse(message, &refusal, &reason)?
        }
    };
    outbox::enqueue(tx, &reply).await?;
    Ok(())
}
