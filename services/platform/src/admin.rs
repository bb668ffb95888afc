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
        let id = request.into_inner().id;
        match self.consumers.replay(&self.db, id).await {
            Ok(replayed) => Ok(Response::new(to_proto(replayed))),
            Err(ReplayError::Database(e)) => Err(database_error(e)),
            Err(e @ ReplayError::NotFound(_)) => Err(crate::grpc::not_found(e.to_string())),
            Err(e @ ReplayError::NoConsumer(_)) => Err(Status::unavailable(e.to_string())),
            Err(e @ (ReplayError::AlreadyReplayed { .. } | ReplayError::Unreplayable(_) | ReplayError::Failed(_))) => {
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }
}
