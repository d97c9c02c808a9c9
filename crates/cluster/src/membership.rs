//! The leader's membership operations: handing leadership to another voter and removing a
//! member without leaving the cluster below its quorum.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use sluice_store::raft::NodeId;

use crate::network::member_address;
use crate::node::{Shared, TRANSFER_TIMEOUT};
use crate::proto;

/// Whether the leader's replication to `target` has reached the leader's last log entry.
fn target_caught_up(raft: &sluice_store::raft::Raft, target: NodeId) -> bool {
    let receiver = raft.metrics();
    let metrics = receiver.borrow();
    let matched = metrics.replication.as_ref().and_then(|r| r.get(&target).copied().flatten());
    matched.map(|log_id| log_id.index) >= metrics.last_log_index
}

impl Shared {
    /// On the leader: pauses heartbeats (a follower refuses to vote while it has heard from a
    /// leader within its lease, the election timeout's upper bound), asks the target to stand
    /// until it leads, and resumes heartbeats whatever happened.
    pub async fn transfer_leader_here(&self, to: Option<NodeId>) -> Result<NodeId, String> {
        let status = self.store.status();
        let target = match to {
            Some(target) if !status.voters.contains(&target) => return Err(format!("node {target} is not a voter")),
            Some(target) => target,
            None => status
                .voters
                .iter()
                .copied()
                .filter(|v| *v != self.node_id && self.reachable(*v))
                .max_by_key(|v| self.probe(*v).status.map_or(0, |s| s.applied_index))
                .ok_or("no reachable follower to hand leadership to")?,
        };
        if target == self.node_id {
            return Ok(target);
        }
        let addr = member_address(&self.store, target).ok_or("the target's address is unknown")?;
        let raft = self.store.raft();
        // New writes wait during the handover: a log that keeps growing here would leave the
        // target behind, and a candidate behind the leader's log is refused the vote.
        self.store.hold_writes(true);
        raft.runtime_config().heartbeat(false);
        let outcome = async {
            let deadline = Instant::now() + TRANSFER_TIMEOUT;
            let mut agent = self.peers.agent(&addr)?;
            let mut last_error = String::from("it did not win an election");
            while Instant::now() < deadline {
                if self.store.status().leader == Some(target) {
                    return Ok(target);
                }
                // A candidate whose log is behind the leader's is refused every vote, so asking it
                // to stand before it has caught up (a node just restarted, say) only burns terms.
                if !target_caught_up(raft, target) {
                    last_error = "its log did not catch up with the leader's".into();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if let Err(status) = agent.elect_now(proto::ElectRequest {}).await {
                    last_error = status.message().to_owned();
                }
                let settle = Instant::now() + Duration::from_millis(300);
                while Instant::now() < settle {
                    if self.store.status().leader == Some(target) {
                        return Ok(target);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Err(format!("node {target} did not take over within {TRANSFER_TIMEOUT:?}: {last_error}"))
        }
        .await;
        raft.runtime_config().heartbeat(true);
        self.store.hold_writes(false);
        if outcome.is_ok() {
            tracing::info!(from = self.node_id, to = target, "leadership transferred");
        }
        outcome
    }

    /// On the leader: removes a member, refusing to leave fewer reachable voters than the new
    /// configuration's quorum unless `force`.
    pub async fn remove_member_here(&self, node_id: NodeId, force: bool) -> Result<Vec<u64>, String> {
        let status = self.store.status();
        let is_voter = status.voters.contains(&node_id);
        if !is_voter && !status.learners.contains(&node_id) {
            return Err(format!("node {node_id} is not a member"));
        }
        let raft = self.store.raft();
        if is_voter {
            let remaining: BTreeSet<NodeId> = status.voters.iter().copied().filter(|v| *v != node_id).collect();
            if remaining.is_empty() {
                return Err("the last voter cannot be removed".into());
            }
            let quorum = remaining.len() / 2 + 1;
            let reachable = remaining.iter().filter(|v| self.reachable(**v)).count();
            if reachable < quorum && !force {
                return Err(format!(
                    "removing node {node_id} would leave {reachable} reachable of {} voters, below the quorum of \
                     {quorum}: the cluster could not accept writes; give force to remove it anyway",
                    remaining.len()
                ));
            }
            raft.change_membership(remaining, false).await.map_err(|e| format!("cannot remove node {node_id}: {e}"))?;
        } else {
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                .await
                .map_err(|e| format!("cannot remove learner {node_id}: {e}"))?;
        }
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).remove(&node_id);
        tracing::info!(node_id, force, "member removed");
        Ok(self.store.status().voters)
    }
}
