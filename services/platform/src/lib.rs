//! What every FTGO service needs, written once so that no service carries a copy:
//! configuration ([`config`]), its database and migrations ([`db`]), reliable asynchronous
//! messaging ([`messaging`]), its gRPC server ([`grpc`]), the lifecycle of its tasks
//! ([`runtime`]) and the start-up that ties them together ([`service`]); the one Consul client
//! ([`consul`]) behind registration ([`registry`]), configuration and the operator; and the value types
//! several services share: [`money`], [`address`], checked client [`text`].

pub mod address;
pub mod admin;
pub mod config;
pub mod consul;
pub mod db;
pub mod grpc;
pub mod idempotency;
pub mod ids;
pub mod messaging;
pub mod money;
pub mod registry;
pub mod runtime;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
