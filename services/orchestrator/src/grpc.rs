//! The SagaService gRPC API: saga instances, for inspection.

use ftgo_platform::{
    grpc::{self, database_error},
    ids::{OrderId, SagaId},
    service::Infrastructure,
};
use ftgo_proto::orchestrator::v1 as api;
use sqlx::PgPool;
use tonic::{Request, Response, Status, service::Routes};

use crate::{
    sagas::{SagaDefinition, SagaState, SagaVisitor, StepStatus, awaits_compensation, with_saga_type},
    store::{self, SagaRow},
};

/// What this service serves over gRPC; the platform adds health, reflection and the dead-letter API.
pub fn routes(infra: &Infrastructure) -> Routes {
    Routes::new(api::saga_service_server::SagaServiceServer::new(SagaApi::new(infra.db.clone())))
}

pub struct SagaApi {
    db: PgPool,
}

impl SagaApi {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// The name of the step a saga of this type is at, if it is still running.
fn step_name(saga_type: &str, step: usize) -> Option<&'static str> {
    struct StepName(usize);
    impl SagaVisitor for StepName {
        type Output = Option<&'static str>;
        fn visit<D: SagaDefinition>(self) -> Option<&'static str> {
            D::STEPS.get(self.0).map(|s| s.name)
        }
    }
    with_saga_type(saga_type, StepName(step)).flatten()
}

fn to_proto(row: &SagaRow) -> api::Saga {
    let state = SagaState::parse(&row.state);
    let proto_state = match state {
        Some(SagaState::Running) => api::SagaState::Running,
        Some(SagaState::Compensating) => api::SagaState::Compensating,
        Some(SagaState::Succeeded) => api::SagaState::Succeeded,
        Some(SagaState::Compensated) => api::SagaState::Compensated,
        Some(SagaState::Failed) => api::SagaState::Failed,
        None => api::SagaState::Unspecified,
    };
    let finished = state.is_none_or(SagaState::is_finished);
    api::Saga {
        saga_id: row.id.to_string(),
        saga_type: row.saga_type.clone(),
        order_id: row.order_id.clone(),
        state: proto_state.into(),
        current_step: if finished {
            String::new()
        } else {
            step_name(&row.saga_type, row.step as usize).unwrap_or_default().to_owned()
        },
        compensating: state == Some(SagaState::Compensating)
            || row.awaiting.as_deref().is_some_and(awaits_compensation),
        steps: row
            .history
            .0
            .iter()
            .map(|r| api::SagaStep {
                name: r.name.clone(),
                status: match r.status {
                    StepStatus::Done => "done",
                    StepStatus::Refused => "refused",
                    StepStatus::Compensated => "compensated",
                    StepStatus::CompensationRefused => "compensation refused",
                    StepStatus::Resent => "resent",
                    StepStatus::TimedOut => "timed out",
                }
                .to_owned(),
                at: Some(timestamp(r.at)),
                detail: r.detail.clone().unwrap_or_default(),
            })
            .collect(),
        failure_reason: row.failure_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

#[tonic::async_trait]
impl api::saga_service_server::SagaService for SagaApi {
    async fn get_saga(&self, request: Request<api::GetSagaRequest>) -> Result<Response<api::Saga>, Status> {
        let id: SagaId = request.into_inner().saga_id.parse()?;
        let row =
            grpc::fetch(&self.db, async |conn| store::find(conn, id).await, || format!("saga {id} does not exist"))
                .await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn list_order_sagas(
        &self,
        request: Request<api::ListOrderSagasRequest>,
    ) -> Result<Response<api::ListOrderSagasResponse>, Status> {
        let order_id: OrderId = request.into_inner().order_id.parse()?;
        let mut conn = self.db.acquire().await.map_err(database_error)?;
        let rows = store::for_order(&mut conn, order_id).await.map_err(database_error)?;
        Ok(Response::new(api::ListOrderSagasResponse { sagas: rows.iter().map(to_proto).collect() }))
    }
}
