//! Orders, priced from the menu replica, and their guarded state machine.
//!
//! ```text
//!                      note_approved                request_cancel              note_cancelled
//! APPROVAL_PENDING ------------------> APPROVED -----------------> CANCEL_PENDING ------------> CANCELLED
//!        |                             |  ^  ^          undo_cancel      |
//!   note_rejected          request_revision  |  +------------------------+
//!        v                             v  | confirm_revision / undo_revision
//!     REJECTED                   REVISION_PENDING
//! ```

use chrono::{DateTime, Utc};
pub use ftgo_platform::address::Address;
use ftgo_platform::ids::{ConsumerId, OrderId, RestaurantId};
use ftgo_platform::money::Money;

/// The most of one menu item an order can hold.
pub const MAX_QUANTITY: i32 = 100;
/// The most line items one order can hold.
pub const MAX_LINE_ITEMS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumString, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    ApprovalPending,
    Approved,
    Rejected,
    CancelPending,
    Cancelled,
    RevisionPending,
}

impl OrderState {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    /// The name used in the API and in the database (`APPROVAL_PENDING`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub id: String,
    pub name: String,
    pub price: Money,
}

/// The replica of a restaurant's menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub restaurant_id: RestaurantId,
    pub restaurant_name: String,
    pub items: Vec<MenuItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLineItem {
    pub menu_item_id: String,
    pub name: String,
    pub price: Money,
    pub quantity: u32,
}

/// Line items and their total: what an order is, or what a revision would make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    pub line_items: Vec<OrderLineItem>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub consumer_id: ConsumerId,
    pub restaurant_id: RestaurantId,
    pub state: OrderState,
    pub pricing: Pricing,
    pub delivery_address: Address,
    pub rejection_reason: Option<String>,
    pub pending_revision: Option<Pricing>,
    /// When the order was placed.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("{field} {problem}")]
    Invalid { field: String, problem: String },
    #[error("restaurant {restaurant} has no menu item {menu_item_id:?}")]
    UnknownMenuItem { restaurant: String, menu_item_id: String },
    #[error("cannot {action} an order that is {}", state.as_str())]
    IllegalTransition { action: &'static str, state: OrderState },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> OrderError {
    OrderError::Invalid { field: field.into(), problem: problem.into() }
}

/// Prices `requested` (menu item id, quantity) from `menu`. `field` names the list in errors.
pub fn price(menu: &Menu, requested: &[(String, i32)], field: &str) -> Result<Pricing, OrderError> {
    if requested.is_empty() {
        return Err(invalid(field, "must have at least one item"));
    }
    if requested.len() > MAX_LINE_ITEMS {
        return Err(invalid(field, format!("has more than {MAX_LINE_ITEMS} items")));
    }
    let mut line_items = Vec::with_capacity(requested.len());
    let mut total = Money::ZERO;
    for (i, (menu_item_id, quantity)) in requested.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(quantity) {
            return Err(invalid(format!("{field}[{i}].quantity"), format!("must be from 1 to {MAX_QUANTITY}")));
        }
        let item = menu.items.iter().find(|m| &m.id == menu_item_id).ok_or_else(|| OrderError::UnknownMenuItem {
            restaurant: menu.restaurant_name.clone(),
            menu_item_id: menu_item_id.clone(),
        })?;
        let quantity = *quantity as u32;
        let cost = item.price.times(quantity).map_err(|e| invalid(format!("{field}[{i}]"), e.to_string()))?;
        total = total.checked_add(cost).map_err(|e| invalid("orderTotal", e.to_string()))?;
        line_items.push(OrderLineItem {
            menu_item_id: item.id.clone(),
            name: item.name.clone(),
            price: item.price,
            quantity,
        });
    }
    Ok(Pricing { line_items, total })
}

impl Order {
    /// A new order in APPROVAL_PENDING, priced from the replicated menu.
    pub fn create(
        consumer_id: &str,
        menu: &Menu,
        delivery_address: Address,
        requested: &[(String, i32)],
    ) -> Result<Self, OrderError> {
        if consumer_id.trim().is_empty() {
            return Err(invalid("consumerId", "is required"));
        }
        let consumer_id: ConsumerId =
            consumer_id.parse().map_err(|_| invalid("consumerId", "is not a consumer id (a UUID)"))?;
        let pricing = price(menu, requested, "lineItems")?;
        Ok(Self {
            id: OrderId::new(),
            consumer_id,
            restaurant_id: menu.restaurant_id,
            state: OrderState::ApprovalPending,
            pricing,
            delivery_address,
            rejection_reason: None,
            pending_revision: None,
            created_at: Utc::now(),
        })
    }

    fn transition(&mut self, action: &'static str, from: OrderState, to: OrderState) -> Result<(), OrderError> {
        if self.state != from {
            return Err(OrderError::IllegalTransition { action, state: self.state });
        }
        self.state = to;
        Ok(())
    }

    pub fn note_approved(&mut self) -> Result<(), OrderError> {
        self.transition("approve", OrderState::ApprovalPending, OrderState::Approved)
    }

    pub fn note_rejected(&mut self, reason: &str) -> Result<(), OrderError> {
        self.transition("reject", OrderState::ApprovalPending, OrderState::Rejected)?;
        self.rejection_reason = Some(reason.to_owned());
        Ok(())
    }

    pub fn request_cancel(&mut self) -> Result<(), OrderError> {
        self.transition("cancel", OrderState::Approved, OrderState::CancelPending)
    }

    pub fn note_cancelled(&mut self) -> Result<(), OrderError> {
        self.transition("confirm the cancellation of", OrderState::CancelPending, OrderState::Cancelled)
    }

    pub fn undo_cancel(&mut self) -> Result<(), OrderError> {
        self.transition("undo the cancellation of", OrderState::CancelPending, OrderState::Approved)
    }

    /// Prices the revision and holds it until the saga confirms or undoes it.
    pub fn request_revision(&mut self, menu: &Menu, requested: &[(String, i32)]) -> Result<Pricing, OrderError> {
        if self.state != OrderState::Approved {
            return Err(OrderError::IllegalTransition { action: "revise", state: self.state });
        }
        let revision = price(menu, requested, "revisedLineItems")?;
        self.state = OrderState::RevisionPending;
        self.pending_revision = Some(revision.clone());
        Ok(revision)
    }

    pub fn confirm_revision(&mut self) -> Result<(), OrderError> {
        self.transition("confirm the revision of", OrderState::RevisionPending, OrderState::Approved)?;
        if let Some(revision) = self.pending_revision.take() {
            self.pricing = revision;
        }
        Ok(())
    }

    pub fn undo_revision(&mut self) -> Result<(), OrderError> {
        self.transition("undo the revision of", OrderState::RevisionPending, OrderState::Approved)?;
        self.pending_revision = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{OrderState::*, *};

    const C1: &str = "00000000-0000-4000-8000-0000000000c1";

    fn menu() -> Menu {
        let money = |s: &str| s.parse().unwrap();
        Menu {
            restaurant_id: RestaurantId::new(),
            restaurant_name: "Ajanta".into(),
            items: vec![
                MenuItem { id: "1".into(), name: "Vindaloo".into(), price: money("12.50") },
                MenuItem { id: "2".into(), name: "Dal".into(), price: money("5.00") },
            ],
        }
    }

    fn order_in(state: OrderState) -> Order {
        let mut order = Order::create(C1, &menu(), Address::default(), &[("1".into(), 1)]).unwrap();
        order.state = state;
        order
    }

    type Action = fn(&mut Order) -> Result<(), OrderError>;
    type Rule = (&'static str, Action, OrderState, OrderState);

    fn rules() -> Vec<Rule> {
        vec![
            ("note_approved", Order::note_approved, ApprovalPending, Approved),
            ("note_rejected", |o| o.note_rejected("no"), ApprovalPending, Rejected),
            ("request_cancel", Order::request_cancel, Approved, CancelPending),
            ("note_cancelled", Order::note_cancelled, CancelPending, Cancelled),
            ("undo_cancel", Order::undo_cancel, CancelPending, Approved),
            (
                "request_revision",
                |o| o.request_revision(&menu(), &[("2".into(), 2)]).map(|_| ()),
                Approved,
                RevisionPending,
            ),
            ("confirm_revision", Order::confirm_revision, RevisionPending, Approved),
            ("undo_revision", Order::undo_revision, RevisionPending, Approved),
        ]
    }

    #[test]
    fn every_legal_transition_leads_where_it_should_and_every_other_is_refused_unchanged() {
        for (name, action, legal_from, to) in rules() {
            for &from in OrderState::ALL {
                let mut order = order_in(from);
                let before = order.clone();
                let result = action(&mut order);
                if from == legal_from {
                    result.unwrap();
                    assert_eq!(order.state, to, "{name} from {from:?}");
                } else {
                    assert_eq!(result, Err(OrderError::IllegalTransition { action: name_of(&result), state: from }));
                    assert_eq!(order, before, "{name} from {from:?} must change nothing");
                }
            }
        }
    }

    fn name_of(result: &Result<(), OrderError>) -> &'static str {
        match result {
            Err(OrderError::IllegalTransition { action, .. }) => action,
            _ => "",
        }
    }

    #[test]
    fn an_order_is_priced_from_the_menu() {
        let order = Order::create(C1, &menu(), Address::default(), &[("1".into(), 2), ("2".into(), 1)]).unwrap();
        assert_eq!(order.state, ApprovalPending);
        assert_eq!(order.pricing.total.to_string(), "30.00");
        assert_eq!(order.pricing.line_items[0].name, "Vindaloo");
    }

    #[test]
    fn bad_line_items_are_refused_with_the_field_that_is_wrong() {
        let create =
            |items: &[(String, i32)]| Order::create(C1, &menu(), Address::default(), items).unwrap_err().to_string();
        assert_eq!(create(&[]), "lineItems must have at least one item");
        assert_eq!(create(&[("1".into(), 0)]), "lineItems[0].quantity must be from 1 to 100");
        assert_eq!(create(&[("1".into(), -3)]), "lineItems[0].quantity must be from 1 to 100");
        assert_eq!(create(&[("1".into(), 1_000_000)]), "lineItems[0].quantity must be from 1 to 100");
        assert_eq!(create(&[("9".into(), 1)]), "restaurant Ajanta has no menu item \"9\"");
        let blank = Order::create(" ", &menu(), Address::default(), &[("1".into(), 1)]).unwrap_err();
        assert_eq!(blank.to_string(), "consumerId is required");
        let not_an_id = Order::create("c-1", &menu(), Address::default(), &[("1".into(), 1)]).unwrap_err();
        assert_eq!(not_an_id.to_string(), "consumerId is not a consumer id (a UUID)");
    }

    #[test]
    fn a_revision_replaces_the_items_only_when_confirmed() {
        let mut order = order_in(Approved);
        let revision = order.request_revision(&menu(), &[("2".into(), 3)]).unwrap();
        assert_eq!(revision.total.to_string(), "15.00");
        assert_eq!(order.pricing.total.to_string(), "12.50", "unchanged while pending");
        order.undo_revision().unwrap();
        assert_eq!((order.state, order.pricing.total.to_string()), (Approved, "12.50".to_owned()));

        order.request_revision(&menu(), &[("2".into(), 3)]).unwrap();
        order.confirm_revision().unwrap();
        assert_eq!((order.state, order.pricing.total.to_string()), (Approved, "15.00".to_owned()));
    }

    #[test]
    fn a_rejected_order_says_why() {
        let mut order = order_in(ApprovalPending);
        order.note_rejected("card authorization refused: credit limit exceeded").unwrap();
        assert_eq!(order.rejection_reason.as_deref(), Some("card authorization refused: credit limit exceeded"));
    }
}
