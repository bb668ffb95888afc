//! Child processes that cannot outlive the test (or `just up`) that started them.
//!
//! Two mechanisms make sure no server is leaked:
//! - [`ServerProcess`] stops its child on drop (a graceful signal, then `SIGKILL`), which also runs
//!   while a panicking test unwinds;
//! - every child is started with `PR_SET_PDEATHSIG = SIGKILL`, so even when the test binary itself
//!   is killed or aborts, the kernel kills its servers. The death signal fires when the *thread*
//!   that forked the child exits, so all children are forked from one spawner thread that lives as
//!   long as the process (a tokio blocking thread, for instance, may exit at any time).

use std::{
    collections::HashSet,
    fs::File,
    io,
    net::{Ipv4Addr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

/// A running server process, stopped when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    log: PathBuf,
    stop_signal: libc::c_int,
    stopped: bool,
}

impl ServerProcess {
    /// Starts `cmd` with stdout and stderr appended to `log`. `stop_signal` is the signal that asks
    /// this particular server for a fast, clean shutdown (`SIGINT` for Postgres, `SIGTERM` for most).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, stop_signal: libc::c_int) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let child = spawn_tied_to_this_process(cmd).with_context(|| format!("starting {name}"))?;
        tracing::debug!(server = name, pid = child.id(), log = %log.display(), "started");
        Ok(Self { name: name.to_owned(), child, log: log.to_owned(), stop_signal, stopped: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines the server wrote, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 25)
    }

    /// Fails, quoting the server's log, if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status}); its log ends with:\n{}", self.name, self.log_tail()),
        }
    }

    /// Polls `ready` until it answers `true`, while checking that the process is still alive.
    /// Fails with the server's log when the process dies or `timeout` passes.
    pub async fn wait_ready<F, Fut>(&mut self, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if ready().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} was not ready after {timeout:?}; its log ends with:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`wait_ready`](Self::wait_ready) for a server with an HTTP health endpoint: ready once a
    /// GET of `url` answers with a success status.
    pub async fn wait_until_http_ok(&mut self, timeout: Duration, url: &str) -> Result<()> {
        let http = reqwest::Client::new();
        self.wait_ready(timeout, || async { http.get(url).send().await.is_ok_and(|r| r.status().is_success()) }).await
    }

    /// Kills the server with `SIGKILL`, as a crash would: no chance to flush, close or deregister.
    pub fn kill(&mut self) {
        self.stopped = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the server to stop, waits up to ten seconds, then kills it. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: plain syscall on a pid we own and have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, self.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(server = %self.name, "did not stop within 10s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Forks `cmd` from the process-wide spawner thread, with the parent-death signal set.
fn spawn_tied_to_this_process(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ftgo-testenv-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(tx)
    });

    let parent = std::process::id() as libc::pid_t;
    // Own process group: a Ctrl-C in the terminal reaches only us, and we stop servers in order.
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .map_err(|_| io::Error::other("spawner poisoned"))?
        .send((cmd, tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    rx.recv().map_err(|_| io::Error::other("spawner thread is gone"))?
}

/// A TCP port on 127.0.0.1 that is free now and has not been handed out before by this process.
///
/// Another process can still take it before our server binds it; servers that fail to start are
/// retried on new ports by [`retry_on_new_ports`].
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if handed_out.lock().map_err(|_| anyhow!("port registry poisoned"))?.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free loopback port found in 100 tries")
}

/// Runs `start` up to three times: a server that loses a race for its port fails to start, and the
/// next attempt picks new ports.
pub async fn retry_on_new_ports<T, F, Fut>(what: &str, mut start: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut last = None;
    for attempt in 1..=3 {
        match start().await {
            Ok(server) => return Ok(server),
            Err(e) => {
                tracing::warn!(server = what, attempt, error = %e, "start failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("{what} did not start")))
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
