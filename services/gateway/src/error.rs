//! The one place where failures become HTTP answers: `{"error": {"code", "message", "details"}}`
//! with the status `docs/api.md` documents. gRPC statuses are mapped here once, so a handler only says
//! `?`.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;
use tonic::Code;
use utoipa::{IntoResponses, ToSchema};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Value>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `invalid_argument`, `not_found`, `conflict`, ...
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured hints, such as the JSON path of a bad field.
    pub details: Vec<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Vec::new() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.details.push(detail);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.to_owned(), message: self.message, details: self.details },
        };
        (self.status, Json(body)).into_response()
    }
}

/// A service's answer, in HTTP terms. Client mistakes stay 4xx; a sick backend is a 5xx that
/// says which one.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        if ftgo_platform::idempotency::is_reused(&status) {
            return Self::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", status.message());
        }
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "invalid_argument"),
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => (StatusCode::CONFLICT, "conflict"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
            Code::Unavailable | Code::ResourceExhausted => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            Code::Ok | Code::Cancelled | Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => {
                (StatusCode::BAD_GATEWAY, "backend_error")
            }
        };
        Self::new(http, code, status.message())
    }
}

/// A body axum could not read as the expected JSON: always the client's mistake.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match rejection {
            // axum says 422 for well-formed JSON of the wrong shape; the API's contract says 400.
            JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (rejection.status(), "bad_request"),
        };
        Self::new(status, code, rejection.body_text())
    }
}

/// The answers every operation that calls a service may give when the service cannot: documented
/// on each such operation (`responses(..., BackendErrors)`).
#[derive(IntoResponses)]
pub enum BackendErrors {
    /// `backend_error`: a service failed in a way it should not have.
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// `unavailable`: the service cannot be reached, or its circuit is open; try again shortly.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `deadline_exceeded`: the service did not answer in time.
    #[response(status = 504)]
    GatewayTimeout(ErrorBody),
}

/// The answers to a request body the gateway cannot take: documented on each operation with a
/// JSON body (`responses(..., BodyErrors)`).
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// `malformed_json`, `invalid_body` or `invalid_argument`: the body is not JSON, not the shape
    /// asked for, or a value breaks its rules; the message names the field.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `payload_too_large`: the body is over the gateway's limit (`http.max_body_bytes`).
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// `unsupported_media_type`: the body is not sent as `content-type: application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
}

/// The answer to an id that names nothing (or cannot name anything: not a UUID).
#[derive(IntoResponses)]
pub enum NotFound {
    /// `not_found`: the owning service knows no such resource.
    #[response(status = 404)]
    NotFound(ErrorBody),
}
