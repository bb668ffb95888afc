//! The saga commands the Kitchen Service takes part in (subjects `ftgo.command.kitchen.>`).
//!
//! A refusal (unknown restaurant, a ticket already PREPARING, ...) is a reply the saga acts on,
//! never a dead letter: only a message that cannot be understood at all is dead-lettered.

use std::sync::LazyLock;

use ftgo_platform::{
    ids::{OrderId, RestaurantId, TicketId},
    messaging::{
        dispatch::Table,
        inbox::{ConsumerConfig, HandlerError, IncomingMessage, MessageHandler},
        outbox,
        saga::{self, Outcome},
    },
};
use ftgo_platform::{runtime::Running, service::Infrastructure};
use ftgo_proto::kitchen::v1 as api;
use sqlx::PgConnection;

use crate::{
    domain::ticket::{Ticket, TicketError, TicketLineItem},
    store,
};

/// The most of one menu item a ticket can hold.
pub const MAX_QUANTITY: i32 = 100;

/// The durable consumers this service runs: name (also the key in `processed_messages`), subjects,
/// handler.
pub fn consumers(infra: &Infrastructure, running: &mut Running) {
    infra.consume(running, ConsumerConfig::new("kitchen-service", ["ftgo.command.kitchen.>"]), KitchenCommands);
}

pub struct KitchenCommands;

/// The commands, one variant per message type.
#[expect(clippy::enum_variant_names, reason = "each variant is named after the message it carries")]
enum Command {
    CreateTicket(api::CreateTicket),
    ConfirmCreateTicket(api::ConfirmCreateTicket),
    CancelCreateTicket(api::CancelCreateTicket),
    BeginCancelTicket(api::BeginCancelTicket),
    ConfirmCancelTicket(api::ConfirmCancelTicket),
    UndoBeginCancelTicket(api::UndoBeginCancelTicket),
    BeginReviseTicket(api::BeginReviseTicket),
    ConfirmReviseTicket(api::ConfirmReviseTicket),
    UndoBeginReviseTicket(api::UndoBeginReviseTicket),
}

static COMMANDS: LazyLock<Table<Command>> = LazyLock::new(|| {
    Table::new()
        .on(Command::CreateTicket)
        .on(Command::ConfirmCreateTicket)
        .on(Command::CancelCreateTicket)
        .on(Command::BeginCancelTicket)
        .on(Command::ConfirmCancelTicket)
        .on(Command::UndoBeginCancelTicket)
        .on(Command::BeginReviseTicket)
        .on(Command::ConfirmReviseTicket)
        .on(Command::UndoBeginReviseTicket)
});

impl MessageHandler for KitchenCommands {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let succeeded = |outcome: Outcome<TicketId>| {
            saga::answer(message, outcome.map(|id| api::TicketCommandSucceeded { ticket_id: id.to_string() }), refusal)
        };
        let reply = match COMMANDS.decode(message)? {
            Command::CreateTicket(c) => {
                let created = create_ticket(tx, c).await?.map(|id| api::TicketCreated { ticket_id: id.to_string() });
                saga::answer(message, created, refusal)?
            }
            Command::ConfirmCreateTicket(c) => succeeded(by_ticket(tx, &c.ticket_id, Ticket::confirm_create).await?)?,
            Command::CancelCreateTicket(c) => succeeded(by_ticket(tx, &c.ticket_id, Ticket::cancel_create).await?)?,
            Command::BeginCancelTicket(c) => succeeded(by_order(tx, &c.order_id, Ticket::begin_cancel).await?)?,
            Command::ConfirmCancelTicket(c) => succeeded(by_order(tx, &c.order_id, Ticket::confirm_cancel).await?)?,
            Command::UndoBeginCancelTicket(c) => {
                succeeded(by_order(tx, &c.order_id, Ticket::undo_begin_cancel).await?)?
            }
            Command::BeginReviseTicket(c) => succeeded(by_order(tx, &c.order_id, Ticket::begin_revise).await?)?,
            Command::ConfirmReviseTicket(c) => match line_items(c.revised_line_items) {
                Ok(items) => succeeded(by_order(tx, &c.order_id, |ticket| ticket.confirm_revise(items)).await?)?,
                Err(reason) => succeeded(Err(reason))?,
            },
            Command::UndoBeginReviseTicket(c) => {
                succeeded(by_order(tx, &c.order_id, Ticket::undo_begin_revise).await?)?
            }
        };
        outbox::enqueue(tx, &reply).await?;
        Ok(())
    }
}

fn refusal(reason: &str) -> api::TicketCommandRefused {
    api::TicketCommandRefused { reason: reason.to_owned() }
}

fn line_items(items: Vec<api::TicketLineItem>) -> Result<Vec<TicketLineItem>, String> {
    if items.is_empty() {
        return Err("a ticket needs at least one line item".to_owned());
    }
    items
        .into_iter()
        .map(|i| {
            if !(1..=MAX_QUANTITY).contains(&i.quantity) {
                return Err(format!("quantity of {:?} must be from 1 to {MAX_QUANTITY}", i.menu_item_id));
            }
            Ok(TicketLineItem { menu_item_id: i.menu_item_id, name: i.name, quantity: i.quantity as u32 })
        })
        .collect()
}

/// Create Order, step 3. Asked again for the same order, it answers with the ticket it made.
async fn create_ticket(tx: &mut PgConnection, command: api::CreateTicket) -> Result<Outcome<TicketId>, HandlerError> {
    let order_id: OrderId = match command.order_id.parse() {
        Ok(id) => id,
        Err(e) => return Ok(Err(format!("{e}"))),
    };
    if let Some(existing) = store::lock_ticket_by_order(tx, order_id).await? {
        return Ok(Ok(existing.id));
    }
    let Ok(restaurant_id) = command.restaurant_id.parse::<RestaurantId>() else {
        return Ok(Err(format!("restaurant {:?} does not exist", command.restaurant_id)));
    };
    let Some(restaurant) = store::find_restaurant(tx, restaurant_id).await? else {
        return Ok(Err(format!("restaurant {restaurant_id} does not exist")));
    };
    let items = match line_items(command.line_items) {
        Ok(items) => items,
        Err(reason) => return Ok(Err(reason)),
    };
    if let Some(unknown) = items.iter().find(|i| restaurant.menu_item(&i.menu_item_id).is_none()) {
        return Ok(Err(format!("restaurant {} has no menu item {:?}", restaurant.name, unknown.menu_item_id)));
    }
    let ticket = Ticket::create(order_id, restaurant.id, items);
    store::save_ticket(tx, &ticket).await?;
    Ok(Ok(ticket.id))
}

async fn by_ticket(
    tx: &mut PgConnection,
    ticket_id: &str,
    change: impl FnOnce(&mut Ticket) -> Result<(), TicketError>,
) -> Result<Outcome<TicketId>, HandlerError> {
    let ticket = match ticket_id.parse::<TicketId>() {
        Ok(id) => store::lock_ticket(tx, id).await?,
        Err(_) => None,
    };
    apply(tx, ticket, || format!("ticket {ticket_id:?} does not exist"), change).await
}

async fn by_order(
    tx: &mut PgConnection,
    order_id: &str,
    change: impl FnOnce(&mut Ticket) -> Result<(), TicketError>,
) -> Result<Outcome<TicketId>, HandlerError> {
    let ticket = match order_id.parse::<OrderId>() {
        Ok(id) => store::lock_ticket_by_order(tx, id).await?,
        Err(_) => None,
    };
    apply(tx, ticket, || format!("order {order_id:?} has no ticket"), change).await
}

async fn apply(
    tx: &mut PgConnection,
    ticket: Option<Ticket>,
    missing: impl FnOnce() -> String,
    change: impl FnOnce(&mut Ticket) -> Result<(), TicketError>,
) -> Result<Outcome<TicketId>, HandlerError> {
    let Some(mut ticket) = ticket else {
        return Ok(Err(missing()));
    };
    if let Err(e) = change(&mut ticket) {
        return Ok(Err(e.to_string()));
    }
    store::save_ticket(tx, &ticket).await?;
    Ok(Ok(ticket.id))
}
