//! `ftgo-local`: runs FTGO on one machine, in the foreground.
//!
//! `up` starts the infrastructure (Postgres, NATS JetStream, Consul, Fabio) as private processes
//! on free loopback ports, then every FTGO service (each with its own fresh database, migrated by
//! the service itself) and the API gateway on `127.0.0.1:8080`, waiting for each one's health
//! check. It prints where everything is and runs until Ctrl-C, SIGTERM or `down`. Everything it
//! started stops with it, in reverse order. `down`, from another terminal, asks the running `up`
//! to stop and waits until it has. `demo` walks a few orders through the running system. `images`
//! prints the binaries that ship as container images, from the service catalog. `up --replicas 2`
//! runs two instances of every back-end service, on one database each, behind Fabio.
//!
//! The data lives in temporary directories: each `up` starts from empty databases.
//!
//! Environment of `up`: `FTGO_GATEWAY_LISTEN` (the gateway's address, 127.0.0.1:8080),
//! `FTGO_STATE_DIR` (the pid file, the services' settings files and logs, `.ftgo`) and `FTGO_POSTGRES`: `fast` (the default:
//! fsync, synchronous_commit and full_page_writes off, as in the tests) or `durable` (all three on:
//! every commit waits for its WAL on disk, as `just bench`'s first leg runs it).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use ftgo_local::{demo, services};
use ftgo_testenv::{
    Consul, Durability, Fabio, Nats, Postgres,
    foreground::{self, Foreground, state_dir, step},
};

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("up") => {
            let replicas = replicas(std::env::args().skip(2))?;
            foreground().run(run_until_stopped(replicas)).await
        }
        Some("down") => foreground().stop(),
        Some("demo") => demo::run(&gateway_url()).await,
        Some("images") => {
            // For scripts (`just docker-images`): the binaries that ship as images, one per line.
            ftgo_catalog::image_binaries().for_each(|binary| println!("{binary}"));
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}\n\n{HELP}");
            Ok(())
        }
        _ => bail!("{USAGE} (`ftgo-local --help` says more)"),
    }
}

const USAGE: &str = "usage: ftgo-local up [--replicas N] | down | demo | images";
const HELP: &str = "Runs FTGO on this machine, every piece a process bound to 127.0.0.1 (no containers).

  up [--replicas N]  start Postgres, NATS, Consul, Fabio, the services (N instances of each, 1 to 5)
                     and the gateway on http://127.0.0.1:8080; stays in the foreground until Ctrl-C
                     or `ftgo-local down`
  down               stop what `up` started
  demo               place orders through the gateway and follow each one to its outcome
  images             the binaries that ship as container images, one per line

`up` reads FTGO_GATEWAY_LISTEN (the gateway's address), FTGO_STATE_DIR (where data and logs go)
and FTGO_POSTGRES=fast|durable (fsync off or on).";

/// How many instances of each back-end service `up` runs: `--replicas N` (1 to 5), by default 1.
fn replicas(mut args: impl Iterator<Item = String>) -> Result<usize> {
    let mut replicas = 1;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--replicas" => {
                let value = args.next().context("--replicas needs a number, e.g. --replicas 2")?;
                replicas = value.parse().ok().filter(|n| (1..=5).contains(n)).with_context(|| {
                    format!("--replicas {value:?}: the number of instances of each service, from 1 to 5")
                })?;
            }
            other => bail!("`up` takes `--replicas N`, not {other:?}"),
        }
    }
    Ok(replicas)
}

/// Where `up` serves the API gateway: `FTGO_GATEWAY_LISTEN`, by default 127.0.0.1:8080.
fn gateway_listen() -> Result<std::net::SocketAddr> {
    let listen = std::env::var("FTGO_GATEWAY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    listen.parse().with_context(|| format!("FTGO_GATEWAY_LISTEN={listen:?} is not an address such as 127.0.0.1:8080"))
}

fn gateway_url() -> String {
    std::env::var("FTGO_GATEWAY_URL").unwrap_or_else(|_| {
        gateway_listen().map_or_else(|_| "http://127.0.0.1:8080".to_owned(), |addr| format!("http://{addr}"))
    })
}

/// How `up` runs Postgres: `FTGO_POSTGRES=fast` (the default) or `durable`.
fn postgres_durability() -> Result<Durability> {
    match std::env::var("FTGO_POSTGRES") {
        Ok(value) => value.parse().context("FTGO_POSTGRES"),
        Err(std::env::VarError::NotPresent) => Ok(Durability::Fast),
        Err(e) => Err(e).context("FTGO_POSTGRES"),
    }
}

/// `up` runs in the foreground; `down` finds it through `.ftgo/local.pid`.
fn foreground() -> Foreground {
    Foreground {
        pid_file: state_dir().join("local.pid"),
        program: "ftgo-local",
        name: "FTGO",
        stop_command: "just down",
    }
}

async fn run_until_stopped(replicas: usize) -> Result<()> {
    let started = Instant::now();
    let gateway_listen = gateway_listen()?;
    let durability = postgres_durability()?;
    // Fail before starting anything when the gateway's port is taken.
    drop(
        std::net::TcpListener::bind(gateway_listen)
            .with_context(|| format!("{gateway_listen} is in use; set FTGO_GATEWAY_LISTEN to another address"))?,
    );
    let dirs = services::Dirs {
        bin: services::binary_dir()?,
        settings: state_dir().join("settings"),
        logs: state_dir().join("logs"),
    };
    for dir in [&dirs.settings, &dirs.logs] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
    }

    println!("starting Postgres, NATS JetStream and Consul ...");
    let (postgres, nats, consul) = tokio::try_join!(
        step("postgres", Postgres::start_with(durability)),
        step("nats-server", Nats::start()),
        step("consul", Consul::start())
    )?;
    println!("starting Fabio ...");
    let fabio = step("fabio", Fabio::start(&consul)).await?;

    println!("starting the FTGO services (each migrates its own database; {replicas} instance(s) of each) ...");
    let mut back_end = Vec::new();
    for name in ftgo_catalog::ServiceName::back_end() {
        back_end.extend(step(name.binary(), services::start(name, replicas, &dirs, &postgres, &nats, &consul)).await?);
    }
    println!("starting the API gateway ...");
    let gateway = step(
        ftgo_catalog::ServiceName::Gateway.binary(),
        services::start_gateway(&dirs, gateway_listen, &consul, &fabio),
    )
    .await?;
    println!("waiting for Fabio to route to every service ...");
    step("fabio routes", services::wait_for_routes(&fabio)).await?;

    println!("\nFTGO is up ({:.1}s):", started.elapsed().as_secs_f32());
    println!("  API gateway   http://{gateway_listen}   (OpenAPI: http://{gateway_listen}/api/openapi.json)");
    for service in &back_end {
        println!("  {:<21} grpc://{}", service.binary, service.addr);
    }
    println!("  postgres      {}   ({durability} settings; FTGO_POSTGRES=fast|durable)", postgres.url("postgres"));
    println!("  nats          {}  (monitoring {})", nats.url(), nats.monitor_url());
    println!("  consul        {}/ui", consul.http_url());
    println!("  fabio http    {}   (the same API, through the load balancer)", fabio.http_url());
    println!("  fabio grpc    {}   (how the gateway reaches every service)", fabio.grpc_addr());
    println!("  fabio admin   {}   (the routing table)", fabio.admin_url());
    println!("  settings      {}   (each service's settings file)", dirs.settings.display());
    println!("  service logs  {}", dirs.logs.display());
    println!("\nPlace an order: `just demo` (or see README.md for curl commands).");
    println!("Ctrl-C here, or `just down` from another terminal, stops everything.");

    foreground::until_stopped().await?;
    println!("\nstopping ...");
    // Reverse order of start: callers before what they call, Fabio before the Consul it reads.
    drop(gateway);
    drop(back_end);
    drop(fabio);
    drop((consul, nats, postgres));
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::replicas;

    fn parse(args: &[&str]) -> anyhow::Result<usize> {
        replicas(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn up_runs_one_to_five_instances_and_says_what_is_wrong_with_anything_else() {
        assert_eq!(parse(&[]).unwrap(), 1);
        assert_eq!(parse(&["--replicas", "2"]).unwrap(), 2);
        for (args, says) in [
            (&["--replicas"][..], "needs a number"),
            (&["--replicas", "0"][..], "from 1 to 5"),
            (&["--replicas", "6"][..], "from 1 to 5"),
            (&["--replicas", "two"][..], "from 1 to 5"),
            (&["--release"][..], "not \"--release\""),
        ] {
            let error = format!("{:#}", parse(args).unwrap_err());
            assert!(error.contains(says), "{args:?}: {error}");
        }
    }
}
