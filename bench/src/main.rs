//! `ftgo-bench` (`just bench`): the whole system under load, measured from outside.
//!
//! It starts FTGO the way `just up` does (`ftgo-local up`, from the binaries next to this one:
//! `just bench` builds them with `--release`), twice: first with a durable Postgres (fsync,
//! synchronous_commit and full_page_writes on), then with the tests' fast settings (all three
//! off). In each, it gives every client a consumer whose credit never runs out, and then, for 1,
//! 16 and 64 concurrent clients:
//!
//! - the Postgres-only floor ([`floor`]): the Create Order saga's own 17 commits, made by the
//!   bench itself on one connection per client in a database of their own on the same Postgres,
//!   while the system is idle;
//! - sagas through the gateway: orders placed through the public API, and their outcome waited
//!   for in one request (`GET /api/orders/{id}?wait=APPROVED,REJECTED`), as a client should;
//! - the same through Fabio's HTTP listener;
//!
//! and once, next to them, an RPC floor: a tonic unary round trip (gRPC health `Check`) to the
//! Order Service at the same concurrency, and the JetStream floor ([`jetstream_floor`]): the saga's
//! 11 messages published and consumed on the system's NATS server, without the services.
//!
//! For every leg it reports sagas (or calls) per second, p50/p90/p99 latency (for a saga: from the
//! `POST` to the answer of the `GET` that waits for its outcome; for the floor: its whole sequence of
//! transactions), milliseconds of CPU per saga for every process of the system (grouped by
//! program, Postgres's backends together) and for the load generator itself, Postgres commits per
//! saga, and for the saga legs their throughput divided by the floor's at the same clients and
//! settings. It prints one table, Fabio's throughput over the gateway's per settings, and writes
//! JSON (`--out FILE`).
//!
//! Every leg is bounded in time (`--seconds`, 15 by default; `--postgres durable|fast|both`;
//! `--quick`: the fast settings only, 2 s legs at 1 and 4 clients, the smoke test CI runs) and
//! every wait has a deadline.

mod floor;
mod jetstream_floor;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ftgo_proto::order::v1::{GetOrderRequest, order_service_client::OrderServiceClient};
use ftgo_testenv::Durability;
use serde::Serialize;
use serde_json::{Value, json};

/// The states a Create Order saga ends in.
const TERMINAL: [&str; 2] = ["APPROVED", "REJECTED"];
/// How long one `GET ?wait=` may hold (the bench asks again until `SAGA_DEADLINE`).
const WAIT: &str = "10s";
/// How long one saga may take before the bench counts it as an error and moves on.
const SAGA_DEADLINE: Duration = Duration::from_secs(30);

struct Args {
    seconds: f64,
    concurrency: Vec<usize>,
    /// Which Postgres settings the system runs with, one run each, in this order.
    postgres: Vec<Durability>,
    out: Option<PathBuf>,
}

const USAGE: &str = "usage: ftgo-bench [--quick] [--seconds N] [--postgres durable|fast|both] [--out FILE]";
const HELP: &str = "Measures FTGO under load against its floors (Postgres alone, a gRPC call, JetStream) with 1, 16
and 64 clients, and prints each leg's throughput, latency and CPU per operation.

  --quick           2-second legs, 1 and 4 clients, fast Postgres only (a smoke run)
  --seconds N       the length of each leg, 0.5 to 600 (default 15)
  --postgres MODE   durable (fsync on), fast (fsync off) or both (default)
  --out FILE        also write the figures as JSON to FILE";

fn args() -> Result<Args> {
    let mut args = Args {
        seconds: 15.0,
        concurrency: vec![1, 16, 64],
        postgres: vec![Durability::Durable, Durability::Fast],
        out: None,
    };
    let mut postgres = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                args.seconds = 2.0;
                args.concurrency = vec![1, 4];
                args.postgres = vec![Durability::Fast];
            }
            "--postgres" => {
                postgres = Some(match it.next().context("--postgres needs durable, fast or both")?.as_str() {
                    "both" => vec![Durability::Durable, Durability::Fast],
                    one => vec![one.parse().context(USAGE)?],
                });
            }
            "--seconds" => {
                args.seconds = it.next().context("--seconds needs a number")?.parse()?;
                if !(0.5..=600.0).contains(&args.seconds) {
                    bail!("--seconds must be between 0.5 and 600");
                }
            }
            "--out" => args.out = Some(it.next().context("--out needs a path")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}\n\n{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    args.postgres = postgres.unwrap_or(args.postgres);
    Ok(args)
}

/// FTGO as `ftgo-local up` runs it, and the addresses it printed.
struct System {
    up: Child,
    durability: Durability,
    gateway: String,
    fabio: String,
    order_grpc: String,
    /// Fabio's gRPC listener, through which the gateway calls every service.
    fabio_grpc: String,
    postgres: String,
    nats: String,
    _state: tempfile::TempDir,
}

impl System {
    fn start(durability: Durability) -> Result<Self> {
        let dir = std::env::current_exe()?.parent().context("the binary has a directory")?.to_owned();
        let state = tempfile::tempdir()?;
        let port = ftgo_testenv::process::free_port()?;
        let mut up = Command::new(dir.join("ftgo-local"))
            .arg("up")
            .env("FTGO_STATE_DIR", state.path())
            .env("FTGO_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("FTGO_POSTGRES", durability.as_str())
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
                ["nats", url, ..] => found.insert("nats", (*url).to_owned()),
                ["order-service", addr, ..] => found.insert("order", addr.replace("grpc://", "http://")),
                ["fabio", "grpc", addr, ..] => found.insert("fabio_grpc", format!("http://{addr}")),
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
            fabio_grpc: take("fabio_grpc")?,
            postgres: take("postgres")?,
            nats: take("nats")?,
            up,
            durability,
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
        // "pid (comm) state ppid ... utime stime cutime cstime ...": comm may hold spaces, so split
        // after ')'. cutime/cstime hold the CPU of children already reaped (Postgres's backends
        // that exited between two readings, the postmaster reaps them), so that none goes missing.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let Some(ppid) = fields.get(1) else { continue };
        parents.insert(pid, ppid.parse::<u32>().unwrap_or(0));
        let ticks_used: f64 = (11..=14).filter_map(|i| fields.get(i)?.parse::<f64>().ok()).sum();
        let seconds = ticks_used / ticks;
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

/// Where a leg's commits are counted.
#[derive(Debug, Clone, Copy)]
enum Commits {
    /// In every database of the system's Postgres: a saga spans five.
    All,
    /// In one database, once every connection to it has closed: the floor's own. A backend reports
    /// its counts to `pg_stat_database` at most once a second while busy, and all of them when it
    /// exits, so the floor's closing connections make its count exact.
    Closed(&'static str),
}

/// Transactions committed so far, as `scope` counts them.
async fn commits(postgres: &str, scope: Commits, leg_over: bool) -> Result<i64> {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(postgres).await?;
    let commits: Option<i64> = match scope {
        Commits::All => {
            sqlx::query_scalar("SELECT sum(xact_commit)::bigint FROM pg_stat_database")
                .fetch_one(&mut connection)
                .await?
        }
        Commits::Closed(database) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(database)
                    .fetch_one(&mut connection)
                    .await?;
                if open == 0 || !leg_over {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{open} connections to {database} still open 10 s after the leg");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
                .bind(database)
                .fetch_optional(&mut connection)
                .await?
        }
    };
    Ok(commits.unwrap_or(0))
}

/// What a leg measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// Create Order sagas through the public API.
    Sagas,
    /// The saga's own transactions, without the services.
    Floor,
    /// A tonic round trip.
    Rpc,
    /// The saga's 11 messages through JetStream, without the services.
    Messages,
}

/// What one leg measured.
#[derive(Debug, Serialize)]
struct Leg {
    leg: String,
    kind: Kind,
    /// The Postgres settings (`durable`, `fast`); none for the RPC floor, which does not use it.
    postgres: Option<&'static str>,
    clients: usize,
    completed: u64,
    errors: u64,
    per_second: f64,
    /// A saga leg's `per_second` over the floor's at the same clients and settings.
    ratio_to_floor: Option<f64>,
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

/// One client of a leg, ready to go: it repeats one operation until the leg is over.
trait Client: Sized + Send + 'static {
    /// One saga (or call).
    fn one(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Once the leg is over, before its commits are counted.
    fn finish(self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A client of the public API: its consumer orders from the bench's restaurant.
struct ApiClient {
    http: reqwest::Client,
    base: String,
    consumer: String,
    restaurant: String,
}

impl Client for ApiClient {
    async fn one(&mut self) -> Result<()> {
        saga(&self.http, &self.base, &self.consumer, &self.restaurant).await
    }
}

impl Client for floor::Client {
    async fn one(&mut self) -> Result<()> {
        self.saga().await
    }

    async fn finish(self) {
        self.close().await;
    }
}

struct RpcClient(tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>);

impl Client for jetstream_floor::Client {
    async fn one(&mut self) -> Result<()> {
        self.saga().await
    }
}

impl Client for RpcClient {
    async fn one(&mut self) -> Result<()> {
        self.0.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
        Ok(())
    }
}

/// `GetOrder` of one order: one small read in the Order Service, called directly or through Fabio
/// to measure what Fabio adds to each of the gateway's calls.
struct GetOrderClient(OrderServiceClient<tonic::transport::Channel>, String);

impl Client for GetOrderClient {
    async fn one(&mut self) -> Result<()> {
        self.0.get_order(GetOrderRequest { order_id: self.1.clone(), ..Default::default() }).await?;
        Ok(())
    }
}

/// What a leg is called and what it runs against.
struct LegSpec<'a> {
    name: String,
    kind: Kind,
    postgres: Option<Durability>,
    commits: Commits,
    system: &'a System,
}

/// Runs `clients` for `seconds`, with the CPU and commits around them.
async fn leg<C: Client>(spec: LegSpec<'_>, clients: Vec<C>, seconds: f64) -> Result<Leg> {
    let LegSpec { name, kind, postgres, commits: scope, system } = spec;
    let count = clients.len();
    eprintln!("{name}, {count} clients, {seconds} s ...");
    let cpu_before = cpu_by_program(system.up.id());
    let commits_before = commits(&system.postgres, scope, false).await.ok();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (n, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < until {
                let began = Instant::now();
                match client.one().await {
                    Ok(()) => latencies.push(began.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("  client {n}: {e:#}");
                        }
                    }
                }
            }
            (latencies, errors, Instant::now(), client)
        }));
    }
    let (mut latencies, mut errors, mut ended, mut clients) = (Vec::new(), 0, started, Vec::new());
    for task in tasks {
        let (l, e, end, client) = task.await?;
        latencies.extend(l);
        errors += e;
        ended = ended.max(end);
        clients.push(client);
    }
    let elapsed = (ended - started).as_secs_f64();
    // Before the clients finish: a process that has exited (the floor's backends) has no CPU to read.
    let cpu_after = cpu_by_program(system.up.id());
    for client in clients {
        client.finish().await;
    }
    let commits_after = commits(&system.postgres, scope, true).await.ok();
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
        leg: name,
        kind,
        postgres: postgres.map(Durability::as_str),
        clients: count,
        completed,
        errors,
        per_second: completed as f64 / elapsed,
        ratio_to_floor: None,
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

/// Places an order through the public API; returns its id.
async fn place_order(http: &reqwest::Client, base: &str, consumer: &str, restaurant: &str) -> Result<String> {
    let order = json!({
        "consumerId": consumer, "restaurantId": restaurant,
        "deliveryAddress": {"street1": "9 Telegraph Ave", "city": "Oakland", "state": "CA", "zip": "94612"},
        "lineItems": [{"menuItemId": "1", "quantity": 1}],
    });
    let response = http.post(format!("{base}/api/orders")).json(&order).send().await?;
    let status = response.status();
    let created: Value = response.json().await?;
    let Some(id) = created["orderId"].as_str() else { bail!("POST /api/orders answered {status}: {created}") };
    Ok(id.to_owned())
}

/// One Create Order saga through the public API: placed, then followed to its outcome.
async fn saga(http: &reqwest::Client, base: &str, consumer: &str, restaurant: &str) -> Result<()> {
    let id = place_order(http, base, consumer, restaurant).await?;
    // One request that answers when the saga ends (`?wait=`): no polling.
    let deadline = Instant::now() + SAGA_DEADLINE;
    let wait = format!("{base}/api/orders/{id}?wait={}&timeout={WAIT}&view=summary", TERMINAL.join(","));
    loop {
        let response = http.get(&wait).send().await?;
        let status = response.status();
        let order: Value = response.json().await?;
        if !status.is_success() {
            bail!("GET {wait} answered {status}: {order}");
        }
        if order["state"].as_str().is_some_and(|s| TERMINAL.contains(&s)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("order {id} still {} after {SAGA_DEADLINE:?}", order["state"]);
        }
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let (mut legs, mut settings) = (Vec::new(), BTreeMap::new());
    for (n, &durability) in args.postgres.iter().enumerate() {
        eprintln!("starting FTGO ({profile} builds, {durability} Postgres) ...");
        let system = System::start(durability)?;
        settings.insert(durability.as_str(), postgres_settings(&system.postgres).await?);
        legs.extend(measure(&system, &args, n + 1 == args.postgres.len()).await?);
    }
    add_ratios_to_floor(&mut legs);
    let fabio_over_gateway = fabio_over_gateway(&legs);
    let fabio_cost = fabio_cost_per_call(&legs);
    let floors_cpu = floors_cpu_per_saga(&legs);

    print_table(&legs, &fabio_over_gateway);
    if !fabio_cost.is_empty() {
        let parts: Vec<String> =
            fabio_cost.iter().map(|(clients, ms)| format!("{clients} clients {ms:+.2} ms")).collect();
        println!("Fabio's cost per gRPC call (p50 via fabio − direct): {}", parts.join(", "));
    }
    for (postgres, cpu) in &floors_cpu {
        let parts: Vec<String> = cpu.iter().map(|(clients, ms)| format!("{clients} clients {ms:.1}")).collect();
        println!(
            "CPU ms per saga of the two floors together (Postgres + JetStream) [{postgres}]: {}",
            parts.join(", ")
        );
    }
    let report = json!({
        "profile": profile,
        "seconds_per_leg": args.seconds,
        "postgres": settings,
        "legs": legs,
        "fabio_over_gateway": fabio_over_gateway,
        "fabio_p50_ms_added_per_grpc_call": fabio_cost,
        "floors_cpu_ms_per_saga": floors_cpu,
    });
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

/// What the running server says about its durability, as evidence of which settings a run used.
async fn postgres_settings(postgres: &str) -> Result<BTreeMap<String, String>> {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(postgres).await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')",
    )
    .fetch_all(&mut connection)
    .await?;
    Ok(settings.into_iter().collect())
}

/// Every leg against one running system: the floor, then the sagas through the gateway and
/// through Fabio, at each client count; and the RPC floor if `rpc`.
async fn measure(system: &System, args: &Args, rpc: bool) -> Result<Vec<Leg>> {
    let durability = system.durability;
    let spec = |name: String, kind, commits| LegSpec { name, kind, postgres: Some(durability), commits, system };
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let most = args.concurrency.iter().copied().max().unwrap_or(1);
    let (consumers, restaurant) = setup(&http, &system.gateway, most).await?;
    let mut legs = Vec::new();

    let floor = floor::prepare(&system.postgres, most).await?;
    for &clients in &args.concurrency {
        let mut connected = Vec::new();
        for n in 0..clients {
            connected.push(floor.client(n).await?);
        }
        let name = format!("Postgres-only floor [{durability}]");
        legs.push(leg(spec(name, Kind::Floor, Commits::Closed(floor::DATABASE)), connected, args.seconds).await?);
    }

    for (via, base) in [("gateway", &system.gateway), ("fabio", &system.fabio)] {
        for &clients in &args.concurrency {
            let api = (0..clients)
                .map(|n| ApiClient {
                    http: http.clone(),
                    base: base.clone(),
                    consumer: consumers[n].clone(),
                    restaurant: restaurant.clone(),
                })
                .collect();
            let name = format!("sagas via {via} [{durability}]");
            legs.push(leg(spec(name, Kind::Sagas, Commits::All), api, args.seconds).await?);
        }
    }

    if rpc {
        let channel = tonic::transport::Endpoint::from_shared(system.order_grpc.clone())?.connect().await?;
        for &clients in &args.concurrency {
            let calls = (0..clients)
                .map(|_| RpcClient(tonic_health::pb::health_client::HealthClient::new(channel.clone())))
                .collect();
            let spec = LegSpec {
                name: "RPC floor (gRPC health Check)".to_owned(),
                kind: Kind::Rpc,
                postgres: None,
                commits: Commits::All,
                system,
            };
            legs.push(leg(spec, calls, args.seconds).await?);
        }
        let messages = jetstream_floor::prepare(&system.nats).await?;
        for &clients in &args.concurrency {
            let mut connected = Vec::new();
            for n in 0..clients {
                connected.push(messages.client(n).await?);
            }
            let spec = LegSpec {
                name: "JetStream floor (11 messages)".to_owned(),
                kind: Kind::Messages,
                postgres: None,
                commits: Commits::All,
                system,
            };
            legs.push(leg(spec, connected, args.seconds).await?);
        }
        messages.remove().await;
        // What Fabio adds to one call: the same GetOrder, directly and through Fabio's gRPC proxy.
        let order_id = place_order(&http, &system.gateway, &consumers[0], &restaurant).await?;
        for (via, address) in [("direct", &system.order_grpc), ("via fabio", &system.fabio_grpc)] {
            let channel = tonic::transport::Endpoint::from_shared(address.clone())?.connect().await?;
            for &clients in &args.concurrency {
                let calls = (0..clients)
                    .map(|_| GetOrderClient(OrderServiceClient::new(channel.clone()), order_id.clone()))
                    .collect();
                let spec = LegSpec {
                    name: format!("RPC GetOrder {via}"),
                    kind: Kind::Rpc,
                    postgres: None,
                    commits: Commits::All,
                    system,
                };
                legs.push(leg(spec, calls, args.seconds).await?);
            }
        }
    }
    Ok(legs)
}

/// Per client count: Fabio's added latency per gRPC call (p50 through Fabio minus p50 direct).
fn fabio_cost_per_call(legs: &[Leg]) -> BTreeMap<usize, f64> {
    let p50 =
        |name: &str, clients: usize| legs.iter().find(|l| l.leg == name && l.clients == clients).map(|l| l.p50_ms);
    legs.iter()
        .filter(|l| l.leg == "RPC GetOrder direct")
        .filter_map(|l| Some((l.clients, p50("RPC GetOrder via fabio", l.clients)? - l.p50_ms)))
        .collect()
}

/// Every saga leg's throughput over the floor's at the same clients and Postgres settings.
fn add_ratios_to_floor(legs: &mut [Leg]) {
    let floors: Vec<(Option<&'static str>, usize, f64)> =
        legs.iter().filter(|l| l.kind == Kind::Floor).map(|l| (l.postgres, l.clients, l.per_second)).collect();
    for leg in legs.iter_mut().filter(|l| l.kind == Kind::Sagas) {
        leg.ratio_to_floor = floors
            .iter()
            .find(|(postgres, clients, _)| *postgres == leg.postgres && *clients == leg.clients)
            .filter(|(_, _, floor)| *floor > 0.0)
            .map(|(_, _, floor)| leg.per_second / floor);
    }
}

/// Per Postgres settings and client count: the system's CPU per saga in the Postgres-only floor
/// plus that in the JetStream floor, the part of a saga's CPU that its storage and its messages
/// cost before any service does anything.
fn floors_cpu_per_saga(legs: &[Leg]) -> BTreeMap<&'static str, BTreeMap<usize, f64>> {
    let mut sums: BTreeMap<&'static str, BTreeMap<usize, f64>> = BTreeMap::new();
    for floor in legs.iter().filter(|l| l.kind == Kind::Floor) {
        let messages = legs.iter().find(|l| l.kind == Kind::Messages && l.clients == floor.clients);
        if let (Some(postgres), Some(messages)) = (floor.postgres, messages) {
            sums.entry(postgres)
                .or_default()
                .insert(floor.clients, floor.system_cpu_ms_per_op + messages.system_cpu_ms_per_op);
        }
    }
    sums
}

/// Per Postgres settings and client count: the sagas through Fabio per second over those through
/// the gateway directly.
fn fabio_over_gateway(legs: &[Leg]) -> BTreeMap<&'static str, BTreeMap<usize, f64>> {
    let mut ratios: BTreeMap<&'static str, BTreeMap<usize, f64>> = BTreeMap::new();
    let via = |l: &Leg, route: &str| l.kind == Kind::Sagas && l.leg.starts_with(&format!("sagas via {route} "));
    for fabio in legs.iter().filter(|l| via(l, "fabio")) {
        let gateway =
            legs.iter().find(|l| via(l, "gateway") && l.postgres == fabio.postgres && l.clients == fabio.clients);
        if let (Some(postgres), Some(gateway)) = (fabio.postgres, gateway)
            && gateway.per_second > 0.0
        {
            ratios.entry(postgres).or_default().insert(fabio.clients, fabio.per_second / gateway.per_second);
        }
    }
    ratios
}

fn print_table(legs: &[Leg], fabio_over_gateway: &BTreeMap<&'static str, BTreeMap<usize, f64>>) {
    println!(
        "\n{:<32} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>8}",
        "leg", "clients", "per s", "÷ floor", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU ms/op", "commits"
    );
    for l in legs {
        println!(
            "{:<32} {:>7} {:>9.1} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>10.2} {:>8}",
            l.leg,
            l.clients,
            l.per_second,
            l.ratio_to_floor.map_or("-".to_owned(), |r| format!("{r:.3}")),
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.errors,
            l.system_cpu_ms_per_op,
            l.commits_per_op.map_or("-".to_owned(), |c| format!("{c:.1}")),
        );
    }
    println!();
    for (postgres, ratios) in fabio_over_gateway {
        let parts: Vec<String> = ratios.iter().map(|(clients, r)| format!("{clients} clients {r:.2}")).collect();
        println!("sagas via fabio ÷ via gateway [{postgres}]: {}", parts.join(", "));
    }
    println!("\nCPU ms per operation, by program:");
    for l in legs {
        let parts: Vec<String> = l.cpu_ms_per_op.iter().map(|(p, ms)| format!("{p} {ms:.2}")).collect();
        println!("  {} x{}: {}", l.leg, l.clients, parts.join(", "));
    }
}
