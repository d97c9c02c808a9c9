//! Rolling upgrade and rollback: the plan and its progress, start, abort, rollback,
//! finalize; and the node's release slots.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::auth::{AdminAccess, ReadAccess};
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::upgrade::{StartRollback, StartUpgrade, UpgradeFailure, UpgradeService};

fn failure(failure: UpgradeFailure) -> ApiError {
    match failure {
        UpgradeFailure::Conflict { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
        UpgradeFailure::BadRequest { code, message } => ApiError::bad_request(code, message),
        UpgradeFailure::NotFound(m) => ApiError::not_found("unknown_release", m),
        UpgradeFailure::Internal(m) => ApiError::internal(m),
    }
}

fn service(state: &AppState) -> Result<Arc<dyn UpgradeService>, ApiError> {
    state.inner.upgrade.get().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "upgrade_unavailable", "this node has no release slots")
    })
}

/// The rollout: plan, per-node progress, baseline, events, why it stopped; the cluster's
/// active schema; this node's release slots and boot state.
#[utoipa::path(get, path = "/api/v1/upgrade", tag = "upgrade", security(("bearer" = [])), responses(
    (status = 200, body = Object), (status = 401, body = ErrorBody),
))]
pub async fn get_upgrade(
    _caller: ReadAccess,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(service(&state)?.status()))
}

/// Starts a rolling upgrade of every member to a release staged on this node.
#[utoipa::path(post, path = "/api/v1/upgrade", tag = "upgrade", security(("bearer" = [])), request_body = StartUpgrade,
    responses((status = 202, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn start_upgrade(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<StartUpgrade>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let plan = service(&state)?.start(request, caller.actor()).await.map_err(failure)?;
    Ok((StatusCode::ACCEPTED, Json(plan)))
}

/// Returns every node to the release the last upgrade replaced (or `to`), in reverse order,
/// with the same gates; refused after finalize.
#[utoipa::path(post, path = "/api/v1/upgrade/rollback", tag = "upgrade", security(("bearer" = [])),
    request_body = StartRollback,
    responses((status = 202, body = Object), (status = 409, body = ErrorBody)))]
pub async fn rollback_upgrade(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<StartRollback>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let plan = service(&state)?.rollback(request, caller.actor()).await.map_err(failure)?;
    Ok((StatusCode::ACCEPTED, Json(plan)))
}

/// Stops the rollout in progress; the nodes it changed return to their releases.
#[utoipa::path(post, path = "/api/v1/upgrade/abort", tag = "upgrade", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 409, body = ErrorBody)))]
pub async fn abort_upgrade(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(service(&state)?.abort(caller.actor()).await.map_err(failure)?))
}

/// Moves the cluster's active schema to the new release's (every member must run it); after
/// this a rollback is refused (restore the pre-upgrade snapshot instead).
#[utoipa::path(post, path = "/api/v1/upgrade/finalize", tag = "upgrade", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 409, body = ErrorBody)))]
pub async fn finalize_upgrade(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(service(&state)?.finalize(caller.actor()).await.map_err(failure)?))
}

/// The releases staged on this node (current and previous marked) and what ran when.
#[utoipa::path(get, path = "/api/v1/releases", tag = "upgrade", security(("bearer" = [])), responses(
    (status = 200, body = Object), (status = 401, body = ErrorBody),
))]
pub async fn list_releases(
    _caller: ReadAccess,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(service(&state)?.releases()))
}
