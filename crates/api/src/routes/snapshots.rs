//! Snapshots of the node's state: list, create, download, verify.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{AdminAccess, ReadAccess};
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::snapshots::{SnapshotFailure, SnapshotService, SnapshotSummary};
use crate::state::AppState;

fn failure(failure: SnapshotFailure) -> ApiError {
    match failure {
        SnapshotFailure::BadRequest { code, message } => ApiError::bad_request(code, message),
        SnapshotFailure::NotFound(m) => ApiError::not_found("unknown_snapshot", m),
        SnapshotFailure::Invalid { code, message } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message),
        SnapshotFailure::Busy(m) => ApiError::new(StatusCode::CONFLICT, "snapshot_in_progress", m),
        SnapshotFailure::Io(m) => ApiError::internal(m),
    }
}

fn service(state: &AppState) -> Result<Arc<dyn SnapshotService>, ApiError> {
    state.inner.snapshots.get().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "snapshots_unavailable", "this node has no snapshot repository")
    })
}

/// Runs repository work on the blocking pool (it reads and writes whole files).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SnapshotFailure> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("snapshot task failed: {e}")))?
        .map_err(failure)
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotSummary>,
}

/// The snapshots kept on this node, newest first, each checked against the format.
#[utoipa::path(get, path = "/api/v1/snapshots", tag = "snapshots", security(("bearer" = [])), responses(
    (status = 200, body = SnapshotList), (status = 401, body = ErrorBody),
))]
pub async fn list_snapshots(
    _caller: ReadAccess,
    State(state): State<AppState>,
) -> Result<Json<SnapshotList>, ApiError> {
    let service = service(&state)?;
    let snapshots = blocking(move || service.list()).await?;
    Ok(Json(SnapshotList { snapshots }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Also seal the node's identity and secrets (bootstrap token, API certificate and key)
    /// into the snapshot, encrypted under `passphrase`.
    #[serde(default)]
    pub include_secrets: bool,
    /// Required with `include_secrets`; never stored.
    pub passphrase: Option<String>,
}

/// Takes a snapshot of this node's applied state now (consistent at one applied index) and
/// keeps it in the node's repository. Any node can take one; followers' state may trail the
/// leader's by their lag.
#[utoipa::path(post, path = "/api/v1/snapshots", tag = "snapshots", security(("bearer" = [])),
    request_body = CreateSnapshot,
    responses((status = 201, body = SnapshotSummary), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
pub async fn create_snapshot(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateSnapshot>,
) -> Result<(StatusCode, Json<SnapshotSummary>), ApiError> {
    let service = service(&state)?;
    let passphrase = match (request.include_secrets, request.passphrase) {
        (true, Some(p)) if !p.is_empty() => Some(p.into_bytes()),
        (true, _) => {
            return Err(ApiError::bad_request(
                "passphrase_required",
                "include_secrets needs a non-empty passphrase: the secrets are encrypted under it",
            ))
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "passphrase_without_secrets",
                "a passphrase was given without include_secrets: nothing would be encrypted with it",
            ))
        }
        (false, None) => None,
    };
    let secrets = passphrase.is_some();
    let summary = blocking(move || service.create(passphrase.as_deref())).await?;
    tracing::info!(id = %summary.id, secrets, actor = %caller.actor(), "snapshot created");
    Ok((StatusCode::CREATED, Json(summary)))
}

/// Downloads a snapshot file (admin only: it holds token hashes and may hold sealed secrets).
#[utoipa::path(get, path = "/api/v1/snapshots/{id}", tag = "snapshots", security(("bearer" = [])),
    params(("id" = String, Path, description = "snapshot id")),
    responses((status = 200, description = "the snapshot file", content_type = "application/octet-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
pub async fn download_snapshot(
    AdminAccess(_caller): AdminAccess,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let service = service(&state)?;
    let name = id.clone();
    let bytes = blocking(move || {
        let path = service.file(&name)?;
        std::fs::read(&path).map_err(|e| SnapshotFailure::Io(format!("cannot read {}: {e}", path.display())))
    })
    .await?;
    let disposition = format!("attachment; filename=\"{id}.snap\"");
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        Body::from(bytes),
    )
        .into_response())
}

/// Verifies a kept snapshot completely: format, section and file checksums, schema, and
/// that its state is at its manifest's index with its manifest's state hash.
#[utoipa::path(post, path = "/api/v1/snapshots/{id}/verify", tag = "snapshots", security(("bearer" = [])),
    params(("id" = String, Path, description = "snapshot id")),
    responses((status = 200, body = SnapshotSummary), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
)]
pub async fn verify_snapshot(
    _caller: ReadAccess,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SnapshotSummary>, ApiError> {
    let service = service(&state)?;
    Ok(Json(blocking(move || service.verify(&id)).await?))
}
