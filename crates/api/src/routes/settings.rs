//! Cluster-wide settings (how much policy history and audit log the state keeps) and the
//! audit log itself: who changed what, when.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_store::state::{
    AuditEntry, Command, Outcome, MAX_AUDIT_LOG_LIMIT, MAX_POLICY_HISTORY_LIMIT, MIN_AUDIT_LOG_LIMIT,
};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AdminAccess, ReadAccess};
use crate::body::{JsonBody, QueryParams};
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct SettingsLimits {
    pub policy_history_limit_min: u32,
    pub policy_history_limit_max: u32,
    pub audit_log_limit_min: u32,
    pub audit_log_limit_max: u32,
}

#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    /// Stored policy versions kept (the oldest inactive ones are dropped beyond it).
    pub policy_history_limit: u32,
    /// Audit log entries kept (the oldest are dropped beyond it).
    pub audit_log_limit: u32,
    /// The ranges a write must stay within.
    pub limits: SettingsLimits,
}

fn view(state: &AppState) -> SettingsView {
    let settings = state.inner.store.read(|s| s.settings());
    SettingsView {
        policy_history_limit: settings.policy_history_limit,
        audit_log_limit: settings.audit_log_limit,
        limits: SettingsLimits {
            policy_history_limit_min: 1,
            policy_history_limit_max: MAX_POLICY_HISTORY_LIMIT,
            audit_log_limit_min: MIN_AUDIT_LOG_LIMIT,
            audit_log_limit_max: MAX_AUDIT_LOG_LIMIT,
        },
    }
}

/// The settings in force.
#[utoipa::path(get, path = "/api/v1/settings", tag = "settings", security(("bearer" = [])), responses(
    (status = 200, body = SettingsView), (status = 401, body = ErrorBody),
))]
pub async fn get_settings(_caller: ReadAccess, State(state): State<AppState>) -> Json<SettingsView> {
    Json(view(&state))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// Unchanged when absent.
    pub policy_history_limit: Option<u32>,
    /// Unchanged when absent.
    pub audit_log_limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct SettingsChanged {
    #[serde(flatten)]
    pub settings: SettingsView,
    /// Policy versions dropped because the history got shorter (the active one never is).
    pub evicted_versions: Vec<u64>,
}

/// Changes settings; a shorter history drops the oldest inactive versions at once.
#[utoipa::path(put, path = "/api/v1/settings", tag = "settings", security(("bearer" = [])),
    request_body = SettingsChange,
    responses((status = 200, body = SettingsChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
)]
pub async fn put_settings(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    JsonBody(change): JsonBody<SettingsChange>,
) -> Result<Json<SettingsChanged>, ApiError> {
    if change.policy_history_limit.is_none() && change.audit_log_limit.is_none() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "give policy_history_limit, audit_log_limit or both: an empty change changes nothing",
        ));
    }
    // Checked here as well as by the state machine, so a refused change is never proposed.
    let mut problems = Vec::new();
    if let Some(limit) = change.policy_history_limit.filter(|l| !(1..=MAX_POLICY_HISTORY_LIMIT).contains(l)) {
        problems.push(("policy_history_limit", format!("{limit} is not between 1 and {MAX_POLICY_HISTORY_LIMIT}")));
    }
    if let Some(limit) = change.audit_log_limit.filter(|l| !(MIN_AUDIT_LOG_LIMIT..=MAX_AUDIT_LOG_LIMIT).contains(l)) {
        problems.push((
            "audit_log_limit",
            format!("{limit} is not between {MIN_AUDIT_LOG_LIMIT} and {MAX_AUDIT_LOG_LIMIT}"),
        ));
    }
    if !problems.is_empty() {
        let mut error = ApiError::bad_request("invalid_field", format!("{} setting(s) out of range", problems.len()));
        for (path, message) in problems {
            error.fields.push(FieldProblem { path: path.to_owned(), message });
        }
        return Err(error);
    }
    let command = Command::UpdateSettings {
        policy_history_limit: change.policy_history_limit,
        audit_log_limit: change.audit_log_limit,
    };
    let applied = state.inner.store.write(&caller.actor(), command).await?;
    let Outcome::SettingsUpdated { evicted_versions, .. } = applied.response? else {
        return Err(ApiError::internal("the store answered a settings change with another outcome"));
    };
    tracing::info!(actor = %caller.actor(), evicted = evicted_versions.len(), "settings changed");
    Ok(Json(SettingsChanged { settings: view(&state), evicted_versions }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// At most this many entries, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only entries at a log index below this one (the `index` of the last entry of the
    /// previous page), to page back through the log.
    pub before: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditRecord {
    /// The store's log index of the change.
    pub index: u64,
    pub at_ms: u64,
    /// `token:<id>`, `admin-socket:uid=<uid>`, `bootstrap`, `sighup`, ...
    pub actor: String,
    /// What changed, e.g. `policy.put version=3`.
    pub action: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    /// Older entries than these are kept.
    pub truncated: bool,
}

fn record(entry: &AuditEntry) -> AuditRecord {
    AuditRecord { index: entry.index, at_ms: entry.at_ms, actor: entry.actor.clone(), action: entry.action.clone() }
}

/// The audit log, newest first (bounded by the `audit_log_limit` setting).
#[utoipa::path(get, path = "/api/v1/audit", tag = "settings", security(("bearer" = [])), params(AuditFilter),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
)]
pub async fn audit_log(
    _caller: ReadAccess,
    State(state): State<AppState>,
    QueryParams(filter): QueryParams<AuditFilter>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = filter.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_field", "limit: must be between 1 and 1000"));
    }
    let before = filter.before.unwrap_or(u64::MAX);
    let (entries, truncated) = state.inner.store.read(|s| {
        let mut older = s.audit_log().rev().filter(|e| e.index < before);
        let entries: Vec<AuditRecord> = older.by_ref().take(limit).map(record).collect();
        (entries, older.next().is_some())
    });
    Ok(Json(AuditPage { entries, truncated }))
}
