//! Liveness, readiness, metrics and this node's statistics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::ReadAccess;
use crate::error::ErrorBody;
use crate::node::Check;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the API answers.
    pub status: &'static str,
    pub uptime_ms: u64,
}

/// Liveness: the process answers. No token needed.
#[utoipa::path(get, path = "/health", tag = "node", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok", uptime_ms: state.inner.started.elapsed().as_millis() as u64 })
}

/// The named readiness checks, in a fixed order.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `dataplane`, `dns`, `policy`, `store`, `draining`.
    #[schema(value_type = Object)]
    pub checks: Vec<(String, Check)>,
}

#[derive(Serialize, ToSchema)]
struct ReadinessBody {
    ready: bool,
    #[schema(value_type = Object)]
    checks: serde_json::Map<String, serde_json::Value>,
}

pub fn readiness(state: &AppState) -> Readiness {
    let shared = &state.inner;
    let active = shared.store.read(|s| s.active_policy().map(|p| p.version));
    let applied = *shared.node.applied_policy_version().borrow();
    // A version stored a moment ago is being compiled and swapped in: a dataplane that ran
    // the active version within the grace still passes (readiness must not flap while policy
    // is written). One that runs none yet, or never ran the active one, fails at once.
    let lagging = shared.policy_grace.behind(active != applied);
    let policy = match (active, applied) {
        (None, None) => Check::ok("no policy stored; the dataplane denies everything"),
        (Some(active), Some(applied)) if active == applied => {
            Check::ok(format!("the dataplane runs the active version {active}"))
        }
        (Some(active), Some(applied)) if shared.policy_grace.tolerated(lagging) => Check::ok(format!(
            "applying: the active version is {active}, the dataplane runs {applied} (in sync {} ms ago, grace {} s)",
            lagging.flatten().unwrap_or_default().as_millis(),
            shared.policy_grace.limit().as_secs()
        )),
        (Some(active), Some(applied)) => {
            Check::failed(format!("the active version is {active} but the dataplane runs {applied}"))
        }
        (Some(active), None) => Check::failed(format!("the active version is {active}; the dataplane runs none yet")),
        (None, Some(applied)) => Check::failed(format!("the dataplane runs version {applied} but the store has none")),
    };
    let status = shared.store.status();
    let store = if status.leader == Some(status.node_id) {
        Check::ok(format!("leader, applied index {}", status.applied_index))
    } else if let Some(leader) = status.leader {
        Check::ok(format!("follower of node {leader}, applied index {}", status.applied_index))
    } else {
        Check::failed(format!("no leader known (term {})", status.term))
    };
    let draining =
        if state.draining() { Check::failed("the node is shutting down") } else { Check::ok("not draining") };
    let mut checks = vec![
        ("dataplane".to_owned(), shared.node.dataplane_check()),
        ("dns".to_owned(), shared.node.dns_check()),
        ("policy".to_owned(), policy),
        ("store".to_owned(), store),
        ("draining".to_owned(), draining),
    ];
    if let Some(release) = shared.node.release_check() {
        checks.push(("release".to_owned(), release));
    }
    if let Some(cluster) = &shared.cluster {
        checks.extend(cluster.checks(applied));
    }
    Readiness { ready: checks.iter().all(|(_, c)| c.ok), checks }
}

/// Readiness: 200 when every check passes, 503 otherwise; each check says why. No token
/// needed (load balancers and orchestrators probe it).
#[utoipa::path(get, path = "/ready", tag = "node", responses(
    (status = 200, description = "every check passes", body = ReadinessBody),
    (status = 503, description = "some check fails", body = ReadinessBody),
))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = readiness(&state);
    let checks = readiness
        .checks
        .iter()
        .map(|(name, check)| (name.clone(), serde_json::to_value(check).unwrap_or_default()))
        .collect();
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ReadinessBody { ready: readiness.ready, checks }))
}

/// Prometheus text exposition (format 0.0.4). No token needed; bind it to a management
/// address or use the separate metrics listener.
#[utoipa::path(get, path = "/metrics", tag = "node", responses(
    (status = 200, description = "Prometheus text", content_type = "text/plain; version=0.0.4", body = String),
))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&state))
}

#[derive(Serialize, ToSchema)]
pub struct Stats {
    pub node_id: u64,
    pub uptime_ms: u64,
    pub release: String,
    /// The runtime's statistics (dataplane counters, ports, dns).
    #[schema(value_type = Object)]
    pub node: serde_json::Value,
    pub store: StoreStats,
    pub policy: PolicyStats,
}

#[derive(Serialize, ToSchema)]
pub struct StoreStats {
    pub applied_index: u64,
    pub state_hash: String,
    pub schema_version: u32,
    pub leader: Option<u64>,
    pub term: u64,
    pub cluster_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyStats {
    pub active_version: Option<u64>,
    pub applied_version: Option<u64>,
}

pub fn stats_document(state: &AppState) -> Stats {
    let shared = &state.inner;
    let status = shared.store.status();
    let (cluster_id, active) =
        shared.store.read(|s| (s.cluster().map(|c| c.cluster_id.clone()), s.active_policy().map(|p| p.version)));
    Stats {
        node_id: status.node_id,
        uptime_ms: shared.started.elapsed().as_millis() as u64,
        release: shared.node.release(),
        node: shared.node.stats(),
        store: StoreStats {
            applied_index: status.applied_index,
            state_hash: status.state_hash.to_hex(),
            schema_version: status.schema_version,
            leader: status.leader,
            term: status.term,
            cluster_id,
        },
        policy: PolicyStats { active_version: active, applied_version: *shared.node.applied_policy_version().borrow() },
    }
}

/// This node's statistics: dataplane, DNS, store, release.
#[utoipa::path(get, path = "/api/v1/stats", tag = "node", security(("bearer" = [])), responses(
    (status = 200, body = Stats),
    (status = 401, body = ErrorBody),
))]
pub async fn stats(_caller: ReadAccess, State(state): State<AppState>) -> Json<Stats> {
    Json(stats_document(&state))
}
