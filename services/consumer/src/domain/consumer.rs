//! The consumer domain: pure rules, no I/O.

use ftgo_platform::{
    ids::{ConsumerId, InvalidId},
    text,
};

/// The longest first or last name accepted.
pub const MAX_NAME_LENGTH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName {
    pub first_name: String,
    pub last_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub id: ConsumerId,
    pub name: PersonName,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConsumerError {
    #[error("{field} {problem}")]
    InvalidName { field: &'static str, problem: String },
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    #[error("consumer {0} does not exist")]
    NotFound(ConsumerId),
}

impl PersonName {
    /// Trims both parts and checks them: present, not blank, at most [`MAX_NAME_LENGTH`]
    /// characters, no control characters.
    pub fn new(first_name: &str, last_name: &str) -> Result<Self, ConsumerError> {
        Ok(Self {
            first_name: name_part("name.firstName", first_name)?,
            last_name: name_part("name.lastName", last_name)?,
        })
    }
}

fn name_part(field: &'static str, value: &str) -> Result<String, ConsumerError> {
    text::required(field, value, MAX_NAME_LENGTH).map_err(|e| ConsumerError::InvalidName { field, problem: e.problem })
}

impl Consumer {
    pub fn register(name: PersonName) -> Self {
        Self { id: ConsumerId::new(), name }
    }
}

pub fn parse_consumer_id(id: &str) -> Result<ConsumerId, ConsumerError> {
    Ok(id.parse()?)
}

/// The Create Order saga's consumer check: an order may be placed only by a consumer who exists.
pub fn verify_consumer_may_order(consumer: Option<&Consumer>, consumer_id: &str) -> Result<(), String> {
    match consumer {
        Some(_) => Ok(()),
        None => Err(format!("consumer {consumer_id} does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed() {
        let name = PersonName::new("  Ada ", "Lovelace\t").unwrap();
        assert_eq!(name, PersonName { first_name: "Ada".into(), last_name: "Lovelace".into() });
    }

    #[test]
    fn a_blank_name_part_is_refused_by_field() {
        assert_eq!(
            PersonName::new("Ada", "   ").unwrap_err(),
            ConsumerError::InvalidName { field: "name.lastName", problem: "is required".into() }
        );
        assert!(matches!(PersonName::new("", "X"), Err(ConsumerError::InvalidName { field: "name.firstName", .. })));
    }

    #[test]
    fn an_overlong_or_control_character_name_is_refused() {
        let long = "a".repeat(MAX_NAME_LENGTH + 1);
        assert!(PersonName::new(&long, "X").is_err());
        assert!(PersonName::new(&"é".repeat(MAX_NAME_LENGTH), "X").is_ok(), "length counts characters, not bytes");
        assert!(PersonName::new("Ada\u{0}", "X").is_err());
    }

    #[test]
    fn only_an_existing_consumer_may_order() {
        let ada = Consumer::register(PersonName::new("Ada", "Lovelace").unwrap());
        assert!(verify_consumer_may_order(Some(&ada), &ada.id.to_string()).is_ok());
        assert_eq!(verify_consumer_may_order(None, "c-1").unwrap_err(), "consumer c-1 does not exist");
    }

    #[test]
    fn a_consumer_id_must_be_a_uuid() {
        assert!(parse_consumer_id("not-a-uuid").is_err());
        assert!(parse_consumer_id(&uuid::Uuid::new_v4().to_string()).is_ok());
    }
}
