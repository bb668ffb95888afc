//! JSON shapes several resources share, and their translation to and from protobuf.
//!
//! Request shapes refuse unknown fields: a misspelt `"quantitty"` is a 400 that names it, not an
//! order for a default quantity.

use chrono::{DateTime, Utc};
use ftgo_platform::money::Money;
use ftgo_proto::common::v1 as common;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// A decimal amount with two places, such as `"12.34"`.
pub fn parse_money(field: &str, value: &str) -> Result<common::Money, ApiError> {
    value
        .parse::<Money>()
        .map(Into::into)
        .map_err(|e| ApiError::invalid(format!("{field} {e}")).with_detail(serde_json::json!({ "field": field })))
}

/// Writes a service's amount as `"12.34"`; a missing amount is zero.
pub fn money(value: Option<common::Money>) -> String {
    let minor_units = value.map_or(0, |m| m.minor_units);
    Money::from_minor_units(minor_units).map_or_else(|_| format!("{minor_units} (minor units)"), |m| m.to_string())
}

/// The name of a protobuf enum value (`APPROVED`), or the number when this gateway does not know it.
pub fn enum_name<E: TryFrom<i32>>(value: i32, name: fn(&E) -> &'static str) -> String {
    E::try_from(value).map_or_else(|_| value.to_string(), |e| name(&e).to_owned())
}

pub fn timestamp(value: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    value.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

pub fn to_timestamp(value: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: value.timestamp(), nanos: value.timestamp_subsec_nanos() as i32 }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonName {
    pub first_name: String,
    pub last_name: String,
}

impl From<PersonName> for common::PersonName {
    fn from(n: PersonName) -> Self {
        Self { first_name: n.first_name, last_name: n.last_name }
    }
}

impl From<common::PersonName> for PersonName {
    fn from(n: common::PersonName) -> Self {
        Self { first_name: n.first_name, last_name: n.last_name }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Address {
    pub street1: String,
    #[serde(default)]
    pub street2: String,
    pub city: String,
    pub state: String,
    pub zip: String,
}

impl From<Address> for common::Address {
    fn from(a: Address) -> Self {
        Self { street1: a.street1, street2: a.street2, city: a.city, state: a.state, zip: a.zip }
    }
}

impl From<common::Address> for Address {
    fn from(a: common::Address) -> Self {
        Self { street1: a.street1, street2: a.street2, city: a.city, state: a.state, zip: a.zip }
    }
}

/// One line of an order as a client asks for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineItemRequest {
    pub menu_item_id: String,
    /// From 1 to 100.
    pub quantity: i64,
}

impl From<LineItemRequest> for common::LineItemRequest {
    fn from(item: LineItemRequest) -> Self {
        // Any quantity beyond i32 is out of range either way; clamping lets the Order Service,
        // which owns the rule, word the error ("must be from 1 to 100").
        let quantity = item.quantity.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        Self { menu_item_id: item.menu_item_id, quantity }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MenuItem {
    /// The item's id, chosen by the restaurant (unique within its menu).
    pub id: String,
    pub name: String,
    /// A decimal amount with two places.
    #[schema(example = "12.34")]
    pub price: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Menu {
    pub menu_items: Vec<MenuItem>,
}

impl Menu {
    pub fn to_proto(self) -> Result<Vec<common::MenuItem>, ApiError> {
        self.menu_items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                Ok(common::MenuItem {
                    price: Some(parse_money(&format!("menu.menuItems[{i}].price"), &item.price)?),
                    id: item.id,
                    name: item.name,
                })
            })
            .collect()
    }

    pub fn from_proto(items: Vec<common::MenuItem>) -> Self {
        let menu_items =
            items.into_iter().map(|i| MenuItem { id: i.id, name: i.name, price: money(i.price) }).collect();
        Self { menu_items }
    }
}
