//! The operator binary: the composition root. It reads its settings from the environment,
//! serves health, readiness and metrics, and runs the controller while it holds the leader
//! Lease, until SIGTERM (what Kubernetes sends) or Ctrl-C asks it to stop gracefully.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `FTGO_OPERATOR_LISTEN` | `127.0.0.1:8080` | where `/healthz`, `/readyz` and `/metrics` are served (the chart sets `0.0.0.0:8080` in the pod) |
//! | `POD_NAME` | host name + random suffix | this replica's identity in the Lease and in Events |
//! | `POD_NAMESPACE` | `default` | where the leader Lease lives |
//! | `FTGO_OPERATOR_LEASE_NAME` | `ftgo-operator` | the leader Lease's name |
//! | `RUST_LOG` | `info` | the log filter |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | unset | where to export traces (OTLP over HTTP); unset: no export |
//!
//! The Kubernetes client is configured the usual way: in a pod from its service account,
//! elsewhere from `$KUBECONFIG` or `~/.kube/config`.
//!
//! `ftgo-operator probe <url>` is the one subcommand: a single plain-HTTP GET with a 5 s
//! timeout that prints the status and exits 0 on 2xx, 1 otherwise. The chart's `helm test` Pod
//! runs it against `/readyz`, because the operator's image holds this binary and nothing else
//! (no curl, no wget). It needs none of the settings above.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use ftgo_operator::{
    controller::{self, Context},
    http,
    leader::{self, Lease},
    metrics::Metrics,
};
use kube::Client;
use tokio::sync::watch;
use tracing::info;

/// How long a leader's Lease lasts without renewal: how long a crashed leader leaves the
/// system unreconciled, against how often the API server is written to (every third of it).
const LEASE_DURATION: Duration = Duration::from_secs(15);

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// How long `probe` waits for an answer, connecting included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before telemetry and the Kubernetes client: a probe must not depend on either.
    if std::env::args().nth(1).as_deref() == Some("probe") {
        let url = std::env::args().nth(2).context("usage: ftgo-operator probe <url>")?;
        std::process::exit(if probe(&url).await { 0 } else { 1 });
    }

    // The same logs, traces and OTLP export as every FTGO service; `RUST_LOG` filters the logs.
    let _telemetry = ftgo_platform::telemetry::init("ftgo-operator", "info");

    let listen: SocketAddr =
        env_or("FTGO_OPERATOR_LISTEN", "127.0.0.1:8080").parse().context("FTGO_OPERATOR_LISTEN")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ftgo-operator".to_owned());
    let default_identity = format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let identity = env_or("POD_NAME", &default_identity);
    let lease_namespace = env_or("POD_NAMESPACE", "default");
    let lease_name = env_or("FTGO_OPERATOR_LEASE_NAME", "ftgo-operator");

    let client = Client::try_default().await.context("configuring the Kubernetes client")?;
    let metrics = Arc::new(Metrics::default());
    let (shutdown, shutdown_requested) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: finishing running reconciles");
        let _ = shutdown.send(true);
    });

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let listen = listener.local_addr()?;
    info!(%listen, identity, "serving /healthz, /readyz and /metrics");
    let mut http_stop = shutdown_requested.clone();
    let server = axum::serve(listener, http::router(metrics.clone())).with_graceful_shutdown(async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    });
    let server = tokio::spawn(async move { server.await });

    let lease = Lease::new(client.clone(), &lease_namespace, &lease_name, &identity, LEASE_DURATION);
    let ctx = Arc::new(Context::new(client, Some(identity), metrics.clone()));
    let outcome = leader::lead(lease, metrics, shutdown_requested, move |mut stop| {
        controller::run(ctx, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
    })
    .await;
    server.abort();
    outcome
}

/// One GET of `url`; true on a 2xx answer. Says what happened either way, for `helm test --logs`.
async fn probe(url: &str) -> bool {
    let get = async { reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?.get(url).send().await };
    match get.await {
        Ok(response) => {
            println!("GET {url}: {}", response.status());
            response.status().is_success()
        }
        Err(error) => {
            // With its sources: "connection refused" or a DNS failure is the useful part.
            eprintln!("GET {url}: {:#}", anyhow::Error::from(error));
            false
        }
    }
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
