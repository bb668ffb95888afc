//! Typed ids: a UUID that knows what it names, so an order's id cannot be passed where a
//! consumer's is meant, and a string that is not an id is refused where it enters, with a message
//! that says which id it should have been.
//!
//! On the wire (protobuf, JSON) and in TEXT columns an id is its UUID's hyphenated string; in UUID
//! columns it is the UUID itself (`sqlx::Type`, transparent).

use std::{fmt, str::FromStr};

use uuid::Uuid;

/// Why a string is not an id of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {raw:?} is not a UUID")]
pub struct InvalidId {
    pub kind: &'static str,
    pub raw: String,
}

/// A request that names something with a non-id is a bad argument.
impl From<InvalidId> for tonic::Status {
    fn from(e: InvalidId) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// A message that names something with a non-id can never be handled: it is refused.
impl From<InvalidId> for crate::messaging::inbox::HandlerError {
    fn from(e: InvalidId) -> Self {
        Self::Rejected(e.into())
    }
}

/// A stored id that is not one is a corrupt row, never a blank.
impl From<InvalidId> for sqlx::Error {
    fn from(e: InvalidId) -> Self {
        sqlx::Error::Decode(Box::new(e))
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// What the id names, in messages: `order`, `consumer`, ...
            pub const KIND: &'static str = $kind;

            /// A new, random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        /// Parses the hyphenated UUID (surrounding blanks allowed), and nothing else.
        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(raw: &str) -> Result<Self, InvalidId> {
                raw.trim().parse().map(Self).map_err(|_| InvalidId { kind: $kind, raw: raw.to_owned() })
            }
        }
    };
}

typed_id!(
    /// A consumer's id (the Consumer Service creates them).
    ConsumerId,
    "consumer"
);
typed_id!(
    /// A restaurant's id (the Kitchen Service creates them).
    RestaurantId,
    "restaurant"
);
typed_id!(
    /// An order's id (the Order Service creates them).
    OrderId,
    "order"
);
typed_id!(
    /// A ticket's id (the Kitchen Service creates them).
    TicketId,
    "ticket"
);
typed_id!(
    /// A saga instance's id (the Orchestration Service creates them).
    SagaId,
    "saga"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_and_writes_its_uuid_and_refuses_anything_else_by_name() {
        let id = OrderId::new();
        assert_eq!(id.to_string().parse::<OrderId>(), Ok(id));
        assert_eq!(format!(" {id}\n").parse::<OrderId>(), Ok(id));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<OrderId>(&format!("\"{id}\"")).unwrap(), id);
        let wrong = "o-1".parse::<OrderId>().unwrap_err();
        assert_eq!(wrong.to_string(), "order id \"o-1\" is not a UUID");
        assert_eq!("".parse::<ConsumerId>().unwrap_err().to_string(), "consumer id \"\" is not a UUID");
        assert_ne!(OrderId::new(), OrderId::new());
    }
}
