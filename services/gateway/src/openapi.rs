//! The OpenAPI document of the public API, served at `/api/openapi.json`. It is derived from the
//! handlers' annotations and the request and response types, so it cannot drift from the code.

use utoipa::OpenApi;

use crate::{
    api::{self, accounts, consumers, orders, restaurants, sagas, tickets},
    error,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "FTGO API", description = "Food To Go: consumers, restaurants, orders and the sagas behind them."),
    paths(
        api::healthz,
        consumers::create,
        consumers::get,
        accounts::get,
        accounts::update,
        restaurants::create,
        restaurants::get,
        orders::create,
        orders::get,
        orders::cancel,
        orders::revise,
        tickets::get,
        tickets::accept,
        tickets::preparing,
        tickets::ready,
        tickets::picked_up,
        sagas::get,
        sagas::for_order,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
