//! Accounts and card authorizations: pure rules, no I/O.
//!
//! An authorization succeeds only when the account is enabled and `reserved + amount <=
//! credit_limit`; it then reserves the amount. Releasing (order cancelled) and revising (order
//! revised) adjust the reservation. Every operation is idempotent per order, because the saga may
//! ask twice.

use ftgo_platform::{
    ids::{ConsumerId, OrderId},
    money::Money,
};

/// Every new account: enabled, with this credit limit.
pub const OPENING_CREDIT_LIMIT: Money = Money::from_minor_units_const(50_000); // 500.00

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub consumer_id: ConsumerId,
    pub credit_limit: Money,
    pub reserved: Money,
    pub enabled: bool,
}

/// Stored by name (`AUTHORIZED`, `REVERSED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationState {
    Authorized,
    Reversed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub order_id: OrderId,
    pub consumer_id: ConsumerId,
    pub amount: Money,
    pub state: AuthorizationState,
}

/// Why an authorization was refused; the text reaches the client as the order's rejection reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the account of consumer {0} is disabled")]
    Disabled(ConsumerId),
    #[error("credit limit exceeded: {reserved} reserved + {amount} requested > {limit} limit")]
    CreditLimitExceeded { reserved: Money, amount: Money, limit: Money },
    #[error("order {0} is authorized for another consumer")]
    OtherConsumer(OrderId),
    #[error("order {0} has no authorization to revise")]
    NothingToRevise(OrderId),
}

impl Account {
    pub fn open(consumer_id: ConsumerId) -> Self {
        Self { consumer_id, credit_limit: OPENING_CREDIT_LIMIT, reserved: Money::ZERO, enabled: true }
    }

    fn check_room_for(&self, amount: Money, already_reserved: Money) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::Disabled(self.consumer_id));
        }
        let reserved = self.reserved.saturating_sub(already_reserved);
        let fits = reserved.checked_add(amount).is_ok_and(|total| total <= self.credit_limit);
        if !fits {
            return Err(Refusal::CreditLimitExceeded { reserved, amount, limit: self.credit_limit });
        }
        Ok(())
    }

    /// Authorizes `amount` for `order_id` and reserves it. Asked again for an order that is
    /// already authorized, it succeeds without reserving twice.
    pub fn authorize(
        &mut self,
        existing: Option<&Authorization>,
        order_id: OrderId,
        amount: Money,
    ) -> Result<Authorization, Refusal> {
        if let Some(existing) = existing {
            if existing.consumer_id != self.consumer_id {
                return Err(Refusal::OtherConsumer(order_id));
            }
            if existing.state == AuthorizationState::Authorized {
                return Ok(existing.clone());
            }
        }
        self.check_room_for(amount, Money::ZERO)?;
        self.reserved = self.reserved.checked_add(amount).expect("checked by check_room_for");
        Ok(Authorization { order_id, consumer_id: self.consumer_id, amount, state: AuthorizationState::Authorized })
    }

    /// Releases the reservation of an authorized order. Nothing to release is not an error: the
    /// compensation may run after a refusal, or twice.
    pub fn release(&mut self, authorization: Option<&Authorization>) -> Option<Authorization> {
        let authorization = authorization.filter(|a| a.state == AuthorizationState::Authorized)?;
        self.reserved = self.reserved.saturating_sub(authorization.amount);
        Some(Authorization { state: AuthorizationState::Reversed, ..authorization.clone() })
    }

    /// Re-authorizes an authorized order for `new_amount`, under the same rule as `authorize`,
    /// counting the order's current reservation as free.
    pub fn revise(&mut self, current: &Authorization, new_amount: Money) -> Result<Authorization, Refusal> {
        if current.state != AuthorizationState::Authorized {
            return Err(Refusal::NothingToRevise(current.order_id));
        }
        self.check_room_for(new_amount, current.amount)?;
        self.reserved = self.reserved.saturating_sub(current.amount).checked_add(new_amount).expect("checked above");
        Ok(Authorization { amount: new_amount, ..current.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(s: &str) -> Money {
        s.parse().unwrap()
    }

    /// Order `o-N`: the same id for the same N.
    fn order(name: &str) -> OrderId {
        OrderId::from_uuid(uuid::Uuid::from_u128(name.trim_start_matches("o-").parse().unwrap()))
    }

    #[test]
    fn a_new_account_is_enabled_with_a_limit_of_500() {
        let account = Account::open(ConsumerId::new());
        assert!(account.enabled);
        assert_eq!(account.credit_limit.to_string(), "500.00");
        assert_eq!(account.reserved, Money::ZERO);
    }

    #[test]
    fn authorizing_reserves_up_to_the_limit_and_not_beyond() {
        let mut account = Account::open(ConsumerId::new());
        account.authorize(None, order("o-1"), money("300.00")).unwrap();
        account.authorize(None, order("o-2"), money("200.00")).unwrap();
        assert_eq!(account.reserved, money("500.00"));
        let refusal = account.authorize(None, order("o-3"), money("0.01")).unwrap_err();
        assert_eq!(refusal.to_string(), "credit limit exceeded: 500.00 reserved + 0.01 requested > 500.00 limit");
        assert_eq!(account.reserved, money("500.00"), "a refusal reserves nothing");
    }

    #[test]
    fn a_disabled_account_authorizes_nothing() {
        let mut account = Account::open(ConsumerId::new());
        account.enabled = false;
        assert!(matches!(account.authorize(None, order("o-1"), money("1.00")), Err(Refusal::Disabled(_))));
    }

    #[test]
    fn authorizing_the_same_order_twice_reserves_once() {
        let mut account = Account::open(ConsumerId::new());
        let first = account.authorize(None, order("o-1"), money("100.00")).unwrap();
        let again = account.authorize(Some(&first), order("o-1"), money("100.00")).unwrap();
        assert_eq!(first, again);
        assert_eq!(account.reserved, money("100.00"));
    }

    #[test]
    fn releasing_frees_the_reservation_once() {
        let mut account = Account::open(ConsumerId::new());
        let authorization = account.authorize(None, order("o-1"), money("100.00")).unwrap();
        let released = account.release(Some(&authorization)).unwrap();
        assert_eq!(released.state, AuthorizationState::Reversed);
        assert_eq!(account.reserved, Money::ZERO);
        assert_eq!(account.release(Some(&released)), None, "a second release changes nothing");
        assert_eq!(account.release(None), None);
    }

    #[test]
    fn revising_counts_the_current_reservation_as_free() {
        let mut account = Account::open(ConsumerId::new());
        let authorization = account.authorize(None, order("o-1"), money("400.00")).unwrap();
        let revised = account.revise(&authorization, money("500.00")).unwrap();
        assert_eq!(revised.amount, money("500.00"));
        assert_eq!(account.reserved, money("500.00"));
        let refusal = account.revise(&revised, money("500.01")).unwrap_err();
        assert!(matches!(refusal, Refusal::CreditLimitExceeded { .. }));
        assert_eq!(account.reserved, money("500.00"), "a refused revision keeps the old reservation");
    }
}
