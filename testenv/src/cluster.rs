//! A real one-node Kubernetes cluster that runs pods, contained in namespaces of its own.
//!
//! [`KubeControlPlane`](crate::KubeControlPlane) is the envtest approach: an API server and
//! nothing that runs pods. [`KubeCluster`] is the whole thing: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, containerd 2 with runc, the kubelet, kube-proxy
//! (iptables mode), a CNI bridge and CoreDNS, so a Deployment becomes pods that take ConfigMaps,
//! Secrets and volumes, reach each other by Service and DNS name, and are reachable from the host.
//!
//! # Containment
//!
//! Every process of the cluster runs in a network namespace and a mount namespace that the
//! cluster creates (`unshare`), and in a cgroup of its own:
//! - **Network.** The namespace has loopback and one veth pair, `ftgo0` (the node address
//!   [`NODE_IP`]) joined to `ftgo1`, which has no address and goes nowhere: a packet to a cluster
//!   address that no rule catches is routed there, finds no neighbour and dies inside the
//!   namespace. Nothing joins the namespace to the host's network; the host reaches the API server
//!   and Fabio, and pods reach infrastructure on the host's loopback, through [`PortForward`]s.
//!   Pod and service networks, iptables rules, the bridge and veths all live in the namespace and
//!   die with it.
//! - **Mounts.** `/run`, `/var/lib` and `/var/log` are private tmpfs mounts (containerd's shim
//!   sockets, the kubelet's device-plugin directory and pod logs go there), the pods' netns and
//!   overlay mounts are made in this mount namespace, and the kernel tunables the kubelet insists
//!   on are shown to it with the values it wants by bind-mounting files over them, so it never
//!   changes the host's (`protectKernelDefaults: true`).
//! - **Processes.** Everything, down to containerd's shims and the containers, is in the cgroup
//!   `ftgo-node-<pid>-<id>` (the kubelet's `cgroupRoot`). Teardown kills every process in it and
//!   removes it; a cluster whose owner died without tearing down is reaped by the next one.
//!
//! Two clusters therefore run side by side: same addresses inside, nothing shared outside.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::{Api, Client};
use tempfile::TempDir;

use crate::{
    host, images,
    kube::client_from,
    netns::{NetNamespace, PortForward},
    pki::Pki,
    process::{self, ServerProcess},
};

/// The node's address inside the cluster's network namespace. Every cluster uses the same
/// addresses: each has a namespace of its own.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The pods' network, one bridge on the node.
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The Services' cluster IPs.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The name of the one node.
pub const NODE_NAME: &str = "ftgo-node";
const API_PORT: u16 = 6443;
/// `images::pause()`'s reference, which containerd's CRI config pins as the sandbox image.
const SANDBOX_IMAGE: &str = "ftgo.local/pause:1";

/// The kernel tunables the kubelet requires (its `setupKernelTunables`), shown to it with these
/// values inside the mount namespace instead of being written to the host.
const KUBELET_TUNABLES: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// A running one-node cluster. Dropping it stops every process and removes every trace.
#[derive(Debug)]
pub struct KubeCluster {
    kubeconfig: PathBuf,
    containerd_socket: PathBuf,
    netns: NetNamespace,
    api: Option<PortForward>,
    forwards: Vec<PortForward>,
    // Stopped in this order by `Drop`: the node, then the control plane, then the namespaces.
    node: Vec<ServerProcess>,
    control_plane: Vec<ServerProcess>,
    holder: Option<ServerProcess>,
    cgroup: CgroupTree,
    dir: TempDir,
}

impl KubeCluster {
    /// Starts the cluster and waits until the node is `Ready` and the `default` service account
    /// exists (the controller-manager runs). The sandbox (pause) image is built if need be and
    /// imported before the kubelet starts.
    pub async fn start() -> Result<Self> {
        let started = Instant::now();
        CgroupTree::reap_orphans();
        let dir = host::workdir("node")?;
        let cgroup = CgroupTree::create(&format!(
            "ftgo-node-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))?;
        let mut cluster = Self {
            kubeconfig: dir.path().join("kubeconfig"),
            containerd_socket: dir.path().join("containerd.sock"),
            netns: NetNamespace::open(Path::new("/proc/self/ns/net"))?,
            api: None,
            forwards: Vec::new(),
            node: Vec::new(),
            control_plane: Vec::new(),
            holder: None,
            cgroup,
            dir,
        };
        let pause = images::pause()?;
        let pause_archive = images::build(&pause, &host::cache_dir("images")?)?;
        cluster
            .boot(&pause_archive)
            .await
            .with_context(|| format!("the one-node cluster did not start; logs in {}", cluster.dir.path().display()))?;
        tracing::info!(elapsed = ?started.elapsed(), "one-node cluster ready");
        Ok(cluster)
    }

    async fn boot(&mut self, pause_image: &Path) -> Result<()> {
        let d = self.dir.path().to_owned();
        let pki = Pki::generate(&d, &["127.0.0.1", &NODE_IP.to_string(), "10.96.0.1"])?;
        self.write_configs(&pki)?;
        self.holder = Some(self.spawn_holder()?);
        let holder_pid = self.holder.as_ref().map(ServerProcess::pid).unwrap_or_default();
        self.netns = NetNamespace::of_process(holder_pid)?;

        // The control plane, inside the namespace.
        let etcd = self.spawn_installed(
            "etcd",
            [
                &format!("--data-dir={}", d.join("etcd").display()),
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )?;
        self.control_plane.push(etcd);
        let kubelet_client = pki.client("kube-apiserver-kubelet-client", &["system:masters"])?;
        let (kubelet_client_cert, kubelet_client_key) =
            pki.write_client("apiserver-kubelet-client", &kubelet_client)?;
        let mut apiserver_args = pki.apiserver_flags();
        apiserver_args.extend(
            [
                "--etcd-servers=http://127.0.0.1:2379",
                "--bind-address=0.0.0.0",
                &format!("--advertise-address={NODE_IP}"),
                &format!("--secure-port={API_PORT}"),
                &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--service-node-port-range=30000-32767",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                &format!("--kubelet-client-certificate={}", kubelet_client_cert.display()),
                &format!("--kubelet-client-key={}", kubelet_client_key.display()),
                "--kubelet-preferred-address-types=InternalIP",
                &format!("--cert-dir={}", d.join("apiserver-certs").display()),
            ]
            .map(str::to_owned),
        );
        let apiserver = self.spawn_installed("kube-apiserver", apiserver_args)?;
        self.control_plane.push(apiserver);
        let api = PortForward::into_namespace(
            &self.netns,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::from((NODE_IP, API_PORT)),
        )
        .await?;
        let api_url = format!("https://{}", api.listen_addr());
        self.api = Some(api);
        std::fs::write(&self.kubeconfig, pki.kubeconfig(&api_url, "ftgo-admin", &["system:masters"])?)?;
        let client = client_from(&self.kubeconfig).await?;
        self.wait("kube-apiserver /readyz", Duration::from_secs(90), || async {
            let req = http::Request::get("/readyz").body(Vec::new()).expect("static request");
            client.request_text(req).await.is_ok_and(|body| body.trim() == "ok")
        })
        .await?;

        // Both talk to the API server, and check the requests to their own health ports, with one
        // kubeconfig; both run alone, so neither elects a leader.
        let component = |name: &str, port: u16, extra: Vec<String>| -> Vec<String> {
            let kubeconfig = d.join(format!("{name}.kubeconfig"));
            let mut args: Vec<String> = ["kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig"]
                .iter()
                .map(|flag| format!("--{flag}={}", kubeconfig.display()))
                .collect();
            args.extend(["--leader-elect=false".to_owned(), "--bind-address=127.0.0.1".to_owned()]);
            args.push(format!("--secure-port={port}"));
            args.extend(extra);
            args
        };
        let controller_manager = self.spawn_installed(
            "kube-controller-manager",
            component(
                "controller-manager",
                10257,
                vec![
                    format!("--service-account-private-key-file={}", pki.sa_private.display()),
                    format!("--root-ca-file={}", pki.ca_cert.display()),
                    "--use-service-account-credentials=true".to_owned(),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                ],
            ),
        )?;
        self.control_plane.push(controller_manager);
        let scheduler = self.spawn_installed("kube-scheduler", component("scheduler", 10259, Vec::new()))?;
        self.control_plane.push(scheduler);
        let coredns = self.spawn_installed("coredns", [&format!("-conf={}", d.join("Corefile").display())])?;
        self.control_plane.push(coredns);

        // The node: containerd first, with the sandbox image, then the kubelet and kube-proxy.
        let containerd =
            self.spawn_installed("containerd", [&format!("--config={}", d.join("containerd.toml").display())])?;
        self.node.push(containerd);
        let socket = self.containerd_socket.clone();
        self.wait("containerd", Duration::from_secs(30), || {
            let socket = socket.clone();
            async move { ctr(&socket, &["version"]).is_ok() }
        })
        .await?;
        self.import_image(pause_image, SANDBOX_IMAGE)?;
        let kubelet = self.spawn_installed(
            "kubelet",
            [
                &format!("--config={}", d.join("kubelet.yaml").display()),
                &format!("--kubeconfig={}", d.join("kubelet.kubeconfig").display()),
                &format!("--root-dir={}", d.join("kubelet").display()),
                &format!("--cert-dir={}", d.join("kubelet-pki").display()),
                &format!("--node-ip={NODE_IP}"),
                &format!("--hostname-override={NODE_NAME}"),
            ],
        )?;
        self.node.push(kubelet);
        let proxy =
            self.spawn_installed("kube-proxy", [&format!("--config={}", d.join("kube-proxy.yaml").display())])?;
        self.node.push(proxy);

        let nodes: Api<Node> = Api::all(client.clone());
        self.wait("the node to be Ready", Duration::from_secs(120), || async {
            nodes.get_opt(NODE_NAME).await.ok().flatten().is_some_and(|node| {
                node.status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        self.wait("the controller-manager (the default service account)", Duration::from_secs(60), || async {
            accounts.get_opt("default").await.ok().flatten().is_some()
        })
        .await?;
        Ok(())
    }

    /// Polls `ready` every 200 ms, failing early when a process of the cluster has died.
    async fn wait<F, Fut>(&mut self, what: &str, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            for process in self.control_plane.iter_mut().chain(self.node.iter_mut()).chain(self.holder.iter_mut()) {
                process.ensure_running()?;
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The process that holds the namespaces open: `unshare` makes them, a shell prepares them
    /// (mounts, links, routes), then it sleeps until the cluster stops.
    fn spawn_holder(&self) -> Result<ServerProcess> {
        let d = self.dir.path();
        let mut script = String::from("set -eu\n");
        script += "mount -t tmpfs -o mode=755 ftgo-run /run\n";
        script += "mount -t tmpfs -o mode=755 ftgo-var-lib /var/lib\n";
        script += "mount -t tmpfs -o mode=755 ftgo-var-log /var/log\n";
        for (tunable, _) in KUBELET_TUNABLES {
            script += &format!("mount --bind '{}' /proc/sys/{tunable}\n", d.join("sysctl").join(tunable).display());
        }
        script += "mount --make-rshared /\n";
        script += "ip link set lo up\n";
        script += "ip link add ftgo0 type veth peer name ftgo1\n";
        script += &format!("ip addr add {NODE_IP}/24 dev ftgo0\n");
        script += "ip link set ftgo0 up\nip link set ftgo1 up\n";
        // No gateway: the default route ends at ftgo1, which answers nobody's ARP.
        script += "ip route add default dev ftgo0\n";
        script += "echo 1 > /proc/sys/net/ipv4/ip_forward\n";
        script += &format!("touch '{}'\n", d.join("holder.ready").display());
        script += "exec sleep infinity\n";
        let mut cmd = self.cgroup.command();
        cmd.args(["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", &script]);
        let mut holder = ServerProcess::spawn("namespace holder", cmd, &d.join("holder.log"), libc::SIGKILL)?;
        let ready = d.join("holder.ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            holder.ensure_running()?;
            if Instant::now() > deadline {
                bail!("the namespaces were not ready after 10s:\n{}", holder.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(holder)
    }

    /// [`spawn`](Self::spawn) for an infrastructure binary found by [`host::binary`], named after it.
    fn spawn_installed<S: AsRef<std::ffi::OsStr>>(
        &self,
        binary: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Result<ServerProcess> {
        self.spawn(binary, &host::binary(binary)?, args)
    }

    /// Starts `binary` inside the cluster's namespaces and cgroup, logging to `<name>.log`.
    fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        name: &str,
        binary: &Path,
        args: impl IntoIterator<Item = S>,
    ) -> Result<ServerProcess> {
        let holder = self.holder.as_ref().context("the namespaces are not there")?;
        let mut cmd = self.cgroup.command();
        cmd.arg("nsenter")
            .arg(format!("--target={}", holder.pid()))
            .args(["--net", "--mount", "--"])
            .arg(binary)
            .args(args)
            .current_dir(self.dir.path());
        ServerProcess::spawn(name, cmd, &self.dir.path().join(format!("{name}.log")), libc::SIGTERM)
    }

    /// Imports an image archive (an OCI layout tar with one image, tagged) into the node's
    /// containerd under `reference`, where the kubelet finds it: pods that name it with
    /// `imagePullPolicy: IfNotPresent` or `Never` never reach for a registry.
    pub fn import_image(&self, archive: &Path, reference: &str) -> Result<()> {
        let base = reference.rsplit_once(':').map_or(reference, |(base, _)| base);
        let archive = archive.to_str().context("image archive path is not UTF-8")?;
        ctr(&self.containerd_socket, &["-n", "k8s.io", "images", "import", "--base-name", base, archive])?;
        let listed = ctr(&self.containerd_socket, &["-n", "k8s.io", "images", "list", "-q"])?;
        if !listed.lines().any(|line| line.trim() == reference) {
            bail!("importing {archive} did not make {reference} (containerd lists:\n{listed})");
        }
        Ok(())
    }

    /// Listens on the host at `listen` (port 0: a free one) and forwards every connection to
    /// `target` inside the cluster's network: a NodePort at [`NODE_IP`], say.
    pub async fn forward_into(&mut self, listen: SocketAddr, target: SocketAddr) -> Result<SocketAddr> {
        let forward = PortForward::into_namespace(&self.netns, listen, target).await?;
        let addr = forward.listen_addr();
        self.forwards.push(forward);
        Ok(addr)
    }

    /// Makes `host_port` on the host's loopback reachable from the cluster at
    /// `NODE_IP:host_port`: how pods reach infrastructure that runs on the host.
    pub fn expose_host_port(&mut self, host_port: u16) -> Result<SocketAddrV4> {
        let inside = SocketAddrV4::new(NODE_IP, host_port);
        let forward = PortForward::out_of_namespace(
            &self.netns,
            SocketAddr::V4(inside),
            SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)),
        )?;
        self.forwards.push(forward);
        Ok(inside)
    }

    /// Starts `binary` as a process of the node (in its network and mount namespaces, outside
    /// Kubernetes), as infrastructure that runs next to a cluster does. It stops with the cluster.
    pub fn run_on_node(&mut self, name: &str, binary: &Path, args: &[&str]) -> Result<()> {
        let process = self.spawn(name, binary, args)?;
        self.node.push(process);
        Ok(())
    }

    /// The cluster's network namespace.
    pub fn network(&self) -> &NetNamespace {
        &self.netns
    }

    /// A client authenticated as cluster admin (`system:masters`).
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// The admin kubeconfig for the host, for `KUBECONFIG=... kubectl` and `helm`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where the API server is reachable from the host.
    pub fn api_url(&self) -> String {
        self.api.as_ref().map(|api| format!("https://{}", api.listen_addr())).unwrap_or_default()
    }

    /// The cluster's working directory: configuration, data and every component's log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a namespace with a unique name starting with `prefix`: one per test.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        crate::kube::create_namespace(self.client().await?, prefix).await
    }

    /// The last lines of a component's log (`kubelet`, `containerd`, ...), for failure messages.
    pub fn log_tail(&self, component: &str) -> String {
        process::log_tail(&self.dir.path().join(format!("{component}.log")), 40)
    }

    /// Writes every component's configuration into the working directory.
    fn write_configs(&self, pki: &Pki) -> Result<()> {
        let d = self.dir.path();
        let server = format!("https://{NODE_IP}:{API_PORT}");
        for (file, user, groups) in [
            ("controller-manager.kubeconfig", "system:kube-controller-manager", &[][..]),
            ("scheduler.kubeconfig", "system:kube-scheduler", &[]),
            ("kube-proxy.kubeconfig", "system:kube-proxy", &[]),
            ("kubelet.kubeconfig", "system:node:ftgo-node", &["system:nodes"][..]),
            // CoreDNS reads Services, EndpointSlices, Namespaces and Pods cluster-wide.
            ("coredns.kubeconfig", "ftgo-coredns", &["system:masters"]),
        ] {
            std::fs::write(d.join(file), pki.kubeconfig(&server, user, groups)?)?;
        }
        for (tunable, value) in KUBELET_TUNABLES {
            let path = d.join("sysctl").join(tunable);
            std::fs::create_dir_all(path.parent().expect("a tunable has a directory"))?;
            std::fs::write(path, format!("{value}\n"))?;
        }
        for sub in ["etcd", "kubelet", "kubelet-pki", "containerd", "cni/net.d", "cni/ipam", "cni/cache", "runc"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        std::fs::write(d.join("resolv.conf"), "")?;
        let containerd = d.join("containerd");
        std::fs::write(
            d.join("containerd.toml"),
            format!(
                r#"version = 4
root = "{root}"
state = "{state}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[plugins.'io.containerd.server.v1.grpc']
  address = "{socket}"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "{socket}.ttrpc"

[plugins.'io.containerd.server.v1.debug']
  address = ""

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox}"

[plugins.'io.containerd.cri.v1.runtime']
  # The machine lacks CAP_SYS_RESOURCE: never lower a container's OOM score below ours.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}/net.d"

  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false
"#,
                root = containerd.join("root").display(),
                state = containerd.join("state").display(),
                socket = self.containerd_socket.display(),
                sandbox = SANDBOX_IMAGE,
                cni = d.join("cni").display(),
                runc = host::binary("runc")?.display(),
                runc_root = d.join("runc").display(),
            ),
        )?;
        std::fs::write(
            d.join("cni/net.d/10-ftgo.conflist"),
            serde_json::to_string_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "ftgo",
                "plugins": [{
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    // A pod that reaches itself through its own Service.
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": d.join("cni/ipam"),
                    },
                }, {"type": "portmap", "capabilities": {"portMappings": true}}],
            }))?,
        )?;
        std::fs::write(
            d.join("kubelet.yaml"),
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines run cgroup v1 and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
cgroupsPerQOS: true
# The machine lacks CAP_SYS_RESOURCE, so the kubelet cannot lower its own OOM score.
oomScoreAdj: 0
# The tunables are shown with the right values (see the module docs); never write the host's.
protectKernelDefaults: true
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: ["{node_ip}"]
resolvConf: "{resolv}"
serializeImagePulls: false
# The disk is shared with the rest of the machine: evict only when it is really full.
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
                cgroup = self.cgroup.name,
                socket = self.containerd_socket.display(),
                ca = pki.ca_cert.display(),
                node_ip = NODE_IP,
                resolv = d.join("resolv.conf").display(),
            ),
        )?;
        std::fs::write(
            d.join("kube-proxy.yaml"),
            format!(
                r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: "{kubeconfig}"
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_CIDR}
bindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Zero leaves the conntrack table and timeouts alone: they are the host's, not the namespace's.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
                kubeconfig = d.join("kube-proxy.kubeconfig").display(),
            ),
        )?;
        std::fs::write(
            d.join("Corefile"),
            format!(
                r#"cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
# Nothing outside the cluster resolves: the cluster has no way out.
.:53 {{
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"#,
                kubeconfig = d.join("coredns.kubeconfig").display(),
            ),
        )?;
        Ok(())
    }

    /// Stops every process, kills whatever is left in the cgroup (shims and containers) and
    /// removes the cgroups. The namespaces, with every mount, link, route and rule in them,
    /// disappear with their last process.
    fn teardown(&mut self) {
        // The kubelet first, so nothing restarts the containers about to be killed.
        for process in self.node.iter_mut().rev() {
            process.stop();
        }
        for process in self.control_plane.iter_mut().rev() {
            process.stop();
        }
        self.forwards.clear();
        self.api = None;
        self.cgroup.kill_all(Duration::from_secs(20));
        if let Some(mut holder) = self.holder.take() {
            holder.stop();
        }
        self.cgroup.kill_all(Duration::from_secs(5));
        self.cgroup.remove();
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs `ctr` against the node's containerd; fails with its output.
fn ctr(socket: &Path, args: &[&str]) -> Result<String> {
    let output =
        Command::new(host::binary("ctr")?).arg("--address").arg(socket).args(args).output().context("running ctr")?;
    if !output.status.success() {
        bail!("ctr {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The cgroup `/<name>` in every hierarchy the host has mounted: where every process of the
/// cluster lives, and the kubelet's `cgroupRoot`.
#[derive(Debug)]
struct CgroupTree {
    name: String,
    /// `<hierarchy>/<name>` for every mounted hierarchy.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of `<name>/node` in the hierarchy used to find processes.
    procs: PathBuf,
}

impl CgroupTree {
    fn create(name: &str) -> Result<Self> {
        let hierarchies = hierarchies()?;
        let tracking = hierarchies
            .iter()
            .find(|h| h.ends_with("pids"))
            .or_else(|| hierarchies.iter().find(|h| h.ends_with("unified") || h.as_os_str() == "/sys/fs/cgroup"))
            .context("no pids cgroup hierarchy is mounted")?
            .clone();
        let mut dirs = Vec::new();
        for hierarchy in &hierarchies {
            let dir = hierarchy.join(name);
            std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
            dirs.push(dir.clone());
            // cgroup v1's cpuset refuses tasks until a group has CPUs and memory nodes.
            if hierarchy.ends_with("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = std::fs::read_to_string(hierarchy.join(file))?;
                    std::fs::write(dir.join(file), value.trim())?;
                }
            }
        }
        let node = tracking.join(name).join("node");
        std::fs::create_dir(&node)?;
        Ok(Self { name: name.to_owned(), dirs, procs: node.join("cgroup.procs") })
    }

    /// A `sh` command line that moves itself into the cgroup, then `exec`s the arguments added
    /// to it: every process starts inside, so all it forks (shims, containers) is found later.
    fn command(&self) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", r#"echo $$ > "$0" && exec "$@""#]).arg(&self.procs);
        cmd.env("PATH", node_path());
        cmd
    }

    /// Every process anywhere in the tree, in any hierarchy.
    fn pids(&self) -> Vec<libc::pid_t> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            for procs in walk_files(dir, "cgroup.procs") {
                let text = std::fs::read_to_string(procs).unwrap_or_default();
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<libc::pid_t>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the tree until none is left or `timeout` passes.
    fn kill_all(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in &pids {
                // SAFETY: plain syscall; the pid is in our cgroup, so it is ours to kill.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                tracing::warn!(?pids, cgroup = %self.name, "processes survived SIGKILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes every cgroup in the tree, deepest first (a cgroup is removed with `rmdir`; its
    /// files go with it).
    fn remove(&self) {
        for dir in &self.dirs {
            let mut subdirs = walk_dirs(dir);
            subdirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for sub in subdirs {
                let deadline = Instant::now() + Duration::from_secs(5);
                // A cgroup whose last process just died can stay busy for a moment.
                while let Err(e) = std::fs::remove_dir(&sub) {
                    if e.kind() == std::io::ErrorKind::NotFound || Instant::now() > deadline {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(cgroup = %sub.display(), error = %e, "cannot remove cgroup");
                        }
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Removes the trees of clusters whose owning process is gone (killed without a teardown):
    /// their shims and containers, then their cgroups.
    fn reap_orphans() {
        let Ok(hierarchies) = hierarchies() else { return };
        let mut names = std::collections::BTreeSet::new();
        for hierarchy in &hierarchies {
            for entry in std::fs::read_dir(hierarchy).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(owner) = name.strip_prefix("ftgo-node-").and_then(|rest| rest.split('-').next()) else {
                    continue;
                };
                if owner.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    names.insert(name);
                }
            }
        }
        for name in names {
            tracing::warn!(cgroup = %name, "removing what a cluster whose owner died left behind");
            let dirs: Vec<PathBuf> = hierarchies.iter().map(|h| h.join(&name)).filter(|d| d.exists()).collect();
            let tree = Self { name, dirs, procs: PathBuf::new() };
            tree.kill_all(Duration::from_secs(10));
            tree.remove();
        }
    }
}

/// The cgroup hierarchies mounted under `/sys/fs/cgroup`.
fn hierarchies() -> Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        let fstype = fields.get(sep + 1).copied().unwrap_or_default();
        if (fstype == "cgroup" || fstype == "cgroup2") && fields[4].starts_with("/sys/fs/cgroup") {
            found.push(PathBuf::from(fields[4]));
        }
    }
    if found.is_empty() {
        bail!("no cgroup hierarchy is mounted under /sys/fs/cgroup");
    }
    Ok(found)
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let entries: Vec<PathBuf> = std::fs::read_dir(&out[i])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        out.extend(entries);
        i += 1;
    }
    out
}

fn walk_files(root: &Path, name: &str) -> Vec<PathBuf> {
    walk_dirs(root).into_iter().map(|d| d.join(name)).filter(|f| f.exists()).collect()
}

/// `PATH` for the node's processes: the cached infrastructure binaries first (containerd finds
/// its shim there), then the system's (`runc`, `iptables`, `ip`, `mount`).
fn node_path() -> String {
    let mut path = std::env::var("FTGO_CACHE")
        .map(|c| format!("{c}/bin"))
        .unwrap_or_else(|_| format!("{}/.cache/ftgo/bin", std::env::var("HOME").unwrap_or_default()));
    path += ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    path
}
