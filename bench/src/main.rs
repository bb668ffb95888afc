//! `ftgo-bench` (`just bench`): the whole system under load, measured from outside.
//!
//! It starts FTGO the way `just up` does (`ftgo-local up`, from the binaries next to this one:
//! `just bench` builds them with `--release`), gives every client a consumer whose credit never
//! runs out, and then, for 1, 16 and 64 concurrent clients, places orders through the public API
//! and follows each one (`GET /api/orders/{id}`) until it is `APPROVED` or `REJECTED`. The same
//! legs run against the gateway directly and through Fabio's HTTP listener, next to an RPC floor:
//! a tonic unary round trip (gRPC health `Check`) to the Order Service at the same concurrency.
//!
//! For every leg it reports sagas (or calls) per second, p50/p90/p99 latency (for a saga: from the
//! `POST` to the first `GET` that shows its outcome), milliseconds of CPU per saga for every
//! process of the system (grouped by program, Postgres's backends together) and for the load
//! generator itself, and Postgres commits per saga. It prints one table and writes JSON
//! (`--out FILE`).
//!
//! Every leg is bounded in time (`--seconds`, 15 by default; `--quick`: 2 s legs at 1 and 4
//! clients, the smoke test CI runs) and every wait has a deadline. Not measured yet: the
//! Postgres-only floor (the saga's own transactions replayed without the services).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

/// The states a Create Order saga ends in.
const TERMINAL: [&str; 2] = ["APPROVED", "REJECTED"];
/// How often a client asks for its order's state: often enough to see the outcome within a few
/// milliseconds, seldom enough that the polling does not become most of the load (every `GET`
/// asks three services).
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long one saga may take before the bench counts it as an error and moves on.
const SAGA_DEADLINE: Duration = Duration::from_secs(30);

struct Args {
    seconds: f64,
    concurrency: Vec<usize>,
    out: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut args = Args { seconds: 15.0, concurrency: vec![1, 16, 64], out: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                args.seconds = 2.0;
                args.concurrency = vec![1, 4];
            }
            "--seconds" => {
                args.seconds = it.next().context("--seconds needs a number")?.parse()?;
                if !(0.5..=600.0).contains(&args.seconds) {
                    bail!("--seconds must be between 0.5 and 600");
                }
            }
            "--out" => args.out = Some(it.next().context("--out needs a path")?.into()),
            other => bail!("unknown argument {other:?}; usage: ftgo-bench [--quick] [--seconds N] [--out FILE]"),
        }
    }
    Ok(args)
}

/// FTGO as `ftgo-local up` runs it, and the addresses it printed.
struct System {
    up: Child,
    gateway: String,
    fabio: String,
    order_grpc: String,
    postgres: String,
    _state: tempfile::TempDir,
}

impl System {
    fn start() -> Result<Self> {
        let dir = std::env::current_exe()?.parent().context("the binary has a directory")?.to_owned();
        let state = tempfile::tempdir()?;
        let port = ftgo_testenv::process::free_port()?;
        let mut up = Command::new(dir.join("ftgo-local"))
            .arg("up")
            .env("FTGO_STATE_DIR", state.path())
            .env("FTGO_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}/ftgo-local (build the binaries first)", dir.display()))?;
        let (lines_tx, lines) = mpsc::channel();
        let stdout = BufReader::new(up.stdout.take().context("piped stdout")?);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The lines after "FTGO is up" name every address, up to "service logs".
        let mut found: BTreeMap<&str, String> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
                let _ = up.kill();
                bail!("`ftgo-local up` did not print its addresses within 240 s");
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["API", "gateway", url, ..] => found.insert("gateway", (*url).to_owned()),
                ["fabio", "http", url, ..] => found.insert("fabio", (*url).to_owned()),
                ["postgres", url, ..] => found.insert("postgres", (*url).to_owned()),
                ["order-service", addr, ..] => found.insert("order", addr.replace("grpc://", "http://")),
                ["service", "logs", ..] => break,
                _ => None,
            };
        }
        let mut take =
            |key: &str| found.remove(key).with_context(|| format!("`ftgo-local up` printed no {key} address"));
        Ok(Self {
            gateway: take("gateway")?,
            fabio: take("fabio")?,
            order_grpc: take("order")?,
            postgres: take("postgres")?,
            up,
            _state: state,
        })
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our own child: SIGTERM makes `ftgo-local up` stop everything
        // it started, in order.
        unsafe { libc::kill(self.up.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.up.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.up.kill();
    }
}

/// CPU seconds used so far by every process below `root` (and by this process), by program.
fn cpu_by_program(root: u32) -> BTreeMap<String, f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut parents = BTreeMap::new();
    let mut stats = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ... utime stime ...": comm may hold spaces, so split after ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(ppid), Some(utime), Some(stime)) = (fields.get(1), fields.get(11), fields.get(12)) else { continue };
        parents.insert(pid, ppid.parse::<u32>().unwrap_or(0));
        let seconds = (utime.parse::<f64>().unwrap_or(0.0) + stime.parse::<f64>().unwrap_or(0.0)) / ticks;
        stats.insert(pid, (comm, seconds));
    }
    let below_root = |mut pid: u32| {
        while pid > 1 {
            if pid == root {
                return true;
            }
            pid = parents.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    let me = std::process::id();
    let mut cpu = BTreeMap::new();
    for (pid, (comm, seconds)) in stats {
        let program = if pid == me {
            "ftgo-bench (load)".to_owned()
        } else if below_root(pid) {
            comm
        } else {
            continue;
        };
        *cpu.entry(program).or_insert(0.0) += seconds;
    }
    cpu
}

/// Transactions committed in every database of the system's Postgres.
async fn commits(postgres: &str) -> Result<i64> {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(postgres).await?;
    let commits: Option<i64> =
        sqlx::query_scalar("SELECT sum(xact_commit)::bigint FROM pg_stat_database").fetch_one(&mut connection).await?;
    Ok(commits.unwrap_or(0))
}

/// What one leg measured.
#[derive(Debug, Serialize)]
struct Leg {
    leg: String,
    clients: usize,
    completed: u64,
    errors: u64,
    per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    cpu_ms_per_op: BTreeMap<String, f64>,
    system_cpu_ms_per_op: f64,
    commits_per_op: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs `clients` copies of `one` for `seconds`, with the CPU and commits around them.
async fn leg<F, Fut>(system: &System, name: &str, clients: usize, seconds: f64, one: F) -> Result<Leg>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let cpu_before = cpu_by_program(system.up.id());
    let commits_before = commits(&system.postgres).await.ok();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < until {
                let began = Instant::now();
                match one(client).await {
                    Ok(()) => latencies.push(began.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("  client {client}: {e:#}");
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_by_program(system.up.id());
    let commits_after = commits(&system.postgres).await.ok();
    latencies.sort_by(f64::total_cmp);
    let completed = latencies.len() as u64;
    let per_op = |value: f64| if completed == 0 { 0.0 } else { value / completed as f64 };
    let cpu_ms_per_op: BTreeMap<String, f64> = cpu_after
        .iter()
        .map(|(program, after)| {
            let used = after - cpu_before.get(program).copied().unwrap_or(0.0);
            (program.clone(), per_op(used * 1000.0))
        })
        .filter(|(_, ms)| *ms > 0.0)
        .collect();
    let system_cpu_ms_per_op =
        cpu_ms_per_op.iter().filter(|(p, _)| !p.starts_with("ftgo-bench")).map(|(_, ms)| ms).sum();
    Ok(Leg {
        leg: name.to_owned(),
        clients,
        completed,
        errors,
        per_second: completed as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p90_ms: percentile(&latencies, 90.0),
        p99_ms: percentile(&latencies, 99.0),
        cpu_ms_per_op,
        system_cpu_ms_per_op,
        commits_per_op: commits_before.zip(commits_after).map(|(b, a)| per_op((a - b) as f64)),
    })
}

/// One client's consumer, with a credit limit no benchmark exhausts, and a restaurant whose menu
/// the Order Service has replicated.
async fn setup(http: &reqwest::Client, base: &str, clients: usize) -> Result<(Vec<String>, String)> {
    let mut consumers = Vec::new();
    for n in 0..clients {
        let body = json!({"name": {"firstName": "Bench", "lastName": format!("Client{n}")}});
        let created: Value = http.post(format!("{base}/api/consumers")).json(&body).send().await?.json().await?;
        let id = created["consumerId"].as_str().context("no consumerId")?.to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let raised = http
                .put(format!("{base}/api/accounts/{id}"))
                .json(&json!({"creditLimit": "100000000.00"}))
                .send()
                .await?;
            if raised.status().is_success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the account of consumer {id} did not open: {}", raised.status());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        consumers.push(id);
    }
    let restaurant: Value = http
        .post(format!("{base}/api/restaurants"))
        .json(&json!({"name": "Bench Kitchen",
            "address": {"street1": "1 Main St", "city": "Berkeley", "state": "CA", "zip": "94704"},
            "menu": {"menuItems": [{"id": "1", "name": "Dal", "price": "5.00"}]}}))
        .send()
        .await?
        .json()
        .await?;
    let restaurant_id = restaurant["restaurantId"].as_str().context("no restaurantId")?.to_owned();
    // The menu reaches the Order Service by event: the first saga waits for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while saga(http, base, &consumers[0], &restaurant_id).await.is_err() {
        if Instant::now() > deadline {
            bail!("the restaurant's menu never reached the Order Service");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((consumers, restaurant_id))
}

/// One Create Order saga through the public API: placed, then followed to its outcome.
async fn saga(http: &reqwest::Client, base: &str, consumer: &str, restaurant: &str) -> Result<()> {
    let order = json!({
        "consumerId": consumer, "restaurantId": restaurant,
        "deliveryAddress": {"street1": "9 Telegraph Ave", "city": "Oakland", "state": "CA", "zip": "94612"},
        "lineItems": [{"menuItemId": "1", "quantity": 1}],
    });
    let response = http.post(format!("{base}/api/orders")).json(&order).send().await?;
    let status = response.status();
    let created: Value = response.json().await?;
    let Some(id) = created["orderId"].as_str() else { bail!("POST /api/orders answered {status}: {created}") };
    let deadline = Instant::now() + SAGA_DEADLINE;
    loop {
        let order: Value = http.get(format!("{base}/api/orders/{id}")).send().await?.json().await?;
        if order["state"].as_str().is_some_and(|s| TERMINAL.contains(&s)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("order {id} still {} after {SAGA_DEADLINE:?}", order["state"]);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    eprintln!("starting FTGO ({profile} builds) ...");
    let system = System::start()?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let most = args.concurrency.iter().copied().max().unwrap_or(1);
    let (consumers, restaurant) = setup(&http, &system.gateway, most).await?;
    let mut legs = Vec::new();
    for (name, base) in [("gateway", system.gateway.clone()), ("fabio", system.fabio.clone())] {
        for &clients in &args.concurrency {
            eprintln!("sagas through the {name}, {clients} clients, {} s ...", args.seconds);
            let (http, base, consumers, restaurant) =
                (http.clone(), base.clone(), consumers.clone(), restaurant.clone());
            let one = move |client: usize| {
                let (http, base, consumer, restaurant) =
                    (http.clone(), base.clone(), consumers[client].clone(), restaurant.clone());
                async move { saga(&http, &base, &consumer, &restaurant).await }
            };
            legs.push(leg(&system, &format!("sagas via {name}"), clients, args.seconds, one).await?);
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(system.order_grpc.clone())?.connect().await?;
    for &clients in &args.concurrency {
        eprintln!("the RPC floor, {clients} clients, {} s ...", args.seconds);
        let channel = channel.clone();
        let one = move |_| {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            async move {
                health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
                Ok(())
            }
        };
        legs.push(leg(&system, "RPC floor (gRPC health Check)", clients, args.seconds, one).await?);
    }
    drop(system);

    print_table(&legs);
    let report = json!({"profile": profile, "seconds_per_leg": args.seconds, "legs": legs});
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", out.display());
    }
    let errors: u64 = legs.iter().map(|l| l.errors).sum();
    if legs.iter().any(|l| l.completed == 0) {
        bail!("a leg completed nothing ({errors} errors)");
    }
    Ok(())
}

fn print_table(legs: &[Leg]) {
    println!(
        "\n{:<32} {:>7} {:>9} {:>8} {:>8} {:>8} {:>7} {:>10} {:>8}",
        "leg", "clients", "per s", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU ms/op", "commits"
    );
    for l in legs {
        println!(
            "{:<32} {:>7} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>10.2} {:>8}",
            l.leg,
            l.clients,
            l.per_second,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.errors,
            l.system_cpu_ms_per_op,
            l.commits_per_op.map_or("-".to_owned(), |c| format!("{c:.1}")),
        );
    }
    println!("\nCPU ms per operation, by program:");
    for l in legs {
        let parts: Vec<String> = l.cpu_ms_per_op.iter().map(|(p, ms)| format!("{p} {ms:.2}")).collect();
        println!("  {} x{}: {}", l.leg, l.clients, parts.join(", "));
    }
}
