//! `ftgo-cluster`: a real one-node Kubernetes cluster on this machine, in the foreground
//! (`just cluster-up`; `just cluster-down` from another terminal stops it), with FTGO's images
//! loaded, so the operator's chart and an `FtgoSystem` can be tried as on any cluster.
//!
//! `up` builds the images that are missing or stale (every workspace binary the cluster deploys,
//! and the Managed infrastructure's: Postgres, NATS, Consul, Fabio), starts the cluster (see
//! `ftgo_testenv::cluster` for what runs and how it is contained), imports the images into the
//! node's containerd, and forwards `127.0.0.1:8080` (Fabio's HTTP NodePort, 30080, where the API
//! is) and `127.0.0.1:9998` (Fabio's UI, 30998) into the cluster, as `kind-config.yaml` does for
//! kind. It writes the admin kubeconfig to `.ftgo/cluster/kubeconfig`.
//!
//! `images` only builds the image archives, into `~/.cache/ftgo/images`.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `FTGO_CLUSTER_HTTP` | `127.0.0.1:8080` | where the host reaches Fabio's HTTP listener |
//! | `FTGO_CLUSTER_FABIO_UI` | `127.0.0.1:9998` | where the host reaches Fabio's UI |
//! | `FTGO_STATE_DIR` | `.ftgo` | where the pid file and the kubeconfig go (under `cluster/`) |

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use ftgo_testenv::{
    KubeCluster,
    cluster::NODE_IP,
    foreground::{Foreground, step, until_stopped},
    host, images,
};

/// The tag the images are built with: what the operator deploys by default (`spec.version`).
const TAG: &str = "0.1.0";
/// Fabio's NodePorts in Managed mode (`spec.fabio.httpNodePort`, `spec.fabio.adminNodePort`).
const FABIO_HTTP_NODE_PORT: u16 = 30080;
const FABIO_UI_NODE_PORT: u16 = 30998;

const USAGE: &str = "usage: ftgo-cluster up | down | images";
const HELP: &str = "Runs a real one-node Kubernetes cluster on this machine, with FTGO's images loaded.

  up      build the missing or stale images, start the cluster in the foreground, import the images
          and forward 127.0.0.1:8080 to Fabio (the API) and 127.0.0.1:9998 to Fabio's UI; the admin
          kubeconfig is written to .ftgo/cluster/kubeconfig
  down    stop what `up` started and remove every trace of it
  images  only build the image archives, into ~/.cache/ftgo/images

`up` reads FTGO_CLUSTER_HTTP and FTGO_CLUSTER_FABIO_UI (the forwarded addresses) and FTGO_STATE_DIR.";

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
        Some("images") => build_images().map(|_| ()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}\n\n{HELP}");
            Ok(())
        }
        _ => bail!("{USAGE} (`ftgo-cluster --help` says more)"),
    }
}

/// Where `up` keeps its pid file and the kubeconfig.
fn state_dir() -> PathBuf {
    ftgo_testenv::foreground::state_dir().join("cluster")
}

/// `up` runs in the foreground; `down` finds it through the pid file.
fn foreground() -> Foreground {
    let stop_command = "just cluster-down";
    Foreground { pid_file: state_dir().join("pid"), program: "ftgo-cluster", name: "the local cluster", stop_command }
}

fn address(variable: &str, default: &str) -> Result<SocketAddr> {
    let value = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    value.parse().with_context(|| format!("{variable}={value:?} is not an address such as {default}"))
}

/// Every image the cluster runs: the workspace binaries next to this one (built by `cargo build
/// --bins`), and the Managed infrastructure's, from the binaries `just infra` installed.
fn image_specs() -> Result<Vec<images::ImageSpec>> {
    let target = std::env::current_exe()?.parent().context("the binary has a directory")?.to_owned();
    let mut specs = Vec::new();
    for binary in ftgo_catalog::image_binaries() {
        let path = target.join(binary);
        if !path.exists() {
            bail!("{} is missing: run `cargo build --bins` first (`just cluster-up` does)", path.display());
        }
        specs.push(images::workspace_binary(binary, &path, TAG));
    }
    specs.extend(images::infrastructure()?);
    Ok(specs)
}

fn build_images() -> Result<Vec<(images::ImageSpec, PathBuf)>> {
    let specs = image_specs()?;
    let archives = images::build_all(&specs, &host::cache_dir("images")?)?;
    Ok(specs.into_iter().zip(archives).collect())
}

async fn up() -> Result<()> {
    let dir = std::path::absolute(state_dir())?;
    std::fs::create_dir_all(&dir)?;
    let http = address("FTGO_CLUSTER_HTTP", "127.0.0.1:8080")?;
    let fabio_ui = address("FTGO_CLUSTER_FABIO_UI", "127.0.0.1:9998")?;
    foreground().run(run_until_stopped(&dir, http, fabio_ui)).await
}

async fn run_until_stopped(dir: &Path, http: SocketAddr, fabio_ui: SocketAddr) -> Result<()> {
    let started = Instant::now();
    println!("building the images (the first time takes a minute) ...");
    let built = tokio::task::spawn_blocking(build_images).await??;
    println!("starting the one-node cluster ...");
    let mut cluster = step("kubernetes node", KubeCluster::start()).await?;
    let imported = Instant::now();
    for (spec, archive) in &built {
        cluster.import_image(archive, &spec.reference)?;
    }
    println!("  {} images imported in {:.1}s", built.len(), imported.elapsed().as_secs_f32());
    cluster
        .forward_into(http, SocketAddr::from((NODE_IP, FABIO_HTTP_NODE_PORT)))
        .await
        .with_context(|| format!("{http} is in use; set FTGO_CLUSTER_HTTP to another address"))?;
    cluster
        .forward_into(fabio_ui, SocketAddr::from((NODE_IP, FABIO_UI_NODE_PORT)))
        .await
        .with_context(|| format!("{fabio_ui} is in use; set FTGO_CLUSTER_FABIO_UI to another address"))?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(cluster.kubeconfig_path(), &kubeconfig)?;

    println!("\nthe one-node cluster is up ({:.1}s):", started.elapsed().as_secs_f32());
    println!("  kube-apiserver  {}", cluster.api_url());
    println!("  FTGO's API      http://{http}   (Fabio's NodePort {FABIO_HTTP_NODE_PORT}, once a system runs)");
    println!("  Fabio's UI      http://{fabio_ui}");
    println!("  node logs       {}", cluster.dir().display());
    println!("\nIn another terminal:\n");
    if let Ok(bin) = host::cache_dir("bin") {
        println!("  export PATH={}:$PATH   # kubectl and helm, as `just infra` installed them", bin.display());
    }
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  helm install ftgo-operator charts/ftgo-operator -n ftgo-system --create-namespace --wait");
    println!("  kubectl create namespace ftgo");
    println!("  kubectl apply -f examples/ftgo-system-local.yaml");
    println!("  kubectl wait --for=condition=Ready ftgo/shop -n ftgo --timeout=10m");
    println!("  just demo");
    println!("\nCtrl-C here, or `just cluster-down` from another terminal, stops the cluster and removes every trace.");

    until_stopped().await?;
    println!("\nstopping ...");
    drop(cluster);
    let _ = std::fs::remove_file(&kubeconfig);
    println!("stopped");
    Ok(())
}
