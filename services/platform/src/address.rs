//! A postal address, as restaurants (Kitchen) and deliveries (Order) have them.

use ftgo_proto::common::v1 as proto;
use serde::{Deserialize, Serialize};

use crate::text::{InvalidField, optional, required};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Address {
    pub street1: String,
    pub street2: String,
    pub city: String,
    pub state: String,
    pub zip: String,
}

impl Address {
    /// Checks an address a client sent; `field` is its name in the API (`deliveryAddress`).
    /// `street2` may be empty; every other part is required.
    pub fn from_proto(field: &str, address: Option<proto::Address>) -> Result<Self, InvalidField> {
        let a = address.ok_or_else(|| InvalidField::new(field, "is required"))?;
        let part = |name: &str| format!("{field}.{name}");
        Ok(Self {
            street1: required(&part("street1"), &a.street1, 200)?,
            street2: optional(&part("street2"), &a.street2, 200)?,
            city: required(&part("city"), &a.city, 100)?,
            state: required(&part("state"), &a.state, 100)?,
            zip: required(&part("zip"), &a.zip, 20)?,
        })
    }
}

impl From<&Address> for proto::Address {
    fn from(a: &Address) -> Self {
        Self {
            street1: a.street1.clone(),
            street2: a.street2.clone(),
            city: a.city.clone(),
            state: a.state.clone(),
            zip: a.zip.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(street1: &str, street2: &str) -> Option<proto::Address> {
        Some(proto::Address {
            street1: street1.into(),
            street2: street2.into(),
            city: "Oakland".into(),
            state: "CA".into(),
            zip: "94612".into(),
        })
    }

    #[test]
    fn an_address_needs_every_part_but_the_second_street_line() {
        let address = Address::from_proto("deliveryAddress", proto(" 1 Main St ", "")).unwrap();
        assert_eq!(address.street1, "1 Main St");
        assert_eq!(
            Address::from_proto("deliveryAddress", None).unwrap_err().to_string(),
            "deliveryAddress is required"
        );
        assert_eq!(
            Address::from_proto("address", proto("", "")).unwrap_err().to_string(),
            "address.street1 is required"
        );
        assert_eq!(
            Address::from_proto("address", proto("1 Main St", "\0")).unwrap_err().to_string(),
            "address.street2 contains control characters"
        );
    }
}
