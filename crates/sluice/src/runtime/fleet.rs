//! The fleet of a cluster member: the leader's upgrade driver reaches every member through
//! the cluster's node-agent RPCs (mutual TLS), and each member's [`Agent`] answers them with
//! its own [`LocalNode`]. A member that lacks the release fetches it in chunks from the plan's
//! source node and stages it through the same checks as `sluice release stage`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_api::cluster::BoxFuture;
use sluice_cluster::upgrade::{UpgradeAgent, MAX_CHUNK};
use sluice_cluster::Cluster;
use sluice_lifecycle::releases::{self, Releases};
use sluice_lifecycle::rollout::{Gates, Observation, Plan, Target};
use tracing::info;

use super::upgrade::{Fleet, LocalNode};
use crate::boot::now_ms;

/// How long a member may take to answer an observation (an unreachable one is reported so).
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a member may take to fetch, verify and stage a release and take a snapshot.
const STAGE_TIMEOUT: Duration = Duration::from_secs(600);
/// Restart requests and diagnostic bundles.
const ACT_TIMEOUT: Duration = Duration::from_secs(15);

/// One upgrade request to a member's agent. Externally tagged: an internally tagged enum
/// buffers its content, and the plan's maps keyed by node id (numbers as JSON keys) would
/// not read back from that buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRequest {
    Observe { target: Option<Target> },
    Stage { target: Target, source: u64 },
    Restart { version: String, gates: Gates, reason: String },
    Diagnostics { plan: Box<Plan> },
}

/// A member's answer to the cluster's upgrade calls.
pub struct Agent {
    pub local: Arc<LocalNode>,
    /// Weak: the cluster holds this agent.
    pub cluster: Weak<Cluster>,
}

impl Agent {
    async fn handle(&self, request: AgentRequest) -> Result<serde_json::Value, String> {
        match request {
            AgentRequest::Observe { target } => Ok(json(&self.local.observe(target.as_ref()))),
            AgentRequest::Stage { target, source } => {
                let cluster = self.cluster.upgrade().ok_or("the cluster layer stopped")?;
                let snapshot = stage_from(&self.local, &cluster, &target, source).await?;
                Ok(json(&snapshot))
            }
            AgentRequest::Restart { version, gates, reason } => {
                self.local.restart_into(&version, &gates, &reason)?;
                Ok(serde_json::Value::Null)
            }
            AgentRequest::Diagnostics { plan } => {
                let local = self.local.clone();
                let path = tokio::task::spawn_blocking(move || local.diagnostics(&plan))
                    .await
                    .map_err(|e| e.to_string())??;
                Ok(json(&path))
            }
        }
    }
}

fn json<T: Serialize>(reply: &T) -> serde_json::Value {
    serde_json::to_value(reply).expect("replies serialize")
}

impl UpgradeAgent for Agent {
    fn call(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let request: AgentRequest =
                serde_json::from_slice(&request).map_err(|e| format!("malformed upgrade request: {e}"))?;
            let reply = self.handle(request).await?;
            Ok(serde_json::to_vec(&reply).expect("replies serialize"))
        })
    }

    fn release_chunk(&self, version: &str, offset: u64, length: u32) -> Result<(Vec<u8>, u64), String> {
        releases::check_version(version).map_err(|e| e.to_string())?;
        let releases = Releases::new(&self.local.data_dir);
        let manifest = releases.manifest(version).map_err(|e| e.to_string())?;
        let path = releases.binary(version);
        let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let total = file.metadata().map_err(|e| e.to_string())?.len();
        if total != manifest.bytes {
            return Err(format!("{}: {total} bytes, its manifest says {}", path.display(), manifest.bytes));
        }
        let length = u64::from(length.min(MAX_CHUNK)).min(total.saturating_sub(offset));
        file.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        let mut data = vec![0u8; length as usize];
        file.read_exact(&mut data).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((data, total))
    }
}

/// On a member: makes sure `target` is staged here (fetching it from `source` when missing),
/// then takes the pre-upgrade snapshot; the snapshot's id.
async fn stage_from(local: &Arc<LocalNode>, cluster: &Cluster, target: &Target, source: u64) -> Result<String, String> {
    let releases = Releases::new(&local.data_dir);
    if releases.manifest(&target.version).is_err() {
        let incoming = fetch(&releases, cluster, target, source).await?;
        let (path, local2) = (incoming.clone(), local.clone());
        let target2 = target.clone();
        let staged = tokio::task::spawn_blocking(move || {
            let schema = local2.store.read(|s| s.active_schema());
            Releases::new(&local2.data_dir).stage(&path, Some(&target2.sha256), schema, now_ms(), releases::probe)
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&incoming);
        let manifest = staged.map_err(|e| format!("the release fetched from node {source} was refused: {e}"))?;
        info!(release = %manifest.version, source, "release fetched from a member and staged");
    }
    let (local, target) = (local.clone(), target.clone());
    tokio::task::spawn_blocking(move || local.stage(&target)).await.map_err(|e| e.to_string())?
}

/// Copies release `target` from `source` into a temporary file in the releases directory.
async fn fetch(
    releases: &Releases,
    cluster: &Cluster,
    target: &Target,
    source: u64,
) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(releases.dir()).map_err(|e| format!("{}: {e}", releases.dir().display()))?;
    let path = releases.dir().join(format!(".incoming-{}-{}", target.version, now_ms()));
    let result = async {
        let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut offset = 0u64;
        while offset < target.bytes {
            let (data, total) = cluster.fetch_release_chunk(source, &target.version, offset, MAX_CHUNK).await?;
            if total != target.bytes {
                return Err(format!(
                    "node {source} holds {} as {total} bytes, the plan says {}",
                    target.version, target.bytes
                ));
            }
            if data.is_empty() {
                return Err(format!("node {source} sent no data at offset {offset} of {total}"));
            }
            file.write_all(&data).map_err(|e| format!("{}: {e}", path.display()))?;
            offset += data.len() as u64;
        }
        file.sync_all().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(format!("fetching release {} from node {source}: {e}", target.version))
        }
    }
}

/// The members of this node's cluster, reached over the node-agent RPCs.
pub struct ClusterFleet {
    pub local: Arc<LocalNode>,
    pub cluster: Arc<Cluster>,
}

impl ClusterFleet {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        node: u64,
        request: &AgentRequest,
        timeout: Duration,
    ) -> Result<T, String> {
        let body = serde_json::to_vec(request).expect("requests serialize");
        let reply = self.cluster.upgrade_call(node, body, timeout).await?;
        serde_json::from_slice(&reply).map_err(|e| format!("node {node} answered malformed: {e}"))
    }
}

impl Fleet for ClusterFleet {
    fn self_id(&self) -> u64 {
        self.local.store.status().node_id
    }

    fn leader(&self) -> Option<u64> {
        self.local.store.status().leader
    }

    fn members(&self) -> Vec<u64> {
        self.local.store.status().voters
    }

    fn observe(&self, node: u64, target: Option<&Target>) -> BoxFuture<'_, Observation> {
        let request = AgentRequest::Observe { target: target.cloned() };
        Box::pin(async move {
            let mut seen: Observation = match self.call(node, &request, OBSERVE_TIMEOUT).await {
                Ok(seen) => seen,
                Err(_) => return Observation::default(),
            };
            // The member's hash against this node's at the member's index (this node leads
            // when the driver asks; `None` when that index is not in its memory).
            let index = seen.figures.applied_index;
            let ours = self.local.store.read(|s| s.hash_at(index));
            seen.hash_matches = ours.map(|h| h.to_hex() == seen.figures.state_hash);
            seen
        })
    }

    fn stage(&self, node: u64, target: &Target, source: u64) -> BoxFuture<'_, Result<String, String>> {
        let request = AgentRequest::Stage { target: target.clone(), source };
        Box::pin(async move { self.call(node, &request, STAGE_TIMEOUT).await })
    }

    fn restart(&self, node: u64, version: &str, gates: &Gates, reason: &str) -> BoxFuture<'_, Result<(), String>> {
        let request = AgentRequest::Restart { version: version.to_owned(), gates: *gates, reason: reason.to_owned() };
        Box::pin(async move { self.call::<serde_json::Value>(node, &request, ACT_TIMEOUT).await.map(drop) })
    }

    fn transfer_leadership(&self, to: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.cluster.transfer_leader(Some(to)).await.map(drop) })
    }

    fn diagnostics(&self, node: u64, plan: &Plan) -> BoxFuture<'_, Result<String, String>> {
        let request = AgentRequest::Diagnostics { plan: Box::new(plan.clone()) };
        Box::pin(async move { self.call(node, &request, ACT_TIMEOUT).await })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_lifecycle::rollout::{Figures, Kind};

    use super::*;

    #[test]
    fn every_request_reads_back_including_a_plan_keyed_by_node_ids() {
        let target =
            Target { version: "2.0.0".into(), sha256: "00".repeat(32), bytes: 5, schema_min: 1, schema_max: 2 };
        let members: BTreeMap<u64, Figures> = [(7, Figures::default()), (9, Figures::default())].into();
        let plan = Plan::new("u".into(), Kind::Upgrade, target.clone(), 7, 7, &members, Gates::default(), "a", 1);
        let requests = [
            AgentRequest::Observe { target: Some(target.clone()) },
            AgentRequest::Stage { target, source: 7 },
            AgentRequest::Restart { version: "2.0.0".into(), gates: Gates::default(), reason: "u".into() },
            AgentRequest::Diagnostics { plan: Box::new(plan.clone()) },
        ];
        for request in requests {
            let bytes = serde_json::to_vec(&request).unwrap();
            let back: AgentRequest = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{request:?}: {e}"));
            if let AgentRequest::Diagnostics { plan: back } = back {
                assert_eq!(*back, plan);
            }
        }
    }
}
