//! Running a service: its tasks (gRPC server, outbox relay, message consumers) share one
//! shutdown signal, and the first task to fail stops the others, so a half-working service never
//! keeps answering health checks.

use std::net::SocketAddr;

use anyhow::{Result, anyhow};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The tasks of one running service.
pub struct Running {
    /// Where the service answers: its gRPC server (the HTTP server, for the gateway).
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, Result<()>)>,
}

impl Running {
    pub fn new(addr: SocketAddr, shutdown: CancellationToken) -> Self {
        Self { addr, shutdown, tasks: JoinSet::new() }
    }

    /// Runs `task` until shutdown; `name` identifies it in errors.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = Result<()>> + Send + 'static) {
        self.tasks.spawn(async move { (name, task.await) });
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until shutdown is requested or a task ends; then stops every task and returns the
    /// first failure.
    pub async fn wait(mut self) -> Result<()> {
        let mut first_error = None;
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => {}
            Some(joined) = self.tasks.join_next() => {
                first_error = match joined {
                    // A task that returns because shutdown was requested a moment ago did its job.
                    Ok((_, Ok(()))) if self.shutdown.is_cancelled() => None,
                    Ok((name, Ok(()))) => Some(anyhow!("{name} stopped unexpectedly")),
                    Ok((name, Err(e))) => Some(e.context(format!("{name} failed"))),
                    Err(e) => Some(anyhow!("a task panicked: {e}")),
                };
                self.shutdown.cancel();
            }
        }
        while let Some(joined) = self.tasks.join_next().await {
            if let (Ok((name, Err(e))), None) = (joined, &first_error) {
                first_error = Some(e.context(format!("{name} failed")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Requests shutdown and waits for every task to finish.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// A token cancelled on SIGINT or SIGTERM: the composition root passes it to `Running`.
pub fn shutdown_on_signals() -> Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        cancel.cancel();
    });
    Ok(token)
}
