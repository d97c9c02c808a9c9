//! The one error shape every route answers with: `{"error":{"code","message"}}`, plus
//! `fields` (one entry per offending field path) when a policy document is refused.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sluice_policy::PolicyErrors;
use sluice_store::state::CommandError;
use sluice_store::StoreError;
use utoipa::ToSchema;

use crate::node::ListingError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldProblem>,
}

/// One problem in a submitted document, named by its field path.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    /// e.g. `source_groups[0].rules[2].match.dst_ports[1]`; empty for the whole document.
    pub path: String,
    pub message: String,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_policy`, `unauthorized`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldProblem>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), fields: Vec::new() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A policy document that does not validate or compile: 400 naming every field path.
    pub fn invalid_policy(errors: &PolicyErrors) -> ApiError {
        let fields: Vec<FieldProblem> =
            errors.iter().map(|e| FieldProblem { path: e.path.clone(), message: e.message.clone() }).collect();
        let first = errors.iter().next().map(ToString::to_string).unwrap_or_default();
        let message = match errors.len() {
            1 => format!("policy refused: {first}"),
            n => format!("policy refused ({n} problems), first: {first}"),
        };
        ApiError { status: StatusCode::BAD_REQUEST, code: "invalid_policy", message, fields }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotLeader { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", e.to_string()),
            StoreError::Timeout(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_timeout", e.to_string()),
            StoreError::Storage(_) | StoreError::Raft(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string())
            }
        }
    }
}

impl From<ListingError> for ApiError {
    fn from(e: ListingError) -> ApiError {
        let (status, code) = match e {
            ListingError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "listing_busy"),
            ListingError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "dataplane_timeout"),
            ListingError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "dataplane_unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let status = match e {
            CommandError::UnknownPolicyVersion { .. } | CommandError::UnknownToken { .. } => StatusCode::NOT_FOUND,
            CommandError::TokenExists { .. }
            | CommandError::ClusterIdMismatch { .. }
            | CommandError::RolloutRevisionMismatch { .. } => StatusCode::CONFLICT,
            CommandError::TooManyTokens { .. } | CommandError::InvalidField { .. } => StatusCode::BAD_REQUEST,
        };
        let mut error = ApiError::new(status, e.code(), e.to_string());
        if let CommandError::InvalidField { field, reason } = &e {
            error.fields.push(FieldProblem { path: field.clone(), message: reason.clone() });
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message, fields: self.fields } };
        let mut response = (self.status, Json(body)).into_response();
        if unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
