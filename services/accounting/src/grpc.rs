//! The AccountingService gRPC API.

use ftgo_platform::{
    grpc::{self, database_error},
    ids::{ConsumerId, OrderId},
    money::Money,
    service::Infrastructure,
};
use ftgo_proto::accounting::v1 as api;
use sqlx::PgPool;
use tonic::{Request, Response, Status, service::Routes};

use crate::{
    domain::account::{Account, Authorization, AuthorizationState},
    store,
};

/// What this service serves over gRPC; the platform adds health, reflection and the dead-letter API.
pub fn routes(infra: &Infrastructure) -> Routes {
    Routes::new(api::accounting_service_server::AccountingServiceServer::new(AccountingApi::new(infra.db.clone())))
}

pub struct AccountingApi {
    db: PgPool,
}

impl AccountingApi {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

fn consumer_id(id: &str) -> Result<ConsumerId, Status> {
    Ok(id.parse()?)
}

fn account_not_found(id: ConsumerId) -> Status {
    grpc::not_found(format!("consumer {id} has no account"))
}

fn to_proto(account: &Account) -> api::Account {
    api::Account {
        consumer_id: account.consumer_id.to_string(),
        credit_limit: Some(account.credit_limit.into()),
        reserved: Some(account.reserved.into()),
        enabled: account.enabled,
    }
}

fn authorization_to_proto(authorization: &Authorization) -> api::Authorization {
    let state = match authorization.state {
        AuthorizationState::Authorized => api::AuthorizationState::Authorized,
        AuthorizationState::Reversed => api::AuthorizationState::Reversed,
    };
    api::Authorization {
        consumer_id: authorization.consumer_id.to_string(),
        order_id: authorization.order_id.to_string(),
        amount: Some(authorization.amount.into()),
        state: state.into(),
    }
}

#[tonic::async_trait]
impl api::accounting_service_server::AccountingService for AccountingApi {
    async fn get_account(&self, request: Request<api::GetAccountRequest>) -> Result<Response<api::Account>, Status> {
        let id = consumer_id(&request.into_inner().consumer_id)?;
        let mut conn = self.db.acquire().await.map_err(database_error)?;
        let account =
            store::find_account(&mut conn, id).await.map_err(database_error)?.ok_or_else(|| account_not_found(id))?;
        Ok(Response::new(to_proto(&account)))
    }

    async fn update_account(
        &self,
        request: Request<api::UpdateAccountRequest>,
    ) -> Result<Response<api::Account>, Status> {
        let request = request.into_inner();
        let id = consumer_id(&request.consumer_id)?;
        let credit_limit = request
            .credit_limit
            .map(|m| Money::from_minor_units(m.minor_units))
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("creditLimit {e}")))?;
        let mut tx = self.db.begin().await.map_err(database_error)?;
        let mut account =
            store::lock_account(&mut tx, id).await.map_err(database_error)?.ok_or_else(|| account_not_found(id))?;
        // A limit below what is already reserved is allowed: it only refuses new authorizations.
        if let Some(limit) = credit_limit {
            account.credit_limit = limit;
        }
        if let Some(enabled) = request.enabled {
            account.enabled = enabled;
        }
        store::save_account(&mut tx, &account).await.map_err(database_error)?;
        tx.commit().await.map_err(database_error)?;
        Ok(Response::new(to_proto(&account)))
    }

    async fn get_authorization(
        &self,
        request: Request<api::GetAuthorizationRequest>,
    ) -> Result<Response<api::Authorization>, Status> {
        let raw = request.into_inner().order_id;
        let missing = || format!("order {raw:?} has no authorization");
        // An id that cannot name an order names none: not found, as for any unknown order.
        let order_id: OrderId = raw.parse().map_err(|_| grpc::not_found(missing()))?;
        let authorization =
            grpc::fetch(&self.db, async |conn| store::find_authorization(conn, order_id).await, missing).await?;
        Ok(Response::new(authorization_to_proto(&authorization)))
    }
}
