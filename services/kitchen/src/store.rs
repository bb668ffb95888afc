//! Restaurants, menus and tickets in the `kitchen` database.

use chrono::{DateTime, Utc};
use ftgo_platform::{
    ids::{OrderId, RestaurantId, TicketId},
    money::Money,
};
use sqlx::{PgConnection, types::Json};

use crate::domain::{
    restaurant::{Address, MenuItem, Restaurant},
    ticket::{Ticket, TicketLineItem, TicketState},
};

fn decode_error(what: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Decode(what.into().into())
}

pub async fn insert_restaurant(tx: &mut PgConnection, restaurant: &Restaurant) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO restaurants (id, name, address) VALUES ($1, $2, $3)")
        .bind(restaurant.id)
        .bind(&restaurant.name)
        .bind(Json(&restaurant.address))
        .execute(&mut *tx)
        .await?;
    for (position, item) in restaurant.menu.iter().enumerate() {
        sqlx::query(
            "INSERT INTO menu_items (restaurant_id, id, name, price_minor, position) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(restaurant.id)
        .bind(&item.id)
        .bind(&item.name)
        .bind(item.price.minor_units())
        .bind(position as i32)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

pub async fn find_restaurant(conn: &mut PgConnection, id: RestaurantId) -> sqlx::Result<Option<Restaurant>> {
    // A stored address that is not an address is a decoding error, never empty fields.
    let Some((id, name, Json(address))): Option<(RestaurantId, String, Json<Address>)> =
        sqlx::query_as("SELECT id, name, address FROM restaurants WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, name, price_minor FROM menu_items WHERE restaurant_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let menu = rows
        .into_iter()
        .map(|(id, name, price)| {
            Ok(MenuItem { id, name, price: Money::from_minor_units(price).map_err(|e| decode_error(e.to_string()))? })
        })
        .collect::<sqlx::Result<_>>()?;
    Ok(Some(Restaurant { id, name, address, menu }))
}

/// A row as stored: line items that are not line items, or an order id that is not one, are a
/// decoding error, never blanks. (Order ids are kept as text: the column predates typed ids.)
type TicketRow =
    (TicketId, String, RestaurantId, String, Option<String>, Json<Vec<TicketLineItem>>, Option<DateTime<Utc>>);

/// `SELECT <every ticket column> FROM tickets <tail>`, as one static string.
macro_rules! select_tickets {
    ($tail:literal) => {
        concat!("SELECT id, order_id, restaurant_id, state, previous_state, line_items, ready_by FROM tickets ", $tail)
    };
}

fn ticket(row: TicketRow) -> sqlx::Result<Ticket> {
    let (id, order_id, restaurant_id, state, previous_state, Json(line_items), ready_by) = row;
    let parse = |s: &str| TicketState::parse(s).ok_or_else(|| decode_error(format!("unknown ticket state {s}")));
    Ok(Ticket {
        id,
        order_id: order_id.parse()?,
        restaurant_id,
        state: parse(&state)?,
        previous_state: previous_state.as_deref().map(parse).transpose()?,
        line_items,
        ready_by,
    })
}

fn line_items_json(items: &[TicketLineItem]) -> Json<&[TicketLineItem]> {
    Json(items)
}

/// Stores a ticket, new or changed (its order and restaurant never change).
pub async fn save_ticket(tx: &mut PgConnection, ticket: &Ticket) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tickets (id, order_id, restaurant_id, state, previous_state, line_items, ready_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE
         SET state = EXCLUDED.state, previous_state = EXCLUDED.previous_state, line_items = EXCLUDED.line_items,
             ready_by = EXCLUDED.ready_by, updated_at = now()",
    )
    .bind(ticket.id)
    .bind(ticket.order_id.to_string())
    .bind(ticket.restaurant_id)
    .bind(ticket.state.as_str())
    .bind(ticket.previous_state.map(TicketState::as_str))
    .bind(line_items_json(&ticket.line_items))
    .bind(ticket.ready_by)
    .execute(tx)
    .await?;
    Ok(())
}

/// Reads a ticket by id and locks it until the transaction ends, so two transitions of one ticket
/// never interleave.
pub async fn lock_ticket(tx: &mut PgConnection, id: TicketId) -> sqlx::Result<Option<Ticket>> {
    let row: Option<TicketRow> =
        sqlx::query_as(select_tickets!("WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(tx).await?;
    row.map(ticket).transpose()
}

pub async fn lock_ticket_by_order(tx: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Option<Ticket>> {
    let row: Option<TicketRow> = sqlx::query_as(select_tickets!("WHERE order_id = $1 FOR UPDATE"))
        .bind(order_id.to_string())
        .fetch_optional(tx)
        .await?;
    row.map(ticket).transpose()
}

pub async fn find_ticket(conn: &mut PgConnection, id: TicketId) -> sqlx::Result<Option<Ticket>> {
    let row: Option<TicketRow> = sqlx::query_as(select_tickets!("WHERE id = $1")).bind(id).fetch_optional(conn).await?;
    row.map(ticket).transpose()
}

pub async fn find_ticket_by_order(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Option<Ticket>> {
    let row: Option<TicketRow> =
        sqlx::query_as(select_tickets!("WHERE order_id = $1")).bind(order_id.to_string()).fetch_optional(conn).await?;
    row.map(ticket).transpose()
}
