//! The admin gRPC API every service that consumes messages serves beside its own:
//! `ftgo.admin.v1.DeadLetterService`, to list its dead letters and replay one
//! ([`crate::messaging::dead_letters`]). The gateway exposes it as `/api/admin/{service}/...`;
//! through Fabio, a call picks its service with the `dsthost` metadata key ([`DESTINATION_HOST`]).

use chrono::{DateTime, Utc};
use ftgo_catalog::ServiceName;
use ftgo_proto::admin::v1::{self as api, dead_letter_service_server::DeadLetterService};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    grpc::database_error,
    idempotency::{self, Key},
    messaging::{
        dead_letters::{self, Consumers, DeadLetter, ReplayError},
        saga::SAGA_ID_HEADER,
    },
};

/// The gRPC metadata key that Fabio's gRPC proxy routes by host on: a call with
/// `dsthost: kitchen-service` takes the route `urlprefix-kitchen-service/...`.
pub const DESTINATION_HOST: &str = "dsthost";

/// The most dead letters one list returns.
pub const MAX_LIST: u32 = 1000;
const DEFAULT_LIST: u32 = 100;

pub struct DeadLetterApi {
    service: ServiceName,
    db: PgPool,
    consumers: Consumers,
}

impl DeadLetterApi {
    pub fn new(service: ServiceName, db: PgPool, consumers: Consumers) -> Self {
        Self { service, db, consumers }
    }
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

fn to_proto(dead: DeadLetter) -> api::DeadLetter {
    api::DeadLetter {
        saga_id: dead.header(SAGA_ID_HEADER).unwrap_or_default().to_owned(),
        id: dead.id,
        consumer: dead.consumer,
        message_id: dead.message_id.map(|id| id.to_string()).unwrap_or_default(),
        subject: dead.subject,
        message_type: dead.message_type.unwrap_or_default(),
        error: dead.error,
        deliveries: dead.deliveries,
        failed_at: Some(timestamp(dead.failed_at)),
        replayed_at: dead.replayed_at.map(timestamp),
    }
}

/// Why a replay did not happen, as a gRPC status.
fn replay_status(e: ReplayError) -> Status {
    match e {
        ReplayError::Database(e) => database_error(e),
        e @ ReplayError::NotFound(_) => crate::grpc::not_found(e.to_string()),
        e @ ReplayError::NoConsumer(_) => Status::unavailable(e.to_string()),
        e @ (ReplayError::AlreadyReplayed { .. } | ReplayError::Unreplayable(_) | ReplayError::Failed(_)) => {
            Status::failed_precondition(e.to_string())
        }
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterApi {
    async fn list_dead_letters(
        &self,
        request: Request<api::ListDeadLettersRequest>,
    ) -> Result<Response<api::ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_LIST,
            n if n <= MAX_LIST => n,
            n => return Err(Status::invalid_argument(format!("limit {n} is over {MAX_LIST}"))),
        };
        let found =
            dead_letters::newest(&self.db, i64::from(limit), request.waiting_only).await.map_err(database_error)?;
        Ok(Response::new(api::ListDeadLettersResponse {
            dead_letters: found.into_iter().map(to_proto).collect(),
            service: self.service.binary().to_owned(),
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<api::ReplayDeadLetterRequest>,
    ) -> Result<Response<api::DeadLetter>, Status> {
        let key = Key::of(&request, "ReplayDeadLetter")?;
        let id = request.into_inner().id;
        let replay = async || self.consumers.replay(&self.db, id).await.map(to_proto).map_err(replay_status);
        let Some(key) = key else { return replay().await.map(Response::new) };
        // The key's row is held while the replay runs (in its own transaction), so a second
        // request with the key waits and then gets this answer. A crash between the replay's
        // commit and this one forgets the key: sent again, the replay answers 409, as a replay of a
        // replayed dead letter does. Nothing is ever applied twice.
        let mut tx = self.db.begin().await.map_err(database_error)?;
        let replayed = idempotency::once(&mut tx, Some(&key), async |_| replay().await).await?;
        tx.commit().await.map_err(database_error)?;
        Ok(Response::new(replayed))
    }
}
