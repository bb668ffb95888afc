//! The FTGO operator: reconciles one `FtgoSystem` custom resource into a running FTGO deployment.
//!
//! [`controller`] is the reconcile, a pipeline in the style of Stackable's operators: read what
//! exists → [`controller::validate`] the spec (pure) → [`controller::build`] the desired objects
//! (pure) → [`controller::apply`] them by server-side apply → write [`controller::status`]. Only
//! the first and the last two steps talk to the outside world, so the interesting decisions are
//! unit-tested without a cluster. [`names`] holds every name and label the steps share; [`crd`]
//! is the resource itself; [`leader`], [`metrics`] and [`http`] are what runs around the
//! controller.

pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
#[cfg(test)]
mod testing;
