//! Bearer tokens. The secret in `Authorization: Bearer <secret>` is hashed (SHA-256) and
//! looked up in the store's applied state, comparing every stored hash in constant time. The
//! secret is never logged, stored or echoed; only the token id names the caller.
//!
//! Requests the admin socket relays in-process ([`crate::local::LocalApi`]) carry a
//! [`LocalCaller`] extension instead of a header: the peer was already checked to be root by
//! the kernel's credentials, and an extension cannot be set by anything on the network.
//!
//! Handlers take [`ReadAccess`] (any valid token) or [`AdminAccess`] (role `admin`) as their
//! first extractor, so authentication is decided before a body is read: a caller without a
//! valid token learns nothing about its request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sluice_store::state::{hash_token_secret, AuthError, Role};

use crate::error::ApiError;
use crate::state::{now_ms, AppState};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's id, or `admin-socket` for a request relayed by the admin socket.
    pub token_id: String,
    pub role: Role,
    /// How the audit log names this caller: `token:<id>` or `admin-socket:uid=<uid>`.
    actor: String,
}

impl Caller {
    fn with_token(token_id: String, role: Role) -> Caller {
        let actor = format!("token:{token_id}");
        Caller { token_id, role, actor }
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        self.actor.clone()
    }
}

/// Put on a request by the admin socket's in-process relay: root on the node, role admin.
#[derive(Clone, Debug)]
pub(crate) struct LocalCaller {
    pub uid: u32,
}

impl LocalCaller {
    fn caller(&self) -> Caller {
        Caller { token_id: "admin-socket".into(), role: Role::Admin, actor: format!("admin-socket:uid={}", self.uid) }
    }
}

/// Any valid token (reads).
pub struct ReadAccess(pub Caller);

/// A valid token with role `admin` (writes).
pub struct AdminAccess(pub Caller);

fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    if let Some(local) = parts.extensions.get::<LocalCaller>() {
        return Ok(local.caller());
    }
    let unauthorized = |code, message: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, message);
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("missing_token", "an Authorization: Bearer <token> header is required"));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unauthorized("invalid_token", "the Authorization header must be `Bearer <token>`"))?;
    let hash = hash_token_secret(secret);
    let now = now_ms();
    state.inner.store.read(|s| match s.authenticate(&hash, now) {
        Ok(token) => Ok(Caller::with_token(token.id.clone(), token.role)),
        Err(AuthError::Unknown) => Err(unauthorized("invalid_token", "the token is not valid")),
        Err(AuthError::Expired) => Err(unauthorized("token_expired", "the token has expired")),
    })
}

impl FromRequestParts<AppState> for ReadAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state)?;
        parts.extensions.insert(caller.clone());
        Ok(ReadAccess(caller))
    }
}

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state)?;
        parts.extensions.insert(caller.clone());
        if caller.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token {} has role {}; this request needs role admin", caller.token_id, caller.role.as_str()),
            ));
        }
        Ok(AdminAccess(caller))
    }
}
