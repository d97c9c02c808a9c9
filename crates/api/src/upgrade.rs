//! What the API needs from the node's release and rollout machinery, as a trait the runtime
//! implements (the API crate knows neither release slots nor the plan's shape: both travel
//! as JSON the runtime builds).

use serde::Deserialize;
use utoipa::ToSchema;

use crate::cluster::BoxFuture;

/// Why an upgrade operation was refused.
#[derive(Clone, Debug)]
pub enum UpgradeFailure {
    /// Not possible now (a rollout in progress, nothing to roll back, finalized, ...).
    Conflict {
        code: &'static str,
        message: String,
    },
    BadRequest {
        code: &'static str,
        message: String,
    },
    NotFound(String),
    Internal(String),
}

/// `POST /api/v1/upgrade`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartUpgrade {
    /// A release staged on the node receiving the request (`sluice release stage FILE`).
    pub version: String,
    /// Observation window after each step, seconds (default 10).
    pub observe_s: Option<u64>,
    /// How long one node may take to report the release ready and caught up (default 180).
    pub step_timeout_s: Option<u64>,
    /// The node's own deadline to become ready before it returns (default 120).
    pub ready_timeout_s: Option<u64>,
    /// Starts a release may take before the node gives up on it (default 3).
    pub max_starts: Option<u32>,
    /// API errors per thousand requests during a window that fail the step (default 100).
    pub api_error_permille_max: Option<u64>,
    /// Drop-rate multiple of the baseline that fails the step (default 2).
    pub drop_ratio_max: Option<u64>,
}

/// `POST /api/v1/upgrade/rollback`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollback {
    /// A release still kept in every node's slots; default: the one the last upgrade
    /// replaced.
    pub to: Option<String>,
}

pub trait UpgradeService: Send + Sync {
    /// The rollout record, the active schema, this node's release slots and boot state.
    fn status(&self) -> serde_json::Value;
    /// The releases staged on this node and their history.
    fn releases(&self) -> serde_json::Value;
    fn start(&self, request: StartUpgrade, actor: String) -> BoxFuture<'_, Result<serde_json::Value, UpgradeFailure>>;
    fn rollback(
        &self,
        request: StartRollback,
        actor: String,
    ) -> BoxFuture<'_, Result<serde_json::Value, UpgradeFailure>>;
    fn abort(&self, actor: String) -> BoxFuture<'_, Result<serde_json::Value, UpgradeFailure>>;
    fn finalize(&self, actor: String) -> BoxFuture<'_, Result<serde_json::Value, UpgradeFailure>>;
}
