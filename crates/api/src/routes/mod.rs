//! The router: every route is registered through `utoipa_axum::routes!`, so the OpenAPI
//! document is generated from the same handlers the router serves.

pub mod cluster;
pub mod health;
pub mod node_local;
pub mod policy;
pub mod settings;
pub mod snapshots;
pub mod support;
pub mod tokens;
pub mod upgrade;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice management API", description = "Policy, tokens and node state of a Sluice node. Errors are `{\"error\":{\"code\",\"message\"}}`."),
    modifiers(&BearerScheme),
    tags(
        (name = "node", description = "health, readiness, metrics, stats, node-local views"),
        (name = "policy", description = "versioned policy"),
        (name = "tokens", description = "API tokens"),
        (name = "cluster", description = "members, removal, leadership transfer"),
        (name = "settings", description = "cluster-wide settings and the audit log"),
        (name = "snapshots", description = "state snapshots: list, create, download, verify"),
        (name = "upgrade", description = "release slots, rolling upgrade, rollback, finalize"),
        (name = "support", description = "diagnostics"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document of this API (no token needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "node", responses(
    (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object),
))]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.inner.openapi_json.clone())
}

/// Every route, with its OpenAPI description.
pub fn api_router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(health::stats))
        .routes(routes!(openapi_json))
        .routes(routes!(policy::get_policy, policy::put_policy))
        .routes(routes!(policy::list_versions))
        .routes(routes!(policy::get_version))
        .routes(routes!(policy::rollback))
        .routes(routes!(policy::validate))
        .routes(routes!(policy::explain))
        .routes(routes!(node_local::allowlist))
        .routes(routes!(node_local::flows))
        .routes(routes!(tokens::list_tokens, tokens::mint_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(settings::get_settings, settings::put_settings))
        .routes(routes!(settings::audit_log))
        .routes(routes!(cluster::get_cluster))
        .routes(routes!(cluster::remove_member))
        .routes(routes!(cluster::transfer_leader))
        .routes(routes!(snapshots::list_snapshots, snapshots::create_snapshot))
        .routes(routes!(snapshots::download_snapshot))
        .routes(routes!(upgrade::get_upgrade, upgrade::start_upgrade))
        .routes(routes!(upgrade::rollback_upgrade))
        .routes(routes!(upgrade::abort_upgrade))
        .routes(routes!(upgrade::finalize_upgrade))
        .routes(routes!(upgrade::list_releases))
        .routes(routes!(snapshots::verify_snapshot))
        .routes(routes!(support::sysdump))
        .split_for_parts()
}

/// The (method, path) pairs an OpenAPI document describes, sorted.
pub fn described_routes(api: &utoipa::openapi::OpenApi) -> Vec<(String, String)> {
    let value = serde_json::to_value(api).unwrap_or_default();
    let mut routes = Vec::new();
    if let Some(paths) = value.get("paths").and_then(|p| p.as_object()) {
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if item.get(method).is_some() {
                    routes.push((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    routes.sort();
    routes
}
