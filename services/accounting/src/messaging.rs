//! What the Accounting Service hears: `ConsumerCreated` events (open an account) and the saga's
//! card commands (`ftgo.command.accounting.>`).

use std::sync::LazyLock;

use ftgo_platform::{
    ids::{ConsumerId, OrderId},
    messaging::{
        dispatch::Table,
        inbox::{ConsumerConfig, HandlerError, IncomingMessage, MessageHandler},
        outbox,
        saga::{self, Outcome},
    },
    money::Money,
};
use ftgo_platform::{runtime::Running, service::Infrastructure};
use ftgo_proto::{accounting::v1 as api, consumer::v1 as consumer};
use sqlx::PgConnection;

use crate::{domain::account::Account, store};

/// A command for a consumer whose ConsumerCreated event has not been handled yet is retried this
/// many times (with the consumer's back-off) before it is refused.
const WAIT_FOR_ACCOUNT_DELIVERIES: i64 = 4;

/// The durable consumers this service runs: name (also the key in `processed_messages`), subjects,
/// handler.
pub fn consumers(infra: &Infrastructure, running: &mut Running) {
    infra.consume(
        running,
        ConsumerConfig::new("accounting-service-consumer-events", ["ftgo.event.consumer.ConsumerCreated"]),
        ConsumerEvents,
    );
    infra.consume(
        running,
        ConsumerConfig::new("accounting-service-commands", ["ftgo.command.accounting.>"]),
        CardCommands,
    );
}

/// Opens an account for every new consumer.
pub struct ConsumerEvents;

impl MessageHandler for ConsumerEvents {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let event: consumer::ConsumerCreated = message.decode()?;
        let consumer = event
            .consumer
            .ok_or_else(|| HandlerError::Rejected(anyhow::anyhow!("ConsumerCreated without a consumer")))?;
        let id: ConsumerId = consumer.consumer_id.parse()?;
        if store::open_account(tx, &Account::open(id)).await? {
            tracing::info!(consumer_id = %id, "account opened");
        }
        Ok(())
    }
}

pub struct CardCommands;

/// The commands, one variant per message type.
enum Command {
    AuthorizeCard(api::AuthorizeCard),
    ReverseAuthorization(api::ReverseAuthorization),
    ReviseAuthorization(api::ReviseAuthorization),
}

static COMMANDS: LazyLock<Table<Command>> = LazyLock::new(|| {
    Table::new().on(Command::AuthorizeCard).on(Command::ReverseAuthorization).on(Command::ReviseAuthorization)
});

impl MessageHandler for CardCommands {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let total = |order_total| {
            Money::try_from(order_total).map_err(|e| HandlerError::Rejected(anyhow::anyhow!("order total {e}")))
        };
        let (outcome, order_id) = match COMMANDS.decode(message)? {
            Command::AuthorizeCard(c) => {
                let total = total(c.order_total)?;
                (authorize(tx, message, &c.consumer_id, &c.order_id, total).await?, c.order_id)
            }
            Command::ReverseAuthorization(c) => (reverse(tx, &c.order_id).await?, c.order_id),
            Command::ReviseAuthorization(c) => {
                let total = total(c.order_total)?;
                (revise(tx, &c.order_id, total).await?, c.order_id)
            }
        };
        let done = outcome.map(|()| api::CardAuthorized { order_id: order_id.clone() });
        let refusal = |reason: &str| api::CardAuthorizationFailed { order_id, reason: reason.to_owned() };
        outbox::enqueue(tx, &saga::answer(message, done, refusal)?).await?;
        Ok(())
    }
}

async fn authorize(
    tx: &mut PgConnection,
    message: &IncomingMessage,
    consumer_id: &str,
    order_id: &str,
    total: Money,
) -> Result<Outcome<()>, HandlerError> {
    let refuse = |reason: String| Ok(Err(reason));
    let (id, order_id) = match (consumer_id.parse::<ConsumerId>(), order_id.parse::<OrderId>()) {
        (Ok(id), Ok(order_id)) => (id, order_id),
        (Err(e), _) | (_, Err(e)) => return refuse(e.to_string()),
    };
    let Some(mut account) = store::lock_account(tx, id).await? else {
        // The account is opened from an event that may still be on its way.
        if message.delivery < WAIT_FOR_ACCOUNT_DELIVERIES {
            return Err(HandlerError::Transient(anyhow::anyhow!("consumer {id} has no account yet")));
        }
        return refuse(format!("consumer {id} has no account"));
    };
    let existing = store::find_authorization(tx, order_id).await?;
    match account.authorize(existing.as_ref(), order_id, total) {
        Ok(authorization) => {
            store::save_account(tx, &account).await?;
            store::save_authorization(tx, &authorization).await?;
            Ok(Ok(()))
        }
        Err(refusal) => refuse(refusal.to_string()),
    }
}

async fn reverse(tx: &mut PgConnection, order_id: &str) -> Result<Outcome<()>, HandlerError> {
    let order_id: OrderId = match order_id.parse() {
        Ok(id) => id,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let Some(authorization) = store::find_authorization(tx, order_id).await? else {
        // Nothing was reserved (the authorization was refused, or never asked for): done.
        return Ok(Ok(()));
    };
    let Some(mut account) = store::lock_account(tx, authorization.consumer_id).await? else {
        return Ok(Ok(()));
    };
    if let Some(released) = account.release(Some(&authorization)) {
        store::save_account(tx, &account).await?;
        store::save_authorization(tx, &released).await?;
    }
    Ok(Ok(()))
}

async fn revise(tx: &mut PgConnection, order_id: &str, total: Money) -> Result<Outcome<()>, HandlerError> {
    let order_id: OrderId = match order_id.parse() {
        Ok(id) => id,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let Some(authorization) = store::find_authorization(tx, order_id).await? else {
        return Ok(Err(format!("order {order_id} has no authorization to revise")));
    };
    let Some(mut account) = store::lock_account(tx, authorization.consumer_id).await? else {
        return Ok(Err(format!("consumer {} has no account", authorization.consumer_id)));
    };
    match account.revise(&authorization, total) {
        Ok(revised) => {
            store::save_account(tx, &account).await?;
            store::save_authorization(tx, &revised).await?;
            Ok(Ok(()))
        }
        Err(refusal) => Ok(Err(refusal.to_string())),
    }
}
