//! `/api/accounts`: the Accounting Service's accounts, one per consumer.

use axum::{Json, extract::State};
use ftgo_proto::accounting::v1 as accounting;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiJson, ApiPath, path_id, respond, rpc,
    shapes::Id,
    shapes::{money, optional_money_schema, parse_money},
};
use crate::{
    Backends,
    error::{ApiError, BackendErrors, BodyErrors, NotFound},
    resilience::Idempotency,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub consumer_id: String,
    #[schema(example = "500.00")]
    pub credit_limit: String,
    /// What authorized, not yet cancelled orders hold.
    #[schema(example = "12.34")]
    pub reserved: String,
    pub enabled: bool,
}

/// Changes the credit limit, enables or disables the account; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAccount {
    #[schema(schema_with = optional_money_schema)]
    pub credit_limit: Option<String>,
    pub enabled: Option<bool>,
}

fn account(a: accounting::Account) -> Account {
    Account {
        consumer_id: a.consumer_id,
        credit_limit: money(a.credit_limit),
        reserved: money(a.reserved),
        enabled: a.enabled,
    }
}

#[utoipa::path(get, path = "/api/accounts/{consumerId}", tag = "accounts",
    params(("consumerId" = inline(Id), Path)),
    responses((status = 200, body = Account), NotFound, BackendErrors))]
pub async fn get(
    State(backends): State<Backends>,
    ApiPath(consumer_id): ApiPath<String>,
) -> Result<Json<Account>, ApiError> {
    let request = accounting::GetAccountRequest { consumer_id: path_id("account", &consumer_id)? };
    respond(&backends.accounting, Idempotency::Idempotent, request, rpc!(get_account), account).await
}

#[utoipa::path(put, path = "/api/accounts/{consumerId}", tag = "accounts",
    params(("consumerId" = inline(Id), Path)), request_body = UpdateAccount,
    responses((status = 200, body = Account), BodyErrors, NotFound, BackendErrors))]
pub async fn update(
    State(backends): State<Backends>,
    ApiPath(consumer_id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateAccount>,
) -> Result<Json<Account>, ApiError> {
    let request = accounting::UpdateAccountRequest {
        consumer_id: path_id("account", &consumer_id)?,
        credit_limit: body.credit_limit.map(|limit| parse_money("creditLimit", &limit)).transpose()?,
        enabled: body.enabled,
    };
    // Setting absolute values is idempotent: a retry cannot apply a change twice.
    respond(&backends.accounting, Idempotency::Idempotent, request, rpc!(update_account), account).await
}
