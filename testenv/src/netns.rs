//! Crossing between the host's network namespace and a private one, without routing anything.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole life.
//! So a thread that enters the private namespace (`setns`) can create a listening or connected
//! socket there and hand it back; the rest of the program uses it like any other. A
//! [`PortForward`] joins a listener in one namespace to a destination in the other, one TCP
//! connection at a time: the host reaches the cluster's API server and Fabio this way, and pods
//! reach infrastructure that listens on the host's loopback. No veth pair, route or NAT rule
//! joins the two namespaces, so no packet of the cluster's can ever reach the host's network.

use std::{
    fs::File,
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    sync::Arc,
};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

/// A network namespace other than ours, held open by a file descriptor.
#[derive(Debug, Clone)]
pub struct NetNamespace {
    file: Arc<File>,
}

impl NetNamespace {
    /// The network namespace process `pid` is in.
    pub fn of_process(pid: u32) -> Result<Self> {
        Self::open(Path::new(&format!("/proc/{pid}/ns/net")))
    }

    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file: Arc::new(file) })
    }

    /// Runs `f` on a new thread that has entered this namespace. Anything else the thread does
    /// stays in the namespace, which is why it is a fresh thread that ends with `f`.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a descriptor we own; it only changes this thread.
                    if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("thread in the network namespace panicked")))
        })
    }

    /// A TCP connection to `addr` as seen from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let ns = self.clone();
        let stream = tokio::task::spawn_blocking(move || {
            ns.run(|| {
                let stream = TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })
        })
        .await
        .map_err(io::Error::other)??;
        tokio::net::TcpStream::from_std(stream)
    }

    /// A TCP listener on `addr` inside the namespace.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let listener = self.run(|| {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })?;
        tokio::net::TcpListener::from_std(listener)
    }
}

/// Accepts TCP connections on one side and joins each to a new connection on the other, until
/// dropped.
#[derive(Debug)]
pub struct PortForward {
    listen: SocketAddr,
    task: JoinHandle<()>,
}

impl PortForward {
    /// Host → namespace: listens on the host at `listen` (port 0 picks a free one) and connects
    /// to `target` inside `ns`.
    pub async fn into_namespace(ns: &NetNamespace, listen: SocketAddr, target: SocketAddr) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        let ns = ns.clone();
        Self::serve(listener, target, move |addr| {
            let ns = ns.clone();
            async move { ns.connect(addr).await }
        })
    }

    /// Namespace → host: listens at `listen` inside `ns` and connects to `target` on the host.
    pub fn out_of_namespace(ns: &NetNamespace, listen: SocketAddr, target: SocketAddr) -> Result<Self> {
        let listener = ns.bind(listen).with_context(|| format!("listening on {listen} in the cluster's network"))?;
        Self::serve(listener, target, tokio::net::TcpStream::connect)
    }

    fn serve<F, Fut>(listener: tokio::net::TcpListener, target: SocketAddr, connect: F) -> Result<Self>
    where
        F: Fn(SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<tokio::net::TcpStream>> + Send,
    {
        let listen = listener.local_addr()?;
        let connect = Arc::new(connect);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    // Out of descriptors, say: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let connect = connect.clone();
                tokio::spawn(async move {
                    match connect(target).await {
                        Ok(mut outbound) => {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => tracing::debug!(%target, error = %e, "port forward: cannot connect"),
                    }
                });
            }
        });
        Ok(Self { listen, task })
    }

    /// Where the forward listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}
