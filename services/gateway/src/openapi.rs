//! The OpenAPI document of the public API, served at `/api/openapi.json`: this header, and the
//! paths of [`crate::api::routes`], each derived from its handler's annotations and its request
//! and response types, so it cannot drift from the code.

use utoipa::OpenApi;

use crate::error;

#[derive(OpenApi)]
#[openapi(
    info(title = "FTGO API", description = "Food To Go: consumers, restaurants, orders and the sagas behind them."),
    components(schemas(error::ErrorBody, error::ErrorDetail))
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = crate::api::routes().into_openapi();
    crate::idempotency::document(&mut document);
    document
}
