//! Orders and the menu replica in the `order` database.

use chrono::{DateTime, Utc};
use ftgo_platform::{
    ids::{OrderId, RestaurantId},
    money::Money,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, types::Json};

use crate::domain::order::{Address, Menu, MenuItem, Order, OrderLineItem, OrderState, Pricing};

/// How line items and pricings are stored (JSONB).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredLineItem {
    menu_item_id: String,
    name: String,
    price_minor: i64,
    quantity: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredPricing {
    line_items: Vec<StoredLineItem>,
    total_minor: i64,
}

fn money(minor: i64) -> sqlx::Result<Money> {
    Money::from_minor_units(minor).map_err(|e| sqlx::Error::Decode(e.into()))
}

fn stored_items(items: &[OrderLineItem]) -> Vec<StoredLineItem> {
    items
        .iter()
        .map(|i| StoredLineItem {
            menu_item_id: i.menu_item_id.clone(),
            name: i.name.clone(),
            price_minor: i.price.minor_units(),
            quantity: i.quantity,
        })
        .collect()
}

fn items(stored: Vec<StoredLineItem>) -> sqlx::Result<Vec<OrderLineItem>> {
    stored
        .into_iter()
        .map(|i| {
            Ok(OrderLineItem {
                menu_item_id: i.menu_item_id,
                name: i.name,
                price: money(i.price_minor)?,
                quantity: i.quantity,
            })
        })
        .collect()
}

fn stored_pricing(p: &Pricing) -> StoredPricing {
    StoredPricing { line_items: stored_items(&p.line_items), total_minor: p.total.minor_units() }
}

/// Stores (or replaces) the replica of a restaurant's menu.
pub async fn save_menu(tx: &mut PgConnection, menu: &Menu) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO restaurants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = $2")
        .bind(menu.restaurant_id)
        .bind(&menu.restaurant_name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM menu_items WHERE restaurant_id = $1").bind(menu.restaurant_id).execute(&mut *tx).await?;
    for item in &menu.items {
        sqlx::query("INSERT INTO menu_items (restaurant_id, id, name, price_minor) VALUES ($1, $2, $3, $4)")
            .bind(menu.restaurant_id)
            .bind(&item.id)
            .bind(&item.name)
            .bind(item.price.minor_units())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

pub async fn find_menu(conn: &mut PgConnection, restaurant_id: RestaurantId) -> sqlx::Result<Option<Menu>> {
    let Some(name): Option<String> = sqlx::query_scalar("SELECT name FROM restaurants WHERE id = $1")
        .bind(restaurant_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, name, price_minor FROM menu_items WHERE restaurant_id = $1 ORDER BY id")
            .bind(restaurant_id)
            .fetch_all(conn)
            .await?;
    let items = rows
        .into_iter()
        .map(|(id, name, price)| Ok(MenuItem { id, name, price: money(price)? }))
        .collect::<sqlx::Result<_>>()?;
    Ok(Some(Menu { restaurant_id, restaurant_name: name, items }))
}

/// An order as stored. (Consumer ids are kept as text: the column predates typed ids.)
type OrderRow = (
    OrderId,
    String,
    RestaurantId,
    String,
    Json<Vec<StoredLineItem>>,
    i64,
    Json<Address>,
    Option<String>,
    Option<Json<StoredPricing>>,
    DateTime<Utc>,
);

macro_rules! select_orders {
    ($tail:literal) => {
        concat!(
            "SELECT id, consumer_id, restaurant_id, state, line_items, order_total_minor, delivery_address, ",
            "rejection_reason, pending_revision, created_at FROM orders ",
            $tail
        )
    };
}

fn order(row: OrderRow) -> sqlx::Result<Order> {
    let (
        id,
        consumer_id,
        restaurant_id,
        state,
        Json(line_items),
        total,
        Json(delivery_address),
        rejection_reason,
        revision,
        created_at,
    ) = row;
    Ok(Order {
        id,
        consumer_id: consumer_id.parse()?,
        restaurant_id,
        state: OrderState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown order state {state}").into()))?,
        pricing: Pricing { line_items: items(line_items)?, total: money(total)? },
        delivery_address,
        rejection_reason,
        pending_revision: revision
            .map(|Json(p)| {
                Ok::<_, sqlx::Error>(Pricing { line_items: items(p.line_items)?, total: money(p.total_minor)? })
            })
            .transpose()?,
        created_at,
    })
}

pub async fn insert_order(tx: &mut PgConnection, o: &Order) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO orders (id, consumer_id, restaurant_id, state, line_items, order_total_minor, delivery_address, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(o.id)
    .bind(o.consumer_id.to_string())
    .bind(o.restaurant_id)
    .bind(o.state.as_str())
    .bind(Json(stored_items(&o.pricing.line_items)))
    .bind(o.pricing.total.minor_units())
    .bind(Json(&o.delivery_address))
    .bind(o.created_at)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn save_order(tx: &mut PgConnection, o: &Order) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE orders SET state = $2, line_items = $3, order_total_minor = $4, rejection_reason = $5,
         pending_revision = $6, updated_at = now() WHERE id = $1",
    )
    .bind(o.id)
    .bind(o.state.as_str())
    .bind(Json(stored_items(&o.pricing.line_items)))
    .bind(o.pricing.total.minor_units())
    .bind(&o.rejection_reason)
    .bind(o.pending_revision.as_ref().map(|p| Json(stored_pricing(p))))
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn find_order(conn: &mut PgConnection, id: OrderId) -> sqlx::Result<Option<Order>> {
    let row: Option<OrderRow> = sqlx::query_as(select_orders!("WHERE id = $1")).bind(id).fetch_optional(conn).await?;
    row.map(order).transpose()
}

/// Reads an order and locks it until the transaction ends.
pub async fn lock_order(tx: &mut PgConnection, id: OrderId) -> sqlx::Result<Option<Order>> {
    let row: Option<OrderRow> =
        sqlx::query_as(select_orders!("WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(tx).await?;
    row.map(order).transpose()
}
