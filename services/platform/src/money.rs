//! Money: an exact, non-negative amount in minor units (cents). Never floating point.
//!
//! Services exchange [`Money`] as `ftgo.common.v1.Money { minor_units }`; the public HTTP API
//! writes it as a decimal string with two places (`"12.34"`), which [`Money::from_str`] parses
//! strictly and `Display` writes.

use std::{fmt, str::FromStr};

/// The largest amount accepted: big enough for any order, small enough that summing a few
/// thousand of them cannot overflow an i64.
pub const MAX_MINOR_UNITS: i64 = 100_000_000_000;

/// Stored (in JSON, such as a saga's data) as its minor units, checked when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must not be negative")]
    Negative,
    #[error("is more than {}", Money(MAX_MINOR_UNITS))]
    TooLarge,
    #[error("must be a decimal amount with at most two places, such as \"12.34\"")]
    Malformed,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_minor_units(minor_units: i64) -> Result<Self, MoneyError> {
        if minor_units < 0 {
            Err(MoneyError::Negative)
        } else if minor_units > MAX_MINOR_UNITS {
            Err(MoneyError::TooLarge)
        } else {
            Ok(Self(minor_units))
        }
    }

    /// For constants: panics (at compile time, in a `const`) on an amount out of range.
    pub const fn from_minor_units_const(minor_units: i64) -> Self {
        assert!(minor_units >= 0 && minor_units <= MAX_MINOR_UNITS, "amount out of range");
        Self(minor_units)
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        Money::from_minor_units(self.0.checked_add(other.0).ok_or(MoneyError::TooLarge)?)
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Money) -> Money {
        Money((self.0 - other.0).max(0))
    }

    pub fn times(self, quantity: u32) -> Result<Money, MoneyError> {
        Money::from_minor_units(self.0.checked_mul(i64::from(quantity)).ok_or(MoneyError::TooLarge)?)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Accepts `12`, `12.3` and `12.34`; refuses signs, exponents, spaces, more than two
    /// decimals and amounts over the maximum.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let (units, cents) = s.split_once('.').unwrap_or((s, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if units.is_empty()
            || !digits(units)
            || !digits(cents)
            || cents.len() > 2
            || (s.contains('.') && cents.is_empty())
        {
            return Err(MoneyError::Malformed);
        }
        if units.len() > 12 {
            return Err(MoneyError::TooLarge);
        }
        let units: i64 = units.parse().map_err(|_| MoneyError::Malformed)?;
        let cents: i64 = format!("{cents:0<2}").parse().map_err(|_| MoneyError::Malformed)?;
        Money::from_minor_units(units.checked_mul(100).and_then(|u| u.checked_add(cents)).ok_or(MoneyError::TooLarge)?)
    }
}

impl TryFrom<i64> for Money {
    type Error = MoneyError;

    fn try_from(minor_units: i64) -> Result<Self, Self::Error> {
        Money::from_minor_units(minor_units)
    }
}

impl From<Money> for i64 {
    fn from(money: Money) -> Self {
        money.0
    }
}

impl From<Money> for ftgo_proto::common::v1::Money {
    fn from(money: Money) -> Self {
        Self { minor_units: money.0 }
    }
}

impl TryFrom<Option<ftgo_proto::common::v1::Money>> for Money {
    type Error = MoneyError;

    /// A missing amount is zero, as proto3 would have it.
    fn try_from(money: Option<ftgo_proto::common::v1::Money>) -> Result<Self, Self::Error> {
        Money::from_minor_units(money.map_or(0, |m| m.minor_units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_as_minor_units_and_checked_when_read() {
        let amount = Money::from_minor_units(1234).unwrap();
        assert_eq!(serde_json::to_value(amount).unwrap(), serde_json::json!(1234));
        assert_eq!(serde_json::from_value::<Money>(serde_json::json!(1234)).unwrap(), amount);
        for bad in [serde_json::json!(-1), serde_json::json!(MAX_MINOR_UNITS + 1), serde_json::json!("12.34")] {
            assert!(serde_json::from_value::<Money>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_and_prints_two_places() {
        assert_eq!("12.34".parse::<Money>().unwrap().minor_units(), 1234);
        assert_eq!("12.3".parse::<Money>().unwrap().to_string(), "12.30");
        assert_eq!("12".parse::<Money>().unwrap().to_string(), "12.00");
        assert_eq!("0.05".parse::<Money>().unwrap().to_string(), "0.05");
        assert_eq!(Money::from_minor_units(50000).unwrap().to_string(), "500.00");
    }

    #[test]
    fn refuses_what_is_not_an_exact_amount() {
        for bad in ["", ".", "1.", ".5", "1.234", "1e3", " 1", "1,00", "0x10", "+1", "1.2.3", "NaN"] {
            assert_eq!(bad.parse::<Money>(), Err(MoneyError::Malformed), "{bad:?}");
        }
        assert_eq!("-1.00".parse::<Money>(), Err(MoneyError::Negative));
        assert_eq!("99999999999999999999".parse::<Money>(), Err(MoneyError::TooLarge));
        assert_eq!("1000000000.01".parse::<Money>(), Err(MoneyError::TooLarge));
    }

    #[test]
    fn arithmetic_is_checked() {
        let price = Money::from_minor_units(1250).unwrap();
        assert_eq!(price.times(3).unwrap().minor_units(), 3750);
        assert_eq!(Money(MAX_MINOR_UNITS).times(2), Err(MoneyError::TooLarge));
        assert_eq!(price.checked_add(price).unwrap().minor_units(), 2500);
        assert_eq!(price.saturating_sub(Money(2000)), Money::ZERO);
        assert_eq!(Money::from_minor_units(-1), Err(MoneyError::Negative));
    }
}
