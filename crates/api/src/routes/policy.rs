//! Policy: read, write (validated and compiled before it is proposed; answered once this
//! node's dataplane runs it), history, rollback, validate, explain.

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_policy::{compile_json, Action, Cause, CompiledPolicy, ExplainQuery};
use sluice_store::state::{Command, Digest, Outcome, PolicyVersion};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AdminAccess, ReadAccess};
use crate::body::{JsonBody, QueryParams, TextBody};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct PolicyVersionInfo {
    pub version: u64,
    pub sha256: String,
    pub comment: String,
    pub created_at_ms: u64,
    /// Who stored it (`token:<id>`, `admin-socket`, `bootstrap`).
    pub created_by: String,
    pub active: bool,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyDocumentResponse {
    #[serde(flatten)]
    pub info: PolicyVersionInfo,
    /// The version the dataplane of this node runs now.
    pub applied_version: Option<u64>,
    /// The policy document.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

fn info(policy: &PolicyVersion, active: Option<u64>) -> PolicyVersionInfo {
    PolicyVersionInfo {
        version: policy.version,
        sha256: policy.sha256.to_hex(),
        comment: policy.comment.clone(),
        created_at_ms: policy.created_at_ms,
        created_by: policy.created_by.clone(),
        active: Some(policy.version) == active,
    }
}

fn document_response(state: &AppState, policy: &PolicyVersion, active: Option<u64>) -> PolicyDocumentResponse {
    PolicyDocumentResponse {
        info: info(policy, active),
        applied_version: *state.inner.node.applied_policy_version().borrow(),
        // Stored documents were validated as JSON before they were proposed.
        document: serde_json::from_str(&policy.document).unwrap_or(serde_json::Value::Null),
    }
}

/// The active policy.
#[utoipa::path(get, path = "/api/v1/policy", tag = "policy", security(("bearer" = [])), responses(
    (status = 200, body = PolicyDocumentResponse),
    (status = 404, description = "no policy stored yet", body = ErrorBody),
))]
pub async fn get_policy(
    _caller: ReadAccess,
    State(state): State<AppState>,
) -> Result<Json<PolicyDocumentResponse>, ApiError> {
    let active = state.inner.store.read(|s| s.active_policy().cloned());
    let active = active.ok_or_else(|| ApiError::not_found("no_policy", "no policy has been stored yet"))?;
    Ok(Json(document_response(&state, &active, Some(active.version))))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutPolicyParams {
    /// A note kept with the version (at most 256 bytes).
    pub comment: Option<String>,
}

/// A write's result, returned once this node's dataplane runs the version.
#[derive(Serialize, ToSchema)]
pub struct PolicyWritten {
    pub version: u64,
    pub sha256: String,
    /// The log index of the write and the state hash right after it.
    pub index: u64,
    pub state_hash: String,
    /// Versions dropped from history by this write.
    pub evicted: Vec<u64>,
    pub applied: bool,
}

/// Stores a new policy version and makes it active. The body is the policy document. It is
/// validated and compiled first: a refusal is a 400 naming every offending field path, and
/// nothing is stored.
#[utoipa::path(put, path = "/api/v1/policy", tag = "policy", security(("bearer" = [])), params(PutPolicyParams),
    request_body(content = Object, description = "the policy document", content_type = "application/json"),
    responses(
        (status = 200, body = PolicyWritten),
        (status = 400, description = "invalid JSON or policy (field paths in `error.fields`)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, description = "no leader, or the store is unavailable", body = ErrorBody),
        (status = 504, description = "stored, but the dataplane did not run it in time", body = ErrorBody),
))]
pub async fn put_policy(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    QueryParams(params): QueryParams<PutPolicyParams>,
    TextBody(document): TextBody,
) -> Result<Json<PolicyWritten>, ApiError> {
    compile_json(&document).map_err(|errors| ApiError::invalid_policy(&errors))?;
    let sha256 = Digest::of(document.as_bytes()).to_hex();
    let command = Command::PutPolicy { document, comment: params.comment.unwrap_or_default() };
    let applied = state.inner.store.write(&caller.actor(), command).await?;
    let Outcome::PolicyStored { version, evicted } = applied.response? else {
        return Err(ApiError::internal("the store answered a policy write with another outcome"));
    };
    tracing::info!(version, actor = %caller.actor(), "policy stored");
    wait_applied(&state, version).await?;
    Ok(Json(PolicyWritten {
        version,
        sha256,
        index: applied.index,
        state_hash: applied.state_hash.to_hex(),
        evicted,
        applied: true,
    }))
}

/// Waits until this node's dataplane runs `version`, or another write has superseded it.
async fn wait_applied(state: &AppState, version: u64) -> Result<(), ApiError> {
    let mut applied = state.inner.node.applied_policy_version();
    let store = state.inner.store.clone();
    let superseded = move || store.read(|s| s.active_policy().map(|p| p.version)) != Some(version);
    let waited = tokio::time::timeout(
        state.inner.config.apply_timeout,
        applied.wait_for(|current| *current == Some(version) || superseded()),
    )
    .await
    .map(|result| result.map(|_| ()));
    match waited {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dataplane_unavailable",
            format!("version {version} is stored, but the dataplane stopped reporting"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "apply_timeout",
            format!(
                "version {version} is stored and active, but this node's dataplane did not run it within {} ms",
                state.inner.config.apply_timeout.as_millis()
            ),
        )),
    }
}

#[derive(Serialize, ToSchema)]
pub struct PolicyVersions {
    pub active: Option<u64>,
    /// Oldest first.
    pub versions: Vec<PolicyVersionInfo>,
}

/// The stored history (bounded by the `policy_history_limit` setting).
#[utoipa::path(get, path = "/api/v1/policy/versions", tag = "policy", security(("bearer" = [])), responses(
    (status = 200, body = PolicyVersions), (status = 401, body = ErrorBody),
))]
pub async fn list_versions(_caller: ReadAccess, State(state): State<AppState>) -> Json<PolicyVersions> {
    Json(state.inner.store.read(|s| {
        let active = s.active_policy().map(|p| p.version);
        PolicyVersions { active, versions: s.policy_versions().map(|p| info(p, active)).collect() }
    }))
}

/// One stored version with its document.
#[utoipa::path(get, path = "/api/v1/policy/versions/{version}", tag = "policy", security(("bearer" = [])),
    params(("version" = u64, Path, description = "policy version number")),
    responses((status = 200, body = PolicyDocumentResponse), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
)]
pub async fn get_version(
    _caller: ReadAccess,
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<PolicyDocumentResponse>, ApiError> {
    let version: u64 = version
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_version", format!("{version:?} is not a version number")))?;
    let (policy, active) =
        state.inner.store.read(|s| (s.policy(version).cloned(), s.active_policy().map(|p| p.version)));
    let policy = policy.ok_or_else(|| {
        ApiError::not_found("unknown_policy_version", format!("policy version {version} is not in the stored history"))
    })?;
    Ok(Json(document_response(&state, &policy, active)))
}

#[derive(Deserialize, ToSchema, Default)]
pub struct RollbackRequest {
    /// The version to make active; when absent, the newest stored version older than the
    /// active one.
    pub version: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct RolledBack {
    pub version: u64,
    pub previous: Option<u64>,
    pub index: u64,
    pub state_hash: String,
    pub applied: bool,
}

/// Makes a stored version active again; answered once this node's dataplane runs it.
#[utoipa::path(post, path = "/api/v1/policy/rollback", tag = "policy", security(("bearer" = [])),
    request_body = RollbackRequest,
    responses(
        (status = 200, body = RolledBack), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "unknown version", body = ErrorBody),
        (status = 409, description = "no older version to return to", body = ErrorBody),
))]
pub async fn rollback(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RollbackRequest>,
) -> Result<Json<RolledBack>, ApiError> {
    let target = match request.version {
        Some(version) => version,
        None => state
            .inner
            .store
            .read(|s| {
                let active = s.active_policy().map(|p| p.version)?;
                s.policy_versions().rev().map(|p| p.version).find(|v| *v < active)
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_previous_version",
                    "no stored version is older than the active one",
                )
            })?,
    };
    let applied = state.inner.store.write(&caller.actor(), Command::ActivatePolicy { version: target }).await?;
    let Outcome::PolicyActivated { version, previous } = applied.response? else {
        return Err(ApiError::internal("the store answered a rollback with another outcome"));
    };
    tracing::info!(version, ?previous, actor = %caller.actor(), "policy rolled back");
    wait_applied(&state, version).await?;
    Ok(Json(RolledBack {
        version,
        previous,
        index: applied.index,
        state_hash: applied.state_hash.to_hex(),
        applied: true,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Validated {
    pub valid: bool,
    pub groups: usize,
    pub rules: usize,
    pub sha256: String,
}

/// Validates and compiles a document without storing it: exactly the checks `PUT` makes,
/// with the same 400 answer.
#[utoipa::path(post, path = "/api/v1/policy/validate", tag = "policy", security(("bearer" = [])),
    request_body(content = Object, description = "the policy document", content_type = "application/json"),
    responses((status = 200, body = Validated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)),
)]
pub async fn validate(_caller: ReadAccess, TextBody(document): TextBody) -> Result<Json<Validated>, ApiError> {
    let document_model = sluice_policy::parse_policy(&document).map_err(|e| ApiError::invalid_policy(&e))?;
    compile_json(&document).map_err(|e| ApiError::invalid_policy(&e))?;
    Ok(Json(Validated {
        valid: true,
        groups: document_model.source_groups.len(),
        rules: document_model.source_groups.iter().map(|g| g.rules.len()).sum(),
        sha256: Digest::of(document.as_bytes()).to_hex(),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct ExplainRequest {
    #[schema(value_type = String, example = "10.10.0.2")]
    pub src: Ipv4Addr,
    #[schema(value_type = String, example = "203.0.113.10")]
    pub dst: Ipv4Addr,
    /// `tcp`, `udp`, `icmp` or a protocol number.
    #[schema(value_type = Object, example = "tcp")]
    pub proto: serde_json::Value,
    #[serde(default)]
    pub dst_port: u16,
    #[serde(default)]
    pub icmp_type: u8,
    /// Treat the flow as following a DNS lookup of this name by `src`.
    pub hostname: Option<String>,
    /// Explain against this stored version instead of the active one.
    pub version: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ExplainResponse {
    pub version: u64,
    /// `allow` or `deny` (an audited deny is `allow` with `audit_would_deny`).
    pub action: String,
    pub group: Option<String>,
    pub rule: Option<String>,
    pub description: String,
    pub audit_would_deny: bool,
    pub candidate_groups: Vec<String>,
    /// What the DNS proxy would do with `hostname` for `src`.
    pub dns: Option<DnsExplanation>,
}

#[derive(Serialize, ToSchema)]
pub struct DnsExplanation {
    /// Forwarded (true) or answered NXDOMAIN (false).
    pub allowed: bool,
    pub audit_would_deny: bool,
    /// The deciding hostname rule, when one matched.
    pub group: Option<String>,
    pub rule: Option<String>,
    /// How many hostname rules would learn the answer's addresses.
    pub learned_for_rules: usize,
}

fn protocol_number(value: &serde_json::Value) -> Result<u8, ApiError> {
    let bad = || ApiError::bad_request("invalid_field", "proto: must be tcp, udp, icmp or a protocol number 0..=255");
    match value {
        serde_json::Value::String(name) => match name.to_ascii_lowercase().as_str() {
            "tcp" => Ok(6),
            "udp" => Ok(17),
            "icmp" => Ok(1),
            _ => Err(bad()),
        },
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn compiled(state: &AppState, policy: &PolicyVersion) -> Result<Arc<CompiledPolicy>, ApiError> {
    let mut cache = state.inner.compiled.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((digest, compiled)) = cache.as_ref() {
        if *digest == policy.sha256 {
            return Ok(compiled.clone());
        }
    }
    let compiled = Arc::new(
        compile_json(&policy.document)
            .map_err(|e| ApiError::internal(format!("stored version {} no longer compiles: {e}", policy.version)))?,
    );
    *cache = Some((policy.sha256, compiled.clone()));
    Ok(compiled)
}

/// Which rule decides a flow, under the active (or a stored) version.
#[utoipa::path(post, path = "/api/v1/policy/explain", tag = "policy", security(("bearer" = [])),
    request_body = ExplainRequest,
    responses((status = 200, body = ExplainResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
pub async fn explain(
    _caller: ReadAccess,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ExplainRequest>,
) -> Result<Json<ExplainResponse>, ApiError> {
    let proto = protocol_number(&request.proto)?;
    let policy = state.inner.store.read(|s| match request.version {
        Some(version) => s.policy(version).cloned(),
        None => s.active_policy().cloned(),
    });
    let policy = policy.ok_or_else(|| match request.version {
        Some(version) => ApiError::not_found(
            "unknown_policy_version",
            format!("policy version {version} is not in the stored history"),
        ),
        None => ApiError::not_found("no_policy", "no policy has been stored yet"),
    })?;
    let compiled = compiled(&state, &policy)?;
    let explanation = compiled.explain(&ExplainQuery {
        src: request.src,
        dst: request.dst,
        proto,
        dst_port: request.dst_port,
        icmp_type: request.icmp_type,
        hostname: request.hostname,
    });
    let action = match explanation.verdict.action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
    .to_owned();
    Ok(Json(ExplainResponse {
        version: policy.version,
        action,
        group: explanation.group,
        rule: explanation.rule,
        description: explanation.description,
        audit_would_deny: explanation.audit_would_deny,
        candidate_groups: explanation.candidate_groups,
        dns: explanation.dns.map(|d| {
            let (group, rule) = match d.cause {
                Some(Cause::Rule { group, rule }) => {
                    (Some(compiled.group_id(group).to_owned()), Some(compiled.rule_id(group, rule).to_owned()))
                }
                Some(Cause::GroupDefault { group }) => (Some(compiled.group_id(group).to_owned()), None),
                Some(Cause::DocumentDefault) | None => (None, None),
            };
            DnsExplanation {
                allowed: d.allowed,
                audit_would_deny: d.audit_would_deny,
                group,
                rule,
                learned_for_rules: d.learn_for.len(),
            }
        }),
    }))
}
