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

use anyhow::{Context, Result};
use base64::{Engine, prelude::BASE64_STANDARD};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::{
    host,
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
        let pki = Pki::generate(dir.path())?;

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
            .args([
                &format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--tls-cert-file={}", pki.serving_cert.display()),
                &format!("--tls-private-key-file={}", pki.serving_key.display()),
                &format!("--client-ca-file={}", pki.ca_cert.display()),
                &format!("--service-account-key-file={}", pki.sa_public.display()),
                &format!("--service-account-signing-key-file={}", pki.sa_private.display()),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
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
        std::fs::write(&kubeconfig, pki.kubeconfig(api_port)?)?;
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
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let ns =
            Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
        Api::<Namespace>::all(self.client().await?).create(&PostParams::default(), &ns).await?;
        Ok(name)
    }

    pub fn apiserver(&mut self) -> &mut ServerProcess {
        &mut self.apiserver
    }

    pub fn etcd(&mut self) -> &mut ServerProcess {
        &mut self.etcd
    }
}

async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The certificates and keys of one control plane, as files in its working directory.
struct Pki {
    ca_cert: PathBuf,
    ca_pem: String,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_public: PathBuf,
    sa_private: PathBuf,
    admin_cert_pem: String,
    admin_key_pem: String,
}

impl Pki {
    fn generate(dir: &Path) -> Result<Self> {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir)?;
        let write = |name: &str, content: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "ftgo-testenv-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
            "10.0.0.1".to_owned(),
        ])?;
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        // The API server maps a client certificate's CN to the user and each O to a group.
        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name.push(DnType::CommonName, "ftgo-admin");
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        let sa_key = KeyPair::generate()?;
        Ok(Self {
            ca_cert: write("ca.crt", &ca_cert.pem())?,
            ca_pem: ca_cert.pem(),
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            sa_public: write("sa.pub", &sa_key.public_key_pem())?,
            sa_private: write("sa.key", &sa_key.serialize_pem())?,
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
        })
    }

    fn kubeconfig(&self, api_port: u16) -> Result<String> {
        let encode = |pem: &str| BASE64_STANDARD.encode(pem);
        Ok(serde_json::to_string_pretty(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "ftgo", "cluster": {
                "server": format!("https://127.0.0.1:{api_port}"),
                "certificate-authority-data": encode(&self.ca_pem),
            }}],
            "users": [{"name": "ftgo-admin", "user": {
                "client-certificate-data": encode(&self.admin_cert_pem),
                "client-key-data": encode(&self.admin_key_pem),
            }}],
            "contexts": [{"name": "ftgo", "context": {"cluster": "ftgo", "user": "ftgo-admin"}}],
            "current-context": "ftgo",
        }))?)
    }
}
