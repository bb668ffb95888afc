//! The FTGO operator: reconciles one `FtgoSystem` custom resource into a running FTGO deployment.
//!
//! Reconciliation is a pipeline in the style of Stackable's operators: read what exists →
//! validate the spec (pure) → build the desired objects (pure) → apply them by server-side apply
//! → write `status`. Only the first and the last two steps talk to the outside world, so the
//! interesting decisions are unit-tested without a cluster.

pub mod crd;
pub mod database;
pub mod desired;
pub mod discovery;
pub mod http;
pub mod leader;
pub mod managed;
pub mod metrics;
pub mod reconcile;
pub mod status;
pub mod validate;
