//! A private Kubernetes control plane: etcd and kube-apiserver, no kubelet (the envtest approach).
//!
//! Everything the API server needs is generated per instance: a CA, a serving certificate for
//! 127.0.0.1, a service-account signing key, and an admin client certificate in `system:masters`.
//! The admin credential is written as a kubeconfig, so `kubectl` can watch what a test does.
//! Without a kubelet or controller-manager nothing runs pods and nothing updates Deployment status:
//! tests play those parts themselves.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Result;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use tempfile::TempDir;

use crate::{
    host,
    pki::Pki,
    process::{self, ServerProcess},
};

/// The service network the API server allocates cluster IPs from.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

#[derive(Debug)]
pub struct KubeControlPlane {
    api_port: u16,
    kubeconfig: PathBuf,
    // Stopped in field order: the API server before the etcd it writes to.
    apiserver: ServerProcess,
    etcd: ServerProcess,
    _dir: TempDir,
}

impl KubeControlPlane {
    /// Starts etcd and kube-apiserver; ready when `/readyz` answers (RBAC bootstrapped, CRD
    /// controllers running).
    pub async fn start() -> Result<Self> {
        process::retry_on_new_ports("kube control plane", Self::start_once).await
    }

    async fn start_once() -> Result<Self> {
        let dir = host::workdir("kube")?;
        let pki = Pki::generate(dir.path(), &["127.0.0.1", "10.0.0.1"])?;

        let (etcd_port, peer_port, api_port) = (process::free_port()?, process::free_port()?, process::free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd_cmd = Command::new(host::binary("etcd")?);
        etcd_cmd
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args([
                "--name=default",
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync",
                "--log-level=warn",
            ])
            .current_dir(dir.path());
        let mut etcd = ServerProcess::spawn("etcd", etcd_cmd, &dir.path().join("etcd.log"), libc::SIGTERM)?;
        let http = reqwest::Client::new();
        let etcd_health = format!("{etcd_url}/health");
        etcd.wait_ready(Duration::from_secs(30), || async {
            match http.get(&etcd_health).send().await {
                Ok(r) => r.text().await.is_ok_and(|body| body.contains(r#""health":"true""#)),
                Err(_) => false,
            }
        })
        .await?;

        let mut api_cmd = Command::new(host::binary("kube-apiserver")?);
        api_cmd
            .args(pki.apiserver_flags())
            .args([
                &format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                // No controller-manager creates `default` service accounts, so the admission
                // plugin that requires them would refuse every pod.
                "--disable-admission-plugins=ServiceAccount",
                // There is no network for the `kubernetes` Service's endpoints to point into.
                "--endpoint-reconciler-type=none",
                "--cert-dir",
            ])
            .arg(dir.path().join("apiserver-certs"))
            .current_dir(dir.path());
        let mut apiserver =
            ServerProcess::spawn("kube-apiserver", api_cmd, &dir.path().join("kube-apiserver.log"), libc::SIGTERM)?;

        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            pki.kubeconfig(&format!("https://127.0.0.1:{api_port}"), "ftgo-admin", &["system:masters"])?,
        )?;
        let client = client_from(&kubeconfig).await?;
        apiserver
            .wait_ready(Duration::from_secs(90), || async {
                let req = http::Request::get("/readyz").body(Vec::new()).expect("static request");
                client.request_text(req).await.is_ok_and(|body| body.trim() == "ok")
            })
            .await?;
        Ok(Self { api_port, kubeconfig, apiserver, etcd, _dir: dir })
    }

    /// A client authenticated as cluster admin (`system:masters`).
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// The admin kubeconfig, for `KUBECONFIG=... kubectl`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// Creates a namespace with a unique name starting with `prefix`: one per test.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        create_namespace(self.client().await?, prefix).await
    }

    pub fn apiserver(&mut self) -> &mut ServerProcess {
        &mut self.apiserver
    }

    pub fn etcd(&mut self) -> &mut ServerProcess {
        &mut self.etcd
    }
}

/// Creates a namespace named `prefix` plus a random suffix, and returns its name.
pub(crate) async fn create_namespace(client: Client, prefix: &str) -> Result<String> {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns =
        Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client).create(&PostParams::default(), &ns).await?;
    Ok(name)
}

pub(crate) async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}
