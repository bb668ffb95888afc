//! Restaurants and menus, validated before they exist.

use std::collections::HashSet;

pub use ftgo_platform::address::Address;
use ftgo_platform::ids::RestaurantId;
use ftgo_platform::{
    money::Money,
    text::{InvalidField, required as text},
};

pub const MAX_NAME_LENGTH: usize = 200;
pub const MAX_MENU_ITEMS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub id: String,
    pub name: String,
    pub price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restaurant {
    pub id: RestaurantId,
    pub name: String,
    pub address: Address,
    pub menu: Vec<MenuItem>,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> InvalidField {
    InvalidField::new(field, problem)
}

impl Restaurant {
    /// A new restaurant: a name, at least one menu item, unique item ids, positive prices.
    pub fn create(name: &str, address: Address, menu: Vec<(String, String, i64)>) -> Result<Self, InvalidField> {
        let name = text("name", name, MAX_NAME_LENGTH)?;
        if menu.is_empty() {
            return Err(invalid("menu.menuItems", "must have at least one item"));
        }
        if menu.len() > MAX_MENU_ITEMS {
            return Err(invalid("menu.menuItems", format!("has more than {MAX_MENU_ITEMS} items")));
        }
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(menu.len());
        for (i, (id, item_name, price)) in menu.into_iter().enumerate() {
            let field = |f: &str| format!("menu.menuItems[{i}].{f}");
            let id = text(&field("id"), &id, 100)?;
            if !seen.insert(id.clone()) {
                return Err(invalid(field("id"), format!("{id:?} appears twice")));
            }
            let item_name = text(&field("name"), &item_name, MAX_NAME_LENGTH)?;
            let price = Money::from_minor_units(price).map_err(|e| invalid(field("price"), e.to_string()))?;
            if price == Money::ZERO {
                return Err(invalid(field("price"), "must be more than zero"));
            }
            items.push(MenuItem { id, name: item_name, price });
        }
        Ok(Self { id: RestaurantId::new(), name, address, menu: items })
    }

    pub fn menu_item(&self, id: &str) -> Option<&MenuItem> {
        self.menu.iter().find(|item| item.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, price: i64) -> (String, String, i64) {
        (id.into(), format!("dish {id}"), price)
    }

    #[test]
    fn a_restaurant_needs_a_name_and_a_menu_of_unique_positively_priced_items() {
        let ok = Restaurant::create(" Ajanta ", Address::default(), vec![item("1", 1250), item("2", 500)]).unwrap();
        assert_eq!(ok.name, "Ajanta");
        assert_eq!(ok.menu_item("2").unwrap().price.to_string(), "5.00");

        let err = |name: &str, menu| Restaurant::create(name, Address::default(), menu).unwrap_err().to_string();
        assert_eq!(err("", vec![item("1", 1)]), "name is required");
        assert_eq!(err("A", vec![]), "menu.menuItems must have at least one item");
        assert_eq!(err("A", vec![item("1", 1), item("1", 2)]), "menu.menuItems[1].id \"1\" appears twice");
        assert_eq!(err("A", vec![item("1", 0)]), "menu.menuItems[0].price must be more than zero");
        assert_eq!(err("A", vec![item("1", -5)]), "menu.menuItems[0].price must not be negative");
        assert_eq!(err("A", vec![item(" ", 5)]), "menu.menuItems[0].id is required");
    }
}
