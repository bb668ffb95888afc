use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::{Env, eventually};

/// The real `ftgo-operator` binary, as a pod would run it, against the test's API server.
struct Replica {
    name: String,
    url: String,
    child: Child,
}

impl Replica {
    fn start(env: &Env, name: &str) -> Self {
        Self::start_with(env, name, &[])
    }

    fn start_with(env: &Env, name: &str, extra_env: &[(&str, &str)]) -> Self {
        let port = ftgo_testenv::process::free_port().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ftgo-operator"))
            .envs(extra_env.iter().copied())
            .env("KUBECONFIG", env.control_plane.kubeconfig_path())
            .env("FTGO_OPERATOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", &env.namespace)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { name: name.to_owned(), url: format!("http://127.0.0.1:{port}"), child }
    }

    async fn get(&self, path: &str) -> Option<String> {
        let response = reqwest::get(format!("{}{path}", self.url)).await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    }

    /// What Kubernetes does to stop a pod: SIGTERM, then wait.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        // Generous: the suite runs a whole one-node cluster beside this test on two cores.
        tokio::time::timeout(Duration::from_secs(90), self.child.wait()).await.expect("exits within 90s").unwrap()
    }
}

async fn holder(env: &Env) -> Option<String> {
    let lease = Api::<Lease>::namespaced(env.client.clone(), &env.namespace).get_opt("ftgo-operator").await.ok()??;
    lease.spec?.holder_identity
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over_on_graceful_shutdown() {
    let env = Env::start("leader").await;
    let first = Replica::start(&env, "operator-a");
    let second = Replica::start(&env, "operator-b");
    for replica in [&first, &second] {
        eventually("/healthz", Duration::from_secs(30), || replica.get("/healthz")).await;
    }
    let leader = eventually("a leader", Duration::from_secs(30), || holder(&env)).await;
    let (leading, standby) = if leader == first.name { (first, second) } else { (second, first) };
    assert_eq!(leading.get("/readyz").await.as_deref(), Some("ok: leader"));
    assert_eq!(standby.get("/readyz").await.as_deref(), Some("ok: standby"));
    assert!(standby.get("/metrics").await.unwrap().contains("ftgo_operator_leader 0"));

    // Only the leader reconciles.
    env.apply(&env.manifest("shop", json!({"services": []}))).await;
    let systems = env.systems();
    // Nothing to run, register or wait for: ready at once.
    eventually("the system ready", Duration::from_secs(30), || async {
        let system = systems.get("shop").await.ok()?;
        (ftgo_operator::controller::status::ready(system.status.as_ref())?.status == "True").then_some(())
    })
    .await;
    let counted = |text: String| {
        text.lines()
            .find(|l| l.starts_with("ftgo_operator_reconciles_total{result=\"success\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    assert!(counted(leading.get("/metrics").await.unwrap()).unwrap() > 0);
    assert_eq!(counted(standby.get("/metrics").await.unwrap()), Some(0));

    // Still one leader after a whole lease duration: renewals keep it.
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(holder(&env).await.as_deref(), Some(leading.name.as_str()));

    // SIGTERM: the leader stops gracefully and releases the Lease; the standby takes over.
    let standby_name = standby.name.clone();
    assert!(leading.terminate().await.success());
    eventually("the standby to lead", Duration::from_secs(20), || async {
        (holder(&env).await.as_deref() == Some(standby_name.as_str())).then_some(())
    })
    .await;
    eventually("the new leader to say so", Duration::from_secs(10), || async {
        (standby.get("/readyz").await.as_deref() == Some("ok: leader")).then_some(())
    })
    .await;
    assert!(standby.terminate().await.success());
}

/// A stand-in OpenTelemetry collector: takes OTLP/HTTP trace exports and keeps their bodies.
async fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            sink.lock().unwrap().push(body.to_vec());
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn reconciles_are_exported_as_opentelemetry_traces_over_otlp() {
    let env = Env::start("traces").await;
    let (endpoint, received) = collector().await;
    let replica = Replica::start_with(
        &env,
        "operator-a",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    eventually("/healthz", Duration::from_secs(30), || replica.get("/healthz")).await;
    env.apply(&env.manifest("shop", json!({"services": []}))).await;
    eventually("a reconcile span at the collector", Duration::from_secs(30), || async {
        let bodies = received.lock().unwrap().clone();
        let has = |needle: &[u8]| bodies.iter().any(|b| b.windows(needle.len()).any(|w| w == needle));
        (has(b"reconcile") && has(b"ftgo-operator") && has(b"shop")).then_some(())
    })
    .await;
    assert!(replica.terminate().await.success());
}
