//! The service's NATS connection, watched. async-nats reconnects by itself; what publishes (the
//! outbox relay) also needs to know at once when the connection drops, so that it stops waiting
//! for acknowledgements that cannot come, and when it is back, so that it publishes what is left
//! without waiting for its next poll.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use async_nats::{ConnectOptions, Event};
use tokio::sync::watch;

/// Whether the connection is up now. It changes on every disconnect and every (re)connect, so a
/// watcher sees even a reconnect too quick to catch the connection down.
pub type Link = watch::Receiver<bool>;

/// The longest pause between two reconnection attempts (async-nats's default grows to 4 s): on a
/// machine's loopback or in a cluster, an attempt is cheap, and a restarted server is found soon.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Connects to the NATS server at `url`, giving up after `timeout`, and watches the connection.
pub async fn connect(url: &str, timeout: Duration) -> Result<(async_nats::Client, Link)> {
    let (sender, link) = watch::channel(true);
    let sender = Arc::new(sender);
    let client = ConnectOptions::new()
        .connection_timeout(timeout)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("connected to NATS");
                        sender.send_replace(true);
                    }
                    Event::Disconnected => {
                        tracing::warn!("the connection to NATS dropped; reconnecting");
                        sender.send_replace(false);
                    }
                    other => tracing::debug!(event = %other, "NATS connection event"),
                }
            }
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    Ok((client, link))
}

/// 0 ms before the first attempt, then 100 ms more per attempt up to [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempts: usize) -> Duration {
    let steps = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    (Duration::from_millis(100) * steps).min(MAX_RECONNECT_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_attempts_come_quickly_and_never_more_than_half_a_second_apart() {
        let delays: Vec<u64> = (1..=8).map(|n| reconnect_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [0, 100, 200, 300, 400, 500, 500, 500]);
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }
}
