//! API tokens: list (never a secret or hash), mint (the secret is shown once), revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_store::state::{Command, Outcome, Role, Token};
use utoipa::ToSchema;

use crate::auth::{AdminAccess, ReadAccess};
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::secret::{mint_command, parse_secret_sha256, MintRequest};
use crate::state::{now_ms, AppState};

#[derive(Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    /// `admin` or `readonly`.
    pub role: String,
    pub label: String,
    pub created_at_ms: u64,
    pub created_by: String,
    pub expires_at_ms: Option<u64>,
    pub expired: bool,
}

pub fn token_info(token: &Token, now: u64) -> TokenInfo {
    TokenInfo {
        id: token.id.clone(),
        role: token.role.as_str().to_owned(),
        label: token.label.clone(),
        created_at_ms: token.created_at_ms,
        created_by: token.created_by.clone(),
        expires_at_ms: token.expires_at_ms,
        expired: token.is_expired(now),
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// The tokens (ids, roles, labels, expiry; never secrets or their hashes).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), responses(
    (status = 200, body = TokenList), (status = 401, body = ErrorBody),
))]
pub async fn list_tokens(_caller: ReadAccess, State(state): State<AppState>) -> Json<TokenList> {
    let now = now_ms();
    Json(TokenList { tokens: state.inner.store.read(|s| s.tokens().map(|t| token_info(t, now)).collect()) })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintTokenRequest {
    /// `admin` or `readonly`.
    pub role: String,
    /// Chosen when absent (random).
    pub id: Option<String>,
    #[serde(default)]
    pub label: String,
    /// Lifetime in seconds; no expiry when absent.
    pub expires_in_s: Option<u64>,
    /// Register a secret you already hold, by its SHA-256 (64 hex digits), instead of having
    /// one generated: the answer then has no `token`. Use a long random secret.
    #[serde(default)]
    pub secret_sha256: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MintedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret to send as `Authorization: Bearer <token>`. Shown only now: the node keeps
    /// only its hash. Absent when the request registered a `secret_sha256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

pub fn parse_role(role: &str) -> Result<Role, ApiError> {
    match role {
        "admin" => Ok(Role::Admin),
        "readonly" => Ok(Role::Readonly),
        other => Err(ApiError::bad_request("invalid_field", format!("role: must be admin or readonly, not {other:?}"))),
    }
}

/// Mints a token; the answer holds its secret, once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = MintTokenRequest,
    responses(
        (status = 201, body = MintedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "the id is taken", body = ErrorBody),
))]
pub async fn mint_token(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<MintTokenRequest>,
) -> Result<(StatusCode, Json<MintedToken>), ApiError> {
    let role = parse_role(&request.role)?;
    let secret_hash = match request.secret_sha256.as_deref() {
        Some(text) => Some(parse_secret_sha256(text).map_err(|e| ApiError::bad_request("invalid_field", e))?),
        None => None,
    };
    let (secret, command) = mint_command(MintRequest {
        role,
        id: request.id,
        label: request.label,
        expires_in_s: request.expires_in_s,
        secret_hash,
    })
    .map_err(ApiError::internal)?;
    let Command::MintToken { id, .. } = &command else { unreachable!("mint_command builds MintToken") };
    let id = id.clone();
    let applied = state.inner.store.write(&caller.actor(), command).await?;
    let Outcome::TokenMinted { .. } = applied.response? else {
        return Err(ApiError::internal("the store answered a mint with another outcome"));
    };
    tracing::info!(token_id = %id, role = role.as_str(), actor = %caller.actor(), "token minted");
    let now = now_ms();
    let info = state
        .inner
        .store
        .read(|s| s.token(&id).map(|t| token_info(t, now)))
        .ok_or_else(|| ApiError::internal("the minted token is not in the applied state"))?;
    Ok((StatusCode::CREATED, Json(MintedToken { info, token: secret })))
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub id: String,
    pub revoked: bool,
}

/// Revokes a token at once: its next request is refused.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 200, body = Revoked), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
pub async fn revoke_token(
    AdminAccess(caller): AdminAccess,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    if state.inner.store.read(|s| s.token(&id).is_none()) {
        return Err(ApiError::not_found("unknown_token", format!("no token with id {id}")));
    }
    let applied = state.inner.store.write(&caller.actor(), Command::RevokeToken { id: id.clone() }).await?;
    let Outcome::TokenRevoked { id } = applied.response? else {
        return Err(ApiError::internal("the store answered a revoke with another outcome"));
    };
    tracing::info!(token_id = %id, actor = %caller.actor(), "token revoked");
    Ok(Json(Revoked { id, revoked: true }))
}
