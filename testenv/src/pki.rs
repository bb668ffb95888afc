//! The certificates of a private Kubernetes cluster, made fresh for every instance: one CA, the
//! API server's serving certificate, the service-account signing key, and a client certificate
//! (written as a kubeconfig) for every identity that talks to the API server.
//!
//! The API server maps a client certificate's CN to the user name and each O to a group, so the
//! bootstrap RBAC roles apply as in any cluster: `system:kube-scheduler`, `system:kube-proxy`,
//! `system:node:<name>` in `system:nodes`, and `system:masters` for the administrator.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::{Engine, prelude::BASE64_STANDARD};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// One cluster's CA and the files every component is started with.
pub(crate) struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    pub ca_cert: PathBuf,
    ca_pem: String,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_public: PathBuf,
    pub sa_private: PathBuf,
}

/// A client certificate and its key, PEM-encoded.
pub(crate) struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// A new CA under `dir/pki`, and an API server certificate valid for `server_names` (host
    /// names and IP addresses) besides the `kubernetes.default` names every pod uses.
    pub fn generate(dir: &Path, server_names: &[&str]) -> Result<Self> {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "ftgo-testenv-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = Issuer::new(ca_params, ca_key);

        let mut names: Vec<String> = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
            .into_iter()
            .chain(["kubernetes.default.svc.cluster.local"])
            .chain(server_names.iter().copied())
            .map(str::to_owned)
            .collect();
        names.dedup();
        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(names)?;
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let sa_key = KeyPair::generate()?;
        let write = |name: &str, content: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        Ok(Self {
            ca_cert: write("ca.crt", &ca_cert.pem())?,
            ca_pem: ca_cert.pem(),
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            sa_public: write("sa.pub", &sa_key.public_key_pem())?,
            sa_private: write("sa.key", &sa_key.serialize_pem())?,
            ca,
            dir,
        })
    }

    /// The API server's flags for its serving certificate, the client CA and the service-account
    /// keys: the same in every cluster.
    pub fn apiserver_flags(&self) -> Vec<String> {
        vec![
            format!("--tls-cert-file={}", self.serving_cert.display()),
            format!("--tls-private-key-file={}", self.serving_key.display()),
            format!("--client-ca-file={}", self.ca_cert.display()),
            format!("--service-account-key-file={}", self.sa_public.display()),
            format!("--service-account-signing-key-file={}", self.sa_private.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        ]
    }

    /// A client certificate for user `user` in `groups`.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<ClientCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params.distinguished_name.push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(ClientCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `client`'s certificate and key as `<name>.crt` and `<name>.key`, for components
    /// that take files rather than a kubeconfig (the API server's kubelet client).
    pub fn write_client(&self, name: &str, client: &ClientCert) -> Result<(PathBuf, PathBuf)> {
        let (cert, key) = (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")));
        std::fs::write(&cert, &client.cert_pem)?;
        std::fs::write(&key, &client.key_pem)?;
        Ok((cert, key))
    }

    /// A kubeconfig that reaches the API server at `server` as `user` in `groups`.
    pub fn kubeconfig(&self, server: &str, user: &str, groups: &[&str]) -> Result<String> {
        let client = self.client(user, groups)?;
        let encode = |pem: &str| BASE64_STANDARD.encode(pem);
        Ok(serde_json::to_string_pretty(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "ftgo", "cluster": {
                "server": server,
                "certificate-authority-data": encode(&self.ca_pem),
            }}],
            "users": [{"name": user, "user": {
                "client-certificate-data": encode(&client.cert_pem),
                "client-key-data": encode(&client.key_pem),
            }}],
            "contexts": [{"name": "ftgo", "context": {"cluster": "ftgo", "user": user}}],
            "current-context": "ftgo",
        }))?)
    }
}
