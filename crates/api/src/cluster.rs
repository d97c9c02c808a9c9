//! What the API needs from the cluster layer, as a trait the runtime implements (the API
//! crate does not depend on the transport): the member list, the two cluster readiness
//! checks, and the membership operations.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use utoipa::ToSchema;

use crate::node::Check;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClusterOverview {
    /// `cluster`, or `single` for a node started without cluster flags.
    pub mode: String,
    pub cluster_id: Option<String>,
    /// The node that answered.
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub members: Vec<MemberInfo>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MemberInfo {
    pub id: u64,
    /// host:port of its cluster listener.
    pub cluster_address: String,
    /// Its management API, as it reports it.
    pub api_address: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
    pub leader: bool,
    pub release: Option<String>,
    pub applied_index: Option<u64>,
    /// How many entries it is behind the answering node's applied index.
    pub lag: Option<u64>,
    pub state_hash: Option<String>,
    /// Milliseconds since the answering node last heard from it (0 for itself).
    pub last_contact_ms: Option<u64>,
    pub ready: Option<bool>,
    /// Why it could not be asked, when it could not.
    pub error: Option<String>,
}

/// Why a membership operation was not done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterRefusal {
    /// Not started with cluster flags.
    NotClustered,
    UnknownMember(String),
    /// It would break quorum, or the target cannot take over.
    Conflict(String),
    /// No leader, or the leader cannot be reached.
    Unavailable(String),
}

pub trait ClusterView: Send + Sync + 'static {
    fn overview(&self) -> ClusterOverview;
    /// `cluster` and `policy_replication`, given the policy version this node's dataplane runs.
    fn checks(&self, applied_policy_version: Option<u64>) -> Vec<(String, Check)>;
    fn remove_member(&self, id: u64, force: bool) -> BoxFuture<'_, Result<Vec<u64>, ClusterRefusal>>;
    fn transfer_leader(&self, to: Option<u64>) -> BoxFuture<'_, Result<u64, ClusterRefusal>>;
}
