//! `Idempotency-Key` on every `POST`: a client that did not see the answer to a command sends it
//! again with the same key and gets the first answer, not a second order.
//!
//! The gateway checks the header (1 to 255 visible ASCII characters, else 400) and carries the key
//! to the service that owns the command as the gRPC metadata `ftgo-idempotency-key`
//! ([`ftgo_platform::idempotency`]); that service records the key with the command's effect and
//! answers a repeat from its record, or refuses the key with a different request (422 here). A
//! command with a key is safe to send twice, so the gateway retries it like a read when its
//! service is unavailable, on another instance through Fabio.
//!
//! The key travels with the request's task ([`KEY`]), as the trace context does, so a handler
//! does not pass it along by hand.

use axum::{
    extract::Request,
    http::{HeaderName, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ftgo_platform::idempotency::{MAX_KEY_LENGTH, valid};
use utoipa::openapi::{
    OpenApi, Ref, RefOr, Required,
    content::ContentBuilder,
    path::{ParameterBuilder, ParameterIn},
    response::ResponseBuilder,
    schema::{ObjectBuilder, Type},
};

use crate::error::ApiError;

/// The header's name.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");

tokio::task_local! {
    /// The idempotency key of the request this task serves, if it is a `POST` that has one.
    pub static KEY: Option<String>;
}

/// The key of the request being served, if any.
pub fn current() -> Option<String> {
    KEY.try_with(Clone::clone).ok().flatten()
}

/// Checks a `POST`'s `Idempotency-Key` and runs the rest of the request with it in [`KEY`].
pub async fn carry(request: Request, next: Next) -> Response {
    let key = match request.headers().get(&HEADER) {
        Some(value) if request.method() == Method::POST => match value.to_str().ok().filter(|key| valid(key)) {
            Some(key) => Some(key.to_owned()),
            None => {
                let message = format!("Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters");
                return ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message).into_response();
            }
        },
        _ => None,
    };
    KEY.scope(key, next.run(request)).await
}

/// Adds the header, and the 400 and 422 it can cause, to every `POST` of the OpenAPI document.
pub fn document(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let Some(operation) = item.post.as_mut() else { continue };
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_KEY_LENGTH))
            .pattern(Some("^[!-~]+$"));
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Sent again with the same request, the command is not repeated: the answer is the first one. \
                 Kept 24 hours by the service that owns the command.",
            ))
            .schema(Some(schema))
            .build();
        operation.parameters.get_or_insert_with(Vec::new).push(header);
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                    )
                    .build(),
            )
        };
        let responses = &mut operation.responses.responses;
        responses.entry("400".to_owned()).or_insert_with(|| error("A malformed Idempotency-Key"));
        responses.insert("422".to_owned(), error("The Idempotency-Key was used before with a different request"));
    }
}
