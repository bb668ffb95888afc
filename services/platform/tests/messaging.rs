//! The outbox, the relay and the inbox consumer against real Postgres and NATS JetStream.

use ftgo_testenv::eventually;
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull};
use ftgo_platform::{
    db,
    messaging::{
        MESSAGE_TYPE_HEADER, MSG_ID_HEADER, OutgoingMessage, connection,
        dead_letters::{self, ReplayError},
        inbox::{self, ConsumerConfig, Disposition, HandlerError, InboxConsumer, IncomingMessage, MessageHandler},
        outbox,
        relay::{OutboxRelay, RelayConfig},
        streams,
    },
};
use ftgo_testenv::{Nats, Postgres};
use futures::StreamExt;
use sqlx::{PgConnection, PgPool, migrate::Migrator};
use tokio_util::sync::CancellationToken;

/// One test's world: its own Postgres cluster and database (migrated), NATS and the FTGO stream.
struct World {
    db: PgPool,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    _pg: Postgres,
    nats: Nats,
}

async fn world() -> World {
    ftgo_testenv::init_test_tracing();
    let (pg, nats) = tokio::try_join!(Postgres::start(), Nats::start()).unwrap();
    let database = pg.create_database("messaging").await.unwrap();
    let db = db::connect(&database.url, 5, Duration::from_secs(5)).await.unwrap();
    db::migrate(&db, &Migrator::DEFAULT).await.unwrap();
    // The effect table of the test handler below: what a service's own tables would be.
    sqlx::query("CREATE TABLE effects (message_id UUID NOT NULL, body TEXT NOT NULL)").execute(&db).await.unwrap();
    // What lets a `blocked` message through.
    sqlx::query("CREATE TABLE unblocked (body TEXT PRIMARY KEY)").execute(&db).await.unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = streams::ensure_stream(&js).await.unwrap();
    World { db, js, stream, _pg: pg, nats }
}

impl World {
    async fn send(&self, body: &str) -> OutgoingMessage {
        let message = OutgoingMessage::new("ftgo.command.test.Do", "ftgo.test.v1.Do", body.as_bytes().to_vec())
            .with_header("Ftgo-Saga-Id", "saga-1");
        let mut tx = self.db.begin().await.unwrap();
        outbox::enqueue(&mut tx, &message).await.unwrap();
        outbox::commit(tx).await.unwrap();
        message
    }

    fn relay(&self) -> OutboxRelay {
        OutboxRelay::new(self.db.clone(), self.js.clone(), RelayConfig::default())
    }

    async fn stream_messages(&mut self) -> u64 {
        self.stream.info().await.unwrap().state.messages
    }

    async fn effects(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT body FROM effects ORDER BY body").fetch_all(&self.db).await.unwrap()
    }

    fn consumer(&self, config: ConsumerConfig) -> InboxConsumer<TestHandler> {
        InboxConsumer::new(self.db.clone(), self.stream.clone(), config, TestHandler)
    }
}

fn fast_config(name: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, vec!["ftgo.command.test.>".to_owned()]);
    config.backoff = vec![Duration::from_millis(50)];
    config
}

/// Behaves as its payload says: `poison` is refused; `flaky-N` fails transiently before delivery
/// N; `fails` always fails transiently; `blocked` fails transiently until the `unblocked` table
/// names it; `slow` takes 1.5 s; anything else succeeds. Each success
/// records an effect and enqueues a reply, in the consumer's transaction.
struct TestHandler;

impl MessageHandler for TestHandler {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let body = std::str::from_utf8(&message.payload).map_err(|e| HandlerError::Rejected(e.into()))?.to_owned();
        // The reply is written before the failure below: it must roll back with the effect.
        let reply = OutgoingMessage::new("ftgo.reply.test.Done", "ftgo.test.v1.Done", body.clone().into_bytes());
        outbox::enqueue(tx, &reply).await?;
        if body == "poison" {
            return Err(HandlerError::Rejected(anyhow::anyhow!("cannot make sense of {body}")));
        }
        if body == "fails" {
            return Err(HandlerError::Transient(anyhow::anyhow!("the kitchen is on fire")));
        }
        if body == "blocked" {
            let open: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM unblocked WHERE body = $1)")
                .bind(&body)
                .fetch_one(&mut *tx)
                .await?;
            if !open {
                return Err(HandlerError::Transient(anyhow::anyhow!("{body} is blocked")));
            }
        }
        if let Some(n) = body.strip_prefix("flaky-")
            && message.delivery < n.parse::<i64>().unwrap()
        {
            return Err(HandlerError::Transient(anyhow::anyhow!("not yet")));
        }
        if body == "slow" {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        sqlx::query("INSERT INTO effects VALUES ($1, $2)").bind(message.id).bind(&body).execute(tx).await?;
        Ok(())
    }
}

/// Runs `consumer` in the background until the returned token is cancelled.
fn spawn_consumer(consumer: InboxConsumer<TestHandler>) -> (CancellationToken, Arc<inbox::ConsumerStats>) {
    let stop = CancellationToken::new();
    let stats = consumer.stats();
    let token = stop.clone();
    tokio::spawn(async move { consumer.run(token).await.unwrap() });
    (stop, stats)
}

#[tokio::test]
async fn a_committed_message_is_published_with_its_id_and_a_rolled_back_one_never() {
    let mut w = world().await;
    let committed = w.send("hello").await;
    let mut tx = w.db.begin().await.unwrap();
    outbox::enqueue(&mut tx, &OutgoingMessage::new("ftgo.command.test.Do", "t", b"never".to_vec())).await.unwrap();
    tx.rollback().await.unwrap();

    w.relay().drain().await.unwrap();

    assert_eq!(w.stream_messages().await, 1);
    assert_eq!(outbox::pending(&w.db).await.unwrap(), 0);
    let consumer = w.stream.create_consumer(pull::Config::default()).await.unwrap();
    let mut batch = consumer.fetch().max_messages(5).expires(Duration::from_secs(1)).messages().await.unwrap();
    let message = batch.next().await.unwrap().unwrap();
    let headers = message.headers.as_ref().unwrap();
    assert_eq!(headers.get(MSG_ID_HEADER).unwrap().as_str(), committed.id.to_string());
    assert_eq!(headers.get(MESSAGE_TYPE_HEADER).unwrap().as_str(), "ftgo.test.v1.Do");
    assert_eq!(headers.get("Ftgo-Saga-Id").unwrap().as_str(), "saga-1");
    assert_eq!(message.payload.as_ref(), b"hello");
}

#[tokio::test]
async fn a_relay_that_dies_before_marking_publishes_again_and_jetstream_keeps_one_copy() {
    let mut w = world().await;
    w.send("once").await;
    w.relay().drain().await.unwrap();
    // The crash: JetStream has the message, the outbox row was never marked.
    sqlx::query("UPDATE messaging.outbox SET published_at = NULL").execute(&w.db).await.unwrap();
    assert_eq!(outbox::pending(&w.db).await.unwrap(), 1);

    w.relay().drain().await.unwrap();

    assert_eq!(outbox::pending(&w.db).await.unwrap(), 0);
    assert_eq!(w.stream_messages().await, 1, "the republished copy must be dropped as a duplicate");
}

#[tokio::test]
async fn the_relay_publishes_what_is_left_the_moment_nats_is_back() {
    let mut w = world().await;
    let (client, link) = connection::connect(&w.nats.url(), Duration::from_secs(5)).await.unwrap();
    let relay = OutboxRelay::new(w.db.clone(), jetstream::new(client), RelayConfig::default()).watching(link);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await }
    });

    w.nats.kill();
    w.send("while NATS is down").await;
    // Longer than JetStream's acknowledgement timeout (5 s), which an unwatched relay waits out,
    // and than async-nats's reconnection delays grow to by default.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(outbox::pending(&w.db).await.unwrap(), 1, "nothing can be published while NATS is down");
    w.nats.restart().await.unwrap();
    let back = Instant::now();
    eventually("the message to be published and marked", Duration::from_secs(2), async || {
        (outbox::pending(&w.db).await.unwrap() == 0).then_some(())
    })
    .await;
    println!("published {:?} after NATS was back", back.elapsed());
    assert_eq!(w.stream_messages().await, 1);
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// A relay running in the background with `poll_interval` between its claims.
struct RunningRelay {
    publisher: outbox::Publisher,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRelay {
    async fn start(w: &World, poll_interval: Duration) -> Self {
        let relay = OutboxRelay::new(w.db.clone(), w.js.clone(), RelayConfig { poll_interval, ..Default::default() });
        let (publisher, stop) = (relay.publisher(), CancellationToken::new());
        let token = stop.clone();
        let task = tokio::spawn(async move { relay.run(token).await });
        // Past its first claim, so that only what the test does next can make it publish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self { publisher, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

impl World {
    /// Waits (5 s at most) until the stream holds `count` messages and the outbox has no
    /// unpublished row.
    async fn published_and_marked(&mut self, what: &str, count: u64) {
        eventually(what, Duration::from_secs(5), async || {
            (self.stream_messages().await == count && outbox::pending(&self.db).await.unwrap() == 0).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn the_relay_publishes_as_soon_as_a_transaction_commits() {
    let mut w = world().await;
    // With an hour between polls, only the wake-up that follows the commit can make the relay
    // publish in time.
    let relay = RunningRelay::start(&w, Duration::from_secs(3600)).await;
    w.send("wake up").await;
    w.published_and_marked("the message relayed after its commit", 1).await;
    relay.stop().await;
}

#[tokio::test]
async fn inside_a_scope_the_commit_hands_its_messages_to_the_relay_and_a_rollback_hands_over_nothing() {
    let mut w = world().await;
    // With an hour between polls, only the hand-over can make the relay publish in time.
    let relay = RunningRelay::start(&w, Duration::from_secs(3600)).await;
    let rolled_back = outbox::scope(&relay.publisher, async {
        let mut tx = w.db.begin().await.unwrap();
        let message = OutgoingMessage::new("ftgo.command.test.Do", "t", b"never".to_vec());
        outbox::enqueue(&mut tx, &message).await.unwrap();
        tx.rollback().await.unwrap();
        message
    })
    .await;
    let committed = outbox::scope(&relay.publisher, async {
        let mut tx = w.db.begin().await.unwrap();
        let message =
            OutgoingMessage::new("ftgo.command.test.Do", "t", b"hello".to_vec()).with_header("Ftgo-Saga-Id", "s-1");
        outbox::enqueue(&mut tx, &message).await.unwrap();
        outbox::commit(tx).await.unwrap();
        message
    })
    .await;
    w.published_and_marked("the committed message published and marked, the rolled-back one never", 1).await;
    let published = w.stream.get_last_raw_message_by_subject("ftgo.command.test.Do").await.unwrap();
    let headers = published.headers;
    assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), committed.id.to_string());
    assert_eq!(headers.get("Ftgo-Saga-Id").unwrap().as_str(), "s-1");
    assert_ne!(committed.id, rolled_back.id);
    relay.stop().await;
}

#[tokio::test]
async fn a_row_that_no_wake_up_announced_is_found_by_the_poll() {
    let mut w = world().await;
    let relay = RunningRelay::start(&w, Duration::from_millis(200)).await;
    // Committed without `outbox::commit`: as if its writer had died right after the commit.
    let mut tx = w.db.begin().await.unwrap();
    outbox::enqueue(&mut tx, &OutgoingMessage::new("ftgo.command.test.Do", "t", b"orphan".to_vec())).await.unwrap();
    tx.commit().await.unwrap();
    w.published_and_marked("the poll to find the row", 1).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_message_delivered_twice_has_one_effect() {
    let w = world().await;
    let consumer = w.consumer(fast_config("twice"));
    let sent = w.send("twice").await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID_HEADER, sent.id.to_string().as_str());
    headers.insert(MESSAGE_TYPE_HEADER, "ftgo.test.v1.Do");
    let raw = async_nats::Message {
        subject: "ftgo.command.test.Do".into(),
        reply: None,
        payload: "twice".into(),
        headers: Some(headers),
        status: None,
        description: None,
        length: 0,
    };

    assert_eq!(consumer.process(&raw, 1).await, Disposition::Processed);
    assert_eq!(consumer.process(&raw, 2).await, Disposition::Duplicate);

    assert_eq!(w.effects().await, ["twice"]);
    let replies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messaging.outbox WHERE subject = 'ftgo.reply.test.Done'")
            .fetch_one(&w.db)
            .await
            .unwrap();
    assert_eq!(replies, 1);
}

#[tokio::test]
async fn a_slow_handler_keeps_its_message_while_it_works() {
    let w = world().await;
    let mut config = fast_config("slow");
    // The handler takes 1.5 s: three times this. Progress acknowledgements keep the message.
    config.ack_wait = Duration::from_millis(500);
    let (stop, stats) = spawn_consumer(w.consumer(config));
    w.send("slow").await;
    w.relay().drain().await.unwrap();

    eventually("the message to be handled", Duration::from_secs(20), || async {
        (stats.processed.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 0, "JetStream redelivered a message still being handled");
    assert_eq!(w.effects().await, ["slow"]);
    stop.cancel();
}

#[tokio::test]
async fn the_same_message_handled_twice_at_once_has_one_effect() {
    // What a redelivery to a second replica looks like while the first still handles the message.
    let w = world().await;
    w.send("slow").await;
    w.relay().drain().await.unwrap();
    let reader = w.stream.create_consumer(pull::Config::default()).await.unwrap();
    let mut batch = reader.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await.unwrap();
    let message = batch.next().await.unwrap().unwrap().message;
    let (first, second) = (w.consumer(fast_config("twice")), w.consumer(fast_config("twice")));

    let (a, b) = tokio::join!(first.process(&message, 1), second.process(&message, 2));

    let mut dispositions = [a, b];
    dispositions.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(dispositions, [Disposition::Duplicate, Disposition::Processed]);
    assert_eq!(w.effects().await, ["slow"]);
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_does_not_block_the_messages_behind_it() {
    let w = world().await;
    let (stop, stats) = spawn_consumer(w.consumer(fast_config("poison")));
    let poison = w.send("poison").await;
    w.send("order-1").await;
    w.send("order-2").await;
    w.relay().drain().await.unwrap();

    eventually("both orders to be handled", Duration::from_secs(20), || async {
        (w.effects().await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(w.effects().await, ["order-1", "order-2"]);
    let dead = eventually("the dead letter", Duration::from_secs(20), || async {
        let dead = dead_letters::of_consumer(&w.db, "poison").await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, Some(poison.id));
    assert_eq!(dead[0].payload, b"poison");
    assert!(dead[0].error.contains("cannot make sense of poison"), "{}", dead[0].error);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
    // The refused message's reply rolled back with it.
    let replies: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM messaging.outbox WHERE subject = 'ftgo.reply.test.Done' ORDER BY payload",
    )
    .fetch_all(&w.db)
    .await
    .unwrap();
    assert_eq!(replies, [b"order-1".to_vec(), b"order-2".to_vec()]);
    stop.cancel();
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_the_message_is_handled() {
    let w = world().await;
    let (stop, stats) = spawn_consumer(w.consumer(fast_config("flaky")));
    w.send("flaky-3").await;
    w.relay().drain().await.unwrap();

    eventually("the third delivery to succeed", Duration::from_secs(20), || async {
        (!w.effects().await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(w.effects().await, ["flaky-3"]);
    assert_eq!(stats.retried.load(Ordering::Relaxed), 2);
    assert!(dead_letters::of_consumer(&w.db, "flaky").await.unwrap().is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_message_still_failing_after_the_last_delivery_is_dead_lettered() {
    let w = world().await;
    let mut config = fast_config("fails");
    config.max_deliveries = 3;
    let (stop, stats) = spawn_consumer(w.consumer(config));
    w.send("fails").await;
    w.relay().drain().await.unwrap();

    let dead = eventually("the dead letter", Duration::from_secs(20), || async {
        let dead = dead_letters::of_consumer(&w.db, "fails").await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].deliveries, 3);
    assert!(dead[0].error.contains("still failing after 3 deliveries: the kitchen is on fire"), "{}", dead[0].error);
    assert_eq!(stats.retried.load(Ordering::Relaxed), 2);
    assert!(w.effects().await.is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_dead_letter_is_replayed_by_its_own_consumer_once_its_cause_is_fixed() {
    let w = world().await;
    let mut config = fast_config("blocked");
    config.max_deliveries = 2;
    let consumer = Arc::new(w.consumer(config));
    let consumers = dead_letters::Consumers::default();
    consumers.add("blocked", consumer.clone());
    let stop = CancellationToken::new();
    let (running, token) = (consumer.clone(), stop.clone());
    tokio::spawn(async move { running.run(token).await.unwrap() });
    let sent = w.send("blocked").await;
    w.relay().drain().await.unwrap();
    let dead = eventually("the dead letter", Duration::from_secs(20), || async {
        dead_letters::of_consumer(&w.db, "blocked").await.unwrap().pop()
    })
    .await;
    assert_eq!((dead.message_id, dead.replayed_at, dead.header("Ftgo-Saga-Id")), (Some(sent.id), None, Some("saga-1")));
    let replies = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messaging.outbox WHERE subject = 'ftgo.reply.test.Done'")
            .fetch_one(&w.db)
            .await
            .unwrap()
    };

    // Replayed while the cause is still there: it fails again, says why, and changes nothing.
    let again = consumers.replay(&w.db, dead.id).await.unwrap_err();
    assert!(matches!(again, ReplayError::Failed(_)), "{again}");
    assert!(again.to_string().contains("blocked is blocked"), "{again}");
    assert_eq!(dead_letters::find(&w.db, dead.id).await.unwrap().unwrap().replayed_at, None);
    assert!(w.effects().await.is_empty());
    assert_eq!(replies().await, 0);

    // Fixed: the replay applies it once, with its reply, and marks the dead letter.
    sqlx::query("INSERT INTO unblocked VALUES ('blocked')").execute(&w.db).await.unwrap();
    let replayed = consumers.replay(&w.db, dead.id).await.unwrap();
    assert!(replayed.replayed_at.is_some());
    assert_eq!(w.effects().await, ["blocked"]);
    assert_eq!(replies().await, 1);
    let effect_id: uuid::Uuid = sqlx::query_scalar("SELECT message_id FROM effects").fetch_one(&w.db).await.unwrap();
    assert_eq!(effect_id, sent.id, "the handler saw the message as first delivered");

    // Never twice, and never an id that does not exist.
    assert!(matches!(consumers.replay(&w.db, dead.id).await, Err(ReplayError::AlreadyReplayed { .. })));
    assert!(matches!(consumers.replay(&w.db, dead.id + 1000).await, Err(ReplayError::NotFound(_))));
    assert_eq!(w.effects().await, ["blocked"]);
    stop.cancel();
}

#[tokio::test]
async fn a_message_without_an_id_is_dead_lettered_not_dropped() {
    let w = world().await;
    let (stop, _) = spawn_consumer(w.consumer(fast_config("anonymous")));
    w.js.publish("ftgo.command.test.Do", "who am i".into()).await.unwrap().await.unwrap();

    let dead = eventually("the dead letter", Duration::from_secs(20), || async {
        let dead = dead_letters::of_consumer(&w.db, "anonymous").await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].message_id, None);
    assert_eq!(dead[0].payload, b"who am i");
    assert!(dead[0].error.contains("no Nats-Msg-Id header"), "{}", dead[0].error);
    stop.cancel();
}

/// Records, for every message it handles, its saga and number in the order handled, and how many
/// messages (and of which sagas) are being handled at that moment.
#[derive(Default)]
struct Lanes {
    in_flight: std::sync::Mutex<Vec<String>>,
    most_at_once: std::sync::atomic::AtomicUsize,
    overlapping_saga: std::sync::atomic::AtomicBool,
}

struct LaneHandler(Arc<Lanes>);

impl MessageHandler for LaneHandler {
    async fn handle(&self, tx: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let saga = message.saga_id().unwrap_or_default().to_owned();
        {
            let mut in_flight = self.0.in_flight.lock().unwrap();
            if in_flight.contains(&saga) {
                self.0.overlapping_saga.store(true, Ordering::SeqCst);
            }
            in_flight.push(saga.clone());
            self.0.most_at_once.fetch_max(in_flight.len(), Ordering::SeqCst);
        }
        // Long enough for the other lanes to start theirs meanwhile.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n: i32 = std::str::from_utf8(&message.payload).unwrap().parse().unwrap();
        sqlx::query("INSERT INTO handled (saga, n) VALUES ($1, $2)").bind(&saga).bind(n).execute(&mut *tx).await?;
        let mut in_flight = self.0.in_flight.lock().unwrap();
        let at = in_flight.iter().position(|s| *s == saga).unwrap();
        in_flight.remove(at);
        Ok(())
    }
}

#[tokio::test]
async fn each_sagas_messages_stay_in_order_while_different_sagas_are_handled_at_once() {
    let w = world().await;
    sqlx::query("CREATE TABLE handled (seq BIGSERIAL, saga TEXT NOT NULL, n INT NOT NULL)")
        .execute(&w.db)
        .await
        .unwrap();
    // Five steps each of four sagas, interleaved as concurrent sagas' messages are.
    let sagas = ["saga-a", "saga-b", "saga-c", "saga-d"];
    let mut tx = w.db.begin().await.unwrap();
    for n in 0..5 {
        for saga in sagas {
            let message = OutgoingMessage::new("ftgo.command.test.Do", "ftgo.test.v1.Do", n.to_string().into_bytes())
                .with_header("Ftgo-Saga-Id", saga);
            outbox::enqueue(&mut tx, &message).await.unwrap();
        }
    }
    outbox::commit(tx).await.unwrap();
    w.relay().drain().await.unwrap();

    let lanes = Arc::new(Lanes::default());
    let consumer = InboxConsumer::new(w.db.clone(), w.stream.clone(), fast_config("lanes"), LaneHandler(lanes.clone()));
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { consumer.run(token).await.unwrap() });
    eventually("all twenty messages handled", Duration::from_secs(30), || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM handled").fetch_one(&w.db).await.unwrap();
        (count == 20).then_some(())
    })
    .await;
    stop.cancel();

    for saga in sagas {
        let order: Vec<i32> = sqlx::query_scalar("SELECT n FROM handled WHERE saga = $1 ORDER BY seq")
            .bind(saga)
            .fetch_all(&w.db)
            .await
            .unwrap();
        assert_eq!(order, [0, 1, 2, 3, 4], "{saga}'s steps in the order they were sent");
    }
    assert!(!lanes.overlapping_saga.load(Ordering::SeqCst), "one saga's messages are never handled at once");
    assert!(lanes.most_at_once.load(Ordering::SeqCst) > 1, "different sagas are handled at once");
}
