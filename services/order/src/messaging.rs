//! What the Order Service hears: `RestaurantCreated` (the menu replica) and the saga's order
//! commands (`ftgo.command.order.>`).

use std::sync::{Arc, LazyLock};

use ftgo_platform::ids::{OrderId, RestaurantId};
use ftgo_platform::{
    messaging::{
        dispatch::Table,
        inbox::{ConsumerConfig, HandlerError, IncomingMessage, MessageHandler},
        outbox,
        saga::{self, Outcome},
    },
    money::Money,
};
use ftgo_platform::{runtime::Running, service::Infrastructure};
use ftgo_proto::{kitchen::v1 as kitchen, order::v1 as api};
use sqlx::PgConnection;

use crate::{
    domain::order::{Menu, MenuItem, Order, OrderError},
    store,
    watch::OrderWatch,
};

fn refuse(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Rejected(anyhow::anyhow!("{e}"))
}

/// The durable consumers this service runs: name (also the key in `processed_messages`), subjects,
/// handler. `watch` is woken after each order command.
pub fn consumers(infra: &Infrastructure, running: &mut Running, watch: Arc<OrderWatch>) {
    let restaurants =
        ConsumerConfig::new("order-service-restaurant-events", ["ftgo.event.restaurant.RestaurantCreated"]);
    infra.consume(running, restaurants, RestaurantEvents);
    infra.consume(
        running,
        ConsumerConfig::new("order-service-commands", ["ftgo.command.order.>"]),
        OrderCommands { watch },
    );
}

/// Keeps the menu replica: every restaurant's items and prices.
pub struct RestaurantEvents;

impl MessageHandler for RestaurantEvents {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let event: kitchen::RestaurantCreated = message.decode()?;
        let restaurant = event.restaurant.ok_or_else(|| refuse("RestaurantCreated without a restaurant"))?;
        let restaurant_id: RestaurantId = restaurant.restaurant_id.parse().map_err(refuse)?;
        let items = restaurant
            .menu_items
            .into_iter()
            .map(|i| Ok(MenuItem { id: i.id, name: i.name, price: Money::try_from(i.price).map_err(refuse)? }))
            .collect::<Result<_, HandlerError>>()?;
        store::save_menu(tx, &Menu { restaurant_id, restaurant_name: restaurant.name, items }).await?;
        tracing::info!(%restaurant_id, "menu replicated");
        Ok(())
    }
}

/// The saga's commands to orders. After each commit it wakes the clients waiting for that order.
pub struct OrderCommands {
    pub watch: Arc<OrderWatch>,
}

/// The commands, one variant per message type.
#[expect(clippy::enum_variant_names, reason = "each variant is named after the message it carries")]
enum Command {
    ApproveOrder(api::ApproveOrder),
    RejectOrder(api::RejectOrder),
    ConfirmCancelOrder(api::ConfirmCancelOrder),
    UndoCancelOrder(api::UndoCancelOrder),
    ConfirmReviseOrder(api::ConfirmReviseOrder),
    UndoReviseOrder(api::UndoReviseOrder),
}

static COMMANDS: LazyLock<Table<Command>> = LazyLock::new(|| {
    Table::new()
        .on(Command::ApproveOrder)
        .on(Command::RejectOrder)
        .on(Command::ConfirmCancelOrder)
        .on(Command::UndoCancelOrder)
        .on(Command::ConfirmReviseOrder)
        .on(Command::UndoReviseOrder)
});

/// What every order command has in common: `string order_id = 1` (a test checks each of them),
/// so any of them decodes as this.
#[derive(Clone, PartialEq, prost::Message)]
struct AnyOrderCommand {
    #[prost(string, tag = "1")]
    order_id: String,
}

impl MessageHandler for OrderCommands {
    async fn committed(&self, message: &IncomingMessage) {
        let order =
            prost::Message::decode(message.payload.clone()).ok().and_then(|c: AnyOrderCommand| c.order_id.parse().ok());
        if let Some(order) = order {
            self.watch.announce(order).await;
        }
    }

    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let (outcome, order_id) = match COMMANDS.decode(message)? {
            Command::ApproveOrder(c) => (change(tx, &c.order_id, Order::note_approved).await?, c.order_id),
            Command::RejectOrder(c) => (change(tx, &c.order_id, |o| o.note_rejected(&c.reason)).await?, c.order_id),
            Command::ConfirmCancelOrder(c) => (change(tx, &c.order_id, Order::note_cancelled).await?, c.order_id),
            Command::UndoCancelOrder(c) => (change(tx, &c.order_id, Order::undo_cancel).await?, c.order_id),
            Command::ConfirmReviseOrder(c) => (change(tx, &c.order_id, Order::confirm_revision).await?, c.order_id),
            Command::UndoReviseOrder(c) => (change(tx, &c.order_id, Order::undo_revision).await?, c.order_id),
        };
        let done = outcome.map(|()| api::OrderCommandSucceeded { order_id: order_id.clone() });
        let reply =
            saga::answer(message, done, |reason| api::OrderCommandRefused { order_id, reason: reason.to_owned() })?;
        outbox::enqueue(tx, &reply).await?;
        Ok(())
    }
}

/// Applies a saga step to the order; an illegal transition or an unknown order is a refusal the
/// saga hears about.
async fn change(
    tx: &mut PgConnection,
    order_id: &str,
    step: impl FnOnce(&mut Order) -> Result<(), OrderError>,
) -> Result<Outcome<()>, HandlerError> {
    let order = match order_id.parse::<OrderId>() {
        Ok(id) => store::lock_order(tx, id).await?,
        Err(_) => None,
    };
    let Some(mut order) = order else {
        return Ok(Err(format!("order {order_id:?} does not exist")));
    };
    if let Err(e) = step(&mut order) {
        return Ok(Err(e.to_string()));
    }
    store::save_order(tx, &order).await?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_order_command_names_its_order_in_field_one() {
        let id = uuid::Uuid::new_v4().to_string();
        let order_id = id.clone();
        let encoded = [
            api::ApproveOrder { order_id: order_id.clone() }.encode_to_vec(),
            api::RejectOrder { order_id: order_id.clone(), reason: "no credit".into() }.encode_to_vec(),
            api::ConfirmCancelOrder { order_id: order_id.clone() }.encode_to_vec(),
            api::UndoCancelOrder { order_id: order_id.clone(), ..Default::default() }.encode_to_vec(),
            api::ConfirmReviseOrder { order_id: order_id.clone() }.encode_to_vec(),
            api::UndoReviseOrder { order_id, ..Default::default() }.encode_to_vec(),
        ];
        for bytes in encoded {
            assert_eq!(AnyOrderCommand::decode(bytes.as_slice()).unwrap().order_id, id);
        }
    }
}
