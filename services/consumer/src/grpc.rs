//! The ConsumerService gRPC API: translates requests into domain calls and domain errors into
//! gRPC statuses, once.

use ftgo_platform::{
    grpc::{self, database_error},
    idempotency::{self, Key},
    messaging::{OutgoingMessage, outbox, streams::event_subject},
    service::Infrastructure,
};
use ftgo_proto::{common::v1 as common, consumer::v1 as api};
use sqlx::PgPool;
use tonic::{Request, Response, Status, service::Routes};

use crate::{
    domain::consumer::{self, Consumer, ConsumerError, PersonName},
    store,
};

/// What this service serves over gRPC; the platform adds health, reflection and the dead-letter API.
pub fn routes(infra: &Infrastructure) -> Routes {
    Routes::new(api::consumer_service_server::ConsumerServiceServer::new(ConsumerApi::new(infra.db.clone())))
}

pub struct ConsumerApi {
    db: PgPool,
}

impl ConsumerApi {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

impl From<ConsumerError> for Status {
    fn from(e: ConsumerError) -> Self {
        match e {
            ConsumerError::InvalidName { .. } | ConsumerError::InvalidId(_) => Status::invalid_argument(e.to_string()),
            ConsumerError::NotFound(_) => grpc::not_found(e.to_string()),
        }
    }
}

pub fn to_proto(consumer: &Consumer) -> api::Consumer {
    api::Consumer {
        consumer_id: consumer.id.to_string(),
        name: Some(common::PersonName {
            first_name: consumer.name.first_name.clone(),
            last_name: consumer.name.last_name.clone(),
        }),
    }
}

#[tonic::async_trait]
impl api::consumer_service_server::ConsumerService for ConsumerApi {
    async fn create_consumer(
        &self,
        request: Request<api::CreateConsumerRequest>,
    ) -> Result<Response<api::CreateConsumerResponse>, Status> {
        let key = Key::of(&request, "CreateConsumer")?;
        let name = request.into_inner().name.unwrap_or_default();
        let consumer = Consumer::register(PersonName::new(&name.first_name, &name.last_name)?);

        // The consumer and its ConsumerCreated event commit together, or neither does.
        let event = api::ConsumerCreated { consumer: Some(to_proto(&consumer)) };
        let mut tx = self.db.begin().await.map_err(database_error)?;
        let created = idempotency::once(&mut tx, key.as_ref(), async |tx| {
            store::insert(tx, &consumer).await.map_err(database_error)?;
            let message = OutgoingMessage::protobuf(event_subject("consumer", "ConsumerCreated"), &event);
            outbox::enqueue(tx, &message).await.map_err(database_error)?;
            tracing::info!(consumer_id = %consumer.id, "consumer registered");
            Ok(api::CreateConsumerResponse { consumer_id: consumer.id.to_string() })
        })
        .await?;
        outbox::commit(tx).await.map_err(database_error)?;
        Ok(Response::new(created))
    }

    async fn get_consumer(&self, request: Request<api::GetConsumerRequest>) -> Result<Response<api::Consumer>, Status> {
        let id = consumer::parse_consumer_id(&request.into_inner().consumer_id)?;
        let mut conn = self.db.acquire().await.map_err(database_error)?;
        let consumer = store::find(&mut conn, id).await.map_err(database_error)?.ok_or(ConsumerError::NotFound(id))?;
        Ok(Response::new(to_proto(&consumer)))
    }
}
