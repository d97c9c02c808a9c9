//! Node-local views: the learned DNS allowlist and live flows, answered by the node asked,
//! bounded and filterable. The node asks its dataplane workers (which may take a few
//! milliseconds, bounded by a timeout), so the call runs on the blocking pool, never on the
//! async workers.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::ReadAccess;
use crate::body::QueryParams;
use crate::error::{ApiError, ErrorBody};
use crate::node::{page_limit, AllowlistEntry, AllowlistFilter, FlowEntry, FlowFilter, ListingError};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct AllowlistPage {
    pub entries: Vec<AllowlistEntry>,
    /// More entries matched than `limit`.
    pub truncated: bool,
}

/// Runs a listing on the blocking pool; asks for one row more than `limit` to learn whether
/// more matched.
async fn listing<T: Send + 'static>(
    state: &AppState,
    limit: usize,
    list: impl FnOnce(&dyn crate::node::NodeView, usize) -> Result<Vec<T>, ListingError> + Send + 'static,
) -> Result<(Vec<T>, bool), ApiError> {
    let node = state.inner.node.clone();
    let mut rows = tokio::task::spawn_blocking(move || list(node.as_ref(), limit + 1))
        .await
        .map_err(|e| ApiError::internal(format!("the listing task failed: {e}")))??;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, truncated))
}

/// This node's learned allowlist entries.
#[utoipa::path(get, path = "/api/v1/dns/allowlist", tag = "node", security(("bearer" = [])), params(AllowlistFilter),
    responses((status = 200, body = AllowlistPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, description = "another listing is in progress, or no dataplane worker", body = ErrorBody),
        (status = 504, description = "the dataplane worker did not answer in time", body = ErrorBody)),
)]
pub async fn allowlist(
    _caller: ReadAccess,
    State(state): State<AppState>,
    QueryParams(filter): QueryParams<AllowlistFilter>,
) -> Result<Json<AllowlistPage>, ApiError> {
    let limit = page_limit(filter.limit);
    let (entries, truncated) = listing(&state, limit, move |node, n| node.allowlist(&filter, n)).await?;
    Ok(Json(AllowlistPage { entries, truncated }))
}

#[derive(Serialize, ToSchema)]
pub struct FlowPage {
    pub flows: Vec<FlowEntry>,
    /// More flows matched than `limit`.
    pub truncated: bool,
}

/// This node's live flows.
#[utoipa::path(get, path = "/api/v1/flows", tag = "node", security(("bearer" = [])), params(FlowFilter),
    responses((status = 200, body = FlowPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, description = "another listing is in progress, or no dataplane worker", body = ErrorBody),
        (status = 504, description = "the dataplane worker did not answer in time", body = ErrorBody)),
)]
pub async fn flows(
    _caller: ReadAccess,
    State(state): State<AppState>,
    QueryParams(filter): QueryParams<FlowFilter>,
) -> Result<Json<FlowPage>, ApiError> {
    let limit = page_limit(filter.limit);
    let (flows, truncated) = listing(&state, limit, move |node, n| node.flows(&filter, n)).await?;
    Ok(Json(FlowPage { flows, truncated }))
}
