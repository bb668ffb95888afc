//! The Kitchen Service: restaurants and menus (it owns them, and publishes `RestaurantCreated` so
//! the Order Service can price orders locally), and the tickets kitchens prepare, driven by the
//! sagas' commands and by the restaurant's own actions (accept, preparing, ready, picked up).
//!
//! The same layout as every FTGO service: [`domain`] (pure rules: [`domain::ticket`] is the state
//! machine), [`store`], [`grpc`], [`messaging`] and [`start`] (the composition root).

pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod store;

use ftgo_catalog::ServiceName;
use ftgo_platform::service::Service;

/// The Kitchen Service as the platform runs it ([`Service::start`]).
pub static SERVICE: Service = Service {
    name: ServiceName::Kitchen,
    migrations: sqlx::migrate!("./migrations"),
    routes: grpc::routes,
    consumers: messaging::consumers,
};
