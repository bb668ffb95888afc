//! Faults under load: the whole system as separate processes (as `just up` runs it, one instance
//! of each service behind Fabio), clients placing orders without pause through the gateway, and
//! `kill -9` of each service and of nats-server in turn, each restarted a moment later.
//!
//! What must hold, checked from outside through the API and then in every service's database:
//! - every order ends `APPROVED` (the consumers have credit enough): none is left half-way;
//! - nothing is doubled: one saga, one ticket and one authorization per order;
//! - the reservations are exact: each account reserves the sum of its approved orders;
//! - no 5xx outside the fault windows (a kill, until a moment after the restart), and never a 404
//!   for an order that exists;
//! - recovery: an order placed once the killed process is back is approved within 3 s, and no
//!   saga takes longer than 10 s.
//!
//! The load and the faults are bounded (about a minute and a half) and the test runs alone in its
//! binary, so it does not starve the rest of the suite. The service binaries must have been built
//! next to `ftgo-local` (`cargo test --workspace` builds every binary before it runs any test).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ftgo_catalog::ServiceName;
use ftgo_local::services::{self, Dirs, RunningService};
use ftgo_testenv::{Consul, Fabio, Nats, Postgres};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

/// Clients placing orders at once.
const CLIENTS: usize = 3;
/// Load before the first fault, between faults and after the last one.
const STEADY: Duration = Duration::from_secs(6);
/// How long a killed process stays down.
const DOWN: Duration = Duration::from_secs(1);
/// After a restart, how long errors are still part of the fault (the breaker's trial, Fabio's
/// health check, the redelivery of what the killed process held).
const GRACE: Duration = Duration::from_secs(3);

/// What one client request got, and when.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    what: &'static str,
    status: Option<StatusCode>,
    detail: String,
}

/// An order a client placed (201), and when the client saw it approved.
#[derive(Debug, Clone)]
struct Placed {
    id: String,
    placed: Instant,
    approved: Option<Instant>,
}

/// One fault: what was killed, when, and when it served again.
#[derive(Debug, Clone)]
struct Fault {
    victim: &'static str,
    killed: Instant,
    back: Instant,
}

impl Fault {
    fn covers(&self, at: Instant) -> bool {
        at >= self.killed && at <= self.back + GRACE
    }
}

#[derive(Default)]
struct Record {
    calls: Vec<Call>,
    orders: Vec<Placed>,
}

struct Client {
    base: String,
    http: reqwest::Client,
    record: Arc<Mutex<Record>>,
}

impl Client {
    async fn call(&self, what: &'static str, request: reqwest::RequestBuilder) -> (Option<StatusCode>, Value) {
        let answer = request.send().await;
        let (status, body, detail) = match answer {
            Ok(response) => {
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (Some(status), body.clone(), body.to_string())
            }
            Err(e) => (None, Value::Null, e.to_string()),
        };
        self.record.lock().unwrap().calls.push(Call { at: Instant::now(), what, status, detail });
        (status, body)
    }

    /// Places orders until `stop`, following each to its outcome.
    async fn place_orders(&self, consumer_id: &str, restaurant_id: &str, stop: CancellationToken) {
        let body = json!({
            "consumerId": consumer_id,
            "restaurantId": restaurant_id,
            "deliveryAddress": {"street1": "9 Telegraph Ave", "city": "Oakland", "state": "CA", "zip": "94612"},
            "lineItems": [{"menuItemId": "1", "quantity": 1}],
        });
        while !stop.is_cancelled() {
            // Each order has its key: the gateway may send it again to another instance.
            let key = uuid::Uuid::new_v4().to_string();
            let post = self.http.post(format!("{}/api/orders", self.base)).header("Idempotency-Key", key).json(&body);
            let (status, answer) = self.call("POST /api/orders", post).await;
            if status != Some(StatusCode::CREATED) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let id = answer["orderId"].as_str().expect("an order id").to_owned();
            let index = {
                let mut record = self.record.lock().unwrap();
                record.orders.push(Placed { id: id.clone(), placed: Instant::now(), approved: None });
                record.orders.len() - 1
            };
            // Follow it, as a client would, until it is approved (or the client's patience ends).
            let url = format!("{}/api/orders/{id}?wait=APPROVED,REJECTED&timeout=5s&view=summary", self.base);
            let patience = Instant::now() + Duration::from_secs(30);
            while Instant::now() < patience {
                let (status, order) = self.call("GET /api/orders/{id}", self.http.get(&url)).await;
                if status == Some(StatusCode::OK) && order["state"] != "APPROVAL_PENDING" {
                    if order["state"] == "APPROVED" {
                        self.record.lock().unwrap().orders[index].approved = Some(Instant::now());
                    }
                    break;
                }
                if status != Some(StatusCode::OK) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The whole system, each piece a process of its own.
struct System {
    _postgres: Postgres,
    nats: Nats,
    _consul: Consul,
    _fabio: Fabio,
    /// Every instance of every back-end service.
    services: BTreeMap<ServiceName, Vec<RunningService>>,
    _gateway: ftgo_testenv::process::ServerProcess,
    base: String,
    _dirs: tempfile::TempDir,
}

/// The whole system with `replicas` instances of each back-end service.
async fn start_system(replicas: usize) -> System {
    ftgo_testenv::init_test_tracing();
    let state = tempfile::tempdir().unwrap();
    let dirs = Dirs {
        bin: Path::new(env!("CARGO_BIN_EXE_ftgo-local")).parent().unwrap().to_owned(),
        settings: state.path().join("settings"),
        logs: state.path().join("logs"),
    };
    for dir in [&dirs.settings, &dirs.logs] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let (postgres, nats, consul) = tokio::try_join!(Postgres::start(), Nats::start(), Consul::start()).unwrap();
    let fabio = Fabio::start(&consul).await.unwrap();
    let mut running = BTreeMap::new();
    for service in ServiceName::back_end() {
        let instances = services::start(service, replicas, &dirs, &postgres, &nats, &consul).await.unwrap();
        running.insert(service, instances);
    }
    let listen = SocketAddr::from(([127, 0, 0, 1], ftgo_testenv::process::free_port().unwrap()));
    let gateway = services::start_gateway(&dirs, listen, &consul, &fabio).await.unwrap();
    services::wait_for_routes(&fabio).await.unwrap();
    System {
        _postgres: postgres,
        nats,
        _consul: consul,
        _fabio: fabio,
        services: running,
        _gateway: gateway,
        base: format!("http://{listen}"),
        _dirs: state,
    }
}

impl System {
    async fn db(&self, service: ServiceName) -> PgConnection {
        PgConnection::connect(&self.services[&service][0].database_url).await.unwrap()
    }

    /// Kills `victim` with SIGKILL, leaves it down for [`DOWN`], starts it again and waits until
    /// it serves.
    async fn crash(&mut self, victim: Option<ServiceName>) -> Fault {
        let killed = Instant::now();
        let name = match victim {
            Some(service) => {
                let instance = &mut self.services.get_mut(&service).unwrap()[0];
                instance.kill();
                tokio::time::sleep(DOWN).await;
                instance.restart().await.unwrap();
                service.binary()
            }
            None => {
                self.nats.kill();
                tokio::time::sleep(DOWN).await;
                self.nats.restart().await.unwrap();
                "nats-server"
            }
        };
        Fault { victim: name, killed, back: Instant::now() }
    }
}

/// A consumer with credit for every order the test can place, and a restaurant whose menu has
/// reached the Order Service.
async fn customer_and_restaurant(http: &reqwest::Client, base: &str) -> (String, String) {
    let create = |path: &str, body: Value, id: &'static str| {
        let request = http.post(format!("{base}{path}")).json(&body);
        async move {
            let created: Value = request.send().await.unwrap().json().await.unwrap();
            created[id].as_str().unwrap_or_else(|| panic!("no {id} in {created}")).to_owned()
        }
    };
    let consumer_id =
        create("/api/consumers", json!({"name": {"firstName": "Faulty", "lastName": "Tower"}}), "consumerId").await;
    let restaurant = json!({
        "name": "Chaos Kitchen",
        "address": {"street1": "1 Shattuck Ave", "city": "Berkeley", "state": "CA", "zip": "94704"},
        "menu": {"menuItems": [{"id": "1", "name": "Dal", "price": "5.00"}]}
    });
    let restaurant_id = create("/api/restaurants", restaurant, "restaurantId").await;
    ftgo_testenv::eventually("the account to be opened with credit enough", Duration::from_secs(30), || async {
        let raised = http
            .put(format!("{base}/api/accounts/{consumer_id}"))
            .json(&json!({"creditLimit": "100000.00"}))
            .send()
            .await
            .ok()?;
        raised.status().is_success().then_some(())
    })
    .await;
    (consumer_id, restaurant_id)
}

/// A consumer with credit, a restaurant, and the clients placing orders until [`Load::finish`].
struct Load {
    consumer_id: String,
    record: Arc<Mutex<Record>>,
    stop: CancellationToken,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(system: &System) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        let (consumer_id, restaurant_id) = customer_and_restaurant(&http, &system.base).await;
        // The menu reaches the Order Service by event: the first order may have to wait for it.
        ftgo_testenv::eventually("the menu to reach the Order Service", Duration::from_secs(30), || async {
            let body = json!({
                "consumerId": consumer_id,
                "restaurantId": restaurant_id,
                "deliveryAddress": {"street1": "9 Telegraph Ave", "city": "Oakland", "state": "CA", "zip": "94612"},
                "lineItems": [{"menuItemId": "1", "quantity": 1}],
            });
            let placed = http.post(format!("{}/api/orders", system.base)).json(&body).send().await.ok()?;
            (placed.status() == StatusCode::CREATED).then_some(())
        })
        .await;
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = CancellationToken::new();
        let clients = (0..CLIENTS)
            .map(|_| {
                let client = Client { base: system.base.clone(), http: http.clone(), record: record.clone() };
                let (consumer_id, restaurant_id, stop) = (consumer_id.clone(), restaurant_id.clone(), stop.clone());
                tokio::spawn(async move { client.place_orders(&consumer_id, &restaurant_id, stop).await })
            })
            .collect();
        Self { consumer_id, record, stop, clients }
    }

    /// Stops the clients and returns what they did.
    async fn finish(self) -> (String, Record) {
        self.stop.cancel();
        for client in self.clients {
            client.await.unwrap();
        }
        let record = std::mem::take(&mut *self.record.lock().unwrap());
        println!("{} orders placed, {} requests", record.orders.len(), record.calls.len());
        (self.consumer_id, record)
    }
}

/// After the load: every order approved, in every database, exactly once, the reservations
/// exact, and no saga longer than 10 s. Returns what does not hold.
async fn settled_exactly_once(system: &System, record: &Record, consumer_id: &str) -> Vec<String> {
    let mut failures = Vec::new();
    if record.orders.len() < 30 {
        failures.push(format!("the load placed only {} orders", record.orders.len()));
    }
    let settle_until = Instant::now() + Duration::from_secs(30);
    let settled = loop {
        let mut orders = system.db(ServiceName::Order).await;
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE state <> 'APPROVED'")
            .fetch_one(&mut orders)
            .await
            .unwrap();
        if pending == 0 || Instant::now() > settle_until {
            break pending == 0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut orders = system.db(ServiceName::Order).await;
    let order_states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM orders GROUP BY state ORDER BY state")
            .fetch_all(&mut orders)
            .await
            .unwrap();
    if !settled {
        failures.push(format!("orders not all APPROVED 30 s after the load: {order_states:?}"));
    }
    let approved: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT id, order_total_minor FROM orders WHERE state = 'APPROVED' ORDER BY id")
            .fetch_all(&mut orders)
            .await
            .unwrap();
    let placed_ids: BTreeSet<String> = record.orders.iter().map(|o| o.id.clone()).collect();
    let stored_ids: BTreeSet<String> = approved.iter().map(|(id, _)| id.to_string()).collect();
    if !placed_ids.is_subset(&stored_ids) {
        failures.push(format!("{} placed orders are not APPROVED", placed_ids.difference(&stored_ids).count()));
    }

    let mut orchestrator = system.db(ServiceName::Orchestrator).await;
    let sagas: Vec<(String, i64, i64, f64)> = sqlx::query_as(
        "SELECT order_id, count(*), count(*) FILTER (WHERE state = 'SUCCEEDED'),
                max(EXTRACT(EPOCH FROM updated_at - created_at))::float8
         FROM sagas WHERE saga_type = 'CreateOrderSaga' GROUP BY order_id",
    )
    .fetch_all(&mut orchestrator)
    .await
    .unwrap();
    for (order_id, count, succeeded, seconds) in &sagas {
        if *count != 1 || *succeeded != 1 {
            failures.push(format!("order {order_id}: {count} Create Order sagas, {succeeded} succeeded"));
        }
        if *seconds > 10.0 {
            failures.push(format!("order {order_id}: its saga took {seconds:.1} s"));
        }
    }
    if sagas.len() != approved.len() {
        failures.push(format!("{} sagas for {} approved orders", sagas.len(), approved.len()));
    }
    let slowest = sagas.iter().map(|(_, _, _, seconds)| *seconds).fold(0.0, f64::max);
    println!("{} sagas, the slowest took {slowest:.2} s", sagas.len());

    let mut kitchen = system.db(ServiceName::Kitchen).await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE state = 'AWAITING_ACCEPTANCE'")
        .fetch_one(&mut kitchen)
        .await
        .unwrap();
    let tickets: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets").fetch_one(&mut kitchen).await.unwrap();
    if waiting != approved.len() as i64 || tickets != waiting {
        failures.push(format!("{tickets} tickets, {waiting} awaiting acceptance, for {} orders", approved.len()));
    }

    let mut accounting = system.db(ServiceName::Accounting).await;
    let (authorized, authorized_total): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(amount_minor)::bigint FROM authorizations WHERE state = 'AUTHORIZED'")
            .fetch_one(&mut accounting)
            .await
            .unwrap();
    let reserved: i64 = sqlx::query_scalar("SELECT reserved_minor FROM accounts WHERE consumer_id = $1")
        .bind(uuid::Uuid::parse_str(consumer_id).unwrap())
        .fetch_one(&mut accounting)
        .await
        .unwrap();
    let approved_total: i64 = approved.iter().map(|(_, total)| total).sum();
    if authorized != approved.len() as i64
        || authorized_total.unwrap_or(0) != approved_total
        || reserved != approved_total
    {
        failures.push(format!(
            "{authorized} authorizations of {authorized_total:?} and {reserved} reserved, for {} orders of {approved_total}",
            approved.len()
        ));
    }
    failures
}

/// The two scenarios each run the whole system: one at a time, so that they do not starve each
/// other (or anything else) on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_any_process_under_load_loses_nothing_and_heals_in_seconds() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut system = start_system(1).await;
    let load = Load::start(&system).await;
    let victims = [
        Some(ServiceName::Consumer),
        Some(ServiceName::Kitchen),
        Some(ServiceName::Accounting),
        Some(ServiceName::Order),
        Some(ServiceName::Orchestrator),
        None,
    ];
    let mut faults = Vec::new();
    for victim in victims {
        tokio::time::sleep(STEADY).await;
        let fault = system.crash(victim).await;
        println!("killed {} and had it back after {:?}", fault.victim, fault.back - fault.killed);
        faults.push(fault);
    }
    tokio::time::sleep(STEADY).await;
    let (consumer_id, record) = load.finish().await;
    let in_fault = |at: Instant| faults.iter().find(|fault| fault.covers(at));

    // From outside: no 5xx (or no answer) outside the fault windows, never a 404.
    let mut failures = Vec::new();
    for call in &record.calls {
        let ok = matches!(call.status, Some(status) if !status.is_server_error());
        if !ok && in_fault(call.at).is_none() {
            failures.push(format!("{} answered {:?} outside any fault: {}", call.what, call.status, call.detail));
        }
        if call.status == Some(StatusCode::NOT_FOUND) {
            failures.push(format!("{} answered 404 for an order that exists: {}", call.what, call.detail));
        }
    }
    let during: Vec<&Call> = record.calls.iter().filter(|call| in_fault(call.at).is_some()).collect();
    let failed = during.iter().filter(|call| !matches!(call.status, Some(status) if status.is_success())).count();
    println!("{} requests during the faults, {failed} of them failed", during.len());

    // Recovery: after each fault, the first order placed once the process is back is approved
    // within 3 s of that moment.
    for fault in &faults {
        let failed: Vec<&Call> = during
            .iter()
            .copied()
            .filter(|call| fault.covers(call.at) && !matches!(call.status, Some(status) if status.is_success()))
            .collect();
        let last = failed.iter().map(|call| call.at).max().map(|at| at.saturating_duration_since(fault.back));
        println!("{}: {} failed requests, the last {last:?} after the restart", fault.victim, failed.len());
        let first = record.orders.iter().filter(|order| order.placed >= fault.back).min_by_key(|order| order.placed);
        let recovered = first.and_then(|order| order.approved).map(|approved| approved - fault.back);
        println!("after {}: the first new order was approved {recovered:?} after the restart", fault.victim);
        if recovered.is_none_or(|took| took > Duration::from_secs(3)) {
            failures.push(format!(
                "after {} came back, the first new order was approved {recovered:?} later",
                fault.victim
            ));
        }
    }
    failures.extend(settled_exactly_once(&system, &record, &consumer_id).await);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_instances_of_each_service_a_kill_9_fails_no_client_request() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut system = start_system(2).await;
    let load = Load::start(&system).await;
    for service in ServiceName::back_end() {
        tokio::time::sleep(STEADY).await;
        let instance = &mut system.services.get_mut(&service).unwrap()[0];
        instance.kill();
        println!("killed one {}", service.binary());
        // The other instance carries on alone for a while before this one is back.
        tokio::time::sleep(STEADY).await;
        instance.restart().await.unwrap();
    }
    tokio::time::sleep(STEADY).await;
    let (consumer_id, record) = load.finish().await;

    let mut failures: Vec<String> = record
        .calls
        .iter()
        .filter(|call| !matches!(call.status, Some(status) if status.is_success()))
        .map(|call| format!("{} answered {:?}: {}", call.what, call.status, call.detail))
        .collect();
    failures.extend(settled_exactly_once(&system, &record, &consumer_id).await);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
