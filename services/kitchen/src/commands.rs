//! The saga commands the Kitchen Service takes part in (subjects `ftgo.command.kitchen.>`).
//!
//! A refusal (unknown restaurant, a ticket already PREPARING, ...) is a reply the saga acts on,
//! never a dead letter: only a message that cannot be understood at all is dead-lettered.

use ftgo_platform::messaging::{
    OutgoingMessage,
    inbox::{HandlerError, IncomingMessage, MessageHandler},
    outbox,
    saga::{self, reply_to},
};
use ftgo_proto::kitchen::v1 as api;
use prost::Name;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::ticket::{Ticket, TicketError, TicketLineItem},
    store,
};

pub const SUBJECTS: &str = "ftgo.command.kitchen.>";
/// The most of one menu item a ticket can hold.
pub const MAX_QUANTITY: i32 = 100;

pub struct KitchenCommands;

/// How a command ended, as the saga hears it.
enum Outcome {
    Created(Uuid),
    Succeeded(Uuid),
    Refused(String),
}

impl From<TicketError> for Outcome {
    fn from(e: TicketError) -> Self {
        Outcome::Refused(e.to_string())
    }
}

impl MessageHandler for KitchenCommands {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let t = message.message_type.as_str();
        let outcome = if t == api::CreateTicket::full_name() {
            create_ticket(tx, message.decode()?).await?
        } else if t == api::ConfirmCreateTicket::full_name() {
            let command: api::ConfirmCreateTicket = message.decode()?;
            by_ticket(tx, &command.ticket_id, Ticket::confirm_create).await?
        } else if t == api::CancelCreateTicket::full_name() {
            let command: api::CancelCreateTicket = message.decode()?;
            by_ticket(tx, &command.ticket_id, Ticket::cancel_create).await?
        } else if t == api::BeginCancelTicket::full_name() {
            let command: api::BeginCancelTicket = message.decode()?;
            by_order(tx, &command.order_id, Ticket::begin_cancel).await?
        } else if t == api::ConfirmCancelTicket::full_name() {
            let command: api::ConfirmCancelTicket = message.decode()?;
            by_order(tx, &command.order_id, Ticket::confirm_cancel).await?
        } else if t == api::UndoBeginCancelTicket::full_name() {
            let command: api::UndoBeginCancelTicket = message.decode()?;
            by_order(tx, &command.order_id, Ticket::undo_begin_cancel).await?
        } else if t == api::BeginReviseTicket::full_name() {
            let command: api::BeginReviseTicket = message.decode()?;
            by_order(tx, &command.order_id, Ticket::begin_revise).await?
        } else if t == api::ConfirmReviseTicket::full_name() {
            let command: api::ConfirmReviseTicket = message.decode()?;
            match line_items(command.revised_line_items) {
                Ok(items) => by_order(tx, &command.order_id, |ticket| ticket.confirm_revise(items)).await?,
                Err(reason) => Outcome::Refused(reason),
            }
        } else if t == api::UndoBeginReviseTicket::full_name() {
            let command: api::UndoBeginReviseTicket = message.decode()?;
            by_order(tx, &command.order_id, Ticket::undo_begin_revise).await?
        } else {
            return Err(HandlerError::Rejected(anyhow::anyhow!("the Kitchen Service has no command {t}")));
        };
        outbox::enqueue(tx, &reply(message, outcome)?).await?;
        Ok(())
    }
}

fn reply(command: &IncomingMessage, outcome: Outcome) -> Result<OutgoingMessage, HandlerError> {
    match outcome {
        Outcome::Created(id) => reply_to(command, &api::TicketCreated { ticket_id: id.to_string() }),
        Outcome::Succeeded(id) => reply_to(command, &api::TicketCommandSucceeded { ticket_id: id.to_string() }),
        Outcome::Refused(reason) => {
            tracing::info!(command = %command.message_type, %reason, "kitchen refused");
            saga::refuse(command, &api::TicketCommandRefused { reason: reason.clone() }, &reason)
        }
    }
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
async fn create_ticket(tx: &mut PgConnection, command: api::CreateTicket) -> Result<Outcome, HandlerError> {
    if let Some(existing) = store::lock_ticket_by_order(tx, &command.order_id).await? {
        return Ok(Outcome::Created(existing.id));
    }
    let Ok(restaurant_id) = command.restaurant_id.parse::<Uuid>() else {
        return Ok(Outcome::Refused(format!("restaurant {:?} does not exist", command.restaurant_id)));
    };
    let Some(restaurant) = store::find_restaurant(tx, restaurant_id).await? else {
        return Ok(Outcome::Refused(format!("restaurant {restaurant_id} does not exist")));
    };
    let items = match line_items(command.line_items) {
        Ok(items) => items,
        Err(reason) => return Ok(Outcome::Refused(reason)),
    };
    if let Some(unknown) = items.iter().find(|i| restaurant.menu_item(&i.menu_item_id).is_none()) {
        return Ok(Outcome::Refused(format!(
            "restaurant {} has no menu item {:?}",
            restaurant.name, unknown.menu_item_id
        )));
    }
    let ticket = Ticket::create(&command.order_id, restaurant.id, items);
    store::insert_ticket(tx, &ticket).await?;
    Ok(Outcome::Created(ticket.id))
}

async fn by_ticket(
    tx: &mut PgConnection,
    ticket_id: &str,
    change: impl FnOnce(&mut Ticket) -> Result<(), TicketError>,
) -> Result<Outcome, HandlerError> {
    let ticket = match ticket_id.parse::<Uuid>() {
        Ok(id) => store::lock_ticket(tx, id).await?,
        Err(_) => None,
    };
    apply(tx, ticket, || format!("ticket {ticket_id:?} does not exist"), change).await
}

async fn by_order(
    tx: &mut PgConnection,
    order_id: &str,
    change: impl FnOnce(&mut Ticket) -> Result<(), TicketError>,
) -> Result<Outcome, HandlerError> {
    let ticket = store::lock_ticket_by_order(tx, order_id).await?;
    apply(tx, ticket, || format!("order {order_id:?} has no ticket"), change).await
}

async fn apply(
    tx: &mut PgConnection,
    ticket: Option<Ticket>,
    missing: impl FnOnce() -> String,
    change: impl FnOnce(&mut Ticket) -> Result<(), TicketError>,
) -> Result<Outcome, HandlerError> {
    let Some(mut ticket) = ticket else {
        return Ok(Outcome::Refused(missing()));
    };
    if let Err(e) = change(&mut ticket) {
        return Ok(e.into());
    }
    store::save_ticket(tx, &ticket).await?;
    Ok(Outcome::Succeeded(ticket.id))
}
