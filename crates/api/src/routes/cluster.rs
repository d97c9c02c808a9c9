//! The cluster: members and their state, member removal, leadership transfer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{AdminAccess, ReadAccess};
use crate::body::JsonBody;
use crate::cluster::{ClusterOverview, ClusterRefusal, MemberInfo};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

fn refusal(refusal: ClusterRefusal) -> ApiError {
    match refusal {
        ClusterRefusal::NotClustered => ApiError::new(
            StatusCode::CONFLICT,
            "not_clustered",
            "this node runs alone (started without cluster flags); there is no membership to change",
        ),
        ClusterRefusal::UnknownMember(m) => ApiError::not_found("unknown_member", m),
        ClusterRefusal::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "refused", m),
        ClusterRefusal::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", m),
    }
}

/// A single node's view of itself, in the cluster document's shape.
fn single(state: &AppState) -> ClusterOverview {
    let status = state.inner.store.status();
    let cluster_id = state.inner.store.read(|s| s.cluster().map(|c| c.cluster_id.clone()));
    ClusterOverview {
        mode: "single".into(),
        cluster_id,
        node_id: status.node_id,
        leader: status.leader,
        term: status.term,
        members: vec![MemberInfo {
            id: status.node_id,
            cluster_address: String::new(),
            api_address: Some(state.inner.config.http_bind.to_string()),
            role: "voter".into(),
            leader: status.leader == Some(status.node_id),
            release: Some(state.inner.node.release()),
            applied_index: Some(status.applied_index),
            lag: Some(0),
            state_hash: Some(status.state_hash.to_hex()),
            last_contact_ms: Some(0),
            ready: None,
            error: None,
        }],
    }
}

/// Cluster id, leader, term, and every member with its addresses, role, release, applied
/// index, lag, state hash, last contact and readiness.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster", security(("bearer" = [])), responses(
    (status = 200, body = ClusterOverview), (status = 401, body = ErrorBody),
))]
pub async fn get_cluster(_caller: ReadAccess, State(state): State<AppState>) -> Json<ClusterOverview> {
    Json(match &state.inner.cluster {
        Some(cluster) => cluster.overview(),
        None => single(&state),
    })
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveMember {
    /// Remove it even when the remaining reachable voters are fewer than their quorum.
    #[serde(default)]
    pub force: bool,
}

#[derive(Serialize, ToSchema)]
pub struct MembershipChanged {
    pub voters: Vec<u64>,
}

/// Removes a member (on any node: the leader does it). Refused (409) when the reachable
/// voters left would be fewer than their quorum, unless `force`.
#[utoipa::path(post, path = "/api/v1/cluster/members/{id}/remove", tag = "cluster", security(("bearer" = [])),
    params(("id" = u64, Path, description = "node id")), request_body = RemoveMember,
    responses((status = 200, body = MembershipChanged), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
)]
pub async fn remove_member(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    Path(id): Path<u64>,
    JsonBody(request): JsonBody<RemoveMember>,
) -> Result<Json<MembershipChanged>, ApiError> {
    let cluster = state.inner.cluster.as_ref().ok_or_else(|| refusal(ClusterRefusal::NotClustered))?;
    let voters = cluster.remove_member(id, request.force).await.map_err(refusal)?;
    tracing::info!(node_id = id, force = request.force, actor = %caller.actor(), "member removed");
    Ok(Json(MembershipChanged { voters }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferLeader {
    /// The node to lead; the most up-to-date reachable follower when absent.
    pub to: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct LeaderTransferred {
    pub leader: u64,
}

/// Hands leadership to a follower and answers once it leads (before a planned restart of
/// the leader).
#[utoipa::path(post, path = "/api/v1/cluster/leader/transfer", tag = "cluster", security(("bearer" = [])),
    request_body = TransferLeader,
    responses((status = 200, body = LeaderTransferred), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
)]
pub async fn transfer_leader(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<TransferLeader>,
) -> Result<Json<LeaderTransferred>, ApiError> {
    let cluster = state.inner.cluster.as_ref().ok_or_else(|| refusal(ClusterRefusal::NotClustered))?;
    let leader = cluster.transfer_leader(request.to).await.map_err(refusal)?;
    tracing::info!(leader, actor = %caller.actor(), "leadership transferred");
    Ok(Json(LeaderTransferred { leader }))
}
