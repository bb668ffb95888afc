//! `ftgo-cluster`: a local Kubernetes control plane to watch the operator work, in the
//! foreground (`just cluster-up`; `just cluster-down` from another terminal stops it).
//!
//! `up` starts etcd + kube-apiserver, Postgres, NATS JetStream, Consul and Fabio as private
//! processes on free loopback ports, installs the CRD, creates the namespace `ftgo` with the
//! Postgres admin Secret, writes a kubeconfig and an FtgoSystem manifest with these addresses
//! filled in, and runs the `ftgo-operator` binary against it all.
//!
//! There is no kubelet: Deployments are created but no pod ever runs, so the system stays
//! `Ready=False` (`DeploymentsProgressing`). Everything the operator does up to that point is
//! real, and visible: databases and roles in Postgres, Secrets, ConfigMaps, Deployments and
//! Services in the API server, registrations in Consul, route overrides in Consul KV.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ftgo_testenv::{
    Consul, Fabio, KubeControlPlane, Nats, Postgres,
    foreground::{Foreground, step},
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams},
    runtime::{conditions, wait::await_condition},
};
use tokio::signal::unix::{SignalKind, signal};

const NAMESPACE: &str = "ftgo";

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        // kube_client logs every failed attempt while the API server is still starting.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("up") => up().await,
        Some("down") => foreground().stop(),
        _ => bail!("usage: ftgo-cluster up|down"),
    }
}

/// Where `up` keeps its pid, the kubeconfig and the generated manifest.
fn state_dir() -> PathBuf {
    std::env::var_os("FTGO_STATE_DIR").map_or_else(|| PathBuf::from(".ftgo"), PathBuf::from).join("cluster")
}

/// `up` runs in the foreground; `down` finds it through the pid file.
fn foreground() -> Foreground {
    Foreground {
        pid_file: state_dir().join("pid"),
        program: "ftgo-cluster",
        name: "the local cluster",
        stop_command: "just cluster-down",
    }
}

async fn up() -> Result<()> {
    let dir = std::path::absolute(state_dir())?;
    std::fs::create_dir_all(&dir)?;
    foreground().run(run_until_stopped(&dir)).await
}

async fn run_until_stopped(dir: &Path) -> Result<()> {
    let started = Instant::now();
    println!("starting etcd + kube-apiserver, Postgres, NATS JetStream and Consul ...");
    let (control_plane, postgres, nats, consul) = tokio::try_join!(
        step("kube-apiserver", KubeControlPlane::start()),
        step("postgres", Postgres::start()),
        step("nats-server", Nats::start()),
        step("consul", Consul::start()),
    )?;
    let fabio = step("fabio", Fabio::start(&consul)).await?;

    let client = control_plane.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let ssa = PatchParams::apply("ftgo-cluster").force();
    crds.patch("ftgosystems.ftgo.dev", &ssa, &Patch::Apply(ftgo_operator::crd::crd())).await?;
    let established = await_condition(crds, "ftgosystems.ftgo.dev", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established).await.context("CRD not established in 30s")??;
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(NAMESPACE.to_owned()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone()).patch(NAMESPACE, &ssa, &Patch::Apply(namespace)).await?;
    // testenv's Postgres trusts loopback connections, so any password logs the superuser in.
    let admin = Secret {
        metadata: ObjectMeta { name: Some("pg-admin".to_owned()), ..ObjectMeta::default() },
        data: Some(
            [("username", "postgres"), ("password", "trust")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), NAMESPACE).patch("pg-admin", &ssa, &Patch::Apply(admin)).await?;

    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(control_plane.kubeconfig_path(), &kubeconfig)?;
    let manifest = dir.join("ftgo-system.yaml");
    std::fs::write(&manifest, example_with_addresses(&postgres, &nats, &consul)?)?;

    let operator_binary = std::env::current_exe()?.with_file_name("ftgo-operator");
    let mut operator = tokio::process::Command::new(&operator_binary)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "default")
        .env("POD_NAME", "ftgo-operator-local")
        .env("FTGO_OPERATOR_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("starting {} (run `cargo build -p ftgo-operator --bins` first)", operator_binary.display())
        })?;

    println!("\nlocal cluster is up ({:.1}s):", started.elapsed().as_secs_f32());
    println!("  kube-apiserver  {}", control_plane.api_url());
    println!("  postgres        {}", postgres.url("postgres"));
    println!("  nats            {}", nats.url());
    println!("  consul          {}/ui", consul.http_url());
    println!("  fabio admin     {}/routes", fabio.admin_url());
    println!("  operator        pid {}", operator.id().unwrap_or_default());
    println!("\nIn another terminal:\n");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl apply -f {}", manifest.display());
    println!("  kubectl get ftgo -n {NAMESPACE} -w");
    println!("  kubectl describe ftgo shop -n {NAMESPACE}");
    println!("  kubectl get deploy,svc,cm,secret -n {NAMESPACE} -l app.kubernetes.io/part-of=ftgo");
    println!("  curl -s {}/v1/catalog/node-services/ftgo-{NAMESPACE}-shop", consul.http_url());
    println!("  curl -s '{}/v1/kv/fabio/config/ftgo/{NAMESPACE}/shop?raw'", consul.http_url());
    println!("  psql '{}' -c '\\l'", postgres.url("postgres"));
    println!(
        "\nThere is no kubelet: no pod runs, so the system stays Ready=False (DeploymentsProgressing)\n\
         and Consul's checks stay critical. Everything the operator did until then is there to see.\n\
         Ctrl-C here, or `just cluster-down` from another terminal, stops everything."
    );

    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        status = operator.wait() => println!("\nthe operator exited ({status:?})"),
    }
    println!("\nstopping ...");
    if let Some(pid) = operator.id() {
        // SIGTERM: the operator finishes its reconciles and releases its Lease.
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let _ = tokio::time::timeout(Duration::from_secs(30), operator.wait()).await;
    }
    drop(fabio);
    drop((consul, nats, postgres, control_plane));
    println!("stopped");
    Ok(())
}

/// `examples/ftgo-system.yaml` with this cluster's addresses in place of the placeholders.
fn example_with_addresses(postgres: &Postgres, nats: &Nats, consul: &Consul) -> Result<String> {
    let example = include_str!("../../../examples/ftgo-system.yaml");
    let mut system: serde_yaml::Value = serde_yaml::from_str(example)?;
    let infrastructure = &mut system["spec"]["infrastructure"];
    infrastructure["postgres"]["host"] = "127.0.0.1".into();
    infrastructure["postgres"]["port"] = postgres.port().into();
    infrastructure["nats"]["url"] = nats.url().into();
    infrastructure["consul"]["url"] = consul.http_url().into();
    Ok(format!(
        "# examples/ftgo-system.yaml with the addresses of `just cluster-up`.\n{}",
        serde_yaml::to_string(&system)?
    ))
}
