//! The JetStream stream FTGO's messages travel on, and the subjects within it.
//!
//! One stream, `FTGO`, holds every subject under `ftgo.>`:
//! - `ftgo.event.<aggregate>.<Event>`: domain events (`ftgo.event.restaurant.RestaurantCreated`);
//! - `ftgo.command.<service>.<Command>`: saga commands to a participant (`ftgo.command.kitchen.CreateTicket`);
//! - `ftgo.reply.<service>.<Reply>`: replies to the orchestrator (`ftgo.reply.orchestrator.TicketCreated`).
//!
//! Each consuming service has its own durable consumer filtered to the subjects it handles.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, stream};

pub const STREAM: &str = "FTGO";
pub const SUBJECTS: &str = "ftgo.>";

/// Creates the FTGO stream if it does not exist, and returns it. Safe to call from every service
/// at start-up.
pub async fn ensure_stream(js: &jetstream::Context) -> Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(7 * 24 * 3600),
        // A relay that crashed after publishing and before marking republishes well within this.
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .context("creating the FTGO JetStream stream")
}

pub fn event_subject(aggregate: &str, event: &str) -> String {
    format!("ftgo.event.{aggregate}.{event}")
}

pub fn command_subject(service: &str, command: &str) -> String {
    format!("ftgo.command.{service}.{command}")
}

pub fn reply_subject(service: &str, reply: &str) -> String {
    format!("ftgo.reply.{service}.{reply}")
}
