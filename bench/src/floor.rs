//! The Postgres-only floor: the Create Order saga's own transactions, in the order the saga makes
//! them, without the services, NATS, the gateway or Fabio.
//!
//! The floor has a database of its own (`bench_floor`) on the system's Postgres server, with one
//! schema per service made by the real migrations, compiled in from the services' source: the
//! messaging ones (the outbox with its partial index, processed messages, dead letters; the outbox's
//! `NOTIFY` trigger is created by the first and dropped by a later one, since the relay is woken
//! in-process, so the floor has none either) and the service's own. Per saga, on one connection, a
//! client makes the 17 commits a Create Order saga makes when everything is approved:
//!
//! 1. the Order Service's `CreateOrder`: the menu read, the order inserted, `OrderCreated` into its
//!    outbox;
//! 2. then, for each of the 11 messages (`OrderCreated`, `VerifyConsumer`, `ConsumerVerified`,
//!    `CreateTicket`, `TicketCreated`, `AuthorizeCard`, `CardAuthorized`, `ConfirmCreateTicket`,
//!    `TicketCommandSucceeded`, `ApproveOrder`, `OrderCommandSucceeded`), the consumer's
//!    transaction (`inbox.rs`): its row in `processed_messages`, then what the handler does (the
//!    saga row inserted or locked and updated, the consumer read, the ticket inserted or locked and
//!    updated, the account locked and its reservation updated with the authorization upserted, the
//!    order locked and approved) and, except after the last reply, the next message into that
//!    service's outbox;
//! 3. the relays' marks: each relay publishes what its service committed on the fast path (no
//!    transaction) and marks the published rows in one `UPDATE` every 50 ms. At one client a saga
//!    lasts about that long, so the floor makes one `UPDATE` per service per saga, for that saga's
//!    rows; with many clients the system's marks cover several sagas, so this overstates them.
//!
//! That is 1 + 11 + 5 = 17. Publishing to JetStream, the gRPC calls and the waiting `GET` are not
//! in it: the floor is what Postgres alone needs. Row sizes follow the real rows: the same JSON
//! shapes, payloads of the size the protobuf messages encode to, the same headers.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sqlx::{
    AssertSqlSafe, Connection, PgConnection, Postgres, Row, Transaction,
    migrate::Migrator,
    types::{
        Json, Uuid,
        chrono::{DateTime, Utc},
    },
};

/// The floor's database on the system's Postgres server.
pub const DATABASE: &str = "bench_floor";

/// The real migrations, compiled in as the services compile theirs: every messaging migration and
/// then every service's own, in a schema per service in the floor's database.
static MESSAGING_MIGRATIONS: Migrator = sqlx::migrate!("../services/platform/migrations");
static SERVICE_MIGRATIONS: [(&str, Migrator); 5] = [
    ("order_service", sqlx::migrate!("../services/order/migrations")),
    ("consumer_service", sqlx::migrate!("../services/consumer/migrations")),
    ("kitchen_service", sqlx::migrate!("../services/kitchen/migrations")),
    ("accounting_service", sqlx::migrate!("../services/accounting/migrations")),
    ("orchestrator_service", sqlx::migrate!("../services/orchestrator/migrations")),
];

/// The SQL of `migrator`'s migrations, in order.
fn sql(migrator: &Migrator) -> impl Iterator<Item = &str> {
    migrator.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| m.sql.as_str())
}

/// One service's messaging statements, as `outbox.rs`, `relay.rs` and `inbox.rs` write them.
struct Service {
    outbox_insert: &'static str,
    relay_mark: &'static str,
    processed: &'static str,
}

macro_rules! service {
    ($schema:literal) => {
        Service {
            outbox_insert: concat!(
                "INSERT INTO ",
                $schema,
                ".outbox (id, subject, message_type, headers, payload) VALUES ($1, $2, $3, $4, $5)"
            ),
            relay_mark: concat!(
                "UPDATE ",
                $schema,
                ".outbox SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL"
            ),
            processed: concat!(
                "INSERT INTO ",
                $schema,
                ".processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            ),
        }
    };
}

static ORDER: Service = service!("order_service");
static CONSUMER: Service = service!("consumer_service");
static KITCHEN: Service = service!("kitchen_service");
static ACCOUNTING: Service = service!("accounting_service");
static ORCHESTRATOR: Service = service!("orchestrator_service");

/// `SELECT <every ticket column> FROM tickets <tail>`, as the Kitchen Service's store reads them.
macro_rules! select_tickets {
    ($tail:literal) => {
        concat!(
            "SELECT id, order_id, restaurant_id, state, previous_state, line_items, ready_by FROM kitchen_service.tickets ",
            $tail
        )
    };
}

/// The Create Order saga's steps, as its history names them.
const STEPS: [&str; 6] =
    ["create order", "verify consumer", "create ticket", "authorize card", "confirm ticket", "approve order"];

/// A message on its way through an outbox: the id its consumer records as processed.
struct Message {
    id: Uuid,
    subject: &'static str,
    message_type: &'static str,
    headers: BTreeMap<&'static str, String>,
    /// The size of the encoded protobuf message.
    payload_bytes: usize,
}

/// The W3C trace context every message carries (the services inject it from the current span).
fn traceparent() -> String {
    let (trace, span) = (Uuid::new_v4().simple().to_string(), Uuid::new_v4().simple().to_string());
    format!("00-{trace}-{}-01", &span[..16])
}

impl Message {
    fn event(subject: &'static str, message_type: &'static str, payload_bytes: usize) -> Self {
        let headers = BTreeMap::from([("traceparent", traceparent())]);
        Self { id: Uuid::new_v4(), subject, message_type, headers, payload_bytes }
    }

    /// A command from the orchestrator, with the saga's id, step and reply subject.
    fn command(saga: &Saga, subject: &'static str, message_type: &'static str, payload_bytes: usize) -> Self {
        let mut message = Self::event(subject, message_type, payload_bytes);
        message.headers.insert("Ftgo-Saga-Id", saga.id.to_string());
        message.headers.insert("Ftgo-Saga-Step", format!("{}:f", saga.step));
        message.headers.insert("Ftgo-Reply-To", "ftgo.reply.orchestrator.saga".to_owned());
        message
    }

    /// A participant's reply to `command`, with its saga id and step.
    fn reply(command: &Message, message_type: &'static str, payload_bytes: usize) -> Self {
        let mut message = Self::event("ftgo.reply.orchestrator.saga", message_type, payload_bytes);
        for header in ["Ftgo-Saga-Id", "Ftgo-Saga-Step"] {
            message.headers.insert(header, command.headers[header].clone());
        }
        message
    }
}

// Encoded sizes: a UUID string field is 38 bytes, a Money of 5.00 is 5, a ticket line item 12.
const ORDER_CREATED: usize = 180; // an Order: three ids, state, line item, total, address
const VERIFY_CONSUMER: usize = 81; // consumer id, order id, total
const CREATE_TICKET: usize = 88; // order id, restaurant id, line item
const AUTHORIZE_CARD: usize = 81; // consumer id, order id, total
const ONE_ID: usize = 38; // every reply, ConfirmCreateTicket and ApproveOrder

/// The saga instance as the orchestrator stores it.
struct Saga {
    id: Uuid,
    step: i32,
    data: Value,
    history: Vec<Value>,
}

impl Saga {
    fn record(&mut self, step: usize) {
        let at = Utc::now().to_rfc3339();
        self.history.push(json!({"name": STEPS[step], "status": "done", "at": at}));
    }
}

/// The floor's database, ready for sagas: one consumer with an account per client, and one
/// restaurant with its menu (in the Kitchen Service and replicated in the Order Service).
pub struct Floor {
    url: String,
    consumers: Vec<Uuid>,
    restaurant: Uuid,
}

/// `postgres_url` names the system's `postgres` database, as a superuser.
pub async fn prepare(postgres_url: &str, clients: usize) -> Result<Floor> {
    let (server, _) = postgres_url.rsplit_once('/').context("a Postgres URL ends with its database")?;
    let url = format!("{server}/{DATABASE}");
    let mut admin = PgConnection::connect(postgres_url).await.context("connecting to the system's Postgres")?;
    for statement in [format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"), format!("CREATE DATABASE {DATABASE}")]
    {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut admin).await?;
    }
    admin.close().await?;

    let mut db = PgConnection::connect(&url).await?;
    for (schema, service) in &SERVICE_MIGRATIONS {
        // As `ftgo_platform::db::migrate` does: the messaging migrations (here in the service's
        // schema, not in one called `messaging`), then the service's own.
        let mut ddl = format!("CREATE SCHEMA {schema}; SET search_path TO {schema};\n");
        for migration in sql(&MESSAGING_MIGRATIONS) {
            ddl.push_str(&migration.replace("messaging.", &format!("{schema}.")));
            ddl.push('\n');
        }
        for migration in sql(service) {
            ddl.push_str(migration);
            ddl.push('\n');
        }
        ddl.push_str("RESET search_path;");
        sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut db).await.with_context(|| format!("migrating {schema}"))?;
    }
    let restaurant = Uuid::new_v4();
    let address = json!({"street1": "1 Main St", "street2": "", "city": "Berkeley", "state": "CA", "zip": "94704"});
    sqlx::query("INSERT INTO kitchen_service.restaurants (id, name, address) VALUES ($1, 'Bench Kitchen', $2)")
        .bind(restaurant)
        .bind(Json(address))
        .execute(&mut db)
        .await?;
    sqlx::query(
        "INSERT INTO kitchen_service.menu_items (restaurant_id, id, name, price_minor, position) VALUES ($1, '1', 'Dal', 500, 0)",
    )
    .bind(restaurant)
    .execute(&mut db)
    .await?;
    sqlx::query("INSERT INTO order_service.restaurants (id, name) VALUES ($1, 'Bench Kitchen')")
        .bind(restaurant)
        .execute(&mut db)
        .await?;
    sqlx::query(
        "INSERT INTO order_service.menu_items (restaurant_id, id, name, price_minor) VALUES ($1, '1', 'Dal', 500)",
    )
    .bind(restaurant)
    .execute(&mut db)
    .await?;
    let mut consumers = Vec::new();
    for n in 0..clients {
        let consumer = Uuid::new_v4();
        sqlx::query("INSERT INTO consumer_service.consumers (id, first_name, last_name) VALUES ($1, 'Bench', $2)")
            .bind(consumer)
            .bind(format!("Client{n}"))
            .execute(&mut db)
            .await?;
        sqlx::query(
            "INSERT INTO accounting_service.accounts (consumer_id, credit_limit_minor, reserved_minor, enabled)
             VALUES ($1, 10000000000, 0, true)",
        )
        .bind(consumer)
        .execute(&mut db)
        .await?;
        consumers.push(consumer);
    }
    db.close().await?;
    Ok(Floor { url, consumers, restaurant })
}

impl Floor {
    /// Client `n`, connected: one connection, as the saga's transactions happen one after another.
    pub async fn client(&self, n: usize) -> Result<Client> {
        let consumer = *self.consumers.get(n).context("the floor has fewer consumers than clients")?;
        let conn = PgConnection::connect(&self.url).await.context("connecting to the floor's database")?;
        Ok(Client { conn, consumer, restaurant: self.restaurant })
    }
}

pub struct Client {
    conn: PgConnection,
    consumer: Uuid,
    restaurant: Uuid,
}

/// Adds `message` to `service`'s outbox, in the caller's transaction (`outbox::enqueue`).
async fn enqueue(tx: &mut PgConnection, service: &Service, message: &Message) -> sqlx::Result<()> {
    sqlx::query(service.outbox_insert)
        .bind(message.id)
        .bind(message.subject)
        .bind(message.message_type)
        .bind(Json(&message.headers))
        .bind(vec![0x2a_u8; message.payload_bytes])
        .execute(tx)
        .await?;
    Ok(())
}

/// What each service's relay published on its fast path during one saga, marked at its end.
#[derive(Default)]
struct Published(Vec<(&'static Service, Uuid)>);

impl Published {
    /// Enqueues `message` into `service`'s outbox and commits `tx`: the relay's fast path then
    /// publishes it without a transaction of its own.
    async fn commit(
        &mut self,
        mut tx: Transaction<'_, Postgres>,
        service: &'static Service,
        message: &Message,
    ) -> sqlx::Result<()> {
        enqueue(&mut tx, service, message).await?;
        tx.commit().await?;
        self.0.push((service, message.id));
        Ok(())
    }

    /// Each service's relay marks what it published, one `UPDATE` for many messages. At one client
    /// that is one per service per saga; with many clients the system's marks (every 50 ms) cover
    /// several sagas.
    async fn mark(self, conn: &mut PgConnection) -> Result<()> {
        for service in [&ORDER, &ORCHESTRATOR, &CONSUMER, &KITCHEN, &ACCOUNTING] {
            let ids: Vec<Uuid> = self.0.iter().filter(|(s, _)| std::ptr::eq(*s, service)).map(|(_, id)| *id).collect();
            let marked = sqlx::query(service.relay_mark).bind(&ids).execute(&mut *conn).await?.rows_affected();
            if marked != ids.len() as u64 {
                bail!("a relay marked {marked} of the {} rows it published", ids.len());
            }
        }
        Ok(())
    }
}

/// The consumer's first statement (`InboxConsumer::apply_once`): the message recorded as processed.
async fn inbox(tx: &mut PgConnection, service: &Service, consumer: &str, message: &Message) -> Result<()> {
    let fresh = sqlx::query(service.processed).bind(consumer).bind(message.id).execute(tx).await?.rows_affected();
    if fresh != 1 {
        bail!("message {} was already processed by {consumer}", message.id);
    }
    Ok(())
}

/// A command the orchestrator sends: subject, type and encoded size.
type NextCommand = (&'static str, &'static str, usize);

/// The orchestrator applying a reply (`SagaReplies`): the saga locked, advanced and saved, and its
/// next command (if any) into the outbox and relayed. Returns that command.
/// The Kitchen Service's `save_ticket`: one statement for a new ticket and a changed one.
async fn save_ticket(
    tx: &mut PgConnection,
    ticket_id: Uuid,
    order_id: Uuid,
    restaurant: Uuid,
    state: &str,
    items: &Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO kitchen_service.tickets (id, order_id, restaurant_id, state, previous_state, line_items, ready_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE
         SET state = EXCLUDED.state, previous_state = EXCLUDED.previous_state, line_items = EXCLUDED.line_items,
             ready_by = EXCLUDED.ready_by, updated_at = now()",
    )
    .bind(ticket_id)
    .bind(order_id.to_string())
    .bind(restaurant)
    .bind(state)
    .bind(None::<String>)
    .bind(Json(items))
    .bind(None::<DateTime<Utc>>)
    .execute(tx)
    .await?;
    Ok(())
}

async fn advance(
    conn: &mut PgConnection,
    published: &mut Published,
    saga: &mut Saga,
    reply: &Message,
    next: Option<NextCommand>,
) -> Result<Option<Message>> {
    let mut tx = conn.begin().await?;
    inbox(&mut tx, &ORCHESTRATOR, "orchestrator-service-replies", reply).await?;
    sqlx::query(
        "SELECT id, saga_type, order_id, state, step, data, history, failure_reason, created_at, updated_at
         FROM orchestrator_service.sagas WHERE id = $1 FOR UPDATE",
    )
    .bind(saga.id)
    .fetch_optional(&mut *tx)
    .await?
    .context("the saga row is missing")?;
    saga.record(saga.step as usize);
    saga.step += 1;
    let next = next.map(|(subject, message_type, bytes)| Message::command(saga, subject, message_type, bytes));
    let state = if next.is_some() { "RUNNING" } else { "SUCCEEDED" };
    sqlx::query(
        "UPDATE orchestrator_service.sagas SET state = $2, step = $3, data = $4, history = $5, failure_reason = $6,
         updated_at = now() WHERE id = $1",
    )
    .bind(saga.id)
    .bind(state)
    .bind(saga.step)
    .bind(Json(&saga.data))
    .bind(Json(&saga.history))
    .bind(None::<String>)
    .execute(&mut *tx)
    .await?;
    match &next {
        Some(next) => published.commit(tx, &ORCHESTRATOR, next).await?,
        None => tx.commit().await?,
    }
    Ok(next)
}

impl Client {
    /// One Create Order saga's transactions, approved at the end.
    pub async fn saga(&mut self) -> Result<()> {
        let (consumer, restaurant) = (self.consumer, self.restaurant);
        let conn = &mut self.conn;
        let order_id = Uuid::new_v4();
        let line_items = json!([{"menuItemId": "1", "name": "Dal", "priceMinor": 500, "quantity": 1}]);
        let mut published = Published::default();

        // The Order Service's CreateOrder.
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT name FROM order_service.restaurants WHERE id = $1")
            .bind(restaurant)
            .fetch_optional(&mut *tx)
            .await?
            .context("the floor's restaurant is missing")?;
        sqlx::query("SELECT id, name, price_minor FROM order_service.menu_items WHERE restaurant_id = $1 ORDER BY id")
            .bind(restaurant)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO order_service.orders (id, consumer_id, restaurant_id, state, line_items, order_total_minor,
             delivery_address) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(order_id)
        .bind(consumer.to_string())
        .bind(restaurant)
        .bind("APPROVAL_PENDING")
        .bind(Json(&line_items))
        .bind(500_i64)
        .bind(Json(
            json!({"street1": "9 Telegraph Ave", "street2": "", "city": "Oakland", "state": "CA", "zip": "94612"}),
        ))
        .execute(&mut *tx)
        .await?;
        let created = Message::event("ftgo.event.order.OrderCreated", "ftgo.order.v1.OrderCreated", ORDER_CREATED);
        published.commit(tx, &ORDER, &created).await?;

        // The orchestrator starts the saga and asks the Consumer Service to verify the consumer.
        let mut saga = Saga {
            id: Uuid::new_v4(),
            step: 1,
            data: json!({"order_id": order_id.to_string(), "consumer_id": consumer.to_string(),
                "restaurant_id": restaurant.to_string(), "order_total_minor": 500,
                "line_items": [{"menu_item_id": "1", "name": "Dal", "quantity": 1}], "ticket_id": null}),
            history: Vec::new(),
        };
        saga.record(0);
        let verify = Message::command(
            &saga,
            "ftgo.command.consumer.VerifyConsumer",
            "ftgo.consumer.v1.VerifyConsumer",
            VERIFY_CONSUMER,
        );
        let mut tx = conn.begin().await?;
        inbox(&mut tx, &ORCHESTRATOR, "orchestrator-service-order-events", &created).await?;
        sqlx::query(
            "INSERT INTO orchestrator_service.sagas (id, saga_type, order_id, state, step, data, history, failure_reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(saga.id)
        .bind("CreateOrderSaga")
        .bind(order_id.to_string())
        .bind("RUNNING")
        .bind(saga.step)
        .bind(Json(&saga.data))
        .bind(Json(&saga.history))
        .bind(None::<String>)
        .execute(&mut *tx)
        .await?;
        published.commit(tx, &ORCHESTRATOR, &verify).await?;

        // The Consumer Service verifies the consumer.
        let mut tx = conn.begin().await?;
        inbox(&mut tx, &CONSUMER, "consumer-service", &verify).await?;
        sqlx::query("SELECT id, first_name, last_name FROM consumer_service.consumers WHERE id = $1")
            .bind(consumer)
            .fetch_optional(&mut *tx)
            .await?
            .context("the floor's consumer is missing")?;
        let verified = Message::reply(&verify, "ftgo.consumer.v1.ConsumerVerified", ONE_ID);
        published.commit(tx, &CONSUMER, &verified).await?;

        let next = ("ftgo.command.kitchen.CreateTicket", "ftgo.kitchen.v1.CreateTicket", CREATE_TICKET);
        let create_ticket =
            advance(conn, &mut published, &mut saga, &verified, Some(next)).await?.context("no CreateTicket")?;

        // The Kitchen Service creates the ticket.
        let ticket_id = Uuid::new_v4();
        let mut tx = conn.begin().await?;
        inbox(&mut tx, &KITCHEN, "kitchen-service", &create_ticket).await?;
        sqlx::query(select_tickets!("WHERE order_id = $1 FOR UPDATE"))
            .bind(order_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query("SELECT id, name, address FROM kitchen_service.restaurants WHERE id = $1")
            .bind(restaurant)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "SELECT id, name, price_minor FROM kitchen_service.menu_items WHERE restaurant_id = $1 ORDER BY position",
        )
        .bind(restaurant)
        .fetch_all(&mut *tx)
        .await?;
        let ticket_items = json!([{"menuItemId": "1", "name": "Dal", "quantity": 1}]);
        save_ticket(&mut tx, ticket_id, order_id, restaurant, "CREATE_PENDING", &ticket_items).await?;
        let ticket_created = Message::reply(&create_ticket, "ftgo.kitchen.v1.TicketCreated", ONE_ID);
        published.commit(tx, &KITCHEN, &ticket_created).await?;

        saga.data["ticket_id"] = json!(ticket_id.to_string());
        let next = ("ftgo.command.accounting.AuthorizeCard", "ftgo.accounting.v1.AuthorizeCard", AUTHORIZE_CARD);
        let authorize =
            advance(conn, &mut published, &mut saga, &ticket_created, Some(next)).await?.context("no AuthorizeCard")?;

        // The Accounting Service reserves the order's total on the consumer's account.
        let mut tx = conn.begin().await?;
        inbox(&mut tx, &ACCOUNTING, "accounting-service-commands", &authorize).await?;
        let account = sqlx::query(
            "SELECT consumer_id, credit_limit_minor, reserved_minor, enabled FROM accounting_service.accounts
             WHERE consumer_id = $1 FOR UPDATE",
        )
        .bind(consumer)
        .fetch_optional(&mut *tx)
        .await?
        .context("the floor's account is missing")?;
        let (limit, reserved): (i64, i64) = (account.try_get(1)?, account.try_get(2)?);
        sqlx::query("SELECT order_id, consumer_id, amount_minor, state FROM accounting_service.authorizations WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE accounting_service.accounts SET credit_limit_minor = $2, reserved_minor = $3, enabled = $4
             WHERE consumer_id = $1",
        )
        .bind(consumer)
        .bind(limit)
        .bind(reserved + 500)
        .bind(true)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO accounting_service.authorizations (order_id, consumer_id, amount_minor, state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (order_id) DO UPDATE SET amount_minor = $3, state = $4, updated_at = now()",
        )
        .bind(order_id.to_string())
        .bind(consumer)
        .bind(500_i64)
        .bind("AUTHORIZED")
        .execute(&mut *tx)
        .await?;
        let authorized = Message::reply(&authorize, "ftgo.accounting.v1.CardAuthorized", ONE_ID);
        published.commit(tx, &ACCOUNTING, &authorized).await?;

        let next = ("ftgo.command.kitchen.ConfirmCreateTicket", "ftgo.kitchen.v1.ConfirmCreateTicket", ONE_ID);
        let confirm = advance(conn, &mut published, &mut saga, &authorized, Some(next))
            .await?
            .context("no ConfirmCreateTicket")?;

        // The Kitchen Service confirms the ticket.
        let mut tx = conn.begin().await?;
        inbox(&mut tx, &KITCHEN, "kitchen-service", &confirm).await?;
        sqlx::query(select_tickets!("WHERE id = $1 FOR UPDATE"))
            .bind(ticket_id)
            .fetch_optional(&mut *tx)
            .await?
            .context("the ticket is missing")?;
        save_ticket(&mut tx, ticket_id, order_id, restaurant, "AWAITING_ACCEPTANCE", &ticket_items).await?;
        let confirmed = Message::reply(&confirm, "ftgo.kitchen.v1.TicketCommandSucceeded", ONE_ID);
        published.commit(tx, &KITCHEN, &confirmed).await?;

        let next = ("ftgo.command.order.ApproveOrder", "ftgo.order.v1.ApproveOrder", ONE_ID);
        let approve =
            advance(conn, &mut published, &mut saga, &confirmed, Some(next)).await?.context("no ApproveOrder")?;

        // The Order Service approves the order.
        let mut tx = conn.begin().await?;
        inbox(&mut tx, &ORDER, "order-service-commands", &approve).await?;
        sqlx::query(
            "SELECT id, consumer_id, restaurant_id, state, line_items, order_total_minor, delivery_address,
             rejection_reason, pending_revision FROM order_service.orders WHERE id = $1 FOR UPDATE",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .context("the order is missing")?;
        sqlx::query(
            "UPDATE order_service.orders SET state = $2, line_items = $3, order_total_minor = $4, rejection_reason = $5,
             pending_revision = $6, updated_at = now() WHERE id = $1",
        )
        .bind(order_id)
        .bind("APPROVED")
        .bind(Json(&line_items))
        .bind(500_i64)
        .bind(None::<String>)
        .bind(None::<Json<Value>>)
        .execute(&mut *tx)
        .await?;
        let approved = Message::reply(&approve, "ftgo.order.v1.OrderCommandSucceeded", ONE_ID);
        published.commit(tx, &ORDER, &approved).await?;

        // The orchestrator ends the saga, with nothing more to send; then the relays mark.
        advance(conn, &mut published, &mut saga, &approved, None).await?;
        published.mark(conn).await?;
        Ok(())
    }

    /// Closes the connection, so that its backend exits and reports its last commits.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
