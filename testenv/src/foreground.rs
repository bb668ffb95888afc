//! A local stack run in the foreground (`just up`, `just cluster-up`) and stopped from another
//! terminal (`just down`, `just cluster-down`): a pid file names the running process, the stop
//! command sends it SIGTERM and waits until it has cleaned up.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// One kind of foreground stack: where its pid file is and what it is called.
#[derive(Debug, Clone)]
pub struct Foreground {
    /// The pid file.
    pub pid_file: PathBuf,
    /// The running program's name, as `/proc/<pid>/comm` shows it.
    pub program: &'static str,
    /// What to call the stack in messages: "FTGO", "the local cluster".
    pub name: &'static str,
    /// The command that stops it, for messages: "just down".
    pub stop_command: &'static str,
}

/// Where the local stacks (`ftgo-local up`, `ftgo-cluster up`) keep their state: pid files, logs,
/// settings, kubeconfig. `$FTGO_STATE_DIR`, else `.ftgo`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("FTGO_STATE_DIR").map_or_else(|| PathBuf::from(".ftgo"), PathBuf::from)
}

impl Foreground {
    /// The pid of the running stack, if any. A stale pid file may name a pid the kernel has since
    /// given to another program, so the program's name must match too.
    pub fn running_pid(&self) -> Option<libc::pid_t> {
        let pid: libc::pid_t = std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == self.program).then_some(pid)
    }

    /// Records this process as the running stack, runs `stack` and removes the record, whatever
    /// the outcome. Refuses to start a second one.
    pub async fn run<T>(&self, stack: impl Future<Output = Result<T>>) -> Result<T> {
        if let Some(pid) = self.running_pid() {
            bail!("{} is already running here (pid {pid}); `{}` stops it", self.name, self.stop_command);
        }
        if let Some(dir) = self.pid_file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&self.pid_file, std::process::id().to_string())?;
        let result = stack.await;
        let _ = std::fs::remove_file(&self.pid_file);
        result
    }

    /// Asks the running stack to stop and waits (up to 60 s) until it has.
    pub fn stop(&self) -> Result<()> {
        let Some(pid) = self.running_pid() else {
            println!("{} is not running here", self.name);
            return Ok(());
        };
        // SAFETY: plain syscall; the pid was checked to be the stack's.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("could not signal {} (pid {pid}): {}", self.name, std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.running_pid().is_none() {
                println!("{} stopped", self.name);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{} (pid {pid}) did not stop within 60s", self.name)
    }
}

/// Waits for Ctrl-C or SIGTERM (what the stop command sends).
pub async fn until_stopped() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Runs one start-up step, printing how long it took, or fails naming it.
pub async fn step<T>(name: &str, start: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let server = start.await.with_context(|| format!("{name} failed to start"))?;
    println!("  {name} ready in {:.1}s", started.elapsed().as_secs_f32());
    Ok(server)
}
