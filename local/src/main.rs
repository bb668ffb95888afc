//! `ftgo-local`: runs FTGO on one machine, in the foreground.
//!
//! `up` starts the infrastructure (Postgres, NATS JetStream, Consul, Fabio) as private processes
//! on free loopback ports, prints where everything is, and runs until Ctrl-C, SIGTERM or `down`.
//! Everything it started stops with it, in reverse order. `down`, from another terminal, asks the
//! running `up` to stop and waits until it has.
//!
//! The FTGO services themselves are not part of the stack yet (issue 3 adds them here).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ftgo_testenv::{Consul, Fabio, Nats, Postgres};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("up") => up().await,
        Some("down") => down(),
        _ => bail!("usage: ftgo-local up|down"),
    }
}

/// Where `up` records its pid so that `down` can find it.
fn pid_file() -> PathBuf {
    let dir = std::env::var_os("FTGO_STATE_DIR").map_or_else(|| PathBuf::from(".ftgo"), PathBuf::from);
    dir.join("local.pid")
}

fn running_pid() -> Option<libc::pid_t> {
    let pid: libc::pid_t = std::fs::read_to_string(pid_file()).ok()?.trim().parse().ok()?;
    // A stale pid file may name a pid the kernel has since given to another program.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "ftgo-local").then_some(pid)
}

async fn up() -> Result<()> {
    if let Some(pid) = running_pid() {
        bail!("FTGO is already running here (pid {pid}); `just down` stops it");
    }
    let pid_file = pid_file();
    std::fs::create_dir_all(pid_file.parent().unwrap_or(&PathBuf::from(".")))?;
    std::fs::write(&pid_file, std::process::id().to_string())?;
    let result = run_until_stopped().await;
    let _ = std::fs::remove_file(&pid_file);
    result
}

async fn run_until_stopped() -> Result<()> {
    let started = Instant::now();
    println!("starting Postgres, NATS JetStream and Consul ...");
    let (postgres, nats, consul) = tokio::try_join!(
        step("postgres", Postgres::start()),
        step("nats-server", Nats::start()),
        step("consul", Consul::start())
    )?;
    println!("starting Fabio ...");
    let fabio = step("fabio", Fabio::start(&consul)).await?;

    println!("\nFTGO infrastructure is up ({:.1}s):", started.elapsed().as_secs_f32());
    println!("  postgres      {}", postgres.url("postgres"));
    println!("  nats          {}  (monitoring {})", nats.url(), nats.monitor_url());
    println!("  consul        {}/ui", consul.http_url());
    println!("  fabio http    {}", fabio.http_url());
    println!("  fabio grpc    {}", fabio.grpc_addr());
    println!("  fabio admin   {}", fabio.admin_url());
    println!("\nThe FTGO services are not part of the local stack yet.");
    println!("Ctrl-C here, or `just down` from another terminal, stops everything.");

    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("\nstopping ...");
    // Reverse order of start: Fabio reads Consul, so it goes first.
    drop(fabio);
    drop((consul, nats, postgres));
    println!("stopped");
    Ok(())
}

async fn step<T>(name: &str, start: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let server = start.await.with_context(|| format!("{name} failed to start"))?;
    println!("  {name} ready in {:.1}s", started.elapsed().as_secs_f32());
    Ok(server)
}

fn down() -> Result<()> {
    let Some(pid) = running_pid() else {
        println!("FTGO is not running here");
        return Ok(());
    };
    // SAFETY: plain syscall; the pid was checked to exist.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if running_pid().is_none() {
            println!("FTGO stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("FTGO (pid {pid}) did not stop within 60s")
}
