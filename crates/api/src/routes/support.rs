//! The redacted diagnostic bundle: everything useful to debug this node, nothing secret (no
//! token secrets or hashes, no private key, no policy documents beyond the active one).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AdminAccess;
use crate::error::ErrorBody;
use crate::routes::health::{readiness, stats_document, Stats};
use crate::routes::tokens::{token_info, TokenInfo};
use crate::state::{now_ms, AppState};

#[derive(Serialize, ToSchema)]
pub struct Sysdump {
    pub generated_at_ms: u64,
    pub stats: Stats,
    #[schema(value_type = Object)]
    pub readiness: serde_json::Value,
    #[schema(value_type = Object)]
    pub store: serde_json::Value,
    #[schema(value_type = Object)]
    pub policy: serde_json::Value,
    pub tokens: Vec<TokenInfo>,
    #[schema(value_type = Object)]
    pub audit_log: serde_json::Value,
    #[schema(value_type = Object)]
    pub api: serde_json::Value,
}

/// A redacted diagnostic bundle for this node (JSON).
#[utoipa::path(post, path = "/api/v1/support/sysdump", tag = "support", security(("bearer" = [])), responses(
    (status = 200, body = Sysdump), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
))]
pub async fn sysdump(AdminAccess(caller): AdminAccess, State(state): State<AppState>) -> Json<Sysdump> {
    tracing::info!(actor = %caller.actor(), "sysdump requested");
    let shared = &state.inner;
    let now = now_ms();
    let status = shared.store.status();
    let ready = readiness(&state);
    let readiness_json: serde_json::Map<String, serde_json::Value> = ready
        .checks
        .iter()
        .map(|(name, check)| (name.clone(), serde_json::json!({ "ok": check.ok, "detail": check.detail })))
        .collect();
    let (policy, tokens, audit, settings) = shared.store.read(|s| {
        let active = s.active_policy().map(|p| p.version);
        let versions: Vec<_> = s
            .policy_versions()
            .map(|p| {
                serde_json::json!({
                    "version": p.version, "sha256": p.sha256.to_hex(), "comment": p.comment,
                    "created_at_ms": p.created_at_ms, "created_by": p.created_by,
                })
            })
            .collect();
        let active_document =
            s.active_policy().and_then(|p| serde_json::from_str::<serde_json::Value>(&p.document).ok());
        let policy = serde_json::json!({ "active": active, "versions": versions, "active_document": active_document });
        let tokens: Vec<TokenInfo> = s.tokens().map(|t| token_info(t, now)).collect();
        let audit: Vec<_> = s
            .audit_log()
            .map(|a| serde_json::json!({ "index": a.index, "at_ms": a.at_ms, "actor": a.actor, "action": a.action }))
            .collect();
        let settings = s.settings();
        (policy, tokens, audit, settings)
    });
    let store = serde_json::json!({
        "node_id": status.node_id,
        "applied_index": status.applied_index,
        "state_hash": status.state_hash.to_hex(),
        "schema_version": status.schema_version,
        "leader": status.leader,
        "term": status.term,
        "last_log_index": status.last_log_index,
        "voters": status.voters,
        "learners": status.learners,
        "settings": { "policy_history_limit": settings.policy_history_limit, "audit_log_limit": settings.audit_log_limit },
    });
    let config = &shared.config;
    let api = serde_json::json!({
        "http_bind": config.http_bind.to_string(),
        "metrics_bind": config.metrics_bind.map(|a| a.to_string()),
        "certificate": shared.certificate.cert_path.display().to_string(),
        "certificate_generated": shared.certificate.generated,
        "request_timeout_ms": config.request_timeout.as_millis() as u64,
        "apply_timeout_ms": config.apply_timeout.as_millis() as u64,
        "draining": state.draining(),
    });
    Json(Sysdump {
        generated_at_ms: now,
        stats: stats_document(&state),
        readiness: serde_json::json!({ "ready": ready.ready, "checks": readiness_json }),
        store,
        policy,
        tokens,
        audit_log: serde_json::Value::Array(audit),
        api,
    })
}
