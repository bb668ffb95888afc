//! Idempotency keys against a real Postgres: a command runs once per key, a repeat gets the first
//! answer, a different request under the key is refused, a failure leaves the key free, and two
//! requests with one key at once have one effect.

use std::time::Duration;

use ftgo_platform::{
    db,
    idempotency::{self, KEY_METADATA, Key},
};
use ftgo_proto::common::v1::Money;
use ftgo_testenv::Postgres;
use sqlx::{PgConnection, PgPool, migrate::Migrator};
use tonic::{Code, Request, Status, metadata::MetadataValue};

async fn database() -> (Postgres, PgPool) {
    ftgo_testenv::init_test_tracing();
    let postgres = Postgres::start().await.unwrap();
    let database = postgres.create_database("idempotency").await.unwrap();
    let pool = db::connect(&database.url, 5, Duration::from_secs(5)).await.unwrap();
    db::migrate(&pool, &Migrator::DEFAULT).await.unwrap();
    sqlx::query("CREATE TABLE effects (amount BIGINT NOT NULL)").execute(&pool).await.unwrap();
    (postgres, pool)
}

fn keyed(amount: i64, key: &'static str) -> Key {
    let mut request = Request::new(Money { minor_units: amount });
    request.metadata_mut().insert(KEY_METADATA, MetadataValue::from_static(key));
    Key::of(&request, "Pay").unwrap().expect("a key")
}

/// The command under test: records its effect and answers with a count of effects so far.
async fn pay(db: &PgPool, key: Option<&Key>, amount: i64, fail: bool) -> Result<Money, Status> {
    let mut tx = db.begin().await.unwrap();
    let answer = idempotency::once(&mut tx, key, async |tx: &mut PgConnection| {
        sqlx::query("INSERT INTO effects (amount) VALUES ($1)").bind(amount).execute(&mut *tx).await.unwrap();
        if fail {
            return Err(Status::unavailable("failed after the effect"));
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM effects").fetch_one(&mut *tx).await.unwrap();
        Ok(Money { minor_units: count })
    })
    .await?;
    tx.commit().await.unwrap();
    Ok(answer)
}

async fn effects(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM effects").fetch_one(db).await.unwrap()
}

#[tokio::test]
async fn the_same_key_and_request_get_the_first_answer_and_one_effect() {
    let (_pg, db) = database().await;
    let key = keyed(500, "pay-1");
    let first = pay(&db, Some(&key), 500, false).await.unwrap();
    let again = pay(&db, Some(&key), 500, false).await.unwrap();
    assert_eq!(first, Money { minor_units: 1 });
    assert_eq!(again, first, "the recorded answer, not a new one");
    assert_eq!(effects(&db).await, 1);
    // Without a key, every request is a new command.
    pay(&db, None, 500, false).await.unwrap();
    pay(&db, None, 500, false).await.unwrap();
    assert_eq!(effects(&db).await, 3);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused() {
    let (_pg, db) = database().await;
    pay(&db, Some(&keyed(500, "pay-1")), 500, false).await.unwrap();
    let refused = pay(&db, Some(&keyed(900, "pay-1")), 900, false).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(idempotency::is_reused(&refused), "{refused:?}");
    assert!(refused.message().contains("pay-1"), "{refused:?}");
    assert_eq!(effects(&db).await, 1);
}

#[tokio::test]
async fn a_failed_command_leaves_its_key_free() {
    let (_pg, db) = database().await;
    let key = keyed(500, "pay-1");
    assert_eq!(pay(&db, Some(&key), 500, true).await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(effects(&db).await, 0, "the effect rolled back with the failure");
    assert_eq!(pay(&db, Some(&key), 500, false).await.unwrap(), Money { minor_units: 1 });
}

#[tokio::test]
async fn two_requests_with_one_key_at_once_have_one_effect() {
    let (_pg, db) = database().await;
    let key = keyed(500, "pay-1");
    let answers = futures::future::join_all((0..4).map(|_| pay(&db, Some(&key), 500, false))).await;
    for answer in answers {
        assert_eq!(answer.unwrap(), Money { minor_units: 1 });
    }
    assert_eq!(effects(&db).await, 1);
}

#[tokio::test]
async fn old_keys_are_forgotten() {
    let (_pg, db) = database().await;
    pay(&db, Some(&keyed(500, "old")), 500, false).await.unwrap();
    pay(&db, Some(&keyed(500, "new")), 500, false).await.unwrap();
    sqlx::query("UPDATE messaging.idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(idempotency::forget_old(&db).await.unwrap(), 1);
    // Forgotten: the old key is a new command again.
    assert_eq!(pay(&db, Some(&keyed(500, "old")), 500, false).await.unwrap(), Money { minor_units: 3 });
}
