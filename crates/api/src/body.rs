//! Request bodies: the 2 MiB limit answered as 413 and malformed JSON as 400, both in the
//! API's error shape rather than axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::config::MAX_BODY_BYTES;
use crate::error::ApiError;
use crate::state::AppState;

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
    )
}

/// Refuses a body whose declared length is over the limit before reading any of it, so the
/// client gets its 413 at once instead of after uploading 2 MiB (and then, racing the close, a
/// broken pipe instead of the answer). Bodies without a declared length are still cut off by
/// the reading limit.
fn refuse_declared_oversize(req: &Request) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES as u64 => Err(too_large()),
        _ => Ok(()),
    }
}

/// A JSON body deserialized into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        refuse_declared_oversize(&req)?;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::bad_request("invalid_json", "the body must be JSON (Content-Type: application/json)"))
            }
            Err(rejection) => Err(ApiError::bad_request("invalid_json", rejection.body_text())),
        }
    }
}

/// A UTF-8 text body (a policy document, validated by the policy decoder itself so that its
/// errors carry field paths).
pub struct TextBody(pub String);

impl FromRequest<AppState> for TextBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        refuse_declared_oversize(&req)?;
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection @ BytesRejection::FailedToBufferBody(_)) => {
                return Err(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::bad_request("invalid_body", rejection.body_text())
                });
            }
            Err(rejection) => return Err(ApiError::bad_request("invalid_body", rejection.body_text())),
        };
        String::from_utf8(bytes.to_vec())
            .map(TextBody)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not UTF-8: {e}")))
    }
}

/// Query parameters deserialized into `T`; a malformed one is a 400 in the API's shape.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned> axum::extract::FromRequestParts<AppState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}
