//! The Accounting Service: opens an account for every consumer (from `ConsumerCreated`), and
//! authorizes, reverses and revises card authorizations for the sagas.
//!
//! The same layout as every FTGO service: [`domain`] (pure rules), [`store`] (database), [`grpc`]
//! (synchronous API), [`messaging`] (events and saga commands), [`start`] (composition root).

pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod store;

use ftgo_catalog::ServiceName;
use ftgo_platform::service::Service;

/// The Accounting Service as the platform runs it ([`Service::start`]).
pub static SERVICE: Service = Service {
    name: ServiceName::Accounting,
    migrations: sqlx::migrate!("./migrations"),
    routes: grpc::routes,
    consumers: messaging::consumers,
};
