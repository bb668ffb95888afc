//! What drives the sagas: the Order Service's events start them (`ftgo.event.order.>`), and the
//! participants' replies (`ftgo.reply.orchestrator.>`) move them on. Each message is applied in
//! one transaction that also records it as processed and writes the next command to the outbox,
//! so a crash at any point loses nothing and repeats nothing.

use std::{
    sync::{LazyLock, OnceLock},
    time::Duration,
};

use chrono::Utc;
use ftgo_platform::{
    ids::{OrderId, SagaId},
    messaging::{
        dispatch::Table,
        inbox::{ConsumerConfig, HandlerError, IncomingMessage, MessageHandler},
        outbox,
        saga::SAGA_STEP_HEADER,
    },
    money::Money,
    runtime::Running,
    service::Infrastructure,
    telemetry,
};
use ftgo_proto::order::v1 as order;
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram},
};
use sqlx::PgConnection;

use crate::{
    StepDeadlines,
    sagas::{
        Reply, ReplyError, Saga, SagaDefinition, SagaVisitor,
        cancel_order::CancelOrderData,
        create_order::{CreateOrderData, TicketLine},
        revise_order::ReviseOrderData,
        with_saga_type,
    },
    store::{self, SagaRow},
};

fn refuse(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Rejected(anyhow::anyhow!("{e}"))
}

/// The durable consumers this service runs: name (also the key in `processed_messages`), subjects,
/// handler.
pub fn consumers(infra: &Infrastructure, running: &mut Running, deadlines: StepDeadlines) {
    let events = ConsumerConfig::new("orchestrator-service-order-events", ["ftgo.event.order.>"]);
    infra.consume(running, events, OrderEvents { deadlines });
    let replies = ConsumerConfig::new("orchestrator-service-replies", ["ftgo.reply.orchestrator.>"]);
    infra.consume(running, replies, SagaReplies { deadlines });
}

/// Starts a saga for every order event that asks for one.
pub struct OrderEvents {
    pub deadlines: StepDeadlines,
}

/// The order events that start a saga, one variant per message type.
enum Event {
    Created(order::OrderCreated),
    CancelRequested(order::OrderCancelRequested),
    RevisionRequested(order::OrderRevisionRequested),
}

static EVENTS: LazyLock<Table<Event>> =
    LazyLock::new(|| Table::new().on(Event::Created).on(Event::CancelRequested).on(Event::RevisionRequested));

impl MessageHandler for OrderEvents {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        // Other order events are not the orchestrator's business.
        let Some(event) = EVENTS.decode_listed(message) else { return Ok(()) };
        match event? {
            Event::Created(event) => {
                let o = event.order.ok_or_else(|| refuse("OrderCreated without an order"))?;
                let data = CreateOrderData::from_order(&o).map_err(refuse)?;
                self.start(tx, data.order_id, data).await
            }
            Event::CancelRequested(event) => {
                let o = event.order.ok_or_else(|| refuse("OrderCancelRequested without an order"))?;
                let data = CancelOrderData { order_id: o.order_id.parse()?, consumer_id: o.consumer_id.parse()? };
                self.start(tx, data.order_id, data).await
            }
            Event::RevisionRequested(event) => {
                let o = event.order.ok_or_else(|| refuse("OrderRevisionRequested without an order"))?;
                let data = ReviseOrderData {
                    order_id: o.order_id.parse()?,
                    consumer_id: o.consumer_id.parse()?,
                    revised_line_items: event.revised_line_items.iter().map(TicketLine::from).collect(),
                    revised_total: Money::try_from(event.revised_total)
                        .map_err(|e| refuse(format!("revised total {e}")))?,
                    original_total: Money::try_from(o.order_total).map_err(|e| refuse(format!("order total {e}")))?,
                };
                self.start(tx, data.order_id, data).await
            }
        }
    }
}

impl OrderEvents {
    async fn start<D: SagaDefinition>(
        &self,
        tx: &mut PgConnection,
        order_id: OrderId,
        data: D,
    ) -> Result<(), HandlerError> {
        let (saga, next) = Saga::start(order_id, data, Utc::now());
        store::save(tx, &saga, self.deadlines.reply_timeout).await?;
        if let Some(next) = next {
            outbox::enqueue(tx, &next.message(saga.id)).await?;
        }
        tracing::info!(saga_id = %saga.id, saga_type = D::TYPE, %order_id, "saga started");
        Ok(())
    }
}

/// Applies each participant's reply to its saga.
pub struct SagaReplies {
    pub deadlines: StepDeadlines,
}

impl MessageHandler for SagaReplies {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let saga_id = message.saga_id().ok_or_else(|| refuse("a reply without a saga id"))?;
        let saga_id: SagaId = saga_id.parse()?;
        let step = message.header(SAGA_STEP_HEADER).ok_or_else(|| refuse("a reply without a saga step"))?.to_owned();
        let row = store::lock(tx, saga_id).await?.ok_or_else(|| refuse(format!("saga {saga_id} does not exist")))?;
        let reply = Reply {
            message_type: message.message_type.clone(),
            payload: message.payload.to_vec(),
            outcome: message.saga_outcome()?,
        };
        let advance = Advance { tx, row: &row, step: &step, reply: &reply, timeout: self.deadlines.reply_timeout };
        match with_saga_type(&row.saga_type, advance) {
            Some(advanced) => advanced.await,
            None => Err(refuse(format!("unknown saga type {}", row.saga_type))),
        }
    }
}

/// The orchestrator's saga metrics.
struct SagaMetrics {
    /// Finished sagas, by type and outcome (`SUCCEEDED`, `COMPENSATED`).
    finished: Counter<u64>,
    /// How long they took, by the same.
    duration: Histogram<f64>,
    /// Step commands sent again after their deadline, by saga type and step.
    resent: Counter<u64>,
    /// Steps given up on after every attempt, by saga type, step and what followed
    /// (`COMPENSATING`, `FAILED`).
    timed_out: Counter<u64>,
}

fn saga_metrics() -> &'static SagaMetrics {
    static METRICS: OnceLock<SagaMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = telemetry::meter();
        SagaMetrics {
            finished: meter.u64_counter("ftgo.sagas.finished").with_description("Sagas finished, by outcome").build(),
            duration: meter
                .f64_histogram("ftgo.saga.duration")
                .with_unit("s")
                .with_description("Time from a saga's first step to its end")
                .build(),
            resent: meter
                .u64_counter("ftgo.saga.steps.resent")
                .with_description("Saga step commands sent again because no reply came before the deadline")
                .build(),
            timed_out: meter
                .u64_counter("ftgo.saga.steps.timed_out")
                .with_description("Saga steps given up on after every attempt, by what the saga did next")
                .build(),
        }
    })
}

/// Counts what a deadline did to a saga: `step` (its name) was sent again, or given up on.
pub(crate) fn count_deadline<D: SagaDefinition>(saga: &Saga<D>, step: &'static str, resent: bool) {
    let labels = [KeyValue::new("saga_type", D::TYPE), KeyValue::new("step", step)];
    if resent {
        saga_metrics().resent.add(1, &labels);
    } else {
        let [saga_type, step] = labels;
        saga_metrics().timed_out.add(1, &[saga_type, step, KeyValue::new("then", saga.state.as_str())]);
    }
}

/// Logs and counts a saga that has just finished.
pub(crate) fn count_finished<D: SagaDefinition>(saga: &Saga<D>) {
    tracing::info!(saga_id = %saga.id, saga_type = D::TYPE, state = saga.state.as_str(), reason = ?saga.failure_reason, "saga finished");
    // Recorded before the transaction commits: in the rare case that the commit fails, the
    // redelivered reply finishes the saga again and counts it twice.
    let started = saga.history.first().map_or_else(Utc::now, |step| step.at);
    let seconds = (Utc::now() - started).to_std().unwrap_or_default().as_secs_f64();
    let labels = [KeyValue::new("saga_type", D::TYPE), KeyValue::new("outcome", saga.state.as_str())];
    saga_metrics().finished.add(1, &labels);
    saga_metrics().duration.record(seconds, &labels);
}

/// Applies a reply to a saga of whichever type its row says.
struct Advance<'a> {
    tx: &'a mut PgConnection,
    row: &'a SagaRow,
    step: &'a str,
    reply: &'a Reply,
    timeout: Duration,
}

impl<'a> SagaVisitor for Advance<'a> {
    type Output = futures::future::BoxFuture<'a, Result<(), HandlerError>>;

    fn visit<D: SagaDefinition>(self) -> Self::Output {
        Box::pin(advance::<D>(self.tx, self.row, self.step, self.reply, self.timeout))
    }
}

async fn advance<D: SagaDefinition>(
    tx: &mut PgConnection,
    row: &SagaRow,
    step: &str,
    reply: &Reply,
    timeout: Duration,
) -> Result<(), HandlerError> {
    let mut saga: Saga<D> = row.decode().map_err(refuse)?;
    match saga.on_reply(step, reply, Utc::now()) {
        Ok(next) => {
            store::save(tx, &saga, timeout).await?;
            if let Some(next) = next {
                outbox::enqueue(tx, &next.message(saga.id)).await?;
            }
            if saga.state.is_finished() {
                count_finished(&saga);
            }
            Ok(())
        }
        // Recorded as processed and otherwise ignored: it belongs to a step the saga has left.
        Err(e @ (ReplyError::Stale { .. } | ReplyError::Finished)) => {
            tracing::warn!(saga_id = %saga.id, error = %e, "ignoring a reply");
            Ok(())
        }
    }
}
