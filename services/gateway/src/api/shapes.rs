//! JSON shapes several resources share, and their translation to and from protobuf.
//!
//! Request shapes refuse unknown fields: a misspelt `"quantitty"` is a 400 that names it, not an
//! order for a default quantity.
//!
//! Every rule a request's value must follow is stated in the OpenAPI document (`minLength`,
//! `pattern`, `format: uuid`, ...) and enforced as stated: the patterns below describe exactly what
//! the checks next to them accept, so a client (or a fuzzer) that follows the document is never
//! refused for its shape, and one that breaks it always is.

use chrono::{DateTime, Utc};
use ftgo_platform::money::Money;
use ftgo_proto::common::v1 as common;
use serde::{Deserialize, Serialize};
use utoipa::{
    ToSchema,
    openapi::{Object, ObjectBuilder, SchemaFormat, Type, schema::SchemaType},
};

use crate::error::ApiError;

/// The money strings [`parse_money`] accepts (`Money::from_str`): digits, optionally a point and
/// one or two more; at most 12 digits before the point; at most 1000000000.00.
pub const MONEY_PATTERN: &str = r"^(0{0,3}[0-9]{1,9}(\.[0-9]{1,2})?|0{0,2}1000000000(\.0{1,2})?)$";

/// [`MONEY_PATTERN`] without zero: a menu item's price must be more than zero.
pub const POSITIVE_MONEY_PATTERN: &str = concat!(
    r"^((0{0,11}[1-9]|0{0,10}[1-9][0-9]{1}|0{0,9}[1-9][0-9]{2}|0{0,8}[1-9][0-9]{3}|0{0,7}[1-9][0-9]{4}",
    r"|0{0,6}[1-9][0-9]{5}|0{0,5}[1-9][0-9]{6}|0{0,4}[1-9][0-9]{7}|0{0,3}[1-9][0-9]{8})(\.[0-9]{1,2})?",
    r"|0{1,12}\.([1-9][0-9]?|0[1-9])|0{0,2}1000000000(\.0{1,2})?)$"
);

/// Text that must not be blank ([`check_text`] with `required`): whitespace around it (what
/// `str::trim` removes: Unicode `White_Space`) is allowed and trimmed away by the services; what
/// is left is not empty and has no control characters.
pub const REQUIRED_TEXT_PATTERN: &str = concat!(
    r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*",
    r"[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
);

/// Text that may be empty ([`check_text`] without `required`): no control characters once trimmed.
pub const OPTIONAL_TEXT_PATTERN: &str = concat!(
    r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x1f\x7f-\x9f]*",
    r"[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
);

/// The schema of text [`check_text`] checks.
fn text_schema(max: usize, required: bool) -> Object {
    let pattern = if required { REQUIRED_TEXT_PATTERN } else { OPTIONAL_TEXT_PATTERN };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(required.then_some(1))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .build()
}

/// Required text of at most 20 characters (`zip`).
pub fn text_20() -> Object {
    text_schema(20, true)
}

/// Required text of at most 100 characters (names of people, cities, states, menu item ids).
pub fn text_100() -> Object {
    text_schema(100, true)
}

/// Required text of at most 200 characters (streets, names of restaurants and dishes).
pub fn text_200() -> Object {
    text_schema(200, true)
}

/// Text of at most 200 characters that may be empty (`street2`).
pub fn optional_text_200() -> Object {
    text_schema(200, false)
}

/// A UUID in its hyphenated form, as [`check_uuid`] wants it.
pub fn uuid_schema() -> Object {
    ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::Custom("uuid".to_owned()))).build()
}

/// An id in a path: a UUID (an id that is not one names nothing: 404).
pub struct Id;

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        uuid_schema().into()
    }
}

impl ToSchema for Id {}

/// A menu item's price: [`POSITIVE_MONEY_PATTERN`].
pub fn price_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(POSITIVE_MONEY_PATTERN))
        .description(Some("A decimal amount with at most two places, more than zero: `\"12.34\"`."))
        .examples([serde_json::json!("12.34")])
        .build()
}

/// A credit limit: [`MONEY_PATTERN`], or `null` (left as it is).
pub fn optional_money_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(MONEY_PATTERN))
        .description(Some("A decimal amount with at most two places: `\"750.00\"`; left as it is when absent."))
        .examples([serde_json::json!("750.00")])
        .build()
}

fn invalid_field(field: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("{field} {problem}")).with_detail(serde_json::json!({ "field": field }))
}

/// Text a client sent, checked as the document states it ([`REQUIRED_TEXT_PATTERN`] or
/// [`OPTIONAL_TEXT_PATTERN`], and `maxLength`): at most `max` characters as sent (the services
/// count them after trimming, so nothing the gateway lets through is too long for them), no
/// control characters once trimmed, and not blank when `required`.
pub fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(invalid_field(field, format_args!("is longer than {max} characters")));
    }
    let trimmed = value.trim();
    if required && trimmed.is_empty() {
        return Err(invalid_field(field, "is required"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid_field(field, "contains control characters"));
    }
    Ok(())
}

/// An id in a body: a UUID in its hyphenated form (`format: uuid`), as the services create them.
pub fn check_uuid(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() == 36 && value.parse::<uuid::Uuid>().is_ok() {
        Ok(())
    } else {
        Err(invalid_field(field, format_args!("{value:?} is not a UUID")))
    }
}

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

/// A person's name: each part from 1 to 100 characters, not blank, without control characters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonName {
    #[schema(schema_with = text_100)]
    pub first_name: String,
    #[schema(schema_with = text_100)]
    pub last_name: String,
}

impl PersonName {
    /// The checks of the document (the Consumer Service applies its own as well).
    pub fn check(&self, field: &str) -> Result<(), ApiError> {
        check_text(&format!("{field}.firstName"), &self.first_name, 100, true)?;
        check_text(&format!("{field}.lastName"), &self.last_name, 100, true)
    }
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
    #[schema(schema_with = text_200)]
    pub street1: String,
    #[serde(default)]
    #[schema(schema_with = optional_text_200)]
    pub street2: String,
    #[schema(schema_with = text_100)]
    pub city: String,
    #[schema(schema_with = text_100)]
    pub state: String,
    #[schema(schema_with = text_20)]
    pub zip: String,
}

impl Address {
    /// The checks of the document (the services apply their own as well).
    pub fn check(&self, field: &str) -> Result<(), ApiError> {
        check_text(&format!("{field}.street1"), &self.street1, 200, true)?;
        check_text(&format!("{field}.street2"), &self.street2, 200, false)?;
        check_text(&format!("{field}.city"), &self.city, 100, true)?;
        check_text(&format!("{field}.state"), &self.state, 100, true)?;
        check_text(&format!("{field}.zip"), &self.zip, 20, true)
    }
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
    /// The id of an item of the restaurant's menu; an id the menu does not have is a 404.
    pub menu_item_id: String,
    /// From 1 to 100. A number with a zero fraction (`2.0`) is a whole number, as in JSON Schema;
    /// `2.5` is refused.
    #[serde(deserialize_with = "whole_number")]
    #[schema(value_type = i64, minimum = 1, maximum = 100)]
    pub quantity: i64,
}

/// A JSON number that is a whole number, as JSON Schema's `integer` counts them: `2` and `2.0`,
/// not `2.5` (nor `"2"`). One beyond i64 is clamped: it is out of range either way.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    if number.as_u64().is_some() {
        return Ok(i64::MAX);
    }
    match number.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(f.clamp(i64::MIN as f64, i64::MAX as f64) as i64),
        _ => Err(serde::de::Error::custom(format_args!("{number} is not a whole number"))),
    }
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
    #[schema(schema_with = text_100)]
    pub id: String,
    #[schema(schema_with = text_200)]
    pub name: String,
    /// A decimal amount with two places, more than zero.
    #[schema(schema_with = price_schema)]
    pub price: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Menu {
    /// From 1 to 500 items, each with an id of its own.
    #[schema(min_items = 1, max_items = 500)]
    pub menu_items: Vec<MenuItem>,
}

impl Menu {
    pub fn to_proto(self) -> Result<Vec<common::MenuItem>, ApiError> {
        self.menu_items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let field = |name: &str| format!("menu.menuItems[{i}].{name}");
                check_text(&field("id"), &item.id, 100, true)?;
                check_text(&field("name"), &item.name, 200, true)?;
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
