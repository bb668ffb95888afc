//! The Consumer Service: registers the people who order food, publishes `ConsumerCreated` (from
//! which Accounting opens their account), and answers the Create Order saga's `VerifyConsumer`.
//!
//! Layout, the same in every FTGO service: [`domain`] holds the rules and has no I/O; [`store`] is
//! the database; [`grpc`] the synchronous API; [`messaging`] the saga participant; [`start`] wires
//! them together (the composition root that `main` calls and tests call too).

pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod store;

use ftgo_catalog::ServiceName;
use ftgo_platform::service::Service;

/// The Consumer Service as the platform runs it ([`Service::start`]).
pub static SERVICE: Service = Service {
    name: ServiceName::Consumer,
    migrations: sqlx::migrate!("./migrations"),
    routes: grpc::routes,
    consumers: messaging::consumers,
};
