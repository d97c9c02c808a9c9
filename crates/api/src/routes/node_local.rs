//! Node-local views: the learned DNS allowlist and live flows, answered by the node asked,
//! bounded and filterable.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::ReadAccess;
use crate::body::QueryParams;
use crate::error::ErrorBody;
use crate::node::{page_limit, AllowlistEntry, AllowlistFilter, FlowEntry, FlowFilter};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct AllowlistPage {
    pub entries: Vec<AllowlistEntry>,
    /// More entries matched than `limit`.
    pub truncated: bool,
}

/// This node's learned allowlist entries.
#[utoipa::path(get, path = "/api/v1/dns/allowlist", tag = "node", security(("bearer" = [])), params(AllowlistFilter),
    responses((status = 200, body = AllowlistPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
)]
pub async fn allowlist(
    _caller: ReadAccess,
    State(state): State<AppState>,
    QueryParams(filter): QueryParams<AllowlistFilter>,
) -> Json<AllowlistPage> {
    let limit = page_limit(filter.limit);
    let mut entries = state.inner.node.allowlist(&filter, limit + 1);
    let truncated = entries.len() > limit;
    entries.truncate(limit);
    Json(AllowlistPage { entries, truncated })
}

#[derive(Serialize, ToSchema)]
pub struct FlowPage {
    pub flows: Vec<FlowEntry>,
    /// More flows matched than `limit`.
    pub truncated: bool,
}

/// This node's live flows.
#[utoipa::path(get, path = "/api/v1/flows", tag = "node", security(("bearer" = [])), params(FlowFilter),
    responses((status = 200, body = FlowPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
)]
pub async fn flows(
    _caller: ReadAccess,
    State(state): State<AppState>,
    QueryParams(filter): QueryParams<FlowFilter>,
) -> Json<FlowPage> {
    let limit = page_limit(filter.limit);
    let mut flows = state.inner.node.flows(&filter, limit + 1);
    let truncated = flows.len() > limit;
    flows.truncate(limit);
    Json(FlowPage { flows, truncated })
}
